//! Secret masking (`probes::scrub::SecretScrubber`) on an HTTP request stream that carries a
//! secret header, cut into events at fuzzer-chosen points. The stream is built from the input:
//! `[header][token length][prefix header lines...][0xff][suffix header lines...][0xff][body]`
//! (after the 9-byte header; lines are separated by `\n` in the input and sent with `\r\n`,
//! without bare CR/LF inside them). A request without the secret (a keep-alive predecessor whose
//! body is the fuzzed body) comes first.
//!
//! Invariant: every byte of the secret value (the token) comes out as `*`; the stream keeps its
//! length. NOTE: re-point at the masker's own fuzz entry point once it has one, and add capture
//! loss (events dropped, the following event flagged) to the cuts.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use llmprobe::probes::events::{DataChunk, Direction, EventMeta};
use llmprobe::probes::scrub::SecretScrubber;
use llmprobe_fuzz::{Input, Rng, cut};

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

fn chunk(data: &[u8]) -> DataChunk {
    DataChunk {
        meta: EventMeta {
            pid: 1,
            tid: 1,
            fd: 3,
            conn_id: 9,
            ts_ns: 0,
            comm: String::new(),
            container: None,
        },
        direction: Direction::Egress,
        tls: true,
        offset: 0,
        total_len: data.len() as u32,
        data: Bytes::copy_from_slice(data),
    }
}

fuzz_target!(|raw: &[u8]| {
    let input = Input::parse(raw);
    let d = input.data;
    if d.len() < 2 {
        return;
    }
    let mut rng = Rng::new(input.seed);
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

    let mut scrubber = SecretScrubber::new();
    let mut out = Vec::with_capacity(stream.len());
    for piece in cut(&stream, &mut rng) {
        let mut c = chunk(piece);
        scrubber.scrub(&mut c);
        assert_eq!(c.data.len(), piece.len());
        out.extend_from_slice(&c.data);
    }
    assert_eq!(out.len(), stream.len());
    let masked = &out[at..at + token.len()];
    assert!(
        masked.iter().all(|&b| b == b'*'),
        "secret survived: {:?} in {:?}",
        String::from_utf8_lossy(masked),
        String::from_utf8_lossy(&out)
    );
    assert!(scrubber.masked_values >= 1);
});
