//! The OpenAI-compatible dialect: chat completions, legacy completions and embeddings, as spoken
//! by OpenAI, DeepSeek, Qwen (DashScope compatible mode), vLLM, SGLang, Ollama's `/v1`, and the
//! gateways in front of them. Recognised by method and path, not by host.

use serde_json::Value;

use super::json::{self, Body, Event, UsageKeys, nonempty_str, string_at as s};
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

/// Where an OpenAI `usage` object keeps its counts (with DeepSeek's cache field).
pub(crate) const USAGE: UsageKeys = UsageKeys {
    input: &["prompt_tokens"],
    output: &["completion_tokens"],
    reasoning: &["completion_tokens_details", "reasoning_tokens"],
    cached: &[
        &["prompt_tokens_details", "cached_tokens"],
        &["prompt_cache_hit_tokens"],
    ],
};

/// Reads an OpenAI `usage` object (with DeepSeek's cache fields) into `out`.
pub fn read_usage(usage: &Value, out: &mut Usage) {
    json::read_usage(usage, &USAGE, out);
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

/// The `error.type` (else `error.code`) of a response object that carries an error.
fn error_of(v: &Value) -> Option<String> {
    let e = json::error_object(v)?;
    Some(
        e.get("type")
            .or_else(|| e.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_owned(),
    )
}

impl OpenAi {
    /// Reads the choices of a chunk or a whole response; returns the most output-like kind seen.
    fn read_choices(&self, v: &Value, out: &mut Observed) -> OutputKind {
        let mut kind = OutputKind::None;
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return kind;
        };
        for c in choices {
            if let Some(fr) = nonempty_str(c.get("finish_reason")) {
                out.finish_reason = Some(fr.to_owned());
            }
            // Streamed chunks carry `delta`, whole responses `message`, legacy completions `text`.
            let msg = c.get("delta").or_else(|| c.get("message"));
            if let Some(m) = msg {
                for key in ["reasoning_content", "reasoning"] {
                    if let Some(t) = nonempty_str(m.get(key)) {
                        out.note_output(t);
                        kind = OutputKind::Reasoning;
                    }
                }
                if m.get("reasoning_details")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
                {
                    kind = OutputKind::Reasoning;
                }
                if let Some(t) = nonempty_str(m.get("content")) {
                    out.note_output(t);
                    kind = OutputKind::Answer;
                }
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array)
                    && !calls.is_empty()
                {
                    for call in calls {
                        if let Some(a) = call.pointer("/function/arguments").and_then(Value::as_str)
                        {
                            out.note_output(a);
                        }
                    }
                    kind = OutputKind::Answer;
                }
            }
            if let Some(t) = nonempty_str(c.get("text")) {
                out.note_output(t);
                kind = OutputKind::Answer;
            }
        }
        kind
    }

    fn read_common(&self, v: &Value, out: &mut Observed) {
        if let Some(m) = s(v, "model") {
            out.response_model = Some(m);
        }
        if let Some(id) = s(v, "id") {
            out.response_id.get_or_insert(id);
        }
        if let Some(usage) = v.get("usage") {
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
        let Some(v) = ev.json() else {
            return OutputKind::None;
        };
        self.read_common(v, out);
        if ev.name == Some("error") && out.error.is_none() {
            out.error = Some("error".to_owned());
        }
        self.read_choices(v, out)
    }

    fn on_response_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = body.json() else {
            return;
        };
        self.read_common(v, out);
        self.read_choices(v, out);
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
}
