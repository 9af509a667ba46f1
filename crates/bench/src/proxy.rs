//! `proxy`: the router's own overhead on the inference path.
//!
//! One mock inference node (instant answers) runs on loopback on its own
//! runtime; a coordinator runs on another, with the node registered. The same
//! closed-loop load (a fixed number of requests in flight) is sent straight to
//! the node and through the router, in alternating runs (direct, router,
//! router, direct, ...), each after a warm-up. Everything shares the
//! machine's cores, so the ratios between the two paths are what count, not
//! the absolute figures.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use llm_router_coordinator::config::Config;
use llm_router_mock_node::{Endpoint, MockConfig, MockNode, MockStats};

use crate::cpu::CpuSource;
use crate::harness::{
    RegisteredNode, contains, error_chain, snippet, spawn_server, start_coordinator_named,
};
use crate::stats::{Latencies, ms};

/// Model the node holds and the router is told about.
const MODEL: &str = "llama3.2:latest";
/// How long the router may take to route to the node it was just told about.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one request of the load may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// Requests in flight at once, comma separated; each level is measured separately.
    #[arg(long, value_delimiter = ',', value_parser = parse_level, default_value = "1,64")]
    pub concurrency: Vec<usize>,
    /// Measured requests per path, scenario and concurrency level, split over
    /// the rounds [default: 3000 at concurrency 1, 20000 above].
    #[arg(long, conflicts_with = "duration_secs")]
    pub requests: Option<usize>,
    /// Measure for this many seconds per path, scenario and concurrency level
    /// (split over the rounds) instead of a number of requests.
    #[arg(long, value_parser = parse_seconds)]
    pub duration_secs: Option<f64>,
    /// Unmeasured requests before every measured run.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// Measured runs per path for each scenario and level, alternating
    /// direct/router in ABBA order so that drift hits both paths alike.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Scenarios, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ollama-chat,openai-chat,ollama-stream"
    )]
    pub scenarios: Vec<Scenario>,
    /// Tokens the node generates per answer (all at once: no pacing).
    #[arg(long, default_value_t = 8)]
    pub tokens: u64,
    /// Milliseconds the node takes before its first token, standing in for
    /// inference. 0 (the default) answers at once: the router's cost at its
    /// most visible, since the node then costs almost nothing.
    #[arg(long, default_value_t = 0.0, value_parser = parse_millis)]
    pub node_ms: f64,
    /// Generation slots of the node; keep it at or above the concurrency so
    /// nothing queues at the node.
    #[arg(long, default_value_t = 256)]
    pub slots: usize,
    /// Measure the direct path only, without starting a router.
    #[arg(long)]
    pub direct_only: bool,
    /// Run the router with client API keys required: a key is created before
    /// the load and every request through the router carries it. The direct
    /// path is unchanged.
    #[arg(long, conflicts_with = "direct_only")]
    pub require_api_key: bool,
    /// Router rows: with its request history recording every request (`on`),
    /// started with `--no-history` (`off`), or both, each a coordinator of
    /// its own.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "on,off")]
    pub router_history: Vec<HistoryMode>,
    /// The nginx binary for the nginx row, a plain reverse proxy in front of
    /// the same node [default: nginx on PATH or in /usr/sbin; the row is left
    /// out when there is none].
    #[arg(long, value_name = "PATH", conflicts_with_all = ["no_nginx", "direct_only"])]
    pub nginx: Option<PathBuf>,
    /// Leave the nginx row out even where nginx is installed.
    #[arg(long)]
    pub no_nginx: bool,
}

/// Whether a measured router records its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryMode {
    On,
    Off,
}

impl HistoryMode {
    /// The row's name; its threads are named after it too.
    pub(crate) fn path_name(self) -> &'static str {
        match self {
            HistoryMode::On => "router",
            HistoryMode::Off => "router-nohist",
        }
    }
}

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `POST /api/chat`, `"stream": false`.
    OllamaChat,
    /// `POST /v1/chat/completions`, not streamed.
    OpenaiChat,
    /// `POST /api/chat`, `"stream": true` (NDJSON); time to first chunk too.
    OllamaStream,
}

impl Scenario {
    fn path(self) -> &'static str {
        match self {
            Scenario::OllamaChat | Scenario::OllamaStream => "/api/chat",
            Scenario::OpenaiChat => "/v1/chat/completions",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::OllamaChat => "ollama chat",
            Scenario::OpenaiChat => "openai chat",
            Scenario::OllamaStream => "ollama chat stream",
        }
    }

    fn streams(self) -> bool {
        self == Scenario::OllamaStream
    }

    fn body(self) -> Bytes {
        let stream = self.streams();
        let body = serde_json::json!({
            "model": "llama3.2",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        });
        Bytes::from(body.to_string())
    }

    /// Text every complete answer contains (the final line of a stream).
    fn done_marker(self) -> &'static [u8] {
        match self {
            Scenario::OllamaChat | Scenario::OllamaStream => br#""done":true"#,
            Scenario::OpenaiChat => br#""finish_reason":"#,
        }
    }
}

fn parse_level(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("a concurrency level must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a concurrency level: {e}")),
    }
}

fn parse_millis(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ms) if ms.is_finite() && (0.0..=60_000.0).contains(&ms) => Ok(ms),
        _ => Err(format!("expected milliseconds from 0 to 60000, got {s:?}")),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(secs),
        Ok(_) => Err("must be a number of seconds above 0".into()),
        Err(e) => Err(format!("{s:?} is not a number of seconds: {e}")),
    }
}

/// Default measured requests at a concurrency level.
fn default_requests(concurrency: usize) -> usize {
    if concurrency <= 1 { 3000 } else { 20_000 }
}

/// `total` split into `parts` nearly equal shares that add up to `total`.
fn split(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// The order of the paths in a round: forward, then backward (ABBA for two
/// paths, ABCCBA for three), so that drift hits every path alike.
fn round_order(round: u32, paths: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..paths).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// `router / direct`, when there is a direct figure to compare with.
fn throughput_ratio(router_rps: f64, direct_rps: f64) -> Option<f64> {
    (direct_rps > 0.0 && router_rps.is_finite()).then(|| router_rps / direct_rps)
}

/// Latency the router adds, in milliseconds (negative when it was faster).
fn added_ms(router: Duration, direct: Duration) -> f64 {
    ms(router) - ms(direct)
}

/// When a run stops.
#[derive(Debug, Clone, Copy)]
enum Stop {
    After(usize),
    Elapsed(Duration),
}

/// A place the load goes to: the node itself, a router, or nginx.
struct Target {
    name: &'static str,
    base: String,
    client: reqwest::Client,
    /// Where the CPU time of what sits between client and node is read
    /// (none for the direct path).
    cpu: Option<CpuSource>,
    /// Whether the target is a router recording its history, whose writer
    /// must have caught up before its CPU time is read.
    records_history: bool,
}

impl Target {
    /// A target whose client sends `api_key` (as `Authorization: Bearer`) on
    /// every request, when given.
    fn new(
        name: &'static str,
        base: String,
        pool: usize,
        api_key: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {key}"))
                .context("the API key is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(pool)
            // A request that never ends would stall the whole run.
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .build()?;
        Ok(Self {
            name,
            base,
            client,
            cpu: None,
            records_history: false,
        })
    }

    fn with_cpu(mut self, cpu: CpuSource) -> Self {
        self.cpu = Some(cpu);
        self
    }

    fn is_router(&self) -> bool {
        self.name.starts_with("router")
    }

    /// Waits until its history writer is idle (when it has one): the writer
    /// records a run's requests after their answers, and that work belongs
    /// to the run. Idle is read off the writer thread's CPU time, so that
    /// waiting costs the router nothing.
    async fn settle(&self) {
        if !self.records_history {
            return;
        }
        let writer = CpuSource::Threads(vec!["history-writer"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = writer.used();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let now = writer.used();
            if now == last {
                return;
            }
            last = now;
        }
    }
}
/// What one path did in one scenario at one level, over all its runs.
#[derive(Debug, Default)]
struct Measured {
    total: Latencies,
    first_byte: Latencies,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    wall: Duration,
    /// Requests the node received meanwhile, on the scenario's route.
    node_saw: u64,
    /// CPU time of the proxy meanwhile (router or nginx), when measured.
    cpu: Option<Duration>,
}

impl Measured {
    fn add(&mut self, other: Measured) {
        self.total.extend(other.total);
        self.first_byte.extend(other.first_byte);
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.wall += other.wall;
        self.node_saw += other.node_saw;
        self.cpu = match (self.cpu, other.cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    /// Proxy CPU time per answered request.
    fn cpu_per_request(&self) -> Option<Duration> {
        let cpu = self.cpu?;
        (self.ok > 0).then(|| cpu / self.ok as u32)
    }

    fn rps(&self) -> f64 {
        if self.wall.is_zero() {
            0.0
        } else {
            self.ok as f64 / self.wall.as_secs_f64()
        }
    }

    fn attempts(&self) -> usize {
        self.ok + self.errors
    }
}

/// A scenario at a level: what each path did, in the order of the targets
/// (the direct path first).
struct Cell {
    scenario: Scenario,
    concurrency: usize,
    paths: Vec<Measured>,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.concurrency.is_empty(), "no concurrency level given");
    anyhow::ensure!(!args.scenarios.is_empty(), "no scenario given");
    anyhow::ensure!(args.slots >= 1, "--slots must be at least 1");
    let max_level = args.concurrency.iter().copied().max().unwrap_or(1);
    if max_level > args.slots {
        eprintln!(
            "warning: concurrency {max_level} exceeds the node's {} slots; requests will queue at the node",
            args.slots
        );
    }

    let (node_url, node_stats) = start_node(&args).await?;
    let node_port = node_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .context("node URL without a port")?;
    let mut targets = vec![Target::new("direct", node_url.clone(), max_level, None)?];
    let mut data_dirs = Vec::new();
    let mut heartbeats = Vec::new();
    let mut nginx = None;
    if !args.direct_only {
        for &mode in &args.router_history {
            let data_dir = tempfile::tempdir()?;
            let mut config = Config::with_data_dir(data_dir.path());
            config.access.require_api_key = args.require_api_key;
            // Without history the coordinator captures no bodies either.
            config.history.enabled = mode == HistoryMode::On;
            let name = mode.path_name();
            let (base, _) = start_coordinator_named(name, config, std::future::pending())?;
            heartbeats.push(register_node(&base, node_port).await?);
            let key = if args.require_api_key {
                Some(create_api_key(&base).await?)
            } else {
                None
            };
            let mut threads = vec![name];
            if mode == HistoryMode::On {
                threads.push("history-writer");
            }
            let mut target = Target::new(name, base, max_level, key.as_deref())?
                .with_cpu(CpuSource::Threads(threads));
            target.records_history = mode == HistoryMode::On;
            targets.push(target);
            data_dirs.push(data_dir);
        }
        let binary = if args.no_nginx {
            None
        } else {
            crate::nginx::find(args.nginx.as_deref())
        };
        match binary {
            Some(binary) => {
                let started = crate::nginx::Nginx::start(
                    &binary,
                    &format!("127.0.0.1:{node_port}"),
                    max_level,
                )?;
                targets.push(
                    Target::new("nginx", started.base().to_owned(), max_level, None)?
                        .with_cpu(CpuSource::ProcessTree(started.pid())),
                );
                nginx = Some(started);
            }
            None if args.nginx.is_none() && !args.no_nginx => {
                eprintln!("note: no nginx found (PATH, /usr/sbin); the nginx row is left out");
            }
            None => {}
        }
    }

    for &scenario in &args.scenarios {
        for target in &targets {
            let patience = if target.name == "direct" {
                Duration::ZERO
            } else {
                READY_TIMEOUT
            };
            let ready = preflight(target, scenario, patience).await;
            if let (Err(e), Some(nginx)) = (&ready, nginx.as_mut())
                && let Some(why) = nginx.exited()
            {
                anyhow::bail!("{e:#}\n{why}");
            }
            ready.with_context(|| {
                if target.name == "direct" {
                    "the mock node itself does not answer as expected".to_owned()
                } else {
                    format!("the {} path does not answer as expected", target.name)
                }
            })?;
        }
    }

    let rounds = args.rounds;
    let mut cells = Vec::new();
    for &scenario in &args.scenarios {
        for &concurrency in &args.concurrency {
            let stops: Vec<Stop> = match args.duration_secs {
                Some(secs) => {
                    let each = Duration::from_secs_f64(secs / f64::from(rounds));
                    vec![Stop::Elapsed(each); rounds as usize]
                }
                None => split(
                    args.requests
                        .unwrap_or_else(|| default_requests(concurrency)),
                    rounds as usize,
                )
                .into_iter()
                .map(Stop::After)
                .collect(),
            };
            let mut cell = Cell {
                scenario,
                concurrency,
                paths: targets.iter().map(|_| Measured::default()).collect(),
            };
            for (round, stop) in (0..rounds).zip(stops) {
                for index in round_order(round, targets.len()) {
                    let target = &targets[index];
                    let warm = run_load(
                        target,
                        scenario,
                        concurrency,
                        Stop::After(args.warmup),
                        &node_stats,
                    )
                    .await;
                    if warm.errors > 0 {
                        eprintln!(
                            "warning: {} warm-up errors on the {} path, e.g. {}",
                            warm.errors,
                            target.name,
                            warm.first_error.as_deref().unwrap_or("?")
                        );
                    }
                    let measured = run_load(target, scenario, concurrency, stop, &node_stats).await;
                    eprintln!(
                        "{:<18} c={:<4} round {}/{} {:<13} {:>7} ok in {:>6.2}s = {:>8.0}/s, {} errors{}",
                        scenario.label(),
                        concurrency,
                        round + 1,
                        rounds,
                        target.name,
                        measured.ok,
                        measured.wall.as_secs_f64(),
                        measured.rps(),
                        measured.errors,
                        measured
                            .cpu_per_request()
                            .map(|c| format!(", {:.1} µs CPU per request", micros(c)))
                            .unwrap_or_default(),
                    );
                    cell.paths[index].add(measured);
                }
            }
            cells.push(cell);
        }
    }
    for task in heartbeats {
        task.abort();
    }
    let mut histories = Vec::new();
    for target in targets.iter().filter(|t| t.records_history) {
        histories.push((target.name, history_settled(target).await?));
    }

    let mut setup = format!(
        "proxy benchmark: 1 mock node ({} tokens per answer, {}, {} slots), {} rounds per path (order reversed every other round), {} warm-up requests per run, {} CPUs",
        args.tokens,
        if args.node_ms > 0.0 {
            format!("first token after {} ms", args.node_ms)
        } else {
            "answered at once".to_owned()
        },
        args.slots,
        rounds,
        args.warmup,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if let Some(secs) = args.duration_secs {
        let _ = write!(setup, ", {secs}s per path and cell");
    }
    let _ = write!(
        setup,
        "\npaths: {}",
        targets
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if targets.iter().any(Target::is_router) {
        setup.push_str(if args.require_api_key {
            "\nclient API keys required by the routers: every router request carries one (other paths carry none)"
        } else {
            "\nclient API keys not required by the routers: requests carry none"
        });
    }
    if nginx.is_some() {
        setup.push_str("\nnginx: a reverse proxy with upstream keep-alive, HTTP/1.1 to the node, no buffering, no access log, one worker per CPU");
    }
    println!("\n{setup}\n");
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    println!("{}", results_table(&names, &mut cells));
    if targets.len() > 1 {
        println!("{}", overhead_table(&names, &mut cells));
    }
    drop(nginx);
    drop(data_dirs);

    let errors: usize = cells
        .iter()
        .flat_map(|c| c.paths.iter().map(|m| m.errors))
        .sum();
    let mut problems = Vec::new();
    for (name, (recorded, dropped)) in histories {
        println!("request history of {name}: {recorded} requests recorded, {dropped} dropped\n");
        if dropped > 0 {
            // Unrecorded requests cost the router less: its figures would flatter it.
            problems.push(format!(
                "the request history of {name} dropped {dropped} records (its write queue was full)"
            ));
        }
    }
    for cell in &cells {
        for (path, m) in names.iter().zip(&cell.paths) {
            if m.errors > 0 {
                problems.push(format!(
                    "{} c={} {path}: {} of {} requests failed, e.g. {}",
                    cell.scenario.label(),
                    cell.concurrency,
                    m.errors,
                    m.attempts(),
                    m.first_error.as_deref().unwrap_or("?")
                ));
            }
            // Every request must reach the node exactly once.
            if m.node_saw != m.attempts() as u64 {
                problems.push(format!(
                    "{} c={} {path}: {} requests sent but the node received {}",
                    cell.scenario.label(),
                    cell.concurrency,
                    m.attempts(),
                    m.node_saw
                ));
            }
        }
    }
    if !problems.is_empty() {
        let banner = "!".repeat(72);
        eprintln!("\n{banner}");
        for p in &problems {
            eprintln!("!! {p}");
        }
        eprintln!("{banner}");
        anyhow::bail!(
            "the run had {errors} failed requests and {} problems: the figures above are not trustworthy",
            problems.len()
        );
    }
    Ok(())
}

/// Starts the mock node on its own runtime; returns its URL and its counters.
async fn start_node(args: &ProxyArgs) -> anyhow::Result<(String, Arc<MockStats>)> {
    let config = MockConfig {
        name: "bench-node".to_owned(),
        models: vec![MODEL.to_owned()],
        loaded_models: vec![MODEL.to_owned()],
        parallel: args.slots,
        default_tokens: args.tokens,
        ttft: Duration::from_secs_f64(args.node_ms / 1000.0),
        tokens_per_sec: 0.0,
        record_capacity: 0,
        ..MockConfig::default()
    };
    config.validate()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn_server("mock-node", move || async move {
        match MockNode::start(config).await {
            Ok(node) => {
                let _ = tx.send(Ok((node.url(), Arc::clone(node.state().stats()))));
                std::future::pending::<()>().await;
                drop(node);
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    let (url, stats) = rx
        .await
        .context("the mock node thread died")?
        .context("could not start the mock node")?;
    Ok((url, stats))
}

/// The router's request history once its writer has caught up: requests
/// recorded and dropped.
async fn history_settled(router: &Target) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        let now = history_counts(router).await?;
        // Settled: nothing new for a moment, or no more patience.
        if last == Some(now) || Instant::now() >= deadline {
            return Ok(now);
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The router's request history now: requests recorded and dropped.
async fn history_counts(router: &Target) -> anyhow::Result<(u64, u64)> {
    let page: serde_json::Value = router
        .client
        .get(format!("{}/api/history?limit=1", router.base))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("could not read the router's request history")?
        .json()
        .await?;
    let field = |name: &str| page[name].as_u64().unwrap_or(0);
    Ok((field("total"), field("dropped")))
}

/// Registers the node with the router as its agent would, and keeps it
/// alive with heartbeats in the background.
pub(crate) async fn register_node(
    base: &str,
    port: u16,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let body = serde_json::json!({
        "machine_name": "bench-node",
        "ip_address": "127.0.0.1",
        "ollama_port": port,
        "models": [{"name": MODEL}],
    });
    let response = client
        .post(format!("{base}/api/agents/register"))
        .json(&body)
        .send()
        .await
        .context("could not reach the coordinator to register the node")?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "registering the node answered {status}: {}",
        snippet(text.as_bytes())
    );
    let answer: serde_json::Value =
        serde_json::from_str(&text).context("registration answer is not JSON")?;
    let registered = RegisteredNode::from_answer(&answer)?;
    let base = base.to_owned();
    let every = Duration::from_secs(
        answer["heartbeat_interval_secs"]
            .as_u64()
            .unwrap_or(10)
            .max(1),
    );
    Ok(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let sent = registered
                .heartbeat(&client, &base)
                .json(&serde_json::json!({"ollama_available": true}))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => eprintln!("warning: heartbeat answered {}", r.status()),
                Err(e) => eprintln!("warning: heartbeat failed: {}", error_chain(&e)),
            }
        }
    }))
}

/// Creates a client API key through the coordinator's management API (open
/// in the benchmark's coordinator); returns the key.
async fn create_api_key(base: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let response = client
        .post(format!("{base}/api/keys"))
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await
        .context("could not reach the coordinator to create an API key")?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "creating an API key answered {status}: {}",
        snippet(text.as_bytes())
    );
    let answer: serde_json::Value =
        serde_json::from_str(&text).context("the key's answer is not JSON")?;
    Ok(answer["key"]
        .as_str()
        .context("the key's answer has no key")?
        .to_owned())
}

/// One request of `scenario` must succeed; the router gets `patience` to
/// start routing to the node it was just told about.
async fn preflight(target: &Target, scenario: Scenario, patience: Duration) -> anyhow::Result<()> {
    let url = format!("{}{}", target.base, scenario.path());
    let deadline = Instant::now() + patience;
    loop {
        let failure = match one_request(&target.client, &url, scenario.body(), scenario).await {
            Ok(_) => return Ok(()),
            Err(failure) => failure,
        };
        if Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut message = format!(
            "POST {} on the {} path failed: {}",
            scenario.path(),
            target.name,
            failure.message
        );
        if target.is_router() && failure.status == Some(reqwest::StatusCode::NOT_FOUND) {
            message.push_str(
                "\nThe coordinator does not serve this inference route (yet?): the proxy is \
                 missing or does not know the registered node. Run with --direct-only to \
                 measure the node alone.",
            );
        }
        anyhow::bail!(message);
    }
}

/// Why a request counts as an error.
#[derive(Debug)]
struct Failure {
    status: Option<reqwest::StatusCode>,
    message: String,
}

/// Sends one request and reads the whole answer; returns the time to the
/// first body bytes and the time to the last.
async fn one_request(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    scenario: Scenario,
) -> Result<(Duration, Duration), Failure> {
    let transport = |e: reqwest::Error| Failure {
        status: None,
        message: error_chain(&e),
    };
    let sent = Instant::now();
    let mut response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(transport)?;
    let mut first = None;
    let mut answer = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if first.is_none() && !chunk.is_empty() {
            first = Some(sent.elapsed());
        }
        answer.extend_from_slice(&chunk);
    }
    let total = sent.elapsed();
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(Failure {
            status: Some(status),
            message: format!("HTTP {status}: {}", snippet(&answer)),
        });
    }
    if !contains(&answer, scenario.done_marker()) {
        return Err(Failure {
            status: Some(status),
            message: format!(
                "answer lacks {}: {}",
                String::from_utf8_lossy(scenario.done_marker()),
                snippet(&answer)
            ),
        });
    }
    Ok((first.unwrap_or(total), total))
}

/// Closed loop: `concurrency` tasks each send a request as soon as their
/// previous one is answered, until `stop`.
async fn run_load(
    target: &Target,
    scenario: Scenario,
    concurrency: usize,
    stop: Stop,
    node: &MockStats,
) -> Measured {
    let url: Arc<str> = format!("{}{}", target.base, scenario.path()).into();
    let body = scenario.body();
    let left = Arc::new(AtomicUsize::new(match stop {
        Stop::After(n) => n,
        Stop::Elapsed(_) => usize::MAX,
    }));
    let endpoint = match scenario {
        Scenario::OllamaChat | Scenario::OllamaStream => Endpoint::Chat,
        Scenario::OpenaiChat => Endpoint::OpenAiChat,
    };
    let node_before = node.requests(endpoint);
    let cpu_before = target.cpu.as_ref().and_then(CpuSource::used);
    let started = Instant::now();
    let deadline = match stop {
        Stop::Elapsed(d) => Some(started + d),
        Stop::After(_) => None,
    };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, body, left) = (
            target.client.clone(),
            Arc::clone(&url),
            body.clone(),
            Arc::clone(&left),
        );
        workers.spawn(async move {
            let mut m = Measured::default();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                // Take one request from the budget, unless it is spent.
                if left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_err()
                {
                    break;
                }
                match one_request(&client, &url, body.clone(), scenario).await {
                    Ok((first, total)) => {
                        m.ok += 1;
                        m.first_byte.record(first);
                        m.total.record(total);
                    }
                    Err(failure) => {
                        m.errors += 1;
                        m.first_error.get_or_insert(failure.message);
                    }
                }
            }
            m
        });
    }
    let mut all = Measured::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(m) => all.add(m),
            Err(e) => {
                all.errors += 1;
                all.first_error
                    .get_or_insert(format!("load task failed: {e}"));
            }
        }
    }
    all.wall = started.elapsed();
    all.node_saw = node.requests(endpoint) - node_before;
    // The writer's share of this run's cost comes after its last answer.
    target.settle().await;
    let cpu_after = target.cpu.as_ref().and_then(CpuSource::used);
    all.cpu = cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a));
    all
}

/// Two decimals, or three significant digits for small ratios.
fn fmt_ratio(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.3}")
    } else {
        format!("{r:.2}")
    }
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.3}", ms(d))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn fmt_cpu(m: &Measured) -> String {
    m.cpu_per_request()
        .map_or_else(|| "–".into(), |c| format!("{:.1}", micros(c)))
}

/// Per path: throughput, latency, time to first chunk (streams), the
/// proxy's CPU per request, errors.
fn results_table(names: &[&str], cells: &mut [Cell]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | conc | path | req/s | mean ms | p50 ms | p99 ms | first chunk p50 ms | first chunk p99 ms | proxy CPU µs/req | errors |\n");
    out.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for cell in cells.iter_mut() {
        let (scenario, concurrency) = (cell.scenario, cell.concurrency);
        for (path, m) in names.iter().zip(cell.paths.iter_mut()) {
            let (first50, first99) = if scenario.streams() {
                (
                    fmt_ms(m.first_byte.quantile(0.50)),
                    fmt_ms(m.first_byte.quantile(0.99)),
                )
            } else {
                ("–".into(), "–".into())
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                scenario.label(),
                concurrency,
                path,
                m.rps(),
                fmt_ms(m.total.mean()),
                fmt_ms(m.total.quantile(0.50)),
                fmt_ms(m.total.quantile(0.99)),
                first50,
                first99,
                fmt_cpu(m),
                if m.errors > 0 {
                    format!("**{}**", m.errors)
                } else {
                    "0".into()
                },
            );
        }
    }
    out
}

/// What each proxy adds over the direct path, and how it compares with
/// nginx when nginx ran.
fn overhead_table(names: &[&str], cells: &mut [Cell]) -> String {
    let nginx = names.iter().position(|n| *n == "nginx");
    let mut out = String::new();
    out.push_str("| scenario | conc | path | added p50 ms | added p99 ms | added first chunk p50 ms | req/s vs direct | req/s vs nginx | CPU/req vs nginx |\n");
    out.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for cell in cells.iter_mut() {
        let Some((direct, proxies)) = cell.paths.split_first_mut() else {
            continue;
        };
        let (nginx_rps, nginx_cpu) = nginx
            .and_then(|i| proxies.get(i - 1))
            .map_or((None, None), |n| (Some(n.rps()), n.cpu_per_request()));
        for (path, m) in names[1..].iter().zip(proxies.iter_mut()) {
            let first = if cell.scenario.streams() {
                format!(
                    "{:+.3}",
                    added_ms(
                        m.first_byte.quantile(0.50),
                        direct.first_byte.quantile(0.50)
                    )
                )
            } else {
                "–".into()
            };
            let vs = |r: Option<f64>| r.map_or_else(|| "–".into(), fmt_ratio);
            let vs_nginx_rps = nginx_rps.and_then(|n| throughput_ratio(m.rps(), n));
            let vs_nginx_cpu = match (m.cpu_per_request(), nginx_cpu) {
                (Some(c), Some(n)) if !n.is_zero() => Some(c.as_secs_f64() / n.as_secs_f64()),
                _ => None,
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:+.3} | {:+.3} | {} | {} | {} | {} |",
                cell.scenario.label(),
                cell.concurrency,
                path,
                added_ms(m.total.quantile(0.50), direct.total.quantile(0.50)),
                added_ms(m.total.quantile(0.99), direct.total.quantile(0.99)),
                first,
                vs(throughput_ratio(m.rps(), direct.rps())),
                vs(vs_nginx_rps),
                vs(vs_nginx_cpu),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::start_coordinator;

    fn parse(args: &[&str]) -> Result<ProxyArgs, clap::Error> {
        crate::harness::parse_args("proxy", args)
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.concurrency, vec![1, 64]);
        assert_eq!(
            args.scenarios,
            vec![
                Scenario::OllamaChat,
                Scenario::OpenaiChat,
                Scenario::OllamaStream
            ]
        );
        assert_eq!(args.requests, None);
        assert_eq!(default_requests(1), 3000);
        assert_eq!(default_requests(64), 20_000);
        assert!(!args.require_api_key);
        assert!(parse(&["--require-api-key"]).unwrap().require_api_key);
        assert!(parse(&["--require-api-key", "--direct-only"]).is_err());
        assert_eq!(args.router_history, vec![HistoryMode::On, HistoryMode::Off]);
        assert_eq!(
            parse(&["--router-history", "off"]).unwrap().router_history,
            vec![HistoryMode::Off]
        );
        assert!(!args.no_nginx && args.nginx.is_none());
        assert!(parse(&["--nginx", "/x/nginx", "--no-nginx"]).is_err());
    }

    #[test]
    fn concurrency_list_is_comma_separated_and_positive() {
        assert_eq!(
            parse(&["--concurrency", "1,8, 64"]).unwrap().concurrency,
            vec![1, 8, 64]
        );
        assert_eq!(
            parse(&["--concurrency", "16"]).unwrap().concurrency,
            vec![16]
        );
        assert!(parse(&["--concurrency", "1,0"]).is_err());
        assert!(parse(&["--concurrency", "1,x"]).is_err());
        assert!(parse(&["--concurrency", "-1"]).is_err());
    }

    #[test]
    fn requests_and_duration_exclude_each_other() {
        assert!(parse(&["--requests", "10", "--duration-secs", "1"]).is_err());
        assert!(parse(&["--duration-secs", "0"]).is_err());
        assert_eq!(
            parse(&["--duration-secs", "2.5"]).unwrap().duration_secs,
            Some(2.5)
        );
        assert!(parse(&["--rounds", "0"]).is_err());
        assert_eq!(parse(&[]).unwrap().node_ms, 0.0);
        assert_eq!(parse(&["--node-ms", "2.5"]).unwrap().node_ms, 2.5);
        assert!(parse(&["--node-ms", "-1"]).is_err());
        assert!(parse(&["--node-ms", "NaN"]).is_err());
    }

    #[test]
    fn split_adds_up() {
        assert_eq!(split(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(split(3, 4), vec![1, 1, 1, 0]);
        assert_eq!(split(20_000, 4).iter().sum::<usize>(), 20_000);
        assert_eq!(split(5, 0), vec![5]);
    }

    #[test]
    fn rounds_alternate_abba() {
        assert_eq!(round_order(0, 2), vec![0, 1]);
        assert_eq!(round_order(1, 2), vec![1, 0]);
        assert_eq!(round_order(2, 3), vec![0, 1, 2]);
        assert_eq!(round_order(3, 3), vec![2, 1, 0]);
    }

    #[test]
    fn ratio_and_added_latency() {
        assert_eq!(throughput_ratio(500.0, 1000.0), Some(0.5));
        assert_eq!(throughput_ratio(500.0, 0.0), None);
        assert_eq!(fmt_ratio(0.456), "0.46");
        assert_eq!(fmt_ratio(0.0345), "0.035");
        let added = added_ms(Duration::from_micros(350), Duration::from_micros(100));
        assert!((added - 0.25).abs() < 1e-9, "{added}");
        assert!(added_ms(Duration::from_micros(90), Duration::from_micros(100)) < 0.0);
    }

    #[test]
    fn bodies_and_markers() {
        let body: serde_json::Value =
            serde_json::from_slice(&Scenario::OllamaStream.body()).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["model"], "llama3.2");
        let body: serde_json::Value = serde_json::from_slice(&Scenario::OpenaiChat.body()).unwrap();
        assert_eq!(body["stream"], false);
        assert!(contains(
            br#"{"a":1,"done":true}"#,
            Scenario::OllamaChat.done_marker()
        ));
        assert!(!contains(
            br#"{"done":false}"#,
            Scenario::OllamaChat.done_marker()
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nginx_in_front_of_the_node_answers_every_request_and_its_cpu_is_read() {
        let binary = crate::nginx::find(None).expect(
            "nginx is needed for this test (apt-get install nginx-light; .ci/run installs it)",
        );
        let node = MockNode::start(MockConfig::default().with_parallel(16))
            .await
            .unwrap();
        let upstream = node.url().trim_start_matches("http://").to_owned();
        let nginx = crate::nginx::Nginx::start(&binary, &upstream, 8).unwrap();
        let target = Target::new("nginx", nginx.base().to_owned(), 8, None)
            .unwrap()
            .with_cpu(CpuSource::ProcessTree(nginx.pid()));
        preflight(&target, Scenario::OllamaChat, READY_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", nginx.log()));
        // More connections than nginx has workers: each worker accepts some.
        for scenario in [Scenario::OllamaChat, Scenario::OllamaStream] {
            let m = run_load(&target, scenario, 8, Stop::After(200), node.stats()).await;
            assert_eq!(
                (m.ok, m.errors, m.node_saw),
                (200, 0, 200),
                "{scenario:?}: {:?}\n{}",
                m.first_error,
                nginx.log()
            );
            let cpu = m
                .cpu_per_request()
                .expect("nginx's CPU time is read from /proc");
            assert!(!cpu.is_zero(), "nginx served 200 requests on no CPU time");
        }
    }

    #[tokio::test]
    async fn load_counts_answers_errors_and_what_the_node_saw() {
        let node = MockNode::start(MockConfig::default().with_parallel(8))
            .await
            .unwrap();
        let target = Target::new("direct", node.url(), 4, None).unwrap();
        for scenario in [
            Scenario::OllamaChat,
            Scenario::OpenaiChat,
            Scenario::OllamaStream,
        ] {
            let mut m = run_load(&target, scenario, 4, Stop::After(20), node.stats()).await;
            assert_eq!((m.ok, m.errors, m.node_saw), (20, 0, 20), "{scenario:?}");
            assert_eq!(m.total.len(), 20);
            assert!(m.first_byte.quantile(0.5) <= m.total.quantile(0.5));
        }
        node.control().set_fail_rate(1.0);
        let m = run_load(
            &target,
            Scenario::OllamaChat,
            2,
            Stop::After(6),
            node.stats(),
        )
        .await;
        assert_eq!((m.ok, m.errors, m.node_saw), (0, 6, 6));
        assert!(m.first_error.unwrap().contains("500"));
    }

    #[tokio::test]
    async fn every_request_through_the_router_is_found_in_its_history() {
        let node = MockNode::start(MockConfig::default().with_models([MODEL]))
            .await
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let (base, _) =
            start_coordinator(Config::with_data_dir(data.path()), std::future::pending()).unwrap();
        let heartbeats = register_node(&base, node.addr().port()).await.unwrap();
        let router = Target::new("router", base.to_owned(), 4, None).unwrap();
        preflight(&router, Scenario::OllamaChat, READY_TIMEOUT)
            .await
            .unwrap();
        // Polls until the history holds at least `n` requests.
        let at_least = |n: u64| {
            let router = &router;
            async move {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let seen = history_settled(router).await.unwrap();
                    if seen.0 + seen.1 >= n || Instant::now() >= deadline {
                        return seen;
                    }
                }
            }
        };
        // The preflight's requests (it may have tried before the node was routable).
        let (before, _) = at_least(1).await;
        let m = run_load(
            &router,
            Scenario::OllamaChat,
            4,
            Stop::After(30),
            node.stats(),
        )
        .await;
        assert_eq!((m.ok, m.errors), (30, 0));
        assert_eq!(at_least(before + 30).await, (before + 30, 0));
        heartbeats.abort();
    }

    #[tokio::test]
    async fn with_keys_required_the_load_succeeds_only_with_the_key() {
        let node = MockNode::start(MockConfig::default().with_models([MODEL]))
            .await
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::with_data_dir(data.path());
        config.access.require_api_key = true;
        let (base, _) = start_coordinator(config, std::future::pending()).unwrap();
        let heartbeats = register_node(&base, node.addr().port()).await.unwrap();
        let key = create_api_key(&base).await.unwrap();
        let keyless = Target::new("router", base.to_owned(), 1, None).unwrap();
        let router = Target::new("router", base.to_owned(), 4, Some(&key)).unwrap();
        preflight(&router, Scenario::OllamaChat, READY_TIMEOUT)
            .await
            .unwrap();
        for scenario in [
            Scenario::OllamaChat,
            Scenario::OpenaiChat,
            Scenario::OllamaStream,
        ] {
            let m = run_load(&router, scenario, 4, Stop::After(20), node.stats()).await;
            assert_eq!((m.ok, m.errors, m.node_saw), (20, 0, 20), "{scenario:?}");
            let m = run_load(&keyless, scenario, 1, Stop::After(2), node.stats()).await;
            assert_eq!((m.ok, m.errors, m.node_saw), (0, 2, 0), "{scenario:?}");
            assert!(m.first_error.unwrap().contains("401"), "{scenario:?}");
        }
        heartbeats.abort();
    }

    #[tokio::test]
    async fn a_router_without_the_route_fails_with_a_clear_message() {
        let node = MockNode::start(MockConfig::default()).await.unwrap();
        // The mock answers 404 to unknown paths, like a coordinator without a proxy.
        let router = Target::new("router", format!("{}/nowhere", node.url()), 1, None).unwrap();
        let err = preflight(&router, Scenario::OllamaChat, Duration::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("404"), "{err}");
        assert!(err.contains("--direct-only"), "{err}");
    }
}
