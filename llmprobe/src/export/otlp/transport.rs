//! OTLP transports: how one batch reaches the collector.
//!
//! - **http/protobuf**: `POST` of the encoded request over HTTP/1.1 (hyper's client connection),
//!   plain or TLS. The connection is kept open and carries the following batches: one TCP (and
//!   TLS) handshake per connection, not per batch. The worker exports one batch at a time, so
//!   one connection is all it needs. A new one is opened when the collector closed the old one,
//!   when it sat unused for [`IDLE_CLOSE`] (before a collector's own idle timeout closes it
//!   under a request), or when an export failed or timed out on it. A request the closed
//!   connection never sent is sent again once on a new connection; one it may have sent is not
//!   (that would risk duplicate spans). The answer is read (at most [`MAX_ANSWER_BYTES`]) so
//!   the connection can serve the next batch.
//! - **grpc**: `TraceService/Export` through tonic, whose channel keeps its HTTP/2 connection.
//!
//! TLS trusts the system store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured): rustls with
//! rustls-native-certs for HTTP, tonic's native roots for gRPC. An export that fails says why
//! in an error string; the worker counts and logs it. Error strings never carry the endpoint's
//! credentials (user info, query).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use log::{debug, warn};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::Channel;

use super::config::{OtlpConfig, OtlpProtocol};
use crate::secrets::{log_safe, redact_url};

/// An HTTP connection unused this long is closed rather than reused: collectors close idle
/// connections after a while (often a minute or more), and a request must not race that.
const IDLE_CLOSE: Duration = Duration::from_secs(30);
/// Most bytes of a collector's answer read (the body is not used; reading it frees the
/// connection for the next batch). A longer answer costs the connection, nothing else.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// How batches travel.
pub(super) enum Transport {
    Http(HttpTransport),
    Grpc {
        client: TraceServiceClient<Channel>,
        metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    },
    /// Every export fails with this reason.
    Unusable(String),
}

impl Transport {
    /// The transport for `cfg`; an unusable endpoint (bad URL, no TLS trust store) gives
    /// [`Transport::Unusable`]. Must be called inside a tokio runtime (gRPC).
    pub(super) fn new(cfg: &OtlpConfig) -> Transport {
        match cfg.protocol {
            OtlpProtocol::HttpProtobuf => match HttpTransport::new(cfg) {
                Ok(t) => Transport::Http(t),
                Err(e) => Transport::Unusable(e),
            },
            OtlpProtocol::Grpc => {
                let endpoint = match Channel::from_shared(cfg.endpoint.clone()) {
                    Ok(e) => e,
                    Err(e) => return Transport::Unusable(format!("bad gRPC endpoint: {e}")),
                };
                let mut endpoint = endpoint
                    .connect_timeout(cfg.timeout)
                    .timeout(cfg.timeout)
                    .tcp_nodelay(true);
                if cfg.endpoint.starts_with("https://") {
                    let tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
                    endpoint = match endpoint.tls_config(tls) {
                        Ok(e) => e,
                        Err(e) => return Transport::Unusable(format!("gRPC TLS setup: {e}")),
                    };
                }
                let metadata = cfg
                    .headers
                    .iter()
                    .filter_map(|(k, v)| {
                        let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes());
                        let val = AsciiMetadataValue::try_from(v.as_str());
                        match (key, val) {
                            (Ok(k), Ok(v)) => Some((k, v)),
                            _ => {
                                warn!(
                                    "OTLP header \"{}\" is not valid gRPC metadata; not sent",
                                    log_safe(k)
                                );
                                None
                            }
                        }
                    })
                    .collect();
                Transport::Grpc {
                    client: TraceServiceClient::new(endpoint.connect_lazy()),
                    metadata,
                }
            }
        }
    }

    /// One export, answered within `timeout` (connecting included); Err says why it failed.
    pub(super) async fn export(
        &mut self,
        req: ExportTraceServiceRequest,
        timeout: Duration,
    ) -> Result<(), String> {
        match self {
            Transport::Unusable(why) => Err(why.clone()),
            Transport::Http(http) => {
                let body = Bytes::from(req.encode_to_vec());
                // On a timeout the connection goes with the dropped request (it may be half
                // sent); the next export opens a new one.
                match tokio::time::timeout(timeout, http.post(body)).await {
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                    Ok(r) => r,
                }
            }
            Transport::Grpc { client, metadata } => {
                let mut request = tonic::Request::new(req);
                request.set_timeout(timeout);
                for (k, v) in metadata.iter() {
                    request.metadata_mut().insert(k.clone(), v.clone());
                }
                match tokio::time::timeout(timeout, client.export(request)).await {
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                    Ok(Err(status)) => Err(format!(
                        "gRPC status {:?}: {}",
                        status.code(),
                        status.message()
                    )),
                    Ok(Ok(_)) => Ok(()),
                }
            }
        }
    }
}

/// OTLP/HTTP: the target, the request headers, and the connection kept between batches.
pub(super) struct HttpTransport {
    target: Target,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    /// The request target (path and query, origin-form).
    path: Uri,
    /// `Host`, `User-Agent`, `Content-Type`, then the configured headers (a configured header
    /// replaces a default of the same name).
    headers: HeaderMap,
    /// The open connection and when it last finished an export.
    conn: Option<(SendRequest<Full<Bytes>>, Instant)>,
    /// Connections opened so far (for debug logs).
    opened: u64,
}

impl HttpTransport {
    fn new(cfg: &OtlpConfig) -> Result<HttpTransport, String> {
        let target = Target::parse(&cfg.endpoint)?;
        let tls = if target.tls {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("TLS server name {:?}: {e}", target.host))?;
            Some((tls_connector()?, name))
        } else {
            None
        };
        let path = Uri::try_from(target.path.as_str()).map_err(|_| {
            format!(
                "endpoint {} has a path that is not a valid HTTP request target",
                redact_url(&cfg.endpoint)
            )
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(
            HOST,
            HeaderValue::from_str(&target.authority).map_err(|_| {
                format!(
                    "endpoint {} has a host that is not a valid Host header",
                    redact_url(&cfg.endpoint)
                )
            })?,
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("llmprobe/", env!("CARGO_PKG_VERSION"))),
        );
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        for (k, v) in &cfg.headers {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                (Ok(k), Ok(v)) => {
                    headers.insert(k, v);
                }
                _ => warn!(
                    "OTLP header \"{}\" is not a valid HTTP header; not sent",
                    log_safe(k)
                ),
            }
        }
        Ok(HttpTransport {
            target,
            tls,
            path,
            headers,
            conn: None,
            opened: 0,
        })
    }

    fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.path.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// POSTs `body` on the kept connection (or a new one) and reads the answer; Ok for a 2xx
    /// status. The connection is kept only when the whole exchange succeeded.
    async fn post(&mut self, body: Bytes) -> Result<(), String> {
        let kept = match self.conn.take() {
            Some((mut sender, last_used)) if last_used.elapsed() < IDLE_CLOSE => {
                // An idle connection is ready at once; a closed one fails here.
                sender.ready().await.ok().map(|()| sender)
            }
            _ => None,
        };
        let reused = kept.is_some();
        let mut sender = match kept {
            Some(s) => s,
            None => self.connect().await?,
        };
        let resp = match sender.try_send_request(self.request(body.clone())).await {
            Ok(resp) => resp,
            // The connection closed before the request went out: once more on a new one.
            Err(e) if reused && e.message().is_some() => {
                debug!("OTLP connection closed before the request was sent; reconnecting");
                sender = self.connect().await?;
                sender
                    .send_request(self.request(body))
                    .await
                    .map_err(|e| format!("HTTP exchange: {}", chain(&e)))?
            }
            Err(e) => return Err(format!("HTTP exchange: {}", chain(e.error()))),
        };
        let status = resp.status();
        // Read the answer so the connection is free for the next batch.
        let read = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        if read.is_ok() {
            self.conn = Some((sender, Instant::now()));
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP status {}", status.as_u16()))
        }
    }

    /// Opens a connection (TCP, then TLS for https) and starts its HTTP/1.1 task.
    async fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, String> {
        let target = &self.target;
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect {}: {e}", target.authority))?;
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(tcp).await?,
            Some((conn, name)) => {
                let stream = conn
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {}: {e}", target.authority))?;
                handshake(stream).await?
            }
        };
        self.opened += 1;
        debug!(
            "OTLP connection {} to {} open",
            self.opened, target.authority
        );
        Ok(sender)
    }
}

/// Starts HTTP/1.1 on an open stream; the connection's task ends when its sender is dropped
/// or the peer closes it.
async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {}", chain(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!("OTLP connection ended: {}", chain(&e));
        }
    });
    Ok(sender)
}

/// An error and its causes, `: `-separated (hyper's own message alone is terse).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A parsed `http://` / `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    tls: bool,
    /// Host without IPv6 brackets.
    host: String,
    port: u16,
    /// `host[:port]` as sent in `Host`.
    authority: String,
    /// Path and query, starting with `/`.
    path: String,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("endpoint {} has no scheme", redact_url(url)))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "endpoint scheme \"{}\" is not http or https",
                    log_safe(other)
                ));
            }
        };
        let rest = rest.split('#').next().unwrap_or(rest);
        let (auth, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let auth = auth.rsplit_once('@').map_or(auth, |(_, a)| a);
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = auth.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("bad IPv6 host in {}", redact_url(url)))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("bad port in {}", redact_url(url)))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("bad host in {}", redact_url(url))),
            };
            (h.to_owned(), port)
        } else {
            match auth.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse()
                        .map_err(|_| format!("bad port in {}", redact_url(url)))?,
                ),
                None => (auth.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("endpoint {} has no host", redact_url(url)));
        }
        Ok(Target {
            tls,
            host,
            port,
            authority: auth.to_owned(),
            path,
        })
    }
}

/// TLS client config: the system's trust store (honours `SSL_CERT_FILE` / `SSL_CERT_DIR`).
fn tls_connector() -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no CA certificates found in the system trust store ({} errors)",
            found.errors.len()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://col:4318/v1/traces").expect("url");
        assert_eq!(
            (
                t.tls,
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path.as_str()
            ),
            (false, "col", 4318, "col:4318", "/v1/traces")
        );
        let t = Target::parse("https://[::1]/v1/traces?x=1").expect("url");
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "::1", 443, "/v1/traces?x=1")
        );
        let t = Target::parse("http://h").expect("url");
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        assert!(Target::parse("ftp://h/x").is_err());
        assert!(Target::parse("http://h:notaport/").is_err());
        assert!(Target::parse("http:///x").is_err());
    }

    #[test]
    fn url_errors_never_carry_credentials() {
        for url in [
            "https://user:pa55w0rd@col:notaport/v1/traces?api_key=s3cr3t",
            "https://user:pa55w0rd@[::1/v1/traces?api_key=s3cr3t",
            "https://user:pa55w0rd@/v1/traces?api_key=s3cr3t",
            "user:pa55w0rd@col/v1/traces?api_key=s3cr3t",
        ] {
            let e = Target::parse(url).expect_err("bad url");
            assert!(!e.contains("pa55w0rd") && !e.contains("s3cr3t"), "{e}");
        }
        // What the start-up and failure logs print.
        let shown = redact_url("https://user:pa55w0rd@col:4318/v1/traces?api_key=s3cr3t");
        assert_eq!(shown, "https://REDACTED@col:4318/v1/traces?REDACTED");
    }

    #[test]
    fn unusable_endpoints_say_why_without_credentials() {
        let cfg = |endpoint: &str| OtlpConfig::new(endpoint, OtlpProtocol::HttpProtobuf);
        match HttpTransport::new(&cfg("http://user:pa55w0rd@col:4318/v1/tr aces?k=s3cr3t")) {
            Err(e) => {
                assert!(e.contains("not a valid HTTP request target"), "{e}");
                assert!(!e.contains("pa55w0rd") && !e.contains("s3cr3t"), "{e}");
            }
            Ok(_) => panic!("a path with a space is not a request target"),
        }
        let t = HttpTransport::new(&cfg("http://user:pa55w0rd@col:4318/v1/traces")).expect("ok");
        // User info is never sent.
        assert_eq!(t.headers[HOST], "col:4318");
        assert_eq!(t.path, "/v1/traces");
    }
}
