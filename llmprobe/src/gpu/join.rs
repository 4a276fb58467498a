//! The GPU join, owned by the enrich stage: it receives the sampler's rounds and the tracker's
//! in-flight snapshots, keeps the history (no lock: one owner), exports the `llmprobe_gpu_*`
//! metrics, and gives each server-role call what its server's GPUs did during the call.
//!
//! Ordering is the invariant that replaces any counting between stages: the tracker sends its
//! records and its in-flight snapshots down one channel, so when a snapshot arrives every record
//! sent before it has already been accounted here.

use std::sync::Arc;

use super::correlate::{GpuHistory, InFlightSnapshot, ProcRelation, server_gpus};
use super::efficiency::{CallUse, ServerKey};
use super::{GpuMetrics, Round, SamplerConfig};
use crate::export::prometheus::gpu_server_labels;
use crate::llm::LlmCall;

/// Rounds kept for the join: ten minutes of them.
const HISTORY_SECS: f64 = 600.0;

/// See the module docs.
pub struct GpuJoin {
    history: GpuHistory,
    metrics: Arc<GpuMetrics>,
    grace_ns: i64,
}

impl GpuJoin {
    /// A join for rounds sampled as `cfg` says.
    pub fn new(cfg: &SamplerConfig, metrics: Arc<GpuMetrics>) -> Self {
        let mut history =
            GpuHistory::new((HISTORY_SECS / cfg.interval.as_secs_f64().max(0.05)) as usize);
        history.set_interval(cfg.interval);
        GpuJoin {
            history,
            metrics,
            grace_ns: i64::try_from(cfg.settle_grace.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    /// The history (tests).
    pub fn history_mut(&mut self) -> &mut GpuHistory {
        &mut self.history
    }

    /// A new snapshot of the servers with calls in flight.
    pub fn on_snapshot(&mut self, snapshot: InFlightSnapshot) {
        self.history.add_snapshot(snapshot);
    }

    /// One sampling round: exported, kept, the GPUs of servers newly in flight found, settled
    /// windows published.
    pub fn on_round(&mut self, (now, sampled): Round) {
        let samples = match sampled {
            Ok(s) => s,
            Err(_) => {
                // The sampler logs the failure once; no stale figures stay.
                self.metrics.available.set(0);
                self.metrics.clear_all();
                return;
            }
        };
        self.metrics.clear_processes();
        self.metrics.record(&samples);
        self.metrics.available.set(1);
        let h = &mut self.history;
        h.push(now, samples);
        for pid in h.servers_to_look_up(now) {
            let container = crate::probes::container_of(pid);
            let gpus = server_gpus(h, &ProcRelation, pid, container.as_deref()).unwrap_or_default();
            if gpus.is_empty() {
                h.note_no_gpu(pid, now);
                continue;
            }
            if let Some(&since) = h.in_flight_since().get(&pid) {
                h.efficiency.on_server_in_flight(pid, gpus, since);
            }
        }
        let snapshot = h.settled_snapshot().unwrap_or(InFlightSnapshot {
            taken_at: now,
            ..Default::default()
        });
        let figures = h.efficiency.publish(
            now.min(snapshot.taken_at).saturating_sub(self.grace_ns),
            &snapshot.since,
        );
        self.metrics.record_efficiency(&figures);
        let lost = h.efficiency.tokens_unaccounted - self.metrics.tokens_unaccounted.get();
        if lost > 0.0 && lost.is_finite() {
            self.metrics.tokens_unaccounted.inc_by(lost);
        }
    }

    /// A server-role call gets what its server's GPUs did during it, and counts in its server's
    /// energy and throughput.
    pub fn annotate(&mut self, call: &mut LlmCall) {
        if call.role != "server" {
            return;
        }
        let Some(gpus) = server_gpus(
            &mut self.history,
            &ProcRelation,
            call.pid,
            call.container_id.as_deref(),
        ) else {
            return;
        };
        let d = &call.detail;
        if let Some(w) = self.history.window(&gpus, d.start_unix_ns, d.end_unix_ns) {
            call.gpu_util_mean = w.util_mean;
            call.gpu_mem_used_bytes = w.mem_used_bytes;
            call.gpu_power_mean_w = w.power_mean_w;
        }
        let labels = gpu_server_labels(call);
        self.history.efficiency.on_call(CallUse {
            server: ServerKey { pid: call.pid },
            server_labels: labels.server,
            model: labels.model,
            gpus,
            start_ns: d.start_unix_ns,
            first_output_ns: d.first_chunk_unix_ns,
            end_ns: d.end_unix_ns,
            output_tokens: call.output_tokens.unwrap_or(0),
        });
    }
}
