//! The Ollama native dialect: `/api/chat`, `/api/generate` and the embedding endpoints. Streams
//! are NDJSON (one JSON object per line, `stream` defaults to true); the exchange hands each
//! non-empty line over as an event with no type. Ollama's OpenAI-compatible `/v1/...` endpoints
//! belong to the OpenAI dialect.

use serde_json::Value;

use super::json::{Body, Event, chars, string_at as s};
use super::typed::{List, Scalar, as_bool, as_u64, is_set, items, json_object, nonempty};
use super::{Observed, OutputKind, ProviderDialect};
use crate::protocol::http1::RequestHead;

/// Which Ollama API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OllamaApi {
    /// `POST /api/chat`.
    Chat,
    /// `POST /api/generate`.
    Generate,
    /// `POST /api/embed` or the older `POST /api/embeddings`.
    Embed,
}

/// The dialect.
pub struct Ollama {
    api: OllamaApi,
}

/// Recognises Ollama native requests by method and exact path.
pub fn detect(head: &RequestHead) -> Option<Box<dyn ProviderDialect>> {
    if head.method != "POST" {
        return None;
    }
    let path = head.path.split(['?', '#']).next().unwrap_or("");
    let path = path.strip_suffix('/').unwrap_or(path);
    let api = match path {
        "/api/chat" => OllamaApi::Chat,
        "/api/generate" => OllamaApi::Generate,
        "/api/embed" | "/api/embeddings" => OllamaApi::Embed,
        _ => return None,
    };
    Some(Box::new(Ollama { api }))
}

/// Characters of a string, or of the strings in an array (the embed `input`).
fn text_chars(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::String(s)) => chars(s),
        Some(Value::Array(items)) => items.iter().map(|i| text_chars(Some(i))).sum(),
        _ => 0,
    }
}

json_object! {
    /// One response object: a stream line or a whole body.
    struct Object<'a> {
        "model" => model: Scalar<'a>,
        "error" => error: Scalar<'a>,
        "message" => message: Message<'a>,
        "thinking" => thinking: Scalar<'a>,
        "response" => response: Scalar<'a>,
        "prompt_eval_count" => prompt_eval_count: Scalar<'a>,
        "eval_count" => eval_count: Scalar<'a>,
        "done" => done: Scalar<'a>,
        "done_reason" => done_reason: Scalar<'a>,
        "load_duration" => load_duration: Scalar<'a>,
        "prompt_eval_duration" => prompt_eval_duration: Scalar<'a>,
        "total_duration" => total_duration: Scalar<'a>,
    }
}

json_object! {
    /// `/api/chat`'s `message`.
    struct Message<'a> {
        "thinking" => thinking: Scalar<'a>,
        "content" => content: Scalar<'a>,
        "tool_calls" => tool_calls: List<ToolCall<'a>>,
    }
}

json_object! {
    /// One of a message's `tool_calls`, each sent whole in one line: its `id` (newer versions
    /// only) and its function.
    struct ToolCall<'a> {
        "id" => id: Scalar<'a>,
        "function" => function: Function<'a>,
    }
}

json_object! {
    /// A tool call's `function`: the tool's `name`, and its arguments, which Ollama sends as a
    /// JSON object, not as a string.
    struct Function<'a> {
        "name" => name: Scalar<'a>,
        "arguments" => arguments: Value,
    }
}

/// Longest server-reported duration kept: a day, in nanoseconds.
const MAX_DURATION_NS: u64 = 86_400 * 1_000_000_000;

/// A duration in nanoseconds (a non-negative integer under a day), in seconds.
fn nanos_to_s(v: &Option<Scalar<'_>>) -> Option<f64> {
    as_u64(v)
        .filter(|&ns| ns < MAX_DURATION_NS)
        .map(|ns| ns as f64 / 1e9)
}

impl Ollama {
    /// Reads one response object (a stream line or a whole body); returns what it carried.
    fn read_object(&self, v: &Object<'_>, out: &mut Observed) -> OutputKind {
        if !v.is_object {
            return OutputKind::None;
        }
        if let Some(m) = nonempty(&v.model) {
            super::set_text(&mut out.response_model, m);
        }
        if is_set(&v.error) {
            out.error = Some("error".to_owned());
        }
        // `/api/chat` nests the text in `message`, `/api/generate` keeps it at the top level.
        let (thinking, answer) = match &v.message {
            Some(m) => (&m.thinking, &m.content),
            None => (&v.thinking, &v.response),
        };
        let mut kind = OutputKind::None;
        if let Some(t) = nonempty(thinking) {
            out.note_reasoning(t);
            kind = OutputKind::Reasoning;
        }
        if let Some(t) = nonempty(answer) {
            out.note_output(t);
            kind = OutputKind::Answer;
        }
        let calls = v.message.as_ref().map_or(&[][..], |m| items(&m.tool_calls));
        if !calls.is_empty() {
            for call in calls.iter().filter(|c| c.is_object) {
                let f = call.function.as_ref();
                out.note_tool_call(None, nonempty(&call.id), f.and_then(|f| nonempty(&f.name)));
                match f.and_then(|f| f.arguments.as_ref()) {
                    Some(Value::String(a)) => out.note_tool_args(None, a),
                    Some(a @ Value::Object(_)) => out.note_tool_args(None, &a.to_string()),
                    _ => {}
                }
            }
            kind = OutputKind::Answer;
        }
        if let Some(n) = as_u64(&v.prompt_eval_count) {
            out.usage.input_tokens = Some(n);
        }
        if let Some(n) = as_u64(&v.eval_count) {
            out.usage.output_tokens = Some(n);
        }
        // The final line's server timings (ns): model load before the prompt, prompt
        // evaluation (prefill), the whole request.
        if let Some(s) = nanos_to_s(&v.load_duration) {
            out.server.queue_s = Some(s);
        }
        if let Some(s) = nanos_to_s(&v.prompt_eval_duration) {
            out.server.prefill_s = Some(s);
        }
        if let Some(s) = nanos_to_s(&v.total_duration) {
            out.server.processing_s = Some(s);
        }
        if as_bool(&v.done) == Some(true) {
            out.terminal = true;
            if let Some(r) = nonempty(&v.done_reason) {
                super::set_text(&mut out.finish_reason, r);
            }
        }
        kind
    }
}

impl ProviderDialect for Ollama {
    fn provider(&self) -> &'static str {
        "ollama"
    }

    fn api(&self) -> &'static str {
        match self.api {
            OllamaApi::Chat => "ollama.chat",
            OllamaApi::Generate => "ollama.generate",
            OllamaApi::Embed => "ollama.embed",
        }
    }

    fn operation(&self) -> &'static str {
        match self.api {
            OllamaApi::Chat => "chat",
            OllamaApi::Generate => "text_completion",
            OllamaApi::Embed => "embeddings",
        }
    }

    fn on_request_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let streams_by_default = self.api != OllamaApi::Embed;
        let Some(v) = body.json() else {
            let body = body.raw();
            // A body cut by a capture gap: the model and stream flag are usually still there.
            out.request_model = super::scan_json_string(body, "model");
            out.stream = Some(if streams_by_default {
                super::scan_json_bool(body, "stream").unwrap_or(true)
            } else {
                false
            });
            return;
        };
        out.request_model = s(v, "model");
        out.stream =
            Some(streams_by_default && v.get("stream").and_then(Value::as_bool).unwrap_or(true));
        let mut n = 0;
        if let Some(msgs) = v.get("messages").and_then(Value::as_array) {
            for m in msgs {
                n += text_chars(m.get("content"));
            }
        }
        for key in ["prompt", "system", "input"] {
            n += text_chars(v.get(key));
        }
        out.prompt_chars = n;
    }

    fn on_stream_event(&mut self, ev: &Event<'_>, out: &mut Observed) -> OutputKind {
        let Some(v) = ev.parse::<Object<'_>>() else {
            return OutputKind::None;
        };
        self.read_object(&v, out)
    }

    fn on_response_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        if let Some(v) = body.parse::<Object<'_>>() {
            self.read_object(&v, out);
            out.terminal = true;
            return;
        }
        // A streamed NDJSON body that reached us whole: read it line by line.
        let mut any = false;
        for line in body.raw().split(|&b| b == b'\n') {
            if let Ok(v) = serde_json::from_slice::<Object<'_>>(line)
                && v.is_object
            {
                self.read_object(&v, out);
                any = true;
            }
        }
        if any {
            out.terminal = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Usage;
    use crate::llm::test_support::Feed;
    use crate::llm::test_support::{data_event as ev, head};

    #[test]
    fn detects_by_exact_path() {
        let d = detect(&head("POST", "/api/chat")).expect("chat");
        assert_eq!(
            (d.provider(), d.api(), d.operation()),
            ("ollama", "ollama.chat", "chat")
        );
        let d = detect(&head("POST", "/api/generate/")).expect("generate");
        assert_eq!(
            (d.api(), d.operation()),
            ("ollama.generate", "text_completion")
        );
        for p in ["/api/embed", "/api/embeddings", "/api/embed?x=1"] {
            let d = detect(&head("POST", p)).expect("embed");
            assert_eq!((d.api(), d.operation()), ("ollama.embed", "embeddings"));
        }
        assert!(detect(&head("GET", "/api/chat")).is_none());
        assert!(detect(&head("POST", "/api/tags")).is_none());
        assert!(detect(&head("POST", "/api/pull")).is_none());
        assert!(detect(&head("POST", "/v1/chat/completions")).is_none());
        assert!(detect(&head("POST", "/proxy/api/chat")).is_none());
        assert!(detect(&head("POST", "/api/chatx")).is_none());
        assert!(detect(&head("POST", "/api/chat//")).is_none());
    }

    #[test]
    fn reads_server_timings_of_the_final_line() {
        let mut d = Ollama {
            api: OllamaApi::Chat,
        };
        let mut o = Observed::default();
        d.feed_event(
            &ev(r#"{"model":"m","message":{"content":"hi"},"done":false}"#),
            &mut o,
        );
        assert_eq!(o.server, crate::llm::exchange::ServerTimings::default());
        d.feed_event(
            &ev(r#"{"model":"m","message":{"content":""},"done":true,"done_reason":"stop","total_duration":2500000000,"load_duration":1250000,"prompt_eval_count":26,"prompt_eval_duration":130000000,"eval_count":3,"eval_duration":90000000}"#),
            &mut o,
        );
        assert_eq!(o.server.queue_s, Some(0.00125));
        assert_eq!(o.server.prefill_s, Some(0.13));
        assert_eq!(o.server.processing_s, Some(2.5));
        // Negative, fractional, absurd or mistyped values are ignored.
        for bad in ["-1", "1.5", "1e30", "\"100\"", "null", "86400000000000"] {
            let mut o = Observed::default();
            let line = format!(
                r#"{{"done":true,"total_duration":{bad},"load_duration":{bad},"prompt_eval_duration":{bad}}}"#
            );
            d.feed_event(&ev(&line), &mut o);
            assert_eq!(
                o.server,
                crate::llm::exchange::ServerTimings::default(),
                "{bad}"
            );
        }
        // A whole (non-streamed) body.
        let mut o = Observed::default();
        d.feed_response(
            br#"{"model":"m","message":{"content":"x"},"done":true,"total_duration":1000000000,"load_duration":0,"prompt_eval_duration":5}"#,
            &mut o,
        );
        assert_eq!(
            (o.server.queue_s, o.server.prefill_s, o.server.processing_s),
            (Some(0.0), Some(5e-9), Some(1.0))
        );
    }

    #[test]
    fn reads_chat_request_stream_defaults_to_true() {
        let mut d = Ollama {
            api: OllamaApi::Chat,
        };
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"qwen3:0.6b","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"why is the sky blue?"}],"think":true}"#,
            &mut o,
        );
        assert_eq!(o.request_model.as_deref(), Some("qwen3:0.6b"));
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 8 + 20);

        let mut o = Observed::default();
        d.feed_request(br#"{"model":"m","messages":[],"stream":false}"#, &mut o);
        assert_eq!(o.stream, Some(false));
    }

    #[test]
    fn reads_generate_and_embed_requests() {
        let mut d = Ollama {
            api: OllamaApi::Generate,
        };
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"llama3.2","prompt":"hello","system":"you are terse","stream":true}"#,
            &mut o,
        );
        assert_eq!(o.request_model.as_deref(), Some("llama3.2"));
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 5 + 13);

        let mut d = Ollama {
            api: OllamaApi::Embed,
        };
        let mut o = Observed::default();
        d.feed_request(br#"{"model":"all-minilm","input":["abc","de"]}"#, &mut o);
        assert_eq!(o.request_model.as_deref(), Some("all-minilm"));
        assert_eq!(o.stream, Some(false));
        assert_eq!(o.prompt_chars, 5);
    }

    #[test]
    fn reads_the_model_of_a_request_cut_by_a_gap() {
        let mut d = Ollama {
            api: OllamaApi::Chat,
        };
        let mut o = Observed::default();
        d.feed_request(
            b"{\"model\":\"llama3.2\",\"messages\":[{\"role\":\"user\",\"content\":\"w0 w1\0w998\"}]}",
            &mut o,
        );
        assert_eq!(o.request_model.as_deref(), Some("llama3.2"));
        assert_eq!(o.stream, Some(true));

        let mut o = Observed::default();
        d.feed_request(
            b"{\"model\":\"m\",\"stream\":false,\"messages\":[{\"content\":\"a\0b\"}]}",
            &mut o,
        );
        assert_eq!(o.stream, Some(false));
    }

    #[test]
    fn reads_a_chat_stream_thinking_then_answer() {
        let mut d = Ollama {
            api: OllamaApi::Chat,
        };
        let mut o = Observed::default();
        let lines = [
            (
                r#"{"model":"qwen3:0.6b","created_at":"2025-06-01T10:00:00.1Z","message":{"role":"assistant","content":"","thinking":"Let"},"done":false}"#,
                OutputKind::Reasoning,
            ),
            (
                r#"{"model":"qwen3:0.6b","created_at":"2025-06-01T10:00:00.2Z","message":{"role":"assistant","content":"","thinking":" me think"},"done":false}"#,
                OutputKind::Reasoning,
            ),
            (
                r#"{"model":"qwen3:0.6b","created_at":"2025-06-01T10:00:00.3Z","message":{"role":"assistant","content":"Rayleigh"},"done":false}"#,
                OutputKind::Answer,
            ),
            (
                r#"{"model":"qwen3:0.6b","created_at":"2025-06-01T10:00:00.4Z","message":{"role":"assistant","content":" scattering."},"done":false}"#,
                OutputKind::Answer,
            ),
            (
                r#"{"model":"qwen3:0.6b","created_at":"2025-06-01T10:00:00.5Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#,
                OutputKind::None,
            ),
        ];
        for (i, (line, kind)) in lines.iter().enumerate() {
            assert_eq!(d.feed_event(&ev(line), &mut o), *kind, "line {i}");
            assert_eq!(o.terminal, i == lines.len() - 1);
        }
        assert_eq!(o.response_model.as_deref(), Some("qwen3:0.6b"));
        assert_eq!(o.finish_reason.as_deref(), Some("stop"));
        assert_eq!(o.output_chars, 3 + 9 + 8 + 12);
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(26),
                output_tokens: Some(282),
                ..Default::default()
            }
        );
        assert_eq!(o.error, None);
        assert_eq!(o.response_id, None);
    }

    #[test]
    fn reads_a_generate_stream() {
        let mut d = Ollama {
            api: OllamaApi::Generate,
        };
        let mut o = Observed::default();
        let line = |s: &str| ev(s);
        assert_eq!(
            d.feed_event(&line(r#"{"model":"llama3.2","created_at":"t","response":"","thinking":"hm","done":false}"#), &mut o),
            OutputKind::Reasoning
        );
        // Both in one line: the answer wins.
        assert_eq!(
            d.feed_event(&line(r#"{"model":"llama3.2","created_at":"t","response":"The","thinking":"ok","done":false}"#), &mut o),
            OutputKind::Answer
        );
        assert_eq!(
            d.feed_event(&line("{\"model\":\"llama3.2\",\"created_at\":\"t\",\"response\":\" sky\",\"done\":false}\r"), &mut o),
            OutputKind::Answer
        );
        assert_eq!(d.feed_event(&line("  "), &mut o), OutputKind::None);
        assert_eq!(
            d.feed_event(&line(r#"{"model":"llama3.2","created_at":"t","response":"","done":true,"done_reason":"length","context":[1,2,3],"prompt_eval_count":5,"eval_count":3}"#), &mut o),
            OutputKind::None
        );
        assert!(o.terminal);
        assert_eq!(o.finish_reason.as_deref(), Some("length"));
        assert_eq!(o.output_chars, 2 + 5 + 4);
        assert_eq!(o.usage.input_tokens, Some(5));
        assert_eq!(o.usage.output_tokens, Some(3));
    }

    #[test]
    fn tool_calls_are_answer_output() {
        let mut d = Ollama {
            api: OllamaApi::Chat,
        };
        let mut o = Observed::default();
        assert_eq!(
            d.feed_event(&ev(r#"{"model":"m","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Oslo"}}}]},"done":false}"#), &mut o),
            OutputKind::Answer
        );
        assert_eq!(o.output_chars, r#"{"city":"Oslo"}"#.len() as u64);
    }

    #[test]
    fn error_lines_set_the_error() {
        let mut d = Ollama {
            api: OllamaApi::Chat,
        };
        let mut o = Observed::default();
        d.feed_event(
            &ev(r#"{"model":"m","message":{"role":"assistant","content":"a"},"done":false}"#),
            &mut o,
        );
        assert_eq!(
            d.feed_event(&ev(r#"{"error":"an error was encountered while running the model: unexpected EOF"}"#), &mut o),
            OutputKind::None
        );
        assert_eq!(o.error.as_deref(), Some("error"));
        assert!(!o.terminal);

        let mut o = Observed::default();
        d.feed_response(
            br#"{"error":"model \"nope\" not found, try pulling it first"}"#,
            &mut o,
        );
        assert_eq!(o.error.as_deref(), Some("error"));
    }

    #[test]
    fn reads_non_stream_bodies() {
        let mut d = Ollama {
            api: OllamaApi::Chat,
        };
        let mut o = Observed::default();
        d.feed_response(
            br#"{"model":"llama3.2","created_at":"2023-12-12T14:13:43.416799Z","message":{"role":"assistant","content":"Hello! How are you today?"},"done_reason":"stop","done":true,"total_duration":5191566416,"load_duration":2154458,"prompt_eval_count":26,"prompt_eval_duration":383809000,"eval_count":298,"eval_duration":4799921000}"#,
            &mut o,
        );
        assert!(o.terminal);
        assert_eq!(o.response_model.as_deref(), Some("llama3.2"));
        assert_eq!(o.finish_reason.as_deref(), Some("stop"));
        assert_eq!(o.output_chars, 25);
        assert_eq!(o.usage.input_tokens, Some(26));
        assert_eq!(o.usage.output_tokens, Some(298));

        let mut d = Ollama {
            api: OllamaApi::Embed,
        };
        let mut o = Observed::default();
        d.feed_response(
            br#"{"model":"all-minilm","embeddings":[[0.010071029,-0.0017594862,0.05007221]],"total_duration":14143917,"load_duration":1019500,"prompt_eval_count":8}"#,
            &mut o,
        );
        assert!(o.terminal);
        assert_eq!(o.response_model.as_deref(), Some("all-minilm"));
        assert_eq!(o.usage.input_tokens, Some(8));
        assert_eq!(o.usage.output_tokens, None);
        assert_eq!(o.output_chars, 0);
    }

    #[test]
    fn reads_an_ndjson_body_delivered_whole() {
        let mut d = Ollama {
            api: OllamaApi::Generate,
        };
        let mut o = Observed::default();
        d.feed_response(
            b"{\"model\":\"m\",\"response\":\"Hi\",\"done\":false}\n{\"model\":\"m\",\"response\":\" there\",\"done\":false}\n{\"model\":\"m\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":4,\"eval_count\":2}\n",
            &mut o,
        );
        assert!(o.terminal);
        assert_eq!(o.output_chars, 8);
        assert_eq!(o.finish_reason.as_deref(), Some("stop"));
        assert_eq!(o.usage.output_tokens, Some(2));
    }

    #[test]
    fn survives_garbage() {
        let mut d = Ollama {
            api: OllamaApi::Chat,
        };
        let mut o = Observed::default();
        d.feed_request(b"\xff\xfe", &mut o);
        assert_eq!(o.stream, Some(true));
        let mut o = Observed::default();
        d.feed_response(b"\x00\xff\nnot json\n[1,2]", &mut o);
        for data in [
            "{not json",
            "[1,2,3]",
            "42",
            r#"{"message":"nope","thinking":5,"response":[1],"done":"yes","eval_count":-1,"prompt_eval_count":1.5,"model":7}"#,
            r#"{"message":{"content":{"a":1},"tool_calls":"x"},"done_reason":"stop"}"#,
        ] {
            assert_eq!(d.feed_event(&ev(data), &mut o), OutputKind::None, "{data}");
        }
        assert_eq!(o, Observed::default());
    }

    /// `/api/chat` sends each tool call whole (arguments as an object), in one line.
    #[test]
    fn tool_calls_streamed_and_whole() {
        use crate::llm::test_support::{assert_tools, long_tool_id, long_tool_name};
        let mut d = Ollama {
            api: OllamaApi::Chat,
        };
        let mut o = Observed::default();
        let kind = d.feed_event(
            &ev(r#"{"model":"qwen3","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_x1","function":{"index":0,"name":"get_weather","arguments":{"city":"Paris"}}},{"function":{"index":1,"name":"get_time","arguments":{}}}]},"done":false}"#),
            &mut o,
        );
        assert_eq!(kind, OutputKind::Answer);
        d.feed_event(
            &ev(r#"{"model":"qwen3","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":20,"eval_count":9}"#),
            &mut o,
        );
        assert_tools(&o, 2, &["get_weather", "get_time"], &["call_x1"]);
        assert_eq!(o.output_chars, 16 + 2);
        assert_eq!(o.finish_reason.as_deref(), Some("stop"));

        let mut o = Observed::default();
        let (name, id) = (long_tool_name(), long_tool_id());
        d.feed_response(
            format!(r#"{{"message":{{"tool_calls":[{{"id":"{id}","function":{{"name":"{name}","arguments":"{{}}"}}}},null,{{"function":[]}}]}},"done":true}}"#).as_bytes(),
            &mut o,
        );
        assert_eq!(o.tools.calls, 2);
        assert!(o.tools.call_ids.is_empty());
        assert!(o.tools.names[0].len() <= crate::llm::MAX_FIELD_BYTES);
        assert_eq!(o.output_chars, 2);
    }
}
