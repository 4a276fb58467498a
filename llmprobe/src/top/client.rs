//! Reads the live view's API ([`crate::live::api`]) from a running agent: one `GET` per
//! connection over its local socket (`--api-socket`) or its page server (`--ui-addr`).
//!
//! Never hangs and never grows without bound, whatever answers: a deadline covers the connect,
//! the request and the whole answer, and an answer past [`MAX_ANSWER`] bytes is refused. The
//! callers run it off the terminal's thread (see [`super`]), so even a connect the kernel
//! holds (a full socket backlog) leaves the screen responsive.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::view::{FlightRow, RollupRow, Snapshot};

/// The largest answer read (the agent's own are well under 1 MiB: 256 calls in flight, 256
/// models).
pub const MAX_ANSWER: usize = 8 << 20;
/// Rows kept per pane from one answer (the agent sends at most 256).
pub const MAX_ROWS: usize = 1024;

/// Where the agent answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// Its `--api-socket`.
    Unix(PathBuf),
    /// Its `--ui-addr` page server: the address and the `Host` to send.
    Tcp {
        /// Resolved address.
        addr: SocketAddr,
        /// `host:port` as given.
        host: String,
    },
}

impl Endpoint {
    /// `--url http://HOST:PORT[/]`, else `--socket PATH`, else the agent's default socket.
    pub fn new(socket: Option<PathBuf>, url: Option<&str>) -> anyhow::Result<Endpoint> {
        let Some(url) = url else {
            return Ok(Endpoint::Unix(socket.unwrap_or_else(|| {
                PathBuf::from(crate::live::serve::DEFAULT_SOCKET)
            })));
        };
        if url.starts_with("https://") {
            anyhow::bail!(
                "--url {url}: the agent's page server (--ui-addr) speaks plain HTTP; use http://"
            );
        }
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let host = rest.split('/').next().unwrap_or("").to_owned();
        let addr = host
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--url {url}: not an address with a port (e.g. http://127.0.0.1:9465, the agent's --ui-addr)"
                )
            })?;
        Ok(Endpoint::Tcp { addr, host })
    }

    /// How it is named to the operator.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Tcp { host, .. } => format!("http://{host}"),
        }
    }

    fn hint(&self) -> &'static str {
        match self {
            Endpoint::Unix(_) => "is `llmprobe run` running? is --api-socket set?",
            Endpoint::Tcp { .. } => "is `llmprobe run` running with --ui-addr at that address?",
        }
    }

    /// A connect or I/O error, said the way an operator can act on.
    fn explain(&self, e: &std::io::Error) -> String {
        let at = self.describe();
        match e.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable => {
                format!("no llmprobe agent answers at {at}: {}", self.hint())
            }
            ErrorKind::PermissionDenied => format!(
                "permission denied on {at}: the agent's socket is root's (0600); run as root (sudo llmprobe top)"
            ),
            ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                format!("the agent at {at} did not answer in time")
            }
            _ => format!("cannot read the agent at {at}: {e}"),
        }
    }
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
        }
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Conn::Unix(s) => s,
            Conn::Tcp(s) => s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// `GET path`: the JSON body of a `200` answer, within `timeout` in all.
pub fn get(ep: &Endpoint, path: &str, timeout: Duration) -> Result<Value, String> {
    let deadline = Instant::now() + timeout;
    let mut conn = match ep {
        Endpoint::Unix(p) => UnixStream::connect(p).map(Conn::Unix),
        Endpoint::Tcp { addr, .. } => TcpStream::connect_timeout(addr, timeout).map(Conn::Tcp),
    }
    .map_err(|e| ep.explain(&e))?;
    let host = match ep {
        Endpoint::Unix(_) => "localhost",
        Endpoint::Tcp { host, .. } => host.as_str(),
    };
    let io = |e: std::io::Error| ep.explain(&e);
    conn.set_timeouts(timeout).map_err(io)?;
    write!(
        conn.stream(),
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ep.explain(&ErrorKind::TimedOut.into()));
        }
        conn.set_timeouts(left).map_err(io)?;
        match conn.stream().read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if out.len() + n > MAX_ANSWER {
                    return Err(format!(
                        "the answer at {} is larger than {} MiB: is that an llmprobe agent?",
                        ep.describe(),
                        MAX_ANSWER >> 20
                    ));
                }
                out.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    parse_answer(&out).map_err(|e| format!("{} at {}", e, ep.describe()))
}

/// An HTTP/1.1 answer's JSON body when its status is 200.
fn parse_answer(raw: &[u8]) -> Result<Value, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("not an HTTP answer")?;
    let json: Value = serde_json::from_slice(body)
        .map_err(|_| format!("HTTP {code}, not the live view's JSON"))?;
    if code != 200 {
        let msg = json["error"].as_str().unwrap_or("");
        let msg: String = super::view::clean(msg, 120);
        return Err(format!("HTTP {code} {msg}"));
    }
    Ok(json)
}

/// One refresh: the calls in flight and the per-model rollups over `window_s`.
pub fn snapshot(ep: &Endpoint, window_s: u32, timeout: Duration) -> Result<Snapshot, String> {
    let f = get(ep, "/api/v1/in-flight", timeout)?;
    // The calls in flight show even when the rollups cannot be had.
    let r = get(ep, &format!("/api/v1/rollups?window={window_s}"), timeout).unwrap_or(Value::Null);
    Ok(snapshot_of(&f, &r, window_s))
}

/// The snapshot two API answers make (rows past [`MAX_ROWS`] and rows of the wrong shape are
/// left out).
pub fn snapshot_of(in_flight: &Value, rollups: &Value, window_s: u32) -> Snapshot {
    let rows = |v: &Value| -> Vec<Value> {
        v.as_array()
            .map(|a| a.iter().take(MAX_ROWS).cloned().collect())
            .unwrap_or_default()
    };
    let flights: Vec<FlightRow> = rows(&in_flight["calls"])
        .into_iter()
        .filter_map(|c| serde_json::from_value(c).ok())
        .collect();
    let models: Vec<RollupRow> = rows(&rollups["models"])
        .into_iter()
        .filter_map(|c| serde_json::from_value(c).ok())
        .collect();
    Snapshot {
        in_flight_total: in_flight["total"]
            .as_u64()
            .map_or(flights.len(), |t| usize::try_from(t).unwrap_or(usize::MAX)),
        flights,
        rollups: models,
        window_s: rollups["window_s"]
            .as_f64()
            .map_or(window_s, |w| w.clamp(0.0, 1e6) as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    fn sock_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("llmprobe-top-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn no_agent_says_what_to_do() {
        let d = sock_dir("none");
        let ep = Endpoint::Unix(d.join("api.sock"));
        let e = get(&ep, "/api/v1/in-flight", Duration::from_secs(1)).expect_err("nothing there");
        assert!(e.starts_with("no llmprobe agent answers at "), "{e}");
        assert!(e.contains("is --api-socket set?"), "{e}");
        let e = ep.explain(&ErrorKind::PermissionDenied.into());
        assert!(e.contains("run as root"), "{e}");
    }

    #[test]
    fn a_silent_peer_times_out_and_a_huge_answer_is_refused() {
        let d = sock_dir("peer");
        let path = d.join("api.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let ep = Endpoint::Unix(path);
        // Silent: accepts, reads, never answers.
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let mut r = std::io::BufReader::new(&s);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            std::thread::sleep(Duration::from_millis(800));
            drop(s);
            // Then one that never stops talking.
            let (mut s, _) = l.accept().expect("accept");
            let junk = vec![b'x'; 1 << 20];
            for _ in 0..16 {
                if s.write_all(&junk).is_err() {
                    break;
                }
            }
        });
        let t0 = Instant::now();
        let e = get(&ep, "/", Duration::from_millis(300)).expect_err("silent");
        assert!(e.contains("did not answer in time"), "{e}");
        assert!(t0.elapsed() < Duration::from_millis(700));
        let e = get(&ep, "/", Duration::from_secs(10)).expect_err("huge");
        assert!(e.contains("larger than 8 MiB"), "{e}");
        h.join().expect("peer");
    }

    #[test]
    fn answers_are_parsed_and_errors_cleaned() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
        assert_eq!(parse_answer(ok).expect("ok")["a"], 1);
        let bad = b"HTTP/1.1 404 Not Found\r\n\r\n{\"error\":\"no\\u001b[2Jsuch\"}";
        let e = parse_answer(bad).expect_err("404");
        assert!(!e.contains('\u{1b}'), "{e:?}");
        assert!(e.starts_with("HTTP 404"), "{e}");
        assert!(parse_answer(b"garbage").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n\r\n<html>").is_err());
    }

    #[test]
    fn urls_and_sockets() {
        assert_eq!(
            Endpoint::new(None, None).expect("default"),
            Endpoint::Unix(PathBuf::from(crate::live::serve::DEFAULT_SOCKET))
        );
        let t = Endpoint::new(None, Some("http://127.0.0.1:9465/")).expect("url");
        assert_eq!(t.describe(), "http://127.0.0.1:9465");
        assert!(Endpoint::new(None, Some("https://127.0.0.1:9465")).is_err());
        assert!(Endpoint::new(None, Some("http://127.0.0.1")).is_err());
    }

    #[test]
    fn snapshots_take_the_api_shape() {
        let f = serde_json::json!({"total": 300, "calls": [
            {"pid": 4, "comm": "app", "role": "client", "provider": "openai", "model": "m",
             "elapsed_s": 1.5, "ttft_s": 0.3, "tokens": 12, "tokens_per_s": 10.0, "extra": 1},
            {"pid": "not a pid"}
        ]});
        let r = serde_json::json!({"window_s": 60.0, "models": [
            {"model": "m", "provider": "openai", "calls": 2, "calls_per_s": 0.03,
             "error_rate": 0.5, "abort_rate": 0.0, "ttft_p50_s": 0.3, "ttft_p95_s": null}
        ]});
        let s = snapshot_of(&f, &r, 60);
        assert_eq!(s.in_flight_total, 300);
        assert_eq!(s.flights.len(), 1, "a row of the wrong shape is left out");
        assert_eq!(s.flights[0].tokens, 12);
        assert_eq!(s.rollups[0].calls, 2);
        assert_eq!(s.rollups[0].ttft_p95_s, None);
        assert_eq!(s.window_s, 60);
    }
}
