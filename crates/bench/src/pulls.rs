//! `pulls`: what distributing a large model costs the coordinator.
//!
//! `--nodes` mock nodes each pull `--size-gb` at `--node-mb-per-sec` (10 nodes,
//! 5 GB at 200 MB/s: 25 s) through one `ollama pull`-style request to the
//! coordinator (`POST /api/pull`, streamed), while `--dashboards` clients follow
//! `/api/events` as open dashboards do. Reported: the coordinator's CPU time over
//! the pull as a share of one core, the progress lines the nodes sent and the
//! client got, and whether every node ended with the model.
//!
//! The nodes run on a runtime of their own and the client on this one, so the
//! CPU read from the coordinator's threads (`router`) is the coordinator's alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt as _;
use llm_router_coordinator::config::Config;
use llm_router_mock_node::{MockConfig, MockNode};
use tokio::time::Instant;

use crate::cpu::CpuSource;
use crate::harness::{snippet, spawn_server, start_coordinator_named};

const THREADS: &str = "router";
const MODEL: &str = "llama3.1:70b";

#[derive(Debug, clap::Args)]
pub struct PullsArgs {
    /// Nodes pulling at once
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,

    /// Size of the model, in GB
    #[arg(long, default_value_t = 5.0)]
    pub size_gb: f64,

    /// Download speed of each node, in MB/s
    #[arg(long, default_value_t = 200.0)]
    pub node_mb_per_sec: f64,

    /// Clients following `/api/events` meanwhile, as open dashboards
    #[arg(long, default_value_t = 1)]
    pub dashboards: usize,
}

pub async fn run(args: PullsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes > 0 && args.size_gb > 0.0 && args.node_mb_per_sec > 0.0,
        "--nodes, --size-gb and --node-mb-per-sec must be above 0"
    );
    let size = (args.size_gb * 1e9) as u64;
    let speed = args.node_mb_per_sec * 1e6;
    let (urls_tx, urls_rx) = tokio::sync::oneshot::channel();
    let count = args.nodes;
    let _nodes = spawn_server("nodes", move || async move {
        let mut nodes = Vec::new();
        for i in 0..count {
            let mut config = MockConfig::named(format!("node-{i:02}"));
            config.pull_bytes_per_sec = speed;
            config.pull_size_bytes = Some(size);
            match MockNode::start(config).await {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    eprintln!("could not start a mock node: {e}");
                    return;
                }
            }
        }
        let _ = urls_tx.send(
            nodes
                .iter()
                .map(|n| (n.name().to_owned(), n.addr().port()))
                .collect::<Vec<_>>(),
        );
        // The nodes serve until the benchmark exits.
        let _keep = nodes;
        std::future::pending::<()>().await;
    })?;
    let nodes = urls_rx.await.context("the mock nodes did not start")?;

    let data_dir = tempfile::tempdir()?;
    let mut config = Config::with_data_dir(data_dir.path());
    // No agents send heartbeats here: nodes must not time out during the pull.
    config.agent_timeout = Duration::from_secs(3600);
    let (base, _server) = start_coordinator_named(THREADS, config, std::future::pending())?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    for (name, port) in &nodes {
        let response = client
            .post(format!("{base}/api/agents/register"))
            .json(&serde_json::json!({
                "machine_name": name, "ip_address": "127.0.0.1", "ollama_port": port,
            }))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "registering {name} failed");
    }

    let events_seen = Arc::new(AtomicU64::new(0));
    for _ in 0..args.dashboards {
        let (client, url, seen) = (
            client.clone(),
            format!("{base}/api/events"),
            Arc::clone(&events_seen),
        );
        tokio::spawn(async move {
            let Ok(response) = client.get(url).send().await else {
                return;
            };
            let mut body = response.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                let events = chunk.windows(7).filter(|w| w == b"event: ").count();
                seen.fetch_add(events as u64, Ordering::Relaxed);
            }
        });
    }

    println!(
        "pull of {:.1} GB onto {} nodes at {:.0} MB/s each ({} open dashboards)",
        args.size_gb, args.nodes, args.node_mb_per_sec, args.dashboards
    );
    let cpu = CpuSource::Threads(vec![THREADS]);
    let before = cpu.used();
    let started = Instant::now();
    let response = client
        .post(format!("{base}/api/pull"))
        .json(&serde_json::json!({ "model": MODEL }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "the pull answered {}",
        response.status()
    );
    let mut body = response.bytes_stream();
    let (mut count, mut tail) = (0u64, Vec::new());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the pull's answer broke off")?;
        count += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        tail.extend_from_slice(&chunk);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 1024);
        }
    }
    let last = String::from_utf8_lossy(&tail)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let wall = started.elapsed();
    let used = cpu
        .used()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    anyhow::ensure!(
        last.contains("\"success\""),
        "the pull did not succeed: {}",
        snippet(last.as_bytes())
    );
    let tags: serde_json::Value = client
        .get(format!("{base}/api/tags"))
        .send()
        .await?
        .json()
        .await?;
    let listed = tags["models"].as_array().map_or(0, Vec::len);
    println!("  wall time             {:>8.1} s", wall.as_secs_f64());
    println!("  client progress lines {count:>8}");
    println!(
        "  dashboard events      {:>8}",
        events_seen.load(Ordering::Relaxed)
    );
    println!(
        "  model listed          {:>8}",
        if listed > 0 { "yes" } else { "no" }
    );
    match used {
        Some(used) => println!(
            "  coordinator CPU       {:>8.2} s = {:.2}% of one core",
            used.as_secs_f64(),
            100.0 * used.as_secs_f64() / wall.as_secs_f64()
        ),
        None => println!("  coordinator CPU       (not measurable here: needs Linux's /proc)"),
    }
    Ok(())
}
