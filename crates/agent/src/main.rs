//! `llm-router-agent`: parses the settings, wires Ctrl-C and SIGTERM, and calls [`run`].

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgMatches, CommandFactory as _};
use llm_router_agent::settings_file::SettingsFile;
use llm_router_agent::{Cli, run};
use llm_router_common::cli::{effective_settings, init_logging, render};

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
        println!(
            "\nconfiguration OK: registers as {:?} with {}",
            config.machine_name, config.coordinator_url
        );
        return Ok(());
    }
    if print_config {
        println!("{config}");
        return Ok(());
    }

    // Installed before anything else runs, so that an early signal is not lost.
    let shutdown = shutdown_signal()?;
    run(config, shutdown).await?;
    Ok(())
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
