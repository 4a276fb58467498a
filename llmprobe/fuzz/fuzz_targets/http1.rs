//! `Http1Parser` on a request or response stream: fed whole, fed in fuzzer-chosen pieces, and fed
//! with capture gaps. Mode bits: 0 = response parser, 1 = small head limit (256 bytes), 2 = queue
//! `expect_response` flags (HEAD requests) from bits 4-7 before feeding.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use llmprobe::protocol::http1::{Http1Parser, HttpError, HttpEvent, MessageKind};
use llmprobe_fuzz::{Input, Rng, cut};

/// Longest chunk-size / trailer line the parser keeps (http1.rs `MAX_LINE_BYTES` + CRLF).
const LINE_BOUND: usize = 4 * 1024 + 2;

fn parser(mode: u8) -> (Http1Parser, usize) {
    let kind = if mode & 1 != 0 {
        MessageKind::Response
    } else {
        MessageKind::Request
    };
    let max = if mode & 2 != 0 {
        256
    } else {
        llmprobe::protocol::http1::DEFAULT_MAX_HEADER_BYTES
    };
    let mut p = Http1Parser::with_max_header_bytes(kind, max);
    if mode & 4 != 0 {
        for i in 4..8 {
            p.expect_response(mode >> i & 1 != 0);
        }
    }
    (p, max)
}

/// Merges adjacent body events (their split depends on the pieces) and drops empty ones.
fn coalesce(events: Vec<HttpEvent>) -> Vec<HttpEvent> {
    let mut res: Vec<HttpEvent> = Vec::new();
    for ev in events {
        match (res.last_mut(), ev) {
            (Some(HttpEvent::Body(prev)), HttpEvent::Body(b)) => {
                let mut v = prev.to_vec();
                v.extend_from_slice(&b);
                *prev = Bytes::from(v);
            }
            (_, HttpEvent::Body(b)) if b.is_empty() => {}
            (_, ev) => res.push(ev),
        }
    }
    res
}

/// Feeds pieces until the first error; returns events, the error, and `finish`'s verdict.
fn run(mode: u8, pieces: &[&[u8]]) -> (Vec<HttpEvent>, Option<HttpError>, bool) {
    let (mut p, max) = parser(mode);
    let mut out = Vec::new();
    let mut err = None;
    for piece in pieces {
        if let Err(e) = p.feed(piece, &mut out) {
            err = Some(e);
            break;
        }
        assert!(
            p.buffered_bytes() <= max + LINE_BOUND,
            "buffered {}",
            p.buffered_bytes()
        );
    }
    if let Some(e) = &err {
        // A failed parser stays failed.
        assert_eq!(p.feed(b"GET / HTTP/1.1\r\n\r\n", &mut out).as_ref(), Err(e));
        assert!(!p.is_idle());
    }
    let incomplete = p.finish(&mut out);
    (out, err, incomplete)
}

fn body_bytes(events: &[HttpEvent]) -> usize {
    events
        .iter()
        .map(|e| {
            if let HttpEvent::Body(b) = e {
                b.len()
            } else {
                0
            }
        })
        .sum()
}

fuzz_target!(|raw: &[u8]| {
    let input = Input::parse(raw);
    let data = input.data;
    let mut rng = Rng::new(input.seed);

    let (whole, whole_err, whole_incomplete) = run(input.mode, &[data]);
    // Output is never more than the input: body bytes come from the input, and every other
    // event needs at least one input byte of its own (a head, a chunk's end, a CRLF) or is the
    // one MessageEnd that `finish` may add.
    assert!(body_bytes(&whole) <= data.len());
    assert!(
        whole.len() <= data.len() + 1,
        "{} events from {} bytes",
        whole.len(),
        data.len()
    );

    // The same bytes in pieces: the same events and the same verdict.
    let pieces = cut(data, &mut rng);
    let (split, split_err, split_incomplete) = run(input.mode, &pieces);
    assert_eq!(
        coalesce(split),
        coalesce(whole.clone()),
        "cut into {} pieces",
        pieces.len()
    );
    assert_eq!(split_err, whole_err);
    assert_eq!(split_incomplete, whole_incomplete);

    // Pieces with capture gaps: some pieces are replaced by feed_gap of their length.
    let (mut p, max) = parser(input.mode);
    let mut out = Vec::new();
    let mut lost = 0u64;
    let mut failed = false;
    for piece in &pieces {
        let res = if rng.one_in(6) {
            lost += piece.len() as u64;
            p.feed_gap(piece.len() as u64, &mut out)
        } else {
            p.feed(piece, &mut out)
        };
        assert!(p.buffered_bytes() <= max + LINE_BOUND);
        if res.is_err() {
            failed = true;
            break;
        }
    }
    p.finish(&mut out);
    let gap_bytes: u64 = out
        .iter()
        .map(|e| if let HttpEvent::BodyGap(n) = e { *n } else { 0 })
        .sum();
    assert!(
        gap_bytes <= lost,
        "{gap_bytes} gap bytes reported, {lost} lost"
    );
    assert!(body_bytes(&out) <= data.len());

    // After `finish` the parser starts over (without queued flags): the stream parses as it did
    // the first time. A failed parser stays failed.
    if !failed && input.mode & 4 == 0 {
        let mut again = Vec::new();
        let res = p.feed(data, &mut again);
        let incomplete = p.finish(&mut again);
        assert_eq!(coalesce(again), coalesce(whole));
        assert_eq!(res.err(), whole_err);
        assert_eq!(incomplete, whole_incomplete);
    }
});
