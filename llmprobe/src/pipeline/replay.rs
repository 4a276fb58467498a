//! Offline replay: captured events through the same prepare and track stages as a live run, so
//! a capture reproduces a live run's records exactly. Streams: one event and the open calls in
//! memory, not the capture.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::prepare::Prepare;
use crate::clock::Clock;
use crate::conntrack::{TrackerConfig, TrackerOutput};
use crate::export::jsonl::{JsonlTarget, JsonlWriter};
use crate::llm::LlmCall;
use crate::llm::tracking;
use crate::probes::capture::CaptureReader;
use crate::probes::events::ProbeEvent;
use crate::telemetry::SelfMetrics;

/// Runs events through the pipeline offline. Returns the records in order.
pub fn replay_events(
    clock: Clock,
    events: impl IntoIterator<Item = ProbeEvent>,
    cfg: TrackerConfig,
    metrics: Arc<SelfMetrics>,
) -> Vec<LlmCall> {
    let mut calls = Vec::new();
    let mut sink = |c: &mut Vec<LlmCall>| {
        calls.append(c);
        Ok(())
    };
    match replay_into(clock, events.into_iter().map(Ok), cfg, metrics, &mut sink) {
        Ok(()) => calls,
        Err(e) => unreachable!("neither the events nor the sink fail: {e}"),
    }
}

/// The replay loop: records are handed to `sink` as they are produced (it drains them).
fn replay_into(
    clock: Clock,
    events: impl Iterator<Item = anyhow::Result<ProbeEvent>>,
    cfg: TrackerConfig,
    metrics: Arc<SelfMetrics>,
    sink: &mut dyn FnMut(&mut Vec<LlmCall>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut tracker = tracking::tracker(cfg, clock, metrics.clone());
    let mut prepare = Prepare::new(false, metrics);
    let mut out = TrackerOutput::default();
    for ev in events {
        let mut ev = ev?;
        prepare.event(&mut ev);
        tracker.handle(ev, &mut out);
        out.mutes.clear();
        if !out.calls.is_empty() {
            sink(&mut out.calls)?;
        }
    }
    // The capture's secrets were masked when it was recorded: masking them again is not news,
    // so a replay does not publish the masker's counts.
    Ok(())
}

/// `llmprobe replay`: reads a capture and writes its records, streaming both.
pub fn replay(path: &Path, jsonl: &JsonlTarget) -> anyhow::Result<usize> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open capture {}", path.display()))?;
    let reader = CaptureReader::new(BufReader::with_capacity(1 << 16, file))?;
    let mut w = JsonlWriter::open(jsonl)?;
    let mut n = 0;
    replay_into(
        reader.clock(),
        reader,
        TrackerConfig::default(),
        Arc::new(SelfMetrics::unregistered()),
        &mut |calls| {
            for c in calls.drain(..) {
                w.write(&c)?;
                n += 1;
            }
            Ok(())
        },
    )?;
    w.flush()?;
    Ok(n)
}
