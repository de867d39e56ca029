//! Triton's model configuration of a model, built from its OIP metadata
//! (pure): the protobuf message the gRPC `ModelConfig` returns, and the
//! JSON that Triton's `GET /v2/models/{model}/config` returns for it.
//!
//! When every input has a dynamic leading dimension the model takes
//! batches: `max_batch_size` is the node's batch limit (at least 1) and
//! `dims` leave the batch dimension out, as Triton's do. Otherwise
//! `max_batch_size` is 0 and `dims` are the whole shape.

use gpumesh_actors::{DataType, MetadataDoc};
use serde_json::{Value, json};

use crate::grpc::proto::{
    self, ModelConfig, ModelDynamicBatching, ModelInput, ModelInstanceGroup, ModelOutput, ModelVersionPolicy,
    model_config::SchedulingChoice, model_instance_group::Kind, model_version_policy,
};

/// Triton's `TYPE_*` of an OIP datatype name; `TYPE_INVALID` for none.
fn data_type(oip: &str) -> proto::DataType {
    match DataType::parse(oip) {
        Some(DataType::Bool) => proto::DataType::TypeBool,
        Some(DataType::Uint8) => proto::DataType::TypeUint8,
        Some(DataType::Int8) => proto::DataType::TypeInt8,
        Some(DataType::Int16) => proto::DataType::TypeInt16,
        Some(DataType::Int32) => proto::DataType::TypeInt32,
        Some(DataType::Int64) => proto::DataType::TypeInt64,
        Some(DataType::Fp16) => proto::DataType::TypeFp16,
        Some(DataType::Fp32) => proto::DataType::TypeFp32,
        Some(DataType::Fp64) => proto::DataType::TypeFp64,
        None => proto::DataType::TypeInvalid,
    }
}

/// Whether requests carry a leading batch dimension.
fn batched(doc: &MetadataDoc) -> bool {
    !doc.inputs.is_empty() && doc.inputs.iter().all(|input| input.shape.first().is_some_and(|&d| d < 0))
}

/// The configuration of the model `doc` describes.
pub(crate) fn model_config(doc: &MetadataDoc) -> ModelConfig {
    let batched = batched(doc);
    let dims = |shape: &[i64]| if batched { shape.get(1..).unwrap_or_default().to_vec() } else { shape.to_vec() };
    let max_batch_size =
        if batched { i32::try_from(doc.parameters.max_batch_size.max(1)).unwrap_or(i32::MAX) } else { 0 };
    let device = doc.parameters.gpumesh_device.as_str();
    let (kind, gpus) = match device.strip_prefix("cuda:").and_then(|n| n.parse::<i32>().ok()) {
        Some(gpu) => (Kind::Gpu, vec![gpu]),
        None if device == "cpu" => (Kind::Cpu, Vec::new()),
        None => (Kind::Model, Vec::new()),
    };
    let onnx = doc.platform == "onnxruntime_onnx";
    ModelConfig {
        name: doc.name.clone(),
        platform: doc.platform.clone(),
        backend: if onnx { "onnxruntime" } else { "gpumesh" }.into(),
        version_policy: Some(ModelVersionPolicy {
            policy_choice: Some(model_version_policy::PolicyChoice::Latest(model_version_policy::Latest {
                num_versions: 1,
            })),
        }),
        max_batch_size,
        input: doc
            .inputs
            .iter()
            .map(|t| ModelInput {
                name: t.name.clone(),
                data_type: data_type(&t.datatype).into(),
                dims: dims(&t.shape),
                ..ModelInput::default()
            })
            .collect(),
        output: doc
            .outputs
            .iter()
            .map(|t| ModelOutput {
                name: t.name.clone(),
                data_type: data_type(&t.datatype).into(),
                dims: dims(&t.shape),
                ..ModelOutput::default()
            })
            .collect(),
        instance_group: vec![ModelInstanceGroup {
            name: doc.name.clone(),
            kind: kind.into(),
            count: 1,
            gpus,
            ..ModelInstanceGroup::default()
        }],
        default_model_filename: if onnx { "model.onnx".into() } else { String::new() },
        scheduling_choice: (batched && doc.parameters.max_batch_size > 1).then(|| {
            SchedulingChoice::DynamicBatching(ModelDynamicBatching {
                max_queue_delay_microseconds: doc.parameters.max_queue_delay_us,
                ..ModelDynamicBatching::default()
            })
        }),
        ..ModelConfig::default()
    }
}

/// The configuration as Triton's HTTP API shows it.
pub(crate) fn config_json(config: &ModelConfig) -> Value {
    let type_name = |value: i32| proto::DataType::try_from(value).unwrap_or_default().as_str_name();
    let inputs: Vec<Value> = config
        .input
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "data_type": type_name(t.data_type), "format": "FORMAT_NONE", "dims": t.dims,
                "is_shape_tensor": false, "allow_ragged_batch": false, "optional": false,
            })
        })
        .collect();
    let outputs: Vec<Value> = config
        .output
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "data_type": type_name(t.data_type), "dims": t.dims,
                "label_filename": "", "is_shape_tensor": false,
            })
        })
        .collect();
    let groups: Vec<Value> = config
        .instance_group
        .iter()
        .map(|g| {
            let kind = Kind::try_from(g.kind).unwrap_or_default().as_str_name();
            json!({ "name": g.name, "kind": kind, "count": g.count, "gpus": g.gpus })
        })
        .collect();
    let mut doc = json!({
        "name": config.name,
        "platform": config.platform,
        "backend": config.backend,
        "version_policy": { "latest": { "num_versions": 1 } },
        "max_batch_size": config.max_batch_size,
        "input": inputs,
        "output": outputs,
        "instance_group": groups,
        "default_model_filename": config.default_model_filename,
        "parameters": {},
    });
    if let Some(SchedulingChoice::DynamicBatching(batching)) = &config.scheduling_choice {
        doc["dynamic_batching"] = json!({
            "preferred_batch_size": batching.preferred_batch_size,
            "max_queue_delay_microseconds": batching.max_queue_delay_microseconds,
            "preserve_ordering": false,
        });
    }
    doc
}

#[cfg(test)]
mod tests {
    use gpumesh_actors::MetadataDoc;
    use serde_json::json;

    use super::{config_json, model_config};

    fn doc(input_shape: &[i64], device: &str) -> MetadataDoc {
        serde_json::from_value(json!({
            "name": "tiny", "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{ "name": "x", "datatype": "FP32", "shape": input_shape }],
            "outputs": [{ "name": "y", "datatype": "INT64", "shape": [-1, 10] }],
            "parameters": { "gpumesh_device": device, "gpumesh_node": "n1", "max_batch_size": 32,
                            "max_queue_delay_us": 2000 },
        }))
        .expect("metadata")
    }

    #[test]
    fn a_batching_model_leaves_the_batch_dimension_out() {
        let json = config_json(&model_config(&doc(&[-1, 3, 32, 32], "cuda:1")));
        assert_eq!(json["max_batch_size"], 32);
        assert_eq!(json["input"][0]["dims"], json!([3, 32, 32]));
        assert_eq!(json["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(json["output"][0]["data_type"], "TYPE_INT64");
        assert_eq!(json["output"][0]["dims"], json!([10]));
        assert_eq!(json["dynamic_batching"]["max_queue_delay_microseconds"], 2000);
        assert_eq!(json["instance_group"][0]["kind"], "KIND_GPU");
        assert_eq!(json["instance_group"][0]["gpus"], json!([1]));
    }

    #[test]
    fn a_fixed_shape_model_has_no_batch_dimension() {
        let json = config_json(&model_config(&doc(&[1, 3, 32, 32], "cpu")));
        assert_eq!(json["max_batch_size"], 0);
        assert_eq!(json["input"][0]["dims"], json!([1, 3, 32, 32]));
        assert_eq!(json["output"][0]["dims"], json!([-1, 10]));
        assert!(json.get("dynamic_batching").is_none());
        assert_eq!(json["instance_group"][0]["kind"], "KIND_CPU");
    }
}
