//! End-to-end: the trace page (`--ui-addr`) in Debian's headless Chromium, against a live agent
//! while the openai SDK streams from the local test server over TLS.
//!
//! Chromium runs as a plain command (`--dump-dom` to read the DOM the page's script built,
//! `--screenshot` for the pictures), with `--virtual-time-budget` so the page's fetches and
//! timers have run before the dump. No WebDriver and no npm: nothing else to install or keep in
//! step with Chromium's version. The page opens a call from its URL (`#call=SEQ`), which is what
//! a click on a row sets, so no click is needed to reach a timeline.
//!
//! What is checked: the list shows the call with its process and model; the call's timeline has
//! one tick per output chunk of the record, each at the offset the API gives (within 1 ms),
//! drawn at that offset on the axis, in order and within the call; the connection-setup,
//! request, reasoning, first-token and end markers sit at the record's figures; a process and a
//! model named with HTML markup are shown as text, with no element made from them. Screenshots
//! of the list and of the timeline go to `target/test-output/ui/`.
//!
//! Chromium missing is a failure (install it with `cargo xtask test`); outside CI,
//! `LLMPROBE_SKIP_BROWSER=1` skips these tests knowingly and loudly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Headless Chromium with a profile of its own.
struct Browser {
    bin: PathBuf,
    profile: PathBuf,
}

impl Browser {
    /// Chromium, or None when it is missing and the skip was asked for (outside CI).
    fn find(dir: &Path) -> Option<Browser> {
        let bin = ["chromium", "chromium-browser"].iter().find_map(|b| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .ok()?;
            let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (out.status.success() && !p.is_empty()).then(|| PathBuf::from(p))
        });
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        match bin {
            Some(bin) => {
                let profile = dir.join("chromium-profile");
                std::fs::create_dir_all(&profile).expect("profile dir");
                Some(Browser { bin, profile })
            }
            None if !ci && std::env::var("LLMPROBE_SKIP_BROWSER").as_deref() == Ok("1") => {
                eprintln!(
                    "\n!!!!! LLMPROBE_SKIP_BROWSER=1 and no chromium: TRACE PAGE TEST SKIPPED: nothing was verified !!!!!\n"
                );
                None
            }
            None => panic!(
                "chromium is missing: the trace page is tested in headless Chromium; run `cargo xtask test` (it installs Debian's chromium){}",
                if ci { " (CI=true: never skipped)" } else { "" }
            ),
        }
    }

    /// Runs Chromium on `url` with `args` and returns its stdout; bounded in time.
    fn run(&self, url: &str, args: &[&str]) -> String {
        let log = self.profile.join("chromium.log");
        let mut child = Command::new(&self.bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--force-color-profile=srgb",
                "--window-size=1400,900",
                "--virtual-time-budget=6000",
            ])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args(args)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("chromium log"))
            .spawn()
            .expect("start chromium");
        let mut stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
            s
        });
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("wait chromium") {
                assert!(
                    st.success(),
                    "chromium {args:?} {url} failed ({st}); its log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                break;
            }
            if t0.elapsed() > Duration::from_secs(90) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium {args:?} {url} ran over 90 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        reader.join().expect("stdout reader")
    }

    fn dump_dom(&self, url: &str) -> String {
        let dom = self.run(url, &["--dump-dom"]);
        assert!(dom.contains("</html>"), "no DOM from {url}: {dom}");
        dom
    }

    /// A screenshot of `url` at `out` (a PNG of the window's size), checked and printed.
    fn screenshot(&self, url: &str, out: &Path, extra: &[&str]) {
        let _ = std::fs::remove_file(out);
        let shot = format!("--screenshot={}", out.display());
        let args: Vec<&str> = std::iter::once(shot.as_str())
            .chain(extra.iter().copied())
            .collect();
        self.run(url, &args);
        let png =
            std::fs::read(out).unwrap_or_else(|e| panic!("no screenshot {}: {e}", out.display()));
        assert!(
            png.len() > 10_000 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
            "{} is not a PNG of a page ({} bytes)",
            out.display(),
            png.len()
        );
        let dim = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
        assert_eq!((dim(16), dim(20)), (1400, 900), "{}", out.display());
        println!("screenshot: {}", out.display());
    }
}

/// Where the screenshots go.
fn output_dir() -> PathBuf {
    let d = repo_root().join("target").join("test-output").join("ui");
    std::fs::create_dir_all(&d).expect("test output dir");
    d
}

/// The start tags in `dom` whose text contains `needle`, each as its attributes, with the
/// markup that follows it up to the next `</g>` or `</tr>` (its children, for the elements the
/// page makes).
fn elements<'a>(dom: &'a str, needle: &str) -> Vec<(HashMap<String, String>, &'a str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = dom[from..].find(needle) {
        let at = from + i;
        let start = dom[..at].rfind('<').expect("a tag");
        let end = at + dom[at..].find('>').expect("tag end");
        let tag = &dom[start + 1..end];
        let mut attrs = HashMap::new();
        let mut rest = tag.split_once(' ').map_or("", |(_, r)| r);
        while let Some(eq) = rest.find("=\"") {
            let name = rest[..eq].trim().to_owned();
            let after = &rest[eq + 2..];
            let close = after.find('"').expect("attribute end");
            attrs.insert(name, after[..close].to_owned());
            rest = &after[close + 1..];
        }
        let body_end = ["</g>", "</tr>"]
            .iter()
            .filter_map(|c| dom[end..].find(c))
            .min()
            .map_or(dom.len(), |e| end + e);
        out.push((attrs, &dom[end + 1..body_end]));
        from = end;
    }
    out
}

/// The number in attribute `name` of `a`.
fn attr_f64(a: &HashMap<String, String>, name: &str) -> f64 {
    a.get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing or not a number in {a:?}"))
}

/// HTML text escaping, as a DOM serializer writes a text node.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}

/// The text of the cell with `class` in the row for `seq` of the list.
fn cell(dom: &str, seq: u64, class: &str) -> String {
    let rows = elements(dom, &format!("data-seq=\"{seq}\""));
    let row = rows
        .first()
        .unwrap_or_else(|| panic!("call {seq} is not in the list: {dom}"))
        .1;
    let open = format!("<td class=\"{class}\">");
    let i = row
        .find(&open)
        .unwrap_or_else(|| panic!("no {class} cell: {row}"));
    let rest = &row[i + open.len()..];
    rest[..rest.find("</td>").expect("cell end")].to_owned()
}

/// Waits for `pid`'s client record and returns it with its seq in the live view.
fn record_and_seq(agent: &Agent, pid: u32) -> (Value, u64) {
    let rec = agent
        .wait_records("the client's record", WAIT, |rs| {
            rs.iter().any(|r| r["pid"] == pid && r["role"] == "client")
        })
        .into_iter()
        .find(|r| r["pid"] == pid && r["role"] == "client")
        .expect("record");
    let (_, list) = agent.api_get("/api/v1/calls?limit=50");
    let seq = list["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["pid"] == pid && c["role"] == "client")
        .and_then(|c| c["seq"].as_u64())
        .unwrap_or_else(|| panic!("not listed: {list}"));
    (rec, seq)
}

#[test]
fn the_trace_page_shows_a_streamed_call_with_its_tokens_at_their_offsets() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("ui");
    let Some(browser) = Browser::find(&dir) else {
        return;
    };
    let ui_port = free_port();
    let ui_addr = format!("127.0.0.1:{ui_port}");
    let mut agent = Agent::start(&dir, false, &["--ui-addr", &ui_addr]);

    // 300 ms to the first chunk, 3 reasoning chunks then 12 answer chunks, 100 ms apart, over
    // a fresh TLS connection (connect and handshake are measured).
    let server = TestServer::start(true, 300, 100, 12);
    let run = run_client(openai_client(
        &server,
        &[
            "--stream",
            "--include-usage",
            "--model",
            "trace-page-model",
            "--reasoning",
            "3",
        ],
    ));
    let (rec, seq) = record_and_seq(&agent, run.pid);
    let (code, d) = agent.api_get(&format!("/api/v1/calls/{seq}"));
    assert_eq!(code, 200, "{d}");
    let tl = &d["timeline"];
    let api_ticks: Vec<f64> = tl["ticks_s"]
        .as_array()
        .expect("ticks")
        .iter()
        .map(|t| t.as_f64().expect("tick") * 1000.0)
        .collect();
    let chunks = rec["chunks"].as_u64().expect("chunks");
    assert!(chunks >= 12, "{rec}");

    // The list: the call with its process and model, newest first.
    let base = format!("http://{ui_addr}/");
    let list = browser.dump_dom(&base);
    assert_eq!(
        cell(&list, seq, "process"),
        escaped(rec["comm"].as_str().expect("comm"))
    );
    let shown_model = rec["response_model"]
        .as_str()
        .or(rec["request_model"].as_str())
        .expect("model");
    assert!(shown_model.starts_with("trace-page-model"), "{rec}");
    assert_eq!(cell(&list, seq, "model"), escaped(shown_model));
    assert_eq!(
        cell(&list, seq, "provider"),
        escaped(rec["provider"].as_str().expect("provider"))
    );
    let seqs: Vec<u64> = elements(&list, "data-seq=\"")
        .iter()
        .map(|(a, _)| attr_f64(a, "data-seq") as u64)
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    // The filters reach the API: by role, by status and model.
    let servers = browser.dump_dom(&format!("{base}#role=server"));
    assert!(
        elements(&servers, &format!("data-seq=\"{seq}\"")).is_empty(),
        "a client call listed under role=server"
    );
    let ok = browser.dump_dom(&format!("{base}#status=ok&model=TRACE-PAGE"));
    assert_eq!(cell(&ok, seq, "role"), "client");
    // A filter that matches nothing empties the list.
    let none = browser.dump_dom(&format!("{base}#model=no-such-model"));
    assert!(elements(&none, "data-seq=\"").is_empty(), "{none}");

    // The timeline of that call.
    let page = browser.dump_dom(&format!("{base}#call={seq}"));
    let svg = elements(&page, "data-px-per-ms=")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no timeline: {page}"))
        .0;
    let (x0, px_per_ms) = (attr_f64(&svg, "data-x0"), attr_f64(&svg, "data-px-per-ms"));
    let duration_ms = rec["duration_s"].as_f64().expect("duration") * 1000.0;
    let ticks = elements(&page, "class=\"tick\"");
    assert_eq!(ticks.len() as u64, chunks, "one tick per output chunk");
    assert_eq!(ticks.len(), api_ticks.len());
    let ttft_ms = rec["ttft_s"].as_f64().expect("ttft") * 1000.0;
    let mut last = f64::MIN;
    for (i, ((a, body), want)) in ticks.iter().zip(&api_ticks).enumerate() {
        let at = attr_f64(a, "data-offset-ms");
        assert!(
            (at - want).abs() < 1.0,
            "tick {i} at {at} ms, the API says {want}"
        );
        assert!(at >= last, "tick {i} out of order");
        assert!(
            (0.0..=duration_ms + 1.0).contains(&at),
            "tick {i} at {at} outside the call"
        );
        last = at;
        // Drawn where its offset says on the axis.
        let x1: f64 = body
            .split("x1=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("tick {i} has no line: {body}"));
        assert!(
            (x1 - (x0 + at * px_per_ms)).abs() < 0.01,
            "tick {i} drawn at x {x1}"
        );
        // The hover text rounds the offset to 0.1 ms (the page rounds the full value, this
        // test the attribute's three decimals: they may differ in the last digit at a half).
        let hover: f64 = body
            .split(" at ")
            .nth(1)
            .and_then(|r| r.split(" ms").next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("tick {i} has no hover offset: {body}"));
        assert!((hover - at).abs() <= 0.051, "tick {i}'s hover text: {body}");
    }
    let first = attr_f64(&ticks[0].0, "data-offset-ms");
    assert!(
        (first - ttft_ms).abs() < 1.0,
        "first tick {first} ms, TTFT {ttft_ms} ms"
    );

    // The markers sit at the record's figures.
    let marker = |kind: &str| {
        elements(&page, &format!("data-kind=\"{kind}\""))
            .into_iter()
            .next()
            .map(|m| m.0)
    };
    let ttft_m = marker("ttft").expect("a first-token marker");
    assert!((attr_f64(&ttft_m, "data-offset-ms") - ttft_ms).abs() < 0.01);
    let end = marker("end").expect("an end marker");
    assert!((attr_f64(&end, "data-offset-ms") - duration_ms).abs() < 0.01);
    let near = |a: &HashMap<String, String>, k: &str, want: f64| {
        let v = attr_f64(a, k);
        assert!((v - want).abs() < 0.01, "{k} {v}, want {want}: {a:?}");
    };
    let figure = |f: &str| rec[f].as_f64().map(|s| s * 1000.0);
    match figure("request_upload_s") {
        Some(up) => {
            let m = marker("request").expect("a request marker");
            near(&m, "data-start-ms", 0.0);
            near(&m, "data-end-ms", up);
        }
        None => assert!(marker("request").is_none()),
    }
    let tls = figure("tls_handshake_s");
    let connect = figure("connect_s");
    assert!(
        tls.is_some() && connect.is_some(),
        "a fresh TLS connection has its setup figures: {rec}"
    );
    if let Some(h) = tls {
        let m = marker("tls").expect("a TLS marker");
        near(&m, "data-start-ms", -h);
        near(&m, "data-end-ms", 0.0);
    }
    if let Some(c) = connect {
        let m = marker("connect").expect("a connect marker");
        let before = tls.unwrap_or(0.0);
        near(&m, "data-start-ms", -before - c);
        near(&m, "data-end-ms", -before);
    }
    match figure("reasoning_s") {
        Some(r) => {
            let m = marker("reasoning").expect("a reasoning marker");
            near(&m, "data-start-ms", ttft_ms);
            near(&m, "data-end-ms", ttft_ms + r);
        }
        None => assert!(marker("reasoning").is_none(), "{rec}"),
    }
    assert_eq!(marker("gpu").is_some(), rec["gpu_util_mean"].is_number());

    // Screenshots of the list and of the timeline.
    let out = output_dir();
    browser.screenshot(&base, &out.join("calls.png"), &[]);
    let one = format!("{base}#process=python&call={seq}");
    browser.screenshot(&one, &out.join("timeline.png"), &[]);
    browser.screenshot(&one, &out.join("timeline-dark.png"), &["--force-dark-mode"]);
    assert!(agent.stop(), "agent exit");
}

/// Runs the openai SDK in a process named `comm`: Python started through a link of that name
/// (the kernel names a process after the file it executes), with the SDK on its path. The name
/// is the process's from its start, as an attacker's would be.
fn named_client(dir: &Path, server: &TestServer, comm: &str, model: &str) -> ClientRun {
    let site = Command::new(python())
        .args([
            "-c",
            "import openai, os; print(os.path.dirname(os.path.dirname(openai.__file__)))",
        ])
        .output()
        .expect("find the SDK's site-packages");
    let site = String::from_utf8_lossy(&site.stdout).trim().to_owned();
    assert!(!site.is_empty(), "the test Python has no openai SDK");
    let link = dir.join(comm);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(python(), &link).expect("link python");
    let mut cmd = Command::new(&link);
    cmd.env("PYTHONPATH", site)
        .arg(assets().join("clients").join("openai_client.py"))
        .arg("--base-url")
        .arg(server.base_url())
        .arg("--ca")
        .arg(certs().0)
        .args(["--stream", "--model", model]);
    run_client(cmd)
}

#[test]
fn hostile_process_and_model_names_are_shown_as_text() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch("ui-hostile");
    let Some(browser) = Browser::find(&dir) else {
        return;
    };
    let ui_port = free_port();
    let ui_addr = format!("127.0.0.1:{ui_port}");
    let mut agent = Agent::start(&dir, false, &["--ui-addr", &ui_addr]);
    let server = TestServer::start(true, 50, 10, 3);
    // A process name is at most 15 bytes; the model name is the request's.
    let comm = "<img src=x>";
    let model = "<img src=x onerror=alert(1)>";
    let run = named_client(&dir, &server, comm, model);
    let (rec, seq) = record_and_seq(&agent, run.pid);
    assert_eq!(rec["comm"], comm, "the hostile name reached the record");
    assert_eq!(rec["request_model"], model, "{rec}");

    let base = format!("http://{ui_addr}/");
    for url in [base.clone(), format!("{base}#call={seq}")] {
        let dom = browser.dump_dom(&url);
        assert_eq!(cell(&dom, seq, "process"), escaped(comm), "{url}");
        assert!(dom.contains(&escaped(model)), "{url}: the model as text");
        assert!(
            !dom.contains("<img"),
            "{url}: markup from a name became an element: {dom}"
        );
        if url.contains("#call=") {
            let title = elements(&dom, "id=\"call-title\"");
            assert!(title[0].1.contains(&escaped(comm)), "{dom}");
        }
    }
    assert!(agent.stop(), "agent exit");
}

/// The page server of `llmprobe::live` in this process, with `calls` in its view: a timeline
/// with every figure a record can have (no root, no probes: what is drawn from what).
fn page_server(calls: &[llmprobe::llm::LlmCall]) -> (tokio::runtime::Runtime, String) {
    use llmprobe::live::{LiveView, serve};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let view = LiveView::new();
    for c in calls {
        view.push(c);
    }
    let addr = rt.block_on(async {
        let l = serve::bind_tcp("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let serve::Listener::Tcp(t) = &l else {
            panic!("a TCP listener")
        };
        let addr = t.local_addr().expect("addr");
        tokio::spawn(serve::serve(
            l,
            view,
            llmprobe::clock::Clock::system(),
            std::sync::Arc::new(llmprobe::telemetry::SelfMetrics::unregistered()),
            llmprobe::export::metrics_http::ServeLimits::default(),
        ));
        addr
    });
    (rt, format!("http://{addr}/"))
}

#[test]
fn the_timeline_draws_connection_setup_reasoning_and_gpu_utilization() {
    use llmprobe::llm::{CallDetail, LlmCall};
    let dir = scratch("ui-figures");
    let Some(browser) = Browser::find(&dir) else {
        return;
    };
    let start = 1_800_000_000_000_000_000_i64;
    let gaps = vec![0.08; 19];
    let gpu_call = LlmCall {
        start_time: "2027-01-15T08:00:00.000000Z".into(),
        role: "server",
        pid: 4242,
        comm: "vllm-worker".into(),
        provider: "vllm".into(),
        request_model: Some("qwen-7b".into()),
        duration_s: 2.0,
        ttft_s: Some(0.4),
        connect_s: Some(0.012),
        tls_handshake_s: Some(0.008),
        request_upload_s: Some(0.05),
        reasoning_s: Some(0.3),
        gpu_util_mean: Some(63.5),
        chunks: Some(20),
        detail: CallDetail {
            start_unix_ns: start,
            end_unix_ns: start + 2_000_000_000,
            first_chunk_unix_ns: Some(start + 400_000_000),
            gaps_s: gaps.clone(),
            ..CallDetail::default()
        },
        ..LlmCall::default()
    };
    let failed = LlmCall {
        comm: "agent".into(),
        request_model: Some("gpt-x".into()),
        error_type: Some("429".into()),
        detail: CallDetail {
            start_unix_ns: start + 3_000_000_000,
            end_unix_ns: start + 3_100_000_000,
            ..CallDetail::default()
        },
        duration_s: 0.1,
        ..gpu_call.clone()
    };
    let aborted = LlmCall {
        comm: "agent".into(),
        aborted: true,
        error_type: None,
        ..failed.clone()
    };
    let (_rt, base) = page_server(&[gpu_call, failed, aborted]);

    // The status filter: one call each.
    for (status, seq) in [("ok", 1), ("error", 2), ("aborted", 3)] {
        let dom = browser.dump_dom(&format!("{base}#status={status}"));
        let seqs: Vec<String> = elements(&dom, "data-seq=\"")
            .into_iter()
            .filter_map(|(a, _)| a.get("data-seq").cloned())
            .collect();
        assert_eq!(seqs, vec![seq.to_string()], "status={status}");
        assert!(cell(&dom, seq, &format!("st-{status}")).starts_with(status));
    }

    let dom = browser.dump_dom(&format!("{base}#call=1"));
    let marker = |kind: &str| {
        elements(&dom, &format!("data-kind=\"{kind}\""))
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {kind} marker: {dom}"))
            .0
    };
    let span = |kind: &str| {
        let m = marker(kind);
        (attr_f64(&m, "data-start-ms"), attr_f64(&m, "data-end-ms"))
    };
    let close = |got: (f64, f64), want: (f64, f64), what: &str| {
        assert!(
            (got.0 - want.0).abs() < 0.01 && (got.1 - want.1).abs() < 0.01,
            "{what}: {got:?}, want {want:?}"
        );
    };
    // Connection setup before the request's first byte: connect, then the TLS handshake.
    close(span("connect"), (-20.0, -8.0), "connect");
    close(span("tls"), (-8.0, 0.0), "TLS handshake");
    close(span("request"), (0.0, 50.0), "request sent");
    close(
        span("reasoning"),
        (400.0, 700.0),
        "reasoning from the first token",
    );
    close(span("gpu"), (0.0, 2000.0), "GPU band over the call");
    assert_eq!(
        marker("gpu").get("data-util-percent").map(String::as_str),
        Some("63.5")
    );
    assert!(dom.contains("GPU 63.5 % mean"), "the GPU label");
    assert!((attr_f64(&marker("ttft"), "data-offset-ms") - 400.0).abs() < 0.01);
    assert!((attr_f64(&marker("end"), "data-offset-ms") - 2000.0).abs() < 0.01);
    let ticks: Vec<f64> = elements(&dom, "class=\"tick\"")
        .iter()
        .map(|(a, _)| attr_f64(a, "data-offset-ms"))
        .collect();
    let want: Vec<f64> = std::iter::once(400.0)
        .chain((1..=gaps.len()).map(|i| 400.0 + 80.0 * i as f64))
        .collect();
    assert_eq!(ticks.len(), want.len());
    for (i, (t, w)) in ticks.iter().zip(&want).enumerate() {
        assert!((t - w).abs() < 0.01, "tick {i} at {t}, want {w}");
    }
    browser.screenshot(
        &format!("{base}#call=1"),
        &output_dir().join("timeline-gpu.png"),
        &[],
    );
}
