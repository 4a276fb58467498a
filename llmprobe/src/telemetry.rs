//! llmprobe's own metrics: every event, loss, drop and parse failure is counted here and exported
//! on `/metrics` (names start with `llmprobe_`). Shared by every stage.
//!
//! Drop reasons and parse-error protocols are enums ([`Drop`], [`Protocol`]): an increment is one
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
    /// Parse errors by protocol (`http1`, `sse`, `json`).
    pub parse_errors: Family<OneLabel, Counter>,
    /// Things dropped by reason (`not_http`, `not_llm`, `connection_limit`...).
    pub dropped: Family<OneLabel, Counter>,
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
}

impl SelfMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = SelfMetrics {
            events: Counter::default(),
            events_lost: Counter::default(),
            events_malformed: Counter::default(),
            connections_tracked: Gauge::default(),
            parse_errors: Family::default(),
            dropped: Family::default(),
            calls: Counter::default(),
            secrets_masked: Counter::default(),
            tls_libraries: Gauge::default(),
            connections_muted: Counter::default(),
            build_info: Family::default(),
            tracker_memory: Gauge::default(),
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
            m.parse_errors.clone(),
        );
        registry.register(
            "llmprobe_dropped",
            "Connections, exchanges or bytes dropped, by reason",
            m.dropped.clone(),
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

    /// Counts a parse error.
    pub fn parse_error(&self, protocol: &str) {
        self.parse_errors
            .get_or_create(&vec![("protocol".to_owned(), protocol.to_owned())])
            .inc();
    }

    /// Counts a drop.
    pub fn drop_for(&self, reason: &str) {
        self.dropped
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }

    /// Counts `n` drops at once.
    pub fn drop_by(&self, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc_by(n);
    }

    /// Current value of a drop counter.
    pub fn dropped_count(&self, reason: &str) -> u64 {
        self.dropped
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .get()
    }

    /// Current value of a parse error counter.
    pub fn parse_error_count(&self, protocol: &str) -> u64 {
        self.parse_errors
            .get_or_create(&vec![("protocol".to_owned(), protocol.to_owned())])
            .get()
    }
}
