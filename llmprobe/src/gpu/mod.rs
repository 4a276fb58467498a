//! Beside the pipeline: GPU sampling through NVML. A [`GpuSource`] gives one sample per GPU per
//! interval; the sampler ([`run_sampler`], on its own thread) sends each round to the GPU join
//! ([`join::GpuJoin`], which the enrich stage owns), and the join exports it as
//! `llmprobe_gpu_*` metrics and joins it with server-role calls. NVML is loaded at run time
//! (nvml-wrapper's dynamic loading): without a driver or GPU, llmprobe says so once, sets
//! `llmprobe_gpu_available 0`, and everything else runs unchanged.

pub mod correlate;
pub mod efficiency;
pub mod join;
pub mod nvml;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::{Clock, monotonic_now_ns};

use efficiency::ServerFigures;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// One GPU process seen by the driver.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuProcess {
    /// Process id (host pid namespace).
    pub pid: u32,
    /// GPU memory it uses, bytes.
    pub used_memory_bytes: Option<u64>,
    /// SM utilization over the last sampling period, percent.
    pub sm_util_pct: Option<u32>,
}

/// One sample of one GPU. Fields a device does not support are None.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSample {
    /// Index.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// SM (compute) utilization, percent.
    pub sm_util_pct: Option<u32>,
    /// Memory controller utilization, percent.
    pub mem_util_pct: Option<u32>,
    /// Memory used, bytes.
    pub mem_used_bytes: Option<u64>,
    /// Memory total, bytes.
    pub mem_total_bytes: Option<u64>,
    /// Power draw, watts.
    pub power_w: Option<f64>,
    /// Energy since the driver loaded, joules.
    pub energy_j: Option<f64>,
    /// Temperature, °C.
    pub temperature_c: Option<u32>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// NVML clock throttle reason bits (0: not throttled).
    pub throttle_reasons: Option<u64>,
    /// Processes using it.
    pub processes: Vec<GpuProcess>,
}

/// Where GPU samples come from: NVML on real nodes, a scripted fake in tests.
pub trait GpuSource: Send {
    /// Samples every GPU.
    fn sample(&mut self) -> Result<Vec<GpuSample>, String>;
}

/// `--gpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuMode {
    /// Never touch NVML.
    Off,
    /// Use NVML when it loads.
    Auto,
}

type Labels = Vec<(String, String)>;

/// The `llmprobe_gpu_*` metrics.
pub struct GpuMetrics {
    /// 1 when NVML loaded and sampling runs.
    pub available: Gauge,
    sm_util: Family<Labels, Gauge>,
    mem_util: Family<Labels, Gauge>,
    mem_used: Family<Labels, Gauge>,
    mem_total: Family<Labels, Gauge>,
    power: Family<Labels, Gauge<f64, AtomicU64>>,
    energy: Family<Labels, Gauge<f64, AtomicU64>>,
    temperature: Family<Labels, Gauge>,
    sm_clock: Family<Labels, Gauge>,
    throttle: Family<Labels, Gauge>,
    proc_mem: Family<Labels, Gauge>,
    proc_sm: Family<Labels, Gauge>,
    joules_per_token: Family<Labels, Gauge<f64, AtomicU64>>,
    tokens_per_second: Family<Labels, Gauge<f64, AtomicU64>>,
    token_energy: Family<Labels, Counter<f64, AtomicU64>>,
    charged_tokens: Family<Labels, Counter<f64, AtomicU64>>,
    server_util: Family<Labels, Gauge<f64, AtomicU64>>,
    pub(crate) tokens_unaccounted: Counter<f64, AtomicU64>,
    /// The GPUs' label sets exported by the last round.
    exported: Mutex<Vec<Labels>>,
}

impl GpuMetrics {
    /// Registers the metrics.
    pub fn new(registry: &mut Registry) -> Self {
        let m = GpuMetrics {
            available: Gauge::default(),
            sm_util: Family::default(),
            mem_util: Family::default(),
            mem_used: Family::default(),
            mem_total: Family::default(),
            power: Family::default(),
            energy: Family::default(),
            temperature: Family::default(),
            sm_clock: Family::default(),
            throttle: Family::default(),
            proc_mem: Family::default(),
            proc_sm: Family::default(),
            joules_per_token: Family::default(),
            tokens_per_second: Family::default(),
            token_energy: Family::default(),
            charged_tokens: Family::default(),
            server_util: Family::default(),
            tokens_unaccounted: Counter::default(),
            exported: Mutex::new(Vec::new()),
        };
        registry.register(
            "llmprobe_gpu_available",
            "1 when GPUs are sampled through NVML, else 0",
            m.available.clone(),
        );
        registry.register(
            "llmprobe_gpu_sm_utilization_percent",
            "GPU SM (compute) utilization",
            m.sm_util.clone(),
        );
        registry.register(
            "llmprobe_gpu_memory_utilization_percent",
            "GPU memory controller utilization",
            m.mem_util.clone(),
        );
        registry.register(
            "llmprobe_gpu_memory_used_bytes",
            "GPU memory used",
            m.mem_used.clone(),
        );
        registry.register(
            "llmprobe_gpu_memory_total_bytes",
            "GPU memory total",
            m.mem_total.clone(),
        );
        registry.register(
            "llmprobe_gpu_power_watts",
            "GPU power draw",
            m.power.clone(),
        );
        registry.register(
            "llmprobe_gpu_energy_joules",
            "GPU energy since the driver loaded",
            m.energy.clone(),
        );
        registry.register(
            "llmprobe_gpu_temperature_celsius",
            "GPU temperature",
            m.temperature.clone(),
        );
        registry.register(
            "llmprobe_gpu_sm_clock_mhz",
            "GPU SM clock",
            m.sm_clock.clone(),
        );
        registry.register(
            "llmprobe_gpu_throttle_reasons",
            "NVML clock throttle reason bits (0: none)",
            m.throttle.clone(),
        );
        registry.register(
            "llmprobe_gpu_process_memory_used_bytes",
            "GPU memory used by a process",
            m.proc_mem.clone(),
        );
        registry.register(
            "llmprobe_gpu_process_sm_utilization_percent",
            "SM utilization of a process",
            m.proc_sm.clone(),
        );
        registry.register(
            "llmprobe_gpu_energy_joules_per_output_token",
            "Energy of an inference server's GPUs per output token it produced, over the settled sampling windows of the last minute",
            m.joules_per_token.clone(),
        );
        registry.register(
            "llmprobe_gpu_output_tokens_per_second",
            "Output tokens an inference server produced per second, over the settled sampling windows of the last minute",
            m.tokens_per_second.clone(),
        );
        registry.register(
            "llmprobe_gpu_output_token_energy_joules",
            "GPU energy charged to the output tokens of an inference server and model",
            m.token_energy.clone(),
        );
        registry.register(
            "llmprobe_gpu_output_tokens",
            "Output tokens of an inference server and model charged with GPU energy (the denominator of llmprobe_gpu_output_token_energy_joules_total)",
            m.charged_tokens.clone(),
        );
        registry.register(
            "llmprobe_gpu_server_sm_utilization_percent",
            "Mean SM utilization of an inference server's GPUs while it had requests in flight (state=in_flight) or none (state=idle), over the settled sampling windows of the last minute",
            m.server_util.clone(),
        );
        registry.register(
            "llmprobe_gpu_output_tokens_unaccounted",
            "Server output tokens left out of the GPU energy accounting (a record later than its windows' publication, older than the windows kept, or past the accounting's bounds)",
            m.tokens_unaccounted.clone(),
        );
        m
    }

    /// Exports the efficiency figures of the windows just settled. A figure without a value
    /// removes its series (a stale gauge would read as current).
    pub fn record_efficiency(&self, figures: &[ServerFigures]) {
        for s in figures {
            for (state, v) in [("in_flight", s.util_in_flight), ("idle", s.util_idle)] {
                let mut l = s.labels.clone();
                l.push(("state".to_owned(), state.to_owned()));
                set_float(&self.server_util, &l, v);
            }
            for m in &s.models {
                if s.gone {
                    self.joules_per_token.remove(&m.labels);
                    self.tokens_per_second.remove(&m.labels);
                    self.token_energy.remove(&m.labels);
                    self.charged_tokens.remove(&m.labels);
                    continue;
                }
                set_float(
                    &self.tokens_per_second,
                    &m.labels,
                    Some(m.tokens_per_second),
                );
                set_float(&self.joules_per_token, &m.labels, m.joules_per_token);
                if m.new_joules > 0.0 && m.new_joules.is_finite() && m.new_tokens.is_finite() {
                    self.token_energy
                        .get_or_create(&m.labels)
                        .inc_by(m.new_joules);
                    self.charged_tokens
                        .get_or_create(&m.labels)
                        .inc_by(m.new_tokens);
                }
            }
        }
    }

    /// Exports one round of samples; a reading a device stops giving, or a GPU missing from
    /// the round, removes its series.
    pub fn record(&self, samples: &[GpuSample]) {
        let now: Vec<Labels> = samples.iter().map(gpu_labels).collect();
        {
            let mut exported = self.exported.lock().unwrap_or_else(PoisonError::into_inner);
            for old in exported.iter().filter(|l| !now.contains(l)) {
                self.remove_gpu(old);
            }
            exported.clone_from(&now);
        }
        for (s, l) in samples.iter().zip(now) {
            set_int(&self.sm_util, &l, s.sm_util_pct.map(u64::from));
            set_int(&self.mem_util, &l, s.mem_util_pct.map(u64::from));
            set_int(&self.mem_used, &l, s.mem_used_bytes);
            set_int(&self.mem_total, &l, s.mem_total_bytes);
            set_int(&self.temperature, &l, s.temperature_c.map(u64::from));
            set_int(&self.sm_clock, &l, s.sm_clock_mhz.map(u64::from));
            set_int(&self.throttle, &l, s.throttle_reasons);
            set_float(&self.power, &l, s.power_w);
            set_float(&self.energy, &l, s.energy_j);
            // Per-process series are rebuilt each round so exited processes disappear.
            for p in &s.processes {
                let mut pl = l.clone();
                pl.push(("pid".to_owned(), p.pid.to_string()));
                if let Some(m) = p.used_memory_bytes {
                    self.proc_mem
                        .get_or_create(&pl)
                        .set(i64::try_from(m).unwrap_or(i64::MAX));
                }
                if let Some(u) = p.sm_util_pct {
                    self.proc_sm.get_or_create(&pl).set(i64::from(u));
                }
            }
        }
    }

    /// Removes one GPU's series.
    fn remove_gpu(&self, l: &Labels) {
        for f in [
            &self.sm_util,
            &self.mem_util,
            &self.mem_used,
            &self.mem_total,
            &self.temperature,
            &self.sm_clock,
            &self.throttle,
        ] {
            f.remove(l);
        }
        self.power.remove(l);
        self.energy.remove(l);
    }

    /// Forgets every per-GPU series (sampling failed: the last values would read as current).
    pub(crate) fn clear_all(&self) {
        let exported =
            std::mem::take(&mut *self.exported.lock().unwrap_or_else(PoisonError::into_inner));
        for l in &exported {
            self.remove_gpu(l);
        }
        self.clear_processes();
    }

    /// Forgets per-process series (before a new round).
    pub(crate) fn clear_processes(&self) {
        self.proc_mem.clear();
        self.proc_sm.clear();
    }
}

/// Sets an integer gauge, or removes it when there is no value.
fn set_int(f: &Family<Labels, Gauge>, l: &Labels, v: Option<u64>) {
    match v {
        Some(v) => {
            f.get_or_create(l).set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        None => {
            f.remove(l);
        }
    }
}

/// Sets a float gauge, or removes it when there is no (finite) value.
fn set_float(f: &Family<Labels, Gauge<f64, AtomicU64>>, l: &Labels, v: Option<f64>) {
    match v {
        Some(v) if v.is_finite() => {
            f.get_or_create(l).set(v);
        }
        _ => {
            f.remove(l);
        }
    }
}

fn gpu_labels(s: &GpuSample) -> Labels {
    vec![
        ("gpu".to_owned(), s.index.to_string()),
        ("gpu_uuid".to_owned(), s.uuid.clone()),
        ("gpu_name".to_owned(), s.name.clone()),
    ]
}

/// How long a sampling window waits for events still on their way from the kernel to the
/// tracker (calls that started before the window's end but are not in the tracker's snapshot).
pub const SETTLE_GRACE: Duration = Duration::from_secs(2);

/// How the sampler runs.
#[derive(Debug, Clone, Copy)]
pub struct SamplerConfig {
    /// Sampling interval.
    pub interval: Duration,
    /// See [`SETTLE_GRACE`].
    pub settle_grace: Duration,
    /// The pipeline's clock (the calls' times use it: a wall-clock step must not shift one
    /// against the other).
    pub clock: Clock,
}

/// One sampling round as the sampler hands it to the GPU join: when (Unix ns, the pipeline's
/// clock) and what every GPU said, or why sampling failed.
pub type Round = (i64, Result<Vec<GpuSample>, String>);

/// Samples `source` every interval until `stop` is set or the join is gone, and sends each
/// round to the join ([`join::GpuJoin`], in the enrich stage), which owns the history and the
/// metrics. Runs on its own thread: NVML calls block. A round the join has no room for is
/// dropped (the next one comes an interval later).
pub fn run_sampler<T: From<Round>>(
    mut source: Box<dyn GpuSource>,
    rounds: std::sync::mpsc::SyncSender<T>,
    cfg: SamplerConfig,
    stop: Arc<AtomicBool>,
) {
    let mut next = Instant::now();
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        let sampled = source.sample();
        match &sampled {
            Ok(_) if failing => {
                log::info!("GPU sampling works again");
                failing = false;
            }
            Err(e) if !failing => {
                log::warn!("GPU sampling failed: {e}");
                failing = true;
            }
            _ => {}
        }
        let now = cfg.clock.unix_ns(monotonic_now_ns());
        if let Err(std::sync::mpsc::TrySendError::Disconnected(_)) =
            rounds.try_send(T::from((now, sampled)))
        {
            return;
        }
        next += cfg.interval;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            Some(d) => std::thread::sleep(d),
            None => next = now,
        }
    }
}

/// Starts GPU sampling as `mode` says, its rounds sent to `rounds`: returns false (and
/// `llmprobe_gpu_available 0`) when there is no usable NVML.
pub fn start<T: From<Round> + Send + 'static>(
    mode: GpuMode,
    cfg: SamplerConfig,
    nvml_lib: Option<&std::path::Path>,
    metrics: &GpuMetrics,
    rounds: std::sync::mpsc::SyncSender<T>,
) -> bool {
    metrics.available.set(0);
    if mode == GpuMode::Off {
        log::info!("GPU sampling off (--gpu off)");
        return false;
    }
    match nvml::NvmlSource::new(nvml_lib) {
        Ok(source) => {
            log::info!(
                "GPU sampling through NVML every {:?}: {}",
                cfg.interval,
                source.describe()
            );
            metrics.available.set(1);
            let stop = Arc::new(AtomicBool::new(false));
            let spawned = std::thread::Builder::new()
                .name("gpu-sampler".into())
                .spawn(move || run_sampler(Box::new(source), rounds, cfg, stop));
            if let Err(e) = spawned {
                log::warn!("no GPU metrics: cannot start the sampler thread: {e}");
                metrics.available.set(0);
                return false;
            }
            true
        }
        Err(e) => {
            log::info!(
                "no GPU metrics: NVML is not available on this node ({e}); everything else runs unchanged"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use efficiency::{CallUse, ServerKey};
    use prometheus_client::encoding::text::encode;
    use std::collections::HashMap;

    /// A scripted device: each call returns the next round; at the end it stops the sampler.
    struct Fake {
        rounds: Vec<Result<Vec<GpuSample>, String>>,
        stop: Arc<AtomicBool>,
    }

    impl GpuSource for Fake {
        fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
            if self.rounds.is_empty() {
                self.stop.store(true, Ordering::Relaxed);
                return Err("no more rounds".into());
            }
            self.rounds.remove(0)
        }
    }

    #[test]
    fn the_sampler_sends_every_round_then_stops() {
        let stop = Arc::new(AtomicBool::new(false));
        let fake = Fake {
            rounds: vec![Ok(vec![gpu(1, 1.0, &[])]), Err("gone".into())],
            stop: stop.clone(),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Round>(8);
        run_sampler(Box::new(fake), tx, cfg(SETTLE_GRACE), stop);
        let got: Vec<_> = rx.try_iter().map(|(_, r)| r).collect();
        assert_eq!(
            got,
            vec![
                Ok(vec![gpu(1, 1.0, &[])]),
                Err("gone".to_owned()),
                Err("no more rounds".to_owned())
            ]
        );
    }

    fn gpu(sm: u32, power: f64, pids: &[u32]) -> GpuSample {
        GpuSample {
            index: 0,
            uuid: "GPU-1234".into(),
            name: "Fake H100".into(),
            sm_util_pct: Some(sm),
            mem_util_pct: Some(10),
            mem_used_bytes: Some(8 << 30),
            mem_total_bytes: Some(80 << 30),
            power_w: Some(power),
            energy_j: Some(1000.5),
            temperature_c: Some(55),
            sm_clock_mhz: Some(1980),
            throttle_reasons: Some(0),
            processes: pids
                .iter()
                .map(|p| GpuProcess {
                    pid: *p,
                    used_memory_bytes: Some(1 << 30),
                    sm_util_pct: Some(sm),
                })
                .collect(),
        }
    }

    fn text(reg: &Registry) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, reg);
        s
    }

    fn cfg(grace: Duration) -> SamplerConfig {
        SamplerConfig {
            interval: Duration::from_millis(1),
            settle_grace: grace,
            clock: Clock { offset_ns: 0 },
        }
    }

    /// Feeds `rounds` to a join, 1 ms apart; `hook(n, registry text, join)` runs before round
    /// n + 1 (rounds 1..=n handled) and once after the last.
    fn drive(
        rounds: Vec<Result<Vec<GpuSample>, String>>,
        grace: Duration,
        mut hook: impl FnMut(usize, String, &mut join::GpuJoin),
    ) -> (String, join::GpuJoin) {
        let mut reg = Registry::default();
        let m = Arc::new(GpuMetrics::new(&mut reg));
        let mut join = join::GpuJoin::new(&cfg(grace), m);
        let n = rounds.len();
        for (i, r) in rounds.into_iter().enumerate() {
            hook(i, text(&reg), &mut join);
            join.on_round((1_000_000_000_000 + i as i64 * 1_000_000, r));
        }
        hook(n, text(&reg), &mut join);
        (text(&reg), join)
    }

    const LABELS: &str = r#"{gpu="0",gpu_uuid="GPU-1234",gpu_name="Fake H100"}"#;

    #[test]
    fn samples_become_metrics_and_processes_come_and_go() {
        let mut partial = gpu(5, 70.0, &[42]);
        partial.power_w = None;
        let mut second_gpu = gpu(1, 1.0, &[]);
        second_gpu.index = 1;
        second_gpu.uuid = "GPU-5678".into();
        let rounds = vec![
            Ok(vec![gpu(87, 312.5, &[42, 43]), second_gpu]),
            Ok(vec![gpu(3, 80.0, &[42])]),
            Ok(vec![partial]),
            Err("gone".into()),
        ];
        let (end, mut join) = drive(rounds, SETTLE_GRACE, move |n, t, _| match n {
            1 => {
                assert!(t.contains("llmprobe_gpu_available 1"), "{t}");
                assert!(t.contains("GPU-5678"), "{t}");
                let sm = format!("llmprobe_gpu_sm_utilization_percent{LABELS} 87");
                assert!(t.contains(&sm), "{t}");
                let power = format!("llmprobe_gpu_power_watts{LABELS} 312.5");
                assert!(t.contains(&power), "{t}");
                assert!(t.contains(r#"pid="43"} 1073741824"#), "{t}");
            }
            2 => {
                assert!(t.contains(&format!("{LABELS} 3\n")), "{t}");
                assert!(
                    !t.contains(r#"pid="43""#),
                    "an exited process is forgotten: {t}"
                );
                assert!(
                    !t.contains("GPU-5678"),
                    "a GPU missing from the round leaves no stale series: {t}"
                );
            }
            3 => {
                assert!(
                    !t.contains("llmprobe_gpu_power_watts{"),
                    "a reading the device stops giving goes: {t}"
                );
            }
            4 => {
                assert!(t.contains("llmprobe_gpu_available 0"), "{t}");
                assert!(
                    !t.contains("llmprobe_gpu_sm_utilization_percent{"),
                    "a failing device leaves no stale figures: {t}"
                );
            }
            _ => {}
        });
        assert!(end.contains("llmprobe_gpu_available 0"));
        assert!(
            !join.history_mut().is_empty(),
            "rounds are kept for the join"
        );
    }

    /// 20 rounds of a 250 W device with pid 42 on it; before round 6, pid 42 answered a call
    /// covering rounds 1-5 with 500 output tokens.
    fn efficiency_run(grace: Duration, snapshot_before: bool) -> String {
        let mut energy = 0.0;
        let rounds = (0..20)
            .map(|_| {
                energy += 25.0;
                let mut s = gpu(90, 250.0, &[42]);
                s.energy_j = Some(energy);
                Ok(vec![s])
            })
            .collect();
        let (text, _) = drive(rounds, grace, move |n, _, join| {
            if n != 5 {
                return;
            }
            let h = join.history_mut();
            let (first, last) = h.span().expect("rounds");
            if snapshot_before {
                // The tracker's newest word is from before the call's windows: records of calls
                // holding them may still be on their way.
                h.add_snapshot(correlate::InFlightSnapshot {
                    since: HashMap::new(),
                    taken_at: first,
                });
            }
            h.efficiency.on_call(CallUse {
                server: ServerKey { pid: 42 },
                server_labels: vec![
                    ("pid".into(), "42".into()),
                    ("process_executable_name".into(), "vllm".into()),
                ],
                model: "tiny".into(),
                gpus: vec![0],
                start_ns: first,
                first_output_ns: Some(first),
                end_ns: last,
                output_tokens: 500,
            });
        });
        text
    }

    const SERIES: &str = r#"{pid="42",process_executable_name="vllm",gen_ai_request_model="tiny"}"#;

    #[test]
    fn sampler_publishes_energy_per_token_once_windows_settle() {
        let t = efficiency_run(Duration::ZERO, false);
        let value = |name: &str| -> f64 {
            let prefix = format!("{name}{SERIES} ");
            t.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{prefix} missing: {t}"))
        };
        // Rounds 1-5 span four windows of 25 J each: 100 J for 500 tokens.
        let jpt = value("llmprobe_gpu_energy_joules_per_output_token");
        assert!((jpt - 0.2).abs() < 1e-9, "{jpt}");
        assert!((value("llmprobe_gpu_output_token_energy_joules_total") - 100.0).abs() < 1e-9);
        assert!((value("llmprobe_gpu_output_tokens_total") - 500.0).abs() < 1e-6);
        assert!(value("llmprobe_gpu_output_tokens_per_second") > 0.0);
        for series in [
            r#"llmprobe_gpu_server_sm_utilization_percent{pid="42",process_executable_name="vllm",state="in_flight"} 90"#,
            r#"llmprobe_gpu_server_sm_utilization_percent{pid="42",process_executable_name="vllm",state="idle"} 90"#,
            "llmprobe_gpu_output_tokens_unaccounted_total 0",
        ] {
            assert!(t.contains(series), "{series} missing: {t}");
        }
    }

    #[test]
    fn windows_wait_for_the_grace_period_and_the_trackers_snapshot() {
        for (grace, early) in [(Duration::from_secs(3600), false), (Duration::ZERO, true)] {
            let t = efficiency_run(grace, early);
            assert!(
                !t.contains("llmprobe_gpu_energy_joules_per_output_token{"),
                "grace {grace:?}, snapshot before the windows {early}: {t}"
            );
        }
    }

    #[test]
    fn off_means_unavailable() {
        let mut reg = Registry::default();
        let m = Arc::new(GpuMetrics::new(&mut reg));
        let (tx, _rx) = std::sync::mpsc::sync_channel::<Round>(1);
        assert!(!start(GpuMode::Off, cfg(SETTLE_GRACE), None, &m, tx));
        assert!(text(&reg).contains("llmprobe_gpu_available 0"));
    }
}
