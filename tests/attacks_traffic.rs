//! Attack tests (threat model in the README): each attack is run by an unprivileged process
//! (`nobody`, through `llmprobe_tests::as_nobody`) against the real agent with the real eBPF
//! programs. During each: the agent stays alive and under its memory budget, a well-behaved
//! client's LLM calls made at the same time are still recorded, and every refusal is counted.
//!
//! The attacks here come through the traffic itself: invented TLS connections through a library
//! that exports OpenSSL's symbols, and 100k half-sent requests over real sockets.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
/// The agent's default memory budget plus what it holds outside the budget (binary, maps,
/// runtime): above this, a bound is missing.
const MAX_AGENT_RSS: u64 = 400 << 20;

/// Compiles a C test asset with `cc` into `dir` (readable and runnable by everyone).
fn cc(dir: &Path, out: &str, src: &str, extra: &[&str]) -> std::path::PathBuf {
    let path = dir.join(out);
    let st = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&path)
        .arg(assets().join("attacks").join(src))
        .args(extra)
        .status()
        .expect("cc must be installed");
    assert!(st.success(), "building {src} failed");
    path
}

/// Waits until `f` holds or panics with `what`.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A well-behaved client's streamed calls over TLS, made while an attack runs: they must be
/// recorded with their model and usage.
fn good_calls_are_recorded(agent: &Agent, server: &TestServer, model: &str) {
    show_counts(agent);
    let run = run_client(openai_client(
        server,
        &[
            "--model",
            model,
            "--stream",
            "--include-usage",
            "--calls",
            "3",
        ],
    ));
    let recs = agent.wait_records("the well-behaved client's records", WAIT, |r| {
        of(r, run.pid, "client").len() == 3
    });
    for r in of(&recs, run.pid, "client") {
        assert_eq!(r["request_model"], model, "{r}");
        assert_eq!(r["error_type"], Value::Null, "{r}");
        assert!(r["output_tokens"].as_u64().unwrap_or(0) > 0, "{r}");
    }
}

/// Prints what the agent counted (drops, losses, connections) for the test's output.
fn show_counts(agent: &Agent) {
    for l in agent.scrape().lines().filter(|l| {
        l.starts_with("llmprobe_dropped_total")
            || l.starts_with("llmprobe_events_lost_total")
            || l.starts_with("llmprobe_connections_")
            || l.starts_with("llmprobe_events_total")
            || l.starts_with("llmprobe_tracker_memory_bytes")
    }) {
        eprintln!("  {l}");
    }
}

fn dropped(agent: &Agent, reason: &str) -> f64 {
    agent
        .metric("llmprobe_dropped_total", &[&format!("reason=\"{reason}\"")])
        .unwrap_or(0.0)
}

#[test]
fn a_fake_libssl_flooding_a_million_connections() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("ssl-flood");
    let lib = cc(&dir, "libfakessl.so", "fake_ssl.c", &["-shared", "-fPIC"]);
    let flood = cc(&dir, "ssl_flood", "ssl_flood.c", &["-ldl"]);
    let server = TestServer::start(true, 20, 5, 4);
    let mut agent = Agent::start(&dir, false, &["--token-estimator", "chars"]);
    let before = agent
        .metric("llmprobe_tls_libraries_attached", &[])
        .unwrap_or(0.0);
    let go = dir.join("go");
    let mut attacker = as_nobody(&flood)
        .arg(&lib)
        .arg("1000000")
        .arg(&go)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the flooder");
    let mut out = BufReader::new(attacker.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("READY");
    assert_eq!(line.trim(), "READY");
    // The agent finds the library the attacker mapped and probes it, as it would a real one.
    wait_until("the fake libssl to be probed", WAIT, || {
        agent
            .metric("llmprobe_tls_libraries_attached", &[])
            .unwrap_or(0.0)
            > before
    });
    std::fs::write(&go, b"go").expect("go file");
    let t0 = Instant::now();
    // Well into the flood, a well-behaved client's calls are still recorded.
    wait_until("the flood to be under way", WAIT, || {
        agent.metric("llmprobe_events_total", &[]).unwrap_or(0.0) > 200_000.0
    });
    good_calls_are_recorded(&agent, &server, "good-during-flood");
    line.clear();
    out.read_line(&mut line).expect("DONE");
    assert_eq!(line.trim(), "DONE");
    assert!(attacker.wait().expect("wait").success());
    eprintln!("flood of 1M fake connections took {:?}", t0.elapsed());
    // After the flood, too.
    good_calls_are_recorded(&agent, &server, "good-after-flood");
    assert!(agent.alive(), "the agent died:\n{}", agent.log_text());
    let (rss, peak) = agent.memory();
    eprintln!("agent RSS {} MiB, peak {} MiB", rss >> 20, peak >> 20);
    assert!(peak < MAX_AGENT_RSS, "agent peak RSS {peak} bytes");
    let tracked = agent
        .metric("llmprobe_connections_tracked", &[])
        .expect("connections gauge");
    assert!(tracked <= 16_384.0, "{tracked} connections tracked");
    // The flood was refused and counted: the process's own share of the tracker, and whatever
    // the kernel shed or could not write.
    let refused = dropped(&agent, "connection_limit_per_process");
    let shed = dropped(&agent, "kernel_fair_share")
        + agent
            .metric("llmprobe_events_lost_total", &[])
            .unwrap_or(0.0);
    eprintln!("refused {refused}, shed or lost in the kernel {shed}");
    assert!(refused > 0.0, "no per-process refusal counted");
    assert!(
        refused + shed + tracked >= 100_000.0,
        "a million fake connections, {refused} refused + {shed} shed + {tracked} tracked"
    );
    // The invented requests pushed out of the tracker left no record. Those still held when the
    // flooder exited (at most its share) are recorded as what they were: aborted, unanswered.
    let recs = agent.records();
    let flood: Vec<&Value> = recs
        .iter()
        .filter(|r| r["request_model"] == "flood")
        .collect();
    assert!(flood.len() <= 4096, "{} flood records", flood.len());
    for r in flood {
        assert!(r["aborted"] == true && r["http_status"].is_null(), "{r}");
    }
    assert!(agent.stop());
}

#[test]
fn a_hundred_thousand_half_sent_requests() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("partial");
    let server = TestServer::start(false, 20, 5, 4);
    let mut agent = Agent::start(&dir, false, &["--token-estimator", "chars"]);
    // 8 client and 8 server processes of 12 500 sockets each: under the usual open-file limits.
    let mut attacker = as_nobody("/usr/bin/python3")
        .arg(assets().join("attacks").join("partial_requests.py"))
        .args(["--connections", "100000", "--workers", "8", "--ports", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the attacker");
    let mut out = BufReader::new(attacker.stdout.take().expect("stdout"));
    let mut line = String::new();
    let t0 = Instant::now();
    out.read_line(&mut line).expect("READY");
    let opened: u64 = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("attacker said {line:?}"));
    eprintln!("{opened} half-sent requests open after {:?}", t0.elapsed());
    assert!(opened >= 95_000, "only {opened} connections opened");
    // While they are all open, a well-behaved client is still recorded.
    good_calls_are_recorded(&agent, &server, "good-during-partials");
    assert!(agent.alive(), "the agent died:\n{}", agent.log_text());
    let (_, peak) = agent.memory();
    eprintln!("agent peak RSS {} MiB", peak >> 20);
    assert!(peak < MAX_AGENT_RSS, "agent peak RSS {peak} bytes");
    let tracked = agent
        .metric("llmprobe_connections_tracked", &[])
        .expect("connections gauge");
    assert!(tracked <= 16_384.0, "{tracked} connections tracked");
    // Each attacker process got its share and no more: the kernel refused the rest of its
    // sockets; of the requests it did send, what did not fit was evicted in the tracker (its
    // own share first), or shed by the kernel's fair share of the ring before it got there.
    let refused_kernel = dropped(&agent, "kernel_socket_limit_per_process");
    let refused_later = dropped(&agent, "connection_limit_per_process")
        + dropped(&agent, "connection_evicted")
        + dropped(&agent, "kernel_fair_share")
        + dropped(&agent, "tracker_queue_full")
        + agent
            .metric("llmprobe_events_lost_total", &[])
            .unwrap_or(0.0);
    eprintln!("kernel refused {refused_kernel} sockets; {refused_later} requests cut later");
    assert!(refused_kernel > 0.0, "no kernel refusal counted");
    // 8 client processes × 8192 tracked sockets each cannot fit in 16 384 connections.
    assert!(refused_later > 0.0, "no refusal counted after the kernel's");
    drop(attacker.stdin.take());
    let _ = attacker.wait();
    // And after they are gone.
    good_calls_are_recorded(&agent, &server, "good-after-partials");
    assert!(agent.stop());
}
