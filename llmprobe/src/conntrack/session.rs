//! One connection's HTTP/1.x session: which direction sends requests, one [`Http1Parser`] per
//! direction, and the requests waiting for their responses, paired in order (HTTP/1.1 answers
//! in request order, pipelined or not). Each request head goes to the [`ExchangePolicy`]; the
//! exchanges it follows get their request's and response's events and are handed back, whole,
//! when the response ends.
//!
//! Invariants: the request direction is decided once, by the first bytes seen (a direction that
//! opens like a response is the answering one) and never changes; at most
//! `max_pending_exchanges` requests wait (the oldest is dropped, counted); a response with no
//! request waiting is counted and ignored; after a `101 Switching Protocols` the request
//! direction's bytes are not parsed any more.

use std::collections::VecDeque;

use crate::probes::events::Direction;
use crate::protocol::http1::{self, Http1Parser, HttpError, HttpEvent, MessageKind};
use crate::protocol::http2::{self, H2Error};
use crate::telemetry::{DropReason, SelfMetrics};

use super::h2session::H2Session;
use super::policy::{Ending, ExchangePolicy, Opened, Role, TrackedExchange};

/// The HTTP/1.x session of one connection; `X` is the policy's exchange.
pub(super) struct HttpSession<X> {
    request_dir: Option<Direction>,
    req: Http1Parser,
    resp: Http1Parser,
    /// When the request being parsed began (its first byte), while its head is incomplete.
    req_msg_start: Option<u64>,
    /// Requests waiting for their responses, oldest first; `None` for one not followed.
    pending: VecDeque<Option<X>>,
    /// Requests in a row that matched nothing.
    unmatched_streak: u32,
    /// A request matched (directly or as a confirmed candidate).
    matched: bool,
    /// Switched protocols: the request direction is no longer HTTP/1.x.
    upgraded: bool,
    /// The first credential fingerprint the masker stamped on request bytes since the last
    /// request head: it goes to the next request head's exchange.
    credential: Option<u64>,
    /// The keyed id of an `Mcp-Session-Id` header the masker stamped on request bytes since the
    /// last request head, handed over like `credential`.
    mcp_session: Option<u64>,
    /// The connection speaks HTTP/2 (its first request bytes were the client preface).
    h2: Option<Box<H2Session<X>>>,
}

/// An HTTP/2 failure as the tracker's HTTP error.
fn h2_error(e: H2Error) -> HttpError {
    match e {
        H2Error::NoPreface => HttpError::NotHttp,
        H2Error::Gap => HttpError::GapInFraming,
        H2Error::FrameTooLarge => HttpError::Malformed("HTTP/2 frame over the allowed size"),
        H2Error::HeaderBlockTooLarge => HttpError::HeaderTooLarge,
        H2Error::Malformed(why) => HttpError::Malformed(why),
        H2Error::Hpack => HttpError::Malformed("HPACK decoding failed"),
    }
}

impl<X: TrackedExchange> HttpSession<X> {
    pub(super) fn new() -> Self {
        HttpSession {
            request_dir: None,
            req: Http1Parser::new(MessageKind::Request),
            resp: Http1Parser::new(MessageKind::Response),
            req_msg_start: None,
            pending: VecDeque::new(),
            unmatched_streak: 0,
            matched: false,
            upgraded: false,
            credential: None,
            mcp_session: None,
            h2: None,
        }
    }

    /// The connection speaks HTTP/2.
    pub(super) fn is_http2(&self) -> bool {
        self.h2.is_some()
    }

    /// Request bytes carried a credential fingerprint (the masker's `api_key_id`): the next
    /// request head's exchange gets the first one. Called before the bytes are fed: only bytes
    /// that start or continue a request head count. A fingerprint from a body or trailers (a
    /// `?key=` inside a prompt, a header-like line a client's body carries) is not the
    /// request's credential, and must not stay behind for the next request on the connection.
    pub(super) fn note_credential(&mut self, id: u64) {
        // HTTP/2 fingerprints its decoded headers itself.
        if self.h2.is_none() && self.req.expects_head() {
            self.credential.get_or_insert(id);
        }
    }

    /// Request bytes carried an `Mcp-Session-Id` header's keyed id: the next request head's,
    /// as for [`Self::note_credential`].
    pub(super) fn note_mcp_session(&mut self, id: u64) {
        if self.h2.is_none() && self.req.expects_head() {
            self.mcp_session.get_or_insert(id);
        }
    }

    /// The direction that sends requests, once decided.
    pub(super) fn request_dir(&self) -> Option<Direction> {
        self.request_dir
    }

    /// The traced process's end: the server when requests arrive.
    pub(super) fn role(&self) -> Role {
        if self.request_dir == Some(Direction::Ingress) {
            Role::Server
        } else {
            Role::Client
        }
    }

    /// Bytes `data` arrived on `dir`: decides the request direction on the first bytes seen and
    /// returns it (`None` while no byte has been seen).
    pub(super) fn orient(&mut self, dir: Direction, data: &[u8]) -> Option<Direction> {
        if self.request_dir.is_none() && !data.is_empty() {
            self.request_dir = Some(if http1::looks_like_response(data) {
                dir.opposite()
            } else {
                dir
            });
            // Three bytes tell `PRI` from every HTTP/1 method; a first write of fewer (never seen
            // from an HTTP/2 client) stays HTTP/1, and a preface behind it is muted as not HTTP.
            if data.len() >= 3 && crate::secrets::is_http2_preface(data) {
                self.h2 = Some(Box::new(H2Session::new(dir)));
            } else if http2::looks_like_server_preface(data) {
                // A server's SETTINGS before the client's preface (HTTP/2 over TLS): this side
                // answers.
                self.request_dir = Some(dir.opposite());
                self.h2 = Some(Box::new(H2Session::new(dir.opposite())));
            }
        }
        self.request_dir
    }

    /// Switched protocols: request bytes are no longer HTTP/1.x.
    pub(super) fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    fn parser(&mut self, dir: Direction) -> &mut Http1Parser {
        if self.request_dir == Some(dir) {
            &mut self.req
        } else {
            &mut self.resp
        }
    }

    /// `n` bytes of `dir` were not captured.
    pub(super) fn feed_gap(
        &mut self,
        dir: Direction,
        n: u64,
        events: &mut Vec<HttpEvent>,
    ) -> Result<(), HttpError> {
        if let Some(h2) = self.h2.as_mut() {
            return h2.feed_gap(dir, n).map_err(h2_error);
        }
        self.parser(dir).feed_gap(n, events)
    }

    /// Bytes of `dir` that arrived at `ts`.
    pub(super) fn feed(
        &mut self,
        dir: Direction,
        data: &bytes::Bytes,
        ts: u64,
        events: &mut Vec<HttpEvent>,
    ) -> Result<(), HttpError> {
        if let Some(h2) = self.h2.as_mut() {
            return h2.feed(dir, data).map_err(h2_error);
        }
        if self.request_dir == Some(dir) {
            if self.req.is_idle() {
                self.req_msg_start = Some(ts);
            }
            self.req.feed_bytes(data, events)
        } else {
            self.resp.feed_bytes(data, events)
        }
    }

    /// The connection ended: a response delimited by the connection's end completes.
    pub(super) fn finish_response(&mut self, events: &mut Vec<HttpEvent>) {
        if self.h2.is_none() {
            self.resp.finish(events);
        }
    }

    /// Hands `dir`'s parsed `events` (drained) at `ts` to the exchanges; `done` gets each
    /// exchange whose response ended.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_events<P, F>(
        &mut self,
        policy: &P,
        pid: u32,
        dir: Direction,
        events: &mut Vec<HttpEvent>,
        ts: u64,
        max_pending: usize,
        metrics: &SelfMetrics,
        done: &mut F,
    ) where
        P: ExchangePolicy<Exchange = X>,
        F: FnMut(X, Ending),
    {
        if let Some(h2) = self.h2.as_mut() {
            events.clear();
            h2.on_events(policy, pid, dir, ts, metrics, done);
            return;
        }
        if self.request_dir == Some(dir) {
            for ev in events.drain(..) {
                self.on_request_event(policy, pid, ev, ts, max_pending, metrics);
            }
        } else {
            for ev in events.drain(..) {
                self.on_response_event(ev, ts, metrics, done);
            }
        }
    }

    fn on_request_event<P: ExchangePolicy<Exchange = X>>(
        &mut self,
        policy: &P,
        pid: u32,
        ev: HttpEvent,
        ts: u64,
        max_pending: usize,
        metrics: &SelfMetrics,
    ) {
        match ev {
            HttpEvent::RequestHead(h) => {
                self.resp
                    .expect_response(h.method == "HEAD" || h.method == "CONNECT");
                let start = self.req_msg_start.take().unwrap_or(ts);
                let credential = self.credential.take();
                let mcp_session = self.mcp_session.take();
                let mut exchange = match policy.open(&h, start, pid, self.role()) {
                    Opened::Match(ex) => {
                        self.matched = true;
                        self.unmatched_streak = 0;
                        Some(ex)
                    }
                    // The request body decides (see MessageEnd below).
                    Opened::Candidate(ex) => Some(ex),
                    Opened::Ignore => {
                        self.unmatched_streak += 1;
                        None
                    }
                };
                if let (Some(ex), Some(id)) = (exchange.as_mut(), credential) {
                    ex.on_credential(id);
                }
                if let (Some(ex), Some(id)) = (exchange.as_mut(), mcp_session) {
                    ex.on_mcp_session(id);
                }
                if self.pending.len() >= max_pending {
                    metrics.drop_for(DropReason::PendingExchangeLimit);
                    self.pending.pop_front();
                }
                self.pending.push_back(exchange);
            }
            HttpEvent::Body(b) => {
                if let Some(Some(ex)) = self.pending.back_mut() {
                    ex.on_request_body(&b, ts);
                }
            }
            HttpEvent::BodyGap(_) => {
                if let Some(Some(ex)) = self.pending.back_mut() {
                    ex.on_request_gap();
                }
            }
            HttpEvent::MessageEnd => {
                if let Some(p) = self.pending.back_mut()
                    && let Some(ex) = p.as_mut()
                {
                    if !ex.on_request_end(ts) {
                        *p = None;
                        self.unmatched_streak += 1;
                    } else if !self.matched {
                        self.matched = true;
                        self.unmatched_streak = 0;
                    }
                }
            }
            HttpEvent::ResponseHead(_) => {}
        }
    }

    fn on_response_event<F: FnMut(X, Ending)>(
        &mut self,
        ev: HttpEvent,
        ts: u64,
        metrics: &SelfMetrics,
        done: &mut F,
    ) {
        match ev {
            HttpEvent::ResponseHead(h) => {
                if h.status == 101 {
                    self.upgraded = true;
                }
                match self.pending.front_mut() {
                    Some(p) => {
                        if let Some(ex) = p.as_mut() {
                            ex.on_response_head(&h, ts);
                        }
                    }
                    None => metrics.drop_for(DropReason::ResponseWithoutRequest),
                }
            }
            HttpEvent::Body(b) => {
                if let Some(Some(ex)) = self.pending.front_mut() {
                    ex.on_response_body(&b, ts);
                }
            }
            HttpEvent::BodyGap(_) => {}
            HttpEvent::MessageEnd => {
                if let Some(Some(mut ex)) = self.pending.pop_front() {
                    ex.on_response_end(ts);
                    done(ex, Ending::Complete);
                }
            }
            HttpEvent::RequestHead(_) => {}
        }
    }

    /// A request matched on this connection.
    pub(super) fn matched(&self) -> bool {
        self.h2.as_ref().map_or(self.matched, |h| h.matched())
    }

    /// Requests in a row that matched nothing.
    pub(super) fn unmatched_streak(&self) -> u32 {
        self.h2
            .as_ref()
            .map_or(self.unmatched_streak, |h| h.unmatched_streak())
    }

    /// Requests wait for responses (followed or not).
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.h2.as_ref().is_some_and(|h| h.has_pending())
    }

    /// The exchanges followed and not finished.
    pub(super) fn exchanges(&self) -> impl Iterator<Item = &X> {
        self.pending
            .iter()
            .flatten()
            .chain(self.h2.iter().flat_map(|h| h.exchanges()))
    }

    /// Takes the exchanges followed and not finished, oldest first.
    pub(super) fn drain_exchanges(&mut self) -> impl Iterator<Item = X> + '_ {
        let h2 = self
            .h2
            .as_mut()
            .map(|h| h.drain_exchanges())
            .unwrap_or_default();
        self.pending.drain(..).flatten().chain(h2)
    }

    /// Heap bytes held by the parsers and the open exchanges.
    pub(super) fn heap_bytes(&self) -> usize {
        if let Some(h2) = &self.h2 {
            return h2.heap_bytes();
        }
        self.req.buffered_bytes()
            + self.resp.buffered_bytes()
            + self.pending.capacity() * std::mem::size_of::<Option<X>>()
            + self.exchanges().map(X::heap_bytes).sum::<usize>()
    }
}
