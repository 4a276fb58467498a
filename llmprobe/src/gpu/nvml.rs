//! [`GpuSource`] on NVML through nvml-wrapper, which loads `libnvidia-ml.so` at run time: a
//! node without the NVIDIA driver gets an error here, not a missing-library crash at start.

use std::ffi::OsStr;
use std::path::Path;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;

use super::{GpuProcess, GpuSample, GpuSource};

/// Where `libnvidia-ml` may be: the loader's search path first, then the driver mounts a
/// privileged agent finds on Kubernetes nodes (NVIDIA container toolkit and GKE's
/// /usr/local/nvidia, the GPU operator's driver container under /run/nvidia/driver, GKE's host
/// path) and WSL.
pub const NVML_PATHS: &[&str] = &[
    "libnvidia-ml.so.1",
    "libnvidia-ml.so",
    "/usr/local/nvidia/lib64/libnvidia-ml.so.1",
    "/run/nvidia/driver/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
    "/run/nvidia/driver/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.1",
    "/run/nvidia/driver/usr/lib64/libnvidia-ml.so.1",
    "/home/kubernetes/bin/nvidia/lib64/libnvidia-ml.so.1",
    "/usr/lib/wsl/lib/libnvidia-ml.so.1",
];

/// NVML, initialised.
pub struct NvmlSource {
    nvml: Nvml,
    /// Last process-utilization timestamp seen per GPU (NVML returns samples newer than it).
    last_seen: Vec<u64>,
    /// UUID and name per GPU, once read.
    ids: Vec<Option<(String, String)>>,
    /// GPUs whose handle could not be had in the last round (logged once).
    failing: Vec<bool>,
}

impl NvmlSource {
    /// Loads and initialises NVML: from `lib` when given, else from the first of
    /// [`NVML_PATHS`] that loads.
    pub fn new(lib: Option<&Path>) -> Result<Self, String> {
        let nvml = match lib {
            Some(p) => Nvml::builder()
                .lib_path(p.as_os_str())
                .init()
                .map_err(|e| format!("{}: {e}", p.display()))?,
            None => {
                let mut first_err = None;
                let mut found = None;
                for p in NVML_PATHS {
                    match Nvml::builder().lib_path(OsStr::new(p)).init() {
                        Ok(n) => {
                            found = Some(n);
                            break;
                        }
                        Err(e) => {
                            first_err.get_or_insert_with(|| format!("{p}: {e}"));
                        }
                    }
                }
                found.ok_or_else(|| first_err.unwrap_or_default())?
            }
        };
        let n = nvml.device_count().map_err(|e| e.to_string())?;
        Ok(NvmlSource {
            nvml,
            last_seen: vec![0; n as usize],
            ids: vec![None; n as usize],
            failing: vec![false; n as usize],
        })
    }

    /// "N GPU(s): name, ..." for the start-up log.
    pub fn describe(&self) -> String {
        let n = self.nvml.device_count().unwrap_or(0);
        let names: Vec<String> = (0..n)
            .filter_map(|i| self.nvml.device_by_index(i).ok()?.name().ok())
            .collect();
        format!("{n} GPU(s): {}", names.join(", "))
    }
}

impl GpuSource for NvmlSource {
    fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
        let n = self.nvml.device_count().map_err(|e| e.to_string())?;
        if self.last_seen.len() < n as usize {
            self.last_seen.resize(n as usize, 0);
            self.ids.resize(n as usize, None);
            self.failing.resize(n as usize, false);
        }
        let mut out = Vec::with_capacity(n as usize);
        let mut first_err = None;
        for i in 0..n {
            // One lost GPU (Xid 79 and the like) must not hide the others.
            let d = match self.nvml.device_by_index(i) {
                Ok(d) => d,
                Err(e) => {
                    let e = format!("GPU {i}: {e}");
                    if !self.failing[i as usize] {
                        log::warn!("GPU sampling: {e}; the other GPUs are still sampled");
                        self.failing[i as usize] = true;
                    }
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            if self.failing[i as usize] {
                log::info!("GPU sampling: GPU {i} answers again");
                self.failing[i as usize] = false;
            }
            let (uuid, name) = match &self.ids[i as usize] {
                Some(ids) => ids.clone(),
                None => match (d.uuid(), d.name()) {
                    // Read once: a transient error must not open a second series.
                    (Ok(u), Ok(n)) => {
                        self.ids[i as usize] = Some((u.clone(), n.clone()));
                        (u, n)
                    }
                    _ => (format!("GPU-index-{i}"), String::new()),
                },
            };
            let util = d.utilization_rates().ok();
            let mem = d.memory_info().ok();
            let mut procs: Vec<GpuProcess> = d
                .running_compute_processes()
                .unwrap_or_default()
                .into_iter()
                .map(|p| GpuProcess {
                    pid: p.pid,
                    used_memory_bytes: match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(b),
                        UsedGpuMemory::Unavailable => None,
                    },
                    sm_util_pct: None,
                })
                .collect();
            let since = self.last_seen[i as usize];
            if let Ok(stats) = d.process_utilization_stats(since) {
                for s in stats {
                    self.last_seen[i as usize] = self.last_seen[i as usize].max(s.timestamp);
                    match procs.iter_mut().find(|p| p.pid == s.pid) {
                        Some(p) => p.sm_util_pct = Some(s.sm_util),
                        None => procs.push(GpuProcess {
                            pid: s.pid,
                            used_memory_bytes: None,
                            sm_util_pct: Some(s.sm_util),
                        }),
                    }
                }
            }
            out.push(GpuSample {
                index: i,
                uuid,
                name,
                sm_util_pct: util.as_ref().map(|u| u.gpu),
                mem_util_pct: util.as_ref().map(|u| u.memory),
                mem_used_bytes: mem.as_ref().map(|m| m.used),
                mem_total_bytes: mem.as_ref().map(|m| m.total),
                power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                energy_j: d
                    .total_energy_consumption()
                    .ok()
                    .map(|mj| mj as f64 / 1000.0),
                temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
                sm_clock_mhz: d.clock_info(Clock::SM).ok(),
                throttle_reasons: d.current_throttle_reasons().ok().map(|r| r.bits()),
                processes: procs,
            });
        }
        match first_err {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}
