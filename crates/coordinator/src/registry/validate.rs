//! Checks on what clients send, so that nothing absurd reaches the registry.

use axum::http::Uri;
use llm_router_common::{
    AddNodeRequest, ApiKind, MAX_MODELS_PER_NODE, MAX_NAME_LEN, MAX_NOTES_LEN, MAX_TAGS, ModelInfo,
    NodePatch, RegisterRequest,
};

use super::error::RegistryError;

/// At most the first 64 characters of `value`, a URL's user name and password
/// masked: what an error message may quote of what was sent.
pub fn shown(value: &str) -> String {
    let masked = match value.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) if !userinfo.contains('/') => format!("{scheme}://***@{host}"),
            _ => value.to_owned(),
        },
        None => value.to_owned(),
    };
    let mut short: String = masked.chars().take(64).collect();
    if short.len() < masked.len() {
        short.push('…');
    }
    short
}

fn invalid(message: String) -> RegistryError {
    RegistryError::Invalid(message)
}

/// A required short text field: trimmed, non-empty, not too long, no control characters.
pub fn name_field(field: &str, value: &str) -> Result<String, RegistryError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_NAME_LEN}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value.to_owned())
}

/// A base URL of an inference API: http(s), with a host, without query or fragment.
/// Returned without a trailing slash so paths can be appended.
pub fn api_url(value: &str) -> Result<String, RegistryError> {
    let trimmed = value.trim().trim_end_matches('/');
    let value = shown(value);
    let scheme = trimmed
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        return Err(invalid(format!(
            "api_url {value:?} must start with http:// or https://"
        )));
    }
    let uri: Uri = trimmed
        .parse()
        .map_err(|e| invalid(format!("api_url {value:?} is not a valid URL: {e}")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(format!("api_url {value:?} has no host")));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid(
            "api_url must not carry a user name or password; give a node's key as api_key"
                .to_owned(),
        ));
    }
    if uri.query().is_some() {
        return Err(invalid(format!("api_url {value:?} must not have a query")));
    }
    Ok(trimmed.to_owned())
}

fn models(field: &str, models: &[ModelInfo]) -> Result<(), RegistryError> {
    if models.len() > MAX_MODELS_PER_NODE {
        return Err(invalid(format!(
            "{field} lists {} models; the limit is {MAX_MODELS_PER_NODE}",
            models.len()
        )));
    }
    for model in models {
        name_field(&format!("{field}[].name"), &model.name)?;
    }
    Ok(())
}

fn model_names<'a>(
    field: &str,
    names: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), RegistryError> {
    if names.len() > MAX_MODELS_PER_NODE {
        return Err(invalid(format!(
            "{field} lists {} models; the limit is {MAX_MODELS_PER_NODE}",
            names.len()
        )));
    }
    for name in names {
        name_field(&format!("{field}[].name"), name)?;
    }
    Ok(())
}

/// Validates a registration and returns the machine name and API URL to use.
pub fn registration(req: &RegisterRequest) -> Result<(String, String), RegistryError> {
    let machine_name = name_field("machine_name", &req.machine_name)?;
    let url = match &req.api_url {
        Some(url) => api_url(url)?,
        None => {
            if req.ollama_port == 0 {
                return Err(invalid("ollama_port must be between 1 and 65535".into()));
            }
            if req.ip_address.is_unspecified() {
                return Err(invalid(format!(
                    "ip_address {} is not an address the coordinator can reach",
                    req.ip_address
                )));
            }
            format!(
                "http://{}",
                std::net::SocketAddr::new(req.ip_address, req.ollama_port)
            )
        }
    };
    api_key_field(req.node_api_key.as_deref())?;
    for (field, value) in [
        ("ollama_version", &req.ollama_version),
        ("agent_version", &req.agent_version),
    ] {
        if let Some(value) = value
            && value.len() > MAX_NAME_LEN
        {
            return Err(invalid(format!(
                "{field} is longer than {MAX_NAME_LEN} bytes"
            )));
        }
    }
    models("models", &req.models)?;
    model_names(
        "loaded_models",
        req.loaded_models.iter().map(|m| m.name.as_str()),
    )?;
    Ok((machine_name, url))
}

/// A node to add without an agent, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentlessNode {
    /// The name the operator gave, or the URL's host.
    pub name: String,
    /// Whether the operator gave the name (a re-add then renames the node).
    pub name_given: bool,
    pub api_url: String,
    /// The URL's host, without IPv6 brackets.
    pub host: String,
    /// The URL's port, or the scheme's default.
    pub port: u16,
    pub kind: ApiKind,
    /// Whether the operator gave the kind (a re-add then changes it).
    pub kind_given: bool,
    /// The server's own API key, sent by the proxy and the probes.
    pub api_key: Option<String>,
}

/// Validates `POST /api/nodes`. For an OpenAI-compatible server a trailing
/// `/v1` is dropped, since the proxy appends the `/v1/...` paths itself.
pub fn agentless(req: &AddNodeRequest) -> Result<AgentlessNode, RegistryError> {
    let kind = req.kind.unwrap_or_default();
    let mut url = api_url(&req.api_url)?;
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(format!("api_url {:?} is not a valid URL: {e}", req.api_url)))?;
    if kind == ApiKind::OpenAi && uri.path().ends_with("/v1") {
        url.truncate(url.len() - "/v1".len());
    }
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let name = match &req.name {
        Some(name) => name_field("name", name)?,
        None => name_field("name", &host)?,
    };
    Ok(AgentlessNode {
        name,
        name_given: req.name.is_some(),
        api_url: url,
        host,
        port,
        kind,
        kind_given: req.kind.is_some(),
        api_key: api_key_field(req.api_key.as_deref())?,
    })
}

/// A node's own API key: printable ASCII without spaces, so that it fits a header.
pub fn api_key_field(key: Option<&str>) -> Result<Option<String>, RegistryError> {
    let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    if key.len() > 4096 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "api_key must be up to 4096 printable ASCII characters without spaces".to_owned(),
        ));
    }
    Ok(Some(key.to_owned()))
}

pub fn heartbeat(req: &llm_router_common::HeartbeatRequest) -> Result<(), RegistryError> {
    if let Some(list) = &req.models {
        models("models", list)?;
    }
    if let Some(list) = &req.loaded_models {
        model_names("loaded_models", list.iter().map(|m| m.name.as_str()))?;
    }
    metrics(&req.metrics)
}

/// Readings above 100% by this much are rounding, not lies.
const PERCENT_TOLERANCE: f32 = 1.0;
/// The hottest a working chip reports, with room (°C).
const TEMPERATURE_RANGE: std::ops::RangeInclusive<f32> = -60.0..=200.0;

/// A heartbeat's machine metrics, to physical ranges: percentages 0–100, used memory no
/// more than the total, temperatures a chip can have.
fn metrics(m: &llm_router_common::NodeMetrics) -> Result<(), RegistryError> {
    let percent = |field: String, value: f32| {
        if value.is_finite() && (0.0..=100.0 + PERCENT_TOLERANCE).contains(&value) {
            Ok(())
        } else {
            Err(invalid(format!(
                "metrics.{field} must be a percentage from 0 to 100, got {value}"
            )))
        }
    };
    let memory = |field: String, used: Option<u64>, total: Option<u64>| match (used, total) {
        (Some(used), Some(total)) if total > 0 && used > total => Err(invalid(format!(
            "metrics.{field}: {used} bytes used of {total} in all"
        ))),
        _ => Ok(()),
    };
    percent("cpu_percent".into(), m.cpu_percent)?;
    percent("memory_percent".into(), m.memory_percent)?;
    memory(
        "memory_used_bytes".into(),
        Some(m.memory_used_bytes),
        Some(m.memory_total_bytes),
    )?;
    if m.gpus.len() > 64 {
        return Err(invalid(format!(
            "metrics.gpus lists {} GPUs; the limit is 64",
            m.gpus.len()
        )));
    }
    for (i, gpu) in m.gpus.iter().enumerate() {
        if let Some(value) = gpu.utilization_percent {
            percent(format!("gpus[{i}].utilization_percent"), value)?;
        }
        memory(
            format!("gpus[{i}].memory_used_bytes"),
            gpu.memory_used_bytes,
            gpu.memory_total_bytes,
        )?;
        if let Some(value) = gpu.temperature_celsius
            && !(value.is_finite() && TEMPERATURE_RANGE.contains(&value))
        {
            return Err(invalid(format!(
                "metrics.gpus[{i}].temperature_celsius must be a chip's temperature in °C, got {value}"
            )));
        }
        if gpu.name.len() > 256 || gpu.vendor.as_ref().is_some_and(|v| v.len() > 64) {
            return Err(invalid(format!(
                "metrics.gpus[{i}]: name or vendor too long"
            )));
        }
    }
    Ok(())
}

/// Validates an operator edit; returns it with names trimmed and duplicates removed.
pub fn patch(mut patch: NodePatch) -> Result<NodePatch, RegistryError> {
    if let Some(name) = &patch.display_name {
        patch.display_name = if name.trim().is_empty() {
            Some(String::new())
        } else {
            Some(name_field("display_name", name)?)
        };
    }
    if let Some(tags) = &patch.tags {
        if tags.len() > MAX_TAGS {
            return Err(invalid(format!(
                "{} tags given; the limit is {MAX_TAGS}",
                tags.len()
            )));
        }
        let mut clean: Vec<String> = Vec::with_capacity(tags.len());
        for tag in tags {
            let tag = name_field("tags[]", tag)?;
            if !clean.contains(&tag) {
                clean.push(tag);
            }
        }
        patch.tags = Some(clean);
    }
    if let Some(notes) = &patch.notes
        && notes.len() > MAX_NOTES_LEN
    {
        return Err(invalid(format!(
            "notes are {} bytes long; the limit is {MAX_NOTES_LEN}",
            notes.len()
        )));
    }
    if patch == NodePatch::default() {
        return Err(invalid(
            "nothing to change: give display_name, tags, notes or draining".into(),
        ));
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_router_common::{GpuMetrics, NodeMetrics};

    #[test]
    fn metrics_outside_physical_ranges_are_refused() {
        let gpu = |g: GpuMetrics| NodeMetrics {
            gpus: vec![g],
            ..NodeMetrics::default()
        };
        let bad = [
            NodeMetrics {
                cpu_percent: 100_000.0,
                ..NodeMetrics::default()
            },
            NodeMetrics {
                memory_percent: f32::NAN,
                ..NodeMetrics::default()
            },
            NodeMetrics {
                memory_used_bytes: 2,
                memory_total_bytes: 1,
                ..NodeMetrics::default()
            },
            gpu(GpuMetrics {
                utilization_percent: Some(-500.0),
                ..GpuMetrics::default()
            }),
            gpu(GpuMetrics {
                temperature_celsius: Some(1e38),
                ..GpuMetrics::default()
            }),
            gpu(GpuMetrics {
                memory_used_bytes: Some(10),
                memory_total_bytes: Some(5),
                ..GpuMetrics::default()
            }),
        ];
        for m in bad {
            assert!(metrics(&m).is_err(), "{m:?} was accepted");
        }
        let good = NodeMetrics {
            cpu_percent: 100.4,
            memory_percent: 0.0,
            memory_used_bytes: 5,
            memory_total_bytes: 10,
            gpus: vec![GpuMetrics {
                utilization_percent: Some(99.0),
                temperature_celsius: Some(83.0),
                memory_used_bytes: Some(1),
                memory_total_bytes: Some(2),
                ..GpuMetrics::default()
            }],
            models_disk_free_bytes: Some(1),
            models_disk_total_bytes: Some(2),
        };
        metrics(&good).unwrap();
    }

    #[test]
    fn messages_quote_a_short_prefix_and_mask_credentials() {
        assert_eq!(shown("http://user:pass@h:1/x"), "http://***@h:1/x");
        assert_eq!(shown("http://h/a@b"), "http://h/a@b");
        let long = "m".repeat(1_000_000);
        assert_eq!(shown(&long).chars().count(), 65);
        let error = api_url("ftp://user:secret@host").unwrap_err().to_string();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn api_url_accepts_http_and_strips_trailing_slash() {
        assert_eq!(
            api_url("http://10.0.0.2:11434/").unwrap(),
            "http://10.0.0.2:11434"
        );
        assert_eq!(
            api_url("https://gpu.example/v1").unwrap(),
            "https://gpu.example/v1"
        );
    }

    #[test]
    fn api_url_rejects_other_schemes_and_garbage() {
        for bad in [
            "ftp://host",
            "not a url",
            "",
            "http://",
            "host:11434",
            "http://h/?q=1",
            "http://user:pass@10.0.0.2:11434",
            "http://token@10.0.0.2:11434",
        ] {
            assert!(api_url(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn agentless_defaults_name_to_host_and_kind_to_ollama() {
        let req = |url: &str, name: Option<&str>, kind: Option<ApiKind>| AddNodeRequest {
            api_key: None,
            api_url: url.into(),
            name: name.map(str::to_owned),
            kind,
        };
        let node = agentless(&req("http://10.0.0.5:11434/", None, None)).unwrap();
        assert_eq!(node.name, "10.0.0.5");
        assert!(!node.name_given);
        assert_eq!(node.api_url, "http://10.0.0.5:11434");
        assert_eq!((node.host.as_str(), node.port), ("10.0.0.5", 11434));
        assert_eq!(node.kind, ApiKind::Ollama);

        let node = agentless(&req(
            "https://gpu.example/v1",
            Some(" gpu-box "),
            Some(ApiKind::OpenAi),
        ))
        .unwrap();
        assert_eq!(node.name, "gpu-box");
        assert_eq!(node.api_url, "https://gpu.example");
        assert_eq!(node.port, 443);

        let node = agentless(&req("http://[::1]:8000", None, Some(ApiKind::OpenAi))).unwrap();
        assert_eq!(node.host, "::1");
        let node = agentless(&req("http://v1", None, Some(ApiKind::OpenAi))).unwrap();
        assert_eq!(node.api_url, "http://v1");

        assert!(agentless(&req("ftp://x", None, None)).is_err());
        assert!(agentless(&req("http://x", Some("  "), None)).is_err());
        assert!(agentless(&req("http://x", Some(&"n".repeat(MAX_NAME_LEN + 1)), None)).is_err());
    }

    #[test]
    fn name_field_trims_and_rejects_blank_long_and_control() {
        assert_eq!(name_field("n", "  gpu-1 ").unwrap(), "gpu-1");
        assert!(name_field("n", "   ").is_err());
        assert!(name_field("n", &"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(name_field("n", "a\nb").is_err());
    }

    #[test]
    fn empty_patch_is_rejected_and_tags_are_deduplicated() {
        assert!(patch(NodePatch::default()).is_err());
        let cleaned = patch(NodePatch {
            tags: Some(vec!["gpu".into(), " gpu ".into(), "mac".into()]),
            ..NodePatch::default()
        })
        .unwrap();
        assert_eq!(cleaned.tags.unwrap(), ["gpu", "mac"]);
    }
}
