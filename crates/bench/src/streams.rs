//! `streams`: thousands of slow streamed answers at once through one
//! coordinator, as a fleet serving many chat users sees them.
//!
//! For each level, the same streams are opened directly against one mock node
//! and then through a coordinator, spread over `--ramp-secs` so that the
//! listeners' backlogs never overflow; every stream then lasts
//! `--tokens` / `--tokens-per-sec` seconds, so all of them are open at once
//! for a while. Reported: streams completed and failed, the time to the first
//! chunk (quantiles, and the router's added p99 over direct), and the
//! coordinator's resident memory: it runs as its own process (the `llm-router`
//! binary beside this one, as a user runs it), so its memory is its own.
//!
//! Each stream holds two sockets in this process (client and node) and two in
//! the coordinator's: the open-file limit (`ulimit -n`, which the coordinator
//! inherits) caps the level, and a level above it is refused with the figure
//! it would need.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use llm_router_mock_node::{MockConfig, MockNode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::harness::{error_chain, spawn_server};
use crate::proxy::{HistoryMode, register_node};
use crate::stats::Latencies;

const MODEL: &str = "llama3.2:latest";

/// Sockets one stream holds in each process, and a margin for everything else
/// (listeners, the history database, the runtime).
const SOCKETS_PER_STREAM: u64 = 2;
const SPARE_FILES: u64 = 256;

#[derive(Debug, clap::Args)]
pub struct StreamsArgs {
    /// Streams open at once, comma separated; each level is measured separately
    #[arg(long, value_delimiter = ',', default_value = "1000,4000")]
    pub streams: Vec<usize>,

    /// Tokens in each answer
    #[arg(long, default_value_t = 24)]
    pub tokens: u64,

    /// The node's generation speed per stream, in tokens per second
    #[arg(long, default_value_t = 4.0)]
    pub tokens_per_sec: f64,

    /// Seconds over which each level's streams are opened
    #[arg(long, default_value_t = 2.0)]
    pub ramp_secs: f64,

    /// Whether the coordinator records its request history (as the binary does by default)
    #[arg(long, value_enum, default_value = "on")]
    pub router_history: HistoryMode,

    /// The `llm-router` binary to measure [default: the one beside this benchmark]
    #[arg(long, value_name = "PATH")]
    pub coordinator: Option<PathBuf>,
}

pub async fn run(args: StreamsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.tokens_per_sec > 0.0 && args.tokens > 0,
        "--tokens and --tokens-per-sec must be above 0"
    );
    let most = args.streams.iter().copied().max().unwrap_or(0);
    let files = raise_open_file_limit();
    let needed = most as u64 * SOCKETS_PER_STREAM + SPARE_FILES;
    anyhow::ensure!(
        needed <= files,
        "{most} streams need about {needed} open files in this process and in the coordinator's \
         (two sockets per stream in each); a process may open {files} (ulimit -n). Lower \
         --streams or raise the limit."
    );

    let node_url = start_node(&args, most).await?;
    let node_port = node_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .context("node URL without a port")?;
    let seconds = args.tokens as f64 / args.tokens_per_sec;
    println!(
        "streams benchmark: 1 mock node, answers of {} tokens at {} tokens/s ({seconds:.1} s each), \
         opened over {} s; a fresh coordinator per level (its own process), history {}; {} CPUs",
        args.tokens,
        args.tokens_per_sec,
        args.ramp_secs,
        if args.router_history == HistoryMode::On {
            "on"
        } else {
            "off"
        },
        std::thread::available_parallelism().map_or(1, usize::from),
    );
    let ramp = Duration::from_secs_f64(args.ramp_secs);
    let mut rows = Vec::new();
    let mut problems = 0;
    for &level in &args.streams {
        let direct = run_level(&node_url, level, ramp, None).await?;
        // A coordinator of its own per level: its memory before is its
        // baseline, and the connections it pooled to the node close with it.
        let data_dir = tempfile::tempdir()?;
        let coordinator = Coordinator::start(&args, data_dir.path(), level).await?;
        let heartbeats = register_node(&coordinator.url, node_port).await?;
        let router = run_level(&coordinator.url, level, ramp, Some(coordinator.pid)).await?;
        heartbeats.abort();
        drop(coordinator);
        problems += direct.failed + router.failed;
        rows.push((level, direct, router));
    }

    println!();
    println!(
        "| streams | path | completed | failed | first chunk p50 ms | first chunk p99 ms | added p99 ms | coordinator RSS before MB | peak MB |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (level, mut direct, mut router) in rows {
        let direct_p99 = direct.first_chunk.quantile(0.99);
        let router_p99 = router.first_chunk.quantile(0.99);
        for (name, run) in [("direct", &mut direct), ("router", &mut router)] {
            let (added, before, peak) = match run.rss {
                Some((before, peak)) => (
                    format!("{:+.3}", ms(router_p99) - ms(direct_p99)),
                    format!("{:.0}", mb(before)),
                    format!("{:.0}", mb(peak)),
                ),
                None => ("–".to_owned(), "–".to_owned(), "–".to_owned()),
            };
            println!(
                "| {level} | {name} | {} | {} | {:.3} | {:.3} | {added} | {before} | {peak} |",
                run.completed,
                run.failed,
                ms(run.first_chunk.quantile(0.5)),
                ms(run.first_chunk.quantile(0.99)),
            );
        }
    }
    anyhow::ensure!(
        problems == 0,
        "{problems} streams failed: the figures above are not trustworthy"
    );
    Ok(())
}

/// What one level measured on one path.
#[derive(Debug, Default)]
struct LevelRun {
    completed: usize,
    failed: usize,
    first_chunk: Latencies,
    /// The coordinator's resident memory before the run and at its peak, in bytes.
    rss: Option<(u64, u64)>,
}

/// Opens `level` streams at `base` over `ramp`, reads each to its end.
async fn run_level(
    base: &str,
    level: usize,
    ramp: Duration,
    coordinator: Option<u32>,
) -> anyhow::Result<LevelRun> {
    let name = if coordinator.is_some() {
        "router"
    } else {
        "direct"
    };
    // One connection per stream, as separate users' clients would have.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()?;
    let url: Arc<str> = format!("{base}/api/chat").into();
    let body = Bytes::from(
        serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "stream": true,
        })
        .to_string(),
    );
    let before = coordinator.map(resident_bytes);
    let peak = Arc::new(AtomicU64::new(before.unwrap_or(0)));
    let sampler = coordinator.map(|pid| {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(50));
            loop {
                ticks.tick().await;
                peak.fetch_max(resident_bytes(pid), Ordering::Relaxed);
            }
        })
    });
    let started = Instant::now();
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..level {
        let (client, url, body) = (client.clone(), Arc::clone(&url), body.clone());
        let at = started + ramp.mul_f64(i as f64 / level.max(1) as f64);
        streams.spawn(async move {
            tokio::time::sleep_until(at).await;
            one_stream(&client, &url, body).await
        });
    }
    let mut run = LevelRun::default();
    let mut first_error = None;
    while let Some(joined) = streams.join_next().await {
        match joined.context("a stream's task panicked")? {
            Ok(first) => {
                run.completed += 1;
                run.first_chunk.record(first);
            }
            Err(e) => {
                run.failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    run.rss = before.map(|before| (before, peak.load(Ordering::Relaxed)));
    eprintln!(
        "{level:>6} streams {name:<7} {} completed, {} failed in {:.1} s{}",
        run.completed,
        run.failed,
        started.elapsed().as_secs_f64(),
        first_error.map_or_else(String::new, |e| format!(" (first failure: {e})")),
    );
    Ok(run)
}

/// One streamed chat read to its end; the time to its first chunk.
async fn one_stream(client: &reqwest::Client, url: &str, body: Bytes) -> Result<Duration, String> {
    let sent = Instant::now();
    let mut response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut first = None;
    let mut answer = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        first.get_or_insert_with(|| sent.elapsed());
        answer.extend_from_slice(&chunk);
    }
    if !crate::harness::contains(&answer, br#""done":true"#) {
        return Err("the stream ended without its last chunk".to_owned());
    }
    first.ok_or_else(|| "an empty answer".to_owned())
}

/// The coordinator under test: the `llm-router` binary as its own process,
/// killed when this is dropped.
struct Coordinator {
    url: String,
    pid: u32,
    _child: tokio::process::Child,
}

impl Coordinator {
    async fn start(
        args: &StreamsArgs,
        data_dir: &std::path::Path,
        streams: usize,
    ) -> anyhow::Result<Self> {
        let binary = match &args.coordinator {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("llm-router"),
        };
        anyhow::ensure!(
            binary.is_file(),
            "no coordinator binary at {} (build it with `cargo build --release -p \
             llm-router-coordinator`, or name one with --coordinator)",
            binary.display()
        );
        let in_flight = streams.max(1).to_string();
        let mut command = tokio::process::Command::new(&binary);
        command
            .args(["--host", "127.0.0.1", "--port", "0", "--data-dir"])
            .arg(data_dir)
            .args(["--max-in-flight", &in_flight])
            .args(["--max-in-flight-per-node", &in_flight])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if args.router_history == HistoryMode::Off {
            command.arg("--no-history");
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let pid = child.id().context("the coordinator exited at once")?;
        let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.split("coordinator listening addr=").nth(1) {
                    return Ok(rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned());
                }
            }
            anyhow::bail!("the coordinator exited before it listened")
        })
        .await
        .context("the coordinator did not say where it listens within 30 s")??;
        // Its later log lines are read and dropped, so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            url: format!("http://{addr}"),
            pid,
            _child: child,
        })
    }
}

/// Starts the mock node (slots for every stream, slow generation) on its own
/// runtime; returns its URL.
async fn start_node(args: &StreamsArgs, slots: usize) -> anyhow::Result<String> {
    let config = MockConfig {
        name: "bench-node".to_owned(),
        models: vec![MODEL.to_owned()],
        loaded_models: vec![MODEL.to_owned()],
        parallel: slots.max(1),
        default_tokens: args.tokens,
        ttft: Duration::ZERO,
        tokens_per_sec: args.tokens_per_sec,
        record_capacity: 0,
        ..MockConfig::default()
    };
    config.validate()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn_server("mock-node", move || async move {
        match MockNode::start(config).await {
            Ok(node) => {
                let _ = tx.send(Ok(node.url()));
                std::future::pending::<()>().await;
                drop(node);
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    rx.await
        .context("the mock node thread died")?
        .context("could not start the mock node")
}

/// Raises this process's open-file limit to its hard limit; returns the limit now in force.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum.unwrap_or(u64::MAX),
        Err(_) => limit.current.unwrap_or(u64::MAX),
    }
}

/// Process `pid`'s resident memory (`VmRSS` in `/proc/<pid>/status`), in bytes; 0 where unreadable.
fn resident_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
