//! Durable jobs on real node processes: accepted means done.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{NodeSpec, TestNode, fetch_view, free_ports, wait_served, wait_until, write_secret};
use serde_json::{Value, json};

fn registry(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("registry");
    path
}

/// A registry serving `echo`: synthetic, one request at a time.
fn echo_registry(dir: &Path, name: &str, service_ms: u32, max_queue_size: u32) -> std::path::PathBuf {
    let text = format!(
        "[[model]]\nname = \"echo\"\nkind = \"synthetic\"\nservice_time_ms = {service_ms}\nmax_batch_size = 1\nmax_queue_size = {max_queue_size}\n"
    );
    registry(dir, name, &text)
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

/// Waits until job `id` completes; on timeout the panic shows the job as
/// last read (state, history, node), so a stuck job explains itself.
async fn wait_completed(client: &reqwest::Client, url: &str, id: &str, timeout: Duration) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        match get(client, url, id).await {
            Some(job) if job["state"] == "completed" => return job,
            Some(job) => last = Some(job),
            None => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} did not complete within {timeout:?}; last read from {url}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// n1 owns jobs (no model), n2 serves `echo` (synthetic, `service_ms`).
async fn pair(dir: &Path, service_ms: u32) -> (TestNode, TestNode, reqwest::Client) {
    let secret = write_secret(dir, "secret");
    let empty = registry(dir, "empty", "");
    let echo = echo_registry(dir, "echo", service_ms, 10000);
    let n1 = node(dir, "n1", &empty, &secret, &[], free_ports());
    let n2 = node(dir, "n2", &echo, &secret, std::slice::from_ref(&n1.gossip), free_ports());
    let client = reqwest::Client::new();
    let url = n1.url.clone();
    wait_served(&client, &url, "echo", &["n2"]).await;
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

/// Three nodes serving `echo`, each seeing all three linked.
async fn trio(dir: &Path) -> ([TestNode; 3], reqwest::Client) {
    let secret = write_secret(dir, "secret");
    let echo = echo_registry(dir, "echo", 1, 10000);
    let n1 = node(dir, "n1", &echo, &secret, &[], free_ports());
    let n2 = node(dir, "n2", &echo, &secret, std::slice::from_ref(&n1.gossip), free_ports());
    let n3 = node(dir, "n3", &echo, &secret, std::slice::from_ref(&n1.gossip), free_ports());
    let client = reqwest::Client::new();
    let names: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
    for n in [&n1, &n2, &n3] {
        wait_until("every node sees all three", Duration::from_secs(15), || async {
            common::sees_all(&fetch_view(&client, &n.url).await?, &names).then_some(())
        })
        .await;
    }
    ([n1, n2, n3], client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_gives_one_job_whichever_node_takes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, client) = trio(dir.path()).await;
    let mut owners = std::collections::BTreeSet::new();
    for key in ["order-1", "order-2", "order-3", "order-4", "order-5", "order-6"] {
        let mut ids = Vec::new();
        for n in &nodes {
            ids.push(submit(&client, &n.url, &job_body(1.0, Some(key))).await["job_id"].clone());
        }
        assert!(ids.iter().all(|id| *id == ids[0]), "key {key}: one job at every node, got {ids:?}");
        let id = ids[0].as_str().expect("id");
        owners.insert(id.split_once('.').expect("owner").0.to_string());
        for n in &nodes {
            assert_eq!(get(&client, &n.url, id).await.expect("any node answers")["job_id"], ids[0]);
        }
    }
    assert!(owners.len() >= 2, "the keys' homes spread over the members: {owners:?}");
    let racing: Vec<_> = (0..16)
        .map(|i| {
            let (client, url) = (client.clone(), nodes[i % 3].url.clone());
            tokio::spawn(async move { submit(&client, &url, &job_body(3.0, Some("race"))).await["job_id"].clone() })
        })
        .collect();
    let mut ids = Vec::new();
    for handle in racing {
        ids.push(handle.await.expect("task"));
    }
    ids.sort_by_key(ToString::to_string);
    ids.dedup();
    assert_eq!(ids.len(), 1, "16 concurrent submits of one key at three nodes made jobs {ids:?}");
    let job = wait_completed(&client, &nodes[0].url, ids[0].as_str().expect("id"), Duration::from_secs(10)).await;
    assert_eq!(job["outputs"][0]["data"], json!([3.0]));
    let mut total = 0;
    for n in &nodes {
        for state in ["active", "completed", "failed"] {
            let url = format!("{}/jobs?state={state}&limit=100", n.url);
            let listed: Value = client.get(url).send().await.expect("list").json().await.expect("json");
            total += listed["jobs"].as_array().map_or(0, Vec::len);
        }
    }
    assert_eq!(total, 7, "six keys and the race: seven jobs in the cluster");
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

fn state_rank(state: &str) -> u8 {
    match state {
        "accepted" => 0,
        "dispatched" => 1,
        "running" => 2,
        "completed" => 3,
        _ => 4,
    }
}

/// Steps never go back in (attempt, state) order or in time.
fn assert_monotone(job: &Value) {
    let steps = job["history"].as_array().expect("history");
    for pair in steps.windows(2) {
        let key = |s: &Value| {
            (
                s["attempt"].as_u64().unwrap_or(0),
                state_rank(s["state"].as_str().unwrap_or("")),
                s["at_ms"].as_u64().unwrap_or(0),
            )
        };
        let (a, b) = (key(&pair[0]), key(&pair[1]));
        assert!((a.0, a.1) <= (b.0, b.1) && a.2 <= b.2, "history went backwards: {job}");
    }
}

/// Three nodes serving `echo` (synthetic, `service_ms`), formed.
struct Trio {
    secret: std::path::PathBuf,
    echo: std::path::PathBuf,
    n1: TestNode,
    n2: TestNode,
    n3: TestNode,
    client: reqwest::Client,
}

async fn echo_trio(path: &Path, service_ms: u32) -> Trio {
    let secret = write_secret(path, "secret");
    let echo = echo_registry(path, "echo", service_ms, 10000);
    let n1 = node(path, "n1", &echo, &secret, &[], free_ports());
    let n2 = node(path, "n2", &echo, &secret, std::slice::from_ref(&n1.gossip), free_ports());
    let n3 = node(path, "n3", &echo, &secret, std::slice::from_ref(&n1.gossip), free_ports());
    let client = reqwest::Client::new();
    wait_served(&client, &n1.url, "echo", &["n1", "n2", "n3"]).await;
    Trio { secret, echo, n1, n2, n3, client }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_jobs_survive_a_node_killed_and_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let Trio { secret, echo, n1, mut n2, n3, client } = echo_trio(path, 20).await;

    let mut accepted: Vec<(String, f64)> = Vec::new();
    let mut n2_down = false;
    for batch in 0..10 {
        if batch == 4 {
            n2.kill9();
            n2_down = true;
        }
        let urls: Vec<String> = if n2_down {
            vec![n1.url.clone(), n3.url.clone()]
        } else {
            vec![n1.url.clone(), n2.url.clone(), n3.url.clone()]
        };
        let submits: Vec<_> = (0..30)
            .map(|i| {
                let value = f64::from(batch * 30 + i);
                let (client, url) = (client.clone(), urls[i as usize % urls.len()].clone());
                tokio::spawn(async move {
                    let response = client.post(format!("{url}/jobs")).json(&job_body(value, None)).send().await.ok()?;
                    (response.status() == 202).then_some(())?;
                    let body: Value = response.json().await.ok()?;
                    Some((body["job_id"].as_str()?.to_string(), value))
                })
            })
            .collect();
        for submit in submits {
            accepted.extend(submit.await.expect("task"));
        }
    }
    // n2 comes back 3 s after it died, from its data dir, on new ports.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _n2 = node(path, "n2", &echo, &secret, std::slice::from_ref(&n1.gossip), free_ports());
    assert!(accepted.len() >= 290, "almost every submit is acknowledged: {}", accepted.len());
    let mut reran = 0;
    for (id, value) in &accepted {
        let job = wait_completed(&client, &n1.url, id, Duration::from_secs(60)).await;
        assert_eq!(job["outputs"][0]["data"], json!([value]), "{id}");
        assert_monotone(&job);
        // Any node answers for any job once its link to the owner is up.
        let again = wait_until("n3 answers for the job", Duration::from_secs(10), || get(&client, &n3.url, id)).await;
        assert_eq!(again["outputs"], job["outputs"], "one result, whoever reads it");
        reran += usize::from(job["attempts"].as_u64().unwrap_or(0) > 1);
    }
    eprintln!("measured: {} jobs accepted, all completed; {reran} needed another attempt", accepted.len());
}

/// A job owned by n1 (no model) and dispatched to one of n2 and n3, which
/// serve a slow `echo`.
struct Dispatched {
    _dir: tempfile::TempDir,
    n1: TestNode,
    executors: [TestNode; 2],
    client: reqwest::Client,
    id: String,
    /// The executor the job went to.
    running_on: String,
}

async fn job_dispatched_to_an_executor(value: f64) -> Dispatched {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let secret = write_secret(path, "secret");
    let empty = registry(path, "empty", "");
    let slow = echo_registry(path, "slow", 1500, 100);
    let n1 = node(path, "n1", &empty, &secret, &[], free_ports());
    let executors = [
        node(path, "n2", &slow, &secret, std::slice::from_ref(&n1.gossip), free_ports()),
        node(path, "n3", &slow, &secret, std::slice::from_ref(&n1.gossip), free_ports()),
    ];
    let client = reqwest::Client::new();
    let url = n1.url.clone();
    wait_served(&client, &url, "echo", &["n2", "n3"]).await;
    let id = submit(&client, &n1.url, &job_body(value, None)).await["job_id"].as_str().expect("id").to_string();
    // Dispatched, then running as soon as the executor starts its batch.
    let running_on = wait_until("the job is dispatched", Duration::from_secs(5), || async {
        let job = get(&client, &n1.url, &id).await?;
        let under_way = job["state"] == "dispatched" || job["state"] == "running";
        under_way.then(|| job["node"].as_str().map(String::from)).flatten()
    })
    .await;
    Dispatched { _dir: dir, n1, executors, client, id, running_on }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_executing_node_dies_completes_on_another() {
    let Dispatched { _dir, n1, mut executors, client, id, running_on } = job_dispatched_to_an_executor(7.0).await;
    let victim = executors.iter().position(|n| n.name == running_on).expect("an executor");
    executors[victim].kill9();
    let killed_unix_ms = std::time::SystemTime::UNIX_EPOCH.elapsed().expect("clock").as_millis() as u64;
    let job = wait_completed(&client, &n1.url, &id, Duration::from_secs(30)).await;
    assert_ne!(job["node"].as_str(), Some(running_on.as_str()), "completed on the survivor: {job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let redispatched_ms = job["history"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["attempt"] == 2 && s["state"] == "dispatched"))
        .and_then(|step| step["at_ms"].as_u64())
        .expect("a second dispatch");
    eprintln!(
        "measured: re-dispatch {} ms after the executing node was killed",
        redispatched_ms.saturating_sub(killed_unix_ms)
    );
    assert_eq!(job["outputs"][0]["data"], json!([7.0]));
    assert_monotone(&job);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_cut_off_mid_write_loses_no_acknowledged_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let secret = write_secret(path, "secret");
    let echo = echo_registry(path, "echo", 5, 100000);
    let mut n1 = node(path, "n1", &echo, &secret, &[], free_ports());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let url = n1.url.clone();
    wait_until("n1 is ready", Duration::from_secs(10), || async {
        (client.get(format!("{url}/v2/health/ready")).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
    // Eight clients submit in a loop; n1 is killed while they do.
    let submitters: Vec<_> = (0..8)
        .map(|worker| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..10_000 {
                    let value = f64::from(worker * 10_000 + i);
                    let Ok(response) = client.post(format!("{url}/jobs")).json(&job_body(value, None)).send().await
                    else {
                        break;
                    };
                    if response.status() != 202 {
                        break;
                    }
                    let Ok(body) = response.json::<Value>().await else { break };
                    acknowledged.push((body["job_id"].as_str().unwrap_or_default().to_string(), value));
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    n1.kill9();
    let mut acknowledged = Vec::new();
    for submitter in submitters {
        acknowledged.extend(submitter.await.expect("submitter"));
    }
    assert!(acknowledged.len() > 20, "the loop ran: {}", acknowledged.len());
    let n1 = node(path, "n1", &echo, &secret, &[], free_ports());
    for (id, value) in &acknowledged {
        let job = wait_completed(&client, &n1.url, id, Duration::from_secs(60)).await;
        assert_eq!(job["outputs"][0]["data"], json!([value]), "{id}");
    }
    eprintln!(
        "measured: {} jobs acknowledged before kill -9, all found and completed after restart",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_node_that_goes_silent_is_redispatched_within_the_detection_bound() {
    let Dispatched { _dir, n1, executors, client, id, running_on } = job_dispatched_to_an_executor(4.0).await;
    // SIGSTOP: the node stops answering but its connections stay open, as
    // in a partition; only the failure detector can tell.
    let silent = executors.iter().find(|n| n.name == running_on).expect("an executor");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(silent.pid()), nix::sys::signal::Signal::SIGSTOP).expect("stop");
    let stopped_unix_ms = std::time::SystemTime::UNIX_EPOCH.elapsed().expect("clock").as_millis() as u64;
    let job = wait_completed(&client, &n1.url, &id, Duration::from_secs(15)).await;
    assert_ne!(job["node"].as_str(), Some(running_on.as_str()), "{job}");
    let redispatched_ms = job["history"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["attempt"] == 2 && s["state"] == "dispatched"))
        .and_then(|step| step["at_ms"].as_u64())
        .expect("a second dispatch");
    let delay = redispatched_ms.saturating_sub(stopped_unix_ms);
    eprintln!("measured: re-dispatch {delay} ms after the executing node went silent");
    assert!(delay < 3_000 + 200, "within the detection bound plus one gossip interval: {delay} ms");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(silent.pid()), nix::sys::signal::Signal::SIGCONT)
        .expect("continue");
}

/// `node`'s own report of requests of `echo` queued or running on it.
async fn echo_load(client: &reqwest::Client, node: &TestNode) -> Option<u32> {
    let view = fetch_view(client, &node.url).await?;
    let me = view.nodes.iter().find(|n| n.name == node.name)?;
    me.models.iter().find(|m| m.name == "echo").map(|m| m.inflight + m.queue_depth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_while_its_job_runs_collects_the_held_result_after_restart() {
    let Dispatched { _dir, mut n1, executors, client, id, running_on } = job_dispatched_to_an_executor(5.0).await;
    let executor = executors.iter().find(|n| n.name == running_on).expect("an executor");
    wait_until("the executor runs the job", Duration::from_secs(5), || async {
        (echo_load(&client, executor).await? > 0).then_some(())
    })
    .await;
    n1.kill9();
    // The executor finishes while the owner is down and keeps the result.
    wait_until("the executor finishes the job", Duration::from_secs(10), || async {
        (echo_load(&client, executor).await? == 0).then_some(())
    })
    .await;
    let (secret, empty) = (_dir.path().join("secret"), _dir.path().join("empty.toml"));
    let n1 = node(_dir.path(), "n1", &empty, &secret, std::slice::from_ref(&executor.gossip), free_ports());
    let job = wait_completed(&client, &n1.url, &id, Duration::from_secs(15)).await;
    assert_eq!(job["node"].as_str(), Some(running_on.as_str()), "{job}");
    assert_eq!(job["attempts"], 1, "the held result was collected, not computed again: {job}");
    assert_eq!(job["outputs"][0]["data"], json!([5.0]));
    assert_monotone(&job);
}

/// An owner killed and restarted while its job still runs on another node
/// waits for that run instead of starting another (before, the node
/// answered that it held no result yet, and the job ran twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_back_while_its_job_still_runs_waits_for_that_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut n1, n2, client) = pair(dir.path(), 4000).await;
    let id = submit(&client, &n1.url, &job_body(7.0, None)).await["job_id"].as_str().expect("id").to_string();
    wait_until("n2 runs the job", Duration::from_secs(5), || async {
        (echo_load(&client, &n2).await? > 0).then_some(())
    })
    .await;
    n1.kill9();
    let (secret, empty) = (dir.path().join("secret"), dir.path().join("empty.toml"));
    let n1 = node(dir.path(), "n1", &empty, &secret, std::slice::from_ref(&n2.gossip), free_ports());
    let job = wait_completed(&client, &n1.url, &id, Duration::from_secs(20)).await;
    assert_eq!(job["node"], "n2", "{job}");
    assert_eq!(job["attempts"], 1, "the run under way was waited for, not started again: {job}");
    assert_eq!(job["outputs"][0]["data"], json!([7.0]));
    assert_monotone(&job);
}

/// One node n1 serving `echo` (`service_ms` a job) with `args`, once ready.
async fn solo(path: &Path, service_ms: u32, args: &[&str]) -> (TestNode, reqwest::Client) {
    let echo = echo_registry(path, "echo", service_ms, 100);
    let spec = NodeSpec {
        name: Some("n1"),
        dir: path,
        data_dir_name: "n1",
        secret: None,
        seeds: &[],
        ports: free_ports(),
        models: Some(&echo),
    };
    let n1 = TestNode::start_with(&spec, args);
    let client = reqwest::Client::new();
    common::wait_ready(&client, &n1.url, Duration::from_secs(10)).await;
    (n1, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_dropped_after_the_retention_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n1, client) = solo(dir.path(), 1, &["--job-retention-secs", "2"]).await;
    let id = submit(&client, &n1.url, &job_body(1.5, None)).await["job_id"].as_str().expect("id").to_string();
    let job = wait_completed(&client, &n1.url, &id, Duration::from_secs(10)).await;
    let completed_ms = job["updated_ms"].as_u64().expect("updated");
    wait_until("retention drops the finished job", Duration::from_secs(10), || async {
        let response = client.get(format!("{}/jobs/{id}", n1.url)).send().await.ok()?;
        (response.status() == 404).then_some(())
    })
    .await;
    let dropped_after = std::time::SystemTime::UNIX_EPOCH.elapsed().expect("clock").as_millis() as u64 - completed_ms;
    assert!(dropped_after >= 2_000, "kept for the retention time first: dropped after {dropped_after} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_beyond_max_active_jobs_get_429_and_every_accepted_job_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 100 ms a job, one at a time: 8 accepted jobs take 0.8 s to finish.
    let (n1, client) = solo(dir.path(), 100, &["--max-active-jobs", "8"]).await;
    let url = n1.url.clone();
    // 20 submits at once, each with its own key.
    let answers = futures_util::future::join_all((0..20).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = job_body(f64::from(i), Some(&format!("k{i}")));
            let response = client.post(format!("{url}/jobs")).json(&body).send().await.expect("sent");
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().expect("ascii").to_string());
            let body: Value = response.json().await.expect("json");
            (i, status, retry_after, body)
        }
    }))
    .await;
    let accepted: Vec<&(i32, u16, Option<String>, Value)> = answers.iter().filter(|a| a.1 == 202).collect();
    let refused: Vec<&(i32, u16, Option<String>, Value)> = answers.iter().filter(|a| a.1 == 429).collect();
    assert_eq!(accepted.len() + refused.len(), 20, "202 or 429 only: {answers:?}");
    assert_eq!(accepted.len(), 8, "exactly --max-active-jobs accepted: {answers:?}");
    for (_, _, retry_after, body) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert!(body["error"].as_str().is_some_and(|e| e.contains("--max-active-jobs")), "{body}");
    }
    // A refused key made no job; an accepted key at the cap still finds its job.
    let (first, _, _, first_body) = accepted[0];
    let again = client.post(format!("{url}/jobs")).json(&job_body(f64::from(*first), Some(&format!("k{first}"))));
    let again: Value = again.send().await.expect("sent").json().await.expect("json");
    assert_eq!(again["job_id"], first_body["job_id"], "the same key gives the same job at the cap");
    // Every accepted job completes with its own result.
    for (i, _, _, body) in &accepted {
        let job = wait_completed(&client, &url, body["job_id"].as_str().expect("id"), Duration::from_secs(10)).await;
        assert_eq!(job["outputs"][0]["data"][0].as_f64(), Some(f64::from(*i)), "{job}");
    }
    // Then there is room again.
    let after = client.post(format!("{url}/jobs")).json(&job_body(99.0, None)).send().await.expect("sent");
    assert_eq!(after.status(), 202);
    eprintln!("measured: 20 concurrent submits with --max-active-jobs 8: 8 accepted (all completed), 12 refused 429");
}

/// A tmpfs of limited size at `parent/small`, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// `None` where this process may not mount (it needs root).
    fn mount(parent: &Path, size: &str) -> Option<Self> {
        let path = parent.join("small");
        std::fs::create_dir_all(&path).expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(Self { path })
    }

    fn grow(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("mount");
        assert!(status.success(), "remount {}", self.path.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_submits_with_503_and_loses_no_acknowledged_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let Some(disk) = SmallDisk::mount(path, "3m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let secret = write_secret(path, "secret");
    // Jobs that never finish: every acknowledged one stays active.
    let echo = echo_registry(path, "echo", 60_000, 1_000_000);
    let on_small_disk = |ports| {
        TestNode::start(&NodeSpec {
            name: Some("n1"),
            dir: path,
            data_dir_name: "small/n1",
            secret: Some(&secret),
            seeds: &[],
            ports,
            models: Some(&echo),
        })
    };
    let mut n1 = on_small_disk(free_ports());
    let client = reqwest::Client::new();
    let url = n1.url.clone();
    wait_until("n1 is ready", Duration::from_secs(10), || async {
        (client.get(format!("{url}/v2/health/ready")).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
    let body = |i: u32| json!({"model": "echo", "inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32", "data": vec![f64::from(i); 256]}]});
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..50_000 {
        let response = client.post(format!("{url}/jobs")).json(&body(i)).send().await.expect("the node answers");
        if response.status() != 202 {
            refusal = Some((response.status(), response.json::<Value>().await.expect("a JSON error")));
            break;
        }
        let accepted: Value = response.json().await.expect("json");
        acknowledged.push(accepted["job_id"].as_str().expect("id").to_string());
    }
    let (status, error) = refusal.expect("the 3 MB disk fills up");
    assert_eq!(status, 503, "{error}");
    let message = error["error"].as_str().expect("error message");
    assert!(message.contains("disk of the data dir is full") && message.contains("restart"), "{message}");
    assert!(acknowledged.len() > 100, "jobs were accepted before: {}", acknowledged.len());
    // The node keeps serving and keeps refusing.
    let live = client.get(format!("{url}/v2/health/live")).send().await.expect("live");
    assert_eq!(live.status(), 200);
    let again = client.post(format!("{url}/jobs")).json(&body(0)).send().await.expect("answers");
    assert_eq!(again.status(), 503);
    // Space freed, node restarted: every acknowledged job is there.
    n1.kill9();
    disk.grow("64m");
    let n1 = on_small_disk(free_ports());
    let url = n1.url.clone();
    wait_until("n1 is ready again", Duration::from_secs(20), || async {
        (client.get(format!("{url}/v2/health/ready")).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
    let mut missing = Vec::new();
    for id in &acknowledged {
        if get(&client, &url, id).await.is_none_or(|job| job["state"] == "failed") {
            missing.push(id);
        }
    }
    assert!(missing.is_empty(), "{} of {} acknowledged jobs missing: {missing:?}", missing.len(), acknowledged.len());
    eprintln!("measured: {} jobs acknowledged before the disk filled, all there after the restart", acknowledged.len());
}

/// n2 owns 60 jobs, many still queued on itself or on another node, and is
/// killed, then restarted 3 s later. Resuming them, it spends one attempt
/// on each job its crash cut off, and none on members it has no link to:
/// before links counted, a restarted owner sent jobs to members whose
/// links the join flap was dropping, and a job could use up its three
/// attempts (cut off, n1 without link, n3 without link) and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_owner_spends_no_attempt_on_members_without_a_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let Trio { secret, echo, n1, mut n2, n3: _n3, client } = echo_trio(path, 50).await;
    let mut accepted = Vec::new();
    for i in 0..60 {
        let value = f64::from(i);
        let id = submit(&client, &n2.url, &job_body(value, None)).await["job_id"].as_str().expect("id").to_string();
        accepted.push((id, value));
    }
    n2.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n2 = node(path, "n2", &echo, &secret, std::slice::from_ref(&n1.gossip), free_ports());
    let mut reran = 0;
    for (id, value) in &accepted {
        let job = wait_completed(&client, &n2.url, id, Duration::from_secs(30)).await;
        assert_eq!(job["outputs"][0]["data"], json!([value]), "{id}");
        let attempts = job["attempts"].as_u64().unwrap_or(0);
        assert!(attempts <= 2, "one attempt cut off by the crash, one to finish: {job}");
        reran += usize::from(attempts > 1);
    }
    eprintln!("measured: {} jobs completed; {reran} ran again after the restart, none more than twice", accepted.len());
}
