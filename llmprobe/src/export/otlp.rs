//! OpenTelemetry traces: one span per [`LlmCall`], exported over OTLP (http/protobuf or gRPC)
//! with the official protobuf schema (`opentelemetry-proto`).
//!
//! [`OtlpExporter::send`] never blocks: it turns the call into a span and `try_send`s it into a
//! bounded queue (a full queue is a counted drop, `llmprobe_dropped{reason="otlp_queue_full"}`).
//! A background task batches spans (up to `max_batch` or every `flush_interval`) and exports
//! them; a failed export (collector down, slow, non-2xx, gRPC error) drops the batch, counts
//! every span under `reason="otlp_export_failed"` and is logged at most once a minute. There are
//! no retries. [`OtlpExporter::shutdown`] flushes what is queued, bounded by the export timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::Channel;

use crate::llm::{LlmCall, MAX_FIELD_BYTES, cap_field};
use crate::secrets::{log_safe, redact_url};
use crate::telemetry::SelfMetrics;

/// Drop reason: the span queue was full.
pub const DROP_QUEUE_FULL: &str = "otlp_queue_full";
/// Drop reason: the export of the span's batch failed (or shutdown ran out of time).
pub const DROP_EXPORT_FAILED: &str = "otlp_export_failed";

/// Instrumentation scope and `telemetry.sdk.name`.
const SCOPE_NAME: &str = "llmprobe";
/// Failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// OTLP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`: POST `application/x-protobuf` to `.../v1/traces` (the OTel default).
    HttpProtobuf,
    /// `grpc`: `TraceService/Export` over HTTP/2.
    Grpc,
}

impl OtlpProtocol {
    /// Parses `http/protobuf` or `grpc` (case-insensitive). `http/json` and anything else are
    /// not supported: None.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http/protobuf" | "http" | "http-protobuf" => Some(OtlpProtocol::HttpProtobuf),
            "grpc" => Some(OtlpProtocol::Grpc),
            _ => None,
        }
    }

    /// The OTel name (`http/protobuf`, `grpc`).
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }
}

/// Exporter settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The resolved URL: for http/protobuf the full traces URL (`.../v1/traces`); for gRPC
    /// `scheme://host:port`.
    pub endpoint: String,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Extra request headers (gRPC metadata), e.g. an auth token.
    pub headers: Vec<(String, String)>,
    /// Spans queued before `send` starts dropping (default 2048).
    pub max_queue: usize,
    /// Spans per export request (default 512).
    pub max_batch: usize,
    /// Longest a span waits for its batch (default 1 s).
    pub flush_interval: Duration,
    /// Per-export timeout, connecting included; also bounds `shutdown` (default 5 s).
    pub timeout: Duration,
}

impl OtlpConfig {
    /// A config with the defaults for `endpoint` (already resolved, see [`OtlpConfig::endpoint`]).
    pub fn new(endpoint: impl Into<String>, protocol: OtlpProtocol) -> Self {
        OtlpConfig {
            endpoint: endpoint.into(),
            protocol,
            service_name: "llmprobe".to_owned(),
            headers: Vec::new(),
            max_queue: 2048,
            max_batch: 512,
            flush_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }

    /// The config from command-line flags and the standard OTel environment variables, or None
    /// when no endpoint is given anywhere (export off).
    ///
    /// Endpoint, first found: `endpoint_flag` (a base URL like `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// a URL whose path already ends in `/v1/traces` is used as is),
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL, used as is),
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (base: http/protobuf appends `v1/traces`). A missing
    /// scheme means `http://`. Protocol: `protocol_flag`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, default `http/protobuf`. Also honoured:
    /// `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` (`k=v,k=v`, values percent-decoded),
    /// `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` (ms), `OTEL_SERVICE_NAME` (default `llmprobe`),
    /// `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`
    /// (ms). Unusable values are reported (warning) and replaced by defaults.
    pub fn from_env_and_flags(
        endpoint_flag: Option<&str>,
        protocol_flag: Option<&str>,
    ) -> Option<OtlpConfig> {
        Self::from_lookup(endpoint_flag, protocol_flag, &|k| std::env::var(k).ok())
    }

    fn from_lookup(
        endpoint_flag: Option<&str>,
        protocol_flag: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<OtlpConfig> {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let endpoint_flag = endpoint_flag.map(str::trim).filter(|s| !s.is_empty());
        let protocol_flag = protocol_flag.map(str::trim).filter(|s| !s.is_empty());

        let protocol = match protocol_flag
            .map(str::to_owned)
            .or_else(|| get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            None => OtlpProtocol::HttpProtobuf,
            Some(p) => OtlpProtocol::parse(&p).unwrap_or_else(|| {
                warn!("OTLP protocol \"{}\" is not supported (use http/protobuf or grpc); using http/protobuf", log_safe(&p));
                OtlpProtocol::HttpProtobuf
            }),
        };

        // (url, is_full_traces_url)
        let (raw, full) = if let Some(f) = endpoint_flag {
            let full = url_path(f).trim_end_matches('/').ends_with("/v1/traces");
            (f.to_owned(), full)
        } else if let Some(t) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            (t, true)
        } else {
            (get("OTEL_EXPORTER_OTLP_ENDPOINT")?, false)
        };
        let raw = if raw.contains("://") {
            raw
        } else {
            format!("http://{raw}")
        };
        let endpoint = match protocol {
            OtlpProtocol::Grpc => grpc_origin(&raw),
            OtlpProtocol::HttpProtobuf if full => raw,
            OtlpProtocol::HttpProtobuf => {
                if raw.ends_with('/') {
                    format!("{raw}v1/traces")
                } else {
                    format!("{raw}/v1/traces")
                }
            }
        };

        let mut cfg = OtlpConfig::new(endpoint, protocol);
        if let Some(s) = get("OTEL_SERVICE_NAME") {
            cfg.service_name = s;
        }
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(h) = get(var) {
                for (k, v) in parse_headers(&h) {
                    cfg.headers.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
                    cfg.headers.push((k, v));
                }
            }
        }
        let num = |k: &str| -> Option<u64> {
            let v = get(k)?;
            match v.parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    warn!("ignoring {k}=\"{}\": not a positive integer", log_safe(&v));
                    None
                }
            }
        };
        if let Some(ms) =
            num("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").or_else(|| num("OTEL_EXPORTER_OTLP_TIMEOUT"))
        {
            cfg.timeout = Duration::from_millis(ms);
        }
        if let Some(n) = num("OTEL_BSP_MAX_QUEUE_SIZE") {
            cfg.max_queue = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            cfg.max_batch = usize::try_from(n).unwrap_or(usize::MAX);
        }
        cfg.max_batch = cfg.max_batch.min(cfg.max_queue);
        if let Some(ms) = num("OTEL_BSP_SCHEDULE_DELAY") {
            cfg.flush_interval = Duration::from_millis(ms);
        }
        Some(cfg)
    }
}

/// The path of a URL (`/` when none).
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// `scheme://authority` of a URL (gRPC ignores paths).
fn grpc_origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let auth = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{auth}")
}

/// `k=v,k2=v2` (W3C baggage style, values percent-encoded); bad entries are skipped.
fn parse_headers(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            // The entry may be a secret value: never log it.
            warn!(
                "ignoring an OTLP header entry ({} bytes): expected key=value",
                item.len()
            );
            continue;
        };
        let k = percent_decode(k.trim());
        let v = percent_decode(v.trim());
        let valid_key = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let valid_value = v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        if valid_key && valid_value {
            out.push((k, v));
        } else {
            warn!(
                "ignoring OTLP header \"{}\": not a valid HTTP header",
                log_safe(&k)
            );
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Ids

/// Trace and span ids: splitmix64 over an atomic counter, seeded from time, pid, host name and
/// an address (ASLR). Unique within a process (splitmix64 is a bijection of the counter); not
/// cryptographic, which ids need not be.
struct IdGen {
    state: AtomicU64,
}

impl IdGen {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        let addr = &local as *const u8 as usize as u64;
        let mut seed = nanos ^ (u64::from(std::process::id()) << 32) ^ addr.rotate_left(17);
        for b in host_name().bytes() {
            seed = (seed ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        IdGen {
            state: AtomicU64::new(splitmix(seed)),
        }
    }

    fn next_u64(&self) -> u64 {
        loop {
            let s = self
                .state
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
                .wrapping_add(0x9E37_79B9_7F4A_7C15);
            let v = splitmix(s);
            if v != 0 {
                return v;
            }
        }
    }

    fn span_id(&self) -> Vec<u8> {
        self.next_u64().to_be_bytes().to_vec()
    }

    fn trace_id(&self) -> Vec<u8> {
        let mut v = self.next_u64().to_be_bytes().to_vec();
        v.extend_from_slice(&self.next_u64().to_be_bytes());
        v
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Lower-case hex of `len` bytes, not all zero (W3C: an all-zero id is invalid).
fn parse_hex_id(s: &str, len: usize) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() != len * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let out: Vec<u8> = (0..len)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    if out.iter().all(|&b| b == 0) {
        return None;
    }
    Some(out)
}

fn host_name() -> String {
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            return h.to_owned();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; gethostname NUL-terminates
    // within it on success (we also stop at the buffer end).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        return String::from_utf8_lossy(&buf[..end]).into_owned();
    }
    "unknown".to_owned()
}

// ---------------------------------------------------------------------------------------------
// Span mapping

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn int(v: u64) -> Value {
    Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A string attribute, bounded like record fields (records are capped already; the span name and
/// anything added later are not).
fn str_v(s: &str) -> Value {
    Value::StringValue(cap_field(s, MAX_FIELD_BYTES).into_owned())
}

/// The span of one call: name `{operation} {request_model}`, kind from the role, a child of the
/// app's span when the request carried a traceparent, GenAI semantic-convention attributes.
fn call_to_span(call: &LlmCall, ids: &IdGen) -> Span {
    let d = &call.detail;
    let name = match &call.request_model {
        Some(m) if !m.is_empty() => {
            cap_field(&format!("{} {m}", call.operation), MAX_FIELD_BYTES).into_owned()
        }
        _ => call.operation.to_owned(),
    };
    let kind = if call.role == "server" {
        SpanKind::Server
    } else {
        SpanKind::Client
    };

    // A valid traceparent makes this span a child of the app's span (a remote parent).
    let trace = call.trace_id.as_deref().and_then(|t| parse_hex_id(t, 16));
    let (trace_id, parent_span_id) = match trace {
        Some(t) => {
            let parent = d
                .parent_span_id
                .as_deref()
                .and_then(|p| parse_hex_id(p, 8))
                .unwrap_or_default();
            (t, parent)
        }
        None => (ids.trace_id(), Vec::new()),
    };
    // SpanFlags: bit 0x100 = "is_remote known", 0x200 = parent is remote; 0x01 = sampled.
    let flags = if parent_span_id.is_empty() {
        0x101
    } else {
        0x301
    };

    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |x| x.as_nanos() as u64);
    let end = if d.end_unix_ns > 0 {
        d.end_unix_ns as u64
    } else {
        now_ns
    };
    let start = if d.start_unix_ns > 0 {
        d.start_unix_ns as u64
    } else {
        end.saturating_sub((call.duration_s.max(0.0) * 1e9) as u64)
    };
    let end = end.max(start);

    let mut a: Vec<KeyValue> = Vec::with_capacity(28);
    let mut s = |key: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            a.push(kv(key, str_v(v)));
        }
    };
    s("gen_ai.operation.name", Some(call.operation));
    s("gen_ai.provider.name", Some(&call.provider));
    s("gen_ai.request.model", call.request_model.as_deref());
    s("gen_ai.response.model", call.response_model.as_deref());
    s("gen_ai.response.id", call.request_id.as_deref());
    s("server.address", call.server_address.as_deref());
    s("error.type", call.error_type.as_deref());
    s("http.request.method", Some(&call.http_method));
    s("url.path", Some(&call.http_path));
    s("llmprobe.token_source", call.token_source);
    s("process.executable.name", Some(&call.comm));
    s("container.id", call.container_id.as_deref());
    let mut push = |key: &str, v: Option<Value>| {
        if let Some(v) = v {
            a.push(kv(key, v));
        }
    };
    push("gen_ai.request.stream", call.stream.map(Value::BoolValue));
    push("gen_ai.usage.input_tokens", call.input_tokens.map(int));
    push("gen_ai.usage.output_tokens", call.output_tokens.map(int));
    push(
        "gen_ai.usage.reasoning.output_tokens",
        call.reasoning_tokens.map(int),
    );
    push(
        "gen_ai.usage.cache_read.input_tokens",
        call.cached_input_tokens.map(int),
    );
    push(
        "gen_ai.response.finish_reasons",
        call.finish_reason.as_ref().map(|f| {
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(str_v(f)),
                }],
            })
        }),
    );
    push(
        "gen_ai.response.time_to_first_chunk",
        call.ttft_s.map(Value::DoubleValue),
    );
    push("server.port", call.server_port.map(|p| int(u64::from(p))));
    push(
        "http.response.status_code",
        call.http_status.map(|p| int(u64::from(p))),
    );
    push("llmprobe.tpot", call.tpot_s.map(Value::DoubleValue));
    push("llmprobe.aborted", Some(Value::BoolValue(call.aborted)));
    push("process.pid", Some(int(u64::from(call.pid))));
    push(
        "llmprobe.gpu.utilization_mean",
        call.gpu_util_mean.map(Value::DoubleValue),
    );
    push(
        "llmprobe.gpu.memory_used_bytes",
        call.gpu_mem_used_bytes.map(int),
    );
    push(
        "llmprobe.gpu.power_mean_w",
        call.gpu_power_mean_w.map(Value::DoubleValue),
    );

    let events = d
        .first_chunk_unix_ns
        .filter(|&t| t > 0)
        .map(|t| Event {
            time_unix_nano: t as u64,
            name: "gen_ai.first_chunk".to_owned(),
            ..Default::default()
        })
        .into_iter()
        .collect();

    let status = match call.error_type.as_deref() {
        Some(e) => Status {
            code: StatusCode::Error as i32,
            message: e.to_owned(),
        },
        None => Status::default(),
    };

    Span {
        trace_id,
        span_id: ids.span_id(),
        parent_span_id,
        flags,
        name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: a,
        events,
        status: Some(status),
        ..Default::default()
    }
}

fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", str_v(service_name)),
            kv("host.name", str_v(&host_name())),
            kv("telemetry.sdk.name", str_v(SCOPE_NAME)),
            kv("telemetry.sdk.version", str_v(env!("CARGO_PKG_VERSION"))),
        ],
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Exporter

/// State shared between the handle and the export task.
struct Shared {
    /// Set by `shutdown`: exports must finish by then.
    deadline: OnceLock<Instant>,
    /// Spans accepted into the queue and not yet exported or dropped.
    pending: AtomicU64,
}

/// The OTLP span exporter: a handle on the queue and its export task.
pub struct OtlpExporter {
    tx: mpsc::Sender<Span>,
    ids: IdGen,
    metrics: Arc<SelfMetrics>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    timeout: Duration,
}

fn count_drops(metrics: &SelfMetrics, reason: &str, n: u64) {
    if n > 0 {
        metrics
            .dropped
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc_by(n);
    }
}

impl OtlpExporter {
    /// Starts the export task. Must be called inside a tokio runtime. Never fails: an unusable
    /// endpoint is reported here (error log) and every export then fails (counted).
    pub fn spawn(cfg: OtlpConfig, metrics: Arc<SelfMetrics>) -> OtlpExporter {
        let max_queue = cfg.max_queue.max(1);
        let (tx, rx) = mpsc::channel(max_queue);
        let shared = Arc::new(Shared {
            deadline: OnceLock::new(),
            pending: AtomicU64::new(0),
        });
        let transport = Transport::new(&cfg);
        match &transport {
            Transport::Unusable(why) => log::error!(
                "OTLP trace export to {} disabled: {why}; every span will be counted as dropped (reason {DROP_EXPORT_FAILED})",
                redact_url(&cfg.endpoint)
            ),
            _ => info!(
                "OTLP trace export to {} ({})",
                redact_url(&cfg.endpoint),
                cfg.protocol.as_str()
            ),
        }
        let timeout = cfg.timeout;
        let worker = Worker {
            request_template: ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource(&cfg.service_name)),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: SCOPE_NAME.to_owned(),
                            version: env!("CARGO_PKG_VERSION").to_owned(),
                            ..Default::default()
                        }),
                        spans: Vec::new(),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            },
            cfg,
            metrics: metrics.clone(),
            shared: shared.clone(),
            transport,
            last_log: None,
            suppressed: 0,
            failing: false,
        };
        let task = tokio::spawn(worker.run(rx));
        OtlpExporter {
            tx,
            ids: IdGen::new(),
            metrics,
            shared,
            task,
            timeout,
        }
    }

    /// Queues the call's span. Never blocks; a full queue is a counted drop.
    pub fn send(&self, call: &LlmCall) {
        if self.tx.capacity() == 0 {
            self.metrics.drop_for(DROP_QUEUE_FULL);
            return;
        }
        let span = call_to_span(call, &self.ids);
        self.shared.pending.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(e) => {
                self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                self.metrics.drop_for(match e {
                    mpsc::error::TrySendError::Full(_) => DROP_QUEUE_FULL,
                    mpsc::error::TrySendError::Closed(_) => DROP_EXPORT_FAILED,
                });
            }
        }
    }

    /// Exports what is queued and stops the task, within the export timeout; spans still
    /// unexported then are counted as dropped (`otlp_export_failed`).
    pub async fn shutdown(self) {
        let OtlpExporter {
            tx,
            metrics,
            shared,
            mut task,
            timeout,
            ..
        } = self;
        let _ = shared.deadline.set(Instant::now() + timeout);
        drop(tx);
        let grace = timeout + Duration::from_millis(250);
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            let left = shared.pending.swap(0, Ordering::Relaxed);
            count_drops(&metrics, DROP_EXPORT_FAILED, left);
            warn!("OTLP shutdown timed out; {left} spans dropped");
        }
    }
}

/// How batches travel.
enum Transport {
    Http {
        target: Target,
        tls: Option<TlsConnector>,
        /// Request head up to and excluding `Content-Length`.
        head: String,
    },
    Grpc {
        client: TraceServiceClient<Channel>,
        metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    },
    /// Every export fails with this reason.
    Unusable(String),
}

impl Transport {
    fn new(cfg: &OtlpConfig) -> Transport {
        match cfg.protocol {
            OtlpProtocol::HttpProtobuf => {
                let target = match Target::parse(&cfg.endpoint) {
                    Ok(t) => t,
                    Err(e) => return Transport::Unusable(e),
                };
                let tls = if target.tls {
                    match tls_connector() {
                        Ok(c) => Some(c),
                        Err(e) => return Transport::Unusable(e),
                    }
                } else {
                    None
                };
                let mut head = format!(
                    "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: llmprobe/{}\r\nContent-Type: application/x-protobuf\r\nConnection: close\r\n",
                    target.path,
                    target.authority,
                    env!("CARGO_PKG_VERSION")
                );
                for (k, v) in &cfg.headers {
                    if k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                        && !v.bytes().any(|b| b == b'\r' || b == b'\n')
                    {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                }
                Transport::Http { target, tls, head }
            }
            OtlpProtocol::Grpc => {
                let endpoint = match Channel::from_shared(cfg.endpoint.clone()) {
                    Ok(e) => e,
                    Err(e) => return Transport::Unusable(format!("bad gRPC endpoint: {e}")),
                };
                let mut endpoint = endpoint
                    .connect_timeout(cfg.timeout)
                    .timeout(cfg.timeout)
                    .tcp_nodelay(true);
                if cfg.endpoint.starts_with("https://") {
                    let tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
                    endpoint = match endpoint.tls_config(tls) {
                        Ok(e) => e,
                        Err(e) => return Transport::Unusable(format!("gRPC TLS setup: {e}")),
                    };
                }
                let metadata = cfg
                    .headers
                    .iter()
                    .filter_map(|(k, v)| {
                        let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes());
                        let val = AsciiMetadataValue::try_from(v.as_str());
                        match (key, val) {
                            (Ok(k), Ok(v)) => Some((k, v)),
                            _ => {
                                warn!(
                                    "OTLP header \"{}\" is not valid gRPC metadata; not sent",
                                    log_safe(k)
                                );
                                None
                            }
                        }
                    })
                    .collect();
                Transport::Grpc {
                    client: TraceServiceClient::new(endpoint.connect_lazy()),
                    metadata,
                }
            }
        }
    }

    /// One export; Err says why it failed.
    async fn export(
        &mut self,
        req: ExportTraceServiceRequest,
        timeout: Duration,
    ) -> Result<(), String> {
        match self {
            Transport::Unusable(why) => Err(why.clone()),
            Transport::Http { target, tls, head } => {
                let body = req.encode_to_vec();
                let fut = http_post(target, tls.as_ref(), head, &body);
                match tokio::time::timeout(timeout, fut).await {
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
                    Ok(Ok(status)) => Err(format!("HTTP status {status}")),
                }
            }
            Transport::Grpc { client, metadata } => {
                let mut request = tonic::Request::new(req);
                request.set_timeout(timeout);
                for (k, v) in metadata.iter() {
                    request.metadata_mut().insert(k.clone(), v.clone());
                }
                match tokio::time::timeout(timeout, client.export(request)).await {
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                    Ok(Err(status)) => Err(format!(
                        "gRPC status {:?}: {}",
                        status.code(),
                        status.message()
                    )),
                    Ok(Ok(_)) => Ok(()),
                }
            }
        }
    }
}

/// A parsed `http://` / `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// Host without IPv6 brackets.
    host: String,
    port: u16,
    /// `host[:port]` as sent in `Host`.
    authority: String,
    /// Path and query, starting with `/`.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("endpoint {} has no scheme", redact_url(url)))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "endpoint scheme \"{}\" is not http or https",
                    log_safe(other)
                ));
            }
        };
        let rest = rest.split('#').next().unwrap_or(rest);
        let (auth, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let auth = auth.rsplit_once('@').map_or(auth, |(_, a)| a);
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = auth.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("bad IPv6 host in {}", redact_url(url)))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("bad port in {}", redact_url(url)))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("bad host in {}", redact_url(url))),
            };
            (h.to_owned(), port)
        } else {
            match auth.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse()
                        .map_err(|_| format!("bad port in {}", redact_url(url)))?,
                ),
                None => (auth.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("endpoint {} has no host", redact_url(url)));
        }
        Ok(Target {
            tls,
            host,
            port,
            authority: auth.to_owned(),
            path,
        })
    }
}

/// TLS client config: the system's trust store (honours `SSL_CERT_FILE` / `SSL_CERT_DIR`).
fn tls_connector() -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no CA certificates found in the system trust store ({} errors)",
            found.errors.len()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// POSTs `body`; returns the response status.
async fn http_post(
    target: &Target,
    tls: Option<&TlsConnector>,
    head: &str,
    body: &[u8],
) -> Result<u16, String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect {}: {e}", target.authority))?;
    let _ = tcp.set_nodelay(true);
    let head = format!("{head}Content-Length: {}\r\n\r\n", body.len());
    match tls {
        None => exchange(tcp, head.as_bytes(), body).await,
        Some(conn) => {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("TLS server name {:?}: {e}", target.host))?;
            let stream = conn
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {}: {e}", target.authority))?;
            exchange(stream, head.as_bytes(), body).await
        }
    }
}

/// Writes the request and reads the status line.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    head: &[u8],
    body: &[u8],
) -> Result<u16, String> {
    let io = |e: std::io::Error| format!("HTTP exchange: {e}");
    s.write_all(head).await.map_err(io)?;
    s.write_all(body).await.map_err(io)?;
    s.flush().await.map_err(io)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') {
        let n = s.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err("connection closed before the response status".to_owned());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 4096 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") => Ok(code),
        _ => Err("not an HTTP response".to_owned()),
    }
}

/// The export task.
struct Worker {
    cfg: OtlpConfig,
    metrics: Arc<SelfMetrics>,
    shared: Arc<Shared>,
    transport: Transport,
    /// Resource and scope, with no spans.
    request_template: ExportTraceServiceRequest,
    last_log: Option<Instant>,
    suppressed: u64,
    failing: bool,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Span>) {
        let max_batch = self.cfg.max_batch.max(1);
        let mut batch: Vec<Span> = Vec::with_capacity(max_batch.min(1024));
        let mut ticker =
            tokio::time::interval(self.cfg.flush_interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() >= max_batch {
                            self.export(&mut batch).await;
                            ticker.reset();
                        }
                    }
                    None => {
                        // Channel closed (shutdown) and drained.
                        self.export(&mut batch).await;
                        return;
                    }
                },
                _ = ticker.tick() => {
                    if !batch.is_empty() {
                        self.export(&mut batch).await;
                    }
                }
            }
        }
    }

    async fn export(&mut self, batch: &mut Vec<Span>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let timeout = match self.shared.deadline.get() {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(self.cfg.timeout),
            None => self.cfg.timeout,
        };
        let result = if timeout.is_zero() {
            Err("shutdown deadline passed".to_owned())
        } else {
            let mut req = self.request_template.clone();
            if let Some(ss) = req
                .resource_spans
                .first_mut()
                .and_then(|rs| rs.scope_spans.first_mut())
            {
                ss.spans = std::mem::take(batch);
            }
            self.transport.export(req, timeout).await
        };
        batch.clear();
        let _ = self
            .shared
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(n))
            });
        match result {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    info!(
                        "OTLP export to {} works again",
                        redact_url(&self.cfg.endpoint)
                    );
                }
            }
            Err(e) => {
                count_drops(&self.metrics, DROP_EXPORT_FAILED, n);
                self.failing = true;
                let due = self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY);
                if due {
                    let more = if self.suppressed > 0 {
                        format!(
                            " ({} more failed exports since the last report)",
                            self.suppressed
                        )
                    } else {
                        String::new()
                    };
                    warn!(
                        "OTLP export to {} failed: {}; {n} spans dropped{more}; further failures are counted in llmprobe_dropped{{reason=\"{DROP_EXPORT_FAILED}\"}} and logged at most once a minute",
                        redact_url(&self.cfg.endpoint),
                        log_safe(&e)
                    );
                    self.last_log = Some(Instant::now());
                    self.suppressed = 0;
                } else {
                    self.suppressed += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;
    use crate::llm::CallDetail;

    const T0: i64 = 1_780_000_000_000_000_000;

    fn call() -> LlmCall {
        LlmCall {
            start_time: "2026-01-01T00:00:00.000000Z".into(),
            end_time: "2026-01-01T00:00:01.500000Z".into(),
            role: "client",
            pid: 4242,
            comm: "python3".into(),
            container_id: Some("abc123".into()),
            tls: true,
            peer_addr: Some("1.2.3.4:443".into()),
            server_address: Some("api.openai.com".into()),
            server_port: Some(443),
            http_method: "POST".into(),
            http_path: "/v1/chat/completions".into(),
            http_status: Some(200),
            provider: "openai".into(),
            api: "openai.chat_completions",
            operation: "chat",
            request_model: Some("gpt-4o".into()),
            response_model: Some("gpt-4o-2024-08-06".into()),
            stream: Some(true),
            input_tokens: Some(8),
            output_tokens: Some(9),
            reasoning_tokens: Some(2),
            cached_input_tokens: Some(0),
            token_source: Some("usage"),
            duration_s: 1.5,
            ttft_s: Some(0.25),
            tpot_s: Some(0.05),
            reasoning_s: None,
            tbt_p50_s: None,
            tbt_p95_s: None,
            tbt_max_s: None,
            chunks: Some(9),
            finish_reason: Some("stop".into()),
            error_type: None,
            retry_after: None,
            aborted: false,
            request_id: Some("chatcmpl-1".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            gpu_util_mean: None,
            gpu_mem_used_bytes: None,
            gpu_power_mean_w: None,
            detail: CallDetail {
                start_unix_ns: T0,
                end_unix_ns: T0 + 1_500_000_000,
                first_chunk_unix_ns: Some(T0 + 250_000_000),
                gaps_s: vec![],
                parent_span_id: Some("00f067aa0ba902b7".into()),
            },
        }
    }

    fn attrs(span: &Span) -> HashMap<String, Value> {
        span.attributes
            .iter()
            .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
            .collect()
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.to_owned())
    }

    #[test]
    fn client_span_joins_the_apps_trace() {
        let ids = IdGen::new();
        let span = call_to_span(&call(), &ids);
        assert_eq!(span.name, "chat gpt-4o");
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(
            span.trace_id,
            parse_hex_id("4bf92f3577b34da6a3ce929d0e0e4736", 16).expect("hex")
        );
        assert_eq!(
            span.parent_span_id,
            vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(span.span_id.len(), 8);
        assert!(span.span_id.iter().any(|&b| b != 0));
        assert_eq!(span.start_time_unix_nano, T0 as u64);
        assert_eq!(span.end_time_unix_nano, T0 as u64 + 1_500_000_000);
        assert_eq!(span.flags, 0x301);
        assert_eq!(span.status, Some(Status::default()));
        assert_eq!(span.events.len(), 1);
        assert_eq!(span.events[0].name, "gen_ai.first_chunk");
        assert_eq!(span.events[0].time_unix_nano, T0 as u64 + 250_000_000);
        let a = attrs(&span);
        assert_eq!(a["gen_ai.operation.name"], s("chat"));
        assert_eq!(a["gen_ai.provider.name"], s("openai"));
        assert_eq!(a["gen_ai.request.model"], s("gpt-4o"));
        assert_eq!(a["gen_ai.response.model"], s("gpt-4o-2024-08-06"));
        assert_eq!(a["gen_ai.request.stream"], Value::BoolValue(true));
        assert_eq!(a["gen_ai.usage.input_tokens"], Value::IntValue(8));
        assert_eq!(a["gen_ai.usage.output_tokens"], Value::IntValue(9));
        assert_eq!(
            a["gen_ai.usage.reasoning.output_tokens"],
            Value::IntValue(2)
        );
        assert_eq!(
            a["gen_ai.usage.cache_read.input_tokens"],
            Value::IntValue(0)
        );
        assert_eq!(
            a["gen_ai.response.finish_reasons"],
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(s("stop"))
                }]
            })
        );
        assert_eq!(
            a["gen_ai.response.time_to_first_chunk"],
            Value::DoubleValue(0.25)
        );
        assert_eq!(a["gen_ai.response.id"], s("chatcmpl-1"));
        assert_eq!(a["server.address"], s("api.openai.com"));
        assert_eq!(a["server.port"], Value::IntValue(443));
        assert_eq!(a["http.request.method"], s("POST"));
        assert_eq!(a["url.path"], s("/v1/chat/completions"));
        assert_eq!(a["http.response.status_code"], Value::IntValue(200));
        assert_eq!(a["llmprobe.tpot"], Value::DoubleValue(0.05));
        assert_eq!(a["llmprobe.aborted"], Value::BoolValue(false));
        assert_eq!(a["llmprobe.token_source"], s("usage"));
        assert_eq!(a["process.pid"], Value::IntValue(4242));
        assert_eq!(a["process.executable.name"], s("python3"));
        assert_eq!(a["container.id"], s("abc123"));
        assert!(!a.contains_key("error.type"));
        assert_eq!(a.len(), 23);
    }

    #[test]
    fn server_span_carries_its_gpus_window() {
        let ids = IdGen::new();
        let mut c = call();
        c.role = "server";
        c.gpu_util_mean = Some(87.5);
        c.gpu_mem_used_bytes = Some(8 << 30);
        c.gpu_power_mean_w = Some(312.25);
        let a = attrs(&call_to_span(&c, &ids));
        assert_eq!(a["llmprobe.gpu.utilization_mean"], Value::DoubleValue(87.5));
        assert_eq!(
            a["llmprobe.gpu.memory_used_bytes"],
            Value::IntValue(8 << 30)
        );
        assert_eq!(a["llmprobe.gpu.power_mean_w"], Value::DoubleValue(312.25));
        // Without GPU data (client role, or no NVML) the attributes are absent.
        let a = attrs(&call_to_span(&call(), &ids));
        assert!(!a.keys().any(|k| k.starts_with("llmprobe.gpu.")), "{a:?}");
    }

    #[test]
    fn server_error_span_without_traceparent() {
        let ids = IdGen::new();
        let mut c = call();
        c.role = "server";
        c.request_model = None;
        c.response_model = None;
        c.stream = None;
        c.input_tokens = None;
        c.output_tokens = None;
        c.reasoning_tokens = None;
        c.cached_input_tokens = None;
        c.token_source = None;
        c.ttft_s = None;
        c.tpot_s = None;
        c.finish_reason = None;
        c.request_id = None;
        c.container_id = None;
        c.server_address = None;
        c.server_port = None;
        c.http_status = Some(429);
        c.error_type = Some("429".into());
        c.aborted = true;
        c.trace_id = None;
        c.detail.first_chunk_unix_ns = None;
        let span = call_to_span(&c, &ids);
        assert_eq!(span.name, "chat");
        assert_eq!(span.kind, SpanKind::Server as i32);
        let status = span.status.clone().expect("status");
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "429");
        assert_eq!(span.trace_id.len(), 16);
        assert!(span.trace_id.iter().any(|&b| b != 0));
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.flags, 0x101);
        assert!(span.events.is_empty());
        let a = attrs(&span);
        for absent in [
            "gen_ai.request.model",
            "gen_ai.response.model",
            "gen_ai.request.stream",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.response.finish_reasons",
            "gen_ai.response.time_to_first_chunk",
            "gen_ai.response.id",
            "server.address",
            "server.port",
            "llmprobe.tpot",
            "llmprobe.token_source",
            "container.id",
        ] {
            assert!(!a.contains_key(absent), "{absent} should be absent");
        }
        assert_eq!(a["error.type"], s("429"));
        assert_eq!(a["http.response.status_code"], Value::IntValue(429));
        assert_eq!(a["llmprobe.aborted"], Value::BoolValue(true));
        // Two spans never share ids.
        let other = call_to_span(&c, &ids);
        assert_ne!(other.trace_id, span.trace_id);
        assert_ne!(other.span_id, span.span_id);
    }

    #[test]
    fn bad_trace_ids_get_a_fresh_trace() {
        let ids = IdGen::new();
        let mut c = call();
        c.trace_id = Some("00000000000000000000000000000000".into());
        let span = call_to_span(&c, &ids);
        assert_ne!(span.trace_id, vec![0; 16]);
        assert!(span.parent_span_id.is_empty());
        c.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        c.detail.parent_span_id = Some("xyz".into());
        let span = call_to_span(&c, &ids);
        assert_eq!(span.trace_id[0], 0x4b);
        assert!(span.parent_span_id.is_empty());
    }

    fn cfg_from(
        flag: Option<&str>,
        proto: Option<&str>,
        env: &[(&str, &str)],
    ) -> Option<OtlpConfig> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpConfig::from_lookup(flag, proto, &|k| env.get(k).cloned())
    }

    #[test]
    fn config_from_env_and_flags() {
        assert_eq!(cfg_from(None, None, &[]), None);
        assert_eq!(cfg_from(None, Some("grpc"), &[]), None);

        let c = cfg_from(
            None,
            None,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col:4318")],
        )
        .expect("cfg");
        assert_eq!(c.endpoint, "http://col:4318/v1/traces");
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(c.service_name, "llmprobe");
        assert_eq!((c.max_queue, c.max_batch), (2048, 512));
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(5));

        let c = cfg_from(
            None,
            None,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col:4318/base/")],
        )
        .expect("cfg");
        assert_eq!(c.endpoint, "http://col:4318/base/v1/traces");

        // The signal-specific variable is the full URL and wins.
        let c = cfg_from(
            None,
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://other:9999/custom/path",
                ),
            ],
        )
        .expect("cfg");
        assert_eq!(c.endpoint, "http://other:9999/custom/path");

        // The flag wins over both; a base URL, unless it already names /v1/traces.
        let env = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:9999/x")];
        let c = cfg_from(Some("localhost:4318"), None, &env).expect("cfg");
        assert_eq!(c.endpoint, "http://localhost:4318/v1/traces");
        let c = cfg_from(Some("https://c.example/v1/traces"), None, &env).expect("cfg");
        assert_eq!(c.endpoint, "https://c.example/v1/traces");

        // gRPC: the origin only; flag beats env for the protocol.
        let c = cfg_from(
            None,
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col:4317/ignored"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        )
        .expect("cfg");
        assert_eq!(
            (c.endpoint.as_str(), c.protocol),
            ("http://col:4317", OtlpProtocol::Grpc)
        );
        let c = cfg_from(
            Some("http://col:4318"),
            Some("http/protobuf"),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
        )
        .expect("cfg");
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
        // Unsupported protocols fall back to http/protobuf.
        let c = cfg_from(Some("http://col:4318"), Some("http/json"), &[]).expect("cfg");
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);

        let c = cfg_from(
            Some("http://col:4318"),
            None,
            &[
                ("OTEL_SERVICE_NAME", "agent-7"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "api-key=s%20ecret, x-tenant = t1,bad,=x",
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Tenant=t2"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500"),
                ("OTEL_BSP_SCHEDULE_DELAY", "abc"),
            ],
        )
        .expect("cfg");
        assert_eq!(c.service_name, "agent-7");
        assert_eq!(
            c.headers,
            vec![
                ("api-key".to_owned(), "s ecret".to_owned()),
                ("X-Tenant".to_owned(), "t2".to_owned())
            ]
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!((c.max_queue, c.max_batch), (100, 100));
        assert_eq!(c.flush_interval, Duration::from_secs(1));
    }

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://col:4318/v1/traces").expect("url");
        assert_eq!(
            (
                t.tls,
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path.as_str()
            ),
            (false, "col", 4318, "col:4318", "/v1/traces")
        );
        let t = Target::parse("https://[::1]/v1/traces?x=1").expect("url");
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "::1", 443, "/v1/traces?x=1")
        );
        let t = Target::parse("http://h").expect("url");
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        assert!(Target::parse("ftp://h/x").is_err());
        assert!(Target::parse("http://h:notaport/").is_err());
        assert!(Target::parse("http:///x").is_err());
    }

    #[test]
    fn url_errors_never_carry_credentials() {
        for url in [
            "https://user:pa55w0rd@col:notaport/v1/traces?api_key=s3cr3t",
            "https://user:pa55w0rd@[::1/v1/traces?api_key=s3cr3t",
            "https://user:pa55w0rd@/v1/traces?api_key=s3cr3t",
            "user:pa55w0rd@col/v1/traces?api_key=s3cr3t",
        ] {
            let e = Target::parse(url).expect_err("bad url");
            assert!(!e.contains("pa55w0rd") && !e.contains("s3cr3t"), "{e}");
        }
        // What the start-up and failure logs print.
        let shown = redact_url("https://user:pa55w0rd@col:4318/v1/traces?api_key=s3cr3t");
        assert_eq!(shown, "https://REDACTED@col:4318/v1/traces?REDACTED");
    }

    /// A local port nobody listens on: connections are refused.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn fast_cfg(endpoint: String) -> OtlpConfig {
        let mut cfg = OtlpConfig::new(endpoint, OtlpProtocol::HttpProtobuf);
        cfg.flush_interval = Duration::from_millis(20);
        cfg.timeout = Duration::from_millis(500);
        cfg
    }

    #[tokio::test]
    async fn full_queue_is_a_counted_drop_without_blocking() {
        // A current-thread runtime: the export task cannot run while this test does not
        // await, so the queue fills deterministically.
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg = fast_cfg(format!("http://127.0.0.1:{}/v1/traces", closed_port()));
        cfg.max_queue = 4;
        let exp = OtlpExporter::spawn(cfg, metrics.clone());
        let started = Instant::now();
        for _ in 0..100 {
            exp.send(&call());
        }
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(metrics.dropped_count(DROP_QUEUE_FULL), 96);
        exp.shutdown().await;
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 4);
    }

    /// What the in-process receiver saw.
    struct Received {
        request_line: String,
        content_type: String,
        tenant: String,
        body: ExportTraceServiceRequest,
    }

    /// A one-request OTLP/HTTP receiver answering `status`.
    async fn receiver(status: u16) -> (String, oneshot::Receiver<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = sock.read(&mut chunk).await.expect("read");
                assert!(n > 0, "closed before the head");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let len: usize = header("content-length").parse().expect("content-length");
            while buf.len() < head_end + len {
                let n = sock.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "closed before the body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = ExportTraceServiceRequest::decode(&buf[head_end..head_end + len])
                .expect("decode ExportTraceServiceRequest");
            let reply = ExportTraceServiceResponse::default().encode_to_vec();
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
                reply.len()
            );
            sock.write_all(resp.as_bytes()).await.expect("write");
            sock.write_all(&reply).await.expect("write");
            let _ = tx.send(Received {
                request_line: head.lines().next().unwrap_or_default().to_owned(),
                content_type: header("content-type"),
                tenant: header("x-tenant"),
                body,
            });
        });
        (format!("http://{addr}"), rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_to_an_http_receiver() {
        let (base, rx) = receiver(200).await;
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg = OtlpConfig::from_env_and_flags(Some(&base), None).expect("cfg");
        cfg.flush_interval = Duration::from_secs(3600); // only shutdown flushes
        cfg.headers.push(("x-tenant".into(), "t1".into()));
        cfg.service_name = "svc".into();
        let exp = OtlpExporter::spawn(cfg, metrics.clone());
        exp.send(&call());
        let mut c2 = call();
        c2.role = "server";
        exp.send(&c2);
        exp.shutdown().await;
        let got = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("in time")
            .expect("received");
        assert_eq!(got.request_line, "POST /v1/traces HTTP/1.1");
        assert_eq!(got.content_type, "application/x-protobuf");
        assert_eq!(got.tenant, "t1");
        let rs = &got.body.resource_spans[0];
        let res = rs.resource.as_ref().expect("resource");
        let keys: Vec<&str> = res.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert!(keys.contains(&"host.name"));
        assert_eq!(
            res.attributes[0].value.clone().and_then(|v| v.value),
            Some(s("svc"))
        );
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().map(|s| s.name.as_str()), Some("llmprobe"));
        assert_eq!(ss.spans.len(), 2);
        assert_eq!(ss.spans[0].name, "chat gpt-4o");
        assert_eq!(ss.spans[1].kind, SpanKind::Server as i32);
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 0);
        assert_eq!(metrics.dropped_count(DROP_QUEUE_FULL), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flushes_on_the_interval_and_counts_http_errors() {
        let (base, rx) = receiver(503).await;
        let metrics = Arc::new(SelfMetrics::unregistered());
        let exp = OtlpExporter::spawn(fast_cfg(format!("{base}/v1/traces")), metrics.clone());
        exp.send(&call());
        let got = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("flushed by the timer")
            .expect("received");
        assert_eq!(got.body.resource_spans[0].scope_spans[0].spans.len(), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.dropped_count(DROP_EXPORT_FAILED) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 1);
        exp.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_down_collector_is_counted_and_never_blocks() {
        let port = closed_port();
        for protocol in [OtlpProtocol::HttpProtobuf, OtlpProtocol::Grpc] {
            let metrics = Arc::new(SelfMetrics::unregistered());
            let mut cfg = fast_cfg(format!("http://127.0.0.1:{port}"));
            cfg.protocol = protocol;
            let exp = OtlpExporter::spawn(cfg, metrics.clone());
            let started = Instant::now();
            for _ in 0..10 {
                exp.send(&call());
            }
            assert!(
                started.elapsed() < Duration::from_millis(100),
                "send blocked"
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while metrics.dropped_count(DROP_EXPORT_FAILED) < 10 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                metrics.dropped_count(DROP_EXPORT_FAILED),
                10,
                "{protocol:?}"
            );
            let started = Instant::now();
            exp.send(&call());
            exp.shutdown().await;
            assert!(started.elapsed() < Duration::from_secs(2));
            assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 11);
            assert_eq!(metrics.dropped_count(DROP_QUEUE_FULL), 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_is_bounded_by_a_silent_collector() {
        // Accepts connections, never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg = fast_cfg(format!("http://{addr}/v1/traces"));
        cfg.timeout = Duration::from_millis(300);
        let exp = OtlpExporter::spawn(cfg, metrics.clone());
        exp.send(&call());
        let started = Instant::now();
        exp.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 1);
    }

    /// Against the Python receiver (tests/assets/otlp_receiver.py):
    /// `LLMPROBE_OTLP_TEST_ENDPOINT=http://127.0.0.1:PORT cargo test ... -- --ignored`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a running OTLP receiver (LLMPROBE_OTLP_TEST_ENDPOINT)"]
    async fn exports_to_an_external_receiver() {
        let Ok(endpoint) = std::env::var("LLMPROBE_OTLP_TEST_ENDPOINT") else {
            return;
        };
        let _ = env_logger::builder().is_test(true).try_init();
        let protocol = std::env::var("LLMPROBE_OTLP_TEST_PROTOCOL").ok();
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg =
            OtlpConfig::from_env_and_flags(Some(&endpoint), protocol.as_deref()).expect("cfg");
        cfg.headers.push(("x-tenant".into(), "t1".into()));
        let exp = OtlpExporter::spawn(cfg, metrics.clone());
        exp.send(&call());
        let mut c2 = call();
        c2.role = "server";
        c2.trace_id = None;
        c2.error_type = Some("timeout".into());
        c2.request_model = None;
        exp.send(&c2);
        exp.shutdown().await;
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 0);
    }
}
