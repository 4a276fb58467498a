//! The MCP dialect: Model Context Protocol requests (JSON-RPC 2.0) over the streamable HTTP
//! transport. Each request (`tools/call`, `resources/read`, `prompts/get`, `tools/list`,
//! `initialize`, ...) is a POST whose body is one JSON-RPC request; the answer is either an
//! `application/json` body (the JSON-RPC response) or a `text/event-stream` whose events carry
//! JSON-RPC messages (progress notifications, requests of the server), the answer being the
//! response whose `id` matches the request's. One request is one record: operation
//! `execute_tool` for `tools/call` (the OpenTelemetry MCP conventions: MCP tool calls are GenAI
//! `execute_tool` operations), the MCP method name for the other well-known methods, `mcp` for
//! any other.
//!
//! MCP's endpoint path is the server's choice (`/mcp` by default in the Python SDK), so the
//! dialect is never picked by path: a JSON POST to a path no dialect knows is a candidate
//! ([`super::detect_candidate`]) and its body decides ([`detect_body`]): a JSON-RPC 2.0 request
//! (`"jsonrpc": "2.0"`, a string `method`, an `id` that is a string or a number). A notification
//! (no `id`, answered 202) or a response the client posts back is not a call and is not
//! recorded.
//!
//! A batch (a JSON array of messages; MCP 2025-03-26 only, dropped in 2025-06-18) is one record:
//! the method of its first request, the ids of all its requests (at most [`MAX_IDS`]) matched
//! against the answer, `tool_calls` counting its `tools/call` requests; its first error is the
//! record's.
//!
//! Errors: a JSON-RPC error answer sets `jsonrpc_error_code` and `error_type` to the code as a
//! string (`-32602`); a `tools/call` result with `isError: true` (the tool itself failed) sets
//! `error_type` to `tool_error`, as the conventions say. MCP records carry no tokens, TTFT or
//! chunks: nothing of an answer is output text.
//!
//! Invariants: the request's values are kept bounded (method and tool name capped to
//! [`super::MAX_FIELD_BYTES`], ids matched by a hash of their whole text, recorded capped);
//! the `Mcp-Session-Id` header never reaches the dialect (the masker turns it into a keyed id,
//! see `probes::scrub`); no argument, result or resource content is kept.

use std::hash::{Hash, Hasher};

use serde_json::Value;

use super::json::{Body, Event};
use super::typed::{List, Scalar, as_bool, json_object};
use super::{LlmCall, MAX_FIELD_BYTES, MAX_TOOL_NAMES, Observed, OutputKind, ProviderDialect};

/// Most request ids of a batch matched against its answer.
pub const MAX_IDS: usize = 64;

/// `error_type` of a `tools/call` whose result says `isError: true`.
pub const TOOL_ERROR: &str = "tool_error";

/// MCP methods with a name of their own as `operation` (the conventions' well-known requests);
/// `tools/call` is `execute_tool`, any other method `mcp`.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
];

/// The record's `operation` for an MCP method.
pub fn operation_of(method: &str) -> &'static str {
    if method == "tools/call" {
        return "execute_tool";
    }
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("mcp")
}

/// A JSON-RPC id, as matched: a hash of its kind and whole text (a string id and a number id
/// of the same text differ).
fn id_key(id: &Value) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match id {
        Value::String(s) => {
            0u8.hash(&mut h);
            s.hash(&mut h);
        }
        Value::Number(n) => {
            1u8.hash(&mut h);
            n.to_string().hash(&mut h);
        }
        _ => return None,
    }
    Some(h.finish())
}

/// A JSON-RPC id as the record writes it: the string, or the number's text; capped.
fn id_text(id: &Value) -> Option<String> {
    let text = match id {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(super::cap_field(&text, MAX_FIELD_BYTES).into_owned())
}

/// A JSON-RPC 2.0 request: `"jsonrpc": "2.0"`, a string `method`, a string or number `id`.
fn is_request(v: &Value) -> bool {
    v.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
        && v.get("method").is_some_and(Value::is_string)
        && v.get("id")
            .is_some_and(|id| id.is_string() || id.is_number())
}

/// Picks the MCP dialect for a request body that is a JSON-RPC 2.0 request, or a batch holding
/// at least one (see the module doc). None for anything else: notifications, responses, other
/// JSON, a body cut by a gap.
pub fn detect_body(body: &Body<'_>) -> Option<Box<dyn ProviderDialect>> {
    let found = match body.json()? {
        Value::Array(items) => items.iter().any(is_request),
        v => is_request(v),
    };
    found.then(|| Box::new(Mcp::default()) as Box<dyn ProviderDialect>)
}

/// The dialect: what one JSON-RPC request (or batch) asked, and what its answer said.
#[derive(Debug, Default)]
pub struct Mcp {
    /// The (first) request's method, capped.
    method: Option<String>,
    /// The record's operation.
    operation: &'static str,
    /// The (first) request's id, as recorded.
    request_id: Option<String>,
    /// The ids still waiting for their response.
    pending: Vec<u64>,
    /// `tools/call` requests.
    tool_calls: u32,
    /// Their distinct tool names, in request order.
    tools: Vec<String>,
    /// The first JSON-RPC error code of the answer.
    error_code: Option<i64>,
    /// A tool's result said `isError: true`.
    tool_error: bool,
}

json_object! {
    /// A JSON-RPC message of the answer (the response, or anything else the server sends).
    struct Message<'a> {
        "id" => id: Value,
        "method" => method: Scalar<'a>,
        "result" => result: RpcResult<'a>,
        "error" => error: RpcError<'a>,
    }
}

json_object! {
    /// `result`: only whether a tool said it failed.
    struct RpcResult<'a> {
        "isError" => is_error: Scalar<'a>,
    }
}

json_object! {
    /// `error`: its code (a negative integer, hence a `Value`).
    struct RpcError<'a> {
        "code" => code: Value,
        "message" => message: Scalar<'a>,
    }
}

impl Mcp {
    /// Notes one request of the body.
    fn note_request(&mut self, v: &Value) {
        if !is_request(v) {
            return;
        }
        let method = v.get("method").and_then(Value::as_str).unwrap_or("");
        let id = v.get("id").unwrap_or(&Value::Null);
        if self.method.is_none() {
            self.method = Some(super::cap_field(method, MAX_FIELD_BYTES).into_owned());
            self.operation = operation_of(method);
            self.request_id = id_text(id);
        }
        if let Some(k) = id_key(id)
            && self.pending.len() < MAX_IDS
            && !self.pending.contains(&k)
        {
            self.pending.push(k);
        }
        if method == "tools/call" {
            self.tool_calls = self.tool_calls.saturating_add(1);
            let name = v
                .get("params")
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty());
            if let Some(name) = name {
                let name = super::cap_field(name, MAX_FIELD_BYTES);
                if self.tools.len() < MAX_TOOL_NAMES && !self.tools.iter().any(|t| *t == name) {
                    self.tools.push(name.into_owned());
                }
            }
        }
    }

    /// Reads one message of the answer: the response to one of the request's ids ends its
    /// wait; the answer is over when no id waits any more.
    fn on_message(&mut self, m: &Message<'_>, out: &mut Observed) {
        // A request or notification of the server (its ids are its own), or not JSON-RPC.
        if m.method.is_some() || (m.result.is_none() && m.error.is_none()) {
            return;
        }
        let Some(k) = m.id.as_ref().and_then(id_key) else {
            return;
        };
        let Some(at) = self.pending.iter().position(|p| *p == k) else {
            return;
        };
        self.pending.swap_remove(at);
        if let Some(e) = &m.error {
            let code = e.code.as_ref().and_then(Value::as_i64);
            if self.error_code.is_none() {
                self.error_code = code;
            }
            if out.error.is_none() {
                out.error = Some(match code {
                    Some(c) => c.to_string(),
                    None => "jsonrpc_error".to_owned(),
                });
            }
        } else if let Some(r) = &m.result
            && as_bool(&r.is_error) == Some(true)
        {
            self.tool_error = true;
        }
        if self.pending.is_empty() {
            out.terminal = true;
        }
    }
}

impl ProviderDialect for Mcp {
    fn heap_bytes(&self) -> usize {
        self.method.as_ref().map_or(0, String::capacity)
            + self.request_id.as_ref().map_or(0, String::capacity)
            + self.pending.capacity() * std::mem::size_of::<u64>()
            + self.tools.capacity() * std::mem::size_of::<String>()
            + self.tools.iter().map(String::capacity).sum::<usize>()
    }

    fn provider(&self) -> &'static str {
        "mcp"
    }

    fn api(&self) -> &'static str {
        "mcp.streamable_http"
    }

    fn operation(&self) -> &'static str {
        if self.operation.is_empty() {
            "mcp"
        } else {
            self.operation
        }
    }

    fn on_request_body(&mut self, body: &Body<'_>, _out: &mut Observed) {
        match body.json() {
            Some(Value::Array(items)) => items.iter().for_each(|v| self.note_request(v)),
            Some(v) => self.note_request(v),
            None => {}
        }
    }

    fn on_stream_event(&mut self, ev: &Event<'_>, out: &mut Observed) -> OutputKind {
        // `message` events (or unnamed ones) carry JSON-RPC messages; a batch's answers may
        // come as one array.
        if ev.name.is_some_and(|n| n != "message") {
            return OutputKind::None;
        }
        if ev.text.starts_with('[') {
            if let Some(list) = ev.parse::<List<Message<'_>>>() {
                for m in list.items() {
                    self.on_message(m, out);
                }
            }
        } else if let Some(m) = ev.parse::<Message<'_>>() {
            self.on_message(&m, out);
        }
        OutputKind::None
    }

    fn on_response_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        if body.raw().trim_ascii_start().starts_with(b"[") {
            if let Some(list) = body.parse::<List<Message<'_>>>() {
                for m in list.items() {
                    self.on_message(m, out);
                }
            }
        } else if let Some(m) = body.parse::<Message<'_>>() {
            self.on_message(&m, out);
        }
    }

    fn complete_record(&mut self, call: &mut LlmCall) {
        call.mcp_method = self.method.take();
        call.jsonrpc_request_id = self.request_id.take();
        call.jsonrpc_error_code = self.error_code;
        if self.tool_calls > 0 {
            call.tool_calls = Some(self.tool_calls);
            call.tool_names = Some(std::mem::take(&mut self.tools)).filter(|t| !t.is_empty());
        }
        // The JSON-RPC error code is the error, even behind an HTTP error status; a tool's
        // own failure is `tool_error`; what the exchange found (HTTP status, timeouts, a
        // stream that ended before the answer) stays otherwise.
        if let Some(code) = self.error_code {
            call.error_type = Some(code.to_string());
        } else if self.tool_error && call.error_type.is_none() {
            call.error_type = Some(TOOL_ERROR.to_owned());
        }
        // Nothing of an MCP answer is generated text: no tokens, no chunk timings.
        call.input_tokens = None;
        call.output_tokens = None;
        call.reasoning_tokens = None;
        call.cached_input_tokens = None;
        call.token_source = None;
        call.reasoning_token_source = None;
        call.ttft_s = None;
        call.tpot_s = None;
        call.tbt_p50_s = None;
        call.tbt_p95_s = None;
        call.tbt_max_s = None;
        call.chunks = None;
        call.detail.first_chunk_unix_ns = None;
        call.detail.gaps_s.clear();
    }
}

/// True for a record of an MCP request.
pub fn is_mcp(call: &LlmCall) -> bool {
    call.mcp_method.is_some()
}

/// The span name of an MCP record, as the conventions say: `{mcp.method.name} {target}`, the
/// target being the tool's name for `tools/call` (a resource URI is high-cardinality and left
/// out), else the method alone.
pub fn span_name(call: &LlmCall) -> Option<String> {
    let method = call.mcp_method.as_deref()?;
    let tool = call
        .tool_names
        .as_ref()
        .filter(|t| t.len() == 1)
        .and_then(|t| t.first());
    Some(match tool {
        Some(t) if call.operation == "execute_tool" => {
            super::cap_field(&format!("{method} {t}"), MAX_FIELD_BYTES).into_owned()
        }
        _ => method.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::llm::exchange::{ExchangeContext, ExchangeLimits, LlmExchange};
    use crate::llm::test_support::head;
    use crate::protocol::http1::{RequestHead, ResponseHead};

    const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_weather","arguments":{"city":"Paris"},"_meta":{"progressToken":7}}}"#;

    fn mcp_head() -> RequestHead {
        RequestHead {
            method: "POST".into(),
            path: "/mcp".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (
                    "accept".into(),
                    "application/json, text/event-stream".into(),
                ),
            ],
        }
    }

    /// One exchange as the tracker drives it: the head picks a candidate, the body decides;
    /// the answer in the given pieces. None: rejected (not an MCP call).
    fn exchange(request: &str, status: u16, ctype: &str, pieces: &[&[u8]]) -> Option<LlmCall> {
        let h = mcp_head();
        assert!(crate::llm::detect(&h).is_none(), "no dialect knows /mcp");
        let d = crate::llm::detect_candidate(&h).expect("a JSON POST is a candidate");
        let mut ex = LlmExchange::new(&h, d, 1_000, ExchangeLimits::default());
        ex.set_candidate();
        ex.on_mcp_session(0xfeed);
        ex.on_request_body(request.as_bytes(), 1_000);
        ex.on_request_end(2_000);
        if ex.is_rejected() {
            return None;
        }
        let resp = ResponseHead {
            status,
            headers: vec![("content-type".into(), ctype.into())],
        };
        ex.on_response_head(&resp, 3_000);
        for p in pieces {
            ex.on_response_body(p, 4_000);
        }
        ex.on_response_end(5_000);
        let ctx = ExchangeContext {
            role: "client",
            pid: 1,
            comm: "agent".into(),
            tls: true,
            peer: None,
            container: None,
            fresh: None,
        };
        Some(ex.finish(&ctx, &Clock { offset_ns: 0 }, false, None))
    }

    fn json_answer(request: &str, answer: &str) -> LlmCall {
        exchange(request, 200, "application/json", &[answer.as_bytes()]).expect("an MCP call")
    }

    #[test]
    fn detects_requests_by_body_not_path() {
        let is = |b: &str| detect_body(&Body::new(b.as_bytes())).is_some();
        assert!(is(CALL));
        assert!(is(
            r#"{"jsonrpc":"2.0","id":"a-1","method":"resources/read","params":{"uri":"file:///x"}}"#
        ));
        assert!(is(
            r#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#
        ));
        // Notifications, responses posted back, other JSON-RPC versions, chat bodies, garbage.
        for not in [
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
            r#"{"jsonrpc":"1.0","id":3,"method":"tools/list"}"#,
            r#"{"id":3,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":7}"#,
            r#"{"model":"gpt-4o","messages":[]}"#,
            r#"[{"jsonrpc":"2.0","method":"notifications/cancelled"}]"#,
            r#"{"jsonrpc":"2.0","id":1,"meth"#,
            "",
            "\0\u{1}garbage",
        ] {
            assert!(!is(not), "{not}");
        }
        // Through the exchange: a notification rejects the candidate (202, no record).
        assert!(
            exchange(
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                202,
                "",
                &[]
            )
            .is_none()
        );
        // A chat request on an unknown path is still the chat candidate.
        let h = head("POST", "/my/llm");
        let mut ex = LlmExchange::new(
            &h,
            crate::llm::detect_candidate(&h).expect("candidate"),
            1,
            ExchangeLimits::default(),
        );
        ex.set_candidate();
        ex.on_request_body(br#"{"model":"m","messages":[]}"#, 1);
        ex.on_request_end(2);
        assert!(!ex.is_rejected());
    }

    #[test]
    fn tool_call_with_a_json_answer() {
        let call = json_answer(
            CALL,
            r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"sunny"}],"isError":false}}"#,
        );
        assert_eq!(
            (call.provider.as_str(), call.api, call.operation),
            ("mcp", "mcp.streamable_http", "execute_tool")
        );
        assert_eq!(call.mcp_method.as_deref(), Some("tools/call"));
        assert_eq!(call.tool_names, Some(vec!["get_weather".to_owned()]));
        assert_eq!(call.tool_calls, Some(1));
        assert_eq!(call.jsonrpc_request_id.as_deref(), Some("7"));
        assert_eq!(call.jsonrpc_error_code, None);
        assert_eq!(call.error_type, None);
        assert_eq!(call.mcp_session_id, Some(crate::ids::hex_id(0xfeed)));
        assert_eq!(call.stream, Some(false));
        assert_eq!(
            (call.input_tokens, call.output_tokens, call.token_source),
            (None, None, None)
        );
        assert_eq!((call.ttft_s, call.chunks), (None, None));
        assert_eq!(call.duration_s, 4e-6);
        assert_eq!(span_name(&call).as_deref(), Some("tools/call get_weather"));
    }

    #[test]
    fn tool_call_with_an_event_stream_answer_in_every_split() {
        // A progress notification and a request of the server (same id, its own id space)
        // before the response; an SSE priming event; a string id.
        let request =
            r#"{"jsonrpc":"2.0","id":"req-1","method":"tools/call","params":{"name":"slow"}}"#;
        let body = "id: e0\ndata:\n\n\
            event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":0.5}}\n\n\
            event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"req-1\",\"method\":\"sampling/createMessage\",\"params\":{}}\n\n\
            event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"isError\":true}}\n\n\
            event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"req-1\",\"result\":{\"content\":[],\"isError\":true}}\n\n";
        let whole = exchange(request, 200, "text/event-stream", &[body.as_bytes()]).expect("call");
        assert_eq!(whole.error_type.as_deref(), Some(TOOL_ERROR));
        assert_eq!(whole.jsonrpc_request_id.as_deref(), Some("req-1"));
        assert_eq!(whole.tool_names, Some(vec!["slow".to_owned()]));
        assert_eq!(whole.stream, Some(true));
        assert_eq!(
            (whole.chunks, whole.ttft_s, whole.output_tokens),
            (None, None, None)
        );
        for i in 0..=body.len() {
            let (a, b) = body.as_bytes().split_at(i);
            let split = exchange(request, 200, "text/event-stream", &[a, b]).expect("call");
            assert_eq!(split, whole, "split at {i}");
        }
        // The stream ends before the answer: the exchange's stream_truncated.
        let cut =
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
        let call = exchange(request, 200, "text/event-stream", &[cut.as_bytes()]).expect("call");
        assert_eq!(call.error_type.as_deref(), Some("stream_truncated"));
    }

    #[test]
    fn jsonrpc_errors_and_tool_errors() {
        let call = json_answer(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"Unknown tool: nope"}}"#,
        );
        assert_eq!(call.jsonrpc_error_code, Some(-32602));
        assert_eq!(call.error_type.as_deref(), Some("-32602"));
        assert_eq!(call.operation, "execute_tool");
        // Behind an HTTP error status, the JSON-RPC code still names the error.
        let call = exchange(
            r#"{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"p"}}"#,
            400,
            "application/json",
            &[br#"{"jsonrpc":"2.0","id":2,"error":{"code":-32600,"message":"Bad"}}"#],
        )
        .expect("call");
        assert_eq!(
            (call.error_type.as_deref(), call.jsonrpc_error_code),
            (Some("-32600"), Some(-32600))
        );
        assert_eq!(
            (call.operation, span_name(&call).as_deref()),
            ("prompts/get", Some("prompts/get"))
        );
        // An error without a numeric code; an answer to another id is not ours.
        let call = json_answer(
            r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":2,"error":{"code":"x"}}"#,
        );
        assert_eq!(call.error_type.as_deref(), Some("stream_error"));
        assert_eq!(call.jsonrpc_error_code, None);
        let call = json_answer(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":"2","result":{"isError":true}}"#,
        );
        assert_eq!(
            call.error_type, None,
            "a string id \"2\" is not the number 2"
        );
        // isError outside tools/call results is still the tool's word; HTTP status wins over it.
        let call = exchange(
            CALL,
            500,
            "application/json",
            &[br#"{"jsonrpc":"2.0","id":7,"result":{"isError":true}}"#],
        )
        .expect("call");
        assert_eq!(call.error_type.as_deref(), Some("500"));
    }

    #[test]
    fn other_methods_and_operations() {
        for (method, op) in [
            ("initialize", "initialize"),
            ("tools/list", "tools/list"),
            ("resources/read", "resources/read"),
            ("prompts/get", "prompts/get"),
            ("vendor/custom", "mcp"),
        ] {
            let req = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"name":"x","uri":"file:///secret/path"}}}}"#
            );
            let call = json_answer(&req, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
            assert_eq!(call.operation, op, "{method}");
            assert_eq!(call.mcp_method.as_deref(), Some(method));
            assert_eq!((call.tool_names.as_ref(), call.tool_calls), (None, None));
            assert_eq!(span_name(&call).as_deref(), Some(method));
        }
    }

    #[test]
    fn batches_are_one_record() {
        let req = r#"[{"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}},
            {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"a"}}]"#;
        let answer = r#"[{"jsonrpc":"2.0","id":2,"error":{"code":-32603,"message":"x"}},
            {"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":3,"result":{"isError":true}}]"#;
        let call = json_answer(req, answer);
        assert_eq!(call.mcp_method.as_deref(), Some("tools/call"));
        assert_eq!(call.jsonrpc_request_id.as_deref(), Some("1"));
        assert_eq!(call.tool_calls, Some(3));
        assert_eq!(call.tool_names, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(call.jsonrpc_error_code, Some(-32603));
        assert_eq!(call.error_type.as_deref(), Some("-32603"));
        assert_eq!(span_name(&call).as_deref(), Some("tools/call"));
        // Answered over an event stream, one message per event: over once all three came.
        let sse = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n\
            event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n";
        let call = exchange(req, 200, "text/event-stream", &[sse.as_bytes()]).expect("call");
        assert_eq!(call.error_type.as_deref(), Some("stream_truncated"));
    }

    #[test]
    fn garbage_answers_and_huge_values_are_bounded() {
        for answer in [
            "",
            "not json",
            "[",
            "{\"jsonrpc\":\"2.0\",\"id\":7,\"res",
            "[1,2,{}]",
            "null",
        ] {
            let call = json_answer(CALL, answer);
            assert_eq!(call.mcp_method.as_deref(), Some("tools/call"), "{answer}");
            assert_eq!(
                (call.error_type, call.jsonrpc_error_code),
                (None, None),
                "{answer}"
            );
        }
        let long = "é".repeat(100 << 10);
        let req = format!(
            r#"{{"jsonrpc":"2.0","id":"{long}","method":"tools/call","params":{{"name":"{long}"}}}}"#
        );
        // The whole id is matched (not its capped text).
        let answer = format!(r#"{{"jsonrpc":"2.0","id":"{long}","result":{{"isError":true}}}}"#);
        let call = json_answer(&req, &answer);
        for (name, v) in [
            ("mcp_method", call.mcp_method.as_deref()),
            ("jsonrpc_request_id", call.jsonrpc_request_id.as_deref()),
            (
                "tool",
                call.tool_names
                    .as_ref()
                    .and_then(|t| t.first())
                    .map(String::as_str),
            ),
        ] {
            let v = v.unwrap_or_else(|| panic!("{name} missing"));
            assert!(v.len() <= MAX_FIELD_BYTES, "{name}: {}", v.len());
        }
        assert_eq!(call.error_type.as_deref(), Some(TOOL_ERROR));
        let req = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call{long}"}}"#);
        let call = json_answer(&req, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert!(call.mcp_method.is_some_and(|m| m.len() <= MAX_FIELD_BYTES));
        assert_eq!(call.operation, "mcp", "a method that is not a known one");
        // A batch of thousands of requests keeps at most MAX_IDS ids and MAX_TOOL_NAMES names.
        let many: Vec<String> = (0..5000)
            .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"t{i}"}}}}"#))
            .collect();
        let call = json_answer(&format!("[{}]", many.join(",")), "[]");
        assert_eq!(call.tool_calls, Some(5000));
        assert_eq!(call.tool_names.map(|t| t.len()), Some(MAX_TOOL_NAMES));
    }
}
