//! What the exchange hands a dialect, parsed at most once, and the request readers the dialects
//! share.
//!
//! * [`Body`]: a request body or a whole response body. A request body's `Value`
//!   ([`Body::json`]) is parsed on first ask and kept: the candidate check, the dialect and the
//!   prompt sample share it. A response body is read once through a typed view
//!   ([`Body::parse`], see [`super::typed`]).
//! * [`Event`]: one framed stream event (SSE event, NDJSON line, JSON-array element): its name,
//!   its trimmed data, and one parse of the data, through the dialect's typed view
//!   ([`Event::parse`]); the exchange's bad-JSON count ([`Event::is_bad_json`]) reuses the
//!   outcome of that parse (and parses only the data of an event the dialect did not parse).
//! * Readers of request bodies as `serde_json::Value` (missing or mistyped fields are `None`,
//!   never a panic): model and stream flag, content-text counters, the prompt-text walk over
//!   `PROMPT_TEXT_KEYS`, and [`read_request_tools`] (tool definitions and tool-result ids, every
//!   dialect's shapes, called once per request by the exchange; bounded: at most 4096 items per
//!   list, the ids kept as `Observed::note_tool_result` bounds them). The typed views that read responses and stream events, with the
//!   shared `usage`, `error` and content-text views, are in [`super::typed`].

use std::cell::{Cell, OnceCell};

use serde_json::Value;

use super::{Observed, tokens};
use crate::protocol::EventRef;

/// A request body or a whole response body, with its JSON parsed at most once.
pub struct Body<'a> {
    raw: &'a [u8],
    json: OnceCell<Option<Value>>,
}

impl<'a> Body<'a> {
    /// A body to parse when first asked.
    pub fn new(raw: &'a [u8]) -> Self {
        Body {
            raw,
            json: OnceCell::new(),
        }
    }

    /// The bytes (possibly cut by a cap or a capture gap).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The body's JSON, or None if it does not parse (cut, not JSON).
    pub fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| serde_json::from_slice(self.raw).ok())
            .as_ref()
    }

    /// The body read as a typed view (see [`super::typed`]), or None if it does not parse.
    pub fn parse<T: serde::Deserialize<'a>>(&self) -> Option<T> {
        serde_json::from_slice(self.raw).ok()
    }
}

/// One stream event, with its data's JSON parsed at most once.
pub struct Event<'a> {
    /// The SSE `event:` name, if any.
    pub name: Option<&'a str>,
    /// The data, trimmed of surrounding whitespace.
    pub text: &'a str,
    json: OnceCell<Option<Value>>,
    /// Whether the data parsed, once a typed view was read.
    parsed: Cell<Option<bool>>,
}

impl<'a> Event<'a> {
    /// The event to hand to a dialect.
    pub fn new(ev: impl Into<EventRef<'a>>) -> Self {
        let ev = ev.into();
        Event {
            name: ev.event,
            text: ev.data.trim(),
            json: OnceCell::new(),
            parsed: Cell::new(None),
        }
    }

    /// The data read as a typed view, or None if it is empty or does not parse. `T` is a view
    /// built from [`super::typed`], which accepts exactly the JSON a `Value` does, so that the
    /// outcome also tells [`Event::is_bad_json`]. Each call parses: a dialect calls it once.
    #[inline(always)]
    pub fn parse<T: serde::Deserialize<'a>>(&self) -> Option<T> {
        if self.text.is_empty() {
            return None;
        }
        let r = serde_json::from_str(self.text).ok();
        self.parsed.set(Some(r.is_some()));
        r
    }

    /// The data's JSON, or None if it is empty or does not parse.
    pub fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| {
                if self.text.is_empty() {
                    None
                } else {
                    serde_json::from_str(self.text).ok()
                }
            })
            .as_ref()
    }

    /// The data is neither empty, nor OpenAI's `[DONE]`, nor JSON: a bad stream event.
    pub fn is_bad_json(&self) -> bool {
        if self.text.is_empty() || self.text == "[DONE]" {
            return false;
        }
        match self.parsed.get() {
            Some(ok) => !ok,
            None => self.json().is_none(),
        }
    }
}

/// A non-empty string, if the value is one.
pub(crate) fn nonempty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The non-empty string field `key`, owned.
pub(crate) fn string_at(v: &Value, key: &str) -> Option<String> {
    nonempty_str(v.get(key)).map(str::to_owned)
}

/// Characters (not bytes) of a string.
pub(crate) fn chars(s: &str) -> u64 {
    s.chars().count() as u64
}

/// Notes a request's `model` and `stream` flag (absent: not streamed) and returns its JSON. A
/// body that does not parse (cut by a capture gap) still gives both by scan, and yields None.
pub(crate) fn request_body<'b>(body: &'b Body<'_>, out: &mut Observed) -> Option<&'b Value> {
    let Some(v) = body.json() else {
        // The model and stream flag usually sit before the gap.
        out.request_model = super::scan_json_string(body.raw(), "model");
        out.stream = super::scan_json_bool(body.raw(), "stream");
        return None;
    };
    out.request_model = string_at(v, "model");
    out.stream = Some(v.get("stream").and_then(Value::as_bool).unwrap_or(false));
    Some(v)
}

/// Characters of the string `text` members of an array's elements (parts of a message content);
/// not an array: 0.
pub(crate) fn parts_text_chars(parts: Option<&Value>) -> u64 {
    parts
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(chars)
                .sum()
        })
        .unwrap_or(0)
}

/// Most items of one request list (messages, input items, contents) read for tool results.
const MAX_TOOL_RESULT_ITEMS: usize = 4096;

/// Reads what a request says about tools, for every dialect's body shape (one walk over the
/// parsed request): the tool definitions it declares ([`Observed::note_tool_definitions`]) and
/// the ids of the earlier tool calls whose results it carries ([`Observed::note_tool_result`]).
///
/// Definitions: top-level `tools` (OpenAI chat, Responses API, Anthropic, Ollama; Gemini's
/// `Tool` objects count each of their `functionDeclarations` and each other tool kind, e.g.
/// `googleSearch`, as one), the legacy `functions`, and DashScope's `parameters.tools`. None
/// declared (or empty lists): nothing noted.
///
/// Results, in `messages` (or DashScope's `input.messages`), `input` and `contents`: a message
/// with a `tool_call_id` (OpenAI, DashScope, Ollama `role: "tool"`), a `*_call_output` item's
/// `call_id` (Responses API `function_call_output`, `custom_tool_call_output`, ...), a
/// `tool_result` content block's `tool_use_id` (Anthropic), a `functionResponse` part's `id`
/// (Gemini).
pub(crate) fn read_request_tools(v: &Value, out: &mut Observed) {
    let params_tools = v.get("parameters").and_then(|p| p.get("tools"));
    let mut defs = 0u32;
    for tools in [v.get("tools"), params_tools].into_iter().flatten() {
        if let Some(tools) = tools.as_array() {
            for t in tools {
                defs = defs.saturating_add(tool_definitions_in(t));
            }
        }
    }
    if let Some(f) = v.get("functions").and_then(Value::as_array) {
        defs = defs.saturating_add(u32::try_from(f.len()).unwrap_or(u32::MAX));
    }
    if defs > 0 {
        out.note_tool_definitions(defs);
    }
    let input_messages = v.get("input").and_then(|i| i.get("messages"));
    for list in [
        v.get("messages"),
        v.get("input"),
        input_messages,
        v.get("contents"),
    ]
    .into_iter()
    .flatten()
    {
        match list {
            Value::Array(items) => {
                for item in items.iter().take(MAX_TOOL_RESULT_ITEMS) {
                    tool_results_in(item, out);
                }
            }
            item @ Value::Object(_) => tool_results_in(item, out),
            _ => {}
        }
    }
}

/// Tool definitions in one element of a `tools` list: one, or for a Gemini `Tool` (an object
/// with neither `type`, `function` nor `name`) its function declarations plus one per other
/// kind of tool it enables.
fn tool_definitions_in(t: &Value) -> u32 {
    let Some(map) = t.as_object() else {
        return 0;
    };
    if ["type", "function", "name"]
        .iter()
        .any(|k| map.contains_key(*k))
    {
        return 1;
    }
    map.iter()
        .map(|(k, x)| match (k.as_str(), x) {
            ("functionDeclarations" | "function_declarations", Value::Array(d)) => {
                u32::try_from(d.len()).unwrap_or(u32::MAX)
            }
            ("functionDeclarations" | "function_declarations", _) | (_, Value::Null) => 0,
            _ => 1,
        })
        .fold(0u32, u32::saturating_add)
}

/// The tool results one message, input item or content carries.
fn tool_results_in(item: &Value, out: &mut Observed) {
    if !item.is_object() {
        return;
    }
    if let Some(id) = nonempty_str(item.get("tool_call_id")) {
        out.note_tool_result(id);
    }
    if item
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with("_call_output"))
        && let Some(id) = nonempty_str(item.get("call_id"))
    {
        out.note_tool_result(id);
    }
    if let Some(blocks) = item.get("content").and_then(Value::as_array) {
        for b in blocks.iter().take(MAX_TOOL_RESULT_ITEMS) {
            if b.get("type").and_then(Value::as_str) == Some("tool_result")
                && let Some(id) = nonempty_str(b.get("tool_use_id"))
            {
                out.note_tool_result(id);
            }
        }
    }
    if let Some(parts) = item.get("parts").and_then(Value::as_array) {
        for p in parts.iter().take(MAX_TOOL_RESULT_ITEMS) {
            let resp = p
                .get("functionResponse")
                .or_else(|| p.get("function_response"));
            if let Some(id) = resp.and_then(|r| nonempty_str(r.get("id"))) {
                out.note_tool_result(id);
            }
        }
    }
}

/// Keys whose string values are prompt text in the request bodies of the dialects.
pub(crate) const PROMPT_TEXT_KEYS: &[&str] = &[
    "content",
    "text",
    "prompt",
    "input",
    "system",
    "instructions",
];

/// Largest request body whose prompt text is sampled for token estimates.
pub(crate) const MAX_PROMPT_SAMPLE_BODY: usize = 1 << 20;

/// The start of a request's prompt text, for token estimates: the strings under
/// [`PROMPT_TEXT_KEYS`], in order (bodies up to [`MAX_PROMPT_SAMPLE_BODY`]).
pub(crate) fn prompt_sample(body: &Body<'_>) -> String {
    let mut out = String::new();
    if body.raw().len() > MAX_PROMPT_SAMPLE_BODY {
        return out;
    }
    if let Some(v) = body.json() {
        collect_prompt_text(v, false, &mut out);
    }
    // Held as it is until the call ends: without the growth slack.
    out.shrink_to_fit();
    out
}

fn collect_prompt_text(v: &Value, is_text: bool, out: &mut String) {
    if out.len() >= 4 * tokens::SAMPLE_CHARS {
        return;
    }
    match v {
        Value::String(s) if is_text => tokens::add_to_sample(out, s),
        Value::Array(items) => {
            for item in items {
                collect_prompt_text(item, is_text, out);
            }
        }
        Value::Object(map) => {
            for (k, x) in map {
                collect_prompt_text(x, PROMPT_TEXT_KEYS.contains(&k.as_str()), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers() {
        let v: Value = serde_json::json!({"a": {"b": 3}, "s": "héllo", "e": "", "n": -1});
        assert_eq!(string_at(&v, "s").as_deref(), Some("héllo"));
        assert_eq!(string_at(&v, "e"), None);
        assert_eq!(chars("héllo"), 5);
    }

    #[test]
    fn content_text() {
        assert_eq!(
            parts_text_chars(Some(&serde_json::json!([{"text": "ab"}, {"x": 1}, "cd"]))),
            2
        );
    }

    #[test]
    fn events_and_bodies_parse_once_and_tell_bad_json() {
        let ev = |d: &str| crate::protocol::StreamEvent::data(d.into());
        for (data, bad) in [
            ("", false),
            ("  \n", false),
            ("[DONE]", false),
            (" {\"a\":1} ", false),
            ("{\"a\":", true),
            ("oops", true),
        ] {
            let e = ev(data);
            assert_eq!(Event::new(&e).is_bad_json(), bad, "{data:?}");
        }
        let e = ev(" {\"a\":1}\n");
        let e = Event::new(&e);
        assert_eq!(e.text, "{\"a\":1}");
        assert!(std::ptr::eq(
            e.json().expect("json"),
            e.json().expect("json")
        ));
        let b = Body::new(br#"{"model":"m","messages":[{"content":"hi"}],"x":{"text":"yo"}}"#);
        assert_eq!(prompt_sample(&b), "hiyo");
        assert!(Body::new(b"{cut").json().is_none());
    }

    fn tools_of(body: &str) -> super::super::ToolUse {
        let v: Value = serde_json::from_str(body).expect("json");
        let mut o = Observed::default();
        read_request_tools(&v, &mut o);
        o.tools
    }

    #[test]
    fn request_tool_definitions_per_dialect() {
        let defs = |b: &str| tools_of(b).definitions;
        // OpenAI chat (and Ollama): a second turn carrying the first turn's results.
        let openai = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"weather in Paris and Rome?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"18C"},{"role":"tool","tool_call_id":"call_2","content":"22C"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}},{"type":"function","function":{"name":"get_time"}}],"tool_choice":"auto"}"#;
        let t = tools_of(openai);
        assert_eq!(t.definitions, Some(2));
        assert_eq!(t.result_ids, ["call_1", "call_2"]);
        assert!(t.call_ids.is_empty() && t.calls == 0);
        // Legacy functions.
        assert_eq!(
            defs(
                r#"{"model":"gpt-3.5-turbo","messages":[],"functions":[{"name":"a"},{"name":"b"},{"name":"c"}]}"#
            ),
            Some(3)
        );
        // Anthropic: client and server tools; tool_result blocks.
        let anthropic = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"tools":[{"name":"get_weather","description":"d","input_schema":{"type":"object"}},{"type":"web_search_20250305","name":"web_search","max_uses":5}],"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"city":"Paris"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01A","content":"18C"},{"type":"text","text":"thanks"}]}]}"#;
        let t = tools_of(anthropic);
        assert_eq!(t.definitions, Some(2));
        assert_eq!(t.result_ids, ["toolu_01A"]);
        // Responses API.
        let responses = r#"{"model":"gpt-4.1","tools":[{"type":"function","name":"get_weather","parameters":{}},{"type":"web_search"},{"type":"custom","name":"run_sql"}],"input":[{"role":"user","content":"weather?"},{"type":"function_call","call_id":"call_A","name":"get_weather","arguments":"{}"},{"type":"function_call_output","call_id":"call_A","output":"18C"},{"type":"custom_tool_call_output","call_id":"call_B","output":"1"}]}"#;
        let t = tools_of(responses);
        assert_eq!(t.definitions, Some(3));
        assert_eq!(t.result_ids, ["call_A", "call_B"]);
        // Gemini: declarations counted one by one, other tool kinds one each.
        let gemini = r#"{"contents":[{"role":"user","parts":[{"text":"weather?"}]},{"role":"model","parts":[{"functionCall":{"id":"fc-1","name":"get_weather","args":{}}}]},{"role":"user","parts":[{"functionResponse":{"id":"fc-1","name":"get_weather","response":{"t":18}}},{"functionResponse":{"name":"no_id","response":{}}}]}],"tools":[{"functionDeclarations":[{"name":"get_weather"},{"name":"get_time"}]},{"googleSearch":{}},{"codeExecution":{},"urlContext":{}}]}"#;
        let t = tools_of(gemini);
        assert_eq!(t.definitions, Some(5));
        assert_eq!(t.result_ids, ["fc-1"]);
        assert_eq!(
            defs(
                r#"{"contents":{"parts":[{"function_response":{"id":"x"}}]},"tools":[{"function_declarations":[{"name":"a"}]}]}"#
            ),
            Some(1)
        );
        assert_eq!(
            tools_of(r#"{"contents":{"parts":[{"function_response":{"id":"x"}}]}}"#).result_ids,
            ["x"]
        );
        // DashScope native.
        let dashscope = r#"{"model":"qwen-plus","input":{"messages":[{"role":"user","content":"weather?"},{"role":"assistant","content":"","tool_calls":[{"id":"call_9","function":{"name":"get_weather","arguments":"{}"}}]},{"role":"tool","tool_call_id":"call_9","content":"18C"}]},"parameters":{"result_format":"message","tools":[{"type":"function","function":{"name":"get_weather"}}]}}"#;
        let t = tools_of(dashscope);
        assert_eq!(t.definitions, Some(1));
        assert_eq!(t.result_ids, ["call_9"]);
        // No tools: nothing noted, also for empty lists.
        assert_eq!(
            defs(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[]}"#),
            None
        );
    }

    #[test]
    fn request_tool_reader_is_bounded_and_never_panics() {
        // Ids past the length cap are not kept; at most MAX_TOOL_IDS are.
        let long = "c".repeat(super::super::MAX_TOOL_ID_BYTES + 1);
        let mut msgs: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"role":"tool","tool_call_id":"call_{i}","content":"x"}}"#))
            .collect();
        msgs.insert(0, format!(r#"{{"role":"tool","tool_call_id":"{long}"}}"#));
        msgs.push(r#"{"role":"tool","tool_call_id":"call_0"}"#.into());
        let t = tools_of(&format!(r#"{{"messages":[{}]}}"#, msgs.join(",")));
        assert_eq!(t.result_ids.len(), super::super::MAX_TOOL_IDS);
        assert_eq!(t.result_ids[0], "call_0");
        for garbage in [
            r#"{"tools":"x","functions":{},"messages":"m","input":7,"contents":null}"#,
            r#"{"tools":[null,1,"t",[],{"functionDeclarations":"x"},{"googleSearch":null}],"parameters":[]}"#,
            r#"{"messages":[null,{"tool_call_id":5},{"content":[1,{"type":"tool_result","tool_use_id":[]}]},{"parts":{"functionResponse":{}}}],"input":{"messages":{}}}"#,
            r#"{"input":[{"type":"function_call_output","call_id":null},{"type":5}],"contents":[{"parts":[{"functionResponse":"x"},{"functionResponse":{"id":""}}]}]}"#,
            r#"[1,2]"#,
            r#""str""#,
        ] {
            let t = tools_of(garbage);
            assert_eq!(t.definitions, None, "{garbage}");
            assert!(t.result_ids.is_empty(), "{garbage}");
        }
    }
}
