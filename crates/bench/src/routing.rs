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

/// Model names; a scenario uses the first few.
pub const MODELS: [&str; 8] = [
    "model-a", "model-b", "model-c", "model-d", "model-e", "model-f", "model-g", "model-h",
];
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

/// Model C's only holders are two slow nodes and the fast node, which also
/// holds A and B and has A in memory at start: C needs the fast node, and A
/// and B have mid nodes of their own.
pub const LONE_FAST: [NodeSpec; 7] = [
    node("fast", 160.0, 4, 40, &[0, 1, 2]),
    node("mid-a1", 80.0, 2, 80, &[0]),
    node("mid-b1", 80.0, 2, 80, &[1]),
    node("mid-a2", 50.0, 2, 120, &[0]),
    node("mid-b2", 50.0, 2, 120, &[1]),
    node("slow-c1", 30.0, 1, 200, &[2]),
    node("slow-c2", 20.0, 1, 300, &[2]),
];

/// The default fleet's machines, each holding all three models.
pub const ALL_HOLD: [NodeSpec; 6] = [
    node("fast-1", 160.0, 4, 40, &[0, 1, 2]),
    node("fast-2", 120.0, 4, 50, &[1, 2, 0]),
    node("mid-1", 80.0, 2, 80, &[2, 0, 1]),
    node("mid-2", 50.0, 2, 120, &[2, 1, 0]),
    node("slow-1", 30.0, 1, 200, &[1, 0, 2]),
    node("slow-2", 20.0, 1, 300, &[0, 2, 1]),
];

/// Six machines holding all eight models, one in memory each.
pub const EIGHT_MODELS: [NodeSpec; 6] = [
    node("fast-1", 160.0, 4, 40, &[0, 1, 2, 3, 4, 5, 6, 7]),
    node("fast-2", 120.0, 4, 50, &[1, 2, 3, 4, 5, 6, 7, 0]),
    node("mid-1", 80.0, 2, 80, &[2, 3, 4, 5, 6, 7, 0, 1]),
    node("mid-2", 80.0, 2, 80, &[3, 4, 5, 6, 7, 0, 1, 2]),
    node("mid-3", 50.0, 2, 120, &[4, 5, 6, 7, 0, 1, 2, 3]),
    node("mid-4", 50.0, 2, 120, &[5, 6, 7, 0, 1, 2, 3, 4]),
];

/// The model mix from a point of the run on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Where it starts, as a fraction of the arrival window.
    pub from: f64,
    /// Share of the requests per model (indices into [`MODELS`]).
    pub mix: &'static [f64],
}

/// A fleet and the demand on it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    pub name: &'static str,
    /// One line for the report.
    pub about: &'static str,
    pub fleet: &'static [NodeSpec],
    /// In order of `from`, the first from 0.
    pub phases: &'static [Phase],
}

impl Scenario {
    /// Models with demand in some phase.
    pub fn models(&self) -> usize {
        self.phases.iter().map(|p| p.mix.len()).max().unwrap_or(0)
    }
}

/// The benchmark's scenarios, by `--scenarios` name.
pub const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "lone-fast",
        about: "model C is held only by two slow nodes and the fast node, which also holds A and B and starts with A in memory",
        fleet: &LONE_FAST,
        phases: &[Phase {
            from: 0.0,
            mix: &[0.215, 0.215, 0.57],
        }],
    },
    Scenario {
        name: "shift",
        about: "every node holds A, B and C; halfway through, the popular model changes from A to C",
        fleet: &ALL_HOLD,
        phases: &[
            Phase {
                from: 0.0,
                mix: &[0.5, 0.3, 0.2],
            },
            Phase {
                from: 0.5,
                mix: &[0.2, 0.3, 0.5],
            },
        ],
    },
    Scenario {
        name: "many-models",
        about: "eight models with demand on six nodes that keep one in memory each: two rare models must share",
        fleet: &EIGHT_MODELS,
        phases: &[Phase {
            from: 0.0,
            mix: &[0.38, 0.286, 0.095, 0.095, 0.06, 0.06, 0.012, 0.012],
        }],
    },
    Scenario {
        name: "today",
        about: "three models on four nodes each, the start state enough for the mix if nothing moves",
        fleet: &FLEET,
        phases: &[Phase {
            from: 0.0,
            mix: &[0.5, 0.3, 0.2],
        }],
    },
];

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    SCENARIOS
        .iter()
        .find(|sc| sc.name == s.trim())
        .copied()
        .ok_or_else(|| {
            let names: Vec<&str> = SCENARIOS.iter().map(|sc| sc.name).collect();
            format!("unknown scenario {s:?}; one of {}", names.join(", "))
        })
}

/// A router run's placement mode, or one of the bench's references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatcher {
    Router(BalancerMode, PlacementMode),
    /// Exact state, restricted to a plan computed offline from the true demand.
    Planned,
    /// Exact state, each request where it finishes soonest.
    Greedy,
}

/// Name of the planned reference in the report.
pub const PLANNED: &str = "planned reference";
/// Name of the greedy reference in the report.
pub const GREEDY: &str = "greedy reference";

impl Dispatcher {
    fn name(self) -> String {
        match self {
            Dispatcher::Router(mode, PlacementMode::Plan) => policy_name(mode),
            Dispatcher::Router(mode, PlacementMode::Off) => {
                format!("{} (placement off)", policy_name(mode))
            }
            Dispatcher::Planned => PLANNED.to_owned(),
            Dispatcher::Greedy => GREEDY.to_owned(),
        }
    }
}

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
    /// Also run the two references without the router, which read the mock
    /// nodes' true state (their models in memory, every request sent to them
    /// and its length): the planned one sends each request to the node
    /// planned for its model (a plan computed offline from the true demand,
    /// per phase) that finishes it soonest; the greedy one to any holder
    /// that finishes it soonest, a model load included.
    #[arg(long)]
    pub reference: bool,
    /// The coordinator's fleet-level model placement (`--placement`), comma
    /// separated to run each policy with each; its rounds run every 5 s
    /// before scaling.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "plan")]
    pub placement: Vec<PlacementMode>,
    /// Scenarios to run, comma separated: lone-fast, shift, many-models, today.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "lone-fast,shift,many-models,today",
        value_parser = parse_scenario
    )]
    pub scenarios: Vec<Scenario>,
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
/// the model drawn by the weights of the phase the arrival falls in, the
/// length uniformly from `lengths`. The same seed gives the same sequence.
/// At most `max` arrivals.
pub fn arrivals(
    seed: u64,
    rate: f64,
    window: Duration,
    phases: &[Phase],
    lengths: &[u64],
    max: usize,
) -> Vec<Arrival> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let usable = rate > 0.0 && phases.iter().all(|p| p.mix.iter().sum::<f64>() > 0.0);
    if !usable || phases.is_empty() || lengths.is_empty() {
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
        let mix = phase_at(phases, t / end).mix;
        let mut pick = rng.random::<f64>() * mix.iter().sum::<f64>();
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

/// The phase in force at `fraction` of the window (the first before any).
pub fn phase_at(phases: &[Phase], fraction: f64) -> &Phase {
    phases
        .iter()
        .rev()
        .find(|p| p.from <= fraction)
        .unwrap_or(&phases[0])
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
    /// Placement plan changes in the coordinator, when it planned.
    pub plan_changes: Option<u64>,
    /// Models the coordinator's placement pre-loaded.
    pub preloads: Option<u64>,
    /// The plan near the end of the arrivals: per node, the models planned there.
    pub final_plan: Option<String>,
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
            plan_changes: None,
            preloads: None,
            final_plan: None,
        }
    }

    /// Model loads on every node during the run.
    pub fn loads(&self) -> u64 {
        self.nodes.iter().map(|n| n.loads).sum()
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
    anyhow::ensure!(!args.placement.is_empty(), "no placement mode given");
    anyhow::ensure!(!args.scenarios.is_empty(), "no scenario given");
    let all_started = std::time::Instant::now();
    let mut summaries = Vec::new();
    for scenario in &args.scenarios {
        summaries.push(run_scenario(&args, scenario).await?);
    }
    if args.reference {
        println!("\n## Against the planned reference, every scenario\n");
        println!("{}", summary_table(&summaries));
    }
    println!(
        "{} scenarios in {:.0}s.",
        args.scenarios.len(),
        all_started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Arrivals per second for `scenario` at `load`.
fn offered_rate(scenario: &Scenario, load: f64) -> f64 {
    fleet_capacity(scenario.fleet, mean_tokens(&LENGTHS)) * load
}

/// Every dispatcher on one scenario; prints its report.
async fn run_scenario(args: &RoutingArgs, scenario: &Scenario) -> anyhow::Result<ScenarioSummary> {
    let scale = args.time_scale;
    let rate = offered_rate(scenario, args.load);
    let window = Duration::from_secs_f64(args.duration_secs);
    anyhow::ensure!(
        rate * args.duration_secs <= MAX_ARRIVALS as f64 * 0.9,
        "{:.0} requests expected; at most {MAX_ARRIVALS} per run: shorten --duration-secs or lower --load",
        rate * args.duration_secs
    );
    let workload = arrivals(
        args.seed,
        rate,
        window,
        scenario.phases,
        &LENGTHS,
        MAX_ARRIVALS,
    );
    anyhow::ensure!(!workload.is_empty(), "the workload has no request");
    let timeout = Duration::from_secs_f64(args.timeout_secs * scale);

    println!("{}", setup_report(args, scenario, &workload));

    let mut dispatchers = Vec::new();
    for &placement in &args.placement {
        for &mode in &args.policies {
            dispatchers.push(Dispatcher::Router(mode, placement));
        }
    }
    if args.reference {
        dispatchers.extend([Dispatcher::Planned, Dispatcher::Greedy]);
    }
    let mut runs = Vec::new();
    for dispatcher in dispatchers {
        let started = std::time::Instant::now();
        let run = run_dispatcher(dispatcher, args, scenario, &workload, timeout).await?;
        eprintln!(
            "{} / {}: {} ok, {} errors, {} timed out; took {:.0}s",
            scenario.name,
            run.policy,
            run.ok,
            run.errors,
            run.timeouts,
            started.elapsed().as_secs_f64()
        );
        runs.push(run);
    }

    println!(
        "\n## {}: results (wall clock at time scale {scale}; timed-out requests count with the {:.1}s timeout)\n",
        scenario.name,
        timeout.as_secs_f64()
    );
    println!("{}", results_table(&mut runs));
    println!("Requests / model loads per node during the run (requests include retries):\n");
    println!("{}", nodes_table(scenario.fleet, &runs));
    for run in &runs {
        if let (Some(changes), Some(plan)) = (run.plan_changes, &run.final_plan) {
            println!(
                "{}: the placement plan changed {changes} times, {} pre-loads; near the end of the arrivals: {plan}.",
                run.policy,
                run.preloads.map_or("?".to_owned(), |n| n.to_string())
            );
        }
        if let Some(e) = &run.first_error {
            println!("{}: first error: {e}", run.policy);
        }
    }
    if let Some(text) = ratios(&mut runs) {
        println!("{text}");
    }
    Ok(ScenarioSummary::of(scenario.name, &mut runs))
}

/// The fleet, the capacity estimate and the offered load.
fn setup_report(args: &RoutingArgs, scenario: &Scenario, workload: &[Arrival]) -> String {
    let mean = mean_tokens(&LENGTHS);
    let fleet = scenario.fleet;
    let capacity = fleet_capacity(fleet, mean);
    let rate = offered_rate(scenario, args.load);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Scenario {}: {}\n\n{} nodes, 1 model in memory each, {:.1}s model load stalling the node; time scale {} (every duration × {}), {} CPUs\n",
        scenario.name,
        scenario.about,
        fleet.len(),
        args.load_time_secs,
        args.time_scale,
        args.time_scale,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    out.push_str(
        "Speeds, times and rates are nominal (time scale 1); the nodes and the arrivals run 1/scale times as fast.\n\n",
    );
    out.push_str("| node | tokens/s | slots | first token ms | models (in memory at start first) | capacity req/s |\n");
    out.push_str("|---|---:|---:|---:|---|---:|\n");
    for spec in fleet {
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
        "\nCapacity estimate: Σ slots ÷ (first token + {mean:.0} mean tokens ÷ speed) = {capacity:.2} req/s (no model loads).\n\
         Offered load: {:.0}% of capacity = {rate:.2} req/s ({:.2} req/s wall clock), Poisson, seed {}.",
        args.load * 100.0,
        rate / args.time_scale,
        args.seed,
    );
    for phase in scenario.phases {
        let plan = offline_plan(fleet, phase, rate, &start_assignment(fleet));
        let shares: Vec<String> = phase
            .mix
            .iter()
            .enumerate()
            .map(|(m, share)| {
                let on: Vec<&str> = plan[m].iter().map(|&n| fleet[n].name).collect();
                format!(
                    "{} {:.1}% = {:.2} req/s (planned on {})",
                    model_letter(m),
                    share * 100.0,
                    rate * share,
                    if on.is_empty() {
                        "none: loaded where it finishes soonest".to_owned()
                    } else {
                        on.join(", ")
                    }
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "From {:.0}% of the run: {}.",
            phase.from * 100.0,
            shares.join("; ")
        );
    }
    let _ = writeln!(
        out,
        "Answers of {:?} tokens, equally likely; {} requests over {:.0}s ({:.1}s wall clock) per run, each cut after {:.0}s ({:.1}s wall clock).",
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
    ["A", "B", "C", "D", "E", "F", "G", "H"]
        .get(i)
        .copied()
        .unwrap_or("?")
}

/// What each node has in memory at start, as a plan (model → node indices).
fn start_assignment(fleet: &[NodeSpec]) -> Vec<Vec<usize>> {
    fleet.iter().map(|n| vec![n.models[0]]).collect()
}

/// The coordinator's planner run on the true demand of `phase` and the
/// nodes' nominal capacities, from `current` (models per node): the nodes
/// planned for each model.
pub fn offline_plan(
    fleet: &[NodeSpec],
    phase: &Phase,
    rate: f64,
    current: &[Vec<usize>],
) -> Vec<Vec<usize>> {
    use llm_router_coordinator::placement::plan;
    let mean = mean_tokens(&LENGTHS);
    let demand: Vec<plan::Demand> = phase
        .mix
        .iter()
        .enumerate()
        .map(|(m, share)| plan::Demand {
            model: MODELS[m].to_owned(),
            rate: rate * share,
        })
        .collect();
    let capacity: Vec<plan::Capacity> = fleet
        .iter()
        .map(|spec| plan::Capacity {
            rates: (0..phase.mix.len())
                .map(|m| spec.models.contains(&m).then(|| node_capacity(spec, mean)))
                .collect(),
            memory: 1,
        })
        .collect();
    let current: plan::Assignment = current
        .iter()
        .map(|models| {
            models
                .iter()
                .copied()
                .filter(|&m| m < phase.mix.len())
                .collect()
        })
        .collect();
    let decision = plan::plan(&demand, &capacity, &current);
    let mut by_model = vec![Vec::new(); phase.mix.len()];
    for (n, models) in decision.assignment.iter().enumerate() {
        for &m in models {
            by_model[m].push(n);
        }
    }
    by_model
}

/// The planned nodes of each model, per phase, for the planned reference:
/// each phase planned from the one before (the first from the start state).
fn phase_plans(scenario: &Scenario, rate: f64) -> Vec<(f64, Vec<Vec<usize>>)> {
    let mut current = start_assignment(scenario.fleet);
    let mut out = Vec::new();
    for phase in scenario.phases {
        let by_model = offline_plan(scenario.fleet, phase, rate, &current);
        current = vec![Vec::new(); scenario.fleet.len()];
        for (m, nodes) in by_model.iter().enumerate() {
            for &n in nodes {
                current[n].push(m);
            }
        }
        out.push((phase.from, by_model));
    }
    out
}

/// Fresh nodes and a coordinator (or a bench-side reference), the
/// workload, and what it gave.
async fn run_dispatcher(
    dispatcher: Dispatcher,
    args: &RoutingArgs,
    scenario: &Scenario,
    workload: &[Arrival],
    timeout: Duration,
) -> anyhow::Result<PolicyRun> {
    let scale = args.time_scale;
    let policy = dispatcher.name();
    eprintln!("{} / {policy}: starting a fresh fleet", scenario.name);
    let load_time = Duration::from_secs_f64(args.load_time_secs);
    let fleet = Fleet::start(scenario.fleet, scale, load_time)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()?;
    let window = args.duration_secs;
    let (mode, placement) = match dispatcher {
        Dispatcher::Router(mode, placement) => (mode, placement),
        Dispatcher::Planned | Dispatcher::Greedy => {
            let plans = (dispatcher == Dispatcher::Planned)
                .then(|| phase_plans(scenario, offered_rate(scenario, args.load)));
            let route = Route::Exact(ExactDispatch {
                nodes: fleet.nodes.iter().map(ExactNode::new).collect(),
                plans,
                window,
                load_secs: args.load_time_secs,
            });
            let run = measure(&policy, &client, &route, &fleet, workload, scale, timeout).await;
            fleet.stop();
            return Ok(run);
        }
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
        (placement, placement_interval),
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
        let models = &MODELS[..scenario.models()];
        for model in models {
            ready(&client, &coordinator.base, model).await?;
        }
        for _ in 0..args.warmup {
            for model in models {
                // Best effort: a failure here shows up in the run itself.
                let _ = show(&client, &coordinator.base, model).await;
            }
        }
        // Let the coordinator hear from every node once more.
        tokio::time::sleep(heartbeat_every * 2).await;
        let route = Route::Router(format!("{}/api/chat", coordinator.base).into());
        // The plan as it stands near the end of the arrivals, while demand lasts.
        let late_plan = {
            let (client, base) = (client.clone(), coordinator.base.clone());
            let at = workload
                .last()
                .map_or(Duration::ZERO, |a| a.at.mul_f64(0.9 * scale));
            tokio::spawn(async move {
                tokio::time::sleep(at).await;
                placement_state(&client, &base).await
            })
        };
        let mut run = measure(&policy, &client, &route, &fleet, workload, scale, timeout).await;
        if let Ok(Some((_, plan))) = late_plan.await {
            run.final_plan = Some(plan);
        }
        run.plan_changes = placement_state(&client, &coordinator.base)
            .await
            .map(|(changes, _)| changes);
        run.preloads = preloads(&client, &coordinator.base).await;
        anyhow::Ok(run)
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
    let mut run = drive(
        policy,
        client,
        route,
        fleet.nodes.len(),
        workload,
        scale,
        timeout,
    )
    .await;
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
    /// Straight to the nodes, chosen by the bench from their true state.
    Exact(ExactDispatch),
}

/// The references' dispatcher.
struct ExactDispatch {
    nodes: Vec<ExactNode>,
    /// Per phase (from which fraction of the window), the planned nodes of
    /// each model; `None` for the greedy reference.
    plans: Option<Vec<(f64, Vec<Vec<usize>>)>>,
    /// The arrival window, in nominal seconds.
    window: f64,
    /// A model load, in nominal seconds.
    load_secs: f64,
}

/// A mock node as the references see it.
struct ExactNode {
    url: Arc<str>,
    spec: &'static NodeSpec,
    state: Arc<MockState>,
    backlog: Arc<std::sync::Mutex<Backlog>>,
}

/// What a node has been sent and not finished.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub in_flight: usize,
    /// Service time (first token + tokens ÷ speed, nominal seconds) of the
    /// requests in flight.
    pub work: f64,
    /// The model of the request sent last: in memory once the node gets to it.
    pub last_model: Option<usize>,
}

/// When a node would finish one more request of `service` seconds, in
/// nominal seconds from now: its backlog shared over its slots, then a load
/// when `model` is not the one it will have in memory.
pub fn finish_estimate(
    backlog: &Backlog,
    slots: usize,
    in_memory: bool,
    service: f64,
    load_secs: f64,
) -> f64 {
    let slots = slots.max(1);
    let wait = if in_memory && backlog.in_flight < slots {
        0.0
    } else {
        backlog.work / slots as f64
    };
    wait + if in_memory { 0.0 } else { load_secs } + service
}

impl ExactNode {
    fn new(node: &FleetNode) -> Self {
        Self {
            url: format!("{}/api/chat", node.url).into(),
            spec: node.spec,
            state: Arc::clone(&node.state),
            backlog: Arc::default(),
        }
    }

    /// Whether the node will have `model` in memory when it gets to one more request.
    fn warm_for(&self, backlog: &Backlog, model: usize) -> bool {
        match backlog.last_model {
            Some(last) if backlog.in_flight > 0 => last == model,
            _ => self
                .state
                .models()
                .loaded_names()
                .iter()
                .any(|name| *name == llm_router_mock_node::normalize_model_name(MODELS[model])),
        }
    }

    fn service(&self, tokens: u64) -> f64 {
        self.spec.ttft.as_secs_f64() + tokens as f64 / self.spec.tokens_per_sec
    }
}

impl ExactDispatch {
    /// The node for one request: among the planned ones for its model (or
    /// every holder, without a plan or when none is planned), the one that
    /// finishes it soonest.
    fn pick(&self, arrival: &Arrival) -> usize {
        let planned: Option<&Vec<usize>> = self.plans.as_ref().and_then(|plans| {
            let fraction = arrival.at.as_secs_f64() / self.window;
            plans
                .iter()
                .rev()
                .find(|(from, _)| *from <= fraction)
                .or(plans.first())
                .and_then(|(_, by_model)| by_model.get(arrival.model))
                .filter(|nodes| !nodes.is_empty())
        });
        let candidates: Vec<usize> = match planned {
            Some(nodes) => nodes.clone(),
            None => (0..self.nodes.len())
                .filter(|&n| self.nodes[n].spec.models.contains(&arrival.model))
                .collect(),
        };
        candidates
            .into_iter()
            .map(|n| {
                let node = &self.nodes[n];
                let backlog = *node.backlog.lock().unwrap_or_else(|e| e.into_inner());
                let warm = node.warm_for(&backlog, arrival.model);
                let at = finish_estimate(
                    &backlog,
                    node.spec.slots,
                    warm,
                    node.service(arrival.tokens),
                    self.load_secs,
                );
                (n, at)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0, |(n, _)| n)
    }
}

impl Route {
    /// The URL for `arrival`, and what to hold until its answer ends.
    fn pick(&self, arrival: &Arrival) -> (Arc<str>, Option<InFlight>) {
        match self {
            Route::Router(url) => (Arc::clone(url), None),
            Route::Exact(exact) => {
                let node = &exact.nodes[exact.pick(arrival)];
                let work = node.service(arrival.tokens);
                {
                    let mut backlog = node.backlog.lock().unwrap_or_else(|e| e.into_inner());
                    backlog.in_flight += 1;
                    backlog.work += work;
                    backlog.last_model = Some(arrival.model);
                }
                (
                    Arc::clone(&node.url),
                    Some(InFlight {
                        backlog: Arc::clone(&node.backlog),
                        work,
                    }),
                )
            }
        }
    }
}

/// Counts one request on its node's backlog until dropped.
struct InFlight {
    backlog: Arc<std::sync::Mutex<Backlog>>,
    work: f64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        backlog.in_flight = backlog.in_flight.saturating_sub(1);
        backlog.work = (backlog.work - self.work).max(0.0);
    }
}

/// Sends the workload open loop and gathers the outcomes.
async fn drive(
    policy: &str,
    client: &reqwest::Client,
    route: &Route,
    nodes: usize,
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
    let mut run = PolicyRun::new(policy.to_owned(), nodes);
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
        let (url, in_flight) = route.pick(arrival);
        let body = chat_body(arrival);
        let arrival = *arrival;
        tasks.spawn(async move {
            let outcome = one_request(&client, &url, body, timeout, &arrival).await;
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
    arrival: &Arrival,
) -> Outcome {
    let sent = Instant::now();
    let mut first = None;
    let mut node = None;
    let exchange = async {
        let mut response = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        node = response.headers().get("x-llm-router-node").cloned();
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
    let ended = tokio::time::timeout(timeout, exchange).await;
    if let Some(slow) = std::env::var("LLM_ROUTER_BENCH_SLOW_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        && sent.elapsed().as_secs_f64() >= slow
    {
        eprintln!(
            "slow: {} ({} tokens) sent at {:.1}s on {:?}: first {:?}, total {:.1}s",
            MODELS[arrival.model],
            arrival.tokens,
            arrival.at.as_secs_f64(),
            node,
            first,
            sent.elapsed().as_secs_f64()
        );
    }
    match ended {
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

/// How often the coordinator's placement plan changed (`GET /api/placement`),
/// and the plan in force, per node.
async fn placement_state(client: &reqwest::Client, base: &str) -> Option<(u64, String)> {
    let plan: serde_json::Value =
        serde_json::from_str(&get_text(client, &format!("{base}/api/placement")).await?).ok()?;
    if plan["enabled"] != true {
        return None;
    }
    if std::env::var_os("LLM_ROUTER_BENCH_DEBUG_PLAN").is_some() {
        eprintln!("placement: {plan:#}");
    }
    let nodes: Vec<String> = plan["nodes"]
        .as_array()?
        .iter()
        .map(|n| {
            let models: Vec<&str> = n["models"]
                .as_array()
                .map(|m| m.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            format!("{} {}", n["name"].as_str().unwrap_or("?"), models.join("+"))
        })
        .collect();
    Some((plan["changes"].as_u64()?, nodes.join(", ")))
}

/// Pre-loads the coordinator made, from its `/metrics`.
async fn preloads(client: &reqwest::Client, base: &str) -> Option<u64> {
    get_text(client, &format!("{base}/metrics"))
        .await?
        .lines()
        .find_map(|l| l.strip_prefix("llm_router_placement_preloads_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The body of a `GET url`, if it answered at all.
async fn get_text(client: &reqwest::Client, url: &str) -> Option<String> {
    client.get(url).send().await.ok()?.text().await.ok()
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

/// Latency, first token, throughput, loads and failures per policy.
pub fn results_table(runs: &mut [PolicyRun]) -> String {
    let mut out = String::new();
    out.push_str("| policy | sent | ok | errors | timed out | mean s | p50 s | p99 s | first token mean s | first token p50 s | first token p99 s | completed/s | model loads |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
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
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |",
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
            run.loads(),
        );
    }
    out
}

/// `requests / loads` per node and policy.
pub fn nodes_table(fleet: &[NodeSpec], runs: &[PolicyRun]) -> String {
    let mut out = String::from("| policy |");
    for spec in fleet {
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
    for _ in fleet {
        out.push_str("---:|");
    }
    out.push_str("---:|\n");
    for run in runs {
        let _ = write!(out, "| {} |", run.policy);
        for n in &run.nodes {
            let _ = write!(out, " {} / {} |", n.requests, n.loads);
        }
        let _ = writeln!(out, " {} |", run.loads());
    }
    out
}

/// One scenario's figures for the closing comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioSummary {
    pub scenario: String,
    /// Per run: name, mean latency (s), model loads, requests lost (errors and timeouts).
    pub runs: Vec<(String, f64, u64, usize)>,
}

impl ScenarioSummary {
    fn of(scenario: &str, runs: &mut [PolicyRun]) -> Self {
        Self {
            scenario: scenario.to_owned(),
            runs: runs
                .iter_mut()
                .map(|r| {
                    (
                        r.policy.clone(),
                        r.total.mean().as_secs_f64(),
                        r.loads(),
                        r.errors + r.timeouts,
                    )
                })
                .collect(),
        }
    }
}

/// Per scenario, `auto` (placement on) against the planned reference and
/// the best other policy, with the bar: mean within 1.3×, loads at most 3×,
/// no policy better, nothing lost.
pub fn summary_table(summaries: &[ScenarioSummary]) -> String {
    let mut out = String::from(
        "| scenario | auto mean s | planned mean s | auto / planned (≤ 1.3) | auto loads | planned loads | loads ≤ 3× | best other policy | auto / best other (≤ 1) | lost | bar |\n\
         |---|---:|---:|---:|---:|---:|---|---|---:|---:|---|\n",
    );
    for summary in summaries {
        let find = |name: &str| summary.runs.iter().find(|r| r.0 == name);
        let (Some(auto), Some(planned)) = (find("auto"), find(PLANNED)) else {
            let _ = writeln!(
                out,
                "| {} | – | – | – | – | – | – | – | – | – | needs auto and the references |",
                summary.scenario
            );
            continue;
        };
        let best_other = summary
            .runs
            .iter()
            .filter(|r| r.0 != "auto" && r.0 != PLANNED && r.0 != GREEDY)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let ratio = if planned.1 > 0.0 {
            auto.1 / planned.1
        } else {
            f64::INFINITY
        };
        let loads_ok = auto.2 <= planned.2.max(1) * 3;
        let (best_name, best_ratio) = best_other.map_or(("–".to_owned(), None), |b| {
            (b.0.clone(), (b.1 > 0.0).then(|| auto.1 / b.1))
        });
        let lost: usize = auto.3;
        let met = ratio <= 1.3 && loads_ok && best_ratio.is_none_or(|r| r <= 1.0) && lost == 0;
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.3} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
            summary.scenario,
            auto.1,
            planned.1,
            ratio,
            auto.2,
            planned.2,
            if loads_ok { "yes" } else { "no" },
            best_name,
            best_ratio.map_or("–".to_owned(), |r| format!("{r:.2}")),
            lost,
            if met { "met" } else { "NOT met" },
        );
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
        for model in 0..TODAY_MIX.len() {
            let holders = FLEET.iter().filter(|n| n.models.contains(&model)).count();
            assert!(holders >= 3, "model {model} on {holders} nodes");
        }
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
        for (model, share) in TODAY_MIX.iter().enumerate() {
            let holders: f64 = FLEET
                .iter()
                .filter(|n| n.models.contains(&model))
                .map(|n| node_capacity(n, 112.0))
                .sum();
            assert!(holders > 0.7 * total * share);
        }
    }

    const TODAY_MIX: [f64; 3] = [0.5, 0.3, 0.2];
    const ONE_PHASE: [Phase; 1] = [Phase {
        from: 0.0,
        mix: &TODAY_MIX,
    }];

    #[test]
    fn arrivals_are_deterministic_poisson_and_mixed() {
        let window = Duration::from_secs(1000);
        let a = arrivals(7, 10.0, window, &ONE_PHASE, &LENGTHS, 100_000);
        let b = arrivals(7, 10.0, window, &ONE_PHASE, &LENGTHS, 100_000);
        assert_eq!(a, b);
        let c = arrivals(8, 10.0, window, &ONE_PHASE, &LENGTHS, 100_000);
        assert_ne!(a, c);
        // About rate × window, sorted, inside the window.
        assert!((9_500..10_500).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(a.last().unwrap().at < window);
        // Mean gap 1 / rate.
        let mean_gap = a.last().unwrap().at.as_secs_f64() / a.len() as f64;
        assert!((0.095..0.105).contains(&mean_gap), "{mean_gap}");
        for (model, share) in TODAY_MIX.iter().enumerate() {
            let n = a.iter().filter(|x| x.model == model).count() as f64;
            let got = n / a.len() as f64;
            assert!((got - share).abs() < 0.02, "model {model}: {got}");
        }
        for length in LENGTHS {
            let n = a.iter().filter(|x| x.tokens == length).count() as f64;
            assert!((n / a.len() as f64 - 1.0 / 3.0).abs() < 0.02);
        }
        assert!(a.iter().all(|x| LENGTHS.contains(&x.tokens)));
        assert_eq!(arrivals(7, 10.0, window, &ONE_PHASE, &LENGTHS, 5).len(), 5);
        assert!(arrivals(7, 0.0, window, &ONE_PHASE, &LENGTHS, 5).is_empty());
        assert!(arrivals(7, 10.0, window, &[], &LENGTHS, 5).is_empty());
    }

    #[test]
    fn demand_shifts_at_the_phase_boundary() {
        let shift = parse_scenario("shift").unwrap();
        let window = Duration::from_secs(2000);
        let a = arrivals(3, 10.0, window, shift.phases, &LENGTHS, 100_000);
        let share = |half: &[&Arrival], model: usize| {
            half.iter().filter(|x| x.model == model).count() as f64 / half.len() as f64
        };
        let (early, late): (Vec<&Arrival>, Vec<&Arrival>) =
            a.iter().partition(|x| x.at < window / 2);
        assert!((share(&early, 0) - 0.5).abs() < 0.03);
        assert!((share(&early, 2) - 0.2).abs() < 0.03);
        assert!((share(&late, 0) - 0.2).abs() < 0.03);
        assert!((share(&late, 2) - 0.5).abs() < 0.03);
        assert_eq!(phase_at(shift.phases, 0.49).from, 0.0);
        assert_eq!(phase_at(shift.phases, 0.5).from, 0.5);
        assert_eq!(phase_at(shift.phases, -1.0).from, 0.0);
    }

    #[test]
    fn every_scenario_is_well_formed_and_its_demand_fits_some_plan() {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(names, ["lone-fast", "shift", "many-models", "today"]);
        assert!(parse_scenario("nope").unwrap_err().contains("lone-fast"));
        let args = parse(&["--scenarios", "today,shift"]).unwrap();
        assert_eq!(args.scenarios[0].name, "today");
        assert_eq!(args.scenarios.len(), 2);
        assert_eq!(parse(&[]).unwrap().scenarios.len(), 4);
        for scenario in &SCENARIOS {
            assert_eq!(scenario.phases[0].from, 0.0, "{}", scenario.name);
            assert!(scenario.phases.windows(2).all(|w| w[0].from < w[1].from));
            assert!(scenario.models() <= MODELS.len());
            for spec in scenario.fleet {
                assert!(spec.models.iter().all(|&m| m < scenario.models()));
                mock_config(spec, 0.5, Duration::from_secs(2))
                    .validate()
                    .unwrap();
            }
            let rate = offered_rate(scenario, 0.7);
            for phase in scenario.phases {
                assert!((phase.mix.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                let plan = offline_plan(
                    scenario.fleet,
                    phase,
                    rate,
                    &start_assignment(scenario.fleet),
                );
                // Every model is held somewhere; the planned ones fit with room.
                for (m, share) in phase.mix.iter().enumerate() {
                    assert!(scenario.fleet.iter().any(|n| n.models.contains(&m)));
                    let planned: f64 = plan[m]
                        .iter()
                        .map(|&n| node_capacity(&scenario.fleet[n], mean_tokens(&LENGTHS)))
                        .sum();
                    assert!(
                        plan[m].is_empty() || planned > rate * share,
                        "{}: model {m} gets {planned:.2} for {:.2}",
                        scenario.name,
                        rate * share
                    );
                }
            }
        }
    }

    #[test]
    fn offline_plans_give_the_fast_node_to_the_model_that_needs_it() {
        let lone = parse_scenario("lone-fast").unwrap();
        let rate = offered_rate(&lone, 0.7);
        let plan = offline_plan(
            lone.fleet,
            &lone.phases[0],
            rate,
            &start_assignment(lone.fleet),
        );
        assert!(plan[2].contains(&0), "C on the fast node: {plan:?}");
        assert!(!plan[0].contains(&0));
        // The shift: C gets a fast node in the second phase.
        let shift = parse_scenario("shift").unwrap();
        let plans = phase_plans(&shift, offered_rate(&shift, 0.7));
        assert_eq!(plans.len(), 2);
        assert!(
            plans[0].1[0].contains(&0),
            "A on fast-1 first: {:?}",
            plans[0]
        );
        assert!(
            plans[1].1[2].iter().any(|&n| n < 2),
            "C on a fast node after the shift: {:?}",
            plans[1]
        );
        // Eight models on six nodes: the two rare ones are planned nowhere.
        let many = parse_scenario("many-models").unwrap();
        let plan = offline_plan(
            many.fleet,
            &many.phases[0],
            offered_rate(&many, 0.7),
            &start_assignment(many.fleet),
        );
        assert!(plan[6].is_empty() && plan[7].is_empty(), "{plan:?}");
        assert!(plan[..6].iter().all(|nodes| nodes.len() == 1), "{plan:?}");
    }

    #[test]
    fn the_exact_estimate_counts_backlog_and_loads() {
        let idle = Backlog::default();
        // Warm with a free slot: the service alone.
        assert_eq!(finish_estimate(&idle, 2, true, 1.5, 3.0), 1.5);
        // Cold: a load first.
        assert_eq!(finish_estimate(&idle, 2, false, 1.5, 3.0), 4.5);
        // All slots busy: the backlog spread over them.
        let busy = Backlog {
            in_flight: 2,
            work: 4.0,
            last_model: Some(0),
        };
        assert_eq!(finish_estimate(&busy, 2, true, 1.0, 3.0), 3.0);
        // A load waits for the running work too.
        let one = Backlog {
            in_flight: 1,
            work: 2.0,
            last_model: Some(0),
        };
        assert_eq!(finish_estimate(&one, 4, true, 1.0, 3.0), 1.0);
        assert_eq!(finish_estimate(&one, 4, false, 1.0, 3.0), 4.5);
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
            "| round_robin | 4 | 3 | 0 | **1** | 4.000 | 2.000 | 10.000 | 0.400 | 0.200 | 1.000 | 1.50 | 2 |"
        );
        assert_eq!(
            lines[3],
            "| auto | 4 | 4 | 0 | 0 | 1.250 | 1.000 | 2.000 | 0.125 | 0.100 | 0.200 | 2.00 | 2 |"
        );
        let nodes = nodes_table(&FLEET, &runs);
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

    #[test]
    fn the_summary_holds_auto_to_the_bar() {
        let row =
            |name: &str, mean: f64, loads: u64, lost: usize| (name.to_owned(), mean, loads, lost);
        let summaries = [
            ScenarioSummary {
                scenario: "good".into(),
                runs: vec![
                    row("round_robin", 2.0, 40, 0),
                    row("auto", 1.2, 6, 0),
                    row(PLANNED, 1.0, 2, 0),
                    row(GREEDY, 1.8, 30, 0),
                ],
            },
            ScenarioSummary {
                scenario: "slow".into(),
                runs: vec![
                    row("least_connections", 1.3, 4, 0),
                    row("auto", 1.4, 7, 0),
                    row(PLANNED, 1.0, 2, 0),
                ],
            },
            ScenarioSummary {
                scenario: "lonely".into(),
                runs: vec![row("auto", 1.0, 0, 0)],
            },
        ];
        let table = summary_table(&summaries);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[2],
            "| good | 1.200 | 1.000 | 1.20 | 6 | 2 | yes | round_robin | 0.60 | 0 | met |"
        );
        // 1.4× the reference, 7 loads against 2, slower than least_connections.
        assert_eq!(
            lines[3],
            "| slow | 1.400 | 1.000 | 1.40 | 7 | 2 | no | least_connections | 1.08 | 0 | NOT met |"
        );
        assert!(lines[4].contains("needs auto and the references"));
    }
}
