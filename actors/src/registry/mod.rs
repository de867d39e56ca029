//! The model registry: `models/models.toml` (SPEC sections 5 and 10),
//! parsed and validated (pure: the caller reads the file).
//!
//! - this module: the file's entries, tensor models (ONNX, synthetic).
//! - `llm`: language models (an OpenAI-compatible engine beside the node,
//!   or a synthetic one).

mod llm;

pub use llm::{EngineKind, LlmKind, OpenAiEngine, SyntheticLlm};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::executor::batch::BatchPolicy;

/// Most rows a model may batch.
pub const MAX_BATCH_SIZE_LIMIT: usize = 4096;
/// Longest a batch may wait to fill.
pub const MAX_QUEUE_DELAY_US_LIMIT: u64 = 10_000_000;
/// Most requests one model may queue.
pub const MAX_QUEUE_SIZE_LIMIT: usize = 1_000_000;
const DEFAULT_MAX_QUEUE_SIZE: usize = 1024;

/// Where a model may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevicePreference {
    Gpu,
    Cpu,
    Any,
}

/// What executes a model.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelKind {
    /// An ONNX file run by ONNX Runtime.
    Onnx { path: PathBuf },
    /// Holds each batch for `service_time_ms + rows * service_time_per_item_ms`
    /// and returns its inputs as outputs. A batch holding an input element
    /// equal to `panic_on_input` panics (fault injection for tests and
    /// drills: a panicking batch must fail only its own requests).
    Synthetic { service_time_ms: f64, service_time_per_item_ms: f64, panic_on_input: Option<f32> },
    /// A language model (SPEC section 10).
    Llm(LlmKind),
}

impl ModelKind {
    /// The registry's `kind` of ONNX models (the default).
    pub const ONNX: &'static str = "onnx";
    /// The registry's `kind` of synthetic models, which is also the
    /// platform and the device such a model reports.
    pub const SYNTHETIC: &'static str = "synthetic";

    /// A synthetic model.
    pub fn is_synthetic(&self) -> bool {
        matches!(self, Self::Synthetic { .. })
    }

    /// A language model, served through `/v1` rather than `/v2`.
    pub fn llm(&self) -> Option<&LlmKind> {
        match self {
            Self::Llm(kind) => Some(kind),
            _ => None,
        }
    }
}

/// One validated model entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub kind: ModelKind,
    pub batch: BatchPolicy,
    pub device: DevicePreference,
    pub min_free_vram_mb: u64,
}

impl ModelSpec {
    /// Batching joins requests (SPEC section 5: 0 and 1 turn it off).
    pub fn batching(&self) -> bool {
        self.batch.max_batch_size > 1
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    model: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    name: String,
    #[serde(default)]
    kind: Option<String>,
    path: Option<PathBuf>,
    #[serde(default)]
    max_batch_size: usize,
    #[serde(default)]
    max_queue_delay_us: u64,
    #[serde(default = "default_queue_size")]
    max_queue_size: usize,
    #[serde(default = "default_device")]
    device: DevicePreference,
    #[serde(default)]
    min_free_vram_mb: u64,
    service_time_ms: Option<f64>,
    service_time_per_item_ms: Option<f64>,
    panic_on_input: Option<f32>,
    // Language models (SPEC section 10).
    url: Option<String>,
    engine: Option<EngineKind>,
    upstream_model: Option<String>,
    launch: Option<Vec<String>>,
    max_concurrency: Option<usize>,
    prefill_ms_per_token: Option<f64>,
    decode_ms_per_token: Option<f64>,
    max_sequences: Option<usize>,
    kv_cache_tokens: Option<usize>,
}

fn default_queue_size() -> usize {
    DEFAULT_MAX_QUEUE_SIZE
}

fn default_device() -> DevicePreference {
    DevicePreference::Any
}

/// A registry file that cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    #[error("model registry is not valid TOML: {0}")]
    Syntax(String),
    #[error("model {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("model {0:?} is listed twice; give each model its own name")]
    Duplicate(String),
}

pub(crate) fn invalid(name: &str, reason: impl Into<String>) -> RegistryError {
    RegistryError::Invalid { name: name.to_string(), reason: reason.into() }
}

/// Parses the registry text; relative paths are resolved against `base_dir`
/// (the directory of the file).
pub fn parse_registry(text: &str, base_dir: &Path) -> Result<Vec<ModelSpec>, RegistryError> {
    let file: RegistryFile =
        toml::from_str(text).map_err(|error| RegistryError::Syntax(error.message().trim().to_string()))?;
    let mut names = BTreeSet::new();
    let mut specs = Vec::new();
    for entry in file.model {
        if !names.insert(entry.name.clone()) {
            return Err(RegistryError::Duplicate(entry.name));
        }
        specs.push(validate(entry, base_dir)?);
    }
    Ok(specs)
}

fn validate(entry: Entry, base_dir: &Path) -> Result<ModelSpec, RegistryError> {
    let name = entry.name.as_str();
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(invalid(name, "names use 1 to 128 letters, digits, '-', '_' or '.'"));
    }
    if entry.max_batch_size > MAX_BATCH_SIZE_LIMIT {
        return Err(invalid(name, format!("max_batch_size {} is above {MAX_BATCH_SIZE_LIMIT}", entry.max_batch_size)));
    }
    if entry.max_queue_delay_us > MAX_QUEUE_DELAY_US_LIMIT {
        return Err(invalid(name, format!("max_queue_delay_us is above {MAX_QUEUE_DELAY_US_LIMIT}")));
    }
    if !(1..=MAX_QUEUE_SIZE_LIMIT).contains(&entry.max_queue_size) {
        return Err(invalid(name, format!("max_queue_size must be 1 to {MAX_QUEUE_SIZE_LIMIT}")));
    }
    let tensor_only = [entry.service_time_ms.is_some(), entry.service_time_per_item_ms.is_some()];
    let llm_kind = matches!(entry.kind.as_deref(), Some(LlmKind::OPENAI | LlmKind::SYNTHETIC_LLM));
    if !llm_kind && let Some(key) = llm::first_key(&entry) {
        return Err(invalid(name, format!("{key} applies only to kind = \"openai\" or \"synthetic-llm\"")));
    }
    let kind = match entry.kind.as_deref().unwrap_or(ModelKind::ONNX) {
        kind @ (LlmKind::OPENAI | LlmKind::SYNTHETIC_LLM) => {
            if tensor_only.contains(&true) || entry.panic_on_input.is_some() || entry.path.is_some() {
                return Err(invalid(name, "a language model has no path, service times or panic_on_input"));
            }
            ModelKind::Llm(llm::validate(name, kind, &entry)?)
        }
        ModelKind::ONNX => {
            let path = entry.path.ok_or_else(|| invalid(name, "an onnx model needs path = \"file.onnx\""))?;
            if tensor_only.contains(&true) || entry.panic_on_input.is_some() {
                return Err(invalid(name, "service times and panic_on_input apply only to kind = \"synthetic\""));
            }
            ModelKind::Onnx { path: base_dir.join(path) }
        }
        ModelKind::SYNTHETIC => {
            let service_time_ms = entry.service_time_ms.unwrap_or(0.0);
            let service_time_per_item_ms = entry.service_time_per_item_ms.unwrap_or(0.0);
            let valid = |ms: f64| ms.is_finite() && (0.0..=60_000.0).contains(&ms);
            if !valid(service_time_ms) || !valid(service_time_per_item_ms) {
                return Err(invalid(name, "service times must be 0 to 60000 ms"));
            }
            if entry.path.is_some() {
                return Err(invalid(name, "a synthetic model has no path"));
            }
            if entry.panic_on_input.is_some_and(|marker| !marker.is_finite()) {
                return Err(invalid(name, "panic_on_input must be a finite number"));
            }
            let panic_on_input = entry.panic_on_input;
            ModelKind::Synthetic { service_time_ms, service_time_per_item_ms, panic_on_input }
        }
        other => {
            let kinds = "\"onnx\", \"synthetic\", \"openai\" or \"synthetic-llm\"";
            return Err(invalid(name, format!("unknown kind {other:?}: use {kinds}")));
        }
    };
    Ok(ModelSpec {
        name: entry.name,
        kind,
        batch: BatchPolicy {
            max_batch_size: entry.max_batch_size,
            max_queue_delay: Duration::from_micros(entry.max_queue_delay_us),
            max_queue_size: entry.max_queue_size,
        },
        device: entry.device,
        min_free_vram_mb: entry.min_free_vram_mb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_onnx_and_synthetic_models() {
        let text = r#"
            [[model]]
            name = "tiny"
            path = "tiny.onnx"
            max_batch_size = 32
            max_queue_delay_us = 2000
            device = "cpu"

            [[model]]
            name = "fake"
            kind = "synthetic"
            service_time_ms = 5
            service_time_per_item_ms = 0.5
        "#;
        let specs = parse_registry(text, Path::new("/m")).expect("valid");
        assert_eq!(specs[0].kind, ModelKind::Onnx { path: PathBuf::from("/m/tiny.onnx") });
        assert_eq!(specs[0].batch.max_queue_delay, Duration::from_micros(2000));
        assert_eq!(specs[0].batch.max_queue_size, DEFAULT_MAX_QUEUE_SIZE);
        assert_eq!(specs[0].device, DevicePreference::Cpu);
        assert!(specs[0].batching());
        assert_eq!(
            specs[1].kind,
            ModelKind::Synthetic { service_time_ms: 5.0, service_time_per_item_ms: 0.5, panic_on_input: None }
        );
        assert!(!specs[1].batching());
    }

    #[test]
    fn bad_registries_say_what_is_wrong() {
        let cases = [
            ("[[model]]\nname = \"a\"\npath = \"a.onnx\"\n[[model]]\nname = \"a\"\npath = \"b.onnx\"", "listed twice"),
            ("[[model]]\nname = \"a b\"\npath = \"a.onnx\"", "names use"),
            ("[[model]]\nname = \"a\"", "needs path"),
            ("[[model]]\nname = \"a\"\npath = \"a.onnx\"\nmax_batch_size = 100000", "max_batch_size"),
            ("[[model]]\nname = \"a\"\npath = \"a.onnx\"\nmax_queue_size = 0", "max_queue_size"),
            ("[[model]]\nname = \"a\"\nkind = \"magic\"", "unknown kind"),
            ("[[model]]\nname = \"a\"\nkind = \"synthetic\"\nservice_time_ms = -1", "service times"),
            ("[[model]]\nname = \"a\"\npath = \"a.onnx\"\ndevice = \"tpu\"", "not valid TOML"),
            ("[[model]]\nname = \"a\"\npath = \"a.onnx\"\nbatch = 3", "not valid TOML"),
        ];
        for (text, expected) in cases {
            let error = parse_registry(text, Path::new(".")).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
