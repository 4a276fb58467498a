//! Shared pieces of llmprobe's fuzz targets: how an input is read (a small control header, then
//! the bytes under test), how it is cut into pieces, and the event-script format of the `tracker`
//! target. The seed corpora (`src/bin/seed_corpora.rs`) are written in these same formats.
//!
//! Every byte-stream target reads its input as `[mode: u8][cut seed: u64 LE][stream bytes...]`
//! ([`Input`]): `mode` picks options (message kind, size limits, encoding...), the seed drives the
//! pseudo-random cut points, and the rest is the stream. A seed is therefore a 9-byte prefix
//! followed by bytes taken from a recorded capture, and libFuzzer mutates both parts.
//!
//! Targets (one file each in `fuzz_targets/`) and what each asserts beyond "no panic, no hang,
//! bounded memory":
//!
//! | target | drives | invariants |
//! | --- | --- | --- |
//! | `http1` | `Http1Parser` (requests, responses), cuts, gaps, `finish` | whole = any cuts (same events, same error); buffer and output bounded |
//! | `http2` | `H2Parser` (frames, HPACK, secret filtering), client and server streams, cuts, gaps | whole = any cuts; buffers and decoded heads bounded; a gap or error is final |
//! | `sse` | `SseDecoder` | whole = any cuts; buffered bytes never over the event cap |
//! | `ndjson` | `NdjsonDecoder` | whole = any cuts; buffered bytes never over the line cap |
//! | `json_array` | `JsonArraySplitter` | whole = any cuts; elements are under the cap |
//! | `encoding` | `BodyDecoder` for every `Content-Encoding` | output never over the cap; whole = any cuts |
//! | `dialects` | `llm::detect` + `LlmExchange` for every dialect and body framing | records sane; whole = any cuts |
//! | `tracker` | `EventPreparer` + `ConnTracker::handle`, scripted probe events | bounded tables; records sane |
//! | `capture` | `probes::capture::read_capture` on text | no panic |
//! | `ringbuf` | `probes::events::decode` on raw ring-buffer records | decoded payload bounded |
//! | `elf` | `probes::discovery::inspect_elf` on a file with the input bytes | offsets inside the file |
//! | `golang` | `probes::golang::inspect_go_bytes` (pclntab, module data, build info, RET scan) | offsets inside the file, RETs on RET bytes |
//! | `masker` | `SecretScrubber::scrub` on a request cut anywhere | no 4-byte piece of the token survives |
//! | `redact` | `content::redact::Redactor::redact` on text, with custom rules, secrets and tags around it | unmatched text borrowed and unchanged; output a fixed point; tags inserted = counts |

use bytes::Bytes;

/// Bytes before the stream in every byte-stream target's input: mode, then the cut seed.
pub const HEADER_LEN: usize = 9;

/// A byte-stream target's input.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Target-specific option bits.
    pub mode: u8,
    /// Seed of the cut points.
    pub seed: u64,
    /// The stream under test.
    pub data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads the header; a short input is all header (empty stream, zero-padded options).
    pub fn parse(raw: &'a [u8]) -> Self {
        let mut head = [0u8; HEADER_LEN];
        let n = raw.len().min(HEADER_LEN);
        head[..n].copy_from_slice(&raw[..n]);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&head[1..9]);
        Input {
            mode: head[0],
            seed: u64::from_le_bytes(seed),
            data: &raw[n..],
        }
    }
}

/// Builds an input in the [`Input`] format (used to write seeds).
pub fn encode_input(mode: u8, seed: u64, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + data.len());
    v.push(mode);
    v.extend_from_slice(&seed.to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// Small deterministic generator (xorshift64*) for cut points chosen by the fuzzer's seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From a fuzzer-chosen seed (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A piece length: mostly tiny (cuts inside tokens and line ends), sometimes large.
    pub fn piece_len(&mut self, left: usize) -> usize {
        let n = match self.below(8) {
            0 => 0,
            1..=3 => 1 + self.below(4) as usize,
            4..=6 => 1 + self.below(64) as usize,
            _ => 1 + self.below(4096) as usize,
        };
        n.min(left)
    }
}

/// Cuts `data` into consecutive pieces (empty pieces included) at seeded points.
pub fn cut<'a>(data: &'a [u8], rng: &mut Rng) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let n = rng.piece_len(data.len() - pos);
        pieces.push(&data[pos..pos + n]);
        pos += n;
    }
    pieces
}

/// The choices of the `encoding` target: mode bits 0-2 pick the encoding, bits 3-4 the cap.
pub mod codings {
    /// `Content-Encoding` values (the last two have no decoder).
    pub const ENCODINGS: [&str; 8] = [
        "gzip", "deflate", "br", "zstd", "x-gzip", " GZIP ", "identity", "compress",
    ];
    /// Output caps.
    pub const CAPS: [u64; 4] = [0, 100, 64 * 1024, 8 << 20];
}

/// The request and response choices of the `dialects` target (the seeds use the same indexes).
pub mod dialect {
    /// Request paths (input byte 0, low 5 bits, modulo the count: the first 16 keep the
    /// indexes the seeds were written with). `/mcp` (MCP, recognised by its JSON-RPC body) is
    /// the last.
    pub const PATHS: [&str; 17] = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        "/v1beta/models/gemini-2.5-flash:generateContent?key=AIzaSECRET",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/v1/services/aigc/text-generation/generation",
        "/api/v1/services/aigc/multimodal-generation/generation",
        "/v1/responses",
        "/compatible-mode/v1/chat/completions",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        "/gateway/llm",
        "/openai/deployments/gpt/chat/completions?api-version=2024-10-21",
        "/mcp",
    ];
    /// Response statuses (response byte bits 0-1).
    pub const STATUSES: [u16; 4] = [200, 200, 429, 500];
    /// Response content types (response byte bits 2-4).
    pub const TYPES: [&str; 8] = [
        "text/event-stream",
        "application/x-ndjson",
        "application/json",
        "text/plain",
        "application/json; charset=utf-8",
        "text/event-stream;charset=UTF-8",
        "application/jsonl",
        "",
    ];
    /// Response content encodings (response byte bits 5-7).
    pub const ENCODINGS: [&str; 8] = [
        "", "gzip", "deflate", "br", "zstd", "identity", "gzip, br", "",
    ];
}

/// Identities the tracker script can name: a few processes, a few connections each.
pub mod script {
    use super::*;
    use llmprobe::probes::events::{DataChunk, Direction, EventMeta, ProbeEvent};

    /// Processes the script can name (`pid = PIDS[i]`).
    pub const PIDS: [u32; 4] = [4100, 4101, 4102, 4103];
    /// Connections per process: slot `i` is fd `3 + i`, socket generation `0x1000 + i`, and
    /// `SSL*` `0x7f00_0000_0000 + i`.
    pub const SLOTS: u8 = 8;

    /// One scripted step, before it becomes a probe event.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Op {
        /// Bytes of one call, in one event at offset 0 (`total_len` = length).
        Data { conn: u8, bytes: Vec<u8> },
        /// Bytes with an explicit offset and call length (lost pieces, odd kernels).
        DataAt {
            conn: u8,
            offset: u32,
            total: u32,
            bytes: Vec<u8>,
        },
        /// One call's bytes cut into events of `piece` bytes (as the kernel cuts at 16 KiB);
        /// piece number `drop` (if any) is lost.
        DataSplit {
            conn: u8,
            piece: u8,
            drop: u8,
            bytes: Vec<u8>,
        },
        /// A socket opened; `peer` picks an address (0: none).
        Open { conn: u8, peer: u8 },
        /// A socket closed.
        Close { conn: u8 },
        /// The connection's `SSL*` is seen on socket slot `fd_slot`.
        SslFd { conn: u8, fd_slot: u8 },
        /// `SSL_free`.
        SslFree { conn: u8 },
        /// The process exited.
        Exit { conn: u8 },
    }

    /// The `conn` byte: bits 0-2 slot, bits 3-4 process, bit 5 TLS, bit 6 ingress.
    pub fn conn_byte(slot: u8, pid_idx: u8, tls: bool, ingress: bool) -> u8 {
        (slot & 7) | (pid_idx & 3) << 3 | u8::from(tls) << 5 | u8::from(ingress) << 6
    }

    /// Time advance per step, indexed by the op byte's high 3 bits.
    const ADVANCE_NS: [u64; 8] = [
        0,
        1_000,
        50_000,
        1_000_000,
        20_000_000,
        1_100_000_000,
        30_000_000_000,
        700_000_000_000,
    ];

    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if data.len() < n {
            return None;
        }
        let (a, b) = data.split_at(n);
        *data = b;
        Some(a)
    }

    fn take_u8(data: &mut &[u8]) -> Option<u8> {
        take(data, 1).map(|b| b[0])
    }

    fn take_u16(data: &mut &[u8]) -> Option<u16> {
        take(data, 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn take_u32(data: &mut &[u8]) -> Option<u32> {
        take(data, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a script: a list of `(advance index, op)`. Format, per step: an op byte (low 5 bits:
    /// kind, high 3 bits: time advance), a conn byte, then per kind: `Data`: u16 length + bytes;
    /// `DataAt`: u32 offset, u32 total, u16 length + bytes; `DataSplit`: piece, drop, u16 length
    /// + bytes; `Open`: peer byte; `SslFd`: slot byte; others nothing. A length past the end takes
    /// what is left.
    pub fn parse(mut data: &[u8]) -> Vec<(u8, Op)> {
        let mut ops = Vec::new();
        while let Some(op) = take_u8(&mut data) {
            let Some(conn) = take_u8(&mut data) else {
                break;
            };
            let advance = op >> 5;
            let bytes = |data: &mut &[u8]| -> Vec<u8> {
                let n = take_u16(data).unwrap_or(0) as usize;
                let n = n.min(data.len());
                take(data, n).unwrap_or_default().to_vec()
            };
            let op = match op & 0x1f {
                0..=5 => Op::Data {
                    conn,
                    bytes: bytes(&mut data),
                },
                6 | 7 => {
                    let offset = take_u32(&mut data).unwrap_or(0);
                    let total = take_u32(&mut data).unwrap_or(0);
                    Op::DataAt {
                        conn,
                        offset,
                        total,
                        bytes: bytes(&mut data),
                    }
                }
                8 | 9 => {
                    let piece = take_u8(&mut data).unwrap_or(0);
                    let drop = take_u8(&mut data).unwrap_or(0);
                    Op::DataSplit {
                        conn,
                        piece,
                        drop,
                        bytes: bytes(&mut data),
                    }
                }
                10..=12 => Op::Open {
                    conn,
                    peer: take_u8(&mut data).unwrap_or(0),
                },
                13..=15 => Op::Close { conn },
                16..=18 => Op::SslFd {
                    conn,
                    fd_slot: take_u8(&mut data).unwrap_or(0),
                },
                19..=21 => Op::SslFree { conn },
                22 => Op::Exit { conn },
                _ => Op::Data {
                    conn,
                    bytes: bytes(&mut data),
                },
            };
            ops.push((advance, op));
        }
        ops
    }

    /// Writes a script in the format [`parse`] reads.
    pub fn encode(ops: &[(u8, Op)]) -> Vec<u8> {
        let mut v = Vec::new();
        let bytes = |v: &mut Vec<u8>, b: &[u8]| {
            let n = b.len().min(u16::MAX as usize);
            v.extend_from_slice(&(n as u16).to_le_bytes());
            v.extend_from_slice(&b[..n]);
        };
        for (advance, op) in ops {
            let adv = (advance & 7) << 5;
            match op {
                Op::Data { conn, bytes: b } => {
                    v.extend_from_slice(&[adv, *conn]);
                    bytes(&mut v, b);
                }
                Op::DataAt {
                    conn,
                    offset,
                    total,
                    bytes: b,
                } => {
                    v.extend_from_slice(&[adv | 6, *conn]);
                    v.extend_from_slice(&offset.to_le_bytes());
                    v.extend_from_slice(&total.to_le_bytes());
                    bytes(&mut v, b);
                }
                Op::DataSplit {
                    conn,
                    piece,
                    drop,
                    bytes: b,
                } => {
                    v.extend_from_slice(&[adv | 8, *conn, *piece, *drop]);
                    bytes(&mut v, b);
                }
                Op::Open { conn, peer } => v.extend_from_slice(&[adv | 10, *conn, *peer]),
                Op::Close { conn } => v.extend_from_slice(&[adv | 13, *conn]),
                Op::SslFd { conn, fd_slot } => v.extend_from_slice(&[adv | 16, *conn, *fd_slot]),
                Op::SslFree { conn } => v.extend_from_slice(&[adv | 19, *conn]),
                Op::Exit { conn } => v.extend_from_slice(&[adv | 22, *conn]),
            }
        }
        v
    }

    fn meta(conn: u8, ts: u64) -> EventMeta {
        let slot = u64::from(conn & 7);
        let tls = conn & 0x20 != 0;
        EventMeta {
            pid: PIDS[usize::from(conn >> 3 & 3)],
            tid: 1,
            fd: 3 + i32::from(conn & 7),
            conn_id: if tls {
                0x7f00_0000_0000 + slot
            } else {
                0x1000 + slot
            },
            ts_ns: ts,
            comm: "client".to_owned(),
            container: None,
        }
    }

    fn direction(conn: u8) -> Direction {
        if conn & 0x40 != 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        }
    }

    fn chunk(conn: u8, ts: u64, offset: u32, total: u32, bytes: &[u8]) -> ProbeEvent {
        ProbeEvent::Data(DataChunk {
            meta: meta(conn, ts),
            direction: direction(conn),
            tls: conn & 0x20 != 0,
            offset,
            total_len: total,
            // The kernel flags a connection's next record after a lost one.
            lost_before: conn & 0x80 != 0,
            data: Bytes::copy_from_slice(bytes),
            api_key_id: None,
            mcp_session_id: None,
        })
    }

    /// Turns a script into probe events with monotonic timestamps (starting at 1 s).
    pub fn events(ops: &[(u8, Op)]) -> Vec<ProbeEvent> {
        let mut ts = 1_000_000_000u64;
        let mut out = Vec::new();
        for (advance, op) in ops {
            ts = ts.saturating_add(ADVANCE_NS[usize::from(advance & 7)]);
            match op {
                Op::Data { conn, bytes } => {
                    out.push(chunk(*conn, ts, 0, bytes.len() as u32, bytes));
                }
                Op::DataAt {
                    conn,
                    offset,
                    total,
                    bytes,
                } => {
                    out.push(chunk(*conn, ts, *offset, *total, bytes));
                }
                Op::DataSplit {
                    conn,
                    piece,
                    drop,
                    bytes,
                } => {
                    let piece = usize::from(*piece).max(1);
                    for (i, part) in bytes.chunks(piece).enumerate() {
                        if i + 1 == usize::from(*drop) {
                            continue;
                        }
                        let off = (i * piece) as u32;
                        out.push(chunk(*conn, ts, off, bytes.len() as u32, part));
                    }
                }
                Op::Open { conn, peer } => {
                    let peer = match peer % 3 {
                        0 => None,
                        1 => Some(std::net::SocketAddr::from((
                            [127, 0, 0, 1],
                            8000 + u16::from(*peer),
                        ))),
                        _ => Some(std::net::SocketAddr::from(([10, 0, 0, *peer], 443))),
                    };
                    let mut m = meta(*conn & !0x20, ts);
                    m.conn_id = 0x1000 + u64::from(conn & 7);
                    out.push(ProbeEvent::ConnOpen {
                        meta: m,
                        peer,
                        connect_ns: Some(ts.saturating_sub(1_000)),
                    });
                }
                Op::Close { conn } => {
                    let mut m = meta(*conn & !0x20, ts);
                    m.conn_id = 0x1000 + u64::from(conn & 7);
                    out.push(ProbeEvent::ConnClose { meta: m });
                }
                Op::SslFd { conn, fd_slot } => {
                    let mut m = meta(*conn | 0x20, ts);
                    m.fd = 3 + i32::from(fd_slot & 7);
                    out.push(ProbeEvent::SslFd { meta: m });
                }
                Op::SslFree { conn } => out.push(ProbeEvent::SslFree {
                    meta: meta(*conn | 0x20, ts),
                }),
                Op::Exit { conn } => out.push(ProbeEvent::ProcExit {
                    meta: meta(*conn, ts),
                }),
            }
        }
        out
    }
}

/// Checks that a record's numbers are what a record can hold: finite, not negative, and timings
/// inside the call's duration. Panics (a fuzz finding) otherwise.
pub fn check_call(c: &llmprobe::llm::LlmCall) {
    let d = c.duration_s;
    assert!(d.is_finite() && d >= 0.0, "duration {d}");
    let within = |name: &str, v: Option<f64>| {
        if let Some(v) = v {
            assert!(v.is_finite() && v >= 0.0, "{name} {v}");
            assert!(v <= d + 1e-9, "{name} {v} > duration {d}");
        }
    };
    within("ttft", c.ttft_s);
    within("reasoning", c.reasoning_s);
    within("tbt_p50", c.tbt_p50_s);
    within("tbt_p95", c.tbt_p95_s);
    within("tbt_max", c.tbt_max_s);
    if let Some(t) = c.tpot_s {
        assert!(t.is_finite() && t >= 0.0, "tpot {t}");
    }
    if let (Some(a), Some(b)) = (c.tbt_p50_s, c.tbt_max_s) {
        assert!(a <= b, "p50 {a} > max {b}");
    }
    assert_eq!(
        c.chunks.is_some(),
        c.stream == Some(true),
        "chunks only for streams"
    );
    assert!(!c.api.is_empty() && !c.operation.is_empty() && !c.provider.is_empty());
    assert!(
        c.detail.end_unix_ns >= c.detail.start_unix_ns,
        "end before start"
    );
    // The record is what JSONL writes: it must serialise.
    assert!(serde_json::to_string(c).is_ok());
}
