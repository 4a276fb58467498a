//! `llmprobe demo` end to end (root: it loads the real eBPF programs): the records it prints
//! are the calls its client made (models, streaming or not, TTFT near the server's configured
//! delay, the error call's status), /metrics counts them while it runs, and it stops on its own.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

/// The demo server's time to first token, ms (the test passes it; the default is 300).
const DELAY_MS: u64 = 400;

fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

#[test]
fn demo_prints_its_calls_and_serves_metrics() {
    if !e2e_enabled() {
        return;
    }
    let _serial = serial();
    let port = free_port();
    let mut child = Command::new(agent_bin())
        .args(["demo", "--gpu", "off", "--linger", "3"])
        .args(["--delay-ms", &DELAY_MS.to_string()])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env_remove("LLMPROBE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start llmprobe demo");
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // /metrics while it runs: the client-side call count of the demo's streaming model.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut scraped_calls = None;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if scraped_calls.is_none()
            && let Some(text) = scrape(port)
        {
            scraped_calls = metric(
                &text,
                "gen_ai_client_operation_duration_seconds_count",
                &["gen_ai_request_model=\"demo-chat\""],
            )
            .filter(|n| *n >= 2.0);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "llmprobe demo did not stop on its own: {}",
                log.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = log.join().unwrap_or_default();
    assert!(status.success(), "llmprobe demo failed ({status}):\n{log}");
    let records: Vec<Value> = lines
        .join()
        .expect("stdout")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a record ({e}): {l}")))
        .collect();
    assert_eq!(
        scraped_calls,
        Some(2.0),
        "/metrics did not count the two demo-chat calls while the demo ran:\n{log}"
    );
    assert!(
        log.contains(&format!("curl http://127.0.0.1:{port}/metrics")),
        "{log}"
    );
    // Both sides of every call are traced; the client's records are the calls it made.
    let client: Vec<&Value> = records.iter().filter(|r| r["role"] == "client").collect();
    let server: Vec<&Value> = records.iter().filter(|r| r["role"] == "server").collect();
    assert_eq!(client.len(), 4, "client records:\n{}", dump(&records));
    assert_eq!(server.len(), 4, "server records:\n{}", dump(&records));
    let calls: Vec<(&str, bool, u64)> = client
        .iter()
        .map(|r| {
            (
                r["request_model"].as_str().unwrap_or("?"),
                r["stream"].as_bool().unwrap_or(false),
                r["http_status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("demo-chat", true, 200),
            ("demo-chat", false, 200),
            ("demo-mini", true, 200),
            ("demo-unknown", false, 404),
        ]
    );
    let delay = DELAY_MS as f64 / 1000.0;
    for r in client.iter().filter(|r| r["stream"] == true) {
        assert_between(r, "ttft_s", delay, delay + 0.25);
        assert_eq!(r["output_tokens"], 13, "{r}");
        assert_eq!(r["token_source"], "usage", "{r}");
        assert_eq!(r["provider"], "openai", "{r}");
    }
    // The demo's made-up prices (per million tokens): demo-chat 1 in / 2 out, demo-mini 0.1 / 0.4.
    for r in &client[..3] {
        let (i, o) = (
            r["input_tokens"].as_f64().unwrap_or(-1.0),
            r["output_tokens"].as_f64().unwrap_or(-1.0),
        );
        let (pi, po) = if r["request_model"] == "demo-chat" {
            (1.0, 2.0)
        } else {
            (0.1, 0.4)
        };
        let want = (i * pi + o * po) / 1e6;
        let cost = r["cost"].as_f64().unwrap_or(-1.0);
        assert!(
            (cost - want).abs() < 1e-12,
            "cost {cost}, expected {want}: {r}"
        );
        assert_eq!(r["cost_currency"], "USD", "{r}");
    }
    let error = client[3];
    assert_eq!(error["error_type"], "404", "{error}");
    // Only the demo's own processes were traced.
    let pids: std::collections::HashSet<u64> =
        records.iter().filter_map(|r| r["pid"].as_u64()).collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(
        records.iter().all(|r| r["comm"] == "llmprobe"),
        "{}",
        dump(&records)
    );
}
