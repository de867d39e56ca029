//! llama.cpp's `llama-server` beside test nodes: the registry that makes a
//! node launch one on the tiny GGUF model, and waits on what gossip says of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{fetch_view, wait_until};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
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

/// The `llm` load `at` sees `holder` publish for the model.
pub async fn llm_load(client: &reqwest::Client, at: &str, holder: &str) -> Option<Value> {
    let view = fetch_view(client, at).await?;
    let node = view.nodes.iter().find(|n| n.name == holder && n.status.as_str() == "alive")?;
    let model = node.models.iter().find(|m| m.name == "tiny-llm")?;
    serde_json::to_value(model.llm.as_ref()?).ok()
}

pub async fn wait_ready(client: &reqwest::Client, at: &str, holders: &[&str]) {
    wait_until("the engines are up and ready in gossip", Duration::from_secs(30), || async {
        for holder in holders {
            llm_load(client, at, holder).await.filter(|llm| llm["ready"] == true)?;
        }
        Some(())
    })
    .await;
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
