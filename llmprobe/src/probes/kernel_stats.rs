//! What the kernel side refused or lost, turned into self-metrics: ring-buffer records it could
//! not write (`llmprobe_events_lost_total`), and the `COUNTERS` map (fair-share drops, rate-limited
//! discovery hints, sockets over a process's share, failed map inserts, rate-limited TLS hellos,
//! forked children over their user's share of inherited scope entries, rate-limited fork
//! hints), plus an estimate of the
//! entries the LRU maps evicted (inserted − removed − present, read every few seconds).

use std::time::{Duration, Instant};

use aya::maps::{HashMap, MapData, PerCpuArray};
use llmprobe_common::{SockInfo, SockKey, SslKey, counter};
use log::warn;

use crate::telemetry::{DropReason, SelfMetrics};

/// Drop reasons of the kernel counters, by index.
const REASONS: [(u32, DropReason); 7] = [
    (counter::FAIR_SHARE, DropReason::KernelFairShare),
    (
        counter::CTRL_RATE_LIMITED,
        DropReason::KernelDiscoveryHintRateLimited,
    ),
    (
        counter::SOCKS_PER_PROCESS,
        DropReason::KernelSocketLimitPerProcess,
    ),
    (
        counter::MAP_INSERT_FAILED,
        DropReason::KernelMapInsertFailed,
    ),
    (
        counter::HELLO_RATE_LIMITED,
        DropReason::KernelHelloRateLimited,
    ),
    (
        counter::SCOPE_INHERIT_QUOTA,
        DropReason::KernelScopeInheritQuota,
    ),
    (
        counter::FORK_HINT_RATE_LIMITED,
        DropReason::KernelForkHintRateLimited,
    ),
];

/// How often the LRU maps are counted (a walk of up to 65 536 keys).
const SIZE_EVERY: Duration = Duration::from_secs(10);

/// The kernel's loss and refusal counters.
pub struct KernelStats {
    lost: PerCpuArray<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    socks: HashMap<MapData, SockKey, SockInfo>,
    ssl_fds: HashMap<MapData, SslKey, i32>,
    /// Sockets userspace put in `SOCKS` itself (seeded at start).
    seeded: u64,
    lost_seen: u64,
    seen: [u64; counter::COUNT as usize],
    evicted_seen: [u64; 2],
    last_size: Option<Instant>,
}

impl KernelStats {
    /// Takes the maps; `seeded` sockets were inserted by userspace.
    pub fn new(
        lost: PerCpuArray<MapData, u64>,
        counters: PerCpuArray<MapData, u64>,
        socks: HashMap<MapData, SockKey, SockInfo>,
        ssl_fds: HashMap<MapData, SslKey, i32>,
        seeded: u64,
    ) -> Self {
        KernelStats {
            lost,
            counters,
            socks,
            ssl_fds,
            seeded,
            lost_seen: 0,
            seen: [0; counter::COUNT as usize],
            evicted_seen: [0; 2],
            last_size: None,
        }
    }

    fn total(&self, idx: u32) -> u64 {
        self.counters
            .get(&idx, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Adds what changed since the last poll to the metrics.
    pub fn poll(&mut self, metrics: &SelfMetrics) {
        let lost: u64 = self.lost.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0);
        if lost > self.lost_seen {
            warn!(
                "{} probe events lost: the ring buffer was full",
                lost - self.lost_seen
            );
            metrics.events_lost.inc_by(lost - self.lost_seen);
            self.lost_seen = lost;
        }
        for (idx, reason) in REASONS {
            let now = self.total(idx);
            let seen = &mut self.seen[idx as usize];
            if now > *seen {
                metrics.drop_by(reason, now - *seen);
                *seen = now;
            }
        }
        if self.last_size.is_some_and(|t| t.elapsed() < SIZE_EVERY) {
            return;
        }
        self.last_size = Some(Instant::now());
        let socks = self.socks.keys().filter(Result::is_ok).count() as u64;
        let ssl_fds = self.ssl_fds.keys().filter(Result::is_ok).count() as u64;
        let estimates = [
            (
                self.total(counter::SOCKS_INSERTED) + self.seeded,
                self.total(counter::SOCKS_REMOVED),
                socks,
                DropReason::KernelSocketTableEvicted,
            ),
            (
                self.total(counter::SSL_FDS_INSERTED),
                self.total(counter::SSL_FDS_REMOVED),
                ssl_fds,
                DropReason::KernelSslLinkTableEvicted,
            ),
        ];
        for (i, (inserted, removed, present, reason)) in estimates.into_iter().enumerate() {
            let evicted = inserted.saturating_sub(removed).saturating_sub(present);
            if evicted > self.evicted_seen[i] {
                metrics.drop_by(reason, evicted - self.evicted_seen[i]);
                self.evicted_seen[i] = evicted;
            }
        }
    }
}
