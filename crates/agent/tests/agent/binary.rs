//! The `llm-router-agent` binary: settings precedence as it prints them, exit codes, and signals.

use std::process::{Output, Stdio};

use tokio::process::Command;

use crate::support::{DEADLINE, FakeCoordinator, FakeOllama};

const BINARY: &str = env!("CARGO_BIN_EXE_llm-router-agent");

/// The binary with a clean environment, so the host's variables cannot leak in.
fn agent_command(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("LLM_ROUTER_DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn output(mut command: Command) -> Output {
    tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("the agent did not exit in time")
        .unwrap()
}

#[tokio::test]
async fn print_config_shows_flag_over_env_over_settings_file_over_default() {
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        data_dir.path().join("agent-settings.json"),
        r#"{"coordinator_url": "http://from-file:1", "heartbeat_interval_secs": 30,
            "register_max_retries": 4, "machine_name": "file-name"}"#,
    )
    .unwrap();
    let mut command = agent_command(data_dir.path());
    command
        .env("COORDINATOR_URL", "http://from-env:2")
        .env("COORDINATOR_REGISTER_MAX_RETRIES", "5")
        .env("OLLAMA_MACHINE_NAME", "env-name")
        .args(["--register-max-retries", "6", "--print-config"]);
    let out = output(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");

    assert!(
        stdout.contains("coordinator_url = http://from-env:2/"),
        "{stdout}"
    );
    assert!(stdout.contains("register_max_retries = 6"), "{stdout}");
    assert!(stdout.contains("heartbeat_interval_secs = 30"), "{stdout}");
    assert!(stdout.contains("register_retry_secs = 5"), "{stdout}");
    assert!(stdout.contains("machine_name = env-name"), "{stdout}");
    assert!(
        stdout.contains("ollama_api_base = http://127.0.0.1:11434/"),
        "{stdout}"
    );
}

#[tokio::test]
async fn an_invalid_setting_exits_with_an_error_naming_it() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = agent_command(data_dir.path());
    command
        .env("AGENT_HEARTBEAT_INTERVAL_SECS", "0")
        .arg("--print-config");
    let out = output(command).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AGENT_HEARTBEAT_INTERVAL_SECS"), "{stderr}");
}

#[tokio::test]
async fn a_broken_settings_file_exits_with_an_error_naming_the_file() {
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::write(data_dir.path().join("agent-settings.json"), "{ nope").unwrap();
    let mut command = agent_command(data_dir.path());
    command.arg("--print-config");
    let out = output(command).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agent-settings.json"), "{stderr}");
}

/// Starts the binary against the fakes, waits for it to register, sends `signal`, and
/// checks that it told the coordinator and exited 0.
#[cfg(unix)]
async fn signal_makes_the_binary_send_shutdown_and_exit_0(signal: &str) {
    let coordinator = FakeCoordinator::start(vec![], vec![]).await;
    let ollama = FakeOllama::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut command = agent_command(data_dir.path());
    command
        .env("COORDINATOR_URL", coordinator.url.as_str())
        .env("OLLAMA_API_BASE", ollama.url.as_str())
        .arg("--machine-name=signal-test")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    coordinator
        .wait_for("the binary to register", |seen| {
            !seen.registrations.is_empty()
        })
        .await;

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args([signal, pid.as_str()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("the agent did not exit after the signal")
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(coordinator.seen().shutdowns, vec![coordinator.node_id]);
    assert_eq!(
        coordinator.seen().registrations[0].machine_name,
        "signal-test"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_makes_the_binary_send_shutdown_and_exit_0() {
    signal_makes_the_binary_send_shutdown_and_exit_0("-TERM").await;
}

#[cfg(unix)]
#[tokio::test]
async fn ctrl_c_makes_the_binary_send_shutdown_and_exit_0() {
    signal_makes_the_binary_send_shutdown_and_exit_0("-INT").await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn install_autostart_records_the_flags_but_no_secret_and_remove_undoes_it() {
    let home = tempfile::tempdir().unwrap();
    let entry = home
        .path()
        .join(".config/autostart/llm-router-agent.desktop");
    let mut install = agent_command(home.path());
    install.env("HOME", home.path()).args([
        "--install-autostart",
        "--coordinator-url",
        "http://coordinator:8080",
        "--node-token",
        "llmr_nt_do-not-record",
    ]);
    let installed = output(install).await;
    let stdout = String::from_utf8_lossy(&installed.stdout);
    assert!(installed.status.success(), "{installed:?}");
    assert!(
        stdout.contains("--node-token"),
        "says what it left out: {stdout}"
    );
    let text = std::fs::read_to_string(&entry).unwrap();
    let exec = text.lines().find(|l| l.starts_with("Exec=")).unwrap();
    assert_eq!(
        exec,
        format!("Exec={BINARY} --coordinator-url http://coordinator:8080")
    );
    assert!(!text.contains("do-not-record"), "{text}");

    let mut remove = agent_command(home.path());
    remove.env("HOME", home.path()).arg("--remove-autostart");
    let removed = output(remove).await;
    assert!(removed.status.success(), "{removed:?}");
    assert!(!entry.exists(), "the login entry is gone");
    let mut again = agent_command(home.path());
    again.env("HOME", home.path()).arg("--remove-autostart");
    let again = output(again).await;
    assert!(String::from_utf8_lossy(&again.stdout).contains("was not set"));
}
