//! `cargo xtask`: set up the toolchain, build, run and test llmprobe.
//!
//! ```text
//! cargo xtask setup            install what the build needs (idempotent)
//! cargo xtask build            setup + release build (agent with embedded eBPF object)
//! cargo xtask run [-- ARGS]    setup + build + `llmprobe run ARGS` (needs root)
//! cargo xtask test [-- ARGS]   setup + build + test environment + every test (needs root)
//! cargo xtask gpu-check [-- ARGS]
//!                              setup + build + tests/assets/gpu_check.py on a node with an NVIDIA
//!                              GPU (needs root, python3 with PyTorch and CUDA)
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

const LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";

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
        "test" => setup().and_then(|_| build()).and_then(|_| test(&rest)),
        "gpu-check" => setup().and_then(|_| build()).and_then(|_| gpu_check(&rest)),
        _ => {
            eprintln!("usage: cargo xtask <setup|build|run|test|gpu-check> [-- ARGS]");
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
            if !have("apt-get") {
                bail!(
                    "LLVM {LLVM_MAJOR} is missing and apt-get is not available: install llvm-{LLVM_MAJOR}-dev yourself"
                );
            }
            run_cmd(
                Command::new("apt-get").args(["update", "-qq"]),
                "apt-get update",
            )?;
            run_cmd(
                Command::new("apt-get")
                    .args(["install", "-y", "-qq"])
                    .arg(format!("llvm-{LLVM_MAJOR}-dev"))
                    .arg(format!("libpolly-{LLVM_MAJOR}-dev"))
                    .args(["libzstd-dev", "zlib1g-dev"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                "apt-get install llvm-dev",
            )?;
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

/// The Python environment of the end-to-end tests: a venv with the real SDKs and servers from
/// PyPI, at the versions in `tests/assets/requirements.txt`.
fn test_venv() -> anyhow::Result<PathBuf> {
    let venv = root().join("target").join("e2e-venv");
    let python = venv.join("bin").join("python");
    let requirements = root().join("tests").join("assets").join("requirements.txt");
    let check = "import openai, anthropic, httpx, fastapi, uvicorn, zstandard, opentelemetry.proto; print(openai.__version__, anthropic.__version__)";
    if let Some(v) = output_ok(Command::new(&python).args(["-c", check])) {
        step(&format!(
            "test venv: openai and anthropic {} present",
            v.trim()
        ));
        return Ok(python);
    }
    if !python.exists() {
        step("creating the test venv");
        if !have("python3") {
            bail!("python3 is required by the end-to-end tests");
        }
        run_cmd(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
    }
    step("installing the test clients' SDKs from PyPI (tests/assets/requirements.txt)");
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
            .arg(&requirements),
        "pip install -r tests/assets/requirements.txt",
    )?;
    Ok(python)
}

fn test(args: &[String]) -> anyhow::Result<()> {
    let python = test_venv()?;
    for tool in ["curl", "node", "openssl"] {
        if !have(tool) {
            bail!("{tool} is required by the end-to-end tests and is not installed");
        }
    }
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
            .env("LLMPROBE_TEST_PYTHON", &python),
        "cargo test",
    )
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
