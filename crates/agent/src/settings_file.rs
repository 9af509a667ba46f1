//! The optional `<data dir>/agent-settings.json`: settings below flags and environment, above defaults.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name inside the data directory.
pub const SETTINGS_FILE_NAME: &str = "agent-settings.json";

/// Every key is optional; the names are those of the CLI flags in snake case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SettingsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_api_base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_retry_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The fleet's node token: a secret, so keep the file readable by its owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_ca_file: Option<PathBuf>,
}

/// Why the settings file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsFileError {
    // The cause is in the message, not a `source`: shown with its causes, it
    // would say the same twice.
    #[error("cannot read {path}: {reason}")]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{path} is not a valid settings file: {reason}")]
    Parse {
        path: PathBuf,
        reason: serde_json::Error,
    },
}

impl SettingsFile {
    const KNOWN_KEYS: [&str; 12] = [
        "node_token",
        "node_api_key",
        "coordinator_ca_file",
        "coordinator_url",
        "ollama_port",
        "ollama_api_base",
        "heartbeat_interval_secs",
        "register_retry_secs",
        "register_max_retries",
        "machine_name",
        "advertise_ip",
        "api_url",
    ];

    /// Reads the file; `Ok(None)` when it does not exist. A file that exists but cannot be
    /// read or parsed is an error: silently ignoring an operator's settings would be worse.
    pub fn load(path: &Path) -> Result<Option<Self>, SettingsFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SettingsFileError::Read {
                    path: path.to_owned(),
                    reason: source,
                });
            }
        };
        let (settings, unknown) =
            Self::parse(&text).map_err(|reason| SettingsFileError::Parse {
                path: path.to_owned(),
                reason,
            })?;
        if !unknown.is_empty() {
            tracing::warn!(path = %path.display(), keys = ?unknown, "ignoring unknown keys in the settings file");
        }
        Ok(Some(settings))
    }

    /// The file's value for the setting `key` (a known key), as text.
    pub fn value_of(&self, key: &str) -> Option<String> {
        match serde_json::to_value(self).ok()?.get(key)? {
            serde_json::Value::String(text) => Some(text.clone()),
            value => Some(value.to_string()),
        }
    }

    /// Parses the JSON text; also returns the keys this version does not know, so that a
    /// typo is reported instead of silently doing nothing.
    pub fn parse(text: &str) -> Result<(Self, BTreeSet<String>), serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let unknown = value
            .as_object()
            .map(|object| {
                object
                    .keys()
                    .filter(|key| !Self::KNOWN_KEYS.contains(&key.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok((serde_json::from_value(value)?, unknown))
    }
}

/// Replaces the file at `path` with `contents` in one step (a temporary file
/// beside it, synced, then renamed over it), readable by its owner only: the
/// agent's files hold secrets. Creates the folder if needed.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".llm-router-agent.tmp-");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    let mut temp = builder.tempfile_in(dir)?;
    temp.write_all(contents)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// The data directory: `LLM_ROUTER_DATA_DIR`, else `~/.llm-router/`. `None` when neither
/// that variable nor a home directory is known. `env` looks up one environment variable.
pub fn data_dir(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let non_blank = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    if let Some(dir) = non_blank("LLM_ROUTER_DATA_DIR") {
        return Some(PathBuf::from(dir));
    }
    non_blank("HOME")
        .or_else(|| non_blank("USERPROFILE"))
        .map(|home| Path::new(&home).join(".llm-router"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_known_keys_and_reports_unknown_ones() {
        let (settings, unknown) = SettingsFile::parse(
            r#"{"coordinator_url": "http://c:9000", "heartbeat_interval_secs": 3,
                "advertise_ip": "10.0.0.7", "heartbeat_intervall": 4}"#,
        )
        .unwrap();
        assert_eq!(settings.coordinator_url.as_deref(), Some("http://c:9000"));
        assert_eq!(settings.heartbeat_interval_secs, Some(3));
        assert_eq!(settings.advertise_ip, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(unknown, BTreeSet::from(["heartbeat_intervall".to_owned()]));
    }

    #[test]
    fn parse_rejects_wrong_types() {
        assert!(SettingsFile::parse(r#"{"ollama_port": "eleven"}"#).is_err());
        assert!(SettingsFile::parse("[1, 2]").is_err());
    }

    #[test]
    fn load_of_a_missing_file_is_none_and_of_a_broken_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SETTINGS_FILE_NAME);
        assert_eq!(SettingsFile::load(&path).unwrap(), None);
        std::fs::write(&path, "{ not json").unwrap();
        let error = SettingsFile::load(&path).unwrap_err();
        assert!(error.to_string().contains(SETTINGS_FILE_NAME), "{error}");
        std::fs::write(&path, r#"{"register_max_retries": 3}"#).unwrap();
        assert_eq!(
            SettingsFile::load(&path)
                .unwrap()
                .unwrap()
                .register_max_retries,
            Some(3)
        );
    }

    #[test]
    fn data_dir_prefers_the_variable_over_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert_eq!(
            data_dir(env(&[
                ("LLM_ROUTER_DATA_DIR", "/srv/llm"),
                ("HOME", "/home/a")
            ])),
            Some(PathBuf::from("/srv/llm"))
        );
        assert_eq!(
            data_dir(env(&[("LLM_ROUTER_DATA_DIR", " "), ("HOME", "/home/a")])),
            Some(PathBuf::from("/home/a/.llm-router"))
        );
        assert_eq!(data_dir(env(&[])), None);
    }
}
