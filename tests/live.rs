//! End-to-end: the live view a running agent serves (`--api-socket`, `--ui-addr`), read while
//! the openai SDK streams from the local test server over TLS. A call shows up in flight with
//! its process, model, TTFT and tokens so far while it streams; once it ends, the recent-call
//! list has it, its timeline has one tick per output chunk at the offsets the record's TTFT
//! and TBT figures imply, and the per-model rollup counts it. The page server answers only to
//! an address or `localhost` in `Host`.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn http_get(addr: &str, path: &str, host: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect page server");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn a_streaming_call_is_seen_in_flight_then_with_its_timeline() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("live");
    let ui_port = free_port();
    let ui_addr = format!("127.0.0.1:{ui_port}");
    let mut agent = Agent::start(&dir, false, &["--ui-addr", &ui_addr]);
    let sock = agent.api_socket.clone().expect("socket");
    let mode = std::fs::metadata(&sock)
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the API socket is private");

    // 300 ms to the first chunk, then 24 chunks 100 ms apart: about 2.6 s in flight.
    let server = TestServer::start(true, 300, 100, 24);
    let mut cmd = openai_client(
        &server,
        &["--stream", "--include-usage", "--model", "live-model"],
    );
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("OPENAI_API_KEY", "sk-live-view-test-key");
    let mut client = cmd.spawn().expect("client");
    let pid = client.id();

    // In flight: seen with its model, a TTFT and tokens so far.
    let t0 = Instant::now();
    let seen = loop {
        let (code, b) = agent.api_get("/api/v1/in-flight");
        assert_eq!(code, 200, "{b}");
        let mine = b["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["pid"] == pid && c["role"] == "client" && c["tokens"].as_u64() > Some(2))
            .cloned();
        if let Some(c) = mine {
            break c;
        }
        assert!(t0.elapsed() < WAIT, "the call never showed in flight: {b}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(seen["model"], "live-model", "{seen}");
    assert_eq!(seen["stream"], true, "{seen}");
    let ttft = seen["ttft_s"].as_f64().expect("ttft while streaming");
    assert!((0.25..1.5).contains(&ttft), "{seen}");
    assert!(
        seen["elapsed_s"].as_f64().expect("elapsed") >= ttft,
        "{seen}"
    );
    assert!(seen["tokens_per_s"].as_f64().expect("rate") > 0.0, "{seen}");
    assert!(
        seen["comm"]
            .as_str()
            .is_some_and(|c| c.starts_with("python")),
        "{seen}"
    );

    assert!(client.wait().expect("client").success());
    let rec = agent
        .wait_records("the client's record", WAIT, |rs| {
            rs.iter().any(|r| r["pid"] == pid)
        })
        .into_iter()
        .find(|r| r["pid"] == pid)
        .expect("record");

    // The recent list has it (filtered by process and model), newest first.
    let (_, list) = agent.api_get("/api/v1/calls?model=LIVE&status=ok&limit=10");
    let item = list["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["pid"] == pid)
        .cloned()
        .unwrap_or_else(|| panic!("not listed: {list}"));
    assert_eq!(item["ttft_s"], rec["ttft_s"], "the list carries the record");
    let seq = item["seq"].as_u64().expect("seq");
    let (code, d) = agent.api_get(&format!("/api/v1/calls/{seq}"));
    assert_eq!(code, 200, "{d}");
    let tl = &d["timeline"];
    let ticks: Vec<f64> = tl["ticks_s"]
        .as_array()
        .expect("ticks")
        .iter()
        .map(|t| t.as_f64().expect("tick"))
        .collect();
    let chunks = rec["chunks"].as_u64().expect("chunks");
    assert_eq!(ticks.len() as u64, chunks, "one tick per output chunk: {d}");
    let rec_ttft = rec["ttft_s"].as_f64().expect("ttft");
    assert!(
        (ticks[0] - rec_ttft).abs() < 0.002,
        "first tick at the TTFT: {d}"
    );
    // Chunks are 100 ms apart on the server: the ticks' steps agree with the record's TBT.
    let steps: Vec<f64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
    let p50 = {
        let mut s = steps.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    assert!((0.08..0.2).contains(&p50), "steps {steps:?}");
    let dur = tl["duration_s"].as_f64().expect("duration");
    assert!(ticks.iter().all(|t| *t >= 0.0 && *t <= dur + 1e-3), "{d}");
    assert!(ticks.windows(2).all(|w| w[1] >= w[0]), "{d}");
    assert_eq!(tl["ticks_dropped"], 0);

    // The rollup counts it.
    let (_, r) = agent.api_get("/api/v1/rollups?window=120");
    let m = r["models"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["model"]
                .as_str()
                .is_some_and(|n| n.starts_with("live-model"))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no rollup: {r}"));
    assert!(m["calls"].as_u64() >= Some(1), "{m}");
    assert!(m["ttft_p50_s"].as_f64().is_some(), "{m}");

    // The page server: the API and the page to an address, nothing to a DNS name.
    let ok = http_get(&ui_addr, &format!("/api/v1/calls/{seq}"), &ui_addr);
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let body: Value =
        serde_json::from_str(ok.split_once("\r\n\r\n").expect("body").1).expect("json");
    assert_eq!(body["seq"], seq);
    let page = http_get(&ui_addr, "/", &format!("localhost:{ui_port}"));
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("text/html"),
        "{page}"
    );
    let rebound = http_get(&ui_addr, "/", "llm-dashboard.example.com");
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert!(!rebound.contains("live-model"));
    assert!(
        agent.metric("llmprobe_dropped_total", &["reason=\"live_bad_request\""]) >= Some(1.0),
        "the refusal is counted"
    );

    assert!(agent.stop(), "agent exit");
    assert!(!sock.exists(), "the socket is removed at exit");
}
