//! Wires the stages into tasks and channels:
//!
//! ```text
//! ring buffer ─► reader (decode, mask secrets, name processes) ─► tracker (conntrack → http1 →
//! sse → llm) ─► sink (JSONL)        discovery (attach uprobes to new TLS libraries) ◄─ exec/mmap
//! ```
//!
//! Every channel is bounded; a full channel is a counted drop, never a stall of the kernel reader.

use std::collections::BTreeSet;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;
use aya::maps::{HashMap as BpfHashMap, MapData};
use llmprobe_common::ConnKey;
use log::{info, warn};
use prometheus_client::registry::Registry;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::clock::{Clock, monotonic_now_ns};
use crate::conntrack::{TrackerConfig, TrackerOutput};
use crate::export::jsonl::{JsonlTarget, JsonlWriter};
use crate::export::metrics_http;
use crate::export::otlp::{OtlpConfig, OtlpExporter};
use crate::export::prometheus::{CardinalityLimits, GenAiMetrics, GpuServerLabels};
use crate::gpu::correlate::{GpuHistory, InFlightSnapshot, ProcRelation, server_gpus};
use crate::gpu::efficiency::{CallUse, ServerKey};
use crate::gpu::{GpuMetrics, GpuMode, SETTLE_GRACE, SamplerConfig};
use crate::llm::LlmCall;
use crate::llm::tracking::{self, LlmTracker};
use crate::probes::EventPreparer;
use crate::probes::capture::read_capture;
use crate::probes::discovery::{ScanDecision, ScanLimiter};
use crate::probes::events::{ProbeEvent, decode};
use crate::probes::loader::{LoadOptions, ProbeHandles, Probes, ScanReport};
use crate::probes::recorder::{ConnClass, RecordOptions, Recorder};
use crate::telemetry::SelfMetrics;
use std::sync::{Mutex, PoisonError};

/// Options of `llmprobe run` / `llmprobe record`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where call records go (None: nowhere but metrics).
    pub jsonl: Option<JsonlTarget>,
    /// `/metrics` listen address.
    pub metrics_addr: SocketAddr,
    /// Only these processes (empty: all).
    pub pids: Vec<u32>,
    /// Also write probe events to a capture file.
    pub record: Option<RecordOptions>,
    /// Tracker limits.
    pub tracker: TrackerConfig,
    /// Rotate the JSONL file past this size.
    pub jsonl_max_bytes: Option<u64>,
    /// Most series the LLM call metric families hold together (least recently used evicted).
    pub max_series: usize,
    /// Export spans over OTLP.
    pub otlp: Option<OtlpConfig>,
    /// GPU sampling through NVML.
    pub gpu: GpuMode,
    /// GPU sampling interval.
    pub gpu_interval: Duration,
    /// NVML library to load instead of searching for it.
    pub nvml_lib: Option<PathBuf>,
    /// Payload bytes the reader may queue for the tracker (its share of `--memory-limit`).
    pub queue_budget: usize,
}

const BATCH_CHANNEL: usize = 4096;
const RECORD_CHANNEL: usize = 4096;
const MAX_BATCH: usize = 1024;
/// Bytes of probe events the reader may queue for the tracker (see [`event_cost`]).
/// Default of [`RunOptions::queue_budget`]: a quarter of the default `--memory-limit`.
pub const QUEUE_BYTE_BUDGET: usize = 64 << 20;
/// What an event costs in the queue besides its payload: the enum, its process name and
/// container id (bounded by the reader's preparation), allocator slack.
const EVENT_OVERHEAD: usize = 256;

/// An event's share of [`QUEUE_BYTE_BUDGET`].
fn event_cost(ev: &ProbeEvent) -> usize {
    EVENT_OVERHEAD
        + match ev {
            ProbeEvent::Data(d) => d.data.len(),
            _ => 0,
        }
}

/// Fits a batch into what is left of the queue's byte budget (`queued` of `budget` in use).
/// Over it, data events lose their payload first and stay as zero-length markers with their
/// offset and call length, so the tracker counts the missing bytes as a capture gap and
/// resynchronises as it does for bytes the kernel lost; when even the markers do not fit, the
/// whole batch goes. Returns the batch's cost (0 when it was dropped) and the events whose
/// payload or whole self was dropped.
fn fit_batch(batch: &mut Vec<ProbeEvent>, queued: usize, budget: usize) -> (usize, u64) {
    let cost: usize = batch.iter().map(event_cost).sum();
    if queued + cost <= budget {
        return (cost, 0);
    }
    let mut dropped = 0;
    for ev in batch.iter_mut() {
        if let ProbeEvent::Data(d) = ev
            && !d.data.is_empty()
        {
            d.data = bytes::Bytes::new();
            dropped += 1;
        }
    }
    let cost = batch.len() * EVENT_OVERHEAD;
    if queued + cost <= budget {
        return (cost, dropped);
    }
    let all = batch.len() as u64;
    batch.clear();
    (0, all)
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Arc::new(SelfMetrics::new(&mut registry));
    let genai = Arc::new(GenAiMetrics::new(
        &mut registry,
        CardinalityLimits {
            max_series: opts.max_series,
        },
    ));
    let gpu_metrics = Arc::new(GpuMetrics::new(&mut registry));
    let registry = Arc::new(registry);
    let listener = metrics_http::bind(opts.metrics_addr).await?;
    // Ten minutes of GPU rounds for joining calls with what their server's GPUs did.
    let gpu_history = Arc::new(Mutex::new(GpuHistory::new(
        (600.0 / opts.gpu_interval.as_secs_f64().max(0.05)) as usize,
    )));
    // One clock offset for the live records, the capture and the GPU rounds, so a replay
    // reproduces the records exactly and a wall-clock step shifts nothing against anything.
    let clock = Clock::system();
    let gpu_on = crate::gpu::start(
        opts.gpu,
        SamplerConfig {
            interval: opts.gpu_interval,
            settle_grace: SETTLE_GRACE,
            clock,
        },
        opts.nvml_lib.as_deref(),
        gpu_metrics,
        gpu_history.clone(),
    );
    let mut sink = match &opts.jsonl {
        Some(t) => Some(JsonlWriter::open_rotating(t, opts.jsonl_max_bytes)?),
        None => None,
    };
    let otlp = opts.otlp.clone().map(|cfg| {
        info!(
            "exporting spans over OTLP to {} ({:?})",
            crate::secrets::redact_url(&cfg.endpoint),
            cfg.protocol
        );
        OtlpExporter::spawn(cfg, metrics.clone())
    });
    let mut capture = match &opts.record {
        Some(r) => Some(Recorder::create(r, clock, metrics.clone())?),
        None => None,
    };

    let (mut probes, handles) = Probes::load(&LoadOptions {
        pids: opts.pids.clone(),
    })?;
    let mut report = ScanReport::default();
    probes.initial_scan(&mut report);
    publish_scan(&report, &probes, &metrics);
    if probes.tls_file_count() == 0 {
        warn!(
            "no OpenSSL library found yet: TLS traffic is invisible until a process maps one (plaintext HTTP is traced)"
        );
    }
    let seeds = probes.seed_sockets()?;
    let ProbeHandles { ring, muted, lost } = handles;
    let mut kernel_stats = probes.kernel_stats(lost, seeds.len() as u64)?;

    // Batches with their cost; `queued` is the cost of the batches not yet handled.
    let (batch_tx, mut batch_rx) = mpsc::channel::<(usize, Vec<ProbeEvent>)>(BATCH_CHANNEL);
    let queued = Arc::new(AtomicUsize::new(0));
    let (rec_tx, mut rec_rx) = mpsc::channel::<Vec<LlmCall>>(RECORD_CHANNEL);
    let (scan_tx, scan_rx) = std::sync::mpsc::sync_channel::<u32>(SCAN_CHANNEL);

    if !seeds.is_empty() {
        info!(
            "tracing {} TCP sockets that were open before start",
            seeds.len()
        );
        let cost = seeds.iter().map(event_cost).sum();
        queued.fetch_add(cost, Ordering::AcqRel);
        let _ = batch_tx.send((cost, seeds)).await;
    }

    // Reader: drain the ring buffer whenever it is readable.
    let reader_metrics = metrics.clone();
    let reader_queued = queued.clone();
    let queue_budget = opts.queue_budget;
    // SAFETY: the ring buffer owns its fd and keeps it open for as long as the AsyncFd owns it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e:?}"))?;
    let reader = tokio::spawn(async move {
        let mut prep = EventPreparer::new(true);
        let mut scrub_seen = crate::probes::scrub::ScrubStats::default();
        loop {
            let Ok(mut guard) = ring.readable_mut().await else {
                break;
            };
            // Drain in batches. The reader never waits for the tracker: past the queue's byte
            // budget (or its count of batches) events are dropped, counted in
            // llmprobe_dropped_total{reason="tracker_queue_full"}, so the ring keeps draining.
            loop {
                let rb = guard.get_inner_mut();
                let mut batch = Vec::new();
                while batch.len() < MAX_BATCH {
                    let Some(item) = rb.next() else { break };
                    match decode(&item) {
                        Ok(mut ev) => {
                            prep.prepare(&mut ev);
                            if let ProbeEvent::ExecMap { meta } = &ev
                                && let Err(std::sync::mpsc::TrySendError::Full(_)) =
                                    scan_tx.try_send(meta.pid)
                            {
                                reader_metrics.drop_for("discovery_request_dropped");
                            }
                            batch.push(ev);
                        }
                        Err(e) => {
                            reader_metrics.events_malformed.inc();
                            log::debug!("undecodable probe event: {e:?}");
                        }
                    }
                }
                let drained = batch.len() < MAX_BATCH;
                let stats = prep.scrub_stats();
                reader_metrics
                    .secrets_masked
                    .inc_by(stats.masked_values - scrub_seen.masked_values);
                // Pieces masked to the line end because the masker's state was lost.
                for (reason, now, seen) in [
                    (
                        "scrub_state_lost",
                        stats.lost_states,
                        scrub_seen.lost_states,
                    ),
                    (
                        "scrub_state_evicted",
                        stats.evicted_states,
                        scrub_seen.evicted_states,
                    ),
                ] {
                    if now > seen {
                        reader_metrics.drop_by(reason, now - seen);
                    }
                }
                scrub_seen = stats;
                if !batch.is_empty() {
                    let in_queue = reader_queued.load(Ordering::Acquire);
                    let (cost, mut dropped) = fit_batch(&mut batch, in_queue, queue_budget);
                    if !batch.is_empty() {
                        reader_queued.fetch_add(cost, Ordering::AcqRel);
                        match batch_tx.try_send((cost, batch)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full((cost, batch))) => {
                                reader_queued.fetch_sub(cost, Ordering::AcqRel);
                                dropped += batch.len() as u64;
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    if dropped > 0 {
                        reader_metrics.drop_by("tracker_queue_full", dropped);
                    }
                }
                if drained {
                    break;
                }
                // A ring that never empties must not keep this worker from the other tasks.
                tokio::task::yield_now().await;
            }
            guard.clear_ready();
        }
    });

    // Tracker: the pipeline proper.
    let tracker_metrics = metrics.clone();
    let tracker_cfg = opts.tracker;
    let tracker_genai = genai.clone();
    let tracker_gpu = gpu_on.then(|| gpu_history.clone());
    let tracker_queued = queued.clone();
    let tracker = tokio::spawn(async move {
        let mut tracker = tracking::tracker(tracker_cfg, clock, tracker_metrics.clone());
        let mut muted = muted;
        // In-flight figures every 500 ms, with or without events.
        let mut in_flight_tick = tokio::time::interval(Duration::from_millis(500));
        // Record batches handed to the sink (the GPU accounting waits for the sink to catch up).
        let mut sent_batches: u64 = 0;
        loop {
            let (cost, batch) = tokio::select! {
                b = batch_rx.recv() => match b {
                    Some(b) => b,
                    None => break,
                },
                _ = in_flight_tick.tick() => {
                    tracker_genai.set_in_flight(tracker.llm_in_flight() as i64);
                    if let Some(h) = tracker_gpu.as_ref() {
                        let snapshot = InFlightSnapshot {
                            sent_batches,
                            since: tracker.server_in_flight_since(),
                            taken_at: clock.unix_ns(monotonic_now_ns()),
                        };
                        h.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .add_snapshot(snapshot);
                    }
                    continue;
                }
            };
            let mut out = TrackerOutput::default();
            for ev in batch {
                track(&mut tracker, capture.as_mut(), ev, &mut out);
            }
            tracker_queued.fetch_sub(cost, Ordering::AcqRel);
            if let Some(c) = capture.as_mut() {
                c.flush();
            }
            apply_mutes(&mut muted, &out.mutes);
            if !out.calls.is_empty() {
                if rec_tx.try_send(out.calls).is_ok() {
                    sent_batches += 1;
                } else {
                    tracker_metrics.drop_for("sink_backpressure");
                }
            }
        }
        if let Some(mut c) = capture {
            c.flush();
        }
        tracker.connections()
    });

    // Sink.
    let sink_genai = genai.clone();
    let sink_metrics = metrics.clone();
    let sink_task = tokio::spawn(async move {
        let mut jsonl_warned = None;
        while let Some(mut calls) = rec_rx.recv().await {
            for c in calls.iter_mut() {
                let labels = sink_genai.observe(c);
                if gpu_on && c.role == "server" {
                    annotate_gpu(c, labels, &gpu_history);
                }
            }
            if gpu_on {
                gpu_history
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .consumed_batches += 1;
            }
            for c in &calls {
                if let Some(o) = otlp.as_ref() {
                    o.send(c);
                }
            }
            if let Some(w) = sink.as_mut() {
                let mut failed = None;
                for c in &calls {
                    if let Err(e) = w.write(c) {
                        sink_metrics.drop_for("jsonl_write_failed");
                        failed = Some(e);
                    }
                }
                if let Err(e) = w.flush() {
                    sink_metrics.drop_for("jsonl_write_failed");
                    failed = Some(e);
                }
                // A full disk fails every record: say so once a minute, count every one.
                if let Some(e) = failed
                    && jsonl_warned
                        .is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(60))
                {
                    warn!(
                        "JSONL write failed (counted in llmprobe_dropped_total{{reason=\"jsonl_write_failed\"}}): {e:#}"
                    );
                    jsonl_warned = Some(std::time::Instant::now());
                }
            }
        }
        if let Some(o) = otlp {
            o.shutdown().await;
        }
    });

    // Discovery: attach to TLS libraries as processes exec or map them. Its own OS thread: it
    // reads /proc and files with blocking calls; it ends when the reader drops `scan_tx`.
    let disc_metrics = metrics.clone();
    let discovery = std::thread::Builder::new()
        .name("discovery".to_owned())
        .spawn(move || discovery_loop(probes, scan_rx, disc_metrics))
        .context("cannot start the discovery thread")?;

    // Kernel-side losses and refusals, on a thread of their own (map walks block).
    let lost_metrics = metrics.clone();
    std::thread::Builder::new()
        .name("kernel-stats".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                kernel_stats.poll(&lost_metrics);
            }
        })
        .context("cannot start the kernel statistics thread")?;
    let server = tokio::spawn(metrics_http::serve(
        listener,
        registry,
        metrics.clone(),
        metrics_http::ServeLimits::default(),
    ));

    info!(
        "ready: tracepoints attached, OpenSSL probed in {} file(s), metrics on http://{}/metrics",
        metrics.tls_libraries.get(),
        opts.metrics_addr
    );

    wait_for_signal().await;
    info!("stopping: detaching probes and flushing records");
    reader.abort();
    server.abort();
    let _ = reader.await;
    if let Ok(open) = tracker.await
        && open > 0
    {
        info!("{open} connection(s) were still open; their unfinished calls are not recorded");
    }
    let _ = sink_task.await;
    // The reader is gone, so the scan channel is closed: discovery detaches and ends.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || discovery.join()),
    )
    .await;
    Ok(())
}

/// One event through the tracker and, when recording, the recorder, which learns from the
/// tracker whether the event's connection carries LLM calls.
pub(crate) fn track<W: std::io::Write>(
    tracker: &mut LlmTracker,
    capture: Option<&mut Recorder<W>>,
    ev: ProbeEvent,
    out: &mut TrackerOutput<LlmCall>,
) {
    let Some(c) = capture else {
        tracker.handle(ev, out);
        return;
    };
    let copy = ev.clone();
    let mutes = out.mutes.len();
    tracker.handle(ev, out);
    c.not_llm(&out.mutes[mutes..]);
    c.observe(copy, |pid, id| {
        if tracker.is_llm(pid, id) {
            ConnClass::Llm
        } else {
            ConnClass::Unknown
        }
    });
}

/// Server-role calls on a GPU node get what the server's GPUs did during the call, and count
/// in their server's energy and throughput.
fn annotate_gpu(call: &mut LlmCall, labels: GpuServerLabels, history: &Mutex<GpuHistory>) {
    let Some(gpus) = server_gpus(
        history,
        &ProcRelation,
        call.pid,
        call.container_id.as_deref(),
    ) else {
        return;
    };
    let mut h = history.lock().unwrap_or_else(PoisonError::into_inner);
    let d = &call.detail;
    if let Some(w) = h.window(&gpus, d.start_unix_ns, d.end_unix_ns) {
        call.gpu_util_mean = w.util_mean;
        call.gpu_mem_used_bytes = w.mem_used_bytes;
        call.gpu_power_mean_w = w.power_mean_w;
    }
    h.efficiency.on_call(CallUse {
        server: ServerKey { pid: call.pid },
        server_labels: labels.server,
        model: labels.model,
        gpus,
        start_ns: d.start_unix_ns,
        first_output_ns: d.first_chunk_unix_ns,
        end_ns: d.end_unix_ns,
        output_tokens: call.output_tokens.unwrap_or(0),
    });
}

fn apply_mutes(muted: &mut BpfHashMap<MapData, ConnKey, u8>, mutes: &[(u32, u64)]) {
    for (pid, id) in mutes {
        let key = ConnKey {
            tgid: *pid,
            _pad: 0,
            conn_id: *id,
        };
        if let Err(e) = muted.insert(key, 1, 0) {
            log::debug!("could not mute connection {pid}/{id:#x}: {e}");
        }
    }
}

/// Scan requests queued for discovery; beyond it requests are dropped and counted
/// (`discovery_request_dropped`): the periodic full scan still covers their processes.
const SCAN_CHANNEL: usize = 4096;
/// How long after an exec/mmap event discovery waits for the loader to finish mapping.
const MAP_SETTLE: Duration = Duration::from_millis(20);
/// At most [`SCANS_PER_INTERVAL`] scans per process per interval; requests beyond are
/// coalesced into one scan at the end of the interval.
const SCAN_INTERVAL_PER_PID: Duration = Duration::from_secs(1);
/// Scans a process may have in one interval (a starting process maps its libraries in turn).
const SCANS_PER_INTERVAL: u32 = 4;
/// Processes the rate limiter remembers at once.
const MAX_LIMITED_PIDS: usize = 65_536;
/// Full scans of every traced process (and release of files no one maps any more).
const FULL_RESCAN: Duration = Duration::from_secs(30);

/// Turns a scan's outcome into self-metrics.
fn publish_scan(report: &ScanReport, probes: &Probes, metrics: &SelfMetrics) {
    for r in &report.refused {
        metrics.drop_for(r.reason());
    }
    for _ in 0..report.cap_reached {
        metrics.drop_for("discovery_cap_reached");
    }
    metrics.tls_libraries.set(probes.tls_file_count() as i64);
}

/// The discovery stage: scans processes that exec or map executable files (rate-limited per
/// process, coalesced), and every process every [`FULL_RESCAN`], releasing the probes of files
/// no one maps any more. Runs on its own OS thread; returns when the request channel closes.
fn discovery_loop(mut probes: Probes, rx: Receiver<u32>, metrics: Arc<SelfMetrics>) {
    let mut limiter = ScanLimiter::new(SCAN_INTERVAL_PER_PID, SCANS_PER_INTERVAL, MAX_LIMITED_PIDS);
    let mut next_full = Instant::now() + FULL_RESCAN;
    loop {
        let wake = limiter.next_due().map_or(next_full, |d| d.min(next_full));
        let mut pids = BTreeSet::new();
        match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(first) => {
                // Let the loader finish mapping, then take the requests queued meanwhile
                // (at most one channel's worth, so a flood cannot keep this loop here).
                std::thread::sleep(MAP_SETTLE);
                let now = Instant::now();
                for pid in std::iter::once(first).chain(rx.try_iter().take(SCAN_CHANNEL)) {
                    match limiter.request(pid, now) {
                        ScanDecision::Now => {
                            pids.insert(pid);
                        }
                        ScanDecision::Later(_) | ScanDecision::Merged => {
                            metrics.drop_for("discovery_scan_rate_limited");
                        }
                        ScanDecision::Dropped => metrics.drop_for("discovery_request_dropped"),
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        pids.extend(limiter.due(now));
        let mut report = ScanReport::default();
        if !pids.is_empty() {
            let pids: Vec<u32> = pids.into_iter().collect();
            probes.scan_pids(&pids, &mut report);
        }
        if now >= next_full {
            probes.full_rescan(&mut report);
            limiter.prune(now);
            next_full = Instant::now() + FULL_RESCAN;
        }
        publish_scan(&report, &probes, &metrics);
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs captured events through the same pipeline offline. Returns the records in order.
pub fn replay_events(
    clock: Clock,
    events: Vec<ProbeEvent>,
    cfg: TrackerConfig,
    metrics: Arc<SelfMetrics>,
) -> Vec<LlmCall> {
    let mut tracker = tracking::tracker(cfg, clock, metrics);
    let mut prep = EventPreparer::new(false);
    let mut out = TrackerOutput::default();
    for mut ev in events {
        prep.prepare(&mut ev);
        tracker.handle(ev, &mut out);
    }
    out.calls
}

/// `llmprobe replay`: reads a capture and writes its records.
pub fn replay(path: &Path, jsonl: &JsonlTarget) -> anyhow::Result<usize> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open capture {}", path.display()))?;
    let (clock, events) = read_capture(BufReader::new(file))?;
    let calls = replay_events(
        clock,
        events,
        TrackerConfig::default(),
        Arc::new(SelfMetrics::unregistered()),
    );
    let mut w = JsonlWriter::open(jsonl)?;
    for c in &calls {
        w.write(c)?;
    }
    w.flush()?;
    Ok(calls.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::events::{DataChunk, Direction, EventMeta};

    fn meta() -> EventMeta {
        EventMeta {
            pid: 7,
            tid: 7,
            fd: 3,
            conn_id: 1,
            ts_ns: 1,
            comm: "python3".to_owned(),
            container: None,
        }
    }

    fn data(len: usize, offset: u32) -> ProbeEvent {
        ProbeEvent::Data(DataChunk {
            meta: meta(),
            direction: Direction::Egress,
            tls: false,
            offset,
            total_len: 1 << 20,
            lost_before: false,
            data: bytes::Bytes::from(vec![b'x'; len]),
        })
    }

    fn close() -> ProbeEvent {
        ProbeEvent::ConnClose { meta: meta() }
    }

    #[test]
    fn a_payload_dropped_for_the_budget_is_a_gap_to_the_tracker() {
        let chunk = |dir, body: &[u8], ts| {
            ProbeEvent::Data(DataChunk {
                meta: EventMeta {
                    ts_ns: ts,
                    ..meta()
                },
                direction: dir,
                tls: false,
                offset: 0,
                total_len: body.len() as u32,
                lost_before: false,
                data: bytes::Bytes::copy_from_slice(body),
            })
        };
        let body = br#"{"model":"m","messages":[]}"#;
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // The request body's payload does not fit (room for one event without payload): it
        // stays as a marker.
        let mut late = vec![chunk(Direction::Egress, body, 2)];
        assert_eq!(fit_batch(&mut late, 0, EVENT_OVERHEAD), (EVENT_OVERHEAD, 1));
        let mut events = vec![chunk(Direction::Egress, head.as_bytes(), 1)];
        events.append(&mut late);
        events.push(chunk(
            Direction::Ingress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            3,
        ));
        let metrics = Arc::new(SelfMetrics::unregistered());
        let _ = replay_events(
            Clock { offset_ns: 0 },
            events,
            TrackerConfig::default(),
            metrics.clone(),
        );
        assert_eq!(metrics.dropped_count("capture_gap"), 1);
    }

    #[test]
    fn batches_fit_the_byte_budget_payload_first() {
        let batch = || vec![data(16 << 10, 0), close(), data(16 << 10, 16 << 10)];
        let full = 2 * (16 << 10) + 3 * EVENT_OVERHEAD;
        // Room for all of it.
        let mut b = batch();
        assert_eq!(fit_batch(&mut b, 1000, 1000 + full), (full, 0));
        assert_eq!(b, batch());
        // Room for the events but not their payloads: two zero-length markers keep their
        // offsets and call length; the close stays.
        let mut b = batch();
        let (cost, dropped) = fit_batch(&mut b, 1000, 1000 + full - 1);
        assert_eq!((cost, dropped), (3 * EVENT_OVERHEAD, 2));
        let offsets: Vec<(u32, u32, usize)> = b
            .iter()
            .filter_map(|e| match e {
                ProbeEvent::Data(d) => Some((d.offset, d.total_len, d.data.len())),
                _ => None,
            })
            .collect();
        assert_eq!(offsets, vec![(0, 1 << 20, 0), (16 << 10, 1 << 20, 0)]);
        assert!(b.contains(&close()));
        // No room even for the markers: the batch goes, every event counted.
        let mut b = batch();
        assert_eq!(
            fit_batch(&mut b, 1000, 1000 + 3 * EVENT_OVERHEAD - 1),
            (0, 3)
        );
        assert!(b.is_empty());
    }
}
