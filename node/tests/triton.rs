//! Triton's clients without changes (SPEC section 11): `tritonclient.grpc`
//! and `tritonclient.http` against every node of a cluster whose models
//! live on one node; hostile gRPC calls; API tokens in gRPC metadata.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::engine::{python, repo};
use common::{TestNode, start_echo, start_with_registries, wait_ready, wait_served};
use serde_json::{Value, json};

/// Runs one of this folder's Python scripts and parses its last line.
fn run_script(script: &str, args: &[&str]) -> Value {
    let output = Command::new(python())
        .arg(repo().join("node/tests").join(script))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("the script prints JSON last")
}

fn owner_registry(models: &Path) -> String {
    format!(
        "[[model]]\nname = \"tiny\"\npath = \"{m}/tiny.onnx\"\nmax_batch_size = 32\nmax_queue_delay_us = 2000\n\n\
         [[model]]\nname = \"multi\"\npath = \"{m}/multi.onnx\"\nmax_batch_size = 0\n\n\
         [[model]]\nname = \"dtypes\"\npath = \"{m}/dtypes.onnx\"\nmax_batch_size = 8\n",
        m = models.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_grpc_and_http_work_unchanged_against_every_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = repo().join("models");
    let registries = [owner_registry(&models), String::new(), String::new()];
    let nodes = start_with_registries(dir.path(), &registries);
    let client = reqwest::Client::new();
    for node in &nodes[1..] {
        wait_served(&client, &node.url, "tiny", &["n1"]).await;
    }
    let listed: Vec<Value> = nodes
        .iter()
        .map(|node| json!({ "name": node.name, "http": node.url.trim_start_matches("http://"), "grpc": node.grpc }))
        .collect();
    let nodes_json = Value::Array(listed).to_string();
    let models_dir = models.display().to_string();
    let summary = tokio::task::spawn_blocking(move || run_script("triton_clients.py", &[&nodes_json, &models_dir]))
        .await
        .expect("script ran");
    let checked: Vec<&str> = summary["checked"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
    assert_eq!(checked, ["n1/grpc", "n1/http", "n2/grpc", "n2/http", "n3/grpc", "n3/http"]);
}

/// A node serving `echo` with `extra_args`, once it is ready.
async fn echo_node(dir: &Path, name: &str, extra_args: &[&str]) -> TestNode {
    let node = start_echo(dir, name, extra_args);
    wait_ready(&reqwest::Client::new(), &node.url, Duration::from_secs(20)).await;
    node
}

fn code(answers: &Value, case: &str) -> String {
    answers[case][0].as_str().unwrap_or_else(|| panic!("no answer for {case}: {answers}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_grpc_call_gets_an_error_status_and_the_node_keeps_serving() {
    const MAX_MESSAGE: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = echo_node(dir.path(), "guard", &["--max-body-bytes", &MAX_MESSAGE.to_string()]).await;
    let client = reqwest::Client::new();

    // Bytes that are not HTTP/2 at all: the connection is closed, nothing else.
    let mut junk = std::net::TcpStream::connect(&node.grpc).expect("connects");
    junk.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe garbage").expect("writes");
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest);

    let (grpc, max) = (node.grpc.clone(), MAX_MESSAGE.to_string());
    let answers =
        tokio::task::spawn_blocking(move || run_script("grpc_hostile.py", &[&grpc, &max])).await.expect("script ran");
    let expected = [
        ("valid request", "OK"),
        ("malformed protobuf", "INTERNAL"),
        ("truncated protobuf", "INTERNAL"),
        ("wrong wire type", "INTERNAL"),
        ("message over the size limit", "OUT_OF_RANGE"),
        ("shape over the element limit", "INVALID_ARGUMENT"),
        ("negative dimension", "INVALID_ARGUMENT"),
        ("raw contents shorter than the shape", "INVALID_ARGUMENT"),
        ("raw contents not whole elements", "INVALID_ARGUMENT"),
        ("more raw contents than inputs", "INVALID_ARGUMENT"),
        ("no contents", "INVALID_ARGUMENT"),
        ("unknown datatype", "INVALID_ARGUMENT"),
        ("bytes datatype", "INVALID_ARGUMENT"),
        ("unknown model", "NOT_FOUND"),
        ("empty request", "NOT_FOUND"),
        ("unknown version", "NOT_FOUND"),
        ("bad priority", "INVALID_ARGUMENT"),
        ("metadata of an unknown model", "NOT_FOUND"),
        ("config of an unknown model", "NOT_FOUND"),
        ("statistics of an unknown model", "NOT_FOUND"),
        ("model load", "UNIMPLEMENTED"),
        ("unknown method", "UNIMPLEMENTED"),
        ("valid request after all", "OK"),
    ];
    for (case, want) in expected {
        assert_eq!(code(&answers, case), want, "{case}: {}", answers[case]);
    }
    let message = |case: &str| answers[case][1].as_str().unwrap_or_default().to_string();
    assert!(message("shape over the element limit").contains("more than"), "{answers}");
    assert!(message("raw contents shorter than the shape").contains("16 elements but data has 2"), "{answers}");
    assert!(message("unknown model").contains("unknown model \"nope\""), "{answers}");
    assert!(message("model load").contains("--models"), "{answers}");
    let mut stream: Vec<String> =
        answers["stream"].as_array().expect("stream").iter().filter_map(Value::as_str).map(String::from).collect();
    stream.sort();
    assert_eq!(stream.len(), 3, "{stream:?}");
    assert!(stream[0].contains("9 elements but data has 1") && stream[2].contains("unknown model"), "{stream:?}");
    assert_eq!(stream[1], "ok:good");
    let health = client.get(format!("{}/v2/health/ready", node.url)).send().await.expect("http answers");
    assert!(health.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_need_the_api_token_when_one_is_set() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "grpc-client-token-0123456789\n").expect("tokens");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    let node = echo_node(dir.path(), "guarded", &["--api-token-file", tokens.to_str().expect("utf8")]).await;
    let script = r#"
import json, sys
import numpy as np
import tritonclient.grpc as g
from tritonclient.utils import InferenceServerException
client = g.InferenceServerClient(sys.argv[1])
def attempt(headers):
    x = g.InferInput("x", [1, 2], "FP32")
    x.set_data_from_numpy(np.ones((1, 2), np.float32))
    try:
        client.infer("echo", [x], headers=headers)
        return "OK"
    except InferenceServerException as error:
        return f"{error.status()} {error.message()}"
print(json.dumps({
    "live": client.is_server_live(),
    "none": attempt(None),
    "wrong": attempt({"authorization": "Bearer guess"}),
    "right": attempt({"authorization": "Bearer grpc-client-token-0123456789"}),
}))
"#;
    let grpc = node.grpc.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python()).arg("-c").arg(script).arg(grpc).output().expect("python runs")
    })
    .await
    .expect("ran");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answers: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(answers["live"], true, "health stays open: {answers}");
    let (none, wrong) = (answers["none"].as_str().unwrap_or_default(), answers["wrong"].as_str().unwrap_or_default());
    assert!(none.contains("UNAUTHENTICATED") && none.contains("Bearer <token>"), "{answers}");
    assert!(wrong.contains("UNAUTHENTICATED") && wrong.contains("not valid"), "{answers}");
    assert_eq!(answers["right"], "OK", "{answers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_serves_clients_that_trust_the_certificate() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let made = Command::new("openssl")
        .current_dir(dir.path())
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=gpumesh-grpc", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-keyout", "grpc.key", "-out", "grpc.pem"])
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (cert, key) = (dir.path().join("grpc.pem"), dir.path().join("grpc.key"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let tls_args = ["--grpc-tls-cert", cert.to_str().expect("utf8"), "--grpc-tls-key", key.to_str().expect("utf8")];
    let node = echo_node(dir.path(), "sealed", &tls_args).await;
    let script = r#"
import json, sys
import numpy as np
import tritonclient.grpc as g
from tritonclient.utils import InferenceServerException
address, cert = sys.argv[1], sys.argv[2]
def infer(client):
    x = g.InferInput("x", [1, 3], "FP32")
    x.set_data_from_numpy(np.array([[1, 2, 3]], np.float32))
    try:
        return client.infer("echo", [x], client_timeout=10).as_numpy("x").tolist()
    except InferenceServerException as error:
        return f"{error.status()}"
print(json.dumps({
    "tls": infer(g.InferenceServerClient(address, ssl=True, root_certificates=cert)),
    "plain": infer(g.InferenceServerClient(address)),
}))
"#;
    let (grpc, cert) = (node.grpc.clone(), cert.display().to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python()).arg("-c").arg(script).args([&grpc, &cert]).output().expect("python runs")
    })
    .await
    .expect("ran");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answers: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(answers["tls"], json!([[1.0, 2.0, 3.0]]), "{answers}");
    assert!(answers["plain"].as_str().is_some_and(|s| s.contains("UNAVAILABLE")), "plaintext is refused: {answers}");
}
