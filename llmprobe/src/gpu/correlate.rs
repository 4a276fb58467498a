//! Joins GPU samples with the LLM calls an inference server answers: which GPUs a server uses
//! (GPU processes that are the server process, its ancestor or descendant, or in its container —
//! vLLM serves HTTP from one process and runs the model in another), and what those GPUs did
//! during one call's own time window.

use std::collections::{HashMap, VecDeque};

use super::GpuSample;
use super::efficiency::Efficiency;

/// Recent rounds of samples, bounded, and the energy accounting built from them.
#[derive(Debug)]
pub struct GpuHistory {
    rounds: VecDeque<(i64, Vec<GpuSample>)>,
    max_rounds: usize,
    /// Energy and throughput per server and model.
    pub efficiency: Efficiency,
    /// The tracker's newest in-flight snapshot. The tracker sends it down the same channel as
    /// its records, so every record sent before it has been accounted when it arrives.
    snapshot: Option<InFlightSnapshot>,
    /// Server pid -> its GPUs, for the newest round.
    gpus_cache: HashMap<u32, Vec<u32>>,
    /// The sampling interval (how far a call may be from the round describing it).
    max_gap_ns: i64,
    /// Servers with calls in flight found on no GPU: pid -> when (Unix ns) they were looked up.
    no_gpu: HashMap<u32, i64>,
}

/// What the tracker saw at one moment: servers with calls in flight.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InFlightSnapshot {
    /// Server pid -> start (Unix ns) of its oldest call in flight.
    pub since: HashMap<u32, i64>,
    /// When it was taken (Unix ns, the pipeline's clock).
    pub taken_at: i64,
}

/// How long a server found on no GPU is not looked up again.
const NO_GPU_RECHECK_NS: i64 = 30_000_000_000;

/// What a server's GPUs did over a window (None: no GPU reported it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GpuWindow {
    /// Mean SM utilization, percent (over GPUs and samples).
    pub util_mean: Option<f64>,
    /// Mean memory used, bytes (summed over the GPUs).
    pub mem_used_bytes: Option<u64>,
    /// Mean power draw, watts (summed over the GPUs).
    pub power_mean_w: Option<f64>,
}

/// Whether two processes are related (same, ancestor/descendant, or same container).
pub trait ProcessRelation {
    /// True when GPU process `gpu_pid` belongs to the server process `server_pid`.
    fn related(&self, server_pid: u32, server_container: Option<&str>, gpu_pid: u32) -> bool;
}

/// The relation read from /proc (host pid namespace).
pub struct ProcRelation;

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn is_ancestor(ancestor: u32, mut pid: u32) -> bool {
    for _ in 0..64 {
        match parent_of(pid) {
            Some(p) if p == ancestor => return true,
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

impl ProcessRelation for ProcRelation {
    fn related(&self, server_pid: u32, server_container: Option<&str>, gpu_pid: u32) -> bool {
        if server_pid == gpu_pid
            || is_ancestor(server_pid, gpu_pid)
            || is_ancestor(gpu_pid, server_pid)
        {
            return true;
        }
        server_container
            .is_some_and(|c| crate::probes::container_of(gpu_pid).is_some_and(|g| g == c))
    }
}

impl GpuHistory {
    /// Keeps up to `max_rounds` rounds.
    pub fn new(max_rounds: usize) -> Self {
        GpuHistory {
            rounds: VecDeque::new(),
            max_rounds: max_rounds.max(1),
            efficiency: Efficiency::new(max_rounds),
            snapshot: None,
            gpus_cache: HashMap::new(),
            max_gap_ns: i64::MAX,
            no_gpu: HashMap::new(),
        }
    }

    /// The sampling interval.
    pub fn set_interval(&mut self, interval: std::time::Duration) {
        self.max_gap_ns = i64::try_from(interval.as_nanos()).unwrap_or(i64::MAX);
    }

    /// Adds a round sampled at `unix_ns`.
    pub fn push(&mut self, unix_ns: i64, samples: Vec<GpuSample>) {
        self.efficiency.on_round(unix_ns, &samples);
        self.gpus_cache.clear();
        if self.rounds.len() >= self.max_rounds {
            self.rounds.pop_front();
        }
        self.rounds.push_back((unix_ns, samples));
    }

    /// Times of the oldest and newest rounds kept.
    pub fn span(&self) -> Option<(i64, i64)> {
        Some((self.rounds.front()?.0, self.rounds.back()?.0))
    }

    /// True when nothing was sampled yet.
    pub fn is_empty(&self) -> bool {
        self.rounds.is_empty()
    }

    /// Each GPU's processes in the most recent round.
    pub fn gpu_processes(&self) -> Vec<(u32, Vec<u32>)> {
        self.rounds.back().map_or_else(Vec::new, |(_, last)| {
            last.iter()
                .map(|g| (g.index, g.processes.iter().map(|p| p.pid).collect()))
                .collect()
        })
    }

    /// The server's GPUs as found for the current round, if they were.
    pub fn cached_gpus(&self, server_pid: u32) -> Option<Vec<u32>> {
        self.gpus_cache.get(&server_pid).cloned()
    }

    /// Remembers the server's GPUs until the next round (the join reads /proc, and a busy server
    /// answers many calls per round).
    pub fn cache_gpus(&mut self, server_pid: u32, gpus: &[u32]) {
        if self.gpus_cache.len() < 4096 {
            self.gpus_cache.insert(server_pid, gpus.to_vec());
        }
    }

    /// True once the tracker has sent a snapshot.
    pub fn has_snapshots(&self) -> bool {
        self.snapshot.is_some()
    }

    /// A new snapshot from the tracker (every record sent before it is already accounted).
    pub fn add_snapshot(&mut self, snapshot: InFlightSnapshot) {
        self.snapshot = Some(snapshot);
    }

    /// Servers in flight as of the newest snapshot.
    pub fn in_flight_since(&self) -> HashMap<u32, i64> {
        self.snapshot
            .as_ref()
            .map(|s| s.since.clone())
            .unwrap_or_default()
    }

    /// The newest snapshot.
    pub fn settled_snapshot(&self) -> Option<InFlightSnapshot> {
        self.snapshot.clone()
    }

    /// Servers with calls in flight (newest snapshot) that the accounting does not know yet, not
    /// looked for in this round, nor found on no GPU lately.
    pub fn servers_to_look_up(&mut self, now: i64) -> Vec<u32> {
        self.no_gpu
            .retain(|_, t| now.saturating_sub(*t) < NO_GPU_RECHECK_NS);
        let Some(last) = self.snapshot.as_ref() else {
            return Vec::new();
        };
        last.since
            .keys()
            .filter(|p| {
                !self.efficiency.knows(**p)
                    && !self.gpus_cache.contains_key(p)
                    && !self.no_gpu.contains_key(p)
            })
            .copied()
            .collect()
    }

    /// Remembers that `pid` uses no GPU (not looked up again for a while).
    pub fn note_no_gpu(&mut self, pid: u32, now: i64) {
        if self.no_gpu.len() < 4096 {
            self.no_gpu.insert(pid, now);
        }
    }

    /// What `gpus` did between `start_ns` and `end_ns` (Unix). A call shorter than the sampling
    /// interval gets the first round after its start (or the last one before its end), if that
    /// round is within two intervals of the call.
    pub fn window(&self, gpus: &[u32], start_ns: i64, end_ns: i64) -> Option<GpuWindow> {
        if gpus.is_empty() {
            return None;
        }
        // Rounds are in time order: find the call's by binary search, not by a scan of all.
        let first = self.rounds.partition_point(|(t, _)| *t < start_ns);
        let mut rounds: Vec<&(i64, Vec<GpuSample>)> = self
            .rounds
            .range(first..)
            .take_while(|(t, _)| *t <= end_ns)
            .collect();
        if rounds.is_empty() {
            let near = self.max_gap_ns.saturating_mul(2);
            let after = self
                .rounds
                .get(first)
                .filter(|(t, _)| t.saturating_sub(end_ns) <= near);
            let before = first
                .checked_sub(1)
                .and_then(|i| self.rounds.get(i))
                .filter(|(t, _)| start_ns.saturating_sub(*t) <= near);
            rounds.extend(after.or(before));
        }
        let (mut util, mut util_n) = (0.0, 0u32);
        let (mut mem, mut mem_n, mut power, mut power_n) = (0u64, 0u64, 0.0, 0u32);
        for (_, samples) in rounds {
            let (mut m, mut m_seen, mut p, mut p_seen) = (0u64, false, 0.0, false);
            for s in samples.iter().filter(|s| gpus.contains(&s.index)) {
                if let Some(u) = s.sm_util_pct {
                    util += f64::from(u);
                    util_n += 1;
                }
                if let Some(b) = s.mem_used_bytes {
                    m = m.saturating_add(b);
                    m_seen = true;
                }
                if let Some(w) = s.power_w {
                    p += w;
                    p_seen = true;
                }
            }
            if m_seen {
                mem = mem.saturating_add(m);
                mem_n += 1;
            }
            if p_seen {
                power += p;
                power_n += 1;
            }
        }
        let w = GpuWindow {
            util_mean: (util_n > 0).then(|| util / f64::from(util_n)),
            mem_used_bytes: (mem_n > 0).then(|| mem / mem_n),
            power_mean_w: (power_n > 0).then(|| power / f64::from(power_n)),
        };
        (w != GpuWindow::default()).then_some(w)
    }
}

/// The GPUs `server_pid` uses in the newest round (None before the first round): remembered
/// until the next round.
pub fn server_gpus(
    history: &mut GpuHistory,
    rel: &dyn ProcessRelation,
    server_pid: u32,
    container: Option<&str>,
) -> Option<Vec<u32>> {
    if history.is_empty() {
        return None;
    }
    if let Some(g) = history.cached_gpus(server_pid) {
        return Some(g);
    }
    let gpus = related_gpus(rel, &history.gpu_processes(), server_pid, container);
    history.cache_gpus(server_pid, &gpus);
    Some(gpus)
}

/// GPU indices whose processes are related to the server (reads /proc through `rel`: call it
/// without holding the history's lock).
pub fn related_gpus(
    rel: &dyn ProcessRelation,
    gpu_processes: &[(u32, Vec<u32>)],
    server_pid: u32,
    container: Option<&str>,
) -> Vec<u32> {
    gpu_processes
        .iter()
        .filter(|(_, pids)| pids.iter().any(|p| rel.related(server_pid, container, *p)))
        .map(|(g, _)| *g)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuProcess;
    use std::cell::Cell;

    /// Counts the relation's questions (each one reads /proc in the real relation).
    struct Counting(Tree, Cell<u32>);
    impl ProcessRelation for Counting {
        fn related(&self, server: u32, container: Option<&str>, gpu_pid: u32) -> bool {
            self.1.set(self.1.get() + 1);
            self.0.related(server, container, gpu_pid)
        }
    }

    /// Server 100 runs its model in child 101; 200 is another app on GPU 1.
    struct Tree;
    impl ProcessRelation for Tree {
        fn related(&self, server: u32, container: Option<&str>, gpu_pid: u32) -> bool {
            server == gpu_pid
                || (server == 100 && gpu_pid == 101)
                || (container == Some("c1") && gpu_pid == 300)
        }
    }

    fn round(util0: u32, util1: u32) -> Vec<GpuSample> {
        let g = |i: u32, u: u32, pid: u32| GpuSample {
            index: i,
            sm_util_pct: Some(u),
            mem_used_bytes: Some(10 << 30),
            power_w: Some(100.0 + f64::from(u)),
            processes: vec![GpuProcess {
                pid,
                used_memory_bytes: Some(1 << 30),
                sm_util_pct: Some(u),
            }],
            ..Default::default()
        };
        vec![g(0, util0, 101), g(1, util1, 200)]
    }

    #[test]
    fn server_joins_its_model_process_and_averages_its_window() {
        let mut h = GpuHistory::new(10);
        for (i, (u0, u1)) in [(10, 90), (80, 90), (60, 90), (5, 90)]
            .into_iter()
            .enumerate()
        {
            h.push(1_000 * (i as i64 + 1), round(u0, u1));
        }
        let counting = Counting(Tree, Cell::new(0));
        let gpus = server_gpus(&mut h, &counting, 100, None).expect("rounds");
        assert_eq!(gpus, vec![0]);
        let asked = counting.1.get();
        assert_eq!(
            server_gpus(&mut h, &counting, 100, None),
            Some(gpus.clone())
        );
        assert_eq!(
            counting.1.get(),
            asked,
            "remembered for the round: /proc not read again"
        );
        assert_eq!(server_gpus(&mut h, &Tree, 200, None), Some(vec![1]));
        assert_eq!(server_gpus(&mut h, &Tree, 999, None), Some(vec![]));

        // Rounds at 2000 and 3000 fall in [1500, 3500].
        let w = h.window(&gpus, 1_500, 3_500).expect("window");
        assert!((w.util_mean.expect("util") - 70.0).abs() < 1e-9, "{w:?}");
        assert!(
            (w.power_mean_w.expect("power") - 170.0).abs() < 1e-9,
            "{w:?}"
        );
        assert_eq!(w.mem_used_bytes, Some(10 << 30));
        // A call between two rounds gets the next round.
        let w = h.window(&gpus, 2_100, 2_200).expect("short call");
        assert!((w.util_mean.expect("util") - 60.0).abs() < 1e-9, "{w:?}");
        // ... but not a round far from the call.
        h.set_interval(std::time::Duration::from_nanos(40));
        assert_eq!(h.window(&gpus, 2_100, 2_200), None);
        assert!(h.window(&gpus, 2_100, 2_950).is_some());
        assert_eq!(h.window(&[], 0, 10_000), None);
        // The model process moves to GPU 1 (and 200 is gone): the next round says so.
        let mut moved = round(10, 10);
        moved[1].processes[0].pid = 101;
        moved[0].processes.clear();
        h.push(5_000, moved);
        assert_eq!(server_gpus(&mut h, &Tree, 100, None), Some(vec![1]));
        assert_eq!(
            server_gpus(&mut GpuHistory::new(4), &Tree, 100, None),
            None,
            "nothing sampled yet"
        );
    }

    #[test]
    fn the_newest_snapshot_counts() {
        let mut h = GpuHistory::new(10);
        assert!(!h.has_snapshots());
        let snap = |at: i64| InFlightSnapshot {
            since: HashMap::from([(7, at)]),
            taken_at: at,
        };
        h.add_snapshot(snap(100));
        h.add_snapshot(snap(300));
        assert_eq!(h.settled_snapshot(), Some(snap(300)));
        assert_eq!(h.in_flight_since(), HashMap::from([(7, 300)]));
    }

    #[test]
    fn servers_on_no_gpu_are_not_looked_up_every_round() {
        let mut h = GpuHistory::new(10);
        h.push(0, round(1, 1));
        h.add_snapshot(InFlightSnapshot {
            since: HashMap::from([(7, 0), (8, 0)]),
            taken_at: 0,
        });
        let mut first = h.servers_to_look_up(0);
        first.sort_unstable();
        assert_eq!(first, vec![7, 8]);
        h.note_no_gpu(8, 0);
        h.cache_gpus(7, &[0]);
        assert!(h.servers_to_look_up(1_000).is_empty());
        assert_eq!(h.servers_to_look_up(NO_GPU_RECHECK_NS + 1), vec![8]);
    }

    #[test]
    fn history_is_bounded() {
        let mut h = GpuHistory::new(3);
        for i in 0..10 {
            h.push(i, round(1, 1));
        }
        assert_eq!(h.rounds.len(), 3);
    }
}
