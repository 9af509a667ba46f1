//! `llm-router-agent`: parses the settings, wires Ctrl-C and SIGTERM, and runs the agent:
//! headless (a terminal, a service manager), or with the tray icon on the main thread
//! and the agent beside it (a desktop start). On Windows it is a windows-subsystem
//! program, so that a start from Explorer opens no console window; see
//! `llm_router_desktop::console` for where its output goes.
#![cfg_attr(windows, windows_subsystem = "windows")]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgMatches, CommandFactory as _};
use std::sync::Arc;

use clap::parser::ValueSource;
use llm_router_agent::panel::form::Locks;
use llm_router_agent::panel::{BuildConfig, Panel, PanelSettings};
use llm_router_agent::settings_file::SettingsFile;
use llm_router_agent::status::{self, AgentStatus};
use llm_router_agent::{Cli, desktop, run_controlled, run_reconfigurable, supervise};
use llm_router_common::cli::{effective_settings, init_logging, render};
use llm_router_desktop::Tray;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // Before anything is printed: a Windows start from a terminal logs there.
    let console = llm_router_desktop::console::attach();
    let (cli, matches) = Cli::parse_args_with_matches();
    // Logs go to stderr so that stdout carries only what was asked for
    // (`--print-config`), or to `agent.log` in the data folder when there is
    // no console (Windows, started from Explorer); flushed when main returns.
    let data_dir = llm_router_agent::settings_file::data_dir(|name| std::env::var(name).ok());
    let log_file = llm_router_desktop::console::log_file(console, data_dir.as_deref(), "agent.log");
    let _logs = init_logging(cli.log_format, log_file.as_deref());
    if cli.install_autostart || cli.remove_autostart {
        return exit_code(autostart(cli.install_autostart));
    }
    let env = |name: &str| std::env::var(name).ok();
    let no_tray = llm_router_desktop::tray_unavailable(
        cli.no_tray || llm_router_desktop::tray_off_by_env(env),
        env,
    );
    let one_off = cli.print_config || cli.check_config;
    match no_tray {
        _ if one_off => run_headless(cli, &matches, false),
        Some(reason) => {
            tracing::info!("no tray icon ({reason}): running headless");
            run_headless(cli, &matches, false)
        }
        None => run_with_tray(cli, matches),
    }
}

/// The agent on a runtime of its own, on this thread.
fn run_headless(cli: Cli, matches: &ArgMatches, desktop_start: bool) -> ExitCode {
    exit_code(
        runtime()
            .and_then(|runtime| runtime.block_on(agent_main(cli, matches, desktop_start, None))),
    )
}

/// `--install-autostart` (`install`) or `--remove-autostart`.
fn autostart(install: bool) -> anyhow::Result<()> {
    use llm_router_desktop::autostart;
    const NAME: &str = "llm-router-agent";
    let exe = std::env::current_exe().context("cannot tell where this program is")?;
    let location = autostart::location(NAME);
    if !install {
        let removed = autostart::remove(NAME, &exe).map_err(anyhow::Error::msg)?;
        println!(
            "{}",
            if removed {
                format!("the agent no longer starts at login (removed {location})")
            } else {
                "the agent was not set to start at login".to_owned()
            }
        );
        return Ok(());
    }
    let given: Vec<String> = std::env::args().skip(1).collect();
    let (args, left_out) = autostart::recorded_args(&given);
    autostart::install(NAME, &exe, &args).map_err(anyhow::Error::msg)?;
    println!(
        "the agent starts at login: {} {} ({location})",
        exe.display(),
        args.join(" ")
    );
    if !left_out.is_empty() {
        println!(
            "not recorded, being secret: {}; save them in the settings panel or agent-settings.json",
            left_out.join(", ")
        );
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn exit_code(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The tray on this thread, the agent beside it; the process ends when the
/// agent does (Quit, a signal).
fn run_with_tray(cli: Cli, matches: ArgMatches) -> ExitCode {
    let initial = desktop::menu(&AgentStatus::starting(&cli.coordinator_url, ""), None);
    llm_router_desktop::run_beside(
        initial,
        move |tray| {
            exit_code(
                runtime()
                    .and_then(|runtime| runtime.block_on(agent_main(cli, &matches, true, tray))),
            )
        },
        || ExitCode::FAILURE,
    )
}

async fn agent_main(
    cli: Cli,
    matches: &ArgMatches,
    desktop_start: bool,
    tray: Option<Tray>,
) -> anyhow::Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let settings_path = cli.settings_file_path(env);
    let settings = match &settings_path {
        Some(path) => SettingsFile::load(path)?,
        None => None,
    };
    let (print_config, check_config) = (cli.print_config, cli.check_config);
    let manage_ollama = cli.manage_ollama.unwrap_or(desktop_start);
    let panel_on = cli.settings_panel.unwrap_or(desktop_start);
    let settings_port = cli.settings_port;
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
    // Installed before anything else runs, so that an early signal is not lost.
    let shutdown = shutdown_signal()?;
    let stop = CancellationToken::new();
    let supervisor = manage_ollama
        .then(|| supervise_ollama(&config, stop.clone()))
        .flatten();
    // Quit in the tray ends the agent as a signal does.
    let quit = CancellationToken::new();
    let until_shutdown = {
        let quit = quit.clone();
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = quit.cancelled() => {}
            }
            stop.cancel();
        }
    };
    let settings_path = settings_path.filter(|_| panel_on);
    if panel_on && settings_path.is_none() {
        tracing::warn!(
            "no settings panel: no data folder to save settings in (set LLM_ROUTER_DATA_DIR or --settings-file)"
        );
    }
    let initial = AgentStatus::starting(config.coordinator_url.as_str(), &config.machine_name);
    let (mut reporter, controls) = status::channels(initial);
    if let Some((_, supervision)) = &supervisor {
        tokio::spawn(report_supervision(
            supervision.clone(),
            Arc::clone(&reporter.status),
        ));
    }
    let ran = if settings_path.is_none() && tray.is_none() {
        run_controlled(config, until_shutdown, &mut reporter).await
    } else {
        let (configs, watched) = watch::channel(config.clone());
        let mut panel_url = None;
        if let Some(settings_path) = settings_path {
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
            panel_url = Some(panel.url);
        }
        if let Some(Tray { handle, actions }) = tray {
            tokio::spawn(desktop::drive(
                controls.clone(),
                panel_url,
                actions,
                move |menu| handle.show(menu),
                |url| {
                    if let Err(problem) = llm_router_desktop::open_in_browser(url) {
                        tracing::warn!("{problem}");
                    }
                },
                quit.clone(),
            ));
        }
        run_reconfigurable(watched, until_shutdown, &mut reporter).await
    };
    drop(controls);
    // The agent said goodbye; now the Ollama it started, if any, stops.
    stop.cancel();
    if let Some((supervisor, _)) = supervisor {
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
) -> Option<(
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Receiver<supervise::Supervision>,
)> {
    let path = std::env::var_os("PATH");
    let Some(binary) = supervise::find_ollama(path.as_deref()) else {
        tracing::info!("no ollama binary on PATH: Ollama is not supervised");
        return None;
    };
    let (state, watched) = tokio::sync::watch::channel(supervise::Supervision::Checking);
    let task = tokio::spawn(supervise::supervise(
        binary,
        config.ollama_api_base.clone(),
        state,
        stop.cancelled_owned(),
    ));
    Some((task, watched))
}

/// Keeps the desktop's status in step with what the supervisor does.
async fn report_supervision(
    mut supervision: tokio::sync::watch::Receiver<supervise::Supervision>,
    status: Arc<watch::Sender<AgentStatus>>,
) {
    loop {
        let described = supervision.borrow_and_update().describe();
        status.send_if_modified(|status| {
            let changed = status.supervision != described;
            status.supervision = described;
            changed
        });
        if supervision.changed().await.is_err() {
            return;
        }
    }
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
