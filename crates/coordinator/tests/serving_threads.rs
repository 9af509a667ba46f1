//! Connections served on threads of their own: every request runs on one of
//! them, and a shutdown ends them all.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use llm_router_coordinator::serve::{
    ConnectionLimits, Stop, Threads, serve_on_threads, serving_thread,
};

const THREADS: usize = 3;

/// Which serving thread answered, or "none".
async fn which_thread() -> String {
    serving_thread().map_or_else(|| "none".to_owned(), |i| i.to_string())
}

#[tokio::test]
async fn requests_run_on_the_serving_threads_and_a_shutdown_ends_them() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/thread", get(which_thread));
    let shutdown = Stop::default();
    let threads = Threads {
        count: Some(THREADS),
        name: "test-serving".to_owned(),
    };
    let limits = ConnectionLimits {
        max_connections: Some(64),
        ..ConnectionLimits::default()
    };
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { serve_on_threads(listener, Ok, app, limits, &threads, shutdown).await }
    });

    // Each client has a connection of its own.
    for _ in 0..12 {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let answer = client
            .get(format!("http://{addr}/thread"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let index: usize = answer
            .parse()
            .unwrap_or_else(|_| panic!("answered off the serving threads: {answer}"));
        assert!(index < THREADS, "thread index {index} out of range");
    }

    shutdown.accepting.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the serving threads did not end after the shutdown");
    ended.unwrap().unwrap();
}
