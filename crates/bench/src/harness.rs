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
    start_coordinator_named("router", config, shutdown)
}

/// [`start_coordinator`] with its threads named `name` (at most 15 bytes
/// show in `/proc`), so their CPU time can be told apart.
pub fn start_coordinator_named(
    name: &str,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(String, std::thread::JoinHandle<()>)> {
    // Its serving threads go by the same name.
    config.threads.name = name.to_owned();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let thread = spawn_server(name, move || async move {
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

/// A node as registration answered for it: its id, and the credential its
/// agent must present on every later call (heartbeats, goodbyes, registering
/// again).
#[derive(Debug, Clone)]
pub struct RegisteredNode {
    pub id: String,
    pub credential: String,
}

impl RegisteredNode {
    /// Reads `node_id` and `node_credential` from a registration answer.
    pub fn from_answer(answer: &serde_json::Value) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let field = |name: &str| {
            answer[name]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("registration answer has no {name}"))
        };
        Ok(Self {
            id: field("node_id")?,
            credential: field("node_credential")?,
        })
    }

    /// `POST /api/agents/{id}/heartbeat` on the coordinator at `base`, with the
    /// node's credential; the caller adds the body.
    pub fn heartbeat(&self, client: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        client
            .post(format!("{base}/api/agents/{}/heartbeat", self.id))
            .bearer_auth(&self.credential)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heartbeats_are_accepted_with_the_credential_from_registration_only() {
        let data = tempfile::tempdir().unwrap();
        let (base, _) =
            start_coordinator(Config::with_data_dir(data.path()), std::future::pending()).unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let answer: serde_json::Value = client
            .post(format!("{base}/api/agents/register"))
            .json(&serde_json::json!({
                "machine_name": "bench-node",
                "ip_address": "127.0.0.1",
                "ollama_port": 9,
            }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap()
            .json()
            .await
            .unwrap();
        let node = RegisteredNode::from_answer(&answer).unwrap();
        assert!(node.credential.starts_with("llmr_nc_"), "{node:?}");
        let heartbeat = serde_json::json!({"ollama_available": true});
        let accepted = node
            .heartbeat(&client, &base)
            .json(&heartbeat)
            .send()
            .await
            .unwrap();
        assert!(accepted.status().is_success(), "{}", accepted.status());
        let refused = client
            .post(format!("{base}/api/agents/{}/heartbeat", node.id))
            .json(&heartbeat)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    }
}
