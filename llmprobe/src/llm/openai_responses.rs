//! The OpenAI Responses API dialect (`POST /v1/responses`), as spoken by OpenAI, Azure OpenAI
//! and the servers that copy it. Streams are typed SSE events (`response.output_text.delta`,
//! `response.completed`, ...); a non-streamed call returns one Response object.

use serde_json::Value;

use super::json::{self, Body, Event, chars};
use super::typed::{
    ErrorView, List, Scalar, UsageView, as_str, as_u64, items, json_object, nonempty,
};
use super::{Observed, OutputKind, ProviderDialect, Usage};
use crate::protocol::http1::RequestHead;

/// The dialect.
pub struct OpenAiResponses;

/// Recognises Responses API calls: a POST to `.../responses` (not `.../responses/{id}/cancel`).
pub fn detect(head: &RequestHead) -> Option<Box<dyn ProviderDialect>> {
    if head.method != "POST" {
        return None;
    }
    let path = super::route_path(head);
    if path.ends_with("/responses") || path == "responses" {
        Some(Box::new(OpenAiResponses))
    } else {
        None
    }
}

json_object! {
    /// A stream event's data.
    struct StreamData<'a> {
        "type" => ty: Scalar<'a>,
        "code" => code: Scalar<'a>,
        "delta" => delta: Scalar<'a>,
        "output_index" => output_index: Scalar<'a>,
        "item" => item: Box<OutputItem<'a>>,
        "response" => response: Box<Response<'a>>,
        "error" => error: Box<ErrorView<'a>>,
    }
}

json_object! {
    /// A Response object: inside lifecycle events, or a whole body (which may also be an
    /// `{"error":{...}}` object).
    struct Response<'a> {
        "object" => object: Scalar<'a>,
        "model" => model: Scalar<'a>,
        "id" => id: Scalar<'a>,
        "usage" => usage: Box<UsageView<'a>>,
        "error" => error: Box<ErrorView<'a>>,
        "status" => status: Scalar<'a>,
        "incomplete_details" => incomplete_details: IncompleteDetails<'a>,
        "output" => output: List<OutputItem<'a>>,
    }
}

json_object! {
    /// `incomplete_details`.
    struct IncompleteDetails<'a> {
        "reason" => reason: Scalar<'a>,
    }
}

json_object! {
    /// One of a Response's `output` items.
    struct OutputItem<'a> {
        "type" => ty: Scalar<'a>,
        "call_id" => call_id: Scalar<'a>,
        "name" => name: Scalar<'a>,
        "content" => content: List<Part<'a>>,
        "summary" => summary: List<Part<'a>>,
        "arguments" => arguments: Scalar<'a>,
        "input" => input: Scalar<'a>,
    }
}

/// The tool an output item calls, when it is a tool call the client runs and answers (with a
/// `*_call_output` item): `function_call` and `custom_tool_call` (by their `name`), and the
/// other `*_call` items that carry a `call_id` (`computer_call`, `local_shell_call`,
/// `shell_call`, `apply_patch_call`: named by their type). Tools the server runs itself
/// (`web_search_call`, `file_search_call`, `code_interpreter_call`, `mcp_call`, ...) have no
/// `call_id` and are not tool calls of the response.
fn tool_call_of<'s>(item: &'s OutputItem<'_>) -> Option<(Option<&'s str>, Option<&'s str>)> {
    let ty = as_str(&item.ty)?;
    let call_id = nonempty(&item.call_id);
    match ty {
        "function_call" | "custom_tool_call" => Some((call_id, nonempty(&item.name))),
        _ => {
            let kind = ty.strip_suffix("_call").filter(|k| !k.is_empty())?;
            call_id?;
            Some((call_id, nonempty(&item.name).or(Some(kind))))
        }
    }
}

json_object! {
    /// One part of an output item's `content` or `summary`.
    struct Part<'a> {
        "text" => text: Scalar<'a>,
        "refusal" => refusal: Scalar<'a>,
    }
}

/// Reads a Responses API `usage` object into `out`.
fn read_usage(usage: &UsageView<'_>, out: &mut Usage) {
    if !usage.is_object {
        return;
    }
    if let Some(n) = as_u64(&usage.input_tokens) {
        out.input_tokens = Some(n);
    }
    if let Some(n) = as_u64(&usage.output_tokens) {
        out.output_tokens = Some(n);
    }
    if let Some(n) = usage
        .output_details
        .as_ref()
        .and_then(|d| as_u64(&d.reasoning_tokens))
    {
        out.reasoning_tokens = Some(n);
    }
    if let Some(n) = usage
        .input_details
        .as_ref()
        .and_then(|d| as_u64(&d.cached_tokens))
    {
        out.cached_input_tokens = Some(n);
    }
}

/// Characters of prompt text in `input`: a string, or items whose `content` is a string or a list
/// of parts with `text` (tool outputs count their `output` string).
fn input_chars(v: &Value) -> u64 {
    match v {
        Value::String(s) => chars(s),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => chars(s),
                Value::Object(_) => {
                    let content = match item.get("content") {
                        Some(Value::String(s)) => chars(s),
                        parts => json::parts_text_chars(parts),
                    };
                    content + item.get("output").and_then(Value::as_str).map_or(0, chars)
                }
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// The error code of an `error` object or event: `code`, else `type`.
fn error_code(code: &Option<Scalar<'_>>, ty: &Option<Scalar<'_>>) -> Option<String> {
    nonempty(code).or_else(|| nonempty(ty)).map(str::to_owned)
}

impl OpenAiResponses {
    /// Reads a Response object (from a lifecycle event or a whole body): model, id, usage, and,
    /// once it has ended, its status and error.
    fn read_response(&self, r: &Response<'_>, out: &mut Observed) {
        if !r.is_object {
            return;
        }
        if let Some(m) = nonempty(&r.model) {
            super::set_text(&mut out.response_model, m);
        }
        if let Some(id) = nonempty(&r.id) {
            out.response_id.get_or_insert_with(|| id.to_owned());
        }
        if let Some(usage) = &r.usage {
            read_usage(usage, &mut out.usage);
        }
        if let Some(e) = r.error.as_ref().filter(|e| e.is_object) {
            out.error = Some(error_code(&e.code, &e.ty).unwrap_or_else(|| "failed".to_owned()));
        }
        match as_str(&r.status) {
            Some("incomplete") => {
                out.finish_reason = Some(
                    r.incomplete_details
                        .as_ref()
                        .and_then(|d| nonempty(&d.reason))
                        .unwrap_or("incomplete")
                        .to_owned(),
                );
            }
            Some(st @ ("completed" | "failed" | "cancelled")) => {
                super::set_text(&mut out.finish_reason, st);
            }
            _ => {}
        }
    }

    /// Counts the output text of a whole Response: message text and refusals, reasoning
    /// summaries and text, tool-call arguments.
    fn read_output(&self, r: &Response<'_>, out: &mut Observed) {
        for item in items(&r.output) {
            for part in items(&item.content).iter().chain(items(&item.summary)) {
                for t in [&part.text, &part.refusal] {
                    if let Some(t) = as_str(t) {
                        out.note_output(t);
                    }
                }
            }
            if let Some((id, name)) = tool_call_of(item) {
                out.note_tool_call(None, id, name);
                // A custom tool's input is free text, as its stream's deltas were.
                if as_str(&item.ty) == Some("custom_tool_call")
                    && let Some(i) = nonempty(&item.input)
                {
                    out.note_tool_args(None, i);
                }
            }
            if let Some(a) = nonempty(&item.arguments) {
                out.note_tool_args(None, a);
            }
        }
    }
}

impl ProviderDialect for OpenAiResponses {
    fn provider(&self) -> &'static str {
        "openai"
    }

    fn api(&self) -> &'static str {
        "openai.responses"
    }

    fn operation(&self) -> &'static str {
        "chat"
    }

    fn on_request_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = json::request_body(body, out) else {
            return;
        };
        let mut n = v.get("input").map_or(0, input_chars);
        n += v
            .get("instructions")
            .and_then(Value::as_str)
            .map_or(0, chars);
        out.prompt_chars = n;
    }

    fn on_stream_event(&mut self, ev: &Event<'_>, out: &mut Observed) -> OutputKind {
        if ev.text.is_empty() {
            return OutputKind::None;
        }
        let v = ev.parse::<StreamData<'_>>().filter(|v| v.is_object);
        // The data's own `type` names the event; the SSE `event:` line is the fallback.
        let ty = v
            .as_ref()
            .and_then(|v| as_str(&v.ty))
            .or(ev.name)
            .unwrap_or("");
        if ty == "error" {
            let code = v.as_ref().and_then(|v| {
                error_code(&v.code, &v.ty)
                    .filter(|c| c != "error")
                    .or_else(|| v.error.as_ref().and_then(|e| error_code(&e.code, &e.ty)))
            });
            out.error = Some(code.unwrap_or_else(|| "error".to_owned()));
            return OutputKind::None;
        }
        let Some(v) = v.as_ref() else {
            return OutputKind::None;
        };
        let delta = || nonempty(&v.delta);
        let index = as_u64(&v.output_index).and_then(|i| u32::try_from(i).ok());
        match ty {
            "response.output_text.delta" | "response.refusal.delta" => {
                let Some(d) = delta() else {
                    return OutputKind::None;
                };
                out.note_output(d);
                OutputKind::Answer
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                let Some(d) = delta() else {
                    return OutputKind::None;
                };
                out.note_tool_args(index, d);
                OutputKind::Answer
            }
            // A tool call's item, when it starts and again when it is done (one call: its
            // `output_index`); its arguments came as deltas.
            "response.output_item.added" | "response.output_item.done" => {
                if let Some((id, name)) = v.item.as_deref().and_then(tool_call_of) {
                    out.note_tool_call(index, id, name);
                }
                OutputKind::None
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                let Some(d) = delta() else {
                    return OutputKind::None;
                };
                out.note_reasoning(d);
                OutputKind::Reasoning
            }
            "response.created" | "response.in_progress" | "response.queued" => {
                if let Some(r) = &v.response {
                    self.read_response(r, out);
                }
                OutputKind::None
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(r) = &v.response {
                    self.read_response(r, out);
                }
                if out.finish_reason.is_none() {
                    out.finish_reason = Some(
                        match ty {
                            "response.completed" => "completed",
                            "response.incomplete" => "incomplete",
                            _ => "failed",
                        }
                        .to_owned(),
                    );
                }
                if ty == "response.failed" && out.error.is_none() {
                    out.error = Some("failed".to_owned());
                }
                out.terminal = true;
                OutputKind::None
            }
            _ => OutputKind::None,
        }
    }

    fn on_response_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = body.parse::<Response<'_>>() else {
            return;
        };
        if as_str(&v.object) == Some("response") || v.output.is_some() {
            self.read_response(&v, out);
            self.read_output(&v, out);
        } else if let Some(e) = v.error.as_ref().filter(|e| e.is_object) {
            // An API error body: `{"error":{"message","type","param","code"}}`.
            out.error = Some(
                nonempty(&e.ty)
                    .or_else(|| nonempty(&e.code))
                    .unwrap_or("error")
                    .to_owned(),
            );
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
        let d = detect(&head("POST", "/v1/responses")).expect("responses");
        assert_eq!(
            (d.provider(), d.api(), d.operation()),
            ("openai", "openai.responses", "chat")
        );
        for p in [
            "/responses",
            "/v1/responses/",
            "/openai/responses?api-version=2025-04-01-preview",
            "/openai/v1/responses",
        ] {
            assert!(detect(&head("POST", p)).is_some(), "{p}");
        }
        assert!(detect(&head("GET", "/v1/responses/resp_123")).is_none());
        assert!(detect(&head("GET", "/v1/responses")).is_none());
        assert!(detect(&head("POST", "/v1/responses/resp_123/cancel")).is_none());
        assert!(detect(&head("POST", "/v1/responses/resp_123")).is_none());
        assert!(detect(&head("POST", "/v1/responses/input_tokens")).is_none());
        assert!(detect(&head("POST", "/v1/chat/completions")).is_none());
        assert!(detect(&head("POST", "/v1/myresponses")).is_none());
    }

    #[test]
    fn reads_requests() {
        let mut d = OpenAiResponses;
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"gpt-5","instructions":"Be terse.","input":"Tell me a joke","stream":true,"reasoning":{"effort":"low","summary":"auto"}}"#,
            &mut o,
        );
        assert_eq!(o.request_model.as_deref(), Some("gpt-5"));
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 9 + 14);

        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"gpt-4.1","input":[{"role":"user","content":"hi"},{"type":"message","role":"user","content":[{"type":"input_text","text":"abc"},{"type":"input_image","image_url":"data:..."}]},{"type":"function_call_output","call_id":"c1","output":"42"}]}"#,
            &mut o,
        );
        assert_eq!(o.stream, Some(false));
        assert_eq!(o.prompt_chars, 2 + 3 + 2);
    }

    #[test]
    fn reads_the_model_of_a_request_cut_by_a_gap() {
        let mut d = OpenAiResponses;
        let mut o = Observed::default();
        d.feed_request(
            b"{\"model\":\"gpt-5\",\"stream\":true,\"input\":[{\"role\":\"user\",\"content\":\"w0\0w9\"}]}",
            &mut o,
        );
        assert_eq!(o.request_model.as_deref(), Some("gpt-5"));
        assert_eq!(o.stream, Some(true));
    }

    #[test]
    fn reads_a_stream_reasoning_then_answer() {
        let mut d = OpenAiResponses;
        let mut o = Observed::default();
        let frames = [
            (
                "response.created",
                r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","created_at":1741290958,"status":"in_progress","error":null,"incomplete_details":null,"instructions":null,"model":"o4-mini-2025-04-16","output":[],"usage":null}}"#,
                OutputKind::None,
            ),
            (
                "response.in_progress",
                r#"{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","status":"in_progress","model":"o4-mini-2025-04-16","output":[],"usage":null}}"#,
                OutputKind::None,
            ),
            (
                "response.output_item.added",
                r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}"#,
                OutputKind::None,
            ),
            (
                "response.reasoning_summary_part.added",
                r#"{"type":"response.reasoning_summary_part.added","sequence_number":3,"item_id":"rs_1","output_index":0,"summary_index":0,"part":{"type":"summary_text","text":""}}"#,
                OutputKind::None,
            ),
            (
                "response.reasoning_summary_text.delta",
                r#"{"type":"response.reasoning_summary_text.delta","sequence_number":4,"item_id":"rs_1","output_index":0,"summary_index":0,"delta":"**Thinking"}"#,
                OutputKind::Reasoning,
            ),
            (
                "response.reasoning_summary_text.done",
                r#"{"type":"response.reasoning_summary_text.done","sequence_number":5,"item_id":"rs_1","output_index":0,"summary_index":0,"text":"**Thinking"}"#,
                OutputKind::None,
            ),
            (
                "response.output_item.added",
                r#"{"type":"response.output_item.added","sequence_number":6,"output_index":1,"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],"role":"assistant"}}"#,
                OutputKind::None,
            ),
            (
                "response.content_part.added",
                r#"{"type":"response.content_part.added","sequence_number":7,"item_id":"msg_1","output_index":1,"content_index":0,"part":{"type":"output_text","annotations":[],"text":""}}"#,
                OutputKind::None,
            ),
            (
                "response.output_text.delta",
                r#"{"type":"response.output_text.delta","sequence_number":8,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"Hi","obfuscation":"xY1"}"#,
                OutputKind::Answer,
            ),
            (
                "response.output_text.delta",
                r#"{"type":"response.output_text.delta","sequence_number":9,"item_id":"msg_1","output_index":1,"content_index":0,"delta":" there!"}"#,
                OutputKind::Answer,
            ),
            (
                "response.output_text.done",
                r#"{"type":"response.output_text.done","sequence_number":10,"item_id":"msg_1","output_index":1,"content_index":0,"text":"Hi there!"}"#,
                OutputKind::None,
            ),
            (
                "response.completed",
                r#"{"type":"response.completed","sequence_number":11,"response":{"id":"resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654","object":"response","status":"completed","error":null,"incomplete_details":null,"model":"o4-mini-2025-04-16","output":[{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there!","annotations":[]}]}],"usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":5},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":48}}}"#,
                OutputKind::None,
            ),
        ];
        for (i, (event, data, kind)) in frames.iter().enumerate() {
            assert_eq!(d.feed_event(&ev(event, data), &mut o), *kind, "frame {i}");
            assert_eq!(o.terminal, i == frames.len() - 1, "frame {i}");
        }
        assert_eq!(o.response_model.as_deref(), Some("o4-mini-2025-04-16"));
        assert_eq!(
            o.response_id.as_deref(),
            Some("resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654")
        );
        assert_eq!(o.finish_reason.as_deref(), Some("completed"));
        assert_eq!(o.output_chars, 10 + 2 + 7);
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(37),
                output_tokens: Some(11),
                reasoning_tokens: Some(64),
                cached_input_tokens: Some(5),
            }
        );
        assert_eq!(o.error, None);
    }

    #[test]
    fn tool_calls_refusals_and_reasoning_text() {
        let mut d = OpenAiResponses;
        let mut o = Observed::default();
        assert_eq!(
            d.feed_event(&ev("response.reasoning_text.delta", r#"{"type":"response.reasoning_text.delta","item_id":"rs","output_index":0,"content_index":0,"delta":"hmm"}"#), &mut o),
            OutputKind::Reasoning
        );
        assert_eq!(
            d.feed_event(&ev("response.function_call_arguments.delta", r#"{"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":1,"delta":"{\"a\":"}"#), &mut o),
            OutputKind::Answer
        );
        assert_eq!(
            d.feed_event(&ev("response.refusal.delta", r#"{"type":"response.refusal.delta","item_id":"m","output_index":2,"content_index":0,"delta":"No"}"#), &mut o),
            OutputKind::Answer
        );
        // An empty delta carries nothing.
        assert_eq!(
            d.feed_event(
                &ev(
                    "response.output_text.delta",
                    r#"{"type":"response.output_text.delta","delta":""}"#
                ),
                &mut o
            ),
            OutputKind::None
        );
        // Without an `event:` line the data's type still names the event.
        let untyped = StreamEvent {
            event: None,
            data: r#"{"type":"response.output_text.delta","delta":"ok"}"#.into(),
            id: None,
        };
        assert_eq!(d.feed_event(&untyped, &mut o), OutputKind::Answer);
        assert_eq!(o.output_chars, 3 + 5 + 2 + 2);
    }

    #[test]
    fn incomplete_and_failed_responses() {
        let mut d = OpenAiResponses;
        let mut o = Observed::default();
        d.feed_event(&ev("response.incomplete", r#"{"type":"response.incomplete","response":{"id":"resp_1","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-5","usage":{"input_tokens":10,"output_tokens":16,"output_tokens_details":{"reasoning_tokens":16}}}}"#), &mut o);
        assert!(o.terminal);
        assert_eq!(o.finish_reason.as_deref(), Some("max_output_tokens"));
        assert_eq!(o.usage.output_tokens, Some(16));
        assert_eq!(o.error, None);

        let mut o = Observed::default();
        d.feed_event(&ev("response.failed", r#"{"type":"response.failed","response":{"id":"resp_2","status":"failed","error":{"code":"server_error","message":"The model failed to generate a response."},"model":"gpt-5","usage":null}}"#), &mut o);
        assert!(o.terminal);
        assert_eq!(o.error.as_deref(), Some("server_error"));
        assert_eq!(o.finish_reason.as_deref(), Some("failed"));

        let mut o = Observed::default();
        d.feed_event(
            &ev(
                "response.failed",
                r#"{"type":"response.failed","response":{"status":"failed"}}"#,
            ),
            &mut o,
        );
        assert_eq!(o.error.as_deref(), Some("failed"));
    }

    #[test]
    fn error_events() {
        let mut d = OpenAiResponses;
        let mut o = Observed::default();
        d.feed_event(&ev("error", r#"{"type":"error","code":"rate_limit_exceeded","message":"Slow down","param":null,"sequence_number":3}"#), &mut o);
        assert_eq!(o.error.as_deref(), Some("rate_limit_exceeded"));
        assert!(!o.terminal);

        let mut o = Observed::default();
        d.feed_event(&ev("error", r#"{"type":"error","error":{"type":"invalid_request_error","code":null,"message":"bad"}}"#), &mut o);
        assert_eq!(o.error.as_deref(), Some("invalid_request_error"));

        let mut o = Observed::default();
        d.feed_event(&ev("error", "not json"), &mut o);
        assert_eq!(o.error.as_deref(), Some("error"));
    }

    #[test]
    fn reads_non_stream_bodies() {
        let mut d = OpenAiResponses;
        let mut o = Observed::default();
        d.feed_response(
            br#"{"id":"resp_9","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"model":"gpt-5-2025-08-07","output":[{"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"Plan"}]},{"type":"function_call","id":"fc_1","call_id":"c1","name":"f","arguments":"{}"},{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove.","annotations":[]}]}],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":123}}"#,
            &mut o,
        );
        assert!(o.terminal);
        assert_eq!(o.response_model.as_deref(), Some("gpt-5-2025-08-07"));
        assert_eq!(o.response_id.as_deref(), Some("resp_9"));
        assert_eq!(o.finish_reason.as_deref(), Some("completed"));
        assert_eq!(o.output_chars, 4 + 2 + 20);
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(36),
                output_tokens: Some(87),
                reasoning_tokens: Some(64),
                cached_input_tokens: Some(0),
            }
        );
        assert_eq!(o.error, None);

        let mut o = Observed::default();
        d.feed_response(
            br#"{"error":{"message":"Invalid model","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#,
            &mut o,
        );
        assert_eq!(o.error.as_deref(), Some("invalid_request_error"));
    }

    #[test]
    fn survives_garbage() {
        let mut d = OpenAiResponses;
        let mut o = Observed::default();
        d.feed_request(b"{not json", &mut o);
        d.feed_response(b"\x00\xff", &mut o);
        for (event, data) in [
            ("response.output_text.delta", "{not json"),
            (
                "response.output_text.delta",
                r#"{"type":"response.output_text.delta","delta":5}"#,
            ),
            ("response.completed", r#"[1,2]"#),
            ("message", r#"{"type":5,"response":"x"}"#),
            (
                "response.created",
                r#"{"type":"response.created","response":{"model":5,"usage":[1],"status":7}}"#,
            ),
        ] {
            assert_eq!(
                d.feed_event(&ev(event, data), &mut o),
                OutputKind::None,
                "{data}"
            );
        }
        assert_eq!(o, Observed::default());
    }

    /// Two function calls streamed: each item noted when added and again when done (one call
    /// per `output_index`), arguments from the deltas only.
    #[test]
    fn streamed_function_calls() {
        use crate::llm::test_support::assert_tools;
        let mut d = OpenAiResponses;
        let mut o = Observed::default();
        let frames = [
            (
                "response.created",
                r#"{"type":"response.created","response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-4.1","output":[]}}"#,
            ),
            (
                "response.output_item.added",
                r#"{"type":"response.output_item.added","output_index":0,"item":{"id":"fc_1","type":"function_call","status":"in_progress","arguments":"","call_id":"call_A","name":"get_weather"}}"#,
            ),
            (
                "response.function_call_arguments.delta",
                r#"{"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":0,"delta":"{\"city\":"}"#,
            ),
            (
                "response.function_call_arguments.delta",
                r#"{"type":"response.function_call_arguments.delta","item_id":"fc_1","output_index":0,"delta":"\"Paris\"}"}"#,
            ),
            (
                "response.function_call_arguments.done",
                r#"{"type":"response.function_call_arguments.done","item_id":"fc_1","output_index":0,"arguments":"{\"city\":\"Paris\"}"}"#,
            ),
            (
                "response.output_item.done",
                r#"{"type":"response.output_item.done","output_index":0,"item":{"id":"fc_1","type":"function_call","status":"completed","arguments":"{\"city\":\"Paris\"}","call_id":"call_A","name":"get_weather"}}"#,
            ),
            (
                "response.output_item.added",
                r#"{"type":"response.output_item.added","output_index":1,"item":{"id":"ctc_1","type":"custom_tool_call","call_id":"call_B","name":"run_sql","input":""}}"#,
            ),
            (
                "response.custom_tool_call_input.delta",
                r#"{"type":"response.custom_tool_call_input.delta","output_index":1,"item_id":"ctc_1","delta":"select 1"}"#,
            ),
            (
                "response.output_item.added",
                r#"{"type":"response.output_item.added","output_index":2,"item":{"id":"ws_1","type":"web_search_call","status":"in_progress"}}"#,
            ),
            (
                "response.completed",
                r#"{"type":"response.completed","response":{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1","output":[{"type":"function_call","call_id":"call_A","name":"get_weather","arguments":"{\"city\":\"Paris\"}"}],"usage":{"input_tokens":50,"output_tokens":20}}}"#,
            ),
        ];
        for (name, data) in frames {
            d.feed_event(&ev(name, data), &mut o);
        }
        assert_tools(&o, 2, &["get_weather", "run_sql"], &["call_A", "call_B"]);
        assert_eq!(o.output_chars, 16 + 8);
        assert_eq!(o.finish_reason.as_deref(), Some("completed"));
    }

    #[test]
    fn whole_response_tool_calls() {
        use crate::llm::test_support::{assert_tools, long_tool_id, long_tool_name};
        let mut d = OpenAiResponses;
        let mut o = Observed::default();
        d.feed_response(
            br#"{"id":"resp_2","object":"response","status":"completed","model":"gpt-4.1","output":[{"type":"reasoning","summary":[]},{"type":"function_call","id":"fc_1","call_id":"call_A","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},{"type":"function_call","id":"fc_2","call_id":"call_B","name":"get_weather","arguments":"{}"},{"type":"computer_call","id":"cu_1","call_id":"call_C","action":{"type":"screenshot"}},{"type":"web_search_call","id":"ws_1","status":"completed"},{"type":"custom_tool_call","call_id":"call_D","name":"run_sql","input":"select 1"}]}"#,
            &mut o,
        );
        assert_tools(
            &o,
            4,
            &["get_weather", "computer", "run_sql"],
            &["call_A", "call_B", "call_C", "call_D"],
        );
        assert_eq!(o.output_chars, 16 + 2 + 8);

        let mut o = Observed::default();
        let (name, id) = (long_tool_name(), long_tool_id());
        d.feed_response(
            format!(r#"{{"object":"response","output":[{{"type":"function_call","call_id":"{id}","name":"{name}","arguments":""}},7,{{"type":7}},{{"type":"_call","call_id":"x"}},{{"type":"shell_call"}}]}}"#).as_bytes(),
            &mut o,
        );
        assert_eq!(o.tools.calls, 1);
        assert!(o.tools.call_ids.is_empty());
        assert!(o.tools.names[0].len() <= crate::llm::MAX_FIELD_BYTES);
        let mut o = Observed::default();
        d.feed_event(
            &ev(
                "response.output_item.added",
                r#"{"type":"response.output_item.added","output_index":-3,"item":"function_call"}"#,
            ),
            &mut o,
        );
        assert_eq!(o.tools.calls, 0);
    }
}
