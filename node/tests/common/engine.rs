//! Engines beside test nodes: the registries that make a node launch
//! llama.cpp's `llama-server` on the tiny GGUF model or vLLM on the same
//! model in Hugging Face's layout, and finding an engine's process.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a launched engine may take to load the model and answer.
pub const ENGINE_START: Duration = Duration::from_secs(30);
/// How long a launched vLLM may take: it imports torch and warms up, about
/// 50 s for two at once on two cores.
pub const VLLM_START: Duration = Duration::from_secs(180);

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

/// The project `.venv`'s Python (onnxruntime, tritonclient, openai).
pub fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(python.is_file(), "{} missing: run scripts/setup.sh first", python.display());
    python
}

/// A registry with one llama.cpp engine on `port`, launched by the node.
pub fn engine_registry(port: u16, max_concurrency: u32, extra: &[&str]) -> String {
    let repo = repo();
    let server = repo.join(".venv/bin/llama-server");
    let model = repo.join("models/tiny-llm.gguf");
    assert!(server.is_file() && model.is_file(), "run scripts/setup.sh first: it builds llama-server and the model");
    let mut launch = vec![
        server.display().to_string(),
        "-m".into(),
        model.display().to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--metrics".into(),
        "--slots".into(),
        "-t".into(),
        "1".into(),
    ];
    launch.extend(extra.iter().map(|arg| arg.to_string()));
    registry(port, "llamacpp", max_concurrency, &launch)
}

/// A registry with one vLLM engine (`.venv/bin/vllm-server`) on `port`,
/// launched by the node.
pub fn vllm_registry(port: u16, max_concurrency: u32) -> String {
    let repo = repo();
    let server = repo.join(".venv/bin/vllm-server");
    let model = repo.join("models/tiny-llm-hf");
    assert!(server.is_file() && model.is_dir(), "run scripts/setup.sh first: it installs vLLM and writes the model");
    let launch: Vec<String> = [
        &server.display().to_string(),
        "--model",
        &model.display().to_string(),
        "--served-model-name",
        "tiny-llm",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "4096",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    registry(port, "vllm", max_concurrency, &launch)
}

fn registry(port: u16, engine: &str, max_concurrency: u32, launch: &[String]) -> String {
    let launch: Vec<String> = launch.iter().map(|arg| format!("{arg:?}")).collect();
    format!(
        "[[model]]\nname = \"tiny-llm\"\nkind = \"openai\"\nurl = \"http://127.0.0.1:{port}\"\nengine = \"{engine}\"\nmax_concurrency = {max_concurrency}\nlaunch = [{}]\n",
        launch.join(", ")
    )
}

/// The pid of the engine (llama.cpp's or vLLM's server) whose command line
/// holds `--port <port>`.
pub fn engine_pid(port: u16) -> Option<i32> {
    let wanted = format!("--port\0{port}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        // Not the shell the node runs an engine under (`sh -c ... argv`).
        let engine =
            (cmdline.contains("llama-server") || cmdline.contains("vllm.entrypoints")) && !cmdline.starts_with("sh\0");
        (engine && cmdline.contains(&wanted)).then_some(pid)
    })
}

/// The live processes of process group `group` (an engine's, with what it
/// started itself); a zombie is dead already.
pub fn group_members(group: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(*pid)));
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (name) state ...`: the state follows the name's last `)`.
            let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
            pgid.is_ok_and(|pgid| pgid.as_raw() == group) && !zombie
        })
        .collect()
}
