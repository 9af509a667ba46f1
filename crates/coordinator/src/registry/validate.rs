//! Checks on what clients send, so that nothing absurd reaches the registry.

use axum::http::Uri;
use llm_router_common::{
    MAX_MODELS_PER_NODE, MAX_NAME_LEN, MAX_NOTES_LEN, MAX_TAGS, ModelInfo, NodePatch,
    RegisterRequest,
};

use crate::error::ApiError;

fn invalid(message: String) -> ApiError {
    ApiError::Unprocessable(message)
}

/// A required short text field: trimmed, non-empty, not too long, no control characters.
pub fn name_field(field: &str, value: &str) -> Result<String, ApiError> {
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
pub fn api_url(value: &str) -> Result<String, ApiError> {
    let trimmed = value.trim().trim_end_matches('/');
    let uri: Uri = trimmed
        .parse()
        .map_err(|e| invalid(format!("api_url {value:?} is not a valid URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(invalid(format!(
                "api_url {value:?} must start with http:// or https://"
            )));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(format!("api_url {value:?} has no host")));
    }
    if uri.query().is_some() {
        return Err(invalid(format!("api_url {value:?} must not have a query")));
    }
    Ok(trimmed.to_owned())
}

fn models(field: &str, models: &[ModelInfo]) -> Result<(), ApiError> {
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
) -> Result<(), ApiError> {
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
pub fn registration(req: &RegisterRequest) -> Result<(String, String), ApiError> {
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
    for (field, value) in [
        ("ollama_version", &req.ollama_version),
        ("agent_version", &req.agent_version),
    ] {
        if let Some(value) = value {
            if value.len() > MAX_NAME_LEN {
                return Err(invalid(format!(
                    "{field} is longer than {MAX_NAME_LEN} bytes"
                )));
            }
        }
    }
    models("models", &req.models)?;
    model_names(
        "loaded_models",
        req.loaded_models.iter().map(|m| m.name.as_str()),
    )?;
    Ok((machine_name, url))
}

pub fn heartbeat(req: &llm_router_common::HeartbeatRequest) -> Result<(), ApiError> {
    if let Some(list) = &req.models {
        models("models", list)?;
    }
    if let Some(list) = &req.loaded_models {
        model_names("loaded_models", list.iter().map(|m| m.name.as_str()))?;
    }
    let m = &req.metrics;
    for (field, value) in [
        ("cpu_percent", m.cpu_percent),
        ("memory_percent", m.memory_percent),
    ] {
        if !value.is_finite() || !(0.0..=100.0 * 1024.0).contains(&value) {
            return Err(invalid(format!(
                "metrics.{field} must be a percentage, got {value}"
            )));
        }
    }
    Ok(())
}

/// Validates an operator edit; returns it with names trimmed and duplicates removed.
pub fn patch(mut patch: NodePatch) -> Result<NodePatch, ApiError> {
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
    if let Some(notes) = &patch.notes {
        if notes.len() > MAX_NOTES_LEN {
            return Err(invalid(format!(
                "notes are {} bytes long; the limit is {MAX_NOTES_LEN}",
                notes.len()
            )));
        }
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
        ] {
            assert!(api_url(bad).is_err(), "{bad:?} was accepted");
        }
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
