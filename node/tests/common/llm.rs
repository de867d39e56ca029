//! What gossip and `/metrics` say of language models, for tests that wait
//! on it.

use std::time::Duration;

use serde_json::Value;

use super::{fetch_view, wait_until};

/// The load of `model` that `at` sees `holder` (alive and linked) publish.
pub async fn model_load(client: &reqwest::Client, at: &str, holder: &str, model: &str) -> Option<Value> {
    let view = fetch_view(client, at).await?;
    let node = view.nodes.iter().find(|n| n.name == holder && n.status.as_str() == "alive" && n.connected)?;
    serde_json::to_value(node.models.iter().find(|m| m.name == model)?).ok()
}

/// Its language-model part (`ready`, `running`, `ttft_ms`, `prefixes`...).
pub async fn llm_load(client: &reqwest::Client, at: &str, holder: &str, model: &str) -> Option<Value> {
    model_load(client, at, holder, model).await?.get("llm").filter(|llm| !llm.is_null()).cloned()
}

/// Waits until `at` sees every one of `holders` serve `model` with its
/// engine ready.
pub async fn wait_llm_ready(client: &reqwest::Client, at: &str, holders: &[&str], model: &str, timeout: Duration) {
    wait_until("the language model's holders appear in gossip, ready and linked", timeout, || async {
        for holder in holders {
            llm_load(client, at, holder, model).await.filter(|llm| llm["ready"] == true)?;
        }
        Some(())
    })
    .await;
}
