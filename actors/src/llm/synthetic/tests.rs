use serde_json::Value;

use super::*;
use crate::llm::request::{Hints, parse};

fn words(n: usize, salt: &str) -> String {
    (0..n).map(|i| format!("{salt}{i}")).collect::<Vec<_>>().join(" ")
}

#[test]
fn tokens_depend_on_the_prompt_and_the_index_only() {
    let prompt = "user: tell me about meshes\n";
    let first: Vec<String> = (0..20).map(|i| token(prompt, i)).collect();
    let again: Vec<String> = (0..20).map(|i| token(prompt, i)).collect();
    assert_eq!(first, again);
    assert!(first.iter().all(|t| t.starts_with(' ') && VOCABULARY.contains(&&t[1..])));
    assert!(first.iter().collect::<std::collections::BTreeSet<_>>().len() > 5, "tokens vary: {first:?}");
    let other: Vec<String> = (0..20).map(|i| token("user: something else\n", i)).collect();
    assert_ne!(first, other);
}

#[test]
fn block_hashes_are_equal_exactly_for_equal_prefixes() {
    let a = words(40, "a");
    let shared = format!("{} {}", words(32, "a"), words(8, "b"));
    let (a, shared) = (prompt_tokens(&a), prompt_tokens(&shared));
    let (ha, hs) = (block_hashes(&a), block_hashes(&shared));
    assert_eq!((ha.len(), hs.len()), (2, 2), "only whole blocks");
    assert_eq!(ha, hs, "the first 32 tokens are the same");
    let differs_early = prompt_tokens(
        "x a1 a2 a3 a4 a5 a6 a7 a8 a9 a10 a11 a12 a13 a14 a15 a16 a17 a18 a19 a20 a21 a22 a23 a24 a25 a26 a27 a28 a29 a30 a31",
    );
    let he = block_hashes(&differs_early);
    assert_ne!(he[0], ha[0]);
    assert_ne!(he[1], ha[1], "a block's hash covers every token before it");
}

#[test]
fn the_prefix_cache_finds_leading_blocks_and_drops_the_least_recent() {
    let mut cache = PrefixCache::new(3 * BLOCK_TOKENS + 5);
    // (blocks asked for, cached tokens found)
    let table: [(&[u64], usize); 7] = [
        (&[1, 2], 0),
        (&[1, 2, 3], 2 * BLOCK_TOKENS),
        (&[2, 3], 2 * BLOCK_TOKENS),
        // 9 pushes out 2, the least recently used.
        (&[1, 9], BLOCK_TOKENS),
        (&[1, 2], BLOCK_TOKENS),
        (&[5], 0),
        (&[1], BLOCK_TOKENS),
    ];
    for (blocks, cached) in table {
        assert_eq!(cache.lookup_and_insert(blocks), cached, "{blocks:?}");
    }
    let mut none = PrefixCache::new(BLOCK_TOKENS - 1);
    assert_eq!((none.lookup_and_insert(&[1]), none.lookup_and_insert(&[1])), (0, 0), "no whole block: no cache");
}

fn request(endpoint: Endpoint, body: &str) -> LlmRequest {
    parse(endpoint, body.as_bytes(), &Hints::default()).expect("valid")
}

#[test]
fn answers_have_the_openai_shapes() {
    let chat = request(
        Endpoint::Chat,
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
    );
    let answer = Answer { request: &chat, id: "chatcmpl-1".into(), created: 7 };
    let first: Value = serde_json::from_str(&answer.chunk(Some(" mesh"), true)).expect("json");
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["choices"][0]["delta"]["content"], " mesh");
    assert!(first["choices"][0]["finish_reason"].is_null() && first["usage"].is_null());
    let last: Value = serde_json::from_str(&answer.chunk(None, false)).expect("json");
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert!(last["choices"][0]["delta"].as_object().is_some_and(|delta| delta.is_empty()));
    let usage = Usage { prompt_tokens: 2, completion_tokens: 3, cached_tokens: 0 };
    let tail: Value = serde_json::from_str(&answer.usage_chunk(usage)).expect("json");
    assert_eq!((tail["choices"].as_array().map(Vec::len), &tail["usage"]["total_tokens"]), (Some(0), &Value::from(5)));
    let whole: Value = serde_json::from_str(&answer.whole(" a b", usage)).expect("json");
    assert_eq!(
        (&whole["object"], &whole["choices"][0]["message"]["content"]),
        (&Value::from("chat.completion"), &Value::from(" a b"))
    );

    let completion = request(Endpoint::Completion, r#"{"model":"m","prompt":"once"}"#);
    let answer = Answer { request: &completion, id: "cmpl-1".into(), created: 7 };
    let chunk: Value = serde_json::from_str(&answer.chunk(Some(" upon"), true)).expect("json");
    assert_eq!(
        (&chunk["object"], &chunk["choices"][0]["text"]),
        (&Value::from("text_completion"), &Value::from(" upon"))
    );
    assert!(chunk.get("usage").is_none(), "no usage field when the client did not ask");
    let embedding = request(Endpoint::Embedding, r#"{"model":"m","input":"text"}"#);
    let answer = Answer { request: &embedding, id: "e".into(), created: 7 };
    let list: Value = serde_json::from_str(&answer.embedding(1)).expect("json");
    assert_eq!(list["data"][0]["embedding"].as_array().map(Vec::len), Some(EMBEDDING_DIMENSIONS));
    assert_eq!(answer.embedding(1), answer.embedding(1), "the same input, the same vector");
}
