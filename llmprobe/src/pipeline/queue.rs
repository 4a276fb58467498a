//! The event queue between the source and the tracker: bounded in bytes (its share of
//! `--memory-limit`) and in batches. Offering never waits: what does not fit is dropped and
//! counted by the caller, payload first (see [`fit_batch`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use crate::probes::events::ProbeEvent;

/// Default byte budget: a quarter of the default `--memory-limit`.
pub const QUEUE_BYTE_BUDGET: usize = 64 << 20;
/// Batches the queue holds at most.
pub const QUEUE_BATCHES: usize = 4096;
/// What an event costs in the queue besides its payload: the enum, its process name and
/// container id (bounded by preparation), allocator slack.
pub const EVENT_OVERHEAD: usize = 256;

/// An event's share of the byte budget.
pub fn event_cost(ev: &ProbeEvent) -> usize {
    EVENT_OVERHEAD
        + match ev {
            ProbeEvent::Data(d) => d.data.len(),
            _ => 0,
        }
}

/// Fits a batch into what is left of the queue's byte budget (`queued` of `budget` in use).
/// Over it, data events lose their payload first and stay as zero-length markers with their
/// offset and call length, so the tracker counts the missing bytes as a capture gap and
/// resynchronises as it does for bytes the kernel lost; when even the markers do not fit, the
/// whole batch goes. Returns the batch's cost (0 when it was dropped) and the events whose
/// payload or whole self was dropped.
pub fn fit_batch(batch: &mut Vec<ProbeEvent>, queued: usize, budget: usize) -> (usize, u64) {
    let cost: usize = batch.iter().map(event_cost).sum();
    if queued + cost <= budget {
        return (cost, 0);
    }
    let mut dropped = 0;
    for ev in batch.iter_mut() {
        if let ProbeEvent::Data(d) = ev
            && !d.data.is_empty()
        {
            d.data = bytes::Bytes::new();
            dropped += 1;
        }
    }
    let cost = batch.len() * EVENT_OVERHEAD;
    if queued + cost <= budget {
        return (cost, dropped);
    }
    let all = batch.len() as u64;
    batch.clear();
    (0, all)
}

/// A batch in the queue, with its cost.
struct Batch {
    cost: usize,
    events: Vec<ProbeEvent>,
}

/// What a received batch holds of the budget until it is handled.
#[must_use = "give it back to QueueRx::done once the batch is handled"]
pub struct Cost(usize);

/// The source's end.
pub struct QueueTx {
    tx: SyncSender<Batch>,
    queued: Arc<AtomicUsize>,
    budget: usize,
}

/// The tracker's end.
pub struct QueueRx {
    rx: Receiver<Batch>,
    queued: Arc<AtomicUsize>,
}

/// The queue was closed by the other end.
#[derive(Debug)]
pub struct Closed;

/// A queue of at most `budget` bytes and `batches` batches.
pub fn event_queue(budget: usize, batches: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = std::sync::mpsc::sync_channel(batches);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        QueueTx {
            tx,
            queued: queued.clone(),
            budget,
        },
        QueueRx { rx, queued },
    )
}

impl QueueTx {
    /// Queues what fits of `batch`; returns the events dropped (payload or whole). Never waits.
    pub fn offer(&self, mut batch: Vec<ProbeEvent>) -> Result<u64, Closed> {
        let (cost, mut dropped) =
            fit_batch(&mut batch, self.queued.load(Ordering::Acquire), self.budget);
        if batch.is_empty() {
            return Ok(dropped);
        }
        self.queued.fetch_add(cost, Ordering::AcqRel);
        match self.tx.try_send(Batch {
            cost,
            events: batch,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(b)) => {
                self.queued.fetch_sub(b.cost, Ordering::AcqRel);
                dropped += b.events.len() as u64;
            }
            Err(TrySendError::Disconnected(_)) => return Err(Closed),
        }
        Ok(dropped)
    }
}

impl QueueRx {
    /// The next batch, waiting at most `timeout`. Its bytes count against the budget until
    /// its [`Cost`] is given back to [`QueueRx::done`].
    pub fn recv_timeout(
        &self,
        timeout: Duration,
    ) -> Result<(Cost, Vec<ProbeEvent>), RecvTimeoutError> {
        self.rx
            .recv_timeout(timeout)
            .map(|b| (Cost(b.cost), b.events))
    }

    /// A batch was handled: its bytes leave the budget.
    pub fn done(&self, cost: Cost) {
        self.queued.fetch_sub(cost.0, Ordering::AcqRel);
    }
}
