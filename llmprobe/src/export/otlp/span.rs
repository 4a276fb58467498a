//! Span mapping: one OTLP span per [`LlmCall`] (GenAI semantic-convention attributes, the app's
//! trace joined through its traceparent), and the request around a batch of spans. Pure: the
//! only state is the id generator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::llm::{LlmCall, MAX_FIELD_BYTES, cap_field};

/// Instrumentation scope and `telemetry.sdk.name`.
const SCOPE_NAME: &str = "llmprobe";

// ---------------------------------------------------------------------------------------------
// Ids

/// Trace and span ids: splitmix64 over an atomic counter, seeded from time, pid, host name and
/// an address (ASLR). Unique within a process (splitmix64 is a bijection of the counter); not
/// cryptographic, which ids need not be.
pub(super) struct IdGen {
    state: AtomicU64,
}

impl IdGen {
    pub(super) fn new() -> Self {
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

/// The MCP conventions' attributes of an MCP record (nothing for other records):
/// `mcp.method.name`, `mcp.session.id` (llmprobe's keyed id of the session, never the header's
/// value), `jsonrpc.request.id`, `rpc.response.status_code` (the JSON-RPC error code),
/// `gen_ai.tool.name` for a tool call, `network.transport` and `network.protocol.name`.
fn mcp_attributes(call: &LlmCall, a: &mut Vec<KeyValue>) {
    let Some(method) = call.mcp_method.as_deref() else {
        return;
    };
    a.push(kv("mcp.method.name", str_v(method)));
    if let Some(s) = call.mcp_session_id.as_deref() {
        a.push(kv("mcp.session.id", str_v(s)));
    }
    if let Some(id) = call.jsonrpc_request_id.as_deref() {
        a.push(kv("jsonrpc.request.id", str_v(id)));
    }
    if let Some(code) = call.jsonrpc_error_code {
        a.push(kv("rpc.response.status_code", str_v(&code.to_string())));
    }
    // `gen_ai.tool.name` comes with the other tool attributes (`tool_and_content_attributes`):
    // an attribute key appears once.
    a.push(kv("network.transport", str_v("tcp")));
    a.push(kv("network.protocol.name", str_v("http")));
}

/// The span of one call: name `{operation} {request_model}`, kind from the role, a child of the
/// app's span when the request carried a traceparent, GenAI semantic-convention attributes.
pub(super) fn call_to_span(call: &LlmCall, ids: &IdGen) -> Span {
    let d = &call.detail;
    let name = match &call.request_model {
        _ if crate::llm::mcp::is_mcp(call) => crate::llm::mcp::span_name(call).unwrap_or_default(),
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

    // A valid traceparent makes this span a child of the app's span (a remote parent); a
    // gateway's upstream call is a child of the gateway call, in the trace the tracker chose.
    let own_trace = call.trace_id.as_deref().and_then(|t| parse_hex_id(t, 16));
    let remote = own_trace.is_some();
    let trace = own_trace.or_else(|| d.trace_id.as_deref().and_then(|t| parse_hex_id(t, 16)));
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
    let flags = if parent_span_id.is_empty() || !remote {
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
    // MCP: `gen_ai.operation.name` only for a tool call (the conventions), see `mcp_attributes`.
    s(
        "gen_ai.operation.name",
        Some(call.operation).filter(|o| !crate::llm::mcp::is_mcp(call) || *o == "execute_tool"),
    );
    s("gen_ai.provider.name", Some(&call.provider));
    s("gen_ai.request.model", call.request_model.as_deref());
    s("gen_ai.response.model", call.response_model.as_deref());
    s("gen_ai.response.id", call.request_id.as_deref());
    s("gen_ai.conversation.id", call.conversation_id.as_deref());
    s("llmprobe.conversation.source", call.conversation_source);
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
    push(
        "llmprobe.conversation.turn",
        call.turn.map(|t| int(u64::from(t))),
    );
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
    // Cost (price table) and, beside it, what the server reported about itself (Dify's price
    // and latency), each with its currency; who spent it: the API-key fingerprint.
    push("llmprobe.cost", call.cost.map(Value::DoubleValue));
    push(
        "llmprobe.cost.currency",
        call.cost_currency.as_deref().map(str_v),
    );
    push(
        "llmprobe.reported_cost",
        call.reported_cost.map(Value::DoubleValue),
    );
    push(
        "llmprobe.reported_cost.currency",
        call.reported_cost_currency.as_deref().map(str_v),
    );
    push(
        "llmprobe.reported_latency",
        call.reported_latency_s.map(Value::DoubleValue),
    );
    push(
        "llmprobe.workflow.nodes_dropped",
        (d.workflow_nodes_dropped > 0).then(|| int(d.workflow_nodes_dropped)),
    );
    push("llmprobe.api_key.id", call.api_key_id.as_deref().map(str_v));
    // Where the time to first token went (seconds), and the gateway join's ids.
    for (key, v) in [
        ("llmprobe.connect", call.connect_s),
        ("llmprobe.tls_handshake", call.tls_handshake_s),
        ("llmprobe.request_upload", call.request_upload_s),
        ("llmprobe.server.queue", call.server_queue_s),
        ("llmprobe.server.prefill", call.server_prefill_s),
        ("llmprobe.server.processing", call.server_processing_s),
        ("llmprobe.gateway_overhead", call.gateway_overhead_s),
    ] {
        push(key, v.map(Value::DoubleValue));
    }
    push(
        "llmprobe.upstream_request_id",
        call.upstream_request_id.as_deref().map(str_v),
    );
    push(
        "llmprobe.gateway_request_id",
        call.gateway_request_id.as_deref().map(str_v),
    );
    tool_and_content_attributes(call, &mut a);

    mcp_attributes(call, &mut a);

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
        span_id: d
            .span_id
            .as_deref()
            .and_then(|s| parse_hex_id(s, 8))
            .unwrap_or_else(|| ids.span_id()),
        parent_span_id,
        flags,
        name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: a,
        events,
        links: links(call),
        status: Some(status),
        ..Default::default()
    }
}

/// The span's links: the earlier calls of its agent loop (`follows_span_ids`).
fn links(call: &LlmCall) -> Vec<Link> {
    call.detail
        .links
        .iter()
        .filter_map(|(trace, span)| {
            Some(Link {
                trace_id: parse_hex_id(trace, 16)?,
                span_id: parse_hex_id(span, 8)?,
                attributes: vec![kv("llmprobe.link.kind", str_v("tool_result"))],
                flags: 0x101,
                ..Default::default()
            })
        })
        .collect()
}

/// Tool use (`gen_ai.tool.name` etc.) and the opt-in content attributes.
fn tool_and_content_attributes(call: &LlmCall, a: &mut Vec<KeyValue>) {
    let strings = |list: &[String]| {
        Value::ArrayValue(ArrayValue {
            values: list
                .iter()
                .map(|s| AnyValue {
                    value: Some(str_v(s)),
                })
                .collect(),
        })
    };
    if let Some(names) = call.tool_names.as_deref().filter(|n| !n.is_empty()) {
        // One tool (an execute_tool record, or one tool called): the convention's string;
        // several: every name.
        if names.len() == 1 {
            a.push(kv("gen_ai.tool.name", str_v(&names[0])));
        }
        a.push(kv("llmprobe.tool.names", strings(names)));
    }
    if let Some(n) = call.tool_calls {
        a.push(kv("llmprobe.tool.calls", int(u64::from(n))));
    }
    if let Some(n) = call.tool_definitions {
        a.push(kv("llmprobe.tool.definitions", int(u64::from(n))));
    }
    if let Some(f) = call.follows_span_ids.as_deref() {
        a.push(kv("llmprobe.follows_span_ids", strings(f)));
    }
    for (key, v) in [
        ("gen_ai.system_instructions", &call.system_instructions),
        ("gen_ai.input.messages", &call.input_messages),
        ("gen_ai.output.messages", &call.output_messages),
    ] {
        // Bounded by --content-max-bytes when it was captured, not by the field cap.
        if let Some(v) = v {
            a.push(kv(key, Value::StringValue(v.0.clone())));
        }
    }
}

/// One child span per workflow node the call reported (Dify's `node_started` / `node_finished`):
/// in the call's trace, parented by the call's span, named `workflow_node {node_type}`, kind
/// internal (work the server did), with the node's type, status and the server's own elapsed
/// time. A node with no end seen ends with the call.
pub(super) fn node_spans(call: &LlmCall, parent: &Span, ids: &IdGen) -> Vec<Span> {
    let d = &call.detail;
    d.workflow_nodes
        .iter()
        .map(|n| {
            let start = n.start_ns.max(0) as u64;
            let end = n
                .end_ns
                .unwrap_or(d.end_unix_ns)
                .max(0)
                .max(n.start_ns.max(0)) as u64;
            let mut attributes = vec![
                kv("gen_ai.provider.name", str_v(&call.provider)),
                kv("llmprobe.workflow.node_type", str_v(&n.node_type)),
            ];
            if let Some(s) = &n.status {
                attributes.push(kv("llmprobe.workflow.node_status", str_v(s)));
            }
            if let Some(e) = n.elapsed_s {
                attributes.push(kv("llmprobe.reported_latency", Value::DoubleValue(e)));
            }
            let failed = matches!(n.status.as_deref(), Some("failed" | "exception"));
            Span {
                trace_id: parent.trace_id.clone(),
                span_id: ids.span_id(),
                parent_span_id: parent.span_id.clone(),
                // The parent is this process's own span: not remote.
                flags: 0x101,
                name: cap_field(&format!("workflow_node {}", n.node_type), MAX_FIELD_BYTES)
                    .into_owned(),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                status: Some(if failed {
                    Status {
                        code: StatusCode::Error as i32,
                        message: "failed".to_owned(),
                    }
                } else {
                    Status::default()
                }),
                ..Default::default()
            }
        })
        .collect()
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

/// An export request with the resource (`service.name`, `host.name`, the SDK) and scope, and no
/// spans yet: each batch is sent in a clone of it.
pub(super) fn request_template(service_name: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(service_name)),
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
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::llm::CallDetail;

    const T0: i64 = 1_780_000_000_000_000_000;

    /// A streamed client call with every field set, child of an app span.
    pub(in crate::export::otlp) fn call() -> LlmCall {
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
                ..CallDetail::default()
            },
            ..Default::default()
        }
    }

    fn attrs(span: &Span) -> HashMap<String, Value> {
        span.attributes
            .iter()
            .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
            .collect()
    }

    pub(in crate::export::otlp) fn s(v: &str) -> Value {
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
    fn span_carries_cost_reported_cost_and_key_id() {
        let ids = IdGen::new();
        let mut c = call();
        c.cost = Some(0.0125);
        c.cost_currency = Some("USD".into());
        c.reported_cost = Some(0.5);
        c.reported_cost_currency = Some("CNY".into());
        c.api_key_id = Some("0123456789abcdef".into());
        let a = attrs(&call_to_span(&c, &ids));
        assert_eq!(a["llmprobe.cost"], Value::DoubleValue(0.0125));
        assert_eq!(a["llmprobe.cost.currency"], s("USD"));
        assert_eq!(a["llmprobe.reported_cost"], Value::DoubleValue(0.5));
        assert_eq!(a["llmprobe.reported_cost.currency"], s("CNY"));
        assert_eq!(a["llmprobe.api_key.id"], s("0123456789abcdef"));
        let a = attrs(&call_to_span(&call(), &ids));
        assert!(
            !a.keys()
                .any(|k| k.contains("cost") || k.contains("api_key")),
            "{a:?}"
        );
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
    fn workflow_nodes_become_child_spans_and_reported_figures_attributes() {
        use crate::llm::WorkflowNode;
        let ids = IdGen::new();
        let mut c = call();
        c.provider = "dify".into();
        c.reported_cost = Some(0.25);
        c.reported_cost_currency = Some("USD".into());
        c.reported_latency_s = Some(1.25);
        c.detail.workflow_nodes = vec![
            WorkflowNode {
                node_type: "llm".into(),
                status: Some("succeeded".into()),
                start_ns: T0 + 100,
                end_ns: Some(T0 + 900),
                elapsed_s: Some(0.5),
            },
            WorkflowNode {
                node_type: "code".into(),
                status: Some("failed".into()),
                start_ns: T0 + 1_000,
                end_ns: None,
                elapsed_s: None,
            },
        ];
        c.detail.workflow_nodes_dropped = 3;
        let span = call_to_span(&c, &ids);
        let a = attrs(&span);
        assert_eq!(a["llmprobe.reported_cost"], Value::DoubleValue(0.25));
        assert_eq!(a["llmprobe.reported_cost.currency"], s("USD"));
        assert_eq!(a["llmprobe.reported_latency"], Value::DoubleValue(1.25));
        assert_eq!(a["llmprobe.workflow.nodes_dropped"], Value::IntValue(3));
        let kids = node_spans(&c, &span, &ids);
        assert_eq!(kids.len(), 2);
        for k in &kids {
            assert_eq!(k.trace_id, span.trace_id);
            assert_eq!(k.parent_span_id, span.span_id);
            assert_ne!(k.span_id, span.span_id);
            assert_eq!(k.kind, SpanKind::Internal as i32);
        }
        assert_eq!(kids[0].name, "workflow_node llm");
        assert_eq!(
            (kids[0].start_time_unix_nano, kids[0].end_time_unix_nano),
            ((T0 + 100) as u64, (T0 + 900) as u64)
        );
        let a0 = attrs(&kids[0]);
        assert_eq!(a0["llmprobe.workflow.node_type"], s("llm"));
        assert_eq!(a0["llmprobe.workflow.node_status"], s("succeeded"));
        assert_eq!(a0["llmprobe.reported_latency"], Value::DoubleValue(0.5));
        // No end seen: ends with the call; failed: an error status.
        assert_eq!(kids[1].end_time_unix_nano, c.detail.end_unix_ns as u64);
        assert_eq!(
            kids[1].status.as_ref().map(|s| s.code),
            Some(StatusCode::Error as i32)
        );
        // Without nodes or reported figures: nothing added.
        let plain = call();
        assert!(node_spans(&plain, &span, &ids).is_empty());
        let a = attrs(&call_to_span(&plain, &ids));
        assert!(!a.contains_key("llmprobe.reported_cost"), "{a:?}");
        assert!(!a.contains_key("llmprobe.workflow.nodes_dropped"), "{a:?}");
    }

    #[test]
    fn ttft_parts_and_gateway_ids_are_attributes() {
        let mut c = call();
        let a = attrs(&call_to_span(&c, &IdGen::new()));
        assert!(!a.contains_key("llmprobe.connect"));
        c.connect_s = Some(0.003);
        c.tls_handshake_s = Some(0.042);
        c.gateway_overhead_s = Some(0.05);
        c.upstream_request_id = Some("req-2".into());
        let a = attrs(&call_to_span(&c, &IdGen::new()));
        assert_eq!(a["llmprobe.connect"], Value::DoubleValue(0.003));
        assert_eq!(a["llmprobe.tls_handshake"], Value::DoubleValue(0.042));
        assert_eq!(a["llmprobe.gateway_overhead"], Value::DoubleValue(0.05));
        assert_eq!(a["llmprobe.upstream_request_id"], s("req-2"));
        assert!(!a.contains_key("llmprobe.gateway_request_id"));
    }

    #[test]
    fn conversation_attributes() {
        let mut c = call();
        let a = attrs(&call_to_span(&c, &IdGen::new()));
        assert!(!a.contains_key("gen_ai.conversation.id"));
        c.conversation_id = Some("0123456789abcdef".into());
        c.conversation_source = Some("history");
        c.turn = Some(3);
        let a = attrs(&call_to_span(&c, &IdGen::new()));
        assert_eq!(a["gen_ai.conversation.id"], s("0123456789abcdef"));
        assert_eq!(a["llmprobe.conversation.source"], s("history"));
        assert_eq!(a["llmprobe.conversation.turn"], Value::IntValue(3));
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

    #[test]
    fn a_gateway_pair_shares_the_trace_the_tracker_chose() {
        let ids = IdGen::new();
        let mut gw = call();
        gw.trace_id = None;
        gw.detail.parent_span_id = None;
        gw.detail.span_id = Some("1122334455667788".into());
        gw.detail.trace_id = Some("aabbccddeeff00112233445566778899".into());
        let g = call_to_span(&gw, &ids);
        assert_eq!(
            g.span_id,
            parse_hex_id("1122334455667788", 8).unwrap_or_default()
        );
        assert_eq!(g.trace_id[0], 0xaa);
        assert!(g.parent_span_id.is_empty());
        let mut up = call();
        up.trace_id = None;
        up.detail.parent_span_id = gw.detail.span_id.clone();
        up.detail.trace_id = gw.detail.trace_id.clone();
        let u = call_to_span(&up, &ids);
        assert_eq!(u.trace_id, g.trace_id);
        assert_eq!(u.parent_span_id, g.span_id);
        assert_ne!(u.span_id, g.span_id);
        // A local parent, not a remote one.
        assert_eq!(u.flags, 0x101);
        // A record's own traceparent wins over the tracker's trace.
        up.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        assert_eq!(call_to_span(&up, &ids).trace_id[0], 0x4b);
    }
}
