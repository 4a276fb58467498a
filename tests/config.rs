//! Configuration of the real binary (no root needed): where options come from (`--config FILE`,
//! `LLMPROBE_*`, the command line; read back with `--print-config`), the errors a bad file
//! gets, the example config against the flags, and the generated shell completion (run in
//! bash) and man page (rendered by groff).

use std::path::Path;
use std::process::{Command, Output};

use llmprobe_tests::*;
use serde_json::Value;

fn llmprobe(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(agent_bin());
    c.args(args);
    // Only the variables a test sets: none inherited from the person running the tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("LLMPROBE_") {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run llmprobe")
}

fn effective(args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = llmprobe(args, env);
    assert!(
        out.status.success(),
        "llmprobe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--print-config prints JSON")
}

fn option<'a>(v: &'a Value, name: &str) -> (&'a Value, &'a str) {
    let o = &v["options"][name];
    (&o["value"], o["source"].as_str().unwrap_or("?"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p.display().to_string()
}

#[test]
fn file_then_environment_then_command_line() {
    let dir = scratch("config-precedence");
    let file = write(
        &dir,
        "a.toml",
        "metrics-addr = \"127.0.0.1:1001\"\npid = [11, 12]\nmax_series = 77\n[run]\nscope = \"auto\"\n",
    );
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["--print-config", "--config", &file, "run"];
        args.extend_from_slice(extra);
        effective(&args, env)
    };
    // The file over the defaults (both spellings of a key; a subcommand's table).
    let v = run(&[], &[]);
    assert_eq!(
        option(&v, "metrics-addr"),
        (&Value::from("127.0.0.1:1001"), "config-file")
    );
    assert_eq!(
        option(&v, "pid"),
        (&serde_json::json!(["11", "12"]), "config-file")
    );
    assert_eq!(
        option(&v, "max-series"),
        (&Value::from("77"), "config-file")
    );
    assert_eq!(option(&v, "scope"), (&Value::from("auto"), "config-file"));
    assert_eq!(option(&v, "jsonl"), (&Value::from("-"), "default"));
    assert_eq!(v["config_file"], Value::from(file.clone()));
    // The environment over the file.
    let env = [
        ("LLMPROBE_METRICS_ADDR", "127.0.0.1:2002"),
        ("LLMPROBE_PID", "21,22,23"),
    ];
    let v = run(&[], &env);
    assert_eq!(
        option(&v, "metrics-addr"),
        (&Value::from("127.0.0.1:2002"), "environment")
    );
    assert_eq!(
        option(&v, "pid"),
        (&serde_json::json!(["21", "22", "23"]), "environment")
    );
    assert_eq!(
        option(&v, "max-series"),
        (&Value::from("77"), "config-file")
    );
    // The command line over both; a repeatable flag's values are replaced, not merged.
    let v = run(&["--metrics-addr", "127.0.0.1:3003", "--pid", "31"], &env);
    assert_eq!(
        option(&v, "metrics-addr"),
        (&Value::from("127.0.0.1:3003"), "command-line")
    );
    assert_eq!(
        option(&v, "pid"),
        (&serde_json::json!(["31"]), "command-line")
    );
    // LLMPROBE_CONFIG names the file too.
    let v = effective(&["--print-config", "run"], &[("LLMPROBE_CONFIG", &file)]);
    assert_eq!(
        option(&v, "metrics-addr"),
        (&Value::from("127.0.0.1:1001"), "config-file")
    );
    // Without a file: the built-in defaults.
    let v = effective(&["--print-config", "run"], &[]);
    assert_eq!(
        option(&v, "metrics-addr"),
        (&Value::from("127.0.0.1:9464"), "default")
    );
    assert_eq!(v["config_file"], Value::Null);
}

#[test]
fn bad_files_and_values_are_errors_naming_file_key_and_expectation() {
    let dir = scratch("config-errors");
    let cases: &[(&str, &[&str])] = &[
        (
            "metrics-adr = \"127.0.0.1:1\"\n",
            &["unknown key `metrics-adr`", "long name of a flag"],
        ),
        (
            "max-series = \"many\"\n",
            &["`max-series`", "invalid value 'many'", "<N>"],
        ),
        (
            "metrics-addr = [\"127.0.0.1:1\"]\n",
            &["`metrics-addr`", "expected <ADDR>", "found array"],
        ),
        ("pid = 5\n", &["`pid`", "expected an array", "pid = [...]"]),
        ("scope = \"some\"\n", &["`scope`", "one of all, auto"]),
        (
            "[rnu]\njsonl = \"-\"\n",
            &["unknown section [rnu]", "run, record"],
        ),
        (
            "jsonl = \"-\"\n[run]\nout = \"x\"\n",
            &["unknown key `out` in [run]"],
        ),
        (
            "metrics-addr = \"127.0.0.1:1\"\nmetrics_addr = \"127.0.0.1:2\"\n",
            &["same option"],
        ),
        (
            "config = \"other.toml\"\n",
            &[
                "unknown key `config`",
                "not an option a config file can set",
            ],
        ),
        ("pid = [\n", &["not valid TOML"]),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let file = write(&dir, &format!("bad{i}.toml"), text);
        let out = llmprobe(&["--config", &file, "--print-config", "run"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?} accepted: {err}");
        assert!(
            err.contains(&file),
            "{text:?}: the error does not name the file: {err}"
        );
        for n in *needles {
            assert!(err.contains(n), "{text:?}: the error lacks {n:?}: {err}");
        }
        assert!(out.stdout.is_empty(), "{text:?}: printed options anyway");
    }
    let missing = dir.join("missing.toml").display().to_string();
    let out = llmprobe(&["--config", &missing, "run"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("cannot read the config file") && err.contains(&missing),
        "{err}"
    );
    let out = llmprobe(&["--print-config", "run"], &[("LLMPROBE_PID", "12,x")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("LLMPROBE_PID") && err.contains("'x'"), "{err}");
}

/// The committed example is what `config --print-default` prints, every option of `run` is in
/// it, and with every line uncommented it loads and gives each option its default.
#[test]
fn example_config_matches_the_flags() {
    let example = repo_root()
        .join("llmprobe")
        .join("examples")
        .join("llmprobe.toml");
    let text = std::fs::read_to_string(&example).expect("read the example config");
    let out = llmprobe(&["config", "--print-default"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        text,
        "llmprobe/examples/llmprobe.toml is stale: regenerate it with \
         `llmprobe config --print-default > llmprobe/examples/llmprobe.toml`"
    );
    // The top level, uncommented (keys with a default; sections stay commented out).
    let mut top = String::new();
    for line in text.lines() {
        if line.starts_with("# [") {
            break;
        }
        if let Some(kv) = line.strip_prefix("# ")
            && let Some((k, v)) = kv.split_once(" = ")
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !v.starts_with(' ')
        {
            top.push_str(&format!("{k} = {v}\n"));
        }
    }
    let dir = scratch("config-example");
    let file = write(&dir, "example.toml", &top);
    let defaults = effective(&["--print-config", "run"], &[]);
    let loaded = effective(&["--print-config", "--config", &file, "run"], &[]);
    let opts = defaults["options"].as_object().expect("options");
    assert!(opts.len() >= 20, "too few options: {opts:?}");
    for (name, d) in opts {
        assert!(
            text.contains(&format!("# {name} =")),
            "--{name} is missing from the example config"
        );
        let l = &loaded["options"][name];
        assert_eq!(
            l["value"], d["value"],
            "--{name}: the example's value is not the default"
        );
        if d["value"] != Value::Null && d["value"] != serde_json::json!([]) {
            assert_eq!(
                l["source"], "config-file",
                "--{name} was not read from the example"
            );
        }
    }
}

#[test]
fn help_is_grouped_by_topic() {
    let secret = "https://user:hunter2@collector:4318";
    let out = llmprobe(&["run", "--help"], &[("LLMPROBE_OTLP_ENDPOINT", secret)]);
    let help = String::from_utf8_lossy(&out.stdout);
    for heading in [
        "Output:",
        "Scope:",
        "Limits and memory:",
        "Exporters (OTLP):",
        "GPU:",
        "Tokens, conversations and cost:",
        "Configuration:",
    ] {
        assert!(
            help.contains(&format!("\n{heading}\n")),
            "no {heading} in:\n{help}"
        );
    }
    assert!(help.contains("[env: LLMPROBE_METRICS_ADDR]"), "{help}");
    assert!(
        help.contains("[env: LLMPROBE_PID, values separated by ',']") && !help.contains("hunter2"),
        "{help}"
    );
}

/// The bash completion script loads, registers `llmprobe`, and completes subcommands and flags.
#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let dir = scratch("config-completion");
    let out = llmprobe(&["completions", "bash"], &[]);
    assert!(out.status.success());
    let script = dir.join("llmprobe.bash");
    std::fs::write(&script, &out.stdout).expect("write script");
    let complete = |words: &str| -> Vec<String> {
        let n = words.split(' ').count() - 1;
        let prog = format!(
            "source {}; complete -p llmprobe >&2 || exit 9; \
             COMP_WORDS=({words}); COMP_CWORD={n}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             f=$(complete -p llmprobe | sed -E 's/.*-F ([^ ]+).*/\\1/'); \
             \"$f\" llmprobe \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let o = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &prog])
            .output()
            .expect("run bash");
        assert!(
            o.status.success(),
            "bash: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let r = complete("llmprobe r");
    for want in ["run", "record", "replay"] {
        assert!(r.contains(&want.to_owned()), "`llmprobe r<TAB>` gave {r:?}");
    }
    assert!(
        !r.iter().any(|w| w.starts_with("demo-")),
        "hidden subcommands offered: {r:?}"
    );
    let r = complete("llmprobe run --metrics");
    assert_eq!(r, vec!["--metrics-addr".to_owned()], "`run --metrics<TAB>`");
    let r = complete("llmprobe run --scope ");
    assert_eq!(
        r,
        vec!["all".to_owned(), "auto".to_owned()],
        "`run --scope <TAB>`"
    );
}

/// The man page renders without warnings and names every flag of every visible subcommand.
#[test]
fn man_page_renders_and_names_every_flag() {
    let dir = scratch("config-man");
    let out = llmprobe(&["man"], &[]);
    assert!(out.status.success());
    let page = dir.join("llmprobe.1");
    std::fs::write(&page, &out.stdout).expect("write page");
    let o = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .expect("groff is installed by `cargo xtask test` (groff-base)");
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "groff: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("groff")
        .args(["-man", "-Tutf8"])
        .arg(&page)
        .output()
        .expect("groff");
    let text = String::from_utf8_lossy(&o.stdout);
    let raw = String::from_utf8_lossy(&out.stdout);
    let subcommands: [&[&str]; 4] = [
        &["run"],
        &["record", "--out", "x"],
        &["replay", "x"],
        &["demo"],
    ];
    for args in subcommands {
        let sub = args[0];
        let v = effective(&[&["--print-config"], args].concat(), &[]);
        for name in v["options"].as_object().expect("options").keys() {
            // The roff source escapes '-' as '\-'.
            assert!(
                raw.contains(&format!("\\-\\-{}", name.replace('-', "\\-"))),
                "the man page lacks --{name} of `{sub}`"
            );
        }
        assert!(
            raw.contains(&format!("LLMPROBE {}", sub.to_uppercase())),
            "no section for {sub}"
        );
    }
    for global in ["config", "print\\-config"] {
        assert!(
            raw.contains(&format!("\\-\\-{global}")),
            "the man page lacks --{global}"
        );
    }
    assert!(
        text.len() > 10_000,
        "the rendered page is short: {} bytes",
        text.len()
    );
}
