//! End-to-end: MCP over streamable HTTP. The real agent, a real MCP server (the `mcp` SDK's
//! MCPServer under uvicorn, `assets/mcp_server.py`) and a real MCP client (the SDK's
//! ClientSession over its streamable HTTP transport, `assets/clients/mcp_client.py`), in
//! plaintext and over TLS, with the server answering as an event stream and as JSON. Each
//! JSON-RPC request is one record on each side (client and server role): its method, tool,
//! JSON-RPC id and error code as the SDK saw them, the session as a keyed id (equal across the
//! session's calls, never the header's value), no tokens; notifications are not records. The
//! MCP duration histograms are scraped, and a replay of the capture gives the same records.

use std::process::{Command, Stdio};
use std::time::Duration;

use llmprobe_tests::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// The MCP server: `--json-response` or event-stream answers, TLS or plaintext.
fn mcp_server(tls: bool, json_response: bool) -> (Proc, u32, u16) {
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("mcp_server.py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if json_response {
        cmd.arg("--json-response");
    }
    if tls {
        let (cert, key) = certs();
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    let mut child = cmd.spawn().expect("start mcp_server.py");
    let pid = child.id();
    let port = listening_port(&mut child, "the MCP server");
    (Proc { child }, pid, port)
}

fn mcp_client(tls: bool, port: u16) -> ClientRun {
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("clients").join("mcp_client.py"));
    if tls {
        cmd.arg("--url")
            .arg(format!("https://localhost:{port}/mcp"))
            .arg("--ca")
            .arg(certs().0);
    } else {
        cmd.arg("--url").arg(format!("http://127.0.0.1:{port}/mcp"));
    }
    run_client(cmd)
}

/// The non-time fields of an MCP record that the test knows in advance.
fn shape(r: &Value) -> Value {
    json!({
        "mcp_method": r["mcp_method"],
        "operation": r["operation"],
        "tool_names": r["tool_names"],
        "tool_calls": r["tool_calls"],
        "error_type": r["error_type"],
        "jsonrpc_error_code": r["jsonrpc_error_code"],
        "provider": r["provider"],
        "api": r["api"],
        "http_method": r["http_method"],
        "http_path": r["http_path"],
        "http_status": r["http_status"],
        "tls": r["tls"],
        "aborted": r["aborted"],
        "input_tokens": r["input_tokens"],
        "output_tokens": r["output_tokens"],
        "token_source": r["token_source"],
        "ttft_s": r["ttft_s"],
        "chunks": r["chunks"],
    })
}

/// What each record must say, in order, given what the SDK saw.
fn expected(tls: bool, seen: &Value) -> Vec<Value> {
    let rec = |method: &str, op: &str, tool: Option<&str>, err: Value, code: Value| {
        json!({
            "mcp_method": method,
            "operation": op,
            "tool_names": tool.map(|t| vec![t]),
            "tool_calls": tool.map(|_| 1),
            "error_type": err,
            "jsonrpc_error_code": code,
            "provider": "mcp",
            "api": "mcp.streamable_http",
            "http_method": "POST",
            "http_path": "/mcp",
            "http_status": 200,
            "tls": tls,
            "aborted": false,
            "input_tokens": null,
            "output_tokens": null,
            "token_source": null,
            "ttft_s": null,
            "chunks": null,
        })
    };
    // The unknown tool: this SDK answers with a tool error; a JSON-RPC error would carry its code.
    let (unknown_err, unknown_code) = match seen["unknown"]["code"].as_i64() {
        Some(c) => (json!(c.to_string()), json!(c)),
        None => (json!("tool_error"), Value::Null),
    };
    let prompt_code = seen["prompt"]["code"]
        .as_i64()
        .expect("prompts/get of an unknown prompt is a JSON-RPC error");
    vec![
        rec("initialize", "initialize", None, Value::Null, Value::Null),
        rec("tools/list", "tools/list", None, Value::Null, Value::Null),
        rec(
            "tools/call",
            "execute_tool",
            Some("add"),
            Value::Null,
            Value::Null,
        ),
        rec(
            "tools/call",
            "execute_tool",
            Some("fail"),
            json!("tool_error"),
            Value::Null,
        ),
        rec(
            "tools/call",
            "execute_tool",
            Some("no_such_tool"),
            unknown_err,
            unknown_code,
        ),
        rec(
            "prompts/get",
            "prompts/get",
            None,
            json!(prompt_code.to_string()),
            json!(prompt_code),
        ),
        rec(
            "resources/read",
            "resources/read",
            None,
            Value::Null,
            Value::Null,
        ),
    ]
}

fn by_start(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by(|a, b| a["start_time"].as_str().cmp(&b["start_time"].as_str()));
    v
}

/// Checks one session's records on one side; returns them.
fn check_side(recs: &[Value], pid: u32, role: &str, tls: bool, run: &ClientRun) -> Vec<Value> {
    let got = by_start(of(recs, pid, role));
    let want = expected(tls, &run.json);
    let shapes: Vec<Value> = got.iter().map(shape).collect();
    assert_eq!(shapes, want, "{role} records:\n{}", dump(&got));
    // The session: none on initialize (the server gives it in its answer), then one keyed id
    // on every later call, 16 hex digits, not the header's value.
    let raw = run.json["sessions"][0]
        .as_str()
        .expect("the server gave a session id");
    assert!(got[0]["mcp_session_id"].is_null(), "{}", got[0]);
    let sid = got[1]["mcp_session_id"].as_str().expect("a session id");
    assert!(
        sid.len() == 16 && sid.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sid}"
    );
    assert_ne!(sid, raw);
    for r in &got[1..] {
        assert_eq!(r["mcp_session_id"], json!(sid), "{r}");
    }
    // JSON-RPC ids: one per request, all different.
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r["jsonrpc_request_id"].as_str().expect("a request id"))
        .collect();
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    got
}

#[test]
fn mcp_requests_are_records_on_both_sides() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("mcp");
    let mut agent = Agent::start(&dir, true, &[]);
    let mut sessions = Vec::new();
    let mut all = Vec::new();
    for (tls, json_response) in [(false, false), (false, true), (true, false), (true, true)] {
        let (_server, server_pid, port) = mcp_server(tls, json_response);
        let run = mcp_client(tls, port);
        let seen = &run.json;
        assert_eq!(seen["tools"], json!(["add", "fail"]), "{}", run.stdout);
        assert_eq!(
            (&seen["add_is_error"], &seen["fail_is_error"]),
            (&json!(false), &json!(true))
        );
        let recs = agent.wait_records("7 client and 7 server MCP records", WAIT, |r| {
            of(r, run.pid, "client").len() >= 7 && of(r, server_pid, "server").len() >= 7
        });
        // Stragglers (a notification taken for a call) would show up now.
        std::thread::sleep(Duration::from_millis(500));
        let recs = [recs, agent.records()].concat();
        let recs: Vec<Value> = {
            let mut seen_lines = std::collections::HashSet::new();
            recs.into_iter()
                .filter(|r| seen_lines.insert(r.to_string()))
                .collect()
        };
        let client = check_side(&recs, run.pid, "client", tls, &run);
        let server = check_side(&recs, server_pid, "server", tls, &run);
        // Both sides name the same requests and, under one id key, the same session.
        for (c, s) in client.iter().zip(&server) {
            assert_eq!(c["jsonrpc_request_id"], s["jsonrpc_request_id"]);
            assert_eq!(c["mcp_session_id"], s["mcp_session_id"]);
        }
        sessions.push(client[1]["mcp_session_id"].clone());
        sessions.push(json!(run.json["sessions"][0]));
        all.extend(client);
        all.extend(server);
    }
    // Four sessions, four ids.
    let ids: std::collections::HashSet<String> =
        sessions.iter().step_by(2).map(|s| s.to_string()).collect();
    assert_eq!(ids.len(), 4, "{sessions:?}");

    let text = agent.scrape();
    for role in ["client", "server"] {
        let fam = format!("mcp_{role}_operation_duration_seconds_count");
        for (needles, n) in [
            (
                vec!["mcp_method_name=\"tools/call\"", "gen_ai_tool_name=\"add\""],
                4.0,
            ),
            (
                vec!["gen_ai_tool_name=\"fail\"", "error_type=\"tool_error\""],
                4.0,
            ),
            (vec!["mcp_method_name=\"resources/read\""], 4.0),
        ] {
            let total: f64 = text
                .lines()
                .filter(|l| l.starts_with(&fam) && needles.iter().all(|n| l.contains(n)))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            assert_eq!(total, n, "{fam} {needles:?}:\n{text}");
        }
    }
    // Tool calls are GenAI operations on the client side; nothing of MCP counts as tokens.
    assert!(
        metric(
            &text,
            "gen_ai_client_operation_duration_seconds_count",
            &[
                "gen_ai_operation_name=\"execute_tool\"",
                "gen_ai_provider_name=\"mcp\""
            ]
        )
        .is_some(),
        "{text}"
    );
    for l in text.lines().filter(|l| l.contains("provider_name=\"mcp\"")) {
        assert!(
            !l.starts_with("gen_ai_client_token_usage")
                && !l.starts_with("llmprobe_tokens")
                && !l.starts_with("gen_ai_server_")
                && !l.starts_with("gen_ai_client_operation_time_to_first_chunk"),
            "an MCP record in a token or TTFT family: {l}"
        );
    }
    assert!(agent.stop(), "agent did not exit cleanly on SIGTERM");
    // The session header's value is nowhere: records, capture, log.
    let capture = agent.capture.clone().expect("capture");
    for f in [&agent.jsonl, &capture, &agent.log] {
        let hay = std::fs::read_to_string(f).unwrap_or_default();
        for s in sessions.iter().skip(1).step_by(2) {
            let raw = s.as_str().expect("raw id");
            assert!(
                !hay.contains(raw),
                "the session id leaked into {}",
                f.display()
            );
        }
    }
    // The replay gives the live run's records (the capture keeps the session's keyed id).
    let replayed = dir.join("replayed.jsonl");
    assert!(agent.replay(&replayed).success(), "replay failed");
    let again = read_jsonl(&replayed);
    for r in &all {
        let same = again.iter().any(|a| {
            a["pid"] == r["pid"]
                && a["role"] == r["role"]
                && a["start_time"] == r["start_time"]
                && shape(a) == shape(r)
                && a["mcp_session_id"] == r["mcp_session_id"]
                && a["jsonrpc_request_id"] == r["jsonrpc_request_id"]
        });
        assert!(same, "not replayed: {r}");
    }
}
