//! Masks secret header values (`Authorization`, `x-api-key`, `cookie`...) in captured bytes the
//! moment they leave the ring buffer, before anything can store, log or record them. Values are
//! overwritten in place with `*` (same length, so byte positions and framing do not change).
//! A header line split across events is followed with a small per-stream state; a stream whose
//! state is unknown is treated as being at a line start, which can only mask more, never less.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use super::events::{DataChunk, Direction};
use crate::protocol::http1::is_secret_header;

/// Longest header name compared against the secret list.
const MAX_NAME: usize = 32;
/// Most streams with a header line open across an event boundary that are remembered.
const MAX_OPEN_STREAMS: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// Inside a possible header name (bytes so far, lower-cased).
    Name(Vec<u8>),
    /// Inside a secret value: mask until end of line.
    Masking,
    /// Inside a line that is not a secret header.
    Skip,
}

type StreamKey = (u32, u64, Direction);

/// Per-stream masking of secret header values.
#[derive(Default)]
pub struct SecretScrubber {
    open: HashMap<StreamKey, State>,
    /// Masked header values so far.
    pub masked_values: u64,
}

impl SecretScrubber {
    /// New scrubber.
    pub fn new() -> Self {
        Self::default()
    }

    /// Masks secrets in `chunk.data` in place.
    pub fn scrub(&mut self, chunk: &mut DataChunk) {
        let key = (chunk.meta.pid, chunk.meta.conn_id, chunk.direction);
        let state = self.open.remove(&key).unwrap_or(State::LineStart);
        let mut data: Option<BytesMut> = None;
        let end = scrub_bytes(&chunk.data, state, &mut data, &mut self.masked_values);
        if let Some(d) = data {
            chunk.data = Bytes::from(d);
        }
        if matches!(end, State::Name(_) | State::Masking) {
            if self.open.len() >= MAX_OPEN_STREAMS {
                self.open.clear();
            }
            self.open.insert(key, end);
        }
    }

    /// Forgets a connection's streams.
    pub fn forget(&mut self, pid: u32, conn_id: u64) {
        self.open.remove(&(pid, conn_id, Direction::Egress));
        self.open.remove(&(pid, conn_id, Direction::Ingress));
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Runs the state machine over `input`; on the first byte to mask, copies it into `out`.
fn scrub_bytes(
    input: &Bytes,
    mut state: State,
    out: &mut Option<BytesMut>,
    masked: &mut u64,
) -> State {
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        state = match state {
            State::LineStart | State::Name(_) if b == b'\n' => State::LineStart,
            State::LineStart => {
                if is_token(b) {
                    State::Name(vec![b.to_ascii_lowercase()])
                } else {
                    State::Skip
                }
            }
            State::Name(mut name) => {
                if b == b':' {
                    let is_secret = std::str::from_utf8(&name)
                        .map(is_secret_header)
                        .unwrap_or(false);
                    if is_secret {
                        *masked += 1;
                        State::Masking
                    } else {
                        State::Skip
                    }
                } else if is_token(b) && name.len() < MAX_NAME {
                    name.push(b.to_ascii_lowercase());
                    State::Name(name)
                } else {
                    State::Skip
                }
            }
            State::Masking => {
                if b == b'\n' {
                    State::LineStart
                } else {
                    if b != b'\r' {
                        let buf = out.get_or_insert_with(|| BytesMut::from(&input[..]));
                        buf[i] = b'*';
                    }
                    State::Masking
                }
            }
            State::Skip => {
                // Jump to the end of the line.
                match input[i..].iter().position(|&c| c == b'\n') {
                    Some(p) => {
                        i += p;
                        State::LineStart
                    }
                    None => {
                        i = input.len();
                        State::Skip
                    }
                }
            }
        };
        i += 1;
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::events::EventMeta;

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

    const REQ: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-secret-123\r\nX-Api-Key: k-456\r\nCookie: a=b\r\nContent-Length: 2\r\n\r\n{}";

    fn check(out: &[u8]) {
        let s = String::from_utf8_lossy(out);
        assert!(!s.contains("sk-secret-123"), "{s}");
        assert!(!s.contains("k-456"), "{s}");
        assert!(!s.contains("a=b"), "{s}");
        assert!(s.contains("Host: x\r\n"));
        assert!(s.contains("Authorization:*"));
        assert!(s.ends_with("Content-Length: 2\r\n\r\n{}"));
        assert_eq!(out.len(), REQ.len());
    }

    #[test]
    fn masks_whole_buffer() {
        let mut s = SecretScrubber::new();
        let mut c = chunk(REQ);
        s.scrub(&mut c);
        check(&c.data);
        assert_eq!(s.masked_values, 3);
    }

    #[test]
    fn masks_across_every_split() {
        for cut in 0..=REQ.len() {
            let mut s = SecretScrubber::new();
            let mut a = chunk(&REQ[..cut]);
            let mut b = chunk(&REQ[cut..]);
            s.scrub(&mut a);
            s.scrub(&mut b);
            let mut all = a.data.to_vec();
            all.extend_from_slice(&b.data);
            check(&all);
        }
    }

    #[test]
    fn byte_by_byte() {
        let mut s = SecretScrubber::new();
        let mut all = Vec::new();
        for b in REQ {
            let mut c = chunk(&[*b]);
            s.scrub(&mut c);
            all.extend_from_slice(&c.data);
        }
        check(&all);
        assert!(s.open.is_empty());
    }

    #[test]
    fn leaves_bodies_alone() {
        let mut s = SecretScrubber::new();
        let body = b"data: {\"authorization\": 1}\n\n";
        let mut c = chunk(body);
        s.scrub(&mut c);
        assert_eq!(&c.data[..], &body[..]);
    }
}
