//! Redaction of captured content: built-in rules for personal data and credentials, and the
//! user's own regular expressions. Pure: counts come back as values, the enrich stage turns them
//! into `llmprobe_redactions_total{rule}`.

use std::borrow::Cow;

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

/// The rules, compiled once.
#[derive(Debug, Clone)]
pub struct Redactor {}

impl Redactor {
    /// The built-in rules and `custom` after them; an invalid custom rule is an error that says
    /// which and why.
    pub fn new(_custom: &[CustomRule]) -> anyhow::Result<Self> {
        Ok(Redactor {})
    }

    /// Every rule's name, built-in first (`email`, `phone`, ...), for the metric's labels.
    pub fn rule_names(&self) -> Vec<&str> {
        Vec::new()
    }

    /// `text` with every match replaced by `[REDACTED:<rule>]`, the matches counted in `counts`.
    pub fn redact<'a>(&self, text: &'a str, _counts: &mut RedactionCounts) -> Cow<'a, str> {
        Cow::Borrowed(text)
    }
}
