//! What `gpumesh infer` and `gpumesh bench` share: model metadata, request
//! bodies built from it (JSON or binary), and one request's outcome.

use std::time::Duration;

use anyhow::{Context, bail};
use gpumesh_actors::{Clock as _, DataType, SystemClock, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Upper bound on one request from the command-line clients.
pub(crate) const REQUEST_TIMEOUT_MS: u64 = 60_000;

/// The HTTP client of the command-line tools: sends `GPUMESH_API_TOKEN`,
/// when set, as the bearer token nodes started with `--api-token-file` ask for.
pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("GPUMESH_API_TOKEN") {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .context("GPUMESH_API_TOKEN holds characters a header cannot carry: check the token")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder().default_headers(headers).build().context("cannot build the HTTP client")
}

/// An input or output as `GET /v2/models/{model}` describes it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct TensorInfo {
    pub(crate) name: String,
    pub(crate) datatype: String,
    pub(crate) shape: Vec<i64>,
}

/// A model's metadata.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ModelInfo {
    pub(crate) inputs: Vec<TensorInfo>,
}

/// Fetches `GET /v2/models/{model}` from `base`.
pub(crate) async fn model_info(client: &reqwest::Client, base: &str, model: &str) -> anyhow::Result<ModelInfo> {
    let url = format!("{}/v2/models/{model}", base.trim_end_matches('/'));
    let response = client
        .get(&url)
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}: is a gpumesh node running there?"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        bail!("{url} answered {status}: {}", body["error"].as_str().unwrap_or("no error message"));
    }
    response.json().await.with_context(|| format!("{url} did not return model metadata"))
}

/// A request body ready to send many times.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) body: bytes::Bytes,
    /// `Inference-Header-Content-Length` when the body uses the binary extension.
    pub(crate) header_len: Option<usize>,
    /// Submitted as an asynchronous job (`POST /jobs`) instead of inferred.
    pub(crate) as_job: bool,
}

impl Prepared {
    /// The same request as the body of `POST /jobs` for `model`.
    pub(crate) fn into_job(self, model: &str) -> anyhow::Result<Self> {
        if self.header_len.is_some() {
            anyhow::bail!("jobs take JSON tensors: leave out --binary");
        }
        let mut body: Value = serde_json::from_slice(&self.body)?;
        body["model"] = json!(model);
        Ok(Self { body: serde_json::to_vec(&body)?.into(), header_len: None, as_job: true })
    }
}

fn random_data(datatype: DataType, count: usize, rng: &mut StdRng) -> TensorData {
    match datatype {
        DataType::Bool => TensorData::Bool((0..count).map(|_| rng.random_bool(0.5)).collect()),
        DataType::Uint8 => TensorData::Uint8((0..count).map(|_| rng.random_range(0..=255)).collect()),
        DataType::Int8 => TensorData::Int8((0..count).map(|_| rng.random_range(-8..8)).collect()),
        DataType::Int16 => TensorData::Int16((0..count).map(|_| rng.random_range(-8..8)).collect()),
        DataType::Int32 => TensorData::Int32((0..count).map(|_| rng.random_range(-8..8)).collect()),
        DataType::Int64 => TensorData::Int64((0..count).map(|_| rng.random_range(-8..8)).collect()),
        DataType::Fp16 => {
            TensorData::Fp16((0..count).map(|_| half::f16::from_f32(rng.random_range(-1.0..1.0))).collect())
        }
        DataType::Fp32 => TensorData::Fp32((0..count).map(|_| rng.random_range(-1.0..1.0)).collect()),
        DataType::Fp64 => TensorData::Fp64((0..count).map(|_| rng.random_range(-1.0..1.0)).collect()),
    }
}

fn json_values(data: &TensorData) -> Value {
    match data {
        TensorData::Bool(v) => json!(v),
        TensorData::Uint8(v) => json!(v),
        TensorData::Int8(v) => json!(v),
        TensorData::Int16(v) => json!(v),
        TensorData::Int32(v) => json!(v),
        TensorData::Int64(v) => json!(v),
        TensorData::Fp16(v) => json!(v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>()),
        TensorData::Fp32(v) => json!(v),
        TensorData::Fp64(v) => json!(v),
    }
}

/// A request with random inputs shaped from `info`: the leading dynamic
/// dimension is `batch_size`, other dynamic dimensions 1.
pub(crate) fn random_request(
    info: &ModelInfo,
    batch_size: usize,
    binary: bool,
    parameters: Map<String, Value>,
    seed: u64,
) -> anyhow::Result<Prepared> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut inputs = Vec::new();
    let mut payload = Vec::new();
    for input in &info.inputs {
        let datatype = DataType::parse(&input.datatype).with_context(|| {
            format!("input {} has datatype {}, which this client cannot generate", input.name, input.datatype)
        })?;
        let shape: Vec<usize> = input
            .shape
            .iter()
            .enumerate()
            .map(|(axis, &dim)| match (axis, usize::try_from(dim)) {
                (_, Ok(fixed)) => fixed,
                (0, Err(_)) => batch_size,
                (_, Err(_)) => 1,
            })
            .collect();
        let data = random_data(datatype, shape.iter().product(), &mut rng);
        let mut entry = json!({ "name": input.name, "shape": shape, "datatype": input.datatype });
        if binary {
            let start = payload.len();
            data.write_le_bytes(&mut payload);
            entry["parameters"] = json!({ "binary_data_size": payload.len() - start });
        } else {
            entry["data"] = json_values(&data);
        }
        inputs.push(entry);
    }
    let mut parameters = parameters;
    if binary {
        parameters.insert("binary_data_output".into(), Value::Bool(true));
    }
    let header = serde_json::to_vec(&json!({ "inputs": inputs, "parameters": parameters }))?;
    let header_len = binary.then_some(header.len());
    let mut body = header;
    body.extend(payload);
    Ok(Prepared { body: body.into(), header_len, as_job: false })
}

/// What came back for one request.
pub(crate) struct Outcome {
    pub(crate) status: Option<u16>,
    pub(crate) latency: Duration,
    /// `x-gpumesh-node`: who executed it.
    pub(crate) node: Option<String>,
    pub(crate) body: bytes::Bytes,
    pub(crate) headers: reqwest::header::HeaderMap,
    /// Set when no HTTP response came back.
    pub(crate) transport_error: Option<String>,
}

/// Sends one prepared request.
pub(crate) async fn send(client: &reqwest::Client, base: &str, model: &str, prepared: &Prepared) -> Outcome {
    let base = base.trim_end_matches('/');
    let url = if prepared.as_job { format!("{base}/jobs") } else { format!("{base}/v2/models/{model}/infer") };
    let mut request = client.post(url).timeout(Duration::from_millis(REQUEST_TIMEOUT_MS)).body(prepared.body.clone());
    request = match prepared.header_len {
        Some(len) => {
            request.header("Inference-Header-Content-Length", len).header("Content-Type", "application/octet-stream")
        }
        None => request.header("Content-Type", "application/json"),
    };
    let started = SystemClock.now();
    let result = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    }
    .await;
    let latency = started.elapsed();
    match result {
        Ok((status, headers, body)) => Outcome {
            status: Some(status),
            latency,
            node: headers.get("x-gpumesh-node").and_then(|v| v.to_str().ok()).map(String::from),
            body,
            headers,
            transport_error: None,
        },
        Err(error) => Outcome {
            status: None,
            latency,
            node: None,
            body: bytes::Bytes::new(),
            headers: reqwest::header::HeaderMap::new(),
            transport_error: Some(error.to_string()),
        },
    }
}
