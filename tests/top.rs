//! End-to-end: the real `llmprobe top` TUI in a real terminal (tmux, 160x40), reading a live
//! agent's API socket while the openai SDK streams from the local test server over TLS.
//!
//! While the slow call streams, its row in the in-flight pane shows the client's pid and model;
//! once it ended, the rollup pane has its model with its call and a TTFT near the server's
//! 300 ms. Keys sent with `tmux send-keys` change the rollups' order as documented (Tab to the
//! rollup pane, `s` to the next column, `r` to reverse), `q` quits with status 0 and the
//! terminal is back on the main screen in cooked mode. `--once` prints the same figures as
//! text, from the socket and from the page server (`--url`).
//!
//! tmux is installed by `cargo xtask test`; without it this test fails (never skips).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmprobe_tests::*;

const WAIT: Duration = Duration::from_secs(25);

/// A tmux server of the test's own (its own socket), killed on drop.
struct Tmux {
    sock: PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.sock).env("TERM", "xterm-256color");
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self
            .cmd()
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .expect("run tmux (cargo xtask test installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Waits until the screen satisfies `ok`; the last screen.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(t0.elapsed() < WAIT, "{what}: never on screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

fn tmux_present() {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "tmux is required by this test (cargo xtask test installs it with apt-get){}",
        if std::env::var("CI").as_deref() == Ok("true") {
            " and CI must have it"
        } else {
            ""
        }
    );
}

/// The rows of the rollup pane (below its header), in screen order.
fn rollup_rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|l| !l.contains("CALLS/S"))
        .skip(1)
        .take_while(|l| !l.starts_with('└'))
        .map(str::to_owned)
        .collect()
}

fn cell_ms(cell: &str) -> Option<f64> {
    if let Some(ms) = cell.strip_suffix("ms") {
        return ms.parse().ok();
    }
    cell.strip_suffix('s')?.parse::<f64>().ok().map(|s| s * 1e3)
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[test]
fn top_shows_a_streaming_call_then_its_model_and_sorts_by_key() {
    if !e2e_enabled() {
        return;
    }
    tmux_present();
    let _g = serial();
    let dir = scratch("top");
    let ui_addr = format!("127.0.0.1:{}", free_port());
    let mut agent = Agent::start(&dir, false, &["--ui-addr", &ui_addr]);
    let sock = agent.api_socket.clone().expect("the agent's API socket");

    // Two quick calls of one model (20 ms to the first chunk), to sort against.
    let fast = TestServer::start(true, 20, 5, 4);
    run_client(openai_client(
        &fast,
        &[
            "--stream",
            "--include-usage",
            "--model",
            "top-fast",
            "--calls",
            "2",
        ],
    ));

    let tmux = Tmux {
        sock: dir.join("tmux.sock"),
    };
    let status_file = dir.join("top.status");
    let line = format!(
        "{} top --socket {} --interval 0.2; echo $? > {}; stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' '; echo after-top; sleep 10",
        sh_quote(&agent_bin()),
        sh_quote(&sock),
        sh_quote(&status_file)
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "40",
        &line,
    ]);
    tmux.wait_for("the connected footer", |s| s.contains("● connected"));

    // 300 ms to the first chunk, then 40 chunks 100 ms apart: about 4.3 s in flight.
    let slow = TestServer::start(true, 300, 100, 40);
    let mut cmd = openai_client(
        &slow,
        &["--stream", "--include-usage", "--model", "top-slow"],
    );
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("OPENAI_API_KEY", "sk-top-view-test-key");
    let mut client = cmd.spawn().expect("client");
    let pid = client.id().to_string();

    // In flight: its pid, model and a TTFT, with tokens counting.
    let s = tmux.wait_for("the streaming call in flight with its TTFT", |s| {
        s.lines().any(|l| {
            let c: Vec<&str> = l.trim_matches('│').split_whitespace().collect();
            c.get(1) == Some(&pid.as_str())
                && c.contains(&"top-slow")
                && c.last().is_some_and(|t| cell_ms(t).is_some())
                && c.get(c.len().wrapping_sub(3))
                    .and_then(|t| t.parse::<u64>().ok())
                    .is_some_and(|t| t > 2)
        })
    });
    print!("llmprobe top, 160x40, while the call streams:\n{s}");
    let row = s
        .lines()
        .find(|l| l.contains(&format!(" {pid} ")))
        .expect("row");
    assert!(row.contains("python"), "the process name: {row}");
    let ttft = cell_ms(
        row.trim_matches('│')
            .split_whitespace()
            .last()
            .expect("ttft"),
    )
    .expect("a TTFT");
    assert!((250.0..1500.0).contains(&ttft), "TTFT {ttft} ms: {row}");
    // The agent sees the call from both ends: the client's row says so.
    assert!(row.contains(" client "), "{row}");
    assert!(client.wait().expect("client").success());

    // Ended: the rollups have it, with a TTFT near the server's 300 ms.
    let s = tmux.wait_for("the slow model's rollup", |s| {
        s.contains("top-slow-0001") && !s.contains(&format!(" {pid} "))
    });
    let rows = rollup_rows(&s);
    let slow_row = rows
        .iter()
        .find(|l| l.contains("top-slow-0001"))
        .unwrap_or_else(|| panic!("no rollup row:\n{s}"));
    let cells: Vec<&str> = slow_row.trim_matches('│').split_whitespace().collect();
    // MODEL PROVIDER ROLE CALLS CALLS/S TTFT-P50 TTFT-P95 TPOT-P50 ERR% ABORT% TOK/S
    assert_eq!(cells.len(), 11, "{slow_row}");
    assert!(cells[3].parse::<u64>().expect("calls") >= 1, "{slow_row}");
    let p50 = cell_ms(cells[5]).expect("TTFT p50");
    assert!(
        (250.0..1000.0).contains(&p50),
        "TTFT p50 {p50} ms: {slow_row}"
    );
    assert_eq!(cells[8], "0.0", "no errors: {slow_row}");
    // Each end of the local call has its own row (client and server).
    let slow_roles: Vec<&str> = rows
        .iter()
        .filter(|l| l.contains("top-slow-0001"))
        .filter_map(|l| l.trim_matches('│').split_whitespace().nth(2))
        .collect();
    assert!(
        slow_roles.contains(&"client") && slow_roles.contains(&"server"),
        "{s}"
    );

    // Sorting by key. Default: CALLS, most first (top-fast made 2).
    // The models in row order (each model's client and server rows sort together).
    let order = |s: &str| -> Vec<&'static str> {
        let mut v: Vec<&'static str> = rollup_rows(s)
            .iter()
            .filter_map(|l| {
                if l.contains("top-fast-0001") {
                    Some("fast")
                } else if l.contains("top-slow-0001") {
                    Some("slow")
                } else {
                    None
                }
            })
            .collect();
        v.dedup();
        v
    };
    assert!(s.contains("CALLS▼"), "{s}");
    assert_eq!(order(&s), ["fast", "slow"], "{s}");
    // Tab to the rollups, `s` twice: CALLS/S, then TTFT P50, slowest first (a model's two rows
    // have the same TTFT within a few ms; the models' 300 ms apart).
    tmux.run(&["send-keys", "-t", "top", "Tab", "s", "s"]);
    let s = tmux.wait_for("sorted by TTFT P50", |s| s.contains("TTFT P50▼"));
    assert_eq!(order(&s), ["slow", "fast"], "{s}");
    // `r`: fastest first.
    tmux.run(&["send-keys", "-t", "top", "r"]);
    let s = tmux.wait_for("reversed", |s| s.contains("TTFT P50▲"));
    assert_eq!(order(&s), ["fast", "slow"], "{s}");
    assert!(
        s.contains("ELAPSED▼"),
        "the in-flight pane kept its sort: {s}"
    );
    print!("llmprobe top, 160x40, after Tab s s r:\n{s}");

    // `q`: exits 0, the terminal back on the main screen.
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let t0 = Instant::now();
    let status = loop {
        if let Ok(st) = std::fs::read_to_string(&status_file) {
            break st;
        }
        assert!(
            t0.elapsed() < WAIT,
            "top did not quit on q:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.trim(), "0", "top's exit status");
    let s = tmux.wait_for("the main screen", |s| s.contains("after-top"));
    assert!(
        !s.contains("CALLS/S") && !s.contains("● connected"),
        "the terminal is back on the main screen:\n{s}"
    );
    assert!(
        s.contains("icanon echo after-top"),
        "the terminal is back in cooked mode with echo (stty):\n{s}"
    );

    // --once prints the same figures.
    let out = Command::new(agent_bin())
        .args(["top", "--once", "--socket"])
        .arg(&sock)
        .output()
        .expect("top --once");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("top-slow-0001") && text.contains("top-fast-0001"),
        "{text}"
    );

    // And through the page server (--ui-addr) instead of the socket.
    let out = Command::new(agent_bin())
        .args(["top", "--once", "--url", &format!("http://{ui_addr}")])
        .output()
        .expect("top --once --url");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("top-slow-0001"), "{text}");

    // No agent: a clear error, status 1.
    let out = Command::new(agent_bin())
        .args(["top", "--once", "--socket"])
        .arg(dir.join("nothing.sock"))
        .output()
        .expect("top --once");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no llmprobe agent answers at") && err.contains("is `llmprobe run` running?"),
        "{err}"
    );
    assert!(agent.stop(), "the agent stops cleanly");
}
