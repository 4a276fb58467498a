//! `content::redact::Redactor::redact` on fuzzed text (captured prompts and completions are
//! written by whoever talks to the model). The input is `[mode: u8][seed: u64 LE][text...]`
//! (invalid UTF-8 replaced); mode bit 0 adds two custom rules, bit 1 surrounds the text with
//! real-looking secrets (so the fuzzer mutates next to matches), bit 2 puts tags in it.
//!
//! Invariants: no panic; nothing matched gives the input back, borrowed; redacting the output
//! again counts nothing; the `[REDACTED:` in the output are those of the input plus the counts;
//! the counts have one entry per rule.
#![no_main]

use std::borrow::Cow;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use llmprobe::content::redact::{CustomRule, RedactionCounts, Redactor};
use llmprobe_fuzz::Input;

const SECRETS: [&str; 10] = [
    "jane.doe@example.com",
    "+1 (555) 123-4567",
    "13812345678",
    "4111 1111 1111 1111",
    "11010519491231002X",
    "DE89 3704 0044 0532 0130 00",
    "sk-proj-Ab3dEfGh1jKlMnOpQrStUvWxYz0123456789",
    "AKIAIOSFODNN7EXAMPLE",
    "AIzaSyA-1234567890abcdefghijklmnopqrstu",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
];

fn redactors() -> &'static [Redactor; 2] {
    static R: OnceLock<[Redactor; 2]> = OnceLock::new();
    R.get_or_init(|| {
        let custom: Vec<CustomRule> = ["ticket=TKT-[0-9]{3,}", "word=(?i)secret[a-z]*"]
            .iter()
            .map(|r| r.parse().expect("rule"))
            .collect();
        [
            Redactor::new(&[]).expect("built-in rules"),
            Redactor::new(&custom).expect("custom rules"),
        ]
    })
}

fuzz_target!(|raw: &[u8]| {
    let input = Input::parse(raw);
    let r = &redactors()[usize::from(input.mode & 1)];
    let body = String::from_utf8_lossy(input.data);
    let mut text = String::new();
    let pick = |k: u64| SECRETS[((input.seed >> k) % SECRETS.len() as u64) as usize];
    if input.mode & 4 != 0 {
        text.push_str("[REDACTED:email]");
    }
    if input.mode & 2 != 0 {
        text.push_str(pick(0));
    }
    text.push_str(&body);
    if input.mode & 2 != 0 {
        text.push_str(pick(8));
    }
    if input.mode & 4 != 0 {
        text.push_str("[REDACTED:");
    }

    let n = r.rule_names().len();
    let mut counts = RedactionCounts::default();
    let out = r.redact(&text, &mut counts);
    assert_eq!(counts.0.len(), n);
    if counts.0.iter().all(|&c| c == 0) {
        assert!(matches!(out, Cow::Borrowed(_)), "{text:?}");
        assert_eq!(out, text);
    }
    let tags = |s: &str| s.matches("[REDACTED:").count() as u64;
    assert_eq!(
        tags(&out),
        tags(&text) + counts.0.iter().sum::<u64>(),
        "{text:?} -> {out:?}"
    );
    let mut again = RedactionCounts::default();
    let twice = r.redact(&out, &mut again);
    assert!(
        again.0.iter().all(|&c| c == 0),
        "{text:?} -> {out:?} -> {twice:?} ({:?})",
        again.0
    );
    assert!(matches!(twice, Cow::Borrowed(_)));
});
