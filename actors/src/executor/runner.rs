//! What runs a joined batch.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::executor::InferError;
use crate::executor::onnx::OnnxModel;
use crate::tensor::Tensor;

/// Runs batches of one model.
#[derive(Clone)]
pub enum Runner {
    /// An ONNX Runtime session, run on a blocking thread.
    Onnx(Arc<Mutex<OnnxModel>>),
    /// Holds each batch for `fixed + rows * per_item` on the node's clock and
    /// returns its inputs.
    Synthetic { fixed: Duration, per_item: Duration },
}

impl Runner {
    /// Runs one batch; returns every output and the compute time.
    pub(crate) async fn run(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Duration), InferError> {
        match self {
            Self::Onnx(model) => {
                let model = model.clone();
                tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let outputs = model.lock().unwrap_or_else(PoisonError::into_inner).run(&inputs);
                    outputs.map(|outputs| (outputs, started.elapsed())).map_err(InferError::Failed)
                })
                .await
                .map_err(|error| InferError::Failed(format!("the model crashed: {error}")))?
            }
            Self::Synthetic { fixed, per_item } => {
                let rows = inputs.first().map_or(1, Tensor::rows);
                let hold = *fixed + per_item.saturating_mul(u32::try_from(rows).unwrap_or(u32::MAX));
                tokio::time::sleep(hold).await;
                Ok((inputs, hold))
            }
        }
    }
}
