//! Stage 2: the connection tracker. Turns probe events into per-connection byte streams (one per
//! direction) and hands them, framed into HTTP/1.1 messages and paired request with response, to
//! an [`ExchangePolicy`] that decides what to follow and what each followed exchange becomes (the
//! LLM layer's, `crate::llm::tracking`, makes LLM call records). It owns connection lifetime
//! (closes, `SSL_free`, fd reuse, process exits, idle expiry), the fair shares of its tables and
//! the memory budget, and the feedback that tells the kernel to stop capturing connections that
//! are not worth following.
//!
//! One owner per concern:
//! - `identity.rs`: sockets by (pid, fd), `SSL*` ↔ fd links, their bounds; a connected socket's
//!   opening times (connect entry, first TLS record), handed to its first connection once;
//! - `coverage.rs`: which bytes of each call arrived, so missing ones become counted gaps;
//! - `session.rs`: the HTTP/1.1 session (request direction, parsers, requests paired with
//!   responses in order);
//! - `h2session.rs`: the HTTP/2 session a connection opened by the client preface gets instead
//!   (per-stream exchanges, RST_STREAM as an abort);
//! - [`policy`]: the contract with the layer above (classification, exchanges, records);
//! - this file: the connection table, its fair shares (per-process cap, eviction of the biggest
//!   holder's least recently active connection), the memory budget, ends and mutes.
//!
//! Identity: TLS = (pid, `SSL*`), plaintext = (pid, socket generation). Every limit here is a
//! counted drop, never a panic or unbounded growth. Per event: two hash lookups for a known
//! connection and no allocation of the tracker's own (the parsers' event buffer is reused).

mod coverage;
mod h2session;
mod identity;
pub mod policy;
mod session;

use std::collections::HashMap;
use std::sync::Arc;

use log::debug;

use crate::clock::Clock;
use crate::probes::events::{DataChunk, Direction, ProbeEvent};
use crate::protocol::http1::{self, HttpError, HttpEvent};
use crate::telemetry::{DropReason, Protocol, SelfMetrics};

use coverage::Coverage;
use identity::Identities;
pub use policy::{
    ConnInfo, ConnTimes, Ending, ExchangePolicy, FreshConn, Opened, Role, TrackedExchange,
};
use session::HttpSession;

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
    /// Mute a connection after this many HTTP exchanges that the policy did not follow (for the
    /// LLM policy: that matched no LLM API), and none that it did.
    pub mute_after_non_llm: u32,
    /// Heap bytes all connections may hold together (parser buffers, and what the exchanges
    /// hold: bodies kept for parsing, stream buffers, per-chunk gaps, text samples). Past it the
    /// largest holders are cut.
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
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

/// Default of [`TrackerConfig::memory_budget`]: half of the agent's default `--memory-limit`
/// (256 MiB); the event queue and the decoders get a quarter each.
pub const DEFAULT_MEMORY_BUDGET: usize = 128 << 20;

/// Connections looked at when choosing one to evict.
const EVICTION_SAMPLE: usize = 64;

/// What one step of the tracker produced.
#[derive(Debug)]
pub struct TrackerOutput<R> {
    /// Records of finished exchanges (LLM calls, for the LLM policy).
    pub calls: Vec<R>,
    /// Connections (pid, conn id) the kernel should stop capturing.
    pub mutes: Vec<(u32, u64)>,
}

impl<R> Default for TrackerOutput<R> {
    fn default() -> Self {
        TrackerOutput {
            calls: Vec::new(),
            mutes: Vec::new(),
        }
    }
}

/// One tracked connection: who it belongs to, byte coverage, its HTTP session.
struct Connection<X> {
    info: ConnInfo,
    last_ts: u64,
    coverage: Coverage,
    session: HttpSession<X>,
    /// Heap bytes held, as last accounted in the tracker's total.
    mem: usize,
    /// Bytes skipped before the first HTTP message start (the stream was joined mid-message).
    skipped: u32,
}

/// Bytes of a connection skipped at most while waiting for the first message start, when its
/// first bytes are the middle of a message ([`http1::looks_like_message_middle`]): uprobes
/// attached to a process while its connection was busy (`--scope auto` admits a process during
/// its first call; a process can enter the scope at any time). Past it the bytes are parsed
/// as they come (and a connection that is not HTTP is muted).
const MID_STREAM_SKIP: u32 = 64 << 10;

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

/// What a chunk of bytes left its connection in.
enum Verdict {
    /// Still followed.
    Keep,
    /// Not worth following: muted, for this reason (a drop reason).
    Mute(DropReason),
    /// Its bytes stopped parsing: cut, its open calls recorded as incomplete.
    Failed(HttpError),
}

/// What every connection's work reads: limits, the policy, the clock, the metrics.
struct Shared<P> {
    cfg: TrackerConfig,
    policy: P,
    clock: Clock,
    metrics: Arc<SelfMetrics>,
}

impl<P: ExchangePolicy> Shared<P> {
    /// Finishes an exchange into its record.
    fn emit(
        &self,
        out: &mut TrackerOutput<P::Record>,
        ex: P::Exchange,
        info: &ConnInfo,
        role: Role,
        ending: Ending,
    ) {
        out.calls
            .push(ex.finish(info, role, &self.clock, ending, &self.metrics));
        self.metrics.calls.inc();
    }

    /// Hands a direction's parsed events to the session.
    fn dispatch(
        &self,
        session: &mut HttpSession<P::Exchange>,
        pid: u32,
        dir: Direction,
        events: &mut Vec<HttpEvent>,
        ts: u64,
        done: &mut impl FnMut(P::Exchange, Ending),
    ) {
        session.on_events(
            &self.policy,
            pid,
            dir,
            events,
            ts,
            self.cfg.max_pending_exchanges,
            &self.metrics,
            done,
        );
    }
}

impl<X: TrackedExchange> Connection<X> {
    /// Heap bytes held by the parsers and the open exchanges.
    fn heap_bytes(&self) -> usize {
        self.session.heap_bytes()
    }

    /// Bytes of one direction arrived: gaps first (the other direction's unfinished call, then
    /// this one's), then the bytes, through the session.
    fn on_chunk<P: ExchangePolicy<Exchange = X>>(
        &mut self,
        d: &DataChunk,
        sh: &Shared<P>,
        events: &mut Vec<HttpEvent>,
        out: &mut TrackerOutput<P::Record>,
    ) -> Verdict {
        let ts = d.meta.ts_ns;
        self.last_ts = self.last_ts.max(ts);
        let dir = d.direction;
        // The bytes to parse, and whether the chunk's coverage was already accounted.
        let mut data = &d.data;
        let tail;
        let mut accounted = false;
        if self.session.request_dir().is_none()
            && http1::looks_like_message_middle(&d.data)
            && let Some(n) = self.skipped.checked_add(d.data.len() as u32)
            && n <= MID_STREAM_SKIP
        {
            // The rest of a message whose start was not seen: skipped (its call is not
            // recorded), counted once per connection, up to the next message start.
            if self.skipped == 0 {
                sh.metrics.drop_for(DropReason::JoinedMidStream);
            }
            self.skipped = n.max(1);
            // A gap before skipped bytes hides nothing of the next message.
            let _ = self
                .coverage
                .account(dir, d.offset, d.data.len() as u32, d.total_len);
            let Some(start) = http1::message_start_within(&d.data) else {
                return Verdict::Keep;
            };
            tail = d.data.slice(start..);
            data = &tail;
            accounted = true;
        }
        let Some(req_dir) = self.session.orient(dir, data) else {
            return Verdict::Keep;
        };
        let is_req = req_dir == dir;
        if is_req && self.session.is_upgraded() {
            return Verdict::Keep;
        }
        // The first request byte out on a connection the process connected: where its opening
        // times end (a connection joined mid-stream has no first request).
        if is_req
            && dir == Direction::Egress
            && self.skipped == 0
            && let Some(t) = self.info.opened.as_mut()
        {
            t.first_request_ns.get_or_insert(ts);
        }
        let role = self.session.role();
        let pid = self.info.pid;
        let info = &self.info;
        let mut done = |ex: X, ending: Ending| sh.emit(out, ex, info, role, ending);
        // Bytes the kernel could not send: the other direction's unfinished call, then this one's.
        let other = dir.opposite();
        let other_missing = self.coverage.take_missing(other);
        let mut result = Ok(());
        if other_missing > 0 {
            sh.metrics.drop_for(DropReason::CaptureGap);
            result = self.session.feed_gap(other, other_missing, events);
            sh.dispatch(&mut self.session, pid, other, events, ts, &mut done);
        }
        let gap = if accounted {
            0
        } else {
            self.coverage
                .account(dir, d.offset, d.data.len() as u32, d.total_len)
        };
        if result.is_ok() {
            if gap > 0 {
                sh.metrics.drop_for(DropReason::CaptureGap);
                result = self.session.feed_gap(dir, gap, events);
            }
            if result.is_ok() {
                if is_req && let Some(id) = d.api_key_id {
                    self.session.note_credential(id);
                }
                if is_req && let Some(id) = d.mcp_session_id {
                    self.session.note_mcp_session(id);
                }
                result = self.session.feed(dir, data, ts, events);
            }
        }
        sh.dispatch(&mut self.session, pid, dir, events, ts, &mut done);
        let s = &self.session;
        let nothing_followed = !s.matched() && !s.has_pending();
        match result {
            Ok(()) => {
                let mute_after = sh.cfg.mute_after_non_llm;
                if nothing_followed && mute_after > 0 && s.unmatched_streak() >= mute_after {
                    Verdict::Mute(DropReason::NotLlm)
                } else {
                    Verdict::Keep
                }
            }
            Err(HttpError::NotHttp) if nothing_followed => Verdict::Mute(DropReason::NotHttp),
            Err(e) => Verdict::Failed(e),
        }
    }

    /// The connection is no longer tracked: bytes that never arrived are gaps, a response
    /// delimited by the end completes, and the exchanges still open are recorded (aborted,
    /// idle or cut short, after `reason`).
    fn end<P: ExchangePolicy<Exchange = X>>(
        mut self,
        reason: EndReason,
        ts: u64,
        sh: &Shared<P>,
        events: &mut Vec<HttpEvent>,
        out: &mut TrackerOutput<P::Record>,
    ) {
        // An idle connection ended at its last byte, not when the sweep noticed.
        let end_ts = if ts == 0 || reason == EndReason::Idle {
            self.last_ts
        } else {
            ts
        };
        let cut_short = matches!(reason, EndReason::ParseFailure | EndReason::Evicted);
        let role = self.session.role();
        let pid = self.info.pid;
        if !cut_short && let Some(req_dir) = self.session.request_dir() {
            let info = &self.info;
            let mut done = |ex: X, ending: Ending| sh.emit(out, ex, info, role, ending);
            // Bytes of each direction's last call that never arrived are a gap, not an abort.
            for dir in [req_dir, req_dir.opposite()] {
                let missing = self.coverage.take_missing(dir);
                if missing > 0 {
                    sh.metrics.drop_for(DropReason::CaptureGap);
                    if self.session.feed_gap(dir, missing, events).is_ok() {
                        sh.dispatch(&mut self.session, pid, dir, events, end_ts, &mut done);
                    }
                    events.clear();
                }
            }
            // A response delimited by the connection's end completes here.
            self.session.finish_response(events);
            sh.dispatch(
                &mut self.session,
                pid,
                req_dir.opposite(),
                events,
                end_ts,
                &mut done,
            );
        }
        let ending = match reason {
            EndReason::Closed => Ending::Closed { at: end_ts },
            EndReason::Idle => Ending::Idle { at: end_ts },
            EndReason::ParseFailure | EndReason::Evicted => Ending::CutShort { at: end_ts },
        };
        for ex in self.session.drain_exchanges() {
            // A request cut off before any answer, by a bound rather than by its own
            // connection, says nothing about a call: no record (a flood of half-sent
            // requests must not become a flood of records).
            if reason == EndReason::Evicted && !ex.responded() {
                sh.metrics.drop_for(DropReason::EvictedUnansweredRequest);
                continue;
            }
            sh.emit(out, ex, &self.info, role, ending);
        }
    }
}

/// The connection tracker, generic over what it tracks for.
pub struct ConnTracker<P: ExchangePolicy> {
    sh: Shared<P>,
    ids: Identities,
    conns: HashMap<u32, HashMap<u64, Connection<P::Exchange>>>,
    conn_count: usize,
    /// Heap bytes held by all connections (sum of their `mem`).
    mem_total: usize,
    last_sweep_ts: u64,
    /// The parsers' events, reused from chunk to chunk (always left empty).
    events: Vec<HttpEvent>,
}

impl<P: ExchangePolicy> ConnTracker<P> {
    /// New tracker following what `policy` asks for.
    pub fn new(cfg: TrackerConfig, policy: P, clock: Clock, metrics: Arc<SelfMetrics>) -> Self {
        ConnTracker {
            ids: Identities::new(
                cfg.max_connections,
                cfg.max_connections_per_process,
                metrics.clone(),
            ),
            sh: Shared {
                cfg,
                policy,
                clock,
                metrics,
            },
            conns: HashMap::new(),
            conn_count: 0,
            mem_total: 0,
            last_sweep_ts: 0,
            events: Vec::new(),
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

    /// True when the connection (pid, conn id) is tracked and has carried a request the policy
    /// matched (for the LLM policy: an LLM request).
    pub fn is_llm(&self, pid: u32, id: u64) -> bool {
        self.conns
            .get(&pid)
            .and_then(|m| m.get(&id))
            .is_some_and(|c| c.session.matched())
    }

    /// Followed exchanges (LLM calls, for the LLM policy) whose request has started and whose
    /// record is not written yet.
    pub fn llm_in_flight(&self) -> usize {
        self.conns
            .values()
            .flat_map(|m| m.values())
            .map(|c| c.session.exchanges().count())
            .sum()
    }

    /// The followed exchanges in flight as the live view shows them, at most `max`, with the
    /// number in flight in all. Oldest first, but fairly: at most `max / 16` (and at least 4)
    /// of one process's until every process had its turn, so a process holding many calls open
    /// cannot crowd the others out of the view.
    pub fn in_flight_calls(&self, max: usize) -> (Vec<crate::live::InFlightCall>, usize) {
        type Open<'a, X> = (u64, &'a Connection<X>, Role, &'a X);
        let mut all: Vec<Open<'_, P::Exchange>> = Vec::new();
        for c in self.conns.values().flat_map(|m| m.values()) {
            let role = c.session.role();
            for ex in c.session.exchanges() {
                all.push((ex.start_ts(), c, role, ex));
            }
        }
        let total = all.len();
        all.sort_unstable_by_key(|(start, c, ..)| (*start, c.info.pid));
        let share = (max / 16).max(4);
        let mut taken: HashMap<u32, usize> = HashMap::new();
        let mut picked = vec![false; all.len()];
        let mut out = Vec::new();
        // First pass: each process's oldest, up to its share; second: the rest, oldest first.
        for pass in 0..2 {
            for (i, (_, c, role, ex)) in all.iter().enumerate() {
                if out.len() >= max {
                    break;
                }
                if picked[i] {
                    continue;
                }
                let n = taken.entry(c.info.pid).or_default();
                if pass == 0 && *n >= share {
                    continue;
                }
                picked[i] = true;
                *n += 1;
                if let Some(v) = ex.in_flight(&c.info, *role, &self.sh.clock) {
                    out.push(v);
                }
            }
        }
        (out, total)
    }

    /// Server processes with followed requests in flight, each with the start (Unix ns) of its
    /// oldest one: GPU accounting waits for these calls before it settles their windows.
    pub fn server_in_flight_since(&self) -> HashMap<u32, i64> {
        let mut out: HashMap<u32, i64> = HashMap::new();
        for c in self.conns.values().flat_map(|m| m.values()) {
            if c.session.request_dir() != Some(Direction::Ingress) {
                continue;
            }
            for ex in c.session.exchanges() {
                let start = self.sh.clock.unix_ns(ex.start_ts());
                out.entry(c.info.pid)
                    .and_modify(|s| *s = (*s).min(start))
                    .or_insert(start);
            }
        }
        out
    }

    /// Handles one event.
    pub fn handle(&mut self, ev: ProbeEvent, out: &mut TrackerOutput<P::Record>) {
        self.sh.metrics.events.inc();
        let ts = ev.meta().ts_ns;
        match ev {
            ProbeEvent::Data(d) => {
                self.on_data(d, out);
                self.enforce_memory_budget(ts, out);
            }
            ProbeEvent::ConnOpen {
                meta,
                peer,
                connect_ns,
            } => {
                let opened = self.ids.open_socket(meta.pid, meta.fd, meta.conn_id, peer);
                if let Some(ns) = connect_ns {
                    self.ids.set_connect(meta.pid, meta.fd, meta.conn_id, ns);
                }
                if let Some(old) = opened {
                    // The fd was reused without a close we saw.
                    self.end_conn(meta.pid, old, ts, EndReason::Closed, out);
                    self.end_tls_on_fd(meta.pid, meta.fd, ts, out);
                }
            }
            ProbeEvent::ConnClose { meta } => {
                self.ids.close_socket(meta.pid, meta.fd);
                self.end_conn(meta.pid, meta.conn_id, ts, EndReason::Closed, out);
                self.end_tls_on_fd(meta.pid, meta.fd, ts, out);
            }
            ProbeEvent::SslFd { meta } => {
                self.ids.link_ssl(meta.pid, meta.conn_id, meta.fd);
                let peer = self.ids.peer_of(meta.pid, meta.fd);
                if let Some(c) = self
                    .conns
                    .get_mut(&meta.pid)
                    .and_then(|m| m.get_mut(&meta.conn_id))
                {
                    c.info.peer = c.info.peer.or(peer);
                }
            }
            ProbeEvent::SslFree { meta } => {
                self.ids.forget_ssl(meta.pid, meta.conn_id);
                self.end_conn(meta.pid, meta.conn_id, ts, EndReason::Closed, out);
            }
            ProbeEvent::ProcExit { meta } => self.end_process(meta.pid, ts, out),
            ProbeEvent::TlsStart { meta } => {
                self.ids
                    .set_tls_start(meta.pid, meta.fd, meta.conn_id, meta.ts_ns)
            }
            ProbeEvent::ExecMap { .. } => {}
        }
        if ts > self.last_sweep_ts.saturating_add(1_000_000_000) {
            self.last_sweep_ts = ts;
            self.sweep(ts, out);
        }
        self.sh
            .metrics
            .connections_tracked
            .set(self.conn_count as i64);
        self.sh.metrics.tracker_memory.set(self.mem_total as i64);
    }

    /// Ends every connection (agent shutdown or end of a replay): open calls are recorded as
    /// aborted at their last byte.
    pub fn finish_all(&mut self, out: &mut TrackerOutput<P::Record>) {
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
        self.sh
            .metrics
            .connections_tracked
            .set(self.conn_count as i64);
    }

    fn end_tls_on_fd(&mut self, pid: u32, fd: i32, ts: u64, out: &mut TrackerOutput<P::Record>) {
        for ssl in self.ids.take_tls_on_fd(pid, fd) {
            self.end_conn(pid, ssl, ts, EndReason::Closed, out);
        }
    }

    fn end_process(&mut self, pid: u32, ts: u64, out: &mut TrackerOutput<P::Record>) {
        let ids: Vec<u64> = self
            .conns
            .get(&pid)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.end_conn(pid, id, ts, EndReason::Closed, out);
        }
        self.ids.forget_process(pid);
    }

    /// Makes room for a new connection of `pid`: past the per-process bound the process loses
    /// its own least recently active connection; past the total bound the process holding the
    /// most connections does. Idle connections (no call in flight) go first. The victim is
    /// muted in the kernel, so a flood of connections stops costing anything.
    fn make_room(&mut self, pid: u32, ts: u64, out: &mut TrackerOutput<P::Record>) {
        let mine = self.conns.get(&pid).map_or(0, HashMap::len);
        let (victim_pid, reason) = if mine >= self.sh.cfg.max_connections_per_process.max(1) {
            (pid, DropReason::ConnectionLimitPerProcess)
        } else if self.conn_count >= self.sh.cfg.max_connections.max(1) {
            let Some(biggest) = self
                .conns
                .iter()
                .max_by_key(|(_, m)| m.len())
                .map(|(p, _)| *p)
            else {
                return;
            };
            (biggest, DropReason::ConnectionEvicted)
        } else {
            return;
        };
        let Some(victim) = self.conns.get(&victim_pid).and_then(|m| {
            m.iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, c)| (c.session.has_pending(), c.last_ts))
                .map(|(id, _)| *id)
        }) else {
            return;
        };
        self.sh.metrics.drop_for(reason);
        self.end_conn(victim_pid, victim, ts, EndReason::Evicted, out);
        out.mutes.push((victim_pid, victim));
        self.sh.metrics.connections_muted.inc();
    }

    fn sweep(&mut self, now: u64, out: &mut TrackerOutput<P::Record>) {
        let limit = self.sh.cfg.idle_timeout_ns;
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
            self.sh.metrics.drop_for(DropReason::IdleConnection);
            self.end_conn(pid, id, now, EndReason::Idle, out);
        }
    }

    fn remove_conn(&mut self, pid: u32, id: u64) -> Option<Connection<P::Exchange>> {
        let m = self.conns.get_mut(&pid)?;
        let c = m.remove(&id)?;
        if m.is_empty() {
            self.conns.remove(&pid);
        }
        self.conn_count = self.conn_count.saturating_sub(1);
        self.mem_total -= c.mem;
        Some(c)
    }

    /// Stops tracking a connection and records its open calls.
    fn end_conn(
        &mut self,
        pid: u32,
        id: u64,
        ts: u64,
        reason: EndReason,
        out: &mut TrackerOutput<P::Record>,
    ) {
        if let Some(c) = self.remove_conn(pid, id) {
            c.end(reason, ts, &self.sh, &mut self.events, out);
        }
    }

    fn mute(&mut self, pid: u32, id: u64, reason: DropReason, out: &mut TrackerOutput<P::Record>) {
        self.sh.metrics.drop_for(reason);
        self.sh.metrics.connections_muted.inc();
        out.mutes.push((pid, id));
        self.remove_conn(pid, id);
    }

    fn on_data(&mut self, d: DataChunk, out: &mut TrackerOutput<P::Record>) {
        let pid = d.meta.pid;
        let id = d.meta.conn_id;
        let ts = d.meta.ts_ns;
        let verdict = match self.conns.get_mut(&pid).and_then(|m| m.get_mut(&id)) {
            Some(c) => update(c, &d, &self.sh, &mut self.events, &mut self.mem_total, out),
            None => {
                self.make_room(pid, ts, out);
                let c = self.new_connection(&d);
                let c = self.conns.entry(pid).or_default().entry(id).or_insert(c);
                self.conn_count += 1;
                update(c, &d, &self.sh, &mut self.events, &mut self.mem_total, out)
            }
        };
        match verdict {
            Verdict::Keep => {}
            Verdict::Mute(reason) => self.mute(pid, id, reason, out),
            Verdict::Failed(e) => {
                let h2 = self
                    .conns
                    .get(&pid)
                    .and_then(|m| m.get(&id))
                    .is_some_and(|c| c.session.is_http2());
                let (proto, name) = if h2 {
                    (Protocol::Http2, "HTTP/2")
                } else {
                    (Protocol::Http1, "HTTP/1.1")
                };
                self.sh.metrics.parse_error(proto);
                debug!("pid {pid} conn {id:#x}: {name} parse error {e:?}; dropping the connection");
                self.end_conn(pid, id, ts, EndReason::ParseFailure, out);
                out.mutes.push((pid, id));
                self.sh.metrics.connections_muted.inc();
            }
        }
    }

    /// A connection first seen in `d`: its socket (the chunk's fd, or the one its `SSL*` is
    /// linked to) gives its peer and, to the socket's first connection only, its opening times.
    fn new_connection(&mut self, d: &DataChunk) -> Connection<P::Exchange> {
        let pid = d.meta.pid;
        let (fd, generation) = if d.tls {
            (self.ids.fd_of_ssl(pid, d.meta.conn_id), None)
        } else {
            (Some(d.meta.fd), Some(d.meta.conn_id))
        };
        Connection {
            info: ConnInfo {
                pid,
                comm: d.meta.comm.clone(),
                tls: d.tls,
                peer: fd.and_then(|fd| self.ids.peer_of(pid, fd)),
                container: d.meta.container.clone(),
                opened: fd.and_then(|fd| self.ids.take_open_times(pid, fd, generation)),
            },
            last_ts: d.meta.ts_ns,
            coverage: Coverage::default(),
            session: HttpSession::new(),
            mem: 0,
            skipped: 0,
        }
    }

    /// Over the memory budget: cuts the connections holding the most until the total is back
    /// under seven eighths of it (so a client hovering at the budget cannot make every event pay
    /// for a scan of every connection). Their open calls are recorded as `capture_incomplete`
    /// and the kernel stops sending them.
    fn enforce_memory_budget(&mut self, ts: u64, out: &mut TrackerOutput<P::Record>) {
        if self.mem_total <= self.sh.cfg.memory_budget {
            return;
        }
        let target = self.sh.cfg.memory_budget / 8 * 7;
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
            self.sh.metrics.drop_for(DropReason::MemoryBudget);
            self.end_conn(pid, id, ts, EndReason::Evicted, out);
            out.mutes.push((pid, id));
            self.sh.metrics.connections_muted.inc();
        }
    }
}

/// A chunk through its connection, with the connection's heap bytes accounted anew.
fn update<P: ExchangePolicy>(
    c: &mut Connection<P::Exchange>,
    d: &DataChunk,
    sh: &Shared<P>,
    events: &mut Vec<HttpEvent>,
    mem_total: &mut usize,
    out: &mut TrackerOutput<P::Record>,
) -> Verdict {
    let verdict = c.on_chunk(d, sh, events, out);
    let mem = c.heap_bytes();
    *mem_total = *mem_total - c.mem + mem;
    c.mem = mem;
    verdict
}

#[cfg(test)]
mod tests;
