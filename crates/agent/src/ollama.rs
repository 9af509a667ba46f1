//! Client for the local Ollama: its version, the models it has and those loaded in memory.
//!
//! Answers are parsed leniently: unknown fields are ignored and one odd entry does not
//! spoil the whole list, because Ollama adds fields between releases.

use std::time::Duration;

use llm_router_common::{LoadedModel, MAX_MODELS_PER_NODE, ModelInfo};
use reqwest::Url;
use serde_json::Value;

/// Ollama is local: an answer slower than this means it is stuck, not far away.
const OLLAMA_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a question to Ollama got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum OllamaError {
    #[error("cannot reach Ollama at {url}: {reason}")]
    Unreachable { url: Url, reason: String },
    #[error("Ollama at {url} answered {status}")]
    Status {
        url: Url,
        status: reqwest::StatusCode,
    },
    #[error("Ollama at {url} sent an answer that is not the expected JSON: {reason}")]
    InvalidBody { url: Url, reason: String },
}

/// What one round of questions to Ollama found out.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaSnapshot {
    /// `GET /api/tags` answered: the node can serve requests.
    pub available: bool,
    pub version: Option<String>,
    /// `None` when `/api/tags` did not answer (the coordinator then keeps its last list).
    pub models: Option<Vec<ModelInfo>>,
    pub loaded_models: Option<Vec<LoadedModel>>,
    /// What an OpenAI-compatible server says of its own load (slots, queue).
    pub server_load: Option<llm_router_common::ServerLoad>,
    /// Why Ollama is unavailable, for the log.
    pub error: Option<String>,
}

/// One reused HTTP client for the local Ollama.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    http: reqwest::Client,
    base: Url,
    /// Which load endpoints the server lacks, shared by the client's clones.
    load_endpoints: std::sync::Arc<llm_router_common::server_load::LoadEndpoints>,
}

impl OllamaClient {
    /// A client for the server at `base`, sending `api_key` (for servers that need one).
    pub fn new(base: &Url, api_key: Option<&str>) -> Result<Self, reqwest::Error> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = api_key
            .and_then(|key| reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).ok())
        {
            let mut value = value;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(OLLAMA_TIMEOUT)
            .timeout(OLLAMA_TIMEOUT)
            .default_headers(headers)
            // Ollama is local: a system proxy would only get in the way.
            .no_proxy()
            .build()?;
        Ok(Self {
            http,
            base: crate::http::directory_url(base),
            load_endpoints: Default::default(),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Asks `/api/version`, `/api/tags` and `/api/ps` at once.
    pub async fn snapshot(&self) -> OllamaSnapshot {
        let (version, models, loaded) = tokio::join!(self.version(), self.tags(), self.ps());
        match models {
            Ok(models) => OllamaSnapshot {
                available: true,
                version: version.ok(),
                models: Some(models),
                loaded_models: loaded.ok(),
                server_load: None,
                error: None,
            },
            Err(error) => OllamaSnapshot {
                available: false,
                version: version.ok(),
                models: None,
                loaded_models: None,
                server_load: None,
                error: Some(error.to_string()),
            },
        }
    }

    /// What an OpenAI-compatible server offers: its models from `/v1/models`
    /// (all of them in memory: such a server serves what it loaded), and
    /// whether it is ready: `/health` where it has one (llama.cpp answers 503
    /// while it loads the model), else `/v1/models` answering.
    pub async fn openai_snapshot(&self) -> OllamaSnapshot {
        let (health, models, server_load) =
            tokio::join!(self.health(), self.openai_models(), self.server_load());
        let models = match (health, models) {
            (Err(error), _) | (_, Err(error)) => {
                return OllamaSnapshot {
                    available: false,
                    version: None,
                    models: None,
                    loaded_models: None,
                    server_load: None,
                    error: Some(error.to_string()),
                };
            }
            (Ok(()), Ok(models)) => models,
        };
        let loaded = models
            .iter()
            .map(|m| LoadedModel {
                name: m.name.clone(),
                ..LoadedModel::default()
            })
            .collect();
        OllamaSnapshot {
            available: true,
            version: None,
            models: Some(models),
            loaded_models: Some(loaded),
            server_load,
            error: None,
        }
    }

    /// The server's own account of its load: llama.cpp's `/slots`, else a
    /// Prometheus `/metrics` with series the coordinator knows; `None` without
    /// either (and then not asked again for a while).
    pub async fn server_load(&self) -> Option<llm_router_common::ServerLoad> {
        llm_router_common::server_load::read(&self.load_endpoints, |path| async move {
            let url = self.base.join(path).ok()?;
            let response = self.http.get(url).send().await.ok()?;
            let status = response.status().as_u16();
            Some((status, response.bytes().await.ok()?))
        })
        .await
    }

    /// `GET /health`: fine when the server has none (404) or answers 2xx.
    async fn health(&self) -> Result<(), OllamaError> {
        let url = self
            .base
            .join("health")
            .unwrap_or_else(|_| self.base.clone());
        let response =
            self.http
                .get(url.clone())
                .send()
                .await
                .map_err(|error| OllamaError::Unreachable {
                    url: url.clone(),
                    reason: crate::http::describe_transport_error(&error),
                })?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(OllamaError::Status { url, status })
    }

    /// `GET /v1/models`: `{"data": [{"id": …}, …]}`.
    pub async fn openai_models(&self) -> Result<Vec<ModelInfo>, OllamaError> {
        let (url, body) = self.get_json("v1/models").await?;
        let Some(Value::Array(entries)) = body.get("data") else {
            return Err(OllamaError::InvalidBody {
                url,
                reason: "no \"data\" list".to_owned(),
            });
        };
        Ok(entries
            .iter()
            .take(MAX_MODELS_PER_NODE)
            .filter_map(|entry| entry.get("id")?.as_str())
            .map(|id| ModelInfo {
                name: id.chars().take(llm_router_common::MAX_NAME_LEN).collect(),
                size: None,
                digest: None,
                modified_at: None,
                details: None,
            })
            .collect())
    }

    pub async fn version(&self) -> Result<String, OllamaError> {
        let (url, body) = self.get_json("api/version").await?;
        body.get("version")
            .and_then(Value::as_str)
            .map(|version| {
                version
                    .chars()
                    .take(llm_router_common::MAX_NAME_LEN)
                    .collect()
            })
            .ok_or_else(|| OllamaError::InvalidBody {
                url,
                reason: "no \"version\" string".to_owned(),
            })
    }

    pub async fn tags(&self) -> Result<Vec<ModelInfo>, OllamaError> {
        let (url, body) = self.get_json("api/tags").await?;
        let entries = model_entries(&url, &body)?;
        Ok(entries
            .iter()
            .filter_map(ModelInfo::from_tags_entry)
            .collect())
    }

    pub async fn ps(&self) -> Result<Vec<LoadedModel>, OllamaError> {
        let (url, body) = self.get_json("api/ps").await?;
        let entries = model_entries(&url, &body)?;
        Ok(entries
            .iter()
            .filter_map(LoadedModel::from_ps_entry)
            .collect())
    }

    async fn get_json(&self, path: &str) -> Result<(Url, Value), OllamaError> {
        let url = self.base.join(path).unwrap_or_else(|_| self.base.clone());
        let unreachable = |error: reqwest::Error| OllamaError::Unreachable {
            url: url.clone(),
            reason: crate::http::describe_transport_error(&error),
        };
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(OllamaError::Status { url, status });
        }
        let bytes = response.bytes().await.map_err(unreachable)?;
        let body = serde_json::from_slice(&bytes).map_err(|error| OllamaError::InvalidBody {
            url: url.clone(),
            reason: error.to_string(),
        })?;
        Ok((url, body))
    }
}

fn model_entries<'a>(url: &Url, body: &'a Value) -> Result<&'a [Value], OllamaError> {
    match body.get("models") {
        Some(Value::Array(entries)) => Ok(&entries[..entries.len().min(MAX_MODELS_PER_NODE)]),
        // Some Ollama versions answer `"models": null` when nothing is installed or loaded.
        Some(Value::Null) => Ok(&[]),
        _ => Err(OllamaError::InvalidBody {
            url: url.clone(),
            reason: "no \"models\" list".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_null_model_list_is_empty_and_a_missing_one_is_an_error() {
        let url = Url::parse("http://127.0.0.1:11434/api/ps").unwrap();
        assert!(
            model_entries(&url, &json!({"models": null}))
                .unwrap()
                .is_empty()
        );
        assert!(model_entries(&url, &json!({"error": "boom"})).is_err());
    }
}
