//! OpenTelemetry traces: one span per [`LlmCall`], exported over OTLP (http/protobuf or gRPC)
//! with the official protobuf schema (`opentelemetry-proto`).
//!
//! [`OtlpExporter::send`] (and [`CallSink::emit`]) never blocks: it turns the call into a span
//! and `try_send`s it into a bounded queue (a full queue is a counted drop,
//! `llmprobe_dropped{reason="otlp_queue_full"}`). A background task on the tokio runtime
//! batches spans (up to `max_batch` or every `flush_interval`) and exports them; a failed
//! export (collector down, slow, non-2xx, gRPC error) drops the batch, counts every span under
//! `reason="otlp_export_failed"` and is logged at most once a minute. There are no retries.
//! [`CallSink::close`] (from a plain thread) or [`OtlpExporter::shutdown`] (from async code)
//! flushes what is queued, bounded by the export timeout; spans still unexported then are
//! counted as dropped.
//!
//! Parts: [`config`] (settings from flags and the OTel environment), [`span`] (call → span,
//! pure), `worker` (batching, failure accounting), `transport` (HTTP/1.1 on a kept connection,
//! or gRPC).

pub mod config;
pub mod span;
mod transport;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use log::{info, warn};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use self::config::{OtlpConfig, OtlpProtocol};
use self::span::{IdGen, call_to_span, node_spans};
use self::transport::Transport;
use self::worker::{Shared, Worker, count_drops};
use super::CallSink;
use crate::llm::LlmCall;
use crate::secrets::redact_url;
use crate::telemetry::{DropReason, SelfMetrics};

/// Drop reason: the span queue was full.
pub const DROP_QUEUE_FULL: DropReason = DropReason::OtlpQueueFull;
/// Drop reason: the export of the span's batch failed (or shutdown ran out of time).
pub const DROP_EXPORT_FAILED: DropReason = DropReason::OtlpExportFailed;

/// How much longer than the export timeout a shutdown waits for the task.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);

/// The OTLP span exporter: a handle on the queue and its export task.
pub struct OtlpExporter {
    /// None once shutdown began.
    tx: Option<mpsc::Sender<Span>>,
    ids: IdGen,
    metrics: Arc<SelfMetrics>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    /// Disconnected when the task has ended (its sender lives in the task's future), so a
    /// plain thread can wait for it.
    done: std::sync::mpsc::Receiver<()>,
    timeout: Duration,
}

impl OtlpExporter {
    /// Starts the export task. Must be called inside a tokio runtime. Never fails: an unusable
    /// endpoint is reported here (error log) and every export then fails (counted).
    pub fn spawn(cfg: OtlpConfig, metrics: Arc<SelfMetrics>) -> OtlpExporter {
        let max_queue = cfg.max_queue.max(1);
        let (tx, rx) = mpsc::channel(max_queue);
        let shared = Arc::new(Shared {
            deadline: OnceLock::new(),
            pending: AtomicU64::new(0),
        });
        let transport = Transport::new(&cfg);
        match &transport {
            Transport::Unusable(why) => log::error!(
                "OTLP trace export to {} disabled: {why}; every span will be counted as dropped (reason {DROP_EXPORT_FAILED})",
                redact_url(&cfg.endpoint)
            ),
            _ => info!(
                "OTLP trace export to {} ({})",
                redact_url(&cfg.endpoint),
                cfg.protocol.as_str()
            ),
        }
        let timeout = cfg.timeout;
        let worker = Worker::new(cfg, metrics.clone(), shared.clone(), transport);
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let task = tokio::spawn(async move {
            let _done = done_tx;
            worker.run(rx).await;
        });
        OtlpExporter {
            tx: Some(tx),
            ids: IdGen::new(),
            metrics,
            shared,
            task,
            done,
            timeout,
        }
    }

    /// Queues the call's span, then one child span per workflow node it reported. Never
    /// blocks; a full queue is a counted drop, span by span (after shutdown began, every call
    /// is: `otlp_export_failed`).
    pub fn send(&self, call: &LlmCall) {
        let span = call_to_span(call, &self.ids);
        let children = if call.detail.workflow_nodes.is_empty() {
            Vec::new()
        } else {
            node_spans(call, &span, &self.ids)
        };
        self.enqueue(span);
        for child in children {
            self.enqueue(child);
        }
    }

    /// Queues one span, or counts it dropped.
    fn enqueue(&self, span: Span) {
        let Some(tx) = self.tx.as_ref() else {
            self.metrics.drop_for(DROP_EXPORT_FAILED);
            return;
        };
        if tx.capacity() == 0 {
            self.metrics.drop_for(DROP_QUEUE_FULL);
            return;
        }
        self.shared.pending.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(span) {
            Ok(()) => {}
            Err(e) => {
                self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                self.metrics.drop_for(match e {
                    mpsc::error::TrySendError::Full(_) => DROP_QUEUE_FULL,
                    mpsc::error::TrySendError::Closed(_) => DROP_EXPORT_FAILED,
                });
            }
        }
    }

    /// Starts the shutdown: sets the deadline every export must meet and closes the queue (the
    /// task exports what is queued, then ends). Returns how long to wait for the task, or None
    /// when shutdown had begun already.
    fn begin_shutdown(&mut self) -> Option<Duration> {
        let tx = self.tx.take()?;
        let _ = self.shared.deadline.set(Instant::now() + self.timeout);
        drop(tx);
        Some(self.timeout + SHUTDOWN_GRACE)
    }

    /// Ends the shutdown: a task that did not finish in time is stopped; spans still unexported
    /// are counted as dropped (`otlp_export_failed`).
    fn end_shutdown(&self, finished: bool) {
        if !finished {
            self.task.abort();
        }
        let left = self.shared.pending.swap(0, Ordering::Relaxed);
        count_drops(&self.metrics, DROP_EXPORT_FAILED, left);
        if !finished {
            warn!("OTLP shutdown timed out; {left} spans dropped");
        }
    }

    /// Exports what is queued and stops the task, within the export timeout; spans still
    /// unexported then are counted as dropped (`otlp_export_failed`). For async code; a plain
    /// thread calls [`CallSink::close`].
    pub async fn shutdown(mut self) {
        let Some(grace) = self.begin_shutdown() else {
            return;
        };
        let finished = tokio::time::timeout(grace, &mut self.task).await.is_ok();
        self.end_shutdown(finished);
    }
}

impl CallSink for OtlpExporter {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn emit(&mut self, calls: &[LlmCall]) {
        for c in calls {
            self.send(c);
        }
    }

    /// Blocks the calling thread until the task has exported what was queued (bounded by the
    /// export timeout and [`SHUTDOWN_GRACE`]). Must not run on a thread of the runtime the
    /// task needs: from async code, use [`OtlpExporter::shutdown`].
    fn close(&mut self) {
        let Some(grace) = self.begin_shutdown() else {
            return;
        };
        let finished = !matches!(
            self.done.recv_timeout(grace),
            Err(RecvTimeoutError::Timeout)
        );
        self.end_shutdown(finished);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::span::tests::{call, s};
    use super::*;

    /// A local port nobody listens on: connections are refused.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn fast_cfg(endpoint: String) -> OtlpConfig {
        let mut cfg = OtlpConfig::new(endpoint, OtlpProtocol::HttpProtobuf);
        cfg.flush_interval = Duration::from_millis(20);
        cfg.timeout = Duration::from_millis(500);
        cfg
    }

    #[tokio::test]
    async fn full_queue_is_a_counted_drop_without_blocking() {
        // A current-thread runtime: the export task cannot run while this test does not
        // await, so the queue fills deterministically.
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg = fast_cfg(format!("http://127.0.0.1:{}/v1/traces", closed_port()));
        cfg.max_queue = 4;
        let exp = OtlpExporter::spawn(cfg, metrics.clone());
        let started = Instant::now();
        for _ in 0..100 {
            exp.send(&call());
        }
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(metrics.dropped_count(DROP_QUEUE_FULL), 96);
        exp.shutdown().await;
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 4);
    }

    /// What the in-process receiver saw.
    struct Received {
        request_line: String,
        content_type: String,
        tenant: String,
        body: ExportTraceServiceRequest,
    }

    /// A one-request OTLP/HTTP receiver answering `status`.
    async fn receiver(status: u16) -> (String, oneshot::Receiver<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = sock.read(&mut chunk).await.expect("read");
                assert!(n > 0, "closed before the head");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let len: usize = header("content-length").parse().expect("content-length");
            while buf.len() < head_end + len {
                let n = sock.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "closed before the body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = ExportTraceServiceRequest::decode(&buf[head_end..head_end + len])
                .expect("decode ExportTraceServiceRequest");
            let reply = ExportTraceServiceResponse::default().encode_to_vec();
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
                reply.len()
            );
            sock.write_all(resp.as_bytes()).await.expect("write");
            sock.write_all(&reply).await.expect("write");
            let _ = tx.send(Received {
                request_line: head.lines().next().unwrap_or_default().to_owned(),
                content_type: header("content-type"),
                tenant: header("x-tenant"),
                body,
            });
        });
        (format!("http://{addr}"), rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_to_an_http_receiver() {
        let (base, rx) = receiver(200).await;
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg = OtlpConfig::from_env_and_flags(Some(&base), None).expect("cfg");
        cfg.flush_interval = Duration::from_secs(3600); // only shutdown flushes
        cfg.headers.push(("x-tenant".into(), "t1".into()));
        cfg.service_name = "svc".into();
        let exp = OtlpExporter::spawn(cfg, metrics.clone());
        exp.send(&call());
        let mut c2 = call();
        c2.role = "server";
        exp.send(&c2);
        exp.shutdown().await;
        let got = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("in time")
            .expect("received");
        assert_eq!(got.request_line, "POST /v1/traces HTTP/1.1");
        assert_eq!(got.content_type, "application/x-protobuf");
        assert_eq!(got.tenant, "t1");
        let rs = &got.body.resource_spans[0];
        let res = rs.resource.as_ref().expect("resource");
        let keys: Vec<&str> = res.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert!(keys.contains(&"host.name"));
        assert_eq!(
            res.attributes[0].value.clone().and_then(|v| v.value),
            Some(s("svc"))
        );
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().map(|s| s.name.as_str()), Some("llmprobe"));
        assert_eq!(ss.spans.len(), 2);
        assert_eq!(ss.spans[0].name, "chat gpt-4o");
        assert_eq!(ss.spans[1].kind, SpanKind::Server as i32);
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 0);
        assert_eq!(metrics.dropped_count(DROP_QUEUE_FULL), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flushes_on_the_interval_and_counts_http_errors() {
        let (base, rx) = receiver(503).await;
        let metrics = Arc::new(SelfMetrics::unregistered());
        let exp = OtlpExporter::spawn(fast_cfg(format!("{base}/v1/traces")), metrics.clone());
        exp.send(&call());
        let got = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("flushed by the timer")
            .expect("received");
        assert_eq!(got.body.resource_spans[0].scope_spans[0].spans.len(), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.dropped_count(DROP_EXPORT_FAILED) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 1);
        exp.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_down_collector_is_counted_and_never_blocks() {
        let port = closed_port();
        for protocol in [OtlpProtocol::HttpProtobuf, OtlpProtocol::Grpc] {
            let metrics = Arc::new(SelfMetrics::unregistered());
            let mut cfg = fast_cfg(format!("http://127.0.0.1:{port}"));
            cfg.protocol = protocol;
            let exp = OtlpExporter::spawn(cfg, metrics.clone());
            let started = Instant::now();
            for _ in 0..10 {
                exp.send(&call());
            }
            assert!(
                started.elapsed() < Duration::from_millis(100),
                "send blocked"
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while metrics.dropped_count(DROP_EXPORT_FAILED) < 10 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                metrics.dropped_count(DROP_EXPORT_FAILED),
                10,
                "{protocol:?}"
            );
            let started = Instant::now();
            exp.send(&call());
            exp.shutdown().await;
            assert!(started.elapsed() < Duration::from_secs(2));
            assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 11);
            assert_eq!(metrics.dropped_count(DROP_QUEUE_FULL), 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_is_bounded_by_a_silent_collector() {
        // Accepts connections, never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg = fast_cfg(format!("http://{addr}/v1/traces"));
        cfg.timeout = Duration::from_millis(300);
        let exp = OtlpExporter::spawn(cfg, metrics.clone());
        exp.send(&call());
        let started = Instant::now();
        exp.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 1);
    }

    /// Against the Python receiver (tests/assets/otlp_receiver.py):
    /// `LLMPROBE_OTLP_TEST_ENDPOINT=http://127.0.0.1:PORT cargo test ... -- --ignored`
    /// (`https://` with `SSL_CERT_FILE` naming the receiver's certificate for TLS). Three
    /// batches: the receiver should see one connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a running OTLP receiver (LLMPROBE_OTLP_TEST_ENDPOINT)"]
    async fn exports_to_an_external_receiver() {
        let Ok(endpoint) = std::env::var("LLMPROBE_OTLP_TEST_ENDPOINT") else {
            return;
        };
        let _ = env_logger::builder().is_test(true).try_init();
        let protocol = std::env::var("LLMPROBE_OTLP_TEST_PROTOCOL").ok();
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg =
            OtlpConfig::from_env_and_flags(Some(&endpoint), protocol.as_deref()).expect("cfg");
        cfg.headers.push(("x-tenant".into(), "t1".into()));
        cfg.flush_interval = Duration::from_millis(50);
        let exp = OtlpExporter::spawn(cfg, metrics.clone());
        for _ in 0..2 {
            exp.send(&call());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut c2 = call();
        c2.role = "server";
        c2.trace_id = None;
        c2.error_type = Some("timeout".into());
        c2.request_model = None;
        exp.send(&c2);
        exp.shutdown().await;
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 0);
    }

    /// An OTLP/HTTP receiver that answers every request on a connection in turn (HTTP/1.1
    /// keep-alive; `close` answers with `Connection: close` and closes), counting the
    /// connections it accepted and the requests it answered.
    async fn counting_receiver(close: bool) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (acc, ans) = (accepted.clone(), answered.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let ans = ans.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        assert!(head.starts_with("post /v1/traces http/1.1\r\n"), "{head}");
                        assert!(!head.contains("connection: close"), "{head}");
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .expect("content-length");
                        while buf.len() < head_end + len {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body =
                            ExportTraceServiceRequest::decode(&buf[head_end..head_end + len])
                                .expect("decode ExportTraceServiceRequest");
                        assert_eq!(body.resource_spans[0].scope_spans[0].spans.len(), 1);
                        buf.drain(..head_end + len);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n{}\r\n",
                            if close { "Connection: close\r\n" } else { "" }
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        ans.fetch_add(1, Ordering::SeqCst);
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/v1/traces"), accepted, answered)
    }

    /// Sends `batches` one-span batches, each after the previous one was answered.
    async fn send_batches(exp: &OtlpExporter, answered: &AtomicUsize, batches: usize) {
        for n in 1..=batches {
            exp.send(&call());
            let deadline = Instant::now() + Duration::from_secs(5);
            while answered.load(Ordering::SeqCst) < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(answered.load(Ordering::SeqCst), n, "batch {n} not answered");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_share_one_connection() {
        let (endpoint, accepted, answered) = counting_receiver(false).await;
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg = fast_cfg(endpoint);
        cfg.max_batch = 1;
        let exp = OtlpExporter::spawn(cfg, metrics.clone());
        send_batches(&exp, &answered, 5).await;
        exp.shutdown().await;
        assert_eq!(answered.load(Ordering::SeqCst), 5);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "five batches should travel on one connection"
        );
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collector_closing_its_connections_costs_no_batch() {
        let (endpoint, accepted, answered) = counting_receiver(true).await;
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg = fast_cfg(endpoint);
        cfg.max_batch = 1;
        let exp = OtlpExporter::spawn(cfg, metrics.clone());
        send_batches(&exp, &answered, 3).await;
        exp.shutdown().await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 0);
    }

    #[test]
    fn close_from_a_plain_thread_flushes_and_is_bounded() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (endpoint, _, answered) = rt.block_on(counting_receiver(false));
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg = fast_cfg(endpoint);
        cfg.flush_interval = Duration::from_secs(3600); // only the close flushes
        cfg.max_batch = 1;
        let mut exp = {
            let _in_runtime = rt.enter();
            OtlpExporter::spawn(cfg, metrics.clone())
        };
        CallSink::emit(&mut exp, &[call()]);
        CallSink::close(&mut exp);
        assert_eq!(answered.load(Ordering::SeqCst), 1);
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 0);
        // After close, calls are counted drops; a second close does nothing.
        CallSink::emit(&mut exp, &[call()]);
        CallSink::close(&mut exp);
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 1);

        // A collector that accepts and never answers: close gives up at the timeout.
        let silent = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((sock, _)) = listener.accept().await {
                    held.push(sock);
                }
            });
            addr
        });
        let metrics = Arc::new(SelfMetrics::unregistered());
        let mut cfg = fast_cfg(format!("http://{silent}/v1/traces"));
        cfg.timeout = Duration::from_millis(300);
        let mut exp = {
            let _in_runtime = rt.enter();
            OtlpExporter::spawn(cfg, metrics.clone())
        };
        CallSink::emit(&mut exp, &[call(), call()]);
        let started = Instant::now();
        CallSink::close(&mut exp);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(metrics.dropped_count(DROP_EXPORT_FAILED), 2);
    }
}
