//! Loads the eBPF object, checks what the host offers, attaches the syscall tracepoints and the
//! OpenSSL uprobes, seeds the sockets that existed before the agent started, and hands out the
//! maps the pipeline needs (ring buffer, mute map, loss counter).

use std::collections::{HashMap as StdHashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{TracePoint, UProbe, uprobe::UProbeAttachLocation, uprobe::UProbeScope};
use aya::{Ebpf, EbpfLoader};
use llmprobe_common::{self as abi, Config, ConnKey, SockInfo, SockKey};
use log::{debug, info, warn};

use super::discovery::{self, SSL_SYMBOLS, TlsLibrary};
use super::events::{EventMeta, ProbeEvent};

/// The compiled kernel programs, embedded at build time.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/llmprobe"));

/// Socket syscalls: (enter program, exit program, syscall).
const IO_SYSCALLS: &[(&str, &str, &str)] = &[
    ("sys_enter_read", "sys_exit_rw", "read"),
    ("sys_enter_write", "sys_exit_rw", "write"),
    ("sys_enter_recvfrom", "sys_exit_rw", "recvfrom"),
    ("sys_enter_sendto", "sys_exit_rw", "sendto"),
    ("sys_enter_readv", "sys_exit_vec", "readv"),
    ("sys_enter_writev", "sys_exit_vec", "writev"),
    ("sys_enter_recvmsg", "sys_exit_vec", "recvmsg"),
    ("sys_enter_sendmsg", "sys_exit_vec", "sendmsg"),
    ("sys_enter_connect", "sys_exit_sock", "connect"),
    ("sys_enter_accept", "sys_exit_sock", "accept"),
    ("sys_enter_accept", "sys_exit_sock", "accept4"),
];

/// uprobe program per entry of `SSL_SYMBOLS`.
const SSL_PROGRAMS: [&str; 5] = [
    "ssl_read",
    "ssl_read_ex",
    "ssl_write",
    "ssl_write_ex",
    "ssl_free",
];

/// What to trace.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Only these processes (empty: all).
    pub pids: Vec<u32>,
}

/// Maps the pipeline owns.
pub struct ProbeHandles {
    /// Events from the kernel.
    pub ring: RingBuf<MapData>,
    /// Connections userspace asked the kernel to stop capturing.
    pub muted: HashMap<MapData, ConnKey, u8>,
    /// Ring-buffer records the kernel could not write.
    pub lost: PerCpuArray<MapData, u64>,
}

/// The loaded programs and where they are attached.
pub struct Probes {
    ebpf: Ebpf,
    pids: Vec<u32>,
    /// (file identity, pid scope) already attached, or known to hold no OpenSSL.
    seen_files: HashSet<((u64, u64), u32)>,
    /// Files attached so far.
    pub tls_files: Vec<PathBuf>,
}

/// Checks the things that most often stop an eBPF agent, with what to do about each.
pub fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        warn!(
            "not running as root (euid {euid}): loading will fail unless the process has CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE"
        );
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        warn!(
            "/sys/kernel/btf/vmlinux is missing: the kernel has no BTF; llmprobe needs none for its own programs, but some kernels without BTF also lack ring buffers (Linux < 5.8)"
        );
    }
    ensure_tracefs()?;
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Makes sure tracefs is mounted (tracepoints are attached through it); mounts it if possible.
fn ensure_tracefs() -> anyhow::Result<()> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(());
        }
    }
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({err}); \
             run `mount -t tracefs tracefs /sys/kernel/tracing` as root, or in a container mount the host's /sys/kernel/tracing"
        );
    }
    info!("mounted tracefs at /sys/kernel/tracing");
    Ok(())
}

fn load_error(e: aya::EbpfError) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        anyhow!(
            "loading the eBPF programs failed: permission denied ({text}); run as root or grant CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE"
        )
    } else {
        anyhow!("loading the eBPF programs failed: {text}")
    }
}

impl Probes {
    /// Loads the object, configures it and attaches the syscall tracepoints.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<(Probes, ProbeHandles)> {
        if EBPF_OBJECT.is_empty() {
            bail!(
                "this llmprobe was built with AYA_BUILD_SKIP=1 and has no eBPF programs; rebuild it with the eBPF toolchain (`cargo xtask build`)"
            );
        }
        preflight()?;
        let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT).map_err(load_error)?;
        {
            let mut cfg: Array<_, Config> =
                Array::try_from(ebpf.map_mut("CONFIG").context("CONFIG map missing")?)?;
            let flags = if opts.pids.is_empty() {
                0
            } else {
                abi::CONFIG_FILTER_PIDS
            };
            cfg.set(
                0,
                Config {
                    self_tgid: std::process::id(),
                    flags,
                },
                0,
            )?;
        }
        if !opts.pids.is_empty() {
            let mut pids: HashMap<_, u32, u8> =
                HashMap::try_from(ebpf.map_mut("PIDS").context("PIDS map missing")?)?;
            for pid in &opts.pids {
                pids.insert(pid, 1, 0)?;
            }
        }
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
        let muted = HashMap::try_from(ebpf.take_map("MUTED").context("MUTED map missing")?)?;
        let lost = PerCpuArray::try_from(ebpf.take_map("LOST").context("LOST map missing")?)?;

        let mut probes = Probes {
            ebpf,
            pids: opts.pids.clone(),
            seen_files: HashSet::new(),
            tls_files: Vec::new(),
        };
        probes.attach_tracepoints()?;
        probes.load_uprobes()?;
        Ok((probes, ProbeHandles { ring, muted, lost }))
    }

    fn tracepoint(&mut self, prog: &str) -> anyhow::Result<&mut TracePoint> {
        let p = self
            .ebpf
            .program_mut(prog)
            .with_context(|| format!("program {prog} missing from the eBPF object"))?;
        Ok(p.try_into()?)
    }

    fn attach_tracepoints(&mut self) -> anyhow::Result<()> {
        let mut loaded = HashSet::new();
        let mut attach =
            |this: &mut Self, prog: &str, category: &str, name: &str| -> anyhow::Result<()> {
                let tp = this.tracepoint(prog)?;
                if loaded.insert(prog.to_owned()) {
                    tp.load()
                        .with_context(|| format!("the kernel verifier rejected {prog}"))?;
                }
                tp.attach(category, name).with_context(|| {
                    format!("attaching {prog} to tracepoint {category}:{name} failed")
                })?;
                Ok(())
            };
        for (enter, exit, sc) in IO_SYSCALLS {
            attach(self, enter, "syscalls", &format!("sys_enter_{sc}"))?;
            attach(self, exit, "syscalls", &format!("sys_exit_{sc}"))?;
        }
        attach(self, "sys_enter_close", "syscalls", "sys_enter_close")?;
        attach(self, "sys_enter_mmap", "syscalls", "sys_enter_mmap")?;
        attach(self, "sched_process_exec", "sched", "sched_process_exec")?;
        attach(self, "sched_process_exit", "sched", "sched_process_exit")?;
        Ok(())
    }

    fn uprobe(&mut self, prog: &str) -> anyhow::Result<&mut UProbe> {
        let p = self
            .ebpf
            .program_mut(prog)
            .with_context(|| format!("program {prog} missing from the eBPF object"))?;
        Ok(p.try_into()?)
    }

    fn load_uprobes(&mut self) -> anyhow::Result<()> {
        for prog in SSL_PROGRAMS.iter().chain(["ssl_ret"].iter()) {
            self.uprobe(prog)?
                .load()
                .with_context(|| format!("the kernel verifier rejected {prog}"))?;
        }
        Ok(())
    }

    fn scopes(&self) -> Vec<UProbeScope> {
        if self.pids.is_empty() {
            vec![UProbeScope::AllProcesses]
        } else {
            self.pids
                .iter()
                .filter_map(|p| NonZeroU32::new(*p))
                .map(UProbeScope::OneProcess)
                .collect()
        }
    }

    /// Inspects a file and, if it defines OpenSSL's I/O functions, attaches the uprobes to it.
    /// Returns true when newly attached.
    pub fn consider_file(&mut self, path: &Path) -> bool {
        let Ok(id) = discovery::file_id(path) else {
            return false;
        };
        let scopes = self.scopes();
        let pending: Vec<UProbeScope> = scopes
            .into_iter()
            .filter(|s| !self.seen_files.contains(&(id, scope_key(s))))
            .collect();
        if pending.is_empty() {
            return false;
        }
        for s in &pending {
            self.seen_files.insert((id, scope_key(s)));
        }
        let lib = match discovery::inspect_elf(path) {
            Ok(Some(lib)) if lib.is_usable() => lib,
            Ok(_) => return false,
            Err(e) => {
                debug!("skipping {}: not a readable ELF file ({e})", path.display());
                return false;
            }
        };
        let mut attached = false;
        for scope in pending {
            match self.attach_tls_library(&lib, scope) {
                Ok(n) => {
                    info!(
                        "attached {n} OpenSSL uprobes to {} ({scope:?})",
                        lib.path.display()
                    );
                    attached = true;
                }
                Err(e) => warn!(
                    "could not probe OpenSSL in {}: {e:#}; TLS traffic of processes using it will not be seen",
                    lib.path.display()
                ),
            }
        }
        if attached {
            self.tls_files.push(lib.path.clone());
        }
        attached
    }

    fn attach_tls_library(
        &mut self,
        lib: &TlsLibrary,
        scope: UProbeScope,
    ) -> anyhow::Result<usize> {
        let mut n = 0;
        for (i, prog) in SSL_PROGRAMS.iter().enumerate() {
            let Some(off) = lib.offsets[i] else { continue };
            let path = lib.path.clone();
            self.uprobe(prog)?
                .attach(UProbeAttachLocation::AbsoluteOffset(off), &path, scope)
                .with_context(|| format!("uprobe {} at {:#x}", SSL_SYMBOLS[i], off))?;
            n += 1;
            // Reads and writes also get the return probe that emits their bytes.
            if i < 4 {
                self.uprobe("ssl_ret")?
                    .attach(UProbeAttachLocation::AbsoluteOffset(off), &path, scope)
                    .with_context(|| format!("uretprobe {} at {:#x}", SSL_SYMBOLS[i], off))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The processes to scan for TLS libraries.
    pub fn scan_targets(&self) -> Vec<u32> {
        if self.pids.is_empty() {
            discovery::all_pids()
        } else {
            self.pids.clone()
        }
    }

    /// Scans processes' executable mappings for OpenSSL and attaches to what is new.
    pub fn scan_pids(&mut self, pids: &[u32]) -> usize {
        let mut n = 0;
        for pid in pids {
            if *pid == std::process::id() {
                continue;
            }
            for path in discovery::executable_mappings(*pid) {
                if self.consider_file(&path) {
                    n += 1;
                }
            }
        }
        n
    }

    /// Start-up discovery: libssl from the linker cache, then every traced process's mappings.
    pub fn initial_scan(&mut self) -> usize {
        let mut n = 0;
        for path in discovery::ldconfig_ssl_libraries() {
            if self.consider_file(&path) {
                n += 1;
            }
        }
        let pids = self.scan_targets();
        n + self.scan_pids(&pids)
    }

    /// Registers the TCP sockets that existed before the agent started, so their plaintext is
    /// traced; returns the matching ConnOpen events for the pipeline.
    pub fn seed_sockets(&mut self) -> anyhow::Result<Vec<ProbeEvent>> {
        let mut socks: HashMap<_, SockKey, SockInfo> =
            HashMap::try_from(self.ebpf.map_mut("SOCKS").context("SOCKS map missing")?)?;
        let now = crate::clock::monotonic_now_ns();
        let mut events = Vec::new();
        let pids = if self.pids.is_empty() {
            discovery::all_pids()
        } else {
            self.pids.clone()
        };
        let mut tables: StdHashMap<u64, StdHashMap<u64, SocketAddr>> = StdHashMap::new();
        for pid in pids {
            if pid == std::process::id() {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            let netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap_or(0);
            let table = tables.entry(netns).or_insert_with(|| tcp_peers(pid));
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            for fd in fds.filter_map(|e| e.ok()) {
                let Ok(link) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let link = link.to_string_lossy();
                let Some(inode) = link
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                else {
                    continue;
                };
                let Ok(inode) = inode.parse::<u64>() else {
                    continue;
                };
                let Some(peer) = table.get(&inode) else {
                    continue;
                };
                let Some(fdnum) = fd.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                let generation = (now.wrapping_add(events.len() as u64 * 2)) | abi::GENERATION_TAG;
                socks.insert(
                    SockKey {
                        tgid: pid,
                        fd: fdnum,
                    },
                    SockInfo {
                        generation,
                        flags: 0,
                        _pad: 0,
                    },
                    0,
                )?;
                events.push(ProbeEvent::ConnOpen {
                    meta: EventMeta {
                        pid,
                        tid: pid,
                        fd: fdnum,
                        conn_id: generation,
                        ts_ns: now,
                        comm: comm.clone(),
                        container: None,
                    },
                    peer: Some(*peer),
                    role_hint: abi::ROLE_HINT_SEEDED,
                });
            }
        }
        Ok(events)
    }
}

fn scope_key(s: &UProbeScope) -> u32 {
    match s {
        UProbeScope::OneProcess(p) => p.get(),
        _ => 0,
    }
}

/// Established TCP sockets of a process's network namespace: inode → peer address.
fn tcp_peers(pid: u32) -> StdHashMap<u64, SocketAddr> {
    let mut out = StdHashMap::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "01" {
                continue; // not ESTABLISHED
            }
            let (Some(peer), Ok(inode)) = (parse_proc_addr(f[2], v6), f[9].parse::<u64>()) else {
                continue;
            };
            out.insert(inode, peer);
        }
    }
    out
}

/// Parses `0100007F:1F90` (IPv4) or the 32-hex-digit IPv6 form of /proc/net/tcp*.
fn parse_proc_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let ip = if v6 {
        if a.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for w in 0..4 {
            let word = u32::from_str_radix(&a[w * 8..w * 8 + 8], 16).ok()?;
            bytes[w * 4..w * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        let v6 = Ipv6Addr::from(bytes);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    } else {
        let word = u32::from_str_radix(a, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes()))
    };
    Some(SocketAddr::new(ip, port))
}

impl Probes {
    /// Hands the loss and table maps to [`KernelStats`] (after `seed_sockets`, which fills
    /// `SOCKS`).
    pub fn kernel_stats(
        &mut self,
        lost: PerCpuArray<MapData, u64>,
        seeded: u64,
    ) -> anyhow::Result<super::kernel_stats::KernelStats> {
        let mut take = |name: &str| {
            self.ebpf
                .take_map(name)
                .with_context(|| format!("{name} map missing"))
        };
        let counters = PerCpuArray::try_from(take("COUNTERS")?)?;
        let socks = HashMap::try_from(take("SOCKS")?)?;
        let ssl_fds = HashMap::try_from(take("SSL_FDS")?)?;
        Ok(super::kernel_stats::KernelStats::new(
            lost, counters, socks, ssl_fds, seeded,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_addresses() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90", false),
            Some("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse_proc_addr("0000000000000000FFFF00000100007F:01BB", true),
            Some("127.0.0.1:443".parse().expect("addr"))
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0050", true),
            Some("[::1]:80".parse().expect("addr"))
        );
        assert_eq!(parse_proc_addr("zz:1", false), None);
    }
}
