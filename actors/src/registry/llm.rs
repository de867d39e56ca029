//! Language-model entries of the registry (SPEC section 10): an
//! OpenAI-compatible engine beside the node (`kind = "openai"`), or a
//! synthetic one (`kind = "synthetic-llm"`).

use serde::Deserialize;

use crate::registry::{Entry, RegistryError, invalid};

/// Most requests one model may have inside its engine at once.
const MAX_CONCURRENCY_LIMIT: usize = 4096;
/// Most sequences a synthetic engine decodes at once.
const MAX_SEQUENCES_LIMIT: usize = 4096;
/// Largest prefix cache of a synthetic engine, tokens.
const KV_CACHE_TOKENS_LIMIT: usize = 1 << 24;
/// Most arguments of an engine's `launch` command.
const LAUNCH_ARGS_LIMIT: usize = 256;
const DEFAULT_MAX_CONCURRENCY: usize = 16;
const DEFAULT_MAX_SEQUENCES: usize = 8;
const DEFAULT_KV_CACHE_TOKENS: usize = 32_768;
const DEFAULT_PREFILL_MS_PER_TOKEN: f64 = 0.2;
const DEFAULT_DECODE_MS_PER_TOKEN: f64 = 8.0;

/// How an engine publishes its load and cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// llama.cpp's `llama-server` (`/metrics` with `--metrics`, `/slots`).
    Llamacpp,
    /// vLLM (`vllm:*` metrics).
    Vllm,
    /// SGLang (`sglang:*` metrics).
    Sglang,
    /// Anything else that speaks the OpenAI API: gpumesh's own counts only.
    #[default]
    Generic,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llamacpp => "llamacpp",
            Self::Vllm => "vllm",
            Self::Sglang => "sglang",
            Self::Generic => "generic",
        }
    }
}

/// An OpenAI-compatible engine beside the node.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAiEngine {
    /// Base URL, without a trailing slash (`http://127.0.0.1:8081`).
    pub url: String,
    pub engine: EngineKind,
    /// The engine's own name of the model; `None`: asked from its `/v1/models`.
    pub upstream_model: Option<String>,
    /// The command the node starts and supervises; `None`: run by someone else.
    pub launch: Option<Vec<String>>,
    /// Most requests inside the engine at once; more wait at the node.
    pub max_concurrency: usize,
}

/// A synthetic language model: deterministic tokens at a known speed.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticLlm {
    pub prefill_ms_per_token: f64,
    pub decode_ms_per_token: f64,
    /// Sequences decoded at once; more wait.
    pub max_sequences: usize,
    /// Prompt tokens the prefix cache holds (LRU); 0: no cache.
    pub kv_cache_tokens: usize,
}

/// What serves a language model.
#[derive(Clone, Debug, PartialEq)]
pub enum LlmKind {
    OpenAi(OpenAiEngine),
    Synthetic(SyntheticLlm),
}

impl LlmKind {
    /// The registry's `kind` of engine-backed language models.
    pub const OPENAI: &'static str = "openai";
    /// The registry's `kind` of synthetic language models, also the device
    /// such a model reports.
    pub const SYNTHETIC_LLM: &'static str = "synthetic-llm";

    /// Most requests inside the engine at once.
    pub fn max_concurrency(&self) -> usize {
        match self {
            Self::OpenAi(engine) => engine.max_concurrency,
            Self::Synthetic(synthetic) => synthetic.max_sequences,
        }
    }

    /// The engine kind, as gossip and `/cluster` show it.
    pub fn device(&self) -> &'static str {
        match self {
            Self::OpenAi(engine) => engine.engine.as_str(),
            Self::Synthetic(_) => Self::SYNTHETIC_LLM,
        }
    }
}

/// The first language-model key `entry` sets, if any.
pub(super) fn first_key(entry: &Entry) -> Option<&'static str> {
    let keys = [
        ("url", entry.url.is_some()),
        ("engine", entry.engine.is_some()),
        ("upstream_model", entry.upstream_model.is_some()),
        ("launch", entry.launch.is_some()),
        ("max_concurrency", entry.max_concurrency.is_some()),
        ("prefill_ms_per_token", entry.prefill_ms_per_token.is_some()),
        ("decode_ms_per_token", entry.decode_ms_per_token.is_some()),
        ("max_sequences", entry.max_sequences.is_some()),
        ("kv_cache_tokens", entry.kv_cache_tokens.is_some()),
    ];
    keys.into_iter().find_map(|(key, set)| set.then_some(key))
}

/// Validates a language model entry of kind `kind`.
pub(super) fn validate(name: &str, kind: &str, entry: &Entry) -> Result<LlmKind, RegistryError> {
    if kind == LlmKind::OPENAI {
        let synthetic_keys = [entry.prefill_ms_per_token.is_some(), entry.decode_ms_per_token.is_some()];
        if synthetic_keys.contains(&true) || entry.max_sequences.is_some() || entry.kv_cache_tokens.is_some() {
            return Err(invalid(name, "token speeds, max_sequences and kv_cache_tokens apply only to synthetic-llm"));
        }
        return openai(name, entry).map(LlmKind::OpenAi);
    }
    let engine_keys = [entry.url.is_some(), entry.engine.is_some(), entry.upstream_model.is_some()];
    if engine_keys.contains(&true) || entry.launch.is_some() || entry.max_concurrency.is_some() {
        return Err(invalid(name, "url, engine, upstream_model, launch and max_concurrency apply only to openai"));
    }
    synthetic(name, entry).map(LlmKind::Synthetic)
}

fn openai(name: &str, entry: &Entry) -> Result<OpenAiEngine, RegistryError> {
    let url = entry.url.as_deref().ok_or_else(|| invalid(name, "an openai model needs url = \"http://host:port\""))?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|error| invalid(name, format!("url {url:?} is not a URL ({error}): use http://host:port")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(name, format!("url {url:?} must be http:// or https:// with a host")));
    }
    if let Some(upstream) = &entry.upstream_model
        && (upstream.is_empty() || upstream.len() > 256)
    {
        return Err(invalid(name, "upstream_model must have 1 to 256 characters"));
    }
    if let Some(launch) = &entry.launch
        && (launch.first().is_none_or(|program| program.is_empty()) || launch.len() > LAUNCH_ARGS_LIMIT)
    {
        return Err(invalid(name, format!("launch must name a program, with at most {LAUNCH_ARGS_LIMIT} arguments")));
    }
    let max_concurrency = entry.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
    if !(1..=MAX_CONCURRENCY_LIMIT).contains(&max_concurrency) {
        return Err(invalid(name, format!("max_concurrency must be 1 to {MAX_CONCURRENCY_LIMIT}")));
    }
    Ok(OpenAiEngine {
        url: url.trim_end_matches('/').to_string(),
        engine: entry.engine.unwrap_or_default(),
        upstream_model: entry.upstream_model.clone(),
        launch: entry.launch.clone(),
        max_concurrency,
    })
}

fn synthetic(name: &str, entry: &Entry) -> Result<SyntheticLlm, RegistryError> {
    let prefill_ms_per_token = entry.prefill_ms_per_token.unwrap_or(DEFAULT_PREFILL_MS_PER_TOKEN);
    let decode_ms_per_token = entry.decode_ms_per_token.unwrap_or(DEFAULT_DECODE_MS_PER_TOKEN);
    let valid = |ms: f64| ms.is_finite() && (0.0..=60_000.0).contains(&ms);
    if !valid(prefill_ms_per_token) || !valid(decode_ms_per_token) {
        return Err(invalid(name, "prefill_ms_per_token and decode_ms_per_token must be 0 to 60000"));
    }
    let max_sequences = entry.max_sequences.unwrap_or(DEFAULT_MAX_SEQUENCES);
    if !(1..=MAX_SEQUENCES_LIMIT).contains(&max_sequences) {
        return Err(invalid(name, format!("max_sequences must be 1 to {MAX_SEQUENCES_LIMIT}")));
    }
    let kv_cache_tokens = entry.kv_cache_tokens.unwrap_or(DEFAULT_KV_CACHE_TOKENS);
    if kv_cache_tokens > KV_CACHE_TOKENS_LIMIT {
        return Err(invalid(name, format!("kv_cache_tokens must be at most {KV_CACHE_TOKENS_LIMIT}")));
    }
    Ok(SyntheticLlm { prefill_ms_per_token, decode_ms_per_token, max_sequences, kv_cache_tokens })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::registry::{ModelKind, parse_registry};

    #[test]
    fn parses_engine_and_synthetic_language_models() {
        let text = r#"
            [[model]]
            name = "chat"
            kind = "openai"
            url = "http://127.0.0.1:8081/"
            engine = "llamacpp"
            upstream_model = "qwen2.5-7b"
            launch = ["llama-server", "-m", "/models/qwen.gguf", "--port", "8081", "--metrics"]
            max_concurrency = 4
            max_queue_size = 256

            [[model]]
            name = "fake-llm"
            kind = "synthetic-llm"
            prefill_ms_per_token = 0.2
            decode_ms_per_token = 8.0
            max_sequences = 8
            kv_cache_tokens = 32768
        "#;
        let specs = parse_registry(text, Path::new("/m")).expect("valid");
        let ModelKind::Llm(LlmKind::OpenAi(engine)) = &specs[0].kind else { panic!("{:?}", specs[0].kind) };
        assert_eq!(engine.url, "http://127.0.0.1:8081", "no trailing slash");
        assert_eq!((engine.engine, engine.max_concurrency), (EngineKind::Llamacpp, 4));
        assert_eq!(engine.upstream_model.as_deref(), Some("qwen2.5-7b"));
        assert_eq!(engine.launch.as_ref().map(Vec::len), Some(6));
        assert_eq!(specs[0].batch.max_queue_size, 256);
        let synthetic = SyntheticLlm {
            prefill_ms_per_token: 0.2,
            decode_ms_per_token: 8.0,
            max_sequences: 8,
            kv_cache_tokens: 32_768,
        };
        assert_eq!(specs[1].kind, ModelKind::Llm(LlmKind::Synthetic(synthetic)));
        assert_eq!(specs[1].kind.llm().map(LlmKind::max_concurrency), Some(8));
        let minimal =
            parse_registry("[[model]]\nname = \"m\"\nkind = \"openai\"\nurl = \"http://e:1\"", Path::new("."));
        let ModelKind::Llm(LlmKind::OpenAi(engine)) = &minimal.expect("valid")[0].kind else { panic!("openai") };
        assert_eq!((engine.engine, engine.max_concurrency, engine.launch.is_none()), (EngineKind::Generic, 16, true));
    }

    #[test]
    fn bad_language_model_entries_say_what_is_wrong() {
        let cases = [
            ("kind = \"openai\"", "needs url"),
            ("kind = \"openai\"\nurl = \"not a url\"", "is not a URL"),
            ("kind = \"openai\"\nurl = \"ftp://e:1\"", "http:// or https://"),
            ("kind = \"openai\"\nurl = \"http://e:1\"\nengine = \"tgi\"", "not valid TOML"),
            ("kind = \"openai\"\nurl = \"http://e:1\"\nlaunch = []", "launch must name a program"),
            ("kind = \"openai\"\nurl = \"http://e:1\"\nmax_concurrency = 0", "max_concurrency"),
            ("kind = \"openai\"\nurl = \"http://e:1\"\nupstream_model = \"\"", "upstream_model"),
            ("kind = \"openai\"\nurl = \"http://e:1\"\ndecode_ms_per_token = 1.0", "apply only to synthetic-llm"),
            ("kind = \"openai\"\nurl = \"http://e:1\"\npath = \"a.onnx\"", "has no path"),
            ("kind = \"synthetic-llm\"\nurl = \"http://e:1\"", "apply only to openai"),
            ("kind = \"synthetic-llm\"\ndecode_ms_per_token = -1.0", "must be 0 to 60000"),
            ("kind = \"synthetic-llm\"\nmax_sequences = 0", "max_sequences"),
            ("kind = \"synthetic-llm\"\nkv_cache_tokens = 100000000", "kv_cache_tokens"),
            ("kind = \"synthetic-llm\"\nservice_time_ms = 1.0", "has no path, service times"),
            ("path = \"a.onnx\"\nurl = \"http://e:1\"", "url applies only to kind"),
            ("kind = \"synthetic\"\nmax_sequences = 2", "max_sequences applies only to kind"),
        ];
        for (body, expected) in cases {
            let text = format!("[[model]]\nname = \"m\"\n{body}");
            let error = parse_registry(&text, Path::new(".")).expect_err(&text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
