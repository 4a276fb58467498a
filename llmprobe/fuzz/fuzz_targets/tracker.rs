//! The whole userspace pipeline behind the ring buffer: scripted probe events (data with offsets,
//! lost pieces, opens, closes, `SSL*` ↔ fd, `SSL_free`, exits, time jumps past the idle timeout)
//! through `EventPreparer` (masking) and `ConnTracker::handle`, for a few processes with a few
//! connections each. The script format is `llmprobe_fuzz::script`; its first byte picks the
//! tracker limits (bit 0: small limits, so every limit is reached).
//!
//! Invariants: tracked connections and calls in flight stay under the limits; every record is
//! sane; after `finish_all` nothing is tracked.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use llmprobe::clock::Clock;
use llmprobe::conntrack::{ConnTracker, TrackerConfig, TrackerOutput};
use llmprobe::llm::exchange::ExchangeLimits;
use llmprobe::llm::tracking::LlmPolicy;
use llmprobe::probes::EventPreparer;
use llmprobe::telemetry::SelfMetrics;
use llmprobe_fuzz::{check_call, script};

fuzz_target!(|raw: &[u8]| {
    let Some((&mode, rest)) = raw.split_first() else {
        return;
    };
    let (cfg, limits) = if mode & 1 != 0 {
        (
            TrackerConfig {
                max_connections: 6,
                max_connections_per_process: 3,
                memory_budget: 4096,
                max_pending_exchanges: 3,
                idle_timeout_ns: 2_000_000_000,
                mute_after_non_llm: 2,
            },
            ExchangeLimits {
                max_request_body: 128,
                max_response_body: 512,
                max_output_events: 16,
                max_decoded_stream: 4096,
            },
        )
    } else {
        (TrackerConfig::default(), ExchangeLimits::default())
    };
    let ops = script::parse(rest);
    let events = script::events(&ops);
    let metrics = Arc::new(SelfMetrics::unregistered());
    let mut tracker = ConnTracker::new(
        cfg,
        LlmPolicy::new(limits),
        Clock {
            offset_ns: 1_700_000_000_000_000_000,
        },
        metrics,
    );
    let mut prep = EventPreparer::new(false);
    let mut out = TrackerOutput::default();
    let n_events = events.len();
    for mut ev in events {
        prep.prepare(&mut ev);
        tracker.handle(ev, &mut out);
        assert!(tracker.connections() <= cfg.max_connections);
        assert!(tracker.llm_in_flight() <= cfg.max_connections * cfg.max_pending_exchanges);
        assert!(tracker.memory_bytes() <= cfg.memory_budget);
    }
    tracker.finish_all(&mut out);
    assert_eq!(tracker.connections(), 0);
    assert_eq!(tracker.llm_in_flight(), 0);
    for call in &out.calls {
        check_call(call);
    }
    // Every record comes from a request head, and each head takes at least 14 bytes
    // ("GET / HTTP/1.1" plus its line end). A data event mutes at most its own connection, one
    // evicted to make room for it, and connections cut for the memory budget (each of which a
    // data event created).
    let bytes: usize = ops.iter().map(|(_, op)| op_bytes(op)).sum();
    assert!(
        out.calls.len() <= bytes / 14 + 1,
        "{} calls from {bytes} bytes",
        out.calls.len()
    );
    assert!(out.mutes.len() <= 3 * n_events);
});

fn op_bytes(op: &script::Op) -> usize {
    match op {
        script::Op::Data { bytes, .. }
        | script::Op::DataAt { bytes, .. }
        | script::Op::DataSplit { bytes, .. } => bytes.len(),
        _ => 0,
    }
}
