//! Incremental Server-Sent Events (`text/event-stream`) decoder.
//!
//! Follows the WHATWG EventSource parsing rules: lines end in `\r\n`, `\n` or `\r`; `field:value`
//! with one optional space after the colon; `data` lines are joined with `\n`; a blank line
//! dispatches the event; lines starting with `:` are comments. Input may be split at any byte
//! (including inside a UTF-8 character or between `\r` and `\n`).
//!
//! Differences from a browser `EventSource`, chosen for observing LLM streams:
//! * an event with an `event:` name but no `data:` is still dispatched;
//! * [`StreamEvent::id`] is the `id:` of that event only (the "last event ID" is not carried over);
//! * [`SseDecoder::finish`] dispatches a pending event that lacks the final blank line.

/// Default upper bound for one event (pending line plus accumulated fields), in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

pub use super::{EventRef, StreamEvent};

/// Buffers that grew past this for one large event are let go after it, so that an idle stream
/// does not keep its largest event's memory.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Errors from [`SseDecoder::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// One event exceeded the size limit; it was discarded up to its terminating blank line.
    EventTooLarge,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::EventTooLarge => f.write_str("server-sent event too large"),
        }
    }
}

impl std::error::Error for SseError {}

const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// Incremental SSE decoder for one response body.
#[derive(Debug)]
pub struct SseDecoder {
    max_event_bytes: usize,
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous input ended with `\r`; a leading `\n` of the next input belongs to it.
    after_cr: bool,
    /// Whether the start of the stream (possible BOM) has been handled.
    started: bool,
    /// How many BOM bytes were matched at stream start so far.
    bom_matched: usize,
    /// Data buffer in WHATWG form: each data line followed by `\n`. Reused from event to event.
    data: String,
    /// The `event:` name (when `has_event`); the buffer is reused.
    event: String,
    has_event: bool,
    /// The `id:` (when `has_id`); the buffer is reused.
    id: String,
    has_id: bool,
    /// Discarding an oversized event until its blank line.
    skipping: bool,
    /// While skipping: the current line already has content.
    skip_line_nonempty: bool,
    comments: u64,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// Creates a decoder with [`DEFAULT_MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// Creates a decoder whose events may be at most `max` bytes (pending line plus fields).
    pub fn with_max_event_bytes(max: usize) -> Self {
        SseDecoder {
            max_event_bytes: max,
            line: Vec::new(),
            after_cr: false,
            started: false,
            bom_matched: 0,
            data: String::new(),
            event: String::new(),
            has_event: false,
            id: String::new(),
            has_id: false,
            skipping: false,
            skip_line_nonempty: false,
            comments: 0,
        }
    }

    /// Feed decoded body bytes; complete events are appended to `out`.
    ///
    /// On `Err(EventTooLarge)` the whole input was still processed: the oversized event is
    /// discarded (up to its blank line), other complete events are appended to `out`, and the
    /// decoder keeps working.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), SseError> {
        self.feed_with(data, &mut |ev| out.push(ev.to_event()))
    }

    /// [`SseDecoder::feed`], each complete event handed to `f` borrowed from the decoder's
    /// buffers (nothing is allocated per event).
    pub fn feed_with(
        &mut self,
        data: &[u8],
        f: &mut impl FnMut(EventRef<'_>),
    ) -> Result<(), SseError> {
        let mut data = data;
        let mut too_large = false;
        if !self.started {
            while let Some((&b, rest)) = data.split_first() {
                if self.bom_matched < BOM.len() && b == BOM[self.bom_matched] {
                    self.bom_matched += 1;
                    data = rest;
                } else {
                    break;
                }
            }
            if self.bom_matched == BOM.len() {
                self.started = true;
            } else if !data.is_empty() {
                // Not a BOM: the matched prefix is ordinary content.
                self.started = true;
                let prefix = &BOM[..self.bom_matched];
                too_large |= self.process(prefix, f);
            } else {
                return Ok(());
            }
        }
        too_large |= self.process(data, f);
        if too_large {
            Err(SseError::EventTooLarge)
        } else {
            Ok(())
        }
    }

    /// End of body: a pending event with data but no blank line is dispatched (servers that end without a final blank line).
    ///
    /// An unterminated last line is processed as a complete line first. The decoder is then reset
    /// for a new stream (the comment counter is kept).
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        self.finish_with(&mut |ev| out.push(ev.to_event()));
    }

    /// [`SseDecoder::finish`], the last event handed to `f` (see [`SseDecoder::feed_with`]).
    pub fn finish_with(&mut self, f: &mut impl FnMut(EventRef<'_>)) {
        if !self.started && self.bom_matched > 0 {
            self.line.extend_from_slice(&BOM[..self.bom_matched]);
        }
        if !self.skipping {
            if !self.line.is_empty() {
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, f);
            }
            self.dispatch(f);
        }
        let comments = self.comments;
        *self = Self::with_max_event_bytes(self.max_event_bytes);
        self.comments = comments;
    }

    /// Number of comment lines seen (lines starting with ':'), e.g. `: keep-alive`, `:HTTP_STATUS/200`.
    pub fn comments_seen(&self) -> u64 {
        self.comments
    }

    /// Bytes currently buffered (partial line plus the pending event's fields).
    pub fn buffered_bytes(&self) -> usize {
        self.line.len() + self.fields_bytes()
    }

    fn fields_bytes(&self) -> usize {
        self.data.len()
            + if self.has_event { self.event.len() } else { 0 }
            + if self.has_id { self.id.len() } else { 0 }
    }

    /// Processes stream bytes; returns true if an event was discarded for being too large.
    fn process(&mut self, mut data: &[u8], f: &mut impl FnMut(EventRef<'_>)) -> bool {
        let mut too_large = false;
        if self.after_cr && !data.is_empty() {
            self.after_cr = false;
            if let Some(rest) = data.strip_prefix(b"\n") {
                data = rest;
            }
        }
        while !data.is_empty() {
            let Some(i) = memchr::memchr2(b'\r', b'\n', data) else {
                // Partial line: buffer it (or just note it when discarding).
                if self.skipping {
                    self.skip_line_nonempty = true;
                } else if self.line.len() + data.len() + self.fields_bytes() > self.max_event_bytes
                {
                    self.overflow(true);
                    too_large = true;
                } else {
                    self.line.extend_from_slice(data);
                }
                break;
            };
            let content = &data[..i];
            // Advance past the terminator (`\r\n` counts as one).
            let mut next = i + 1;
            if data[i] == b'\r' {
                match data.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.skipping {
                let blank = content.is_empty() && !self.skip_line_nonempty;
                self.skip_line_nonempty = false;
                if blank {
                    self.skipping = false;
                }
            } else if self.line.len() + content.len() + self.fields_bytes() > self.max_event_bytes {
                self.overflow(false);
                too_large = true;
            } else if self.line.is_empty() {
                self.process_line(content, f);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(content);
                self.process_line(&line, f);
                if line.capacity() <= KEEP_CAPACITY {
                    line.clear();
                    self.line = line;
                }
            }
            if !self.skipping && self.fields_bytes() > self.max_event_bytes {
                self.overflow(false);
                too_large = true;
            }
            data = &data[next..];
        }
        too_large
    }

    /// Discards the current event and skips input until its terminating blank line.
    fn overflow(&mut self, mid_line: bool) {
        self.line = Vec::new();
        self.data = String::new();
        self.event = String::new();
        self.has_event = false;
        self.id = String::new();
        self.has_id = false;
        self.skipping = true;
        self.skip_line_nonempty = mid_line;
    }

    fn process_line(&mut self, line: &[u8], f: &mut impl FnMut(EventRef<'_>)) {
        if line.is_empty() {
            self.dispatch(f);
            return;
        }
        if line.first() == Some(&b':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let value = &line[c + 1..];
                (&line[..c], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                self.data.push_str(&super::lossy(value));
                self.data.push('\n');
            }
            b"event" => {
                self.event.clear();
                self.has_event = !value.is_empty();
                if self.has_event {
                    self.event.push_str(&super::lossy(value));
                }
            }
            // Ids containing NUL are ignored (WHATWG).
            b"id" if !value.contains(&0) => {
                self.id.clear();
                self.id.push_str(&super::lossy(value));
                self.has_id = true;
            }
            // `retry` and unknown fields are ignored.
            _ => {}
        }
    }

    fn dispatch(&mut self, f: &mut impl FnMut(EventRef<'_>)) {
        let (has_event, has_id) = (self.has_event, self.has_id);
        self.has_event = false;
        self.has_id = false;
        if self.data.is_empty() && !has_event {
            return;
        }
        let data = self.data.strip_suffix('\n').unwrap_or(&self.data);
        f(EventRef {
            event: has_event.then_some(self.event.as_str()),
            data,
            id: has_id.then_some(self.id.as_str()),
        });
        if self.data.capacity() > KEEP_CAPACITY {
            self.data = String::new();
        } else {
            self.data.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str, id: Option<&str>) -> StreamEvent {
        StreamEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        }
    }

    fn data(d: &str) -> StreamEvent {
        ev(None, d, None)
    }

    /// Feeds all pieces then finishes; panics on error.
    fn decode(pieces: &[&[u8]]) -> (Vec<StreamEvent>, u64) {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for p in pieces {
            assert_eq!(d.feed(p, &mut out), Ok(()));
        }
        d.finish(&mut out);
        (out, d.comments_seen())
    }

    #[test]
    fn openai_chat_stream() {
        let s = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"!\"}}]}\n\n\
data: [DONE]\n\n";
        let (out, comments) = decode(&[s]);
        assert_eq!(
            out,
            vec![
                data("{\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}"),
                data("{\"choices\":[{\"delta\":{\"content\":\"!\"}}]}"),
                data("[DONE]"),
            ]
        );
        assert_eq!(comments, 0);
    }

    #[test]
    fn anthropic_typed_events() {
        let s = b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hello\"}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let (out, _) = decode(&[s]);
        assert_eq!(
            out,
            vec![
                ev(Some("message_start"), "{\"type\":\"message_start\"}", None),
                ev(Some("ping"), "{\"type\": \"ping\"}", None),
                ev(
                    Some("content_block_delta"),
                    "{\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hello\"}}",
                    None
                ),
                ev(Some("message_stop"), "{\"type\":\"message_stop\"}", None),
            ]
        );
    }

    #[test]
    fn gemini_crlf_frames() {
        let s = b"data: {\"candidates\":[1]}\r\n\r\ndata: {\"candidates\":[2]}\r\n\r\n";
        let (out, _) = decode(&[s]);
        assert_eq!(
            out,
            vec![data("{\"candidates\":[1]}"), data("{\"candidates\":[2]}")]
        );
    }

    #[test]
    fn dashscope_no_space_and_status_comments() {
        let s = b"id:1\nevent:result\n:HTTP_STATUS/200\ndata:{\"output\":{\"text\":\"a\"}}\n\n\
id:2\nevent:result\n:HTTP_STATUS/200\ndata:{\"output\":{\"text\":\"b\"}}\n\n";
        let (out, comments) = decode(&[s]);
        assert_eq!(
            out,
            vec![
                ev(Some("result"), "{\"output\":{\"text\":\"a\"}}", Some("1")),
                ev(Some("result"), "{\"output\":{\"text\":\"b\"}}", Some("2")),
            ]
        );
        assert_eq!(comments, 2);
    }

    #[test]
    fn keep_alive_comments_and_field_rules() {
        let s = b": keep-alive\n\n:\n\
retry: 1000\nunknown: x\ndata\ndata:  two spaces\ndata:\n\n\
event: only-name\n\n\
id: lonely\n\n\
data: a:b:c\n\n";
        let (out, comments) = decode(&[s]);
        assert_eq!(
            out,
            vec![
                data("\n two spaces\n"),
                ev(Some("only-name"), "", None),
                data("a:b:c"),
            ]
        );
        assert_eq!(comments, 2);
    }

    #[test]
    fn bare_cr_line_endings_and_bom() {
        let (out, _) = decode(&[b"\xEF\xBB\xBFdata: a\rdata: b\r\rdata: c\r\n\n"]);
        assert_eq!(out, vec![data("a\nb"), data("c")]);
        // BOM split across feeds.
        let (out, _) = decode(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]);
        assert_eq!(out, vec![data("x")]);
        // A BOM later in the stream is content (and a non-BOM prefix is kept).
        let (out, _) = decode(&[b"data: \xEF\xBB\xBFx\n\n"]);
        assert_eq!(out, vec![data("\u{feff}x")]);
        let (out, _) = decode(&[b"\xEF", b"data: x\n\n"]);
        assert_eq!(out, vec![]);
    }

    #[test]
    fn cr_at_end_of_feed_then_lf() {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        assert_eq!(d.feed(b"data: a\r", &mut out), Ok(()));
        assert_eq!(d.feed(b"\ndata: b\r", &mut out), Ok(()));
        assert!(out.is_empty());
        assert_eq!(d.feed(b"\n\r", &mut out), Ok(()));
        assert_eq!(out, vec![data("a\nb")]);
        assert_eq!(d.feed(b"\n", &mut out), Ok(()));
        assert_eq!(d.feed(b"data: c\r", &mut out), Ok(()));
        assert_eq!(d.feed(b"", &mut out), Ok(()));
        assert_eq!(d.feed(b"\r", &mut out), Ok(()));
        assert_eq!(out, vec![data("a\nb"), data("c")]);
    }

    const MULTI: &str = "event: message_start\r\ndata: {\"t\":\"你好 👋\"}\r\n\r\n: ping\n\ndata:第一行\ndata: второй 🎉\nid: 7\n\ndata: é\rdata: ü\r\rdata: [DONE]\n\n";

    fn multi_expected() -> Vec<StreamEvent> {
        vec![
            ev(Some("message_start"), "{\"t\":\"你好 👋\"}", None),
            ev(None, "第一行\nвторой 🎉", Some("7")),
            data("é\nü"),
            data("[DONE]"),
        ]
    }

    #[test]
    fn split_at_every_offset_with_utf8() {
        let bytes = MULTI.as_bytes();
        let (out, comments) = decode(&[bytes]);
        assert_eq!(out, multi_expected());
        assert_eq!(comments, 1);
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode(&pieces), (multi_expected(), 1), "byte-by-byte");
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            assert_eq!(decode(&[a, b]), (multi_expected(), 1), "split at {i}");
            for j in (i..=bytes.len()).step_by(5) {
                let p = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                assert_eq!(decode(&p), (multi_expected(), 1), "split at {i},{j}");
            }
        }
    }

    #[test]
    fn finish_dispatches_trailing_event() {
        let (out, _) = decode(&[b"data: first\n\ndata: last"]);
        assert_eq!(out, vec![data("first"), data("last")]);
        let (out, _) = decode(&[b"event: done\ndata: x\n"]);
        assert_eq!(out, vec![ev(Some("done"), "x", None)]);
        let (out, _) = decode(&[b"data: x\r"]);
        assert_eq!(out, vec![data("x")]);
        let (out, _) = decode(&[b": only a comment"]);
        assert_eq!(out, vec![]);
        // finish resets the decoder.
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        assert_eq!(d.feed(b"data: a", &mut out), Ok(()));
        d.finish(&mut out);
        assert_eq!(d.buffered_bytes(), 0);
        d.finish(&mut out);
        assert_eq!(out, vec![data("a")]);
    }

    #[test]
    fn oversize_event_then_recovery() {
        let mut d = SseDecoder::with_max_event_bytes(64);
        let mut out = Vec::new();
        // Many data lines accumulating past the limit.
        let mut big = Vec::new();
        for _ in 0..10 {
            big.extend_from_slice(b"data: 0123456789\n");
        }
        big.extend_from_slice(b"\ndata: ok1\n\n");
        assert_eq!(d.feed(&big, &mut out), Err(SseError::EventTooLarge));
        assert_eq!(out, vec![data("ok1")]);
        assert!(d.buffered_bytes() <= 64);
        // One huge line arriving in pieces: never buffered past the limit.
        out.clear();
        assert_eq!(d.feed(b"data: ", &mut out), Ok(()));
        let mut errors = 0;
        for _ in 0..100 {
            if d.feed(&[b'x'; 10], &mut out).is_err() {
                errors += 1;
            }
            assert!(d.buffered_bytes() <= 64);
        }
        assert_eq!(errors, 1);
        // The rest of the oversized event (including more data lines) is discarded.
        assert_eq!(d.feed(b"\ndata: tail of big event\n", &mut out), Ok(()));
        assert_eq!(d.feed(b"\ndata: ok2\n\n", &mut out), Ok(()));
        assert_eq!(out, vec![data("ok2")]);
        // A single over-long complete line in one feed.
        out.clear();
        let mut line = b"data: ".to_vec();
        line.extend_from_slice(&[b'y'; 200]);
        line.extend_from_slice(b"\n\ndata: ok3\n\n");
        assert_eq!(d.feed(&line, &mut out), Err(SseError::EventTooLarge));
        assert_eq!(out, vec![data("ok3")]);
        // finish while discarding dispatches nothing.
        out.clear();
        assert_eq!(d.feed(&[b'z'; 100], &mut out), Err(SseError::EventTooLarge));
        d.finish(&mut out);
        assert!(out.is_empty());
        assert_eq!(d.feed(b"data: ok4\n\n", &mut out), Ok(()));
        assert_eq!(out, vec![data("ok4")]);
    }

    /// Deterministic pseudo-random mutation + split test: never panics, memory stays bounded.
    #[test]
    fn random_mutations_never_panic() {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut data = MULTI.as_bytes().to_vec();
            for _ in 0..(rnd() % 4) {
                let i = (rnd() as usize) % data.len();
                data[i] = rnd() as u8;
            }
            let mut d = SseDecoder::with_max_event_bytes(24);
            let mut out = Vec::new();
            let mut pos = 0;
            while pos < data.len() {
                let end = (pos + 1 + (rnd() as usize) % 16).min(data.len());
                let _ = d.feed(&data[pos..end], &mut out);
                assert!(d.buffered_bytes() <= 24);
                pos = end;
            }
            d.finish(&mut out);
        }
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        let (out, _) = decode(&[b"data: a\xffb\n\n"]);
        assert_eq!(out, vec![data("a\u{fffd}b")]);
    }

    #[test]
    fn id_with_nul_ignored() {
        let (out, _) = decode(&[b"id: a\0b\ndata: x\n\n"]);
        assert_eq!(out, vec![data("x")]);
    }
}
