//! The capture format of `llmprobe record` / `llmprobe replay`: JSON lines, one probe event per
//! line after a header line that stores the clock offset, so a replay reproduces the original
//! wall-clock times. Payload is kept as text when it is valid UTF-8 (readable, editable fixtures)
//! and as base64 otherwise. Secret header values are already masked before events get here.

use std::io::{BufRead, Write};
use std::net::SocketAddr;

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::events::{DataChunk, Direction, EventMeta, ProbeEvent};
use crate::clock::Clock;

/// Version written in the header line.
pub const CAPTURE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
enum Line {
    Header {
        llmprobe_capture: u32,
        clock_offset_ns: i64,
    },
    Data {
        #[serde(flatten)]
        meta: EventMeta,
        dir: Direction,
        tls: bool,
        #[serde(default)]
        offset: u32,
        total_len: u32,
        /// `DataChunk::lost_before`; absent (false) in older captures.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        lost_before: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        b64: Option<String>,
    },
    /// Older captures also carry `role_hint` (connect/accept/seeded); it is ignored.
    ConnOpen {
        #[serde(flatten)]
        meta: EventMeta,
        peer: Option<String>,
    },
    ConnClose {
        #[serde(flatten)]
        meta: EventMeta,
    },
    SslFd {
        #[serde(flatten)]
        meta: EventMeta,
    },
    SslFree {
        #[serde(flatten)]
        meta: EventMeta,
    },
    ExecMap {
        #[serde(flatten)]
        meta: EventMeta,
    },
    ProcExit {
        #[serde(flatten)]
        meta: EventMeta,
    },
}

/// Writes probe events as capture lines.
pub struct CaptureWriter<W: Write> {
    out: W,
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a capture, writing its header.
    pub fn new(mut out: W, clock: Clock) -> anyhow::Result<Self> {
        let header = Line::Header {
            llmprobe_capture: CAPTURE_VERSION,
            clock_offset_ns: clock.offset_ns,
        };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        Ok(CaptureWriter { out })
    }

    /// Appends one event.
    pub fn write(&mut self, ev: &ProbeEvent) -> anyhow::Result<()> {
        let mut line = Vec::new();
        encode_line(ev, &mut line)?;
        self.write_raw(&line)
    }

    /// Appends lines already encoded with [`encode_line`].
    pub fn write_raw(&mut self, lines: &[u8]) -> anyhow::Result<()> {
        self.out.write_all(lines)?;
        Ok(())
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// Appends one event's capture line (with its newline) to `buf`.
pub fn encode_line(ev: &ProbeEvent, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let line = match ev.clone() {
        ProbeEvent::Data(d) => {
            let (text, b64) = match std::str::from_utf8(&d.data) {
                Ok(s) => (Some(s.to_owned()), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&d.data)),
                ),
            };
            Line::Data {
                meta: d.meta,
                dir: d.direction,
                tls: d.tls,
                offset: d.offset,
                total_len: d.total_len,
                lost_before: d.lost_before,
                text,
                b64,
            }
        }
        ProbeEvent::ConnOpen { meta, peer } => Line::ConnOpen {
            meta,
            peer: peer.map(|p| p.to_string()),
        },
        ProbeEvent::ConnClose { meta } => Line::ConnClose { meta },
        ProbeEvent::SslFd { meta } => Line::SslFd { meta },
        ProbeEvent::SslFree { meta } => Line::SslFree { meta },
        ProbeEvent::ExecMap { meta } => Line::ExecMap { meta },
        ProbeEvent::ProcExit { meta } => Line::ProcExit { meta },
    };
    serde_json::to_writer(&mut *buf, &line)?;
    buf.push(b'\n');
    Ok(())
}

/// Reads a whole capture: its clock and its events in order.
pub fn read_capture(input: impl BufRead) -> anyhow::Result<(Clock, Vec<ProbeEvent>)> {
    let mut clock = None;
    let mut events = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading capture line {}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .with_context(|| format!("capture line {} is not a valid llmprobe event", i + 1))?;
        let ev = match parsed {
            Line::Header {
                llmprobe_capture,
                clock_offset_ns,
            } => {
                if llmprobe_capture > CAPTURE_VERSION {
                    bail!(
                        "capture version {llmprobe_capture} is newer than this llmprobe ({CAPTURE_VERSION})"
                    );
                }
                clock = Some(Clock {
                    offset_ns: clock_offset_ns,
                });
                continue;
            }
            Line::Data {
                meta,
                dir,
                tls,
                offset,
                total_len,
                lost_before,
                text,
                b64,
            } => {
                let data = match (text, b64) {
                    (Some(t), _) => Bytes::from(t.into_bytes()),
                    (None, Some(b)) => Bytes::from(
                        base64::engine::general_purpose::STANDARD
                            .decode(b.as_bytes())
                            .with_context(|| format!("capture line {}: bad base64", i + 1))?,
                    ),
                    (None, None) => Bytes::new(),
                };
                ProbeEvent::Data(DataChunk {
                    meta,
                    direction: dir,
                    tls,
                    offset,
                    total_len,
                    lost_before,
                    data,
                })
            }
            Line::ConnOpen { meta, peer } => ProbeEvent::ConnOpen {
                meta,
                peer: peer.and_then(|p| p.parse::<SocketAddr>().ok()),
            },
            Line::ConnClose { meta } => ProbeEvent::ConnClose { meta },
            Line::SslFd { meta } => ProbeEvent::SslFd { meta },
            Line::SslFree { meta } => ProbeEvent::SslFree { meta },
            Line::ExecMap { meta } => ProbeEvent::ExecMap { meta },
            Line::ProcExit { meta } => ProbeEvent::ProcExit { meta },
        };
        events.push(ev);
    }
    let clock = clock.context("capture has no header line: is this an llmprobe capture?")?;
    Ok((clock, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EventMeta {
        EventMeta {
            pid: 1,
            tid: 2,
            fd: 3,
            conn_id: 5,
            ts_ns: 9,
            comm: "curl".into(),
            container: None,
        }
    }

    #[test]
    fn round_trips_text_and_binary() {
        let evs = vec![
            ProbeEvent::ConnOpen {
                meta: meta(),
                peer: Some("127.0.0.1:8080".parse().expect("addr")),
            },
            ProbeEvent::Data(DataChunk {
                meta: meta(),
                direction: Direction::Egress,
                tls: false,
                offset: 0,
                total_len: 4,
                lost_before: false,
                data: Bytes::from_static(b"GET "),
            }),
            ProbeEvent::Data(DataChunk {
                meta: meta(),
                direction: Direction::Ingress,
                tls: true,
                offset: 0,
                total_len: 3,
                lost_before: true,
                data: Bytes::from_static(&[0xff, 0x00, 0x80]),
            }),
            ProbeEvent::ConnClose { meta: meta() },
        ];
        let mut buf = Vec::new();
        let clock = Clock { offset_ns: 123 };
        let mut w = CaptureWriter::new(&mut buf, clock).expect("writer");
        for e in &evs {
            w.write(e).expect("write");
        }
        let text = String::from_utf8_lossy(&buf);
        assert_eq!(text.matches("\"lost_before\":true").count(), 1, "{text}");
        assert!(!text.contains("\"lost_before\":false"), "{text}");
        let (c2, back) = read_capture(&buf[..]).expect("read");
        assert_eq!(c2, clock);
        assert_eq!(back, evs);
    }

    #[test]
    fn rejects_garbage() {
        assert!(read_capture(&b"not json\n"[..]).is_err());
        assert!(read_capture(&b""[..]).is_err());
    }
}
