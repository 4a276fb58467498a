//! Stage 2: the connection tracker. Turns probe events into per-connection byte streams (one per
//! direction), decides which side sends requests (that side's process is the `client`), runs the
//! HTTP/1.1 parser on each direction, pairs requests with responses in order, and hands LLM
//! exchanges to the call model. It also owns connection lifetime: sockets by (pid, fd), TLS
//! connections by (pid, `SSL*`), closes, process exits, idle expiry, and the feedback that tells
//! the kernel to stop capturing connections that are not LLM traffic.
//!
//! Identity: TLS = (pid, `SSL*`), plaintext = (pid, socket generation). Every limit here is a
//! counted drop, never a panic or unbounded growth.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use log::debug;

use crate::clock::Clock;
use crate::llm::exchange::{ExchangeContext, ExchangeLimits, LlmExchange};
use crate::llm::{self, LlmCall};
use crate::probes::events::{DataChunk, Direction, ProbeEvent};
use crate::protocol::http1::{Http1Parser, HttpError, HttpEvent, MessageKind};
use crate::telemetry::SelfMetrics;

/// Tracker limits and policy.
#[derive(Debug, Clone, Copy)]
pub struct TrackerConfig {
    /// Most connections tracked at once. A new connection past it evicts one of the process
    /// that holds the most (its least recently active, idle ones first), counted.
    pub max_connections: usize,
    /// Most connections one process may hold; past it the process's own least recently active
    /// connection makes room (counted), so one process cannot take the table from the others.
    pub max_connections_per_process: usize,
    /// Most requests waiting for their responses on one connection.
    pub max_pending_exchanges: usize,
    /// A connection with no bytes for this long is forgotten (its open calls are recorded).
    pub idle_timeout_ns: u64,
    /// Mute a connection after this many HTTP exchanges that matched no LLM API, and none that did.
    pub mute_after_non_llm: u32,
    /// Per-exchange size caps.
    pub exchange: ExchangeLimits,
    /// Heap bytes all connections may hold together (parser buffers, bodies kept for parsing,
    /// stream buffers, per-chunk gaps, text samples). Past it the largest holders are cut.
    pub memory_budget: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            max_connections: 16_384,
            max_connections_per_process: 4_096,
            max_pending_exchanges: 64,
            idle_timeout_ns: 10 * 60 * 1_000_000_000,
            mute_after_non_llm: 3,
            exchange: ExchangeLimits::default(),
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

/// Default of [`TrackerConfig::memory_budget`]: half of the agent's default `--memory-limit`
/// (256 MiB); the event queue and the decoders get a quarter each.
pub const DEFAULT_MEMORY_BUDGET: usize = 128 << 20;

/// Sockets and SSL→fd links remembered, per tracked connection allowed.
const LINKS_PER_CONNECTION: usize = 4;
/// SSL objects remembered per socket fd (HTTP/1.1 runs one TLS session per socket).
const MAX_SSL_PER_FD: usize = 8;
/// Connections looked at when choosing one to evict.
const EVICTION_SAMPLE: usize = 64;

/// What one step of the tracker produced.
#[derive(Default, Debug)]
pub struct TrackerOutput {
    /// Finished LLM calls.
    pub calls: Vec<LlmCall>,
    /// Connections (pid, conn id) the kernel should stop capturing.
    pub mutes: Vec<(u32, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Socket {
    generation: u64,
    peer: Option<SocketAddr>,
}

/// Bytes of the current call seen so far on one direction, to find bytes the kernel did not send.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    total: u32,
    covered: u32,
}

impl Coverage {
    /// Accounts for a chunk; returns the bytes missing before it. A chunk starts a new call when
    /// its offset is 0, its call length differs, or the current call is already complete (so a
    /// lost first piece is still a counted gap, not spliced onto the previous call).
    fn account(&mut self, offset: u32, len: u32, total: u32) -> u64 {
        let mut gap = 0u64;
        if offset == 0 || total != self.total || self.covered >= self.total {
            gap += self.take_missing();
            self.total = total;
            self.covered = 0;
        }
        if offset > self.covered {
            gap += u64::from(offset - self.covered);
        }
        self.covered = self.covered.max(offset.saturating_add(len));
        gap
    }

    /// Bytes of the current call that will never arrive (called when another call starts).
    fn take_missing(&mut self) -> u64 {
        let missing = u64::from(self.total.saturating_sub(self.covered));
        self.total = 0;
        self.covered = 0;
        missing
    }
}

struct Pending {
    exchange: Option<LlmExchange>,
}

struct Connection {
    pid: u32,
    comm: String,
    tls: bool,
    fd: Option<i32>,
    peer: Option<SocketAddr>,
    request_dir: Option<Direction>,
    req: Http1Parser,
    resp: Http1Parser,
    req_msg_start: Option<u64>,
    pending: VecDeque<Pending>,
    non_llm_streak: u32,
    llm_seen: bool,
    last_ts: u64,
    coverage: [Coverage; 2],
    upgraded: bool,
    container: Option<String>,
    /// Heap bytes held, as last accounted in the tracker's total.
    mem: usize,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

impl Connection {
    fn new(
        pid: u32,
        comm: String,
        tls: bool,
        fd: Option<i32>,
        peer: Option<SocketAddr>,
        ts: u64,
    ) -> Self {
        Connection {
            pid,
            comm,
            tls,
            fd,
            peer,
            request_dir: None,
            req: Http1Parser::new(MessageKind::Request),
            resp: Http1Parser::new(MessageKind::Response),
            req_msg_start: None,
            pending: VecDeque::new(),
            non_llm_streak: 0,
            llm_seen: false,
            last_ts: ts,
            coverage: [Coverage::default(); 2],
            upgraded: false,
            container: None,
            mem: 0,
        }
    }

    /// Heap bytes held by the parsers and the open exchanges.
    fn heap_bytes(&self) -> usize {
        self.req.buffered_bytes()
            + self.resp.buffered_bytes()
            + self
                .pending
                .iter()
                .filter_map(|p| p.exchange.as_ref())
                .map(LlmExchange::heap_bytes)
                .sum::<usize>()
    }

    fn context(&self) -> ExchangeContext {
        ExchangeContext {
            role: if self.request_dir == Some(Direction::Ingress) {
                "server"
            } else {
                "client"
            },
            pid: self.pid,
            comm: self.comm.clone(),
            tls: self.tls,
            peer: self.peer,
            container: self.container.clone(),
        }
    }
}

/// Why a connection stops being tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndReason {
    /// Closed, freed, or its process exited: open calls were aborted.
    Closed,
    /// No bytes for too long.
    Idle,
    /// Its bytes could not be parsed any more.
    ParseFailure,
    /// It made room for another connection (a table bound was reached).
    Evicted,
}

/// The connection tracker.
pub struct ConnTracker {
    cfg: TrackerConfig,
    clock: Clock,
    metrics: Arc<SelfMetrics>,
    sockets: HashMap<u32, HashMap<i32, Socket>>,
    conns: HashMap<u32, HashMap<u64, Connection>>,
    conn_count: usize,
    /// TLS connections by the fd they use: (pid, fd) -> SSL pointers.
    tls_by_fd: HashMap<(u32, i32), Vec<u64>>,
    /// (pid, SSL*) -> fd.
    ssl_fd: HashMap<(u32, u64), i32>,
    /// Entries in `sockets`.
    socket_count: usize,
    /// Heap bytes held by all connections (sum of their `mem`).
    mem_total: usize,
    last_sweep_ts: u64,
}

impl ConnTracker {
    /// New tracker.
    pub fn new(cfg: TrackerConfig, clock: Clock, metrics: Arc<SelfMetrics>) -> Self {
        ConnTracker {
            cfg,
            clock,
            metrics,
            sockets: HashMap::new(),
            conns: HashMap::new(),
            conn_count: 0,
            tls_by_fd: HashMap::new(),
            ssl_fd: HashMap::new(),
            socket_count: 0,
            mem_total: 0,
            last_sweep_ts: 0,
        }
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conn_count
    }

    /// Heap bytes the tracked connections hold (what the memory budget bounds).
    pub fn memory_bytes(&self) -> usize {
        self.mem_total
    }

    /// True when the connection (pid, conn id) is tracked and has carried an LLM request.
    pub fn is_llm(&self, pid: u32, id: u64) -> bool {
        self.conns
            .get(&pid)
            .and_then(|m| m.get(&id))
            .is_some_and(|c| c.llm_seen)
    }

    /// LLM calls whose request has started and whose record is not written yet.
    pub fn llm_in_flight(&self) -> usize {
        self.conns
            .values()
            .flat_map(|m| m.values())
            .map(|c| c.pending.iter().filter(|p| p.exchange.is_some()).count())
            .sum()
    }

    /// Server processes with LLM requests in flight, each with the start (Unix ns) of its oldest
    /// one: GPU accounting waits for these calls before it settles their windows.
    pub fn server_in_flight_since(&self) -> HashMap<u32, i64> {
        let mut out: HashMap<u32, i64> = HashMap::new();
        for c in self.conns.values().flat_map(|m| m.values()) {
            if c.request_dir != Some(Direction::Ingress) {
                continue;
            }
            for ex in c.pending.iter().filter_map(|p| p.exchange.as_ref()) {
                let start = self.clock.unix_ns(ex.start_ts());
                out.entry(c.pid)
                    .and_modify(|s| *s = (*s).min(start))
                    .or_insert(start);
            }
        }
        out
    }

    /// Handles one event.
    pub fn handle(&mut self, ev: ProbeEvent, out: &mut TrackerOutput) {
        self.metrics.events.inc();
        let ts = ev.meta().ts_ns;
        match ev {
            ProbeEvent::Data(d) => {
                self.on_data(d, out);
                self.enforce_memory_budget(ts, out);
            }
            ProbeEvent::ConnOpen { meta, peer, .. } => {
                let old = self.insert_socket(
                    meta.pid,
                    meta.fd,
                    Socket {
                        generation: meta.conn_id,
                        peer,
                    },
                );
                if let Some(old) = old
                    && old.generation != meta.conn_id
                {
                    // The fd was reused without a close we saw.
                    self.end_conn(meta.pid, old.generation, ts, EndReason::Closed, out);
                    self.end_tls_on_fd(meta.pid, meta.fd, ts, out);
                }
            }
            ProbeEvent::ConnClose { meta } => {
                self.remove_socket(meta.pid, meta.fd);
                self.end_conn(meta.pid, meta.conn_id, ts, EndReason::Closed, out);
                self.end_tls_on_fd(meta.pid, meta.fd, ts, out);
            }
            ProbeEvent::SslFd { meta } => {
                self.link_ssl(meta.pid, meta.conn_id, meta.fd);
                let peer = self.peer_of(meta.pid, meta.fd);
                if let Some(c) = self
                    .conns
                    .get_mut(&meta.pid)
                    .and_then(|m| m.get_mut(&meta.conn_id))
                {
                    c.fd = Some(meta.fd);
                    c.peer = c.peer.or(peer);
                }
            }
            ProbeEvent::SslFree { meta } => {
                self.forget_ssl(meta.pid, meta.conn_id);
                self.end_conn(meta.pid, meta.conn_id, ts, EndReason::Closed, out);
            }
            ProbeEvent::ProcExit { meta } => self.end_process(meta.pid, ts, out),
            ProbeEvent::ExecMap { .. } => {}
        }
        if ts > self.last_sweep_ts.saturating_add(1_000_000_000) {
            self.last_sweep_ts = ts;
            self.sweep(ts, out);
        }
        self.metrics.connections_tracked.set(self.conn_count as i64);
        self.metrics.tracker_memory.set(self.mem_total as i64);
    }

    /// Ends every connection (agent shutdown or end of a replay): open calls are recorded as
    /// aborted at their last byte.
    pub fn finish_all(&mut self, out: &mut TrackerOutput) {
        let pids: Vec<u32> = self.conns.keys().copied().collect();
        for pid in pids {
            let ids: Vec<u64> = self
                .conns
                .get(&pid)
                .map(|m| m.keys().copied().collect())
                .unwrap_or_default();
            for id in ids {
                self.end_conn(pid, id, 0, EndReason::Closed, out);
            }
        }
        self.metrics.connections_tracked.set(self.conn_count as i64);
    }

    fn peer_of(&self, pid: u32, fd: i32) -> Option<SocketAddr> {
        self.sockets
            .get(&pid)
            .and_then(|m| m.get(&fd))
            .and_then(|s| s.peer)
    }

    fn forget_ssl(&mut self, pid: u32, ssl: u64) {
        if let Some(fd) = self.ssl_fd.remove(&(pid, ssl)) {
            self.unlink_from_fd(pid, fd, ssl);
        }
    }

    fn end_tls_on_fd(&mut self, pid: u32, fd: i32, ts: u64, out: &mut TrackerOutput) {
        if let Some(ssls) = self.tls_by_fd.remove(&(pid, fd)) {
            for ssl in ssls {
                self.ssl_fd.remove(&(pid, ssl));
                self.end_conn(pid, ssl, ts, EndReason::Closed, out);
            }
        }
    }

    fn end_process(&mut self, pid: u32, ts: u64, out: &mut TrackerOutput) {
        let ids: Vec<u64> = self
            .conns
            .get(&pid)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.end_conn(pid, id, ts, EndReason::Closed, out);
        }
        if let Some(s) = self.sockets.remove(&pid) {
            self.socket_count -= s.len();
        }
        // The process's links, found through its sockets' lists (no scan of every process's).
        let fds: Vec<(u32, i32)> = self
            .tls_by_fd
            .keys()
            .filter(|(p, _)| *p == pid)
            .copied()
            .collect();
        for key in fds {
            for ssl in self.tls_by_fd.remove(&key).unwrap_or_default() {
                self.ssl_fd.remove(&(pid, ssl));
            }
        }
        self.ssl_fd.retain(|(p, _), _| *p != pid);
    }

    /// Remembers a socket; past the bounds the process's own (or the biggest holder's) oldest
    /// entries make room. Returns the socket it replaced on the same fd.
    fn insert_socket(&mut self, pid: u32, fd: i32, s: Socket) -> Option<Socket> {
        let per_process = self.cfg.max_connections_per_process.max(1) * LINKS_PER_CONNECTION;
        let total = self.cfg.max_connections.max(1) * LINKS_PER_CONNECTION;
        let mine = self.sockets.get(&pid).map_or(0, HashMap::len);
        let replaces = self.sockets.get(&pid).is_some_and(|m| m.contains_key(&fd));
        if !replaces && (mine >= per_process || self.socket_count >= total) {
            self.metrics.drop_for("socket_table_full");
            let victim = if mine >= per_process {
                Some(pid)
            } else {
                self.sockets
                    .iter()
                    .max_by_key(|(_, m)| m.len())
                    .map(|(p, _)| *p)
            };
            if let Some(vp) = victim
                && let Some(vfd) = self.sockets.get(&vp).and_then(|m| m.keys().next().copied())
            {
                self.remove_socket(vp, vfd);
            }
        }
        let old = self.sockets.entry(pid).or_default().insert(fd, s);
        if old.is_none() {
            self.socket_count += 1;
        }
        old
    }

    fn remove_socket(&mut self, pid: u32, fd: i32) {
        if let Some(m) = self.sockets.get_mut(&pid) {
            if m.remove(&fd).is_some() {
                self.socket_count -= 1;
            }
            if m.is_empty() {
                self.sockets.remove(&pid);
            }
        }
    }

    /// Links an SSL object to the socket it talks over (bounded: a process that invents SSL
    /// objects gets at most `MAX_SSL_PER_FD` per fd and its share of the table).
    fn link_ssl(&mut self, pid: u32, ssl: u64, fd: i32) {
        let key = (pid, ssl);
        match self.ssl_fd.get(&key) {
            Some(old) if *old == fd => return,
            Some(old) => {
                let old = *old;
                self.unlink_from_fd(pid, old, ssl);
            }
            None => {
                if self.ssl_fd.len() >= self.cfg.max_connections.max(1) * LINKS_PER_CONNECTION {
                    self.metrics.drop_for("ssl_link_table_full");
                    return;
                }
            }
        }
        self.ssl_fd.insert(key, fd);
        let list = self.tls_by_fd.entry((pid, fd)).or_default();
        list.push(ssl);
        if list.len() > MAX_SSL_PER_FD {
            let oldest = list.remove(0);
            self.ssl_fd.remove(&(pid, oldest));
            self.metrics.drop_for("ssl_links_per_fd");
        }
    }

    fn unlink_from_fd(&mut self, pid: u32, fd: i32, ssl: u64) {
        if let Some(v) = self.tls_by_fd.get_mut(&(pid, fd)) {
            v.retain(|s| *s != ssl);
            if v.is_empty() {
                self.tls_by_fd.remove(&(pid, fd));
            }
        }
    }

    /// Makes room for a new connection of `pid`: past the per-process bound the process loses
    /// its own least recently active connection; past the total bound the process holding the
    /// most connections does. Idle connections (no call in flight) go first. The victim is
    /// muted in the kernel, so a flood of connections stops costing anything.
    fn make_room(&mut self, pid: u32, ts: u64, out: &mut TrackerOutput) {
        let mine = self.conns.get(&pid).map_or(0, HashMap::len);
        let (victim_pid, reason) = if mine >= self.cfg.max_connections_per_process.max(1) {
            (pid, "connection_limit_per_process")
        } else if self.conn_count >= self.cfg.max_connections.max(1) {
            let Some(biggest) = self
                .conns
                .iter()
                .max_by_key(|(_, m)| m.len())
                .map(|(p, _)| *p)
            else {
                return;
            };
            (biggest, "connection_evicted")
        } else {
            return;
        };
        let Some(victim) = self.conns.get(&victim_pid).and_then(|m| {
            m.iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, c)| (!c.pending.is_empty(), c.last_ts))
                .map(|(id, _)| *id)
        }) else {
            return;
        };
        self.metrics.drop_for(reason);
        self.end_conn(victim_pid, victim, ts, EndReason::Evicted, out);
        out.mutes.push((victim_pid, victim));
        self.metrics.connections_muted.inc();
    }

    fn sweep(&mut self, now: u64, out: &mut TrackerOutput) {
        let limit = self.cfg.idle_timeout_ns;
        let idle: Vec<(u32, u64)> = self
            .conns
            .iter()
            .flat_map(|(pid, m)| {
                m.iter()
                    .filter(|(_, c)| now.saturating_sub(c.last_ts) > limit)
                    .map(move |(id, _)| (*pid, *id))
            })
            .collect();
        for (pid, id) in idle {
            self.metrics.drop_for("idle_connection");
            self.end_conn(pid, id, now, EndReason::Idle, out);
        }
    }

    fn remove_conn(&mut self, pid: u32, id: u64) -> Option<Connection> {
        let m = self.conns.get_mut(&pid)?;
        let c = m.remove(&id)?;
        if m.is_empty() {
            self.conns.remove(&pid);
        }
        self.conn_count = self.conn_count.saturating_sub(1);
        self.mem_total -= c.mem;
        Some(c)
    }

    /// Stops tracking a connection and records its open LLM calls.
    fn end_conn(&mut self, pid: u32, id: u64, ts: u64, reason: EndReason, out: &mut TrackerOutput) {
        let Some(mut c) = self.remove_conn(pid, id) else {
            return;
        };
        // An idle connection ended at its last byte, not when the sweep noticed.
        let end_ts = if ts == 0 || reason == EndReason::Idle {
            c.last_ts
        } else {
            ts
        };
        let cut_short = matches!(reason, EndReason::ParseFailure | EndReason::Evicted);
        if !cut_short && let Some(req_dir) = c.request_dir {
            // Bytes of each direction's last call that never arrived are a gap, not an abort.
            for dir in [req_dir, req_dir.opposite()] {
                let missing = c.coverage[dir_index(dir)].take_missing();
                if missing > 0 {
                    self.metrics.drop_for("capture_gap");
                    let p = if dir == req_dir {
                        &mut c.req
                    } else {
                        &mut c.resp
                    };
                    let mut events = Vec::new();
                    if p.feed_gap(missing, &mut events).is_ok() {
                        self.on_http_events(&mut c, Some(dir), events, end_ts, out);
                    }
                }
            }
        }
        if !cut_short && c.request_dir.is_some() {
            // A response delimited by the connection's end completes here.
            let mut events = Vec::new();
            c.resp.finish(&mut events);
            let resp_dir = c.request_dir.map(Direction::opposite);
            self.on_http_events(&mut c, resp_dir, events, end_ts, out);
        }
        let ctx = c.context();
        for p in c.pending.drain(..) {
            if let Some(mut ex) = p.exchange {
                // A request cut off before any answer, by a bound rather than by its own
                // connection, says nothing about a call: no record (a flood of half-sent
                // requests must not become a flood of records).
                if reason == EndReason::Evicted && !ex.responded() {
                    self.metrics.drop_for("evicted_unanswered_request");
                    continue;
                }
                match reason {
                    EndReason::Closed => {}
                    EndReason::Idle => ex.set_error("idle_timeout"),
                    EndReason::ParseFailure | EndReason::Evicted => {
                        ex.set_error("capture_incomplete")
                    }
                }
                let aborted = reason == EndReason::Closed;
                out.calls
                    .push(ex.finish(&ctx, &self.clock, aborted, Some(end_ts)));
                self.metrics.calls.inc();
            }
        }
    }

    fn mute(&mut self, pid: u32, id: u64, reason: &str, out: &mut TrackerOutput) {
        self.metrics.drop_for(reason);
        self.metrics.connections_muted.inc();
        out.mutes.push((pid, id));
        self.remove_conn(pid, id);
    }

    fn on_data(&mut self, d: DataChunk, out: &mut TrackerOutput) {
        let pid = d.meta.pid;
        let id = d.meta.conn_id;
        let ts = d.meta.ts_ns;
        let exists = self.conns.get(&pid).is_some_and(|m| m.contains_key(&id));
        if !exists {
            self.make_room(pid, ts, out);
            let fd = if d.tls {
                self.ssl_fd.get(&(pid, id)).copied()
            } else {
                Some(d.meta.fd)
            };
            let peer = fd.and_then(|fd| self.peer_of(pid, fd));
            let mut c = Connection::new(
                pid,
                d.meta.comm.clone(),
                d.tls,
                fd.filter(|f| *f >= 0),
                peer,
                ts,
            );
            c.container = d.meta.container.clone();
            self.conns.entry(pid).or_default().insert(id, c);
            self.conn_count += 1;
        }
        let Some(mut c) = self.remove_conn_for_update(pid, id) else {
            return;
        };
        c.last_ts = c.last_ts.max(ts);
        let dir = d.direction;
        if c.request_dir.is_none() {
            if d.data.is_empty() {
                self.put_back(pid, id, c);
                return;
            }
            c.request_dir = Some(if looks_like_response(&d.data) {
                dir.opposite()
            } else {
                dir
            });
        }
        let is_req = c.request_dir == Some(dir);
        if is_req && c.upgraded {
            self.put_back(pid, id, c);
            return;
        }
        // Bytes the kernel could not send: the other direction's unfinished call, then this one's.
        let mut events = Vec::new();
        let other = dir.opposite();
        let other_missing = c.coverage[dir_index(other)].take_missing();
        let mut result = Ok(());
        if other_missing > 0 {
            self.metrics.drop_for("capture_gap");
            let p = if c.request_dir == Some(other) {
                &mut c.req
            } else {
                &mut c.resp
            };
            let mut ev = Vec::new();
            result = p.feed_gap(other_missing, &mut ev);
            let other_events = ev;
            self.on_http_events(&mut c, Some(other), other_events, ts, out);
        }
        let gap = c.coverage[dir_index(dir)].account(d.offset, d.data.len() as u32, d.total_len);
        if result.is_ok() {
            let parser = if is_req { &mut c.req } else { &mut c.resp };
            if gap > 0 {
                self.metrics.drop_for("capture_gap");
                result = parser.feed_gap(gap, &mut events);
            }
            if result.is_ok() {
                if is_req && parser.is_idle() {
                    c.req_msg_start = Some(ts);
                }
                result = parser.feed(&d.data, &mut events);
            }
        }
        self.on_http_events(&mut c, Some(dir), events, ts, out);
        match result {
            Ok(()) => {
                let ends_quietly = !c.llm_seen
                    && c.pending.is_empty()
                    && self.cfg.mute_after_non_llm > 0
                    && c.non_llm_streak >= self.cfg.mute_after_non_llm;
                self.put_back(pid, id, c);
                if ends_quietly {
                    self.mute(pid, id, "not_llm", out);
                }
            }
            Err(HttpError::NotHttp) if !c.llm_seen && c.pending.is_empty() => {
                self.put_back(pid, id, c);
                self.mute(pid, id, "not_http", out);
            }
            Err(e) => {
                self.metrics.parse_error("http1");
                debug!(
                    "pid {pid} conn {id:#x}: HTTP/1.1 parse error {e:?}; dropping the connection"
                );
                self.put_back(pid, id, c);
                self.end_conn(pid, id, ts, EndReason::ParseFailure, out);
                out.mutes.push((pid, id));
                self.metrics.connections_muted.inc();
            }
        }
    }

    fn remove_conn_for_update(&mut self, pid: u32, id: u64) -> Option<Connection> {
        let c = self.conns.get_mut(&pid)?.remove(&id)?;
        Some(c)
    }

    /// Puts a connection back after an update, with its heap bytes accounted anew.
    fn put_back(&mut self, pid: u32, id: u64, mut c: Connection) {
        let mem = c.heap_bytes();
        self.mem_total = self.mem_total - c.mem + mem;
        c.mem = mem;
        self.conns.entry(pid).or_default().insert(id, c);
    }

    /// Over the memory budget: cuts the connections holding the most until the total is back
    /// under seven eighths of it (so a client hovering at the budget cannot make every event pay
    /// for a scan of every connection). Their open calls are recorded as `capture_incomplete`
    /// and the kernel stops sending them.
    fn enforce_memory_budget(&mut self, ts: u64, out: &mut TrackerOutput) {
        if self.mem_total <= self.cfg.memory_budget {
            return;
        }
        let target = self.cfg.memory_budget / 8 * 7;
        while self.mem_total > target {
            let Some((pid, id)) = self
                .conns
                .iter()
                .flat_map(|(pid, m)| m.iter().map(move |(id, c)| (c.mem, *pid, *id)))
                .max()
                .map(|(_, pid, id)| (pid, id))
            else {
                break;
            };
            self.metrics.drop_for("memory_budget");
            self.end_conn(pid, id, ts, EndReason::Evicted, out);
            out.mutes.push((pid, id));
            self.metrics.connections_muted.inc();
        }
    }

    fn on_http_events(
        &mut self,
        c: &mut Connection,
        dir: Option<Direction>,
        events: Vec<HttpEvent>,
        ts: u64,
        out: &mut TrackerOutput,
    ) {
        let is_req = dir.is_some() && c.request_dir == dir;
        for ev in events {
            if is_req {
                match ev {
                    HttpEvent::RequestHead(h) => {
                        c.resp
                            .expect_response(h.method == "HEAD" || h.method == "CONNECT");
                        let start = c.req_msg_start.take().unwrap_or(ts);
                        let exchange = match llm::detect(&h) {
                            Some(d) => {
                                c.llm_seen = true;
                                c.non_llm_streak = 0;
                                Some(LlmExchange::new(&h, d, start, self.cfg.exchange))
                            }
                            // Unknown path: the request body decides (see MessageEnd below).
                            None => llm::detect_candidate(&h).map(|d| {
                                let mut ex = LlmExchange::new(&h, d, start, self.cfg.exchange);
                                ex.set_candidate();
                                ex
                            }),
                        };
                        if exchange.is_none() {
                            c.non_llm_streak += 1;
                        }
                        if c.pending.len() >= self.cfg.max_pending_exchanges {
                            self.metrics.drop_for("pending_exchange_limit");
                            c.pending.pop_front();
                        }
                        c.pending.push_back(Pending { exchange });
                    }
                    HttpEvent::Body(b) => {
                        if let Some(ex) = c.pending.back_mut().and_then(|p| p.exchange.as_mut()) {
                            ex.on_request_body(&b, ts);
                        }
                    }
                    HttpEvent::BodyGap(_) => {
                        if let Some(ex) = c.pending.back_mut().and_then(|p| p.exchange.as_mut()) {
                            ex.on_request_gap();
                        }
                    }
                    HttpEvent::MessageEnd => {
                        if let Some(p) = c.pending.back_mut()
                            && let Some(ex) = p.exchange.as_mut()
                        {
                            ex.on_request_end(ts);
                            if ex.is_rejected() {
                                p.exchange = None;
                                c.non_llm_streak += 1;
                            } else if !c.llm_seen {
                                c.llm_seen = true;
                                c.non_llm_streak = 0;
                            }
                        }
                    }
                    HttpEvent::ResponseHead(_) => {}
                }
            } else {
                match ev {
                    HttpEvent::ResponseHead(h) => {
                        if h.status == 101 {
                            c.upgraded = true;
                        }
                        match c.pending.front_mut() {
                            Some(p) => {
                                if let Some(ex) = p.exchange.as_mut() {
                                    ex.on_response_head(&h, ts);
                                }
                            }
                            None => self.metrics.drop_for("response_without_request"),
                        }
                    }
                    HttpEvent::Body(b) => {
                        if let Some(ex) = c.pending.front_mut().and_then(|p| p.exchange.as_mut()) {
                            ex.on_response_body(&b, ts);
                        }
                    }
                    HttpEvent::BodyGap(_) => {}
                    HttpEvent::MessageEnd => {
                        if let Some(p) = c.pending.pop_front()
                            && let Some(mut ex) = p.exchange
                        {
                            ex.on_response_end(ts);
                            self.record(ex, c, out);
                        }
                    }
                    HttpEvent::RequestHead(_) => {}
                }
            }
        }
    }

    fn record(&mut self, ex: LlmExchange, c: &Connection, out: &mut TrackerOutput) {
        let issues = ex.issues;
        for _ in 0..issues.bad_stream_events {
            self.metrics.parse_error("json");
        }
        for _ in 0..issues.oversized_events {
            self.metrics.parse_error("sse");
        }
        for _ in 0..issues.oversized_lines {
            self.metrics.parse_error("ndjson");
        }
        for _ in 0..issues.truncated_bodies {
            self.metrics.drop_for("body_over_limit");
        }
        for _ in 0..issues.undecodable_bodies {
            self.metrics.drop_for("undecodable_body");
        }
        out.calls
            .push(ex.finish(&c.context(), &self.clock, false, None));
        self.metrics.calls.inc();
    }
}

/// True when a direction's first bytes are an HTTP response (so the other direction sends requests).
fn looks_like_response(data: &[u8]) -> bool {
    const P: &[u8] = b"HTTP/1.";
    let n = data.len().min(P.len());
    data[..n] == P[..n]
}

#[cfg(test)]
mod tests;
