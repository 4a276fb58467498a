//! `BodyDecoder` for each Content-Encoding on fuzzed compressed bytes (decompression bombs
//! included), whole and in fuzzer-chosen pieces. Mode bits 0-2 pick the encoding, bits 3-4 the
//! output cap. Run with `-rss_limit_mb=512 -malloc_limit_mb=256`: a decoder that inflates a small
//! input far past its cap before checking it fails there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::protocol::encoding::{BodyDecoder, DecodeError};
use llmprobe_fuzz::codings::{CAPS, ENCODINGS};
use llmprobe_fuzz::{Input, Rng, cut};

fn run(enc: &str, cap: u64, pieces: &[&[u8]]) -> Option<(Vec<u8>, Option<DecodeError>)> {
    let mut d = match BodyDecoder::for_encoding(enc, cap) {
        Ok(Some(d)) => d,
        Ok(None) | Err(_) => return None,
    };
    let mut out = Vec::new();
    let mut err = None;
    for piece in pieces {
        let res = d.decode(piece, &mut out);
        assert!(
            out.len() as u64 <= cap,
            "{} bytes out, cap {cap}",
            out.len()
        );
        assert_eq!(d.produced(), out.len() as u64);
        if let Err(e) = res {
            // Failed decoders stay failed and add nothing more.
            let len = out.len();
            assert_eq!(d.decode(b"\x1f\x8b\x08\x00", &mut out).as_ref(), Err(&e));
            assert_eq!(out.len(), len);
            err = Some(e);
            break;
        }
    }
    Some((out, err))
}

fuzz_target!(|raw: &[u8]| {
    let input = Input::parse(raw);
    let enc = ENCODINGS[usize::from(input.mode & 7)];
    let cap = CAPS[usize::from(input.mode >> 3 & 3)];
    let Some(whole) = run(enc, cap, &[input.data]) else {
        assert!(matches!(enc, "identity" | "compress"));
        return;
    };
    let pieces = cut(input.data, &mut Rng::new(input.seed));
    let Some(split) = run(enc, cap, &pieces) else {
        unreachable!()
    };
    // `deflate` guesses zlib or raw from the first two bytes; a one-byte first piece is guessed
    // from its one byte, so only longer first pieces must agree.
    // `br` is left out until the finding `regressions/encoding/br-whole-vs-pieces` is fixed: those
    // 391 bytes decode to 4096 bytes whole and to 4307 bytes in 13 pieces, both without error
    // (still so with the bounded sink: the brotli writer's behaviour, not a cap).
    let known_issue = enc == "br";
    let guessed = enc == "deflate"
        && pieces
            .iter()
            .find(|p| !p.is_empty())
            .is_some_and(|p| p.len() < 2);
    if whole.1.is_none() && split.1.is_none() && !guessed && !known_issue {
        if split.0 != whole.0 {
            let at = split
                .0
                .iter()
                .zip(&whole.0)
                .take_while(|(a, b)| a == b)
                .count();
            panic!(
                "{enc}: cut into {} pieces gives {} bytes, whole {} bytes, first difference at {at}",
                pieces.len(),
                split.0.len(),
                whole.0.len()
            );
        }
    }
});
