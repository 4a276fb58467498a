//! The enrich stage, on its own OS thread: server-role calls get what their server's GPUs did
//! (the [`GpuJoin`] owns the GPU history; sampler rounds and the tracker's in-flight snapshots
//! arrive on this stage's one channel, in order with the records), then every batch goes to the
//! fan-out. Every record is priced first ([`Pricer`]: `cost` from the price table).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use crate::gpu::Round;
use crate::gpu::correlate::InFlightSnapshot;
use crate::gpu::join::GpuJoin;
use crate::llm::LlmCall;
use crate::llm::pricing::Pricer;
use crate::telemetry::{DropReason, SelfMetrics};

/// What arrives at the enrich stage.
pub enum EnrichInput {
    /// Finished records from the tracker.
    Calls(Vec<LlmCall>),
    /// Servers with calls in flight, from the tracker (after every record it sent before).
    InFlight(InFlightSnapshot),
    /// A GPU sampling round, from the sampler.
    Round(Round),
    /// The tracker has stopped.
    End,
}

impl From<Round> for EnrichInput {
    fn from(r: Round) -> Self {
        EnrichInput::Round(r)
    }
}

/// Runs until the tracker says it has stopped (the sampler holds a sender too, so a closed
/// channel alone never ends it); dropping `out` then ends the fan-out.
pub fn run(
    input: Receiver<EnrichInput>,
    mut gpu: Option<GpuJoin>,
    mut pricer: Pricer,
    out: SyncSender<Vec<LlmCall>>,
    metrics: Arc<SelfMetrics>,
) {
    while let Ok(msg) = input.recv() {
        match msg {
            EnrichInput::Calls(mut calls) => {
                calls.iter_mut().for_each(|c| pricer.price(c, &metrics));
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
                if let Some(j) = gpu.as_mut() {
                    j.on_snapshot(s);
                }
            }
            EnrichInput::Round(r) => {
                if let Some(j) = gpu.as_mut() {
                    j.on_round(r);
                }
            }
            EnrichInput::End => return,
        }
    }
}
