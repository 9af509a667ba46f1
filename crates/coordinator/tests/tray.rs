//! The tray icons of the agent and the coordinator on a real X display:
//! Xvfb with `trayer` as the system tray, the binaries built with their
//! trays, and the menus driven with `xdotool` as a user would (a right click
//! on the icon, the arrow keys, Return). What an icon shows is read back from
//! screenshots (ImageMagick's `import`). The agent's is red while Ollama does
//! not answer and green once a change made in the settings panel points it at
//! a working Ollama; its Pause, Resume and Quit act on the coordinator, and
//! Quit ends it with exit 0. The coordinator's counts its nodes and quits.
//!
//! Needs the workspace built with the trays (`--features
//! llm-router-agent/tray,llm-router-coordinator/tray`,
//! with libgtk-3-dev, libayatana-appindicator3-dev and libxdo-dev) and the
//! packages xvfb, trayer, xdotool, imagemagick and dbus; `.ci/run` installs them.
//! Anything missing fails the test with what to install: it is never skipped.

mod support;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use llm_router_desktop::IconState;
use serde_json::{Value, json};
use support::fleet::Fleet;
use support::process::{Proc, binary, eventually, eventually_showing};

const DEADLINE: Duration = Duration::from_secs(30);
const INSTALL_HINT: &str = "build with the tray and install the display tools as .ci/run does: \
     `apt-get install -y libgtk-3-dev libayatana-appindicator3-dev libxdo-dev xvfb trayer xdotool \
     imagemagick dbus`, then `cargo test --workspace --features llm-router-agent/tray,llm-router-coordinator/tray`";

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Xvfb on a display number it picks itself (`-displayfd`), and the display's name.
fn start_display() -> (Killed, String) {
    let mut xvfb = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "640x240x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start Xvfb ({e}): {INSTALL_HINT}"));
    let mut stdout = xvfb.stdout.take().unwrap();
    let mut number = String::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        number.push(byte[0] as char);
    }
    assert!(
        !number.trim().is_empty(),
        "Xvfb did not say which display it took"
    );
    (Killed(xvfb), format!(":{}", number.trim()))
}

/// An X display with a system tray on it: what a desktop session offers.
fn start_desktop() -> (Killed, Killed, String) {
    if !llm_router_desktop::HAS_TRAY {
        panic!("this build has no tray: {INSTALL_HINT}");
    }
    let (xvfb, display) = start_display();
    let trayer = Killed(
        on_display("trayer", &display)
            .args([
                "--edge",
                "top",
                "--align",
                "right",
                "--widthtype",
                "request",
            ])
            .args([
                "--height",
                "32",
                "--transparent",
                "false",
                "--tint",
                "0x303030",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start trayer ({e}): {INSTALL_HINT}")),
    );
    (xvfb, trayer, display)
}

/// `program` in a D-Bus session of its own, as on a desktop (appindicator
/// looks for a tray host there first); the session ends with it, and its exit
/// code is the program's.
fn in_session(program: PathBuf) -> Command {
    let mut command = Command::new("dbus-run-session");
    command.arg("--").arg(program);
    command
}

fn on_display(program: &str, display: &str) -> Command {
    let mut command = Command::new(program);
    command.env("DISPLAY", display);
    command
}

/// Every pixel of the screen, from ImageMagick's text format.
fn screen(display: &str, save_as: Option<&Path>) -> Vec<(u32, u32, [u8; 3])> {
    if let Some(path) = save_as {
        let saved = on_display("import", display)
            .args(["-window", "root"])
            .arg(path)
            .status()
            .unwrap_or_else(|e| panic!("cannot run import ({e}): {INSTALL_HINT}"));
        assert!(saved.success(), "import could not save {}", path.display());
    }
    let output = on_display("import", display)
        .args(["-window", "root", "-depth", "8", "txt:-"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run import ({e}): {INSTALL_HINT}"));
    assert!(output.status.success(), "import failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            // "x,y: (r,g,b)  #RRGGBB  srgb(…)"
            let (at, rest) = line.split_once(':')?;
            let (x, y) = at.split_once(',')?;
            let hex = rest.split_whitespace().find(|w| w.starts_with('#'))?;
            let value = u32::from_str_radix(hex.get(1..7)?, 16).ok()?;
            let [_, r, g, b] = value.to_be_bytes();
            Some((x.parse().ok()?, y.parse().ok()?, [r, g, b]))
        })
        .collect()
}

/// Where the icon for `state` is on the screen (the centre of its colour), if shown.
fn find_icon(display: &str, state: IconState) -> Option<(u32, u32)> {
    let colour = state.colour();
    let spots: Vec<(u32, u32)> = screen(display, None)
        .into_iter()
        .filter(|(_, _, rgb)| *rgb == colour)
        .map(|(x, y, _)| (x, y))
        .collect();
    // The disc is about 23 pixels across: far more than a stray pixel of the same colour.
    (spots.len() > 100).then(|| {
        let n = spots.len() as u32;
        let (sx, sy) = spots
            .iter()
            .fold((0, 0), |(sx, sy), (x, y)| (sx + x, sy + y));
        (sx / n, sy / n)
    })
}

fn xdotool(display: &str, args: &[&str]) {
    let status = on_display("xdotool", display)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run xdotool ({e}): {INSTALL_HINT}"));
    assert!(status.success(), "xdotool {args:?} failed");
}

/// Opens the tray menu with a right click on the icon and picks the `n`th
/// item that can be chosen, with the arrow keys (as a keyboard user would).
/// How many light pixels below the bar say a menu is open.
const MENU_PIXELS: usize = 2000;

fn menu_is_open(display: &str) -> bool {
    let light = screen(display, None)
        .iter()
        .filter(|(_, y, rgb)| *y > 40 && rgb.iter().all(|c| *c > 200))
        .count();
    light > MENU_PIXELS
}

/// Opens the menu of the icon at `at` (and saves a screenshot of it to `shot`).
async fn open_menu(display: &str, at: (u32, u32), shot: Option<&Path>) {
    let (x, y) = (at.0.to_string(), at.1.to_string());
    xdotool(display, &["mousemove", &x, &y, "click", "3"]);
    eventually("the tray menu to open", DEADLINE, || async {
        menu_is_open(display).then_some(())
    })
    .await;
    if let Some(path) = shot {
        screen(display, Some(path));
    }
}

/// Opens the menu of the icon at `at` and picks its `n`-th item with the keyboard.
/// A menu that is drawn before it has the keyboard loses the keys: when it is still
/// open a few seconds after Return, it is closed and the choice made again.
async fn choose(display: &str, at: (u32, u32), n: usize, shot: Option<&Path>) {
    for _attempt in 0..3 {
        open_menu(display, at, shot).await;
        // Keys go to the window under the pointer (there is no window manager): the
        // menu's first row, the status line, which cannot be chosen and takes no
        // highlight, so the keys below count from the top.
        let (row_x, row_y) = (
            at.0.saturating_sub(100).to_string(),
            (at.1 + 31).to_string(),
        );
        xdotool(display, &["mousemove", &row_x, &row_y]);
        for _ in 0..n {
            xdotool(display, &["key", "Down"]);
        }
        xdotool(display, &["key", "Return"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            if !menu_is_open(display) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        xdotool(display, &["key", "Escape"]);
    }
    panic!("the tray menu took no choice in three tries");
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tray");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn the_node(fleet: &Fleet) -> Option<Value> {
    fleet.agents().await.into_iter().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tray_shows_the_agents_state_and_pauses_resumes_and_quits() {
    let (_xvfb, _trayer, display) = start_desktop();

    let fleet = Fleet::empty_with(|_| {}).await;
    let ollama =
        llm_router_mock_node::MockNode::start(llm_router_mock_node::MockConfig::named("tray"))
            .await
            .unwrap();
    // An Ollama address where nothing answers: bound, never listening.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("agent-settings.json"),
        json!({ "ollama_api_base": closed_url }).to_string(),
    )
    .unwrap();

    let mut command = in_session(binary("llm-router-agent"));
    command
        .args(["--coordinator-url", &fleet.url("")])
        .args([
            "--machine-name",
            "tray-desk",
            "--heartbeat-interval-secs",
            "1",
        ])
        .args(["--manage-ollama", "off"])
        .env("DISPLAY", &display)
        .env("LLM_ROUTER_DATA_DIR", data.path())
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .env_remove("LLM_ROUTER_TRAY")
        .env_remove("OLLAMA_API_BASE");
    let mut agent = Proc::spawn("agent", command);
    agent.wait_for_line("the tray icon", DEADLINE, |line| {
        line.contains("tray icon shown").then_some(())
    });
    let panel = agent.wait_for_line("the settings panel's link", DEADLINE, |line| {
        line.strip_prefix("Settings panel: ").map(str::to_owned)
    });

    // Registered, but Ollama does not answer: the problem icon.
    eventually("the node registered", DEADLINE, || async {
        the_node(&fleet).await
    })
    .await;
    let shots = shots_dir();
    let red = eventually("the red icon (Ollama not reachable)", DEADLINE, || async {
        find_icon(&display, IconState::Problem)
    })
    .await;
    screen(&display, Some(&shots.join("tray-problem.png")));
    open_menu(&display, red, Some(&shots.join("tray-menu-problem.png"))).await;
    xdotool(&display, &["key", "Escape"]);

    // The settings panel points the agent at a working Ollama: green, without a restart.
    let token = panel.split("token=").nth(1).unwrap();
    let origin = panel.split("/?").next().unwrap();
    let saved = reqwest::Client::new()
        .put(format!("{origin}/api/settings"))
        .header("x-settings-token", token)
        .json(&json!({ "ollama_api_base": ollama.url() }))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200, "{}", saved.text().await.unwrap());
    let green = eventually("the green icon (connected)", DEADLINE, || async {
        find_icon(&display, IconState::Ok)
    })
    .await;
    screen(&display, Some(&shots.join("tray-ok.png")));

    // Pause is the third item that can be chosen (Open dashboard, Settings…, Pause).
    choose(&display, green, 3, Some(&shots.join("tray-menu.png"))).await;
    eventually_showing("the node draining", DEADLINE, || async {
        let node = the_node(&fleet).await.unwrap_or_default();
        if node["draining"] == true {
            Ok(())
        } else {
            Err(format!("{node:#}"))
        }
    })
    .await;
    // Resume takes Pause's place.
    choose(
        &display,
        green,
        3,
        Some(&shots.join("tray-menu-paused.png")),
    )
    .await;
    eventually("the node taking requests again", DEADLINE, || async {
        let node = the_node(&fleet).await?;
        (node["draining"] == false && node["status"] == "online").then_some(())
    })
    .await;

    // Quit, the fourth: a goodbye (offline at once) and exit 0.
    choose(&display, green, 4, None).await;
    assert_eq!(agent.wait_exit(DEADLINE), Some(0), "{}", agent.output());
    let node = the_node(&fleet).await.unwrap();
    assert_eq!(node["status"], "offline", "{node:#}");
    assert!(
        agent.output().contains("Quit chosen in the tray"),
        "{}",
        agent.output()
    );
    drop(closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinators_tray_counts_its_nodes_and_quits() {
    let (_xvfb, _trayer, display) = start_desktop();
    let data = tempfile::tempdir().unwrap();
    let mut command = in_session(binary("llm-router"));
    command
        .args(["--demo", "2", "--port", "0"])
        .arg("--data-dir")
        .arg(data.path())
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("INVOCATION_ID")
        .env_remove("JOURNAL_STREAM")
        .env_remove("LLM_ROUTER_TRAY");
    let mut coordinator = Proc::spawn("coordinator", command);
    coordinator.wait_for_line("the tray icon", DEADLINE, |line| {
        line.contains("tray icon shown").then_some(())
    });
    // Green once the demo's two nodes take requests.
    let green = eventually("the green icon", DEADLINE, || async {
        find_icon(&display, IconState::Ok)
    })
    .await;
    let shots = shots_dir();
    // Quit is the second item that can be chosen (Open dashboard, Quit).
    choose(
        &display,
        green,
        2,
        Some(&shots.join("coordinator-tray-menu.png")),
    )
    .await;
    assert_eq!(
        coordinator.wait_exit(DEADLINE),
        Some(0),
        "{}",
        coordinator.output()
    );
    let output = coordinator.output();
    assert!(output.contains("Quit chosen in the tray"), "{output}");
}
