//! `gpumesh demo`: start N local node processes (ports, data dirs and a
//! secret chosen for the user), each with the bundled models and a
//! language model beside it (llama.cpp's `llama-server` on the tiny GGUF
//! where scripts/setup.sh built them, else a synthetic one), wait until
//! they see each other, send a burst of tensor requests and a few chats,
//! print each status URL, and stop them cleanly on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use gpumesh_actors::{Clock as _, SystemClock};
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::status::{fetch_cluster, render};

const MAX_DEMO_NODES: usize = 16;
/// How long the nodes get to find each other.
const FORM_TIMEOUT_MS: u64 = 30_000;
const POLL_INTERVAL_MS: u64 = 200;
/// How long a node gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT_MS: u64 = 10_000;
/// Requests the demo sends once the cluster has formed.
const BURST_REQUESTS: usize = 64;
/// The bundled model the burst uses.
const DEMO_MODEL: &str = "tiny";
/// The language model beside every node.
const DEMO_LLM: &str = "tiny-llm";
/// Chats the demo sends once the cluster has formed.
const DEMO_CHATS: [&str; 3] = ["Hello, mesh!", "What runs where?", "Tell me about the gossip."];
/// How long the engines get to load before the chats give up.
const ENGINES_READY_TIMEOUT_MS: u64 = 30_000;

/// Flags of `gpumesh demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// How many nodes to start (1 to 16).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Where the nodes keep their data dirs, logs and the cluster secret.
    #[arg(long, default_value = "gpumesh-demo")]
    dir: PathBuf,
    /// Gossip period of the nodes in milliseconds.
    #[arg(long, default_value_t = 200)]
    gossip_interval_ms: u64,
}

struct DemoNode {
    name: String,
    url: String,
    /// The KServe v2 / Triton gRPC address.
    grpc: String,
    log: PathBuf,
    child: Child,
}

/// Picks free loopback ports: (http, gossip, cluster) per node. All are
/// held until every port is chosen so no two nodes get the same one.
fn free_ports(count: usize) -> anyhow::Result<Vec<(u16, u16, u16)>> {
    let mut held_tcp = Vec::new();
    let mut held_udp = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..count {
        let http = std::net::TcpListener::bind("127.0.0.1:0")?;
        let gossip = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let cluster = std::net::TcpListener::bind("127.0.0.1:0")?;
        ports.push((http.local_addr()?.port(), gossip.local_addr()?.port(), cluster.local_addr()?.port()));
        held_tcp.extend([http, cluster]);
        held_udp.push(gossip);
    }
    Ok(ports)
}

fn ensure_secret(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("secret");
    if !path.exists() {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        writeln!(file, "{}", crate::keygen())?;
    }
    Ok(path)
}

/// A registry for one demo node: the bundled models (their paths made
/// absolute) and the language model, served by a `llama-server` the node
/// launches on `engine_port`, or synthetic where none is built.
fn demo_registry(args: &DemoArgs, name: &str, engine_port: u16) -> anyhow::Result<PathBuf> {
    let mut models: Vec<toml::Value> = Vec::new();
    if let Some(bundled) = crate::models::registry_path(None) {
        let text = std::fs::read_to_string(&bundled)?;
        let table: toml::Table = toml::from_str(&text).with_context(|| format!("{} is invalid", bundled.display()))?;
        let base = bundled.parent().map(Path::to_path_buf).unwrap_or_default();
        for mut model in table.get("model").and_then(toml::Value::as_array).cloned().unwrap_or_default() {
            if let Some(path) = model.get("path").and_then(toml::Value::as_str) {
                let absolute = base.join(path).display().to_string();
                model.as_table_mut().map(|fields| fields.insert("path".into(), absolute.into()));
            }
            models.push(model);
        }
    }
    let llm: toml::Table = match crate::models::bundled_llama() {
        Some((server, gguf)) => toml::toml! {
            name = DEMO_LLM
            kind = "openai"
            url = (format!("http://127.0.0.1:{engine_port}"))
            engine = "llamacpp"
            max_concurrency = 4
            launch = [
                (server.display().to_string()), "-m", (gguf.display().to_string()), "--host", "127.0.0.1",
                "--port", (engine_port.to_string()), "--metrics", "--slots", "-np", "4", "-t", "1"
            ]
        },
        None => toml::toml! {
            name = DEMO_LLM
            kind = "synthetic-llm"
            prefill_ms_per_token = 0.2
            decode_ms_per_token = 8.0
        },
    };
    models.push(toml::Value::Table(llm));
    let mut registry = toml::Table::new();
    registry.insert("model".into(), toml::Value::Array(models));
    let path = args.dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&registry)?).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn spawn_nodes(args: &DemoArgs, secret: &Path) -> anyhow::Result<Vec<DemoNode>> {
    let exe = std::env::current_exe().context("cannot find the gpumesh executable")?;
    let ports = free_ports(args.nodes)?;
    // Engines and gRPC take the HTTP port of another set.
    let engine_ports: Vec<u16> = free_ports(args.nodes)?.into_iter().map(|(http, _, _)| http).collect();
    let grpc_ports: Vec<u16> = free_ports(args.nodes)?.into_iter().map(|(http, _, _)| http).collect();
    let seed = format!("127.0.0.1:{}", ports[0].1);
    let mut nodes = Vec::new();
    for (index, (http, gossip, cluster)) in ports.into_iter().enumerate() {
        let name = format!("demo-{}", index + 1);
        let registry = demo_registry(args, &name, engine_ports[index])?;
        let log = args.dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(&exe);
        command
            .arg("node")
            .args(["--name", &name])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--grpc", &format!("127.0.0.1:{}", grpc_ports[index])])
            .args(["--gossip", &format!("127.0.0.1:{gossip}")])
            .args(["--cluster", &format!("127.0.0.1:{cluster}")])
            .arg("--data-dir")
            .arg(args.dir.join(&name))
            .arg("--secret-file")
            .arg(secret)
            .arg("--models")
            .arg(&registry)
            .args(["--gossip-interval-ms", &args.gossip_interval_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        if index > 0 {
            command.args(["--seed", &seed]);
        }
        let child = command.spawn().with_context(|| format!("cannot start {name}"))?;
        let grpc = format!("127.0.0.1:{}", grpc_ports[index]);
        nodes.push(DemoNode { name, url: format!("http://127.0.0.1:{http}"), grpc, log, child });
    }
    Ok(nodes)
}

/// Waits until every node sees every node alive, trusted and linked.
async fn wait_formed(nodes: &mut [DemoNode]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let expected = nodes.len();
    let bar = ProgressBar::new(expected as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:20}] {pos}/{len} nodes see the whole cluster")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("forming cluster");
    let deadline = SystemClock.now() + Duration::from_millis(FORM_TIMEOUT_MS);
    loop {
        let mut formed = 0;
        for node in nodes.iter_mut() {
            if let Some(status) = node.child.try_wait()? {
                bar.abandon();
                bail!("{} exited ({status}); see {}", node.name, node.log.display());
            }
            let Ok(cluster) = fetch_cluster(&client, &node.url).await else { continue };
            let complete = cluster.nodes.len() == expected
                && cluster.nodes.iter().all(|n| n.status.as_str() == "alive" && n.trusted && n.connected);
            formed += usize::from(complete);
        }
        bar.set_position(formed as u64);
        if formed == expected {
            bar.finish_with_message("cluster formed");
            return Ok(());
        }
        if SystemClock.now() >= deadline {
            bar.abandon();
            bail!(
                "the nodes did not all see each other within {} s; see the logs in the demo dir",
                FORM_TIMEOUT_MS / 1000
            );
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// Sends a burst of requests for the bundled model, spread over the nodes,
/// and prints where they ran.
async fn burst(nodes: &[DemoNode]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let info = crate::client::model_info(&client, &nodes[0].url, DEMO_MODEL).await?;
    let prepared = crate::client::random_request(&info, 1, true, serde_json::Map::new(), 1)?;
    let requests = (0..BURST_REQUESTS).map(|index| {
        let (client, prepared, url) = (client.clone(), prepared.clone(), nodes[index % nodes.len()].url.clone());
        tokio::spawn(async move { crate::client::send(&client, &url, DEMO_MODEL, &prepared).await })
    });
    let mut ran_on: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut failed = 0;
    for request in requests.collect::<Vec<_>>() {
        match request.await {
            Ok(outcome) if outcome.status == Some(200) => {
                *ran_on.entry(outcome.node.unwrap_or_else(|| "?".into())).or_default() += 1;
            }
            _ => failed += 1,
        }
    }
    let spread: Vec<String> = ran_on.iter().map(|(node, count)| format!("{node}: {count}")).collect();
    println!("\nsent {BURST_REQUESTS} {DEMO_MODEL} requests: {} ({failed} failed)", spread.join(", "));
    Ok(())
}

/// Sends a few chats to the language model, each to another node, once the
/// engines are up, and prints the answers and where they were generated.
async fn chats(nodes: &[DemoNode]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = SystemClock.now() + Duration::from_millis(ENGINES_READY_TIMEOUT_MS);
    println!();
    for (index, prompt) in DEMO_CHATS.iter().enumerate() {
        let url = format!("{}/v1/chat/completions", nodes[index % nodes.len()].url);
        let body =
            serde_json::json!({"model": DEMO_LLM, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16});
        loop {
            let response = client.post(&url).json(&body).send().await?;
            let status = response.status();
            let node = response.headers().get("x-gpumesh-node").and_then(|v| v.to_str().ok()).map(String::from);
            let answer: serde_json::Value = response.json().await?;
            if status.is_success() {
                let text = answer["choices"][0]["message"]["content"].as_str().unwrap_or_default().trim().to_string();
                println!(
                    "chat at {} > {prompt}\n  {} (generated on {})",
                    nodes[index % nodes.len()].name,
                    text,
                    node.unwrap_or_default()
                );
                break;
            }
            if status.as_u16() != 503 || SystemClock.now() >= deadline {
                bail!("{status}: {}", answer["error"]["message"]);
            }
            // The engines are still loading.
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }
    Ok(())
}

/// Sends SIGTERM to every node and waits for each to exit; kills the ones
/// that do not stop in time.
async fn stop_nodes(nodes: &mut [DemoNode]) {
    for node in nodes.iter() {
        if let Some(pid) = node.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    for node in nodes.iter_mut() {
        match tokio::time::timeout(Duration::from_millis(STOP_TIMEOUT_MS), node.child.wait()).await {
            Ok(Ok(status)) if status.success() => println!("{} stopped", node.name),
            Ok(Ok(status)) => println!("{} stopped ({status}); see {}", node.name, node.log.display()),
            Ok(Err(error)) => println!("{}: {error}", node.name),
            Err(_) => {
                let _ = node.child.kill().await;
                println!("{} did not stop in time and was killed", node.name);
            }
        }
    }
}

/// Waits for Ctrl-C, SIGTERM, or a node exiting on its own.
async fn wait_until_stopped(nodes: &mut [DemoNode]) -> anyhow::Result<Option<String>> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(None),
            _ = terminate.recv() => return Ok(None),
            () = tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)) => {
                for node in nodes.iter_mut() {
                    if let Some(status) = node.child.try_wait()? {
                        return Ok(Some(format!("{} exited ({status}); see {}", node.name, node.log.display())));
                    }
                }
            }
        }
    }
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(1..=MAX_DEMO_NODES).contains(&args.nodes) {
        bail!("--nodes {} is out of range: use 1 to {MAX_DEMO_NODES}", args.nodes);
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let secret = ensure_secret(&args.dir)?;
    let mut nodes = spawn_nodes(&args, &secret)?;
    if let Err(error) = wait_formed(&mut nodes).await {
        stop_nodes(&mut nodes).await;
        return Err(error);
    }
    if let Err(error) = burst(&nodes).await {
        println!("burst of requests skipped: {error:#}");
    }
    if let Err(error) = chats(&nodes).await {
        println!("chats skipped: {error:#}");
    }
    if let Ok(cluster) = fetch_cluster(&reqwest::Client::new(), &nodes[0].url).await {
        print!("\n{}", render(&cluster));
    }
    println!("\nstatus pages:");
    for node in &nodes {
        println!("  {:<8} {}/   (gRPC {}, logs: {})", node.name, node.url, node.grpc, node.log.display());
    }
    println!("\ntry: gpumesh status --node {}\npress Ctrl-C to stop the cluster", nodes[0].url);
    let exited = wait_until_stopped(&mut nodes).await?;
    println!("stopping the cluster");
    stop_nodes(&mut nodes).await;
    match exited {
        Some(reason) => bail!("{reason}"),
        None => Ok(()),
    }
}
