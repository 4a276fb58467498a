//! Opt-in content (`--capture-content`): the prompt and the answer of selected calls, redacted
//! before they leave memory, as the OpenTelemetry GenAI `gen_ai.system_instructions`,
//! `gen_ai.input.messages` and `gen_ai.output.messages` JSON.
//!
//! Stages:
//! - track: an exchange of a call the policy may select reads the request's one parse into
//!   [`read_request`] (OTel messages, bounded), and is fed the answer through
//!   `Observed::note_*` ([`OutputContent`]: text and reasoning deltas joined, tool calls with
//!   their streamed arguments). At the call's end [`ContentPolicy::selects`] decides on the
//!   process and the model; a call left out drops what it held there.
//! - enrich: [`Render`] redacts every text of the selected calls ([`redact::Redactor`]) and
//!   writes the record's JSON fields; the redaction counts go to `llmprobe_redactions_total`.
//!
//! Invariants: nothing is collected while `--capture-content` is off; every text is bounded while
//! it is collected (`max_bytes` per document: the input keeps its newest messages, the output
//! its first bytes; a cut text ends with [`crate::llm::CUT_MARKER`]); no text reaches a record
//! before the redactor has read it; binary parts (images, audio, files) keep their type only.

pub mod redact;

use serde_json::{Map, Value, json};

use crate::llm::{CUT_MARKER, ContentJson, LlmCall};

/// Default for `--content-max-bytes`: text bytes kept per document (system instructions, input
/// messages, output messages) of one call.
pub const DEFAULT_MAX_BYTES: usize = 32 * 1024;

/// Which calls' content is captured, and how much of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPolicy {
    /// Process names whose calls are captured (empty: every process).
    pub comms: Vec<String>,
    /// Models whose calls are captured (empty: every model); `prefix*` matches a prefix. The
    /// model asked for or the one that answered.
    pub models: Vec<String>,
    /// Text bytes kept per document.
    pub max_bytes: usize,
}

impl Default for ContentPolicy {
    fn default() -> Self {
        ContentPolicy {
            comms: Vec::new(),
            models: Vec::new(),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl ContentPolicy {
    /// Whether a call of process `comm` for these models is captured.
    pub fn selects(
        &self,
        comm: &str,
        request_model: Option<&str>,
        response_model: Option<&str>,
    ) -> bool {
        let comm_ok = self.comms.is_empty() || self.comms.iter().any(|c| c == comm);
        let model_ok = self.models.is_empty()
            || [request_model, response_model]
                .into_iter()
                .flatten()
                .any(|m| self.models.iter().any(|p| model_matches(p, m)));
        comm_ok && model_ok
    }
}

fn model_matches(pattern: &str, model: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

/// The content flags of `run`, `record`, `demo` and `replay`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ContentArgs {
    /// Capture prompts and completions (off by default): records and spans get
    /// `system_instructions`, `input_messages` and `output_messages` (OpenTelemetry GenAI JSON),
    /// redacted by the built-in rules (e-mail, phone, payment card, Chinese resident id, IBAN,
    /// API keys, JWTs) and every --redact-rule first. Whoever reads the records, spans or
    /// JSON lines reads the prompts.
    #[arg(help_heading = "Content (opt-in)", long)]
    pub capture_content: bool,
    /// With --capture-content: only the calls of processes with this name (repeat for more;
    /// default: every process).
    #[arg(
        help_heading = "Content (opt-in)",
        long = "capture-content-comm",
        value_name = "NAME"
    )]
    pub capture_content_comm: Vec<String>,
    /// With --capture-content: only the calls for this model, asked for or answering (repeat
    /// for more; `prefix*` matches a prefix; default: every model).
    #[arg(
        help_heading = "Content (opt-in)",
        long = "capture-content-model",
        value_name = "MODEL"
    )]
    pub capture_content_model: Vec<String>,
    /// Text bytes kept per call for each of the system instructions, the input messages (the
    /// newest kept) and the output messages (the first bytes kept); a cut text ends with an
    /// ellipsis.
    #[arg(help_heading = "Content (opt-in)", long, default_value_t = DEFAULT_MAX_BYTES, value_name = "BYTES")]
    pub content_max_bytes: usize,
    /// An extra redaction rule, NAME=REGEX (Rust regex syntax; repeat for more): each match in
    /// captured content becomes `[REDACTED:NAME]` and counts in
    /// `llmprobe_redactions_total{rule="NAME"}`.
    #[arg(
        help_heading = "Content (opt-in)",
        long = "redact-rule",
        value_name = "NAME=REGEX"
    )]
    pub redact_rule: Vec<redact::CustomRule>,
}

/// What `--capture-content` and its companions ask for: the policy the tracker collects under
/// and the enrich stage's renderer.
pub type ContentSetup = (std::sync::Arc<ContentPolicy>, Render);

impl ContentArgs {
    /// The policy and renderer, None with content capture off; an error for a companion flag
    /// without `--capture-content`, a size out of range or a bad rule.
    pub fn build(&self) -> anyhow::Result<Option<ContentSetup>> {
        if !self.capture_content {
            anyhow::ensure!(
                self.capture_content_comm.is_empty()
                    && self.capture_content_model.is_empty()
                    && self.redact_rule.is_empty(),
                "--capture-content-comm, --capture-content-model and --redact-rule select and \
                 redact captured content: add --capture-content to capture it"
            );
            return Ok(None);
        }
        anyhow::ensure!(
            (256..=1 << 20).contains(&self.content_max_bytes),
            "--content-max-bytes {}: use 256 to 1048576",
            self.content_max_bytes
        );
        let redactor = redact::Redactor::new(&self.redact_rule)?;
        Ok(Some((
            std::sync::Arc::new(ContentPolicy {
                comms: self.capture_content_comm.clone(),
                models: self.capture_content_model.clone(),
                max_bytes: self.content_max_bytes,
            }),
            Render::new(redactor, self.content_max_bytes),
        )))
    }
}

/// What a selected call's content is before redaction: OTel GenAI JSON trees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallContent {
    /// `gen_ai.system_instructions`: parts.
    pub system: Option<Value>,
    /// `gen_ai.input.messages`.
    pub input: Option<Value>,
    /// `gen_ai.output.messages`.
    pub output: Option<Value>,
    /// Some text was cut or some messages left out for the size cap.
    pub truncated: bool,
    /// Heap bytes of the trees, measured once when they were built (the tracker asks after
    /// every piece of the connection: never a walk of the trees).
    pub heap: usize,
}

impl CallContent {
    /// Heap bytes held (the tracker's memory budget).
    pub fn heap_bytes(&self) -> usize {
        self.heap
    }
}

/// Heap bytes of a JSON tree, generously: its strings, a slot per node, a B-tree share per
/// object entry.
fn value_bytes(v: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    match v {
        Value::String(s) => NODE + s.capacity(),
        Value::Array(a) => NODE + a.iter().map(value_bytes).sum::<usize>(),
        Value::Object(m) => {
            // serde_json's map is a B-tree: a leaf of 11 entries is about 630 bytes.
            640 + m
                .iter()
                .map(|(k, x)| k.capacity() + 64 + value_bytes(x))
                .sum::<usize>()
        }
        _ => NODE,
    }
}

/// What each message or part costs the budget beyond its text, so a request of many empty
/// parts is bounded as one of much text is.
const NODE_COST: usize = 32;

/// Most messages and parts in one document.
const MAX_NODES: usize = 2048;

/// Longest distance a cut moves back to the previous white space (a token cut in the middle,
/// e.g. a card number or a key, would no longer match its redaction rule).
const CUT_BACK: usize = 96;

/// The end of a cut of `s` at `end` (a character boundary): moved back to just after the last
/// white space within [`CUT_BACK`] bytes, if there is one.
fn cut_at(s: &str, end: usize) -> usize {
    let from = end.saturating_sub(CUT_BACK);
    let mut from = from;
    while !s.is_char_boundary(from) {
        from += 1;
    }
    match s[from..end].rfind(char::is_whitespace) {
        Some(i) => from + i,
        None => end,
    }
}

/// A byte budget for one document: its text, and [`NODE_COST`] per message or part.
struct Budget {
    left: usize,
    nodes: usize,
    cut: bool,
}

impl Budget {
    fn new(max: usize) -> Self {
        Budget {
            left: max,
            nodes: 0,
            cut: false,
        }
    }

    /// Room for one more message or part (charged), else the document is cut.
    fn node(&mut self) -> bool {
        if self.left < NODE_COST || self.nodes >= MAX_NODES {
            self.left = 0;
            self.cut = true;
            return false;
        }
        self.left -= NODE_COST;
        self.nodes += 1;
        true
    }

    /// `s` within the budget (cut on a character boundary, back to a white space when one is
    /// near, marked), or None once it is spent.
    fn take(&mut self, s: &str) -> Option<String> {
        if self.left == 0 {
            self.cut = true;
            return None;
        }
        if s.len() <= self.left {
            self.left -= s.len();
            return Some(s.to_owned());
        }
        let mut end = self.left;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let end = cut_at(s, end);
        self.left = 0;
        self.cut = true;
        Some(format!("{}{CUT_MARKER}", &s[..end]))
    }

    /// A short string kept whole (ids, names) if it fits, charged; else None.
    fn whole(&mut self, s: &str, max: usize) -> Option<String> {
        if s.is_empty() || s.len() > max {
            return None;
        }
        if s.len() > self.left {
            self.cut = true;
            return None;
        }
        self.left -= s.len();
        Some(s.to_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// The request.

/// Most messages of one request read (the newest ones).
const MAX_MESSAGES: usize = 4096;

/// The roles kept as sent; any other becomes `other` (a role is not redacted: it must be one
/// of these words).
const ROLES: [&str; 7] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
    "model",
];

/// The part kinds kept as sent (images, audio, files: their kind only); any other kind becomes
/// `other`.
const KINDS: [&str; 14] = [
    "image",
    "image_url",
    "input_image",
    "input_audio",
    "audio",
    "file",
    "input_file",
    "document",
    "inlineData",
    "fileData",
    "video",
    "executableCode",
    "codeExecutionResult",
    "search_result",
];

fn role_of(r: &str) -> &'static str {
    match r {
        "model" => "assistant",
        r => ROLES.iter().find(|k| **k == r).copied().unwrap_or("other"),
    }
}

fn kind_of(k: &str) -> &'static str {
    KINDS.iter().find(|x| **x == k).copied().unwrap_or("other")
}

/// Reads a request body's system instructions and messages, whatever the dialect: OpenAI chat
/// (`messages`, `tool_calls`, `tool` results), Anthropic (`system`, content blocks `text`,
/// `thinking`, `tool_use`, `tool_result`), Gemini (`systemInstruction`, `contents[].parts`,
/// `functionCall`, `functionResponse`), the Responses API (`instructions`, `input` items),
/// Ollama and DashScope (`messages`, `input.messages`, `prompt`), Dify (`query`, `inputs`),
/// completions and embeddings (`prompt`, `input`). Each document keeps `max_bytes` (text, plus
/// [`NODE_COST`] per message and part, at most [`MAX_NODES`] of them); the input keeps its
/// newest messages.
pub fn read_request(v: &Value, max_bytes: usize) -> CallContent {
    let mut out = CallContent::default();
    let Some(obj) = v.as_object() else {
        return out;
    };
    let mut sys_parts = Vec::new();
    let mut budget = Budget::new(max_bytes);
    for key in ["system", "instructions"] {
        if let Some(s) = obj.get(key) {
            parts_of_content(s, &mut sys_parts, &mut budget);
        }
    }
    for key in ["systemInstruction", "system_instruction"] {
        if let Some(parts) = obj.get(key).and_then(|s| s.get("parts")) {
            parts_of_content(parts, &mut sys_parts, &mut budget);
        }
    }
    if !sys_parts.is_empty() {
        out.system = Some(Value::Array(sys_parts));
    }
    out.truncated = budget.cut;

    let input = obj.get("input");
    let list = obj
        .get("messages")
        .or_else(|| obj.get("contents"))
        .or_else(|| input.and_then(|i| i.get("messages")))
        .filter(|m| m.is_array())
        .or(input.filter(|i| i.as_array().is_some_and(|a| a.iter().any(Value::is_object))));
    let mut budget = Budget::new(max_bytes);
    let mut messages: Vec<Value> = Vec::new();
    if let Some(items) = list.and_then(Value::as_array) {
        // Newest first within the budget, then back in order.
        for item in items.iter().rev().take(MAX_MESSAGES) {
            if budget.left == 0 {
                budget.cut = true;
                break;
            }
            if let Some(m) = message_of(item, &mut budget) {
                messages.push(m);
            }
        }
        messages.reverse();
    } else {
        // A bare prompt: Responses/embeddings `input`, completions/Ollama `prompt`, DashScope
        // `input.prompt`, Dify `query`.
        let prompt = input
            .filter(|i| !i.is_object())
            .or_else(|| obj.get("prompt"))
            .or_else(|| input.and_then(|i| i.get("prompt")))
            .or_else(|| obj.get("query"));
        let mut parts = Vec::new();
        if let Some(p) = prompt {
            parts_of_content(p, &mut parts, &mut budget);
        }
        // Dify's app variables (a workflow's only input), as their JSON text.
        if let Some(inputs) = obj
            .get("inputs")
            .filter(|i| i.as_object().is_some_and(|m| !m.is_empty()))
            && budget.node()
            && let Some(t) = budget.take(&inputs.to_string())
        {
            parts.push(json!({"type": "text", "content": t}));
        }
        if !parts.is_empty() {
            messages.push(json!({"role": "user", "parts": parts}));
        }
    }
    if !messages.is_empty() {
        out.input = Some(Value::Array(messages));
    }
    out.truncated |= budget.cut;
    out.heap = [&out.system, &out.input]
        .into_iter()
        .flatten()
        .map(value_bytes)
        .sum();
    out
}

/// One message (or Responses API item) as `{role, parts}`.
fn message_of(item: &Value, budget: &mut Budget) -> Option<Value> {
    let obj = item.as_object()?;
    if !budget.node() {
        return None;
    }
    let mut parts = Vec::new();
    let role = match obj.get("type").and_then(Value::as_str) {
        // Responses API items that are not messages.
        Some("function_call" | "custom_tool_call") => {
            parts.extend(tool_call_part(
                obj.get("call_id").or_else(|| obj.get("id")),
                obj.get("name"),
                obj.get("arguments").or_else(|| obj.get("input")),
                budget,
            ));
            "assistant"
        }
        Some("function_call_output" | "custom_tool_call_output") => {
            parts.extend(tool_response_part(
                obj.get("call_id"),
                obj.get("output"),
                budget,
            ));
            "tool"
        }
        Some("reasoning") => {
            let mut texts = Vec::new();
            for key in ["summary", "content"] {
                if let Some(list) = obj.get(key).and_then(Value::as_array) {
                    for s in list.iter().take(MAX_NODES) {
                        if let Some(t) = s.get("text").and_then(Value::as_str) {
                            texts.push(t);
                        }
                    }
                }
            }
            if budget.node()
                && let Some(t) = budget.take(&texts.join("\n"))
            {
                parts.push(json!({"type": "reasoning", "content": t}));
            }
            "assistant"
        }
        _ => {
            let role = role_of(obj.get("role").and_then(Value::as_str).unwrap_or("user"));
            if let Some(c) = obj.get("content") {
                if role == "tool" {
                    parts.extend(tool_response_part(obj.get("tool_call_id"), Some(c), budget));
                } else {
                    parts_of_content(c, &mut parts, budget);
                }
            }
            if let Some(p) = obj.get("parts") {
                parts_of_content(p, &mut parts, budget);
            }
            // Reasoning some APIs send back in the history (DeepSeek, Qwen, Ollama).
            for key in ["reasoning_content", "thinking"] {
                if let Some(t) = obj
                    .get(key)
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    && budget.node()
                    && let Some(t) = budget.take(t)
                {
                    parts.insert(0, json!({"type": "reasoning", "content": t}));
                }
            }
            for tc in obj
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let f = tc.get("function");
                match tool_call_part(
                    tc.get("id"),
                    f.and_then(|f| f.get("name")),
                    f.and_then(|f| f.get("arguments")),
                    budget,
                ) {
                    Some(p) => parts.push(p),
                    None => break,
                }
            }
            if let Some(f) = obj.get("function_call") {
                parts.extend(tool_call_part(
                    None,
                    f.get("name"),
                    f.get("arguments"),
                    budget,
                ));
            }
            role
        }
    };
    // A message the budget left no part of is left out.
    if parts.is_empty() && budget.cut {
        return None;
    }
    Some(json!({"role": role, "parts": parts}))
}

/// The parts of a `content` (a string, a list of blocks, one block) appended to `parts`.
fn parts_of_content(c: &Value, parts: &mut Vec<Value>, budget: &mut Budget) {
    match c {
        Value::String(s) => {
            if budget.node()
                && let Some(t) = budget.take(s)
            {
                parts.push(json!({"type": "text", "content": t}));
            }
        }
        Value::Array(list) => {
            for b in list {
                if budget.left == 0 {
                    budget.cut = true;
                    return;
                }
                // Nested lists are not content blocks.
                if !b.is_array() {
                    parts_of_content(b, parts, budget);
                }
            }
        }
        Value::Object(b) if !b.is_empty() => {
            if let Some(p) = block_part(b, budget) {
                parts.push(p);
            }
        }
        _ => {}
    }
}

/// One content block as an OTel part (None once the budget is spent).
fn block_part(b: &Map<String, Value>, budget: &mut Budget) -> Option<Value> {
    let ty = b.get("type").and_then(Value::as_str);
    let text_part = |kind: &str, key: &str, budget: &mut Budget| {
        if !budget.node() {
            return None;
        }
        Some(
            match b
                .get(key)
                .and_then(Value::as_str)
                .and_then(|t| budget.take(t))
            {
                Some(t) => json!({"type": kind, "content": t}),
                None => json!({ "type": kind }),
            },
        )
    };
    match ty {
        Some("text" | "input_text" | "output_text") | None if b.get("text").is_some() => {
            text_part("text", "text", budget)
        }
        Some("thinking") => text_part("reasoning", "thinking", budget),
        Some("refusal") => text_part("text", "refusal", budget),
        Some("tool_use" | "server_tool_use") => {
            tool_call_part(b.get("id"), b.get("name"), b.get("input"), budget)
        }
        Some("tool_result") => tool_response_part(b.get("tool_use_id"), b.get("content"), budget),
        _ => {
            if let Some(f) = b.get("functionCall") {
                return tool_call_part(f.get("id"), f.get("name"), f.get("args"), budget);
            }
            if let Some(f) = b.get("functionResponse") {
                return tool_response_part(f.get("id"), f.get("response"), budget);
            }
            // Images, audio, files, documents: their kind, never their bytes or addresses.
            if !budget.node() {
                return None;
            }
            let kind = ty
                .or_else(|| b.keys().next().map(String::as_str))
                .unwrap_or("other");
            Some(json!({ "type": kind_of(kind) }))
        }
    }
}

/// A tool call part: `{type: tool_call, id, name, arguments}`; arguments as JSON when they are
/// (an object, or a string that parses), else their text. None once the budget is spent.
fn tool_call_part(
    id: Option<&Value>,
    name: Option<&Value>,
    args: Option<&Value>,
    budget: &mut Budget,
) -> Option<Value> {
    if !budget.node() {
        return None;
    }
    let mut p = Map::new();
    p.insert("type".into(), "tool_call".into());
    if let Some(id) = id
        .and_then(Value::as_str)
        .and_then(|s| budget.whole(s, crate::llm::MAX_TOOL_ID_BYTES))
    {
        p.insert("id".into(), id.into());
    }
    if let Some(n) = name
        .and_then(Value::as_str)
        .and_then(|s| budget.whole(s, crate::llm::MAX_FIELD_BYTES))
    {
        p.insert("name".into(), n.into());
    }
    if let Some(a) = args.and_then(|a| bounded_value(a, budget)) {
        p.insert("arguments".into(), a);
    }
    Some(Value::Object(p))
}

/// A tool result part: `{type: tool_call_response, id, response}`. None once the budget is
/// spent.
fn tool_response_part(
    id: Option<&Value>,
    response: Option<&Value>,
    budget: &mut Budget,
) -> Option<Value> {
    if !budget.node() {
        return None;
    }
    let mut p = Map::new();
    p.insert("type".into(), "tool_call_response".into());
    if let Some(id) = id
        .and_then(Value::as_str)
        .and_then(|s| budget.whole(s, crate::llm::MAX_TOOL_ID_BYTES))
    {
        p.insert("id".into(), id.into());
    }
    let response = match response {
        // Anthropic's tool_result blocks: their texts.
        Some(Value::Array(blocks)) => {
            let texts: Vec<&str> = blocks
                .iter()
                .take(MAX_NODES)
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            budget.take(&texts.join("\n")).map(Value::String)
        }
        Some(r) => bounded_value(r, budget),
        None => None,
    };
    if let Some(r) = response {
        p.insert("response".into(), r);
    }
    Some(Value::Object(p))
}

/// A JSON value within the budget: a string as text (parsed when it is a JSON object or array
/// that fits), another value kept when its JSON text fits (charged its size, at least
/// [`NODE_COST`] per node), else its text cut; None when the budget is spent.
fn bounded_value(v: &Value, budget: &mut Budget) -> Option<Value> {
    match v {
        Value::String(s) => {
            let fits = s.len() <= budget.left;
            let t = budget.take(s)?;
            if fits
                && (t.starts_with('{') || t.starts_with('['))
                && let Ok(parsed) = serde_json::from_str::<Value>(&t)
            {
                let cost = value_cost(&parsed);
                if cost <= budget.left + t.len() {
                    budget.left = (budget.left + t.len()).saturating_sub(cost);
                    return Some(parsed);
                }
            }
            Some(Value::String(t))
        }
        Value::Null => None,
        other => {
            let text = other.to_string();
            let cost = value_cost(other).max(text.len());
            if cost <= budget.left {
                budget.left -= cost;
                Some(other.clone())
            } else {
                budget.take(&text).map(Value::String)
            }
        }
    }
}

/// What a JSON value costs the budget: its text bytes and [`NODE_COST`] per node.
fn value_cost(v: &Value) -> usize {
    match v {
        Value::String(s) => NODE_COST + s.len(),
        Value::Array(a) => NODE_COST + a.iter().map(value_cost).sum::<usize>(),
        Value::Object(m) => {
            NODE_COST
                + m.iter()
                    .map(|(k, x)| k.len() + value_cost(x))
                    .sum::<usize>()
        }
        _ => NODE_COST,
    }
}

// ---------------------------------------------------------------------------------------------
// The answer.

/// One part of an answer being reassembled.
#[derive(Debug, Clone, PartialEq)]
enum OutPart {
    Text(String),
    Reasoning(String),
    ToolCall {
        index: Option<u32>,
        id: Option<String>,
        name: Option<String>,
        args: String,
    },
}

/// Most parts of one answer (a text part per run of text, one per tool call).
const MAX_OUT_PARTS: usize = 256;

/// The answer of one call being reassembled from its stream (or whole body): deltas of one kind
/// joined into one part, tool calls with their streamed arguments; at most `max_bytes` of text.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputContent {
    parts: Vec<OutPart>,
    left: usize,
    cut: bool,
}

impl OutputContent {
    /// An empty answer that keeps `max_bytes` of text.
    pub fn new(max_bytes: usize) -> Self {
        OutputContent {
            parts: Vec::new(),
            left: max_bytes,
            cut: false,
        }
    }

    /// Heap bytes held (the tracker's memory budget).
    pub fn heap_bytes(&self) -> usize {
        self.parts.capacity() * std::mem::size_of::<OutPart>()
            + self
                .parts
                .iter()
                .map(|p| match p {
                    OutPart::Text(s) | OutPart::Reasoning(s) => s.capacity(),
                    OutPart::ToolCall { id, name, args, .. } => {
                        args.capacity()
                            + id.as_ref().map_or(0, String::capacity)
                            + name.as_ref().map_or(0, String::capacity)
                    }
                })
                .sum::<usize>()
    }

    /// Appends `text` to `s` within the budget.
    fn append(left: &mut usize, cut: &mut bool, s: &mut String, text: &str) {
        if *left == 0 {
            *cut = true;
            return;
        }
        if text.len() <= *left {
            s.push_str(text);
            *left -= text.len();
            return;
        }
        let mut end = *left;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let end = cut_at(text, end);
        s.push_str(&text[..end]);
        s.push_str(CUT_MARKER);
        *left = 0;
        *cut = true;
    }

    fn push(&mut self, part: OutPart) -> bool {
        if self.parts.len() >= MAX_OUT_PARTS || self.left < NODE_COST {
            self.cut = true;
            return false;
        }
        self.left -= NODE_COST;
        self.parts.push(part);
        true
    }

    /// Answer text arrived.
    pub fn text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.left == 0 {
            self.cut = true;
            return;
        }
        if !matches!(self.parts.last(), Some(OutPart::Text(_)))
            && !self.push(OutPart::Text(String::new()))
        {
            return;
        }
        if let Some(OutPart::Text(s)) = self.parts.last_mut() {
            Self::append(&mut self.left, &mut self.cut, s, text);
        }
    }

    /// Reasoning (thinking) text arrived.
    pub fn reasoning(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.left == 0 {
            self.cut = true;
            return;
        }
        if !matches!(self.parts.last(), Some(OutPart::Reasoning(_)))
            && !self.push(OutPart::Reasoning(String::new()))
        {
            return;
        }
        if let Some(OutPart::Reasoning(s)) = self.parts.last_mut() {
            Self::append(&mut self.left, &mut self.cut, s, text);
        }
    }

    /// The tool call at `index` (a new one when no call has that index, or without an index).
    fn call_at(&mut self, index: Option<u32>) -> Option<usize> {
        if let Some(i) = index
            && let Some(at) = self
                .parts
                .iter()
                .rposition(|p| matches!(p, OutPart::ToolCall { index: Some(j), .. } if *j == i))
        {
            return Some(at);
        }
        self.push(OutPart::ToolCall {
            index,
            id: None,
            name: None,
            args: String::new(),
        })
        .then(|| self.parts.len() - 1)
    }

    /// A tool call (see `Observed::note_tool_call`).
    pub fn tool_call(&mut self, index: Option<u32>, id: Option<&str>, name: Option<&str>) {
        let Some(at) = self.call_at(index) else {
            return;
        };
        if let OutPart::ToolCall {
            id: have_id,
            name: have_name,
            ..
        } = &mut self.parts[at]
        {
            // Ids and names are charged to the budget like text, kept whole or not at all.
            if have_id.is_none()
                && let Some(id) = id.filter(|i| {
                    !i.is_empty()
                        && i.len() <= crate::llm::MAX_TOOL_ID_BYTES
                        && i.len() <= self.left
                })
            {
                self.left -= id.len();
                *have_id = Some(id.to_owned());
            }
            if have_name.is_none()
                && let Some(n) = name.filter(|n| {
                    !n.is_empty() && n.len() <= crate::llm::MAX_FIELD_BYTES && n.len() <= self.left
                })
            {
                self.left -= n.len();
                *have_name = Some(n.to_owned());
            }
        }
    }

    /// A tool call's arguments (see `Observed::note_tool_args`): appended to the call at `index`,
    /// else to the latest call.
    pub fn tool_args(&mut self, index: Option<u32>, text: &str) {
        let at = match index {
            Some(_) => self.call_at(index),
            None => self
                .parts
                .iter()
                .rposition(|p| matches!(p, OutPart::ToolCall { .. }))
                .or_else(|| self.call_at(None)),
        };
        if let Some(at) = at
            && let OutPart::ToolCall { args, .. } = &mut self.parts[at]
        {
            Self::append(&mut self.left, &mut self.cut, args, text);
        }
    }

    /// Some text was cut or some parts left out for the size cap.
    pub fn truncated(&self) -> bool {
        self.cut
    }

    /// The answer as `gen_ai.output.messages`: one assistant message with its parts (None when
    /// nothing was said).
    pub fn into_messages(self, finish_reason: Option<&str>) -> Option<Value> {
        if self.parts.is_empty() {
            return None;
        }
        let parts: Vec<Value> = self
            .parts
            .into_iter()
            .map(|p| match p {
                OutPart::Text(t) => json!({"type": "text", "content": t}),
                OutPart::Reasoning(t) => json!({"type": "reasoning", "content": t}),
                OutPart::ToolCall { id, name, args, .. } => {
                    let mut m = Map::new();
                    m.insert("type".into(), "tool_call".into());
                    if let Some(id) = id {
                        m.insert("id".into(), id.into());
                    }
                    if let Some(n) = name {
                        m.insert("name".into(), n.into());
                    }
                    if !args.is_empty() {
                        let v = serde_json::from_str::<Value>(&args)
                            .ok()
                            .filter(|v| v.is_object() || v.is_array())
                            .unwrap_or(Value::String(args));
                        m.insert("arguments".into(), v);
                    }
                    Value::Object(m)
                }
            })
            .collect();
        let mut msg = Map::new();
        msg.insert("role".into(), "assistant".into());
        msg.insert("parts".into(), Value::Array(parts));
        if let Some(f) = finish_reason {
            msg.insert(
                "finish_reason".into(),
                crate::llm::cap_field(f, crate::llm::MAX_FIELD_BYTES).into(),
            );
        }
        Some(Value::Array(vec![Value::Object(msg)]))
    }
}

// ---------------------------------------------------------------------------------------------
// The enrich stage: redaction and the record's fields.

/// Redacts one document in place: the message and part objects keep their structure (`role`
/// and `type`, words from fixed lists), every other string (texts, ids, names, finish reasons,
/// tool arguments and results, and their object keys) goes through the redactor.
fn redact_doc(v: &mut Value, r: &redact::Redactor, counts: &mut redact::RedactionCounts) {
    match v {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| redact_struct(item, r, counts)),
        other => redact_all(other, r, counts),
    }
}

/// A message or a part: `role` and `type` kept, `parts` holds parts, the rest is content.
fn redact_struct(v: &mut Value, r: &redact::Redactor, counts: &mut redact::RedactionCounts) {
    let Value::Object(m) = v else {
        return redact_all(v, r, counts);
    };
    for (k, x) in m.iter_mut() {
        match k.as_str() {
            "role" | "type" => {}
            "parts" => match x {
                Value::Array(parts) => parts.iter_mut().for_each(|p| redact_struct(p, r, counts)),
                other => redact_all(other, r, counts),
            },
            _ => redact_all(x, r, counts),
        }
    }
}

/// Every string of `v`, object keys included.
fn redact_all(v: &mut Value, r: &redact::Redactor, counts: &mut redact::RedactionCounts) {
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(red) = r.redact(s, counts) {
                *s = red;
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|x| redact_all(x, r, counts)),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut x) in old {
                redact_all(&mut x, r, counts);
                let k = match r.redact(&k, counts) {
                    std::borrow::Cow::Owned(red) => red,
                    std::borrow::Cow::Borrowed(_) => k,
                };
                m.insert(k, x);
            }
        }
        _ => {}
    }
}

/// The enrich stage's content step: redacts a selected call's content and writes its record
/// fields.
#[derive(Debug, Clone)]
pub struct Render {
    redactor: redact::Redactor,
    /// Longest JSON text of one document: `--content-max-bytes` of text, escaped (a control
    /// character takes six bytes), with its structure and redaction tags.
    max_doc: usize,
    /// Redactions per rule since the start (the caller publishes the growth).
    pub counts: redact::RedactionCounts,
}

impl Render {
    /// A step that redacts with `redactor` the documents of calls collected under
    /// `max_bytes`.
    pub fn new(redactor: redact::Redactor, max_bytes: usize) -> Self {
        Render {
            redactor,
            max_doc: 2 * max_bytes + 16 * 1024,
            counts: redact::RedactionCounts::default(),
        }
    }

    /// The redactor's rule names (the metric's labels, in count order).
    pub fn rule_names(&self) -> Vec<&str> {
        self.redactor.rule_names()
    }

    /// Takes the call's collected content, redacts it and writes `system_instructions`,
    /// `input_messages` and `output_messages`. True when the content was cut for its size cap.
    pub fn render(&mut self, call: &mut LlmCall) -> bool {
        let Some(content) = call.detail.content.take() else {
            return false;
        };
        let CallContent {
            system,
            input,
            output,
            truncated,
            ..
        } = *content;
        let mut oversized = false;
        let mut doc = |v: Option<Value>| {
            v.and_then(|mut v| {
                redact_doc(&mut v, &self.redactor, &mut self.counts);
                let text = v.to_string();
                // Text escaped past the cap (control characters) is left out whole.
                if text.len() > self.max_doc {
                    oversized = true;
                    return None;
                }
                Some(ContentJson(text))
            })
        };
        call.system_instructions = doc(system);
        call.input_messages = doc(input);
        call.output_messages = doc(output);
        truncated || oversized
    }
}

#[cfg(test)]
mod tests;
