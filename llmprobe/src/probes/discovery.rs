//! Finds the files that carry OpenSSL's `SSL_read`/`SSL_write` (shared `libssl`, or executables
//! that embed OpenSSL and export its symbols, such as `node`), and where those functions start in
//! the file. A uprobe is placed per file (inode), so each distinct file is attached once and then
//! covers every process that maps it, now and later.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSymbol};

/// The OpenSSL functions llmprobe probes.
pub const SSL_SYMBOLS: [&str; 5] = [
    "SSL_read",
    "SSL_read_ex",
    "SSL_write",
    "SSL_write_ex",
    "SSL_free",
];

/// A file that defines OpenSSL's I/O functions, with their file offsets (index = `SSL_SYMBOLS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsLibrary {
    /// Path used to open it (may go through `/proc/PID/root`).
    pub path: PathBuf,
    /// Device and inode: the identity uprobes are placed on.
    pub file_id: (u64, u64),
    /// File offset of each symbol in `SSL_SYMBOLS`, when defined.
    pub offsets: [Option<u64>; 5],
}

impl TlsLibrary {
    /// True when at least one read and one write function are present.
    pub fn is_usable(&self) -> bool {
        (self.offsets[0].is_some() || self.offsets[1].is_some())
            && (self.offsets[2].is_some() || self.offsets[3].is_some())
    }
}

/// Device and inode of a file.
pub fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    let md = std::fs::metadata(path)?;
    Ok((md.dev(), md.ino()))
}

/// Reads an ELF file and returns the OpenSSL functions it defines (not merely imports).
/// `Ok(None)` when it defines none.
pub fn inspect_elf(path: &Path) -> anyhow::Result<Option<TlsLibrary>> {
    let id = file_id(path)?;
    let file = std::fs::File::open(path)?;
    // SAFETY: the file is mapped read-only and private; if another process truncates it while we
    // read, we may get SIGBUS, the same risk every symbolizer takes. Files mapped executable by
    // running processes are not truncated in practice (the kernel refuses writes to busy text).
    let map = unsafe { memmap_ro(&file)? };
    let obj = object::File::parse(&*map)?;
    let mut offsets = [None; 5];
    let mut found = false;
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        if !sym.is_definition() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        let Some(idx) = SSL_SYMBOLS.iter().position(|s| *s == name) else {
            continue;
        };
        if offsets[idx].is_some() {
            continue;
        }
        let Some(sec_idx) = sym.section_index() else {
            continue;
        };
        let Ok(section) = obj.section_by_index(sec_idx) else {
            continue;
        };
        let Some((sec_off, _)) = section.file_range() else {
            continue;
        };
        let Some(off) = sym
            .address()
            .checked_sub(section.address())
            .and_then(|d| d.checked_add(sec_off))
        else {
            continue;
        };
        offsets[idx] = Some(off);
        found = true;
    }
    if !found {
        return Ok(None);
    }
    Ok(Some(TlsLibrary {
        path: path.to_path_buf(),
        file_id: id,
        offsets,
    }))
}

/// A read-only private mapping of a whole file.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl std::ops::Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` is a live mapping of `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly what mmap returned.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

/// # Safety
/// See `inspect_elf`: the caller accepts the SIGBUS risk of a file truncated under the mapping.
unsafe fn memmap_ro(file: &std::fs::File) -> std::io::Result<Mapping> {
    use std::os::fd::AsRawFd;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(Mapping {
            ptr: std::ptr::null_mut(),
            len: 0,
        });
    }
    // SAFETY: valid fd, read-only private mapping; checked for MAP_FAILED below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Mapping { ptr, len })
}

/// Executable file mappings of a process: paths as seen from the agent (`/proc/PID/root/...`).
pub fn executable_mappings(pid: u32) -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut parts = line.splitn(6, ' ');
        let (Some(_addr), Some(perms), Some(_off), Some(_dev), Some(inode)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        let path = parts.next().unwrap_or("").trim_start();
        if !perms.contains('x')
            || inode == "0"
            || !path.starts_with('/')
            || path.ends_with(" (deleted)")
        {
            continue;
        }
        if seen.insert(path.to_owned()) {
            out.push(PathBuf::from(format!("/proc/{pid}/root{path}")));
        }
    }
    out
}

/// Library paths of `libssl` known to the dynamic linker cache (`ldconfig -p`), so that a library
/// loaded lazily later (Python's `import ssl`) is probed before anyone maps it.
pub fn ldconfig_ssl_libraries() -> Vec<PathBuf> {
    let out = std::process::Command::new("ldconfig").arg("-p").output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => return Vec::new(),
    };
    text.lines()
        .filter(|l| l.trim_start().starts_with("libssl.so"))
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

    #[test]
    fn finds_openssl_in_system_libssl() {
        let libs = ldconfig_ssl_libraries();
        assert!(
            !libs.is_empty(),
            "ldconfig -p lists no libssl on this machine"
        );
        let lib = inspect_elf(&libs[0])
            .expect("parse")
            .expect("libssl defines SSL_read");
        assert!(lib.is_usable());
        assert!(lib.offsets.iter().all(|o| o.is_some()), "{lib:?}");
    }

    #[test]
    fn a_library_that_only_imports_ssl_is_not_a_target() {
        // curl reaches OpenSSL through libcurl and libssl; the executable defines none of it.
        let curl = Path::new("/usr/bin/curl");
        assert!(curl.exists(), "curl is needed by this test");
        assert_eq!(inspect_elf(curl).expect("parse"), None);
    }

    #[test]
    fn own_mappings_are_listed() {
        let maps = executable_mappings(std::process::id());
        assert!(
            maps.iter().any(|p| p.to_string_lossy().contains("libc")),
            "{maps:?}"
        );
    }
}
