//! Stage 2 and 3 of the pipeline: pure, incremental protocol parsers that rebuild LLM traffic
//! from captured byte fragments. Nothing here knows about providers or records.
//!
//! * [`http1`]: HTTP/1.x request/response framing (heads, Content-Length / chunked /
//!   close-delimited bodies, keep-alive, pipelining, capture gaps).
//! * [`http2`]: HTTP/2 framing (frames, HPACK, per-stream events; secrets filtered as headers
//!   are decoded).
//! * [`encoding`]: `Content-Encoding` decoding of response bodies (gzip, deflate, br, zstd), with
//!   a cap on decoded bytes.
//! * Stream framing of a response body into [`StreamEvent`]s, whatever the wire form:
//!   * [`sse`]: Server-Sent Events (`text/event-stream`);
//!   * [`ndjson`]: newline-delimited JSON (`application/x-ndjson`, Ollama's streams), one event
//!     per non-blank line;
//!   * [`json_array`]: a JSON array streamed element by element (Gemini without `alt=sse`), one
//!     event per top-level element.
//!
//! Every parser accepts input split at arbitrary byte boundaries (every-split tests), never panics
//! on input data, and keeps its memory bounded (an event, line or element over its cap is dropped
//! up to its end and reported once). The framers only cut: the event data is parsed once, by the
//! LLM stage (`llm::exchange`), and handed to the dialect.

pub mod encoding;
pub mod hpack;
pub mod http1;
pub mod http2;
pub mod json_array;
pub mod ndjson;
pub mod sse;

/// One event of a streamed response body, as framed by [`sse`], [`ndjson`] or [`json_array`].
/// The NDJSON and JSON-array framings give only `data` (one line, one element).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamEvent {
    /// The SSE `event:` field, if a non-empty one was given.
    pub event: Option<String>,
    /// SSE: all `data:` lines joined with `'\n'`; NDJSON: the line (without its line end);
    /// JSON array: the element's text. Invalid UTF-8 is replaced (lossy).
    pub data: String,
    /// The SSE `id:` field of this event, if given (ids containing NUL are ignored, as in WHATWG).
    pub id: Option<String>,
}

impl StreamEvent {
    /// An event with data only (an NDJSON line, a JSON-array element).
    pub fn data(data: String) -> Self {
        StreamEvent {
            event: None,
            data,
            id: None,
        }
    }
}

/// A [`StreamEvent`] borrowed from its framer's buffers, as the framers' `feed_with` hand it
/// out: valid until the framer is fed again, so framing a stream allocates nothing per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventRef<'a> {
    /// See [`StreamEvent::event`].
    pub event: Option<&'a str>,
    /// See [`StreamEvent::data`].
    pub data: &'a str,
    /// See [`StreamEvent::id`].
    pub id: Option<&'a str>,
}

impl EventRef<'_> {
    /// An owned copy.
    pub fn to_event(self) -> StreamEvent {
        StreamEvent {
            event: self.event.map(str::to_owned),
            data: self.data.to_owned(),
            id: self.id.map(str::to_owned),
        }
    }
}

impl<'a> From<&'a StreamEvent> for EventRef<'a> {
    fn from(ev: &'a StreamEvent) -> Self {
        EventRef {
            event: ev.event.as_deref(),
            data: &ev.data,
            id: ev.id.as_deref(),
        }
    }
}

/// `bytes` as text, invalid UTF-8 replaced (as `String::from_utf8_lossy`), borrowed when valid:
/// the validation alone is much cheaper than the lossy walk.
pub(crate) fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}
