//! `routing`: how well each load-balancing policy serves a mixed fleet.
//!
//! Six mock inference nodes on loopback differ in generation speed (20 to
//! 160 tokens/s), slots (1 to 4) and the models they hold (two of three
//! each); each keeps only one model in memory, and loading another stalls
//! the whole node for a few seconds. A coordinator with the policy under
//! test routes to them; the bench registers the nodes and heartbeats for
//! them every second (models in memory from the node's `/api/ps`, CPU load
//! from its busy slots), as their agents would.
//!
//! The load is open loop: Poisson arrivals from a seeded generator, a
//! skewed model mix and varied answer lengths, at a fraction (70% by
//! default) of what the fleet could sustain if every node only ever served
//! the model it has in memory. Every policy gets a fresh coordinator, fresh
//! nodes in the same start state and the very same arrival sequence.
//!
//! All durations (load time, time to first token, token interval, arrival
//! gaps, the window, the timeout, heartbeats) are multiplied by
//! `--time-scale`, so figures are wall-clock and shrink with it; the ratios
//! between policies do not.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::ValueEnum;
use llm_router_coordinator::config::{BalancerMode, Config, PlacementMode};
use llm_router_mock_node::{Endpoint, MockConfig, MockNode, MockState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::harness::{
    RegisteredNode, contains, error_chain, snippet, spawn_server, start_coordinator,
};
use crate::stats::Latencies;

/// The models of the fleet, A, B and C.
pub const MODELS: [&str; 3] = ["model-a", "model-b", "model-c"];
/// Share of the requests for each of [`MODELS`].
pub const MIX: [f64; 3] = [0.5, 0.3, 0.2];
/// Answer lengths (`options.num_predict`), drawn with equal chance.
pub const LENGTHS: [u64; 3] = [16, 64, 256];
/// How long the coordinator may take to route to the nodes just registered.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat period before scaling.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Placement round period before scaling.
const PLACEMENT_EVERY: Duration = Duration::from_secs(5);
/// Most requests one run may send.
const MAX_ARRIVALS: usize = 50_000;
/// How long a stopping fleet or coordinator gets before it is abandoned.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One simulated machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSpec {
    pub name: &'static str,
    /// Generation speed of one request, before scaling.
    pub tokens_per_sec: f64,
    /// Requests generated at once.
    pub slots: usize,
    /// Time to first token once a slot is free, before scaling.
    pub ttft: Duration,
    /// Indices into [`MODELS`] of the models held; the first is in memory at start.
    pub models: &'static [usize],
}

const fn node(
    name: &'static str,
    tokens_per_sec: f64,
    slots: usize,
    ttft_ms: u64,
    models: &'static [usize],
) -> NodeSpec {
    NodeSpec {
        name,
        tokens_per_sec,
        slots,
        ttft: Duration::from_millis(ttft_ms),
        models,
    }
}

/// The fleet: speeds spread 8×, slots 4 to 1, every model on four nodes.
/// The start state (first model of each) gives A to fast-1, B to fast-2 and
/// C to the two mid nodes: enough for the mix at 70% if nothing moves.
pub const FLEET: [NodeSpec; 6] = [
    node("fast-1", 160.0, 4, 40, &[0, 1]),
    node("fast-2", 120.0, 4, 50, &[1, 2]),
    node("mid-1", 80.0, 2, 80, &[2, 0]),
    node("mid-2", 50.0, 2, 120, &[2, 1]),
    node("slow-1", 30.0, 1, 200, &[1, 0]),
    node("slow-2", 20.0, 1, 300, &[0, 2]),
];

#[derive(Debug, clap::Args)]
pub struct RoutingArgs {
    /// Policies to compare, comma separated, each with a fresh coordinator and fleet.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "round_robin,least_connections,metrics,latency,auto"
    )]
    pub policies: Vec<BalancerMode>,
    /// Multiplies every duration (load time, time to first token, token
    /// interval, arrival gaps, window, timeout, heartbeats); 1 is real time.
    #[arg(long, default_value_t = 0.5, value_parser = parse_scale)]
    pub time_scale: f64,
    /// Arrivals come during this many seconds (before scaling).
    #[arg(long, default_value_t = 90.0, value_parser = parse_positive)]
    pub duration_secs: f64,
    /// Offered load as a fraction of the fleet's estimated capacity.
    #[arg(long, default_value_t = 0.7, value_parser = parse_load)]
    pub load: f64,
    /// A request unanswered after this many seconds (before scaling) is
    /// cut and counted as timed out, with this as its latency.
    #[arg(long, default_value_t = 90.0, value_parser = parse_positive)]
    pub timeout_secs: f64,
    /// Time a node stalls to load a model (before scaling).
    #[arg(long, default_value_t = 2.5, value_parser = parse_non_negative)]
    pub load_time_secs: f64,
    /// Seed of the arrival sequence.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `POST /api/show` requests per model through the router before
    /// measuring (they warm connections and load no model).
    #[arg(long, default_value_t = 12)]
    pub warmup: usize,
    /// Also run a reference without the router: the bench sends each
    /// request straight to the node that has its model in memory at start,
    /// the one with the fewest requests in flight per unit of capacity. It
    /// never loads a model: a target for the policies, not a policy.
    #[arg(long)]
    pub reference: bool,
    /// The coordinator's fleet-level model placement (`--placement`); its
    /// rounds run every 5 s before scaling.
    #[arg(long, value_enum, default_value = "plan")]
    pub placement: PlacementMode,
}

fn parse_f64(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .map_err(|e| format!("{s:?} is not a number: {e}"))
        .and_then(|v| {
            if v.is_finite() {
                Ok(v)
            } else {
                Err("must be finite".into())
            }
        })
}

fn parse_positive(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err("must be above 0".into())
    }
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err("must not be negative".into())
    }
}

fn parse_scale(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if (0.01..=10.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0.01 and 10".into())
    }
}

fn parse_load(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if v > 0.0 && v <= 2.0 {
        Ok(v)
    } else {
        Err("must be above 0 and at most 2".into())
    }
}

/// Mean of equally likely answer lengths.
pub fn mean_tokens(lengths: &[u64]) -> f64 {
    if lengths.is_empty() {
        return 0.0;
    }
    lengths.iter().sum::<u64>() as f64 / lengths.len() as f64
}

/// Requests per second one node completes when always busy with the model it
/// has in memory: slots ÷ mean service time (time to first token + tokens ÷ speed).
pub fn node_capacity(spec: &NodeSpec, mean_tokens: f64) -> f64 {
    let service = spec.ttft.as_secs_f64() + mean_tokens / spec.tokens_per_sec;
    spec.slots as f64 / service
}

/// Requests per second the whole fleet completes, the sum over nodes (no
/// model loads, no idle slot).
pub fn fleet_capacity(fleet: &[NodeSpec], mean_tokens: f64) -> f64 {
    fleet.iter().map(|n| node_capacity(n, mean_tokens)).sum()
}

/// One request of the workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// When it is sent, from the start of the run, before scaling.
    pub at: Duration,
    /// Index into [`MODELS`].
    pub model: usize,
    /// `options.num_predict`.
    pub tokens: u64,
}

/// Poisson arrivals at `rate` per second during `window`: exponential gaps,
/// the model drawn by `mix` weights, the length uniformly from `lengths`.
/// The same seed gives the same sequence. At most `max` arrivals.
pub fn arrivals(
    seed: u64,
    rate: f64,
    window: Duration,
    mix: &[f64],
    lengths: &[u64],
    max: usize,
) -> Vec<Arrival> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total_weight: f64 = mix.iter().sum();
    let mut out = Vec::new();
    let usable = rate > 0.0 && total_weight > 0.0;
    if !usable || mix.is_empty() || lengths.is_empty() {
        return out;
    }
    let end = window.as_secs_f64();
    let mut t = 0.0;
    while out.len() < max {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u: f64 = rng.random();
        t += -(1.0 - u).ln() / rate;
        if t >= end {
            break;
        }
        let mut pick = rng.random::<f64>() * total_weight;
        let mut model = mix.len() - 1;
        for (i, w) in mix.iter().enumerate() {
            if pick < *w {
                model = i;
                break;
            }
            pick -= w;
        }
        let tokens = lengths[rng.random_range(0..lengths.len())];
        out.push(Arrival {
            at: Duration::from_secs_f64(t),
            model,
            tokens,
        });
    }
    out
}

/// `/api/chat` body of one arrival (streamed).
fn chat_body(arrival: &Arrival) -> Bytes {
    let body = serde_json::json!({
        "model": MODELS[arrival.model],
        "messages": [{"role": "user", "content": "route me"}],
        "stream": true,
        "options": {"num_predict": arrival.tokens},
    });
    Bytes::from(body.to_string())
}

/// The heartbeat an agent would send: load from busy slots (CPU), the
/// share of model memory in use, the models in memory (when `/api/ps`
/// answered), the models held and the slots (`max_parallel`).
pub fn heartbeat_body(
    held: &[&str],
    loaded: Option<&[String]>,
    busy: u64,
    slots: usize,
    max_loaded: usize,
) -> serde_json::Value {
    let cpu = (100.0 * busy as f64 / slots.max(1) as f64).min(100.0);
    let in_memory = loaded.map_or(0, <[String]>::len);
    let memory = 20.0 + 60.0 * (in_memory as f64 / max_loaded.max(1) as f64).min(1.0);
    let mut body = serde_json::json!({
        "metrics": {"cpu_percent": cpu, "memory_percent": memory},
        "models": held.iter().map(|m| serde_json::json!({"name": m})).collect::<Vec<_>>(),
        "ollama_available": true,
        "max_parallel": slots,
    });
    if let Some(loaded) = loaded {
        body["loaded_models"] = loaded
            .iter()
            .map(|m| serde_json::json!({"name": m}))
            .collect();
    }
    body
}

/// Names in an `/api/ps` answer.
fn ps_names(answer: &serde_json::Value) -> Option<Vec<String>> {
    answer["models"].as_array().map(|models| {
        models
            .iter()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect()
    })
}

fn policy_name(mode: BalancerMode) -> String {
    mode.to_possible_value()
        .map_or_else(|| format!("{mode:?}"), |v| v.get_name().to_owned())
}

/// What one node did during the measured run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// Chat requests the node received (retries included).
    pub requests: u64,
    pub loads: u64,
}

/// What one policy did.
#[derive(Debug)]
pub struct PolicyRun {
    pub policy: String,
    pub sent: usize,
    /// Latency to the last byte; timed-out requests count with the timeout.
    pub total: Latencies,
    /// Time to the first chunk; timed-out requests without one count with the timeout.
    pub first: Latencies,
    pub ok: usize,
    pub errors: usize,
    pub timeouts: usize,
    pub first_error: Option<String>,
    /// From the first arrival to the last answer.
    pub wall: Duration,
    pub nodes: Vec<NodeCounts>,
}

impl PolicyRun {
    fn new(policy: String, nodes: usize) -> Self {
        Self {
            policy,
            sent: 0,
            total: Latencies::default(),
            first: Latencies::default(),
            ok: 0,
            errors: 0,
            timeouts: 0,
            first_error: None,
            wall: Duration::ZERO,
            nodes: vec![NodeCounts::default(); nodes],
        }
    }

    pub fn throughput(&self) -> f64 {
        if self.wall.is_zero() {
            0.0
        } else {
            self.ok as f64 / self.wall.as_secs_f64()
        }
    }
}

/// How one request ended.
#[derive(Debug)]
enum Outcome {
    Ok { first: Duration, total: Duration },
    Failed(String),
    TimedOut { first: Option<Duration> },
}

pub async fn run(args: RoutingArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.policies.is_empty(), "no policy given");
    let scale = args.time_scale;
    let mean = mean_tokens(&LENGTHS);
    let capacity = fleet_capacity(&FLEET, mean);
    let rate = capacity * args.load;
    let window = Duration::from_secs_f64(args.duration_secs);
    anyhow::ensure!(
        rate * args.duration_secs <= MAX_ARRIVALS as f64 * 0.9,
        "{:.0} requests expected; at most {MAX_ARRIVALS} per run: shorten --duration-secs or lower --load",
        rate * args.duration_secs
    );
    let workload = arrivals(args.seed, rate, window, &MIX, &LENGTHS, MAX_ARRIVALS);
    anyhow::ensure!(!workload.is_empty(), "the workload has no request");
    let timeout = Duration::from_secs_f64(args.timeout_secs * scale);

    println!("{}", setup_report(&args, &workload));

    let mut plans: Vec<Option<BalancerMode>> = args.policies.iter().copied().map(Some).collect();
    if args.reference {
        plans.push(None);
    }
    let all_started = std::time::Instant::now();
    let mut runs = Vec::new();
    for plan in plans {
        let started = std::time::Instant::now();
        let run = run_policy(plan, &args, &workload, timeout).await?;
        eprintln!(
            "{}: {} ok, {} errors, {} timed out; took {:.0}s",
            run.policy,
            run.ok,
            run.errors,
            run.timeouts,
            started.elapsed().as_secs_f64()
        );
        runs.push(run);
    }

    println!(
        "\n## Results (wall clock at time scale {scale}; timed-out requests count with the {:.1}s timeout)\n",
        timeout.as_secs_f64()
    );
    println!("{}", results_table(&mut runs));
    println!("Requests / model loads per node during the run (requests include retries):\n");
    println!("{}", nodes_table(&runs));
    for run in &runs {
        if let Some(e) = &run.first_error {
            println!("{}: first error: {e}", run.policy);
        }
    }
    if let Some(text) = ratios(&mut runs) {
        println!("{text}");
    }
    println!(
        "{} runs in {:.0}s.",
        runs.len(),
        all_started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The fleet, the capacity estimate and the offered load.
fn setup_report(args: &RoutingArgs, workload: &[Arrival]) -> String {
    let mean = mean_tokens(&LENGTHS);
    let capacity = fleet_capacity(&FLEET, mean);
    let rate = capacity * args.load;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "routing benchmark: {} nodes, 1 model in memory each, {:.1}s model load stalling the node; coordinator placement {}; time scale {} (every duration × {}), {} CPUs\n",
        FLEET.len(),
        args.load_time_secs,
        match args.placement {
            PlacementMode::Plan => "plan",
            PlacementMode::Off => "off",
        },
        args.time_scale,
        args.time_scale,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    out.push_str(
        "Speeds, times and rates are nominal (time scale 1); the nodes and the arrivals run 1/scale times as fast.\n\n",
    );
    out.push_str("| node | tokens/s | slots | first token ms | models (in memory at start first) | capacity req/s |\n");
    out.push_str("|---|---:|---:|---:|---|---:|\n");
    for spec in &FLEET {
        let models: Vec<&str> = spec.models.iter().map(|&m| model_letter(m)).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.2} |",
            spec.name,
            spec.tokens_per_sec,
            spec.slots,
            spec.ttft.as_millis(),
            models.join(", "),
            node_capacity(spec, mean),
        );
    }
    let _ = writeln!(
        out,
        "\nCapacity estimate: Σ slots ÷ (first token + {mean:.0} mean tokens ÷ speed) = {capacity:.2} req/s (no model loads)."
    );
    let per_model: Vec<String> = MODELS
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let capacity_of = |keep: &dyn Fn(&NodeSpec) -> bool| -> f64 {
                FLEET
                    .iter()
                    .filter(|n| keep(n))
                    .map(|n| node_capacity(n, mean))
                    .sum()
            };
            format!(
                "{} {:.0}% = {:.2} req/s (capacity of the nodes holding it {:.2}, of those with it in memory at start {:.2})",
                model_letter(i),
                MIX[i] * 100.0,
                rate * MIX[i],
                capacity_of(&|n| n.models.contains(&i)),
                capacity_of(&|n| n.models[0] == i),
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "Offered load: {:.0}% of capacity = {rate:.2} req/s ({:.2} req/s wall clock), Poisson, seed {}; {}.",
        args.load * 100.0,
        rate / args.time_scale,
        args.seed,
        per_model.join(", "),
    );
    let _ = writeln!(
        out,
        "Answers of {:?} tokens, equally likely; {} requests over {:.0}s ({:.1}s wall clock) per policy, each cut after {:.0}s ({:.1}s wall clock).",
        LENGTHS,
        workload.len(),
        args.duration_secs,
        args.duration_secs * args.time_scale,
        args.timeout_secs,
        args.timeout_secs * args.time_scale,
    );
    out
}

fn model_letter(i: usize) -> &'static str {
    ["A", "B", "C"].get(i).copied().unwrap_or("?")
}

/// Name of the reference run in the report.
pub const REFERENCE: &str = "reference (no router)";

/// Fresh nodes and a coordinator with `mode` (or the bench-side reference
/// when `None`), the workload, and what it gave.
async fn run_policy(
    mode: Option<BalancerMode>,
    args: &RoutingArgs,
    workload: &[Arrival],
    timeout: Duration,
) -> anyhow::Result<PolicyRun> {
    let scale = args.time_scale;
    let policy = mode.map_or_else(|| REFERENCE.to_owned(), policy_name);
    eprintln!("{policy}: starting a fresh fleet");
    let fleet = Fleet::start(&FLEET, scale, Duration::from_secs_f64(args.load_time_secs))?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()?;
    let Some(mode) = mode else {
        let route = Route::Reference(
            fleet
                .nodes
                .iter()
                .map(|n| WarmNode {
                    url: format!("{}/api/chat", n.url).into(),
                    model: n.spec.models[0],
                    capacity: node_capacity(n.spec, mean_tokens(&LENGTHS)),
                    in_flight: Arc::default(),
                })
                .collect(),
        );
        let run = measure(&policy, &client, &route, &fleet, workload, scale, timeout).await;
        fleet.stop();
        return Ok(run);
    };
    let data_dir = tempfile::tempdir()?;
    let heartbeat_every = HEARTBEAT_EVERY
        .mul_f64(scale)
        .max(Duration::from_millis(100));
    let placement_interval = PLACEMENT_EVERY.mul_f64(scale);
    let coordinator = Coordinator::start(
        data_dir.path(),
        mode,
        heartbeat_every,
        (args.placement, placement_interval),
    )?;

    let mut heartbeats = Vec::new();
    let result = async {
        for node in &fleet.nodes {
            let registered = register(&client, &coordinator.base, node).await?;
            heartbeats.push(spawn_heartbeats(
                client.clone(),
                &coordinator.base,
                registered,
                node,
                heartbeat_every,
            ));
        }
        for model in MODELS {
            ready(&client, &coordinator.base, model).await?;
        }
        for _ in 0..args.warmup {
            for model in MODELS {
                // Best effort: a failure here shows up in the run itself.
                let _ = show(&client, &coordinator.base, model).await;
            }
        }
        // Let the coordinator hear from every node once more.
        tokio::time::sleep(heartbeat_every * 2).await;
        let route = Route::Router(format!("{}/api/chat", coordinator.base).into());
        anyhow::Ok(measure(&policy, &client, &route, &fleet, workload, scale, timeout).await)
    }
    .await;
    for task in heartbeats {
        task.abort();
    }
    coordinator.stop();
    fleet.stop();
    result
}

/// [`drive`], with what each node saw meanwhile.
async fn measure(
    policy: &str,
    client: &reqwest::Client,
    route: &Route,
    fleet: &Fleet,
    workload: &[Arrival],
    scale: f64,
    timeout: Duration,
) -> PolicyRun {
    let before: Vec<NodeCounts> = fleet.nodes.iter().map(FleetNode::counts).collect();
    let mut run = drive(policy, client, route, workload, scale, timeout).await;
    for ((slot, node), before) in run.nodes.iter_mut().zip(&fleet.nodes).zip(before) {
        let after = node.counts();
        *slot = NodeCounts {
            requests: after.requests - before.requests,
            loads: after.loads - before.loads,
        };
    }
    run
}

/// Where requests go.
enum Route {
    /// `/api/chat` of the coordinator.
    Router(Arc<str>),
    /// Straight to the nodes, chosen by the bench (see [`reference_pick`]).
    Reference(Vec<WarmNode>),
}

/// A node as the reference sees it: the model it has in memory at start.
struct WarmNode {
    url: Arc<str>,
    model: usize,
    capacity: f64,
    in_flight: Arc<AtomicUsize>,
}

/// Among `(warm model, capacity, requests in flight)` of each node, the one
/// with `model` in memory that would finish one more request soonest:
/// fewest requests in flight per unit of capacity.
pub fn reference_pick(nodes: &[(usize, f64, usize)], model: usize) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, (warm, capacity, _))| *warm == model && *capacity > 0.0)
        .min_by(|(_, a), (_, b)| {
            let score = |(_, capacity, in_flight): &(usize, f64, usize)| {
                (*in_flight as f64 + 1.0) / capacity
            };
            score(a).total_cmp(&score(b))
        })
        .map(|(i, _)| i)
}

impl Route {
    /// The URL for a request of `model`, and the in-flight counter to hold meanwhile.
    fn pick(&self, model: usize) -> (Arc<str>, Option<InFlight>) {
        match self {
            Route::Router(url) => (Arc::clone(url), None),
            Route::Reference(nodes) => {
                let view: Vec<(usize, f64, usize)> = nodes
                    .iter()
                    .map(|n| (n.model, n.capacity, n.in_flight.load(Ordering::Relaxed)))
                    .collect();
                // Every model is warm somewhere at start (checked by a test).
                let i = reference_pick(&view, model).unwrap_or(0);
                let node = &nodes[i];
                node.in_flight.fetch_add(1, Ordering::Relaxed);
                (
                    Arc::clone(&node.url),
                    Some(InFlight(Arc::clone(&node.in_flight))),
                )
            }
        }
    }
}

/// Counts one request in flight until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends the workload open loop and gathers the outcomes.
async fn drive(
    policy: &str,
    client: &reqwest::Client,
    route: &Route,
    workload: &[Arrival],
    scale: f64,
    timeout: Duration,
) -> PolicyRun {
    let done = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let progress = {
        let (done, sent, policy) = (Arc::clone(&done), Arc::clone(&sent), policy.to_owned());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(10));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let (s, d) = (sent.load(Ordering::Relaxed), done.load(Ordering::Relaxed));
                eprintln!(
                    "{policy}: {:>4.0}s sent {s}, answered {d}, in flight {}",
                    start.elapsed().as_secs_f64(),
                    s - d.min(s)
                );
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut run = PolicyRun::new(policy.to_owned(), FLEET.len());
    let record = |run: &mut PolicyRun, outcome: Outcome| match outcome {
        Outcome::Ok { first, total } => {
            run.ok += 1;
            run.first.record(first);
            run.total.record(total);
        }
        Outcome::Failed(message) => {
            run.errors += 1;
            run.first_error.get_or_insert(message);
        }
        Outcome::TimedOut { first } => {
            run.timeouts += 1;
            run.first.record(first.unwrap_or(timeout));
            run.total.record(timeout);
        }
    };
    for arrival in workload {
        tokio::time::sleep_until(start + arrival.at.mul_f64(scale)).await;
        let (client, done) = (client.clone(), Arc::clone(&done));
        let (url, in_flight) = route.pick(arrival.model);
        let body = chat_body(arrival);
        tasks.spawn(async move {
            let outcome = one_request(&client, &url, body, timeout).await;
            drop(in_flight);
            done.fetch_add(1, Ordering::Relaxed);
            outcome
        });
        sent.fetch_add(1, Ordering::Relaxed);
        run.sent += 1;
        while let Some(joined) = tasks.try_join_next() {
            record(&mut run, joined.unwrap_or_else(task_failed));
        }
    }
    while let Some(joined) = tasks.join_next().await {
        record(&mut run, joined.unwrap_or_else(task_failed));
    }
    run.wall = start.elapsed();
    progress.abort();
    run
}

fn task_failed(e: tokio::task::JoinError) -> Outcome {
    Outcome::Failed(format!("request task failed: {e}"))
}

/// One streamed chat request, cut after `timeout`.
async fn one_request(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    timeout: Duration,
) -> Outcome {
    let sent = Instant::now();
    let mut first = None;
    let exchange = async {
        let mut response = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
            if first.is_none() && !chunk.is_empty() {
                first = Some(sent.elapsed());
            }
            answer.extend_from_slice(&chunk);
        }
        if status != reqwest::StatusCode::OK {
            return Err(format!("HTTP {status}: {}", snippet(&answer)));
        }
        if !contains(&answer, br#""done":true"#) {
            return Err(format!("stream ended early: {}", snippet(&answer)));
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(())) => {
            let total = sent.elapsed();
            Outcome::Ok {
                first: first.unwrap_or(total),
                total,
            }
        }
        Ok(Err(message)) => Outcome::Failed(message),
        Err(_) => Outcome::TimedOut { first },
    }
}

/// Registers a node with its models, as its agent would.
async fn register(
    client: &reqwest::Client,
    base: &str,
    node: &FleetNode,
) -> anyhow::Result<RegisteredNode> {
    let body = serde_json::json!({
        "machine_name": node.spec.name,
        "ip_address": "127.0.0.1",
        "ollama_port": node.port,
        "models": node.held().iter().map(|m| serde_json::json!({"name": m})).collect::<Vec<_>>(),
        "loaded_models": [{"name": MODELS[node.spec.models[0]]}],
        "max_parallel": node.spec.slots,
    });
    let response = client
        .post(format!("{base}/api/agents/register"))
        .json(&body)
        .send()
        .await
        .context("could not reach the coordinator to register a node")?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "registering {} answered {status}: {}",
        node.spec.name,
        snippet(text.as_bytes())
    );
    let answer: serde_json::Value =
        serde_json::from_str(&text).context("registration answer is not JSON")?;
    RegisteredNode::from_answer(&answer)
}

/// Every `every`: the node's `/api/ps` and busy slots, posted as a heartbeat.
fn spawn_heartbeats(
    client: reqwest::Client,
    base: &str,
    registered: RegisteredNode,
    node: &FleetNode,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let base = base.to_owned();
    let ps = format!("{}/api/ps", node.url);
    let state = Arc::clone(&node.state);
    let slots = node.spec.slots;
    let held = node.held();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            ticks.tick().await;
            let loaded = match client.get(&ps).send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| ps_names(&v)),
                _ => None,
            };
            let stats = state.stats();
            // A model load holds the whole node.
            let busy = if stats.loading() > 0 {
                slots as u64
            } else {
                stats.active()
            };
            let body = heartbeat_body(&held, loaded.as_deref(), busy, slots, 1);
            let sent = registered
                .heartbeat(&client, &base)
                .json(&body)
                .send()
                .await;
            let problem = match sent {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("answered {}", r.status())),
                Err(e) => Some(error_chain(&e)),
            };
            if let Some(problem) = problem
                && !warned
            {
                warned = true;
                eprintln!("warning: heartbeat of {} {problem}", state.name());
            }
        }
    })
}

/// Waits until the router routes `model` (`POST /api/show` answers 200).
async fn ready(client: &reqwest::Client, base: &str, model: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let failure = match show(client, base, model).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            anyhow::bail!("the router does not route {model} after registration: {failure}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /api/show` through the router: routed to a node, loads nothing.
async fn show(client: &reqwest::Client, base: &str, model: &str) -> Result<(), String> {
    let response = client
        .post(format!("{base}/api/show"))
        .json(&serde_json::json!({"model": model}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}: {}", snippet(&body)))
    }
}

/// One running mock node.
struct FleetNode {
    spec: &'static NodeSpec,
    url: String,
    port: u16,
    state: Arc<MockState>,
}

impl FleetNode {
    fn held(&self) -> Vec<&'static str> {
        self.spec.models.iter().map(|&m| MODELS[m]).collect()
    }

    fn counts(&self) -> NodeCounts {
        let stats = self.state.stats();
        NodeCounts {
            requests: stats.requests(Endpoint::Chat),
            loads: stats.model_loads(),
        }
    }
}

/// The mock nodes, on a runtime of their own on another thread.
struct Fleet {
    nodes: Vec<FleetNode>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// A mock node configuration for `spec`, durations scaled.
fn mock_config(spec: &NodeSpec, scale: f64, load_time: Duration) -> MockConfig {
    MockConfig {
        models: spec.models.iter().map(|&m| MODELS[m].to_owned()).collect(),
        loaded_models: vec![MODELS[spec.models[0]].to_owned()],
        ttft: spec.ttft.mul_f64(scale),
        tokens_per_sec: spec.tokens_per_sec / scale,
        parallel: spec.slots,
        max_loaded_models: 1,
        load_time: load_time.mul_f64(scale),
        default_tokens: 64,
        record_capacity: 0,
        ..MockConfig::named(spec.name)
    }
}

impl Fleet {
    fn start(specs: &'static [NodeSpec], scale: f64, load_time: Duration) -> anyhow::Result<Self> {
        let configs: Vec<MockConfig> = specs
            .iter()
            .map(|s| mock_config(s, scale, load_time))
            .collect();
        for config in &configs {
            config.validate()?;
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = spawn_server("mock-fleet", move || async move {
            let mut nodes = Vec::new();
            for config in configs {
                match MockNode::start(config).await {
                    Ok(node) => nodes.push(node),
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
            }
            let started = nodes
                .iter()
                .map(|n| (n.url(), n.addr().port(), Arc::clone(n.state())))
                .collect::<Vec<_>>();
            let _ = ready_tx.send(Ok(started));
            let _ = stop_rx.await;
            futures::future::join_all(nodes.into_iter().map(MockNode::stop)).await;
        })?;
        let started = ready_rx
            .recv()
            .context("the mock fleet thread died")?
            .context("could not start a mock node")?;
        let nodes = specs
            .iter()
            .zip(started)
            .map(|(spec, (url, port, state))| FleetNode {
                spec,
                url,
                port,
                state,
            })
            .collect();
        Ok(Self {
            nodes,
            stop,
            thread,
        })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        join_within(self.thread, STOP_GRACE);
    }
}

/// A coordinator on a runtime of its own on another thread.
struct Coordinator {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Coordinator {
    fn start(
        data_dir: &std::path::Path,
        mode: BalancerMode,
        heartbeat_every: Duration,
        (placement, placement_interval): (PlacementMode, Duration),
    ) -> anyhow::Result<Self> {
        let mut config = Config::with_data_dir(data_dir);
        config.proxy.balancer = mode;
        config.proxy.placement = placement;
        config.proxy.placement_interval = placement_interval;
        config.heartbeat_interval = heartbeat_every.max(Duration::from_secs(1));
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        let (base, thread) = start_coordinator(config, shutdown)?;
        Ok(Self { base, stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        join_within(self.thread, STOP_GRACE);
    }
}

/// Joins `thread` if it ends within `grace`; else leaves it behind.
fn join_within(thread: std::thread::JoinHandle<()>, grace: Duration) {
    let deadline = std::time::Instant::now() + grace;
    while !thread.is_finished() {
        if std::time::Instant::now() >= deadline {
            eprintln!("warning: a server thread did not stop in time; left running");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = thread.join();
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Latency, first token, throughput and failures per policy.
pub fn results_table(runs: &mut [PolicyRun]) -> String {
    let mut out = String::new();
    out.push_str("| policy | sent | ok | errors | timed out | mean s | p50 s | p99 s | first token mean s | first token p50 s | first token p99 s | completed/s |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for run in runs.iter_mut() {
        let flag = |n: usize| {
            if n > 0 {
                format!("**{n}**")
            } else {
                "0".to_owned()
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
            run.policy,
            run.sent,
            run.ok,
            flag(run.errors),
            flag(run.timeouts),
            secs(run.total.mean()),
            secs(run.total.quantile(0.50)),
            secs(run.total.quantile(0.99)),
            secs(run.first.mean()),
            secs(run.first.quantile(0.50)),
            secs(run.first.quantile(0.99)),
            run.throughput(),
        );
    }
    out
}

/// `requests / loads` per node and policy.
pub fn nodes_table(runs: &[PolicyRun]) -> String {
    let mut out = String::from("| policy |");
    for spec in &FLEET {
        let models: Vec<&str> = spec.models.iter().map(|&m| model_letter(m)).collect();
        let _ = write!(
            out,
            " {} ({} t/s ×{}, {}) |",
            spec.name,
            spec.tokens_per_sec,
            spec.slots,
            models.join("")
        );
    }
    out.push_str(" loads |\n|---|");
    for _ in &FLEET {
        out.push_str("---:|");
    }
    out.push_str("---:|\n");
    for run in runs {
        let _ = write!(out, "| {} |", run.policy);
        for n in &run.nodes {
            let _ = write!(out, " {} / {} |", n.requests, n.loads);
        }
        let loads: u64 = run.nodes.iter().map(|n| n.loads).sum();
        let _ = writeln!(out, " {loads} |");
    }
    out
}

/// Each policy's mean and p99 over round-robin's, then `auto / round_robin`
/// against the issue's bar; `None` without a round-robin run.
pub fn ratios(runs: &mut [PolicyRun]) -> Option<String> {
    let rr = runs.iter().position(|r| r.policy == "round_robin")?;
    let rr_mean = runs[rr].total.mean().as_secs_f64();
    let rr_p99 = runs[rr].total.quantile(0.99).as_secs_f64();
    let ratio = |x: f64, base: f64| {
        if base > 0.0 {
            format!("{:.2}", x / base)
        } else {
            "–".to_owned()
        }
    };
    let mut out = String::from("\nOver round_robin:\n");
    let mut auto = None;
    for (i, run) in runs.iter_mut().enumerate() {
        if i == rr {
            continue;
        }
        let mean = run.total.mean().as_secs_f64();
        let p99 = run.total.quantile(0.99).as_secs_f64();
        let _ = writeln!(
            out,
            "- {}: mean {}, p99 {}",
            run.policy,
            ratio(mean, rr_mean),
            ratio(p99, rr_p99)
        );
        if run.policy == "auto" {
            auto = Some((mean, p99));
        }
    }
    out.push('\n');
    if let Some((mean, p99)) = auto {
        out.push_str(&ratio_lines(rr_mean, rr_p99, mean, p99));
    }
    Some(out)
}

/// The ratio lines, with the bar (mean ≤ 0.6×, p99 ≤ 0.5× round-robin).
pub fn ratio_lines(rr_mean: f64, rr_p99: f64, auto_mean: f64, auto_p99: f64) -> String {
    let line = |what: &str, auto: f64, rr: f64, bar: f64| {
        if rr > 0.0 {
            let r = auto / rr;
            format!(
                "auto / round_robin {what}: {r:.2} (bar ≤ {bar:.1}: {})\n",
                if r <= bar { "met" } else { "NOT met" }
            )
        } else {
            format!("auto / round_robin {what}: – (round_robin {what} is 0)\n")
        }
    };
    let mut out = String::new();
    out.push_str(&line("mean", auto_mean, rr_mean, 0.6));
    out.push_str(&line("p99", auto_p99, rr_p99, 0.5));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RoutingArgs, clap::Error> {
        crate::harness::parse_args("routing", args)
    }

    #[test]
    fn defaults_run_every_policy() {
        let args = parse(&[]).unwrap();
        assert_eq!(
            args.policies,
            vec![
                BalancerMode::RoundRobin,
                BalancerMode::LeastConnections,
                BalancerMode::Metrics,
                BalancerMode::Latency,
                BalancerMode::Auto
            ]
        );
        assert_eq!(args.load, 0.7);
        let args = parse(&["--policies", "auto,round_robin"]).unwrap();
        assert_eq!(
            args.policies,
            vec![BalancerMode::Auto, BalancerMode::RoundRobin]
        );
        assert!(parse(&["--policies", "fastest"]).is_err());
        assert!(parse(&["--time-scale", "0"]).is_err());
        assert!(parse(&["--load", "0"]).is_err());
        assert!(parse(&["--duration-secs", "-1"]).is_err());
        assert!(parse(&["--load-time-secs", "0"]).is_ok());
        assert_eq!(
            policy_name(BalancerMode::LeastConnections),
            "least_connections"
        );
    }

    #[test]
    fn fleet_is_mixed_as_the_issue_asks() {
        assert!(FLEET.len() >= 6);
        let speeds: Vec<f64> = FLEET.iter().map(|n| n.tokens_per_sec).collect();
        let (lo, hi) = speeds
            .iter()
            .fold((f64::MAX, 0.0_f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        assert!(hi / lo >= 8.0);
        for model in 0..MODELS.len() {
            let holders = FLEET.iter().filter(|n| n.models.contains(&model)).count();
            assert!(holders >= 3, "model {model} on {holders} nodes");
        }
        assert!((MIX.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        for spec in &FLEET {
            mock_config(spec, 0.5, Duration::from_secs(2))
                .validate()
                .unwrap();
        }
    }

    #[test]
    fn capacity_is_slots_over_service_time() {
        let spec = node("n", 100.0, 2, 100, &[0]);
        // 0.1 s + 50 tokens ÷ 100 tokens/s = 0.6 s per request, 2 at once.
        assert!((node_capacity(&spec, 50.0) - 2.0 / 0.6).abs() < 1e-9);
        let one = node("m", 10.0, 1, 0, &[0]);
        assert!((node_capacity(&one, 10.0) - 1.0).abs() < 1e-9);
        assert!((fleet_capacity(&[spec, one], 50.0) - (2.0 / 0.6 + 0.2)).abs() < 1e-9);
        assert_eq!(mean_tokens(&LENGTHS), 112.0);
        assert_eq!(mean_tokens(&[]), 0.0);
        // The default fleet: about 12 requests per second.
        let total = fleet_capacity(&FLEET, mean_tokens(&LENGTHS));
        assert!((11.5..12.5).contains(&total), "{total}");
        // At 70%, each model's holders can carry its share.
        for (model, share) in MIX.iter().enumerate() {
            let holders: f64 = FLEET
                .iter()
                .filter(|n| n.models.contains(&model))
                .map(|n| node_capacity(n, 112.0))
                .sum();
            assert!(holders > 0.7 * total * share);
        }
    }

    #[test]
    fn arrivals_are_deterministic_poisson_and_mixed() {
        let window = Duration::from_secs(1000);
        let a = arrivals(7, 10.0, window, &MIX, &LENGTHS, 100_000);
        let b = arrivals(7, 10.0, window, &MIX, &LENGTHS, 100_000);
        assert_eq!(a, b);
        let c = arrivals(8, 10.0, window, &MIX, &LENGTHS, 100_000);
        assert_ne!(a, c);
        // About rate × window, sorted, inside the window.
        assert!((9_500..10_500).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(a.last().unwrap().at < window);
        // Mean gap 1 / rate.
        let mean_gap = a.last().unwrap().at.as_secs_f64() / a.len() as f64;
        assert!((0.095..0.105).contains(&mean_gap), "{mean_gap}");
        for (model, share) in MIX.iter().enumerate() {
            let n = a.iter().filter(|x| x.model == model).count() as f64;
            let got = n / a.len() as f64;
            assert!((got - share).abs() < 0.02, "model {model}: {got}");
        }
        for length in LENGTHS {
            let n = a.iter().filter(|x| x.tokens == length).count() as f64;
            assert!((n / a.len() as f64 - 1.0 / 3.0).abs() < 0.02);
        }
        assert!(a.iter().all(|x| LENGTHS.contains(&x.tokens)));
        assert_eq!(arrivals(7, 10.0, window, &MIX, &LENGTHS, 5).len(), 5);
        assert!(arrivals(7, 0.0, window, &MIX, &LENGTHS, 5).is_empty());
    }

    #[test]
    fn chat_bodies_ask_for_a_stream_of_the_drawn_length() {
        let body = chat_body(&Arrival {
            at: Duration::ZERO,
            model: 2,
            tokens: 64,
        });
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["model"], "model-c");
        assert_eq!(body["stream"], true);
        assert_eq!(body["options"]["num_predict"], 64);
    }

    #[test]
    fn heartbeats_carry_load_and_loaded_models() {
        let loaded = vec!["model-a:latest".to_owned()];
        let body = heartbeat_body(&["model-a", "model-b"], Some(&loaded), 1, 4, 1);
        assert_eq!(body["metrics"]["cpu_percent"], 25.0);
        assert_eq!(body["metrics"]["memory_percent"], 80.0);
        assert_eq!(body["loaded_models"][0]["name"], "model-a:latest");
        assert_eq!(body["models"][1]["name"], "model-b");
        assert_eq!(body["max_parallel"], 4);
        let hb: llm_router_common::HeartbeatRequest = serde_json::from_value(body).unwrap();
        assert_eq!(hb.loaded_models.unwrap().len(), 1);
        // No /api/ps answer: no loaded list, so the coordinator keeps what it knew.
        let body = heartbeat_body(&["model-a"], None, 9, 4, 1);
        assert_eq!(body["metrics"]["cpu_percent"], 100.0);
        assert!(body.get("loaded_models").is_none());
        let ps = serde_json::json!({"models": [{"name": "model-b:latest", "size": 1}]});
        assert_eq!(ps_names(&ps).unwrap(), vec!["model-b:latest".to_owned()]);
        assert_eq!(ps_names(&serde_json::json!({})), None);
    }

    #[test]
    fn the_reference_sends_to_the_warm_node_that_finishes_soonest() {
        // (warm model, capacity, in flight)
        let nodes = [(0, 5.0, 0), (1, 4.0, 0), (0, 0.2, 0), (2, 1.0, 3)];
        assert_eq!(reference_pick(&nodes, 0), Some(0));
        assert_eq!(reference_pick(&nodes, 1), Some(1));
        assert_eq!(reference_pick(&nodes, 2), Some(3));
        assert_eq!(reference_pick(&nodes, 7), None);
        // The slow node only once the fast one has 25 times its backlog.
        let busy = [(0, 5.0, 24), (0, 0.2, 0)];
        assert_eq!(reference_pick(&busy, 0), Some(0));
        let busier = [(0, 5.0, 25), (0, 0.2, 0)];
        assert_eq!(reference_pick(&busier, 0), Some(1));
        // Every model is warm somewhere at start.
        let warm: Vec<(usize, f64, usize)> = FLEET.iter().map(|n| (n.models[0], 1.0, 0)).collect();
        for model in 0..MODELS.len() {
            assert!(reference_pick(&warm, model).is_some());
        }
    }

    fn sample_run(policy: &str, millis: &[u64], timeouts: usize) -> PolicyRun {
        let mut run = PolicyRun::new(policy.into(), FLEET.len());
        for &m in millis {
            run.total.record(Duration::from_millis(m));
            run.first.record(Duration::from_millis(m / 10));
        }
        run.ok = millis.len() - timeouts;
        run.timeouts = timeouts;
        run.sent = millis.len();
        run.wall = Duration::from_secs(2);
        run.nodes[0] = NodeCounts {
            requests: 7,
            loads: 2,
        };
        run
    }

    #[test]
    fn report_tables_and_ratios() {
        let mut runs = vec![
            sample_run("round_robin", &[1000, 2000, 3000, 10_000], 1),
            sample_run("auto", &[500, 1000, 1500, 2000], 0),
        ];
        let table = results_table(&mut runs);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("| policy | sent | ok | errors | timed out | mean s"));
        assert_eq!(
            lines[2],
            "| round_robin | 4 | 3 | 0 | **1** | 4.000 | 2.000 | 10.000 | 0.400 | 0.200 | 1.000 | 1.50 |"
        );
        assert_eq!(
            lines[3],
            "| auto | 4 | 4 | 0 | 0 | 1.250 | 1.000 | 2.000 | 0.125 | 0.100 | 0.200 | 2.00 |"
        );
        let nodes = nodes_table(&runs);
        let lines: Vec<&str> = nodes.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains("fast-1 (160 t/s ×4, AB)"), "{}", lines[0]);
        assert_eq!(
            lines[2],
            "| round_robin | 7 / 2 | 0 / 0 | 0 / 0 | 0 / 0 | 0 / 0 | 0 / 0 | 2 |"
        );
        let text = ratios(&mut runs).unwrap();
        assert_eq!(
            text,
            "\nOver round_robin:\n- auto: mean 0.31, p99 0.20\n\n\
             auto / round_robin mean: 0.31 (bar ≤ 0.6: met)\n\
             auto / round_robin p99: 0.20 (bar ≤ 0.5: met)\n"
        );
        assert!(ratio_lines(1.0, 1.0, 0.9, 0.4).contains("mean: 0.90 (bar ≤ 0.6: NOT met)"));
        assert!(ratio_lines(0.0, 0.0, 1.0, 1.0).contains("–"));
        assert!(ratios(&mut runs[1..]).is_none());
    }
}
