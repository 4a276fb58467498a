//! `llmprobe record`: what reaches a capture file, and how the file is created.
//!
//! A capture holds payload: the plaintext of the connections it keeps (prompts and completions
//! included, secret values already masked by the scrubber). So:
//! - the file is created new (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600): an existing path,
//!   a symlink planted where the file should go, or a file another user can read are refused;
//! - it stops growing at `max_bytes` (whole lines only); what is left out is counted;
//! - by default only connections the tracker classified as LLM traffic are kept: a connection's
//!   events are held (bounded) until the tracker decides, then written or discarded. Its
//!   connect/accept and SSL→fd events are written just before its first bytes, so a replay still
//!   knows its peer. `all_traffic` keeps every connection's bytes;
//! - HTTP/2 connections (the client preface `PRI * HTTP/2.0`) are never written, even with
//!   `all_traffic`: their headers are HPACK-coded and cannot be masked.
//!
//! Invariants: a connection's events keep their order; nothing of a connection that is not kept
//! is written; every bound is a counted drop (`llmprobe_dropped_total{reason="capture_*"}`).

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use log::warn;

use super::capture::{CaptureWriter, encode_line};
use super::events::ProbeEvent;
use crate::clock::Clock;
use crate::telemetry::{DropReason, SelfMetrics};

/// Default size cap of a capture file.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Bytes of one connection held while the tracker has not classified it yet.
const MAX_PENDING_PER_CONN: usize = 1024 * 1024;
/// Bytes held over all unclassified connections.
const MAX_PENDING_TOTAL: usize = 32 * 1024 * 1024;
/// Connections (and sockets, SSL links) remembered at once.
const MAX_TRACKED: usize = 65_536;

/// Bytes needed to recognise the HTTP/2 client connection preface.
const H2_PREFACE_LEN: usize = crate::secrets::HTTP2_PREFACE.len();

/// What `record` keeps.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The capture file (must not exist).
    pub path: PathBuf,
    /// Stop writing once the file would exceed this size.
    pub max_bytes: u64,
    /// Keep every connection's bytes, not only LLM connections'.
    pub all_traffic: bool,
}

/// What the tracker has decided about a connection, as the recorder asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnClass {
    /// Carries LLM calls: keep it.
    Llm,
    /// Not decided yet.
    Unknown,
}

enum ConnState {
    /// Held until the tracker decides.
    Pending {
        events: Vec<ProbeEvent>,
        bytes: usize,
    },
    /// Written.
    Kept,
    /// Never written.
    Dropped,
}

/// Creates a capture file safely: new, not through a symlink, readable by its owner only.
pub fn create_capture_file(path: &Path) -> anyhow::Result<std::fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create capture file {}: it must be a new file (an existing file or symlink is never overwritten); choose another path or remove it",
                path.display()
            )
        })
}

/// A `Write` that counts what passed through.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the events of the connections a capture keeps.
pub struct Recorder<W: Write> {
    out: Option<CaptureWriter<Counting<W>>>,
    max_bytes: u64,
    all_traffic: bool,
    conns: HashMap<(u32, u64), ConnState>,
    pending_bytes: usize,
    /// Latest connect/accept of each socket (pid, fd), written before its connection's bytes.
    opens: HashMap<(u32, i32), ProbeEvent>,
    /// First TLS record written on each socket (pid, fd), written after its open.
    tls_starts: HashMap<(u32, i32), ProbeEvent>,
    /// Latest SSL→fd link of each TLS connection.
    ssl_links: HashMap<(u32, u64), ProbeEvent>,
    /// Sockets whose events are written (their close is written too).
    kept_fds: HashSet<(u32, i32)>,
    /// Processes with a kept connection (their exit is written too).
    kept_pids: HashSet<u32>,
    scratch: Vec<u8>,
    metrics: std::sync::Arc<SelfMetrics>,
}

impl Recorder<BufWriter<std::fs::File>> {
    /// Creates the capture file and logs what it will hold.
    pub fn create(
        opts: &RecordOptions,
        clock: Clock,
        metrics: std::sync::Arc<SelfMetrics>,
    ) -> anyhow::Result<Self> {
        let file = create_capture_file(&opts.path)?;
        warn!(
            "recording to {:?}: the capture holds the plaintext payload (prompts and completions) of {}, with secret header, query and credential values masked; it is readable by root only (mode 0600) and stops at {} bytes",
            opts.path,
            if opts.all_traffic {
                "every traced connection except HTTP/2 (--all-traffic)"
            } else {
                "LLM connections only"
            },
            opts.max_bytes
        );
        Recorder::new(
            BufWriter::new(file),
            clock,
            opts.max_bytes,
            opts.all_traffic,
            metrics,
        )
    }
}

impl<W: Write> Recorder<W> {
    /// A recorder writing to `out`.
    pub fn new(
        out: W,
        clock: Clock,
        max_bytes: u64,
        all_traffic: bool,
        metrics: std::sync::Arc<SelfMetrics>,
    ) -> anyhow::Result<Self> {
        let out = CaptureWriter::new(
            Counting {
                inner: out,
                written: 0,
            },
            clock,
        )?;
        Ok(Recorder {
            out: Some(out),
            max_bytes,
            all_traffic,
            conns: HashMap::new(),
            pending_bytes: 0,
            opens: HashMap::new(),
            tls_starts: HashMap::new(),
            ssl_links: HashMap::new(),
            kept_fds: HashSet::new(),
            kept_pids: HashSet::new(),
            scratch: Vec::new(),
            metrics,
        })
    }

    /// True while the capture is still being written.
    pub fn active(&self) -> bool {
        self.out.is_some()
    }

    /// Handles one event after the tracker has seen it; `class` asks the tracker about a
    /// connection (pid, conn id).
    pub fn observe(&mut self, ev: ProbeEvent, class: impl Fn(u32, u64) -> ConnClass) {
        if self.out.is_none() {
            return;
        }
        match &ev {
            ProbeEvent::Data(d) => {
                let key = (d.meta.pid, d.meta.conn_id);
                let state = match self.conns.get_mut(&key) {
                    Some(s) => s,
                    None => {
                        if self.conns.len() >= MAX_TRACKED {
                            self.metrics.drop_for(DropReason::CaptureTableFull);
                            return;
                        }
                        self.conns.entry(key).or_insert(ConnState::Pending {
                            events: Vec::new(),
                            bytes: 0,
                        })
                    }
                };
                match state {
                    ConnState::Dropped => {}
                    ConnState::Kept => {
                        bounded_insert(&mut self.kept_fds, (d.meta.pid, d.meta.fd));
                        self.write(&ev);
                    }
                    ConnState::Pending { events, bytes } => {
                        let len = d.data.len();
                        *bytes += len;
                        self.pending_bytes += len;
                        events.push(ev);
                        let h2 = is_h2_start(&first_bytes(events));
                        if h2 == Some(true) {
                            self.metrics.drop_for(DropReason::CaptureHttp2);
                            self.drop_pending(key);
                            return;
                        }
                        let decided = h2.is_some();
                        let over =
                            *bytes > MAX_PENDING_PER_CONN || self.pending_bytes > MAX_PENDING_TOTAL;
                        let keep =
                            decided && (self.all_traffic || class(key.0, key.1) == ConnClass::Llm);
                        if keep {
                            self.keep(key);
                        } else if over {
                            self.metrics.drop_for(DropReason::CaptureUnclassified);
                            self.drop_pending(key);
                        }
                    }
                }
            }
            ProbeEvent::ConnOpen { meta, .. } => {
                if self.opens.len() < MAX_TRACKED || self.opens.contains_key(&(meta.pid, meta.fd)) {
                    self.tls_starts.remove(&(meta.pid, meta.fd));
                    self.opens.insert((meta.pid, meta.fd), ev);
                }
            }
            ProbeEvent::TlsStart { meta } => {
                let key = (meta.pid, meta.fd);
                if self.tls_starts.len() < MAX_TRACKED || self.tls_starts.contains_key(&key) {
                    self.tls_starts.insert(key, ev);
                }
            }
            ProbeEvent::SslFd { meta } => {
                let key = (meta.pid, meta.conn_id);
                if matches!(self.conns.get(&key), Some(ConnState::Kept)) {
                    bounded_insert(&mut self.kept_fds, (meta.pid, meta.fd));
                    self.write(&ev);
                } else if self.ssl_links.len() < MAX_TRACKED || self.ssl_links.contains_key(&key) {
                    self.ssl_links.insert(key, ev);
                }
            }
            ProbeEvent::ConnClose { meta } => {
                let (pid, fd) = (meta.pid, meta.fd);
                self.opens.remove(&(pid, fd));
                self.tls_starts.remove(&(pid, fd));
                if self.kept_fds.remove(&(pid, fd)) {
                    self.write(&ev);
                }
                self.forget((pid, meta.conn_id));
            }
            ProbeEvent::SslFree { meta } => {
                let key = (meta.pid, meta.conn_id);
                self.ssl_links.remove(&key);
                if matches!(self.conns.get(&key), Some(ConnState::Kept)) {
                    self.write(&ev);
                }
                self.forget(key);
            }
            ProbeEvent::ProcExit { meta } => {
                let pid = meta.pid;
                if self.kept_pids.remove(&pid) {
                    self.write(&ev);
                }
                let gone: Vec<(u32, u64)> =
                    self.conns.keys().filter(|k| k.0 == pid).copied().collect();
                for k in gone {
                    self.forget(k);
                }
                self.opens.retain(|k, _| k.0 != pid);
                self.tls_starts.retain(|k, _| k.0 != pid);
                self.ssl_links.retain(|k, _| k.0 != pid);
                self.kept_fds.retain(|k| k.0 != pid);
            }
            // Discovery hints are not part of a capture: replay needs none of them.
            ProbeEvent::ExecMap { .. } => {}
        }
    }

    /// Connections the tracker muted or failed: never written.
    pub fn not_llm(&mut self, conns: &[(u32, u64)]) {
        if self.all_traffic {
            return;
        }
        for key in conns {
            if matches!(self.conns.get(key), Some(ConnState::Pending { .. })) {
                self.drop_pending(*key);
            }
        }
    }

    /// Flushes the file.
    pub fn flush(&mut self) {
        if let Some(o) = self.out.as_mut()
            && let Err(e) = o.flush()
        {
            warn!("capture write failed, recording stops: {e:#}");
            self.out = None;
        }
    }

    fn forget(&mut self, key: (u32, u64)) {
        if let Some(ConnState::Pending { bytes, .. }) = self.conns.remove(&key) {
            self.pending_bytes -= bytes;
        }
    }

    fn drop_pending(&mut self, key: (u32, u64)) {
        self.forget(key);
        if self.conns.len() < MAX_TRACKED {
            self.conns.insert(key, ConnState::Dropped);
        }
    }

    fn keep(&mut self, key: (u32, u64)) {
        let Some(ConnState::Pending { events, bytes }) = self.conns.insert(key, ConnState::Kept)
        else {
            return;
        };
        self.pending_bytes -= bytes;
        bounded_insert(&mut self.kept_pids, key.0);
        // The socket's open and the SSL link first, so a replay knows the connection's peer.
        let link = self.ssl_links.remove(&key);
        let fd = link.as_ref().map(|l| l.meta().fd).or_else(|| {
            events.iter().find_map(|e| match e {
                ProbeEvent::Data(d) if !d.tls => Some(d.meta.fd),
                _ => None,
            })
        });
        if let Some(fd) = fd
            && bounded_insert(&mut self.kept_fds, (key.0, fd))
            && let Some(open) = self.opens.get(&(key.0, fd)).cloned()
        {
            self.write(&open);
            if let Some(start) = self.tls_starts.remove(&(key.0, fd)) {
                self.write(&start);
            }
        }
        if let Some(link) = link {
            self.write(&link);
        }
        for ev in &events {
            self.write(ev);
        }
    }

    fn write(&mut self, ev: &ProbeEvent) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        self.scratch.clear();
        if let Err(e) = encode_line(ev, &mut self.scratch) {
            warn!("capture event could not be encoded: {e:#}");
            return;
        }
        let written = out.get_ref().written;
        if written + self.scratch.len() as u64 > self.max_bytes {
            warn!(
                "capture reached --max-bytes ({} bytes): recording stops; the agent goes on",
                self.max_bytes
            );
            self.metrics.drop_for(DropReason::CaptureSizeLimit);
            self.flush();
            self.out = None;
            return;
        }
        if let Err(e) = out.write_raw(&self.scratch) {
            warn!("capture write failed, recording stops: {e:#}");
            self.out = None;
        }
    }
}

/// Inserts into a set that holds at most `MAX_TRACKED` entries; true when newly inserted. (A
/// socket or process left out only loses its close or exit line in the capture.)
fn bounded_insert<T: std::hash::Hash + Eq>(set: &mut HashSet<T>, v: T) -> bool {
    if set.len() >= MAX_TRACKED && !set.contains(&v) {
        return false;
    }
    set.insert(v)
}

/// The first bytes of a connection's held events, enough to recognise the HTTP/2 preface.
fn first_bytes(events: &[ProbeEvent]) -> Vec<u8> {
    let mut head = Vec::new();
    for e in events {
        if let ProbeEvent::Data(d) = e {
            let more = (H2_PREFACE_LEN - head.len()).min(d.data.len());
            head.extend_from_slice(&d.data[..more]);
            if head.len() == H2_PREFACE_LEN {
                break;
            }
        }
    }
    head
}

/// Whether a connection's first bytes open HTTP/2: the client preface, or a server's SETTINGS
/// frame (HTTP/2 over TLS: the server may write it before it reads the client's preface; the
/// tracker opens an HTTP/2 session on either). `Some(true)` it is, `Some(false)` it is not,
/// `None` too short to tell.
fn is_h2_start(first: &[u8]) -> Option<bool> {
    use crate::protocol::http2::looks_like_server_preface;
    if first.len() >= 9 && looks_like_server_preface(first) {
        return Some(true);
    }
    // A frame header starts with its length's high byte: 0 for a SETTINGS frame.
    let maybe_settings = first.first() == Some(&0) && first.len() < 9;
    if !first.is_empty() && !crate::secrets::is_http2_preface(first) && !maybe_settings {
        Some(false)
    } else if first.len() >= H2_PREFACE_LEN {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::conntrack::{TrackerConfig, TrackerOutput};
    use crate::probes::capture::read_capture;
    use crate::probes::events::{DataChunk, Direction, EventMeta};

    const PID: u32 = 77;

    fn meta(fd: i32, conn_id: u64, ts: u64) -> EventMeta {
        EventMeta {
            pid: PID,
            tid: PID,
            fd,
            conn_id,
            ts_ns: ts,
            comm: "app".into(),
            container: None,
        }
    }

    fn data(fd: i32, conn_id: u64, ts: u64, dir: Direction, bytes: &[u8]) -> ProbeEvent {
        ProbeEvent::Data(DataChunk {
            meta: meta(fd, conn_id, ts),
            direction: dir,
            tls: conn_id & 1 == 0,
            offset: 0,
            total_len: bytes.len() as u32,
            lost_before: false,
            data: Bytes::copy_from_slice(bytes),
            api_key_id: None,
            mcp_session_id: None,
        })
    }

    fn open(fd: i32, conn_id: u64) -> ProbeEvent {
        ProbeEvent::ConnOpen {
            meta: meta(fd, conn_id, 1),
            peer: Some("127.0.0.1:8000".parse().expect("addr")),
            connect_ns: Some(0),
        }
    }

    const LLM_REQ: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 46\r\n\r\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}\r\n";
    const LLM_RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 78\r\n\r\n{\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\r\n";

    /// Runs events through a real tracker and a recorder, returns the capture bytes.
    fn record(events: Vec<ProbeEvent>, max: u64, all: bool) -> (Vec<u8>, Arc<SelfMetrics>) {
        let metrics = Arc::new(SelfMetrics::unregistered());
        let clock = Clock { offset_ns: 5 };
        let mut tracker =
            crate::llm::tracking::tracker(TrackerConfig::default(), clock, metrics.clone());
        let mut buf = Vec::new();
        {
            let mut rec =
                Recorder::new(&mut buf, clock, max, all, metrics.clone()).expect("recorder");
            let mut out = TrackerOutput::default();
            for ev in events {
                crate::pipeline::track::track(&mut tracker, Some(&mut rec), ev, &mut out);
            }
            rec.flush();
        }
        (buf, metrics)
    }

    /// Two plaintext connections, one LLM and one health check, interleaved.
    fn mixed() -> Vec<ProbeEvent> {
        let health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        let health_resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut evs = vec![open(5, 11), open(6, 13)];
        for i in 0..4u64 {
            evs.push(data(6, 13, 10 + i * 4, Direction::Egress, health));
            evs.push(data(6, 13, 11 + i * 4, Direction::Ingress, health_resp));
        }
        evs.push(data(5, 11, 20, Direction::Egress, LLM_REQ));
        evs.push(data(5, 11, 30, Direction::Ingress, LLM_RESP));
        evs.push(ProbeEvent::ConnClose {
            meta: meta(6, 13, 40),
        });
        evs.push(ProbeEvent::ConnClose {
            meta: meta(5, 11, 41),
        });
        evs
    }

    #[test]
    fn keeps_only_llm_connections_and_replays_the_same_records() {
        let events = mixed();
        let (buf, _) = record(events.clone(), DEFAULT_MAX_BYTES, false);
        let text = String::from_utf8_lossy(&buf);
        assert!(!text.contains("/health"), "{text}");
        let (clock, back) = read_capture(&buf[..]).expect("capture");
        assert_eq!(clock.offset_ns, 5);
        // The LLM connection whole: its open, both directions, its close.
        assert!(back.iter().all(|e| e.meta().conn_id == 11), "{back:#?}");
        assert_eq!(back.len(), 4, "{back:#?}");
        assert!(matches!(back[0], ProbeEvent::ConnOpen { .. }));
        let direct = crate::pipeline::replay::replay_events(
            Clock { offset_ns: 5 },
            events,
            TrackerConfig::default(),
            Arc::new(SelfMetrics::unregistered()),
        );
        let replayed = crate::pipeline::replay::replay_events(
            clock,
            back,
            TrackerConfig::default(),
            Arc::new(SelfMetrics::unregistered()),
        );
        assert_eq!(direct.len(), 1);
        assert_eq!(
            serde_json::to_string(&direct).expect("json"),
            serde_json::to_string(&replayed).expect("json")
        );
    }

    #[test]
    fn a_kept_tls_connection_carries_its_socket_tls_start_and_replays_its_times() {
        let tls_start = |fd, generation, ts| ProbeEvent::TlsStart {
            meta: meta(fd, generation, ts),
        };
        let events = vec![
            open(8, 21),
            open(9, 23),
            tls_start(9, 23, 2),
            tls_start(8, 21, 3),
            ProbeEvent::SslFd {
                meta: meta(8, 0x100, 4),
            },
            data(8, 0x100, 20, Direction::Egress, LLM_REQ),
            data(8, 0x100, 30, Direction::Ingress, LLM_RESP),
        ];
        let (buf, _) = record(events.clone(), DEFAULT_MAX_BYTES, false);
        let (clock, back) = read_capture(&buf[..]).expect("capture");
        // The open, its TLS start, the link, the bytes: nothing of the other socket.
        assert_eq!(back.len(), 5, "{back:#?}");
        assert!(matches!(back[0], ProbeEvent::ConnOpen { .. }));
        assert_eq!(back[1], tls_start(8, 21, 3));
        let replay = |evs| {
            crate::pipeline::replay::replay_events(
                clock,
                evs,
                TrackerConfig::default(),
                Arc::new(SelfMetrics::unregistered()),
            )
        };
        let (direct, replayed) = (replay(events), replay(back));
        assert_eq!(direct.len(), 1);
        assert_eq!(direct[0].connect_s, Some(3e-9));
        assert_eq!(direct[0].tls_handshake_s, Some(17e-9));
        assert_eq!(
            serde_json::to_string(&direct).expect("json"),
            serde_json::to_string(&replayed).expect("json")
        );
    }

    #[test]
    fn all_traffic_keeps_the_rest() {
        let (buf, _) = record(mixed(), DEFAULT_MAX_BYTES, true);
        let (_, back) = read_capture(&buf[..]).expect("capture");
        assert_eq!(back.len(), mixed().len(), "{back:#?}");
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[test]
    fn http2_is_never_recorded_even_with_all_traffic() {
        for cut in 1..PREFACE.len() {
            let mut evs = vec![open(7, 21)];
            evs.push(data(7, 21, 10, Direction::Egress, &PREFACE[..cut]));
            evs.push(data(7, 21, 11, Direction::Egress, &PREFACE[cut..]));
            evs.push(data(
                7,
                21,
                12,
                Direction::Egress,
                b"\x00\x00\x10\x01\x04authorization: Bearer sk-h2",
            ));
            let (buf, metrics) = record(evs, DEFAULT_MAX_BYTES, true);
            let (_, back) = read_capture(&buf[..]).expect("capture");
            assert!(back.is_empty(), "cut {cut}: {back:#?}");
            assert_eq!(metrics.dropped_count(DropReason::CaptureHttp2), 1);
        }
        // HTTP/2 over TLS whose server sends its SETTINGS first (as soon as ALPN chose h2): the
        // preface and a header block follow; nothing is written, whatever the cut.
        let settings = crate::protocol::http2::frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        for cut in 1..settings.len() {
            let mut evs = vec![open(7, 22)];
            evs.push(data(7, 22, 10, Direction::Ingress, &settings[..cut]));
            evs.push(data(7, 22, 11, Direction::Ingress, &settings[cut..]));
            evs.push(data(7, 22, 12, Direction::Egress, PREFACE));
            evs.push(data(
                7,
                22,
                13,
                Direction::Egress,
                b"\x00\x00\x10\x01\x04authorization: Bearer sk-h2",
            ));
            let (buf, metrics) = record(evs, DEFAULT_MAX_BYTES, true);
            let (_, back) = read_capture(&buf[..]).expect("capture");
            assert!(back.is_empty(), "server first, cut {cut}: {back:#?}");
            assert_eq!(metrics.dropped_count(DropReason::CaptureHttp2), 1);
        }
    }

    #[test]
    fn stops_at_max_bytes_with_whole_lines() {
        let header_only = record(Vec::new(), DEFAULT_MAX_BYTES, false).0.len() as u64;
        let full = record(mixed(), DEFAULT_MAX_BYTES, false).0.len() as u64;
        let max = full - 1;
        let (buf, metrics) = record(mixed(), max, false);
        assert!((buf.len() as u64) <= max && buf.len() as u64 > header_only);
        assert!(buf.ends_with(b"\n"));
        read_capture(&buf[..]).expect("what was written is a valid capture");
        assert_eq!(metrics.dropped_count(DropReason::CaptureSizeLimit), 1);
    }

    #[test]
    fn an_unclassified_connection_is_held_only_up_to_its_bound() {
        // A JSON POST to an unknown path: its body decides, and the body never ends.
        let head = b"POST /x HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{\"a\":\"";
        let chunk = vec![b'a'; 64 * 1024];
        let mut evs = vec![open(8, 31), data(8, 31, 9, Direction::Egress, head)];
        for i in 0..(MAX_PENDING_PER_CONN / chunk.len() + 2) as u64 {
            evs.push(data(8, 31, 10 + i, Direction::Egress, &chunk));
        }
        let (buf, metrics) = record(evs, DEFAULT_MAX_BYTES, false);
        let (_, back) = read_capture(&buf[..]).expect("capture");
        assert!(back.is_empty());
        assert_eq!(metrics.dropped_count(DropReason::CaptureUnclassified), 1);
    }

    #[test]
    fn the_file_is_new_private_and_never_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("llmprobe-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("c.jsonl");
        let f = create_capture_file(&p).expect("new file");
        let mode = f.metadata().expect("md").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(f);
        // An existing file is refused, and left as it was.
        std::fs::write(&p, b"keep").expect("write");
        let err = create_capture_file(&p).expect_err("existing file");
        assert!(format!("{err:#}").contains("new file"), "{err:#}");
        assert_eq!(std::fs::read(&p).expect("read"), b"keep");
        // A symlink (even a dangling one) is refused, and its target not created or truncated.
        let target = dir.join("target");
        std::fs::write(&target, b"precious").expect("write");
        let link = dir.join("link.jsonl");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(create_capture_file(&link).is_err());
        assert_eq!(std::fs::read(&target).expect("read"), b"precious");
        let dangling = dir.join("dangling.jsonl");
        std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).expect("symlink");
        assert!(create_capture_file(&dangling).is_err());
        assert!(!dir.join("nowhere").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
