//! llmprobe's own metrics: every event, loss, drop and parse failure is counted here and exported
//! on `/metrics` (names start with `llmprobe_`). Shared by every stage.
//!
//! Drop reasons and parse-error protocols are enums ([`DropReason`], [`Protocol`]): an increment is one
//! atomic add on a counter resolved the first time its label is used (no label vector, no lock
//! after that). A series appears on `/metrics` once it has been counted.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set with one label.
pub type OneLabel = Vec<(String, String)>;

/// An enum whose variants are the values of one label.
pub trait LabelValue: Copy + 'static {
    /// Every value, in declaration order (the index of a value is its position here).
    const ALL: &'static [Self];
    /// The label value.
    fn as_str(self) -> &'static str;
    /// Its position in [`LabelValue::ALL`].
    fn index(self) -> usize;
}

macro_rules! label_values {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $v,)*
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl LabelValue for $name {
            const ALL: &'static [Self] = &[$($name::$v,)*];
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)*
                }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label_values! {
    /// Why something was dropped, refused or cut: the `reason` label of `llmprobe_dropped_total`.
    DropReason {
        /// An API credential longer than the masker keeps: its fingerprint is of its prefix.
        ApiKeyPrefixOnly => "api_key_prefix_only",
        /// An API credential split across pieces found the masker's table of split values
        /// full: masked, but no fingerprint.
        ApiKeyTableFull => "api_key_table_full",
        BodyOverLimit => "body_over_limit",
        CaptureGap => "capture_gap",
        CaptureHttp2 => "capture_http2",
        CaptureSizeLimit => "capture_size_limit",
        CaptureTableFull => "capture_table_full",
        CaptureUnclassified => "capture_unclassified",
        ConnectionEvicted => "connection_evicted",
        /// A call whose model has no price in the table (`--prices`): no `cost` on its record.
        CostUnpricedModel => "cost_unpriced_model",
        ConnectionLimitPerProcess => "connection_limit_per_process",
        /// A conversation forgotten before it ended, to keep the matcher in its bounds (in all
        /// or per process): it is not observed in the conversation metrics.
        ConversationEvicted => "conversation_evicted",
        /// A tool-call id forgotten by the agent-loop index (`llm::tool_chain`) to stay in its
        /// bounds: a later call answering it is not linked.
        ToolLinkEvicted => "tool_link_evicted",
        /// Opt-in content (`--capture-content`) of a call cut to `--content-max-bytes`: a text
        /// ends with `…`, or the oldest messages were left out.
        ContentTruncated => "content_truncated",
        DiscoveryCapReached => "discovery_cap_reached",
        DiscoveryGoArch => "discovery_go_arch",
        DiscoveryGoCode => "discovery_go_code",
        DiscoveryGoMalformed => "discovery_go_malformed",
        DiscoveryGoNoPclntab => "discovery_go_no_pclntab",
        DiscoveryGoPclntabVersion => "discovery_go_pclntab_version",
        DiscoveryGoStackAbi => "discovery_go_stack_abi",
        DiscoveryIdentityMismatch => "discovery_identity_mismatch",
        DiscoveryNotElf => "discovery_not_elf",
        DiscoveryNotRegular => "discovery_not_regular",
        DiscoveryOpenFailed => "discovery_open_failed",
        DiscoveryOpenat2Unsupported => "discovery_openat2_unsupported",
        DiscoveryOutsideRoot => "discovery_outside_root",
        DiscoveryReadFailed => "discovery_read_failed",
        DiscoveryRequestDropped => "discovery_request_dropped",
        DiscoveryScanRateLimited => "discovery_scan_rate_limited",
        DiscoveryShortRead => "discovery_short_read",
        DiscoveryTooLarge => "discovery_too_large",
        DiscoveryTooManySymbols => "discovery_too_many_symbols",
        EvictedUnansweredRequest => "evicted_unanswered_request",
        /// A server-role LLM call not registered for the gateway join (per-process or total
        /// bound of `llm::gateway`): upstream calls it makes are not joined to it.
        GatewayJoinRefused => "gateway_join_refused",
        IdleConnection => "idle_connection",
        /// A connection whose first captured bytes were the middle of a message (probes attached
        /// while it was busy): skipped up to the next message start, that call not recorded.
        JoinedMidStream => "joined_mid_stream",
        JsonlWriteFailed => "jsonl_write_failed",
        KernelDiscoveryHintRateLimited => "kernel_discovery_hint_rate_limited",
        KernelFairShare => "kernel_fair_share",
        /// A fork hint (a traced process's new child) not sent by the kernel: its parent
        /// process, user or the node had sent their share this second.
        KernelForkHintRateLimited => "kernel_fork_hint_rate_limited",
        /// A TLS hello not sent by the kernel (`--scope auto`): its process, user or the node
        /// had sent their share this second.
        KernelHelloRateLimited => "kernel_tls_hello_rate_limited",
        KernelMapInsertFailed => "kernel_map_insert_failed",
        /// A forked child of a listed process not listed by the kernel: its user or the node
        /// already held its share of inherited `SCOPE` entries (it waits for userspace).
        KernelScopeInheritQuota => "kernel_scope_inherit_quota",
        KernelSocketLimitPerProcess => "kernel_socket_limit_per_process",
        KernelSocketTableEvicted => "kernel_socket_table_evicted",
        KernelSslLinkTableEvicted => "kernel_ssl_link_table_evicted",
        /// The live view's API or page server: `accept` failed (e.g. out of descriptors).
        LiveAcceptError => "live_accept_error",
        /// The live view's API or page server: a request it does not answer (method, head,
        /// Host that names no loopback or address literal).
        LiveBadRequest => "live_bad_request",
        /// The live view's API or page server: a connection closed for a newer one.
        LiveConnectionLimit => "live_connection_limit",
        /// The live view's API or page server: a request not delivered and answered in time.
        LiveRequestTimeout => "live_request_timeout",
        MemoryBudget => "memory_budget",
        MetricsAcceptError => "metrics_accept_error",
        MetricsBadRequest => "metrics_bad_request",
        MetricsConnectionLimit => "metrics_connection_limit",
        MetricsRequestTimeout => "metrics_request_timeout",
        MetricsScrapeCut => "metrics_scrape_cut",
        /// An HTTP/2 request stream not followed: its connection already follows the most
        /// streams at once (`MAX_STREAMS`).
        Http2StreamLimit => "http2_stream_limit",
        /// HTTP/2 header fields not kept: past 256 fields of a block, or a decoded head's 256
        /// fields / 64 KiB.
        Http2HeaderFieldsDropped => "http2_header_fields_dropped",
        NotHttp => "not_http",
        NotLlm => "not_llm",
        OtlpExportFailed => "otlp_export_failed",
        OtlpQueueFull => "otlp_queue_full",
        PendingExchangeLimit => "pending_exchange_limit",
        ResponseWithoutRequest => "response_without_request",
        /// A process in scope not probed: the per-process uprobe caps (processes, links, its
        /// user's share, admissions, the kernel's `SCOPE` map) were reached.
        ScopeCapReached => "scope_cap_reached",
        /// A TLS library not probed in a process that already has `MAX_FILES_PER_PROCESS`
        /// files probed (many copies of libssl mapped to take the per-process links).
        ScopeProcessFiles => "scope_process_files",
        /// A process not probed (or a file of it): its user already holds half the
        /// per-process uprobe links.
        ScopeUserLinks => "scope_user_links",
        ScrubStateEvicted => "scrub_state_evicted",
        ScrubStateLost => "scrub_state_lost",
        SinkBackpressure => "sink_backpressure",
        SocketTableFull => "socket_table_full",
        SslLinkTableFull => "ssl_link_table_full",
        SslLinksPerFd => "ssl_links_per_fd",
        /// A TLS hello whose server name lies past the bytes the kernel sends (`--scope
        /// auto` cannot tell whether the process talks to an LLM API from it).
        TlsHelloTruncated => "tls_hello_truncated",
        TrackerQueueFull => "tracker_queue_full",
        UndecodableBody => "undecodable_body",
    }
}

label_values! {
    /// Which parser failed: the `protocol` label of `llmprobe_parse_errors_total`.
    Protocol {
        Http1 => "http1",
        Http2 => "http2",
        Sse => "sse",
        Ndjson => "ndjson",
        Json => "json",
    }
}

/// One counter family with one label whose values are `E`'s: counters resolved once.
pub struct LabeledCounters<E: LabelValue> {
    family: Family<OneLabel, Counter>,
    label: &'static str,
    cells: Box<[OnceLock<Counter>]>,
    _values: std::marker::PhantomData<E>,
}

impl<E: LabelValue> LabeledCounters<E> {
    fn new(label: &'static str) -> Self {
        LabeledCounters {
            family: Family::default(),
            label,
            cells: E::ALL.iter().map(|_| OnceLock::new()).collect(),
            _values: std::marker::PhantomData,
        }
    }

    /// The counter of `v` (created in the family on first use).
    pub fn get(&self, v: E) -> &Counter {
        self.cells[v.index()].get_or_init(|| {
            self.family
                .get_or_create(&vec![(self.label.to_owned(), v.as_str().to_owned())])
                .clone()
        })
    }
}

/// The self-metrics.
pub struct SelfMetrics {
    /// Probe events received from the kernel (or a capture).
    pub events: Counter,
    /// Ring-buffer records the kernel could not write.
    pub events_lost: Counter,
    /// Events that could not be decoded.
    pub events_malformed: Counter,
    /// Connections currently tracked.
    pub connections_tracked: Gauge,
    /// Parse errors by protocol.
    pub parse_errors: LabeledCounters<Protocol>,
    /// Things dropped, refused or cut, by reason.
    pub dropped: LabeledCounters<DropReason>,
    /// LLM call records produced.
    pub calls: Counter,
    /// Secret header values masked.
    pub secrets_masked: Counter,
    /// Files carrying OpenSSL with uprobes attached.
    pub tls_libraries: Gauge,
    /// Connections the kernel was told to stop capturing.
    pub connections_muted: Counter,
    /// Build information (value 1).
    pub build_info: Family<OneLabel, Gauge>,
    /// Heap bytes the tracker's connections hold (bounded by the memory budget).
    pub tracker_memory: Gauge,
    /// Texts replaced in captured content, by redaction rule (`--capture-content`).
    pub redactions: Family<OneLabel, Counter>,
}

impl SelfMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = SelfMetrics {
            events: Counter::default(),
            events_lost: Counter::default(),
            events_malformed: Counter::default(),
            connections_tracked: Gauge::default(),
            parse_errors: LabeledCounters::new("protocol"),
            dropped: LabeledCounters::new("reason"),
            calls: Counter::default(),
            secrets_masked: Counter::default(),
            tls_libraries: Gauge::default(),
            connections_muted: Counter::default(),
            build_info: Family::default(),
            tracker_memory: Gauge::default(),
            redactions: Family::default(),
        };
        registry.register("llmprobe_events", "Probe events received", m.events.clone());
        registry.register(
            "llmprobe_events_lost",
            "Probe events the kernel could not write to the ring buffer",
            m.events_lost.clone(),
        );
        registry.register(
            "llmprobe_events_malformed",
            "Probe events that could not be decoded",
            m.events_malformed.clone(),
        );
        registry.register(
            "llmprobe_connections_tracked",
            "Connections currently tracked",
            m.connections_tracked.clone(),
        );
        registry.register(
            "llmprobe_parse_errors",
            "Parse errors by protocol",
            m.parse_errors.family.clone(),
        );
        registry.register(
            "llmprobe_dropped",
            "Connections, exchanges or bytes dropped, by reason",
            m.dropped.family.clone(),
        );
        registry.register(
            "llmprobe_llm_calls",
            "LLM call records produced",
            m.calls.clone(),
        );
        registry.register(
            "llmprobe_secrets_masked",
            "Secret header values masked in captured bytes",
            m.secrets_masked.clone(),
        );
        registry.register(
            "llmprobe_tls_libraries_attached",
            "Files with OpenSSL uprobes attached",
            m.tls_libraries.clone(),
        );
        registry.register(
            "llmprobe_connections_muted",
            "Connections the kernel was told to stop capturing (not LLM traffic)",
            m.connections_muted.clone(),
        );
        registry.register(
            "llmprobe_build_info",
            "llmprobe build information",
            m.build_info.clone(),
        );
        registry.register(
            "llmprobe_tracker_memory_bytes",
            "Heap bytes held for open connections and calls (bounded by --memory-limit)",
            m.tracker_memory.clone(),
        );
        registry.register(
            "llmprobe_redactions",
            "Texts replaced in captured content (--capture-content), by redaction rule",
            m.redactions.clone(),
        );
        m.build_info
            .get_or_create(&vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )])
            .set(1);
        m
    }

    /// Metrics that are not registered anywhere (tests, replays without a server).
    pub fn unregistered() -> Self {
        Self::new(&mut Registry::default())
    }

    /// Counts `n` redactions by `rule`.
    pub fn redacted(&self, rule: &str, n: u64) {
        self.redactions
            .get_or_create(&vec![("rule".to_owned(), rule.to_owned())])
            .inc_by(n);
    }

    /// Counts a parse error.
    pub fn parse_error(&self, protocol: Protocol) {
        self.parse_errors.get(protocol).inc();
    }

    /// Counts a drop.
    pub fn drop_for(&self, reason: DropReason) {
        self.dropped.get(reason).inc();
    }

    /// Counts `n` drops at once.
    pub fn drop_by(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.dropped.get(reason).inc_by(n);
        }
    }

    /// Current value of a drop counter.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason).get()
    }

    /// Current value of a parse error counter.
    pub fn parse_error_count(&self, protocol: Protocol) -> u64 {
        self.parse_errors.get(protocol).get()
    }
}

/// The agent process's own resources under the names every Prometheus client library uses
/// (`process_*`), read from `/proc/self` once a second by the live agent.
pub struct ProcessMetrics {
    resident: Gauge,
    cpu: Counter<f64, std::sync::atomic::AtomicU64>,
    open_fds: Gauge,
    start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// CPU seconds already counted.
    cpu_seen: std::sync::Mutex<f64>,
}

impl ProcessMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = ProcessMetrics {
            resident: Gauge::default(),
            cpu: Counter::default(),
            open_fds: Gauge::default(),
            start_time: Gauge::default(),
            cpu_seen: std::sync::Mutex::new(0.0),
        };
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size of the agent in bytes",
            m.resident.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of the agent in seconds",
            m.cpu.clone(),
        );
        registry.register(
            "process_open_fds",
            "File descriptors the agent holds open",
            m.open_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the agent since the Unix epoch in seconds",
            m.start_time.clone(),
        );
        m
    }

    /// Reads `/proc/self` (statm, stat, fd) into the metrics; a file that cannot be read leaves
    /// its metric as it was.
    pub fn sample(&self) {
        // SAFETY: sysconf has no preconditions.
        let (page, hz) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|t| t.split_whitespace().nth(1)?.parse::<i64>().ok())
        {
            self.resident.set(rss.saturating_mul(page.max(1)));
        }
        if let Some((cpu, start)) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| stat_times(&t, hz.max(1) as f64))
        {
            let mut seen = self
                .cpu_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if cpu > *seen {
                self.cpu.inc_by(cpu - *seen);
                *seen = cpu;
            }
            if let Some(boot) = boot_time() {
                self.start_time.set(boot + start);
            }
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(d.count() as i64);
        }
    }
}

/// CPU seconds (utime + stime) and the start time after boot (seconds) from `/proc/PID/stat`
/// (the fields after the process name, which may hold spaces and parentheses).
fn stat_times(stat: &str, hz: f64) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let start: f64 = f.get(19)?.parse().ok()?;
    Some(((utime + stime) / hz, start / hz))
}

/// The boot time, seconds since the Unix epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_times_are_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1000 0 0";
        assert_eq!(stat_times(stat, 100.0), Some((3.0, 10.0)));
        assert_eq!(stat_times("42 (x", 100.0), None);
        let m = ProcessMetrics::new(&mut Registry::default());
        m.sample();
        assert!(m.resident.get() > 0);
        assert!(m.open_fds.get() > 0);
        assert!(m.start_time.get() > 1.0e9);
    }

    #[test]
    fn a_counter_is_resolved_once_and_shows_once_used() {
        let mut reg = Registry::default();
        let m = SelfMetrics::new(&mut reg);
        let text = |reg: &Registry| {
            let mut s = String::new();
            prometheus_client::encoding::text::encode(&mut s, reg).expect("encode");
            s
        };
        assert!(!text(&reg).contains("reason=\"not_llm\""));
        m.drop_for(DropReason::NotLlm);
        m.drop_by(DropReason::NotLlm, 2);
        m.drop_by(DropReason::NotHttp, 0);
        m.parse_error(Protocol::Sse);
        assert_eq!(m.dropped_count(DropReason::NotLlm), 3);
        let t = text(&reg);
        assert!(
            t.contains("llmprobe_dropped_total{reason=\"not_llm\"} 3"),
            "{t}"
        );
        assert!(!t.contains("not_http"), "a zero add creates no series: {t}");
        assert!(
            t.contains("llmprobe_parse_errors_total{protocol=\"sse\"} 1"),
            "{t}"
        );
    }

    #[test]
    fn label_values_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for (i, d) in DropReason::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
            assert!(seen.insert(d.as_str()), "{}", d.as_str());
        }
    }
}
