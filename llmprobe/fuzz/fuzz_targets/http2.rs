//! `H2Parser` (frames + HPACK) on a client or server stream: fed whole, fed in fuzzer-chosen
//! pieces, and with a capture gap. Mode bits: 0 = server stream (no preface), 1 = the receiver
//! allows 1 MiB frames, 2 = a 64 KiB HPACK table.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use llmprobe::protocol::http2::{
    H2Error, H2Event, H2Parser, MAX_CONTROL_PAYLOAD, MAX_HEADER_BLOCK, MAX_HEADERS,
    MAX_HPACK_TABLE, Side,
};
use llmprobe_fuzz::{Input, Rng, cut};

/// Most heap bytes a parser may account: the header block and a control payload (with their
/// growth slack), and the HPACK table at its largest.
const BOUND: usize = 2 * (MAX_HEADER_BLOCK + 256) + 2 * MAX_CONTROL_PAYLOAD + MAX_HPACK_TABLE;

fn parser(mode: u8) -> H2Parser {
    let mut p = H2Parser::new(if mode & 1 != 0 {
        Side::Server
    } else {
        Side::Client
    });
    if mode & 2 != 0 {
        p.set_max_frame_size(1 << 20);
    }
    if mode & 4 != 0 {
        p.set_header_table_size(1 << 16);
    }
    p
}

/// Adjacent DATA pieces of one stream merged, empty ones dropped.
fn coalesce(events: Vec<H2Event>) -> Vec<H2Event> {
    let mut out: Vec<H2Event> = Vec::new();
    for ev in events {
        if let H2Event::Data { data, .. } = &ev
            && data.is_empty()
        {
            continue;
        }
        if let (Some(H2Event::Data { stream: s0, data: d0 }), H2Event::Data { stream, data }) =
            (out.last_mut(), &ev)
            && s0 == stream
        {
            let mut v = d0.to_vec();
            v.extend_from_slice(data);
            *d0 = Bytes::from(v);
            continue;
        }
        out.push(ev);
    }
    out
}

fn run(mode: u8, pieces: &[&[u8]]) -> (Vec<H2Event>, Option<H2Error>) {
    let mut p = parser(mode);
    let mut out = Vec::new();
    for piece in pieces {
        let r = p.feed(&Bytes::copy_from_slice(piece), &mut out);
        assert!(p.buffered_bytes() <= BOUND, "{}", p.buffered_bytes());
        if let Err(e) = r {
            // A failed parser stays failed.
            assert_eq!(p.feed(&Bytes::from_static(b"\0\0\0\x04\0\0\0\0\0"), &mut out), Err(e));
            return (out, Some(e));
        }
    }
    (out, None)
}

fuzz_target!(|raw: &[u8]| {
    let input = Input::parse(raw);
    let data = input.data;
    let mut rng = Rng::new(input.seed);

    let (whole, whole_err) = run(input.mode, &[data]);
    let data_bytes: usize = whole
        .iter()
        .map(|e| match e {
            H2Event::Data { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert!(data_bytes <= data.len());
    for e in &whole {
        if let H2Event::Headers { block, .. } = e {
            assert!(block.headers.len() <= MAX_HEADERS);
        }
    }

    let pieces = cut(data, &mut rng);
    let (split, split_err) = run(input.mode, &pieces);
    assert_eq!(coalesce(split), coalesce(whole), "cut into {}", pieces.len());
    assert_eq!(split_err, whole_err);

    // A gap anywhere fails the parser for good.
    let mut p = parser(input.mode);
    let mut out = Vec::new();
    for piece in &pieces {
        if rng.one_in(4) {
            assert!(p.feed_gap(piece.len() as u64 + 1).is_err());
            assert!(p.feed(&Bytes::copy_from_slice(piece), &mut out).is_err());
            break;
        }
        if p.feed(&Bytes::copy_from_slice(piece), &mut out).is_err() {
            break;
        }
    }
});
