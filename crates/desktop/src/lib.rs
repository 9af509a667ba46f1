//! The desktop side of llm-router: the tray menu as data, and the tray icon
//! that shows it (cargo feature `tray`).
//!
//! - [`Menu`]: what the tray shows, built by each binary from its own state
//!   (the agent's link and Ollama, the coordinator's fleet) as a plain value,
//!   so that every label and every enabled item is tested without a display;
//! - [`open_in_browser`]: the default browser, for the dashboard and the
//!   settings panel;
//! - [`tray_unavailable`]: the hybrid start, a tray on a desktop session and
//!   none under a service manager or with no display;
//! - [`console`]: on Windows, where a start's output goes: the terminal it
//!   came from, or a log file when started from Explorer;
//! - [`autostart`]: starting at login (`--install-autostart`), with
//!   `auto-launch`;
//! - [`STYLESHEET`]: the look the dashboard and the agent's settings panel
//!   share;
//! - `tray` (feature `tray`): the icon and its menu with `tray-icon`, on an
//!   event loop of `tao` that owns the main thread.

pub mod autostart;
pub mod console;

/// The stylesheet of the coordinator's dashboard and of the agent's settings
/// panel, so that both look the same (colours chosen for WCAG 2.1 AA).
pub const STYLESHEET: &str = include_str!("../assets/llm-router.css");

/// The three looks of the icon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IconState {
    /// Working: connected, the inference server answers.
    Ok,
    /// Trying again: the coordinator does not answer or refused.
    Retrying,
    /// Something on this machine is wrong: the inference server is down.
    Problem,
}

/// Side of the tray icon, in pixels.
pub const ICON_SIZE: u32 = 32;

impl IconState {
    /// The state's colour: green, amber, red (the dashboard's status dots).
    pub fn colour(self) -> [u8; 3] {
        match self {
            IconState::Ok => [0x15, 0x80, 0x3d],
            IconState::Retrying => [0xb4, 0x53, 0x09],
            IconState::Problem => [0xb9, 0x1c, 0x1c],
        }
    }

    /// The icon as RGBA pixels, [`ICON_SIZE`] square: a disc in the state's
    /// colour inside a white ring with a dark edge, so that it reads on light
    /// and dark panels alike.
    pub fn pixels(self) -> Vec<u8> {
        let [r, g, b] = self.colour();
        let centre = (ICON_SIZE as f32 - 1.0) / 2.0;
        let mut pixels = Vec::with_capacity((ICON_SIZE * ICON_SIZE * 4) as usize);
        for y in 0..ICON_SIZE {
            for x in 0..ICON_SIZE {
                let distance = (x as f32 - centre).hypot(y as f32 - centre);
                let pixel = match distance {
                    d if d <= 11.5 => [r, g, b, 255],
                    d if d <= 14.5 => [255, 255, 255, 255],
                    d if d <= 15.5 => [40, 40, 40, 200],
                    _ => [0, 0, 0, 0],
                };
                pixels.extend_from_slice(&pixel);
            }
        }
        pixels
    }
}

/// Whether this build has the tray icon: every Windows and macOS build, and
/// Linux builds with the cargo feature `tray`.
pub const HAS_TRAY: bool = cfg!(any(feature = "tray", windows, target_os = "macos"));

#[cfg_attr(
    not(any(feature = "tray", windows, target_os = "macos")),
    path = "no_tray.rs"
)]
pub mod tray;

/// What the program's work gets of the tray: where to show menus, and the
/// actions chosen in them.
#[derive(Debug)]
pub struct Tray {
    pub handle: tray::TrayHandle,
    pub actions: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Runs `work` beside the tray: the tray on this thread (the desktop wants
/// the main thread), `work` on a thread of its own, and the tray closes when
/// `work` returns. When no tray can be shown, says why and runs `work`
/// (given `None`) here. Returns what `work` returned.
pub fn run_beside<T: Send + 'static>(
    initial: Menu,
    work: impl FnOnce(Option<Tray>) -> T + Send + 'static,
    failed: impl FnOnce() -> T,
) -> T {
    let (chosen, actions) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut work = Some(work);
    let mut worker = None;
    let shown = tray::run(
        initial,
        |handle| {
            let work = work.take().expect("the tray starts its work once");
            worker = Some(std::thread::spawn(move || {
                let tray = Tray {
                    handle: handle.clone(),
                    actions,
                };
                let outcome = work(Some(tray));
                handle.close();
                outcome
            }));
        },
        |action| {
            let _ = chosen.send(action.to_owned());
        },
    );
    match (worker, work, shown) {
        (Some(worker), _, _) => worker.join().unwrap_or_else(|_| failed()),
        (None, Some(work), Err(problem)) => {
            tracing::warn!("no tray icon ({problem}): running headless");
            work(None)
        }
        // The loop ended before it started anything.
        (None, Some(work), Ok(())) => work(None),
        (None, None, _) => failed(),
    }
}

/// One line of the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A line that says something and does nothing.
    Label(String),
    /// A line that does `action` when chosen (if `enabled`).
    Action {
        action: &'static str,
        label: String,
        enabled: bool,
    },
    Separator,
}

/// What the tray shows: the icon, its tooltip and the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    pub icon: IconState,
    pub tooltip: String,
    pub items: Vec<Item>,
}

impl Menu {
    /// The item for `action`, if the menu has it.
    pub fn find(&self, action: &str) -> Option<&Item> {
        self.items
            .iter()
            .find(|item| matches!(item, Item::Action { action: a, .. } if *a == action))
    }

    /// Whether `action` is in the menu and can be chosen.
    pub fn allows(&self, action: &str) -> bool {
        matches!(self.find(action), Some(Item::Action { enabled: true, .. }))
    }

    /// The labels, in order (separators as `---`), for tests and logs.
    pub fn labels(&self) -> Vec<&str> {
        self.items
            .iter()
            .map(|item| match item {
                Item::Label(label) | Item::Action { label, .. } => label.as_str(),
                Item::Separator => "---",
            })
            .collect()
    }
}

/// Opens `url` in the default browser; says why when it cannot.
pub fn open_in_browser(url: &str) -> Result<(), String> {
    open::that_detached(url).map_err(|e| format!("could not open {url} in a browser: {e}"))
}

/// Why there is no tray, or `None` when there should be one: `--no-tray`
/// or `LLM_ROUTER_TRAY=0` asked for none, the build has no tray, or there is
/// no desktop session (no display on Linux, as under a service manager).
/// `env` looks up one environment variable.
pub fn tray_unavailable(asked_off: bool, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    if asked_off {
        return Some("--no-tray or LLM_ROUTER_TRAY=0".to_owned());
    }
    if !HAS_TRAY {
        return Some("this build has no tray (cargo feature `tray`)".to_owned());
    }
    if cfg!(target_os = "linux") || cfg!(target_os = "freebsd") {
        let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
        if !set("DISPLAY") && !set("WAYLAND_DISPLAY") {
            return Some(
                "no desktop session (neither DISPLAY nor WAYLAND_DISPLAY is set)".to_owned(),
            );
        }
    }
    if env("INVOCATION_ID").is_some() || env("JOURNAL_STREAM").is_some() {
        return Some("started by systemd".to_owned());
    }
    None
}

/// Whether `LLM_ROUTER_TRAY` turns the tray off (`0`, `false`, `off`, `no`).
pub fn tray_off_by_env(env: impl Fn(&str) -> Option<String>) -> bool {
    env("LLM_ROUTER_TRAY").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "off" | "no"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_its_own_icon_of_the_right_size() {
        let icons: Vec<Vec<u8>> = [IconState::Ok, IconState::Retrying, IconState::Problem]
            .into_iter()
            .map(IconState::pixels)
            .collect();
        for icon in &icons {
            assert_eq!(icon.len(), (ICON_SIZE * ICON_SIZE * 4) as usize);
            // Corners are transparent, the centre is opaque.
            assert_eq!(icon[3], 0);
            let centre = ((ICON_SIZE / 2 * ICON_SIZE + ICON_SIZE / 2) * 4) as usize;
            assert_eq!(icon[centre + 3], 255);
        }
        assert_ne!(icons[0], icons[1]);
        assert_ne!(icons[1], icons[2]);
        assert_ne!(icons[0], icons[2]);
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn asking_for_no_tray_wins_and_says_how() {
        let why = tray_unavailable(true, env(&[("DISPLAY", ":0")])).unwrap();
        assert!(why.contains("--no-tray"), "{why}");
        assert!(tray_off_by_env(env(&[("LLM_ROUTER_TRAY", "0")])));
        assert!(tray_off_by_env(env(&[("LLM_ROUTER_TRAY", "off")])));
        assert!(!tray_off_by_env(env(&[("LLM_ROUTER_TRAY", "1")])));
        assert!(!tray_off_by_env(env(&[])));
    }

    #[cfg(all(feature = "tray", target_os = "linux"))]
    #[test]
    fn on_linux_a_tray_needs_a_display_and_not_a_service_manager() {
        assert!(
            tray_unavailable(false, env(&[]))
                .unwrap()
                .contains("DISPLAY")
        );
        assert_eq!(tray_unavailable(false, env(&[("DISPLAY", ":0")])), None);
        assert!(
            tray_unavailable(false, env(&[("DISPLAY", ":0"), ("INVOCATION_ID", "x")]))
                .unwrap()
                .contains("systemd")
        );
    }

    #[cfg(not(feature = "tray"))]
    #[test]
    fn a_build_without_the_tray_says_so() {
        let why = tray_unavailable(false, env(&[("DISPLAY", ":0")])).unwrap();
        assert!(why.contains("feature"), "{why}");
    }

    #[test]
    fn menu_lookups_follow_the_items() {
        let menu = Menu {
            icon: IconState::Ok,
            tooltip: "t".into(),
            items: vec![
                Item::Label("status".into()),
                Item::Separator,
                Item::Action {
                    action: "open",
                    label: "Open".into(),
                    enabled: true,
                },
                Item::Action {
                    action: "pause",
                    label: "Pause".into(),
                    enabled: false,
                },
            ],
        };
        assert!(menu.allows("open"));
        assert!(!menu.allows("pause"));
        assert!(!menu.allows("quit"));
        assert_eq!(menu.labels(), ["status", "---", "Open", "Pause"]);
    }
}
