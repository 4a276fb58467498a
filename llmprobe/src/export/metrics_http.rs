//! A small HTTP endpoint serving the metric registry at `/metrics` in the Prometheus text format.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use log::debug;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Binds the listener (so a busy port is reported at start-up, not later).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for /metrics on {addr}; pass --metrics-addr with a free address")
    })
}

/// Serves `/metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((mut sock, peer)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut used = 0;
            // Read the request head (bounded); the body, if any, is ignored.
            loop {
                let read = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf[used..]),
                )
                .await;
                match read {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
                    Ok(Ok(n)) => used += n,
                }
                if buf[..used].windows(4).any(|w| w == b"\r\n\r\n") || used == buf.len() {
                    break;
                }
            }
            let line = String::from_utf8_lossy(&buf[..used]);
            let target = line.split_whitespace().nth(1).unwrap_or("");
            let accept = line
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("accept")
                        .then(|| v.trim().to_owned())
                })
                .unwrap_or_default();
            let (status, ctype, body) = if line.starts_with("GET ")
                && (target == "/metrics" || target.starts_with("/metrics?"))
            {
                let mut text = String::new();
                match encode(&mut text, &registry) {
                    Ok(()) if super::prometheus::wants_openmetrics(&accept) => (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    // The classic text exposition by default (what every scraper reads).
                    Ok(()) => (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        super::prometheus::encode_text(&registry),
                    ),
                    Err(_) => (
                        "500 Internal Server Error",
                        "text/plain",
                        "encoding failed\n".to_owned(),
                    ),
                }
            } else {
                (
                    "404 Not Found",
                    "text/plain",
                    "llmprobe serves /metrics\n".to_owned(),
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = sock.write_all(resp.as_bytes()).await {
                debug!("/metrics reply to {peer} failed: {e}");
            }
        });
    }
}
