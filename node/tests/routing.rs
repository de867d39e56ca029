//! Any node accepts: requests run where the model is, routed over the node
//! links, with requirements honoured and failover when a node dies.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::time::Duration;

use common::{fetch_sample, fetch_view, start_with_registries, wait_served, wait_until};
use serde_json::{Value, json};
use tokio::time::Instant;

const SYNTHETIC: &str = "kind = \"synthetic\"\nmax_batch_size = 1\nmax_queue_size = 1000\n";

fn model(name: &str, service_ms: u32) -> String {
    format!("[[model]]\nname = \"{name}\"\n{SYNTHETIC}service_time_ms = {service_ms}\n")
}

async fn infer(client: &reqwest::Client, url: &str, model: &str, parameters: Value) -> (u16, Value) {
    let body = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, -2.0]}], "parameters": parameters});
    let response = client
        .post(format!("{url}/v2/models/{model}/infer"))
        .timeout(Duration::from_secs(30))
        .json(&body)
        .send()
        .await
        .expect("answered");
    (response.status().as_u16(), response.json().await.expect("JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_only_on_c_runs_on_c_when_asked_at_a() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_with_registries(dir.path(), &[String::new(), String::new(), model("only-c", 1)]);
    let client = reqwest::Client::new();
    let a = nodes[0].url.clone();
    wait_served(&client, &a, "only-c", &["n3"]).await;

    let (status, response) = infer(&client, &a, "only-c", json!({})).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["parameters"]["gpumesh_node"], "n3");
    assert_eq!(response["parameters"]["gpumesh_route"], "n1>n3");
    assert_eq!(response["outputs"][0]["data"], json!([1.5, -2.0]), "tensors cross the link intact");
    let metadata: Value =
        client.get(format!("{a}/v2/models/only-c")).send().await.expect("sent").json().await.expect("json");
    assert_eq!(metadata["parameters"]["gpumesh_node"], "n3", "metadata comes from the node that serves it: {metadata}");
    let decisions: Value =
        client.get(format!("{a}/cluster/decisions")).send().await.expect("sent").json().await.expect("json");
    let last = &decisions["decisions"][0];
    assert_eq!(last["chosen"], "n3");
    assert!(last["candidates"].as_array().expect("candidates").iter().any(|c| c["excluded"] == "model not loaded"));

    let (status, response) = infer(&client, &a, "nowhere", json!({})).await;
    assert_eq!(status, 404, "{response}");

    nodes[2].kill9();
    wait_until("n1 sees n3 dead", Duration::from_secs(5), || async {
        let view = fetch_view(&client, &a).await?;
        view.nodes.iter().any(|n| n.name == "n3" && n.status.as_str() != "alive").then_some(())
    })
    .await;
    let (status, response) = infer(&client, &a, "only-c", json!({})).await;
    assert_eq!(status, 503, "{response}");
    assert!(response["error"].as_str().is_some_and(|e| e.contains("only-c")), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirements_are_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_with_registries(dir.path(), &[String::new(), model("m", 1)]);
    let client = reqwest::Client::new();
    let a = nodes[0].url.clone();
    wait_served(&client, &a, "m", &["n2"]).await;
    let (status, _) = infer(&client, &a, "m", json!({"device": "cpu"})).await;
    assert_eq!(status, 200);
    let (status, response) = infer(&client, &a, "m", json!({"device": "gpu"})).await;
    assert_eq!(status, 503, "device=gpu never runs on a cpu node: {response}");
    assert!(response["error"].as_str().is_some_and(|e| e.contains("not a gpu")), "{response}");
    let (status, response) = infer(&client, &a, "m", json!({"min_free_vram_mb": 1})).await;
    assert_eq!(status, 503, "{response}");
    assert!(response["error"].as_str().is_some_and(|e| e.contains("vram")), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_executing_node_mid_burst_loses_no_request_silently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_with_registries(dir.path(), &[String::new(), model("svc", 20), model("svc", 20)]);
    let client = reqwest::Client::new();
    let a = nodes[0].url.clone();
    wait_served(&client, &a, "svc", &["n2", "n3"]).await;

    let started = Instant::now();
    let burst: Vec<_> = (0..60)
        .map(|_| {
            let (client, a) = (client.clone(), a.clone());
            tokio::spawn(async move {
                let sent = Instant::now();
                let outcome = infer(&client, &a, "svc", json!({})).await;
                (outcome, sent.elapsed())
            })
        })
        .collect();
    // n3 dies with requests queued and executing there.
    let n3 = nodes[2].url.clone();
    let held = wait_until("n3 has requests of the burst", Duration::from_secs(10), || async {
        let queued = fetch_sample(&client, &n3, "gpumesh_queue_depth{model=\"svc\"}").await?;
        let executing = fetch_sample(&client, &n3, "gpumesh_inflight_requests{model=\"svc\"}").await?;
        (queued + executing >= 3.0).then_some(queued + executing)
    })
    .await;
    nodes[2].kill9();
    let killed_after = started.elapsed();
    let mut by_node = std::collections::BTreeMap::new();
    let mut errors = 0;
    let mut slowest = Duration::ZERO;
    for handle in burst {
        let ((status, response), took) = handle.await.expect("request task");
        slowest = slowest.max(took);
        match status {
            200 => {
                *by_node
                    .entry(response["parameters"]["gpumesh_node"].as_str().unwrap_or("?").to_string())
                    .or_insert(0) += 1
            }
            _ => {
                errors += 1;
                assert!(status >= 500 && response["error"].is_string(), "a clear error: {status} {response}");
            }
        }
    }
    eprintln!(
        "measured: n3 killed after {killed_after:?} holding {held} requests; served by {by_node:?}, {errors} errors, slowest {slowest:?}"
    );
    assert!(slowest < Duration::from_secs(12), "a request hung past the forward timeout: {slowest:?}");
    assert!(by_node.get("n2").copied().unwrap_or(0) > 0, "the survivor served requests: {by_node:?}");
    assert!(errors <= 6, "most requests fail over to the survivor: {errors} errors, {by_node:?}");
}
