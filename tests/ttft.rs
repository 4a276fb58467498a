//! End-to-end: where a fresh connection's time to first token went. The real agent, a local TLS
//! test server behind a delaying proxy (`delay_proxy.py`: every byte 20 ms late each way, so
//! the TLS handshake costs a real round trip), and Python clients that time their own
//! connection (`clients/ttft_client.py`). llmprobe's `connect_s` and `tls_handshake_s` must
//! agree with the client's own clock, be null on the connection's later calls and on the
//! server's side, and together with `ttft_s` account for the TTFT the openai SDK sees.

use std::process::{Command, Stdio};
use std::time::Duration;

use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
/// One-way delay the proxy adds.
const DELAY_MS: u64 = 20;

/// The proxy in front of `server`: clients connect to its port.
fn delay_proxy(server: &TestServer) -> (Proc, u16) {
    let mut child = Command::new("python3")
        .arg(assets().join("delay_proxy.py"))
        .args(["--target", &server.port.to_string()])
        .args(["--delay-ms", &DELAY_MS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start delay_proxy.py");
    let port = listening_port(&mut child, "the delay proxy");
    (Proc { child }, port)
}

fn ttft_client(args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("clients").join("ttft_client.py"))
        .args(args)
        .arg("--ca")
        .arg(certs().0);
    cmd
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

/// Agreement bound between a figure of llmprobe's and the client's own reading of the same
/// interval: the client reads its clock a few Python statements away from the syscalls that
/// bound the interval (tens of microseconds each), on a shared 2-core machine where a thread
/// can wait a scheduling slice (a few ms) between them. 3 ms, or 10% of the figure.
fn agreement(client_s: f64) -> f64 {
    (0.003f64).max(client_s * 0.10)
}

/// A fresh TLS connection: the client times connect() and its handshake itself; llmprobe's
/// connect_s and tls_handshake_s agree with it, and the second call on the connection has
/// neither. The server's records (accepted connections) have neither. The run is recorded, and
/// its replay gives the same records (the capture carries the connect and TLS start times).
#[test]
fn fresh_tls_connection_times_match_the_clients_own() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("ttft-raw");
    let server = TestServer::start(true, 0, 0, 3);
    let (_proxy, port) = delay_proxy(&server);
    let mut agent = Agent::start(&dir, true, &[]);
    let run = run_client(ttft_client(&["raw", "--port", &port.to_string()]));
    let c = &run.json;
    assert_eq!(c["status"], serde_json::json!([200, 200]), "{}", run.stdout);
    let recs = agent.wait_records("2 client and 2 server records", WAIT, |r| {
        of(r, run.pid, "client").len() == 2 && of(r, server.pid, "server").len() == 2
    });
    let mut calls = of(&recs, run.pid, "client");
    calls.sort_by(|a, b| a["start_time"].as_str().cmp(&b["start_time"].as_str()));
    let (first, second) = (&calls[0], &calls[1]);
    let (connect, tls) = (num(first, "connect_s"), num(first, "tls_handshake_s"));
    let (want_connect, want_tls) = (num(c, "connect_s"), num(c, "tls_s"));
    eprintln!(
        "TTFT_E2E raw: llmprobe connect_s {connect:.6} tls_handshake_s {tls:.6}; client connect_s {want_connect:.6} (connect() alone {:.6}) tls_s {want_tls:.6} (do_handshake() alone {:.6}), {}",
        num(c, "connect_call_s"),
        num(c, "handshake_call_s"),
        c["tls_version"]
    );
    assert!(
        (connect - want_connect).abs() <= agreement(want_connect),
        "connect_s {connect} vs the client's {want_connect}: {first}"
    );
    assert!(
        (tls - want_tls).abs() <= agreement(want_tls),
        "tls_handshake_s {tls} vs the client's {want_tls}: {first}"
    );
    // The handshake crossed the proxy at least once each way: a real round trip, not noise.
    assert!(
        tls >= 2.0 * DELAY_MS as f64 / 1000.0,
        "tls_handshake_s {tls} shorter than one round trip through the proxy"
    );
    for f in ["connect_s", "tls_handshake_s"] {
        assert!(
            second[f].is_null(),
            "the second call reused the connection: {second}"
        );
        for s in of(&recs, server.pid, "server") {
            assert!(s[f].is_null(), "an accepted connection has no {f}: {s}");
        }
    }
    assert!(agent.stop(), "agent did not exit cleanly on SIGTERM");
    let replayed = dir.join("replayed.jsonl");
    let st = agent.replay(&replayed);
    assert!(st.success(), "replay failed");
    let mut again = of(&read_jsonl(&replayed), run.pid, "client");
    again.sort_by(|a, b| a["start_time"].as_str().cmp(&b["start_time"].as_str()));
    assert_eq!(again, calls, "the replay differs from the live run");
}

/// The sum of the parts accounts for the TTFT an SDK-level tracer sees: the openai SDK with a
/// fresh client (so a fresh connection), timed from just before `create(stream=True)` to the
/// first chunk. llmprobe's parts tile that window: connect_s (connect() to the ClientHello),
/// tls_handshake_s (to the first request byte) and ttft_s (first request byte to the first
/// output event; request_upload_s lies inside it). What the SDK's window holds besides is its
/// own work before connect() (building the request, resolving `localhost`, the connection
/// pool) and after the first byte (HTTP and SSE parsing, the chunk object): 1.5 ms measured
/// here; the tolerance allows it 15 ms (a scheduling slice or two on a shared machine), and the
/// parts can never exceed the window (2 ms for the clocks' reads).
#[test]
fn the_parts_account_for_the_sdk_ttft() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("ttft-sdk");
    let server = TestServer::start(true, 120, 10, 4);
    let (_proxy, port) = delay_proxy(&server);
    let mut agent = Agent::start(&dir, false, &[]);
    let url = format!("https://localhost:{port}/v1");
    let run = run_client(ttft_client(&["sdk", "--base-url", &url]));
    let sdk_ttft = num(&run.json, "sdk_ttft_s");
    let recs = agent.wait_records("2 client records", WAIT, |r| {
        of(r, run.pid, "client").len() == 2
    });
    // The measured call is the one on a fresh connection of the fresh client: both clients'
    // first calls are on fresh connections, so it is the later one.
    let mut calls = of(&recs, run.pid, "client");
    calls.sort_by(|a, b| a["start_time"].as_str().cmp(&b["start_time"].as_str()));
    let r = &calls[1];
    let (connect, tls, upload, ttft) = (
        num(r, "connect_s"),
        num(r, "tls_handshake_s"),
        num(r, "request_upload_s"),
        num(r, "ttft_s"),
    );
    let sum = connect + tls + ttft;
    eprintln!(
        "TTFT_E2E sdk: connect_s {connect:.6} + tls_handshake_s {tls:.6} + ttft_s {ttft:.6} (request_upload_s {upload:.6} inside it) = {sum:.6}; SDK TTFT {sdk_ttft:.6}; unaccounted {:.6}",
        sdk_ttft - sum
    );
    assert!(upload <= ttft, "the upload is part of ttft_s: {r}");
    assert!(
        sum <= sdk_ttft + 0.002,
        "the parts ({sum}) exceed the SDK's own window ({sdk_ttft}): {r}"
    );
    assert!(
        sdk_ttft - sum <= 0.015,
        "the parts ({sum}) leave {} s of the SDK's TTFT ({sdk_ttft}) unaccounted: {r}",
        sdk_ttft - sum
    );
    // The first call (the warm-up client's) was on a fresh connection too, and has its parts.
    assert!(calls[0]["connect_s"].is_number(), "{}", calls[0]);
    assert!(agent.stop(), "agent did not exit cleanly on SIGTERM");
}

/// Memory-BIO TLS (asyncio here; node works the same way): the SSL object never does I/O on the
/// socket, so nothing links the call to the socket whose connect and ClientHello the kernel saw.
/// The fields stay null: never another connection's figures.
#[test]
fn memory_bio_tls_leaves_the_connection_times_null() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("ttft-async");
    let server = TestServer::start(true, 20, 5, 3);
    let mut agent = Agent::start(&dir, false, &[]);
    let url = format!("https://localhost:{}/v1", server.port);
    let run = run_client(ttft_client(&["async", "--base-url", &url]));
    assert!(num(&run.json, "chunks") >= 3.0, "{}", run.stdout);
    let recs = agent.wait_records("1 client record", WAIT, |r| {
        of(r, run.pid, "client").len() == 1
    });
    let r = &of(&recs, run.pid, "client")[0];
    assert!(r["ttft_s"].is_number(), "the call itself is timed: {r}");
    assert!(r["connect_s"].is_null(), "{r}");
    assert!(r["tls_handshake_s"].is_null(), "{r}");
    assert!(agent.stop(), "agent did not exit cleanly on SIGTERM");
}

/// A fresh plaintext connection: connect_s runs from connect() to the first request byte (the
/// connection's first byte out) and agrees with the client's clock; no TLS handshake; the second
/// call on the connection has neither.
#[test]
fn fresh_plaintext_connection_connect_time_matches_the_clients_own() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("ttft-plain");
    let server = TestServer::start(false, 0, 0, 3);
    let mut agent = Agent::start(&dir, false, &[]);
    let run = run_client(ttft_client(&["plain", "--port", &server.port.to_string()]));
    let c = &run.json;
    assert_eq!(c["status"], serde_json::json!([200, 200]), "{}", run.stdout);
    let recs = agent.wait_records("2 client records", WAIT, |r| {
        of(r, run.pid, "client").len() == 2
    });
    let mut calls = of(&recs, run.pid, "client");
    calls.sort_by(|a, b| a["start_time"].as_str().cmp(&b["start_time"].as_str()));
    let connect = num(&calls[0], "connect_s");
    let want = num(c, "connect_s");
    eprintln!(
        "TTFT_E2E plain: llmprobe connect_s {connect:.6}; client connect_s {want:.6} (connect() alone {:.6})",
        num(c, "connect_call_s")
    );
    assert!(
        (connect - want).abs() <= agreement(want),
        "connect_s {connect} vs the client's {want}: {}",
        calls[0]
    );
    assert!(calls[0]["tls_handshake_s"].is_null(), "{}", calls[0]);
    assert!(calls[1]["connect_s"].is_null(), "{}", calls[1]);
    assert!(agent.stop(), "agent did not exit cleanly on SIGTERM");
}
