//! Fault tests: the agent killed or restarted mid-stream, a slow or dead collector, a full disk,
//! and a soak of concurrent streams. Real agent, real eBPF programs, real clients.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// BPF program, link and perf-event file descriptors open on the machine (the agent's probes
/// live as long as these), and the uprobe definitions in tracefs.
fn probe_footprint() -> (usize, String) {
    let mut fds_open = 0;
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            fds_open += fds
                .flatten()
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .map(|l| {
                            let l = l.to_string_lossy();
                            l.contains("perf_event")
                                || l.contains("bpf_link")
                                || l.contains("bpf-prog")
                        })
                        .unwrap_or(false)
                })
                .count();
        }
    }
    let uprobes = std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    (fds_open, uprobes)
}

/// Starts a long streamed call (the openai SDK, `chunks` chunks) and waits until it is under way.
fn long_stream(
    server: &TestServer,
    dir: &std::path::Path,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let wait_file = dir.join("go");
    let mut cmd = openai_client(
        server,
        &[
            "--model",
            "long-stream",
            "--stream",
            "--include-usage",
            "--wait-file",
        ],
    );
    cmd.arg(&wait_file)
        .env("OPENAI_API_KEY", SECRET_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("start client");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("WAITING");
    assert_eq!(line.trim(), "WAITING", "client said {line:?}");
    std::fs::write(&wait_file, b"go").expect("go");
    (child, out)
}

/// The client's final JSON line: its one call, which must have completed in full.
fn finished_call(
    mut child: std::process::Child,
    mut out: BufReader<std::process::ChildStdout>,
    chunks: u64,
) -> (u32, Value) {
    let pid = child.id();
    let mut line = String::new();
    out.read_line(&mut line).expect("result line");
    assert!(
        child.wait().expect("wait").success(),
        "the app's call failed: {line}"
    );
    let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    let call = v["calls"][0].clone();
    assert_eq!(call["chunks"].as_u64(), Some(chunks), "{call}");
    assert_eq!(call["aborted"], false, "{call}");
    (pid, call)
}

#[test]
fn a_sigkilled_agent_leaves_the_app_unharmed_and_no_probe_behind() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("sigkill");
    let (perf_before, uprobes_before) = probe_footprint();
    // 40 chunks 50 ms apart: a two-second stream, killed in the middle.
    let server = TestServer::start(true, 100, 50, 40);
    let mut agent = Agent::start(&dir, false, &[]);
    let (perf_running, _) = probe_footprint();
    assert!(perf_running > perf_before, "the agent attached nothing?");
    let (child, out) = long_stream(&server, &dir);
    std::thread::sleep(Duration::from_millis(700));
    let pid = agent.pid().expect("agent pid");
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let t0 = Instant::now();
    while agent.alive() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "SIGKILL did not end the agent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The app's call goes on and completes, every chunk delivered.
    let (_, call) = finished_call(child, out, 40);
    assert!(
        call["duration_ms"].as_f64().unwrap_or(0.0) >= 2000.0,
        "{call}"
    );
    // Nothing of the agent is left in the kernel: its perf-event fds (uprobes, tracepoints)
    // closed with it, and it never defined tracefs uprobes.
    let t0 = Instant::now();
    loop {
        let (perf_after, uprobes_after) = probe_footprint();
        if perf_after <= perf_before && uprobes_after == uprobes_before {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "probes left behind: {perf_after} perf-event fds (before the agent: {perf_before}), uprobe_events {uprobes_after:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_agent_restarted_mid_stream_never_mis_measures_the_call() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir_a = scratch("restart-a");
    let dir_b = scratch("restart-b");
    let server = TestServer::start(false, 300, 50, 30);
    let mut first = Agent::start(&dir_a, false, &[]);
    let (child, out) = long_stream(&server, &dir_a);
    std::thread::sleep(Duration::from_millis(800));
    assert!(first.stop());
    let second = Agent::start(&dir_b, false, &[]);
    let (pid, call) = finished_call(child, out, 30);
    std::thread::sleep(Duration::from_millis(500));
    // The second agent saw only the end of the stream: it records the call as incomplete, or
    // not at all, and never as a call with a made-up TTFT or duration.
    for r in of(&second.records(), pid, "client") {
        assert!(
            !r["error_type"].is_null() || r["aborted"] == true,
            "a call seen from its middle was recorded as whole: {r}"
        );
        if let Some(ttft) = r["ttft_s"].as_f64() {
            assert!(ttft >= 0.3, "made-up TTFT {ttft} in {r}");
        }
    }
    // The first agent saw the start only: whatever it wrote was cut at its stop.
    for r in of(&first.records(), pid, "client") {
        let d = r["duration_s"].as_f64().unwrap_or(0.0);
        assert!(
            d < call["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            "{r}"
        );
    }
}

#[test]
fn a_full_disk_and_a_slow_collector_are_counted_not_fatal() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("full-disk");
    let full = dir.join("full");
    std::fs::create_dir_all(&full).expect("dir");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&full)
        .status()
        .expect("mount");
    assert!(st.success(), "mounting a small tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(full.clone());
    // A collector that accepts connections and never answers.
    let slow = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let slow_port = slow.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in slow.incoming().flatten() {
            held.push(s);
        }
    });
    let server = TestServer::start(false, 5, 1, 3);
    let jsonl = full.join("records.jsonl");
    let endpoint = format!("http://127.0.0.1:{slow_port}");
    let mut agent = Agent::start_with_env(
        &dir,
        false,
        &[
            "--jsonl",
            jsonl.to_str().expect("utf-8"),
            "--otlp-endpoint",
            &endpoint,
        ],
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "500")],
    );
    // ~120 records of ~1 KiB: far more than the 64 KiB the disk holds.
    let run = run_client(openai_client(
        &server,
        &["--model", "disk", "--calls", "60"],
    ));
    assert_eq!(run.json["calls"].as_array().map(Vec::len), Some(60));
    let t0 = Instant::now();
    loop {
        let calls = agent.metric("llmprobe_llm_calls_total", &[]).unwrap_or(0.0);
        if calls >= 120.0 {
            break;
        }
        assert!(t0.elapsed() < WAIT, "{calls} calls recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.alive(), "the agent died:\n{}", agent.log_text());
    let m = agent.scrape();
    let failed = metric(
        &m,
        "llmprobe_dropped_total",
        &["reason=\"jsonl_write_failed\""],
    )
    .unwrap_or(0.0);
    assert!(failed > 0.0, "no JSONL write failure counted:\n{m}");
    let otlp = metric(
        &m,
        "llmprobe_dropped_total",
        &["reason=\"otlp_export_failed\""],
    )
    .unwrap_or(0.0)
        + metric(
            &m,
            "llmprobe_dropped_total",
            &["reason=\"otlp_queue_full\""],
        )
        .unwrap_or(0.0);
    assert!(otlp > 0.0, "no OTLP failure counted:\n{m}");
    // The log says so a bounded number of times, not once per record.
    let log = agent.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("JSONL write failed"))
        .count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} JSONL failure log lines:\n{log}"
    );
    // Shutdown is bounded even with the collector hanging.
    let t0 = Instant::now();
    assert!(agent.stop());
    assert!(t0.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_soak_of_two_hundred_concurrent_streams_keeps_memory_flat_and_loses_nothing() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("soak");
    let server = TestServer::start(false, 50, 20, 20);
    let agent = Agent::start(&dir, false, &["--token-estimator", "chars"]);
    let t0 = Instant::now();
    let mut rss = Vec::new();
    let mut made = 0u64;
    // Rounds of 200 concurrent streams (each ~0.5 s) for 25 s (`LLMPROBE_SOAK_SECS` for a longer
    // run on demand); RSS sampled between rounds.
    let soak = std::env::var("LLMPROBE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    while t0.elapsed() < Duration::from_secs(soak) {
        let run = run_client(openai_client(
            &server,
            &[
                "--model",
                "soak",
                "--concurrent",
                "200",
                "--calls",
                "5",
                "--include-usage",
            ],
        ));
        let calls = run.json["calls"].as_array().map(Vec::len).unwrap_or(0) as u64;
        assert_eq!(calls, 1000, "{}", run.stdout);
        made += calls;
        rss.push(agent.memory().0);
    }
    // Every call is recorded, client and server side, complete (other processes on the machine
    // may be recorded too: only the soak's model is counted).
    let t1 = Instant::now();
    loop {
        let recs: Vec<Value> = agent
            .records()
            .into_iter()
            .filter(|r| r["request_model"] == "soak")
            .collect();
        if recs.len() as u64 >= 2 * made {
            assert_eq!(recs.len() as u64, 2 * made);
            for r in &recs {
                assert!(r["error_type"].is_null() && r["aborted"] == false, "{r}");
                assert_eq!(r["chunks"], 20, "{r}");
            }
            break;
        }
        assert!(
            t1.elapsed() < 2 * WAIT,
            "{} of {} calls recorded",
            recs.len(),
            2 * made
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = agent.scrape();
    assert_eq!(
        metric(&m, "llmprobe_events_lost_total", &[]),
        Some(0.0),
        "{m}"
    );
    for reason in [
        "capture_gap",
        "kernel_fair_share",
        "memory_budget",
        "connection_evicted",
    ] {
        let v = metric(
            &m,
            "llmprobe_dropped_total",
            &[&format!("reason=\"{reason}\"")],
        )
        .unwrap_or(0.0);
        assert_eq!(v, 0.0, "{reason} during the soak");
    }
    // Flat: after the first rounds (allocator warm-up), RSS grows by less than 16 MiB.
    eprintln!(
        "{made} calls; RSS per round (MiB): {:?}",
        rss.iter().map(|r| r >> 20).collect::<Vec<_>>()
    );
    assert!(rss.len() >= 4, "{} rounds only", rss.len());
    let warm = rss[1];
    let last = *rss.last().unwrap_or(&0);
    assert!(
        last < warm + (16 << 20),
        "RSS grew from {warm} to {last} bytes"
    );
}
