//! The settings the panel edits: which ones, where each value comes from, and
//! how an edit becomes a new settings file.
//!
//! An edit is a JSON object of setting → new value. A string or a number sets
//! the value in `agent-settings.json`; `null` or an empty string removes it
//! there (back to the default). A setting that a flag or an environment
//! variable fixes is locked: an edit of it is refused, since the file could not
//! change what the agent runs with. Keys of the file the panel does not edit
//! (and keys this version does not know) are kept as they are.

use std::collections::BTreeMap;
use std::path::Path;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::AgentConfig;
use crate::identity::MACHINE_NAME_ENV_VARS;

/// One setting the panel shows and edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Editable {
    /// The settings file's key (the flag's name in snake case).
    pub key: &'static str,
    pub label: &'static str,
    pub hint: &'static str,
    /// Never sent to the page; the page can only replace or remove it.
    pub secret: bool,
    /// A whole number of seconds.
    pub seconds: bool,
}

/// What the panel edits, in the order it shows them.
pub const EDITABLE: [Editable; 5] = [
    Editable {
        key: "coordinator_url",
        label: "Coordinator URL",
        hint: "Where the coordinator listens, e.g. http://192.168.1.10:8080",
        secret: false,
        seconds: false,
    },
    Editable {
        key: "node_token",
        label: "Node token",
        hint: "Printed by the coordinator at its first start (or in its data folder's node-token)",
        secret: true,
        seconds: false,
    },
    Editable {
        key: "ollama_api_base",
        label: "Ollama URL",
        hint: "This machine's Ollama, e.g. http://127.0.0.1:11434",
        secret: false,
        seconds: false,
    },
    Editable {
        key: "machine_name",
        label: "Machine name",
        hint: "How this machine appears on the dashboard",
        secret: false,
        seconds: false,
    },
    Editable {
        key: "heartbeat_interval_secs",
        label: "Heartbeat interval (seconds)",
        hint: "How often the agent reports to the coordinator",
        secret: false,
        seconds: true,
    },
];

fn editable(key: &str) -> Option<&'static Editable> {
    EDITABLE.iter().find(|setting| setting.key == key)
}

/// The settings that a flag or an environment variable fixes, each with what
/// fixes it (`flag --coordinator-url`, `environment variable COORDINATOR_URL`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locks(BTreeMap<&'static str, String>);

impl Locks {
    /// From the agent's parsed command line; `env` looks up one environment
    /// variable (the machine name's variables are not clap's).
    pub fn from_matches(matches: &ArgMatches, env: impl Fn(&str) -> Option<String>) -> Self {
        let command = <crate::Cli as clap::CommandFactory>::command();
        let mut locks = BTreeMap::new();
        // What set argument `key`, when a flag or a variable did.
        let source_of = |key: &str| {
            let arg = command.get_arguments().find(|arg| arg.get_id() == key);
            match matches.value_source(key) {
                Some(ValueSource::CommandLine) => arg
                    .and_then(|arg| arg.get_long())
                    .map(|long| format!("flag --{long}")),
                Some(ValueSource::EnvVariable) => arg
                    .and_then(|arg| arg.get_env())
                    .map(|name| format!("environment variable {}", name.to_string_lossy())),
                _ => None,
            }
        };
        for setting in &EDITABLE {
            let by = source_of(setting.key).or_else(|| {
                // Ollama's URL is also fixed by a port given on its own.
                (setting.key == "ollama_api_base")
                    .then(|| source_of("ollama_port"))
                    .flatten()
            });
            let by = by.or_else(|| {
                (setting.key == "machine_name")
                    .then(|| {
                        MACHINE_NAME_ENV_VARS
                            .iter()
                            .find(|name| env(name).is_some_and(|v| !v.trim().is_empty()))
                            .map(|name| format!("environment variable {name}"))
                    })
                    .flatten()
            });
            if let Some(by) = by {
                locks.insert(setting.key, by);
            }
        }
        Self(locks)
    }

    /// Locks given directly, for tests and embedders.
    pub fn of(pairs: impl IntoIterator<Item = (&'static str, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    /// What fixes `key`, if something does.
    pub fn by(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// Why an edit was refused; each names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("{key} is set by {by}; change it there")]
    Locked { key: String, by: String },
    #[error("the panel does not edit {0:?}")]
    Unknown(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

impl EditError {
    /// The setting the error is about.
    pub fn key(&self) -> &str {
        match self {
            EditError::Locked { key, .. }
            | EditError::Unknown(key)
            | EditError::Invalid { key, .. } => key,
        }
    }
}

/// `file` (the settings file's JSON object) with `edit` applied.
pub fn apply_edit(
    file: &Map<String, Value>,
    edit: &Map<String, Value>,
    locks: &Locks,
) -> Result<Map<String, Value>, EditError> {
    let mut next = file.clone();
    for (key, value) in edit {
        let setting = editable(key).ok_or_else(|| EditError::Unknown(key.clone()))?;
        if let Some(by) = locks.by(key) {
            return Err(EditError::Locked {
                key: key.clone(),
                by: by.to_owned(),
            });
        }
        let invalid = |reason: &str| EditError::Invalid {
            key: key.clone(),
            reason: reason.to_owned(),
        };
        let value = match value {
            Value::Null => None,
            Value::String(text) if text.trim().is_empty() => None,
            Value::String(text) if setting.seconds => {
                Some(Value::from(text.trim().parse::<u64>().map_err(|_| {
                    invalid("a whole number of seconds, at least 1")
                })?))
            }
            Value::String(text) => Some(Value::from(text.trim())),
            Value::Number(number) if setting.seconds => {
                Some(Value::from(number.as_u64().ok_or_else(|| {
                    invalid("a whole number of seconds, at least 1")
                })?))
            }
            _ => return Err(invalid("expected text")),
        };
        if setting.seconds && value.as_ref().is_some_and(|v| v.as_u64() == Some(0)) {
            return Err(invalid("a whole number of seconds, at least 1"));
        }
        match value {
            Some(value) => next.insert(key.clone(), value),
            None => next.remove(key),
        };
    }
    Ok(next)
}

/// Reads the settings file as a JSON object: empty when it does not exist, an
/// error when it cannot be read or is not an object (it is never overwritten
/// then: the operator's file would be lost).
pub fn read_object(path: &Path) -> Result<Map<String, Value>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(format!(
            "{} is not a JSON object; fix or remove it first",
            path.display()
        )),
        Err(error) => Err(format!(
            "{} is not valid JSON ({error}); fix or remove it first",
            path.display()
        )),
    }
}

/// Writes `object` to `path` in one step, readable by its owner only: it may
/// hold the node token.
pub fn write_object(path: &Path, object: &Map<String, Value>) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(object).map_err(std::io::Error::other)?;
    text.push('\n');
    crate::settings_file::write_private(path, text.as_bytes())
}

/// One setting as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shown {
    pub key: &'static str,
    pub label: &'static str,
    pub hint: &'static str,
    pub secret: bool,
    /// The value the agent runs with; `None` for a secret.
    pub value: Option<String>,
    /// Whether it has a value (for a secret: whether one is set).
    pub set: bool,
    /// `flag --x`, `environment variable X`, `settings file` or `default`.
    pub source: String,
    pub locked: bool,
}

/// Every editable setting of `config`, with its source.
pub fn shown(config: &AgentConfig, file: &Map<String, Value>, locks: &Locks) -> Vec<Shown> {
    EDITABLE
        .iter()
        .map(|setting| {
            let value = match setting.key {
                "coordinator_url" => Some(config.coordinator_url.to_string()),
                "ollama_api_base" => Some(config.ollama_api_base.to_string()),
                "machine_name" => Some(config.machine_name.clone()),
                "heartbeat_interval_secs" => Some(config.heartbeat_interval.as_secs().to_string()),
                _ => None,
            };
            let set = match setting.key {
                "node_token" => config.node_token.is_some(),
                _ => value.is_some(),
            };
            let (source, locked) = match locks.by(setting.key) {
                Some(by) => (by.to_owned(), true),
                None if file.contains_key(setting.key) => ("settings file".to_owned(), false),
                None if !set => ("not set".to_owned(), false),
                None => ("default".to_owned(), false),
            };
            Shown {
                key: setting.key,
                label: setting.label,
                hint: setting.hint,
                secret: setting.secret,
                value: if setting.secret { None } else { value },
                set,
                source,
                locked,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn an_edit_sets_and_removes_values_and_keeps_the_other_keys() {
        let file =
            object(json!({"machine_name": "old", "register_max_retries": 3, "future_key": 1}));
        let edit = object(json!({
            "machine_name": "  new  ",
            "coordinator_url": "http://c:8080",
            "heartbeat_interval_secs": "7",
            "ollama_api_base": "",
        }));
        let next = apply_edit(&file, &edit, &Locks::default()).unwrap();
        assert_eq!(
            Value::Object(next),
            json!({
                "machine_name": "new",
                "coordinator_url": "http://c:8080",
                "heartbeat_interval_secs": 7,
                "register_max_retries": 3,
                "future_key": 1,
            })
        );
        let cleared = apply_edit(
            &object(json!({"node_token": "t"})),
            &object(json!({"node_token": null})),
            &Locks::default(),
        )
        .unwrap();
        assert!(cleared.is_empty());
    }

    #[test]
    fn locked_unknown_and_malformed_edits_are_refused_by_name() {
        let locks = Locks::of([(
            "coordinator_url",
            "environment variable COORDINATOR_URL".into(),
        )]);
        let file = Map::new();
        let refuse = |edit: Value| apply_edit(&file, &object(edit), &locks).unwrap_err();
        let locked = refuse(json!({"coordinator_url": "http://x"}));
        assert_eq!(locked.key(), "coordinator_url");
        assert!(locked.to_string().contains("COORDINATOR_URL"), "{locked}");
        assert_eq!(
            refuse(json!({"identity_file": "/etc/passwd"})).key(),
            "identity_file"
        );
        for bad in [json!(0), json!(-3), json!(1.5), json!("soon"), json!(true)] {
            let error = refuse(json!({ "heartbeat_interval_secs": bad }));
            assert_eq!(error.key(), "heartbeat_interval_secs", "{error}");
        }
        assert_eq!(refuse(json!({"machine_name": ["a"]})).key(), "machine_name");
    }

    #[test]
    fn the_file_is_written_whole_for_its_owner_only_and_a_broken_one_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("agent-settings.json");
        assert_eq!(read_object(&path).unwrap(), Map::new());
        let object = object(json!({"node_token": "secret", "machine_name": "m"}));
        write_object(&path, &object).unwrap();
        assert_eq!(read_object(&path).unwrap(), object);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "{ broken").unwrap();
        let error = read_object(&path).unwrap_err();
        assert!(error.contains("not valid JSON"), "{error}");
        std::fs::write(&path, "[1]").unwrap();
        assert!(
            read_object(&path)
                .unwrap_err()
                .contains("not a JSON object")
        );
    }

    #[test]
    fn shown_never_carries_the_secret_and_names_each_source() {
        let mut config = AgentConfig::new(
            "http://c:8080".parse().unwrap(),
            "http://127.0.0.1:11434".parse().unwrap(),
            "desk",
        );
        config.node_token = Some(crate::config::Secret("hunter2".into()));
        let locks = Locks::of([("machine_name", "flag --machine-name".into())]);
        let file = object(json!({"coordinator_url": "http://c:8080"}));
        let shown = shown(&config, &file, &locks);
        let text = serde_json::to_string(&shown).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        let by_key = |key: &str| shown.iter().find(|s| s.key == key).unwrap().clone();
        assert_eq!(by_key("coordinator_url").source, "settings file");
        assert_eq!(by_key("ollama_api_base").source, "default");
        let name = by_key("machine_name");
        assert!(name.locked && name.source == "flag --machine-name");
        let token = by_key("node_token");
        assert!(token.set && token.value.is_none() && token.secret);
        assert_eq!(
            by_key("heartbeat_interval_secs").value.as_deref(),
            Some("10")
        );
    }

    #[test]
    fn an_ollama_port_flag_locks_the_ollama_url() {
        use clap::CommandFactory as _;
        let matches = crate::Cli::command()
            .try_get_matches_from(["llm-router-agent", "--ollama-port", "21005"])
            .unwrap();
        let locks = Locks::from_matches(&matches, |_| None);
        assert_eq!(locks.by("ollama_api_base"), Some("flag --ollama-port"));
        assert_eq!(locks.by("coordinator_url"), None);
    }
}
