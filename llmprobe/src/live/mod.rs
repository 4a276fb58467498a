//! The live view: what `llmprobe top` and the trace page read from a running agent.
//!
//! Beside the record path, not on it: the track stage publishes the calls in flight every
//! 500 ms ([`LiveView::publish_in_flight`]), and the fan-out hands every finished record to
//! [`LiveSink`], which keeps the newest ones with their token timelines and a compact sample
//! per call for the per-model rollups. The API ([`api`]) copies what it answers from under one
//! short lock and does its work (grouping, JSON) outside it, on a blocking thread (at most two
//! at once), so the tracker and the fan-out never wait on a reader for more than a copy.
//!
//! Invariants:
//! * Bounded whatever the traffic: [`MAX_IN_FLIGHT`] calls in flight shown (the total is
//!   counted), [`MAX_RECENT`] recent calls, [`MAX_TICKS`] token ticks per call (the rest
//!   counted in the call's `ticks_dropped`), [`MAX_SAMPLES`] rollup samples no older than
//!   [`MAX_WINDOW_S`], and [`MAX_MODELS`] distinct model names in the samples (past it, `other`).
//!   Worst case about 6 MiB.
//! * Only what the JSON records already carry leaves here: no prompt or completion text, no
//!   credential; process names and models are the record's (capped) fields.
//! * Every call has a sequence number (`seq`), increasing from 1, by which the page asks for
//!   it; a call that has left the recent ring is answered with 404.

pub mod api;
pub mod serve;
pub mod ui;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::export::CallSink;
use crate::llm::LlmCall;

/// Calls in flight kept per snapshot (oldest first); the rest are only counted.
pub const MAX_IN_FLIGHT: usize = 256;
/// Finished calls kept for the call list and timelines.
pub const MAX_RECENT: usize = 512;
/// Token ticks kept per call; later ones are counted in `ticks_dropped`.
pub const MAX_TICKS: usize = 2048;
/// Rollup samples kept (one per finished call, about 48 bytes each).
pub const MAX_SAMPLES: usize = 65_536;
/// The longest rollup window, seconds.
pub const MAX_WINDOW_S: f64 = 600.0;
/// Distinct model names in the rollup samples; past it names no sample holds any more are
/// forgotten, and while all are held new ones count as `other`.
pub const MAX_MODELS: usize = 256;
/// Rollup rows answered (busiest first); the calls of the rest are folded into one `other` row
/// per role.
pub const MAX_ROLLUPS: usize = 64;

/// One call still in flight, as the tracker sees it now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InFlightCall {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// Container id, when the process runs in one.
    pub container_id: Option<String>,
    /// `client` or `server`.
    pub role: &'static str,
    /// Provider (from the host and the API dialect).
    pub provider: String,
    /// The API dialect (`openai.chat_completions`, ...).
    pub api: &'static str,
    /// The model the request asked for, once its body was read.
    pub model: Option<String>,
    /// The server's name (Host or TLS SNI), when known.
    pub server_address: Option<String>,
    /// Streaming, once known.
    pub stream: Option<bool>,
    /// First request byte, Unix ns.
    pub start_unix_ns: i64,
    /// First output event, Unix ns.
    pub first_token_unix_ns: Option<i64>,
    /// Output events so far (stream chunks carrying output).
    pub chunks: u64,
    /// Output tokens so far: the usage the server reported, else an estimate from the text
    /// seen (characters / 4, at least one per chunk).
    pub tokens: u64,
}

/// What the live view holds, behind one lock.
#[derive(Default)]
struct State {
    /// The latest in-flight snapshot, oldest first, with when it was taken (Unix ns) and how
    /// many calls were in flight in all.
    in_flight: Vec<InFlightCall>,
    in_flight_total: usize,
    in_flight_at: i64,
    recent: VecDeque<Arc<RecentCall>>,
    next_seq: u64,
    samples: VecDeque<Sample>,
    models: HashMap<String, Arc<str>>,
    /// Samples and calls given up to the bounds, for the API's `dropped` figures.
    samples_dropped: u64,
}

/// A finished call kept for the call list and its timeline.
#[derive(Debug, Clone)]
pub struct RecentCall {
    /// Sequence number (from 1).
    pub seq: u64,
    /// The record, as JSONL writes it.
    pub record: LlmCall,
    /// Seconds from the call's start (first request byte) to each output event, in order.
    pub ticks_s: Vec<f32>,
    /// Output events past [`MAX_TICKS`].
    pub ticks_dropped: u64,
    /// First request byte, Unix ns.
    pub start_unix_ns: i64,
    /// End, Unix ns.
    pub end_unix_ns: i64,
}

/// A finished call's figures for the rollups.
#[derive(Debug, Clone)]
struct Sample {
    end_unix_ns: i64,
    model: Arc<str>,
    provider: Arc<str>,
    role: &'static str,
    ttft_s: Option<f32>,
    tpot_s: Option<f32>,
    duration_s: f32,
    output_tokens: u32,
    error: bool,
    aborted: bool,
}

/// The live view shared by the track stage, the fan-out and the API server.
#[derive(Default)]
pub struct LiveView {
    state: Mutex<State>,
}

impl LiveView {
    /// An empty view.
    pub fn new() -> Arc<Self> {
        Arc::new(LiveView::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the in-flight snapshot: `calls` (at most [`MAX_IN_FLIGHT`] are kept, oldest
    /// first), `total` in flight in all, taken at `at` (Unix ns).
    pub fn publish_in_flight(&self, mut calls: Vec<InFlightCall>, total: usize, at: i64) {
        calls.sort_by_key(|c| c.start_unix_ns);
        calls.truncate(MAX_IN_FLIGHT);
        let mut s = self.lock();
        s.in_flight = calls;
        s.in_flight_total = total;
        s.in_flight_at = at;
    }

    /// Takes a finished call.
    pub fn push(&self, call: &LlmCall) {
        let mut rec = LlmCall {
            detail: Default::default(),
            ..call.clone()
        };
        // Opt-in content never reaches the live view: its socket and page are read by people
        // the content was not meant for (the page by anyone who reaches its address), and 512
        // records of content would be the largest thing the view holds.
        rec.system_instructions = None;
        rec.input_messages = None;
        rec.output_messages = None;
        // The timeline is built here; the record's own details are not served.
        let detail = &call.detail;
        let (ticks_s, ticks_dropped) = ticks(detail, call.duration_s);
        let mut s = self.lock();
        s.next_seq += 1;
        let seq = s.next_seq;
        if s.recent.len() >= MAX_RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back(Arc::new(RecentCall {
            seq,
            record: rec,
            ticks_s,
            ticks_dropped,
            start_unix_ns: detail.start_unix_ns,
            end_unix_ns: detail.end_unix_ns,
        }));
        // Samples past the longest window go first (the names they held can then be reused).
        let horizon = detail.end_unix_ns - (MAX_WINDOW_S * 1e9) as i64;
        while s.samples.front().is_some_and(|f| f.end_unix_ns < horizon) {
            s.samples.pop_front();
        }
        let model_name = call
            .response_model
            .as_deref()
            .or(call.request_model.as_deref())
            .unwrap_or("unknown");
        let model = s.intern(model_name);
        let provider = s.intern(&call.provider);
        let sample = Sample {
            end_unix_ns: detail.end_unix_ns,
            model,
            provider,
            role: call.role,
            ttft_s: call.ttft_s.map(|v| v as f32),
            tpot_s: call.tpot_s.map(|v| v as f32),
            duration_s: call.duration_s as f32,
            output_tokens: call
                .output_tokens
                .map_or(0, |t| u32::try_from(t).unwrap_or(u32::MAX)),
            error: call.error_type.is_some(),
            aborted: call.aborted,
        };
        if s.samples.len() >= MAX_SAMPLES {
            s.samples.pop_front();
            s.samples_dropped += 1;
        }
        s.samples.push_back(sample);
    }

    /// The in-flight snapshot: (calls, total in flight, taken at Unix ns).
    pub fn in_flight(&self) -> (Vec<InFlightCall>, usize, i64) {
        let s = self.lock();
        (s.in_flight.clone(), s.in_flight_total, s.in_flight_at)
    }

    /// Recent calls, newest first, that `keep` accepts, at most `limit`.
    pub fn recent(&self, limit: usize, keep: impl Fn(&RecentCall) -> bool) -> Vec<Arc<RecentCall>> {
        let s = self.lock();
        s.recent
            .iter()
            .rev()
            .filter(|c| keep(c))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The recent call `seq`, while it is kept.
    pub fn call(&self, seq: u64) -> Option<Arc<RecentCall>> {
        let s = self.lock();
        let first = s.recent.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        s.recent.get(i).filter(|c| c.seq == seq).cloned()
    }

    /// Per-model figures over the calls that ended in the `window_s` seconds before `now`
    /// (Unix ns), one per model, provider and role (a call between two processes of the node
    /// is seen from both ends), busiest first, at most [`MAX_ROLLUPS`] rows and one `other`
    /// row per role for the rest. The samples are copied out under the lock and grouped
    /// outside it, so the tracker and the fan-out never wait for the grouping.
    pub fn rollups(&self, now: i64, window_s: f64) -> Vec<Rollup> {
        let window_s = window_s.clamp(1.0, MAX_WINDOW_S);
        let from = now - (window_s * 1e9) as i64;
        let samples: Vec<Sample> = {
            let s = self.lock();
            // Samples are in end order: the window is a suffix.
            let first = s.samples.partition_point(|x| x.end_unix_ns < from);
            s.samples.range(first..).cloned().collect()
        };
        type Key = (Arc<str>, Arc<str>, &'static str);
        let mut by: HashMap<Key, Vec<&Sample>> = HashMap::new();
        for x in &samples {
            by.entry((x.model.clone(), x.provider.clone(), x.role))
                .or_default()
                .push(x);
        }
        let mut groups: Vec<(Key, Vec<&Sample>)> = by.into_iter().collect();
        groups.sort_by(|(ka, a), (kb, b)| {
            b.len()
                .cmp(&a.len())
                .then(ka.0.cmp(&kb.0))
                .then(ka.2.cmp(kb.2))
                .then(ka.1.cmp(&kb.1))
        });
        let mut rest: Vec<(&'static str, Vec<&Sample>)> = Vec::new();
        for (k, xs) in groups.drain(MAX_ROLLUPS.min(groups.len())..) {
            match rest.iter_mut().find(|(role, _)| *role == k.2) {
                Some((_, v)) => v.extend(xs),
                None => rest.push((k.2, xs)),
            }
        }
        let mut out: Vec<Rollup> = groups
            .into_iter()
            .map(|((model, provider, role), xs)| Rollup::of(&model, &provider, role, &xs, window_s))
            .collect();
        out.extend(
            rest.into_iter()
                .map(|(role, xs)| Rollup::of("other", "other", role, &xs, window_s)),
        );
        out
    }
}

impl State {
    /// The shared name for a model or provider; past [`MAX_MODELS`] names, `other`.
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.models.get(name) {
            return a.clone();
        }
        // One place is kept for `other`.
        if self.models.len() >= MAX_MODELS - 1 {
            // Names no sample holds any more (they aged out of the window) make room.
            self.models.retain(|_, a| Arc::strong_count(a) > 1);
        }
        if self.models.len() >= MAX_MODELS - 1 {
            return self
                .models
                .entry("other".to_owned())
                .or_insert_with(|| Arc::from("other"))
                .clone();
        }
        let a: Arc<str> = Arc::from(name);
        self.models.insert(name.to_owned(), a.clone());
        a
    }
}

/// A call's output events as offsets from its start (seconds): the first at its TTFT, each
/// next one a gap later. At most [`MAX_TICKS`]; returns the number left out.
fn ticks(detail: &crate::llm::CallDetail, duration_s: f64) -> (Vec<f32>, u64) {
    let Some(first) = detail.first_chunk_unix_ns else {
        return (Vec::new(), 0);
    };
    let mut t = (first - detail.start_unix_ns) as f64 / 1e9;
    let total = 1 + detail.gaps_s.len();
    let mut out = Vec::with_capacity(total.min(MAX_TICKS));
    out.push(t.clamp(0.0, duration_s) as f32);
    for g in detail.gaps_s.iter().take(MAX_TICKS - 1) {
        t += g;
        out.push(t.clamp(0.0, duration_s.max(t)) as f32);
    }
    (out, (total - total.min(MAX_TICKS)) as u64)
}

/// One model's figures over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollup {
    /// The model (response model, else the requested one).
    pub model: String,
    /// Its provider.
    pub provider: String,
    /// `client` or `server`.
    pub role: &'static str,
    /// Calls that ended in the window.
    pub calls: u64,
    /// Calls per second over the window.
    pub calls_per_s: f64,
    /// Calls that failed (an `error_type`).
    pub errors: u64,
    /// Calls aborted before their end.
    pub aborts: u64,
    /// `errors / calls`.
    pub error_rate: f64,
    /// `aborts / calls`.
    pub abort_rate: f64,
    /// Time to first token, median and 95th percentile (nearest rank), seconds.
    pub ttft_p50_s: Option<f64>,
    /// See `ttft_p50_s`.
    pub ttft_p95_s: Option<f64>,
    /// Time per output token, median and 95th percentile, seconds.
    pub tpot_p50_s: Option<f64>,
    /// See `tpot_p50_s`.
    pub tpot_p95_s: Option<f64>,
    /// Output tokens per second of call time (sum of tokens / sum of durations).
    pub output_tokens_per_s: Option<f64>,
}

impl Rollup {
    fn of(
        model: &str,
        provider: &str,
        role: &'static str,
        xs: &[&Sample],
        window_s: f64,
    ) -> Rollup {
        let calls = xs.len() as u64;
        let errors = xs.iter().filter(|x| x.error).count() as u64;
        let aborts = xs.iter().filter(|x| x.aborted).count() as u64;
        let ttft: Vec<f64> = xs.iter().filter_map(|x| x.ttft_s.map(f64::from)).collect();
        let tpot: Vec<f64> = xs.iter().filter_map(|x| x.tpot_s.map(f64::from)).collect();
        let tokens: f64 = xs.iter().map(|x| f64::from(x.output_tokens)).sum();
        let time: f64 = xs.iter().map(|x| f64::from(x.duration_s)).sum();
        let rate = |n: u64| {
            if calls == 0 {
                0.0
            } else {
                n as f64 / calls as f64
            }
        };
        Rollup {
            model: model.to_owned(),
            provider: provider.to_owned(),
            role,
            calls,
            calls_per_s: calls as f64 / window_s,
            errors,
            aborts,
            error_rate: rate(errors),
            abort_rate: rate(aborts),
            ttft_p50_s: quantile(&ttft, 0.50),
            ttft_p95_s: quantile(&ttft, 0.95),
            tpot_p50_s: quantile(&tpot, 0.50),
            tpot_p95_s: quantile(&tpot, 0.95),
            output_tokens_per_s: (time > 0.0 && tokens > 0.0).then(|| tokens / time),
        }
    }
}

/// The nearest-rank quantile `q` of `v` (None when empty).
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

/// The fan-out sink feeding the live view.
pub struct LiveSink(pub Arc<LiveView>);

impl CallSink for LiveSink {
    fn name(&self) -> &'static str {
        "live"
    }

    fn emit(&mut self, calls: &[LlmCall]) {
        for c in calls {
            self.0.push(c);
        }
    }

    fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::CallDetail;

    fn call(model: &str, end_s: i64, ttft: f64, gaps: Vec<f64>) -> LlmCall {
        LlmCall {
            role: "client",
            pid: 7,
            comm: "app".into(),
            provider: "openai".into(),
            api: "openai.chat_completions",
            operation: "chat",
            request_model: Some(model.into()),
            duration_s: 2.0,
            ttft_s: Some(ttft),
            tpot_s: Some(0.01),
            output_tokens: Some(10),
            detail: CallDetail {
                start_unix_ns: end_s * 1_000_000_000 - 2_000_000_000,
                end_unix_ns: end_s * 1_000_000_000,
                first_chunk_unix_ns: Some(
                    end_s * 1_000_000_000 - 2_000_000_000 + (ttft * 1e9) as i64,
                ),
                gaps_s: gaps,
                ..CallDetail::default()
            },
            ..LlmCall::default()
        }
    }

    #[test]
    fn captured_content_never_reaches_the_live_view() {
        let v = LiveView::new();
        let mut c = call("m", 100, 0.25, vec![]);
        let doc = crate::llm::ContentJson("[{\"role\":\"user\"}]".into());
        c.system_instructions = Some(doc.clone());
        c.input_messages = Some(doc.clone());
        c.output_messages = Some(doc);
        v.push(&c);
        let kept = v.call(1).expect("kept");
        assert_eq!(kept.record.input_messages, None);
        assert_eq!(kept.record.output_messages, None);
        assert_eq!(kept.record.system_instructions, None);
        assert_eq!(kept.record.request_model.as_deref(), Some("m"));
    }

    #[test]
    fn ticks_start_at_ttft_and_add_the_gaps() {
        let v = LiveView::new();
        v.push(&call("m", 100, 0.25, vec![0.5, 0.25]));
        let c = v.call(1).expect("kept");
        assert_eq!(c.ticks_s, vec![0.25, 0.75, 1.0]);
        assert_eq!(c.ticks_dropped, 0);
        assert!(
            c.record.detail.gaps_s.is_empty(),
            "details are not kept twice"
        );
    }

    #[test]
    fn ticks_are_bounded_and_the_rest_counted() {
        let v = LiveView::new();
        v.push(&call("m", 100, 0.1, vec![0.0001; MAX_TICKS + 10]));
        let c = v.call(1).expect("kept");
        assert_eq!(c.ticks_s.len(), MAX_TICKS);
        assert_eq!(c.ticks_dropped, 11);
    }

    #[test]
    fn the_recent_ring_is_bounded_and_old_calls_are_gone() {
        let v = LiveView::new();
        for i in 0..(MAX_RECENT as i64 + 5) {
            v.push(&call("m", 100 + i, 0.1, vec![]));
        }
        assert!(v.call(1).is_none());
        assert!(v.call(5).is_none());
        assert_eq!(v.call(6).expect("kept").seq, 6);
        let last = MAX_RECENT as u64 + 5;
        assert_eq!(v.call(last).expect("kept").seq, last);
        assert!(v.call(last + 1).is_none());
        let newest = v.recent(3, |_| true);
        assert_eq!(
            newest.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![last, last - 1, last - 2]
        );
    }

    #[test]
    fn rollups_cover_the_window_only() {
        let v = LiveView::new();
        v.push(&call("old", 10, 0.1, vec![]));
        for (i, t) in [0.1, 0.2, 0.3, 0.4].iter().enumerate() {
            let mut c = call("m", 100 + i as i64, *t, vec![]);
            c.aborted = i == 0;
            c.error_type = (i == 1).then(|| "server_error".to_owned());
            v.push(&c);
        }
        let r = v.rollups(104 * 1_000_000_000, 60.0);
        assert_eq!(r.len(), 1, "{r:?}");
        let m = &r[0];
        assert_eq!(
            (m.model.as_str(), m.calls, m.errors, m.aborts),
            ("m", 4, 1, 1)
        );
        assert_eq!(m.ttft_p50_s, Some(f64::from(0.2f32)));
        assert_eq!(m.ttft_p95_s, Some(f64::from(0.4f32)));
        assert_eq!(m.error_rate, 0.25);
        assert_eq!(m.output_tokens_per_s, Some(5.0));
    }

    #[test]
    fn rollups_keep_the_two_ends_of_a_call_apart() {
        let v = LiveView::new();
        let c = call("m", 100, 0.1, vec![]);
        v.push(&c);
        v.push(&LlmCall {
            role: "server",
            ..c.clone()
        });
        let r = v.rollups(100 * 1_000_000_000, 60.0);
        let roles: Vec<(&str, u64)> = r.iter().map(|m| (m.role, m.calls)).collect();
        assert_eq!(roles, [("client", 1), ("server", 1)]);
    }

    #[test]
    fn model_names_are_bounded_and_aged_out_names_make_room() {
        let v = LiveView::new();
        for i in 0..(MAX_MODELS + 20) {
            v.push(&call(&format!("m{i}"), 100, 0.1, vec![]));
        }
        {
            let s = v.lock();
            assert!(s.models.len() <= MAX_MODELS);
            assert!(s.samples.iter().any(|x| &*x.model == "other"));
        }
        // Once those calls left the window, a new model has its own name again.
        let later = 100 + MAX_WINDOW_S as i64 + 10;
        v.push(&call("fresh-model", later, 0.1, vec![]));
        let r = v.rollups(later * 1_000_000_000, 60.0);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].model, "fresh-model");
    }

    #[test]
    fn rollup_rows_are_bounded_and_the_rest_folded() {
        let v = LiveView::new();
        for i in 0..(MAX_ROLLUPS + 30) {
            // Model i has i + 1 calls: the busiest are kept.
            for _ in 0..=i {
                v.push(&call(&format!("m{i:03}"), 100, 0.1, vec![]));
            }
        }
        let r = v.rollups(100 * 1_000_000_000, 60.0);
        assert_eq!(r.len(), MAX_ROLLUPS + 1, "one other row for the one role");
        assert_eq!(r[0].model, format!("m{:03}", MAX_ROLLUPS + 29));
        let other = r.last().expect("other");
        assert_eq!(other.model, "other");
        // Models 0..30 hold 1 + 2 + ... + 30 calls.
        assert_eq!(other.calls, 30 * 31 / 2);
        let total: u64 = r.iter().map(|m| m.calls).sum();
        assert_eq!(total as usize, (MAX_ROLLUPS + 30) * (MAX_ROLLUPS + 31) / 2);
    }

    #[test]
    fn in_flight_is_bounded_and_oldest_first() {
        let v = LiveView::new();
        let calls: Vec<InFlightCall> = (0..(MAX_IN_FLIGHT + 9))
            .rev()
            .map(|i| InFlightCall {
                pid: 1,
                comm: "a".into(),
                container_id: None,
                role: "client",
                provider: "openai".into(),
                api: "openai.chat_completions",
                model: None,
                server_address: None,
                stream: None,
                start_unix_ns: i as i64,
                first_token_unix_ns: None,
                chunks: 0,
                tokens: 0,
            })
            .collect();
        v.publish_in_flight(calls, MAX_IN_FLIGHT + 9, 5);
        let (c, total, at) = v.in_flight();
        assert_eq!((c.len(), total, at), (MAX_IN_FLIGHT, MAX_IN_FLIGHT + 9, 5));
        assert_eq!(c[0].start_unix_ns, 0);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.95), Some(3.0));
        assert_eq!(quantile(&[f64::NAN], 0.5), None);
    }

    /// The live view's cost per finished call, against the JSON line the same record becomes
    /// (the JSONL sink's work), in one run: `cargo test --release -p llmprobe --lib
    /// live_cost_per_call -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn live_cost_per_call() {
        let c = call("gpt-4o-mini-2024-07-18", 100, 0.3, vec![0.02; 300]);
        let n = 20_000;
        let time = |f: &mut dyn FnMut()| {
            let t = std::time::Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() * 1e9 / n as f64
        };
        let mut line = Vec::new();
        let mut best = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let v = LiveView::new();
            let push = time(&mut || v.push(&c));
            let json = time(&mut || {
                line.clear();
                serde_json::to_writer(&mut line, &c).expect("json");
            });
            best = (best.0.min(push), best.1.min(json));
        }
        println!(
            "live view push: {:.0} ns per call (300 ticks); JSON line of the record: {:.0} ns; ratio {:.2}",
            best.0,
            best.1,
            best.0 / best.1
        );
    }
}
