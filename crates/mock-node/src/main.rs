//! `llm-router-mock-node`: a fake Ollama / OpenAI-compatible server for
//! demos and load tests. Parses flags, then runs the library.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use llm_router_mock_node::{MockConfig, run};

/// A fake Ollama (and OpenAI-compatible) inference server with knobs for
/// latency, speed, parallel slots, model loading and failures.
///
/// Every flag can also be set through the environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "llm-router-mock-node")]
struct Cli {
    /// Address to listen on.
    #[arg(
        long,
        env = "MOCK_HOST",
        default_value = "127.0.0.1",
        help_heading = "Network"
    )]
    host: IpAddr,

    /// Port to listen on; 0 picks a free one (the address is printed).
    #[arg(
        long,
        env = "MOCK_PORT",
        default_value_t = 11434,
        help_heading = "Network"
    )]
    port: u16,

    /// Node name: sent in the x-mock-node header and as the first word of
    /// every answer.
    #[arg(
        long,
        env = "MOCK_NAME",
        default_value = "mock-node",
        help_heading = "Identity"
    )]
    name: String,

    /// Models the node holds, comma separated (`llama3.2` means `llama3.2:latest`).
    #[arg(
        long,
        env = "MOCK_MODELS",
        value_delimiter = ',',
        default_value = "llama3.2:latest",
        help_heading = "Identity"
    )]
    models: Vec<String>,

    /// Models already loaded in memory at start, comma separated.
    #[arg(
        long,
        env = "MOCK_LOADED_MODELS",
        value_delimiter = ',',
        help_heading = "Identity"
    )]
    loaded_models: Vec<String>,

    /// Ollama version reported by /api/version.
    #[arg(
        long = "version",
        env = "MOCK_VERSION",
        default_value = "0.12.0",
        help_heading = "Identity"
    )]
    ollama_version: String,

    /// Time to first token, in milliseconds, once a slot is free.
    #[arg(
        long,
        env = "MOCK_TTFT_MS",
        default_value_t = 0,
        help_heading = "Speed"
    )]
    ttft_ms: u64,

    /// Tokens generated per second; 0 sends every token at once.
    #[arg(
        long,
        env = "MOCK_TOKENS_PER_SEC",
        default_value_t = 0.0,
        help_heading = "Speed"
    )]
    tokens_per_sec: f64,

    /// Tokens per answer when the request sets no limit (num_predict, max_tokens).
    #[arg(
        long,
        env = "MOCK_DEFAULT_TOKENS",
        default_value_t = 16,
        help_heading = "Speed"
    )]
    default_tokens: u64,

    /// Generations served at once (like OLLAMA_NUM_PARALLEL); others queue.
    #[arg(
        long,
        env = "MOCK_PARALLEL",
        default_value_t = 4,
        help_heading = "Capacity"
    )]
    parallel: usize,

    /// Models kept in memory at once (like OLLAMA_MAX_LOADED_MODELS); another
    /// model evicts the least recently used one.
    #[arg(
        long,
        env = "MOCK_MAX_LOADED_MODELS",
        default_value_t = 1,
        help_heading = "Capacity"
    )]
    max_loaded_models: usize,

    /// Time to load a model into memory, in milliseconds; the node serves
    /// nothing else meanwhile.
    #[arg(
        long,
        env = "MOCK_LOAD_MS",
        default_value_t = 0,
        help_heading = "Capacity"
    )]
    load_ms: u64,

    /// Length of embedding vectors.
    #[arg(
        long,
        env = "MOCK_EMBEDDING_DIM",
        default_value_t = 8,
        help_heading = "Capacity"
    )]
    embedding_dim: usize,

    /// Fraction (0 to 1) of inference requests answered with a 500.
    #[arg(
        long,
        env = "MOCK_FAIL_RATE",
        default_value_t = 0.0,
        help_heading = "Failures"
    )]
    fail_rate: f64,

    /// Drop the connection after this many tokens of every answer.
    #[arg(long, env = "MOCK_DIE_AFTER_TOKENS", help_heading = "Failures")]
    die_after_tokens: Option<u64>,

    /// Download speed of POST /api/pull, in bytes per second; 0 pulls at once.
    #[arg(
        long,
        env = "MOCK_PULL_BYTES_PER_SEC",
        default_value_t = 0.0,
        help_heading = "Pulls"
    )]
    pull_bytes_per_sec: f64,

    /// Time between two progress lines of a pull, in milliseconds (at least 1).
    #[arg(
        long,
        env = "MOCK_PULL_TICK_MS",
        default_value_t = 100,
        help_heading = "Pulls"
    )]
    pull_tick_ms: u64,

    /// Bytes every pull downloads (e.g. 5000000000 for 5 GB); default: the model's own size.
    #[arg(long, env = "MOCK_PULL_SIZE_BYTES", help_heading = "Pulls")]
    pull_size_bytes: Option<u64>,

    /// Fail every pull with an error line once this many bytes of the model weights are done.
    #[arg(long, env = "MOCK_PULL_FAIL_AFTER_BYTES", help_heading = "Pulls")]
    pull_fail_after_bytes: Option<u64>,

    /// Stall every pull (no more progress, connection kept open) at this many bytes of the
    /// model weights.
    #[arg(long, env = "MOCK_PULL_STALL_AFTER_BYTES", help_heading = "Pulls")]
    pull_stall_after_bytes: Option<u64>,

    /// How many recent requests to remember, byte for byte (GET /mock/requests); 0 = none.
    #[arg(
        long,
        env = "MOCK_RECORD",
        default_value_t = 64,
        help_heading = "Diagnostics"
    )]
    record: usize,
}

impl Cli {
    fn into_config(self) -> MockConfig {
        MockConfig {
            name: self.name,
            host: self.host,
            port: self.port,
            models: self.models,
            loaded_models: self.loaded_models,
            version: self.ollama_version,
            ttft: Duration::from_millis(self.ttft_ms),
            tokens_per_sec: self.tokens_per_sec,
            parallel: self.parallel,
            max_loaded_models: self.max_loaded_models,
            load_time: Duration::from_millis(self.load_ms),
            default_tokens: self.default_tokens,
            fail_rate: self.fail_rate,
            die_after_tokens: self.die_after_tokens,
            embedding_dim: self.embedding_dim,
            record_capacity: self.record,
            pull_bytes_per_sec: self.pull_bytes_per_sec,
            pull_tick: Duration::from_millis(self.pull_tick_ms),
            pull_size_bytes: self.pull_size_bytes,
            pull_fail_after_bytes: self.pull_fail_after_bytes,
            pull_stall_after_bytes: self.pull_stall_after_bytes,
            ..MockConfig::default()
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Cli::parse().into_config();
    config.validate()?;
    run(config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_map_onto_the_config() {
        let cli = Cli::try_parse_from([
            "mock",
            "--port",
            "0",
            "--name",
            "n1",
            "--models",
            "a,b:7b",
            "--ttft-ms",
            "20",
            "--die-after-tokens",
            "3",
            "--version",
            "0.1.2",
        ])
        .unwrap();
        let config = cli.into_config();
        assert_eq!(config.port, 0);
        assert_eq!(config.name, "n1");
        assert_eq!(config.models, ["a", "b:7b"]);
        assert_eq!(config.ttft, Duration::from_millis(20));
        assert_eq!(config.die_after_tokens, Some(3));
        assert_eq!(config.version, "0.1.2");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.pull_bytes_per_sec, 0.0);
        assert_eq!(config.pull_tick, Duration::from_millis(100));
        assert_eq!(config.pull_size_bytes, None);
    }

    #[test]
    fn pull_flags_map_onto_the_config() {
        let cli = Cli::try_parse_from([
            "mock",
            "--pull-bytes-per-sec",
            "200000000",
            "--pull-tick-ms",
            "50",
            "--pull-size-bytes",
            "5000000000",
            "--pull-fail-after-bytes",
            "1000",
            "--pull-stall-after-bytes",
            "2000",
        ])
        .unwrap();
        let config = cli.into_config();
        assert_eq!(config.pull_bytes_per_sec, 200_000_000.0);
        assert_eq!(config.pull_tick, Duration::from_millis(50));
        assert_eq!(config.pull_size_bytes, Some(5_000_000_000));
        assert_eq!(config.pull_fail_after_bytes, Some(1000));
        assert_eq!(config.pull_stall_after_bytes, Some(2000));
        assert_eq!(config.validate(), Ok(()));
    }
}
