//! What a client can hold of the coordinator: slow heads, idle keep-alives,
//! slow bodies, requests in flight and body bytes are all bounded, and the
//! clients that behave are served throughout.
//!
//! The connection tests run the coordinator as its own process, so that its
//! file descriptors and memory are measured apart from the test's.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use llm_router_mock_node::{MockConfig, MockNode};
use reqwest::StatusCode;
use serde_json::json;
use support::fleet::Fleet;
use support::process::{Proc, binary, eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A coordinator process on loopback with `args`; its data folder lives as long as the value.
fn coordinator(args: &[&str]) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary("llm-router"));
    command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(args);
    (Proc::spawn("coordinator", command), dir)
}

/// This test process holds many sockets: lift its own soft open-file limit.
fn allow_sockets(needed: u64) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= needed,
        "this test needs {needed} open files and the hard limit is {limit}"
    );
}

/// Whether the peer closed `stream` (end of stream or reset), without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 64];
    match stream.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

async fn health_is_served(client: &reqwest::Client, addr: SocketAddr) {
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(format!("http://{addr}/api/health")).send(),
    )
    .await
    .expect("/api/health did not answer within 10 s")
    .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_are_closed_by_the_header_timeout_while_others_are_served() {
    const LORIS: usize = 500;
    allow_sockets(LORIS as u64 + 200);
    // The idle timeout is far off: only the header timeout can close these.
    let (coordinator, _dir) = coordinator(&["--header-timeout", "1", "--idle-timeout", "600"]);
    let addr = coordinator.listening_addr();
    let mut loris = Vec::with_capacity(LORIS);
    for _ in 0..LORIS {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        loris.push(Some(stream));
    }
    let client = reqwest::Client::new();
    // Each slow client keeps sending a header line now and then, never the end of its head.
    let mut pace = tokio::time::interval(Duration::from_millis(250));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut open = LORIS;
    while open > 0 {
        assert!(
            Instant::now() < deadline,
            "{open} of {LORIS} slow-loris connections still open after 60 s"
        );
        pace.tick().await;
        for slot in loris.iter_mut() {
            let Some(stream) = slot else { continue };
            if is_closed(stream) || stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                *slot = None;
                open -= 1;
            }
        }
        health_is_served(&client, addr).await;
    }
    health_is_served(&client, addr).await;
}

/// Sends one request on `stream` and reads its whole answer, leaving the connection open.
async fn one_request(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before the answer ended");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert!(!head.contains("connection: close"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("a content-length");
            if answer.len() >= end + 4 + length {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    const IDLE: usize = 2_000;
    allow_sockets(IDLE as u64 + 200);
    // The header timeout is far off: only the idle timeout can close these.
    let (coordinator, _dir) = coordinator(&["--idle-timeout", "1", "--header-timeout", "600"]);
    let addr = coordinator.listening_addr();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        one_request(&mut stream).await;
        idle.push(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, stream) in idle.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("idle connection {i} still open after 60 s"));
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "idle connection {i} got bytes"
        );
    }
    health_is_served(&reqwest::Client::new(), addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408_and_a_huge_announced_one_413_at_once() {
    let (coordinator, _dir) = coordinator(&["--body-timeout", "1", "--body-min-rate", "1024"]);
    let addr = coordinator.listening_addr();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(
            b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 5000\r\n\r\n{\"",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut answer))
        .await
        .expect("a stalled body was not answered within 30 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("too slowly"), "{text}");

    let mut huge = TcpStream::connect(addr).await.unwrap();
    huge.write_all(
        b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 99999999999\r\n\r\n{\"",
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(30), huge.read(&mut answer))
        .await
        .expect("a body announced too large was not answered at once")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test]
async fn a_node_at_its_in_flight_cap_sends_the_rest_to_503_with_retry_after() {
    let fleet = Fleet::start_with(
        vec![MockConfig {
            ttft: Duration::from_secs(3),
            ..MockConfig::named("slow")
        }],
        |config| {
            config.proxy.admission.max_in_flight_per_node = 1;
            config.proxy.admission.wait = Duration::from_millis(200);
        },
    )
    .await;
    let body = json!({"model": "llama3.2", "prompt": "hi", "stream": false});
    let first = tokio::spawn({
        let (client, url, body) = (
            fleet.client.clone(),
            fleet.url("/api/generate"),
            body.clone(),
        );
        async move { client.post(url).json(&body).send().await.unwrap().status() }
    });
    let node = fleet.node("slow");
    eventually(
        "the first request reaches the node",
        Duration::from_secs(10),
        || std::future::ready((node.stats().in_flight() == 1).then_some(())),
    )
    .await;

    let second = fleet.post("/api/generate", body.clone()).await;
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.headers()["retry-after"], "1");
    let error: serde_json::Value = second.json().await.unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("LLM_ROUTER_MAX_IN_FLIGHT_PER_NODE"),
        "{message}"
    );
    // The same over the OpenAI API, in its own format.
    let openai = fleet
        .post(
            "/v1/chat/completions",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(openai.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: serde_json::Value = openai.json().await.unwrap();
    assert_eq!(error["error"]["code"], "overloaded");

    assert_eq!(first.await.unwrap(), StatusCode::OK);
    // The slot is free again.
    assert_eq!(
        fleet.post("/api/generate", body).await.status(),
        StatusCode::OK
    );
    fleet.stop().await;
}

/// The coordinator's peak resident memory, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_huge_bodies_at_once_never_take_memory_past_the_buffer_cap() {
    const MIB: u64 = 1024 * 1024;
    const BUFFER_MIB: u64 = 200;
    let node = MockNode::start(MockConfig::named("node")).await.unwrap();
    let (coordinator, _dir) = coordinator(&[
        "--request-buffer-mb",
        &BUFFER_MIB.to_string(),
        "--max-request-mb",
        "100",
        "--queue-wait-ms",
        "500",
    ]);
    let addr = coordinator.listening_addr();
    let client = reqwest::Client::new();
    let added = client
        .post(format!("http://{addr}/api/nodes"))
        .json(&json!({"api_url": node.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::CREATED);
    health_is_served(&client, addr).await;
    let before = peak_rss(coordinator.pid());

    // One 99 MiB prompt, shared by the six requests on this side.
    let mut body = br#"{"model":"llama3.2","stream":false,"prompt":""#.to_vec();
    body.resize(99 * MIB as usize - 2, b'a');
    body.extend_from_slice(br#""}"#);
    let body = Bytes::from(body);
    let sends = (0..6).map(|_| {
        let request = client
            .post(format!("http://{addr}/api/generate"))
            .header("content-type", "application/json")
            .body(body.clone());
        async move {
            request
                .send()
                .await
                .map(|r| (r.status(), r.headers().contains_key("x-llm-router-node")))
        }
    });
    let statuses = futures::future::join_all(sends).await;
    for answer in &statuses {
        // Passed to the node (which refuses bodies this large itself, and may
        // close the connection before the upload ends: a 502) or refused for room.
        let (status, from_node) = answer.as_ref().expect("every request gets an answer");
        assert!(
            *from_node
                || *status == StatusCode::SERVICE_UNAVAILABLE
                || *status == StatusCode::BAD_GATEWAY,
            "{status} in {statuses:?}"
        );
    }
    let grown = peak_rss(coordinator.pid()).saturating_sub(before);
    eprintln!(
        "peak memory grew by {} MiB for six 99 MiB bodies under a {BUFFER_MIB} MiB cap: {statuses:?}",
        grown / MIB
    );
    let margin = 64 * MIB;
    assert!(
        grown <= BUFFER_MIB * MIB + margin,
        "peak memory grew by {} MiB, over the {BUFFER_MIB} MiB buffer cap plus {} MiB",
        grown / MIB,
        margin / MIB
    );
    health_is_served(&client, addr).await;
    node.stop().await;
}
