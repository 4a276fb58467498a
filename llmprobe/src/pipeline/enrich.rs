//! The enrich stage, on its own OS thread: every call gets its conversation ([`Conversations`]:
//! the matcher sees records in end order and the tracker's ticks, so idle conversations end
//! without traffic), server-role calls get what their server's GPUs did (the [`GpuJoin`] owns
//! the GPU history; sampler rounds and the tracker's in-flight snapshots arrive on this stage's
//! one channel, in order with the records), then every batch goes to the fan-out.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use crate::export::prometheus::ConversationMetrics;
use crate::gpu::Round;
use crate::gpu::correlate::InFlightSnapshot;
use crate::gpu::join::GpuJoin;
use crate::llm::LlmCall;
use crate::llm::conversation::{Matcher, MatcherConfig};
use crate::telemetry::{DropReason, SelfMetrics};

/// What arrives at the enrich stage.
pub enum EnrichInput {
    /// Finished records from the tracker.
    Calls(Vec<LlmCall>),
    /// Servers with calls in flight, from the tracker (after every record it sent before).
    InFlight(InFlightSnapshot),
    /// A GPU sampling round, from the sampler.
    Round(Round),
    /// The tracker's clock (Unix ns, the pipeline's clock), every 500 ms when no in-flight
    /// snapshot is sent: idle conversations end.
    Tick(i64),
    /// The tracker has stopped.
    End,
}

impl From<Round> for EnrichInput {
    fn from(r: Round) -> Self {
        EnrichInput::Round(r)
    }
}

/// The conversation matcher and its metrics (see [`crate::llm::conversation`]).
pub struct Conversations {
    matcher: Matcher,
    metrics: Arc<ConversationMetrics>,
    self_metrics: Arc<SelfMetrics>,
    /// Evictions already counted in the self-metrics.
    evicted: u64,
}

impl Conversations {
    /// A matcher bounded as `cfg` says.
    pub fn new(
        cfg: MatcherConfig,
        metrics: Arc<ConversationMetrics>,
        self_metrics: Arc<SelfMetrics>,
    ) -> Self {
        Conversations {
            matcher: Matcher::new(cfg),
            metrics,
            self_metrics,
            evicted: 0,
        }
    }

    /// Gives each call of a batch (in end order) its conversation.
    pub fn on_calls(&mut self, calls: &mut [LlmCall]) {
        let mut latest = None;
        for c in calls.iter_mut() {
            if let Some(m) = self.matcher.observe(c)
                && m.regeneration
            {
                self.metrics.regeneration(c.role, &c.provider);
            }
            latest = latest.max(Some(c.detail.end_unix_ns));
        }
        if let Some(now) = latest {
            self.on_tick(now);
        }
    }

    /// Ends the conversations idle at `now` and publishes what changed.
    pub fn on_tick(&mut self, now: i64) {
        for e in self.matcher.expire(now) {
            self.metrics.ended(&e);
        }
        self.metrics.set_active(self.matcher.len());
        let evicted = self.matcher.evicted;
        if evicted > self.evicted {
            self.self_metrics
                .drop_by(DropReason::ConversationEvicted, evicted - self.evicted);
            self.evicted = evicted;
        }
    }
}

/// Runs until the tracker says it has stopped (the sampler holds a sender too, so a closed
/// channel alone never ends it); dropping `out` then ends the fan-out.
pub fn run(
    input: Receiver<EnrichInput>,
    mut gpu: Option<GpuJoin>,
    mut conversations: Conversations,
    out: SyncSender<Vec<LlmCall>>,
    metrics: Arc<SelfMetrics>,
) {
    while let Ok(msg) = input.recv() {
        match msg {
            EnrichInput::Calls(mut calls) => {
                conversations.on_calls(&mut calls);
                if let Some(j) = gpu.as_mut() {
                    calls.iter_mut().for_each(|c| j.annotate(c));
                }
                match out.try_send(calls) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => metrics.drop_for(DropReason::SinkBackpressure),
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
            EnrichInput::InFlight(s) => {
                conversations.on_tick(s.taken_at);
                if let Some(j) = gpu.as_mut() {
                    j.on_snapshot(s);
                }
            }
            EnrichInput::Round(r) => {
                if let Some(j) = gpu.as_mut() {
                    j.on_round(r);
                }
            }
            EnrichInput::Tick(now) => conversations.on_tick(now),
            EnrichInput::End => return,
        }
    }
}
