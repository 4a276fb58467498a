//! The source stage: drains the kernel's ring buffer whenever it is readable, decodes each
//! record, and offers batches to the event queue. It never waits for a later stage: past the
//! queue's budget events are dropped and counted (`tracker_queue_full`), so the ring keeps
//! draining. Exec/mmap hints become scan requests for discovery (dropped and counted when
//! discovery is behind: its periodic full scan still covers those processes). Under
//! per-process placement exits go to discovery too; under `--scope auto` a TLS hello record
//! becomes the server name it carries (read here, `probes::sni`) for discovery, never an event.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use llmprobe_common::{self as abi, RING_DRAIN_EVERY_MS, Record as _};
use tokio::io::unix::AsyncFd;

use super::discovery::{AdmitFilter, AdmitWhy, ExitLink, Request};
use super::queue::QueueTx;
use crate::probes::events::{ProbeEvent, decode};
use crate::probes::sni::{Hello, LlmHosts, client_hello};
use crate::telemetry::{DropReason, SelfMetrics};

/// What the source forwards to discovery.
#[derive(Debug)]
pub struct DiscoveryLink {
    /// Discovery's request channel.
    pub tx: SyncSender<Request>,
    /// Where process exits go (per-process placement), apart from scan requests so that a
    /// flood of those cannot drop them.
    pub exits: Option<ExitLink>,
    /// `--scope auto`: the hosts that admit a process, and the admission channel.
    pub auto: Option<(LlmHosts, AdmitFilter)>,
}

/// Records taken from the ring per batch.
const MAX_BATCH: usize = 1024;

/// Runs until the queue's other end is gone or the ring cannot be polled. The kernel wakes this
/// stage only once [`RING_WAKE_BYTES`](llmprobe_common::RING_WAKE_BYTES) wait in the ring (or
/// for an exec/mmap hint); otherwise it drains on its own clock, every [`RING_DRAIN_EVERY_MS`]
/// while records come, so a trickle of records costs one wakeup per tick, not one per record
/// here and in the tracker.
pub async fn run(
    mut ring: AsyncFd<RingBuf<MapData>>,
    queue: QueueTx,
    mut scans: DiscoveryLink,
    metrics: Arc<SelfMetrics>,
) {
    // Drained on the clock at most every RING_DRAIN_EVERY_MS; each drain that finds nothing
    // doubles the wait, up to IDLE_DRAIN_EVERY, so an idle node costs a few wakeups a second.
    let busy = Duration::from_millis(RING_DRAIN_EVERY_MS);
    let mut every = busy;
    loop {
        let found = tokio::select! {
            r = ring.readable_mut() => match r {
                Ok(mut guard) => {
                    let found = drain(guard.get_inner_mut(), &queue, &mut scans, &metrics).await;
                    guard.clear_ready();
                    found.map(|_| 1)
                }
                Err(_) => None,
            },
            _ = tokio::time::sleep(every) => drain(ring.get_mut(), &queue, &mut scans, &metrics).await,
        };
        match found {
            None => return,
            Some(0) => every = (every * 2).min(IDLE_DRAIN_EVERY),
            Some(_) => every = busy,
        }
    }
}

/// The longest wait between drains on the clock (an idle ring).
const IDLE_DRAIN_EVERY: Duration = Duration::from_millis(320);

/// Drains the ring into the event queue: the records taken, None once the queue is closed.
async fn drain(
    rb: &mut RingBuf<MapData>,
    queue: &QueueTx,
    scans: &mut DiscoveryLink,
    metrics: &SelfMetrics,
) -> Option<usize> {
    let mut taken = 0;
    loop {
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            let Some(item) = rb.next() else { break };
            if let Some(h) = abi::EventHeader::read_from(&item)
                && h.kind == abi::EVENT_TLS_HELLO
            {
                hello(&item, &mut scans.auto, metrics);
                continue;
            }
            match decode(&item) {
                Ok(ev) => {
                    let req = match &ev {
                        ProbeEvent::ExecMap { meta } => Some(Request::Scan {
                            pid: meta.pid,
                            hint_ns: meta.ts_ns,
                            exec: meta.fd < 0,
                        }),
                        ProbeEvent::ProcExit { meta } => {
                            if let Some((_, filter)) = scans.auto.as_mut() {
                                filter.exited(meta.pid);
                            }
                            if let Some(exits) = &scans.exits
                                && !exits.send(meta.pid)
                            {
                                metrics.drop_for(DropReason::DiscoveryRequestDropped);
                            }
                            None
                        }
                        _ => None,
                    };
                    if let Some(req) = req
                        && let Err(TrySendError::Full(_)) = scans.tx.try_send(req)
                    {
                        metrics.drop_for(DropReason::DiscoveryRequestDropped);
                    }
                    batch.push(ev);
                }
                Err(e) => {
                    metrics.events_malformed.inc();
                    log::debug!("undecodable probe event: {e:?}");
                }
            }
        }
        let drained = batch.len() < MAX_BATCH;
        taken += batch.len();
        if !batch.is_empty() {
            match queue.offer(batch) {
                Ok(0) => {}
                Ok(dropped) => metrics.drop_by(DropReason::TrackerQueueFull, dropped),
                Err(_) => return None,
            }
        }
        if drained {
            return Some(taken);
        }
        // A ring that never empties must not keep this worker from the other tasks.
        tokio::task::yield_now().await;
    }
}

/// A TLS hello record (`--scope auto`): when its server name is an LLM API host's, the process
/// is named to discovery for admission (at most once per `ADMIT_REPEAT`). Other hellos end here:
/// only matches reach discovery, so hellos cannot crowd its channels.
fn hello(raw: &[u8], auto: &mut Option<(LlmHosts, AdmitFilter)>, metrics: &SelfMetrics) {
    let Some(ev) = abi::TlsHelloEvent::read_from(raw) else {
        metrics.events_malformed.inc();
        return;
    };
    let Some((hosts, filter)) = auto.as_mut() else {
        return;
    };
    let len = (ev.len as usize).min(ev.data.len());
    match client_hello(&ev.data[..len]) {
        Hello::Sni(host) if hosts.matches(&host) => {
            let pid = ev.hdr.tgid;
            if !filter.offer(pid, AdmitWhy::Host(host), std::time::Instant::now()) {
                metrics.drop_for(DropReason::DiscoveryRequestDropped);
            }
        }
        Hello::Truncated => metrics.drop_for(DropReason::TlsHelloTruncated),
        _ => {}
    }
}
