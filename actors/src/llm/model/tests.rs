use futures_util::StreamExt;

use super::*;
use crate::clock::SystemClock;
use crate::llm::request::{Endpoint, Hints, parse};
use crate::registry::{ModelKind, parse_registry};

const REGISTRY: &str = "
[[model]]
name = \"m\"
kind = \"synthetic-llm\"
prefill_ms_per_token = 0.5
decode_ms_per_token = 0.1
max_sequences = 2
kv_cache_tokens = 10000
";

fn model() -> Arc<LlmModel> {
    let specs = parse_registry(REGISTRY, std::path::Path::new(".")).expect("valid registry");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    crate::llm::load(&specs, &clock).expect("loads").remove(0)
}

#[tokio::test]
async fn a_prompt_enters_the_sketch_with_its_first_token_and_its_measured_prefill() {
    let model = model();
    let system: Vec<String> = (0..200).map(|word| format!("w{word}")).collect();
    let body = serde_json::json!({"model": "m", "max_tokens": 3, "stream": true,
        "messages": [{"role": "system", "content": system.join(" ")}, {"role": "user", "content": "hi"}]});
    let request = parse(Endpoint::Chat, body.to_string().as_bytes(), &Hints::default()).expect("valid");
    let prefixes = Prefixes::of(&request.prompt);

    let mut pieces = model.start(&request, None).await.expect("started");
    assert_eq!(model.longest_held(&prefixes), 0, "not held while the engine prefills it");
    assert!(model.prefix_sketch().is_empty(), "gossip shows nothing before the first token");
    pieces.next().await.expect("a first piece").expect("ok");
    assert!(model.stats.ttft_ms() > 0.0, "the time to first token is measured");
    assert!(model.longest_held(&prefixes) >= 64, "the prompt's blocks are held once the first token came");
    assert!(!model.prefix_sketch().is_empty());
}

#[test]
fn an_engine_that_reports_its_kv_cache_sizes_the_sketch() {
    let registry = "[[model]]\nname = \"v\"\nkind = \"openai\"\nurl = \"http://127.0.0.1:9\"\nengine = \"vllm\"\n";
    let specs = parse_registry(registry, std::path::Path::new(".")).expect("valid registry");
    let ModelKind::Llm(kind) = &specs[0].kind else { panic!("a language model") };
    assert_eq!(cache_bytes(kind, 4.0, Some(9_168)), 36_672, "vLLM's 573 blocks of 16 tokens");
    assert_eq!(cache_bytes(kind, 4.0, Some(0)), 0, "prefix caching off: nothing is held");
    assert_eq!(cache_bytes(kind, 4.0, None), ENGINE_CACHE_TOKENS * 4, "unreported: assumed");
}
