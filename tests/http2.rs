//! End-to-end tests of HTTP/2: the real agent with the real eBPF programs, the ASGI test app on
//! hypercorn (HTTP/2 in plaintext with prior knowledge, captured by the socket syscall probes, and
//! over TLS with ALPN h2, captured by the OpenSSL uprobes), and real clients: curl (libcurl with
//! nghttp2) and httpx with `http2=True` running several streams at once on one connection, one of
//! them cancelled mid-response (RST_STREAM), and Go's net/http client (Go 1.19 and the current Go)
//! over ALPN h2, seen through the Go `crypto/tls` probes. Both ends are traced: every call gives a
//! client record and a server record.

use std::process::{Command, Stdio};
use std::time::Duration;

use llmprobe_tests::*;
use serde_json::Value;

const TTFT_MS: u64 = 250;
const GAP_MS: u64 = 40;
const CHUNKS: u32 = 6;
/// Prompt tokens the test app reports for the clients' prompt (6 words + 3).
const PROMPT_TOKENS: u64 = 9;
const WAIT: Duration = Duration::from_secs(20);

/// `asgi_server.py --hypercorn`, over TLS with ALPN h2 when `tls`.
fn hypercorn(tls: bool) -> (Proc, u32, u16) {
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("asgi_server.py"))
        .args(["--hypercorn", "--port", "0"])
        .args(["--ttft-ms", &TTFT_MS.to_string()])
        .args(["--gap-ms", &GAP_MS.to_string()])
        .args(["--chunks", &CHUNKS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if tls {
        let (cert, key) = certs();
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    let mut p = Proc {
        child: cmd.spawn().expect("start asgi_server.py --hypercorn"),
    };
    let pid = p.child.id();
    let port = listening_port(&mut p.child, "asgi_server.py --hypercorn");
    (p, pid, port)
}

fn base_url(tls: bool, port: u16) -> String {
    if tls {
        format!("https://localhost:{port}/v1")
    } else {
        format!("http://127.0.0.1:{port}/v1")
    }
}

/// curl streaming one chat completion: `--http2-prior-knowledge` in plaintext, `--http2` (ALPN)
/// over TLS, or HTTP/1.1 when `h2` is false.
fn curl(tls: bool, port: u16, h2: bool) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-N", "--fail", "-H", "content-type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {SECRET_KEY}")])
        .args(["-d", r#"{"model":"test-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello to the test server"}]}"#]);
    match (h2, tls) {
        (true, true) => cmd.arg("--http2"),
        (true, false) => cmd.arg("--http2-prior-knowledge"),
        (false, _) => cmd.arg("--http1.1"),
    };
    if tls {
        cmd.arg("--cacert").arg(certs().0);
    }
    cmd.arg(format!("{}/chat/completions", base_url(tls, port)));
    cmd
}

/// The HTTP/2 client: httpx (`http2=True`) with a non-stream call, then 3 streams and 1 more
/// non-stream call at once, all on one connection; then, on a connection of its own driven by
/// `h2` (httpx's HTTP/2 stack: httpx itself never resets a stream), two streams at once, the
/// first cancelled by RST_STREAM after 2 events.
fn httpx_h2(tls: bool, port: u16) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("clients").join("h2_client.py"))
        .args(["--base-url", &base_url(tls, port)])
        .args(["--streams", "3", "--whole", "2", "--reset-after", "2"]);
    if tls {
        cmd.arg("--ca").arg(certs().0);
    }
    cmd
}

/// The fields of a completed stream of the test app, whatever the HTTP version and the end.
fn check_stream(r: &Value, role: &str, tls: bool) {
    assert_eq!(r["role"], role, "{r}");
    assert_eq!(r["tls"], tls, "{r}");
    assert_eq!(r["http_method"], "POST", "{r}");
    assert_eq!(r["http_path"], "/v1/chat/completions", "{r}");
    assert_eq!(r["http_status"], 200, "{r}");
    assert_eq!(r["provider"], "openai", "{r}");
    assert_eq!(r["api"], "openai.chat_completions", "{r}");
    assert_eq!(r["request_model"], "test-model", "{r}");
    assert_eq!(r["response_model"], "test-model-0001", "{r}");
    assert_eq!(r["stream"], true, "{r}");
    assert_eq!(r["chunks"], CHUNKS, "{r}");
    assert_eq!(r["output_tokens"], CHUNKS, "{r}");
    assert_eq!(r["input_tokens"], PROMPT_TOKENS, "{r}");
    assert_eq!(r["token_source"], "usage", "{r}");
    assert_eq!(r["finish_reason"], "stop", "{r}");
    assert_eq!(r["aborted"], false, "{r}");
    assert_eq!(r["error_type"], Value::Null, "{r}");
    assert!(
        r["request_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("req-")),
        "{r}"
    );
    assert!(
        r["api_key_id"].is_string(),
        "no credential fingerprint: {r}"
    );
    // Timed by the DATA frames as they arrived: TTFT at least the app's delay, the gaps its gap.
    let ttft = TTFT_MS as f64 / 1000.0;
    let gap = GAP_MS as f64 / 1000.0;
    assert_between(r, "ttft_s", ttft - 0.002, ttft + 0.15);
    assert_between(r, "tbt_p50_s", gap - 0.003, gap + 0.04);
    assert_between(r, "tbt_max_s", gap - 0.003, 1.0);
    let d = r["duration_s"].as_f64().unwrap_or(0.0);
    assert!(d >= r["ttft_s"].as_f64().unwrap_or(9.0), "{r}");
}

fn check_whole(r: &Value, role: &str) {
    assert_eq!(r["role"], role, "{r}");
    assert_eq!(r["stream"], false, "{r}");
    assert_eq!(r["http_status"], 200, "{r}");
    assert_eq!(r["request_model"], "test-model", "{r}");
    assert_eq!(r["input_tokens"], PROMPT_TOKENS, "{r}");
    assert_eq!(r["output_tokens"], CHUNKS, "{r}");
    assert_eq!(r["ttft_s"], Value::Null, "{r}");
    assert_eq!(r["finish_reason"], "stop", "{r}");
    assert_eq!(r["aborted"], false, "{r}");
}

fn check_aborted(r: &Value, role: &str) {
    assert_eq!(r["role"], role, "{r}");
    assert_eq!(r["stream"], true, "{r}");
    assert_eq!(r["aborted"], true, "{r}");
    assert_eq!(r["finish_reason"], Value::Null, "{r}");
    let chunks = r["chunks"].as_u64().unwrap_or(0);
    assert!((1..CHUNKS as u64).contains(&chunks), "{r}");
    // Cut well before the whole stream (TTFT + 5 gaps).
    assert_between(r, "duration_s", TTFT_MS as f64 / 1000.0, 0.45);
}

/// The fields a record has (non-null), less those that differ by connection or by call.
fn shape(r: &Value) -> Vec<String> {
    const PER_CALL: &[&str] = &[
        "start_time",
        "end_time",
        "duration_s",
        "pid",
        "comm",
        "peer_addr",
        "request_id",
        "connect_s",
        "tls_handshake_s",
        "upload_s",
    ];
    let mut v: Vec<String> = r
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, v)| !v.is_null() && !PER_CALL.contains(&k.as_str()))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn run_h2(tls: bool) {
    let dir = scratch(if tls { "h2-tls" } else { "h2c" });
    let (_server, server_pid, port) = hypercorn(tls);
    let mut agent = Agent::start(&dir, false, &[]);

    // The same call over HTTP/1.1 and over HTTP/2, from curl.
    let h1 = run_client(curl(tls, port, false));
    let h2 = run_client(curl(tls, port, true));
    assert!(h2.stdout.contains("[DONE]"), "{}", h2.stdout);
    let many = run_client(httpx_h2(tls, port));
    assert_eq!(many.json["http_versions"], serde_json::json!(["HTTP/2"]));
    let aborted_calls: Vec<&Value> = many.json["calls"]
        .as_array()
        .map(|a| a.iter().filter(|c| c["aborted"] == true).collect())
        .unwrap_or_default();
    assert_eq!(aborted_calls.len(), 1, "{}", many.json);

    let recs = agent.wait_records("HTTP/2 records", WAIT, |r| {
        of(r, h1.pid, "client").len() == 1
            && of(r, h2.pid, "client").len() == 1
            && of(r, many.pid, "client").len() == 7
            && of(r, server_pid, "server").len() == 9
    });
    let c1 = &of(&recs, h1.pid, "client")[0];
    let c2 = &of(&recs, h2.pid, "client")[0];
    check_stream(c1, "client", tls);
    check_stream(c2, "client", tls);
    assert_eq!(shape(c1), shape(c2), "HTTP/1.1 {c1}\nHTTP/2 {c2}");
    assert_eq!(
        c1["api_key_id"], c2["api_key_id"],
        "the same key, the same id"
    );
    if !tls {
        assert_eq!(c2["peer_addr"], format!("127.0.0.1:{port}"), "{c2}");
    }

    // Seven calls on two connections, each its own record.
    let mine = of(&recs, many.pid, "client");
    let by = |stream: bool, aborted: bool| {
        mine.iter()
            .filter(|r| r["stream"] == stream && r["aborted"] == aborted)
            .collect::<Vec<_>>()
    };
    assert_eq!(by(false, false).len(), 2, "{}", dump(&mine));
    assert_eq!(by(true, false).len(), 4, "{}", dump(&mine));
    assert_eq!(by(true, true).len(), 1, "{}", dump(&mine));
    by(false, false)
        .iter()
        .for_each(|r| check_whole(r, "client"));
    by(true, false)
        .iter()
        .for_each(|r| check_stream(r, "client", tls));
    check_aborted(by(true, true)[0], "client");
    let ids: std::collections::HashSet<&str> = mine
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 7, "one record per stream: {}", dump(&mine));
    let reset_id = aborted_calls[0]["request_id"].as_str();
    assert_eq!(by(true, true)[0]["request_id"].as_str(), reset_id);

    // The server's side: the same calls, the reset one aborted too.
    let served = of(&recs, server_pid, "server");
    assert_eq!(
        served.iter().filter(|r| r["aborted"] == true).count(),
        1,
        "{}",
        dump(&served)
    );
    for r in &served {
        if r["aborted"] == true {
            check_aborted(r, "server");
        } else if r["stream"] == true {
            check_stream(r, "server", tls);
        } else {
            check_whole(r, "server");
        }
    }
    let scrape = agent.scrape();
    assert_eq!(
        metric(&scrape, "llmprobe_parse_errors_total", &["http2"]).unwrap_or(0.0),
        0.0,
        "{scrape}"
    );
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn h2c_prior_knowledge_curl_and_httpx_streams_on_one_connection() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    run_h2(false);
}

#[test]
fn h2_over_tls_alpn_curl_and_httpx_streams_on_one_connection() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    run_h2(true);
}

/// Go's net/http client, built with Debian's Go 1.19 and the current Go, against hypercorn over
/// TLS: ALPN picks h2, so its calls are streams of one HTTP/2 connection, captured through the Go
/// `crypto/tls` probes (the server's side through OpenSSL's). Each stream gives the record curl's
/// HTTP/2 stream gives, on both sides.
#[test]
fn go_client_over_h2_alpn_of_two_toolchains() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let clients = [
        (go_build(&go_debian(), "client", &[]), "Debian Go"),
        (go_build(&go_current(), "client", &[]), "current Go"),
    ];
    let dir = scratch("h2-go");
    let (_server, server_pid, port) = hypercorn(true);
    let mut agent = Agent::start(&dir, false, &[]);
    let mut served = 0;
    for (bin, what) in &clients {
        let mut cmd = Command::new(bin);
        cmd.arg("-base-url")
            .arg(base_url(true, port))
            .arg("-ca")
            .arg(certs().0)
            // A new binary: discovery attaches within milliseconds of its exec; the wait keeps
            // the first call out of that window (README: first calls).
            .args(["-http2", "-stream", "-include-usage", "-calls", "2"])
            .args(["-delay-ms", "400"]);
        let run = run_client_with_key(cmd, SECRET_KEY);
        let calls = run.json["calls"].as_array().cloned().unwrap_or_default();
        assert_eq!(calls.len(), 2, "{what}: {}", run.stdout);
        for c in &calls {
            assert_eq!(c["proto"], "HTTP/2.0", "{what}: {c}");
        }
        served += 2;
        let recs = agent.wait_records(&format!("{what}: HTTP/2 records"), WAIT, |r| {
            of(r, run.pid, "client").len() == 2 && of(r, server_pid, "server").len() == served
        });
        for r in of(&recs, run.pid, "client") {
            check_stream(&r, "client", true);
            assert_eq!(r["comm"], "client", "{what}: {r}");
        }
        for r in of(&recs, server_pid, "server") {
            check_stream(&r, "server", true);
        }
    }
    let scrape = agent.scrape();
    assert_eq!(
        metric(&scrape, "llmprobe_parse_errors_total", &["http2"]).unwrap_or(0.0),
        0.0,
        "{scrape}"
    );
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}
