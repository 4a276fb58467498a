//! Finds the files that carry a TLS library's plaintext functions ([`TLS_SYMBOLS`]: OpenSSL's
//! `SSL_read`/`SSL_write`, GnuTLS's `gnutls_record_recv`/`gnutls_record_send`), in shared
//! libraries (`libssl`, `libgnutls`) or in executables that link a TLS library statically and
//! keep its symbols (`node`, a static OpenSSL build), and where those functions start in the
//! file. A file is a [`TlsLibrary`] of one stack or more ([`TlsStack`]), each with its attach
//! points. A uprobe is placed per file (inode), so each distinct file is attached once and then
//! covers every process that maps it, now and later. A stripped static build has no symbols
//! left to find: it is not probed (`llmprobe doctor` says so).
//!
//! Stage: before the ring buffer (it decides where the uprobes go). Everything it reads comes
//! from other processes and is hostile: `/proc/PID/maps` lines name files chosen by any user,
//! and those files can be truncated, replaced, renamed or swapped for FIFOs and symlinks at any
//! moment. Invariants:
//! - **No file is memory-mapped.** ELF files are read with bounded `pread`s: the ELF header, the
//!   section header table, the dynamic symbol table and its string table, and `.symtab`/`.strtab`
//!   only when the dynamic table lacks a symbol. Each piece has a size cap ([`ElfLimits`]), the
//!   reads of one file have a total cap, and the symbols walked have a cap. A file that ends
//!   before what its headers promise (truncated, or shrinking while read) is refused as
//!   [`Refusal::ShortRead`]; nothing can raise SIGBUS in the agent.
//! - **The file opened is the file mapped.** A mapping is opened through
//!   `/proc/PID/map_files/<start>-<end>` (the kernel hands over the mapped file itself: no path is
//!   resolved, so renames, FIFOs, bind mounts and symlinks planted at the path change nothing).
//!   Without CAP_SYS_ADMIN that open fails; the fallback resolves the path inside the process's
//!   root with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` and checks the device and
//!   inode of the opened file against the maps line. No open ever follows a container's symlink
//!   into the host's tree, and on a kernel without `openat2` the fallback refuses
//!   ([`Refusal::Openat2Unsupported`]) instead of opening unsafely.
//! - **Only regular files are read.** Every open is `O_NONBLOCK | O_NOCTTY | O_CLOEXEC` (a FIFO
//!   cannot block the open itself) and is refused unless `fstat` says `S_ISREG`.
//! - Problems are values ([`Refusal`], with a stable metric reason); the loader counts them.
//!
//! [`inspect_elf_bytes`] is the pure ELF layer over a byte slice, for tests and fuzzing.
//! [`elf_facts_file`] / [`elf_facts_bytes`] read the same tables under the same limits, plus the
//! section names (Go, `.interp`, `.symtab`), for `llmprobe doctor`'s classification of processes.

use crate::telemetry::DropReason;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A TLS library whose plaintext functions llmprobe probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsStack {
    /// OpenSSL (and BoringSSL, which keeps its API): `SSL_read`/`SSL_write` and their `_ex` forms.
    OpenSsl,
    /// GnuTLS: `gnutls_record_recv`/`gnutls_record_send`.
    GnuTls,
}

impl TlsStack {
    /// Every stack, in the order logs name them.
    pub const ALL: [TlsStack; 2] = [TlsStack::OpenSsl, TlsStack::GnuTls];

    /// Its name, for logs and `doctor`.
    pub fn name(self) -> &'static str {
        match self {
            TlsStack::OpenSsl => "OpenSSL",
            TlsStack::GnuTls => "GnuTLS",
        }
    }
}

/// What a probed function does; it decides the kernel program placed on it.
///
/// `Read`/`Write` have `SSL_read`'s layout: (connection pointer, buffer, length), returning the
/// bytes moved or a value <= 0. GnuTLS's `gnutls_record_recv`/`gnutls_record_send` have it too:
/// their `ssize_t` return is read as 32 bits (sign-extended), which is exact because one call
/// moves at most one record (16 KiB) and GnuTLS's errors are small negative numbers. `ReadEx`/
/// `WriteEx` return 1 and store the count through their fourth argument. `Free` ends the
/// connection object (`SSL_free`, `gnutls_deinit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsCall {
    /// `SSL_read`, `gnutls_record_recv`.
    Read,
    /// `SSL_read_ex`.
    ReadEx,
    /// `SSL_write`, `gnutls_record_send`.
    Write,
    /// `SSL_write_ex`.
    WriteEx,
    /// `SSL_free`, `gnutls_deinit`.
    Free,
}

impl TlsCall {
    /// True for the calls that move plaintext (they also get the return probe).
    pub fn moves_bytes(self) -> bool {
        !matches!(self, TlsCall::Free)
    }
}

/// One function llmprobe probes: its symbol, its library, what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsSymbol {
    /// The symbol name, as defined in the ELF symbol tables.
    pub name: &'static str,
    /// The library it belongs to.
    pub stack: TlsStack,
    /// What it does.
    pub call: TlsCall,
}

const fn sym(name: &'static str, stack: TlsStack, call: TlsCall) -> TlsSymbol {
    TlsSymbol { name, stack, call }
}

/// Number of functions probed (length of [`TLS_SYMBOLS`]).
pub const TLS_SYMBOL_COUNT: usize = 8;

/// The functions llmprobe probes, every stack's.
pub const TLS_SYMBOLS: [TlsSymbol; TLS_SYMBOL_COUNT] = [
    sym("SSL_read", TlsStack::OpenSsl, TlsCall::Read),
    sym("SSL_read_ex", TlsStack::OpenSsl, TlsCall::ReadEx),
    sym("SSL_write", TlsStack::OpenSsl, TlsCall::Write),
    sym("SSL_write_ex", TlsStack::OpenSsl, TlsCall::WriteEx),
    sym("SSL_free", TlsStack::OpenSsl, TlsCall::Free),
    sym("gnutls_record_recv", TlsStack::GnuTls, TlsCall::Read),
    sym("gnutls_record_send", TlsStack::GnuTls, TlsCall::Write),
    sym("gnutls_deinit", TlsStack::GnuTls, TlsCall::Free),
];

/// The longest name in [`TLS_SYMBOLS`], in bytes.
const MAX_SYMBOL_NAME: usize = {
    let mut i = 0;
    let mut max = 0;
    while i < TLS_SYMBOL_COUNT {
        if TLS_SYMBOLS[i].name.len() > max {
            max = TLS_SYMBOLS[i].name.len();
        }
        i += 1;
    }
    max
};

/// File offset of each symbol in [`TLS_SYMBOLS`], when the file defines it.
pub type TlsOffsets = [Option<u64>; TLS_SYMBOL_COUNT];

/// A file that defines the I/O functions of one TLS stack or more, with their file offsets
/// (index = [`TLS_SYMBOLS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsLibrary {
    /// Path the file was found under, for logs only (attacker-chosen: log it with `{:?}`).
    pub path: PathBuf,
    /// Device and inode: the identity uprobes are placed on.
    pub file_id: (u64, u64),
    /// File offset of each symbol in [`TLS_SYMBOLS`], when defined.
    pub offsets: TlsOffsets,
}

impl TlsLibrary {
    /// True when at least one stack has a read and a write function here.
    pub fn is_usable(&self) -> bool {
        usable(&self.offsets)
    }

    /// The stacks usable in this file.
    pub fn stacks(&self) -> Vec<TlsStack> {
        usable_stacks(&self.offsets)
    }

    /// Where the uprobes go: (symbol, file offset) for every function of a usable stack, writes
    /// first (under `--scope auto` a process is probed while its handshake is in flight, and its
    /// request is written before its answer is read), then reads, then the frees.
    pub fn attach_points(&self) -> Vec<(TlsSymbol, u64)> {
        let stacks = self.stacks();
        let mut out = Vec::new();
        for call in [
            TlsCall::WriteEx,
            TlsCall::Write,
            TlsCall::ReadEx,
            TlsCall::Read,
            TlsCall::Free,
        ] {
            for (s, off) in TLS_SYMBOLS.iter().zip(self.offsets) {
                if let Some(off) = off
                    && s.call == call
                    && stacks.contains(&s.stack)
                {
                    out.push((*s, off));
                }
            }
        }
        out
    }

    /// The stacks' names for logs: `OpenSSL`, `GnuTLS`, `OpenSSL and GnuTLS`.
    pub fn label(&self) -> &'static str {
        stacks_label(&self.stacks())
    }
}

/// Names of a set of stacks for logs.
pub fn stacks_label(stacks: &[TlsStack]) -> &'static str {
    match stacks {
        [TlsStack::OpenSsl] => "OpenSSL",
        [TlsStack::GnuTls] => "GnuTLS",
        [] => "no TLS",
        _ => "OpenSSL and GnuTLS",
    }
}

/// True when `stack` has at least one read and one write function in `offsets`.
pub fn stack_usable(offsets: &TlsOffsets, stack: TlsStack) -> bool {
    let has = |calls: [TlsCall; 2]| {
        TLS_SYMBOLS
            .iter()
            .zip(offsets)
            .any(|(s, o)| s.stack == stack && calls.contains(&s.call) && o.is_some())
    };
    has([TlsCall::Read, TlsCall::ReadEx]) && has([TlsCall::Write, TlsCall::WriteEx])
}

/// The stacks with a read and a write function in `offsets`.
pub fn usable_stacks(offsets: &TlsOffsets) -> Vec<TlsStack> {
    TlsStack::ALL
        .into_iter()
        .filter(|s| stack_usable(offsets, *s))
        .collect()
}

/// True when the offsets hold at least one stack's read and write functions.
pub fn usable(offsets: &TlsOffsets) -> bool {
    TlsStack::ALL.iter().any(|s| stack_usable(offsets, *s))
}

/// Why a candidate file was not probed. Each has a stable metric reason
/// (`llmprobe_dropped_total{reason="discovery_..."}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not a regular file (FIFO, device, socket, directory).
    NotRegular,
    /// A table or the whole file's reads exceed their caps.
    TooLarge,
    /// The file ended before what its headers promise (truncated, or shrinking while read).
    ShortRead,
    /// Not an ELF file, or an ELF file whose headers make no sense.
    NotElf,
    /// More symbols than the walk cap.
    TooManySymbols,
    /// The path left the process's root, or went through a magic link (fallback open only).
    OutsideRoot,
    /// The opened file is not the mapped one (fallback open only: the path was replaced).
    IdentityMismatch,
    /// The kernel has no `openat2` and `map_files` is not available: refused, never opened unsafely.
    Openat2Unsupported,
    /// The file or process went away, or the open failed for another reason.
    OpenFailed,
    /// The read itself failed (I/O error).
    ReadFailed,
}

impl Refusal {
    /// The `reason` label this refusal is counted under.
    pub fn reason(self) -> DropReason {
        match self {
            Refusal::NotRegular => DropReason::DiscoveryNotRegular,
            Refusal::TooLarge => DropReason::DiscoveryTooLarge,
            Refusal::ShortRead => DropReason::DiscoveryShortRead,
            Refusal::NotElf => DropReason::DiscoveryNotElf,
            Refusal::TooManySymbols => DropReason::DiscoveryTooManySymbols,
            Refusal::OutsideRoot => DropReason::DiscoveryOutsideRoot,
            Refusal::IdentityMismatch => DropReason::DiscoveryIdentityMismatch,
            Refusal::Openat2Unsupported => DropReason::DiscoveryOpenat2Unsupported,
            Refusal::OpenFailed => DropReason::DiscoveryOpenFailed,
            Refusal::ReadFailed => DropReason::DiscoveryReadFailed,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ELF reading: bounded reads through `ElfSource`.

/// Caps on what is read from one ELF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfLimits {
    /// Most section headers read.
    pub max_sections: u64,
    /// Largest symbol table or string table read.
    pub max_table_bytes: u64,
    /// Total bytes read from one file.
    pub max_total_bytes: u64,
    /// Most symbols walked over all tables.
    pub max_symbols: u64,
}

impl Default for ElfLimits {
    fn default() -> Self {
        // node's .dynstr is 5.3 MB and its .strtab 7.5 MB; libssl's tables are under 100 kB.
        ElfLimits {
            max_sections: 4096,
            max_table_bytes: 32 << 20,
            max_total_bytes: 64 << 20,
            max_symbols: 4_000_000,
        }
    }
}

/// Something ELF bytes can be read from, at an offset.
pub(crate) trait ElfSource {
    /// Exactly `len` bytes at `off`, or `ShortRead` if the source ends first.
    fn read_exact_at(&self, off: u64, len: usize) -> Result<Vec<u8>, Refusal>;
    /// Its size now, in bytes.
    fn size(&self) -> Result<u64, Refusal>;
}

impl ElfSource for &[u8] {
    fn size(&self) -> Result<u64, Refusal> {
        Ok(self.len() as u64)
    }

    fn read_exact_at(&self, off: u64, len: usize) -> Result<Vec<u8>, Refusal> {
        let start = usize::try_from(off).map_err(|_| Refusal::ShortRead)?;
        let end = start.checked_add(len).ok_or(Refusal::ShortRead)?;
        self.get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or(Refusal::ShortRead)
    }
}

impl ElfSource for File {
    fn size(&self) -> Result<u64, Refusal> {
        self.metadata()
            .map(|m| m.len())
            .map_err(|_| Refusal::ReadFailed)
    }

    fn read_exact_at(&self, off: u64, len: usize) -> Result<Vec<u8>, Refusal> {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let at = off.checked_add(done as u64).ok_or(Refusal::ShortRead)?;
            match self.read_at(&mut buf[done..], at) {
                Ok(0) => return Err(Refusal::ShortRead),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Refusal::ReadFailed),
            }
        }
        Ok(buf)
    }
}

/// A source with the per-file read budget applied.
pub(crate) struct Budgeted<'a, S> {
    src: &'a S,
    limits: ElfLimits,
    read: std::cell::Cell<u64>,
}

impl<S: ElfSource> Budgeted<'_, S> {
    pub(crate) fn read(&self, off: u64, len: u64) -> Result<Vec<u8>, Refusal> {
        let total = self.read.get().saturating_add(len);
        if total > self.limits.max_total_bytes {
            return Err(Refusal::TooLarge);
        }
        self.read.set(total);
        let len = usize::try_from(len).map_err(|_| Refusal::TooLarge)?;
        self.src.read_exact_at(off, len)
    }
}

/// ELF class and byte order, for reading fields.
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) is64: bool,
    pub(crate) le: bool,
}

impl Layout {
    pub(crate) fn u16(self, b: &[u8], at: usize) -> Result<u64, Refusal> {
        let s: [u8; 2] = b
            .get(at..at + 2)
            .and_then(|s| s.try_into().ok())
            .ok_or(Refusal::NotElf)?;
        Ok(u64::from(if self.le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        }))
    }
    pub(crate) fn u32(self, b: &[u8], at: usize) -> Result<u64, Refusal> {
        let s: [u8; 4] = b
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or(Refusal::NotElf)?;
        Ok(u64::from(if self.le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        }))
    }
    pub(crate) fn u64(self, b: &[u8], at: usize) -> Result<u64, Refusal> {
        let s: [u8; 8] = b
            .get(at..at + 8)
            .and_then(|s| s.try_into().ok())
            .ok_or(Refusal::NotElf)?;
        Ok(if self.le {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    }
}

pub(crate) const SHT_SYMTAB: u64 = 2;
pub(crate) const SHT_NOBITS: u64 = 8;
const SHT_DYNSYM: u64 = 11;
const SHN_LORESERVE: u64 = 0xff00;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;

/// One section header, the fields used here.
#[derive(Clone, Copy)]
pub(crate) struct Section {
    /// Offset of its name in the section-name string table.
    pub(crate) name: u64,
    pub(crate) kind: u64,
    pub(crate) addr: u64,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    link: u64,
    entsize: u64,
}

/// An ELF file's header and section table, read within the limits.
pub(crate) struct ElfView<'a, S> {
    pub(crate) src: Budgeted<'a, S>,
    pub(crate) lay: Layout,
    pub(crate) sections: Vec<Section>,
    /// Index of the section-name string table (`e_shstrndx`).
    pub(crate) shstrndx: u64,
    pub(crate) file_size: u64,
}

/// Reads and checks the ELF header and the section header table.
pub(crate) fn open_elf<S: ElfSource>(
    src: &S,
    limits: ElfLimits,
) -> Result<ElfView<'_, S>, Refusal> {
    let file_size = src.size()?;
    let src = Budgeted {
        src,
        limits,
        read: std::cell::Cell::new(0),
    };
    let ident = src.read(0, 16).map_err(|e| match e {
        Refusal::ShortRead => Refusal::NotElf,
        e => e,
    })?;
    if ident[..4] != *b"\x7fELF" {
        return Err(Refusal::NotElf);
    }
    let lay = Layout {
        is64: match ident[4] {
            1 => false,
            2 => true,
            _ => return Err(Refusal::NotElf),
        },
        le: match ident[5] {
            1 => true,
            2 => false,
            _ => return Err(Refusal::NotElf),
        },
    };
    let ehdr = src.read(0, if lay.is64 { 64 } else { 52 })?;
    let (shoff, shentsize, shnum, shstrndx) = if lay.is64 {
        (
            lay.u64(&ehdr, 0x28)?,
            lay.u16(&ehdr, 0x3a)?,
            lay.u16(&ehdr, 0x3c)?,
            lay.u16(&ehdr, 0x3e)?,
        )
    } else {
        (
            lay.u32(&ehdr, 0x20)?,
            lay.u16(&ehdr, 0x2e)?,
            lay.u16(&ehdr, 0x30)?,
            lay.u16(&ehdr, 0x32)?,
        )
    };
    let want_ent = if lay.is64 { 64 } else { 40 };
    if shoff == 0 || shnum == 0 || shentsize != want_ent {
        // No section headers (or extended numbering): nothing to look symbols up in.
        return Err(Refusal::NotElf);
    }
    if shnum > limits.max_sections {
        return Err(Refusal::TooLarge);
    }
    let table = src.read(shoff, shnum * shentsize)?;
    let mut sections = Vec::with_capacity(shnum as usize);
    for i in 0..shnum as usize {
        let at = i * shentsize as usize;
        let s = if lay.is64 {
            Section {
                name: lay.u32(&table, at)?,
                kind: lay.u32(&table, at + 4)?,
                addr: lay.u64(&table, at + 16)?,
                offset: lay.u64(&table, at + 24)?,
                size: lay.u64(&table, at + 32)?,
                link: lay.u32(&table, at + 40)?,
                entsize: lay.u64(&table, at + 56)?,
            }
        } else {
            Section {
                name: lay.u32(&table, at)?,
                kind: lay.u32(&table, at + 4)?,
                addr: lay.u32(&table, at + 12)?,
                offset: lay.u32(&table, at + 16)?,
                size: lay.u32(&table, at + 20)?,
                link: lay.u32(&table, at + 24)?,
                entsize: lay.u32(&table, at + 36)?,
            }
        };
        sections.push(s);
    }
    Ok(ElfView {
        src,
        lay,
        sections,
        shstrndx,
        file_size,
    })
}

/// Finds the OpenSSL functions an ELF file defines (not merely imports), reading only the
/// pieces it needs, each within `limits`.
fn inspect_source<S: ElfSource>(src: &S, limits: ElfLimits) -> Result<TlsOffsets, Refusal> {
    let view = open_elf(src, limits)?;
    tls_offsets(&view, limits, &mut |_| {})
}

/// The TLS functions ([`TLS_SYMBOLS`]) defined in the symbol tables of `view`; `saw_strings` is
/// handed each symbol string table read.
fn tls_offsets<S: ElfSource>(
    view: &ElfView<'_, S>,
    limits: ElfLimits,
    saw_strings: &mut dyn FnMut(&[u8]),
) -> Result<TlsOffsets, Refusal> {
    let (src, lay, sections, file_size) = (&view.src, view.lay, &view.sections, view.file_size);
    let mut offsets: TlsOffsets = [None; TLS_SYMBOL_COUNT];
    let mut walked = 0u64;
    // The dynamic table first (what the dynamic linker uses), then the full table if present.
    for kind in [SHT_DYNSYM, SHT_SYMTAB] {
        if offsets.iter().all(Option::is_some) {
            break;
        }
        let Some(symtab) = sections.iter().find(|s| s.kind == kind) else {
            continue;
        };
        let sym_size = if lay.is64 { 24 } else { 16 };
        if symtab.entsize != sym_size {
            return Err(Refusal::NotElf);
        }
        let strtab = sections
            .get(usize::try_from(symtab.link).map_err(|_| Refusal::NotElf)?)
            .ok_or(Refusal::NotElf)?;
        if symtab.size > limits.max_table_bytes || strtab.size > limits.max_table_bytes {
            return Err(Refusal::TooLarge);
        }
        let count = symtab.size / sym_size;
        walked = walked.saturating_add(count);
        if walked > limits.max_symbols {
            return Err(Refusal::TooManySymbols);
        }
        let syms = src.read(symtab.offset, count * sym_size)?;
        let strs = src.read(strtab.offset, strtab.size)?;
        saw_strings(&strs);
        for i in 0..count as usize {
            let at = i * sym_size as usize;
            let (name, info, shndx, value) = if lay.is64 {
                (
                    lay.u32(&syms, at)?,
                    syms[at + 4],
                    lay.u16(&syms, at + 6)?,
                    lay.u64(&syms, at + 8)?,
                )
            } else {
                (
                    lay.u32(&syms, at)?,
                    syms[at + 12],
                    lay.u16(&syms, at + 14)?,
                    lay.u32(&syms, at + 4)?,
                )
            };
            let ty = info & 0xf;
            if shndx == 0 || shndx >= SHN_LORESERVE || (ty != STT_FUNC && ty != STT_GNU_IFUNC) {
                continue;
            }
            let Some(idx) = symbol_index(&strs, name) else {
                continue;
            };
            if offsets[idx].is_some() {
                continue;
            }
            let Some(sec) = sections.get(shndx as usize) else {
                continue;
            };
            if sec.kind == SHT_NOBITS {
                continue;
            }
            // The function must lie inside its section and the file: a crafted symbol table
            // could otherwise send a uprobe to any offset.
            if let Some(off) = value
                .checked_sub(sec.addr)
                .filter(|d| *d < sec.size)
                .and_then(|d| d.checked_add(sec.offset))
                .filter(|off| *off < file_size)
            {
                offsets[idx] = Some(off);
            }
        }
    }
    Ok(offsets)
}

/// Which of [`TLS_SYMBOLS`] the NUL-terminated name at `at` in `strs` is, if any.
fn symbol_index(strs: &[u8], at: u64) -> Option<usize> {
    let rest = strs.get(usize::try_from(at).ok()?..)?;
    // Compare at most the longest wanted name and its NUL.
    let window = &rest[..rest.len().min(MAX_SYMBOL_NAME + 1)];
    let end = window.iter().position(|b| *b == 0)?;
    let name = &window[..end];
    TLS_SYMBOLS.iter().position(|s| s.name.as_bytes() == name)
}

/// The pure ELF layer: the TLS functions ([`TLS_SYMBOLS`]) defined by the ELF image in `bytes`, with their file
/// offsets, under the default [`ElfLimits`]. Never panics, whatever the bytes; a slice shorter
/// than what the headers promise is [`Refusal::ShortRead`]. Drive it from a fuzzer.
pub fn inspect_elf_bytes(bytes: &[u8]) -> Result<TlsOffsets, Refusal> {
    inspect_source(&bytes, ElfLimits::default())
}

/// [`inspect_elf_bytes`] with explicit limits.
pub fn inspect_elf_bytes_with(bytes: &[u8], limits: ElfLimits) -> Result<TlsOffsets, Refusal> {
    inspect_source(&bytes, limits)
}

/// The same over an open file, with bounded `pread`s only (no mapping): a file truncated or
/// shrinking while read is [`Refusal::ShortRead`].
pub fn inspect_elf_file(file: &File, limits: ElfLimits) -> Result<TlsOffsets, Refusal> {
    inspect_source(file, limits)
}

/// What an ELF file says about how a process using it does TLS (for `llmprobe doctor`): its
/// TLS functions, and the marks of the toolchains and libraries llmprobe cannot probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ElfFacts {
    /// The TLS I/O functions, as [`inspect_elf_bytes`] finds them.
    pub tls: TlsOffsets,
    /// Built by Go: a `.go.buildinfo` section or the Go build ID note (`.note.go.buildid`).
    pub go: bool,
    /// Has an `.interp` section: an executable the dynamic linker starts.
    pub interp: bool,
    /// Has a full symbol table (`.symtab`): not stripped.
    pub symtab: bool,
    /// A symbol name mentions `rustls` (Rust's TLS library, linked in statically).
    pub rustls: bool,
}

/// [`ElfFacts`] of the ELF image in `bytes`, under `limits`. Never panics, whatever the bytes.
pub fn elf_facts_bytes(bytes: &[u8], limits: ElfLimits) -> Result<ElfFacts, Refusal> {
    facts_source(&bytes, limits)
}

/// [`ElfFacts`] of an open file, with the same bounded `pread`s as [`inspect_elf_file`].
pub fn elf_facts_file(file: &File, limits: ElfLimits) -> Result<ElfFacts, Refusal> {
    facts_source(file, limits)
}

fn facts_source<S: ElfSource>(src: &S, limits: ElfLimits) -> Result<ElfFacts, Refusal> {
    let view = open_elf(src, limits)?;
    let names = match usize::try_from(view.shstrndx)
        .ok()
        .and_then(|i| view.sections.get(i))
    {
        Some(s) if s.kind != SHT_NOBITS => {
            if s.size > limits.max_table_bytes {
                return Err(Refusal::TooLarge);
            }
            view.src.read(s.offset, s.size)?
        }
        _ => Vec::new(),
    };
    let mut facts = ElfFacts::default();
    for s in &view.sections {
        let name = usize::try_from(s.name)
            .ok()
            .and_then(|at| names.get(at..))
            .and_then(|rest| rest.split(|b| *b == 0).next())
            .unwrap_or_default();
        match name {
            b".go.buildinfo" | b".note.go.buildid" => facts.go = true,
            b".interp" => facts.interp = true,
            _ => {}
        }
        facts.symtab |= s.kind == SHT_SYMTAB;
    }
    let mut rustls = false;
    facts.tls = tls_offsets(&view, limits, &mut |strs| {
        rustls = rustls || strs.windows(6).any(|w| w == b"rustls");
    })?;
    facts.rustls = rustls;
    Ok(facts)
}

// ---------------------------------------------------------------------------------------------
// /proc/PID/maps.

/// One executable file mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// Start and end address (the name of its `/proc/PID/map_files/` entry).
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Device (as `st_dev` encodes it) and inode of the mapped file, as the kernel reports them.
    pub file_id: (u64, u64),
    /// Path as seen from the process (decoded; `\012` → newline), for logs and the fallback open.
    pub path: PathBuf,
    /// The kernel marked the name ` (deleted)`; the suffix is removed from `path`.
    pub deleted: bool,
}

/// Linux's `makedev` (glibc encoding), to compare a maps `major:minor` with `st_dev`.
pub fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// Decodes a maps name: the kernel escapes `\n` as `\012` (and nothing else: a backslash is not
/// escaped, so a literal `\012` in a name reads the same; the open does not depend on the name).
fn decode_maps_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(b"\\012") {
            out.push(b'\n');
            i += 4;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

/// Parses `/proc/PID/maps`: the executable mappings of files (one per file, first range kept).
/// Malformed lines are skipped.
pub fn parse_maps(text: &[u8]) -> Vec<MapEntry> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n') {
        let Some(e) = parse_maps_line(line) else {
            continue;
        };
        if seen.insert(e.file_id) {
            out.push(e);
        }
    }
    out
}

fn parse_maps_line(line: &[u8]) -> Option<MapEntry> {
    // address perms offset dev inode [padding] path
    let mut rest = line;
    let mut field = || -> Option<&[u8]> {
        let end = rest.iter().position(|b| *b == b' ')?;
        let f = &rest[..end];
        rest = &rest[end + 1..];
        Some(f)
    };
    let (addr, perms, _off, dev, inode) = (field()?, field()?, field()?, field()?, field()?);
    let hex = |b: &[u8]| u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok();
    let (start, end) = {
        let dash = addr.iter().position(|b| *b == b'-')?;
        (hex(&addr[..dash])?, hex(&addr[dash + 1..])?)
    };
    if perms.get(2) != Some(&b'x') {
        return None;
    }
    let (major, minor) = {
        let colon = dev.iter().position(|b| *b == b':')?;
        (hex(&dev[..colon])?, hex(&dev[colon + 1..])?)
    };
    let inode: u64 = std::str::from_utf8(inode).ok()?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    // The name starts at the first '/' after the padding; names of files always start with '/'.
    let name_start = rest.iter().position(|b| *b != b' ')?;
    let raw = &rest[name_start..];
    if raw.first() != Some(&b'/') {
        return None;
    }
    let (raw, deleted) = match raw.strip_suffix(b" (deleted)") {
        Some(r) => (r, true),
        None => (raw, false),
    };
    Some(MapEntry {
        start,
        end,
        file_id: (makedev(major, minor), inode),
        path: PathBuf::from(OsStr::from_bytes(&decode_maps_name(raw))),
        deleted,
    })
}

/// Most bytes of `/proc/PID/maps` read (65530 mappings of ~100 bytes fit).
const MAX_MAPS_BYTES: u64 = 16 << 20;

/// The executable file mappings of a process (empty when it is gone or unreadable).
pub fn executable_mappings(pid: u32) -> Vec<MapEntry> {
    read_maps(pid).unwrap_or_default()
}

/// The executable file mappings of a process, or why its maps could not be read (gone:
/// `NotFound`; not permitted: `PermissionDenied`).
pub fn read_maps(pid: u32) -> std::io::Result<Vec<MapEntry>> {
    use std::io::Read;
    let f = File::open(format!("/proc/{pid}/maps"))?;
    let mut text = Vec::new();
    f.take(MAX_MAPS_BYTES).read_to_end(&mut text)?;
    Ok(parse_maps(&text))
}

// ---------------------------------------------------------------------------------------------
// Opening the file that is really mapped.

/// An open regular file and its identity (from `fstat` of the open descriptor).
#[derive(Debug)]
pub struct OpenedFile {
    /// The descriptor; uprobes are attached through `/proc/self/fd/<fd>` so that the kernel
    /// places them on this very inode.
    pub file: File,
    /// Device and inode.
    pub file_id: (u64, u64),
}

impl OpenedFile {
    /// The path that resolves to this open file in the agent's own process (`/proc/self/fd/N`).
    pub fn self_fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

const OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// Checks that an open descriptor is a regular file and returns it with its identity.
fn regular(fd: OwnedFd) -> Result<OpenedFile, Refusal> {
    let file = File::from(fd);
    let md = file.metadata().map_err(|_| Refusal::OpenFailed)?;
    if !md.file_type().is_file() {
        return Err(Refusal::NotRegular);
    }
    Ok(OpenedFile {
        file_id: (md.dev(), md.ino()),
        file,
    })
}

fn cstring(p: &Path) -> Result<CString, Refusal> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Refusal::OpenFailed)
}

/// `open(2)` with [`OPEN_FLAGS`] (plus `extra`) of a path the agent itself trusts.
fn open_plain(path: &Path, extra: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: NUL-terminated path; the returned descriptor is checked and then owned.
    let fd = unsafe { libc::open(c.as_ptr(), OPEN_FLAGS | extra) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct open_how` of linux/openat2.h (libc's is non-exhaustive, so it cannot be built here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` (absolute or relative) inside the directory tree rooted at `root`: `..` and
/// absolute symlinks stay inside it (`RESOLVE_IN_ROOT`), magic links (`/proc/*/fd/*`, `/proc/*/root`)
/// are refused (`RESOLVE_NO_MAGICLINKS`). Refuses non-regular files. On a kernel without
/// `openat2` this is [`Refusal::Openat2Unsupported`]: there is no unsafe fallback.
pub fn open_in_root(root: &Path, path: &Path) -> Result<OpenedFile, Refusal> {
    let rootfd =
        open_plain(root, libc::O_DIRECTORY | libc::O_PATH).map_err(|_| Refusal::OpenFailed)?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let c = cstring(if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    })?;
    let how = OpenHow {
        flags: OPEN_FLAGS as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2(dirfd, NUL-terminated path, pointer to a live open_how, its size); the
    // result is checked and then owned.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            rootfd.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ENOSYS) => Refusal::Openat2Unsupported,
            Some(libc::EXDEV) | Some(libc::ELOOP) => Refusal::OutsideRoot,
            _ => Refusal::OpenFailed,
        });
    }
    let fd = i32::try_from(fd).map_err(|_| Refusal::OpenFailed)?;
    // SAFETY: a fresh descriptor that nothing else owns.
    regular(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How a mapping was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedVia {
    /// `/proc/PID/map_files/<start>-<end>`: the mapped file itself.
    MapFiles,
    /// The path resolved inside `/proc/PID/root`, identity checked against the maps line.
    PathInRoot,
}

/// Opens the file behind an executable mapping of `pid`: through `map_files` (the mapped file,
/// no path resolution), or when that is not permitted, through the path inside the process's
/// root with its device and inode checked against the maps line.
pub fn open_mapped(pid: u32, m: &MapEntry) -> Result<(OpenedFile, OpenedVia), Refusal> {
    let mf = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end));
    match open_plain(&mf, 0) {
        Ok(fd) => return regular(fd).map(|f| (f, OpenedVia::MapFiles)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {}
        // The mapping (or the process) is gone.
        Err(_) => return Err(Refusal::OpenFailed),
    }
    if m.deleted {
        // The name no longer leads to the mapped file.
        return Err(Refusal::OpenFailed);
    }
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let f = open_in_root(&root, &m.path)?;
    if f.file_id != m.file_id {
        return Err(Refusal::IdentityMismatch);
    }
    Ok((f, OpenedVia::PathInRoot))
}

/// Opens a host file named by the agent's own configuration (the linker cache): symlinks are
/// followed inside the host root, magic links refused, only regular files accepted.
pub fn open_host_file(path: &Path) -> Result<OpenedFile, Refusal> {
    open_in_root(Path::new("/"), path)
}

// ---------------------------------------------------------------------------------------------
// Rate limiting of per-process scans.

/// At most `burst` scans per process per `interval` (a window that starts at its first scan);
/// requests beyond are coalesced into one scan when the window ends. The burst lets a starting
/// process be scanned as it maps its libraries one after the other; the window caps a process
/// that maps files in a loop. Bounded: at most `max_pids` processes are remembered, and as many
/// pending.
#[derive(Debug)]
pub struct ScanLimiter {
    interval: Duration,
    burst: u32,
    max_pids: usize,
    /// Start of the current window and the scans made in it.
    last: std::collections::HashMap<u32, (Instant, u32)>,
    pending: std::collections::BTreeMap<u32, Instant>,
}

/// What to do with a scan request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanDecision {
    /// Scan now.
    Now,
    /// Coalesced into a scan at the returned time (counted as rate-limited).
    Later(Instant),
    /// Already pending: merged with the scan already planned.
    Merged,
    /// Too many processes pending: dropped (the periodic full scan still covers it).
    Dropped,
}

impl ScanLimiter {
    /// A limiter allowing `burst` scans per process per `interval`.
    pub fn new(interval: Duration, burst: u32, max_pids: usize) -> ScanLimiter {
        ScanLimiter {
            interval,
            burst: burst.max(1),
            max_pids,
            last: Default::default(),
            pending: Default::default(),
        }
    }

    /// Decides on a scan request for `pid` at `now`. A `Now` answer records the scan.
    pub fn request(&mut self, pid: u32, now: Instant) -> ScanDecision {
        if self.pending.contains_key(&pid) {
            return ScanDecision::Merged;
        }
        match self.last.get(&pid).copied() {
            Some((start, n)) if now.saturating_duration_since(start) < self.interval => {
                if n < self.burst {
                    self.last.insert(pid, (start, n + 1));
                    ScanDecision::Now
                } else {
                    self.defer(pid, start + self.interval)
                }
            }
            _ => {
                if self.last.len() >= self.max_pids {
                    self.prune(now);
                }
                if self.last.len() >= self.max_pids {
                    // Still full of recent scans: the request waits a full interval.
                    return self.defer(pid, now + self.interval);
                }
                self.last.insert(pid, (now, 1));
                ScanDecision::Now
            }
        }
    }

    fn defer(&mut self, pid: u32, at: Instant) -> ScanDecision {
        if self.pending.len() >= self.max_pids {
            return ScanDecision::Dropped;
        }
        self.pending.insert(pid, at);
        ScanDecision::Later(at)
    }

    /// Processes whose coalesced scan is due at `now` (recorded as scanned now).
    pub fn due(&mut self, now: Instant) -> Vec<u32> {
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &due {
            self.pending.remove(p);
            self.last.insert(*p, (now, 1));
        }
        due
    }

    /// The earliest time a pending scan is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().min().copied()
    }

    /// Forgets processes whose last scan is older than the interval.
    pub fn prune(&mut self, now: Instant) {
        let iv = self.interval;
        self.last
            .retain(|_, (t, _)| now.saturating_duration_since(*t) < iv);
    }

    /// Processes remembered (scanned within the interval, or pending).
    pub fn len(&self) -> usize {
        self.last.len() + self.pending.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Host-side sources of candidates.

/// File-name prefixes of the TLS libraries looked up in the dynamic linker cache.
pub const LINKER_CACHE_TLS_PREFIXES: [&str; 2] = ["libssl.so", "libgnutls.so"];

/// Library paths of `libssl` and `libgnutls` known to the dynamic linker cache (`ldconfig -p`),
/// so that a library loaded lazily later (Python's `import ssl`, a program that `dlopen`s
/// libcurl-gnutls) is probed before anyone maps it.
pub fn ldconfig_tls_libraries() -> Vec<PathBuf> {
    let out = std::process::Command::new("ldconfig").arg("-p").output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => return Vec::new(),
    };
    linker_cache_tls_paths(&text)
}

/// The TLS library paths in the text of `ldconfig -p`.
fn linker_cache_tls_paths(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter(|l| {
            let name = l.trim_start();
            LINKER_CACHE_TLS_PREFIXES
                .iter()
                .any(|p| name.starts_with(p))
        })
        .filter_map(|l| l.rsplit("=> ").next())
        .map(|p| PathBuf::from(p.trim()))
        .filter(|p| p.is_absolute())
        .collect()
}

/// All process ids in /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_lib(prefix: &str) -> PathBuf {
        let libs = ldconfig_tls_libraries();
        libs.iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("ldconfig -p lists no {prefix} on this machine: {libs:?}"))
            .clone()
    }

    fn system_libssl() -> PathBuf {
        system_lib("libssl.so")
    }

    fn system_libgnutls() -> PathBuf {
        system_lib("libgnutls.so")
    }

    #[test]
    fn elf_facts_tell_dynamic_static_stripped_and_openssl_apart() {
        let lib = std::fs::read(system_libssl()).expect("read libssl");
        let f = elf_facts_bytes(&lib, ElfLimits::default()).expect("libssl facts");
        assert!(usable(&f.tls) && !f.go && !f.interp, "{f:?}");
        assert_eq!(f.tls, inspect_elf_bytes(&lib).expect("libssl"));
        // This test binary: a dynamically linked executable with its symbol table.
        let me = std::fs::read("/proc/self/exe").expect("read own executable");
        let f = elf_facts_bytes(&me, ElfLimits::default()).expect("own facts");
        assert!(f.interp && !f.go && !usable(&f.tls), "{f:?}");
        // Truncations and garbage are refusals, never panics.
        for cut in [0, 3, 16, 63, 64, 4096, lib.len() / 2, lib.len() - 1] {
            let _ = elf_facts_bytes(&lib[..cut], ElfLimits::default());
        }
        let mut garbage = lib[..4096].to_vec();
        for (i, b) in garbage.iter_mut().enumerate().skip(16) {
            *b = (i * 131 % 251) as u8;
        }
        let _ = elf_facts_bytes(&garbage, ElfLimits::default());
        let tiny = ElfLimits {
            max_table_bytes: 64,
            ..ElfLimits::default()
        };
        assert_eq!(elf_facts_bytes(&lib, tiny), Err(Refusal::TooLarge));
    }

    #[test]
    fn a_symbol_outside_its_section_or_the_file_is_no_target() {
        // Found by the `elf` fuzz target: SSL_read_ex at 0x2900000000000294 in a 4748-byte file.
        let raw = include_bytes!("../../fuzz/regressions/elf/symbol-outside-its-section");
        if let Ok(offsets) = inspect_elf_bytes(raw) {
            for off in offsets.iter().flatten() {
                assert!(*off < raw.len() as u64, "offset {off:#x} outside the file");
            }
        }
    }

    /// The symbols of `stack` that `offsets` holds and those it lacks.
    fn found(offsets: &TlsOffsets, stack: TlsStack) -> (usize, usize) {
        let of = TLS_SYMBOLS
            .iter()
            .zip(offsets)
            .filter(|(s, _)| s.stack == stack);
        let some = of.clone().filter(|(_, o)| o.is_some()).count();
        (some, of.count() - some)
    }

    #[test]
    fn finds_openssl_in_system_libssl() {
        let f = open_host_file(&system_libssl()).expect("open libssl");
        let offsets = inspect_elf_file(&f.file, ElfLimits::default()).expect("parse");
        assert!(usable(&offsets));
        assert_eq!(found(&offsets, TlsStack::OpenSsl), (5, 0), "{offsets:?}");
        assert_eq!(found(&offsets, TlsStack::GnuTls), (0, 3), "{offsets:?}");
        let lib = TlsLibrary {
            path: system_libssl(),
            file_id: f.file_id,
            offsets,
        };
        assert_eq!(lib.stacks(), vec![TlsStack::OpenSsl]);
        assert_eq!(lib.label(), "OpenSSL");
        let names: Vec<&str> = lib.attach_points().iter().map(|(s, _)| s.name).collect();
        assert_eq!(
            names,
            [
                "SSL_write_ex",
                "SSL_write",
                "SSL_read_ex",
                "SSL_read",
                "SSL_free"
            ]
        );
    }

    #[test]
    fn finds_gnutls_in_system_libgnutls() {
        let f = open_host_file(&system_libgnutls()).expect("open libgnutls");
        let offsets = inspect_elf_file(&f.file, ElfLimits::default()).expect("parse");
        assert_eq!(found(&offsets, TlsStack::GnuTls), (3, 0), "{offsets:?}");
        assert_eq!(found(&offsets, TlsStack::OpenSsl), (0, 5), "{offsets:?}");
        let lib = TlsLibrary {
            path: system_libgnutls(),
            file_id: f.file_id,
            offsets,
        };
        assert_eq!(lib.stacks(), vec![TlsStack::GnuTls]);
        assert_eq!(lib.label(), "GnuTLS");
        let points: Vec<(&str, TlsCall)> = lib
            .attach_points()
            .iter()
            .map(|(s, _)| (s.name, s.call))
            .collect();
        assert_eq!(
            points,
            [
                ("gnutls_record_send", TlsCall::Write),
                ("gnutls_record_recv", TlsCall::Read),
                ("gnutls_deinit", TlsCall::Free),
            ]
        );
    }

    /// A file with both stacks gets both; a stack without a read and a write gets nothing (not
    /// even its free function).
    #[test]
    fn stacks_are_usable_each_on_its_own() {
        let at = |name: &str| {
            TLS_SYMBOLS
                .iter()
                .position(|s| s.name == name)
                .expect("known symbol")
        };
        let mut offsets: TlsOffsets = [None; TLS_SYMBOL_COUNT];
        for (n, name) in [
            "SSL_read",
            "SSL_write",
            "gnutls_record_recv",
            "gnutls_record_send",
        ]
        .iter()
        .enumerate()
        {
            offsets[at(name)] = Some(0x100 * (n as u64 + 1));
        }
        let lib = TlsLibrary {
            path: PathBuf::from("/both"),
            file_id: (1, 2),
            offsets,
        };
        assert_eq!(lib.stacks(), vec![TlsStack::OpenSsl, TlsStack::GnuTls]);
        assert_eq!(lib.label(), "OpenSSL and GnuTLS");
        assert_eq!(lib.attach_points().len(), 4);
        // GnuTLS without its send: only OpenSSL; gnutls_deinit is not attached.
        offsets[at("gnutls_record_send")] = None;
        offsets[at("gnutls_deinit")] = Some(0x900);
        let lib = TlsLibrary { offsets, ..lib };
        assert_eq!(lib.stacks(), vec![TlsStack::OpenSsl]);
        assert!(
            lib.attach_points()
                .iter()
                .all(|(s, _)| s.stack == TlsStack::OpenSsl)
        );
        // Frees and reads alone are not usable.
        let mut only = [None; TLS_SYMBOL_COUNT];
        only[at("SSL_free")] = Some(1);
        only[at("gnutls_deinit")] = Some(2);
        only[at("gnutls_record_recv")] = Some(3);
        assert!(!usable(&only) && usable_stacks(&only).is_empty());
        // The longest name fits the comparison window.
        assert_eq!(MAX_SYMBOL_NAME, "gnutls_record_recv".len());
        let strs = b"\0gnutls_record_recv\0gnutls_record_recv_seq\0SSL_read\0";
        assert_eq!(symbol_index(strs, 1), Some(at("gnutls_record_recv")));
        assert_eq!(symbol_index(strs, 20), None);
        assert_eq!(symbol_index(strs, 43), Some(at("SSL_read")));
        assert_eq!(symbol_index(strs, 10_000), None);
    }

    #[test]
    fn the_linker_cache_lists_libssl_and_libgnutls() {
        let text = "1234 libs found in cache `/etc/ld.so.cache'
\tlibssl3.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl3.so
\tlibssl.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.3
\tlibgnutlsxx.so.30 (libc6,x86-64) => /lib/x86_64-linux-gnu/libgnutlsxx.so.30
\tlibgnutls.so.30 (libc6,x86-64) => /lib/x86_64-linux-gnu/libgnutls.so.30
\tlibgnutls-openssl.so.27 (libc6,x86-64) => /lib/x86_64-linux-gnu/libgnutls-openssl.so.27
\tlibgnutls.so (libc6,x86-64) => relative/libgnutls.so
";
        assert_eq!(
            linker_cache_tls_paths(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libssl.so.3"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgnutls.so.30"),
            ]
        );
    }

    /// The offsets must be what a full ELF parser (the `object` crate) finds, for every symbol
    /// of both libraries (absent ones absent).
    #[test]
    fn offsets_agree_with_the_object_crate() {
        use object::{Object, ObjectSection, ObjectSymbol};
        for lib in [system_libssl(), system_libgnutls()] {
            let bytes = std::fs::read(&lib).expect("read library");
            let ours = inspect_elf_bytes(&bytes).expect("parse");
            let obj = object::File::parse(&*bytes).expect("object parse");
            for (i, s) in TLS_SYMBOLS.iter().enumerate() {
                let want = obj
                    .dynamic_symbols()
                    .find(|x| x.is_definition() && x.name() == Ok(s.name))
                    .map(|sym| {
                        let sec = obj
                            .section_by_index(sym.section_index().expect("section"))
                            .expect("section");
                        let (sec_off, _) = sec.file_range().expect("file range");
                        sym.address() - sec.address() + sec_off
                    });
                assert_eq!(ours[i], want, "{} in {lib:?}", s.name);
            }
            assert!(usable(&ours), "{lib:?}");
        }
    }

    #[test]
    fn a_program_that_only_imports_ssl_is_not_a_target() {
        // curl reaches OpenSSL through libcurl and libssl; the executable defines none of it.
        let curl = Path::new("/usr/bin/curl");
        assert!(curl.exists(), "curl is needed by this test");
        let f = open_host_file(curl).expect("open curl");
        assert_eq!(
            inspect_elf_file(&f.file, ElfLimits::default()),
            Ok([None; TLS_SYMBOL_COUNT])
        );
    }

    /// Every prefix of a real library: never a panic, and a prefix that cuts a piece the headers
    /// point to is a short read (the file-backed reader sees the same as a truncated file).
    #[test]
    fn every_truncation_of_libssl_is_refused_or_complete() {
        let bytes = std::fs::read(system_libssl()).expect("read libssl");
        let full = inspect_elf_bytes(&bytes).expect("parse");
        // Where the pieces the reader needs end: beyond that, the prefix parses like the whole.
        let needed = needed_end(&bytes);
        let mut cuts: Vec<usize> = (0..200).collect();
        cuts.extend((200..bytes.len()).step_by(997));
        cuts.extend([needed - 1, needed, bytes.len() - 1]);
        for cut in cuts {
            let r = inspect_elf_bytes(&bytes[..cut]);
            if cut < 16 {
                assert_eq!(r, Err(Refusal::NotElf), "cut {cut}");
            } else if cut < needed {
                assert_eq!(r, Err(Refusal::ShortRead), "cut {cut}");
            } else {
                assert_eq!(r, Ok(full), "cut {cut}");
            }
        }
    }

    /// The end of the last byte the reader needs: section headers, .dynsym and its strings.
    fn needed_end(bytes: &[u8]) -> usize {
        use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
        let elf = ElfFile64::<object::Endianness>::parse(bytes).expect("elf");
        let hdr = elf.elf_header();
        let e = elf.endian();
        let shoff = hdr.e_shoff(e) as usize;
        let mut end = shoff + hdr.e_shnum(e) as usize * 64;
        let secs = hdr.sections(e, bytes).expect("sections");
        for s in secs.iter() {
            if s.sh_type(e) == object::elf::SHT_DYNSYM {
                end = end.max((s.sh_offset(e) + s.sh_size(e)) as usize);
                let link = secs
                    .section(object::SectionIndex(s.sh_link(e) as usize))
                    .expect("strtab");
                end = end.max((link.sh_offset(e) + link.sh_size(e)) as usize);
            }
        }
        end
    }

    #[test]
    fn a_file_that_shrinks_is_a_short_read_not_a_crash() {
        let dir = std::env::temp_dir().join(format!("llmprobe-unit-shrink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("lib.so");
        let bytes = std::fs::read(system_libssl()).expect("read libssl");
        std::fs::write(&p, &bytes).expect("write");
        let f = open_host_file(&p).expect("open");
        // Truncated after the open, before the reads: the headers promise more than there is.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|w| w.set_len(4096))
            .expect("truncate");
        assert_eq!(
            inspect_elf_file(&f.file, ElfLimits::default()),
            Err(Refusal::ShortRead)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert_eq!(inspect_elf_bytes(b""), Err(Refusal::NotElf));
        assert_eq!(
            inspect_elf_bytes(b"#!/bin/sh\necho hi\n"),
            Err(Refusal::NotElf)
        );
        // Pseudo-random bytes behind a valid ident, many seeds: only refusals or empty results.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in [16usize, 64, 65, 300, 4096] {
            for _ in 0..200 {
                let mut b: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                b[..6].copy_from_slice(b"\x7fELF\x02\x01");
                let _ = inspect_elf_bytes(&b);
            }
        }
    }

    #[test]
    fn caps_refuse_large_tables_and_many_symbols() {
        let bytes = std::fs::read(system_libssl()).expect("read libssl");
        let tiny = |f: fn(&mut ElfLimits)| {
            let mut l = ElfLimits::default();
            f(&mut l);
            inspect_elf_bytes_with(&bytes, l)
        };
        assert_eq!(tiny(|l| l.max_sections = 3), Err(Refusal::TooLarge));
        assert_eq!(tiny(|l| l.max_table_bytes = 1000), Err(Refusal::TooLarge));
        assert_eq!(tiny(|l| l.max_total_bytes = 5000), Err(Refusal::TooLarge));
        assert_eq!(tiny(|l| l.max_symbols = 10), Err(Refusal::TooManySymbols));
    }

    #[test]
    fn maps_lines_with_escaped_names_spaces_and_deleted_suffix() {
        let text = b"\
55d0c0a00000-55d0c0a20000 r--p 00000000 fd:01 1234                       /usr/bin/python3.11\n\
55d0c0a20000-55d0c0c00000 r-xp 00020000 fd:01 1234                       /usr/bin/python3.11\n\
7f0000000000-7f0000100000 r-xp 00000000 103:02 77                         /tmp/a b/lib\\012ssl.so\n\
7f0000100000-7f0000200000 r-xp 00000000 00:2a 88                         /tmp/gone.so (deleted)\n\
7f0000200000-7f0000300000 r-xp 00000000 00:00 0 \n\
7f0000300000-7f0000301000 r-xp 00000000 00:00 0                          [vdso]\n\
7f0000400000-7f0000500000 rw-p 00000000 fd:01 99                         /data.bin\n\
garbage line\n\
7f00-zz r-xp 0 fd:01 5 /x\n";
        let m = parse_maps(text);
        assert_eq!(
            m,
            vec![
                MapEntry {
                    start: 0x55d0c0a20000,
                    end: 0x55d0c0c00000,
                    file_id: (makedev(0xfd, 1), 1234),
                    path: PathBuf::from("/usr/bin/python3.11"),
                    deleted: false,
                },
                MapEntry {
                    start: 0x7f0000000000,
                    end: 0x7f0000100000,
                    file_id: (makedev(0x103, 2), 77),
                    path: PathBuf::from("/tmp/a b/lib\nssl.so"),
                    deleted: false,
                },
                MapEntry {
                    start: 0x7f0000100000,
                    end: 0x7f0000200000,
                    file_id: (makedev(0, 0x2a), 88),
                    path: PathBuf::from("/tmp/gone.so"),
                    deleted: true,
                },
            ]
        );
    }

    #[test]
    fn makedev_matches_stat() {
        let md = std::fs::metadata("/dev/null").expect("stat /dev/null");
        assert_eq!(md.rdev(), makedev(1, 3));
    }

    #[test]
    fn own_mappings_are_listed_and_open_to_the_same_file() {
        let maps = executable_mappings(std::process::id());
        let libc = maps
            .iter()
            .find(|m| m.path.to_string_lossy().contains("libc"))
            .unwrap_or_else(|| panic!("{maps:?}"));
        let (f, _) = open_mapped(std::process::id(), libc).expect("open own libc mapping");
        assert_eq!(f.file_id, libc.file_id);
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("llmprobe-unit-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let fifo = dir.join("libssl.so.3");
        let c = CString::new(fifo.as_os_str().as_bytes()).expect("cstr");
        // SAFETY: NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(open_host_file(&fifo).map(|_| ()), Err(Refusal::NotRegular));
        assert_eq!(
            open_host_file(Path::new("/dev/null")).map(|_| ()),
            Err(Refusal::NotRegular)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A container's absolute symlink resolves inside the container's root, never the host's.
    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("llmprobe-unit-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("lib")).expect("dir");
        std::fs::create_dir_all(dir.join("host")).expect("dir");
        std::fs::write(dir.join("host/secret"), b"host").expect("write");
        // Inside the root, /lib/libssl.so.3 -> <host path of the secret>, and -> ../../host/secret.
        let host_secret = dir.join("host/secret");
        std::os::unix::fs::symlink(&host_secret, root.join("lib/abs.so")).expect("symlink");
        std::os::unix::fs::symlink("../../../host/secret", root.join("lib/rel.so"))
            .expect("symlink");
        assert_eq!(
            open_in_root(&root, Path::new("/lib/abs.so")).map(|_| ()),
            Err(Refusal::OpenFailed),
            "the absolute symlink must resolve under the root, where nothing is"
        );
        assert_eq!(
            open_in_root(&root, Path::new("/lib/rel.so")).map(|_| ()),
            Err(Refusal::OpenFailed)
        );
        // The same target created inside the root is what gets opened.
        let inside = root.join(host_secret.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(inside.parent().expect("parent")).expect("dir");
        std::fs::write(&inside, b"inside").expect("write");
        let f = open_in_root(&root, Path::new("/lib/abs.so")).expect("open inside");
        let md = std::fs::metadata(&inside).expect("stat");
        assert_eq!(f.file_id, (md.dev(), md.ino()));
        // Magic links are refused.
        assert_eq!(
            open_in_root(Path::new("/"), Path::new("/proc/self/exe")).map(|_| ()),
            Err(Refusal::OutsideRoot)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scans_are_limited_per_process_and_coalesced() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = ScanLimiter::new(s, 1, 4);
        assert_eq!(l.request(7, t0), ScanDecision::Now);
        assert_eq!(l.request(8, t0), ScanDecision::Now);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.request(7, t1), ScanDecision::Later(t0 + s));
        assert_eq!(l.request(7, t1), ScanDecision::Merged);
        assert_eq!(l.next_due(), Some(t0 + s));
        assert_eq!(l.due(t1), Vec::<u32>::new());
        assert_eq!(l.due(t0 + s), vec![7]);
        assert_eq!(l.next_due(), None);
        // Scanned at t0+1s: the next one waits until t0+2s.
        assert_eq!(
            l.request(7, t0 + s + Duration::from_millis(1)),
            ScanDecision::Later(t0 + s + s)
        );
        assert_eq!(l.request(8, t0 + s), ScanDecision::Now);
    }

    #[test]
    fn a_burst_of_scans_then_one_per_window() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let ms = Duration::from_millis;
        let mut l = ScanLimiter::new(s, 3, 16);
        assert_eq!(l.request(7, t0), ScanDecision::Now);
        assert_eq!(l.request(7, t0 + ms(50)), ScanDecision::Now);
        assert_eq!(l.request(7, t0 + ms(200)), ScanDecision::Now);
        // The window started at t0: the fourth waits for its end, later ones merge into it.
        assert_eq!(l.request(7, t0 + ms(300)), ScanDecision::Later(t0 + s));
        assert_eq!(l.request(7, t0 + ms(400)), ScanDecision::Merged);
        assert_eq!(l.due(t0 + s), vec![7]);
        // The coalesced scan opened a new window with one scan in it.
        assert_eq!(l.request(7, t0 + s + ms(1)), ScanDecision::Now);
        assert_eq!(l.request(7, t0 + s + ms(2)), ScanDecision::Now);
        assert_eq!(
            l.request(7, t0 + s + ms(3)),
            ScanDecision::Later(t0 + s + s)
        );
    }

    #[test]
    fn the_limiter_stays_bounded() {
        let t0 = Instant::now();
        let mut l = ScanLimiter::new(Duration::from_secs(1), 1, 3);
        for p in 0..3 {
            assert_eq!(l.request(p, t0), ScanDecision::Now);
        }
        // Full of recent scans: a new process waits, it is not remembered beyond the cap.
        assert_eq!(
            l.request(100, t0),
            ScanDecision::Later(t0 + Duration::from_secs(1))
        );
        for p in 101..103 {
            assert!(matches!(l.request(p, t0), ScanDecision::Later(_)));
        }
        // The pending set is bounded too.
        assert_eq!(l.request(200, t0), ScanDecision::Dropped);
        // A second later the old entries are pruned and new processes scan at once.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(l.due(t1), vec![100, 101, 102]);
        // Remembered: at most the cap of recent scans plus the cap of pending ones.
        assert!(l.len() <= 2 * 3, "{}", l.len());
        // Those three were scanned at t1: a newcomer waits while they are recent, then scans.
        assert!(matches!(l.request(300, t1), ScanDecision::Later(_)));
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(l.due(t2), vec![300]);
        assert_eq!(
            l.request(301, t2 + Duration::from_secs(1)),
            ScanDecision::Now
        );
    }
}
