//! End-to-end: opt-in content (`--capture-content`). The real agent (real eBPF programs) watches
//! the real `openai` SDK and curl call the local test LLM server over TLS, with content capture
//! on for one process name and one model family: the selected call's prompt and its streamed
//! answer (reasoning and text, reassembled from the deltas) reach the record and its span as
//! OpenTelemetry GenAI JSON, redacted by the built-in rules and a custom one; calls of another
//! model or another process carry none; a prompt past `--content-max-bytes` is cut and counted;
//! no raw personal datum or key reaches any output. Runs as root (`cargo xtask test`); see
//! `llmprobe_tests::e2e_enabled`.

use std::process::Command;
use std::time::Duration;

use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// What must never leave the agent unredacted.
const EMAIL: &str = "alice.smith@example.com";
const CARD: &str = "4111 1111 1111 1111";
const KEY: &str = "sk-proj-Q8mZt3vLx9RkPw2NfYb7HcJ4sDgE6aTu";
const TICKET: &str = "TICKET-123456";

fn prompt() -> String {
    format!(
        "Write to {EMAIL} about card {CARD}, use key {KEY} and close {TICKET}; keep zebraquartz"
    )
}

fn curl_chat(server: &TestServer, model: &str, prompt: &str) -> Command {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
    });
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--fail", "-H", "content-type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {SECRET_KEY}")])
        .args(["-d", &body.to_string()]);
    if server.tls {
        cmd.arg("--cacert").arg(certs().0);
    }
    cmd.arg(format!("{}/chat/completions", server.base_url()));
    cmd
}

/// `text` with every `[REDACTED:name]` tag replaced by `<>`, and the names seen.
fn untag(text: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("[REDACTED:") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + "[REDACTED:".len()..];
        let end = tail.find(']').expect("a closed tag");
        names.push(tail[..end].to_owned());
        out.push_str("<>");
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    (out, names)
}

fn no_content(r: &Value) {
    for f in ["system_instructions", "input_messages", "output_messages"] {
        assert_eq!(r[f], Value::Null, "{f} of a call not selected: {r}");
    }
}

#[test]
fn content_is_captured_for_the_selection_only_redacted_and_bounded() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("content");
    let server = TestServer::start(true, 30, 10, 6);
    let receiver = OtlpReceiver::start(&dir);
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let mut agent = Agent::start(
        &dir,
        false,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--capture-content",
            "--capture-content-comm",
            "python",
            "--capture-content-model",
            "content-*",
            "--redact-rule",
            "ticket=TICKET-[0-9]{6}",
            "--content-max-bytes",
            "2048",
        ],
    );
    let prompt = prompt();
    // Selected: the SDK (process `python`), a `content-*` model, streamed with reasoning.
    let a = run_client(openai_client(
        &server,
        &[
            "--stream",
            "--include-usage",
            "--reasoning",
            "3",
            "--model",
            "content-model",
            "--prompt",
            &prompt,
        ],
    ));
    // Not selected: another model; another process name.
    let b = run_client(openai_client(
        &server,
        &["--model", "other-model", "--prompt", &prompt],
    ));
    let c = run_client(curl_chat(&server, "content-model", &prompt));
    // Selected, with a prompt past --content-max-bytes.
    let d = run_client(openai_client(
        &server,
        &["--model", "content-long", "--prompt-words", "3000"],
    ));
    let recs = agent.wait_records("the four calls", WAIT, |r| {
        [a.pid, b.pid, c.pid, d.pid]
            .iter()
            .all(|&p| of(r, p, "client").len() == 1)
    });
    let ra = &of(&recs, a.pid, "client")[0];

    // The prompt: every personal datum and key replaced, the rest as sent.
    let input = &ra["input_messages"];
    assert_eq!(input.as_array().map(Vec::len), Some(1), "{ra}");
    assert_eq!(input[0]["role"], "user");
    let text = input[0]["parts"][0]["content"]
        .as_str()
        .expect("prompt text");
    assert_eq!(input[0]["parts"][0]["type"], "text");
    let (shape, names) = untag(text);
    assert_eq!(
        shape, "Write to <> about card <>, use key <> and close <>; keep zebraquartz",
        "{text}"
    );
    assert_eq!(names[0], "email", "{text}");
    assert_eq!(names[3], "ticket", "{text}");
    assert_eq!(ra["system_instructions"], Value::Null);

    // The answer, reassembled from the stream: what the SDK received, reasoning first.
    let got = &a.json["calls"][0];
    let out = &ra["output_messages"];
    assert_eq!(out.as_array().map(Vec::len), Some(1), "{ra}");
    assert_eq!(out[0]["role"], "assistant");
    assert_eq!(out[0]["finish_reason"], ra["finish_reason"]);
    let parts = out[0]["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 2, "{out}");
    assert_eq!(parts[0]["type"], "reasoning");
    assert_eq!(parts[0]["content"], got["reasoning"], "{out} vs {got}");
    assert_eq!(parts[1]["type"], "text");
    assert_eq!(parts[1]["content"], got["content"], "{out} vs {got}");
    assert!(!got["content"].as_str().unwrap_or("").is_empty());

    no_content(&of(&recs, b.pid, "client")[0]);
    no_content(&of(&recs, c.pid, "client")[0]);

    // The long prompt: its text cut to the cap, marked, counted.
    let rd = &of(&recs, d.pid, "client")[0];
    let long = rd["input_messages"][0]["parts"][0]["content"]
        .as_str()
        .expect("long prompt text");
    assert!(
        long.ends_with('…'),
        "{}",
        &long[long.len().saturating_sub(40)..]
    );
    assert!(long.len() <= 2048 + '…'.len_utf8(), "{}", long.len());
    assert!(long.starts_with("w0 w1 w2 "), "{}", &long[..40]);

    // Spans carry the same documents; the calls not selected carry none.
    let spans = wait_spans(&receiver, &[a.pid, b.pid, c.pid, d.pid]);
    let span_of = |pid: u32| {
        spans
            .iter()
            .find(|s| s["attributes"]["process.pid"] == pid)
            .unwrap_or_else(|| panic!("no span of {pid}: {spans:?}"))
            .clone()
    };
    let sa = span_of(a.pid);
    for (attr, field) in [
        ("gen_ai.input.messages", "input_messages"),
        ("gen_ai.output.messages", "output_messages"),
    ] {
        let v: Value = serde_json::from_str(sa["attributes"][attr].as_str().expect(attr))
            .expect("span content is JSON");
        assert_eq!(v, ra[field], "{attr}");
    }
    assert_eq!(sa["attributes"]["gen_ai.system_instructions"], Value::Null);
    for pid in [b.pid, c.pid] {
        let s = span_of(pid);
        assert_eq!(s["attributes"]["gen_ai.input.messages"], Value::Null, "{s}");
        assert_eq!(
            s["attributes"]["gen_ai.output.messages"],
            Value::Null,
            "{s}"
        );
    }

    // Redactions counted per rule, only for what was rendered (the selected calls).
    let text = agent.scrape();
    for rule in ["email", "ticket"] {
        assert_eq!(
            metric(
                &text,
                "llmprobe_redactions_total",
                &[&format!("rule=\"{rule}\"")]
            ),
            Some(1.0),
            "{rule}: {text}"
        );
    }
    assert_eq!(
        metric(
            &text,
            "llmprobe_dropped_total",
            &["reason=\"content_truncated\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(agent.stop());

    // No raw datum anywhere: records, log, spans.
    for f in [&agent.jsonl, &agent.log, &receiver.out] {
        let body = std::fs::read_to_string(f).unwrap_or_default();
        for secret in [EMAIL, CARD, KEY, TICKET] {
            assert!(!body.contains(secret), "{secret} reached {}", f.display());
        }
    }
    // Prompt text stays out of the log.
    let log = agent.log_text();
    assert!(!log.contains("zebraquartz"), "{log}");
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}

fn wait_spans(receiver: &OtlpReceiver, pids: &[u32]) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let spans = receiver.spans();
        let all = pids
            .iter()
            .all(|&p| spans.iter().any(|s| s["attributes"]["process.pid"] == p));
        if all || std::time::Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
