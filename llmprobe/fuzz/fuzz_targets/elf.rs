//! ELF discovery over the input bytes (any process can place a file that llmprobe inspects),
//! through the same parser discovery runs over a file with bounded reads.
//! Invariant: no panic; every offset found lies inside the file; doctor's `elf_facts_bytes` finds
//! the same TLS functions (OpenSSL, GnuTLS).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::probes::discovery::{ElfLimits, elf_facts_bytes, inspect_elf_bytes};

fuzz_target!(|raw: &[u8]| {
    // doctor's facts read the same tables (and the section names): same symbols, no panic.
    let facts = elf_facts_bytes(raw, ElfLimits::default());
    if let (Ok(f), Ok(offsets)) = (&facts, inspect_elf_bytes(raw)) {
        assert_eq!(f.tls, offsets, "facts and discovery disagree");
    }
    if let Ok(offsets) = inspect_elf_bytes(raw) {
        for off in offsets.iter().flatten() {
            assert!(
                *off < raw.len() as u64,
                "offset {off:#x} outside a {}-byte file",
                raw.len()
            );
        }
    }
});
