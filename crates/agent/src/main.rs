//! `llm-router-agent`: parses the settings, wires Ctrl-C and SIGTERM, and calls [`run`].

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgMatches, CommandFactory as _};
use std::sync::Arc;

use clap::parser::ValueSource;
use llm_router_agent::panel::form::Locks;
use llm_router_agent::panel::{BuildConfig, Panel, PanelSettings};
use llm_router_agent::settings_file::SettingsFile;
use llm_router_agent::status::{self, AgentStatus};
use llm_router_agent::{Cli, run, run_reconfigurable, supervise};
use llm_router_common::cli::{effective_settings, init_logging, render};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, matches) = Cli::parse_args_with_matches();
    // Logs go to stderr so that stdout carries only what was asked for
    // (`--print-config`); flushed when main returns.
    let _logs = init_logging(cli.log_format);
    match agent_main(cli, &matches).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn agent_main(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let settings = match cli.settings_file_path(env) {
        Some(path) => SettingsFile::load(&path)?,
        None => None,
    };
    let (print_config, check_config) = (cli.print_config, cli.check_config);
    let no_tray = llm_router_desktop::tray_unavailable(
        cli.no_tray || llm_router_desktop::tray_off_by_env(env),
        env,
    );
    let desktop_start = no_tray.is_none();
    let manage_ollama = cli.manage_ollama.unwrap_or(desktop_start);
    let panel_on = cli.settings_panel.unwrap_or(desktop_start);
    let (settings_port, settings_path) = (cli.settings_port, cli.settings_file_path(env));
    if check_config {
        print!(
            "{}",
            render(&effective_settings(&Cli::command(), matches, |id| {
                settings.as_ref().and_then(|file| file.value_of(id))
            }))
        );
    }
    let base_cli = cli.clone();
    let config = cli
        .into_config(settings.as_ref(), env, sysinfo::System::host_name)
        .context("invalid configuration")?;
    if check_config {
        // What the unset ones resolve to (machine name, Ollama URL, identity file…).
        println!("\nresolved:\n{config}");
        println!(
            "\nconfiguration OK: registers as {:?} with {}",
            config.machine_name,
            config.coordinator_url.origin().ascii_serialization()
        );
        return Ok(());
    }
    if print_config {
        println!("{config}");
        return Ok(());
    }
    if let Some(reason) = &no_tray {
        tracing::info!("no tray icon ({reason}): running headless");
    }

    // Installed before anything else runs, so that an early signal is not lost.
    let shutdown = shutdown_signal()?;
    let stop = CancellationToken::new();
    let supervisor = manage_ollama
        .then(|| supervise_ollama(&config, stop.clone()))
        .flatten();
    let until_shutdown = async {
        shutdown.await;
        stop.cancel();
    };
    let ran = match settings_path.filter(|_| panel_on) {
        None => {
            if panel_on {
                tracing::warn!(
                    "no settings panel: no data folder to save settings in (set LLM_ROUTER_DATA_DIR or --settings-file)"
                );
            }
            run(config, until_shutdown).await
        }
        Some(settings_path) => {
            let first_start = desktop_start
                && settings.is_none()
                && matches.value_source("coordinator_url") == Some(ValueSource::DefaultValue);
            let locks = Locks::from_matches(matches, env);
            let build: Arc<BuildConfig> = Arc::new(move |file: &SettingsFile| {
                base_cli.clone().into_config(
                    Some(file),
                    |name| std::env::var(name).ok(),
                    sysinfo::System::host_name,
                )
            });
            let (configs, watched) = watch::channel(config.clone());
            let initial =
                AgentStatus::starting(config.coordinator_url.as_str(), &config.machine_name);
            let (mut reporter, controls) = status::channels(initial);
            let panel = Panel::start(
                PanelSettings {
                    port: settings_port,
                    settings_path,
                    locks,
                    build,
                    configs,
                    status: controls.status.clone(),
                },
                stop.clone(),
            )
            .await
            .with_context(|| {
                format!("cannot start the settings panel on 127.0.0.1:{settings_port}")
            })?;
            announce_panel(&panel, env);
            if first_start {
                tracing::info!("nothing is configured yet: opening the settings panel");
                if let Err(problem) = llm_router_desktop::open_in_browser(&panel.url) {
                    tracing::warn!("{problem}");
                }
            }
            let ran = run_reconfigurable(watched, until_shutdown, &mut reporter).await;
            drop(controls);
            ran
        }
    };
    // The agent said goodbye; now the Ollama it started, if any, stops.
    stop.cancel();
    if let Some(supervisor) = supervisor {
        let _ = supervisor.await;
    }
    ran?;
    Ok(())
}

/// Says where the settings panel is. Its link carries this start's token: it
/// goes to the terminal (stdout), never into the log, and not into a service
/// manager's journal.
fn announce_panel(panel: &Panel, env: impl Fn(&str) -> Option<String>) {
    tracing::info!(
        address = %panel.addr,
        "settings panel listening on 127.0.0.1 (its link, with this start's token, is on stdout and in the tray)"
    );
    if env("JOURNAL_STREAM").is_none() {
        println!("Settings panel: {}", panel.url);
    }
}

/// Supervises Ollama until `stop`, when an `ollama` binary is on PATH.
fn supervise_ollama(
    config: &llm_router_agent::AgentConfig,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let path = std::env::var_os("PATH");
    let Some(binary) = supervise::find_ollama(path.as_deref()) else {
        tracing::info!("no ollama binary on PATH: Ollama is not supervised");
        return None;
    };
    let (state, _) = tokio::sync::watch::channel(supervise::Supervision::Checking);
    Some(tokio::spawn(supervise::supervise(
        binary,
        config.ollama_api_base.clone(),
        state,
        stop.cancelled_owned(),
    )))
}

/// Completes on Ctrl-C, or on SIGTERM where there is one (service managers, containers).
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C (SIGINT)")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("interrupted (Ctrl-C); shutting down"),
                _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => tracing::info!("interrupted (Ctrl-C); shutting down"),
                Err(error) => {
                    tracing::error!(%error, "cannot listen for Ctrl-C; stop the agent another way");
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}
