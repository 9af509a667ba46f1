//! Start-up and shutdown: check the configuration (`--check-config`), load
//! the registry, start the background tasks, serve on a listener the caller
//! bound, and stop within the grace given to running requests.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, app};
use crate::auth::node_token::TokenSource;
use crate::auth::{Access, StartNotices, machine_host_name};
use crate::config::{Cli, Config};
use crate::health::{run_health_monitor, run_node_prober};
use crate::registry::persist::{PersistQueue, run_writer};
use crate::registry::store::{Loaded, RegistryStore};
use crate::registry::{NodeRegistry, RegistrySettings};
use crate::serve::Stop;

/// `llm-router --check-config`: prints every setting with where its value
/// came from (secrets redacted), then checks what the coordinator needs to
/// start: the settings themselves, the TLS files, the node CA file and a
/// writable data folder. Every problem found goes to stderr; `false` when
/// there was one.
pub fn check_config(cli: &Cli, matches: &clap::ArgMatches) -> bool {
    use clap::CommandFactory as _;
    use llm_router_common::cli::{effective_settings, render};

    print!(
        "{}",
        render(&effective_settings(&Cli::command(), matches, |_| None))
    );
    let mut problems = Vec::new();
    match cli.config() {
        Ok(config) => {
            println!(
                "\nlistens on {}, keeps its data in {}",
                std::net::SocketAddr::new(cli.host(), cli.port),
                config.data_dir.display()
            );
            if let Some(tls) = &config.tls
                && let Err(e) = crate::tls::server_config(&tls.cert, &tls.key)
            {
                problems.push(format!("{e:#}"));
            }
            if let Err(e) = crate::proxy::upstream_client(&config.proxy) {
                problems.push(format!("{e:#}"));
            }
            if let Some(problem) = data_dir_problem(&config.data_dir) {
                problems.push(problem);
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    if problems.is_empty() {
        println!("configuration OK: the coordinator can start with these settings");
        return true;
    }
    eprintln!(
        "the configuration has {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
    false
}

/// Why the coordinator could not keep its data in `dir`: it must be a
/// writable folder, or be creatable in one.
fn data_dir_problem(dir: &std::path::Path) -> Option<String> {
    let shown = dir.display();
    let writable_in = match dir.try_exists() {
        Ok(true) if !dir.is_dir() => {
            return Some(format!("the data folder {shown} is not a folder"));
        }
        Ok(true) => dir,
        // Created at start, in the nearest folder that exists.
        Ok(false) => match dir.ancestors().skip(1).find(|p| p.is_dir()) {
            Some(parent) => parent,
            None => return Some(format!("the data folder {shown} cannot be created")),
        },
        Err(e) => return Some(format!("the data folder {shown} cannot be read: {e}")),
    };
    tempfile::tempfile_in(writable_in).err().map(|e| {
        format!(
            "the data folder {shown} is not writable ({}: {e})",
            writable_in.display()
        )
    })
}

/// Creates the data folder and its parents as needed; a folder it creates is
/// its owner's only (it holds the registry, keys and the request history).
fn data_dir_builder() -> std::fs::DirBuilder {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

/// Loads the registry from `config.data_dir`, moving a corrupt file aside.
pub fn load_registry(config: &Config) -> anyhow::Result<(Arc<NodeRegistry>, RegistryStore)> {
    data_dir_builder()
        .create(&config.data_dir)
        .with_context(|| {
            format!(
                "could not create the data folder {}",
                config.data_dir.display()
            )
        })?;
    let store = RegistryStore::in_dir(&config.data_dir);
    let settings = RegistrySettings {
        heartbeat_interval: config.heartbeat_interval,
        agent_timeout: config.agent_timeout,
    };
    let queue = Arc::new(PersistQueue::new());
    let loaded = store
        .load()
        .with_context(|| format!("could not read {}", store.path().display()))?;
    let registry = match loaded {
        Loaded::Missing => {
            tracing::info!(path = %store.path().display(), "no registry file yet; starting with an empty fleet");
            NodeRegistry::new(settings, queue)
        }
        Loaded::Nodes(nodes) => {
            tracing::info!(path = %store.path().display(), nodes = nodes.len(), "registry loaded");
            NodeRegistry::restore(settings, queue, nodes)
        }
        Loaded::Corrupt {
            reason,
            moved_to,
            nodes,
        } => {
            tracing::error!(
                path = %store.path().display(),
                moved_to = %moved_to.display(),
                %reason,
                from_journal = nodes.len(),
                "registry file is corrupt; it was moved aside and the coordinator starts with the nodes its journal holds (agents will register again)"
            );
            NodeRegistry::restore(settings, queue, nodes)
        }
    };
    Ok((Arc::new(registry), store))
}

/// Runs the coordinator on `listener` until `shutdown` completes, then
/// writes the registry one last time.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_observed(listener, config, shutdown, |_| {}).await
}

/// [`run`], handing `observe` the registry once it is loaded (the tray reads
/// the fleet's size from it).
pub async fn run_observed(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    observe: impl FnOnce(Arc<NodeRegistry>),
) -> anyhow::Result<()> {
    // A bad certificate or key stops the start before anything else runs.
    let tls = config
        .tls
        .as_ref()
        .map(|files| crate::tls::server_config(&files.cert, &files.key))
        .transpose()?;
    let (registry, store) = load_registry(&config)?;
    observe(Arc::clone(&registry));
    let stop = CancellationToken::new();
    let writer = tokio::spawn(run_writer(
        Arc::clone(&registry),
        store,
        stop.clone().cancelled_owned(),
    ));
    let monitor = tokio::spawn(run_health_monitor(
        Arc::clone(&registry),
        config.health_check_interval,
        stop.clone().cancelled_owned(),
    ));
    let addr = listener.local_addr()?;
    let (mut access, notices) = Access::start(&config.access, &config.data_dir)?;
    access.own_addr = Some(addr);
    let access = Arc::new(access);
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    announce(&access, &notices, scheme, addr);
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "coordinator listening");
    let keys_reloader = tokio::spawn(crate::health::every(
        KEYS_RELOAD_INTERVAL,
        stop.clone().cancelled_owned(),
        {
            let keys = Arc::clone(&access.keys);
            move || {
                keys.reload_if_changed();
                std::future::ready(())
            }
        },
    ));

    // Request history: a writer thread fed by a sink of the proxy.
    let mut sinks = crate::proxy::record::RequestSinks::default();
    sinks.add(Arc::new(crate::proxy::record::RequestLog));
    let history = if config.history.enabled {
        let history = crate::history::History::start(&config.data_dir, config.history.clone());
        sinks.add(history.sink());
        Arc::new(history)
    } else {
        tracing::info!("request history is off (--no-history): no request is recorded");
        Arc::new(crate::history::History::off())
    };
    let mut proxy_settings = config.proxy.clone();
    if !config.history.enabled {
        // Bodies are captured only for the history.
        proxy_settings.capture_bytes = 0;
    }
    let state = AppState::with_sinks(Arc::clone(&registry), proxy_settings, sinks)?
        .with_access(access)
        .with_history(Arc::clone(&history));
    let shutting_down = state.shutdown.clone();
    let cutoff = Arc::clone(state.proxy.cutoff());
    let in_flight = Arc::clone(state.proxy.in_flight_gate());
    let prober = tokio::spawn(run_node_prober(
        Arc::clone(&registry),
        state.proxy.client().clone(),
        config.proxy.probe_interval,
        config.proxy.health,
        stop.clone().cancelled_owned(),
    ));
    let poller = tokio::spawn(crate::agentless::run_agentless_poller(
        Arc::clone(&registry),
        state.proxy.client().clone(),
        config.heartbeat_interval,
        stop.clone().cancelled_owned(),
    ));
    let planner = state.placer.clone().map(|placer| {
        tokio::spawn(crate::placement::run_planner(
            placer,
            Arc::clone(&registry),
            state.proxy.client().clone(),
            config.proxy.first_byte_timeout,
            stop.clone().cancelled_owned(),
        ))
    });
    let stop_serving = Stop::default();
    let grace = config.shutdown_grace;
    let running_at_stop = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stopping = tokio::spawn({
        let stop_serving = stop_serving.clone();
        let cutoff = Arc::clone(&cutoff);
        let running_at_stop = Arc::clone(&running_at_stop);
        async move {
            shutdown.await;
            let running = in_flight.used();
            running_at_stop.store(running, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                running,
                grace_secs = grace.as_secs_f64(),
                "stopping: new requests get 503; running ones may finish within the grace"
            );
            cutoff.stop_accepting();
            shutting_down.cancel();
            stop_serving.accepting.cancel();
            tokio::time::sleep(grace).await;
            tracing::warn!(
                running = in_flight.used(),
                "grace over: cutting the requests still running"
            );
            cutoff.cut();
            // Their error chunks go out; then whatever is still open is closed.
            tokio::time::sleep(CUT_FLUSH).await;
            stop_serving.connections.cancel();
        }
    });
    let router = app(state);
    let listener = listener.into_std()?;
    let served = match tls {
        Some(tls) => {
            crate::serve::serve_on_threads(
                listener,
                move |listener| crate::tls::TlsListener::new(listener, Arc::clone(&tls)),
                router,
                config.limits,
                &config.threads,
                stop_serving,
            )
            .await
        }
        None => {
            crate::serve::serve_on_threads(
                listener,
                |listener| {
                    // Without TCP_NODELAY, small streamed chunks wait for delayed ACKs (~40 ms each).
                    Ok(listener.tap_io(|tcp| {
                        if let Err(e) = tcp.set_nodelay(true) {
                            tracing::debug!(error = %e, "could not set TCP_NODELAY");
                        }
                    }))
                },
                router,
                config.limits,
                &config.threads,
                stop_serving,
            )
            .await
        }
    };
    stopping.abort();
    let cut = cutoff.count();
    let running = running_at_stop.load(std::sync::atomic::Ordering::Relaxed) as u64;
    let drained = running.saturating_sub(cut);
    if cut > 0 {
        tracing::warn!(
            drained,
            cut,
            "stopped serving; some requests were cut at the end of the grace"
        );
    } else {
        tracing::info!(drained, "stopped serving; every running request finished");
    }
    stop.cancel();
    let _ = keys_reloader.await;
    let _ = monitor.await;
    let _ = prober.await;
    let _ = poller.await;
    if let Some(planner) = planner {
        let _ = planner.await;
    }
    history.shutdown().await;
    writer.await.context("registry writer failed")?;
    served.context("could not start the serving threads")?;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// How long answers cut at the end of the grace have to send their error
/// chunk before their connections are closed.
const CUT_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// How often `keys.json` is checked for changes made by `llm-router keys …`.
const KEYS_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Tells whoever started the coordinator what its security needs from them: the
/// agent command line with the node token it made, and the one-time setup link.
/// Printed on stdout, not logged, so that no token ends up in a log collector;
/// under systemd, whose journal keeps stdout, only where to find them.
fn announce(access: &Access, notices: &StartNotices, scheme: &str, addr: std::net::SocketAddr) {
    // systemd sets this when stdout goes to the journal.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let host = if addr.ip().is_unspecified() {
        machine_host_name().unwrap_or_else(|| "<this machine's address>".to_owned())
    } else {
        addr.ip().to_string()
    };
    let base = format!("{scheme}://{}", format_authority(&host, addr.port()));
    match &notices.node_token_source {
        Some(TokenSource::Generated(path) | TokenSource::Stored(path)) => {
            tracing::info!(path = %path.display(), "agents must present the node token stored in the data folder");
            if notices.stored_node_token.is_some() && journal {
                println!(
                    "\nAgents join this coordinator with its node token, kept in {} \
                     (not printed: this output goes to the journal):\n\n    \
                     LLM_ROUTER_NODE_TOKEN=<that token> llm-router-agent --coordinator-url {base}\n",
                    path.display()
                );
            } else if let Some(token) = &notices.stored_node_token {
                println!(
                    "\nAgents join this coordinator with its node token (kept in {}):\n\n    \
                     LLM_ROUTER_NODE_TOKEN={token} llm-router-agent --coordinator-url {base}\n",
                    path.display()
                );
            }
        }
        Some(TokenSource::Configured) => {
            tracing::info!("agents must present the configured node token")
        }
        Some(TokenSource::Open) | None => tracing::info!(
            "no node token: any agent that can reach this coordinator may register (loopback only)"
        ),
    }
    match &access.admin {
        None => {
            tracing::info!("the dashboard and management API are open to whoever can reach them")
        }
        Some(_) => tracing::info!("the dashboard and management API require an operator login"),
    }
    if notices.setup_token.is_some() && journal {
        println!(
            "\nNo admin password is set. Set LLM_ROUTER_ADMIN_PASSWORD (in the service's \
             environment file) and restart, or run `llm-router admin set-password` \
             (the one-time setup link is not printed: this output goes to the journal).\n"
        );
    } else if let Some(token) = &notices.setup_token {
        println!(
            "\nNo admin password is set. Open this link once to choose one \
             (or run `llm-router admin set-password`):\n\n    {base}/setup?token={token}\n"
        );
    }
    if access.require_api_key {
        tracing::info!(keys = access.keys.len(), "inference requires an API key");
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn format_authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
