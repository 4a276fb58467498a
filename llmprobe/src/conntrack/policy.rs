//! The contract between the tracker (stage 2) and what it tracks for (stage 4, the LLM call
//! model): the tracker frames and pairs HTTP/1.x messages; an [`ExchangePolicy`] decides which
//! requests are worth following, and its [`TrackedExchange`]s turn the messages of one request and
//! its response into one record. The tracker knows nothing of LLMs: `crate::llm::tracking`
//! implements this contract, so the tracker never imports the layer above it.
//!
//! The policy's answers also drive the mute feedback: a connection whose requests keep matching
//! nothing ([`Opened::Ignore`], or a candidate refused at its request's end) and none that matched
//! is muted after [`super::TrackerConfig::mute_after_non_llm`] of them.
//!
//! The tracker is generic over the policy (monomorphised): no dynamic dispatch per event.

use std::net::SocketAddr;

use crate::clock::Clock;
use crate::protocol::http1::{RequestHead, ResponseHead};
use crate::telemetry::SelfMetrics;

/// Which end of its connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It sends the requests.
    Client,
    /// It receives them.
    Server,
}

impl Role {
    /// `client` or `server`, as records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// What a record needs to know about its connection and process.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// Captured through the TLS library.
    pub tls: bool,
    /// Socket peer, when the socket is known.
    pub peer: Option<SocketAddr>,
    /// Container id of the process, when it runs in one.
    pub container: Option<String>,
    /// How the connection began, when the tracker saw the process connect its socket.
    pub opened: Option<ConnTimes>,
}

/// How a connection the process connected itself began (monotonic ns): what its first request's
/// time to first token also waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTimes {
    /// The `connect()` call's entry.
    pub connect_ns: u64,
    /// The first TLS record written on the socket (the ClientHello), for a TLS connection.
    pub tls_start_ns: Option<u64>,
    /// The first request byte on the connection (set by the tracker as it arrives).
    pub first_request_ns: Option<u64>,
}

/// A fresh connection's share of its first request's wait (durations, ns): the parts tile the
/// time line from `connect()` to the first request byte, which is where the request's own times
/// (upload, time to first token) start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshConn {
    /// From the `connect()` entry to the connection's first byte out: the ClientHello for TLS,
    /// the first request byte for plaintext.
    pub connect_ns: u64,
    /// From the ClientHello to the first request byte; None for plaintext, and when the
    /// handshake ran inside the first `SSL_write` (its bytes are stamped at the call's start,
    /// before the handshake, so the split cannot be read).
    pub tls_handshake_ns: Option<u64>,
}

impl ConnInfo {
    /// The connection's opening times, for the exchange whose first request byte came at
    /// `start_ts`: only the first request on a connection the process connected (and the
    /// tracker saw connect) waited for them; every later one, and every request of an accepted
    /// or pre-existing connection, gets None.
    pub fn fresh_for(&self, start_ts: u64) -> Option<FreshConn> {
        let t = self.opened?;
        if t.first_request_ns != Some(start_ts) {
            return None;
        }
        let first_out = if self.tls { t.tls_start_ns? } else { start_ts };
        Some(FreshConn {
            connect_ns: first_out.checked_sub(t.connect_ns)?,
            tls_handshake_ns: if self.tls {
                start_ts.checked_sub(first_out)
            } else {
                None
            },
        })
    }
}

/// How an exchange stopped being followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its response ended: the exchange is whole.
    Complete,
    /// Its connection ended (closed, freed, its process exited, or tracking stopped) at `at`
    /// (monotonic ns) before the response did.
    Closed {
        /// When the connection ended.
        at: u64,
    },
    /// Its connection carried no bytes for too long; `at` is its last byte.
    Idle {
        /// The connection's last byte.
        at: u64,
    },
    /// The server reset the request's stream (HTTP/2 `RST_STREAM` from the answering side:
    /// refused, cancelled or failed by the server, not given up by the client) at `at`.
    ServerReset {
        /// When the reset arrived.
        at: u64,
    },
    /// The tracker stopped following its connection at `at`: the bytes could not be parsed any
    /// more, or a bound (connection table, memory budget) cut it.
    CutShort {
        /// When the connection was cut.
        at: u64,
    },
}

/// The policy's answer to a request head.
pub enum Opened<X> {
    /// Followed, and the connection is wanted (it will not be muted for requests that match
    /// nothing).
    Match(X),
    /// Followed on probation: the request body decides at the request's end
    /// ([`TrackedExchange::on_request_end`]).
    Candidate(X),
    /// Not followed: one more request that matched nothing.
    Ignore,
}

/// Decides which requests the tracker follows.
pub trait ExchangePolicy {
    /// What one followed request and its response become.
    type Record;
    /// One followed request and its response.
    type Exchange: TrackedExchange<Record = Self::Record>;

    /// A request head whose first byte arrived at `start_ts` (monotonic ns), on a connection of
    /// process `pid` whose end is `role`.
    fn open(
        &self,
        head: &RequestHead,
        start_ts: u64,
        pid: u32,
        role: Role,
    ) -> Opened<Self::Exchange>;
}

/// One followed request and its response, fed in order as the parsers frame them. Times are
/// monotonic ns of the bytes that carried the event.
pub trait TrackedExchange {
    /// What the exchange becomes.
    type Record;

    /// The request carried a credential: its keyed fingerprint (from the masker; the
    /// credential itself never reaches the tracker). Called at most once, before the body.
    fn on_credential(&mut self, _id: u64) {}
    /// The request carried an MCP session header: its keyed id (from the masker). Called at
    /// most once, before the body.
    fn on_mcp_session(&mut self, _id: u64) {}
    /// Request body bytes (after de-chunking).
    fn on_request_body(&mut self, data: &[u8], ts: u64);
    /// Request body bytes were not captured.
    fn on_request_gap(&mut self);
    /// The request is complete. False: the exchange is no longer followed (a candidate whose
    /// body matched nothing), and counts as a request that matched nothing.
    fn on_request_end(&mut self, ts: u64) -> bool;
    /// The final response head.
    fn on_response_head(&mut self, head: &ResponseHead, ts: u64);
    /// Response body bytes (after de-chunking).
    fn on_response_body(&mut self, data: &[u8], ts: u64);
    /// The response is complete.
    fn on_response_end(&mut self, ts: u64);
    /// The first request byte's time.
    fn start_ts(&self) -> u64;
    /// A response head has arrived: the request reached its server.
    fn responded(&self) -> bool;
    /// Heap bytes held, for the tracker's memory budget.
    fn heap_bytes(&self) -> usize;
    /// What the live view shows of the exchange while it is in flight (None: nothing).
    fn in_flight(
        &self,
        _conn: &ConnInfo,
        _role: Role,
        _clock: &Clock,
    ) -> Option<crate::live::InFlightCall> {
        None
    }
    /// The record. Problems found inside the exchange may be counted in `metrics`.
    fn finish(
        self,
        conn: &ConnInfo,
        role: Role,
        clock: &Clock,
        ending: Ending,
        metrics: &SelfMetrics,
    ) -> Self::Record;
}
