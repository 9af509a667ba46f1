//! Start-up and shutdown: load the registry, start the background tasks,
//! serve on a listener the caller bound.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, app};
use crate::auth::node_token::TokenSource;
use crate::auth::{Access, StartNotices, machine_host_name};
use crate::config::Config;
use crate::health::{run_health_monitor, run_node_prober};
use crate::registry::persist::{PersistQueue, run_writer};
use crate::registry::store::{Loaded, RegistryStore};
use crate::registry::{NodeRegistry, RegistrySettings};

/// Loads the registry from `config.data_dir`, moving a corrupt file aside.
pub fn load_registry(config: &Config) -> anyhow::Result<(Arc<NodeRegistry>, RegistryStore)> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
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
    // A bad certificate or key stops the start before anything else runs.
    let tls = config
        .tls
        .as_ref()
        .map(|files| crate::tls::server_config(&files.cert, &files.key))
        .transpose()?;
    let (registry, store) = load_registry(&config)?;
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
    let stop_serving = CancellationToken::new();
    tokio::spawn({
        let stop_serving = stop_serving.clone();
        async move {
            shutdown.await;
            shutting_down.cancel();
            stop_serving.cancel();
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

/// How often `keys.json` is checked for changes made by `llm-router keys …`.
const KEYS_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Tells whoever started the coordinator what its security needs from them: the
/// agent command line with the node token it made, and the one-time setup link.
/// Printed on stdout, not logged, so that no token ends up in a log collector.
fn announce(access: &Access, notices: &StartNotices, scheme: &str, addr: std::net::SocketAddr) {
    let host = if addr.ip().is_unspecified() {
        machine_host_name().unwrap_or_else(|| "<this machine's address>".to_owned())
    } else {
        addr.ip().to_string()
    };
    let base = format!("{scheme}://{}", format_authority(&host, addr.port()));
    match &notices.node_token_source {
        Some(TokenSource::Generated(path) | TokenSource::Stored(path)) => {
            tracing::info!(path = %path.display(), "agents must present the node token stored in the data folder");
            if let Some(token) = &notices.stored_node_token {
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
    if let Some(token) = &notices.setup_token {
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
