use proptest::prelude::*;

use super::*;

fn json(body: &str) -> Result<Decoded, String> {
    decode(body.as_bytes(), None, &crate::Limits::default()).map_err(|error| error.to_string())
}

#[test]
fn flat_and_nested_json_data_decode_alike() {
    let flat = json(r#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"INT32","data":[1,2,3,4]}]}"#).expect("flat");
    let nested =
        json(r#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}"#).expect("nested");
    assert_eq!(flat.request.inputs, nested.request.inputs);
    assert_eq!(flat.request.inputs[0].data, TensorData::Int32(vec![1, 2, 3, 4]));
    assert_eq!(flat.request.priority, 5);
}

#[test]
fn every_datatype_and_scalars_decode_from_json() {
    let body = r#"{"inputs":[
        {"name":"b","shape":[2],"datatype":"BOOL","data":[true,false]},
        {"name":"u","shape":[1],"datatype":"UINT8","data":[255]},
        {"name":"i8","shape":[1],"datatype":"INT8","data":[-128]},
        {"name":"i16","shape":[1],"datatype":"INT16","data":[-300]},
        {"name":"i64","shape":[1],"datatype":"INT64","data":[9007199254740993]},
        {"name":"h","shape":[1],"datatype":"FP16","data":[1.5]},
        {"name":"d","shape":[1],"datatype":"FP64","data":[0.1]},
        {"name":"s","shape":[],"datatype":"FP32","data":[2.5]}]}"#;
    let decoded = json(body).expect("valid");
    let data: Vec<&TensorData> = decoded.request.inputs.iter().map(|t| &t.data).collect();
    assert_eq!(data[0], &TensorData::Bool(vec![true, false]));
    assert_eq!(data[4], &TensorData::Int64(vec![9_007_199_254_740_993]));
    assert_eq!(data[5], &TensorData::Fp16(vec![f16::from_f32(1.5)]));
    assert_eq!(decoded.request.inputs[7].shape, Vec::<usize>::new());
}

#[test]
fn binary_extension_splits_header_and_data() {
    let header = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}],
        "outputs":[{"name":"y","parameters":{"binary_data":true}}],"parameters":{"priority":9}}"#;
    let mut body = header.as_bytes().to_vec();
    body.extend(1.5f32.to_le_bytes());
    body.extend((-2.0f32).to_le_bytes());
    let decoded = decode(&body, Some(header.len()), &crate::Limits::default()).expect("valid");
    assert_eq!(decoded.request.inputs[0].data, TensorData::Fp32(vec![1.5, -2.0]));
    assert_eq!(decoded.request.priority, 9);
    assert!(decoded.binary_outputs.wants("y") && !decoded.binary_outputs.wants("z"));
}

#[test]
fn malformed_requests_are_errors_that_say_why() {
    let cases = [
        (r#"not json"#, "not a valid inference request"),
        (r#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[1]}]}"#, "holds 2 elements"),
        (r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP33","data":[1]}]}"#, "not one of"),
        (r#"{"inputs":[{"name":"a","shape":[-1],"datatype":"FP32","data":[1]}]}"#, "negative"),
        (r#"{"inputs":[{"name":"a","shape":[4294967296,4294967296],"datatype":"FP32","data":[1]}]}"#, "more than"),
        (r#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT8","data":[300]}]}"#, "INT8"),
        (r#"{"inputs":[{"name":"a","shape":[1],"datatype":"BOOL","data":[1]}]}"#, "BOOL"),
        (r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32"}]}"#, "no data"),
        (r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":["x"]}]}"#, "FP32"),
        (
            r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}],"parameters":{"priority":11}}"#,
            "priority",
        ),
        (
            r#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}],"parameters":{"device":"tpu"}}"#,
            "device",
        ),
        (
            r#"{"inputs":[{"name":"a","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"datatype":"FP32","data":[1]}]}"#,
            "dimensions",
        ),
    ];
    for (body, needle) in cases {
        let error = json(body).err().unwrap_or_else(|| panic!("{body} should fail"));
        assert!(error.contains(needle), "{body}: {error}");
    }
    assert!(decode(b"{}", Some(10), &crate::Limits::default()).is_err(), "header length beyond the body");
    let header = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
    let mut extra = header.as_bytes().to_vec();
    extra.extend([0u8; 8]);
    assert!(
        decode(&extra, Some(header.len()), &crate::Limits::default())
            .err()
            .is_some_and(|e| e.to_string().contains("not claimed"))
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), split in 0usize..600) {
        let _ = decode(&body, Some(split), &crate::Limits::default());
        let _ = decode(&body, None, &crate::Limits::default());
    }

    #[test]
    fn arbitrary_json_shapes_never_panic(dims in proptest::collection::vec(any::<i64>(), 0..20), dt in 0usize..9) {
        let body = format!(
            r#"{{"inputs":[{{"name":"a","shape":{dims:?},"datatype":"{}","data":[1,2,3]}}]}}"#,
            DataType::ALL[dt].as_str()
        );
        let _ = json(&body);
    }
}
