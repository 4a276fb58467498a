//! Beside the pipeline: GPU sampling through NVML. A [`GpuSource`] gives one sample per GPU per
//! interval; the sampler exports it as `llmprobe_gpu_*` metrics. NVML is loaded at run time
//! (nvml-wrapper's dynamic loading): without a driver or GPU, llmprobe says so once, sets
//! `llmprobe_gpu_available 0`, and everything else runs unchanged.

pub mod correlate;
pub mod efficiency;
pub mod nvml;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use correlate::GpuHistory;
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
    server_util: Family<Labels, Gauge<f64, AtomicU64>>,
    tokens_unaccounted: Counter<f64, AtomicU64>,
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
            server_util: Family::default(),
            tokens_unaccounted: Counter::default(),
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
            "Energy of an inference server's GPUs per output token it produced, over the latest settled sampling windows with output",
            m.joules_per_token.clone(),
        );
        registry.register(
            "llmprobe_gpu_output_tokens_per_second",
            "Output tokens an inference server produced per second, over the latest settled sampling windows",
            m.tokens_per_second.clone(),
        );
        registry.register(
            "llmprobe_gpu_output_token_energy_joules",
            "GPU energy charged to the output tokens of an inference server and model",
            m.token_energy.clone(),
        );
        registry.register(
            "llmprobe_gpu_server_sm_utilization_percent",
            "Mean SM utilization of an inference server's GPUs while it had requests in flight (state=in_flight) or none (state=idle), over the latest settled sampling windows",
            m.server_util.clone(),
        );
        registry.register(
            "llmprobe_gpu_output_tokens_unaccounted",
            "Server output tokens left out of the GPU energy accounting (a record later than its windows, or older than the windows kept)",
            m.tokens_unaccounted.clone(),
        );
        m
    }

    /// Exports the efficiency figures of the windows just settled.
    pub fn record_efficiency(&self, figures: &[ServerFigures]) {
        for s in figures {
            for (state, v) in [("in_flight", s.util_in_flight), ("idle", s.util_idle)] {
                let mut l = s.labels.clone();
                l.push(("state".to_owned(), state.to_owned()));
                match v {
                    _ if s.gone => {
                        self.server_util.remove(&l);
                    }
                    Some(v) => {
                        self.server_util.get_or_create(&l).set(v);
                    }
                    None => {}
                }
            }
            for m in &s.models {
                if s.gone {
                    self.joules_per_token.remove(&m.labels);
                    self.tokens_per_second.remove(&m.labels);
                    self.token_energy.remove(&m.labels);
                    continue;
                }
                self.tokens_per_second
                    .get_or_create(&m.labels)
                    .set(m.tokens_per_second);
                if let Some(j) = m.joules_per_token {
                    self.joules_per_token.get_or_create(&m.labels).set(j);
                }
                if m.joules > 0.0 && m.joules.is_finite() {
                    self.token_energy.get_or_create(&m.labels).inc_by(m.joules);
                }
            }
        }
    }

    /// Exports one round of samples.
    pub fn record(&self, samples: &[GpuSample]) {
        for s in samples {
            let l: Labels = vec![
                ("gpu".to_owned(), s.index.to_string()),
                ("gpu_uuid".to_owned(), s.uuid.clone()),
                ("gpu_name".to_owned(), s.name.clone()),
            ];
            let set = |f: &Family<Labels, Gauge>, v: Option<u64>| {
                if let Some(v) = v {
                    f.get_or_create(&l)
                        .set(i64::try_from(v).unwrap_or(i64::MAX));
                }
            };
            set(&self.sm_util, s.sm_util_pct.map(u64::from));
            set(&self.mem_util, s.mem_util_pct.map(u64::from));
            set(&self.mem_used, s.mem_used_bytes);
            set(&self.mem_total, s.mem_total_bytes);
            set(&self.temperature, s.temperature_c.map(u64::from));
            set(&self.sm_clock, s.sm_clock_mhz.map(u64::from));
            set(&self.throttle, s.throttle_reasons);
            if let Some(p) = s.power_w {
                self.power.get_or_create(&l).set(p);
            }
            if let Some(e) = s.energy_j {
                self.energy.get_or_create(&l).set(e);
            }
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

    /// Forgets per-process series (before a new round).
    fn clear_processes(&self) {
        self.proc_mem.clear();
        self.proc_sm.clear();
    }
}

/// How long a sampling window waits for the records of calls that ended in it (the pipeline's
/// delay from the kernel to the sink, and the tracker's in-flight snapshot period).
const SETTLE_GRACE: Duration = Duration::from_secs(2);

/// Samples `source` every `interval` until the task is dropped.
pub async fn run_sampler(
    mut source: Box<dyn GpuSource>,
    metrics: Arc<GpuMetrics>,
    history: Arc<Mutex<GpuHistory>>,
    interval: Duration,
    settle_grace: Duration,
) {
    let grace_ns = i64::try_from(settle_grace.as_nanos()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(interval);
    let mut failing = false;
    loop {
        tick.tick().await;
        match source.sample() {
            Ok(samples) => {
                if failing {
                    log::info!("GPU sampling works again");
                    failing = false;
                }
                metrics.clear_processes();
                metrics.record(&samples);
                metrics.available.set(1);
                let now = crate::clock::Clock::system().unix_ns(crate::clock::monotonic_now_ns());
                if let Ok(mut h) = history.lock() {
                    h.push(now, samples);
                    let h = &mut *h;
                    let figures = h
                        .efficiency
                        .publish(now.saturating_sub(grace_ns), &h.in_flight_since);
                    metrics.record_efficiency(&figures);
                    let lost = h.efficiency.tokens_unaccounted - metrics.tokens_unaccounted.get();
                    if lost > 0.0 {
                        metrics.tokens_unaccounted.inc_by(lost);
                    }
                }
            }
            Err(e) => {
                if !failing {
                    log::warn!("GPU sampling failed: {e}");
                    failing = true;
                }
                metrics.available.set(0);
            }
        }
    }
}

/// Starts GPU sampling as `mode` says: returns false (and sets `llmprobe_gpu_available 0`)
/// when there is no usable NVML.
pub fn start(
    mode: GpuMode,
    interval: Duration,
    nvml_lib: Option<&std::path::Path>,
    metrics: Arc<GpuMetrics>,
    history: Arc<Mutex<GpuHistory>>,
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
                interval,
                source.describe()
            );
            metrics.available.set(1);
            tokio::spawn(run_sampler(
                Box::new(source),
                metrics,
                history,
                interval,
                SETTLE_GRACE,
            ));
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
    use prometheus_client::encoding::text::encode;

    /// A scripted device: each call returns the next round.
    struct Fake {
        rounds: Vec<Result<Vec<GpuSample>, String>>,
    }

    impl GpuSource for Fake {
        fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
            if self.rounds.is_empty() {
                return Err("no more rounds".into());
            }
            self.rounds.remove(0)
        }
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

    #[tokio::test(start_paused = true)]
    async fn samples_become_metrics_and_processes_come_and_go() {
        let mut reg = Registry::default();
        let m = Arc::new(GpuMetrics::new(&mut reg));
        let fake = Fake {
            rounds: vec![
                Ok(vec![gpu(87, 312.5, &[42, 43])]),
                Ok(vec![gpu(3, 80.0, &[42])]),
                Err("gone".into()),
            ],
        };
        let history = Arc::new(Mutex::new(GpuHistory::new(8)));
        let task = tokio::spawn(run_sampler(
            Box::new(fake),
            m.clone(),
            history.clone(),
            Duration::from_secs(1),
            SETTLE_GRACE,
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let t = text(&reg);
        assert!(t.contains("llmprobe_gpu_available 1"), "{t}");
        assert!(t.contains(r#"llmprobe_gpu_sm_utilization_percent{gpu="0",gpu_uuid="GPU-1234",gpu_name="Fake H100"} 87"#), "{t}");
        assert!(t.contains(r#"llmprobe_gpu_power_watts{gpu="0",gpu_uuid="GPU-1234",gpu_name="Fake H100"} 312.5"#), "{t}");
        assert!(t.contains(r#"pid="43"} 1073741824"#), "{t}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = text(&reg);
        assert!(t.contains(r#"gpu_name="Fake H100"} 3"#), "{t}");
        assert!(
            !t.contains(r#"pid="43""#),
            "an exited process is forgotten: {t}"
        );
        assert!(
            !history.lock().map(|h| h.is_empty()).unwrap_or(true),
            "rounds are kept for the join"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(text(&reg).contains("llmprobe_gpu_available 0"));
        task.abort();
    }

    #[tokio::test]
    async fn sampler_publishes_energy_per_token_once_windows_settle() {
        use efficiency::{CallUse, ServerKey};
        let mut reg = Registry::default();
        let m = Arc::new(GpuMetrics::new(&mut reg));
        let history = Arc::new(Mutex::new(GpuHistory::new(600)));
        // A device that draws 25 J per round.
        let mut energy = 0.0;
        let rounds = (0..200)
            .map(|_| {
                energy += 25.0;
                let mut s = gpu(90, 250.0, &[42]);
                s.energy_j = Some(energy);
                Ok(vec![s])
            })
            .collect();
        let task = tokio::spawn(run_sampler(
            Box::new(Fake { rounds }),
            m.clone(),
            history.clone(),
            Duration::from_millis(20),
            Duration::from_millis(200),
        ));
        tokio::time::sleep(Duration::from_millis(110)).await;
        {
            let mut h = history.lock().expect("lock");
            let (first, last) = h.span().expect("rounds");
            assert!(last > first, "rounds are stamped in order");
            // The server (pid 42 itself runs on the GPU) answered a call covering the rounds
            // so far: 500 output tokens.
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
        }
        let t = text(&reg);
        assert!(
            !t.contains("llmprobe_gpu_energy_joules_per_output_token{"),
            "the windows wait for the grace period: {t}"
        );
        let want = r#"llmprobe_gpu_energy_joules_per_output_token{pid="42",process_executable_name="vllm",gen_ai_request_model="tiny"}"#;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let t = text(&reg);
            if let Some(line) = t.lines().find(|l| l.starts_with(want)) {
                // 25 J per round over the tokens generated in those rounds.
                let v: f64 = line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect(line);
                assert!(v.is_finite() && v > 0.0, "{line}");
                for series in [
                    r#"llmprobe_gpu_output_tokens_per_second{pid="42",process_executable_name="vllm",gen_ai_request_model="tiny"}"#,
                    r#"llmprobe_gpu_server_sm_utilization_percent{pid="42",process_executable_name="vllm",state="in_flight"} 90"#,
                    r#"llmprobe_gpu_output_token_energy_joules_total{pid="42",process_executable_name="vllm",gen_ai_request_model="tiny"}"#,
                ] {
                    assert!(t.contains(series), "{series} missing: {t}");
                }
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never settled: {t}");
        }
        task.abort();
    }

    #[test]
    fn off_means_unavailable() {
        let mut reg = Registry::default();
        let m = Arc::new(GpuMetrics::new(&mut reg));
        let history = Arc::new(Mutex::new(GpuHistory::new(8)));
        assert!(!start(
            GpuMode::Off,
            Duration::from_secs(1),
            None,
            m,
            history
        ));
        assert!(text(&reg).contains("llmprobe_gpu_available 0"));
    }
}
