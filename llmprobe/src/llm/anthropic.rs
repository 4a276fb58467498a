//! The Anthropic Messages dialect: `POST /v1/messages`, streamed as typed SSE events
//! (`message_start`, `content_block_delta`, `message_delta`, `message_stop`, ...) or answered with
//! one `message` object. Recognised by method and path, not by host, so gateways that mount the
//! API under a prefix (`/anthropic/v1/messages`) are recognised too.

use serde_json::Value;

use super::json::{self, Body, Event, chars};
use super::typed::{
    ErrorView, List, Scalar, UsageView, as_str, as_u64, error_named_by, json_object, nonempty,
};
use super::{Observed, OutputKind, ProviderDialect, Usage};
use crate::protocol::http1::RequestHead;

/// The dialect. Keeps the input-token components, since Anthropic reports them separately and
/// may report them again (cumulatively) in a later event.
#[derive(Debug, Default)]
pub struct Anthropic {
    /// `input_tokens`: prompt tokens neither read from nor written to the cache.
    input: Option<u64>,
    /// `cache_read_input_tokens`.
    cache_read: Option<u64>,
    /// `cache_creation_input_tokens`.
    cache_creation: Option<u64>,
}

/// Recognises Messages API requests by method and path: `POST .../v1/messages`, or `.../messages`
/// under a path that names Anthropic or Claude (a gateway prefix). `count_tokens` and `batches`
/// are other operations and are not recognised.
pub fn detect(head: &RequestHead) -> Option<Box<dyn ProviderDialect>> {
    if head.method != "POST" {
        return None;
    }
    let path = super::route_path(head);
    let lower = path.to_ascii_lowercase();
    let ok = lower.ends_with("/v1/messages")
        || (lower.ends_with("/messages")
            && (lower.contains("anthropic") || lower.contains("claude")));
    ok.then(|| Box::new(Anthropic::default()) as Box<dyn ProviderDialect>)
}

/// Characters of prompt text in a `system` or message `content` value: a string, or an array of
/// blocks whose `text` counts (a `tool_result` block's nested `content` too).
fn content_chars(c: &Value) -> u64 {
    match c {
        Value::String(s) => chars(s),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b {
                Value::String(s) => chars(s),
                _ => {
                    b.get("text")
                        .and_then(Value::as_str)
                        .map(chars)
                        .unwrap_or(0)
                        + b.get("content").map(content_chars).unwrap_or(0)
                }
            })
            .sum(),
        _ => 0,
    }
}

json_object! {
    /// A stream event's data, or a whole response (a `message` or an `error`).
    struct Object<'a> {
        "type" => ty: Scalar<'a>,
        "index" => index: Scalar<'a>,
        "message" => message: Box<Message<'a>>,
        "content_block" => content_block: Box<Block<'a>>,
        "delta" => delta: Delta<'a>,
        "usage" => usage: Box<UsageView<'a>>,
        "error" => error: Box<ErrorView<'a>>,
        "model" => model: Scalar<'a>,
        "id" => id: Scalar<'a>,
        "stop_reason" => stop_reason: Scalar<'a>,
        "content" => content: Box<List<Block<'a>>>,
    }
}

json_object! {
    /// The `message` of `message_start`.
    struct Message<'a> {
        "model" => model: Scalar<'a>,
        "id" => id: Scalar<'a>,
        "stop_reason" => stop_reason: Scalar<'a>,
        "usage" => usage: Box<UsageView<'a>>,
    }
}

json_object! {
    /// A content block (or the start of one).
    struct Block<'a> {
        "type" => ty: Scalar<'a>,
        "text" => text: Scalar<'a>,
        "thinking" => thinking: Scalar<'a>,
        "id" => id: Scalar<'a>,
        "name" => name: Scalar<'a>,
        "input" => input: Value,
    }
}

json_object! {
    /// The `delta` of `content_block_delta` or `message_delta`.
    struct Delta<'a> {
        "type" => ty: Scalar<'a>,
        "text" => text: Scalar<'a>,
        "thinking" => thinking: Scalar<'a>,
        "partial_json" => partial_json: Scalar<'a>,
        "stop_reason" => stop_reason: Scalar<'a>,
    }
}

/// The `error.type` of an `{"type":"error","error":{...}}` object, else `error`.
fn error_of(v: &Object<'_>) -> String {
    error_named_by(&v.error, |e| &e.ty).unwrap_or_else(|| "error".to_owned())
}

impl Anthropic {
    /// Reads a `usage` object (cumulative: reported fields replace earlier ones). `input_tokens`
    /// becomes the whole prompt: Anthropic's own `input_tokens` excludes cache reads and cache
    /// writes, which are added so that `cached_input_tokens` is a part of it, as with the other
    /// dialects. `output_tokens` already includes thinking.
    fn read_usage(&mut self, usage: &UsageView<'_>, out: &mut Usage) {
        if !usage.is_object {
            return;
        }
        if let Some(n) = as_u64(&usage.input_tokens) {
            self.input = Some(n);
        }
        if let Some(n) = as_u64(&usage.cache_read) {
            self.cache_read = Some(n);
            out.cached_input_tokens = Some(n);
        }
        if let Some(n) = as_u64(&usage.cache_creation) {
            self.cache_creation = Some(n);
        }
        if let Some(n) = as_u64(&usage.output_tokens) {
            out.output_tokens = Some(n);
        }
        if let Some(input) = self.input {
            out.input_tokens = Some(
                input
                    .saturating_add(self.cache_read.unwrap_or(0))
                    .saturating_add(self.cache_creation.unwrap_or(0)),
            );
        }
    }

    /// Reads the id, model, stop reason and usage of a `message` object (a whole response, or
    /// the one inside `message_start`).
    fn read_message(
        &mut self,
        (model, id, stop_reason, usage): MessageFields<'_, '_>,
        out: &mut Observed,
    ) {
        if let Some(model) = nonempty(model) {
            super::set_text(&mut out.response_model, model);
        }
        if let Some(id) = nonempty(id) {
            out.response_id.get_or_insert_with(|| id.to_owned());
        }
        if let Some(fr) = nonempty(stop_reason) {
            super::set_text(&mut out.finish_reason, fr);
        }
        if let Some(usage) = usage {
            self.read_usage(usage, &mut out.usage);
        }
    }

    /// Counts the output text of one content block (or block start: `index` is its place in
    /// the stream); returns what it carried. A `tool_use` block is a tool call (server tools,
    /// `server_tool_use`, run at Anthropic and are not the client's to answer).
    fn read_block(b: &Block<'_>, index: Option<u32>, out: &mut Observed) -> OutputKind {
        match as_str(&b.ty) {
            Some("text") => match nonempty(&b.text) {
                Some(t) => {
                    out.note_output(t);
                    OutputKind::Answer
                }
                None => OutputKind::None,
            },
            Some("thinking") => match nonempty(&b.thinking) {
                Some(t) => {
                    out.note_reasoning(t);
                    OutputKind::Reasoning
                }
                None => OutputKind::None,
            },
            // A whole response's tool call: its arguments, as the stream would have sent them.
            Some("tool_use") => {
                out.note_tool_call(index, nonempty(&b.id), nonempty(&b.name));
                match &b.input {
                    Some(input) if input.as_object().is_some_and(|o| !o.is_empty()) => {
                        out.note_tool_args(index, &input.to_string());
                        OutputKind::Answer
                    }
                    _ => OutputKind::None,
                }
            }
            _ => OutputKind::None,
        }
    }

    /// Reads a `content_block_delta`'s `delta` (of the block at `index`).
    fn read_delta(d: &Delta<'_>, index: Option<u32>, out: &mut Observed) -> OutputKind {
        let (text, kind) = match as_str(&d.ty) {
            Some("text_delta") => (&d.text, OutputKind::Answer),
            Some("thinking_delta") => (&d.thinking, OutputKind::Reasoning),
            Some("input_json_delta") => (&d.partial_json, OutputKind::Answer),
            // signature_delta, citations_delta and anything newer carry no output text.
            _ => return OutputKind::None,
        };
        match nonempty(text) {
            Some(t) => {
                if kind == OutputKind::Reasoning {
                    out.note_reasoning(t);
                } else if as_str(&d.ty) == Some("input_json_delta") {
                    out.note_tool_args(index, t);
                } else {
                    out.note_output(t);
                }
                kind
            }
            None => OutputKind::None,
        }
    }
}

/// The `index` of a streamed content block (a tool call's place in the stream).
fn block_index(v: &Object<'_>) -> Option<u32> {
    as_u64(&v.index).and_then(|i| u32::try_from(i).ok())
}

/// A message's model, id, stop reason and usage.
type MessageFields<'s, 'a> = (
    &'s Option<Scalar<'a>>,
    &'s Option<Scalar<'a>>,
    &'s Option<Scalar<'a>>,
    &'s Option<Box<UsageView<'a>>>,
);

impl ProviderDialect for Anthropic {
    fn provider(&self) -> &'static str {
        "anthropic"
    }

    fn api(&self) -> &'static str {
        "anthropic.messages"
    }

    fn operation(&self) -> &'static str {
        "chat"
    }

    fn on_request_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = json::request_body(body, out) else {
            return;
        };
        let mut n = v.get("system").map(content_chars).unwrap_or(0);
        if let Some(msgs) = v.get("messages").and_then(Value::as_array) {
            for m in msgs {
                n += m.get("content").map(content_chars).unwrap_or(0);
            }
        }
        out.prompt_chars = n;
    }

    fn on_stream_event(&mut self, ev: &Event<'_>, out: &mut Observed) -> OutputKind {
        if ev.text.is_empty() {
            return OutputKind::None;
        }
        let Some(v) = ev.parse::<Object<'_>>() else {
            if ev.name == Some("error") && out.error.is_none() {
                out.error = Some("error".to_owned());
            }
            return OutputKind::None;
        };
        let ty = as_str(&v.ty).or(ev.name).unwrap_or("");
        match ty {
            "message_start" => {
                if let Some(m) = &v.message {
                    self.read_message((&m.model, &m.id, &m.stop_reason, &m.usage), out);
                }
                OutputKind::None
            }
            "content_block_start" => v
                .content_block
                .as_ref()
                .map(|b| Self::read_block(b, block_index(&v), out))
                .unwrap_or(OutputKind::None),
            "content_block_delta" => v
                .delta
                .as_ref()
                .map(|d| Self::read_delta(d, block_index(&v), out))
                .unwrap_or(OutputKind::None),
            "message_delta" => {
                if let Some(fr) = v.delta.as_ref().and_then(|d| nonempty(&d.stop_reason)) {
                    super::set_text(&mut out.finish_reason, fr);
                }
                if let Some(usage) = &v.usage {
                    self.read_usage(usage, &mut out.usage);
                }
                OutputKind::None
            }
            "message_stop" => {
                out.terminal = true;
                OutputKind::None
            }
            "error" => {
                out.error = Some(error_of(&v));
                OutputKind::None
            }
            // ping, content_block_stop, and event types added later.
            _ => OutputKind::None,
        }
    }

    fn on_response_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = body.parse::<Object<'_>>().filter(|v| v.is_object) else {
            return;
        };
        if as_str(&v.ty) == Some("error") {
            out.error = Some(error_of(&v));
        } else {
            self.read_message((&v.model, &v.id, &v.stop_reason, &v.usage), out);
            for b in v.content.as_deref().map_or(&[][..], List::items) {
                Self::read_block(b, None, out);
            }
        }
        out.terminal = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::test_support::Feed;
    use crate::llm::test_support::{head, typed_event as ev};
    use crate::protocol::StreamEvent;

    #[test]
    fn detects_by_path() {
        for p in [
            "/v1/messages",
            "/v1/messages/",
            "/v1/messages?beta=true",
            "/anthropic/v1/messages",
            "/api/providers/anthropic/messages",
            "/claude/messages",
        ] {
            let d = detect(&head("POST", p));
            assert_eq!(
                d.as_ref().map(|d| d.api()),
                Some("anthropic.messages"),
                "{p}"
            );
            assert_eq!(d.as_ref().map(|d| d.provider()), Some("anthropic"));
            assert_eq!(d.as_ref().map(|d| d.operation()), Some("chat"));
        }
        for p in [
            "/v1/messages/count_tokens",
            "/v1/messages/batches",
            "/v1/messages/batches/msgbatch_1/results",
            "/v1/threads/thread_1/messages",
            "/v1/chat/completions",
            "/v1/messagesx",
            "/messages",
            "/chat/room/messages",
        ] {
            assert!(detect(&head("POST", p)).is_none(), "{p}");
        }
        assert!(detect(&head("GET", "/v1/messages")).is_none());
    }

    #[test]
    fn reads_request() {
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"be brief","messages":[{"role":"user","content":"hello"},{"role":"assistant","content":[{"type":"text","text":"abc"},{"type":"tool_use","id":"t1","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"42"}]},{"type":"image","source":{"type":"base64","data":"AAAA"}}]}],"stream":true}"#,
            &mut o,
        );
        assert_eq!(o.request_model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 8 + 5 + 3 + 2);

        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"m","system":[{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"h\u00e9"}]}"#,
            &mut o,
        );
        assert_eq!(o.stream, Some(false));
        assert_eq!(o.prompt_chars, 5);
    }

    #[test]
    fn reads_the_model_of_a_request_cut_by_a_gap() {
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        d.feed_request(b"{\"model\":\"claude-x\",\"max_tokens\":64,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"w0 w1\0w998 w999\"}]}", &mut o);
        assert_eq!(o.request_model.as_deref(), Some("claude-x"));
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 0);
    }

    #[test]
    fn reads_a_stream_with_thinking() {
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        let frames = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-x","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}"#,
                OutputKind::None,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
                OutputKind::None,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"..."}}"#,
                OutputKind::Reasoning,
            ),
            ("ping", r#"{"type": "ping"}"#, OutputKind::None),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}"#,
                OutputKind::None,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
                OutputKind::None,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
                OutputKind::None,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}"#,
                OutputKind::Answer,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":1}"#,
                OutputKind::None,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
                OutputKind::None,
            ),
        ];
        for (event, data, want) in frames {
            assert_eq!(d.feed_event(&ev(event, data), &mut o), want, "{data}");
            assert!(!o.terminal);
        }
        assert_eq!(
            d.feed_event(&ev("message_stop", r#"{"type":"message_stop"}"#), &mut o),
            OutputKind::None
        );
        assert!(o.terminal);
        assert_eq!(o.response_model.as_deref(), Some("claude-x"));
        assert_eq!(o.response_id.as_deref(), Some("msg_1"));
        assert_eq!(o.finish_reason.as_deref(), Some("end_turn"));
        assert_eq!(o.output_chars, 3 + 5);
        assert_eq!(o.error, None);
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(25),
                output_tokens: Some(15),
                reasoning_tokens: None,
                cached_input_tokens: Some(0),
            }
        );
    }

    #[test]
    fn uses_the_sse_event_name_when_data_has_no_type() {
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        assert_eq!(
            d.feed_event(
                &ev(
                    "content_block_delta",
                    r#"{"index":0,"delta":{"type":"text_delta","text":"Hi"}}"#
                ),
                &mut o
            ),
            OutputKind::Answer
        );
        d.feed_event(&ev("message_stop", "{}"), &mut o);
        assert!(o.terminal);
        assert_eq!(o.output_chars, 2);
    }

    #[test]
    fn reads_tool_use() {
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        let frames = [
            (
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
                OutputKind::None,
            ),
            (
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
                OutputKind::None,
            ),
            (
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"Par"}}"#,
                OutputKind::Answer,
            ),
            (
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"is\"}"}}"#,
                OutputKind::Answer,
            ),
            (
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":40}}"#,
                OutputKind::None,
            ),
        ];
        for (data, want) in frames {
            let e = StreamEvent {
                event: None,
                data: data.into(),
                id: None,
            };
            assert_eq!(d.feed_event(&e, &mut o), want, "{data}");
        }
        assert_eq!(o.output_chars, 17 + 4);
        assert_eq!(o.finish_reason.as_deref(), Some("tool_use"));
        assert_eq!(o.usage.output_tokens, Some(40));
    }

    #[test]
    fn usage_counts_cached_prompt_tokens_and_replaces_cumulative_reports() {
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        d.feed_event(
            &ev("message_start", r#"{"type":"message_start","message":{"id":"msg_2","model":"claude-x","usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":1}}}"#),
            &mut o,
        );
        assert_eq!(o.usage.input_tokens, Some(115));
        assert_eq!(o.usage.cached_input_tokens, Some(100));
        assert_eq!(o.usage.output_tokens, Some(1));
        d.feed_event(
            &ev("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":7}}"#),
            &mut o,
        );
        d.feed_event(
            &ev("message_delta", r#"{"type":"message_delta","delta":{},"usage":{"input_tokens":12,"output_tokens":9}}"#),
            &mut o,
        );
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(117),
                output_tokens: Some(9),
                reasoning_tokens: None,
                cached_input_tokens: Some(100),
            }
        );
        assert_eq!(o.finish_reason.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn reads_stream_errors() {
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        assert_eq!(
            d.feed_event(
                &ev(
                    "error",
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                ),
                &mut o
            ),
            OutputKind::None
        );
        assert_eq!(o.error.as_deref(), Some("overloaded_error"));
        assert!(!o.terminal);

        let mut o = Observed::default();
        d.feed_event(&ev("error", "upstream went away"), &mut o);
        assert_eq!(o.error.as_deref(), Some("error"));
    }

    #[test]
    fn reads_whole_responses() {
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        d.feed_response(
            br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"text","text":"Hi there"},{"type":"tool_use","id":"toolu_1","name":"f","input":{"a":1}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":4,"output_tokens":30}}"#,
            &mut o,
        );
        assert!(o.terminal);
        assert_eq!(o.response_id.as_deref(), Some("msg_01"));
        assert_eq!(
            o.response_model.as_deref(),
            Some("claude-sonnet-4-5-20250929")
        );
        assert_eq!(o.finish_reason.as_deref(), Some("tool_use"));
        assert_eq!(o.output_chars, 3 + 8 + 7);
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(24),
                output_tokens: Some(30),
                reasoning_tokens: None,
                cached_input_tokens: Some(4),
            }
        );
        assert_eq!(o.error, None);

        let mut d = Anthropic::default();
        let mut o = Observed::default();
        d.feed_response(
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"},"request_id":"req_1"}"#,
            &mut o,
        );
        assert_eq!(o.error.as_deref(), Some("rate_limit_error"));
        assert!(o.terminal);
        assert_eq!(o.usage, Usage::default());
    }

    #[test]
    fn survives_garbage() {
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        d.feed_request(b"{not json", &mut o);
        d.feed_response(b"\x00\xff", &mut o);
        d.feed_response(b"[1,2]", &mut o);
        for (event, data) in [
            ("message_start", r#"{"type":"message_start","message":[1]}"#),
            (
                "message_start",
                r#"{"type":"message_start","message":{"usage":"x","model":7}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","delta":"x"}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":5}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","content_block":null}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":[],"usage":{"output_tokens":-1}}"#,
            ),
            ("ping", ""),
            ("x", "not json"),
            ("x", "[]"),
            ("x", "42"),
        ] {
            assert_eq!(
                d.feed_event(&ev(event, data), &mut o),
                OutputKind::None,
                "{data}"
            );
        }
        assert_eq!(o, Observed::default());
    }

    /// A streamed answer with text and two parallel `tool_use` blocks: one call per block
    /// start, arguments under the block's index, counted as the text they are.
    #[test]
    fn streamed_parallel_tool_use() {
        use crate::llm::test_support::assert_tools;
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        let frames = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":400,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Paris\"}"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":1}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01B","name":"get_time","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":2}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":90}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        for (name, data) in frames {
            d.feed_event(&ev(name, data), &mut o);
        }
        assert_tools(
            &o,
            2,
            &["get_weather", "get_time"],
            &["toolu_01A", "toolu_01B"],
        );
        assert_eq!(o.tools.indexes, [1, 2]);
        assert_eq!(o.output_chars, 9 + 17 + 2);
        assert_eq!(o.finish_reason.as_deref(), Some("tool_use"));
        assert!(o.terminal);
    }

    #[test]
    fn whole_response_tool_use_and_bounds() {
        use crate::llm::test_support::{assert_tools, long_tool_id, long_tool_name};
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        d.feed_response(
            br#"{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"On it."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}},{"type":"tool_use","id":"toolu_2","name":"get_weather","input":{}},{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"x"}}],"stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":50}}"#,
            &mut o,
        );
        // The server tool ran at Anthropic: not a call of the client's.
        assert_tools(&o, 2, &["get_weather"], &["toolu_1", "toolu_2"]);
        assert_eq!(o.output_chars, 6 + 16);
        assert_eq!(o.finish_reason.as_deref(), Some("tool_use"));

        let mut o = Observed::default();
        let (name, id) = (long_tool_name(), long_tool_id());
        d.feed_event(
            &ev(
                "content_block_start",
                &format!(
                    r#"{{"type":"content_block_start","index":0,"content_block":{{"type":"tool_use","id":"{id}","name":"{name}","input":{{}}}}}}"#
                ),
            ),
            &mut o,
        );
        assert_eq!(o.tools.calls, 1);
        assert!(o.tools.call_ids.is_empty());
        assert!(o.tools.names[0].len() <= crate::llm::MAX_FIELD_BYTES);
    }

    #[test]
    fn tool_use_garbage_never_panics() {
        let mut d = Anthropic::default();
        let mut o = Observed::default();
        for data in [
            r#"{"type":"content_block_start","index":-1,"content_block":{"type":"tool_use","id":7,"name":[],"input":"x"}}"#,
            r#"{"type":"content_block_start","index":99999999999,"content_block":{"type":"tool_use"}}"#,
            r#"{"type":"content_block_start","content_block":"tool_use"}"#,
            r#"{"type":"content_block_delta","index":"1","delta":{"type":"input_json_delta","partial_json":5}}"#,
        ] {
            d.feed_event(&ev("content_block_start", data), &mut o);
        }
        d.feed_response(
            br#"{"content":[{"type":"tool_use","input":null},"tool_use",null]}"#,
            &mut o,
        );
        // Each tool_use block is a call, whatever its fields.
        assert_eq!(o.tools.calls, 3);
        assert!(o.tools.names.is_empty() && o.tools.call_ids.is_empty());
        assert_eq!(o.output_chars, 0);
    }
}
