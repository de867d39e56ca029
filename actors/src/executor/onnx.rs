//! ONNX Runtime: loading the library and running sessions.
//!
//! The library is loaded once per process with `ort::init_from`, trying each
//! candidate path in turn; every failure is kept so the one error says all
//! that was tried (FIELD-NOTES: without `init_from` a missing library panics
//! on first use).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use half::f16;
use ort::environment::Environment;
use ort::ep;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use crate::executor::{ModelMetadata, TensorMeta};
use crate::tensor::{DataType, Tensor, TensorData};
use crate::with_tensor_data;

static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime from the first candidate that works. Later calls
/// return the runtime loaded first.
pub fn load_runtime(candidates: &[PathBuf]) -> Result<&'static Environment, String> {
    RUNTIME
        .get_or_init(|| {
            let mut tried = Vec::new();
            for path in candidates {
                if !path.is_file() {
                    tried.push(format!("{} (no such file)", path.display()));
                    continue;
                }
                match ort::init_from(path).map_err(|error| format!("{error:?}")).and_then(|builder| {
                    builder.with_name("gpumesh").build().map_err(|error| format!("{error:?}"))
                }) {
                    Ok(environment) => {
                        tracing::info!(library = %path.display(), "onnx runtime loaded");
                        return Ok(environment);
                    }
                    Err(reason) => tried.push(format!("{}: {reason}", path.display())),
                }
            }
            let tried = if tried.is_empty() { "no candidate paths".to_string() } else { tried.join("; ") };
            Err(format!(
                "onnx runtime library not found: run scripts/setup.sh or set ORT_DYLIB_PATH to libonnxruntime.so (tried: {tried})"
            ))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// One loaded ONNX model.
pub struct OnnxModel {
    session: Session,
    pub(crate) metadata: ModelMetadata,
    /// `cuda:N` or `cpu`: the provider the session really registered.
    pub(crate) device: String,
}

fn datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        _ => return None,
    })
}

fn tensor_meta(name: &str, value_type: &ValueType) -> Result<TensorMeta, String> {
    match value_type {
        ValueType::Tensor { ty, shape, .. } => {
            let datatype = datatype(*ty)
                .ok_or_else(|| format!("{name:?} has element type {ty:?}, which gpumesh does not serve"))?;
            Ok(TensorMeta { name: name.to_string(), datatype, shape: shape.iter().copied().collect() })
        }
        other => Err(format!("{name:?} is a {other:?}, not a tensor")),
    }
}

fn build_session(environment: &Environment, path: &Path, cuda_device: Option<i32>) -> ort::Result<Session> {
    // ONNX Runtime's default counts physical cores, which a VM may report
    // as 1 of its 2 vCPUs; one batch runs at a time per model, so give it
    // every core the process may use.
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // Its worker threads spin between runs by default: on a machine whose
    // cores also serve the requests (decoding, HTTP) that spinning took
    // more CPU than the model itself (docs/BENCHMARKS.md, issue 17).
    let mut builder = Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(threads)?
        .with_intra_op_spinning(false)?;
    if let Some(device_id) = cuda_device {
        builder = builder
            .with_execution_providers([ep::CUDA::default().with_device_id(device_id).build().error_on_failure()])?;
    }
    builder.commit_from_file(path)
}

impl OnnxModel {
    /// Loads `path` as model `name`. With `cuda_device`, tries the CUDA
    /// provider first and falls back to CPU with a warning.
    pub fn load(environment: &Environment, name: &str, path: &Path, cuda_device: Option<i32>) -> Result<Self, String> {
        let (session, device) = match cuda_device.map(|id| (id, build_session(environment, path, Some(id)))) {
            Some((id, Ok(session))) => (session, format!("cuda:{id}")),
            Some((_, Err(error))) => {
                tracing::warn!(model = name, error = ?error, "cuda execution provider unavailable; running on cpu");
                (build_session(environment, path, None).map_err(|e| format!("{e}"))?, "cpu".to_string())
            }
            None => (build_session(environment, path, None).map_err(|e| format!("{e}"))?, "cpu".to_string()),
        };
        let inputs = session.inputs().iter().map(|o| tensor_meta(o.name(), o.dtype())).collect::<Result<_, _>>()?;
        let outputs = session.outputs().iter().map(|o| tensor_meta(o.name(), o.dtype())).collect::<Result<_, _>>()?;
        let metadata = ModelMetadata { name: name.to_string(), platform: "onnxruntime_onnx", inputs, outputs };
        Ok(Self { session, metadata, device })
    }

    /// Runs the session on `inputs` (in the model's input order) and returns
    /// every output.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
        let values = inputs
            .iter()
            .map(|tensor| Ok((tensor.name.as_str(), input_value(tensor)?)))
            .collect::<ort::Result<Vec<(&str, SessionInputValue<'_>)>>>()
            .map_err(|error| error.to_string())?;
        let outputs = self.session.run(values).map_err(|error| error.to_string())?;
        self.metadata
            .outputs
            .iter()
            .map(|meta| {
                let value = outputs.get(&meta.name).ok_or_else(|| format!("output {:?} missing", meta.name))?;
                output_tensor(&meta.name, meta.datatype, value).map_err(|error| error.to_string())
            })
            .collect()
    }
}

fn input_value(tensor: &Tensor) -> ort::Result<SessionInputValue<'_>> {
    let shape = tensor.shape.clone();
    Ok(with_tensor_data!(&tensor.data, data => TensorRef::from_array_view((shape, data.as_slice()))?.into()))
}

fn output_tensor(name: &str, datatype: DataType, value: &DynValue) -> ort::Result<Tensor> {
    macro_rules! extract {
        ($variant:ident, $ty:ty) => {{
            let (shape, data) = value.try_extract_tensor::<$ty>()?;
            (shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect(), TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data): (Vec<usize>, TensorData) = match datatype {
        DataType::Bool => extract!(Bool, bool),
        DataType::Uint8 => extract!(Uint8, u8),
        DataType::Int8 => extract!(Int8, i8),
        DataType::Int16 => extract!(Int16, i16),
        DataType::Int32 => extract!(Int32, i32),
        DataType::Int64 => extract!(Int64, i64),
        DataType::Fp16 => extract!(Fp16, f16),
        DataType::Fp32 => extract!(Fp32, f32),
        DataType::Fp64 => extract!(Fp64, f64),
    };
    Ok(Tensor { name: name.to_string(), shape, data })
}
