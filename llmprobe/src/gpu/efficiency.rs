//! Energy and throughput per inference server and model: what a server's GPUs drew, divided by
//! the output tokens the server produced, over each sampling window; and the GPUs' utilization
//! while the server had requests in flight versus while it was idle.
//!
//! A sampling round closes a window `[previous round, this round]` with each GPU's energy delta
//! (NVML's cumulative counter; mean power × duration where the counter is missing or restarted)
//! and mean SM utilization. A server-role call, known only once it ends, spreads its output tokens
//! evenly over its generation time (first output to end) and its busy time (start to end) over the
//! windows it overlaps; the part that lies after the newest window waits for the next rounds.
//!
//! A window is *settled* for a server once no call of that server that started before the
//! window's end is still in flight (the tracker's snapshot) and a grace period has passed, so late
//! records still count. Each publication aggregates the windows settled since the previous one:
//! - joules per output token = energy of the server's GPUs in windows with output tokens, shared
//!   between the servers and models that produced tokens on a GPU in proportion to their tokens,
//!   divided by those tokens (idle energy is not charged to tokens);
//! - output tokens per second = tokens / span of the settled windows;
//! - SM utilization in flight / idle = mean utilization weighted by busy / idle time.

use std::collections::{HashMap, VecDeque};

use super::GpuSample;

/// Metric labels (already bounded and escaped by the caller).
pub type Labels = Vec<(String, String)>;

/// A server: the process that answers the calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    /// Server pid (host namespace).
    pub pid: u32,
}

/// What one finished server-role call contributes.
#[derive(Debug, Clone)]
pub struct CallUse {
    /// Its server.
    pub server: ServerKey,
    /// Labels of the server's series (process, container).
    pub server_labels: Labels,
    /// The model label value.
    pub model: String,
    /// GPUs the server uses (from the latest round).
    pub gpus: Vec<u32>,
    /// Request start, Unix ns.
    pub start_ns: i64,
    /// First output, Unix ns (None: the tokens are spread from `start_ns`).
    pub first_output_ns: Option<i64>,
    /// End, Unix ns.
    pub end_ns: i64,
    /// Output tokens.
    pub output_tokens: u64,
}

/// One published figure set for a server and model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFigures {
    /// Server labels followed by the model label.
    pub labels: Labels,
    /// Joules per output token (None: no tokens in the settled windows).
    pub joules_per_token: Option<f64>,
    /// Joules charged to these tokens.
    pub joules: f64,
    /// Output tokens per second over the settled span.
    pub tokens_per_second: f64,
}

/// One published figure set for a server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFigures {
    /// Server labels.
    pub labels: Labels,
    /// Mean SM utilization of its GPUs while it had requests in flight (None: never busy).
    pub util_in_flight: Option<f64>,
    /// Mean SM utilization of its GPUs while idle (None: never idle).
    pub util_idle: Option<f64>,
    /// Per model.
    pub models: Vec<ModelFigures>,
    /// The server is forgotten (no calls for as long as the windows reach back): remove its
    /// series.
    pub gone: bool,
}

fn model_labels(server: &Labels, model: &str) -> Labels {
    let mut labels = server.clone();
    if !model.is_empty() {
        labels.push(("gen_ai_request_model".to_owned(), model.to_owned()));
    }
    labels
}

#[derive(Debug, Default)]
struct Window {
    start: i64,
    end: i64,
    /// Energy delta per GPU index, joules.
    energy: HashMap<u32, f64>,
    /// Mean SM utilization per GPU index.
    util: HashMap<u32, f64>,
    /// Output tokens per (server, model).
    tokens: HashMap<(ServerKey, String), f64>,
    /// Busy nanoseconds per server (capped at the window's length when read).
    busy: HashMap<ServerKey, f64>,
}

#[derive(Debug)]
struct Server {
    labels: Labels,
    gpus: Vec<u32>,
    /// Models it served (their label values).
    models: Vec<String>,
    /// Windows ending at or before this are published.
    published_to: i64,
    /// End of its latest call.
    last_end: i64,
}

/// The part of a call that lies after the newest window.
#[derive(Debug)]
struct Tail {
    key: (ServerKey, String),
    /// Token spread interval and rate (tokens per ns).
    tok_from: i64,
    tok_to: i64,
    rate: f64,
    busy_from: i64,
    busy_to: i64,
}

/// The accounting (single owner; the caller locks).
#[derive(Debug)]
pub struct Efficiency {
    windows: VecDeque<Window>,
    max_windows: usize,
    /// The previous round: its time and each GPU's (energy counter, power).
    last_round: Option<(i64, RoundReadings)>,
    servers: HashMap<ServerKey, Server>,
    tails: Vec<Tail>,
    max_tails: usize,
    /// Output tokens not accounted: before the oldest window kept, in windows already published
    /// (a record later than the grace period), or past the bound on pending calls.
    pub tokens_unaccounted: f64,
    /// Calls of servers past [`MAX_SERVERS`] (not accounted).
    pub servers_untracked: u64,
}

/// GPU index -> (energy counter joules, power watts) of one round.
type RoundReadings = HashMap<u32, (Option<f64>, Option<f64>)>;

/// Servers accounted at once.
const MAX_SERVERS: usize = 1024;

/// Models remembered per server (label values are bounded by the caller too).
const MAX_MODELS_PER_SERVER: usize = 64;

fn overlap(a0: i64, a1: i64, b0: i64, b1: i64) -> i64 {
    (a1.min(b1) - a0.max(b0)).max(0)
}

impl Efficiency {
    /// Keeps up to `max_windows` windows.
    pub fn new(max_windows: usize) -> Self {
        Efficiency {
            windows: VecDeque::new(),
            max_windows: max_windows.max(2),
            last_round: None,
            servers: HashMap::new(),
            tails: Vec::new(),
            max_tails: 100_000,
            tokens_unaccounted: 0.0,
            servers_untracked: 0,
        }
    }

    /// A sampling round at `t`: closes the window since the previous round.
    pub fn on_round(&mut self, t: i64, samples: &[GpuSample]) {
        let now: RoundReadings = samples
            .iter()
            .map(|s| (s.index, (s.energy_j, s.power_w)))
            .collect();
        let Some((t0, before)) = self.last_round.take() else {
            self.last_round = Some((t, now));
            return;
        };
        if t <= t0 {
            self.last_round = Some((t0, before));
            return;
        }
        let secs = (t - t0) as f64 / 1e9;
        let mut w = Window {
            start: t0,
            end: t,
            ..Default::default()
        };
        for s in samples {
            let (e1, p1) = (s.energy_j, s.power_w);
            let (e0, p0) = before.get(&s.index).copied().unwrap_or((None, None));
            let delta = match (e0, e1) {
                (Some(a), Some(b)) if b >= a => Some(b - a),
                // No counter, or it restarted: mean power over the window.
                _ => match (p0, p1) {
                    (Some(a), Some(b)) => Some((a + b) / 2.0 * secs),
                    (None, Some(b)) => Some(b * secs),
                    _ => None,
                },
            };
            if let Some(d) = delta.filter(|d| d.is_finite()) {
                w.energy.insert(s.index, d);
            }
            if let Some(u) = s.sm_util_pct {
                w.util.insert(s.index, f64::from(u));
            }
        }
        // Calls that ended after the previous round contribute their remainder.
        let mut i = 0;
        while i < self.tails.len() {
            let tail = &self.tails[i];
            let tok = overlap(tail.tok_from, tail.tok_to, w.start, w.end) as f64 * tail.rate;
            if tok > 0.0 {
                *w.tokens.entry(tail.key.clone()).or_default() += tok;
            }
            let busy = overlap(tail.busy_from, tail.busy_to, w.start, w.end) as f64;
            if busy > 0.0 {
                *w.busy.entry(tail.key.0.clone()).or_default() += busy;
            }
            if tail.tok_to <= w.end && tail.busy_to <= w.end {
                self.tails.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if self.windows.len() >= self.max_windows {
            self.windows.pop_front();
        }
        self.windows.push_back(w);
        self.last_round = Some((t, now));
    }

    /// A finished server-role call.
    pub fn on_call(&mut self, call: CallUse) {
        if !self.servers.contains_key(&call.server) {
            // A server-role process that uses no GPU (a gateway on this node) is not an
            // inference server.
            if call.gpus.is_empty() {
                return;
            }
            if self.servers.len() >= MAX_SERVERS {
                self.servers_untracked += 1;
                return;
            }
        }
        let server = self
            .servers
            .entry(call.server.clone())
            .or_insert_with(|| Server {
                labels: Vec::new(),
                gpus: Vec::new(),
                models: Vec::new(),
                // Its accounting starts with the window its first call starts in.
                published_to: call.start_ns.min(call.end_ns),
                last_end: call.end_ns,
            });
        server.last_end = server.last_end.max(call.end_ns);
        server.labels = call.server_labels;
        if !call.gpus.is_empty() {
            server.gpus = call.gpus;
        }
        if !server.models.contains(&call.model) && server.models.len() < MAX_MODELS_PER_SERVER {
            server.models.push(call.model.clone());
        }
        let end = call.end_ns;
        let busy_from = call.start_ns.min(end);
        let tok_from = call
            .first_output_ns
            .unwrap_or(call.start_ns)
            .clamp(busy_from, end);
        let tokens = call.output_tokens as f64;
        let key = (call.server, call.model);
        // Tokens generated in an instant are spread over 1 ns at the end.
        let (tok_from, rate) = if end > tok_from {
            (tok_from, tokens / (end - tok_from) as f64)
        } else {
            (end - 1, tokens)
        };
        let published_to = server.published_to;
        let mut placed = 0.0;
        // Newest first: a call touches the last few windows of the ten minutes kept.
        for w in self.windows.iter_mut().rev() {
            if w.end <= busy_from.min(tok_from) {
                break;
            }
            let tok = overlap(tok_from, end, w.start, w.end) as f64 * rate;
            if tok > 0.0 {
                *w.tokens.entry(key.clone()).or_default() += tok;
                placed += tok;
                if w.end <= published_to {
                    self.tokens_unaccounted += tok;
                }
            }
            let busy = overlap(busy_from, end, w.start, w.end) as f64;
            if busy > 0.0 {
                *w.busy.entry(key.0.clone()).or_default() += busy;
            }
        }
        let newest = self.windows.back().map_or(i64::MIN, |w| w.end);
        let oldest = self.windows.front().map_or(i64::MAX, |w| w.start);
        let after = if end > newest {
            overlap(tok_from, end, newest, end) as f64 * rate
        } else {
            0.0
        };
        if end > newest {
            if self.tails.len() < self.max_tails {
                self.tails.push(Tail {
                    key,
                    tok_from: tok_from.max(newest),
                    tok_to: end,
                    rate,
                    busy_from: busy_from.max(newest),
                    busy_to: end,
                });
            } else {
                self.tokens_unaccounted += after;
            }
        }
        if tok_from < oldest {
            self.tokens_unaccounted += (tokens - placed - after).max(0.0);
        }
    }

    /// Publishes the windows settled since the last publication. `in_flight_since` maps a server
    /// pid to the start (Unix ns) of its oldest call still in flight; windows ending after
    /// `settled_before` wait for late records.
    pub fn publish(
        &mut self,
        settled_before: i64,
        in_flight_since: &HashMap<u32, i64>,
    ) -> Vec<ServerFigures> {
        let gpus_of: HashMap<&ServerKey, &[u32]> = self
            .servers
            .iter()
            .map(|(k, s)| (k, s.gpus.as_slice()))
            .collect();
        let mut out = Vec::new();
        let mut published = Vec::new();
        for (key, server) in &self.servers {
            let limit = in_flight_since
                .get(&key.pid)
                .copied()
                .unwrap_or(i64::MAX)
                .min(settled_before);
            let settled: Vec<&Window> = self
                .windows
                .iter()
                .filter(|w| w.end > server.published_to && w.end <= limit)
                .collect();
            let Some(last) = settled.last() else {
                continue;
            };
            published.push((key.clone(), last.end));
            let span_ns: i64 = settled.iter().map(|w| w.end - w.start).sum();
            let (mut busy_util, mut busy_w, mut idle_util, mut idle_w) = (0.0, 0.0, 0.0, 0.0);
            let mut per_model: HashMap<&str, (f64, f64)> = server
                .models
                .iter()
                .map(|m| (m.as_str(), (0.0, 0.0)))
                .collect();
            for w in &settled {
                let len = (w.end - w.start) as f64;
                let busy = w.busy.get(key).copied().unwrap_or(0.0).min(len) / len;
                let utils: Vec<f64> = server
                    .gpus
                    .iter()
                    .filter_map(|g| w.util.get(g).copied())
                    .collect();
                if !utils.is_empty() {
                    let u = utils.iter().sum::<f64>() / utils.len() as f64;
                    busy_util += u * busy;
                    busy_w += busy;
                    idle_util += u * (1.0 - busy);
                    idle_w += 1.0 - busy;
                }
                for ((k, model), &tok) in &w.tokens {
                    if k != key || tok <= 0.0 {
                        continue;
                    }
                    // Each GPU's energy is shared by the tokens every server produced on it.
                    let mut joules = 0.0;
                    for g in &server.gpus {
                        let Some(e) = w.energy.get(g) else { continue };
                        let on_gpu: f64 = w
                            .tokens
                            .iter()
                            .filter(|((s, _), _)| gpus_of.get(s).is_some_and(|gs| gs.contains(g)))
                            .map(|(_, t)| *t)
                            .sum();
                        if on_gpu > 0.0 {
                            joules += e * tok / on_gpu;
                        }
                    }
                    let m = per_model.entry(model.as_str()).or_default();
                    m.0 += joules;
                    m.1 += tok;
                }
            }
            let secs = span_ns as f64 / 1e9;
            let mut models: Vec<ModelFigures> = per_model
                .into_iter()
                .map(|(model, (joules, tokens))| ModelFigures {
                    labels: model_labels(&server.labels, model),
                    joules_per_token: (tokens > 1e-9 && joules > 0.0).then(|| joules / tokens),
                    joules,
                    tokens_per_second: if secs > 0.0 { tokens / secs } else { 0.0 },
                })
                .collect();
            models.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.push(ServerFigures {
                labels: server.labels.clone(),
                util_in_flight: (busy_w > 1e-9).then(|| busy_util / busy_w),
                util_idle: (idle_w > 1e-9).then(|| idle_util / idle_w),
                models,
                gone: false,
            });
        }
        for (key, to) in published {
            if let Some(s) = self.servers.get_mut(&key) {
                s.published_to = to;
            }
        }
        // A server without calls for as long as the windows reach back is forgotten.
        if let Some(oldest) = self.windows.front().map(|w| w.start) {
            let gone: Vec<ServerKey> = self
                .servers
                .iter()
                .filter(|(_, s)| s.last_end < oldest && s.published_to >= s.last_end)
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                if let Some(s) = self.servers.remove(&k) {
                    out.push(ServerFigures {
                        labels: s.labels.clone(),
                        util_in_flight: None,
                        util_idle: None,
                        models: s
                            .models
                            .iter()
                            .map(|m| ModelFigures {
                                labels: model_labels(&s.labels, m),
                                joules_per_token: None,
                                joules: 0.0,
                                tokens_per_second: 0.0,
                            })
                            .collect(),
                        gone: true,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    /// One GPU with an energy counter (or only power), utilization `util`.
    fn gpu(index: u32, energy_j: Option<f64>, power_w: f64, util: u32) -> GpuSample {
        GpuSample {
            index,
            energy_j,
            power_w: Some(power_w),
            sm_util_pct: Some(util),
            ..Default::default()
        }
    }

    fn call(pid: u32, model: &str, gpus: &[u32], t: [f64; 3], tokens: u64) -> CallUse {
        let ns = |s: f64| (s * 1e9) as i64;
        CallUse {
            server: ServerKey { pid },
            server_labels: vec![("pid".into(), pid.to_string())],
            model: model.into(),
            gpus: gpus.to_vec(),
            start_ns: ns(t[0]),
            first_output_ns: Some(ns(t[1])),
            end_ns: ns(t[2]),
            output_tokens: tokens,
        }
    }

    /// Rounds at 0..=4 s: 300 W while generating (1-3 s), 100 W otherwise.
    fn rounds() -> Vec<(i64, Vec<GpuSample>)> {
        [
            (0.0, 10),
            (300.0, 10),
            (600.0, 90),
            (900.0, 80),
            (1000.0, 5),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (e, u))| (i as i64 * S, vec![gpu(0, Some(e), 100.0, u)]))
        .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    fn check_single(f: &[ServerFigures]) {
        assert_eq!(f.len(), 1, "{f:?}");
        let s = &f[0];
        assert!(!s.gone);
        assert_eq!(s.models.len(), 1);
        let m = &s.models[0];
        assert_eq!(
            m.labels,
            vec![
                ("pid".to_owned(), "7".to_owned()),
                ("gen_ai_request_model".to_owned(), "llama".to_owned())
            ]
        );
        // (300 + 300) J over 200 tokens; the idle windows' energy is not charged.
        assert!(close(m.joules, 600.0), "{m:?}");
        assert!(close(m.joules_per_token.expect("j/token"), 3.0), "{m:?}");
        // 200 tokens over the 4 s the server's windows span (0.5 s start: window 0-1 counts).
        assert!(close(m.tokens_per_second, 50.0), "{m:?}");
        // Busy 0.5, 1, 1, 0 of the windows with utilization (of the round closing each) 10,
        // 90, 80, 5.
        assert!(
            close(s.util_in_flight.expect("busy"), (5.0 + 90.0 + 80.0) / 2.5),
            "{s:?}"
        );
        assert!(
            close(s.util_idle.expect("idle"), (5.0 + 5.0) / 1.5),
            "{s:?}"
        );
    }

    #[test]
    fn energy_per_token_throughput_and_busy_utilization() {
        let mut e = Efficiency::new(100);
        for (t, s) in rounds() {
            e.on_round(t, &s);
        }
        e.on_call(call(7, "llama", &[0], [0.5, 1.0, 3.0], 200));
        check_single(&e.publish(10 * S, &HashMap::new()));
        // Nothing new settled: nothing published again.
        assert!(e.publish(10 * S, &HashMap::new()).is_empty());
    }

    #[test]
    fn a_call_ending_after_the_newest_round_waits_for_the_next() {
        let mut e = Efficiency::new(100);
        let r = rounds();
        for (t, s) in &r[..3] {
            e.on_round(*t, s);
        }
        // Ends at 3 s, the newest window ends at 2 s.
        e.on_call(call(7, "llama", &[0], [0.5, 1.0, 3.0], 200));
        for (t, s) in &r[3..] {
            e.on_round(*t, s);
        }
        assert!(e.tails.is_empty(), "the remainder was placed");
        check_single(&e.publish(10 * S, &HashMap::new()));
    }

    #[test]
    fn windows_wait_for_calls_in_flight_and_for_the_grace_period() {
        let mut e = Efficiency::new(100);
        for (t, s) in rounds() {
            e.on_round(t, &s);
        }
        e.on_call(call(7, "llama", &[0], [0.5, 1.0, 3.0], 200));
        // Another call of the server started at 2.5 s and is still running: 0-1 and 1-2 settle.
        let busy = HashMap::from([(7, 2 * S + S / 2)]);
        let f = e.publish(10 * S, &busy);
        let m = &f[0].models[0];
        assert!(close(m.joules_per_token.expect("j/token"), 3.0), "{m:?}");
        assert!(
            close(m.tokens_per_second, 50.0),
            "100 tokens over 2 s: {m:?}"
        );
        // The grace period holds 3-4.
        let f = e.publish(3 * S + S / 2, &HashMap::new());
        assert!(close(f[0].models[0].tokens_per_second, 100.0), "{f:?}");
        let f = e.publish(10 * S, &HashMap::new());
        let m = &f[0].models[0];
        assert_eq!(m.joules_per_token, None, "no output in 3-4 s: {m:?}");
        assert!(close(m.tokens_per_second, 0.0), "{m:?}");
        assert!(f[0].util_in_flight.is_none());
        assert!(close(f[0].util_idle.expect("idle"), 5.0));
        // A record that comes after its windows were published is counted as unaccounted.
        e.on_call(call(7, "llama", &[0], [1.0, 1.0, 2.0], 40));
        assert!(
            close(e.tokens_unaccounted, 40.0),
            "{}",
            e.tokens_unaccounted
        );
    }

    #[test]
    fn a_shared_gpu_splits_its_energy_by_tokens() {
        let mut e = Efficiency::new(100);
        e.on_round(0, &[gpu(0, Some(0.0), 0.0, 50), gpu(1, Some(0.0), 0.0, 50)]);
        e.on_round(
            S,
            &[gpu(0, Some(400.0), 0.0, 50), gpu(1, Some(1000.0), 0.0, 50)],
        );
        // Server 1 (two models) and server 2 share GPU 0; server 2 also uses GPU 1 alone.
        e.on_call(call(1, "a", &[0], [0.0, 0.0, 1.0], 200));
        e.on_call(call(1, "b", &[0], [0.0, 0.0, 1.0], 100));
        e.on_call(call(2, "c", &[0, 1], [0.0, 0.0, 1.0], 100));
        let f = e.publish(10 * S, &HashMap::new());
        let jpt: Vec<(String, f64)> = f
            .iter()
            .flat_map(|s| &s.models)
            .map(|m| (m.labels[1].1.clone(), m.joules_per_token.expect("j/t")))
            .collect();
        // GPU 0: 400 J over 400 tokens = 1 J each; GPU 1: 1000 J, all server 2's.
        assert_eq!(jpt.len(), 3, "{jpt:?}");
        for (model, want) in [("a", 1.0), ("b", 1.0), ("c", 11.0)] {
            let got = jpt.iter().find(|(m, _)| m == model).expect(model).1;
            assert!(close(got, want), "{model}: {got} != {want}");
        }
    }

    #[test]
    fn power_stands_in_for_a_missing_or_restarted_counter() {
        let mut e = Efficiency::new(100);
        e.on_round(0, &[gpu(0, None, 100.0, 50)]);
        e.on_round(2 * S, &[gpu(0, None, 300.0, 50)]);
        // Counter restarted (driver reload): lower than before.
        e.on_round(2 * S, &[gpu(0, Some(50.0), 300.0, 50)]);
        e.on_round(3 * S, &[gpu(0, Some(10.0), 100.0, 50)]);
        e.on_call(call(7, "m", &[0], [0.0, 0.0, 3.0], 300));
        let f = e.publish(10 * S, &HashMap::new());
        // 0-2 s: mean 200 W x 2 s; 2-3 s: mean 200 W x 1 s; the repeated round is ignored.
        let m = &f[0].models[0];
        assert!(close(m.joules, 600.0), "{m:?}");
        assert!(close(m.joules_per_token.expect("j/t"), 2.0), "{m:?}");
    }

    #[test]
    fn a_server_without_calls_is_forgotten_and_bounds_hold() {
        let mut e = Efficiency::new(3);
        e.on_round(0, &[gpu(0, Some(0.0), 100.0, 50)]);
        e.on_round(S, &[gpu(0, Some(100.0), 100.0, 50)]);
        e.on_call(call(7, "m", &[0], [0.0, 0.0, 1.0], 10));
        assert_eq!(e.publish(10 * S, &HashMap::new()).len(), 1);
        for i in 2..8 {
            e.on_round(i * S, &[gpu(0, Some(100.0 * i as f64), 100.0, 50)]);
        }
        assert_eq!(e.windows.len(), 3);
        let f = e.publish(20 * S, &HashMap::new());
        let gone: Vec<&ServerFigures> = f.iter().filter(|s| s.gone).collect();
        assert_eq!(gone.len(), 1, "{f:?}");
        assert_eq!(gone[0].models.len(), 1);
        assert!(e.servers.is_empty());
        // A call entirely before the windows kept is not charged (and said so).
        e.on_call(call(8, "m", &[0], [0.0, 0.0, 1.0], 10));
        assert!(close(e.tokens_unaccounted, 10.0));
        // A server-role process on no GPU is no inference server.
        e.on_call(call(10, "m", &[], [6.5, 6.5, 6.5], 5));
        assert!(!e.servers.contains_key(&ServerKey { pid: 10 }));
        // Hostile figures: zero-length calls, end before start.
        e.on_call(call(9, "m", &[0], [6.5, 6.5, 6.5], 5));
        e.on_call(call(9, "m", &[0], [7.0, 9.0, 6.0], u64::MAX));
        for f in e.publish(30 * S, &HashMap::new()) {
            for m in f.models {
                assert!(m.tokens_per_second.is_finite(), "{m:?}");
                assert!(m.joules_per_token.is_none_or(|j| j.is_finite()), "{m:?}");
            }
        }
    }
}
