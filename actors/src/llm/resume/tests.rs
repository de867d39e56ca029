use serde_json::{Value, json};

use super::*;
use crate::llm::request::{Hints, parse};

fn chat(body: Value) -> LlmRequest {
    parse(Endpoint::Chat, body.to_string().as_bytes(), &Hints::default()).expect("valid")
}

fn sent() -> Resume {
    Resume { text: " the mesh".into(), tokens: 2, ids: vec![] }
}

#[test]
fn a_chat_continues_from_the_text_as_its_final_assistant_message() {
    let request = chat(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "temperature": 0, "stream": true}),
    );
    let body: Value = serde_json::from_slice(&text_continuation(&request, &sent()).expect("body")).expect("json");
    assert_eq!(body["messages"][1], json!({"role": "assistant", "content": " the mesh"}));
    assert_eq!((&body["continue_final_message"], &body["add_generation_prompt"]), (&json!(true), &json!(false)));
    assert_eq!(body["max_tokens"], 8, "what is left of 10");
    assert_eq!((&body["temperature"], &body["stream"]), (&json!(0), &json!(true)), "the rest as the client sent it");
    let completion =
        parse(Endpoint::Completion, br#"{"model":"m","prompt":"Once","max_completion_tokens":3}"#, &Hints::default())
            .expect("valid");
    let body: Value = serde_json::from_slice(&text_continuation(&completion, &sent()).expect("body")).expect("json");
    assert_eq!((&body["prompt"], &body["max_tokens"]), (&json!("Once the mesh"), &json!(1)));
    assert!(body.get("max_completion_tokens").is_none());
}

#[test]
fn llama_cpp_continues_at_the_token_level_with_the_clients_sampling() {
    let request = chat(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "temperature": 0, "seed": 7, "stream": true, "stream_options": {"include_usage": true}}),
    );
    let body: Value =
        serde_json::from_slice(&native_continuation(&request, &sent(), &[1, 2, 3]).expect("body")).expect("json");
    assert_eq!(body["prompt"], json!([1, 2, 3]));
    assert_eq!(body["n_predict"], 8);
    assert_eq!((&body["temperature"], &body["seed"], &body["stream"]), (&json!(0), &json!(7), &json!(true)));
    for gone in ["messages", "model", "max_tokens", "stream_options"] {
        assert!(body.get(gone).is_none(), "{gone} is not a /completion field");
    }
}

#[test]
fn native_chunks_read_as_openai_chunks() {
    let request = chat(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}),
    );
    let content = from_native(&request, r#"{"content":" sky","stop":false,"tokens":[5]}"#).expect("chunk");
    assert_eq!(content[0].tokens, vec![5], "the ids go on with the piece");
    let content: Value = serde_json::from_str(&content[0].data).expect("json");
    assert_eq!(content["choices"][0]["delta"]["content"], " sky");
    let last = from_native(&request, r#"{"content":"","stop":true,"stop_type":"limit","tokens_predicted":4,"tokens_evaluated":30,"timings":{"cache_n":28}}"#).expect("end");
    assert_eq!(last.len(), 2, "finish and usage");
    let finish: Value = serde_json::from_str(&last[0].data).expect("json");
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage: Value = serde_json::from_str(&last[1].data).expect("json");
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34, "prompt_tokens_details": {"cached_tokens": 28}})
    );
    let eos: Value = serde_json::from_str(
        &from_native(&request, r#"{"content":"","stop":true,"stop_type":"eos"}"#).expect("end")[0].data,
    )
    .expect("json");
    assert_eq!(eos["choices"][0]["finish_reason"], "stop");
    assert!(from_native(&request, "not json").is_err());
}

#[test]
fn a_resume_counts_tokens_by_their_ids_where_pieces_tell_them() {
    let mut sent = Resume::default();
    sent.add(" the", &[259]);
    sent.add(" mesh node", &[260, 261]);
    assert_eq!((sent.tokens, sent.exact_ids()), (3, Some(&[259, 260, 261][..])));
    sent.add("", &[]);
    assert_eq!(sent.tokens, 3, "a piece with no text and no ids is no token");
    sent.add(" sky", &[]);
    assert_eq!(
        (sent.text.as_str(), sent.tokens, sent.exact_ids()),
        (" the mesh node sky", 4, None),
        "one piece without ids: not exact"
    );
    assert_eq!(Resume::default().exact_ids(), None);
}

#[test]
fn llama_cpp_streams_ask_for_token_ids_and_clients_do_not_see_them() {
    let body = br#"{"model":"m","messages":[],"stream":true}"#.to_vec();
    let (asked, ours) = ask_token_ids(Endpoint::Chat, body).expect("body");
    let asked: Value = serde_json::from_slice(&asked).expect("json");
    assert!(ours);
    assert_eq!(
        (&asked["logprobs"], &asked["top_logprobs"], &asked["post_sampling_probs"]),
        (&json!(true), &json!(1), &json!(true))
    );
    let (asked, _) = ask_token_ids(Endpoint::Completion, br#"{"prompt":"x"}"#.to_vec()).expect("body");
    assert_eq!(serde_json::from_slice::<Value>(&asked).expect("json")["logprobs"], 1);
    let own = br#"{"messages":[],"logprobs":true,"top_logprobs":3}"#.to_vec();
    assert_eq!(
        ask_token_ids(Endpoint::Chat, own.clone()).expect("body"),
        (own, false),
        "a client's own request as it is"
    );

    let chunk = json!({"id": "c", "choices": [{"index": 0, "delta": {"content": " often"},
        "logprobs": {"content": [{"id": 318, "token": " often", "prob": 1.0}]}}]})
    .to_string();
    let piece = with_token_ids(chunk.clone(), true);
    assert_eq!(piece.tokens, vec![318]);
    let data: Value = serde_json::from_str(&piece.data).expect("json");
    assert!(data["choices"][0].get("logprobs").is_none(), "gpumesh's own ask is not the client's: {data}");
    assert_eq!(data["choices"][0]["delta"]["content"], " often");
    let kept = with_token_ids(chunk.clone(), false);
    assert_eq!((kept.data, kept.tokens), (chunk, vec![318]), "the client's logprobs stay");
    assert_eq!(with_token_ids("not json".into(), true), Piece::new("not json".into()));
}

#[test]
fn a_continuation_asks_only_for_what_is_left() {
    let hi = json!([{"role": "user", "content": "hi"}]);
    let request = chat(json!({"model": "m", "messages": hi, "max_tokens": 2}));
    assert_eq!(remaining(&request, &sent()), Some(0));
    let end = nothing_left(&chat(
        json!({"model": "m", "messages": hi, "stream": true, "stream_options": {"include_usage": true}}),
    ));
    assert_eq!(end.len(), 2, "finish and usage");
    let finish: Value = serde_json::from_str(&end[0].data).expect("json");
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let unbounded = chat(json!({"model": "m", "messages": hi}));
    assert_eq!(remaining(&unbounded, &sent()), None);
}
