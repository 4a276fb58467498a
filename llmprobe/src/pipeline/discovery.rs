//! The discovery stage, on its own OS thread: scans processes that exec or map executable files
//! (rate-limited per process, coalesced) and every process every [`FULL_RESCAN`], attaching
//! uprobes to TLS libraries and releasing those of files no one maps any more. It reads /proc and
//! foreign files with blocking calls, never on the async runtime.
//!
//! With per-process placement (a selector or `--scope auto`) it also releases the links of
//! processes that exit, and under `--scope auto` admits processes at once, ahead of any pending
//! scan: a TLS hello naming an LLM API host, or the tracker's word that the process made an LLM
//! call.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
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
    /// An [`Admission`] waits on its own channel.
    Wake,
}

/// `--scope auto`: a process to probe at once. Admissions have their own small channel, read
/// before every other request, so a flood of scan hints cannot delay or drop them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The process.
    pub pid: u32,
    /// What gave it away.
    pub why: AdmitWhy,
}

/// What gave an LLM-talking process away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitWhy {
    /// Its TLS hello named this LLM API host (matched by the source stage).
    Host(String),
    /// The tracker saw it make an LLM call.
    Call,
}

/// Admissions waiting for discovery at most.
pub const ADMIT_CHANNEL: usize = 256;

/// How often one process is named to discovery at most, by its hellos or by its calls (a
/// call keeps its admission active; see `scope::ADMISSION_IDLE`).
pub const ADMIT_REPEAT: Duration = Duration::from_secs(10);

/// Processes remembered by [`AdmitFilter`] (then forgotten at once: discovery ignores a process
/// it already admitted).
const ADMIT_REMEMBERED: usize = 4096;

/// Sends an admission for a process at most once per [`ADMIT_REPEAT`], and wakes discovery.
#[derive(Debug)]
pub struct AdmitFilter {
    tx: SyncSender<Admission>,
    wake: SyncSender<Request>,
    sent: HashMap<u32, Instant>,
}

impl AdmitFilter {
    /// A filter sending on `tx` and waking discovery through `wake`.
    pub fn new(tx: SyncSender<Admission>, wake: SyncSender<Request>) -> AdmitFilter {
        AdmitFilter {
            tx,
            wake,
            sent: HashMap::new(),
        }
    }

    /// Names `pid` to discovery unless it was named less than [`ADMIT_REPEAT`] ago; false when
    /// the admission channel was full (the caller counts it).
    pub fn offer(&mut self, pid: u32, why: AdmitWhy, now: Instant) -> bool {
        if self
            .sent
            .get(&pid)
            .is_some_and(|t| now.saturating_duration_since(*t) < ADMIT_REPEAT)
        {
            return true;
        }
        if self.sent.len() >= ADMIT_REMEMBERED {
            self.sent.clear();
        }
        match self.tx.try_send(Admission { pid, why }) {
            Ok(()) => {
                self.sent.insert(pid, now);
                let _ = self.wake.try_send(Request::Wake);
                true
            }
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => true,
        }
    }
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
pub fn run(
    mut probes: Probes,
    rx: Receiver<Request>,
    admissions: Receiver<Admission>,
    metrics: Arc<SelfMetrics>,
) {
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
                    admit_waiting(&mut probes, &admissions, &mut report);
                    immediate(&mut probes, req, &mut scans, &mut settle);
                }
                admit_waiting(&mut probes, &admissions, &mut report);
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
                        admit_waiting(&mut probes, &admissions, &mut report);
                        immediate(&mut probes, req, &mut scans, &mut settle);
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
        admit_waiting(&mut probes, &admissions, &mut report);
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

/// Handles an exit at once; a scan request is queued in `scans` (and the caller waits
/// [`MAP_SETTLE`] before it).
fn immediate(probes: &mut Probes, req: Request, scans: &mut Vec<u32>, settle: &mut bool) {
    match req {
        Request::Scan(pid) => {
            scans.push(pid);
            *settle = true;
        }
        Request::Exit(pid) => probes.process_exited(pid),
        Request::Wake => {}
    }
}

/// Admits the processes waiting on the admission channel (`--scope auto`).
fn admit_waiting(probes: &mut Probes, rx: &Receiver<Admission>, report: &mut ScanReport) {
    for a in rx.try_iter().take(ADMIT_CHANNEL) {
        match a.why {
            AdmitWhy::Host(host) => probes.admit(a.pid, &format!("TLS to {host}"), false, report),
            AdmitWhy::Call => probes.admit(a.pid, "made an LLM call", true, report),
        };
    }
}
