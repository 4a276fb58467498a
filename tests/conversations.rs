//! End-to-end: conversations. The real agent (real eBPF programs) watches the real `openai` SDK
//! (`tests/assets/clients/conversation_client.py`) hold multi-turn conversations with the local
//! test LLM server over TLS: reconstructed from message history (two interleaved conversations
//! from one process), named by explicit ids (metadata, a request header), a regenerated answer,
//! and a conversation abandoned mid-stream, which ends after `--conversation-idle`. No prompt
//! text and no raw id may appear in any output. Runs as root (`cargo xtask test`); see
//! `llmprobe_tests::e2e_enabled`.

use std::process::Command;
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// Every prompt carries this word; it must never reach an output.
const WORD: &str = "zebraquartz";

fn conversation_client(server: &TestServer, scenario: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("clients").join("conversation_client.py"))
        .arg("--base-url")
        .arg(server.base_url())
        .args(["--scenario", scenario, "--word", WORD]);
    if server.tls {
        cmd.arg("--ca").arg(certs().0);
    }
    cmd
}

/// A client's records in start order.
fn by_start(records: &[Value], pid: u32) -> Vec<Value> {
    let mut r = of(records, pid, "client");
    r.sort_by(|a, b| a["start_time"].as_str().cmp(&b["start_time"].as_str()));
    r
}

/// (conversation id, source, turn, regeneration) of a record.
fn conv(r: &Value) -> (String, String, u64, bool) {
    let id = r["conversation_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no conversation_id in {r}"));
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{r}"
    );
    (
        id.to_owned(),
        r["conversation_source"].as_str().unwrap_or("").to_owned(),
        r["turn"].as_u64().unwrap_or(0),
        r["regeneration"].as_bool().expect("regeneration"),
    )
}

#[test]
fn conversations_from_history_explicit_ids_regeneration_and_abandonment() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("conversations");
    let server = TestServer::start(true, 30, 15, 4);
    let mut agent = Agent::start(&dir, false, &["--conversation-idle", "3"]);

    let history = run_client(conversation_client(&server, "history"));
    let explicit = run_client(conversation_client(&server, "explicit"));
    let regen = run_client(conversation_client(&server, "regenerate"));
    let abandon = run_client(conversation_client(&server, "abandon"));
    let recs = agent.wait_records("every conversation call", WAIT, |r| {
        of(r, history.pid, "client").len() == 6
            && of(r, explicit.pid, "client").len() == 5
            && of(r, regen.pid, "client").len() == 3
            && of(r, abandon.pid, "client").len() == 2
    });

    // (a) Two interleaved conversations without ids: A1 B1 A2 B2 A3 B3.
    let h: Vec<_> = by_start(&recs, history.pid).iter().map(conv).collect();
    let (a, b) = (&h[0].0, &h[1].0);
    assert_ne!(a, b, "{}", dump(&recs));
    for (i, (id, source, turn, regeneration)) in h.iter().enumerate() {
        assert_eq!(id, if i % 2 == 0 { a } else { b }, "{}", dump(&recs));
        assert_eq!(source, "history");
        assert_eq!(*turn, (i / 2 + 1) as u64, "{}", dump(&recs));
        assert!(!regeneration);
    }

    // (b) Explicit ids beat history: metadata.conversation_id (each turn sends only its new
    // message), then the x-conversation-id header.
    let e: Vec<_> = by_start(&recs, explicit.pid).iter().map(conv).collect();
    for (i, c) in e.iter().enumerate() {
        let (source, turn, id) = if i < 3 {
            ("openai.metadata.conversation_id", i + 1, &e[0].0)
        } else {
            ("header.x-conversation-id", i - 2, &e[3].0)
        };
        assert_eq!(
            (&c.0, c.1.as_str(), c.2, c.3),
            (id, source, turn as u64, false),
            "{}",
            dump(&recs)
        );
    }
    assert_ne!(e[0].0, e[3].0);

    // (c) A regeneration: the same history sent again keeps its turn.
    let g: Vec<_> = by_start(&recs, regen.pid).iter().map(conv).collect();
    assert!(g.iter().all(|c| c.0 == g[0].0 && c.1 == "history"));
    assert_eq!(
        g.iter().map(|c| (c.2, c.3)).collect::<Vec<_>>(),
        [(1, false), (2, false), (2, true)],
        "{}",
        dump(&recs)
    );

    // (d) Abandoned: the last turn closed mid-stream.
    let ab = by_start(&recs, abandon.pid);
    let c: Vec<_> = ab.iter().map(conv).collect();
    assert_eq!((c[0].2, c[1].2), (1, 2));
    assert_eq!(c[0].0, c[1].0);
    assert_eq!(ab[1]["aborted"], true, "{}", dump(&recs));

    // Once idle for 3 s every conversation ends: 6 client-side conversations, 15 turns
    // (3+3, 3+2, 2, 2), one abandoned, one regeneration.
    let client = ["role=\"client\"", "gen_ai_provider_name=\"openai\""];
    let t0 = Instant::now();
    let metrics = loop {
        let m = agent.scrape();
        let count = metric(&m, "llmprobe_conversation_turns_count", &client);
        // The server side's conversations (the test server's) end on their own ticks too.
        let active = metric(&m, "llmprobe_conversations_active", &[]);
        if (count == Some(6.0) && active == Some(0.0)) || t0.elapsed() > WAIT {
            break m;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let get = |name: &str| metric(&metrics, name, &client);
    assert_eq!(
        get("llmprobe_conversation_turns_count"),
        Some(6.0),
        "{metrics}"
    );
    assert_eq!(
        get("llmprobe_conversation_turns_sum"),
        Some(15.0),
        "{metrics}"
    );
    assert_eq!(
        get("llmprobe_conversations_abandoned_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        get("llmprobe_conversation_regenerations_total"),
        Some(1.0),
        "{metrics}"
    );
    // Tokens: every client call's input and output tokens, summed over the conversations.
    let tokens: u64 = [history.pid, explicit.pid, regen.pid, abandon.pid]
        .iter()
        .flat_map(|p| of(&recs, *p, "client"))
        .map(|r| r["input_tokens"].as_u64().unwrap_or(0) + r["output_tokens"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        get("llmprobe_conversation_tokens_sum"),
        Some(tokens as f64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "llmprobe_conversations_active", &[]),
        Some(0.0),
        "{metrics}"
    );

    assert!(agent.stop(), "agent did not exit cleanly on SIGTERM");
    // No prompt text and no raw id in any output.
    let outputs = [
        std::fs::read_to_string(&agent.jsonl).unwrap_or_default(),
        agent.log_text(),
        metrics,
    ];
    for text in &outputs {
        for raw in [WORD, "end-user-42", "conv-explicit-1", "conv-header-7"] {
            assert!(!text.contains(raw), "{raw} leaked into an output");
        }
    }
    assert_no_secret(&[&agent.jsonl, &agent.log]);
}
