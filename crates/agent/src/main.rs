//! `llm-router-agent`: parses the settings, wires Ctrl-C and SIGTERM, and calls [`run`].

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgMatches, CommandFactory as _};
use llm_router_agent::settings_file::SettingsFile;
use llm_router_agent::{Cli, run, supervise};
use llm_router_common::cli::{effective_settings, init_logging, render};
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
    let manage_ollama = cli
        .manage_ollama
        .unwrap_or_else(|| llm_router_desktop::tray_unavailable(false, env).is_none());
    if check_config {
        print!(
            "{}",
            render(&effective_settings(&Cli::command(), matches, |id| {
                settings.as_ref().and_then(|file| file.value_of(id))
            }))
        );
    }
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

    // Installed before anything else runs, so that an early signal is not lost.
    let shutdown = shutdown_signal()?;
    let stop = CancellationToken::new();
    let supervisor = manage_ollama
        .then(|| supervise_ollama(&config, stop.clone()))
        .flatten();
    let ran = run(config, async {
        shutdown.await;
        stop.cancel();
    })
    .await;
    // The agent said goodbye; now the Ollama it started, if any, stops.
    stop.cancel();
    if let Some(supervisor) = supervisor {
        let _ = supervisor.await;
    }
    ran?;
    Ok(())
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
