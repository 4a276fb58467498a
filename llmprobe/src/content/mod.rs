//! Opt-in content (`--capture-content`): the prompt and the answer of selected calls, redacted
//! before they leave memory.
//!
//! Stage: collected in the track stage (the exchange reads the request's one parse and is fed
//! the answer through `Observed::note_*`), redacted and rendered as OpenTelemetry GenAI JSON in
//! the enrich stage ([`render`]), exported by the sinks as record fields and span attributes.
//!
//! Invariants: nothing is collected for a call the selection leaves out; every text is bounded
//! while it is collected; no text reaches a record before [`redact::Redactor`] has read it.

pub mod redact;

/// The answer of one call being reassembled from its stream (or whole body), bounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputContent {}

impl OutputContent {
    /// Heap bytes held (the tracker's memory budget).
    pub fn heap_bytes(&self) -> usize {
        0
    }

    /// Answer text arrived.
    pub fn text(&mut self, _text: &str) {}
    /// Reasoning (thinking) text arrived.
    pub fn reasoning(&mut self, _text: &str) {}
    /// A tool call (see `Observed::note_tool_call`).
    pub fn tool_call(&mut self, _index: Option<u32>, _id: Option<&str>, _name: Option<&str>) {}
    /// A tool call's arguments (see `Observed::note_tool_args`).
    pub fn tool_args(&mut self, _index: Option<u32>, _text: &str) {}
}
