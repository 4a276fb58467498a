//! Stage 5: exporters. Each takes finished [`crate::llm::LlmCall`] records (or the metric
//! registry) and delivers them without ever blocking the pipeline: JSON lines ([`jsonl`]) and the
//! Prometheus endpoint ([`metrics_http`]).

pub mod jsonl;
pub mod metrics_http;
pub mod otlp;
pub mod prometheus;
