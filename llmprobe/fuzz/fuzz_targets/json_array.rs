//! `JsonArraySplitter` on a streamed JSON array body, whole and in fuzzer-chosen pieces. Mode bit
//! 0: a small element cap (64 bytes) so the oversize path is reached.
//!
//! Invariants: whole = any cuts; elements are under the cap; an element is delivered or reported
//! oversized, never dropped silently (compared with an unlimited splitter).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::protocol::StreamEvent;
use llmprobe::protocol::json_array::{DEFAULT_MAX_ELEMENT_BYTES, JsonArraySplitter};
use llmprobe_fuzz::{Input, Rng, cut};

fn run(max: usize, pieces: &[&[u8]]) -> (Vec<StreamEvent>, bool, bool) {
    let mut s = JsonArraySplitter::with_max_element_bytes(max);
    let mut out = Vec::new();
    let mut oversized = false;
    for piece in pieces {
        s.feed(piece, &mut out);
        oversized |= s.take_oversized();
    }
    (out, s.is_array(), oversized)
}

fuzz_target!(|raw: &[u8]| {
    let input = Input::parse(raw);
    let max = if input.mode & 1 != 0 {
        64
    } else {
        DEFAULT_MAX_ELEMENT_BYTES
    };
    let whole = run(max, &[input.data]);
    for ev in &whole.0 {
        assert!(ev.event.is_none() && ev.id.is_none());
        let el = &ev.data;
        // Elements are kept under the cap (lossy UTF-8 may triple an invalid byte).
        assert!(el.len() <= 3 * max, "element of {} bytes", el.len());
        assert!(el.starts_with('{') || el.starts_with('['), "{el:?}");
    }
    if !whole.1 {
        assert!(whole.0.is_empty());
    }
    // Against an unlimited splitter: an element is either delivered whole or reported oversized.
    let all = run(usize::MAX, &[input.data]);
    assert_eq!(all.1, whole.1);
    if whole.0.len() < all.0.len() {
        assert!(
            whole.2,
            "{} elements dropped, none reported",
            all.0.len() - whole.0.len()
        );
    }
    assert!(whole.0.iter().all(|e| all.0.contains(e)));
    let pieces = cut(input.data, &mut Rng::new(input.seed));
    assert_eq!(run(max, &pieces), whole, "cut into {} pieces", pieces.len());
});
