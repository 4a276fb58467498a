//! Builders shared by the dialects' unit tests.

use crate::protocol::http1::RequestHead;
use crate::protocol::sse::SseEvent;

/// A request head without headers.
pub(crate) fn head(method: &str, path: &str) -> RequestHead {
    RequestHead {
        method: method.into(),
        path: path.into(),
        headers: vec![],
    }
}

/// An untyped stream event (`data:` only, or one NDJSON line).
pub(crate) fn data_event(data: &str) -> SseEvent {
    SseEvent {
        event: None,
        data: data.into(),
        id: None,
    }
}

/// A typed stream event (`event:` + `data:`).
pub(crate) fn typed_event(event: &str, data: &str) -> SseEvent {
    SseEvent {
        event: Some(event.into()),
        data: data.into(),
        id: None,
    }
}
