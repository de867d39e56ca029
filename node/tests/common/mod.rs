//! Test harness: real `gpumesh node` processes on loopback with ephemeral
//! ports, and waits on conditions with deadlines.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses a different part of the harness")]

pub mod browser;
pub mod engine;
pub mod llm;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gpumesh_web::ClusterResponse;
use tokio::time::Instant;

pub const GOSSIP_INTERVAL_MS: u64 = 200;
/// A registry serving `echo`, a synthetic model of 1 ms a batch.
pub const ECHO_REGISTRY: &str = "\
[[model]]
name = \"echo\"
kind = \"synthetic\"
service_time_ms = 1
max_batch_size = 8
";
const POLL_MS: u64 = 50;

/// Ports handed out so far by this test process.
static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
/// Test nodes listen below Linux's ephemeral range (32768 and up), so no
/// outgoing connection and no `bind(0)` can take a port between the moment
/// it is chosen here and the moment the node process binds it.
const PORT_BASE: u16 = 20_000;
const PORT_SPAN: u16 = 12_000;

/// Free loopback ports for one node: (http, gossip, cluster).
pub fn free_ports() -> (u16, u16, u16) {
    (free_port(), free_port(), free_port())
}

/// A loopback port that is free for both TCP and UDP now, outside the
/// ephemeral range; successive calls (and test processes, by their pid)
/// start at different places.
fn free_port() -> u16 {
    let start = u16::try_from(std::process::id() % u32::from(PORT_SPAN)).expect("below span");
    for _ in 0..PORT_SPAN {
        let offset = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = PORT_BASE + (start + offset % PORT_SPAN) % PORT_SPAN;
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free loopback port in {PORT_BASE}..{}", PORT_BASE + PORT_SPAN);
}

/// Writes a fresh secret file with mode 0400.
pub fn write_secret(dir: &Path, file: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let output = Command::new(env!("CARGO_BIN_EXE_gpumesh")).arg("keygen").output().expect("keygen runs");
    assert!(output.status.success());
    let path = dir.join(file);
    std::fs::write(&path, &output.stdout).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    path
}

/// One node process.
pub struct TestNode {
    pub name: String,
    pub url: String,
    pub gossip: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub ports: (u16, u16, u16),
    /// The gRPC address, `127.0.0.1:port`.
    pub grpc: String,
    pub secret: Option<PathBuf>,
    child: Child,
}

/// How to start a node.
pub struct NodeSpec<'a> {
    pub name: Option<&'a str>,
    pub dir: &'a Path,
    pub data_dir_name: &'a str,
    pub secret: Option<&'a Path>,
    pub seeds: &'a [String],
    pub ports: (u16, u16, u16),
    /// Model registry; `None` uses the bundled one.
    pub models: Option<&'a Path>,
}

impl TestNode {
    pub fn start(spec: &NodeSpec<'_>) -> Self {
        Self::start_with(spec, &[])
    }

    /// Starts a node with more flags after those `spec` gives.
    pub fn start_with(spec: &NodeSpec<'_>, extra_args: &[&str]) -> Self {
        let (http, gossip, cluster) = spec.ports;
        let data_dir = spec.dir.join(spec.data_dir_name);
        let log = spec.dir.join(format!("{}.{}.log", spec.data_dir_name, http));
        let log_file = std::fs::File::create(&log).expect("log file");
        let grpc = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_gpumesh"));
        command
            .arg("node")
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--grpc", &grpc])
            .args(["--gossip", &format!("127.0.0.1:{gossip}")])
            .args(["--cluster", &format!("127.0.0.1:{cluster}")])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--gossip-interval-ms", &GOSSIP_INTERVAL_MS.to_string()])
            .env("GPUMESH_LOG", "info,gpumesh_actors=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        if let Some(name) = spec.name {
            command.args(["--name", name]);
        }
        if let Some(secret) = spec.secret {
            command.arg("--secret-file").arg(secret);
        }
        for seed in spec.seeds {
            command.args(["--seed", seed]);
        }
        if let Some(models) = spec.models {
            command.arg("--models").arg(models);
        }
        command.args(extra_args);
        let child = command.spawn().expect("gpumesh node starts");
        Self {
            name: spec.name.unwrap_or(spec.data_dir_name).to_string(),
            url: format!("http://127.0.0.1:{http}"),
            gossip: format!("127.0.0.1:{gossip}"),
            data_dir,
            log,
            ports: spec.ports,
            grpc,
            secret: spec.secret.map(Path::to_path_buf),
            child,
        }
    }

    /// A single node called `solo` in an open cluster.
    pub fn solo(dir: &Path, models: Option<&Path>) -> Self {
        Self::start(&NodeSpec {
            name: Some("solo"),
            dir,
            data_dir_name: "solo",
            secret: None,
            seeds: &[],
            ports: free_ports(),
            models,
        })
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGTERM)
            .expect("signal");
    }

    /// Waits for the process to exit, failing the test at `timeout`.
    pub async fn exit_status(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "node did not exit within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` until it returns `Some`, failing the test at `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// `GET /cluster` of a node, `None` while it does not answer.
pub async fn fetch_view(client: &reqwest::Client, url: &str) -> Option<ClusterResponse> {
    let response = client.get(format!("{url}/cluster")).timeout(Duration::from_secs(2)).send().await.ok()?;
    response.json().await.ok()
}

/// True when `view` lists exactly `names`, all alive, trusted and connected.
pub fn sees_all(view: &ClusterResponse, names: &[String]) -> bool {
    view.nodes.len() == names.len()
        && names.iter().all(|name| {
            view.nodes.iter().any(|n| &n.name == name && n.status.as_str() == "alive" && n.trusted && n.connected)
        })
}

/// A cluster of `count` nodes sharing one secret; node 0 is everyone's seed.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub secret: PathBuf,
    pub nodes: Vec<TestNode>,
}

impl TestCluster {
    pub fn start(count: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = write_secret(dir.path(), "secret");
        let mut nodes: Vec<TestNode> = Vec::new();
        for index in 0..count {
            let name = format!("n{}", index + 1);
            let seeds: Vec<String> = nodes.first().map(|first| first.gossip.clone()).into_iter().collect();
            let spec = NodeSpec {
                name: Some(&name),
                dir: dir.path(),
                data_dir_name: &name,
                secret: Some(&secret),
                seeds: &seeds,
                ports: free_ports(),
                models: None,
            };
            nodes.push(TestNode::start(&spec));
        }
        Self { dir, secret, nodes }
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Waits until every node sees every node alive, trusted and linked.
    /// On timeout it fails with what each node saw and the end of its log.
    pub async fn wait_formed(&self, client: &reqwest::Client, timeout: Duration) {
        let names = self.names();
        let deadline = Instant::now() + timeout;
        loop {
            let mut views = Vec::new();
            for node in &self.nodes {
                views.push(fetch_view(client, &node.url).await);
            }
            if views.iter().all(|view| view.as_ref().is_some_and(|view| sees_all(view, &names))) {
                return;
            }
            if Instant::now() >= deadline {
                let mut report = format!("timed out after {timeout:?} waiting until every node sees the whole cluster");
                for (node, view) in self.nodes.iter().zip(&views) {
                    report.push_str(&format!("\n--- {} ({}) sees:", node.name, node.url));
                    match view {
                        None => report.push_str(" no answer"),
                        Some(view) => {
                            for n in &view.nodes {
                                let (status, trusted, connected) = (n.status.as_str(), n.trusted, n.connected);
                                report.push_str(&format!(" {}[{status} trusted={trusted} linked={connected}]", n.name));
                            }
                        }
                    }
                    let log = node.log_text();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    report.push_str(&format!(
                        "\n  log tail:\n    {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
                    ));
                }
                panic!("{report}");
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }
}

/// A lone node `name` in an open cluster serving [`ECHO_REGISTRY`], with
/// `extra_args`.
pub fn start_echo(dir: &Path, name: &str, extra_args: &[&str]) -> TestNode {
    let registry = dir.join(format!("{name}-echo.toml"));
    std::fs::write(&registry, ECHO_REGISTRY).expect("registry");
    let spec = NodeSpec {
        name: Some(name),
        dir,
        data_dir_name: name,
        secret: None,
        seeds: &[],
        ports: free_ports(),
        models: Some(&registry),
    };
    TestNode::start_with(&spec, extra_args)
}

/// Waits until the node at `url` is ready (its models load before it serves).
pub async fn wait_ready(client: &reqwest::Client, url: &str, timeout: Duration) {
    let ready = format!("{url}/v2/health/ready");
    wait_until("the node is ready", timeout, || async {
        (client.get(&ready).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
}

/// Starts nodes n1.. with the given registries (TOML text), n1 the seed.
pub fn start_with_registries(dir: &Path, registries: &[String]) -> Vec<TestNode> {
    let secret = write_secret(dir, "secret");
    let mut nodes: Vec<TestNode> = Vec::new();
    for (index, registry) in registries.iter().enumerate() {
        let name = format!("n{}", index + 1);
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, registry).expect("registry");
        let seeds: Vec<String> = nodes.first().map(|n| n.gossip.clone()).into_iter().collect();
        nodes.push(TestNode::start(&NodeSpec {
            name: Some(&name),
            dir,
            data_dir_name: &name,
            secret: Some(&secret),
            seeds: &seeds,
            ports: free_ports(),
            models: Some(&path),
        }));
    }
    nodes
}

/// Waits until `at` sees `holders` serving `model`, alive, trusted and linked.
pub async fn wait_served(client: &reqwest::Client, at: &str, model: &str, holders: &[&str]) {
    wait_until("the model's holders appear in gossip, linked", Duration::from_secs(10), || async {
        let view = fetch_view(client, at).await?;
        holders
            .iter()
            .all(|holder| {
                view.nodes.iter().any(|n| {
                    n.name == *holder
                        && n.status.as_str() == "alive"
                        && n.connected
                        && n.models.iter().any(|m| m.name == model)
                })
            })
            .then_some(())
    })
    .await;
}

/// The value of the sample `series` (a metric's name with its labels, as
/// the text format writes them) in a Prometheus text page.
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// [`sample`] read from `url`'s `/metrics`.
pub async fn fetch_sample(client: &reqwest::Client, url: &str, series: &str) -> Option<f64> {
    let page = client.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
    sample(&page, series)
}
