//! The local server's connections: idle and slow clients are closed after
//! the header and body timeouts, never starve `/health` or writes (even
//! far beyond the file-descriptor limit), and a shutdown lets a request in
//! flight finish.

use crate::helpers::{spawn_app_with, Keys};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADERS_ONLY: &[u8] = b"POST /source/write_raw HTTP/1.1\r\nHost: sygno\r\n";

fn body_prefix(key: &str) -> Vec<u8> {
    format!(
        "POST /source/write_raw HTTP/1.1\r\nHost: sygno\r\nx-api-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: 40\r\n\r\n{{\"data\": "
    )
    .into_bytes()
}

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection (at most `limit`);
/// returns what it sent and when it closed.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Instant) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the connection was not closed within {limit:?}"
    );
    (String::from_utf8_lossy(&got).into_owned(), Instant::now())
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_after_the_timeouts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let args = ["--header-timeout-secs", "1", "--body-timeout-secs", "2"];
    let app = spawn_app_with(dir.path(), &keys, &args, None).await;
    let opened = Instant::now();
    let mut idle = connect(&app.base).await;
    let mut headers = connect(&app.base).await;
    headers.write_all(HEADERS_ONLY).await.expect("send");
    let mut body = connect(&app.base).await;
    body.write_all(&body_prefix(&keys.write))
        .await
        .expect("send");
    // Then one byte every 300 ms: never silent for long, but never done
    // (the body timeout is a deadline for the whole body).
    let (mut reader, mut writer) = body.into_split();
    let trickle = tokio::spawn(async move {
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    let (sent, idle_closed) = until_closed(&mut idle, Duration::from_secs(10)).await;
    assert_eq!(sent, "", "an idle connection is closed without an answer");
    let (_, headers_closed) = until_closed(&mut headers, Duration::from_secs(10)).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the trickling body's connection was not closed"
    );
    let (answer, body_closed) = (
        String::from_utf8_lossy(&answer).into_owned(),
        Instant::now(),
    );
    trickle.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    for (what, closed, timeout) in [
        ("idle", idle_closed, 1.0),
        ("headers", headers_closed, 1.0),
        ("body", body_closed, 2.0),
    ] {
        let after = (closed - opened).as_secs_f64();
        assert!(
            after >= timeout * 0.9 && after < timeout + 3.0,
            "{what}: closed after {after:.2} s, timeout {timeout} s"
        );
    }
    // Nothing of the slow body was stored.
    let (status, _) = app.write_raw(&json!({"data": {"t": 1}}), None).await;
    assert_eq!(status, 200);
    app.terminate().await;
}

/// With a descriptor limit of 128, 300 idle connections, 300 sending
/// headers forever and 20 sending a body forever: `/health` and writes
/// still answer at once, every time.
#[tokio::test]
async fn hundreds_of_idle_and_slow_clients_do_not_starve_health_or_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let app = spawn_app_with(dir.path(), &keys, &[], Some(128)).await;
    let mut held = Vec::new();
    for i in 0..620 {
        let mut stream = connect(&app.base).await;
        if (300..600).contains(&i) {
            stream.write_all(HEADERS_ONLY).await.expect("send");
        } else if i >= 600 {
            stream
                .write_all(&body_prefix(&keys.write))
                .await
                .expect("send");
        }
        held.push(stream);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    for i in 0..10 {
        let health = client
            .get(format!("{}/health", app.base))
            .send()
            .await
            .expect("/health answers");
        assert_eq!(health.status(), 200);
        let write = client
            .post(format!("{}/source/write_raw", app.base))
            .header("x-api-key", &keys.write)
            .json(&json!({"data": {"i": i}}))
            .send()
            .await
            .expect("a write answers");
        assert_eq!(write.status(), 200);
    }
    drop(held);
    app.terminate().await;
}

/// SIGTERM while a request's body is still coming: the request finishes
/// (200, stored), then the server exits.
#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let app = spawn_app_with(dir.path(), &keys, &[], None).await;
    let mut slow = connect(&app.base).await;
    // A first request on the connection: it is accepted and served.
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: sygno\r\n\r\n")
        .await
        .expect("send");
    let mut answer = [0u8; 12];
    slow.read_exact(&mut answer).await.expect("read");
    assert_eq!(&answer, b"HTTP/1.1 200");
    let mut rest_of_health = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), slow.read(&mut rest_of_health)).await;
    slow.write_all(&body_prefix(&keys.write))
        .await
        .expect("send");
    // Let the server read the headers and start the request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.send_term();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 40 bytes of body in all: `{"data": ` is 9, the rest 31.
    let rest = br#"{"in_flight": 1}              }"#;
    assert_eq!(rest.len(), 40 - 9);
    slow.write_all(rest).await.expect("send the rest");
    let (answer, _) = until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.clean_exit().await;

    let app = spawn_app_with(dir.path(), &keys, &[], None).await;
    let (status, latest) =
        crate::helpers::eventually(Duration::from_secs(10), "the event", || async {
            let (status, body) = app.expose("latest").await;
            (status == 200).then_some((status, body))
        })
        .await;
    assert_eq!(status, 200);
    assert_eq!(latest["data"]["data"], json!({"in_flight": 1}));
    app.terminate().await;
}

/// Opens `n` connections that each send `write_batch` headers declaring
/// a body of `declared` bytes, then `sent` bytes of it, and nothing more
/// (held open by the caller until dropped).
async fn stalled_bodies(
    base: &str,
    key: &str,
    n: usize,
    declared: usize,
    sent: usize,
) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    let part = vec![b' '; sent];
    for _ in 0..n {
        let mut stream = connect(base).await;
        let head = format!(
            "POST /source/write_batch HTTP/1.1\r\nHost: sygno\r\nx-api-key: {key}\r\n\
             content-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("send");
        stream.write_all(&part).await.expect("send");
        held.push(stream);
    }
    held
}

/// A well-behaved client's write and `expose`, each answered 200 within
/// `within` (the body timeout is 30 s: a starved request would wait
/// for it).
async fn served_promptly(app: &crate::helpers::TestApp, rounds: usize, within: Duration) {
    let client = reqwest::Client::builder()
        .timeout(within)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    for i in 0..rounds {
        let write = client
            .post(format!("{}/source/write_raw", app.base))
            .header("x-api-key", &app.keys.write2)
            .json(&json!({"data": {"i": i}}))
            .send()
            .await
            .expect("a write answers promptly");
        assert_eq!(write.status(), 200);
        let expose = client
            .post(format!("{}/source/expose", app.base))
            .header("x-api-key", &app.keys.read)
            .json(&json!({"type": "latest"}))
            .send()
            .await
            .expect("expose answers promptly");
        assert!(
            expose.status() == 200 || expose.status() == 404,
            "{}",
            expose.status()
        );
    }
}

/// 200 clients holding the write key declare 1 MB bodies and trickle
/// none of it, then 70 more of the same key send 1,000,000 bytes each and
/// stall (270 MB declared: over four times the 64 MiB budget; before,
/// every other client waited for the 30 s body timeout). One key's bodies
/// hold at most a quarter of the budget, so another key's writes and
/// reads are served at once throughout.
#[tokio::test]
async fn slow_and_stalled_bodies_of_one_key_do_not_starve_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let app = spawn_app_with(dir.path(), &keys, &[], None).await;
    let slow = stalled_bodies(&app.base, &keys.write, 200, 1_000_000, 1).await;
    served_promptly(&app, 10, Duration::from_secs(5)).await;
    let stalled = stalled_bodies(&app.base, &keys.write, 70, 1_000_001, 1_000_000).await;
    served_promptly(&app, 10, Duration::from_secs(5)).await;
    drop((slow, stalled));
    app.terminate().await;
}

/// At the connection cap (descriptor limit 128), 200 connections sending
/// a body forever: they are shed like idle ones (before: each was let
/// finish its request, so nobody was served until the body timeout).
#[tokio::test]
async fn body_trickling_connections_are_shed_at_the_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let app = spawn_app_with(dir.path(), &keys, &[], Some(128)).await;
    let held = stalled_bodies(&app.base, &keys.write, 200, 1_000_000, 10).await;
    served_promptly(&app, 10, Duration::from_secs(5)).await;
    drop(held);
    app.terminate().await;
}

/// Requests hyper refuses before the router sees them (conflicting
/// `Content-Length`s, 2,000 headers, a malformed request line) are
/// answered in the envelope too, and the connection closed.
#[tokio::test]
async fn requests_refused_by_the_http_parser_answer_in_the_envelope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::random();
    let app = spawn_app_with(dir.path(), &keys, &[], None).await;
    let many_headers: String = (0..2_000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases = [
        (
            "conflicting content-length",
            "POST /source/write_raw HTTP/1.1\r\nHost: sygno\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!".to_owned(),
            400,
            "invalid_request",
        ),
        (
            "2,000 headers",
            format!("GET /health HTTP/1.1\r\nHost: sygno\r\n{many_headers}\r\n"),
            431,
            "headers_too_large",
        ),
        (
            "a malformed request line",
            "GET /health HTTP/9\r\n\r\n".to_owned(),
            400,
            "invalid_request",
        ),
    ];
    for (what, request, status, code) in cases {
        let mut stream = connect(&app.base).await;
        stream.write_all(request.as_bytes()).await.expect("send");
        let (answer, _) = until_closed(&mut stream, Duration::from_secs(10)).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {answer}"
        );
        let body: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {answer}"));
        assert_eq!(body["status"], status, "{what}");
        assert_eq!(body["data"]["error"], code, "{what}");
    }
    // The server goes on.
    let (status, _) = app.write_raw(&json!({"data": {"t": 1}}), None).await;
    assert_eq!(status, 200);
    app.terminate().await;
}
