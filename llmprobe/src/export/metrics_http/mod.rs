//! A small HTTP endpoint serving the metric registry at `/metrics` in the Prometheus text format
//! (or OpenMetrics, when the scraper's `Accept` asks for it; the formats and the negotiation
//! are in [`exposition`]).
//!
//! Any local process can connect, so the server is bounded whatever clients do
//! ([`ServeLimits`]): at most `max_connections` are served at once (more are closed at once); a
//! connection has `request_timeout` in all to deliver its request head (at most
//! [`MAX_REQUEST_HEAD`] bytes) and take its reply, however slowly it trickles bytes; only `GET`
//! and `HEAD` of `/metrics` are answered with the registry, encoded once per scrape at most:
//! one encoding at a time, shared by every scrape of its format that arrived before it began
//! (so a scrape never gets figures older than itself, and a burst of scrapes costs one
//! encoding, not one each); at most [`MAX_SCRAPES_ANSWERING`] scrapes are encoded or written at
//! once (a new one stops the oldest, so slow readers cannot each pin an encoding); a failing
//! `accept` (e.g. out of file descriptors) backs off instead of spinning. Every refusal is
//! counted in `llmprobe_dropped_total{reason="metrics_..."}`.

pub mod exposition;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{debug, warn};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::telemetry::{DropReason, SelfMetrics};

/// Scrapes answered (encoded and written) at once; a new one past it stops the oldest, so slow
/// readers cannot each hold an encoding of their own.
pub const MAX_SCRAPES_ANSWERING: usize = 4;

/// The latest encoding per format (classic text, OpenMetrics), with when it began.
type Encodings = tokio::sync::Mutex<[Option<(Instant, &'static str, Arc<String>)>; 2]>;

/// The registry encoded in the asked format for a scrape that arrived at `asked`: the latest
/// encoding if it began at or after `asked` (made while this scrape waited), else a new one.
async fn encoding(
    registry: &Registry,
    cache: &Encodings,
    openmetrics: bool,
    asked: Instant,
) -> (&'static str, Arc<String>) {
    let mut slots = cache.lock().await;
    let slot = &mut slots[usize::from(openmetrics)];
    if let Some((began, ctype, text)) = slot.as_ref()
        && *began >= asked
    {
        return (ctype, text.clone());
    }
    let began = Instant::now();
    let (ctype, text) = exposition::encode_for(registry, openmetrics);
    let text = Arc::new(text);
    *slot = Some((began, ctype, text.clone()));
    (ctype, text)
}

/// Largest request head read; a longer one is refused with 431.
pub const MAX_REQUEST_HEAD: usize = 8192;

/// Bounds of the `/metrics` server.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections served at once; past it a new connection closes the oldest one.
    pub max_connections: usize,
    /// Time a connection has, in all, to send its request head and take the reply.
    pub request_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 16,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// The accept side's bounds, shared by the agent's servers (`/metrics`, the live view):
/// connections being served, oldest first, at most `max` (when all are taken the oldest is
/// closed to make room: a client that sends its head at once is gone in milliseconds, so the
/// oldest is the one trickling or idling, and idle connections cannot lock others out); and a
/// failing `accept` (EMFILE, ENFILE, ENOBUFS...) waits, longer each time, instead of spinning.
pub(crate) struct Slots {
    live: VecDeque<AbortHandle>,
    max: usize,
    backoff: Duration,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Self {
        Slots {
            live: VecDeque::with_capacity(max),
            max: max.max(1),
            backoff: Duration::ZERO,
        }
    }

    /// After a failed accept: waits 10 ms, doubling up to 1 s while accepts keep failing.
    pub(crate) async fn accept_failed(&mut self, server: &str, e: &std::io::Error) {
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        warn!(
            "{server} accept failed ({e}); retrying in {:?}",
            self.backoff
        );
        tokio::time::sleep(self.backoff).await;
    }

    /// After an accepted connection: closes the oldest served connections until one more
    /// fits; returns how many were closed.
    pub(crate) fn make_room(&mut self) -> u64 {
        self.backoff = Duration::ZERO;
        self.live.retain(|h| !h.is_finished());
        let mut closed = 0;
        while self.live.len() >= self.max {
            if let Some(oldest) = self.live.pop_front() {
                oldest.abort();
                closed += 1;
            }
        }
        closed
    }

    /// The connection's task, now served.
    pub(crate) fn push(&mut self, task: AbortHandle) {
        self.live.push_back(task);
    }
}

/// Binds the listener (so a busy port is reported at start-up, not later).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for /metrics on {addr}; pass --metrics-addr with a free address")
    })
}

/// Serves `/metrics` on `first`, or, when binding failed, on `addr` once it can be bound
/// (tried every 5 s, a warning a minute), until the task is dropped.
pub async fn serve_when_bound(
    first: anyhow::Result<TcpListener>,
    addr: SocketAddr,
    registry: Arc<Registry>,
    metrics: Arc<SelfMetrics>,
    limits: ServeLimits,
) {
    let listener = match first {
        Ok(l) => l,
        Err(_) => {
            let mut tries = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                tries += 1;
                match bind(addr).await {
                    Ok(l) => {
                        log::info!("metrics now on http://{addr}/metrics");
                        break l;
                    }
                    Err(e) if tries.is_multiple_of(12) => warn!("{e:#}; still trying"),
                    Err(_) => {}
                }
            }
        }
    };
    serve(listener, registry, metrics, limits).await
}

/// Serves `/metrics` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    metrics: Arc<SelfMetrics>,
    limits: ServeLimits,
) {
    let mut slots = Slots::new(limits.max_connections);
    let shared = Arc::new(Shared {
        registry,
        encodings: Encodings::default(),
        answering: std::sync::Mutex::new(VecDeque::new()),
    });
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                metrics.drop_for(DropReason::MetricsAcceptError);
                slots.accept_failed("/metrics", &e).await;
                continue;
            }
        };
        metrics.drop_by(DropReason::MetricsConnectionLimit, slots.make_room());
        let shared = shared.clone();
        let metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let mut sock = sock;
            match tokio::time::timeout(limits.request_timeout, answer(&mut sock, &shared)).await {
                Ok(Ok(Outcome::Served)) => {}
                Ok(Ok(Outcome::Refused)) => metrics.drop_for(DropReason::MetricsBadRequest),
                Ok(Ok(Outcome::Cut)) => metrics.drop_for(DropReason::MetricsScrapeCut),
                Ok(Err(e)) => debug!("/metrics connection from {peer} failed: {e}"),
                Err(_) => metrics.drop_for(DropReason::MetricsRequestTimeout),
            }
        });
        slots.push(task.abort_handle());
    }
}

/// How one connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A scrape answered with the registry.
    Served,
    /// Anything else: a wrong method, path or head (answered with an error status, or closed).
    Refused,
    /// A scrape stopped for a newer one past [`MAX_SCRAPES_ANSWERING`].
    Cut,
}

/// What the connections share.
struct Shared {
    registry: Arc<Registry>,
    encodings: Encodings,
    /// The scrapes being answered (encoding or writing), oldest first: each can be told to stop.
    answering: std::sync::Mutex<VecDeque<Arc<Notify>>>,
}

impl Shared {
    /// Registers a scrape about to be answered; past [`MAX_SCRAPES_ANSWERING`] the oldest one
    /// is told to stop. The returned signal stops this one.
    fn start_answering(&self) -> Arc<Notify> {
        let mine = Arc::new(Notify::new());
        let mut q = self
            .answering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A scrape that ended dropped its handle.
        q.retain(|n| Arc::strong_count(n) > 1);
        while q.len() >= MAX_SCRAPES_ANSWERING {
            if let Some(oldest) = q.pop_front() {
                oldest.notify_one();
            }
        }
        q.push_back(mine.clone());
        mine
    }
}

/// Reads one request head and answers it.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    sock: &mut S,
    shared: &Shared,
) -> std::io::Result<Outcome> {
    let Some((buf, complete)) = read_head(sock).await? else {
        return Ok(Outcome::Refused);
    };
    let used = buf.len();
    let asked = Instant::now();
    let head = String::from_utf8_lossy(&buf[..used]);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path_ok = target == "/metrics" || target.starts_with("/metrics?");
    // A refused request counts as refused whether or not the answer reaches it: a client that
    // sends garbage and closes at once (so that the answer's write fails) is still refused.
    if !complete {
        let _ = reply(
            sock,
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large\n",
            false,
        )
        .await;
        return Ok(Outcome::Refused);
    }
    if method != "GET" && method != "HEAD" {
        let _ = reply(
            sock,
            "405 Method Not Allowed\r\nAllow: GET, HEAD",
            "text/plain",
            "only GET and HEAD\n",
            false,
        )
        .await;
        return Ok(Outcome::Refused);
    }
    if !path_ok {
        let _ = reply(
            sock,
            "404 Not Found",
            "text/plain",
            "llmprobe serves /metrics\n",
            false,
        )
        .await;
        return Ok(Outcome::Refused);
    }
    let accept = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("accept")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let openmetrics = exposition::wants_openmetrics(&accept);
    let head_only = method == "HEAD";
    let cut = shared.start_answering();
    tokio::select! {
        res = async {
            let (ctype, text) = encoding(&shared.registry, &shared.encodings, openmetrics, asked).await;
            // The body is the shared encoding: written from it, not copied.
            reply(sock, "200 OK", ctype, text.as_bytes(), head_only).await
        } => res.map(|()| Outcome::Served),
        () = cut.notified() => Ok(Outcome::Cut),
    }
}

/// Reads a request head (through its blank line, at most [`MAX_REQUEST_HEAD`] bytes; a body,
/// if any, is ignored): the bytes read and whether the head ended. None: the peer closed first.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    sock: &mut S,
) -> std::io::Result<Option<(Vec<u8>, bool)>> {
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut used = 0;
    let complete = loop {
        let n = sock.read(&mut buf[used..]).await?;
        if n == 0 {
            return Ok(None);
        }
        // The end of the head may straddle reads: look again from 3 bytes back.
        let from = used.saturating_sub(3);
        used += n;
        if buf[from..used].windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if used == buf.len() {
            break false;
        }
    };
    buf.truncate(used);
    Ok(Some((buf, complete)))
}

/// Writes a whole response and closes the sending side. `status` may carry extra header lines.
pub(crate) async fn reply<S: AsyncWrite + Unpin>(
    sock: &mut S,
    status: &str,
    ctype: &str,
    body: impl AsRef<[u8]>,
    head_only: bool,
) -> std::io::Result<()> {
    let body = body.as_ref();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    if !head_only {
        sock.write_all(body).await?;
    }
    let _ = sock.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::net::TcpStream;

    struct Server {
        addr: SocketAddr,
        metrics: Arc<SelfMetrics>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn start(limits: ServeLimits) -> Server {
        start_with(limits, 0).await
    }

    /// A server whose registry also has `bulk` series (about 100 bytes each on /metrics).
    async fn start_with(limits: ServeLimits, bulk: usize) -> Server {
        let mut registry = Registry::default();
        let family =
            prometheus_client::metrics::family::Family::<Vec<(String, String)>, Counter>::default();
        for i in 0..bulk {
            family
                .get_or_create(&vec![("series".to_owned(), format!("{i:0>60}"))])
                .inc();
        }
        registry.register("bulk", "Many series", family);
        let metrics = Arc::new(SelfMetrics::new(&mut registry));
        let scrapes = Counter::<u64>::default();
        scrapes.inc_by(7);
        registry.register("probe_marker", "A marker", scrapes);
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(serve(listener, Arc::new(registry), metrics.clone(), limits));
        Server {
            addr,
            metrics,
            task,
        }
    }

    async fn request(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(req).await.expect("send");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn scrape(addr: SocketAddr) -> String {
        request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await
    }

    fn limits(max_connections: usize, timeout_ms: u64) -> ServeLimits {
        ServeLimits {
            max_connections,
            request_timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn scrapes_in_both_formats_and_head() {
        let srv = start(limits(4, 2000)).await;
        let text = scrape(srv.addr).await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(text.contains("\nprobe_marker_total 7\n"), "{text}");
        assert!(!text.contains("# EOF"));
        let om = request(
            srv.addr,
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n",
        )
        .await;
        assert!(om.contains("application/openmetrics-text"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let head = request(srv.addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        let (headers, body) = head.split_once("\r\n\r\n").expect("head");
        assert!(headers.starts_with("HTTP/1.1 200 OK"));
        assert_eq!(body, "");
        // The head's Content-Length is the body a GET would have had.
        let get_len = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
        assert!(headers.contains(&format!("Content-Length: {get_len}")));
    }

    #[tokio::test]
    async fn scrapes_waiting_together_share_one_encoding_and_none_is_stale() {
        let mut registry = Registry::default();
        let marker = Counter::<u64>::default();
        registry.register("probe_marker", "A marker", marker.clone());
        let cache = Encodings::default();
        let t0 = Instant::now();
        let (_, a) = encoding(&registry, &cache, false, t0).await;
        // A scrape that arrived before that encoding began shares it...
        let (_, b) = encoding(&registry, &cache, false, t0).await;
        assert!(Arc::ptr_eq(&a, &b));
        // ...one that arrived later sees what changed meanwhile.
        marker.inc();
        let (_, c) = encoding(&registry, &cache, false, Instant::now()).await;
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(a.contains("probe_marker_total 0\n"), "{a}");
        assert!(c.contains("probe_marker_total 1\n"), "{c}");
        // Formats are kept apart.
        let (ctype, om) = encoding(&registry, &cache, true, t0).await;
        assert!(ctype.starts_with("application/openmetrics-text"));
        assert!(om.ends_with("# EOF\n"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_readers_cannot_each_pin_an_encoding() {
        // About 40 MB on /metrics: more than loopback socket buffers take.
        let srv = start_with(limits(16, 20_000), 400_000).await;
        let mut readers_that_never_read = Vec::new();
        for _ in 0..MAX_SCRAPES_ANSWERING + 1 {
            let mut s = TcpStream::connect(srv.addr).await.expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .expect("send");
            readers_that_never_read.push(s);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // The oldest was stopped to make room for the newest; a scrape that reads still works
        // (stopping the next oldest).
        assert_eq!(srv.metrics.dropped_count(DropReason::MetricsScrapeCut), 1);
        let text = scrape(srv.addr).await;
        assert!(text.contains("probe_marker_total 7"), "{}", text.len());
        assert_eq!(srv.metrics.dropped_count(DropReason::MetricsScrapeCut), 2);
        drop(readers_that_never_read);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_from_a_client_already_gone_is_still_counted() {
        // Each client sends an oversized head and closes at once: the answer's write then meets
        // a reset, which must not turn a refused request into an uncounted I/O error.
        let srv = start(limits(64, 2000)).await;
        for _ in 0..20 {
            let mut s = TcpStream::connect(srv.addr).await.expect("connect");
            let mut garbage = b"\x00\xffPOST /metrics HTTP/1.1\r\n".to_vec();
            garbage.resize(20_000, b'A');
            s.write_all(&garbage).await.expect("send");
            drop(s);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while srv.metrics.dropped_count(DropReason::MetricsBadRequest) < 20
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(srv.metrics.dropped_count(DropReason::MetricsBadRequest), 20);
    }

    #[tokio::test]
    async fn garbage_methods_and_oversized_heads_are_refused_and_counted() {
        let srv = start(limits(4, 2000)).await;
        let post = request(
            srv.addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("Allow: GET, HEAD"));
        let other = request(srv.addr, b"GET /secret HTTP/1.1\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_REQUEST_HEAD * 2, b'a');
        let big = request(srv.addr, &long).await;
        assert!(big.starts_with("HTTP/1.1 431 ") || big.is_empty(), "{big}");
        let noise = request(srv.addr, &[0xff, 0x00, 0x13, b'\r', b'\n', b'\r', b'\n']).await;
        assert!(noise.starts_with("HTTP/1.1 405 "), "{noise}");
        // A client that closes without a head.
        drop(TcpStream::connect(srv.addr).await.expect("connect"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(srv.metrics.dropped_count(DropReason::MetricsBadRequest), 5);
        assert!(scrape(srv.addr).await.contains("probe_marker_total 7"));
    }

    #[tokio::test]
    async fn a_slowloris_is_cut_at_the_whole_request_timeout() {
        let srv = start(limits(4, 400)).await;
        let mut slow = TcpStream::connect(srv.addr).await.expect("connect");
        let started = tokio::time::Instant::now();
        // One byte every 150 ms: each read is quick, the head never ends.
        let closed = loop {
            if slow.write_all(b"G").await.is_err() {
                break true;
            }
            let mut b = [0u8; 64];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(150), slow.read(&mut b)).await
            {
                break true;
            }
            if started.elapsed() > Duration::from_secs(5) {
                break false;
            }
        };
        assert!(closed, "the trickling client was never cut off");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            srv.metrics.dropped_count(DropReason::MetricsRequestTimeout),
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_idle_connections_do_not_block_scrapes() {
        let srv = start(limits(16, 60_000)).await;
        let mut idle = Vec::new();
        for _ in 0..1000 {
            idle.push(TcpStream::connect(srv.addr).await.expect("connect"));
        }
        // Scrapes while a flood of idle connections keeps coming: each scrape takes the slot of
        // the oldest idle one and is answered long before the flood reaches it.
        let addr = srv.addr;
        let flood = tokio::spawn(async move {
            let mut more = Vec::new();
            loop {
                if let Ok(s) = TcpStream::connect(addr).await {
                    more.push(s);
                }
                if more.len() > 2000 {
                    more.drain(..1000);
                }
                tokio::task::yield_now().await;
            }
        });
        let mut served = 0;
        for _ in 0..20 {
            let text = tokio::time::timeout(Duration::from_secs(5), scrape(srv.addr))
                .await
                .expect("scrape answered in time");
            if text.contains("probe_marker_total 7") {
                served += 1;
            }
        }
        flood.abort();
        assert!(
            served >= 15,
            "only {served} of 20 scrapes served during the flood"
        );
        let evicted = srv
            .metrics
            .dropped_count(DropReason::MetricsConnectionLimit);
        assert!(evicted >= 1000 - 16, "only {evicted} evicted");
        drop(idle);
    }
}
