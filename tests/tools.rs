//! End-to-end tests of tool calls: the real agent, the test LLM server, and an agent loop driven
//! through the real `openai` and `anthropic` SDKs (`tests/assets/clients/tool_loop.py`): a call
//! that declares two tools and gets two tool calls back, then a call that carries both tool
//! results and gets text. Asserts the records' tool fields, and the link from the second call to
//! the first (`follows_span_ids`). Root only (eBPF); see `llmprobe_tests::e2e_enabled`.

use std::process::Command;
use std::time::Duration;

use llmprobe_tests::*;
use serde_json::{Value, json};

const TTFT_MS: u64 = 60;
const GAP_MS: u64 = 10;
const CHUNKS: u32 = 4;
const WAIT: Duration = Duration::from_secs(20);

/// The tools `tool_loop.py` declares, in order: the server calls each once.
const TOOLS: [&str; 2] = ["get_weather", "get_time"];

/// `tool_loop.py` through `sdk` against `server`, streamed or not.
fn tool_loop(sdk: &str, server: &TestServer, stream: bool) -> Command {
    let mut cmd = Command::new(python());
    let url = if sdk == "openai" {
        server.base_url()
    } else {
        server.base_url().trim_end_matches("/v1").to_owned()
    };
    cmd.arg(assets().join("clients").join("tool_loop.py"))
        .args(["--sdk", sdk, "--base-url", &url]);
    if server.tls {
        cmd.arg("--ca").arg(certs().0);
    }
    if stream {
        cmd.arg("--stream");
    }
    cmd
}

/// The second call of an agent loop names the first as the call whose tool results it carries:
/// one task, one chain of spans.
fn assert_linked(first: &Value, second: &Value) {
    let span = &first["span_id"];
    assert!(span.is_string(), "the first call has a span id: {first}");
    assert_eq!(
        second["follows_span_ids"],
        json!([span]),
        "the second call follows the first: {second}"
    );
}

/// Both calls of one loop, checked against what the SDK saw; returns (first, second).
fn check_loop(recs: &[Value], run: &ClientRun, api: &str, tool_finish: &str) -> (Value, Value) {
    let mut calls = of(recs, run.pid, "client");
    calls.sort_by(|a, b| a["start_time"].as_str().cmp(&b["start_time"].as_str()));
    assert_eq!(calls.len(), 2, "{}", dump(&calls));
    let steps = &run.json["steps"];
    // What the SDK assembled: two calls of the two tools, then text.
    let sdk_names: Vec<&str> = steps[0]["tool_calls"]
        .as_array()
        .map(|c| c.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(sdk_names, TOOLS, "{}", run.stdout);
    assert_eq!(steps[0]["finish_reason"], tool_finish, "{}", run.stdout);
    assert_eq!(steps[1]["tool_calls"], json!([]), "{}", run.stdout);

    let (first, second) = (calls[0].clone(), calls[1].clone());
    for r in [&first, &second] {
        assert_eq!(r["api"], api, "{r}");
        assert_eq!(r["http_status"], 200, "{r}");
        assert_eq!(r["error_type"], Value::Null, "{r}");
        assert_eq!(r["tool_definitions"], TOOLS.len(), "{r}");
    }
    assert_eq!(first["finish_reason"], tool_finish, "{first}");
    assert_eq!(first["tool_calls"], TOOLS.len(), "{first}");
    assert_eq!(first["tool_names"], json!(TOOLS), "{first}");
    // The tool calls' arguments are output (the estimate counts them when usage is not sent).
    assert!(first["output_tokens"].as_u64() > Some(0), "{first}");
    assert_ne!(second["finish_reason"], tool_finish, "{second}");
    assert_eq!(second["tool_calls"], Value::Null, "{second}");
    assert_eq!(second["tool_names"], Value::Null, "{second}");
    (first, second)
}

#[test]
fn agent_loops_through_the_openai_and_anthropic_sdks() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("tools");
    let tls = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let plain = TestServer::start(false, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    // (sdk, server, streamed, api, finish reason of a tool-call answer)
    let cases = [
        (
            "openai",
            &tls,
            true,
            "openai.chat_completions",
            "tool_calls",
        ),
        (
            "openai",
            &plain,
            false,
            "openai.chat_completions",
            "tool_calls",
        ),
        ("anthropic", &tls, true, "anthropic.messages", "tool_use"),
        ("anthropic", &plain, false, "anthropic.messages", "tool_use"),
    ];
    let runs: Vec<ClientRun> = cases
        .iter()
        .map(|(sdk, server, stream, ..)| run_client(tool_loop(sdk, server, *stream)))
        .collect();
    let recs = agent.wait_records("two records per agent loop", WAIT, |r| {
        runs.iter().all(|run| of(r, run.pid, "client").len() == 2)
    });
    let mut pairs = Vec::new();
    for ((sdk, _, stream, api, finish), run) in cases.iter().zip(&runs) {
        let (first, second) = check_loop(&recs, run, api, finish);
        assert_eq!(first["stream"], *stream, "{sdk}: {first}");
        pairs.push((first, second));
    }
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
    // Last: the link between the two calls of each loop.
    for (first, second) in &pairs {
        assert_linked(first, second);
    }
}
