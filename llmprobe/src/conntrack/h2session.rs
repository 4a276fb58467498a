//! One connection's HTTP/2 session: a connection whose first request bytes are the client
//! preface ([`crate::secrets::is_http2_preface`]) gets this instead of the HTTP/1.x session. One
//! [`H2Parser`] (and HPACK decoder) per direction; each request stream is its own exchange, so
//! many calls multiplexed on one connection give one record each.
//!
//! Per stream: a request HEADERS block becomes the policy's [`RequestHead`] (`:method`, `:path`
//! with secret query values redacted, regular fields; `:authority` as `host` when the client sent
//! no `host`) and opens an exchange through [`ExchangePolicy::open`]; request DATA is its request
//! body, END_STREAM its request end; the first non-1xx response HEADERS is its response head,
//! response DATA its body (timed by the bytes that carried each piece), END_STREAM completes it;
//! trailers are read for nothing. The client's RST_STREAM ends the exchange as an abort
//! ([`Ending::Closed`] at the reset's bytes, the same record as a client closing an HTTP/1.1
//! connection mid-response); the server's is an error ([`Ending::ServerReset`]: `stream_reset`).
//! Only a new client stream id (odd, above every earlier one) opens a request.
//!
//! Invariants: at most [`MAX_STREAMS`] streams are followed at once per connection (the rest are
//! not followed, counted as [`DropReason::Http2StreamLimit`]); SETTINGS of one direction bound the
//! other direction's parser (frame size, HPACK table size); a failed parser (a gap: HPACK state
//! is lost) fails the whole session, and the tracker cuts the connection (its exchanges end as
//! cut short). Streams that matched nothing count toward the connection's mute like HTTP/1
//! requests.

use std::collections::HashMap;

use bytes::Bytes;

use crate::probes::events::Direction;
use crate::protocol::http1::{RequestHead, ResponseHead};
use crate::protocol::http2::{H2Error, H2Event, H2Parser, HeaderBlock, Side};
use crate::telemetry::{DropReason, SelfMetrics};

use super::policy::{Ending, ExchangePolicy, Opened, Role, TrackedExchange};

/// Most streams followed at once on one connection.
pub(super) const MAX_STREAMS: usize = 128;

/// One followed stream.
struct Stream<X> {
    ex: X,
    /// Its final response head arrived (later HEADERS are trailers).
    responded: bool,
}

/// The HTTP/2 session of one connection; `X` is the policy's exchange.
pub(super) struct H2Session<X> {
    /// The direction that carries the client's frames.
    request_dir: Direction,
    client: H2Parser,
    server: H2Parser,
    streams: HashMap<u32, Stream<X>>,
    /// Events parsed by the last feed, handed out by `on_events`.
    events: Vec<H2Event>,
    unmatched_streak: u32,
    matched: bool,
    /// The highest client stream id that opened a request: ids only grow (RFC 9113 §5.1.1), so
    /// a request head on an older or server-initiated id is not a new request (late frames of a
    /// reset stream must not land in a new exchange).
    last_client_stream: u32,
    /// Header fields the parsers dropped past their caps, already counted.
    dropped_counted: u64,
}

impl<X: TrackedExchange> H2Session<X> {
    /// A session whose client frames travel on `request_dir`.
    pub(super) fn new(request_dir: Direction) -> Self {
        H2Session {
            request_dir,
            client: H2Parser::new(Side::Client),
            server: H2Parser::new(Side::Server),
            streams: HashMap::new(),
            events: Vec::new(),
            unmatched_streak: 0,
            matched: false,
            last_client_stream: 0,
            dropped_counted: 0,
        }
    }

    fn role(&self) -> Role {
        if self.request_dir == Direction::Ingress {
            Role::Server
        } else {
            Role::Client
        }
    }

    /// `n` bytes of `dir` were not captured: the session fails (HPACK state is lost).
    pub(super) fn feed_gap(&mut self, dir: Direction, n: u64) -> Result<(), H2Error> {
        if dir == self.request_dir {
            self.client.feed_gap(n)
        } else {
            self.server.feed_gap(n)
        }
    }

    /// Bytes of `dir`: parsed into events that the next [`H2Session::on_events`] hands out.
    pub(super) fn feed(&mut self, dir: Direction, data: &Bytes) -> Result<(), H2Error> {
        if let Some(e) = self.client.failed().or(self.server.failed()) {
            return Err(e);
        }
        if dir == self.request_dir {
            self.client.feed(data, &mut self.events)
        } else {
            self.server.feed(data, &mut self.events)
        }
    }

    /// Hands the events of `dir` parsed at `ts` to the exchanges; `done` gets each exchange that
    /// ended (complete, or aborted by RST_STREAM).
    pub(super) fn on_events<P, F>(
        &mut self,
        policy: &P,
        pid: u32,
        dir: Direction,
        ts: u64,
        metrics: &SelfMetrics,
        done: &mut F,
    ) where
        P: ExchangePolicy<Exchange = X>,
        F: FnMut(X, Ending),
    {
        let is_req = dir == self.request_dir;
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            match ev {
                H2Event::Settings {
                    header_table_size,
                    max_frame_size,
                } => {
                    // What the sender allows is what the other direction may use.
                    let other = if is_req {
                        &mut self.server
                    } else {
                        &mut self.client
                    };
                    if let Some(n) = header_table_size {
                        other.set_header_table_size(n);
                    }
                    if let Some(n) = max_frame_size {
                        other.set_max_frame_size(n);
                    }
                }
                H2Event::Headers { stream, block } if is_req => {
                    self.on_request_head(policy, pid, stream, &block, ts, metrics)
                }
                H2Event::Headers { stream, block } => {
                    if let Some(s) = self.streams.get_mut(&stream)
                        && !s.responded
                        && let Some(status) = block.status
                        && !(100..200).contains(&status)
                    {
                        s.responded = true;
                        let head = ResponseHead {
                            status,
                            headers: block.headers,
                        };
                        s.ex.on_response_head(&head, ts);
                    }
                }
                H2Event::Data { stream, data } => {
                    if let Some(s) = self.streams.get_mut(&stream) {
                        if is_req {
                            s.ex.on_request_body(&data, ts);
                        } else {
                            s.ex.on_response_body(&data, ts);
                        }
                    }
                }
                H2Event::EndStream { stream } if is_req => {
                    if let Some(s) = self.streams.get_mut(&stream) {
                        if !s.ex.on_request_end(ts) {
                            self.streams.remove(&stream);
                            self.unmatched_streak += 1;
                        } else if !self.matched {
                            self.matched = true;
                            self.unmatched_streak = 0;
                        }
                    }
                }
                H2Event::EndStream { stream } => {
                    if let Some(mut s) = self.streams.remove(&stream) {
                        s.ex.on_response_end(ts);
                        done(s.ex, Ending::Complete);
                    }
                }
                H2Event::Reset { stream, .. } => {
                    // The client's reset gives the call up (an abort, as a client closing an
                    // HTTP/1.1 connection); the server's refuses or fails it (an error).
                    if let Some(s) = self.streams.remove(&stream) {
                        let ending = if is_req {
                            Ending::Closed { at: ts }
                        } else {
                            Ending::ServerReset { at: ts }
                        };
                        done(s.ex, ending);
                    }
                }
                H2Event::GoAway { .. } => {}
            }
        }
        self.events = events;
        let dropped = self.client.dropped_fields() + self.server.dropped_fields();
        metrics.drop_by(
            DropReason::Http2HeaderFieldsDropped,
            dropped.saturating_sub(self.dropped_counted),
        );
        self.dropped_counted = dropped;
    }

    fn on_request_head<P: ExchangePolicy<Exchange = X>>(
        &mut self,
        policy: &P,
        pid: u32,
        stream: u32,
        block: &HeaderBlock,
        ts: u64,
        metrics: &SelfMetrics,
    ) {
        if self.streams.contains_key(&stream) {
            return; // Request trailers.
        }
        if stream.is_multiple_of(2) || stream <= self.last_client_stream {
            // Trailers of a stream not followed, or an id that cannot open a request.
            return;
        }
        self.last_client_stream = stream;
        let (Some(method), Some(path)) = (&block.method, &block.path) else {
            return;
        };
        if self.streams.len() >= MAX_STREAMS {
            metrics.drop_for(DropReason::Http2StreamLimit);
            return;
        }
        let mut headers = block.headers.clone();
        if block.header("host").is_none()
            && let Some(a) = &block.authority
        {
            headers.push(("host".to_owned(), a.clone()));
        }
        let head = RequestHead {
            method: method.clone(),
            path: path.clone(),
            headers,
        };
        let mut ex = match policy.open(&head, ts, pid, self.role()) {
            Opened::Match(ex) => {
                self.matched = true;
                self.unmatched_streak = 0;
                ex
            }
            Opened::Candidate(ex) => ex,
            Opened::Ignore => {
                self.unmatched_streak += 1;
                return;
            }
        };
        if let Some(id) = block.credential {
            ex.on_credential(id);
        }
        self.streams.insert(
            stream,
            Stream {
                ex,
                responded: false,
            },
        );
    }

    /// A stream matched on this connection.
    pub(super) fn matched(&self) -> bool {
        self.matched
    }

    /// Streams in a row that matched nothing.
    pub(super) fn unmatched_streak(&self) -> u32 {
        self.unmatched_streak
    }

    /// Followed streams are open.
    pub(super) fn has_pending(&self) -> bool {
        !self.streams.is_empty()
    }

    /// The exchanges followed and not finished.
    pub(super) fn exchanges(&self) -> impl Iterator<Item = &X> {
        self.streams.values().map(|s| &s.ex)
    }

    /// Takes the exchanges followed and not finished, oldest stream first.
    pub(super) fn drain_exchanges(&mut self) -> Vec<X> {
        let mut all: Vec<(u32, X)> = self.streams.drain().map(|(id, s)| (id, s.ex)).collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        self.client.finish();
        self.server.finish();
        all.into_iter().map(|(_, x)| x).collect()
    }

    /// Heap bytes held by the parsers, the HPACK tables and the open exchanges.
    pub(super) fn heap_bytes(&self) -> usize {
        self.client.buffered_bytes()
            + self.server.buffered_bytes()
            + self.events.capacity() * std::mem::size_of::<H2Event>()
            + self.streams.capacity() * std::mem::size_of::<(u32, Stream<X>)>()
            + self.exchanges().map(X::heap_bytes).sum::<usize>()
    }
}
