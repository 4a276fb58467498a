//! The gateway split, end to end: the real LiteLLM proxy (PyPI `litellm[proxy]`, in a venv of its
//! own: see tests/assets/requirements-litellm.txt) answers the openai SDK's calls and makes its
//! own upstream call to the local test server. The agent must join LiteLLM's server-role record
//! and its client-role upstream record: each other's request ids, the gateway's overhead, and the
//! upstream span as the child of the gateway span.
//!
//! Runs as root with the real probes, one test at a time (`serial`), like tests/e2e.rs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const TTFT_MS: u64 = 200;
const GAP_MS: u64 = 40;
const CHUNKS: u32 = 8;

/// The `litellm` command of the LiteLLM venv (`LLMPROBE_TEST_LITELLM`, else
/// `target/litellm-venv/bin/litellm`).
fn litellm_bin() -> PathBuf {
    let p = std::env::var_os("LLMPROBE_TEST_LITELLM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            repo_root()
                .join("target")
                .join("litellm-venv")
                .join("bin")
                .join("litellm")
        });
    assert!(
        p.exists(),
        "LiteLLM {} is missing: python3 -m venv target/litellm-venv && \
         target/litellm-venv/bin/python -m pip install -r tests/assets/requirements-litellm.txt \
         (or set LLMPROBE_TEST_LITELLM)",
        p.display()
    );
    p
}

/// A LiteLLM proxy with one model, `gw-model`, routed to `upstream` as an OpenAI-compatible
/// server: no database, no telemetry, the bundled model cost map (no network).
struct LiteLlm {
    proc: Proc,
    port: u16,
    log: PathBuf,
}

impl LiteLlm {
    fn start(dir: &Path, upstream: &TestServer) -> LiteLlm {
        let config = dir.join("litellm.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n  - model_name: gw-model\n    litellm_params:\n      \
                 model: openai/upstream-model\n      api_base: {}\n      \
                 api_key: sk-upstream-test-key\n\
                 litellm_settings:\n  telemetry: false\n\
                 general_settings:\n  master_key: {SECRET_KEY}\n",
                upstream.base_url()
            ),
        )
        .expect("write litellm.yaml");
        let port = free_port();
        let log = dir.join("litellm.log");
        let logf = std::fs::File::create(&log).expect("litellm log");
        let child = Command::new(litellm_bin())
            .arg("--config")
            .arg(&config)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_TELEMETRY", "False")
            .env_remove("DATABASE_URL")
            .stdout(logf.try_clone().expect("log fd"))
            .stderr(logf)
            .spawn()
            .expect("start litellm");
        let lite = LiteLlm {
            proc: Proc { child },
            port,
            log,
        };
        let t0 = Instant::now();
        loop {
            let ok = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{port}/health/liveliness"))
                .output()
                .is_ok_and(|o| o.stdout == b"200");
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "LiteLLM did not start:\n{}",
                std::fs::read_to_string(&lite.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        lite
    }

    fn pid(&self) -> u32 {
        self.proc.child.id()
    }
}

/// The openai SDK calling the proxy.
fn call_gateway(lite: &LiteLlm, stream: bool) -> ClientRun {
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("clients").join("openai_client.py"))
        .arg("--base-url")
        .arg(format!("http://127.0.0.1:{}/v1", lite.port))
        .args(["--model", "gw-model", "--timeout", "30"]);
    if stream {
        cmd.args(["--stream", "--include-usage"]);
    }
    run_client(cmd)
}

fn f(r: &Value, k: &str) -> f64 {
    r[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number in {r}"))
}

fn s<'a>(r: &'a Value, k: &str) -> &'a str {
    r[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string in {r}"))
}

#[test]
fn litellm_gateway_and_its_upstream_call_are_joined() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("gateway");
    let upstream = TestServer::start(false, TTFT_MS, GAP_MS, CHUNKS);
    let lite = LiteLlm::start(&dir, &upstream);
    let receiver = OtlpReceiver::start(&dir);
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let agent = Agent::start(&dir, false, &["--otlp-endpoint", &endpoint]);

    for stream in [false, true] {
        let run = call_gateway(&lite, stream);
        let want = |r: &Value, role: &str, model: &str| {
            r["role"] == role && r["request_model"] == model && r["stream"] == stream
        };
        let recs = agent.wait_records("the gateway, its upstream and its client", WAIT, |r| {
            r.iter()
                .any(|x| want(x, "server", "gw-model") && x["pid"] == lite.pid())
                && r.iter()
                    .any(|x| want(x, "client", "upstream-model") && x["pid"] == lite.pid())
                && r.iter().any(|x| x["pid"] == run.pid)
        });
        let one = |role: &str, model: &str, pid: u32| -> Value {
            let v: Vec<&Value> = recs
                .iter()
                .filter(|x| want(x, role, model) && x["pid"] == pid)
                .collect();
            assert_eq!(v.len(), 1, "one {role} {model} record: {}", dump(&recs));
            v[0].clone()
        };
        let gw = one("server", "gw-model", lite.pid());
        let up = one("client", "upstream-model", lite.pid());
        let app = one("client", "gw-model", run.pid);
        let origin = one("server", "upstream-model", upstream.pid);
        let ctx = format!("stream={stream}\ngateway {gw}\nupstream {up}");

        // Request ids: LiteLLM's call id (x-litellm-call-id, the id its client saw too) and the
        // test server's (x-request-id, the id its own server-role record carries).
        let gw_id = s(&gw, "request_id");
        assert_eq!(gw_id.len(), 36, "a LiteLLM call id (uuid): {ctx}");
        assert_eq!(app["request_id"], gw["request_id"], "{ctx}");
        let up_id = s(&up, "request_id");
        assert!(up_id.starts_with("req-"), "{ctx}");
        assert_eq!(origin["request_id"], up["request_id"], "{ctx}");
        assert_eq!(gw["upstream_request_id"], up_id, "{ctx}");
        assert!(gw["gateway_request_id"].is_null(), "{ctx}");
        assert!(up["upstream_request_id"].is_null(), "{ctx}");
        assert!(up["gateway_overhead_s"].is_null(), "{ctx}");

        // Overhead: the gateway's time to its answer minus the upstream's (TTFT when streamed,
        // the whole response when not).
        let overhead = f(&gw, "gateway_overhead_s");
        assert!(overhead >= 0.0, "{ctx}");
        let (g, u) = if stream {
            (f(&gw, "ttft_s"), f(&up, "ttft_s"))
        } else {
            (f(&gw, "duration_s"), f(&up, "duration_s"))
        };
        assert!((overhead - (g - u)).abs() < 1e-6, "{ctx}");
        // The upstream waited for the test server's first token at least.
        assert!(u >= TTFT_MS as f64 / 1e3 - 0.005, "{ctx}");
        // The upload of the upstream request: LiteLLM's head and body.
        let upload = f(&up, "request_upload_s");
        assert!((0.0..u).contains(&upload), "{ctx}");
        // Read at the test server, the same request's upload (its reads: what LiteLLM's writes
        // took to arrive).
        let received = f(&origin, "request_upload_s");
        eprintln!(
            "gateway stream={stream}: overhead {:.1} ms, gateway {:.1} ms, upstream {:.1} ms, \
             upstream request upload {:.1} ms sent / {:.1} ms received\n{gw}\n{up}",
            overhead * 1e3,
            g * 1e3,
            u * 1e3,
            upload * 1e3,
            received * 1e3,
        );

        // Spans: the upstream call is a child of the gateway call, in its trace. One pair per
        // round: the latest of each kind is this round's.
        let round = if stream { 2 } else { 1 };
        let t0 = Instant::now();
        let (gs, us) = loop {
            let spans = receiver.spans();
            let of_kind = |kind: &str, model: &str| -> Vec<Value> {
                spans
                    .iter()
                    .filter(|x| {
                        x["attributes"]["process.pid"] == lite.pid()
                            && x["kind"] == kind
                            && x["attributes"]["gen_ai.request.model"] == model
                    })
                    .cloned()
                    .collect()
            };
            let g = of_kind("SPAN_KIND_SERVER", "gw-model");
            let u = of_kind("SPAN_KIND_CLIENT", "upstream-model");
            if g.len() >= round && u.len() >= round {
                break (g[round - 1].clone(), u[round - 1].clone());
            }
            assert!(t0.elapsed() < WAIT, "spans: {}", dump(&spans));
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(us["parent_span_id"], gs["span_id"], "{gs}\n{us}");
        assert_eq!(us["trace_id"], gs["trace_id"], "{gs}\n{us}");
        assert_eq!(s(&gs, "span_id").len(), 16, "{gs}");
        assert_eq!(
            s(&gs, "parent_span_id"),
            "",
            "no traceparent: a root span {gs}"
        );
        // The upstream's gateway_request_id: LiteLLM's call id when LiteLLM's response head
        // came before the upstream record was written (the upstream call's end), else
        // llmprobe's id for the gateway call (its span id). A whole response is always sent
        // after its upstream ended; a stream's first chunk (after its head) that came before
        // the upstream's end proves the head did.
        let llmprobe_id = format!("llmprobe-{}", s(&gs, "span_id"));
        let got = s(&up, "gateway_request_id");
        let ns = |v: &Value| v.as_u64().or_else(|| v.as_str()?.parse().ok());
        let gw_first_chunk = ns(&gs["event_times"][0]);
        let up_end = ns(&us["end_time_unix_nano"]).expect("upstream span end");
        if !stream {
            assert_eq!(got, llmprobe_id, "{ctx}\n{gs}");
        } else if gw_first_chunk.is_some_and(|t| t < up_end) {
            assert_eq!(got, gw_id, "{ctx}\n{gs}\n{us}");
        } else {
            assert!(got == gw_id || got == llmprobe_id, "{ctx}\n{gs}\n{us}");
        }
    }
    // Three identical streams at once: each gateway call is joined to its own upstream call
    // (which pairing is right cannot be told from the wire for identical requests; a one to
    // one join is what must hold).
    let mut cmd = Command::new(python());
    cmd.arg(assets().join("clients").join("openai_client.py"))
        .arg("--base-url")
        .arg(format!("http://127.0.0.1:{}/v1", lite.port))
        .args([
            "--model",
            "gw-model",
            "--concurrent",
            "3",
            "--include-usage",
        ]);
    let run = run_client(cmd);
    let recs = agent.wait_records("three concurrent gateway calls", WAIT, |r| {
        of(r, lite.pid(), "server").len() == 5
            && of(r, lite.pid(), "client").len() == 5
            && of(r, run.pid, "client").len() == 3
    });
    let gws: Vec<Value> = of(&recs, lite.pid(), "server")[2..].to_vec();
    let ups: Vec<Value> = of(&recs, lite.pid(), "client")[2..].to_vec();
    let mut joined: Vec<&str> = gws.iter().map(|g| s(g, "upstream_request_id")).collect();
    let mut up_ids: Vec<&str> = ups.iter().map(|u| s(u, "request_id")).collect();
    joined.sort_unstable();
    up_ids.sort_unstable();
    assert_eq!(joined, up_ids, "one upstream each:\n{}", dump(&recs));
    for g in &gws {
        assert!(f(g, "gateway_overhead_s") >= 0.0, "{g}");
        let gid = s(g, "request_id");
        // The app's record of the same call carries the gateway's id.
        assert!(
            of(&recs, run.pid, "client")
                .iter()
                .any(|a| a["request_id"] == gid),
            "{g}"
        );
    }
    for u in &ups {
        let gid = s(u, "gateway_request_id");
        assert!(
            gws.iter().any(|g| g["request_id"] == gid) || gid.starts_with("llmprobe-"),
            "{u}"
        );
    }

    // Nothing was refused.
    let refused = agent
        .metric(
            "llmprobe_dropped_total",
            &["reason=\"gateway_join_refused\""],
        )
        .unwrap_or(0.0);
    assert_eq!(refused, 0.0);
}
