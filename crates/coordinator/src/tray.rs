//! The coordinator's tray on a desktop start: where it listens, how many
//! nodes take requests, Open dashboard, Quit. Its menu is a plain value, so
//! every label is tested without a display; the icon is
//! `llm_router_desktop::tray`'s.

use std::time::Duration;

use llm_router_desktop::{IconState, Item, Menu};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Menu actions.
pub const OPEN_DASHBOARD: &str = "open-dashboard";
pub const QUIT: &str = "quit";

/// How often the tray asks the coordinator about its fleet.
const REFRESH: Duration = Duration::from_secs(2);

/// The fleet as the registry has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet {
    pub nodes: u64,
    /// Online, not draining, with models to serve.
    pub routable: u64,
}

/// The tray for the coordinator at `address`; `fleet` is `None` while the
/// coordinator is not serving (starting, or stopped).
pub fn menu(address: &str, fleet: Option<Fleet>) -> Menu {
    let (icon, line) = match fleet {
        Some(Fleet { nodes, routable }) => (
            if routable > 0 {
                IconState::Ok
            } else {
                IconState::Retrying
            },
            match nodes {
                0 => "No nodes yet: start llm-router-agent on each machine".to_owned(),
                1 => format!("{routable} of 1 node taking requests"),
                _ => format!("{routable} of {nodes} nodes taking requests"),
            },
        ),
        None => (IconState::Problem, "Not answering".to_owned()),
    };
    Menu {
        icon,
        tooltip: format!("llm-router coordinator at {address}: {line}"),
        items: vec![
            Item::Label(format!("Coordinator at {address}")),
            Item::Label(line),
            Item::Separator,
            Item::Action {
                action: OPEN_DASHBOARD,
                label: "Open dashboard".to_owned(),
                enabled: true,
            },
            Item::Separator,
            Item::Action {
                action: QUIT,
                label: "Quit".to_owned(),
                enabled: true,
            },
        ],
    }
}

/// Keeps the tray in step with the coordinator at `address` (its base URL;
/// `fleet` reads the registry) and carries out what is chosen, until `quit`
/// (choosing Quit cancels it).
pub async fn drive(
    address: String,
    fleet: impl Fn() -> Option<Fleet>,
    mut chosen: mpsc::UnboundedReceiver<String>,
    show: impl Fn(Menu) -> bool,
    quit: CancellationToken,
) {
    let mut every = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if !show(menu(&address, fleet())) {
                    return;
                }
            }
            action = chosen.recv() => match action.as_deref() {
                Some(OPEN_DASHBOARD) => {
                    if let Err(problem) = llm_router_desktop::open_in_browser(&format!("{address}/dashboard")) {
                        tracing::warn!("{problem}");
                    }
                }
                Some(QUIT) => {
                    tracing::info!("Quit chosen in the tray");
                    quit.cancel();
                    return;
                }
                Some(other) => tracing::debug!(action = other, "an unknown tray action"),
                None => return,
            },
            () = quit.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_menu_says_how_many_nodes_take_requests() {
        let menu = menu(
            "http://127.0.0.1:8080",
            Some(Fleet {
                nodes: 3,
                routable: 2,
            }),
        );
        assert_eq!(menu.icon, IconState::Ok);
        assert_eq!(
            menu.labels(),
            [
                "Coordinator at http://127.0.0.1:8080",
                "2 of 3 nodes taking requests",
                "---",
                "Open dashboard",
                "---",
                "Quit"
            ]
        );
        assert!(menu.allows(OPEN_DASHBOARD) && menu.allows(QUIT));
    }

    #[test]
    fn no_nodes_and_no_answer_have_their_own_icons() {
        let empty = menu(
            "http://c",
            Some(Fleet {
                nodes: 0,
                routable: 0,
            }),
        );
        assert_eq!(empty.icon, IconState::Retrying);
        assert!(empty.labels()[1].starts_with("No nodes yet"));
        let one = menu(
            "http://c",
            Some(Fleet {
                nodes: 1,
                routable: 0,
            }),
        );
        assert_eq!(one.labels()[1], "0 of 1 node taking requests");
        let silent = menu("http://c", None);
        assert_eq!(silent.icon, IconState::Problem);
        assert_eq!(silent.labels()[1], "Not answering");
    }
}
