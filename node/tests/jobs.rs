//! Durable jobs on real node processes: accepted means done.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{NodeSpec, TestNode, fetch_view, free_ports, wait_until, write_secret};
use serde_json::{Value, json};

fn registry(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("registry");
    path
}

fn node(dir: &Path, name: &str, registry: &Path, secret: &Path, seeds: &[String], ports: (u16, u16, u16)) -> TestNode {
    TestNode::start(&NodeSpec {
        name: Some(name),
        dir,
        data_dir_name: name,
        secret: Some(secret),
        seeds,
        ports,
        models: Some(registry),
    })
}

fn job_body(value: f64, key: Option<&str>) -> Value {
    let mut body =
        json!({"model": "echo", "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [value]}]});
    if let Some(key) = key {
        body["idempotency_key"] = json!(key);
    }
    body
}

async fn submit(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = client.post(format!("{url}/jobs")).json(body).send().await.expect("sent");
    assert_eq!(response.status(), 202);
    response.json().await.expect("json")
}

async fn get(client: &reqwest::Client, url: &str, id: &str) -> Option<Value> {
    let response = client.get(format!("{url}/jobs/{id}")).send().await.ok()?;
    (response.status() == 200).then_some(response.json().await.ok()?)
}

async fn wait_completed(client: &reqwest::Client, url: &str, id: &str, timeout: Duration) -> Value {
    wait_until("the job completes", timeout, || async {
        let job = get(client, url, id).await?;
        (job["state"] == "completed").then_some(job)
    })
    .await
}

/// n1 owns jobs (no model), n2 serves `echo` (synthetic, `service_ms`).
async fn pair(dir: &Path, service_ms: u32) -> (TestNode, TestNode, reqwest::Client) {
    let secret = write_secret(dir, "secret");
    let empty = registry(dir, "empty", "");
    let echo = registry(
        dir,
        "echo",
        &format!(
            "[[model]]\nname = \"echo\"\nkind = \"synthetic\"\nservice_time_ms = {service_ms}\nmax_batch_size = 1\nmax_queue_size = 10000\n"
        ),
    );
    let n1 = node(dir, "n1", &empty, &secret, &[], free_ports());
    let n2 = node(dir, "n2", &echo, &secret, std::slice::from_ref(&n1.gossip), free_ports());
    let client = reqwest::Client::new();
    let url = n1.url.clone();
    wait_until("n1 sees echo on n2, linked", Duration::from_secs(10), || async {
        let view = fetch_view(&client, &url).await?;
        view.nodes
            .iter()
            .any(|n| n.name == "n2" && n.connected && n.models.iter().any(|m| m.name == "echo"))
            .then_some(())
    })
    .await;
    (n1, n2, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_where_the_model_is_and_any_node_answers_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, n2, client) = pair(dir.path(), 1).await;
    let accepted = submit(&client, &n1.url, &job_body(2.5, None)).await;
    let id = accepted["job_id"].as_str().expect("job id").to_string();
    assert!(id.starts_with("n1."), "the id names its owner: {id}");
    let job = wait_completed(&client, &n1.url, &id, Duration::from_secs(10)).await;
    assert_eq!(job["node"], "n2");
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["outputs"][0]["data"], json!([2.5]));
    let from_n2 = get(&client, &n2.url, &id).await.expect("n2 asks the owner");
    assert_eq!(from_n2, job);
    assert!(get(&client, &n2.url, "n1.0-ffff").await.is_none(), "unknown ids are 404");
    let listed: Value =
        client.get(format!("{}/jobs?state=completed", n1.url)).send().await.expect("list").json().await.expect("json");
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(1));
    let mut unknown = job_body(1.0, None);
    unknown["model"] = json!("nowhere");
    let refused = client.post(format!("{}/jobs", n1.url)).json(&unknown).send().await.expect("sent");
    assert_eq!(refused.status(), 404);
    let missing_model =
        client.post(format!("{}/jobs", n1.url)).json(&json!({"inputs": []})).send().await.expect("sent");
    assert_eq!(missing_model.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_gives_one_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, _n2, client) = pair(dir.path(), 1).await;
    let first = submit(&client, &n1.url, &job_body(1.0, Some("order-42"))).await;
    let second = submit(&client, &n1.url, &job_body(1.0, Some("order-42"))).await;
    assert_eq!(first["job_id"], second["job_id"]);
    let racing: Vec<_> = (0..16)
        .map(|_| {
            let (client, url) = (client.clone(), n1.url.clone());
            tokio::spawn(async move { submit(&client, &url, &job_body(3.0, Some("race"))).await["job_id"].clone() })
        })
        .collect();
    let mut ids = Vec::new();
    for handle in racing {
        ids.push(handle.await.expect("task"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "16 concurrent submits with one key made {} jobs", ids.len());
    let id = ids[0].as_str().expect("id");
    wait_completed(&client, &n1.url, id, Duration::from_secs(10)).await;
    let listed: Value =
        client.get(format!("{}/jobs?state=completed", n1.url)).send().await.expect("list").json().await.expect("json");
    let all: Value =
        client.get(format!("{}/jobs?state=active", n1.url)).send().await.expect("list").json().await.expect("json");
    let total = listed["jobs"].as_array().map_or(0, Vec::len) + all["jobs"].as_array().map_or(0, Vec::len);
    assert_eq!(total, 2, "order-42 and race: {listed} {all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_right_after_its_acknowledgements_completes_its_jobs_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut n1, n2, client) = pair(dir.path(), 100).await;
    let mut ids = Vec::new();
    for index in 0..20 {
        let accepted = submit(&client, &n1.url, &job_body(f64::from(index), None)).await;
        ids.push(accepted["job_id"].as_str().expect("id").to_string());
    }
    n1.kill9();
    let secret = dir.path().join("secret");
    let empty = dir.path().join("empty.toml");
    let n1 = node(dir.path(), "n1", &empty, &secret, std::slice::from_ref(&n2.gossip), free_ports());
    for (index, id) in ids.iter().enumerate() {
        let job = wait_completed(&client, &n1.url, id, Duration::from_secs(30)).await;
        assert_eq!(job["outputs"][0]["data"], json!([index as f64]), "{id} has its own result");
        let steps = job["attempts"].as_u64().expect("attempts");
        assert!((1..=3).contains(&steps), "{job}");
    }
}
