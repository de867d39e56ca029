//! llama.cpp's `llama-server` beside test nodes: the registry that makes a
//! node launch one on the tiny GGUF model, and finding its process.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a launched engine may take to load the model and answer.
pub const ENGINE_START: Duration = Duration::from_secs(30);

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
    let launch: Vec<String> = launch.iter().map(|arg| format!("{arg:?}")).collect();
    format!(
        "[[model]]\nname = \"tiny-llm\"\nkind = \"openai\"\nurl = \"http://127.0.0.1:{port}\"\nengine = \"llamacpp\"\nmax_concurrency = {max_concurrency}\nlaunch = [{}]\n",
        launch.join(", ")
    )
}

/// The pid of the process whose command line holds `--port <port>`.
pub fn engine_pid(port: u16) -> Option<i32> {
    let wanted = format!("--port\0{port}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("llama-server") && cmdline.contains(&wanted)).then_some(pid)
    })
}
