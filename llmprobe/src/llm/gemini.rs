//! The Google Gemini dialect (generativelanguage and Vertex AI):
//! `POST .../models/{model}:generateContent` and `...:streamGenerateContent`. The model is named
//! by the path, not the body. Streams are SSE (`alt=sse`) whose every event is a whole
//! `GenerateContentResponse`, with no terminal marker; without `alt=sse` the stream is one JSON
//! array of those responses.

use serde_json::Value;

use super::json::{self, Body, Event};
use super::typed::{
    ErrorView, List, Scalar, UsageView, as_bool, as_u64, error_named_by, items, json_object,
    nonempty,
};
use super::{Observed, OutputKind, ProviderDialect, Usage};
use crate::protocol::http1::RequestHead;
use crate::secrets::percent_decode;

/// Longest model name kept from a path.
const MAX_MODEL_LEN: usize = 256;

/// The dialect.
#[derive(Debug)]
pub struct Gemini {
    /// The model named by the path (without `models/`), if any.
    model: Option<String>,
    /// `streamGenerateContent` rather than `generateContent`.
    stream: bool,
}

/// Recognises Gemini requests by method and path: the last path segment is
/// `{model}:generateContent` or `{model}:streamGenerateContent`, under `/v1/models/`,
/// `/v1beta/models/`, or Vertex AI's `/v1/projects/.../publishers/google/models/`.
pub fn detect(head: &RequestHead) -> Option<Box<dyn ProviderDialect>> {
    if head.method != "POST" {
        return None;
    }
    let path = super::route_path(head);
    let (prefix, method) = path.rsplit_once(':')?;
    let stream = match method {
        "streamGenerateContent" => true,
        "generateContent" => false,
        _ => return None,
    };
    // `models/gemini-2.5-flash` may arrive URL-encoded as one segment: `models%2Fgemini-2.5-flash`.
    let decoded = percent_decode(prefix);
    let model = decoded
        .rsplit('/')
        .next()
        .filter(|m| !m.is_empty() && m.len() <= MAX_MODEL_LEN)
        .map(str::to_owned);
    Some(Box::new(Gemini { model, stream }))
}

/// Characters of text in a `Content` object's `parts`.
fn parts_chars(content: &Value) -> u64 {
    json::parts_text_chars(content.get("parts"))
}

json_object! {
    /// A `GenerateContentResponse`.
    struct Response<'a> {
        "error" => error: Box<ErrorView<'a>>,
        "modelVersion" => model_version: Scalar<'a>,
        "responseId" => response_id: Scalar<'a>,
        "usageMetadata" => usage: Box<UsageView<'a>>,
        "candidates" => candidates: List<Candidate<'a>>,
        "promptFeedback" => prompt_feedback: PromptFeedback<'a>,
    }
}

json_object! {
    /// One of `candidates`.
    struct Candidate<'a> {
        "finishReason" => finish_reason: Scalar<'a>,
        "content" => content: Content<'a>,
    }
}

json_object! {
    /// A candidate's `content`.
    struct Content<'a> {
        "parts" => parts: List<Part<'a>>,
    }
}

json_object! {
    /// One of a content's `parts`.
    struct Part<'a> {
        "text" => text: Scalar<'a>,
        "thought" => thought: Scalar<'a>,
        "functionCall" => function_call: Box<FunctionCall<'a>>,
    }
}

json_object! {
    /// A part's `functionCall`: the tool's `name`, the call's `id` (sent by newer models and
    /// Vertex AI, answered by a `functionResponse` with the same `id`), and its `args`, counted
    /// as the JSON text they make. Gemini sends each call whole, in one part.
    struct FunctionCall<'a> {
        "id" => id: Scalar<'a>,
        "name" => name: Scalar<'a>,
        "args" => args: Value,
    }
}

json_object! {
    /// `promptFeedback`.
    struct PromptFeedback<'a> {
        "blockReason" => block_reason: Scalar<'a>,
    }
}

/// Reads a `usageMetadata` object (cumulative: reported fields replace earlier ones). Output
/// tokens are candidates plus thoughts, so that they include reasoning as with the other dialects.
fn read_usage(usage: &UsageView<'_>, out: &mut Usage) {
    if !usage.is_object {
        return;
    }
    if let Some(n) = as_u64(&usage.prompt) {
        out.input_tokens = Some(n);
    }
    let candidates = as_u64(&usage.candidates);
    let thoughts = as_u64(&usage.thoughts);
    if candidates.is_some() || thoughts.is_some() {
        out.output_tokens = Some(
            candidates
                .unwrap_or(0)
                .saturating_add(thoughts.unwrap_or(0)),
        );
    }
    if let Some(n) = thoughts {
        out.reasoning_tokens = Some(n);
    }
    if let Some(n) = as_u64(&usage.cached) {
        out.cached_input_tokens = Some(n);
    }
}

/// Reads one `GenerateContentResponse`; returns the most output-like kind it carried.
fn read_response(v: &Response<'_>, out: &mut Observed) -> OutputKind {
    if !v.is_object {
        return OutputKind::None;
    }
    // The `status` of an `{"error":{"code","message","status"}}` object.
    if let Some(e) = error_named_by(&v.error, |e| &e.status) {
        out.error = Some(e);
    }
    if let Some(m) = nonempty(&v.model_version) {
        super::set_text(&mut out.response_model, m);
    }
    if let Some(id) = nonempty(&v.response_id) {
        out.response_id.get_or_insert_with(|| id.to_owned());
    }
    if let Some(usage) = &v.usage {
        read_usage(usage, &mut out.usage);
    }
    let mut reasoning = false;
    let mut answer = false;
    for c in items(&v.candidates) {
        if let Some(fr) = nonempty(&c.finish_reason).filter(|fr| *fr != "FINISH_REASON_UNSPECIFIED")
        {
            super::set_text(&mut out.finish_reason, fr);
            out.terminal = true;
        }
        let Some(parts) = c.content.as_ref().and_then(|c| c.parts.as_ref()) else {
            continue;
        };
        for p in parts.items() {
            if let Some(t) = nonempty(&p.text) {
                if as_bool(&p.thought) == Some(true) {
                    out.note_reasoning(t);
                    reasoning = true;
                } else {
                    out.note_output(t);
                    answer = true;
                }
            }
            if let Some(call) = p.function_call.as_ref().filter(|c| c.is_object) {
                out.note_tool_call(None, nonempty(&call.id), nonempty(&call.name));
                if let Some(args) = call.args.as_ref().filter(|a| !a.is_null()) {
                    out.note_tool_args(None, &args.to_string());
                }
                answer = true;
            }
        }
    }
    // A prompt blocked before generation: no candidates, the block reason says why.
    if out.finish_reason.is_none()
        && let Some(br) = v
            .prompt_feedback
            .as_ref()
            .and_then(|f| nonempty(&f.block_reason))
    {
        super::set_text(&mut out.finish_reason, br);
        out.terminal = true;
    }
    if answer {
        OutputKind::Answer
    } else if reasoning {
        OutputKind::Reasoning
    } else {
        OutputKind::None
    }
}

/// Reads the elements of a JSON array of responses one by one, so that a body cut short (size
/// cap, capture gap) still yields the elements before the cut. Returns true if the array closed.
fn read_array(body: &[u8], out: &mut Observed) -> bool {
    let mut pos = match body.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(p) if body[p] == b'[' => p + 1,
        _ => return false,
    };
    loop {
        while pos < body.len() && (body[pos].is_ascii_whitespace() || body[pos] == b',') {
            pos += 1;
        }
        match body.get(pos) {
            None => return false,
            Some(b']') => return true,
            Some(_) => {}
        }
        let mut it = serde_json::Deserializer::from_slice(&body[pos..]).into_iter::<Response<'_>>();
        match it.next() {
            Some(Ok(v)) => {
                read_response(&v, out);
                pos += it.byte_offset().max(1);
            }
            _ => return false,
        }
    }
}

impl ProviderDialect for Gemini {
    fn provider(&self) -> &'static str {
        "gcp.gemini"
    }

    fn api(&self) -> &'static str {
        "gcp.gemini.generate_content"
    }

    fn operation(&self) -> &'static str {
        "generate_content"
    }

    fn on_request_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        out.request_model = self.model.clone();
        out.stream = Some(self.stream);
        let Some(v) = body.json() else {
            // A body cut by a capture gap: the path already said everything we keep.
            return;
        };
        let mut n = 0;
        match v.get("contents") {
            Some(Value::Array(contents)) => n += contents.iter().map(parts_chars).sum::<u64>(),
            Some(c @ Value::Object(_)) => n += parts_chars(c),
            _ => {}
        }
        if let Some(si) = v
            .get("systemInstruction")
            .or_else(|| v.get("system_instruction"))
        {
            n += parts_chars(si);
        }
        out.prompt_chars = n;
    }

    fn on_stream_event(&mut self, ev: &Event<'_>, out: &mut Observed) -> OutputKind {
        // Not expected with `alt=sse`, but harmless: a batch of responses in one event.
        if ev.text.starts_with('[') {
            let Some(batch) = ev.parse::<List<Response<'_>>>() else {
                return OutputKind::None;
            };
            return batch.items().iter().fold(OutputKind::None, |kind, item| {
                match (kind, read_response(item, out)) {
                    (OutputKind::Answer, _) | (_, OutputKind::Answer) => OutputKind::Answer,
                    (OutputKind::Reasoning, _) | (_, OutputKind::Reasoning) => {
                        OutputKind::Reasoning
                    }
                    _ => OutputKind::None,
                }
            });
        }
        match ev.parse::<Response<'_>>() {
            Some(v) => read_response(&v, out),
            None => OutputKind::None,
        }
    }

    fn on_response_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        if read_array(body.raw(), out) {
            out.terminal = true;
            return;
        }
        let Some(v) = body.parse::<Response<'_>>() else {
            return;
        };
        if v.is_object {
            read_response(&v, out);
            out.terminal = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::test_support::Feed;
    use crate::llm::test_support::{data_event as ev, head};

    fn dialect(path: &str) -> Box<dyn ProviderDialect> {
        detect(&head("POST", path)).expect("detected")
    }

    fn request(path: &str, body: &[u8]) -> Observed {
        let mut o = Observed::default();
        dialect(path).feed_request(body, &mut o);
        o
    }

    #[test]
    fn detects_by_path() {
        for (p, model, stream) in [
            (
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=K",
                "gemini-2.5-flash",
                true,
            ),
            (
                "/v1beta/models/gemini-2.5-pro:generateContent",
                "gemini-2.5-pro",
                false,
            ),
            (
                "/v1/models/gemini-2.0-flash:generateContent",
                "gemini-2.0-flash",
                false,
            ),
            (
                "/v1beta/models%2Fgemini-2.5-flash:streamGenerateContent",
                "gemini-2.5-flash",
                true,
            ),
            (
                "/v1beta/models/gemini%2D2.5:generateContent",
                "gemini-2.5",
                false,
            ),
            (
                "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                "gemini-2.5-flash",
                true,
            ),
            (
                "/gateway/google/v1beta/models/gemini-x:streamGenerateContent",
                "gemini-x",
                true,
            ),
        ] {
            let d = dialect(p);
            assert_eq!(d.api(), "gcp.gemini.generate_content");
            assert_eq!(d.provider(), "gcp.gemini");
            assert_eq!(d.operation(), "generate_content");
            let o = request(p, b"{}");
            assert_eq!(o.request_model.as_deref(), Some(model), "{p}");
            assert_eq!(o.stream, Some(stream), "{p}");
        }
        for p in [
            "/v1beta/models/gemini-2.5-flash:countTokens",
            "/v1beta/models/text-embedding-004:embedContent",
            "/v1beta/models/gemini-2.5-flash",
            "/v1beta/models",
            "/v1beta/openai/chat/completions",
            "/v1beta/models/gemini:generateContentX",
        ] {
            assert!(detect(&head("POST", p)).is_none(), "{p}");
        }
        assert!(detect(&head("GET", "/v1beta/models/g:generateContent")).is_none());
        // No model in the path: still Gemini, model unknown.
        assert_eq!(request("/:generateContent", b"{}").request_model, None);
    }

    #[test]
    fn reads_request() {
        let o = request(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            br#"{"contents":[{"role":"user","parts":[{"text":"hello"},{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]},{"role":"model","parts":[{"text":"abc"}]}],"systemInstruction":{"parts":[{"text":"be brief"}]},"generationConfig":{"thinkingConfig":{"includeThoughts":true}}}"#,
        );
        assert_eq!(o.request_model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 5 + 3 + 8);

        let o = request(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            br#"{"system_instruction":{"parts":[{"text":"sys"}]},"contents":[{"parts":[{"text":"h\u00e9"}]}]}"#,
        );
        assert_eq!(o.stream, Some(false));
        assert_eq!(o.prompt_chars, 5);
    }

    #[test]
    fn reads_the_model_of_a_request_cut_by_a_gap() {
        let o = request(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            b"{\"contents\":[{\"parts\":[{\"text\":\"w0 w1\0w998 w999\"}]}]}",
        );
        assert_eq!(o.request_model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 0);
    }

    #[test]
    fn reads_a_stream_with_thoughts() {
        let mut d = dialect("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
        let mut o = Observed::default();
        let frames = [
            (
                r#"{"candidates":[{"content":{"parts":[{"text":"**Thinking** about it","thought":true}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":15,"totalTokenCount":15},"modelVersion":"gemini-2.5-flash","responseId":"resp-1"}"#,
                OutputKind::Reasoning,
            ),
            (
                r#"{"candidates":[{"content":{"parts":[{"text":"more","thought":true}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":15,"totalTokenCount":18,"thoughtsTokenCount":3},"modelVersion":"gemini-2.5-flash","responseId":"resp-1"}"#,
                OutputKind::Reasoning,
            ),
            (
                r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"}]},"index":0}],"usageMetadata":{"promptTokenCount":15,"candidatesTokenCount":2,"totalTokenCount":20,"thoughtsTokenCount":3},"modelVersion":"gemini-2.5-flash","responseId":"resp-1"}"#,
                OutputKind::Answer,
            ),
        ];
        for (data, want) in frames {
            assert_eq!(d.feed_event(&ev(data), &mut o), want, "{data}");
            assert!(!o.terminal);
        }
        assert_eq!(
            d.feed_event(
                &ev(r#"{"candidates":[{"content":{"role":"model","parts":[{"text":" world"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":15,"candidatesTokenCount":6,"totalTokenCount":21,"thoughtsTokenCount":3,"cachedContentTokenCount":4},"modelVersion":"gemini-2.5-flash-001","responseId":"resp-1"}"#),
                &mut o
            ),
            OutputKind::Answer
        );
        assert!(o.terminal);
        assert_eq!(o.finish_reason.as_deref(), Some("STOP"));
        assert_eq!(o.response_model.as_deref(), Some("gemini-2.5-flash-001"));
        assert_eq!(o.response_id.as_deref(), Some("resp-1"));
        assert_eq!(o.output_chars, 21 + 4 + 5 + 6);
        assert_eq!(o.error, None);
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(15),
                output_tokens: Some(9),
                reasoning_tokens: Some(3),
                cached_input_tokens: Some(4),
            }
        );
    }

    #[test]
    fn reads_function_calls() {
        let mut d = dialect("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
        let mut o = Observed::default();
        assert_eq!(
            d.feed_event(
                &ev(r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":5,"totalTokenCount":35}}"#),
                &mut o
            ),
            OutputKind::Answer
        );
        assert_eq!(o.output_chars, 16);
        assert_eq!(o.finish_reason.as_deref(), Some("STOP"));
        assert_eq!(o.usage.output_tokens, Some(5));
        assert_eq!(o.usage.reasoning_tokens, None);
        assert!(o.terminal);
    }

    #[test]
    fn usage_without_output_counts_leaves_output_unset() {
        let mut d = dialect("/v1beta/models/g:streamGenerateContent?alt=sse");
        let mut o = Observed::default();
        assert_eq!(
            d.feed_event(
                &ev(r#"{"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7}}"#),
                &mut o
            ),
            OutputKind::None
        );
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(7),
                ..Default::default()
            }
        );
        assert!(!o.terminal);
    }

    #[test]
    fn reads_errors() {
        let mut d = dialect("/v1beta/models/g:streamGenerateContent?alt=sse");
        let mut o = Observed::default();
        d.feed_event(
            &ev(r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#),
            &mut o,
        );
        assert_eq!(o.error.as_deref(), Some("RESOURCE_EXHAUSTED"));

        let mut o = Observed::default();
        d.feed_event(&ev(r#"{"error":{"code":500}}"#), &mut o);
        assert_eq!(o.error.as_deref(), Some("error"));

        let mut o = Observed::default();
        d.feed_response(
            br#"[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]"#,
            &mut o,
        );
        assert_eq!(o.error.as_deref(), Some("INVALID_ARGUMENT"));

        // A blocked prompt: no candidates, a block reason.
        let mut o = Observed::default();
        d.feed_event(
            &ev(r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":9}}"#),
            &mut o,
        );
        assert_eq!(o.finish_reason.as_deref(), Some("SAFETY"));
        assert!(o.terminal);
    }

    #[test]
    fn reads_whole_responses() {
        let mut d = dialect("/v1beta/models/gemini-2.5-pro:generateContent");
        let mut o = Observed::default();
        d.feed_response(
            br#"{"candidates":[{"content":{"parts":[{"text":"plan","thought":true},{"text":"Hi there"}],"role":"model"},"finishReason":"MAX_TOKENS","index":0}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":3,"totalTokenCount":63,"thoughtsTokenCount":50},"modelVersion":"gemini-2.5-pro","responseId":"r-9"}"#,
            &mut o,
        );
        assert!(o.terminal);
        assert_eq!(o.finish_reason.as_deref(), Some("MAX_TOKENS"));
        assert_eq!(o.response_model.as_deref(), Some("gemini-2.5-pro"));
        assert_eq!(o.response_id.as_deref(), Some("r-9"));
        assert_eq!(o.output_chars, 12);
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(10),
                output_tokens: Some(53),
                reasoning_tokens: Some(50),
                cached_input_tokens: None,
            }
        );
    }

    #[test]
    fn reads_a_streamed_json_array() {
        let body = b"[{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],\"role\": \"model\"},\"index\": 0}],\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"a1\"}\r\n,\r\n{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 2,\"totalTokenCount\": 6}}\r\n]";
        let mut d = dialect("/v1beta/models/gemini-2.5-flash:streamGenerateContent");
        let mut o = Observed::default();
        d.feed_response(body, &mut o);
        assert!(o.terminal);
        assert_eq!(o.output_chars, 5);
        assert_eq!(o.finish_reason.as_deref(), Some("STOP"));
        assert_eq!(o.response_id.as_deref(), Some("a1"));
        assert_eq!(o.usage.input_tokens, Some(4));
        assert_eq!(o.usage.output_tokens, Some(2));

        // Cut after the first element: that element still counts; no terminal.
        let mut o = Observed::default();
        d.feed_response(&body[..body.len() - 60], &mut o);
        assert_eq!(o.output_chars, 3);
        assert_eq!(o.response_model.as_deref(), Some("gemini-2.5-flash"));
        assert!(!o.terminal);
        assert_eq!(o.finish_reason, None);

        let mut o = Observed::default();
        d.feed_response(b"  [ ]  ", &mut o);
        assert!(o.terminal);
        assert_eq!(o.output_chars, 0);
    }

    #[test]
    fn survives_garbage() {
        let mut d = dialect("/v1beta/models/g:streamGenerateContent");
        let mut o = Observed::default();
        d.feed_response(b"\x00\xff", &mut o);
        d.feed_response(b"[1, \"x\", null, [", &mut o);
        d.feed_response(b"[,,,", &mut o);
        d.feed_response(b"{\"candidates\":", &mut o);
        d.feed_response(b"42", &mut o);
        for data in [
            "not json",
            "[]",
            "42",
            r#"{"candidates":"nope","usageMetadata":[1]}"#,
            r#"{"candidates":[{"content":{"parts":"x"},"finishReason":7}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":5},{"functionCall":"f"},null]}}]}"#,
            r#"{"usageMetadata":{"promptTokenCount":-1,"candidatesTokenCount":"2"},"modelVersion":3}"#,
            r#"{"error":null}"#,
            "",
        ] {
            assert_eq!(d.feed_event(&ev(data), &mut o), OutputKind::None, "{data}");
        }
        assert_eq!(o, Observed::default());

        let mut o = Observed::default();
        d.feed_request(b"{not json", &mut o);
        d.feed_request(br#"{"contents":"x","systemInstruction":[1]}"#, &mut o);
        assert_eq!(o.prompt_chars, 0);
        assert_eq!(o.request_model.as_deref(), Some("g"));
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    /// Gemini sends each call whole in one part: parallel calls are parts of one event.
    #[test]
    fn function_calls_streamed_and_whole() {
        use crate::llm::test_support::{assert_tools, data_event, long_tool_id, long_tool_name};
        let mut d = Gemini {
            model: Some("gemini-2.5-flash".into()),
            stream: true,
        };
        let mut o = Observed::default();
        let kind = d.feed_event(
            &data_event(r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"id":"fc-1","name":"get_weather","args":{"city":"Paris"}}},{"functionCall":{"name":"get_time","args":{}}}]},"index":0}],"modelVersion":"gemini-2.5-flash"}"#),
            &mut o,
        );
        assert_eq!(kind, OutputKind::Answer);
        d.feed_event(
            &data_event(r#"{"candidates":[{"content":{"role":"model","parts":[{"text":""}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":12}}"#),
            &mut o,
        );
        assert_tools(&o, 2, &["get_weather", "get_time"], &["fc-1"]);
        assert_eq!(o.output_chars, 16 + 2);
        assert_eq!(o.finish_reason.as_deref(), Some("STOP"));

        let mut o = Observed::default();
        let (name, id) = (long_tool_name(), long_tool_id());
        d.feed_response(
            format!(r#"{{"candidates":[{{"content":{{"parts":[{{"functionCall":{{"id":"{id}","name":"{name}","args":null}}}},{{"functionCall":"x"}},{{"functionCall":{{"name":7}}}}]}},"finishReason":"STOP"}}]}}"#).as_bytes(),
            &mut o,
        );
        assert_eq!(o.tools.calls, 2);
        assert!(o.tools.call_ids.is_empty());
        assert!(o.tools.names[0].len() <= crate::llm::MAX_FIELD_BYTES);
        assert_eq!(o.output_chars, 0);
    }
}
