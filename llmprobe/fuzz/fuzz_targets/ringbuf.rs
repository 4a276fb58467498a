//! `probes::events::decode` on raw ring-buffer records (their payload bytes come from traced
//! processes). The raw input is the record. Invariant: no panic; payload never over `MAX_DATA`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::probes::events::{ProbeEvent, decode};

fuzz_target!(|raw: &[u8]| {
    if let Ok(ProbeEvent::Data(d)) = decode(raw) {
        assert!(d.data.len() <= llmprobe_common::MAX_DATA);
        assert!(d.data.len() <= raw.len());
    }
});
