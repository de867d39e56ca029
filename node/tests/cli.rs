//! `gpumesh` start-up errors, health endpoints and settings precedence.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{TestNode, fetch_view, free_ports, wait_until};

fn gpumesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpumesh")).args(args).env("GPUMESH_LOG", "error").output().expect("runs")
}

/// A start-up error: exit status 2 and one sentence on stderr.
fn assert_usage_error(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence, got: {stderr}");
}

fn node_args<'a>(dir: &'a str, http: &'a str, gossip: &'a str, cluster: &'a str) -> Vec<&'a str> {
    vec!["node", "--data-dir", dir, "--http", http, "--grpc", "127.0.0.1:0", "--gossip", gossip, "--cluster", cluster]
}

#[test]
fn keygen_prints_a_secret() {
    let output = gpumesh(&["keygen"]);
    let text = String::from_utf8(output.stdout).expect("utf8");
    assert!(output.status.success());
    assert_eq!(text.trim().len(), 64);
    assert!(text.trim().bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn taken_ports_and_bad_addresses_are_one_sentence_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf8");
    let (_, gossip, cluster_port) = free_ports();
    let (gossip, cluster_addr) = (format!("127.0.0.1:{gossip}"), format!("127.0.0.1:{cluster_port}"));

    let taken_tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken_tcp.local_addr().expect("addr").to_string();
    assert_usage_error(&gpumesh(&node_args(data, &taken, &gossip, &cluster_addr)), "--http address");
    assert_usage_error(&gpumesh(&node_args(data, &taken, &gossip, &cluster_addr)), "already in use");
    let taken_udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let taken_gossip = taken_udp.local_addr().expect("addr").to_string();
    let (http, _, _) = free_ports();
    let http = format!("127.0.0.1:{http}");
    assert_usage_error(&gpumesh(&node_args(data, &http, &taken_gossip, &cluster_addr)), "--gossip address");
    assert_usage_error(&gpumesh(&node_args(data, &http, &gossip, &taken)), "--cluster address");
    assert_usage_error(&gpumesh(&node_args(data, "not-an-address", &gossip, &cluster_addr)), "invalid --http address");
    assert_usage_error(&gpumesh(&node_args(data, &http, "127.0.0.1:99999", &cluster_addr)), "invalid --gossip address");
    assert!(!std::path::Path::new(data).exists(), "a refused start writes nothing");
}

#[test]
fn missing_or_world_readable_secret_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    let secret_arg = secret.to_str().expect("utf8");
    let output = gpumesh(&["node", "--secret-file", secret_arg]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read secret file"));
    std::fs::write(&secret, gpumesh(&["keygen"]).stdout).expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_usage_error(&gpumesh(&["node", "--secret-file", secret_arg]), "chmod 400");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_and_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = TestNode::solo(dir.path(), None);
    let client = reqwest::Client::new();
    let started = tokio::time::Instant::now();
    let url = node.url.clone();
    wait_until("node is ready", Duration::from_secs(5), || async {
        let response = client.get(format!("{url}/v2/health/ready")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    eprintln!("measured: process start to ready {:?}", started.elapsed());
    let live: serde_json::Value =
        client.get(format!("{url}/v2/health/live")).send().await.expect("live").json().await.expect("json");
    assert_eq!(live["live"], true);
    let missing = client.get(format!("{url}/v2/nope")).send().await.expect("404");
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.expect("json error body");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("/v2/nope")), "{body}");
    let page = client.get(format!("{url}/")).send().await.expect("page").text().await.expect("html");
    assert!(page.contains("solo"));
    let view = fetch_view(&client, &url).await.expect("cluster");
    assert_eq!(view.self_name, "solo");
    assert_eq!(view.totals.nodes_alive, 1);
    assert!(node.log_text().contains("open cluster"), "an open cluster is logged as such");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_beat_env_and_env_beats_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, gossip, cluster_port) = free_ports();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"from-file\"\nhttp = \"127.0.0.1:{http}\"\ngossip = \"127.0.0.1:{gossip}\"\ncluster = \"127.0.0.1:{cluster_port}\"\n"
        ),
    )
    .expect("write config");
    let run = |extra: &[&str], env_name: &str, data: &str| {
        Command::new(env!("CARGO_BIN_EXE_gpumesh"))
            .arg("node")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join(data))
            .args(extra)
            .env("GPUMESH_NAME", env_name)
            .env("GPUMESH_LOG", "error")
            .spawn()
            .expect("spawn")
    };
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{http}");
    for (extra, expected, data) in [(&[][..], "from-env", "a"), (&["--name", "from-flag"][..], "from-flag", "b")] {
        let mut child = run(extra, "from-env", data);
        // The first answers may come before the node's first view (no name yet).
        let view = wait_until("node answers with its view", Duration::from_secs(5), || async {
            fetch_view(&client, &url).await.filter(|view| !view.self_name.is_empty())
        })
        .await;
        assert_eq!(view.self_name, expected);
        child.kill().expect("kill");
        child.wait().expect("reaped");
    }
}
