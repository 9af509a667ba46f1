//! Settings: the command line (`Cli`, each flag with an environment fallback), the optional
//! settings file, and the typed, validated [`AgentConfig`] the agent runs with.
//!
//! Precedence: CLI flag > environment variable > `agent-settings.json` > default.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use llm_router_common::cli::LogFormat;
use llm_router_common::{DEFAULT_HEARTBEAT_INTERVAL_SECS, DEFAULT_OLLAMA_PORT, MAX_NAME_LEN};
use reqwest::Url;

use crate::identity::resolve_machine_name;
use crate::settings_file::{SETTINGS_FILE_NAME, SettingsFile};

/// Default `COORDINATOR_URL`.
pub const DEFAULT_COORDINATOR_URL: &str = "http://localhost:8080";
/// Default `COORDINATOR_REGISTER_RETRY_SECS`.
pub const DEFAULT_REGISTER_RETRY_SECS: u64 = 5;

/// The kind of inference server the agent reports for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Ollama: `/api/tags`, `/api/ps`, `/api/version`.
    #[default]
    Ollama,
    /// A server with an OpenAI-compatible `/v1` API only.
    #[value(name = "openai")]
    OpenAi,
}

impl Backend {
    /// The API the coordinator will speak to the node.
    pub fn api_kind(self) -> llm_router_common::ApiKind {
        match self {
            Backend::Ollama => llm_router_common::ApiKind::Ollama,
            Backend::OpenAi => llm_router_common::ApiKind::OpenAi,
        }
    }
}

/// Command line of `llm-router-agent`.
///
/// Parse it with [`Cli::parse_args`] or [`Cli::try_parse_args`], not clap's `Parser::parse`:
/// only those record which values are defaults, which the settings file may replace.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "llm-router-agent",
    version,
    max_term_width = 100,
    about = "Registers this machine's Ollama with an llm-router coordinator and reports its health.",
    long_about = "Registers this machine's Ollama with an llm-router coordinator and reports its \
                  health: machine metrics, the models it holds and those loaded in memory.\n\n\
                  Settings come from flags, then environment variables, then the settings file, \
                  then defaults. Registration is retried until the coordinator answers."
)]
pub struct Cli {
    /// Base URL of the coordinator.
    #[arg(long, env = "COORDINATOR_URL", default_value = DEFAULT_COORDINATOR_URL,
          value_name = "URL", help_heading = "Coordinator")]
    pub coordinator_url: String,

    /// Seconds between heartbeats (the coordinator may ask for a shorter interval at registration).
    #[arg(long, env = "AGENT_HEARTBEAT_INTERVAL_SECS", default_value_t = DEFAULT_HEARTBEAT_INTERVAL_SECS,
          value_name = "SECS", help_heading = "Coordinator")]
    pub heartbeat_interval_secs: u64,

    /// Seconds before the first registration retry; later retries double up to 60 s.
    #[arg(long, env = "COORDINATOR_REGISTER_RETRY_SECS", default_value_t = DEFAULT_REGISTER_RETRY_SECS,
          value_name = "SECS", help_heading = "Coordinator")]
    pub register_retry_secs: u64,

    /// Registration attempts before giving up at start-up; 0 retries forever.
    #[arg(
        long,
        env = "COORDINATOR_REGISTER_MAX_RETRIES",
        default_value_t = 0,
        value_name = "N",
        help_heading = "Coordinator"
    )]
    pub register_max_retries: u32,

    /// Port of the local Ollama.
    #[arg(long, env = "OLLAMA_PORT", default_value_t = DEFAULT_OLLAMA_PORT,
          value_name = "PORT", help_heading = "Ollama")]
    pub ollama_port: u16,

    /// The inference server beside the agent: `ollama`, or `openai` for any server with an
    /// OpenAI-compatible `/v1` API (llama.cpp's server, vLLM, SGLang, LM Studio): its models
    /// from `/v1/models`, its readiness from `/health` where it has one.
    #[arg(long, env = "LLM_ROUTER_BACKEND", value_enum, default_value_t = Backend::Ollama,
          help_heading = "Ollama")]
    pub backend: Backend,

    /// Base URL of the local Ollama, or of the OpenAI-compatible server with `--backend
    /// openai` (`--api-base` too) [default: http://127.0.0.1:${OLLAMA_PORT}].
    #[arg(
        long,
        visible_alias = "api-base",
        env = "OLLAMA_API_BASE",
        value_name = "URL",
        help_heading = "Ollama"
    )]
    pub ollama_api_base: Option<String>,

    /// Machine name to register under [default: $OLLAMA_AGENT_MACHINE_NAME, else
    /// $OLLAMA_MACHINE_NAME, else the settings file, else $HOSTNAME, else the OS host name].
    #[arg(long, value_name = "NAME", help_heading = "Identity")]
    pub machine_name: Option<String>,

    /// IP address to advertise [default: the local address of the route to the coordinator].
    #[arg(
        long,
        env = "LLM_ROUTER_ADVERTISE_IP",
        value_name = "IP",
        help_heading = "Identity"
    )]
    pub advertise_ip: Option<IpAddr>,

    /// Full URL the coordinator should use for this node's API, instead of the advertised IP
    /// and the Ollama port (for a reverse proxy or NAT).
    #[arg(
        long,
        env = "LLM_ROUTER_NODE_API_URL",
        value_name = "URL",
        help_heading = "Identity"
    )]
    pub api_url: Option<String>,

    /// The fleet's node token, printed by the coordinator at its first start (or in its
    /// data folder's `node-token`); needed when the coordinator is reachable from the network.
    #[arg(
        long,
        env = "LLM_ROUTER_NODE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Coordinator"
    )]
    pub node_token: Option<String>,

    /// PEM file of certificate authorities to trust for an https coordinator, besides the
    /// system's (e.g. a private CA).
    #[arg(
        long,
        env = "LLM_ROUTER_COORDINATOR_CA_FILE",
        value_name = "PATH",
        help_heading = "Coordinator"
    )]
    pub coordinator_ca_file: Option<PathBuf>,

    /// Where this node's id and credential are kept between runs
    /// [default: $LLM_ROUTER_DATA_DIR/agent-node.json, else ~/.llm-router/agent-node.json].
    #[arg(
        long,
        env = "LLM_ROUTER_AGENT_IDENTITY_FILE",
        value_name = "PATH",
        help_heading = "Coordinator"
    )]
    pub identity_file: Option<PathBuf>,

    /// Key the coordinator must send to this machine's inference server, for a server
    /// that requires one (the agent sends it too).
    #[arg(
        long,
        env = "LLM_ROUTER_NODE_API_KEY",
        hide_env_values = true,
        value_name = "KEY",
        help_heading = "Ollama"
    )]
    pub node_api_key: Option<String>,

    /// Settings file [default: $LLM_ROUTER_DATA_DIR/agent-settings.json, else
    /// ~/.llm-router/agent-settings.json]. A missing file is fine; a broken one is an error.
    #[arg(long, value_name = "PATH")]
    pub settings_file: Option<PathBuf>,

    /// Start `ollama serve` (found on PATH) when Ollama does not answer, start it
    /// again with backoff if it dies, and stop it with the agent: on or off
    /// [default: on for a desktop start, off headless or under a service manager].
    #[arg(long, env = "LLM_ROUTER_MANAGE_OLLAMA", value_name = "on|off",
          value_parser = clap::builder::BoolishValueParser::new(), hide_possible_values = true, help_heading = "Ollama")]
    pub manage_ollama: Option<bool>,

    /// Run without the tray icon, as from a terminal (also `LLM_ROUTER_TRAY=0`); under a
    /// service manager or without a desktop session there is none anyway.
    #[arg(long, help_heading = "Desktop")]
    pub no_tray: bool,

    /// Serve the settings panel on 127.0.0.1, where this machine's user edits and applies
    /// the settings without a restart: on or off [default: on for a desktop start, off
    /// headless]. Its link, with a token new at each start, is printed and in the tray.
    #[arg(long, env = "LLM_ROUTER_SETTINGS_PANEL", value_name = "on|off",
          value_parser = clap::builder::BoolishValueParser::new(), hide_possible_values = true, help_heading = "Desktop")]
    pub settings_panel: Option<bool>,

    /// Port of the settings panel on 127.0.0.1; 0 lets the system pick a free one.
    #[arg(
        long,
        env = "LLM_ROUTER_SETTINGS_PORT",
        default_value_t = 0,
        value_name = "PORT",
        help_heading = "Desktop"
    )]
    pub settings_port: u16,

    /// Start this agent at login, with the flags given here (not secrets: keep the node
    /// token in the settings file), and exit.
    #[arg(long, conflicts_with = "remove_autostart", help_heading = "Desktop")]
    pub install_autostart: bool,

    /// Stop starting this agent at login, and exit.
    #[arg(long, help_heading = "Desktop")]
    pub remove_autostart: bool,

    /// Print the effective settings and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Check every setting, print each with where its value came from (flag, env, file,
    /// default; secrets redacted), and exit: 0 when the agent can run, 1 when not.
    #[arg(long)]
    pub check_config: bool,

    /// Log lines as text, or as one JSON object per line (for log collectors); the level
    /// filter is RUST_LOG (default info).
    #[arg(long, env = "LLM_ROUTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text,
          help_heading = "Logging")]
    pub log_format: LogFormat,

    /// Arguments that came from their default rather than the command line or environment:
    /// only those may be replaced by the settings file.
    #[arg(skip)]
    defaulted: HashSet<String>,
}

impl Cli {
    /// Parses `args` (the first being the program name), remembering which values are defaults.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        Self::from_matches_with_sources(&matches)
    }

    /// Parses the process's own arguments; prints help or the error and exits on failure.
    pub fn parse_args() -> Self {
        Self::parse_args_with_matches().0
    }

    /// [`Cli::parse_args`], with clap's matches (they tell where each value came from).
    pub fn parse_args_with_matches() -> (Self, ArgMatches) {
        let matches = Self::command().get_matches();
        let cli = Self::from_matches_with_sources(&matches).unwrap_or_else(|error| error.exit());
        (cli, matches)
    }

    fn from_matches_with_sources(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut cli = Self::from_arg_matches(matches)?;
        cli.defaulted = matches
            .ids()
            .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::DefaultValue))
            .map(|id| id.as_str().to_owned())
            .collect();
        Ok(cli)
    }

    fn is_default(&self, id: &str) -> bool {
        self.defaulted.contains(id)
    }

    /// The settings file to read: `--settings-file`, else the one in the data directory.
    pub fn settings_file_path(&self, env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
        self.settings_file
            .clone()
            .or_else(|| crate::settings_file::data_dir(env).map(|dir| dir.join(SETTINGS_FILE_NAME)))
    }

    /// Merges the command line with the settings file and resolves the machine name.
    ///
    /// `env` looks up one environment variable and `os_host_name` asks the OS; both are
    /// passed in so that tests need not touch the process environment.
    pub fn into_config(
        self,
        file: Option<&SettingsFile>,
        env: impl Fn(&str) -> Option<String>,
        os_host_name: impl FnOnce() -> Option<String>,
    ) -> Result<AgentConfig, ConfigError> {
        let empty = SettingsFile::default();
        let file = file.unwrap_or(&empty);
        // A value from the command line or the environment beats the file; a default does not.
        fn pick<T>(defaulted: bool, from_cli: T, from_file: Option<T>) -> T {
            match from_file {
                Some(value) if defaulted => value,
                _ => from_cli,
            }
        }
        let coordinator_url = pick(
            self.is_default("coordinator_url"),
            self.coordinator_url.clone(),
            file.coordinator_url.clone(),
        );
        let ollama_port = pick(
            self.is_default("ollama_port"),
            self.ollama_port,
            file.ollama_port,
        );
        let heartbeat_secs = pick(
            self.is_default("heartbeat_interval_secs"),
            self.heartbeat_interval_secs,
            file.heartbeat_interval_secs,
        );
        let retry_secs = pick(
            self.is_default("register_retry_secs"),
            self.register_retry_secs,
            file.register_retry_secs,
        );
        let max_retries = pick(
            self.is_default("register_max_retries"),
            self.register_max_retries,
            file.register_max_retries,
        );
        // A port given on the command line or in the environment says where
        // Ollama is as surely as a whole URL does: it beats the file's URL.
        let port_given = !self.is_default("ollama_port");
        let on_port = || format!("http://127.0.0.1:{ollama_port}");
        let ollama_api_base = self
            .ollama_api_base
            .clone()
            .or_else(|| port_given.then(on_port))
            .or_else(|| file.ollama_api_base.clone())
            .unwrap_or_else(on_port);
        let api_url = self.api_url.clone().or_else(|| file.api_url.clone());
        let secret = |value: Option<&String>| {
            value
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| Secret(v.to_owned()))
        };
        let node_token = secret(self.node_token.as_ref().or(file.node_token.as_ref()));
        let node_api_key = secret(self.node_api_key.as_ref().or(file.node_api_key.as_ref()));
        let coordinator_ca_file = self
            .coordinator_ca_file
            .clone()
            .or_else(|| file.coordinator_ca_file.clone());
        let identity_file = self.identity_file.clone().or_else(|| {
            crate::settings_file::data_dir(&env)
                .map(|dir| dir.join(crate::node_file::NODE_FILE_NAME))
        });

        let machine_name = resolve_machine_name(
            self.machine_name.as_deref(),
            file.machine_name.as_deref(),
            env,
            os_host_name,
        )
        .ok_or(ConfigError::NoMachineName)?;

        let config = AgentConfig {
            coordinator_url: parse_url(Setting::CoordinatorUrl, &coordinator_url)?,
            backend: self.backend,
            ollama_api_base: parse_url(Setting::OllamaApiBase, &ollama_api_base)?,
            heartbeat_interval: Duration::from_secs(heartbeat_secs),
            register_retry: Duration::from_secs(retry_secs),
            register_max_retries: max_retries,
            machine_name,
            advertise_ip: self.advertise_ip.or(file.advertise_ip),
            api_url: api_url
                .map(|url| parse_url(Setting::ApiUrl, &url))
                .transpose()?,
            node_token,
            node_api_key,
            coordinator_ca_file,
            identity_file,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Everything the agent runs with. Build it from [`Cli`] or directly in code
/// ([`AgentConfig::new`] fills in the defaults), then call [`AgentConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Base URL of the coordinator (a path prefix is kept).
    pub coordinator_url: Url,
    /// The kind of inference server at [`AgentConfig::ollama_api_base`].
    pub backend: Backend,
    /// Base URL of the local Ollama (or OpenAI-compatible server); its port is the one advertised.
    pub ollama_api_base: Url,
    /// Heartbeat period unless the coordinator asks for another at registration.
    pub heartbeat_interval: Duration,
    /// Wait before the first registration retry; doubles up to [`crate::backoff::MAX_REGISTER_BACKOFF`].
    pub register_retry: Duration,
    /// Registration attempts before giving up at start-up; 0 retries forever.
    pub register_max_retries: u32,
    pub machine_name: String,
    /// Advertised address; `None` finds the local address of the route to the coordinator.
    pub advertise_ip: Option<IpAddr>,
    /// Full URL to advertise instead of the IP and Ollama port.
    pub api_url: Option<Url>,
    /// The fleet's node token, sent when registering.
    pub node_token: Option<Secret>,
    /// Key for this machine's inference server, passed on to the coordinator.
    pub node_api_key: Option<Secret>,
    /// Extra certificate authorities (PEM) for an https coordinator.
    pub coordinator_ca_file: Option<PathBuf>,
    /// Where the node's id and credential are kept; `None` keeps them in memory only.
    pub identity_file: Option<PathBuf>,
}

/// A secret setting: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl AgentConfig {
    /// A configuration with the default intervals and no overrides.
    pub fn new(
        coordinator_url: Url,
        ollama_api_base: Url,
        machine_name: impl Into<String>,
    ) -> Self {
        Self {
            coordinator_url,
            backend: Backend::Ollama,
            ollama_api_base,
            heartbeat_interval: Duration::from_secs(DEFAULT_HEARTBEAT_INTERVAL_SECS),
            register_retry: Duration::from_secs(DEFAULT_REGISTER_RETRY_SECS),
            register_max_retries: 0,
            machine_name: machine_name.into(),
            advertise_ip: None,
            api_url: None,
            node_token: None,
            node_api_key: None,
            coordinator_ca_file: None,
            identity_file: None,
        }
    }

    /// Checks what the types cannot: URLs the agent can call, non-zero intervals, a usable name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_http_url(Setting::CoordinatorUrl, &self.coordinator_url)?;
        check_http_url(Setting::OllamaApiBase, &self.ollama_api_base)?;
        if let Some(url) = &self.api_url {
            check_http_url(Setting::ApiUrl, url)?;
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::ZeroInterval(Setting::HeartbeatInterval));
        }
        if self.register_retry.is_zero() {
            return Err(ConfigError::ZeroInterval(Setting::RegisterRetry));
        }
        if self.machine_name.trim().is_empty() {
            return Err(ConfigError::NoMachineName);
        }
        if self.machine_name.chars().count() > MAX_NAME_LEN {
            return Err(ConfigError::MachineNameTooLong);
        }
        Ok(())
    }

    /// The Ollama port advertised to the coordinator: that of [`AgentConfig::ollama_api_base`].
    pub fn ollama_port(&self) -> u16 {
        self.ollama_api_base
            .port_or_known_default()
            .unwrap_or(DEFAULT_OLLAMA_PORT)
    }
}

impl fmt::Display for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_auto = |value: Option<String>| value.unwrap_or_else(|| "(auto)".to_owned());
        writeln!(f, "coordinator_url = {}", redacted(&self.coordinator_url))?;
        writeln!(f, "backend = {}", self.backend.api_kind().as_str())?;
        writeln!(f, "ollama_api_base = {}", redacted(&self.ollama_api_base))?;
        writeln!(f, "ollama_port = {}", self.ollama_port())?;
        writeln!(
            f,
            "heartbeat_interval_secs = {}",
            self.heartbeat_interval.as_secs_f64()
        )?;
        writeln!(
            f,
            "register_retry_secs = {}",
            self.register_retry.as_secs_f64()
        )?;
        writeln!(f, "register_max_retries = {}", self.register_max_retries)?;
        writeln!(f, "machine_name = {}", self.machine_name)?;
        writeln!(
            f,
            "advertise_ip = {}",
            or_auto(self.advertise_ip.map(|ip| ip.to_string()))
        )?;
        writeln!(
            f,
            "api_url = {}",
            or_auto(self.api_url.as_ref().map(redacted))
        )?;
        let set = |secret: &Option<Secret>| if secret.is_some() { "(set)" } else { "(none)" };
        writeln!(f, "node_token = {}", set(&self.node_token))?;
        writeln!(f, "node_api_key = {}", set(&self.node_api_key))?;
        writeln!(
            f,
            "coordinator_ca_file = {}",
            self.coordinator_ca_file.as_ref().map_or_else(
                || "(system CAs only)".to_owned(),
                |p| p.display().to_string()
            )
        )?;
        write!(
            f,
            "identity_file = {}",
            self.identity_file
                .as_ref()
                .map_or_else(|| "(memory only)".to_owned(), |p| p.display().to_string())
        )
    }
}

/// `url` with a password in it replaced, for printing.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only a URL that cannot have a password fails here; this one has one.
        let _ = shown.set_password(Some("redacted"));
    }
    shown.to_string()
}

/// A setting, named the way an operator sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    CoordinatorUrl,
    OllamaApiBase,
    ApiUrl,
    HeartbeatInterval,
    RegisterRetry,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Setting::CoordinatorUrl => "--coordinator-url / COORDINATOR_URL",
            Setting::OllamaApiBase => "--ollama-api-base / OLLAMA_API_BASE",
            Setting::ApiUrl => "--api-url / LLM_ROUTER_NODE_API_URL",
            Setting::HeartbeatInterval => {
                "--heartbeat-interval-secs / AGENT_HEARTBEAT_INTERVAL_SECS"
            }
            Setting::RegisterRetry => "--register-retry-secs / COORDINATOR_REGISTER_RETRY_SECS",
        })
    }
}

/// A configuration the agent cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}: {value:?} is not a valid URL: {reason}")]
    InvalidUrl {
        setting: Setting,
        value: String,
        reason: String,
    },
    #[error("{0} must be greater than 0")]
    ZeroInterval(Setting),
    #[error(
        "no machine name: set --machine-name or OLLAMA_AGENT_MACHINE_NAME (the OS reports no host name)"
    )]
    NoMachineName,
    #[error("the machine name is longer than {MAX_NAME_LEN} characters")]
    MachineNameTooLong,
}

fn parse_url(setting: Setting, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value.trim()).map_err(|error| ConfigError::InvalidUrl {
        setting,
        value: value.to_owned(),
        reason: error.to_string(),
    })?;
    check_http_url(setting, &url)?;
    Ok(url)
}

fn check_http_url(setting: Setting, url: &Url) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidUrl {
        setting,
        value: url.to_string(),
        reason: reason.to_owned(),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn host() -> Option<String> {
        Some("os-host".to_owned())
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_args(std::iter::once("llm-router-agent").chain(args.iter().copied()))
            .unwrap()
    }

    fn config(args: &[&str], file: Option<&SettingsFile>) -> Result<AgentConfig, ConfigError> {
        parse(args).into_config(file, no_env, host)
    }

    fn valid() -> AgentConfig {
        AgentConfig::new(
            Url::parse("http://127.0.0.1:8080").unwrap(),
            Url::parse("http://127.0.0.1:11434").unwrap(),
            "box",
        )
    }

    #[test]
    fn defaults_match_the_documented_values() {
        // Only meaningful when the test process has none of the agent's variables set.
        if std::env::vars().any(|(key, _)| {
            matches!(
                key.as_str(),
                "COORDINATOR_URL"
                    | "OLLAMA_PORT"
                    | "OLLAMA_API_BASE"
                    | "AGENT_HEARTBEAT_INTERVAL_SECS"
                    | "COORDINATOR_REGISTER_RETRY_SECS"
                    | "COORDINATOR_REGISTER_MAX_RETRIES"
                    | "LLM_ROUTER_ADVERTISE_IP"
                    | "LLM_ROUTER_NODE_API_URL"
            )
        }) {
            return;
        }
        let config = config(&[], None).unwrap();
        assert_eq!(config.coordinator_url.as_str(), "http://localhost:8080/");
        assert_eq!(config.ollama_api_base.as_str(), "http://127.0.0.1:11434/");
        assert_eq!(config.ollama_port(), 11434);
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(config.register_retry, Duration::from_secs(5));
        assert_eq!(config.register_max_retries, 0);
        assert_eq!(config.machine_name, "os-host");
        assert_eq!(config.advertise_ip, None);
        assert_eq!(config.api_url, None);
    }

    #[test]
    fn ollama_api_base_defaults_to_loopback_on_the_ollama_port() {
        let config = config(&["--ollama-port", "12000"], None).unwrap();
        assert_eq!(config.ollama_api_base.as_str(), "http://127.0.0.1:12000/");
        assert_eq!(config.ollama_port(), 12000);
    }

    #[test]
    fn the_settings_file_fills_in_only_what_the_command_line_left_at_default() {
        let file = SettingsFile {
            coordinator_url: Some("http://from-file:9000".to_owned()),
            heartbeat_interval_secs: Some(30),
            register_max_retries: Some(7),
            ollama_port: Some(12345),
            machine_name: Some("file-name".to_owned()),
            advertise_ip: Some("10.1.2.3".parse().unwrap()),
            ..SettingsFile::default()
        };
        let config = config(
            &[
                "--coordinator-url",
                "http://from-flag:8000",
                "--register-max-retries",
                "2",
            ],
            Some(&file),
        )
        .unwrap();
        assert_eq!(config.coordinator_url.as_str(), "http://from-flag:8000/");
        assert_eq!(config.register_max_retries, 2);
        assert_eq!(config.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(config.ollama_api_base.as_str(), "http://127.0.0.1:12345/");
        assert_eq!(config.machine_name, "file-name");
        assert_eq!(config.advertise_ip, Some("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn an_ollama_port_on_the_command_line_beats_the_files_ollama_url() {
        let file = SettingsFile {
            ollama_api_base: Some("http://127.0.0.1:21007".to_owned()),
            ..SettingsFile::default()
        };
        let flagged = config(&["--ollama-port", "21005"], Some(&file)).unwrap();
        assert_eq!(flagged.ollama_api_base.as_str(), "http://127.0.0.1:21005/");
        // Without the flag, the file's URL counts.
        let unflagged = config(&[], Some(&file)).unwrap();
        assert_eq!(
            unflagged.ollama_api_base.as_str(),
            "http://127.0.0.1:21007/"
        );
    }

    #[test]
    fn a_bad_coordinator_url_names_the_setting() {
        let error = config(&["--coordinator-url", "not a url"], None).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("COORDINATOR_URL"), "{message}");
        assert!(message.contains("not a url"), "{message}");

        let error = config(&["--coordinator-url", "ftp://c:21"], None).unwrap_err();
        assert!(error.to_string().contains("http or https"), "{error}");
    }

    #[test]
    fn a_bad_api_url_or_ollama_base_is_rejected() {
        let error = config(&["--api-url", "nonsense"], None).unwrap_err();
        assert!(
            error.to_string().contains("LLM_ROUTER_NODE_API_URL"),
            "{error}"
        );
        let error = config(&["--ollama-api-base", "unix:/tmp/sock"], None).unwrap_err();
        assert!(error.to_string().contains("OLLAMA_API_BASE"), "{error}");
    }

    #[test]
    fn zero_intervals_are_rejected_with_the_setting_name() {
        let error = config(&["--heartbeat-interval-secs", "0"], None).unwrap_err();
        assert!(matches!(
            error,
            ConfigError::ZeroInterval(Setting::HeartbeatInterval)
        ));
        assert!(
            error.to_string().contains("AGENT_HEARTBEAT_INTERVAL_SECS"),
            "{error}"
        );
        let error = config(&["--register-retry-secs", "0"], None).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("COORDINATOR_REGISTER_RETRY_SECS"),
            "{error}"
        );
    }

    #[test]
    fn validate_checks_a_config_built_in_code() {
        assert!(valid().validate().is_ok());
        let mut config = valid();
        config.machine_name = "  ".to_owned();
        assert!(matches!(config.validate(), Err(ConfigError::NoMachineName)));
        let mut config = valid();
        config.machine_name = "n".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::MachineNameTooLong)
        ));
        let mut config = valid();
        config.register_retry = Duration::ZERO;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::ZeroInterval(Setting::RegisterRetry))
        ));
        let mut config = valid();
        config.api_url = Some(Url::parse("mailto:ops@example.com").unwrap());
        assert!(matches!(
            config.validate(),
            Err(ConfigError::InvalidUrl {
                setting: Setting::ApiUrl,
                ..
            })
        ));
    }

    #[test]
    fn no_machine_name_at_all_is_an_error() {
        let error = parse(&[]).into_config(None, no_env, || None).unwrap_err();
        assert!(matches!(error, ConfigError::NoMachineName));
    }

    #[test]
    fn help_lists_every_setting_with_its_environment_variable() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "--coordinator-url",
            "COORDINATOR_URL",
            "http://localhost:8080",
            "--ollama-port",
            "OLLAMA_PORT",
            "11434",
            "--ollama-api-base",
            "OLLAMA_API_BASE",
            "--heartbeat-interval-secs",
            "AGENT_HEARTBEAT_INTERVAL_SECS",
            "--register-retry-secs",
            "COORDINATOR_REGISTER_RETRY_SECS",
            "--register-max-retries",
            "COORDINATOR_REGISTER_MAX_RETRIES",
            "--machine-name",
            "OLLAMA_AGENT_MACHINE_NAME",
            "--advertise-ip",
            "LLM_ROUTER_ADVERTISE_IP",
            "--api-url",
            "LLM_ROUTER_NODE_API_URL",
        ] {
            assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
        }
    }

    #[test]
    fn display_lists_the_effective_settings() {
        let text = valid().to_string();
        assert!(
            text.contains("coordinator_url = http://127.0.0.1:8080/"),
            "{text}"
        );
        assert!(text.contains("advertise_ip = (auto)"), "{text}");
    }
}
