//! Language models through the mesh on real node processes: any node
//! answers the OpenAI API for the engines of the whole cluster, streams
//! come back hop by hop as they are generated, and a client that goes away
//! stops the generation where it runs. The engines here are synthetic-llm
//! (deterministic tokens at a set speed); llm_engine.rs runs llama.cpp.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::time::Duration;

use common::llm::{llm_load, wait_llm_ready};
use common::{NodeSpec, TestNode, fetch_sample, free_ports, sample, start_with_registries, wait_until};
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

const LLM: &str = "
[[model]]
name = \"chat\"
kind = \"synthetic-llm\"
prefill_ms_per_token = 0.1
decode_ms_per_token = 2.0
max_sequences = 4
";

/// A slow one: 50 ms a token, so a stream of 100 tokens lasts 5 s.
const SLOW_LLM: &str = "
[[model]]
name = \"slow\"
kind = \"synthetic-llm\"
prefill_ms_per_token = 0.1
decode_ms_per_token = 50.0
max_sequences = 4
";

/// POSTs `body` to `url` and returns the JSON answer.
async fn post_json(client: &reqwest::Client, url: String, body: &Value) -> Value {
    client.post(url).json(body).send().await.expect("sent").json().await.expect("json")
}

/// Sends a streamed request and returns the response's headers and the
/// data of every event, in order.
async fn stream(client: &reqwest::Client, url: &str, body: &Value) -> (reqwest::header::HeaderMap, Vec<String>) {
    let response = client.post(format!("{url}/v1/chat/completions")).json(body).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_string();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let headers = response.headers().clone();
    let events: Vec<String> =
        response.bytes_stream().eventsource().map(|event| event.expect("a well-formed event").data).collect().await;
    (headers, events)
}

/// The text of a chat stream's chunks.
fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_the_language_models_of_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_with_registries(dir.path(), &[String::new(), LLM.to_string(), LLM.to_string()]);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let (n1, n2) = (&nodes[0].url, &nodes[1].url);
    wait_llm_ready(&client, n1, &["n2", "n3"], "chat", Duration::from_secs(10)).await;

    let models: Value = client.get(format!("{n1}/v1/models")).send().await.expect("up").json().await.expect("json");
    assert_eq!(models["data"][0]["id"], "chat", "{models}");
    assert_eq!(models["data"][0]["gpumesh"]["nodes"], json!(["n2", "n3"]), "{models}");

    let body =
        json!({"model": "chat", "messages": [{"role": "user", "content": "Tell me about meshes"}], "max_tokens": 12});
    let response = client.post(format!("{n1}/v1/chat/completions")).json(&body).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let node = response.headers()["x-gpumesh-node"].to_str().expect("ascii").to_string();
    assert!(node == "n2" || node == "n3", "served by an engine's node, not {node}");
    assert_eq!(response.headers()["x-gpumesh-route"], format!("n1>{node}").as_str());
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["gpumesh"]["nodes"], json!([node]), "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 12, "{answer}");
    let text = answer["choices"][0]["message"]["content"].as_str().expect("content").to_string();

    // The same request streamed through n1 gives, chunk by chunk, the text
    // the engine gives directly (n2 serves it itself).
    let streamed_body = json!({"stream": true, "stream_options": {"include_usage": true}, "model": "chat", "messages": body["messages"], "max_tokens": 12});
    let (headers, events) = stream(&client, n1, &streamed_body).await;
    assert_ne!(headers["x-gpumesh-node"], "n1");
    let (direct_headers, direct) = stream(&client, n2, &streamed_body).await;
    assert_eq!(direct_headers["x-gpumesh-node"], "n2", "n2 serves its own engine");
    assert_eq!(streamed_text(&events), streamed_text(&direct));
    assert_eq!(streamed_text(&events), text, "streamed and whole answers agree");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let tail: Value = serde_json::from_str(&events[events.len() - 2]).expect("the last chunk");
    assert_eq!(tail["gpumesh"]["failovers"], 0, "{tail}");
    assert_eq!(tail["gpumesh"]["nodes"], json!([headers["x-gpumesh-node"].to_str().expect("ascii")]), "{tail}");
    assert_eq!(tail["usage"]["completion_tokens"], 12, "usage stays in the last chunk: {tail}");
    assert_eq!(events.len(), 12 + 3, "12 token chunks, the finish chunk, usage with gpumesh, [DONE]");
    let (_, plain) =
        stream(&client, n1, &json!({"stream": true, "model": "chat", "messages": body["messages"], "max_tokens": 3}))
            .await;
    let tail: Value = serde_json::from_str(&plain[plain.len() - 2]).expect("the last chunk");
    assert!(tail["gpumesh"].is_object() && tail.get("usage").is_none(), "without usage, a chunk of its own: {tail}");

    // The engine's node measured what it served.
    let metrics = client.get(format!("{n2}/metrics")).send().await.expect("up").text().await.expect("text");
    let value = |series: &str| sample(&metrics, series).unwrap_or(0.0);
    assert!(value("gpumesh_llm_requests_total{model=\"chat\"}") >= 1.0, "{metrics}");
    assert!(value("gpumesh_llm_time_to_first_token_seconds_count{model=\"chat\"}") >= 1.0, "{metrics}");
    assert!(value("gpumesh_llm_completion_tokens_total{model=\"chat\"}") >= 12.0, "{metrics}");
    assert_eq!(value("gpumesh_llm_ready{model=\"chat\"}"), 1.0);
    // ... and tells the cluster: time to first token, prefill and decode speed.
    wait_until("n2's measurements reach n1 through gossip", Duration::from_secs(5), || async {
        let llm = llm_load(&client, n1, "n2", "chat").await?;
        let measured = ["ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s"]
            .iter()
            .all(|k| llm[*k].as_f64().is_some_and(|v| v > 0.0));
        measured.then_some(())
    })
    .await;
    let completion = json!({"model": "chat", "prompt": "Once upon a time", "max_tokens": 5});
    let answer: Value = post_json(&client, format!("{n1}/v1/completions"), &completion).await;
    assert_eq!(answer["object"], "text_completion", "{answer}");
    let embedding = json!({"model": "chat", "input": "a mesh"});
    let answer: Value = post_json(&client, format!("{n1}/v1/embeddings"), &embedding).await;
    assert_eq!(answer["data"][0]["embedding"].as_array().map(Vec::len), Some(8), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_works_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_with_registries(dir.path(), &[String::new(), LLM.to_string()]);
    let client = reqwest::Client::new();
    wait_llm_ready(&client, &nodes[0].url, &["n2"], "chat", Duration::from_secs(10)).await;
    let script = r#"
import json, sys
from openai import OpenAI, NotFoundError
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
whole = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=6)
chunks = list(client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True, stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
completion = client.completions.create(model="chat", prompt="Once", max_tokens=3)
try:
    client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    missing = "no error"
except NotFoundError as error:
    missing = error.body["code"] if isinstance(error.body, dict) else str(error.body)
print(json.dumps({"whole": whole.choices[0].message.content, "streamed": streamed, "usage": chunks[-1].usage.completion_tokens if chunks[-1].usage else None,
    "models": [m.id for m in client.models.list()], "completion": completion.choices[0].text, "missing": missing}))
"#;
    for url in [&nodes[0].url, &nodes[1].url] {
        let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        let output =
            tokio::process::Command::new(&python).arg("-c").arg(script).arg(url).output().await.expect("python runs");
        assert!(output.status.success(), "the openai client failed: {}", String::from_utf8_lossy(&output.stderr));
        let result: Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(result["whole"], result["streamed"], "{result}");
        assert_eq!(result["whole"].as_str().map(|text| text.split_whitespace().count()), Some(6), "{result}");
        assert_eq!(result["usage"], 6);
        assert_eq!(result["models"], json!(["chat"]));
        assert_eq!(result["completion"].as_str().map(|text| text.split_whitespace().count()), Some(3));
        assert_eq!(result["missing"], "model_not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_the_generation_where_it_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_with_registries(dir.path(), &[String::new(), SLOW_LLM.to_string()]);
    let client = reqwest::Client::new();
    let (n1, n2) = (&nodes[0].url, &nodes[1].url);
    wait_llm_ready(&client, n1, &["n2"], "slow", Duration::from_secs(10)).await;
    let running = |at: String| {
        let client = client.clone();
        async move { llm_load(&client, &at, "n2", "slow").await.and_then(|llm| llm["running"].as_u64()) }
    };
    let body =
        json!({"model": "slow", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 100, "stream": true});
    let response = client.post(format!("{n1}/v1/chat/completions")).json(&body).send().await.expect("sent");
    let mut events = response.bytes_stream().eventsource();
    for _ in 0..3 {
        events.next().await.expect("a chunk").expect("well formed");
    }
    wait_until("n2 reports the stream running", Duration::from_secs(3), || async {
        running(n2.clone()).await.filter(|count| *count == 1)
    })
    .await;
    let left_at = tokio::time::Instant::now();
    drop(events);
    wait_until("n2's engine stops the abandoned stream", Duration::from_secs(3), || async {
        running(n2.clone()).await.filter(|count| *count == 0)
    })
    .await;
    let stopped_after = left_at.elapsed();
    // The stream had about 4.8 s to go: it was stopped, not finished.
    assert!(stopped_after < Duration::from_secs(3), "stopped {stopped_after:?} after the client left");
    eprintln!("measured: the engine stopped {stopped_after:?} after the client went away (4.8 s were left)");
    let _keep: &[TestNode] = &nodes;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_model_jobs_survive_their_owner_killed_and_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two sequences at a time, 8 tokens at 30 ms: 20 jobs take over 2 s.
    let engine = LLM
        .replace("decode_ms_per_token = 2.0", "decode_ms_per_token = 30.0")
        .replace("max_sequences = 4", "max_sequences = 2");
    let mut nodes = start_with_registries(dir.path(), &[String::new(), engine]);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    wait_llm_ready(&client, &nodes[0].url, &["n2"], "chat", Duration::from_secs(10)).await;
    let prompts: Vec<String> = (0..20).map(|i| format!("job number {i} please")).collect();
    let mut ids = Vec::new();
    for prompt in &prompts {
        let body =
            json!({"model": "chat", "request": {"messages": [{"role": "user", "content": prompt}], "max_tokens": 8}});
        let response = client.post(format!("{}/jobs", nodes[0].url)).json(&body).send().await.expect("sent");
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.expect("json");
        ids.push(accepted["job_id"].as_str().expect("id").to_string());
    }
    // The owner dies right after acknowledging them, while most still run
    // or wait, and comes back.
    let mut finished = 0;
    for id in &ids {
        let job: Value =
            client.get(format!("{}/jobs/{id}", nodes[0].url)).send().await.expect("up").json().await.expect("json");
        finished += usize::from(job["state"] == "completed");
    }
    nodes[0].kill9();
    assert!(finished < ids.len() / 2, "the owner was killed with jobs under way ({finished} of {} done)", ids.len());
    let seeds = vec![nodes[1].gossip.clone()];
    let secret = dir.path().join("secret");
    let registry = dir.path().join("n1.toml");
    let n1 = TestNode::start(&NodeSpec {
        name: Some("n1"),
        dir: dir.path(),
        data_dir_name: "n1",
        secret: Some(&secret),
        seeds: &seeds,
        ports: free_ports(),
        models: Some(&registry),
    });
    for (id, prompt) in ids.iter().zip(&prompts) {
        let job = wait_until("the job completes after its owner restarted", Duration::from_secs(30), || async {
            let job: Value = client.get(format!("{}/jobs/{id}", n1.url)).send().await.ok()?.json().await.ok()?;
            (job["state"] == "completed").then_some(job)
        })
        .await;
        assert_eq!(job["node"], "n2", "{job}");
        let answer = &job["outputs"];
        assert_eq!(answer["object"], "chat.completion", "{job}");
        assert_eq!(answer["gpumesh"]["nodes"], json!(["n2"]));
        // The engine's own answer to the same prompt, asked directly.
        let direct = json!({"model": "chat", "messages": [{"role": "user", "content": prompt}], "max_tokens": 8});
        let expected: Value = client
            .post(format!("{}/v1/chat/completions", nodes[1].url))
            .json(&direct)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        assert_eq!(answer["choices"][0]["message"]["content"], expected["choices"][0]["message"]["content"], "{job}");
    }
    eprintln!(
        "measured: {} language-model jobs acknowledged before their owner was killed ({finished} done then) all completed after its restart",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_its_nodes_death_ends_with_an_error_event_not_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_with_registries(dir.path(), &[String::new(), SLOW_LLM.to_string()]);
    let client = reqwest::Client::new();
    let n1 = nodes[0].url.clone();
    wait_llm_ready(&client, &n1, &["n2"], "slow", Duration::from_secs(10)).await;
    let body = json!({"model": "slow", "messages": [{"role": "user", "content": "a long story"}], "max_tokens": 200, "stream": true});
    let response = client.post(format!("{n1}/v1/chat/completions")).json(&body).send().await.expect("sent");
    assert_eq!(response.headers()["x-gpumesh-node"], "n2");
    let mut events = response.bytes_stream().eventsource();
    for _ in 0..3 {
        events.next().await.expect("a chunk").expect("well formed");
    }
    nodes[1].kill9();
    let killed = tokio::time::Instant::now();
    let rest: Vec<String> =
        tokio::time::timeout(Duration::from_secs(10), events.map(|e| e.expect("well formed").data).collect())
            .await
            .expect("the stream ends soon after its node dies");
    let last = rest.last().expect("an event after the kill");
    assert!(!rest.iter().any(|data| data == "[DONE]"), "a cut stream must not look complete: {rest:?}");
    let error: Value = serde_json::from_str(last).expect("json");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("n2")), "{error}");
    eprintln!("measured: the stream ended with an error event {:?} after its node was killed", killed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_node_dies_goes_on_on_another_node_as_one_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_with_registries(dir.path(), &[String::new(), SLOW_LLM.to_string(), SLOW_LLM.to_string()]);
    let client = reqwest::Client::new();
    let n1 = nodes[0].url.clone();
    wait_llm_ready(&client, &n1, &["n2", "n3"], "slow", Duration::from_secs(10)).await;
    let messages = json!([{"role": "user", "content": "a long story about the mesh"}]);
    let body = json!({"model": "slow", "messages": messages, "max_tokens": 60, "stream": true, "stream_options": {"include_usage": true}});
    let response = client.post(format!("{n1}/v1/chat/completions")).json(&body).send().await.expect("sent");
    let serving = response.headers()["x-gpumesh-node"].to_str().expect("ascii").to_string();
    let (killed_index, survivor) = if serving == "n2" { (1, "n3") } else { (2, "n2") };
    let mut events = response.bytes_stream().eventsource();
    let mut chunks = Vec::new();
    for _ in 0..3 {
        chunks.push(events.next().await.expect("a chunk").expect("well formed").data);
    }
    nodes[killed_index].kill9();
    let killed = tokio::time::Instant::now();
    let (mut last_at, mut gap) = (killed, Duration::ZERO);
    while let Some(event) =
        tokio::time::timeout(Duration::from_secs(15), events.next()).await.expect("the stream goes on")
    {
        gap = gap.max(last_at.elapsed());
        last_at = tokio::time::Instant::now();
        chunks.push(event.expect("well formed").data);
    }
    let completed = killed.elapsed();
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"), "the stream completes: {chunks:?}");
    let parsed: Vec<Value> = chunks.iter().filter_map(|data| serde_json::from_str(data).ok()).collect();
    let last = parsed.last().expect("the last chunk");
    assert_eq!(last["gpumesh"]["failovers"], 1, "{last}");
    assert_eq!(last["gpumesh"]["nodes"], json!([serving, survivor]), "{last}");
    assert_eq!(last["usage"]["completion_tokens"], 60, "usage counts the whole completion: {last}");
    assert!(parsed.iter().all(|chunk| chunk["id"] == parsed[0]["id"] && chunk["created"] == parsed[0]["created"]));
    let roles = parsed.iter().filter(|chunk| chunk["choices"][0]["delta"].get("role").is_some()).count();
    assert_eq!(roles, 1, "one role, in the first chunk");

    // What an uninterrupted run says, from the survivor.
    let whole = json!({"model": "slow", "messages": messages, "max_tokens": 60});
    let response = client.post(format!("{n1}/v1/chat/completions")).json(&whole).send().await.expect("sent");
    let reference: Value = response.json().await.expect("json");
    assert_eq!(reference["gpumesh"]["nodes"], json!([survivor]));
    let reference = reference["choices"][0]["message"]["content"].as_str().expect("text").to_string();
    assert_eq!(streamed_text(&chunks), reference, "no token lost or repeated across the move");
    let metrics = client.get(format!("{n1}/metrics")).send().await.expect("sent").text().await.expect("text");
    let continued = r#"gpumesh_llm_stream_failovers_total{model="slow",outcome="continued"} 1"#;
    assert!(metrics.lines().any(|line| line == continued), "the accepting node counts the move: {metrics}");
    eprintln!(
        "measured: the stream served by {serving} went on on {survivor}; longest gap between chunks {gap:?}, {} chunks, complete {:?} after the kill",
        chunks.len(),
        completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_node_dies_mid_generation_goes_on_from_its_tokens_on_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_with_registries(dir.path(), &[String::new(), SLOW_LLM.to_string(), SLOW_LLM.to_string()]);
    let client = reqwest::Client::new();
    let n1 = nodes[0].url.clone();
    wait_llm_ready(&client, &n1, &["n2", "n3"], "slow", Duration::from_secs(10)).await;
    let messages = json!([{"role": "user", "content": "a long job about the mesh"}]);
    let body = json!({"model": "slow", "request": {"messages": messages, "max_tokens": 60}});
    let response = client.post(format!("{n1}/jobs")).json(&body).send().await.expect("sent");
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.expect("json");
    let id = accepted["job_id"].as_str().expect("id").to_string();
    let job_at = |url: String| {
        let client = client.clone();
        let id = id.clone();
        async move { client.get(format!("{url}/jobs/{id}")).send().await.ok()?.json::<Value>().await.ok() }
    };
    let serving = wait_until("the job runs on an engine's node", Duration::from_secs(10), || async {
        let job = job_at(n1.clone()).await?;
        (job["state"] == "running").then(|| job["node"].as_str().map(String::from))?
    })
    .await;
    let (killed_index, survivor) = if serving == "n2" { (1, "n3") } else { (2, "n2") };
    // Ten tokens made (of 60, 50 ms each), then its node dies.
    let serving_url = nodes[killed_index].url.clone();
    wait_until("the engine has made ten tokens", Duration::from_secs(5), || async {
        let gaps = fetch_sample(&client, &serving_url, "gpumesh_llm_inter_token_seconds_count{model=\"slow\"}").await?;
        (gaps >= 10.0).then_some(())
    })
    .await;
    nodes[killed_index].kill9();
    let job = wait_until("the job completes", Duration::from_secs(20), || async {
        let job = job_at(n1.clone()).await?;
        (job["state"] == "completed").then_some(job)
    })
    .await;
    let answer = &job["outputs"];
    assert_eq!(answer["gpumesh"]["failovers"], 1, "{job}");
    assert_eq!(answer["gpumesh"]["nodes"], json!([serving, survivor]), "{job}");
    assert_eq!(answer["usage"]["completion_tokens"], 60, "{job}");
    let whole = json!({"model": "slow", "messages": messages, "max_tokens": 60});
    let reference: Value = post_json(&client, format!("{n1}/v1/chat/completions"), &whole).await;
    assert_eq!(reference["gpumesh"]["nodes"], json!([survivor]));
    assert_eq!(answer["choices"][0]["message"]["content"], reference["choices"][0]["message"]["content"], "{job}");
    assert_eq!(answer["object"], "chat.completion");
    eprintln!(
        "measured: a job made 10 of its 60 tokens on {serving}, which died; it completed on {survivor} from there"
    );
}
