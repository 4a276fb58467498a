//! The fan-out stage, on its own OS thread: every batch of finished records goes to every
//! [`CallSink`] in turn (metrics, OTLP, JSON lines). A sink never blocks on the network (OTLP queues and sends on its own
//! worker); file writes block only this thread. When the enrich stage ends, every sink is
//! closed (flushed, workers stopped with a bounded wait).

use std::sync::mpsc::Receiver;

use crate::export::CallSink;
use crate::llm::LlmCall;

/// Runs until the enrich stage ends, then closes every sink.
pub fn run(input: Receiver<Vec<LlmCall>>, mut sinks: Vec<Box<dyn CallSink>>) {
    while let Ok(calls) = input.recv() {
        for s in sinks.iter_mut() {
            s.emit(&calls);
        }
    }
    for s in sinks.iter_mut() {
        s.close();
    }
}
