//! Prefix-cache affinity without a center (SPEC section 10): requests that
//! share a long system prompt go to the node whose engine holds it, from
//! whichever node they enter, through the sketches every node gossips.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::time::Duration;

use common::llm::{llm_load, model_load};
use common::{start_with_registries, wait_until};
use serde_json::{Value, json};

/// Prefill is what a cache saves: 0.5 ms a prompt token.
const CTX_LLM: &str = "
[[model]]
name = \"ctx\"
kind = \"synthetic-llm\"
prefill_ms_per_token = 0.5
decode_ms_per_token = 1.0
max_sequences = 8
kv_cache_tokens = 100000
";
const GROUPS: usize = 4;
const SYSTEM_WORDS: usize = 300;

fn ask(group: usize, question: usize) -> Value {
    let system: Vec<String> = (0..SYSTEM_WORDS).map(|word| format!("g{group}w{word}")).collect();
    let user: Vec<String> = (0..12).map(|word| format!("q{question}x{word}")).collect();
    json!({"model": "ctx", "max_tokens": 4, "messages": [
        {"role": "system", "content": system.join(" ")},
        {"role": "user", "content": user.join(" ")},
    ]})
}

/// Sends a chat; the node that served it and the prompt tokens it had cached.
async fn chat(client: &reqwest::Client, url: &str, body: &Value) -> (String, u64) {
    let response = client.post(format!("{url}/v1/chat/completions")).json(body).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let node = response.headers()["x-gpumesh-node"].to_str().expect("ascii").to_string();
    let answer: Value = response.json().await.expect("json");
    let cached = answer["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
    (node, cached)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_sharing_a_prefix_go_where_it_is_cached_from_every_entry_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_with_registries(dir.path(), &[String::new(), CTX_LLM.to_string(), CTX_LLM.to_string()]);
    let client = reqwest::Client::new();
    let urls: Vec<String> = nodes.iter().map(|node| node.url.clone()).collect();
    wait_until("n2 and n3 serve the model, as every node sees", Duration::from_secs(10), || async {
        for url in &urls {
            for holder in ["n2", "n3"] {
                llm_load(&client, url, holder, "ctx").await.filter(|llm| llm["ready"] == true)?;
            }
        }
        Some(())
    })
    .await;

    // The first request of each group goes wherever eta says.
    let mut holders = Vec::new();
    for group in 0..GROUPS {
        let (node, cached) = chat(&client, &urls[0], &ask(group, 0)).await;
        assert_eq!(cached, 0, "nothing is cached yet");
        holders.push(node);
    }
    // Every node reads the sketches n2 and n3 published after serving them.
    wait_until("every node has n2's and n3's sketch of the requests they served", Duration::from_secs(5), || async {
        for holder in ["n2", "n3"] {
            let served = holders.iter().filter(|node| *node == holder).count() as u64;
            for url in &urls {
                let seen = model_load(&client, url, holder, "ctx").await?;
                (seen["completed"].as_u64()? >= served).then_some(())?;
            }
        }
        Some(())
    })
    .await;

    // Then each request of a group, entering at any node, goes to the node
    // that holds its system prompt, and finds it cached.
    let (mut prompt_hits, mut asked) = (0, 0);
    for question in 1..=3 {
        for (group, holder) in holders.iter().enumerate() {
            for url in &urls {
                let (node, cached) = chat(&client, url, &ask(group, question)).await;
                if node != *holder {
                    let decisions = client.get(format!("{url}/cluster/decisions")).send().await.expect("up");
                    let decisions = decisions.text().await.expect("text");
                    panic!(
                        "group {group} entering at {url} went to {node}, not to {holder} that holds its prefix: {decisions}"
                    );
                }
                assert!(cached >= 288, "the system prompt's whole blocks were cached: {cached}");
                prompt_hits += cached;
                asked += 1;
            }
        }
    }
    eprintln!(
        "measured: groups held by {holders:?}; {asked} requests entering at all three nodes, each to its group's holder, {} cached prompt tokens on average",
        prompt_hits / asked
    );

    // A burst of one group: its holder takes it until it is overloaded
    // (more than 4 plus twice the other's requests ahead), then load wins.
    let burst = futures_util::future::join_all((0..24).map(|question| {
        let (client, url) = (client.clone(), urls[0].clone());
        async move { chat(&client, &url, &ask(0, 100 + question)).await.0 }
    }))
    .await;
    let at_holder = burst.iter().filter(|node| **node == holders[0]).count();
    eprintln!("measured: a burst of 24 requests of group 0 at n1: {at_holder} to its holder {}", holders[0]);
    assert!(at_holder >= 8, "the holder takes its share and more: {burst:?}");
    assert!(at_holder < 24, "but not all of it once it is overloaded: {burst:?}");
}
