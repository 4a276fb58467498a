//! The LLM layer's side of the tracker's contract ([`crate::conntrack::policy`]): which requests
//! are LLM calls ([`super::detect`] by path and headers, [`super::detect_candidate`] for JSON
//! POSTs whose body decides), what the tracker's mute feedback counts as a request that matched
//! nothing, and how an [`LlmExchange`] becomes an [`LlmCall`]. Each exchange it opens is also
//! placed in the gateway join ([`super::gateway`]): a server-role one registers, a client-role
//! one of a process serving calls looks for the call it serves.
//!
//! The tracker is generic over [`LlmPolicy`]; [`tracker`] builds the one the agent runs.

use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::conntrack::policy::{ConnInfo, Ending, ExchangePolicy, Opened, Role, TrackedExchange};
use crate::conntrack::{ConnTracker, TrackerConfig};
use crate::protocol::http1::{RequestHead, ResponseHead};
use crate::telemetry::{DropReason, Protocol, SelfMetrics};

use super::LlmCall;
use super::exchange::{ExchangeContext, ExchangeLimits, LlmExchange};
use super::gateway::{GatewayIndex, Link, SharedIndex};

/// Follows the requests that a provider dialect recognises, and joins a gateway's calls (see
/// [`super::gateway`]).
#[derive(Clone, Default)]
pub struct LlmPolicy {
    limits: ExchangeLimits,
    gateways: SharedIndex,
    /// Where refused gateway registrations are counted (none in fuzzing).
    metrics: Option<Arc<SelfMetrics>>,
    /// `--capture-content`: which calls' content is collected (None: none).
    content: Option<Arc<crate::content::ContentPolicy>>,
}

impl LlmPolicy {
    /// A policy whose exchanges keep to `limits`.
    pub fn new(limits: ExchangeLimits) -> Self {
        LlmPolicy {
            limits,
            gateways: SharedIndex::default(),
            metrics: None,
            content: None,
        }
    }

    /// A policy whose gateway joins draw their span and trace ids from `seed` (tests, replays).
    pub fn with_id_seed(limits: ExchangeLimits, seed: u64) -> Self {
        LlmPolicy {
            limits,
            gateways: Arc::new(Mutex::new(GatewayIndex::with_seed(seed))),
            metrics: None,
            content: None,
        }
    }

    /// Collects the content of the calls `policy` may select (`--capture-content`).
    pub fn with_content(mut self, policy: Option<Arc<crate::content::ContentPolicy>>) -> Self {
        self.content = policy;
        self
    }

    /// Counts refused gateway registrations in `metrics`.
    pub fn counting(mut self, metrics: Arc<SelfMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The gateway index (tests).
    pub fn gateways(&self) -> &SharedIndex {
        &self.gateways
    }

    /// Joins a new exchange of `pid` to the gateway calls of its process (see
    /// [`super::gateway`]).
    fn link(&self, ex: &mut LlmExchange, pid: u32, role: Role) {
        let link = match role {
            Role::Server => {
                let link = Link::gateway(&self.gateways, pid, ex.start_ts(), ex.trace_id());
                if link.is_none()
                    && let Some(m) = &self.metrics
                {
                    m.drop_for(DropReason::GatewayJoinRefused);
                }
                link
            }
            Role::Client => Link::upstream(&self.gateways, pid),
        };
        if let Some(link) = link {
            ex.set_gateway_link(link);
        }
    }
}

/// The tracker that makes LLM call records.
pub type LlmTracker = ConnTracker<LlmPolicy>;

/// The agent's tracker: LLM calls, default exchange limits.
pub fn tracker(cfg: TrackerConfig, clock: Clock, metrics: Arc<SelfMetrics>) -> LlmTracker {
    tracker_with_content(cfg, clock, metrics, None)
}

/// The agent's tracker, collecting the content of the calls `content` may select.
pub fn tracker_with_content(
    cfg: TrackerConfig,
    clock: Clock,
    metrics: Arc<SelfMetrics>,
    content: Option<Arc<crate::content::ContentPolicy>>,
) -> LlmTracker {
    let policy = LlmPolicy::default()
        .counting(metrics.clone())
        .with_content(content);
    ConnTracker::new(cfg, policy, clock, metrics)
}

impl ExchangePolicy for LlmPolicy {
    type Record = LlmCall;
    type Exchange = LlmExchange;

    fn open(&self, head: &RequestHead, start_ts: u64, pid: u32, role: Role) -> Opened<LlmExchange> {
        if let Some(d) = super::detect(head) {
            // The first LLM call: the token estimator's vocabulary starts loading beside the
            // pipeline, ready by the time a call without usage ends.
            super::tokens::prewarm();
            let mut ex = LlmExchange::new(head, d, start_ts, self.limits);
            self.link(&mut ex, pid, role);
            if let Some(c) = &self.content {
                ex.set_content(c.clone());
            }
            return Opened::Match(ex);
        }
        // Unknown path: the request body decides.
        match super::detect_candidate(head) {
            Some(d) => {
                let mut ex = LlmExchange::new(head, d, start_ts, self.limits);
                ex.set_candidate();
                self.link(&mut ex, pid, role);
                if let Some(c) = &self.content {
                    ex.set_content(c.clone());
                }
                Opened::Candidate(ex)
            }
            None => Opened::Ignore,
        }
    }
}

/// What an exchange knows of its connection.
fn context(conn: &ConnInfo, role: Role, start_ts: u64) -> ExchangeContext {
    ExchangeContext {
        role: role.as_str(),
        pid: conn.pid,
        comm: conn.comm.clone(),
        tls: conn.tls,
        peer: conn.peer,
        container: conn.container.clone(),
        fresh: conn.fresh_for(start_ts),
    }
}

impl TrackedExchange for LlmExchange {
    type Record = LlmCall;

    fn on_credential(&mut self, id: u64) {
        self.on_api_key_id(id);
    }

    fn on_mcp_session(&mut self, id: u64) {
        LlmExchange::on_mcp_session(self, id);
    }

    fn on_request_body(&mut self, data: &[u8], ts: u64) {
        LlmExchange::on_request_body(self, data, ts);
    }

    fn on_request_gap(&mut self) {
        LlmExchange::on_request_gap(self);
    }

    fn on_request_end(&mut self, ts: u64) -> bool {
        LlmExchange::on_request_end(self, ts);
        !self.is_rejected()
    }

    fn on_response_head(&mut self, head: &ResponseHead, ts: u64) {
        LlmExchange::on_response_head(self, head, ts);
    }

    fn on_response_body(&mut self, data: &[u8], ts: u64) {
        LlmExchange::on_response_body(self, data, ts);
    }

    fn on_response_end(&mut self, ts: u64) {
        LlmExchange::on_response_end(self, ts);
    }

    fn start_ts(&self) -> u64 {
        LlmExchange::start_ts(self)
    }

    fn responded(&self) -> bool {
        LlmExchange::responded(self)
    }

    fn heap_bytes(&self) -> usize {
        LlmExchange::heap_bytes(self)
    }

    /// A whole exchange counts the problems found inside it; one cut off carries why in its
    /// `error_type` (`idle_timeout`, `capture_incomplete`) or is marked aborted (closed).
    fn in_flight(
        &self,
        conn: &ConnInfo,
        role: Role,
        clock: &Clock,
    ) -> Option<crate::live::InFlightCall> {
        Some(self.in_flight_view(&context(conn, role, self.start_ts()), clock))
    }

    fn finish(
        mut self,
        conn: &ConnInfo,
        role: Role,
        clock: &Clock,
        ending: Ending,
        metrics: &SelfMetrics,
    ) -> LlmCall {
        let ctx = context(conn, role, self.start_ts());
        match ending {
            Ending::Complete => {
                count_issues(&self, metrics);
                LlmExchange::finish(self, &ctx, clock, false, None)
            }
            Ending::Closed { at } => LlmExchange::finish(self, &ctx, clock, true, Some(at)),
            Ending::Idle { at } => {
                self.set_error("idle_timeout");
                LlmExchange::finish(self, &ctx, clock, false, Some(at))
            }
            Ending::ServerReset { at } => {
                self.set_error("stream_reset");
                LlmExchange::finish(self, &ctx, clock, false, Some(at))
            }
            Ending::CutShort { at } => {
                self.set_error("capture_incomplete");
                LlmExchange::finish(self, &ctx, clock, false, Some(at))
            }
        }
    }
}

/// Problems inside a whole exchange, as self-metrics.
fn count_issues(ex: &LlmExchange, metrics: &SelfMetrics) {
    let issues = ex.issues;
    for _ in 0..issues.bad_stream_events {
        metrics.parse_error(Protocol::Json);
    }
    for _ in 0..issues.oversized_events {
        metrics.parse_error(Protocol::Sse);
    }
    for _ in 0..issues.oversized_lines {
        metrics.parse_error(Protocol::Ndjson);
    }
    for _ in 0..issues.truncated_bodies {
        metrics.drop_for(DropReason::BodyOverLimit);
    }
    for _ in 0..issues.undecodable_bodies {
        metrics.drop_for(DropReason::UndecodableBody);
    }
}
