use std::time::Duration;

use super::*;
use crate::executor::batch::BatchPolicy;
use crate::registry::{DevicePreference, ModelKind};

fn meta() -> ModelMetadata {
    ModelMetadata {
        name: "m".into(),
        platform: "onnxruntime_onnx",
        inputs: vec![
            TensorMeta { name: "a".into(), datatype: DataType::Fp32, shape: vec![-1, 2] },
            TensorMeta { name: "b".into(), datatype: DataType::Int64, shape: vec![-1] },
        ],
        outputs: vec![TensorMeta { name: "y".into(), datatype: DataType::Fp32, shape: vec![-1, 2] }],
    }
}

fn spec(max_batch_size: usize) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        kind: ModelKind::Onnx { path: "m.onnx".into() },
        batch: BatchPolicy { max_batch_size, max_queue_delay: Duration::ZERO, max_queue_size: 8 },
        device: DevicePreference::Any,
        min_free_vram_mb: 0,
    }
}

fn a(rows: usize) -> Tensor {
    Tensor::new("a", vec![rows, 2], TensorData::Fp32(vec![1.0; rows * 2])).expect("tensor")
}

fn b(rows: usize) -> Tensor {
    Tensor::new("b", vec![rows], TensorData::Int64(vec![7; rows])).expect("tensor")
}

fn request(inputs: Vec<Tensor>, outputs: Vec<&str>) -> InferRequest {
    InferRequest { inputs, outputs: outputs.into_iter().map(String::from).collect(), priority: 5 }
}

#[test]
fn valid_request_is_ordered_and_counted() {
    let mut req = request(vec![b(3), a(3)], vec!["y"]);
    assert_eq!(validate_request(&spec(8), &meta(), false, true, &mut req), Ok(3));
    assert_eq!(req.inputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
}

#[test]
fn invalid_requests_are_bad_requests_naming_the_problem() {
    let wrong_type = Tensor::new("b", vec![1], TensorData::Int32(vec![1])).expect("tensor");
    let wrong_shape = Tensor::new("a", vec![1, 3], TensorData::Fp32(vec![0.0; 3])).expect("tensor");
    let cases: Vec<(InferRequest, usize, &str)> = vec![
        (request(vec![], vec![]), 8, "no inputs"),
        (request(vec![a(1)], vec![]), 8, "\"b\" is missing"),
        (request(vec![a(1), b(1), Tensor { name: "c".into(), ..b(1) }], vec![]), 8, "no input \"c\""),
        (request(vec![a(1), wrong_type], vec![]), 8, "datatype INT32"),
        (request(vec![wrong_shape, b(1)], vec![]), 8, "shape [1, 3]"),
        (request(vec![a(2), b(3)], vec![]), 8, "same leading"),
        (request(vec![a(9), b(9)], vec![]), 8, "max_batch_size 8"),
        (request(vec![a(1), b(1)], vec!["z"]), 8, "no output \"z\""),
        (request(vec![a(1), a(1)], vec![]), 8, "twice"),
    ];
    for (mut req, max, needle) in cases {
        match validate_request(&spec(max), &meta(), false, true, &mut req) {
            Err(InferError::BadRequest(message)) => assert!(message.contains(needle), "{needle}: {message}"),
            other => panic!("{needle}: expected a bad request, got {other:?}"),
        }
    }
}

#[test]
fn join_then_split_gives_each_request_its_rows() {
    let first = [a(1), b(1)];
    let second = [Tensor::new("a", vec![2, 2], TensorData::Fp32(vec![2.0, 3.0, 4.0, 5.0])).expect("tensor"), b(2)];
    let joined = join_inputs(&[&first, &second]).expect("joins");
    assert_eq!(joined[0].shape, vec![3, 2]);
    assert_eq!(joined[0].data, TensorData::Fp32(vec![1.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    let outputs = vec![Tensor { name: "y".into(), ..joined[0].clone() }];
    let split = split_outputs(&outputs, &[1, 2]).expect("splits");
    assert_eq!(split[0][0].data, TensorData::Fp32(vec![1.0, 1.0]));
    assert_eq!(split[1][0].shape, vec![2, 2]);
    assert_eq!(split[1][0].data, TensorData::Fp32(vec![2.0, 3.0, 4.0, 5.0]));
}

#[test]
fn outputs_that_ignore_the_batch_cannot_be_split() {
    let scalar = Tensor::new("s", vec![], TensorData::Fp32(vec![1.0])).expect("tensor");
    assert!(matches!(split_outputs(&[scalar], &[1, 1]), Err(InferError::Failed(_))));
}

#[test]
fn batchable_needs_every_leading_dim_dynamic() {
    assert!(batchable(&meta()));
    let mut fixed = meta();
    fixed.inputs[1].shape = vec![];
    assert!(!batchable(&fixed));
}
