//! Secret masking (`probes::scrub`) through its fuzz entry point `scrub_stream`: a stream with
//! marked secrets is cut into pieces at fuzzer-chosen points, and pieces are lost (dropped in the
//! ring buffer, with or without the kernel's lost-before flag) or the masker's state for the
//! stream is evicted between them. Two streams: with mode bit 0 clear, `scrub::secret_stream`
//! (every place the rules cover, random secrets); set, a request whose header lines and body come
//! from the input, built as `[header][token length][prefix header lines...][0xff][suffix header
//! lines...][0xff][body]` (after the 9-byte header; lines are separated by `\n` in the input and
//! sent with `\r\n`, without bare CR/LF inside them), after a keep-alive predecessor whose body
//! is the fuzzed body.
//!
//! Invariant: no byte of a marked secret survives in any delivered piece, whatever the cuts and
//! losses; every piece keeps its length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::probes::scrub::{Delivery, Piece, scrub_stream, secret_stream};
use llmprobe_fuzz::{Input, Rng};

const SECRET_LINES: [&str; 8] = [
    "Authorization: Bearer ",
    "authorization:Bearer ",
    "X-Api-Key: ",
    "Proxy-Authorization: Basic ",
    "x-goog-api-key:",
    "Cookie: session=",
    "api-key:\t",
    "AUTHORIZATION:   Bearer ",
];
const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/=";

/// Header lines from fuzzed bytes: `\n`-separated, CR/LF-free, joined with CRLF.
fn lines(raw: &[u8], out: &mut Vec<u8>) {
    if raw.is_empty() {
        return;
    }
    for line in raw.split(|&b| b == b'\n') {
        out.extend(line.iter().copied().filter(|&b| b != b'\r'));
        out.extend_from_slice(b"\r\n");
    }
}

/// Cut points and losses drawn from the seed: pieces of 1 to 64 bytes, a new call every few
/// pieces, one piece in eight lost or preceded by an eviction.
fn pieces(len: usize, rng: &mut Rng) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let n = 1 + rng.below(64) as usize;
        let delivery = match rng.below(32) {
            0 => Delivery::Dropped,
            1 => Delivery::DroppedFlagged,
            2 | 3 => Delivery::Evicted,
            _ => Delivery::Delivered,
        };
        out.push(Piece {
            len: n,
            new_call: pos == 0 || rng.below(3) == 0,
            delivery,
        });
        pos += n;
    }
    out
}

/// The request built from the input, with the token's range.
fn fuzzed_request(d: &[u8], rng: &mut Rng) -> Option<(Vec<u8>, std::ops::Range<usize>)> {
    if d.len() < 2 {
        return None;
    }
    let secret_line = SECRET_LINES[usize::from(d[0] & 7)];
    let token_len = 8 + usize::from(d[1] % 57);
    let token: Vec<u8> = (0..token_len)
        .map(|_| TOKEN_CHARS[rng.below(TOKEN_CHARS.len() as u64) as usize])
        .collect();
    let mut parts = d[2..].splitn(3, |&b| b == 0xff);
    let prefix = parts.next().unwrap_or_default();
    let suffix = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();

    let mut stream = Vec::new();
    stream.extend_from_slice(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    stream.extend_from_slice(body);
    stream.extend_from_slice(b"POST /v1/messages HTTP/1.1\r\n");
    lines(prefix, &mut stream);
    stream.extend_from_slice(secret_line.as_bytes());
    let at = stream.len();
    stream.extend_from_slice(&token);
    stream.extend_from_slice(b"\r\n");
    lines(suffix, &mut stream);
    stream.extend_from_slice(b"\r\n{}");

    Some((stream, at..at + token.len()))
}

fuzz_target!(|raw: &[u8]| {
    let input = Input::parse(raw);
    let mut rng = Rng::new(input.seed);
    let (stream, secrets) = if input.mode & 1 == 0 {
        secret_stream(input.seed)
    } else {
        match fuzzed_request(input.data, &mut rng) {
            Some((stream, token)) => (stream, vec![token]),
            None => return,
        }
    };
    let cuts = pieces(stream.len(), &mut rng);
    if let Err(e) = scrub_stream(&stream, &cuts, &secrets) {
        panic!("{e}");
    }
});
