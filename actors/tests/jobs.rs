//! A job's history shows when it ran: `running` is recorded when the
//! executor starts the job's batch, whether the job runs on its owner or
//! on another node (which tells the owner over the link). In-process nodes
//! on loopback with real gossip, links and sled.
#![allow(clippy::disallowed_methods, reason = "tests wait on the wall clock for real nodes")]

use std::time::Duration;

use gpumesh_actors::executor::batch::BatchPolicy;
use gpumesh_actors::{
    InferRequest, ModelKind, ModelSpec, NodeConfig, NodeEnv, NodeHandle, Tensor, TensorData, start_node,
};
use gpumesh_storage::jobs::{JobRecord, JobState};
use tokio::time::Instant;

mod common;

/// Long enough that the start is recorded well before the completion.
const SERVICE_MS: f64 = 150.0;

fn slow_model() -> ModelSpec {
    ModelSpec {
        name: "slow".into(),
        kind: ModelKind::Synthetic { service_time_ms: SERVICE_MS, service_time_per_item_ms: 0.0, panic_on_input: None },
        batch: BatchPolicy { max_batch_size: 1, max_queue_delay: Duration::ZERO, max_queue_size: 16 },
        device: gpumesh_actors::DevicePreference::Any,
        min_free_vram_mb: 0,
    }
}

fn request() -> InferRequest {
    let x = Tensor::new("x", vec![1, 1], TensorData::Fp32(vec![4.0])).expect("tensor");
    InferRequest { inputs: vec![x], outputs: Vec::new(), priority: 5 }
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn completed(node: &NodeHandle, id: &str) -> JobRecord {
    let mut last = None;
    until("the job completes", async || {
        last = node.job(id).await.expect("job store");
        last.as_ref().is_some_and(|job| job.state.is_final())
    })
    .await;
    last.expect("job")
}

fn states(job: &JobRecord) -> Vec<(JobState, Option<&str>)> {
    job.history.iter().map(|step| (step.state, step.node.as_deref())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_by_its_owner_is_recorded_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig { models: vec![slow_model()], ..common::loopback_config("solo", dir.path(), Vec::new()) };
    let node = start_node(config, NodeEnv { links: None, ..NodeEnv::production() }).await.expect("node starts");
    let job = node.submit_job("slow", request(), None).await.expect("accepted");
    let done = completed(&node, &job.id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(
        states(&done),
        [
            (JobState::Accepted, None),
            (JobState::Dispatched, Some("solo")),
            (JobState::Running, Some("solo")),
            (JobState::Completed, Some("solo")),
        ]
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_on_another_node_is_recorded_running_by_its_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner_config = common::loopback_config("owner", dir.path(), Vec::new());
    let seed = owner_config.gossip_advertise.to_string();
    let owner = start_node(owner_config, NodeEnv::production()).await.expect("owner starts");
    let runner_config =
        NodeConfig { models: vec![slow_model()], ..common::loopback_config("runner", dir.path(), vec![seed]) };
    let runner = start_node(runner_config, NodeEnv::production()).await.expect("runner starts");
    until("the owner links to the runner and sees its model", async || {
        let view = owner.view();
        let serving = view.member("runner").is_some_and(|m| {
            m.is_usable() && m.load.as_ref().is_some_and(|load| load.models.iter().any(|lm| lm.name == "slow"))
        });
        serving && owner.connected().contains("runner")
    })
    .await;
    let job = owner.submit_job("slow", request(), None).await.expect("accepted");
    let done = completed(&owner, &job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(
        states(&done),
        [
            (JobState::Accepted, None),
            (JobState::Dispatched, Some("runner")),
            (JobState::Running, Some("runner")),
            (JobState::Completed, Some("runner")),
        ]
    );
    runner.shutdown().await;
    owner.shutdown().await;
}
