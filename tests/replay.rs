//! Offline replay of captures recorded through the real probes (`tests/fixtures/*.capture.jsonl`,
//! made by `tests/assets/record_fixture.py`). Each replay must give exactly the golden records in
//! `NAME.expected.jsonl`; `LLMPROBE_UPDATE_GOLDEN=1` rewrites them (review the diff!). The same
//! captures, cut into random pieces at every level, must give the same records. No root needed.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use llmprobe::app::{replay_events, replay_events_with_content};
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

/// The replay of `events` with `--capture-content` on: each record's content documents.
fn replay_content(clock: Clock, events: Vec<ProbeEvent>) -> Vec<Value> {
    let args = llmprobe::content::ContentArgs {
        capture_content: true,
        content_max_bytes: llmprobe::content::DEFAULT_MAX_BYTES,
        ..Default::default()
    };
    let setup = args.build().expect("content flags");
    replay_events_with_content(
        clock,
        events,
        TrackerConfig::default(),
        Arc::new(SelfMetrics::unregistered()),
        setup,
    )
    .iter()
    .map(|c| {
        let v = serde_json::to_value(c).unwrap_or(Value::Null);
        serde_json::json!({
            "role": v["role"],
            "api": v["api"],
            "system_instructions": v["system_instructions"],
            "input_messages": v["input_messages"],
            "output_messages": v["output_messages"],
        })
    })
    .collect()
}

/// Every capture's content, as `--capture-content` reads it (the requests' messages in every
/// dialect, the answers reassembled from their streams), is the golden `content.expected.jsonl`
/// (one line per record: the fixture, then the documents), and the same under random cuts.
#[test]
fn content_of_every_capture_replays_to_its_golden_documents() {
    let mut all = Vec::new();
    for name in names() {
        let (clock, events) = load(&name);
        let got = replay_content(clock, events.clone());
        // Without the flag, none.
        for r in replay(clock, events.clone()) {
            assert_eq!(r["input_messages"], Value::Null, "{name}");
            assert_eq!(r["output_messages"], Value::Null, "{name}");
        }
        for seed in [3u64, 4242] {
            assert_eq!(
                replay_content(clock, rechunk(&events, seed)),
                got,
                "{name} cut with seed {seed}"
            );
        }
        all.extend(got.into_iter().map(|mut v| {
            v["fixture"] = Value::String(name.clone());
            v
        }));
    }
    assert!(
        all.iter().any(|v| v["output_messages"].is_array()),
        "no capture gave an answer"
    );
    golden("content", &all);
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
        let lower = text.to_ascii_lowercase();
        assert!(
            ["authorization:*", "x-api-key:*", "x-goog-api-key:*"]
                .iter()
                .any(|h| lower.contains(h)),
            "{name}: no masked key header found"
        );
    }
}

/// What every record of a dialect fixture must say (both roles). Recorded against the test
/// server's defaults: 150 ms to the first chunk, 30 ms between chunks, 4 answer chunks, and
/// 2 reasoning chunks where asked. Estimated inputs are the tokenizer's count of the prompt
/// "Say hello to the test server" (6); the server's usage says 9 (words + 3).
struct Expect {
    name: &'static str,
    api: &'static str,
    stream: bool,
    input: Option<u64>,
    output: Option<u64>,
    reasoning: Option<u64>,
    /// `reasoning` was estimated from the reasoning text (not reported).
    reasoning_estimated: bool,
    source: &'static str,
    finish: Option<&'static str>,
    error: Option<&'static str>,
    reasoning_timed: bool,
}

const fn e(name: &'static str, api: &'static str, stream: bool, output: Option<u64>) -> Expect {
    Expect {
        name,
        api,
        stream,
        input: Some(9),
        output,
        reasoning: None,
        reasoning_estimated: false,
        source: "usage",
        finish: Some("stop"),
        error: None,
        reasoning_timed: false,
    }
}

fn dialect_expectations() -> Vec<Expect> {
    let chat = "openai.chat_completions";
    vec![
        Expect {
            reasoning: Some(2),
            reasoning_timed: true,
            ..e("openai_reasoning_content", chat, true, Some(6))
        },
        Expect {
            reasoning: Some(2),
            reasoning_timed: true,
            ..e("openai_reasoning_field_vllm", chat, true, Some(6))
        },
        Expect {
            reasoning: Some(0),
            finish: Some("tool_calls"),
            ..e("openai_tool_call_stream", chat, true, Some(4))
        },
        Expect {
            reasoning: Some(0),
            finish: Some("length"),
            ..e("openai_finish_length", chat, true, Some(4))
        },
        Expect {
            input: Some(6),
            source: "estimated",
            finish: None,
            error: Some("stream_truncated"),
            ..e("openai_stream_truncated", chat, true, Some(2))
        },
        Expect {
            input: Some(6),
            source: "estimated",
            finish: None,
            error: Some("stream_error"),
            ..e("openai_stream_error", chat, true, Some(2))
        },
        Expect {
            input: Some(6),
            output: None,
            source: "estimated",
            finish: None,
            error: Some("503"),
            ..e("openai_503_retry_after", chat, false, None)
        },
        Expect {
            reasoning: Some(0),
            ..e("openai_gzip_keepalive_comments", chat, true, Some(4))
        },
        Expect {
            reasoning: Some(0),
            ..e("openai_zstd_stream", chat, true, Some(4))
        },
        e(
            "openai_completions_stream",
            "openai.completions",
            true,
            Some(4),
        ),
        Expect {
            finish: None,
            ..e("openai_embeddings", "openai.embeddings", false, None)
        },
        Expect {
            reasoning: Some(2),
            reasoning_timed: true,
            finish: Some("completed"),
            ..e(
                "openai_responses_reasoning",
                "openai.responses",
                true,
                Some(6),
            )
        },
        Expect {
            reasoning: Some(2),
            reasoning_estimated: true,
            reasoning_timed: true,
            finish: Some("end_turn"),
            ..e(
                "anthropic_tls_stream_thinking",
                "anthropic.messages",
                true,
                Some(6),
            )
        },
        Expect {
            finish: Some("end_turn"),
            ..e(
                "anthropic_plain_non_stream",
                "anthropic.messages",
                false,
                Some(4),
            )
        },
        Expect {
            source: "estimated",
            finish: None,
            error: Some("stream_error"),
            ..e(
                "anthropic_stream_error",
                "anthropic.messages",
                true,
                Some(2),
            )
        },
        Expect {
            reasoning: Some(2),
            reasoning_timed: true,
            finish: Some("STOP"),
            ..e(
                "gemini_sse_thoughts",
                "gcp.gemini.generate_content",
                true,
                Some(6),
            )
        },
        Expect {
            finish: Some("STOP"),
            ..e(
                "gemini_json_array_tls",
                "gcp.gemini.generate_content",
                true,
                Some(4),
            )
        },
        Expect {
            finish: Some("STOP"),
            ..e(
                "gemini_non_stream",
                "gcp.gemini.generate_content",
                false,
                Some(4),
            )
        },
        Expect {
            reasoning: Some(2),
            reasoning_estimated: true,
            reasoning_timed: true,
            ..e("ollama_chat_thinking", "ollama.chat", true, Some(6))
        },
        e("ollama_generate", "ollama.generate", true, Some(4)),
        Expect {
            reasoning: Some(2),
            reasoning_timed: true,
            ..e(
                "dashscope_incremental_reasoning",
                "dashscope.generation",
                true,
                Some(6),
            )
        },
        e(
            "dashscope_whole_text_events",
            "dashscope.generation",
            true,
            Some(4),
        ),
    ]
}

#[test]
fn every_dialect_and_error_shape_is_recorded_accurately() {
    for x in dialect_expectations() {
        let (clock, events) = load(x.name);
        let recs = replay(clock, events);
        assert_eq!(
            recs.len(),
            2,
            "{}: one call seen from both sides: {recs:#?}",
            x.name
        );
        for r in &recs {
            let ctx = format!("{}: {r}", x.name);
            assert_eq!(r["api"], x.api, "{ctx}");
            assert_eq!(r["stream"], x.stream, "{ctx}");
            assert_eq!(r["input_tokens"].as_u64(), x.input, "{ctx}");
            assert_eq!(r["output_tokens"].as_u64(), x.output, "{ctx}");
            assert_eq!(r["reasoning_tokens"].as_u64(), x.reasoning, "{ctx}");
            let reasoning_source = match (x.reasoning, x.reasoning_estimated) {
                (None, _) => None,
                (Some(_), true) => Some("estimated"),
                (Some(_), false) => Some("usage"),
            };
            assert_eq!(
                r["reasoning_token_source"].as_str(),
                reasoning_source,
                "{ctx}"
            );
            assert_eq!(r["token_source"], x.source, "{ctx}");
            assert_eq!(r["finish_reason"].as_str(), x.finish, "{ctx}");
            assert_eq!(r["error_type"].as_str(), x.error, "{ctx}");
            assert_eq!(r["aborted"], false, "{ctx}");
            assert!(r["request_model"].is_string(), "{ctx}");
            if x.stream {
                let ttft = r["ttft_s"].as_f64().unwrap_or(-1.0);
                assert!((0.148..0.25).contains(&ttft), "ttft {ttft}: {ctx}");
                // The server's writes are paced exactly; a client's reads may bunch up behind its
                // own processing (the Anthropic SDK's first event), so its gaps vary more.
                let tpot = r["tpot_s"].as_f64().unwrap_or(-1.0);
                let range = if r["role"] == "server" {
                    0.027..0.045
                } else {
                    0.015..0.05
                };
                assert!(range.contains(&tpot), "tpot {tpot}: {ctx}");
            } else {
                assert!(r["ttft_s"].is_null(), "{ctx}");
            }
            if x.reasoning_timed {
                // Two reasoning chunks 30 ms apart, then the first answer chunk 30 ms later.
                let rs = r["reasoning_s"].as_f64().unwrap_or(-1.0);
                assert!((0.058..0.08).contains(&rs), "reasoning_s {rs}: {ctx}");
            } else {
                assert!(r["reasoning_s"].is_null(), "{ctx}");
            }
        }
        if x.name == "openai_503_retry_after" {
            assert!(recs.iter().all(|r| r["retry_after"] == "1"), "{recs:?}");
        }
    }
}

#[test]
fn inference_server_on_an_asgi_stack_is_seen_as_server() {
    let (clock, events) = load("asgi_server_role");
    let recs = replay(clock, events);
    let servers = by_role(&recs, "server");
    let clients = by_role(&recs, "client");
    assert_eq!((servers.len(), clients.len()), (2, 2), "{recs:#?}");
    for (s, c) in servers.iter().zip(&clients) {
        assert_eq!(s["request_model"], c["request_model"]);
        assert_eq!(s["output_tokens"], c["output_tokens"]);
        assert_eq!(s["input_tokens"], c["input_tokens"]);
        // The server sees the request later and the first token earlier than the client.
        let (st, ct) = (
            s["ttft_s"].as_f64().unwrap_or(9.0),
            c["ttft_s"].as_f64().unwrap_or(0.0),
        );
        assert!(
            st <= ct + 0.001 && ct - st < 0.02,
            "server ttft {st} vs client {ct}"
        );
        assert_eq!(s["comm"], "python");
    }
}

#[test]
fn metrics_after_replaying_captures_match_the_golden_exposition() {
    use llmprobe::export::metrics_http::exposition::encode_text;
    use llmprobe::export::prometheus::{CardinalityLimits, GenAiMetrics};
    use prometheus_client::registry::Registry;

    // A client+server stream with usage, a reasoning stream, and a 429: names, labels,
    // buckets and values of the whole /metrics text (build info aside, it carries the version).
    let mut registry = Registry::default();
    let self_metrics = Arc::new(SelfMetrics::new(&mut registry));
    let genai = GenAiMetrics::new(&mut registry, CardinalityLimits::default());
    for name in [
        "openai_python_tls_stream_usage",
        "openai_reasoning_content",
        "openai_python_plain_429",
    ] {
        let (clock, events) = load(name);
        for call in replay_events(
            clock,
            events,
            TrackerConfig::default(),
            self_metrics.clone(),
        ) {
            genai.observe(&call);
        }
    }
    // Families keep their order; the samples of a family come out in hash order, so they are
    // sorted for the comparison.
    let mut text = String::new();
    let mut samples: Vec<&str> = Vec::new();
    let exposition = encode_text(&registry);
    for line in exposition
        .lines()
        .filter(|l| !l.starts_with("llmprobe_build_info"))
    {
        if line.starts_with('#') {
            samples.sort_unstable();
            samples
                .drain(..)
                .for_each(|s| text.push_str(&format!("{s}\n")));
            text.push_str(&format!("{line}\n"));
        } else {
            samples.push(line);
        }
    }
    samples.sort_unstable();
    samples
        .drain(..)
        .for_each(|s| text.push_str(&format!("{s}\n")));
    let path = fixtures().join("metrics.expected.prom");
    if std::env::var("LLMPROBE_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate it with LLMPROBE_UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    assert_eq!(text, want, "the /metrics exposition changed");
    assert!(text.contains("gen_ai_client_operation_duration_seconds_bucket{"));
    assert!(text.contains("le=\"81.92\""));
}

/// A Dify workflow run replayed: both sides carry its three nodes (start, llm, end) in order,
/// inside the call, each as long as the server reported, with their statuses; nothing else of
/// the node events is kept.
#[test]
fn dify_workflow_nodes_replay_into_the_call_detail() {
    let (clock, events) = load("dify_plain_workflow_stream");
    let calls: Vec<LlmCall> = replay_events(
        clock,
        events,
        TrackerConfig::default(),
        Arc::new(SelfMetrics::unregistered()),
    );
    assert_eq!(calls.len(), 2, "{calls:#?}");
    for c in &calls {
        let d = &c.detail;
        let types: Vec<&str> = d
            .workflow_nodes
            .iter()
            .map(|n| n.node_type.as_str())
            .collect();
        assert_eq!(types, ["start", "llm", "end"], "{}", c.role);
        assert_eq!(d.workflow_nodes_dropped, 0);
        for n in &d.workflow_nodes {
            assert_eq!(n.status.as_deref(), Some("succeeded"), "{n:?}");
            let end = n.end_ns.unwrap_or(i64::MAX);
            assert!(
                d.start_unix_ns <= n.start_ns && end <= d.end_unix_ns,
                "{n:?}"
            );
            // Timed where the events were seen: as long as the server says, within the
            // event spacing of a local stream.
            let seen = (end - n.start_ns) as f64 / 1e9;
            let reported = n.elapsed_s.unwrap_or(-1.0);
            assert!(
                (seen - reported).abs() < 0.02,
                "{seen} vs {reported}: {n:?}"
            );
        }
        // The llm node holds the answer's chunks: the call's first chunk falls inside it.
        let llm = &d.workflow_nodes[1];
        let first = d.first_chunk_unix_ns.unwrap_or(0);
        assert!(
            llm.start_ns <= first && first <= llm.end_ns.unwrap_or(0),
            "{llm:?}"
        );
    }
}
