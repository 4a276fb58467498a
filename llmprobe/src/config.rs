//! Where the options of a run come from: the command line, `LLMPROBE_*` environment variables, a
//! TOML file (`--config FILE` or `LLMPROBE_CONFIG`) and the built-in defaults, in that order of
//! precedence, for every flag of every subcommand without per-flag code.
//!
//! Stage: before everything (argument parsing). The clap command is decorated once
//! ([`prepare`]): every long flag gets its environment variable (`--metrics-addr` →
//! `LLMPROBE_METRICS_ADDR`). The command line is then parsed leniently (nothing required) to learn
//! the subcommand and the config file; the file's values and the repeatable flags' environment
//! values become the subcommand's defaults, and the command line is parsed again for real. So
//! clap's own order (command line > environment > default) is the precedence, and a flag added
//! later is configurable the moment it exists.
//!
//! Invariants:
//! - A file key is a flag's long name, `metrics-addr` (`metrics_addr` is accepted too; both
//!   spellings of one key are an error). Keys at the top level apply to the subcommand being run
//!   when it has that flag; a table named after a subcommand (`[record]`) holds keys for it alone
//!   and wins over the top level. A key that is no flag of any subcommand, a value of the wrong
//!   type, a value the flag refuses and a file that cannot be read are errors naming the file,
//!   the key and what is expected. Nothing is skipped silently.
//! - Repeatable flags are TOML arrays in the file, and in the environment values separated by
//!   [`ENV_SEPARATOR`] (`LLMPROBE_PID=12,34`); on the command line they stay one value per flag.
//! - A value comes from exactly one place: a flag given on the command line replaces the
//!   environment's and the file's values, even for repeatable flags (no merging).
//! - The file names files (`id-key-file`, `prices`), never secrets themselves: no flag takes a
//!   secret, and `--print-config` redacts credentials found in URLs.
//! - Hidden subcommands (internal helpers of `demo`) and the tools ([`TOOLS`]: completions, man
//!   page, config) read neither the file nor the environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Prefix of the environment variable of every flag.
pub const ENV_PREFIX: &str = "LLMPROBE_";
/// Separates the values of a repeatable flag in its environment variable.
pub const ENV_SEPARATOR: char = ',';
/// The flag naming the config file (its variable is `LLMPROBE_CONFIG`).
pub const CONFIG_FLAG: &str = "config";
/// Flags that are about this invocation, not options of a run: neither the file nor the
/// environment sets them.
const NOT_OPTIONS: &[&str] = &["help", "version", CONFIG_FLAG, "print-config"];
/// Subcommands that print something about llmprobe itself: their flags are no options of a run.
const TOOLS: &[&str] = &["completions", "man", "config", "help", "doctor", "top"];

/// Whether the file and the environment apply to a subcommand: not hidden, not a tool.
fn configured(c: &Command) -> bool {
    !c.is_hide_set() && !TOOLS.contains(&c.get_name())
}

/// Where an option's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A flag on the command line.
    CommandLine,
    /// Its `LLMPROBE_*` variable.
    Environment,
    /// The config file.
    File,
    /// The built-in default.
    Default,
}

impl Origin {
    /// The name `--print-config` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::CommandLine => "command-line",
            Origin::Environment => "environment",
            Origin::File => "config-file",
            Origin::Default => "default",
        }
    }
}

/// The result of parsing: the matches, and where each option of the subcommand came from.
pub struct Parsed {
    /// The final matches (for `FromArgMatches`).
    pub matches: ArgMatches,
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// The subcommand run (its path, e.g. `["run"]`).
    pub subcommand: Vec<String>,
    /// Every option of the subcommand: its long name, values and origin (sorted by name).
    pub options: Vec<OptionValue>,
}

/// One effective option.
pub struct OptionValue {
    /// The flag's long name.
    pub name: String,
    /// Its values (several for a repeatable flag); empty when unset.
    pub values: Vec<String>,
    /// Whether the flag is repeatable.
    pub repeatable: bool,
    /// Where the values came from.
    pub origin: Origin,
}

/// The environment variable of a flag: `LLMPROBE_` and the long name in upper snake case.
pub fn env_name(long: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        long.to_ascii_uppercase().replace('-', "_")
    )
}

/// Whether a flag is an option the file and the environment may set.
fn is_option(a: &Arg) -> bool {
    a.get_long().is_some_and(|l| !NOT_OPTIONS.contains(&l))
        && !matches!(
            a.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

fn is_repeatable(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Append)
}

/// Gives every option of every visible subcommand its environment variable. Scalar flags get
/// clap's own (`[env: LLMPROBE_X=]` in `--help`); repeatable ones are read by [`parse`] (split on
/// [`ENV_SEPARATOR`]), and their help says so.
pub fn prepare(cmd: Command) -> Command {
    fn decorate(cmd: Command) -> Command {
        if !configured(&cmd) {
            return cmd;
        }
        cmd.mut_args(|a| {
            if !is_option(&a) || a.get_env().is_some() {
                return a;
            }
            let var = env_name(a.get_long().unwrap_or_default());
            if is_repeatable(&a) {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                a.help(format!(
                    "{help} [env: {var}, values separated by '{ENV_SEPARATOR}']"
                ))
            } else {
                // --help shows the variable, never its value (a URL may hold credentials).
                a.env(var).hide_env_values(true)
            }
        })
        .mut_subcommands(decorate)
    }
    decorate(cmd)
}

/// The same command with nothing required, to learn the subcommand and the config file before
/// the file can supply required values.
fn lenient(cmd: Command) -> Command {
    cmd.mut_args(|a| a.required(false)).mut_subcommands(lenient)
}

/// Parses `argv` against `cmd` (already [`prepare`]d), with the config file and the
/// environment. A clap error (including `--help`) is returned as such, for `Error::exit`.
pub fn parse(cmd: Command, argv: Vec<OsString>) -> Result<Parsed, Error> {
    parse_with_env(cmd, argv, &|k| std::env::var_os(k))
}

/// A parse failure.
#[derive(Debug)]
pub enum Error {
    /// The command line (clap's message, or `--help`/`--version`).
    Clap(clap::Error),
    /// The config file or an environment variable.
    Config(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Clap(e) => write!(f, "{}", e.render()),
            Error::Config(s) => f.write_str(s),
        }
    }
}

/// [`parse`] with the environment given (tests).
pub fn parse_with_env(
    cmd: Command,
    argv: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Parsed, Error> {
    let first = match lenient(cmd.clone()).try_get_matches_from(argv.clone()) {
        Ok(m) => m,
        // The strict command gives the right message (and help shows what is required).
        Err(_) => {
            return Err(Error::Clap(
                cmd.try_get_matches_from(argv)
                    .err()
                    .unwrap_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidValue)),
            ));
        }
    };
    let file = first
        .get_raw(CONFIG_FLAG)
        .and_then(|mut v| v.next())
        .map(PathBuf::from);
    // The subcommand's path and its matches.
    let mut path = Vec::new();
    let mut m = &first;
    let mut leaf = &cmd;
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_owned());
        m = sub;
        match leaf.find_subcommand(name) {
            Some(c) => leaf = c,
            None => break,
        }
    }
    let leaf = leaf.clone();
    let table = match &file {
        Some(f) if configured(&leaf) => Some(read_file(f, &cmd)?),
        _ => None,
    };

    // The values each option gets in place of its built-in default, and from where.
    let mut layered: BTreeMap<String, (Vec<String>, Origin)> = BTreeMap::new();
    if configured(&leaf) {
        if let Some(t) = &table {
            let file = file.as_deref().unwrap_or(Path::new(""));
            for (long, value) in leaf_values(t, &path) {
                let Some(arg) = leaf.get_arguments().find(|a| a.get_long() == Some(&long)) else {
                    continue;
                };
                let values = file_values(file, &long, value, arg)?;
                layered.insert(arg.get_id().to_string(), (values, Origin::File));
            }
        }
        for arg in leaf
            .get_arguments()
            .filter(|a| is_option(a) && is_repeatable(a))
        {
            let long = arg.get_long().unwrap_or_default();
            let var = env_name(long);
            if let Some(v) = env(&var) {
                let v = v.into_string().map_err(|_| {
                    Error::Config(format!(
                        "{var}: not UTF-8 (expected --{long} values separated by '{ENV_SEPARATOR}')"
                    ))
                })?;
                let values: Vec<String> = v
                    .split(ENV_SEPARATOR)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                for value in &values {
                    check_value(arg, value).map_err(|e| {
                        Error::Config(format!(
                            "{var}: {e} (values separated by '{ENV_SEPARATOR}')"
                        ))
                    })?;
                }
                layered.insert(arg.get_id().to_string(), (values, Origin::Environment));
            }
        }
    }

    // The real parse, with those values as the subcommand's defaults.
    let strict = if path.is_empty() {
        with_defaults(cmd, &layered)
    } else {
        with_defaults_at(cmd, &path, &layered)
    };
    let matches = strict.try_get_matches_from(argv).map_err(Error::Clap)?;
    let mut m = &matches;
    for name in &path {
        match m.subcommand_matches(name) {
            Some(s) => m = s,
            None => break,
        }
    }
    let mut options: Vec<OptionValue> = leaf
        .get_arguments()
        .filter(|a| is_option(a) && !a.is_hide_set())
        .map(|a| {
            let id = a.get_id().as_str();
            let values: Vec<String> = m
                .get_raw(id)
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let origin = match m.value_source(id) {
                Some(ValueSource::CommandLine) => Origin::CommandLine,
                Some(ValueSource::EnvVariable) => Origin::Environment,
                _ => layered.get(id).map_or(Origin::Default, |(_, o)| *o),
            };
            OptionValue {
                name: a.get_long().unwrap_or_default().to_owned(),
                values,
                repeatable: is_repeatable(a),
                origin,
            }
        })
        .collect();
    options.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Parsed {
        matches,
        file,
        subcommand: path,
        options,
    })
}

fn with_defaults_at(
    cmd: Command,
    path: &[String],
    layered: &BTreeMap<String, (Vec<String>, Origin)>,
) -> Command {
    match path.split_first() {
        None => with_defaults(cmd, layered),
        Some((name, rest)) => cmd.mut_subcommand(name, |c| with_defaults_at(c, rest, layered)),
    }
}

fn with_defaults(cmd: Command, layered: &BTreeMap<String, (Vec<String>, Origin)>) -> Command {
    cmd.mut_args(|a| match layered.get(a.get_id().as_str()) {
        // An empty array: the flag's own default stands.
        Some((values, _)) if values.is_empty() => a,
        Some((values, _)) => a.required(false).default_values(values.clone()),
        None => a,
    })
}

/// Reads and checks the whole file: every key must be an option of some subcommand (or, in a
/// subcommand's table, of that subcommand).
fn read_file(path: &Path, cmd: &Command) -> Result<toml::Table, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the config file {} ({e}): check --config / LLMPROBE_CONFIG",
            path.display()
        ))
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::Config(format!(
            "config file {}: not valid TOML: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    let subcommands: Vec<&Command> = cmd.get_subcommands().filter(|c| configured(c)).collect();
    let known = |c: &Command, long: &str| {
        c.get_arguments()
            .any(|a| is_option(a) && a.get_long() == Some(long))
    };
    let check_keys = |t: &toml::Table, scope: &[&Command], section: Option<&str>| {
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for key in t.keys() {
            let long = key.replace('_', "-");
            if let Some(other) = seen.insert(long.clone(), key) {
                return Err(Error::Config(format!(
                    "config file {}: `{other}` and `{key}` are the same option: keep one",
                    path.display()
                )));
            }
            if section.is_none() && t[key].is_table() {
                continue;
            }
            if !scope.iter().any(|c| known(c, &long)) {
                let where_ = section.map_or(String::new(), |s| format!(" in [{s}]"));
                let hint = if NOT_OPTIONS.contains(&long.as_str()) {
                    format!("--{long} is not an option a config file can set")
                } else {
                    format!(
                        "expected the long name of a flag{}, e.g. `metrics-addr` (see `llmprobe config --print-default`)",
                        section.map_or(String::new(), |s| format!(" of `llmprobe {s}`"))
                    )
                };
                return Err(Error::Config(format!(
                    "config file {}: unknown key `{key}`{where_}: {hint}",
                    path.display()
                )));
            }
        }
        Ok(())
    };
    check_keys(&table, &subcommands, None)?;
    for (key, value) in &table {
        if let toml::Value::Table(t) = value {
            match subcommands.iter().find(|c| c.get_name() == key) {
                Some(c) => check_keys(t, &[c], Some(key))?,
                None => {
                    return Err(Error::Config(format!(
                        "config file {}: unknown section [{key}]: expected a subcommand ({})",
                        path.display(),
                        subcommands
                            .iter()
                            .map(|c| c.get_name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
    }
    Ok(table)
}

/// The file's keys for the subcommand at `path`: the top level, then its table (which wins).
fn leaf_values(table: &toml::Table, path: &[String]) -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    for (k, v) in table {
        if !v.is_table() {
            out.insert(k.replace('_', "-"), v.clone());
        }
    }
    if let Some(toml::Value::Table(t)) = path.first().and_then(|s| table.get(s)) {
        for (k, v) in t {
            out.insert(k.replace('_', "-"), v.clone());
        }
    }
    out
}

/// A file value as the flag's string values, checked by the flag's own parser.
fn file_values(
    file: &Path,
    long: &str,
    value: toml::Value,
    arg: &Arg,
) -> Result<Vec<String>, Error> {
    let err =
        |what: String| Error::Config(format!("config file {}: `{long}`: {what}", file.display()));
    let scalar = |v: &toml::Value| -> Option<String> {
        match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
    };
    let expected = describe(arg);
    let values = match (&value, is_repeatable(arg)) {
        (toml::Value::Array(items), true) => items
            .iter()
            .map(|v| {
                scalar(v).ok_or_else(|| {
                    err(format!(
                        "expected an array of {expected}, found an element of type {}",
                        v.type_str()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        (_, true) => {
            return Err(err(format!(
                "expected an array of {expected} (a repeatable flag: `{long} = [...]`), found {}",
                value.type_str()
            )));
        }
        (toml::Value::Boolean(b), false) if matches!(arg.get_action(), ArgAction::SetTrue) => {
            vec![b.to_string()]
        }
        (_, false) if matches!(arg.get_action(), ArgAction::SetTrue) => {
            return Err(err(format!(
                "expected true or false, found {}",
                value.type_str()
            )));
        }
        (v, false) => vec![
            scalar(v).ok_or_else(|| err(format!("expected {expected}, found {}", v.type_str())))?,
        ],
    };
    for v in &values {
        check_value(arg, v).map_err(err)?;
    }
    Ok(values)
}

/// What a flag takes, for messages: its value name or possible values.
fn describe(arg: &Arg) -> String {
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|p| !p.is_hide_set())
        .map(|p| p.get_name().to_owned())
        .collect();
    if !possible.is_empty() {
        return format!("one of {}", possible.join(", "));
    }
    match arg.get_value_names() {
        Some(names) if !names.is_empty() => format!("<{}>", names[0]),
        _ => format!("a --{} value", arg.get_long().unwrap_or_default()),
    }
}

/// Runs the flag's own parser on one value (as `--long=value` would).
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("expected true or false, found {value:?}")),
        };
    }
    let long = arg.get_long().unwrap_or_default();
    let probe = arg.clone().env(None).required(false).action(ArgAction::Set);
    Command::new("llmprobe")
        .arg(probe)
        .try_get_matches_from(["llmprobe".to_owned(), format!("--{long}={value}")])
        .map(|_| ())
        .map_err(|e| {
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or_default();
            format!(
                "{} (expected {})",
                line.trim_start_matches("error: "),
                describe(arg)
            )
        })
}

/// The effective options as JSON (`--print-config`): credentials in URLs are redacted.
pub fn to_json(p: &Parsed) -> serde_json::Value {
    let options: serde_json::Map<String, serde_json::Value> = p
        .options
        .iter()
        .map(|o| {
            let show = |s: &String| serde_json::Value::String(redact(s));
            let value = if o.repeatable {
                serde_json::Value::Array(o.values.iter().map(show).collect())
            } else {
                o.values.first().map_or(serde_json::Value::Null, show)
            };
            (
                o.name.clone(),
                serde_json::json!({ "value": value, "source": o.origin.as_str() }),
            )
        })
        .collect();
    serde_json::json!({
        "command": p.subcommand.join(" "),
        "config_file": p.file.as_ref().map(|f| f.display().to_string()),
        "options": options,
    })
}

fn redact(s: &str) -> String {
    if s.contains("://") {
        llmprobe::secrets::redact_url(s)
    } else {
        s.to_owned()
    }
}

/// A config file with every option of every visible subcommand, each commented out with its
/// default and its help (`llmprobe config --print-default`). Options of the first subcommand
/// that has them are at the top level; the others' own options in their `[subcommand]` table.
pub fn default_file(cmd: &Command) -> String {
    let mut out = String::from(
        "# llmprobe configuration (TOML). Load it with `llmprobe --config FILE run` or\n\
         # LLMPROBE_CONFIG=FILE. Every key is a flag's long name; the command line and the\n\
         # LLMPROBE_* variables win over this file. Repeatable flags take arrays.\n\
         # Keys at the top level apply to every subcommand that has the flag; a [subcommand]\n\
         # table applies to that subcommand alone and wins over the top level.\n\
         # Generated by `llmprobe config --print-default`.\n",
    );
    let mut done: Vec<String> = Vec::new();
    for sub in cmd.get_subcommands().filter(|c| configured(c)) {
        let args: Vec<&Arg> = sub
            .get_arguments()
            .filter(|a| is_option(a) && !a.is_hide_set() && !a.is_global_set())
            .collect();
        if args.is_empty() {
            continue;
        }
        let top = done.is_empty();
        let fresh: Vec<&Arg> = args
            .into_iter()
            .filter(|a| top || !done.iter().any(|d| Some(d.as_str()) == a.get_long()))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        if !top {
            out.push_str(&format!("\n# [{}]\n", sub.get_name()));
        }
        let mut heading: Option<&str> = None;
        for a in fresh {
            let long = a.get_long().unwrap_or_default();
            if top && a.get_help_heading() != heading {
                heading = a.get_help_heading();
                if let Some(h) = heading {
                    out.push_str(&format!("\n## {h}\n"));
                }
            }
            out.push('\n');
            let help = a
                .get_long_help()
                .or(a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            for line in help.lines() {
                let line = line.trim_end();
                if line.is_empty() {
                    out.push_str("#\n");
                }
                for wrapped in wrap(line, 96) {
                    out.push_str(&format!("# {wrapped}\n"));
                }
            }
            match toml_default(a) {
                Some(v) => out.push_str(&format!("# {long} = {v}\n")),
                None => out.push_str(&format!(
                    "# {long} =  (unset by default; {})\n",
                    describe(a)
                )),
            }
            if top {
                done.push(long.to_owned());
            }
        }
    }
    out
}

/// A flag's default as a TOML value; `None` when it has none (unset unless given).
fn toml_default(a: &Arg) -> Option<String> {
    // A JSON string is a valid TOML basic string.
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let one = |s: &str| -> String {
        if s.parse::<i64>().is_ok()
            || s.parse::<f64>().is_ok_and(f64::is_finite)
            || s == "true"
            || s == "false"
        {
            s.to_owned()
        } else {
            quote(s)
        }
    };
    if matches!(a.get_action(), ArgAction::SetTrue) {
        return Some("false".to_owned());
    }
    if is_repeatable(a) {
        Some(format!(
            "[{}]",
            defaults
                .iter()
                .map(|s| one(s))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        defaults.first().map(|d| one(d))
    }
}

/// Splits a line at spaces into lines of at most `width` characters (longer words stay whole).
fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in line.split(' ') {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command the config code has never seen: a flag added later needs no code here.
    fn command() -> Command {
        Command::new("llmprobe")
            .arg(Arg::new(CONFIG_FLAG).long(CONFIG_FLAG).global(true))
            .subcommand_required(true)
            .subcommand(
                Command::new("watch")
                    .arg(
                        Arg::new("brand_new_flag")
                            .long("brand-new-flag")
                            .default_value("7")
                            .value_parser(clap::value_parser!(u8)),
                    )
                    .arg(
                        Arg::new("repeat_me")
                            .long("repeat-me")
                            .action(ArgAction::Append),
                    )
                    .arg(Arg::new("needed").long("needed").required(true)),
            )
    }

    fn parse(file: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, Error> {
        // One file per call: the tests run in parallel threads of one process.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "llmprobe-config-unit-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, file).expect("write");
        let mut argv: Vec<OsString> =
            vec!["llmprobe".into(), "--config".into(), path.clone().into()];
        argv.extend(args.iter().map(OsString::from));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = parse_with_env(prepare(command()), argv, &|k| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| OsString::from(v))
        });
        let _ = std::fs::remove_file(&path);
        r
    }

    fn value(p: &Parsed, name: &str) -> (Vec<String>, Origin) {
        let o = p.options.iter().find(|o| o.name == name).expect("option");
        (o.values.clone(), o.origin)
    }

    #[test]
    fn any_flag_is_read_from_the_file_and_the_environment() {
        let p = parse(
            "brand_new_flag = 9\nrepeat-me = [\"a\", \"b\"]\nneeded = \"x\"\n",
            &["watch"],
            &[],
        )
        .map_err(|e| e.to_string())
        .expect("parse");
        assert_eq!(
            value(&p, "brand-new-flag"),
            (vec!["9".into()], Origin::File)
        );
        assert_eq!(
            value(&p, "repeat-me"),
            (vec!["a".into(), "b".into()], Origin::File)
        );
        // A required flag can come from the file.
        assert_eq!(value(&p, "needed"), (vec!["x".into()], Origin::File));
        assert_eq!(
            p.matches
                .subcommand_matches("watch")
                .and_then(|m| m.get_one::<u8>("brand_new_flag")),
            Some(&9)
        );

        let p = parse(
            "repeat-me = [\"a\"]\nneeded = \"x\"\n",
            &["watch", "--needed", "y"],
            &[("LLMPROBE_REPEAT_ME", "c, d")],
        )
        .map_err(|e| e.to_string())
        .expect("parse");
        assert_eq!(
            value(&p, "repeat-me"),
            (vec!["c".into(), "d".into()], Origin::Environment)
        );
        assert_eq!(value(&p, "needed"), (vec!["y".into()], Origin::CommandLine));
        assert_eq!(
            value(&p, "brand-new-flag"),
            (vec!["7".into()], Origin::Default)
        );
    }

    #[test]
    fn the_flag_s_own_parser_checks_file_values() {
        let err = parse("brand-new-flag = 300\n", &["watch", "--needed", "y"], &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("`brand-new-flag`") && err.contains("300"),
            "{err}"
        );
        let err = parse("needed = true\n[watch]\nnope = 1\n", &["watch"], &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown key `nope` in [watch]"), "{err}");
    }

    #[test]
    fn every_visible_flag_gets_its_variable() {
        let cmd = prepare(command());
        let watch = cmd.find_subcommand("watch").expect("watch");
        let env = |id: &str| {
            watch
                .get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(
            env("brand_new_flag").as_deref(),
            Some("LLMPROBE_BRAND_NEW_FLAG")
        );
        // Repeatable flags are read by `parse` (split on the separator); their help says so.
        assert_eq!(env("repeat_me"), None);
    }
}
