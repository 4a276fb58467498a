//! `NdjsonDecoder` on a response body, whole and in fuzzer-chosen pieces. Mode bit 0: a small
//! line cap (64 bytes) so the over-long-line path is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::protocol::StreamEvent;
use llmprobe::protocol::ndjson::{DEFAULT_MAX_LINE_BYTES, NdjsonDecoder};
use llmprobe_fuzz::{Input, Rng, cut};

fn run(max: usize, pieces: &[&[u8]]) -> (Vec<StreamEvent>, bool) {
    let mut d = NdjsonDecoder::with_max_line_bytes(max);
    let mut out = Vec::new();
    let mut too_long = false;
    for piece in pieces {
        too_long |= d.feed(piece, &mut out).is_err();
        assert!(
            d.buffered_bytes() <= max,
            "buffered {} > {max}",
            d.buffered_bytes()
        );
    }
    d.finish(&mut out);
    assert_eq!(d.buffered_bytes(), 0);
    (out, too_long)
}

fuzz_target!(|raw: &[u8]| {
    let input = Input::parse(raw);
    let max = if input.mode & 1 != 0 {
        64
    } else {
        DEFAULT_MAX_LINE_BYTES
    };
    let whole = run(max, &[input.data]);
    for ev in &whole.0 {
        assert!(ev.event.is_none() && ev.id.is_none());
        let line = &ev.data;
        assert!(!line.contains('\n'));
        assert!(line.bytes().any(|b| !b.is_ascii_whitespace()), "{line:?}");
        assert!(line.len() <= 3 * max, "line of {} bytes", line.len());
    }
    let pieces = cut(input.data, &mut Rng::new(input.seed));
    assert_eq!(run(max, &pieces), whole, "cut into {} pieces", pieces.len());
});
