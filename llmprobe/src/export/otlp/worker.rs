//! The export task: takes spans from the bounded queue, batches them (up to `max_batch` spans
//! or 3 MiB encoded, or whatever came within `flush_interval`) and exports each batch once through the
//! [`Transport`]. A failed batch is dropped: every span counted under `otlp_export_failed`, the
//! failure logged at most once a minute, recovery logged once. No retries. After shutdown began
//! every export must end by the shared deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use log::{info, warn};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

use super::DROP_EXPORT_FAILED;
use super::config::OtlpConfig;
use super::span::request_template;
use super::transport::Transport;
use crate::secrets::{log_safe, redact_url};
use crate::telemetry::{DropReason, SelfMetrics};

/// Failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// State shared between the handle and the export task.
pub(super) struct Shared {
    /// Set by `shutdown`: exports must finish by then.
    pub(super) deadline: OnceLock<Instant>,
    /// Spans accepted into the queue and not yet exported or dropped.
    pub(super) pending: AtomicU64,
}

/// Counts `n` spans as dropped for `reason`.
pub(super) fn count_drops(metrics: &SelfMetrics, reason: DropReason, n: u64) {
    metrics.drop_by(reason, n);
}

/// The export task.
pub(super) struct Worker {
    cfg: OtlpConfig,
    metrics: Arc<SelfMetrics>,
    shared: Arc<Shared>,
    transport: Transport,
    /// Resource and scope, with no spans.
    request_template: ExportTraceServiceRequest,
    /// When a failure was last logged, failures not logged since, and whether the last export
    /// failed.
    last_log: Option<Instant>,
    suppressed: u64,
    failing: bool,
}

impl Worker {
    pub(super) fn new(
        cfg: OtlpConfig,
        metrics: Arc<SelfMetrics>,
        shared: Arc<Shared>,
        transport: Transport,
    ) -> Worker {
        Worker {
            request_template: request_template(&cfg.service_name),
            cfg,
            metrics,
            shared,
            transport,
            last_log: None,
            suppressed: 0,
            failing: false,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Span>) {
        /// Encoded span bytes per export request: under the 4 MiB gRPC default with room for
        /// the resource and the request's framing.
        const MAX_BATCH_BYTES: usize = 3 << 20;
        let max_batch = self.cfg.max_batch.max(1);
        let mut batch: Vec<Span> = Vec::with_capacity(max_batch.min(1024));
        // Encoded bytes of the batch: spans with captured content are large, and a collector
        // refuses a request past its limit (gRPC: 4 MiB) with every span in it.
        let mut batch_bytes = 0usize;
        let mut ticker =
            tokio::time::interval(self.cfg.flush_interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(span) => {
                        let size = prost::Message::encoded_len(&span);
                        if !batch.is_empty() && batch_bytes + size > MAX_BATCH_BYTES {
                            self.export(&mut batch).await;
                            batch_bytes = 0;
                            ticker.reset();
                        }
                        batch_bytes += size;
                        batch.push(span);
                        if batch.len() >= max_batch {
                            self.export(&mut batch).await;
                            batch_bytes = 0;
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
                        batch_bytes = 0;
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
