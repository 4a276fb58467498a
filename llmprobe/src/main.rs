//! The `llmprobe` command.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

mod config;
mod demo;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use llmprobe::app::{self, RunOptions};
use llmprobe::conntrack::TrackerConfig;
use llmprobe::export::jsonl::JsonlTarget;
use llmprobe::probes::recorder::RecordOptions;

#[derive(Parser)]
#[command(
    name = "llmprobe",
    version,
    about = "See what LLM traffic really does: eBPF capture of LLM API calls, no app changes"
)]
struct Cli {
    /// Read options from this TOML file: each key is a flag's long name (`metrics-addr =
    /// "0.0.0.0:9464"`), repeatable flags take arrays. The command line and LLMPROBE_*
    /// variables win over it. `llmprobe config --print-default` prints one with every option.
    #[arg(
        long,
        global = true,
        env = "LLMPROBE_CONFIG",
        value_name = "FILE",
        help_heading = "Configuration"
    )]
    config: Option<PathBuf>,
    /// Print the effective options as JSON, each with where it came from (command-line,
    /// environment, config-file, default), and exit.
    #[arg(long, global = true, help_heading = "Configuration")]
    print_config: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct AgentArgs {
    /// Append one JSON object per LLM call to PATH (`-`: stdout, `none`: do not write records).
    #[arg(
        help_heading = "Output",
        long,
        default_value = "-",
        value_name = "PATH|-|none"
    )]
    jsonl: String,
    /// Where to serve Prometheus /metrics. Loopback by default: binding elsewhere is your choice.
    #[arg(
        help_heading = "Output",
        long,
        default_value = "127.0.0.1:9464",
        value_name = "ADDR"
    )]
    metrics_addr: SocketAddr,
    /// Trace this process (repeatable). With any of --pid, --comm, --cgroup, --container-id a
    /// process is traced when it matches one of them and no --exclude-comm; OpenSSL uprobes are
    /// then placed per process, so processes out of scope never trap. Default: every process.
    #[arg(help_heading = "Scope", long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Trace processes with this exact name (repeatable; /proc/PID/comm, at most 15 bytes).
    /// The name is chosen by the process itself (exec, prctl PR_SET_NAME): a process can opt
    /// itself in or out, which only affects its own traffic.
    #[arg(help_heading = "Scope", long = "comm", value_name = "NAME")]
    comms: Vec<String>,
    /// Do not trace processes with this exact name (repeatable; wins over every include).
    #[arg(help_heading = "Scope", long = "exclude-comm", value_name = "NAME")]
    exclude_comms: Vec<String>,
    /// Trace processes in this cgroup v2 or below it (repeatable): a path under /sys/fs/cgroup,
    /// or relative to it (e.g. system.slice/foo.service).
    #[arg(help_heading = "Scope", long = "cgroup", value_name = "PATH")]
    cgroups: Vec<String>,
    /// Trace processes of this container (repeatable): 12 to 64 hex digits of its id, as found
    /// in /proc/PID/cgroup (docker-<id>.scope, cri-containerd-<id>.scope, /docker/<id>).
    #[arg(help_heading = "Scope", long = "container-id", value_name = "ID")]
    container_ids: Vec<String>,
    /// `all`: OpenSSL uprobes on every selected process. `auto`: only on processes found
    /// talking to LLMs: a TLS ClientHello naming a known LLM API host or an --llm-host, or an
    /// LLM call already seen (e.g. plaintext HTTP). A process's calls before it is found are
    /// missed when they are TLS.
    #[arg(help_heading = "Scope", long, value_enum, default_value = "all")]
    scope: ScopeMode,
    /// With --scope auto: a server name that marks LLM traffic (repeatable): `host` or
    /// `*.domain` (the domain and its subdomains), added to the built-in list of LLM API hosts.
    #[arg(help_heading = "Scope", long = "llm-host", value_name = "HOST")]
    llm_hosts: Vec<String>,
    /// Seconds between scans of every process for TLS libraries (new processes are found at
    /// once from their exec and mmap; this rescan catches what those missed). Probes of a file
    /// no traced process maps any more are released after two such scans.
    #[arg(help_heading = "Scope", long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    rescan_interval: u64,
    /// Size of the ring buffer that carries captured bytes from the kernel: a power of two from
    /// 1M to 1G (suffixes K, M, G are binary). Larger rides out longer bursts before
    /// llmprobe_events_lost_total counts lost records; it is locked kernel memory, and pages the
    /// agent has read count in its resident size.
    #[arg(help_heading = "Limits and memory", long, default_value = "16M", value_name = "BYTES", value_parser = parse_ring_size)]
    ring_buffer_size: u32,
    /// Most connections tracked at once; past it the process holding the most loses its least
    /// recently active one.
    #[arg(help_heading = "Limits and memory", long, default_value_t = 16_384)]
    max_connections: usize,
    /// Memory the agent's buffers may hold (bytes): half for open calls (buffered bodies, stream
    /// buffers, per-chunk timings, text samples; past it the largest holders are cut), a quarter
    /// for events queued between the ring reader and the tracker, a quarter for decompressor
    /// state. Every cut is counted.
    #[arg(help_heading = "Limits and memory", long, value_name = "BYTES", default_value_t = 256 << 20)]
    memory_limit: usize,
    /// Most connections one process may hold in the tracker; past it its own least recently
    /// active one makes room.
    #[arg(help_heading = "Limits and memory", long, default_value_t = 4_096)]
    max_connections_per_process: usize,
    /// Stop capturing a connection after this many HTTP exchanges that are not LLM calls (0: never).
    #[arg(help_heading = "Limits and memory", long, default_value_t = 3)]
    mute_after_non_llm: u32,
    /// How tokens are estimated when an API reports no usage.
    #[arg(
        help_heading = "Tokens, conversations and cost",
        long,
        value_enum,
        default_value = "tokenizer"
    )]
    token_estimator: TokenEstimator,
    /// Rotate the JSONL file once it exceeds this many bytes (kept: PATH and PATH.1).
    #[arg(help_heading = "Output", long, value_name = "BYTES")]
    jsonl_max_bytes: Option<u64>,
    /// Most series the LLM call metric families hold together; past it the least recently used
    /// series is removed (counted in llmprobe_series_evicted_total).
    #[arg(
        help_heading = "Limits and memory",
        long,
        default_value_t = 10_000,
        value_name = "N"
    )]
    max_series: usize,
    /// No longer used (label values are bounded by --max-series); accepted so that old command
    /// lines still start.
    #[arg(help_heading = "Limits and memory", long, hide = true)]
    max_label_values: Option<usize>,
    /// Export one span per LLM call to this OTLP endpoint (also OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(help_heading = "Exporters (OTLP)", long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// OTLP protocol: http/protobuf (default) or grpc (also OTEL_EXPORTER_OTLP_PROTOCOL).
    #[arg(help_heading = "Exporters (OTLP)", long, value_name = "PROTOCOL")]
    otlp_protocol: Option<String>,
    /// GPU metrics through NVML: auto (when the NVIDIA driver is there) or off.
    #[arg(help_heading = "GPU", long, value_enum, default_value = "auto")]
    gpu: GpuArg,
    /// GPU sampling interval, seconds.
    #[arg(help_heading = "GPU", long, default_value_t = 1.0, value_name = "SECONDS", value_parser = parse_interval)]
    gpu_interval: f64,
    /// NVML library to load (default: the loader's search path, then the usual driver mounts:
    /// /usr/local/nvidia/lib64, /run/nvidia/driver, GKE's /home/kubernetes/bin/nvidia/lib64).
    #[arg(help_heading = "GPU", long, value_name = "PATH")]
    nvml_lib: Option<std::path::PathBuf>,
    /// Secret (a file of 16 bytes or more, e.g. a Kubernetes Secret) keying the ids llmprobe
    /// derives from traffic: `api_key_id` and conversation ids. The same file on every node
    /// gives the same ids everywhere and across restarts; without it a random key is drawn at
    /// start and ids hold only until the agent restarts.
    #[arg(
        help_heading = "Tokens, conversations and cost",
        long,
        value_name = "PATH"
    )]
    id_key_file: Option<std::path::PathBuf>,
    /// A conversation with no call for this many seconds has ended: its turns and tokens are
    /// observed, and it was abandoned if its last call aborted or failed.
    #[arg(help_heading = "Tokens, conversations and cost", long, default_value_t = 1800.0, value_name = "SECONDS", value_parser = parse_idle)]
    conversation_idle: f64,
    /// Price table (TOML, per million tokens: input, cached_input, output, reasoning, currency
    /// per model) extending the built-in dated one (`defaults = false` in the file replaces it).
    /// Records get `cost`; /metrics `llmprobe_cost_total`.
    #[arg(
        help_heading = "Tokens, conversations and cost",
        long,
        value_name = "FILE"
    )]
    prices: Option<std::path::PathBuf>,
    /// Local socket serving the live view's API (calls in flight, recent calls, per-model
    /// rollups) to `llmprobe top`; `none`: off. Its directory is created 0700 when missing; the
    /// socket is 0600.
    #[arg(
        help_heading = "Live view",
        long,
        default_value = llmprobe::live::serve::DEFAULT_SOCKET,
        value_name = "PATH|none"
    )]
    api_socket: String,
    /// Serve the trace page (recent calls, per-call timelines) and the live view's API over
    /// HTTP at this address, e.g. 127.0.0.1:9465, or a bare port (on 127.0.0.1). Off by
    /// default. No login: on loopback every local user can read it, on another address whoever
    /// reaches it (process names, models, timings; never prompt text).
    #[arg(help_heading = "Live view", long, value_name = "ADDR|PORT", value_parser = parse_ui_addr)]
    ui_addr: Option<SocketAddr>,
    #[command(flatten)]
    content: llmprobe::content::ContentArgs,
}

/// `--gpu`.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum GpuArg {
    /// Sample GPUs when NVML loads.
    Auto,
    /// Never load NVML.
    Off,
}

/// Token estimation when usage is absent.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum TokenEstimator {
    /// An offline BPE tokenizer (o200k_base) on the text seen; loaded on first use (~7 MiB).
    Tokenizer,
    /// Stream events, or characters / 4: no vocabulary in memory.
    Chars,
}

impl TokenEstimator {
    fn apply(self) {
        if self == TokenEstimator::Chars {
            llmprobe::llm::tokens::disable_tokenizer();
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Attach the probes and record LLM calls until SIGINT/SIGTERM (needs root).
    Run(AgentArgs),
    /// Like `run`, and also write the probe events of LLM connections to a capture file for
    /// `replay`. The capture holds prompts and completions (secrets masked): keep it private.
    Record {
        /// Capture file to create (mode 0600; an existing file or symlink is refused).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Stop writing the capture once it would exceed this many bytes.
        #[arg(long, value_name = "BYTES", default_value_t = llmprobe::probes::recorder::DEFAULT_MAX_BYTES)]
        max_bytes: u64,
        /// Keep every traced connection's bytes, not only LLM connections' (HTTP/2 never).
        #[arg(long)]
        all_traffic: bool,
        #[command(flatten)]
        agent: AgentArgs,
    },
    /// Run a capture through the pipeline offline (no root needed) and write its records.
    Replay {
        /// Capture file written by `llmprobe record`.
        file: PathBuf,
        /// Where records go (`-` for stdout).
        #[arg(long, default_value = "-", value_name = "PATH|-")]
        jsonl: String,
        /// How tokens are estimated when an API reports no usage (use the live run's setting).
        #[arg(long, value_enum, default_value = "tokenizer")]
        token_estimator: TokenEstimator,
        /// The live run's --id-key-file: conversation ids are then the live run's (without it,
        /// a fixed key gives ids of their own).
        #[arg(long, value_name = "PATH")]
        id_key_file: Option<PathBuf>,
        #[command(flatten)]
        content: llmprobe::content::ContentArgs,
    },
    /// A live view of a running agent in the terminal: calls in flight, per-model rollups.
    Top(llmprobe::top::TopArgs),
    /// Check what this node offers llmprobe (kernel, tracefs, uprobes, ring buffer, privileges,
    /// NVML) and which running processes' TLS it can probe, and why not for the others.
    #[command(after_help = llmprobe::doctor::EXIT_STATUS_HELP)]
    Doctor(llmprobe::doctor::DoctorArgs),
    /// A first run in a minute (needs root): a local test LLM server and a client making a few
    /// calls (streaming, non-streaming, one error), traced by the real agent, which prints their
    /// records and serves /metrics. Takes every `run` flag.
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), e.g.
    /// `llmprobe completions bash > /etc/bash_completion.d/llmprobe`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff, every subcommand and flag), e.g. `llmprobe man | man -l -`;
    /// with --out-dir write one page per subcommand there instead.
    Man {
        /// Write llmprobe.1 and llmprobe-SUBCOMMAND.1 to this directory.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// About configuration files (see --config).
    Config {
        /// Print a config file with every option commented out, with its default and help.
        #[arg(long)]
        print_default: bool,
    },
    /// The demo's LLM server (internal).
    #[command(hide = true)]
    DemoServer(demo::ServerArgs),
    /// The demo's client (internal).
    #[command(hide = true)]
    DemoClient(demo::ClientArgs),
}

/// The command line parser: the derived command with an environment variable for every flag.
fn cli_command() -> clap::Command {
    config::prepare(Cli::command())
}

/// The man page: the command's, then each visible subcommand's synopsis and options.
fn render_man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut cmd = cli_command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let name = format!("llmprobe {}", sub.get_name());
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(out, ".PP")?;
            for line in about.to_string().lines() {
                // roff: a backslash is \e; a line starting with . or ' would be a request.
                writeln!(out, "\\&{}", line.replace('\\', "\\e"))?;
            }
        }
        let sub = sub.clone().bin_name(name.clone()).name(name.clone());
        let page = clap_mangen::Man::new(sub);
        let mut text = Vec::new();
        page.render_synopsis_section(&mut text)?;
        page.render_options_section(&mut text)?;
        // The subcommand's sections are subsections of its own.
        let text = String::from_utf8_lossy(&text).replace(".SH ", ".SS ");
        out.write_all(text.as_bytes())?;
    }
    man.render_version_section(out)
}

/// A sampling interval: finite, 0.05 s to 1 h.
fn parse_ring_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => {
            return Err(format!(
                "{s}: use bytes, or a number with K, M or G (e.g. 64M)"
            ));
        }
    };
    let n: u64 = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s}: not a size (e.g. 64M)"))?;
    let (min, max) = (
        u64::from(llmprobe_common::RING_BYTES_MIN),
        u64::from(llmprobe_common::RING_BYTES_MAX),
    );
    if !n.is_power_of_two() || !(min..=max).contains(&n) {
        return Err(format!(
            "{s}: the ring buffer must be a power of two from 1M to 1G (the kernel requires a power-of-two number of pages)"
        ));
    }
    Ok(n as u32)
}

fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && (0.05..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s}: must be between 0.05 and 3600 seconds"))
    }
}

/// `--ui-addr`: an address, or a bare port on loopback.
fn parse_ui_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    t.parse::<u16>()
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .map_err(|_| format!("{s}: an address (127.0.0.1:9465, [::1]:9465) or a port"))
}

/// `--conversation-idle`: from 50 ms (tests) to a week.
fn parse_idle(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && (0.05..=604_800.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{s}: must be between 0.05 and 604800 seconds (a week)"
        ))
    }
}

/// `--scope`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScopeMode {
    All,
    Auto,
}

fn options(a: AgentArgs, record: Option<RecordOptions>) -> anyhow::Result<RunOptions> {
    let scope = llmprobe::probes::scope::ScopeSpec::new(llmprobe::probes::scope::ScopeArgs {
        pids: a.pids.clone(),
        comms: a.comms.clone(),
        exclude_comms: a.exclude_comms.clone(),
        cgroups: a.cgroups.clone(),
        container_ids: a.container_ids.clone(),
        auto: a.scope == ScopeMode::Auto,
        llm_hosts: a.llm_hosts.clone(),
    })?;
    a.token_estimator.apply();
    let id_key = match &a.id_key_file {
        Some(path) => llmprobe::ids::IdKey::from_file(path)?,
        None => {
            log::info!(
                "no --id-key-file: api_key_id and conversation ids are keyed by a random key \
                 and change when the agent restarts"
            );
            llmprobe::ids::IdKey::random()?
        }
    };
    anyhow::ensure!(
        llmprobe::ids::install(id_key),
        "the id key was in use before it was installed: ids would not be keyed by it"
    );
    if a.max_label_values.is_some() {
        log::warn!(
            "--max-label-values is no longer used: metric series are bounded by --max-series (default 10000)"
        );
    }
    llmprobe::protocol::encoding::set_memory_budget((a.memory_limit / 4) as u64);
    let prices = llmprobe::llm::pricing::PriceTable::load(a.prices.as_deref())?;
    log::info!("price table: {} models", prices.len());
    Ok(RunOptions {
        prices: std::sync::Arc::new(prices),
        api_socket: (a.api_socket != "none").then(|| PathBuf::from(&a.api_socket)),
        ui_addr: a.ui_addr,
        rescan_interval: std::time::Duration::from_secs(a.rescan_interval),
        content: a.content.build()?,
        queue_budget: a.memory_limit / 4,
        jsonl: (a.jsonl != "none").then(|| JsonlTarget::parse(&a.jsonl)),
        metrics_addr: a.metrics_addr,
        scope,
        ring_bytes: a.ring_buffer_size,
        record,
        gpu: if a.gpu == GpuArg::Off {
            llmprobe::gpu::GpuMode::Off
        } else {
            llmprobe::gpu::GpuMode::Auto
        },
        gpu_interval: std::time::Duration::from_secs_f64(a.gpu_interval),
        nvml_lib: a.nvml_lib.clone(),
        jsonl_max_bytes: a.jsonl_max_bytes,
        max_series: a.max_series,
        conversation_idle: std::time::Duration::from_secs_f64(a.conversation_idle),
        otlp: llmprobe::export::otlp::OtlpConfig::from_env_and_flags(
            a.otlp_endpoint.as_deref(),
            a.otlp_protocol.as_deref(),
        ),
        tracker: TrackerConfig {
            max_connections: a.max_connections,
            max_connections_per_process: a.max_connections_per_process,
            memory_budget: a.memory_limit / 2,
            mute_after_non_llm: a.mute_after_non_llm,
            ..TrackerConfig::default()
        },
    })
}

/// Blocks this large or larger are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD: usize = 256 << 10;

/// glibc raises its mmap threshold to the largest mapped block freed (up to 32 MiB), after which
/// large transient buffers (a response body held for parsing, up to 8 MiB a side, its parse)
/// come from the heap arenas and stay resident once freed: one 128 MiB response left the agent
/// 50 MiB larger for good. A fixed threshold (which also fixes the trim threshold) keeps them
/// mapped on their own and returned whole.
fn fix_malloc_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

fn main() {
    fix_malloc_threshold();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_micros()
        .init();
    let parsed = match config::parse(cli_command(), std::env::args_os().collect()) {
        Ok(p) => p,
        Err(config::Error::Clap(e)) => e.exit(),
        Err(config::Error::Config(msg)) => {
            eprintln!("error: {msg}");
            std::process::exit(2);
        }
    };
    let cli = match Cli::from_arg_matches(&parsed.matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if cli.print_config {
        // A closed pipe (`| head`) is no error here.
        let _ = writeln!(std::io::stdout(), "{:#}", config::to_json(&parsed));
        return;
    }
    let result = match cli.command {
        Command::Run(a) => options(a, None).and_then(run_agent),
        Command::Record {
            out,
            max_bytes,
            all_traffic,
            agent,
        } => options(
            agent,
            Some(RecordOptions {
                path: out,
                max_bytes,
                all_traffic,
            }),
        )
        .and_then(run_agent),
        Command::Replay {
            file,
            jsonl,
            token_estimator,
            id_key_file,
            content,
        } => {
            token_estimator.apply();
            let content = match content.build() {
                Ok(c) => c,
                Err(e) => {
                    log::error!("{e:#}");
                    std::process::exit(2);
                }
            };
            if let Some(path) = &id_key_file {
                match llmprobe::ids::IdKey::from_file(path) {
                    Ok(key) => {
                        llmprobe::ids::install(key);
                    }
                    Err(e) => {
                        log::error!("{e:#}");
                        std::process::exit(1);
                    }
                }
            }
            app::replay(&file, &JsonlTarget::parse(&jsonl), content).map(|n| {
                log::info!("replayed {}: {n} LLM call record(s)", file.display());
            })
        }
        Command::Top(a) => llmprobe::top::run(a),
        Command::Doctor(a) => std::process::exit(llmprobe::doctor::run(&a)),
        Command::Demo(d) => demo::run(d),
        Command::DemoServer(a) => demo::server(a),
        Command::DemoClient(a) => demo::client(a),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut cli_command(),
                "llmprobe",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { out_dir: None } => {
            render_man(&mut std::io::stdout().lock()).map_err(anyhow::Error::from)
        }
        Command::Man { out_dir: Some(dir) } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(cli_command(), &dir))
            .map_err(|e| anyhow::anyhow!("cannot write man pages to {}: {e}", dir.display())),
        Command::Config { print_default } => {
            if print_default {
                print!("{}", config::default_file(&Cli::command()));
            } else {
                println!(
                    "options come from the command line, LLMPROBE_* variables, --config FILE \
                     (or LLMPROBE_CONFIG) and the defaults, in that order; \
                     `llmprobe config --print-default` prints a file with every option, \
                     `llmprobe --print-config SUBCOMMAND ...` the options a run would use"
                );
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}

fn run_agent(opts: RunOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(app::run(opts))
}

#[cfg(test)]
mod tests {
    use super::{parse_ring_size, parse_ui_addr};

    #[test]
    fn a_bare_ui_port_is_on_loopback() {
        assert_eq!(
            parse_ui_addr("9465").map(|a| a.to_string()).as_deref(),
            Ok("127.0.0.1:9465")
        );
        assert_eq!(
            parse_ui_addr("[::1]:80").map(|a| a.to_string()).as_deref(),
            Ok("[::1]:80")
        );
        assert_eq!(
            parse_ui_addr("0.0.0.0:9465")
                .map(|a| a.to_string())
                .as_deref(),
            Ok("0.0.0.0:9465")
        );
        for bad in ["", "localhost:9465", "70000", "x"] {
            assert!(parse_ui_addr(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ring_sizes_are_powers_of_two_between_the_bounds() {
        assert_eq!(parse_ring_size("16M"), Ok(16 << 20));
        assert_eq!(parse_ring_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_ring_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_ring_size("1g"), Ok(1 << 30));
        assert_eq!(parse_ring_size("2048k"), Ok(2 << 20));
        for bad in [
            "",
            "M",
            "3M",
            "512K",
            "2G",
            "16X",
            "-1M",
            "99999999999999999999G",
        ] {
            assert!(parse_ring_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
