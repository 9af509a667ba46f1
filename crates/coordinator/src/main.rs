//! `llm-router`: parses the command line and runs the coordinator (and,
//! with `--demo`, a simulated fleet beside it): headless on a server, with
//! the tray icon on the main thread on a desktop start. On Windows it is a
//! windows-subsystem program, so that a start from Explorer opens no console
//! window; see `llm_router_desktop::console` for where its output goes.
#![cfg_attr(windows, windows_subsystem = "windows")]

use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use llm_router_coordinator::{Cli, tray};
use llm_router_desktop::Tray;
use tokio_util::sync::CancellationToken;

/// mimalloc: the request path allocates small buffers on every thread, and glibc's
/// allocator spent a sixth of the router's CPU on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The chain of causes on one line, never a backtrace (RUST_BACKTRACE is
        // for panics): what the user did wrong, or what failed, and why.
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    // Before anything is printed: a Windows start from a terminal logs there.
    let console = llm_router_desktop::console::attach();
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // To stderr, or to `coordinator.log` in the data folder when there is no
    // console (Windows, started from Explorer). Flushed when main returns:
    // the last lines of a shutdown are not lost.
    let data_dir = cli.data_folder();
    let log_file =
        llm_router_desktop::console::log_file(console, data_dir.as_deref(), "coordinator.log");
    let logs = llm_router_common::cli::init_logging(cli.log_format, log_file.as_deref());
    if cli.check_config {
        if llm_router_coordinator::server::check_config(&cli, &matches) {
            return Ok(());
        }
        drop(logs);
        std::process::exit(1);
    }
    if let Some(command) = cli.command.take() {
        let status = runtime()?.block_on(run_command(command, &cli))?;
        if status != 0 {
            drop(logs);
            std::process::exit(status.into());
        }
        return Ok(());
    }
    let env = |name: &str| std::env::var(name).ok();
    match llm_router_desktop::tray_unavailable(
        cli.no_tray || llm_router_desktop::tray_off_by_env(env),
        env,
    ) {
        Some(reason) => {
            tracing::info!("no tray icon ({reason}): running headless");
            runtime()?.block_on(coordinator_main(cli, None))
        }
        None => run_with_tray(cli),
    }
}

/// A subcommand (`keys`, `admin`, `models`, `pull`, `rm`, `nodes`); answers the exit status.
async fn run_command(
    command: llm_router_coordinator::config::Command,
    cli: &Cli,
) -> anyhow::Result<u8> {
    let data_dir = cli
        .data_folder()
        .context("no home folder found; set LLM_ROUTER_DATA_DIR or --data-dir")?;
    llm_router_coordinator::commands::run(command, &data_dir).await
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The tray on this thread, the coordinator beside it; the process ends when
/// the coordinator does.
fn run_with_tray(cli: Cli) -> anyhow::Result<()> {
    llm_router_desktop::run_beside(
        tray::menu("…", None),
        move |tray| runtime()?.block_on(coordinator_main(cli, tray)),
        || Err(anyhow::anyhow!("the coordinator thread panicked")),
    )
}

async fn coordinator_main(mut cli: Cli, tray: Option<Tray>) -> anyhow::Result<()> {
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

    // Quit in the tray stops the coordinator as a signal does.
    let quit = CancellationToken::new();
    let address = {
        let addr = listener.local_addr()?;
        let shown = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        } else {
            addr
        };
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{shown}")
    };
    let tray_quit = quit.clone();
    let observe = move |registry: Arc<llm_router_coordinator::registry::NodeRegistry>| {
        let Some(Tray { handle, actions }) = tray else {
            return;
        };
        tokio::spawn(tray::drive(
            address,
            move || {
                Some(tray::Fleet {
                    nodes: registry.len() as u64,
                    routable: registry.snapshot().nodes.len() as u64,
                })
            },
            actions,
            move |menu| handle.show(menu),
            tray_quit,
        ));
    };
    let shutdown = {
        let quit = quit.clone();
        async move {
            tokio::select! {
                () = shutdown_signal() => {}
                () = quit.cancelled() => {}
            }
        }
    };

    let Some(nodes) = cli.demo else {
        return llm_router_coordinator::run_observed(listener, config, shutdown, observe).await;
    };

    // A data folder the operator gave is kept: the demo's nodes keep their ids in it.
    let kept_in = demo_dir.is_none().then(|| config.data_dir.clone());
    run_demo(
        listener,
        config,
        nodes,
        demo_token.flatten(),
        kept_in,
        shutdown,
        observe,
    )
    .await?;
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
    kept_in: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    observe: impl FnOnce(Arc<llm_router_coordinator::registry::NodeRegistry>) + Send + 'static,
) -> anyhow::Result<()> {
    use llm_router_coordinator::demo::{DemoFleet, banner};

    let url = format!("http://{}", listener.local_addr()?);
    let stop_server = CancellationToken::new();
    let mut server = tokio::spawn(llm_router_coordinator::run_observed(
        listener,
        config,
        stop_server.clone().cancelled_owned(),
        observe,
    ));
    let fleet = DemoFleet::start_with_token(&url, nodes, token, kept_in.as_deref()).await?;
    println!("{}", banner(&url, &fleet));
    tokio::select! {
        () = shutdown => {}
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
    _kept_in: Option<std::path::PathBuf>,
    _shutdown: impl Future<Output = ()> + Send + 'static,
    _observe: impl FnOnce(Arc<llm_router_coordinator::registry::NodeRegistry>) + Send + 'static,
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
