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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::sni::LlmHosts;

/// Most processes carrying their own uprobes at once. Small on purpose: each process holds 9
/// perf-event uprobe links per TLS library, and the kernel closes uprobe links one at a time,
/// each after grace periods (measured here: minutes for thousands of links, during which the
/// agent's exit and every other uprobe attach wait), so the cap bounds teardown too.
pub const MAX_SCOPED_PROCESSES: usize = 64;
/// Most per-process uprobe links at once (each is a perf event fd in the agent).
pub const MAX_SCOPED_LINKS: usize = 1024;
/// Most processes remembered as admitted by `--scope auto`.
pub const MAX_ADMITTED: usize = 4096;
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
/// [`ScopedProcs::user_share`] of the processes with uprobes. Under `--scope auto`, when the
/// table is full, an admitted process idle for [`ADMISSION_IDLE`] (no LLM call seen) gives its
/// place to a newcomer. Processes are keyed by pid and start time, so a reused pid is a new
/// process.
#[derive(Debug)]
pub struct ScopedProcs<L> {
    procs: HashMap<u32, Scoped<L>>,
    links: usize,
    max_procs: usize,
    max_links: usize,
    admitted: HashMap<u32, Admission>,
    max_admitted: usize,
}

#[derive(Debug)]
struct Scoped<L> {
    start: u64,
    uid: u32,
    files: HashMap<(u64, u64), Vec<L>>,
}

/// Why and when a process was admitted (`--scope auto`).
#[derive(Debug, Clone, Copy)]
struct Admission {
    start: u64,
    /// Admission, or the latest LLM call seen.
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
}

impl<L> ScopedProcs<L> {
    /// An empty table with these caps (admissions: [`MAX_ADMITTED`]).
    pub fn new(max_procs: usize, max_links: usize) -> ScopedProcs<L> {
        ScopedProcs {
            procs: HashMap::new(),
            links: 0,
            max_procs,
            max_links,
            admitted: HashMap::new(),
            max_admitted: MAX_ADMITTED,
        }
    }

    /// Places one user id may hold: half of them.
    pub fn user_share(&self) -> usize {
        (self.max_procs / 2).max(1)
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

    /// The processes carrying uprobes.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Whether `pid` (started at `start`) already has links on file `id`.
    pub fn has(&self, pid: u32, start: u64, id: (u64, u64)) -> bool {
        self.procs
            .get(&pid)
            .is_some_and(|p| p.start == start && p.files.contains_key(&id))
    }

    /// Makes room for `pid` of user `uid`: an entry of an earlier process with the same pid is
    /// returned for release; refused past the process cap or the user's share, or when `want`
    /// more links would pass the link cap.
    pub fn reserve(
        &mut self,
        pid: u32,
        start: u64,
        uid: u32,
        want: usize,
    ) -> Result<Vec<L>, ScopeRefusal> {
        let stale = match self.procs.get(&pid) {
            Some(p) if p.start != start => self.release(pid),
            _ => Vec::new(),
        };
        if !self.procs.contains_key(&pid) {
            if self.procs.len() >= self.max_procs {
                return Err(ScopeRefusal::Processes);
            }
            if self.procs.values().filter(|p| p.uid == uid).count() >= self.user_share() {
                return Err(ScopeRefusal::UserShare);
            }
        }
        if self.links + want > self.max_links {
            return Err(ScopeRefusal::Links);
        }
        Ok(stale)
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
    /// active again when `call` (it made an LLM call; a hello alone does not keep a place). When
    /// the admissions are full, one whose process carries no uprobes is forgotten to make room
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

    /// An admitted process carrying uprobes, idle (no LLM call) for [`ADMISSION_IDLE`] at
    /// `now`: the one idle longest, whose place may go to a newcomer.
    pub fn idle_admitted(&self, now: Instant) -> Option<u32> {
        self.admitted
            .iter()
            .filter(|(p, a)| {
                self.procs.contains_key(p)
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn scoped_processes_are_bounded_and_released() {
        let mut t: ScopedProcs<u32> = ScopedProcs::new(4, 9);
        assert_eq!(t.reserve(1, 10, 0, 2), Ok(vec![]));
        t.insert(1, 10, 0, (0, 1), vec![1, 2]);
        assert!(t.has(1, 10, (0, 1)) && !t.has(1, 11, (0, 1)));
        assert_eq!(t.reserve(2, 10, 0, 2), Ok(vec![]));
        t.insert(2, 10, 0, (0, 1), vec![3, 4]);
        // User 0 holds its share (half of 4): another of its processes waits, user 1's does not.
        assert_eq!(t.reserve(3, 10, 0, 1), Err(ScopeRefusal::UserShare));
        assert_eq!(t.reserve(3, 10, 1, 1), Ok(vec![]));
        t.insert(3, 10, 1, (0, 1), vec![5]);
        assert_eq!(t.reserve(4, 10, 2, 1), Ok(vec![]));
        t.insert(4, 10, 2, (0, 1), vec![6]);
        assert_eq!(t.reserve(5, 10, 3, 1), Err(ScopeRefusal::Processes));
        assert_eq!(t.reserve(2, 10, 0, 4), Err(ScopeRefusal::Links));
        assert_eq!(t.link_count(), 6);
        // Pid 1 reused by a new process: the old links come back for release.
        assert_eq!(t.reserve(1, 11, 0, 1), Ok(vec![1, 2]));
        t.insert(1, 11, 0, (0, 2), vec![7]);
        assert_eq!(t.link_count(), 5);
        let mut gone = t.release_file((0, 1));
        gone.sort();
        assert_eq!(gone, vec![3, 4, 5, 6]);
        assert_eq!((t.len(), t.link_count()), (1, 1));
        assert_eq!(t.release(1), vec![7]);
        assert!(t.is_empty() && t.link_count() == 0);
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
