//! Incremental `Content-Encoding` decoding (gzip, deflate, br, zstd) of HTTP bodies as their bytes
//! arrive, so compressed token streams are timed per event like plain ones.
//!
//! The compressed bytes come from other processes, so every decoder is bounded before it can
//! allocate, whatever a few KB of input ask for:
//! - decoded output: at most the caller's `max_output` per body and [`MAX_OUTPUT_PER_DECODE`] per
//!   call of [`BodyDecoder::decode`]; the decoders write into a sink that refuses the byte past
//!   either cap, so a bomb stops decoding ([`DecodeError::TooLarge`]) instead of growing a buffer;
//! - back-reference windows: zstd frames and brotli streams asking for a window over
//!   2^[`MAX_WINDOW_LOG`] bytes are refused ([`DecodeError::WindowTooLarge`]) before the window is
//!   allocated (zstd's `window_log_max`; brotli's WBITS read off the stream's first byte);
//!   gzip and deflate have a fixed 32 KiB window;
//! - decoder state over all bodies: each decoder reserves its encoding's worst case
//!   ([`reserved_bytes`]) from one process-wide budget, [`DECODER_MEMORY_BUDGET`], for as long
//!   as it lives; past it new bodies are undecodable ([`DecodeError::MemoryBudget`]).
//!
//! Worst case per compressed body: its window and tables (about 72 KiB for gzip/deflate,
//! 8 MiB + 2 MiB of Huffman tables for br, 8 MiB + 256 KiB for zstd) plus one decode call's
//! output (at most [`MAX_OUTPUT_PER_DECODE`]); over all bodies at most the budget.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};

/// Largest back-reference window accepted (log2 of bytes): 8 MiB. zstd levels up to 19 and
/// brotli's default (WBITS 22) stay under it; zstd `--long`/`--ultra` frames and brotli WBITS 24
/// are refused.
pub const MAX_WINDOW_LOG: u32 = 23;
/// Decoded bytes one call of [`BodyDecoder::decode`] may produce (one probe event carries at
/// most 16 KiB of compressed input; this is a ratio of 512, far above real JSON and SSE).
pub const MAX_OUTPUT_PER_DECODE: u64 = 8 << 20;
/// Decoder state all live decoders together may reserve, by default (a quarter of the agent's
/// default `--memory-limit`; [`set_memory_budget`] changes it).
pub const DECODER_MEMORY_BUDGET: u64 = 64 << 20;

/// The budget in force.
static BUDGET: AtomicU64 = AtomicU64::new(DECODER_MEMORY_BUDGET);

/// Sets the decoder state all live decoders together may reserve (the agent's share of
/// `--memory-limit` for decoders).
pub fn set_memory_budget(bytes: u64) {
    BUDGET.store(bytes, Ordering::Relaxed);
}

/// Decoder state reserved by the live decoders (see [`reserved_bytes`]).
static RESERVED: AtomicU64 = AtomicU64::new(0);

/// The decoder state one body of `encoding` may hold at worst: its window, tables and buffers.
fn worst_case_state(encoding: &str) -> u64 {
    match encoding {
        // miniz_oxide's inflate state (32 KiB window and tables) and flate2's 32 KiB buffer.
        "gzip" | "x-gzip" | "deflate" => 72 << 10,
        // The ring buffer (window) and up to 256 literal Huffman tables of 1080 entries.
        "br" => (1 << MAX_WINDOW_LOG) + (2 << 20),
        // The window plus a 128 KiB block buffer and the context.
        "zstd" => (1 << MAX_WINDOW_LOG) + (256 << 10),
        _ => 0,
    }
}

/// Decoder state reserved now by all live decoders of this process.
pub fn reserved_bytes() -> u64 {
    RESERVED.load(Ordering::Relaxed)
}

/// One decoder's share of [`DECODER_MEMORY_BUDGET`], given back when the decoder is dropped.
struct Reservation {
    bytes: u64,
    from: &'static AtomicU64,
}

impl Reservation {
    /// `bytes` out of `budget`, counted in `from`; None when they do not fit.
    fn take(from: &'static AtomicU64, budget: u64, bytes: u64) -> Option<Reservation> {
        from.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
            (r + bytes <= budget).then_some(r + bytes)
        })
        .ok()
        .map(|_| Reservation { bytes, from })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.from.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Where decoders write: refuses (with an error the decoder passes up) the byte past its room.
#[derive(Default)]
struct CappedSink {
    buf: Vec<u8>,
    room: u64,
    overflowed: bool,
}

impl Write for CappedSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() as u64 > self.room {
            self.overflowed = true;
            return Err(io::Error::other("decoded output over its cap"));
        }
        self.room -= data.len() as u64;
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The window a brotli stream asks for (log2 of bytes), read off its first byte (RFC 7932
/// §9.1: WBITS takes the first 1, 4 or 7 bits). None for the large-window marker, which only
/// a decoder told to accept it reads.
fn brotli_window_log(first: u8) -> Option<u32> {
    if first & 1 == 0 {
        return Some(16);
    }
    let n = u32::from((first >> 1) & 7);
    if n != 0 {
        return Some(17 + n);
    }
    match u32::from((first >> 4) & 7) {
        0 => Some(17),
        1 => None,
        n => Some(8 + n),
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The encoding is not one llmprobe decodes (e.g. `compress`).
    Unsupported(String),
    /// The compressed bytes are corrupt.
    Corrupt,
    /// Decoded output exceeded the cap.
    TooLarge,
    /// The stream asks for a back-reference window over 2^[`MAX_WINDOW_LOG`] bytes.
    WindowTooLarge,
    /// The live decoders already hold [`DECODER_MEMORY_BUDGET`].
    MemoryBudget,
}

enum Inner {
    Gzip(GzDecoder<CappedSink>),
    Zlib(ZlibDecoder<CappedSink>),
    RawDeflate(DeflateDecoder<CappedSink>),
    /// `deflate` whose first byte has not arrived yet (zlib-wrapped or raw).
    DeflatePending,
    Brotli(Box<brotli_decompressor::DecompressorWriter<CappedSink>>),
    /// `br` whose first byte (the window size) has not arrived yet.
    BrotliPending,
    Zstd(Box<zstd::stream::write::Decoder<'static, CappedSink>>),
}

/// Decodes one body.
pub struct BodyDecoder {
    inner: Inner,
    max_output: u64,
    produced: u64,
    failed: Option<DecodeError>,
    _reservation: Reservation,
}

impl BodyDecoder {
    /// A decoder for a `Content-Encoding` value; `Ok(None)` for identity (nothing to do).
    /// Multiple codings (`gzip, br`) are not supported.
    pub fn for_encoding(value: &str, max_output: u64) -> Result<Option<BodyDecoder>, DecodeError> {
        let v = value.trim().to_ascii_lowercase();
        let inner = match v.as_str() {
            "" | "identity" => return Ok(None),
            "gzip" | "x-gzip" => Inner::Gzip(GzDecoder::new(CappedSink::default())),
            "deflate" => Inner::DeflatePending,
            "br" => Inner::BrotliPending,
            "zstd" => {
                let mut d = zstd::stream::write::Decoder::new(CappedSink::default())
                    .map_err(|_| DecodeError::Unsupported("zstd".to_owned()))?;
                d.window_log_max(MAX_WINDOW_LOG)
                    .map_err(|_| DecodeError::Unsupported("zstd".to_owned()))?;
                Inner::Zstd(Box::new(d))
            }
            other => return Err(DecodeError::Unsupported(other.to_owned())),
        };
        let budget = BUDGET.load(Ordering::Relaxed);
        let reservation = Reservation::take(&RESERVED, budget, worst_case_state(&v))
            .ok_or(DecodeError::MemoryBudget)?;
        Ok(Some(BodyDecoder {
            inner,
            max_output,
            produced: 0,
            failed: None,
            _reservation: reservation,
        }))
    }

    fn fail(&mut self, e: DecodeError) -> Result<(), DecodeError> {
        self.failed = Some(e.clone());
        Err(e)
    }

    /// Decodes the next compressed bytes, appending plain bytes to `out` (what was decoded
    /// before an error is appended too).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(&first) = input.first() else {
            return Ok(());
        };
        if matches!(self.inner, Inner::DeflatePending) {
            // RFC 9110 `deflate` is zlib-wrapped; some servers send raw deflate. A zlib stream
            // starts with a CMF byte whose low nibble is 8 and (CMF*256+FLG) % 31 == 0.
            let zlib = input.len() >= 2
                && input[0] & 0x0f == 8
                && (u16::from(input[0]) * 256 + u16::from(input[1])) % 31 == 0;
            self.inner = if zlib || input.len() < 2 && input[0] == 0x78 {
                Inner::Zlib(ZlibDecoder::new(CappedSink::default()))
            } else {
                Inner::RawDeflate(DeflateDecoder::new(CappedSink::default()))
            };
        }
        if matches!(self.inner, Inner::BrotliPending) {
            match brotli_window_log(first) {
                Some(log) if log <= MAX_WINDOW_LOG => {}
                _ => return self.fail(DecodeError::WindowTooLarge),
            }
            self.inner = Inner::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                CappedSink::default(),
                4096,
            )));
        }
        let room = (self.max_output - self.produced).min(MAX_OUTPUT_PER_DECODE);
        let (res, sink) = match &mut self.inner {
            // flush() pushes out what the decoder holds back, so every event is seen on arrival.
            Inner::Gzip(d) => {
                d.get_mut().room = room;
                (d.write_all(input).and_then(|_| d.flush()), d.get_mut())
            }
            Inner::Zlib(d) => {
                d.get_mut().room = room;
                (d.write_all(input).and_then(|_| d.flush()), d.get_mut())
            }
            Inner::RawDeflate(d) => {
                d.get_mut().room = room;
                (d.write_all(input).and_then(|_| d.flush()), d.get_mut())
            }
            Inner::Brotli(d) => {
                d.get_mut().room = room;
                (d.write_all(input).and_then(|_| d.flush()), d.get_mut())
            }
            Inner::Zstd(d) => {
                d.get_mut().room = room;
                (d.write_all(input).and_then(|_| d.flush()), d.get_mut())
            }
            Inner::DeflatePending | Inner::BrotliPending => return Ok(()),
        };
        let overflowed = sink.overflowed;
        self.produced += sink.buf.len() as u64;
        out.append(&mut sink.buf);
        match res {
            Ok(()) => Ok(()),
            Err(_) if overflowed => self.fail(DecodeError::TooLarge),
            Err(e) if is_window_refusal(&e) => self.fail(DecodeError::WindowTooLarge),
            Err(_) => self.fail(DecodeError::Corrupt),
        }
    }

    /// Plain bytes produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }
}

/// zstd's "Frame requires too much memory for decoding" (a window over `window_log_max`).
fn is_window_refusal(e: &io::Error) -> bool {
    e.to_string().contains("too much memory")
}

/// Bits, least significant first (RFC 7932's order).
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    bit: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, bits: u32) {
        for i in 0..bits {
            if self.bit == 0 {
                self.out.push(0);
            }
            if let Some(last) = self.out.last_mut() {
                *last |= (((value >> i) & 1) as u8) << self.bit;
            }
            self.bit = (self.bit + 1) % 8;
        }
    }
}

/// A hand-built brotli bomb (no brotli encoder is at hand), for the tests and the fuzzer's
/// seeds: a 64 KiB window, then `metablocks` meta-blocks of 16 MiB of `a`, each ~11
/// bytes: one-symbol prefix codes (0 bits per symbol) and one command per meta-block that
/// inserts "aaaa" and copies 16 MiB - 4 from distance 4.
pub fn brotli_bomb(metablocks: u32) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.put(0, 1); // WBITS 16
    for _ in 0..metablocks {
        w.put(0, 1); // ISLAST
        w.put(2, 2); // MNIBBLES: 6
        w.put((1 << 24) - 1, 24); // MLEN - 1
        w.put(0, 1); // ISUNCOMPRESSED
        w.put(0, 3); // NBLTYPESL, NBLTYPESI, NBLTYPESD: 1 each
        w.put(0, 2); // NPOSTFIX
        w.put(0, 4); // NDIRECT
        w.put(0, 2); // literal context mode
        w.put(0, 2); // NTREESL 1, NTREESD 1
        for (symbol, bits) in [(u32::from(b'a'), 8), (423, 10), (0, 6)] {
            w.put(1, 2); // simple prefix code
            w.put(0, 2); // one symbol
            w.put(symbol, bits);
        }
        // Command 423: insert code 4 (4 literals, no extra bits), copy code 23 (2118 + 24
        // extra bits), then an explicit distance: code 0, the last distance (4).
        w.put((1 << 24) - 4 - 2118, 24);
    }
    w.put(1, 1); // ISLAST
    w.put(1, 1); // ISLASTEMPTY
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = e.write_all(data);
        e.finish().unwrap_or_default()
    }

    fn decode_in_pieces(
        enc: &str,
        compressed: &[u8],
        piece: usize,
    ) -> Result<Vec<u8>, DecodeError> {
        let mut d = BodyDecoder::for_encoding(enc, 1 << 20)?.ok_or(DecodeError::Corrupt)?;
        let mut out = Vec::new();
        for c in compressed.chunks(piece) {
            d.decode(c, &mut out)?;
        }
        Ok(out)
    }

    const SSE: &[u8] =
        b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\ndata: [DONE]\n\n";

    #[test]
    fn gzip_in_any_pieces() {
        let c = gzip(SSE);
        for piece in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(
                decode_in_pieces("gzip", &c, piece).as_deref(),
                Ok(SSE),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn deflate_zlib_and_raw() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = z.write_all(SSE);
        let z = z.finish().unwrap_or_default();
        assert_eq!(decode_in_pieces("deflate", &z, 5).as_deref(), Ok(SSE));
        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = r.write_all(SSE);
        let r = r.finish().unwrap_or_default();
        assert_eq!(decode_in_pieces("deflate", &r, 5).as_deref(), Ok(SSE));
    }

    #[test]
    fn brotli_stream() {
        // "Hello, brotli!" as compressed by the reference brotli encoder (Python `brotli.compress`).
        let data: &[u8] = &[
            0x8b, 0x06, 0x80, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x2c, 0x20, 0x62, 0x72, 0x6f, 0x74,
            0x6c, 0x69, 0x21, 0x03,
        ];
        assert_eq!(
            decode_in_pieces("br", data, 1).as_deref(),
            Ok(&b"Hello, brotli!"[..])
        );
    }

    #[test]
    fn zstd_in_any_pieces() {
        let c = zstd::stream::encode_all(SSE, 3).unwrap_or_default();
        for piece in [1, 5, 4096] {
            assert_eq!(
                decode_in_pieces("zstd", &c, piece).as_deref(),
                Ok(SSE),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn identity_unsupported_corrupt_and_bombs() {
        assert!(matches!(
            BodyDecoder::for_encoding("identity", 10),
            Ok(None)
        ));
        assert_eq!(
            BodyDecoder::for_encoding("compress", 10).err(),
            Some(DecodeError::Unsupported("compress".into()))
        );
        assert_eq!(
            decode_in_pieces("gzip", b"\x1f\x8b\x08\x00garbage-garbage-garbage", 4),
            Err(DecodeError::Corrupt)
        );
        let bomb = gzip(&vec![b'a'; 4 << 20]);
        let mut d = BodyDecoder::for_encoding("gzip", 1 << 20)
            .ok()
            .flatten()
            .expect("decoder");
        let mut out = Vec::new();
        let mut res = Ok(());
        for c in bomb.chunks(1024) {
            res = d.decode(c, &mut out);
            if res.is_err() {
                break;
            }
        }
        assert_eq!(res, Err(DecodeError::TooLarge));
        assert!(out.len() <= 1 << 20);
    }

    #[test]
    fn one_chunk_bombs_stop_at_the_per_call_cap() {
        // 64 MiB of zeros compress to a few KB: one decode call must not produce all of it.
        let plain = vec![0u8; 64 << 20];
        let bombs = [
            (
                "zstd",
                zstd::stream::encode_all(&plain[..], 3).unwrap_or_default(),
            ),
            ("gzip", gzip(&plain)),
        ];
        for (enc, bomb) in bombs {
            assert!(bomb.len() < (1 << 20), "{enc} bomb is {} bytes", bomb.len());
            let mut d = BodyDecoder::for_encoding(enc, 1 << 30)
                .ok()
                .flatten()
                .expect("decoder");
            let mut out = Vec::new();
            assert_eq!(
                d.decode(&bomb, &mut out),
                Err(DecodeError::TooLarge),
                "{enc}"
            );
            assert!(
                out.len() as u64 <= MAX_OUTPUT_PER_DECODE,
                "{enc}: {}",
                out.len()
            );
            assert_eq!(d.produced(), out.len() as u64);
            // A failed decoder stays failed.
            assert_eq!(d.decode(b"x", &mut out), Err(DecodeError::TooLarge));
        }
    }

    #[test]
    fn zstd_frames_asking_for_a_large_window_are_refused() {
        for (window_log, refused) in [
            (MAX_WINDOW_LOG, false),
            (MAX_WINDOW_LOG + 1, true),
            (27, true),
        ] {
            // A streamed frame (no content size) declares its window in its header.
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
            e.window_log(window_log).expect("window_log");
            let _ = e.write_all(SSE);
            let frame = e.finish().unwrap_or_default();
            for piece in [1, 3, frame.len()] {
                let got = decode_in_pieces("zstd", &frame, piece);
                if refused {
                    assert_eq!(
                        got,
                        Err(DecodeError::WindowTooLarge),
                        "log {window_log} piece {piece}"
                    );
                } else {
                    assert_eq!(got.as_deref(), Ok(SSE), "log {window_log} piece {piece}");
                }
            }
        }
    }

    #[test]
    fn a_brotli_bomb_stops_at_the_caps() {
        let bomb = brotli_bomb(64);
        assert!(bomb.len() < 1024, "{} bytes", bomb.len());
        // It is a real bomb: 13 bytes make 16 MiB of `a`, stopped at the per-call cap.
        let one = brotli_bomb(1);
        let mut d = BodyDecoder::for_encoding("br", 1 << 30)
            .ok()
            .flatten()
            .expect("decoder");
        let (mut out, mut res) = (Vec::new(), Ok(()));
        for c in one.chunks(3) {
            res = d.decode(c, &mut out);
        }
        assert_eq!(res, Err(DecodeError::TooLarge));
        assert_eq!(out.len() as u64, MAX_OUTPUT_PER_DECODE);
        assert!(out.iter().all(|&b| b == b'a'));
        // The bomb: the per-call cap, then the per-body cap.
        for (max_output, cap) in [(1 << 30, MAX_OUTPUT_PER_DECODE), (1 << 20, 1 << 20)] {
            let mut d = BodyDecoder::for_encoding("br", max_output)
                .ok()
                .flatten()
                .expect("decoder");
            let mut out = Vec::new();
            assert_eq!(d.decode(&bomb, &mut out), Err(DecodeError::TooLarge));
            assert!(out.len() as u64 <= cap, "{}", out.len());
        }
    }

    #[test]
    fn brotli_window_is_read_off_the_first_byte() {
        // Every first byte: WBITS as RFC 7932 §9.1 encodes it.
        for b in 0..=255u8 {
            let want = if b & 1 == 0 {
                Some(16)
            } else if (b >> 1) & 7 != 0 {
                Some(17 + u32::from((b >> 1) & 7))
            } else {
                match (b >> 4) & 7 {
                    0 => Some(17),
                    1 => None,
                    n => Some(8 + u32::from(n)),
                }
            };
            assert_eq!(brotli_window_log(b), want, "{b:#04x}");
        }
        // WBITS 24 (0x0f: 1, then 7) and the large-window marker (0x11) are refused.
        for first in [0x0fu8, 0x11] {
            let mut d = BodyDecoder::for_encoding("br", 1 << 20)
                .ok()
                .flatten()
                .expect("decoder");
            let mut out = Vec::new();
            assert_eq!(
                d.decode(&[first, 0, 0, 0], &mut out),
                Err(DecodeError::WindowTooLarge)
            );
            assert!(out.is_empty());
        }
    }

    #[test]
    fn reservations_stay_within_their_budget_and_are_given_back() {
        // Its own counter: the process-wide one is shared with the tests running meanwhile.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (budget, per) = (DECODER_MEMORY_BUDGET, worst_case_state("zstd"));
        let mut held = Vec::new();
        while let Some(r) = Reservation::take(&COUNTER, budget, per) {
            held.push(r);
            assert!(held.len() as u64 <= budget / per, "budget not enforced");
        }
        assert_eq!(held.len() as u64, budget / per);
        assert_eq!(COUNTER.load(Ordering::Relaxed), held.len() as u64 * per);
        // The small state of a gzip body still fits where a zstd one no longer does.
        let gz = Reservation::take(&COUNTER, budget, worst_case_state("gzip"));
        assert!(gz.is_some());
        drop(gz);
        drop(held);
        assert_eq!(COUNTER.load(Ordering::Relaxed), 0);
        assert!(Reservation::take(&COUNTER, budget, per).is_some());
        assert_eq!(COUNTER.load(Ordering::Relaxed), 0);
    }
}
