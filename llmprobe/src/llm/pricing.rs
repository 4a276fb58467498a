//! Prices: what a call cost, from its token counts and a price table. Pure: the enrich stage
//! applies it to each record ([`Pricing::apply`]) and counts what it could not price.
//!
//! **The table** is TOML (`toml` crate), per million tokens:
//! ```toml
//! currency = "USD"                 # default for the entries below (each may name its own)
//! defaults = true                  # --prices only: false drops the built-in table
//! date = "2026-11-29"              # optional, informative
//! source = "our contract, 2026-Q4" # optional, informative
//!
//! [models."gpt-4o"]
//! input = 2.5          # uncached prompt tokens
//! cached_input = 1.25  # prompt tokens read from a cache (absent: `input`)
//! output = 10.0        # completion tokens (and reasoning tokens when `reasoning` is absent)
//! reasoning = 10.0     # optional
//! currency = "USD"     # optional here when the file names one
//! provider = "openai"  # optional: only calls whose `provider` field is this
//! ```
//! Unknown keys, negative or non-finite prices, a missing currency, a currency that is not 1 to 8
//! ASCII letters or digits, more than [`MAX_MODELS`] entries or a file over [`MAX_FILE_BYTES`]
//! are errors that name the file and the model.
//!
//! **Built in** ([`BUILTIN`], `prices.toml`): a dated table for the providers the README lists,
//! with where each figure came from. `--prices FILE` *extends* it: a file's entry replaces the
//! built-in one of the same name; `defaults = false` in the file replaces the whole table.
//!
//! **Lookup** ([`PriceTable::lookup`]): the name lower-cased; an exact entry first, then the
//! longest entry that is a prefix of the name ending at a `-`, `:`, `/` or `@` (a dated variant
//! `gpt-4o-2024-08-06` or `claude-sonnet-4-5-20250929` takes its family's price unless listed
//! itself; `gpt-4o-mini-…` takes `gpt-4o-mini`, never `gpt-4o`, when both are listed), then the
//! same on the part after the last `/` (`models/gemini-2.5-flash`, `openai/gpt-4o`). An entry
//! with a `provider` matches only calls of that provider. A call is priced by its response model
//! (what was billed), else by its request model.
//!
//! **Cost** ([`cost`]): `(input − cached) × input + cached × cached_input + (output − reasoning) ×
//! output + reasoning × reasoning`, per million, where `input` and `output` are the record's
//! `input_tokens` (the whole prompt, cached part included: every dialect normalises to that) and
//! `output_tokens` (reasoning included). Tokens are priced as recorded, **estimates included**:
//! a record with `token_source: "estimated"` (an aborted stream, an API that reports no usage)
//! carries a cost that is an estimate as well, which is still the best figure of what was spent.
//! A call without any token count gets no cost; a call whose model has no price gets no cost and
//! is counted (`cost_unpriced_model`). Only client-role calls are priced (what the process paid):
//! a server-role call (the traced process answered it: a self-hosted server, a gateway) is not
//! priced at a provider's list price, and a call seen from both ends is counted once.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::LlmCall;
use crate::telemetry::{DropReason, SelfMetrics};

/// The built-in table (see the file's header for its sources and date).
pub const BUILTIN: &str = include_str!("prices.toml");

/// Largest prices file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Most model entries in one table.
pub const MAX_MODELS: usize = 8192;

/// Longest model name listed.
const MAX_MODEL_NAME: usize = 256;

/// Longest currency code (it becomes a metric label).
const MAX_CURRENCY: usize = 8;

/// One model's prices, per million tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// Uncached prompt tokens.
    pub input: f64,
    /// Prompt tokens read from a cache; `None`: charged as `input`.
    pub cached_input: Option<f64>,
    /// Completion tokens.
    pub output: f64,
    /// Reasoning tokens; `None`: charged as `output`.
    pub reasoning: Option<f64>,
    /// Currency code.
    pub currency: String,
    /// Only calls of this provider.
    pub provider: Option<String>,
}

/// Token counts to price (as recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// The whole prompt, cached tokens included.
    pub input: Option<u64>,
    /// Of the prompt, read from a cache.
    pub cached_input: Option<u64>,
    /// The whole completion, reasoning included.
    pub output: Option<u64>,
    /// Of the completion, reasoning.
    pub reasoning: Option<u64>,
}

/// The cost of `t` at `p`, in `p.currency`; `None` when no token count is known. Parts larger
/// than their whole (a cached count above the prompt) are clamped to the whole.
pub fn cost(p: &Price, t: Tokens) -> Option<f64> {
    if t.input.is_none() && t.output.is_none() {
        return None;
    }
    let input = t.input.unwrap_or(0);
    let cached = t.cached_input.unwrap_or(0).min(input);
    let output = t.output.unwrap_or(0);
    let reasoning = t.reasoning.unwrap_or(0).min(output);
    let n = |x: u64| x as f64;
    let total = n(input - cached) * p.input
        + n(cached) * p.cached_input.unwrap_or(p.input)
        + n(output - reasoning) * p.output
        + n(reasoning) * p.reasoning.unwrap_or(p.output);
    Some(total / 1e6)
}

/// The file's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    currency: Option<String>,
    defaults: Option<bool>,
    #[allow(dead_code)]
    date: Option<toml::Value>,
    #[allow(dead_code)]
    source: Option<String>,
    #[serde(default)]
    models: HashMap<String, ModelDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelDoc {
    input: f64,
    cached_input: Option<f64>,
    output: f64,
    reasoning: Option<f64>,
    currency: Option<String>,
    provider: Option<String>,
}

/// A price table: model name (lower-cased) → price.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    models: HashMap<String, Price>,
}

/// What pricing a record came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priced {
    /// `cost` and `cost_currency` set.
    Cost,
    /// The call names no model, or carries no token count, or is a server-role call: nothing
    /// to price.
    NothingToPrice,
    /// The model has no price.
    UnpricedModel,
}

impl PriceTable {
    /// Parses a table; `origin` names it in errors (a path, or `built-in`). Returns the table
    /// and the file's `defaults` setting.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<(PriceTable, Option<bool>)> {
        let doc: FileDoc = toml::from_str(text).with_context(|| {
            format!(
                "prices {origin}: not a valid price table (see `llmprobe run --help`, --prices)"
            )
        })?;
        if doc.models.len() > MAX_MODELS {
            bail!(
                "prices {origin}: {} models listed, at most {MAX_MODELS}",
                doc.models.len()
            );
        }
        if let Some(c) = &doc.currency {
            check_currency(c).with_context(|| format!("prices {origin}: top-level currency"))?;
        }
        let mut models = HashMap::with_capacity(doc.models.len());
        for (name, m) in doc.models {
            let price = check_model(&name, m, doc.currency.as_deref())
                .with_context(|| format!("prices {origin}: model {name:?}"))?;
            if models.insert(name.to_ascii_lowercase(), price).is_some() {
                bail!("prices {origin}: model {name:?} is listed twice (names ignore case)");
            }
        }
        Ok((PriceTable { models }, doc.defaults))
    }

    /// The built-in table.
    pub fn builtin() -> PriceTable {
        match Self::parse(BUILTIN, "built-in") {
            Ok((t, _)) => t,
            // The built-in table is checked by a unit test: this cannot happen in a tested build.
            Err(e) => unreachable!("the built-in price table is invalid: {e:#}"),
        }
    }

    /// The table of a run: the built-in one, extended (or replaced, `defaults = false`) by
    /// `path`'s.
    pub fn load(path: Option<&Path>) -> anyhow::Result<PriceTable> {
        let mut table = Self::builtin();
        let Some(path) = path else {
            return Ok(table);
        };
        let origin = path.display().to_string();
        let file = std::fs::File::open(path)
            .with_context(|| format!("--prices {origin}: cannot open it"))?;
        let meta = file.metadata()?;
        anyhow::ensure!(meta.is_file(), "--prices {origin}: not a regular file");
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        anyhow::ensure!(
            bytes.len() as u64 <= MAX_FILE_BYTES,
            "--prices {origin}: larger than {MAX_FILE_BYTES} bytes"
        );
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("--prices {origin}: not UTF-8 text"))?;
        let (own, defaults) = Self::parse(&text, &origin)?;
        if defaults == Some(false) {
            table.models.clear();
        }
        table.models.extend(own.models);
        anyhow::ensure!(
            table.models.len() <= MAX_MODELS,
            "--prices {origin}: with the built-in table more than {MAX_MODELS} models; \
             set `defaults = false` or list fewer"
        );
        Ok(table)
    }

    /// Models listed.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether no model is listed.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The price of `model` for a call of `provider` (see the module docs for the order).
    pub fn lookup(&self, model: &str, provider: &str) -> Option<&Price> {
        if model.is_empty() || model.len() > MAX_MODEL_NAME * 4 || self.models.is_empty() {
            return None;
        }
        let name = model.to_ascii_lowercase();
        self.lookup_lower(&name, provider).or_else(|| {
            let tail = &name[name.rfind('/')? + 1..];
            self.lookup_lower(tail, provider)
        })
    }

    fn lookup_lower(&self, name: &str, provider: &str) -> Option<&Price> {
        let fits = |p: &&Price| p.provider.as_deref().is_none_or(|want| want == provider);
        if let Some(p) = self.models.get(name).filter(fits) {
            return Some(p);
        }
        // Longest prefix first: every boundary from the right.
        let bytes = name.as_bytes();
        (1..bytes.len())
            .rev()
            .filter(|&i| matches!(bytes[i], b'-' | b':' | b'/' | b'@'))
            .find_map(|i| self.models.get(&name[..i]).filter(fits))
    }

    /// Prices `call` in place: `cost` and `cost_currency`. Only client-role calls: what the
    /// process paid its provider. A server-role call (the process answered it: a self-hosted
    /// server, or a gateway) is not priced at a provider's list price, and the same call seen
    /// from both ends on one node is counted once.
    pub fn apply(&self, call: &mut LlmCall) -> Priced {
        if call.role == "server" {
            return Priced::NothingToPrice;
        }
        let tokens = Tokens {
            input: call.input_tokens,
            cached_input: call.cached_input_tokens,
            output: call.output_tokens,
            reasoning: call.reasoning_tokens,
        };
        if tokens.input.is_none() && tokens.output.is_none() {
            return Priced::NothingToPrice;
        }
        let by = |m: &Option<String>| m.as_deref().and_then(|m| self.lookup(m, &call.provider));
        let Some(price) = by(&call.response_model).or_else(|| by(&call.request_model)) else {
            return if call.response_model.is_none() && call.request_model.is_none() {
                Priced::NothingToPrice
            } else {
                Priced::UnpricedModel
            };
        };
        match cost(price, tokens) {
            Some(c) => {
                call.cost = Some(c);
                call.cost_currency = Some(price.currency.clone());
                Priced::Cost
            }
            None => Priced::NothingToPrice,
        }
    }
}

/// Unpriced models named in the log, at most (then only counted).
const MAX_LOGGED_UNPRICED: usize = 32;

/// The enrich stage's pricing: the run's table, and which unpriced models were logged (once
/// each, for the first [`MAX_LOGGED_UNPRICED`]; every one is counted as `cost_unpriced_model`).
#[derive(Debug)]
pub struct Pricer {
    table: Arc<PriceTable>,
    logged: HashSet<String>,
}

impl Pricer {
    /// Prices with `table`.
    pub fn new(table: Arc<PriceTable>) -> Self {
        Pricer {
            table,
            logged: HashSet::new(),
        }
    }

    /// Sets `call`'s cost, or counts why it has none.
    pub fn price(&mut self, call: &mut LlmCall, metrics: &SelfMetrics) {
        if self.table.apply(call) != Priced::UnpricedModel {
            return;
        }
        metrics.drop_for(DropReason::CostUnpricedModel);
        let model = call
            .response_model
            .as_deref()
            .or(call.request_model.as_deref())
            .unwrap_or_default();
        if self.logged.len() < MAX_LOGGED_UNPRICED && !self.logged.contains(model) {
            self.logged.insert(model.to_owned());
            log::info!(
                "model {} ({}) has no price: its calls carry no cost (give it one with --prices)",
                crate::secrets::log_safe(model),
                crate::secrets::log_safe(&call.provider)
            );
        }
    }
}

fn check_price(what: &str, v: f64) -> anyhow::Result<f64> {
    if !v.is_finite() {
        bail!("{what} price {v} is not a finite number");
    }
    if v < 0.0 {
        bail!("{what} price {v} is negative; prices are per million tokens, 0 or more");
    }
    Ok(v)
}

fn check_currency(c: &str) -> anyhow::Result<()> {
    if c.is_empty() || c.len() > MAX_CURRENCY || !c.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!(
            "currency {:?} is not a code of 1 to {MAX_CURRENCY} ASCII letters or digits \
             (e.g. \"USD\")",
            crate::secrets::log_safe(c).to_string()
        );
    }
    Ok(())
}

fn check_model(name: &str, m: ModelDoc, default_currency: Option<&str>) -> anyhow::Result<Price> {
    if name.is_empty() || name.len() > MAX_MODEL_NAME {
        bail!("a model name must have 1 to {MAX_MODEL_NAME} bytes");
    }
    let currency = match (m.currency, default_currency) {
        (Some(c), _) => {
            check_currency(&c)?;
            c
        }
        (None, Some(c)) => c.to_owned(),
        (None, None) => bail!(
            "no currency: give `currency = \"USD\"` (or another code) in the entry or at the \
             top of the file"
        ),
    };
    Ok(Price {
        input: check_price("input", m.input)?,
        cached_input: m
            .cached_input
            .map(|v| check_price("cached_input", v))
            .transpose()?,
        output: check_price("output", m.output)?,
        reasoning: m
            .reasoning
            .map(|v| check_price("reasoning", v))
            .transpose()?,
        currency: currency.to_ascii_uppercase(),
        provider: m.provider,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: f64, cached: Option<f64>, output: f64, reasoning: Option<f64>) -> Price {
        Price {
            input,
            cached_input: cached,
            output,
            reasoning,
            currency: "USD".into(),
            provider: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn cost_splits_cached_input_and_reasoning() {
        // 1000 prompt tokens, 400 of them cached; 500 output tokens, 200 of them reasoning.
        let t = Tokens {
            input: Some(1000),
            cached_input: Some(400),
            output: Some(500),
            reasoning: Some(200),
        };
        let p = price(2.0, Some(0.5), 8.0, Some(12.0));
        let want = (600.0 * 2.0 + 400.0 * 0.5 + 300.0 * 8.0 + 200.0 * 12.0) / 1e6;
        assert!(close(cost(&p, t).expect("test value"), want));
        // Absent cached and reasoning prices: charged as input and output.
        let p = price(2.0, None, 8.0, None);
        assert!(close(
            cost(&p, t).expect("test value"),
            (1000.0 * 2.0 + 500.0 * 8.0) / 1e6
        ));
        // Parts above their whole are clamped.
        let t2 = Tokens {
            input: Some(10),
            cached_input: Some(50),
            output: Some(5),
            reasoning: Some(9),
        };
        let p = price(1.0, Some(0.0), 1.0, Some(3.0));
        assert!(close(cost(&p, t2).expect("test value"), (5.0 * 3.0) / 1e6));
        // Only one side known: the other counts 0; none known: no cost.
        let only_in = Tokens {
            input: Some(1_000_000),
            ..Tokens::default()
        };
        assert!(close(
            cost(&price(3.0, None, 9.0, None), only_in).expect("test value"),
            3.0
        ));
        assert_eq!(cost(&p, Tokens::default()), None);
        // The largest counts stay finite.
        let huge = Tokens {
            input: Some(u64::MAX),
            cached_input: Some(u64::MAX),
            output: Some(u64::MAX),
            reasoning: Some(0),
        };
        assert!(cost(&p, huge).expect("test value").is_finite());
    }

    fn table(text: &str) -> PriceTable {
        PriceTable::parse(text, "test.toml").expect("test value").0
    }

    #[test]
    fn lookup_takes_exact_then_longest_prefix_at_a_boundary() {
        let t = table(
            r#"
            currency = "USD"
            [models."gpt-4o"]
            input = 2.5
            output = 10
            [models."gpt-4o-2024-05-13"]
            input = 5
            output = 15
            [models."gpt-4o-mini"]
            input = 0.15
            output = 0.6
            [models."claude-sonnet-4-5"]
            input = 3
            output = 15
            [models."Qwen2.5"]
            input = 1
            output = 2
            currency = "cny"
            [models."only-acme"]
            input = 1
            output = 1
            provider = "acme"
        "#,
        );
        let input = |m: &str| t.lookup(m, "openai").map(|p| p.input);
        assert_eq!(input("gpt-4o"), Some(2.5));
        assert_eq!(input("GPT-4o"), Some(2.5));
        assert_eq!(input("gpt-4o-2024-08-06"), Some(2.5));
        assert_eq!(input("gpt-4o-2024-05-13"), Some(5.0));
        assert_eq!(input("gpt-4o-mini-2024-07-18"), Some(0.15));
        assert_eq!(input("claude-sonnet-4-5-20250929"), Some(3.0));
        assert_eq!(input("openai/gpt-4o-mini"), Some(0.15));
        assert_eq!(input("models/gpt-4o"), Some(2.5));
        assert_eq!(input("qwen2.5:7b"), Some(1.0));
        assert_eq!(
            t.lookup("qwen2.5", "x").expect("test value").currency,
            "CNY"
        );
        // Not at a boundary: no price.
        assert_eq!(input("gpt-4omni"), None);
        assert_eq!(input("gpt-4"), None);
        assert_eq!(input("gpt"), None);
        assert_eq!(input(""), None);
        assert_eq!(input("qwen2.57b"), None);
        // Provider-bound entries.
        assert_eq!(input("only-acme"), None);
        assert_eq!(t.lookup("only-acme-v2", "acme").map(|p| p.input), Some(1.0));
    }

    #[test]
    fn apply_prices_records_and_says_why_not() {
        let t = table(
            r#"
            currency = "EUR"
            [models."m"]
            input = 1
            cached_input = 0.1
            output = 4
        "#,
        );
        let mut call = LlmCall {
            role: "client",
            provider: "openai".into(),
            request_model: Some("m".into()),
            response_model: Some("m-2026-01-01".into()),
            input_tokens: Some(2_000_000),
            cached_input_tokens: Some(1_000_000),
            output_tokens: Some(500_000),
            ..LlmCall::default()
        };
        assert_eq!(t.apply(&mut call), Priced::Cost);
        assert!(close(call.cost.expect("test value"), 1.0 + 0.1 + 2.0));
        assert_eq!(call.cost_currency.as_deref(), Some("EUR"));
        // The response model unpriced: the request model's price.
        let mut c2 = LlmCall {
            response_model: Some("other".into()),
            ..call.clone()
        };
        c2.cost = None;
        assert_eq!(t.apply(&mut c2), Priced::Cost);
        let mut c3 = LlmCall {
            request_model: Some("llama3".into()),
            response_model: None,
            cost: None,
            cost_currency: None,
            ..call.clone()
        };
        assert_eq!(t.apply(&mut c3), Priced::UnpricedModel);
        assert_eq!((c3.cost, c3.cost_currency), (None, None));
        let mut c4 = LlmCall {
            input_tokens: None,
            output_tokens: None,
            cost: None,
            ..call.clone()
        };
        assert_eq!(t.apply(&mut c4), Priced::NothingToPrice);
        assert_eq!(c4.cost, None);
        let mut c5 = LlmCall {
            request_model: None,
            response_model: None,
            cost: None,
            ..call
        };
        assert_eq!(t.apply(&mut c5), Priced::NothingToPrice);
        // A server-role call is not priced.
        let mut c6 = LlmCall {
            role: "server",
            cost: None,
            cost_currency: None,
            ..c2
        };
        assert_eq!(t.apply(&mut c6), Priced::NothingToPrice);
        assert_eq!(c6.cost, None);
    }

    #[test]
    fn bad_tables_are_refused_naming_file_and_model() {
        let err = |text: &str| {
            format!(
                "{:#}",
                PriceTable::parse(text, "prices.toml").expect_err(text)
            )
        };
        let e = err("currency = \"USD\"\n[models.a]\ninput = -1\noutput = 1\n");
        assert!(
            e.contains("prices.toml") && e.contains("\"a\"") && e.contains("negative"),
            "{e}"
        );
        let e = err("currency = \"USD\"\n[models.a]\ninput = nan\noutput = 1\n");
        assert!(e.contains("\"a\"") && e.contains("finite"), "{e}");
        let e = err("currency = \"USD\"\n[models.a]\ninput = 1\noutput = inf\n");
        assert!(e.contains("finite"), "{e}");
        let e = err("[models.a]\ninput = 1\noutput = 1\n");
        assert!(e.contains("\"a\"") && e.contains("no currency"), "{e}");
        let e = err("currency = \"USD\"\n[models.a]\ninput = 1\noutput = 1\ncahced_input = 1\n");
        assert!(
            e.contains("prices.toml") && e.contains("cahced_input"),
            "{e}"
        );
        let e = err("curency = \"USD\"\n");
        assert!(e.contains("curency"), "{e}");
        let e = err("currency = \"US D\"\n");
        assert!(e.contains("currency"), "{e}");
        let e = err("currency = \"USD\"\n[models.a]\noutput = 1\n");
        assert!(e.contains("input"), "{e}");
        let e = err(
            "currency = \"USD\"\n[models.A]\ninput = 1\noutput = 1\n[models.a]\ninput = 1\noutput = 1\n",
        );
        assert!(e.contains("twice"), "{e}");
        let e = err("currency = \"USD\"\n[models.a]\ninput = \"1\"\noutput = 1\n");
        assert!(e.contains("prices.toml"), "{e}");
        let e = err("not toml at all [");
        assert!(e.contains("prices.toml"), "{e}");
    }

    #[test]
    fn builtin_table_parses_and_prices_the_listed_providers() {
        let (t, defaults) = PriceTable::parse(BUILTIN, "built-in").expect("test value");
        assert_eq!(defaults, None);
        assert!(t.len() > 40, "{}", t.len());
        for (model, provider) in [
            ("gpt-4o-2024-08-06", "openai"),
            ("gpt-4o-mini", "openai"),
            ("o3-mini", "openai"),
            ("claude-sonnet-4-5-20250929", "anthropic"),
            ("claude-haiku-4-5", "anthropic"),
            ("gemini-2.5-flash", "gcp.gemini"),
            ("models/gemini-2.5-pro", "gcp.gemini"),
            ("deepseek-chat", "deepseek"),
            ("qwen-plus", "dashscope"),
        ] {
            let p = t
                .lookup(model, provider)
                .unwrap_or_else(|| panic!("{model}"));
            assert_eq!(p.currency, "USD");
            assert!(p.input > 0.0 && p.output > 0.0, "{model}");
        }
        // Self-hosted models are not priced.
        assert!(t.lookup("llama3.1:8b", "ollama").is_none());
        assert!(t.lookup("Qwen/Qwen2.5-7B-Instruct", "openai").is_none());
    }

    #[test]
    fn a_file_extends_or_replaces_the_builtin_table() {
        let dir = std::env::temp_dir().join(format!("llmprobe-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test value");
        let ext = dir.join("ext.toml");
        std::fs::write(
            &ext,
            "currency = \"EUR\"\n[models.\"gpt-4o\"]\ninput = 1\noutput = 2\n[models.mine]\ninput = 3\noutput = 4\n",
        )
        .expect("test value");
        let t = PriceTable::load(Some(&ext)).expect("test value");
        assert_eq!(
            t.lookup("gpt-4o", "openai").expect("test value").currency,
            "EUR"
        );
        assert_eq!(t.lookup("mine", "openai").expect("test value").input, 3.0);
        assert!(t.lookup("claude-haiku-4-5", "anthropic").is_some());
        let only = dir.join("only.toml");
        std::fs::write(
            &only,
            "defaults = false\ncurrency = \"EUR\"\n[models.mine]\ninput = 3\noutput = 4\n",
        )
        .expect("test value");
        let t = PriceTable::load(Some(&only)).expect("test value");
        assert_eq!(t.len(), 1);
        assert!(t.lookup("gpt-4o", "openai").is_none());
        let e = format!(
            "{:#}",
            PriceTable::load(Some(&dir.join("none"))).expect_err("refused")
        );
        assert!(e.contains("--prices") && e.contains("none"), "{e}");
        assert!(PriceTable::load(Some(&dir)).is_err());
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).expect("test value");
        assert!(
            format!("{:#}", PriceTable::load(Some(&big)).expect_err("refused")).contains("larger")
        );
        std::fs::remove_dir_all(&dir).expect("test value");
    }
}
