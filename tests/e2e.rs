//! End-to-end tests: the real agent with the real eBPF programs, a local test LLM server over TLS
//! and plain HTTP, and real clients (the Python `openai` SDK from PyPI, curl, node's fetch).
//! Every test asserts on the records the agent wrote; none passes without checking something.
//! They run as root (`cargo xtask test`); see `llmprobe_tests::e2e_enabled`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use llmprobe_tests::*;
use serde_json::Value;

const TTFT_MS: u64 = 250;
const GAP_MS: u64 = 40;
const CHUNKS: u32 = 6;
/// Prompt tokens the test server reports for the default prompt (6 words + 3).
const PROMPT_TOKENS: u64 = 9;
const WAIT: Duration = Duration::from_secs(20);

/// TTFT may exceed the injected delay by scheduling and capture latency, never undercut it by more
/// than clock granularity. The same for TPOT and the inter-chunk gap.
fn check_timing(r: &Value, ttft_ms: u64, gap_ms: u64, slack_s: f64) {
    let ttft = ttft_ms as f64 / 1000.0;
    let gap = gap_ms as f64 / 1000.0;
    assert_between(r, "ttft_s", ttft - 0.002, ttft + slack_s);
    assert_between(r, "tpot_s", gap - 0.003, gap + slack_s / 2.0);
    assert_between(r, "tbt_p50_s", gap - 0.003, gap + slack_s / 2.0);
    assert_between(
        r,
        "duration_s",
        ttft + gap * (CHUNKS as f64 - 1.0) - 0.005,
        10.0,
    );
}

/// The fields every completed streamed call to the test server must have.
/// `usage_input`: Some(prompt tokens) when the stream carries usage, None when tokens are estimated.
fn check_stream_record(r: &Value, role: &str, tls: bool, model: &str, usage_input: Option<u64>) {
    assert_eq!(r["role"], role, "{r}");
    assert_eq!(r["tls"], tls, "{r}");
    assert_eq!(r["http_method"], "POST", "{r}");
    assert_eq!(r["http_path"], "/v1/chat/completions", "{r}");
    assert_eq!(r["http_status"], 200, "{r}");
    assert_eq!(r["provider"], "openai", "{r}");
    assert_eq!(r["api"], "openai.chat_completions", "{r}");
    assert_eq!(r["operation"], "chat", "{r}");
    assert_eq!(r["request_model"], model, "{r}");
    assert_eq!(r["response_model"], format!("{model}-0001"), "{r}");
    assert_eq!(r["stream"], true, "{r}");
    assert_eq!(r["chunks"], CHUNKS, "{r}");
    assert_eq!(r["output_tokens"], CHUNKS, "{r}");
    assert_eq!(r["finish_reason"], "stop", "{r}");
    assert_eq!(r["aborted"], false, "{r}");
    assert_eq!(r["error_type"], Value::Null, "{r}");
    if let Some(input) = usage_input {
        assert_eq!(r["token_source"], "usage", "{r}");
        assert_eq!(r["input_tokens"], input, "{r}");
        assert_eq!(r["reasoning_tokens"], 0, "{r}");
        assert_eq!(r["cached_input_tokens"], 0, "{r}");
    } else {
        assert_eq!(r["token_source"], "estimated", "{r}");
    }
    assert!(
        r["request_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("req-")),
        "{r}"
    );
    assert!(
        r["start_time"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z') && s.len() == 27),
        "{r}"
    );
}

#[test]
fn python_sdk_over_tls_keepalive_streams() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("py-tls");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let run = run_client(openai_client(
        &server,
        &[
            "--stream",
            "--include-usage",
            "--calls",
            "3",
            "--model",
            "gpt-test",
        ],
    ));
    let recs = agent.wait_records("3 client and 3 server records", WAIT, |r| {
        of(r, run.pid, "client").len() == 3 && of(r, server.pid, "server").len() == 3
    });
    for r in of(&recs, run.pid, "client") {
        check_stream_record(&r, "client", true, "gpt-test", Some(PROMPT_TOKENS));
        check_timing(&r, TTFT_MS, GAP_MS, 0.08);
        assert_eq!(r["server_address"], "localhost", "{r}");
        assert_eq!(r["server_port"], server.port, "{r}");
        assert_eq!(r["comm"], "python", "{r}");
    }
    for r in of(&recs, server.pid, "server") {
        check_stream_record(&r, "server", true, "gpt-test", Some(PROMPT_TOKENS));
        check_timing(&r, TTFT_MS, GAP_MS, 0.08);
    }
    assert!(agent.stop(), "agent did not exit cleanly on SIGTERM");
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn compressed_responses_gzip_stream_and_body() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("gzip");
    // The server compresses whatever the client accepts; the SDK sends `Accept-Encoding: gzip, deflate`.
    let server =
        TestServer::start_with(true, TTFT_MS, GAP_MS, CHUNKS, &["--honor-accept-encoding"]);
    let mut agent = Agent::start(&dir, false, &[]);
    let streamed = run_client(openai_client(&server, &["--stream", "--include-usage"]));
    let whole = run_client(openai_client(
        &server,
        &["--header", "x-test-encoding=deflate"],
    ));
    let recs = agent.wait_records("compressed records", WAIT, |r| {
        of(r, streamed.pid, "client").len() == 1 && of(r, whole.pid, "client").len() == 1
    });
    let s = &of(&recs, streamed.pid, "client")[0];
    check_stream_record(s, "client", true, "test-model", Some(PROMPT_TOKENS));
    check_timing(s, TTFT_MS, GAP_MS, 0.08);
    let w = &of(&recs, whole.pid, "client")[0];
    assert_eq!(w["stream"], false, "{w}");
    assert_eq!(w["token_source"], "usage", "{w}");
    assert_eq!(w["output_tokens"], CHUNKS, "{w}");
    assert_eq!(w["response_model"], "test-model-0001", "{w}");
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn large_prompts_keep_model_and_stream_flag() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("large");
    let tls = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let plain = TestServer::start(false, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    // ~600 KB request bodies: far more than one call's capture, so the middle is a counted gap.
    let words = 120_000u64;
    let words_arg = words.to_string();
    let a = run_client(openai_client(
        &tls,
        &["--stream", "--include-usage", "--prompt-words", &words_arg],
    ));
    let b = run_client(openai_client(
        &plain,
        &["--stream", "--include-usage", "--prompt-words", &words_arg],
    ));
    let recs = agent.wait_records("large-prompt records", WAIT, |r| {
        of(r, a.pid, "client").len() == 1 && of(r, b.pid, "client").len() == 1
    });
    for (pid, tls_used) in [(a.pid, true), (b.pid, false)] {
        let r = &of(&recs, pid, "client")[0];
        check_stream_record(r, "client", tls_used, "test-model", Some(words + 3));
        check_timing(r, TTFT_MS, GAP_MS, 0.08);
    }
    let metrics = agent.scrape();
    assert!(
        metrics.contains("llmprobe_dropped_total{reason=\"capture_gap\"}"),
        "{metrics}"
    );
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn python_sdk_over_plain_http_stream_and_non_stream() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("py-plain");
    let server = TestServer::start(false, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    // Streams without include_usage (tokens estimated), one sync connection per stream.
    let streamed = run_client(openai_client(
        &server,
        &["--stream", "--calls", "2", "--client", "sync"],
    ));
    let whole = run_client(openai_client(&server, &["--calls", "2"]));
    let recs = agent.wait_records("plain records", WAIT, |r| {
        of(r, streamed.pid, "client").len() == 2 && of(r, whole.pid, "client").len() == 2
    });
    for r in of(&recs, streamed.pid, "client") {
        check_stream_record(&r, "client", false, "test-model", None);
        check_timing(&r, TTFT_MS, GAP_MS, 0.08);
        assert_eq!(r["peer_addr"], format!("127.0.0.1:{}", server.port), "{r}");
        assert_eq!(r["input_tokens"].as_u64().map(|n| n > 0), Some(true), "{r}");
    }
    for r in of(&recs, whole.pid, "client") {
        assert_eq!(r["stream"], false, "{r}");
        assert_eq!(r["ttft_s"], Value::Null, "{r}");
        assert_eq!(r["tpot_s"], Value::Null, "{r}");
        assert_eq!(r["chunks"], Value::Null, "{r}");
        assert_eq!(r["token_source"], "usage", "{r}");
        assert_eq!(r["input_tokens"], PROMPT_TOKENS, "{r}");
        assert_eq!(r["output_tokens"], CHUNKS, "{r}");
        assert_eq!(r["finish_reason"], "stop", "{r}");
        assert_between(&r, "duration_s", TTFT_MS as f64 / 1000.0 - 0.002, 5.0);
    }
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

fn curl_chat(server: &TestServer, model: &str) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-N", "--fail", "-H", "content-type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {SECRET_KEY}")])
        .args(["-H", "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"])
        .args(["-d", &format!(r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"Say hello to the test server"}}]}}"#)]);
    if server.tls {
        cmd.arg("--cacert").arg(certs().0);
    }
    cmd.arg(format!("{}/chat/completions", server.base_url()));
    cmd
}

#[test]
fn curl_over_tls_and_plain_and_non_llm_traffic() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("curl");
    let tls = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let plain = TestServer::start(false, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let a = run_client(curl_chat(&tls, "curl-tls"));
    assert!(a.stdout.contains("data: [DONE]"));
    let b = run_client(curl_chat(&plain, "curl-plain"));
    // Non-LLM HTTP on the same servers: must not produce records.
    for path in ["/health", "/v1/other"] {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "--fail",
            "-X",
            if path == "/health" { "GET" } else { "POST" },
        ]);
        if path != "/health" {
            c.args(["-d", "{}"]);
        }
        c.arg(format!("http://127.0.0.1:{}{path}", plain.port));
        run_client(c);
    }
    let recs = agent.wait_records("curl records", WAIT, |r| {
        of(r, a.pid, "client").len() == 1 && of(r, b.pid, "client").len() == 1
    });
    let ra = &of(&recs, a.pid, "client")[0];
    check_stream_record(ra, "client", true, "curl-tls", Some(PROMPT_TOKENS));
    check_timing(ra, TTFT_MS, GAP_MS, 0.08);
    assert_eq!(ra["comm"], "curl");
    assert_eq!(ra["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ra["peer_addr"], format!("127.0.0.1:{}", tls.port));
    let rb = &of(&recs, b.pid, "client")[0];
    check_stream_record(rb, "client", false, "curl-plain", Some(PROMPT_TOKENS));
    check_timing(rb, TTFT_MS, GAP_MS, 0.08);
    // Give the non-LLM exchanges time to be processed, then check none became a record.
    std::thread::sleep(Duration::from_millis(500));
    let all = agent.records();
    assert!(
        all.iter().all(|r| r["http_path"] == "/v1/chat/completions"),
        "non-LLM traffic produced records:\n{}",
        dump(&all)
    );
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn node_fetch_over_tls_and_plain() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("node");
    let tls = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let plain = TestServer::start(false, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let node = |server: &TestServer, model: &str| {
        let mut cmd = Command::new("node");
        cmd.arg(assets().join("clients").join("node_fetch.mjs"))
            .args([
                "--url",
                &server.base_url(),
                "--model",
                model,
                "--stream",
                "--include-usage",
                "--calls",
                "2",
            ])
            .env("NODE_EXTRA_CA_CERTS", certs().0);
        run_client(cmd)
    };
    let a = node(&tls, "node-tls");
    let b = node(&plain, "node-plain");
    let recs = agent.wait_records("node records", WAIT, |r| {
        of(r, a.pid, "client").len() == 2 && of(r, b.pid, "client").len() == 2
    });
    for r in of(&recs, a.pid, "client") {
        check_stream_record(&r, "client", true, "node-tls", Some(PROMPT_TOKENS));
        check_timing(&r, TTFT_MS, GAP_MS, 0.08);
        assert_eq!(r["comm"], "node");
    }
    for r in of(&recs, b.pid, "client") {
        check_stream_record(&r, "client", false, "node-plain", Some(PROMPT_TOKENS));
        check_timing(&r, TTFT_MS, GAP_MS, 0.08);
    }
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn eight_concurrent_async_streams() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("concurrent");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let run = run_client(openai_client(
        &server,
        &["--stream", "--include-usage", "--concurrent", "8"],
    ));
    let recs = agent.wait_records("8 client records", WAIT, |r| {
        of(r, run.pid, "client").len() == 8
    });
    for r in of(&recs, run.pid, "client") {
        check_stream_record(&r, "client", true, "test-model", Some(PROMPT_TOKENS));
        // Eight interleaved streams on two cores: allow more scheduling slack.
        check_timing(&r, TTFT_MS, GAP_MS, 0.15);
    }
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn client_started_before_the_agent() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("before");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let go = dir.join("go");
    let mut cmd = openai_client(
        &server,
        &[
            "--stream",
            "--include-usage",
            "--wait-file",
            go.to_str().unwrap_or(""),
        ],
    );
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("OPENAI_API_KEY", SECRET_KEY);
    let mut child = Proc {
        child: cmd.spawn().expect("start client"),
    };
    let pid = child.child.id();
    let stdout = child.child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // The client has imported ssl and openai (libssl is mapped) before the agent starts.
    assert_eq!(
        lines.next().and_then(|l| l.ok()).as_deref(),
        Some("WAITING")
    );
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    assert!(maps.contains("libssl"), "client has not loaded libssl yet");
    let mut agent = Agent::start(&dir, false, &[]);
    std::fs::write(&go, b"go").expect("touch go");
    let out = lines.last().and_then(|l| l.ok()).unwrap_or_default();
    assert!(
        child.child.wait().expect("wait").success(),
        "client failed: {out}"
    );
    let recs = agent.wait_records("the early client's record", WAIT, |r| {
        of(r, pid, "client").len() == 1
    });
    let r = &of(&recs, pid, "client")[0];
    check_stream_record(r, "client", true, "test-model", Some(PROMPT_TOKENS));
    check_timing(r, TTFT_MS, GAP_MS, 0.08);
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn client_aborting_mid_stream() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("abort");
    // Ten chunks 100 ms apart; the client leaves after two.
    let server = TestServer::start(true, 200, 100, 10);
    let mut agent = Agent::start(&dir, false, &[]);
    let run = run_client(openai_client(
        &server,
        &["--stream", "--abort-after", "2", "--client", "sync"],
    ));
    assert_eq!(run.json["calls"][0]["aborted"], true);
    let recs = agent.wait_records("aborted records", WAIT, |r| {
        of(r, run.pid, "client").len() == 1 && of(r, server.pid, "server").len() == 1
    });
    let c = &of(&recs, run.pid, "client")[0];
    assert_eq!(c["aborted"], true, "{c}");
    assert_eq!(c["finish_reason"], Value::Null, "{c}");
    let chunks = c["chunks"].as_u64().unwrap_or(0);
    assert!((2..=3).contains(&chunks), "client saw {chunks} chunks: {c}");
    assert_between(c, "ttft_s", 0.198, 0.3);
    // It ended well before the full stream (200 ms + 9 x 100 ms).
    assert_between(c, "duration_s", 0.25, 0.8);
    let s = &of(&recs, server.pid, "server")[0];
    assert_eq!(s["aborted"], true, "{s}");
    assert!(s["chunks"].as_u64().unwrap_or(0) < 10, "{s}");
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn record_then_replay_gives_the_same_records_and_metrics_count_them() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("record");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, true, &[]);
    let run = run_client(openai_client(
        &server,
        &["--stream", "--include-usage", "--calls", "2"],
    ));
    let recs = agent.wait_records("records", WAIT, |r| {
        of(r, run.pid, "client").len() == 2 && of(r, server.pid, "server").len() == 2
    });
    let metrics = agent.scrape();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert!(value("llmprobe_llm_calls_total") >= 4.0, "{metrics}");
    assert!(value("llmprobe_events_total") > 0.0, "{metrics}");
    assert!(value("llmprobe_secrets_masked_total") >= 2.0, "{metrics}");
    assert!(value("llmprobe_tls_libraries_attached") >= 1.0, "{metrics}");
    assert_eq!(value("llmprobe_events_lost_total"), 0.0, "{metrics}");
    assert!(agent.stop());
    let capture = agent.capture.clone().expect("capture path");
    let replayed = dir.join("replayed.jsonl");
    let st = agent.replay(&replayed);
    assert!(st.success(), "replay failed");
    // Compared as text lines: exact, every float digit included.
    let lines = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let mut live = lines(&agent.jsonl);
    let mut again = lines(&replayed);
    live.sort();
    again.sort();
    assert!(live.len() >= recs.len());
    assert_eq!(live, again, "replay differs from the live run");
    assert_no_secret(&[&agent.jsonl, &agent.log, &capture, &replayed]);
}

/// `python tests/assets/clients/<script> ARGS...` with the test venv's Python.
fn venv_client(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("clients").join(script)).args(args);
    cmd
}

fn base(server: &TestServer) -> String {
    server.base_url().trim_end_matches("/v1").to_owned()
}

/// Checks one streamed dialect record: tokens from usage, reasoning timing when asked.
fn check_dialect_stream(
    r: &Value,
    api: &str,
    model: &str,
    reasoning_chunks: u64,
    ttft_ms: u64,
    gap_ms: u64,
) {
    assert_eq!(r["api"], api, "{r}");
    assert_eq!(r["request_model"], model, "{r}");
    assert_eq!(r["stream"], true, "{r}");
    assert_eq!(r["http_status"], 200, "{r}");
    assert_eq!(r["error_type"], Value::Null, "{r}");
    assert_eq!(r["aborted"], false, "{r}");
    assert_eq!(r["token_source"], "usage", "{r}");
    assert_eq!(r["input_tokens"], PROMPT_TOKENS, "{r}");
    assert_eq!(r["output_tokens"], CHUNKS as u64 + reasoning_chunks, "{r}");
    assert_eq!(r["chunks"], CHUNKS as u64 + reasoning_chunks, "{r}");
    let ttft = ttft_ms as f64 / 1000.0;
    let gap = gap_ms as f64 / 1000.0;
    assert_between(r, "ttft_s", ttft - 0.002, ttft + 0.1);
    assert_between(r, "tpot_s", gap - 0.003, gap + 0.03);
    if reasoning_chunks > 0 {
        // The first answer chunk comes `reasoning_chunks` gaps after the first reasoning chunk.
        // Stamps are taken when the bytes are read: a reasoning chunk read late (the reader
        // descheduled on a busy machine) shortens the span by that delay, hence 10 ms below.
        let want = gap * reasoning_chunks as f64;
        assert_between(r, "reasoning_s", want - 0.01, want + 0.05);
    } else {
        assert_eq!(r["reasoning_s"], Value::Null, "{r}");
    }
}

#[test]
fn anthropic_sdk_with_thinking_over_tls_and_plain() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("anthropic");
    let tls = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let plain = TestServer::start(false, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let ca = certs().0;
    let ca = ca.to_str().unwrap_or("");
    let a = run_client(venv_client(
        "anthropic_client.py",
        &[
            "--base-url",
            &base(&tls),
            "--ca",
            ca,
            "--stream",
            "--thinking",
            "2",
            "--model",
            "claude-e2e",
        ],
    ));
    let b = run_client(venv_client(
        "anthropic_client.py",
        &["--base-url", &base(&plain), "--model", "claude-e2e"],
    ));
    let recs = agent.wait_records("anthropic records", WAIT, |r| {
        of(r, a.pid, "client").len() == 1 && of(r, b.pid, "client").len() == 1
    });
    let s = &of(&recs, a.pid, "client")[0];
    check_dialect_stream(s, "anthropic.messages", "claude-e2e", 2, TTFT_MS, GAP_MS);
    assert_eq!(s["provider"], "anthropic", "{s}");
    assert_eq!(s["finish_reason"], "end_turn", "{s}");
    assert_eq!(s["tls"], true, "{s}");
    let w = &of(&recs, b.pid, "client")[0];
    assert_eq!(w["stream"], false, "{w}");
    assert_eq!(w["output_tokens"], CHUNKS, "{w}");
    assert_eq!(w["input_tokens"], PROMPT_TOKENS, "{w}");
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn gemini_ollama_dashscope_responses_and_completions_over_httpx() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("dialects");
    let tls = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let plain = TestServer::start(false, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let ca = certs().0;
    let ca = ca.to_str().unwrap_or("").to_owned();
    // (dialect preset, api, model, reasoning chunks, server)
    let cases: Vec<(&str, &str, &str, u64, &TestServer)> = vec![
        (
            "gemini",
            "gcp.gemini.generate_content",
            "gemini-e2e",
            2,
            &tls,
        ),
        (
            "gemini-array",
            "gcp.gemini.generate_content",
            "gemini-arr",
            0,
            &plain,
        ),
        ("ollama", "ollama.chat", "qwen3-e2e", 2, &plain),
        ("ollama-generate", "ollama.generate", "llama-e2e", 0, &tls),
        ("dashscope", "dashscope.generation", "qwen-e2e", 2, &tls),
        ("responses", "openai.responses", "resp-e2e", 2, &plain),
        ("completions", "openai.completions", "cmpl-e2e", 0, &tls),
    ];
    let mut runs = Vec::new();
    for (dialect, api, model, reasoning, server) in &cases {
        let reasoning_header = format!("x-test-reasoning-chunks={reasoning}");
        let mut args = vec![
            "--url",
            &base(server),
            "--dialect",
            dialect,
            "--model",
            model,
            "--stream",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        args.extend(["--header".to_owned(), reasoning_header]);
        if server.tls {
            args.extend(["--ca".to_owned(), ca.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_client(venv_client("http_client.py", &args));
        runs.push((run.pid, *api, *model, *reasoning, server.tls));
    }
    let recs = agent.wait_records("one record per dialect", WAIT, |r| {
        runs.iter()
            .all(|(pid, ..)| of(r, *pid, "client").len() == 1)
    });
    for (pid, api, model, reasoning, tls_used) in &runs {
        let r = &of(&recs, *pid, "client")[0];
        check_dialect_stream(r, api, model, *reasoning, TTFT_MS, GAP_MS);
        assert_eq!(r["tls"], *tls_used, "{r}");
        if *reasoning > 0 {
            assert!(
                r["reasoning_tokens"]
                    .as_u64()
                    .is_none_or(|n| n == *reasoning),
                "{r}"
            );
        }
    }
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn stream_errors_truncation_length_and_retry_after() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("errors");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let err = run_client(openai_client(
        &server,
        &[
            "--stream",
            "--header",
            "x-test-stream-error-after=2",
            "--allow-http-error",
        ],
    ));
    let cut = run_client(openai_client(
        &server,
        &[
            "--stream",
            "--header",
            "x-test-truncate-after=3",
            "--client",
            "sync",
        ],
    ));
    let len = run_client(openai_client(
        &server,
        &[
            "--stream",
            "--include-usage",
            "--header",
            "x-test-finish=length",
        ],
    ));
    let busy = run_client(openai_client(
        &server,
        &["--header", "x-test-status=429", "--allow-http-error"],
    ));
    let recs = agent.wait_records("error records", WAIT, |r| {
        [err.pid, cut.pid, len.pid, busy.pid]
            .iter()
            .all(|p| of(r, *p, "client").len() == 1)
    });
    let e = &of(&recs, err.pid, "client")[0];
    assert_eq!(e["error_type"], "stream_error", "{e}");
    assert_eq!(e["chunks"], 2, "{e}");
    assert_eq!(e["aborted"], false, "{e}");
    let c = &of(&recs, cut.pid, "client")[0];
    assert_eq!(c["error_type"], "stream_truncated", "{c}");
    assert_eq!(c["chunks"], 3, "{c}");
    assert_eq!(c["output_tokens"], 3, "{c}");
    let l = &of(&recs, len.pid, "client")[0];
    assert_eq!(l["finish_reason"], "length", "{l}");
    assert_eq!(l["error_type"], Value::Null, "{l}");
    let b = &of(&recs, busy.pid, "client")[0];
    assert_eq!(b["error_type"], "429", "{b}");
    assert_eq!(b["retry_after"], "1", "{b}");
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn inference_server_on_fastapi_uvicorn_is_recorded_as_server() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("asgi");
    let mut server = Command::new(python());
    server
        .arg(assets().join("asgi_server.py"))
        .args([
            "--port",
            "0",
            "--ttft-ms",
            &TTFT_MS.to_string(),
            "--gap-ms",
            &GAP_MS.to_string(),
        ])
        .args(["--chunks", &CHUNKS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut server = Proc {
        child: server.spawn().expect("start asgi_server.py"),
    };
    let server_pid = server.child.id();
    let port = listening_port(&mut server.child, "asgi_server.py");
    let mut agent = Agent::start(&dir, false, &[]);
    let url = format!("http://127.0.0.1:{port}/v1");
    let run = run_client(venv_client(
        "openai_client.py",
        &[
            "--base-url",
            &url,
            "--stream",
            "--include-usage",
            "--calls",
            "3",
        ],
    ));
    let recs = agent.wait_records("server and client records", WAIT, |r| {
        of(r, run.pid, "client").len() == 3 && of(r, server_pid, "server").len() == 3
    });
    let servers = of(&recs, server_pid, "server");
    let clients = of(&recs, run.pid, "client");
    for (s, c) in servers.iter().zip(&clients) {
        check_stream_record(s, "server", false, "test-model", Some(PROMPT_TOKENS));
        check_timing(s, TTFT_MS, GAP_MS, 0.08);
        assert_eq!(s["request_id"], c["request_id"], "server {s}\nclient {c}");
        // The server sees the request after the client sent it and the first token before the
        // client gets it: its TTFT is a little shorter.
        let (st, ct) = (
            s["ttft_s"].as_f64().unwrap_or(9.0),
            c["ttft_s"].as_f64().unwrap_or(0.0),
        );
        assert!(
            st <= ct + 0.001 && ct - st < 0.03,
            "server ttft {st} vs client {ct}"
        );
    }
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn prometheus_metrics_and_otlp_spans_joined_to_the_app_trace() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("otel");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let receiver = OtlpReceiver::start(&dir);
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let mut agent = Agent::start(&dir, false, &["--otlp-endpoint", &endpoint]);
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let run = run_client(openai_client(
        &server,
        &[
            "--stream",
            "--include-usage",
            "--calls",
            "2",
            "--model",
            "otel-model",
            "--traceparent",
            tp,
        ],
    ));
    agent.wait_records("records", WAIT, |r| of(r, run.pid, "client").len() == 2);
    // Metrics: two client calls of this model, their tokens, their TTFT.
    let text = agent.scrape();
    let lbl = "gen_ai_request_model=\"otel-model\"";
    let client = "process_executable_name=\"python\"";
    assert_eq!(
        metric(
            &text,
            "gen_ai_client_operation_duration_seconds_count",
            &[lbl, client]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "gen_ai_client_token_usage_sum",
            &[lbl, "gen_ai_token_type=\"input\""]
        ),
        Some(2.0 * PROMPT_TOKENS as f64),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "gen_ai_client_token_usage_sum",
            &[lbl, "gen_ai_token_type=\"output\""]
        ),
        Some(2.0 * CHUNKS as f64),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "gen_ai_client_operation_time_to_first_chunk_seconds_count",
            &[lbl]
        ),
        Some(2.0),
        "{text}"
    );
    let ttft_sum = metric(
        &text,
        "gen_ai_client_operation_time_to_first_chunk_seconds_sum",
        &[lbl],
    )
    .unwrap_or(0.0);
    let ttft = TTFT_MS as f64 / 1000.0;
    assert!(
        ttft_sum >= 2.0 * ttft - 0.004 && ttft_sum < 2.0 * ttft + 0.2,
        "ttft sum {ttft_sum}"
    );
    // One observation per chunk after the first.
    assert_eq!(
        metric(
            &text,
            "gen_ai_client_operation_time_per_output_chunk_seconds_count",
            &[lbl]
        ),
        Some(2.0 * (CHUNKS as f64 - 1.0)),
        "{text}"
    );
    // The server side of the same calls.
    assert_eq!(
        metric(
            &text,
            "gen_ai_server_request_duration_seconds_count",
            &[lbl]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE llmprobe_events_total counter"),
        "classic text exposition: {text}"
    );
    assert!(!text.contains("# EOF"), "{text}");
    // Spans: children of the app's span, in its trace.
    let t0 = std::time::Instant::now();
    let spans = loop {
        let s: Vec<Value> = receiver
            .spans()
            .into_iter()
            .filter(|s| s["attributes"]["process.pid"] == run.pid)
            .collect();
        if s.len() >= 2 || t0.elapsed() > WAIT {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        spans.len(),
        2,
        "spans for the client: {}",
        dump(&receiver.spans())
    );
    for s in &spans {
        assert_eq!(s["trace_id"], "0af7651916cd43dd8448eb211c80319c", "{s}");
        assert_eq!(s["parent_span_id"], "b7ad6b7169203331", "{s}");
        assert_eq!(s["name"], "chat otel-model", "{s}");
        assert_eq!(s["kind"], "SPAN_KIND_CLIENT", "{s}");
        assert_eq!(s["attributes"]["gen_ai.provider.name"], "openai", "{s}");
        assert_eq!(s["attributes"]["gen_ai.usage.output_tokens"], CHUNKS, "{s}");
        assert_eq!(
            s["attributes"]["gen_ai.usage.input_tokens"], PROMPT_TOKENS,
            "{s}"
        );
        let t = s["attributes"]["gen_ai.response.time_to_first_chunk"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(t >= ttft - 0.002 && t < ttft + 0.1, "{s}");
        assert!(
            s["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|n| n == "gen_ai.first_chunk")),
            "{s}"
        );
    }
    let servers: Vec<Value> = receiver
        .spans()
        .into_iter()
        .filter(|s| s["kind"] == "SPAN_KIND_SERVER")
        .collect();
    assert!(
        servers.len() >= 2,
        "server-role spans: {}",
        dump(&receiver.spans())
    );
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log, &receiver.out]);
}

#[test]
fn a_collector_that_is_down_does_not_slow_the_agent() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("otel-down");
    let server = TestServer::start(false, TTFT_MS, GAP_MS, CHUNKS);
    // Nothing listens there.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let mut agent = Agent::start(&dir, false, &["--otlp-endpoint", &endpoint]);
    let run = run_client(openai_client(
        &server,
        &["--stream", "--include-usage", "--calls", "3"],
    ));
    let recs = agent.wait_records("records despite the collector", WAIT, |r| {
        of(r, run.pid, "client").len() == 3
    });
    for r in of(&recs, run.pid, "client") {
        check_timing(&r, TTFT_MS, GAP_MS, 0.08);
    }
    let t0 = std::time::Instant::now();
    let failed = loop {
        let text = agent.scrape();
        let v = metric(&text, "llmprobe_dropped_total", &["otlp"]).unwrap_or(0.0);
        if v > 0.0 || t0.elapsed() > WAIT {
            break v;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(failed > 0.0, "failed exports are counted");
    assert!(agent.stop(), "agent exits cleanly with the collector down");
}

#[test]
fn gpu_metrics_say_whether_nvml_is_there_and_nothing_else_changes() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("gpu");
    let server = TestServer::start(false, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let nvml = Command::new("ldconfig")
        .arg("-p")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("libnvidia-ml.so"))
        .unwrap_or(false);
    let text = agent.scrape();
    let want = if nvml { 1.0 } else { 0.0 };
    assert_eq!(
        metric(&text, "llmprobe_gpu_available", &[]),
        Some(want),
        "{text}"
    );
    if !nvml {
        assert!(
            agent.log_text().contains("no GPU metrics"),
            "one clear line: {}",
            agent.log_text()
        );
    }
    // The rest of the agent works as usual.
    let run = run_client(openai_client(&server, &["--stream", "--include-usage"]));
    let recs = agent.wait_records("a record", WAIT, |r| of(r, run.pid, "client").len() == 1);
    check_stream_record(
        &of(&recs, run.pid, "client")[0],
        "client",
        false,
        "test-model",
        Some(PROMPT_TOKENS),
    );
    assert!(agent.stop());
    // --gpu off never loads NVML.
    let dir = scratch("gpu-off");
    let mut agent = Agent::start(&dir, false, &["--gpu", "off"]);
    assert_eq!(
        metric(&agent.scrape(), "llmprobe_gpu_available", &[]),
        Some(0.0)
    );
    assert!(
        agent.log_text().contains("GPU sampling off"),
        "{}",
        agent.log_text()
    );
    assert!(agent.stop());
}

#[test]
fn inference_server_calls_join_their_worker_gpu_and_count_energy_per_token() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("gpu-join");
    // A stand-in NVML: one device drawing a steady power that runs the processes listed in a
    // file.
    let lib = build_fake_nvml(&dir);
    // The GPU check itself, with the model worker sleeping per step instead of running on a GPU:
    // the agent, an HTTP server process whose child is the GPU process, concurrent streams.
    let out = dir.join("check");
    let status = Command::new(python())
        .arg(assets().join("gpu_check.py"))
        .arg("--agent")
        .arg(agent_bin())
        .arg("--out")
        .arg(&out)
        .args([
            "--fake",
            "--duration",
            "6",
            "--concurrency",
            "3",
            "--fake-nvml",
        ])
        .arg(&lib)
        .env("FAKE_NVML_WATTS", "200")
        .status()
        .expect("run gpu_check.py");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("summary.json")).expect("summary.json"),
    )
    .expect("summary is JSON");
    assert!(status.success(), "gpu check failed: {summary:#}");
    assert_eq!(summary["result"], "PASS", "{summary:#}");
    // The figures, checked here too (not only by the script).
    let records = read_jsonl(&out.join("records.jsonl"));
    let server: Vec<&Value> = records.iter().filter(|r| r["role"] == "server").collect();
    let calls = summary["calls"].as_u64().expect("calls");
    assert!(calls > 0 && server.len() as u64 == calls, "{summary:#}");
    for r in &server {
        assert_eq!(r["gpu_util_mean"].as_f64(), Some(60.0), "{r}");
        assert_eq!(r["gpu_power_mean_w"].as_f64(), Some(200.0), "{r}");
        // Base 512 MiB + the worker's 1 GiB.
        assert_eq!(r["gpu_mem_used_bytes"].as_u64(), Some(3 << 29), "{r}");
    }
    let tokens: u64 = server
        .iter()
        .map(|r| r["output_tokens"].as_u64().unwrap_or(0))
        .sum();
    let energy = summary["token_energy_joules_total"][0]
        .as_f64()
        .expect("energy counter");
    let load_s = summary["load_s"].as_f64().expect("load_s");
    assert!(
        (0.8 * 200.0 * load_s..=1.2 * 200.0 * load_s).contains(&energy),
        "energy {energy} J for {load_s} s at 200 W"
    );
    // Energy per token over the whole run, as a dashboard computes it from the counters.
    let mean = energy / tokens as f64;
    assert!(
        mean.is_finite() && mean > 0.0,
        "{energy} J / {tokens} tokens"
    );
    assert!(
        summary["joules_per_output_token"][0]
            .as_f64()
            .is_some_and(|j| j.is_finite() && j > 0.0),
        "{summary:#}"
    );
}

#[test]
fn a_lost_gpu_does_not_hide_the_others() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("gpu-lost");
    let lib = build_fake_nvml(&dir);
    // Three GPUs; GPU 1 has fallen off the bus.
    let lib_arg = lib.to_string_lossy().into_owned();
    let mut agent = Agent::start_with_env(
        &dir,
        false,
        &["--nvml-lib", &lib_arg, "--gpu-interval", "0.2"],
        &[("FAKE_NVML_GPUS", "3"), ("FAKE_NVML_LOST", "1")],
    );
    std::thread::sleep(Duration::from_millis(600));
    let text = agent.scrape();
    assert_eq!(
        metric(&text, "llmprobe_gpu_available", &[]),
        Some(1.0),
        "{text}"
    );
    for (gpu, seen) in [("0", true), ("1", false), ("2", true)] {
        let has = text.lines().any(|l| {
            l.starts_with("llmprobe_gpu_power_watts{") && l.contains(&format!("gpu=\"{gpu}\""))
        });
        assert_eq!(has, seen, "GPU {gpu}: {text}");
    }
    assert!(
        agent.log_text().contains("GPU 1:"),
        "the lost GPU is logged: {}",
        agent.log_text()
    );
    assert!(agent.stop());
}
