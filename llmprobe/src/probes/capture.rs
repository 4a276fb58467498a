//! The capture format of `llmprobe record` / `llmprobe replay`: JSON lines, one probe event per
//! line after a header line that stores the clock offset, so a replay reproduces the original
//! wall-clock times. Payload is kept as text when it is valid UTF-8 (readable, editable fixtures)
//! and as base64 otherwise. Secret header values are already masked before events get here.
//!
//! Fields added since version 1 are optional, so older captures replay unchanged: `connect_ns`
//! on `conn_open` (absent: no connect time, the records' `connect_s` stays null) and the
//! `tls_start` line (a socket's first TLS record written).

use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::net::SocketAddr;

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::events::{DataChunk, Direction, EventMeta, ProbeEvent};
use crate::clock::Clock;

/// Version written in the header line.
pub const CAPTURE_VERSION: u32 = 1;

#[derive(Serialize)]
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
        /// `DataChunk::api_key_id` (16 hex digits, the keyed fingerprint: the key itself was
        /// masked), so a replay gives the live run's `api_key_id`; absent in older captures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
        /// `DataChunk::mcp_session_id` (16 hex digits, the keyed id: the header was masked);
        /// absent in older captures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mcp_session: Option<String>,
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
        /// `ProbeEvent::ConnOpen::connect_ns`; absent for accepted or seeded sockets and in
        /// older captures.
        #[serde(skip_serializing_if = "Option::is_none")]
        connect_ns: Option<u64>,
    },
    TlsStart {
        #[serde(flatten)]
        meta: EventMeta,
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
                key_id: d.api_key_id.map(crate::ids::hex_id),
                mcp_session: d.mcp_session_id.map(crate::ids::hex_id),
                text,
                b64,
            }
        }
        ProbeEvent::ConnOpen {
            meta,
            peer,
            connect_ns,
        } => Line::ConnOpen {
            meta,
            peer: peer.map(|p| p.to_string()),
            connect_ns,
        },
        ProbeEvent::TlsStart { meta } => Line::TlsStart { meta },
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

/// The kind of a capture line (`"ev"`).
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Header,
    Data,
    ConnOpen,
    TlsStart,
    ConnClose,
    SslFd,
    SslFree,
    ExecMap,
    ProcExit,
}

/// One capture line as read: every kind's fields flat and optional, strings borrowed from the
/// line where they have no escapes. Reading through this struct instead of the tagged [`Line`]
/// avoids serde's buffering of internally tagged, flattened enums (a third of a replay's time).
#[derive(Deserialize)]
struct RawLine<'a> {
    ev: Kind,
    llmprobe_capture: Option<u32>,
    clock_offset_ns: Option<i64>,
    pid: Option<u32>,
    tid: Option<u32>,
    fd: Option<i32>,
    conn_id: Option<u64>,
    ts_ns: Option<u64>,
    #[serde(borrow)]
    comm: Option<Cow<'a, str>>,
    #[serde(borrow)]
    container: Option<Cow<'a, str>>,
    dir: Option<Direction>,
    tls: Option<bool>,
    offset: Option<u32>,
    total_len: Option<u32>,
    lost_before: Option<bool>,
    #[serde(borrow)]
    key_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mcp_session: Option<Cow<'a, str>>,
    /// Kept raw (with its quotes and escapes) and unescaped straight into the payload slab:
    /// serde would unescape it into a scratch buffer of its own, grown anew for every line.
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    b64: Option<Cow<'a, str>>,
    #[serde(borrow)]
    peer: Option<Cow<'a, str>>,
    connect_ns: Option<u64>,
}

/// Appends the text of a JSON string literal (`raw`, quotes included, as the parser validated
/// it: well-formed escapes, no control characters, UTF-8) to `out`, unescaped. The result is
/// serde_json's own: every escape decoded, a surrogate pair joined, a lone surrogate refused.
fn unescape_into(raw: &str, out: &mut BytesMut) -> anyhow::Result<()> {
    let inner = raw
        .as_bytes()
        .strip_prefix(b"\"")
        .and_then(|s| s.strip_suffix(b"\""))
        .context("`text` is not a string")?;
    let hex4 = |at: usize| -> anyhow::Result<u32> {
        let digits = inner.get(at..at + 4).context("short \\u escape")?;
        digits.iter().try_fold(0u32, |n, &d| {
            let v = (d as char).to_digit(16).context("bad \\u escape")?;
            Ok(n * 16 + v)
        })
    };
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\\', &inner[i..]) {
        out.extend_from_slice(&inner[i..i + p]);
        i += p + 1;
        let e = *inner.get(i).context("bad escape")?;
        i += 1;
        let c = match e {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => b'\x08',
            b'f' => b'\x0c',
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let n = hex4(i)?;
                i += 4;
                let code = match n {
                    0xD800..=0xDBFF => {
                        if inner.get(i..i + 2) != Some(b"\\u") {
                            bail!("lone surrogate in a \\u escape");
                        }
                        let low = hex4(i + 2)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            bail!("lone surrogate in a \\u escape");
                        }
                        i += 6;
                        0x1_0000 + ((n - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => bail!("lone surrogate in a \\u escape"),
                    n => n,
                };
                let ch = char::from_u32(code).context("bad \\u escape")?;
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => bail!("bad escape"),
        };
        out.extend_from_slice(&[c]);
    }
    out.extend_from_slice(&inner[i..]);
    Ok(())
}

fn need<T>(v: Option<T>, field: &str) -> anyhow::Result<T> {
    v.with_context(|| format!("missing field `{field}`"))
}

impl RawLine<'_> {
    fn meta(&mut self) -> anyhow::Result<EventMeta> {
        Ok(EventMeta {
            pid: need(self.pid, "pid")?,
            tid: need(self.tid, "tid")?,
            fd: need(self.fd, "fd")?,
            conn_id: need(self.conn_id, "conn_id")?,
            ts_ns: need(self.ts_ns, "ts_ns")?,
            comm: need(self.comm.take(), "comm")?.into_owned(),
            container: self.container.take().map(Cow::into_owned),
        })
    }

    /// The event this line holds (None for the header).
    /// The event this line holds (None for the header). Text payloads are copied into `slab`
    /// and handed out as slices of it: one allocation per [`SLAB_BYTES`], not one per event.
    fn event(mut self, slab: &mut BytesMut) -> anyhow::Result<Option<ProbeEvent>> {
        let ev = match self.ev {
            Kind::Header => return Ok(None),
            Kind::Data => {
                let data = match (self.text.take(), self.b64.take()) {
                    (Some(t), _) => {
                        // The text is no longer than its JSON form.
                        let raw = t.get();
                        if slab.capacity() < raw.len() {
                            slab.reserve(raw.len().max(SLAB_BYTES));
                        }
                        unescape_into(raw, slab)?;
                        slab.split().freeze()
                    }
                    (None, Some(b)) => Bytes::from(
                        base64::engine::general_purpose::STANDARD
                            .decode(b.as_bytes())
                            .context("bad base64")?,
                    ),
                    (None, None) => Bytes::new(),
                };
                ProbeEvent::Data(DataChunk {
                    meta: self.meta()?,
                    direction: need(self.dir, "dir")?,
                    tls: need(self.tls, "tls")?,
                    offset: self.offset.unwrap_or(0),
                    total_len: need(self.total_len, "total_len")?,
                    lost_before: self.lost_before.unwrap_or(false),
                    data,
                    api_key_id: match self.key_id.as_deref() {
                        None => None,
                        Some(h) => Some(
                            (h.len() == 16)
                                .then(|| u64::from_str_radix(h, 16).ok())
                                .flatten()
                                .context("bad key_id: not 16 hex digits")?,
                        ),
                    },
                    mcp_session_id: match self.mcp_session.as_deref() {
                        None => None,
                        Some(h) => Some(
                            (h.len() == 16)
                                .then(|| u64::from_str_radix(h, 16).ok())
                                .flatten()
                                .context("bad mcp_session: not 16 hex digits")?,
                        ),
                    },
                })
            }
            Kind::ConnOpen => ProbeEvent::ConnOpen {
                meta: self.meta()?,
                peer: self
                    .peer
                    .as_deref()
                    .and_then(|p| p.parse::<SocketAddr>().ok()),
                connect_ns: self.connect_ns,
            },
            Kind::TlsStart => ProbeEvent::TlsStart { meta: self.meta()? },
            Kind::ConnClose => ProbeEvent::ConnClose { meta: self.meta()? },
            Kind::SslFd => ProbeEvent::SslFd { meta: self.meta()? },
            Kind::SslFree => ProbeEvent::SslFree { meta: self.meta()? },
            Kind::ExecMap => ProbeEvent::ExecMap { meta: self.meta()? },
            Kind::ProcExit => ProbeEvent::ProcExit { meta: self.meta()? },
        };
        Ok(Some(ev))
    }
}

/// Reads a capture one event at a time, so a replay holds one line in memory, not the file.
/// The header (the clock) must come first, as [`CaptureWriter`] writes it.
pub struct CaptureReader<R: BufRead> {
    input: R,
    line: Vec<u8>,
    slab: BytesMut,
    line_no: usize,
    clock: Clock,
}

impl<R: BufRead> CaptureReader<R> {
    /// Reads the header line and returns the reader positioned at the first event.
    pub fn new(input: R) -> anyhow::Result<Self> {
        let mut r = CaptureReader {
            input,
            line: Vec::new(),
            slab: BytesMut::new(),
            line_no: 0,
            clock: Clock { offset_ns: 0 },
        };
        let header = loop {
            if !r.next_line()? {
                bail!("capture has no header line: is this an llmprobe capture?");
            }
            if !r.line.trim_ascii().is_empty() {
                break parse(&r.line, r.line_no)?;
            }
        };
        let (Kind::Header, Some(version), Some(offset_ns)) =
            (header.ev, header.llmprobe_capture, header.clock_offset_ns)
        else {
            bail!(
                "capture line {} is not a header line: is this an llmprobe capture?",
                r.line_no
            );
        };
        if version > CAPTURE_VERSION {
            bail!("capture version {version} is newer than this llmprobe ({CAPTURE_VERSION})");
        }
        r.clock = Clock { offset_ns };
        Ok(r)
    }

    /// The clock offset stored in the header.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn next_line(&mut self) -> anyhow::Result<bool> {
        self.line.clear();
        self.line_no += 1;
        let n = std::io::Read::take(&mut self.input, MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut self.line)
            .with_context(|| format!("reading capture line {}", self.line_no))?;
        if n > MAX_LINE_BYTES {
            bail!(
                "capture line {} is longer than {} MiB: not a line llmprobe writes",
                self.line_no,
                MAX_LINE_BYTES >> 20
            );
        }
        Ok(n > 0)
    }

    /// The next event, `None` at the end of the capture.
    pub fn next_event(&mut self) -> anyhow::Result<Option<ProbeEvent>> {
        loop {
            if !self.next_line()? {
                return Ok(None);
            }
            if self.line.trim_ascii().is_empty() {
                continue;
            }
            let line_no = self.line_no;
            let parsed = parse(&self.line, line_no)?;
            match parsed
                .event(&mut self.slab)
                .with_context(|| format!("capture line {line_no}"))?
            {
                Some(ev) => return Ok(Some(ev)),
                None => bail!("capture line {line_no}: a second header line"),
            }
        }
    }
}

fn parse(line: &[u8], line_no: usize) -> anyhow::Result<RawLine<'_>> {
    serde_json::from_slice(line)
        .with_context(|| format!("capture line {line_no} is not a valid llmprobe event"))
}

/// The longest capture line read (a record's payload is at most 16 KiB, six bytes per byte
/// escaped): a file with a longer line is refused rather than read into memory whole.
const MAX_LINE_BYTES: usize = 16 << 20;

/// Bytes of payload the capture reader allocates at once (see [`RawLine::event`]).
const SLAB_BYTES: usize = 64 << 10;

impl<R: BufRead> Iterator for CaptureReader<R> {
    type Item = anyhow::Result<ProbeEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// Reads a whole capture: its clock and its events in order.
pub fn read_capture(input: impl BufRead) -> anyhow::Result<(Clock, Vec<ProbeEvent>)> {
    let reader = CaptureReader::new(input)?;
    let clock = reader.clock();
    let events = reader.collect::<anyhow::Result<Vec<_>>>()?;
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
                connect_ns: Some(4),
            },
            ProbeEvent::ConnOpen {
                meta: meta(),
                peer: None,
                connect_ns: None,
            },
            ProbeEvent::TlsStart { meta: meta() },
            ProbeEvent::Data(DataChunk {
                meta: meta(),
                direction: Direction::Egress,
                tls: false,
                offset: 0,
                total_len: 4,
                lost_before: false,
                data: Bytes::from_static(b"GET "),
                api_key_id: Some(0x0123_4567_89ab_cdef),
                mcp_session_id: None,
            }),
            ProbeEvent::Data(DataChunk {
                meta: meta(),
                direction: Direction::Ingress,
                tls: true,
                offset: 0,
                total_len: 3,
                lost_before: true,
                data: Bytes::from_static(&[0xff, 0x00, 0x80]),
                api_key_id: None,
                mcp_session_id: None,
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
        // An open without a connect time writes none (older readers see what they knew).
        assert_eq!(text.matches("\"connect_ns\"").count(), 1, "{text}");
        assert_eq!(
            text.matches("\"key_id\":\"0123456789abcdef\"").count(),
            1,
            "{text}"
        );
        let (c2, back) = read_capture(&buf[..]).expect("read");
        assert_eq!(c2, clock);
        assert_eq!(back, evs);
    }

    #[test]
    fn a_line_longer_than_any_record_is_refused() {
        let mut text =
            b"{\"ev\":\"header\",\"llmprobe_capture\":1,\"clock_offset_ns\":0}\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        let err = read_capture(&text[..]).expect_err("too long");
        assert!(
            format!("{err:#}").contains("line 2 is longer than 16 MiB"),
            "{err:#}"
        );
    }

    #[test]
    fn text_is_unescaped_as_serde_json_does() {
        let mut cases: Vec<String> = [
            r#""""#,
            r#""plain""#,
            r#""a\"b\\c\/d\be\ff\ng\rh\ti""#,
            r#""\u0041\u00e9\u20ac\ud83d\ude00 end""#,
            r#""\uD83D\uDE00\u0000""#,
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
            r#""\ude00""#,
            r#""\ud83d\n""#,
            r#""\x""#,
            r#""\u12""#,
            r#""tail\\""#,
            "\"日本語 \\\" ok\"",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every character class serde_json escapes, through its own encoder.
        let all: String = (0u32..0x300)
            .chain([0x2028, 0xfffd, 0x1f600])
            .filter_map(char::from_u32)
            .collect();
        cases.push(serde_json::to_string(&all).expect("encode"));
        for raw in &cases {
            let want = serde_json::from_str::<String>(raw).ok();
            let mut out = BytesMut::new();
            let got = unescape_into(raw, &mut out)
                .ok()
                .map(|()| String::from_utf8(out.to_vec()).expect("utf-8"));
            assert_eq!(got, want, "{raw}");
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(read_capture(&b"not json\n"[..]).is_err());
        assert!(read_capture(&b""[..]).is_err());
    }
}
