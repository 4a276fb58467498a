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
    /// Server pid -> start (Unix ns) of its oldest call in flight (the tracker's snapshot).
    pub in_flight_since: HashMap<u32, i64>,
    /// Server pid -> its GPUs, for the newest round.
    gpus_cache: HashMap<u32, Vec<u32>>,
}

/// What a server's GPUs did over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuWindow {
    /// Mean SM utilization, percent (over GPUs and samples).
    pub util_mean: f64,
    /// Mean memory used, bytes (summed over the GPUs).
    pub mem_used_bytes: u64,
    /// Mean power draw, watts (summed over the GPUs).
    pub power_mean_w: f64,
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
        match server_container {
            Some(c) => std::fs::read_to_string(format!("/proc/{gpu_pid}/cgroup"))
                .ok()
                .and_then(|t| crate::probes::container_id(&t))
                .is_some_and(|g| g == c),
            None => false,
        }
    }
}

impl GpuHistory {
    /// Keeps up to `max_rounds` rounds.
    pub fn new(max_rounds: usize) -> Self {
        GpuHistory {
            rounds: VecDeque::new(),
            max_rounds: max_rounds.max(1),
            efficiency: Efficiency::new(max_rounds),
            in_flight_since: HashMap::new(),
            gpus_cache: HashMap::new(),
        }
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

    /// GPU indices the server uses, from the most recent round (remembered until the next round:
    /// the join reads /proc, and a busy server answers many calls per round).
    pub fn gpus_of(
        &mut self,
        rel: &dyn ProcessRelation,
        server_pid: u32,
        container: Option<&str>,
    ) -> Vec<u32> {
        let Some((_, last)) = self.rounds.back() else {
            return Vec::new();
        };
        if let Some(g) = self.gpus_cache.get(&server_pid) {
            return g.clone();
        }
        let gpus: Vec<u32> = last
            .iter()
            .filter(|g| {
                g.processes
                    .iter()
                    .any(|p| rel.related(server_pid, container, p.pid))
            })
            .map(|g| g.index)
            .collect();
        if self.gpus_cache.len() < 4096 {
            self.gpus_cache.insert(server_pid, gpus.clone());
        }
        gpus
    }

    /// What `gpus` did between `start_ns` and `end_ns` (Unix). A call shorter than the sampling
    /// interval gets the first round after its start (or the last one before its end).
    pub fn window(&self, gpus: &[u32], start_ns: i64, end_ns: i64) -> Option<GpuWindow> {
        if gpus.is_empty() {
            return None;
        }
        let mut rounds: Vec<&(i64, Vec<GpuSample>)> = self
            .rounds
            .iter()
            .filter(|(t, _)| *t >= start_ns && *t <= end_ns)
            .collect();
        if rounds.is_empty() {
            let after = self.rounds.iter().find(|(t, _)| *t >= start_ns);
            let before = self.rounds.iter().rev().find(|(t, _)| *t <= end_ns);
            rounds.extend(after.or(before));
        }
        let (mut util, mut util_n, mut mem, mut power, mut n) = (0.0, 0u32, 0u64, 0.0, 0u32);
        for (_, samples) in rounds {
            let (mut m, mut p) = (0u64, 0.0);
            for s in samples.iter().filter(|s| gpus.contains(&s.index)) {
                if let Some(u) = s.sm_util_pct {
                    util += f64::from(u);
                    util_n += 1;
                }
                m += s.mem_used_bytes.unwrap_or(0);
                p += s.power_w.unwrap_or(0.0);
            }
            mem += m;
            power += p;
            n += 1;
        }
        if n == 0 {
            return None;
        }
        Some(GpuWindow {
            util_mean: if util_n > 0 {
                util / f64::from(util_n)
            } else {
                0.0
            },
            mem_used_bytes: mem / u64::from(n),
            power_mean_w: power / f64::from(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuProcess;

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
        let gpus = h.gpus_of(&Tree, 100, None);
        assert_eq!(gpus, vec![0]);
        assert_eq!(
            h.gpus_of(&Tree, 100, None),
            gpus,
            "remembered for the round"
        );
        assert_eq!(h.gpus_of(&Tree, 200, None), vec![1]);
        assert!(h.gpus_of(&Tree, 999, None).is_empty());
        // Rounds at 2000 and 3000 fall in [1500, 3500].
        let w = h.window(&gpus, 1_500, 3_500).expect("window");
        assert!((w.util_mean - 70.0).abs() < 1e-9, "{w:?}");
        assert!((w.power_mean_w - 170.0).abs() < 1e-9, "{w:?}");
        assert_eq!(w.mem_used_bytes, 10 << 30);
        // A call between two rounds gets the next round.
        let w = h.window(&gpus, 2_100, 2_200).expect("short call");
        assert!((w.util_mean - 60.0).abs() < 1e-9, "{w:?}");
        assert_eq!(h.window(&[], 0, 10_000), None);
        // The model process moves to GPU 1 (and 200 is gone): the next round says so.
        let mut moved = round(10, 10);
        moved[1].processes[0].pid = 101;
        moved[0].processes.clear();
        h.push(5_000, moved);
        assert_eq!(h.gpus_of(&Tree, 100, None), vec![1]);
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
