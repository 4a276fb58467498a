//! The fan-out stage, on its own OS thread: every batch of finished records goes to every
//! [`CallSink`] in turn. A sink never blocks on the network (OTLP queues and sends on its own
//! worker); file writes block only this thread. When the enrich stage ends, every sink is
//! closed (flushed, workers stopped with a bounded wait).

use std::sync::mpsc::Receiver;

use crate::llm::LlmCall;

/// Where finished call records go: JSON lines, Prometheus, OTLP.
pub trait CallSink: Send {
    /// Takes one batch. Never blocks on the network; failures are counted, not returned.
    fn write(&mut self, calls: &[LlmCall]);
    /// Flushes and stops, waiting a bounded time.
    fn close(&mut self) {}
}

/// Runs until the enrich stage ends, then closes every sink.
pub fn run(input: Receiver<Vec<LlmCall>>, mut sinks: Vec<Box<dyn CallSink>>) {
    while let Ok(calls) = input.recv() {
        for s in sinks.iter_mut() {
            s.write(&calls);
        }
    }
    for s in sinks.iter_mut() {
        s.close();
    }
}
