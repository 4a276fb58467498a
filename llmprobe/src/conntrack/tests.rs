//! Unit tests for the connection tracker: probe events in, LLM call records and mute requests out.
//!
//! Every test drives a fresh [`ConnTracker`] with the LLM policy (`llm::tracking`) and hand-built
//! events whose timestamps are chosen so that the timings in the records can be checked exactly.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::identity::{LINKS_PER_CONNECTION, MAX_SSL_PER_FD};
use super::*;
use crate::llm::LlmCall;
use crate::llm::tracking::{self, LlmTracker};
use crate::probes::events::EventMeta;
use crate::telemetry::{DropReason, Protocol};

const PID: u32 = 4242;
const MS: u64 = 1_000_000;
/// Start of every scripted exchange: 1 s after the monotonic epoch.
const T0: u64 = 1_000 * MS;
const EPS: f64 = 1e-9;

// ---------------------------------------------------------------------------------------------
// Harness and event builders
// ---------------------------------------------------------------------------------------------

struct Harness {
    tracker: LlmTracker,
    metrics: Arc<SelfMetrics>,
    out: TrackerOutput<LlmCall>,
    max_connections: usize,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(TrackerConfig::default())
    }

    fn with_config(cfg: TrackerConfig) -> Self {
        let metrics = Arc::new(SelfMetrics::unregistered());
        Harness {
            tracker: tracking::tracker(cfg, Clock { offset_ns: 0 }, metrics.clone()),
            metrics,
            out: TrackerOutput::default(),
            max_connections: cfg.max_connections,
        }
    }

    fn feed(&mut self, ev: ProbeEvent) {
        self.tracker.handle(ev, &mut self.out);
        let n = self.tracker.connections();
        assert!(
            n <= self.max_connections,
            "{n} connections tracked, limit {}",
            self.max_connections
        );
        assert_eq!(
            self.metrics.connections_tracked.get(),
            n as i64,
            "gauge out of step with connections()"
        );
        let held: usize = self
            .tracker
            .conns
            .values()
            .flat_map(|m| m.values())
            .map(|c| c.mem)
            .sum();
        assert_eq!(
            held,
            self.tracker.memory_bytes(),
            "memory total out of step"
        );
    }

    fn calls(&mut self) -> Vec<LlmCall> {
        std::mem::take(&mut self.out.calls)
    }

    fn only_call(&mut self) -> LlmCall {
        let mut calls = self.calls();
        assert_eq!(
            calls.len(),
            1,
            "expected exactly one record, got {calls:#?}"
        );
        calls.pop().expect("one call")
    }

    fn dropped(&self, reason: DropReason) -> u64 {
        self.metrics.dropped_count(reason)
    }
}

fn meta(pid: u32, fd: i32, conn_id: u64, ts: u64) -> EventMeta {
    EventMeta {
        pid,
        tid: pid + 1,
        fd,
        conn_id,
        ts_ns: ts,
        comm: "python".to_owned(),
        container: None,
    }
}

/// One side of the capture: a plaintext socket (conn id = generation) or an `SSL*`.
#[derive(Debug, Clone, Copy)]
struct Sock {
    pid: u32,
    fd: i32,
    id: u64,
    tls: bool,
}

impl Sock {
    fn plain(fd: i32, generation: u64) -> Self {
        Sock {
            pid: PID,
            fd,
            id: generation,
            tls: false,
        }
    }

    fn ssl(ssl: u64) -> Self {
        Sock {
            pid: PID,
            fd: -1,
            id: ssl,
            tls: true,
        }
    }

    /// A piece of one syscall's transfer.
    fn piece(
        self,
        ts: u64,
        direction: Direction,
        offset: u32,
        total_len: u32,
        bytes: &[u8],
    ) -> ProbeEvent {
        ProbeEvent::Data(DataChunk {
            meta: meta(self.pid, self.fd, self.id, ts),
            direction,
            tls: self.tls,
            offset,
            total_len,
            lost_before: false,
            data: Bytes::copy_from_slice(bytes),
            api_key_id: None,
            mcp_session_id: None,
        })
    }

    /// A whole syscall.
    fn data(self, ts: u64, direction: Direction, bytes: &[u8]) -> ProbeEvent {
        self.piece(ts, direction, 0, bytes.len() as u32, bytes)
    }

    fn send(self, ts: u64, bytes: &[u8]) -> ProbeEvent {
        self.data(ts, Direction::Egress, bytes)
    }

    fn recv(self, ts: u64, bytes: &[u8]) -> ProbeEvent {
        self.data(ts, Direction::Ingress, bytes)
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn open(fd: i32, generation: u64, ts: u64, peer: &str) -> ProbeEvent {
    ProbeEvent::ConnOpen {
        meta: meta(PID, fd, generation, ts),
        peer: Some(addr(peer)),
        connect_ns: None,
    }
}

fn close(fd: i32, generation: u64, ts: u64) -> ProbeEvent {
    ProbeEvent::ConnClose {
        meta: meta(PID, fd, generation, ts),
    }
}

fn ssl_fd(fd: i32, ssl: u64, ts: u64) -> ProbeEvent {
    ProbeEvent::SslFd {
        meta: meta(PID, fd, ssl, ts),
    }
}

fn ssl_free(ssl: u64, ts: u64) -> ProbeEvent {
    ProbeEvent::SslFree {
        meta: meta(PID, -1, ssl, ts),
    }
}

fn proc_exit(ts: u64) -> ProbeEvent {
    ProbeEvent::ProcExit {
        meta: meta(PID, -1, 0, ts),
    }
}

fn time(ts: u64) -> String {
    Clock { offset_ns: 0 }.rfc3339(ts)
}

#[track_caller]
fn approx(got: Option<f64>, want: f64) {
    let got = got.expect("value present");
    assert!((got - want).abs() < EPS, "got {got}, want {want}");
}

// ---------------------------------------------------------------------------------------------
// HTTP builders
// ---------------------------------------------------------------------------------------------

fn chat_body(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hello"}}]}}"#
    )
}

fn chat_request(host: &str, model: &str, stream: bool) -> Vec<u8> {
    let body = chat_body(model, stream);
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer sk-secret\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
    Transfer-Encoding: chunked\r\nx-request-id: req-123\r\n\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn chunk(payload: &str) -> Vec<u8> {
    format!("{:x}\r\n{payload}\r\n", payload.len()).into_bytes()
}

fn sse(data: &str) -> Vec<u8> {
    chunk(&format!("data: {data}\n\n"))
}

fn delta(content: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-1","model":"gpt-4o-2024","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
    )
}

const ROLE_ONLY: &str = r#"{"id":"chatcmpl-1","model":"gpt-4o-2024","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
const FINISH: &str = r#"{"id":"chatcmpl-1","model":"gpt-4o-2024","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
const USAGE: &str = r#"{"id":"chatcmpl-1","model":"gpt-4o-2024","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5}}"#;

/// The reference stream's response syscalls, (ts, bytes). Output events at 300, 350, 500 and
/// 520 ms after T0: TTFT 0.3 s, gaps 50/150/20 ms.
fn stream_response(with_usage: bool) -> Vec<(u64, Vec<u8>)> {
    let mut v = vec![
        (T0 + 100 * MS, SSE_HEAD.to_vec()),
        (T0 + 150 * MS, sse(ROLE_ONLY)),
        (T0 + 300 * MS, sse(&delta("Hel"))),
        (T0 + 350 * MS, sse(&delta("lo"))),
        (T0 + 500 * MS, sse(&delta(" wor"))),
        (T0 + 520 * MS, sse(&delta("ld"))),
        (T0 + 530 * MS, sse(FINISH)),
    ];
    if with_usage {
        v.push((T0 + 540 * MS, sse(USAGE)));
    }
    v.push((T0 + 550 * MS, sse("[DONE]")));
    v.push((T0 + 560 * MS, LAST_CHUNK.to_vec()));
    v
}

fn json_response(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn completion_body(i: usize) -> String {
    format!(
        r#"{{"id":"cmpl-{i}","model":"m{i}-resp","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{i}0,"completion_tokens":{i}}}}}"#
    )
}

const HEALTH_REQ: &[u8] = b"GET /health HTTP/1.1\r\nHost: svc:8080\r\n\r\n";
const HEALTH_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const TLS_CLIENT_HELLO: &[u8] =
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x5e\x1a\x9c\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa";

/// Plays the reference streaming exchange as a client on fd 7: open, request at T0, stream.
fn play_client_stream(h: &mut Harness, s: Sock, with_usage: bool) {
    h.feed(open(s.fd, s.id, T0 - 10 * MS, "10.0.0.5:8000"));
    play_client_stream_on(h, s, with_usage);
}

/// The reference exchange on a connection already open: request at T0, stream.
fn play_client_stream_on(h: &mut Harness, s: Sock, with_usage: bool) {
    h.feed(s.send(T0, &chat_request("llm.internal:8000", "gpt-4o", true)));
    for (ts, bytes) in stream_response(with_usage) {
        h.feed(s.recv(ts, &bytes));
    }
}

/// Checks the timing fields every record of the reference stream shares.
#[track_caller]
fn assert_reference_timings(c: &LlmCall) {
    assert_eq!(c.start_time, time(T0));
    assert_eq!(c.end_time, time(T0 + 560 * MS));
    assert!(
        (c.duration_s - 0.56).abs() < EPS,
        "duration {}",
        c.duration_s
    );
    approx(c.ttft_s, 0.3);
    approx(c.tbt_p50_s, 0.05);
    approx(c.tbt_p95_s, 0.15);
    approx(c.tbt_max_s, 0.15);
    assert_eq!(c.chunks, Some(4));
    assert_eq!(c.stream, Some(true));
    assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    assert_eq!(c.error_type, None);
    assert!(!c.aborted);
}

// ---------------------------------------------------------------------------------------------
// 1-3: the normal paths
// ---------------------------------------------------------------------------------------------

#[test]
fn plaintext_client_stream_with_usage() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x1001);
    play_client_stream(&mut h, s, true);
    let c = h.only_call();
    assert_eq!(c.role, "client");
    assert_eq!(c.pid, PID);
    assert_eq!(c.comm, "python");
    assert!(!c.tls);
    assert_eq!(c.peer_addr.as_deref(), Some("10.0.0.5:8000"));
    assert_eq!(c.server_address.as_deref(), Some("llm.internal"));
    assert_eq!(c.server_port, Some(8000));
    assert_eq!(c.provider, "openai");
    assert_eq!(c.api, "openai.chat_completions");
    assert_eq!(c.operation, "chat");
    assert_eq!(c.http_method, "POST");
    assert_eq!(c.http_path, "/v1/chat/completions");
    assert_eq!(c.http_status, Some(200));
    assert_eq!(c.request_model.as_deref(), Some("gpt-4o"));
    assert_eq!(c.response_model.as_deref(), Some("gpt-4o-2024"));
    assert_eq!(c.request_id.as_deref(), Some("req-123"));
    assert_reference_timings(&c);
    assert_eq!(c.input_tokens, Some(12));
    assert_eq!(c.output_tokens, Some(5));
    assert_eq!(c.token_source, Some("usage"));
    // (520 - 300) ms over 5 - 1 tokens.
    approx(c.tpot_s, 0.055);
    assert!(h.out.mutes.is_empty());
    assert_eq!(
        h.tracker.connections(),
        1,
        "keep-alive connection stays tracked"
    );
    assert_eq!(h.metrics.calls.get(), 1);
}

#[test]
fn plaintext_client_stream_without_usage_estimates_tokens() {
    let mut h = Harness::new();
    play_client_stream(&mut h, Sock::plain(7, 0x1001), false);
    let c = h.only_call();
    assert_reference_timings(&c);
    assert_eq!(c.token_source, Some("estimated"));
    // The tokenizer on the text seen: "Hello world" (sent in four pieces) is 2 tokens, the
    // prompt "hello" 1.
    assert_eq!(c.output_tokens, Some(2));
    assert_eq!(c.input_tokens, Some(1));
    // (520 - 300) ms over 2 - 1 tokens.
    approx(c.tpot_s, 0.22);
}

#[test]
fn server_role_when_requests_arrive() {
    let mut h = Harness::new();
    let s = Sock::plain(11, 0x2002);
    h.feed(open(s.fd, s.id, T0 - 10 * MS, "10.0.0.9:51234"));
    h.feed(s.recv(T0, &chat_request("llm.internal:8000", "gpt-4o", true)));
    for (ts, bytes) in stream_response(true) {
        h.feed(s.send(ts, &bytes));
    }
    let c = h.only_call();
    assert_eq!(c.role, "server");
    assert_eq!(c.peer_addr.as_deref(), Some("10.0.0.9:51234"));
    assert_eq!(c.server_address.as_deref(), Some("llm.internal"));
    assert_eq!(c.server_port, Some(8000));
    assert_eq!(c.request_model.as_deref(), Some("gpt-4o"));
    assert_reference_timings(&c);
    assert_eq!(c.output_tokens, Some(5));
    approx(c.tpot_s, 0.055);
}

#[test]
fn server_calls_in_flight_are_known_until_they_end() {
    let mut h = Harness::new();
    let s = Sock::plain(11, 0x2002);
    let client = Sock::plain(12, 0x2004);
    h.feed(open(s.fd, s.id, T0 - 10 * MS, "10.0.0.9:51234"));
    h.feed(open(client.fd, client.id, T0 - 10 * MS, "10.0.0.7:443"));
    assert!(h.tracker.server_in_flight_since().is_empty());
    h.feed(s.recv(T0, &chat_request("llm.internal:8000", "gpt-4o", true)));
    // A client call of the same process is not a server call.
    h.feed(client.send(T0 + MS, &chat_request("api.example", "gpt-4o", true)));
    let since = h.tracker.server_in_flight_since();
    assert_eq!(since.len(), 1, "{since:?}");
    assert_eq!(since.values().next(), Some(&(T0 as i64)));
    for (ts, bytes) in stream_response(true) {
        h.feed(s.send(ts, &bytes));
    }
    assert_eq!(h.calls().len(), 1);
    assert!(h.tracker.server_in_flight_since().is_empty());
}

#[test]
fn server_role_when_first_bytes_seen_are_a_response() {
    // The agent started mid-connection: the first bytes it sees are the server's response head
    // going out; the direction decision must still make the process the server.
    let mut h = Harness::new();
    let s = Sock::plain(11, 0x2003);
    h.feed(s.send(T0, SSE_HEAD));
    h.feed(s.send(T0 + MS, &sse(&delta("x"))));
    h.feed(s.send(T0 + 2 * MS, LAST_CHUNK));
    assert!(
        h.calls().is_empty(),
        "a response without a request is no record"
    );
    assert_eq!(h.dropped(DropReason::ResponseWithoutRequest), 1);
    h.feed(s.recv(T0 + 10 * MS, &chat_request("h", "m", false)));
    h.feed(s.send(T0 + 20 * MS, &json_response(200, "OK", &completion_body(1))));
    let c = h.only_call();
    assert_eq!(c.role, "server");
    assert_eq!(c.response_model.as_deref(), Some("m1-resp"));
}

#[test]
fn keep_alive_exchanges_are_recorded_in_order() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x3003);
    h.feed(open(s.fd, s.id, T0 - MS, "10.0.0.5:8000"));
    for i in 1..=3usize {
        let start = T0 + (i as u64) * 1000 * MS;
        h.feed(s.send(
            start,
            &chat_request("llm.internal:8000", &format!("m{i}"), false),
        ));
        h.feed(s.recv(
            start + 200 * MS,
            &json_response(200, "OK", &completion_body(i)),
        ));
    }
    let calls = h.calls();
    assert_eq!(calls.len(), 3);
    for (i, c) in calls.iter().enumerate() {
        let i = i + 1;
        let start = T0 + (i as u64) * 1000 * MS;
        assert_eq!(c.request_model.as_deref(), Some(format!("m{i}").as_str()));
        assert_eq!(
            c.response_model.as_deref(),
            Some(format!("m{i}-resp").as_str())
        );
        assert_eq!(c.request_id.as_deref(), Some(format!("cmpl-{i}").as_str()));
        assert_eq!(c.start_time, time(start));
        assert_eq!(c.end_time, time(start + 200 * MS));
        assert!((c.duration_s - 0.2).abs() < EPS);
        assert_eq!(c.stream, Some(false));
        assert_eq!(c.ttft_s, None);
        assert_eq!(c.chunks, None);
        assert_eq!(c.input_tokens, Some(i as u64 * 10));
        assert_eq!(c.output_tokens, Some(i as u64));
        assert_eq!(c.token_source, Some("usage"));
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
        assert!(!c.aborted);
    }
    assert!(h.out.mutes.is_empty());
    assert_eq!(h.tracker.connections(), 1);
}

/// The masker's credential fingerprint, stamped on a request chunk, goes to that request's
/// record only: the next request on the connection, without a key, has none; a fingerprint on a
/// response chunk is ignored; the first one before a head wins.
#[test]
fn credential_fingerprints_follow_their_request() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x3005);
    h.feed(open(s.fd, s.id, T0 - MS, "10.0.0.5:8000"));
    let stamped = |ev: ProbeEvent, id: Option<u64>| match ev {
        ProbeEvent::Data(mut d) => {
            d.api_key_id = id;
            ProbeEvent::Data(d)
        }
        other => other,
    };
    let req = chat_request("llm.internal:8000", "m1", false);
    // The head in two pieces of one call: the fingerprint rides on the first, a second one on
    // the next piece loses to it.
    let (a, b) = req.split_at(20);
    let t = T0 + 1000 * MS;
    h.feed(stamped(
        s.piece(t, Direction::Egress, 0, req.len() as u32, a),
        Some(0xabc),
    ));
    h.feed(stamped(
        s.piece(t, Direction::Egress, 20, req.len() as u32, b),
        Some(0xdef),
    ));
    h.feed(stamped(
        s.recv(t + 200 * MS, &json_response(200, "OK", &completion_body(1))),
        Some(0x123),
    ));
    let t = T0 + 2000 * MS;
    h.feed(s.send(t, &chat_request("llm.internal:8000", "m2", false)));
    h.feed(s.recv(t + 200 * MS, &json_response(200, "OK", &completion_body(2))));
    // A fingerprint the masker found in a body (a `?key=` inside a prompt) is not the
    // request's credential, and does not stay behind for the next request either.
    let t = T0 + 3000 * MS;
    let req = chat_request("llm.internal:8000", "m3", false);
    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    let (head, body) = req.split_at(head_end);
    h.feed(s.piece(t, Direction::Egress, 0, head.len() as u32, head));
    h.feed(stamped(
        s.piece(t, Direction::Egress, 0, body.len() as u32, body),
        Some(0x999),
    ));
    h.feed(s.recv(t + 200 * MS, &json_response(200, "OK", &completion_body(3))));
    let t = T0 + 4000 * MS;
    h.feed(s.send(t, &chat_request("llm.internal:8000", "m4", false)));
    h.feed(s.recv(t + 200 * MS, &json_response(200, "OK", &completion_body(4))));
    let calls = h.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[0].api_key_id.as_deref(), Some("0000000000000abc"));
    assert_eq!(calls[1].api_key_id, None);
    assert_eq!(calls[2].api_key_id, None);
    assert_eq!(calls[3].api_key_id, None);
}

#[test]
fn pipelined_requests_pair_with_responses_in_order() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x3004);
    let mut both = chat_request("h", "first", false);
    both.extend_from_slice(&chat_request("h", "second", false));
    h.feed(s.send(T0, &both));
    let mut resps = json_response(200, "OK", &completion_body(1));
    resps.extend_from_slice(&json_response(200, "OK", &completion_body(2)));
    h.feed(s.recv(T0 + 100 * MS, &resps));
    let calls = h.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].request_model.as_deref(), Some("first"));
    assert_eq!(calls[0].response_model.as_deref(), Some("m1-resp"));
    assert_eq!(calls[1].request_model.as_deref(), Some("second"));
    assert_eq!(calls[1].response_model.as_deref(), Some("m2-resp"));
}

// ---------------------------------------------------------------------------------------------
// 4: arbitrary splitting
// ---------------------------------------------------------------------------------------------

/// The reference exchange as syscalls: (ts, direction, bytes).
fn reference_syscalls() -> Vec<(u64, Direction, Vec<u8>)> {
    let mut v = vec![(
        T0,
        Direction::Egress,
        chat_request("llm.internal:8000", "gpt-4o", true),
    )];
    v.extend(
        stream_response(true)
            .into_iter()
            .map(|(ts, b)| (ts, Direction::Ingress, b)),
    );
    v
}

/// Feeds the syscalls, cutting the one that holds global byte `cut` in two: as two syscalls, or
/// as two pieces of one syscall (offset / total_len).
fn feed_cut(
    h: &mut Harness,
    s: Sock,
    syscalls: &[(u64, Direction, Vec<u8>)],
    cut: usize,
    as_pieces: bool,
) {
    let mut pos = 0;
    for (ts, dir, bytes) in syscalls {
        let end = pos + bytes.len();
        if cut > pos && cut < end {
            let k = cut - pos;
            let total = bytes.len() as u32;
            if as_pieces {
                h.feed(s.piece(*ts, *dir, 0, total, &bytes[..k]));
                h.feed(s.piece(*ts, *dir, k as u32, total, &bytes[k..]));
            } else {
                h.feed(s.data(*ts, *dir, &bytes[..k]));
                h.feed(s.data(*ts, *dir, &bytes[k..]));
            }
        } else {
            h.feed(s.data(*ts, *dir, bytes));
        }
        pos = end;
    }
}

#[test]
fn any_split_point_gives_the_same_record() {
    let s = Sock::plain(7, 0x4004);
    let syscalls = reference_syscalls();
    let total: usize = syscalls.iter().map(|(_, _, b)| b.len()).sum();
    let reference = {
        let mut h = Harness::new();
        feed_cut(&mut h, s, &syscalls, 0, false);
        let c = h.only_call();
        assert_reference_timings(&c);
        c
    };
    for as_pieces in [false, true] {
        for cut in 1..total {
            let mut h = Harness::new();
            feed_cut(&mut h, s, &syscalls, cut, as_pieces);
            let calls = h.calls();
            assert_eq!(
                calls.len(),
                1,
                "cut at {cut} (pieces: {as_pieces}): {calls:#?}"
            );
            assert_eq!(calls[0], reference, "cut at {cut} (pieces: {as_pieces})");
            assert_eq!(
                h.dropped(DropReason::CaptureGap),
                0,
                "cut at {cut} (pieces: {as_pieces})"
            );
            assert_eq!(
                h.metrics.parse_error_count(Protocol::Http1),
                0,
                "cut at {cut}"
            );
            assert!(h.out.mutes.is_empty(), "cut at {cut}");
        }
    }
}

#[test]
fn byte_at_a_time_gives_the_same_record() {
    let s = Sock::plain(7, 0x4005);
    let syscalls = reference_syscalls();
    let reference = {
        let mut h = Harness::new();
        feed_cut(&mut h, s, &syscalls, 0, false);
        h.only_call()
    };
    let mut h = Harness::new();
    for (ts, dir, bytes) in &syscalls {
        for b in bytes {
            h.feed(s.data(*ts, *dir, std::slice::from_ref(b)));
        }
    }
    assert_eq!(h.only_call(), reference);
}

// ---------------------------------------------------------------------------------------------
// 5-6: TLS, closes, frees, exits
// ---------------------------------------------------------------------------------------------

const SSL: u64 = 0x7f3a_dead_b000;

/// Request at T0, response head at +100 ms, two output events at +300 and +350 ms.
fn tls_partial_stream(h: &mut Harness, s: Sock) {
    h.feed(s.send(T0, &chat_request("api.openai.com", "gpt-4o", true)));
    h.feed(s.recv(T0 + 100 * MS, SSE_HEAD));
    h.feed(s.recv(T0 + 300 * MS, &sse(&delta("Hel"))));
    h.feed(s.recv(T0 + 350 * MS, &sse(&delta("lo"))));
}

#[track_caller]
fn assert_tls_aborted_at(c: &LlmCall, end: u64) {
    assert!(c.tls);
    assert!(c.aborted);
    assert_eq!(c.end_time, time(end));
    assert!((c.duration_s - (end - T0) as f64 / 1e9).abs() < EPS);
    assert_eq!(c.peer_addr.as_deref(), Some("104.18.6.192:443"));
    assert_eq!(c.server_address.as_deref(), Some("api.openai.com"));
    assert_eq!(c.server_port, Some(443));
    assert_eq!(c.provider, "openai");
    assert_eq!(c.http_status, Some(200));
    assert_eq!(c.chunks, Some(2));
    approx(c.ttft_s, 0.3);
    assert_eq!(c.error_type, None);
}

#[test]
fn tls_close_of_the_fd_aborts_the_stream() {
    let mut h = Harness::new();
    h.feed(open(9, 0x900, T0 - 20 * MS, "104.18.6.192:443"));
    h.feed(ssl_fd(9, SSL, T0 - 10 * MS));
    tls_partial_stream(&mut h, Sock::ssl(SSL));
    assert!(h.calls().is_empty());
    assert_eq!(h.tracker.connections(), 1);
    h.feed(close(9, 0x900, T0 + 400 * MS));
    let c = h.only_call();
    assert_tls_aborted_at(&c, T0 + 400 * MS);
    assert_eq!(h.tracker.connections(), 0);
}

#[test]
fn tls_ssl_fd_before_conn_open_still_gives_the_peer() {
    let mut h = Harness::new();
    h.feed(ssl_fd(9, SSL, T0 - 20 * MS));
    h.feed(open(9, 0x900, T0 - 10 * MS, "104.18.6.192:443"));
    tls_partial_stream(&mut h, Sock::ssl(SSL));
    h.feed(close(9, 0x900, T0 + 400 * MS));
    assert_tls_aborted_at(&h.only_call(), T0 + 400 * MS);
}

#[test]
fn tls_fd_learned_after_first_bytes_gives_peer_and_close() {
    let mut h = Harness::new();
    h.feed(open(9, 0x900, T0 - 20 * MS, "104.18.6.192:443"));
    let s = Sock::ssl(SSL);
    h.feed(s.send(T0, &chat_request("api.openai.com", "gpt-4o", true)));
    h.feed(ssl_fd(9, SSL, T0 + 50 * MS));
    h.feed(s.recv(T0 + 100 * MS, SSE_HEAD));
    h.feed(s.recv(T0 + 300 * MS, &sse(&delta("Hel"))));
    h.feed(s.recv(T0 + 350 * MS, &sse(&delta("lo"))));
    h.feed(close(9, 0x900, T0 + 400 * MS));
    assert_tls_aborted_at(&h.only_call(), T0 + 400 * MS);
    assert_eq!(h.tracker.connections(), 0);
}

#[test]
fn tls_ssl_free_aborts_the_stream() {
    let mut h = Harness::new();
    h.feed(open(9, 0x900, T0 - 20 * MS, "104.18.6.192:443"));
    h.feed(ssl_fd(9, SSL, T0 - 10 * MS));
    tls_partial_stream(&mut h, Sock::ssl(SSL));
    h.feed(ssl_free(SSL, T0 + 450 * MS));
    assert_tls_aborted_at(&h.only_call(), T0 + 450 * MS);
    assert_eq!(h.tracker.connections(), 0);
    // The socket closing afterwards records nothing more.
    h.feed(close(9, 0x900, T0 + 500 * MS));
    assert!(h.calls().is_empty());
}

#[test]
fn tls_complete_stream_then_close_is_one_record() {
    let mut h = Harness::new();
    h.feed(open(9, 0x900, T0 - 20 * MS, "104.18.6.192:443"));
    h.feed(ssl_fd(9, SSL, T0 - 10 * MS));
    let s = Sock::ssl(SSL);
    h.feed(s.send(T0, &chat_request("api.openai.com", "gpt-4o", true)));
    for (ts, bytes) in stream_response(true) {
        h.feed(s.recv(ts, &bytes));
    }
    h.feed(close(9, 0x900, T0 + 600 * MS));
    h.feed(ssl_free(SSL, T0 + 610 * MS));
    let c = h.only_call();
    assert!(c.tls);
    assert_reference_timings(&c);
    assert_eq!(c.server_port, Some(443));
}

#[test]
fn proc_exit_aborts_the_stream() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x6006);
    h.feed(open(s.fd, s.id, T0 - 10 * MS, "10.0.0.5:8000"));
    h.feed(s.send(T0, &chat_request("llm.internal:8000", "gpt-4o", true)));
    h.feed(s.recv(T0 + 100 * MS, SSE_HEAD));
    h.feed(s.recv(T0 + 300 * MS, &sse(&delta("Hel"))));
    h.feed(proc_exit(T0 + 700 * MS));
    let c = h.only_call();
    assert!(c.aborted);
    assert_eq!(c.end_time, time(T0 + 700 * MS));
    assert!((c.duration_s - 0.7).abs() < EPS);
    assert_eq!(c.chunks, Some(1));
    assert_eq!(h.tracker.connections(), 0);
    // Late events of the dead process's socket record nothing more.
    h.feed(close(s.fd, s.id, T0 + 710 * MS));
    assert!(h.calls().is_empty());
}

#[test]
fn close_after_complete_response_is_no_duplicate() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x6007);
    play_client_stream(&mut h, s, true);
    h.feed(close(s.fd, s.id, T0 + 900 * MS));
    h.feed(proc_exit(T0 + 950 * MS));
    let c = h.only_call();
    assert_reference_timings(&c);
    assert_eq!(h.tracker.connections(), 0);
}

#[test]
fn close_after_done_but_before_last_chunk_is_complete() {
    // The sync OpenAI SDK closes after `[DONE]` without reading the terminating chunk.
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x6008);
    h.feed(s.send(T0, &chat_request("llm.internal:8000", "gpt-4o", true)));
    let mut resp = stream_response(true);
    resp.pop();
    for (ts, bytes) in resp {
        h.feed(s.recv(ts, &bytes));
    }
    assert!(h.calls().is_empty());
    h.feed(close(s.fd, s.id, T0 + 900 * MS));
    let c = h.only_call();
    assert!(!c.aborted);
    assert_eq!(
        c.end_time,
        time(T0 + 550 * MS),
        "ends at [DONE], not at the close"
    );
    assert_eq!(c.error_type, None);
    assert_eq!(c.output_tokens, Some(5));
}

#[test]
fn close_delimited_response_ends_at_close() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x6009);
    h.feed(s.send(T0, &chat_request("h", "gpt-4o", false)));
    let body = completion_body(1);
    h.feed(s.recv(
        T0 + 100 * MS,
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{body}").as_bytes(),
    ));
    assert!(h.calls().is_empty());
    h.feed(close(s.fd, s.id, T0 + 250 * MS));
    let c = h.only_call();
    assert!(!c.aborted);
    assert_eq!(c.end_time, time(T0 + 250 * MS));
    assert_eq!(c.response_model.as_deref(), Some("m1-resp"));
    assert_eq!(c.output_tokens, Some(1));
}

#[test]
fn finish_all_records_open_calls_at_their_last_byte() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x600a);
    h.feed(s.send(T0, &chat_request("h", "gpt-4o", true)));
    h.feed(s.recv(T0 + 100 * MS, SSE_HEAD));
    h.feed(s.recv(T0 + 300 * MS, &sse(&delta("Hel"))));
    h.tracker.finish_all(&mut h.out);
    let c = h.only_call();
    assert!(c.aborted);
    assert_eq!(c.end_time, time(T0 + 300 * MS));
    assert_eq!(h.tracker.connections(), 0);
}

#[test]
fn idle_connection_is_forgotten_with_its_call() {
    let cfg = TrackerConfig {
        idle_timeout_ns: 5_000 * MS,
        ..TrackerConfig::default()
    };
    let mut h = Harness::with_config(cfg);
    let s = Sock::plain(7, 0x600b);
    h.feed(s.send(T0, &chat_request("h", "gpt-4o", true)));
    h.feed(s.recv(T0 + 100 * MS, SSE_HEAD));
    // Any event far enough later triggers the sweep.
    h.feed(Sock::plain(8, 0x600c).send(T0 + 20_000 * MS, HEALTH_REQ));
    let c = h.only_call();
    assert_eq!(c.error_type.as_deref(), Some("idle_timeout"));
    assert!(!c.aborted);
    assert_eq!(h.dropped(DropReason::IdleConnection), 1);
    assert_eq!(
        h.tracker.connections(),
        1,
        "only the new connection is left"
    );
}

// ---------------------------------------------------------------------------------------------
// 7-8: mutes
// ---------------------------------------------------------------------------------------------

#[test]
fn tls_bytes_on_a_plaintext_socket_are_muted_as_not_http() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x7007);
    h.feed(open(s.fd, s.id, T0 - MS, "1.2.3.4:443"));
    h.feed(s.send(T0, TLS_CLIENT_HELLO));
    assert!(h.calls().is_empty());
    assert_eq!(h.out.mutes, vec![(PID, 0x7007)]);
    assert_eq!(h.dropped(DropReason::NotHttp), 1);
    assert_eq!(h.metrics.connections_muted.get(), 1);
    assert_eq!(h.metrics.parse_error_count(Protocol::Http1), 0);
    assert_eq!(h.tracker.connections(), 0);
}

#[test]
fn binary_junk_either_way_is_muted_as_not_http() {
    let junk: Vec<u8> = (0u8..=255).rev().collect();
    for dir in [Direction::Egress, Direction::Ingress] {
        let mut h = Harness::new();
        let s = Sock::plain(7, 0x7008);
        h.feed(s.data(T0, dir, &junk));
        h.feed(s.data(T0 + MS, dir.opposite(), &junk));
        assert!(h.calls().is_empty());
        assert_eq!(h.out.mutes.first(), Some(&(PID, 0x7008)), "{dir:?}");
        assert!(h.dropped(DropReason::NotHttp) >= 1);
        assert_eq!(h.metrics.parse_error_count(Protocol::Http1), 0);
    }
}

/// Probes attached while a keep-alive client was mid-stream (`--scope auto` admits a process
/// during its first call): the rest of that response is skipped, not taken for a request, and
/// the next call on the connection is recorded whole.
#[test]
fn a_stream_joined_mid_message_is_skipped_to_the_next_call() {
    for tail in [
        sse(&delta("lo")),
        b"\r\n".to_vec(),
        b"data: {\"x\":1}\n\n".to_vec(),
        completion_body(1).into_bytes(),
    ] {
        let mut h = Harness::new();
        let s = Sock::plain(7, 0x700a);
        h.feed(open(s.fd, s.id, T0 - 20 * MS, "10.0.0.5:8000"));
        h.feed(s.recv(T0 - 10 * MS, &tail));
        h.feed(s.recv(T0 - 5 * MS, &sse("[DONE]")));
        h.feed(s.recv(T0 - 4 * MS, LAST_CHUNK));
        play_client_stream_on(&mut h, s, true);
        assert!(
            h.out.mutes.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&tail)
        );
        assert_eq!(h.dropped(DropReason::JoinedMidStream), 1);
        assert_eq!(h.dropped(DropReason::NotHttp), 0);
        h.feed(close(s.fd, s.id, T0 + 1000 * MS));
        let calls = h.calls();
        assert_eq!(calls.len(), 1, "{:?}", String::from_utf8_lossy(&tail));
        assert_eq!(calls[0].role, "client");
        assert_eq!(calls[0].output_tokens, Some(5));
    }
    // Not the middle of a message: muted at once, as before.
    for junk in [
        &b"220 smtp.example ESMTP\r\n"[..],
        b"*3\r\n$3\r\nSET\r\n",
        b"\x00\x01",
    ] {
        let mut h = Harness::new();
        let s = Sock::plain(7, 0x700b);
        h.feed(s.recv(T0, junk));
        h.feed(s.send(T0 + MS, junk));
        assert_eq!(h.dropped(DropReason::JoinedMidStream), 0);
        assert_eq!(h.out.mutes.first(), Some(&(PID, 0x700b)));
    }
}

/// The end of a message and the start of the next in one chunk (a chunked request body's last
/// chunk, then a pipelined request): the skip ends at the request line, and that call is
/// recorded whole.
#[test]
fn a_skip_ends_at_a_message_start_inside_the_chunk() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x700c);
    h.feed(open(s.fd, s.id, T0 - 20 * MS, "10.0.0.5:8000"));
    let mut first = b"0\r\n\r\n".to_vec();
    first.extend_from_slice(&chat_request("llm.internal:8000", "gpt-4o", true));
    h.feed(s.send(T0, &first));
    for (ts, bytes) in stream_response(true) {
        h.feed(s.recv(ts, &bytes));
    }
    assert!(h.out.mutes.is_empty());
    assert_eq!(h.dropped(DropReason::JoinedMidStream), 1);
    h.feed(close(s.fd, s.id, T0 + 1000 * MS));
    let c = h.only_call();
    assert_eq!(c.role, "client");
    assert_eq!(c.request_model.as_deref(), Some("gpt-4o"));
    assert_eq!(c.output_tokens, Some(5));
}

// ---------------------------------------------------------------------------------------------
// HTTP/2: one exchange per stream
// ---------------------------------------------------------------------------------------------

mod h2 {
    use loona_hpack::Encoder;

    use super::*;
    use crate::protocol::http2::{PREFACE, frame};

    const HEADERS: u8 = 1;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;

    fn headers(enc: &mut Encoder<'_>, stream: u32, end: bool, fields: &[(&str, &str)]) -> Vec<u8> {
        let block = enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &block)
    }

    fn data(stream: u32, end: bool, payload: &[u8]) -> Vec<u8> {
        frame(0, if end { END_STREAM } else { 0 }, stream, payload)
    }

    fn request(enc: &mut Encoder<'_>, stream: u32, model: &str, stream_flag: bool) -> Vec<u8> {
        let mut v = headers(
            enc,
            stream,
            false,
            &[
                (":method", "POST"),
                (":scheme", "https"),
                (":path", "/v1/chat/completions"),
                (":authority", "api.openai.com"),
                ("authorization", "Bearer sk-h2-secret"),
                ("content-type", "application/json"),
            ],
        );
        v.extend(data(stream, true, chat_body(model, stream_flag).as_bytes()));
        v
    }

    /// A client connection: preface and SETTINGS, then the reference stream on stream 1 (its
    /// response timed as the HTTP/1.1 reference), a non-stream call on stream 3 interleaved
    /// with it, and stream 5 reset by the client after its first event.
    #[test]
    fn streams_multiplexed_on_one_connection_are_one_record_each() {
        let mut h = Harness::new();
        let s = Sock::ssl(SSL);
        let mut req = Encoder::new();
        let mut resp = Encoder::new();
        let mut first = PREFACE.to_vec();
        first.extend(frame(4, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
        first.extend(request(&mut req, 1, "gpt-4o", true));
        h.feed(s.send(T0, &first));
        h.feed(s.send(T0 + 10 * MS, &request(&mut req, 3, "gpt-4o-mini", false)));
        h.feed(s.send(T0 + 20 * MS, &request(&mut req, 5, "gpt-4o", true)));
        let sse_head = |enc: &mut Encoder<'_>, stream| {
            headers(
                enc,
                stream,
                false,
                &[
                    (":status", "200"),
                    ("content-type", "text/event-stream"),
                    ("x-request-id", "req-123"),
                ],
            )
        };
        let mut server_first = frame(4, 0, 0, &[]);
        server_first.extend(sse_head(&mut resp, 1));
        for (i, (ts, bytes)) in stream_response(true).into_iter().enumerate() {
            let body = String::from_utf8(bytes).expect("text");
            let ev = if i == 0 {
                server_first.clone()
            } else if body == "0\r\n\r\n" {
                data(1, true, b"")
            } else {
                // The chunk's payload, without the chunked framing.
                let payload = body.split_once("\r\n").expect("chunk size line").1;
                data(
                    1,
                    false,
                    payload.strip_suffix("\r\n").expect("chunk end").as_bytes(),
                )
            };
            h.feed(s.recv(ts, &ev));
            if i == 1 {
                let mut v = sse_head(&mut resp, 5);
                v.extend(data(
                    5,
                    false,
                    format!("data: {}\n\n", delta("Hel")).as_bytes(),
                ));
                h.feed(s.recv(ts + 5 * MS, &v));
                // The client cancels stream 5.
                h.feed(s.send(ts + 6 * MS, &frame(3, 0, 5, &8u32.to_be_bytes())));
                let aborted = h.only_call();
                assert!(aborted.aborted);
                assert_eq!(aborted.end_time, time(ts + 6 * MS));
                assert_eq!(aborted.http_status, Some(200));
                assert_eq!(aborted.chunks, Some(1));
                // A request head on the reset stream's id opens nothing: the server's late
                // frames for stream 5 find no exchange (the one record left at the end is 1's).
                h.feed(s.send(ts + 7 * MS, &request(&mut req, 5, "gpt-4o", true)));
                let late = format!("data: {}\n\n", delta("lo"));
                h.feed(s.recv(ts + 8 * MS, &data(5, false, late.as_bytes())));
                h.feed(s.recv(ts + 8 * MS, &data(5, true, b"")));
            }
            if i == 2 {
                let body = completion_body(3);
                let mut v = headers(
                    &mut resp,
                    3,
                    false,
                    &[(":status", "200"), ("content-type", "application/json")],
                );
                v.extend(data(3, true, body.as_bytes()));
                h.feed(s.recv(ts + MS, &v));
                let c = h.only_call();
                assert_eq!(c.stream, Some(false));
                assert_eq!(c.request_model.as_deref(), Some("gpt-4o-mini"));
                assert_eq!(c.input_tokens, Some(30));
                assert_eq!(c.output_tokens, Some(3));
                assert!(!c.aborted);
            }
        }
        let c = h.only_call();
        assert_reference_timings(&c);
        assert_eq!(c.request_model.as_deref(), Some("gpt-4o"));
        assert_eq!(c.input_tokens, Some(12));
        assert_eq!(c.output_tokens, Some(5));
        assert_eq!(c.http_status, Some(200));
        assert_eq!(c.server_address.as_deref(), Some("api.openai.com"));
        let id = crate::ids::key().id_u64("api_key", b"sk-h2-secret");
        assert_eq!(c.api_key_id, Some(format!("{id:016x}")));
        assert!(!format!("{c:?}").contains("sk-h2-secret"));
        assert_eq!(h.tracker.llm_in_flight(), 0);
        assert!(h.out.mutes.is_empty());
    }

    /// A stream the server resets (REFUSED_STREAM) is an error of the call, not a client abort.
    #[test]
    fn a_stream_the_server_resets_is_an_error_not_an_abort() {
        let mut h = Harness::new();
        let s = Sock::ssl(SSL);
        let mut req = Encoder::new();
        let mut resp = Encoder::new();
        let mut first = PREFACE.to_vec();
        first.extend(frame(4, 0, 0, &[]));
        first.extend(request(&mut req, 1, "gpt-4o", true));
        h.feed(s.send(T0, &first));
        let mut answer = frame(4, 0, 0, &[]);
        answer.extend(headers(
            &mut resp,
            1,
            false,
            &[(":status", "200"), ("content-type", "text/event-stream")],
        ));
        h.feed(s.recv(T0 + 100 * MS, &answer));
        h.feed(s.recv(T0 + 120 * MS, &frame(3, 0, 1, &7u32.to_be_bytes())));
        let c = h.only_call();
        assert!(!c.aborted);
        assert_eq!(c.error_type.as_deref(), Some("stream_reset"));
        assert_eq!(c.end_time, time(T0 + 120 * MS));
    }

    /// The same connection in every split of its bytes (each split a capture of its own). A
    /// first write of fewer than 3 bytes cannot be told from HTTP/1 (`P`, `PR`): it stays
    /// HTTP/1 and the preface behind it is muted as not HTTP (no HTTP/2 client writes so little).
    #[test]
    fn every_split_of_a_connection_gives_the_same_record() {
        let mut req = Encoder::new();
        let mut resp = Encoder::new();
        let mut up = PREFACE.to_vec();
        up.extend(request(&mut req, 1, "gpt-4o", false));
        let mut down = headers(
            &mut resp,
            1,
            false,
            &[(":status", "200"), ("content-type", "application/json")],
        );
        down.extend(data(1, true, completion_body(2).as_bytes()));
        for i in 1..up.len() {
            let j = i * down.len() / up.len();
            let mut h = Harness::new();
            let s = Sock::plain(7, 0x1001);
            h.feed(s.send(T0, &up[..i]));
            h.feed(s.send(T0 + MS, &up[i..]));
            if i < 3 {
                assert_eq!(h.dropped(DropReason::NotHttp), 1);
                continue;
            }
            h.feed(s.recv(T0 + 2 * MS, &down[..j]));
            h.feed(s.recv(T0 + 3 * MS, &down[j..]));
            let c = h.only_call();
            assert_eq!(c.output_tokens, Some(2), "split {i}");
            assert_eq!(c.end_time, time(T0 + 3 * MS));
        }
    }

    #[test]
    fn a_gap_cuts_the_connection_and_its_streams() {
        let mut h = Harness::new();
        let s = Sock::plain(7, 0x1002);
        let mut req = Encoder::new();
        let mut up = PREFACE.to_vec();
        up.extend(request(&mut req, 1, "gpt-4o", true));
        h.feed(s.send(T0, &up));
        // The next response bytes come with 100 bytes missing before them.
        h.feed(s.piece(T0 + MS, Direction::Ingress, 100, 200, &[0; 100]));
        let c = h.only_call();
        assert_eq!(c.error_type.as_deref(), Some("capture_incomplete"));
        assert_eq!(h.metrics.parse_error_count(Protocol::Http2), 1);
        assert_eq!(h.out.mutes, vec![(PID, 0x1002)]);
    }

    #[test]
    fn a_server_sees_the_preface_arrive() {
        let mut h = Harness::new();
        let s = Sock::plain(9, 0x1003);
        let mut req = Encoder::new();
        let mut resp = Encoder::new();
        let mut up = PREFACE.to_vec();
        up.extend(request(&mut req, 1, "gpt-4o", false));
        h.feed(s.recv(T0, &up));
        let mut down = headers(
            &mut resp,
            1,
            false,
            &[(":status", "200"), ("content-type", "application/json")],
        );
        down.extend(data(1, true, completion_body(1).as_bytes()));
        h.feed(s.send(T0 + MS, &down));
        let c = h.only_call();
        assert_eq!(c.role, "server");
        assert_eq!(c.input_tokens, Some(10));
    }

    /// An HTTP/2 server over TLS writes its SETTINGS as soon as ALPN chose h2, before it reads
    /// the client's preface: the server's first bytes out are still the answering side's.
    #[test]
    fn a_server_that_sends_its_settings_first() {
        let mut h = Harness::new();
        let s = Sock::ssl(SSL);
        let mut req = Encoder::new();
        let mut resp = Encoder::new();
        h.feed(s.send(T0 - MS, &frame(4, 0, 0, &[0, 3, 0, 0, 0, 100])));
        let mut up = PREFACE.to_vec();
        up.extend(frame(4, 0, 0, &[]));
        up.extend(request(&mut req, 1, "gpt-4o", false));
        h.feed(s.recv(T0, &up));
        let mut down = frame(4, 1, 0, &[]);
        down.extend(headers(
            &mut resp,
            1,
            false,
            &[(":status", "200"), ("content-type", "application/json")],
        ));
        down.extend(data(1, true, completion_body(1).as_bytes()));
        h.feed(s.send(T0 + MS, &down));
        let c = h.only_call();
        assert_eq!(c.role, "server");
        assert_eq!(c.output_tokens, Some(1));
        assert!(h.out.mutes.is_empty());
    }

    /// The tracker's cost per response event for the reference stream, HTTP/1.1 chunked vs
    /// HTTP/2 DATA frames (same SSE bodies, same request), over many calls on fresh connections.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_per_event_h1_vs_h2() {
        const CALLS: u64 = 20_000;
        type Script = Vec<(u64, Direction, Vec<u8>)>;
        let mut h1: Script = vec![(
            T0,
            Direction::Egress,
            chat_request("llm.internal:8000", "gpt-4o", true),
        )];
        let mut h2: Script = Vec::new();
        let (mut req, mut resp) = (Encoder::new(), Encoder::new());
        let mut up = PREFACE.to_vec();
        up.extend(request(&mut req, 1, "gpt-4o", true));
        h2.push((T0, Direction::Egress, up));
        for (ts, bytes) in stream_response(true) {
            let body = String::from_utf8(bytes.clone()).expect("text");
            let ev = if ts == T0 + 100 * MS {
                let f = [(":status", "200"), ("content-type", "text/event-stream")];
                headers(&mut resp, 1, false, &f)
            } else if body == "0\r\n\r\n" {
                data(1, true, b"")
            } else {
                let payload = body.split_once("\r\n").expect("size line").1;
                data(
                    1,
                    false,
                    payload.strip_suffix("\r\n").expect("end").as_bytes(),
                )
            };
            h1.push((ts, Direction::Ingress, bytes));
            h2.push((ts, Direction::Ingress, ev));
        }
        let run = |script: &Script| {
            let mut h = Harness::new();
            let t = std::time::Instant::now();
            for i in 0..CALLS {
                let s = Sock::plain(7, 0x10_0000 + i);
                for (ts, dir, bytes) in script {
                    h.feed(s.data(*ts, *dir, bytes));
                }
                h.feed(close(7, 0x10_0000 + i, T0 + 600 * MS));
                assert_eq!(h.calls().len(), 1);
            }
            t.elapsed().as_nanos() as f64 / (CALLS as f64 * (script.len() + 1) as f64)
        };
        for _ in 0..2 {
            let (a, b) = (run(&h1), run(&h2));
            eprintln!(
                "tracker cost per event: HTTP/1.1 {a:.0} ns, HTTP/2 {b:.0} ns (ratio {:.2})",
                b / a
            );
        }
    }

    #[test]
    fn streams_that_match_nothing_mute_the_connection() {
        let mut h = Harness::new();
        let s = Sock::plain(7, 0x1004);
        let mut req = Encoder::new();
        let mut up = PREFACE.to_vec();
        for stream in [1, 3, 5] {
            up.extend(headers(
                &mut req,
                stream,
                true,
                &[
                    (":method", "GET"),
                    (":path", "/health"),
                    (":authority", "svc"),
                ],
            ));
        }
        h.feed(s.send(T0, &up));
        assert_eq!(h.out.mutes, vec![(PID, 0x1004)]);
        assert_eq!(h.dropped(DropReason::NotLlm), 1);
        assert!(h.calls().is_empty());
    }

    #[test]
    fn followed_streams_are_bounded() {
        let mut h = Harness::new();
        let s = Sock::plain(7, 0x1005);
        let mut req = Encoder::new();
        let mut up = PREFACE.to_vec();
        for i in 0..(h2session::MAX_STREAMS as u32 + 10) {
            up.extend(request(&mut req, 1 + 2 * i, "gpt-4o", true));
        }
        h.feed(s.send(T0, &up));
        assert_eq!(h.tracker.llm_in_flight(), h2session::MAX_STREAMS);
        assert_eq!(h.dropped(DropReason::Http2StreamLimit), 10);
        h.feed(close(7, 0x1005, T0 + MS));
        let calls = h.calls();
        assert_eq!(calls.len(), h2session::MAX_STREAMS);
        assert!(calls.iter().all(|c| c.aborted));
    }
}

#[test]
fn non_llm_http_is_muted_after_three_exchanges() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x8008);
    h.feed(open(s.fd, s.id, T0 - MS, "10.0.0.7:8080"));
    for i in 0..2u64 {
        h.feed(s.send(T0 + i * 100 * MS, HEALTH_REQ));
        h.feed(s.recv(T0 + i * 100 * MS + 10 * MS, HEALTH_RESP));
        assert!(
            h.out.mutes.is_empty(),
            "not muted after {} exchanges",
            i + 1
        );
        assert_eq!(h.tracker.connections(), 1);
    }
    h.feed(s.send(T0 + 200 * MS, HEALTH_REQ));
    assert!(
        h.out.mutes.is_empty(),
        "not muted while the third response is outstanding"
    );
    h.feed(s.recv(T0 + 210 * MS, HEALTH_RESP));
    assert_eq!(h.out.mutes, vec![(PID, 0x8008)]);
    assert_eq!(h.dropped(DropReason::NotLlm), 1);
    assert_eq!(h.metrics.connections_muted.get(), 1);
    assert!(h.calls().is_empty());
    assert_eq!(h.tracker.connections(), 0);
}

#[test]
fn non_llm_http_after_an_llm_call_is_not_muted() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x8009);
    h.feed(s.send(T0, &chat_request("h", "gpt-4o", false)));
    h.feed(s.recv(T0 + 10 * MS, &json_response(200, "OK", &completion_body(1))));
    for i in 1..=5u64 {
        h.feed(s.send(T0 + i * 100 * MS, HEALTH_REQ));
        h.feed(s.recv(T0 + i * 100 * MS + 10 * MS, HEALTH_RESP));
    }
    assert!(h.out.mutes.is_empty());
    assert_eq!(h.dropped(DropReason::NotLlm), 0);
    assert_eq!(h.calls().len(), 1);
    assert_eq!(h.tracker.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// 9-10: gaps and parse failures
// ---------------------------------------------------------------------------------------------

#[test]
fn gap_inside_request_body_still_records() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x9009);
    let req = chat_request("llm.internal:8000", "gpt-4o", false);
    let body_start = req.len() - chat_body("gpt-4o", false).len();
    let total = req.len() as u32;
    // One syscall whose bytes 5..15 of the body were not captured.
    let a = body_start + 5;
    let b = body_start + 15;
    h.feed(s.piece(T0, Direction::Egress, 0, total, &req[..a]));
    h.feed(s.piece(T0, Direction::Egress, b as u32, total, &req[b..]));
    assert_eq!(h.dropped(DropReason::CaptureGap), 1);
    h.feed(s.recv(
        T0 + 100 * MS,
        &json_response(200, "OK", &completion_body(1)),
    ));
    let c = h.only_call();
    assert_eq!(c.http_status, Some(200));
    assert_eq!(
        c.request_model, None,
        "the request body is broken, so no model"
    );
    assert_eq!(c.response_model.as_deref(), Some("m1-resp"));
    assert_eq!(c.start_time, time(T0));
    assert_eq!(c.end_time, time(T0 + 100 * MS));
    assert!(!c.aborted);
    assert_eq!(c.error_type, None);
    assert_eq!(h.metrics.parse_error_count(Protocol::Http1), 0);
    assert!(h.out.mutes.is_empty());
}

#[test]
fn truncated_syscall_tail_is_a_gap_found_by_the_next_call() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x900a);
    let req = chat_request("llm.internal:8000", "gpt-4o", false);
    let total = req.len() as u32;
    // The kernel sent only the first part of the syscall; the last 7 body bytes never come.
    h.feed(s.piece(T0, Direction::Egress, 0, total, &req[..req.len() - 7]));
    assert_eq!(
        h.dropped(DropReason::CaptureGap),
        0,
        "not known to be missing yet"
    );
    h.feed(s.recv(
        T0 + 100 * MS,
        &json_response(200, "OK", &completion_body(1)),
    ));
    assert_eq!(h.dropped(DropReason::CaptureGap), 1);
    let c = h.only_call();
    assert_eq!(c.http_status, Some(200));
    assert_eq!(c.response_model.as_deref(), Some("m1-resp"));
    assert!(!c.aborted);
    assert!(h.out.mutes.is_empty());
    // The connection keeps working.
    h.feed(s.send(T0 + 200 * MS, &chat_request("h", "again", false)));
    h.feed(s.recv(
        T0 + 300 * MS,
        &json_response(200, "OK", &completion_body(2)),
    ));
    assert_eq!(h.only_call().request_model.as_deref(), Some("again"));
}

#[test]
fn gap_in_response_body_keeps_the_stream_going() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x900b);
    h.feed(s.send(T0, &chat_request("h", "gpt-4o", true)));
    h.feed(s.recv(T0 + 100 * MS, SSE_HEAD));
    // A chunk whose payload is partly lost: the size line and first bytes arrive, then a jump.
    let c1 = sse(&delta("Hel"));
    let total = c1.len() as u32;
    h.feed(s.piece(T0 + 300 * MS, Direction::Ingress, 0, total, &c1[..8]));
    h.feed(s.piece(T0 + 300 * MS, Direction::Ingress, 20, total, &c1[20..]));
    for (ts, bytes) in stream_response(true).into_iter().skip(3) {
        h.feed(s.recv(ts, &bytes));
    }
    assert_eq!(h.dropped(DropReason::CaptureGap), 1);
    let c = h.only_call();
    assert!(!c.aborted);
    assert_eq!(c.http_status, Some(200));
    assert_eq!(h.metrics.parse_error_count(Protocol::Http1), 0);
}

#[test]
fn garbage_instead_of_the_next_response_is_a_parse_failure() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0xa00a);
    h.feed(s.send(T0, &chat_request("h", "first", false)));
    h.feed(s.recv(
        T0 + 100 * MS,
        &json_response(200, "OK", &completion_body(1)),
    ));
    assert_eq!(h.calls().len(), 1);
    h.feed(s.send(T0 + 200 * MS, &chat_request("h", "second", false)));
    h.feed(s.recv(T0 + 300 * MS, b"\x00\x01\x02garbage\r\n\r\n"));
    let c = h.only_call();
    assert_eq!(c.request_model.as_deref(), Some("second"));
    assert_eq!(c.error_type.as_deref(), Some("capture_incomplete"));
    assert_eq!(c.http_status, None);
    assert!(!c.aborted);
    assert_eq!(c.end_time, time(T0 + 300 * MS));
    assert_eq!(h.metrics.parse_error_count(Protocol::Http1), 1);
    assert_eq!(h.out.mutes, vec![(PID, 0xa00a)]);
    assert_eq!(h.metrics.connections_muted.get(), 1);
    assert_eq!(h.dropped(DropReason::NotHttp), 0);
    assert_eq!(h.tracker.connections(), 0);
}

#[test]
fn garbage_in_chunk_framing_mid_stream_is_a_parse_failure() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0xa00b);
    h.feed(s.send(T0, &chat_request("h", "gpt-4o", true)));
    h.feed(s.recv(T0 + 100 * MS, SSE_HEAD));
    h.feed(s.recv(T0 + 300 * MS, &sse(&delta("Hel"))));
    h.feed(s.recv(T0 + 350 * MS, b"zz not a chunk size\r\n"));
    let c = h.only_call();
    assert_eq!(c.error_type.as_deref(), Some("capture_incomplete"));
    assert_eq!(c.http_status, Some(200));
    assert_eq!(c.chunks, Some(1));
    assert!(!c.aborted);
    assert_eq!(c.end_time, time(T0 + 350 * MS));
    assert_eq!(h.metrics.parse_error_count(Protocol::Http1), 1);
    assert_eq!(h.out.mutes, vec![(PID, 0xa00b)]);
    assert_eq!(h.tracker.connections(), 0);
}

#[test]
fn garbage_request_after_an_llm_call_is_a_parse_failure_not_not_http() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0xa00c);
    h.feed(s.send(T0, &chat_request("h", "gpt-4o", false)));
    h.feed(s.recv(
        T0 + 100 * MS,
        &json_response(200, "OK", &completion_body(1)),
    ));
    assert_eq!(h.calls().len(), 1);
    h.feed(s.send(T0 + 200 * MS, TLS_CLIENT_HELLO));
    assert!(h.calls().is_empty(), "nothing was in flight");
    assert_eq!(h.metrics.parse_error_count(Protocol::Http1), 1);
    assert_eq!(h.dropped(DropReason::NotHttp), 0);
    assert_eq!(h.out.mutes, vec![(PID, 0xa00c)]);
    assert_eq!(h.tracker.connections(), 0);
}

// ---------------------------------------------------------------------------------------------
// 11-13: limits, fd reuse, HTTP errors
// ---------------------------------------------------------------------------------------------

#[test]
fn a_new_connection_past_the_limit_evicts_the_least_recently_active() {
    let cfg = TrackerConfig {
        max_connections: 2,
        ..TrackerConfig::default()
    };
    let mut h = Harness::with_config(cfg);
    let head = b"POST /v1/chat/completions HTTP/1.1\r\n";
    h.feed(Sock::plain(3, 1).send(T0, head));
    h.feed(Sock::plain(4, 2).send(T0 + MS, head));
    assert_eq!(h.tracker.connections(), 2);
    assert_eq!(h.dropped(DropReason::ConnectionEvicted), 0);
    // Connection 1 is the least recently active: it makes room, and is muted in the kernel.
    h.feed(Sock::plain(5, 3).send(T0 + 2 * MS, head));
    assert_eq!(h.tracker.connections(), 2);
    assert_eq!(h.dropped(DropReason::ConnectionEvicted), 1);
    assert_eq!(h.out.mutes, vec![(PID, 1)]);
    // Existing connections keep working at the limit.
    h.feed(Sock::plain(5, 3).send(T0 + 3 * MS, b"Host: h\r\n\r\n"));
    assert_eq!(h.dropped(DropReason::ConnectionEvicted), 1);
    // A close makes room without an eviction.
    h.feed(close(4, 2, T0 + 4 * MS));
    assert_eq!(h.tracker.connections(), 1);
    h.feed(Sock::plain(6, 4).send(T0 + 5 * MS, head));
    assert_eq!(h.tracker.connections(), 2);
    assert_eq!(h.dropped(DropReason::ConnectionEvicted), 1);
    assert!(h.calls().is_empty());
}

#[test]
fn one_process_cannot_take_the_table_from_the_others() {
    let cfg = TrackerConfig {
        max_connections: 64,
        max_connections_per_process: 16,
        ..TrackerConfig::default()
    };
    let mut h = Harness::with_config(cfg);
    const VICTIM: u32 = 7;
    // Attackers: one process with 10 000 half-sent requests; later 20 processes with 16 each.
    let partial = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 9\r\n\r\n{";
    for i in 0..10_000u64 {
        let s = Sock {
            pid: 1000,
            fd: (i % 60_000) as i32,
            id: 0x1001 + 2 * i,
            tls: false,
        };
        h.feed(s.send(T0 + MS + i, partial));
    }
    assert_eq!(h.tracker.connections(), 16);
    // A well-behaved process opens its connection after the flood and keeps a call in flight.
    let good = Sock {
        pid: VICTIM,
        fd: 3,
        id: 0x11,
        tls: false,
    };
    h.feed(good.send(
        T0 + 15 * MS,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\n",
    ));
    assert_eq!(h.tracker.connections(), 17);
    for p in 0..20u32 {
        for i in 0..16u64 {
            let s = Sock {
                pid: 2000 + p,
                fd: i as i32,
                id: 0x9_0001 + 2 * (u64::from(p) * 100 + i),
                tls: false,
            };
            h.feed(s.send(T0 + 20 * MS + i, partial));
        }
    }
    assert!(h.tracker.connections() <= 64);
    assert!(h.dropped(DropReason::ConnectionLimitPerProcess) >= 10_000 - 16);
    assert!(h.dropped(DropReason::ConnectionEvicted) > 0);
    // The well-behaved call is still tracked and completes.
    h.feed(good.send(T0 + 100 * MS, b"Content-Length: 2\r\n\r\n{}"));
    h.feed(good.recv(
        T0 + 200 * MS,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    ));
    // Only the well-behaved call is recorded: a half-sent request pushed out by a bound is no
    // call, so a flood of them is no flood of records.
    let calls = h.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].pid, VICTIM);
    assert_eq!(calls[0].error_type, None);
    assert!(h.dropped(DropReason::EvictedUnansweredRequest) >= 10_000 - 16);
}

#[test]
fn invented_ssl_objects_and_sockets_stay_bounded() {
    let cfg = TrackerConfig {
        max_connections: 16,
        max_connections_per_process: 8,
        ..TrackerConfig::default()
    };
    let mut h = Harness::with_config(cfg);
    for i in 0..100_000u64 {
        h.feed(ProbeEvent::SslFd {
            meta: meta(PID, 3, 0x1000 + 8 * i, T0 + i),
        });
        h.feed(ProbeEvent::ConnOpen {
            meta: meta(PID + 1, (i % 1_000_000) as i32, 2 * i + 1, T0 + i),
            peer: None,
            connect_ns: None,
        });
    }
    assert!(
        h.tracker.ids.ssl_links() <= MAX_SSL_PER_FD,
        "{}",
        h.tracker.ids.ssl_links()
    );
    assert!(h.tracker.ids.most_links_on_one_fd() <= MAX_SSL_PER_FD);
    let (socket_count, sockets_held) = h.tracker.ids.socket_counts();
    assert!(socket_count <= 8 * LINKS_PER_CONNECTION);
    assert_eq!(socket_count, sockets_held);
    assert!(h.dropped(DropReason::SslLinksPerFd) > 0);
    assert!(h.dropped(DropReason::SocketTableFull) > 0);
}

#[test]
fn the_memory_budget_cuts_the_largest_holders_and_spares_small_calls() {
    let budget = 2 << 20;
    let cfg = TrackerConfig {
        memory_budget: budget,
        ..TrackerConfig::default()
    };
    let mut h = Harness::with_config(cfg);
    // Attackers: LLM requests announcing 4 MiB bodies and sending them 128 KiB at a time.
    let piece = vec![b'x'; 128 * 1024];
    let head =
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 4194304\r\n\r\n{\"model\":\"";
    let good = Sock {
        pid: 9,
        fd: 3,
        id: 0x21,
        tls: false,
    };
    h.feed(good.send(T0, b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\n"));
    let mut cuts = 0;
    for i in 0..40u64 {
        let s = Sock::plain(100 + i as i32, 0x1001 + 2 * i);
        h.feed(s.send(T0 + MS + i, head));
        for k in 0..8u64 {
            h.feed(s.send(T0 + 2 * MS + i * 10 + k, &piece));
            assert!(
                h.tracker.memory_bytes() <= budget,
                "{} bytes held, budget {budget}",
                h.tracker.memory_bytes()
            );
            // A cut goes down to seven eighths of the budget, not just under it.
            if h.dropped(DropReason::MemoryBudget) > cuts {
                cuts = h.dropped(DropReason::MemoryBudget);
                assert!(h.tracker.memory_bytes() <= budget / 8 * 7);
            }
        }
    }
    assert!(h.dropped(DropReason::MemoryBudget) > 0);
    // The accounting matches what the connections hold.
    let held: usize = h
        .tracker
        .conns
        .values()
        .flat_map(|m| m.values())
        .map(|c| c.heap_bytes())
        .sum();
    assert_eq!(held, h.tracker.memory_bytes());
    // The small call survived and completes.
    h.feed(good.send(T0 + 900 * MS, b"Content-Length: 2\r\n\r\n{}"));
    h.feed(good.recv(
        T0 + 950 * MS,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    ));
    let calls: Vec<LlmCall> = h.calls().into_iter().filter(|c| c.pid == 9).collect();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].error_type, None);
    h.tracker.finish_all(&mut h.out);
    assert_eq!(h.tracker.memory_bytes(), 0);
}

#[test]
fn fd_reuse_without_a_close_aborts_the_old_call() {
    let mut h = Harness::new();
    let old = Sock::plain(7, 0xb001);
    h.feed(open(7, 0xb001, T0 - MS, "10.0.0.5:8000"));
    h.feed(old.send(T0, &chat_request("llm.internal:8000", "gpt-4o", true)));
    h.feed(old.recv(T0 + 100 * MS, SSE_HEAD));
    h.feed(old.recv(T0 + 300 * MS, &sse(&delta("Hel"))));
    h.feed(open(7, 0xb002, T0 + 800 * MS, "10.0.0.6:9000"));
    let c = h.only_call();
    assert!(c.aborted);
    assert_eq!(c.end_time, time(T0 + 800 * MS));
    assert_eq!(c.peer_addr.as_deref(), Some("10.0.0.5:8000"));
    assert_eq!(c.chunks, Some(1));
    assert_eq!(h.tracker.connections(), 0);
    // The new socket on the same fd is a fresh connection with its own peer.
    let new = Sock::plain(7, 0xb002);
    h.feed(new.send(T0 + 900 * MS, &chat_request("h", "m", false)));
    h.feed(new.recv(
        T0 + 950 * MS,
        &json_response(200, "OK", &completion_body(1)),
    ));
    let c = h.only_call();
    assert!(!c.aborted);
    assert_eq!(c.peer_addr.as_deref(), Some("10.0.0.6:9000"));
}

#[test]
fn fd_reuse_also_ends_tls_connections_on_the_old_socket() {
    let mut h = Harness::new();
    h.feed(open(9, 0x900, T0 - 20 * MS, "104.18.6.192:443"));
    h.feed(ssl_fd(9, SSL, T0 - 10 * MS));
    tls_partial_stream(&mut h, Sock::ssl(SSL));
    h.feed(open(9, 0x901, T0 + 400 * MS, "104.18.6.193:443"));
    assert_tls_aborted_at(&h.only_call(), T0 + 400 * MS);
}

#[test]
fn same_generation_reopen_is_not_fd_reuse() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0xb003);
    h.feed(open(7, 0xb003, T0 - MS, "10.0.0.5:8000"));
    h.feed(s.send(T0, &chat_request("h", "gpt-4o", true)));
    h.feed(open(7, 0xb003, T0 + MS, "10.0.0.5:8000"));
    assert!(h.calls().is_empty());
    assert_eq!(h.tracker.connections(), 1);
}

#[test]
fn http_429_json_error() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0xc001);
    h.feed(s.send(T0, &chat_request("api.openai.com", "gpt-4o", true)));
    let body = r#"{"error":{"message":"Rate limit reached","type":"rate_limit_exceeded","code":"rate_limit_exceeded"}}"#;
    h.feed(s.recv(T0 + 40 * MS, &json_response(429, "Too Many Requests", body)));
    let c = h.only_call();
    assert_eq!(c.http_status, Some(429));
    assert_eq!(c.error_type.as_deref(), Some("429"));
    assert!(!c.aborted);
    assert_eq!(
        c.stream,
        Some(false),
        "an error body is not a stream, whatever was asked"
    );
    assert_eq!(c.ttft_s, None);
    assert_eq!(c.request_model.as_deref(), Some("gpt-4o"));
    assert_eq!(c.end_time, time(T0 + 40 * MS));
    assert_eq!(c.server_port, Some(80));
}

// ---------------------------------------------------------------------------------------------
// 14: robustness
// ---------------------------------------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let mut stream = SSE_HEAD.to_vec();
    for (_, b) in stream_response(true).into_iter().skip(1) {
        stream.extend_from_slice(&b);
    }
    vec![
        chat_request("api.openai.com", "gpt-4o", true),
        chat_request("llm.internal:8000", "m", false),
        stream,
        json_response(200, "OK", &completion_body(1)),
        json_response(429, "Too Many Requests", r#"{"error":{"type":"rate_limit_exceeded"}}"#),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec(),
        b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
        b"HEAD /v1/models HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        b"POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"id\":\"x\"}".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n".to_vec(),
        HEALTH_REQ.to_vec(),
        HEALTH_RESP.to_vec(),
        TLS_CLIENT_HELLO.to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"\r\n\r\n".to_vec(),
    ]
}

fn random_payload(rng: &mut XorShift, corpus: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(6) {
        0 => (0..rng.below(80)).map(|_| rng.next() as u8).collect(),
        1 => {
            // A truncated message.
            let m = &corpus[rng.index(corpus.len())];
            m[..rng.index(m.len() + 1)].to_vec()
        }
        2 => {
            // A fragment from the middle.
            let m = &corpus[rng.index(corpus.len())];
            let a = rng.index(m.len() + 1);
            let b = a + rng.index(m.len() - a + 1);
            m[a..b].to_vec()
        }
        3 => {
            // A valid message with a few bytes flipped.
            let mut m = corpus[rng.index(corpus.len())].clone();
            for _ in 0..rng.below(3) {
                let i = rng.index(m.len());
                if let Some(b) = m.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
            m
        }
        _ => corpus[rng.index(corpus.len())].clone(),
    }
}

const PIDS: [u32; 3] = [100, 101, 102];
const FDS: [i32; 3] = [3, 4, -1];
const GENS: [u64; 3] = [1, 2, 3];
const SSLS: [u64; 2] = [0x5555_0000_1000, 0x5555_0000_2000];

fn random_event(rng: &mut XorShift, corpus: &[Vec<u8>], ts: u64) -> ProbeEvent {
    let pid = PIDS[rng.index(PIDS.len())];
    let fd = FDS[rng.index(FDS.len())];
    let generation = GENS[rng.index(GENS.len())];
    let ssl = SSLS[rng.index(SSLS.len())];
    let peer = rng.chance(70).then(|| addr("10.1.2.3:443"));
    match rng.below(20) {
        0..=10 => {
            let tls = rng.chance(40);
            let data = random_payload(rng, corpus);
            let len = data.len() as u32;
            let (offset, total_len) = match rng.below(8) {
                0 => (
                    rng.below(u64::from(len) * 2 + 2) as u32,
                    rng.below(u64::from(len) * 3 + 2) as u32,
                ),
                1 => (0, len.saturating_add(rng.below(5000) as u32)),
                2 => (u32::MAX - rng.below(3) as u32, u32::MAX),
                3 => (rng.next() as u32, rng.next() as u32),
                _ => (0, len),
            };
            ProbeEvent::Data(DataChunk {
                meta: meta(pid, fd, if tls { ssl } else { generation }, ts),
                direction: if rng.chance(50) {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                tls,
                offset,
                total_len,
                lost_before: false,
                data: Bytes::from(data),
                api_key_id: None,
                mcp_session_id: None,
            })
        }
        11 => ProbeEvent::ConnOpen {
            meta: meta(pid, fd, generation, ts),
            peer,
            connect_ns: Some(ts.saturating_sub(1_000)),
        },
        12 => ProbeEvent::TlsStart {
            meta: meta(pid, fd, generation, ts),
        },
        13 | 14 => ProbeEvent::ConnClose {
            meta: meta(pid, fd, generation, ts),
        },
        15 | 16 => ProbeEvent::SslFd {
            meta: meta(pid, fd, ssl, ts),
        },
        17 => ProbeEvent::SslFree {
            meta: meta(pid, fd, ssl, ts),
        },
        18 => ProbeEvent::ExecMap {
            meta: meta(pid, fd, 0, ts),
        },
        _ => ProbeEvent::ProcExit {
            meta: meta(pid, -1, 0, ts),
        },
    }
}

/// A coherent exchange on one plaintext connection, cut into random syscall pieces.
fn scripted_exchange(rng: &mut XorShift, corpus: &[Vec<u8>], ts: u64) -> Vec<ProbeEvent> {
    let pid = PIDS[rng.index(PIDS.len())];
    let s = Sock {
        pid,
        fd: FDS[rng.index(2)],
        id: GENS[rng.index(GENS.len())],
        tls: false,
    };
    let (req, resp) = if rng.chance(50) {
        (&corpus[0], &corpus[2])
    } else {
        (&corpus[1], &corpus[3])
    };
    let mut evs = vec![open(s.fd, s.id, ts, "10.9.9.9:80")];
    if let ProbeEvent::ConnOpen { meta, .. } = &mut evs[0] {
        meta.pid = pid;
    }
    let mut t = ts;
    for (dir, bytes) in [(Direction::Egress, req), (Direction::Ingress, resp)] {
        let mut pos = 0;
        while pos < bytes.len() {
            let n = 1 + rng.index((bytes.len() - pos).min(200));
            t += rng.below(5 * MS);
            if !rng.chance(3) {
                evs.push(s.data(t, dir, &bytes[pos..pos + n]));
            }
            pos += n;
        }
    }
    if rng.chance(50) {
        evs.push(ProbeEvent::ConnClose {
            meta: meta(pid, s.fd, s.id, t + MS),
        });
    }
    evs
}

#[test]
fn random_event_sequences_never_panic_or_exceed_limits() {
    let corpus = corpus();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut total_calls = 0usize;
    for seq in 0..2000u64 {
        let cfg = TrackerConfig {
            max_connections: 1 + rng.index(4),
            max_pending_exchanges: 1 + rng.index(4),
            idle_timeout_ns: (1 + rng.below(20)) * 1_000 * MS,
            mute_after_non_llm: rng.below(4) as u32,
            ..TrackerConfig::default()
        };
        let mut h = Harness::with_config(cfg);
        let mut ts = rng.below(10_000 * MS);
        let n = 1 + rng.index(40);
        let mut events = Vec::new();
        for _ in 0..n {
            ts = match rng.below(20) {
                0 => ts.saturating_sub(rng.below(2_000 * MS)),
                1 => ts + rng.below(30_000 * MS),
                _ => ts + rng.below(300 * MS),
            };
            if rng.chance(10) {
                let script = scripted_exchange(&mut rng, &corpus, ts);
                ts += 2_000 * MS;
                events.extend(script);
            } else {
                events.push(random_event(&mut rng, &corpus, ts));
            }
        }
        for ev in events {
            // Harness::feed checks the connection limit and the gauge after every event.
            h.feed(ev);
        }
        h.tracker.finish_all(&mut h.out);
        assert_eq!(
            h.tracker.connections(),
            0,
            "sequence {seq}: connections left after finish_all"
        );
        assert_eq!(h.metrics.connections_tracked.get(), 0, "sequence {seq}");
        for c in h.calls() {
            total_calls += 1;
            assert!(
                c.duration_s.is_finite() && c.duration_s >= 0.0,
                "sequence {seq}: {c:?}"
            );
            for v in [
                c.ttft_s,
                c.tpot_s,
                c.reasoning_s,
                c.tbt_p50_s,
                c.tbt_p95_s,
                c.tbt_max_s,
            ]
            .into_iter()
            .flatten()
            {
                assert!(v.is_finite() && v >= 0.0, "sequence {seq}: {c:?}");
            }
            assert!(c.role == "client" || c.role == "server");
        }
    }
    assert!(
        total_calls > 1000,
        "the sequences should produce some records, got {total_calls}"
    );
}

// ---------------------------------------------------------------------------------------------
// Known bugs (ignored until fixed)
// ---------------------------------------------------------------------------------------------

#[test]
fn lost_first_piece_of_a_call_is_a_counted_gap() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0xd001);
    // The client writes the head and the body in two syscalls (as most HTTP clients do).
    let model = format!("first-{}", "x".repeat(300));
    let req = chat_request("h", &model, false);
    let body_start = req.len() - chat_body(&model, false).len();
    h.feed(s.send(T0, &req[..body_start]));
    // The body syscall came in two pieces; the kernel lost the first one (ring buffer full).
    // It is as long as the head, so the tracker thinks nothing is missing.
    let body = &req[body_start..];
    let k = body_start;
    assert!(k < body.len());
    h.feed(s.piece(
        T0 + MS,
        Direction::Egress,
        k as u32,
        body.len() as u32,
        &body[k..],
    ));
    h.feed(s.recv(
        T0 + 100 * MS,
        &json_response(200, "OK", &completion_body(1)),
    ));
    assert_eq!(
        h.dropped(DropReason::CaptureGap),
        1,
        "the {k} lost bytes are a counted gap"
    );
    let first = h.calls();
    assert_eq!(first.len(), 1, "{first:#?}");
    // The connection keeps working: the next exchange is parsed normally.
    h.feed(s.send(T0 + 200 * MS, &chat_request("h", "second", false)));
    h.feed(s.recv(
        T0 + 300 * MS,
        &json_response(200, "OK", &completion_body(2)),
    ));
    let c = h.only_call();
    assert_eq!(c.request_model.as_deref(), Some("second"));
    assert_eq!(c.error_type, None);
    assert_eq!(h.metrics.parse_error_count(Protocol::Http1), 0);
    assert!(h.out.mutes.is_empty());
}

#[test]
fn missing_tail_at_close_is_a_counted_gap_not_an_abort() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0xd002);
    h.feed(s.send(T0, &chat_request("h", "gpt-4o", false)));
    let resp = json_response(200, "OK", &completion_body(1));
    let cut = resp.len() - 10;
    // The process read the whole response in one syscall; its last 10 bytes were not captured.
    h.feed(s.piece(
        T0 + 100 * MS,
        Direction::Ingress,
        0,
        resp.len() as u32,
        &resp[..cut],
    ));
    h.feed(close(s.fd, s.id, T0 + 200 * MS));
    let c = h.only_call();
    assert_eq!(
        h.dropped(DropReason::CaptureGap),
        1,
        "the lost tail is a counted gap"
    );
    assert!(!c.aborted, "the process received the whole response");
}

// ---------------------------------------------------------------------------------------------
// A fresh connection's share of TTFT: connect and TLS handshake times
// ---------------------------------------------------------------------------------------------

/// A socket the process connected: `connect()` entered at `start`, returned at `ts`.
fn connect(fd: i32, generation: u64, start: u64, ts: u64, peer: &str) -> ProbeEvent {
    ProbeEvent::ConnOpen {
        meta: meta(PID, fd, generation, ts),
        peer: Some(addr(peer)),
        connect_ns: Some(start),
    }
}

/// The first TLS record (ClientHello) written on socket `generation` at `ts`.
fn tls_start(fd: i32, generation: u64, ts: u64) -> ProbeEvent {
    ProbeEvent::TlsStart {
        meta: meta(PID, fd, generation, ts),
    }
}

/// One non-streamed chat call on `s` starting at `start`, answered 200 ms later.
fn json_call(h: &mut Harness, s: Sock, start: u64, i: usize) {
    h.feed(s.send(
        start,
        &chat_request("llm.internal:8000", &format!("m{i}"), false),
    ));
    h.feed(s.recv(
        start + 200 * MS,
        &json_response(200, "OK", &completion_body(i)),
    ));
}

#[test]
fn fresh_plaintext_connection_times_its_first_call_only() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x5001);
    // connect() entered 40 ms before the first request byte (returned 10 ms before it).
    h.feed(connect(
        7,
        0x5001,
        T0 - 40 * MS,
        T0 - 10 * MS,
        "10.0.0.5:8000",
    ));
    json_call(&mut h, s, T0, 1);
    json_call(&mut h, s, T0 + 1000 * MS, 2);
    let calls = h.calls();
    assert_eq!(calls.len(), 2);
    approx(calls[0].connect_s, 0.04);
    assert_eq!(calls[0].tls_handshake_s, None, "plaintext has no handshake");
    assert_eq!(
        calls[1].connect_s, None,
        "a reused connection waited for no connect"
    );
    assert_eq!(calls[1].tls_handshake_s, None);
}

#[test]
fn fresh_tls_connection_splits_connect_and_handshake() {
    let mut h = Harness::new();
    let s = Sock::ssl(0x7000);
    h.feed(connect(
        9,
        0x5003,
        T0 - 100 * MS,
        T0 - 99 * MS,
        "10.0.0.5:443",
    ));
    h.feed(tls_start(9, 0x5003, T0 - 60 * MS));
    // A repeat (the kernel sends one per socket) changes nothing.
    h.feed(tls_start(9, 0x5003, T0 - 30 * MS));
    h.feed(ssl_fd(9, 0x7000, T0 - MS));
    json_call(&mut h, s, T0, 1);
    json_call(&mut h, s, T0 + 1000 * MS, 2);
    // Another SSL object on the same socket is not its first connection.
    let other = Sock::ssl(0x7100);
    h.feed(ssl_fd(9, 0x7100, T0 + 2000 * MS));
    json_call(&mut h, other, T0 + 2001 * MS, 3);
    let calls = h.calls();
    assert_eq!(calls.len(), 3);
    approx(calls[0].connect_s, 0.04);
    approx(calls[0].tls_handshake_s, 0.06);
    approx(calls[0].request_upload_s, 0.0);
    assert_eq!((calls[1].connect_s, calls[1].tls_handshake_s), (None, None));
    assert_eq!((calls[2].connect_s, calls[2].tls_handshake_s), (None, None));
}

#[test]
fn a_first_request_that_is_not_followed_takes_the_fresh_times_along() {
    let mut h = Harness::new();
    let s = Sock::plain(7, 0x5005);
    h.feed(connect(
        7,
        0x5005,
        T0 - 40 * MS,
        T0 - 39 * MS,
        "10.0.0.5:8000",
    ));
    h.feed(s.send(T0, HEALTH_REQ));
    h.feed(s.recv(T0 + MS, HEALTH_RESP));
    json_call(&mut h, s, T0 + 10 * MS, 1);
    let c = h.only_call();
    assert_eq!(
        c.connect_s, None,
        "the health check waited for the connect, not the call"
    );
}

#[test]
fn a_reused_fd_is_a_new_connection_with_new_times() {
    let mut h = Harness::new();
    h.feed(connect(
        7,
        0x6001,
        T0 - 40 * MS,
        T0 - 39 * MS,
        "10.0.0.5:8000",
    ));
    json_call(&mut h, Sock::plain(7, 0x6001), T0, 1);
    h.feed(close(7, 0x6001, T0 + 300 * MS));
    // Same fd, new socket: its own connect (20 ms before its first byte).
    h.feed(connect(
        7,
        0x6003,
        T0 + 980 * MS,
        T0 + 990 * MS,
        "10.0.0.5:8000",
    ));
    // A TLS start naming the old socket is ignored.
    h.feed(tls_start(7, 0x6001, T0 + 995 * MS));
    json_call(&mut h, Sock::plain(7, 0x6003), T0 + 1000 * MS, 2);
    // And an fd reused without a close seen: new times again.
    h.feed(connect(
        7,
        0x6005,
        T0 + 1970 * MS,
        T0 + 1971 * MS,
        "10.0.0.5:8000",
    ));
    json_call(&mut h, Sock::plain(7, 0x6005), T0 + 2000 * MS, 3);
    let calls = h.calls();
    assert_eq!(calls.len(), 3);
    approx(calls[0].connect_s, 0.04);
    approx(calls[1].connect_s, 0.02);
    approx(calls[2].connect_s, 0.03);
    assert!(calls.iter().all(|c| c.tls_handshake_s.is_none()));
}

#[test]
fn no_connect_times_without_a_connect_seen_or_for_a_server() {
    let mut h = Harness::new();
    // Opened before the agent (seeded) or accepted: no connect time.
    h.feed(open(7, 0x7001, T0 - 10 * MS, "10.0.0.5:8000"));
    json_call(&mut h, Sock::plain(7, 0x7001), T0, 1);
    // A server on a socket it connected (the requests come in): no client-side connect share.
    h.feed(connect(
        8,
        0x7003,
        T0 - 50 * MS,
        T0 - 49 * MS,
        "10.0.0.6:9000",
    ));
    let s = Sock::plain(8, 0x7003);
    h.feed(s.recv(T0, &chat_request("svc:8000", "m", false)));
    h.feed(s.send(
        T0 + 100 * MS,
        &json_response(200, "OK", &completion_body(1)),
    ));
    // A TLS connection whose socket's first TLS record was never seen (the SSL object was
    // linked, but the handshake was not on this socket as far as the kernel saw).
    h.feed(connect(
        9,
        0x7005,
        T0 - 50 * MS,
        T0 - 49 * MS,
        "10.0.0.5:443",
    ));
    h.feed(ssl_fd(9, 0x9000, T0 - MS));
    json_call(&mut h, Sock::ssl(0x9000), T0, 2);
    let calls = h.calls();
    assert_eq!(calls.len(), 3);
    for c in &calls {
        assert_eq!((c.connect_s, c.tls_handshake_s), (None, None), "{c:#?}");
    }
}

#[test]
fn a_handshake_inside_the_first_ssl_write_gives_connect_only() {
    let mut h = Harness::new();
    h.feed(connect(
        9,
        0x5007,
        T0 - 50 * MS,
        T0 - 49 * MS,
        "10.0.0.5:443",
    ));
    // The SSL_write was entered at T0 (its bytes are stamped so); the ClientHello went out
    // inside it, 1 ms later, and the link with it.
    h.feed(tls_start(9, 0x5007, T0 + MS));
    h.feed(ssl_fd(9, 0xa000, T0 + MS));
    json_call(&mut h, Sock::ssl(0xa000), T0, 1);
    let c = h.only_call();
    approx(c.connect_s, 0.051);
    assert_eq!(c.tls_handshake_s, None);
}

#[test]
fn opening_times_live_in_the_bounded_socket_table() {
    let cfg = TrackerConfig {
        max_connections: 16,
        max_connections_per_process: 4,
        ..TrackerConfig::default()
    };
    let mut h = Harness::with_config(cfg);
    for i in 0..10_000u64 {
        // TLS starts for sockets never opened keep nothing.
        h.feed(tls_start((i % 5000) as i32, 2 * i + 1, T0 + i));
        h.feed(connect(
            (i % 5000) as i32,
            2 * i + 1,
            T0 + i,
            T0 + i,
            "10.0.0.5:443",
        ));
        h.feed(tls_start((i % 5000) as i32, 2 * i + 1, T0 + i));
    }
    let (counted, held) = h.tracker.ids.socket_counts();
    assert_eq!(counted, held);
    assert!(held <= 4 * LINKS_PER_CONNECTION, "{held} sockets held");
}

/// The live view's calls in flight: a process holding many calls open, all older than a
/// victim's, cannot push the victim's call out of the view.
#[test]
fn a_process_holding_many_calls_cannot_crowd_others_out_of_the_in_flight_view() {
    let mut h = Harness::new();
    let hog = 777;
    // 60 calls open (the test tracker holds 64 connections per process), shown 32 at most.
    for i in 0..60 {
        let s = Sock {
            pid: hog,
            fd: 100 + i,
            id: 1,
            tls: false,
        };
        h.feed(ProbeEvent::ConnOpen {
            meta: meta(hog, s.fd, 1, T0),
            peer: Some(addr("10.0.0.1:80")),
            connect_ns: None,
        });
        h.feed(s.send(
            T0 + u64::try_from(i).expect("small") * MS,
            &chat_request("h", "hog", true),
        ));
    }
    let victim = Sock::plain(7, 1);
    h.feed(open(7, 1, T0 + 10_000 * MS, "10.0.0.2:80"));
    h.feed(victim.send(T0 + 10_000 * MS, &chat_request("h", "victim-model", true)));
    let (calls, total) = h.tracker.in_flight_calls(32);
    assert_eq!(total, 61);
    assert_eq!(calls.len(), 32);
    assert!(
        calls
            .iter()
            .any(|c| c.pid == PID && c.model.as_deref() == Some("victim-model")),
        "the victim's call is shown"
    );
    let first = calls.iter().map(|c| c.start_unix_ns).min().expect("some");
    assert_eq!(first, i64::try_from(T0).expect("small"), "oldest first");
}
