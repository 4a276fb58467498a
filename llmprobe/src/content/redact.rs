//! Redaction of captured content: built-in rules for personal data and credentials, and the
//! user's own regular expressions. Pure: counts come back as values, the enrich stage turns them
//! into `llmprobe_redactions_total{rule}`.
//!
//! Stage: enrich, on every text part of a captured prompt or completion, before it is rendered
//! into a record or span. Every match is replaced by `[REDACTED:<rule>]`.
//!
//! # Rules (the names are the metric's `rule` label and the replacement's tag)
//!
//! | name | what | checked beyond the pattern |
//! | --- | --- | --- |
//! | `email` | `local@domain.tld` (ASCII local part `A-Za-z0-9._%+-`, dotted labels, a 2-63 letter TLD) | - |
//! | `phone` | `+CC ...` (8-15 digits, groups separated by space, dot or dash, an area code in parentheses); North American `(555) 123-4567`, `555-123-4567`, `555.123.4567`, `1-555-123-4567` (separators required, the same one twice); Chinese mobile `1[3-9]` + 9 digits, optionally `138-1234-5678` / `138 1234 5678` | digit boundaries (see below) |
//! | `cn_resident_id` | Chinese resident ID, 18 characters, the last may be `X`/`x` | province code, a real date of birth (1900-2099, leap years), ISO 7064 MOD 11-2 check character |
//! | `payment_card` | 13-19 digits, contiguous or grouped by single spaces or single dashes (4-4-4-4[-1..4], Amex 4-6-5, Diners 4-6-4) | Luhn; issuer prefix 3, 4, 5, 6 or 2221-2720; a trailing group that breaks the number off is left out |
//! | `iban` | two capital letters, two check digits, the BBAN, contiguous or in groups of 4 separated by single spaces | the country's registered length (unknown country: not an IBAN), mod-97 = 1 |
//! | `api_key` | `sk-` + at least 20 of `A-Za-z0-9_-` (OpenAI `sk-`/`sk-proj-`/`sk-svcacct-`, Anthropic `sk-ant-api03-`, DeepSeek `sk-<32 hex>`) | the key has a digit and an upper-case letter or 32 hex digits in a row (so `sk-learn-...` words stay) |
//! | `aws_access_key` | `AKIA` / `ASIA` + 16 of `A-Z0-9` | not inside a longer word |
//! | `google_api_key` | `AIza` + 35 of `A-Za-z0-9_-` | not inside a longer word |
//! | `jwt` | `eyJ...` `.` `...` `.` `[signature]` (base64url) | header and payload decode to JSON objects |
//! | custom | `--redact-rule NAME=REGEX` (Rust `regex` syntax) | - |
//!
//! Boundaries: a number (phone, card, ID, IBAN) or key is redacted only when it is not part of
//! a longer word: the character before and after is not an ASCII letter, digit or `_`, nor a `.`
//! or `-` joined to a further digit (so `1.2.13812345678`, `v2-4111111111111111`, the last group
//! of a UUID, an IPv4 address or a version are left alone; Chinese text right next to a number is
//! a boundary). A card also needs no digit group just before it (`12 4111 ...`).
//!
//! # Semantics
//!
//! - Existing tags (`[REDACTED:name]`) and any `[REDACTED:` text are never matched or changed:
//!   the text between them is scanned as separate pieces, and a piece's start and end count as
//!   boundaries (a custom `^` matches at a piece's start).
//! - Candidates of every rule are found with the `regex` crate (finite automata, no
//!   backtracking: linear in the text); checksums and the other checks run only on candidates.
//!   A rejected candidate of bounded length (numbers, AWS and Google keys) is retried one
//!   character further on, an unbounded one (e-mail, `sk-` keys, JWTs, custom rules) after its
//!   end.
//! - Overlaps: the leftmost candidate wins, then the longest, then the rule listed first
//!   (built-in rules in the table's order, then custom rules in their order). Empty matches of a
//!   custom rule are skipped.
//! - The output is a fixed point: redacting it again finds nothing. A replacement can make a
//!   neighbour redactable (a number glued to a redacted e-mail gains a boundary), so the text is
//!   scanned again after any replacement, at most [`MAX_PASSES`] times in all; every pass is
//!   linear and the passes after the first only run when the one before replaced something.
//! - Counts are exact: each inserted tag counts once for its rule, so the number of
//!   `[REDACTED:` in the output is the number in the input plus the sum of the counts.
//! - Nothing matched: the input comes back borrowed, nothing allocated.

use std::borrow::Cow;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use regex::{Regex, RegexBuilder};

/// A custom rule from the configuration: `NAME=REGEX` (`--redact-rule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomRule {
    /// The rule's name (the metric's `rule` label and the replacement's tag).
    pub name: String,
    /// The regular expression (Rust `regex` syntax).
    pub pattern: String,
}

impl std::str::FromStr for CustomRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, pattern) = s
            .split_once('=')
            .ok_or_else(|| format!("redaction rule {s:?}: expected NAME=REGEX"))?;
        Ok(CustomRule {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
        })
    }
}

/// How many times each rule fired, by rule index ([`Redactor::rule_names`] order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedactionCounts(pub Vec<u64>);

impl RedactionCounts {
    /// All redactions, every rule together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// The built-in rules' names, in priority order (the first entries of [`Redactor::rule_names`]).
pub const BUILTIN_RULES: [&str; 9] = [
    "email",
    "phone",
    "cn_resident_id",
    "payment_card",
    "iban",
    "api_key",
    "aws_access_key",
    "google_api_key",
    "jwt",
];

/// The most custom rules.
pub const MAX_CUSTOM_RULES: usize = 64;
/// The longest custom pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 4096;
/// Compiled size limit of one custom rule (the `regex` crate's `size_limit`).
pub const CUSTOM_SIZE_LIMIT: usize = 1 << 20;
/// Lazy DFA cache limit of one custom rule (`dfa_size_limit`).
pub const CUSTOM_DFA_SIZE_LIMIT: usize = 1 << 21;
/// The most scans of one text (the first and rescans after replacements).
pub const MAX_PASSES: usize = 8;

/// The text that opens every tag; never matched by a rule.
const TAG_OPEN: &str = "[REDACTED:";

/// The checks a candidate of a built-in pattern must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Email,
    PhoneIntl,
    PhoneNanp,
    PhoneCn,
    CnId,
    Card,
    Iban,
    OpenAiKey,
    Aws,
    Google,
    Jwt,
    Custom,
}

impl Check {
    /// Candidates of bounded length: a rejected one is retried one character further on.
    fn bounded(self) -> bool {
        !matches!(
            self,
            Check::Email | Check::OpenAiKey | Check::Jwt | Check::Custom
        )
    }
}

/// One compiled pattern and the rule it counts for.
#[derive(Debug, Clone)]
struct Pattern {
    rule: usize,
    re: Regex,
    check: Check,
}

/// The built-in patterns: (rule index in [`BUILTIN_RULES`], regex, check).
const BUILTIN_PATTERNS: [(usize, &str, Check); 11] = [
    (
        0,
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,63}",
        Check::Email,
    ),
    (
        1,
        r"\+[1-9][0-9]{0,3}(?:[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}",
        Check::PhoneIntl,
    ),
    (
        1,
        r"(?:1[ .\-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])[0-9]{3}[ .\-][0-9]{4}",
        Check::PhoneNanp,
    ),
    (
        1,
        r"1[3-9][0-9](?:[0-9]{8}|-[0-9]{4}-[0-9]{4}| [0-9]{4} [0-9]{4})",
        Check::PhoneCn,
    ),
    (2, r"[1-9][0-9]{5}(?:19|20)[0-9]{9}[0-9Xx]", Check::CnId),
    (3, r"[0-9](?:[ \-]?[0-9]){12,18}", Check::Card),
    (
        4,
        r"[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,29}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)",
        Check::Iban,
    ),
    (5, r"sk-[A-Za-z0-9_\-]{20,}", Check::OpenAiKey),
    (6, r"(?:AKIA|ASIA)[A-Z0-9]{16}", Check::Aws),
    (7, r"AIza[A-Za-z0-9_\-]{35}", Check::Google),
    (
        8,
        r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*",
        Check::Jwt,
    ),
];

/// The rules, compiled once.
#[derive(Debug, Clone)]
pub struct Redactor {
    names: Vec<String>,
    patterns: Vec<Pattern>,
}

impl Redactor {
    /// The built-in rules and `custom` after them; an invalid custom rule is an error that says
    /// which and why.
    pub fn new(custom: &[CustomRule]) -> anyhow::Result<Self> {
        let mut names: Vec<String> = BUILTIN_RULES.iter().map(|n| (*n).to_owned()).collect();
        let mut patterns = Vec::new();
        for (rule, re, check) in BUILTIN_PATTERNS {
            patterns.push(Pattern {
                rule,
                re: Regex::new(re).context("built-in redaction pattern")?,
                check,
            });
        }
        if custom.len() > MAX_CUSTOM_RULES {
            bail!(
                "{} redaction rules: at most {MAX_CUSTOM_RULES} (combine patterns with |)",
                custom.len()
            );
        }
        for c in custom {
            let name = c.name.as_str();
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                bail!(
                    "redaction rule {name:?}: the name must be 1 to 32 of a-z, 0-9 and _ (it is a metric label and the tag [REDACTED:{name}])"
                );
            }
            if BUILTIN_RULES.contains(&name) {
                bail!(
                    "redaction rule {name:?}: a built-in rule has this name (built-in: {}); choose another",
                    BUILTIN_RULES.join(", ")
                );
            }
            if names.iter().any(|n| n == name) {
                bail!("redaction rule {name:?} is given twice; give each rule its own name");
            }
            if c.pattern.is_empty() {
                bail!("redaction rule {name:?}: the pattern is empty (expected NAME=REGEX)");
            }
            if c.pattern.len() > MAX_PATTERN_LEN {
                bail!(
                    "redaction rule {name:?}: the pattern has {} bytes, at most {MAX_PATTERN_LEN}",
                    c.pattern.len()
                );
            }
            let re = RegexBuilder::new(&c.pattern)
                .size_limit(CUSTOM_SIZE_LIMIT)
                .dfa_size_limit(CUSTOM_DFA_SIZE_LIMIT)
                .build()
                .map_err(|e| match e {
                    regex::Error::CompiledTooBig(limit) => anyhow::anyhow!(
                        "redaction rule {name:?}: the pattern compiles to more than {limit} bytes; make it smaller (fewer or bounded repetitions, \\w and \\d are Unicode classes: use [a-zA-Z0-9_] / [0-9])"
                    ),
                    e => anyhow::anyhow!("redaction rule {name:?}: invalid regular expression: {e}"),
                })?;
            if re.is_match("") {
                bail!(
                    "redaction rule {name:?}: the pattern matches the empty text (e.g. x* or x?); make it match at least one character (x+)"
                );
            }
            patterns.push(Pattern {
                rule: names.len(),
                re,
                check: Check::Custom,
            });
            names.push(name.to_owned());
        }
        Ok(Redactor { names, patterns })
    }

    /// Every rule's name, built-in first (`email`, `phone`, ...), for the metric's labels.
    pub fn rule_names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// `text` with every match replaced by `[REDACTED:<rule>]`, the matches counted in `counts`
    /// (grown to one entry per rule if shorter).
    pub fn redact<'a>(&self, text: &'a str, counts: &mut RedactionCounts) -> Cow<'a, str> {
        if counts.0.len() < self.names.len() {
            counts.0.resize(self.names.len(), 0);
        }
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        let mut matches = Vec::new();
        for _ in 0..MAX_PASSES {
            matches.clear();
            self.find_all(&out, &mut matches);
            if matches.is_empty() {
                break;
            }
            let mut s = String::with_capacity(out.len() + matches.len() * 16);
            let mut at = 0;
            for &(start, end, rule) in &matches {
                s.push_str(&out[at..start]);
                s.push_str(TAG_OPEN);
                s.push_str(&self.names[rule]);
                s.push(']');
                at = end;
                counts.0[rule] += 1;
            }
            s.push_str(&out[at..]);
            out = Cow::Owned(s);
        }
        out
    }

    /// The matches to replace in `text`: non-overlapping, in order, `(start, end, rule)`.
    fn find_all(&self, text: &str, out: &mut Vec<(usize, usize, usize)>) {
        self.find_all_in(text, out, true);
    }

    /// [`Self::find_all`], the number patterns scanned only around hot spots (`windowed`) or
    /// everywhere (the reference the tests compare with).
    fn find_all_in(&self, text: &str, out: &mut Vec<(usize, usize, usize)>, windowed: bool) {
        let mut cands = Vec::new();
        let mut seg_start = 0;
        let finder = memchr::memmem::Finder::new(TAG_OPEN);
        loop {
            let (seg_end, next) = match finder.find(&text.as_bytes()[seg_start..]) {
                Some(i) => {
                    let open = seg_start + i;
                    (open, open + tag_len(&text[open..]))
                }
                None => (text.len(), text.len()),
            };
            if seg_end > seg_start {
                let seg = &text[seg_start..seg_end];
                let (digits, ibans) = hot_windows(seg.as_bytes());
                for p in &self.patterns {
                    let windows: &[(usize, usize)] = match p.check.hot() {
                        _ if !windowed => &[(0, seg.len())],
                        Hot::Everywhere => &[(0, seg.len())],
                        Hot::Digits => &digits,
                        Hot::IbanStart => &ibans,
                    };
                    for &(w0, w1) in windows {
                        scan(p, seg, w0, w1, seg_start, &mut cands);
                    }
                }
            }
            if next >= text.len() {
                break;
            }
            seg_start = next;
        }
        cands.sort_unstable_by_key(|&(s, e, r)| (s, std::cmp::Reverse(e), r));
        let mut last_end = 0;
        for c in cands {
            if c.0 >= last_end {
                last_end = c.1;
                out.push(c);
            }
        }
    }
}

/// The length of the protected text at the start of `s` (which starts with `[REDACTED:`): a
/// whole tag `[REDACTED:name]`, else just `[REDACTED:`.
fn tag_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = TAG_OPEN.len();
    while i < b.len()
        && i - TAG_OPEN.len() < 32
        && (b[i].is_ascii_lowercase() || b[i].is_ascii_digit() || b[i] == b'_')
    {
        i += 1;
    }
    if i > TAG_OPEN.len() && b.get(i) == Some(&b']') {
        i + 1
    } else {
        TAG_OPEN.len()
    }
}

/// Where the patterns that need many digits or an IBAN start are scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hot {
    /// The whole text (patterns with a literal the `regex` crate finds fast, and custom ones).
    Everywhere,
    /// Around [`HOT_DIGITS`] digits within [`HOT_SPAN`] bytes.
    Digits,
    /// Around two capital letters followed by two digits.
    IbanStart,
}

impl Check {
    fn hot(self) -> Hot {
        match self {
            Check::PhoneIntl | Check::PhoneNanp | Check::PhoneCn | Check::CnId | Check::Card => {
                Hot::Digits
            }
            Check::Iban => Hot::IbanStart,
            _ => Hot::Everywhere,
        }
    }
}

/// Every accepted phone, ID and card has at least this many digits...
const HOT_DIGITS: usize = 7;
/// ... within this many bytes (its longest candidate, the international phone, has 47).
const HOT_SPAN: usize = 48;
/// The longest IBAN candidate in bytes (33 characters in groups of 4 with spaces: 44).
const IBAN_MAX: usize = 44;
/// Bytes scanned on each side of a hot spot: more than any candidate's length.
const HOT_MARGIN: usize = 64;

/// Byte ranges of a segment, in order.
type Windows = Vec<(usize, usize)>;

/// The windows of `seg` that the [`Hot::Digits`] and [`Hot::IbanStart`] patterns scan, merged,
/// on character boundaries.
///
/// Digit patterns (phone, ID, card; all bounded, every accepted one has 7 digits within 48
/// bytes): a window reaches [`HOT_MARGIN`] bytes around every run of 7 digits within 48 bytes.
/// An accepted candidate therefore lies inside one window, and its regex match (at most 47
/// bytes, decided by the text after its start) is the same as in the whole text; a candidate
/// cut by a window's end would need 7 more digits after the last hot spot, which would be a hot
/// spot itself. IBANs likewise around each `[A-Z]{2}[0-9]{2}`. The checks read the whole
/// segment around a candidate, so the result is the scan of the whole segment's, much faster on
/// text with few numbers (the `regex` crate finds no literal to skip to in these patterns).
fn hot_windows(seg: &[u8]) -> (Windows, Windows) {
    fn add(w: &mut Vec<(usize, usize)>, a: usize, b: usize) {
        match w.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => w.push((a, b)),
        }
    }
    let mut digits = Vec::new();
    let mut ibans = Vec::new();
    let mut ring = [0usize; HOT_DIGITS];
    let mut seen = 0usize;
    for (i, &c) in seg.iter().enumerate() {
        if c.is_ascii_digit() {
            ring[seen % HOT_DIGITS] = i;
            seen += 1;
            if seen >= HOT_DIGITS {
                // The first of the last 7 digits (the slot written next).
                let first = ring[seen % HOT_DIGITS];
                if i - first < HOT_SPAN {
                    add(
                        &mut digits,
                        first.saturating_sub(HOT_MARGIN),
                        (i + 1 + HOT_MARGIN).min(seg.len()),
                    );
                }
            }
        } else if c.is_ascii_uppercase()
            && seg.get(i + 1).is_some_and(u8::is_ascii_uppercase)
            && seg.get(i + 2).is_some_and(u8::is_ascii_digit)
            && seg.get(i + 3).is_some_and(u8::is_ascii_digit)
        {
            add(
                &mut ibans,
                i.saturating_sub(HOT_MARGIN),
                (i + IBAN_MAX + HOT_MARGIN).min(seg.len()),
            );
        }
    }
    for w in [&mut digits, &mut ibans] {
        for (a, b) in w.iter_mut() {
            while seg.get(*a).is_some_and(|&c| c & 0xC0 == 0x80) {
                *a -= 1;
            }
            while seg.get(*b).is_some_and(|&c| c & 0xC0 == 0x80) {
                *b += 1;
            }
        }
    }
    (digits, ibans)
}

/// Every accepted candidate of `p` starting in `seg[w0..w1]` (`seg` at `base` in the text), as
/// `(start, end, rule)`.
fn scan(
    p: &Pattern,
    seg: &str,
    w0: usize,
    w1: usize,
    base: usize,
    out: &mut Vec<(usize, usize, usize)>,
) {
    if p.check == Check::Custom {
        for m in p.re.find_iter(seg) {
            if !m.is_empty() {
                out.push((base + m.start(), base + m.end(), p.rule));
            }
        }
        return;
    }
    let hay = &seg[w0..w1];
    let mut pos = 0;
    while pos < hay.len() {
        let Some(m) = p.re.find_at(hay, pos) else {
            break;
        };
        match accept(p.check, seg, w0 + m.start(), w0 + m.end()) {
            Some(end) => {
                out.push((base + w0 + m.start(), base + end, p.rule));
                pos = end - w0;
            }
            // Candidates start with an ASCII character: start + 1 is a character boundary.
            None if p.check.bounded() => pos = m.start() + 1,
            None => pos = m.end().max(m.start() + 1),
        }
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The text before `start` ends a word: not a letter, digit or `_`, nor `.`/`-` after a digit.
fn left_ok(seg: &[u8], start: usize) -> bool {
    match start.checked_sub(1).map(|i| seg[i]) {
        None => true,
        Some(b) if is_word(b) => false,
        Some(b'.' | b'-') => !(start >= 2 && seg[start - 2].is_ascii_digit()),
        Some(_) => true,
    }
}

/// The text after `end` starts a new word: not a letter, digit or `_`, nor `.`/`-` before a
/// digit.
fn right_ok(seg: &[u8], end: usize) -> bool {
    match seg.get(end) {
        None => true,
        Some(&b) if is_word(b) => false,
        Some(b'.' | b'-') => !seg.get(end + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => true,
    }
}

/// Whether the candidate `seg[s..e]` is redacted, and where it ends (at most `e`).
fn accept(check: Check, seg: &str, s: usize, e: usize) -> Option<usize> {
    let b = seg.as_bytes();
    let t = &b[s..e];
    let bounded = |end: usize| (left_ok(b, s) && right_ok(b, end)).then_some(end);
    match check {
        Check::Email | Check::Custom => Some(e),
        Check::PhoneIntl => {
            if s > 0 && (is_word(b[s - 1]) || b[s - 1] == b'+') {
                return None;
            }
            let digits = t.iter().filter(|c| c.is_ascii_digit()).count();
            if !(8..=15).contains(&digits) {
                return None;
            }
            bounded(e)
        }
        Check::PhoneNanp => {
            // Without parentheses, the two separators of 555-123-4567 are the same.
            let body = if t.starts_with(b"1") && t.len() > 12 {
                &t[2..]
            } else {
                t
            };
            if body[0] != b'(' && body[3] != body[7] {
                return None;
            }
            bounded(e)
        }
        Check::PhoneCn => bounded(e),
        Check::CnId => cn_id_valid(t).then(|| bounded(e)).flatten(),
        Check::Card => card(b, s, e),
        Check::Iban => iban(b, s, e),
        Check::OpenAiKey => {
            if s > 0 && (is_word(b[s - 1]) || b[s - 1] == b'-') {
                return None;
            }
            openai_key_body(&t[3..]).then_some(e)
        }
        Check::Aws => bounded(e),
        Check::Google => {
            if s > 0 && (is_word(b[s - 1]) || b[s - 1] == b'-') {
                return None;
            }
            Some(e)
        }
        Check::Jwt => {
            if s > 0 && (is_word(b[s - 1]) || b[s - 1] == b'-' || b[s - 1] == b'.') {
                return None;
            }
            let mut parts = t.split(|&c| c == b'.');
            let header = parts.next()?;
            let payload = parts.next()?;
            (json_object_b64(header) && json_object_b64(payload)).then_some(e)
        }
    }
}

/// Province codes of Chinese resident IDs (the first two digits).
const CN_PROVINCES: [u8; 35] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83,
];

/// An 18-character Chinese resident ID: province, date of birth and the MOD 11-2 check.
fn cn_id_valid(t: &[u8]) -> bool {
    if t.len() != 18 || !t[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let num =
        |r: std::ops::Range<usize>| t[r].iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0'));
    if !CN_PROVINCES.contains(&(num(0..2) as u8)) {
        return false;
    }
    let (y, m, d) = (num(6..10), num(10..12), num(12..14));
    if !(1900..=2099).contains(&y) || !valid_date(y, m, d) {
        return false;
    }
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = t[..17]
        .iter()
        .zip(W)
        .map(|(&c, w)| u32::from(c - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize];
    t[17].to_ascii_uppercase() == check
}

fn valid_date(y: u32, m: u32, d: u32) -> bool {
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// A card candidate `b[s..e]`: the longest prefix of whole groups that is a card (shape, issuer,
/// Luhn) and ends a word.
fn card(b: &[u8], s: usize, e: usize) -> Option<usize> {
    // No digit group right before: "12 4111 1111 1111 1111" is not a card.
    if s >= 2 && matches!(b[s - 1], b' ' | b'-') && b[s - 2].is_ascii_digit() {
        return None;
    }
    if !left_ok(b, s) {
        return None;
    }
    let t = &b[s..e];
    let sep = t.iter().copied().find(|c| !c.is_ascii_digit());
    // Groups of digits, up to the first separator that differs from the first one (the regex
    // allows single separators only, so no group is empty).
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut g = 0;
    let mut stop = t.len();
    for (i, &c) in t.iter().enumerate() {
        if !c.is_ascii_digit() {
            if Some(c) != sep {
                stop = i;
                break;
            }
            groups.push((g, i));
            g = i + 1;
        }
    }
    if stop > g {
        groups.push((g, stop));
    }
    for k in (1..=groups.len()).rev() {
        let gs = &groups[..k];
        let lens: Vec<usize> = gs.iter().map(|&(a, z)| z - a).collect();
        let shape_ok = k == 1
            || lens == [4, 6, 5]
            || lens == [4, 6, 4]
            || (lens[..k - 1].iter().all(|&l| l == 4) && lens[k - 1] <= 4);
        if !shape_ok {
            continue;
        }
        let end = gs[k - 1].1;
        let digits: Vec<u8> = t[..end]
            .iter()
            .filter(|c| c.is_ascii_digit())
            .map(|c| c - b'0')
            .collect();
        if !(13..=19).contains(&digits.len()) {
            continue;
        }
        if issuer_ok(&digits) && luhn(&digits) && right_ok(b, s + end) {
            return Some(s + end);
        }
    }
    None
}

/// The first digits name a card network: 3 (Amex, Diners, JCB), 4 (Visa), 5 (Mastercard,
/// Maestro), 6 (Discover, UnionPay, Maestro), 2221-2720 (Mastercard).
fn issuer_ok(d: &[u8]) -> bool {
    match d[0] {
        3..=6 => true,
        2 => {
            let p = d[..4].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
            (2221..=2720).contains(&p)
        }
        _ => false,
    }
}

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// IBAN lengths by country (the SWIFT IBAN registry).
const IBAN_LENGTHS: [(&[u8; 2], usize); 89] = [
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HN", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// An IBAN candidate `b[s..e]`: its country's length of characters (spaces between groups
/// skipped), ending at a group's end, mod-97 = 1, and a word boundary on both sides.
fn iban(b: &[u8], s: usize, e: usize) -> Option<usize> {
    if !left_ok(b, s) {
        return None;
    }
    let t = &b[s..e];
    let want = IBAN_LENGTHS
        .iter()
        .find(|(cc, _)| &t[..2] == cc.as_slice())?
        .1;
    let mut n = 0;
    let mut end = None;
    for (i, &c) in t.iter().enumerate() {
        if c != b' ' {
            n += 1;
            if n == want {
                end = Some(i + 1);
                break;
            }
        }
    }
    let end = end?;
    // A cut must fall at the end of a group (not inside "DE89 3704 ... 00XY").
    if end < t.len() && t[end] != b' ' {
        return None;
    }
    // mod 97 of the rearranged number (first four characters moved to the end).
    let chars = t[..end].iter().filter(|&&c| c != b' ');
    let rearranged = chars.clone().skip(4).chain(chars.take(4));
    let mut rem = 0u32;
    for &c in rearranged {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    (rem == 1 && right_ok(b, s + end)).then_some(s + end)
}

/// The random part of an `sk-` key: a digit, and an upper-case letter or 32 hex digits in a row
/// (words such as `sk-learn-tutorial-for-beginners` have neither).
fn openai_key_body(body: &[u8]) -> bool {
    if !body.iter().any(u8::is_ascii_digit) {
        return false;
    }
    if body.iter().any(u8::is_ascii_uppercase) {
        return true;
    }
    let mut run = 0;
    for &c in body {
        if c.is_ascii_digit() || (b'a'..=b'f').contains(&c) {
            run += 1;
            if run >= 32 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// A base64url segment (padding optional) that decodes to a JSON object.
fn json_object_b64(seg: &[u8]) -> bool {
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let Ok(raw) = ENGINE.decode(seg) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&raw).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    fn redactor() -> Redactor {
        Redactor::new(&[]).expect("built-in rules compile")
    }

    /// The output and the non-zero counts by rule name.
    fn run(r: &Redactor, text: &str) -> (String, Vec<(String, u64)>) {
        let mut c = RedactionCounts::default();
        let out = r.redact(text, &mut c).into_owned();
        let names = r.rule_names();
        let fired =
            c.0.iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (names[i].to_owned(), *n))
                .collect();
        // Every output is a fixed point, and the tags inserted are the counts.
        let mut again = RedactionCounts::default();
        let twice = r.redact(&out, &mut again);
        assert_eq!(again.total(), 0, "{text:?} -> {out:?} -> {twice:?}");
        assert!(matches!(twice, Cow::Borrowed(_)));
        assert_eq!(
            out.matches(TAG_OPEN).count() as u64,
            text.matches(TAG_OPEN).count() as u64 + c.total(),
            "{text:?} -> {out:?}"
        );
        (out, fired)
    }

    /// `secret` inside `before`/`after` is replaced by exactly one tag of `rule`.
    fn redacted(r: &Redactor, before: &str, secret: &str, after: &str, rule: &str) {
        let text = format!("{before}{secret}{after}");
        let (out, fired) = run(r, &text);
        assert_eq!(out, format!("{before}[REDACTED:{rule}]{after}"), "{text:?}");
        assert_eq!(fired, vec![(rule.to_owned(), 1)], "{text:?}");
    }

    /// `text` is left as it is (and borrowed).
    fn kept(r: &Redactor, text: &str) {
        let mut c = RedactionCounts::default();
        let out = r.redact(text, &mut c);
        assert!(
            matches!(out, Cow::Borrowed(_)),
            "{text:?} was redacted: {out:?}"
        );
        assert_eq!(c.total(), 0);
    }

    #[test]
    fn rule_names_are_builtin_then_custom() {
        let r = Redactor::new(&["ticket=TKT-[0-9]+".parse().expect("rule")]).expect("valid");
        let mut want = BUILTIN_RULES.to_vec();
        want.push("ticket");
        assert_eq!(r.rule_names(), want);
    }

    #[test]
    fn email() {
        let r = redactor();
        redacted(
            &r,
            "write to ",
            "jane.doe+llm@example.co.uk",
            ", thanks",
            "email",
        );
        redacted(
            &r,
            r#"{"email":""#,
            "ops_team@corp-mail.example.com",
            r#""}"#,
            "email",
        );
        redacted(&r, "mailto:", "x@y.io", "?subject=hi", "email");
        redacted(&r, "联系邮箱：", "zhang.san@example.cn", "。", "email");
        for text in [
            "@app.route('/v1/chat')",
            "ssh user@localhost -p 22",
            "pip install pkg@1.2.3 and npm i left-pad@1.3.0",
            "see @channel and me@",
            "docker pull ghcr.io/org/img@sha256:abcdef0123",
        ] {
            kept(&r, text);
        }
    }

    #[test]
    fn phone() {
        let r = redactor();
        for (b, p, a) in [
            ("call ", "+1 (555) 123-4567", " now"),
            ("London office: ", "+44 20 7946 0958", "."),
            ("", "+86 138 1234 5678", ""),
            ("tel:", "+8613812345678", ""),
            ("Paris ", "+33 1 23 45 67 89", ","),
            ("call me at ", "(555) 123-4567", "."),
            ("", "555-123-4567", ""),
            ("cell: ", "555.123.4567", ";"),
            ("toll free ", "1-800-555-0199", "!"),
            ("我的手机号是", "13812345678", "，请回电"),
            ("电话：", "138-1234-5678", ""),
            ("No.", "15912345678", ""),
            (r#"{"phone":""#, "19912345678", r#""}"#),
        ] {
            redacted(&r, b, p, a, "phone");
        }
        for text in [
            "2024-01-15 10:30:00+08:00",
            "ts=1700000000 and 1700000000123",
            "host 192.168.100.200 port 8080",
            "upgraded to v1.13.2 (build 20240115)",
            "12345678901 is not a mobile, nor is 138123456789 or 1381234567",
            "555-123.4567 mixes separators",
            "version 1.2.13812345678",
            "id a13812345678f",
            "550e8400-e29b-41d4-a716-446655440000",
            "order ORD-2024-000123 and 555-123-4567-89",
            "x+12 345 and 3+4=7",
        ] {
            kept(&r, text);
        }
    }

    #[test]
    fn payment_card() {
        let r = redactor();
        for (b, p, a) in [
            ("card ", "4111 1111 1111 1111", " exp 12/27"),
            ("", "4111-1111-1111-1111", ""),
            (r#"{"card":""#, "4111111111111111", r#""}"#),
            ("amex ", "378282246310005", ""),
            ("amex ", "3782 822463 10005", "."),
            ("mc ", "5555555555554444", ""),
            ("mc 2-series ", "2223003122003222", ""),
            ("discover ", "6011111111111117", ""),
            ("卡号", "4012888888881881", "，谢谢"),
            ("paid with ", "4111 1111 1111 1111", " 2024"),
        ] {
            redacted(&r, b, p, a, "payment_card");
        }
        for text in [
            "card 4111111111111112 was declined",
            "4111 1111 1111 1112",
            "order 1234567812345678",
            "tracking 7992739871300008 and 1000000000000008",
            "94111111111111111 is too long",
            "12 4111 1111 1111 1111",
            "v2-4111111111111111",
            "epoch ms 1700000000000",
            "3f786850e387550fdab836ed7e6dc881de23001b",
        ] {
            kept(&r, text);
        }
    }

    #[test]
    fn cn_resident_id() {
        let r = redactor();
        for (b, p, a) in [
            ("身份证号：", "11010519491231002X", "。"),
            ("身份证号", "11010519491231002x", ""),
            ("id ", "110101199003074477", ""),
            ("leap day ", "320583198802294426", ""),
        ] {
            redacted(&r, b, p, a, "cn_resident_id");
        }
        for text in [
            "110101199003074478",        // check digit
            "110101199002301236",        // 30 February
            "320583190002294421",        // 1900 was not a leap year
            "990101199003071237",        // no province 99
            "1101051949123100212",       // 19 digits
            "号码A11010519491231002X号", // inside a word
        ] {
            let (_, fired) = run(&r, text);
            assert!(
                !fired.iter().any(|(n, _)| n == "cn_resident_id"),
                "{text:?}: {fired:?}"
            );
        }
    }

    #[test]
    fn iban() {
        let r = redactor();
        for iban in [
            "GB82WEST12345698765432",
            "GB82 WEST 1234 5698 7654 32",
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "BE68539007547034",
            "CH9300762011623852957",
        ] {
            redacted(&r, "IBAN: ", iban, ", ref 42", "iban");
        }
        redacted(&r, "", "BE68 5390 0754 7034", " DATE 2024", "iban");
        for text in [
            "GB82WEST12345698765433",
            "GB82 WEST 1234 5698 7654 33",
            "XX82WEST12345698765432",
            "GB82WEST1234569876543",
            "DE89370400440532013000X",
            "MODELGB82WEST12345698765432",
            "SKU AB12CD34EF56GH78IJ90",
        ] {
            let (_, fired) = run(&r, text);
            assert!(
                !fired.iter().any(|(n, _)| n == "iban"),
                "{text:?}: {fired:?}"
            );
        }
        kept(&r, "GB82WEST12345698765433");
    }

    #[test]
    fn api_keys() {
        let r = redactor();
        for (b, k, a, rule) in [
            (
                r#"{"api_key": ""#,
                "sk-proj-Ab3dEfGh1jKlMnOpQrStUvWxYz0123456789_-AbCdEf",
                r#""}"#,
                "api_key",
            ),
            (
                "Authorization: Bearer ",
                "sk-AbCdEf1234567890AbCdEf1234567890AbCdEf12345678",
                "\n",
                "api_key",
            ),
            (
                "ANTHROPIC_API_KEY=",
                "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe-Dc_BaZx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe",
                " ",
                "api_key",
            ),
            (
                "deepseek: ",
                "sk-0123456789abcdef0123456789abcdef",
                ".",
                "api_key",
            ),
            (
                "aws_access_key_id = ",
                "AKIAIOSFODNN7EXAMPLE",
                "\n",
                "aws_access_key",
            ),
            (
                r#""AccessKeyId":""#,
                "ASIAY34FZKBOKMUTVV7A",
                r#"""#,
                "aws_access_key",
            ),
            (
                "https://maps.googleapis.com/maps/api/geocode/json?address=x&key=",
                "AIzaSyA-1234567890abcdefghijklmnopqrstu",
                "&lang=en",
                "google_api_key",
            ),
            ("Authorization: Bearer ", JWT, "\r\n", "jwt"),
            ("https://app.example.com/cb?token=", JWT, "&state=1", "jwt"),
        ] {
            redacted(&r, b, k, a, rule);
        }
        for text in [
            "pip install sk-learn-tutorial-for-beginners",
            "see the risk-assessment-framework-2024-final notes",
            "task-1234567890ABCDEFGHIJKLMNOP",
            "sk-short123",
            "AKIAIOSFODNN7EXAMPL is short, XAKIAIOSFODNN7EXAMPLE is a word, AKIAIOSFODNN7EXAMPLE1 too",
            "AIzaSyA-1234567890abcdefghijklmnopqrst is short",
            "eyJhbGciOiJIUzI1NiJ9 is one segment",
            "eyJub3Q.anNvbg.sig is not JSON",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.bm90IGpzb24.sig",
        ] {
            kept(&r, text);
        }
    }

    #[test]
    fn ids_versions_and_addresses_are_kept() {
        let r = redactor();
        kept(
            &r,
            "request 550e8400-e29b-41d4-a716-446655440000 at 2024-06-01T12:34:56.789Z from \
             10.0.12.254:443 (commit 3f786850e387550fdab836ed7e6dc881de23001b, v2.11.0-rc.1, \
             order #100045237, invoice INV-2024-000981, tokens 128000, price $0.0025, \
             ip 2001:db8::8a2e:370:7334, sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08)",
        );
        kept(&r, "模型在2024年6月1日回答了1234个问题，耗时3.5秒。");
        kept(&r, "");
    }

    #[test]
    fn chinese_text_around_numbers() {
        let r = redactor();
        let (out, fired) = run(
            &r,
            "您好，我是张三，手机13812345678，邮箱zhang.san@example.cn，身份证11010519491231002X，银行卡6011111111111117。",
        );
        assert_eq!(
            out,
            "您好，我是张三，手机[REDACTED:phone]，邮箱[REDACTED:email]，身份证[REDACTED:cn_resident_id]，银行卡[REDACTED:payment_card]。"
        );
        assert_eq!(fired.len(), 4);
    }

    #[test]
    fn custom_rules() {
        let r = Redactor::new(&[
            "ticket=TKT-[0-9]{6}".parse().expect("rule"),
            "emp_id=(?i)emp[0-9]{5}".parse().expect("rule"),
        ])
        .expect("valid");
        let (out, fired) = run(&r, "see TKT-004211 and TKT-12 for EMP00042, emp00043.");
        assert_eq!(
            out,
            "see [REDACTED:ticket] and TKT-12 for [REDACTED:emp_id], [REDACTED:emp_id]."
        );
        assert_eq!(
            fired,
            vec![("ticket".to_owned(), 1), ("emp_id".to_owned(), 2)]
        );
    }

    #[test]
    fn a_prompt_with_several_secrets() {
        let r = Redactor::new(&["ticket=TICKET-[0-9]{6}".parse().expect("rule")]).expect("valid");
        let (out, fired) = run(
            &r,
            "Write to alice.smith@example.com about card 4111 1111 1111 1111, use key \
             sk-proj-Q8mZt3vLx9RkPw2NfYb7HcJ4sDgE6aTu and close TICKET-123456; keep zebraquartz",
        );
        assert_eq!(
            out,
            "Write to [REDACTED:email] about card [REDACTED:payment_card], use key \
             [REDACTED:api_key] and close [REDACTED:ticket]; keep zebraquartz"
        );
        assert_eq!(fired.len(), 4);
    }

    #[test]
    fn overlaps_leftmost_then_longest_then_builtin() {
        // Same span as the e-mail: the built-in rule wins.
        let r = Redactor::new(&[
            "mail=ops@corp\\.example\\.com".parse().expect("rule"),
            "digits=[0-9]{4,}".parse().expect("rule"),
            "corp=corp".parse().expect("rule"),
            "long=order 4111".parse().expect("rule"),
        ])
        .expect("valid");
        let (out, fired) = run(&r, "ops@corp.example.com");
        assert_eq!(out, "[REDACTED:email]");
        assert_eq!(fired, vec![("email".to_owned(), 1)]);
        // The card is longer than the digit run it starts with.
        let (out, _) = run(&r, "pay 4111111111111111 now");
        assert_eq!(out, "pay [REDACTED:payment_card] now");
        // The leftmost match wins even if shorter.
        let (out, fired) = run(&r, "order 4111111111111111");
        assert_eq!(out, "[REDACTED:long][REDACTED:digits]");
        assert_eq!(
            fired,
            vec![("digits".to_owned(), 1), ("long".to_owned(), 1)]
        );
    }

    #[test]
    fn replacement_makes_a_neighbour_redactable() {
        let r = redactor();
        // The number is glued to the e-mail's TLD; once the e-mail is a tag it stands alone.
        let (out, fired) = run(&r, "a@b.com13812345678");
        assert_eq!(out, "[REDACTED:email][REDACTED:phone]");
        assert_eq!(fired.len(), 2);
    }

    #[test]
    fn existing_tags_are_kept_and_not_counted() {
        let r = Redactor::new(&["word=[A-Za-z]+".parse().expect("rule")]).expect("valid");
        let (out, fired) = run(&r, "[REDACTED:email] [REDACTED:x");
        assert_eq!(out, "[REDACTED:email] [REDACTED:[REDACTED:word]");
        assert_eq!(fired, vec![("word".to_owned(), 1)]);
        kept(&redactor(), "[REDACTED:phone] [REDACTED:]");
    }

    #[test]
    fn bad_custom_rules_say_what_to_fix() {
        let long = format!("x={}", "a".repeat(MAX_PATTERN_LEN + 1));
        for (rule, want) in [
            ("Bad=x", "a-z, 0-9 and _"),
            ("=x", "a-z, 0-9 and _"),
            ("a_name_that_is_longer_than_32_chars=x", "1 to 32"),
            ("email=x", "built-in"),
            ("x=", "empty"),
            ("x=(", "invalid regular expression"),
            ("x=a*", "matches the empty text"),
            ("x=\\w{1000}{1000}", "compiles to more than"),
            (long.as_str(), "at most 4096"),
        ] {
            let e = Redactor::new(&[rule.parse().expect("rule")]).expect_err(rule);
            assert!(format!("{e:#}").contains(want), "{rule}: {e:#}");
        }
        let dup = Redactor::new(&["x=a".parse().expect("rule"), "x=b".parse().expect("rule")])
            .expect_err("duplicate");
        assert!(format!("{dup:#}").contains("given twice"), "{dup:#}");
        assert!("no-equals-sign".parse::<CustomRule>().is_err());
        // `\b` only matches empty text: accepted, and harmless.
        let r = Redactor::new(&["edge=\\b".parse().expect("rule")]).expect("valid");
        kept(&r, "some words");
    }

    #[test]
    fn hot_windows_find_what_the_whole_scan_finds() {
        let r = Redactor::new(&["ticket=TKT-[0-9]{3,}".parse().expect("rule")]).expect("valid");
        let pieces = [
            "4111 1111 1111 1111",
            "+44 20 7946 0958",
            "555-123-4567",
            "13812345678",
            "11010519491231002X",
            "GB82 WEST 1234 5698 7654 32",
            "NL91ABNA0417164300",
            "jane@example.com",
            "1.2.3",
            "2024-01-15 10:30:00",
            "550e8400-e29b-41d4-a716-446655440000",
            "手机号码",
            " ",
            "-",
            "0",
            "x",
            &"lorem ipsum dolor sit amet ".repeat(5),
            "TKT-123",
        ];
        // Every pair and triple of pieces, and a long text of all of them in a shifting order.
        let mut texts = Vec::new();
        for a in pieces {
            for b in pieces {
                texts.push(format!("{a}{b}"));
                for c in pieces {
                    texts.push(format!("{a}{b}{c}"));
                }
            }
        }
        let mut long = String::new();
        for i in 0..2000 {
            long.push_str(pieces[(i * 7 + i / 19) % pieces.len()]);
        }
        texts.push(long);
        for t in &texts {
            let (mut w, mut all) = (Vec::new(), Vec::new());
            r.find_all_in(t, &mut w, true);
            r.find_all_in(t, &mut all, false);
            assert_eq!(w, all, "{t:?}");
        }
    }

    #[test]
    fn counts_accumulate_and_grow() {
        let r = redactor();
        let mut c = RedactionCounts(vec![5]);
        let _ = r.redact("a@b.co c@d.co", &mut c);
        let _ = r.redact("e@f.co", &mut c);
        assert_eq!(c.0.len(), BUILTIN_RULES.len());
        assert_eq!(c.0[0], 8);
    }

    /// ~1 MiB of chat-like text, `with` secrets every few lines or none.
    fn chat_text(with: bool) -> String {
        let clean = [
            "user: Can you summarise the attached report for Q3 2024? The revenue grew 12.5% to $4.2M.\n",
            "assistant: Sure. The report (v2.3.1, generated 2024-10-01T09:00:00Z) covers 3 regions.\n",
            "user: 请帮我把这段话翻译成英文：我们在2024年10月1日发布了新版本，性能提升了30%。\n",
            "assistant: ```python\nfor i in range(10):\n    print(f\"item {i}: {i * 3.14:.2f}\")\n```\n",
            "tool: {\"id\": \"550e8400-e29b-41d4-a716-446655440000\", \"status\": \"ok\", \"latency_ms\": 182}\n",
            "assistant: Commit 3f786850e387550fdab836ed7e6dc881de23001b fixed the bug on host 10.0.3.17.\n",
        ];
        let dirty = [
            "user: my email is jane.doe@example.com and my phone is +1 (555) 123-4567.\n",
            "user: 我的手机号是13812345678，身份证11010519491231002X。\n",
            "user: charge card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00\n",
            "user: my key is sk-proj-Ab3dEfGh1jKlMnOpQrStUvWxYz0123456789 and AKIAIOSFODNN7EXAMPLE\n",
        ];
        let mut s = String::new();
        let mut i = 0;
        while s.len() < 1 << 20 {
            s.push_str(clean[i % clean.len()]);
            if with && i % 3 == 0 {
                s.push_str(dirty[(i / 3) % dirty.len()]);
            }
            i += 1;
        }
        s
    }

    #[test]
    #[ignore = "throughput figure: cargo test --release -p llmprobe --lib redact_throughput -- --ignored --nocapture"]
    fn redact_throughput() {
        let r = Redactor::new(&["ticket=TKT-[0-9]{6}".parse().expect("rule")]).expect("valid");
        let prose = "user: Could you explain how the retry policy works when the upstream model times out? \
                     assistant: When a request times out, the gateway waits, then retries with backoff; \
                     每次重试之间的等待时间会逐渐增加，直到达到上限为止。\n\n"
            .repeat(1 << 20 >> 8);
        for (label, text) in [
            ("prose, no matches", prose),
            ("chat with numbers, no matches", chat_text(false)),
            ("chat with matches", chat_text(true)),
        ] {
            // One chat turn at a time (~4 KiB), as the enrich stage sees them.
            let pieces: Vec<&str> = text.split_inclusive("\n\n").collect();
            let mut c = RedactionCounts::default();
            let _ = r.redact(&text, &mut c);
            let rounds = 5;
            let start = std::time::Instant::now();
            let mut total = 0;
            for _ in 0..rounds {
                let mut c = RedactionCounts::default();
                total += r.redact(&text, &mut c).len();
                for p in &pieces {
                    total += r.redact(p, &mut c).len();
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let mb = (2 * rounds * text.len()) as f64 / 1e6;
            println!(
                "redact {label}: {:.1} MB/s ({} bytes, {} redactions per pass, out {total})",
                mb / secs,
                text.len(),
                c.total()
            );
        }
    }
}
