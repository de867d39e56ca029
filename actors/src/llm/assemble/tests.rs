use serde_json::json;

use super::*;

#[test]
fn a_chat_stream_becomes_the_answer_it_would_have_been() {
    let mut whole = Assembler::new(Endpoint::Chat);
    let chunks = [
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]}),
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": null}]}),
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m", "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
    ];
    for chunk in &chunks {
        whole.add(&chunk.to_string());
    }
    whole.add("not json");
    assert_eq!(
        whole.finish(),
        json!({"id": "c1", "object": "chat.completion", "created": 7, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
    );
}

#[test]
fn tool_calls_arrive_in_pieces_and_completions_have_text() {
    let mut whole = Assembler::new(Endpoint::Chat);
    let call = |piece: serde_json::Value| json!({"choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]});
    whole.add(
        &call(json!({"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}))
            .to_string(),
    );
    whole.add(&call(json!({"index": 0, "function": {"arguments": ": 1}"}})).to_string());
    whole.add(&json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}).to_string());
    let answer = whole.finish();
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"],
        json!([{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}])
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");

    let mut whole = Assembler::new(Endpoint::Completion);
    for (index, text) in [(0, "a"), (1, "x"), (0, "b")] {
        whole.add(&json!({"id": "p", "choices": [{"index": index, "text": text, "finish_reason": null}]}).to_string());
    }
    let answer = whole.finish();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], "ab");
    assert_eq!(answer["choices"][1]["text"], "x");
}
