//! What the benchmarks share: servers started in this process on runtimes
//! and threads of their own, and reading the answers they give.

use std::fmt::Write as _;
use std::future::Future;

use llm_router_coordinator::config::Config;

/// Worker threads of each server runtime the benchmarks start.
pub const SERVER_THREADS: usize = 2;

/// Runs the future `task` makes on a multi-thread runtime of its own
/// ([`SERVER_THREADS`] workers) on a thread of its own, both named `name`.
pub fn spawn_server<F>(
    name: &str,
    task: impl FnOnce() -> F + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<()>>
where
    F: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SERVER_THREADS)
        .thread_name(name)
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(task()))?;
    Ok(thread)
}

/// Starts a coordinator serving `config` on a runtime of its own until
/// `shutdown` completes; returns its URL and its thread.
pub fn start_coordinator(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(String, std::thread::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let thread = spawn_server("router", move || async move {
        let served = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => llm_router_coordinator::run(listener, config, shutdown).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = served {
            eprintln!("coordinator failed: {e:#}");
        }
    })?;
    Ok((format!("http://{addr}"), thread))
}

/// Whether `haystack` holds `needle` (an empty needle is everywhere).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The start of a body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.trim().replace('\n', " ")
}

/// An error and each of its causes, joined by `: `.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// Parses a subcommand's arguments alone, for tests of their defaults and checks.
#[cfg(test)]
pub fn parse_args<A: clap::Args>(name: &str, args: &[&str]) -> Result<A, clap::Error> {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }

    Cli::<A>::try_parse_from(std::iter::once(name).chain(args.iter().copied())).map(|c| c.args)
}
