//! `cargo xtask bench`: every benchmark, old binary against new, in one run, written to
//! BENCHMARKS.md.
//!
//! ```text
//! cargo xtask bench [--baseline REV] [--quick] [--only NAME]... [--out FILE]
//! ```
//!
//! 1. Builds this tree's release agent, and the BASELINE's in a git worktree of its own
//!    (`target/bench-baseline/src`, built into `target/bench-baseline/target`, so neither build
//!    disturbs the other and both stay incremental). The baseline is `--baseline REV`, else
//!    `$LLMPROBE_BENCH_BASELINE`, else the merge-base of HEAD with `main` when HEAD is not on
//!    main (a branch against where it forked), else `HEAD~1`. Both binaries are copied to
//!    `target/bench/bin/{baseline,current}/llmprobe`.
//! 2. Runs each benchmark: every `tests/assets/bench_*.py` (their contract: `--agent BASELINE
//!    --agent CURRENT`, alternating the two inside the script, `--quick` for a short run, and one
//!    `BENCH_JSON {...}` line per agent naming it in `"agent"`), and
//!    `cargo bench -p llmprobe --bench pipeline` in each tree that has it (its `BENCH_JSON` line
//!    belongs to the tree it ran in). The overhead benchmark runs a second time with
//!    `--token-estimator chars`. Logs: `target/bench/logs/NAME.log`.
//! 3. Writes the figures (baseline, current, ratio current/baseline), the machine, the date and
//!    both commits above the notes marker of BENCHMARKS.md; the notes below it are kept.
//!
//! A benchmark that fails is reported as failed in the file and makes the command fail at the
//! end; the others still run. Every benchmark but `replay` and `pipeline` loads the eBPF
//! programs: without root they are refused up front with what to do. Not a test: CI runs only
//! the short replay benchmark (`cargo xtask test`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::{output_ok, path_env, root, run_cmd, step};

/// Where the generated part of BENCHMARKS.md ends: everything from this line on is kept.
const NOTES_MARKER: &str =
    "<!-- notes: kept as written by `cargo xtask bench`; the part above is generated -->";

/// Scripts in tests/assets that are not benchmarks.
const NOT_BENCHES: [&str; 1] = ["bench_common.py"];
/// Benchmarks that run without root (no eBPF).
const NO_ROOT: [&str; 2] = ["replay", "pipeline"];

/// Options of `cargo xtask bench`.
pub struct BenchArgs {
    baseline: Option<String>,
    quick: bool,
    only: Vec<String>,
    out: PathBuf,
}

impl BenchArgs {
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut a = BenchArgs {
            baseline: None,
            quick: false,
            only: Vec::new(),
            out: root().join("BENCHMARKS.md"),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--baseline" => {
                    a.baseline = Some(
                        it.next()
                            .context("--baseline needs a git revision")?
                            .clone(),
                    )
                }
                "--quick" => a.quick = true,
                "--only" => {
                    let v = it.next().context("--only needs a benchmark name")?;
                    a.only.extend(v.split(',').map(str::to_owned));
                }
                "--out" => a.out = PathBuf::from(it.next().context("--out needs a file")?),
                other => bail!(
                    "cargo xtask bench: unknown option {other} (use --baseline REV, --quick, --only NAME, --out FILE)"
                ),
            }
        }
        Ok(a)
    }
}

/// One benchmark to run.
struct Bench {
    name: String,
    /// Script path relative to the root, or None for the cargo bench.
    script: Option<String>,
    extra: Vec<String>,
}

/// Which binary a figure belongs to.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Baseline,
    Current,
}

/// What one benchmark gave.
struct Outcome {
    name: String,
    command: String,
    secs: f64,
    failure: Option<String>,
    /// (figure, baseline value, current value), in the order first seen.
    figures: Vec<(String, Option<f64>, Option<f64>)>,
}

impl Outcome {
    fn add(&mut self, side: Side, name: String, v: f64) {
        let i = match self.figures.iter().position(|(n, _, _)| *n == name) {
            Some(i) => i,
            None => {
                self.figures.push((name, None, None));
                self.figures.len() - 1
            }
        };
        match side {
            Side::Baseline => self.figures[i].1 = Some(v),
            Side::Current => self.figures[i].2 = Some(v),
        }
    }
}

fn benches() -> anyhow::Result<Vec<Bench>> {
    let dir = root().join("tests").join("assets");
    let mut scripts: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("bench_") && n.ends_with(".py"))
        .filter(|n| !NOT_BENCHES.contains(&n.as_str()))
        .collect();
    // replay first (the quickest, and no root), then the rest by name.
    scripts.sort_by_key(|n| (n != "bench_replay.py", n.clone()));
    let mut out = Vec::new();
    for s in scripts {
        let name = s
            .trim_start_matches("bench_")
            .trim_end_matches(".py")
            .to_owned();
        let script = Some(format!("tests/assets/{s}"));
        if name == "overhead" {
            out.push(Bench {
                name: "overhead-chars".into(),
                script: script.clone(),
                extra: vec![
                    "--agent-arg=--token-estimator".into(),
                    "--agent-arg=chars".into(),
                ],
            });
        }
        out.push(Bench {
            name,
            script,
            extra: Vec::new(),
        });
        if out.len() == 1 {
            out.push(Bench {
                name: "pipeline".into(),
                script: None,
                extra: Vec::new(),
            });
        }
    }
    Ok(out)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    output_ok(Command::new("git").current_dir(dir).args(args)).map(|s| s.trim().to_owned())
}

fn is_root() -> bool {
    output_ok(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// The baseline revision: `--baseline`, `$LLMPROBE_BENCH_BASELINE`, the merge-base with main
/// when HEAD is not on main, else HEAD~1.
fn baseline_rev(args: &BenchArgs) -> anyhow::Result<(String, String)> {
    let r = root();
    let (rev, why) = if let Some(b) = &args.baseline {
        (b.clone(), "--baseline")
    } else if let Ok(b) = std::env::var("LLMPROBE_BENCH_BASELINE") {
        (b, "$LLMPROBE_BENCH_BASELINE")
    } else {
        let head = git(&r, &["rev-parse", "HEAD"]).context("not a git checkout")?;
        match git(&r, &["merge-base", "HEAD", "main"]) {
            Some(mb) if mb != head => (mb, "merge-base with main"),
            _ => (
                "HEAD~1".to_owned(),
                "HEAD~1 (HEAD is on main: pass --baseline REV)",
            ),
        }
    };
    let sha = git(&r, &["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
        .with_context(|| format!("baseline {rev} ({why}) is not a commit of this repository"))?;
    Ok((sha, why.to_owned()))
}

/// Checks the baseline out in its worktree and builds its release agent.
fn build_baseline(sha: &str) -> anyhow::Result<PathBuf> {
    let r = root();
    let base = r.join("target").join("bench-baseline");
    let src = base.join("src");
    let target = base.join("target");
    if src.join(".git").exists() {
        run_cmd(
            Command::new("git")
                .current_dir(&src)
                .args(["checkout", "-q", "--force", "--detach", sha]),
            "git checkout of the baseline",
        )?;
    } else {
        if src.exists() {
            std::fs::remove_dir_all(&src)
                .with_context(|| format!("cannot remove {}", src.display()))?;
        }
        std::fs::create_dir_all(&base)?;
        let _ = git(&r, &["worktree", "prune"]);
        run_cmd(
            Command::new("git")
                .current_dir(&r)
                .args(["worktree", "add", "-q", "--force", "--detach"])
                .arg(&src)
                .arg(sha),
            "git worktree add (baseline)",
        )?;
    }
    step(&format!(
        "building the baseline {} in {} (first time: a full build, several minutes)",
        &sha[..sha.len().min(10)],
        src.display()
    ));
    run_cmd(
        Command::new("cargo")
            .current_dir(&src)
            .args(["build", "--release", "-p", "llmprobe"])
            .env("CARGO_TARGET_DIR", &target),
        "cargo build --release (baseline)",
    )?;
    Ok(target.join("release").join("llmprobe"))
}

fn install_bin(from: &Path, side: &str) -> anyhow::Result<PathBuf> {
    let dir = root().join("target").join("bench").join("bin").join(side);
    std::fs::create_dir_all(&dir)?;
    let to = dir.join("llmprobe");
    let _ = std::fs::remove_file(&to);
    std::fs::copy(from, &to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(to)
}

/// Runs `cmd`, echoing its output, and returns the `BENCH_JSON` objects of its stdout.
fn run_collect(
    cmd: &mut Command,
    log: &Path,
) -> anyhow::Result<(Vec<serde_json::Value>, Option<String>)> {
    let mut child = cmd
        .env("PATH", path_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("could not start the benchmark")?;
    let mut logf = std::fs::File::create(log)?;
    let mut found = Vec::new();
    let stdout = child.stdout.take().context("no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        writeln!(logf, "{line}")?;
        if let Some(j) = line.trim().strip_prefix("BENCH_JSON ") {
            match serde_json::from_str(j) {
                Ok(v) => found.push(v),
                Err(e) => step(&format!("unreadable BENCH_JSON line ({e}): {j}")),
            }
        }
    }
    let status = child.wait()?;
    let failure = (!status.success()).then(|| format!("exited with {status}"));
    Ok((found, failure))
}

/// Numbers of a BENCH_JSON object, nested objects flattened with dots.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if prefix.is_empty() && (k == "bench" || k == "agent") {
                    continue;
                }
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out);
            }
        }
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_owned(), x));
            }
        }
        _ => {}
    }
}

struct Bins {
    baseline: PathBuf,
    current: PathBuf,
    baseline_src: PathBuf,
}

fn run_bench(b: &Bench, bins: &Bins, python: &Path, quick: bool, logs: &Path) -> Outcome {
    let mut o = Outcome {
        name: b.name.clone(),
        command: String::new(),
        secs: 0.0,
        failure: None,
        figures: Vec::new(),
    };
    let t0 = Instant::now();
    // (side of an untagged line, command)
    let mut runs: Vec<(Side, Command, String)> = Vec::new();
    match &b.script {
        Some(script) => {
            let mut c = Command::new(python);
            c.current_dir(root())
                .arg(script)
                .arg("--agent")
                .arg(&bins.baseline)
                .arg("--agent")
                .arg(&bins.current)
                .args(&b.extra);
            if quick {
                c.arg("--quick");
            }
            let shown = format!(
                "{script} --agent BASELINE --agent CURRENT{}{}",
                b.extra.iter().map(|e| format!(" {e}")).collect::<String>(),
                if quick { " --quick" } else { "" }
            );
            runs.push((Side::Current, c, shown));
        }
        None => {
            let bench_args: &[&str] = if quick { &["--runs", "1"] } else { &[] };
            for (side, dir, target) in [
                (
                    Side::Baseline,
                    bins.baseline_src.clone(),
                    Some(bins.baseline_src.parent().map(|p| p.join("target"))),
                ),
                (Side::Current, root(), None),
            ] {
                if !dir
                    .join("llmprobe")
                    .join("benches")
                    .join("pipeline.rs")
                    .exists()
                {
                    step(&format!(
                        "pipeline: {} has no llmprobe/benches/pipeline.rs, skipped there",
                        dir.display()
                    ));
                    continue;
                }
                let mut c = Command::new("cargo");
                c.current_dir(&dir)
                    .args(["bench", "-p", "llmprobe", "--bench", "pipeline", "--"])
                    .args(bench_args);
                if let Some(Some(t)) = target {
                    c.env("CARGO_TARGET_DIR", t);
                }
                let shown = format!(
                    "cargo bench -p llmprobe --bench pipeline -- {}",
                    bench_args.join(" ")
                );
                runs.push((side, c, shown));
            }
        }
    }
    o.command = runs.first().map(|r| r.2.clone()).unwrap_or_default();
    for (i, (side, mut cmd, shown)) in runs.into_iter().enumerate() {
        step(&format!("bench {}: {shown}", b.name));
        let log = logs.join(format!("{}-{i}.log", b.name));
        match run_collect(&mut cmd, &log) {
            Ok((objs, failure)) => {
                if failure.is_some() {
                    o.failure = failure.map(|f| format!("{f} (log: {})", log.display()));
                }
                if objs.is_empty() && o.failure.is_none() {
                    o.failure = Some(format!(
                        "printed no BENCH_JSON line (log: {})",
                        log.display()
                    ));
                }
                for v in objs {
                    let side = match v.get("agent").and_then(|a| a.as_str()) {
                        Some(a) if Path::new(a) == bins.baseline => Side::Baseline,
                        Some(a) if Path::new(a) == bins.current => Side::Current,
                        Some(_) => continue,
                        None => side,
                    };
                    let mut figs = Vec::new();
                    flatten("", &v, &mut figs);
                    for (n, x) in figs {
                        o.add(side, n, x);
                    }
                }
            }
            Err(e) => o.failure = Some(format!("{e:#}")),
        }
    }
    o.secs = t0.elapsed().as_secs_f64();
    o
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = output_ok(Command::new("uname").arg("-r")).unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or("?".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    format!(
        "{model}, {cores} cores, kernel {}, {mem} memory",
        kernel.trim()
    )
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", a);
        let mut g = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                g.push(',');
            }
            g.push(ch);
        }
        format!("{}{g}", if x < 0.0 { "-" } else { "" })
    } else if a >= 100.0 || a == a.trunc() {
        format!("{x:.1}").trim_end_matches(".0").to_owned()
    } else if a >= 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

fn commit_line(dir: &Path, rev: &str) -> String {
    let short = git(dir, &["rev-parse", "--short=10", rev]).unwrap_or_else(|| rev.to_owned());
    let subject = git(dir, &["log", "-1", "--format=%s", rev]).unwrap_or_default();
    let date = git(dir, &["log", "-1", "--format=%cs", rev]).unwrap_or_default();
    let subject: String = subject.chars().take(90).collect();
    format!("`{short}` ({date}) {subject}")
}

fn render(
    outcomes: &[Outcome],
    args: &BenchArgs,
    base_sha: &str,
    base_why: &str,
    total_secs: f64,
    notes: &str,
) -> String {
    let r = root();
    let dirty =
        git(&r, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let date =
        output_ok(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `cargo xtask bench{}` on {} ({:.0} s). Every figure is measured for both \
         binaries in the same run, on the same machine, the two alternating inside each script; \
         ratio = current / baseline. What each benchmark does and how to read it: the notes below \
         the tables, and each script's docstring.\n",
        if args.quick { " --quick" } else { "" },
        date.trim(),
        total_secs
    );
    if args.quick {
        let _ = writeln!(
            s,
            "**Quick run** (short runs, few repetitions): the ratios are indicative only.\n"
        );
    }
    let _ = writeln!(s, "| | commit |\n|---|---|");
    let _ = writeln!(
        s,
        "| baseline ({base_why}) | {} |",
        commit_line(&r, base_sha)
    );
    let _ = writeln!(
        s,
        "| current | {}{} |",
        commit_line(&r, "HEAD"),
        if dirty { " + uncommitted changes" } else { "" }
    );
    let _ = writeln!(s, "\nMachine: {}.\n", machine());
    for o in outcomes {
        let _ = writeln!(s, "## {}\n", o.name);
        let _ = writeln!(s, "`{}` ({:.0} s)\n", o.command, o.secs);
        if let Some(f) = &o.failure {
            let _ = writeln!(s, "**Failed**: {f}\n");
        }
        if o.figures.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "| figure | baseline | current | ratio |\n|---|---|---|---|"
        );
        for (name, b, c) in &o.figures {
            let cell = |v: &Option<f64>| v.map_or("n/a".to_owned(), fmt_num);
            let ratio = match (b, c) {
                (Some(b), Some(c)) if *b != 0.0 => format!("{:.3}×", c / b),
                _ => "–".to_owned(),
            };
            let _ = writeln!(s, "| {name} | {} | {} | {ratio} |", cell(b), cell(c));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "{NOTES_MARKER}");
    s.push_str(notes);
    s
}

/// The part of the existing file kept: from the marker on (the whole file when it has none).
fn kept_notes(out: &Path) -> String {
    let old = std::fs::read_to_string(out).unwrap_or_default();
    match old.find(NOTES_MARKER) {
        Some(i) => old[i + NOTES_MARKER.len()..].to_owned(),
        None => format!("\n{old}"),
    }
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let all = benches()?;
    let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
    for n in &args.only {
        if !names.contains(&n.as_str()) {
            bail!(
                "unknown benchmark {n}: the benchmarks are {}",
                names.join(", ")
            );
        }
    }
    let selected: Vec<&Bench> = all
        .iter()
        .filter(|b| args.only.is_empty() || args.only.contains(&b.name))
        .collect();
    let live: Vec<&str> = selected
        .iter()
        .map(|b| b.name.as_str())
        .filter(|n| !NO_ROOT.contains(n))
        .collect();
    if !live.is_empty() && !is_root() {
        bail!(
            "the benchmarks {} load the eBPF programs and need root: run `sudo -E cargo xtask bench` \
             (or `sudo -E env PATH=$PATH cargo xtask bench`), or only those that do not: \
             --only {}",
            live.join(", "),
            NO_ROOT.join(" --only ")
        );
    }
    let (base_sha, base_why) = baseline_rev(args)?;
    crate::setup()?;
    crate::build()?;
    let current = install_bin(&crate::agent_binary(), "current")?;
    let baseline = install_bin(&build_baseline(&base_sha)?, "baseline")?;
    let python = crate::test_venv()?;
    let logs = root().join("target").join("bench").join("logs");
    std::fs::create_dir_all(&logs)?;
    let bins = Bins {
        baseline,
        current,
        baseline_src: root().join("target").join("bench-baseline").join("src"),
    };
    let mut outcomes = Vec::new();
    for b in selected {
        outcomes.push(run_bench(b, &bins, &python, args.quick, &logs));
    }
    let total = t0.elapsed().as_secs_f64();
    let text = render(
        &outcomes,
        args,
        &base_sha,
        &base_why,
        total,
        &kept_notes(&args.out),
    );
    std::fs::write(&args.out, text)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    step(&format!(
        "wrote {} ({:.0} s in all: {})",
        args.out.display(),
        total,
        outcomes
            .iter()
            .map(|o| format!("{} {:.0} s", o.name, o.secs))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .map(|o| o.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "benchmarks failed: {} (see BENCHMARKS.md and target/bench/logs)",
            failed.join(", ")
        );
    }
    Ok(())
}
