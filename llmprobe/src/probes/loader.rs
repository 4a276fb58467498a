//! Loads the eBPF object, checks what the host offers, attaches the syscall tracepoints and the
//! TLS library uprobes (OpenSSL, GnuTLS: one set of kernel programs serves both, see
//! [`discovery::TlsCall`]), seeds the sockets that existed before the agent started, and hands
//! out the maps the pipeline needs (ring buffer, mute map, loss counter).

use std::collections::{HashMap as StdHashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLink, UProbeLinkId, UProbeScope};
use aya::programs::{TracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use llmprobe_common::{self as abi, Config, ConnKey, SockInfo, SockKey};
use log::{debug, info, warn};

use super::discovery::{self, ElfLimits, Refusal, TlsCall, TlsLibrary};
use super::events::{EventMeta, ProbeEvent};
use super::golang::{self, GoLimits, GoRefusal, GoTls, GoVerdict};
use super::scope::{
    self, KernelMode, LOG_BURST, LOG_EVERY, LogLimiter, MAX_FILES_PER_PROCESS, MAX_SCOPED_LINKS,
    MAX_SCOPED_PROCESSES, ScopeRefusal, ScopeSpec, ScopedProcs, suppressed_note,
};

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

/// Tracepoints attached besides the socket syscalls': (program, category, name).
const OTHER_TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sys_enter_close", "syscalls", "sys_enter_close"),
    ("sys_enter_mmap", "syscalls", "sys_enter_mmap"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("task_newtask", "task", "task_newtask"),
];

/// Every tracepoint the agent attaches, in attach order: (program, category, name).
pub fn tracepoints() -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    for (enter, exit, sc) in IO_SYSCALLS {
        out.push((*enter, "syscalls", format!("sys_enter_{sc}")));
        out.push((*exit, "syscalls", format!("sys_exit_{sc}")));
    }
    for (prog, category, name) in OTHER_TRACEPOINTS {
        out.push((*prog, *category, (*name).to_owned()));
    }
    out
}

/// Loads the embedded eBPF object (maps created, the ring buffer at its smallest size) and runs
/// every program through the kernel verifier, attaching nothing: what `llmprobe doctor` checks.
/// Returns the number of programs loaded; everything is released on return.
pub fn verify_programs() -> anyhow::Result<usize> {
    if EBPF_OBJECT.is_empty() {
        bail!(
            "this llmprobe was built with AYA_BUILD_SKIP=1 and has no eBPF programs; rebuild it with the eBPF toolchain (`cargo xtask build`)"
        );
    }
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("EVENTS", abi::RING_BYTES_MIN)
        .load(EBPF_OBJECT)
        .map_err(load_error)?;
    let mut n = 0;
    for (name, prog) in ebpf.programs_mut() {
        let loaded = match prog {
            aya::programs::Program::TracePoint(p) => p.load(),
            aya::programs::Program::UProbe(p) => p.load(),
            _ => bail!("program {name} has a type llmprobe does not load"),
        };
        loaded.with_context(|| format!("the kernel verifier rejected {name}"))?;
        n += 1;
    }
    Ok(n)
}

/// The TLS uprobe programs: one per kind of call, whatever the stack (GnuTLS's record functions
/// have `SSL_read`'s layout), and the return probe of the calls that move bytes.
const SSL_PROGRAMS: [&str; 6] = [
    "ssl_read",
    "ssl_read_ex",
    "ssl_write",
    "ssl_write_ex",
    "ssl_free",
    "ssl_ret",
];

/// The entry program placed on a function that does `call`.
fn entry_program(call: TlsCall) -> &'static str {
    match call {
        TlsCall::Read => "ssl_read",
        TlsCall::ReadEx => "ssl_read_ex",
        TlsCall::Write => "ssl_write",
        TlsCall::WriteEx => "ssl_write_ex",
        TlsCall::Free => "ssl_free",
    }
}

/// The uprobe links a library's attach points take (entry, and return for calls moving bytes).
fn links_needed(lib: &TlsLibrary) -> usize {
    lib.attach_points()
        .iter()
        .map(|(s, _)| if s.call.moves_bytes() { 2 } else { 1 })
        .sum()
}

/// What to trace.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Which processes are traced, and how uprobes are placed.
    pub scope: ScopeSpec,
    /// Ring buffer bytes (a power of two, `RING_BYTES_MIN..=RING_BYTES_MAX`).
    pub ring_bytes: u32,
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

/// Most files with TLS uprobes attached at once; candidates beyond it are counted
/// (`discovery_cap_reached`) and logged once.
pub const MAX_ATTACHED_FILES: usize = 512;

/// Most uprobe links on files probed for all processes (each link holds a descriptor; a Go
/// binary takes up to 18, a libssl 9): files past it are counted as `discovery_cap_reached`.
pub const MAX_FILE_LINKS: usize = 4096;
/// A file's probes are released after this many consecutive full scans without a traced
/// process mapping it.
pub const UNMAPPED_SCANS_BEFORE_DETACH: u32 = 2;
/// Most files remembered as needing no probes.
const MAX_NEGATIVE_FILES: usize = 65_536;

/// The loaded programs and where they are attached.
pub struct Probes {
    ebpf: Ebpf,
    scope: ScopeSpec,
    /// The kernel's `SCOPE` map (when a selector lists processes for the kernel).
    kernel_scope: Option<HashMap<MapData, u32, u8>>,
    /// The entries of `SCOPE` written here, counted per user.
    listed: scope::ListedShare,
    /// Processes carrying their own uprobes (per-process placement).
    procs: ScopedProcs<Link>,
    /// Log lines other users can cause, [`LOG_BURST`] per kind per [`LOG_EVERY`] at most.
    logs: LogLimiter,
    /// Files attached (with their uprobe links) or known to need none.
    files: FileTable<FileEntry>,
    /// The attached-files cap was logged (reset once below it again).
    cap_logged: bool,
    /// Hands detached links to the thread that closes them.
    reaper: Option<Reaper>,
}

/// One uprobe link: its program and id.
type Link = (&'static str, UProbeLinkId);

/// A file with a TLS library: the links of its uprobes for all processes (per-file placement), or
/// the verified open file and its offsets, kept so that a process is probed with perf_event_open
/// calls alone (per-process placement).
#[derive(Debug)]
pub struct FileEntry {
    links: Vec<Link>,
    /// Its stacks, for logs (`OpenSSL`, `GnuTLS`, `OpenSSL and GnuTLS`).
    label: &'static str,
    lib: Option<Arc<(discovery::OpenedFile, TlsLibrary)>>,
    /// A Go binary with crypto/tls (per-process placement).
    go: Option<Arc<(discovery::OpenedFile, GoTls)>>,
}

/// Threads closing the per-process links at shutdown.
const SHUTDOWN_CLOSERS: usize = 32;

/// Threads closing detached uprobe links: each close waits for kernel grace periods, and
/// closes on several threads share them (per-process placement releases 9 links per process).
const REAPER_THREADS: usize = 4;

/// The reaper: its queue and the links waiting in it (bounded by the attach side: past
/// [`MAX_SCOPED_LINKS`] links waiting, no per-process link is attached).
#[derive(Clone)]
struct Reaper {
    tx: SyncSender<Vec<UProbeLink>>,
    pending: Arc<AtomicUsize>,
    /// Until when (ms since `epoch`) the reaper holds its closes: an attach is being made.
    hold_until_ms: Arc<AtomicU64>,
    epoch: Instant,
}

/// How long the reaper holds its closes after an attach or a hint scan began. Closing a uprobe
/// holds the kernel's trace-event mutex through its grace periods (about 0.1 s each here), and
/// a `perf_event_open` for a new uprobe waits for that mutex: a process's probes released while
/// another process starts delayed its attach past its first TLS call (per-process placement).
const REAPER_HOLD: Duration = Duration::from_millis(300);

impl Reaper {
    /// Waits while an attach holds the reaper off, unless too many links wait to be closed
    /// (half the per-process link cap: attaches are refused past the cap).
    fn wait_for_quiet(&self) {
        loop {
            let now = self.epoch.elapsed().as_millis() as u64;
            let until = self.hold_until_ms.load(Ordering::Relaxed);
            if now >= until || self.pending.load(Ordering::Relaxed) > MAX_SCOPED_LINKS / 2 {
                return;
            }
            std::thread::sleep(Duration::from_millis((until - now).min(50)));
        }
    }

    /// Holds the closes off for [`REAPER_HOLD`] from now.
    fn hold(&self) {
        let until = (self.epoch.elapsed() + REAPER_HOLD).as_millis() as u64;
        self.hold_until_ms.fetch_max(until, Ordering::Relaxed);
    }
}

/// Starts the threads that close detached uprobe links (a slow kernel operation).
fn spawn_reaper() -> Option<Reaper> {
    // One batch per released process or file: the channel holds every batch the caps allow.
    let (tx, rx) = sync_channel::<Vec<UProbeLink>>(MAX_SCOPED_PROCESSES + MAX_ATTACHED_FILES);
    let rx = Arc::new(Mutex::new(rx));
    let reaper = Reaper {
        tx,
        pending: Arc::new(AtomicUsize::new(0)),
        hold_until_ms: Arc::new(AtomicU64::new(0)),
        epoch: Instant::now(),
    };
    let mut started = 0;
    for i in 0..REAPER_THREADS {
        let (rx, me) = (rx.clone(), reaper.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("uprobe-reaper-{i}"))
            .spawn(move || {
                loop {
                    let next = rx.lock().map(|r| r.recv());
                    let Ok(Ok(links)) = next else { break };
                    // One link at a time, each after any attach in progress.
                    for link in links {
                        me.wait_for_quiet();
                        drop(link);
                        me.pending.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            });
        match spawned {
            Ok(_) => started += 1,
            Err(e) => warn!("cannot start a uprobe reaper thread ({e})"),
        }
    }
    if started == 0 {
        warn!("no uprobe reaper thread: probes are detached inline");
        return None;
    }
    Some(reaper)
}

/// Checks the things that most often stop an eBPF agent, with what to do about each.
pub fn preflight() -> anyhow::Result<()> {
    // Privileges first: without them every later step fails with a misleading error.
    let privileges = crate::doctor::Privileges::current();
    if let Some(err) = privileges.refusal() {
        bail!("{err}");
    }
    if let Some(note) = privileges.shortfall() {
        warn!("{note}");
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
    // Every uprobe link is a perf event fd: per-process placement holds up to MAX_SCOPED_LINKS,
    // and as many again may be closing on the reaper.
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit structs.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) == 0 {
            let want = (2 * MAX_SCOPED_LINKS as u64 + 8192).min(nofile.rlim_max);
            if nofile.rlim_cur < want {
                nofile.rlim_cur = want;
                let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &nofile);
            }
        }
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
            "loading the eBPF programs failed: permission denied ({text}); {}",
            crate::doctor::PRIVILEGES_HINT
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
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", opts.ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(load_error)?;
        {
            let mut cfg: Array<_, Config> =
                Array::try_from(ebpf.map_mut("CONFIG").context("CONFIG map missing")?)?;
            let spec = &opts.scope;
            let mut flags = match spec.kernel_mode() {
                KernelMode::All => 0,
                KernelMode::Allow => abi::CONFIG_SCOPE_ALLOW,
                KernelMode::Deny => abi::CONFIG_SCOPE_DENY,
            };
            let (pid_off, flags_off) = if spec.kernel_mode() != KernelMode::All && !spec.pids_only()
            {
                flags |= abi::CONFIG_SCOPE_INHERIT;
                scope::newtask_offsets().unwrap_or_else(|| {
                        warn!("cannot read task_newtask's format: forked processes join the scope at the next rescan");
                        (0, 0)
                    })
            } else {
                (0, 0)
            };
            if spec.auto {
                flags |= abi::CONFIG_TLS_HELLO;
            }
            cfg.set(
                0,
                Config {
                    self_tgid: std::process::id(),
                    flags,
                    newtask_pid_off: pid_off,
                    newtask_flags_off: flags_off,
                },
                0,
            )?;
        }
        let kernel_scope = if opts.scope.kernel_mode() == KernelMode::All {
            None
        } else {
            Some(HashMap::try_from(
                ebpf.take_map("SCOPE").context("SCOPE map missing")?,
            )?)
        };
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
        let muted = HashMap::try_from(ebpf.take_map("MUTED").context("MUTED map missing")?)?;
        let lost = PerCpuArray::try_from(ebpf.take_map("LOST").context("LOST map missing")?)?;

        let mut probes = Probes {
            ebpf,
            scope: opts.scope.clone(),
            kernel_scope,
            listed: scope::ListedShare::new(scope::MAX_LISTED_PER_USER, scope::MAX_LISTED),
            procs: ScopedProcs::new(MAX_SCOPED_PROCESSES, MAX_SCOPED_LINKS),
            logs: LogLimiter::new(LOG_EVERY, LOG_BURST),
            files: FileTable::new(MAX_NEGATIVE_FILES),
            cap_logged: false,
            reaper: spawn_reaper(),
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
        for (prog, category, name) in tracepoints() {
            attach(self, prog, category, &name)?;
        }
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
        for prog in SSL_PROGRAMS.iter().chain(GO_PROGRAMS.iter()) {
            self.uprobe(prog)?
                .load()
                .with_context(|| format!("the kernel verifier rejected {prog}"))?;
        }
        Ok(())
    }

    /// Files with TLS uprobes attached now.
    pub fn tls_file_count(&self) -> usize {
        self.files.attached_len()
    }

    /// Considers one executable mapping of `pid`: opens the file really mapped (never a path an
    /// attacker can swap), reads its symbols with bounded reads, and attaches the uprobes when it
    /// defines a TLS stack's I/O functions (OpenSSL, GnuTLS). Refusals go to `report`.
    pub fn consider_file(&mut self, pid: u32, m: &discovery::MapEntry, report: &mut ScanReport) {
        if self.files.is_known(m.file_id) {
            return;
        }
        let links: usize = self.files.entries().map(|e| e.links.len()).sum();
        if self.files.attached_len() >= MAX_ATTACHED_FILES || links >= MAX_FILE_LINKS {
            report.cap_reached += 1;
            if !self.cap_logged {
                self.cap_logged = true;
                warn!(
                    "{} files with {links} uprobe links already carry TLS uprobes (caps: {MAX_ATTACHED_FILES} files, {MAX_FILE_LINKS} links): further TLS libraries (first: {:?} of pid {pid}) are not probed until some are unmapped (counted in llmprobe_dropped_total{{reason=\"discovery_cap_reached\"}})",
                    self.files.attached_len(),
                    m.path
                );
            }
            return;
        }
        let opened = match discovery::open_mapped(pid, m) {
            Ok((f, _via)) => f,
            Err(r) => {
                debug!("not probing {:?} of pid {pid}: {r:?}", m.path);
                report.refused.push(r);
                if cacheable(r) {
                    self.files.remember_negative(m.file_id);
                }
                return;
            }
        };
        // Normally the same identity as the maps line's; after a remap race, the opened file's
        // (the maps line's file is then considered again on the next scan that meets it).
        self.consider_opened(opened, m.path.clone(), false, report);
    }

    /// Considers a host library from the linker cache; when it holds a TLS stack its probes stay
    /// attached for the agent's lifetime (a lazily loaded `import ssl` relies on them).
    pub fn consider_host_file(&mut self, path: &Path, report: &mut ScanReport) {
        match discovery::open_host_file(path) {
            Ok(f) => self.consider_opened(f, path.to_path_buf(), true, report),
            Err(r) => {
                debug!("not probing {path:?}: {r:?}");
                report.refused.push(r);
            }
        }
    }

    fn consider_opened(
        &mut self,
        f: discovery::OpenedFile,
        path: PathBuf,
        pinned: bool,
        report: &mut ScanReport,
    ) {
        if self.files.is_known(f.file_id) {
            return;
        }
        let offsets = match discovery::inspect_elf_file(&f.file, ElfLimits::default()) {
            Ok(o) => o,
            Err(r) => {
                debug!("not probing {path:?}: {r:?}");
                report.refused.push(r);
                if cacheable(r) {
                    self.files.remember_negative(f.file_id);
                }
                return;
            }
        };
        if !discovery::usable(&offsets) {
            self.consider_go(f, path, pinned, report);
            return;
        }
        let lib = TlsLibrary {
            path,
            file_id: f.file_id,
            offsets,
        };
        let label = lib.label();
        if self.scope.per_process() {
            // Probed per process, when a process in scope maps it.
            debug!("{label} found in {:?}; probed per process", lib.path);
            let id = f.file_id;
            let path = lib.path.clone();
            let entry = FileEntry {
                links: Vec::new(),
                label,
                lib: Some(Arc::new((f, lib))),
                go: None,
            };
            self.files.insert_attached(id, path, entry, pinned);
            return;
        }
        let links = match self.attach_tls_library(&f, &lib, UProbeScope::AllProcesses) {
            Ok(l) => {
                if let Some(n) = self.logs.allow("file_attached", Instant::now()) {
                    info!(
                        "attached {} {label} uprobes to {:?} (device {:#x}, inode {}, all processes){}",
                        l.len(),
                        lib.path,
                        lib.file_id.0,
                        lib.file_id.1,
                        suppressed_note(n)
                    );
                }
                l
            }
            Err(e) => {
                if let Some(n) = self.logs.allow("file_attach_failed", Instant::now()) {
                    warn!(
                        "could not probe {label} in {:?}: {e:#}; TLS traffic of processes using it will not be seen{}",
                        lib.path,
                        suppressed_note(n)
                    );
                }
                if transient(&e) {
                    // Out of descriptors or memory for now: tried again at its next scan.
                    return;
                }
                Vec::new()
            }
        };
        if links.is_empty() {
            self.files.remember_negative(f.file_id);
            return;
        }
        report.attached += 1;
        let entry = FileEntry {
            links,
            label,
            lib: None,
            go: None,
        };
        self.files
            .insert_attached(f.file_id, lib.path, entry, pinned);
    }

    /// Attaches the uprobes through `/proc/self/fd/<fd>` of the verified open file: the kernel
    /// resolves that magic link to the open file itself, so the probes land on the inode that
    /// was inspected, whatever has been renamed or replaced at its path meanwhile. On error the
    /// probes attached so far are detached again.
    fn attach_tls_library(
        &mut self,
        f: &discovery::OpenedFile,
        lib: &TlsLibrary,
        scope: UProbeScope,
    ) -> anyhow::Result<Vec<(&'static str, UProbeLinkId)>> {
        let target = f.self_fd_path();
        let mut links = Vec::new();
        let mut result = Ok(());
        // Writes first (`attach_points`' order): under `--scope auto` a process is probed while
        // its handshake is in flight, and its request is written before its answer is read.
        'all: for (sym, off) in lib.attach_points() {
            let prog = entry_program(sym.call);
            // Reads and writes also get the return probe that emits their bytes.
            let progs: &[&'static str] = if sym.call.moves_bytes() {
                &[prog, "ssl_ret"]
            } else {
                &[prog]
            };
            for p in progs {
                let attached = self.uprobe(p).and_then(|u| {
                    u.attach(UProbeAttachLocation::AbsoluteOffset(off), &target, scope)
                        .with_context(|| format!("{p} on {} at {off:#x}", sym.name))
                });
                match attached {
                    Ok(id) => links.push((*p, id)),
                    Err(e) => {
                        result = Err(e);
                        break 'all;
                    }
                }
            }
        }
        if let Err(e) = result {
            self.detach_links(links);
            return Err(e);
        }
        Ok(links)
    }

    /// Detaches uprobes. The links are taken out of their programs here (no system call) and
    /// dropped on the reaper thread: closing a uprobe waits for kernel grace periods (about
    /// 0.1 s per probe on a quiet machine, seconds under load), which must not stall discovery.
    fn detach_links(&mut self, links: Vec<(&'static str, UProbeLinkId)>) {
        let mut owned = Vec::with_capacity(links.len());
        for (prog, id) in links {
            match self.uprobe(prog).and_then(|u| Ok(u.take_link(id)?)) {
                Ok(link) => owned.push(link),
                Err(e) => debug!("detaching {prog} failed: {e:#}"),
            }
        }
        let n = owned.len();
        let Some(reaper) = self.reaper.as_ref() else {
            drop(owned);
            return;
        };
        reaper.pending.fetch_add(n, Ordering::Relaxed);
        if let Err(TrySendError::Full(owned) | TrySendError::Disconnected(owned)) =
            reaper.tx.try_send(owned)
        {
            // The reaper is behind (or gone): close them here.
            reaper.pending.fetch_sub(n, Ordering::Relaxed);
            drop(owned);
        }
    }

    /// Holds the reaper's closes off while discovery may attach ([`REAPER_HOLD`]).
    fn hold_reaper(&self) {
        if let Some(r) = self.reaper.as_ref() {
            r.hold();
        }
    }

    /// The processes to scan for TLS libraries.
    pub fn scan_targets(&self) -> Vec<u32> {
        if self.scope.pids_only() {
            self.scope.pids.clone()
        } else {
            discovery::all_pids()
        }
    }

    fn scan_pid(
        &mut self,
        pid: u32,
        mapped: Option<&mut HashSet<(u64, u64)>>,
        report: &mut ScanReport,
    ) {
        if pid == std::process::id() {
            return;
        }
        if self.scope.per_process() {
            self.scan_scoped(pid, mapped, report);
            return;
        }
        let maps = discovery::executable_mappings(pid);
        for m in &maps {
            self.consider_file(pid, m, report);
        }
        if let Some(set) = mapped {
            set.extend(maps.iter().map(|m| m.file_id));
        }
    }

    /// Per-process placement: decides whether `pid` is in scope (and tells the kernel), then
    /// attaches uprobes for it alone to each TLS library it maps, or releases those it had.
    fn scan_scoped(
        &mut self,
        pid: u32,
        mapped: Option<&mut HashSet<(u64, u64)>>,
        report: &mut ScanReport,
    ) {
        let Some(info) = scope::read_proc(pid) else {
            // Gone (or a thread): its links go; the kernel dropped its entry at exit.
            self.release_process(pid);
            return;
        };
        let selected = self.scope.selects(&info);
        self.set_listed(pid, info.uid, self.scope.listed(selected), report);
        if !selected {
            self.release_process(pid);
            return;
        }
        let wants = !self.scope.auto || self.procs.is_admitted(pid, info.start);
        if !wants && !self.procs.is_empty() {
            // Not (or no longer) admitted: nothing to hold.
            self.release_process(pid);
        }
        let maps = discovery::executable_mappings(pid);
        for m in &maps {
            // Under --scope auto the libraries of selected processes are inspected ahead, so
            // that admission is perf_event_open calls only.
            self.consider_file(pid, m, report);
            if wants {
                self.attach_process(&info, m.file_id, report);
            }
        }
        if let Some(set) = mapped {
            set.extend(maps.iter().map(|m| m.file_id));
        }
    }

    /// Lists or unlists `pid` (of user `uid`) in the kernel's `SCOPE` map: at most
    /// [`scope::MAX_LISTED_PER_USER`] per user and [`scope::MAX_LISTED`] in all (the rest of the
    /// map is the kernel's inherited entries); a refusal, or a refused insert, is counted as
    /// `scope_cap_reached`, and the process is left as the kernel has it.
    fn set_listed(&mut self, pid: u32, uid: u32, listed: bool, report: &mut ScanReport) {
        let Some(map) = self.kernel_scope.as_mut() else {
            return;
        };
        if listed {
            if !self.listed.take(pid, uid) {
                report.scope_refused += 1;
                return;
            }
            if let Err(e) = map.insert(pid, 1, 0) {
                self.listed.release(pid);
                report.scope_refused += 1;
                debug!("could not list pid {pid} in SCOPE: {e}");
            }
        } else {
            self.listed.release(pid);
            let _ = map.remove(&pid);
        }
    }

    /// Attaches the uprobes of file `id` (already known to hold a TLS library) for `pid` alone.
    fn attach_process(&mut self, info: &scope::ProcInfo, id: (u64, u64), report: &mut ScanReport) {
        self.hold_reaper();
        let (pid, start, uid) = (info.pid, info.start, info.uid);
        if self.procs.has(pid, start, id) {
            return;
        }
        let Some(lib) = self.files.get(id).and_then(|e| e.lib.clone()) else {
            if let Some(go) = self.files.get(id).and_then(|e| e.go.clone()) {
                self.attach_go_process(info, id, go, report);
            }
            return;
        };
        let Some(nz) = NonZeroU32::new(pid) else {
            return;
        };
        let want = links_needed(&lib.1);
        let closing = self
            .reaper
            .as_ref()
            .map_or(0, |r| r.pending.load(Ordering::Relaxed));
        let now = Instant::now();
        let reserved = if closing > MAX_SCOPED_LINKS {
            // Links still closing count too: churn cannot pile up perf event fds.
            Err(ScopeRefusal::Links)
        } else {
            // Under --scope auto an admitted process that made no LLM call for a while gives
            // its place up, once this one passed every share (it is admitted again by its next
            // LLM hello or call).
            self.procs
                .reserve(pid, start, uid, want, self.scope.auto.then_some(now))
        };
        match reserved {
            Ok(r) => {
                self.detach_links(r.stale);
                if let Some((idle, links)) = r.evicted {
                    if let Some(n) = self.logs.allow("scope_evicted", now) {
                        info!(
                            "pid {idle} made no LLM call lately: its uprobes go to pid {pid}{}",
                            suppressed_note(n)
                        );
                    }
                    self.detach_links(links);
                }
            }
            Err(r) => {
                report.count_scope_refusal(r);
                if let Some(n) = self.logs.allow(r.label(), now) {
                    let what = match r {
                        ScopeRefusal::Processes => {
                            format!("{MAX_SCOPED_PROCESSES} processes already carry uprobes")
                        }
                        ScopeRefusal::UserShare => format!(
                            "user {uid} already holds {} of the {MAX_SCOPED_PROCESSES} places for processes with uprobes",
                            self.procs.user_share()
                        ),
                        ScopeRefusal::UserLinks => format!(
                            "user {uid} already holds {} of its {} uprobe links",
                            self.procs.user_links(uid),
                            self.procs.user_link_share()
                        ),
                        ScopeRefusal::Files => format!(
                            "{MAX_FILES_PER_PROCESS} TLS libraries are probed in this process already"
                        ),
                        ScopeRefusal::Links => {
                            format!("{MAX_SCOPED_LINKS} uprobe links are attached")
                        }
                    };
                    warn!(
                        "{what}: {:?} is not probed for pid {pid} until places free up (counted in llmprobe_dropped_total{{reason=\"{}\"}}){}",
                        lib.1.path,
                        r.reason(),
                        suppressed_note(n)
                    );
                }
                return;
            }
        }
        let t0 = Instant::now();
        let attached = self.attach_tls_library(&lib.0, &lib.1, UProbeScope::OneProcess(nz));
        report.attach_us += t0.elapsed().as_micros();
        match attached {
            Ok(links) => {
                debug!(
                    "attached {} {} uprobes to {:?} for pid {pid}",
                    links.len(),
                    lib.1.label(),
                    lib.1.path
                );
                report.process_links += links.len();
                self.procs.insert(pid, start, uid, id, links);
            }
            Err(e) => {
                if let Some(n) = self.logs.allow("process_attach_failed", Instant::now()) {
                    info!(
                        "could not probe {:?} for pid {pid}: {e:#}{}",
                        lib.1.path,
                        suppressed_note(n)
                    );
                }
            }
        }
    }

    /// Releases every per-process link of `pid` (it exited or left the scope).
    pub fn release_process(&mut self, pid: u32) {
        let links = self.procs.release(pid);
        if !links.is_empty() {
            debug!("released the uprobes of pid {pid}");
            self.detach_links(links);
        }
    }

    /// At shutdown: closes every per-process link on [`SHUTDOWN_CLOSERS`] threads at once
    /// (each close waits for kernel grace periods; closed one after another, as process exit
    /// would, thousands of them take minutes).
    pub fn release_all_processes(&mut self) {
        let mut links = Vec::new();
        for pid in self.procs.pids() {
            links.extend(self.procs.release(pid));
        }
        let mut owned = Vec::with_capacity(links.len());
        for (prog, id) in links {
            if let Ok(link) = self.uprobe(prog).and_then(|u| Ok(u.take_link(id)?)) {
                owned.push(link);
            }
        }
        if owned.is_empty() {
            return;
        }
        let n = owned.len();
        let t0 = Instant::now();
        let per = n.div_ceil(SHUTDOWN_CLOSERS);
        let mut threads = Vec::new();
        while !owned.is_empty() {
            let chunk: Vec<UProbeLink> = owned.drain(..per.min(owned.len())).collect();
            match std::thread::Builder::new()
                .name("uprobe-close".to_owned())
                .spawn(move || drop(chunk))
            {
                Ok(t) => threads.push(t),
                Err(_) => break,
            }
        }
        drop(owned);
        for t in threads {
            let _ = t.join();
        }
        info!(
            "closed {n} per-process uprobe links in {} ms",
            t0.elapsed().as_millis()
        );
    }

    /// A process with pid `pid` exited: its links go and it is no longer admitted. Checked
    /// against the process that has the pid now (its start time), so an exit handled after
    /// the pid was reused leaves the new process alone.
    pub fn process_exited(&mut self, pid: u32) {
        let tracked = self.procs.tracks(pid);
        if !tracked && !self.listed.contains(pid) {
            return;
        }
        // One read of the pid's live holder serves both (a live pid is a new process).
        let live = scope::live_start(pid);
        if live.is_none() {
            // The kernel removed its `SCOPE` entry at exit.
            self.listed.release(pid);
        }
        if !tracked {
            return;
        }
        let links = self.procs.exited(pid, live);
        if !links.is_empty() {
            debug!("released the uprobes of pid {pid}");
            self.detach_links(links);
        }
    }

    /// Processes carrying their own uprobes.
    pub fn scoped_process_count(&self) -> usize {
        self.procs.len()
    }

    /// `--scope auto`: admits `pid` (`why` says what gave it away) and probes it at once; a
    /// process already admitted is marked active (`call`: it made an LLM call). Returns the time
    /// the attach took, None when nothing was attached.
    pub fn admit(
        &mut self,
        pid: u32,
        why: &str,
        call: bool,
        report: &mut ScanReport,
    ) -> Option<u128> {
        if !self.scope.auto || pid == std::process::id() {
            return None;
        }
        let info = scope::read_proc(pid)?;
        if !self.scope.selects(&info) {
            return None;
        }
        let was = self.procs.is_admitted(pid, info.start);
        if !self.procs.admit(pid, info.start, call, Instant::now()) {
            if !was {
                report.scope_refused += 1;
            }
            return None;
        }
        let t0 = Instant::now();
        let (before, attach_before) = (report.process_links, report.attach_us);
        self.scan_pid(pid, None, report);
        let us = t0.elapsed().as_micros();
        if let Some(n) = self.logs.allow("admitted", Instant::now()) {
            info!(
                "admitted pid {pid} ({why}): {} TLS uprobes attached in {us} us ({} us in perf_event_open){}",
                report.process_links - before,
                report.attach_us - attach_before,
                suppressed_note(n)
            );
        }
        report.admitted += 1;
        Some(us)
    }

    /// Scans processes' executable mappings for TLS libraries and attaches to what is new.
    pub fn scan_pids(&mut self, pids: &[u32], report: &mut ScanReport) {
        // A hint scan may attach: the reaper's closes would delay it.
        self.hold_reaper();
        for pid in pids {
            self.scan_pid(*pid, None, report);
        }
    }

    /// Scans every traced process, then releases the probes of files that no traced process
    /// has mapped in [`UNMAPPED_SCANS_BEFORE_DETACH`] consecutive full scans (linker-cache
    /// libraries stay).
    pub fn full_rescan(&mut self, report: &mut ScanReport) {
        let mut mapped = HashSet::new();
        let targets = self.scan_targets();
        for pid in &targets {
            self.scan_pid(*pid, Some(&mut mapped), report);
        }
        if self.scope.per_process() {
            // Processes whose exit was missed (a dropped request) release their links here.
            let alive: HashSet<u32> = targets.iter().copied().collect();
            for pid in self.procs.pids() {
                if !alive.contains(&pid) {
                    self.process_exited(pid);
                }
            }
            self.procs
                .retain_admitted(|p| Path::new(&format!("/proc/{p}")).exists());
            self.prune_kernel_scope();
        }
        for (id, path, entry) in self.files.end_full_scan(&mapped) {
            if let Some(n) = self.logs.allow("file_released", Instant::now()) {
                info!(
                    "released the {} uprobes of {path:?} (device {:#x}, inode {}): no traced process maps it any more{}",
                    entry.label,
                    id.0,
                    id.1,
                    suppressed_note(n)
                );
            }
            let per_process = self.procs.release_file(id);
            self.detach_links(per_process);
            self.detach_links(entry.links);
            report.released += 1;
        }
        if self.files.attached_len() < MAX_ATTACHED_FILES {
            self.cap_logged = false;
        }
    }

    /// Drops `SCOPE` entries of processes and threads that are gone (a missed exit).
    fn prune_kernel_scope(&mut self) {
        let Some(map) = self.kernel_scope.as_mut() else {
            return;
        };
        let gone: Vec<u32> = map
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !Path::new(&format!("/proc/{k}")).exists())
            .collect();
        for k in gone {
            let _ = map.remove(&k);
        }
        // Processes counted whose exit was not seen (deny mode sends none for a listed one).
        for k in self.listed.pids() {
            if !Path::new(&format!("/proc/{k}")).exists() {
                self.listed.release(k);
            }
        }
    }

    /// Start-up discovery: libssl and libgnutls from the linker cache (pinned), then every traced
    /// process's mappings.
    pub fn initial_scan(&mut self, report: &mut ScanReport) {
        for path in discovery::ldconfig_tls_libraries() {
            self.consider_host_file(&path, report);
        }

        let pids = self.scan_targets();
        self.scan_pids(&pids, report);
    }

    /// Registers the TCP sockets that existed before the agent started, so their plaintext is
    /// traced; returns the matching ConnOpen events for the pipeline.
    pub fn seed_sockets(&mut self) -> anyhow::Result<Vec<ProbeEvent>> {
        let pids = self.scan_targets();
        let spec = self.scope.clone();
        let mut socks: HashMap<_, SockKey, SockInfo> =
            HashMap::try_from(self.ebpf.map_mut("SOCKS").context("SOCKS map missing")?)?;
        let now = crate::clock::monotonic_now_ns();
        let mut events = Vec::new();

        let mut tables: StdHashMap<u64, StdHashMap<u64, SocketAddr>> = StdHashMap::new();
        for pid in pids {
            if pid == std::process::id() {
                continue;
            }
            if spec.kernel_mode() != KernelMode::All
                && !scope::read_proc(pid).is_some_and(|p| spec.selects(&p))
            {
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
                    // Connected before the agent started: no connect time.
                    connect_ns: None,
                });
            }
        }
        Ok(events)
    }
}

/// Whether a refusal is a verdict on the file's content or kind (remembered until the file is
/// unmapped everywhere), rather than a passing condition (the process or mapping went away).
/// Whether an attach failed for want of a resource that may come back (descriptors, memory):
/// such a file is not remembered as unprobeable.
fn transient(e: &anyhow::Error) -> bool {
    let resource = |n: i32| {
        matches!(
            n,
            libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EBUSY | libc::EINTR
        )
    };
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(resource)
    }) || [24, 23, 12, 11, 16, 4]
        .iter()
        .any(|n| format!("{e:#}").contains(&format!("(os error {n})")))
}

fn cacheable(r: Refusal) -> bool {
    matches!(
        r,
        Refusal::NotRegular
            | Refusal::TooLarge
            | Refusal::ShortRead
            | Refusal::NotElf
            | Refusal::TooManySymbols
    )
}

/// What a scan did, for the metrics at the edge.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Files newly attached.
    pub attached: usize,
    /// Files whose probes were released (unmapped everywhere).
    pub released: usize,
    /// Candidate files refused, one entry per refusal.
    pub refused: Vec<Refusal>,
    /// Go binaries with crypto/tls (or that could not be read) not probed, one per refusal.
    pub go_refused: Vec<GoRefusal>,
    /// Candidates skipped because [`MAX_ATTACHED_FILES`] files are attached.
    pub cap_reached: u64,
    /// Processes in scope not probed: the per-process caps (`scope_cap_reached`).
    pub scope_refused: u64,
    /// TLS libraries not probed in a process past its file cap (`scope_process_files`).
    pub process_files_refused: u64,
    /// Processes or files not probed past their user's share of links (`scope_user_links`).
    pub user_links_refused: u64,
    /// Per-process uprobe links attached.
    pub process_links: usize,
    /// Processes admitted by `--scope auto`.
    pub admitted: usize,
    /// Microseconds spent in perf_event_open calls for per-process links.
    pub attach_us: u128,
}

impl ScanReport {
    /// Counts a per-process refusal under its reason.
    pub fn count_scope_refusal(&mut self, r: ScopeRefusal) {
        match r {
            ScopeRefusal::Files => self.process_files_refused += 1,
            ScopeRefusal::UserLinks => self.user_links_refused += 1,
            ScopeRefusal::Processes | ScopeRefusal::Links | ScopeRefusal::UserShare => {
                self.scope_refused += 1
            }
        }
    }
}

/// The files discovery knows: those with probes attached (with their links, released once
/// unmapped), and a bounded set known to hold no TLS library (or refused for what they are).
#[derive(Debug)]
pub struct FileTable<L> {
    attached: StdHashMap<(u64, u64), Tracked<L>>,
    negative: HashSet<(u64, u64)>,
    max_negative: usize,
}

#[derive(Debug)]
struct Tracked<L> {
    path: PathBuf,
    links: L,
    /// From the linker cache: never released.
    pinned: bool,
    /// Consecutive full scans in which no traced process mapped it.
    unmapped_scans: u32,
}

impl<L> FileTable<L> {
    /// An empty table remembering at most `max_negative` files without a TLS library.
    pub fn new(max_negative: usize) -> FileTable<L> {
        FileTable {
            attached: StdHashMap::new(),
            negative: HashSet::new(),
            max_negative,
        }
    }

    /// Attached, or known not to need probes.
    pub fn is_known(&self, id: (u64, u64)) -> bool {
        self.attached.contains_key(&id) || self.negative.contains(&id)
    }

    /// The entry of an attached file.
    pub fn get(&self, id: (u64, u64)) -> Option<&L> {
        self.attached.get(&id).map(|t| &t.links)
    }

    /// The path an attached file was found under.
    pub fn path(&self, id: (u64, u64)) -> Option<&Path> {
        self.attached.get(&id).map(|t| t.path.as_path())
    }

    /// The entries of the attached files.
    pub fn entries(&self) -> impl Iterator<Item = &L> {
        self.attached.values().map(|t| &t.links)
    }

    /// Files with probes attached.
    pub fn attached_len(&self) -> usize {
        self.attached.len()
    }

    /// Remembers a file that needs no probes (nothing is remembered past the cap: such files
    /// are then inspected again on the next scan that meets them).
    pub fn remember_negative(&mut self, id: (u64, u64)) {
        if self.negative.len() < self.max_negative {
            self.negative.insert(id);
        }
    }

    /// Records a file with probes attached.
    pub fn insert_attached(&mut self, id: (u64, u64), path: PathBuf, links: L, pinned: bool) {
        self.attached.insert(
            id,
            Tracked {
                path,
                links,
                pinned,
                unmapped_scans: 0,
            },
        );
    }

    /// Ends a full scan that saw `mapped`: returns the attached files unmapped for
    /// [`UNMAPPED_SCANS_BEFORE_DETACH`] full scans in a row (removed from the table; the caller
    /// detaches their links), and forgets negative entries no longer mapped.
    pub fn end_full_scan(&mut self, mapped: &HashSet<(u64, u64)>) -> Vec<((u64, u64), PathBuf, L)> {
        let mut release = Vec::new();
        for (id, t) in self.attached.iter_mut() {
            if t.pinned || mapped.contains(id) {
                t.unmapped_scans = 0;
            } else {
                t.unmapped_scans += 1;
                if t.unmapped_scans >= UNMAPPED_SCANS_BEFORE_DETACH {
                    release.push(*id);
                }
            }
        }
        self.negative.retain(|id| mapped.contains(id));
        release
            .into_iter()
            .filter_map(|id| self.attached.remove(&id).map(|t| (id, t.path, t.links)))
            .collect()
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

/// Go crypto/tls uprobes: Write's entry, Read's entry, each RET of Read.
const GO_PROGRAMS: [&str; 3] = ["go_tls_write", "go_tls_read", "go_tls_read_ret"];

/// Whether the Go probes can run on this machine (the kernel programs read x86-64 registers).
fn go_arch_supported(arch: golang::GoArch) -> bool {
    cfg!(target_arch = "x86_64") && arch == golang::GoArch::Amd64
}

// Go binaries: found beside OpenSSL files (a file without OpenSSL is looked at as Go), placed
// per file or per process exactly like them, counted against the same caps.
impl Probes {
    /// Considers a file without OpenSSL as a Go binary with crypto/tls: attaches its probes (all
    /// processes), or keeps it for per-process placement; anything else is remembered as
    /// needing no probes (refusals counted in `report.go_refused`).
    fn consider_go(
        &mut self,
        f: discovery::OpenedFile,
        path: PathBuf,
        pinned: bool,
        report: &mut ScanReport,
    ) {
        let go = match golang::inspect_go_file(&f.file, GoLimits::default()) {
            Ok(GoVerdict::Tls(t)) if go_arch_supported(t.arch) => t,
            Ok(GoVerdict::Tls(_)) => {
                self.refuse_go(f.file_id, &path, GoRefusal::Arch, report);
                return;
            }
            Ok(GoVerdict::NotGo | GoVerdict::NoTls { .. }) => {
                self.files.remember_negative(f.file_id);
                return;
            }
            Err(r) => {
                self.refuse_go(f.file_id, &path, r, report);
                return;
            }
        };
        let id = f.file_id;
        if self.scope.per_process() {
            debug!(
                "Go {} crypto/tls found in {path:?}; probed per process",
                go.version_text()
            );
            let entry = FileEntry {
                links: Vec::new(),
                label: "Go crypto/tls",
                lib: None,
                go: Some(Arc::new((f, go))),
            };
            self.files.insert_attached(id, path, entry, pinned);
            return;
        }
        let links = match self.attach_go(&f, &go, UProbeScope::AllProcesses) {
            Ok(l) => {
                if let Some(n) = self.logs.allow("file_attached", Instant::now()) {
                    info!(
                        "attached {} Go crypto/tls uprobes to {path:?} ({}, {} RETs in Read; device {:#x}, inode {}, all processes){}",
                        l.len(),
                        go.version_text(),
                        go.read.rets.len(),
                        id.0,
                        id.1,
                        suppressed_note(n)
                    );
                }
                l
            }
            Err(e) => {
                if let Some(n) = self.logs.allow("file_attach_failed", Instant::now()) {
                    warn!(
                        "could not probe Go crypto/tls in {path:?}: {e:#}; its TLS traffic will not be seen{}",
                        suppressed_note(n)
                    );
                }
                if transient(&e) {
                    return;
                }
                Vec::new()
            }
        };
        if links.is_empty() {
            self.files.remember_negative(id);
            return;
        }
        report.attached += 1;
        let entry = FileEntry {
            links,
            label: "Go crypto/tls",
            lib: None,
            go: None,
        };
        self.files.insert_attached(id, path, entry, pinned);
    }

    /// Counts and logs a Go binary that is not probed; remembered when it is about the file.
    fn refuse_go(&mut self, id: (u64, u64), path: &Path, r: GoRefusal, report: &mut ScanReport) {
        report.go_refused.push(r);
        if let Some(n) = self.logs.allow("go_refused", Instant::now()) {
            info!(
                "not probing the Go binary {path:?}: {} (counted in llmprobe_dropped_total{{reason=\"{}\"}}){}",
                r.describe(),
                r.reason(),
                suppressed_note(n)
            );
        }
        let file_verdict = match r {
            GoRefusal::Elf(e) => cacheable(e),
            _ => true,
        };
        if file_verdict {
            self.files.remember_negative(id);
        }
    }

    /// Attaches the Go probes through `/proc/self/fd/<fd>` of the verified open file (as
    /// [`Self::attach_tls_library`]): Read's RETs first, then Read's entry, then Write's (a
    /// read saved at an entry always finds its RET probed). On error the probes attached so
    /// far are detached again.
    fn attach_go(
        &mut self,
        f: &discovery::OpenedFile,
        go: &GoTls,
        scope: UProbeScope,
    ) -> anyhow::Result<Vec<Link>> {
        let target = f.self_fd_path();
        let mut plan: Vec<(&'static str, u64)> =
            go.read.rets.iter().map(|r| (GO_PROGRAMS[2], *r)).collect();
        plan.push((GO_PROGRAMS[1], go.read.entry));
        plan.push((GO_PROGRAMS[0], go.write.entry));
        let mut links = Vec::with_capacity(plan.len());
        for (prog, off) in plan {
            let attached = self.uprobe(prog).and_then(|u| {
                u.attach(UProbeAttachLocation::AbsoluteOffset(off), &target, scope)
                    .with_context(|| format!("{prog} at {off:#x}"))
            });
            match attached {
                Ok(id) => links.push((prog, id)),
                Err(e) => {
                    self.detach_links(links);
                    return Err(e);
                }
            }
        }
        Ok(links)
    }

    /// Per-process placement of a Go binary's probes for `info`'s process, within the same
    /// shares as OpenSSL files (its links counted: 2 plus Read's RETs).
    fn attach_go_process(
        &mut self,
        info: &scope::ProcInfo,
        id: (u64, u64),
        go: Arc<(discovery::OpenedFile, GoTls)>,
        report: &mut ScanReport,
    ) {
        let (pid, start, uid) = (info.pid, info.start, info.uid);
        let Some(nz) = NonZeroU32::new(pid) else {
            return;
        };
        let closing = self
            .reaper
            .as_ref()
            .map_or(0, |r| r.pending.load(Ordering::Relaxed));
        let now = Instant::now();
        let reserved = if closing > MAX_SCOPED_LINKS {
            Err(ScopeRefusal::Links)
        } else {
            let want = go.1.link_count();
            self.procs
                .reserve(pid, start, uid, want, self.scope.auto.then_some(now))
        };
        match reserved {
            Ok(r) => {
                self.detach_links(r.stale);
                if let Some((_, links)) = r.evicted {
                    self.detach_links(links);
                }
            }
            Err(r) => {
                report.count_scope_refusal(r);
                if let Some(n) = self.logs.allow(r.label(), now) {
                    warn!(
                        "the Go binary {:?} is not probed for pid {pid} until places free up (counted in llmprobe_dropped_total{{reason=\"{}\"}}){}",
                        self.files_path(id),
                        r.reason(),
                        suppressed_note(n)
                    );
                }
                return;
            }
        }
        let t0 = Instant::now();
        let attached = self.attach_go(&go.0, &go.1, UProbeScope::OneProcess(nz));
        report.attach_us += t0.elapsed().as_micros();
        match attached {
            Ok(links) => {
                debug!(
                    "attached {} Go crypto/tls uprobes ({}) for pid {pid}",
                    links.len(),
                    go.1.version_text()
                );
                report.process_links += links.len();
                self.procs.insert(pid, start, uid, id, links);
            }
            Err(e) => {
                if let Some(n) = self.logs.allow("process_attach_failed", Instant::now()) {
                    info!(
                        "could not probe Go crypto/tls for pid {pid}: {e:#}{}",
                        suppressed_note(n)
                    );
                }
            }
        }
    }

    /// The path a file was found under (for logs).
    fn files_path(&self, id: (u64, u64)) -> Option<&Path> {
        self.files.path(id)
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

    fn ids(v: &[((u64, u64), PathBuf, Vec<u32>)]) -> Vec<(u64, u64)> {
        let mut out: Vec<_> = v.iter().map(|(id, _, _)| *id).collect();
        out.sort();
        out
    }

    #[test]
    fn files_unmapped_for_two_full_scans_are_released_pinned_ones_never() {
        let (a, b, pinned) = ((1, 10), (1, 11), (1, 12));
        let mut t: FileTable<Vec<u32>> = FileTable::new(8);
        t.insert_attached(a, PathBuf::from("/a"), vec![1, 2], false);
        t.insert_attached(b, PathBuf::from("/b"), vec![3], false);
        t.insert_attached(pinned, PathBuf::from("/libssl"), vec![4], true);
        assert_eq!(t.attached_len(), 3);
        // Scan 1: only `a` mapped. Nothing released yet (one miss for `b`).
        assert!(t.end_full_scan(&HashSet::from([a])).is_empty());
        // Scan 2: `b` mapped again: its count restarts.
        assert!(t.end_full_scan(&HashSet::from([a, b])).is_empty());
        // Scans 3 and 4: nothing mapped: both released after the second, with their links.
        assert!(t.end_full_scan(&HashSet::new()).is_empty());
        let released = t.end_full_scan(&HashSet::new());
        assert_eq!(ids(&released), vec![a, b]);
        let links: Vec<u32> = released.iter().flat_map(|(_, _, l)| l.clone()).collect();
        assert_eq!(links.len(), 3);
        assert_eq!(t.attached_len(), 1);
        assert!(t.is_known(pinned) && !t.is_known(a) && !t.is_known(b));
        assert!(t.end_full_scan(&HashSet::new()).is_empty());
    }

    #[test]
    fn negative_entries_are_bounded_and_forgotten_once_unmapped() {
        let mut t: FileTable<()> = FileTable::new(2);
        for i in 0..5 {
            t.remember_negative((2, i));
        }
        assert!(t.is_known((2, 0)) && t.is_known((2, 1)) && !t.is_known((2, 2)));
        assert!(t.end_full_scan(&HashSet::from([(2, 1)])).is_empty());
        assert!(!t.is_known((2, 0)) && t.is_known((2, 1)));
    }
}
