//! `SseDecoder` on a response body, whole and in fuzzer-chosen pieces. Mode bit 0: a small event
//! cap (64 bytes) so the oversize path is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::protocol::StreamEvent;
use llmprobe::protocol::sse::{DEFAULT_MAX_EVENT_BYTES, SseDecoder};
use llmprobe_fuzz::{Input, Rng, cut};

fn run(max: usize, pieces: &[&[u8]]) -> (Vec<StreamEvent>, bool, u64) {
    let mut d = SseDecoder::with_max_event_bytes(max);
    let mut out = Vec::new();
    let mut too_large = false;
    for piece in pieces {
        too_large |= d.feed(piece, &mut out).is_err();
        assert!(
            d.buffered_bytes() <= max,
            "buffered {} > {max}",
            d.buffered_bytes()
        );
    }
    d.finish(&mut out);
    assert_eq!(d.buffered_bytes(), 0);
    (out, too_large, d.comments_seen())
}

fuzz_target!(|raw: &[u8]| {
    let input = Input::parse(raw);
    let max = if input.mode & 1 != 0 {
        64
    } else {
        DEFAULT_MAX_EVENT_BYTES
    };
    let whole = run(max, &[input.data]);
    for ev in &whole.0 {
        // Lossy UTF-8 may triple an invalid byte; nothing else grows.
        assert!(ev.data.len() <= 3 * input.data.len());
    }
    let pieces = cut(input.data, &mut Rng::new(input.seed));
    let split = run(max, &pieces);
    assert_eq!(split, whole, "cut into {} pieces", pieces.len());
});
