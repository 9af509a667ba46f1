//! `registry`: registers many agents at once, then has them send heartbeats
//! (as fast as they can, or at a set rate), against a coordinator started in
//! this process on its own runtime (or one given by URL). For the coordinator
//! started here, the CPU time its threads spent in each phase is read from
//! `/proc`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use llm_router_coordinator::config::Config;

use crate::harness::{RegisteredNode, start_coordinator};
use crate::stats::Latencies;

#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Registrations and heartbeats in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// How long the heartbeat phase lasts, in seconds.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Models each agent reports.
    #[arg(long, default_value_t = 8)]
    pub models: usize,
    /// Heartbeats per second, all agents together (0: as fast as they can).
    /// A fleet of N agents beating every 10 s sends N/10 per second.
    #[arg(long, default_value_t = 0)]
    pub heartbeat_rate: u64,
    /// Benchmark a running coordinator instead of starting one.
    #[arg(long)]
    pub url: Option<String>,
}

/// On-CPU time of this process's threads whose name starts with `prefix`
/// (the coordinator's runtime and blocking threads are named "router"), from
/// `/proc/self/task/*/schedstat`. `None` where `/proc` cannot tell.
fn threads_cpu(prefix: &str) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("schedstat")) else {
            continue;
        };
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

fn registration(i: usize, models: usize) -> serde_json::Value {
    serde_json::json!({
        "machine_name": format!("bench-node-{i:05}"),
        "ip_address": "127.0.0.1",
        "ollama_port": 20000 + (i % 40000),
        "ollama_version": "0.12.0",
        "system_info": {"os": "linux", "cpu_cores": 16, "total_memory_bytes": 68719476736u64},
        "models": (0..models).map(|m| serde_json::json!({"name": format!("model-{m}:latest"), "size": 4_000_000_000u64})).collect::<Vec<_>>(),
    })
}

pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let cpu = || {
        if args.url.is_none() {
            threads_cpu("router")
        } else {
            None
        }
    };
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            start_coordinator(
                Config::with_data_dir(data_dir.path()),
                std::future::pending(),
            )?
            .0
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    // Phase 1: every agent registers once.
    let cpu_before = cpu();
    let started = Instant::now();
    let workers = (0..args.concurrency).map(|_| {
        let (client, next, base) = (client.clone(), Arc::clone(&next), base.clone());
        let (agents, models) = (args.agents, args.models);
        async move {
            let mut latencies = Latencies::default();
            let mut nodes = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= agents {
                    return anyhow::Ok((latencies, nodes));
                }
                let body = registration(i, models);
                let sent = Instant::now();
                let response = client
                    .post(format!("{base}/api/agents/register"))
                    .json(&body)
                    .send()
                    .await
                    .context("registration failed")?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "registration answered {}",
                    response.status()
                );
                let answer: serde_json::Value = response.json().await?;
                latencies.record(sent.elapsed());
                nodes.push(RegisteredNode::from_answer(&answer)?);
            }
        }
    });
    let mut registration_latency = Latencies::default();
    let mut nodes = Vec::new();
    for result in join_all(workers).await {
        let (latencies, registered) = result?;
        registration_latency.extend(latencies);
        nodes.extend(registered);
    }
    let registration_wall = started.elapsed();
    let registration_cpu = cpu().zip(cpu_before).map(|(after, before)| after - before);

    // Phase 2: heartbeats from every agent, round after round, for a fixed time.
    let nodes = Arc::new(nodes);
    let deadline = Instant::now() + Duration::from_secs(args.heartbeat_secs);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu_before = cpu();
    let started = Instant::now();
    let rate = args.heartbeat_rate;
    let workers = (0..args.concurrency).map(|_| {
        let (client, nodes, counter, base) = (client.clone(), Arc::clone(&nodes), Arc::clone(&counter), base.clone());
        async move {
            let mut latencies = Latencies::default();
            let body = serde_json::to_vec(&serde_json::json!({
                "metrics": {"cpu_percent": 37.5, "memory_percent": 61.0, "memory_used_bytes": 1u64 << 34, "memory_total_bytes": 1u64 << 36},
                "ollama_available": true,
            }))?;
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if rate > 0 {
                    // Beat i is due i/rate seconds after the start.
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let node = &nodes[i % nodes.len()];
                let sent = Instant::now();
                let response = node
                    .heartbeat(&client, &base)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                anyhow::ensure!(response.status().is_success(), "heartbeat answered {}", response.status());
                latencies.record(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }
    });
    let mut heartbeat_latency = Latencies::default();
    for result in join_all(workers).await {
        heartbeat_latency.extend(result?);
    }
    let heartbeat_wall = started.elapsed();
    let heartbeat_cpu = cpu().zip(cpu_before).map(|(after, before)| after - before);

    println!(
        "registry benchmark: {} agents, {} models each, concurrency {}",
        args.agents, args.models, args.concurrency
    );
    println!(
        "registration  {}  ({:.0}/s)",
        registration_latency.summary(),
        args.agents as f64 / registration_wall.as_secs_f64()
    );
    println!(
        "heartbeat     {}  ({:.0}/s)",
        heartbeat_latency.summary(),
        heartbeat_latency.len() as f64 / heartbeat_wall.as_secs_f64()
    );
    if let (Some(registering), Some(beating)) = (registration_cpu, heartbeat_cpu) {
        println!(
            "coordinator CPU: {:.0} µs per registration; {:.1}% of one core while beating, {:.0} µs per heartbeat",
            registering.as_secs_f64() * 1e6 / args.agents.max(1) as f64,
            beating.as_secs_f64() * 100.0 / heartbeat_wall.as_secs_f64(),
            beating.as_secs_f64() * 1e6 / heartbeat_latency.len().max(1) as f64,
        );
    }
    Ok(())
}
