//! TLS libraries besides a shared libssl, with the real agent and the real eBPF programs:
//! - GnuTLS: `gnutls-cli` (Debian's gnutls-bin) and a C client on Debian's GnuTLS build of
//!   libcurl (libcurl-gnutls.so.4) make the same streaming chat call as the Python `openai`
//!   client; their records must equal the Python client's in every field that does not depend on
//!   time or on the process, and name the right peer (the GnuTLS session is linked to its socket).
//! - OpenSSL linked statically into the executable, with its symbols (a C client built here with
//!   Debian's libssl.a/libcrypto.a): the agent finds `SSL_read`/`SSL_write` in the executable.
//! - The same client stripped: a documented limit. No record, and `llmprobe doctor` says why and
//!   what would fix it, while it says GnuTLS and the static build with symbols are probed.
//!
//! The C clients are built once and cached under `target/tls-clients/`, keyed by a hash of their
//! source and build command. `cargo xtask test` installs gnutls-bin, libcurl3-gnutls and
//! libssl-dev where missing.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

const TTFT_MS: u64 = 150;
const GAP_MS: u64 = 30;
const CHUNKS: u32 = 6;
const WAIT: Duration = Duration::from_secs(20);
const MODEL: &str = "stacks-test";
/// The prompt the Python client sends by default (the request bodies of the other clients carry
/// the same one, so that token counts agree).
const PROMPT: &str = "Say hello to the test server";
const LIBCURL_GNUTLS: &str = "/usr/lib/x86_64-linux-gnu/libcurl-gnutls.so.4";
const LIBSSL_A: &str = "/usr/lib/x86_64-linux-gnu/libssl.a";

/// Children killed when the test ends, however it ends.
struct Reaped(Vec<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn require_tools() {
    let have = |p: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        have("gnutls-cli"),
        "gnutls-cli is missing: `cargo xtask test` installs it (apt-get install gnutls-bin)"
    );
    assert!(
        Path::new(LIBCURL_GNUTLS).exists(),
        "{LIBCURL_GNUTLS} is missing: `cargo xtask test` installs it (apt-get install libcurl3-gnutls)"
    );
    assert!(
        Path::new(LIBSSL_A).exists(),
        "{LIBSSL_A} is missing: `cargo xtask test` installs it (apt-get install libssl-dev)"
    );
    assert!(
        have("cc"),
        "cc is missing (a C compiler is part of the build tools)"
    );
}

/// Builds `tests/assets/clients/<source>` into `target/tls-clients/<name>-<hash>/<name>` with
/// `cc <args before> SOURCE <args after>` unless that build exists; `strip`: a stripped copy.
fn build_cached(name: &str, source: &str, before: &[&str], after: &[&str], strip: bool) -> PathBuf {
    let src_path = assets().join("clients").join(source);
    let src = std::fs::read(&src_path).expect("read client source");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&src, before, after, strip).hash(&mut h);
    let dir = repo_root()
        .join("target")
        .join("tls-clients")
        .join(format!("{name}-{:016x}", h.finish()));
    let out = dir.join(name);
    if out.exists() {
        return out;
    }
    std::fs::create_dir_all(&dir).expect("client build dir");
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let t0 = Instant::now();
    let res = Command::new("cc")
        .args(before)
        .arg("-o")
        .arg(&tmp)
        .arg(&src_path)
        .args(after)
        .output()
        .expect("run cc");
    assert!(
        res.status.success(),
        "building {source} failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    if strip {
        let st = Command::new("strip").arg(&tmp).status().expect("strip");
        assert!(st.success(), "strip failed");
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, &out).expect("rename the built client");
    eprintln!("built {name} in {:?}", t0.elapsed());
    out
}

/// The OpenSSL client linked statically (`strip`: without its symbol table).
fn openssl_static_client(strip: bool) -> PathBuf {
    let name = if strip {
        "openssl-static-stripped"
    } else {
        "openssl-static"
    };
    build_cached(
        name,
        "openssl_static_client.c",
        &["-static", "-O2"],
        &["-lssl", "-lcrypto", "-lpthread"],
        strip,
    )
}

/// The libcurl-gnutls client.
fn curl_gnutls_client() -> PathBuf {
    build_cached(
        "curl-gnutls",
        "curl_gnutls_client.c",
        &["-O2"],
        &[LIBCURL_GNUTLS],
        false,
    )
}

fn body() -> String {
    format!(
        r#"{{"model":"{MODEL}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"{PROMPT}"}}]}}"#
    )
}

/// The whole HTTP/1.1 request, for the clients that write raw bytes (`Connection: close`: the
/// server closes when the stream ends, which ends the client).
fn raw_request(server: &TestServer) -> String {
    let b = body();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:{}\r\nAuthorization: Bearer {SECRET_KEY}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        server.port,
        b.len()
    )
}

/// Waits for `child` to exit within `limit` (killed past it: a hang is a failure); its stdout.
fn finish(mut child: Child, limit: Duration, what: &str) -> String {
    let mut out = child.stdout.take().expect("stdout piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let t0 = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = reader.join().expect("stdout reader");
    assert!(
        text.contains("data: [DONE]"),
        "{what} did not receive the whole stream:\n{text}"
    );
    text
}

/// `gnutls-cli` with the request on its stdin, kept open until the server closes (at end of
/// stdin gnutls-cli would close the connection before the answer). Returns its pid.
fn run_gnutls_cli(server: &TestServer) -> u32 {
    let mut child = Command::new("gnutls-cli")
        .arg(format!("--x509cafile={}", certs().0.display()))
        .args(["-p", &server.port.to_string(), "localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gnutls-cli");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(raw_request(server).as_bytes())
        .expect("write the request to gnutls-cli");
    // The server closes after the stream (Connection: close); gnutls-cli then exits (status 1:
    // the test server does not send close_notify).
    finish(child, Duration::from_secs(20), "gnutls-cli");
    drop(stdin);
    pid
}

/// Fields that depend on time or on the process, not on the call (a new conversation's id is
/// keyed with the time it started, a span id with the call's process and times; the server
/// numbers its requests).
fn varies(key: &str) -> bool {
    key.ends_with("_s")
        || matches!(
            key,
            "pid"
                | "comm"
                | "peer_addr"
                | "request_id"
                | "start_time"
                | "end_time"
                | "conversation_id"
                | "span_id"
        )
}

/// Asserts that `r` equals the Python client's record `py` in every field that describes the call.
fn assert_same_call(what: &str, r: &Value, py: &Value) {
    let keys: BTreeSet<&String> = r
        .as_object()
        .expect("record")
        .keys()
        .chain(py.as_object().expect("record").keys())
        .collect();
    let mut compared = 0;
    for k in keys {
        if varies(k) {
            continue;
        }
        assert_eq!(
            r[k], py[k],
            "{what}: field {k} differs\n{what}: {r}\npython: {py}"
        );
        compared += 1;
    }
    assert!(compared >= 20, "only {compared} fields compared: {r}");
}

fn one(recs: &[Value], pid: u32) -> Value {
    let mine = of(recs, pid, "client");
    assert_eq!(mine.len(), 1, "pid {pid}:\n{}", dump(recs));
    mine[0].clone()
}

#[test]
fn gnutls_and_static_openssl_clients_give_the_python_clients_records() {
    if !e2e_enabled() {
        return;
    }
    require_tools();
    let _g = serial();
    let static_bin = openssl_static_client(false);
    let stripped_bin = openssl_static_client(true);
    let curl_bin = curl_gnutls_client();
    let dir = scratch("tls-stacks");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    // libgnutls is in the linker cache: probed from the start, for every process.
    let log = agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("] attached 5 GnuTLS uprobes to") && l.contains("libgnutls.so")),
        "no GnuTLS attach logged:\n{log}"
    );

    let py = run_client(openai_client(
        &server,
        &["--stream", "--include-usage", "--model", MODEL],
    ));
    let cli_pid = run_gnutls_cli(&server);
    let mut curl = Command::new(&curl_bin);
    curl.arg(format!("{}/chat/completions", server.base_url()))
        .arg(certs().0)
        .arg(body())
        .arg(format!("Authorization: Bearer {SECRET_KEY}"));
    let curl_run = run_client(curl);
    assert!(
        curl_run.stdout.contains("data: [DONE]"),
        "{}",
        curl_run.stdout
    );

    // The static client waits for a file before its call, so that the agent's discovery (which
    // finds SSL_read/SSL_write in the executable) is measured here, not the first-call race.
    let req = dir.join("request.http");
    std::fs::write(&req, raw_request(&server)).expect("request file");
    let go = dir.join("go");
    let mut kids = Reaped(Vec::new());
    // How long the agent took to attach to the static client: the stripped one is given three
    // times as long (at least 300 ms) to show that nothing gets attached to it.
    let mut attach_took = Duration::ZERO;
    let mut run_static = |bin: &Path, kids: &mut Reaped, wait_attach: bool| -> u32 {
        let _ = std::fs::remove_file(&go);
        let mut child = Command::new(bin)
            .arg(server.port.to_string())
            .arg(certs().0)
            .arg(&req)
            .arg(&go)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the static client");
        let pid = child.id();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read the client's first line");
        assert_eq!(line.trim(), "waiting", "{bin:?}");
        let name = bin
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let t0 = Instant::now();
        if wait_attach {
            loop {
                let log = agent.log_text();
                if log.lines().any(|l| {
                    l.contains("] attached 9 OpenSSL uprobes to") && l.contains(name.as_str())
                }) {
                    attach_took = t0.elapsed();
                    break;
                }
                assert!(
                    t0.elapsed() < WAIT,
                    "the agent did not attach to {name} (static OpenSSL with symbols):\n{log}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        } else {
            std::thread::sleep((attach_took * 3).max(Duration::from_millis(300)));
        }
        std::fs::write(&go, b"").expect("go file");
        kids.0.push(child);
        pid
    };
    let static_pid = run_static(&static_bin, &mut kids, true);
    let static_out = finish(kids.0.pop().expect("child"), WAIT, "static OpenSSL client");
    let stripped_pid = run_static(&stripped_bin, &mut kids, false);
    finish(kids.0.pop().expect("child"), WAIT, "stripped static client");
    eprintln!("the agent attached to the static client {attach_took:?} after it started");

    let recs = agent.wait_records("a record per client", WAIT, |r| {
        [py.pid, cli_pid, curl_run.pid, static_pid]
            .iter()
            .all(|p| of(r, *p, "client").len() == 1)
    });
    let reference = one(&recs, py.pid);
    assert_eq!(reference["tls"], true, "{reference}");
    assert_eq!(reference["stream"], true, "{reference}");
    assert_eq!(reference["chunks"], CHUNKS, "{reference}");
    assert_eq!(reference["token_source"], "usage", "{reference}");
    assert_eq!(reference["request_model"], MODEL, "{reference}");
    for (what, pid, comm) in [
        ("gnutls-cli", cli_pid, "gnutls-cli"),
        ("curl-gnutls", curl_run.pid, "curl-gnutls"),
        ("static OpenSSL", static_pid, "openssl-static"),
    ] {
        let r = one(&recs, pid);
        assert_same_call(what, &r, &reference);
        assert_eq!(r["comm"], comm, "{r}");
        // The TLS session was linked to its socket: the peer is known.
        assert_eq!(r["peer_addr"], format!("127.0.0.1:{}", server.port), "{r}");
        assert_between(&r, "ttft_s", TTFT_MS as f64 / 1000.0 - 0.002, 2.0);
    }
    assert!(static_out.contains("HTTP/1.1 200"), "{static_out}");

    // The stripped build: the same bytes on the wire, no symbols to probe: no record, no attach.
    std::thread::sleep(Duration::from_millis(500));
    let all = agent.records();
    assert!(
        of(&all, stripped_pid, "client").is_empty(),
        "a stripped static client cannot be probed, yet it has a record:\n{}",
        dump(&all)
    );
    let log = agent.log_text();
    assert!(
        !log.contains("openssl-static-stripped"),
        "the stripped client was attached to:\n{log}"
    );
    assert!(agent.stop(), "agent did not exit cleanly on SIGTERM");
    assert_no_secret(&[&agent.jsonl, &agent.log]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads lines of `child`'s stdout until one contains `needle` (within `limit`).
fn wait_line(child: &mut Child, needle: &str, limit: Duration) {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.contains(&needle) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(limit)
        .expect("the process did not print what it was waiting for");
}

#[test]
fn doctor_says_gnutls_and_static_openssl_are_probed_and_why_stripped_is_not() {
    if !e2e_enabled() {
        return;
    }
    require_tools();
    let _g = serial();
    let static_bin = openssl_static_client(false);
    let stripped_bin = openssl_static_client(true);
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let mut kids = Reaped(Vec::new());
    let mut spawn_waiting = |cmd: &mut Command, needle: &str| -> u32 {
        let mut c = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        wait_line(&mut c, needle, Duration::from_secs(10));
        let pid = c.id();
        kids.0.push(c);
        pid
    };
    let static_pid = spawn_waiting(Command::new(&static_bin).arg("--wait"), "ready");
    let stripped_pid = spawn_waiting(Command::new(&stripped_bin).arg("--wait"), "ready");
    // gnutls-cli connected, waiting on its stdin.
    let cli_pid = spawn_waiting(
        Command::new("gnutls-cli")
            .arg(format!("--x509cafile={}", certs().0.display()))
            .args(["-p", &server.port.to_string(), "localhost"]),
        "Simple Client Mode",
    );

    let out = Command::new(agent_bin())
        .args(["doctor", "--json"])
        .output()
        .expect("run doctor");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let process = |pid: u32| -> Value {
        r["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .find(|p| p["pid"] == pid)
            .cloned()
            .unwrap_or_else(|| panic!("pid {pid} not listed: {r:#}"))
    };
    let g = process(cli_pid);
    assert_eq!(g["reason"], "gnutls", "{g}");
    assert_eq!(g["probed"], true, "{g}");
    // The mapped file's own name (libgnutls.so.30.34.3 on Debian 12).
    assert!(
        g["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("probed: GnuTLS libgnutls.so.30")),
        "{g}"
    );
    let s = process(static_pid);
    assert_eq!(s["reason"], "openssl_static", "{s}");
    assert_eq!(s["probed"], true, "{s}");
    let x = process(stripped_pid);
    assert_eq!(x["reason"], "static_stripped", "{x}");
    assert_eq!(x["probed"], false, "{x}");
    let detail = x["detail"].as_str().expect("detail");
    assert!(
        detail.contains("no symbols") && detail.contains("fix: build without `strip`"),
        "{x}"
    );

    // The person's view names them in their groups.
    let text = Command::new(agent_bin())
        .arg("doctor")
        .output()
        .expect("run doctor");
    let text = String::from_utf8_lossy(&text.stdout);
    let line_of = |pid: u32| {
        text.lines()
            .find(|l| l.contains(&format!(" {pid} ")) || l.contains(&format!(": {pid} ")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("pid {pid} not in doctor's text:\n{text}"))
    };
    assert!(
        line_of(cli_pid).contains("probed: GnuTLS libgnutls.so.30"),
        "{text}"
    );
    assert!(
        line_of(stripped_pid).contains("invisible: statically linked and stripped"),
        "{text}"
    );
}
