//! What runs a joined batch.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock::Clock;
use crate::executor::InferError;
use crate::executor::onnx::OnnxModel;
use crate::tensor::{Tensor, TensorData};

/// Runs batches of one model.
#[derive(Clone)]
pub enum Runner {
    /// An ONNX Runtime session, run on a blocking thread.
    Onnx(Arc<Mutex<OnnxModel>>),
    /// Holds each batch for `fixed + rows * per_item` on the node's clock and
    /// returns its inputs; `gpu` can slow it down or make it fail. A batch
    /// with an FP32 input element equal to `panic_on` panics.
    Synthetic { fixed: Duration, per_item: Duration, gpu: Arc<GpuFaults>, panic_on: Option<f32> },
}

/// Faults of the device a synthetic model stands for: the simulator's slow
/// GPU and GPU out of memory. Nothing sets them outside the simulator.
#[derive(Debug)]
pub struct GpuFaults {
    /// Service time in percent of normal.
    slowdown_pct: AtomicU32,
    out_of_memory: AtomicBool,
}

impl Default for GpuFaults {
    fn default() -> Self {
        Self { slowdown_pct: AtomicU32::new(100), out_of_memory: AtomicBool::new(false) }
    }
}

impl GpuFaults {
    /// Service times are `factor` times normal (1.0 restores them).
    pub fn set_slowdown(&self, factor: f64) {
        let percent = (factor * 100.0).round().clamp(1.0, 1_000_000.0) as u32;
        self.slowdown_pct.store(percent, Ordering::Relaxed);
    }

    /// Every batch fails as if the GPU had no memory left, until cleared.
    pub fn set_out_of_memory(&self, failing: bool) {
        self.out_of_memory.store(failing, Ordering::Relaxed);
    }
}

impl Runner {
    /// Runs one batch; returns every output and the compute time (read on
    /// `clock`).
    pub(crate) async fn run(
        &self,
        inputs: Vec<Tensor>,
        clock: &Arc<dyn Clock>,
    ) -> Result<(Vec<Tensor>, Duration), InferError> {
        match self {
            Self::Onnx(model) => {
                let (model, clock) = (model.clone(), clock.clone());
                tokio::task::spawn_blocking(move || {
                    let started = clock.now();
                    let outputs = model.lock().unwrap_or_else(PoisonError::into_inner).run(&inputs);
                    let compute = clock.now().saturating_duration_since(started);
                    outputs.map(|outputs| (outputs, compute)).map_err(InferError::Failed)
                })
                .await
                .map_err(|error| InferError::Failed(format!("the model crashed: {error}")))?
            }
            Self::Synthetic { fixed, per_item, gpu, panic_on } => {
                if let Some(marker) = panic_on
                    && inputs.iter().any(|input| matches!(&input.data, TensorData::Fp32(v) if v.contains(marker)))
                {
                    panic!("synthetic model: the batch holds the panic marker {marker}");
                }
                if gpu.out_of_memory.load(Ordering::Relaxed) {
                    return Err(InferError::Failed("out of GPU memory".into()));
                }
                let rows = inputs.first().map_or(1, Tensor::rows);
                let hold = *fixed + per_item.saturating_mul(u32::try_from(rows).unwrap_or(u32::MAX));
                let hold = hold * gpu.slowdown_pct.load(Ordering::Relaxed) / 100;
                tokio::time::sleep(hold).await;
                Ok((inputs, hold))
            }
        }
    }
}
