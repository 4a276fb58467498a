//! `llmprobe top`: a live terminal view of a running agent, from its live-view API
//! ([`crate::live::api`]) on its local socket (`--api-socket`) or page server (`--ui-addr`).
//!
//! A reader thread ([`client`]) asks for the calls in flight and the per-model rollups every
//! `--interval` and hands each snapshot (or the error) to the terminal's loop, which draws
//! [`view::render`] of its model and handles keys. The terminal's thread never does I/O with
//! the agent, so a stuck agent or a full socket shows as "disconnected", never as a frozen
//! screen.
//!
//! Invariants:
//! * The terminal is restored (raw mode off, main screen, cursor shown) on every exit: the
//!   normal one, an error, a panic (the hook restores before the message is printed), and
//!   SIGTERM / SIGINT (a flag the loop reads within 100 ms). A hang-up (SIGHUP, or stdin
//!   reporting one) ends the process at once with status 129: there is no terminal left.
//! * What the agent sends is bounded ([`client::MAX_ANSWER`], [`client::MAX_ROWS`]) and every
//!   name it carries is cleaned before it is drawn ([`view::clean`]).
//! * `--once` prints one snapshot as text and exits 0, or says why not on stderr and exits 1.

pub mod client;
pub mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use ratatui::crossterm::{cursor, execute, terminal};

use client::Endpoint;
use view::{Action, Link, Model};

/// `llmprobe top`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// The agent's live-view socket (its --api-socket).
    #[arg(long, value_name = "PATH", default_value = crate::live::serve::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Read the agent's page server instead (its --ui-addr), e.g. http://127.0.0.1:9465.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Seconds between refreshes (0.1 to 60).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
    pub interval: f64,
    /// The rollups' window: calls that ended in the last SECONDS (1 to 600).
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=600))]
    pub window: u32,
    /// Print one snapshot as text to stdout and exit (for scripts; no terminal needed).
    #[arg(long)]
    pub once: bool,
    /// With --once: the width of the text, in columns.
    #[arg(long, value_name = "COLUMNS", default_value_t = 160,
          value_parser = clap::value_parser!(u16).range(60..=1000))]
    pub width: u16,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s}: not a number of seconds"))?;
    if !(0.1..=60.0).contains(&v) {
        return Err(format!("{s}: the interval is 0.1 to 60 seconds"));
    }
    Ok(v)
}

/// How long one refresh may take in all.
fn fetch_timeout(interval_s: f64) -> Duration {
    Duration::from_secs_f64((interval_s * 2.0).clamp(2.0, 10.0))
}

/// Runs `llmprobe top`.
pub fn run(a: TopArgs) -> anyhow::Result<()> {
    let ep = Endpoint::new(Some(a.socket.clone()), a.url.as_deref())?;
    if a.once {
        return once(&ep, &a);
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!(
            "llmprobe top draws on a terminal and reads keys from it, and stdin or stdout is not one; use --once for a text snapshot"
        );
    }
    let rx = reader(ep.clone(), a.window, a.interval);
    let model = Model::new(ep.describe(), a.interval);
    tui(model, &rx)
}

/// `--once`: one snapshot, as text.
fn once(ep: &Endpoint, a: &TopArgs) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    let (ep2, window, timeout) = (ep.clone(), a.window, fetch_timeout(a.interval));
    std::thread::spawn(move || {
        let _ = tx.send(client::snapshot(&ep2, window, timeout));
    });
    let snap = rx
        .recv_timeout(timeout + Duration::from_secs(1))
        .unwrap_or_else(|_| {
            Err(format!(
                "the agent at {} did not answer in time",
                ep.describe()
            ))
        })
        .map_err(anyhow::Error::msg)?;
    let mut m = Model::new(ep.describe(), a.interval);
    m.snapshot = Some(snap);
    m.link = Link::Up { ago_s: 0.0 };
    print!("{}", view::plain(&m, a.width));
    Ok(())
}

/// The reader thread: a snapshot (or why not) every `interval_s`, until the receiver is gone.
fn reader(
    ep: Endpoint,
    window: u32,
    interval_s: f64,
) -> mpsc::Receiver<Result<view::Snapshot, String>> {
    let (tx, rx) = mpsc::sync_channel(2);
    std::thread::Builder::new()
        .name("top-reader".into())
        .spawn(move || {
            let every = Duration::from_secs_f64(interval_s);
            loop {
                let t0 = Instant::now();
                let r = client::snapshot(&ep, window, fetch_timeout(interval_s));
                if tx.send(r).is_err() {
                    return;
                }
                std::thread::sleep(every.saturating_sub(t0.elapsed()));
            }
        })
        .ok();
    rx
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_hangup(_: libc::c_int) {
    // The terminal is gone: nothing to restore, and crossterm would read its EOF forever.
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(129) }
}

fn catch_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    // SAFETY: the handler only calls _exit.
    unsafe {
        libc::signal(libc::SIGHUP, on_hangup as *const () as libc::sighandler_t);
    }
    // A terminal can also go away without a SIGHUP reaching us (another session leader, stdin
    // redirected from a closed pty): crossterm then spins on EOF inside `poll`, so a watchdog
    // ends the process when stdin reports a hang-up or stops being a terminal.
    let _ = std::thread::Builder::new()
        .name("top-hangup".into())
        .spawn(|| {
            loop {
                let mut fd = libc::pollfd {
                    fd: 0,
                    events: 0,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; the call does not block (timeout 0).
                let n = unsafe { libc::poll(&mut fd, 1, 0) };
                let gone =
                    n > 0 && fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
                if gone || !std::io::stdin().is_terminal() {
                    // SAFETY: _exit ends the process without running anything else.
                    unsafe { libc::_exit(129) }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
}

/// Puts the terminal back as it was: main screen, cursor, cooked mode. Idempotent.
fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

/// Restores the terminal when dropped (every return and unwinding).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn tui(mut m: Model, rx: &mpsc::Receiver<Result<view::Snapshot, String>>) -> anyhow::Result<()> {
    catch_signals();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        prev(info);
    }));
    terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
    let _restore = Restore;
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        cursor::Hide
    )
    .context("cannot switch to the alternate screen")?;
    let mut term =
        ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
    term.clear()?;
    let mut last_ok: Option<Instant> = None;
    let mut last_err: Option<String> = None;
    while !STOP.load(Ordering::Relaxed) {
        while let Ok(r) = rx.try_recv() {
            match r {
                Ok(s) => {
                    m.snapshot = Some(s);
                    last_ok = Some(Instant::now());
                    last_err = None;
                }
                Err(e) => last_err = Some(e),
            }
        }
        m.link = match (&last_err, last_ok) {
            (Some(e), t) => Link::Down {
                error: e.clone(),
                ago_s: t.map(|t| t.elapsed().as_secs_f64()),
            },
            (None, Some(t)) => Link::Up {
                ago_s: t.elapsed().as_secs_f64(),
            },
            (None, None) => Link::Connecting,
        };
        term.draw(|f| view::render(&m, f.area(), f.buffer_mut()))?;
        if event::poll(Duration::from_millis(100))?
            && let Event::Key(k) = event::read()?
            && k.kind != KeyEventKind::Release
            && m.key(k.code, k.modifiers) == Action::Quit
        {
            break;
        }
    }
    Ok(())
}
