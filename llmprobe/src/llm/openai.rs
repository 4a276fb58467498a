//! The OpenAI-compatible dialect: chat completions, legacy completions and embeddings, as spoken
//! by OpenAI, DeepSeek, Qwen (DashScope compatible mode), vLLM, SGLang, Ollama's `/v1`, and the
//! gateways in front of them. Recognised by method and path, not by host.

use serde_json::Value;

use super::json::{self, Body, Event};
use super::typed::{
    ErrorView, List, Scalar, Skip, ToolCall, ToolFunction, UsageView, as_str, as_u64, items,
    json_object, nonempty,
};
use super::{Observed, OutputKind, ProviderDialect, Usage};
use crate::protocol::http1::RequestHead;

/// Which OpenAI API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiApi {
    /// `POST .../chat/completions`.
    ChatCompletions,
    /// `POST .../completions` (legacy text completions).
    Completions,
    /// `POST .../embeddings`.
    Embeddings,
}

/// The dialect.
pub struct OpenAi {
    api: OpenAiApi,
}

/// The chat-completions dialect, for requests recognised by body shape.
pub fn chat_dialect() -> Box<dyn ProviderDialect> {
    Box::new(OpenAi {
        api: OpenAiApi::ChatCompletions,
    })
}

/// Recognises OpenAI-compatible requests by method and path.
pub fn detect(head: &RequestHead) -> Option<Box<dyn ProviderDialect>> {
    if head.method != "POST" {
        return None;
    }
    let path = super::route_path(head);
    let api = if path.ends_with("/chat/completions") || path == "chat/completions" {
        OpenAiApi::ChatCompletions
    } else if path.ends_with("/completions") {
        OpenAiApi::Completions
    } else if path.ends_with("/embeddings") {
        OpenAiApi::Embeddings
    } else {
        return None;
    };
    Some(Box::new(OpenAi { api }))
}

json_object! {
    /// A chunk of a stream or a whole response.
    struct Chunk<'a> {
        "model" => model: Scalar<'a>,
        "id" => id: Scalar<'a>,
        "usage" => usage: Box<UsageView<'a>>,
        "error" => error: Box<ErrorView<'a>>,
        "choices" => choices: List<Choice<'a>>,
    }
}

json_object! {
    /// One of `choices`.
    struct Choice<'a> {
        "index" => index: Scalar<'a>,
        "finish_reason" => finish_reason: Scalar<'a>,
        "delta" => delta: Message<'a>,
        "message" => message: Box<Message<'a>>,
        "text" => text: Scalar<'a>,
    }
}

json_object! {
    /// A choice's `delta` (streamed) or `message` (whole).
    struct Message<'a> {
        "reasoning_content" => reasoning_content: Scalar<'a>,
        "reasoning" => reasoning: Scalar<'a>,
        "reasoning_details" => reasoning_details: List<Skip>,
        "content" => content: Scalar<'a>,
        "tool_calls" => tool_calls: List<ToolCall<'a>>,
        "function_call" => function_call: ToolFunction<'a>,
    }
}

/// The slot of a choice's legacy `function_call` among its streamed tool-call indexes (one per
/// choice, after every `tool_calls` index).
const LEGACY_FUNCTION_CALL: u64 = 1023;

/// Reads an OpenAI `usage` object (with DeepSeek's cache fields) into `out`.
fn read_usage(usage: &UsageView<'_>, out: &mut Usage) {
    if !usage.is_object {
        return;
    }
    if let Some(n) = as_u64(&usage.prompt_tokens) {
        out.input_tokens = Some(n);
    }
    if let Some(n) = as_u64(&usage.completion_tokens) {
        out.output_tokens = Some(n);
    }
    if let Some(n) = usage
        .completion_details
        .as_ref()
        .and_then(|d| as_u64(&d.reasoning_tokens))
    {
        out.reasoning_tokens = Some(n);
    }
    if let Some(n) = usage
        .prompt_details
        .as_ref()
        .and_then(|d| as_u64(&d.cached_tokens))
        .or_else(|| as_u64(&usage.prompt_cache_hit_tokens))
    {
        out.cached_input_tokens = Some(n);
    }
}

/// Characters of text in a message `content` (a string or an array of parts).
fn content_chars(c: &Value) -> u64 {
    match c {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(parts) => parts
            .iter()
            .map(|p| {
                p.get("text")
                    .map(content_chars)
                    .unwrap_or_else(|| content_chars(p))
            })
            .sum(),
        _ => 0,
    }
}

/// The `error.type` (else `error.code`, when there is no `type` at all) of a response object
/// that carries a non-null `error`; `error` when neither is a string.
fn error_of(chunk: &Chunk<'_>) -> Option<String> {
    let e = chunk.error.as_ref().filter(|e| !e.is_null)?;
    let name = if e.ty.is_some() {
        as_str(&e.ty)
    } else {
        as_str(&e.code)
    };
    Some(name.unwrap_or("error").to_owned())
}

/// Notes one tool call (or one delta of a streamed one) and its argument text. A streamed
/// delta with neither an index, an id nor a name continues the call before it: only its
/// arguments are noted.
fn note_call(
    out: &mut Observed,
    streamed: bool,
    index: Option<u32>,
    id: Option<&str>,
    f: Option<&ToolFunction<'_>>,
) {
    let name = f.and_then(|f| nonempty(&f.name));
    if !streamed || index.is_some() || id.is_some() || name.is_some() {
        out.note_tool_call(index, id, name);
    }
    if let Some(a) = f.and_then(|f| nonempty(&f.arguments)) {
        out.note_tool_args(index, a);
    }
}

impl OpenAi {
    /// Reads the choices of a chunk or a whole response; returns the most output-like kind seen.
    fn read_choices(&self, v: &Chunk<'_>, out: &mut Observed) -> OutputKind {
        let mut kind = OutputKind::None;
        for c in items(&v.choices) {
            if let Some(fr) = nonempty(&c.finish_reason) {
                super::set_text(&mut out.finish_reason, fr);
            }
            // Streamed chunks carry `delta`, whole responses `message`, legacy completions `text`.
            let streamed = c.delta.is_some();
            let choice = as_u64(&c.index).unwrap_or(0);
            if let Some(m) = c.delta.as_ref().or(c.message.as_deref()) {
                for r in [&m.reasoning_content, &m.reasoning] {
                    if let Some(t) = nonempty(r) {
                        out.note_reasoning(t);
                        kind = OutputKind::Reasoning;
                    }
                }
                if !items(&m.reasoning_details).is_empty() {
                    kind = OutputKind::Reasoning;
                }
                if let Some(t) = nonempty(&m.content) {
                    out.note_output(t);
                    kind = OutputKind::Answer;
                }
                let calls = items(&m.tool_calls);
                if !calls.is_empty() {
                    for call in calls.iter().filter(|c| c.is_object) {
                        // A streamed call comes in deltas under its `index`; a whole message's
                        // calls are one each.
                        let index = as_u64(&call.index)
                            .filter(|_| streamed)
                            .and_then(|i| super::tool_index(choice, i));
                        let f = call.function.as_ref();
                        note_call(out, streamed, index, nonempty(&call.id), f);
                    }
                    kind = OutputKind::Answer;
                }
                // The legacy `functions` API: one call per choice, no id.
                if let Some(f) = m.function_call.as_ref().filter(|f| f.is_object) {
                    let index =
                        super::tool_index(choice, LEGACY_FUNCTION_CALL).filter(|_| streamed);
                    note_call(out, streamed, index, None, Some(f));
                    kind = OutputKind::Answer;
                }
            }
            if let Some(t) = nonempty(&c.text) {
                out.note_output(t);
                kind = OutputKind::Answer;
            }
        }
        kind
    }

    fn read_common(&self, v: &Chunk<'_>, out: &mut Observed) {
        if let Some(m) = nonempty(&v.model) {
            super::set_text(&mut out.response_model, m);
        }
        if let Some(id) = nonempty(&v.id) {
            out.response_id.get_or_insert_with(|| id.to_owned());
        }
        if let Some(usage) = &v.usage {
            read_usage(usage, &mut out.usage);
        }
        if let Some(e) = error_of(v) {
            out.error = Some(e);
        }
    }
}

impl ProviderDialect for OpenAi {
    fn provider(&self) -> &'static str {
        "openai"
    }

    fn api(&self) -> &'static str {
        match self.api {
            OpenAiApi::ChatCompletions => "openai.chat_completions",
            OpenAiApi::Completions => "openai.completions",
            OpenAiApi::Embeddings => "openai.embeddings",
        }
    }

    fn operation(&self) -> &'static str {
        match self.api {
            OpenAiApi::ChatCompletions => "chat",
            OpenAiApi::Completions => "text_completion",
            OpenAiApi::Embeddings => "embeddings",
        }
    }

    fn on_request_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = json::request_body(body, out) else {
            return;
        };
        let mut chars = 0;
        if let Some(msgs) = v.get("messages").and_then(Value::as_array) {
            for m in msgs {
                chars += m.get("content").map(content_chars).unwrap_or(0);
            }
        }
        for key in ["prompt", "input"] {
            match v.get(key) {
                Some(Value::String(p)) => chars += p.chars().count() as u64,
                Some(Value::Array(items)) => chars += items.iter().map(content_chars).sum::<u64>(),
                _ => {}
            }
        }
        out.prompt_chars = chars;
    }

    fn on_stream_event(&mut self, ev: &Event<'_>, out: &mut Observed) -> OutputKind {
        if ev.text == "[DONE]" {
            out.terminal = true;
            return OutputKind::None;
        }
        let Some(v) = ev.parse::<Chunk<'_>>() else {
            return OutputKind::None;
        };
        self.read_common(&v, out);
        if ev.name == Some("error") && out.error.is_none() {
            out.error = Some("error".to_owned());
        }
        self.read_choices(&v, out)
    }

    fn on_response_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = body.parse::<Chunk<'_>>() else {
            return;
        };
        self.read_common(&v, out);
        self.read_choices(&v, out);
        out.terminal = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::test_support::Feed;
    use crate::llm::test_support::head;
    use crate::protocol::StreamEvent;

    #[test]
    fn detects_by_path() {
        assert_eq!(
            detect(&head("POST", "/v1/chat/completions")).map(|d| d.api()),
            Some("openai.chat_completions")
        );
        assert_eq!(
            detect(&head("POST", "/compatible-mode/v1/chat/completions?x=1")).map(|d| d.api()),
            Some("openai.chat_completions")
        );
        assert_eq!(
            detect(&head("POST", "/v1/completions")).map(|d| d.operation()),
            Some("text_completion")
        );
        assert_eq!(
            detect(&head("POST", "/v1/embeddings")).map(|d| d.operation()),
            Some("embeddings")
        );
        assert!(detect(&head("GET", "/v1/chat/completions")).is_none());
        assert!(detect(&head("POST", "/v1/other")).is_none());
    }

    #[test]
    fn reads_request() {
        let mut d = OpenAi {
            api: OpenAiApi::ChatCompletions,
        };
        let mut o = Observed::default();
        d.feed_request(
            br#"{"messages":[{"role":"user","content":"hello"},{"role":"user","content":[{"type":"text","text":"abc"}]}],"model":"gpt-4o","stream":true}"#,
            &mut o,
        );
        assert_eq!(o.request_model.as_deref(), Some("gpt-4o"));
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 8);
    }

    #[test]
    fn reads_stream_chunks() {
        let mut d = OpenAi {
            api: OpenAiApi::ChatCompletions,
        };
        let mut o = Observed::default();
        let ev = |data: &str| StreamEvent {
            event: None,
            data: data.into(),
            id: None,
        };
        assert_eq!(
            d.feed_event(&ev(r#"{"id":"c1","model":"m-1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#), &mut o),
            OutputKind::None
        );
        assert_eq!(
            d.feed_event(&ev(r#"{"id":"c1","model":"m-1","choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}"#), &mut o),
            OutputKind::Reasoning
        );
        assert_eq!(
            d.feed_event(
                &ev(
                    r#"{"id":"c1","model":"m-1","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#
                ),
                &mut o
            ),
            OutputKind::Answer
        );
        assert_eq!(
            d.feed_event(&ev(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#), &mut o),
            OutputKind::Answer
        );
        d.feed_event(
            &ev(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#),
            &mut o,
        );
        d.feed_event(
            &ev(r#"{"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":3}}}"#),
            &mut o,
        );
        assert_eq!(d.feed_event(&ev("[DONE]"), &mut o), OutputKind::None);
        assert!(o.terminal);
        assert_eq!(o.finish_reason.as_deref(), Some("stop"));
        assert_eq!(o.response_model.as_deref(), Some("m-1"));
        assert_eq!(o.response_id.as_deref(), Some("c1"));
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(8),
                output_tokens: Some(9),
                reasoning_tokens: Some(3),
                cached_input_tokens: Some(2)
            }
        );
    }

    #[test]
    fn reads_the_model_of_a_request_cut_by_a_gap() {
        let mut d = OpenAi {
            api: OpenAiApi::ChatCompletions,
        };
        let mut o = Observed::default();
        d.feed_request(b"{\"model\":\"test-model\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"w0 w1\0w998 w999\"}]}", &mut o);
        assert_eq!(o.request_model.as_deref(), Some("test-model"));
        assert_eq!(o.stream, Some(true));
    }

    #[test]
    fn survives_garbage() {
        let mut d = OpenAi {
            api: OpenAiApi::ChatCompletions,
        };
        let mut o = Observed::default();
        d.feed_request(b"{not json", &mut o);
        d.feed_response(b"\x00\xff", &mut o);
        let ev = StreamEvent {
            event: None,
            data: r#"{"choices":"nope","usage":[1]}"#.into(),
            id: None,
        };
        assert_eq!(d.feed_event(&ev, &mut o), OutputKind::None);
        assert_eq!(
            o,
            Observed {
                ..Default::default()
            }
        );
    }

    /// Read as `Value::get` reads: a present `delta` wins over `message` even when it is null, a
    /// repeated key keeps its last value, mistyped fields and elements are skipped, escaped
    /// strings and keys are read, and an `error` that is not an object still marks an error.
    #[test]
    fn reads_fields_as_value_get_does() {
        let mut d = OpenAi {
            api: OpenAiApi::ChatCompletions,
        };
        let mut o = Observed::default();
        let ev = |data: &str| StreamEvent {
            event: None,
            data: data.into(),
            id: None,
        };
        assert_eq!(
            d.feed_event(
                &ev(r#"{"choices":[{"delta":null,"message":{"content":"x"}}]}"#),
                &mut o
            ),
            OutputKind::None
        );
        assert_eq!(
            d.feed_event(
                &ev(r#"{"choices":[7,{"message":{"content":["x"]},"text":"y\u00e9"}],"model":1,"model":"m\n","\u0069d":"i"}"#),
                &mut o
            ),
            OutputKind::Answer
        );
        assert_eq!(o.output_chars, 2);
        assert_eq!(o.response_model.as_deref(), Some("m\n"));
        assert_eq!(o.response_id.as_deref(), Some("i"));
        assert_eq!(o.error, None);
        d.feed_event(&ev(r#"{"error":"boom","usage":{"prompt_tokens":-1,"completion_tokens":2.0,"prompt_cache_hit_tokens":4}}"#), &mut o);
        assert_eq!(o.error.as_deref(), Some("error"));
        assert_eq!(
            o.usage,
            Usage {
                cached_input_tokens: Some(4),
                ..Usage::default()
            }
        );
        let mut o = Observed::default();
        d.feed_event(&ev(r#"{"error":{"type":null,"code":"c"}}"#), &mut o);
        assert_eq!(
            o.error.as_deref(),
            Some("error"),
            "a present type hides the code"
        );
        let mut o = Observed::default();
        d.feed_event(&ev(r#"{"error":{"code":"c"}}"#), &mut o);
        assert_eq!(o.error.as_deref(), Some("c"));
    }

    fn chat() -> OpenAi {
        OpenAi {
            api: OpenAiApi::ChatCompletions,
        }
    }

    fn data(d: &str) -> StreamEvent {
        crate::llm::test_support::data_event(d)
    }

    /// Two parallel calls streamed as the API does: each delta notes its call under its index,
    /// the id and name come once, the arguments count as output exactly as text would.
    #[test]
    fn streamed_parallel_tool_calls() {
        use crate::llm::test_support::assert_tools;
        let mut d = chat();
        let mut o = Observed::default();
        let frames = [
            r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_aB1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_cD2","type":"function","function":{"name":"get_time","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"tz\": \"CET\"}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":""}}]},"finish_reason":null}]}"#,
        ];
        for f in frames {
            assert_eq!(d.feed_event(&data(f), &mut o), OutputKind::Answer, "{f}");
        }
        d.feed_event(
            &data(r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#),
            &mut o,
        );
        d.feed_event(&data("[DONE]"), &mut o);
        assert_tools(
            &o,
            2,
            &["get_weather", "get_time"],
            &["call_aB1", "call_cD2"],
        );
        assert_eq!(o.finish_reason.as_deref(), Some("tool_calls"));
        let args = "{\"city\": \"Paris\"}{\"tz\": \"CET\"}";
        assert_eq!(o.output_chars, args.chars().count() as u64);
        assert_eq!(o.output_sample, args);
    }

    /// Two choices (`n: 2`) each calling a tool at index 0 are two calls.
    #[test]
    fn streamed_calls_of_two_choices_stay_apart() {
        let mut d = chat();
        let mut o = Observed::default();
        for choice in [0, 1, 0, 1] {
            d.feed_event(
                &data(&format!(
                    r#"{{"choices":[{{"index":{choice},"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"x"}}}}]}}}}]}}"#
                )),
                &mut o,
            );
        }
        assert_eq!(o.tools.calls, 2);
        assert_eq!(o.tools.indexes, [0, 1024]);
    }

    #[test]
    fn whole_response_tool_calls_and_legacy_function_call() {
        use crate::llm::test_support::assert_tools;
        let mut d = chat();
        let mut o = Observed::default();
        d.feed_response(
            br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}},7]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":80,"completion_tokens":40}}"#,
            &mut o,
        );
        // Two calls of one tool: one name, two ids; the `7` is no call.
        assert_tools(&o, 2, &["get_weather"], &["call_1", "call_2"]);
        assert_eq!(o.output_chars, 31);
        assert_eq!(o.finish_reason.as_deref(), Some("tool_calls"));

        let mut o = Observed::default();
        d.feed_response(
            br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"function_call":{"name":"lookup","arguments":"{\"q\":1}"}},"finish_reason":"function_call"}]}"#,
            &mut o,
        );
        assert_tools(&o, 1, &["lookup"], &[]);
        assert_eq!(o.output_chars, 7);
        assert_eq!(o.finish_reason.as_deref(), Some("function_call"));

        // Streamed legacy call: the name once, then argument deltas, one call.
        let mut o = Observed::default();
        for f in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","function_call":{"name":"lookup","arguments":""}}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"function_call":{"arguments":"{\"q\""}}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"function_call":{"arguments":":1}"}}}]}"#,
        ] {
            d.feed_event(&data(f), &mut o);
        }
        assert_tools(&o, 1, &["lookup"], &[]);
        assert_eq!(o.output_chars, 7);
    }

    #[test]
    fn tool_names_are_capped_and_long_ids_dropped() {
        use crate::llm::test_support::{long_tool_id, long_tool_name};
        let mut d = chat();
        let mut o = Observed::default();
        let (name, id) = (long_tool_name(), long_tool_id());
        d.feed_event(
            &data(&format!(
                r#"{{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"{id}","function":{{"name":"{name}","arguments":""}}}}]}}}}]}}"#
            )),
            &mut o,
        );
        assert_eq!(o.tools.calls, 1);
        assert!(o.tools.call_ids.is_empty());
        assert_eq!(o.tools.names.len(), 1);
        assert!(o.tools.names[0].len() <= crate::llm::MAX_FIELD_BYTES);
        assert!(name.starts_with(o.tools.names[0].trim_end_matches(crate::llm::CUT_MARKER)));
    }

    #[test]
    fn tool_call_garbage_never_panics() {
        let mut d = chat();
        let mut o = Observed::default();
        for f in [
            r#"{"choices":[{"delta":{"tool_calls":{"index":0}}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[null,"x",{"index":-1},{"index":1e30},{"index":18446744073709551615,"function":7},{"function":{"name":5,"arguments":{}}}]}}]}"#,
            r#"{"choices":[{"index":4294967296,"delta":{"tool_calls":[{"index":3,"function":{"name":"n"}}]}}]}"#,
            r#"{"choices":[{"delta":{"function_call":"x"}},{"message":{"function_call":[1]}}]}"#,
        ] {
            d.feed_event(&data(f), &mut o);
        }
        d.feed_response(
            br#"{"choices":[{"message":{"tool_calls":[[],{}]}}]}"#,
            &mut o,
        );
        // Only objects are calls: the choice with a huge index (one, kept apart) and the `{}`.
        assert_eq!(o.tools.calls, 2);
        assert_eq!(o.tools.names, ["n"]);
        assert_eq!(o.output_chars, 0);
    }
}
