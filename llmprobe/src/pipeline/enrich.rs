//! The enrich stage, on its own OS thread: every call gets its conversation ([`Conversations`]:
//! the matcher sees records in end order and the tracker's ticks, so idle conversations end
//! without traffic), server-role calls get what their server's GPUs did (the [`GpuJoin`] owns
//! the GPU history; sampler rounds and the tracker's in-flight snapshots arrive on this stage's
//! one channel, in order with the records), then every batch goes to the fan-out. Client-role calls are priced
//! ([`Pricer`]: `cost` from the price table). Then [`CallSteps`]: every call gets its span id and
//! its place in an agent loop's chain ([`ToolChains`]), and a call whose content was captured
//! (`--capture-content`) is redacted into its record ([`Render`]).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use crate::content::Render;
use crate::export::prometheus::ConversationMetrics;
use crate::gpu::Round;
use crate::gpu::correlate::InFlightSnapshot;
use crate::gpu::join::GpuJoin;
use crate::llm::LlmCall;
use crate::llm::conversation::{Matcher, MatcherConfig};
use crate::llm::pricing::Pricer;
use crate::llm::tool_chain::ToolChains;
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

/// The record steps after pricing and conversations, shared with replays: span ids and tool
/// chains, then content redaction.
#[derive(Default)]
pub struct CallSteps {
    chains: ToolChains,
    content: Option<Render>,
    /// Redactions and evictions already published.
    redactions_published: Vec<u64>,
    evicted_published: u64,
}

impl CallSteps {
    /// Steps that redact captured content with `content` (None: content capture is off).
    pub fn new(content: Option<Render>) -> Self {
        CallSteps {
            content,
            ..Default::default()
        }
    }

    /// Applies the steps to one call (in end order).
    pub fn apply(&mut self, call: &mut LlmCall, metrics: &SelfMetrics) {
        self.chains.observe(call);
        match &mut self.content {
            Some(r) => {
                if r.render(call) {
                    metrics.drop_for(DropReason::ContentTruncated);
                }
            }
            // Nothing is collected with content capture off; never written if it were.
            None => call.detail.content = None,
        }
    }

    /// Publishes the counts that grew since the last call.
    pub fn publish(&mut self, metrics: &SelfMetrics) {
        if self.chains.evicted > self.evicted_published {
            metrics.drop_by(
                DropReason::ToolLinkEvicted,
                self.chains.evicted - self.evicted_published,
            );
            self.evicted_published = self.chains.evicted;
        }
        if let Some(r) = &self.content {
            let counts = &r.counts.0;
            self.redactions_published.resize(counts.len(), 0);
            for (i, name) in r.rule_names().into_iter().enumerate() {
                let now = counts.get(i).copied().unwrap_or(0);
                if now > self.redactions_published[i] {
                    metrics.redacted(name, now - self.redactions_published[i]);
                    self.redactions_published[i] = now;
                }
            }
        }
    }
}

/// Runs until the tracker says it has stopped (the sampler holds a sender too, so a closed
/// channel alone never ends it); dropping `out` then ends the fan-out.
pub fn run(
    input: Receiver<EnrichInput>,
    mut gpu: Option<GpuJoin>,
    mut conversations: Conversations,
    mut pricer: Pricer,
    mut steps: CallSteps,
    out: SyncSender<Vec<LlmCall>>,
    metrics: Arc<SelfMetrics>,
) {
    while let Ok(msg) = input.recv() {
        match msg {
            EnrichInput::Calls(mut calls) => {
                calls.iter_mut().for_each(|c| pricer.price(c, &metrics));
                conversations.on_calls(&mut calls);
                if let Some(j) = gpu.as_mut() {
                    calls.iter_mut().for_each(|c| j.annotate(c));
                }
                calls.iter_mut().for_each(|c| steps.apply(c, &metrics));
                steps.publish(&metrics);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::conversation::ConversationKeys;
    use prometheus_client::registry::Registry;

    fn call(pid: u32, end_s: i64, history: u64, aborted: bool) -> LlmCall {
        let mut c: LlmCall = crate::llm::conversation::tests_support::call();
        c.pid = pid;
        c.aborted = aborted;
        c.detail.end_unix_ns = end_s * 1_000_000_000;
        c.detail.conversation = ConversationKeys {
            history: vec![(1, history)],
            ..Default::default()
        };
        c
    }

    #[test]
    fn conversations_publish_their_metrics_and_count_evictions() {
        let mut registry = Registry::default();
        let metrics = Arc::new(ConversationMetrics::new(&mut registry));
        let self_metrics = Arc::new(SelfMetrics::unregistered());
        let mut conv = Conversations::new(
            MatcherConfig {
                idle_ns: 10_000_000_000,
                max_total: 4,
                max_per_process: 2,
            },
            metrics,
            self_metrics.clone(),
        );
        // One conversation, regenerated, its last call aborted; three more of one process.
        let mut calls = vec![call(1, 1, 7, false), call(1, 2, 7, true)];
        calls.extend((0..3).map(|i| call(2, 3, 100 + i, false)));
        conv.on_calls(&mut calls);
        assert_eq!(calls[1].regeneration, Some(true));
        assert_eq!(
            self_metrics.dropped_count(DropReason::ConversationEvicted),
            1
        );
        conv.on_tick(100_000_000_000);
        let text = crate::export::metrics_http::exposition::encode_text(&registry);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains("role=\"client\""))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        assert_eq!(
            line("llmprobe_conversations_abandoned_total"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            line("llmprobe_conversation_regenerations_total"),
            Some(1.0),
            "{text}"
        );
        // Three conversations ended (one of process 2 was evicted, not observed).
        assert_eq!(
            line("llmprobe_conversation_turns_count"),
            Some(3.0),
            "{text}"
        );
        assert_eq!(line("llmprobe_conversation_turns_sum"), Some(3.0), "{text}");
        assert!(text.contains("llmprobe_conversations_active 0"), "{text}");
    }
}
