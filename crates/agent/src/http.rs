//! What the agent's two HTTP clients (coordinator, Ollama) share: joining paths onto a
//! base URL, and one-line descriptions of transport failures.

use reqwest::Url;

/// `base` with a path that ends in '/', so that relative joins keep any path prefix
/// (`http://host/router` + `api/x` = `http://host/router/api/x`).
pub fn directory_url(base: &Url) -> Url {
    let mut url = base.clone();
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// A one-line reason for a failed request: what kind of failure, and the innermost cause in
/// the OS's own words ("Connection refused (os error 111)").
pub fn describe_transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    };
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    // The caller's message already names the URL, which is all reqwest's top level adds.
    format!("{kind}: {innermost}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_url_keeps_a_path_prefix() {
        let join = |base: &str| {
            directory_url(&Url::parse(base).unwrap())
                .join("api/agents/register")
                .unwrap()
                .to_string()
        };
        assert_eq!(join("http://c:8080"), "http://c:8080/api/agents/register");
        assert_eq!(join("http://c:8080/"), "http://c:8080/api/agents/register");
        assert_eq!(
            join("http://c/router"),
            "http://c/router/api/agents/register"
        );
        assert_eq!(
            join("http://c/router/?x=1"),
            "http://c/router/api/agents/register"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_described_in_the_os_words() {
        // Bound but never listening: connections are refused, and no other test can take the port.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let error = reqwest::Client::new()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap_err();
        let reason = describe_transport_error(&error);
        assert!(reason.starts_with("connection failed: "), "{reason}");
        assert!(reason.to_lowercase().contains("refused"), "{reason}");
    }
}
