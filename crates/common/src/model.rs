//! Models a node holds (`/api/tags`) and has loaded in memory (`/api/ps`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One entry of Ollama's `/api/tags`, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<String>,
    /// Ollama's `details` object (family, parameter size, quantization…), kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ModelInfo {
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            size: None,
            digest: None,
            modified_at: None,
            details: None,
        }
    }
}

/// One entry of Ollama's `/api/ps`: a model resident in memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadedModel {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_vram: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Ollama's `details` object, kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// The context the model was loaded with (Ollama's `context_length`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
}

/// The name under which two spellings of one model compare equal:
/// Ollama treats `llama3.2` and `llama3.2:latest` as the same model.
pub fn canonical_model_name(name: &str) -> String {
    let name = name.trim();
    // A ':' inside the last path segment is a tag; one before a '/' is a registry port.
    let last_segment = name.rsplit('/').next().unwrap_or(name);
    if last_segment.contains(':') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

fn entry_name(entry: &Value) -> Option<String> {
    ["name", "model"]
        .iter()
        .filter_map(|key| entry.get(key).and_then(Value::as_str))
        .map(str::trim)
        .find(|name| !name.is_empty())
        .map(str::to_owned)
}

fn string_field(entry: &Value, key: &str) -> Option<String> {
    entry.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl ModelInfo {
    /// One entry of Ollama's `/api/tags`; `None` for an entry without a name.
    /// Fields of other types than Ollama's are dropped, unknown ones ignored.
    pub fn from_tags_entry(entry: &Value) -> Option<ModelInfo> {
        Some(ModelInfo {
            name: entry_name(entry)?,
            size: entry.get("size").and_then(Value::as_u64),
            digest: string_field(entry, "digest"),
            modified_at: string_field(entry, "modified_at"),
            details: entry
                .get("details")
                .filter(|details| details.is_object())
                .cloned(),
        })
    }
}

impl LoadedModel {
    /// One entry of Ollama's `/api/ps`; `None` for an entry without a name.
    pub fn from_ps_entry(entry: &Value) -> Option<LoadedModel> {
        Some(LoadedModel {
            name: entry_name(entry)?,
            size: entry.get("size").and_then(Value::as_u64),
            size_vram: entry.get("size_vram").and_then(Value::as_u64),
            expires_at: string_field(entry, "expires_at"),
            digest: string_field(entry, "digest"),
            details: entry.get("details").filter(|d| d.is_object()).cloned(),
            context_length: entry.get("context_length").and_then(Value::as_u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_tags_entry_keeps_what_the_coordinator_needs_and_ignores_the_rest() {
        let entry = json!({
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 2019393189u64,
            "digest": "a80c4f17acd5",
            "details": {"family": "llama", "parameter_size": "3.2B"},
            "something_new": [1, 2, 3]
        });
        assert_eq!(
            ModelInfo::from_tags_entry(&entry),
            Some(ModelInfo {
                name: "llama3.2:latest".to_owned(),
                size: Some(2019393189),
                digest: Some("a80c4f17acd5".to_owned()),
                modified_at: Some("2025-01-01T00:00:00Z".to_owned()),
                details: Some(json!({"family": "llama", "parameter_size": "3.2B"})),
            })
        );
    }

    #[test]
    fn odd_fields_are_dropped_and_nameless_entries_skipped() {
        let entry = json!({"model": "qwen2.5:7b", "size": "big", "details": "n/a"});
        assert_eq!(
            ModelInfo::from_tags_entry(&entry),
            Some(ModelInfo::named("qwen2.5:7b"))
        );
        assert_eq!(ModelInfo::from_tags_entry(&json!({"size": 1})), None);
        assert_eq!(ModelInfo::from_tags_entry(&json!({"name": "  "})), None);
    }

    #[test]
    fn a_ps_entry_reads_its_memory_and_expiry() {
        let entry = json!({
            "name": "mistral:latest",
            "size": 5137025024u64,
            "size_vram": 5137025024u64,
            "expires_at": "2024-06-04T14:38:31.83753-07:00",
            "context_length": 4096
        });
        assert_eq!(
            LoadedModel::from_ps_entry(&entry),
            Some(LoadedModel {
                name: "mistral:latest".to_owned(),
                size: Some(5137025024),
                size_vram: Some(5137025024),
                expires_at: Some("2024-06-04T14:38:31.83753-07:00".to_owned()),
                context_length: Some(4096),
                ..LoadedModel::default()
            })
        );
    }

    use super::*;

    #[test]
    fn canonical_name_adds_latest_tag_only_when_missing() {
        assert_eq!(canonical_model_name("llama3.2"), "llama3.2:latest");
        assert_eq!(canonical_model_name("llama3.2:latest"), "llama3.2:latest");
        assert_eq!(canonical_model_name("qwen2.5:7b"), "qwen2.5:7b");
        assert_eq!(
            canonical_model_name("registry.local:5000/team/model"),
            "registry.local:5000/team/model:latest"
        );
    }
}
