//! The DashScope native dialect (Alibaba Cloud Model Studio): text and multimodal generation.
//! Streams when the `X-DashScope-SSE: enable` header is sent; every event carries cumulative
//! usage, and without `parameters.incremental_output` every event repeats the whole text so far.
//! DashScope's OpenAI-compatible mode (`/compatible-mode/v1/...`) belongs to the OpenAI dialect.

use serde_json::Value;

use super::json::{Body, Event, string_at as s};
use super::typed::{
    ContentText, Details, List, Scalar, ToolCall, UsageView, as_str, as_u64, is_array, items,
    json_object, nonempty,
};
use super::{Observed, OutputKind, ProviderDialect, Usage};
use crate::protocol::http1::RequestHead;

/// Choices whose text growth is followed one by one; later ones count as deltas.
const MAX_TRACKED_CHOICES: usize = 8;

/// How much of one text field (answer, reasoning or tool-call arguments of one choice) was seen,
/// remembered as its length and a hash rather than the text itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    bytes: usize,
    hash: u64,
}

/// FNV-1a, enough to tell whether a text still starts with what an earlier event carried.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Seen {
    /// The part of `text` that is new. In `incremental` mode every text is a delta; otherwise a
    /// text that starts with the one seen before only adds its tail, and one that does not (a
    /// server that sends deltas anyway) counts whole.
    fn advance<'t>(&mut self, text: &'t str, incremental: bool) -> &'t str {
        if text.is_empty() {
            return text;
        }
        let new = if !incremental
            && text.len() >= self.bytes
            && text.is_char_boundary(self.bytes)
            && fnv1a(&text.as_bytes()[..self.bytes]) == self.hash
        {
            &text[self.bytes..]
        } else {
            text
        };
        if !incremental {
            *self = Seen {
                bytes: text.len(),
                hash: fnv1a(text.as_bytes()),
            };
        }
        new
    }
}

/// Text seen so far in one choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ChoiceSeen {
    answer: Seen,
    reasoning: Seen,
    tool_args: Seen,
}

/// The dialect.
pub struct DashScope {
    /// The request carried `X-DashScope-SSE: enable`.
    sse_header: bool,
    /// `parameters.incremental_output` was true: events carry deltas, not the text so far.
    incremental: bool,
    /// The request used `input.messages` (chat) rather than `input.prompt`.
    chat: bool,
    seen: Vec<ChoiceSeen>,
}

/// Recognises DashScope native generation requests by method and path suffix.
pub fn detect(head: &RequestHead) -> Option<Box<dyn ProviderDialect>> {
    if head.method != "POST" {
        return None;
    }
    let path = super::route_path(head);
    if !path.ends_with("/api/v1/services/aigc/text-generation/generation")
        && !path.ends_with("/api/v1/services/aigc/multimodal-generation/generation")
    {
        return None;
    }
    let sse_header = head
        .header("x-dashscope-sse")
        .is_some_and(|v| v.eq_ignore_ascii_case("enable"));
    Some(Box::new(DashScope {
        sse_header,
        incremental: false,
        chat: true,
        seen: Vec::new(),
    }))
}

json_object! {
    /// One response object: a stream event or a whole body.
    struct Object<'a> {
        "request_id" => request_id: Scalar<'a>,
        "model" => model: Scalar<'a>,
        "usage" => usage: Box<UsageView<'a>>,
        "code" => code: Scalar<'a>,
        "output" => output: Output<'a>,
    }
}

json_object! {
    /// `output`: the `choices` form or the older `text` form.
    struct Output<'a> {
        "finish_reason" => finish_reason: Scalar<'a>,
        "text" => text: Scalar<'a>,
        "choices" => choices: List<Choice<'a>>,
    }
}

json_object! {
    /// One of `output.choices`.
    struct Choice<'a> {
        "finish_reason" => finish_reason: Scalar<'a>,
        "message" => message: Message<'a>,
    }
}

json_object! {
    /// A choice's `message`.
    struct Message<'a> {
        "reasoning_content" => reasoning_content: Scalar<'a>,
        "content" => content: ContentText<'a>,
        "tool_calls" => tool_calls: List<ToolCall<'a>>,
    }
}

/// Reads a DashScope `usage` object into `out`.
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
    let cached = |d: &Option<Details<'_>>| d.as_ref().and_then(|d| as_u64(&d.cached_tokens));
    if let Some(n) = cached(&usage.prompt_details).or_else(|| cached(&usage.input_details)) {
        out.cached_input_tokens = Some(n);
    }
}

/// Text of a message `content`: a string, or (multimodal) an array of parts with `text`.
fn text_of(c: Option<&Value>) -> String {
    match c {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Characters of prompt text in a message `content` (a string or an array of parts).
fn content_chars(c: Option<&Value>) -> u64 {
    text_of(c).chars().count() as u64
}

/// A finish reason, `"null"` (DashScope's "not yet") counting as none.
fn finish_reason(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty() && *s != "null")
}

impl DashScope {
    fn choice_seen(&mut self, i: usize) -> Option<&mut ChoiceSeen> {
        if i >= MAX_TRACKED_CHOICES {
            return None;
        }
        if self.seen.len() <= i {
            self.seen.resize(i + 1, ChoiceSeen::default());
        }
        self.seen.get_mut(i)
    }

    /// Notes the tool calls of choice `choice` and the new part of their arguments: the bytes
    /// from `new_from` on of their arguments laid end to end. A stream notes each call under
    /// its `index` (or place in the list): without `incremental_output` every event repeats
    /// the calls so far, which count once.
    fn note_calls(
        &self,
        choice: usize,
        calls: &[ToolCall<'_>],
        new_from: usize,
        stream: bool,
        out: &mut Observed,
    ) {
        let mut at = 0;
        for (pos, call) in calls.iter().enumerate() {
            let args = call
                .function
                .as_ref()
                .and_then(|f| as_str(&f.arguments))
                .unwrap_or("");
            let index = if stream {
                let i = as_u64(&call.index).unwrap_or(pos as u64);
                super::tool_index(choice as u64, i)
            } else {
                None
            };
            if call.is_object {
                let name = call.function.as_ref().and_then(|f| nonempty(&f.name));
                out.note_tool_call(index, nonempty(&call.id), name);
            }
            // `new_from` is a character boundary of the joined text, hence of each piece.
            let start = new_from.saturating_sub(at).min(args.len());
            if let Some(new) = args.get(start..).filter(|n| !n.is_empty()) {
                out.note_tool_args(index, new);
            }
            at += args.len();
        }
    }

    /// Reads `output` (the `choices` form or the older `text` form); returns the most
    /// output-like kind that carried new text. `stream`: an event of a stream, not a whole
    /// body.
    fn read_output(
        &mut self,
        output: &Output<'_>,
        incremental: bool,
        stream: bool,
        out: &mut Observed,
    ) -> OutputKind {
        let mut kind = OutputKind::None;
        let mut finish = finish_reason(as_str(&output.finish_reason)).map(str::to_owned);
        if let Some(text) = as_str(&output.text) {
            let mut fresh = ChoiceSeen::default();
            let seen = self.choice_seen(0).unwrap_or(&mut fresh);
            let new = seen.answer.advance(text, incremental);
            if !new.is_empty() {
                out.note_output(new);
                kind = OutputKind::Answer;
            }
        }
        if is_array(&output.choices) {
            for (i, c) in items(&output.choices).iter().enumerate() {
                if let Some(fr) = finish_reason(as_str(&c.finish_reason)) {
                    finish = Some(fr.to_owned());
                }
                let Some(m) = &c.message else {
                    continue;
                };
                let reasoning = as_str(&m.reasoning_content).unwrap_or("");
                let answer = m.content.as_ref().map_or("", |c| &c.0);
                let calls = items(&m.tool_calls);
                let args: String = calls
                    .iter()
                    .filter_map(|call| call.function.as_ref().and_then(|f| as_str(&f.arguments)))
                    .collect();
                let mut fresh = ChoiceSeen::default();
                // Choices past the tracked ones are read as deltas.
                let (seen, incremental) = match self.choice_seen(i) {
                    Some(seen) => (seen, incremental),
                    None => (&mut fresh, true),
                };
                let r = seen.reasoning.advance(reasoning, incremental);
                let a = seen.answer.advance(answer, incremental);
                // The new part of the calls' arguments, read as one text as before, then shared
                // out among the calls it belongs to.
                let new_args = seen.tool_args.advance(&args, incremental);
                let new_from = args.len() - new_args.len();
                if !r.is_empty() {
                    out.note_reasoning(r);
                }
                if !a.is_empty() {
                    out.note_output(a);
                }
                self.note_calls(i, calls, new_from, stream, out);
                if !a.is_empty() || !new_args.is_empty() {
                    kind = OutputKind::Answer;
                } else if !r.is_empty() && kind == OutputKind::None {
                    kind = OutputKind::Reasoning;
                }
            }
        }
        if let Some(fr) = finish {
            out.finish_reason = Some(fr);
            out.terminal = true;
        }
        kind
    }

    /// Reads one response object (a stream event or a whole body).
    fn read_object(
        &mut self,
        v: &Object<'_>,
        incremental: bool,
        stream: bool,
        out: &mut Observed,
    ) -> OutputKind {
        if !v.is_object {
            return OutputKind::None;
        }
        if let Some(id) = nonempty(&v.request_id) {
            out.response_id.get_or_insert_with(|| id.to_owned());
        }
        if let Some(m) = nonempty(&v.model) {
            super::set_text(&mut out.response_model, m);
        }
        if let Some(usage) = &v.usage {
            read_usage(usage, &mut out.usage);
        }
        if let Some(code) = nonempty(&v.code) {
            out.error = Some(code.to_owned());
        }
        match &v.output {
            Some(output) if output.is_object => self.read_output(output, incremental, stream, out),
            _ => OutputKind::None,
        }
    }
}

impl ProviderDialect for DashScope {
    fn provider(&self) -> &'static str {
        "dashscope"
    }

    fn api(&self) -> &'static str {
        "dashscope.generation"
    }

    fn operation(&self) -> &'static str {
        if self.chat { "chat" } else { "text_completion" }
    }

    fn on_request_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = body.json() else {
            let body = body.raw();
            // A body cut by a capture gap: the model and flags usually sit before the gap.
            out.request_model = super::scan_json_string(body, "model");
            self.incremental = super::scan_json_bool(body, "incremental_output") == Some(true);
            out.stream = Some(
                self.sse_header
                    || self.incremental
                    || super::scan_json_bool(body, "stream") == Some(true),
            );
            self.chat = contains(body, b"\"messages\"") || !contains(body, b"\"prompt\"");
            return;
        };
        out.request_model = s(v, "model");
        let params = v.get("parameters");
        let flag = |key: &str| {
            params
                .and_then(|p| p.get(key))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        self.incremental = flag("incremental_output");
        out.stream = Some(
            self.sse_header
                || self.incremental
                || flag("stream")
                || v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        );
        let input = v.get("input");
        let messages = input
            .and_then(|i| i.get("messages"))
            .and_then(Value::as_array);
        self.chat = messages.is_some();
        let mut n = 0;
        for m in messages.into_iter().flatten() {
            n += content_chars(m.get("content"));
        }
        n += content_chars(input.and_then(|i| i.get("prompt")));
        out.prompt_chars = n;
    }

    fn on_stream_event(&mut self, ev: &Event<'_>, out: &mut Observed) -> OutputKind {
        if ev.text.is_empty() {
            return OutputKind::None;
        }
        let parsed = ev.parse::<Object<'_>>();
        if ev.name == Some("error") {
            let code = parsed.as_ref().and_then(|v| nonempty(&v.code));
            out.error = Some(code.unwrap_or("error").to_owned());
        }
        let Some(v) = parsed else {
            return OutputKind::None;
        };
        let incremental = self.incremental;
        self.read_object(&v, incremental, true, out)
    }

    fn on_response_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = body.parse::<Object<'_>>() else {
            return;
        };
        // One body: its text is read whole, once.
        self.read_object(&v, true, false, out);
        out.terminal = true;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Usage;
    use crate::llm::test_support::Feed;
    use crate::protocol::StreamEvent;

    const PATH: &str = "/api/v1/services/aigc/text-generation/generation";

    fn head(method: &str, path: &str, sse: bool) -> RequestHead {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if sse {
            headers.push(("x-dashscope-sse".to_owned(), "enable".to_owned()));
        }
        RequestHead {
            method: method.into(),
            path: path.into(),
            headers,
        }
    }

    fn dialect(sse: bool) -> Box<dyn ProviderDialect> {
        detect(&head("POST", PATH, sse)).expect("detected")
    }

    fn ev(data: &str) -> StreamEvent {
        StreamEvent {
            event: Some("result".into()),
            data: data.into(),
            id: Some("1".into()),
        }
    }

    #[test]
    fn detects_by_path() {
        let d = dialect(false);
        assert_eq!(
            (d.provider(), d.api(), d.operation()),
            ("dashscope", "dashscope.generation", "chat")
        );
        assert!(
            detect(&head(
                "POST",
                "/api/v1/services/aigc/multimodal-generation/generation",
                true
            ))
            .is_some()
        );
        assert!(
            detect(&head(
                "POST",
                "/gw/api/v1/services/aigc/text-generation/generation/?a=1",
                false
            ))
            .is_some()
        );
        assert!(detect(&head("GET", PATH, false)).is_none());
        assert!(
            detect(&head(
                "POST",
                "/api/v1/services/embeddings/text-embedding/text-embedding",
                false
            ))
            .is_none()
        );
        assert!(detect(&head("POST", "/compatible-mode/v1/chat/completions", false)).is_none());
        assert!(
            detect(&head(
                "POST",
                "/api/v1/services/aigc/text-generation/generation/x",
                false
            ))
            .is_none()
        );
    }

    #[test]
    fn reads_requests() {
        let mut d = dialect(true);
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"qwen-plus","input":{"messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Who are you?"}]},"parameters":{"result_format":"message","incremental_output":true}}"#,
            &mut o,
        );
        assert_eq!(o.request_model.as_deref(), Some("qwen-plus"));
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 16 + 12);
        assert_eq!(d.operation(), "chat");

        // No SSE header, no incremental output: not streamed; a prompt makes it a completion.
        let mut d = dialect(false);
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"qwen-turbo","input":{"prompt":"hello"}}"#,
            &mut o,
        );
        assert_eq!(o.stream, Some(false));
        assert_eq!(o.prompt_chars, 5);
        assert_eq!(d.operation(), "text_completion");

        // Incremental output alone says stream; multimodal parts count their text only.
        let mut d = dialect(false);
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"qwen-vl-plus","input":{"messages":[{"role":"user","content":[{"image":"https://x/y.png"},{"text":"describe"}]}]},"parameters":{"incremental_output":true}}"#,
            &mut o,
        );
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 8);
        assert_eq!(d.operation(), "chat");
    }

    #[test]
    fn reads_a_request_cut_by_a_gap() {
        let mut d = dialect(false);
        let mut o = Observed::default();
        d.feed_request(
            b"{\"model\":\"qwen-max\",\"input\":{\"messages\":[{\"role\":\"user\",\"content\":\"w0\0w9\"}]},\"parameters\":{\"incremental_output\":true}}",
            &mut o,
        );
        assert!(o.request_model.as_deref() == Some("qwen-max"));
        assert_eq!(o.stream, Some(true));
        assert_eq!(d.operation(), "chat");

        let mut d = dialect(true);
        let mut o = Observed::default();
        d.feed_request(
            b"{\"model\":\"qwen-max\",\"input\":{\"prompt\":\"w0\0w9\"}}",
            &mut o,
        );
        assert_eq!(o.stream, Some(true));
        assert_eq!(d.operation(), "text_completion");
    }

    #[test]
    fn reads_an_incremental_stream_reasoning_then_answer() {
        let mut d = dialect(true);
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"qwen-plus","input":{"messages":[{"role":"user","content":"hi"}]},"parameters":{"result_format":"message","incremental_output":true,"enable_thinking":true}}"#,
            &mut o,
        );
        let frames = [
            (
                r#"{"output":{"choices":[{"message":{"content":"","reasoning_content":"The","role":"assistant"},"finish_reason":"null"}]},"usage":{"total_tokens":290,"output_tokens":3,"input_tokens":287,"output_tokens_details":{"reasoning_tokens":1}},"request_id":"a1959ad1-1111"}"#,
                OutputKind::Reasoning,
            ),
            (
                r#"{"output":{"choices":[{"message":{"content":"","reasoning_content":" user","role":"assistant"},"finish_reason":"null"}]},"usage":{"total_tokens":291,"output_tokens":4,"input_tokens":287,"output_tokens_details":{"reasoning_tokens":2}},"request_id":"a1959ad1-1111"}"#,
                OutputKind::Reasoning,
            ),
            (
                r#"{"output":{"choices":[{"message":{"content":"Hello","reasoning_content":"","role":"assistant"},"finish_reason":"null"}]},"usage":{"total_tokens":292,"output_tokens":5,"input_tokens":287,"output_tokens_details":{"reasoning_tokens":2}},"request_id":"a1959ad1-1111"}"#,
                OutputKind::Answer,
            ),
            (
                r#"{"output":{"choices":[{"message":{"content":"!","reasoning_content":"","role":"assistant"},"finish_reason":"null"}]},"usage":{"total_tokens":293,"output_tokens":6,"input_tokens":287,"output_tokens_details":{"reasoning_tokens":2}},"request_id":"a1959ad1-1111"}"#,
                OutputKind::Answer,
            ),
            (
                r#"{"output":{"choices":[{"message":{"content":"","reasoning_content":"","role":"assistant"},"finish_reason":"stop"}]},"usage":{"total_tokens":293,"output_tokens":6,"input_tokens":287,"output_tokens_details":{"reasoning_tokens":2},"prompt_tokens_details":{"cached_tokens":256}},"request_id":"a1959ad1-1111"}"#,
                OutputKind::None,
            ),
        ];
        for (i, (data, kind)) in frames.iter().enumerate() {
            assert_eq!(d.feed_event(&ev(data), &mut o), *kind, "frame {i}");
            assert_eq!(o.terminal, i == frames.len() - 1, "frame {i}");
            if i < frames.len() - 1 {
                assert_eq!(o.finish_reason, None, "\"null\" is not a finish reason");
            }
        }
        assert_eq!(o.finish_reason.as_deref(), Some("stop"));
        assert_eq!(o.response_id.as_deref(), Some("a1959ad1-1111"));
        assert_eq!(o.output_chars, 3 + 5 + 5 + 1);
        assert_eq!(
            o.usage,
            Usage {
                input_tokens: Some(287),
                output_tokens: Some(6),
                reasoning_tokens: Some(2),
                cached_input_tokens: Some(256),
            }
        );
        assert_eq!(o.error, None);
    }

    #[test]
    fn non_incremental_text_counts_growth_only() {
        let mut d = dialect(true);
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"qwen-plus","input":{"messages":[{"role":"user","content":"hi"}]},"parameters":{"result_format":"message"}}"#,
            &mut o,
        );
        let frame = |content: &str, fr: &str, out_tokens: u64| {
            format!(
                r#"{{"output":{{"choices":[{{"message":{{"content":"{content}","role":"assistant"}},"finish_reason":"{fr}"}}]}},"usage":{{"total_tokens":{},"output_tokens":{out_tokens},"input_tokens":10}},"request_id":"r1"}}"#,
                10 + out_tokens
            )
        };
        let steps = [
            ("Hel", "null", 1, OutputKind::Answer, 3),
            ("Hello", "null", 2, OutputKind::Answer, 5),
            // The same text again: nothing new, not output-bearing.
            ("Hello", "null", 2, OutputKind::None, 5),
            ("Hello, wörld", "null", 4, OutputKind::Answer, 12),
            ("Hello, wörld", "stop", 4, OutputKind::None, 12),
        ];
        for (content, fr, n, kind, total) in steps {
            assert_eq!(
                d.feed_event(&ev(&frame(content, fr, n)), &mut o),
                kind,
                "{content}"
            );
            assert_eq!(o.output_chars, total, "{content}");
            assert_eq!(o.usage.output_tokens, Some(n));
        }
        assert!(o.terminal);
        assert_eq!(o.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn non_incremental_reasoning_and_the_text_form() {
        let mut d = dialect(true);
        let mut o = Observed::default();
        d.feed_request(br#"{"model":"qwen-turbo","input":{"prompt":"hi"}}"#, &mut o);
        let msg = |r: &str, c: &str| {
            format!(
                r#"{{"output":{{"choices":[{{"message":{{"content":"{c}","reasoning_content":"{r}","role":"assistant"}},"finish_reason":"null"}}]}},"request_id":"r"}}"#
            )
        };
        assert_eq!(
            d.feed_event(&ev(&msg("ab", "")), &mut o),
            OutputKind::Reasoning
        );
        assert_eq!(
            d.feed_event(&ev(&msg("abcd", "")), &mut o),
            OutputKind::Reasoning
        );
        assert_eq!(
            d.feed_event(&ev(&msg("abcd", "x")), &mut o),
            OutputKind::Answer
        );
        assert_eq!(
            d.feed_event(&ev(&msg("abcd", "x")), &mut o),
            OutputKind::None
        );
        assert_eq!(o.output_chars, 5);

        // The older `output.text` form.
        let mut d = dialect(true);
        let mut o = Observed::default();
        d.feed_request(br#"{"model":"qwen-turbo","input":{"prompt":"hi"}}"#, &mut o);
        let text = |t: &str, fr: &str| {
            format!(
                r#"{{"output":{{"finish_reason":"{fr}","text":"{t}"}},"usage":{{"total_tokens":9,"output_tokens":{},"input_tokens":5}},"request_id":"r2"}}"#,
                t.len()
            )
        };
        assert_eq!(
            d.feed_event(&ev(&text("I am", "null")), &mut o),
            OutputKind::Answer
        );
        assert_eq!(
            d.feed_event(&ev(&text("I am Qwen", "null")), &mut o),
            OutputKind::Answer
        );
        assert_eq!(
            d.feed_event(&ev(&text("I am Qwen", "stop")), &mut o),
            OutputKind::None
        );
        assert_eq!(o.output_chars, 9);
        assert_eq!(o.finish_reason.as_deref(), Some("stop"));
        assert!(o.terminal);
        assert_eq!(o.usage.output_tokens, Some(9));
        assert_eq!(o.response_id.as_deref(), Some("r2"));
    }

    #[test]
    fn deltas_without_incremental_output_count_whole() {
        // The server streams deltas although the request did not ask for them.
        let mut d = dialect(true);
        let mut o = Observed::default();
        d.feed_request(br#"{"model":"qwq-plus","input":{"messages":[]}}"#, &mut o);
        let msg = |c: &str| {
            format!(
                r#"{{"output":{{"choices":[{{"message":{{"content":"{c}"}},"finish_reason":"null"}}]}}}}"#
            )
        };
        for c in ["The", " cat", " sat"] {
            assert_eq!(d.feed_event(&ev(&msg(c)), &mut o), OutputKind::Answer);
        }
        assert_eq!(o.output_chars, 11);
    }

    #[test]
    fn tool_call_arguments_are_answer_output() {
        let mut d = dialect(true);
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"qwen-plus","input":{"messages":[]},"parameters":{"incremental_output":true}}"#,
            &mut o,
        );
        assert_eq!(
            d.feed_event(&ev(r#"{"output":{"choices":[{"message":{"content":"","role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":"}}]},"finish_reason":"null"}]},"request_id":"r"}"#), &mut o),
            OutputKind::Answer
        );
        d.feed_event(&ev(r#"{"output":{"choices":[{"message":{"content":"","role":"assistant"},"finish_reason":"tool_calls"}]},"request_id":"r"}"#), &mut o);
        assert_eq!(o.output_chars, 8);
        assert_eq!(o.finish_reason.as_deref(), Some("tool_calls"));
        assert!(o.terminal);
    }

    #[test]
    fn reads_errors() {
        let mut d = dialect(true);
        let mut o = Observed::default();
        let err = StreamEvent {
            event: Some("error".into()),
            data: r#"{"code":"InvalidParameter","message":"Range of input length should be [1, 30720]","request_id":"e1"}"#.into(),
            id: Some("1".into()),
        };
        assert_eq!(d.feed_event(&err, &mut o), OutputKind::None);
        assert_eq!(o.error.as_deref(), Some("InvalidParameter"));
        assert_eq!(o.response_id.as_deref(), Some("e1"));

        let mut o = Observed::default();
        let bare = StreamEvent {
            event: Some("error".into()),
            data: "oops".into(),
            id: None,
        };
        d.feed_event(&bare, &mut o);
        assert_eq!(o.error.as_deref(), Some("error"));

        let mut o = Observed::default();
        d.feed_response(
            br#"{"code":"InvalidApiKey","message":"Invalid API-key provided.","request_id":"e2"}"#,
            &mut o,
        );
        assert_eq!(o.error.as_deref(), Some("InvalidApiKey"));
    }

    #[test]
    fn reads_non_stream_bodies() {
        let mut d = dialect(false);
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"qwen-plus","input":{"messages":[{"role":"user","content":"hi"}]},"parameters":{"result_format":"message"}}"#,
            &mut o,
        );
        d.feed_response(
            br#"{"output":{"choices":[{"finish_reason":"stop","message":{"role":"assistant","content":"I am Qwen.","reasoning_content":"ok"}}]},"usage":{"total_tokens":30,"output_tokens":5,"input_tokens":25},"request_id":"5f1a"}"#,
            &mut o,
        );
        assert!(o.terminal);
        assert_eq!(o.output_chars, 12);
        assert_eq!(o.finish_reason.as_deref(), Some("stop"));
        assert_eq!(o.response_id.as_deref(), Some("5f1a"));
        assert_eq!(o.usage.input_tokens, Some(25));
        assert_eq!(o.usage.output_tokens, Some(5));
        assert_eq!(o.error, None);

        // Multimodal: content is an array of parts.
        let mut o = Observed::default();
        d.feed_response(
            br#"{"output":{"choices":[{"finish_reason":"stop","message":{"role":"assistant","content":[{"text":"A cat."}]}}]},"usage":{"output_tokens":3,"input_tokens":1200,"input_tokens_details":{"text_tokens":20,"image_tokens":1180}},"request_id":"m1"}"#,
            &mut o,
        );
        assert_eq!(o.output_chars, 6);
        assert_eq!(o.usage.input_tokens, Some(1200));
    }

    #[test]
    fn survives_garbage() {
        let mut d = dialect(false);
        let mut o = Observed::default();
        d.feed_request(b"\xff", &mut o);
        assert_eq!(o.stream, Some(false));
        let mut o = Observed::default();
        d.feed_response(b"\x00\xff", &mut o);
        for data in [
            "{not json",
            "[1]",
            r#"{"output":"x","usage":[1],"request_id":5,"code":7}"#,
            r#"{"output":{"choices":"x","text":5,"finish_reason":"null"}}"#,
            r#"{"output":{"choices":[5,{"message":"m"},{"message":{"content":7,"reasoning_content":[1],"tool_calls":{"a":1}}}]}}"#,
        ] {
            assert_eq!(d.feed_event(&ev(data), &mut o), OutputKind::None, "{data}");
        }
        // Many choices: tracking stays bounded.
        let many = format!(
            r#"{{"output":{{"choices":[{}]}}}}"#,
            vec![r#"{"message":{"content":""}}"#; 100].join(",")
        );
        assert_eq!(d.feed_event(&ev(&many), &mut o), OutputKind::None);
        assert_eq!(o, Observed::default());
    }

    /// Without `incremental_output` every event repeats the calls so far: each counts once, its
    /// arguments only by what they grew.
    #[test]
    fn whole_text_events_repeat_tool_calls() {
        use crate::llm::test_support::assert_tools;
        let mut d = dialect(true);
        let mut o = Observed::default();
        d.feed_request(br#"{"model":"qwen-plus","input":{"messages":[]}}"#, &mut o);
        let call = |args0: &str, second: bool| {
            let mut calls = format!(
                r#"{{"index":0,"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{args0}"}}}}"#
            );
            if second {
                calls.push_str(r#",{"index":1,"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}"#);
            }
            format!(
                r#"{{"output":{{"choices":[{{"message":{{"content":"","role":"assistant","tool_calls":[{calls}]}},"finish_reason":"null"}}]}},"request_id":"r"}}"#
            )
        };
        for (a, second) in [
            ("{", false),
            ("{\\\"c\\\":1", false),
            ("{\\\"c\\\":1}", true),
        ] {
            assert_eq!(
                d.feed_event(&ev(&call(a, second)), &mut o),
                OutputKind::Answer
            );
        }
        d.feed_event(&ev(r#"{"output":{"choices":[{"message":{"content":"","role":"assistant"},"finish_reason":"tool_calls"}]},"request_id":"r"}"#), &mut o);
        assert_tools(&o, 2, &["get_weather", "get_time"], &["call_1", "call_2"]);
        assert_eq!(o.output_chars, 7 + 2);
        assert_eq!(o.finish_reason.as_deref(), Some("tool_calls"));
    }

    #[test]
    fn incremental_and_whole_tool_calls() {
        use crate::llm::test_support::{assert_tools, long_tool_id, long_tool_name};
        let mut d = dialect(true);
        let mut o = Observed::default();
        d.feed_request(
            br#"{"model":"qwen-plus","input":{"messages":[]},"parameters":{"incremental_output":true}}"#,
            &mut o,
        );
        for f in [
            r#"{"output":{"choices":[{"message":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"c\":"}}]},"finish_reason":"null"}]}}"#,
            r#"{"output":{"choices":[{"message":{"role":"assistant","tool_calls":[{"index":0,"id":"","type":"function","function":{"arguments":"1}"}}]},"finish_reason":"null"}]}}"#,
        ] {
            d.feed_event(&ev(f), &mut o);
        }
        assert_tools(&o, 1, &["get_weather"], &["call_1"]);
        assert_eq!(o.output_chars, 7);

        let mut d = dialect(false);
        let mut o = Observed::default();
        let (name, id) = (long_tool_name(), long_tool_id());
        d.feed_response(
            format!(r#"{{"output":{{"choices":[{{"message":{{"content":"","tool_calls":[{{"id":"call_9","function":{{"name":"a","arguments":"{{}}"}}}},{{"id":"{id}","function":{{"name":"{name}","arguments":"[]"}}}},5]}},"finish_reason":"tool_calls"}}]}}}}"#).as_bytes(),
            &mut o,
        );
        assert_eq!(o.tools.calls, 2);
        assert_eq!(o.tools.call_ids, ["call_9"]);
        assert!(o.tools.names[1].len() <= crate::llm::MAX_FIELD_BYTES);
        assert_eq!(o.output_chars, 4);
    }
}
