//! The live pipeline, one module per stage, each with one entry point, joined by bounded
//! channels. Data walks down the stages and never climbs back up:
//!
//! ```text
//!  ring buffer ──► source ──► [event queue, bounded in bytes] ──► prepare ─► track ──► enrich ──► fan-out
//!  (kernel)        (async:      try_send: full = counted drop        (one OS thread)     (OS thread:  (OS thread:
//!                  decode,                                           mask, name,          GPU join)    every CallSink)
//!                  batch)                                            tracker + recorder
//!                     │                                                  │  ▲ mutes (kernel map)
//!                     └──► discovery (OS thread: /proc, ELF, attach)     │  └─ in-flight snapshots ─► enrich
//!  GPU sampler (OS thread, NVML) ── rounds ─────────────────────────────────────────────► enrich
//! ```
//!
//! * [`source`]: drains the ring buffer, decodes records, fits batches into the event queue's
//!   byte budget and never waits for a later stage; asks discovery to scan processes that exec
//!   or map executable files.
//! * [`queue`]: the event queue between the source and the tracker, bounded in bytes.
//! * [`prepare`]: masks secrets and names processes (live and replay alike).
//! * [`track`]: connection tracking, HTTP, LLM calls; the recorder; the mute feedback to the
//!   kernel; the in-flight figures.
//! * [`enrich`]: the GPU join (it owns the GPU history; rounds and snapshots arrive over its
//!   channel), then hands records to the fan-out.
//! * [`fanout`]: every [`CallSink`](fanout::CallSink) (JSON lines, Prometheus, OTLP) on a thread
//!   of its own, so a slow disk or network never stalls the tracker.
//! * [`discovery`]: finds TLS libraries and attaches uprobes, on its own thread.
//! * [`replay`]: the same prepare and track stages over a capture file.
//!
//! Blocking work (reading /proc, ELF files, writing files, NVML) runs on OS threads; only the
//! ring reader and the `/metrics` server run on the async runtime.

pub mod discovery;
pub mod enrich;
pub mod fanout;
pub mod prepare;
pub mod queue;
pub mod replay;
pub mod source;
pub mod track;
