//! Offline replay of captures recorded through the real probes (`tests/fixtures/*.capture.jsonl`,
//! made by `tests/assets/record_fixture.py`). Each replay must give exactly the golden records in
//! `NAME.expected.jsonl`; `LLMPROBE_UPDATE_GOLDEN=1` rewrites them (review the diff!). The same
//! captures, cut into random pieces at every level, must give the same records. No root needed.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use llmprobe::app::replay_events;
use llmprobe::clock::Clock;
use llmprobe::conntrack::TrackerConfig;
use llmprobe::llm::LlmCall;
use llmprobe::probes::capture::read_capture;
use llmprobe::probes::events::{DataChunk, ProbeEvent};
use llmprobe::telemetry::SelfMetrics;
use llmprobe_tests::repo_root;
use serde_json::Value;

fn fixtures() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

fn load(name: &str) -> (Clock, Vec<ProbeEvent>) {
    let p = fixtures().join(format!("{name}.capture.jsonl"));
    let f = std::fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    read_capture(BufReader::new(f)).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
}

fn replay(clock: Clock, events: Vec<ProbeEvent>) -> Vec<Value> {
    let calls: Vec<LlmCall> = replay_events(
        clock,
        events,
        TrackerConfig::default(),
        Arc::new(SelfMetrics::unregistered()),
    );
    calls
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect()
}

fn golden(name: &str, got: &[Value]) {
    let path = fixtures().join(format!("{name}.expected.jsonl"));
    let text: String = got.iter().map(|v| format!("{v}\n")).collect();
    if std::env::var("LLMPROBE_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("rewrote {}", path.display());
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate it with LLMPROBE_UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    // Compared as text: exact, including every float digit.
    let got_lines: Vec<&str> = text.lines().collect();
    let want_lines: Vec<&str> = want.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        got_lines,
        want_lines,
        "replay of {name} differs from {}",
        path.display()
    );
}

fn by_role<'a>(recs: &'a [Value], role: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["role"] == role).collect()
}

/// Cuts every data event into pieces at pseudo-random points (same offsets, same times).
fn rechunk(events: &[ProbeEvent], seed: u64) -> Vec<ProbeEvent> {
    let mut state = seed | 1;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut out = Vec::new();
    for ev in events {
        match ev {
            ProbeEvent::Data(d) if d.data.len() > 1 => {
                let mut start = 0;
                while start < d.data.len() {
                    let left = d.data.len() - start;
                    let len = if left == 1 { 1 } else { 1 + next(left.min(64)) };
                    out.push(ProbeEvent::Data(DataChunk {
                        offset: d.offset + start as u32,
                        data: Bytes::copy_from_slice(&d.data[start..start + len]),
                        ..d.clone()
                    }));
                    start += len;
                }
            }
            other => out.push(other.clone()),
        }
    }
    out
}

fn names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".capture.jsonl"))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_capture_replays_to_its_golden_records() {
    let names = names();
    assert!(names.len() >= 6, "fixtures missing: {names:?}");
    for name in names {
        let (clock, events) = load(&name);
        let got = replay(clock, events);
        assert!(!got.is_empty(), "{name} produced no records");
        golden(&name, &got);
    }
}

#[test]
fn captures_cut_into_random_pieces_give_the_same_records() {
    for name in names() {
        let (clock, events) = load(&name);
        let whole = replay(clock, events.clone());
        for seed in [1u64, 7, 1234, 99991] {
            let pieces = rechunk(&events, seed);
            assert!(pieces.len() > events.len(), "{name}: nothing was cut");
            assert_eq!(replay(clock, pieces), whole, "{name} with seed {seed}");
        }
    }
}

#[test]
fn python_tls_stream_with_usage() {
    let (clock, events) = load("openai_python_tls_stream_usage");
    let recs = replay(clock, events);
    for role in ["client", "server"] {
        let rs = by_role(&recs, role);
        assert_eq!(rs.len(), 2, "{role}: {recs:?}");
        for r in rs {
            assert_eq!(r["tls"], true);
            assert_eq!(r["stream"], true);
            assert_eq!(r["token_source"], "usage");
            assert_eq!(r["input_tokens"], 9);
            assert_eq!(r["output_tokens"], 4);
            assert_eq!(r["chunks"], 4);
            assert_eq!(r["finish_reason"], "stop");
            // Recorded against a server injecting 150 ms before the first chunk and 30 ms gaps.
            let ttft = r["ttft_s"].as_f64().unwrap_or(0.0);
            let tpot = r["tpot_s"].as_f64().unwrap_or(0.0);
            assert!((0.148..0.25).contains(&ttft), "{r}");
            assert!((0.027..0.05).contains(&tpot), "{r}");
        }
    }
}

#[test]
fn abort_is_recorded_on_both_sides() {
    let (clock, events) = load("openai_python_tls_abort");
    let recs = replay(clock, events);
    let c = by_role(&recs, "client");
    assert_eq!(c.len(), 1, "{recs:?}");
    assert_eq!(c[0]["aborted"], true);
    assert_eq!(c[0]["finish_reason"], Value::Null);
    let s = by_role(&recs, "server");
    assert_eq!(s.len(), 1, "{recs:?}");
    assert_eq!(s[0]["aborted"], true);
}

#[test]
fn http_errors_carry_their_status() {
    let (clock, events) = load("openai_python_plain_429");
    let recs = replay(clock, events);
    assert!(!recs.is_empty());
    for r in &recs {
        assert_eq!(r["http_status"], 429, "{r}");
        assert_eq!(r["error_type"], "429", "{r}");
        assert_eq!(r["aborted"], false, "{r}");
    }
}

#[test]
fn non_llm_requests_make_no_records() {
    let (clock, events) = load("curl_plain_stream_and_health");
    let recs = replay(clock, events);
    assert_eq!(
        recs.len(),
        2,
        "one chat call seen from both sides: {recs:?}"
    );
    assert!(recs.iter().all(|r| r["http_path"] == "/v1/chat/completions" && r["request_model"] == "curl-model"));
    assert!(recs.iter().all(|r| r["token_source"] == "estimated"));
}

#[test]
fn node_keepalive_calls() {
    let (clock, events) = load("node_fetch_tls_stream");
    let recs = replay(clock, events);
    let c = by_role(&recs, "client");
    assert_eq!(c.len(), 2, "{recs:?}");
    assert!(
        c.iter()
            .all(|r| r["comm"] == "node" && r["tls"] == true && r["request_model"] == "node-model")
    );
}

#[test]
fn captures_hold_no_secrets() {
    for name in names() {
        let p: &Path = &fixtures().join(format!("{name}.capture.jsonl"));
        let text = std::fs::read_to_string(p).unwrap_or_default();
        assert!(!text.contains("do-not-leak"), "{name} holds the API key");
        assert!(
            text.to_ascii_lowercase().contains("authorization:*"),
            "{name}: no masked Authorization header found"
        );
    }
}
