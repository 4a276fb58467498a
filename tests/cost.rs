//! End-to-end: what calls cost and who spent it. The real agent (real eBPF programs) runs with
//! `--prices FILE` and `--id-key-file FILE`; the real `openai` SDK calls the local test server
//! over TLS and plain HTTP with two API keys. Checked: each client record's `cost` is the price
//! table applied to the usage the SDK itself received; `llmprobe_cost_total` on /metrics adds
//! up to the records, per key; one key gives one `api_key_id` over TLS and plain HTTP, two keys
//! two; an unpriced model is counted; the keys' text appears in no record, metric, span or log.
//! Runs as root (`cargo xtask test`); see `llmprobe_tests::e2e_enabled`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const KEY_A: &str = "sk-cost-team-a-do-not-leak-1111";
const KEY_B: &str = "sk-cost-team-b-do-not-leak-2222";
const MODEL: &str = "cost-model";
const UNPRICED: &str = "unpriced-model";

/// EUR per million tokens.
const PRICES: &str = r#"
currency = "EUR"
date = "2026-11-29"
source = "e2e test"

[models."cost-model"]
input = 3.0
cached_input = 0.3
output = 12.0
reasoning = 20.0
"#;

/// What a call with `usage` (as the SDK received it) costs by [`PRICES`].
fn expected_cost(usage: &Value) -> f64 {
    let n = |v: &Value| v.as_u64().unwrap_or(0) as f64;
    let input = n(&usage["prompt_tokens"]);
    let cached = n(&usage["prompt_tokens_details"]["cached_tokens"]);
    let output = n(&usage["completion_tokens"]);
    let reasoning = n(&usage["completion_tokens_details"]["reasoning_tokens"]);
    ((input - cached) * 3.0 + cached * 0.3 + (output - reasoning) * 12.0 + reasoning * 20.0) / 1e6
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1e-6)
}

/// Runs an SDK client with `key` as its API key; returns its pid and final JSON line.
fn run_with_key(cmd: Command, key: &str) -> (u32, Value) {
    let run = run_client_with_key(cmd, key);
    (run.pid, run.json)
}

/// Sum of every `name{...}` sample whose labels contain all `needles`.
fn metric_sum(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn assert_no_key_text(files: &[&Path], extra: &[(&str, &str)]) {
    let mut hays: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).unwrap_or_default();
            (
                f.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect();
    hays.extend(extra.iter().map(|(n, t)| (n.to_string(), t.to_string())));
    for (name, hay) in &hays {
        for key in [KEY_A, KEY_B] {
            assert!(!hay.contains(key), "an API key leaked into {name}");
        }
        assert!(
            !hay.contains("do-not-leak") && !hay.contains("team-a") && !hay.contains("team-b"),
            "part of an API key leaked into {name}"
        );
    }
}

#[test]
fn cost_and_api_key_ids_from_the_wire() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("cost");
    let prices = dir.join("prices.toml");
    std::fs::write(&prices, PRICES).expect("prices file");
    let key_file = dir.join("id.key");
    std::fs::write(&key_file, "cost-e2e-id-key-0123456789abcdef\n").expect("key file");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod key file");
    }
    let ids = llmprobe::ids::IdKey::from_file(&key_file).expect("id key");
    let (id_a, id_b) = (
        ids.id("api_key", KEY_A.as_bytes()),
        ids.id("api_key", KEY_B.as_bytes()),
    );
    assert_ne!(id_a, id_b);

    let tls = TestServer::start(true, 50, 10, 4);
    let plain = TestServer::start(false, 50, 10, 4);
    let receiver = OtlpReceiver::start(&dir);
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let mut agent = Agent::start(
        &dir,
        false,
        &[
            "--prices",
            prices.to_str().expect("path"),
            "--id-key-file",
            key_file.to_str().expect("path"),
            "--otlp-endpoint",
            &endpoint,
        ],
    );

    // Key A: two streams with reasoning over TLS, one plain call; key B: one plain call and one
    // call of a model the table does not price.
    let a_tls = run_with_key(
        openai_client(
            &tls,
            &[
                "--stream",
                "--include-usage",
                "--calls",
                "2",
                "--model",
                MODEL,
                "--reasoning",
                "2",
            ],
        ),
        KEY_A,
    );
    let a_plain = run_with_key(openai_client(&plain, &["--model", MODEL]), KEY_A);
    let b_plain = run_with_key(openai_client(&plain, &["--model", MODEL]), KEY_B);
    let b_unpriced = run_with_key(openai_client(&plain, &["--model", UNPRICED]), KEY_B);
    let runs = [
        (&a_tls, &id_a, 2usize),
        (&a_plain, &id_a, 1),
        (&b_plain, &id_b, 1),
        (&b_unpriced, &id_b, 1),
    ];
    let recs = agent.wait_records("the clients' records", WAIT, |r| {
        runs.iter()
            .all(|(run, _, n)| of(r, run.0, "client").len() == *n)
    });

    // Each priced record: the table applied to the usage the SDK received.
    let mut total = 0.0;
    let mut by_key = [0.0, 0.0];
    for (run, id, _) in &runs {
        let recs = of(&recs, run.0, "client");
        let calls = run.1["calls"].as_array().expect("client calls");
        assert_eq!(recs.len(), calls.len(), "{}", dump(&recs));
        for (r, c) in recs.iter().zip(calls) {
            assert_eq!(r["api_key_id"], id.as_str(), "{r}");
            if r["request_model"] == UNPRICED {
                assert!(r["cost"].is_null() && r["cost_currency"].is_null(), "{r}");
                continue;
            }
            assert_eq!(r["token_source"], "usage", "{r}");
            let want = expected_cost(&c["usage"]);
            assert!(want > 0.0, "{c}");
            let got = r["cost"].as_f64().unwrap_or_else(|| panic!("no cost: {r}"));
            assert!(close(got, want), "cost {got}, want {want} from {c}: {r}");
            assert_eq!(r["cost_currency"], "EUR", "{r}");
            total += got;
            by_key[usize::from(*id == &id_b)] += got;
        }
    }
    // The reasoning tokens were priced apart: the streams reported some.
    let streamed = of(&recs, a_tls.0, "client");
    assert!(
        streamed
            .iter()
            .all(|r| r["reasoning_tokens"].as_u64() == Some(2)),
        "{}",
        dump(&streamed)
    );
    // Server-role records carry no cost (the client paid), and no key id for a key they read:
    // the server's requests arrive with the key, so they carry its id too.
    for s in [&tls, &plain] {
        for r in of(&recs, s.pid, "server") {
            assert!(r["cost"].is_null(), "{r}");
            assert!(
                r["api_key_id"] == id_a.as_str() || r["api_key_id"] == id_b.as_str(),
                "{r}"
            );
        }
    }

    // /metrics: the cost counter adds up to the records, per key; the unpriced call is counted.
    let text = agent.scrape();
    let cost = "llmprobe_cost_total";
    let all = metric_sum(&text, cost, &["currency=\"EUR\"", "role=\"client\""]);
    assert!(
        close(all, total),
        "metrics {all} vs records {total}:\n{text}"
    );
    for (i, id) in [&id_a, &id_b].into_iter().enumerate() {
        let lbl = format!("api_key_id=\"{id}\"");
        let got = metric_sum(&text, cost, &[&lbl, "currency=\"EUR\""]);
        assert!(
            close(got, by_key[i]),
            "key {id}: {got} vs {}:\n{text}",
            by_key[i]
        );
        assert!(
            metric_sum(&text, "llmprobe_tokens_total", &[&lbl, "type=\"input\""]) > 0.0,
            "{text}"
        );
    }
    assert!(
        metric(
            &text,
            "llmprobe_dropped_total",
            &["reason=\"cost_unpriced_model\""]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );

    // Spans: the cost and the key id as attributes.
    let t0 = Instant::now();
    let spans = loop {
        let s: Vec<Value> = read_jsonl(&receiver.out)
            .into_iter()
            .filter(|s| s["attributes"]["process.pid"] == a_tls.0)
            .collect();
        if s.len() >= 2 || t0.elapsed() > WAIT {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(spans.len(), 2, "{}", dump(&read_jsonl(&receiver.out)));
    for (s, r) in spans.iter().zip(&streamed) {
        assert_eq!(s["attributes"]["llmprobe.api_key.id"], id_a.as_str(), "{s}");
        assert_eq!(s["attributes"]["llmprobe.cost.currency"], "EUR", "{s}");
        let c = s["attributes"]["llmprobe.cost"].as_f64().unwrap_or(-1.0);
        assert!(
            streamed
                .iter()
                .any(|r| close(r["cost"].as_f64().unwrap_or(0.0), c)),
            "{s} vs {r}"
        );
    }

    assert!(agent.stop(), "agent did not exit cleanly");
    assert_no_key_text(
        &[&agent.jsonl, &agent.log, &receiver.out],
        &[("/metrics", &text)],
    );
    assert_no_secret(&[&agent.jsonl, &agent.log, &receiver.out]);
}
