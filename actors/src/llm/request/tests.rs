use proptest::prelude::*;

use super::*;

fn chat(body: &str) -> Result<LlmRequest, LlmError> {
    parse(Endpoint::Chat, body.as_bytes(), &Hints::default())
}

#[test]
fn a_chat_request_is_read_and_its_body_kept() {
    let body = r#"{"model":"chat","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":32,"temperature":0,"device":"gpu","seed":7}"#;
    let request = chat(body).expect("valid");
    assert_eq!(request.model, "chat");
    assert!(request.stream && request.include_usage);
    assert_eq!(request.max_tokens, Some(32));
    assert_eq!(request.prompt, "system: Be brief.\nuser: Hi\n");
    assert_eq!(request.requirements.device, DeviceRequirement::Gpu);
    assert_eq!(request.requirements.priority, DEFAULT_PRIORITY);
    assert_eq!(request.body, body.as_bytes(), "the body is kept as sent");
    let engine = String::from_utf8(request.engine_body("qwen").expect("rewritten")).expect("utf-8");
    assert_eq!(engine, body.replacen(r#""model":"chat""#, r#""model":"qwen""#, 1), "only model changes, order kept");
}

#[test]
fn completions_and_embeddings_read_their_prompts() {
    let table = [
        (Endpoint::Completion, r#"{"model":"m","prompt":"Once upon"}"#, "Once upon"),
        (Endpoint::Completion, r#"{"model":"m","prompt":["a","b"]}"#, "a\nb"),
        (Endpoint::Completion, r#"{"model":"m","prompt":[1,2,3]}"#, "<1> <2> <3>"),
        (Endpoint::Completion, r#"{"model":"m","prompt":[[1],[2,3]]}"#, "<1>\n<2> <3>"),
        (Endpoint::Embedding, r#"{"model":"m","input":"text"}"#, "text"),
        (Endpoint::Chat, r#"{"model":"m","messages":[{"role":"assistant","content":null}]}"#, "assistant: \n"),
    ];
    for (endpoint, body, prompt) in table {
        let request = parse(endpoint, body.as_bytes(), &Hints::default()).expect(body);
        assert_eq!(request.prompt, prompt, "{body}");
        assert!(!request.stream);
    }
}

#[test]
fn malformed_requests_are_400s_that_name_the_field() {
    let huge = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"max_tokens":{}}}"#, u64::MAX);
    let table: Vec<(String, Option<&str>, &str)> = vec![
        ("[]".into(), None, "JSON object"),
        ("{".into(), None, "JSON object"),
        ("\"text\"".into(), None, "JSON object"),
        (r#"{"messages":[{"role":"user","content":"x"}]}"#.into(), Some("model"), "model is required"),
        (r#"{"model":7,"messages":[]}"#.into(), Some("model"), "model must be a string"),
        (r#"{"model":"","messages":[]}"#.into(), Some("model"), "must not be empty"),
        (r#"{"model":"m"}"#.into(), Some("messages"), "messages is required"),
        (r#"{"model":"m","messages":"hi"}"#.into(), Some("messages"), "an array of messages"),
        (r#"{"model":"m","messages":[]}"#.into(), Some("messages"), "at least one"),
        (r#"{"model":"m","messages":[{"content":"x"}]}"#.into(), Some("messages"), "each with a role"),
        (r#"{"model":"m","messages":[{"role":"user","content":5}]}"#.into(), Some("messages"), "text or parts"),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#.into(),
            Some("stream"),
            "true or false",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":1}"#.into(),
            Some("stream_options"),
            "an object",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#.into(),
            Some("max_tokens"),
            "1 to",
        ),
        (huge, Some("max_tokens"), "1 to"),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1e30}"#.into(),
            Some("max_tokens"),
            "whole number",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#.into(),
            Some("max_tokens"),
            "whole number",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":999999999}"#.into(),
            Some("max_completion_tokens"),
            "1 to",
        ),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#.into(), Some("n"), "n must be 1 to"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}],"device":"tpu"}"#.into(), Some("device"), "gpu"),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"min_free_vram_mb":-1}"#.into(),
            Some("min_free_vram_mb"),
            "whole number",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"gpu_type":1}"#.into(),
            Some("gpu_type"),
            "a string",
        ),
        (r#"{"model":"m","model":"n","messages":[{"role":"user","content":"x"}]}"#.into(), None, "duplicate field"),
    ];
    for (body, param, needle) in table {
        let error = chat(&body).expect_err(&body);
        assert_eq!(error.status, 400, "{body}");
        assert_eq!(error.param.as_deref(), param, "{body}: {error}");
        assert!(error.message.contains(needle), "{body}: {error}");
    }
    let error = parse(Endpoint::Chat, b"{\"model\":\"\xff\"}", &Hints::default()).expect_err("not utf-8");
    assert!(error.message.contains("UTF-8"), "{error}");
    let error = parse(Endpoint::Completion, br#"{"model":"m","prompt":{}}"#, &Hints::default()).expect_err("object");
    assert_eq!(error.param.as_deref(), Some("prompt"));
    let error = parse(Endpoint::Embedding, br#"{"model":"m"}"#, &Hints::default()).expect_err("no input");
    assert_eq!(error.param.as_deref(), Some("input"));
}

#[test]
fn headers_give_requirements_the_body_does_not() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"x"}],"gpu_type":"H100"}"#;
    let hints = Hints {
        device: Some("cpu".into()),
        min_free_vram_mb: Some("2048".into()),
        gpu_type: Some("A10".into()),
        priority: Some("9".into()),
    };
    let request = parse(Endpoint::Chat, body, &hints).expect("valid");
    let expected = Requirements {
        device: DeviceRequirement::Cpu,
        min_free_vram_mb: 2048,
        gpu_type: Some("H100".into()),
        priority: 9,
    };
    assert_eq!(request.requirements, expected, "the body's gpu_type wins over the header's");
    for bad in [
        Hints { priority: Some("11".into()), ..Hints::default() },
        Hints { min_free_vram_mb: Some("x".into()), ..Hints::default() },
    ] {
        assert_eq!(parse(Endpoint::Chat, body, &bad).expect_err("bad header").status, 400);
    }
}

proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        for endpoint in [Endpoint::Chat, Endpoint::Completion, Endpoint::Embedding] {
            let _ = parse(endpoint, &body, &Hints::default());
        }
    }

    #[test]
    fn arbitrary_json_shapes_never_panic(model in ".{0,8}", content in any::<i64>(), stream in any::<bool>()) {
        let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": stream});
        let _ = parse(Endpoint::Chat, body.to_string().as_bytes(), &Hints::default());
    }
}
