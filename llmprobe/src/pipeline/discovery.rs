//! The discovery stage, on its own OS thread: scans processes that exec or map executable files
//! (rate-limited per process, coalesced) and every process every [`FULL_RESCAN`], attaching
//! uprobes to TLS libraries and releasing those of files no one maps any more. It reads /proc and
//! foreign files with blocking calls, never on the async runtime.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::probes::discovery::{ScanDecision, ScanLimiter};
use crate::probes::loader::{Probes, ScanReport};
use crate::telemetry::{DropReason, SelfMetrics};

/// Scan requests queued for discovery; beyond it requests are dropped and counted
/// (`discovery_request_dropped`): the periodic full scan still covers their processes.
pub const SCAN_CHANNEL: usize = 4096;
/// How long after an exec/mmap event discovery waits for the loader to finish mapping.
const MAP_SETTLE: Duration = Duration::from_millis(20);
/// At most [`SCANS_PER_INTERVAL`] scans per process per interval; requests beyond are
/// coalesced into one scan at the end of the interval.
const SCAN_INTERVAL_PER_PID: Duration = Duration::from_secs(1);
/// Scans a process may have in one interval (a starting process maps its libraries in turn).
const SCANS_PER_INTERVAL: u32 = 4;
/// Processes the rate limiter remembers at once.
const MAX_LIMITED_PIDS: usize = 65_536;
/// Full scans of every traced process (and release of files no one maps any more).
const FULL_RESCAN: Duration = Duration::from_secs(30);

/// Turns a scan's outcome into self-metrics.
pub fn publish_scan(report: &ScanReport, probes: &Probes, metrics: &SelfMetrics) {
    for r in &report.refused {
        metrics.drop_for(r.reason());
    }
    metrics.drop_by(DropReason::DiscoveryCapReached, report.cap_reached);
    metrics.tls_libraries.set(probes.tls_file_count() as i64);
}

/// The discovery stage: scans processes that exec or map executable files (rate-limited per
/// process, coalesced), and every process every [`FULL_RESCAN`], releasing the probes of files
/// no one maps any more. Runs on its own OS thread; returns when the request channel closes.
pub fn run(mut probes: Probes, rx: Receiver<u32>, metrics: Arc<SelfMetrics>) {
    let mut limiter = ScanLimiter::new(SCAN_INTERVAL_PER_PID, SCANS_PER_INTERVAL, MAX_LIMITED_PIDS);
    let mut next_full = Instant::now() + FULL_RESCAN;
    loop {
        let wake = limiter.next_due().map_or(next_full, |d| d.min(next_full));
        let mut pids = BTreeSet::new();
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(first) => {
                // Let the loader finish mapping, then take the requests queued meanwhile
                // (at most one channel's worth, so a flood cannot keep this loop here).
                std::thread::sleep(MAP_SETTLE);
                let now = Instant::now();
                for pid in std::iter::once(first).chain(rx.try_iter().take(SCAN_CHANNEL)) {
                    match limiter.request(pid, now) {
                        ScanDecision::Now => {
                            pids.insert(pid);
                        }
                        ScanDecision::Later(_) | ScanDecision::Merged => {
                            metrics.drop_for(DropReason::DiscoveryScanRateLimited);
                        }
                        ScanDecision::Dropped => {
                            metrics.drop_for(DropReason::DiscoveryRequestDropped)
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        pids.extend(limiter.due(now));
        let mut report = ScanReport::default();
        if !pids.is_empty() {
            let pids: Vec<u32> = pids.into_iter().collect();
            probes.scan_pids(&pids, &mut report);
        }
        if now >= next_full {
            probes.full_rescan(&mut report);
            limiter.prune(now);
            next_full = Instant::now() + FULL_RESCAN;
        }
        publish_scan(&report, &probes, &metrics);
    }
}
