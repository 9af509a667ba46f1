//! `/api/history`: the request history for the dashboard and operators.
//!
//! - `GET /api/history?model=&node=&key=&status=&endpoint=&outcome=&since=&until=&q=&limit=&offset=`
//!   → `{"total", "total_capped", "items", "dropped", "body_limit_bytes"}`, newest first
//!   (`key`: the name of the client API key the requests came with, exactly;
//!   `q` needs 3 characters or more; `total_capped`: a text search matched
//!   more requests than it counts, see
//!   [`SEARCH_COUNT_CAP`](crate::history::store::SEARCH_COUNT_CAP));
//! - `GET /api/history/{id}` → one request with its bodies and assembled text;
//! - `GET /api/history/export?format=csv|json&<filters>` → every matching
//!   request as a download, streamed page by page;
//! - `GET /api/history/timeseries?minutes=60` → per-minute figures for charts.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use serde_json::json;

use super::AppState;
use crate::error::ApiError;
use crate::history::query::{Filter, HistoryQuery, Page};
use crate::history::store::{Cursor, HistoryItem, HistoryStore};

/// Items read from the database per page of an export.
const EXPORT_PAGE: u32 = 500;

/// Longest chart the timeseries serves: one day.
const MAX_MINUTES: u32 = 24 * 60;

/// CSV columns of an export, the fields of a list item.
pub(crate) const CSV_COLUMNS: [&str; 17] = [
    "id",
    "request_id",
    "time",
    "client_ip",
    "api_key",
    "endpoint",
    "model",
    "node",
    "nodes_tried",
    "status",
    "outcome",
    "stream",
    "duration_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "error",
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list))
        .route("/export", get(export))
        .route("/timeseries", get(timeseries))
        .route("/{id}", get(show))
}

/// The answer for a request id the history does not hold.
fn not_in_history(id: i64) -> ApiError {
    ApiError::NotFound(format!(
        "request {id} is not in the history (unknown, or older than the retention)"
    ))
}

/// The answer when a query of the history failed.
fn read_failed(detail: impl std::fmt::Display) -> ApiError {
    ApiError::Internal {
        what: "the request history could not be read",
        detail: detail.to_string(),
    }
}

fn store(state: &AppState) -> Result<Arc<HistoryStore>, ApiError> {
    state
        .history
        .store()
        .cloned()
        .map_err(|reason| ApiError::Unavailable(reason.to_owned()))
}

fn params(query: Result<Query<HistoryQuery>, QueryRejection>) -> Result<HistoryQuery, ApiError> {
    query
        .map(|Query(params)| params)
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))
}

/// Runs a query on a blocking thread (SQLite calls block).
async fn blocking<T: Send + 'static>(
    query: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(query)
        .await
        .map_err(|e| read_failed(e.to_string()))?
        .map_err(|e| read_failed(e.to_string()))
}

async fn list(
    State(state): State<AppState>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = params(query)?;
    let filter = Filter::from_query(&params).map_err(ApiError::BadRequest)?;
    let page = Page::from_query(&params).map_err(ApiError::BadRequest)?;
    let store = store(&state)?;
    let listed = blocking(move || store.list(&filter, page)).await?;
    Ok(Json(json!({
        "total": listed.total,
        "total_capped": listed.total_capped,
        "items": listed.items,
        "dropped": state.history.dropped(),
        "body_limit_bytes": state.history.settings().body_limit_bytes,
    })))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("history id must be a number, not {id:?}")))?;
    let store = store(&state)?;
    let detail = blocking(move || store.get(id)).await?;
    let detail = detail.ok_or_else(|| not_in_history(id))?;
    Ok(Json(json!(detail)))
}

async fn timeseries(
    State(state): State<AppState>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = params(query)?;
    let minutes = match params.minutes.as_deref().map(str::trim) {
        None | Some("") => 60,
        Some(m) => match m.parse::<u32>() {
            Ok(n @ 1..=MAX_MINUTES) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "minutes must be between 1 and {MAX_MINUTES}, not {m:?}"
                )));
            }
        },
    };
    let store = store(&state)?;
    let buckets = blocking(move || store.timeseries(chrono::Utc::now(), minutes)).await?;
    Ok(Json(json!(buckets)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Csv,
    Json,
}

async fn export(
    State(state): State<AppState>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let format = match params
        .format
        .as_deref()
        .map(|f| f.trim().to_ascii_lowercase())
    {
        None => ExportFormat::Csv,
        Some(f) if f.is_empty() || f == "csv" => ExportFormat::Csv,
        Some(f) if f == "json" => ExportFormat::Json,
        Some(f) => {
            return Err(ApiError::BadRequest(format!(
                "format must be csv or json, not {f:?}"
            )));
        }
    };
    let filter = Filter::from_query(&params).map_err(ApiError::BadRequest)?;
    let store = store(&state)?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || write_export(&store, &filter, format, &sender));
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let (content_type, extension) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        ExportFormat::Json => ("application/json", "json"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"llm-router-history.{extension}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Reads the matching requests page by page and sends each page as it is
/// formatted; stops early when the client goes away.
fn write_export(
    store: &HistoryStore,
    filter: &Filter,
    format: ExportFormat,
    sender: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let send = |chunk: Vec<u8>| sender.blocking_send(Ok(Bytes::from(chunk))).is_ok();
    let opening = match format {
        ExportFormat::Csv => format!("{}\r\n", CSV_COLUMNS.join(",")).into_bytes(),
        ExportFormat::Json => b"[".to_vec(),
    };
    if !send(opening) {
        return;
    }
    let mut cursor = None;
    let mut first = true;
    loop {
        let page = match store.page_after(filter, cursor, EXPORT_PAGE) {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "request history export failed");
                // Breaks the download off, so the client does not take a partial file for a whole one.
                let _ = sender.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        let Some(last) = page.last() else {
            break;
        };
        cursor = Some(Cursor::from(last));
        let mut chunk = Vec::with_capacity(page.len() * 256);
        for item in &page {
            match format {
                ExportFormat::Csv => csv_row(item, &mut chunk),
                ExportFormat::Json => {
                    chunk.extend_from_slice(if first { b"\n" } else { b",\n" });
                    if serde_json::to_writer(&mut chunk, item).is_err() {
                        chunk.extend_from_slice(b"null");
                    }
                }
            }
            first = false;
        }
        if !send(chunk) {
            return;
        }
        if page.len() < EXPORT_PAGE as usize {
            break;
        }
    }
    if format == ExportFormat::Json {
        send(if first {
            b"]\n".to_vec()
        } else {
            b"\n]\n".to_vec()
        });
    }
}

/// One CSV line (RFC 4180: fields quoted when needed, CRLF at the end).
pub(crate) fn csv_row(item: &HistoryItem, out: &mut Vec<u8>) {
    let optional = |value: Option<String>| value.unwrap_or_default();
    // Typed by the header, so a column added to one and not the other does not compile.
    let fields: [String; CSV_COLUMNS.len()] = [
        item.id.to_string(),
        item.request_id.clone(),
        item.time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        optional(item.client_ip.clone()),
        optional(item.api_key.clone()),
        item.endpoint.clone(),
        item.model.clone(),
        optional(item.node.clone()),
        item.nodes_tried.join(";"),
        item.status.to_string(),
        item.outcome.clone(),
        item.stream.to_string(),
        item.duration_ms.to_string(),
        optional(item.ttft_ms.map(|t| t.to_string())),
        optional(item.prompt_tokens.map(|t| t.to_string())),
        optional(item.completion_tokens.map(|t| t.to_string())),
        optional(item.error.clone()),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // A spreadsheet runs a cell that starts like a formula (a model named
        // `=HYPERLINK(...)`): a leading apostrophe makes it text.
        let escaped;
        let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            escaped = format!("'{field}");
            &escaped
        } else {
            field
        };
        if field.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(field.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(model: &str, error: Option<&str>) -> HistoryItem {
        HistoryItem {
            id: 7,
            request_id: "r-1".into(),
            time: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            client_ip: Some("127.0.0.1".into()),
            api_key: None,
            endpoint: "/api/chat".into(),
            model: model.into(),
            node: Some("gpu-1".into()),
            nodes_tried: vec!["gpu-1".into()],
            status: 200,
            outcome: "completed".into(),
            stream: false,
            duration_ms: 1.5,
            ttft_ms: None,
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            error: error.map(str::to_owned),
        }
    }

    fn cells(item: &HistoryItem) -> String {
        let mut out = Vec::new();
        csv_row(item, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_made_text() {
        let row = cells(&item(
            "=HYPERLINK(\"http://evil.example\",\"x\")",
            Some("@SUM(A1)"),
        ));
        assert!(
            row.contains(",\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\","),
            "{row}"
        );
        assert!(row.ends_with(",'@SUM(A1)\r\n"), "{row}");
        for start in ["+1", "-1", "\tx"] {
            let row = cells(&item(start, None));
            assert!(row.contains(&format!(",'{start},")), "{row:?}");
        }
    }

    #[test]
    fn ordinary_csv_cells_are_unchanged() {
        let row = cells(&item("llama3.2:latest", Some("a, b")));
        assert_eq!(
            row,
            "7,r-1,1970-01-01T00:00:00.000Z,127.0.0.1,,/api/chat,llama3.2:latest,gpu-1,gpu-1,\
             200,completed,false,1.5,,3,4,\"a, b\"\r\n"
        );
    }
}
