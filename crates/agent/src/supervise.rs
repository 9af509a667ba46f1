//! Ollama supervision (`--manage-ollama`): when Ollama does not answer and
//! an `ollama` binary is on `PATH`, the agent runs `ollama serve` itself,
//! starts it again with backoff when it dies, and stops it when the agent
//! stops, but only the one it started. An Ollama that answers already (a
//! service, the desktop app) is left alone.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::backoff::register_backoff;

/// How often a running Ollama is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long Ollama has to answer a look.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// First wait before starting a dead Ollama again; doubles up to a minute.
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// A child that ran this long was healthy: the next death starts the backoff anew.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What the supervisor is doing, for logs, the tray and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Supervision {
    /// Looking whether Ollama answers.
    Checking,
    /// Ollama answers and the agent did not start it.
    External,
    /// `ollama serve` started by the agent runs with this process id.
    Running { pid: u32, starts: u32 },
    /// It exited; started again after the wait.
    Restarting { reason: String, in_secs: u64 },
    /// Stopped with the agent.
    Stopped,
}

impl Supervision {
    /// What the tray says of it; `None` when there is nothing to say (the
    /// agent runs no Ollama of its own).
    pub fn describe(&self) -> Option<String> {
        match self {
            Supervision::Checking | Supervision::External => None,
            Supervision::Running { pid, starts } if *starts > 1 => Some(format!(
                "Ollama started by the agent (pid {pid}, restarted {} times)",
                starts - 1
            )),
            Supervision::Running { pid, .. } => {
                Some(format!("Ollama started by the agent (pid {pid})"))
            }
            Supervision::Restarting { reason, in_secs } => Some(format!(
                "Ollama exited ({reason}); starting it again in {in_secs} s"
            )),
            Supervision::Stopped => Some("Ollama stopped with the agent".to_owned()),
        }
    }
}

/// The `ollama` binary on `path` (a `PATH` value), if there is one.
pub fn find_ollama(path: Option<&OsStr>) -> Option<PathBuf> {
    let name = if cfg!(windows) {
        "ollama.exe"
    } else {
        "ollama"
    };
    std::env::split_paths(path?)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = path.metadata() else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// Whether the Ollama at `base` answers `GET /api/version`.
async fn answers(client: &reqwest::Client, base: &Url) -> bool {
    let Ok(url) = base.join("api/version") else {
        return false;
    };
    client
        .get(url)
        .timeout(ANSWER_WITHIN)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// `host:port` of `base`, as `OLLAMA_HOST` wants it.
fn ollama_host(base: &Url) -> String {
    // An IPv6 host comes in brackets already.
    let host = base.host_str().unwrap_or("127.0.0.1");
    let port = base.port_or_known_default().unwrap_or(11434);
    format!("{host}:{port}")
}

fn start(binary: &Path, base: &Url) -> std::io::Result<Child> {
    Command::new(binary)
        .arg("serve")
        .env("OLLAMA_HOST", ollama_host(base))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

/// Supervises the Ollama at `base` with `binary` until `stop`, publishing
/// what it does on `state`.
pub async fn supervise(
    binary: PathBuf,
    base: Url,
    state: watch::Sender<Supervision>,
    stop: impl std::future::Future<Output = ()>,
) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default();
    tokio::pin!(stop);
    let mut starts: u32 = 0;
    let mut failures: u32 = 0;
    loop {
        if answers(&client, &base).await {
            if *state.borrow() != Supervision::External {
                tracing::info!(ollama = %base, "Ollama answers and was not started by the agent: it is left alone");
            }
            state.send_replace(Supervision::External);
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => continue,
                () = &mut stop => break,
            }
        }
        let mut child = match start(&binary, &base) {
            Ok(child) => child,
            Err(error) => {
                failures += 1;
                let wait = register_backoff(RESTART_AFTER, failures);
                tracing::warn!(binary = %binary.display(), %error, retry_in_secs = wait.as_secs(), "could not start ollama serve");
                state.send_replace(Supervision::Restarting {
                    reason: format!("could not start: {error}"),
                    in_secs: wait.as_secs(),
                });
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = &mut stop => break,
                }
            }
        };
        starts += 1;
        let pid = child.id().unwrap_or_default();
        let started = tokio::time::Instant::now();
        tracing::info!(binary = %binary.display(), pid, ollama = %base, "Ollama did not answer: started ollama serve");
        state.send_replace(Supervision::Running { pid, starts });
        let exited = tokio::select! {
            exited = child.wait() => exited,
            () = &mut stop => {
                tracing::info!(pid, "stopping the ollama serve the agent started");
                let _ = child.kill().await;
                break;
            }
        };
        if started.elapsed() >= HEALTHY_RUN {
            failures = 0;
        }
        failures += 1;
        let wait = register_backoff(RESTART_AFTER, failures);
        let reason = match exited {
            Ok(status) => format!("it exited ({status})"),
            Err(error) => format!("it could not be waited for: {error}"),
        };
        tracing::warn!(pid, %reason, restart_in_secs = wait.as_secs_f64(), "ollama serve stopped; starting it again");
        state.send_replace(Supervision::Restarting {
            reason,
            in_secs: wait.as_secs(),
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut stop => break,
        }
    }
    state.send_replace(Supervision::Stopped);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_is_found_only_as_an_executable_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_ollama(Some(dir.path().as_os_str())), None);
        assert_eq!(find_ollama(None), None);
        let binary = dir.path().join("ollama");
        std::fs::write(&binary, "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(find_ollama(Some(dir.path().as_os_str())), None);
            std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(find_ollama(Some(&path)), Some(binary));
    }

    #[test]
    fn ollama_host_is_the_address_of_the_base_url() {
        let host = |url: &str| ollama_host(&url.parse().unwrap());
        assert_eq!(host("http://127.0.0.1:11500"), "127.0.0.1:11500");
        assert_eq!(host("http://[::1]:11434/"), "[::1]:11434");
        assert_eq!(host("http://localhost"), "localhost:80");
    }
}
