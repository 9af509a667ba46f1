//! Python processes for the acceptance tests with real clients and servers: the
//! interpreter (`$LLM_ROUTER_TEST_PYTHON`, else `python3`), started in the workspace
//! root with a clean environment, and a check that fails (never skips) with the
//! install command when a package is missing.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

pub fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize()
        .unwrap_or_else(|e| panic!("workspace root {}: {e}", root.display()))
}

/// `$LLM_ROUTER_TEST_PYTHON`, else `python3`.
pub fn python() -> OsString {
    std::env::var_os("LLM_ROUTER_TEST_PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// Settings every Python process of these tests gets.
pub const PYTHON_ENV: [(&str, &str); 4] = [
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("PYTHONUNBUFFERED", "1"),
    // Everything is on loopback: never through a proxy from the environment.
    ("NO_PROXY", "127.0.0.1,localhost"),
    ("no_proxy", "127.0.0.1,localhost"),
];
/// The clients fall back on the keys (a client meant to send none must not), and
/// llama_cpp.server takes its address and its config file from the others over
/// its own settings.
pub const PYTHON_ENV_REMOVED: [&str; 5] = [
    "OLLAMA_API_KEY",
    "OPENAI_API_KEY",
    "HOST",
    "PORT",
    "CONFIG_FILE",
];

/// `python` in the workspace root, its output piped, killed when dropped.
pub fn python_command(python: &OsString) -> Command {
    let mut command = Command::new(python);
    command
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .envs(PYTHON_ENV)
        .kill_on_drop(true);
    for name in PYTHON_ENV_REMOVED {
        command.env_remove(name);
    }
    command
}

/// Fails, saying how to install them (`hint`), unless `python` imports `modules`
/// (comma-separated, as Python's `import` takes them).
pub async fn require_modules(python: &OsString, modules: &str, hint: &str) {
    let output = python_command(python)
        .args(["-c", &format!("import {modules}")])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} did not import {modules} within 60 s",
                python.to_string_lossy()
            )
        })
        .unwrap_or_else(|e| {
            panic!(
                "could not run the Python interpreter {:?} ({e}): install Python 3, \
                 or set LLM_ROUTER_TEST_PYTHON to one; then {hint}",
                python.to_string_lossy()
            )
        });
    assert!(
        output.status.success(),
        "the Python packages {modules} are not all installed for {:?}: {hint}\n{}",
        python.to_string_lossy(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}
