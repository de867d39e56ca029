//! Hostile and malformed client input against a real node: every request
//! gets a 4xx JSON error, and the node stays up and keeps serving.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::time::Duration;

use common::{TestNode, fetch_view, wait_until};
use serde_json::{Value, json};

/// One hostile request: what it is, method, path, extra headers, body.
struct Case {
    what: &'static str,
    method: reqwest::Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn post(what: &'static str, path: &str, body: impl Into<Vec<u8>>) -> Case {
    Case { what, method: reqwest::Method::POST, path: path.to_string(), headers: Vec::new(), body: body.into() }
}

fn infer(what: &'static str, body: impl Into<Vec<u8>>) -> Case {
    post(what, "/v2/models/echo/infer", body)
}

fn infer_json(what: &'static str, body: &Value) -> Case {
    infer(what, body.to_string())
}

/// A request with one input `x`.
fn one_input(shape: Value, datatype: &str, data: Value) -> Value {
    json!({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]})
}

/// A binary-extension request: JSON header then `payload`.
fn binary(what: &'static str, header: &Value, payload: &[u8], declared: Option<String>) -> Case {
    let header = header.to_string();
    let length = declared.unwrap_or_else(|| header.len().to_string());
    let mut body = header.into_bytes();
    body.extend_from_slice(payload);
    let mut case = infer(what, body);
    case.headers.push(("inference-header-content-length", length));
    case
}

fn binary_input(size: Value) -> Value {
    json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": size}}]})
}

fn get(what: &'static str, path: &str) -> Case {
    Case { what, method: reqwest::Method::GET, path: path.to_string(), headers: Vec::new(), body: Vec::new() }
}

fn battery() -> Vec<Case> {
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_parameters =
        format!("{{\"inputs\": [], \"parameters\": {}1{}}}", "{\"a\": ".repeat(5_000), "}".repeat(5_000));
    let many_inputs: Vec<Value> =
        (0..300).map(|i| json!({"name": format!("x{i}"), "shape": [1], "datatype": "FP32", "data": [0.0]})).collect();
    let mut invalid_utf8 = br#"{"inputs": [{"name": ""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid_utf8.extend_from_slice(br#"", "shape": [1], "datatype": "FP32", "data": [1]}]}"#);
    let mut cases = vec![
        // Not JSON, or not an inference request.
        infer("an empty body", ""),
        infer("a truncated object", "{"),
        infer("null", "null"),
        infer("an array", "[]"),
        infer("a string", "\"hello\""),
        infer("trailing garbage", "{\"inputs\": []} xyz"),
        infer("invalid UTF-8", invalid_utf8),
        infer(
            "a lone surrogate escape",
            r#"{"inputs": [{"name": "\udc00", "shape": [1], "datatype": "FP32", "data": [1]}]}"#,
        ),
        infer("NaN is not JSON", r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [NaN]}]}"#),
        infer("10,000 nested arrays", deep),
        infer("5,000 nested parameter objects", deep_parameters),
        // Wrong types.
        infer_json("inputs is a number", &json!({"inputs": 5})),
        infer_json("an input without fields", &json!({"inputs": [{}]})),
        infer_json(
            "a numeric input name",
            &json!({"inputs": [{"name": 7, "shape": [1], "datatype": "FP32", "data": [1]}]}),
        ),
        infer_json("shape is a string", &one_input(json!("1,2"), "FP32", json!([1, 2]))),
        infer_json("shape of floats", &one_input(json!([1.5, 2]), "FP32", json!([1, 2]))),
        infer_json("an unknown datatype", &one_input(json!([1, 2]), "FP128", json!([1, 2]))),
        infer_json("data is null", &one_input(json!([1, 2]), "FP32", Value::Null)),
        infer_json("data is an object", &one_input(json!([1, 2]), "FP32", json!({"a": 1}))),
        infer_json("strings as FP32", &one_input(json!([1, 2]), "FP32", json!(["a", "b"]))),
        infer_json("300 for INT8", &one_input(json!([1, 1]), "INT8", json!([300]))),
        infer_json("-1 for UINT8", &one_input(json!([1, 1]), "UINT8", json!([-1]))),
        infer_json("1.5 for INT32", &one_input(json!([1, 1]), "INT32", json!([1.5]))),
        infer("1e400 for FP64", r#"{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [1e400]}]}"#),
        // Shapes that do not fit their data, or anything.
        infer_json("fewer elements than the shape", &one_input(json!([1, 2]), "FP32", json!([1.0]))),
        infer_json("more elements than the shape", &one_input(json!([1, 2]), "FP32", json!([1.0, 2.0, 3.0]))),
        infer_json("a negative dimension", &one_input(json!([-1, 2]), "FP32", json!([1.0, 2.0]))),
        infer_json(
            "a shape that overflows u64",
            &one_input(json!([4294967296u64, 4294967296u64, 4294967296u64]), "FP32", json!([1.0])),
        ),
        infer_json("an i64::MAX dimension", &one_input(json!([i64::MAX, 2]), "FP32", json!([1.0]))),
        infer_json("more elements than the limit", &one_input(json!([1, 20_000_000]), "FP32", json!([1.0]))),
        infer_json("rank 40", &one_input(json!(vec![1; 40]), "FP32", json!([1.0]))),
        infer_json("300 inputs", &json!({"inputs": many_inputs})),
        // Bad parameters and outputs.
        infer_json(
            "priority 99",
            &json!({"inputs": one_input(json!([1, 1]), "FP32", json!([1]))["inputs"], "parameters": {"priority": 99}}),
        ),
        infer_json(
            "priority as text",
            &json!({"inputs": one_input(json!([1, 1]), "FP32", json!([1]))["inputs"], "parameters": {"priority": "high"}}),
        ),
        infer_json(
            "device tpu",
            &json!({"inputs": one_input(json!([1, 1]), "FP32", json!([1]))["inputs"], "parameters": {"device": "tpu"}}),
        ),
        infer_json(
            "negative min_free_vram_mb",
            &json!({"inputs": one_input(json!([1, 1]), "FP32", json!([1]))["inputs"], "parameters": {"min_free_vram_mb": -5}}),
        ),
        infer_json(
            "binary_data_output as text",
            &json!({"inputs": one_input(json!([1, 1]), "FP32", json!([1]))["inputs"], "parameters": {"binary_data_output": "yes"}}),
        ),
        infer_json(
            "an output's binary_data as 1",
            &json!({"inputs": one_input(json!([1, 1]), "FP32", json!([1]))["inputs"], "outputs": [{"name": "x", "parameters": {"binary_data": 1}}]}),
        ),
        infer_json(
            "an unknown output",
            &json!({"inputs": one_input(json!([1, 1]), "FP32", json!([1]))["inputs"], "outputs": [{"name": "nope"}]}),
        ),
        // The binary tensor extension.
        binary("a non-numeric header length", &binary_input(json!(8)), &[0; 8], Some("abc".into())),
        binary("a negative header length", &binary_input(json!(8)), &[0; 8], Some("-1".into())),
        binary("a header length beyond the body", &binary_input(json!(8)), &[0; 8], Some("100000".into())),
        binary("a header length that cuts the JSON", &binary_input(json!(8)), &[0; 8], Some("10".into())),
        binary("binary_data_size beyond the payload", &binary_input(json!(64)), &[0; 8], None),
        binary("binary_data_size not a whole tensor", &binary_input(json!(7)), &[0; 7], None),
        binary("binary_data_size negative", &binary_input(json!(-8)), &[0; 8], None),
        binary("binary_data_size as text", &binary_input(json!("8")), &[0; 8], None),
        binary("binary bytes nobody claims", &binary_input(json!(8)), &[0; 16], None),
        binary(
            "both data and binary_data_size",
            &json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2], "parameters": {"binary_data_size": 8}}]}),
            &[0; 8],
            None,
        ),
        // Wrong places.
        post("an unknown model", "/v2/models/nope/infer", one_input(json!([1, 1]), "FP32", json!([1])).to_string()),
        post("version 2", "/v2/models/echo/versions/2/infer", one_input(json!([1, 1]), "FP32", json!([1])).to_string()),
        post("a model name that is not UTF-8", "/v2/models/%ff%fe/infer", "{}"),
        get("GET on the infer endpoint", "/v2/models/echo/infer"),
        post("POST on the cluster view", "/cluster", "{}"),
        get("an unknown path", "/v3/everything"),
        post("a job without a model", "/jobs", one_input(json!([1, 1]), "FP32", json!([1])).to_string()),
        post("a job for an unknown model", "/jobs", json!({"model": "nope", "inputs": []}).to_string()),
        post(
            "a job with a numeric idempotency key",
            "/jobs",
            json!({"model": "echo", "idempotency_key": 5, "inputs": []}).to_string(),
        ),
        get("an unknown job id", "/jobs/n9.does-not-exist"),
        get("a job id with dots and slashes", "/jobs/..%2F..%2Fetc%2Fpasswd"),
        get("an unknown job state filter", "/jobs?state=bogus"),
        get("a negative job limit", "/jobs?limit=-1"),
    ];
    let mut oversized = infer("a declared body over the limit", vec![b' '; 16]);
    oversized.headers.push(("content-length", (64 * 1024 * 1024 + 1).to_string()));
    cases.push(oversized);
    cases
}

const LLM_REGISTRY: &str = "\
[[model]]
name = \"chat\"
kind = \"synthetic-llm\"
decode_ms_per_token = 1.0
";

fn chat(what: &'static str, body: impl Into<Vec<u8>>) -> Case {
    post(what, "/v1/chat/completions", body)
}

fn chat_with(what: &'static str, field: &str, value: Value) -> Case {
    let mut body = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]});
    body[field] = value;
    chat(what, body.to_string())
}

/// Hostile and malformed OpenAI requests: each must get an OpenAI-shaped 4xx.
fn openai_battery() -> Vec<Case> {
    let mut invalid_utf8 = br#"{"model": "chat", "messages": [{"role": "user", "content": ""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid_utf8.extend_from_slice(br#""}]}"#);
    let deep = format!(r#"{{"model": "chat", "messages": {}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    let mut cases = vec![
        chat("an empty body", ""),
        chat("a truncated object", "{"),
        chat("null", "null"),
        chat("an array", "[]"),
        chat("a string", "\"hello\""),
        chat("invalid UTF-8", invalid_utf8),
        chat("no model", json!({"messages": [{"role": "user", "content": "hi"}]}).to_string()),
        chat_with("a numeric model", "model", json!(7)),
        chat_with("an empty model", "model", json!("")),
        chat_with("an unknown model", "model", json!("nope")),
        chat("no messages", json!({"model": "chat"}).to_string()),
        chat_with("messages as a string", "messages", json!("hi")),
        chat_with("no message", "messages", json!([])),
        chat_with("a message without a role", "messages", json!([{"content": "hi"}])),
        chat_with("numeric content", "messages", json!([{"role": "user", "content": 5}])),
        chat("messages nested 10,000 deep", deep),
        chat_with("stream as a string", "stream", json!("yes")),
        chat_with("stream_options as a number", "stream_options", json!(1)),
        chat_with("max_tokens 0", "max_tokens", json!(0)),
        chat_with("a huge max_tokens", "max_tokens", json!(1_000_000_000_000u64)),
        chat_with("a negative max_tokens", "max_tokens", json!(-5)),
        chat_with("a fractional max_tokens", "max_tokens", json!(2.5)),
        chat_with("a huge max_completion_tokens", "max_completion_tokens", json!(u64::MAX)),
        chat_with("n 0", "n", json!(0)),
        chat_with("n 1000", "n", json!(1000)),
        chat_with("an unknown device", "device", json!("tpu")),
        chat_with("a negative min_free_vram_mb", "min_free_vram_mb", json!(-1)),
        chat(
            "a duplicate model field",
            r#"{"model": "chat", "model": "x", "messages": [{"role": "user", "content": "hi"}]}"#,
        ),
        post("a completion without a prompt", "/v1/completions", json!({"model": "chat"}).to_string()),
        post(
            "a completion with an object prompt",
            "/v1/completions",
            json!({"model": "chat", "prompt": {}}).to_string(),
        ),
        post("an embedding without input", "/v1/embeddings", json!({"model": "chat"}).to_string()),
        get("GET on chat completions", "/v1/chat/completions"),
        get("an unknown /v1 path", "/v1/assistants"),
    ];
    let mut priority = chat_with("a priority header of 99", "model", json!("chat"));
    priority.headers.push(("x-gpumesh-priority", "99".into()));
    cases.push(priority);
    let mut oversized = chat("a prompt over the body limit", vec![b' '; 16]);
    oversized.headers.push(("content-length", (64 * 1024 * 1024 + 1).to_string()));
    cases.push(oversized);
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_openai_request_gets_an_openai_4xx_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = dir.path().join("models.toml");
    std::fs::write(&registry, LLM_REGISTRY).expect("registry");
    let mut node = TestNode::solo(dir.path(), Some(&registry));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    wait_until("the node answers", Duration::from_secs(10), || fetch_view(&client, &node.url)).await;
    let cases = openai_battery();
    assert!(cases.len() >= 30, "the battery has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut request =
            client.request(case.method.clone(), format!("{}{}", node.url, case.path)).body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let outcome = match request.send().await {
            Err(error) => Err(format!("no answer: {error}")),
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let json: Option<Value> = serde_json::from_str(&text).ok();
                let error = json.as_ref().map(|json| &json["error"]);
                let shaped = error.is_some_and(|e| e["message"].is_string() && e["type"].is_string());
                match (status, shaped) {
                    (400..=499, true) => Ok((status, error.map(|e| e["message"].to_string()).unwrap_or_default())),
                    (status, _) => Err(format!("{status} {text:.200}")),
                }
            }
        };
        match outcome {
            Ok((status, message)) => eprintln!("{status} {:<40} {message:.110}", case.what),
            Err(why) => failures.push(format!("{}: {why}", case.what)),
        }
        assert!(node.is_running(), "the node died on: {}", case.what);
    }
    assert!(failures.is_empty(), "not an OpenAI-shaped 4xx:\n{}", failures.join("\n"));
    let valid = json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let response = client.post(format!("{}/v1/chat/completions", node.url)).json(&valid).send().await.expect("up");
    assert_eq!(response.status(), 200, "the node still serves after {} hostile requests", cases.len());
    eprintln!(
        "measured: {} hostile OpenAI requests, every one an OpenAI-shaped 4xx; the node kept serving",
        cases.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_request_gets_a_4xx_json_error_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = dir.path().join("models.toml");
    std::fs::write(&registry, common::ECHO_REGISTRY).expect("registry");
    let mut node = TestNode::solo(dir.path(), Some(&registry));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    wait_until("the node answers", Duration::from_secs(10), || fetch_view(&client, &node.url)).await;
    let cases = battery();
    assert!(cases.len() >= 40, "the battery has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let mut request =
            client.request(case.method.clone(), format!("{}{}", node.url, case.path)).body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let outcome = match request.send().await {
            Err(error) => Err(format!("no answer: {error}")),
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let json: Option<Value> = serde_json::from_str(&text).ok();
                let message = json.as_ref().and_then(|j| j["error"].as_str()).map(String::from);
                match (status, message) {
                    (400..=499, Some(message)) => Ok((status, message)),
                    (status, _) => Err(format!("{status} {text:.200}")),
                }
            }
        };
        match outcome {
            Ok((status, message)) => eprintln!("{status} {:<40} {message:.110}", case.what),
            Err(why) => failures.push(format!("{}: {why}", case.what)),
        }
        assert!(node.is_running(), "the node died on: {}", case.what);
    }
    assert!(failures.is_empty(), "not a 4xx JSON error:\n{}", failures.join("\n"));
    let valid = one_input(json!([1, 2]), "FP32", json!([1.5, -2.0]));
    let response = client.post(format!("{}/v2/models/echo/infer", node.url)).json(&valid).send().await.expect("up");
    assert_eq!(response.status(), 200, "the node still serves after {} hostile requests", cases.len());
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["outputs"][0]["data"], json!([1.5, -2.0]));
    eprintln!("measured: {} hostile requests, every one a 4xx JSON error; the node kept serving", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_missing_wrong_and_right() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = dir.path().join("models.toml");
    std::fs::write(&registry, common::ECHO_REGISTRY).expect("registry");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# clients\nfirst-client-token-0123456789\n\nsecond-client-token-abcdefgh\n")
        .expect("tokens");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let token_arg = tokens.display().to_string();
    let node = TestNode::start_with(
        &common::NodeSpec {
            name: Some("guarded"),
            dir: dir.path(),
            data_dir_name: "guarded",
            secret: None,
            seeds: &[],
            ports: common::free_ports(),
            models: Some(&registry),
        },
        &["--api-token-file", &token_arg],
    );
    let client = reqwest::Client::new();
    let url = node.url.clone();
    wait_until("the node is live", Duration::from_secs(10), || async {
        let live = client.get(format!("{url}/v2/health/live")).send().await.ok()?;
        (live.status() == 200).then_some(())
    })
    .await;
    assert_eq!(
        client.get(format!("{url}/v2/health/ready")).send().await.expect("up").status(),
        200,
        "health stays open"
    );

    let valid = one_input(json!([1, 2]), "FP32", json!([1.5, -2.0]));
    let infer_url = format!("{url}/v2/models/echo/infer");
    let guarded = [
        client.get(format!("{url}/cluster")),
        client.get(format!("{url}/metrics")),
        client.get(format!("{url}/")),
        client.get(format!("{url}/events")),
        client.get(format!("{url}/jobs")),
        client.post(&infer_url).json(&valid),
    ];
    for request in guarded {
        let request = request.build().expect("request");
        let path = request.url().path().to_string();
        for (what, header) in [("no token", None), ("a wrong token", Some("Bearer first-client-token-012345678X"))] {
            let mut attempt = client.request(request.method().clone(), request.url().clone());
            if let Some(header) = header {
                attempt = attempt.header("authorization", header);
            }
            if let Some(body) = request.body().and_then(|b| b.as_bytes()) {
                attempt = attempt.body(body.to_vec());
            }
            let response = attempt.send().await.expect("answers");
            assert_eq!(response.status(), 401, "{path} with {what}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.expect("JSON error");
            assert!(body["error"].as_str().is_some_and(|e| e.contains("token")), "{path}: {body}");
        }
    }
    for token in ["first-client-token-0123456789", "second-client-token-abcdefgh"] {
        let response = client.post(&infer_url).bearer_auth(token).json(&valid).send().await.expect("answers");
        assert_eq!(response.status(), 200, "a listed token is accepted");
        let cluster = client.get(format!("{url}/cluster")).bearer_auth(token).send().await.expect("answers");
        assert_eq!(cluster.status(), 200);
    }
    // A browser opens the page once with the token in its address: it gets
    // a session cookie and the address without the token.
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let opened = browser.get(format!("{url}/?token=second-client-token-abcdefgh")).send().await.expect("answers");
    assert_eq!(opened.status(), 303, "a browser passes the token in the address once");
    assert_eq!(opened.headers()["location"], "/", "and is sent to an address without it");
    let cookie = opened.headers()["set-cookie"].to_str().expect("ascii").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("second-client-token"), "the cookie is not the token: {cookie}");
    let session = cookie.split(';').next().expect("name=value").to_string();
    let with_session = |method: reqwest::Method, path: &str| {
        browser.request(method, format!("{url}{path}")).header("cookie", session.clone()).send()
    };
    let page = with_session(reqwest::Method::GET, "/").await.expect("answers");
    assert_eq!(page.status(), 200, "the page goes by the cookie");
    let page = page.text().await.expect("html");
    assert!(!page.contains("token="), "the page builds no address with a token");
    let events = with_session(reqwest::Method::GET, "/events").await.expect("answers");
    assert_eq!(events.status(), 200, "and its event stream");
    assert!(events.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
    drop(events);
    let write = with_session(reqwest::Method::POST, "/jobs").await.expect("answers");
    assert_eq!(write.status(), 401, "a session reads; it does not write");
    let forged = browser.get(format!("{url}/")).header("cookie", "gpumesh_session=00ff").send().await.expect("answers");
    assert_eq!(forged.status(), 401, "a made-up session is refused");
    let wrong_page = browser.get(format!("{url}/?token=guess")).send().await.expect("answers");
    assert_eq!(wrong_page.status(), 401);

    // The command-line clients send GPUMESH_API_TOKEN.
    let status = |token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gpumesh"));
        command.args(["status", "--node", &url]);
        match token {
            Some(token) => command.env("GPUMESH_API_TOKEN", token),
            None => command.env_remove("GPUMESH_API_TOKEN"),
        };
        command.output().expect("gpumesh status runs")
    };
    let refused = status(None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("token"), "{}", String::from_utf8_lossy(&refused.stderr));
    let allowed = status(Some("first-client-token-0123456789"));
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("guarded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = dir.path().join("models.toml");
    std::fs::write(&registry, common::ECHO_REGISTRY).expect("registry");
    let spec = common::NodeSpec {
        name: Some("tight"),
        dir: dir.path(),
        data_dir_name: "tight",
        secret: None,
        seeds: &[],
        ports: common::free_ports(),
        models: Some(&registry),
    };
    let limits =
        ["--max-body-bytes", "2048", "--max-tensor-elements", "10", "--max-inputs", "2", "--max-connections", "2"];
    let node = TestNode::start_with(&spec, &limits);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    let url = node.url.clone();
    wait_until("the node answers", Duration::from_secs(10), || fetch_view(&client, &url)).await;
    let infer_url = format!("{url}/v2/models/echo/infer");
    let send = |body: Value| {
        let (client, infer_url) = (client.clone(), infer_url.clone());
        async move {
            let response = client.post(&infer_url).json(&body).send().await.expect("answers");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("JSON");
            (status, body["error"].as_str().unwrap_or_default().to_string())
        }
    };
    assert_eq!(send(one_input(json!([1, 10]), "FP32", json!(vec![1.0; 10]))).await.0, 200, "at the limits");
    let (status, error) = send(one_input(json!([1, 11]), "FP32", json!(vec![1.0; 11]))).await;
    assert!(status == 400 && error.contains("more than 10 elements"), "{status} {error}");
    let three: Vec<Value> =
        (0..3).map(|i| json!({"name": format!("x{i}"), "shape": [1], "datatype": "FP32", "data": [1.0]})).collect();
    let (status, error) = send(json!({"inputs": three})).await;
    assert!(status == 400 && error.contains("at most 2 inputs"), "{status} {error}");
    let (status, error) = send(json!({"inputs": [], "padding": "x".repeat(3000)})).await;
    assert!(status == 413 && error.contains("--max-body-bytes"), "{status} {error}");

    // Two connections that never finish a request hold both slots: a third
    // client waits until one of them goes away.
    let address = url.trim_start_matches("http://").to_string();
    let hold = || {
        use std::io::Write as _;
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n").expect("partial request");
        stream
    };
    // reqwest's pool may hold a connection from above: drop it first.
    drop(client);
    let fresh = || reqwest::Client::builder().timeout(Duration::from_millis(800)).build().expect("client");
    let (first, second) = (hold(), hold());
    let waiting = fresh().get(format!("{url}/v2/health/live")).send().await;
    assert!(waiting.is_err(), "a third connection was served while two held the slots: {waiting:?}");
    drop(first);
    let served = wait_until("a slot frees up", Duration::from_secs(5), || async {
        fresh().get(format!("{url}/v2/health/live")).send().await.ok().filter(|r| r.status() == 200)
    })
    .await;
    assert_eq!(served.status(), 200);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_idle_timeout() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = common::NodeSpec {
        name: Some("idle"),
        dir: dir.path(),
        data_dir_name: "idle",
        secret: None,
        seeds: &[],
        ports: common::free_ports(),
        models: None,
    };
    let node = TestNode::start_with(&spec, &["--max-connections", "1", "--idle-timeout-secs", "1"]);
    let client = reqwest::Client::new();
    wait_until("the node answers", Duration::from_secs(10), || fetch_view(&client, &node.url)).await;
    drop(client);
    // A connection that says nothing takes the only slot, then loses it.
    let mut silent = std::net::TcpStream::connect(node.url.trim_start_matches("http://")).expect("connect");
    silent.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let opened = tokio::time::Instant::now();
    let read = silent.read(&mut [0u8; 64]);
    assert!(matches!(read, Ok(0) | Err(_)), "the node closed the silent connection: {read:?}");
    let after = opened.elapsed();
    assert!(after < Duration::from_secs(5), "closed after {after:?}, the idle timeout is 1 s");
    let served = wait_until("the slot serves another client", Duration::from_secs(5), || async {
        reqwest::Client::new()
            .get(format!("{}/v2/health/live", node.url))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    assert_eq!(served.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intruder_with_another_secret_gets_no_work_and_cannot_steer_routing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slow = "[[model]]\nname = \"m\"\nkind = \"synthetic\"\nservice_time_ms = 20\nmax_batch_size = 1\n";
    let nodes = common::start_with_registries(dir.path(), &[slow.to_string(), slow.to_string()]);
    // The intruder serves the same model, claims to be fast and idle, and
    // alone serves `bait`.
    let intruder_registry = dir.path().join("intruder.toml");
    let fast = "[[model]]\nname = \"m\"\nkind = \"synthetic\"\nservice_time_ms = 0\n\n[[model]]\nname = \"bait\"\nkind = \"synthetic\"\nservice_time_ms = 0\n";
    std::fs::write(&intruder_registry, fast).expect("registry");
    let other_secret = common::write_secret(dir.path(), "other-secret");
    let mut intruder = TestNode::start(&common::NodeSpec {
        name: Some("intruder"),
        dir: dir.path(),
        data_dir_name: "intruder",
        secret: Some(&other_secret),
        seeds: &[nodes[0].gossip.clone()],
        ports: common::free_ports(),
        models: Some(&intruder_registry),
    });
    let client = reqwest::Client::new();
    let first = nodes[0].url.clone();
    wait_until("n1 sees n2 linked and the intruder in gossip", Duration::from_secs(15), || async {
        let view = fetch_view(&client, &first).await?;
        let n2 = view
            .nodes
            .iter()
            .any(|n| n.name == "n2" && n.status.as_str() == "alive" && n.connected && !n.models.is_empty());
        let intruder = view.nodes.iter().any(|n| n.name == "intruder");
        (n2 && intruder).then_some(())
    })
    .await;
    let body = one_input(json!([1, 1]), "FP32", json!([1.0]));
    let mut ran_on = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        let response = client.post(format!("{first}/v2/models/m/infer")).json(&body).send().await.expect("answers");
        assert_eq!(response.status(), 200);
        let node = response.headers()["x-gpumesh-node"].to_str().expect("ascii").to_string();
        *ran_on.entry(node).or_default() += 1;
    }
    assert!(!ran_on.contains_key("intruder"), "the intruder got work: {ran_on:?}");
    let bait = client.post(format!("{first}/v2/models/bait/infer")).json(&body).send().await.expect("answers");
    assert_eq!(bait.status(), 404, "a model only the intruder claims is unknown to the cluster");
    let decisions: Value =
        client.get(format!("{first}/cluster/decisions")).send().await.expect("up").json().await.expect("json");
    let decisions = decisions["decisions"].as_array().expect("decisions");
    assert!(decisions.iter().all(|d| d["chosen"] != "intruder"), "the intruder is never chosen");
    let intruder_entries: Vec<&Value> = decisions
        .iter()
        .flat_map(|d| d["candidates"].as_array().expect("candidates"))
        .filter(|c| c["node"] == "intruder")
        .collect();
    assert!(
        intruder_entries.iter().all(|c| c["excluded"].is_string() && c["score"].is_null()),
        "the intruder is listed only as excluded, never scored: {intruder_entries:?}"
    );
    let view = fetch_view(&client, &first).await.expect("view");
    let entry = view.nodes.iter().find(|n| n.name == "intruder").expect("listed");
    assert!(
        !entry.trusted && entry.models.is_empty() && entry.gpus.is_empty(),
        "nothing it gossips reaches the view: {entry:?}"
    );
    assert_eq!(view.totals.nodes_alive, 2);
    assert!(intruder.is_running());
    // The operator is told why, in words that name the fix.
    let log = nodes[0].log_text();
    let warned = log.lines().any(|l| l.contains("signed with another cluster secret") && l.contains("node=intruder"));
    assert!(
        warned,
        "n1 warns about the intruder's secret:\n{}",
        log.lines().filter(|l| l.contains("intruder")).collect::<Vec<_>>().join("\n")
    );
    eprintln!("measured: 30 requests ran on {ran_on:?}; the intruder got none");
}
