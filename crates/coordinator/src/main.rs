//! `llm-router`: parses the command line and runs the coordinator (and,
//! with `--demo`, a simulated fleet beside it).

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use llm_router_coordinator::Cli;

/// mimalloc: the request path allocates small buffers on every thread, and glibc's
/// allocator spent a sixth of the router's CPU on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Flushed when main returns: the last lines of a shutdown are not lost.
    let logs = llm_router_common::cli::init_logging(cli.log_format);
    if cli.check_config {
        if llm_router_coordinator::server::check_config(&cli, &matches) {
            return Ok(());
        }
        drop(logs);
        std::process::exit(1);
    }
    // The demo keeps its data in a temporary folder, so it never touches a real registry.
    let demo_dir = match (cli.demo, &cli.data_dir) {
        (Some(_), None) => {
            let dir = tempfile::Builder::new()
                .prefix("llm-router-demo-")
                .tempdir()
                .context("could not create a temporary data folder for the demo")?;
            cli.data_dir = Some(dir.path().to_owned());
            Some(dir)
        }
        _ => None,
    };
    if let Some(command) = cli.command.take() {
        let data_dir = match &cli.data_dir {
            Some(dir) => dir.clone(),
            None => llm_router_coordinator::config::default_data_dir()
                .context("no home folder found; set LLM_ROUTER_DATA_DIR or --data-dir")?,
        };
        return llm_router_coordinator::commands::run(command, &data_dir).await;
    }
    let mut config = cli.config()?;
    let host = cli.host();
    // The demo's own agents need the node token of a coordinator reachable from the
    // network: one for this run, unless the operator gave one.
    let demo_token = cli.demo.map(|_| {
        if config.access.node_tokens.is_empty() && config.access.generate_node_token {
            let token = llm_router_coordinator::auth::secret::generate_token("llmr_nt_");
            config.access.node_tokens.push(token);
        }
        config.access.node_tokens.first().cloned()
    });
    let listener = tokio::net::TcpListener::bind((host, cli.port))
        .await
        .with_context(|| format!("could not listen on {host}:{}", cli.port))?;

    let Some(nodes) = cli.demo else {
        return llm_router_coordinator::run(listener, config, shutdown_signal()).await;
    };

    run_demo(listener, config, nodes, demo_token.flatten()).await?;
    drop(demo_dir);
    Ok(())
}

/// Serves `config` with `nodes` simulated nodes and their agents beside it, until Ctrl-C.
#[cfg(feature = "demo")]
async fn run_demo(
    listener: tokio::net::TcpListener,
    config: llm_router_coordinator::config::Config,
    nodes: usize,
    token: Option<String>,
) -> anyhow::Result<()> {
    use llm_router_coordinator::demo::{DemoFleet, banner};
    use tokio_util::sync::CancellationToken;

    let url = format!("http://{}", listener.local_addr()?);
    let stop_server = CancellationToken::new();
    let mut server = tokio::spawn(llm_router_coordinator::run(
        listener,
        config,
        stop_server.clone().cancelled_owned(),
    ));
    let fleet = DemoFleet::start_with_token(&url, nodes, token).await?;
    println!("{}", banner(&url, &fleet));
    tokio::select! {
        () = shutdown_signal() => {}
        ended = &mut server => {
            fleet.stop().await;
            return ended.context("coordinator task failed")?;
        }
    }
    // Agents say goodbye while the coordinator still listens.
    fleet.stop().await;
    stop_server.cancel();
    server.await.context("coordinator task failed")?
}

#[cfg(not(feature = "demo"))]
async fn run_demo(
    _listener: tokio::net::TcpListener,
    _config: llm_router_coordinator::config::Config,
    _nodes: usize,
    _token: Option<String>,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "this llm-router was built without the demo (cargo feature `demo`); \
         build it with the default features to use --demo"
    )
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "could not listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
