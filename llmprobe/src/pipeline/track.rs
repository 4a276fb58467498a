//! The track stage, on its own OS thread: each batch from the event queue is prepared (masked,
//! named) and run through the connection tracker (and the recorder, when recording); the
//! tracker's mute decisions go to the kernel's `MUTED` map (the pipeline's one feedback path);
//! finished records and, every 500 ms, the servers with calls in flight go down to enrich.
//! Under `--scope auto` the process of each record is also named to discovery once (the admit
//! feedback: a process that made an LLM call gets its uprobes).

use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData};
use llmprobe_common::ConnKey;

use super::discovery::{AdmitFilter, AdmitWhy, call_refreshes};
use super::enrich::EnrichInput;
use super::prepare::Prepare;
use super::queue::QueueRx;
use crate::clock::{Clock, monotonic_now_ns};
use crate::conntrack::TrackerOutput;
use crate::export::prometheus::GenAiMetrics;
use crate::gpu::correlate::InFlightSnapshot;
use crate::llm::LlmCall;
use crate::llm::tracking::LlmTracker;
use crate::probes::events::ProbeEvent;
use crate::probes::recorder::{ConnClass, Recorder};
use crate::probes::sni::LlmHosts;
use crate::telemetry::{DropReason, SelfMetrics};

/// How often the in-flight figures are taken, with or without events.
const IN_FLIGHT_EVERY: Duration = Duration::from_millis(500);

/// What the track stage owns.
pub struct TrackStage<W: std::io::Write> {
    /// Masking and process names.
    pub prepare: Prepare,
    /// The tracker.
    pub tracker: LlmTracker,
    /// The recorder, when recording.
    pub recorder: Option<Recorder<W>>,
    /// The kernel's mute map.
    pub muted: BpfHashMap<MapData, ConnKey, u8>,
    /// The in-flight gauge.
    pub genai: Arc<GenAiMetrics>,
    /// Send in-flight snapshots (the GPU join needs them).
    pub snapshots: bool,
    /// The pipeline's clock.
    pub clock: Clock,
    /// Self-metrics.
    pub metrics: Arc<SelfMetrics>,
    /// `--scope auto`: discovery, told of each process that made an LLM call (the hosts tell
    /// which calls keep an admission active).
    pub admit: Option<(LlmHosts, AdmitFilter)>,
    /// The live view (`llmprobe top`, the trace page): the calls in flight every 500 ms.
    pub live: Option<Arc<crate::live::LiveView>>,
}

impl<W: std::io::Write> TrackStage<W> {
    /// Runs until the event queue closes; then ends the enrich stage and returns the number
    /// of connections still open.
    pub fn run(mut self, queue: QueueRx, out: SyncSender<EnrichInput>) -> usize {
        let mut next_tick = Instant::now() + IN_FLIGHT_EVERY;
        loop {
            match queue.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok((cost, events)) => {
                    let mut o = TrackerOutput::default();
                    for mut ev in events {
                        if let (Some((_, admit)), ProbeEvent::ProcExit { meta }) =
                            (self.admit.as_mut(), &ev)
                        {
                            admit.exited(meta.pid);
                        }
                        self.prepare.event(&mut ev);
                        track(&mut self.tracker, self.recorder.as_mut(), ev, &mut o);
                    }
                    queue.done(cost);
                    self.prepare.publish();
                    if let Some(r) = self.recorder.as_mut() {
                        r.flush();
                    }
                    apply_mutes(&mut self.muted, &o.mutes);
                    if let Some((hosts, admit)) = self.admit.as_mut() {
                        let now = Instant::now();
                        for c in &o.calls {
                            let refresh = call_refreshes(c.tls, c.server_address.as_deref(), hosts);
                            if !admit.offer(c.pid, AdmitWhy::Call { refresh }, now) {
                                self.metrics.drop_for(DropReason::DiscoveryRequestDropped);
                            }
                        }
                    }
                    if !o.calls.is_empty() {
                        match out.try_send(EnrichInput::Calls(o.calls)) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                self.metrics.drop_for(DropReason::SinkBackpressure)
                            }
                            Err(TrySendError::Disconnected(_)) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + IN_FLIGHT_EVERY;
                self.in_flight(&out);
            }
        }
        if let Some(r) = self.recorder.as_mut() {
            r.flush();
        }
        let _ = out.send(EnrichInput::End);
        self.tracker.connections()
    }

    fn in_flight(&self, out: &SyncSender<EnrichInput>) {
        self.genai
            .set_in_flight(self.tracker.llm_in_flight() as i64);
        if let Some(live) = &self.live {
            let (calls, total) = self.tracker.in_flight_calls(crate::live::MAX_IN_FLIGHT);
            live.publish_in_flight(calls, total, self.clock.unix_ns(monotonic_now_ns()));
        }
        if self.snapshots {
            // A full channel loses this snapshot; the next comes in 500 ms.
            let _ = out.try_send(EnrichInput::InFlight(InFlightSnapshot {
                since: self.tracker.server_in_flight_since(),
                taken_at: self.clock.unix_ns(monotonic_now_ns()),
            }));
        } else {
            // The conversation matcher's clock (a lost tick is made up by the next).
            let _ = out.try_send(EnrichInput::Tick(self.clock.unix_ns(monotonic_now_ns())));
        }
    }
}

/// One event through the tracker and, when recording, the recorder, which learns from the
/// tracker whether the event's connection carries LLM calls.
pub fn track<W: std::io::Write>(
    tracker: &mut LlmTracker,
    capture: Option<&mut Recorder<W>>,
    ev: ProbeEvent,
    out: &mut TrackerOutput<LlmCall>,
) {
    let Some(c) = capture else {
        tracker.handle(ev, out);
        return;
    };
    let copy = ev.clone();
    let mutes = out.mutes.len();
    tracker.handle(ev, out);
    c.not_llm(&out.mutes[mutes..]);
    c.observe(copy, |pid, id| {
        if tracker.is_llm(pid, id) {
            ConnClass::Llm
        } else {
            ConnClass::Unknown
        }
    });
}

fn apply_mutes(muted: &mut BpfHashMap<MapData, ConnKey, u8>, mutes: &[(u32, u64)]) {
    for (pid, id) in mutes {
        let key = ConnKey {
            tgid: *pid,
            _pad: 0,
            conn_id: *id,
        };
        if let Err(e) = muted.insert(key, 1, 0) {
            log::debug!("could not mute connection {pid}/{id:#x}: {e}");
        }
    }
}
