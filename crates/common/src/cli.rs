//! What both binaries do the same way at start-up: their log output, and
//! the effective configuration that `--check-config` prints.

use std::fmt;
use std::io::IsTerminal as _;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and the event's fields at the top level, for log collectors.
    Json,
}

/// Keeps the log writer running; dropping it flushes what is still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// Sends log lines to stderr in `format`, filtered by `RUST_LOG` (default
/// `info`); or, given a `file`, appends them there (a Windows start from
/// Explorer has no console: see `llm_router_desktop::console`), falling back
/// to stderr when it cannot be opened. A thread of its own writes them, so
/// no request waits on a slow terminal, pipe or disk; when its queue is
/// full, callers wait rather than lose lines.
pub fn init_logging(format: LogFormat, file: Option<&Path>) -> LogGuard {
    let opened = file.and_then(|path| open_log_file(path).ok());
    let ansi = opened.is_none() && std::io::stderr().is_terminal();
    let sink: Box<dyn std::io::Write + Send> = match opened {
        Some(file) => Box::new(file),
        None => Box::new(std::io::stderr()),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("llm-router-log")
        .finish(sink);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    LogGuard(guard)
}

/// `path` opened for appending, its folder created if need be.
fn open_log_file(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    /// The environment variable named.
    Env(String),
    /// The settings file.
    File,
    Default,
    /// Not set, and no default: the program decides (see `--help`).
    Unset,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File => f.write_str("file"),
            Source::Default => f.write_str("default"),
            Source::Unset => f.write_str("unset"),
        }
    }
}

/// One setting as the program will run with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// `--the-flag`.
    pub flag: String,
    /// Its value; secrets show only whether they are set.
    pub value: String,
    pub source: Source,
}

/// Shown instead of a secret's value.
pub const REDACTED: &str = "(set, redacted)";

/// The settings of `command` as parsed into `matches`, each with its
/// source. `file` gives the settings file's value of an argument (by its
/// id), used where no flag or variable set it. Arguments whose environment
/// values clap hides (`hide_env_values`) are secrets and are redacted;
/// actions (`--help`, `--check-config`) and hidden arguments are left out.
pub fn effective_settings(
    command: &Command,
    matches: &ArgMatches,
    file: impl Fn(&str) -> Option<String>,
) -> Vec<Effective> {
    let mut settings = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else {
            continue;
        };
        let is_switch = matches!(
            arg.get_action(),
            ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
        );
        let is_action = matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        );
        // Switches with no variable are one-off actions (`--check-config`).
        if is_action || arg.is_hide_set() || (is_switch && arg.get_env().is_none()) {
            continue;
        }
        let raw: Option<Vec<String>> = matches.get_raw(id).map(|values| {
            values
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        });
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env(
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            Some(ValueSource::DefaultValue) => Source::Default,
            _ => Source::Unset,
        };
        let (value, source) = match (source, file(id)) {
            (Source::Default | Source::Unset, Some(from_file)) => (Some(from_file), Source::File),
            (source, _) => (raw.map(|values| values.join(",")), source),
        };
        let value = match value {
            Some(_) if arg.is_hide_env_values_set() => REDACTED.to_owned(),
            Some(value) if value.is_empty() => "(empty)".to_owned(),
            Some(value) => without_url_password(&value),
            None => "(none)".to_owned(),
        };
        settings.push(Effective {
            flag: format!("--{long}"),
            value,
            source,
        });
    }
    settings
}

/// `value` with the password of a URL in it (`scheme://user:password@host`)
/// replaced.
fn without_url_password(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else {
        return value.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &value[authority_start..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:redacted{}",
            &value[..authority_start],
            &authority[..colon],
            &value[authority_start + at..]
        ),
        _ => value.to_owned(),
    }
}

/// `settings` as an aligned table: flag, value, source.
pub fn render(settings: &[Effective]) -> String {
    let flag_width = settings.iter().map(|s| s.flag.len()).max().unwrap_or(0);
    let value_width = settings
        .iter()
        .map(|s| s.value.chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    let mut text = String::new();
    for s in settings {
        let line = format!(
            "{:flag_width$}  {:value_width$}  ({})",
            s.flag, s.value, s.source
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    #[test]
    fn a_log_file_is_appended_to_in_a_folder_made_for_it() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("agent.log");
        for line in ["first\n", "second\n"] {
            open_log_file(&path)
                .unwrap()
                .write_all(line.as_bytes())
                .unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\nsecond\n");
    }

    fn command() -> Command {
        Command::new("t")
            .arg(
                Arg::new("port")
                    .long("port")
                    .env("T_PORT")
                    .default_value("8080"),
            )
            .arg(Arg::new("host").long("host").env("T_HOST"))
            .arg(
                Arg::new("token")
                    .long("token")
                    .env("T_TOKEN")
                    .hide_env_values(true),
            )
            .arg(Arg::new("name").long("name"))
            .arg(
                Arg::new("check")
                    .long("check-config")
                    .action(ArgAction::SetTrue),
            )
    }

    fn find<'a>(settings: &'a [Effective], flag: &str) -> &'a Effective {
        settings.iter().find(|s| s.flag == flag).unwrap()
    }

    #[test]
    fn every_setting_carries_its_source_and_secrets_are_redacted() {
        let matches = command()
            .try_get_matches_from([
                "t",
                "--host",
                "10.0.0.1",
                "--token",
                "s3cret",
                "--check-config",
            ])
            .unwrap();
        let settings = effective_settings(&command(), &matches, |id| {
            (id == "name" || id == "port").then(|| "from-file".to_owned())
        });
        assert_eq!(find(&settings, "--host").source, Source::Flag);
        assert_eq!(find(&settings, "--host").value, "10.0.0.1");
        // A default gives way to the file; nothing set at all too.
        assert_eq!(find(&settings, "--port").source, Source::File);
        assert_eq!(find(&settings, "--name").value, "from-file");
        let token = find(&settings, "--token");
        assert_eq!(token.value, REDACTED);
        assert!(!render(&settings).contains("s3cret"));
        // One-off actions are not settings.
        assert!(settings.iter().all(|s| s.flag != "--check-config"));
    }

    #[test]
    fn a_password_in_a_url_is_redacted() {
        assert_eq!(
            without_url_password("http://u:pw@10.0.0.5:8080/x"),
            "http://u:redacted@10.0.0.5:8080/x"
        );
        assert_eq!(
            without_url_password("http://10.0.0.5:8080"),
            "http://10.0.0.5:8080"
        );
        assert_eq!(without_url_password("http://u@h/a:b@c"), "http://u@h/a:b@c");
        assert_eq!(without_url_password("plain:value"), "plain:value");
    }

    #[test]
    fn an_unset_setting_says_so() {
        let matches = command().try_get_matches_from(["t"]).unwrap();
        let settings = effective_settings(&command(), &matches, |_| None);
        assert_eq!(find(&settings, "--port").source, Source::Default);
        assert_eq!(find(&settings, "--host").source, Source::Unset);
        assert_eq!(find(&settings, "--host").value, "(none)");
        assert_eq!(find(&settings, "--token").value, "(none)");
    }
}
