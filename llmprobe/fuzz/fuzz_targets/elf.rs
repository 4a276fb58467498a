//! ELF discovery over the input bytes (any process can place a file that llmprobe inspects),
//! through the same parser discovery runs over a file with bounded reads.
//! Invariant: no panic; every offset found lies inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::probes::discovery::inspect_elf_bytes;

fuzz_target!(|raw: &[u8]| {
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
