//! The status page in a real headless Chromium, and `/metrics` against
//! `/cluster`, on real node processes.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::browser::Browser;
use common::{TestNode, fetch_view, start_with_registries, wait_served, wait_until};
use gpumesh_membership::{ClusterView, CpuStats, GpuStats, LoadSummary, Member, MemberStatus, ModelLoad, NodeInfo};
use gpumesh_storage::{HistorySample, NodeSample};
use serde_json::{Value, json};
use tokio::time::Instant;

/// The failure detection bound of the membership issue.
const DETECTION_BOUND: Duration = Duration::from_secs(3);

const ECHO: &str = "[[model]]\nname = \"echo\"\nkind = \"synthetic\"\nservice_time_ms = 2\nmax_batch_size = 8\n";

/// Three nodes n1..n3 serving the synthetic `echo`, n1 the seed.
fn start_cluster(dir: &Path) -> Vec<TestNode> {
    start_with_registries(dir, &[ECHO.to_string(), ECHO.to_string(), ECHO.to_string()])
}

async fn infer(client: &reqwest::Client, url: &str) -> bool {
    let body = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]});
    let sent = client.post(format!("{url}/v2/models/echo/infer")).json(&body).send().await;
    sent.is_ok_and(|response| response.status().is_success())
}

/// Sends requests to `url` from a few tasks until dropped.
fn keep_sending(url: &str) -> Vec<AbortOnDrop> {
    (0..4)
        .map(|_| {
            let (client, url) = (reqwest::Client::new(), url.to_string());
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    if !infer(&client, &url).await {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }))
        })
        .collect()
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn text_of(browser: &Browser, css: &str) -> Option<String> {
    let value = browser.eval(&format!("return document.querySelector({css:?})?.textContent ?? null;"), vec![]).await;
    value.as_str().map(String::from)
}

/// `data-status` of each member row, by node name.
async fn member_rows(browser: &Browser) -> Vec<(String, String)> {
    let script =
        "return [...document.querySelectorAll('#members tbody tr')].map(r => [r.dataset.node, r.dataset.status]);";
    let rows: Vec<(String, String)> = serde_json::from_value(browser.eval(script, vec![]).await).unwrap_or_default();
    rows
}

fn executed(text: &str) -> u64 {
    text.replace(',', "").trim().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_live_and_shows_a_killed_node_as_not_alive_within_the_detection_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(dir.path());
    let client = reqwest::Client::new();
    wait_served(&client, &nodes[0].url, "echo", &["n1", "n2", "n3"]).await;
    let browser = Browser::start(1400, 1900).await;
    browser.client.goto(&format!("{}/", nodes[0].url)).await.expect("page opens");
    wait_until("the page lists three alive members", Duration::from_secs(10), || async {
        let rows = member_rows(&browser).await;
        (rows.len() == 3 && rows.iter().all(|(_, status)| status == "alive")).then_some(())
    })
    .await;

    let before = executed(&text_of(&browser, "#card-executed").await.expect("executed counter"));
    let senders = keep_sending(&nodes[0].url);
    let after = wait_until("the executed counter grows while requests flow", Duration::from_secs(10), || async {
        let now = executed(&text_of(&browser, "#card-executed").await?);
        (now >= before + 50).then_some(now)
    })
    .await;
    eprintln!("measured: the page's executed counter went from {before} to {after} while requests flowed");
    // Let the throughput chart collect a few samples for the screenshot.
    wait_until("the throughput chart has data", Duration::from_secs(10), || async {
        let legend = text_of(&browser, ".chart[data-metric=requests_per_s] .legend").await?;
        legend.contains("req/s").then_some(())
    })
    .await;
    let shot = browser.screenshot("status-page-3-nodes.png").await;
    eprintln!("screenshot: {}", shot.display());
    drop(senders);

    let killed_at = Instant::now();
    nodes[2].kill9();
    let status = wait_until("the page shows n3 as not alive", DETECTION_BOUND, || async {
        let rows = member_rows(&browser).await;
        rows.into_iter().find(|(name, status)| name == "n3" && status != "alive").map(|(_, status)| status)
    })
    .await;
    eprintln!("measured: the page showed n3 {status} {:?} after kill -9", killed_at.elapsed());
    let shot = browser.screenshot("status-page-node-killed.png").await;
    eprintln!("screenshot: {}", shot.display());
    browser.close().await;
}

fn synthetic_member(index: usize, self_name: &str) -> Member {
    let name = format!("gpu-{index:03}");
    let port = 20_000 + u16::try_from(index).expect("small");
    let gpus = (0..(index % 4 + 1) as u32)
        .map(|gpu| GpuStats {
            index: gpu,
            name: ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "NVIDIA L4", "NVIDIA A10G"][index % 4].into(),
            memory_total_mb: [81_559, 40_960, 23_034, 23_028][index % 4],
            memory_free_mb: 20_000 - (index as u64 * 97) % 15_000,
            memory_reserved_mb: 480,
            utilization_pct: ((index * 37) % 100) as u32,
            temperature_c: 40 + (index % 40) as u32,
            power_w: 80 + (index * 13 % 300) as u32,
        })
        .collect();
    Member {
        is_self: name == self_name,
        status: [MemberStatus::Alive, MemberStatus::Alive, MemberStatus::Alive, MemberStatus::Suspect][index % 4],
        trusted: index % 25 != 7,
        forged: false,
        age_ms: (index as u64 * 53) % 900,
        generation: 1,
        gossip_addr: format!("10.0.0.{}:{port}", index % 250).parse().expect("addr"),
        info: Some(NodeInfo {
            http_addr: format!("10.0.0.{}:8080", index % 250).parse().expect("addr"),
            cluster_addr: format!("10.0.0.{}:7947", index % 250).parse().expect("addr"),
            version: "0.1.0".into(),
            draining: false,
            started_unix_ms: 0,
        }),
        load: Some(LoadSummary {
            gpus,
            cpu: CpuStats { cores: 32, utilization_pct: 10, memory_free_mb: 100_000 },
            queue_depth: (index % 9) as u32,
            inflight: (index % 3) as u32,
            models: vec![ModelLoad {
                name: "resnet50".into(),
                device: "cuda:0".into(),
                service_ms_per_item: 1.5,
                queue_depth: (index % 9) as u32,
                inflight: (index % 3) as u32,
                completed: index as u64 * 1000,
                p50_ms: Some(2.0),
                p99_ms: Some(9.0),
                llm: None,
            }],
        }),
        name,
        load_seq: 1,
    }
}

/// Ten minutes of 2 s samples of 100 members ending at `now_ms`.
fn synthetic_history(now_ms: u64) -> Vec<HistorySample> {
    (0..300u64)
        .map(|step| HistorySample {
            unix_ms: now_ms - (299 - step) * 2_000,
            nodes: (0..100u64)
                .map(|i| NodeSample {
                    name: format!("gpu-{i:03}"),
                    status: "alive".into(),
                    requests_per_s: ((step * 7 + i * 13) % 400) as f64,
                    p50_ms: Some(2.0 + (i % 5) as f64),
                    p99_ms: Some(8.0 + ((step + i) % 30) as f64),
                    gpu_utilization_pct: Some(((step * 3 + i * 11) % 100) as f64),
                    vram_used_mb: 20_000 + (step * 50 + i * 300) % 40_000,
                    vram_total_mb: 81_559,
                    queue_depth: ((step + i) % 12) as u32,
                    inflight: (i % 3) as u32,
                })
                .collect(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_stays_responsive_with_100_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(dir.path());
    let client = reqwest::Client::new();
    wait_served(&client, &nodes[0].url, "echo", &["n1", "n2", "n3"]).await;
    let browser = Browser::start(1400, 1900).await;
    browser.client.goto(&format!("{}/", nodes[0].url)).await.expect("page opens");
    wait_until("the page renders a live snapshot", Duration::from_secs(10), || async {
        let renders = browser.eval("return window.gpumesh.state.renders;", vec![]).await;
        (renders.as_u64()? > 0).then_some(())
    })
    .await;
    // Stop the live feed, then render a 100-member view built by the same
    // code that answers /cluster, with 10 minutes of history.
    let now_ms = browser.eval("return window.gpumesh.state.last.unix_ms;", vec![]).await.as_u64().expect("time");
    let view = ClusterView {
        self_name: "gpu-000".into(),
        members: (0..100).map(|i| synthetic_member(i, "gpu-000")).collect(),
    };
    let connected = view.members.iter().filter(|m| m.trusted).map(|m| m.name.clone()).collect();
    let cluster = serde_json::to_value(gpumesh_web::cluster_response(&view, &connected)).expect("json");
    let history = serde_json::to_value(synthetic_history(now_ms)).expect("json");
    let script = "
        const [cluster, history] = arguments;
        window.gpumesh.stop();
        const s = structuredClone(window.gpumesh.state.last);
        s.cluster = cluster;
        s.sample = history[history.length - 1];
        window.gpumesh.state.history = history.slice(0, -1);
        const times = [];
        for (let i = 0; i < 5; i++) {
            s.unix_ms = history[history.length - 1].unix_ms + i;
            const t0 = performance.now();
            window.gpumesh.render(s);
            times.push(performance.now() - t0);
        }
        return [times, document.querySelectorAll('#members tbody tr').length];";
    let started = Instant::now();
    let result = browser.eval(script, vec![cluster, history]).await;
    let round_trip = started.elapsed();
    let (times, rows): (Vec<f64>, usize) = serde_json::from_value(result).expect("times and rows");
    assert_eq!(rows, 100, "every member has a row");
    let slowest = times.iter().copied().fold(0.0, f64::max);
    eprintln!("measured: 100-member render {times:?} ms (slowest {slowest:.1} ms); script round trip {round_trip:?}");
    assert!(slowest < 250.0, "a 100-member render took {slowest:.1} ms: the page would stutter");
    // Still responsive: a click-sized script answers at once.
    let started = Instant::now();
    let answer = browser.eval("return document.querySelectorAll('.chart canvas').length;", vec![]).await;
    assert_eq!(answer, json!(5));
    assert!(started.elapsed() < Duration::from_secs(1), "the page answers after rendering");
    let legend = text_of(&browser, ".chart[data-metric=requests_per_s] .legend").await.expect("legend");
    assert!(legend.contains("+92 more"), "the legend lists 8 of 100 nodes: {legend}");
    let shot = browser.screenshot("status-page-100-members.png").await;
    eprintln!("screenshot: {}", shot.display());
    browser.close().await;
}

fn sample_value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find_map(|s| {
        let matches = s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
        match (&s.value, matches) {
            (prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v), true)
            | (prometheus_parse::Value::Untyped(v), true) => Some(*v),
            _ => None,
        }
    })
}

async fn scrape(client: &reqwest::Client, url: &str) -> prometheus_parse::Scrape {
    let response = client.get(format!("{url}/metrics")).send().await.expect("metrics answers");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_string();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.expect("text");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).expect("parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_agree_with_the_cluster_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = start_cluster(dir.path());
    let client = reqwest::Client::new();
    wait_served(&client, &nodes[0].url, "echo", &["n1", "n2", "n3"]).await;
    let url = nodes[0].url.clone();
    let mut sent = 0;
    for _ in 0..40 {
        assert!(infer(&client, &url).await);
        sent += 1;
    }
    // Client-chosen model names no node serves share one label.
    for i in 0..5 {
        let body = json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]});
        let response =
            client.post(format!("{url}/v2/models/made-up-{i}/infer")).json(&body).send().await.expect("sent");
        assert_eq!(response.status(), 404);
    }
    let job = json!({"model": "echo", "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [3.0]}]});
    let accepted: Value =
        client.post(format!("{url}/jobs")).json(&job).send().await.expect("sent").json().await.expect("json");
    let id = accepted["job_id"].as_str().expect("job id").to_string();
    wait_until("the job completes", Duration::from_secs(10), || async {
        let job: Value = client.get(format!("{url}/jobs/{id}")).send().await.ok()?.json().await.ok()?;
        (job["state"] == "completed").then_some(())
    })
    .await;

    // Executed counts reach gossip within a metrics interval: wait until
    // /cluster shows what /metrics counts, then compare everything.
    let (scrape, view) =
        wait_until("/metrics and /cluster agree on executed requests", Duration::from_secs(10), || async {
            let scrape = scrape(&client, &url).await;
            let view = fetch_view(&client, &url).await?;
            let me = view.nodes.iter().find(|n| n.name == "n1")?;
            let gossiped = me.models.iter().find(|m| m.name == "echo")?.completed as f64;
            let counted = sample_value(&scrape, "gpumesh_executed_requests_total", &[("model", "echo")])?;
            (counted == gossiped).then_some((scrape, view))
        })
        .await;

    let requests: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "gpumesh_requests_total" && s.labels.get("outcome") == Some("ok"))
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .sum();
    assert_eq!(requests, f64::from(sent), "every request received at n1 is counted once, by executing node");
    let unknown =
        sample_value(&scrape, "gpumesh_requests_total", &[("model", "(unknown)"), ("outcome", "unknown_model")]);
    assert_eq!(unknown, Some(5.0));
    assert!(scrape.samples.iter().all(|s| s.labels.get("model").is_none_or(|m| !m.starts_with("made-up"))));
    let alive = sample_value(&scrape, "gpumesh_members", &[("status", "alive"), ("trusted", "true")]);
    assert_eq!(alive, Some(view.totals.nodes_alive as f64));
    assert_eq!(sample_value(&scrape, "gpumesh_members", &[("status", "dead"), ("trusted", "true")]), Some(0.0));
    let me = view.nodes.iter().find(|n| n.name == "n1").expect("n1 listed");
    let device = &me.models[0].device;
    assert_eq!(sample_value(&scrape, "gpumesh_model_info", &[("model", "echo"), ("device", device)]), Some(1.0));
    assert_eq!(sample_value(&scrape, "gpumesh_queue_depth", &[("model", "echo")]), Some(f64::from(me.queue_depth)));
    assert_eq!(sample_value(&scrape, "gpumesh_jobs", &[("state", "completed")]), Some(1.0));
    assert_eq!(sample_value(&scrape, "gpumesh_jobs", &[("state", "accepted")]), Some(0.0));
    let gpus = scrape.samples.iter().filter(|s| s.metric == "gpumesh_gpu_memory_total_bytes").count();
    assert_eq!(gpus, me.gpus.len(), "one series per GPU /cluster lists");
    assert_dashboard_uses_only_exposed_metrics(
        &client.get(format!("{url}/metrics")).send().await.expect("up").text().await.expect("text"),
    );
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "gpumesh_request_duration_seconds" && s.labels.get("model") == Some("echo"));
    match histogram.map(|s| &s.value) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            let total = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
            assert_eq!(total, f64::from(sent), "the latency histogram counts every request");
        }
        other => panic!("no request latency histogram: {other:?}"),
    }
}

/// Every `gpumesh_*` series the Grafana dashboard in deploy/ queries is one
/// the node declares (GPU series have no samples on a node without GPUs,
/// but their families are declared).
fn assert_dashboard_uses_only_exposed_metrics(text: &str) {
    let declared: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/gpumesh-dashboard.json");
    let dashboard = std::fs::read_to_string(&path).expect("dashboard in deploy/");
    let dashboard: Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (start, _) in expr.match_indices("gpumesh_") {
                let name: String =
                    expr[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let family = ["_bucket", "_sum", "_count", "_total"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(declared.contains(&family), "the dashboard queries {name}, which /metrics does not declare");
                queried += 1;
            }
        }
    }
    assert!(queried >= 20, "the dashboard queries the node's metrics ({queried} found)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_event_streams_and_the_node_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = TestNode::solo(dir.path(), None);
    let client = reqwest::Client::new();
    wait_until("the node answers", Duration::from_secs(10), || fetch_view(&client, &node.url)).await;
    let mut events = client.get(format!("{}/events", node.url)).send().await.expect("event stream opens");
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let first = events.chunk().await.expect("reads").expect("an event");
    assert!(String::from_utf8_lossy(&first).starts_with("event: history"), "the history comes first");
    node.terminate();
    let status = node.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "exits 0 with a page open: {status:?}");
    let rest =
        tokio::time::timeout(Duration::from_secs(5), async { while let Ok(Some(_)) = events.chunk().await {} }).await;
    assert!(rest.is_ok(), "the event stream ended with the node");
}
