use std::collections::HashMap;

use gpumesh_actors::{DeviceRequirement, TensorData};
use prost::bytes::Bytes;

use super::{GrpcDecodeError, decode};
use crate::Limits;
use crate::grpc::proto::infer_parameter::ParameterChoice;
use crate::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crate::grpc::proto::{InferParameter, InferTensorContents, ModelInferRequest};

fn input(name: &str, datatype: &str, shape: &[i64], contents: Option<InferTensorContents>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: HashMap::new(),
        contents,
    }
}

fn request(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs,
        raw_input_contents: raw.into_iter().map(Bytes::from).collect(),
        ..ModelInferRequest::default()
    }
}

fn error(message: ModelInferRequest) -> String {
    match decode(message, &Limits::default()) {
        Ok(_) => panic!("decoded"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn raw_contents_are_little_endian_per_input_in_order() {
    let floats: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let longs: Vec<u8> = [7i64].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut message =
        request(vec![input("a", "FP32", &[1, 2], None), input("b", "INT64", &[1], None)], vec![floats, longs]);
    message.outputs = vec![InferRequestedOutputTensor { name: "y".into(), parameters: HashMap::new() }];
    let decoded = decode(message, &Limits::default()).expect("decodes");
    let inputs = &decoded.request.inputs;
    assert_eq!(inputs[0].data, TensorData::Fp32(vec![1.5, -2.0]));
    assert_eq!(inputs[0].shape, [1, 2]);
    assert_eq!(inputs[1].data, TensorData::Int64(vec![7]));
    assert_eq!(decoded.request.outputs, ["y"]);
}

#[test]
fn typed_contents_are_range_checked_for_their_datatype() {
    let contents = InferTensorContents { int_contents: vec![1, -2, 127], ..InferTensorContents::default() };
    let decoded = decode(request(vec![input("a", "INT8", &[3], Some(contents))], vec![]), &Limits::default());
    assert_eq!(decoded.expect("decodes").request.inputs[0].data, TensorData::Int8(vec![1, -2, 127]));
    let contents = InferTensorContents { int_contents: vec![300], ..InferTensorContents::default() };
    let message = error(request(vec![input("a", "INT8", &[1], Some(contents))], vec![]));
    assert!(message.contains("300") && message.contains("INT8"), "{message}");
    let contents = InferTensorContents { bool_contents: vec![true, false], ..InferTensorContents::default() };
    let decoded = decode(request(vec![input("a", "BOOL", &[2], Some(contents))], vec![]), &Limits::default());
    assert_eq!(decoded.expect("decodes").request.inputs[0].data, TensorData::Bool(vec![true, false]));
}

#[test]
fn contents_that_do_not_fill_the_shape_are_refused() {
    let contents = InferTensorContents { fp32_contents: vec![1.0, 2.0], ..InferTensorContents::default() };
    let message = error(request(vec![input("a", "FP32", &[1, 3], Some(contents))], vec![]));
    assert!(message.contains("3 elements but data has 2"), "{message}");
    let message = error(request(vec![input("a", "FP32", &[2], None)], vec![vec![0; 6]]));
    assert!(message.contains("6 bytes are not a whole number of FP32"), "{message}");
    let message = error(request(vec![input("a", "FP32", &[4], None)], vec![vec![0; 8]]));
    assert!(message.contains("4 elements but data has 2"), "{message}");
}

#[test]
fn each_malformed_request_says_what_is_wrong() {
    let two = vec![input("a", "FP32", &[1], None), input("b", "FP32", &[1], None)];
    assert!(matches!(
        decode(request(two, vec![vec![0; 4]]), &Limits::default()),
        Err(GrpcDecodeError::RawCount { raw: 1, inputs: 2 })
    ));
    let message = error(request(vec![input("a", "FP32", &[1], None)], vec![]));
    assert!(message.contains("no contents"), "{message}");
    let message = error(request(vec![input("a", "BYTES", &[1], None)], vec![vec![0; 4]]));
    assert!(message.contains("datatype \"BYTES\""), "{message}");
    let message = error(request(vec![input("a", "FP16", &[1], Some(InferTensorContents::default()))], vec![]));
    assert!(message.contains("no typed contents field"), "{message}");
    let message = error(request(vec![input("a", "FP32", &[-1], None)], vec![vec![]]));
    assert!(message.contains("negative dimension"), "{message}");
    let message = error(request(vec![input("a", "FP32", &[1 << 40, 1 << 40], None)], vec![vec![]]));
    assert!(message.contains("more than"), "{message}");
    let both = InferTensorContents { fp32_contents: vec![1.0], ..InferTensorContents::default() };
    let message = error(request(vec![input("a", "FP32", &[1], Some(both))], vec![vec![0; 4]]));
    assert!(message.contains("both contents and raw_input_contents"), "{message}");
}

#[test]
fn parameters_follow_the_http_rules() {
    let parameter = |choice| InferParameter { parameter_choice: Some(choice) };
    let mut message = request(vec![input("a", "FP32", &[1], None)], vec![vec![0; 4]]);
    message.parameters = HashMap::from([
        ("priority".to_string(), parameter(ParameterChoice::Int64Param(9))),
        ("device".to_string(), parameter(ParameterChoice::StringParam("gpu".into()))),
        ("min_free_vram_mb".to_string(), parameter(ParameterChoice::Uint64Param(512))),
    ]);
    let decoded = decode(message.clone(), &Limits::default()).expect("decodes");
    assert_eq!(decoded.request.priority, 9);
    assert_eq!(decoded.requirements.device, DeviceRequirement::Gpu);
    assert_eq!(decoded.requirements.min_free_vram_mb, 512);
    message.parameters.insert("priority".into(), parameter(ParameterChoice::Int64Param(11)));
    assert!(error(message.clone()).contains("priority must be an integer from 0 to 10"));
    message.parameters.insert("priority".into(), InferParameter { parameter_choice: None });
    assert!(error(message).contains("parameter \"priority\" has no value"));
}

#[test]
fn too_many_inputs_are_refused_before_any_is_decoded() {
    let limits = Limits { max_inputs: 2, ..Limits::default() };
    let inputs = (0..3).map(|i| input(&format!("i{i}"), "FP32", &[1], None)).collect();
    let result = decode(request(inputs, vec![]), &limits);
    assert!(result.is_err_and(|error| error.to_string().contains("at most 2 inputs")));
}

mod properties {
    use proptest::prelude::*;

    use super::{input, request};
    use crate::Limits;
    use crate::grpc::decode::decode;

    const DATATYPES: [&str; 11] =
        ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "X"];

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(message in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = crate::grpc::decode_message(&message);
        }

        #[test]
        fn arbitrary_shapes_and_contents_never_panic(
            dims in proptest::collection::vec(any::<i64>(), 0..20),
            datatype in 0usize..DATATYPES.len(),
            raw in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let message = request(vec![input("a", DATATYPES[datatype], &dims, None)], vec![raw]);
            if let Ok(decoded) = decode(message, &Limits::default()) {
                let tensor = &decoded.request.inputs[0];
                prop_assert_eq!(Some(tensor.data.len()), gpumesh_actors::tensor::element_count(&tensor.shape));
            }
        }
    }
}
