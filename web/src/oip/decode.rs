//! OIP v2 inference requests: JSON tensors and the binary tensor extension
//! (`Inference-Header-Content-Length`, `binary_data_size`). Nothing a client
//! sends can panic here: every bound is checked before anything is
//! allocated for it.

use std::collections::BTreeSet;

use gpumesh_actors::{
    DataType, DeviceRequirement, InferRequest, Requirements, Tensor, TensorData, TensorError, tensor::element_count,
};
use half::f16;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::Limits;

/// Most dimensions of one tensor.
pub(crate) const MAX_RANK: usize = 16;
/// Priority when the request gives none.
const DEFAULT_PRIORITY: u8 = 5;

/// Why a body is not an inference request; each message says what is
/// wrong, in the words of the protocol.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("Inference-Header-Content-Length {header_len} is larger than the body ({body_len} bytes)")]
    HeaderLength { header_len: usize, body_len: usize },
    #[error("the request JSON is not valid UTF-8")]
    NotUtf8,
    #[error("the request is not a valid inference request: {0}")]
    NotARequest(serde_json::Error),
    #[error("a request may have at most {0} inputs and outputs")]
    TooManyTensors(usize),
    #[error("{0}")]
    Parameter(&'static str),
    #[error("{0} bytes of binary data are not claimed by any input's binary_data_size")]
    UnclaimedBinary(usize),
    #[error("output {0:?}: parameter binary_data must be true or false")]
    OutputBinaryFlag(String),
    #[error("input {0:?} has both data and binary_data_size")]
    BothData(String),
    #[error("input {0:?} has no data and no binary_data_size")]
    NoData(String),
    #[error("input {name:?}: {problem}")]
    Input { name: String, problem: InputError },
}

/// What is wrong with one input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("datatype {0:?} is not one of {known}", known = known_datatypes())]
    Datatype(String),
    #[error("shape has {0} dimensions, at most {MAX_RANK} are allowed")]
    Rank(usize),
    #[error("shape {0:?} has a negative dimension")]
    NegativeDimension(Vec<i64>),
    #[error("shape {shape:?} has more than {max} elements")]
    TooLarge { shape: Vec<i64>, max: usize },
    #[error("binary_data_size must be a non-negative integer")]
    BinarySize,
    #[error("binary_data_size {size} is more than the {left} bytes left")]
    BinaryShort { size: usize, left: usize },
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("the shape holds {count} elements but data has {found}")]
    Count { count: usize, found: usize },
    #[error("data is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("data is nested deeper than {MAX_RANK} levels")]
    TooDeep,
    #[error("data has more than the {0} elements the shape holds")]
    TooMany(usize),
    #[error("data holds {value} where a {datatype} value belongs")]
    Mismatch { value: String, datatype: DataType },
}

fn known_datatypes() -> String {
    DataType::ALL.iter().map(|dt| dt.as_str()).collect::<Vec<_>>().join(", ")
}

#[derive(Deserialize)]
struct RequestHeader<'a> {
    #[serde(default)]
    id: Option<String>,
    /// `POST /jobs` names the model in the body.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(borrow)]
    inputs: Vec<InputHeader<'a>>,
    #[serde(default)]
    outputs: Vec<OutputHeader>,
}

#[derive(Deserialize)]
struct InputHeader<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Deserialize)]
struct OutputHeader {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Which outputs go back as binary.
#[derive(Clone, Debug, Default)]
pub(crate) struct BinaryOutputs {
    pub(crate) all: bool,
    pub(crate) names: BTreeSet<String>,
}

impl BinaryOutputs {
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.all || self.names.contains(name)
    }
}

/// A decoded request.
pub(crate) struct Decoded {
    pub(crate) id: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) request: InferRequest,
    pub(crate) binary_outputs: BinaryOutputs,
    pub(crate) requirements: Requirements,
}

/// Decodes a request body; `header_len` is `Inference-Header-Content-Length`.
pub(crate) fn decode(body: &[u8], header_len: Option<usize>, limits: &Limits) -> Result<Decoded, DecodeError> {
    let (json, mut binary) = match header_len {
        Some(len) if len > body.len() => {
            return Err(DecodeError::HeaderLength { header_len: len, body_len: body.len() });
        }
        Some(len) => body.split_at(len),
        None => (body, &[][..]),
    };
    let text = std::str::from_utf8(json).map_err(|_| DecodeError::NotUtf8)?;
    let header: RequestHeader<'_> = serde_json::from_str(text).map_err(DecodeError::NotARequest)?;
    let max_inputs = limits.max_inputs;
    if header.inputs.len() > max_inputs || header.outputs.len() > max_inputs {
        return Err(DecodeError::TooManyTensors(max_inputs));
    }
    let (priority, requirements, binary_all) = parameters(&header.parameters)?;
    let mut inputs = Vec::with_capacity(header.inputs.len());
    for input in &header.inputs {
        inputs.push(decode_input(input, &mut binary, limits.max_tensor_elements)?);
    }
    if !binary.is_empty() {
        return Err(DecodeError::UnclaimedBinary(binary.len()));
    }
    let mut binary_outputs = BinaryOutputs { all: binary_all, names: BTreeSet::new() };
    let mut outputs = Vec::with_capacity(header.outputs.len());
    for output in header.outputs {
        match output.parameters.get("binary_data") {
            None => {}
            Some(Value::Bool(true)) => {
                binary_outputs.names.insert(output.name.clone());
            }
            Some(Value::Bool(false)) => {}
            Some(_) => return Err(DecodeError::OutputBinaryFlag(output.name)),
        }
        outputs.push(output.name);
    }
    Ok(Decoded {
        id: header.id,
        model: header.model,
        idempotency_key: header.idempotency_key,
        request: InferRequest { inputs, outputs, priority },
        binary_outputs,
        requirements,
    })
}

/// Priority, placement requirements and `binary_data_output` from the
/// request's parameters (the gRPC face converts its parameters to JSON
/// values to share these rules and words).
pub(crate) fn parameters(parameters: &Map<String, Value>) -> Result<(u8, Requirements, bool), DecodeError> {
    use DecodeError::Parameter;
    let priority = match parameters.get("priority") {
        None => DEFAULT_PRIORITY,
        Some(value) => value
            .as_u64()
            .filter(|p| *p <= 10)
            .and_then(|p| u8::try_from(p).ok())
            .ok_or(Parameter("parameter priority must be an integer from 0 to 10"))?,
    };
    let device = match parameters.get("device").map(|v| v.as_str()) {
        None | Some(Some("any")) => DeviceRequirement::Any,
        Some(Some("gpu")) => DeviceRequirement::Gpu,
        Some(Some("cpu")) => DeviceRequirement::Cpu,
        Some(_) => return Err(Parameter("parameter device must be \"gpu\", \"cpu\" or \"any\"")),
    };
    let min_free_vram_mb = match parameters.get("min_free_vram_mb") {
        None => 0,
        Some(value) => value.as_u64().ok_or(Parameter("parameter min_free_vram_mb must be a non-negative integer"))?,
    };
    let gpu_type = match parameters.get("gpu_type") {
        None => None,
        Some(Value::String(gpu)) => Some(gpu.clone()),
        Some(_) => return Err(Parameter("parameter gpu_type must be a string")),
    };
    let binary = match parameters.get("binary_data_output") {
        None => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => return Err(Parameter("parameter binary_data_output must be true or false")),
    };
    Ok((priority, Requirements { device, min_free_vram_mb, gpu_type, priority }, binary))
}

fn decode_input(input: &InputHeader<'_>, binary: &mut &[u8], max_elements: usize) -> Result<Tensor, DecodeError> {
    let name = &input.name;
    let in_input = |problem: InputError| DecodeError::Input { name: name.clone(), problem };
    let (datatype, shape, count) = declared(&input.datatype, &input.shape, max_elements).map_err(in_input)?;
    let data = match (input.parameters.get("binary_data_size"), input.data) {
        (Some(_), Some(_)) => return Err(DecodeError::BothData(name.clone())),
        (Some(size), None) => binary_data(datatype, size, binary).map_err(in_input)?,
        (None, Some(raw)) => json_data(datatype, raw, count).map_err(in_input)?,
        (None, None) => return Err(DecodeError::NoData(name.clone())),
    };
    Tensor::new(name.clone(), shape, data).map_err(|error| in_input(error.into()))
}

/// The datatype, shape and element count of a declared `datatype` and
/// `shape`, within `max_elements`.
pub(crate) fn declared(
    datatype: &str,
    shape: &[i64],
    max_elements: usize,
) -> Result<(DataType, Vec<usize>, usize), InputError> {
    let datatype = DataType::parse(datatype).ok_or_else(|| InputError::Datatype(datatype.to_string()))?;
    if shape.len() > MAX_RANK {
        return Err(InputError::Rank(shape.len()));
    }
    let dims: Vec<usize> = shape
        .iter()
        .map(|&dim| usize::try_from(dim).map_err(|_| InputError::NegativeDimension(shape.to_vec())))
        .collect::<Result<_, _>>()?;
    let count = element_count(&dims)
        .filter(|&count| count <= max_elements)
        .ok_or_else(|| InputError::TooLarge { shape: shape.to_vec(), max: max_elements })?;
    Ok((datatype, dims, count))
}

/// The `size` bytes of an input's binary data, taken off `binary`.
fn binary_data(datatype: DataType, size: &Value, binary: &mut &[u8]) -> Result<TensorData, InputError> {
    let size = size.as_u64().and_then(|s| usize::try_from(s).ok()).ok_or(InputError::BinarySize)?;
    if size > binary.len() {
        return Err(InputError::BinaryShort { size, left: binary.len() });
    }
    let (bytes, rest) = binary.split_at(size);
    *binary = rest;
    Ok(TensorData::from_le_bytes(datatype, bytes)?)
}

/// JSON tensor data: a flat array (the fast path) or nested arrays in
/// row-major order.
fn json_data(datatype: DataType, raw: &RawValue, count: usize) -> Result<TensorData, InputError> {
    macro_rules! flat {
        ($variant:ident, $ty:ty) => {
            serde_json::from_str::<Vec<$ty>>(raw.get()).ok().map(TensorData::$variant)
        };
    }
    let flat = match datatype {
        DataType::Bool => flat!(Bool, bool),
        DataType::Uint8 => flat!(Uint8, u8),
        DataType::Int8 => flat!(Int8, i8),
        DataType::Int16 => flat!(Int16, i16),
        DataType::Int32 => flat!(Int32, i32),
        DataType::Int64 => flat!(Int64, i64),
        DataType::Fp16 => serde_json::from_str::<Vec<f32>>(raw.get())
            .ok()
            .map(|values| TensorData::Fp16(values.into_iter().map(f16::from_f32).collect())),
        DataType::Fp32 => flat!(Fp32, f32),
        DataType::Fp64 => flat!(Fp64, f64),
    };
    let data = match flat {
        Some(data) => data,
        None => nested(datatype, raw, count)?,
    };
    if data.len() != count {
        return Err(InputError::Count { count, found: data.len() });
    }
    Ok(data)
}

fn nested(datatype: DataType, raw: &RawValue, count: usize) -> Result<TensorData, InputError> {
    let value: Value = serde_json::from_str(raw.get()).map_err(InputError::Json)?;
    // Each element takes at least two bytes of JSON: a shape that claims
    // more than its data holds reserves no more than the data could fill.
    let mut data = TensorData::with_capacity(datatype, count.min(raw.get().len() / 2 + 1));
    flatten(&value, &mut data, count, 0)?;
    Ok(data)
}

fn flatten(value: &Value, out: &mut TensorData, count: usize, depth: usize) -> Result<(), InputError> {
    if depth > MAX_RANK {
        return Err(InputError::TooDeep);
    }
    match value {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, out, count, depth + 1)),
        scalar => {
            if out.len() >= count {
                return Err(InputError::TooMany(count));
            }
            push_scalar(scalar, out)
        }
    }
}

fn push_scalar(value: &Value, out: &mut TensorData) -> Result<(), InputError> {
    let datatype = out.datatype();
    let mismatch = || InputError::Mismatch { value: value.to_string(), datatype };
    macro_rules! int {
        ($v:expr, $ty:ty) => {
            $v.push(value.as_i64().and_then(|x| <$ty>::try_from(x).ok()).ok_or_else(mismatch)?)
        };
    }
    match out {
        TensorData::Bool(v) => v.push(value.as_bool().ok_or_else(mismatch)?),
        TensorData::Uint8(v) => v.push(value.as_u64().and_then(|x| u8::try_from(x).ok()).ok_or_else(mismatch)?),
        TensorData::Int8(v) => int!(v, i8),
        TensorData::Int16(v) => int!(v, i16),
        TensorData::Int32(v) => int!(v, i32),
        TensorData::Int64(v) => v.push(value.as_i64().ok_or_else(mismatch)?),
        TensorData::Fp16(v) => v.push(f16::from_f64(value.as_f64().ok_or_else(mismatch)?)),
        TensorData::Fp32(v) => v.push(value.as_f64().ok_or_else(mismatch)? as f32),
        TensorData::Fp64(v) => v.push(value.as_f64().ok_or_else(mismatch)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
