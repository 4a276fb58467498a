//! End-to-end tests of the Dify dialect: the real agent with the real eBPF programs, the test
//! server's Dify service API (tests/assets/llm_server.py) over TLS and plain HTTP, and the
//! official `dify-client` package from PyPI (tests/assets/clients/dify_app_client.py). Every
//! figure is checked against what the client itself saw or measured.

use std::process::Command;
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

const TTFT_MS: u64 = 250;
const GAP_MS: u64 = 40;
const CHUNKS: u32 = 5;
const WAIT: Duration = Duration::from_secs(20);

/// `python dify_app_client.py --base-url URL [--ca CERT] STEPS...`, the API key a secret the
/// records must never hold.
fn dify_client(server: &TestServer, steps: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("clients").join("dify_app_client.py"))
        .arg("--base-url")
        .arg(server.base_url());
    if server.tls {
        cmd.arg("--ca").arg(certs().0);
    }
    cmd.args(steps).env("DIFY_API_KEY", SECRET_KEY);
    cmd
}

/// The client's records for one path, in start order.
fn records_for(records: &[Value], pid: u32, path: &str) -> Vec<Value> {
    let mut v: Vec<Value> = of(records, pid, "client")
        .into_iter()
        .filter(|r| r["http_path"] == path)
        .collect();
    v.sort_by(|a, b| {
        a["start_time"]
            .as_str()
            .unwrap_or("")
            .cmp(b["start_time"].as_str().unwrap_or(""))
    });
    v
}

/// A price as Dify writes it (a decimal string).
fn price(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a price string: {v}"))
}

/// What every record of a completed Dify chat call says, checked against the client's view.
fn check_usage_and_reported(r: &Value, call: &Value) {
    let usage = &call["usage"];
    assert_eq!(r["provider"], "dify", "{r}");
    assert_eq!(r["http_status"], 200, "{r}");
    assert_eq!(r["input_tokens"], usage["prompt_tokens"], "{r}");
    assert_eq!(r["output_tokens"], usage["completion_tokens"], "{r}");
    assert_eq!(r["token_source"], "usage", "{r}");
    let cost = r["reported_cost"].as_f64().unwrap_or(-1.0);
    assert!(
        (cost - price(&usage["total_price"])).abs() < 1e-12,
        "reported_cost {cost} vs the client's {}: {r}",
        usage["total_price"]
    );
    assert_eq!(r["reported_cost_currency"], usage["currency"], "{r}");
    let latency = usage["latency"].as_f64().unwrap_or(-1.0);
    assert_eq!(r["reported_latency_s"].as_f64(), Some(latency), "{r}");
    // Dify's own latency sits beside llmprobe's measurement of the same call, which also
    // covers the request upload and the last bytes: never much shorter.
    let duration = r["duration_s"].as_f64().unwrap_or(0.0);
    assert!(
        duration >= latency - 0.005,
        "duration {duration} < reported latency {latency}: {r}"
    );
    assert_eq!(r["error_type"], Value::Null, "{r}");
    assert_eq!(r["aborted"], false, "{r}");
}

fn check_conversation(r: &Value) -> String {
    assert_eq!(r["conversation_source"], "dify.conversation_id", "{r}");
    let id = r["conversation_id"].as_str().unwrap_or("").to_owned();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "conversation id is a keyed hash: {r}"
    );
    id
}

fn chat_calls(tls: bool) {
    let dir = scratch(if tls { "dify-tls" } else { "dify-plain" });
    let server = TestServer::start(tls, TTFT_MS, GAP_MS, CHUNKS);
    let mut agent = Agent::start(&dir, false, &[]);
    let steps = [
        "chat-stream",
        "chat-stream-cont",
        "chat-blocking",
        "completion-blocking",
        "chat-stream-error",
    ];
    let run = run_client(dify_client(&server, &steps));
    let calls = run.json["calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(calls.len(), steps.len(), "{}", run.stdout);
    let recs = agent.wait_records("the Dify calls", WAIT, |r| {
        records_for(r, run.pid, "/v1/chat-messages").len() == 4
            && records_for(r, run.pid, "/v1/completion-messages").len() == 1
    });
    let chat = records_for(&recs, run.pid, "/v1/chat-messages");
    let ttft = TTFT_MS as f64 / 1000.0;

    // Streamed chat: TTFT from the message events (the ping before them does not count),
    // tokens from message_end, Dify's price and latency beside llmprobe's duration.
    for (r, call) in [(&chat[0], &calls[0]), (&chat[1], &calls[1])] {
        assert_eq!(r["tls"], tls, "{r}");
        assert_eq!(r["api"], "dify.chat_messages", "{r}");
        assert_eq!(r["operation"], "invoke_agent", "{r}");
        assert_eq!(r["stream"], true, "{r}");
        assert_eq!(r["chunks"], CHUNKS, "{r}");
        check_usage_and_reported(r, call);
        let client_ttft = call["ttft_ms"].as_f64().unwrap_or(0.0) / 1000.0;
        assert_between(r, "ttft_s", ttft - 0.002, client_ttft + 0.005);
        assert_between(r, "tbt_p50_s", GAP_MS as f64 / 1000.0 - 0.003, 0.2);
    }
    // A new conversation takes its id from the answer; the next call names it in its request:
    // the same conversation.
    let first = check_conversation(&chat[0]);
    assert_eq!(check_conversation(&chat[1]), first);
    assert_eq!(calls[0]["conversation_id"], calls[1]["conversation_id"]);

    // Blocking chat: no TTFT, the same usage and reported figures, its own new conversation.
    let r = &chat[2];
    assert_eq!(r["stream"], false, "{r}");
    assert_eq!(r["ttft_s"], Value::Null, "{r}");
    check_usage_and_reported(r, &calls[2]);
    assert_ne!(check_conversation(r), first);

    // Blocking completion: no conversation at all.
    let completion = records_for(&recs, run.pid, "/v1/completion-messages");
    let r = &completion[0];
    assert_eq!(r["api"], "dify.completion_messages", "{r}");
    assert_eq!(r["operation"], "invoke_agent", "{r}");
    check_usage_and_reported(r, &calls[3]);
    assert_eq!(r["conversation_id"], Value::Null, "{r}");

    // A stream that ends in an `error` event: a stream error, the chunks before it counted.
    let r = &chat[3];
    assert_eq!(calls[4]["error_code"], "completion_request_error");
    assert_eq!(r["error_type"], "stream_error", "{r}");
    assert_eq!(r["chunks"], 2, "{r}");
    assert_eq!(r["reported_cost"], Value::Null, "{r}");
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

#[test]
fn dify_chat_and_completion_calls_over_tls() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    chat_calls(true);
}

#[test]
fn dify_chat_and_completion_calls_over_plain_http() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    chat_calls(false);
}

/// A workflow run: its record, and one child span per workflow node in the call's trace, timed
/// like the node times the client saw.
#[test]
fn dify_workflow_nodes_become_child_spans() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("dify-workflow");
    let server = TestServer::start(true, TTFT_MS, GAP_MS, CHUNKS);
    let receiver = OtlpReceiver::start(&dir);
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let mut agent = Agent::start(&dir, false, &["--otlp-endpoint", &endpoint]);
    let run = run_client(dify_client(&server, &["workflow-stream"]));
    let call = &run.json["calls"][0];
    let nodes = call["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 3, "{}", run.stdout);
    let recs = agent.wait_records("the workflow call", WAIT, |r| {
        records_for(r, run.pid, "/v1/workflows/run").len() == 1
    });
    let r = &records_for(&recs, run.pid, "/v1/workflows/run")[0];
    assert_eq!(r["provider"], "dify", "{r}");
    assert_eq!(r["api"], "dify.workflows_run", "{r}");
    assert_eq!(r["operation"], "invoke_workflow", "{r}");
    assert_eq!(r["stream"], true, "{r}");
    assert_eq!(r["chunks"], CHUNKS, "{r}");
    assert_eq!(r["finish_reason"], "succeeded", "{r}");
    assert_eq!(r["error_type"], Value::Null, "{r}");
    let client_ttft = call["ttft_ms"].as_f64().unwrap_or(0.0) / 1000.0;
    assert_between(
        r,
        "ttft_s",
        TTFT_MS as f64 / 1000.0 - 0.002,
        client_ttft + 0.005,
    );
    let latency = r["reported_latency_s"].as_f64().unwrap_or(-1.0);
    assert!(
        latency > 0.0 && latency <= r["duration_s"].as_f64().unwrap_or(0.0) + 0.005,
        "{r}"
    );

    // The call's span and its node spans.
    let t0 = Instant::now();
    let (parent, kids) = loop {
        let spans = receiver.spans();
        let parent = spans
            .iter()
            .find(|s| {
                s["attributes"]["process.pid"] == run.pid
                    && s["attributes"]["gen_ai.operation.name"] == "invoke_workflow"
            })
            .cloned();
        let kids: Vec<Value> = parent
            .as_ref()
            .map(|p| {
                spans
                    .iter()
                    .filter(|s| s["parent_span_id"] == p["span_id"])
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if kids.len() >= 3 || t0.elapsed() > WAIT {
            break (parent, kids);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let parent = parent.unwrap_or_else(|| panic!("no workflow span: {}", dump(&receiver.spans())));
    assert_eq!(kids.len(), 3, "node spans: {}", dump(&receiver.spans()));
    assert_eq!(
        parent["attributes"]["llmprobe.reported_latency"].as_f64(),
        Some(latency),
        "{parent}"
    );
    let ns = |s: &Value, k: &str| s[k].as_u64().unwrap_or(0);
    let mut kids = kids;
    kids.sort_by_key(|s| ns(s, "start_time_unix_nano"));
    for (k, n) in kids.iter().zip(&nodes) {
        assert_eq!(k["trace_id"], parent["trace_id"], "{k}");
        assert_eq!(k["kind"], "SPAN_KIND_INTERNAL", "{k}");
        assert_eq!(
            k["name"],
            format!("workflow_node {}", n["node_type"].as_str().unwrap_or("")),
            "{k}"
        );
        assert_eq!(
            k["attributes"]["llmprobe.workflow.node_type"], n["node_type"],
            "{k}"
        );
        assert_eq!(
            k["attributes"]["llmprobe.workflow.node_status"], n["status"],
            "{k}"
        );
        // Inside the call, and as long as the server says the node took (its events are
        // timed where the agent saw them).
        assert!(
            ns(k, "start_time_unix_nano") >= ns(&parent, "start_time_unix_nano"),
            "{k}"
        );
        assert!(
            ns(k, "end_time_unix_nano") <= ns(&parent, "end_time_unix_nano"),
            "{k}"
        );
        let span_s = (ns(k, "end_time_unix_nano") - ns(k, "start_time_unix_nano")) as f64 / 1e9;
        let elapsed = n["elapsed_time"].as_f64().unwrap_or(-1.0);
        assert!(
            (span_s - elapsed).abs() < 0.03,
            "node span {span_s} s vs the server's {elapsed} s: {k}"
        );
        assert!(
            !k.to_string().contains("app text"),
            "node titles are the app's text and never exported: {k}"
        );
    }
    assert!(agent.stop());
    assert_no_secret(&[&agent.jsonl, &agent.log, &receiver.out]);
}
