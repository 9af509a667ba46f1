//! Coordinator settings: command line, environment, defaults, and their checks.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use llm_router_common::cli::LogFormat;

use crate::auth::{AccessSettings, AdminMode};
use crate::registry::live::HealthThresholds;
use crate::serve::{ConnectionLimits, Threads};

/// Most simulated nodes `--demo` starts.
pub const MAX_DEMO_NODES: usize = 16;

/// Command line of `llm-router`. Every flag can also be set by the
/// environment variable shown in `--help`; a flag wins over its variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "llm-router",
    version,
    about = "llm-router coordinator: one endpoint for a fleet of Ollama and OpenAI-compatible machines",
    long_about = "llm-router coordinator: one endpoint for a fleet of inference machines.\n\n\
                  It keeps the registry of nodes (agents register themselves; servers without \
                  an agent are added by URL) and takes silent ones offline, proxies the Ollama \
                  and OpenAI APIs to the best node for each request (model-aware, load-aware, \
                  streaming, failing over, with fleet-level model placement), records a \
                  request history, and serves the dashboard at /dashboard and Prometheus \
                  metrics at /metrics.\n\n\
                  Run `llm-router-agent` beside Ollama on each machine to add it to the fleet; \
                  `llm-router --demo` starts a simulated fleet to try at once."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on: an IP address, or `localhost` for 127.0.0.1 [default: 0.0.0.0,
    /// or 127.0.0.1 with --demo]. On anything but loopback, agents need the node token and
    /// operators must log in (see Security).
    #[arg(long = "host", env = "COORDINATOR_HOST", value_parser = parse_host, help_heading = "Server")]
    pub host: Option<IpAddr>,

    /// Port to listen on (0 picks a free one).
    #[arg(long = "port", env = "COORDINATOR_PORT", default_value_t = llm_router_common::DEFAULT_COORDINATOR_PORT, help_heading = "Server")]
    pub port: u16,

    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(
        long = "tls-cert",
        env = "LLM_ROUTER_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key",
        help_heading = "Server"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(
        long = "tls-key",
        env = "LLM_ROUTER_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert",
        help_heading = "Server"
    )]
    pub tls_key: Option<PathBuf>,

    /// Folder for the registry (agents.json), history, keys and tokens; created if missing.
    /// Default: ~/.llm-router
    #[arg(
        long = "data-dir",
        env = "LLM_ROUTER_DATA_DIR",
        global = true,
        help_heading = "Storage"
    )]
    pub data_dir: Option<PathBuf>,

    /// Token(s) agents must present to register, comma-separated (several allow a rotation).
    /// Default: none on loopback; otherwise one is generated into <data dir>/node-token.
    #[arg(
        long = "node-token",
        env = "LLM_ROUTER_NODE_TOKEN",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Security"
    )]
    pub node_token: Vec<String>,

    /// Require a client API key (Authorization: Bearer) for inference and model listing.
    #[arg(
        long = "require-api-key",
        env = "LLM_ROUTER_REQUIRE_API_KEY",
        help_heading = "Security"
    )]
    pub require_api_key: bool,

    /// Whether the dashboard, management API, history and events need an operator login
    /// [default: auth, or open when bound to loopback only].
    #[arg(
        long = "admin",
        env = "LLM_ROUTER_ADMIN",
        value_enum,
        help_heading = "Security"
    )]
    pub admin: Option<AdminMode>,

    /// Admin token(s) for scripts (Authorization: Bearer), comma-separated.
    #[arg(
        long = "admin-token",
        env = "LLM_ROUTER_ADMIN_TOKEN",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Security"
    )]
    pub admin_token: Vec<String>,

    /// The operator password (prefer the variable, or `llm-router admin set-password`,
    /// which stores only its argon2 hash).
    #[arg(
        long = "admin-password",
        env = "LLM_ROUTER_ADMIN_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD",
        help_heading = "Security"
    )]
    pub admin_password: Option<String>,

    /// Host names the dashboard and management API answer to, comma-separated, besides IP
    /// addresses, localhost and this machine's name (`*.example.com` for a domain, `*` any).
    #[arg(
        long = "allowed-hosts",
        env = "LLM_ROUTER_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "HOSTS",
        help_heading = "Security"
    )]
    pub allowed_hosts: Vec<String>,

    /// Networks that nodes added by URL (`POST /api/nodes`) must be in, comma-separated
    /// CIDR blocks such as 10.0.0.0/8,192.168.1.0/24; empty allows any address except this
    /// coordinator's own.
    #[arg(
        long = "node-networks",
        env = "LLM_ROUTER_NODE_NETWORKS",
        value_delimiter = ',',
        value_name = "CIDRS",
        help_heading = "Security"
    )]
    pub node_networks: Vec<ipnet::IpNet>,

    /// Browser origins allowed to call the inference API (CORS), comma-separated, besides
    /// Ollama's defaults (localhost, 127.0.0.1 and 0.0.0.0 on any port; app://, file://,
    /// tauri://, vscode-webview://, vscode-file://). `*` allows every origin.
    #[arg(
        long = "origins",
        env = "LLM_ROUTER_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS",
        help_heading = "Security"
    )]
    pub origins: Vec<String>,

    /// Token Prometheus must present (Authorization: Bearer) for /metrics; default: open.
    #[arg(
        long = "metrics-token",
        env = "LLM_ROUTER_METRICS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Security"
    )]
    pub metrics_token: Option<String>,

    /// Seconds between checks for nodes whose heartbeats stopped.
    #[arg(
        long = "health-check-interval",
        env = "HEALTH_CHECK_INTERVAL",
        default_value_t = 5,
        value_name = "SECS",
        help_heading = "Health"
    )]
    pub health_check_interval: u64,

    /// Seconds without a heartbeat after which a node is offline.
    #[arg(
        long = "agent-timeout",
        env = "AGENT_TIMEOUT",
        default_value_t = 30,
        value_name = "SECS",
        help_heading = "Health"
    )]
    pub agent_timeout: u64,

    /// Heartbeat interval asked of agents, in seconds (capped at a third of the agent timeout).
    #[arg(long = "heartbeat-interval", env = "LLM_ROUTER_HEARTBEAT_INTERVAL_SECS", default_value_t = llm_router_common::DEFAULT_HEARTBEAT_INTERVAL_SECS, value_name = "SECS", help_heading = "Health")]
    pub heartbeat_interval: u64,

    /// Milliseconds to wait for a TCP connection to a node before trying another.
    #[arg(
        long = "connect-timeout-ms",
        env = "LLM_ROUTER_CONNECT_TIMEOUT_MS",
        default_value_t = 2000,
        value_name = "MS",
        help_heading = "Proxy"
    )]
    pub connect_timeout_ms: u64,

    /// PEM file of extra certificate authorities to trust for nodes reached
    /// over https, besides the system's (e.g. a private CA on the LAN).
    #[arg(
        long = "node-ca-file",
        env = "LLM_ROUTER_NODE_CA_FILE",
        value_name = "PATH",
        help_heading = "Proxy"
    )]
    pub node_ca_file: Option<PathBuf>,

    /// Seconds to wait for a node's first response byte (covers model loading) before trying another.
    #[arg(
        long = "first-byte-timeout",
        env = "LLM_ROUTER_FIRST_BYTE_TIMEOUT_SECS",
        default_value_t = 300,
        value_name = "SECS",
        help_heading = "Proxy"
    )]
    pub first_byte_timeout: u64,

    /// Seconds a streamed response may stay silent before it is ended with an error.
    #[arg(
        long = "stream-idle-timeout",
        env = "LLM_ROUTER_STREAM_IDLE_TIMEOUT_SECS",
        default_value_t = 300,
        value_name = "SECS",
        help_heading = "Proxy"
    )]
    pub stream_idle_timeout: u64,

    /// Nodes tried for one request before giving up (failover).
    #[arg(
        long = "max-attempts",
        env = "LLM_ROUTER_MAX_ATTEMPTS",
        default_value_t = 3,
        value_name = "N",
        help_heading = "Proxy"
    )]
    pub max_attempts: u32,

    /// Consecutive failed requests or probes that take a node out of rotation.
    #[arg(
        long = "unhealthy-after",
        env = "LLM_ROUTER_UNHEALTHY_AFTER",
        default_value_t = 2,
        value_name = "N",
        help_heading = "Health"
    )]
    pub unhealthy_after: u32,

    /// Consecutive successful requests or probes that bring it back.
    #[arg(
        long = "healthy-after",
        env = "LLM_ROUTER_HEALTHY_AFTER",
        default_value_t = 2,
        value_name = "N",
        help_heading = "Health"
    )]
    pub healthy_after: u32,

    /// Seconds between probes (GET /api/version) of nodes out of rotation.
    #[arg(
        long = "probe-interval",
        env = "LLM_ROUTER_PROBE_INTERVAL_SECS",
        default_value_t = 5,
        value_name = "SECS",
        help_heading = "Health"
    )]
    pub probe_interval: u64,

    /// Largest inference request body accepted, in MiB (images travel base64-encoded).
    #[arg(
        long = "max-request-mb",
        env = "LLM_ROUTER_MAX_REQUEST_MB",
        default_value_t = 100,
        value_name = "MIB",
        help_heading = "Proxy"
    )]
    pub max_request_mb: usize,

    /// Seconds a client has to send a complete request head (from its first byte, or from
    /// connecting); slower connections are closed.
    #[arg(
        long = "header-timeout",
        env = "LLM_ROUTER_HEADER_TIMEOUT_SECS",
        default_value_t = 10,
        value_name = "SECS",
        help_heading = "Limits"
    )]
    pub header_timeout: u64,

    /// Seconds a kept-alive connection may sit without a request before it is closed.
    #[arg(
        long = "idle-timeout",
        env = "LLM_ROUTER_IDLE_TIMEOUT_SECS",
        default_value_t = 60,
        value_name = "SECS",
        help_heading = "Limits"
    )]
    pub idle_timeout: u64,

    /// Seconds a request body may take before --body-min-rate applies.
    #[arg(
        long = "body-timeout",
        env = "LLM_ROUTER_BODY_TIMEOUT_SECS",
        default_value_t = 20,
        value_name = "SECS",
        help_heading = "Limits"
    )]
    pub body_timeout: u64,

    /// Bytes per second a request body must average after --body-timeout (slower: 408).
    #[arg(
        long = "body-min-rate",
        env = "LLM_ROUTER_BODY_MIN_RATE",
        default_value_t = 1024,
        value_name = "BYTES",
        help_heading = "Limits"
    )]
    pub body_min_rate: u64,

    /// Most client connections open at once; more wait to be accepted.
    /// Default: half the open-file limit (raised to the hard limit at start), at most 16384.
    #[arg(
        long = "max-connections",
        env = "LLM_ROUTER_MAX_CONNECTIONS",
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_connections: Option<usize>,

    /// Threads that serve client connections, each with its own connections
    /// and its own pool of connections to the nodes. Default: one per CPU.
    #[arg(
        long = "threads",
        env = "LLM_ROUTER_THREADS",
        value_name = "N",
        help_heading = "Limits"
    )]
    pub threads: Option<usize>,

    /// Most inference requests in flight at once across the fleet.
    #[arg(
        long = "max-in-flight",
        env = "LLM_ROUTER_MAX_IN_FLIGHT",
        default_value_t = 1024,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_in_flight: usize,

    /// Most inference requests in flight at once on one node (the rest go to other nodes or wait).
    #[arg(
        long = "max-in-flight-per-node",
        env = "LLM_ROUTER_MAX_IN_FLIGHT_PER_NODE",
        default_value_t = 128,
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_in_flight_per_node: usize,

    /// MiB of request bodies held in memory at once, all requests together (at least --max-request-mb).
    #[arg(
        long = "request-buffer-mb",
        env = "LLM_ROUTER_REQUEST_BUFFER_MB",
        default_value_t = 256,
        value_name = "MIB",
        help_heading = "Limits"
    )]
    pub request_buffer_mb: usize,

    /// Milliseconds a request waits for room under a full cap before it gets 503 with Retry-After.
    #[arg(
        long = "queue-wait-ms",
        env = "LLM_ROUTER_QUEUE_WAIT_MS",
        default_value_t = 2000,
        value_name = "MS",
        help_heading = "Limits"
    )]
    pub queue_wait_ms: u64,

    /// How a node is chosen among those holding the model.
    #[arg(long = "load-balancer", env = "LOAD_BALANCER_MODE", value_enum, default_value_t = BalancerMode::Auto, help_heading = "Proxy")]
    pub load_balancer: BalancerMode,

    /// Fleet-level model placement: `plan` decides from the demand which node
    /// keeps which model warm, pre-loads models it moves, and has `auto` route
    /// within that plan; `off` leaves every choice to the balancer.
    #[arg(long = "placement", env = "LLM_ROUTER_PLACEMENT", value_enum, default_value_t = PlacementMode::Plan, help_heading = "Proxy")]
    pub placement: PlacementMode,

    /// Where a pull that names no nodes goes (`ollama pull` through the router, the
    /// dashboard's default): `free-disk` skips nodes whose models disk has no room.
    #[arg(long = "pull-targets", env = "LLM_ROUTER_PULL_TARGETS", value_enum, default_value_t = PullTargets::FreeDisk, help_heading = "Proxy")]
    pub pull_targets: PullTargets,

    /// One model under the names different servers give it, LOGICAL=SERVED
    /// (`qwen2.5:7b=Qwen/Qwen2.5-7B-Instruct`): a request for either goes to every
    /// node holding one of them, with the name that node knows; repeat it or
    /// separate with commas.
    #[arg(
        long = "model-alias",
        env = "LLM_ROUTER_MODEL_ALIASES",
        value_name = "LOGICAL=SERVED",
        value_delimiter = ',',
        help_heading = "Proxy"
    )]
    pub model_alias: Vec<String>,

    /// Seconds between placement rounds; demand is smoothed over four rounds.
    #[arg(
        long = "placement-interval-secs",
        env = "LLM_ROUTER_PLACEMENT_INTERVAL_SECS",
        default_value_t = 5.0,
        value_parser = parse_interval_secs,
        value_name = "SECS",
        help_heading = "Proxy"
    )]
    pub placement_interval_secs: f64,

    /// Record no request history at all: no prompts or answers are stored, the
    /// dashboard's history view and `/api/history` answer that it is off.
    #[arg(
        long = "no-history",
        env = "LLM_ROUTER_NO_HISTORY",
        help_heading = "History"
    )]
    pub no_history: bool,

    /// Days a request stays in the request history (history.db) before it is deleted.
    #[arg(
        long = "history-retention-days",
        env = "LLM_ROUTER_HISTORY_RETENTION_DAYS",
        default_value_t = 7,
        value_name = "DAYS",
        help_heading = "History"
    )]
    pub history_retention_days: u64,

    /// Most KiB of each request body and response kept in the history (the rest is counted, not stored).
    #[arg(
        long = "history-body-kb",
        env = "LLM_ROUTER_HISTORY_BODY_KB",
        default_value_t = 64,
        value_name = "KIB",
        help_heading = "History"
    )]
    pub history_body_kb: usize,

    /// Finished requests waiting to be written to the history; beyond that they are dropped and counted.
    #[arg(
        long = "history-queue",
        env = "LLM_ROUTER_HISTORY_QUEUE",
        default_value_t = 10_000,
        value_name = "N",
        help_heading = "History"
    )]
    pub history_queue: usize,

    /// Seconds that running requests may take to finish on SIGTERM or Ctrl-C: new
    /// ones get 503 meanwhile; those still running at the end are cut with an error
    /// in their API's format.
    #[arg(
        long = "shutdown-grace-secs",
        env = "LLM_ROUTER_SHUTDOWN_GRACE_SECS",
        default_value_t = 30,
        value_name = "SECS",
        help_heading = "Server"
    )]
    pub shutdown_grace_secs: u64,

    /// Log lines as text, or as one JSON object per line (for log collectors). The level
    /// filter is RUST_LOG (default info); one line per finished request has target
    /// `llm_router::request`.
    #[arg(
        long = "log-format",
        env = "LLM_ROUTER_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true,
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,

    /// Check every setting, print the effective configuration with where each value
    /// came from (secrets redacted), and exit: 0 when it can run, 1 when not.
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Run without the tray icon on a desktop (also `LLM_ROUTER_TRAY=0`); under a
    /// service manager or without a display there is none anyway.
    #[arg(long, help_heading = "Server")]
    pub no_tray: bool,

    /// Start N simulated nodes with agents beside the coordinator (default 3), with data in a
    /// temporary folder unless --data-dir is given: a working fleet to try at once.
    #[arg(long = "demo", value_name = "N", num_args = 0..=1, default_missing_value = "3", help_heading = "Demo")]
    pub demo: Option<usize>,
}

/// What `llm-router` does besides running the coordinator.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Create, list and revoke client API keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// Act on a running coordinator through its API instead of the data folder
        /// (as `models`, `pull` and the others do). Without it, the keys file in
        /// --data-dir is changed, which a coordinator using that folder picks up.
        #[arg(
            long,
            visible_alias = "coordinator-url",
            env = "LLM_ROUTER_COORDINATOR_URL",
            value_name = "URL",
            global = true
        )]
        url: Option<String>,
        /// Admin token for --url.
        #[arg(
            long,
            env = "LLM_ROUTER_ADMIN_TOKEN",
            hide_env_values = true,
            global = true,
            value_name = "TOKEN"
        )]
        admin_token: Option<String>,
    },
    /// Operator settings.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// The models on the fleet's nodes, as a table: which node holds and has loaded what.
    Models {
        #[command(flatten)]
        remote: Remote,
    },
    /// Pull a model onto the fleet's nodes, with a progress bar per node (Ctrl-C cancels).
    ///
    /// Without --nodes or --count it goes where the coordinator's --pull-targets says
    /// (every online Ollama node with room, by default). Exits 0 when every node has the
    /// model, 1 when some failed, 130 when cancelled.
    Pull {
        /// The model, as `ollama pull` takes it (`llama3.2`, `qwen2.5:7b`).
        model: String,
        /// These nodes only (ids, machine or display names, comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "NAMES", conflicts_with_all = ["count", "all"])]
        nodes: Vec<String>,
        /// This many nodes (those without the model and with the most free disk first).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "all")]
        count: Option<u32>,
        /// Every online Ollama node, without checking free disk.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a model from every node that holds it (or from those named).
    Rm {
        /// The model, as `ollama rm` takes it (`llama3.2`, `qwen2.5:7b`).
        model: String,
        /// These nodes only (ids, machine or display names, comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        nodes: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// The fleet's nodes, as a table: status, kind, models, load, free disk.
    Nodes {
        #[command(flatten)]
        remote: Remote,
    },
}

/// Where a subcommand finds the running coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The coordinator's URL.
    #[arg(
        long = "coordinator-url",
        env = "LLM_ROUTER_COORDINATOR_URL",
        value_name = "URL",
        default_value_t = format!("http://127.0.0.1:{}", llm_router_common::DEFAULT_COORDINATOR_PORT)
    )]
    pub coordinator_url: String,
    /// Admin token, when the coordinator asks operators to log in.
    #[arg(
        long,
        env = "LLM_ROUTER_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
}

/// `llm-router keys …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysAction {
    /// Create a key; it is printed once and stored only as a digest.
    Create {
        /// Name shown in the history and the dashboard (letters, digits, '.', '_', '-').
        name: String,
        /// Requests per minute allowed to this key (bursts up to as many).
        #[arg(long, value_name = "N")]
        rpm: Option<u32>,
        /// Requests this key may have in flight at once.
        #[arg(long, value_name = "N")]
        max_concurrent: Option<u32>,
    },
    /// List the keys (names, prefixes, limits; never the keys).
    List,
    /// Revoke a key; it stops working at once.
    Revoke { name: String },
}

/// `llm-router admin …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminAction {
    /// Set the dashboard password (asked on the terminal, or read from stdin).
    SetPassword,
}

fn parse_interval_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.01..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0.01 and 3600"
        )),
    }
}

/// `--pull-targets`: what a pull that names no nodes uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PullTargets {
    /// Every online Ollama node, whatever its free disk.
    All,
    /// Every online Ollama node with room for the model.
    #[default]
    FreeDisk,
}

/// Fleet-level model placement (`LLM_ROUTER_PLACEMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PlacementMode {
    /// Plan which node keeps which model warm, and route within the plan.
    #[default]
    Plan,
    /// No plan: the balancer alone decides.
    Off,
}

/// Load-balancing policy (`LOAD_BALANCER_MODE`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum BalancerMode {
    /// Each request to the next node in turn.
    #[value(name = "round_robin", alias = "round-robin")]
    RoundRobin,
    /// Fewest requests in flight.
    #[value(name = "least_connections", alias = "least-connections")]
    LeastConnections,
    /// Lowest cpu% + memory% + 10 × active requests (round-robin when all are above 80% CPU).
    #[value(name = "metrics")]
    Metrics,
    /// Fastest observed time to first token and generation speed.
    #[value(name = "latency")]
    Latency,
    /// Soonest estimated finish, keeping nodes warm on the models they hold in memory.
    #[default]
    #[value(name = "auto")]
    Auto,
}

/// How the proxy talks to nodes.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub balancer: BalancerMode,
    pub placement: PlacementMode,
    /// Time between placement rounds.
    pub placement_interval: Duration,
    pub connect_timeout: Duration,
    /// Extra certificate authorities (PEM) trusted for https nodes.
    pub node_ca_file: Option<PathBuf>,
    pub first_byte_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub max_attempts: u32,
    /// When the proxy takes a node out of rotation and brings it back.
    pub health: HealthThresholds,
    /// How often nodes out of rotation are probed.
    pub probe_interval: Duration,
    pub max_request_bytes: usize,
    /// Most response bytes kept per request for its record (request history).
    pub capture_bytes: usize,
    pub admission: AdmissionSettings,
    /// Which nodes a pull that names none goes to.
    pub pull_targets: PullTargets,
    /// Names that stand for one model on servers that name it differently.
    pub aliases: crate::aliases::ModelAliases,
}

/// The caps on inference requests held at once (see [`crate::admission`]).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionSettings {
    pub max_in_flight: usize,
    pub max_in_flight_per_node: usize,
    /// Bytes of request bodies held at once.
    pub buffer_bytes: usize,
    /// How long a request waits for room before it is answered 503.
    pub wait: Duration,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            max_in_flight_per_node: 128,
            buffer_bytes: 256 * 1024 * 1024,
            wait: Duration::from_secs(2),
        }
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            balancer: BalancerMode::default(),
            placement: PlacementMode::default(),
            placement_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(2000),
            node_ca_file: None,
            first_byte_timeout: Duration::from_secs(300),
            stream_idle_timeout: Duration::from_secs(300),
            max_attempts: 3,
            health: HealthThresholds::default(),
            probe_interval: Duration::from_secs(5),
            max_request_bytes: 100 * 1024 * 1024,
            capture_bytes: 64 * 1024,
            admission: AdmissionSettings::default(),
            pull_targets: PullTargets::default(),
            aliases: crate::aliases::ModelAliases::default(),
        }
    }
}

/// How the request history is kept (`history.db` in the data folder).
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// Whether requests are recorded at all.
    pub enabled: bool,
    /// Requests older than this are deleted.
    pub retention: Duration,
    /// Most bytes of each request body and response stored (the proxy captures as much).
    pub body_limit_bytes: usize,
    /// Finished requests waiting for the writer; more are dropped and counted.
    pub queue: usize,
    /// Time between two deletions of old requests (there is one at start too).
    pub prune_interval: Duration,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            body_limit_bytes: 64 * 1024,
            queue: 10_000,
            prune_interval: Duration::from_secs(5 * 60),
        }
    }
}

/// Checked settings the coordinator runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub health_check_interval: Duration,
    pub agent_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub proxy: ProxySettings,
    pub history: HistorySettings,
    /// Who may join, send inference and manage.
    pub access: AccessSettings,
    /// HTTPS certificate and key, when the coordinator serves TLS.
    pub tls: Option<TlsFiles>,
    /// Timeouts and the cap on client connections.
    pub limits: ConnectionLimits,
    /// The threads serving client connections.
    pub threads: Threads,
    /// How long running requests may take to finish when the coordinator stops.
    pub shutdown_grace: Duration,
}

/// PEM files for `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// The documented defaults, storing data in `data_dir`.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            health_check_interval: Duration::from_secs(5),
            agent_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            proxy: ProxySettings::default(),
            history: HistorySettings::default(),
            access: AccessSettings::default(),
            tls: None,
            limits: ConnectionLimits::default(),
            threads: Threads::default(),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be at least 1 second")]
    ZeroInterval { name: &'static str },
    #[error(
        "HEALTH_CHECK_INTERVAL ({check}s) must not exceed AGENT_TIMEOUT ({timeout}s), or dead nodes are noticed late"
    )]
    CheckSlowerThanTimeout { check: u64, timeout: u64 },
    #[error("no data folder given and no home folder found; set LLM_ROUTER_DATA_DIR or --data-dir")]
    NoDataDir,
    #[error("{name} must be at least 1")]
    Zero { name: &'static str },
    #[error(
        "LLM_ROUTER_REQUEST_BUFFER_MB ({buffer}) must be at least LLM_ROUTER_MAX_REQUEST_MB ({request}), or the largest body allowed could never be read"
    )]
    BufferBelowRequest { buffer: usize, request: usize },
    #[error("--demo takes 1 to {max} nodes, not {given}")]
    DemoSize { given: usize, max: usize },
    #[error("{0}")]
    ModelAlias(String),
}

impl Cli {
    /// The address to listen on: `--host`, else loopback for the demo, else every interface.
    pub fn host(&self) -> IpAddr {
        self.host.unwrap_or(if self.demo.is_some() {
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        })
    }

    /// Turns the command line into a checked [`Config`].
    pub fn config(&self) -> Result<Config, ConfigError> {
        let aliases = crate::aliases::ModelAliases::parse(&self.model_alias)
            .map_err(ConfigError::ModelAlias)?;
        for (name, value) in [
            ("HEALTH_CHECK_INTERVAL", self.health_check_interval),
            ("AGENT_TIMEOUT", self.agent_timeout),
            ("the heartbeat interval", self.heartbeat_interval),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroInterval { name });
            }
        }
        if self.health_check_interval > self.agent_timeout {
            return Err(ConfigError::CheckSlowerThanTimeout {
                check: self.health_check_interval,
                timeout: self.agent_timeout,
            });
        }
        for (name, value) in [
            ("LLM_ROUTER_CONNECT_TIMEOUT_MS", self.connect_timeout_ms),
            (
                "LLM_ROUTER_FIRST_BYTE_TIMEOUT_SECS",
                self.first_byte_timeout,
            ),
            (
                "LLM_ROUTER_STREAM_IDLE_TIMEOUT_SECS",
                self.stream_idle_timeout,
            ),
            ("LLM_ROUTER_MAX_ATTEMPTS", u64::from(self.max_attempts)),
            (
                "LLM_ROUTER_UNHEALTHY_AFTER",
                u64::from(self.unhealthy_after),
            ),
            ("LLM_ROUTER_HEALTHY_AFTER", u64::from(self.healthy_after)),
            ("LLM_ROUTER_PROBE_INTERVAL_SECS", self.probe_interval),
            ("LLM_ROUTER_MAX_REQUEST_MB", self.max_request_mb as u64),
            (
                "LLM_ROUTER_HISTORY_RETENTION_DAYS",
                self.history_retention_days,
            ),
            ("LLM_ROUTER_HISTORY_QUEUE", self.history_queue as u64),
            ("LLM_ROUTER_HEADER_TIMEOUT_SECS", self.header_timeout),
            ("LLM_ROUTER_IDLE_TIMEOUT_SECS", self.idle_timeout),
            ("LLM_ROUTER_BODY_MIN_RATE", self.body_min_rate),
            (
                "LLM_ROUTER_MAX_CONNECTIONS",
                self.max_connections.unwrap_or(1) as u64,
            ),
            ("LLM_ROUTER_THREADS", self.threads.unwrap_or(1) as u64),
            ("LLM_ROUTER_MAX_IN_FLIGHT", self.max_in_flight as u64),
            (
                "LLM_ROUTER_MAX_IN_FLIGHT_PER_NODE",
                self.max_in_flight_per_node as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { name });
            }
        }
        if self.request_buffer_mb < self.max_request_mb {
            return Err(ConfigError::BufferBelowRequest {
                buffer: self.request_buffer_mb,
                request: self.max_request_mb,
            });
        }
        if let Some(n) = self.demo
            && !(1..=MAX_DEMO_NODES).contains(&n)
        {
            return Err(ConfigError::DemoSize {
                given: n,
                max: MAX_DEMO_NODES,
            });
        }
        let data_dir = self.data_folder().ok_or(ConfigError::NoDataDir)?;
        // Three heartbeats per timeout: one lost or late beat must not take a node offline.
        let heartbeat_interval = self.heartbeat_interval.min((self.agent_timeout / 3).max(1));
        Ok(Config {
            data_dir,
            health_check_interval: Duration::from_secs(self.health_check_interval),
            agent_timeout: Duration::from_secs(self.agent_timeout),
            heartbeat_interval: Duration::from_secs(heartbeat_interval),
            proxy: ProxySettings {
                balancer: self.load_balancer,
                placement: self.placement,
                placement_interval: Duration::from_secs_f64(self.placement_interval_secs),
                pull_targets: self.pull_targets,
                aliases,
                connect_timeout: Duration::from_millis(self.connect_timeout_ms),
                node_ca_file: self.node_ca_file.clone(),
                first_byte_timeout: Duration::from_secs(self.first_byte_timeout),
                stream_idle_timeout: Duration::from_secs(self.stream_idle_timeout),
                max_attempts: self.max_attempts,
                health: HealthThresholds {
                    unhealthy_after: self.unhealthy_after,
                    healthy_after: self.healthy_after,
                },
                probe_interval: Duration::from_secs(self.probe_interval),
                max_request_bytes: self.max_request_mb.saturating_mul(1024 * 1024),
                capture_bytes: if self.no_history {
                    0
                } else {
                    self.history_body_kb.saturating_mul(1024)
                },
                admission: AdmissionSettings {
                    max_in_flight: self.max_in_flight,
                    max_in_flight_per_node: self.max_in_flight_per_node,
                    buffer_bytes: self.request_buffer_mb.saturating_mul(1024 * 1024),
                    wait: Duration::from_millis(self.queue_wait_ms),
                },
            },
            history: HistorySettings {
                enabled: !self.no_history,
                retention: Duration::from_secs(
                    self.history_retention_days.saturating_mul(24 * 60 * 60),
                ),
                body_limit_bytes: self.history_body_kb.saturating_mul(1024),
                queue: self.history_queue,
                ..HistorySettings::default()
            },
            access: self.access_settings(),
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| TlsFiles { cert, key }),
            limits: ConnectionLimits {
                header_timeout: Duration::from_secs(self.header_timeout),
                idle_timeout: Duration::from_secs(self.idle_timeout),
                body_grace: Duration::from_secs(self.body_timeout),
                body_min_rate: self.body_min_rate,
                max_connections: self.max_connections,
            },
            threads: Threads {
                count: self.threads,
                ..Threads::default()
            },
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
        })
    }
}

impl Cli {
    /// Access defaults follow the bind address: loopback-only is open to its own
    /// machine; anything else requires a node token and an operator login.
    fn access_settings(&self) -> AccessSettings {
        let loopback = self.host().is_loopback();
        AccessSettings {
            node_tokens: self.node_token.clone(),
            generate_node_token: !loopback,
            require_api_key: self.require_api_key,
            admin: Some(self.admin.unwrap_or(if loopback {
                AdminMode::Open
            } else {
                AdminMode::Auth
            })),
            admin_tokens: self.admin_token.clone(),
            admin_password: self.admin_password.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            origins: self.origins.clone(),
            metrics_token: self.metrics_token.clone().filter(|t| !t.is_empty()),
            secure_cookies: self.tls_cert.is_some(),
            node_networks: self.node_networks.clone(),
        }
    }

    /// Where data is kept: `--data-dir`, else [`default_data_dir`]; `None`
    /// without either a flag or a home folder.
    pub fn data_folder(&self) -> Option<PathBuf> {
        self.data_dir.clone().or_else(default_data_dir)
    }
}

/// `--host`: an IP address, or `localhost` (the loopback address).
fn parse_host(value: &str) -> Result<IpAddr, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    }
    // `[::1]`, as in URLs, is accepted too.
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    bare.parse().map_err(|_| {
        format!(
            "{value:?} is not an IP address: use 0.0.0.0 (every interface), 127.0.0.1 or \
             localhost (this machine only), or one of this machine's addresses"
        )
    })
}

/// `~/.llm-router`.
pub fn default_data_dir() -> Option<PathBuf> {
    std::env::home_dir().map(|home| home.join(".llm-router"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("llm-router").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn host_takes_an_ip_address_or_localhost() {
        assert_eq!(
            cli(&["--host", "localhost"]).host(),
            IpAddr::from([127, 0, 0, 1])
        );
        assert_eq!(
            cli(&["--host", "10.0.0.5"]).host(),
            IpAddr::from([10, 0, 0, 5])
        );
        assert_eq!(
            cli(&["--host", "[::1]"]).host(),
            "::1".parse::<IpAddr>().unwrap()
        );
        let error = Cli::try_parse_from(["llm-router", "--host", "my-box"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"my-box\" is not an IP address"), "{error}");
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let config = cli(&["--data-dir", "/tmp/x"]).config().unwrap();
        assert_eq!(config.health_check_interval, Duration::from_secs(5));
        assert_eq!(config.agent_timeout, Duration::from_secs(30));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn demo_flag_defaults_to_three_nodes_and_checks_its_range() {
        assert_eq!(cli(&["--demo"]).demo, Some(3));
        assert_eq!(cli(&["--demo", "5"]).demo, Some(5));
        assert_eq!(cli(&[]).demo, None);
        let err = cli(&["--data-dir", "/x", "--demo", "0"])
            .config()
            .unwrap_err();
        assert!(matches!(err, ConfigError::DemoSize { .. }), "{err}");
    }

    #[test]
    fn cli_defaults_equal_the_library_defaults() {
        let mut from_cli = cli(&["--data-dir", "/tmp/x"]).config().unwrap();
        // The library's default is open; the command line's depends on the bind address.
        from_cli.access = AccessSettings::default();
        let defaults = Config::with_data_dir("/tmp/x");
        assert_eq!(format!("{from_cli:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn access_defaults_follow_the_bind_address() {
        let everywhere = cli(&["--data-dir", "/x"]).config().unwrap().access;
        assert_eq!(everywhere.admin, Some(AdminMode::Auth));
        assert!(everywhere.generate_node_token);
        let loopback = cli(&["--data-dir", "/x", "--host", "127.0.0.1"])
            .config()
            .unwrap()
            .access;
        assert_eq!(loopback.admin, Some(AdminMode::Open));
        assert!(!loopback.generate_node_token);
        let demo = cli(&["--demo"]);
        assert!(demo.host().is_loopback());
        let explicit = cli(&["--host", "0.0.0.0", "--admin", "open", "--data-dir", "/x"])
            .config()
            .unwrap()
            .access;
        assert_eq!(explicit.admin, Some(AdminMode::Open));
        let tokens = cli(&["--data-dir", "/x", "--node-token", "a,b"]).node_token;
        assert_eq!(tokens, ["a", "b"]);
    }

    #[test]
    fn history_flags_set_the_history_and_the_proxy_capture() {
        let config = cli(&[
            "--data-dir",
            "/tmp/x",
            "--history-retention-days",
            "2",
            "--history-body-kb",
            "8",
            "--history-queue",
            "50",
        ])
        .config()
        .unwrap();
        assert_eq!(config.history.retention, Duration::from_secs(2 * 86_400));
        assert_eq!(config.history.body_limit_bytes, 8 * 1024);
        assert_eq!(config.history.queue, 50);
        assert_eq!(config.proxy.capture_bytes, 8 * 1024);
        let err = cli(&["--data-dir", "/x", "--history-queue", "0"])
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("HISTORY_QUEUE"), "{err}");
        assert!(config.history.enabled);
    }

    #[test]
    fn no_history_records_and_captures_nothing() {
        let config = cli(&["--data-dir", "/tmp/x", "--no-history"])
            .config()
            .unwrap();
        assert!(!config.history.enabled);
        assert_eq!(config.proxy.capture_bytes, 0);
    }

    #[test]
    fn heartbeat_interval_is_capped_to_a_third_of_the_timeout() {
        let config = cli(&[
            "--data-dir",
            "/tmp/x",
            "--agent-timeout",
            "6",
            "--health-check-interval",
            "1",
        ])
        .config()
        .unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(2));
    }

    #[test]
    fn zero_and_inconsistent_intervals_are_rejected() {
        let err = cli(&["--data-dir", "/x", "--agent-timeout", "0"])
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("AGENT_TIMEOUT"), "{err}");
        let err = cli(&[
            "--data-dir",
            "/x",
            "--agent-timeout",
            "5",
            "--health-check-interval",
            "10",
        ])
        .config()
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::CheckSlowerThanTimeout { .. }),
            "{err}"
        );
    }
}
