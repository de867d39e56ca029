//! Slow and greedy clients (SPEC section 9): a client that drips its
//! headers or its body a byte at a time loses its connection within the
//! configured bounds, and one client holding thousands of connections does
//! not keep a second client out, while normal requests are served.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestNode, fetch_view, start_echo, wait_until};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn address(node: &TestNode) -> SocketAddr {
    node.url.trim_start_matches("http://").parse().expect("address")
}

/// Writes `head` then `drip` one byte a second until the node closes the
/// connection; returns how long that took and what the node answered.
async fn drip(node: SocketAddr, head: &[u8], drip: &[u8]) -> (Duration, String) {
    let stream = TcpStream::connect(node).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head).await.expect("head");
    let started = Instant::now();
    let drip = drip.to_vec();
    let writing = tokio::spawn(async move {
        for byte in drip {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut answer)).await;
    writing.abort();
    (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
}

/// A normal request is answered at once while the drips go on.
async fn served_at_once(client: &reqwest::Client, node: &TestNode) {
    let started = Instant::now();
    let response = client.get(format!("{}/v2/health/live", node.url)).send().await.expect("served");
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1), "served after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dripped_headers_and_bodies_are_cut_within_their_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_echo(dir.path(), "drips", &["--header-timeout-secs", "2", "--min-body-rate", "100"]);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    wait_until("the node answers", Duration::from_secs(10), || fetch_view(&client, &node.url)).await;
    let at = address(&node);

    let headers = drip(at, b"", b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n");
    let body = drip(
        at,
        b"POST /v2/models/echo/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
        &[b' '; 1000],
    );
    let normal = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        served_at_once(&client, &node).await;
    };
    let ((header_time, header_answer), (body_time, body_answer), ()) = tokio::join!(headers, body, normal);
    eprintln!(
        "measured: headers at 1 byte/s cut after {header_time:?} (--header-timeout-secs 2); body at 1 byte/s cut after {body_time:?} (--min-body-rate 100, {:?} grace)",
        gpumesh_web::BODY_GRACE
    );
    assert!(header_time >= Duration::from_millis(1500) && header_time < Duration::from_secs(5), "{header_time:?}");
    assert!(!header_answer.contains("200 OK"), "the dripped request was not served: {header_answer}");
    assert!(body_time >= Duration::from_millis(1500) && body_time < Duration::from_secs(5), "{body_time:?}");
    assert!(body_answer.starts_with("HTTP/1.1 408"), "{body_answer}");
    assert!(body_answer.contains("--min-body-rate"), "the error says which setting: {body_answer}");
    served_at_once(&client, &node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holding_two_thousand_connections_does_not_keep_another_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_echo(dir.path(), "greedy", &["--max-client-connections", "64"]);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    wait_until("the node answers", Duration::from_secs(10), || fetch_view(&client, &node.url)).await;
    let at = address(&node);

    // The greedy client comes from 127.0.0.2, the other from 127.0.0.1.
    let mut held = Vec::new();
    for _ in 0..2000 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.2:0".parse().expect("address")).expect("bind 127.0.0.2");
        held.push(socket.connect(at).await.expect("connect"));
    }
    let opened = Instant::now();
    served_at_once(&client, &node).await;
    // Past its 64, the greedy client's connections were closed at once.
    let mut closed = 0;
    for stream in &mut held {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(5), stream.read(&mut byte)).await {
            closed += 1;
        }
    }
    eprintln!(
        "measured: 2000 connections from one client, {closed} closed by the node, the other client served {:?} after they opened",
        opened.elapsed()
    );
    assert!(closed >= 2000 - 64, "the node closed all but 64 of them: {closed}");
    drop(held);
    served_at_once(&client, &node).await;
}
