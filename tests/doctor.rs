//! `llmprobe doctor` with the real binary: as root on this machine (the node checks pass, and
//! processes the test starts are classified: Python with OpenSSL probed, the Go client of
//! `tests/assets/go` probed through crypto/tls, a Go binary without TLS and a static stripped
//! binary not, with their reasons), as `nobody` (missing privileges are
//! failures, exit 1; `llmprobe run` says privileges are missing, not tracefs), and against a
//! hostile process (a name full of terminal escapes and newlines, an executable whose section
//! table is garbage in a file of 8 GiB): doctor stays correct and prints no raw control byte.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

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

/// Runs `cmd` to completion within `limit` (killed past it: a hang is a failure).
fn run_within(mut cmd: Command, limit: Duration) -> (Output, Duration) {
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out_pipe = child.stdout.take().expect("stdout");
    let err_pipe = child.stderr.take().expect("stderr");
    let read = |mut p: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            v
        })
    };
    let (o, e) = (read(Box::new(out_pipe)), read(Box::new(err_pipe)));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("{cmd:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        status,
        stdout: o.join().expect("stdout"),
        stderr: e.join().expect("stderr"),
    };
    (out, t0.elapsed())
}

/// A program that names itself after its argument (prctl PR_SET_NAME) and waits.
const WAITER_C: &str = r#"
#include <sys/prctl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1) prctl(PR_SET_NAME, argv[1], 0, 0, 0);
    write(1, "ready\n", 6);
    pause();
    return 0;
}
"#;

const GO_MAIN: &str = r#"package main

import (
	"fmt"
	"time"
)

func main() {
	fmt.Println("ready")
	time.Sleep(120 * time.Second)
}
"#;

/// Compiles the waiter statically; `strip`: without a symbol table.
fn build_static(dir: &Path, name: &str, strip: bool) -> PathBuf {
    let src = dir.join("waiter.c");
    std::fs::write(&src, WAITER_C).expect("write C source");
    let out = dir.join(name);
    let mut cmd = Command::new("cc");
    cmd.args(["-static", "-O2", "-o"]).arg(&out).arg(&src);
    if strip {
        cmd.arg("-s");
    }
    let st = cmd
        .status()
        .expect("cc (a C compiler is part of the build tools)");
    assert!(
        st.success(),
        "cc -static failed (glibc's static libc.a is needed)"
    );
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    out
}

/// Builds the Go program with Debian's golang-go (`cargo xtask test` installs it).
fn build_go(dir: &Path) -> PathBuf {
    let have_go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_go,
        "`go` is missing: `cargo xtask test` installs golang-go (apt-get install golang-go)"
    );
    let src = dir.join("main.go");
    std::fs::write(&src, GO_MAIN).expect("write Go source");
    let out = dir.join("gowaiter");
    let t0 = Instant::now();
    let st = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .current_dir(dir)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0")
        .status()
        .expect("go build");
    assert!(st.success(), "go build failed");
    eprintln!("go build: {:?}", t0.elapsed());
    out
}

/// Starts `cmd` and waits for its "ready" line.
fn start_ready(cmd: Command, what: &str) -> Child {
    start_saying(cmd, what, "ready")
}

/// Starts `cmd` and waits for its first line to be `first`.
fn start_saying(mut cmd: Command, what: &str, first: &str) -> Child {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read ready line");
    assert_eq!(line.trim(), first, "{what} did not start");
    child
}

fn doctor_json(extra_env: Option<(&str, &str)>) -> (Value, i32, Duration) {
    let mut cmd = Command::new(agent_bin());
    cmd.args(["doctor", "--json"]);
    if let Some((k, v)) = extra_env {
        cmd.env(k, v);
    }
    let (out, took) = run_within(cmd, Duration::from_secs(60));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code().unwrap_or(-1), took)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report:#}"))
}

fn process(report: &Value, pid: u32) -> &Value {
    report["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not listed: {report:#}"))
}

/// No byte a terminal would act on: only printable ASCII and newlines.
fn assert_printable(what: &str, bytes: &[u8]) {
    if let Some(b) = bytes
        .iter()
        .find(|b| !(**b == b'\n' || (0x20..0x7f).contains(*b)))
    {
        panic!(
            "{what} carries the raw byte {b:#04x}:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn doctor_as_root_passes_the_node_and_classifies_processes() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("doctor-root");
    let mut kids = Reaped(Vec::new());

    let mut py = Command::new(python());
    py.arg("-c").arg(
        "import socket, ssl, time\n\
         ctx = ssl.create_default_context()\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
         print('ready', flush=True)\n\
         time.sleep(120)\n",
    );
    kids.0.push(start_ready(py, "python"));
    let py_pid = kids.0[0].id();
    let stripped = build_static(&dir, "static-stripped", true);
    kids.0
        .push(start_ready(Command::new(&stripped), "static binary"));
    let static_pid = kids.0[1].id();
    let gobin = build_go(&dir);
    kids.0.push(start_ready(Command::new(&gobin), "Go binary"));
    let go_pid = kids.0[2].id();
    // The Go client waits for a file that never comes: running, its TLS not yet used.
    let mut client = Command::new(go_build(&go_debian(), "client", &[]));
    client.arg("-wait-file").arg(dir.join("never"));
    kids.0.push(start_saying(client, "Go client", "WAITING"));
    let client_pid = kids.0[3].id();

    let (r, code, took) = doctor_json(None);
    eprintln!("doctor --json took {took:?}; summary {}", r["summary"]);
    for name in [
        "kernel",
        "tracefs",
        "tracepoints",
        "uprobes",
        "ring_buffer",
        "ebpf_programs",
    ] {
        assert_eq!(
            check(&r, name)["status"],
            "ok",
            "{name}: {:#}",
            check(&r, name)
        );
    }
    assert_ne!(check(&r, "privileges")["status"], "fail", "{r:#}");
    assert!(
        check(&r, "tracefs")["detail"]
            .as_str()
            .expect("a string")
            .contains("/sys/kernel"),
        "{r:#}"
    );
    assert_eq!(code, 0, "exit status: {r:#}");
    assert_eq!(r["summary"]["ready"], true);
    assert_eq!(r["summary"]["fail"], 0);

    let p = process(&r, py_pid);
    assert_eq!(p["probed"], true, "{p}");
    assert_eq!(p["reason"], "openssl", "{p}");
    assert!(
        p["detail"].as_str().expect("a string").contains("libssl"),
        "{p}"
    );
    let s = process(&r, static_pid);
    assert_eq!(s["reason"], "static_stripped", "{s}");
    assert_eq!(s["probed"], false);
    assert_eq!(s["comm"], "static-stripped");
    let g = process(&r, go_pid);
    assert_eq!(g["reason"], "go_no_tls", "{g}");
    assert_eq!(g["probed"], false, "{g}");
    assert!(
        g["detail"]
            .as_str()
            .expect("a string")
            .starts_with("no TLS library: Go go1."),
        "{g}"
    );
    let c = process(&r, client_pid);
    assert_eq!(c["reason"], "go", "{c}");
    assert_eq!(c["probed"], true, "{c}");
    let detail = c["detail"].as_str().expect("a string");
    assert!(
        detail.starts_with("probed: Go go1.")
            && detail.contains(" crypto/tls (Write, Read and its "),
        "{c}"
    );

    // The person's view: one line per check, the groups with pids, the summary.
    let (out, _) = run_within(
        {
            let mut c = Command::new(agent_bin());
            c.arg("doctor");
            c
        },
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("  ok    ring_buffer "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("probed: OpenSSL libssl") && l.contains(&format!("{py_pid} "))),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("probed: Go go1.") && l.contains(&format!("{client_pid} "))),
        "{text}"
    );
    assert!(
        text.contains("Summary: ") && text.contains("llmprobe can run here."),
        "{text}"
    );
    assert_printable("doctor's output", &out.stdout);

    // --help documents the exit status.
    let help = Command::new(agent_bin())
        .args(["doctor", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Exit status: 0") && help.contains("--json"),
        "{help}"
    );
    let bad = Command::new(agent_bin())
        .args(["doctor", "--no-such-flag"])
        .output()
        .expect("usage error");
    assert_eq!(bad.status.code(), Some(2), "a usage error exits 2");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn doctor_and_run_as_nobody_say_privileges_are_missing() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("doctor-nobody");
    // A copy nobody can execute (the build tree may not be reachable for it).
    let bin = dir.join("llmprobe");
    std::fs::copy(agent_bin(), &bin).expect("copy agent");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let mut cmd = as_nobody(&bin);
    cmd.arg("doctor");
    let (out, _) = run_within(cmd, Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  privileges"), "{text}");
    assert!(
        text.contains("missing privileges: uid 65534 lacks CAP_SYS_ADMIN, CAP_BPF"),
        "{text}"
    );
    assert!(text.contains("sudo llmprobe doctor"), "{text}");
    assert!(text.contains("llmprobe cannot run here"), "{text}");

    let mut cmd = as_nobody(&bin);
    cmd.args(["doctor", "--json"]);
    let (out, _) = run_within(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(check(&r, "privileges")["status"], "fail", "{r:#}");
    assert_eq!(r["summary"]["ready"], false);

    let mut cmd = as_nobody(&bin);
    cmd.args(["run", "--jsonl", "none", "--metrics-addr", "127.0.0.1:0"]);
    let (out, _) = run_within(cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run as nobody succeeded: {err}");
    assert!(err.contains("missing privileges"), "{err}");
    assert!(
        err.contains(
            "needs root, or the capabilities CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"
        ),
        "{err}"
    );
    assert!(!err.contains("tracefs is not mounted"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hostile_process_name_and_executable_leave_doctor_correct() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("doctor-hostile");
    let mut kids = Reaped(Vec::new());
    // An executable the kernel runs (program headers intact) whose section header table is
    // garbage, in a sparse file of 8 GiB.
    let built = build_static(&dir, "built", false);
    let mut elf = std::fs::read(&built).expect("read binary");
    let shoff = u64::from_le_bytes(elf[0x28..0x30].try_into().expect("8 bytes")) as usize;
    let mut x: u32 = 0x1234_5678;
    for b in &mut elf[shoff..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let evil = dir.join("evil");
    std::fs::write(&evil, &elf).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&evil)
        .and_then(|f| f.set_len(8 << 30))
        .expect("extend");
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = as_nobody(&evil);
    cmd.arg("\x1b[2J\n\x07ev\r\nil\x1b]0");
    kids.0.push(start_ready(cmd, "hostile process"));
    let evil_pid = kids.0[0].id();
    // The setpriv child execs the program: same pid.
    let mut py = Command::new(python());
    py.arg("-c")
        .arg("import ssl, time\nprint('ready', flush=True)\ntime.sleep(120)\n");
    kids.0.push(start_ready(py, "python"));
    let py_pid = kids.0[1].id();

    let (r, code, took) = doctor_json(None);
    assert!(took < Duration::from_secs(30), "doctor took {took:?}");
    assert_eq!(code, 0, "{r:#}");
    let e = process(&r, evil_pid);
    eprintln!("hostile process as doctor sees it: {e}");
    let comm = e["comm"].as_str().expect("a string");
    assert!(comm.contains("\\x1b[2J\\n\\x07ev"), "{e}");
    assert!(comm.chars().all(|c| (' '..='~').contains(&c)), "{e}");
    assert_eq!(e["probed"], false, "{e}");
    assert_eq!(e["reason"], "unknown", "{e}");
    // Everything else is still right.
    assert_eq!(process(&r, py_pid)["reason"], "openssl");

    let (out, _) = run_within(
        {
            let mut c = Command::new(agent_bin());
            c.arg("doctor");
            c
        },
        Duration::from_secs(60),
    );
    assert_printable("doctor's output", &out.stdout);
    assert_printable("doctor's log", &out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("{evil_pid} \\x1b[2J\\n"))),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
