//! The gateway split: a process that answers an LLM call (server role) and makes an upstream LLM
//! call while handling it (client role) is a gateway (LiteLLM, an app's own proxy). The two
//! records are joined here, in the track stage (one thread; the index sits behind a mutex only
//! because the tracker is built on one thread and run on another: it is never contended).
//!
//! * A server-role exchange registers in the [`GatewayIndex`] when it opens and leaves it when
//!   its record is written or it is dropped (its [`Link`] is dropped with it).
//! * A client-role exchange in a process with server exchanges in flight asks, when its request
//!   is complete, which one it serves ([`GatewayIndex::pick`]), among those whose own request is
//!   complete (a request still arriving, e.g. a body a client trickles to stay first in line,
//!   has not been forwarded yet and cannot take another call's upstream), in this order: the
//!   earliest
//!   started one whose request carried the same messages (a hash of the roles and content texts,
//!   [`messages_hash`]: a gateway rewrites the JSON around them, rarely the messages) and has no
//!   upstream yet; the latest started one with the same messages (a retry); the earliest started
//!   one with no upstream yet (a gateway forwards in arrival order); the only one, when just one
//!   is in flight (a retry with changed messages); else none (no guess between several). With
//!   one call in flight the answer is always right. Failure modes: concurrent calls whose
//!   messages the gateway changed (a prompt template, a guardrail) and that it forwards out of
//!   arrival order are paired crosswise; identical concurrent requests forwarded out of order
//!   too (nothing on the wire tells them apart); a process that serves a call while making an
//!   unrelated LLM call (a background job) has that call taken as the upstream.
//! * Several upstream calls for one gateway call (retries, fallbacks, fan-out): each is a child of
//!   the gateway call and carries its request id; the gateway's figures come from the upstream
//!   whose answer came first (a failed attempt has none; then the first upstream joined).
//! * The answer time of a call: its first output event when streamed, its response's end when
//!   not (the whole answer arrives then). `gateway_overhead_s` = the gateway's time from its
//!   request's first byte to its answer minus the upstream's: TTFT minus TTFT for streams,
//!   duration minus duration for whole responses. Null when either call gave no answer.
//! * Ids: each registered gateway call draws a span id (and a trace id, used when its request
//!   carried no `traceparent`; else the upstream joins that trace) when it opens, so the
//!   upstream record, usually written first, can name its parent span. They are keyed hashes
//!   under the agent's id key ([`crate::ids`]) of a counter, the pid and the start time: a
//!   replay (fixed key) reproduces them.
//! * Request ids. The gateway's `upstream_request_id` is always the chosen upstream's
//!   `request_id` (the gateway's record is written last): join records on it. The upstream's
//!   `gateway_request_id` is the gateway's response request id when the gateway's response head
//!   came before the upstream record was written (a streamed gateway that answers while its
//!   upstream still streams); otherwise (a non-streamed gateway answers only after its upstream
//!   ended; a streamed one may buffer) it is llmprobe's id for the gateway call,
//!   `llmprobe-<span id>`: the gateway span's id, and the gateway record's `request_id` when its
//!   response carried none (header or body). An upstream's own `traceparent` (a gateway that
//!   propagates its trace) wins over the gateway span as its parent: it names a span inside the
//!   gateway, in the same trace.
//! * Upstream calls are matched within one process only: another process cannot join its calls
//!   to someone else's gateway.
//!
//! Bounds: at most [`MAX_PER_PROCESS`] server exchanges in flight per process and
//! [`MAX_REGISTERED`] in all; a server exchange past them is not registered (its upstream calls
//! are not joined) and counted (`gateway_join_refused`). An entry lives no longer than its
//! exchange, which the tracker bounds.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::LlmCall;

/// Server-role exchanges registered per process at most.
pub const MAX_PER_PROCESS: usize = 256;
/// Server-role exchanges registered in all at most.
pub const MAX_REGISTERED: usize = 4096;

/// What the index knows of one gateway call.
#[derive(Debug)]
struct Entry {
    pid: u32,
    start_ts: u64,
    span_id: u64,
    trace_id: u128,
    messages: Option<u64>,
    /// Its request is complete: only then can an upstream call be its (a request still being
    /// sent, e.g. a body trickled by a client, has not been forwarded yet).
    request_done: bool,
    /// The gateway's response request id, once its response head arrived.
    request_id: Option<String>,
    /// Upstream calls joined.
    upstreams: u32,
    /// The chosen upstream (first to answer): its elapsed time to its answer (ns).
    upstream_answer_ns: Option<u64>,
    /// Its request id, once its record was written.
    upstream_request_id: Option<String>,
    /// Upstream call (join number) whose answer is `upstream_answer_ns`.
    chosen: Option<u32>,
}

/// In-flight server-role exchanges, by id, and per process.
#[derive(Debug)]
pub struct GatewayIndex {
    entries: HashMap<u64, Entry>,
    per_pid: HashMap<u32, Vec<u64>>,
    next: u64,
    seed: u64,
}

impl Default for GatewayIndex {
    fn default() -> Self {
        Self::with_seed(0)
    }
}

/// The index shared by the policy and the exchanges it opened.
pub type SharedIndex = Arc<Mutex<GatewayIndex>>;

fn lock(ix: &SharedIndex) -> MutexGuard<'_, GatewayIndex> {
    // Nothing panics while holding it; a poisoned lock still holds consistent data.
    ix.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GatewayIndex {
    /// An empty index whose ids also derive from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        GatewayIndex {
            entries: HashMap::new(),
            per_pid: HashMap::new(),
            next: 0,
            seed,
        }
    }

    /// An id for the call of `pid` opened at `start_ts`: keyed by the agent's id key
    /// ([`crate::ids`]), so ids differ between agents and runs, and a replay (fixed key)
    /// reproduces them. Never 0 (W3C: an all-zero id is invalid).
    fn draw(&mut self, domain: &str, pid: u32, start_ts: u64) -> u64 {
        loop {
            self.next = self.next.wrapping_add(1);
            let mut m = [0u8; 28];
            m[..8].copy_from_slice(&self.seed.to_le_bytes());
            m[8..16].copy_from_slice(&self.next.to_le_bytes());
            m[16..20].copy_from_slice(&pid.to_le_bytes());
            m[20..].copy_from_slice(&start_ts.to_le_bytes());
            let v = crate::ids::key().id_u64(domain, &m);
            if v != 0 {
                return v;
            }
        }
    }

    /// Server exchanges registered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No server exchange is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A server exchange of `pid` opened at `start_ts`: its id, or None past the bounds (the
    /// policy counts it).
    fn register(&mut self, pid: u32, start_ts: u64, trace: Option<u128>) -> Option<u64> {
        let held = self.per_pid.get(&pid).map_or(0, Vec::len);
        if held >= MAX_PER_PROCESS || self.entries.len() >= MAX_REGISTERED {
            return None;
        }
        let mut id = self.draw("gateway_span", pid, start_ts);
        while self.entries.contains_key(&id) {
            id = self.draw("gateway_span", pid, start_ts);
        }
        let drawn = (u128::from(self.draw("gateway_trace", pid, start_ts)) << 64)
            | u128::from(self.draw("gateway_trace", pid, start_ts));
        let trace_id = trace.unwrap_or(drawn);
        self.entries.insert(
            id,
            Entry {
                pid,
                start_ts,
                span_id: id,
                trace_id,
                messages: None,
                request_done: false,
                request_id: None,
                upstreams: 0,
                upstream_answer_ns: None,
                upstream_request_id: None,
                chosen: None,
            },
        );
        self.per_pid.entry(pid).or_default().push(id);
        Some(id)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        if let Some(v) = self.per_pid.get_mut(&e.pid) {
            v.retain(|&x| x != id);
            if v.is_empty() {
                self.per_pid.remove(&e.pid);
            }
        }
        Some(e)
    }

    /// A process has server exchanges in flight.
    fn serving(&self, pid: u32) -> bool {
        self.per_pid.contains_key(&pid)
    }

    /// The gateway call an upstream request of `pid` with `messages` serves (see the module
    /// docs), and its join number.
    fn pick(&mut self, pid: u32, messages: Option<u64>) -> Option<(u64, u32)> {
        let ids = self.per_pid.get(&pid)?;
        let entries = &self.entries;
        let candidates = |f: &dyn Fn(&Entry) -> bool| {
            ids.iter()
                .filter_map(|id| entries.get(id).map(|e| (*id, e)))
                .filter(|(_, e)| f(e))
                .map(|(id, e)| (e.start_ts, id))
                .collect::<Vec<_>>()
        };
        let earliest = |f: &dyn Fn(&Entry) -> bool| candidates(f).into_iter().min();
        let latest = |f: &dyn Fn(&Entry) -> bool| candidates(f).into_iter().max();
        let same = |e: &Entry| e.request_done && messages.is_some() && e.messages == messages;
        let done = |e: &Entry| e.request_done;
        let only_done = || {
            let all = candidates(&done);
            (all.len() == 1).then(|| all[0])
        };
        let (_, id) = earliest(&|e| same(e) && e.upstreams == 0)
            .or_else(|| latest(&same))
            .or_else(|| earliest(&|e| done(e) && e.upstreams == 0))
            .or_else(only_done)?;
        let e = self.entries.get_mut(&id)?;
        e.upstreams += 1;
        Some((id, e.upstreams))
    }
}

/// An exchange's place in the join.
#[derive(Debug)]
pub struct Link {
    index: SharedIndex,
    side: Side,
}

#[derive(Debug)]
enum Side {
    /// A registered gateway (server-role) call.
    Gateway { id: u64 },
    /// A client-role call of a process serving calls: joined once its request is complete.
    Upstream {
        pid: u32,
        joined: Option<(u64, u32)>,
        answered: bool,
    },
}

impl Link {
    /// A server-role exchange of `pid` opened at `start_ts`, in the trace of its request's
    /// `traceparent` (`trace_id`, 32 hex digits) if it carried one; None past the bounds.
    pub fn gateway(
        index: &SharedIndex,
        pid: u32,
        start_ts: u64,
        trace_id: Option<&str>,
    ) -> Option<Link> {
        let trace = trace_id
            .and_then(|t| u128::from_str_radix(t, 16).ok())
            .filter(|&t| t != 0);
        let id = lock(index).register(pid, start_ts, trace)?;
        Some(Link {
            index: index.clone(),
            side: Side::Gateway { id },
        })
    }

    /// A client-role exchange of `pid`: a link only while `pid` serves calls.
    pub fn upstream(index: &SharedIndex, pid: u32) -> Option<Link> {
        lock(index).serving(pid).then(|| Link {
            index: index.clone(),
            side: Side::Upstream {
                pid,
                joined: None,
                answered: false,
            },
        })
    }

    /// The request is complete; `messages` is its [`messages_hash`].
    pub fn on_request(&mut self, messages: Option<u64>) {
        let mut ix = lock(&self.index);
        match &mut self.side {
            Side::Gateway { id } => {
                if let Some(e) = ix.entries.get_mut(id) {
                    e.messages = messages;
                    e.request_done = true;
                }
            }
            Side::Upstream { pid, joined, .. } => {
                if joined.is_none() {
                    *joined = ix.pick(*pid, messages);
                }
            }
        }
    }

    /// The gateway's response head carried `request_id`.
    pub fn on_response_id(&mut self, request_id: Option<&str>) {
        if let (Side::Gateway { id }, Some(rid)) = (&self.side, request_id)
            && let Some(e) = lock(&self.index).entries.get_mut(id)
        {
            e.request_id = Some(super::cap_field(rid, super::MAX_FIELD_BYTES).into_owned());
        }
    }

    /// The upstream's answer (first output, or its whole response) came `elapsed_ns` after its
    /// request's first byte.
    pub fn on_answer(&mut self, elapsed_ns: u64) {
        if let Side::Upstream {
            joined: Some((id, n)),
            answered,
            ..
        } = &mut self.side
        {
            if *answered {
                return;
            }
            *answered = true;
            if let Some(e) = lock(&self.index).entries.get_mut(id)
                && e.upstream_answer_ns.is_none()
            {
                e.upstream_answer_ns = Some(elapsed_ns);
                e.chosen = Some(*n);
            }
        }
    }

    /// Fills the joined fields of the exchange's record. `answer_ns`: the call's time from its
    /// first request byte to its answer, when it had one.
    pub fn fill(self, call: &mut LlmCall, answer_ns: Option<u64>) {
        let mut ix = lock(&self.index);
        match &self.side {
            Side::Gateway { id } => {
                let Some(e) = ix.remove(*id) else { return };
                if e.upstreams == 0 {
                    return;
                }
                call.detail.span_id = Some(format!("{:016x}", e.span_id));
                call.detail.trace_id = Some(format!("{:032x}", e.trace_id));
                call.upstream_request_id = e.upstream_request_id;
                if call.request_id.is_none() {
                    call.request_id = e.request_id.or(Some(llmprobe_call_id(e.span_id)));
                }
                if let (Some(g), Some(u)) = (answer_ns, e.upstream_answer_ns) {
                    call.gateway_overhead_s = Some(g.saturating_sub(u) as f64 / 1e9);
                }
            }
            Side::Upstream { joined, .. } => {
                let Some((id, n)) = *joined else { return };
                let Some(e) = ix.entries.get_mut(&id) else {
                    return;
                };
                if e.chosen.is_none() || e.chosen == Some(n) {
                    e.chosen = Some(n);
                    e.upstream_request_id = call
                        .request_id
                        .as_deref()
                        .map(|r| super::cap_field(r, super::MAX_FIELD_BYTES).into_owned());
                }
                call.gateway_request_id = Some(
                    e.request_id
                        .clone()
                        .unwrap_or_else(|| llmprobe_call_id(e.span_id)),
                );
                // The upstream request's own traceparent, when it carried one, is the more
                // precise parent (a span inside the gateway); else the gateway call is.
                if call.trace_id.is_none() {
                    call.detail.parent_span_id = Some(format!("{:016x}", e.span_id));
                    call.detail.trace_id = Some(format!("{:032x}", e.trace_id));
                }
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // A gateway exchange dropped without a record (cut from its connection's queue) leaves.
        if let Side::Gateway { id } = self.side {
            lock(&self.index).remove(id);
        }
    }
}

/// llmprobe's id for a gateway call whose response named none (or named it too late).
pub fn llmprobe_call_id(span_id: u64) -> String {
    format!("llmprobe-{span_id:016x}")
}

/// A hash of a request's messages: role and content text of each message of `messages` (chat
/// APIs), `input` (Responses), `contents` (Gemini), or the `prompt` string; None without any.
/// Formatting, key order and other fields do not change it.
pub fn messages_hash(body: &Value) -> Option<u64> {
    let list = ["messages", "input", "contents", "prompt"]
        .iter()
        .find_map(|k| body.get(k))?;
    let mut h = std::hash::DefaultHasher::new();
    hash_texts(list, &mut h, 0);
    Some(h.finish())
}

fn hash_texts(v: &Value, h: &mut std::hash::DefaultHasher, depth: u32) {
    if depth > 8 {
        return;
    }
    match v {
        Value::String(s) => s.hash(h),
        Value::Array(a) => {
            for x in a {
                hash_texts(x, h, depth + 1);
            }
            0xA5u8.hash(h);
        }
        Value::Object(o) => {
            for k in ["role", "content", "text", "parts"] {
                if let Some(x) = o.get(k) {
                    k.hash(h);
                    hash_texts(x, h, depth + 1);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::clock::Clock;
    use crate::conntrack::{ConnTracker, TrackerConfig, TrackerOutput};
    use crate::llm::exchange::ExchangeLimits;
    use crate::llm::tracking::{LlmPolicy, LlmTracker};
    use crate::probes::events::{DataChunk, Direction, EventMeta, ProbeEvent};
    use crate::telemetry::{DropReason, SelfMetrics};

    const PID: u32 = 777;
    const MS: u64 = 1_000_000;
    const T0: u64 = 5_000 * MS;

    struct Gw {
        tracker: LlmTracker,
        out: TrackerOutput<LlmCall>,
        metrics: Arc<SelfMetrics>,
        index: SharedIndex,
    }

    impl Gw {
        fn new() -> Self {
            let metrics = Arc::new(SelfMetrics::unregistered());
            let policy =
                LlmPolicy::with_id_seed(ExchangeLimits::default(), 7).counting(metrics.clone());
            let index = policy.gateways().clone();
            Gw {
                tracker: ConnTracker::new(
                    TrackerConfig::default(),
                    policy,
                    Clock { offset_ns: 0 },
                    metrics.clone(),
                ),
                out: TrackerOutput::default(),
                metrics,
                index,
            }
        }

        fn data(&mut self, pid: u32, fd: i32, ts: u64, dir: Direction, bytes: &[u8]) {
            let meta = EventMeta {
                pid,
                tid: pid,
                fd,
                conn_id: fd as u64 * 2 + 1,
                ts_ns: ts,
                comm: "litellm".to_owned(),
                container: None,
            };
            let ev = ProbeEvent::Data(DataChunk {
                meta,
                direction: dir,
                tls: false,
                offset: 0,
                total_len: bytes.len() as u32,
                lost_before: false,
                data: Bytes::copy_from_slice(bytes),
                api_key_id: None,
                mcp_session_id: None,
            });
            self.tracker.handle(ev, &mut self.out);
        }

        /// The gateway (server role) on `fd` of `pid`: a request arrives, a response leaves.
        fn inbound(&mut self, pid: u32, fd: i32, ts: u64, bytes: &[u8]) {
            self.data(pid, fd, ts, Direction::Ingress, bytes);
        }

        fn outbound(&mut self, pid: u32, fd: i32, ts: u64, bytes: &[u8]) {
            self.data(pid, fd, ts, Direction::Egress, bytes);
        }

        fn calls(&mut self) -> Vec<LlmCall> {
            std::mem::take(&mut self.out.calls)
        }

        fn registered(&self) -> usize {
            lock(&self.index).len()
        }
    }

    fn request(content: &str, stream: bool) -> Vec<u8> {
        request_with(content, stream, "x-any: 1")
    }

    fn request_with(content: &str, stream: bool, header: &str) -> Vec<u8> {
        let body = format!(
            r#"{{"model":"gpt-4o-mini","stream":{stream},"messages":[{{"role":"user","content":"{content}"}}]}}"#
        );
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: llm.local:8000\r\n{header}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// A gateway's rewrite of `request`: other formatting, other fields, same messages.
    fn upstream_request(content: &str, stream: bool) -> Vec<u8> {
        let body = format!(
            r#"{{"messages": [{{"content": "{content}", "role": "user"}}], "model": "upstream-model", "stream": {stream}, "user": "litellm"}}"#
        );
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:9000\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn sse_head(id_header: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n{id_header}\r\n\r\n").into_bytes()
    }

    fn chunk(data: &str) -> Vec<u8> {
        format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
    }

    const DELTA: &str = "data: {\"id\":\"chatcmpl-9\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const STOP: &str = "data: {\"id\":\"chatcmpl-9\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

    fn json_response(id_header: &str) -> Vec<u8> {
        json_response_with(id_header, r#""id":"chatcmpl-7","#)
    }

    /// `id_header` (`x-any: 1` when empty); `id_field` is the start of the body's JSON.
    fn json_response_with(id_header: &str, id_field: &str) -> Vec<u8> {
        let id_header = if id_header.is_empty() {
            "x-any: 1"
        } else {
            id_header
        };
        let body = format!(
            r#"{{{id_field}"object":"chat.completion","model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}}"#
        );
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{id_header}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn by_role<'a>(calls: &'a [LlmCall], role: &str) -> Vec<&'a LlmCall> {
        calls.iter().filter(|c| c.role == role).collect()
    }

    fn approx(v: Option<f64>, want: f64) {
        let v = v.expect("a value");
        assert!((v - want).abs() < 1e-9, "{v} != {want}");
    }

    #[test]
    fn one_streamed_gateway_call_joins_its_upstream() {
        let mut g = Gw::new();
        // Client → gateway (fd 5, server role); gateway → upstream (fd 6, client role).
        g.inbound(PID, 5, T0, &request("hello", true));
        assert_eq!(g.registered(), 1);
        g.outbound(PID, 6, T0 + 10 * MS, &upstream_request("hello", true));
        g.inbound(PID, 6, T0 + 50 * MS, &sse_head("x-request-id: up-1"));
        g.inbound(PID, 6, T0 + 100 * MS, &chunk(DELTA));
        g.outbound(PID, 5, T0 + 105 * MS, &sse_head("x-litellm-call-id: gw-1"));
        g.outbound(PID, 5, T0 + 130 * MS, &chunk(DELTA));
        g.inbound(
            PID,
            6,
            T0 + 150 * MS,
            &[chunk(STOP), b"0\r\n\r\n".to_vec()].concat(),
        );
        g.outbound(
            PID,
            5,
            T0 + 160 * MS,
            &[chunk(STOP), b"0\r\n\r\n".to_vec()].concat(),
        );
        let calls = g.calls();
        assert_eq!(calls.len(), 2, "{calls:#?}");
        // The upstream record is written first.
        let (up, gw) = (&calls[0], &calls[1]);
        assert_eq!((up.role, gw.role), ("client", "server"));
        assert_eq!(up.gateway_request_id.as_deref(), Some("gw-1"));
        assert_eq!(gw.request_id.as_deref(), Some("gw-1"));
        assert_eq!(gw.upstream_request_id.as_deref(), Some("up-1"));
        assert_eq!(up.upstream_request_id, None);
        assert_eq!(gw.gateway_request_id, None);
        // TTFT 130 ms at the gateway, 90 ms upstream.
        approx(gw.ttft_s, 0.130);
        approx(up.ttft_s, 0.090);
        approx(gw.gateway_overhead_s, 0.040);
        assert_eq!(up.gateway_overhead_s, None);
        // Spans: the upstream is the gateway's child, in its trace.
        let span = gw.detail.span_id.as_deref().expect("gateway span id");
        assert_eq!(span.len(), 16);
        assert_eq!(up.detail.parent_span_id.as_deref(), Some(span));
        assert_eq!(up.detail.trace_id, gw.detail.trace_id);
        assert_eq!(gw.detail.trace_id.as_deref().map(str::len), Some(32));
        assert_eq!(up.detail.span_id, None);
        assert_eq!(g.registered(), 0, "the gateway call left the index");
    }

    #[test]
    fn whole_responses_use_durations_and_an_llmprobe_id() {
        let mut g = Gw::new();
        g.inbound(PID, 5, T0, &request("hello", false));
        g.outbound(PID, 6, T0 + 20 * MS, &upstream_request("hello", false));
        g.inbound(PID, 6, T0 + 220 * MS, &json_response("x-request-id: up-2"));
        g.outbound(
            PID,
            5,
            T0 + 250 * MS,
            &json_response("x-litellm-call-id: gw-2"),
        );
        let calls = g.calls();
        let (up, gw) = (&calls[0], &calls[1]);
        assert_eq!((up.role, gw.role), ("client", "server"));
        // 250 ms at the gateway, 200 ms upstream.
        approx(gw.gateway_overhead_s, 0.050);
        assert_eq!(gw.upstream_request_id.as_deref(), Some("up-2"));
        // The gateway answered after its upstream's record was written: llmprobe's id.
        let span = gw.detail.span_id.clone().expect("span id");
        assert_eq!(
            up.gateway_request_id.as_deref(),
            Some(format!("llmprobe-{span}").as_str())
        );
        assert_eq!(gw.request_id.as_deref(), Some("gw-2"));
        assert_eq!(up.detail.parent_span_id.as_deref(), Some(span.as_str()));

        // A gateway whose id is in its body only keeps it.
        g.inbound(PID, 5, T0 + 300 * MS, &request("again", false));
        g.outbound(PID, 6, T0 + 310 * MS, &upstream_request("again", false));
        g.inbound(PID, 6, T0 + 400 * MS, &json_response("x-request-id: up-3"));
        g.outbound(PID, 5, T0 + 420 * MS, &json_response(""));
        let calls = g.calls();
        let (up, gw) = (&calls[0], &calls[1]);
        assert_eq!(gw.request_id.as_deref(), Some("chatcmpl-7"));
        assert_eq!(gw.upstream_request_id.as_deref(), Some("up-3"));
        let span = gw.detail.span_id.clone().expect("span id");
        assert_eq!(up.gateway_request_id, Some(format!("llmprobe-{span}")));
        approx(gw.gateway_overhead_s, 0.030);
    }

    #[test]
    fn concurrent_calls_are_matched_by_their_messages() {
        let mut g = Gw::new();
        g.inbound(PID, 5, T0, &request("alpha", false));
        g.inbound(PID, 7, T0 + MS, &request("beta", false));
        // The upstream call for "alpha" comes after "beta" started: the latest-started rule
        // alone would pick "beta".
        g.outbound(PID, 6, T0 + 5 * MS, &upstream_request("alpha", false));
        g.outbound(PID, 8, T0 + 6 * MS, &upstream_request("beta", false));
        g.inbound(
            PID,
            6,
            T0 + 100 * MS,
            &json_response("x-request-id: up-alpha"),
        );
        g.inbound(
            PID,
            8,
            T0 + 110 * MS,
            &json_response("x-request-id: up-beta"),
        );
        g.outbound(
            PID,
            7,
            T0 + 120 * MS,
            &json_response("x-litellm-call-id: gw-beta"),
        );
        g.outbound(
            PID,
            5,
            T0 + 130 * MS,
            &json_response("x-litellm-call-id: gw-alpha"),
        );
        let calls = g.calls();
        let gws = by_role(&calls, "server");
        assert_eq!(gws.len(), 2);
        for gw in gws {
            let want = match gw.request_id.as_deref() {
                Some("gw-alpha") => "up-alpha",
                Some("gw-beta") => "up-beta",
                other => panic!("unexpected gateway id {other:?}"),
            };
            assert_eq!(gw.upstream_request_id.as_deref(), Some(want));
            let up = by_role(&calls, "client")
                .into_iter()
                .find(|u| u.request_id.as_deref() == Some(want))
                .expect("its upstream");
            assert_eq!(up.detail.parent_span_id, gw.detail.span_id);
        }
    }

    #[test]
    fn without_a_matching_message_the_earliest_call_without_upstream_is_picked() {
        let mut g = Gw::new();
        g.inbound(PID, 5, T0, &request("alpha", false));
        g.inbound(PID, 7, T0 + MS, &request("beta", false));
        // A prompt template changed both: arrival order, alpha then beta.
        g.outbound(PID, 6, T0 + 5 * MS, &upstream_request("templated 1", false));
        g.outbound(PID, 8, T0 + 6 * MS, &upstream_request("templated 2", false));
        g.inbound(PID, 6, T0 + 100 * MS, &json_response("x-request-id: up-1"));
        g.inbound(PID, 8, T0 + 110 * MS, &json_response("x-request-id: up-2"));
        g.outbound(
            PID,
            7,
            T0 + 120 * MS,
            &json_response("x-litellm-call-id: gw-beta"),
        );
        g.outbound(
            PID,
            5,
            T0 + 130 * MS,
            &json_response("x-litellm-call-id: gw-alpha"),
        );
        let calls = g.calls();
        let up_of = |id: &str| {
            calls
                .iter()
                .find(|c| c.request_id.as_deref() == Some(id))
                .and_then(|c| c.upstream_request_id.clone())
        };
        assert_eq!(up_of("gw-alpha").as_deref(), Some("up-1"));
        assert_eq!(up_of("gw-beta").as_deref(), Some("up-2"));
    }

    #[test]
    fn a_request_still_arriving_cannot_take_another_calls_upstream() {
        let mut g = Gw::new();
        // A client opens a call first and trickles its body: its request is not complete.
        let stalled = request("stalled", false);
        g.inbound(PID, 3, T0, &stalled[..stalled.len() - 5]);
        // The victim's call arrives whole and is forwarded with a templated prompt.
        g.inbound(PID, 5, T0 + MS, &request("victim", false));
        g.outbound(PID, 6, T0 + 5 * MS, &upstream_request("templated", false));
        g.inbound(PID, 6, T0 + 100 * MS, &json_response("x-request-id: up-1"));
        g.outbound(
            PID,
            5,
            T0 + 130 * MS,
            &json_response("x-litellm-call-id: gw-victim"),
        );
        let calls = g.calls();
        let victim = calls
            .iter()
            .find(|c| c.request_id.as_deref() == Some("gw-victim"))
            .expect("the victim's record");
        assert_eq!(victim.upstream_request_id.as_deref(), Some("up-1"));
        let up = calls
            .iter()
            .find(|c| c.request_id.as_deref() == Some("up-1"))
            .expect("the upstream record");
        // The gateway answered after its upstream's record: llmprobe's id for the victim's call.
        let victim_span = victim.detail.span_id.as_deref().expect("a fixed span id");
        assert_eq!(
            up.gateway_request_id,
            Some(format!("llmprobe-{victim_span}"))
        );
    }

    #[test]
    fn identical_concurrent_requests_pair_in_arrival_order() {
        let mut g = Gw::new();
        // A load test: the same prompt three times at once.
        for (i, fd) in [5, 7, 9].into_iter().enumerate() {
            g.inbound(PID, fd, T0 + i as u64 * MS, &request("same", false));
        }
        for (i, fd) in [6, 8, 10].into_iter().enumerate() {
            g.outbound(
                PID,
                fd,
                T0 + (10 + i as u64) * MS,
                &upstream_request("same", false),
            );
        }
        for (i, fd) in [6, 8, 10].into_iter().enumerate() {
            let id = format!("x-request-id: up-{i}");
            g.inbound(PID, fd, T0 + (100 + i as u64) * MS, &json_response(&id));
        }
        for (i, fd) in [5, 7, 9].into_iter().enumerate() {
            let id = format!("x-litellm-call-id: gw-{i}");
            g.outbound(PID, fd, T0 + (200 + i as u64) * MS, &json_response(&id));
        }
        let calls = g.calls();
        for i in 0..3 {
            let gw = calls
                .iter()
                .find(|c| c.request_id.as_deref() == Some(format!("gw-{i}").as_str()))
                .expect("gateway record");
            assert_eq!(
                gw.upstream_request_id,
                Some(format!("up-{i}")),
                "{calls:#?}"
            );
        }
    }

    #[test]
    fn retries_are_all_children_and_the_first_answer_counts() {
        let mut g = Gw::new();
        g.inbound(PID, 5, T0, &request("hello", false));
        g.outbound(PID, 6, T0 + 10 * MS, &upstream_request("hello", false));
        g.inbound(
            PID,
            6,
            T0 + 40 * MS,
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nx-request-id: up-fail\r\n\r\n{}",
        );
        g.outbound(PID, 6, T0 + 60 * MS, &upstream_request("hello", false));
        g.inbound(PID, 6, T0 + 160 * MS, &json_response("x-request-id: up-ok"));
        g.outbound(PID, 5, T0 + 200 * MS, &json_response(""));
        let calls = g.calls();
        assert_eq!(calls.len(), 3, "{calls:#?}");
        let gw = by_role(&calls, "server")[0];
        assert_eq!(gw.upstream_request_id.as_deref(), Some("up-ok"));
        // 200 ms at the gateway, 100 ms for the upstream that answered.
        approx(gw.gateway_overhead_s, 0.100);
        for up in by_role(&calls, "client") {
            assert_eq!(up.detail.parent_span_id, gw.detail.span_id);
            assert!(up.gateway_request_id.is_some());
        }
    }

    #[test]
    fn no_server_call_in_flight_no_join() {
        let mut g = Gw::new();
        g.outbound(PID, 6, T0, &upstream_request("hello", false));
        g.inbound(PID, 6, T0 + 100 * MS, &json_response("x-request-id: up-1"));
        // A server call of another process does not adopt it either.
        g.inbound(PID + 1, 5, T0 + 110 * MS, &request("hello", false));
        g.outbound(PID, 8, T0 + 120 * MS, &upstream_request("hello", false));
        g.inbound(PID, 8, T0 + 150 * MS, &json_response("x-request-id: up-2"));
        let calls = g.calls();
        assert_eq!(calls.len(), 2);
        for up in &calls {
            assert_eq!(up.gateway_request_id, None);
            assert_eq!(up.detail.parent_span_id, None);
            assert_eq!(up.detail.trace_id, None);
        }
        // A server call that made no upstream call is not marked either.
        g.outbound(PID + 1, 5, T0 + 200 * MS, &json_response("x-request-id: s"));
        let s = g.calls().pop().expect("the server call");
        assert_eq!(s.role, "server");
        assert_eq!(
            (s.detail.span_id.as_deref(), s.gateway_overhead_s),
            (None, None)
        );
        assert_eq!(s.upstream_request_id, None);
        assert_eq!(g.registered(), 0);
    }

    #[test]
    fn registrations_are_bounded_and_counted() {
        let mut g = Gw::new();
        // One process opens more calls than its share, each on its own connection.
        for i in 0..(MAX_PER_PROCESS as i32 + 3) {
            g.inbound(PID, 100 + i, T0 + i as u64, &request("x", false));
        }
        assert_eq!(g.registered(), MAX_PER_PROCESS);
        assert_eq!(g.metrics.dropped_count(DropReason::GatewayJoinRefused), 3);
        // Another process still has its own share.
        g.inbound(PID + 1, 5, T0, &request("x", false));
        assert_eq!(g.registered(), MAX_PER_PROCESS + 1);

        // The node-wide bound, on the index itself.
        let mut ix = GatewayIndex::with_seed(1);
        let mut n = 0;
        for pid in 0.. {
            if ix.register(pid, 0, None).is_none() {
                break;
            }
            n += 1;
        }
        assert_eq!(n, MAX_REGISTERED);
        assert_eq!(ix.len(), MAX_REGISTERED);
    }

    #[test]
    fn a_dropped_gateway_exchange_leaves_the_index() {
        let ix: SharedIndex = Arc::new(Mutex::new(GatewayIndex::with_seed(3)));
        let link = Link::gateway(&ix, PID, T0, None).expect("registered");
        let up = Link::upstream(&ix, PID);
        assert!(up.is_some());
        drop(link);
        assert!(lock(&ix).is_empty());
        assert!(
            Link::upstream(&ix, PID).is_none(),
            "nothing served any more"
        );
    }

    #[test]
    fn the_gateway_keeps_its_own_traceparent_trace() {
        let mut g = Gw::new();
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let tp = format!("traceparent: 00-{trace}-00f067aa0ba902b7-01");
        g.inbound(PID, 5, T0, &request_with("hello", false, &tp));
        g.outbound(PID, 6, T0 + 20 * MS, &upstream_request("hello", false));
        g.inbound(PID, 6, T0 + 220 * MS, &json_response("x-request-id: up-2"));
        // No id in the gateway's response, neither header nor body.
        g.outbound(PID, 5, T0 + 250 * MS, &json_response_with("", ""));
        let calls = g.calls();
        let (up, gw) = (&calls[0], &calls[1]);
        assert_eq!(gw.trace_id.as_deref(), Some(trace));
        assert_eq!(
            gw.detail.parent_span_id.as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(up.detail.trace_id.as_deref(), Some(trace));
        assert_eq!(up.detail.parent_span_id, gw.detail.span_id);
        // llmprobe's id for the gateway call, the same on both records.
        let span = gw.detail.span_id.clone().expect("span id");
        assert_eq!(gw.request_id, Some(format!("llmprobe-{span}")));
        assert_eq!(up.gateway_request_id, gw.request_id);
    }

    #[test]
    fn messages_hash_ignores_formatting_and_other_fields() {
        let a: Value = serde_json::from_str(
            r#"{"model":"a","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        )
        .expect("json");
        let b: Value = serde_json::from_str(
            r#"{"stream":false,"messages":[{"content":"hi","role":"user","name":null}],"model":"b"}"#,
        )
        .expect("json");
        let c: Value = serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi!"}]}"#)
            .expect("json");
        assert_eq!(messages_hash(&a), messages_hash(&b));
        assert_ne!(messages_hash(&a), messages_hash(&c));
        assert_eq!(messages_hash(&serde_json::json!({"model":"x"})), None);
    }
}
