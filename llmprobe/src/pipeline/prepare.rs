//! The prepare stage: masks secrets (by [`crate::secrets`]'s rules, failing closed) and names
//! each event's process, for live runs and replays alike. Nothing after it sees an unmasked
//! byte; its counts become self-metrics here.

use std::sync::Arc;

use crate::probes::EventPreparer;
use crate::probes::events::ProbeEvent;
use crate::probes::scrub::ScrubStats;
use crate::telemetry::{DropReason, SelfMetrics};

/// See the module docs.
pub struct Prepare {
    inner: EventPreparer,
    published: ScrubStats,
    metrics: Arc<SelfMetrics>,
}

impl Prepare {
    /// `resolve_names`: read process names and containers from /proc (live runs; a replay keeps
    /// the names in the capture).
    pub fn new(resolve_names: bool, metrics: Arc<SelfMetrics>) -> Self {
        Prepare {
            inner: EventPreparer::new(resolve_names),
            published: ScrubStats::default(),
            metrics,
        }
    }

    /// Prepares one event in place.
    pub fn event(&mut self, ev: &mut ProbeEvent) {
        self.inner.prepare(ev);
    }

    /// Turns what the masker counted since the last call into self-metrics.
    pub fn publish(&mut self) {
        let now = self.inner.scrub_stats();
        let seen = self.published;
        self.metrics
            .secrets_masked
            .inc_by(now.masked_values - seen.masked_values);
        // Pieces masked to the line end because the masker's state was lost.
        if now.lost_states > seen.lost_states {
            self.metrics.drop_by(
                DropReason::ScrubStateLost,
                now.lost_states - seen.lost_states,
            );
        }
        if now.evicted_states > seen.evicted_states {
            self.metrics.drop_by(
                DropReason::ScrubStateEvicted,
                now.evicted_states - seen.evicted_states,
            );
        }
        if now.api_key_prefix_only > seen.api_key_prefix_only {
            self.metrics.drop_by(
                DropReason::ApiKeyPrefixOnly,
                now.api_key_prefix_only - seen.api_key_prefix_only,
            );
        }
        if now.api_key_table_full > seen.api_key_table_full {
            self.metrics.drop_by(
                DropReason::ApiKeyTableFull,
                now.api_key_table_full - seen.api_key_table_full,
            );
        }
        self.published = now;
    }
}
