//! Incremental HTTP/2 frame parser (RFC 9113) with HPACK header decoding (RFC 7541, through
//! [`super::hpack`]: linear in the block, at most 256 fields of a block reach the filter below).
//!
//! One [`H2Parser`] handles one direction of one connection: the client's (it starts with the
//! connection preface) or the server's. Bytes may be fed in arbitrary pieces; the parser keeps
//! only a frame header (9 bytes), the small control payloads it reads (SETTINGS, RST_STREAM,
//! GOAWAY: bounded by [`MAX_CONTROL_PAYLOAD`]) and one header block being assembled (HEADERS +
//! CONTINUATION, bounded by [`MAX_HEADER_BLOCK`]). DATA payloads are not buffered: each piece is
//! emitted as [`H2Event::Data`] as it arrives (padding removed), so a stream is timed by the bytes
//! that carried it, exactly as an HTTP/1.1 chunked body is.
//!
//! Frames read: DATA (padding), HEADERS (padding, priority), CONTINUATION, RST_STREAM, SETTINGS
//! (`SETTINGS_HEADER_TABLE_SIZE`, `SETTINGS_MAX_FRAME_SIZE`), GOAWAY. PING, WINDOW_UPDATE,
//! PRIORITY, PUSH_PROMISE and unknown types are skipped without being kept.
//!
//! **Secrets**: header values are filtered by the secret policy ([`crate::secrets`]) inside the
//! HPACK callback, before anything else sees them: a secret header ([`secrets::is_secret_header`])
//! is dropped from the decoded head, as the HTTP/1 head parser drops it; an API-key header's value
//! ([`secrets::is_api_key_header`]) becomes its keyed fingerprint
//! ([`crate::probes::scrub::credential_id`], the same as for HTTP/1) and its clear copies are
//! zeroed; `:path` has its secret query values replaced ([`secrets::redact_query`]), and an API-key
//! parameter is fingerprinted the same way. The raw header block is zeroed once decoded.
//! What stays in memory: the HPACK dynamic table of each direction holds the header fields the
//! peer chose to index (credentials included, as clients send them) for the connection's life, as
//! any HTTP/2 endpoint must to decode the next block; it is bounded by the table size
//! (`SETTINGS_HEADER_TABLE_SIZE`, at most [`MAX_HPACK_TABLE`]), never logged, recorded or
//! exported, and freed with the connection.
//!
//! Invariants: a parser that fails stays failed (HPACK state cannot be resynchronised); a capture
//! gap fails it ([`H2Error::Gap`]); a frame longer than the receiver's `SETTINGS_MAX_FRAME_SIZE`
//! fails it; a decoded head keeps at most [`MAX_HEADERS`] fields and [`MAX_DECODED_HEAD`] bytes
//! (further fields dropped, counted in [`H2Parser::dropped_fields`]).

use super::hpack::Decoder;
use bytes::Bytes;

use crate::probes::scrub::credential_id;
use crate::secrets;

/// The client connection preface.
pub const PREFACE: &[u8] = secrets::HTTP2_PREFACE;
/// `SETTINGS_MAX_FRAME_SIZE` until the receiver says otherwise (RFC 9113 §6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// Largest frame size a receiver may allow (2^24 - 1).
pub const MAX_FRAME_SIZE_LIMIT: u32 = (1 << 24) - 1;
/// Largest header block (HEADERS + CONTINUATION fragments, padding removed) assembled.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Largest control payload (SETTINGS, RST_STREAM, GOAWAY's first 8 bytes) kept; the rest of a
/// longer one (GOAWAY debug data) is skipped, a longer SETTINGS fails the parser.
pub const MAX_CONTROL_PAYLOAD: usize = 4 * 1024;
/// `SETTINGS_HEADER_TABLE_SIZE` until the receiver says otherwise (RFC 7541 §4.2).
pub const DEFAULT_HPACK_TABLE: usize = 4_096;
/// Largest HPACK dynamic table accepted per direction, whatever SETTINGS allow: an encoder
/// growing its table past it fails the parser (counted by the caller).
pub const MAX_HPACK_TABLE: usize = 64 * 1024;
/// Most header fields kept from one block.
pub const MAX_HEADERS: usize = 256;
/// Most bytes (names + values) kept from one decoded block; indexed fields can expand a small
/// block into much more.
pub const MAX_DECODED_HEAD: usize = 64 * 1024;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Which end sends this direction's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: the stream begins with the connection preface.
    Client,
    /// The server.
    Server,
}

/// Pseudo-header fields of a decoded block, and the regular fields the secret policy let pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    /// `:method`.
    pub method: Option<String>,
    /// `:path`, secret query values replaced ([`secrets::redact_query`]).
    pub path: Option<String>,
    /// `:authority`.
    pub authority: Option<String>,
    /// `:scheme`.
    pub scheme: Option<String>,
    /// `:status`.
    pub status: Option<u16>,
    /// Regular fields in order: names lower-cased, secret fields dropped, values lossy UTF-8,
    /// trimmed (as [`super::http1::RequestHead::headers`]).
    pub headers: Vec<(String, String)>,
    /// The first API credential's keyed fingerprint (an API-key header, or an API-key query
    /// parameter of `:path`).
    pub credential: Option<u64>,
}

impl HeaderBlock {
    /// Value of the first regular field called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Something the parser recognised in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H2Event {
    /// A SETTINGS frame that is not an acknowledgement: what the sender allows the other
    /// direction (its receiver's limits).
    Settings {
        /// `SETTINGS_HEADER_TABLE_SIZE`, if given.
        header_table_size: Option<u32>,
        /// `SETTINGS_MAX_FRAME_SIZE`, if given.
        max_frame_size: Option<u32>,
    },
    /// A complete, decoded header block (HEADERS and its CONTINUATIONs).
    Headers {
        /// Stream id.
        stream: u32,
        /// The decoded fields.
        block: Box<HeaderBlock>,
    },
    /// DATA payload bytes (padding removed), as they arrived.
    Data {
        /// Stream id.
        stream: u32,
        /// The bytes.
        data: Bytes,
    },
    /// The stream's sender is done (END_STREAM on DATA or HEADERS).
    EndStream {
        /// Stream id.
        stream: u32,
    },
    /// RST_STREAM: the stream was cancelled.
    Reset {
        /// Stream id.
        stream: u32,
        /// Error code.
        code: u32,
    },
    /// GOAWAY.
    GoAway {
        /// Last stream id the sender processed.
        last_stream: u32,
        /// Error code.
        code: u32,
    },
}

/// Why the parser gave up on a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2Error {
    /// The client stream does not start with the connection preface.
    NoPreface,
    /// A frame longer than the receiver's `SETTINGS_MAX_FRAME_SIZE`.
    FrameTooLarge,
    /// A header block past [`MAX_HEADER_BLOCK`], or a SETTINGS past [`MAX_CONTROL_PAYLOAD`].
    HeaderBlockTooLarge,
    /// Framing against the protocol (short reason for logs).
    Malformed(&'static str),
    /// HPACK decoding failed (the block, or a table size the settings do not allow).
    Hpack,
    /// Bytes were not captured: framing and HPACK state are lost.
    Gap,
}

impl std::fmt::Display for H2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H2Error::NoPreface => f.write_str("no HTTP/2 connection preface"),
            H2Error::FrameTooLarge => f.write_str("HTTP/2 frame over the allowed size"),
            H2Error::HeaderBlockTooLarge => f.write_str("HTTP/2 header block too large"),
            H2Error::Malformed(why) => write!(f, "malformed HTTP/2: {why}"),
            H2Error::Hpack => f.write_str("HPACK decoding failed"),
            H2Error::Gap => f.write_str("capture gap in HTTP/2 (HPACK state lost)"),
        }
    }
}

impl std::error::Error for H2Error {}

/// Where in the byte stream the parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many preface bytes matched.
    Preface(usize),
    /// Reading a frame header (bytes in `head`).
    Head,
    /// Keeping a control or header payload: this many bytes left to keep, then `skip` to skip.
    Keep { left: u32, skip: u32 },
    /// Skipping payload bytes.
    Skip { left: u32 },
    /// DATA, padded: the pad length byte comes next.
    DataPad,
    /// DATA payload: `left` bytes of data, then `pad` of padding.
    Data { left: u32, pad: u32 },
    /// Failed: nothing more is parsed.
    Failed(H2Error),
}

/// The header of the frame being read.
#[derive(Debug, Clone, Copy, Default)]
struct Frame {
    len: u32,
    ty: u8,
    flags: u8,
    stream: u32,
}

/// Incremental HTTP/2 parser for one direction.
pub struct H2Parser {
    state: State,
    head: [u8; 9],
    head_len: usize,
    frame: Frame,
    /// The kept payload of the current control or HEADERS/CONTINUATION frame.
    keep: Vec<u8>,
    /// The header block being assembled, and its stream; `block_stream` 0 when none.
    block: Vec<u8>,
    block_stream: u32,
    block_end_stream: bool,
    /// Frames longer than this fail the parser (the receiver's `SETTINGS_MAX_FRAME_SIZE`).
    max_frame_size: u32,
    hpack: Decoder,
    /// The dynamic table size the decoder may be asked for (accounted as held).
    table_size: usize,
    dropped_fields: u64,
}

impl H2Parser {
    /// A parser for the frames `side` sends.
    pub fn new(side: Side) -> Self {
        let mut hpack = Decoder::new();
        hpack.set_max_allowed_table_size(DEFAULT_HPACK_TABLE);
        H2Parser {
            state: match side {
                Side::Client => State::Preface(0),
                Side::Server => State::Head,
            },
            head: [0; 9],
            head_len: 0,
            frame: Frame::default(),
            keep: Vec::new(),
            block: Vec::new(),
            block_stream: 0,
            block_end_stream: false,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            hpack,
            table_size: DEFAULT_HPACK_TABLE,
            dropped_fields: 0,
        }
    }

    /// The receiver of this direction sent `SETTINGS_MAX_FRAME_SIZE` (clamped to the protocol's
    /// range).
    pub fn set_max_frame_size(&mut self, n: u32) {
        self.max_frame_size = n.clamp(DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_LIMIT);
    }

    /// The receiver of this direction sent `SETTINGS_HEADER_TABLE_SIZE`: the encoder may grow its
    /// table up to it (at most [`MAX_HPACK_TABLE`]; a larger table fails the parser).
    pub fn set_header_table_size(&mut self, n: u32) {
        self.table_size = (n as usize).min(MAX_HPACK_TABLE).max(self.table_size);
        self.hpack.set_max_allowed_table_size(self.table_size);
    }

    /// The error the parser stopped at, if any.
    pub fn failed(&self) -> Option<H2Error> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Header fields dropped past [`MAX_HEADERS`] / [`MAX_DECODED_HEAD`].
    pub fn dropped_fields(&self) -> u64 {
        self.dropped_fields
    }

    /// Heap bytes held: buffers, and the HPACK decoder's table and scratch buffers as allocated.
    pub fn buffered_bytes(&self) -> usize {
        self.keep.capacity() + self.block.capacity() + self.hpack.heap_bytes()
    }

    /// `n` bytes were not captured: framing and HPACK state are lost, the parser fails.
    pub fn feed_gap(&mut self, n: u64) -> Result<(), H2Error> {
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
        Err(self.fail(H2Error::Gap))
    }

    /// The bytes end: nothing is completed by a connection's end in HTTP/2 (a stream without its
    /// END_STREAM was cut). Frees the buffers.
    pub fn finish(&mut self) {
        self.zero_buffers();
    }

    fn zero_buffers(&mut self) {
        self.keep.fill(0);
        self.keep = Vec::new();
        self.block.fill(0);
        self.block = Vec::new();
    }

    fn fail(&mut self, e: H2Error) -> H2Error {
        self.state = State::Failed(e);
        self.zero_buffers();
        // The table is of no use any more (its state is unknown): zeroed and freed.
        self.hpack = Decoder::new();
        e
    }

    /// Feeds `data` (a piece of this direction's bytes); events are appended to `out`. DATA
    /// payloads are slices of `data` (no copy).
    pub fn feed(&mut self, data: &Bytes, out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        let mut pos = 0;
        while pos < data.len() {
            match self.state {
                State::Failed(e) => return Err(e),
                State::Preface(n) => {
                    let take = (PREFACE.len() - n).min(data.len() - pos);
                    if data[pos..pos + take] != PREFACE[n..n + take] {
                        return Err(self.fail(H2Error::NoPreface));
                    }
                    pos += take;
                    self.state = if n + take == PREFACE.len() {
                        State::Head
                    } else {
                        State::Preface(n + take)
                    };
                }
                State::Head => {
                    let take = (9 - self.head_len).min(data.len() - pos);
                    self.head[self.head_len..self.head_len + take]
                        .copy_from_slice(&data[pos..pos + take]);
                    self.head_len += take;
                    pos += take;
                    if self.head_len == 9 {
                        self.head_len = 0;
                        if let Err(e) = self.on_frame_head(out) {
                            return Err(self.fail(e));
                        }
                    }
                }
                State::Keep { left, skip } => {
                    let take = (left as usize).min(data.len() - pos);
                    self.keep.extend_from_slice(&data[pos..pos + take]);
                    pos += take;
                    let left = left - take as u32;
                    if left == 0 {
                        self.state = if skip > 0 {
                            State::Skip { left: skip }
                        } else {
                            State::Head
                        };
                        if let Err(e) = self.on_payload(out) {
                            return Err(self.fail(e));
                        }
                    } else {
                        self.state = State::Keep { left, skip };
                    }
                }
                State::Skip { left } => {
                    let take = (left as usize).min(data.len() - pos);
                    pos += take;
                    let left = left - take as u32;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Skip { left }
                    };
                }
                State::DataPad => {
                    let pad = u32::from(data[pos]);
                    pos += 1;
                    let Some(left) = self.frame.len.checked_sub(1 + pad) else {
                        return Err(self.fail(H2Error::Malformed("DATA padding too long")));
                    };
                    self.state = State::Data { left, pad };
                    self.data_done(out);
                }
                State::Data { left, pad } => {
                    let take = (left as usize).min(data.len() - pos);
                    if take > 0 {
                        out.push(H2Event::Data {
                            stream: self.frame.stream,
                            data: data.slice(pos..pos + take),
                        });
                    }
                    pos += take;
                    self.state = State::Data {
                        left: left - take as u32,
                        pad,
                    };
                    self.data_done(out);
                }
            }
        }
        Ok(())
    }

    /// The DATA payload is all read: its END_STREAM is reported, its padding skipped.
    fn data_done(&mut self, out: &mut Vec<H2Event>) {
        if let State::Data { left: 0, pad } = self.state {
            if self.frame.flags & END_STREAM != 0 {
                out.push(H2Event::EndStream {
                    stream: self.frame.stream,
                });
            }
            self.state = if pad > 0 {
                State::Skip { left: pad }
            } else {
                State::Head
            };
        }
    }

    fn on_frame_head(&mut self, out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        let h = &self.head;
        let f = Frame {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            ty: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        };
        self.frame = f;
        if f.len > self.max_frame_size {
            return Err(H2Error::FrameTooLarge);
        }
        if self.block_stream != 0 && (f.ty != CONTINUATION || f.stream != self.block_stream) {
            return Err(H2Error::Malformed("header block interrupted"));
        }
        self.keep.clear();
        match f.ty {
            DATA => {
                if f.stream == 0 {
                    return Err(H2Error::Malformed("DATA on stream 0"));
                }
                self.state = if f.flags & PADDED != 0 {
                    if f.len == 0 {
                        return Err(H2Error::Malformed("DATA padding too long"));
                    }
                    State::DataPad
                } else {
                    State::Data {
                        left: f.len,
                        pad: 0,
                    }
                };
                self.data_done(out);
                Ok(())
            }
            HEADERS | CONTINUATION => {
                if f.stream == 0 {
                    return Err(H2Error::Malformed("HEADERS on stream 0"));
                }
                if f.ty == CONTINUATION && self.block_stream == 0 {
                    return Err(H2Error::Malformed("CONTINUATION without HEADERS"));
                }
                if self.block.len() + f.len as usize > MAX_HEADER_BLOCK + 256 {
                    return Err(H2Error::HeaderBlockTooLarge);
                }
                self.keep_payload(f.len, 0, out)
            }
            SETTINGS | RST_STREAM => {
                if f.len as usize > MAX_CONTROL_PAYLOAD {
                    return Err(H2Error::HeaderBlockTooLarge);
                }
                self.keep_payload(f.len, 0, out)
            }
            GOAWAY => {
                let keep = f.len.min(8);
                self.keep_payload(keep, f.len - keep, out)
            }
            _ => {
                self.state = if f.len > 0 {
                    State::Skip { left: f.len }
                } else {
                    State::Head
                };
                Ok(())
            }
        }
    }

    /// Keeps the next `n` payload bytes, then skips `skip`; a frame with nothing to keep is
    /// handled at once.
    fn keep_payload(&mut self, n: u32, skip: u32, out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        if n > 0 {
            self.state = State::Keep { left: n, skip };
            return Ok(());
        }
        self.state = if skip > 0 {
            State::Skip { left: skip }
        } else {
            State::Head
        };
        self.on_payload(out)
    }

    /// The kept payload of the current frame is complete.
    fn on_payload(&mut self, out: &mut Vec<H2Event>) -> Result<(), H2Error> {
        let f = self.frame;
        match f.ty {
            HEADERS | CONTINUATION => {
                let mut p = &self.keep[..];
                if f.ty == HEADERS {
                    let mut pad = 0;
                    if f.flags & PADDED != 0 {
                        let Some((&n, rest)) = p.split_first() else {
                            return Err(H2Error::Malformed("HEADERS padding too long"));
                        };
                        pad = n as usize;
                        p = rest;
                    }
                    if f.flags & PRIORITY != 0 {
                        p = p.get(5..).ok_or(H2Error::Malformed("HEADERS priority"))?;
                    }
                    let end = p
                        .len()
                        .checked_sub(pad)
                        .ok_or(H2Error::Malformed("HEADERS padding too long"))?;
                    p = &p[..end];
                    self.block_stream = f.stream;
                    self.block_end_stream = f.flags & END_STREAM != 0;
                }
                if self.block.len() + p.len() > MAX_HEADER_BLOCK {
                    return Err(H2Error::HeaderBlockTooLarge);
                }
                self.block.extend_from_slice(p);
                self.keep.fill(0);
                self.keep.clear();
                if f.flags & END_HEADERS != 0 {
                    let stream = self.block_stream;
                    self.block_stream = 0;
                    let block = self.decode_block();
                    self.block.fill(0);
                    self.block.clear();
                    out.push(H2Event::Headers {
                        stream,
                        block: Box::new(block?),
                    });
                    if self.block_end_stream {
                        out.push(H2Event::EndStream { stream });
                    }
                }
            }
            SETTINGS => {
                if f.stream != 0 || !f.len.is_multiple_of(6) {
                    return Err(H2Error::Malformed("SETTINGS"));
                }
                if f.flags & ACK == 0 {
                    let (mut table, mut frame) = (None, None);
                    for s in self.keep.chunks_exact(6) {
                        let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                        match u16::from_be_bytes([s[0], s[1]]) {
                            0x1 => table = Some(v),
                            0x5 => frame = Some(v),
                            _ => {}
                        }
                    }
                    out.push(H2Event::Settings {
                        header_table_size: table,
                        max_frame_size: frame,
                    });
                }
            }
            RST_STREAM => {
                if f.len != 4 || f.stream == 0 {
                    return Err(H2Error::Malformed("RST_STREAM"));
                }
                let k = &self.keep;
                out.push(H2Event::Reset {
                    stream: f.stream,
                    code: u32::from_be_bytes([k[0], k[1], k[2], k[3]]),
                });
            }
            GOAWAY => {
                if f.len < 8 {
                    return Err(H2Error::Malformed("GOAWAY"));
                }
                let k = &self.keep;
                out.push(H2Event::GoAway {
                    last_stream: u32::from_be_bytes([k[0], k[1], k[2], k[3]]) & 0x7fff_ffff,
                    code: u32::from_be_bytes([k[4], k[5], k[6], k[7]]),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Decodes the assembled block through the secret policy (see the module doc).
    fn decode_block(&mut self) -> Result<HeaderBlock, H2Error> {
        let mut b = HeaderBlock::default();
        let mut kept = 0usize;
        let mut dropped = 0u64;
        let mut path_param_cred = None;
        let res = self.hpack.decode_with_cb(&self.block, |n, v| {
            if let Some(pseudo) = n.strip_prefix(b":") {
                let text = || String::from_utf8_lossy(v.trim_ascii()).into_owned();
                match pseudo {
                    b"method" if b.method.is_none() => b.method = Some(text()),
                    b"path" if b.path.is_none() => {
                        let raw = String::from_utf8_lossy(v);
                        path_param_cred = query_credential(&raw);
                        b.path = Some(secrets::redact_query(&raw));
                    }
                    b"authority" if b.authority.is_none() => b.authority = Some(text()),
                    b"scheme" if b.scheme.is_none() => b.scheme = Some(text()),
                    b"status" => {
                        b.status = b
                            .status
                            .or_else(|| std::str::from_utf8(v).ok()?.trim().parse().ok())
                    }
                    _ => {}
                }
            } else if secrets::is_api_key_header(n) {
                if b.credential.is_none() {
                    b.credential = credential_id(Some(n), v);
                }
            } else if secrets::is_secret_header_bytes(n) {
                // Dropped, as the HTTP/1 head parser drops it.
            } else if b.headers.len() >= MAX_HEADERS || kept + n.len() + v.len() > MAX_DECODED_HEAD
            {
                dropped += 1;
            } else {
                kept += n.len() + v.len();
                b.headers.push((
                    String::from_utf8_lossy(n).to_ascii_lowercase(),
                    String::from_utf8_lossy(v.trim_ascii()).into_owned(),
                ));
            }
        });
        self.dropped_fields += dropped;
        let skipped = res.map_err(|_| H2Error::Hpack)?;
        self.dropped_fields += skipped as u64;
        b.credential = b.credential.or(path_param_cred);
        Ok(b)
    }
}

/// Whether `data`, the first bytes seen of a connection, are a server connection preface: a
/// SETTINGS frame (not an acknowledgement) on stream 0 whose length is a whole number of
/// settings, at most 16 of them. An HTTP/2 server over TLS sends it as soon as ALPN chose `h2`,
/// before it reads the client's preface, so a traced server may write it first.
pub fn looks_like_server_preface(data: &[u8]) -> bool {
    let Some(h) = data.get(..9) else {
        return false;
    };
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    h[3] == SETTINGS && h[4] == 0 && h[5..9] == [0; 4] && len.is_multiple_of(6) && len <= 96
}

/// One frame's bytes: a 9-byte header and `payload` (for tests, fuzzing and fixtures).
pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut v = vec![len[1], len[2], len[3], ty, flags];
    v.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// The fingerprint of the first API-key query parameter of a request target (`?key=...`).
fn query_credential(path: &str) -> Option<u64> {
    let query = path.split('#').next()?.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        if secrets::is_api_key_param(k.as_bytes()) {
            credential_id(None, v.as_bytes())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests;
