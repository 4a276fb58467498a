//! Builders shared by the dialects' unit tests, and [`Feed`]: a dialect fed raw bytes and
//! events, as the exchange would hand them over.

use super::json::{Body, Event};
use super::{Observed, OutputKind, ProviderDialect};
use crate::protocol::StreamEvent;
use crate::protocol::http1::RequestHead;

/// A request head without headers.
pub(crate) fn head(method: &str, path: &str) -> RequestHead {
    RequestHead {
        method: method.into(),
        path: path.into(),
        headers: vec![],
    }
}

/// An untyped stream event (`data:` only, or one NDJSON line).
pub(crate) fn data_event(data: &str) -> StreamEvent {
    StreamEvent::data(data.into())
}

/// A typed stream event (`event:` + `data:`).
pub(crate) fn typed_event(event: &str, data: &str) -> StreamEvent {
    StreamEvent {
        event: Some(event.into()),
        data: data.into(),
        id: None,
    }
}

/// Feeds a dialect raw request and response bytes and framed events.
pub(crate) trait Feed {
    /// A request body.
    fn feed_request(&mut self, body: &[u8], out: &mut Observed);
    /// One stream event.
    fn feed_event(&mut self, ev: &StreamEvent, out: &mut Observed) -> OutputKind;
    /// A whole response body.
    fn feed_response(&mut self, body: &[u8], out: &mut Observed);
}

impl<D: ProviderDialect + ?Sized> Feed for D {
    fn feed_request(&mut self, body: &[u8], out: &mut Observed) {
        self.on_request_body(&Body::new(body), out);
    }

    fn feed_event(&mut self, ev: &StreamEvent, out: &mut Observed) -> OutputKind {
        self.on_stream_event(&Event::new(ev), out)
    }

    fn feed_response(&mut self, body: &[u8], out: &mut Observed) {
        self.on_response_body(&Body::new(body), out);
    }
}

/// A tool name longer than a record keeps ([`super::MAX_FIELD_BYTES`]).
pub(crate) fn long_tool_name() -> String {
    "t".repeat(super::MAX_FIELD_BYTES + 40)
}

/// A tool-call id longer than is kept ([`super::MAX_TOOL_ID_BYTES`]).
pub(crate) fn long_tool_id() -> String {
    "c".repeat(super::MAX_TOOL_ID_BYTES + 1)
}

/// Asserts what a call did with tools: its call count, names and call ids.
#[track_caller]
pub(crate) fn assert_tools(o: &Observed, calls: u32, names: &[&str], ids: &[&str]) {
    assert_eq!(o.tools.calls, calls, "calls: {:?}", o.tools);
    assert_eq!(o.tools.names, names, "names: {:?}", o.tools);
    assert_eq!(o.tools.call_ids, ids, "ids: {:?}", o.tools);
}
