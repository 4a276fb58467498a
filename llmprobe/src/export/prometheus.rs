//! LLM call metrics for `/metrics`: the OpenTelemetry GenAI metrics (semantic conventions v1.41,
//! in their Prometheus form) and llmprobe's own token and latency metrics, fed one finished
//! [`LlmCall`] at a time by [`GenAiMetrics::observe`].
//!
//! Client-role calls (the process sent the request) feed `gen_ai_client_*`, server-role calls
//! (the process answered it) feed `gen_ai_server_*`; the `llmprobe_*` call metrics take both,
//! with a `role` label. Bucket boundaries are the conventions' own.
//!
//! Money: `llmprobe_cost_total` adds each record's `cost` (the price table, client-role calls
//! only) and `llmprobe_reported_cost_total` its `reported_cost` (what the response said it cost,
//! e.g. Dify's `total_price`), by `currency`, provider, request and response model, process,
//! container, role and `api_key_id` (the masker's keyed fingerprint of the request's credential;
//! also a label of `llmprobe_tokens_total`). They are call families like the others: under the
//! one series cap, least recently used evicted.
//!
//! Label values come from traffic (models, servers, ports, processes, containers, error types),
//! which any local process controls, so the series are bounded as a whole: at most
//! [`CardinalityLimits::max_series`] series over all the call families together. A call that
//! needs a new series past the limit evicts the least recently used one (removed from its
//! family, counted in `llmprobe_series_evicted_total{family}`). Series in use stay: a flood of
//! new label values (10k model names) only pushes out series that no call touched meanwhile,
//! and a series that was pushed out comes back at its next call (its counters restart, which
//! Prometheus reads as a reset). Values are cut to [`MAX_LABEL_VALUE_BYTES`] by
//! [`crate::llm::cap_field`]. A label with no value (no model seen, no error, no container...)
//! is left out of the series.
//!
//! (Earlier versions folded values past a per-label limit into `_OTHER`, first come first
//! served: a burst of junk values then took every slot for good and later well-behaved values
//! were folded forever, and the product of the labels' limits still multiplied. The total LRU
//! bound replaces it.)
//!
//! As a [`CallSink`], `Arc<GenAiMetrics>` observes every call of each batch. The labels of a
//! server's GPU efficiency series come from [`gpu_server_labels`], a function of the call, for
//! the GPU enrichment that runs before the sinks. Encoding the registry for `/metrics` is
//! [`super::metrics_http::exposition`]'s concern.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::CallSink;
use crate::llm::{LlmCall, cap_field};

/// `gen_ai.client.token.usage` boundaries (tokens).
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// `gen_ai.client.operation.duration` boundaries (seconds), also used by time to first chunk,
/// time per output chunk and `gen_ai.server.request.duration`.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// `gen_ai.server.time_to_first_token` boundaries (seconds).
const SERVER_TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// `gen_ai.server.time_per_output_token` boundaries (seconds).
const SERVER_TPOT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// llmprobe's per-token times (seconds): the TPOT boundaries, extended down to 1 ms (fast models
/// stream a token every few milliseconds) and up to 10 s (stalls).
const TOKEN_TIME_BUCKETS: [f64; 19] = [
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 10.0,
];
/// Reasoning phases (seconds): the duration boundaries, extended for long thinking.
const REASONING_BUCKETS: [f64; 16] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84,
    327.68,
];

/// `mcp.client.operation.duration` and `mcp.server.operation.duration` boundaries (seconds).
const MCP_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Label values longer than this (in bytes, before escaping) are cut.
pub const MAX_LABEL_VALUE_BYTES: usize = 128;

/// A label set: (name, value) pairs in a fixed order per family; absent values are left out.
type Labels = Vec<(String, String)>;
/// A histogram family whose buckets come from its constructor.
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}
fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}
fn server_ttft_histogram() -> Histogram {
    Histogram::new(SERVER_TTFT_BUCKETS)
}
fn server_tpot_histogram() -> Histogram {
    Histogram::new(SERVER_TPOT_BUCKETS)
}
fn token_time_histogram() -> Histogram {
    Histogram::new(TOKEN_TIME_BUCKETS)
}
fn reasoning_histogram() -> Histogram {
    Histogram::new(REASONING_BUCKETS)
}

fn mcp_duration_histogram() -> Histogram {
    Histogram::new(MCP_DURATION_BUCKETS)
}

fn histogram_family(constructor: fn() -> Histogram) -> HistogramFamily {
    Family::new_with_constructor(constructor)
}

/// How many series the call families may hold together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardinalityLimits {
    /// Series kept over all call families; past it the least recently used is evicted.
    pub max_series: usize,
}

impl Default for CardinalityLimits {
    fn default() -> Self {
        CardinalityLimits { max_series: 10_000 }
    }
}

/// The call families, for the series bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fam {
    ClientDuration,
    ClientTokenUsage,
    ClientTtfc,
    ClientTpoc,
    ServerDuration,
    ServerTtft,
    ServerTpot,
    Tokens,
    Aborted,
    Tpot,
    TimeBetweenTokens,
    Reasoning,
    Cost,
    ReportedCost,
    TtftPart,
    McpClientDuration,
    McpServerDuration,
}

impl Fam {
    const ALL: usize = 17;

    /// The family's name on `/metrics` (without suffixes).
    fn name(self) -> &'static str {
        match self {
            Fam::ClientDuration => "gen_ai_client_operation_duration",
            Fam::ClientTokenUsage => "gen_ai_client_token_usage",
            Fam::ClientTtfc => "gen_ai_client_operation_time_to_first_chunk",
            Fam::ClientTpoc => "gen_ai_client_operation_time_per_output_chunk",
            Fam::ServerDuration => "gen_ai_server_request_duration",
            Fam::ServerTtft => "gen_ai_server_time_to_first_token",
            Fam::ServerTpot => "gen_ai_server_time_per_output_token",
            Fam::Tokens => "llmprobe_tokens",
            Fam::Aborted => "llmprobe_requests_aborted",
            Fam::Tpot => "llmprobe_time_per_output_token",
            Fam::TimeBetweenTokens => "llmprobe_time_between_tokens",
            Fam::Reasoning => "llmprobe_reasoning_duration",
            Fam::Cost => "llmprobe_cost",
            Fam::ReportedCost => "llmprobe_reported_cost",
            Fam::TtftPart => "llmprobe_ttft_part",
            Fam::McpClientDuration => "mcp_client_operation_duration",
            Fam::McpServerDuration => "mcp_server_operation_duration",
        }
    }
}

/// Recency of every live series, for evicting the least recently used past the limit. Each
/// label set is held once here (shared by both maps) and once by its family.
#[derive(Debug)]
struct SeriesLru {
    max: usize,
    clock: u64,
    last_use: [HashMap<Arc<Labels>, u64>; Fam::ALL],
    by_age: BTreeMap<u64, (Fam, Arc<Labels>)>,
}

impl SeriesLru {
    fn new(max: usize) -> Self {
        SeriesLru {
            max: max.max(1),
            clock: 0,
            last_use: Default::default(),
            by_age: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.by_age.len()
    }

    /// Marks the series `labels` of `fam` used now. Returns the series to remove when this one
    /// is new and the limit is reached (the least recently used one).
    fn touch(&mut self, fam: Fam, labels: &Labels) -> Option<(Fam, Arc<Labels>)> {
        self.clock += 1;
        let now = self.clock;
        let uses = &mut self.last_use[fam as usize];
        if let Some(t) = uses.get_mut(labels) {
            if let Some(entry) = self.by_age.remove(t) {
                self.by_age.insert(now, entry);
            }
            *t = now;
            return None;
        }
        let key = Arc::new(labels.clone());
        uses.insert(key.clone(), now);
        self.by_age.insert(now, (fam, key));
        if self.by_age.len() <= self.max {
            return None;
        }
        let (_, (old_fam, old)) = self.by_age.pop_first()?;
        self.last_use[old_fam as usize].remove(&old);
        Some((old_fam, old))
    }
}

/// A label value as exported: cut to [`MAX_LABEL_VALUE_BYTES`] (by [`cap_field`]), escaped for
/// the exposition formats (prometheus-client writes label values as given). None for an empty
/// value.
fn label_value(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    let raw = cap_field(raw, MAX_LABEL_VALUE_BYTES);
    let mut out = String::with_capacity(raw.len() + 2);
    for c in raw.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push('_'),
            c => out.push(c),
        }
    }
    Some(out)
}

/// One call's label values, resolved (escaped, bounded) once and shared by every family.
#[derive(Debug)]
struct CallLabels {
    role: String,
    operation: Option<String>,
    provider: Option<String>,
    request_model: Option<String>,
    response_model: Option<String>,
    server_address: Option<String>,
    server_port: Option<String>,
    error_type: Option<String>,
    process: Option<String>,
    container: Option<String>,
    api_key_id: Option<String>,
}

fn push(labels: &mut Labels, name: &str, value: &Option<String>) {
    if let Some(v) = value {
        labels.push((name.to_owned(), v.clone()));
    }
}

impl CallLabels {
    /// The GenAI families' labels.
    fn gen_ai(&self) -> Labels {
        let mut l = Vec::with_capacity(10);
        push(&mut l, "gen_ai_operation_name", &self.operation);
        push(&mut l, "gen_ai_provider_name", &self.provider);
        push(&mut l, "gen_ai_request_model", &self.request_model);
        push(&mut l, "gen_ai_response_model", &self.response_model);
        push(&mut l, "server_address", &self.server_address);
        push(&mut l, "server_port", &self.server_port);
        push(&mut l, "error_type", &self.error_type);
        push(&mut l, "process_executable_name", &self.process);
        push(&mut l, "container_id", &self.container);
        l
    }

    /// `gen_ai_client_token_usage` labels: the GenAI labels and the token type.
    fn token_usage(&self, token_type: &str) -> Labels {
        let mut l = self.gen_ai();
        l.push(("gen_ai_token_type".to_owned(), token_type.to_owned()));
        l
    }

    /// The `llmprobe_*` call families' labels.
    fn own(&self) -> Labels {
        let mut l = Vec::with_capacity(6);
        push(&mut l, "gen_ai_operation_name", &self.operation);
        push(&mut l, "gen_ai_provider_name", &self.provider);
        push(&mut l, "gen_ai_request_model", &self.request_model);
        push(&mut l, "process_executable_name", &self.process);
        l.push(("role".to_owned(), self.role.clone()));
        l
    }

    /// `llmprobe_tokens_total` labels.
    fn tokens(&self, token_type: &str) -> Labels {
        let mut l = self.own();
        push(&mut l, "api_key_id", &self.api_key_id);
        l.push(("type".to_owned(), token_type.to_owned()));
        l
    }

    /// `llmprobe_cost_total` and `llmprobe_reported_cost_total` labels: who spent it (process,
    /// container, API key) on what (provider, model), in `currency`.
    fn cost(&self, currency: &str) -> Option<Labels> {
        let currency = label_value(currency)?;
        let mut l = Vec::with_capacity(7);
        push(&mut l, "gen_ai_provider_name", &self.provider);
        push(&mut l, "gen_ai_request_model", &self.request_model);
        push(&mut l, "gen_ai_response_model", &self.response_model);
        push(&mut l, "process_executable_name", &self.process);
        push(&mut l, "container_id", &self.container);
        push(&mut l, "api_key_id", &self.api_key_id);
        l.push(("role".to_owned(), self.role.clone()));
        l.push(("currency".to_owned(), currency));
        Some(l)
    }
}

/// The labels of a server's GPU efficiency series: `pid`, `process_executable_name`,
/// `container_id`; and the model label value (request model, else response model; may be empty).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuServerLabels {
    /// Server labels.
    pub server: Labels,
    /// Model label value.
    pub model: String,
}

/// The labels of the GPU efficiency series of the server that answered `call`, bounded and
/// escaped like every call label: `pid`, `process_executable_name`, `container_id`, and the
/// model (request model, else response model; empty when neither is known). A function of the
/// call alone, so the GPU enrichment computes it before the sinks see the call.
pub fn gpu_server_labels(call: &LlmCall) -> GpuServerLabels {
    let value = |v: Option<&str>| v.and_then(label_value);
    let mut server = vec![("pid".to_owned(), call.pid.to_string())];
    push(
        &mut server,
        "process_executable_name",
        &label_value(&call.comm),
    );
    push(
        &mut server,
        "container_id",
        &value(call.container_id.as_deref()),
    );
    GpuServerLabels {
        server,
        model: value(call.request_model.as_deref())
            .or_else(|| value(call.response_model.as_deref()))
            .unwrap_or_default(),
    }
}

/// Observes a duration in seconds; values that are not finite or negative are not observed.
fn observe_seconds(h: &Histogram, v: f64) {
    if v.is_finite() && v >= 0.0 {
        h.observe(v);
    }
}

/// The LLM call metrics, registered in the agent's registry next to the self-metrics.
#[derive(Debug)]
pub struct GenAiMetrics {
    client_duration: HistogramFamily,
    client_token_usage: HistogramFamily,
    client_ttfc: HistogramFamily,
    client_tpoc: HistogramFamily,
    server_duration: HistogramFamily,
    server_ttft: HistogramFamily,
    server_tpot: HistogramFamily,
    tokens: Family<Labels, Counter>,
    in_flight: Gauge,
    aborted: Family<Labels, Counter>,
    tpot: HistogramFamily,
    time_between_tokens: HistogramFamily,
    reasoning: HistogramFamily,
    cost: Family<Labels, Counter<f64, AtomicU64>>,
    reported_cost: Family<Labels, Counter<f64, AtomicU64>>,
    ttft_part: HistogramFamily,
    mcp_client_duration: HistogramFamily,
    mcp_server_duration: HistogramFamily,
    evicted: Family<Labels, Counter>,
    series: Mutex<SeriesLru>,
}

impl GenAiMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry, limits: CardinalityLimits) -> Self {
        let m = GenAiMetrics {
            client_duration: histogram_family(duration_histogram),
            client_token_usage: histogram_family(token_histogram),
            client_ttfc: histogram_family(duration_histogram),
            client_tpoc: histogram_family(duration_histogram),
            server_duration: histogram_family(duration_histogram),
            server_ttft: histogram_family(server_ttft_histogram),
            server_tpot: histogram_family(server_tpot_histogram),
            tokens: Family::default(),
            in_flight: Gauge::default(),
            aborted: Family::default(),
            tpot: histogram_family(token_time_histogram),
            time_between_tokens: histogram_family(token_time_histogram),
            reasoning: histogram_family(reasoning_histogram),
            cost: Family::default(),
            reported_cost: Family::default(),
            ttft_part: histogram_family(duration_histogram),
            mcp_client_duration: histogram_family(mcp_duration_histogram),
            mcp_server_duration: histogram_family(mcp_duration_histogram),
            evicted: Family::default(),
            series: Mutex::new(SeriesLru::new(limits.max_series)),
        };
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "GenAI operation duration",
            Unit::Seconds,
            m.client_duration.clone(),
        );
        registry.register(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used",
            m.client_token_usage.clone(),
        );
        registry.register_with_unit(
            "gen_ai_client_operation_time_to_first_chunk",
            "Time to receive the first chunk of a streaming response",
            Unit::Seconds,
            m.client_ttfc.clone(),
        );
        registry.register_with_unit(
            "gen_ai_client_operation_time_per_output_chunk",
            "Time between consecutive chunks of a streaming response, for each chunk after the first",
            Unit::Seconds,
            m.client_tpoc.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_request_duration",
            "GenAI server request duration, to the last response byte",
            Unit::Seconds,
            m.server_duration.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time to generate the first token",
            Unit::Seconds,
            m.server_ttft.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per output token generated after the first token",
            Unit::Seconds,
            m.server_tpot.clone(),
        );
        registry.register(
            "llmprobe_tokens",
            "Tokens by type (output includes reasoning), from reported usage or estimated",
            m.tokens.clone(),
        );
        registry.register(
            "llmprobe_requests_in_flight",
            "LLM requests sent or received whose response has not finished",
            m.in_flight.clone(),
        );
        registry.register(
            "llmprobe_requests_aborted",
            "LLM calls the client closed before the response finished",
            m.aborted.clone(),
        );
        registry.register_with_unit(
            "llmprobe_time_per_output_token",
            "Per-request time per output token after the first (streams)",
            Unit::Seconds,
            m.tpot.clone(),
        );
        registry.register_with_unit(
            "llmprobe_time_between_tokens",
            "Each gap between consecutive output events of a stream",
            Unit::Seconds,
            m.time_between_tokens.clone(),
        );
        registry.register_with_unit(
            "llmprobe_reasoning_duration",
            "First reasoning event to first answer event",
            Unit::Seconds,
            m.reasoning.clone(),
        );
        registry.register(
            "llmprobe_cost",
            "What calls cost by the price table (--prices; the record's cost), in the currency label",
            m.cost.clone(),
        );
        registry.register(
            "llmprobe_reported_cost",
            "What calls cost by the price their response reported (Dify total_price), in the currency label",
            m.reported_cost.clone(),
        );
        registry.register_with_unit(
            "llmprobe_ttft_part",
            "Where the time to first token went, by part: connect, tls_handshake (fresh connections), request_upload, server_queue, server_prefill, server_processing (server-reported), gateway_overhead",
            Unit::Seconds,
            m.ttft_part.clone(),
        );
        registry.register_with_unit(
            "mcp_client_operation_duration",
            "Duration of an MCP request as the client saw it, to the last byte of its answer",
            Unit::Seconds,
            m.mcp_client_duration.clone(),
        );
        registry.register_with_unit(
            "mcp_server_operation_duration",
            "Duration of an MCP request as the server saw it, to the last byte of its answer",
            Unit::Seconds,
            m.mcp_server_duration.clone(),
        );
        registry.register(
            "llmprobe_series_evicted",
            "Series removed, least recently used first, to keep the call families under --max-series",
            m.evicted.clone(),
        );
        m
    }

    /// Sets the number of requests in flight.
    pub fn set_in_flight(&self, n: i64) {
        self.in_flight.set(n);
    }

    /// Records one finished call.
    pub fn observe(&self, call: &LlmCall) {
        if crate::llm::mcp::is_mcp(call) {
            self.observe_mcp(call);
            return;
        }
        let labels = self.resolve(call);
        let gen_ai = labels.gen_ai();
        if call.role == "server" {
            observe_seconds(
                &self
                    .server_duration
                    .get_or_create(self.admit(Fam::ServerDuration, &gen_ai)),
                call.duration_s,
            );
            if let Some(t) = call.ttft_s {
                observe_seconds(
                    &self
                        .server_ttft
                        .get_or_create(self.admit(Fam::ServerTtft, &gen_ai)),
                    t,
                );
            }
            if let Some(t) = call.tpot_s {
                observe_seconds(
                    &self
                        .server_tpot
                        .get_or_create(self.admit(Fam::ServerTpot, &gen_ai)),
                    t,
                );
            }
        } else {
            observe_seconds(
                &self
                    .client_duration
                    .get_or_create(self.admit(Fam::ClientDuration, &gen_ai)),
                call.duration_s,
            );
            if let Some(t) = call.ttft_s {
                observe_seconds(
                    &self
                        .client_ttfc
                        .get_or_create(self.admit(Fam::ClientTtfc, &gen_ai)),
                    t,
                );
            }
            if !call.detail.gaps_s.is_empty() {
                let h = self
                    .client_tpoc
                    .get_or_create(self.admit(Fam::ClientTpoc, &gen_ai));
                for g in &call.detail.gaps_s {
                    observe_seconds(&h, *g);
                }
            }
            for (token_type, n) in [("input", call.input_tokens), ("output", call.output_tokens)] {
                if let Some(n) = n {
                    self.client_token_usage
                        .get_or_create(
                            self.admit(Fam::ClientTokenUsage, &labels.token_usage(token_type)),
                        )
                        .observe(n as f64);
                }
            }
        }

        for (token_type, n) in [
            ("input", call.input_tokens),
            ("output", call.output_tokens),
            ("reasoning", call.reasoning_tokens),
            ("cached_input", call.cached_input_tokens),
        ] {
            if let Some(n) = n {
                self.tokens
                    .get_or_create(self.admit(Fam::Tokens, &labels.tokens(token_type)))
                    .inc_by(n);
            }
        }
        let own = labels.own();
        if call.aborted {
            self.aborted
                .get_or_create(self.admit(Fam::Aborted, &own))
                .inc();
        }
        if let Some(t) = call.tpot_s {
            observe_seconds(&self.tpot.get_or_create(self.admit(Fam::Tpot, &own)), t);
        }
        if !call.detail.gaps_s.is_empty() {
            let h = self
                .time_between_tokens
                .get_or_create(self.admit(Fam::TimeBetweenTokens, &own));
            for g in &call.detail.gaps_s {
                observe_seconds(&h, *g);
            }
        }
        if let Some(t) = call.reasoning_s {
            observe_seconds(
                &self
                    .reasoning
                    .get_or_create(self.admit(Fam::Reasoning, &own)),
                t,
            );
        }
        for (part, v) in [
            ("connect", call.connect_s),
            ("tls_handshake", call.tls_handshake_s),
            ("request_upload", call.request_upload_s),
            ("server_queue", call.server_queue_s),
            ("server_prefill", call.server_prefill_s),
            ("server_processing", call.server_processing_s),
            ("gateway_overhead", call.gateway_overhead_s),
        ] {
            if let Some(v) = v.filter(|v| v.is_finite() && *v >= 0.0) {
                let mut l = own.clone();
                l.push(("part".to_owned(), part.to_owned()));
                observe_seconds(
                    &self.ttft_part.get_or_create(self.admit(Fam::TtftPart, &l)),
                    v,
                );
            }
        }
        for (fam, family, amount, currency) in [
            (Fam::Cost, &self.cost, call.cost, &call.cost_currency),
            (
                Fam::ReportedCost,
                &self.reported_cost,
                call.reported_cost,
                &call.reported_cost_currency,
            ),
        ] {
            if let (Some(v), Some(l)) = (amount, currency.as_deref().and_then(|c| labels.cost(c)))
                && v.is_finite()
                && v >= 0.0
            {
                family.get_or_create(self.admit(fam, &l)).inc_by(v);
            }
        }
    }

    /// Records one MCP request (see `llm::mcp`): its duration in `mcp_client_operation_duration`
    /// or `mcp_server_operation_duration` by role (method, tool, error, JSON-RPC code, server,
    /// process); a client's tool call (`execute_tool`) in `gen_ai_client_operation_duration`
    /// too, as a GenAI operation. No token, chunk, abort or TTFT family: an MCP answer is not
    /// generated text, and a server's MCP request is not a model's.
    fn observe_mcp(&self, call: &LlmCall) {
        let labels = self.resolve(call);
        let value = |v: Option<&str>| v.and_then(label_value);
        let mut l = Vec::with_capacity(10);
        // The method and the error code are the traffic's own words: a standard method or
        // `other`, a standard JSON-RPC code, `server_error` (-32099..-32000) or `other`, so
        // no process can rotate them through the shared series cap.
        let method = call.mcp_method.as_deref().map(|m| {
            if m == "tools/call" || crate::llm::mcp::operation_of(m) != "mcp" {
                m
            } else {
                "other"
            }
        });
        push(&mut l, "mcp_method_name", &value(method));
        if call.operation == "execute_tool" {
            push(&mut l, "gen_ai_operation_name", &labels.operation);
            if let Some([tool]) = call.tool_names.as_deref() {
                push(&mut l, "gen_ai_tool_name", &label_value(tool));
            }
        }
        push(&mut l, "error_type", &labels.error_type);
        push(
            &mut l,
            "rpc_response_status_code",
            &call.jsonrpc_error_code.map(|c| match c {
                -32700 | -32600 | -32601 | -32602 | -32603 | -32002 | -32001 | 0 => c.to_string(),
                -32099..=-32000 => "server_error".to_owned(),
                _ => "other".to_owned(),
            }),
        );
        push(&mut l, "server_address", &labels.server_address);
        push(&mut l, "server_port", &labels.server_port);
        push(&mut l, "process_executable_name", &labels.process);
        push(&mut l, "container_id", &labels.container);
        let (fam, family) = if call.role == "server" {
            (Fam::McpServerDuration, &self.mcp_server_duration)
        } else {
            (Fam::McpClientDuration, &self.mcp_client_duration)
        };
        observe_seconds(&family.get_or_create(self.admit(fam, &l)), call.duration_s);
        if call.role != "server" && call.operation == "execute_tool" {
            observe_seconds(
                &self
                    .client_duration
                    .get_or_create(self.admit(Fam::ClientDuration, &labels.gen_ai())),
                call.duration_s,
            );
        }
    }

    /// Marks a series used before it is created or updated: evicts the least recently used
    /// series when a new one would pass the limit. Returns `labels`.
    fn admit<'a>(&self, fam: Fam, labels: &'a Labels) -> &'a Labels {
        // Called from one task; a poisoned lock still holds consistent maps.
        let evict = self
            .series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .touch(fam, labels);
        if let Some((old_fam, old)) = evict {
            self.remove(old_fam, &old);
            self.evicted
                .get_or_create(&vec![("family".to_owned(), old_fam.name().to_owned())])
                .inc();
        }
        labels
    }

    fn remove(&self, fam: Fam, labels: &Labels) {
        let histograms = match fam {
            Fam::ClientDuration => &self.client_duration,
            Fam::ClientTokenUsage => &self.client_token_usage,
            Fam::ClientTtfc => &self.client_ttfc,
            Fam::ClientTpoc => &self.client_tpoc,
            Fam::ServerDuration => &self.server_duration,
            Fam::ServerTtft => &self.server_ttft,
            Fam::ServerTpot => &self.server_tpot,
            Fam::Tpot => &self.tpot,
            Fam::TimeBetweenTokens => &self.time_between_tokens,
            Fam::Reasoning => &self.reasoning,
            Fam::TtftPart => &self.ttft_part,
            Fam::McpClientDuration => &self.mcp_client_duration,
            Fam::McpServerDuration => &self.mcp_server_duration,
            Fam::Tokens => {
                self.tokens.remove(labels);
                return;
            }
            Fam::Aborted => {
                self.aborted.remove(labels);
                return;
            }
            Fam::Cost => {
                self.cost.remove(labels);
                return;
            }
            Fam::ReportedCost => {
                self.reported_cost.remove(labels);
                return;
            }
        };
        histograms.remove(labels);
    }

    /// Series held now by the call families together.
    pub fn series_count(&self) -> usize {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Resolves a call's label values: cut and escaped.
    fn resolve(&self, call: &LlmCall) -> CallLabels {
        let error_type = match (&call.error_type, call.aborted) {
            (Some(e), _) => Some(e.as_str()),
            (None, true) => Some("aborted"),
            (None, false) => None,
        };
        let value = |v: Option<&str>| v.and_then(label_value);
        CallLabels {
            role: label_value(call.role).unwrap_or_else(|| "client".to_owned()),
            operation: label_value(call.operation),
            provider: label_value(&call.provider),
            request_model: value(call.request_model.as_deref()),
            response_model: value(call.response_model.as_deref()),
            server_address: value(call.server_address.as_deref()),
            server_port: call.server_port.map(|p| p.to_string()),
            error_type: value(error_type),
            process: label_value(&call.comm),
            container: value(call.container_id.as_deref()),
            api_key_id: value(call.api_key_id.as_deref()),
        }
    }
}

/// Turns per conversation boundaries.
const TURN_BUCKETS: [f64; 12] = [
    1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0, 128.0,
];

fn turn_histogram() -> Histogram {
    Histogram::new(TURN_BUCKETS)
}

/// The conversation metrics (see [`crate::llm::conversation`]), published by the enrich stage,
/// which owns the matcher. Two labels: `role` (`client` or `server`: a node that runs both
/// ends of a conversation sees it twice) and `gen_ai_provider_name`, whose values are
/// llmprobe's own provider names (a dialect's default or a known host's), a fixed set, so the
/// series are bounded without the call families' LRU.
#[derive(Debug)]
pub struct ConversationMetrics {
    turns: HistogramFamily,
    tokens: HistogramFamily,
    abandoned: Family<Labels, Counter>,
    regenerations: Family<Labels, Counter>,
    active: Gauge,
}

fn conversation_labels(role: &str, provider: &str) -> Labels {
    let mut l = vec![("role".to_owned(), role.to_owned())];
    if let Some(v) = label_value(provider) {
        l.push(("gen_ai_provider_name".to_owned(), v));
    }
    l
}

impl ConversationMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = ConversationMetrics {
            turns: histogram_family(turn_histogram),
            tokens: histogram_family(token_histogram),
            abandoned: Family::default(),
            regenerations: Family::default(),
            active: Gauge::default(),
        };
        registry.register(
            "llmprobe_conversation_turns",
            "Turns (calls, regenerations not counted) of each conversation that ended (idle for --conversation-idle)",
            m.turns.clone(),
        );
        registry.register(
            "llmprobe_conversation_tokens",
            "Input plus output tokens of each conversation that ended",
            m.tokens.clone(),
        );
        registry.register(
            "llmprobe_conversations_abandoned",
            "Conversations that ended after their last call aborted or failed",
            m.abandoned.clone(),
        );
        registry.register(
            "llmprobe_conversation_regenerations",
            "Calls that sent a conversation history already sent (a regenerated answer)",
            m.regenerations.clone(),
        );
        registry.register(
            "llmprobe_conversations_active",
            "Conversations followed (not yet idle for --conversation-idle)",
            m.active.clone(),
        );
        m
    }

    /// A call was a regeneration.
    pub fn regeneration(&self, role: &str, provider: &str) {
        self.regenerations
            .get_or_create(&conversation_labels(role, provider))
            .inc();
    }

    /// A conversation ended.
    pub fn ended(&self, e: &crate::llm::conversation::Ended) {
        let l = conversation_labels(e.role, &e.provider);
        self.turns.get_or_create(&l).observe(f64::from(e.turns));
        self.tokens.get_or_create(&l).observe(e.tokens as f64);
        if e.abandoned {
            self.abandoned.get_or_create(&l).inc();
        }
    }

    /// Conversations followed now.
    pub fn set_active(&self, n: usize) {
        self.active.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

impl CallSink for Arc<GenAiMetrics> {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn emit(&mut self, calls: &[LlmCall]) {
        for c in calls {
            self.observe(c);
        }
    }

    /// The metrics stay in the registry for `/metrics`; nothing to flush.
    fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::metrics_http::exposition::encode_text;
    use crate::llm::CallDetail;
    use crate::telemetry::SelfMetrics;
    use std::collections::HashSet;

    /// A finished client stream with usage and gaps, the base of the other calls.
    fn client_stream() -> LlmCall {
        LlmCall {
            start_time: "2026-11-27T20:00:00.000Z".to_owned(),
            end_time: "2026-11-27T20:00:02.000Z".to_owned(),
            role: "client",
            pid: 4242,
            comm: "python3".to_owned(),
            container_id: None,
            tls: true,
            peer_addr: Some("162.159.140.245:443".to_owned()),
            server_address: Some("api.openai.com".to_owned()),
            server_port: Some(443),
            http_method: "POST".to_owned(),
            http_path: "/v1/chat/completions".to_owned(),
            http_status: Some(200),
            provider: "openai".to_owned(),
            api: "openai.chat_completions",
            operation: "chat",
            request_model: Some("gpt-4o".to_owned()),
            response_model: Some("gpt-4o-2024-08-06".to_owned()),
            stream: Some(true),
            input_tokens: Some(100),
            output_tokens: Some(50),
            reasoning_tokens: None,
            cached_input_tokens: Some(64),
            token_source: Some("usage"),
            duration_s: 2.0,
            ttft_s: Some(0.25),
            tpot_s: Some(0.03125),
            reasoning_s: None,
            tbt_p50_s: Some(0.25),
            tbt_p95_s: Some(0.5),
            tbt_max_s: Some(0.5),
            chunks: Some(4),
            finish_reason: Some("stop".to_owned()),
            error_type: None,
            retry_after: None,
            aborted: false,
            request_id: Some("req_1".to_owned()),
            trace_id: None,
            gpu_util_mean: None,
            gpu_mem_used_bytes: None,
            gpu_power_mean_w: None,
            detail: CallDetail {
                start_unix_ns: 1_795_809_600_000_000_000,
                end_unix_ns: 1_795_809_602_000_000_000,
                first_chunk_unix_ns: Some(1_795_809_600_250_000_000),
                gaps_s: vec![0.125, 0.25, 0.5],
                parent_span_id: None,
                ..CallDetail::default()
            },
            ..Default::default()
        }
    }

    /// A vLLM server answering a stream.
    fn server_call() -> LlmCall {
        LlmCall {
            role: "server",
            comm: "vllm".to_owned(),
            server_address: Some("10.0.0.7".to_owned()),
            server_port: Some(8000),
            request_model: Some("llama-3.1-8b".to_owned()),
            response_model: Some("llama-3.1-8b".to_owned()),
            input_tokens: Some(10),
            output_tokens: Some(5),
            cached_input_tokens: None,
            duration_s: 1.5,
            ttft_s: Some(0.09),
            tpot_s: Some(0.0625),
            detail: CallDetail {
                gaps_s: vec![0.0625, 0.0625],
                ..CallDetail::default()
            },
            ..client_stream()
        }
    }

    /// A non-streamed request refused with 429.
    fn rate_limited() -> LlmCall {
        LlmCall {
            request_model: Some("gpt-4o-mini".to_owned()),
            response_model: None,
            stream: Some(false),
            http_status: Some(429),
            input_tokens: None,
            output_tokens: None,
            cached_input_tokens: None,
            token_source: None,
            duration_s: 0.0625,
            ttft_s: None,
            tpot_s: None,
            chunks: None,
            error_type: Some("429".to_owned()),
            retry_after: Some("2".to_owned()),
            detail: CallDetail::default(),
            ..client_stream()
        }
    }

    /// A stream the client closed early, from a container, tokens estimated.
    fn aborted_in_container() -> LlmCall {
        LlmCall {
            comm: "node".to_owned(),
            container_id: Some("0123456789ab".to_owned()),
            request_model: Some("claude-sonnet-4".to_owned()),
            response_model: None,
            provider: "anthropic".to_owned(),
            server_address: Some("api.anthropic.com".to_owned()),
            input_tokens: Some(20),
            output_tokens: Some(3),
            cached_input_tokens: None,
            token_source: Some("estimated"),
            duration_s: 1.0,
            ttft_s: Some(0.5),
            tpot_s: None,
            aborted: true,
            detail: CallDetail {
                gaps_s: vec![0.25],
                ..CallDetail::default()
            },
            ..client_stream()
        }
    }

    /// A reasoning model's stream.
    fn reasoning_call() -> LlmCall {
        LlmCall {
            provider: "deepseek".to_owned(),
            server_address: Some("api.deepseek.com".to_owned()),
            request_model: Some("deepseek-reasoner".to_owned()),
            response_model: Some("deepseek-reasoner".to_owned()),
            input_tokens: Some(12),
            output_tokens: Some(60),
            reasoning_tokens: Some(30),
            cached_input_tokens: None,
            duration_s: 4.0,
            ttft_s: Some(0.5),
            tpot_s: Some(0.0625),
            reasoning_s: Some(3.0),
            detail: CallDetail {
                gaps_s: vec![0.0625],
                ..CallDetail::default()
            },
            ..client_stream()
        }
    }

    fn encoded(calls: &[LlmCall], limits: CardinalityLimits) -> (Registry, String) {
        let mut registry = Registry::default();
        let m = GenAiMetrics::new(&mut registry, limits);
        for c in calls {
            m.observe(c);
        }
        m.set_in_flight(3);
        let text = encode_text(&registry);
        (registry, text)
    }

    fn all_calls() -> (Registry, String) {
        encoded(
            &[
                client_stream(),
                server_call(),
                rate_limited(),
                aborted_in_container(),
                reasoning_call(),
            ],
            CardinalityLimits::default(),
        )
    }

    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing line\n{line}\nin\n{text}"
        );
    }

    fn lacks(text: &str, needle: &str) {
        assert!(!text.contains(needle), "unexpected\n{needle}\nin\n{text}");
    }

    /// The `le` values of a histogram family's first series, in order.
    fn les(text: &str, family: &str) -> Vec<String> {
        let prefix = format!("{family}_bucket{{le=\"");
        let mut out = Vec::new();
        let mut first_series: Option<String> = None;
        for l in text.lines() {
            let Some(rest) = l.strip_prefix(&prefix) else {
                continue;
            };
            let (le, series) = rest.split_once('"').unwrap_or((rest, ""));
            let series = series.rsplit_once('}').map_or(series, |(s, _)| s);
            if first_series.get_or_insert_with(|| series.to_owned()) == series {
                out.push(le.to_owned());
            }
        }
        out
    }

    const STREAM: &str = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",\
        gen_ai_request_model=\"gpt-4o\",gen_ai_response_model=\"gpt-4o-2024-08-06\",\
        server_address=\"api.openai.com\",server_port=\"443\",process_executable_name=\"python3\"";
    const SERVER: &str = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",\
        gen_ai_request_model=\"llama-3.1-8b\",gen_ai_response_model=\"llama-3.1-8b\",\
        server_address=\"10.0.0.7\",server_port=\"8000\",process_executable_name=\"vllm\"";

    #[test]
    fn mcp_labels_are_words_from_fixed_lists() {
        let call = |method: &str, code: Option<i64>| LlmCall {
            role: "client",
            provider: "mcp".into(),
            api: "mcp.streamable_http",
            operation: crate::llm::mcp::operation_of(method),
            mcp_method: Some(method.into()),
            jsonrpc_error_code: code,
            duration_s: 0.01,
            ..Default::default()
        };
        let calls: Vec<LlmCall> = (0..50)
            .map(|i| call(&format!("vendor/m{i}"), Some(-31000 - i)))
            .chain([
                call("tools/list", Some(-32601)),
                call("resources/read", Some(-32050)),
            ])
            .collect();
        let (_, t) = encoded(&calls, CardinalityLimits::default());
        let series: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("mcp_client_operation_duration_seconds_count"))
            .collect();
        assert_eq!(series.len(), 3, "{series:?}");
        assert!(t.contains("mcp_method_name=\"other\""), "{t}");
        assert!(t.contains("rpc_response_status_code=\"other\""), "{t}");
        assert!(t.contains("rpc_response_status_code=\"-32601\""), "{t}");
        assert!(
            t.contains("rpc_response_status_code=\"server_error\""),
            "{t}"
        );
        assert!(!t.contains("vendor/"), "{t}");
    }

    #[test]
    fn ttft_parts_are_one_family_by_part() {
        let mut c = client_stream();
        c.connect_s = Some(0.003);
        c.tls_handshake_s = Some(0.042);
        c.request_upload_s = Some(0.0);
        c.server_processing_s = Some(0.12);
        c.gateway_overhead_s = Some(-0.5);
        let (_, t) = encoded(&[c, client_stream()], CardinalityLimits::default());
        has(&t, "# TYPE llmprobe_ttft_part_seconds histogram");
        let count = |part: &str| {
            t.lines()
                .find(|l| {
                    l.starts_with("llmprobe_ttft_part_seconds_count{")
                        && l.contains(&format!("part=\"{part}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap_or("").to_owned())
        };
        for part in [
            "connect",
            "tls_handshake",
            "request_upload",
            "server_processing",
        ] {
            assert_eq!(count(part).as_deref(), Some("1"), "{part}\n{t}");
        }
        // Parts the calls did not have, and a negative figure, are not observed.
        for part in ["server_queue", "server_prefill", "gateway_overhead"] {
            assert_eq!(count(part), None, "{part}");
        }
    }

    #[test]
    fn client_stream_families() {
        let (_, t) = all_calls();
        // Duration: 2.0 s lands in le="2.56".
        has(
            &t,
            "# HELP gen_ai_client_operation_duration_seconds GenAI operation duration.",
        );
        has(
            &t,
            "# TYPE gen_ai_client_operation_duration_seconds histogram",
        );
        has(
            &t,
            &format!("gen_ai_client_operation_duration_seconds_sum{{{STREAM}}} 2.0"),
        );
        has(
            &t,
            &format!("gen_ai_client_operation_duration_seconds_count{{{STREAM}}} 1"),
        );
        has(
            &t,
            &format!("gen_ai_client_operation_duration_seconds_bucket{{le=\"1.28\",{STREAM}}} 0"),
        );
        has(
            &t,
            &format!("gen_ai_client_operation_duration_seconds_bucket{{le=\"2.56\",{STREAM}}} 1"),
        );
        has(
            &t,
            &format!("gen_ai_client_operation_duration_seconds_bucket{{le=\"+Inf\",{STREAM}}} 1"),
        );
        // Time to first chunk: 0.25 s lands in le="0.32".
        let ttfc = "gen_ai_client_operation_time_to_first_chunk_seconds";
        has(&t, &format!("# TYPE {ttfc} histogram"));
        has(&t, &format!("{ttfc}_bucket{{le=\"0.16\",{STREAM}}} 0"));
        has(&t, &format!("{ttfc}_bucket{{le=\"0.32\",{STREAM}}} 1"));
        has(&t, &format!("{ttfc}_sum{{{STREAM}}} 0.25"));
        // One observation per chunk after the first: gaps 0.125, 0.25, 0.5.
        let tpoc = "gen_ai_client_operation_time_per_output_chunk_seconds";
        has(&t, &format!("{tpoc}_count{{{STREAM}}} 3"));
        has(&t, &format!("{tpoc}_sum{{{STREAM}}} 0.875"));
        has(&t, &format!("{tpoc}_bucket{{le=\"0.08\",{STREAM}}} 0"));
        has(&t, &format!("{tpoc}_bucket{{le=\"0.16\",{STREAM}}} 1"));
        has(&t, &format!("{tpoc}_bucket{{le=\"0.32\",{STREAM}}} 2"));
        has(&t, &format!("{tpoc}_bucket{{le=\"0.64\",{STREAM}}} 3"));
        // Token usage, by token type, with the token buckets.
        has(&t, "# TYPE gen_ai_client_token_usage histogram");
        let input = format!("{STREAM},gen_ai_token_type=\"input\"");
        let output = format!("{STREAM},gen_ai_token_type=\"output\"");
        has(
            &t,
            &format!("gen_ai_client_token_usage_sum{{{input}}} 100.0"),
        );
        has(
            &t,
            &format!("gen_ai_client_token_usage_bucket{{le=\"64.0\",{input}}} 0"),
        );
        has(
            &t,
            &format!("gen_ai_client_token_usage_bucket{{le=\"256.0\",{input}}} 1"),
        );
        has(
            &t,
            &format!("gen_ai_client_token_usage_sum{{{output}}} 50.0"),
        );
        has(
            &t,
            &format!("gen_ai_client_token_usage_bucket{{le=\"16.0\",{output}}} 0"),
        );
        has(
            &t,
            &format!("gen_ai_client_token_usage_bucket{{le=\"64.0\",{output}}} 1"),
        );
        // Client calls feed no server family.
        lacks(
            &t,
            "gen_ai_server_request_duration_seconds_count{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o\"",
        );
    }

    #[test]
    fn bucket_boundaries_are_the_conventions() {
        let (_, t) = all_calls();
        let duration = [
            "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12",
            "10.24", "20.48", "40.96", "81.92", "+Inf",
        ];
        for family in [
            "gen_ai_client_operation_duration_seconds",
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "gen_ai_client_operation_time_per_output_chunk_seconds",
            "gen_ai_server_request_duration_seconds",
        ] {
            assert_eq!(les(&t, family), duration, "{family}");
        }
        assert_eq!(
            les(&t, "gen_ai_client_token_usage"),
            [
                "1.0",
                "4.0",
                "16.0",
                "64.0",
                "256.0",
                "1024.0",
                "4096.0",
                "16384.0",
                "65536.0",
                "262144.0",
                "1048576.0",
                "4194304.0",
                "16777216.0",
                "67108864.0",
                "+Inf",
            ]
        );
        assert_eq!(
            les(&t, "gen_ai_server_time_to_first_token_seconds"),
            [
                "0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5",
                "0.75", "1.0", "2.5", "5.0", "7.5", "10.0", "+Inf",
            ]
        );
        assert_eq!(
            les(&t, "gen_ai_server_time_per_output_token_seconds"),
            [
                "0.01", "0.025", "0.05", "0.075", "0.1", "0.15", "0.2", "0.3", "0.4", "0.5",
                "0.75", "1.0", "2.5", "+Inf",
            ]
        );
        let token_time = [
            "0.001", "0.0025", "0.005", "0.0075", "0.01", "0.025", "0.05", "0.075", "0.1", "0.15",
            "0.2", "0.3", "0.4", "0.5", "0.75", "1.0", "2.5", "5.0", "10.0", "+Inf",
        ];
        assert_eq!(
            les(&t, "llmprobe_time_per_output_token_seconds"),
            token_time
        );
        assert_eq!(les(&t, "llmprobe_time_between_tokens_seconds"), token_time);
        assert_eq!(
            les(&t, "llmprobe_reasoning_duration_seconds"),
            [
                "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12",
                "10.24", "20.48", "40.96", "81.92", "163.84", "327.68", "+Inf",
            ]
        );
    }

    #[test]
    fn server_role_families() {
        let (_, t) = all_calls();
        has(
            &t,
            &format!("gen_ai_server_request_duration_seconds_count{{{SERVER}}} 1"),
        );
        has(
            &t,
            &format!("gen_ai_server_request_duration_seconds_sum{{{SERVER}}} 1.5"),
        );
        has(
            &t,
            &format!("gen_ai_server_request_duration_seconds_bucket{{le=\"1.28\",{SERVER}}} 0"),
        );
        has(
            &t,
            &format!("gen_ai_server_request_duration_seconds_bucket{{le=\"2.56\",{SERVER}}} 1"),
        );
        // TTFT 0.09 s: above 0.08, within 0.1.
        let ttft = "gen_ai_server_time_to_first_token_seconds";
        has(&t, &format!("{ttft}_bucket{{le=\"0.08\",{SERVER}}} 0"));
        has(&t, &format!("{ttft}_bucket{{le=\"0.1\",{SERVER}}} 1"));
        has(&t, &format!("{ttft}_count{{{SERVER}}} 1"));
        // TPOT 0.0625 s: above 0.05, within 0.075.
        let tpot = "gen_ai_server_time_per_output_token_seconds";
        has(&t, &format!("{tpot}_bucket{{le=\"0.05\",{SERVER}}} 0"));
        has(&t, &format!("{tpot}_bucket{{le=\"0.075\",{SERVER}}} 1"));
        has(&t, &format!("{tpot}_sum{{{SERVER}}} 0.0625"));
        // Server calls feed no client family.
        for family in [
            "gen_ai_client_operation_duration_seconds_count",
            "gen_ai_client_token_usage_count",
            "gen_ai_client_operation_time_to_first_chunk_seconds_count",
        ] {
            lacks(&t, &format!("{family}{{{SERVER}"));
        }
        // Both roles feed llmprobe's TPOT and gaps, told apart by role.
        let own = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",\
            gen_ai_request_model=\"llama-3.1-8b\",process_executable_name=\"vllm\",role=\"server\"";
        has(
            &t,
            &format!("llmprobe_time_per_output_token_seconds_count{{{own}}} 1"),
        );
        has(
            &t,
            &format!("llmprobe_time_between_tokens_seconds_count{{{own}}} 2"),
        );
        has(
            &t,
            &format!("llmprobe_time_between_tokens_seconds_sum{{{own}}} 0.125"),
        );
        has(
            &t,
            &format!("llmprobe_tokens_total{{{own},type=\"input\"}} 10"),
        );
        let own_client = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",\
            gen_ai_request_model=\"gpt-4o\",process_executable_name=\"python3\",role=\"client\"";
        has(
            &t,
            &format!("llmprobe_time_per_output_token_seconds_count{{{own_client}}} 1"),
        );
        has(
            &t,
            &format!(
                "llmprobe_time_per_output_token_seconds_bucket{{le=\"0.025\",{own_client}}} 0"
            ),
        );
        has(
            &t,
            &format!("llmprobe_time_per_output_token_seconds_bucket{{le=\"0.05\",{own_client}}} 1"),
        );
        has(
            &t,
            &format!("llmprobe_time_between_tokens_seconds_count{{{own_client}}} 3"),
        );
    }

    #[test]
    fn errors_aborts_and_containers() {
        let (_, t) = all_calls();
        // The 429: error_type from the record, non-stream so no chunk families, no tokens.
        let limited = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",\
            gen_ai_request_model=\"gpt-4o-mini\",server_address=\"api.openai.com\",\
            server_port=\"443\",error_type=\"429\",process_executable_name=\"python3\"";
        has(
            &t,
            &format!("gen_ai_client_operation_duration_seconds_count{{{limited}}} 1"),
        );
        has(
            &t,
            &format!("gen_ai_client_operation_duration_seconds_bucket{{le=\"0.04\",{limited}}} 0"),
        );
        has(
            &t,
            &format!("gen_ai_client_operation_duration_seconds_bucket{{le=\"0.08\",{limited}}} 1"),
        );
        lacks(
            &t,
            "gen_ai_client_operation_time_to_first_chunk_seconds_count{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o-mini\"",
        );
        lacks(
            &t,
            "gen_ai_client_token_usage_count{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o-mini\"",
        );
        // The aborted stream: error_type "aborted", its container, estimated tokens counted.
        let aborted = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"anthropic\",\
            gen_ai_request_model=\"claude-sonnet-4\",server_address=\"api.anthropic.com\",\
            server_port=\"443\",error_type=\"aborted\",process_executable_name=\"node\",\
            container_id=\"0123456789ab\"";
        has(
            &t,
            &format!("gen_ai_client_operation_duration_seconds_count{{{aborted}}} 1"),
        );
        has(
            &t,
            &format!("gen_ai_client_operation_time_to_first_chunk_seconds_count{{{aborted}}} 1"),
        );
        has(
            &t,
            &format!("gen_ai_client_token_usage_sum{{{aborted},gen_ai_token_type=\"output\"}} 3.0"),
        );
        has(
            &t,
            "llmprobe_requests_aborted_total{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"anthropic\",gen_ai_request_model=\"claude-sonnet-4\",process_executable_name=\"node\",role=\"client\"} 1",
        );
        // error_type appears on those two calls only.
        let with_error = t.lines().filter(|l| l.contains("error_type=")).count();
        let on_errors = t
            .lines()
            .filter(|l| l.contains("error_type=\"429\"") || l.contains("error_type=\"aborted\""))
            .count();
        assert!(with_error > 0);
        assert_eq!(with_error, on_errors);
        for l in t
            .lines()
            .filter(|l| l.contains("gpt-4o\"") || l.contains("llama-3.1-8b\""))
        {
            assert!(!l.contains("error_type"), "{l}");
        }
        // No call without a container carries the label.
        for l in t.lines().filter(|l| l.contains("container_id=")) {
            assert!(l.contains("container_id=\"0123456789ab\""), "{l}");
            assert!(l.contains("process_executable_name=\"node\""), "{l}");
        }
        has(&t, "llmprobe_requests_in_flight 3");
    }

    #[test]
    fn tokens_and_reasoning() {
        let (_, t) = all_calls();
        has(
            &t,
            "# HELP llmprobe_tokens_total Tokens by type (output includes reasoning), from reported usage or estimated.",
        );
        has(&t, "# TYPE llmprobe_tokens_total counter");
        let ds = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"deepseek\",\
            gen_ai_request_model=\"deepseek-reasoner\",process_executable_name=\"python3\",\
            role=\"client\"";
        has(
            &t,
            &format!("llmprobe_tokens_total{{{ds},type=\"input\"}} 12"),
        );
        has(
            &t,
            &format!("llmprobe_tokens_total{{{ds},type=\"output\"}} 60"),
        );
        has(
            &t,
            &format!("llmprobe_tokens_total{{{ds},type=\"reasoning\"}} 30"),
        );
        let gpt = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",\
            gen_ai_request_model=\"gpt-4o\",process_executable_name=\"python3\",role=\"client\"";
        has(
            &t,
            &format!("llmprobe_tokens_total{{{gpt},type=\"cached_input\"}} 64"),
        );
        lacks(
            &t,
            &format!("llmprobe_tokens_total{{{gpt},type=\"reasoning\"}}"),
        );
        // Reasoning 3.0 s: above 2.56, within 5.12.
        let r = "llmprobe_reasoning_duration_seconds";
        has(&t, &format!("# TYPE {r} histogram"));
        has(&t, &format!("{r}_bucket{{le=\"2.56\",{ds}}} 0"));
        has(&t, &format!("{r}_bucket{{le=\"5.12\",{ds}}} 1"));
        has(&t, &format!("{r}_sum{{{ds}}} 3.0"));
        has(&t, &format!("{r}_count{{{ds}}} 1"));
        lacks(&t, &format!("{r}_count{{{gpt}}}"));
    }

    #[test]
    fn cost_by_currency_model_process_container_and_key() {
        let priced = |cost: f64, key: Option<&str>| LlmCall {
            cost: Some(cost),
            cost_currency: Some("USD".to_owned()),
            api_key_id: key.map(str::to_owned),
            container_id: Some("abc".to_owned()),
            ..reasoning_call()
        };
        let dify = LlmCall {
            reported_cost: Some(0.5),
            reported_cost_currency: Some("CNY".to_owned()),
            ..reasoning_call()
        };
        let unpriced = LlmCall {
            cost: None,
            ..reasoning_call()
        };
        let junk = LlmCall {
            cost: Some(f64::NAN),
            cost_currency: Some("USD".to_owned()),
            ..reasoning_call()
        };
        let (_, t) = encoded(
            &[
                priced(0.25, Some("00000000000000aa")),
                priced(0.5, Some("00000000000000aa")),
                priced(1.0, Some("00000000000000bb")),
                dify,
                unpriced,
                junk,
            ],
            CardinalityLimits::default(),
        );
        has(&t, "# TYPE llmprobe_cost_total counter");
        has(&t, "# TYPE llmprobe_reported_cost_total counter");
        let who = "gen_ai_provider_name=\"deepseek\",gen_ai_request_model=\"deepseek-reasoner\",\
            gen_ai_response_model=\"deepseek-reasoner\",process_executable_name=\"python3\"";
        has(
            &t,
            &format!(
                "llmprobe_cost_total{{{who},container_id=\"abc\",api_key_id=\"00000000000000aa\",\
                 role=\"client\",currency=\"USD\"}} 0.75"
            ),
        );
        has(
            &t,
            &format!(
                "llmprobe_cost_total{{{who},container_id=\"abc\",api_key_id=\"00000000000000bb\",\
                 role=\"client\",currency=\"USD\"}} 1.0"
            ),
        );
        has(
            &t,
            &format!("llmprobe_reported_cost_total{{{who},role=\"client\",currency=\"CNY\"}} 0.5"),
        );
        // The NaN cost made no series; the key labels the token counts too.
        assert_eq!(t.matches("llmprobe_cost_total{").count(), 2, "{t}");
        has(
            &t,
            "llmprobe_tokens_total{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"deepseek\",\
             gen_ai_request_model=\"deepseek-reasoner\",process_executable_name=\"python3\",\
             role=\"client\",api_key_id=\"00000000000000bb\",type=\"input\"} 12",
        );
    }

    /// A call that makes exactly one series (client duration): no tokens, gaps or timings.
    fn one_series_call(model: &str) -> LlmCall {
        LlmCall {
            request_model: Some(model.to_owned()),
            ..rate_limited()
        }
    }

    fn duration_count(model: &str) -> String {
        format!(
            "gen_ai_client_operation_duration_seconds_count{{gen_ai_operation_name=\"chat\",\
             gen_ai_provider_name=\"openai\",gen_ai_request_model=\"{model}\",\
             server_address=\"api.openai.com\",server_port=\"443\",error_type=\"429\",\
             process_executable_name=\"python3\"}}"
        )
    }

    #[test]
    fn series_past_the_limit_evict_the_least_recently_used() {
        let mut registry = Registry::default();
        let m = GenAiMetrics::new(&mut registry, CardinalityLimits { max_series: 3 });
        for model in ["m1", "m2", "m3", "m1", "m4", "m5"] {
            m.observe(&one_series_call(model));
        }
        // m1 was used again after m2 and m3: m2, then m3 make room for m4 and m5.
        assert_eq!(m.series_count(), 3);
        let t = encode_text(&registry);
        has(&t, &format!("{} 2", duration_count("m1")));
        has(&t, &format!("{} 1", duration_count("m4")));
        has(&t, &format!("{} 1", duration_count("m5")));
        lacks(&t, "\"m2\"");
        lacks(&t, "\"m3\"");
        let evicted = "llmprobe_series_evicted_total{family=\"gen_ai_client_operation_duration\"}";
        has(&t, &format!("{evicted} 2"));
        // An evicted series comes back at its next call (counting anew), pushing out the least
        // recently used one, m1.
        m.observe(&one_series_call("m2"));
        let t = encode_text(&registry);
        has(&t, &format!("{} 1", duration_count("m2")));
        lacks(&t, "\"m1\"");
        has(&t, &format!("{evicted} 3"));
        assert_eq!(m.series_count(), 3);
    }

    #[test]
    fn every_family_counts_in_the_one_limit() {
        // A full client stream makes series in many families; a limit of 4 holds 4 of them.
        let mut registry = Registry::default();
        let m = GenAiMetrics::new(&mut registry, CardinalityLimits { max_series: 4 });
        m.observe(&client_stream());
        m.observe(&server_call());
        assert_eq!(m.series_count(), 4);
        let t = encode_text(&registry);
        let samples = t
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("llmprobe_series_evicted"))
            .filter(|l| l.contains("_count{") || l.starts_with("llmprobe_tokens_total{"))
            .count();
        assert_eq!(samples, 4, "{t}");
        let evicted: u64 = t
            .lines()
            .filter(|l| l.starts_with("llmprobe_series_evicted_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        // Every series made past the fourth evicted one.
        let mut unbounded = Registry::default();
        let all = GenAiMetrics::new(&mut unbounded, CardinalityLimits::default());
        all.observe(&client_stream());
        all.observe(&server_call());
        assert_eq!(evicted, all.series_count() as u64 - 4);
    }

    #[test]
    fn a_flood_of_model_names_neither_grows_nor_locks_out_a_model_in_use() {
        let limit = 100;
        let mut registry = Registry::default();
        let m = GenAiMetrics::new(&mut registry, CardinalityLimits { max_series: limit });
        let (flood, every) = (10_000, 10);
        let mut good_calls = 0;
        for i in 0..flood {
            m.observe(&one_series_call(&format!("junk-{i}")));
            // The well-behaved model starts once the flood is under way (first-come slots
            // would all be taken by then) and is used every tenth call.
            if i >= 200 && i % every == 0 {
                m.observe(&one_series_call("gpt-4o"));
                good_calls += 1;
            }
            assert!(m.series_count() <= limit);
        }
        // A 100 KB model name is one more series, with its value cut.
        m.observe(&one_series_call(&"x".repeat(100 << 10)));
        let t = encode_text(&registry);
        has(&t, &format!("{} {good_calls}", duration_count("gpt-4o")));
        let cut = cap_field(&"x".repeat(100 << 10), MAX_LABEL_VALUE_BYTES).into_owned();
        assert_eq!(cut.len(), MAX_LABEL_VALUE_BYTES);
        has(&t, &format!("{} 1", duration_count(&cut)));
        let series = flood + 2;
        has(
            &t,
            &format!(
                "llmprobe_series_evicted_total{{family=\"gen_ai_client_operation_duration\"}} {}",
                series - limit
            ),
        );
        let samples = t
            .lines()
            .filter(|l| l.starts_with("gen_ai_client_operation_duration_seconds_count{"))
            .count();
        assert_eq!(samples, limit);
    }

    #[test]
    fn label_values_are_escaped_and_cut() {
        let long = "x".repeat(300);
        let (_, t) = encoded(
            &[LlmCall {
                request_model: Some("we\"ird\\mo\ndel".to_owned()),
                response_model: Some(long),
                ..rate_limited()
            }],
            CardinalityLimits::default(),
        );
        has(
            &t,
            &format!(
                "gen_ai_client_operation_duration_seconds_count{{gen_ai_operation_name=\"chat\",\
             gen_ai_provider_name=\"openai\",gen_ai_request_model=\"we\\\"ird\\\\mo\\ndel\",\
             gen_ai_response_model=\"{}\",server_address=\"api.openai.com\",server_port=\"443\",\
             error_type=\"429\",process_executable_name=\"python3\"}} 1",
                cap_field(&"x".repeat(300), MAX_LABEL_VALUE_BYTES)
            ),
        );
    }

    /// Checks that every sample belongs to the family its TYPE line declared, with the suffixes
    /// the format allows, and that no family is declared twice.
    fn check_exposition(text: &str, openmetrics: bool) {
        let mut families = HashSet::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').unwrap_or((rest, ""));
                assert!(families.insert(name.to_owned()), "{name} declared twice");
                current = Some((name.to_owned(), ty.to_owned()));
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let Some((family, ty)) = &current else {
                panic!("sample before any TYPE: {line}");
            };
            let allowed: Vec<String> = match (ty.as_str(), openmetrics) {
                ("counter", true) => vec![format!("{family}_total")],
                ("histogram", _) => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{family}{s}"))
                    .collect(),
                _ => vec![family.clone()],
            };
            assert!(
                allowed.iter().any(|a| a == name),
                "{line} under {family} {ty}"
            );
            let value = line.rsplit(' ').next().unwrap_or("");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn text_and_openmetrics_encodings() {
        let mut registry = Registry::default();
        let self_metrics = SelfMetrics::new(&mut registry);
        self_metrics.events.inc();
        let m = GenAiMetrics::new(&mut registry, CardinalityLimits::default());
        for c in [
            client_stream(),
            server_call(),
            rate_limited(),
            aborted_in_container(),
            reasoning_call(),
        ] {
            m.observe(&c);
        }
        let text = encode_text(&registry);
        lacks(&text, "# EOF");
        lacks(&text, "# UNIT");
        check_exposition(&text, false);
        for line in text
            .lines()
            .filter(|l| l.starts_with("# TYPE ") && l.ends_with(" counter"))
        {
            let name = line
                .trim_start_matches("# TYPE ")
                .trim_end_matches(" counter");
            assert!(name.ends_with("_total"), "{line}");
        }
        for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
            let name = line.split(' ').nth(2).unwrap_or("");
            let type_line = text
                .lines()
                .find(|l| l.starts_with(&format!("# TYPE {name} ")));
            assert!(type_line.is_some(), "HELP without TYPE: {line}");
        }
        has(&text, "# HELP llmprobe_events_total Probe events received.");
        has(&text, "# TYPE llmprobe_events_total counter");
        has(&text, "llmprobe_events_total 1");
        has(&text, "# TYPE llmprobe_requests_aborted_total counter");
        has(&text, "# TYPE llmprobe_requests_in_flight gauge");
        has(&text, "# TYPE llmprobe_connections_tracked gauge");

        let mut om = String::new();
        let encoded = prometheus_client::encoding::text::encode(&mut om, &registry);
        assert!(encoded.is_ok());
        assert!(om.ends_with("# EOF\n"));
        assert_eq!(om.matches("# EOF").count(), 1);
        check_exposition(om.trim_end_matches("# EOF\n"), true);
        has(&om, "# TYPE llmprobe_tokens counter");
        has(
            &om,
            "# TYPE gen_ai_client_operation_duration_seconds histogram",
        );
        has(
            &om,
            "# UNIT gen_ai_client_operation_duration_seconds seconds",
        );
        has(
            &om,
            "# UNIT gen_ai_server_time_to_first_token_seconds seconds",
        );
        lacks(&om, "# UNIT gen_ai_client_token_usage");
        // The text is the OpenMetrics minus EOF/UNIT, with counter family names completed.
        let samples = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&text), samples(&om));
    }

    #[test]
    fn gpu_server_labels_are_the_calls_bounded_labels() {
        let l = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let mut c = aborted_in_container();
        c.role = "server";
        c.pid = 42;
        c.comm = "py\"thon".to_owned();
        assert_eq!(
            gpu_server_labels(&c),
            GpuServerLabels {
                server: vec![
                    l("pid", "42"),
                    l("process_executable_name", "py\\\"thon"),
                    l("container_id", "0123456789ab"),
                ],
                model: "claude-sonnet-4".to_owned(),
            }
        );
        // No container, no request model: the response model; neither: empty.
        let mut c = server_call();
        c.request_model = Some(String::new());
        c.response_model = Some("x".repeat(300));
        let labels = gpu_server_labels(&c);
        assert_eq!(labels.server.len(), 2);
        assert_eq!(labels.model.len(), MAX_LABEL_VALUE_BYTES);
        c.request_model = None;
        c.response_model = None;
        assert_eq!(gpu_server_labels(&c).model, "");
    }

    #[test]
    fn the_metrics_sink_observes_every_call() {
        let mut registry = Registry::default();
        let mut sink = Arc::new(GenAiMetrics::new(
            &mut registry,
            CardinalityLimits::default(),
        ));
        sink.emit(&[client_stream(), server_call()]);
        sink.close();
        sink.set_in_flight(3);
        let (_, direct) = encoded(
            &[client_stream(), server_call()],
            CardinalityLimits::default(),
        );
        // Samples of a family come out in hash order.
        let sorted = |t: &str| {
            let mut lines: Vec<String> = t.lines().map(str::to_owned).collect();
            lines.sort_unstable();
            lines
        };
        assert_eq!(sorted(&encode_text(&registry)), sorted(&direct));
    }
}
