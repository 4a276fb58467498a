//! The discovery stage, on its own OS thread: scans processes that exec or map executable files
//! (rate-limited per process, coalesced) and every process every [`FULL_RESCAN`], attaching
//! uprobes to TLS libraries and releasing those of files no one maps any more. It reads /proc and
//! foreign files with blocking calls, never on the async runtime.
//!
//! With per-process placement (a selector or `--scope auto`) it also releases the links of
//! processes that exit, and under `--scope auto` admits processes at once, ahead of any pending
//! scan: a TLS hello naming an LLM API host, or the tracker's word that the process made an LLM
//! call.

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

/// What discovery is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The process exec'd, mapped an executable file or was forked: scan it.
    Scan(u32),
    /// The process exited (per-process placement only).
    Exit(u32),
    /// A TLS hello of the process named this server (`--scope auto`).
    Hello(u32, String),
    /// The tracker saw the process make an LLM call (`--scope auto`).
    Admit(u32),
}

/// Turns a scan's outcome into self-metrics.
pub fn publish_scan(report: &ScanReport, probes: &Probes, metrics: &SelfMetrics) {
    for r in &report.refused {
        metrics.drop_for(r.reason());
    }
    metrics.drop_by(DropReason::DiscoveryCapReached, report.cap_reached);
    metrics.drop_by(DropReason::ScopeCapReached, report.scope_refused);
    metrics.tls_libraries.set(probes.tls_file_count() as i64);
}

/// The discovery stage: scans processes that exec or map executable files (rate-limited per
/// process, coalesced), and every process every [`FULL_RESCAN`], releasing the probes of files
/// no one maps any more. Runs on its own OS thread; returns when the request channel closes.
pub fn run(mut probes: Probes, rx: Receiver<Request>, metrics: Arc<SelfMetrics>) {
    let mut limiter = ScanLimiter::new(SCAN_INTERVAL_PER_PID, SCANS_PER_INTERVAL, MAX_LIMITED_PIDS);
    let mut next_full = Instant::now() + FULL_RESCAN;
    loop {
        let wake = limiter.next_due().map_or(next_full, |d| d.min(next_full));
        let mut pids = BTreeSet::new();
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(first) => {
                // Admissions first and at once (the process's first SSL call is one handshake
                // round trip away); then let the loader finish mapping, and take the requests
                // queued meanwhile (at most one channel's worth, so a flood cannot keep this
                // loop here).
                let mut report = ScanReport::default();
                let mut scans = Vec::new();
                let mut settle = false;
                for req in std::iter::once(first).chain(rx.try_iter().take(SCAN_CHANNEL)) {
                    immediate(&mut probes, req, &mut scans, &mut settle, &mut report);
                }
                publish_scan(&report, &probes, &metrics);
                if settle {
                    // Admissions and exits that come while the loader settles are handled
                    // as they come.
                    let until = Instant::now() + MAP_SETTLE;
                    let mut taken = 0;
                    while taken < SCAN_CHANNEL {
                        let left = until.saturating_duration_since(Instant::now());
                        let Ok(req) = rx.recv_timeout(left) else {
                            break;
                        };
                        taken += 1;
                        let mut report = ScanReport::default();
                        immediate(&mut probes, req, &mut scans, &mut settle, &mut report);
                        publish_scan(&report, &probes, &metrics);
                    }
                }
                let now = Instant::now();
                for pid in scans {
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
    probes.release_all_processes();
}

/// Handles an exit or an admission at once; a scan request is queued in `scans` (and the
/// caller waits [`MAP_SETTLE`] before it).
fn immediate(
    probes: &mut Probes,
    req: Request,
    scans: &mut Vec<u32>,
    settle: &mut bool,
    report: &mut ScanReport,
) {
    match req {
        Request::Scan(pid) => {
            scans.push(pid);
            *settle = true;
        }
        Request::Exit(pid) => probes.process_exited(pid),
        Request::Hello(pid, host) => {
            if !probes.is_admitted(pid) && probes.is_llm_host(&host) {
                probes.admit(pid, &format!("TLS to {host}"), report);
            }
        }
        Request::Admit(pid) => {
            probes.admit(pid, "made an LLM call", report);
        }
    }
}
