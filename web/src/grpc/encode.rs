//! Results to gRPC messages: outputs as `raw_output_contents` (what
//! Triton's server sends and `tritonclient` reads), where and how the
//! request ran as response `parameters` (the `gpumesh_*` names of the
//! HTTP face), and Triton's statistics documents as protobuf.

use std::collections::HashMap;

use gpumesh_actors::{ModelStatisticsDoc, Routed};
use prost::bytes::Bytes;

use crate::grpc::proto::infer_parameter::ParameterChoice;
use crate::grpc::proto::model_infer_response::InferOutputTensor;
use crate::grpc::proto::{
    InferBatchStatistics, InferParameter, InferStatistics, ModelInferResponse, ModelStatistics, StatisticDuration,
};

fn parameter(choice: ParameterChoice) -> InferParameter {
    InferParameter { parameter_choice: Some(choice) }
}

fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// The response to a request for `model` with `id`, as it ran.
pub(crate) fn infer_response(model: &str, id: String, routed: Routed) -> ModelInferResponse {
    let Routed { response, node, route } = routed;
    let mut outputs = Vec::with_capacity(response.outputs.len());
    let mut raw = Vec::with_capacity(response.outputs.len());
    for tensor in &response.outputs {
        let mut bytes = Vec::new();
        tensor.data.write_le_bytes(&mut bytes);
        raw.push(Bytes::from(bytes));
        outputs.push(InferOutputTensor {
            name: tensor.name.clone(),
            datatype: tensor.datatype().as_str().to_string(),
            shape: tensor.shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect(),
            parameters: HashMap::new(),
            contents: None,
        });
    }
    let parameters = HashMap::from([
        ("gpumesh_node".to_string(), parameter(ParameterChoice::StringParam(node))),
        ("gpumesh_device".to_string(), parameter(ParameterChoice::StringParam(response.device))),
        ("gpumesh_route".to_string(), parameter(ParameterChoice::StringParam(route.join(">")))),
        ("gpumesh_queue_ms".to_string(), parameter(ParameterChoice::DoubleParam(millis(response.queue_time)))),
        ("gpumesh_compute_ms".to_string(), parameter(ParameterChoice::DoubleParam(millis(response.compute_time)))),
        (
            "gpumesh_batch_size".to_string(),
            parameter(ParameterChoice::Int64Param(i64::try_from(response.batch_size).unwrap_or(i64::MAX))),
        ),
    ]);
    ModelInferResponse {
        model_name: model.to_string(),
        model_version: "1".into(),
        id,
        parameters,
        outputs,
        raw_output_contents: raw,
    }
}

fn duration(stat: gpumesh_actors::StatDuration) -> Option<StatisticDuration> {
    Some(StatisticDuration { count: stat.count, ns: stat.ns })
}

/// A statistics document as Triton's protobuf.
pub(crate) fn statistics(doc: ModelStatisticsDoc) -> ModelStatistics {
    let stats = doc.inference_stats;
    ModelStatistics {
        name: doc.name,
        version: doc.version,
        last_inference: doc.last_inference,
        inference_count: doc.inference_count,
        execution_count: doc.execution_count,
        inference_stats: Some(InferStatistics {
            success: duration(stats.success),
            fail: duration(stats.fail),
            queue: duration(stats.queue),
            compute_input: duration(stats.compute_input),
            compute_infer: duration(stats.compute_infer),
            compute_output: duration(stats.compute_output),
            cache_hit: duration(stats.cache_hit),
            cache_miss: duration(stats.cache_miss),
        }),
        batch_stats: doc
            .batch_stats
            .into_iter()
            .map(|batch| InferBatchStatistics {
                batch_size: batch.batch_size,
                compute_input: duration(batch.compute_input),
                compute_infer: duration(batch.compute_infer),
                compute_output: duration(batch.compute_output),
            })
            .collect(),
        ..ModelStatistics::default()
    }
}
