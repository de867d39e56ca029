//! OIP v2 inference responses, JSON or with the binary tensor extension,
//! carrying where and how the request ran (`gpumesh_*` parameters and
//! `x-gpumesh-*` headers).

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use gpumesh_actors::{InferResponse, Tensor, TensorData};
use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::oip::decode::BinaryOutputs;

/// Where a request ran.
pub(crate) struct Provenance<'a> {
    pub(crate) node: &'a str,
    pub(crate) route: &'a str,
}

struct JsonData<'a>(&'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        match self.0 {
            TensorData::Bool(values) => values.iter().try_for_each(|v| seq.serialize_element(v))?,
            TensorData::Uint8(values) => values.iter().try_for_each(|v| seq.serialize_element(v))?,
            TensorData::Int8(values) => values.iter().try_for_each(|v| seq.serialize_element(v))?,
            TensorData::Int16(values) => values.iter().try_for_each(|v| seq.serialize_element(v))?,
            TensorData::Int32(values) => values.iter().try_for_each(|v| seq.serialize_element(v))?,
            TensorData::Int64(values) => values.iter().try_for_each(|v| seq.serialize_element(v))?,
            TensorData::Fp16(values) => values.iter().try_for_each(|v| seq.serialize_element(&v.to_f32()))?,
            TensorData::Fp32(values) => values.iter().try_for_each(|v| seq.serialize_element(v))?,
            TensorData::Fp64(values) => values.iter().try_for_each(|v| seq.serialize_element(v))?,
        }
        seq.end()
    }
}

#[derive(serde::Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(serde::Serialize)]
struct OutputEntry<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
}

#[derive(serde::Serialize)]
struct Parameters<'a> {
    gpumesh_node: &'a str,
    gpumesh_device: &'a str,
    gpumesh_route: &'a str,
    gpumesh_queue_ms: f64,
    gpumesh_compute_ms: f64,
    gpumesh_batch_size: usize,
}

#[derive(serde::Serialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    parameters: Parameters<'a>,
    outputs: Vec<OutputEntry<'a>>,
}

fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// The response body and headers.
pub(crate) fn encode(
    model: &str,
    id: Option<&str>,
    response: &InferResponse,
    provenance: &Provenance<'_>,
    binary: &BinaryOutputs,
) -> Result<(HeaderMap, Vec<u8>), serde_json::Error> {
    let mut payload = Vec::new();
    let outputs = response
        .outputs
        .iter()
        .map(|tensor: &Tensor| {
            let as_binary = binary.wants(&tensor.name);
            let parameters = as_binary.then(|| {
                let start = payload.len();
                tensor.data.write_le_bytes(&mut payload);
                BinarySize { binary_data_size: payload.len() - start }
            });
            OutputEntry {
                name: &tensor.name,
                datatype: tensor.datatype().as_str(),
                shape: &tensor.shape,
                data: (!as_binary).then_some(JsonData(&tensor.data)),
                parameters,
            }
        })
        .collect();
    let parameters = Parameters {
        gpumesh_node: provenance.node,
        gpumesh_device: &response.device,
        gpumesh_route: provenance.route,
        gpumesh_queue_ms: millis(response.queue_time),
        gpumesh_compute_ms: millis(response.compute_time),
        gpumesh_batch_size: response.batch_size,
    };
    let header = ResponseHeader { model_name: model, model_version: "1", id, parameters, outputs };
    let mut body = serde_json::to_vec(&header)?;
    let mut headers = HeaderMap::new();
    if payload.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    } else {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        headers.insert(HeaderName::from_static("inference-header-content-length"), HeaderValue::from(body.len()));
        body.extend_from_slice(&payload);
    }
    let facts: [(&'static str, String); 6] = [
        ("x-gpumesh-node", provenance.node.to_string()),
        ("x-gpumesh-device", response.device.clone()),
        ("x-gpumesh-route", provenance.route.to_string()),
        ("x-gpumesh-queue-ms", millis(response.queue_time).to_string()),
        ("x-gpumesh-compute-ms", millis(response.compute_time).to_string()),
        ("x-gpumesh-batch-size", response.batch_size.to_string()),
    ];
    for (name, value) in facts {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    Ok((headers, body))
}

/// One tensor as an OIP JSON output entry.
pub(crate) fn tensor_json(tensor: &Tensor) -> serde_json::Value {
    serde_json::json!({
        "name": tensor.name,
        "datatype": tensor.datatype().as_str(),
        "shape": tensor.shape,
        "data": serde_json::to_value(JsonData(&tensor.data)).unwrap_or(serde_json::Value::Null),
    })
}
