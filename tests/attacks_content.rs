//! Attack tests for opt-in content (threat model in the README), run by an unprivileged process
//! (`nobody`) against the real agent with `--capture-content` on for every process: requests
//! whose bodies are hundreds of thousands of empty content blocks, tool calls and messages
//! (memory and CPU per node, not per text byte), text full of control characters (six bytes each
//! once escaped), roles that carry text, and a flood of tool-call ids and answers that try to
//! take another process's links. During them the agent stays alive and within its memory
//! budget, a well-behaved client's calls made at the same time are still recorded with their
//! content, every document stays within its cap, and cuts are counted.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
/// The Python that `nobody` can run.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
const MAX_BYTES: usize = 4096;

/// The attacker's server: answers every POST with a small chat completion that asks for a tool
/// call whose id is the request's model name (so the attacker picks the ids).
const SERVER: &str = r#"
import http.server, json, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *a):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            model = json.loads(body).get("model", "")
        except Exception:
            model = ""
        data = json.dumps({"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
              "message": {"role": "assistant", "content": "\u0001" * 3000,
                "tool_calls": [{"id": model[:200], "type": "function",
                  "function": {"name": "f", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)
        self.wfile.write(head.encode() + data)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
print("LISTENING", s.server_address[1], flush=True)
s.serve_forever()
"#;

/// The attacker's client: one keep-alive connection; every kind of hostile body, `rounds` times.
/// Each body stays under the 128 KiB the kernel sends of one write, so all of it is parsed.
const CLIENT: &str = r#"
import http.client, json, socket, sys
port, rounds = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
c.connect()
c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def call(body):
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    c.getresponse().read()
empty_blocks = b'{"model":"blocks","messages":[{"role":"user","content":[' + b",".join([b"{}"] * 40000) + b"]}]}"
unknown_blocks = b'{"model":"kinds","messages":[{"role":"user","content":[' + b",".join([b'{"zz":1}'] * 12000) + b"]}]}"
tool_calls = json.dumps({"model": "calls", "messages": [{"role": "assistant", "tool_calls":
    [{"id": "i%d" % i, "function": {"name": "n" * 200, "arguments": "{}"}} for i in range(500)]}]}).encode()
messages = json.dumps({"model": "msgs", "messages": [{"role": "user", "content": ""}] * 4000}).encode()
control = json.dumps({"model": "ctl", "messages": [{"role": "user", "content": "\u0001" * 20000}]}).encode()
roles = json.dumps({"model": "roles", "messages": [{"role": "x" * 60000 + " alice@example.com", "content": "hi"}]}).encode()
for r in range(rounds):
    for body in (empty_blocks, unknown_blocks, tool_calls, messages, control, roles):
        call(body)
    # Tool-call ids of the well-behaved client's loop, answered from here: links only within
    # one process.
    call(json.dumps({"model": "call_victim", "messages": [{"role": "user", "content": "hi"}]}).encode())
    call(json.dumps({"model": "x", "messages": [{"role": "tool", "tool_call_id": "call_victim", "content": "r"}]}).encode())
print("DONE", flush=True)
"#;

fn start_server(dir: &Path) -> (Proc, u16, u32) {
    let script = dir.join("content_server.py");
    std::fs::write(&script, SERVER).expect("write server script");
    std::fs::write(dir.join("content_client.py"), CLIENT).expect("write client script");
    let mut child = as_nobody(SYSTEM_PYTHON)
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the attacker's server");
    let pid = child.id();
    let port = listening_port(&mut child, "the attacker's server");
    (Proc { child }, port, pid)
}

#[test]
fn hostile_bodies_keep_content_bounded_and_others_recorded() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("content-attack");
    let (_server, port, server_pid) = start_server(&dir);
    let good = TestServer::start(false, 20, 5, 3);
    let mut agent = Agent::start(
        &dir,
        false,
        &[
            "--capture-content",
            "--content-max-bytes",
            &MAX_BYTES.to_string(),
            "--memory-limit",
            "268435456",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    let (_, hwm_before) = agent.memory();

    let rounds = 3;
    let mut attacker = as_nobody(SYSTEM_PYTHON);
    attacker
        .arg(dir.join("content_client.py"))
        .arg(port.to_string())
        .arg(rounds.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let attacker = attacker.spawn().expect("start the attacker");
    let attacker_pid = attacker.id();
    let during = run_client(openai_client(
        &good,
        &[
            "--model",
            "good-model",
            "--calls",
            "5",
            "--prompt",
            "mail bob@example.org",
        ],
    ));
    let out = attacker.wait_with_output().expect("attacker");
    assert!(
        out.status.success(),
        "attacker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let per_round = 8;
    // The attacker's server reads every call; its client may lose some of its own calls to the
    // kernel's fair share (it writes 120 KB bodies as fast as it can), which is the point of it.
    let recs = agent.wait_records("the attacker's and the good client's records", WAIT, |r| {
        of(r, during.pid, "client").len() == 5
            && of(r, server_pid, "server").len() == rounds * per_round
    });
    assert!(!of(&recs, attacker_pid, "client").is_empty());
    assert!(agent.alive(), "the agent died");
    let (_, hwm) = agent.memory();
    assert!(
        hwm < hwm_before + (256 << 20),
        "peak RSS grew from {hwm_before} to {hwm} bytes"
    );

    // The well-behaved calls: recorded, with their content, redacted.
    for r in of(&recs, during.pid, "client") {
        let text = r["input_messages"][0]["parts"][0]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("no prompt in {r}"));
        assert_eq!(text, "mail [REDACTED:email]", "{r}");
        assert_eq!(r["follows_span_ids"], Value::Null, "{r}");
    }
    // The attacker's: every document within its cap once written; roles from the fixed list;
    // no call linked to another process's.
    let limit = 2 * MAX_BYTES + 16 * 1024;
    for r in of(&recs, attacker_pid, "client")
        .iter()
        .chain(of(&recs, server_pid, "server").iter())
    {
        for f in ["system_instructions", "input_messages", "output_messages"] {
            let len = r[f].to_string().len();
            assert!(
                len <= limit,
                "{f} of {len} bytes: {}",
                &r[f].to_string()[..200]
            );
        }
        for m in r["input_messages"].as_array().into_iter().flatten() {
            let role = m["role"].as_str().unwrap_or("");
            assert!(
                [
                    "system",
                    "developer",
                    "user",
                    "assistant",
                    "tool",
                    "function",
                    "other"
                ]
                .contains(&role),
                "role {role:.40}"
            );
        }
        if let Some(f) = r["follows_span_ids"].as_array() {
            let own: Vec<Value> = of(&recs, r["pid"].as_u64().unwrap_or(0) as u32, "client")
                .iter()
                .chain(of(&recs, r["pid"].as_u64().unwrap_or(0) as u32, "server").iter())
                .map(|x| x["span_id"].clone())
                .collect();
            assert!(
                f.iter().all(|s| own.contains(s)),
                "linked across processes: {r}"
            );
        }
    }
    let body = std::fs::read_to_string(&agent.jsonl).unwrap_or_default();
    assert!(
        !body.contains("alice@example.com"),
        "an e-mail in a role got out"
    );
    assert!(
        agent
            .metric("llmprobe_dropped_total", &["reason=\"content_truncated\""])
            .unwrap_or(0.0)
            >= rounds as f64,
        "cuts not counted"
    );
    assert!(agent.stop());
}
