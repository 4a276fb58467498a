//! Masks secrets in captured bytes the moment they leave the ring buffer, before anything can
//! store, log or record them. What is a secret is decided by [`crate::secrets`]; this stage finds
//! the values in a byte stream that arrives in arbitrary pieces and overwrites them in place with
//! `*` (same length, so byte positions and framing do not change; CR and LF are never
//! overwritten). Two small state machines run over every piece of every stream:
//!
//! - **Lines**: header values (`Name: value`, also `Name : value` and obs-fold continuation
//!   lines of a secret header), query parameters of a request line (`METHOD target HTTP/1.x`:
//!   values end at `&`, `#`, space or line end) and after any other `?` outside a masked value
//!   (the request line of a keep-alive connection follows the previous body without a line
//!   break; URLs in header values), and form-encoded lines (`client_secret=...&refresh_token=...`).
//! - **JSON**: the string value of a key that names a credential (`"refresh_token": "..."`), up
//!   to its closing unescaped quote. Every quote is treated as a possible key start, so the
//!   machine never needs to know where a JSON body begins and re-aligns at every line end.
//!
//! Per stream (pid, connection, direction) the state between pieces is kept in a bounded table,
//! together with where the current call's next piece must start.
//!
//! **Fails closed**: when the state of a stream is lost (its table entry was evicted, a piece of
//! a call is missing — its offset is not where the previous piece ended —, or the kernel says
//! records were lost before this one, `lost_before`), the next piece is masked up to the next
//! line end, which also covers the rest of any JSON string value (JSON strings hold no raw line
//! breaks); and a continuation line right after it is masked too. Evicted streams are remembered
//! exactly in a second bounded set and, when that is full, in a fixed-size hashed bitset whose
//! false positives only mask more.
//!
//! **API-key fingerprints**: the value of an API-credential header or query parameter
//! ([`secrets::is_api_key_header`], [`secrets::is_api_key_param`]) is also read while it is
//! masked: its first [`MAX_CREDENTIAL`] bytes are kept in one scratch buffer (a value split
//! across pieces keeps its prefix in a bounded per-stream table, [`MAX_CREDENTIAL_STREAMS`]),
//! and at the value's end it becomes a keyed 64-bit id ([`crate::ids`], domain `api_key`; the
//! `authorization` scheme stripped, a query value percent-decoded), stamped on the chunk in
//! which the value ended ([`DataChunk::api_key_id`]; the first credential of a piece wins). The
//! bytes are zeroed once hashed; only the id leaves the masker. A longer value is hashed on its
//! prefix and counted; a value whose state was lost (eviction, a hole, `lost_before`, a full
//! table) is masked as always and gets no id (never an id of a part); a value already masked
//! (all `*`: a replayed capture) gets none.
//!
//! The common path (body bytes of an SSE or JSON stream) is a `memchr` scan for `\n` in the line
//! machine and `"`/`\n` in the JSON machine; names are compared only when a line starts or a
//! quoted string is followed by `:`.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use memchr::{memchr, memchr2};

use super::events::{DataChunk, Direction};
use crate::protocol::http1;
use crate::secrets::{self, MASK, MAX_NAME};

/// Most streams with state open across a piece boundary that are remembered exactly.
const MAX_OPEN_STREAMS: usize = 65_536;
/// Most streams remembered as begun (for HTTP/2's first piece): four times the tracker's
/// default connection cap, both directions; about 5 MiB at most.
const MAX_SEEN_STREAMS: usize = 131_072;
/// Most evicted streams remembered exactly (16 bytes each) before the bitset takes over.
const MAX_LOST_STREAMS: usize = 131_072;
/// Bits of the hashed set of evicted streams (128 KiB, allocated on first use).
const LOST_BITS: usize = 1 << 20;
/// Bytes of an API credential kept for its fingerprint; a longer value is hashed on its prefix.
pub const MAX_CREDENTIAL: usize = 512;
/// Most streams whose credential value is split across pieces, held at once.
pub const MAX_CREDENTIAL_STREAMS: usize = 4096;

/// The keyed fingerprint of an API credential value, exactly as the masker computes it for
/// HTTP/1 bytes: `header` is the API-key header's name (`authorization`: its scheme stripped), or
/// None for a query parameter's value (percent-decoded). None for an empty or masked value; a
/// value longer than [`MAX_CREDENTIAL`] is hashed on its prefix. Used by the HTTP/2 parser on
/// decoded header values; the copy it hashes is zeroed.
pub fn credential_id(header: Option<&[u8]>, value: &[u8]) -> Option<u64> {
    let kind = match header {
        Some(n) if secrets::is_authorization_header(n) => CredKind::Authorization,
        Some(_) => CredKind::Header,
        None => CredKind::Param,
    };
    let mut c = Credential::new(kind);
    c.extend(value);
    c.finish(&mut 0)
}

/// Where a credential value came from: what [`Credential::finish`] strips or decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredKind {
    /// `Authorization: SCHEME VALUE`: the scheme is stripped.
    Authorization,
    /// Another API-key header: the value as sent.
    Header,
    /// A query or form parameter: percent-decoded.
    Param,
    /// The MCP session header (`Mcp-Session-Id`): the value as sent, keyed in the domain
    /// `mcp_session`, stamped as [`DataChunk::mcp_session_id`].
    McpSession,
}

/// The value of an API credential being read: its prefix, for its fingerprint.
#[derive(Clone)]
struct Credential {
    /// Bytes seen (more than [`MAX_CREDENTIAL`]: only the prefix is kept).
    len: usize,
    kind: CredKind,
    bytes: [u8; MAX_CREDENTIAL],
}

impl Credential {
    fn new(kind: CredKind) -> Self {
        Credential {
            len: 0,
            kind,
            bytes: [0; MAX_CREDENTIAL],
        }
    }

    fn extend(&mut self, s: &[u8]) {
        let at = self.len.min(MAX_CREDENTIAL);
        let room = (MAX_CREDENTIAL - at).min(s.len());
        self.bytes[at..at + room].copy_from_slice(&s[..room]);
        self.len = self.len.saturating_add(s.len());
    }

    /// Forgets the bytes (zeroed).
    fn clear(&mut self) {
        self.bytes[..self.len.min(MAX_CREDENTIAL)].fill(0);
        self.len = 0;
    }

    /// The value's fingerprint, or None for an empty or already masked value; zeroes the bytes.
    /// `prefix_only` counts a value longer than the prefix kept.
    fn finish(&mut self, prefix_only: &mut u64) -> Option<u64> {
        let kept = &self.bytes[..self.len.min(MAX_CREDENTIAL)];
        let mut v = kept.trim_ascii();
        if self.kind == CredKind::Authorization
            && let Some(sp) = v.iter().position(|&b| b == b' ' || b == b'\t')
        {
            v = v[sp..].trim_ascii_start();
        }
        let id = if v.is_empty() || v.iter().all(|&b| b == MASK) {
            None
        } else {
            if self.len > MAX_CREDENTIAL {
                *prefix_only += 1;
            }
            Some(if self.kind == CredKind::Param && v.contains(&b'%') {
                let mut buf = [0u8; MAX_CREDENTIAL];
                let mut n = 0;
                for b in secrets::percent_decoded(v) {
                    buf[n] = b;
                    n += 1;
                }
                let id = crate::ids::key().id_u64("api_key", &buf[..n]);
                buf[..n].fill(0);
                id
            } else if self.kind == CredKind::McpSession {
                crate::ids::key().id_u64("mcp_session", v)
            } else {
                crate::ids::key().id_u64("api_key", v)
            })
        };
        self.clear();
        id
    }
}

/// The masker's credential scratch: the value being read in the current piece, and the id of
/// the first value that ended in it. The buffer stays in place (an event that reads no
/// credential pays one flag test).
struct CredScratch {
    /// A value is being read into `buf`; false: none, or its start was lost (masked, no id).
    active: bool,
    buf: Credential,
    /// The first id made in this piece.
    done: Option<u64>,
    /// The first MCP session id made in this piece.
    done_session: Option<u64>,
    /// Ids made.
    made: u64,
    /// Values longer than [`MAX_CREDENTIAL`], hashed on their prefix.
    prefix_only: u64,
}

impl CredScratch {
    fn new() -> Self {
        CredScratch {
            active: false,
            buf: Credential::new(CredKind::Header),
            done: None,
            done_session: None,
            made: 0,
            prefix_only: 0,
        }
    }

    #[cold]
    fn start(&mut self, kind: CredKind) {
        self.abandon();
        self.buf.kind = kind;
        self.active = true;
    }

    fn extend(&mut self, s: &[u8]) {
        if self.active {
            self.buf.extend(s);
        }
    }

    #[cold]
    fn end(&mut self) {
        if std::mem::take(&mut self.active)
            && let Some(id) = self.buf.finish(&mut self.prefix_only)
        {
            if self.buf.kind == CredKind::McpSession {
                self.done_session.get_or_insert(id);
            } else {
                self.made += 1;
                self.done.get_or_insert(id);
            }
        }
    }

    /// Drops the value being read (zeroed): its state was lost.
    fn abandon(&mut self) {
        if std::mem::take(&mut self.active) {
            self.buf.clear();
        }
    }

    /// Resumes a value split across pieces (its prefix so far).
    #[cold]
    fn resume(&mut self, saved: &Credential) {
        self.buf.clear();
        self.buf.clone_from(saved);
        self.active = true;
    }

    /// The value goes on in the next piece: a copy of its prefix, and the scratch emptied.
    #[cold]
    fn suspend(&mut self) -> Box<Credential> {
        let saved = Box::new(self.buf.clone());
        self.abandon();
        saved
    }
}

/// A name being read (header, parameter or JSON key), lower-casing left to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameBuf {
    /// Bytes seen; more than [`MAX_NAME`] means the name overflowed (only the first are kept).
    len: usize,
    bytes: [u8; MAX_NAME],
}

impl NameBuf {
    const fn new() -> Self {
        NameBuf {
            len: 0,
            bytes: [0; MAX_NAME],
        }
    }

    fn push(&mut self, b: u8) {
        if self.len < MAX_NAME {
            self.bytes[self.len] = b;
        }
        self.len = self.len.saturating_add(1);
    }

    fn extend(&mut self, s: &[u8]) {
        let room = MAX_NAME.saturating_sub(self.len).min(s.len());
        self.bytes[self.len.min(MAX_NAME)..self.len.min(MAX_NAME) + room]
            .copy_from_slice(&s[..room]);
        self.len = self.len.saturating_add(s.len());
    }

    fn overflowed(&self) -> bool {
        self.len > MAX_NAME
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len.min(MAX_NAME)]
    }

    /// Whether this header name is secret; an overflowed name is (fails closed).
    fn secret_header(&self) -> bool {
        self.overflowed() || secrets::is_secret_header_bytes(self.as_slice())
    }

    /// Whether this parameter name (the part after the last `&`) is secret; an overflowed name
    /// is (fails closed).
    fn secret_param(&self) -> bool {
        let s = self.as_slice();
        let after_amp = s
            .iter()
            .rposition(|&b| b == b'&')
            .map_or(s, |p| &s[p + 1..]);
        self.overflowed() || secrets::is_secret_param(after_amp)
    }

    /// The API-key header this name is, if it is one.
    fn cred_header(&self) -> Option<CredKind> {
        let s = self.as_slice();
        if !self.overflowed() && secrets::is_mcp_session_header(s) {
            Some(CredKind::McpSession)
        } else if self.overflowed() || !secrets::is_api_key_header(s) {
            None
        } else if secrets::is_authorization_header(s) {
            Some(CredKind::Authorization)
        } else {
            Some(CredKind::Header)
        }
    }

    /// Whether this parameter name (the part after the last `&`) names an API key.
    fn cred_param(&self) -> bool {
        let s = self.as_slice();
        let after_amp = s
            .iter()
            .rposition(|&b| b == b'&')
            .map_or(s, |p| &s[p + 1..]);
        !self.overflowed() && secrets::is_api_key_param(after_amp)
    }

    /// Whether this JSON key is secret; an overflowed key is (fails closed).
    fn secret_json_key(&self) -> bool {
        self.overflowed() || secret_key(self.as_slice())
    }
}

/// Where the line machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line; `prev_secret`: the line before was a secret header value (an
    /// obs-fold continuation line is masked too).
    Start { prev_secret: bool },
    /// Inside the first token of a line (a header name, a method, a form parameter name).
    Name(NameBuf),
    /// After the first token and whitespace: `:` makes it a header, anything else a request
    /// target. `secret`: the token as a header name is secret; `cred`: it names an API key.
    NameWs {
        secret: bool,
        cred: Option<CredKind>,
    },
    /// Masking until the line ends (a secret header value, or lost state).
    Mask,
    /// Masking until the line ends an API-key header value, read for its fingerprint.
    CredMask,
    /// Inside a request target, before `?`.
    Target,
    /// Inside a query or form parameter name.
    Param(NameBuf),
    /// Inside a secret parameter value.
    ParamMask,
    /// Inside an API-key parameter value, read for its fingerprint.
    CredParamMask,
    /// Inside a parameter value that is not secret.
    ParamSkip,
    /// In a line with nothing more to mask unless a `?` starts a query.
    Skip,
}

/// Where the JSON machine is. Every quote outside a masked value both ends the string before it
/// and starts a new one, so the machine never needs to know which quotes open strings: a real
/// key always lies between two consecutive quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Json {
    /// Outside any quoted string we follow.
    Out,
    /// Inside a quoted string (a possible key).
    Seg(NameBuf),
    /// Just after the closing quote of this string (which opened the next one): `:` makes it
    /// a key.
    AfterQuote(NameBuf),
    /// After a secret key and its `:`: a `"` opens the value to mask.
    AfterColon,
    /// Inside a secret string value; `esc`: the previous byte was an unescaped backslash.
    Value { esc: bool },
}

/// One stream's state between pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamState {
    line: Line,
    json: Json,
    /// The current call is not complete: (offset its next piece must have, its total length).
    call: Option<(u32, u32)>,
    /// The stream is HTTP/2: its bytes are frames, and the HTTP/2 parser filters the secrets of
    /// its header blocks as it decodes them; this masker leaves them as they are.
    h2: bool,
}

impl StreamState {
    /// Whether dropping this state cannot mask less than keeping it: nothing pending in the
    /// call, no JSON string followed, and the line is at a plain line start or in `Skip`.
    /// Resuming a `Skip` line as a line start can only find more to mask: every state reached
    /// from a line start also starts a query at `?` (as `Skip` does) and both meet again at the
    /// line end. Idle states are not stored.
    fn idle(&self) -> bool {
        matches!(self.line, Line::Start { prev_secret: false } | Line::Skip)
            && self.json == Json::Out
            && self.call.is_none()
            && !self.h2
    }
}

const FRESH: StreamState = StreamState {
    line: Line::Start { prev_secret: false },
    json: Json::Out,
    call: None,
    h2: false,
};

/// Whether a piece that starts a call on a stream with no state opens HTTP/2: the client's
/// connection preface, or the server's (a SETTINGS frame on stream 0).
fn opens_http2(data: &[u8]) -> bool {
    (data.len() >= secrets::HTTP2_PREFACE.len() && secrets::is_http2_preface(data))
        || crate::protocol::http2::looks_like_server_preface(data)
}

type StreamKey = (u32, u64, Direction);

/// Counts kept by the scrubber (turned into metrics by the caller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubStats {
    /// Secret values masked (header values, parameter values, JSON string values).
    pub masked_values: u64,
    /// Pieces that arrived after the stream's state was lost and were masked to the line end.
    pub lost_states: u64,
    /// Stream states evicted because the table was full.
    pub evicted_states: u64,
    /// API-key fingerprints made.
    pub api_keys: u64,
    /// API-key values longer than [`MAX_CREDENTIAL`], fingerprinted on their prefix.
    pub api_key_prefix_only: u64,
    /// API-key values split across pieces that found the table of split values full (masked,
    /// no fingerprint).
    pub api_key_table_full: u64,
    /// Streams found to be HTTP/2 (left to the HTTP/2 parser's secret filter).
    pub http2_streams: u64,
}

/// Per-stream masking of secrets.
pub struct SecretScrubber {
    open: HashMap<StreamKey, StreamState>,
    /// Streams seen since their connection began (at most [`MAX_SEEN_STREAMS`]): only a
    /// stream's first piece can open HTTP/2.
    seen: HashSet<StreamKey>,
    /// Evicted streams, remembered exactly.
    lost: HashSet<StreamKey>,
    /// Evicted streams that did not fit in `lost`, hashed (allocated on first use).
    lost_bits: Vec<u64>,
    hasher: RandomState,
    /// API-key values split across pieces: their prefix so far (bounded).
    split_creds: HashMap<StreamKey, Box<Credential>>,
    cred: CredScratch,
    /// Counts so far.
    pub stats: ScrubStats,
}

impl Default for SecretScrubber {
    fn default() -> Self {
        Self::new()
    }
}

impl SecretScrubber {
    /// New scrubber.
    pub fn new() -> Self {
        SecretScrubber {
            open: HashMap::new(),
            seen: HashSet::new(),
            lost: HashSet::new(),
            lost_bits: Vec::new(),
            hasher: RandomState::new(),
            split_creds: HashMap::new(),
            cred: CredScratch::new(),
            stats: ScrubStats::default(),
        }
    }

    /// Masks secrets in `chunk.data` in place; sets `chunk.api_key_id` when an API credential
    /// value ended in it.
    pub fn scrub(&mut self, chunk: &mut DataChunk) {
        let key = (chunk.meta.pid, chunk.meta.conn_id, chunk.direction);
        let first = !self.seen.contains(&key) && !self.open.contains_key(&key);
        let (mut st, evicted) = self.take(key);
        if first && !evicted {
            self.remember_seen(key);
        }
        if st.h2 {
            if chunk.offset == 0 && http1::starts_with_message_line(&chunk.data) {
                // An HTTP/1 message after all: masked as one (a false HTTP/2 start can only
                // mask less until the next message line, never a message's head).
                st = FRESH;
            } else {
                self.store(key, st);
                return;
            }
        }
        if first && !evicted && chunk.offset == 0 && opens_http2(&chunk.data) {
            // HTTP/2 frames: masking lines or JSON strings across them would overwrite frame
            // headers (a secret query value runs to a space or line end that binary frames need
            // not have). The stream is remembered as HTTP/2 in the bounded table; evicted, it
            // fails closed like any other stream.
            self.stats.http2_streams += 1;
            self.store(key, StreamState { h2: true, ..FRESH });
            return;
        }
        if matches!(st.line, Line::CredMask | Line::CredParamMask)
            && let Some(mut saved) = self.split_creds.remove(&key)
        {
            // A value split across pieces: its prefix so far (none when the table had no room).
            self.cred.resume(&saved);
            saved.clear();
        }
        let expected = st.call.map_or(0, |(off, _)| off);
        let hole = chunk.offset != expected || st.call.is_some_and(|(_, t)| t != chunk.total_len);
        if evicted || hole || chunk.lost_before {
            self.stats.lost_states += 1;
            // A call that opens with a whole request or status line cannot be the rest of a
            // secret value (header values, query values and JSON strings hold no line break),
            // so it starts afresh: a call cut by the kernel's per-call cap (a long prompt) must
            // not blind the next request on the connection.
            if chunk.offset == 0 && http1::starts_with_message_line(&chunk.data) {
                st.line = FRESH.line;
            } else {
                st.line = Line::Mask;
            }
            st.json = Json::Out;
            // Never the fingerprint of a part of a value.
            self.cred.abandon();
        }
        let end = u64::from(chunk.offset) + chunk.data.len() as u64;
        st.call = match u32::try_from(end) {
            Ok(e) if e < chunk.total_len => Some((e, chunk.total_len)),
            _ => None,
        };
        let mut out = Masker {
            input: &chunk.data,
            out: None,
        };
        st.line = scrub_lines(
            &chunk.data,
            st.line,
            &mut out,
            &mut self.stats.masked_values,
            &mut self.cred,
        );
        if self.cred.active {
            // The value goes on in the next piece.
            // A full table makes room: another stream's value (zeroed) goes, and that stream
            // gets no id (fail closed, counted). Refusing instead would let streams that never
            // finish their value (a process that wrote half a header and died: no close is
            // seen for its fds) blind the fingerprint for good.
            if self.split_creds.len() >= MAX_CREDENTIAL_STREAMS {
                let victim = self.split_creds.keys().next().copied();
                if let Some(v) = victim {
                    self.drop_split_cred(&v);
                }
                self.stats.api_key_table_full += 1;
            }
            self.split_creds.insert(key, self.cred.suspend());
        }
        if let Some(id) = self.cred.done_session.take() {
            chunk.mcp_session_id = Some(id);
        }
        if let Some(id) = self.cred.done.take() {
            chunk.api_key_id = Some(id);
            self.stats.api_keys = self.cred.made;
            self.stats.api_key_prefix_only = self.cred.prefix_only;
        }
        st.json = scrub_json(
            &chunk.data,
            st.json,
            &mut out,
            &mut self.stats.masked_values,
        );
        if let Some(d) = out.out {
            chunk.data = Bytes::from(d);
        }
        if !st.idle() {
            self.store(key, st);
        }
    }

    /// Remembers that a stream has begun. Past [`MAX_SEEN_STREAMS`] another one is forgotten
    /// (not marked lost: that would make a flood of connections fail other streams closed); a
    /// forgotten stream's next piece could pass for a first one, which matters only if it also
    /// opens like HTTP/2, and then only until its next message line (see `scrub`).
    fn remember_seen(&mut self, key: StreamKey) {
        if self.seen.len() >= MAX_SEEN_STREAMS
            && let Some(&victim) = self.seen.iter().next()
        {
            self.seen.remove(&victim);
        }
        self.seen.insert(key);
    }

    /// Forgets a connection's streams.
    pub fn forget(&mut self, pid: u32, conn_id: u64) {
        for dir in [Direction::Egress, Direction::Ingress] {
            self.seen.remove(&(pid, conn_id, dir));
            self.open.remove(&(pid, conn_id, dir));
            self.lost.remove(&(pid, conn_id, dir));
            if !self.split_creds.is_empty() {
                self.drop_split_cred(&(pid, conn_id, dir));
            }
        }
    }

    /// Drops (zeroed) a stream's split credential value.
    fn drop_split_cred(&mut self, key: &StreamKey) {
        if let Some(mut c) = self.split_creds.remove(key) {
            c.clear();
        }
    }

    /// Removes and returns a stream's state, and whether it was evicted since its last piece.
    fn take(&mut self, key: StreamKey) -> (StreamState, bool) {
        if !self.open.is_empty()
            && let Some(s) = self.open.remove(&key)
        {
            return (s, false);
        }
        if !self.lost.is_empty() && self.lost.remove(&key) {
            return (FRESH, true);
        }
        if !self.lost_bits.is_empty() {
            let (w, b) = self.bit(key);
            // The bit stays set: it may stand for another evicted stream too.
            if self.lost_bits[w] & b != 0 {
                return (FRESH, true);
            }
        }
        (FRESH, false)
    }

    fn bit(&self, key: StreamKey) -> (usize, u64) {
        let h = self.hasher.hash_one(key) as usize % LOST_BITS;
        (h / 64, 1u64 << (h % 64))
    }

    fn store(&mut self, key: StreamKey, st: StreamState) {
        if self.open.len() >= MAX_OPEN_STREAMS {
            // HashMap order is randomly keyed: no one can pick whose state goes.
            if let Some(&victim) = self.open.keys().next() {
                self.evict(victim);
            }
        }
        self.open.insert(key, st);
    }

    /// Drops a stream's state and remembers that it was lost (its next piece fails closed).
    fn evict(&mut self, key: StreamKey) {
        self.open.remove(&key);
        if !self.split_creds.is_empty() {
            self.drop_split_cred(&key);
        }
        self.stats.evicted_states += 1;
        if self.lost.len() < MAX_LOST_STREAMS {
            self.lost.insert(key);
        } else {
            if self.lost_bits.is_empty() {
                self.lost_bits = vec![0; LOST_BITS / 64];
            }
            let (w, b) = self.bit(key);
            self.lost_bits[w] |= b;
        }
    }
}

/// The output: a copy of the input made on the first byte masked.
struct Masker<'a> {
    input: &'a [u8],
    out: Option<BytesMut>,
}

impl Masker<'_> {
    /// Masks `range`, leaving CR and LF.
    fn mask(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        let input = self.input;
        let buf = self.out.get_or_insert_with(|| BytesMut::from(input));
        for b in &mut buf[range] {
            if *b != b'\r' && *b != b'\n' {
                *b = MASK;
            }
        }
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What ends the part of a parameter being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ParamPart {
    /// A name: also ends at `=`, and restarts at `?`.
    Name,
    /// A secret value: ends only at `&`, `#`, space or line end (a `?` may be part of it).
    SecretValue,
    /// Another value: also ends at `?` (a query may start there: masking more, never less).
    OtherValue,
}

/// Position of the first byte that ends a parameter part at or after `from`.
fn param_end(input: &[u8], from: usize, part: ParamPart) -> Option<usize> {
    input[from..]
        .iter()
        .position(|&c| match c {
            b'&' | b'#' | b' ' | b'\r' | b'\n' => true,
            b'=' => part == ParamPart::Name,
            b'?' => part != ParamPart::SecretValue,
            _ => false,
        })
        .map(|p| from + p)
}

/// The state after a parameter delimiter `c` (`&`, `?`, `#`, space, CR, LF).
fn after_param(c: u8) -> Line {
    match c {
        b'&' | b'?' => Line::Param(NameBuf::new()),
        b'\n' => Line::Start { prev_secret: false },
        _ => Line::Skip,
    }
}

/// The state after a secret header's `:`: an API-key header's value is read for its fingerprint.
#[inline(never)]
fn header_mask(kind: Option<CredKind>, cred: &mut CredScratch) -> Line {
    match kind {
        Some(k) => {
            cred.start(k);
            Line::CredMask
        }
        None => Line::Mask,
    }
}

/// The state after a secret parameter's `=`: an API-key parameter's value is read for its
/// fingerprint.
#[inline(never)]
fn param_mask(name: &NameBuf, cred: &mut CredScratch) -> Line {
    if name.cred_param() {
        cred.start(CredKind::Param);
        Line::CredParamMask
    } else {
        Line::ParamMask
    }
}

/// Runs the line machine over `input`.
fn scrub_lines(
    input: &[u8],
    mut st: Line,
    out: &mut Masker<'_>,
    masked: &mut u64,
    cred: &mut CredScratch,
) -> Line {
    let n = input.len();
    let mut i = 0;
    while i < n {
        st = match st {
            // A `?` anywhere outside a masked value starts a query: the next request line of a
            // keep-alive connection follows the previous body on the same line, and URLs in
            // header values (`Referer`, `Location`) carry queries too.
            Line::Skip => match memchr2(b'\n', b'?', &input[i..]) {
                Some(p) => {
                    i += p + 1;
                    if input[i - 1] == b'?' {
                        Line::Param(NameBuf::new())
                    } else {
                        Line::Start { prev_secret: false }
                    }
                }
                None => return Line::Skip,
            },
            Line::Mask => match memchr(b'\n', &input[i..]) {
                Some(p) => {
                    out.mask(i..i + p);
                    i += p + 1;
                    Line::Start { prev_secret: true }
                }
                None => {
                    out.mask(i..n);
                    return Line::Mask;
                }
            },
            Line::CredMask => match memchr(b'\n', &input[i..]) {
                Some(p) => {
                    cred.extend(&input[i..i + p]);
                    cred.end();
                    out.mask(i..i + p);
                    i += p + 1;
                    Line::Start { prev_secret: true }
                }
                None => {
                    cred.extend(&input[i..n]);
                    out.mask(i..n);
                    return Line::CredMask;
                }
            },
            Line::Start { prev_secret } => {
                let b = input[i];
                i += 1;
                match b {
                    b'\n' => Line::Start { prev_secret: false },
                    b' ' | b'\t' if prev_secret => Line::Mask,
                    b'?' => Line::Param(NameBuf::new()),
                    b if is_token(b) => {
                        let mut name = NameBuf::new();
                        name.push(b);
                        Line::Name(name)
                    }
                    _ => Line::Skip,
                }
            }
            Line::Name(mut name) => {
                let run = input[i..].iter().position(|&c| !is_token(c));
                let stop = run.map_or(n, |p| i + p);
                name.extend(&input[i..stop]);
                if stop == n {
                    return Line::Name(name);
                }
                i = stop + 1;
                match input[stop] {
                    b':' if name.secret_header() => {
                        *masked += 1;
                        header_mask(name.cred_header(), cred)
                    }
                    b' ' | b'\t' => Line::NameWs {
                        secret: name.secret_header(),
                        cred: name.cred_header(),
                    },
                    b'=' if name.secret_param() => {
                        *masked += 1;
                        param_mask(&name, cred)
                    }
                    b'=' => Line::ParamSkip,
                    b'?' => Line::Param(NameBuf::new()),
                    b'\n' => Line::Start { prev_secret: false },
                    _ => Line::Skip,
                }
            }
            Line::NameWs { secret, cred: kind } => match input[i] {
                b' ' | b'\t' => {
                    i += 1;
                    st
                }
                b':' => {
                    i += 1;
                    if secret {
                        *masked += 1;
                        header_mask(kind, cred)
                    } else {
                        Line::Skip
                    }
                }
                b'\n' => {
                    i += 1;
                    Line::Start { prev_secret: false }
                }
                _ => Line::Target,
            },
            Line::Target => {
                match input[i..]
                    .iter()
                    .position(|&c| matches!(c, b'?' | b' ' | b'#' | b'\n'))
                {
                    None => return Line::Target,
                    Some(p) => {
                        let c = input[i + p];
                        i += p + 1;
                        match c {
                            b'?' => Line::Param(NameBuf::new()),
                            b'\n' => Line::Start { prev_secret: false },
                            _ => Line::Skip,
                        }
                    }
                }
            }
            Line::Param(mut name) => match param_end(input, i, ParamPart::Name) {
                None => {
                    name.extend(&input[i..]);
                    return Line::Param(name);
                }
                Some(p) => {
                    name.extend(&input[i..p]);
                    i = p + 1;
                    match input[p] {
                        b'=' if name.secret_param() => {
                            *masked += 1;
                            param_mask(&name, cred)
                        }
                        b'=' => Line::ParamSkip,
                        c => after_param(c),
                    }
                }
            },
            Line::ParamMask => match param_end(input, i, ParamPart::SecretValue) {
                None => {
                    out.mask(i..n);
                    return Line::ParamMask;
                }
                Some(p) => {
                    out.mask(i..p);
                    i = p + 1;
                    after_param(input[p])
                }
            },
            Line::CredParamMask => match param_end(input, i, ParamPart::SecretValue) {
                None => {
                    cred.extend(&input[i..n]);
                    out.mask(i..n);
                    return Line::CredParamMask;
                }
                Some(p) => {
                    cred.extend(&input[i..p]);
                    cred.end();
                    out.mask(i..p);
                    i = p + 1;
                    after_param(input[p])
                }
            },
            Line::ParamSkip => match param_end(input, i, ParamPart::OtherValue) {
                None => return Line::ParamSkip,
                Some(p) => {
                    i = p + 1;
                    after_param(input[p])
                }
            },
        };
    }
    st
}

/// Runs the JSON machine over `input`.
fn scrub_json(input: &[u8], mut st: Json, out: &mut Masker<'_>, masked: &mut u64) -> Json {
    let n = input.len();
    let mut i = 0;
    while i < n {
        st = match st {
            Json::Out => match memchr(b'"', &input[i..]) {
                Some(p) => {
                    i += p + 1;
                    Json::Seg(NameBuf::new())
                }
                None => return Json::Out,
            },
            Json::Seg(name) if name.len == 0 => {
                let (next, state) = json_fast(input, i);
                i = next;
                state
            }
            Json::Seg(mut name) => {
                let end = memchr2(b'"', b'\n', &input[i..]).map_or(n, |p| i + p);
                let part = &input[i..end];
                // A credential key holds no JSON punctuation (and no raw line break): such a
                // string is no key we look for, and the next quote starts afresh. This also
                // lets every JSON body end with nothing to remember.
                let dead =
                    !name.overflowed() && name.len + part.len() <= MAX_NAME && has_json_punct(part);
                name.extend(part);
                i = end + 1;
                match input.get(end) {
                    None if dead => Json::Out,
                    None => Json::Seg(name),
                    // The closing quote opens the next string.
                    Some(b'"') if dead => Json::Seg(NameBuf::new()),
                    Some(b'"') => Json::AfterQuote(name),
                    Some(_) => Json::Out,
                }
            }
            Json::AfterQuote(name) => {
                let b = input[i];
                i += 1;
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => st,
                    b':' if name.secret_json_key() => Json::AfterColon,
                    b'"' => Json::AfterQuote(NameBuf::new()),
                    // The quote opened a new string: this is its first byte.
                    _ => {
                        let mut name = NameBuf::new();
                        name.push(b);
                        Json::Seg(name)
                    }
                }
            }
            Json::AfterColon => {
                let b = input[i];
                i += 1;
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => st,
                    b'"' => {
                        *masked += 1;
                        Json::Value { esc: false }
                    }
                    _ => Json::Seg(NameBuf::new()),
                }
            }
            Json::Value { esc } => {
                let mut j = i;
                if esc {
                    j += 1;
                }
                loop {
                    match memchr2(b'"', b'\\', &input[j.min(n)..]) {
                        None => {
                            out.mask(i..n);
                            // An escape cut at the piece end carries over.
                            return Json::Value { esc: j > n };
                        }
                        Some(p) if input[j + p] == b'\\' => j += p + 2,
                        Some(p) => {
                            out.mask(i..j + p);
                            i = j + p + 1;
                            break Json::AfterQuote(NameBuf::new());
                        }
                    }
                }
            }
        };
    }
    st
}

/// Whether a JSON string (its raw bytes between quotes) followed by `:` is a credential key:
/// one longer than [`MAX_NAME`] is (fails closed); one holding JSON punctuation is not.
///
/// One pass over the key finds both JSON punctuation and backslashes: a key without escapes
/// goes straight to the word rule, which is what [`secrets::is_secret_json_key`] applies to it.
fn secret_key(seg: &[u8]) -> bool {
    if seg.len() > MAX_NAME {
        return true;
    }
    let class = seg.iter().fold(0, |c, &b| c | KEY_CLASS[usize::from(b)]);
    if class & KEY_PUNCT != 0 {
        return false;
    }
    if class & KEY_ESCAPE != 0 {
        return secrets::is_secret_json_key(seg);
    }
    secrets::has_secret_word(seg)
}

/// [`KEY_CLASS`]: JSON punctuation (see [`has_json_punct`]).
const KEY_PUNCT: u8 = 1;
/// [`KEY_CLASS`]: a backslash (the key has escapes to decode).
const KEY_ESCAPE: u8 = 2;
/// The class of each byte for [`secret_key`].
static KEY_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'{' as usize] = KEY_PUNCT;
    t[b'}' as usize] = KEY_PUNCT;
    t[b'[' as usize] = KEY_PUNCT;
    t[b']' as usize] = KEY_PUNCT;
    t[b',' as usize] = KEY_PUNCT;
    t[b'\\' as usize] = KEY_ESCAPE;
    t
};

/// Whether `s` holds a byte no credential key name contains (JSON punctuation).
fn has_json_punct(s: &[u8]) -> bool {
    s.iter()
        .any(|c| matches!(c, b'{' | b'}' | b'[' | b']' | b','))
}

/// The JSON machine's common path, from the start of a string at `start` (just after a quote)
/// while the whole string lies in `input`. Returns where it stopped and the state there: at the
/// piece end, or at a secret key's `:` (the caller then masks the value).
///
/// It gives exactly what walking the quotes one by one gives (every quote ends the string
/// before it and opens the next; a line feed inside a string drops it, and the next quote
/// opens one; a string is checked as a key only when whitespace and `:` follow its closing
/// quote), but it is driven by the colons, which are fewer than the quotes (a JSON object has
/// about three quotes per colon): for each `:` it looks back over whitespace for a closing
/// quote, and back from there for the quote that opened that string. Then only the piece's
/// last quote decides the state it ends in. The walk by quotes is kept in the tests as the
/// reference this is checked against.
fn json_fast(input: &[u8], start: usize) -> (usize, Json) {
    let n = input.len();
    for c in memchr::memchr_iter(b':', &input[start..]) {
        let c = start + c;
        // The last byte before the colon that is not whitespace must be a quote...
        let mut q = c;
        while q > start && is_json_ws(input[q - 1]) {
            q -= 1;
        }
        if q == start || input[q - 1] != b'"' {
            continue;
        }
        let q = q - 1;
        // ...reached as a closing quote: the special byte before it is a quote (or the string
        // began at `start`); after a line feed, that quote opened a string instead. A plain
        // loop back over one key beats a `memrchr2` call; each byte is looked at for one colon
        // at most (a colon's key ends at the quote just before it).
        let seg_start = match input[start..q]
            .iter()
            .rposition(|&b| b == b'"' || b == b'\n')
        {
            None => start,
            Some(p) if input[start + p] == b'"' => start + p + 1,
            Some(_) => continue,
        };
        if secret_key(&input[seg_start..q]) {
            return (c + 1, Json::AfterColon);
        }
    }
    // No secret key: the state at the end follows from the last quote.
    let tail_state = |from: usize| {
        let tail = &input[from..];
        if memchr(b'\n', tail).is_some() {
            // A key holds no raw line break, and no quote follows it.
            return Json::Out;
        }
        // A string holding JSON punctuation is no key: nothing to carry over.
        if tail.len() <= MAX_NAME && has_json_punct(tail) {
            return Json::Out;
        }
        let mut name = NameBuf::new();
        name.extend(tail);
        Json::Seg(name)
    };
    let Some(last) = memchr::memrchr(b'"', &input[start..]).map(|p| start + p) else {
        return (n, tail_state(start));
    };
    let seg_start = match memchr::memrchr2(b'"', b'\n', &input[start..last]) {
        None => Some(start),
        Some(p) if input[start + p] == b'"' => Some(start + p + 1),
        // After a line feed, the last quote opened a string.
        Some(_) => None,
    };
    if let Some(seg_start) = seg_start
        && input[last + 1..].iter().all(|&b| is_json_ws(b))
    {
        // Whitespace up to the end after a closing quote: a `:` may follow in the next piece.
        let mut name = NameBuf::new();
        name.extend(&input[seg_start..last]);
        return (n, Json::AfterQuote(name));
    }
    (n, tail_state(last + 1))
}

/// JSON whitespace.
fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

#[cfg(test)]
/// The JSON machine's common path as it was before [`json_fast`], kept as its reference: from the start of a string at `start` (just after a quote)
/// while the whole string lies in `input`: finds each closing quote with `memchr`, looks past
/// whitespace for `:` and checks the rule only then. Returns where it stopped and the state
/// there: at the piece end, or at a secret key's `:` (the caller then masks the value).
fn json_fast_by_quotes(input: &[u8], start: usize) -> (usize, Json) {
    let n = input.len();
    let mut specials = Specials::new(input);
    let mut seg_start = start;
    loop {
        let Some(q) = specials.next(seg_start) else {
            let tail = &input[seg_start..];
            // A string holding JSON punctuation is no key: nothing to carry over.
            if tail.len() <= MAX_NAME && has_json_punct(tail) {
                return (n, Json::Out);
            }
            let mut name = NameBuf::new();
            name.extend(tail);
            return (n, Json::Seg(name));
        };
        if input[q] == b'\n' {
            // A key holds no raw line break: look for the next string.
            let mut from = q + 1;
            loop {
                match specials.next(from) {
                    Some(p) if input[p] == b'\n' => from = p + 1,
                    Some(p) => {
                        seg_start = p + 1;
                        break;
                    }
                    None => return (n, Json::Out),
                }
            }
            continue;
        }
        let mut k = q + 1;
        while k < n && matches!(input[k], b' ' | b'\t' | b'\r' | b'\n') {
            k += 1;
        }
        if k == n {
            let mut name = NameBuf::new();
            name.extend(&input[seg_start..q]);
            return (n, Json::AfterQuote(name));
        }
        if input[k] == b':' && secret_key(&input[seg_start..q]) {
            return (k + 1, Json::AfterColon);
        }
        // The closing quote opened the next string.
        seg_start = q + 1;
    }
}

/// Finds the quotes and line feeds of a piece for [`json_fast_by_quotes`], eight bytes at a time (SWAR):
/// the JSON machine's common path stops at every quote of a JSON body, and strings there are
/// short, so one `memchr2` call per string costs more than the bytes it skips. A long run
/// without either byte (a long text value) is left to `memchr2`.
#[cfg(test)]
struct Specials<'a> {
    input: &'a [u8],
    /// Start of the word in `mask` (a multiple of 8; `usize::MAX` before the first).
    base: usize,
    /// Bit 7 of each byte of the word at `base` set where the byte is a quote or a line feed.
    mask: u64,
}

/// Words scanned eight bytes at a time before a search is handed to `memchr2`.
#[cfg(test)]
const SWAR_WORDS: usize = 8;

/// Bit 7 set in exactly the bytes of `w` equal to `b` (no false positives: no carry crosses
/// bytes, as `(x & 0x7f) + 0x7f` is at most 0xfe).
#[cfg(test)]
fn bytes_equal(w: u64, b: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = w ^ (u64::from(b) * 0x0101_0101_0101_0101);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

#[cfg(test)]
impl<'a> Specials<'a> {
    fn new(input: &'a [u8]) -> Self {
        Specials {
            input,
            base: usize::MAX,
            mask: 0,
        }
    }

    /// The position of the first quote or line feed at or after `pos`.
    fn next(&mut self, mut pos: usize) -> Option<usize> {
        let n = self.input.len();
        let mut words = 0;
        while pos < n {
            let base = pos & !7;
            if base != self.base {
                if words == SWAR_WORDS {
                    return memchr2(b'"', b'\n', &self.input[pos..]).map(|p| pos + p);
                }
                words += 1;
                let w = match self.input.get(base..base + 8) {
                    Some(w) => <[u8; 8]>::try_from(w).unwrap_or_default(),
                    None => {
                        // The last, short word: zeros match neither byte.
                        let mut w = [0u8; 8];
                        for (d, s) in w.iter_mut().zip(&self.input[base..]) {
                            *d = *s;
                        }
                        w
                    }
                };
                let w = u64::from_le_bytes(w);
                self.base = base;
                self.mask = bytes_equal(w, b'"') | bytes_equal(w, b'\n');
            }
            let m = self.mask & (u64::MAX << ((pos - base) * 8));
            if m != 0 {
                return Some(base + (m.trailing_zeros() / 8) as usize);
            }
            pos = base + 8;
        }
        None
    }
}

/// How one piece of a stream reaches the scrubber in [`scrub_stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered normally.
    Delivered,
    /// Lost in the ring buffer. The next delivered piece carries `lost_before` when it starts a
    /// new call; inside the same call only the hole in the offsets shows the loss.
    Dropped,
    /// Lost in the ring buffer; the next delivered piece carries `lost_before`.
    DroppedFlagged,
    /// Delivered, but the scrubber's table evicted the stream's state just before.
    Evicted,
}

/// One piece of a stream for [`scrub_stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Bytes in the piece.
    pub len: usize,
    /// The piece starts a new syscall / SSL call (else it continues the previous piece's call).
    pub new_call: bool,
    /// What happens to it.
    pub delivery: Delivery,
}

/// Entry point for fuzzers and property tests: cuts `stream` into `pieces` (lengths past the
/// end are clamped; bytes left over form one last delivered piece), feeds the delivered ones
/// through a fresh [`SecretScrubber`] as one connection's egress (with the offsets, totals and
/// `lost_before` flags the kernel would produce), and checks the invariant: no byte inside
/// `secrets` (ranges of `stream` that hold secret values: header values of secret headers,
/// secret query/form parameter values, string values of secret JSON keys, each at a position
/// where the protocol puts it) survives in any output, CR and LF excepted, and every piece
/// keeps its length. Returns the delivered output pieces, or a description of the first
/// violation.
pub fn scrub_stream(
    stream: &[u8],
    pieces: &[Piece],
    secrets: &[Range<usize>],
) -> Result<Vec<Vec<u8>>, String> {
    let mut scrubber = SecretScrubber::new();
    let mut pos = 0;
    let mut list: Vec<Piece> = Vec::with_capacity(pieces.len() + 1);
    for p in pieces {
        let len = p.len.min(stream.len() - pos);
        list.push(Piece { len, ..*p });
        pos += len;
    }
    if pos < stream.len() || list.is_empty() {
        list.push(Piece {
            len: stream.len() - pos,
            new_call: true,
            delivery: Delivery::Delivered,
        });
    }
    // Group pieces into calls: the call each piece belongs to, where it starts, its length.
    let mut call_of = Vec::with_capacity(list.len());
    let mut calls: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    for (k, p) in list.iter().enumerate() {
        if k == 0 || p.new_call {
            calls.push((at, 0));
        }
        let c = calls.len() - 1;
        calls[c].1 += p.len;
        call_of.push(c);
        at += p.len;
    }
    let mut outputs = Vec::new();
    let mut at = 0;
    let mut flag_next = false;
    let mut dropped_in_call = false;
    for (k, p) in list.iter().enumerate() {
        let range = at..at + p.len;
        at += p.len;
        match p.delivery {
            Delivery::Dropped | Delivery::DroppedFlagged => {
                flag_next |= p.delivery == Delivery::DroppedFlagged;
                dropped_in_call = true;
                continue;
            }
            Delivery::Evicted => {
                // What a full table does: only a stored state can be evicted.
                let key = (1, 1, Direction::Egress);
                if scrubber.open.contains_key(&key) {
                    scrubber.evict(key);
                }
            }
            Delivery::Delivered => {}
        }
        let starts_call = k == 0 || p.new_call;
        let lost_before = flag_next || (dropped_in_call && starts_call);
        flag_next = false;
        dropped_in_call = false;
        let mut chunk = DataChunk {
            meta: super::events::EventMeta {
                pid: 1,
                tid: 1,
                fd: 3,
                conn_id: 1,
                ts_ns: 0,
                comm: String::new(),
                container: None,
            },
            direction: Direction::Egress,
            tls: true,
            offset: u32::try_from(range.start - calls[call_of[k]].0).map_err(|e| e.to_string())?,
            total_len: u32::try_from(calls[call_of[k]].1).map_err(|e| e.to_string())?,
            lost_before,
            data: Bytes::copy_from_slice(&stream[range.clone()]),
            api_key_id: None,
            mcp_session_id: None,
        };
        scrubber.scrub(&mut chunk);
        if chunk.data.len() != p.len {
            return Err(format!(
                "piece {k} changed length: {} -> {}",
                p.len,
                chunk.data.len()
            ));
        }
        for s in secrets {
            let lo = s.start.max(range.start);
            let hi = s.end.min(range.end);
            for (q, &orig) in stream.iter().enumerate().take(hi).skip(lo) {
                let b = chunk.data[q - range.start];
                if b != MASK && orig != b'\r' && orig != b'\n' {
                    return Err(format!(
                        "secret byte {q} ({:?}) survived in piece {k} ({range:?}): {:?}",
                        orig as char,
                        String::from_utf8_lossy(&chunk.data)
                    ));
                }
            }
        }
        outputs.push(chunk.data.to_vec());
    }
    Ok(outputs)
}

/// xorshift64*: deterministic pseudo-random numbers for [`secret_stream`] and the tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// For fuzzers and property tests: a stream of 1 to 4 HTTP/1.1 messages (requests with secret
/// query parameters, credential headers, folded lines and a JSON body with a key; OAuth token
/// responses; form-encoded token requests; SSE events; a response with a cookie), glued
/// together as on a keep-alive connection, holding random secrets at every place the rules
/// cover. Returns it with the ranges of the secret bytes, ready for [`scrub_stream`]. The same
/// seed gives the same stream.
pub fn secret_stream(seed: u64) -> (Vec<u8>, Vec<Range<usize>>) {
    let rng = &mut Rng(seed | 1);
    let mut out = Vec::new();
    let mut secrets = Vec::new();
    let mut secret = |out: &mut Vec<u8>, rng: &mut Rng| {
        let len = 4 + rng.below(30);
        let start = out.len();
        for _ in 0..len {
            let c = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/"
                [rng.below(68)];
            out.push(c);
        }
        secrets.push(start..out.len());
    };
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 => {
                out.extend_from_slice(b"POST /v1/x?alt=sse&");
                out.extend_from_slice(
                    [&b"key="[..], b"api%5Fkey=", b"%6Bey=", b"X-Amz-Signature=", b"sig="]
                        [rng.below(5)],
                );
                secret(&mut out, rng);
                out.extend_from_slice(b"&b=1 HTTP/1.1\r\nHost: h\r\n");
                let name = [
                    &b"Authorization: Bearer "[..],
                    b"X-Amz-Security-Token: ",
                    b"cf-aig-authorization : ",
                    b"Cookie:\t",
                    b"x-portkey-api-key:",
                ][rng.below(5)];
                out.extend_from_slice(name);
                secret(&mut out, rng);
                if rng.below(2) == 0 {
                    out.extend_from_slice(b"\r\n ");
                    secret(&mut out, rng);
                }
                out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"model\":\"m\",\"api_key\":\"");
                secret(&mut out, rng);
                out.extend_from_slice(b"\"}");
            }
            1 => {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"access_token\":\"");
                secret(&mut out, rng);
                out.extend_from_slice(b"\",\"expires_in\":3600,\"id_token\": \"");
                secret(&mut out, rng);
                out.extend_from_slice(b"\\\"");
                secret(&mut out, rng);
                out.extend_from_slice(b"\"}\r\n");
            }
            2 => {
                out.extend_from_slice(b"POST /token HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\ngrant_type=refresh_token&refresh_token=");
                secret(&mut out, rng);
                out.extend_from_slice(b"&client_secret=");
                secret(&mut out, rng);
            }
            3 => out.extend_from_slice(
                b"data: {\"choices\":[{\"delta\":{\"content\":\"a \\\"b\\\" c\"}}],\"usage\":{\"prompt_tokens\":3}}\n\n",
            ),
            _ => {
                out.extend_from_slice(b"HTTP/1.1 401 Unauthorized\r\nSet-Cookie: s=");
                secret(&mut out, rng);
                out.extend_from_slice(b"\r\nx-ratelimit-remaining-tokens: 9\r\n\r\n");
            }
        }
    }
    (out, secrets)
}

#[cfg(test)]
mod tests;
