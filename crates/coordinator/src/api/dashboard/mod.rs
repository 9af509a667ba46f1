//! The operator dashboard at `/dashboard`: one page whose HTML, script and style sheet are
//! compiled into the binary (no build step, no CDN, works offline), and `GET /api/events`,
//! the server-sent events that keep it live.
//!
//! The page reads everything else from the public JSON API (`/api/agents`, `/api/history`,
//! `/api/tasks`, and `GET /api/stats`, the request totals since the coordinator started,
//! served here), so the dashboard can do nothing an API client could not.

mod events;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

use crate::api::AppState;

/// What only operators may see: the page and its event stream.
pub fn operator_routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(|headers| serve(&INDEX, headers)))
        .route(
            "/dashboard/",
            get(|| async { Redirect::permanent("/dashboard") }),
        )
        .route("/api/events", get(events::stream))
        .route("/api/stats", get(totals))
}

/// `GET /api/stats`: the requests received since the coordinator started, refused ones
/// included, as the request tiles count them.
async fn totals(State(state): State<AppState>) -> Json<crate::stats::RequestTotals> {
    Json(state.stats.totals())
}

/// The login page (and the setup page, the same one with a token in its link).
pub fn login_routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(|headers| serve(&LOGIN, headers)))
        .route("/setup", get(|headers| serve(&LOGIN, headers)))
}

/// Script and style: the same for everyone, nothing in them is secret.
pub fn asset_routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard/app.js", get(|headers| serve(&SCRIPT, headers)))
        .route("/dashboard/app.css", get(|headers| serve(&STYLE, headers)))
        .route(
            "/dashboard/login.js",
            get(|headers| serve(&LOGIN_SCRIPT, headers)),
        )
}

/// One embedded file and its validator.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

static INDEX: Asset = Asset {
    body: include_str!("assets/index.html"),
    content_type: "text/html; charset=utf-8",
};
static SCRIPT: Asset = Asset {
    body: include_str!("assets/app.js"),
    content_type: "text/javascript; charset=utf-8",
};
static LOGIN: Asset = Asset {
    body: include_str!("assets/login.html"),
    content_type: "text/html; charset=utf-8",
};
static LOGIN_SCRIPT: Asset = Asset {
    body: include_str!("assets/login.js"),
    content_type: "text/javascript; charset=utf-8",
};
static STYLE: Asset = Asset {
    body: llm_router_desktop::STYLESHEET,
    content_type: "text/css; charset=utf-8",
};

/// Everything the page loads comes from this origin; inline script and style are refused,
/// so a node name or a request body shown on the page can never run as code.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

impl Asset {
    /// A strong validator: the content hash (FNV-1a), so a new binary with changed assets is
    /// never answered from a stale browser cache, and an unchanged one costs a 304.
    fn etag(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.body.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("\"{hash:016x}\"")
    }
}

async fn serve(asset: &'static Asset, request: HeaderMap) -> Response {
    let etag = asset.etag();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    // Revalidate every time: the assets change with the binary, and a 304 on loopback or a
    // LAN costs next to nothing.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::api::app;
    use crate::config::Config;

    #[tokio::test]
    async fn assets_are_served_with_their_types_and_validators() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _store) =
            crate::server::load_registry(&Config::with_data_dir(dir.path())).unwrap();
        let router = app(AppState::new(Arc::clone(&registry), Default::default()).unwrap());
        let get = |uri: &str, etag: Option<&str>| {
            let mut request = Request::get(uri);
            if let Some(etag) = etag {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            router.clone().oneshot(request.body(Body::empty()).unwrap())
        };
        for (uri, asset) in [
            ("/dashboard", &INDEX),
            ("/dashboard/app.js", &SCRIPT),
            ("/dashboard/app.css", &STYLE),
        ] {
            let response = get(uri, None).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            let headers = response.headers().clone();
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type, "{uri}");
            assert_eq!(headers[header::ETAG], asset.etag().as_str(), "{uri}");
            assert!(
                headers.contains_key(header::CONTENT_SECURITY_POLICY),
                "{uri}"
            );
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, asset.body.as_bytes(), "{uri}");

            let again = get(uri, Some(&asset.etag())).await.unwrap();
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{uri}");
            let stale = get(uri, Some("\"0000\"")).await.unwrap();
            assert_eq!(stale.status(), StatusCode::OK, "{uri}");
        }
        let slash = get("/dashboard/", None).await.unwrap();
        assert_eq!(slash.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(slash.headers()[header::LOCATION], "/dashboard");
        let unknown = get("/dashboard/nothing.js", None).await.unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn request_totals_start_at_zero_with_their_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _store) =
            crate::server::load_registry(&Config::with_data_dir(dir.path())).unwrap();
        let router = app(AppState::new(Arc::clone(&registry), Default::default()).unwrap());
        let response = router
            .oneshot(Request::get("/api/stats").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let totals: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (&totals["requests"], &totals["errors"], &totals["rejected"]),
            (&0.into(), &0.into(), &0.into()),
            "{totals}"
        );
        assert!(totals["since"].is_string(), "{totals}");
    }

    #[test]
    fn etags_differ_per_asset_and_are_quoted() {
        let tags = [INDEX.etag(), SCRIPT.etag(), STYLE.etag()];
        for tag in &tags {
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        }
        assert_ne!(tags[0], tags[1]);
        assert_ne!(tags[1], tags[2]);
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let html = INDEX.body;
        assert!(html.contains(r#"src="/dashboard/app.js""#));
        assert!(html.contains(r#"href="/dashboard/app.css""#));
        // No inline script or style: the content security policy would refuse them.
        assert!(!html.contains("<script>"), "inline script in index.html");
        assert!(!html.contains("<style"), "inline style in index.html");
        assert!(
            !html.contains(" style=\""),
            "inline style attribute in index.html"
        );
        // Nothing from elsewhere (a CDN, web fonts): the dashboard works offline.
        for asset in [INDEX.body, SCRIPT.body, STYLE.body] {
            for needle in [
                "src=\"http",
                "href=\"http",
                "url(http",
                "url(\"http",
                "@import",
            ] {
                assert!(!asset.contains(needle), "an asset loads {needle}…");
            }
        }
    }
}
