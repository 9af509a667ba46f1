//! The filters of the history list and export, read from query parameters.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Which requests a list, count or export covers. Every field narrows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Model as clients name it; `llama3.2` and `llama3.2:latest` match each other.
    pub model: Option<String>,
    /// Name of the node that answered (or last failed).
    pub node: Option<String>,
    /// Name of the client API key the requests came with (exactly).
    pub key: Option<String>,
    pub status: Option<StatusFilter>,
    /// Path called, e.g. `/api/chat`.
    pub endpoint: Option<String>,
    /// `completed`, `rejected`, `failed` or `cancelled`.
    pub outcome: Option<String>,
    /// Requests that arrived at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Requests that arrived before this time.
    pub until: Option<DateTime<Utc>>,
    /// Text searched (case-insensitively) in model, node, error, request body
    /// and response text; at least [`MIN_SEARCH_CHARS`] characters from the API.
    pub q: Option<String>,
}

/// A status code, or a class of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Exactly this code, e.g. `404`.
    Code(u16),
    /// Every code of this hundred, e.g. `4` for `4xx`.
    Class(u16),
}

impl StatusFilter {
    /// Reads `404` or `4xx` (classes 1xx to 5xx).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad =
            || format!("status must be a code such as 404 or a class such as 5xx, not {text:?}");
        let lower = text.to_ascii_lowercase();
        if let Some(digit) = lower.strip_suffix("xx") {
            return match digit.parse::<u16>() {
                Ok(class @ 1..=5) if digit.len() == 1 => Ok(StatusFilter::Class(class)),
                _ => Err(bad()),
            };
        }
        match text.parse::<u16>() {
            Ok(code @ 100..=599) => Ok(StatusFilter::Code(code)),
            _ => Err(bad()),
        }
    }
}

/// Shortest text search the API accepts: the search index is made of
/// trigrams, and a shorter term would make every search read every body.
pub const MIN_SEARCH_CHARS: usize = 3;

/// Values of `outcome`.
pub const OUTCOMES: [&str; 5] = ["completed", "rejected", "failed", "cancelled", "cut"];

/// Largest page of the history list.
pub const MAX_LIMIT: u32 = 500;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 50;

/// Page of a list: `limit` items after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u64,
}

/// The query string of the history endpoints (`/api/history`, its export and
/// its timeseries): each parameter as text, checked by [`Filter::from_query`],
/// [`Page::from_query`] and the handlers, so that every error names its
/// parameter and its allowed values. Unknown parameters are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HistoryQuery {
    pub model: Option<String>,
    pub node: Option<String>,
    pub key: Option<String>,
    pub status: Option<String>,
    pub endpoint: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub q: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
    /// Export only: `csv` (default) or `json`.
    pub format: Option<String>,
    /// Timeseries only: minutes back from now.
    pub minutes: Option<String>,
}

/// A parameter's value with surrounding blanks removed; `None` when blank or absent.
fn text(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl Filter {
    /// Reads the filter parameters; blank values are ignored.
    pub fn from_query(query: &HistoryQuery) -> Result<Self, String> {
        let time = |name: &str, value: &Option<String>| -> Result<Option<DateTime<Utc>>, String> {
            text(value)
                .map(|v| {
                    DateTime::parse_from_rfc3339(&v)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| {
                            format!(
                                "{name} must be an RFC 3339 time such as 2025-01-31T12:00:00Z, not {v:?} ({e})"
                            )
                        })
                })
                .transpose()
        };
        let status = text(&query.status)
            .map(|s| StatusFilter::parse(&s))
            .transpose()?;
        let outcome = text(&query.outcome).map(|o| o.to_ascii_lowercase());
        if let Some(outcome) = &outcome
            && !OUTCOMES.contains(&outcome.as_str())
        {
            return Err(format!(
                "outcome must be one of {}, not {outcome:?}",
                OUTCOMES.join(", ")
            ));
        }
        let q = query.q.clone().filter(|q| !q.trim().is_empty());
        if let Some(q) = &q
            && q.chars().count() < MIN_SEARCH_CHARS
        {
            return Err(format!(
                "q must have at least {MIN_SEARCH_CHARS} characters, not {q:?}"
            ));
        }
        let since = time("since", &query.since)?;
        let until = time("until", &query.until)?;
        if let (Some(since), Some(until)) = (since, until)
            && since > until
        {
            return Err("since must not be after until".to_owned());
        }
        Ok(Filter {
            model: text(&query.model),
            node: text(&query.node),
            key: text(&query.key),
            status,
            endpoint: text(&query.endpoint),
            outcome,
            since,
            until,
            // The search text is kept as typed (spaces inside it count).
            q,
        })
    }
}

impl Filter {
    /// Whether the text search is the only condition.
    pub fn is_text_search_only(&self) -> bool {
        self.q.is_some()
            && self.model.is_none()
            && self.node.is_none()
            && self.key.is_none()
            && self.status.is_none()
            && self.endpoint.is_none()
            && self.outcome.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }
}

impl Page {
    /// Reads `limit` (1 to 500, default 50) and `offset` (default 0).
    pub fn from_query(query: &HistoryQuery) -> Result<Self, String> {
        let limit = match text(&query.limit) {
            None => DEFAULT_LIMIT,
            Some(v) => match v.parse::<u32>() {
                Ok(n @ 1..=MAX_LIMIT) => n,
                _ => {
                    return Err(format!(
                        "limit must be between 1 and {MAX_LIMIT}, not {v:?}"
                    ));
                }
            },
        };
        let offset = match text(&query.offset) {
            None => 0,
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| format!("offset must be a whole number, not {v:?}"))?,
        };
        Ok(Page { limit, offset })
    }
}

/// The name under which a model is indexed: `llama3.2:latest` and
/// `llama3.2` are the same model to Ollama, so both are kept as `llama3.2`.
pub fn model_key(model: &str) -> &str {
    model.strip_suffix(":latest").unwrap_or(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HistoryQuery {
        let map: std::collections::HashMap<&str, &str> = pairs.iter().copied().collect();
        serde_json::from_value(serde_json::json!(map)).unwrap()
    }

    #[test]
    fn status_codes_and_classes() {
        assert_eq!(StatusFilter::parse("404"), Ok(StatusFilter::Code(404)));
        assert_eq!(StatusFilter::parse("5xx"), Ok(StatusFilter::Class(5)));
        assert_eq!(StatusFilter::parse("2XX"), Ok(StatusFilter::Class(2)));
        for bad in ["6xx", "xx", "12xx", "abc", "99", "600", "-1"] {
            assert!(StatusFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_are_read_and_checked() {
        let filter = Filter::from_query(&params(&[
            ("model", "llama3.2"),
            ("status", "4xx"),
            ("since", "2025-01-01T00:00:00Z"),
            ("until", "2025-01-02T00:00:00+02:00"),
            ("outcome", "Failed"),
            ("q", " hello "),
            ("node", ""),
            ("key", " alice "),
        ]))
        .unwrap();
        assert_eq!(filter.model.as_deref(), Some("llama3.2"));
        assert_eq!(filter.node, None);
        assert_eq!(filter.key.as_deref(), Some("alice"));
        assert!(!filter.is_text_search_only());
        assert_eq!(filter.status, Some(StatusFilter::Class(4)));
        assert_eq!(filter.outcome.as_deref(), Some("failed"));
        assert_eq!(filter.q.as_deref(), Some(" hello "));
        assert_eq!(
            filter.until.unwrap().to_rfc3339(),
            "2025-01-01T22:00:00+00:00"
        );
        assert!(Filter::from_query(&params(&[("since", "yesterday")])).is_err());
        assert!(Filter::from_query(&params(&[("outcome", "exploded")])).is_err());
        assert!(Filter::from_query(&params(&[("q", "ab")])).is_err());
        assert!(Filter::from_query(&params(&[("q", "abc")])).is_ok());
        assert!(
            Filter::from_query(&params(&[
                ("since", "2025-01-02T00:00:00Z"),
                ("until", "2025-01-01T00:00:00Z")
            ]))
            .is_err()
        );
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(
            Page::from_query(&params(&[])).unwrap(),
            Page {
                limit: 50,
                offset: 0
            }
        );
        assert_eq!(
            Page::from_query(&params(&[("limit", "500"), ("offset", "10")])).unwrap(),
            Page {
                limit: 500,
                offset: 10
            }
        );
        for bad in ["0", "501", "ten", "-1"] {
            assert!(
                Page::from_query(&params(&[("limit", bad)])).is_err(),
                "{bad}"
            );
        }
        assert!(Page::from_query(&params(&[("offset", "-5")])).is_err());
    }

    #[test]
    fn latest_tag_is_the_same_model() {
        assert_eq!(model_key("llama3.2:latest"), "llama3.2");
        assert_eq!(model_key("llama3.2"), "llama3.2");
        assert_eq!(model_key("qwen:7b"), "qwen:7b");
    }
}
