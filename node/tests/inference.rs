//! Inference on a real node process: outputs equal to onnxruntime run
//! directly (Python, from the project's .venv), over JSON and the binary
//! extension; batching under concurrency; errors; a missing runtime.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::engine::{python, repo};
use common::{TestNode, free_ports, wait_until};
use serde_json::{Value, json};

const TOLERANCE: f64 = 1e-5;

/// Runs a Python snippet in the .venv and parses what it prints as JSON.
fn python_json(script: &str) -> Value {
    let output = Command::new(python()).arg("-c").arg(script).current_dir(repo()).output().expect("python runs");
    assert!(output.status.success(), "python failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("python prints JSON")
}

fn write_registry(dir: &Path) -> PathBuf {
    let models = repo().join("models");
    let text = format!(
        r#"
[[model]]
name = "tiny"
path = "{models}/tiny.onnx"
max_batch_size = 32
max_queue_delay_us = 20000

[[model]]
name = "multi"
path = "{models}/multi.onnx"
max_batch_size = 0

[[model]]
name = "dtypes"
path = "{models}/dtypes.onnx"
max_batch_size = 8

[[model]]
name = "slow"
kind = "synthetic"
service_time_ms = 400
max_batch_size = 1
max_queue_size = 1

[[model]]
name = "fragile"
kind = "synthetic"
service_time_ms = 1
max_batch_size = 4
panic_on_input = 13.0
"#,
        models = models.display()
    );
    let path = dir.join("models.toml");
    std::fs::write(&path, text).expect("write registry");
    path
}

struct Solo {
    _dir: tempfile::TempDir,
    node: TestNode,
    client: reqwest::Client,
}

async fn solo() -> Solo {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = write_registry(dir.path());
    let node = TestNode::solo(dir.path(), Some(&registry));
    let client = reqwest::Client::new();
    let url = node.url.clone();
    wait_until("node ready", Duration::from_secs(10), || async {
        let response = client.get(format!("{url}/v2/health/ready")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    Solo { _dir: dir, node, client }
}

impl Solo {
    async fn infer_json(&self, model: &str, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .client
            .post(format!("{}/v2/models/{model}/infer", self.node.url))
            .json(body)
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, response.json().await.expect("JSON body"), headers)
    }

    /// Sends `header` + `payload` with the binary extension; returns the
    /// response header and each output's binary bytes by name.
    async fn infer_binary(&self, model: &str, header: &Value, payload: Vec<u8>) -> (Value, Vec<(String, Vec<u8>)>) {
        let header = serde_json::to_vec(header).expect("json");
        let mut body = header.clone();
        body.extend(payload);
        let response = self
            .client
            .post(format!("{}/v2/models/{model}/infer", self.node.url))
            .header("Inference-Header-Content-Length", header.len())
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 200);
        let length: usize =
            response.headers()["inference-header-content-length"].to_str().expect("ascii").parse().expect("length");
        let bytes = response.bytes().await.expect("body");
        let meta: Value = serde_json::from_slice(&bytes[..length]).expect("header JSON");
        let mut offset = length;
        let mut outputs = Vec::new();
        for output in meta["outputs"].as_array().expect("outputs") {
            let size = output["parameters"]["binary_data_size"].as_u64().expect("binary output") as usize;
            outputs.push((output["name"].as_str().expect("name").to_string(), bytes[offset..offset + size].to_vec()));
            offset += size;
        }
        (meta, outputs)
    }
}

fn floats(value: &Value) -> Vec<f64> {
    value.as_array().expect("array").iter().map(|v| v.as_f64().expect("number")).collect()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (index, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= TOLERANCE, "{what}[{index}]: got {g}, onnxruntime gives {w}");
    }
}

fn f32_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect()
}

fn f32_from_bytes(bytes: &[u8]) -> Vec<f64> {
    bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes")))).collect()
}

const REFERENCE: &str = r#"
import json, numpy as np, onnxruntime as ort
rng = np.random.RandomState(3)
x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
tiny = ort.InferenceSession("models/tiny.onnx").run(None, {"input": x})[0]
a = rng.standard_normal((2, 4)).astype(np.float32)
b = rng.randint(-5, 5, (2, 4)).astype(np.int64)
scale = np.array(1.5, np.float32)
s, c, m = ort.InferenceSession("models/multi.onnx").run(None, {"a": a, "b": b, "scale": scale})
print(json.dumps({"x": x.ravel().tolist(), "tiny": tiny.ravel().tolist(), "a": a.ravel().tolist(), "b": b.ravel().tolist(),
                  "sum": s.ravel().tolist(), "count": c.tolist(), "mask": m.ravel().tolist()}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_equal_onnxruntime_over_json_and_binary() {
    let reference = python_json(REFERENCE);
    let solo = solo().await;

    let x = floats(&reference["x"]);
    let body = json!({"inputs": [{"name": "input", "shape": [3, 3, 32, 32], "datatype": "FP32", "data": x}]});
    let (status, response, headers) = solo.infer_json("tiny", &body).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["outputs"][0]["shape"], json!([3, 10]));
    assert_close(&floats(&response["outputs"][0]["data"]), &floats(&reference["tiny"]), "tiny over JSON");
    assert_eq!(response["parameters"]["gpumesh_node"], "solo");
    assert_eq!(response["parameters"]["gpumesh_device"], "cpu");
    assert_eq!(response["parameters"]["gpumesh_route"], "solo");
    assert_eq!(headers["x-gpumesh-node"], "solo");
    assert!(response["parameters"]["gpumesh_compute_ms"].as_f64().is_some());

    let header = json!({"inputs": [{"name": "input", "shape": [3, 3, 32, 32], "datatype": "FP32",
        "parameters": {"binary_data_size": x.len() * 4}}], "parameters": {"binary_data_output": true}});
    let (_, outputs) = solo.infer_binary("tiny", &header, f32_bytes(&x)).await;
    assert_close(&f32_from_bytes(&outputs[0].1), &floats(&reference["tiny"]), "tiny over binary");

    let multi = json!({"inputs": [
        {"name": "a", "shape": [2, 4], "datatype": "FP32", "data": reference["a"]},
        {"name": "b", "shape": [2, 4], "datatype": "INT64", "data": reference["b"]},
        {"name": "scale", "shape": [], "datatype": "FP32", "data": [1.5]}]});
    let (status, response, _) = solo.infer_json("multi", &multi).await;
    assert_eq!(status, 200, "{response}");
    let outputs = response["outputs"].as_array().expect("outputs");
    let by_name = |name: &str| outputs.iter().find(|o| o["name"] == name).expect("output present").clone();
    assert_close(&floats(&by_name("sum")["data"]), &floats(&reference["sum"]), "multi sum over JSON");
    assert_eq!(by_name("count")["datatype"], "INT64");
    assert_eq!(by_name("count")["data"], reference["count"]);
    assert_eq!(by_name("mask")["datatype"], "BOOL");
    assert_eq!(by_name("mask")["data"], reference["mask"]);

    let a = floats(&reference["a"]);
    let b: Vec<i64> = reference["b"].as_array().expect("b").iter().map(|v| v.as_i64().expect("int")).collect();
    let mut payload = f32_bytes(&a);
    payload.extend(b.iter().flat_map(|v| v.to_le_bytes()));
    payload.extend(1.5f32.to_le_bytes());
    let header = json!({"inputs": [
        {"name": "a", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}},
        {"name": "b", "shape": [2, 4], "datatype": "INT64", "parameters": {"binary_data_size": 64}},
        {"name": "scale", "shape": [], "datatype": "FP32", "parameters": {"binary_data_size": 4}}],
        "outputs": [{"name": "sum", "parameters": {"binary_data": true}}, {"name": "count", "parameters": {"binary_data": true}}]});
    let (meta, outputs) = solo.infer_binary("multi", &header, payload).await;
    assert_eq!(meta["outputs"].as_array().map(Vec::len), Some(2), "only the requested outputs");
    assert_close(&f32_from_bytes(&outputs[0].1), &floats(&reference["sum"]), "multi sum over binary");
    let count: Vec<i64> = outputs[1].1.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8"))).collect();
    assert_eq!(json!(count), reference["count"]);

    // The metrics actor publishes each model's device and measured service
    // time through gossip.
    let (client, url) = (&solo.client, &solo.node.url);
    wait_until("tiny's service time reaches /cluster", Duration::from_secs(5), || async {
        let view = common::fetch_view(client, url).await?;
        let tiny = view.nodes.first()?.models.iter().find(|m| m.name == "tiny")?.clone();
        (tiny.device == "cpu" && tiny.service_ms_per_item > 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datatype_round_trips_over_json_and_binary() {
    let solo = solo().await;
    // name, JSON values, little-endian bytes of the same values
    let cases: Vec<(&str, Value, Vec<u8>)> = vec![
        (
            "fp32",
            json!([0.5, -1.25, 3.0, 0.0]),
            [0.5f32, -1.25, 3.0, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "fp16",
            json!([0.5, -1.25, 2.0, 1.0]),
            [0x3800u16, 0xBD00, 0x4000, 0x3C00].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "fp64",
            json!([0.1, -2.5, 1e300, 0.0]),
            [0.1f64, -2.5, 1e300, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        ("int8", json!([-128, 127, 0, 1]), [-128i8, 127, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ("int16", json!([-300, 300, 0, 1]), [-300i16, 300, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect()),
        (
            "int32",
            json!([-70000, 70000, 0, 1]),
            [-70000i32, 70000, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        (
            "int64",
            json!([-5, 9007199254740993i64, 0, 1]),
            [-5i64, 9_007_199_254_740_993, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        ("uint8", json!([0, 255, 7, 1]), vec![0u8, 255, 7, 1]),
        ("bool", json!([true, false, false, true]), vec![1u8, 0, 0, 1]),
    ];
    let datatype = |name: &str| name.to_uppercase();
    let inputs: Vec<Value> = cases
        .iter()
        .map(|(name, data, _)| json!({"name": format!("in_{name}"), "shape": [2, 2], "datatype": datatype(name), "data": data}))
        .collect();
    let (status, response, _) = solo.infer_json("dtypes", &json!({"inputs": inputs})).await;
    assert_eq!(status, 200, "{response}");
    for (name, data, _) in &cases {
        let output = response["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .find(|o| o["name"] == format!("out_{name}"))
            .expect("output");
        assert_eq!(output["datatype"], datatype(name));
        assert_eq!(&output["data"], data, "{name} over JSON");
    }
    let header_inputs: Vec<Value> = cases
        .iter()
        .map(|(name, _, bytes)| {
            json!({"name": format!("in_{name}"), "shape": [2, 2], "datatype": datatype(name),
            "parameters": {"binary_data_size": bytes.len()}})
        })
        .collect();
    let payload: Vec<u8> = cases.iter().flat_map(|(_, _, bytes)| bytes.clone()).collect();
    let header = json!({"inputs": header_inputs, "parameters": {"binary_data_output": true}});
    let (_, outputs) = solo.infer_binary("dtypes", &header, payload).await;
    for (name, _, bytes) in &cases {
        let (_, got) = outputs.iter().find(|(n, _)| *n == format!("out_{name}")).expect("output");
        assert_eq!(got, bytes, "{name} over binary");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_item_requests_form_correct_batches() {
    let reference = python_json(
        r#"
import json, numpy as np, onnxruntime as ort
x = np.random.RandomState(9).standard_normal((32, 3, 32, 32)).astype(np.float32)
s = ort.InferenceSession("models/tiny.onnx")
print(json.dumps({"x": x.reshape(32, -1).tolist(), "y": [s.run(None, {"input": x[i:i+1]})[0].ravel().tolist() for i in range(32)]}))
"#,
    );
    let solo = solo().await;
    let requests = (0..32).map(|index| {
        let body = json!({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": reference["x"][index]}]});
        let solo = &solo;
        async move { (index, solo.infer_json("tiny", &body).await) }
    });
    let results = futures_join_all(requests).await;
    let mut largest = 0;
    for (index, (status, response, _)) in results {
        assert_eq!(status, 200, "{response}");
        assert_close(&floats(&response["outputs"][0]["data"]), &floats(&reference["y"][index]), "batched row");
        largest = largest.max(response["parameters"]["gpumesh_batch_size"].as_u64().expect("batch size"));
    }
    eprintln!("measured: largest batch among 32 concurrent requests: {largest}");
    assert!(largest > 1, "no batch larger than 1 formed");
}

/// Runs futures concurrently on this task (no extra dependency).
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, result) in pinned.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => *result = Some(output),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    results.into_iter().map(|r| r.expect("every future finished")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_the_node_keeps_serving() {
    let solo = solo().await;
    let one = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]});
    let cases = [
        ("tiny", one(json!([1, 3, 32, 31]), "FP32", json!(vec![0.0; 3 * 32 * 31])), 400, "shape"),
        ("tiny", one(json!([1, 3, 32, 32]), "FP64", json!(vec![0.0; 3 * 32 * 32])), 400, "datatype"),
        ("tiny", one(json!([33, 3, 32, 32]), "FP32", json!(vec![0.0; 33 * 3 * 32 * 32])), 400, "max_batch_size"),
        ("nope", one(json!([1]), "FP32", json!([0.0])), 404, "unknown model"),
    ];
    for (model, body, status, needle) in cases {
        let (got, response, _) = solo.infer_json(model, &body).await;
        assert_eq!(got, status, "{response}");
        assert!(response["error"].as_str().is_some_and(|e| e.contains(needle)), "{needle}: {response}");
    }
    // An oversized body is refused from its Content-Length, before it is read.
    let (status_line, body) = oversized_request(&solo.node.url, 64 * 1024 * 1024 + 1);
    assert!(status_line.contains(" 413 "), "{status_line}");
    assert!(serde_json::from_str::<Value>(&body).expect("JSON error")["error"].is_string(), "{body}");

    // slow: one request runs, one waits, the rest find the queue full.
    let body = json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]});
    let results = futures_join_all((0..4).map(|_| solo.infer_json("slow", &body))).await;
    let full: Vec<_> = results.iter().filter(|(status, _, _)| *status == 429).collect();
    assert!(!full.is_empty(), "queue limit not enforced: {:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    assert!(full[0].2.contains_key("retry-after"), "429 carries Retry-After");
    assert!(full[0].1["error"].as_str().is_some_and(|e| e.contains("queued")));
    assert!(
        results.iter().any(|(status, response, _)| *status == 200 && response["outputs"][0]["data"] == json!([1.0]))
    );

    let valid = one(json!([1, 3, 32, 32]), "FP32", json!(vec![0.5; 3 * 32 * 32]));
    let (status, response, _) = solo.infer_json("tiny", &valid).await;
    assert_eq!(status, 200, "the node still serves: {response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_batch_is_a_500_and_the_model_keeps_serving() {
    let solo = solo().await;
    let body = |value: f64| json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [value]}]});
    let (status, response, _) = solo.infer_json("fragile", &body(13.0)).await;
    assert_eq!(status, 500, "{response}");
    assert!(response["error"].as_str().is_some_and(|e| e.contains("panicked")), "{response}");
    let (status, response, _) = solo.infer_json("fragile", &body(2.0)).await;
    assert_eq!((status, &response["outputs"][0]["data"]), (200, &json!([2.0])), "{response}");
    let metrics = solo.client.get(format!("{}/metrics", solo.node.url)).send().await.expect("up");
    let text = metrics.text().await.expect("text");
    // Every attempt the node makes (3 by default, all here: no other node)
    // ran a batch that panicked.
    assert!(text.contains("gpumesh_batch_panics_total{model=\"fragile\"} 3\n"), "{text}");
}

/// Declares a body of `length` bytes, sends only its first KiB, and returns
/// the response's status line and body.
fn oversized_request(url: &str, length: usize) -> (String, String) {
    use std::io::{Read, Write};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let head = format!(
        "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write head");
    let _ = stream.write_all(&[b' '; 1024]);
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(read) = stream.read(&mut chunk) {
        if read == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&response);
        if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[test]
fn missing_onnx_runtime_is_one_sentence_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("gpumesh");
    std::fs::copy(env!("CARGO_BIN_EXE_gpumesh"), &bin).expect("copy binary");
    let registry = write_registry(dir.path());
    let (http, gossip, cluster) = free_ports();
    let output = Command::new(&bin)
        .current_dir(dir.path())
        .env_remove("ORT_DYLIB_PATH")
        .env("GPUMESH_LOG", "error")
        .args(["node", "--data-dir", "data", "--models"])
        .arg(&registry)
        .args(["--http", &format!("127.0.0.1:{http}"), "--gossip", &format!("127.0.0.1:{gossip}")])
        .args(["--cluster", &format!("127.0.0.1:{cluster}"), "--grpc", "127.0.0.1:0"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("onnx runtime library not found") && stderr.contains("scripts/setup.sh"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_and_bench_commands_report_where_requests_ran() {
    let solo = solo().await;
    let url = solo.node.url.clone();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_gpumesh")).args(args).output().expect("runs")
        })
    };
    let infer = run(vec![
        "infer".into(),
        "--node".into(),
        url.clone(),
        "--model".into(),
        "tiny".into(),
        "--count".into(),
        "2".into(),
    ])
    .await
    .expect("joined");
    let text = String::from_utf8_lossy(&infer.stdout);
    assert!(infer.status.success(), "{text}{}", String::from_utf8_lossy(&infer.stderr));
    assert_eq!(text.matches("200 in").count(), 2, "{text}");
    assert!(text.contains("node=solo device=cpu") && text.contains("logits FP32 [1,10]"), "{text}");

    for extra in [vec!["--concurrency", "4"], vec!["--rate", "100", "--binary"]] {
        let mut args: Vec<String> =
            ["bench", "--node", &url, "--model", "tiny", "--duration", "1s", "--json"].map(String::from).into();
        args.extend(extra.iter().map(|s| s.to_string()));
        let bench = run(args).await.expect("joined");
        assert!(bench.status.success(), "{}", String::from_utf8_lossy(&bench.stderr));
        let report: Value = serde_json::from_slice(&bench.stdout).expect("one JSON object");
        let requests = report["requests"].as_u64().expect("requests");
        assert!(requests > 10, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        assert_eq!(report["by_node"]["solo"].as_u64(), Some(requests), "{report}");
        let latency = &report["latency_ms"];
        for key in ["p50", "p90", "p99", "max"] {
            assert!(latency[key].as_f64().is_some_and(|ms| ms > 0.0), "{key}: {report}");
        }
        assert!(latency["p50"].as_f64() <= latency["p99"].as_f64(), "{report}");
    }
}
