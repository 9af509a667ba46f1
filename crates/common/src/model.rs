//! Models a node holds (`/api/tags`) and has loaded in memory (`/api/ps`).

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadedModel {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_vram: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
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

#[cfg(test)]
mod tests {
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
