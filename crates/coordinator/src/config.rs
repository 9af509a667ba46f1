//! Coordinator settings: command line, environment, defaults, and their checks.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Command line of `llm-router`. Every flag can also be set by the
/// environment variable shown in `--help`; a flag wins over its variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "llm-router",
    version,
    about = "llm-router coordinator: one endpoint for a fleet of Ollama machines",
    long_about = "llm-router coordinator: keeps the registry of inference nodes that agents \
                  register, watches their heartbeats, and serves the management API.\n\n\
                  Run `llm-router-agent` beside Ollama on each machine to add it to the fleet."
)]
pub struct Cli {
    /// Address to listen on.
    #[arg(
        long = "host",
        env = "COORDINATOR_HOST",
        default_value = "0.0.0.0",
        help_heading = "Server"
    )]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long = "port", env = "COORDINATOR_PORT", default_value_t = llm_router_common::DEFAULT_COORDINATOR_PORT, help_heading = "Server")]
    pub port: u16,

    /// Folder for the registry file (agents.json); created if missing. Default: ~/.llm-router
    #[arg(
        long = "data-dir",
        env = "LLM_ROUTER_DATA_DIR",
        help_heading = "Storage"
    )]
    pub data_dir: Option<PathBuf>,

    /// Seconds between checks for nodes whose heartbeats stopped.
    #[arg(
        long = "health-check-interval",
        env = "HEALTH_CHECK_INTERVAL",
        default_value_t = 5,
        value_name = "SECS",
        help_heading = "Health"
    )]
    pub health_check_interval: u64,

    /// Seconds without a heartbeat after which a node is offline.
    #[arg(
        long = "agent-timeout",
        env = "AGENT_TIMEOUT",
        default_value_t = 30,
        value_name = "SECS",
        help_heading = "Health"
    )]
    pub agent_timeout: u64,

    /// Heartbeat interval asked of agents, in seconds (capped at a third of the agent timeout).
    #[arg(long = "heartbeat-interval", env = "LLM_ROUTER_HEARTBEAT_INTERVAL_SECS", default_value_t = llm_router_common::DEFAULT_HEARTBEAT_INTERVAL_SECS, value_name = "SECS", help_heading = "Health")]
    pub heartbeat_interval: u64,
}

/// Checked settings the coordinator runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub health_check_interval: Duration,
    pub agent_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// How long routine changes (heartbeats) may wait before they are written to disk.
    pub persist_delay: Duration,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be at least 1 second")]
    ZeroInterval { name: &'static str },
    #[error(
        "HEALTH_CHECK_INTERVAL ({check}s) must not exceed AGENT_TIMEOUT ({timeout}s), or dead nodes are noticed late"
    )]
    CheckSlowerThanTimeout { check: u64, timeout: u64 },
    #[error("no data folder given and no home folder found; set LLM_ROUTER_DATA_DIR or --data-dir")]
    NoDataDir,
}

impl Cli {
    /// Turns the command line into a checked [`Config`].
    pub fn config(&self) -> Result<Config, ConfigError> {
        for (name, value) in [
            ("HEALTH_CHECK_INTERVAL", self.health_check_interval),
            ("AGENT_TIMEOUT", self.agent_timeout),
            ("the heartbeat interval", self.heartbeat_interval),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroInterval { name });
            }
        }
        if self.health_check_interval > self.agent_timeout {
            return Err(ConfigError::CheckSlowerThanTimeout {
                check: self.health_check_interval,
                timeout: self.agent_timeout,
            });
        }
        let data_dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
        };
        // Three heartbeats per timeout: one lost or late beat must not take a node offline.
        let heartbeat_interval = self.heartbeat_interval.min((self.agent_timeout / 3).max(1));
        Ok(Config {
            data_dir,
            health_check_interval: Duration::from_secs(self.health_check_interval),
            agent_timeout: Duration::from_secs(self.agent_timeout),
            heartbeat_interval: Duration::from_secs(heartbeat_interval),
            persist_delay: Duration::from_secs(1),
        })
    }
}

/// `~/.llm-router`.
pub fn default_data_dir() -> Option<PathBuf> {
    std::env::home_dir().map(|home| home.join(".llm-router"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("llm-router").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let config = cli(&["--data-dir", "/tmp/x"]).config().unwrap();
        assert_eq!(config.health_check_interval, Duration::from_secs(5));
        assert_eq!(config.agent_timeout, Duration::from_secs(30));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn heartbeat_interval_is_capped_to_a_third_of_the_timeout() {
        let config = cli(&[
            "--data-dir",
            "/tmp/x",
            "--agent-timeout",
            "6",
            "--health-check-interval",
            "1",
        ])
        .config()
        .unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(2));
    }

    #[test]
    fn zero_and_inconsistent_intervals_are_rejected() {
        let err = cli(&["--data-dir", "/x", "--agent-timeout", "0"])
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("AGENT_TIMEOUT"), "{err}");
        let err = cli(&[
            "--data-dir",
            "/x",
            "--agent-timeout",
            "5",
            "--health-check-interval",
            "10",
        ])
        .config()
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::CheckSlowerThanTimeout { .. }),
            "{err}"
        );
    }
}
