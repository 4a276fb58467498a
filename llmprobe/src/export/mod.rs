//! Stage 5: exporters. They take finished [`LlmCall`] records and deliver them without ever
//! holding up the stages before them:
//!
//! - [`jsonl`]: one JSON line per call, to a file (rotated by size) or stdout.
//! - [`prometheus`]: the GenAI and llmprobe call metrics, kept in the agent's registry (bounded
//!   series), served by [`metrics_http`] at `/metrics`, whose [`metrics_http::exposition`]
//!   module encodes the registry (Prometheus text or OpenMetrics, by the scraper's `Accept`).
//! - [`otlp`]: one OpenTelemetry span per call, batched and exported over OTLP by a task on the
//!   tokio runtime, through a bounded queue.
//!
//! The three record sinks share one contract, [`CallSink`]: the pipeline hands every sink each
//! batch of finished calls, in order, after the GPU enrichment (which needs the calls' GPU
//! labels, [`prometheus::gpu_server_labels`], not the sinks), and closes them once at the end.
//! A sink never blocks on the network and never fails the pipeline: what it cannot deliver is
//! counted in `llmprobe_dropped_total{reason=...}` and logged at most once a minute.

use crate::llm::LlmCall;

pub mod jsonl;
pub mod metrics_http;
pub mod otlp;
pub mod prometheus;

/// A destination for finished calls (JSONL, Prometheus metrics, OTLP spans).
///
/// The pipeline owns its sinks (one thread or task drives them in turn): it calls
/// [`CallSink::emit`] with every batch of finished calls, then [`CallSink::close`] once.
pub trait CallSink: Send {
    /// A short name for logs (`jsonl`, `metrics`, `otlp`).
    fn name(&self) -> &'static str;

    /// Delivers a batch of finished calls, in order. Never blocks on the network (a slow or
    /// absent collector costs counted drops, not time) and never fails: a record the sink
    /// cannot deliver is counted in `llmprobe_dropped_total` under the sink's reason
    /// (`jsonl_write_failed`, `otlp_queue_full`, `otlp_export_failed`) and logged at most once
    /// a minute. Records emitted after `close` are counted the same way.
    fn emit(&mut self, calls: &[LlmCall]);

    /// Flushes what the sink holds and stops its workers; the wait is bounded (OTLP: its export
    /// timeout and a little more; what is not exported by then is counted as dropped). Called
    /// once, from a plain OS thread: a sink whose worker runs on the tokio runtime blocks the
    /// calling thread until the worker is done, so it must not be a thread that runtime needs.
    /// A second call does nothing.
    fn close(&mut self);
}
