//! Real engines through the mesh: llama.cpp's `llama-server` (built by
//! scripts/setup.sh into .venv) running the tiny GGUF models/generate_llm.py
//! writes, launched and supervised by the nodes beside them.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::time::Duration;

use common::engine::{ENGINE_START, engine_pid, engine_registry, repo};
use common::llm::{llm_load, wait_llm_ready};
use common::{GOSSIP_INTERVAL_MS, TestNode, fetch_sample, free_ports, start_with_registries, wait_until};
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::time::Instant;

async fn chat(client: &reqwest::Client, url: &str, body: &Value) -> (String, Value) {
    let response = client.post(format!("{url}/v1/chat/completions")).json(body).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let node =
        response.headers().get("x-gpumesh-node").map(|v| v.to_str().expect("ascii").to_string()).unwrap_or_default();
    (node, response.json().await.expect("json"))
}

/// The text of a streamed chat (every event's delta content, in order).
async fn streamed_text(client: &reqwest::Client, url: &str, body: &Value) -> (String, String) {
    let response = client.post(format!("{url}/v1/chat/completions")).json(body).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let node =
        response.headers().get("x-gpumesh-node").map(|v| v.to_str().expect("ascii").to_string()).unwrap_or_default();
    let events: Vec<String> = response.bytes_stream().eventsource().map(|e| e.expect("an event").data).collect().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let text = events
        .iter()
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(String::from))
        .collect();
    (node, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_beside_two_nodes_serve_every_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port2, port3) = (free_ports().0, free_ports().0);
    let registries = [
        String::new(),
        engine_registry(port2, 4, &["-np", "4", "-c", "8192"]),
        engine_registry(port3, 4, &["-np", "4", "-c", "8192"]),
    ];
    let nodes = start_with_registries(dir.path(), &registries);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let n1 = &nodes[0].url;
    wait_llm_ready(&client, n1, &["n2", "n3"], "tiny-llm", ENGINE_START).await;

    let messages = json!([{"role": "user", "content": "Say something about the mesh."}]);
    let body = json!({"model": "tiny-llm", "messages": messages, "max_tokens": 24, "temperature": 0});
    let (node, answer) = chat(&client, n1, &body).await;
    assert!(node == "n2" || node == "n3", "served by an engine's node: {node}");
    assert_eq!(answer["usage"]["completion_tokens"], 24, "{answer}");
    assert!(answer["timings"].is_object(), "llama.cpp's own fields pass through: {answer}");
    let completion = json!({"model": "tiny-llm", "prompt": "The cluster", "max_tokens": 8, "temperature": 0});
    let response = client.post(format!("{n1}/v1/completions")).json(&completion).send().await.expect("sent");
    let completed: Value = response.json().await.expect("json");
    assert_eq!(completed["object"], "text_completion", "{completed}");

    // Greedy: the stream through n1 says what the engine says directly.
    let streamed =
        json!({"model": "tiny-llm", "messages": messages, "max_tokens": 24, "temperature": 0, "stream": true});
    let (via, text) = streamed_text(&client, n1, &streamed).await;
    let direct_url = format!("http://127.0.0.1:{}", if via == "n2" { port2 } else { port3 });
    let (_, direct) = streamed_text(&client, &direct_url, &streamed).await;
    assert!(!text.trim().is_empty());
    assert_eq!(text, direct, "the relayed stream differs from the engine's own");
    assert_eq!(
        text,
        answer["choices"][0]["message"]["content"].as_str().expect("text"),
        "greedy stream and whole answer agree"
    );
    eprintln!("measured: through n1, {via} streamed {:?}", text);

    // The engine's own refusal comes back as it is: a prompt beyond the
    // context of a slot.
    let huge: Vec<String> = (0..3000).map(|i| format!("word{i}")).collect();
    let too_long =
        json!({"model": "tiny-llm", "messages": [{"role": "user", "content": huge.join(" ")}], "max_tokens": 4});
    let response = client.post(format!("{n1}/v1/chat/completions")).json(&too_long).send().await.expect("sent");
    assert_eq!(response.status(), 400);
    let refused: Value = response.json().await.expect("json");
    assert_eq!(refused["error"]["type"], "exceed_context_size_error", "llama.cpp's own error: {refused}");

    // The official client, unchanged, against n1: streamed and whole agree.
    let script = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
ask = dict(model="tiny-llm", messages=[{"role": "user", "content": "Say something about the mesh."}], max_tokens=24, temperature=0)
whole = client.chat.completions.create(**ask).choices[0].message.content
streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **ask) if c.choices)
print(json.dumps({"whole": whole, "streamed": streamed}))
"#;
    let python = repo().join(".venv/bin/python");
    let output =
        tokio::process::Command::new(&python).arg("-c").arg(script).arg(n1).output().await.expect("python runs");
    assert!(output.status.success(), "the openai client failed: {}", String::from_utf8_lossy(&output.stderr));
    let result: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(result["whole"], result["streamed"], "{result}");
    assert_eq!(result["whole"].as_str(), Some(text.as_str()), "the official client reads what the engine says");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_turns_its_model_unready_and_is_launched_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port2, port3) = (free_ports().0, free_ports().0);
    let registries =
        [String::new(), engine_registry(port2, 4, &["-np", "2"]), engine_registry(port3, 4, &["-np", "2"])];
    let nodes = start_with_registries(dir.path(), &registries);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let n1 = &nodes[0].url;
    wait_llm_ready(&client, n1, &["n2", "n3"], "tiny-llm", ENGINE_START).await;
    let pid = engine_pid(port2).expect("n2's engine runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill -9");
    let killed = Instant::now();
    wait_until("n1 sees n2's model unready", Duration::from_secs(5), || async {
        llm_load(&client, n1, "n2", "tiny-llm").await.filter(|llm| llm["ready"] == false)
    })
    .await;
    let unready_after = killed.elapsed();
    eprintln!(
        "measured: n2's model unready in n1's view {unready_after:?} after its engine was killed ({GOSSIP_INTERVAL_MS} ms gossip)"
    );
    assert!(unready_after <= Duration::from_millis(2 * GOSSIP_INTERVAL_MS), "unready after {unready_after:?}");
    let body = json!({"model": "tiny-llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    for _ in 0..5 {
        let (node, _) = chat(&client, n1, &body).await;
        if engine_pid(port2).is_none() {
            assert_eq!(node, "n3", "while n2's engine is down, n3 serves");
        }
    }
    wait_llm_ready(&client, n1, &["n2"], "tiny-llm", ENGINE_START).await;
    let relaunched = engine_pid(port2).expect("n2 launched its engine again");
    assert_ne!(relaunched, pid);
    eprintln!("measured: n2's engine launched again and ready {:?} after the kill", killed.elapsed());
    let _keep: &[TestNode] = &nodes;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_generation_in_the_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_ports().0;
    let registries = [String::new(), engine_registry(port, 4, &["-np", "1", "-c", "32768"])];
    let nodes = start_with_registries(dir.path(), &registries);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let n1 = &nodes[0].url;
    wait_llm_ready(&client, n1, &["n2"], "tiny-llm", ENGINE_START).await;
    let engine = format!("http://127.0.0.1:{port}");
    let processing = || fetch_sample(&client, &engine, "llamacpp:requests_processing");
    // A long generation: 30,000 tokens, the end of sequence ignored.
    let body = json!({"model": "tiny-llm", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 30000, "ignore_eos": true, "stream": true});
    let response = client.post(format!("{n1}/v1/chat/completions")).json(&body).send().await.expect("sent");
    let mut events = response.bytes_stream().eventsource();
    for _ in 0..5 {
        events.next().await.expect("a chunk").expect("well formed");
    }
    wait_until("the engine generates", Duration::from_secs(3), || async { processing().await.filter(|n| *n == 1.0) })
        .await;
    let left = Instant::now();
    drop(events);
    wait_until("the engine stops the abandoned generation", Duration::from_secs(3), || async {
        processing().await.filter(|n| *n == 0.0)
    })
    .await;
    let tokens = fetch_sample(&client, &engine, "llamacpp:tokens_predicted_total").await;
    eprintln!(
        "measured: the engine stopped {:?} after the client left, {tokens:?} tokens generated of 30000",
        left.elapsed()
    );
    assert!(tokens.is_some_and(|tokens| tokens < 30_000.0), "the generation was cut short: {tokens:?}");
    let _keep: &[TestNode] = &nodes;
}
