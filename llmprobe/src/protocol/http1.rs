//! Incremental HTTP/1.x message parser.
//!
//! One [`Http1Parser`] handles one direction of one connection (requests *or* responses). Bytes may
//! be fed in arbitrary pieces; the parser buffers only the message head (bounded by
//! `max_header_bytes`) and chunked-framing lines (bounded by 4 KiB). Body bytes are emitted as
//! [`HttpEvent::Body`] as soon as they arrive so streams can be observed in real time.
//!
//! Secret headers (the rule of [`crate::secrets::is_secret_header`]) are never copied into the
//! emitted heads, and the raw head buffer is zeroed once parsed.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::secrets::is_secret_header;

/// Default upper bound for a message head (request/status line plus headers), in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Maximum length of a chunk-size line or trailer line (without its line terminator).
const MAX_LINE_BYTES: usize = 4 * 1024;
/// Maximum length of a request method token.
const MAX_METHOD_LEN: usize = 32;
/// Header slots tried first; on overflow the head is re-parsed with a heap array.
const INLINE_HEADERS: usize = 128;
/// Absolute cap on the number of headers in one head.
const MAX_HEADERS: usize = 4096;
/// Cap on queued `expect_response` flags (pipelining depth); further flags are ignored.
const MAX_PENDING_RESPONSES: usize = 4096;
/// Head buffers whose capacity grew beyond this are released after each head.
const KEEP_HEAD_CAPACITY: usize = 8 * 1024;

/// Which direction a parser handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Client → server: request messages.
    Request,
    /// Server → client: response messages.
    Response,
}

/// A parsed request line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Request method, e.g. `POST`.
    pub method: String,
    /// Request target as sent (e.g. `/v1/chat/completions?x=1`).
    pub path: String,
    /// Headers in order: names lower-cased, secret headers dropped entirely, values lossy UTF-8
    /// with surrounding whitespace trimmed.
    pub headers: Vec<(String, String)>,
}

/// A parsed status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code, e.g. `200`.
    pub status: u16,
    /// Headers, same rules as [`RequestHead::headers`].
    pub headers: Vec<(String, String)>,
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl RequestHead {
    /// Value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

impl ResponseHead {
    /// Value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// Something the parser recognised in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpEvent {
    /// A complete request head (only from [`MessageKind::Request`] parsers).
    RequestHead(RequestHead),
    /// A complete final response head (only from [`MessageKind::Response`] parsers; 1xx interim
    /// responses other than 101 are not reported).
    ResponseHead(ResponseHead),
    /// Decoded body bytes (after de-chunking; Content-Encoding is NOT decoded here).
    Body(Bytes),
    /// `n` body bytes were lost in capture (see feed_gap); body framing continues past them.
    BodyGap(u64),
    /// The current message is complete.
    MessageEnd,
}

/// Why the parser gave up on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The stream does not start like HTTP/1.x (first line is not a request/status line). Caller stops tracking.
    NotHttp,
    /// Head larger than the limit.
    HeaderTooLarge,
    /// Malformed head / chunk framing / invalid Content-Length etc. (short reason for logs).
    Malformed(&'static str),
    /// A gap hit the head or chunk framing, so framing is lost.
    GapInFraming,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::NotHttp => f.write_str("not HTTP/1.x"),
            HttpError::HeaderTooLarge => f.write_str("HTTP head too large"),
            HttpError::Malformed(why) => write!(f, "malformed HTTP: {why}"),
            HttpError::GapInFraming => f.write_str("capture gap in HTTP framing"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Where inside a message body the parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Content-Length body with this many bytes left.
    Length(u64),
    /// Response body delimited by connection close.
    UntilClose,
    /// Reading a chunk-size line.
    ChunkSize,
    /// Inside chunk data with this many bytes left.
    ChunkData(u64),
    /// Expecting the CRLF (or bare LF) that follows chunk data.
    ChunkDataEnd { seen_cr: bool },
    /// Reading trailer lines after the last chunk, until an empty line.
    Trailers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for / accumulating a message head.
    Head,
    /// Inside a message body.
    Body(Body),
    /// After `101 Switching Protocols`: everything is ignored.
    Tunnel,
    /// Poisoned by an error.
    Failed(HttpError),
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Framing-relevant header facts of a head.
#[derive(Debug, Clone, Copy, Default)]
struct FramingHeaders {
    /// A non-empty Transfer-Encoding was present.
    te_present: bool,
    /// The last transfer-coding is `chunked`.
    chunked: bool,
    /// The (consistent) Content-Length, if present and no Transfer-Encoding.
    content_length: Option<u64>,
}

enum HeadOutcome {
    Partial,
    TooManyHeaders,
    Request(usize, RequestHead, FramingHeaders),
    Response(usize, ResponseHead, FramingHeaders),
}

/// Collects events for one feed call, coalescing adjacent body bytes into one `Body` event.
/// Collects the body bytes between two other events into one `Body` event: a slice of the
/// input itself when they are one run of it (the common case: one chunk, or part of a
/// Content-Length body, per piece), else a copy.
struct Sink<'a> {
    out: &'a mut Vec<HttpEvent>,
    /// The input, when the caller has it as `Bytes` (see [`Http1Parser::feed_bytes`]).
    src: Option<&'a Bytes>,
    /// The body so far, as a slice of `src`.
    whole: Option<Bytes>,
    body: Vec<u8>,
}

impl<'a> Sink<'a> {
    fn new(out: &'a mut Vec<HttpEvent>, src: Option<&'a Bytes>) -> Self {
        Sink {
            out,
            src,
            whole: None,
            body: Vec::new(),
        }
    }

    fn body(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.body.is_empty()
            && self.whole.is_none()
            && let Some(src) = self.src
        {
            let (start, at) = (src.as_ptr() as usize, data.as_ptr() as usize);
            if at >= start && at + data.len() <= start + src.len() {
                self.whole = Some(src.slice_ref(data));
                return;
            }
        }
        if let Some(w) = self.whole.take() {
            self.body.extend_from_slice(&w);
        }
        self.body.extend_from_slice(data);
    }

    fn event(&mut self, ev: HttpEvent) {
        self.flush();
        self.out.push(ev);
    }

    fn flush(&mut self) {
        if let Some(w) = self.whole.take() {
            self.out.push(HttpEvent::Body(w));
        } else if !self.body.is_empty() {
            let body = std::mem::take(&mut self.body);
            self.out.push(HttpEvent::Body(Bytes::from(body)));
        }
    }
}

/// Incremental parser for one direction of an HTTP/1.x connection.
#[derive(Debug)]
pub struct Http1Parser {
    kind: MessageKind,
    max_header_bytes: usize,
    state: State,
    /// Partial head bytes (never more than `max_header_bytes`).
    buf: Vec<u8>,
    /// Partial chunk-size / trailer line (never much more than `MAX_LINE_BYTES`).
    line: Vec<u8>,
    /// The start of the buffered head has been validated as a request/status line prefix.
    start_ok: bool,
    /// At least one HTTP head was parsed on this stream.
    seen_message: bool,
    /// FIFO of "the next response has no body" flags (responses only).
    no_body: VecDeque<bool>,
}

impl Http1Parser {
    /// Creates a parser for `kind` messages with [`DEFAULT_MAX_HEADER_BYTES`].
    pub fn new(kind: MessageKind) -> Self {
        Self::with_max_header_bytes(kind, DEFAULT_MAX_HEADER_BYTES)
    }

    /// Creates a parser for `kind` messages whose heads may be at most `max` bytes.
    pub fn with_max_header_bytes(kind: MessageKind, max: usize) -> Self {
        Http1Parser {
            kind,
            max_header_bytes: max,
            state: State::Head,
            buf: Vec::new(),
            line: Vec::new(),
            start_ok: false,
            seen_message: false,
            no_body: VecDeque::new(),
        }
    }

    /// Feed the next bytes of this direction; parsed events are appended to `out`.
    /// After an Err the parser is poisoned: further feeds return the same error.
    ///
    /// Events appended before an error was detected (in the same call) are valid.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<HttpEvent>) -> Result<(), HttpError> {
        self.feed_from(data, None, out)
    }

    /// [`Http1Parser::feed`] for input held as `Bytes`: body events are slices of it (no copy)
    /// wherever the body bytes between two events are one run of the input.
    pub fn feed_bytes(&mut self, data: &Bytes, out: &mut Vec<HttpEvent>) -> Result<(), HttpError> {
        self.feed_from(data, Some(data), out)
    }

    fn feed_from(
        &mut self,
        data: &[u8],
        src: Option<&Bytes>,
        out: &mut Vec<HttpEvent>,
    ) -> Result<(), HttpError> {
        let mut sink = Sink::new(out, src);
        let res = self.feed_inner(data, &mut sink);
        sink.flush();
        if let Err(e) = &res {
            self.fail(e.clone());
        }
        res
    }

    /// `n` bytes of this direction were lost. Inside a Content-Length body or inside a chunk's data this
    /// emits BodyGap and keeps framing (possibly ending the message: emit MessageEnd when the lost bytes finish it); elsewhere returns Err(GapInFraming).
    ///
    /// A gap inside a close-delimited response body also just emits `BodyGap`; a gap after a
    /// `101` upgrade is ignored. A gap that runs past the end of a body emits the partial
    /// `BodyGap` (and `MessageEnd` for Content-Length bodies) and then fails with `GapInFraming`.
    pub fn feed_gap(&mut self, n: u64, out: &mut Vec<HttpEvent>) -> Result<(), HttpError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        if n == 0 {
            return Ok(());
        }
        let res = match self.state {
            State::Failed(_) | State::Tunnel => Ok(()),
            State::Head => Err(HttpError::GapInFraming),
            State::Body(Body::UntilClose) => {
                out.push(HttpEvent::BodyGap(n));
                Ok(())
            }
            State::Body(Body::Length(rem)) => {
                out.push(HttpEvent::BodyGap(n.min(rem)));
                if n < rem {
                    self.state = State::Body(Body::Length(rem - n));
                    Ok(())
                } else {
                    self.end_message_into(out);
                    if n == rem {
                        Ok(())
                    } else {
                        Err(HttpError::GapInFraming)
                    }
                }
            }
            State::Body(Body::ChunkData(rem)) => {
                out.push(HttpEvent::BodyGap(n.min(rem)));
                if n < rem {
                    self.state = State::Body(Body::ChunkData(rem - n));
                    Ok(())
                } else if n == rem {
                    self.state = State::Body(Body::ChunkDataEnd { seen_cr: false });
                    Ok(())
                } else {
                    Err(HttpError::GapInFraming)
                }
            }
            State::Body(Body::ChunkSize | Body::ChunkDataEnd { .. } | Body::Trailers) => {
                Err(HttpError::GapInFraming)
            }
        };
        if let Err(e) = &res {
            self.fail(e.clone());
        }
        res
    }

    /// The connection closed. A response body delimited by close ends here (emit MessageEnd).
    /// Returns true if a message was in progress and is incomplete (head partially received, or body not finished), false otherwise.
    ///
    /// Returns false for a poisoned parser (its error was already reported). Afterwards the parser
    /// is reset to its initial state (a poisoned parser stays poisoned).
    pub fn finish(&mut self, out: &mut Vec<HttpEvent>) -> bool {
        let incomplete = match self.state {
            State::Failed(_) => return false,
            State::Tunnel => false,
            State::Head => !self.buf.is_empty(),
            State::Body(Body::UntilClose) => {
                out.push(HttpEvent::MessageEnd);
                false
            }
            State::Body(_) => true,
        };
        let max = self.max_header_bytes;
        self.clear_head();
        *self = Self::with_max_header_bytes(self.kind, max);
        incomplete
    }

    /// For Response parsers: announces the next outstanding request, in request order.
    ///
    /// `no_body` is true when that request was `HEAD` (or `CONNECT`), so its response has no body.
    /// Call it once per request; flags are kept in a FIFO so pipelined requests work. Each final
    /// (non-1xx) response consumes one flag; without a queued flag a response is assumed to have a
    /// body as its headers say. Ignored by request parsers. At most 4096 flags are queued; further
    /// ones are dropped.
    pub fn expect_response(&mut self, no_body: bool) {
        if self.kind == MessageKind::Response && self.no_body.len() < MAX_PENDING_RESPONSES {
            self.no_body.push_back(no_body);
        }
    }

    /// True while between messages (no partial head or body buffered).
    ///
    /// Also true after a `101` upgrade (the parser ignores everything); false once poisoned.
    pub fn is_idle(&self) -> bool {
        match self.state {
            State::Head => self.buf.is_empty(),
            State::Tunnel => true,
            State::Body(_) | State::Failed(_) => false,
        }
    }

    /// True while the next bytes belong to a message head (between messages, or inside a head
    /// not yet complete): false inside a body or trailers, after an upgrade, once poisoned.
    pub fn expects_head(&self) -> bool {
        self.state == State::Head
    }

    /// Bytes currently buffered inside the parser (for memory limits).
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() + self.line.len()
    }

    fn fail(&mut self, e: HttpError) {
        self.clear_head();
        self.line = Vec::new();
        self.state = State::Failed(e);
    }

    /// Zeroes (the head may contain secrets) and empties the head buffer.
    fn clear_head(&mut self) {
        self.buf.fill(0);
        self.buf.clear();
        if self.buf.capacity() > KEEP_HEAD_CAPACITY {
            self.buf = Vec::new();
        }
        self.start_ok = false;
    }

    fn not_http(&self) -> HttpError {
        if self.seen_message {
            HttpError::Malformed("invalid start of message")
        } else {
            HttpError::NotHttp
        }
    }

    fn end_message_into(&mut self, out: &mut Vec<HttpEvent>) {
        out.push(HttpEvent::MessageEnd);
        self.state = State::Head;
    }

    fn end_message(&mut self, sink: &mut Sink<'_>) {
        sink.event(HttpEvent::MessageEnd);
        self.state = State::Head;
    }

    fn feed_inner(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), HttpError> {
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            let used = match self.state {
                State::Failed(ref e) => return Err(e.clone()),
                State::Tunnel => return Ok(()),
                State::Head => self.feed_head(rest, sink)?,
                State::Body(body) => self.feed_body(body, rest, sink)?,
            };
            if used == 0 {
                // Defensive: every step must consume input, otherwise we would spin.
                return Err(HttpError::Malformed("parser made no progress"));
            }
            pos += used;
        }
        Ok(())
    }

    /// Accumulates head bytes; returns how many bytes of `rest` were consumed.
    fn feed_head(&mut self, rest: &[u8], sink: &mut Sink<'_>) -> Result<usize, HttpError> {
        let mut skipped = 0;
        if self.buf.is_empty() {
            // Tolerate empty lines before a message (RFC 9112 §2.2).
            skipped = rest
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if skipped == rest.len() {
                return Ok(skipped);
            }
        }
        let rest = &rest[skipped..];
        let old = self.buf.len();
        let room = self.max_header_bytes.saturating_sub(old);
        if room == 0 {
            return Err(HttpError::HeaderTooLarge);
        }
        // Never copy body bytes of this message into the head buffer: stop at the first empty line.
        let head_end = find_head_end(&self.buf[old.saturating_sub(2)..], rest);
        let take = head_end.unwrap_or(rest.len()).min(room);
        self.buf.extend_from_slice(&rest[..take]);
        if !self.start_ok {
            self.check_start()?;
        }
        if head_end.is_some_and(|e| e <= take)
            && let Some(head_len) = self.try_parse_head(sink)?
        {
            let consumed = head_len
                .checked_sub(old)
                .filter(|c| *c > 0 && *c <= take)
                .ok_or(HttpError::Malformed("inconsistent head length"))?;
            return Ok(skipped + consumed);
        }
        if self.buf.len() >= self.max_header_bytes {
            return Err(HttpError::HeaderTooLarge);
        }
        Ok(skipped + take)
    }

    /// Validates that the buffered head can start a request/status line.
    fn check_start(&mut self) -> Result<(), HttpError> {
        let verdict = match self.kind {
            MessageKind::Request => request_start(&self.buf),
            MessageKind::Response => response_start(&self.buf),
        };
        match verdict {
            Start::Undecided => Ok(()),
            Start::Ok => {
                self.start_ok = true;
                Ok(())
            }
            Start::Bad => Err(self.not_http()),
        }
    }

    /// Tries to parse the buffered head. On success emits events, sets the body state, clears the
    /// buffer and returns the head length.
    fn try_parse_head(&mut self, sink: &mut Sink<'_>) -> Result<Option<usize>, HttpError> {
        let mut outcome = {
            let mut headers = [httparse::EMPTY_HEADER; INLINE_HEADERS];
            parse_head(self.kind, &self.buf, &mut headers)
        };
        if let Ok(HeadOutcome::TooManyHeaders) = outcome {
            let lines = self.buf.iter().filter(|&&b| b == b'\n').count() + 1;
            if lines > MAX_HEADERS {
                return Err(HttpError::Malformed("too many headers"));
            }
            let mut headers = vec![httparse::EMPTY_HEADER; lines];
            outcome = parse_head(self.kind, &self.buf, &mut headers);
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(HttpError::NotHttp) => return Err(self.not_http()),
            Err(e) => return Err(e),
        };
        match outcome {
            HeadOutcome::Partial => Ok(None),
            HeadOutcome::TooManyHeaders => Err(HttpError::Malformed("too many headers")),
            HeadOutcome::Request(n, head, fh) => {
                self.clear_head();
                self.seen_message = true;
                let framing = if fh.te_present {
                    if !fh.chunked {
                        return Err(HttpError::Malformed(
                            "request transfer-encoding is not chunked",
                        ));
                    }
                    Framing::Chunked
                } else {
                    fh.content_length.map_or(Framing::None, Framing::Length)
                };
                sink.event(HttpEvent::RequestHead(head));
                self.start_body(framing, sink);
                Ok(Some(n))
            }
            HeadOutcome::Response(n, head, fh) => {
                self.clear_head();
                self.seen_message = true;
                let status = head.status;
                if (100..200).contains(&status) && status != 101 {
                    // Interim response: consumed silently, the final response follows.
                    return Ok(Some(n));
                }
                let no_body = self.no_body.pop_front().unwrap_or(false);
                sink.event(HttpEvent::ResponseHead(head));
                if status == 101 {
                    sink.event(HttpEvent::MessageEnd);
                    self.state = State::Tunnel;
                    return Ok(Some(n));
                }
                let framing = if no_body || status == 204 || status == 304 {
                    Framing::None
                } else if fh.te_present {
                    if fh.chunked {
                        Framing::Chunked
                    } else {
                        Framing::UntilClose
                    }
                } else {
                    fh.content_length
                        .map_or(Framing::UntilClose, Framing::Length)
                };
                self.start_body(framing, sink);
                Ok(Some(n))
            }
        }
    }

    fn start_body(&mut self, framing: Framing, sink: &mut Sink<'_>) {
        match framing {
            Framing::None | Framing::Length(0) => self.end_message(sink),
            Framing::Length(n) => self.state = State::Body(Body::Length(n)),
            Framing::Chunked => self.state = State::Body(Body::ChunkSize),
            Framing::UntilClose => self.state = State::Body(Body::UntilClose),
        }
    }

    /// Consumes body bytes; returns how many bytes of `rest` were consumed.
    fn feed_body(
        &mut self,
        body: Body,
        rest: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<usize, HttpError> {
        match body {
            Body::UntilClose => {
                sink.body(rest);
                Ok(rest.len())
            }
            Body::Length(rem) | Body::ChunkData(rem) => {
                let take = usize::try_from(rem).map_or(rest.len(), |r| r.min(rest.len()));
                sink.body(&rest[..take]);
                let left = rem - take as u64;
                self.state = match (body, left) {
                    (Body::Length(_), 0) => {
                        self.end_message(sink);
                        State::Head
                    }
                    (Body::Length(_), l) => State::Body(Body::Length(l)),
                    (_, 0) => State::Body(Body::ChunkDataEnd { seen_cr: false }),
                    (_, l) => State::Body(Body::ChunkData(l)),
                };
                Ok(take)
            }
            Body::ChunkDataEnd { seen_cr } => match rest.first() {
                Some(b'\n') => {
                    self.state = State::Body(Body::ChunkSize);
                    Ok(1)
                }
                Some(b'\r') if !seen_cr => {
                    self.state = State::Body(Body::ChunkDataEnd { seen_cr: true });
                    Ok(1)
                }
                _ => Err(HttpError::Malformed("missing CRLF after chunk data")),
            },
            Body::ChunkSize | Body::Trailers => {
                let (used, complete) = self.read_line(rest)?;
                if complete {
                    let line = std::mem::take(&mut self.line);
                    let res = self.process_line(body, &line, sink);
                    self.line = line;
                    self.line.clear();
                    res?;
                }
                Ok(used)
            }
        }
    }

    fn process_line(
        &mut self,
        body: Body,
        line: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<(), HttpError> {
        if body == Body::ChunkSize {
            let size = parse_chunk_size(line)?;
            self.state = if size == 0 {
                State::Body(Body::Trailers)
            } else {
                State::Body(Body::ChunkData(size))
            };
        } else if strip_eol(line).is_empty() {
            // Trailer section ends with an empty line; trailer fields are discarded.
            self.end_message(sink);
        }
        Ok(())
    }

    /// Appends bytes of a framing line to `self.line`; returns (consumed, line complete).
    fn read_line(&mut self, rest: &[u8]) -> Result<(usize, bool), HttpError> {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if self.line.len() + i + 1 > MAX_LINE_BYTES + 2 {
                    return Err(HttpError::Malformed("chunk framing line too long"));
                }
                self.line.extend_from_slice(&rest[..=i]);
                Ok((i + 1, true))
            }
            None => {
                if self.line.len() + rest.len() > MAX_LINE_BYTES + 1 {
                    return Err(HttpError::Malformed("chunk framing line too long"));
                }
                self.line.extend_from_slice(rest);
                Ok((rest.len(), false))
            }
        }
    }
}

/// Result of checking the first bytes of a head.
enum Start {
    Undecided,
    Ok,
    Bad,
}

fn request_start(b: &[u8]) -> Start {
    for (i, &c) in b.iter().enumerate() {
        if c == b' ' {
            if i == 0 {
                return Start::Bad;
            }
            // "PRI * HTTP/2.0" is the HTTP/2 connection preface.
            const H2: &[u8] = b"PRI * HTTP/2";
            let n = b.len().min(H2.len());
            if b[..n] != H2[..n] {
                return Start::Ok;
            }
            return if n == H2.len() {
                Start::Bad
            } else {
                Start::Undecided
            };
        }
        let ok = c.is_ascii_uppercase() || (i > 0 && (c == b'-' || c == b'_'));
        if !ok || i >= MAX_METHOD_LEN {
            return Start::Bad;
        }
    }
    Start::Undecided
}

fn response_start(b: &[u8]) -> Start {
    const P: &[u8] = b"HTTP/1.";
    let n = b.len().min(P.len());
    if b[..n] != P[..n] {
        Start::Bad
    } else if n == P.len() {
        Start::Ok
    } else {
        Start::Undecided
    }
}

/// Whether `data`, the first bytes seen of a connection, look like the middle of an HTTP/1.x
/// message a stream was joined in (probes attached while the connection was busy): a chunk-size
/// line (`1a2f\r\n`, `\r\n` between chunks), an SSE line (`data:`, `event:`, `id:`, `retry:`,
/// `:`), or JSON (`{`, `[`). Never true of a request or status line, nor of binary data; a
/// text protocol that merely resembles these is muted once its skip budget is spent.
pub fn looks_like_message_middle(data: &[u8]) -> bool {
    let head = &data[..data.len().min(64)];
    match head.first() {
        None => false,
        Some(b'{' | b'[' | b':') => true,
        Some(b'\r') => head.get(1) == Some(&b'\n'),
        Some(_) => {
            const SSE: [&[u8]; 4] = [b"data:", b"event:", b"id:", b"retry:"];
            if SSE.iter().any(|p| head.starts_with(p)) {
                return true;
            }
            // A chunk-size line: 1 to 8 hex digits, an optional extension, CRLF.
            let digits = head.iter().take_while(|c| c.is_ascii_hexdigit()).count();
            if digits == 0 || digits > 8 {
                return false;
            }
            let rest = &head[digits..];
            rest.starts_with(b"\r\n")
                || (rest.first() == Some(&b';')
                    && rest.iter().position(|&c| c == b'\r').is_some_and(|i| {
                        rest.get(i + 1) == Some(&b'\n')
                            && rest[..i].iter().all(|c| c.is_ascii_graphic() || *c == b' ')
                    }))
        }
    }
}

/// Request methods [`starts_with_message_line`] accepts.
const METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"OPTIONS", b"CONNECT", b"TRACE",
];

/// Whether `data` opens with a whole HTTP/1.x request line (`METHOD SP target SP HTTP/1.d`) or
/// status line (`HTTP/1.d SP ddd`), ended by a line break (looked for in the first 8 KiB).
/// Known methods only: the rest of a secret glued to the next request line
/// (`<tail>POST /x HTTP/1.1`) must not pass for one.
pub fn starts_with_message_line(data: &[u8]) -> bool {
    let Some(nl) = memchr::memchr(b'\n', &data[..data.len().min(8192)]) else {
        return false;
    };
    let line = data[..nl].strip_suffix(b"\r").unwrap_or(&data[..nl]);
    if is_status_line(line) {
        return true;
    }
    let version = |v: &[u8]| v.len() == 8 && v.starts_with(b"HTTP/1.") && v[7].is_ascii_digit();
    let mut parts = line.split(|&c| c == b' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(v), None) => {
            METHODS.contains(&method)
                && !target.is_empty()
                && target.iter().all(|&c| c.is_ascii_graphic())
                && version(v)
        }
        _ => false,
    }
}

/// Where the next HTTP/1.x message starts in `data`, bytes that began in the middle of a
/// message ([`looks_like_message_middle`]): the first whole request or status line
/// ([`starts_with_message_line`]) right after a line feed (a chunked body's last chunk, an SSE
/// event's end). The tail of one message and the start of the next can share a chunk
/// (pipelined requests, a coalesced write): the skip ends there instead of losing the next
/// call. A message after a body delimited by its length, with no line break, is not found.
pub fn message_start_within(data: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', data)
        .map(|i| i + 1)
        .find(|&s| starts_with_message_line(&data[s..]))
}

/// Whether `data` can be the start of an HTTP/1.x response: its first bytes (up to seven)
/// agree with `HTTP/1.`. Decided from the first byte on, so it tells which side of a connection
/// answers from the first bytes seen. The one copy of the check: the parser's start check, the
/// tracker's request direction and the masker's [`is_status_line`] all come down to it.
pub fn looks_like_response(data: &[u8]) -> bool {
    !matches!(response_start(data), Start::Bad)
}

/// Whether `line` (its line end removed) is a whole HTTP/1.x status line: `HTTP/1.d`, a space,
/// three digits, then nothing or a space and a reason.
pub fn is_status_line(line: &[u8]) -> bool {
    matches!(response_start(line), Start::Ok)
        && line.len() >= 12
        && line[7].is_ascii_digit()
        && line[8] == b' '
        && line[9..12].iter().all(u8::is_ascii_digit)
        && line.get(12).is_none_or(|&c| c == b' ')
}

/// Finds the first empty line (`\n\n` or `\n\r\n`) in `prev ++ new`, where `prev` is the tail
/// (up to 2 bytes) of the already buffered head. Returns how many bytes of `new` end it.
fn find_head_end(prev: &[u8], new: &[u8]) -> Option<usize> {
    // Byte `back` positions before new[i], looking into `prev` when needed.
    let before = |i: usize, back: usize| -> Option<u8> {
        if i >= back {
            new.get(i - back).copied()
        } else {
            prev.len()
                .checked_sub(back - i)
                .and_then(|j| prev.get(j).copied())
        }
    };
    new.iter().enumerate().find_map(|(i, &b)| {
        let end = b == b'\n'
            && (before(i, 1) == Some(b'\n')
                || (before(i, 1) == Some(b'\r') && before(i, 2) == Some(b'\n')));
        end.then_some(i + 1)
    })
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if is_ows(*first) {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if is_ows(*last) {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let line = strip_eol(line);
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = trim_ows(size);
    if size.is_empty() {
        return Err(HttpError::Malformed("empty chunk size"));
    }
    let mut n: u64 = 0;
    for &c in size {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(HttpError::Malformed("invalid chunk size")),
        };
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(HttpError::Malformed("chunk size overflow"))?;
    }
    Ok(n)
}

fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let mut result: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = trim_ows(part);
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(HttpError::Malformed("invalid content-length"));
        }
        let mut n: u64 = 0;
        for &c in part {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(c - b'0')))
                .ok_or(HttpError::Malformed("content-length overflow"))?;
        }
        match result {
            Some(prev) if prev != n => {
                return Err(HttpError::Malformed("conflicting content-length"));
            }
            _ => result = Some(n),
        }
    }
    result.ok_or(HttpError::Malformed("invalid content-length"))
}

fn framing_headers(headers: &[httparse::Header<'_>]) -> Result<FramingHeaders, HttpError> {
    let mut fh = FramingHeaders::default();
    let mut last_coding: Option<&[u8]> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in h.value.split(|&b| b == b',') {
                let coding = trim_ows(coding);
                if !coding.is_empty() {
                    last_coding = Some(coding);
                }
            }
        }
    }
    if let Some(coding) = last_coding {
        fh.te_present = true;
        fh.chunked = coding.eq_ignore_ascii_case(b"chunked");
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
        return Ok(fh);
    }
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)?;
            match fh.content_length {
                Some(prev) if prev != n => {
                    return Err(HttpError::Malformed("conflicting content-length"));
                }
                _ => fh.content_length = Some(n),
            }
        }
    }
    Ok(fh)
}

/// Copies headers, lower-casing names and dropping secret headers.
fn copy_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|h| !h.name.is_empty() && !is_secret_header(h.name))
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(trim_ows(h.value)).into_owned(),
            )
        })
        .collect()
}

fn map_httparse_err(e: httparse::Error) -> HttpError {
    match e {
        httparse::Error::HeaderName => HttpError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HttpError::Malformed("invalid header value"),
        httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
        httparse::Error::Status => HttpError::Malformed("invalid status code"),
        httparse::Error::Token => HttpError::Malformed("invalid token"),
        httparse::Error::TooManyHeaders => HttpError::Malformed("too many headers"),
        // Not HTTP/1.x (e.g. HTTP/2 preface); the caller maps this to NotHttp or Malformed.
        httparse::Error::Version => HttpError::NotHttp,
    }
}

fn parse_head<'b>(
    kind: MessageKind,
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
) -> Result<HeadOutcome, HttpError> {
    let mut cfg = httparse::ParserConfig::default();
    match kind {
        MessageKind::Request => {
            cfg.allow_multiple_spaces_in_request_line_delimiters(true)
                .ignore_invalid_headers_in_requests(true);
            let mut req = httparse::Request::new(headers);
            match cfg.parse_request(&mut req, buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let fh = framing_headers(req.headers)?;
                    let head = RequestHead {
                        method: req.method.unwrap_or_default().to_owned(),
                        path: req.path.unwrap_or_default().to_owned(),
                        headers: copy_headers(req.headers),
                    };
                    Ok(HeadOutcome::Request(n, head, fh))
                }
                Ok(httparse::Status::Partial) => Ok(HeadOutcome::Partial),
                Err(httparse::Error::TooManyHeaders) => Ok(HeadOutcome::TooManyHeaders),
                Err(e) => Err(map_httparse_err(e)),
            }
        }
        MessageKind::Response => {
            cfg.allow_spaces_after_header_name_in_responses(true)
                .allow_obsolete_multiline_headers_in_responses(true)
                .allow_multiple_spaces_in_response_status_delimiters(true)
                .ignore_invalid_headers_in_responses(true);
            let mut resp = httparse::Response::new(headers);
            match cfg.parse_response(&mut resp, buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp
                        .code
                        .ok_or(HttpError::Malformed("missing status code"))?;
                    let fh = framing_headers(resp.headers)?;
                    let head = ResponseHead {
                        status,
                        headers: copy_headers(resp.headers),
                    };
                    Ok(HeadOutcome::Response(n, head, fh))
                }
                Ok(httparse::Status::Partial) => Ok(HeadOutcome::Partial),
                Err(httparse::Error::TooManyHeaders) => Ok(HeadOutcome::TooManyHeaders),
                Err(e) => Err(map_httparse_err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_message_start_is_found_after_a_line_feed_only() {
        let req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\n\r\n";
        let mut a = b"0\r\n\r\n".to_vec();
        a.extend_from_slice(req);
        assert_eq!(message_start_within(&a), Some(5));
        let mut b = b"data: [DONE]\n\n".to_vec();
        b.extend_from_slice(resp);
        assert_eq!(message_start_within(&b), Some(14));
        // No line feed before it, an unknown method, or a line not yet whole: not found.
        let mut c = b"{\"a\":1}".to_vec();
        c.extend_from_slice(req);
        assert_eq!(message_start_within(&c), None);
        assert_eq!(message_start_within(b"x\nFETCH / HTTP/1.1\r\n"), None);
        assert_eq!(message_start_within(b"x\nPOST /v1/chat HTTP/1."), None);
        assert_eq!(message_start_within(b""), None);
    }
    use super::*;

    /// Feeds `pieces` in order; returns all events and the first error (feeding stops there).
    fn run(p: &mut Http1Parser, pieces: &[&[u8]]) -> (Vec<HttpEvent>, Result<(), HttpError>) {
        let mut out = Vec::new();
        for piece in pieces {
            if let Err(e) = p.feed(piece, &mut out) {
                return (out, Err(e));
            }
        }
        (out, Ok(()))
    }

    /// Merges adjacent Body events so differently split inputs can be compared.
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

    fn whole(kind: MessageKind, data: &[u8]) -> Vec<HttpEvent> {
        let mut p = Http1Parser::new(kind);
        let (ev, r) = run(&mut p, &[data]);
        assert_eq!(r, Ok(()));
        ev
    }

    fn body(s: &str) -> HttpEvent {
        HttpEvent::Body(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn req_head(method: &str, path: &str, headers: &[(&str, &str)]) -> HttpEvent {
        HttpEvent::RequestHead(RequestHead {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
    }

    fn resp_head(status: u16, headers: &[(&str, &str)]) -> HttpEvent {
        HttpEvent::ResponseHead(ResponseHead {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
    }

    const REQS: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-secret\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"model\":\"gpt\"}\n\
POST /v1/messages HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n\
GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n";

    const RESPS: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nSet-Cookie: s=1\r\n\r\n\
16 ; name=value\r\ndata: {\"x\":\"\xe4\xbd\xa0\xe5\xa5\xbd\"}\n\n\r\n  c \r\ndata: [DONE]\r\n0\r\nX-Trailer: t\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc\
HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n\r\nuntil close";

    fn expected_reqs() -> Vec<HttpEvent> {
        vec![
            req_head(
                "POST",
                "/v1/chat/completions",
                &[
                    ("host", "api.openai.com"),
                    ("content-type", "application/json"),
                    ("content-length", "16"),
                ],
            ),
            body("{\"model\":\"gpt\"}\n"),
            HttpEvent::MessageEnd,
            req_head(
                "POST",
                "/v1/messages",
                &[("host", "a"), ("transfer-encoding", "chunked")],
            ),
            body("hello world!"),
            HttpEvent::MessageEnd,
            req_head("GET", "/v1/models", &[("host", "a")]),
            HttpEvent::MessageEnd,
        ]
    }

    fn expected_resps() -> Vec<HttpEvent> {
        vec![
            resp_head(
                200,
                &[
                    ("content-type", "text/event-stream"),
                    ("transfer-encoding", "chunked"),
                ],
            ),
            body("data: {\"x\":\"你好\"}\n\ndata: [DONE]"),
            HttpEvent::MessageEnd,
            resp_head(204, &[]),
            HttpEvent::MessageEnd,
            resp_head(200, &[("content-length", "3")]),
            body("abc"),
            HttpEvent::MessageEnd,
            resp_head(404, &[("content-type", "text/plain")]),
            body("until close"),
            HttpEvent::MessageEnd,
        ]
    }

    fn run_split(kind: MessageKind, pieces: &[&[u8]]) -> Vec<HttpEvent> {
        let mut p = Http1Parser::new(kind);
        let (mut ev, r) = run(&mut p, pieces);
        assert_eq!(
            r,
            Ok(()),
            "pieces {:?}",
            pieces
                .iter()
                .map(|p| p.escape_ascii().to_string())
                .collect::<Vec<_>>()
        );
        assert!(!p.finish(&mut ev));
        coalesce(ev)
    }

    #[test]
    fn whole_streams_parse() {
        assert_eq!(run_split(MessageKind::Request, &[REQS]), expected_reqs());
        assert_eq!(run_split(MessageKind::Response, &[RESPS]), expected_resps());
    }

    #[test]
    fn split_at_every_offset() {
        for (kind, data, expected) in [
            (MessageKind::Request, REQS, expected_reqs()),
            (MessageKind::Response, RESPS, expected_resps()),
        ] {
            let bytes: Vec<&[u8]> = data.chunks(1).collect();
            assert_eq!(run_split(kind, &bytes), expected, "byte-by-byte");
            for i in 0..=data.len() {
                let (a, b) = data.split_at(i);
                assert_eq!(run_split(kind, &[a, b]), expected, "split at {i}");
            }
            // Three pieces at a few strides for extra coverage.
            for i in (0..data.len()).step_by(7) {
                for j in (i..data.len()).step_by(11) {
                    let pieces = [&data[..i], &data[i..j], &data[j..]];
                    assert_eq!(run_split(kind, &pieces), expected, "split at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn body_is_streamed_without_waiting() {
        let mut p = Http1Parser::new(MessageKind::Response);
        let mut out = Vec::new();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab";
        assert_eq!(p.feed(head, &mut out), Ok(()));
        assert_eq!(
            out,
            vec![resp_head(200, &[("content-length", "10")]), body("ab")]
        );
        out.clear();
        assert_eq!(p.feed(b"5\r\nhel", &mut out), Ok(()));
        assert_eq!(out, vec![body("5\r\nhel")]);
        assert_eq!(p.buffered_bytes(), 0);
        assert!(!p.is_idle());
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
4;a=b;c=\"d\"\r\nWiki\r\n\t5 ; x\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n000\r\nExpires: never\r\nX-Sum: 1\r\n\r\n";
        let ev = coalesce(whole(MessageKind::Response, data));
        assert_eq!(
            ev,
            vec![
                resp_head(200, &[("transfer-encoding", "gzip, Chunked")]),
                body("Wikipedia in\r\n\r\nchunks."),
                HttpEvent::MessageEnd
            ]
        );
    }

    #[test]
    fn chunked_bare_lf_tolerated() {
        let data = b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n";
        let ev = coalesce(whole(MessageKind::Response, data));
        assert_eq!(
            ev,
            vec![
                resp_head(200, &[("transfer-encoding", "chunked")]),
                body("abc"),
                HttpEvent::MessageEnd
            ]
        );
    }

    #[test]
    fn chunk_events_coalesced_within_feed() {
        let data =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n1\r\nc\r\n";
        let ev = whole(MessageKind::Response, data);
        assert_eq!(
            ev,
            vec![
                resp_head(200, &[("transfer-encoding", "chunked")]),
                body("abc")
            ]
        );
    }

    #[test]
    fn keep_alive_three_exchanges() {
        let reqs = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiPOST /b HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
        let resps = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nbbHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nc\r\n0\r\n\r\n";
        let ev = whole(MessageKind::Request, reqs);
        let paths: Vec<&str> = ev
            .iter()
            .filter_map(|e| match e {
                HttpEvent::RequestHead(h) => Some(h.path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_eq!(
            ev.iter().filter(|e| **e == HttpEvent::MessageEnd).count(),
            3
        );
        let ev = coalesce(whole(MessageKind::Response, resps));
        assert_eq!(
            ev,
            vec![
                resp_head(200, &[("content-length", "1")]),
                body("a"),
                HttpEvent::MessageEnd,
                resp_head(201, &[("content-length", "2")]),
                body("bb"),
                HttpEvent::MessageEnd,
                resp_head(200, &[("transfer-encoding", "chunked")]),
                body("c"),
                HttpEvent::MessageEnd,
            ]
        );
    }

    #[test]
    fn head_response_via_expect_response() {
        let mut p = Http1Parser::new(MessageKind::Response);
        p.expect_response(true); // HEAD
        p.expect_response(false); // GET
        let data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (ev, r) = run(&mut p, &[data]);
        assert_eq!(r, Ok(()));
        assert_eq!(
            ev,
            vec![
                resp_head(200, &[("content-length", "100")]),
                HttpEvent::MessageEnd,
                resp_head(200, &[("content-length", "2")]),
                body("ok"),
                HttpEvent::MessageEnd,
            ]
        );
        assert!(p.is_idle());
    }

    #[test]
    fn continue_100_then_200_keeps_flag() {
        let mut p = Http1Parser::new(MessageKind::Response);
        p.expect_response(false);
        p.expect_response(true);
        let data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        let (ev, r) = run(&mut p, &[data]);
        assert_eq!(r, Ok(()));
        assert_eq!(
            ev,
            vec![
                resp_head(200, &[("content-length", "2")]),
                body("hi"),
                HttpEvent::MessageEnd,
                resp_head(200, &[("content-length", "9")]),
                HttpEvent::MessageEnd,
            ]
        );
    }

    #[test]
    fn upgrade_101_becomes_passthrough() {
        let mut p = Http1Parser::new(MessageKind::Response);
        let data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";
        let (ev, r) = run(
            &mut p,
            &[data, b"\x00\xff garbage", b"HTTP/1.1 200 OK\r\n\r\n"],
        );
        assert_eq!(r, Ok(()));
        assert_eq!(
            ev,
            vec![
                resp_head(101, &[("upgrade", "websocket"), ("connection", "Upgrade")]),
                HttpEvent::MessageEnd
            ]
        );
        let mut out = Vec::new();
        assert_eq!(p.feed_gap(100, &mut out), Ok(()));
        assert!(out.is_empty());
        assert!(p.is_idle());
        assert!(!p.finish(&mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn read_until_close_body() {
        let mut p = Http1Parser::new(MessageKind::Response);
        let (mut ev, r) = run(
            &mut p,
            &[
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ",
                b"second",
            ],
        );
        assert_eq!(r, Ok(()));
        assert_eq!(
            ev,
            vec![
                resp_head(200, &[("content-type", "text/plain")]),
                body("first "),
                body("second")
            ]
        );
        assert!(!p.is_idle());
        ev.clear();
        assert!(!p.finish(&mut ev));
        assert_eq!(ev, vec![HttpEvent::MessageEnd]);
        assert!(p.is_idle());
    }

    #[test]
    fn response_te_not_chunked_reads_until_close() {
        let mut p = Http1Parser::new(MessageKind::Response);
        let (mut ev, r) = run(
            &mut p,
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nabcdef"],
        );
        assert_eq!(r, Ok(()));
        assert!(!p.finish(&mut ev));
        assert_eq!(ev.last(), Some(&HttpEvent::MessageEnd));
        assert_eq!(ev.get(1), Some(&body("abcdef")));
    }

    #[test]
    fn gap_inside_content_length_body() {
        let mut p = Http1Parser::new(MessageKind::Request);
        let mut out = Vec::new();
        assert_eq!(
            p.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab", &mut out),
            Ok(())
        );
        assert_eq!(p.feed_gap(5, &mut out), Ok(()));
        assert_eq!(p.feed(b"cd", &mut out), Ok(()));
        assert_eq!(p.feed_gap(1, &mut out), Ok(()));
        assert_eq!(p.feed(b"GET /next HTTP/1.1\r\n\r\n", &mut out), Ok(()));
        assert_eq!(
            out,
            vec![
                req_head("POST", "/", &[("content-length", "10")]),
                body("ab"),
                HttpEvent::BodyGap(5),
                body("cd"),
                HttpEvent::BodyGap(1),
                HttpEvent::MessageEnd,
                req_head("GET", "/next", &[]),
                HttpEvent::MessageEnd,
            ]
        );
    }

    #[test]
    fn gap_past_end_of_body_loses_framing() {
        let mut p = Http1Parser::new(MessageKind::Request);
        let mut out = Vec::new();
        assert_eq!(
            p.feed(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", &mut out),
            Ok(())
        );
        out.clear();
        assert_eq!(p.feed_gap(10, &mut out), Err(HttpError::GapInFraming));
        assert_eq!(out, vec![HttpEvent::BodyGap(2), HttpEvent::MessageEnd]);
        assert_eq!(
            p.feed(b"GET / HTTP/1.1\r\n\r\n", &mut out),
            Err(HttpError::GapInFraming)
        );
    }

    #[test]
    fn gap_inside_chunk_data() {
        let mut p = Http1Parser::new(MessageKind::Response);
        let mut out = Vec::new();
        assert_eq!(
            p.feed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123",
                &mut out
            ),
            Ok(())
        );
        assert_eq!(p.feed_gap(3, &mut out), Ok(()));
        assert_eq!(p.feed(b"78", &mut out), Ok(()));
        assert_eq!(p.feed_gap(1, &mut out), Ok(())); // ends the chunk data exactly
        assert_eq!(p.feed(b"\r\n2\r\nxy\r\n0\r\n\r\n", &mut out), Ok(()));
        assert_eq!(
            out,
            vec![
                resp_head(200, &[("transfer-encoding", "chunked")]),
                body("0123"),
                HttpEvent::BodyGap(3),
                body("78"),
                HttpEvent::BodyGap(1),
                body("xy"),
                HttpEvent::MessageEnd,
            ]
        );
        assert!(p.is_idle());
    }

    #[test]
    fn gap_in_chunk_framing_fails() {
        let mut p = Http1Parser::new(MessageKind::Response);
        let mut out = Vec::new();
        assert_eq!(
            p.feed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1",
                &mut out
            ),
            Ok(())
        );
        assert_eq!(p.feed_gap(2, &mut out), Err(HttpError::GapInFraming));
    }

    #[test]
    fn gap_inside_head_fails_and_poisons() {
        let mut p = Http1Parser::new(MessageKind::Request);
        let mut out = Vec::new();
        assert_eq!(p.feed(b"POST /v1/chat HTTP/1.1\r\nHo", &mut out), Ok(()));
        assert_eq!(p.feed_gap(7, &mut out), Err(HttpError::GapInFraming));
        assert_eq!(
            p.feed(b"st: a\r\n\r\n", &mut out),
            Err(HttpError::GapInFraming)
        );
        assert_eq!(p.feed_gap(1, &mut out), Err(HttpError::GapInFraming));
        assert!(out.is_empty());
        assert_eq!(p.buffered_bytes(), 0);
        // Idle (between messages) is also framing.
        let mut p = Http1Parser::new(MessageKind::Response);
        assert_eq!(p.feed_gap(1, &mut out), Err(HttpError::GapInFraming));
    }

    #[test]
    fn gap_in_close_delimited_body() {
        let mut p = Http1Parser::new(MessageKind::Response);
        let mut out = Vec::new();
        assert_eq!(p.feed(b"HTTP/1.1 200 OK\r\n\r\nab", &mut out), Ok(()));
        assert_eq!(p.feed_gap(4, &mut out), Ok(()));
        assert!(!p.finish(&mut out));
        assert_eq!(
            out,
            vec![
                resp_head(200, &[]),
                body("ab"),
                HttpEvent::BodyGap(4),
                HttpEvent::MessageEnd
            ]
        );
    }

    #[test]
    fn not_http_on_tls_and_garbage() {
        let mut out = Vec::new();
        for kind in [MessageKind::Request, MessageKind::Response] {
            let mut p = Http1Parser::new(kind);
            assert_eq!(
                p.feed(b"\x16\x03\x01\x02\x00\x01", &mut out),
                Err(HttpError::NotHttp)
            );
            assert_eq!(
                p.feed(b"GET / HTTP/1.1\r\n", &mut out),
                Err(HttpError::NotHttp)
            );
            let mut p = Http1Parser::new(kind);
            assert_eq!(p.feed(b"\x16", &mut out), Err(HttpError::NotHttp));
        }
        for garbage in [&b"g"[..], b"\x00", b" ", b"{"] {
            let mut p = Http1Parser::new(MessageKind::Request);
            assert_eq!(
                p.feed(garbage, &mut out),
                Err(HttpError::NotHttp),
                "{garbage:?}"
            );
        }
        let mut p = Http1Parser::new(MessageKind::Request);
        assert_eq!(p.feed(b"GET", &mut out), Ok(()));
        assert_eq!(p.feed(b"x", &mut out), Err(HttpError::NotHttp));
        let mut p = Http1Parser::new(MessageKind::Response);
        assert_eq!(p.feed(b"HTTP/", &mut out), Ok(()));
        assert_eq!(p.feed(b"2", &mut out), Err(HttpError::NotHttp));
        let mut p = Http1Parser::new(MessageKind::Response);
        assert_eq!(p.feed(b"X", &mut out), Err(HttpError::NotHttp));
        // Over-long method token.
        let mut p = Http1Parser::new(MessageKind::Request);
        assert_eq!(p.feed(&[b'A'; 40], &mut out), Err(HttpError::NotHttp));
        assert!(out.is_empty());
    }

    #[test]
    fn not_http_on_h2_preface() {
        let mut out = Vec::new();
        let mut p = Http1Parser::new(MessageKind::Request);
        assert_eq!(p.feed(b"PRI * HTTP/2", &mut out), Err(HttpError::NotHttp));
        let mut p = Http1Parser::new(MessageKind::Request);
        let (_, r) = run(
            &mut p,
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                .chunks(1)
                .collect::<Vec<_>>(),
        );
        assert_eq!(r, Err(HttpError::NotHttp));
        // Unknown version on an otherwise valid request line.
        let mut p = Http1Parser::new(MessageKind::Request);
        assert_eq!(
            p.feed(b"GET / HTTP/3.0\r\n\r\n", &mut out),
            Err(HttpError::NotHttp)
        );
    }

    #[test]
    fn garbage_after_message_is_malformed() {
        let mut p = Http1Parser::new(MessageKind::Request);
        let mut out = Vec::new();
        assert_eq!(
            p.feed(b"GET / HTTP/1.1\r\n\r\n\x16\x03", &mut out),
            Err(HttpError::Malformed("invalid start of message"))
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn secret_headers_are_dropped() {
        let data = b"POST /v1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-1\r\nX-Api-Key: k2\r\nx-goog-api-key: k3\r\nApi-Key: k4\r\nPROXY-AUTHORIZATION: Basic k5\r\nCookie: k6\r\nX-Custom: Value With Case\r\nContent-Length: 0\r\n\r\n";
        let ev = whole(MessageKind::Request, data);
        let HttpEvent::RequestHead(head) = &ev[0] else {
            panic!("expected request head, got {ev:?}");
        };
        assert_eq!(
            head.headers,
            vec![
                ("host".to_string(), "x".to_string()),
                ("x-custom".to_string(), "Value With Case".to_string()),
                ("content-length".to_string(), "0".to_string()),
            ]
        );
        assert_eq!(head.header("AUTHORIZATION"), None);
        assert_eq!(head.header("x-api-key"), None);
        assert_eq!(head.header("X-CUSTOM"), Some("Value With Case"));
        let dbg = format!("{ev:?}");
        for secret in ["sk-1", "k2", "k3", "k4", "k5", "k6"] {
            assert!(!dbg.contains(secret), "{secret} leaked");
        }
        let ev = whole(
            MessageKind::Response,
            b"HTTP/1.1 200 OK\r\nSet-Cookie: sess=abc\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            ev,
            vec![
                resp_head(200, &[("content-length", "0")]),
                HttpEvent::MessageEnd
            ]
        );
        assert!(is_secret_header("X-API-KEY"));
        assert!(!is_secret_header("x-api-version"));
    }

    #[test]
    fn credential_headers_are_dropped_by_rule() {
        let data = b"POST /v1 HTTP/1.1\r\nHost: x\r\nX-Amz-Security-Token: t1\r\nOcp-Apim-Subscription-Key: t2\r\nx-portkey-api-key: t3\r\nhelicone-auth: t4\r\ncf-aig-authorization: t5\r\ndd-api-key: t6\r\nx-request-id: r1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nContent-Length: 0\r\n\r\n";
        let ev = whole(MessageKind::Request, data);
        let HttpEvent::RequestHead(head) = &ev[0] else {
            panic!("expected request head, got {ev:?}");
        };
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["host", "x-request-id", "traceparent", "content-length"]
        );
        let dbg = format!("{ev:?}");
        for secret in ["t1", "t2", "t3", "t4", "t5", "t6"] {
            assert!(!dbg.contains(secret), "{secret} leaked");
        }
        let ev = whole(
            MessageKind::Response,
            b"HTTP/1.1 200 OK\r\nx-ratelimit-remaining-tokens: 99\r\nanthropic-ratelimit-tokens-limit: 5\r\nWWW-Authenticate: Bearer realm=x\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            ev,
            vec![
                resp_head(
                    200,
                    &[
                        ("x-ratelimit-remaining-tokens", "99"),
                        ("anthropic-ratelimit-tokens-limit", "5"),
                        ("content-length", "0")
                    ]
                ),
                HttpEvent::MessageEnd
            ]
        );
    }

    #[test]
    fn header_too_large() {
        let mut out = Vec::new();
        let mut p = Http1Parser::with_max_header_bytes(MessageKind::Request, 64);
        let mut data = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        data.extend(std::iter::repeat_n(b'a', 100));
        assert_eq!(p.feed(&data, &mut out), Err(HttpError::HeaderTooLarge));
        assert_eq!(p.buffered_bytes(), 0);
        // Byte by byte: the buffer never exceeds the limit.
        let mut p = Http1Parser::with_max_header_bytes(MessageKind::Request, 64);
        let mut res = Ok(());
        for b in data.chunks(1) {
            res = p.feed(b, &mut out);
            assert!(p.buffered_bytes() <= 64);
            if res.is_err() {
                break;
            }
        }
        assert_eq!(res, Err(HttpError::HeaderTooLarge));
        // A head of exactly the limit is fine, and the body after it is not counted.
        let head = b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        let mut p = Http1Parser::with_max_header_bytes(MessageKind::Request, head.len());
        let mut data = head.to_vec();
        data.extend_from_slice(b"12345GET / HTTP/1.1\r\n\r\n");
        assert_eq!(p.feed(&data, &mut out), Ok(()));
        assert!(out.ends_with(&[HttpEvent::MessageEnd]));
        assert!(out.len() == 5);
    }

    #[test]
    fn many_headers_beyond_inline_array() {
        let mut data = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            data.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
        }
        data.extend_from_slice(b"\r\n");
        let ev = whole(MessageKind::Request, &data);
        let HttpEvent::RequestHead(head) = &ev[0] else {
            panic!("expected head, got {ev:?}");
        };
        assert_eq!(head.headers.len(), 200);
        assert_eq!(head.header("x-h199"), Some("199"));
    }

    #[test]
    fn malformed_chunk_size() {
        let mut out = Vec::new();
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"1 2\r\n",
            b"10000000000000000\r\n",
            b"ffffffffffffffffff\r\n",
        ] {
            let mut p = Http1Parser::new(MessageKind::Response);
            let mut data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            data.extend_from_slice(bad);
            let r = p.feed(&data, &mut out);
            assert!(matches!(r, Err(HttpError::Malformed(_))), "{bad:?}: {r:?}");
            assert_eq!(p.feed(b"0\r\n\r\n", &mut out), r);
        }
        // Missing CRLF after chunk data.
        let mut p = Http1Parser::new(MessageKind::Response);
        let r = p.feed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            &mut out,
        );
        assert_eq!(
            r,
            Err(HttpError::Malformed("missing CRLF after chunk data"))
        );
        // Over-long size line and trailer line.
        let mut p = Http1Parser::new(MessageKind::Response);
        assert_eq!(
            p.feed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;",
                &mut out
            ),
            Ok(())
        );
        let r = p.feed(&[b'x'; 5000], &mut out);
        assert!(matches!(r, Err(HttpError::Malformed(_))));
        let mut p = Http1Parser::new(MessageKind::Response);
        assert_eq!(
            p.feed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ",
                &mut out
            ),
            Ok(())
        );
        let mut res = Ok(());
        for _ in 0..10 {
            res = p.feed(&[b'y'; 1000], &mut out);
            assert!(p.buffered_bytes() <= MAX_LINE_BYTES + 2);
            if res.is_err() {
                break;
            }
        }
        assert!(matches!(res, Err(HttpError::Malformed(_))));
    }

    #[test]
    fn invalid_content_length() {
        let mut out = Vec::new();
        for bad in [
            &b"Content-Length: 5\r\nContent-Length: 6\r\n"[..],
            b"Content-Length: 5, 6\r\n",
            b"Content-Length: -1\r\n",
            b"Content-Length: abc\r\n",
            b"Content-Length: 99999999999999999999999\r\n",
        ] {
            let mut p = Http1Parser::new(MessageKind::Request);
            let mut data = b"POST / HTTP/1.1\r\n".to_vec();
            data.extend_from_slice(bad);
            data.extend_from_slice(b"\r\n");
            let r = p.feed(&data, &mut out);
            assert!(matches!(r, Err(HttpError::Malformed(_))), "{bad:?}: {r:?}");
        }
        // Identical duplicates are accepted.
        let ev = whole(
            MessageKind::Request,
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok",
        );
        assert_eq!(ev.get(1), Some(&body("ok")));
        // Request with a non-chunked transfer-encoding cannot be framed.
        let mut p = Http1Parser::new(MessageKind::Request);
        let r = p.feed(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            &mut out,
        );
        assert!(matches!(r, Err(HttpError::Malformed(_))));
    }

    #[test]
    fn no_body_statuses() {
        let ev = whole(
            MessageKind::Response,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            ev,
            vec![
                resp_head(304, &[("content-length", "50")]),
                HttpEvent::MessageEnd,
                resp_head(204, &[]),
                HttpEvent::MessageEnd,
                resp_head(200, &[("content-length", "0")]),
                HttpEvent::MessageEnd,
            ]
        );
    }

    #[test]
    fn finish_reports_incomplete_messages() {
        let mut out = Vec::new();
        let mut p = Http1Parser::new(MessageKind::Request);
        assert!(!p.finish(&mut out));
        assert!(p.is_idle());
        assert_eq!(p.feed(b"GET / HTTP/1.1\r\n\r\n", &mut out), Ok(()));
        assert!(p.is_idle());
        assert!(!p.finish(&mut out));
        // Partial head.
        let mut p = Http1Parser::new(MessageKind::Request);
        assert_eq!(p.feed(b"POST / HT", &mut out), Ok(()));
        assert!(!p.is_idle());
        assert_eq!(p.buffered_bytes(), 9);
        assert!(p.finish(&mut out));
        assert_eq!(p.buffered_bytes(), 0);
        // Incomplete Content-Length body.
        let mut p = Http1Parser::new(MessageKind::Response);
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", &mut out),
            Ok(())
        );
        out.clear();
        assert!(p.finish(&mut out));
        assert!(out.is_empty());
        // Incomplete chunked body.
        let mut p = Http1Parser::new(MessageKind::Response);
        assert_eq!(
            p.feed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                &mut out
            ),
            Ok(())
        );
        assert!(p.finish(&mut out));
        // Poisoned parser.
        let mut p = Http1Parser::new(MessageKind::Response);
        assert_eq!(p.feed(b"nope", &mut out), Err(HttpError::NotHttp));
        assert!(!p.finish(&mut out));
        assert!(!p.is_idle());
    }

    #[test]
    fn leading_empty_lines_tolerated() {
        let ev = whole(
            MessageKind::Request,
            b"GET /a HTTP/1.1\r\n\r\n\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        );
        assert_eq!(
            ev,
            vec![
                req_head("GET", "/a", &[]),
                HttpEvent::MessageEnd,
                req_head("GET", "/b", &[]),
                HttpEvent::MessageEnd,
            ]
        );
    }

    #[test]
    fn find_head_end_across_pieces() {
        assert_eq!(find_head_end(b"", b"a\n\nb"), Some(3));
        assert_eq!(find_head_end(b"", b"a\r\n\r\nb"), Some(5));
        assert_eq!(find_head_end(b"\r\n", b"\r\nb"), Some(2));
        assert_eq!(find_head_end(b"\n\r", b"\nb"), Some(1));
        assert_eq!(find_head_end(b"\r\n", b"\nb"), Some(1));
        assert_eq!(find_head_end(b"a\n", b"\r"), None);
        assert_eq!(find_head_end(b"", b"\n"), None);
        assert_eq!(find_head_end(b"a\r", b"\n\r\r\n"), None);
    }

    /// Deterministic pseudo-random mutation + split test: must never panic, and memory stays bounded.
    #[test]
    fn random_mutations_never_panic() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let (kind, base) = if round % 2 == 0 {
                (MessageKind::Request, REQS)
            } else {
                (MessageKind::Response, RESPS)
            };
            let mut data = base.to_vec();
            for _ in 0..(rnd() % 4) {
                let i = (rnd() as usize) % data.len();
                data[i] = rnd() as u8;
            }
            let mut p = Http1Parser::with_max_header_bytes(kind, 256);
            let mut out = Vec::new();
            let mut pos = 0;
            while pos < data.len() {
                let n = 1 + (rnd() as usize) % 40;
                let end = (pos + n).min(data.len());
                if rnd() % 50 == 0 {
                    let _ = p.feed_gap(rnd() % 20, &mut out);
                }
                let _ = p.feed(&data[pos..end], &mut out);
                assert!(p.buffered_bytes() <= 256 + MAX_LINE_BYTES + 2);
                pos = end;
            }
            if rnd() % 3 == 0 {
                p.expect_response(rnd() % 2 == 0);
            }
            let _ = p.finish(&mut out);
        }
    }

    #[test]
    fn expect_response_is_bounded() {
        let mut p = Http1Parser::new(MessageKind::Response);
        for _ in 0..10_000 {
            p.expect_response(true);
        }
        assert_eq!(p.no_body.len(), MAX_PENDING_RESPONSES);
        let mut q = Http1Parser::new(MessageKind::Request);
        q.expect_response(true);
        assert!(q.no_body.is_empty());
    }

    #[test]
    fn a_response_is_told_from_its_first_byte_and_a_status_line_whole() {
        let line: &[u8] = b"HTTP/1.1 200 OK";
        for n in 0..=line.len() {
            assert!(looks_like_response(&line[..n]), "{n} bytes");
        }
        for not in [
            &b"POST / HTTP/1.1"[..],
            b"HTTP/2 200",
            b"\x16\x03\x01",
            b"PRI * HTTP/2.0",
        ] {
            assert!(!looks_like_response(not), "{not:?}");
        }
        for ok in [&b"HTTP/1.1 200 OK"[..], b"HTTP/1.0 404", b"HTTP/1.1 599 "] {
            assert!(is_status_line(ok), "{ok:?}");
        }
        for bad in [
            &b"HTTP/1.1 200OK"[..],
            b"HTTP/1.1 20",
            b"HTTP/1.x 200 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/2 200 OK",
            b"GET / HTTP/1.1",
        ] {
            assert!(!is_status_line(bad), "{bad:?}");
        }
    }
}
