//! The Dify service-API dialect: what a Dify app's own users call, `POST .../chat-messages`,
//! `.../completion-messages` and `.../workflows/run` (under any prefix, usually `/v1`). The
//! request names the mode (`response_mode`: `streaming` or `blocking`), the conversation
//! (`conversation_id`, empty for a new one) and the end user (`user`). A stream is SSE whose
//! `data:` JSON names its kind in an `event` member: `message` / `agent_message` (answer text),
//! `agent_thought`, `message_replace`, `message_end` (usage, price and latency as Dify reports
//! them), the workflow events (`workflow_started`, `node_started`, `node_finished`, `text_chunk`,
//! `workflow_finished`), `error` and `ping`. A blocking answer is one JSON object with the same
//! members.
//!
//! Invariants: only node types and statuses of workflow nodes are kept (titles, inputs and
//! outputs are the app's own text), at most [`MAX_WORKFLOW_NODES`] per call, the rest counted;
//! ids and names are capped to [`MAX_FIELD_BYTES`]; the reported price and latency are kept
//! only when finite, non-negative and plausible. Operations: `invoke_agent` for the chat and
//! completion apps (OpenTelemetry GenAI's name for invoking an agent, which is what a Dify app
//! is to its caller: it runs its own prompts, tools and model calls), `invoke_workflow` for a
//! workflow run (the GenAI conventions' value for invoking a workflow).

use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::json::{Body, Event, chars};
use super::typed::{Field, Scalar, as_str, as_u64, drain_map, drain_seq, json_object, nonempty};
use super::{
    MAX_FIELD_BYTES, MAX_WORKFLOW_NODES, Observed, OutputKind, ProviderDialect, WorkflowNode,
    cap_field, tokens,
};
use crate::protocol::http1::RequestHead;

/// Which Dify API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DifyApi {
    /// `POST .../chat-messages` (chat, agent and chatflow apps).
    ChatMessages,
    /// `POST .../completion-messages` (text generator apps).
    CompletionMessages,
    /// `POST .../workflows/run` (workflow apps).
    WorkflowsRun,
}

/// Where an explicit Dify conversation id comes from.
pub const CONVERSATION_SOURCE: &str = "dify.conversation_id";

/// Largest reported price kept (anything above is not a price of one call).
const MAX_PRICE: f64 = 1e9;

/// Largest reported latency kept, seconds (a day).
const MAX_LATENCY_S: f64 = 86_400.0;

/// The dialect.
#[derive(Debug)]
pub struct Dify {
    api: DifyApi,
}

/// Recognises the Dify service API by method and path suffix.
pub fn detect(head: &RequestHead) -> Option<Box<dyn ProviderDialect>> {
    if head.method != "POST" {
        return None;
    }
    let path = super::route_path(head);
    let api = if path.ends_with("/chat-messages") {
        DifyApi::ChatMessages
    } else if path.ends_with("/completion-messages") {
        DifyApi::CompletionMessages
    } else if path.ends_with("/workflows/run") {
        DifyApi::WorkflowsRun
    } else {
        return None;
    };
    Some(Box::new(Dify { api }))
}

/// A number read from a JSON number or a string holding one (Dify sends prices as strings).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Num(Option<f64>);

impl<'de> Field<'de> for Num {
    fn read<D: Deserializer<'de>>(d: D, slot: &mut Option<Self>) -> Result<(), D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Num, E> {
                Ok(Num(Some(n as f64)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Num, E> {
                Ok(Num(Some(n as f64)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Num, E> {
                Ok(Num(Some(n)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Num, E> {
                Ok(Num(s.trim().parse::<f64>().ok()))
            }
            fn visit_unit<E>(self) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Num, A::Error> {
                drain_seq(seq)?;
                Ok(Num(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Num, A::Error> {
                drain_map(map)?;
                Ok(Num(None))
            }
        }
        *slot = Some(d.deserialize_any(V)?);
        Ok(())
    }
}

/// The number of an optional field, if finite and in `0..max`.
fn num_in(v: &Option<Num>, max: f64) -> Option<f64> {
    v.and_then(|n| n.0)
        .filter(|x| x.is_finite() && (0.0..max).contains(x))
}

/// The text of the strings inside a value (a workflow's `outputs`), for counting and sampling:
/// characters of every string value (keys excluded), the start kept up to
/// [`tokens::SAMPLE_CHARS`].
#[derive(Debug, Default)]
struct TextOf {
    chars: u64,
    sample: String,
    sample_chars: usize,
}

impl<'de> Field<'de> for TextOf {
    fn read<D: Deserializer<'de>>(d: D, slot: &mut Option<Self>) -> Result<(), D::Error> {
        struct V<'s>(&'s mut TextOf);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            super::typed::scalars_as!(ret () => ());
            fn visit_str<E>(self, s: &str) -> Result<(), E> {
                let n = s.chars().count();
                self.0.chars += n as u64;
                tokens::add_counted(&mut self.0.sample, &mut self.0.sample_chars, s, n);
                Ok(())
            }
            fn visit_unit<E>(self) -> Result<(), E> {
                Ok(())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                while seq.next_element_seed(Seed(self.0))?.is_some() {}
                Ok(())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                while map.next_key::<super::typed::Skip>()?.is_some() {
                    map.next_value_seed(Seed(self.0))?;
                }
                Ok(())
            }
        }
        struct Seed<'s>(&'s mut TextOf);
        impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_any(V(self.0))
            }
        }
        let out = slot.insert(TextOf::default());
        d.deserialize_any(V(out))
    }
}

json_object! {
    /// A stream event's data, or a whole blocking answer.
    struct Object<'a> {
        "event" => event: Scalar<'a>,
        "answer" => answer: Scalar<'a>,
        "thought" => thought: Scalar<'a>,
        "tool" => tool: Scalar<'a>,
        "position" => position: Scalar<'a>,
        "id" => id: Scalar<'a>,
        "message_id" => message_id: Scalar<'a>,
        "workflow_run_id" => workflow_run_id: Scalar<'a>,
        "conversation_id" => conversation_id: Scalar<'a>,
        "metadata" => metadata: Box<Metadata<'a>>,
        "data" => data: Box<Data<'a>>,
        "code" => code: Scalar<'a>,
    }
}

json_object! {
    /// `metadata` of `message_end` or a blocking answer.
    struct Metadata<'a> {
        "usage" => usage: DifyUsage<'a>,
    }
}

json_object! {
    /// `metadata.usage`: token counts, prices (strings), currency and latency (seconds).
    struct DifyUsage<'a> {
        "prompt_tokens" => prompt_tokens: Scalar<'a>,
        "completion_tokens" => completion_tokens: Scalar<'a>,
        "total_price" => total_price: Num,
        "currency" => currency: Scalar<'a>,
        "latency" => latency: Num,
    }
}

json_object! {
    /// `data` of the workflow events (and of a blocking workflow answer).
    struct Data<'a> {
        "id" => id: Scalar<'a>,
        "node_id" => node_id: Scalar<'a>,
        "node_type" => node_type: Scalar<'a>,
        "status" => status: Scalar<'a>,
        "error" => error: Scalar<'a>,
        "elapsed_time" => elapsed_time: Num,
        "text" => text: Scalar<'a>,
        "outputs" => outputs: TextOf,
    }
}

/// Most tools one agent thought is read for (`tool` names them, `;`-separated).
const MAX_TOOLS_PER_THOUGHT: usize = 64;

/// FNV-1a, 32 bits: a thought's index from its id when it has no `position`.
fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A string field, non-empty, capped to [`MAX_FIELD_BYTES`] and owned.
fn capped(v: &Option<Scalar<'_>>) -> Option<String> {
    nonempty(v).map(|s| cap_field(s, MAX_FIELD_BYTES).into_owned())
}

impl Dify {
    /// Reads `metadata.usage`: tokens, the reported price and latency.
    fn read_usage(u: &DifyUsage<'_>, out: &mut Observed) {
        if !u.is_object {
            return;
        }
        if let Some(n) = as_u64(&u.prompt_tokens) {
            out.usage.input_tokens = Some(n);
        }
        if let Some(n) = as_u64(&u.completion_tokens) {
            out.usage.output_tokens = Some(n);
        }
        if let Some(p) = num_in(&u.total_price, MAX_PRICE) {
            // The currency becomes a metric label: only a code (1 to 8 ASCII letters or
            // digits) is kept, anything else leaves the price without a currency.
            let currency = capped(&u.currency)
                .filter(|c| {
                    (1..=8).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_alphanumeric())
                })
                .unwrap_or_default();
            out.reported_cost = Some((p, currency));
        }
        if let Some(l) = num_in(&u.latency, MAX_LATENCY_S) {
            out.reported_latency_s = Some(l);
        }
    }

    /// A conversation id the answer carried, for a request that named none (a new
    /// conversation).
    fn note_conversation(v: &Object<'_>, out: &mut Observed) {
        if out.conversation.is_none()
            && let Some(c) = capped(&v.conversation_id)
        {
            out.conversation = Some((CONVERSATION_SOURCE, c));
        }
    }

    /// `node_started`: a new node, up to the cap (the rest counted).
    fn node_started(d: &Data<'_>, ts: u64, out: &mut Observed) {
        let Some(id) = capped(&d.id).or_else(|| capped(&d.node_id)) else {
            return;
        };
        let nodes = &mut out.workflow_nodes;
        if nodes.nodes.iter().any(|(i, _)| *i == id) {
            return;
        }
        if nodes.nodes.len() >= MAX_WORKFLOW_NODES {
            nodes.dropped += 1;
            return;
        }
        nodes.nodes.push((
            id,
            WorkflowNode {
                node_type: capped(&d.node_type).unwrap_or_else(|| "unknown".to_owned()),
                status: None,
                start_ns: ts as i64,
                end_ns: None,
                elapsed_s: None,
            },
        ));
    }

    /// `node_finished`: ends its node (one never seen starting begins `elapsed_time` earlier).
    fn node_finished(d: &Data<'_>, ts: u64, out: &mut Observed) {
        let Some(id) = capped(&d.id).or_else(|| capped(&d.node_id)) else {
            return;
        };
        let elapsed = num_in(&d.elapsed_time, MAX_LATENCY_S);
        if !out.workflow_nodes.nodes.iter().any(|(i, _)| *i == id) {
            if out.workflow_nodes.nodes.len() >= MAX_WORKFLOW_NODES {
                // Counted when it started (or it started before the capture: not counted).
                return;
            }
            let started = ts.saturating_sub(elapsed.map_or(0, |e| (e * 1e9) as u64));
            Self::node_started(d, started, out);
        }
        if let Some((_, n)) = out.workflow_nodes.nodes.iter_mut().find(|(i, _)| *i == id) {
            n.end_ns = Some(ts as i64);
            n.elapsed_s = elapsed;
            n.status = capped(&d.status);
            if let Some(t) = capped(&d.node_type) {
                n.node_type = t;
            }
        }
    }

    /// `workflow_finished` or a blocking workflow answer's `data`: status, error, outputs.
    fn workflow_finished(d: &Data<'_>, out: &mut Observed) {
        out.terminal = true;
        if let Some(s) = capped(&d.status) {
            if s == "failed" && out.error.is_none() {
                out.error = Some("workflow_failed".to_owned());
            }
            out.finish_reason = Some(s);
        }
        if nonempty(&d.error).is_some() && out.error.is_none() {
            out.error = Some("workflow_failed".to_owned());
        }
        if let Some(l) = num_in(&d.elapsed_time, MAX_LATENCY_S) {
            out.reported_latency_s = Some(l);
        }
        // The outputs are the answer when no text streamed before them (a blocking run, or a
        // workflow without a streamed answer node).
        if out.output_chars == 0
            && let Some(t) = &d.outputs
            && t.chars > 0
        {
            out.output_chars += t.chars;
            tokens::add_counted(
                &mut out.output_sample,
                &mut out.output_sample_chars,
                &t.sample,
                t.sample_chars,
            );
        }
    }

    /// An `error` event, or an error answer (`{"code","message","status"}`).
    fn error(v: &Object<'_>, out: &mut Observed) {
        if out.error.is_none() {
            out.error = Some(capped(&v.code).unwrap_or_else(|| "error".to_owned()));
        }
    }

    /// Reads one event (or a blocking answer); returns what it carried.
    /// An agent thought's tools (`tool`: `search;calculator`), each a tool call. Dify sends a
    /// thought again as it goes (the tool chosen, then its observation), under the same
    /// `position` (else `id`): a thought's calls count once. No call id (Dify's callers never
    /// answer tool calls), and the tool input is not counted as output (see `agent_thought`).
    fn agent_tools(v: &Object<'_>, out: &mut Observed) {
        let Some(tools) = nonempty(&v.tool) else {
            return;
        };
        let thought = as_u64(&v.position)
            .or_else(|| nonempty(&v.id).map(|id| u64::from(fnv1a32(id.as_bytes()) >> 12)));
        let names = tools.split(';').map(str::trim).filter(|n| !n.is_empty());
        for (j, name) in names.take(MAX_TOOLS_PER_THOUGHT).enumerate() {
            let index = thought.and_then(|t| super::tool_index(t, j as u64));
            out.note_tool_call(index, None, Some(name));
        }
    }

    fn read(&self, v: &Object<'_>, ts: u64, out: &mut Observed) -> OutputKind {
        if !v.is_object {
            return OutputKind::None;
        }
        let event = as_str(&v.event).unwrap_or("");
        if !matches!(event, "error" | "ping" | "") {
            Self::note_conversation(v, out);
        }
        if out.response_id.is_none()
            && let Some(id) = capped(&v.message_id).or_else(|| capped(&v.workflow_run_id))
        {
            out.response_id = Some(id);
        }
        match event {
            "message" | "agent_message" => match nonempty(&v.answer) {
                Some(t) => {
                    out.note_output(t);
                    OutputKind::Answer
                }
                None => OutputKind::None,
            },
            // An agent's step: its thought is reasoning the user may see; Dify's own usage
            // counts the tokens, and the thought may repeat the answer, so it is not counted.
            "agent_thought" => {
                Self::agent_tools(v, out);
                match nonempty(&v.thought) {
                    Some(_) => OutputKind::Reasoning,
                    None => OutputKind::None,
                }
            }
            // Moderation replaced the whole answer: the user sees new text.
            "message_replace" => {
                super::set_text(&mut out.finish_reason, "content_filter");
                if nonempty(&v.answer).is_some() {
                    OutputKind::Answer
                } else {
                    OutputKind::None
                }
            }
            "message_end" => {
                out.terminal = true;
                if let Some(u) = v.metadata.as_ref().and_then(|m| m.usage.as_ref()) {
                    Self::read_usage(u, out);
                }
                OutputKind::None
            }
            "text_chunk" => match v.data.as_ref().and_then(|d| nonempty(&d.text)) {
                Some(t) => {
                    out.note_output(t);
                    OutputKind::Answer
                }
                None => OutputKind::None,
            },
            "node_started" => {
                if let Some(d) = &v.data {
                    Self::node_started(d, ts, out);
                }
                OutputKind::None
            }
            "node_finished" => {
                if let Some(d) = &v.data {
                    Self::node_finished(d, ts, out);
                }
                OutputKind::None
            }
            "workflow_finished" => {
                if let Some(d) = &v.data {
                    Self::workflow_finished(d, out);
                }
                OutputKind::None
            }
            "error" => {
                Self::error(v, out);
                OutputKind::None
            }
            // A blocking answer: no `event` (workflows), or `message` handled above.
            "" => {
                if let Some(d) = &v.data {
                    Self::workflow_finished(d, out);
                } else if nonempty(&v.code).is_some() {
                    Self::error(v, out);
                }
                OutputKind::None
            }
            // ping, workflow_started, message_file, tts_message(_end), iteration_*, loop_*,
            // parallel_branch_*, node_retry, agent_log and whatever comes later.
            _ => OutputKind::None,
        }
    }
}

impl ProviderDialect for Dify {
    fn provider(&self) -> &'static str {
        "dify"
    }

    fn api(&self) -> &'static str {
        match self.api {
            DifyApi::ChatMessages => "dify.chat_messages",
            DifyApi::CompletionMessages => "dify.completion_messages",
            DifyApi::WorkflowsRun => "dify.workflows_run",
        }
    }

    fn operation(&self) -> &'static str {
        match self.api {
            DifyApi::ChatMessages | DifyApi::CompletionMessages => "invoke_agent",
            DifyApi::WorkflowsRun => "invoke_workflow",
        }
    }

    fn on_request_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = body.json() else {
            // Cut by a capture gap: the mode and ids usually sit before it.
            let raw = body.raw();
            out.stream =
                Some(super::scan_json_string(raw, "response_mode").as_deref() == Some("streaming"));
            if let Some(c) =
                super::scan_json_string(raw, "conversation_id").filter(|c| !c.is_empty())
            {
                out.conversation = Some((
                    CONVERSATION_SOURCE,
                    cap_field(&c, MAX_FIELD_BYTES).into_owned(),
                ));
            }
            out.end_user = super::scan_json_string(raw, "user")
                .filter(|u| !u.is_empty())
                .map(|u| cap_field(&u, MAX_FIELD_BYTES).into_owned());
            return;
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        out.stream = Some(text("response_mode") == Some("streaming"));
        if let Some(c) = text("conversation_id") {
            out.conversation = Some((
                CONVERSATION_SOURCE,
                cap_field(c, MAX_FIELD_BYTES).into_owned(),
            ));
        }
        out.end_user = text("user").map(|u| cap_field(u, MAX_FIELD_BYTES).into_owned());
        // The prompt: the query, then the app's input variables (strings).
        let mut sample = String::new();
        let mut n = 0;
        if let Some(q) = text("query") {
            n += chars(q);
            tokens::add_to_sample(&mut sample, q);
        }
        if let Some(inputs) = v.get("inputs").and_then(Value::as_object) {
            for s in inputs.values().filter_map(Value::as_str) {
                n += chars(s);
                tokens::add_to_sample(&mut sample, s);
            }
        }
        out.prompt_chars = n;
        sample.shrink_to_fit();
        out.prompt_sample = sample;
    }

    fn on_stream_event(&mut self, ev: &Event<'_>, out: &mut Observed) -> OutputKind {
        if ev.name == Some("ping") || ev.text.is_empty() {
            return OutputKind::None;
        }
        let Some(v) = ev.parse::<Object<'_>>() else {
            return OutputKind::None;
        };
        let ts = out.event_ts;
        self.read(&v, ts, out)
    }

    fn on_response_body(&mut self, body: &Body<'_>, out: &mut Observed) {
        let Some(v) = body.parse::<Object<'_>>() else {
            return;
        };
        let ts = out.event_ts;
        self.read(&v, ts, out);
        // A blocking chat or completion answer carries the usage `message_end` would have.
        if let Some(u) = v.metadata.as_ref().and_then(|m| m.usage.as_ref()) {
            Self::read_usage(u, out);
        }
        out.terminal = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::test_support::Feed;
    use crate::llm::test_support::{data_event as ev, head, typed_event};

    fn chat() -> Dify {
        Dify {
            api: DifyApi::ChatMessages,
        }
    }

    #[test]
    fn detects_by_path_suffix() {
        for (p, api, op) in [
            ("/v1/chat-messages", "dify.chat_messages", "invoke_agent"),
            ("/v1/chat-messages/", "dify.chat_messages", "invoke_agent"),
            (
                "/dify/v1/chat-messages?x=1",
                "dify.chat_messages",
                "invoke_agent",
            ),
            (
                "/v1/completion-messages",
                "dify.completion_messages",
                "invoke_agent",
            ),
            ("/v1/workflows/run", "dify.workflows_run", "invoke_workflow"),
        ] {
            let d = detect(&head("POST", p)).unwrap_or_else(|| panic!("{p}"));
            assert_eq!((d.provider(), d.api(), d.operation()), ("dify", api, op));
        }
        for p in [
            "/v1/chat-messages/abc/stop",
            "/v1/workflows/run/x",
            "/v1/chat/completions",
            "/v1/messages",
            "/v1/conversations",
        ] {
            assert!(detect(&head("POST", p)).is_none(), "{p}");
        }
        assert!(detect(&head("GET", "/v1/chat-messages")).is_none());
        // Listed before the OpenAI catch-alls, after nothing that claims it.
        let d = crate::llm::detect(&head("POST", "/v1/chat-messages")).expect("dify");
        assert_eq!(d.api(), "dify.chat_messages");
    }

    #[test]
    fn reads_the_request() {
        let mut o = Observed::default();
        chat().feed_request(
            br#"{"inputs":{"name":"Ann","n":3},"query":"What is Dify?","response_mode":"streaming","conversation_id":"c-1","user":"u-123","files":[]}"#,
            &mut o,
        );
        assert_eq!(o.stream, Some(true));
        assert_eq!(o.prompt_chars, 13 + 3);
        assert_eq!(o.prompt_sample, "What is Dify?Ann");
        assert_eq!(
            o.conversation,
            Some((CONVERSATION_SOURCE, "c-1".to_owned()))
        );
        assert_eq!(o.end_user.as_deref(), Some("u-123"));
        assert_eq!(o.request_model, None);

        let mut o = Observed::default();
        chat().feed_request(
            br#"{"query":"q","response_mode":"blocking","conversation_id":"","user":""}"#,
            &mut o,
        );
        assert_eq!(o.stream, Some(false));
        assert_eq!((o.conversation, o.end_user), (None, None));

        // Cut by a gap: scanned.
        let mut o = Observed::default();
        chat().feed_request(
            b"{\"response_mode\":\"streaming\",\"conversation_id\":\"c-2\",\"user\":\"u\",\"query\":\"a\0b\"}",
            &mut o,
        );
        assert_eq!(o.stream, Some(true));
        assert_eq!(
            o.conversation,
            Some((CONVERSATION_SOURCE, "c-2".to_owned()))
        );
        assert_eq!(o.end_user.as_deref(), Some("u"));
        // A huge id is capped.
        let mut o = Observed::default();
        let body = format!(r#"{{"conversation_id":"{}"}}"#, "x".repeat(100_000));
        chat().feed_request(body.as_bytes(), &mut o);
        assert!(
            o.conversation
                .is_some_and(|(_, c)| c.len() <= MAX_FIELD_BYTES)
        );
    }

    #[test]
    fn reads_a_chat_stream() {
        let mut d = chat();
        let mut o = Observed::default();
        let events = [
            (
                r#"{"event":"message","task_id":"t","message_id":"m-1","conversation_id":"c-9","answer":"Hel","created_at":1}"#,
                OutputKind::Answer,
            ),
            (
                r#"{"event":"message","message_id":"m-1","conversation_id":"c-9","answer":""}"#,
                OutputKind::None,
            ),
            (r#"{"event":"ping"}"#, OutputKind::None),
            (
                r#"{"event":"agent_message","message_id":"m-1","conversation_id":"c-9","answer":"lo"}"#,
                OutputKind::Answer,
            ),
            (
                r#"{"event":"agent_thought","id":"th","thought":"look it up","tool":"search"}"#,
                OutputKind::Reasoning,
            ),
            (
                r#"{"event":"agent_thought","id":"th","thought":""}"#,
                OutputKind::None,
            ),
            (
                r#"{"event":"message_file","id":"f","type":"image"}"#,
                OutputKind::None,
            ),
            (
                r#"{"event":"tts_message","audio":"AAAA"}"#,
                OutputKind::None,
            ),
            (
                r#"{"event":"message_end","id":"m-1","conversation_id":"c-9","metadata":{"usage":{"prompt_tokens":12,"prompt_unit_price":"0.001","prompt_price":"0.000012","completion_tokens":5,"completion_price":"0.00001","total_tokens":17,"total_price":"0.000022","currency":"USD","latency":0.75},"retriever_resources":[]}}"#,
                OutputKind::None,
            ),
        ];
        for (data, kind) in events {
            assert_eq!(d.feed_event(&ev(data), &mut o), kind, "{data}");
        }
        assert!(o.terminal);
        assert_eq!(o.output_chars, 5);
        assert_eq!(o.output_sample, "Hello");
        assert_eq!(
            (o.usage.input_tokens, o.usage.output_tokens),
            (Some(12), Some(5))
        );
        assert_eq!(o.reported_cost, Some((0.000022, "USD".to_owned())));
        assert_eq!(o.reported_latency_s, Some(0.75));
        assert_eq!(
            o.conversation,
            Some((CONVERSATION_SOURCE, "c-9".to_owned()))
        );
        assert_eq!(o.response_id.as_deref(), Some("m-1"));
        assert_eq!(o.error, None);
        // `event: ping` with no data, and an empty data line.
        assert_eq!(
            d.feed_event(&typed_event("ping", ""), &mut o),
            OutputKind::None
        );
        assert_eq!(d.feed_event(&ev(""), &mut o), OutputKind::None);
    }

    #[test]
    fn an_explicit_conversation_id_wins_over_the_answers() {
        let mut d = chat();
        let mut o = Observed::default();
        d.feed_request(
            br#"{"query":"q","conversation_id":"mine","response_mode":"streaming"}"#,
            &mut o,
        );
        d.feed_event(
            &ev(r#"{"event":"message","conversation_id":"other","answer":"a"}"#),
            &mut o,
        );
        assert_eq!(
            o.conversation,
            Some((CONVERSATION_SOURCE, "mine".to_owned()))
        );
    }

    #[test]
    fn prices_as_numbers_and_bad_values() {
        let mut o = Observed::default();
        let mut d = chat();
        d.feed_event(&ev(r#"{"event":"message_end","metadata":{"usage":{"total_price":0.5,"currency":"RMB","latency":2}}}"#), &mut o);
        assert_eq!(o.reported_cost, Some((0.5, "RMB".to_owned())));
        assert_eq!(o.reported_latency_s, Some(2.0));
        // A currency that is not a code (it would become a metric label) is dropped.
        for bad in ["US Dollar", "USD\\n", "ABCDEFGHI", "€"] {
            let mut o = Observed::default();
            let data = format!(
                r#"{{"event":"message_end","metadata":{{"usage":{{"total_price":0.5,"currency":"{bad}"}}}}}}"#
            );
            d.feed_event(&ev(&data), &mut o);
            assert_eq!(o.reported_cost, Some((0.5, String::new())), "{bad}");
        }
        for bad in [
            r#""-1""#, r#""NaN""#, r#""inf""#, "1e300", r#""x""#, "null", "[1]", "{}", "true",
        ] {
            let mut o = Observed::default();
            let data = format!(
                r#"{{"event":"message_end","metadata":{{"usage":{{"total_price":{bad},"latency":{bad}}}}}}}"#
            );
            d.feed_event(&ev(&data), &mut o);
            assert_eq!(
                (o.reported_cost, o.reported_latency_s),
                (None, None),
                "{bad}"
            );
            assert!(o.terminal);
        }
        // No currency: the price stays, its currency empty.
        let mut o = Observed::default();
        d.feed_event(
            &ev(r#"{"event":"message_end","metadata":{"usage":{"total_price":"1.25"}}}"#),
            &mut o,
        );
        assert_eq!(o.reported_cost, Some((1.25, String::new())));
    }

    #[test]
    fn message_replace_and_errors() {
        let mut d = chat();
        let mut o = Observed::default();
        assert_eq!(
            d.feed_event(
                &ev(r#"{"event":"message_replace","answer":"[filtered]"}"#),
                &mut o
            ),
            OutputKind::Answer
        );
        assert_eq!(o.finish_reason.as_deref(), Some("content_filter"));
        assert_eq!(
            d.feed_event(&ev(r#"{"event":"error","task_id":"t","message_id":"m","status":400,"code":"provider_quota_exceeded","message":"quota"}"#), &mut o),
            OutputKind::None
        );
        assert_eq!(o.error.as_deref(), Some("provider_quota_exceeded"));
        let mut o = Observed::default();
        d.feed_event(&ev(r#"{"event":"error","message":"x"}"#), &mut o);
        assert_eq!(o.error.as_deref(), Some("error"));
        // A blocking error answer.
        let mut o = Observed::default();
        d.feed_response(
            br#"{"code":"invalid_param","message":"bad","status":400}"#,
            &mut o,
        );
        assert_eq!(o.error.as_deref(), Some("invalid_param"));
    }

    #[test]
    fn reads_blocking_answers() {
        let mut d = chat();
        let mut o = Observed::default();
        d.feed_response(
            br#"{"event":"message","task_id":"t","id":"m-2","message_id":"m-2","conversation_id":"c-3","mode":"chat","answer":"Hi there","metadata":{"usage":{"prompt_tokens":7,"completion_tokens":2,"total_price":"0.0001","currency":"USD","latency":0.5}},"created_at":1}"#,
            &mut o,
        );
        assert!(o.terminal);
        assert_eq!(o.output_chars, 8);
        assert_eq!(
            (o.usage.input_tokens, o.usage.output_tokens),
            (Some(7), Some(2))
        );
        assert_eq!(o.reported_cost, Some((0.0001, "USD".to_owned())));
        assert_eq!(o.reported_latency_s, Some(0.5));
        assert_eq!(
            o.conversation,
            Some((CONVERSATION_SOURCE, "c-3".to_owned()))
        );
        assert_eq!(o.response_id.as_deref(), Some("m-2"));

        let mut d = Dify {
            api: DifyApi::WorkflowsRun,
        };
        let mut o = Observed::default();
        d.feed_response(
            br#"{"workflow_run_id":"w-1","task_id":"t","data":{"id":"w-1","workflow_id":"wf","status":"succeeded","outputs":{"answer":"forty-two","n":42,"list":["ab",{"x":"cd"}]},"error":null,"elapsed_time":1.5,"total_tokens":30,"total_steps":3}}"#,
            &mut o,
        );
        assert!(o.terminal);
        assert_eq!(o.output_chars, 9 + 2 + 2);
        assert_eq!(o.output_sample, "forty-twoabcd");
        assert_eq!(o.finish_reason.as_deref(), Some("succeeded"));
        assert_eq!(o.reported_latency_s, Some(1.5));
        assert_eq!(o.response_id.as_deref(), Some("w-1"));
        assert_eq!(o.error, None);
        assert_eq!(o.conversation, None);
    }

    #[test]
    fn workflow_nodes_are_timed_and_bounded() {
        let mut d = Dify {
            api: DifyApi::WorkflowsRun,
        };
        let mut o = Observed::default();
        let mut at = |o: &mut Observed, ts: u64, data: &str| {
            o.event_ts = ts;
            d.feed_event(&ev(data), o)
        };
        at(
            &mut o,
            1_000,
            r#"{"event":"workflow_started","workflow_run_id":"w-1","data":{"id":"w-1","workflow_id":"wf","sequence_number":1}}"#,
        );
        at(
            &mut o,
            2_000,
            r#"{"event":"node_started","data":{"id":"e-1","node_id":"n1","node_type":"start","title":"secret title","index":1,"inputs":{"q":"x"}}}"#,
        );
        at(
            &mut o,
            3_000,
            r#"{"event":"node_finished","data":{"id":"e-1","node_id":"n1","node_type":"start","title":"secret title","status":"succeeded","elapsed_time":0.000001,"outputs":{"a":"b"}}}"#,
        );
        at(
            &mut o,
            4_000,
            r#"{"event":"node_started","data":{"id":"e-2","node_id":"n2","node_type":"llm"}}"#,
        );
        assert_eq!(
            at(
                &mut o,
                5_000,
                r#"{"event":"text_chunk","data":{"text":"42","from_variable_selector":["n2","text"]}}"#
            ),
            OutputKind::Answer
        );
        at(
            &mut o,
            9_000,
            r#"{"event":"node_finished","data":{"id":"e-2","node_id":"n2","node_type":"llm","status":"failed","error":"boom","elapsed_time":0.5}}"#,
        );
        // Finished without a start seen: starts elapsed_time before.
        at(
            &mut o,
            2_000_000_000,
            r#"{"event":"node_finished","data":{"id":"e-3","node_type":"end","status":"succeeded","elapsed_time":1.0}}"#,
        );
        at(
            &mut o,
            2_000_000_001,
            r#"{"event":"workflow_finished","workflow_run_id":"w-1","data":{"id":"w-1","status":"failed","outputs":{"x":"not counted: text streamed"},"error":"boom","elapsed_time":2.5}}"#,
        );
        assert!(o.terminal);
        assert_eq!(o.error.as_deref(), Some("workflow_failed"));
        assert_eq!(o.finish_reason.as_deref(), Some("failed"));
        assert_eq!(o.reported_latency_s, Some(2.5));
        assert_eq!(o.output_chars, 2);
        assert_eq!(o.response_id.as_deref(), Some("w-1"));
        let nodes: Vec<_> = o
            .workflow_nodes
            .nodes
            .iter()
            .map(|(id, n)| (id.as_str(), n.clone()))
            .collect();
        assert_eq!(
            nodes,
            vec![
                (
                    "e-1",
                    WorkflowNode {
                        node_type: "start".into(),
                        status: Some("succeeded".into()),
                        start_ns: 2_000,
                        end_ns: Some(3_000),
                        elapsed_s: Some(0.000001)
                    }
                ),
                (
                    "e-2",
                    WorkflowNode {
                        node_type: "llm".into(),
                        status: Some("failed".into()),
                        start_ns: 4_000,
                        end_ns: Some(9_000),
                        elapsed_s: Some(0.5)
                    }
                ),
                (
                    "e-3",
                    WorkflowNode {
                        node_type: "end".into(),
                        status: Some("succeeded".into()),
                        start_ns: 1_000_000_000,
                        end_ns: Some(2_000_000_000),
                        elapsed_s: Some(1.0)
                    }
                ),
            ]
        );
        assert!(format!("{:?}", o.workflow_nodes).find("secret").is_none());
        // At most MAX_WORKFLOW_NODES, the rest counted once each; a repeated start is one node.
        let mut o = Observed::default();
        for i in 0..MAX_WORKFLOW_NODES + 10 {
            for _ in 0..2 {
                at(
                    &mut o,
                    1,
                    &format!(
                        r#"{{"event":"node_started","data":{{"id":"n{i}","node_type":"{}"}}}}"#,
                        "t".repeat(1000)
                    ),
                );
            }
            at(
                &mut o,
                2,
                &format!(
                    r#"{{"event":"node_finished","data":{{"id":"n{i}","status":"succeeded"}}}}"#
                ),
            );
        }
        assert_eq!(o.workflow_nodes.nodes.len(), MAX_WORKFLOW_NODES);
        assert_eq!(o.workflow_nodes.dropped, 10 * 2);
        assert!(
            o.workflow_nodes
                .nodes
                .iter()
                .all(|(_, n)| n.node_type.len() <= MAX_FIELD_BYTES && n.end_ns == Some(2))
        );
        assert!(o.workflow_nodes.heap_bytes() < 64 * 1024);
    }

    #[test]
    fn bad_input_never_panics() {
        let samples = [
            r#"{"event":"message_end","metadata":{"usage":[]}}"#,
            r#"{"event":"message_end","metadata":null}"#,
            r#"{"event":"node_finished","data":"x"}"#,
            r#"{"event":"node_started","data":{"id":5}}"#,
            r#"{"event":"workflow_finished","data":{"outputs":[[[["deep"]]]]}}"#,
            r#"{"event":7,"answer":{}}"#,
            r#"{"event":"message","answer":7}"#,
            r#"[1,2]"#,
            r#""str""#,
            "{cut",
            "not json",
            "null",
        ];
        for api in [
            DifyApi::ChatMessages,
            DifyApi::CompletionMessages,
            DifyApi::WorkflowsRun,
        ] {
            let mut d = Dify { api };
            for s in samples {
                let mut o = Observed::default();
                d.feed_request(s.as_bytes(), &mut o);
                d.feed_event(&ev(s), &mut o);
                d.feed_response(s.as_bytes(), &mut o);
                // Every prefix of every sample.
                for i in 0..s.len() {
                    if s.is_char_boundary(i) {
                        d.feed_event(&ev(&s[..i]), &mut o);
                        d.feed_response(&s.as_bytes()[..i], &mut o);
                        d.feed_request(&s.as_bytes()[..i], &mut o);
                    }
                }
            }
        }
    }

    /// An agent thought names its tools; Dify sends the thought again with the observation:
    /// each tool counts once per thought, and the tool input is not output.
    #[test]
    fn agent_thought_tools() {
        use crate::llm::test_support::assert_tools;
        let mut d = chat();
        let mut o = Observed::default();
        for data in [
            r#"{"event":"agent_thought","id":"th-1","task_id":"t","message_id":"m","position":1,"thought":"I will look it up","observation":"","tool":"google_search;calculator","tool_input":"{\"google_search\":{\"q\":\"x\"},\"calculator\":{\"e\":\"1+1\"}}","created_at":1}"#,
            r#"{"event":"agent_thought","id":"th-1","task_id":"t","message_id":"m","position":1,"thought":"I will look it up","observation":"found","tool":"google_search;calculator","tool_input":"{}","created_at":1}"#,
            r#"{"event":"agent_thought","id":"th-2","task_id":"t","message_id":"m","position":2,"thought":"","tool":"google_search","tool_input":"{}"}"#,
            r#"{"event":"agent_thought","id":"th-3","position":3,"thought":"done","tool":""}"#,
            r#"{"event":"agent_thought","id":"th-4","thought":"x","tool":" ; ;wiki"}"#,
            r#"{"event":"agent_thought","id":"th-4","thought":"x","tool":"wiki"}"#,
            r#"{"event":"agent_thought","position":99999999999999,"tool":7}"#,
        ] {
            d.feed_event(&ev(data), &mut o);
        }
        assert_tools(&o, 4, &["google_search", "calculator", "wiki"], &[]);
        assert_eq!(o.output_chars, 0);
    }
}
