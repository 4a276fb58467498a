//! The source stage: drains the kernel's ring buffer whenever it is readable, decodes each
//! record, and offers batches to the event queue. It never waits for a later stage: past the
//! queue's budget events are dropped and counted (`tracker_queue_full`), so the ring keeps
//! draining. Exec/mmap hints become scan requests for discovery (dropped and counted when
//! discovery is behind: its periodic full scan still covers those processes).

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use llmprobe_common::RING_DRAIN_EVERY_MS;
use tokio::io::unix::AsyncFd;
use tokio::time::MissedTickBehavior;

use super::queue::QueueTx;
use crate::probes::events::{ProbeEvent, decode};
use crate::telemetry::{DropReason, SelfMetrics};

/// Records taken from the ring per batch.
const MAX_BATCH: usize = 1024;

/// Runs until the queue's other end is gone or the ring cannot be polled. The kernel wakes this
/// stage only once [`RING_WAKE_BYTES`](llmprobe_common::RING_WAKE_BYTES) wait in the ring; otherwise it drains every
/// [`RING_DRAIN_EVERY_MS`], so a trickle of records costs one wakeup per tick, not one per record
/// here and in the tracker.
pub async fn run(
    mut ring: AsyncFd<RingBuf<MapData>>,
    queue: QueueTx,
    scans: SyncSender<u32>,
    metrics: Arc<SelfMetrics>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(RING_DRAIN_EVERY_MS));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let open = tokio::select! {
            r = ring.readable_mut() => match r {
                Ok(mut guard) => {
                    let open = drain(guard.get_inner_mut(), &queue, &scans, &metrics).await;
                    guard.clear_ready();
                    open
                }
                Err(_) => false,
            },
            _ = tick.tick() => drain(ring.get_mut(), &queue, &scans, &metrics).await,
        };
        if !open {
            return;
        }
    }
}

/// Drains the ring into the event queue; false once the queue is closed.
async fn drain(
    rb: &mut RingBuf<MapData>,
    queue: &QueueTx,
    scans: &SyncSender<u32>,
    metrics: &SelfMetrics,
) -> bool {
    loop {
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            let Some(item) = rb.next() else { break };
            match decode(&item) {
                Ok(ev) => {
                    if let ProbeEvent::ExecMap { meta } = &ev
                        && let Err(TrySendError::Full(_)) = scans.try_send(meta.pid)
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
        if !batch.is_empty() {
            match queue.offer(batch) {
                Ok(0) => {}
                Ok(dropped) => metrics.drop_by(DropReason::TrackerQueueFull, dropped),
                Err(_) => return false,
            }
        }
        if drained {
            return true;
        }
        // A ring that never empties must not keep this worker from the other tasks.
        tokio::task::yield_now().await;
    }
}
