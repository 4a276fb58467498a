//! The discovery stage, on its own OS thread: scans processes that exec or map executable files
//! (rate-limited per process, coalesced) and every process every [`FULL_RESCAN`], attaching
//! uprobes to TLS libraries and releasing those of files no one maps any more. It reads /proc and
//! foreign files with blocking calls, never on the async runtime.
//!
//! With per-process placement (a selector or `--scope auto`) it also releases the links of
//! processes that exit, and under `--scope auto` admits processes at once, ahead of any pending
//! scan: a TLS hello naming an LLM API host, or the tracker's word that the process made an LLM
//! call.
//!
//! Invariants: exits and admissions have their own channels, read before every scan request,
//! so a flood of scan hints can neither delay nor drop them (exits first: they free places).
//! An exit is checked against the process that has the pid when it is handled (start time), so
//! a reused pid is never released by its predecessor's exit. Only an LLM call captured through
//! the TLS probes to an LLM API host keeps an admission active: a hello, or a call a process
//! makes in plaintext to any server, admits it but does not keep its place.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use crate::probes::discovery::{ScanDecision, ScanLimiter};
use crate::probes::loader::{Probes, ScanReport};
use crate::probes::sni::LlmHosts;
use crate::telemetry::{DropReason, SelfMetrics};

/// Scan requests queued for discovery; beyond it requests are dropped and counted
/// (`discovery_request_dropped`): the periodic full scan still covers their processes.
pub const SCAN_CHANNEL: usize = 4096;
/// How long after an exec/mmap hint discovery waits before it scans: the hint is sent as the
/// `mmap` enters the kernel, and a starting program maps its libraries one after the other
/// (a millisecond or two); the hints that come meanwhile join the same scan. Kept short: a
/// program's first TLS write can come a few milliseconds after it maps libssl.
const MAP_SETTLE: Duration = Duration::from_millis(3);
/// At most [`SCANS_PER_INTERVAL`] scans per process per interval; requests beyond are
/// coalesced into one scan at the end of the interval.
const SCAN_INTERVAL_PER_PID: Duration = Duration::from_secs(1);
/// Scans a process may have in one interval (a starting process maps its libraries in turn,
/// and a wrapper chain such as `unshare`, `sh`, `chroot`, `setpriv`, `env` execs several times
/// under one pid before the program that does TLS; the hints of one batch are one scan).
const SCANS_PER_INTERVAL: u32 = 8;
/// Processes the rate limiter remembers at once.
const MAX_LIMITED_PIDS: usize = 65_536;
/// After an exec hint's scan, the process is scanned once more this much later.
const EXEC_FOLLOWUP: Duration = Duration::from_millis(25);
/// Follow-up scans waiting at most (past it none is planned: the hints and the full rescan
/// still cover those processes).
const MAX_FOLLOWUPS: usize = 4096;
/// Full scans of every traced process (and release of files no one maps any more).
/// The default of `--rescan-interval`.
pub const FULL_RESCAN: Duration = Duration::from_secs(30);

/// What discovery is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The process exec'd, mapped an executable file or was forked: scan it.
    Scan {
        /// The process.
        pid: u32,
        /// When the kernel sent the hint (`CLOCK_MONOTONIC`, ns), to log how long the hint
        /// took to become probes.
        hint_ns: u64,
        /// An exec or fork hint (no file mapped yet): the process is scanned once more
        /// [`EXEC_FOLLOWUP`] later, when its loader has mapped its libraries (a process that
        /// enters the scope by its new name sends no mmap hints before it is listed).
        exec: bool,
    },
    /// An [`Admission`] or an exit waits on its own channel.
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
    /// The tracker saw it make an LLM call; `refresh` when it went through the TLS probes to
    /// an LLM API host ([`call_refreshes`]): only such a call keeps an admission active.
    Call {
        /// Keeps the admission active.
        refresh: bool,
    },
}

/// Whether a call keeps its process's admission active: captured through the TLS probes (only
/// an admitted, probed process has those) and addressed to an LLM API host. A plaintext call
/// costs an attacker nothing to fake (any local server, any path), so it admits but never
/// keeps a place.
pub fn call_refreshes(tls: bool, server: Option<&str>, hosts: &LlmHosts) -> bool {
    tls && server.is_some_and(|h| hosts.matches(h))
}

/// Exits waiting for discovery at most (past it they are dropped and counted
/// `discovery_request_dropped`; the periodic full scan releases what they would have).
pub const EXIT_CHANNEL: usize = 4096;

/// Admissions waiting for discovery at most.
pub const ADMIT_CHANNEL: usize = 256;

/// How often one process is named to discovery at most, by its hellos or by its calls (a
/// call keeps its admission active; see `scope::ADMISSION_IDLE`).
pub const ADMIT_REPEAT: Duration = Duration::from_secs(10);

/// Processes remembered by [`AdmitFilter`] (then forgotten at once: discovery ignores a process
/// it already admitted).
const ADMIT_REMEMBERED: usize = 4096;

/// Sends an admission for a process at most once per [`ADMIT_REPEAT`], and wakes discovery.
/// A process's entry ends with it ([`AdmitFilter::exited`]: the pid's next holder is a new
/// process, named at once), and an offer that keeps an admission active passes even when one
/// that does not was sent within the period (a faked plaintext call cannot hold real ones back).
#[derive(Debug)]
pub struct AdmitFilter {
    tx: SyncSender<Admission>,
    wake: SyncSender<Request>,
    /// When each pid was last named, and whether that offer kept its admission active.
    sent: HashMap<u32, (Instant, bool)>,
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

    /// Names `pid` to discovery unless it was named less than [`ADMIT_REPEAT`] ago (by an
    /// offer at least as strong); false when the admission channel was full (the caller counts
    /// it).
    pub fn offer(&mut self, pid: u32, why: AdmitWhy, now: Instant) -> bool {
        let refresh = matches!(why, AdmitWhy::Call { refresh: true });
        if self.sent.get(&pid).is_some_and(|(t, r)| {
            now.saturating_duration_since(*t) < ADMIT_REPEAT && (*r || !refresh)
        }) {
            return true;
        }
        if self.sent.len() >= ADMIT_REMEMBERED {
            self.sent.clear();
        }
        match self.tx.try_send(Admission { pid, why }) {
            Ok(()) => {
                self.sent.insert(pid, (now, refresh));
                let _ = self.wake.try_send(Request::Wake);
                true
            }
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => true,
        }
    }

    /// Process `pid` exited: a process given its pid later is named without waiting.
    pub fn exited(&mut self, pid: u32) {
        self.sent.remove(&pid);
    }
}

/// Sends process exits to discovery on their own channel. Discovery is woken once per batch
/// of exits, not once per exit, so an exit flood takes one slot of the scan channel at most.
#[derive(Debug, Clone)]
pub struct ExitLink {
    tx: SyncSender<u32>,
    wake: SyncSender<Request>,
    woken: Arc<AtomicBool>,
}

impl ExitLink {
    /// Names an exited process to discovery; false when the exit channel was full (the caller
    /// counts it).
    pub fn send(&self, pid: u32) -> bool {
        match self.tx.try_send(pid) {
            Ok(()) => {
                if !self.woken.swap(true, Ordering::SeqCst) {
                    let _ = self.wake.try_send(Request::Wake);
                }
                true
            }
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => true,
        }
    }
}

/// The exit channel (waking discovery through `wake`) and discovery's side of it and of the
/// admission channel.
pub fn urgent_channels(
    wake: SyncSender<Request>,
    admissions: Receiver<Admission>,
) -> (ExitLink, Urgent) {
    let (tx, exits) = sync_channel(EXIT_CHANNEL);
    let woken = Arc::new(AtomicBool::new(false));
    (
        ExitLink {
            tx,
            wake,
            woken: woken.clone(),
        },
        Urgent {
            exits,
            woken,
            admissions,
        },
    )
}

/// Turns a scan's outcome into self-metrics.
pub fn publish_scan(report: &ScanReport, probes: &Probes, metrics: &SelfMetrics) {
    for r in &report.refused {
        metrics.drop_for(r.reason());
    }
    for r in &report.go_refused {
        metrics.drop_for(r.reason());
    }
    metrics.drop_by(DropReason::DiscoveryCapReached, report.cap_reached);
    metrics.drop_by(DropReason::ScopeCapReached, report.scope_refused);
    metrics.drop_by(DropReason::ScopeProcessFiles, report.process_files_refused);
    metrics.drop_by(DropReason::ScopeUserLinks, report.user_links_refused);
    metrics.tls_libraries.set(probes.tls_file_count() as i64);
}

/// The discovery stage: scans processes that exec or map executable files (rate-limited per
/// process, coalesced), and every process every `full_rescan` ([`FULL_RESCAN`] by default), releasing the probes of files
/// no one maps any more. Exits and admissions are handled first, at once, from their own
/// channels. Runs on its own OS thread; returns when the request channel closes.
pub fn run(
    mut probes: Probes,
    rx: Receiver<Request>,
    urgent: Urgent,
    metrics: Arc<SelfMetrics>,
    full_rescan: Duration,
) {
    let mut limiter = ScanLimiter::new(SCAN_INTERVAL_PER_PID, SCANS_PER_INTERVAL, MAX_LIMITED_PIDS);
    let mut next_full = Instant::now() + full_rescan;
    let mut followups: HashMap<u32, Instant> = HashMap::new();
    loop {
        let wake = limiter.next_due().map_or(next_full, |d| d.min(next_full));
        let wake = followups.values().min().map_or(wake, |d| wake.min(*d));
        let mut pids = BTreeSet::new();
        let mut hints = HashMap::new();
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(first) => {
                // Admissions first and at once (the process's first SSL call is one handshake
                // round trip away); then let the loader finish mapping, and take the requests
                // queued meanwhile (at most one channel's worth, so a flood cannot keep this
                // loop here).
                let mut report = ScanReport::default();
                let mut scans = BTreeMap::new();
                let mut settle = false;
                for req in std::iter::once(first).chain(rx.try_iter().take(SCAN_CHANNEL)) {
                    urgent.handle(&mut probes, &mut report);
                    immediate(req, &mut scans, &mut settle);
                }
                urgent.handle(&mut probes, &mut report);
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
                        urgent.handle(&mut probes, &mut report);
                        immediate(req, &mut scans, &mut settle);
                        publish_scan(&report, &probes, &metrics);
                    }
                }
                let now = Instant::now();
                // One limiter charge per process per batch, however many hints it sent.
                for (pid, (hint_ns, exec)) in scans {
                    if exec && followups.len() < MAX_FOLLOWUPS {
                        followups.insert(pid, now + EXEC_FOLLOWUP);
                    }
                    match limiter.request(pid, now) {
                        ScanDecision::Now => {
                            pids.insert(pid);
                            hints.insert(pid, hint_ns);
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
        let due: Vec<u32> = followups
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(p, _)| *p)
            .collect();
        for pid in due {
            followups.remove(&pid);
            match limiter.request(pid, now) {
                ScanDecision::Now => {
                    pids.insert(pid);
                }
                ScanDecision::Later(_) | ScanDecision::Merged => {
                    metrics.drop_for(DropReason::DiscoveryScanRateLimited);
                }
                ScanDecision::Dropped => metrics.drop_for(DropReason::DiscoveryRequestDropped),
            }
        }
        let mut report = ScanReport::default();
        urgent.handle(&mut probes, &mut report);
        for pid in pids {
            let before = (report.attached, report.process_links);
            probes.scan_pids(&[pid], &mut report);
            if let Some(hint_ns) = hints.get(&pid)
                && (report.attached, report.process_links) != before
            {
                let ms = crate::clock::monotonic_now_ns().saturating_sub(*hint_ns) as f64 / 1e6;
                log::debug!("pid {pid}: probes placed {ms:.1} ms after its exec/mmap hint");
            }
        }
        if now >= next_full {
            probes.full_rescan(&mut report);
            limiter.prune(now);
            next_full = Instant::now() + full_rescan;
        }
        publish_scan(&report, &probes, &metrics);
    }
    probes.release_all_processes();
}

/// Queues a scan request in `scans`, one per process with its earliest hint (the caller waits
/// [`MAP_SETTLE`] before it).
fn immediate(req: Request, scans: &mut BTreeMap<u32, (u64, bool)>, settle: &mut bool) {
    match req {
        Request::Scan { pid, hint_ns, exec } => {
            let t = scans.entry(pid).or_insert((hint_ns, exec));
            *t = (t.0.min(hint_ns), t.1 || exec);
            *settle = true;
        }
        Request::Wake => {}
    }
}

/// The channels discovery reads before any scan request: exits (per-process placement) and
/// admissions (`--scope auto`).
pub struct Urgent {
    exits: Receiver<u32>,
    /// Set while a wake for exits is on its way.
    woken: Arc<AtomicBool>,
    admissions: Receiver<Admission>,
}

impl Urgent {
    /// The exits waiting (one channel's worth at most); the next exit wakes discovery again.
    fn exits_waiting(&self) -> Vec<u32> {
        self.woken.store(false, Ordering::SeqCst);
        self.exits.try_iter().take(EXIT_CHANNEL).collect()
    }

    /// Handles the exits waiting (they free places), then the admissions; at most one
    /// channel's worth of each per call, so neither can keep discovery here.
    fn handle(&self, probes: &mut Probes, report: &mut ScanReport) {
        for pid in self.exits_waiting() {
            probes.process_exited(pid);
        }
        for a in self.admissions.try_iter().take(ADMIT_CHANNEL) {
            match a.why {
                AdmitWhy::Host(host) => {
                    probes.admit(a.pid, &format!("TLS to {host}"), false, report)
                }
                AdmitWhy::Call { refresh } => {
                    probes.admit(a.pid, "made an LLM call", refresh, report)
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls_calls_to_llm_hosts_keep_an_admission() {
        let hosts = LlmHosts::new::<&str>(&[]).expect("hosts");
        assert!(call_refreshes(true, Some("api.openai.com"), &hosts));
        // Plaintext (fakeable by any process against any server), another host, no host.
        assert!(!call_refreshes(false, Some("api.openai.com"), &hosts));
        assert!(!call_refreshes(true, Some("example.com"), &hosts));
        assert!(!call_refreshes(true, None, &hosts));
    }

    #[test]
    fn admit_filter_lets_refreshes_through_and_forgets_exited_pids() {
        let (tx, rx) = sync_channel(16);
        let (wake, _wake_rx) = sync_channel(16);
        let mut f = AdmitFilter::new(tx, wake);
        let t0 = Instant::now();
        let plain = AdmitWhy::Call { refresh: false };
        let tls = AdmitWhy::Call { refresh: true };
        assert!(f.offer(7, plain.clone(), t0));
        // A second plaintext call within ADMIT_REPEAT is held back...
        assert!(f.offer(7, plain.clone(), t0 + Duration::from_secs(1)));
        // ...but not a call that keeps the admission active; a second one is.
        assert!(f.offer(7, tls.clone(), t0 + Duration::from_secs(2)));
        assert!(f.offer(7, tls.clone(), t0 + Duration::from_secs(3)));
        assert!(f.offer(7, plain.clone(), t0 + Duration::from_secs(4)));
        let sent: Vec<AdmitWhy> = rx.try_iter().map(|a| a.why).collect();
        assert_eq!(sent, vec![plain.clone(), tls.clone()]);
        // Pid 7 exits: the next process given pid 7 is named at once.
        f.exited(7);
        assert!(f.offer(
            7,
            AdmitWhy::Host("api.openai.com".into()),
            t0 + Duration::from_secs(5)
        ));
        assert_eq!(rx.try_iter().count(), 1);
        // After ADMIT_REPEAT the same offer passes again.
        assert!(f.offer(7, plain.clone(), t0 + Duration::from_secs(16)));
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn exits_have_their_own_channel_and_wake_discovery_once_per_batch() {
        let (wake, wake_rx) = sync_channel(SCAN_CHANNEL);
        let (_admit_tx, admit_rx) = sync_channel(1);
        let (link, urgent) = urgent_channels(wake.clone(), admit_rx);
        // The scan channel is full of scan requests: exits still get through.
        for pid in 0..SCAN_CHANNEL as u32 - 1 {
            wake.try_send(Request::Scan {
                pid,
                hint_ns: 0,
                exec: false,
            })
            .expect("room");
        }
        for pid in [10, 11, 12] {
            assert!(link.send(pid));
        }
        // One wake for the three (the last slot), then the scan channel is full.
        let wakes = wake_rx.try_iter().filter(|r| *r == Request::Wake).count();
        assert_eq!(wakes, 1);
        assert_eq!(urgent.exits_waiting(), vec![10, 11, 12]);
        assert!(link.send(13));
        assert_eq!(wake_rx.try_iter().collect::<Vec<_>>(), vec![Request::Wake]);
        assert_eq!(urgent.exits_waiting(), vec![13]);
        // Past EXIT_CHANNEL exits waiting, the next is refused (counted by the caller).
        for pid in 0..EXIT_CHANNEL as u32 {
            assert!(link.send(pid));
        }
        assert!(!link.send(1));
        assert_eq!(urgent.exits_waiting().len(), EXIT_CHANNEL);
    }
}
