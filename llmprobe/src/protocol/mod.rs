//! Pure, incremental protocol parsers used to rebuild LLM traffic from captured byte fragments.
//!
//! * [`http1`]: HTTP/1.x request/response framing (heads, Content-Length / chunked / close-delimited
//!   bodies, keep-alive, pipelining, capture gaps).
//! * [`sse`]: Server-Sent Events (`text/event-stream`) decoding of response bodies.
//!
//! Both parsers accept input split at arbitrary byte boundaries, never panic on input data and keep
//! their memory bounded.

pub mod encoding;
pub mod http1;
pub mod json_array;
pub mod ndjson;
pub mod sse;
