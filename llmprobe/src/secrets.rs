//! Secret policy: the one place that decides what is a credential. Every stage that could let a
//! secret through asks here: the in-place masker ([`crate::probes::scrub`]) for header values,
//! query and form parameters and JSON string values in raw bytes; the HTTP head parser
//! ([`crate::protocol::http1`]) when it drops headers from parsed heads; the exchange when it
//! records `http_path` ([`redact_query`]); log statements that print URLs ([`redact_url`]) or
//! peer-controlled names and paths ([`log_safe`]); and the capture filter
//! ([`is_http2_preface`]: HTTP/2 connections are never recorded).
//!
//! The rules (all case-insensitive):
//! - **Header names** ([`is_secret_header`]): a name in [`SECRET_HEADER_NAMES`], or one that
//!   contains any word of [`SECRET_NAME_WORDS`] (`key`, `token`, `secret`, `auth`, `signature`,
//!   `credential`, `password`, `session`, `cookie`, ...), so `X-Amz-Security-Token`,
//!   `Ocp-Apim-Subscription-Key`, `helicone-auth` or `cf-aig-authorization` are caught without
//!   being listed. Exempt: [`NEVER_SECRET_HEADERS`] (framing and the headers llmprobe reads: never
//!   masked, whatever the words say) and names starting with a [`COUNTER_HEADER_PREFIXES`] entry
//!   (`x-ratelimit-remaining-tokens`, `anthropic-ratelimit-tokens-limit`: counters, not
//!   credentials). A name longer than [`MAX_NAME`] bytes is secret (fails closed: such names are
//!   never framing headers). Other non-secrets the words catch (`www-authenticate`,
//!   `idempotency-key`, `sec-websocket-key`, `x-session-affinity`) are masked: that costs
//!   nothing, as llmprobe never reads them.
//! - **Query and form parameters** ([`is_secret_param`]): the name is percent-decoded first
//!   (`api%5Fkey`, `%6Bey`), then it is secret when it is in [`SECRET_PARAM_NAMES`] (`sig`,
//!   `code`, ...) or matches the header-name words (`key`, `api_key`, `access_token`,
//!   `X-Amz-Signature`, `client_secret`, `refresh_token`, `password`, `subscription-key`...).
//! - **JSON keys** ([`is_secret_json_key`]): JSON escapes are decoded first (`client\u005fsecret`),
//!   then the header-name words apply (`client_secret`, `refresh_token`, `access_token`,
//!   `id_token`, `api_key`, `password`, `apiKey`...). Only *string* values are masked, so token
//!   counts (`"prompt_tokens": 12`) are untouched.
//!
//! Masking more than needed is acceptable wherever it cannot break parsing; masking less is not.

use std::fmt;

/// The byte a masked secret is overwritten with (same length, so framing never changes).
pub const MASK: u8 = b'*';

/// Longest name (header, parameter, JSON key) compared against the rules; longer names are
/// treated as secret (they can only mask more).
pub const MAX_NAME: usize = 64;

/// Header names whose values are secrets, whatever the word rule says.
pub const SECRET_HEADER_NAMES: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
    "cookie2",
    "set-cookie2",
];

/// A header name, query/form parameter name or JSON key containing one of these words (after
/// lower-casing) names a secret.
pub const SECRET_NAME_WORDS: &[&str] = &[
    "key",
    "token",
    "secret",
    "auth",
    "signature",
    "credential",
    "password",
    "passwd",
    "session",
    "cookie",
];

/// Parameter names that are secrets but contain none of [`SECRET_NAME_WORDS`].
pub const SECRET_PARAM_NAMES: &[&str] = &[
    "sig",
    "code",
    "pwd",
    "pass",
    "assertion",
    "client_assertion",
    "jwt",
];

/// Headers that are never masked: message framing (masking them would break parsing) and the
/// headers llmprobe reads to build a record.
pub const NEVER_SECRET_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "content-encoding",
    "content-type",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "traceparent",
    "tracestate",
    "x-request-id",
    "request-id",
    "x-dashscope-request-id",
    "x-dashscope-sse",
    "retry-after",
];

/// Response headers that count tokens or requests (rate limits): their names contain `token`
/// but their values are numbers and times, never credentials.
pub const COUNTER_HEADER_PREFIXES: &[&str] =
    &["x-ratelimit-", "anthropic-ratelimit-", "ratelimit-"];

/// Whether a name contains one of [`SECRET_NAME_WORDS`], in any case. Runs on every header name
/// and every JSON key followed by `:`, so it looks at each 3-byte window once (`b | 0x20` is a
/// lower-case letter only for an ASCII letter) and compares whole words only on a hit.
pub fn has_secret_word(name: &[u8]) -> bool {
    let word_at = |i: usize, w: &[u8]| {
        name.len() - i >= w.len()
            && name[i..i + w.len()]
                .iter()
                .zip(w)
                .all(|(a, b)| a | 0x20 == *b)
    };
    (0..name.len().saturating_sub(2)).any(|i| {
        match [name[i] | 0x20, name[i + 1] | 0x20, name[i + 2] | 0x20] {
            [b'k', b'e', b'y'] => true,
            [b't', b'o', b'k'] => word_at(i, b"token"),
            [b's', b'e', b'c'] => word_at(i, b"secret"),
            [b's', b'i', b'g'] => word_at(i, b"signature"),
            [b's', b'e', b's'] => word_at(i, b"session"),
            [b'a', b'u', b't'] => word_at(i, b"auth"),
            [b'c', b'r', b'e'] => word_at(i, b"credential"),
            [b'c', b'o', b'o'] => word_at(i, b"cookie"),
            [b'p', b'a', b's'] => word_at(i, b"password") || word_at(i, b"passwd"),
            _ => false,
        }
    })
}

/// Lower-cases `name` into `buf`; None when it is longer than [`MAX_NAME`].
fn lower<'a>(name: &[u8], buf: &'a mut [u8; MAX_NAME]) -> Option<&'a [u8]> {
    if name.len() > MAX_NAME {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    Some(&buf[..name.len()])
}

/// True if the value of the header called `name` must never be stored (see the module docs).
pub fn is_secret_header(name: &str) -> bool {
    is_secret_header_bytes(name.trim().as_bytes())
}

/// [`is_secret_header`] on raw bytes (as seen on the wire, any case).
pub fn is_secret_header_bytes(name: &[u8]) -> bool {
    let mut buf = [0u8; MAX_NAME];
    let Some(l) = lower(name, &mut buf) else {
        return true;
    };
    if NEVER_SECRET_HEADERS.iter().any(|n| n.as_bytes() == l) {
        return false;
    }
    if SECRET_HEADER_NAMES.iter().any(|n| n.as_bytes() == l) {
        return true;
    }
    if COUNTER_HEADER_PREFIXES
        .iter()
        .any(|p| l.starts_with(p.as_bytes()))
    {
        return false;
    }
    has_secret_word(l)
}

/// True if a query-string or form parameter called `raw_name` (as sent: percent-encoded) holds a
/// secret. The name is percent-decoded before matching; a name that does not fit in
/// [`MAX_NAME`] bytes is secret.
pub fn is_secret_param(raw_name: &[u8]) -> bool {
    let mut buf = [0u8; MAX_NAME];
    let mut n = 0;
    for b in percent_decoded(raw_name) {
        if n == MAX_NAME {
            return true;
        }
        buf[n] = b.to_ascii_lowercase();
        n += 1;
    }
    let l = &buf[..n];
    SECRET_PARAM_NAMES.iter().any(|p| p.as_bytes() == l) || has_secret_word(l)
}

/// Headers whose value is an API credential: besides being masked, the masker fingerprints it
/// (`api_key_id`, see [`crate::probes::scrub`]). `authorization`'s scheme (`Bearer`, `Basic`) is
/// not part of the credential, so one key sent as `Authorization: Bearer K` or `x-api-key: K`
/// has one fingerprint.
pub const API_KEY_HEADERS: &[&str] = &["authorization", "x-api-key", "api-key", "x-goog-api-key"];

/// The MCP session header: a capability (whoever holds it acts in the session), so secret by
/// the `session` word, and read by the masker for its keyed id (`mcp_session_id`), like an API
/// key's fingerprint but in a domain of its own.
pub const MCP_SESSION_HEADER: &str = "mcp-session-id";

/// Whether the header called `name` (raw bytes, any case) is [`MCP_SESSION_HEADER`].
pub fn is_mcp_session_header(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(MCP_SESSION_HEADER.as_bytes())
}

/// Query (or form) parameters whose value is an API credential (Gemini's `?key=`), matched after
/// percent-decoding, any case.
pub const API_KEY_PARAMS: &[&str] = &["key", "api_key", "api-key"];

/// Whether the header called `name` (raw bytes, any case) carries an API credential
/// ([`API_KEY_HEADERS`]). Such a header is always secret too.
pub fn is_api_key_header(name: &[u8]) -> bool {
    API_KEY_HEADERS
        .iter()
        .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether `name` is `authorization` (any case): its value starts with a scheme.
pub fn is_authorization_header(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"authorization")
}

/// Whether a query or form parameter called `raw_name` (as sent, percent-encoded) carries an API
/// credential ([`API_KEY_PARAMS`]). Such a parameter is always secret too.
pub fn is_api_key_param(raw_name: &[u8]) -> bool {
    API_KEY_PARAMS.iter().any(|p| {
        let mut want = p.bytes();
        percent_decoded(raw_name).all(|b| want.next() == Some(b.to_ascii_lowercase()))
            && want.next().is_none()
    })
}

/// True if a JSON object key (raw bytes between its quotes, escapes not yet decoded) names a
/// credential whose string value must be masked.
pub fn is_secret_json_key(raw_key: &[u8]) -> bool {
    if !raw_key.contains(&b'\\') {
        return raw_key.len() > MAX_NAME || has_secret_word(raw_key);
    }
    let mut buf = [0u8; MAX_NAME];
    let mut n = 0;
    let mut i = 0;
    while i < raw_key.len() {
        let mut b = raw_key[i];
        if b == b'\\' {
            match raw_key.get(i + 1) {
                Some(b'u') => {
                    let digits = raw_key.get(i + 2..i + 6);
                    let code = digits.and_then(|d| {
                        d.iter()
                            .try_fold(0u32, |acc, c| Some(acc * 16 + u32::from(hex(*c)?)))
                    });
                    match code {
                        Some(c) => {
                            // A non-ASCII character never completes a secret word: keep a
                            // placeholder so the words around it stay apart.
                            b = u8::try_from(c).ok().filter(u8::is_ascii).unwrap_or(b'?');
                            i += 5;
                        }
                        None => i += 1,
                    }
                }
                Some(&c) => {
                    b = c;
                    i += 1;
                }
                None => {}
            }
        }
        i += 1;
        if n == MAX_NAME {
            return true;
        }
        buf[n] = b.to_ascii_lowercase();
        n += 1;
    }
    has_secret_word(&buf[..n])
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The bytes of `raw` with its `%XX` escapes decoded: the one percent-decoding rule of the agent
/// (parameter names here, Gemini model paths, OTLP header settings). An escape that is not `%`
/// and two hex digits is kept as it is. Allocates nothing.
pub fn percent_decoded(raw: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *raw.get(i)?;
        if b == b'%'
            && let (Some(h), Some(l)) = (
                raw.get(i + 1).and_then(|c| hex(*c)),
                raw.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            i += 3;
            return Some(h * 16 + l);
        }
        i += 1;
        Some(b)
    })
}

/// `s` with its `%XX` escapes decoded ([`percent_decoded`]); bytes that do not form UTF-8 after
/// decoding become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let bytes: Vec<u8> = percent_decoded(s.as_bytes()).collect();
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// What replaces a secret parameter value in a recorded path.
pub const REDACTED: &str = "REDACTED";

/// A request target with the values of secret query parameters ([`is_secret_param`]) replaced
/// by `REDACTED` (for `http_path`). The fragment, if any, is dropped.
pub fn redact_query(path: &str) -> String {
    let path = path.split('#').next().unwrap_or(path);
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if is_secret_param(k.as_bytes()) => format!("{k}={REDACTED}"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

/// A URL fit for logs: userinfo (`user:pass@`) and the whole query and fragment are replaced by
/// `REDACTED`, control characters are escaped (see [`log_safe`]).
/// `https://u:p@collector:4318/v1/traces?api_key=x` → `https://REDACTED@collector:4318/v1/traces?REDACTED`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let cut = rest.find(['?', '#']);
    let (before, had_query) = match cut {
        Some(i) => (&rest[..i], true),
        None => (rest, false),
    };
    let auth_end = before.find('/').unwrap_or(before.len());
    let (auth, path) = before.split_at(auth_end);
    let mut out = String::new();
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    match auth.rsplit_once('@') {
        Some((_, host)) => {
            out.push_str(REDACTED);
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(auth),
    }
    out.push_str(path);
    if had_query {
        out.push('?');
        out.push_str(REDACTED);
    }
    log_safe(&out).to_string()
}

/// Most characters of a peer-controlled string that [`log_safe`] writes.
pub const LOG_SAFE_MAX_CHARS: usize = 256;

/// Wraps a string that other processes control (paths, process and file names, header names)
/// for a log line: control characters (newlines, escape sequences, DEL, C1) are written as
/// `\n`, `\u{1b}`..., a backslash as `\\`, and the text is cut after [`LOG_SAFE_MAX_CHARS`]
/// characters with a note of how many bytes were left out. A log line can then never be forged
/// or hidden by the text it quotes.
pub fn log_safe(s: &str) -> LogSafe<'_> {
    LogSafe(s)
}

/// See [`log_safe`].
#[derive(Debug, Clone, Copy)]
pub struct LogSafe<'a>(&'a str);

impl fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for (n, (i, c)) in self.0.char_indices().enumerate() {
            if n == LOG_SAFE_MAX_CHARS {
                return write!(f, "…({} more bytes)", self.0.len() - i);
            }
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
                {
                    write!(f, "\\u{{{:x}}}", u32::from(c))?
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// True if a connection's first bytes are (or begin) the HTTP/2 client preface, or are a
/// non-empty prefix of it: such a connection must never be recorded (its HPACK-compressed
/// headers cannot be masked by the line rules).
pub fn is_http2_preface(first_bytes: &[u8]) -> bool {
    if first_bytes.is_empty() {
        return false;
    }
    let n = first_bytes.len().min(HTTP2_PREFACE.len());
    first_bytes[..n] == HTTP2_PREFACE[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_dispatch_covers_every_word() {
        for w in SECRET_NAME_WORDS {
            assert!(has_secret_word(w.as_bytes()), "{w}");
            assert!(has_secret_word(format!("x-{w}-y").as_bytes()), "{w}");
            assert!(has_secret_word(w.to_ascii_uppercase().as_bytes()), "{w}");
            assert!(
                !has_secret_word(&w.as_bytes()[1..]),
                "{w} minus its first letter"
            );
            assert!(
                !has_secret_word(&w.as_bytes()[..w.len() - 1]),
                "{w} minus its last letter"
            );
        }
    }

    #[test]
    fn header_rule_catches_credentials_by_word() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "X-Amz-Security-Token",
            "Ocp-Apim-Subscription-Key",
            "x-portkey-api-key",
            "helicone-auth",
            "cf-aig-authorization",
            "dd-api-key",
            "Cookie",
            "set-cookie",
            "x-goog-api-key",
            "X-Client-Secret",
            "x-session-id",
            "x-db-password",
            "X-Amz-Signature",
            "x-credential",
            // Longer than MAX_NAME: fails closed.
            &"x".repeat(MAX_NAME + 1),
        ] {
            assert!(is_secret_header(name), "{name} should be secret");
        }
    }

    #[test]
    fn header_rule_keeps_what_llmprobe_needs() {
        for name in [
            "x-request-id",
            "traceparent",
            "Content-Length",
            "transfer-encoding",
            "content-encoding",
            "content-type",
            "host",
            "retry-after",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-limit-tokens",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-input-tokens-limit",
            "openai-processing-ms",
            "x-api-version",
            "x-dashscope-sse",
            "anthropic-version",
        ] {
            assert!(!is_secret_header(name), "{name} should be kept");
        }
    }

    #[test]
    fn param_rule_decodes_names() {
        for name in [
            "key",
            "KEY",
            "api_key",
            "api%5Fkey",
            "api%5fkey",
            "%6Bey",
            "%6b%65%79",
            "access_token",
            "X-Amz-Signature",
            "X-Amz-Security-Token",
            "client_secret",
            "refresh_token",
            "password",
            "sig",
            "subscription-key",
            "code",
        ] {
            assert!(is_secret_param(name.as_bytes()), "{name} should be secret");
        }
        for name in ["alt", "model", "stream", "%6Bex", "api%5Fversion", "beta"] {
            assert!(!is_secret_param(name.as_bytes()), "{name} should be kept");
        }
        assert!(is_secret_param("a".repeat(MAX_NAME + 1).as_bytes()));
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("s%20ecret%2Fx"), "s ecret/x");
        assert_eq!(percent_decode("models%2fgemini"), "models/gemini");
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert_eq!(percent_decode("%C3%A9"), "\u{e9}");
        let decoded: Vec<u8> = percent_decoded(b"%41%%42%4").collect();
        assert_eq!(decoded, b"A%B%4");
    }

    #[test]
    fn json_key_rule_decodes_escapes() {
        for k in [
            "client_secret",
            "refresh_token",
            "access_token",
            "id_token",
            "api_key",
            "password",
            "apiKey",
            r"client\u005fsecret",
            r"\u0070assword",
            r"api\/key",
        ] {
            assert!(is_secret_json_key(k.as_bytes()), "{k} should be secret");
        }
        for k in [
            "model",
            "content",
            "prompt",
            "role",
            r"\u006dodel",
            "stream",
        ] {
            assert!(!is_secret_json_key(k.as_bytes()), "{k} should be kept");
        }
    }

    #[test]
    fn query_values_are_redacted() {
        assert_eq!(
            redact_query("/v1beta/models/g:streamGenerateContent?alt=sse&key=AIzaSECRET"),
            "/v1beta/models/g:streamGenerateContent?alt=sse&key=REDACTED"
        );
        assert_eq!(
            redact_query("/x?api%5Fkey=s1&X-Amz-Signature=s2&ok=1&%6Bey=s3#frag"),
            "/x?api%5Fkey=REDACTED&X-Amz-Signature=REDACTED&ok=1&%6Bey=REDACTED"
        );
        assert_eq!(redact_query("/v1/chat/completions"), "/v1/chat/completions");
    }

    #[test]
    fn urls_lose_userinfo_and_query() {
        assert_eq!(
            redact_url("https://user:pa55@collector:4318/v1/traces?api_key=s3cr3t#x"),
            "https://REDACTED@collector:4318/v1/traces?REDACTED"
        );
        assert_eq!(redact_url("http://collector:4317"), "http://collector:4317");
        assert_eq!(
            redact_url("collector:4317/?k=v"),
            "collector:4317/?REDACTED"
        );
        let r = redact_url("http://h/p\n[fake] line");
        assert!(!r.contains('\n'), "{r}");
    }

    #[test]
    fn log_safe_escapes_and_caps() {
        assert_eq!(
            log_safe("a\nb\r\u{1b}[31m\\\u{202e}").to_string(),
            "a\\nb\\r\\u{1b}[31m\\\\\\u{202e}"
        );
        let long = "é".repeat(LOG_SAFE_MAX_CHARS + 10);
        let s = log_safe(&long).to_string();
        assert!(s.starts_with(&"é".repeat(LOG_SAFE_MAX_CHARS)));
        assert!(s.ends_with("…(20 more bytes)"), "{s}");
        assert_eq!(log_safe("plain").to_string(), "plain");
    }

    #[test]
    fn http2_preface_and_its_prefixes() {
        assert!(is_http2_preface(HTTP2_PREFACE));
        assert!(is_http2_preface(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"
        ));
        for n in 1..HTTP2_PREFACE.len() {
            assert!(is_http2_preface(&HTTP2_PREFACE[..n]), "prefix {n}");
        }
        assert!(!is_http2_preface(b""));
        assert!(!is_http2_preface(b"POST / HTTP/1.1\r\n"));
        assert!(!is_http2_preface(b"PRI * HTTP/1.1\r\n"));
    }
}
