//! `llmprobe demo`: a first run that needs nothing but this binary and root.
//!
//! Stage: beside the agent. The demo starts two child processes of this same binary (hidden
//! subcommands): a small LLM server speaking the OpenAI chat-completions API in plaintext
//! HTTP/1.1 on loopback (`demo-server`: SSE streams with usage in the last chunk, plain JSON,
//! and a 404 for an unknown model, the first token after `--delay-ms`), and a client making a
//! few calls to it (`demo-client`: streaming, non-streaming, one error), each on its own
//! connection. The agent runs in the demo's own process with every probe, as `run` does, scoped
//! to the two children (`--pid`), so only the demo's calls are recorded; the agent excludes only
//! its own process, so the children are traced like any other. Records are printed as they come
//! (`--jsonl`, stdout by default); /metrics is served at `--metrics-addr`.
//!
//! Invariants:
//! - The client starts its calls only once the agent serves /metrics (its probes are attached),
//!   so every call is seen from its first byte.
//! - The children never outlive the demo: they are killed when it ends, however it ends.
//! - Everything is on loopback; the server reads at most [`MAX_REQUEST`] bytes a request, serves
//!   at most [`MAX_CONNECTIONS`] connections at once, each for at most [`CONNECTION_TIME`].
//! - The client's API key is a fixed placeholder (`sk-demo-placeholder`), no credential.
//! - Without `--prices` the demo's models get made-up prices ([`DEMO_PRICES`], in a private
//!   directory removed at the end), so records show `cost`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest request head + body the demo server reads.
const MAX_REQUEST: usize = 1 << 20;
/// Most connections the demo server serves at once (more are closed at once).
const MAX_CONNECTIONS: usize = 32;
/// Longest a demo server connection lives.
const CONNECTION_TIME: Duration = Duration::from_secs(30);
/// The words of every demo reply, one stream chunk each.
const REPLY: &[&str] = &[
    "Hello",
    " from",
    " the",
    " llmprobe",
    " demo",
    ":",
    " this",
    " reply",
    " was",
    " traced",
    " by",
    " eBPF",
    ".",
];
/// The model the server refuses (404 model_not_found): the demo's error call.
pub const UNKNOWN_MODEL: &str = "demo-unknown";
/// The placeholder key the client sends (records show only its keyed hash, `api_key_id`).
const PLACEHOLDER_KEY: &str = "sk-demo-placeholder";
/// Made-up prices of the demo's models (added to the built-in table unless `--prices` is given),
/// so that its records carry `cost` and /metrics `llmprobe_cost_total`.
pub const DEMO_PRICES: &str = "# llmprobe demo: made-up prices, per million tokens.
source = \"llmprobe demo (made up)\"
currency = \"USD\"

[models.\"demo-chat\"]
input = 1.0
output = 2.0

[models.\"demo-mini\"]
input = 0.1
output = 0.4
";

/// `llmprobe demo`.
#[derive(clap::Args, Clone)]
pub struct DemoArgs {
    /// Time the demo server takes to its first token (so TTFT shows), milliseconds.
    #[arg(long, default_value_t = 300, value_name = "MS", help_heading = "Demo")]
    pub delay_ms: u64,
    /// Time between the demo server's stream chunks (TBT), milliseconds.
    #[arg(long, default_value_t = 40, value_name = "MS", help_heading = "Demo")]
    pub token_ms: u64,
    /// After the client's calls, stay this long (seconds) before stopping.
    #[arg(
        long,
        default_value_t = 2.0,
        value_name = "SECONDS",
        help_heading = "Demo"
    )]
    pub linger: f64,
    /// Run until Ctrl-C, the client repeating its calls every 5 seconds (to watch /metrics and
    /// the other views fill).
    #[arg(long, help_heading = "Demo")]
    pub keep_running: bool,
    #[command(flatten)]
    pub agent: crate::AgentArgs,
}

/// `llmprobe demo-server` (internal).
#[derive(clap::Args, Clone)]
pub struct ServerArgs {
    /// Time to the first token, milliseconds.
    #[arg(long, default_value_t = 300)]
    pub delay_ms: u64,
    /// Time between chunks, milliseconds.
    #[arg(long, default_value_t = 40)]
    pub token_ms: u64,
}

/// `llmprobe demo-client` (internal).
#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// The server's address.
    #[arg(long)]
    pub server: SocketAddr,
    /// Repeat the calls every this many seconds (0: once).
    #[arg(long, default_value_t = 0)]
    pub repeat_every: u64,
    /// Wait for a line on stdin before the first call.
    #[arg(long)]
    pub wait_for_go: bool,
}

/// A child that is killed (and reaped) when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A directory only this user can enter (`mkdtemp`: a fresh name, mode 0700), removed on drop.
struct PrivateDir(std::path::PathBuf);

impl PrivateDir {
    fn create() -> anyhow::Result<PrivateDir> {
        use std::os::unix::ffi::OsStrExt;
        let template = std::env::temp_dir().join("llmprobe-demo-XXXXXX");
        let mut bytes = template.as_os_str().as_bytes().to_vec();
        bytes.push(0);
        // SAFETY: `bytes` is a NUL-terminated template that mkdtemp rewrites in place.
        let p = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if p.is_null() {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot create {}", template.display()));
        }
        bytes.pop();
        Ok(PrivateDir(std::path::PathBuf::from(
            std::ffi::OsStr::from_bytes(&bytes),
        )))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the demo: server, client, agent.
pub fn run(mut d: DemoArgs) -> anyhow::Result<()> {
    if !d.linger.is_finite() || !(0.0..=3600.0).contains(&d.linger) {
        bail!("--linger {}: must be between 0 and 3600 seconds", d.linger);
    }
    if d.agent.metrics_addr.port() == 0 {
        // The client waits for /metrics: it needs the port before the agent binds it.
        let probe = std::net::TcpListener::bind(d.agent.metrics_addr)
            .with_context(|| format!("cannot bind {}", d.agent.metrics_addr))?;
        d.agent.metrics_addr = probe.local_addr()?;
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut server = Kid(Command::new(&exe)
        .args(["demo-server", "--delay-ms", &d.delay_ms.to_string()])
        .args(["--token-ms", &d.token_ms.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the demo server")?);
    let server_addr = read_listening(&mut server.0)?;
    let mut client_cmd = Command::new(&exe);
    client_cmd
        .args([
            "demo-client",
            "--wait-for-go",
            "--server",
            &server_addr.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    if d.keep_running {
        client_cmd.args(["--repeat-every", "5"]);
    }
    let mut client = Kid(client_cmd.spawn().context("cannot start the demo client")?);
    let go = client.0.stdin.take();
    d.agent.pids.extend([server.0.id(), client.0.id()]);
    let metrics_addr = d.agent.metrics_addr;
    // The demo's own files: made-up prices, and its API socket unless one was asked for (the
    // default path belongs to the node's agent, which may be running).
    let private = PrivateDir::create()?;
    if d.agent.prices.is_none() {
        let path = private.0.join("demo-prices.toml");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(DEMO_PRICES.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        d.agent.prices = Some(path);
    }
    if d.agent.api_socket == llmprobe::live::serve::DEFAULT_SOCKET {
        d.agent.api_socket = private.0.join("api.sock").display().to_string();
    }
    let views = ViewHint {
        socket: (d.agent.api_socket != "none").then(|| d.agent.api_socket.clone()),
        page: d.agent.ui_addr,
    };
    let opts = crate::options(d.agent.clone(), None)?;
    log::info!(
        "demo: LLM server on http://{server_addr} (pid {}), client pid {}: tracing these two",
        server.0.id(),
        client.0.id()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let keep_running = d.keep_running;
    let linger = Duration::from_secs_f64(d.linger);
    let client_pid = client.0.id();
    let result = rt.block_on(async move {
        // From here SIGTERM is handled (the agent's own handler takes it over): the demo stops
        // itself with it and the agent flushes as on any SIGTERM.
        let sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let driver = tokio::spawn(drive(
            metrics_addr,
            views,
            go,
            client_pid,
            keep_running,
            linger,
        ));
        let run = llmprobe::app::run(opts).await;
        drop(sigterm);
        let client = if driver.is_finished() {
            driver.await.ok()
        } else {
            driver.abort();
            None
        };
        run.map(|()| client)
    });
    drop(client);
    drop(server);
    match result? {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Where the demo's live views are, for its ready message.
struct ViewHint {
    socket: Option<String>,
    page: Option<SocketAddr>,
}

/// Reads the server's `listening ADDR` line.
fn read_listening(child: &mut Child) -> anyhow::Result<SocketAddr> {
    let out = child.stdout.take().context("demo server stdout")?;
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .context("reading the demo server's address")?;
    line.trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("the demo server did not start (it said {line:?})"))
}

/// Waits for the agent's /metrics, lets the client go, waits for it, then stops the demo.
async fn drive(
    metrics: SocketAddr,
    views: ViewHint,
    go: Option<std::process::ChildStdin>,
    client_pid: u32,
    keep_running: bool,
    linger: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if get(metrics, "/metrics").await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the agent did not serve /metrics within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log::info!(
        "demo: the agent is ready. Records are printed below as JSON lines; metrics: \
         curl http://{metrics}/metrics"
    );
    if let Some(s) = &views.socket {
        log::info!("demo: live view: sudo llmprobe top --socket {s}");
    }
    if let Some(a) = views.page {
        log::info!("demo: trace page: http://{a}/");
    }
    if let Some(mut go) = go {
        let _ = go.write_all(b"go\n");
    }
    // The client is our child: wait for its exit off the runtime.
    let status = tokio::task::spawn_blocking(move || wait_pid(client_pid)).await??;
    let outcome = if status == 0 {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "the demo client failed (exit status {status})"
        ))
    };
    if keep_running {
        // The client repeats until Ctrl-C (which stops it, and the agent, too).
        log::info!("demo: the client stopped ({status}); the agent runs until Ctrl-C");
        return Ok(());
    }
    log::info!(
        "demo: the client is done; stopping in {:.1} s (--keep-running to stay)",
        linger.as_secs_f64()
    );
    tokio::time::sleep(linger).await;
    // SAFETY: kill(2) on our own pid with a signal the agent handles.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
    outcome
}

/// Waits for a child by pid (it is reaped here; `Kid`'s own wait then finds nothing).
fn wait_pid(pid: u32) -> anyhow::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid pointer to a c_int.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if r == pid as libc::pid_t {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("waiting for the demo client");
        }
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

/// One plain HTTP/1.1 GET; the status code.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let (status, _, _) = request(addr, "GET", path, "").await?;
    Ok(status)
}

/// One request on a fresh connection (`Connection: close`): status, the time to the first
/// body byte, and the body (chunked encoding left in place).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, Option<Duration>, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: llmprobe-demo\r\n\
         Authorization: Bearer {PLACEHOLDER_KEY}\r\nContent-Type: application/json\r\n\
         Accept: */*\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let start = Instant::now();
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut first_body: Option<Duration> = None;
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .context("response timed out")??;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if first_body.is_none()
            && let Some(h) = memchr::memmem::find(&buf, b"\r\n\r\n")
            && buf.len() > h + 4
        {
            first_body = Some(start.elapsed());
        }
        if buf.len() > MAX_REQUEST {
            bail!("response larger than {MAX_REQUEST} bytes");
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("not an HTTP response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, first_body, body))
}

/// `llmprobe demo-client`: the demo's calls.
pub fn client(a: ClientArgs) -> anyhow::Result<()> {
    if a.wait_for_go {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        loop {
            let calls: [(&str, bool); 4] = [
                ("demo-chat", true),
                ("demo-chat", false),
                ("demo-mini", true),
                (UNKNOWN_MODEL, false),
            ];
            for (model, stream) in calls {
                let body = serde_json::json!({
                    "model": model,
                    "stream": stream,
                    "stream_options": stream.then(|| serde_json::json!({"include_usage": true})),
                    "messages": [
                        {"role": "system", "content": "You are the llmprobe demo."},
                        {"role": "user", "content": "Say hello to the person trying llmprobe."}
                    ],
                })
                .to_string();
                let (status, first, _) =
                    request(a.server, "POST", "/v1/chat/completions", &body).await?;
                eprintln!(
                    "demo client: {model} stream={stream} -> HTTP {status}{}",
                    first.map_or(String::new(), |t| format!(
                        ", first body byte after {} ms",
                        t.as_millis()
                    ))
                );
                let expected = if model == UNKNOWN_MODEL { 404 } else { 200 };
                if status != expected {
                    bail!("demo call to {model}: HTTP {status}, expected {expected}");
                }
            }
            if a.repeat_every == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(a.repeat_every)).await;
        }
    })
}

/// `llmprobe demo-server`: prints `listening ADDR`, then serves until killed.
pub fn server(a: ServerArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        // Any local user can connect: connections are bounded in number and in time.
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut n = 0u64;
        loop {
            let (sock, _) = listener.accept().await?;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            n += 1;
            let a = a.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(CONNECTION_TIME, serve(sock, &a, n)).await {
                    Ok(Err(e)) => eprintln!("demo server: {e:#}"),
                    Err(_) => eprintln!("demo server: a connection took too long, closed"),
                    Ok(Ok(())) => {}
                }
                drop(slot);
            });
        }
    })
}

/// One connection, one exchange.
async fn serve(mut s: tokio::net::TcpStream, a: &ServerArgs, n: u64) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_len, content_length, path) = loop {
        let r = s.read(&mut chunk).await?;
        if r == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..r]);
        if buf.len() > MAX_REQUEST {
            bail!("request too large");
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(len) = req.parse(&buf)? {
            let cl = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0);
            break (len, cl, req.path.unwrap_or("/").to_owned());
        }
    };
    if content_length > MAX_REQUEST {
        bail!("request body too large");
    }
    while buf.len() < head_len + content_length {
        let r = s.read(&mut chunk).await?;
        if r == 0 {
            bail!("request body cut short");
        }
        buf.extend_from_slice(&chunk[..r]);
    }
    let body: serde_json::Value =
        serde_json::from_slice(&buf[head_len..head_len + content_length]).unwrap_or_default();
    let model = body["model"].as_str().unwrap_or("demo-chat").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let prompt_tokens = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| {
                    x["content"]
                        .as_str()
                        .unwrap_or("")
                        .split_whitespace()
                        .count()
                })
                .sum::<usize>()
        })
        .unwrap_or(0);
    let id = format!("chatcmpl-demo-{n}");
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let usage = serde_json::json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": REPLY.len(),
        "total_tokens": prompt_tokens + REPLY.len(),
    });
    if path != "/v1/chat/completions" || model == UNKNOWN_MODEL {
        let (code, msg) = if path != "/v1/chat/completions" {
            ("not_found", format!("no route {path}"))
        } else {
            (
                "model_not_found",
                format!("The model `{model}` does not exist"),
            )
        };
        let body = serde_json::json!({"error": {"message": msg, "type": "invalid_request_error", "code": code}}).to_string();
        let resp = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nx-request-id: req-demo-{n}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await?;
        return Ok(());
    }
    tokio::time::sleep(Duration::from_millis(a.delay_ms)).await;
    if !stream {
        let body = serde_json::json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY.concat()},
                         "finish_reason": "stop"}],
            "usage": usage,
        })
        .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: req-demo-{n}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await?;
        return Ok(());
    }
    s.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
             x-request-id: req-demo-{n}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    for (i, word) in REPLY.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(a.token_ms)).await;
        }
        let mut delta = serde_json::json!({"content": word});
        if i == 0 {
            delta["role"] = "assistant".into();
        }
        let last = i + 1 == REPLY.len();
        let event = serde_json::json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta,
                         "finish_reason": if last { serde_json::Value::from("stop") } else { serde_json::Value::Null }}],
        });
        send_chunk(&mut s, &format!("data: {event}\n\n")).await?;
    }
    let usage_event = serde_json::json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [], "usage": usage,
    });
    send_chunk(&mut s, &format!("data: {usage_event}\n\ndata: [DONE]\n\n")).await?;
    s.write_all(b"0\r\n\r\n").await?;
    Ok(())
}

async fn send_chunk(s: &mut tokio::net::TcpStream, data: &str) -> anyhow::Result<()> {
    s.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await?;
    Ok(())
}
