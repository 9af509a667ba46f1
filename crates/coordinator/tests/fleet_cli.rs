//! `llm-router models | pull | rm | nodes` against a running coordinator, as a
//! user runs them: `pull` in a real terminal (tmux, read back with
//! `capture-pane`) to see its per-node progress bars, its summary and Ctrl-C;
//! the tables as plain output.
//!
//! Needs `tmux` (`apt-get install tmux`; `.ci/run` installs it). Each test runs
//! its own tmux server on a socket in a temporary folder and stops only that one.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use llm_router_mock_node::MockConfig;
use support::fleet::Fleet;
use support::process::{binary, eventually_showing};

const DEADLINE: Duration = Duration::from_secs(30);

async fn fleet() -> Fleet {
    let mut fleet = Fleet::empty_with(|_| {}).await;
    for name in ["alpha", "beta", "gamma"] {
        fleet
            .add_node(MockConfig::named(name).with_models(["llama3.2:latest"]))
            .await;
    }
    fleet
}

/// A tmux server of this test only, with one window running a command.
struct Terminal {
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Terminal {
    fn run(command: &[String]) -> Terminal {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let terminal = Terminal { _dir: dir, socket };
        let mut args = vec![
            "new-session",
            "-d",
            "-x",
            "150",
            "-y",
            "20",
            "-e",
            "LLM_ROUTER_TRAY=0",
            "--",
        ];
        // Through a shell that writes the command's exit status to a file: tmux marks
        // a pane dead when its terminal closes but may learn the status late, or
        // never. `trap : INT` keeps the shell alive through Ctrl-C and leaves the
        // command the default handling, which it overrides.
        let status_file = terminal._dir.path().join("status");
        let script = format!(
            "trap : INT; \"$@\"; s=$?; echo $s > '{}'; exit $s",
            status_file.display()
        );
        args.extend(["sh", "-c", &script, "sh"]);
        args.extend(command.iter().map(String::as_str));
        // The window stays after the command ends, so its last screen and exit status can be read.
        let conf = terminal._dir.path().join("tmux.conf");
        std::fs::write(&conf, "set -g remain-on-exit on\n").unwrap();
        let started = terminal.tmux(&["-f", conf.to_str().unwrap()], &args);
        assert!(
            started.status.success(),
            "tmux could not start (install it: apt-get install tmux): {started:?}"
        );
        terminal
    }

    fn tmux(&self, before: &[&str], args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(before)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux (install it: apt-get install tmux): {e}"))
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&[], &["capture-pane", "-p"]).stdout).into_owned()
    }

    /// The command's exit status once it has ended.
    fn exit_status(&self) -> Option<i32> {
        let written = std::fs::read_to_string(self._dir.path().join("status")).ok()?;
        written.trim().parse().ok()
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        eventually_showing(what, DEADLINE, || {
            let screen = self.screen();
            std::future::ready(if check(&screen) {
                Ok(screen)
            } else {
                Err(screen)
            })
        })
        .await
    }

    async fn wait_exit(&self) -> i32 {
        eventually_showing("the command ends", DEADLINE, || {
            std::future::ready(self.exit_status().ok_or_else(|| self.screen()))
        })
        .await
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.tmux(&[], &["kill-server"]);
    }
}

fn pull_command(fleet: &Fleet, args: &[&str]) -> Vec<String> {
    let mut command = vec![
        binary("llm-router").display().to_string(),
        "pull".into(),
        "--coordinator-url".into(),
        fleet.url(""),
    ];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    command
}

/// A bar line of node `name`: its name, then the bar's brackets.
fn has_bar(screen: &str, name: &str) -> bool {
    screen
        .lines()
        .any(|l| l.trim_start().starts_with(name) && l.contains('[') && l.contains(']'))
}

#[tokio::test]
async fn pull_shows_a_bar_per_node_and_ends_with_a_summary() {
    let fleet = fleet().await;
    for node in &fleet.nodes {
        node.control().set_pull_size_bytes(Some(400_000_000));
        node.control().set_pull_bytes_per_sec(200_000_000.0);
    }
    let terminal = Terminal::run(&pull_command(&fleet, &["phi3:mini"]));
    terminal
        .wait_for("a bar for each node", |s| {
            ["alpha", "beta", "gamma"].iter().all(|n| has_bar(s, n)) && s.contains("MB")
        })
        .await;
    assert_eq!(terminal.wait_exit().await, 0, "{}", terminal.screen());
    let screen = terminal.screen();
    assert!(
        screen.contains("pulled phi3:mini onto 3 of 3 nodes"),
        "{screen}"
    );
    for name in ["alpha", "beta", "gamma"] {
        assert!(screen.contains(&format!("ok       {name}")), "{screen}");
    }
}

#[tokio::test]
async fn ctrl_c_cancels_the_pull_on_every_node() {
    let fleet = fleet().await;
    for node in &fleet.nodes {
        node.control().set_pull_size_bytes(Some(100_000_000_000));
        node.control().set_pull_bytes_per_sec(100_000_000.0);
    }
    let terminal = Terminal::run(&pull_command(
        &fleet,
        &["--nodes", "alpha,beta", "phi3:mini"],
    ));
    terminal
        .wait_for("bars for alpha and beta", |s| {
            has_bar(s, "alpha") && has_bar(s, "beta") && s.contains("MB")
        })
        .await;
    terminal.tmux(&[], &["send-keys", "C-c"]);
    assert_eq!(terminal.wait_exit().await, 130, "{}", terminal.screen());
    let screen = terminal.screen();
    assert!(screen.contains("cancelled alpha"), "{screen}");
    assert!(screen.contains("cancelling…"), "{screen}");
    assert!(screen.contains("onto 0 of 2 nodes"), "{screen}");
    for name in ["alpha", "beta"] {
        let node = fleet.node(name);
        support::process::eventually("the node's pull is cancelled", DEADLINE, || async {
            (node.stats().pulls_cancelled() == 1).then_some(())
        })
        .await;
    }
    assert_eq!(fleet.node("gamma").stats().pulls_started(), 0);
}

fn llm_router(args: &[&str]) -> Output {
    Command::new(binary("llm-router"))
        .args(args)
        .env_remove("LLM_ROUTER_ADMIN_TOKEN")
        .env("LLM_ROUTER_TRAY", "0")
        .output()
        .unwrap()
}

#[tokio::test]
async fn models_nodes_and_rm_print_tables_and_say_what_they_did() {
    let fleet = fleet().await;
    let url = fleet.url("");
    let nodes = tokio::task::spawn_blocking({
        let url = url.clone();
        move || llm_router(&["nodes", "--coordinator-url", &url])
    })
    .await
    .unwrap();
    assert!(nodes.status.success(), "{nodes:?}");
    let text = String::from_utf8_lossy(&nodes.stdout);
    assert!(text.starts_with("NAME"), "{text}");
    for name in ["alpha", "beta", "gamma"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains("online") && l.contains("ollama")),
            "{text}"
        );
    }
    let models = tokio::task::spawn_blocking({
        let url = url.clone();
        move || llm_router(&["models", "--coordinator-url", &url])
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&models.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("llama3.2:latest"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        row.matches("held").count() + row.matches("loaded").count(),
        3,
        "{row}"
    );

    let rm = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            llm_router(&[
                "rm",
                "llama3.2",
                "--nodes",
                "beta",
                "--coordinator-url",
                &url,
            ])
        }
    })
    .await
    .unwrap();
    assert!(rm.status.success(), "{rm:?}");
    assert_eq!(
        String::from_utf8_lossy(&rm.stdout),
        "deleted llama3.2 from beta\n"
    );
    assert!(fleet.node("beta").models().find("llama3.2").is_none());
    assert!(fleet.node("alpha").models().find("llama3.2").is_some());

    let missing = tokio::task::spawn_blocking(move || {
        llm_router(&["rm", "nothing-here", "--coordinator-url", &url])
    })
    .await
    .unwrap();
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    let error = String::from_utf8_lossy(&missing.stderr);
    assert!(error.contains("nothing-here"), "{error}");
}
