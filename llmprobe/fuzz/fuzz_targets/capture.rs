//! `probes::capture::read_capture` on fuzzed capture text (`llmprobe replay` reads files that
//! users attach to bug reports). The raw input is the file. Invariant: no panic; an accepted
//! capture writes back and reads back to the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::probes::capture::{CaptureWriter, read_capture};

fuzz_target!(|raw: &[u8]| {
    let Ok((clock, events)) = read_capture(raw) else {
        return;
    };
    let mut buf = Vec::new();
    let mut w = CaptureWriter::new(&mut buf, clock).expect("writing to a Vec");
    for ev in &events {
        w.write(ev).expect("writing to a Vec");
    }
    let (clock2, back) = read_capture(&buf[..]).expect("a written capture reads back");
    assert_eq!(clock2, clock);
    assert_eq!(back, events);
});
