//! The server name of a TLS ClientHello, and which names belong to LLM APIs (`--scope auto`).
//!
//! Stage: beside the source. In `--scope auto` the kernel hands over the first bytes a TLS
//! socket moves (a client's first write, a server's first read): the ClientHello, in clear.
//! Its `server_name` extension says which host the process is about to talk to; a host of a
//! known LLM API (or one the user named) admits the process, and only then does it get the
//! OpenSSL uprobes.
//!
//! Invariants:
//! - Pure and total: any bytes give a [`Hello`] answer, never a panic; every read is bounds
//!   checked against the record, the handshake message and each length it declares.
//! - A truncated hello (the kernel hands over a bounded prefix) is an answer of its own
//!   ([`Hello::Truncated`]), not a guess: the name is reported only when it was read whole.
//! - A name is returned only if it is a plausible DNS host name (letters, digits, `-`, `_`, `.`,
//!   at most 253 bytes), lower-cased: the bytes come from any process on the node.

/// What the first bytes of a TLS connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello naming this host (lower case).
    Sni(String),
    /// A ClientHello without a (valid) host name: an IP-literal connection, or a name that is
    /// not a DNS host name.
    NoSni,
    /// A ClientHello cut before its extensions were read whole.
    Truncated,
    /// Not a TLS ClientHello.
    NotHello,
}

/// TLS record type of a handshake.
const RECORD_HANDSHAKE: u8 = 0x16;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 0x01;
/// Extension number of `server_name` (RFC 6066).
const EXT_SERVER_NAME: u16 = 0;
/// `server_name` entry type of a host name.
const NAME_TYPE_HOST: u8 = 0;
/// Longest DNS name.
const MAX_HOST: usize = 253;

/// A bounds-checked reader over one slice; `None` past its end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
    /// A vector with a `len_bytes`-byte length prefix.
    fn vec(&mut self, len_bytes: usize) -> Option<&'a [u8]> {
        let n = match len_bytes {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(n)
    }
}

/// Reads the server name of the ClientHello at the start of `buf` (the first bytes of a TLS
/// connection, possibly cut short).
pub fn client_hello(buf: &[u8]) -> Hello {
    // Record header: type, legacy version (3.x), length.
    let mut rec = Reader { buf };
    let (Some(kind), Some(major), Some(_minor), Some(rec_len)) =
        (rec.u8(), rec.u8(), rec.u8(), rec.u16())
    else {
        return if buf.is_empty() || looks_like_start(buf) {
            Hello::Truncated
        } else {
            Hello::NotHello
        };
    };
    if kind != RECORD_HANDSHAKE || major != 3 {
        return Hello::NotHello;
    }
    // The record as far as it was handed over; a hello in several records is read as far as
    // the first one goes.
    let record = &rec.buf[..usize::from(rec_len).min(rec.buf.len())];
    let cut = record.len() < usize::from(rec_len);
    let mut hs = Reader { buf: record };
    let Some(msg_type) = hs.u8() else {
        return Hello::Truncated;
    };
    if msg_type != CLIENT_HELLO {
        return Hello::NotHello;
    }
    let Some(msg_len) = hs.u24() else {
        return Hello::Truncated;
    };
    let body_cut = cut || hs.buf.len() < msg_len;
    let mut body = Reader {
        buf: &hs.buf[..msg_len.min(hs.buf.len())],
    };
    match server_name(&mut body) {
        Some(Some(name)) => match host_name(name) {
            Some(host) => Hello::Sni(host),
            None => Hello::NoSni,
        },
        // The rest of the hello, not handed over, may name one.
        _ if body_cut => Hello::Truncated,
        // The extensions were read whole and name no host.
        Some(None) => Hello::NoSni,
        // Lengths that do not add up inside a whole message.
        None => Hello::NotHello,
    }
}

/// True when the bytes could be the start of a TLS handshake record.
fn looks_like_start(buf: &[u8]) -> bool {
    buf[0] == RECORD_HANDSHAKE && buf.get(1).is_none_or(|&v| v == 3)
}

/// Walks a ClientHello body to its `server_name` host entry: `Some(Some(name))` found,
/// `Some(None)` read to the end without one, `None` ran out of bytes first.
fn server_name<'a>(body: &mut Reader<'a>) -> Option<Option<&'a [u8]>> {
    body.take(2 + 32)?; // legacy version, random
    body.vec(1)?; // session id
    body.vec(2)?; // cipher suites
    body.vec(1)?; // compression methods
    if body.buf.is_empty() {
        // A hello without extensions (TLS 1.2 and older may omit them).
        return Some(None);
    }
    let exts_len = usize::from(body.u16()?);
    let mut exts = Reader {
        buf: &body.buf[..exts_len.min(body.buf.len())],
    };
    while !exts.buf.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec(2)?;
        if kind != EXT_SERVER_NAME {
            continue;
        }
        let mut list = Reader { buf: data };
        let mut names = Reader { buf: list.vec(2)? };
        while !names.buf.is_empty() {
            let name_type = names.u8()?;
            let name = names.vec(2)?;
            if name_type == NAME_TYPE_HOST {
                return Some(Some(name));
            }
        }
        return Some(None);
    }
    if exts_len > body.buf.len() {
        // The extensions go on past what was handed over.
        return None;
    }
    Some(None)
}

/// The name as a lower-case DNS host name, if it is one.
fn host_name(name: &[u8]) -> Option<String> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= MAX_HOST
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with(b".")
        && !name.windows(2).any(|w| w == b"..");
    ok.then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// Hosts of LLM APIs: a name matches when it is one of them or a subdomain of one.
pub const KNOWN_LLM_HOSTS: &[&str] = &[
    "api.openai.com",
    "openai.azure.com",
    "services.ai.azure.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "api.deepseek.com",
    "dashscope.aliyuncs.com",
    "dashscope-intl.aliyuncs.com",
    "api.mistral.ai",
    "api.groq.com",
    "api.x.ai",
    "openrouter.ai",
    "api.moonshot.cn",
    "api.moonshot.ai",
    "open.bigmodel.cn",
    "api.together.xyz",
    "api.fireworks.ai",
    "api.cohere.com",
    "api.cohere.ai",
    "api.perplexity.ai",
    "api.deepinfra.com",
    "api.cerebras.ai",
    "api.siliconflow.cn",
    "ark.cn-beijing.volces.com",
    "qianfan.baidubce.com",
    "api.minimax.chat",
    "api.lingyiwanwu.com",
    "api-inference.huggingface.co",
    "router.huggingface.co",
];

/// True when `host` is `domain` or one of its subdomains (`a.domain`, not `adomain`).
pub fn is_host_or_subdomain(host: &str, domain: &str) -> bool {
    host.strip_suffix(domain)
        .is_some_and(|p| p.is_empty() || p.ends_with('.'))
}

/// Which server names admit a process in `--scope auto`: the known LLM API hosts, the user's
/// own (`--llm-host`), and the Vertex AI and Bedrock regional endpoints, whose names carry a
/// region (`us-central1-aiplatform.googleapis.com`, `bedrock-runtime.us-east-1.amazonaws.com`).
#[derive(Debug, Clone, Default)]
pub struct LlmHosts {
    /// Lower-case names matched with their subdomains (a leading `*.` in the user's list means
    /// the same).
    suffixes: Vec<String>,
}

impl LlmHosts {
    /// The known hosts plus `extra` (the user's list: `host`, or `*.domain` for every subdomain;
    /// a trailing dot and case are ignored). A name that is not a host name is an error naming it.
    pub fn new<S: AsRef<str>>(extra: &[S]) -> Result<LlmHosts, String> {
        let mut suffixes: Vec<String> = KNOWN_LLM_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        for h in extra {
            let raw = h.as_ref().trim();
            let bare = raw.strip_prefix("*.").unwrap_or(raw);
            match host_name(bare.as_bytes()) {
                Some(name) => suffixes.push(name),
                None => {
                    return Err(format!(
                        "--llm-host {raw:?}: not a host name (use e.g. llm.internal or *.example.com)"
                    ));
                }
            }
        }
        suffixes.sort();
        suffixes.dedup();
        Ok(LlmHosts { suffixes })
    }

    /// True when `host` (lower case, as [`client_hello`] returns it) is an LLM API's.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        if self.suffixes.iter().any(|s| is_host_or_subdomain(host, s)) {
            return true;
        }
        // Regional endpoints: `<region>-aiplatform.googleapis.com`,
        // `bedrock-runtime[-fips].<region>.amazonaws.com`.
        if let Some(p) = host.strip_suffix("-aiplatform.googleapis.com") {
            return !p.is_empty() && !p.contains('.');
        }
        if let Some(p) = host.strip_suffix(".amazonaws.com") {
            let mut parts = p.split('.');
            return matches!(
                (parts.next(), parts.next(), parts.next()),
                (Some("bedrock-runtime" | "bedrock-runtime-fips"), Some(region), None)
                    if !region.is_empty()
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as OpenSSL shapes it: `exts` are (type, data) in order.
    fn hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(32);
        body.extend([1u8; 32]);
        body.extend([0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend([1, 0]);
        let mut ext_bytes = Vec::new();
        for (t, d) in exts {
            ext_bytes.extend(t.to_be_bytes());
            ext_bytes.extend((d.len() as u16).to_be_bytes());
            ext_bytes.extend(d);
        }
        body.extend((ext_bytes.len() as u16).to_be_bytes());
        body.extend(ext_bytes);
        let mut hs = vec![CLIENT_HELLO];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![RECORD_HANDSHAKE, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![NAME_TYPE_HOST];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name);
        let mut d = (entry.len() as u16).to_be_bytes().to_vec();
        d.extend(entry);
        (EXT_SERVER_NAME, d)
    }

    #[test]
    fn reads_the_name_wherever_the_extension_is() {
        let first = hello(&[sni_ext(b"API.OpenAI.com"), (10, vec![0, 2, 0, 29])]);
        assert_eq!(client_hello(&first), Hello::Sni("api.openai.com".into()));
        let last = hello(&[
            (10, vec![0, 2, 0, 29]),
            (51, vec![9; 1200]),
            sni_ext(b"x.test."),
        ]);
        assert_eq!(client_hello(&last), Hello::Sni("x.test".into()));
    }

    #[test]
    fn no_name_bad_name_and_not_a_hello() {
        assert_eq!(
            client_hello(&hello(&[(10, vec![0, 2, 0, 29])])),
            Hello::NoSni
        );
        assert_eq!(client_hello(&hello(&[sni_ext(b"a b\x00")])), Hello::NoSni);
        assert_eq!(client_hello(&hello(&[sni_ext(b"")])), Hello::NoSni);
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotHello);
        assert_eq!(
            client_hello(&[0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5]),
            Hello::NotHello
        );
        // A ServerHello.
        let mut server = hello(&[sni_ext(b"a.test")]);
        server[5] = 2;
        assert_eq!(client_hello(&server), Hello::NotHello);
        // Lengths that overrun a whole message.
        let mut bad = hello(&[sni_ext(b"a.test")]);
        let n = bad.len();
        bad[n - 9] = 0xff;
        assert_ne!(client_hello(&bad), Hello::Sni("a.test".into()));
    }

    #[test]
    fn every_prefix_is_truncated_or_the_whole_answer() {
        let whole = hello(&[
            (10, vec![0, 2, 0, 29]),
            (51, vec![9; 600]),
            sni_ext(b"api.anthropic.com"),
        ]);
        for cut in 0..whole.len() {
            let got = client_hello(&whole[..cut]);
            assert_eq!(got, Hello::Truncated, "prefix of {cut} bytes");
        }
        assert_eq!(client_hello(&whole), Hello::Sni("api.anthropic.com".into()));
        // A name early in the hello is read from a short prefix.
        let early = hello(&[sni_ext(b"api.deepseek.com"), (51, vec![9; 1200])]);
        assert_eq!(
            client_hello(&early[..300]),
            Hello::Sni("api.deepseek.com".into())
        );
    }

    #[test]
    fn a_real_openssl_hello_names_its_host_within_512_bytes() {
        // Written by Python's ssl module (OpenSSL 3.0) for server_hostname="api.anthropic.com".
        let real = include_bytes!("sni_fixtures/openssl3-api.anthropic.com.bin");
        let want = Hello::Sni("api.anthropic.com".into());
        assert_eq!(client_hello(real), want);
        assert_eq!(client_hello(&real[..512]), want);
        assert_eq!(client_hello(&real[..100]), Hello::Truncated);
    }

    #[test]
    fn any_bytes_give_an_answer() {
        let whole = hello(&[sni_ext(b"a.test"), (51, vec![9; 40])]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut b = whole.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % b.len();
                b[i] = (seed >> 32) as u8;
            }
            let cut = (seed >> 40) as usize % (b.len() + 1);
            if let Hello::Sni(h) = client_hello(&b[..cut]) {
                assert!(host_name(h.as_bytes()).is_some(), "{h:?}");
            }
        }
    }

    #[test]
    fn hosts_match_with_subdomains_regions_and_the_users_list() {
        let hosts = LlmHosts::new(&["*.LLM.internal", "vllm.svc."]).expect("valid");
        for yes in [
            "api.openai.com",
            "myres.openai.azure.com",
            "api.anthropic.com",
            "us-central1-aiplatform.googleapis.com",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "a.llm.internal",
            "llm.internal",
            "vllm.svc",
        ] {
            assert!(hosts.matches(yes), "{yes}");
        }
        for no in [
            "openai.com",
            "evilapi.openai.com.attacker.net",
            "xapi.openai.com",
            "s3.us-east-1.amazonaws.com",
            "a.b-aiplatform.googleapis.com",
            "bedrock-runtime.amazonaws.com",
            "example.com",
        ] {
            assert!(!hosts.matches(no), "{no}");
        }
        assert!(LlmHosts::new(&["http://x"]).is_err());
        assert!(LlmHosts::new(&[""]).is_err());
    }
}
