//! Offline replay: captured events through the same prepare and track stages as a live run, and
//! the enrich stage's record-level steps (the conversation matcher, the built-in price table, as
//! a live run without `--prices`; span ids and tool chains; `--capture-content`'s redaction), so a capture reproduces a live run's records exactly. Ids
//! derived from traffic (conversation ids) are keyed: a replay reproduces them under the live
//! run's key (`replay --id-key-file`). API keys were masked when the capture was recorded, so
//! replayed records carry no `api_key_id`. GPU figures are not replayed. Streams: one event
//! and the open calls in memory, not the capture.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::prepare::Prepare;
use crate::clock::Clock;
use crate::conntrack::{TrackerConfig, TrackerOutput};
use crate::export::jsonl::{JsonlTarget, JsonlWriter};
use crate::llm::LlmCall;
use crate::llm::conversation::{DEFAULT_IDLE, Matcher, MatcherConfig};
use crate::llm::pricing::PriceTable;
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
    replay_events_with_content(clock, events, cfg, metrics, None)
}

/// [`replay_events`] with `--capture-content`'s collection and redaction (`content`).
pub fn replay_events_with_content(
    clock: Clock,
    events: impl IntoIterator<Item = ProbeEvent>,
    cfg: TrackerConfig,
    metrics: Arc<SelfMetrics>,
    content: Option<crate::content::ContentSetup>,
) -> Vec<LlmCall> {
    let mut calls = Vec::new();
    let mut sink = |c: &mut Vec<LlmCall>| {
        calls.append(c);
        Ok(())
    };
    match replay_into(
        clock,
        events.into_iter().map(Ok),
        cfg,
        metrics,
        content,
        &mut sink,
    ) {
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
    content: Option<crate::content::ContentSetup>,
    sink: &mut dyn FnMut(&mut Vec<LlmCall>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (policy, render) = match content {
        Some((p, r)) => (Some(p), Some(r)),
        None => (None, None),
    };
    let mut tracker = tracking::tracker_with_content(cfg, clock, metrics.clone(), policy);
    let mut steps = super::enrich::CallSteps::new(render);
    let mut prepare = Prepare::new(false, metrics.clone());
    let mut out = TrackerOutput::default();
    // Priced as a live run without --prices prices them (the enrich stage's step).
    let prices = PriceTable::builtin();
    // Conversations as the enrich stage finds them (no ticks: a conversation's end only feeds
    // metrics, which a replay does not publish).
    let mut conversations = Matcher::new(MatcherConfig::with_idle(DEFAULT_IDLE));
    for ev in events {
        let mut ev = ev?;
        prepare.event(&mut ev);
        tracker.handle(ev, &mut out);
        out.mutes.clear();
        if !out.calls.is_empty() {
            out.calls.iter_mut().for_each(|c| {
                prices.apply(c);
                conversations.observe(c);
                steps.apply(c, &metrics);
            });
            sink(&mut out.calls)?;
        }
    }
    // The capture's secrets were masked when it was recorded: masking them again is not news,
    // so a replay does not publish the masker's counts.
    Ok(())
}

/// Events the capture reader hands the tracker at once.
const READ_BATCH: usize = 1024;
/// Batches read ahead of the tracker (bounds the replay's memory).
const READ_AHEAD: usize = 2;

/// `llmprobe replay`: reads a capture and writes its records, streaming both. Like a live run,
/// the source (here: reading and decoding capture lines, a third of a replay's work) runs on a
/// thread of its own, ahead of prepare and track by at most [`READ_AHEAD`] batches.
pub fn replay(
    path: &Path,
    jsonl: &JsonlTarget,
    content: Option<crate::content::ContentSetup>,
) -> anyhow::Result<usize> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open capture {}", path.display()))?;
    let mut reader = CaptureReader::new(BufReader::with_capacity(1 << 16, file))?;
    let clock = reader.clock();
    let mut w = JsonlWriter::open(jsonl)?;
    // Each message: a batch of events, then the error that ended the capture, if one did.
    type Batch = (Vec<ProbeEvent>, Option<anyhow::Error>);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(READ_AHEAD);
    let source = std::thread::Builder::new()
        .name("capture-reader".to_owned())
        .spawn(move || {
            loop {
                let mut events = Vec::with_capacity(READ_BATCH);
                let mut error = None;
                for ev in reader.by_ref().take(READ_BATCH) {
                    match ev {
                        Ok(ev) => events.push(ev),
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                let last = error.is_some() || events.len() < READ_BATCH;
                if tx.send((events, error)).is_err() || last {
                    return;
                }
            }
        })
        .context("cannot start the capture reader thread")?;
    let events = rx
        .into_iter()
        .flat_map(|(events, error)| events.into_iter().map(Ok).chain(error.map(Err)));
    let mut n = 0;
    let result = replay_into(
        clock,
        events,
        TrackerConfig::default(),
        Arc::new(SelfMetrics::unregistered()),
        content,
        &mut |calls| {
            for c in calls.drain(..) {
                w.write(&c)?;
                n += 1;
            }
            Ok(())
        },
    );
    let _ = source.join();
    result?;
    w.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_line_after_many_good_ones_fails_the_replay_with_its_number() {
        let dir = std::env::temp_dir().join(format!("llmprobe-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let capture = dir.join("bad.capture.jsonl");
        let mut text =
            String::from("{\"ev\":\"header\",\"llmprobe_capture\":1,\"clock_offset_ns\":0}\n");
        // More lines than one read-ahead batch, so the error comes from a later batch.
        for i in 0..(READ_BATCH + 10) {
            text.push_str(&format!(
                "{{\"ev\":\"conn_close\",\"pid\":1,\"tid\":1,\"fd\":3,\"conn_id\":{i},\"ts_ns\":{i},\"comm\":\"x\"}}\n"
            ));
        }
        text.push_str("{\"ev\":\"data\"\n");
        std::fs::write(&capture, text).expect("write");
        let out = dir.join("out.jsonl");
        let err = replay(&capture, &JsonlTarget::File(out.clone()), None).expect_err("bad line");
        let _ = std::fs::remove_dir_all(&dir);
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("line {}", READ_BATCH + 12)), "{msg}");
    }
}
