//! Attack tests (threat model in the README): each attack is run by an unprivileged process
//! (`nobody`, through `llmprobe_tests::as_nobody`) against the real agent with the real eBPF
//! programs. During each: the agent stays alive and under its memory budget, a well-behaved
//! client's LLM calls made at the same time are still recorded, and every refusal is counted.
//!
//! Here: decompression bombs in every encoding the agent decodes, and a flood of distinct and
//! oversized model names. The attacker's server and client are Python standard-library scripts
//! (`/usr/bin/python3`: the test venv is not readable by `nobody`), talking plain HTTP on
//! loopback; the bombs are built here.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use llmprobe::protocol::encoding::brotli_bomb;
use llmprobe_tests::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// The Python that `nobody` can run.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The attacker's LLM-shaped server: answers `POST /v1/chat/completions` on one keep-alive
/// connection per client. Model `bomb-<file>`: the bytes of `<dir>/bomb-<file>` with
/// `Content-Encoding` the part of `<file>` before any `-`. Other models: a small chat completion
/// echoing the model.
const ATTACK_SERVER: &str = r#"
import http.server, json, os, socketserver, sys
d = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *a):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            model = json.loads(body).get("model", "")
        except Exception:
            model = ""
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if model.startswith("bomb-"):
            with open(os.path.join(d, model), "rb") as f:
                data = f.read()
            head += "Content-Encoding: %s\r\n" % model[5:].split("-")[0]
        else:
            data = json.dumps({"id": "chatcmpl-" + model[:64], "object": "chat.completion",
                "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()
        # One write per response: no Nagle wait between head and body.
        head += "Content-Length: %d\r\n\r\n" % len(data)
        self.wfile.write(head.encode() + data)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
print("LISTENING", s.server_address[1], flush=True)
s.serve_forever()
"#;

/// The attacker's client: one keep-alive connection, as fast as it can. `models M...`: one call
/// per model. `flood N`: N calls with random model names, every 1000th 100 KB long.
const ATTACK_CLIENT: &str = r#"
import http.client, json, random, socket, sys
port, mode = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
c.connect()
c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def call(model):
    # Bytes, so head and body go in one write.
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
if mode == "models":
    for m in sys.argv[3:]:
        call(m)
else:
    for i in range(int(sys.argv[3])):
        if i % 1000 == 999:
            call("L" * 100_000)
        else:
            call("flood-%d-%08x" % (i, random.getrandbits(32)))
print("DONE", flush=True)
"#;

/// The attacker's server, running as `nobody`, with its port.
struct AttackServer {
    _proc: Proc,
    port: u16,
    pid: u32,
}

fn attack_server(dir: &Path) -> AttackServer {
    let script = dir.join("attack_server.py");
    std::fs::write(&script, ATTACK_SERVER).expect("write server script");
    std::fs::write(dir.join("attack_client.py"), ATTACK_CLIENT).expect("write client script");
    let mut child = as_nobody(SYSTEM_PYTHON)
        .arg(&script)
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the attacker's server");
    let pid = child.id();
    let port = listening_port(&mut child, "the attacker's server");
    AttackServer {
        _proc: Proc { child },
        port,
        pid,
    }
}

/// The attacker's client as `nobody`. The script is written once, by [`attack_server`]: a client
/// starting while another rewrites it could read it half written.
fn attack_client(dir: &Path, port: u16, args: &[&str]) -> std::process::Command {
    let script = dir.join("attack_client.py");
    let mut cmd = as_nobody(SYSTEM_PYTHON);
    cmd.arg(script).arg(port.to_string()).args(args);
    cmd
}

/// `zeros` bytes of zeros in an encoder, fed a MiB at a time.
fn compress_zeros<W: Write>(mut w: W, zeros: usize) -> W {
    let mib = vec![0u8; 1 << 20];
    for _ in 0..zeros >> 20 {
        w.write_all(&mib).expect("compress");
    }
    w
}

/// The bombs, as (model name = file name, bytes, plain size).
fn bombs() -> Vec<(&'static str, Vec<u8>, u64)> {
    use flate2::Compression;
    let zeros = 256 << 20;
    let gzip = compress_zeros(
        flate2::write::GzEncoder::new(Vec::new(), Compression::best()),
        zeros,
    )
    .finish()
    .expect("gzip");
    let deflate = compress_zeros(
        flate2::write::ZlibEncoder::new(Vec::new(), Compression::best()),
        zeros,
    )
    .finish()
    .expect("zlib");
    // A streamed zstd frame at level 3 (window 2 MiB: decoded, up to the caps)...
    let zstd = compress_zeros(
        zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd"),
        zeros,
    )
    .finish()
    .expect("zstd");
    // ...and one that asks for a 128 MiB window: a few KB that made the decoder allocate it.
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    e.window_log(27).expect("window_log");
    e.long_distance_matching(true).expect("ldm");
    let zstd_window = compress_zeros(e, zeros).finish().expect("zstd");
    vec![
        ("bomb-gzip", gzip, zeros as u64),
        ("bomb-deflate", deflate, zeros as u64),
        ("bomb-br", brotli_bomb(64), 64 << 24),
        ("bomb-zstd", zstd, zeros as u64),
        ("bomb-zstd-window", zstd_window, zeros as u64),
    ]
}

fn dropped(agent: &Agent, reason: &str) -> f64 {
    agent
        .metric("llmprobe_dropped_total", &[&format!("reason=\"{reason}\"")])
        .unwrap_or(0.0)
}

const MIB: u64 = 1 << 20;

#[test]
fn decompression_bombs_in_every_encoding_are_counted_and_bounded() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("bombs");
    let bombs = bombs();
    for (name, bytes, plain) in &bombs {
        // Each is a bomb: at least 250 plain bytes per compressed byte.
        assert!(
            *plain / bytes.len() as u64 >= 250,
            "{name}: {} bytes",
            bytes.len()
        );
        std::fs::write(dir.join(name), bytes).expect("write bomb");
    }
    let server = attack_server(&dir);
    let good_server = TestServer::start(false, 50, 10, 4);
    let mut agent = Agent::start(&dir, false, &[]);
    // Let start-up allocations settle, then take the peak so far as the baseline.
    std::thread::sleep(Duration::from_secs(1));
    let (_, hwm_before) = agent.memory();

    // Four attacker clients at once, each sending every bomb three times; meanwhile a
    // well-behaved client streams.
    let rounds = 3;
    let names: Vec<&str> = bombs.iter().map(|b| b.0).collect();
    let mut args = vec!["models"];
    for _ in 0..rounds {
        args.extend(&names);
    }
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let mut cmd = attack_client(&dir, server.port, &args);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            cmd.spawn().expect("start the attacker's client")
        })
        .collect();
    let good = run_client(openai_client(
        &good_server,
        &["--stream", "--include-usage", "--calls", "3"],
    ));
    let mut attacker_pids = Vec::new();
    for a in attackers {
        attacker_pids.push(a.id());
        let out = a.wait_with_output().expect("attacker's client");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("DONE"),
            "attacker's client failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sent = attacker_pids.len() * rounds * bombs.len();

    let recs = agent.wait_records("the well-behaved and the attackers' records", WAIT, |r| {
        of(r, good.pid, "client").len() == 3
            && attacker_pids
                .iter()
                .map(|p| of(r, *p, "client").len())
                .sum::<usize>()
                == sent
    });
    assert!(agent.alive(), "the agent died");
    for r in of(&recs, good.pid, "client") {
        assert_eq!(r["request_model"], "test-model", "{r}");
        assert_eq!(r["output_tokens"], 4, "{r}");
        assert!(r["error_type"].is_null(), "{r}");
    }
    // Every bomb was seen, named and refused: on the client's side and on the server's.
    for name in &names {
        let n = recs
            .iter()
            .filter(|r| attacker_pids.contains(&(r["pid"].as_u64().unwrap_or(0) as u32)))
            .filter(|r| r["request_model"] == *name)
            .count();
        assert_eq!(n, attacker_pids.len() * rounds, "{name} records");
    }
    let refused = dropped(&agent, "undecodable_body");
    assert!(
        refused >= sent as f64,
        "{refused} undecodable bodies counted for {sent} bombs received"
    );
    // Peak memory: at most 8 bodies at once (4 connections, each seen from the client and the
    // server), each holding at most its decoder's 8 MiB window, one decode call's 8 MiB of
    // output and the 8 MiB kept of a whole body: 192 MiB; plus the 64 MiB event queue budget.
    // Before the bounds, one zstd-window bomb alone held 128 MiB of window, and one 16 KiB chunk
    // of a zstd bomb decoded into a buffer of hundreds of MiB.
    let (_, hwm_after) = agent.memory();
    let grown = hwm_after.saturating_sub(hwm_before);
    eprintln!(
        "VmHWM {} MiB -> {} MiB; {refused} undecodable bodies",
        hwm_before / MIB,
        hwm_after / MIB
    );
    assert!(
        grown < 256 * MIB,
        "peak memory grew by {} MiB during the bombs",
        grown / MIB
    );
    assert!(agent.stop(), "agent did not exit cleanly");
}

/// The families whose samples are one per series (histograms by their `_count`).
fn series_in(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            (l.starts_with("gen_ai_")
                || l.starts_with("llmprobe_time")
                || l.starts_with("llmprobe_reasoning"))
                && l.contains("_count{")
                || l.starts_with("llmprobe_tokens_total{")
                || l.starts_with("llmprobe_requests_aborted_total{")
        })
        .count()
}

#[test]
fn a_flood_of_model_names_keeps_series_capped_and_fields_short() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("names");
    let server = attack_server(&dir);
    let good_server = TestServer::start(false, 20, 5, 3);
    let max_series = 500;
    let mut agent = Agent::start(&dir, false, &["--max-series", &max_series.to_string()]);
    std::thread::sleep(Duration::from_secs(1));
    let (_, hwm_before) = agent.memory();

    // The well-behaved model has series before the flood...
    let before = run_client(openai_client(&good_server, &["--model", "good-model"]));
    agent.wait_records("the well-behaved record", WAIT, |r| {
        of(r, before.pid, "client").len() == 1
    });
    // ...then 10 000 calls with distinct names (10 of them 100 KB long), as fast as one
    // keep-alive connection goes, while the well-behaved client keeps calling.
    let flood = 10_000;
    let mut attacker = attack_client(&dir, server.port, &["flood", &flood.to_string()]);
    attacker.stdout(Stdio::piped()).stderr(Stdio::piped());
    let attacker = attacker.spawn().expect("start the flood");
    let attacker_pid = attacker.id();
    let during = run_client(openai_client(
        &good_server,
        &["--model", "good-model", "--calls", "5"],
    ));
    let out = attacker.wait_with_output().expect("flood");
    assert!(
        out.status.success(),
        "flood failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and after it.
    let after = run_client(openai_client(&good_server, &["--model", "good-model"]));
    // (Not wait_records: its message would list the flood's 20 000 records.)
    let t0 = std::time::Instant::now();
    let recs = loop {
        let r = agent.records();
        let (d, a) = (
            of(&r, during.pid, "client").len(),
            of(&r, after.pid, "client").len(),
        );
        if d == 5 && a == 1 {
            break r;
        }
        assert!(
            t0.elapsed() < WAIT,
            "well-behaved records: {d} of 5 during the flood, {a} of 1 after; {} records; \
             dropped: {:?}",
            r.len(),
            agent
                .scrape()
                .lines()
                .filter(|l| l.starts_with("llmprobe_dropped_total")
                    || l.starts_with("llmprobe_events_lost"))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(agent.alive(), "the agent died");

    let text = agent.scrape();
    let series = series_in(&text);
    assert!(
        series <= max_series,
        "{series} series on /metrics past --max-series {max_series}"
    );
    let evicted: f64 = text
        .lines()
        .filter(|l| l.starts_with("llmprobe_series_evicted_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // Each flood call makes several series on each side; all but max_series went.
    assert!(
        evicted >= f64::from(flood) - max_series as f64,
        "only {evicted} series evicted"
    );
    assert!(
        metric(
            &text,
            "gen_ai_client_operation_duration_seconds_count",
            &["gen_ai_request_model=\"good-model\""]
        )
        .is_some_and(|n| n >= 1.0),
        "the well-behaved model's series is gone after the flood"
    );

    // The attacker's records: every free-text field at most 256 bytes; the 100 KB names cut
    // with the marker.
    let mine: Vec<&Value> = recs
        .iter()
        .filter(|r| r["pid"] == attacker_pid || r["pid"] == server.pid)
        .collect();
    assert!(
        mine.len() >= flood as usize / 2,
        "only {} of the flood's records",
        mine.len()
    );
    let mut cut = 0;
    for r in &mine {
        for field in [
            "request_model",
            "response_model",
            "request_id",
            "http_path",
            "server_address",
        ] {
            if let Some(v) = r[field].as_str() {
                assert!(v.len() <= 256, "{field} is {} bytes", v.len());
                if field == "request_model" && v.starts_with("LLLL") {
                    assert!(v.ends_with('…'), "{v}");
                    cut += 1;
                }
            }
        }
    }
    assert!(cut >= 1, "no record of a 100 KB model name");
    let jsonl_line_max = std::fs::read_to_string(&agent.jsonl)
        .unwrap_or_default()
        .lines()
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        jsonl_line_max < 8192,
        "a record line of {jsonl_line_max} bytes"
    );

    let (_, hwm_after) = agent.memory();
    let grown = hwm_after.saturating_sub(hwm_before);
    eprintln!(
        "VmHWM {} MiB -> {} MiB; {series} series, {evicted} evicted",
        hwm_before / MIB,
        hwm_after / MIB
    );
    // 500 series of at most 10 labels of 256 escaped bytes, with the event queue's 64 MiB.
    assert!(grown < 128 * MIB, "peak memory grew by {} MiB", grown / MIB);
    assert!(agent.stop(), "agent did not exit cleanly");
}

/// Holds `n` connections to the agent's `/metrics` (half sending a partial head a byte at a
/// time, half silent) and sends garbage on more, until its stdin closes.
const METRICS_ATTACK: &str = r#"
import socket, sys, threading, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held, stop = [], threading.Event()
def trickle():
    while not stop.is_set():
        for i, s in enumerate(list(held)):
            if i % 2 == 0:
                try:
                    s.send(b"G")
                except OSError:
                    held.remove(s)
        time.sleep(1)
def refill():
    while not stop.is_set():
        while len(held) < n:
            try:
                held.append(socket.create_connection((host, port), timeout=5))
            except OSError:
                time.sleep(0.05)
                break
        try:
            g = socket.create_connection((host, port), timeout=5)
            g.sendall(b"\x00\xffPOST /metrics HTTP/1.1\r\n" + b"A" * 20000)
            g.close()
        except OSError:
            pass
        time.sleep(0.01)
for f in (trickle, refill):
    threading.Thread(target=f, daemon=True).start()
print("STARTED", flush=True)
sys.stdin.read()
stop.set()
"#;

#[test]
fn metrics_server_survives_a_connection_flood_and_slowloris() {
    if !e2e_enabled() {
        return;
    }
    let _g = serial();
    let dir = scratch_for_nobody("metrics-flood");
    let script = dir.join("metrics_attack.py");
    std::fs::write(&script, METRICS_ATTACK).expect("write attack script");
    let good_server = TestServer::start(false, 20, 5, 3);
    let mut agent = Agent::start(&dir, false, &[]);
    let (host, port) = agent
        .metrics_addr
        .rsplit_once(':')
        .expect("metrics address");
    let mut attack = as_nobody(SYSTEM_PYTHON)
        .arg(&script)
        .args([host, port, "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the attack");
    let mut line = String::new();
    BufReader::new(attack.stdout.take().expect("attack stdout"))
        .read_line(&mut line)
        .expect("attack started");
    assert_eq!(line.trim(), "STARTED");
    // Let the flood fill every slot, then scrape while it goes on (the server's whole-request
    // timeout is 5 s: the trickling connections must not outlive it).
    std::thread::sleep(Duration::from_secs(7));
    let good = run_client(openai_client(&good_server, &["--model", "good-model"]));
    let mut served = 0;
    for _ in 0..10 {
        if agent.scrape().contains("llmprobe_build_info") {
            served += 1;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(attack.stdin.take());
    let _ = attack.wait();
    assert!(agent.alive(), "the agent died");
    // The counters are read once the flood is over: a scrape made during it may itself be closed
    // for the limit (it counts among the 10 above, of which 8 must be answered).
    let text = agent.scrape();
    assert!(
        text.contains("llmprobe_build_info"),
        "no scrape answered after the flood"
    );
    assert!(
        served >= 8,
        "only {served} of 10 scrapes answered during the flood"
    );
    let count = |reason: &str| {
        metric(
            &text,
            "llmprobe_dropped_total",
            &[&format!("reason=\"{reason}\"")],
        )
        .unwrap_or(0.0)
    };
    eprintln!(
        "scrapes served {served}/10; closed for the limit {}, timed out {}, bad requests {}",
        count("metrics_connection_limit"),
        count("metrics_request_timeout"),
        count("metrics_bad_request")
    );
    assert!(count("metrics_connection_limit") >= 900.0);
    assert!(count("metrics_bad_request") >= 1.0);
    agent.wait_records("the well-behaved record", WAIT, |r| {
        of(r, good.pid, "client").len() == 1
    });
    assert!(agent.stop(), "agent did not exit cleanly");
}
