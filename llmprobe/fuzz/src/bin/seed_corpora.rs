//! Writes the seed corpora of the fuzz targets from the recorded captures in `tests/fixtures`:
//! `seed_corpora FIXTURES_DIR CORPUS_DIR`. Each target gets real traffic in its own input format
//! (see the crate docs): per connection the request and response byte streams (`http1`), the
//! decoded response bodies by kind (`sse`, `ndjson`, `json_array`), those bodies compressed with
//! each coding (`encoding`), each exchange as a `dialects` case, each capture as a `tracker`
//! script and as text (`capture`), ring-buffer records (`ringbuf`), a small shared object that
//! defines OpenSSL's functions (`elf`, when a C compiler is present), small Go-like ELF files of
//! each pclntab layout (`golang`) and requests around a secret
//! header (`masker`). Deterministic: the same fixtures give the same files. Run by
//! `cargo xtask fuzz` before fuzzing; the files are not committed.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use llmprobe::probes::capture::read_capture;
use llmprobe::probes::events::{Direction, ProbeEvent};
use llmprobe::protocol::encoding::BodyDecoder;
use llmprobe::protocol::http1::{Http1Parser, HttpEvent, MessageKind, RequestHead, ResponseHead};
use llmprobe_fuzz::dialect::{ENCODINGS, PATHS, STATUSES, TYPES};
use llmprobe_fuzz::encode_input;
use llmprobe_fuzz::script::{self, Op};

/// Largest seed written (libFuzzer's default `-max_len` follows the largest seed).
const MAX_SEED: usize = 64 * 1024;

struct Corpus {
    root: PathBuf,
    written: HashMap<String, usize>,
}

impl Corpus {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        if bytes.len() > MAX_SEED {
            return;
        }
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        *self.written.entry(target.to_owned()).or_default() += 1;
    }
}

/// One connection direction's bytes, in arrival order (offsets ignored: fixtures lose nothing).
#[derive(Default)]
struct Conn {
    egress: Vec<u8>,
    ingress: Vec<u8>,
}

struct Exchange {
    req: RequestHead,
    req_body: Vec<u8>,
    resp: Option<ResponseHead>,
    resp_body: Vec<u8>,
}

fn parse(kind: MessageKind, bytes: &[u8]) -> Vec<HttpEvent> {
    let mut p = Http1Parser::new(kind);
    let mut out = Vec::new();
    let _ = p.feed(bytes, &mut out);
    p.finish(&mut out);
    out
}

/// Pairs the requests and responses of one connection.
fn exchanges(req_stream: &[u8], resp_stream: &[u8]) -> Vec<Exchange> {
    let mut ex: Vec<Exchange> = Vec::new();
    for ev in parse(MessageKind::Request, req_stream) {
        match ev {
            HttpEvent::RequestHead(h) => ex.push(Exchange {
                req: h,
                req_body: Vec::new(),
                resp: None,
                resp_body: Vec::new(),
            }),
            HttpEvent::Body(b) => {
                if let Some(e) = ex.last_mut() {
                    e.req_body.extend_from_slice(&b);
                }
            }
            _ => {}
        }
    }
    let mut i = 0;
    for ev in parse(MessageKind::Response, resp_stream) {
        match ev {
            HttpEvent::ResponseHead(h) => {
                if let Some(e) = ex.get_mut(i) {
                    e.resp = Some(h);
                }
            }
            HttpEvent::Body(b) => {
                if let Some(e) = ex.get_mut(i) {
                    e.resp_body.extend_from_slice(&b);
                }
            }
            HttpEvent::MessageEnd => i += 1,
            _ => {}
        }
    }
    ex
}

fn decoded(e: &Exchange) -> Vec<u8> {
    let Some(resp) = &e.resp else {
        return Vec::new();
    };
    match resp
        .header("content-encoding")
        .map(|enc| BodyDecoder::for_encoding(enc, 8 << 20))
    {
        Some(Ok(Some(mut d))) => {
            let mut out = Vec::new();
            let _ = d.decode(&e.resp_body, &mut out);
            out
        }
        _ => e.resp_body.clone(),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).unwrap_or_default()
}

fn index_of(table: &[&str], value: &str) -> Option<usize> {
    table.iter().position(|t| t.eq_ignore_ascii_case(value))
}

/// The `dialects` path index closest to a recorded path (same route, else same ending).
fn path_index(path: &str) -> usize {
    let route = |p: &str| {
        p.split('?')
            .next()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_owned()
    };
    let r = route(path);
    PATHS
        .iter()
        .position(|p| route(p) == r)
        .or_else(|| {
            PATHS
                .iter()
                .position(|p| r.ends_with(&route(p)) || route(p).ends_with(&r))
        })
        .or_else(|| {
            let last = r.rsplit(['/', ':']).next().unwrap_or("");
            PATHS.iter().position(|p| route(p).ends_with(last))
        })
        .unwrap_or(14)
}

fn dialect_case(e: &Exchange) -> Option<Vec<u8>> {
    let resp = e.resp.as_ref()?;
    let status = STATUSES.iter().position(|s| *s == resp.status).unwrap_or(2);
    let ctype = resp.header("content-type").unwrap_or("");
    let ty = index_of(&TYPES, ctype)
        .or_else(|| index_of(&TYPES, ctype.split(';').next().unwrap_or("").trim()))
        .unwrap_or(3);
    let enc = index_of(&ENCODINGS, resp.header("content-encoding").unwrap_or("")).unwrap_or(0);
    let mut d = vec![
        path_index(&e.req.path) as u8,
        (status | ty << 2 | enc << 5) as u8,
    ];
    let n = e.req_body.len().min(u16::MAX as usize);
    d.extend_from_slice(&(n as u16).to_le_bytes());
    d.extend_from_slice(&e.req_body[..n]);
    d.extend_from_slice(&e.resp_body);
    // Mode: the response ends, with host and traceparent headers.
    Some(encode_input(1 | 8, 0x5eed, &d))
}

/// The script slot of a key (first come, first numbered; wraps at `script::SLOTS`).
fn slot<K: std::hash::Hash + Eq>(key: K, map: &mut HashMap<K, u8>) -> u8 {
    let n = map.len() as u8;
    *map.entry(key).or_insert(n % script::SLOTS)
}

/// The capture as a tracker script: each (pid, fd) and `SSL*` gets a slot of the script.
fn tracker_script(events: &[ProbeEvent]) -> Vec<u8> {
    let mut pids: HashMap<u32, u8> = HashMap::new();
    let mut fds: HashMap<(u32, i32), u8> = HashMap::new();
    let mut ssls: HashMap<(u32, u64), u8> = HashMap::new();
    let mut ops = Vec::new();
    let mut last_ts = None;
    let pid_idx = |pid: u32, pids: &mut HashMap<u32, u8>| {
        let n = pids.len() as u8;
        *pids.entry(pid).or_insert(n % 4)
    };
    for ev in events {
        let m = ev.meta();
        let advance = match last_ts {
            None => 0,
            Some(t) => match m.ts_ns.saturating_sub(t) {
                0 => 0,
                1..=49_999 => 1,
                50_000..=999_999 => 2,
                1_000_000..=19_999_999 => 3,
                20_000_000..=1_099_999_999 => 4,
                _ => 5,
            },
        };
        last_ts = Some(m.ts_ns);
        let p = pid_idx(m.pid, &mut pids);
        let conn = |tls: bool,
                    ingress: bool,
                    fds: &mut HashMap<(u32, i32), u8>,
                    ssls: &mut HashMap<(u32, u64), u8>| {
            let s = if tls {
                slot((m.pid, m.conn_id), ssls)
            } else {
                slot((m.pid, m.fd), fds)
            };
            script::conn_byte(s, p, tls, ingress)
        };
        let op = match ev {
            ProbeEvent::Data(d) => {
                let c = conn(
                    d.tls,
                    d.direction == Direction::Ingress,
                    &mut fds,
                    &mut ssls,
                );
                if d.offset == 0 && d.total_len as usize == d.data.len() {
                    Op::Data {
                        conn: c,
                        bytes: d.data.to_vec(),
                    }
                } else {
                    Op::DataAt {
                        conn: c,
                        offset: d.offset,
                        total: d.total_len,
                        bytes: d.data.to_vec(),
                    }
                }
            }
            ProbeEvent::ConnOpen { meta, .. } => Op::Open {
                conn: conn(false, false, &mut fds, &mut ssls),
                peer: (meta.fd as u8 % 2) + 1,
            },
            ProbeEvent::ConnClose { .. } => Op::Close {
                conn: conn(false, false, &mut fds, &mut ssls),
            },
            ProbeEvent::SslFd { meta } => {
                let c = conn(true, false, &mut fds, &mut ssls);
                Op::SslFd {
                    conn: c,
                    fd_slot: slot((meta.pid, meta.fd), &mut fds),
                }
            }
            ProbeEvent::SslFree { .. } => Op::SslFree {
                conn: conn(true, false, &mut fds, &mut ssls),
            },
            ProbeEvent::ProcExit { .. } => Op::Exit {
                conn: conn(false, false, &mut fds, &mut ssls),
            },
            ProbeEvent::ExecMap { .. } | ProbeEvent::TlsStart { .. } => continue,
        };
        ops.push((advance, op));
    }
    let mut v = vec![0u8];
    v.extend_from_slice(&script::encode(&ops));
    v
}

fn ring_records() -> Vec<(&'static str, Vec<u8>)> {
    use llmprobe_common::{self as abi, Record as _};
    let hdr = |kind| abi::EventHeader {
        kind,
        tgid: 4242,
        tid: 4243,
        fd: 5,
        conn_id: 0x7f00_1234,
        ts_ns: 1_000_000,
    };
    let mut comm = [0u8; abi::COMM_LEN];
    comm[..6].copy_from_slice(b"python");
    let control = |kind| abi::ControlEvent {
        hdr: hdr(kind),
        comm,
    };
    let payload = b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n\r\n";
    let head = abi::DataHeader {
        hdr: hdr(abi::EVENT_DATA),
        direction: abi::DIR_EGRESS,
        source: abi::SRC_TLS,
        flags: 0,
        _pad: 0,
        len: payload.len() as u32,
        offset: 0,
        total_len: payload.len() as u32,
    };
    let mut data = head.as_bytes().to_vec();
    data.extend_from_slice(payload);
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[10, 0, 0, 1]);
    let open = |family| {
        abi::ConnOpenEvent {
            ctl: control(abi::EVENT_CONN_OPEN),
            family,
            port: 443,
            flags: abi::OPEN_FLAG_CONNECT,
            addr,
            start_ns: 1,
        }
        .as_bytes()
        .to_vec()
    };
    let ctl = |kind| control(kind).as_bytes().to_vec();
    vec![
        ("data", data),
        ("open4", open(2)),
        ("open6", open(10)),
        ("close", ctl(abi::EVENT_CONN_CLOSE)),
        ("sslfd", ctl(abi::EVENT_SSL_FD)),
        ("tlsstart", ctl(abi::EVENT_TLS_START)),
        ("exit", ctl(abi::EVENT_PROC_EXIT)),
    ]
}

/// A small shared object defining OpenSSL's I/O functions, built with the C compiler.
fn tls_library(scratch: &Path) -> Option<Vec<u8>> {
    let c = scratch.join("fake_ssl.c");
    let so = scratch.join("fake_ssl.so");
    std::fs::write(
        &c,
        "int SSL_read(void){return 1;} int SSL_read_ex(void){return 2;} int SSL_write(void){return 3;}\n\
         int SSL_write_ex(void){return 4;} void SSL_free(void){}\n",
    )
    .ok()?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let ok = std::process::Command::new(cc)
        .args([
            "-shared",
            "-fPIC",
            "-Os",
            "-nostdlib",
            "-Wl,-z,noseparate-code",
            "-Wl,--build-id=none",
            "-o",
        ])
        .arg(&so)
        .arg(&c)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    std::fs::read(&so).ok()
}

/// Masker inputs: the fixture's other header lines around a secret header, its body after it.
fn masker_case(e: &Exchange, variant: u8) -> Vec<u8> {
    let mut lines = Vec::new();
    for (n, v) in &e.req.headers {
        lines.extend_from_slice(format!("{n}: {v}\n").as_bytes());
    }
    lines.pop();
    let half = lines.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut d = vec![variant, 40];
    d.extend_from_slice(&lines[..half]);
    d.push(0xff);
    d.extend_from_slice(&lines[half..]);
    d.push(0xff);
    d.extend_from_slice(&e.req_body[..e.req_body.len().min(512)]);
    encode_input(0, 0x5eed ^ u64::from(variant), &d)
}

/// An HTTP/2 client stream: the preface, SETTINGS, the RFC 7541 C.4 request blocks (Huffman,
/// dynamic table), a request split by CONTINUATION, padded DATA and a reset.
fn h2_client_seed() -> Vec<u8> {
    use llmprobe::protocol::http2::{PREFACE, frame};
    let mut v = PREFACE.to_vec();
    v.extend(frame(4, 0, 0, &[0, 1, 0, 0, 0x10, 0, 0, 5, 0, 0, 0x40, 0]));
    let blocks: [&[u8]; 3] = [
        &[0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff],
        &[0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf],
        &[0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f, 0x89, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf],
    ];
    v.extend(frame(1, 4, 1, blocks[0]));
    v.extend(frame(1, 0, 3, &blocks[1][..4]));
    v.extend(frame(9, 4, 3, &blocks[1][4..]));
    v.extend(frame(0, 8, 1, b"\x02{\"model\":\"m\"}\0\0"));
    v.extend(frame(0, 1, 1, b""));
    v.extend(frame(3, 0, 3, &[0, 0, 0, 8]));
    v.extend(frame(1, 5, 5, blocks[2]));
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [fixtures, root] = args.as_slice() else {
        eprintln!("usage: seed_corpora FIXTURES_DIR CORPUS_DIR");
        std::process::exit(2);
    };
    let mut corpus = Corpus {
        root: PathBuf::from(root),
        written: HashMap::new(),
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures)
        .unwrap_or_else(|e| panic!("{fixtures}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".capture.jsonl"))
        .collect();
    names.sort();
    corpus.put(
        "sni",
        "openssl3",
        include_bytes!("../../../src/probes/sni_fixtures/openssl3-api.anthropic.com.bin"),
    );
    corpus.put("http2", "client", &encode_input(0, 0x5eed, &h2_client_seed()));
    // Text with a secret of every built-in redaction rule, and tags (all mode bits).
    for (i, text) in [
        "mail jane.doe@example.com, call +1 (555) 123-4567 or 555-123-4567",
        "我的手机号是13812345678，身份证11010519491231002X，卡号6011111111111117。",
        "card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, GB82WEST12345698765432",
        "{\"key\":\"sk-proj-Ab3dEfGh1jKlMnOpQrStUvWxYz0123456789\",\"aws\":\"AKIAIOSFODNN7EXAMPLE\"}",
        "?key=AIzaSyA-1234567890abcdefghijklmnopqrstu&t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
        "550e8400-e29b-41d4-a716-446655440000 2024-01-15 10:30:00 v1.2.3 10.0.0.1 TKT-123456",
        "[REDACTED:email] a@b.com13812345678 [REDACTED:",
    ]
    .iter()
    .enumerate()
    {
        corpus.put(
            "redact",
            &format!("text-{i}"),
            &encode_input(7, 0x5eed + i as u64, text.as_bytes()),
        );
    }
    let mut masker_variant = 0u8;
    for path in &names {
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.trim_end_matches(".capture.jsonl").to_owned())
            .unwrap_or_default();
        let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        corpus.put("capture", &stem, &text);
        let Ok((_, events)) = read_capture(BufReader::new(&text[..])) else {
            eprintln!(
                "seed_corpora: {} does not read as a capture; skipped",
                path.display()
            );
            continue;
        };
        corpus.put("tracker", &stem, &tracker_script(&events));
        let mut conns: Vec<((u32, u64), Conn)> = Vec::new();
        for ev in &events {
            if let ProbeEvent::Data(d) = ev {
                let key = (d.meta.pid, d.meta.conn_id);
                let i = match conns.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        conns.push((key, Conn::default()));
                        conns.len() - 1
                    }
                };
                let c = &mut conns[i].1;
                match d.direction {
                    Direction::Egress => c.egress.extend_from_slice(&d.data),
                    Direction::Ingress => c.ingress.extend_from_slice(&d.data),
                }
            }
        }
        for (n, (_, c)) in conns.iter().enumerate() {
            let (req, resp) = if c.egress.starts_with(b"HTTP/1.") {
                (&c.ingress, &c.egress)
            } else {
                (&c.egress, &c.ingress)
            };
            if req.is_empty() && resp.is_empty() {
                continue;
            }
            let name = format!("{stem}-{n}");
            corpus.put(
                "http1",
                &format!("{name}-req"),
                &encode_input(0, 0x5eed, req),
            );
            corpus.put(
                "http1",
                &format!("{name}-resp"),
                &encode_input(1, 0x5eed, resp),
            );
            for (k, e) in exchanges(req, resp).iter().enumerate() {
                let name = format!("{name}-{k}");
                if let Some(case) = dialect_case(e) {
                    corpus.put("dialects", &name, &case);
                }
                if masker_variant < 16 {
                    corpus.put("masker", &name, &masker_case(e, masker_variant));
                    masker_variant += 1;
                }
                let body = decoded(e);
                let ctype = e
                    .resp
                    .as_ref()
                    .and_then(|r| r.header("content-type"))
                    .unwrap_or("");
                if body.is_empty() {
                    continue;
                }
                corpus.put("redact", &name, &encode_input(0, 0x5eed, &body));
                if ctype.contains("event-stream") {
                    corpus.put("sse", &name, &encode_input(0, 0x5eed, &body));
                } else if ctype.contains("ndjson") {
                    corpus.put("ndjson", &name, &encode_input(0, 0x5eed, &body));
                } else if body.trim_ascii_start().starts_with(b"[") {
                    corpus.put("json_array", &name, &encode_input(0, 0x5eed, &body));
                }
                // Every coding of every streamed body (mode: coding index, largest cap).
                if ctype.contains("event-stream") || ctype.contains("ndjson") {
                    let cap = 3 << 3;
                    corpus.put(
                        "encoding",
                        &format!("{name}-gzip"),
                        &encode_input(cap, 1, &gzip(&body)),
                    );
                    corpus.put(
                        "encoding",
                        &format!("{name}-zlib"),
                        &encode_input(cap | 1, 1, &zlib(&body)),
                    );
                    corpus.put(
                        "encoding",
                        &format!("{name}-deflate"),
                        &encode_input(cap | 1, 1, &raw_deflate(&body)),
                    );
                    corpus.put(
                        "encoding",
                        &format!("{name}-zstd"),
                        &encode_input(cap | 3, 1, &zstd(&body)),
                    );
                }
            }
        }
    }
    // Brotli: the empty stream and a small text (no encoder is linked here).
    corpus.put(
        "encoding",
        "br-empty",
        &encode_input(2 | 3 << 3, 1, &[0x06]),
    );
    corpus.put(
        "encoding",
        "br-text",
        &encode_input(2 | 3 << 3, 1, b"\x0b\x02\x80data: hi\n\n\x03"),
    );
    for (name, rec) in ring_records() {
        corpus.put("ringbuf", name, &rec);
    }
    let scratch = std::env::temp_dir().join(format!("llmprobe-seed-{}", std::process::id()));
    if std::fs::create_dir_all(&scratch).is_ok() {
        match tls_library(&scratch) {
            Some(so) => corpus.put("elf", "fake_ssl", &so),
            None => eprintln!(
                "seed_corpora: no C compiler: the elf corpus starts from other ELF files only"
            ),
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
    for lib in [
        "/lib/x86_64-linux-gnu/libdl.so.2",
        "/lib/x86_64-linux-gnu/librt.so.1",
    ] {
        if let Ok(b) = std::fs::read(lib) {
            let name = Path::new(lib)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("lib");
            corpus.put("elf", name, &b);
        }
    }
    {
        use llmprobe::probes::golang::{SynthLayout, synthetic_go_elf};
        for (name, layout) in [
            ("go116", SynthLayout::Go116),
            ("go120", SynthLayout::Go120),
            ("go126", SynthLayout::Go126),
        ] {
            corpus.put("golang", name, &synthetic_go_elf(layout));
        }
    }
    let mut counts: Vec<_> = corpus.written.into_iter().collect();
    counts.sort();
    let summary: Vec<String> = counts.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!("seeds: {}", summary.join(", "));
}
