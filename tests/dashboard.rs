//! The operator's views, tested with the real tools: the Grafana dashboard
//! (`deploy/grafana/llmprobe.json`) and the Prometheus rules (`deploy/prometheus/`).
//!
//! - `promtool check rules` and `promtool test rules` on the rules and their unit tests.
//! - Every metric name a dashboard query, a template variable or a rule names is one the agent
//!   exposes (the families of the registry the agent builds, encoded in process; and, in the live
//!   test, the agent's own `/metrics`), or a recording rule of the rules file, or `up`.
//! - Live, as root: the real agent (real eBPF programs, the stand-in NVML of
//!   `assets/fake_nvml.c` so that GPU metrics exist) is scraped every second by a real Prometheus
//!   (Debian's `prometheus`) that loads the rules, while the real `openai` SDK makes streaming,
//!   non-streaming, failing, aborted and priced calls to the local test server. Every panel
//!   query, with the template variables set to `.*`, must return a finite sample from
//!   Prometheus's HTTP API; every variable must list values; the rule groups must load healthy.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`cargo xtask test`
//! installs it): a missing tool fails the test, it never skips it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmprobe::telemetry::{DropReason, LabelValue};
use llmprobe_tests::*;
use serde_json::Value;

/// Panels that cannot have data in the live test, by title, with the reason.
const NO_DATA_IN_TEST: [(&str, &str); 1] = [(
    "Queues and caps overflowing",
    "counts overflows of the agent's queues, memory budget and series cap: a few test calls \
     overflow none of them (the attack tests drive those bounds)",
)];

/// Panels whose every query must show a value above zero in the live test: the calls it makes
/// fail, abort, cost money and run on the (stand-in) GPU.
const POSITIVE_IN_TEST: [&str; 7] = [
    "Calls per second",
    "Error rate",
    "Abort rate",
    "Tokens per second",
    "Cost per hour",
    "GPU energy per output token",
    "GPU utilization in flight vs idle",
];

/// What `$__rate_interval` becomes in the live queries (Grafana makes it at least four scrape
/// intervals; the test scrapes every second and its calls lie within the last 20 s).
const RATE_INTERVAL: &str = "30s";

/// Names that Prometheus itself makes (not the agent).
const PROMETHEUS_NAMES: [&str; 1] = ["up"];

fn dashboard_path() -> PathBuf {
    repo_root()
        .join("deploy")
        .join("grafana")
        .join("llmprobe.json")
}

fn rules_dir() -> PathBuf {
    repo_root().join("deploy").join("prometheus")
}

fn rules_path() -> PathBuf {
    rules_dir().join("llmprobe-rules.yml")
}

fn dashboard() -> Value {
    let p = dashboard_path();
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

/// A panel query: panel title, target refId, expression.
struct Target {
    title: String,
    ref_id: String,
    expr: String,
}

/// Every panel target of the dashboard (panels of collapsed rows included); panics on a panel
/// without a query.
fn targets(dash: &Value) -> Vec<Target> {
    fn walk(panels: &[Value], out: &mut Vec<Target>) {
        for p in panels {
            if p["type"] == "row" {
                walk(p["panels"].as_array().map_or(&[], Vec::as_slice), out);
                continue;
            }
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            let ts = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
            assert!(!ts.is_empty(), "panel {title:?} has no query");
            for t in ts {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push(Target {
                    title: title.clone(),
                    ref_id: t["refId"].as_str().unwrap_or("?").to_owned(),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(
        dash["panels"].as_array().map_or(&[], Vec::as_slice),
        &mut out,
    );
    out
}

/// The query variables: (name, series selector, label) of `label_values(SELECTOR, LABEL)`.
fn variables(dash: &Value) -> Vec<(String, String, String)> {
    let list = dash["templating"]["list"].as_array().expect("templating");
    list.iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let name = v["name"].as_str().expect("variable name").to_owned();
            let q = v["query"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .unwrap_or_else(|| panic!("variable {name}: no query"));
            let inner = q
                .trim()
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable {name}: not label_values(...): {q}"));
            let (sel, label) = inner
                .rsplit_once(',')
                .unwrap_or_else(|| panic!("variable {name}: label_values needs a selector: {q}"));
            (name, sel.trim().to_owned(), label.trim().to_owned())
        })
        .collect()
}

/// The rules file's expressions (each `expr:`, inline or a `|` block) and recording rule names.
fn rules(text: &str) -> (Vec<String>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut exprs, mut records) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start().trim_start_matches("- ");
        if let Some(r) = t.strip_prefix("record:") {
            records.push(r.trim().to_owned());
        } else if let Some(e) = t.strip_prefix("expr:") {
            let e = e.trim();
            if e == "|" || e == ">" {
                let mut block = String::new();
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty() || indent(lines[i + 1]) > indent(l))
                {
                    i += 1;
                    block.push_str(lines[i].trim());
                    block.push('\n');
                }
                exprs.push(block);
            } else {
                exprs.push(e.to_owned());
            }
        }
        i += 1;
    }
    (exprs, records)
}

const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
    "year",
];
const AGGREGATIONS: &[&str] = &[
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];
/// Keywords followed by a list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "offset", "bool", "and", "or", "unless", "atan2", "inf", "nan",
];

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && ident_start(s.as_bytes()[0]) && s.bytes().all(ident_char)
}

/// A label matcher: label, operator, value.
type Matcher = (String, String, String);

/// Skips a quoted string starting at `i` (the quote); returns its content and the index after it.
fn string_at(b: &[u8], i: usize) -> Result<(String, usize), String> {
    let q = b[i];
    let mut j = i + 1;
    let mut s = Vec::new();
    while j < b.len() && b[j] != q {
        if b[j] == b'\\' && q != b'`' && j + 1 < b.len() {
            j += 1;
        }
        s.push(b[j]);
        j += 1;
    }
    if j >= b.len() {
        return Err("unterminated string".to_owned());
    }
    Ok((String::from_utf8_lossy(&s).into_owned(), j + 1))
}

/// The metric names a PromQL expression selects, and the label matchers it uses
/// (label, operator, value). Function, aggregation and keyword names, label names (in matchers
/// and in `by`/`without`/`on`/`ignoring`/`group_*` lists), strings, numbers, durations and
/// Grafana variables are not metric names; a `__name__` matcher's alternatives are. An unknown
/// function is an error, as is a `__name__` regex that is not a list of names.
fn promql_names(expr: &str) -> Result<(BTreeSet<String>, Vec<Matcher>), String> {
    let b = expr.as_bytes();
    let (mut names, mut matchers) = (BTreeSet::new(), Vec::new());
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    let read_ident = |mut j: usize| {
        let s = j;
        while j < b.len() && ident_char(b[j]) {
            j += 1;
        }
        (expr[s..j].to_owned(), j)
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = string_at(b, i)?.1;
        } else if c == b'{' {
            // Label matchers: `label op "value"`, comma separated.
            i += 1;
            loop {
                i = skip_ws(i);
                while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
                    i += 1;
                }
                if i >= b.len() {
                    return Err("unterminated {".to_owned());
                }
                if b[i] == b'}' {
                    i += 1;
                    break;
                }
                let (label, j) = read_ident(i);
                if label.is_empty() {
                    return Err(format!("bad matcher at {:?}", &expr[i..]));
                }
                let j = skip_ws(j);
                let op_len = b[j..]
                    .iter()
                    .take_while(|c| matches!(c, b'=' | b'!' | b'~'))
                    .count();
                let op = expr[j..j + op_len].to_owned();
                let j = skip_ws(j + op_len);
                if j >= b.len() || !matches!(b[j], b'"' | b'\'' | b'`') {
                    return Err(format!("matcher {label}{op} without a string value"));
                }
                let (value, j) = string_at(b, j)?;
                if label == "__name__" {
                    if op != "=" && op != "=~" {
                        return Err(format!("cannot check __name__{op}{value:?}"));
                    }
                    for alt in value.split('|') {
                        if !is_plain_name(alt) {
                            return Err(format!(
                                "__name__{op}{value:?}: not a list of metric names"
                            ));
                        }
                        names.insert(alt.to_owned());
                    }
                }
                matchers.push((label, op, value));
                i = j;
            }
        } else if c == b'[' {
            // A range or subquery: durations and Grafana variables.
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c == b'$' {
            i += 1;
            if i < b.len() && b[i] == b'{' {
                while i < b.len() && b[i] != b'}' {
                    i += 1;
                }
                i += 1;
            } else {
                i = read_ident(i).1;
            }
        } else if ident_start(c) {
            let (word, j) = read_ident(i);
            let next = skip_ws(j);
            let next_c = b.get(next).copied();
            let next_word = read_ident(next).0;
            i = j;
            if LABEL_LISTS.contains(&word.as_str()) {
                if next_c == Some(b'(') {
                    i = next + b[next..].iter().position(|c| *c == b')').unwrap_or(0) + 1;
                }
            } else if KEYWORDS.contains(&word.as_str())
                || (AGGREGATIONS.contains(&word.as_str())
                    && (next_c == Some(b'(') || next_word == "by" || next_word == "without"))
            {
                // Not a name.
            } else if next_c == Some(b'(') {
                if !FUNCTIONS.contains(&word.as_str()) {
                    return Err(format!("unknown PromQL function {word}"));
                }
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    Ok((names, matchers))
}

/// The sample names an exposition offers: each family's name, and for a histogram its
/// `_bucket`, `_sum` and `_count` series (what a query can select, and nothing else).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in exposition.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, ty) = rest.split_once(' ').unwrap_or((rest, ""));
        match ty {
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            "summary" => {
                out.insert(name.to_owned());
                out.insert(format!("{name}_sum"));
                out.insert(format!("{name}_count"));
            }
            _ => {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

/// The exposition of every family the agent registers (as `app::run` builds its registry).
fn registry_exposition() -> String {
    use llmprobe::export::prometheus::{CardinalityLimits, ConversationMetrics, GenAiMetrics};
    let mut registry = prometheus_client::registry::Registry::default();
    let _self = llmprobe::telemetry::SelfMetrics::new(&mut registry);
    let _calls = GenAiMetrics::new(&mut registry, CardinalityLimits::default());
    let _gpu = llmprobe::gpu::GpuMetrics::new(&mut registry);
    let _conversations = ConversationMetrics::new(&mut registry);
    let _process = llmprobe::telemetry::ProcessMetrics::new(&mut registry);
    llmprobe::export::metrics_http::exposition::encode_text(&registry)
}

/// Every expression of the dashboard (panels and variables) and of the rules file, with where
/// it comes from; and the recording rules' names.
fn all_expressions() -> (Vec<(String, String)>, Vec<String>) {
    let dash = dashboard();
    let mut out: Vec<(String, String)> = targets(&dash)
        .into_iter()
        .map(|t| (format!("panel {:?} {}", t.title, t.ref_id), t.expr))
        .collect();
    for (name, sel, _) in variables(&dash) {
        out.push((format!("variable ${name}"), sel));
    }
    let text = std::fs::read_to_string(rules_path()).expect("rules file");
    let (exprs, records) = rules(&text);
    assert!(
        exprs.len() >= 8,
        "the rules parser found {} expressions",
        exprs.len()
    );
    out.extend(
        exprs
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("rule expression #{}", i + 1), e)),
    );
    (out, records)
}

/// Problems found in `exprs` against the names `exposed`: each unknown metric name (with where
/// it is used), each unknown drop reason, each expression that does not parse.
fn unknown_names(
    exprs: &[(String, String)],
    exposed: &BTreeSet<String>,
    records: &[String],
) -> Vec<String> {
    let reasons: BTreeSet<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    let mut problems = Vec::new();
    for (origin, expr) in exprs {
        let (names, matchers) = match promql_names(expr) {
            Ok(x) => x,
            Err(e) => {
                problems.push(format!("{origin}: {e} in {expr}"));
                continue;
            }
        };
        for n in names {
            let known = exposed.contains(&n)
                || records.contains(&n)
                || PROMETHEUS_NAMES.contains(&n.as_str());
            if !known {
                problems.push(format!(
                    "{origin}: metric {n} is not exposed by the agent (in {})",
                    expr.trim()
                ));
            }
        }
        for (label, _, value) in matchers.iter().filter(|m| m.0 == "reason") {
            for r in value.split('|').filter(|r| !r.is_empty()) {
                if !reasons.contains(r) {
                    problems.push(format!(
                        "{origin}: {label}={r:?} is no drop reason of the agent"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn the_name_checker_catches_what_the_agent_does_not_expose() {
    let exposed = sample_names(&registry_exposition());
    let good = [(
        "good".to_owned(),
        r#"sum by (le, gen_ai_request_model) (rate(gen_ai_client_operation_time_to_first_chunk_seconds_bucket{gen_ai_request_model=~"$model",le="2.56"}[$__rate_interval])) / on (x) group_left (y) count without (reason) (llmprobe_dropped_total{reason=~"not_llm|memory_budget"} offset 5m) and absent(up{job="llmprobe"}) > bool 0.5 * 1e3"#.to_owned(),
    )];
    assert_eq!(unknown_names(&good, &exposed, &[]), Vec::<String>::new());
    let bad = |e: &str| unknown_names(&[("bad".to_owned(), e.to_owned())], &exposed, &[]);
    // A made-up name, a name with a suffix the family does not have, a histogram's family name
    // without a sample suffix, a typo in a __name__ list, a drop reason that does not exist,
    // and an unknown function are all caught.
    for (e, needle) in [
        ("rate(llmprobe_bogus_total[5m])", "llmprobe_bogus_total"),
        (
            "rate(llmprobe_tracker_memory_bytes_total[5m])",
            "llmprobe_tracker_memory_bytes_total",
        ),
        (
            "sum(rate(gen_ai_client_operation_duration_seconds[5m]))",
            "gen_ai_client_operation_duration_seconds ",
        ),
        (
            r#"count({__name__=~"llmprobe_events_total|llmprobe_event_lost_total"})"#,
            "llmprobe_event_lost_total",
        ),
        (
            r#"llmprobe_dropped_total{reason="queue_full"}"#,
            "\"queue_full\"",
        ),
        ("ratee(llmprobe_events_total[5m])", "ratee"),
    ] {
        let problems = bad(e);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{e}: {problems:?}"
        );
    }
    // Label names, strings and durations are not metric names.
    let (names, _) = promql_names(
        r#"sum by (gen_ai_request_model, bogus_label) (rate(llmprobe_events_total{bogus_label="bogus_metric"}[5m]))"#,
    )
    .expect("parses");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["llmprobe_events_total"]
    );
}

#[test]
fn every_metric_the_dashboard_and_rules_name_is_one_the_agent_exposes() {
    let exposed = sample_names(&registry_exposition());
    assert!(exposed.len() > 60, "{exposed:?}");
    let (exprs, records) = all_expressions();
    let problems = unknown_names(&exprs, &exposed, &records);
    assert!(
        problems.is_empty(),
        "the dashboard or rules name metrics the agent does not expose:\n{}",
        problems.join("\n")
    );
    // Every recording rule a rule uses is defined (checked above through `records`), and the
    // dashboard covers the areas it promises.
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 39));
    let rows: Vec<&str> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(
        rows,
        ["Calls", "Latency", "Tokens and cost", "GPU", "Agent health"]
    );
    let vars: Vec<String> = variables(&dash).into_iter().map(|v| v.0).collect();
    assert_eq!(vars, ["model", "provider", "server", "process"]);
    let list = dash["templating"]["list"].as_array().expect("templating");
    assert!(list.iter().any(|v| v["type"] == "datasource"
        && v["name"] == "datasource"
        && v["query"] == "prometheus"));
    for v in list.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["multi"], true, "{v}");
        assert_eq!(v["includeAll"], true, "{v}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{v}");
    }
    fn panel_ds(panels: &[Value]) {
        for p in panels {
            if p["type"] == "row" {
                panel_ds(p["panels"].as_array().map_or(&[], Vec::as_slice));
                continue;
            }
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    panel_ds(dash["panels"].as_array().expect("panels"));
    for title in POSITIVE_IN_TEST {
        assert!(
            targets(&dash).iter().any(|t| t.title == title),
            "{title:?} is no panel"
        );
    }
    for (title, _) in NO_DATA_IN_TEST {
        assert!(
            targets(&dash).iter().any(|t| t.title == title),
            "{title:?} is listed as having no data in the test but is no panel"
        );
    }
}

/// `promtool`, or a failure saying how to get it.
fn promtool() -> PathBuf {
    tool("promtool")
}

fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .chain([Path::new("/usr/bin").join(name)])
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "{name} is missing: install Debian's prometheus package (apt-get install prometheus), \
             or run `cargo xtask test`, which installs it"
        )
    })
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let t0 = Instant::now();
    let run = |args: &[&str]| {
        let out = Command::new(promtool())
            .args(args)
            .current_dir(rules_dir())
            .output()
            .expect("run promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
        text
    };
    let check = run(&["check", "rules", "llmprobe-rules.yml"]);
    assert!(check.contains("SUCCESS"), "{check}");
    let tests = run(&["test", "rules", "llmprobe-rules.test.yml"]);
    assert!(tests.contains("SUCCESS"), "{tests}");
    // Every alert is tested firing (the unit tests name each alert with a non-empty
    // exp_alerts) and quiet (an empty one).
    let test_text =
        std::fs::read_to_string(rules_dir().join("llmprobe-rules.test.yml")).expect("tests");
    let rules_text = std::fs::read_to_string(rules_path()).expect("rules");
    let alerts: Vec<&str> = rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    let lines: Vec<&str> = test_text.lines().collect();
    for a in &alerts {
        let (mut fires, mut quiet) = (false, false);
        for (i, l) in lines.iter().enumerate() {
            if l.trim() == format!("alertname: {a}") {
                match lines.get(i + 1).map(|n| n.trim()) {
                    Some("exp_alerts: []") => quiet = true,
                    Some("exp_alerts:") => fires = true,
                    _ => {}
                }
            }
        }
        assert!(
            fires && quiet,
            "{a}: firing tested {fires}, quiet tested {quiet}"
        );
    }
    eprintln!("promtool check + test: {:.1} s", t0.elapsed().as_secs_f64());
}

/// A real Prometheus with a temporary configuration and storage, killed on drop.
struct Prometheus {
    _proc: Proc,
    base: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: llmprobe\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules_path().display()
            ),
        )
        .expect("prometheus.yml");
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("prometheus log"))
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            _proc: Proc { child },
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let t0 = Instant::now();
        while !curl(&[&format!("{}/-/ready", p.base)]).contains("Ready") {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "prometheus not ready:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` with the query parameters, as JSON (`status` must be `success`).
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut args = vec!["-G".to_owned()];
        for (k, v) in params {
            args.push("--data-urlencode".to_owned());
            args.push(format!("{k}={v}"));
        }
        args.push(format!("{}{path}", self.base));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = curl(&args);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} {params:?}: not JSON ({e}): {text}"));
        assert_eq!(v["status"], "success", "{path} {params:?}: {v}");
        v
    }

    /// An instant query's samples: (labels, value).
    fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let v = self.api("/api/v1/query", &[("query", q)]);
        v["data"]["result"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|x| x.parse::<f64>().ok())
                    .unwrap_or(f64::NAN);
                (s["metric"].clone(), value)
            })
            .collect()
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A template variable or `$__rate_interval` replaced for a live query.
fn substitute(expr: &str, vars: &[String]) -> String {
    let mut e = expr.replace("$__rate_interval", RATE_INTERVAL);
    for v in vars {
        e = e
            .replace(&format!("${{{v}}}"), ".*")
            .replace(&format!("${v}"), ".*");
    }
    assert!(!e.contains('$'), "a variable left in {e}");
    e
}

/// USD per million tokens for the test's priced model.
const PRICES: &str = r#"
currency = "USD"
date = "2026-11-29"
source = "dashboard test"

[models."dash-model"]
input = 3.0
output = 12.0
"#;

#[test]
fn every_panel_has_data_from_a_real_prometheus_scraping_a_live_agent() {
    if !e2e_enabled() {
        return;
    }
    let prometheus_bin = tool("prometheus");
    let _g = serial();
    let t0 = Instant::now();
    let dir = scratch("dashboard");
    let prices = dir.join("prices.toml");
    std::fs::write(&prices, PRICES).expect("prices file");
    let server = TestServer::start(false, 50, 10, 6);
    // The stand-in NVML runs the test server on its GPU: its calls get GPU energy and
    // utilization.
    let lib = build_fake_nvml(&dir);
    let pids = dir.join("gpu-pids");
    std::fs::write(&pids, format!("{}\n", server.pid)).expect("pids file");
    let agent = Agent::start_with_env(
        &dir,
        false,
        &[
            "--prices",
            prices.to_str().expect("path"),
            "--nvml-lib",
            lib.to_str().expect("path"),
            "--gpu-interval",
            "0.2",
        ],
        &[("FAKE_NVML_PIDS_FILE", pids.to_str().expect("path"))],
    );
    let prom = Prometheus::start(&dir, &agent.metrics_addr);
    eprintln!(
        "{} and the agent ready in {:.1} s",
        prometheus_bin.display(),
        t0.elapsed().as_secs_f64()
    );

    // Two rounds (a series must exist before its increase counts in rate()): streams with
    // usage, a non-streaming call, a failing call, an aborted stream, a call of a model the
    // price table does not know (a drop, reason cost_unpriced_model).
    let round = || {
        let model = ["--model", "dash-model"];
        let runs = [
            vec!["--stream", "--include-usage", "--calls", "2"],
            vec![],
            vec!["--header", "x-test-status=500", "--allow-http-error"],
            vec!["--stream", "--abort-after", "2"],
        ];
        let mut n = 0;
        for r in runs {
            let mut args: Vec<&str> = model.to_vec();
            args.extend(r);
            run_client(openai_client(&server, &args));
            n += 1;
        }
        run_client(openai_client(&server, &["--model", "dash-unpriced"]));
        n + 1
    };
    let calls = round();
    std::thread::sleep(Duration::from_secs(3));
    let calls = calls + round();
    // GPU windows settle two seconds after they end; then a few scrapes.
    std::thread::sleep(Duration::from_secs(5));
    let recs = agent.records();
    assert!(
        recs.iter().filter(|r| r["role"] == "client").count() >= calls,
        "{} client records for {calls} client runs:\n{}",
        recs.len(),
        agent.log_text()
    );

    // The job the rules expect scrapes the agent.
    let up = prom.query(r#"up{job="llmprobe"}"#);
    assert!(
        up.len() == 1 && up[0].1 == 1.0,
        "up: {up:?}\n{}",
        prom.log_text()
    );

    // Every panel query returns a finite sample.
    let dash = dashboard();
    let vars: Vec<String> = variables(&dash).into_iter().map(|v| v.0).collect();
    let mut missing = Vec::new();
    let mut checked = 0;
    for t in targets(&dash) {
        let q = substitute(&t.expr, &vars);
        let samples = prom.query(&q);
        let finite = samples.iter().filter(|s| s.1.is_finite()).count();
        if NO_DATA_IN_TEST.iter().any(|(title, _)| *title == t.title) {
            eprintln!("no data expected in this test: {:?} {}", t.title, t.ref_id);
            continue;
        }
        checked += 1;
        let positive = samples.iter().any(|s| s.1.is_finite() && s.1 > 0.0);
        if POSITIVE_IN_TEST.contains(&t.title.as_str()) && !positive {
            missing.push(format!(
                "{:?} {}: no value above zero: {q}\n  {samples:?}",
                t.title, t.ref_id
            ));
        } else if finite == 0 {
            missing.push(format!(
                "{:?} {}: {} samples, none finite: {q}\n  {samples:?}",
                t.title,
                t.ref_id,
                samples.len()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {checked} panel queries return no data:\n{}\nagent metrics:\n{}",
        missing.len(),
        missing.join("\n"),
        agent.scrape()
    );
    assert!(checked >= 30, "{checked} queries checked");

    // Every variable lists values.
    for (name, sel, label) in variables(&dash) {
        let v = prom.api(
            &format!("/api/v1/label/{label}/values"),
            &[("match[]", &sel)],
        );
        let values = v["data"].as_array().map_or(0, Vec::len);
        assert!(
            values > 0,
            "variable ${name}: no values for {label} in {sel}: {v}"
        );
    }

    // The rule groups loaded, and every rule evaluates without error.
    let t1 = Instant::now();
    loop {
        let v = prom.api("/api/v1/rules", &[]);
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        let mut names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["llmprobe-agent", "llmprobe-calls", "llmprobe-slo"],
            "rule groups loaded:\n{}",
            prom.log_text()
        );
        let rules: Vec<&Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().map_or(&[][..], Vec::as_slice))
            .collect();
        let unhealthy: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        if unhealthy.is_empty() {
            assert!(rules.len() >= 16, "{v}");
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(15),
            "rules not healthy: {unhealthy:?}\n{}",
            prom.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The recording rules fed by the calls have values (the SLO ratio of the test model: its
    // first chunks come within 50 ms, so nothing is bad).
    let slo =
        prom.query(r#"llmprobe:ttft_slo_bad:ratio_rate5m{gen_ai_request_model="dash-model"}"#);
    assert!(slo.len() == 1 && slo[0].1 == 0.0, "TTFT SLO ratio: {slo:?}");
    let errors =
        prom.query(r#"llmprobe:client_call_errors:rate5m{gen_ai_request_model="dash-model"}"#);
    assert!(errors.len() == 1 && errors[0].1 > 0.0, "errors: {errors:?}");

    // The names the dashboard and rules use are on the live agent's /metrics too.
    let live = sample_names(&agent.scrape());
    let (exprs, records) = all_expressions();
    let problems = unknown_names(&exprs, &live, &records);
    assert!(
        problems.is_empty(),
        "not on the live agent's /metrics:\n{}",
        problems.join("\n")
    );
    eprintln!(
        "dashboard live test: {checked} panel queries with data, in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
