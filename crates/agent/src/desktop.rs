//! The agent's tray: its menu for each [`AgentStatus`], and what each
//! choice does. Both are plain functions; the tray icon itself is
//! `llm_router_desktop`'s.

use llm_router_desktop::{IconState, Item, Menu};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::status::{AgentStatus, Command, Controls, Link};

/// Menu actions.
pub const OPEN_DASHBOARD: &str = "open-dashboard";
pub const SETTINGS: &str = "settings";
pub const PAUSE: &str = "pause";
pub const RESUME: &str = "resume";
pub const QUIT: &str = "quit";

/// The status line: what a user needs to know at a glance.
pub fn status_line(status: &AgentStatus) -> String {
    match (&status.link, status.ollama_up) {
        (Link::Retrying { reason }, _) => format!("Retrying: {reason}"),
        (_, Some(false)) => "Ollama not reachable".to_owned(),
        (Link::Connected, _) if status.draining => format!(
            "Paused: connected to {} as {}, taking no new requests",
            status.coordinator, status.machine_name
        ),
        (Link::Connected, _) => format!(
            "Connected to {} as {}",
            status.coordinator, status.machine_name
        ),
        (Link::Starting, _) => format!("Connecting to {}…", status.coordinator),
    }
}

/// The tray for `status`; `settings` is the settings panel's address, when it runs.
pub fn menu(status: &AgentStatus, settings: Option<&str>) -> Menu {
    let icon = match (&status.link, status.ollama_up) {
        (Link::Retrying { .. }, _) => IconState::Retrying,
        (_, Some(false)) => IconState::Problem,
        (Link::Starting, _) => IconState::Retrying,
        (Link::Connected, _) => IconState::Ok,
    };
    let connected = status.link == Link::Connected && status.node_id.is_some();
    let (pause, label) = if status.draining {
        (RESUME, "Resume")
    } else {
        (PAUSE, "Pause (finish running requests, take no new ones)")
    };
    let line = status_line(status);
    let mut items = vec![Item::Label(line.clone())];
    if let Some(supervision) = &status.supervision {
        items.push(Item::Label(supervision.clone()));
    }
    items.push(Item::Separator);
    Menu {
        icon,
        tooltip: format!("llm-router agent: {line}"),
        items: [
            items,
            vec![
                Item::Action {
                    action: OPEN_DASHBOARD,
                    label: "Open dashboard".to_owned(),
                    enabled: true,
                },
                Item::Action {
                    action: SETTINGS,
                    label: "Settings…".to_owned(),
                    enabled: settings.is_some(),
                },
                Item::Action {
                    action: pause,
                    label: label.to_owned(),
                    enabled: connected,
                },
                Item::Separator,
                Item::Action {
                    action: QUIT,
                    label: "Quit".to_owned(),
                    enabled: true,
                },
            ],
        ]
        .concat(),
    }
}

/// What choosing a menu item does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open this address in the default browser.
    Open(String),
    /// Ask the running agent.
    Agent(Command),
    /// Say goodbye to the coordinator and exit 0.
    Quit,
}

/// The effect of `action` chosen in the menu for `status`; `None` for an
/// item that is not there or not enabled (a stale click).
pub fn effect(action: &str, status: &AgentStatus, settings: Option<&str>) -> Option<Effect> {
    if !menu(status, settings).allows(action) {
        return None;
    }
    match action {
        OPEN_DASHBOARD => Some(Effect::Open(status.dashboard_url())),
        SETTINGS => settings.map(|url| Effect::Open(url.to_owned())),
        PAUSE => Some(Effect::Agent(Command::Drain(true))),
        RESUME => Some(Effect::Agent(Command::Drain(false))),
        QUIT => Some(Effect::Quit),
        _ => None,
    }
}

/// Keeps the tray in step with the agent and carries out what is chosen in
/// it, until `quit` is cancelled (choosing Quit cancels it).
///
/// `settings` is the settings panel's link; `show` puts a menu in the tray
/// (`false` once the tray is gone); `open` opens a link in the browser.
pub async fn drive(
    mut controls: Controls,
    settings: Option<String>,
    mut chosen: mpsc::UnboundedReceiver<String>,
    show: impl Fn(Menu) -> bool,
    open: impl Fn(&str),
    quit: CancellationToken,
) {
    let settings = settings.as_deref();
    if !show(menu(&controls.status.borrow_and_update(), settings)) {
        return;
    }
    loop {
        tokio::select! {
            changed = controls.status.changed() => {
                let menu = match changed {
                    Ok(()) => menu(&controls.status.borrow_and_update(), settings),
                    Err(_) => return,
                };
                if !show(menu) {
                    return;
                }
            }
            action = chosen.recv() => {
                let Some(action) = action else { return };
                let status = controls.status.borrow().clone();
                match effect(&action, &status, settings) {
                    Some(Effect::Open(url)) => open(&url),
                    Some(Effect::Agent(command)) => {
                        let _ = controls.commands.send(command).await;
                    }
                    Some(Effect::Quit) => {
                        tracing::info!("Quit chosen in the tray: saying goodbye to the coordinator");
                        quit.cancel();
                        return;
                    }
                    None => tracing::debug!(action, "a tray item that is not available now"),
                }
            }
            () = quit.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PANEL: Option<&str> = Some("http://127.0.0.1:5000/?token=t");

    fn connected() -> AgentStatus {
        AgentStatus {
            link: Link::Connected,
            node_id: Some(llm_router_common::NodeId::nil()),
            ollama_up: Some(true),
            ..AgentStatus::starting("http://coordinator:8080", "gaming-pc")
        }
    }

    fn enabled(menu: &Menu) -> Vec<&'static str> {
        menu.items
            .iter()
            .filter_map(|item| match item {
                Item::Action {
                    action,
                    enabled: true,
                    ..
                } => Some(*action),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn connected_shows_where_and_as_whom_and_offers_pause() {
        let menu = menu(&connected(), PANEL);
        assert_eq!(menu.icon, IconState::Ok);
        assert_eq!(
            menu.labels(),
            [
                "Connected to http://coordinator:8080 as gaming-pc",
                "---",
                "Open dashboard",
                "Settings…",
                "Pause (finish running requests, take no new ones)",
                "---",
                "Quit"
            ]
        );
        assert_eq!(enabled(&menu), [OPEN_DASHBOARD, SETTINGS, PAUSE, QUIT]);
    }

    #[test]
    fn retrying_says_why_and_cannot_pause() {
        let status = AgentStatus {
            link: Link::Retrying {
                reason: "coordinator unreachable: connection refused".into(),
            },
            ..connected()
        };
        let menu = menu(&status, PANEL);
        assert_eq!(menu.icon, IconState::Retrying);
        assert_eq!(
            menu.labels()[0],
            "Retrying: coordinator unreachable: connection refused"
        );
        assert_eq!(enabled(&menu), [OPEN_DASHBOARD, SETTINGS, QUIT]);
        assert_eq!(effect(PAUSE, &status, PANEL), None);
    }

    #[test]
    fn ollama_down_is_the_problem_icon() {
        let status = AgentStatus {
            ollama_up: Some(false),
            ..connected()
        };
        let menu = menu(&status, PANEL);
        assert_eq!(menu.icon, IconState::Problem);
        assert_eq!(menu.labels()[0], "Ollama not reachable");
    }

    #[test]
    fn a_paused_node_offers_resume_and_says_it_is_paused() {
        let status = AgentStatus {
            draining: true,
            ..connected()
        };
        let menu = menu(&status, PANEL);
        assert!(
            menu.labels()[0].starts_with("Paused:"),
            "{:?}",
            menu.labels()
        );
        assert!(menu.allows(RESUME) && menu.find(PAUSE).is_none());
        assert_eq!(
            effect(RESUME, &status, PANEL),
            Some(Effect::Agent(Command::Drain(false)))
        );
    }

    #[test]
    fn what_the_agent_does_about_ollama_is_a_line_of_its_own() {
        let status = AgentStatus {
            ollama_up: Some(false),
            supervision: crate::supervise::Supervision::Restarting {
                reason: "exit status: 1".into(),
                in_secs: 4,
            }
            .describe(),
            ..connected()
        };
        let menu = menu(&status, PANEL);
        assert_eq!(
            menu.labels()[..3],
            [
                "Ollama not reachable",
                "Ollama exited (exit status: 1); starting it again in 4 s",
                "---"
            ]
        );
        assert_eq!(enabled(&menu), [OPEN_DASHBOARD, SETTINGS, PAUSE, QUIT]);
    }

    #[test]
    fn starting_cannot_pause_yet() {
        let status = AgentStatus::starting("http://c:8080", "mac");
        let menu = menu(&status, None);
        assert_eq!(menu.icon, IconState::Retrying);
        assert_eq!(menu.labels()[0], "Connecting to http://c:8080…");
        assert_eq!(enabled(&menu), [OPEN_DASHBOARD, QUIT]);
    }

    #[test]
    fn each_action_does_what_its_label_says() {
        let status = connected();
        assert_eq!(
            effect(OPEN_DASHBOARD, &status, PANEL),
            Some(Effect::Open("http://coordinator:8080/dashboard".into()))
        );
        assert_eq!(
            effect(SETTINGS, &status, PANEL),
            Some(Effect::Open(PANEL.unwrap().into()))
        );
        assert_eq!(
            effect(PAUSE, &status, PANEL),
            Some(Effect::Agent(Command::Drain(true)))
        );
        assert_eq!(effect(QUIT, &status, PANEL), Some(Effect::Quit));
        // Without a panel, Settings does nothing; unknown actions neither.
        assert_eq!(effect(SETTINGS, &status, None), None);
        assert_eq!(effect("format-disk", &status, PANEL), None);
    }
}
