//! Go discovery over the input bytes (any user can run a binary llmprobe then inspects): the
//! pclntab, module data, build info and code readers, with the same bounded reads as a file.
//! Invariant: no panic; every offset found lies inside the file; entries before ends; each RET
//! offset inside its function and on a RET (`C3`, or `C2` with an immediate, after prefixes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::probes::golang::{GoLimits, GoVerdict, inspect_go_bytes, is_amd64_ret};

fuzz_target!(|raw: &[u8]| {
    if let Ok(GoVerdict::Tls(t)) = inspect_go_bytes(raw, GoLimits::default()) {
        for f in [&t.read, &t.write] {
            assert!(f.entry < f.end && f.end <= raw.len() as u64, "{f:?}");
            for r in &f.rets {
                assert!(*r >= f.entry && *r < f.end, "RET {r:#x} outside {f:?}");
                assert!(is_amd64_ret(&raw[*r as usize..]), "RET at {r:#x}");
            }
        }
    }
});
