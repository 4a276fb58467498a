//! Energy and throughput per inference server and model: what a server's GPUs drew, divided by
//! the output tokens the server produced; and the GPUs' utilization while the server had
//! requests in flight versus while it was idle.
//!
//! A sampling round closes a window `[previous round, this round]` with each GPU's energy delta
//! (NVML's cumulative counter; mean power × duration where the counter is missing or restarted)
//! and SM utilization. A server-role call, known only once it ends, spreads its output tokens
//! evenly over its generation time (first output to end) and adds its busy interval (start to
//! end) to the windows it overlaps; the part after the newest window waits for the next rounds.
//!
//! A window is *settled* for a server once no call that started before the window's end is still
//! in flight on that server or on any server sharing one of its GPUs (the tracker's snapshot,
//! whose records the sink has handled), and a grace period has passed for the events still on
//! their way from the kernel. A call in flight for longer than [`MAX_HOLD_NS`] stops holding
//! windows back (its tokens then arrive late and are counted as unaccounted).
//!
//! On settling, a GPU's energy in a window is shared by the servers and models that produced
//! tokens on it, in proportion to their tokens (idle windows charge nobody). The counters get the
//! newly settled windows; the gauges cover the settled windows of the last [`GAUGE_SPAN_NS`]:
//! joules per output token (energy charged / tokens), output tokens per second, and the mean SM
//! utilization weighted by busy time (union of the calls' intervals) and idle time.

use std::collections::{HashMap, VecDeque};

use super::GpuSample;

/// Metric labels (already bounded and escaped by the caller).
pub type Labels = Vec<(String, String)>;

/// The settled windows the gauges cover.
pub const GAUGE_SPAN_NS: i64 = 60_000_000_000;
/// The longest a call in flight holds its server's windows back.
pub const MAX_HOLD_NS: i64 = 300_000_000_000;
/// Servers accounted at once.
const MAX_SERVERS: usize = 1024;
/// Models remembered per server (label values are bounded by the caller too).
const MAX_MODELS_PER_SERVER: usize = 64;
/// Busy intervals kept per server per window (closest ones merge past this).
const MAX_BUSY_INTERVALS: usize = 32;

/// GPU index -> (energy counter joules, power watts) of one round.
type RoundReadings = HashMap<u32, (Option<f64>, Option<f64>)>;

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
    /// Joules per output token over the gauge span (None: no tokens with energy in it).
    pub joules_per_token: Option<f64>,
    /// Output tokens per second over the gauge span.
    pub tokens_per_second: f64,
    /// Joules charged in the newly settled windows (for the counter).
    pub new_joules: f64,
    /// Output tokens charged in the newly settled windows (for the counter).
    pub new_tokens: f64,
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
    /// The series of these labels go: the server is forgotten (no calls for as long as the
    /// windows reach back), or its labels changed.
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
    /// SM utilization per GPU index.
    util: HashMap<u32, f64>,
    /// Output tokens per (server, model).
    tokens: HashMap<(ServerKey, String), f64>,
    /// Busy intervals per server, merged.
    busy: HashMap<ServerKey, Vec<(i64, i64)>>,
}

impl Window {
    fn add_busy(&mut self, key: &ServerKey, from: i64, to: i64) {
        let (from, to) = (from.max(self.start), to.min(self.end));
        if to <= from {
            return;
        }
        let v = self.busy.entry(key.clone()).or_default();
        v.push((from, to));
        v.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(v.len());
        for &(a, b) in v.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        while merged.len() > MAX_BUSY_INTERVALS {
            // Close the smallest gap (an over-estimate of busy time by at most that gap).
            let i = (0..merged.len() - 1)
                .min_by_key(|&i| merged[i + 1].0 - merged[i].1)
                .unwrap_or(0);
            merged[i].1 = merged[i + 1].1;
            merged.remove(i + 1);
        }
        *v = merged;
    }

    fn busy_fraction(&self, key: &ServerKey) -> f64 {
        let len = (self.end - self.start) as f64;
        let busy: i64 = self
            .busy
            .get(key)
            .map_or(0, |v| v.iter().map(|(a, b)| b - a).sum());
        (busy as f64 / len).clamp(0.0, 1.0)
    }

    /// Joules of `gpus` charged to `tok` tokens, sharing each GPU's energy with every token
    /// produced on it in this window (`on_gpu`: tokens per GPU).
    fn charge(&self, gpus: &[u32], tok: f64, on_gpu: &HashMap<u32, f64>) -> f64 {
        let mut joules = 0.0;
        for g in gpus {
            if let (Some(e), Some(&all)) = (self.energy.get(g), on_gpu.get(g))
                && all > 0.0
            {
                joules += e * tok / all;
            }
        }
        joules
    }
}

#[derive(Debug)]
struct Server {
    labels: Labels,
    gpus: Vec<u32>,
    /// Models it served (their label values).
    models: Vec<String>,
    /// Windows ending at or before this are published.
    published_to: i64,
    /// Where its accounting starts (the gauges' span never reaches before it).
    started: i64,
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
    last_round: Option<(i64, RoundReadings)>,
    servers: HashMap<ServerKey, Server>,
    tails: Vec<Tail>,
    max_tails: usize,
    /// The tracker's last in-flight snapshot: server pid -> start of its oldest call.
    in_flight: HashMap<u32, i64>,
    /// Series to remove at the next publication (labels that changed).
    relabeled: Vec<ServerFigures>,
    /// Output tokens not accounted: before the windows kept, in windows already published (a
    /// record later than its windows), in windows dropped unpublished, past the bound on pending
    /// calls or on servers.
    pub tokens_unaccounted: f64,
}

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
            in_flight: HashMap::new(),
            relabeled: Vec::new(),
            tokens_unaccounted: 0.0,
        }
    }

    /// True when `pid` is an accounted server.
    pub fn knows(&self, pid: u32) -> bool {
        self.servers.contains_key(&ServerKey { pid })
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
            if let Some(d) = delta.filter(|d| d.is_finite() && *d >= 0.0) {
                w.energy.insert(s.index, d);
            }
            if let Some(u) = s.sm_util_pct {
                w.util.insert(s.index, f64::from(u));
            }
        }
        let first = self.windows.is_empty();
        // Calls that ended after the previous round contribute their remainder.
        let mut i = 0;
        while i < self.tails.len() {
            let tail = &self.tails[i];
            if first {
                // Before the first window: nothing to charge it to.
                self.tokens_unaccounted +=
                    overlap(tail.tok_from, tail.tok_to, i64::MIN, w.start) as f64 * tail.rate;
            }
            let tok = overlap(tail.tok_from, tail.tok_to, w.start, w.end) as f64 * tail.rate;
            if tok > 0.0 {
                *w.tokens.entry(tail.key.clone()).or_default() += tok;
            }
            let (key, from, to) = (tail.key.0.clone(), tail.busy_from, tail.busy_to);
            w.add_busy(&key, from, to);
            if tail.tok_to <= w.end && tail.busy_to <= w.end {
                self.tails.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if self.windows.len() >= self.max_windows
            && let Some(old) = self.windows.pop_front()
        {
            // Tokens of a window nobody published (a call held it past the windows kept).
            for ((k, _), tok) in &old.tokens {
                if self
                    .servers
                    .get(k)
                    .is_some_and(|s| s.published_to < old.end)
                {
                    self.tokens_unaccounted += tok;
                }
            }
        }
        self.windows.push_back(w);
        self.last_round = Some((t, now));
    }

    /// A server with a call in flight since `since` (Unix ns), seen using `gpus` before any of
    /// its calls ended: its accounting starts with that call, and servers sharing its GPUs wait
    /// for it.
    pub fn on_server_in_flight(&mut self, pid: u32, gpus: Vec<u32>, since: i64) {
        if gpus.is_empty() || self.servers.len() >= MAX_SERVERS || self.knows(pid) {
            return;
        }
        self.in_flight.insert(pid, since);
        self.servers.insert(
            ServerKey { pid },
            Server {
                labels: Vec::new(),
                gpus,
                models: Vec::new(),
                published_to: since,
                started: since,
                last_end: since,
            },
        );
    }

    /// A finished server-role call.
    pub fn on_call(&mut self, call: CallUse) {
        let tokens = call.output_tokens as f64;
        if !self.servers.contains_key(&call.server) {
            // A server-role process that uses no GPU (a gateway on this node) is not an
            // inference server.
            if call.gpus.is_empty() {
                return;
            }
            if self.servers.len() >= MAX_SERVERS {
                self.tokens_unaccounted += tokens;
                return;
            }
        }
        // Its accounting starts with the window its first call (or its oldest call still in
        // flight) starts in.
        let since = self
            .in_flight
            .get(&call.server.pid)
            .copied()
            .unwrap_or(i64::MAX)
            .min(call.start_ns.min(call.end_ns));
        // Windows already split by a server sharing a GPU with it are not split again: its
        // tokens there are late.
        let gpus: &[u32] = match self.servers.get(&call.server) {
            Some(s) if call.gpus.is_empty() => &s.gpus,
            _ => &call.gpus,
        };
        let split_to = self
            .servers
            .iter()
            .filter(|(k, s)| {
                **k != call.server
                    && !s.labels.is_empty()
                    && s.gpus.iter().any(|g| gpus.contains(g))
            })
            .map(|(_, s)| s.published_to)
            .max()
            .unwrap_or(i64::MIN);
        let server = self
            .servers
            .entry(call.server.clone())
            .or_insert_with(|| Server {
                labels: Vec::new(),
                gpus: Vec::new(),
                models: Vec::new(),
                published_to: since,
                started: since,
                last_end: call.end_ns,
            });
        if server.labels.is_empty() {
            // New, or registered while in flight: nothing was published for it yet.
            server.published_to = server.published_to.min(since).max(split_to);
            server.started = server.started.min(since);
        } else if server.labels != call.server_labels {
            // Same pid, new labels (an exec, or a reused pid): the old series go.
            self.relabeled
                .push(Self::gone(&server.labels, &server.models));
        }
        server.labels = call.server_labels;
        server.last_end = server.last_end.max(call.end_ns);
        if !call.gpus.is_empty() {
            server.gpus = call.gpus;
        }
        if !server.models.contains(&call.model) {
            if server.models.len() >= MAX_MODELS_PER_SERVER {
                self.tokens_unaccounted += tokens;
                return;
            }
            server.models.push(call.model.clone());
        }
        let published_to = server.published_to;
        let end = call.end_ns;
        let busy_from = call.start_ns.min(end);
        let tok_from = call
            .first_output_ns
            .unwrap_or(call.start_ns)
            .clamp(busy_from, end);
        let key = (call.server, call.model);
        // Tokens generated in an instant are spread over 1 ns at the end.
        let (tok_from, rate) = if end > tok_from {
            (tok_from, tokens / (end - tok_from) as f64)
        } else {
            (end - 1, tokens)
        };
        let mut placed = 0.0;
        // Newest first: a call touches the last few windows of the ten minutes kept.
        for w in self.windows.iter_mut().rev() {
            if w.end <= busy_from.min(tok_from) {
                break;
            }
            let tok = overlap(tok_from, end, w.start, w.end) as f64 * rate;
            if w.end <= published_to {
                // Published already: the record is late, the window stays as it was reported.
                self.tokens_unaccounted += tok;
                placed += tok;
                continue;
            }
            if tok > 0.0 {
                *w.tokens.entry(key.clone()).or_default() += tok;
                placed += tok;
            }
            w.add_busy(&key.0, busy_from, end);
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
        if tok_from < oldest && !self.windows.is_empty() {
            self.tokens_unaccounted += (tokens - placed - after).max(0.0);
        }
    }

    /// Publishes the windows settled since the last publication. `in_flight_since` maps a server
    /// pid to the start (Unix ns) of its oldest call in flight; windows ending after
    /// `settled_before` wait for late events.
    pub fn publish(
        &mut self,
        settled_before: i64,
        in_flight_since: &HashMap<u32, i64>,
    ) -> Vec<ServerFigures> {
        self.in_flight = in_flight_since.clone();
        let newest = self.windows.back().map_or(i64::MIN, |w| w.end);
        // Each server's own limit, then the lowest over every server sharing a GPU with it: a
        // shared GPU's window is split once every server on it is done with it.
        let own: HashMap<&ServerKey, i64> = self
            .servers
            .keys()
            .map(|k| {
                let held = in_flight_since
                    .get(&k.pid)
                    .copied()
                    .unwrap_or(i64::MAX)
                    .max(newest.saturating_sub(MAX_HOLD_NS));
                (k, held.min(settled_before))
            })
            .collect();
        let mut gpu_limit: HashMap<u32, i64> = HashMap::new();
        for (k, s) in &self.servers {
            for g in &s.gpus {
                let l = gpu_limit.entry(*g).or_insert(i64::MAX);
                *l = (*l).min(own[k]);
            }
        }
        let limit_of = |k: &ServerKey, gpus: &[u32]| -> i64 {
            gpus.iter()
                .filter_map(|g| gpu_limit.get(g))
                .fold(own[k], |a, b| a.min(*b))
        };
        // Tokens on each GPU per window (by window start), computed once per publication.
        let gpus_of: HashMap<&ServerKey, &[u32]> = self
            .servers
            .iter()
            .map(|(k, s)| (k, s.gpus.as_slice()))
            .collect();
        let mut totals: HashMap<i64, HashMap<u32, f64>> = HashMap::new();
        let mut on_gpus = |w: &Window| -> HashMap<u32, f64> {
            totals
                .entry(w.start)
                .or_insert_with(|| {
                    let mut m: HashMap<u32, f64> = HashMap::new();
                    for ((s, _), tok) in &w.tokens {
                        for g in gpus_of.get(s).copied().unwrap_or_default() {
                            *m.entry(*g).or_default() += tok;
                        }
                    }
                    m
                })
                .clone()
        };
        let mut out = std::mem::take(&mut self.relabeled);
        let mut published = Vec::new();
        for (key, server) in &self.servers {
            if server.labels.is_empty() {
                continue;
            }
            let limit = limit_of(key, &server.gpus);
            let new: Vec<&Window> = self
                .windows
                .iter()
                .filter(|w| w.end > server.published_to && w.end <= limit)
                .collect();
            let Some(to) = new.last().map(|w| w.end) else {
                continue;
            };
            published.push((key.clone(), to));
            // Per model: (joules, tokens) charged in the newly settled windows.
            let mut per_model: HashMap<&str, (f64, f64)> = server
                .models
                .iter()
                .map(|m| (m.as_str(), (0.0, 0.0)))
                .collect();
            for w in &new {
                let on_gpu = on_gpus(w);
                for ((k, model), &tok) in &w.tokens {
                    if k != key || tok <= 0.0 {
                        continue;
                    }
                    if let Some(m) = per_model.get_mut(model.as_str()) {
                        let joules = w.charge(&server.gpus, tok, &on_gpu);
                        if joules > 0.0 {
                            m.0 += joules;
                            m.1 += tok;
                        }
                    }
                }
            }
            // The gauges: settled windows of the last GAUGE_SPAN_NS (of its accounting).
            let from = to.saturating_sub(GAUGE_SPAN_NS).max(server.started);
            let span: Vec<&Window> = self
                .windows
                .iter()
                .filter(|w| w.end > from && w.end <= to)
                .collect();
            let span_ns: i64 = span.iter().map(|w| w.end - w.start).sum();
            let (mut busy_util, mut busy_w, mut idle_util, mut idle_w) = (0.0, 0.0, 0.0, 0.0);
            let mut gauge: HashMap<&str, (f64, f64, f64)> = HashMap::new();
            for w in &span {
                let on_gpu = on_gpus(w);
                let len = (w.end - w.start) as f64;
                let busy = w.busy_fraction(key);
                let utils: Vec<f64> = server
                    .gpus
                    .iter()
                    .filter_map(|g| w.util.get(g).copied())
                    .collect();
                if !utils.is_empty() {
                    let u = utils.iter().sum::<f64>() / utils.len() as f64;
                    busy_util += u * busy * len;
                    busy_w += busy * len;
                    idle_util += u * (1.0 - busy) * len;
                    idle_w += (1.0 - busy) * len;
                }
                for ((k, model), &tok) in &w.tokens {
                    if k != key || tok <= 0.0 {
                        continue;
                    }
                    let joules = w.charge(&server.gpus, tok, &on_gpu);
                    let g = gauge.entry(model.as_str()).or_default();
                    g.0 += joules;
                    g.2 += tok;
                    if joules > 0.0 {
                        g.1 += tok;
                    }
                }
            }
            let secs = span_ns as f64 / 1e9;
            let mut models: Vec<ModelFigures> = per_model
                .into_iter()
                .map(|(model, (new_joules, new_tokens))| {
                    let (joules, charged, tokens) = gauge.get(model).copied().unwrap_or_default();
                    ModelFigures {
                        labels: model_labels(&server.labels, model),
                        joules_per_token: (charged > 1e-9 && joules > 0.0)
                            .then(|| joules / charged),
                        tokens_per_second: if secs > 0.0 { tokens / secs } else { 0.0 },
                        new_joules,
                        new_tokens,
                    }
                })
                .collect();
            models.sort_by(|a, b| a.labels.cmp(&b.labels));
            out.push(ServerFigures {
                labels: server.labels.clone(),
                util_in_flight: (busy_w > 1.0).then(|| busy_util / busy_w),
                util_idle: (idle_w > 1.0).then(|| idle_util / idle_w),
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
                .filter(|(k, s)| {
                    s.last_end < oldest
                        && s.published_to >= s.last_end
                        && !in_flight_since.contains_key(&k.pid)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                if let Some(s) = self.servers.remove(&k)
                    && !s.labels.is_empty()
                {
                    out.push(Self::gone(&s.labels, &s.models));
                }
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    fn gone(labels: &Labels, models: &[String]) -> ServerFigures {
        ServerFigures {
            labels: labels.clone(),
            util_in_flight: None,
            util_idle: None,
            models: models
                .iter()
                .map(|m| ModelFigures {
                    labels: model_labels(labels, m),
                    joules_per_token: None,
                    tokens_per_second: 0.0,
                    new_joules: 0.0,
                    new_tokens: 0.0,
                })
                .collect(),
            gone: true,
        }
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

    fn ns(s: f64) -> i64 {
        (s * 1e9) as i64
    }

    fn call(pid: u32, model: &str, gpus: &[u32], t: [f64; 3], tokens: u64) -> CallUse {
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

    /// Rounds at 0..=4 s: 300 W while generating (1-3 s), 100 W otherwise; the windows' SM
    /// utilization is 10, 90, 80, 5.
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

    fn none() -> HashMap<u32, i64> {
        HashMap::new()
    }

    fn only_model(f: &[ServerFigures]) -> &ModelFigures {
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].models.len(), 1, "{f:?}");
        &f[0].models[0]
    }

    fn check_single(f: &[ServerFigures]) {
        let m = only_model(f);
        assert!(!f[0].gone);
        assert_eq!(
            m.labels,
            vec![
                ("pid".to_owned(), "7".to_owned()),
                ("gen_ai_request_model".to_owned(), "llama".to_owned())
            ]
        );
        // (300 + 300) J over 200 tokens; the idle windows' energy is not charged.
        assert!(close(m.new_joules, 600.0), "{m:?}");
        assert!(close(m.new_tokens, 200.0), "{m:?}");
        assert!(close(m.joules_per_token.expect("j/token"), 3.0), "{m:?}");
        // 200 tokens over the 4 s the windows span.
        assert!(close(m.tokens_per_second, 50.0), "{m:?}");
        // Busy 0.5, 1, 1, 0 of windows with utilization 10, 90, 80, 5.
        let s = &f[0];
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
        check_single(&e.publish(10 * S, &none()));
        // Nothing new settled: nothing published again.
        assert!(e.publish(10 * S, &none()).is_empty());
        assert!(close(e.tokens_unaccounted, 0.0));
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
        check_single(&e.publish(10 * S, &none()));
    }

    #[test]
    fn windows_wait_for_calls_in_flight_and_for_the_grace_period() {
        let mut e = Efficiency::new(100);
        for (t, s) in rounds() {
            e.on_round(t, &s);
        }
        e.on_call(call(7, "llama", &[0], [0.5, 1.0, 3.0], 200));
        // Another call of the server started at 2.5 s and is still running: 0-1 and 1-2 settle.
        let f = e.publish(10 * S, &HashMap::from([(7, ns(2.5))]));
        let m = only_model(&f);
        assert!(close(m.new_tokens, 100.0), "{m:?}");
        assert!(close(m.joules_per_token.expect("j/token"), 3.0), "{m:?}");
        assert!(
            close(m.tokens_per_second, 50.0),
            "100 tokens over 2 s: {m:?}"
        );
        // The grace period holds 3-4.
        let f = e.publish(ns(3.5), &none());
        let m = only_model(&f);
        assert!(close(m.new_tokens, 100.0), "{m:?}");
        assert!(close(m.tokens_per_second, 200.0 / 3.0), "{m:?}");
        let f = e.publish(10 * S, &none());
        let m = only_model(&f);
        assert!(close(m.new_tokens, 0.0), "no output in 3-4 s: {m:?}");
        assert!(
            close(m.new_joules, 0.0),
            "idle energy is charged to nobody: {m:?}"
        );
        assert!(close(m.tokens_per_second, 50.0), "the last minute: {m:?}");
        assert!(close(m.joules_per_token.expect("j/token"), 3.0), "{m:?}");
        // A record that comes after its windows were published is counted as unaccounted, and
        // the windows stay as they were reported.
        e.on_call(call(7, "llama", &[0], [1.0, 1.0, 2.0], 40));
        assert!(
            close(e.tokens_unaccounted, 40.0),
            "{}",
            e.tokens_unaccounted
        );
        e.on_round(5 * S, &[gpu(0, Some(1100.0), 100.0, 5)]);
        let f = e.publish(10 * S, &none());
        let m = only_model(&f);
        assert!(close(m.tokens_per_second, 200.0 / 5.0), "{m:?}");
    }

    #[test]
    fn tokens_without_an_energy_reading_are_not_counted_as_charged() {
        let mut e = Efficiency::new(100);
        let mut blind = gpu(0, None, 0.0, 50);
        blind.power_w = None;
        e.on_round(0, std::slice::from_ref(&blind));
        e.on_round(S, std::slice::from_ref(&blind));
        e.on_round(2 * S, &[gpu(0, Some(100.0), 100.0, 50)]);
        e.on_round(3 * S, &[gpu(0, Some(200.0), 100.0, 50)]);
        e.on_call(call(7, "m", &[0], [0.0, 0.0, 3.0], 300));
        let f = e.publish(10 * S, &none());
        let m = only_model(&f);
        // 0-1 s has no reading; 1-2 s: power only at its end (100 W x 1 s); 2-3 s: 100 J.
        assert!(close(m.new_tokens, 200.0), "{m:?}");
        assert!(close(m.new_joules, 200.0), "{m:?}");
        assert!(close(m.joules_per_token.expect("j/t"), 1.0), "{m:?}");
        assert!(
            close(m.tokens_per_second, 100.0),
            "every token counts for throughput: {m:?}"
        );
    }

    #[test]
    fn a_first_call_longer_than_the_hold_does_not_split_a_gpu_twice() {
        let mut e = Efficiency::new(1000);
        let hold = MAX_HOLD_NS / S;
        e.on_round(0, &[gpu(0, Some(0.0), 100.0, 50)]);
        // Server 2 is in flight from 0.5 s on GPU 0 (shared with server 1) for longer than the
        // hold; server 1 answers short calls meanwhile.
        e.on_server_in_flight(2, vec![0], ns(0.5));
        let busy = HashMap::from([(2, ns(0.5))]);
        let (mut drawn, mut charged) = (0.0, 0.0);
        let mut charge = |f: Vec<ServerFigures>| {
            charged += f
                .iter()
                .flat_map(|s| &s.models)
                .map(|m| m.new_joules)
                .sum::<f64>();
        };
        let end = hold + 100;
        for i in 1..=end {
            e.on_round(i * S, &[gpu(0, Some(100.0 * i as f64), 100.0, 50)]);
            drawn += 100.0;
            let t = i as f64;
            e.on_call(call(1, "a", &[0], [t - 0.9, t - 0.9, t - 0.1], 10));
            charge(e.publish(i * S, &busy));
        }
        e.on_call(call(2, "b", &[0], [0.5, 0.5, end as f64], 4000));
        charge(e.publish((end + 100) * S, &none()));
        assert!(
            charged <= drawn + 1e-6,
            "{charged} J charged, {drawn} J drawn"
        );
        assert!(
            e.tokens_unaccounted > 0.0,
            "server 2's tokens in windows already split are late"
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
        let f = e.publish(10 * S, &none());
        let jpt: Vec<(String, f64, f64)> = f
            .iter()
            .flat_map(|s| &s.models)
            .map(|m| {
                let j = m.joules_per_token.expect("j/t");
                (m.labels[1].1.clone(), j, m.new_joules)
            })
            .collect();
        // GPU 0: 400 J over 400 tokens = 1 J each; GPU 1: 1000 J, all server 2's.
        assert_eq!(jpt.len(), 3, "{jpt:?}");
        for (model, want) in [("a", 1.0), ("b", 1.0), ("c", 11.0)] {
            let got = jpt.iter().find(|(m, ..)| m == model).expect(model).1;
            assert!(close(got, want), "{model}: {got} != {want}");
        }
        let total: f64 = jpt.iter().map(|(.., j)| j).sum();
        assert!(close(total, 1400.0), "every joule charged once: {total}");
    }

    #[test]
    fn a_shared_gpu_is_split_once_every_server_on_it_is_done() {
        let mut e = Efficiency::new(100);
        e.on_round(0, &[gpu(0, Some(0.0), 0.0, 50)]);
        e.on_round(S, &[gpu(0, Some(200.0), 0.0, 50)]);
        // Server 2's call is in flight since 0.2 s when server 1's ends.
        let busy = HashMap::from([(2, ns(0.2))]);
        e.on_server_in_flight(2, vec![0], ns(0.2));
        e.on_call(call(1, "a", &[0], [0.0, 0.0, 1.0], 200));
        assert!(
            e.publish(10 * S, &busy)
                .iter()
                .all(|s| s.models.iter().all(|m| m.new_joules == 0.0)),
            "server 1 waits for server 2 on their GPU"
        );
        e.on_call(call(2, "b", &[0], [0.2, 0.2, 1.0], 200));
        let f = e.publish(10 * S, &none());
        let charged: Vec<f64> = f
            .iter()
            .flat_map(|s| &s.models)
            .map(|m| m.new_joules)
            .collect();
        assert_eq!(charged.len(), 2, "{f:?}");
        for j in &charged {
            assert!(close(*j, 100.0), "200 J split evenly: {charged:?}");
        }
    }

    #[test]
    fn busy_time_is_the_union_of_concurrent_calls() {
        let mut e = Efficiency::new(100);
        e.on_round(0, &[gpu(0, Some(0.0), 0.0, 0)]);
        e.on_round(S, &[gpu(0, Some(100.0), 0.0, 80)]);
        e.on_round(2 * S, &[gpu(0, Some(200.0), 0.0, 20)]);
        for _ in 0..4 {
            e.on_call(call(7, "m", &[0], [0.1, 0.1, 0.35], 10));
        }
        let f = e.publish(10 * S, &none());
        let s = &f[0];
        // Busy 0.25 s of the first window (80 %), idle 0.75 s of it and all of the second (20 %).
        assert!(close(s.util_in_flight.expect("busy"), 80.0), "{s:?}");
        assert!(
            close(s.util_idle.expect("idle"), (80.0 * 0.75 + 20.0) / 1.75),
            "{s:?}"
        );
    }

    #[test]
    fn many_short_calls_keep_a_bounded_busy_list() {
        let mut w = Window {
            start: 0,
            end: S,
            ..Default::default()
        };
        let k = ServerKey { pid: 1 };
        for i in 0..1000 {
            w.add_busy(&k, i * 1_000_000, i * 1_000_000 + 400_000);
        }
        assert!(w.busy[&k].len() <= MAX_BUSY_INTERVALS);
        let f = w.busy_fraction(&k);
        assert!((0.4..=1.0).contains(&f), "{f}");
    }

    #[test]
    fn a_call_in_flight_before_the_first_record_keeps_its_windows() {
        let mut e = Efficiency::new(100);
        for i in 0..=10 {
            e.on_round(i * S, &[gpu(0, Some(100.0 * i as f64), 100.0, 50)]);
        }
        // A 10 s stream started at 0; a short call ends first and registers the server.
        let busy = HashMap::from([(7, 0)]);
        e.publish(20 * S, &busy);
        e.on_call(call(7, "m", &[0], [5.0, 5.0, 6.0], 10));
        e.publish(20 * S, &busy);
        e.on_call(call(7, "m", &[0], [0.0, 0.0, 10.0], 1000));
        let f = e.publish(20 * S, &none());
        let m = only_model(&f);
        assert!(close(m.new_tokens, 1010.0), "{m:?}");
        assert!(close(m.new_joules, 1000.0), "{m:?}");
        assert!(close(e.tokens_unaccounted, 0.0), "{}", e.tokens_unaccounted);
    }

    #[test]
    fn a_stuck_call_holds_windows_for_a_bounded_time() {
        let mut e = Efficiency::new(1000);
        e.on_round(0, &[gpu(0, Some(0.0), 100.0, 50)]);
        e.on_call(call(7, "m", &[0], [0.0, 0.0, 0.0], 0));
        let stuck = HashMap::from([(7, 0)]);
        let hold = MAX_HOLD_NS / S;
        for i in 1..=hold + 10 {
            e.on_round(i * S, &[gpu(0, Some(100.0 * i as f64), 100.0, 50)]);
            if i == 5 {
                e.on_call(call(7, "m", &[0], [4.0, 4.0, 5.0], 10));
            }
        }
        let f = e.publish((hold + 20) * S, &stuck);
        let m = only_model(&f);
        assert!(close(m.new_tokens, 10.0), "{m:?}");
    }

    #[test]
    fn windows_dropped_unpublished_count_their_tokens() {
        let mut e = Efficiency::new(3);
        e.on_round(0, &[gpu(0, Some(0.0), 100.0, 50)]);
        e.on_round(S, &[gpu(0, Some(100.0), 100.0, 50)]);
        e.on_call(call(7, "m", &[0], [0.5, 0.5, 1.0], 50));
        let held = HashMap::from([(7, ns(0.6))]);
        e.publish(10 * S, &held);
        for i in 2..6 {
            e.on_round(i * S, &[gpu(0, Some(100.0 * i as f64), 100.0, 50)]);
        }
        assert!(
            close(e.tokens_unaccounted, 50.0),
            "{}",
            e.tokens_unaccounted
        );
    }

    #[test]
    fn power_stands_in_for_a_missing_or_restarted_counter() {
        let mut e = Efficiency::new(100);
        e.on_round(0, &[gpu(0, None, 100.0, 50)]);
        e.on_round(2 * S, &[gpu(0, Some(500.0), 300.0, 50)]);
        // Counter restarted (driver reload): lower than before.
        e.on_round(3 * S, &[gpu(0, Some(10.0), 100.0, 50)]);
        // A repeated timestamp is ignored.
        e.on_round(3 * S, &[gpu(0, Some(20.0), 100.0, 50)]);
        e.on_round(4 * S, &[gpu(0, Some(110.0), 100.0, 50)]);
        e.on_call(call(7, "m", &[0], [0.0, 0.0, 4.0], 400));
        let f = e.publish(10 * S, &none());
        // 0-2 s: mean 200 W x 2 s; 2-3 s: mean 200 W x 1 s; 3-4 s: the counter's 100 J.
        let m = only_model(&f);
        assert!(close(m.new_joules, 700.0), "{m:?}");
        assert!(close(m.joules_per_token.expect("j/t"), 1.75), "{m:?}");
    }

    #[test]
    fn servers_are_forgotten_relabeled_and_bounded() {
        let mut e = Efficiency::new(3);
        e.on_round(0, &[gpu(0, Some(0.0), 100.0, 50)]);
        e.on_round(S, &[gpu(0, Some(100.0), 100.0, 50)]);
        e.on_call(call(7, "m", &[0], [0.0, 0.0, 1.0], 10));
        assert_eq!(e.publish(10 * S, &none()).len(), 1);
        // Same pid, other labels: the old series go.
        let mut c = call(7, "m", &[0], [0.5, 0.5, 1.0], 0);
        c.server_labels = vec![("pid".into(), "7".into()), ("x".into(), "y".into())];
        e.on_call(c);
        let f = e.publish(10 * S, &none());
        assert!(f.iter().any(|s| s.gone && s.labels.len() == 1), "{f:?}");
        for i in 2..8 {
            e.on_round(i * S, &[gpu(0, Some(100.0 * i as f64), 100.0, 50)]);
        }
        assert_eq!(e.windows.len(), 3);
        // Not forgotten while a call is in flight.
        assert!(
            e.publish(20 * S, &HashMap::from([(7, ns(6.5))]))
                .iter()
                .all(|s| !s.gone)
        );
        let f = e.publish(20 * S, &none());
        assert_eq!(f.iter().filter(|s| s.gone).count(), 1, "{f:?}");
        assert!(e.servers.is_empty());
        // A call entirely before the windows kept is not charged (and said so).
        e.on_call(call(8, "m", &[0], [0.0, 0.0, 1.0], 10));
        assert!(close(e.tokens_unaccounted, 10.0));
        // A server-role process on no GPU is no inference server.
        e.on_call(call(10, "m", &[], [6.5, 6.5, 6.5], 5));
        assert!(!e.knows(10));
        // Past the bound on servers, calls are counted as unaccounted.
        for pid in 100..100 + MAX_SERVERS as u32 {
            e.on_call(call(pid, "m", &[0], [6.5, 6.5, 6.6], 0));
        }
        let before = e.tokens_unaccounted;
        e.on_call(call(99_999, "m", &[0], [6.5, 6.5, 6.6], 7));
        assert!(close(e.tokens_unaccounted - before, 7.0));
        assert!(e.servers.len() <= MAX_SERVERS);
        // Hostile figures: zero-length calls, end before start, u64::MAX tokens.
        e.on_call(call(100, "m", &[0], [6.5, 6.5, 6.5], 5));
        e.on_call(call(100, "m", &[0], [7.0, 9.0, 6.0], u64::MAX));
        for f in e.publish(30 * S, &none()) {
            for m in f.models {
                assert!(m.tokens_per_second.is_finite(), "{m:?}");
                assert!(m.joules_per_token.is_none_or(|j| j.is_finite()), "{m:?}");
            }
        }
    }

    #[test]
    fn tokens_before_the_first_window_are_counted() {
        let mut e = Efficiency::new(10);
        e.on_call(call(7, "m", &[0], [0.0, 0.0, 2.0], 100));
        e.on_round(S, &[gpu(0, Some(0.0), 100.0, 50)]);
        e.on_round(2 * S, &[gpu(0, Some(100.0), 100.0, 50)]);
        assert!(
            close(e.tokens_unaccounted, 50.0),
            "{}",
            e.tokens_unaccounted
        );
        let f = e.publish(10 * S, &none());
        assert!(close(only_model(&f).new_tokens, 50.0), "{f:?}");
    }
}
