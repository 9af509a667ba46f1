//! `llm-router-bench`: load programs that measure the router's own overhead.
//!
//! Each subcommand starts what it measures on loopback, drives it, and
//! prints latency quantiles and throughput.

mod cpu;
mod harness;
mod history;
mod nginx;
mod proxy;
mod pulls;
mod registry;
mod routing;
mod stats;
mod streams;

use clap::{Parser, Subcommand};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// The allocator the `llm-router` binary uses, so that the router measured here
/// costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "llm-router-bench",
    about = "Measures llm-router's own overhead on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Registration latency and heartbeat throughput with many agents.
    Registry(registry::RegistryArgs),
    /// The router's added latency and throughput cost against one instant mock node.
    Proxy(proxy::ProxyArgs),
    /// Request-history queries (list, filters, search, pages) on a database of a million requests.
    History(history::HistoryArgs),
    /// Latency and throughput of each load-balancing policy on a mixed fleet of mock nodes.
    Routing(routing::RoutingArgs),
    /// Thousands of slow streamed answers at once: memory and time to first chunk.
    Streams(streams::StreamsArgs),
    /// A large model pulled onto many nodes through one `ollama pull`: the coordinator's CPU.
    Pulls(pulls::PullsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The coordinators started here pay for logging as `llm-router` does
    // (same filter: RUST_LOG, else info); the lines are then thrown away,
    // unless LLM_ROUTER_BENCH_LOG is set (then they go to stderr).
    let writer = if std::env::var_os("LLM_ROUTER_BENCH_LOG").is_some() {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::sink)
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(writer)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Registry(args) => registry::run(args).await,
            Command::Proxy(args) => proxy::run(args).await,
            Command::History(args) => history::run(args).await,
            Command::Routing(args) => routing::run(args).await,
            Command::Streams(args) => streams::run(args).await,
            Command::Pulls(args) => pulls::run(args).await,
        }
    })
}
