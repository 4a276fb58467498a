//! Incremental `Content-Encoding` decoding (gzip, deflate, br, zstd) of HTTP bodies as their bytes
//! arrive, so compressed token streams are timed per event like plain ones. Decoded output is
//! capped: a decompression bomb stops decoding and is reported, never grows memory.

use std::io::Write;

use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The encoding is not one llmprobe decodes (e.g. `zstd`, `compress`).
    Unsupported(String),
    /// The compressed bytes are corrupt.
    Corrupt,
    /// Decoded output exceeded the cap.
    TooLarge,
}

enum Inner {
    Gzip(GzDecoder<Vec<u8>>),
    Zlib(ZlibDecoder<Vec<u8>>),
    RawDeflate(DeflateDecoder<Vec<u8>>),
    /// `deflate` whose first byte has not arrived yet (zlib-wrapped or raw).
    DeflatePending,
    Brotli(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
}

/// Decodes one body.
pub struct BodyDecoder {
    inner: Inner,
    max_output: u64,
    produced: u64,
    failed: Option<DecodeError>,
}

impl BodyDecoder {
    /// A decoder for a `Content-Encoding` value; `Ok(None)` for identity (nothing to do).
    /// Multiple codings (`gzip, br`) are not supported.
    pub fn for_encoding(value: &str, max_output: u64) -> Result<Option<BodyDecoder>, DecodeError> {
        let v = value.trim().to_ascii_lowercase();
        let inner = match v.as_str() {
            "" | "identity" => return Ok(None),
            "gzip" | "x-gzip" => Inner::Gzip(GzDecoder::new(Vec::new())),
            "deflate" => Inner::DeflatePending,
            "br" => Inner::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                Vec::new(),
                4096,
            ))),
            "zstd" => match zstd::stream::write::Decoder::new(Vec::new()) {
                Ok(d) => Inner::Zstd(Box::new(d)),
                Err(_) => return Err(DecodeError::Unsupported("zstd".to_owned())),
            },
            other => return Err(DecodeError::Unsupported(other.to_owned())),
        };
        Ok(Some(BodyDecoder {
            inner,
            max_output,
            produced: 0,
            failed: None,
        }))
    }

    /// Decodes the next compressed bytes, appending plain bytes to `out`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if input.is_empty() {
            return Ok(());
        }
        if matches!(self.inner, Inner::DeflatePending) {
            // RFC 9110 `deflate` is zlib-wrapped; some servers send raw deflate. A zlib stream
            // starts with a CMF byte whose low nibble is 8 and (CMF*256+FLG) % 31 == 0.
            let zlib = input.len() >= 2
                && input[0] & 0x0f == 8
                && (u16::from(input[0]) * 256 + u16::from(input[1])) % 31 == 0;
            self.inner = if zlib || input.len() < 2 && input[0] == 0x78 {
                Inner::Zlib(ZlibDecoder::new(Vec::new()))
            } else {
                Inner::RawDeflate(DeflateDecoder::new(Vec::new()))
            };
        }
        let (res, buf) = match &mut self.inner {
            // flush() pushes out what the decoder holds back, so every event is seen on arrival.
            Inner::Gzip(d) => (d.write_all(input).and_then(|_| d.flush()), d.get_mut()),
            Inner::Zlib(d) => (d.write_all(input).and_then(|_| d.flush()), d.get_mut()),
            Inner::RawDeflate(d) => (d.write_all(input).and_then(|_| d.flush()), d.get_mut()),
            Inner::Brotli(d) => (d.write_all(input).and_then(|_| d.flush()), d.get_mut()),
            Inner::Zstd(d) => (d.write_all(input).and_then(|_| d.flush()), d.get_mut()),
            Inner::DeflatePending => return Ok(()),
        };
        let produced = buf.len() as u64;
        if self.produced + produced > self.max_output {
            buf.clear();
            self.failed = Some(DecodeError::TooLarge);
            return Err(DecodeError::TooLarge);
        }
        self.produced += produced;
        out.append(buf);
        if res.is_err() {
            self.failed = Some(DecodeError::Corrupt);
            return Err(DecodeError::Corrupt);
        }
        Ok(())
    }

    /// Plain bytes produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }
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
}
