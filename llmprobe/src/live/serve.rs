//! Serves the live view ([`super::api`]): the API on a local Unix socket (`--api-socket`, for
//! `llmprobe top`) and, opt-in, the API and the trace page over TCP (`--ui-addr`).
//!
//! Any local process can connect to the TCP server, and any process root lets in to the socket,
//! so both are bounded like `/metrics` is: [`ServeLimits`] connections at once (a new one
//! closes the oldest), a deadline for the head and the answer, a head of at most
//! `MAX_REQUEST_HEAD` bytes, `GET`/`HEAD` only, a failing `accept` backs off. Every refusal is
//! counted in `llmprobe_dropped_total{reason="live_..."}`.
//!
//! The page server answers only requests whose `Host` is an address literal or `localhost`
//! (with any port): a web page the operator's browser opens cannot reach it through a DNS name
//! that it rebinds to 127.0.0.1. Answers carry `Cache-Control: no-store`, `nosniff` and a
//! content security policy that allows the page's own scripts only.
//!
//! The socket: its directory is created 0700 when missing; an existing socket file is replaced
//! only when no agent answers on it (a stale one), anything else at the path is refused; the
//! socket is made 0600 (root's, like the agent) and removed when the server is dropped.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use log::debug;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use super::LiveView;
use super::api::{self, Surface};
use crate::export::metrics_http::{ServeLimits, Slots, read_head};
use crate::telemetry::{DropReason, SelfMetrics};

/// The default `--api-socket`.
pub const DEFAULT_SOCKET: &str = "/run/llmprobe/api.sock";

/// A bound listener of the live view.
pub enum Listener {
    /// `--ui-addr`: API and page.
    Tcp(TcpListener),
    /// `--api-socket`: API only; the path is removed on drop.
    Unix(UnixListener, SocketFile),
}

/// The socket's file, removed when dropped.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Answers computed at once (grouping and JSON run on blocking threads).
const ANSWERING: usize = 2;

/// Binds `--ui-addr`.
pub async fn bind_tcp(addr: SocketAddr) -> anyhow::Result<Listener> {
    let l = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for the trace page on {addr}; pass --ui-addr with a free address")
    })?;
    Ok(Listener::Tcp(l))
}

/// Binds the API socket at `path` (see the module docs for what is refused). Its directory
/// must be root's (or this user's) and writable by no one else: nobody else can then put a
/// symlink or a socket of their own at the path.
pub fn bind_socket(path: &Path) -> anyhow::Result<Listener> {
    let hint = "pass --api-socket with another path, or `none`";
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| {
                format!("cannot create {} for the API socket; {hint}", dir.display())
            })?;
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot check {}; {hint}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if (meta.uid() != 0 && meta.uid() != me) || meta.mode() & 0o022 != 0 {
        bail!(
            "{} is not a private directory (owner uid {}, mode {:o}): another user could replace \
             the API socket; {hint}",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        );
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another llmprobe serves its API at {}; stop it or {hint}",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket: llmprobe will not replace it; {hint}",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot check {}", path.display())),
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on the API socket {}; {hint}", path.display()))?;
    let file = SocketFile(path.to_owned());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    Ok(Listener::Unix(l, file))
}

/// Serves the live view on `listener` until the task is dropped.
pub async fn serve(
    listener: Listener,
    view: Arc<LiveView>,
    clock: crate::clock::Clock,
    metrics: Arc<SelfMetrics>,
    limits: ServeLimits,
) {
    let mut slots = Slots::new(limits.max_connections);
    let answering = Arc::new(tokio::sync::Semaphore::new(ANSWERING));
    loop {
        let accepted = match &listener {
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
            Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        };
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                metrics.drop_for(DropReason::LiveAcceptError);
                slots.accept_failed("live view", &e).await;
                continue;
            }
        };
        metrics.drop_by(DropReason::LiveConnectionLimit, slots.make_room());
        let view = view.clone();
        let metrics = metrics.clone();
        let answering = answering.clone();
        let task = tokio::spawn(async move {
            let served = match conn {
                Conn::Tcp(mut s) => {
                    tokio::time::timeout(
                        limits.request_timeout,
                        answer(&mut s, view, clock, Surface::Page, &answering),
                    )
                    .await
                }
                Conn::Unix(mut s) => {
                    tokio::time::timeout(
                        limits.request_timeout,
                        answer(&mut s, view, clock, Surface::Api, &answering),
                    )
                    .await
                }
            };
            match served {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => metrics.drop_for(DropReason::LiveBadRequest),
                Ok(Err(e)) => debug!("live view connection failed: {e}"),
                Err(_) => metrics.drop_for(DropReason::LiveRequestTimeout),
            }
        });
        slots.push(task.abort_handle());
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Reads one request head and answers it; false when it was refused.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    sock: &mut S,
    view: Arc<LiveView>,
    clock: crate::clock::Clock,
    surface: Surface,
    answering: &tokio::sync::Semaphore,
) -> std::io::Result<bool> {
    let Some((buf, complete)) = read_head(sock).await? else {
        return Ok(false);
    };
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let refuse = |status: &'static str, msg: &'static str| (status, msg);
    let refused = if !complete {
        Some(refuse(
            "431 Request Header Fields Too Large",
            "request head too large\n",
        ))
    } else if method != "GET" && method != "HEAD" {
        Some(refuse(
            "405 Method Not Allowed\r\nAllow: GET, HEAD",
            "only GET and HEAD\n",
        ))
    } else if surface == Surface::Page && !host_allowed(&head) {
        Some(refuse(
            "421 Misdirected Request",
            "the trace page answers only to an address or localhost in Host\n",
        ))
    } else {
        None
    };
    if let Some((status, msg)) = refused {
        let _ = write(sock, status, "text/plain", msg.as_bytes(), false).await;
        return Ok(false);
    }
    let head_only = method == "HEAD";
    let target = target.to_owned();
    // The answer's work runs off the async runtime (which also reads the ring buffer), two at
    // a time at most.
    let a = {
        let Ok(_permit) = answering.acquire().await else {
            return Ok(false);
        };
        let now = clock.unix_ns(crate::clock::monotonic_now_ns());
        // The permit is held while the answer is made, not while a slow reader takes it.
        tokio::task::spawn_blocking(move || api::route(&view, &target, now, surface))
            .await
            .map_err(std::io::Error::other)?
    };
    write(sock, a.status, a.content_type, &a.body, head_only).await?;
    Ok(true)
}

/// Writes a whole response with the live view's headers and closes the sending side.
async fn write<S: AsyncWrite + Unpin>(
    sock: &mut S,
    status: &str,
    ctype: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    if !head_only {
        sock.write_all(body).await?;
    }
    let _ = sock.shutdown().await;
    Ok(())
}

/// The request's `Host` is an IP address literal or `localhost`, with or without a port.
fn host_allowed(head: &str) -> bool {
    let Some(host) = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("host").then(|| v.trim())
    }) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn only_address_literals_and_localhost_reach_the_page() {
        for ok in [
            "Host: 127.0.0.1:8080",
            "host: localhost",
            "Host: LOCALHOST:1",
            "Host: [::1]:9",
            "Host: 10.0.0.1",
        ] {
            assert!(
                host_allowed(&format!("GET / HTTP/1.1\r\n{ok}\r\n\r\n")),
                "{ok}"
            );
        }
        for bad in [
            "Host: evil.example:8080",
            "Host: 127.0.0.1.nip.io",
            "Host: [::1]x",
            "Host: localhost.evil",
            "X: y",
        ] {
            assert!(
                !host_allowed(&format!("GET / HTTP/1.1\r\n{bad}\r\n\r\n")),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn the_socket_serves_the_api_and_is_private() {
        let dir = std::env::temp_dir().join(format!("llmprobe-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("api.sock");
        let l = bind_socket(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().expect("dir"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        // A second agent is refused while this one serves.
        assert!(bind_socket(&path).is_err());
        let view = LiveView::new();
        let metrics = Arc::new(SelfMetrics::unregistered());
        let task = tokio::spawn(serve(
            l,
            view,
            crate::clock::Clock::system(),
            metrics,
            ServeLimits::default(),
        ));
        let mut s = tokio::net::UnixStream::connect(&path)
            .await
            .expect("connect");
        s.write_all(b"GET /api/v1/rollups HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains("\"window_s\":60.0"), "{out}");
        task.abort();
        let _ = task.await;
        // Dropping the server removed the socket; a stale socket file is replaced.
        assert!(!path.exists());
        let stale = std::os::unix::net::UnixListener::bind(&path).expect("stale");
        drop(stale);
        let l = bind_socket(&path).expect("a stale socket is replaced");
        drop(l);
        // A directory others may write is refused (they could swap the socket for their own).
        let e = bind_socket(&std::env::temp_dir().join("llmprobe-api-test.sock"))
            .err()
            .expect("a world-writable directory is refused");
        assert!(e.to_string().contains("not a private directory"), "{e}");
        // Anything else is left alone.
        std::fs::write(&path, b"x").expect("file");
        let e = bind_socket(&path).err().expect("refused");
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&path).expect("kept"), b"x");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
