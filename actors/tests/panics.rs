//! A batch that panics fails only its own requests: they get an error, the
//! model's executor goes on with the next batch, and `/metrics` counts the
//! panic. In-process node on loopback, a synthetic model that panics when
//! a batch holds its marker input.

use std::time::Duration;

use gpumesh_actors::executor::batch::BatchPolicy;
use gpumesh_actors::{
    InferError, InferRequest, ModelKind, ModelSpec, NodeConfig, NodeEnv, Requirements, Tensor, TensorData, start_node,
};

mod common;

const MARKER: f32 = 13.0;

fn request(value: f32) -> InferRequest {
    let x = Tensor::new("x", vec![1, 1], TensorData::Fp32(vec![value])).expect("tensor");
    InferRequest { inputs: vec![x], outputs: Vec::new(), priority: 5 }
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_batch_fails_its_requests_and_the_executor_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = ModelSpec {
        name: "fragile".into(),
        kind: ModelKind::Synthetic {
            service_time_ms: 1.0,
            service_time_per_item_ms: 0.0,
            panic_on_input: Some(MARKER),
        },
        // Requests arriving within 50 ms share a batch.
        batch: BatchPolicy { max_batch_size: 8, max_queue_delay: Duration::from_millis(50), max_queue_size: 64 },
        device: gpumesh_actors::DevicePreference::Any,
        min_free_vram_mb: 0,
    };
    let config = NodeConfig { models: vec![model], ..common::loopback_config("solo", dir.path(), Vec::new()) };
    let env = NodeEnv { links: None, ..NodeEnv::production() };
    let node = start_node(config, env).await.expect("node starts");
    let served = node.model("fragile").expect("served").clone();

    let before = node.infer("fragile", request(1.0)).await.expect("a plain request runs");
    assert_eq!(before.outputs[0].data, TensorData::Fp32(vec![1.0]));

    // The marker and a plain request in one batch: both fail, with an error
    // that says what happened, and no caller waits forever.
    let (marked, neighbour) = tokio::join!(node.infer("fragile", request(MARKER)), node.infer("fragile", request(2.0)));
    for result in [&marked, &neighbour] {
        match result {
            Err(InferError::Failed(message)) => assert!(message.contains("panicked"), "{message}"),
            other => panic!("a request of the panicking batch got {other:?}"),
        }
    }
    assert_eq!(served.stats.panics(), 1, "one batch panicked");
    assert!(served.executor_running(), "the executor was not stopped by the panic");

    // The executor takes the next batch as if nothing happened.
    let after = node.infer("fragile", request(3.0)).await.expect("the executor goes on");
    assert_eq!(after.outputs[0].data, TensorData::Fp32(vec![3.0]));
    assert_eq!(served.stats.queue_depth(), 0);

    // Routed, the request is tried on every attempt the cluster allows (a
    // device failure here may not be one elsewhere) and then answered.
    let routed = node.route_infer("fragile", &Requirements::default(), request(MARKER)).await;
    assert!(matches!(routed, Err(InferError::Failed(_))), "{routed:?}");
    let panics = served.stats.panics();
    assert_eq!(panics, 1 + gpumesh_actors::DEFAULT_MAX_FORWARD_ATTEMPTS as u64);

    let text = node.prometheus_text();
    assert_eq!(metric(&text, "gpumesh_batch_panics_total{model=\"fragile\"}"), Some(panics as f64), "{text}");
    node.shutdown().await;
}
