//! The `llm-router keys` and `llm-router admin` subcommands, run as a user would.

mod support;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use support::process::binary;

fn llm_router(data_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(binary("llm-router"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("LLM_ROUTER_ADMIN_TOKEN")
        .env_remove("LLM_ROUTER_COORDINATOR_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn keys_are_created_listed_and_revoked_on_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let created = llm_router(dir.path(), &["keys", "create", "alice", "--rpm", "60"]);
    assert!(created.status.success(), "{created:?}");
    let text = stdout(&created);
    let key = text
        .split_whitespace()
        .find(|word| word.starts_with("llmr_"))
        .expect("the key is printed")
        .to_owned();
    let stored = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
    assert!(!stored.contains(&key), "only a digest is stored");

    let listed = stdout(&llm_router(dir.path(), &["keys", "list"]));
    assert!(
        listed.contains("alice") && listed.contains("60/min"),
        "{listed}"
    );
    assert!(!listed.contains(&key), "{listed}");

    let again = llm_router(dir.path(), &["keys", "create", "alice"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    assert!(
        llm_router(dir.path(), &["keys", "revoke", "alice"])
            .status
            .success()
    );
    assert!(stdout(&llm_router(dir.path(), &["keys", "list"])).contains("no API keys"));
    let unknown = llm_router(dir.path(), &["keys", "revoke", "alice"]);
    assert!(!unknown.status.success());
}

#[test]
fn set_password_reads_stdin_and_stores_only_an_argon2_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary("llm-router"))
        .args(["admin", "set-password", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stored = std::fs::read_to_string(dir.path().join("admin.json")).unwrap();
    assert!(stored.contains("$argon2id$"), "{stored}");
    assert!(!stored.contains("a long enough password"));

    let mut short = Command::new(binary("llm-router"))
        .args(["admin", "set-password", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    short.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let output = short.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_work_against_a_running_coordinator_with_the_admin_token() {
    use llm_router_coordinator::auth::{AccessSettings, AdminMode};
    let fleet = support::fleet::Fleet::empty_with(|config| {
        config.access = AccessSettings {
            admin: Some(AdminMode::Auth),
            admin_tokens: vec!["cli-admin-token".to_owned()],
            ..AccessSettings::default()
        };
    })
    .await;
    let url = fleet.url("");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            llm_router(&dir, &args)
        })
    };
    let denied = run(vec![
        "keys".into(),
        "list".into(),
        "--url".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("--admin-token"));

    let created = run(vec![
        "keys".into(),
        "create".into(),
        "bob".into(),
        "--coordinator-url".into(),
        url.clone(),
        "--admin-token".into(),
        "cli-admin-token".into(),
    ])
    .await
    .unwrap();
    assert!(created.status.success(), "{created:?}");
    assert!(stdout(&created).contains("llmr_"));
    let listed: serde_json::Value = fleet
        .client
        .get(fleet.url("/api/keys"))
        .bearer_auth("cli-admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["name"], "bob");
    // The coordinator's address from the environment, as the fleet commands take it.
    let data_dir = dir.path().to_owned();
    let from_env = tokio::task::spawn_blocking(move || {
        Command::new(binary("llm-router"))
            .args(["keys", "list", "--data-dir"])
            .arg(&data_dir)
            .env("LLM_ROUTER_COORDINATOR_URL", url)
            .env("LLM_ROUTER_ADMIN_TOKEN", "cli-admin-token")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(from_env.status.success(), "{from_env:?}");
    assert!(stdout(&from_env).contains("bob"), "{from_env:?}");
    assert!(
        !dir.path().join("keys.json").exists(),
        "the local folder is untouched"
    );
    fleet.stop().await;
}
