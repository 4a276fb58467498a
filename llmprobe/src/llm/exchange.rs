//! One HTTP exchange recognised as an LLM call: collects the request body, decodes the response
//! (a token stream or a whole body) through its dialect, times every output-bearing event, and
//! turns it all into an [`LlmCall`] when the exchange ends or is cut off.
//!
//! Each piece is parsed once: the request body when it is complete (one [`Body`] for the
//! candidate check, the dialect and the prompt sample), each framed stream event as it arrives
//! (one [`Event`] for the dialect and the bad-JSON count), a whole response body at its end.

use std::net::SocketAddr;

use crate::clock::Clock;
use crate::protocol::EventRef;
use crate::protocol::encoding::BodyDecoder;
use crate::protocol::http1::{RequestHead, ResponseHead};
use crate::protocol::json_array::JsonArraySplitter;
use crate::protocol::ndjson::NdjsonDecoder;
use crate::protocol::sse::SseDecoder;

use super::json::{Body, Event};
use super::{LlmCall, Observed, OutputKind, ProviderDialect, Usage, provider_for_host};

/// Size caps for one exchange.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeLimits {
    /// Request body bytes kept for parsing (model, stream flag).
    pub max_request_body: usize,
    /// Non-streamed response body bytes kept for parsing.
    pub max_response_body: usize,
    /// Output event timestamps kept for TBT percentiles.
    pub max_output_events: usize,
    /// Decoded bytes of one compressed token stream.
    pub max_decoded_stream: u64,
}

impl Default for ExchangeLimits {
    fn default() -> Self {
        ExchangeLimits {
            max_request_body: 4 << 20,
            max_response_body: 8 << 20,
            max_output_events: 1 << 20,
            max_decoded_stream: 256 << 20,
        }
    }
}

/// Where the connection and process come from, supplied when the record is written.
#[derive(Debug, Clone)]
pub struct ExchangeContext {
    /// `client` or `server`.
    pub role: &'static str,
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// Captured through the TLS library.
    pub tls: bool,
    /// Socket peer.
    pub peer: Option<SocketAddr>,
    /// Container id of the process, when it runs in one.
    pub container: Option<String>,
    /// A fresh connection's connect and TLS handshake times, for its first request only.
    pub fresh: Option<crate::conntrack::FreshConn>,
}

/// Counters of things that went wrong inside exchanges (for self-metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeIssues {
    /// Stream events whose JSON did not parse.
    pub bad_stream_events: u64,
    /// SSE events over the size cap.
    pub oversized_events: u64,
    /// Bodies over the size cap (parsing used the first part only).
    pub truncated_bodies: u64,
    /// Compressed bodies that could not be decoded (unsupported, corrupt, or over the cap).
    pub undecodable_bodies: u64,
    /// NDJSON lines over the size cap.
    pub oversized_lines: u64,
}

/// How a streamed response body is cut into events.
enum StreamDecoder {
    /// `text/event-stream`.
    Sse(SseDecoder),
    /// `application/x-ndjson` and friends: one JSON object per line.
    Ndjson(NdjsonDecoder),
}

impl StreamDecoder {
    /// Frames `data`, handing each event to `f`; counts an oversized event or line in `issues`.
    fn feed(&mut self, data: &[u8], issues: &mut ExchangeIssues, f: &mut impl FnMut(EventRef<'_>)) {
        match self {
            StreamDecoder::Sse(sse) => {
                if sse.feed_with(data, f).is_err() {
                    issues.oversized_events += 1;
                }
            }
            StreamDecoder::Ndjson(nd) => {
                if nd.feed_with(data, f).is_err() {
                    issues.oversized_lines += 1;
                }
            }
        }
    }

    fn finish(&mut self, f: &mut impl FnMut(EventRef<'_>)) {
        match self {
            StreamDecoder::Sse(sse) => sse.finish_with(f),
            StreamDecoder::Ndjson(nd) => nd.finish_with(f),
        }
    }
}

/// State of one LLM exchange.
pub struct LlmExchange {
    dialect: Box<dyn ProviderDialect>,
    limits: ExchangeLimits,
    method: String,
    path: String,
    host: Option<String>,
    trace_id: Option<String>,
    parent_span_id: Option<String>,
    /// The request's API-key fingerprint (from the masker), written as `api_key_id`.
    api_key_id: Option<u64>,
    /// The keyed id of the request's `Mcp-Session-Id` header (from the masker).
    mcp_session: Option<u64>,
    start_ts: u64,
    last_ts: u64,
    req_body: Vec<u8>,
    req_body_complete: bool,
    req_parsed: bool,
    status: Option<u16>,
    header_request_id: Option<String>,
    /// Boxed: it is moved out and back for every piece of the body (see `on_plain_body`).
    sse: Option<Box<StreamDecoder>>,
    /// A streaming request answered with `application/json`: maybe a streamed JSON array.
    json_array: Option<JsonArraySplitter>,
    retry_after: Option<String>,
    /// Recognised by body shape only: confirmed or rejected when the request body is complete.
    candidate: bool,
    rejected: bool,
    decoder: Option<BodyDecoder>,
    /// The body's encoding could not be decoded: its bytes are ignored.
    body_undecodable: bool,
    resp_body: Vec<u8>,
    resp_done: bool,
    obs: Observed,
    first_output_ts: Option<u64>,
    last_output_ts: Option<u64>,
    first_reasoning_ts: Option<u64>,
    first_answer_ts: Option<u64>,
    gaps: Gaps,
    chunks: u64,
    forced_error: Option<&'static str>,
    /// Time of the request's last byte, once it ended.
    req_end_ts: Option<u64>,
    /// Timings the server reported in its response head, seconds.
    header_timings: ServerTimings,
    /// Its place in a gateway join (see `super::gateway`).
    gateway: Option<super::gateway::Link>,
    /// Problems seen, for self-metrics.
    pub issues: ExchangeIssues,
    /// Conversation ids and history hashes (see `llm::conversation`).
    conv: super::conversation::ConversationKeys,
    /// Opt-in content: the policy (None: content capture off) and the request's content, read
    /// from its one parse.
    content: Option<std::sync::Arc<crate::content::ContentPolicy>>,
    req_content: Option<crate::content::CallContent>,
}

impl LlmExchange {
    /// The first request byte's time (monotonic ns).
    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    /// Trace id of the request's `traceparent`, if it carried a valid one.
    pub fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref()
    }

    /// A response head has arrived: the call reached its server.
    pub fn responded(&self) -> bool {
        self.status.is_some()
    }

    /// Heap bytes this exchange holds (bodies kept for parsing, stream buffers, per-chunk gaps,
    /// text samples), for the tracker's memory budget.
    pub fn heap_bytes(&self) -> usize {
        let stream = match self.sse.as_deref() {
            Some(StreamDecoder::Sse(d)) => d.buffered_bytes(),
            Some(StreamDecoder::Ndjson(d)) => d.buffered_bytes(),
            None => 0,
        };
        self.req_body.capacity()
            + self.resp_body.capacity()
            + self.dialect.heap_bytes()
            + self.method.capacity()
            + self.path.capacity()
            + self.host.as_ref().map_or(0, String::capacity)
            + self.header_request_id.as_ref().map_or(0, String::capacity)
            + self.retry_after.as_ref().map_or(0, String::capacity)
            + self.gaps.heap_bytes()
            + stream
            + self
                .json_array
                .as_ref()
                .map_or(0, JsonArraySplitter::buffered_bytes)
            + self.obs.output_sample.capacity()
            + self.obs.prompt_sample.capacity()
            + self.obs.reasoning_sample.capacity()
            + self.obs.workflow_nodes.heap_bytes()
            + self.obs.tools.heap_bytes()
            + self.obs.content.as_ref().map_or(0, |c| c.heap_bytes())
            + self
                .req_content
                .as_ref()
                .map_or(0, crate::content::CallContent::heap_bytes)
            + self.conv.history.capacity() * std::mem::size_of::<(u32, u64)>()
    }

    /// Starts an exchange at its request head; `start_ts` is the first request byte's time.
    pub fn new(
        head: &RequestHead,
        dialect: Box<dyn ProviderDialect>,
        start_ts: u64,
        limits: ExchangeLimits,
    ) -> Self {
        let host = head.header("host").map(str::to_owned);
        let trace_id = head.header("traceparent").and_then(trace_id_of);
        let parent_span_id = trace_id
            .as_ref()
            .and(head.header("traceparent"))
            .and_then(|tp| tp.trim().split('-').nth(2))
            .map(str::to_ascii_lowercase);
        LlmExchange {
            parent_span_id,
            dialect,
            limits,
            method: head.method.clone(),
            path: crate::secrets::redact_query(&head.path),
            host,
            trace_id,
            api_key_id: None,
            mcp_session: None,
            start_ts,
            last_ts: start_ts,
            req_body: Vec::new(),
            req_body_complete: false,
            req_parsed: false,
            status: None,
            header_request_id: None,
            sse: None,
            json_array: None,
            retry_after: None,
            candidate: false,
            rejected: false,
            decoder: None,
            body_undecodable: false,
            resp_body: Vec::new(),
            resp_done: false,
            obs: Observed::default(),
            first_output_ts: None,
            last_output_ts: None,
            first_reasoning_ts: None,
            first_answer_ts: None,
            gaps: Gaps::Narrow(Vec::new()),
            chunks: 0,
            forced_error: None,
            req_end_ts: None,
            header_timings: ServerTimings::default(),
            gateway: None,
            issues: ExchangeIssues::default(),
            conv: super::conversation::ConversationKeys {
                header: super::conversation::header_id(head),
                ..Default::default()
            },
            content: None,
            req_content: None,
        }
    }

    /// Captures this call's content under `policy` (`--capture-content`): the request's
    /// messages and the answer are collected, bounded, and kept at the end if the policy
    /// selects the call.
    pub fn set_content(&mut self, policy: std::sync::Arc<crate::content::ContentPolicy>) {
        self.obs.content = Some(Box::new(crate::content::OutputContent::new(
            policy.max_bytes,
        )));
        self.content = Some(policy);
    }

    /// The request's API-key fingerprint (see `probes::scrub`).
    pub fn on_api_key_id(&mut self, id: u64) {
        self.api_key_id = Some(id);
    }

    /// The keyed id of the request's `Mcp-Session-Id` header (see `probes::scrub`).
    pub fn on_mcp_session(&mut self, id: u64) {
        self.mcp_session = Some(id);
    }

    /// Request body bytes.
    pub fn on_request_body(&mut self, data: &[u8], ts: u64) {
        self.last_ts = ts;
        keep_capped(
            &mut self.req_body,
            data,
            self.limits.max_request_body,
            &mut self.issues,
        );
    }

    /// `n` request body bytes were not captured.
    pub fn on_request_gap(&mut self) {
        // A byte that cannot occur in JSON keeps the scan from joining keys across the gap.
        keep_capped(
            &mut self.req_body,
            b"\0",
            self.limits.max_request_body,
            &mut self.issues,
        );
    }

    /// The request is complete.
    pub fn on_request_end(&mut self, ts: u64) {
        self.last_ts = ts;
        self.req_end_ts.get_or_insert(ts);
        self.req_body_complete = true;
        self.parse_request();
    }

    fn parse_request(&mut self) {
        if self.req_parsed {
            return;
        }
        self.req_parsed = true;
        let raw = std::mem::take(&mut self.req_body);
        let body = Body::new(&raw);
        if self.candidate && !super::parsed_body_looks_like_llm(&body) {
            // Not a chat request: an API known by its body shape (MCP), or no call at all.
            match super::detect_body(&body) {
                Some(d) => self.dialect = d,
                None => self.rejected = true,
            }
        }
        self.dialect.on_request_body(&body, &mut self.obs);
        if let Some(link) = self.gateway.as_mut() {
            link.on_request(body.json().and_then(super::gateway::messages_hash));
        }
        // A dialect whose prompt sits under keys of its own (Dify's `query`) samples it itself.
        if self.obs.prompt_sample.is_empty() {
            self.obs.prompt_sample = super::json::prompt_sample(&body);
        }
        if self.dialect.operation() != "embeddings"
            && let Some(v) = body.json()
        {
            super::conversation::read_request(v, &mut self.conv);
            super::json::read_request_tools(v, &mut self.obs);
        }
        if let Some(policy) = &self.content
            && !self.rejected
            && let Some(v) = body.json()
        {
            self.req_content = Some(crate::content::read_request(v, policy.max_bytes));
        }
    }

    /// Starts as a candidate recognised by nothing but a JSON POST: the request body decides.
    pub fn set_candidate(&mut self) {
        self.candidate = true;
    }

    /// A candidate whose request body turned out not to be an LLM call.
    pub fn is_rejected(&self) -> bool {
        self.rejected
    }

    /// Response head.
    pub fn on_response_head(&mut self, head: &ResponseHead, ts: u64) {
        self.last_ts = ts;
        // A server may answer before the request body is complete (e.g. 413): parse what we have.
        self.parse_request();
        self.status = Some(head.status);
        // A LiteLLM proxy names its call in `x-litellm-call-id` and passes its upstream's
        // `request-id` on: its own id comes first.
        self.header_request_id = head
            .header("x-litellm-call-id")
            .or_else(|| head.header("x-request-id"))
            .or_else(|| head.header("request-id"))
            .or_else(|| head.header("x-dashscope-request-id"))
            .map(str::to_owned);
        if let Some(link) = self.gateway.as_mut() {
            link.on_response_id(self.header_request_id.as_deref());
        }
        if let Some(enc) = head.header("content-encoding") {
            let cap = if head
                .header("content-type")
                .unwrap_or("")
                .contains("event-stream")
            {
                self.limits.max_decoded_stream
            } else {
                self.limits.max_response_body as u64
            };
            match BodyDecoder::for_encoding(enc, cap) {
                Ok(d) => self.decoder = d,
                Err(_) => self.body_undecodable(),
            }
        }
        self.retry_after = head.header("retry-after").map(str::to_owned);
        self.header_timings = ServerTimings::from_head(head);
        let ctype = head
            .header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        self.sse = match ctype.split(';').next().unwrap_or("").trim() {
            "text/event-stream" => Some(Box::new(StreamDecoder::Sse(SseDecoder::new()))),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/jsonlines"
            | "application/x-jsonlines" => {
                Some(Box::new(StreamDecoder::Ndjson(NdjsonDecoder::new())))
            }
            _ => None,
        };
        if self.sse.is_none()
            && ctype.starts_with("application/json")
            && self.obs.stream == Some(true)
            && head.status < 300
        {
            self.json_array = Some(JsonArraySplitter::default());
        }
    }

    fn body_undecodable(&mut self) {
        if !self.body_undecodable {
            self.body_undecodable = true;
            self.issues.undecodable_bodies += 1;
        }
    }

    /// Response body bytes (after de-chunking, before Content-Encoding decoding) received at `ts`.
    pub fn on_response_body(&mut self, data: &[u8], ts: u64) {
        self.last_ts = ts;
        if self.body_undecodable {
            return;
        }
        if let Some(dec) = self.decoder.as_mut() {
            let mut plain = Vec::new();
            let res = dec.decode(data, &mut plain);
            if !plain.is_empty() {
                self.on_plain_body(&plain, ts);
            }
            if let Err(e) = res {
                log::debug!("response body not decodable: {e:?}");
                self.body_undecodable();
            }
            return;
        }
        self.on_plain_body(data, ts);
    }

    fn on_plain_body(&mut self, data: &[u8], ts: u64) {
        // The framer lends each event from its buffers: it is out of `self` while the events
        // go to the dialect.
        if let Some(mut dec) = self.sse.take() {
            let mut issues = ExchangeIssues::default();
            dec.feed(data, &mut issues, &mut |ev| self.on_stream_event(ev, ts));
            self.issues.oversized_events += issues.oversized_events;
            self.issues.oversized_lines += issues.oversized_lines;
            self.sse = Some(dec);
        } else {
            keep_capped(
                &mut self.resp_body,
                data,
                self.limits.max_response_body,
                &mut self.issues,
            );
            if let Some(split) = self.json_array.as_mut() {
                let mut elements = Vec::new();
                split.feed(data, &mut elements);
                if split.take_oversized() {
                    self.issues.oversized_events += 1;
                }
                for ev in &elements {
                    self.on_stream_event(ev.into(), ts);
                }
            }
        }
    }

    /// The response turned out to be a streamed JSON array.
    fn is_json_array_stream(&self) -> bool {
        self.json_array
            .as_ref()
            .is_some_and(JsonArraySplitter::is_array)
    }

    fn on_stream_event(&mut self, ev: EventRef<'_>, ts: u64) {
        let before_err = self.obs.error.is_some();
        let ev = Event::new(ev);
        self.obs.event_ts = ts;
        let kind = self.dialect.on_stream_event(&ev, &mut self.obs);
        // Data that is not JSON (nor empty, nor `[DONE]`) counts once, unless the dialect made
        // sense of it (an error event, the end of the stream): the dialect's own parse tells.
        if kind == OutputKind::None
            && !self.obs.terminal
            && !before_err
            && self.obs.error.is_none()
            && ev.is_bad_json()
        {
            self.issues.bad_stream_events += 1;
        }
        match kind {
            OutputKind::None => {}
            OutputKind::Reasoning | OutputKind::Answer => {
                self.chunks += 1;
                if let Some(prev) = self.last_output_ts
                    && self.gaps.len() < self.limits.max_output_events
                {
                    self.gaps.push(ts.saturating_sub(prev));
                }
                if self.first_output_ts.is_none()
                    && let Some(link) = self.gateway.as_mut()
                {
                    link.on_answer(ts.saturating_sub(self.start_ts));
                }
                self.first_output_ts.get_or_insert(ts);
                self.last_output_ts = Some(ts);
                if kind == OutputKind::Reasoning {
                    self.first_reasoning_ts.get_or_insert(ts);
                } else {
                    self.first_answer_ts.get_or_insert(ts);
                }
            }
        }
    }

    /// The response ended normally.
    pub fn on_response_end(&mut self, ts: u64) {
        self.last_ts = ts;
        self.resp_done = true;
        if let Some(answer) = self.answer_ns()
            && let Some(link) = self.gateway.as_mut()
        {
            link.on_answer(answer);
        }
        if let Some(mut dec) = self.sse.take() {
            dec.finish(&mut |ev| self.on_stream_event(ev, ts));
            self.sse = Some(dec);
        } else if self.is_json_array_stream() {
            // Its elements went through on_stream_event already.
            self.resp_body = Vec::new();
        } else {
            let body = std::mem::take(&mut self.resp_body);
            if !body.is_empty() {
                self.dialect
                    .on_response_body(&Body::new(&body), &mut self.obs);
            }
        }
    }

    /// Joins the exchange to a gateway call (server role) or to the gateway calls of its process
    /// (client role): see `super::gateway`.
    pub fn set_gateway_link(&mut self, link: super::gateway::Link) {
        self.gateway = Some(link);
    }

    /// Time from the first request byte to the answer: the first output event of a stream, the
    /// end of a whole successful response; None before it.
    fn answer_ns(&self) -> Option<u64> {
        let at = match self.first_output_ts {
            Some(t) => Some(t),
            None if self.sse.is_none()
                && !self.is_json_array_stream()
                && self.resp_done
                && self.status.is_some_and(|s| s < 400) =>
            {
                Some(self.last_ts)
            }
            None => None,
        };
        at.map(|t| t.saturating_sub(self.start_ts))
    }

    /// Marks the call as ended by an llmprobe-side condition (e.g. `idle_timeout`).
    pub fn set_error(&mut self, error: &'static str) {
        self.forced_error = Some(error);
    }

    /// Time of the last byte seen in either direction.
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    /// True once the response has ended.
    pub fn is_complete(&self) -> bool {
        self.resp_done
    }

    /// Writes the record. `aborted`: the connection ended before the response did; `end_ts` is
    /// then the time of that end.
    /// The call as the live view shows it while it is in flight.
    pub fn in_flight_view(
        &self,
        ctx: &ExchangeContext,
        clock: &Clock,
    ) -> crate::live::InFlightCall {
        let (server_address, _) = server_of(self.host.as_deref(), ctx);
        let server_address =
            server_address.map(|h| super::cap_field(&h, super::MAX_FIELD_BYTES).into_owned());
        // The usage the server reported so far, else characters / 4, at least one per chunk.
        let estimate = (self.obs.output_chars / 4).max(self.chunks);
        crate::live::InFlightCall {
            pid: ctx.pid,
            comm: ctx.comm.clone(),
            container_id: ctx.container.clone(),
            role: ctx.role,
            provider: provider_for_host(server_address.as_deref(), self.dialect.provider()),
            api: self.dialect.api(),
            model: self
                .obs
                .request_model
                .as_deref()
                .map(|m| super::cap_field(m, super::MAX_FIELD_BYTES).into_owned()),
            server_address,
            stream: self.obs.stream,
            start_unix_ns: clock.unix_ns(self.start_ts),
            first_token_unix_ns: self.first_output_ts.map(|t| clock.unix_ns(t)),
            chunks: self.chunks,
            tokens: self.obs.usage.output_tokens.unwrap_or(estimate),
        }
    }

    pub fn finish(
        mut self,
        ctx: &ExchangeContext,
        clock: &Clock,
        aborted: bool,
        end_ts: Option<u64>,
    ) -> LlmCall {
        self.parse_request();
        // The response is over once its terminal event or an in-stream error arrived, even if the
        // client closed before the HTTP framing's last bytes (SDKs do both).
        let complete = self.resp_done || self.obs.terminal || self.obs.error.is_some();
        let end = if complete {
            self.last_ts
        } else {
            end_ts.unwrap_or(self.last_ts).max(self.last_ts)
        };
        let secs = |ns: u64| ns as f64 / 1e9;
        let answer_ns = self.answer_ns();
        // Once a response head is seen, its content type decides; before that, the request.
        let stream = if self.status.is_some() {
            self.sse.is_some() || self.is_json_array_stream()
        } else {
            self.obs.stream == Some(true)
        };
        let Usage {
            input_tokens,
            output_tokens,
            reasoning_tokens,
            cached_input_tokens,
        } = self.obs.usage.clone();
        // Estimates, only for what the API did not report: the tokenizer on the text seen (see
        // llm::tokens), else one token per output-bearing stream event, or characters / 4.
        let obs = &self.obs;
        let estimate_out = || {
            super::tokens::estimate(&obs.output_sample, obs.output_chars).or(if stream {
                Some(self.chunks)
            } else {
                (obs.output_chars > 0).then(|| obs.output_chars.div_ceil(4))
            })
        };
        let estimated_in = match input_tokens {
            Some(_) => None,
            None => super::tokens::estimate(&obs.prompt_sample, obs.prompt_chars)
                .or((obs.prompt_chars > 0).then(|| obs.prompt_chars.div_ceil(4))),
        };
        // A stream cut before its final usage (abort, truncation) may report less output than it
        // delivered (Anthropic's message_start says 1): then the delivered events count.
        let reported_out =
            output_tokens.filter(|o| !(stream && !self.obs.terminal && self.chunks > *o));
        let (output_tokens, token_source) = match reported_out {
            Some(o) => (Some(o), Some("usage")),
            None => match estimate_out() {
                Some(e) => (Some(e), Some("estimated")),
                None if input_tokens.is_some() => (None, Some("usage")),
                None => (None, estimated_in.map(|_| "estimated")),
            },
        };
        let input_tokens = input_tokens.or(estimated_in);
        // Reasoning folded into the output count (Anthropic's thinking, reasoning text with no
        // reported count): estimated from the reasoning text seen.
        let (reasoning_tokens, reasoning_token_source) = match reasoning_tokens {
            Some(r) => (Some(r), Some("usage")),
            None if self.obs.reasoning_chars > 0 => (
                super::tokens::estimate(&self.obs.reasoning_sample, self.obs.reasoning_chars)
                    .or(Some(self.obs.reasoning_chars.div_ceil(4))),
                Some("estimated"),
            ),
            None => (None, None),
        };
        // What the call says about its conversation, keyed hashes only. An explicit id is the
        // record's conversation already (replays have it too); the enrich stage's matcher adds
        // the turn, or finds the conversation from the history.
        let mut conversation = std::mem::take(&mut self.conv);
        conversation.resolve(
            self.obs.conversation.as_ref(),
            self.obs.end_user.as_deref(),
            self.obs.response_id.as_deref(),
        );
        let (conversation_id, conversation_source) = match conversation.explicit {
            Some((source, id)) => (Some(crate::ids::hex_id(id)), Some(source)),
            None => (None, None),
        };
        let (reported_cost, reported_cost_currency) = match self.obs.reported_cost.take() {
            Some((c, cur)) => (Some(c), Some(cur).filter(|c| !c.is_empty())),
            None => (None, None),
        };
        let ttft = self
            .first_output_ts
            .map(|t| secs(t.saturating_sub(self.start_ts)));
        let tpot = match (
            stream,
            self.first_output_ts,
            self.last_output_ts,
            output_tokens,
        ) {
            (true, Some(f), Some(l), Some(n)) if n >= 2 => {
                Some(secs(l.saturating_sub(f)) / (n - 1) as f64)
            }
            _ => None,
        };
        let reasoning_s = match (self.first_reasoning_ts, self.first_answer_ts) {
            (Some(r), Some(a)) => Some(secs(a.saturating_sub(r))),
            _ => None,
        };
        let mut gaps = std::mem::replace(&mut self.gaps, Gaps::Narrow(Vec::new())).into_wide();
        let detail = super::CallDetail {
            start_unix_ns: clock.unix_ns(self.start_ts),
            end_unix_ns: clock.unix_ns(end),
            first_chunk_unix_ns: self.first_output_ts.map(|t| clock.unix_ns(t)),
            gaps_s: if stream {
                gaps.iter().map(|g| secs(*g)).collect()
            } else {
                Vec::new()
            },
            parent_span_id: self.parent_span_id.take(),
            workflow_nodes: std::mem::take(&mut self.obs.workflow_nodes.nodes)
                .into_iter()
                .map(|(_, mut n)| {
                    n.start_ns = clock.unix_ns(n.start_ns as u64);
                    n.end_ns = n.end_ns.map(|e| clock.unix_ns(e as u64));
                    n
                })
                .collect(),
            workflow_nodes_dropped: self.obs.workflow_nodes.dropped,
            conversation,
            tool_call_ids: tool_id_hashes(&self.obs.tools.call_ids),
            tool_result_ids: tool_id_hashes(&self.obs.tools.result_ids),
            ..Default::default()
        };
        let (p50, p95, max) = gap_stats(&mut gaps);
        let error_type = match self.status {
            Some(s) if s >= 400 => Some(s.to_string()),
            _ if self.forced_error.is_some() => self.forced_error.map(str::to_owned),
            _ if self.obs.error.is_some() => Some("stream_error".to_owned()),
            Some(_)
                if stream
                    && self.resp_done
                    && !self.obs.terminal
                    && self.obs.finish_reason.is_none() =>
            {
                Some("stream_truncated".to_owned())
            }
            _ => None,
        };
        let (server_address, server_port) = server_of(self.host.as_deref(), ctx);
        let mut detail = detail;
        if let Some(policy) = self.content.take() {
            let output = self.obs.content.take();
            if policy.selects(
                &ctx.comm,
                self.obs.request_model.as_deref(),
                self.obs.response_model.as_deref(),
            ) {
                let req = self.req_content.take().unwrap_or_default();
                let out_cut = output.as_ref().is_some_and(|o| o.truncated());
                detail.content = Some(Box::new(crate::content::CallContent {
                    system: req.system,
                    input: req.input,
                    output: output.and_then(|o| o.into_messages(self.obs.finish_reason.as_deref())),
                    truncated: req.truncated || out_cut,
                    heap: req.heap,
                }));
            }
        }
        let mut call = LlmCall {
            start_time: clock.rfc3339(self.start_ts),
            end_time: clock.rfc3339(end),
            role: ctx.role,
            pid: ctx.pid,
            comm: ctx.comm.clone(),
            container_id: ctx.container.clone(),
            tls: ctx.tls,
            peer_addr: ctx.peer.map(|p| p.to_string()),
            provider: provider_for_host(server_address.as_deref(), self.dialect.provider()),
            server_address,
            server_port,
            http_method: self.method,
            http_path: self.path,
            http_status: self.status,
            api: self.dialect.api(),
            operation: self.dialect.operation(),
            request_model: self.obs.request_model,
            response_model: self.obs.response_model,
            stream: Some(stream),
            input_tokens,
            output_tokens,
            reasoning_tokens,
            cached_input_tokens,
            token_source,
            duration_s: secs(end.saturating_sub(self.start_ts)),
            ttft_s: if stream { ttft } else { None },
            tpot_s: tpot,
            reasoning_s,
            tbt_p50_s: p50.map(secs),
            tbt_p95_s: p95.map(secs),
            tbt_max_s: max.map(secs),
            chunks: stream.then_some(self.chunks),
            finish_reason: self.obs.finish_reason,
            error_type,
            retry_after: self.retry_after,
            aborted: aborted && !complete,
            request_id: self.header_request_id.or(self.obs.response_id),
            trace_id: self.trace_id,
            gpu_util_mean: None,
            gpu_mem_used_bytes: None,
            gpu_power_mean_w: None,
            conversation_id,
            conversation_source,
            turn: None,
            regeneration: None,
            cost: None,
            cost_currency: None,
            reported_cost,
            reported_cost_currency,
            reported_latency_s: self.obs.reported_latency_s,
            api_key_id: self.api_key_id.map(crate::ids::hex_id),
            reasoning_token_source,
            connect_s: ctx.fresh.map(|f| secs(f.connect_ns)),
            tls_handshake_s: ctx.fresh.and_then(|f| f.tls_handshake_ns).map(secs),
            request_upload_s: self
                .req_end_ts
                .map(|e| secs(e.saturating_sub(self.start_ts))),
            server_queue_s: self.obs.server.queue_s.or(self.header_timings.queue_s),
            server_prefill_s: self.obs.server.prefill_s.or(self.header_timings.prefill_s),
            server_processing_s: self
                .obs
                .server
                .processing_s
                .or(self.header_timings.processing_s),
            gateway_overhead_s: None,
            upstream_request_id: None,
            gateway_request_id: None,
            tool_definitions: self.obs.tools.definitions,
            tool_calls: (self.obs.tools.calls > 0).then_some(self.obs.tools.calls),
            tool_names: Some(std::mem::take(&mut self.obs.tools.names)).filter(|n| !n.is_empty()),
            mcp_method: None,
            mcp_session_id: None,
            jsonrpc_request_id: None,
            jsonrpc_error_code: None,
            span_id: None,
            follows_span_ids: None,
            system_instructions: None,
            input_messages: None,
            output_messages: None,
            detail,
        };
        if let Some(link) = self.gateway.take() {
            link.fill(&mut call, answer_ns);
        }
        // The dialect's own fields (MCP's JSON-RPC call), and the MCP session it ran in: the
        // masker's keyed id of its `Mcp-Session-Id` header.
        self.dialect.complete_record(&mut call);
        if call.mcp_method.is_some() {
            call.mcp_session_id = self.mcp_session.map(crate::ids::hex_id);
        }
        // Models, ids, paths... are the traffic's own words: bounded before anyone keeps them.
        call.cap_fields();
        call
    }
}

/// Keyed hashes of tool-call ids (the ids are the API's; only their hashes leave the exchange).
fn tool_id_hashes(ids: &[String]) -> Vec<u64> {
    ids.iter()
        .map(|id| crate::ids::key().id_u64("tool_call", id.as_bytes()))
        .collect()
}

/// Timings a server reports about one call, seconds. A dialect fills [`Observed::server`] from a
/// body (Ollama's durations); [`ServerTimings::from_head`] reads response headers. The body wins.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerTimings {
    /// Time queued (TGI `x-queue-time`) or spent loading the model (Ollama `load_duration`).
    pub queue_s: Option<f64>,
    /// Time spent reading the prompt (Ollama `prompt_eval_duration`).
    pub prefill_s: Option<f64>,
    /// The whole request (OpenAI `openai-processing-ms`, TGI `x-total-time`, Ollama
    /// `total_duration`).
    pub processing_s: Option<f64>,
}

impl ServerTimings {
    /// Reads the timing headers of a response head: OpenAI's `openai-processing-ms`, TGI's
    /// `x-queue-time` and `x-total-time` (milliseconds). A value that is not a finite,
    /// non-negative number under a day is ignored.
    pub fn from_head(head: &ResponseHead) -> Self {
        let ms = |name: &str| head.header(name).and_then(millis_to_s);
        ServerTimings {
            queue_s: ms("x-queue-time"),
            prefill_s: None,
            processing_s: ms("openai-processing-ms").or_else(|| ms("x-total-time")),
        }
    }
}

/// A duration in milliseconds, as a header carries it, in seconds; None unless it is a finite,
/// non-negative number below one day.
pub fn millis_to_s(v: &str) -> Option<f64> {
    let ms: f64 = v.trim().parse().ok()?;
    (ms.is_finite() && (0.0..86_400_000.0).contains(&ms)).then(|| ms / 1e3)
}

/// Appends up to `cap` bytes in all; the first overflow is counted once.
fn keep_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize, issues: &mut ExchangeIssues) {
    let room = cap.saturating_sub(buf.len());
    if data.len() > room && buf.len() < cap {
        issues.truncated_bodies += 1;
    }
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// The gaps between a call's output events (ns), kept for its TBT figures: four bytes each while
/// every gap fits in a `u32` (4.29 s), eight from the first that does not. A call streaming
/// for long holds one per event, so this halves the largest part of an open stream's state.
enum Gaps {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl Gaps {
    fn len(&self) -> usize {
        match self {
            Gaps::Narrow(v) => v.len(),
            Gaps::Wide(v) => v.len(),
        }
    }

    fn push(&mut self, gap: u64) {
        match self {
            Gaps::Narrow(v) => match u32::try_from(gap) {
                Ok(g) => v.push(g),
                Err(_) => {
                    let mut wide: Vec<u64> = v.iter().map(|&g| u64::from(g)).collect();
                    wide.push(gap);
                    *self = Gaps::Wide(wide);
                }
            },
            Gaps::Wide(v) => v.push(gap),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Gaps::Narrow(v) => v.capacity() * std::mem::size_of::<u32>(),
            Gaps::Wide(v) => v.capacity() * std::mem::size_of::<u64>(),
        }
    }

    /// The gaps, in order, as `u64`.
    fn into_wide(self) -> Vec<u64> {
        match self {
            Gaps::Narrow(v) => v.into_iter().map(u64::from).collect(),
            Gaps::Wide(v) => v,
        }
    }
}

/// (p50, p95, max) of the gaps, nearest-rank.
fn gap_stats(gaps: &mut [u64]) -> (Option<u64>, Option<u64>, Option<u64>) {
    if gaps.is_empty() {
        return (None, None, None);
    }
    gaps.sort_unstable();
    let rank = |p: f64| {
        let idx = ((p * gaps.len() as f64).ceil() as usize).clamp(1, gaps.len()) - 1;
        gaps[idx]
    };
    (Some(rank(0.50)), Some(rank(0.95)), gaps.last().copied())
}

/// Server address and port: from the Host header (client and server role), else the peer (client role).
fn server_of(host: Option<&str>, ctx: &ExchangeContext) -> (Option<String>, Option<u16>) {
    let default_port = if ctx.tls { 443 } else { 80 };
    if let Some(h) = host.map(str::trim).filter(|h| !h.is_empty()) {
        // [v6]:port, host:port, host
        if let Some(rest) = h.strip_prefix('[')
            && let Some((addr, tail)) = rest.split_once(']')
        {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default_port);
            return (Some(addr.to_owned()), Some(port));
        }
        return match h.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => (
                Some(name.to_owned()),
                port.parse().ok().or(Some(default_port)),
            ),
            _ => (Some(h.to_owned()), Some(default_port)),
        };
    }
    match (ctx.role, ctx.peer) {
        ("client", Some(p)) => (Some(p.ip().to_string()), Some(p.port())),
        _ => (None, None),
    }
}

/// The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), if well-formed.
pub fn trace_id_of(tp: &str) -> Option<String> {
    let mut parts = tp.trim().split('-');
    let (_ver, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(trace, 32) || !hex(span, 16) || trace.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut g: Vec<u64> = (1..=100).collect();
        assert_eq!(gap_stats(&mut g), (Some(50), Some(95), Some(100)));
        let mut one = vec![7];
        assert_eq!(gap_stats(&mut one), (Some(7), Some(7), Some(7)));
        assert_eq!(gap_stats(&mut []), (None, None, None));
    }

    #[test]
    fn server_timing_headers_in_milliseconds() {
        use crate::protocol::http1::ResponseHead;
        assert_eq!(millis_to_s("250"), Some(0.25));
        assert_eq!(millis_to_s(" 12.5 "), Some(0.0125));
        for bad in ["-1", "NaN", "inf", "1e12", "", "12ms"] {
            assert_eq!(millis_to_s(bad), None, "{bad}");
        }
        let head = RequestHead {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![],
        };
        let mut ex = LlmExchange::new(
            &head,
            crate::llm::openai::chat_dialect(),
            1_000,
            ExchangeLimits::default(),
        );
        ex.on_request_body(br#"{"model":"m","messages":[]}"#, 1_000);
        ex.on_request_end(50_001_000);
        let resp = ResponseHead {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("openai-processing-ms".into(), "120".into()),
                ("x-queue-time".into(), "7".into()),
            ],
        };
        ex.on_response_head(&resp, 60_000_000);
        ex.on_response_body(br#"{"id":"x","choices":[]}"#, 60_000_000);
        ex.on_response_end(70_000_000);
        let ctx = ExchangeContext {
            role: "client",
            pid: 1,
            comm: "c".into(),
            tls: false,
            peer: None,
            container: None,
            fresh: None,
        };
        let call = ex.finish(&ctx, &Clock { offset_ns: 0 }, false, None);
        assert_eq!(call.request_upload_s, Some(0.05));
        assert_eq!(call.server_processing_s, Some(0.12));
        assert_eq!(call.server_queue_s, Some(0.007));
        assert_eq!(call.server_prefill_s, None);
    }

    #[test]
    fn traceparent() {
        assert_eq!(
            trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
    }

    #[test]
    fn free_text_fields_of_records_are_capped() {
        use crate::llm::{CUT_MARKER, MAX_FIELD_BYTES};
        use crate::protocol::http1::ResponseHead;
        // Every free-text field the traffic controls, 100 KB long (the model with multi-byte
        // characters, so the cut must find a boundary).
        let long = |c: &str| c.repeat((100 << 10) / c.len());
        let head = RequestHead {
            method: "POST".into(),
            path: format!("/v1/chat/completions?{}", long("p")),
            headers: vec![
                ("host".into(), long("h")),
                (
                    "traceparent".into(),
                    format!("00-{}-00f067aa0ba902b7-01", long("a")),
                ),
            ],
        };
        let mut ex = LlmExchange::new(
            &head,
            crate::llm::openai::chat_dialect(),
            1_000,
            ExchangeLimits::default(),
        );
        let body = format!(r#"{{"model":"{}","messages":[]}}"#, long("é"));
        ex.on_request_body(body.as_bytes(), 1_000);
        ex.on_request_end(1_000);
        let resp = ResponseHead {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-request-id".into(), long("r")),
                ("retry-after".into(), long("9")),
            ],
        };
        ex.on_response_head(&resp, 2_000);
        let answer = format!(
            r#"{{"id":"x","model":"{}","choices":[{{"finish_reason":"{}","message":{{"content":"hi"}}}}]}}"#,
            long("m"),
            long("f")
        );
        ex.on_response_body(answer.as_bytes(), 2_000);
        ex.on_response_end(3_000);
        let ctx = ExchangeContext {
            role: "client",
            pid: 1,
            comm: long("c"),
            tls: false,
            peer: None,
            container: Some(long("0")),
            fresh: None,
        };
        let call = ex.finish(&ctx, &Clock { offset_ns: 0 }, false, None);
        let fields = [
            ("comm", Some(&call.comm)),
            ("http_path", Some(&call.http_path)),
            ("server_address", call.server_address.as_ref()),
            ("container_id", call.container_id.as_ref()),
            ("request_model", call.request_model.as_ref()),
            ("response_model", call.response_model.as_ref()),
            ("finish_reason", call.finish_reason.as_ref()),
            ("request_id", call.request_id.as_ref()),
            ("retry_after", call.retry_after.as_ref()),
        ];
        for (name, value) in fields {
            let v = value.unwrap_or_else(|| panic!("{name} missing"));
            assert!(v.len() <= MAX_FIELD_BYTES, "{name}: {} bytes", v.len());
            assert!(v.ends_with(CUT_MARKER), "{name} not marked as cut");
        }
        let model = call.request_model.as_deref().unwrap_or("");
        assert!(model.trim_end_matches(CUT_MARKER).chars().all(|c| c == 'é'));
        assert_eq!(call.provider, "openai");
        assert!(
            call.trace_id.is_none(),
            "a 100 KB trace id is not a trace id"
        );
    }

    #[test]
    fn server_from_host_or_peer() {
        let ctx = ExchangeContext {
            role: "client",
            pid: 1,
            comm: String::new(),
            tls: true,
            peer: Some("10.0.0.1:8443".parse().expect("addr")),
            container: None,
            fresh: None,
        };
        assert_eq!(
            server_of(Some("api.openai.com"), &ctx),
            (Some("api.openai.com".into()), Some(443))
        );
        assert_eq!(
            server_of(Some("127.0.0.1:8000"), &ctx),
            (Some("127.0.0.1".into()), Some(8000))
        );
        assert_eq!(
            server_of(Some("[::1]:9"), &ctx),
            (Some("::1".into()), Some(9))
        );
        assert_eq!(server_of(None, &ctx), (Some("10.0.0.1".into()), Some(8443)));
    }

    /// Runs a stream through an exchange in one piece and in every two pieces; returns the
    /// bad-JSON count (the same for every split) and the record.
    fn stream_issues(path: &str, ctype: &str, body: &str) -> (u64, LlmCall) {
        use crate::protocol::http1::ResponseHead;
        let head = RequestHead {
            method: "POST".into(),
            path: path.into(),
            headers: vec![],
        };
        let run = |pieces: &[&[u8]]| {
            let dialect = crate::llm::detect(&head).expect("an LLM path");
            let mut ex = LlmExchange::new(&head, dialect, 1_000, ExchangeLimits::default());
            ex.on_request_body(br#"{"model":"m","stream":true,"messages":[]}"#, 1_000);
            ex.on_request_end(1_000);
            let resp = ResponseHead {
                status: 200,
                headers: vec![("content-type".into(), ctype.into())],
            };
            ex.on_response_head(&resp, 2_000);
            for p in pieces {
                ex.on_response_body(p, 2_000);
            }
            ex.on_response_end(3_000);
            let bad = ex.issues.bad_stream_events;
            let ctx = ExchangeContext {
                role: "client",
                pid: 1,
                comm: "t".into(),
                tls: false,
                peer: None,
                container: None,
                fresh: None,
            };
            (bad, ex.finish(&ctx, &Clock { offset_ns: 0 }, false, None))
        };
        let whole = run(&[body.as_bytes()]);
        for i in 0..=body.len() {
            let (a, b) = body.as_bytes().split_at(i);
            assert_eq!(run(&[a, b]), whole, "split at {i}");
        }
        whole
    }

    /// A stream event whose data is not JSON counts once, unless it is empty, `[DONE]`, after
    /// the stream's end, or an error event the dialect read.
    #[test]
    fn bad_json_stream_events_count_once() {
        let (bad, call) = stream_issues(
            "/v1/chat/completions",
            "text/event-stream",
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {bad\n\n\
             data:\n\ndata: {\"choices\":[]}\n\ndata: [DONE]\n\ndata: {after\n\n",
        );
        assert_eq!(bad, 1);
        assert_eq!(call.chunks, Some(1));
        let (bad, call) = stream_issues(
            "/v1/messages",
            "text/event-stream",
            "event: ping\ndata: {\"type\":\"ping\"}\n\nevent: error\ndata: oops\n\n",
        );
        assert_eq!(bad, 0);
        assert_eq!(call.error_type.as_deref(), Some("stream_error"));
        let (bad, call) = stream_issues(
            "/api/chat",
            "application/x-ndjson",
            "{\"message\":{\"content\":\"a\"}}\nnot json\n\n{\"done\":true,\"eval_count\":3}\n",
        );
        assert_eq!(bad, 1);
        assert_eq!((call.chunks, call.output_tokens), (Some(1), Some(3)));
    }

    /// Thinking text folded into the output count: the reasoning tokens are estimated from it;
    /// a reported count is marked as such.
    #[test]
    fn reasoning_tokens_estimated_from_thinking_text() {
        let thinking = "Let me think about the sky. Rayleigh scattering favours short waves.";
        let body = format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{{\"input_tokens\":9,\"output_tokens\":1}}}}}}\n\n\
             event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"thinking_delta\",\"thinking\":\"{thinking}\"}}}}\n\n\
             event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{{\"type\":\"text_delta\",\"text\":\"Blue.\"}}}}\n\n\
             event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":40}}}}\n\n\
             event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        );
        let (_, call) = stream_issues("/v1/messages", "text/event-stream", &body);
        let expected = crate::llm::tokens::estimate(thinking, thinking.chars().count() as u64)
            .unwrap_or(thinking.chars().count().div_ceil(4) as u64);
        assert_eq!(call.reasoning_tokens, Some(expected));
        assert_eq!(call.reasoning_token_source, Some("estimated"));
        assert_eq!(call.output_tokens, Some(40));
        // Reported: kept, marked `usage`.
        let (_, call) = stream_issues(
            "/v1/chat/completions",
            "text/event-stream",
            "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"}}]}\n\n\
             data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9,\"completion_tokens_details\":{\"reasoning_tokens\":7}}}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(call.reasoning_tokens, Some(7));
        assert_eq!(call.reasoning_token_source, Some("usage"));
        // No reasoning at all: null.
        let (_, call) = stream_issues(
            "/v1/chat/completions",
            "text/event-stream",
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(
            (call.reasoning_tokens, call.reasoning_token_source),
            (None, None)
        );
    }

    /// A Dify chat stream through the exchange, in every split: TTFT from the message events,
    /// Dify's usage, its reported price and latency beside the measured duration, and workflow
    /// nodes with Unix times.
    #[test]
    fn dify_stream_through_the_exchange() {
        let body = "data: {\"event\":\"message\",\"message_id\":\"m\",\"conversation_id\":\"c\",\"answer\":\"Hi\"}\n\n\
                    event: ping\n\n\
                    data: {\"event\":\"node_started\",\"data\":{\"id\":\"e1\",\"node_type\":\"llm\"}}\n\n\
                    data: {\"event\":\"node_finished\",\"data\":{\"id\":\"e1\",\"node_type\":\"llm\",\"status\":\"succeeded\",\"elapsed_time\":0.1}}\n\n\
                    data: {\"event\":\"message_end\",\"conversation_id\":\"c\",\"metadata\":{\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_price\":\"0.0003\",\"currency\":\"USD\",\"latency\":0.42}}}\n\n";
        let (bad, call) = stream_issues("/v1/chat-messages", "text/event-stream", body);
        assert_eq!(bad, 0);
        assert_eq!(
            (call.provider.as_str(), call.api, call.operation),
            ("dify", "dify.chat_messages", "invoke_agent")
        );
        assert_eq!((call.input_tokens, call.output_tokens), (Some(4), Some(2)));
        assert_eq!(call.token_source, Some("usage"));
        assert_eq!(call.chunks, Some(1));
        assert!(call.ttft_s.is_some());
        assert_eq!(call.reported_cost, Some(0.0003));
        assert_eq!(call.reported_cost_currency.as_deref(), Some("USD"));
        assert_eq!(call.reported_latency_s, Some(0.42));
        assert_eq!(call.error_type, None);
        assert_eq!(call.conversation_source, Some("dify.conversation_id"));
        assert_eq!(
            call.conversation_id,
            Some(crate::ids::key().id("conversation", b"c"))
        );
        assert_eq!(call.detail.workflow_nodes.len(), 1);
        let n = &call.detail.workflow_nodes[0];
        assert_eq!((n.start_ns, n.end_ns), (2_000, Some(2_000)));
        assert_eq!(n.status.as_deref(), Some("succeeded"));
    }

    #[test]
    fn gaps_widen_past_four_seconds_and_keep_their_order() {
        let mut g = Gaps::Narrow(Vec::new());
        for x in [5u64, u64::from(u32::MAX), 7] {
            g.push(x);
        }
        assert!(matches!(g, Gaps::Narrow(_)));
        assert!(g.heap_bytes() >= 3 * 4);
        g.push(u64::from(u32::MAX) + 1);
        g.push(9);
        assert!(matches!(g, Gaps::Wide(_)));
        assert_eq!(g.len(), 5);
        assert_eq!(
            g.into_wide(),
            vec![5, u64::from(u32::MAX), 7, u64::from(u32::MAX) + 1, 9]
        );
    }

    /// A turn of an agent loop: the request declares tools and carries the results of two
    /// earlier calls, the answer calls a tool again. The record counts both, and only keyed
    /// hashes of the ids leave: the results' hashes are those of the calls that made them.
    #[test]
    fn tool_calls_and_results_reach_the_record() {
        use crate::protocol::http1::ResponseHead;
        let head = RequestHead {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![],
        };
        let exchange = |req: &[u8], resp: &[u8]| {
            let mut ex = LlmExchange::new(
                &head,
                crate::llm::openai::chat_dialect(),
                1_000,
                ExchangeLimits::default(),
            );
            ex.on_request_body(req, 1_000);
            ex.on_request_end(2_000);
            let rh = ResponseHead {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
            };
            ex.on_response_head(&rh, 3_000);
            ex.on_response_body(resp, 4_000);
            ex.on_response_end(5_000);
            let ctx = ExchangeContext {
                role: "client",
                pid: 1,
                comm: "c".into(),
                tls: false,
                peer: None,
                container: None,
                fresh: None,
            };
            ex.finish(&ctx, &Clock { offset_ns: 0 }, false, None)
        };
        let tools = r#""tools":[{"type":"function","function":{"name":"get_weather"}},{"type":"function","function":{"name":"get_time"}}]"#;
        let first = exchange(
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],{tools}}}"#)
                .as_bytes(),
            br#"{"choices":[{"index":0,"message":{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{}"}},{"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
        );
        assert_eq!(first.tool_definitions, Some(2));
        assert_eq!(first.tool_calls, Some(2));
        assert_eq!(
            first.tool_names.as_deref(),
            Some(&["get_weather".to_owned(), "get_time".to_owned()][..])
        );
        assert_eq!(first.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(first.detail.tool_call_ids.len(), 2);
        assert!(first.detail.tool_result_ids.is_empty());
        let second = exchange(
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}},{{"role":"assistant","tool_calls":[{{"id":"call_1"}},{{"id":"call_2"}}]}},{{"role":"tool","tool_call_id":"call_1","content":"18C"}},{{"role":"tool","tool_call_id":"call_2","content":"12:00"}}],{tools}}}"#)
                .as_bytes(),
            br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Sunny."},"finish_reason":"stop"}]}"#,
        );
        assert_eq!(second.tool_definitions, Some(2));
        assert_eq!(
            (second.tool_calls, second.tool_names.as_ref()),
            (None, None)
        );
        assert_eq!(second.detail.tool_result_ids, first.detail.tool_call_ids);
        assert!(second.detail.tool_call_ids.is_empty());
    }
}
