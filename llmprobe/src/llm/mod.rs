//! Stage 4: the LLM call model. An HTTP exchange that a provider dialect recognises becomes one
//! [`LlmCall`] record: provider, model, tokens, timings, status, errors. Dialects sit behind the
//! [`ProviderDialect`] trait, one file each, listed once in [`detect`];
//! [`exchange::LlmExchange`] drives them from HTTP events.
//!
//! Every byte is parsed once: the exchange frames a streamed body into
//! [`crate::protocol::StreamEvent`]s and hands the dialect each one as a [`json::Event`]; request
//! and whole response bodies come as [`json::Body`]. A dialect reads an event or a response body
//! through the lenient typed views of [`typed`] (strings borrowed from the data, no `Value`
//! tree), and the exchange learns from that same parse whether the data was JSON (the bad-event
//! count). A request body is parsed once into a `Value`, shared by the candidate check, the
//! dialect and the prompt sample. The readers the dialects share sit in one place: [`typed`] (the
//! `usage`, `error` and content-text views), [`json`] (request readers, content-text counters,
//! the prompt-text keys). Tokens are estimated (see [`tokens`]) only for the counts the API did
//! not report.

pub mod anthropic;
pub mod bpe;
pub mod conversation;
pub mod dashscope;
pub mod dify;
pub mod exchange;
pub mod gateway;
pub mod gemini;
pub mod json;
pub mod mcp;
pub mod ollama;
pub mod openai;
pub mod openai_responses;
pub mod pricing;
#[cfg(test)]
mod test_support;
pub mod tokens;
pub mod tool_chain;
pub mod tracking;
pub mod typed;

use std::borrow::Cow;

use serde::Serialize;

use crate::protocol::http1::RequestHead;
use json::{Body, Event};

/// One LLM call, as written to JSONL. Field names are a documented contract (README).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LlmCall {
    /// First request byte, RFC 3339 UTC.
    pub start_time: String,
    /// Last response byte (or abort), RFC 3339 UTC.
    pub end_time: String,
    /// `client` (the process sent the request) or `server` (it received it).
    pub role: &'static str,
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// Container id (from the process's cgroup), when it runs in one.
    pub container_id: Option<String>,
    /// Captured through the TLS library.
    pub tls: bool,
    /// The socket's peer `ip:port`, when known.
    pub peer_addr: Option<String>,
    /// From the Host header, else the peer.
    pub server_address: Option<String>,
    /// From the Host header, else the peer.
    pub server_port: Option<u16>,
    /// HTTP method.
    pub http_method: String,
    /// Request path (query values of key-like parameters masked).
    pub http_path: String,
    /// Response status, when a response head was seen.
    pub http_status: Option<u16>,
    /// `gen_ai.provider.name`.
    pub provider: String,
    /// API, e.g. `openai.chat_completions`.
    pub api: &'static str,
    /// `gen_ai.operation.name`.
    pub operation: &'static str,
    /// Model asked for.
    pub request_model: Option<String>,
    /// Model that answered.
    pub response_model: Option<String>,
    /// Streaming response requested/received.
    pub stream: Option<bool>,
    /// Input (prompt) tokens.
    pub input_tokens: Option<u64>,
    /// Output tokens (including reasoning tokens).
    pub output_tokens: Option<u64>,
    /// Reasoning tokens, when reported.
    pub reasoning_tokens: Option<u64>,
    /// Input tokens served from a prompt cache.
    pub cached_input_tokens: Option<u64>,
    /// `usage` (reported by the API) or `estimated`.
    pub token_source: Option<&'static str>,
    /// First request byte to last response byte (or abort), seconds.
    pub duration_s: f64,
    /// First request byte to first output-bearing stream event, seconds.
    pub ttft_s: Option<f64>,
    /// Time per output token after the first, seconds.
    pub tpot_s: Option<f64>,
    /// First reasoning event to first answer event, seconds.
    pub reasoning_s: Option<f64>,
    /// Median gap between consecutive output events, seconds.
    pub tbt_p50_s: Option<f64>,
    /// 95th percentile gap, seconds.
    pub tbt_p95_s: Option<f64>,
    /// Largest gap, seconds.
    pub tbt_max_s: Option<f64>,
    /// Output-bearing stream events.
    pub chunks: Option<u64>,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// Null, the HTTP status as a string, or a named llmprobe error.
    pub error_type: Option<String>,
    /// The `Retry-After` response header, as sent (429/503 responses).
    pub retry_after: Option<String>,
    /// The client closed before the response finished.
    pub aborted: bool,
    /// Request id from the response headers (or the response body's id).
    pub request_id: Option<String>,
    /// Trace id of a W3C `traceparent` request header.
    pub trace_id: Option<String>,
    /// Server role on a GPU node: mean SM utilization of the server's GPUs during the call, percent.
    pub gpu_util_mean: Option<f64>,
    /// Server role on a GPU node: memory used on the server's GPUs during the call, bytes.
    pub gpu_mem_used_bytes: Option<u64>,
    /// Server role on a GPU node: mean power of the server's GPUs during the call, watts.
    pub gpu_power_mean_w: Option<f64>,
    /// Conversation this call belongs to: a short keyed hash (hex) of an explicit id the traffic
    /// carried, or of the call that started a conversation reconstructed from message history.
    pub conversation_id: Option<String>,
    /// How the call was matched to its conversation, e.g. `dify.conversation_id`,
    /// `header.x-conversation-id`, `openai.previous_response_id`, `history` (by its messages,
    /// also under an explicit id the call itself did not carry).
    pub conversation_source: Option<&'static str>,
    /// 1-based turn of the call within its conversation.
    pub turn: Option<u32>,
    /// The call sent a history already sent before (a regenerated answer).
    pub regeneration: Option<bool>,
    /// Cost from the price table (`--prices`), in `cost_currency`.
    pub cost: Option<f64>,
    /// Currency of `cost`.
    pub cost_currency: Option<String>,
    /// Price the response reported for itself (Dify `metadata.usage.total_price`).
    pub reported_cost: Option<f64>,
    /// Currency of `reported_cost`.
    pub reported_cost_currency: Option<String>,
    /// Latency the server reported for itself (Dify `metadata.usage.latency`), seconds.
    pub reported_latency_s: Option<f64>,
    /// API-key fingerprint: a short keyed hash of the request's credential (the credential
    /// itself never leaves the masker).
    pub api_key_id: Option<String>,
    /// `usage` (reported) or `estimated` (from the thinking text) for `reasoning_tokens`.
    pub reasoning_token_source: Option<&'static str>,
    /// Fresh connection: connect() to the connection's first byte out, seconds.
    pub connect_s: Option<f64>,
    /// Fresh TLS connection: first handshake byte out to the first request byte, seconds.
    pub tls_handshake_s: Option<f64>,
    /// First to last request byte, seconds.
    pub request_upload_s: Option<f64>,
    /// Time the server reports the request queued, seconds.
    pub server_queue_s: Option<f64>,
    /// Time the server reports for reading the prompt (prefill), seconds.
    pub server_prefill_s: Option<f64>,
    /// Time the server reports for the whole request (e.g. `openai-processing-ms`), seconds.
    pub server_processing_s: Option<f64>,
    /// Gateway (server role) call that made an upstream call: its TTFT minus the upstream's.
    pub gateway_overhead_s: Option<f64>,
    /// Gateway record: the request id of the upstream call it made.
    pub upstream_request_id: Option<String>,
    /// Upstream record: the request id of the gateway call it served.
    pub gateway_request_id: Option<String>,
    /// Tools the request declared (its tool definitions), when it declared any.
    pub tool_definitions: Option<u32>,
    /// Tool calls the response asked for (`finish_reason` `tool_calls` / `tool_use`), or, for an
    /// `execute_tool` record (MCP `tools/call`), 1.
    pub tool_calls: Option<u32>,
    /// `gen_ai.tool.name`: the distinct names of the tools the response called, in first-call
    /// order (at most [`MAX_TOOL_NAMES`], each capped to [`MAX_FIELD_BYTES`]); for an
    /// `execute_tool` record, the tool run.
    pub tool_names: Option<Vec<String>>,
    /// MCP: the JSON-RPC method (`tools/call`, `resources/read`, ...).
    pub mcp_method: Option<String>,
    /// MCP: the session, a keyed hash of the `Mcp-Session-Id` header (the id itself is a
    /// capability and never leaves the exchange).
    pub mcp_session_id: Option<String>,
    /// JSON-RPC: the request's id, as sent (a number or a string).
    pub jsonrpc_request_id: Option<String>,
    /// JSON-RPC: the error code of the answer, when it was an error.
    pub jsonrpc_error_code: Option<i64>,
    /// This record's span id (16 hex digits): the OTLP span's, fixed for every record.
    pub span_id: Option<String>,
    /// The earlier calls this call carries tool results of (their `span_id`s): one agent loop
    /// as one chain (OTLP span links).
    pub follows_span_ids: Option<Vec<String>>,
    /// Opt-in content (`--capture-content`): the system instructions, as
    /// `gen_ai.system_instructions` JSON (redacted, size-capped).
    pub system_instructions: Option<ContentJson>,
    /// Opt-in content: the request's messages, as `gen_ai.input.messages` JSON.
    pub input_messages: Option<ContentJson>,
    /// Opt-in content: the answer reassembled from the stream, as `gen_ai.output.messages` JSON.
    pub output_messages: Option<ContentJson>,
    /// What exporters need beyond the record (not part of the JSON).
    #[serde(skip)]
    pub detail: CallDetail,
}

/// Most tool names kept per record.
pub const MAX_TOOL_NAMES: usize = 16;

/// A JSON document held as its text (opt-in content), written into JSON lines as JSON, not as a
/// string. Only [`crate::content`] makes one, from a `serde_json` serialisation, so the text is
/// always valid JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContentJson(pub String);

impl Serialize for ContentJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&serde_json::value::RawValue>(&self.0) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_none(),
        }
    }
}

/// Longest value, in bytes, of a free-text field of a record or span (models, ids, error types,
/// finish reasons, provider, method, path, process and container names, `Retry-After`): they
/// come from other processes' traffic. Longer values are cut by [`cap_field`].
pub const MAX_FIELD_BYTES: usize = 256;

/// Ends a value cut by [`cap_field`].
pub const CUT_MARKER: &str = "…";

/// `s` if it has at most `max` bytes, else its longest prefix that ends on a UTF-8 character
/// boundary and leaves room for [`CUT_MARKER`], followed by the marker: at most `max` bytes in
/// all. The one helper for every bounded text field and metric label value.
pub fn cap_field(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max.saturating_sub(CUT_MARKER.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + CUT_MARKER.len());
    out.push_str(&s[..end]);
    if out.len() + CUT_MARKER.len() <= max {
        out.push_str(CUT_MARKER);
    }
    Cow::Owned(out)
}

/// [`cap_field`] in place.
fn cap_in_place(s: &mut String, max: usize) {
    if let Cow::Owned(cut) = cap_field(s, max) {
        *s = cut;
    }
}

impl LlmCall {
    /// Cuts every free-text field to [`MAX_FIELD_BYTES`] (see [`cap_field`]).
    pub fn cap_fields(&mut self) {
        for s in [
            &mut self.comm,
            &mut self.http_method,
            &mut self.http_path,
            &mut self.provider,
        ] {
            cap_in_place(s, MAX_FIELD_BYTES);
        }
        for s in [
            &mut self.container_id,
            &mut self.peer_addr,
            &mut self.server_address,
            &mut self.request_model,
            &mut self.response_model,
            &mut self.finish_reason,
            &mut self.error_type,
            &mut self.retry_after,
            &mut self.request_id,
            &mut self.trace_id,
            &mut self.conversation_id,
            &mut self.cost_currency,
            &mut self.reported_cost_currency,
            &mut self.api_key_id,
            &mut self.upstream_request_id,
            &mut self.gateway_request_id,
            &mut self.detail.parent_span_id,
            &mut self.mcp_method,
            &mut self.mcp_session_id,
            &mut self.jsonrpc_request_id,
        ]
        .into_iter()
        .flatten()
        {
            cap_in_place(s, MAX_FIELD_BYTES);
        }
        if let Some(names) = &mut self.tool_names {
            names.truncate(MAX_TOOL_NAMES);
            names
                .iter_mut()
                .for_each(|n| cap_in_place(n, MAX_FIELD_BYTES));
        }
    }
}

/// Per-call details for metrics and spans that the JSON record leaves out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallDetail {
    /// Start, Unix nanoseconds.
    pub start_unix_ns: i64,
    /// End, Unix nanoseconds.
    pub end_unix_ns: i64,
    /// First output-bearing event, Unix nanoseconds.
    pub first_chunk_unix_ns: Option<i64>,
    /// Gaps between consecutive output events, seconds, in arrival order (bounded).
    pub gaps_s: Vec<f64>,
    /// Parent span id of a W3C `traceparent` request header (16 hex digits), or of the gateway
    /// call an upstream call served (`gateway`).
    pub parent_span_id: Option<String>,
    /// Workflow nodes the server reported (Dify), with Unix-ns times: child spans of the call.
    pub workflow_nodes: Vec<WorkflowNode>,
    /// Workflow nodes past [`MAX_WORKFLOW_NODES`], not kept.
    pub workflow_nodes_dropped: u64,
    /// What the request carried about its conversation (keyed hashes only), for the enrich
    /// stage's matcher, which takes it.
    pub conversation: conversation::ConversationKeys,
    /// The span's own id (16 hex digits) when the tracker fixed it: a gateway call whose
    /// upstream calls name it as their parent. Else the exporter draws one.
    pub span_id: Option<String>,
    /// The span's trace (32 hex digits) when the record has no `trace_id` of its own: a gateway
    /// call and its upstream calls share one.
    pub trace_id: Option<String>,
    /// Keyed hashes of the tool-call ids the response made (the enrich stage's tool-chain index
    /// keeps them, to link the calls that answer them).
    pub tool_call_ids: Vec<u64>,
    /// Keyed hashes of the tool-call ids whose results the request carried.
    pub tool_result_ids: Vec<u64>,
    /// Links of the span to earlier spans: (trace id, 32 hex digits; span id, 16 hex digits).
    pub links: Vec<(String, String)>,
    /// Opt-in content of a selected call, before redaction (the enrich stage redacts it into
    /// the record's content fields and drops this).
    pub content: Option<Box<crate::content::CallContent>>,
}

/// Usage and outcome a dialect extracts from responses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: Option<u64>,
    /// Completion tokens (including reasoning).
    pub output_tokens: Option<u64>,
    /// Reasoning tokens.
    pub reasoning_tokens: Option<u64>,
    /// Cached prompt tokens.
    pub cached_input_tokens: Option<u64>,
}

/// What a stream event carried, as far as timing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Nothing the user sees (role-only delta, usage chunk, ping...).
    None,
    /// Reasoning / thinking text.
    Reasoning,
    /// Answer text or tool-call arguments.
    Answer,
}

/// Sets a text field that most stream events repeat (the model, a finish reason): the string
/// is replaced only when the text changes, so repeating it allocates nothing.
pub(crate) fn set_text(slot: &mut Option<String>, text: &str) {
    if slot.as_deref() != Some(text) {
        *slot = Some(text.to_owned());
    }
}

/// What a dialect learned from one request body, stream event or response body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Model asked for.
    pub request_model: Option<String>,
    /// Streaming requested.
    pub stream: Option<bool>,
    /// Characters of prompt text (for estimates; the text itself is not kept).
    pub prompt_chars: u64,
    /// Model that answered.
    pub response_model: Option<String>,
    /// Response id.
    pub response_id: Option<String>,
    /// Usage, when reported (replaces earlier usage field by field).
    pub usage: Usage,
    /// Finish reason.
    pub finish_reason: Option<String>,
    /// Characters of output text (for estimates).
    pub output_chars: u64,
    /// The stream's terminal event was seen.
    pub terminal: bool,
    /// An error reported inside the body or stream.
    pub error: Option<String>,
    /// The start of the output text (bounded), for token estimates; never exported.
    pub output_sample: String,
    /// Characters in `output_sample`.
    pub output_sample_chars: usize,
    /// The start of the prompt text (bounded), for token estimates; never exported.
    pub prompt_sample: String,
    /// Timings the server reported in the body (Ollama's durations).
    pub server: exchange::ServerTimings,
    /// An explicit conversation id the request (or, for a new Dify conversation, the response)
    /// carried: where it came from (e.g. `dify.conversation_id`) and the value. Only its keyed
    /// hash (`crate::ids`) leaves the exchange.
    pub conversation: Option<(&'static str, String)>,
    /// An explicit end-user id (OpenAI `user` / `safety_identifier`, Anthropic
    /// `metadata.user_id`, Dify `user`). Only its keyed hash leaves the exchange.
    pub end_user: Option<String>,
    /// The price the response reported for itself (Dify `total_price`) and its currency.
    pub reported_cost: Option<(f64, String)>,
    /// The latency the server reported for itself (Dify `latency`), seconds.
    pub reported_latency_s: Option<f64>,
    /// Characters of reasoning (thinking) text, part of `output_chars` too: for an estimate of
    /// the reasoning tokens when the API folds them into the output count.
    pub reasoning_chars: u64,
    /// The start of the reasoning text (bounded), for that estimate; never exported.
    pub reasoning_sample: String,
    /// Characters in `reasoning_sample`.
    pub reasoning_sample_chars: usize,
    /// Monotonic time (ns) of the stream event being read, set by the exchange before each
    /// [`ProviderDialect::on_stream_event`] call (0 outside one): for dialects that time parts
    /// of a call (Dify's workflow nodes).
    pub event_ts: u64,
    /// Workflow nodes a Dify workflow reported (bounded, see [`WorkflowNodes`]).
    pub workflow_nodes: WorkflowNodes,
    /// Tools: definitions the request declared, calls the response made, tool results the
    /// request carried (bounded, see [`ToolUse`]).
    pub tools: ToolUse,
    /// Opt-in content being reassembled from the response (None: content capture is off for
    /// this call). Fed by the `note_*` methods, never by dialects directly.
    pub content: Option<Box<crate::content::OutputContent>>,
}

/// Most tool-call ids (made by the response, or answered by the request) kept per call.
pub const MAX_TOOL_IDS: usize = 64;

/// Longest tool-call id kept, in bytes (longer ones are not kept: they cannot link calls).
pub const MAX_TOOL_ID_BYTES: usize = 256;

/// What one call did with tools, bounded: at most [`MAX_TOOL_NAMES`] names and
/// [`MAX_TOOL_IDS`] ids each way; counts stay exact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolUse {
    /// Tool definitions the request declared.
    pub definitions: Option<u32>,
    /// Tool calls the response made.
    pub calls: u32,
    /// Distinct tool names called, in first-call order (capped to [`MAX_FIELD_BYTES`]).
    pub names: Vec<String>,
    /// Stream indexes of the calls seen (a streamed call is noted once per delta).
    pub indexes: Vec<u32>,
    /// Ids of the tool calls the response made (raw: only keyed hashes leave the exchange).
    pub call_ids: Vec<String>,
    /// Ids of the earlier tool calls whose results the request carried (raw, as above).
    pub result_ids: Vec<String>,
}

impl ToolUse {
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let strings = |v: &Vec<String>| {
            v.capacity() * std::mem::size_of::<String>()
                + v.iter().map(String::capacity).sum::<usize>()
        };
        strings(&self.names)
            + strings(&self.call_ids)
            + strings(&self.result_ids)
            + self.indexes.capacity() * 4
    }

    fn keep_id(ids: &mut Vec<String>, id: &str) {
        if !id.is_empty()
            && id.len() <= MAX_TOOL_ID_BYTES
            && ids.len() < MAX_TOOL_IDS
            && !ids.iter().any(|i| i == id)
        {
            ids.push(id.to_owned());
        }
    }
}

impl Observed {
    /// Output text arrived: counts its characters and keeps the start as a sample.
    pub fn note_output(&mut self, text: &str) {
        if let Some(c) = &mut self.content {
            c.text(text);
        }
        self.count_output(text);
    }

    fn count_output(&mut self, text: &str) {
        let n = text.chars().count();
        self.output_chars += n as u64;
        tokens::add_counted(
            &mut self.output_sample,
            &mut self.output_sample_chars,
            text,
            n,
        );
    }

    /// Reasoning (thinking) text arrived: output, and counted and sampled apart as well for the
    /// reasoning-token estimate.
    pub fn note_reasoning(&mut self, text: &str) {
        if let Some(c) = &mut self.content {
            c.reasoning(text);
        }
        let n = text.chars().count();
        self.output_chars += n as u64;
        tokens::add_counted(
            &mut self.output_sample,
            &mut self.output_sample_chars,
            text,
            n,
        );
        self.reasoning_chars += n as u64;
        tokens::add_counted(
            &mut self.reasoning_sample,
            &mut self.reasoning_sample_chars,
            text,
            n,
        );
    }

    /// The response made a tool call: `index` is its place in a streamed response (a call is
    /// noted on each of its deltas; one index counts once, its id and name taken when they
    /// come), `id` the API's call id (OpenAI `call_…`, Anthropic `toolu_…`), `name` the tool.
    /// None for what the API does not say.
    pub fn note_tool_call(&mut self, index: Option<u32>, id: Option<&str>, name: Option<&str>) {
        let t = &mut self.tools;
        let new = match index {
            Some(i) if t.indexes.contains(&i) => false,
            Some(i) if t.indexes.len() < MAX_TOOL_IDS => {
                t.indexes.push(i);
                true
            }
            // Past the indexes kept, only a call's first delta (the one with its id or name)
            // counts: its argument deltas would count it again.
            Some(_) => id.is_some() || name.is_some(),
            None => true,
        };
        if new {
            t.calls = t.calls.saturating_add(1);
        }
        if let Some(id) = id {
            ToolUse::keep_id(&mut t.call_ids, id);
        }
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            let name = cap_field(name, MAX_FIELD_BYTES);
            if t.names.len() < MAX_TOOL_NAMES && !t.names.iter().any(|n| *n == name) {
                t.names.push(name.into_owned());
            }
        }
        if let Some(c) = &mut self.content {
            c.tool_call(index, id, name);
        }
    }

    /// Arguments of a tool call arrived (a streamed piece, or the whole JSON text): output for
    /// the token estimate, and the call's arguments in captured content.
    pub fn note_tool_args(&mut self, index: Option<u32>, text: &str) {
        if let Some(c) = &mut self.content {
            c.tool_args(index, text);
        }
        self.count_output(text);
    }

    /// The request declared `n` tools (added up when a request spreads them over lists).
    pub fn note_tool_definitions(&mut self, n: u32) {
        let d = self.tools.definitions.get_or_insert(0);
        *d = d.saturating_add(n);
    }

    /// The request carries the result of the earlier tool call `id`.
    pub fn note_tool_result(&mut self, id: &str) {
        ToolUse::keep_id(&mut self.tools.result_ids, id);
    }
}

/// The index under which a streamed tool call is noted ([`Observed::note_tool_call`]): the
/// call's own index within the choice (or candidate) it belongs to, so that the calls of
/// several choices (`n` > 1) stay apart. None past `u32` (a hostile index: each of its deltas
/// then counts as a call, within the exact but saturating count).
pub(crate) fn tool_index(choice: u64, call: u64) -> Option<u32> {
    const PER_CHOICE: u64 = 1024;
    if call >= PER_CHOICE {
        return None;
    }
    u32::try_from(choice.checked_mul(PER_CHOICE)?.checked_add(call)?).ok()
}

/// Most workflow nodes kept per call (later ones are counted, not kept).
pub const MAX_WORKFLOW_NODES: usize = 64;

/// One node of a workflow run (Dify `node_started` / `node_finished`): its type and status only
/// (titles and inputs are the app's own text). Times are monotonic ns while the call is open,
/// Unix ns in a finished record's [`CallDetail`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowNode {
    /// Node type, e.g. `llm`, `start`, `code` (capped to [`MAX_FIELD_BYTES`]).
    pub node_type: String,
    /// `succeeded`, `failed`, ... when the node finished.
    pub status: Option<String>,
    /// When it started.
    pub start_ns: i64,
    /// When it finished (None: no `node_finished` seen).
    pub end_ns: Option<i64>,
    /// The time the server reported for it (`elapsed_time`), seconds.
    pub elapsed_s: Option<f64>,
}

/// The workflow nodes of one call, bounded by [`MAX_WORKFLOW_NODES`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkflowNodes {
    /// Nodes, in start order, with their ids while the call is open (matched by
    /// `node_finished`); the ids are dropped from the record.
    pub nodes: Vec<(String, WorkflowNode)>,
    /// Nodes seen past the cap.
    pub dropped: u64,
}

impl WorkflowNodes {
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<(String, WorkflowNode)>()
            + self
                .nodes
                .iter()
                .map(|(id, n)| {
                    id.capacity()
                        + n.node_type.capacity()
                        + n.status.as_ref().map_or(0, String::capacity)
                })
                .sum::<usize>()
    }
}

/// One API dialect: reads its request body, stream events and whole response bodies, each
/// handed over already framed and parsed at most once (see [`json`]): a dialect asks the event or
/// body for its typed view ([`json::Event::parse`], [`json::Body::parse`]) or its `Value`
/// ([`json::Body::json`]) and never parses the same bytes twice (a whole body that is not one
/// JSON value may still be read piece by piece: Gemini's cut array, Ollama's NDJSON delivered
/// whole). Shared views and readers: [`typed`], [`json`].
pub trait ProviderDialect: Send {
    /// Heap bytes the dialect holds beyond its own size (for the tracker's memory budget);
    /// a dialect that keeps strings or lists per exchange counts them here.
    fn heap_bytes(&self) -> usize {
        0
    }
    /// `gen_ai.provider.name` when the host says nothing more specific.
    fn provider(&self) -> &'static str;
    /// API name, e.g. `openai.chat_completions`.
    fn api(&self) -> &'static str;
    /// `gen_ai.operation.name`.
    fn operation(&self) -> &'static str;
    /// Reads the (whole or capped) request body.
    fn on_request_body(&mut self, body: &Body<'_>, out: &mut Observed);
    /// Reads one stream event; returns what it carried.
    fn on_stream_event(&mut self, ev: &Event<'_>, out: &mut Observed) -> OutputKind;
    /// Reads a whole non-streamed response body.
    fn on_response_body(&mut self, body: &Body<'_>, out: &mut Observed);
    /// Fills the record fields only this dialect knows, once the exchange has built the record
    /// (MCP: the JSON-RPC method, ids, tool and error; see [`mcp`]). Most dialects have none.
    fn complete_record(&mut self, _call: &mut LlmCall) {}
}

/// Picks the dialect for a request head, or None for non-LLM HTTP.
pub fn detect(head: &RequestHead) -> Option<Box<dyn ProviderDialect>> {
    // Most specific paths first; the OpenAI-compatible catch-alls (`.../chat/completions`,
    // `.../completions`, `.../embeddings`) last.
    anthropic::detect(head)
        .or_else(|| gemini::detect(head))
        .or_else(|| ollama::detect(head))
        .or_else(|| dashscope::detect(head))
        .or_else(|| dify::detect(head))
        .or_else(|| openai_responses::detect(head))
        .or_else(|| openai::detect(head))
}

/// For a POST that no dialect recognised by its path: a dialect to try, confirmed only if the
/// request body has an LLM request's shape (see [`body_looks_like_llm`]). Gateways and
/// self-hosted servers often put OpenAI-compatible APIs under paths of their own.
pub fn detect_candidate(head: &RequestHead) -> Option<Box<dyn ProviderDialect>> {
    if head.method != "POST" {
        return None;
    }
    let ctype = head
        .header("content-type")
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    if !ctype.contains("json") {
        return None;
    }
    Some(openai::chat_dialect())
}

/// For a candidate whose request body is not an LLM request: the dialect its body shape shows
/// (an MCP JSON-RPC request, [`mcp::detect_body`]), or None (not a call: the candidate is
/// rejected).
pub(crate) fn detect_body(body: &Body<'_>) -> Option<Box<dyn ProviderDialect>> {
    mcp::detect_body(body)
}

/// True when a request body is an OpenAI-style chat or completion request: a `model` string with
/// a `messages` array or a `prompt`. Works on bodies cut by a capture gap.
pub fn body_looks_like_llm(body: &[u8]) -> bool {
    parsed_body_looks_like_llm(&Body::new(body))
}

/// [`body_looks_like_llm`] on a body parsed (at most) once.
pub(crate) fn parsed_body_looks_like_llm(body: &Body<'_>) -> bool {
    match body.json() {
        Some(v) => {
            v.get("model").is_some_and(serde_json::Value::is_string)
                && (v.get("messages").is_some_and(serde_json::Value::is_array)
                    || v.get("prompt").is_some())
        }
        None => {
            let raw = body.raw();
            scan_json_string(raw, "model").is_some()
                && (scan_key(raw, "messages").is_some() || scan_key(raw, "prompt").is_some())
        }
    }
}

/// A request's path for routing: without query, fragment and trailing slashes.
pub(crate) fn route_path(head: &RequestHead) -> &str {
    head.path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/')
}

/// Finds `"key": "value"` in JSON bytes that may be cut (a capture gap) and so cannot be parsed:
/// the last occurrence whose quotes are real (not escaped inside a string). Used only as a
/// fallback when the whole body does not parse.
pub fn scan_json_string(body: &[u8], key: &str) -> Option<String> {
    let pos = scan_key(body, key)?;
    let rest = &body[pos..];
    let rest = rest.strip_prefix(b"\"")?;
    let mut out = Vec::new();
    let mut escaped = false;
    for &b in rest.iter().take(512) {
        match (escaped, b) {
            (true, _) => {
                out.push(b);
                escaped = false;
            }
            (false, b'\\') => escaped = true,
            (false, b'"') => return String::from_utf8(out).ok(),
            (false, _) => out.push(b),
        }
    }
    None
}

/// Like [`scan_json_string`] for a boolean value.
pub fn scan_json_bool(body: &[u8], key: &str) -> Option<bool> {
    let pos = scan_key(body, key)?;
    let rest = &body[pos..];
    if rest.starts_with(b"true") {
        Some(true)
    } else if rest.starts_with(b"false") {
        Some(false)
    } else {
        None
    }
}

/// Position just after `"key"` + optional whitespace + `:` + optional whitespace, last match.
fn scan_key(body: &[u8], key: &str) -> Option<usize> {
    let needle = format!("\"{key}\"");
    let n = needle.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i + n.len() <= body.len() {
        if &body[i..i + n.len()] == n && (i == 0 || body[i - 1] != b'\\') {
            let mut j = i + n.len();
            while j < body.len() && body[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < body.len() && body[j] == b':' {
                j += 1;
                while j < body.len() && body[j].is_ascii_whitespace() {
                    j += 1;
                }
                found = Some(j);
            }
        }
        i += 1;
    }
    found
}

/// Provider name refined from the server's host name.
pub fn provider_for_host(host: Option<&str>, dialect_default: &'static str) -> String {
    let Some(host) = host else {
        return dialect_default.to_owned();
    };
    let host = host.to_ascii_lowercase();
    let known: &[(&str, &str)] = &[
        ("api.openai.com", "openai"),
        ("openai.azure.com", "azure.ai.openai"),
        ("api.deepseek.com", "deepseek"),
        ("dashscope.aliyuncs.com", "dashscope"),
        ("dashscope-intl.aliyuncs.com", "dashscope"),
        ("api.anthropic.com", "anthropic"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.groq.com", "groq"),
        ("api.x.ai", "x_ai"),
        ("openrouter.ai", "openrouter"),
        ("api.moonshot.cn", "moonshot"),
        ("open.bigmodel.cn", "zhipu"),
    ];
    for (suffix, name) in known {
        if crate::probes::sni::is_host_or_subdomain(&host, suffix) {
            return (*name).to_owned();
        }
    }
    dialect_default.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_field_cuts_on_a_char_boundary_with_a_marker() {
        assert_eq!(cap_field("gpt-4o", 6), Cow::Borrowed("gpt-4o"));
        assert_eq!(cap_field("", 0), "");
        // Every length of a mixed one-to-four-byte string, every cap.
        let text = "aé€😀".repeat(5);
        for max in 0..=text.len() + 1 {
            let cut = cap_field(&text, max);
            assert!(cut.len() <= max, "{max}: {cut:?}");
            if text.len() <= max {
                assert_eq!(cut, text.as_str());
                continue;
            }
            if max >= CUT_MARKER.len() {
                let kept = cut.strip_suffix(CUT_MARKER).expect("marked");
                assert!(text.starts_with(kept));
                // Nothing more of the text would have fitted before the marker.
                let next = text[kept.len()..].chars().next().map_or(0, char::len_utf8);
                assert!(kept.len() + next + CUT_MARKER.len() > max, "{max}: {cut:?}");
            } else {
                assert_eq!(cut, "", "{max}");
            }
        }
    }

    #[test]
    fn scans_cut_json() {
        let body = br#"{"messages":[{"role":"user","content":"say \"model\": \"x\""}, {"con"#;
        let cut = [
            &body[..],
            b"\0",
            br#"tent":"..."}],"model":"gpt-4o","stream":true}"#,
        ]
        .concat();
        assert_eq!(scan_json_string(&cut, "model").as_deref(), Some("gpt-4o"));
        assert_eq!(scan_json_bool(&cut, "stream"), Some(true));
        assert_eq!(
            scan_json_string(b"{\"model\" : \"a\\\"b\"}", "model").as_deref(),
            Some("a\"b")
        );
        assert_eq!(scan_json_string(b"no json here", "model"), None);
        assert_eq!(scan_json_bool(br#"{"stream": 1}"#, "stream"), None);
    }
}
