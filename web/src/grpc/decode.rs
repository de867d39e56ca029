//! `ModelInferRequest` to an inference request: raw contents
//! (`raw_input_contents`, one per input, little-endian) or typed contents,
//! the request's parameters with the HTTP face's rules and words, the same
//! limits. Nothing a client sends can panic here; every bound is checked
//! before anything is allocated for it (the message itself was bounded by
//! the server's message size limit).

use std::collections::HashMap;

use gpumesh_actors::{DataType, InferRequest, Requirements, Tensor, TensorData};
use serde_json::{Map, Value};

use crate::Limits;
use crate::grpc::proto::infer_parameter::ParameterChoice;
use crate::grpc::proto::model_infer_request::InferInputTensor;
use crate::grpc::proto::{InferParameter, InferTensorContents, ModelInferRequest};
use crate::oip::{DecodeError, InputError, declared, parameters};

/// Why a `ModelInferRequest` cannot run; the message is the gRPC status's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GrpcDecodeError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("raw_input_contents has {raw} entries but the request has {inputs} inputs: send one per input, in order")]
    RawCount { raw: usize, inputs: usize },
    #[error("input {0:?} has both contents and raw_input_contents")]
    BothContents(String),
    #[error("input {0:?} has no contents and there is no raw_input_contents")]
    NoContents(String),
    #[error("input {name:?}: {datatype} has no typed contents field; send it in raw_input_contents")]
    NoTypedField { name: String, datatype: DataType },
    #[error("parameter {0:?} has no value")]
    EmptyParameter(String),
}

/// A decoded gRPC request.
pub(crate) struct GrpcDecoded {
    pub(crate) request: InferRequest,
    pub(crate) requirements: Requirements,
}

fn json_value(parameter: &InferParameter) -> Option<Value> {
    Some(match parameter.parameter_choice.as_ref()? {
        ParameterChoice::BoolParam(flag) => Value::Bool(*flag),
        ParameterChoice::Int64Param(number) => Value::from(*number),
        ParameterChoice::Uint64Param(number) => Value::from(*number),
        ParameterChoice::DoubleParam(number) => Value::from(*number),
        ParameterChoice::StringParam(text) => Value::String(text.clone()),
    })
}

/// The request's parameters as the JSON map the HTTP face reads.
fn json_parameters(parameters: &HashMap<String, InferParameter>) -> Result<Map<String, Value>, GrpcDecodeError> {
    parameters
        .iter()
        .map(|(key, parameter)| match json_value(parameter) {
            Some(value) => Ok((key.clone(), value)),
            None => Err(GrpcDecodeError::EmptyParameter(key.clone())),
        })
        .collect()
}

/// Decodes `message` within `limits`.
pub(crate) fn decode(message: ModelInferRequest, limits: &Limits) -> Result<GrpcDecoded, GrpcDecodeError> {
    let max_inputs = limits.max_inputs;
    if message.inputs.len() > max_inputs || message.outputs.len() > max_inputs {
        return Err(DecodeError::TooManyTensors(max_inputs).into());
    }
    let (priority, requirements, _) = parameters(&json_parameters(&message.parameters)?)?;
    let raw = message.raw_input_contents;
    if !raw.is_empty() && raw.len() != message.inputs.len() {
        return Err(GrpcDecodeError::RawCount { raw: raw.len(), inputs: message.inputs.len() });
    }
    let mut inputs = Vec::with_capacity(message.inputs.len());
    for (index, input) in message.inputs.into_iter().enumerate() {
        inputs.push(decode_input(input, raw.get(index).map(|bytes| &bytes[..]), limits.max_tensor_elements)?);
    }
    let outputs = message.outputs.into_iter().map(|output| output.name).collect();
    Ok(GrpcDecoded { request: InferRequest { inputs, outputs, priority }, requirements })
}

fn decode_input(input: InferInputTensor, raw: Option<&[u8]>, max_elements: usize) -> Result<Tensor, GrpcDecodeError> {
    let name = input.name;
    let in_input = |problem: InputError| DecodeError::Input { name: name.clone(), problem };
    let (datatype, shape, count) = declared(&input.datatype, &input.shape, max_elements).map_err(in_input)?;
    let data = match (raw, input.contents) {
        (Some(_), Some(contents)) if !is_empty(&contents) => return Err(GrpcDecodeError::BothContents(name)),
        (Some(bytes), _) => TensorData::from_le_bytes(datatype, bytes).map_err(|error| in_input(error.into()))?,
        (None, Some(contents)) => typed(datatype, contents).map_err(|problem| match problem {
            Typed::NoField => GrpcDecodeError::NoTypedField { name: name.clone(), datatype },
            Typed::Input(problem) => in_input(problem).into(),
        })?,
        (None, None) => return Err(GrpcDecodeError::NoContents(name)),
    };
    if data.len() != count {
        return Err(in_input(InputError::Count { count, found: data.len() }).into());
    }
    Tensor::new(name.clone(), shape, data).map_err(|error| in_input(error.into()).into())
}

fn is_empty(contents: &InferTensorContents) -> bool {
    *contents == InferTensorContents::default()
}

enum Typed {
    NoField,
    Input(InputError),
}

/// Typed contents of `datatype`: its field of the message, each value
/// checked against the datatype's range.
fn typed(datatype: DataType, contents: InferTensorContents) -> Result<TensorData, Typed> {
    fn narrow<W: Copy + std::fmt::Display, N: TryFrom<W>>(values: Vec<W>, datatype: DataType) -> Result<Vec<N>, Typed> {
        values
            .into_iter()
            .map(|value| {
                N::try_from(value)
                    .map_err(|_| Typed::Input(InputError::Mismatch { value: value.to_string(), datatype }))
            })
            .collect()
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(contents.bool_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(contents.uint_contents, datatype)?),
        DataType::Int8 => TensorData::Int8(narrow(contents.int_contents, datatype)?),
        DataType::Int16 => TensorData::Int16(narrow(contents.int_contents, datatype)?),
        DataType::Int32 => TensorData::Int32(contents.int_contents),
        DataType::Int64 => TensorData::Int64(contents.int64_contents),
        DataType::Fp32 => TensorData::Fp32(contents.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(contents.fp64_contents),
        DataType::Fp16 => return Err(Typed::NoField),
    })
}

#[cfg(test)]
mod tests;
