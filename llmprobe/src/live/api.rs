//! The live view's HTTP API: pure routing from a request line to a response, JSON bodies.
//!
//! | path | answer |
//! |---|---|
//! | `GET /api/v1/in-flight` | `{now_unix_ns, taken_unix_ns, total, calls: [{pid, comm, container_id, role, provider, api, model, server_address, stream, start_unix_ns, elapsed_s, ttft_s, chunks, tokens, tokens_per_s}]}` |
//! | `GET /api/v1/calls?limit&model&process&provider&role&status` | `{calls: [{seq, ...the JSON record}]}`, newest first, at most 200; `status` is `ok`, `error` or `aborted`; `model`, `process` and `provider` match a substring, case-insensitively |
//! | `GET /api/v1/calls/SEQ` | `{seq, record, timeline: {start_unix_ns, end_unix_ns, connect_s, tls_handshake_s, request_upload_s, ttft_s, reasoning_s, duration_s, ticks_s, ticks_dropped, gpu_util_mean}}`; 404 once the call has left the recent ring |
//! | `GET /api/v1/rollups?window=60` | `{window_s, now_unix_ns, models: [Rollup]}` over the calls that ended in the window (1 to 600 s), one per model, provider and role, the 64 busiest and an `other` row per role |
//! | `GET /` (page server only) | the trace page ([`super::ui`]) |
//!
//! Everything is answered from the [`LiveView`] under its lock; the figures that depend on now
//! (`elapsed_s`, `tokens_per_s`) use the clock the caller passes, so tests are exact.

use crate::secrets;
use serde_json::{Value, json};

use super::{InFlightCall, LiveView, RecentCall};

/// Most calls `/api/v1/calls` returns (each at most a few KiB).
pub const MAX_LIST: usize = 200;

/// An answer: status line, content type, body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `200 OK`, `404 Not Found`, ...
    pub status: &'static str,
    /// The content type.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    fn json(v: &Value) -> Answer {
        Answer {
            status: "200 OK",
            content_type: "application/json",
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    fn error(status: &'static str, msg: &str) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(&json!({ "error": msg })).unwrap_or_default(),
        }
    }
}

/// Whether the page is served on this listener (the `--ui-addr` server) or only the API (the
/// local socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// API only.
    Api,
    /// API and page.
    Page,
}

/// Answers `GET target` (the request target, path and query) at `now` (Unix ns).
pub fn route(view: &LiveView, target: &str, now: i64, surface: Surface) -> Answer {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/api/v1/in-flight" => Answer::json(&in_flight(view, now)),
        "/api/v1/calls" => Answer::json(&calls(view, query)),
        "/api/v1/rollups" => {
            let window = param(query, "window")
                .and_then(|w| w.parse::<f64>().ok())
                .filter(|w| w.is_finite())
                .unwrap_or(60.0)
                .clamp(1.0, super::MAX_WINDOW_S);
            Answer::json(&json!({
                "window_s": window,
                "now_unix_ns": now,
                "models": view.rollups(now, window),
            }))
        }
        p if p.starts_with("/api/v1/calls/") => match p["/api/v1/calls/".len()..].parse::<u64>() {
            Ok(seq) => match view.call(seq) {
                Some(c) => Answer::json(&detail(&c)),
                None => Answer::error("404 Not Found", "no such call (it may have aged out)"),
            },
            Err(_) => Answer::error("400 Bad Request", "a call is named by its seq number"),
        },
        _ if surface == Surface::Page => {
            super::ui::asset(path).unwrap_or_else(|| Answer::error("404 Not Found", "not found"))
        }
        _ => Answer::error("404 Not Found", "not found"),
    }
}

fn in_flight(view: &LiveView, now: i64) -> Value {
    let (calls, total, at) = view.in_flight();
    let calls: Vec<Value> = calls.iter().map(|c| in_flight_call(c, now)).collect();
    json!({
        "now_unix_ns": now,
        "taken_unix_ns": at,
        "total": total,
        "calls": calls,
    })
}

fn in_flight_call(c: &InFlightCall, now: i64) -> Value {
    let elapsed = ((now - c.start_unix_ns) as f64 / 1e9).max(0.0);
    let ttft = c
        .first_token_unix_ns
        .map(|f| ((f - c.start_unix_ns) as f64 / 1e9).max(0.0));
    // Tokens per second of generation: since the first token.
    let tokens_per_s = c.first_token_unix_ns.and_then(|f| {
        let gen_s = (now - f) as f64 / 1e9;
        (gen_s > 0.0 && c.tokens > 0).then(|| c.tokens as f64 / gen_s)
    });
    json!({
        "pid": c.pid,
        "comm": c.comm,
        "container_id": c.container_id,
        "role": c.role,
        "provider": c.provider,
        "api": c.api,
        "model": c.model,
        "server_address": c.server_address,
        "stream": c.stream,
        "start_unix_ns": c.start_unix_ns,
        "elapsed_s": elapsed,
        "ttft_s": ttft,
        "chunks": c.chunks,
        "tokens": c.tokens,
        "tokens_per_s": tokens_per_s,
    })
}

fn calls(view: &LiveView, query: &str) -> Value {
    let limit = param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .min(MAX_LIST);
    let model = param(query, "model").map(|s| s.to_lowercase());
    let process = param(query, "process").map(|s| s.to_lowercase());
    let provider = param(query, "provider").map(|s| s.to_lowercase());
    let role = param(query, "role");
    let status = param(query, "status");
    let has = |v: Option<&str>, want: &Option<String>| match want {
        None => true,
        Some(w) => v.is_some_and(|v| v.to_lowercase().contains(w.as_str())),
    };
    let list = view.recent(limit, |c| {
        let r = &c.record;
        (has(r.request_model.as_deref(), &model) || has(r.response_model.as_deref(), &model))
            && has(Some(&r.comm), &process)
            && has(Some(&r.provider), &provider)
            && role.as_deref().is_none_or(|w| r.role == w)
            && match status.as_deref() {
                None | Some("") => true,
                Some("error") => r.error_type.is_some(),
                Some("aborted") => r.aborted,
                Some("ok") => r.error_type.is_none() && !r.aborted,
                Some(_) => false,
            }
    });
    let calls: Vec<Value> = list.iter().map(|c| summary(c)).collect();
    json!({ "calls": calls })
}

/// The record as JSONL writes it, with its `seq`.
fn summary(c: &RecentCall) -> Value {
    let mut v = serde_json::to_value(&c.record).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("seq".into(), json!(c.seq));
    }
    v
}

fn detail(c: &RecentCall) -> Value {
    let r = &c.record;
    json!({
        "seq": c.seq,
        "record": summary(c),
        "timeline": {
            "start_unix_ns": c.start_unix_ns,
            "end_unix_ns": c.end_unix_ns,
            "connect_s": r.connect_s,
            "tls_handshake_s": r.tls_handshake_s,
            "request_upload_s": r.request_upload_s,
            "ttft_s": r.ttft_s,
            "reasoning_s": r.reasoning_s,
            "duration_s": r.duration_s,
            "ticks_s": c.ticks_s,
            "ticks_dropped": c.ticks_dropped,
            "gpu_util_mean": r.gpu_util_mean,
        },
    })
}

/// The first value of `name` in a query string, percent-decoded (lossy), at most 256 bytes.
pub fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        // Bytes, not characters: the head was decoded lossily, so any byte may sit at the cut.
        let v = v.as_bytes();
        (k == name).then(|| percent_decode(&v[..v.len().min(3 * 256)]))
    })
}

fn percent_decode(b: &[u8]) -> String {
    // Form encoding: a raw `+` is a space (an encoded `%2B` stays a plus), then the one
    // percent-decoding rule of the project, at most 256 bytes kept.
    let spaced: Vec<u8> = b
        .iter()
        .map(|&c| if c == b'+' { b' ' } else { c })
        .collect();
    let out: Vec<u8> = secrets::percent_decoded(&spaced).take(256).collect();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_decode_plus_and_percent_escapes() {
        assert_eq!(percent_decode(b"gpt-4o+mini"), "gpt-4o mini");
        assert_eq!(percent_decode(b"a%2Bb"), "a+b");
        assert_eq!(percent_decode(b"%41%zz%4"), "A%zz%4");
        assert_eq!(percent_decode(b"%ff"), "\u{fffd}");
        assert_eq!(percent_decode(&[b'x'; 600]).len(), 256);
    }
    use crate::llm::{CallDetail, LlmCall};

    fn view() -> std::sync::Arc<LiveView> {
        let v = LiveView::new();
        for (i, (model, comm)) in [
            ("gpt-4o", "python3"),
            ("qwen-max", "node"),
            ("gpt-4o", "node"),
        ]
        .iter()
        .enumerate()
        {
            let start = 1_000_000_000 * (10 + i as i64);
            v.push(&LlmCall {
                role: "client",
                pid: 1,
                comm: (*comm).into(),
                provider: "openai".into(),
                request_model: Some((*model).into()),
                duration_s: 1.0,
                ttft_s: Some(0.5),
                error_type: (i == 1).then(|| "rate_limited".into()),
                detail: CallDetail {
                    start_unix_ns: start,
                    end_unix_ns: start + 1_000_000_000,
                    first_chunk_unix_ns: Some(start + 500_000_000),
                    gaps_s: vec![0.25],
                    ..CallDetail::default()
                },
                ..LlmCall::default()
            });
        }
        v
    }

    fn body(a: &Answer) -> Value {
        serde_json::from_slice(&a.body).expect("json")
    }

    #[test]
    fn calls_filter_and_list_newest_first() {
        let v = view();
        let all = body(&route(&v, "/api/v1/calls", 0, Surface::Api));
        let seqs: Vec<u64> = all["calls"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(seqs, vec![3, 2, 1]);
        let a = body(&route(
            &v,
            "/api/v1/calls?model=GPT&process=node",
            0,
            Surface::Api,
        ));
        assert_eq!(a["calls"].as_array().expect("list").len(), 1);
        assert_eq!(a["calls"][0]["seq"], 3);
        let e = body(&route(&v, "/api/v1/calls?status=error", 0, Surface::Api));
        assert_eq!(e["calls"][0]["seq"], 2);
        let l = body(&route(&v, "/api/v1/calls?limit=1", 0, Surface::Api));
        assert_eq!(l["calls"].as_array().expect("list").len(), 1);
    }

    #[test]
    fn a_call_has_its_timeline() {
        let v = view();
        let d = body(&route(&v, "/api/v1/calls/1", 0, Surface::Api));
        assert_eq!(d["timeline"]["ticks_s"], json!([0.5, 0.75]));
        assert_eq!(d["record"]["comm"], "python3");
        assert_eq!(
            route(&v, "/api/v1/calls/99", 0, Surface::Api).status,
            "404 Not Found"
        );
        assert_eq!(
            route(&v, "/api/v1/calls/x", 0, Surface::Api).status,
            "400 Bad Request"
        );
    }

    #[test]
    fn the_page_is_only_on_the_page_server() {
        let v = view();
        assert_eq!(route(&v, "/", 0, Surface::Api).status, "404 Not Found");
        assert_eq!(route(&v, "/", 0, Surface::Page).status, "200 OK");
    }

    #[test]
    fn in_flight_figures_use_the_given_clock() {
        let v = LiveView::new();
        v.publish_in_flight(
            vec![InFlightCall {
                pid: 3,
                comm: "app".into(),
                container_id: None,
                role: "client",
                provider: "openai".into(),
                api: "openai.chat_completions",
                model: Some("m".into()),
                server_address: None,
                stream: Some(true),
                start_unix_ns: 1_000_000_000,
                first_token_unix_ns: Some(1_500_000_000),
                chunks: 10,
                tokens: 10,
            }],
            1,
            2_000_000_000,
        );
        let b = body(&route(&v, "/api/v1/in-flight", 3_500_000_000, Surface::Api));
        let c = &b["calls"][0];
        assert_eq!(c["elapsed_s"], 2.5);
        assert_eq!(c["ttft_s"], 0.5);
        assert_eq!(c["tokens_per_s"], 5.0);
        assert_eq!(b["total"], 1);
    }

    #[test]
    fn query_values_are_decoded_and_bounded() {
        assert_eq!(
            param("a=1&model=gpt%2D4o+x", "model").as_deref(),
            Some("gpt-4o x")
        );
        assert_eq!(param("model=%zz%", "model").as_deref(), Some("%zz%"));
        assert_eq!(param("model=%4", "model").as_deref(), Some("%4"));
        assert_eq!(param("x=1", "model"), None);
        let long = "a".repeat(10_000);
        assert_eq!(
            param(&format!("model={long}"), "model").map(|s| s.len()),
            Some(256)
        );
        // A multi-byte character across the 768-byte cut: never a panic.
        for pad in 760..770 {
            let q = format!("model={}\u{fffd}\u{e9}", "a".repeat(pad));
            assert!(param(&q, "model").is_some_and(|v| v.len() <= 256 + 3));
        }
        // Any bytes: never a panic.
        for q in [
            "model=%",
            "model=%%",
            "model=%f",
            "model=%\u{e9}",
            "model=%e9%",
        ] {
            let _ = param(q, "model");
        }
    }
}
