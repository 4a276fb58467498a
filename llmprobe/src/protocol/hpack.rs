//! HPACK header block decoding (RFC 7541), for the HTTP/2 parser ([`super::http2`]).
//!
//! Stage: inside the tracker, on bytes other processes chose. Written here rather than taken from
//! a crate because the maintained decoders rebuild their Huffman tables for every string (a
//! two-byte field cost ~18 µs: a 64 KiB header block of them kept a core busy for 0.6 s), and
//! because a decoder that holds other processes' credentials should zero what it drops.
//!
//! Invariants:
//! - **Linear cost.** Huffman strings are decoded bit by bit over the canonical code's per-length
//!   tables, built once; every other step is O(1) per input byte. At most
//!   [`MAX_FIELDS_PER_BLOCK`] fields of a block reach the callback (the rest are decoded for the
//!   table's sake and counted), so a block of one-byte references to a 4 KiB table entry cannot
//!   make the caller's per-field work quadratic.
//! - **Bounded memory.** The dynamic table holds at most the size the peer may use (the
//!   receiver's `SETTINGS_HEADER_TABLE_SIZE`, as set with [`Decoder::set_max_allowed_table_size`]);
//!   each entry costs its HPACK size (name + value + 32), so at most size / 32 entries; a size
//!   update above the allowed size is an error. [`Decoder::heap_bytes`] counts what is really
//!   allocated (entry slots and buffers included).
//! - **Zeroed.** Evicted entries and the scratch buffers of Huffman strings are overwritten
//!   before they are freed (header values may be credentials).
//! - **No panic** on any bytes: integers are capped (5 continuation bytes), string lengths checked
//!   against the block, indices against the tables.

use std::collections::VecDeque;
use std::sync::LazyLock;

/// Most fields of one block handed to the callback; the rest are decoded and counted.
pub const MAX_FIELDS_PER_BLOCK: usize = 256;

/// The table size a decoder starts with (RFC 9113 `SETTINGS_HEADER_TABLE_SIZE` default).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Why a block could not be decoded: the decoder's state is then unknown (the connection's
/// later blocks cannot be decoded either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpackError {
    /// The block ended inside a field.
    Truncated,
    /// An integer longer than 5 continuation bytes.
    Integer,
    /// An index of no table entry (0, or past the dynamic table).
    Index,
    /// A Huffman string with the EOS symbol, a code longer than 30 bits, or bad padding.
    Huffman,
    /// A dynamic table size update above the allowed size.
    TableSize,
}

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HpackError::Truncated => "header block ends inside a field",
            HpackError::Integer => "integer too long",
            HpackError::Index => "index of no table entry",
            HpackError::Huffman => "bad Huffman string",
            HpackError::TableSize => "table size update above the allowed size",
        })
    }
}

/// The static table (RFC 7541 Appendix A), index 1 first.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Code length of each symbol of the HPACK Huffman code (RFC 7541 Appendix B; 256 is EOS). The
/// code is canonical: codes of one length are consecutive in symbol order, so the lengths alone
/// define it (checked against the RFC's examples in the tests).
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const MAX_CODE_LEN: usize = 30;
const EOS: u16 = 256;

/// The canonical code's decoding tables: per length, the first code, how many codes, and where
/// their symbols start in `symbols` (sorted by length, then symbol).
struct Canonical {
    first: [u32; MAX_CODE_LEN + 1],
    count: [u32; MAX_CODE_LEN + 1],
    offset: [u16; MAX_CODE_LEN + 1],
    symbols: [u16; 257],
}

static CANONICAL: LazyLock<Canonical> = LazyLock::new(|| {
    let mut c = Canonical {
        first: [0; MAX_CODE_LEN + 1],
        count: [0; MAX_CODE_LEN + 1],
        offset: [0; MAX_CODE_LEN + 1],
        symbols: [0; 257],
    };
    let mut k = 0usize;
    let mut code = 0u32;
    for len in 1..=MAX_CODE_LEN {
        c.first[len] = code;
        c.offset[len] = k as u16;
        for (sym, l) in CODE_LENGTHS.iter().enumerate() {
            if *l as usize == len {
                c.symbols[k] = sym as u16;
                k += 1;
                c.count[len] += 1;
            }
        }
        code = (code + c.count[len]) << 1;
    }
    c
});

/// Decodes the Huffman string `s` into `out` (cleared first). Output is at most 8/5 of the input.
fn huffman_decode(s: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let c = &*CANONICAL;
    out.clear();
    out.reserve(s.len() * 8 / 5 + 1);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in s {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len > MAX_CODE_LEN {
                return Err(HpackError::Huffman);
            }
            let idx = code.wrapping_sub(c.first[len]);
            if idx < c.count[len] {
                let sym = c.symbols[c.offset[len] as usize + idx as usize];
                if sym == EOS {
                    return Err(HpackError::Huffman);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the EOS code's most significant bits).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HpackError::Huffman);
    }
    Ok(())
}

/// One HPACK integer with an `n`-bit prefix at `buf[*pos]`.
fn integer(buf: &[u8], pos: &mut usize, n: u32) -> Result<usize, HpackError> {
    let mask = ((1u32 << n) - 1) as u8;
    let first = *buf.get(*pos).ok_or(HpackError::Truncated)? & mask;
    *pos += 1;
    if first < mask {
        return Ok(first as usize);
    }
    let mut v = mask as usize;
    for i in 0..5 {
        let b = *buf.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        v += ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(HpackError::Integer)
}

/// A string literal at `buf[*pos]`: the raw bytes, or the Huffman-decoded ones in `scratch`.
fn string<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], HpackError> {
    let huffman = *buf.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(buf, pos, 7)?;
    let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = buf.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    if huffman {
        huffman_decode(raw, scratch)?;
        Ok(scratch.as_slice())
    } else {
        Ok(raw)
    }
}

/// Overwrites and frees a buffer that may hold a credential.
fn zero(v: &mut Vec<u8>) {
    v.fill(0);
    v.clear();
}

/// A dynamic table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// One direction's HPACK decoder: its dynamic table lives as long as the connection.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first: index 62 is `table[0]`.
    table: VecDeque<Entry>,
    /// HPACK size of the table (name + value + 32 per entry).
    size: usize,
    /// The size the encoder set (at most `allowed`).
    max_size: usize,
    /// The largest size the encoder may set (the receiver's `SETTINGS_HEADER_TABLE_SIZE`).
    allowed: usize,
    /// Bytes of the entries' buffers.
    entry_bytes: usize,
    name_scratch: Vec<u8>,
    value_scratch: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        self.evict_to(0);
        zero(&mut self.name_scratch);
        zero(&mut self.value_scratch);
    }
}

impl Decoder {
    /// A decoder with the default table size (4096).
    pub fn new() -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            allowed: DEFAULT_TABLE_SIZE,
            entry_bytes: 0,
            name_scratch: Vec::new(),
            value_scratch: Vec::new(),
        }
    }

    /// The largest table size the encoder may ask for (the receiver's
    /// `SETTINGS_HEADER_TABLE_SIZE`). Lowering it below the current size shrinks the table.
    pub fn set_max_allowed_table_size(&mut self, n: usize) {
        self.allowed = n;
        if self.max_size > n {
            self.max_size = n;
            self.evict_to(n);
        }
    }

    /// Heap bytes held: the entries' buffers (with a malloc header each), their slots, the
    /// scratch buffers.
    pub fn heap_bytes(&self) -> usize {
        self.entry_bytes
            + self.table.len() * 32
            + self.table.capacity() * std::mem::size_of::<Entry>()
            + self.name_scratch.capacity()
            + self.value_scratch.capacity()
    }

    /// Entries in the dynamic table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            let Some((mut n, mut v)) = self.table.pop_back() else {
                self.size = 0;
                break;
            };
            self.size -= n.len() + v.len() + 32;
            self.entry_bytes -= n.len() + v.len();
            n.fill(0);
            v.fill(0);
        }
    }

    fn insert(&mut self, name: Box<[u8]>, value: Box<[u8]>) {
        let size = name.len() + value.len() + 32;
        if size > self.max_size {
            // An entry larger than the table empties it and is not added (RFC 7541 §4.4).
            self.evict_to(0);
            let (mut n, mut v) = (name, value);
            n.fill(0);
            v.fill(0);
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entry_bytes += name.len() + value.len();
        self.table.push_front((name, value));
    }

    /// The entry at HPACK index `i` (1-based: the static table, then the dynamic one).
    fn entry(&self, i: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match i {
            0 => Err(HpackError::Index),
            1..=61 => Ok(STATIC_TABLE[i - 1]),
            _ => self
                .table
                .get(i - 62)
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(HpackError::Index),
        }
    }

    /// Decodes one whole header block, handing each field to `cb` (at most
    /// [`MAX_FIELDS_PER_BLOCK`]). Returns how many fields were not handed over. On an error the
    /// table may hold part of the block's insertions: the caller must not decode further blocks.
    pub fn decode_with_cb<F: FnMut(&[u8], &[u8])>(
        &mut self,
        block: &[u8],
        mut cb: F,
    ) -> Result<usize, HpackError> {
        let mut pos = 0usize;
        let (mut fields, mut skipped) = (0usize, 0usize);
        let mut emit = |n: &[u8], v: &[u8]| {
            if fields < MAX_FIELDS_PER_BLOCK {
                fields += 1;
                cb(n, v);
            } else {
                skipped += 1;
            }
        };
        let mut name_scratch = std::mem::take(&mut self.name_scratch);
        let mut value_scratch = std::mem::take(&mut self.value_scratch);
        let res = (|| -> Result<(), HpackError> {
            while pos < block.len() {
                let b = block[pos];
                if b & 0x80 != 0 {
                    // Indexed field.
                    let i = integer(block, &mut pos, 7)?;
                    let (n, v) = self.entry(i)?;
                    emit(n, v);
                } else if b & 0xe0 == 0x20 {
                    // Dynamic table size update.
                    let n = integer(block, &mut pos, 5)?;
                    if n > self.allowed {
                        return Err(HpackError::TableSize);
                    }
                    self.max_size = n;
                    self.evict_to(n);
                } else {
                    // Literal: with incremental indexing (01), without (0000), never (0001).
                    let indexing = b & 0xc0 == 0x40;
                    let i = integer(block, &mut pos, if indexing { 6 } else { 4 })?;
                    if indexing {
                        let name: Box<[u8]> = if i == 0 {
                            string(block, &mut pos, &mut name_scratch)?.into()
                        } else {
                            self.entry(i)?.0.into()
                        };
                        let value: Box<[u8]> = string(block, &mut pos, &mut value_scratch)?.into();
                        emit(&name, &value);
                        self.insert(name, value);
                    } else {
                        let name_index = if i == 0 { None } else { Some(self.entry(i)?.0) };
                        let name = match name_index {
                            Some(n) => n,
                            None => string(block, &mut pos, &mut name_scratch)?,
                        };
                        let value = string(block, &mut pos, &mut value_scratch)?;
                        emit(name, value);
                    }
                    zero(&mut name_scratch);
                    zero(&mut value_scratch);
                }
            }
            Ok(())
        })();
        zero(&mut name_scratch);
        zero(&mut value_scratch);
        self.name_scratch = name_scratch;
        self.value_scratch = value_scratch;
        res.map(|()| skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut out = Vec::new();
        d.decode_with_cb(block, |n, v| {
            out.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        })?;
        Ok(out)
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn rfc_c3_requests_without_huffman() {
        let mut d = Decoder::new();
        let r1 = decode(&mut d, &hex("828684410f7777772e6578616d706c652e636f6d")).expect("decodes");
        assert_eq!(
            r1,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.size, 57);
        let r2 = decode(&mut d, &hex("828684be58086e6f2d6361636865")).expect("decodes");
        assert_eq!(r2[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(r2[4], ("cache-control".into(), "no-cache".into()));
        assert_eq!(d.size, 110);
        let r3 = decode(
            &mut d,
            &hex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"),
        )
        .expect("decodes");
        assert_eq!(r3[2], (":path".into(), "/index.html".into()));
        assert_eq!(r3[4], ("custom-key".into(), "custom-value".into()));
        assert_eq!(d.size, 164);
    }

    #[test]
    fn rfc_c4_requests_with_huffman() {
        let mut d = Decoder::new();
        let r1 = decode(&mut d, &hex("828684418cf1e3c2e5f23a6ba0ab90f4ff")).expect("decodes");
        assert_eq!(r1[3], (":authority".into(), "www.example.com".into()));
        let r2 = decode(&mut d, &hex("828684be5886a8eb10649cbf")).expect("decodes");
        assert_eq!(r2[4], ("cache-control".into(), "no-cache".into()));
        let r3 = decode(
            &mut d,
            &hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"),
        )
        .expect("decodes");
        assert_eq!(r3[4], ("custom-key".into(), "custom-value".into()));
        assert_eq!(d.size, 164);
    }

    #[test]
    fn rfc_c6_responses_with_huffman_and_eviction() {
        let mut d = Decoder::new();
        d.set_max_allowed_table_size(256);
        d.max_size = 256;
        let r1 = decode(
            &mut d,
            &hex(
                "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
            ),
        )
        .expect("decodes");
        assert_eq!(
            r1,
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(d.size, 222);
        let r2 = decode(&mut d, &hex("4883640effc1c0bf")).expect("decodes");
        assert_eq!(r2[0], (":status".into(), "307".into()));
        assert_eq!(d.size, 222);
        let r3 = decode(
            &mut d,
            &hex(
                "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
            ),
        )
        .expect("decodes");
        assert_eq!(
            r3[5],
            (
                "set-cookie".into(),
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1".into()
            )
        );
        assert_eq!(d.size, 215);
        assert_eq!(d.table_len(), 3);
    }

    #[test]
    fn bad_huffman_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // 'a' (00011) then 3 bits of padding that are not all ones.
        assert_eq!(
            huffman_decode(&[0b0001_1000], &mut out),
            Err(HpackError::Huffman)
        );
        // 'a' then 11 padding bits of ones: padding longer than 7 bits.
        assert_eq!(
            huffman_decode(&[0b0001_1111, 0xff], &mut out),
            Err(HpackError::Huffman)
        );
        // EOS (30 ones) in the string.
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HpackError::Huffman)
        );
        assert_eq!(huffman_decode(&[0b0001_1111], &mut out), Ok(()));
        assert_eq!(out, b"a");
    }

    #[test]
    fn every_symbol_round_trips_through_the_canonical_code() {
        // Encode every byte value with the canonical codes and decode it back.
        let c = &*CANONICAL;
        let mut code_of = [(0u32, 0u8); 257];
        for len in 1..=MAX_CODE_LEN {
            for k in 0..c.count[len] {
                let sym = c.symbols[c.offset[len] as usize + k as usize];
                code_of[sym as usize] = (c.first[len] + k, len as u8);
            }
        }
        let input: Vec<u8> = (0..=255u8).collect();
        let (mut bits, mut acc, mut out) = (0u32, 0u64, Vec::new());
        for b in &input {
            let (code, len) = code_of[*b as usize];
            acc = (acc << len) | u64::from(code);
            bits += u32::from(len);
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | ((1u8 << (8 - bits)) - 1));
        }
        let mut back = Vec::new();
        huffman_decode(&out, &mut back).expect("decodes");
        assert_eq!(back, input);
    }

    #[test]
    fn bad_indices_integers_and_sizes_are_refused() {
        let mut d = Decoder::new();
        assert_eq!(decode(&mut d, &[0x80]), Err(HpackError::Index));
        assert_eq!(decode(&mut d, &[0xbe]), Err(HpackError::Index));
        assert_eq!(
            decode(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(HpackError::Integer)
        );
        assert_eq!(decode(&mut d, &[0x3f, 0xe1, 0x1f]), Ok(vec![]));
        assert_eq!(
            decode(&mut d, &[0x3f, 0xe2, 0x1f]),
            Err(HpackError::TableSize)
        );
        assert_eq!(
            decode(&mut d, &[0x40, 0x05, b'a']),
            Err(HpackError::Truncated)
        );
        assert_eq!(decode(&mut d, &[0x0f]), Err(HpackError::Truncated));
    }

    #[test]
    fn every_truncation_and_garbage_never_panics() {
        let block = hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf");
        let mut d0 = Decoder::new();
        decode(&mut d0, &hex("828684418cf1e3c2e5f23a6ba0ab90f4ff")).expect("decodes");
        for n in 0..block.len() {
            let mut d = Decoder::new();
            let _ = decode(&mut d, &block[..n]);
        }
        let mut seed = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut d = Decoder::new();
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = decode(&mut d, &bytes);
            assert!(d.size <= d.max_size);
        }
    }

    #[test]
    fn the_table_stays_within_its_size_and_fields_past_the_cap_are_counted() {
        let mut d = Decoder::new();
        let mut block = Vec::new();
        for i in 0..500u32 {
            // Literal with indexing, new name "k", a 8-byte value.
            block.extend_from_slice(&[0x40, 0x01, b'k', 0x08]);
            block.extend_from_slice(format!("{i:08}").as_bytes());
        }
        let mut seen = 0;
        let skipped = d.decode_with_cb(&block, |_, _| seen += 1).expect("decodes");
        assert_eq!(
            (seen, skipped),
            (MAX_FIELDS_PER_BLOCK, 500 - MAX_FIELDS_PER_BLOCK)
        );
        assert!(d.size <= DEFAULT_TABLE_SIZE);
        assert_eq!(d.table_len(), DEFAULT_TABLE_SIZE / (1 + 8 + 32));
        // Lowering the allowed size shrinks the table.
        d.set_max_allowed_table_size(100);
        assert!(d.size <= 100);
        assert!(d.heap_bytes() > 0);
    }

    #[test]
    fn huffman_cost_is_linear() {
        // A 64 KiB block of two-byte fields with an empty Huffman value: one pass, well under
        // what one table build per string cost.
        let mut block = Vec::new();
        while block.len() < 65_534 {
            block.extend_from_slice(&[0x0e, 0x80]);
        }
        let mut d = Decoder::new();
        let t = std::time::Instant::now();
        let skipped = d.decode_with_cb(&block, |_, _| {}).expect("decodes");
        assert_eq!(skipped, 32_767 - MAX_FIELDS_PER_BLOCK);
        eprintln!("64 KiB of empty Huffman fields: {:?}", t.elapsed());
    }
}
