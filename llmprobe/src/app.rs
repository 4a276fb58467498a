//! The composition root: builds the stages of [`crate::pipeline`], joins them with bounded
//! channels, starts the threads beside them (discovery, kernel statistics, GPU sampling, the
//! `/metrics` server), and stops them in order on SIGINT or SIGTERM. No stage logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use log::{info, warn};
use prometheus_client::registry::Registry;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::clock::Clock;
use crate::conntrack::TrackerConfig;
use crate::export::CallSink;
use crate::export::jsonl::{JsonlSink, JsonlTarget, JsonlWriter};
use crate::export::metrics_http;
use crate::export::otlp::{OtlpConfig, OtlpExporter};
use crate::export::prometheus::{CardinalityLimits, GenAiMetrics};
use crate::gpu::join::GpuJoin;
use crate::gpu::{GpuMetrics, GpuMode, SETTLE_GRACE, SamplerConfig};
use crate::live;
use crate::llm::LlmCall;
use crate::llm::tracking;
use crate::pipeline::enrich::EnrichInput;
use crate::pipeline::prepare::Prepare;
use crate::pipeline::queue::{QUEUE_BATCHES, event_queue};
use crate::pipeline::track::TrackStage;
use crate::pipeline::{discovery, enrich, fanout, source};
use crate::probes::events::ProbeEvent;
use crate::probes::loader::{LoadOptions, ProbeHandles, Probes, ScanReport};
use crate::probes::recorder::{RecordOptions, Recorder};
use crate::probes::scope::ScopeSpec;
use crate::telemetry::{DropReason, SelfMetrics};

pub use crate::pipeline::queue::QUEUE_BYTE_BUDGET;
pub use crate::pipeline::replay::{replay, replay_events, replay_events_with_content};
pub use crate::pipeline::track::track;

/// Options of `llmprobe run` / `llmprobe record`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where call records go (None: nowhere but metrics).
    pub jsonl: Option<JsonlTarget>,
    /// `/metrics` listen address.
    pub metrics_addr: SocketAddr,
    /// Which processes are traced, and how uprobes are placed.
    pub scope: ScopeSpec,
    /// Ring buffer bytes between the kernel and the source stage.
    pub ring_bytes: u32,
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
    /// `--conversation-idle`: a conversation this long without a call has ended.
    pub conversation_idle: Duration,
    /// The price table (built in, extended or replaced by `--prices`).
    pub prices: Arc<crate::llm::pricing::PriceTable>,
    /// `--api-socket`: the live view's API on a local socket (`llmprobe top`); None: off.
    pub api_socket: Option<PathBuf>,
    /// `--ui-addr`: the trace page and the API over HTTP; None: off.
    pub ui_addr: Option<SocketAddr>,
    /// `--rescan-interval`: how often discovery scans every process.
    pub rescan_interval: Duration,
    /// `--capture-content` and its companions (None: no content is collected).
    pub content: Option<crate::content::ContentSetup>,
}

/// Records batches waiting for the enrich stage and for the fan-out.
const RECORD_CHANNEL: usize = 4096;

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    // Privileges before anything is bound or created: without them, that would fail first
    // with a misleading error.
    if let Some(err) = crate::doctor::Privileges::current().refusal() {
        anyhow::bail!("{err}");
    }
    let mut registry = Registry::default();
    let metrics = Arc::new(SelfMetrics::new(&mut registry));
    let genai = Arc::new(GenAiMetrics::new(
        &mut registry,
        CardinalityLimits {
            max_series: opts.max_series,
        },
    ));
    let gpu_metrics = Arc::new(GpuMetrics::new(&mut registry));
    let process_metrics = crate::telemetry::ProcessMetrics::new(&mut registry);
    process_metrics.sample();
    let conversations = enrich::Conversations::new(
        crate::llm::conversation::MatcherConfig::with_idle(opts.conversation_idle),
        Arc::new(crate::export::prometheus::ConversationMetrics::new(
            &mut registry,
        )),
        metrics.clone(),
    );
    let registry = Arc::new(registry);
    // A taken address does not stop the agent (a local user could take the port first to
    // blind it): the server keeps trying it in the background.
    let listener = metrics_http::bind(opts.metrics_addr).await;
    // The address really bound (`--metrics-addr 127.0.0.1:0` picks a free port).
    let metrics_addr = match &listener {
        Ok(l) => l.local_addr().unwrap_or(opts.metrics_addr),
        Err(e) => {
            warn!("{e:#}; capturing anyway, and trying the address again every 5 s");
            opts.metrics_addr
        }
    };
    // One clock offset for the live records, the capture and the GPU rounds, so a replay
    // reproduces the records exactly and a wall-clock step shifts nothing against anything.
    let clock = Clock::system();

    let mut sinks = sinks(&opts, &genai, &metrics)?;
    // The live view, and its listeners bound now so a taken address fails the start.
    let mut live_listeners = Vec::new();
    // Neither stops the agent: capturing matters more than a view of it.
    if let Some(path) = &opts.api_socket {
        match live::serve::bind_socket(path) {
            Ok(l) => live_listeners.push(l),
            Err(e) => warn!("{e:#}; `llmprobe top` cannot reach this agent"),
        }
    }
    if let Some(addr) = opts.ui_addr {
        match live::serve::bind_tcp(addr).await {
            Ok(l) => live_listeners.push(l),
            Err(e) => warn!("{e:#}; the trace page is not served"),
        }
    }
    let live_view = (!live_listeners.is_empty()).then(live::LiveView::new);
    if let Some(v) = &live_view {
        sinks.push(Box::new(live::LiveSink(v.clone())));
    }
    let recorder = match &opts.record {
        Some(r) => Some(Recorder::create(r, clock, metrics.clone())?),
        None => None,
    };

    let (mut probes, handles, seeds) = load_probes(&opts, &metrics)?;
    let ProbeHandles { ring, muted, lost } = handles;
    let mut kernel_stats = probes.kernel_stats(lost, seeds.len() as u64)?;

    // The stages' channels, downstream first.
    let (fanout_tx, fanout_rx) = std::sync::mpsc::sync_channel::<Vec<LlmCall>>(RECORD_CHANNEL);
    let (enrich_tx, enrich_rx) = std::sync::mpsc::sync_channel::<EnrichInput>(RECORD_CHANNEL);
    let (queue_tx, queue_rx) = event_queue(opts.queue_budget, QUEUE_BATCHES);
    let (scan_tx, scan_rx) =
        std::sync::mpsc::sync_channel::<discovery::Request>(discovery::SCAN_CHANNEL);
    let (admit_tx, admit_rx) =
        std::sync::mpsc::sync_channel::<discovery::Admission>(discovery::ADMIT_CHANNEL);
    let admit_filter = || discovery::AdmitFilter::new(admit_tx.clone(), scan_tx.clone());
    let (exit_link, urgent) = discovery::urgent_channels(scan_tx.clone(), admit_rx);

    if let Ok(dropped @ 1..) = queue_tx.offer(seeds) {
        metrics.drop_by(DropReason::TrackerQueueFull, dropped);
    }

    // Fan-out and enrich.
    let fanout = spawn("fanout", move || fanout::run(fanout_rx, sinks))?;
    let sampler_cfg = SamplerConfig {
        interval: opts.gpu_interval,
        settle_grace: SETTLE_GRACE,
        clock,
    };
    let gpu = crate::gpu::start(
        opts.gpu,
        sampler_cfg,
        opts.nvml_lib.as_deref(),
        &gpu_metrics,
        enrich_tx.clone(),
    )
    .then(|| GpuJoin::new(&sampler_cfg, gpu_metrics));
    let snapshots = gpu.is_some();
    let enrich_metrics = metrics.clone();
    let pricer = crate::llm::pricing::Pricer::new(opts.prices.clone());
    let (content_policy, content_render) = match opts.content.clone() {
        Some((p, r)) => (Some(p), Some(r)),
        None => (None, None),
    };
    let steps = enrich::CallSteps::new(content_render);
    spawn("enrich", move || {
        enrich::run(
            enrich_rx,
            gpu,
            conversations,
            pricer,
            steps,
            fanout_tx,
            enrich_metrics,
        )
    })?;

    // Track (prepare + tracker + recorder).
    let stage = TrackStage {
        prepare: Prepare::new(true, metrics.clone()),
        tracker: tracking::tracker_with_content(
            opts.tracker,
            clock,
            metrics.clone(),
            content_policy,
        ),
        recorder,
        muted,
        genai: genai.clone(),
        snapshots,
        clock,
        metrics: metrics.clone(),
        admit: opts
            .scope
            .auto
            .then(|| (opts.scope.hosts.clone(), admit_filter())),
        live: live_view.clone(),
    };
    let (open_tx, open_rx) = tokio::sync::oneshot::channel();
    spawn("tracker", move || {
        let _ = open_tx.send(stage.run(queue_rx, enrich_tx));
    })?;

    // Source.
    // SAFETY: the ring buffer owns its fd and keeps it open for as long as the AsyncFd owns it.
    let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e:?}"))?;
    let link = source::DiscoveryLink {
        tx: scan_tx.clone(),
        exits: opts.scope.per_process().then_some(exit_link),
        auto: opts
            .scope
            .auto
            .then(|| (opts.scope.hosts.clone(), admit_filter())),
    };
    drop(admit_tx);
    drop(scan_tx);
    let reader = tokio::spawn(source::run(ring, queue_tx, link, metrics.clone()));

    let disc_metrics = metrics.clone();
    let rescan = opts.rescan_interval;
    let discovery = spawn("discovery", move || {
        discovery::run(probes, scan_rx, urgent, disc_metrics, rescan)
    })?;
    // Kernel-side losses and refusals (map walks block).
    let lost_metrics = metrics.clone();
    spawn("kernel-stats", move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            kernel_stats.poll(&lost_metrics);
            process_metrics.sample();
        }
    })?;
    let server = tokio::spawn(metrics_http::serve_when_bound(
        listener,
        opts.metrics_addr,
        registry,
        metrics.clone(),
        metrics_http::ServeLimits::default(),
    ));

    let mut live_servers = Vec::new();
    for l in live_listeners {
        match &l {
            live::serve::Listener::Tcp(t) => {
                if let Ok(a) = t.local_addr() {
                    info!("trace page on http://{a}/");
                }
            }
            live::serve::Listener::Unix(..) => {}
        }
        if let Some(v) = &live_view {
            live_servers.push(tokio::spawn(live::serve::serve(
                l,
                v.clone(),
                clock,
                metrics.clone(),
                metrics_http::ServeLimits::default(),
            )));
        }
    }

    info!(
        "ready: tracepoints attached, OpenSSL probed in {} file(s), metrics on http://{}/metrics",
        metrics.tls_libraries.get(),
        metrics_addr
    );

    wait_for_signal().await;
    info!("stopping: detaching probes and flushing records");
    // Stopping the source closes the event queue and the scan requests: the tracker ends (and
    // with it enrich, then the fan-out, which closes every sink), discovery detaches and ends.
    reader.abort();
    server.abort();
    for s in &live_servers {
        s.abort();
    }
    let _ = reader.await;
    for s in live_servers {
        // The socket file goes with its server.
        let _ = s.await;
    }
    if let Ok(open) = open_rx.await
        && open > 0
    {
        info!("{open} connection(s) were still open; their unfinished calls are not recorded");
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            let _ = fanout.join();
            let _ = discovery.join();
        }),
    )
    .await;
    Ok(())
}

/// The record sinks, in the order they see each batch: metrics, OTLP, JSON lines.
fn sinks(
    opts: &RunOptions,
    genai: &Arc<GenAiMetrics>,
    metrics: &Arc<SelfMetrics>,
) -> anyhow::Result<Vec<Box<dyn CallSink>>> {
    let mut sinks: Vec<Box<dyn CallSink>> = vec![Box::new(genai.clone())];
    if let Some(cfg) = opts.otlp.clone() {
        info!(
            "exporting spans over OTLP to {} ({:?})",
            crate::secrets::redact_url(&cfg.endpoint),
            cfg.protocol
        );
        sinks.push(Box::new(OtlpExporter::spawn(cfg, metrics.clone())));
    }
    if let Some(t) = &opts.jsonl {
        let w = JsonlWriter::open_rotating(t, opts.jsonl_max_bytes)?;
        sinks.push(Box::new(JsonlSink::new(w, metrics.clone())));
    }
    Ok(sinks)
}

/// Loads and attaches the probes, scans for TLS libraries and seeds the sockets open before
/// start.
fn load_probes(
    opts: &RunOptions,
    metrics: &SelfMetrics,
) -> anyhow::Result<(Probes, ProbeHandles, Vec<ProbeEvent>)> {
    let (mut probes, handles) = Probes::load(&LoadOptions {
        scope: opts.scope.clone(),
        ring_bytes: opts.ring_bytes,
    })?;
    let mut report = ScanReport::default();
    probes.initial_scan(&mut report);
    discovery::publish_scan(&report, &probes, metrics);
    if probes.tls_file_count() == 0 {
        warn!(
            "no TLS library (OpenSSL, GnuTLS) found yet: TLS traffic is invisible until a process maps one (plaintext HTTP is traced)"
        );
    }
    let seeds = probes.seed_sockets()?;
    if !seeds.is_empty() {
        info!(
            "tracing {} TCP sockets that were open before start",
            seeds.len()
        );
    }
    Ok((probes, handles, seeds))
}

/// Starts a named OS thread.
fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .with_context(|| format!("cannot start the {name} thread"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::queue::{EVENT_OVERHEAD, fit_batch};
    use crate::probes::events::ProbeEvent;
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
            api_key_id: None,
            mcp_session_id: None,
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
                api_key_id: None,
                mcp_session_id: None,
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
        assert_eq!(metrics.dropped_count(DropReason::CaptureGap), 1);
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
