//! `llmprobe doctor`: checks what this node offers llmprobe (kernel, tracefs, uprobes, ring
//! buffer, the eBPF programs through the verifier, privileges, limits, NVML) and which running
//! processes llmprobe can see into, and why not for the others.
//!
//! Stage: a one-shot command, outside the pipeline; it attaches nothing. The privilege logic
//! ([`Privileges`]) is shared with the agent's preflight, so `run` and `doctor` say the same.
//!
//! Invariants:
//! - Every other process is hostile: its name and files are chosen by it. Names and paths are
//!   printed escaped ([`escape`]): no raw control byte reaches the output. Files are opened and
//!   read exactly as discovery does ([`discovery::open_mapped`]: `/proc/PID/map_files`, or the
//!   path inside `/proc/PID/root` with its identity checked; [`discovery::elf_facts_file`]:
//!   bounded `pread`s under [`ElfLimits`]), never by following a path outside the process's view.
//! - A Go executable is read by the agent's own Go reader ([`golang::inspect_go_file`] under
//!   [`GoLimits::default`], through the file already opened, in the same step), so doctor says
//!   what the agent does: probed, no crypto/tls, or refused with the refusal's words.
//! - Bounded: at most [`MAX_PROCESSES`] processes are examined (the rest are counted), at most
//!   [`MAX_FILES`] distinct files are read (each once, cached by device and inode), at most
//!   [`MAX_MAPPINGS_PER_PROCESS`] mappings per process, and the scan stops reading files after
//!   [`SCAN_DEADLINE`]. A process vanishing mid-scan is skipped.
//! - Without privileges it still runs: the missing privileges are failures (exit 1).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::probes::discovery::{self, ElfFacts, ElfLimits, TlsStack};
use crate::probes::golang::{self, GoArch, GoLimits, GoRefusal, GoVerdict};
use crate::probes::loader;

// ---------------------------------------------------------------------------------------------
// Privileges (shared with `loader::preflight`).

/// `CAP_DAC_READ_SEARCH`.
pub const CAP_DAC_READ_SEARCH: u32 = 2;
/// `CAP_SYS_PTRACE`.
pub const CAP_SYS_PTRACE: u32 = 19;
/// `CAP_SYS_ADMIN`.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_SYS_RESOURCE`.
pub const CAP_SYS_RESOURCE: u32 = 24;
/// `CAP_PERFMON` (Linux 5.8+).
pub const CAP_PERFMON: u32 = 38;
/// `CAP_BPF` (Linux 5.8+).
pub const CAP_BPF: u32 = 39;

/// A capability llmprobe uses, and what for.
#[derive(Debug, Clone, Copy)]
pub struct CapUse {
    /// Its name.
    pub name: &'static str,
    /// Its bit in `CapEff`.
    pub bit: u32,
    /// What llmprobe does with it.
    pub why: &'static str,
}

/// The capabilities llmprobe runs with when not root, as `tests/deploy.rs` measures them:
/// CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH capture everything (CAP_SYS_ADMIN
/// passes the kernel's CAP_BPF and CAP_PERFMON checks too); CAP_BPF and CAP_PERFMON without
/// CAP_SYS_ADMIN load the programs and attach the tracepoints, but current kernels refuse
/// uprobes to them (perf: uprobes need CAP_SYS_ADMIN, backported to stable kernels), so TLS
/// traffic stays unseen. CAP_SYS_RESOURCE counts only before 5.11 (memlock).
pub const CAPABILITIES: [CapUse; 6] = [
    CapUse {
        name: "CAP_SYS_ADMIN",
        bit: CAP_SYS_ADMIN,
        why: "attach uprobes to TLS libraries (current kernels require it; without it only plaintext HTTP is seen) and mount tracefs",
    },
    CapUse {
        name: "CAP_BPF",
        bit: CAP_BPF,
        why: "load the eBPF programs and create their maps",
    },
    CapUse {
        name: "CAP_PERFMON",
        bit: CAP_PERFMON,
        why: "attach the tracepoints (perf events)",
    },
    CapUse {
        name: "CAP_SYS_PTRACE",
        bit: CAP_SYS_PTRACE,
        why: "read other processes' memory maps, libraries and sockets in /proc (without it their TLS libraries are not found)",
    },
    CapUse {
        name: "CAP_DAC_READ_SEARCH",
        bit: CAP_DAC_READ_SEARCH,
        why: "read tracefs (mode 0700) and libraries other users may not read",
    },
    CapUse {
        name: "CAP_SYS_RESOURCE",
        bit: CAP_SYS_RESOURCE,
        why: "raise the locked-memory limit (kernels before 5.11 charge BPF maps to it)",
    },
];

/// What to do when privileges are missing (the agent's and doctor's words).
pub const PRIVILEGES_HINT: &str = "llmprobe needs root, or the capabilities CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (plus CAP_SYS_RESOURCE on kernels before 5.11; CAP_BPF and CAP_PERFMON without CAP_SYS_ADMIN see plaintext HTTP only); run `sudo llmprobe doctor` to see what else is missing";

/// The effective user and capabilities of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// Effective uid.
    pub euid: u32,
    /// `CapEff` of /proc/self/status; None when unreadable (then uid 0 counts as everything).
    pub effective: Option<u64>,
    /// The kernel charges BPF maps to the locked-memory limit (before 5.11; unknown counts as
    /// charged): CAP_SYS_RESOURCE is then needed.
    pub memlock_charged: bool,
}

/// The `CapEff` mask of a /proc/PID/status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

impl Privileges {
    /// This process's.
    pub fn current() -> Privileges {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Privileges {
            memlock_charged: parse_kernel_release(&release).is_none_or(|v| v < (5, 11, 0)),
            ..Privileges::from_status(euid, &status)
        }
    }

    /// From an effective uid and a /proc/PID/status text.
    pub fn from_status(euid: u32, status: &str) -> Privileges {
        Privileges {
            euid,
            effective: parse_cap_eff(status),
            memlock_charged: true,
        }
    }

    /// True when capability `bit` is effective.
    pub fn has(&self, bit: u32) -> bool {
        match self.effective {
            Some(mask) => bit < 64 && (mask >> bit) & 1 == 1,
            None => self.euid == 0,
        }
    }

    /// True when the eBPF programs can be loaded and attached.
    pub fn can_load(&self) -> bool {
        self.has(CAP_SYS_ADMIN) || (self.has(CAP_BPF) && self.has(CAP_PERFMON))
    }

    /// The capabilities of [`CAPABILITIES`] that are not effective (`CAP_SYS_ADMIN` covers
    /// `CAP_BPF` and `CAP_PERFMON`; `CAP_SYS_RESOURCE` counts only where memlock is charged).
    pub fn missing(&self) -> Vec<CapUse> {
        CAPABILITIES
            .iter()
            .filter(|c| {
                let covered = matches!(c.bit, CAP_BPF | CAP_PERFMON) && self.has(CAP_SYS_ADMIN);
                let moot = c.bit == CAP_SYS_RESOURCE && !self.memlock_charged;
                !self.has(c.bit) && !covered && !moot
            })
            .copied()
            .collect()
    }

    fn who(&self) -> String {
        if self.euid == 0 {
            "root (uid 0) without all capabilities".to_owned()
        } else {
            format!("uid {}", self.euid)
        }
    }

    /// The error when llmprobe cannot load its programs with these privileges.
    pub fn refusal(&self) -> Option<String> {
        if self.can_load() {
            return None;
        }
        let names: Vec<&str> = self.missing().iter().map(|c| c.name).collect();
        Some(format!(
            "missing privileges: this process runs as {} and lacks {}; {PRIVILEGES_HINT}",
            self.who(),
            names.join(", ")
        ))
    }

    /// A note when llmprobe can run but some capability it uses is missing.
    pub fn shortfall(&self) -> Option<String> {
        let missing = self.missing();
        if missing.is_empty() {
            return None;
        }
        let parts: Vec<String> = missing
            .iter()
            .map(|c| format!("{} (to {})", c.name, c.why))
            .collect();
        Some(format!("running without {}", parts.join("; ")))
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// Works, with a limit worth knowing.
    Warn,
    /// Stops llmprobe from running (or from seeing anything).
    Fail,
}

/// One check: what was found and, when not ok, what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// One line: what was found.
    pub detail: String,
    /// What to do (None when ok).
    pub fix: Option<String>,
}

fn check(name: &'static str, status: Status, detail: String, fix: Option<&str>) -> Check {
    Check {
        name,
        status,
        detail,
        fix: fix.map(str::to_owned),
    }
}

/// A kernel release's (major, minor, patch), from e.g. `6.8.0-45-generic` or `5.15`.
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32, u32)> {
    let mut parts = release.trim().splitn(3, '.');
    let num = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let major = num(parts.next()?)?;
    let minor = num(parts.next()?)?;
    let patch = parts.next().and_then(num).unwrap_or(0);
    Some((major, minor, patch))
}

/// The selected mode of /sys/kernel/security/lockdown (`none [integrity] confidentiality`).
pub fn parse_lockdown(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

/// Where tracefs is mounted, from a /proc/self/mountinfo text (the usual places first).
pub fn tracefs_mount_point(mountinfo: &str) -> Option<PathBuf> {
    let mut found: Vec<String> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() != Some("tracefs") {
            continue;
        }
        if let Some(mp) = left.split(' ').nth(4) {
            found.push(mp.replace("\\040", " "));
        }
    }
    for usual in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if found.iter().any(|m| m == usual) {
            return Some(PathBuf::from(usual));
        }
    }
    found.into_iter().next().map(PathBuf::from)
}

fn read_small(path: &str) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(64 << 10).read_to_string(&mut s).ok()?;
    Some(s)
}

fn kernel_check(version: Option<(u32, u32, u32)>, release: &str) -> Check {
    let release = escape(release.trim().as_bytes());
    match version {
        None => check(
            "kernel",
            Status::Warn,
            format!("release {release:?} not understood: features not checked by version"),
            None,
        ),
        Some(v) if v < (5, 8, 0) => check(
            "kernel",
            Status::Fail,
            format!("Linux {release}: older than 5.8, which brings BPF ring buffers and CAP_BPF"),
            Some("run llmprobe on Linux 5.8 or later"),
        ),
        Some(v) => {
            let memlock = if v < (5, 11, 0) {
                "; before 5.11 BPF maps count against RLIMIT_MEMLOCK"
            } else {
                ""
            };
            check(
                "kernel",
                Status::Ok,
                format!(
                    "Linux {release}: 5.8+ (ring buffers, CAP_BPF, tracepoint and uprobe programs, openat2){memlock}"
                ),
                None,
            )
        }
    }
}

fn privileges_check(p: &Privileges) -> Check {
    let mask = p
        .effective
        .map(|m| format!("CapEff {m:016x}"))
        .unwrap_or_else(|| "CapEff unreadable".to_owned());
    if p.refusal().is_some() {
        let names: Vec<&str> = p.missing().iter().map(|c| c.name).collect();
        return check(
            "privileges",
            Status::Fail,
            format!(
                "missing privileges: {} lacks {} ({mask})",
                p.who(),
                names.join(", ")
            ),
            Some(PRIVILEGES_HINT),
        );
    }
    match p.shortfall() {
        None => check(
            "privileges",
            Status::Ok,
            format!(
                "{}: every capability llmprobe uses is effective ({mask})",
                if p.euid == 0 {
                    "root".to_owned()
                } else {
                    p.who()
                }
            ),
            None,
        ),
        Some(note) => check(
            "privileges",
            Status::Warn,
            format!("can load the probes, but {note} ({mask})"),
            Some("grant the missing capabilities (or run as root)"),
        ),
    }
}

fn btf_check() -> Check {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        check(
            "btf",
            Status::Ok,
            "/sys/kernel/btf/vmlinux present (llmprobe's programs need no BTF)".to_owned(),
            None,
        )
    } else {
        check(
            "btf",
            Status::Ok,
            "/sys/kernel/btf/vmlinux absent: not needed, llmprobe's programs need no BTF"
                .to_owned(),
            None,
        )
    }
}

fn lockdown_check() -> Check {
    let Some(text) = read_small("/sys/kernel/security/lockdown") else {
        return check(
            "lockdown",
            Status::Ok,
            "no /sys/kernel/security/lockdown (securityfs not mounted or no lockdown LSM)"
                .to_owned(),
            None,
        );
    };
    match parse_lockdown(&text) {
        Some("none") | None => check("lockdown", Status::Ok, "none".to_owned(), None),
        Some("integrity") => check(
            "lockdown",
            Status::Ok,
            "integrity: BPF may still read process memory, which is all llmprobe reads".to_owned(),
            None,
        ),
        Some(mode) => check(
            "lockdown",
            Status::Warn,
            format!(
                "{}: BPF reads of kernel memory are denied (llmprobe reads only process memory and tracepoint arguments; the ebpf_programs check says whether they load)",
                escape(mode.as_bytes())
            ),
            Some("if the programs fail to load, boot with lockdown=integrity or none"),
        ),
    }
}

/// tracefs: where, and whether it is readable. Returns the check and the readable directory.
fn tracefs_check(p: &Privileges) -> (Check, Option<PathBuf>) {
    let mountinfo = read_small("/proc/self/mountinfo").unwrap_or_default();
    let mounted = tracefs_mount_point(&mountinfo);
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return (
                check("tracefs", Status::Ok, format!("mounted at {dir}"), None),
                Some(PathBuf::from(dir)),
            );
        }
    }
    // Mounted somewhere else only: llmprobe looks in the two usual places (and mounts its own).
    let mounted = mounted.filter(|mp| !mp.join("events").is_dir());
    match mounted {
        Some(mp) => (
            check(
                "tracefs",
                Status::Fail,
                format!(
                    "mounted at {} but not readable by {}",
                    escape(mp.as_os_str().as_encoded_bytes()),
                    p.who()
                ),
                Some("run as root, or grant CAP_DAC_READ_SEARCH"),
            ),
            None,
        ),
        None if p.has(CAP_SYS_ADMIN) => (
            check(
                "tracefs",
                Status::Warn,
                "not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing: llmprobe mounts it at /sys/kernel/tracing when it starts".to_owned(),
                Some("or mount it yourself: mount -t tracefs tracefs /sys/kernel/tracing"),
            ),
            None,
        ),
        None => (
            check(
                "tracefs",
                Status::Fail,
                "not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing (or not visible here), and mounting it needs CAP_SYS_ADMIN".to_owned(),
                Some(
                    "run `mount -t tracefs tracefs /sys/kernel/tracing` as root, or in a container mount the host's /sys/kernel/tracing",
                ),
            ),
            None,
        ),
    }
}

fn tracepoints_check(tracefs: Option<&Path>) -> Check {
    let all = loader::tracepoints();
    let Some(dir) = tracefs else {
        return check(
            "tracepoints",
            Status::Warn,
            format!(
                "{} tracepoints not checked: tracefs is not readable",
                all.len()
            ),
            Some("fix tracefs first"),
        );
    };
    let mut seen = std::collections::HashSet::new();
    let mut missing = Vec::new();
    for (_, category, name) in &all {
        if !seen.insert((*category, name.clone())) {
            continue;
        }
        if !dir
            .join("events")
            .join(category)
            .join(name)
            .join("id")
            .exists()
        {
            missing.push(format!("{category}:{name}"));
        }
    }
    if missing.is_empty() {
        check(
            "tracepoints",
            Status::Ok,
            format!(
                "all {} tracepoints exist (syscalls, sched, task)",
                seen.len()
            ),
            None,
        )
    } else {
        check(
            "tracepoints",
            Status::Fail,
            format!("missing: {}", missing.join(", ")),
            Some("use a kernel built with CONFIG_FTRACE_SYSCALLS (syscall tracepoints)"),
        )
    }
}

fn uprobes_check(tracefs: Option<&Path>) -> Check {
    let pmu = read_small("/sys/bus/event_source/devices/uprobe/type");
    let events = tracefs.is_some_and(|d| d.join("uprobe_events").exists());
    match (pmu, events) {
        (Some(t), _) => check(
            "uprobes",
            Status::Ok,
            format!(
                "uprobe perf events available (PMU type {}){}",
                t.trim(),
                if events { ", uprobe_events present" } else { "" }
            ),
            None,
        ),
        (None, true) => check(
            "uprobes",
            Status::Ok,
            "uprobe_events present in tracefs".to_owned(),
            None,
        ),
        (None, false) => check(
            "uprobes",
            Status::Fail,
            "no uprobe PMU (/sys/bus/event_source/devices/uprobe) and no uprobe_events: TLS cannot be probed".to_owned(),
            Some("use a kernel built with CONFIG_UPROBE_EVENTS"),
        ),
    }
}

/// `union bpf_attr` for BPF_MAP_CREATE, the fields used (the kernel zero-fills the rest).
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

fn ringbuf_check(p: &Privileges) -> Check {
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_RINGBUF,
        key_size: 0,
        value_size: 0,
        max_entries: 64 << 10,
        map_flags: 0,
    };
    // SAFETY: bpf(BPF_MAP_CREATE, pointer to a live attr, its size); a returned fd is closed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreateAttr,
            std::mem::size_of::<MapCreateAttr>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a fresh descriptor this function owns.
        unsafe { libc::close(fd as libc::c_int) };
        return check(
            "ring_buffer",
            Status::Ok,
            "created a 64 KiB BPF ring buffer".to_owned(),
            None,
        );
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) if !p.can_load() => check(
            "ring_buffer",
            Status::Warn,
            format!("not tested: creating a BPF map was refused ({err})"),
            Some("run doctor with llmprobe's privileges (sudo llmprobe doctor)"),
        ),
        Some(libc::EINVAL) => check(
            "ring_buffer",
            Status::Fail,
            format!("the kernel has no BPF ring buffer ({err})"),
            Some("run llmprobe on Linux 5.8 or later"),
        ),
        _ => check(
            "ring_buffer",
            Status::Fail,
            format!("creating a BPF ring buffer failed ({err})"),
            Some("check the memlock limit and kernel.unprivileged_bpf_disabled below"),
        ),
    }
}

fn programs_check(p: &Privileges) -> Check {
    if !p.can_load() {
        return check(
            "ebpf_programs",
            Status::Warn,
            "not tested: loading programs needs privileges".to_owned(),
            Some("run doctor with llmprobe's privileges (sudo llmprobe doctor)"),
        );
    }
    let t0 = Instant::now();
    match loader::verify_programs() {
        Ok(n) => check(
            "ebpf_programs",
            Status::Ok,
            format!(
                "{n} programs pass the kernel verifier ({} ms; nothing attached)",
                t0.elapsed().as_millis()
            ),
            None,
        ),
        Err(e) => check(
            "ebpf_programs",
            Status::Fail,
            escape(format!("{e:#}").as_bytes()),
            Some("report the kernel version and this message to the llmprobe developers"),
        ),
    }
}

fn memlock_check(p: &Privileges, version: Option<(u32, u32, u32)>) -> Check {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit struct.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0;
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_owned()
        } else {
            format!("{} KiB", v / 1024)
        }
    };
    let now = if ok {
        show(lim.rlim_cur)
    } else {
        "unknown".to_owned()
    };
    if version.is_some_and(|v| v >= (5, 11, 0)) {
        return check(
            "memlock",
            Status::Ok,
            format!("RLIMIT_MEMLOCK {now}: not used, BPF memory is charged to the cgroup (5.11+)"),
            None,
        );
    }
    let need = u64::from(llmprobe_common::RING_BYTES_MIN) * 16 + (16 << 20);
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY || p.has(CAP_SYS_RESOURCE) {
        check(
            "memlock",
            Status::Ok,
            format!("RLIMIT_MEMLOCK {now}; llmprobe raises it to unlimited when it starts"),
            None,
        )
    } else if lim.rlim_cur >= need {
        check(
            "memlock",
            Status::Warn,
            format!(
                "RLIMIT_MEMLOCK {now}, and without CAP_SYS_RESOURCE it cannot be raised: ring buffers larger than the default 16M will not fit"
            ),
            Some("grant CAP_SYS_RESOURCE, or set LimitMEMLOCK=infinity / ulimit -l unlimited"),
        )
    } else {
        check(
            "memlock",
            Status::Fail,
            format!(
                "RLIMIT_MEMLOCK {now} cannot hold the maps (kernels before 5.11 charge them to it) and cannot be raised without CAP_SYS_RESOURCE"
            ),
            Some("grant CAP_SYS_RESOURCE, or set LimitMEMLOCK=infinity / ulimit -l unlimited"),
        )
    }
}

fn sysctl_checks(p: &Privileges) -> [Check; 2] {
    let bpf = read_small("/proc/sys/kernel/unprivileged_bpf_disabled").map(|s| s.trim().to_owned());
    let perf = read_small("/proc/sys/kernel/perf_event_paranoid").map(|s| s.trim().to_owned());
    let bpf_check = match bpf {
        None => check(
            "unprivileged_bpf_disabled",
            Status::Ok,
            "absent".to_owned(),
            None,
        ),
        Some(v) => check(
            "unprivileged_bpf_disabled",
            Status::Ok,
            format!(
                "{}: {}",
                escape(v.as_bytes()),
                if p.has(CAP_BPF) || p.has(CAP_SYS_ADMIN) {
                    "not relevant, llmprobe runs with CAP_BPF"
                } else if v == "0" {
                    "unprivileged BPF allowed, but llmprobe still needs CAP_BPF to attach"
                } else {
                    "unprivileged BPF is off: llmprobe needs CAP_BPF (or root)"
                }
            ),
            None,
        ),
    };
    let perf_check = match perf {
        None => check("perf_event_paranoid", Status::Ok, "absent".to_owned(), None),
        Some(v) => check(
            "perf_event_paranoid",
            Status::Ok,
            format!(
                "{}: {}",
                escape(v.as_bytes()),
                if p.has(CAP_PERFMON) || p.has(CAP_SYS_ADMIN) {
                    "not relevant, llmprobe runs with CAP_PERFMON"
                } else {
                    "llmprobe needs CAP_PERFMON (or root) to attach probes, whatever this value"
                }
            ),
            None,
        ),
    };
    [bpf_check, perf_check]
}

fn nvml_check() -> Check {
    match crate::gpu::nvml::NvmlSource::new(None) {
        Ok(n) => check(
            "nvml",
            Status::Ok,
            escape(format!("NVML loaded: {}", n.describe()).as_bytes()),
            None,
        ),
        Err(e) => check(
            "nvml",
            Status::Warn,
            format!(
                "NVML not loaded ({}): no GPU metrics (fine on a node without NVIDIA GPUs)",
                escape(e.as_bytes())
            ),
            Some(
                "on a GPU node, make the driver's libnvidia-ml.so.1 visible (or pass --nvml-lib to llmprobe run)",
            ),
        ),
    }
}

/// Runs every node check.
pub fn node_checks() -> Vec<Check> {
    let p = Privileges::current();
    let release = read_small("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = parse_kernel_release(&release);
    let (tracefs, tracefs_dir) = tracefs_check(&p);
    let [bpf_sysctl, perf_sysctl] = sysctl_checks(&p);
    vec![
        privileges_check(&p),
        kernel_check(version, &release),
        btf_check(),
        lockdown_check(),
        tracefs,
        tracepoints_check(tracefs_dir.as_deref()),
        uprobes_check(tracefs_dir.as_deref()),
        ringbuf_check(&p),
        programs_check(&p),
        memlock_check(&p, version),
        bpf_sysctl,
        perf_sysctl,
        nvml_check(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// Most processes examined; the rest are counted.
pub const MAX_PROCESSES: usize = 4096;
/// Most distinct files read.
pub const MAX_FILES: usize = 4096;
/// Most executable mappings looked at per process.
pub const MAX_MAPPINGS_PER_PROCESS: usize = 512;
/// No file is read after this long; processes not finished are `unknown`.
pub const SCAN_DEADLINE: Duration = Duration::from_secs(30);

/// What was read of one file: its facts, or why not.
pub type FileFacts = Result<ElfFacts, String>;

/// What the agent's Go reader says of a Go file.
pub type GoFacts = Result<GoVerdict, GoRefusal>;

/// Whether the agent probes Go binaries of `arch` on this machine (its Go programs read
/// x86-64 registers: the agent's loader makes the same test).
fn go_arch_probed(arch: GoArch) -> bool {
    cfg!(target_arch = "x86_64") && arch == GoArch::Amd64
}

/// What a process's mappings say, the input of [`classify`].
#[derive(Debug, Clone, Default)]
pub struct ProcFacts {
    /// Its memory map could not be read (permissions).
    pub maps_unreadable: bool,
    /// This process has CAP_SYS_PTRACE (an unreadable map then has another cause).
    pub ptrace_capable: bool,
    /// The executable's facts (None: not among its mappings).
    pub exe: Option<FileFacts>,
    /// The other mapped files: (file name, escaped; facts).
    pub libs: Vec<(String, FileFacts)>,
    /// The Go reader's verdict on the executable (None: not read, or not a Go file).
    pub go: Option<GoFacts>,
}

/// How llmprobe sees a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A dynamic OpenSSL library with the functions the agent probes (its file name).
    OpenSsl(String),
    /// OpenSSL/BoringSSL linked into the executable, with its symbols.
    OpenSslStatic,
    /// A dynamic GnuTLS library with the functions the agent probes (its file name).
    GnuTls(String),
    /// A Go binary whose crypto/tls the agent probes.
    Go {
        /// Its Go version (escaped; `unknown` when the build info does not say).
        version: String,
        /// The RETs of `crypto/tls.(*Conn).Read` probed.
        rets: usize,
    },
    /// A Go binary without crypto/tls (its Go version, escaped).
    GoNoTls(String),
    /// A Go binary the agent refuses to probe, and why.
    GoInvisible(GoRefusal),
    /// Statically linked and stripped.
    StaticStripped,
    /// GnuTLS mapped, but without `gnutls_record_recv`/`gnutls_record_send` in its symbols.
    GnuTlsUnprobed,
    /// NSS mapped.
    Nss,
    /// rustls linked in.
    Rustls,
    /// No TLS library at all.
    NoTls,
    /// Could not tell (why).
    Unknown(String),
}

impl Class {
    /// True when the agent's uprobes cover this process's TLS.
    pub fn probed(&self) -> bool {
        matches!(
            self,
            Class::OpenSsl(_) | Class::OpenSslStatic | Class::GnuTls(_) | Class::Go { .. }
        )
    }

    /// Stable code for --json.
    pub fn code(&self) -> &'static str {
        match self {
            Class::OpenSsl(_) => "openssl",
            Class::OpenSslStatic => "openssl_static",
            Class::Go { .. } => "go",
            Class::GoNoTls(_) => "go_no_tls",
            Class::GoInvisible(_) => "go_invisible",
            Class::StaticStripped => "static_stripped",
            Class::GnuTls(_) => "gnutls",
            Class::GnuTlsUnprobed => "gnutls_no_symbols",
            Class::Nss => "nss",
            Class::Rustls => "rustls",
            Class::NoTls => "no_tls",
            Class::Unknown(_) => "unknown",
        }
    }

    /// The line a person reads.
    pub fn label(&self) -> String {
        match self {
            Class::OpenSsl(lib) => format!("probed: OpenSSL {lib}"),
            Class::OpenSslStatic => {
                "probed: static OpenSSL/BoringSSL with symbols (in the executable)".to_owned()
            }
            Class::GnuTls(lib) => format!("probed: GnuTLS {lib}"),
            Class::Go { version, rets } => {
                format!("probed: Go {version} crypto/tls (Write, Read and its {rets} RETs)")
            }
            Class::GoNoTls(version) => {
                format!("no TLS library: Go {version} without crypto/tls (plaintext HTTP still seen)")
            }
            Class::GoInvisible(r) => format!("invisible: Go: {}", r.describe()),
            Class::StaticStripped => STATIC_STRIPPED_LABEL.to_owned(),
            Class::GnuTlsUnprobed => {
                "invisible: GnuTLS without gnutls_record_recv/gnutls_record_send in its symbol tables"
                    .to_owned()
            }
            Class::Nss => "invisible: TLS library not supported: NSS".to_owned(),
            Class::Rustls => {
                "invisible: TLS library not supported: rustls (statically linked)".to_owned()
            }
            Class::NoTls => "no TLS library (plaintext HTTP still seen)".to_owned(),
            Class::Unknown(why) => format!("unknown: {why}"),
        }
    }
}

/// Why a stripped static executable stays invisible, and what would fix it.
pub const STATIC_STRIPPED_LABEL: &str = "invisible: statically linked and stripped: a TLS library linked into it has no symbols left to place uprobes on (fix: build without `strip`/`-s` so .symtab stays, or link OpenSSL/GnuTLS dynamically)";

/// Classifies a process from what its mappings say.
pub fn classify(f: &ProcFacts) -> Class {
    if f.maps_unreadable {
        return Class::Unknown(if f.ptrace_capable {
            "its memory map is not readable even with CAP_SYS_PTRACE (another user namespace, or a ptrace restriction such as Yama)".to_owned()
        } else {
            "its memory map is not readable (needs root or CAP_SYS_PTRACE)".to_owned()
        });
    }
    let has = |facts: &FileFacts, stack: TlsStack| {
        facts
            .as_ref()
            .is_ok_and(|x| discovery::stack_usable(&x.tls, stack))
    };
    if let Some(exe) = &f.exe
        && has(exe, TlsStack::OpenSsl)
    {
        return Class::OpenSslStatic;
    }
    if let Some((name, _)) = f.libs.iter().find(|(_, x)| has(x, TlsStack::OpenSsl)) {
        return Class::OpenSsl(name.clone());
    }
    // GnuTLS, in a library or (rarely) linked into the executable.
    if let Some((name, _)) = f.libs.iter().find(|(_, x)| has(x, TlsStack::GnuTls)) {
        return Class::GnuTls(name.clone());
    }
    if let Some(exe) = &f.exe
        && has(exe, TlsStack::GnuTls)
    {
        return Class::GnuTls("(in the executable)".to_owned());
    }
    if let Some((name, Err(why))) = f
        .libs
        .iter()
        .find(|(n, _)| n.starts_with("libssl") || n.starts_with("libgnutls.so"))
    {
        return Class::Unknown(format!("{name} could not be read: {why}"));
    }
    let exe = match &f.exe {
        None => return Class::Unknown("its executable is not among its mappings".to_owned()),
        Some(Err(why)) => {
            return Class::Unknown(format!("its executable could not be read: {why}"));
        }
        Some(Ok(exe)) => exe,
    };
    if exe.go {
        return match &f.go {
            Some(Ok(GoVerdict::Tls(t))) if go_arch_probed(t.arch) => Class::Go {
                version: escape(t.version_text().as_bytes()),
                rets: t.read.rets.len(),
            },
            Some(Ok(GoVerdict::Tls(_))) => Class::GoInvisible(GoRefusal::Arch),
            Some(Ok(GoVerdict::NoTls { version })) => {
                Class::GoNoTls(escape(version.as_deref().unwrap_or("unknown").as_bytes()))
            }
            Some(Err(r)) => Class::GoInvisible(*r),
            Some(Ok(GoVerdict::NotGo)) | None => Class::Unknown(
                "a Go binary whose Go symbol table (pclntab) was not read".to_owned(),
            ),
        };
    }
    if f.libs.iter().any(|(n, _)| n.starts_with("libgnutls.so")) {
        return Class::GnuTlsUnprobed;
    }
    if f.libs.iter().any(|(n, _)| n.starts_with("libnss3.so")) {
        return Class::Nss;
    }
    if exe.rustls {
        return Class::Rustls;
    }
    if !exe.interp && !exe.symtab {
        return Class::StaticStripped;
    }
    Class::NoTls
}

/// Bytes as printable ASCII: control bytes, non-ASCII, quotes and backslashes escaped
/// (`\n`, `\x1b`, `\\`). Nothing a process chose reaches a terminal raw.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for b in bytes {
        for c in std::ascii::escape_default(*b) {
            out.push(c as char);
        }
    }
    out
}

/// One process and how llmprobe sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFinding {
    /// Process id.
    pub pid: u32,
    /// Its name (/proc/PID/comm), escaped.
    pub comm: String,
    /// True when its TLS is probed.
    pub probed: bool,
    /// Stable code (`openssl`, `openssl_static`, `gnutls`, `go`, `go_no_tls`, `go_invisible`,
    /// `static_stripped`, `gnutls_no_symbols`, `nss`, `rustls`, `no_tls`, `unknown`).
    pub reason: &'static str,
    /// The line a person reads.
    pub detail: String,
}

/// The process scan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessScan {
    /// Processes examined.
    pub processes: Vec<ProcessFinding>,
    /// Processes left out by [`MAX_PROCESSES`].
    pub not_examined: usize,
    /// Kernel threads (no memory map) skipped.
    pub kernel_threads: usize,
    /// Distinct files read.
    pub files_read: usize,
    /// True when a cap or the deadline stopped files from being read.
    pub truncated: bool,
    /// The process whose files did not answer by the deadline (a file on a FUSE mount its
    /// owner serves, say): the scan was left there.
    pub stalled_at: Option<u32>,
}

/// Reads a process's `comm` (bounded).
fn comm_of(pid: u32) -> String {
    let Ok(f) = std::fs::File::open(format!("/proc/{pid}/comm")) else {
        return String::new();
    };
    let mut b = Vec::new();
    let _ = f.take(64).read_to_end(&mut b);
    if b.last() == Some(&b'\n') {
        b.pop();
    }
    escape(&b)
}

struct Scanner {
    ptrace_capable: bool,
    cache: HashMap<(u64, u64), FileFacts>,
    /// The Go reader's verdicts, for the files of `cache` built by Go.
    go: HashMap<(u64, u64), GoFacts>,
    started: Instant,
    truncated: bool,
}

impl Scanner {
    fn facts(&mut self, pid: u32, m: &discovery::MapEntry) -> FileFacts {
        if let Some(f) = self.cache.get(&m.file_id) {
            return f.clone();
        }
        if self.cache.len() >= MAX_FILES || self.started.elapsed() > SCAN_DEADLINE {
            self.truncated = true;
            return Err("not read: the scan's file cap or time limit was reached".to_owned());
        }
        let facts = match discovery::open_mapped(pid, m) {
            Ok((f, _)) => {
                let facts = discovery::elf_facts_file(&f.file, ElfLimits::default())
                    .map_err(|r| format!("{r:?}"));
                if facts.as_ref().is_ok_and(|x| x.go) {
                    // The agent's reader, through the same open file: bounded `pread`s.
                    let go = golang::inspect_go_file(&f.file, GoLimits::default());
                    self.go.insert(m.file_id, go);
                }
                facts
            }
            Err(r) => Err(format!("{r:?}")),
        };
        self.cache.insert(m.file_id, facts.clone());
        facts
    }

    fn process(&mut self, pid: u32) -> Option<ProcFacts> {
        let maps = match discovery::read_maps(pid) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Some(ProcFacts {
                    maps_unreadable: true,
                    ptrace_capable: self.ptrace_capable,
                    ..ProcFacts::default()
                });
            }
            // Gone.
            Err(_) => return None,
        };
        if maps.is_empty() {
            return Some(ProcFacts::default());
        }
        let exe_id = std::fs::metadata(format!("/proc/{pid}/exe"))
            .ok()
            .map(|md| (md.dev(), md.ino()));
        let exe_at = exe_id
            .and_then(|id| maps.iter().position(|m| m.file_id == id))
            .unwrap_or(0);
        let mut out = ProcFacts::default();
        for (i, m) in maps.iter().take(MAX_MAPPINGS_PER_PROCESS).enumerate() {
            let facts = self.facts(pid, m);
            if i == exe_at {
                out.go = self.go.get(&m.file_id).cloned();
                out.exe = Some(facts);
            } else {
                let name = m
                    .path
                    .file_name()
                    .map(|n| escape(n.as_encoded_bytes()))
                    .unwrap_or_default();
                out.libs.push((name, facts));
            }
        }
        Some(out)
    }
}

/// What the scan thread tells [`scan_bounded`].
enum ScanMsg {
    /// About to read this process's files.
    At(u32),
    /// A process examined.
    Found(ProcessFinding),
    /// The whole scan.
    Done(ProcessScan),
}

/// [`scan_processes`] on a thread of its own, given up after `limit`: opening or reading a
/// file can block without end (a FUSE file whose daemon never answers), and the deadline of
/// the scan itself is only checked between files. What was found by then is kept.
pub fn scan_bounded(limit: Duration) -> ProcessScan {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("doctor-scan".into())
        .spawn(move || {
            let scan = scan_reporting(&mut |m| {
                let _ = tx.send(m);
            });
            let _ = tx.send(ScanMsg::Done(scan));
        });
    if spawned.is_err() {
        return scan_processes();
    }
    let deadline = Instant::now() + limit;
    let mut partial = ProcessScan::default();
    let mut at = None;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(ScanMsg::Done(scan)) => return scan,
            Ok(ScanMsg::Found(f)) => partial.processes.push(f),
            Ok(ScanMsg::At(pid)) => at = Some(pid),
            Err(_) => break,
        }
    }
    partial.truncated = true;
    partial.stalled_at = at;
    partial
}

/// Examines the running processes (at most [`MAX_PROCESSES`]), skipping this one.
pub fn scan_processes() -> ProcessScan {
    scan_reporting(&mut |_| {})
}

fn scan_reporting(report: &mut dyn FnMut(ScanMsg)) -> ProcessScan {
    let mut pids = discovery::all_pids();
    pids.sort_unstable();
    let me = std::process::id();
    let mut scan = ProcessScan::default();
    let mut scanner = Scanner {
        ptrace_capable: Privileges::current().has(CAP_SYS_PTRACE),
        cache: HashMap::new(),
        go: HashMap::new(),
        started: Instant::now(),
        truncated: false,
    };
    for pid in pids {
        if pid == me {
            continue;
        }
        if scan.processes.len() >= MAX_PROCESSES {
            scan.not_examined += 1;
            continue;
        }
        let comm = comm_of(pid);
        report(ScanMsg::At(pid));
        let Some(facts) = scanner.process(pid) else {
            continue;
        };
        if !facts.maps_unreadable && facts.exe.is_none() && facts.libs.is_empty() {
            scan.kernel_threads += 1;
            continue;
        }
        let class = classify(&facts);
        let finding = ProcessFinding {
            pid,
            comm,
            probed: class.probed(),
            reason: class.code(),
            detail: class.label(),
        };
        report(ScanMsg::Found(finding.clone()));
        scan.processes.push(finding);
    }
    scan.files_read = scanner.cache.len();
    scan.truncated = scanner.truncated;
    scan
}

// ---------------------------------------------------------------------------------------------
// The command.

/// The exit status, for `--help`.
pub const EXIT_STATUS_HELP: &str = "Exit status: 0 when llmprobe can run here (warnings allowed), 1 when a check fails that stops it from running (missing privileges included), 2 for a usage error.\n\nWithout root it still runs and reports the missing privileges as failures; run it as llmprobe will run (sudo llmprobe doctor) to check everything.";

/// `llmprobe doctor` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    /// Print one JSON object: {checks: [{name, status, detail, fix}], processes: [{pid, comm,
    /// probed, reason, detail}], summary: {...}}.
    #[arg(long)]
    pub json: bool,
}

/// The totals.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Checks ok.
    pub ok: usize,
    /// Checks with warnings.
    pub warn: usize,
    /// Checks failed.
    pub fail: usize,
    /// True when no check failed: llmprobe can run here.
    pub ready: bool,
    /// Processes examined.
    pub processes_examined: usize,
    /// Processes whose TLS is probed.
    pub processes_probed: usize,
    /// Processes left out by the cap.
    pub processes_not_examined: usize,
    /// Kernel threads skipped.
    pub kernel_threads: usize,
    /// True when a cap or the time limit stopped files from being read.
    pub scan_truncated: bool,
    /// The process whose files did not answer in time: the scan stopped there.
    pub scan_stalled_at: Option<u32>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Node checks.
    pub checks: Vec<Check>,
    /// Processes.
    pub processes: Vec<ProcessFinding>,
    /// Totals.
    pub summary: Summary,
}

/// Builds the report from the checks and the scan.
pub fn report(checks: Vec<Check>, scan: ProcessScan) -> Report {
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let summary = Summary {
        ok: count(Status::Ok),
        warn: count(Status::Warn),
        fail: count(Status::Fail),
        ready: count(Status::Fail) == 0,
        processes_examined: scan.processes.len(),
        processes_probed: scan.processes.iter().filter(|p| p.probed).count(),
        processes_not_examined: scan.not_examined,
        kernel_threads: scan.kernel_threads,
        scan_truncated: scan.truncated,
        scan_stalled_at: scan.stalled_at,
    };
    Report {
        checks,
        processes: scan.processes,
        summary,
    }
}

/// Most processes named per group in the human output.
const NAMED_PER_GROUP: usize = 6;

/// The report for a person.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let width = r.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let _ = writeln!(out, "Node");
    for c in &r.checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        let _ = writeln!(out, "  {tag}  {:width$}  {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "        {:width$}  fix: {fix}", "");
        }
    }
    let s = &r.summary;
    let _ = writeln!(
        out,
        "\nProcesses ({} examined{}{})",
        s.processes_examined,
        if s.processes_not_examined > 0 {
            format!(", {} more not examined", s.processes_not_examined)
        } else {
            String::new()
        },
        match (s.scan_stalled_at, s.scan_truncated) {
            (Some(pid), _) =>
                format!(", stopped: a file of pid {pid} did not answer in time (a FUSE mount?)"),
            (None, true) => ", file reads stopped at a cap".to_owned(),
            (None, false) => String::new(),
        }
    );
    // Groups: probed first, then invisible, plaintext only, unknown.
    let rank = |p: &ProcessFinding| match p.reason {
        "openssl" | "openssl_static" | "gnutls" | "go" => 0,
        "no_tls" | "go_no_tls" => 2,
        "unknown" => 3,
        _ => 1,
    };
    let mut groups: Vec<(u8, &str, Vec<&ProcessFinding>)> = Vec::new();
    for p in &r.processes {
        match groups.iter_mut().find(|(_, d, _)| *d == p.detail) {
            Some(g) => g.2.push(p),
            None => groups.push((rank(p), &p.detail, vec![p])),
        }
    }
    groups.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.2.len().cmp(&a.2.len()))
            .then(a.1.cmp(b.1))
    });
    for (_, detail, members) in &groups {
        let named: Vec<String> = members
            .iter()
            .take(NAMED_PER_GROUP)
            .map(|p| format!("{} {}", p.pid, p.comm))
            .collect();
        let more = members.len().saturating_sub(NAMED_PER_GROUP);
        let _ = writeln!(
            out,
            "  {detail} ({}): {}{}",
            members.len(),
            named.join(", "),
            if more > 0 {
                format!(", and {more} more (--json lists all)")
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "\nSummary: {} ok, {} warning(s), {} failure(s); {} of {} processes probed. {}",
        s.ok,
        s.warn,
        s.fail,
        s.processes_probed,
        s.processes_examined,
        if s.ready {
            "llmprobe can run here."
        } else {
            "llmprobe cannot run here until the failures are fixed."
        }
    );
    out
}

/// `llmprobe doctor`: prints the report, returns the exit status (0 ready, 1 a check failed).
pub fn run(args: &DoctorArgs) -> i32 {
    let r = report(
        node_checks(),
        scan_bounded(SCAN_DEADLINE + Duration::from_secs(5)),
    );
    let text = if args.json {
        let mut s =
            serde_json::to_string_pretty(&r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        s.push('\n');
        s
    } else {
        render_text(&r)
    };
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if r.summary.ready { 0 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::golang::SynthLayout;

    const ROOT_STATUS: &str = "Name:\tllmprobe\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";

    #[test]
    fn capabilities_are_read_from_cap_eff() {
        assert_eq!(parse_cap_eff(ROOT_STATUS), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(parse_cap_eff("CapEff: zz\n"), None);
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        let root = Privileges::from_status(0, ROOT_STATUS);
        assert!(root.can_load() && root.missing().is_empty());
        assert!(root.refusal().is_none() && root.shortfall().is_none());
    }

    #[test]
    fn nobody_is_refused_with_every_missing_capability_named() {
        let nobody = Privileges::from_status(65534, "CapEff:\t0000000000000000\n");
        assert!(!nobody.can_load());
        let err = nobody.refusal().expect("refused");
        for c in CAPABILITIES {
            assert!(err.contains(c.name), "{err}");
        }
        assert!(err.contains("missing privileges") && err.contains("sudo llmprobe doctor"));
        assert!(!err.contains("tracefs"), "{err}");
    }

    #[test]
    fn bpf_and_perfmon_or_sys_admin_suffice_to_load() {
        let mask = |bits: &[u32]| bits.iter().fold(0u64, |m, b| m | (1 << b));
        let status = |m: u64| format!("CapEff:\t{m:016x}\n");
        let p = Privileges::from_status(1000, &status(mask(&[CAP_BPF, CAP_PERFMON])));
        assert!(p.can_load());
        let names: Vec<&str> = p.missing().iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "CAP_SYS_ADMIN",
                "CAP_SYS_PTRACE",
                "CAP_DAC_READ_SEARCH",
                "CAP_SYS_RESOURCE"
            ]
        );
        assert!(
            p.shortfall()
                .expect("test value")
                .contains("only plaintext HTTP is seen")
        );
        // From 5.11 BPF maps are charged to the cgroup: CAP_SYS_RESOURCE is not needed.
        let current = Privileges {
            memlock_charged: false,
            ..Privileges::from_status(
                0,
                &status(mask(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH])),
            )
        };
        assert!(current.missing().is_empty() && current.shortfall().is_none());
        assert!(
            p.shortfall()
                .expect("test value")
                .contains("CAP_SYS_PTRACE (to read")
        );
        // A kernel before 5.8 has no CAP_BPF: CAP_SYS_ADMIN covers it.
        let old = Privileges::from_status(
            0,
            &status(mask(&[
                CAP_SYS_ADMIN,
                CAP_SYS_PTRACE,
                CAP_DAC_READ_SEARCH,
                CAP_SYS_RESOURCE,
            ])),
        );
        assert!(old.can_load() && old.missing().is_empty());
        let bpf_only = Privileges::from_status(0, &status(mask(&[CAP_BPF])));
        assert!(!bpf_only.can_load());
        assert!(
            bpf_only
                .refusal()
                .expect("test value")
                .contains("root (uid 0) without all")
        );
        // Unreadable status: uid 0 is trusted, anyone else is not.
        assert!(Privileges::from_status(0, "").can_load());
        assert!(!Privileges::from_status(5, "").can_load());
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_kernel_release("6.8.0-45-generic"), Some((6, 8, 0)));
        assert_eq!(parse_kernel_release("6.18.44-fc-v669\n"), Some((6, 18, 44)));
        assert_eq!(parse_kernel_release("5.15"), Some((5, 15, 0)));
        assert_eq!(parse_kernel_release("4.19.0+"), Some((4, 19, 0)));
        assert_eq!(parse_kernel_release("5.10-rc1"), Some((5, 10, 0)));
        assert_eq!(parse_kernel_release("garbage"), None);
        assert_eq!(parse_kernel_release(""), None);
        assert_eq!(kernel_check(Some((5, 4, 0)), "5.4.0").status, Status::Fail);
        assert_eq!(kernel_check(Some((5, 8, 0)), "5.8.0").status, Status::Ok);
        assert!(
            kernel_check(Some((5, 10, 0)), "5.10")
                .detail
                .contains("RLIMIT_MEMLOCK")
        );
        assert_eq!(kernel_check(None, "x\x1b[2J").status, Status::Warn);
        assert!(!kernel_check(None, "x\x1b[2J").detail.contains('\x1b'));
    }

    #[test]
    fn lockdown_and_tracefs_mounts_parse() {
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality"),
            Some("none")
        );
        assert_eq!(parse_lockdown("none"), None);
        let mi = "22 27 0:20 / /proc rw - proc proc rw\n\
                  40 25 0:12 / /sys/kernel/debug/tracing rw - tracefs tracefs rw\n\
                  41 25 0:12 / /sys/kernel/tracing rw,nosuid shared:15 - tracefs tracefs rw\n";
        assert_eq!(
            tracefs_mount_point(mi),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        assert_eq!(
            tracefs_mount_point("1 2 0:1 / /mnt/my\\040trace rw - tracefs t rw\n"),
            Some(PathBuf::from("/mnt/my trace"))
        );
        assert_eq!(
            tracefs_mount_point("22 27 0:20 / /proc rw - proc proc rw\n"),
            None
        );
    }

    fn elf(go: bool, interp: bool, symtab: bool, ssl: bool) -> FileFacts {
        let mut f = ElfFacts {
            go,
            interp,
            symtab,
            ..ElfFacts::default()
        };
        if ssl {
            f.tls[..5].copy_from_slice(&[Some(1), None, Some(2), None, Some(3)]);
        }
        Ok(f)
    }

    /// A GnuTLS library's facts: with its record functions, or without (`symbols`).
    fn gnutls(symbols: bool) -> FileFacts {
        let mut f = ElfFacts::default();
        if symbols {
            for (s, o) in discovery::TLS_SYMBOLS.iter().zip(f.tls.iter_mut()) {
                if s.stack == TlsStack::GnuTls {
                    *o = Some(0x40);
                }
            }
        }
        Ok(f)
    }

    fn procs(exe: FileFacts, libs: &[(&str, FileFacts)]) -> ProcFacts {
        ProcFacts {
            maps_unreadable: false,
            ptrace_capable: true,
            exe: Some(exe),
            libs: libs
                .iter()
                .map(|(n, f)| ((*n).to_owned(), f.clone()))
                .collect(),
            go: None,
        }
    }

    /// A Go executable (`cgo`: dynamically linked) and the Go reader's verdict on it.
    fn go_proc(cgo: bool, go: GoFacts) -> ProcFacts {
        let libc = ("libc.so.6", elf(false, false, false, false));
        let libs: &[(&str, FileFacts)] = if cgo { &[libc] } else { &[] };
        ProcFacts {
            go: Some(go),
            ..procs(elf(true, cgo, cgo, false), libs)
        }
    }

    #[test]
    fn processes_are_classified_from_their_elf_facts() {
        let dynamic = elf(false, true, false, false);
        let libc = ("libc.so.6", elf(false, false, false, false));
        // Dynamic libssl with the probed functions.
        let p = procs(
            dynamic.clone(),
            &[
                libc.clone(),
                ("libssl.so.3", elf(false, false, false, true)),
            ],
        );
        assert_eq!(classify(&p), Class::OpenSsl("libssl.so.3".to_owned()));
        assert!(classify(&p).probed());
        // A libssl without the functions (imports only) does not count.
        let p = procs(
            dynamic.clone(),
            &[("libssl.so.3", elf(false, false, false, false))],
        );
        assert_eq!(classify(&p), Class::NoTls);
        // OpenSSL in the executable (node).
        assert_eq!(
            classify(&procs(elf(false, true, true, true), &[])),
            Class::OpenSslStatic
        );
        // Go, static or with cgo: what the agent's Go reader says of the file.
        let go_tls = golang::inspect_go_bytes(
            &golang::synthetic_go_elf(SynthLayout::Go120),
            GoLimits::default(),
        );
        for cgo in [false, true] {
            let c = classify(&go_proc(cgo, go_tls.clone()));
            assert_eq!(
                c,
                Class::Go {
                    version: "go1.27.3".to_owned(),
                    rets: 2
                }
            );
            assert!(c.probed());
            assert_eq!(c.code(), "go");
            assert_eq!(
                c.label(),
                "probed: Go go1.27.3 crypto/tls (Write, Read and its 2 RETs)"
            );
        }
        let c = classify(&go_proc(
            false,
            Ok(GoVerdict::NoTls {
                version: Some("go1.19.8".to_owned()),
            }),
        ));
        assert_eq!(c, Class::GoNoTls("go1.19.8".to_owned()));
        assert!(!c.probed());
        assert_eq!(c.code(), "go_no_tls");
        assert!(
            c.label().starts_with("no TLS library: Go go1.19.8"),
            "{c:?}"
        );
        let c = classify(&go_proc(false, Ok(GoVerdict::NoTls { version: None })));
        assert_eq!(c, Class::GoNoTls("unknown".to_owned()));
        for r in [GoRefusal::StackAbi, GoRefusal::NoPclntab, GoRefusal::Arch] {
            let c = classify(&go_proc(true, Err(r)));
            assert_eq!(c, Class::GoInvisible(r));
            assert!(!c.probed());
            assert_eq!(c.code(), "go_invisible");
            assert_eq!(c.label(), format!("invisible: Go: {}", r.describe()));
        }
        // An arm64 build: read, but not probed on this x86-64 machine.
        if let Ok(GoVerdict::Tls(mut t)) = go_tls {
            t.arch = GoArch::Arm64;
            assert_eq!(
                classify(&go_proc(false, Ok(GoVerdict::Tls(t)))),
                Class::GoInvisible(GoRefusal::Arch)
            );
        } else {
            panic!("the synthetic Go binary is not read: {go_tls:?}");
        }
        // A hostile version string reaches the label escaped.
        if let Ok(GoVerdict::Tls(mut t)) = golang::inspect_go_bytes(
            &golang::synthetic_go_elf(SynthLayout::Go126),
            GoLimits::default(),
        ) {
            t.version = Some("go1\u{1b}[31m".to_owned());
            let c = classify(&go_proc(false, Ok(GoVerdict::Tls(t))));
            assert!(
                c.label().contains("Go go1\\x1b[31m crypto"),
                "{}",
                c.label()
            );
        } else {
            panic!("the synthetic Go 1.26 binary is not read");
        }
        // A Go executable whose Go reader did not run (no verdict) is not guessed at.
        assert!(matches!(
            classify(&procs(elf(true, false, false, false), &[])),
            Class::Unknown(w) if w.contains("pclntab")
        ));
        // Static: stripped, or with symbols and no TLS.
        assert_eq!(
            classify(&procs(elf(false, false, false, false), &[])),
            Class::StaticStripped
        );
        assert_eq!(
            classify(&procs(elf(false, false, true, false), &[])),
            Class::NoTls
        );
        // GnuTLS with its record functions is probed; without them (a build that hides them) not.
        let gnutls_lib = ("libgnutls.so.30", gnutls(true));
        let c = classify(&procs(dynamic.clone(), &[libc.clone(), gnutls_lib.clone()]));
        assert_eq!(c, Class::GnuTls("libgnutls.so.30".to_owned()));
        assert!(c.probed());
        assert_eq!(c.label(), "probed: GnuTLS libgnutls.so.30");
        let hidden = ("libgnutls.so.30", gnutls(false));
        let c = classify(&procs(dynamic.clone(), &[hidden]));
        assert_eq!(c, Class::GnuTlsUnprobed);
        assert!(!c.probed());
        let unread = ("libgnutls.so.30", Err("ShortRead".to_owned()));
        assert!(matches!(
            classify(&procs(dynamic.clone(), &[unread])),
            Class::Unknown(w) if w.contains("libgnutls.so.30")
        ));
        // Both: OpenSSL named first, probed either way.
        let both = procs(
            dynamic.clone(),
            &[gnutls_lib, ("libssl.so.3", elf(false, false, false, true))],
        );
        assert_eq!(classify(&both), Class::OpenSsl("libssl.so.3".to_owned()));
        // Stripped static: says why and what fixes it.
        let stripped = classify(&procs(elf(false, false, false, false), &[]));
        assert!(stripped.label().contains("no symbols") && stripped.label().contains("fix:"));
        // Unsupported libraries.
        let nss = ("libnss3.so", elf(false, false, false, false));
        assert_eq!(classify(&procs(dynamic.clone(), &[nss])), Class::Nss);
        let mut rust = elf(false, true, true, false).expect("test value");
        rust.rustls = true;
        assert_eq!(
            classify(&procs(Ok(rust), std::slice::from_ref(&libc))),
            Class::Rustls
        );
        // Plain dynamic program.
        assert_eq!(classify(&procs(dynamic.clone(), &[libc])), Class::NoTls);
        // Unknowns.
        let unreadable = ProcFacts {
            maps_unreadable: true,
            ..ProcFacts::default()
        };
        assert!(matches!(classify(&unreadable), Class::Unknown(w) if w.contains("CAP_SYS_PTRACE")));
        let denied_anyway = ProcFacts {
            maps_unreadable: true,
            ptrace_capable: true,
            ..ProcFacts::default()
        };
        assert!(
            matches!(classify(&denied_anyway), Class::Unknown(w) if w.contains("user namespace"))
        );
        assert!(matches!(
            classify(&procs(Err("NotElf".to_owned()), &[])),
            Class::Unknown(w) if w.contains("NotElf")
        ));
        assert!(matches!(
            classify(&procs(dynamic, &[("libssl.so.3", Err("ShortRead".to_owned()))])),
            Class::Unknown(w) if w.contains("libssl.so.3")
        ));
    }

    #[test]
    fn escaped_names_carry_no_control_bytes() {
        let e = escape(b"evil\x1b[2J\n\r\x07\\\xff");
        assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)), "{e}");
        assert_eq!(e, "evil\\x1b[2J\\n\\r\\x07\\\\\\xff");
    }

    #[test]
    fn the_report_counts_and_renders() {
        let checks = vec![
            check("a", Status::Ok, "fine".into(), None),
            check("bb", Status::Warn, "meh".into(), Some("do x")),
        ];
        let finding = |pid, reason, detail: &str, probed| ProcessFinding {
            pid,
            comm: format!("p{pid}"),
            probed,
            reason,
            detail: detail.to_owned(),
        };
        let mut scan = ProcessScan::default();
        for pid in 0..10 {
            scan.processes
                .push(finding(pid, "no_tls", "no TLS library", false));
        }
        scan.processes
            .push(finding(42, "openssl", "probed: OpenSSL libssl.so.3", true));
        let r = report(checks, scan);
        assert!(r.summary.ready);
        assert_eq!((r.summary.ok, r.summary.warn, r.summary.fail), (1, 1, 0));
        assert_eq!(r.summary.processes_probed, 1);
        let text = render_text(&r);
        let probed_at = text
            .find("probed: OpenSSL libssl.so.3 (1): 42 p42")
            .expect(&text);
        let plain_at = text.find("no TLS library (10): 0 p0").expect(&text);
        assert!(probed_at < plain_at, "{text}");
        assert!(text.contains("and 4 more (--json lists all)"), "{text}");
        assert!(text.contains("  WARN  bb  meh\n"), "{text}");
        assert!(text.contains("fix: do x"), "{text}");
        let json = serde_json::to_value(&r).expect("test value");
        assert_eq!(json["checks"][1]["status"], "warn");
        assert_eq!(json["processes"][10]["reason"], "openssl");
        assert_eq!(json["summary"]["ready"], true);
    }
}
