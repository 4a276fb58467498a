//! `probes::sni::client_hello` on fuzzed first bytes of a TLS connection (in `--scope auto` any
//! process on the node writes them). Invariants: no panic; a name is a lower-case host name; a
//! prefix of a hello that names a host names the same host or is `Truncated`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::probes::sni::{Hello, LlmHosts, client_hello};

fuzz_target!(|raw: &[u8]| {
    let whole = client_hello(raw);
    if let Hello::Sni(host) = &whole {
        assert!(!host.is_empty() && host.len() <= 253, "{host:?}");
        assert!(
            host.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)),
            "{host:?}"
        );
        let _ = LlmHosts::default().matches(host);
        let cut = raw.len() / 2;
        let part = client_hello(&raw[..cut]);
        assert!(part == whole || part == Hello::Truncated, "{part:?} vs {whole:?}");
    }
});
