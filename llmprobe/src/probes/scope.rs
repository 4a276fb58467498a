//! Which processes are traced: the selectors (`--pid`, `--comm`, `--exclude-comm`, `--cgroup`,
//! `--container-id`) and `--scope auto`, and the table of processes that carry their own uprobes.
//!
//! Stage: beside discovery (its own thread). With no selector and no `--scope auto` every process
//! is traced and each TLS library carries one uprobe set for all processes (the cheapest way to
//! trace everything). Otherwise uprobes are placed per process (`UProbeScope::OneProcess`: the
//! kernel installs the breakpoints only in that process's address space, so a process out of
//! scope never traps), and the kernel's `SCOPE` map tells the syscall programs which processes to
//! trace (checked first thing in every program).
//!
//! Invariants:
//! - A process is selected when it matches any include selector (or there is none) and no
//!   exclude selector. Under `--scope auto` a selected process gets uprobes only once admitted
//!   (its TLS server name is an LLM API's, or the tracker saw it make an LLM call).
//! - Names are what the process chose (`/proc/PID/comm`, settable with `prctl(PR_SET_NAME)`):
//!   `--comm`/`--exclude-comm` let a process opt itself in or out. That only affects its own
//!   traffic; cgroups are set by whoever starts the process.
//! - Bounded: at most [`MAX_SCOPED_PROCESSES`] processes and [`MAX_SCOPED_LINKS`] links carry
//!   per-process uprobes, at most [`MAX_ADMITTED`] processes are remembered as admitted; every
//!   refusal is counted (`scope_cap_reached`).
//! - Shared out between users and processes: one user id holds at most half the places and
//!   half the links (`scope_user_links`), one process at most [`MAX_FILES_PER_PROCESS`] probed
//!   files (`scope_process_files`: a process mapping many copies of libssl cannot take every
//!   link). Every share is checked before an idle admission is evicted for a newcomer, so no
//!   process loses its uprobes to a request that is then refused.
//! - A process is its pid and start time: a reused pid neither inherits nor releases the state
//!   of the process that had it before (exits are checked against the live process).
//! - Log lines an unprivileged user can cause (admissions, refusals, evictions, failed
//!   attaches, files attached or released) pass a [`LogLimiter`]: at most [`LOG_BURST`] lines
//!   per kind per [`LOG_EVERY`], the next one saying how many were suppressed; the counters
//!   stay exact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::sni::LlmHosts;
use crate::telemetry::DropReason;

/// Most processes carrying their own uprobes at once. Small on purpose: each process holds 9
/// perf-event uprobe links per TLS library, and the kernel closes uprobe links one at a time,
/// each after grace periods (measured here: minutes for thousands of links, during which the
/// agent's exit and every other uprobe attach wait), so the cap bounds teardown too.
pub const MAX_SCOPED_PROCESSES: usize = 64;
/// Most per-process uprobe links at once (each is a perf event fd in the agent).
pub const MAX_SCOPED_LINKS: usize = 1024;
/// Most processes remembered as admitted by `--scope auto`.
pub const MAX_ADMITTED: usize = 4096;
/// Most TLS library files probed in one process: a process mapping many copies of libssl
/// (each costs 5 to 9 links) cannot take the links of every other process. Real programs map
/// one or two (a system libssl and a bundled one).
pub const MAX_FILES_PER_PROCESS: usize = 4;
/// Log lines of one kind are limited per this long (the rest are counted in the next line).
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Log lines of one kind per [`LOG_EVERY`] at most: one a second on average, so a quiet node
/// still logs each admission while a flood of them costs a few lines a second.
pub const LOG_BURST: u32 = 10;
/// Where cgroup v2 is usually mounted (a hybrid host mounts it at `/sys/fs/cgroup/unified`:
/// see [`cgroup2_root`]).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup v2 mount point, from `/proc/self/mounts` (`/sys/fs/cgroup` when none is listed).
pub fn cgroup2_root() -> PathBuf {
    std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut f = l.split_whitespace();
                let (_dev, dir, kind) = (f.next()?, f.next()?, f.next()?);
                (kind == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
            })
        })
        .unwrap_or_else(|| PathBuf::from(CGROUP_ROOT))
}
/// The kernel keeps this many bytes of a process name.
const COMM_MAX: usize = 15;

/// What the user asked to trace.
#[derive(Debug, Clone, Default)]
pub struct ScopeSpec {
    /// `--pid`.
    pub pids: Vec<u32>,
    /// `--comm`: exact process names.
    pub comms: Vec<String>,
    /// `--exclude-comm`.
    pub exclude_comms: Vec<String>,
    /// `--cgroup`: cgroup v2 paths relative to the cgroup root, starting with `/`.
    pub cgroups: Vec<String>,
    /// `--container-id`: lower-case hex prefixes of container ids.
    pub container_ids: Vec<String>,
    /// `--scope auto`: uprobes only on processes found talking to LLMs.
    pub auto: bool,
    /// Server names that admit a process under `--scope auto`.
    pub hosts: LlmHosts,
}

/// How the kernel's `SCOPE` map is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelMode {
    /// Every process is traced (the map is unused).
    All,
    /// Only listed processes are traced (an include selector).
    Allow,
    /// Listed processes are not traced (exclude selectors only).
    Deny,
}

/// The raw selector values, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ScopeArgs {
    /// `--pid`.
    pub pids: Vec<u32>,
    /// `--comm`.
    pub comms: Vec<String>,
    /// `--exclude-comm`.
    pub exclude_comms: Vec<String>,
    /// `--cgroup`.
    pub cgroups: Vec<String>,
    /// `--container-id`.
    pub container_ids: Vec<String>,
    /// `--scope auto`.
    pub auto: bool,
    /// `--llm-host`.
    pub llm_hosts: Vec<String>,
}

impl ScopeSpec {
    /// Everything traced, uprobes per file (no selector).
    pub fn all() -> ScopeSpec {
        ScopeSpec::default()
    }

    /// Checks and normalises the selectors; errors say what to fix.
    pub fn new(a: ScopeArgs) -> anyhow::Result<ScopeSpec> {
        for c in a.comms.iter().chain(&a.exclude_comms) {
            check_comm(c)?;
        }
        let root = cgroup2_root();
        let cgroups = a
            .cgroups
            .iter()
            .map(|c| cgroup_selector(&root, c))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let container_ids = a
            .container_ids
            .iter()
            .map(|c| container_selector(c))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if a.pids.contains(&0) {
            bail!("--pid 0: not a process id");
        }
        if !a.llm_hosts.is_empty() && !a.auto {
            bail!("--llm-host is used by --scope auto only; add --scope auto");
        }
        let hosts = LlmHosts::new(&a.llm_hosts).map_err(anyhow::Error::msg)?;
        Ok(ScopeSpec {
            pids: a.pids,
            comms: a.comms,
            exclude_comms: a.exclude_comms,
            cgroups,
            container_ids,
            auto: a.auto,
            hosts,
        })
    }

    /// An include selector is given.
    pub fn has_includes(&self) -> bool {
        !(self.pids.is_empty()
            && self.comms.is_empty()
            && self.cgroups.is_empty()
            && self.container_ids.is_empty())
    }

    /// Uprobes go per process (any selector, or `--scope auto`); otherwise per file.
    pub fn per_process(&self) -> bool {
        self.has_includes() || !self.exclude_comms.is_empty() || self.auto
    }

    /// Only the listed pids: the selection never changes while the agent runs.
    pub fn pids_only(&self) -> bool {
        !self.pids.is_empty()
            && self.comms.is_empty()
            && self.exclude_comms.is_empty()
            && self.cgroups.is_empty()
            && self.container_ids.is_empty()
    }

    /// How the kernel reads the `SCOPE` map.
    pub fn kernel_mode(&self) -> KernelMode {
        if self.has_includes() {
            KernelMode::Allow
        } else if !self.exclude_comms.is_empty() {
            KernelMode::Deny
        } else {
            KernelMode::All
        }
    }

    /// Whether a process is selected (before `--scope auto`'s admission).
    pub fn selects(&self, p: &ProcInfo) -> bool {
        if self.exclude_comms.contains(&p.comm) {
            return false;
        }
        if !self.has_includes() {
            return true;
        }
        self.pids.contains(&p.pid)
            || self.comms.contains(&p.comm)
            || self.cgroups.iter().any(|c| cgroup_within(&p.cgroup, c))
            || self
                .container_ids
                .iter()
                .any(|id| cgroup_names_container(&p.cgroup, id))
    }

    /// Whether the kernel lists the process in `SCOPE` given its selection.
    pub fn listed(&self, selected: bool) -> bool {
        match self.kernel_mode() {
            KernelMode::All => false,
            KernelMode::Allow => selected,
            KernelMode::Deny => !selected,
        }
    }
}

fn check_comm(c: &str) -> anyhow::Result<()> {
    if c.is_empty() {
        bail!("--comm/--exclude-comm: empty name");
    }
    if c.len() > COMM_MAX {
        bail!(
            "--comm/--exclude-comm {c:?}: the kernel keeps the first {COMM_MAX} bytes of a process name; use {:?} (see /proc/PID/comm)",
            String::from_utf8_lossy(&c.as_bytes()[..COMM_MAX])
        );
    }
    if c.contains('\n') || c.contains('\0') {
        bail!("--comm/--exclude-comm {c:?}: a process name holds no newline or NUL");
    }
    Ok(())
}

/// Normalises a `--cgroup` value (absolute under `root`, or relative to it) into the form
/// `/proc/PID/cgroup` shows (`/system.slice/foo.service`); the directory must exist on a
/// cgroup v2 hierarchy.
pub fn cgroup_selector(root: &Path, raw: &str) -> anyhow::Result<String> {
    let p = Path::new(raw);
    // `/sys/fs/cgroup/x` on a host whose cgroup v2 lives at `/sys/fs/cgroup/unified` means `x`.
    let p = if p.is_absolute() && !p.starts_with(root) {
        p.strip_prefix(CGROUP_ROOT).unwrap_or(p)
    } else {
        p
    };
    let rel = if p.is_absolute() {
        p.strip_prefix(root).map_err(|_| {
            anyhow::anyhow!(
                "--cgroup {raw:?}: not under {} (give a cgroup v2 path such as {}/system.slice/foo.service, or one relative to it)",
                root.display(),
                root.display()
            )
        })?
    } else {
        p
    };
    let full = root.join(rel);
    let canon = full
        .canonicalize()
        .with_context(|| format!("--cgroup {raw:?}: {} does not exist", full.display()))?;
    let canon_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let rel = canon
        .strip_prefix(&canon_root)
        .map_err(|_| anyhow::anyhow!("--cgroup {raw:?}: resolves outside {}", root.display()))?;
    if !canon.join("cgroup.procs").exists() {
        bail!(
            "--cgroup {raw:?}: {} is not a cgroup v2 directory (no cgroup.procs)",
            canon.display()
        );
    }
    let mut s = String::from("/");
    s.push_str(&rel.to_string_lossy());
    Ok(s.trim_end_matches('/').to_owned().max("/".to_owned()))
}

/// Checks a `--container-id` value: 12 to 64 hex digits (lower-cased).
pub fn container_selector(raw: &str) -> anyhow::Result<String> {
    let id = raw.trim().to_ascii_lowercase();
    if id.len() < 12 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "--container-id {raw:?}: give 12 to 64 hex digits of the container id (as `docker ps` or `crictl ps` show it)"
        );
    }
    Ok(id)
}

/// True when cgroup `path` is `sel` or below it.
pub fn cgroup_within(path: &str, sel: &str) -> bool {
    if sel == "/" {
        return true;
    }
    path.strip_prefix(sel)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// True when a component of cgroup `path` names a container whose id starts with `prefix`:
/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`,
/// `/docker/<id>`, `.../pod<uid>/<id>`. The id must be a whole 64-hex-digit run.
pub fn cgroup_names_container(path: &str, prefix: &str) -> bool {
    path.split('/').any(|comp| {
        let comp = comp.strip_suffix(".scope").unwrap_or(comp);
        let id = comp.rsplit('-').next().unwrap_or(comp);
        id.len() == 64
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && id.starts_with(prefix)
    })
}

/// What the selectors look at, read from `/proc/PID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// The cgroup v2 path (`0::<path>` in `/proc/PID/cgroup`), empty when none.
    pub cgroup: String,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22): a reused pid differs.
    pub start: u64,
    /// Real user id (`/proc/PID/status`): per-process uprobes are shared out between users.
    pub uid: u32,
}

/// Reads a process's name, cgroup, start time and user; None when it is gone or `pid` names a
/// thread that is not its process's leader. Each file read is bounded ([`PROC_READ_MAX`]).
pub fn read_proc(pid: u32) -> Option<ProcInfo> {
    let stat = read_bounded(&format!("/proc/{pid}/stat"))?;
    let (comm, start) = parse_stat(&stat)?;
    let status = read_bounded(&format!("/proc/{pid}/status"))?;
    let (tgid, uid) = parse_status(&String::from_utf8_lossy(&status))?;
    if tgid != pid {
        return None;
    }
    let cgroup = read_bounded(&format!("/proc/{pid}/cgroup"))
        .map(|t| cgroup_v2_path(&String::from_utf8_lossy(&t)).to_owned())
        .unwrap_or_default();
    Some(ProcInfo {
        pid,
        comm,
        cgroup,
        start,
        uid,
    })
}

/// Bytes read from one /proc file at most (they are small; a longer one is cut).
const PROC_READ_MAX: u64 = 16 * 1024;

fn read_bounded(path: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(PROC_READ_MAX)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// `Tgid:` and the real `Uid:` of a `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<(u32, u32)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
    };
    Some((field("Tgid:")?, field("Uid:")?))
}

/// The comm (between the first `(` and the last `)`) and the start time of a `/proc/PID/stat`.
pub fn parse_stat(stat: &[u8]) -> Option<(String, u64)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = String::from_utf8_lossy(&stat[open + 1..close]).into_owned();
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // Fields after the comm start at field 3 (state); the start time is field 22.
    let start = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some((comm, start))
}

/// The start time of a `/proc/PID/stat` whose process is alive: None for one exiting
/// (`PF_EXITING` in its flags: set before the kernel reports the exit), a zombie (`Z`) or a
/// dead one (`X`, `x`), whose pid may be reused as soon as it is reaped.
pub fn parse_stat_live(stat: &[u8]) -> Option<u64> {
    let (_, start) = parse_stat(stat)?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    // Field 9 (flags) is the 7th after the comm.
    let flags: u64 = f.nth(5)?.parse().ok()?;
    (!matches!(state, "Z" | "X" | "x") && flags & PF_EXITING == 0).then_some(start)
}

/// The kernel's task flag for a task in `do_exit` (`include/linux/sched.h`).
const PF_EXITING: u64 = 0x4;

/// The start time of live process `pid` (see [`parse_stat_live`]); None when it is gone.
pub fn live_start(pid: u32) -> Option<u64> {
    parse_stat_live(&read_bounded(&format!("/proc/{pid}/stat"))?)
}

/// The cgroup v2 line's path (`0::/x/y`), or "" when there is none.
pub fn cgroup_v2_path(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("")
        .trim()
}

/// The offsets of `pid` and `clone_flags` in `task:task_newtask` records, from its format
/// file; None when it cannot be read.
pub fn newtask_offsets() -> Option<(u32, u32)> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let Ok(text) = std::fs::read_to_string(format!("{dir}/events/task/task_newtask/format"))
        else {
            continue;
        };
        return Some((
            parse_field_offset(&text, "pid", 4)?,
            parse_field_offset(&text, "clone_flags", 8)?,
        ));
    }
    None
}

/// `field:pid_t pid;\toffset:8;\tsize:4;` → 8, for a field of `size` bytes.
pub fn parse_field_offset(format: &str, name: &str, size: u32) -> Option<u32> {
    format.lines().find_map(|l| {
        let l = l.trim();
        let decl = l.strip_prefix("field:")?.split(';').next()?;
        if decl.split_whitespace().last()? != name {
            return None;
        }
        let off = l
            .split("offset:")
            .nth(1)?
            .split(';')
            .next()?
            .trim()
            .parse()
            .ok()?;
        let got: u32 = l
            .split("size:")
            .nth(1)?
            .split(';')
            .next()?
            .trim()
            .parse()
            .ok()?;
        (got == size).then_some(off)
    })
}

/// An admitted process that made no LLM call for this long may lose its uprobes to a process
/// waiting for a place (`--scope auto`).
pub const ADMISSION_IDLE: Duration = Duration::from_secs(60);

/// Processes carrying their own uprobes, and the processes `--scope auto` admitted.
///
/// Shared out so that no one user can take every place: one user id holds at most
/// [`ScopedProcs::user_share`] of the processes with uprobes and
/// [`ScopedProcs::user_link_share`] of the links, one process at most
/// [`MAX_FILES_PER_PROCESS`] probed files. Under `--scope auto`, when the table is full, an
/// admitted process idle for [`ADMISSION_IDLE`] (no TLS LLM call seen) gives its place to a
/// newcomer, and only once the newcomer passes every other check. Processes are keyed by pid
/// and start time, so a reused pid is a new process.
#[derive(Debug)]
pub struct ScopedProcs<L> {
    procs: HashMap<u32, Scoped<L>>,
    links: usize,
    max_procs: usize,
    max_links: usize,
    max_files: usize,
    admitted: HashMap<u32, Admission>,
    max_admitted: usize,
}

#[derive(Debug)]
struct Scoped<L> {
    start: u64,
    uid: u32,
    files: HashMap<(u64, u64), Vec<L>>,
}

impl<L> Scoped<L> {
    fn links(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }
}

/// Why and when a process was admitted (`--scope auto`).
#[derive(Debug, Clone, Copy)]
struct Admission {
    start: u64,
    /// Admission, or the latest LLM call over TLS to an LLM API host seen.
    active: Instant,
}

/// Why a process or a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeRefusal {
    /// [`MAX_SCOPED_PROCESSES`] processes already carry uprobes.
    Processes,
    /// [`MAX_SCOPED_LINKS`] links are attached.
    Links,
    /// The process's user already holds its share of the places.
    UserShare,
    /// The process's user already holds its share of the links.
    UserLinks,
    /// The process already has [`MAX_FILES_PER_PROCESS`] files probed.
    Files,
}

impl ScopeRefusal {
    /// The counter it goes to (`llmprobe_dropped_total{reason}`).
    pub fn reason(self) -> DropReason {
        match self {
            ScopeRefusal::Processes | ScopeRefusal::Links | ScopeRefusal::UserShare => {
                DropReason::ScopeCapReached
            }
            ScopeRefusal::UserLinks => DropReason::ScopeUserLinks,
            ScopeRefusal::Files => DropReason::ScopeProcessFiles,
        }
    }

    /// A stable name, the key of its log line.
    pub fn label(self) -> &'static str {
        match self {
            ScopeRefusal::Processes => "scope_processes",
            ScopeRefusal::Links => "scope_links",
            ScopeRefusal::UserShare => "scope_user_share",
            ScopeRefusal::UserLinks => "scope_user_links",
            ScopeRefusal::Files => "scope_process_files",
        }
    }
}

/// What [`ScopedProcs::reserve`] freed for the caller to detach.
#[derive(Debug, PartialEq, Eq)]
pub struct Reserved<L> {
    /// The links of an earlier process with the same pid (it is gone).
    pub stale: Vec<L>,
    /// An idle admitted process that gave its place up, with its links (its admission is
    /// forgotten: its next LLM hello or call admits it again).
    pub evicted: Option<(u32, Vec<L>)>,
}

impl<L> ScopedProcs<L> {
    /// An empty table with these caps (admissions: [`MAX_ADMITTED`], files per process:
    /// [`MAX_FILES_PER_PROCESS`]).
    pub fn new(max_procs: usize, max_links: usize) -> ScopedProcs<L> {
        ScopedProcs {
            procs: HashMap::new(),
            links: 0,
            max_procs,
            max_links,
            max_files: MAX_FILES_PER_PROCESS,
            admitted: HashMap::new(),
            max_admitted: MAX_ADMITTED,
        }
    }

    /// Places one user id may hold: half of them.
    pub fn user_share(&self) -> usize {
        (self.max_procs / 2).max(1)
    }

    /// Links one user id may hold: half of them.
    pub fn user_link_share(&self) -> usize {
        (self.max_links / 2).max(1)
    }

    /// Processes carrying uprobes.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// No process carries uprobes.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Links attached in all.
    pub fn link_count(&self) -> usize {
        self.links
    }

    /// Links held by the processes of user `uid`.
    pub fn user_links(&self, uid: u32) -> usize {
        self.procs
            .values()
            .filter(|p| p.uid == uid)
            .map(Scoped::links)
            .sum()
    }

    /// The processes carrying uprobes.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Whether `pid` carries uprobes or is admitted (an exit of it matters).
    pub fn tracks(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid) || self.admitted.contains_key(&pid)
    }

    /// Whether `pid` (started at `start`) already has links on file `id`.
    pub fn has(&self, pid: u32, start: u64, id: (u64, u64)) -> bool {
        self.procs
            .get(&pid)
            .is_some_and(|p| p.start == start && p.files.contains_key(&id))
    }

    /// Makes room for `want` links of `pid` (user `uid`) on a file it has no links on yet. An
    /// entry of an earlier process with the same pid is returned for release. Refused past the
    /// process's file cap, its user's share of places or links, then the process or link caps;
    /// with `evict_idle` (`--scope auto`, the time now) an idle admitted process
    /// ([`ScopedProcs::idle_admitted`]) gives its place and links up when that is what is
    /// missing, and only when that is enough: nothing is evicted for a refused request.
    pub fn reserve(
        &mut self,
        pid: u32,
        start: u64,
        uid: u32,
        want: usize,
        evict_idle: Option<Instant>,
    ) -> Result<Reserved<L>, ScopeRefusal> {
        let stale = match self.procs.get(&pid) {
            Some(p) if p.start != start => self.release(pid),
            _ => Vec::new(),
        };
        let mut out = Reserved {
            stale,
            evicted: None,
        };
        let known = self.procs.get(&pid);
        match known {
            None => {
                if self.procs.values().filter(|p| p.uid == uid).count() >= self.user_share() {
                    return Err(ScopeRefusal::UserShare);
                }
            }
            Some(p) if p.files.len() >= self.max_files => return Err(ScopeRefusal::Files),
            Some(_) => {}
        }
        if self.user_links(uid) + want > self.user_link_share() {
            return Err(ScopeRefusal::UserLinks);
        }
        let procs_full = known.is_none() && self.procs.len() >= self.max_procs;
        let links_full = self.links + want > self.max_links;
        if !procs_full && !links_full {
            return Ok(out);
        }
        let missing = if procs_full {
            ScopeRefusal::Processes
        } else {
            ScopeRefusal::Links
        };
        let Some(victim) = evict_idle.and_then(|now| self.idle_admitted_except(now, pid)) else {
            return Err(missing);
        };
        let freed = self.procs.get(&victim).map_or(0, Scoped::links);
        if self.links - freed + want > self.max_links {
            return Err(ScopeRefusal::Links);
        }
        let links = self.release(victim);
        self.forget(victim);
        out.evicted = Some((victim, links));
        Ok(out)
    }

    /// Records the links of `pid` on file `id` (after [`ScopedProcs::reserve`]).
    pub fn insert(&mut self, pid: u32, start: u64, uid: u32, id: (u64, u64), links: Vec<L>) {
        self.links += links.len();
        let p = self.procs.entry(pid).or_insert_with(|| Scoped {
            start,
            uid,
            files: HashMap::new(),
        });
        if let Some(old) = p.files.insert(id, links) {
            self.links -= old.len();
        }
    }

    /// Removes every link of `pid` (it exited or left the scope), for the caller to detach.
    pub fn release(&mut self, pid: u32) -> Vec<L> {
        let Some(p) = self.procs.remove(&pid) else {
            return Vec::new();
        };
        let out: Vec<L> = p.files.into_values().flatten().collect();
        self.links -= out.len();
        out
    }

    /// A process with pid `pid` exited; `live` is the start time of the live process that has
    /// the pid now (None: none). Whatever belongs to another process than the live one (the
    /// one that exited, or an earlier one) is released and forgotten; the live process keeps
    /// its links and admission (the exit was an earlier holder's of its pid).
    pub fn exited(&mut self, pid: u32, live: Option<u64>) -> Vec<L> {
        let out = match self.procs.get(&pid) {
            Some(p) if Some(p.start) != live => self.release(pid),
            _ => Vec::new(),
        };
        if self
            .admitted
            .get(&pid)
            .is_some_and(|a| Some(a.start) != live)
        {
            self.admitted.remove(&pid);
        }
        out
    }

    /// Removes every process's links on file `id` (its probes are released).
    pub fn release_file(&mut self, id: (u64, u64)) -> Vec<L> {
        let mut out = Vec::new();
        for p in self.procs.values_mut() {
            if let Some(l) = p.files.remove(&id) {
                out.extend(l);
            }
        }
        self.links -= out.len();
        self.procs.retain(|_, p| !p.files.is_empty());
        out
    }

    /// Whether `pid` started at `start` was admitted by `--scope auto`.
    pub fn is_admitted(&self, pid: u32, start: u64) -> bool {
        self.admitted.get(&pid).is_some_and(|a| a.start == start)
    }

    /// Admits `pid` started at `start`: true when it is new. An admitted process is marked
    /// active again when `call` (it made an LLM call over TLS to an LLM API host: a hello, or
    /// a call the process could fake in plaintext, does not keep a place). When the
    /// admissions are full, one whose process carries no uprobes is forgotten to make room
    /// (the oldest), else the admission is refused (false).
    pub fn admit(&mut self, pid: u32, start: u64, call: bool, now: Instant) -> bool {
        if let Some(a) = self.admitted.get_mut(&pid)
            && a.start == start
        {
            if call {
                a.active = now;
            }
            return false;
        }
        if self.admitted.len() >= self.max_admitted && !self.admitted.contains_key(&pid) {
            let victim = self
                .admitted
                .iter()
                .filter(|(p, _)| !self.procs.contains_key(p))
                .min_by_key(|(_, a)| a.active)
                .map(|(p, _)| *p);
            match victim {
                Some(v) => {
                    self.admitted.remove(&v);
                }
                None => return false,
            }
        }
        self.admitted.insert(pid, Admission { start, active: now });
        true
    }

    /// An admitted process carrying uprobes, idle (no TLS LLM call) for [`ADMISSION_IDLE`] at
    /// `now`: the one idle longest, whose place may go to a newcomer.
    pub fn idle_admitted(&self, now: Instant) -> Option<u32> {
        self.idle_admitted_except(now, 0)
    }

    fn idle_admitted_except(&self, now: Instant, except: u32) -> Option<u32> {
        self.admitted
            .iter()
            .filter(|(p, a)| {
                **p != except
                    && self.procs.get(p).is_some_and(|s| s.start == a.start)
                    && now.saturating_duration_since(a.active) >= ADMISSION_IDLE
            })
            .min_by_key(|(_, a)| a.active)
            .map(|(p, _)| *p)
    }

    /// Forgets an admitted process (it exited, or gave its place up).
    pub fn forget(&mut self, pid: u32) {
        self.admitted.remove(&pid);
    }

    /// Forgets admitted processes for which `alive` is false.
    pub fn retain_admitted(&mut self, alive: impl Fn(u32) -> bool) {
        self.admitted.retain(|p, _| alive(*p));
    }
}

/// Lets a few log lines of each kind through per period and counts the rest, so a process
/// that causes a line at will (an admission, a refusal, a failed attach) cannot flood the
/// agent's log. Kinds are static names: the table is as small as the code's list of them.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    burst: u32,
    kinds: HashMap<&'static str, LogWindow>,
}

#[derive(Debug)]
struct LogWindow {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// At most `burst` lines per kind per `every`.
    pub fn new(every: Duration, burst: u32) -> LogLimiter {
        LogLimiter {
            every,
            burst: burst.max(1),
            kinds: HashMap::new(),
        }
    }

    /// Whether a line of `kind` may be logged at `now`: Some(lines suppressed before it, to
    /// be said in it), or None (this one is suppressed and counted).
    pub fn allow(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        let w = self.kinds.entry(kind).or_insert(LogWindow {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(w.start) >= self.every {
            w.start = now;
            w.logged = 0;
        }
        if w.logged >= self.burst {
            w.suppressed += 1;
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

/// The tail of a rate-limited log line: how many like it were suppressed.
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more lines like this were not logged before this one)")
    }
}

/// `SCOPE` entries userspace may write: the map's room left by the kernel's inherited entries
/// (which it bounds at `SCOPE_INHERITED_PER_NODE`), so the two together never fill it.
pub const MAX_LISTED: usize = (llmprobe_common::SCOPE_MAP_ENTRIES as i64
    - llmprobe_common::SCOPE_INHERITED_PER_NODE) as usize;
/// `SCOPE` entries userspace writes for the processes of one user id: a quarter of
/// [`MAX_LISTED`] (any user can name its processes to match `--comm`).
pub const MAX_LISTED_PER_USER: usize = MAX_LISTED / 4;

/// The processes userspace listed in the kernel's `SCOPE` map, counted per user, so that one
/// user's matching processes cannot fill the map and keep the processes of others out (in
/// deny mode, out of the map means traced). A refused process is left as the kernel has it.
#[derive(Debug)]
pub struct ListedShare {
    by_pid: HashMap<u32, u32>,
    by_uid: HashMap<u32, usize>,
    per_uid: usize,
    cap: usize,
}

impl ListedShare {
    pub fn new(per_uid: usize, cap: usize) -> ListedShare {
        ListedShare {
            by_pid: HashMap::new(),
            by_uid: HashMap::new(),
            per_uid,
            cap,
        }
    }

    /// Whether `pid` (of `uid`) may be listed; when it may, it is counted (once, whatever the
    /// number of calls; a pid now of another user moves to that user's count).
    pub fn take(&mut self, pid: u32, uid: u32) -> bool {
        if self.by_pid.get(&pid) == Some(&uid) {
            return true;
        }
        self.release(pid);
        let held = self.by_uid.get(&uid).copied().unwrap_or(0);
        if held >= self.per_uid || self.by_pid.len() >= self.cap {
            return false;
        }
        self.by_pid.insert(pid, uid);
        *self.by_uid.entry(uid).or_default() += 1;
        true
    }

    /// `pid` is no longer listed (unlisted, or its process is gone).
    pub fn release(&mut self, pid: u32) {
        if let Some(uid) = self.by_pid.remove(&pid)
            && let Some(n) = self.by_uid.get_mut(&uid)
        {
            *n -= 1;
            if *n == 0 {
                self.by_uid.remove(&uid);
            }
        }
    }

    /// Whether `pid` is counted.
    pub fn contains(&self, pid: u32) -> bool {
        self.by_pid.contains_key(&pid)
    }

    /// The pids counted.
    pub fn pids(&self) -> Vec<u32> {
        self.by_pid.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn listed_share_bounds_each_user_and_the_whole() {
        let mut l = ListedShare::new(2, 3);
        assert!(l.take(1, 100) && l.take(2, 100));
        assert!(l.take(1, 100), "a pid already counted stays counted, once");
        assert!(!l.take(3, 100), "the user's share is spent");
        assert!(l.take(4, 200));
        assert!(!l.take(5, 300), "the whole is spent");
        assert_eq!(l.len(), 3);
        assert!(l.contains(2) && !l.contains(3));
        l.release(2);
        l.release(2);
        assert!(l.take(3, 100), "a released place is the user's again");
        // A pid that changed user moves to that user's count.
        assert!(!l.take(4, 100));
        assert_eq!(l.len(), 2);
        assert!(l.take(5, 300));
        assert!(!l.take(6, 200), "full again");
        for p in l.pids() {
            l.release(p);
        }
        assert!(l.is_empty() && l.by_uid.is_empty());
        const {
            assert!(
                MAX_LISTED + llmprobe_common::SCOPE_INHERITED_PER_NODE as usize
                    <= llmprobe_common::SCOPE_MAP_ENTRIES as usize
            )
        };
    }
    use super::*;

    fn proc(pid: u32, comm: &str, cgroup: &str) -> ProcInfo {
        ProcInfo {
            pid,
            comm: comm.to_owned(),
            cgroup: cgroup.to_owned(),
            start: 1,
            uid: 0,
        }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn include_any_exclude_none() {
        let s = ScopeSpec {
            pids: vec![7],
            comms: vec!["python3".into()],
            cgroups: vec!["/app.slice".into()],
            exclude_comms: vec!["curl".into()],
            ..ScopeSpec::default()
        };
        assert!(s.selects(&proc(7, "x", "/")));
        assert!(s.selects(&proc(8, "python3", "/")));
        assert!(s.selects(&proc(9, "y", "/app.slice/a.service")));
        assert!(s.selects(&proc(9, "y", "/app.slice")));
        assert!(!s.selects(&proc(9, "y", "/app.slicex")));
        assert!(!s.selects(&proc(10, "curl", "/app.slice")));
        assert!(!s.selects(&proc(11, "node", "/")));
        assert_eq!(s.kernel_mode(), KernelMode::Allow);
        assert!(s.listed(true) && !s.listed(false));
        let ex = ScopeSpec {
            exclude_comms: vec!["curl".into()],
            ..ScopeSpec::default()
        };
        assert!(ex.selects(&proc(1, "node", "/")) && !ex.selects(&proc(1, "curl", "/")));
        assert_eq!(ex.kernel_mode(), KernelMode::Deny);
        assert!(ex.listed(false) && !ex.listed(true));
        assert!(ex.per_process() && !ex.pids_only());
        let all = ScopeSpec::all();
        assert!(!all.per_process() && all.kernel_mode() == KernelMode::All);
        assert!(all.selects(&proc(1, "x", "")));
    }

    #[test]
    fn container_ids_match_runtime_cgroup_names() {
        let short = &ID[..12];
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/kubepods/besteffort/pod1234/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
        ] {
            assert!(cgroup_names_container(&path, short), "{path}");
            assert!(cgroup_names_container(&path, ID), "{path}");
        }
        assert!(!cgroup_names_container(
            &format!("/docker/{ID}"),
            "fedcba987654"
        ));
        // Not a whole 64-digit id.
        assert!(!cgroup_names_container(
            &format!("/docker/{}", &ID[..40]),
            short
        ));
        assert!(!cgroup_names_container("/user.slice", short));
        assert!(container_selector(short).is_ok());
        assert_eq!(container_selector(&ID.to_uppercase()).expect("hex"), ID);
        assert!(container_selector("0123456789a").is_err());
        assert!(container_selector("0123456789abz").is_err());
        assert!(container_selector(&format!("{ID}0")).is_err());
    }

    #[test]
    fn comm_names_are_checked() {
        assert!(check_comm("python3").is_ok());
        assert!(check_comm("").is_err());
        let e = check_comm("a-very-long-process-name").expect_err("too long");
        assert!(e.to_string().contains("\"a-very-long-pro\""), "{e}");
    }

    #[test]
    fn cgroup_paths_normalise_and_must_exist() {
        let root = std::env::temp_dir().join(format!("llmprobe-cg-{}", std::process::id()));
        let dir = root.join("app.slice/web.service");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("cgroup.procs"), b"").expect("procs");
        std::fs::write(root.join("cgroup.procs"), b"").expect("procs");
        let abs = dir.to_string_lossy().into_owned();
        assert_eq!(
            cgroup_selector(&root, &abs).expect("abs"),
            "/app.slice/web.service"
        );
        assert_eq!(
            cgroup_selector(&root, "app.slice/web.service/").expect("rel"),
            "/app.slice/web.service"
        );
        assert_eq!(
            cgroup_selector(&root, &root.to_string_lossy()).expect("root"),
            "/"
        );
        assert!(cgroup_selector(&root, "app.slice/none").is_err());
        assert!(cgroup_selector(&root, "/etc").is_err());
        assert!(cgroup_selector(&root, "../").is_err());
        std::fs::create_dir_all(root.join("plain")).expect("mkdir");
        assert!(cgroup_selector(&root, "plain").is_err());
        let _ = std::fs::remove_dir_all(&root);
        assert!(cgroup_within("/a/b", "/"));
    }

    #[test]
    fn proc_files_parse() {
        let stat =
            b"42 (we ird) x) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 123 45";
        assert_eq!(parse_stat(stat), Some(("we ird) x".to_owned(), 987_654)));
        assert_eq!(parse_stat(b"42 (x"), None);
        assert_eq!(parse_stat(b"42 (x) S 1"), None);
        assert_eq!(
            cgroup_v2_path("1:name=systemd:/x\n0::/app.slice/a\n"),
            "/app.slice/a"
        );
        assert_eq!(cgroup_v2_path("1:cpu:/x\n"), "");
        let fmt = "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n";
        assert_eq!(parse_field_offset(fmt, "pid", 4), Some(8));
        assert_eq!(parse_field_offset(fmt, "clone_flags", 8), Some(32));
        assert_eq!(parse_field_offset(fmt, "clone_flags", 4), None);
        assert_eq!(parse_field_offset(fmt, "nope", 4), None);
        assert_eq!(
            parse_status("Name:\tx\nTgid:\t42\nPid:\t43\nUid:\t1000\t1000\t1000\t1000\n"),
            Some((42, 1000))
        );
        assert_eq!(parse_status("Tgid:\t42\n"), None);
        // This process is its own leader; its start time is readable.
        let me = read_proc(std::process::id()).expect("self");
        assert!(me.start > 0 && !me.comm.is_empty());
    }

    /// Reserves without eviction; the stale links only.
    fn res(
        t: &mut ScopedProcs<u32>,
        pid: u32,
        start: u64,
        uid: u32,
        want: usize,
    ) -> Result<Vec<u32>, ScopeRefusal> {
        t.reserve(pid, start, uid, want, None).map(|r| {
            assert_eq!(r.evicted, None);
            r.stale
        })
    }

    #[test]
    fn scoped_processes_are_bounded_and_released() {
        let mut t: ScopedProcs<u32> = ScopedProcs::new(4, 18);
        assert_eq!(res(&mut t, 1, 10, 0, 2), Ok(vec![]));
        t.insert(1, 10, 0, (0, 1), vec![1, 2]);
        assert!(t.has(1, 10, (0, 1)) && !t.has(1, 11, (0, 1)));
        assert_eq!(res(&mut t, 2, 10, 0, 2), Ok(vec![]));
        t.insert(2, 10, 0, (0, 1), vec![3, 4]);
        // User 0 holds its share (half of 4): another of its processes waits, user 1's does not.
        assert_eq!(res(&mut t, 3, 10, 0, 1), Err(ScopeRefusal::UserShare));
        assert_eq!(res(&mut t, 3, 10, 1, 1), Ok(vec![]));
        t.insert(3, 10, 1, (0, 1), vec![5]);
        assert_eq!(res(&mut t, 4, 10, 2, 1), Ok(vec![]));
        t.insert(4, 10, 2, (0, 1), vec![6]);
        assert_eq!(res(&mut t, 5, 10, 3, 1), Err(ScopeRefusal::Processes));
        assert_eq!(res(&mut t, 3, 10, 1, 9), Err(ScopeRefusal::UserLinks));
        assert_eq!(res(&mut t, 3, 10, 1, 8), Ok(vec![]));
        t.insert(3, 10, 1, (0, 2), vec![7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!(res(&mut t, 4, 10, 2, 8), Err(ScopeRefusal::Links));
        assert_eq!(t.link_count(), 14);
        // Pid 1 reused by a new process: the old links come back for release.
        assert_eq!(res(&mut t, 1, 11, 0, 1), Ok(vec![1, 2]));
        t.insert(1, 11, 0, (0, 2), vec![15]);
        assert_eq!(t.link_count(), 13);
        let mut gone = t.release_file((0, 1));
        gone.sort();
        assert_eq!(gone, vec![3, 4, 5, 6]);
        assert_eq!((t.len(), t.link_count()), (2, 9));
        assert_eq!(t.release(1), vec![15]);
        assert_eq!(t.release(3).len(), 8);
        assert!(t.is_empty() && t.link_count() == 0);
    }

    #[test]
    fn one_process_cannot_take_every_link_with_copies_of_libssl() {
        // 1024 links, 64 places: a process mapping 200 copies of libssl (9 links each).
        let mut t: ScopedProcs<u32> = ScopedProcs::new(64, 1024);
        let (attacker, other) = (65_534, 1000);
        let mut taken = 0;
        for f in 0..200u64 {
            match t.reserve(7, 1, attacker, 9, None) {
                Ok(_) => {
                    t.insert(7, 1, attacker, (9, f), vec![0; 9]);
                    taken += 1;
                }
                Err(r) => assert_eq!(r, ScopeRefusal::Files),
            }
        }
        assert_eq!(taken, MAX_FILES_PER_PROCESS);
        assert_eq!(t.link_count(), 36);
        assert_eq!(ScopeRefusal::Files.reason(), DropReason::ScopeProcessFiles);
        // Its user's other processes stop at half the links (512): 14 processes of 4 files
        // (504 links), then no further 9-link file.
        for pid in 8..40 {
            for f in 0..MAX_FILES_PER_PROCESS as u64 {
                if t.reserve(pid, 1, attacker, 9, None).is_ok() {
                    t.insert(pid, 1, attacker, (9, f), vec![0; 9]);
                }
            }
        }
        assert_eq!(t.user_links(attacker), 504);
        assert_eq!(
            t.reserve(99, 1, attacker, 9, None),
            Err(ScopeRefusal::UserLinks)
        );
        assert_eq!(ScopeRefusal::UserLinks.reason(), DropReason::ScopeUserLinks);
        // Another user still gets its files probed.
        assert_eq!(res(&mut t, 100, 1, other, 9), Ok(vec![]));
        t.insert(100, 1, other, (1, 1), vec![0; 9]);
        assert_eq!(t.user_links(other), 9);
    }

    #[test]
    fn shares_are_checked_before_an_idle_process_is_evicted() {
        let t0 = Instant::now();
        let later = t0 + ADMISSION_IDLE + Duration::from_secs(5);
        // Two places: pid 1 (user 1) and pid 2 (user 2), both admitted, pid 1 idle longest.
        let mut t: ScopedProcs<u32> = ScopedProcs::new(2, 100);
        for (pid, uid, at) in [(1, 1, t0), (2, 2, t0 + Duration::from_secs(1))] {
            assert!(t.admit(pid, 1, false, at));
            t.insert(pid, 1, uid, (0, 1), vec![pid; 9]);
        }
        // User 1 already holds its share (1 of 2): refused, and nobody loses its uprobes.
        assert_eq!(
            t.reserve(3, 1, 1, 9, Some(later)),
            Err(ScopeRefusal::UserShare)
        );
        assert!(t.has(1, 1, (0, 1)) && t.has(2, 1, (0, 1)) && t.is_admitted(1, 1));
        // Not idle long enough yet: refused, nothing evicted.
        assert_eq!(
            t.reserve(3, 1, 3, 9, Some(t0 + Duration::from_secs(30))),
            Err(ScopeRefusal::Processes)
        );
        // Without eviction (no --scope auto): refused.
        assert_eq!(t.reserve(3, 1, 3, 9, None), Err(ScopeRefusal::Processes));
        // User 3, idle ones: the one idle longest (pid 1) gives its place and links up.
        let r = t.reserve(3, 1, 3, 9, Some(later)).expect("room");
        assert_eq!(r.evicted, Some((1, vec![1; 9])));
        assert!(!t.is_admitted(1, 1) && !t.has(1, 1, (0, 1)) && t.link_count() == 9);

        // Links: evicting the idle process would not free enough, so it keeps them.
        let mut t: ScopedProcs<u32> = ScopedProcs::new(8, 20);
        assert!(t.admit(1, 1, false, t0));
        t.insert(1, 1, 1, (0, 1), vec![1; 2]);
        assert!(t.admit(2, 1, false, later));
        t.insert(2, 1, 2, (0, 1), vec![2; 10]);
        t.insert(4, 1, 4, (0, 1), vec![4; 6]);
        assert_eq!(t.reserve(3, 1, 3, 9, Some(later)), Err(ScopeRefusal::Links));
        assert!(t.has(1, 1, (0, 1)) && t.is_admitted(1, 1) && t.link_count() == 18);
        // Enough: evicted.
        let r = t.reserve(3, 1, 3, 4, Some(later)).expect("room");
        assert_eq!(r.evicted, Some((1, vec![1; 2])));
        // A process is never evicted for itself.
        let mut t: ScopedProcs<u32> = ScopedProcs::new(1, 100);
        assert!(t.admit(1, 1, false, t0));
        t.insert(1, 1, 1, (0, 1), vec![1; 2]);
        assert_eq!(
            t.reserve(1, 1, 1, 2, Some(later)).map(|r| r.evicted),
            Ok(None)
        );
    }

    #[test]
    fn exits_release_only_the_process_that_exited() {
        let mut t: ScopedProcs<u32> = ScopedProcs::new(8, 100);
        let t0 = Instant::now();
        // Pid 5 (start 10) exited and the pid went to a process started at 11 before the exit
        // was handled: pid 5's links and admission go.
        assert!(t.admit(5, 10, false, t0));
        t.insert(5, 10, 0, (0, 1), vec![1, 2]);
        assert!(t.tracks(5) && !t.tracks(6));
        assert_eq!(t.exited(5, Some(11)), vec![1, 2]);
        assert!(!t.tracks(5));
        // Pid 6 now belongs to the process started at 20, probed and admitted; an exit of its
        // pid's earlier holder arrives late: the live process keeps everything.
        assert!(t.admit(6, 20, false, t0));
        t.insert(6, 20, 0, (0, 1), vec![3]);
        assert_eq!(t.exited(6, Some(20)), Vec::<u32>::new());
        assert!(t.is_admitted(6, 20) && t.has(6, 20, (0, 1)));
        // Its own exit (gone, or a zombie): released.
        assert_eq!(t.exited(6, None), vec![3]);
        assert!(!t.tracks(6) && t.link_count() == 0);
        // Zombies and dead processes have no live start time.
        let stat = |state: &str, flags: u64| {
            format!("42 (p) y) {state} 1 42 42 0 -1 {flags} 100 0 0 0 1 2 0 0 20 0 1 0 987654 1 2")
        };
        assert_eq!(
            parse_stat_live(stat("S", 0x400100).as_bytes()),
            Some(987_654)
        );
        assert_eq!(
            parse_stat_live(stat("R", 0x400100).as_bytes()),
            Some(987_654)
        );
        // Exiting (the exit event is sent from do_exit, before the task is a zombie).
        assert_eq!(parse_stat_live(stat("R", 0x400104).as_bytes()), None);
        assert_eq!(parse_stat_live(stat("Z", 0x400100).as_bytes()), None);
        assert_eq!(parse_stat_live(stat("X", 0).as_bytes()), None);
        assert_eq!(parse_stat_live(b"42 (x"), None);
        assert!(live_start(std::process::id()).is_some());
    }

    #[test]
    fn log_lines_are_limited_per_kind_and_count_the_rest() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut l = LogLimiter::new(LOG_EVERY, 1);
        assert_eq!(l.allow("admitted", at(0)), Some(0));
        assert_eq!(l.allow("admitted", at(1)), None);
        assert_eq!(l.allow("scope_links", at(1)), Some(0));
        for s in 2..10 {
            assert_eq!(l.allow("admitted", at(s)), None);
        }
        assert_eq!(l.allow("admitted", at(10)), Some(9));
        assert_eq!(l.allow("admitted", at(11)), None);
        assert_eq!(l.allow("admitted", at(25)), Some(1));
        // A burst of LOG_BURST lines, then one per window's worth: 1000 admissions in 10 s
        // log 10 lines, the next window's first says 990 were not logged.
        let mut l = LogLimiter::new(LOG_EVERY, LOG_BURST);
        let logged = (0..1000)
            .filter(|i| {
                l.allow("admitted", t0 + Duration::from_millis(i * 9))
                    .is_some()
            })
            .count();
        assert_eq!(logged, LOG_BURST as usize);
        assert_eq!(l.allow("admitted", at(10)), Some(990));
        assert_eq!(suppressed_note(0), "");
        assert!(suppressed_note(9).contains("9 more"));
    }

    #[test]
    fn admissions_follow_start_times_and_idle_ones_give_way() {
        let mut t: ScopedProcs<u32> = ScopedProcs::new(4, 100);
        t.max_admitted = 2;
        let t0 = Instant::now();
        assert!(t.admit(5, 1, false, t0));
        assert!(!t.admit(5, 1, false, t0));
        assert!(t.is_admitted(5, 1) && !t.is_admitted(5, 2));
        // A reused pid is a new admission.
        assert!(t.admit(5, 2, false, t0));
        assert!(t.is_admitted(5, 2) && !t.is_admitted(5, 1));
        t.insert(5, 2, 0, (0, 1), vec![1]);
        // Full: the admission without uprobes (6) goes first; one with uprobes stays.
        assert!(t.admit(6, 1, false, t0));
        assert!(t.admit(7, 1, false, t0 + Duration::from_secs(1)));
        assert!(!t.is_admitted(6, 1) && t.is_admitted(5, 2) && t.is_admitted(7, 1));
        t.insert(7, 1, 0, (0, 1), vec![2]);
        assert!(
            !t.admit(8, 1, false, t0),
            "both admitted carry uprobes: refused"
        );
        // Idle for ADMISSION_IDLE: the one idle longest may give its place up.
        assert_eq!(t.idle_admitted(t0 + Duration::from_secs(30)), None);
        let later = t0 + ADMISSION_IDLE + Duration::from_secs(1);
        assert_eq!(t.idle_admitted(later), Some(5));
        // A hello does not keep its place; a call marks it active again.
        assert!(!t.admit(5, 2, false, later));
        assert_eq!(t.idle_admitted(later), Some(5));
        assert!(!t.admit(5, 2, true, later));
        assert_eq!(t.idle_admitted(later), Some(7));
        t.forget(7);
        assert!(!t.is_admitted(7, 1));
        t.retain_admitted(|p| p != 5);
        assert!(!t.is_admitted(5, 2));
    }
}
