//! Real node processes on loopback: formation, failure detection, rejoin,
//! trust and graceful shutdown.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::time::Duration;

use common::{GOSSIP_INTERVAL_MS, NodeSpec, TestCluster, TestNode, fetch_view, free_ports, wait_until, write_secret};
use tokio::time::Instant;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_see_each_other_within_5s() {
    let started = Instant::now();
    let cluster = TestCluster::start(3);
    cluster.wait_formed(&client(), Duration::from_secs(5)).await;
    eprintln!("measured: 3 nodes alive, trusted and linked on every node {:?} after spawn", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_see_each_other_within_10s() {
    let started = Instant::now();
    let cluster = TestCluster::start(10);
    cluster.wait_formed(&client(), Duration::from_secs(10)).await;
    eprintln!("measured: 10 nodes alive, trusted and linked on every node {:?} after spawn", started.elapsed());
}

/// A node joining a formed cluster is never reported `dead` while it joins
/// (chitchat's detector has no samples yet): `suspect` at worst, and the
/// others are never reported dead by it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_never_reported_dead_by_any_member() {
    let client = client();
    let mut cluster = TestCluster::start(3);
    cluster.wait_formed(&client, Duration::from_secs(5)).await;
    let spec = NodeSpec {
        name: Some("n4"),
        dir: cluster.dir.path(),
        data_dir_name: "n4",
        secret: Some(&cluster.secret),
        seeds: &[cluster.nodes[0].gossip.clone()],
        ports: free_ports(),
        models: None,
    };
    cluster.nodes.push(TestNode::start(&spec));
    let started = Instant::now();
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let (mut polls, mut suspect, mut alive_everywhere) = (0, 0, None);
    while started.elapsed() < Duration::from_secs(5) {
        let mut n4_alive = 0;
        for url in &urls {
            let Some(view) = fetch_view(&client, url).await else { continue };
            polls += 1;
            let dead: Vec<&str> =
                view.nodes.iter().filter(|n| n.status.as_str() == "dead").map(|n| n.name.as_str()).collect();
            assert!(
                dead.is_empty(),
                "{} reported {dead:?} dead {:?} after n4 started",
                view.self_name,
                started.elapsed()
            );
            let n4 = view.nodes.iter().find(|n| n.name == "n4");
            suspect += usize::from(n4.is_some_and(|n| n.status.as_str() == "suspect"));
            n4_alive += usize::from(n4.is_some_and(|n| n.status.as_str() == "alive" && n.connected));
        }
        if n4_alive == urls.len() && alive_everywhere.is_none() {
            alive_everywhere = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alive_everywhere = alive_everywhere.expect("n4 alive and linked on every node within 5 s");
    eprintln!(
        "measured: {polls} polls of /cluster over 5 s, none dead; n4 suspect in {suspect}; alive and linked everywhere after {alive_everywhere:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_is_detected_within_3s_and_rejoins_with_its_name() {
    let client = client();
    let mut cluster = TestCluster::start(3);
    cluster.wait_formed(&client, Duration::from_secs(5)).await;
    let first = cluster.nodes[0].url.clone();
    let before = wait_until("n1 answers", Duration::from_secs(5), || fetch_view(&client, &first)).await;
    let old_generation = before.nodes.iter().find(|n| n.name == "n3").expect("n3 listed").generation;

    let mut victim = cluster.nodes.pop().expect("n3");
    victim.kill9();
    let killed_at = Instant::now();
    let survivors: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    wait_until("both survivors report n3 not alive", Duration::from_secs(3), || async {
        for url in &survivors {
            let view = fetch_view(&client, url).await?;
            let n3 = view.nodes.iter().find(|n| n.name == "n3")?;
            if n3.status.as_str() == "alive" {
                return None;
            }
        }
        Some(())
    })
    .await;
    eprintln!("measured: kill -9 of n3 detected by both survivors after {:?}", killed_at.elapsed());

    // Restart from the same data dir without --name: the name comes from the store.
    let spec = NodeSpec {
        name: None,
        dir: cluster.dir.path(),
        data_dir_name: "n3",
        secret: Some(&cluster.secret),
        seeds: &[cluster.nodes[0].gossip.clone()],
        ports: free_ports(),
        models: None,
    };
    let restarted = TestNode::start(&spec);
    let restarted_at = Instant::now();
    let own =
        wait_until("restarted node answers", Duration::from_secs(5), || fetch_view(&client, &restarted.url)).await;
    assert_eq!(own.self_name, "n3", "a restarted node keeps its stored name: {own:?}\nlog:\n{}", restarted.log_text());
    wait_until("survivors see n3 back with a new generation", Duration::from_secs(5), || async {
        for url in &survivors {
            let view = fetch_view(&client, url).await?;
            let n3 = view.nodes.iter().find(|n| n.name == "n3")?;
            let back = n3.status.as_str() == "alive" && n3.trusted && n3.connected && n3.generation > old_generation;
            if !back {
                return None;
            }
        }
        Some(())
    })
    .await;
    eprintln!("measured: restarted n3 alive and linked on both survivors {:?} after its start", restarted_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_another_secret_is_never_trusted_or_connected() {
    let client = client();
    let cluster = TestCluster::start(3);
    cluster.wait_formed(&client, Duration::from_secs(5)).await;
    let other_secret = write_secret(cluster.dir.path(), "other-secret");
    let intruder = TestNode::start(&NodeSpec {
        name: Some("intruder"),
        dir: cluster.dir.path(),
        data_dir_name: "intruder",
        secret: Some(&other_secret),
        seeds: &[cluster.nodes[0].gossip.clone()],
        ports: free_ports(),
        models: None,
    });
    let first = cluster.nodes[0].url.clone();
    wait_until("the intruder shows up in gossip", Duration::from_secs(5), || async {
        let view = fetch_view(&client, &first).await?;
        view.nodes.iter().any(|n| n.name == "intruder").then_some(())
    })
    .await;
    // Watch every trusted node for 15 gossip rounds: the intruder must never
    // be trusted, linked or counted, and its addresses never reach the view.
    let watch_until = Instant::now() + Duration::from_millis(GOSSIP_INTERVAL_MS * 15);
    let mut observations = 0;
    while Instant::now() < watch_until {
        for node in &cluster.nodes {
            let Some(view) = fetch_view(&client, &node.url).await else { continue };
            if let Some(entry) = view.nodes.iter().find(|n| n.name == "intruder") {
                assert!(!entry.trusted && !entry.connected, "{} trusts or links the intruder: {entry:?}", node.name);
                assert!(
                    entry.http_addr.is_none() && entry.cluster_addr.is_none(),
                    "unverified state leaked: {entry:?}"
                );
                observations += 1;
            }
            assert_eq!(view.totals.nodes_alive, 3, "{} counts the intruder as a member", node.name);
        }
        tokio::time::sleep(Duration::from_millis(GOSSIP_INTERVAL_MS / 2)).await;
    }
    assert!(observations > 0, "the intruder was never observed");
    let intruder_view = fetch_view(&client, &intruder.url).await.expect("intruder answers");
    assert!(intruder_view.nodes.iter().filter(|n| n.name != "intruder").all(|n| !n.trusted && !n.connected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_publishes_draining_then_exits_zero() {
    let client = client();
    let mut cluster = TestCluster::start(3);
    cluster.wait_formed(&client, Duration::from_secs(5)).await;
    let first = cluster.nodes[0].url.clone();
    let mut leaving = cluster.nodes.pop().expect("n3");
    leaving.terminate();
    wait_until("n1 sees n3 draining", Duration::from_secs(2), || async {
        let view = fetch_view(&client, &first).await?;
        view.nodes.iter().any(|n| n.name == "n3" && n.draining).then_some(())
    })
    .await;
    let status = leaving.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "graceful shutdown exits 0, got {status}; log:\n{}", leaving.log_text());
    assert!(leaving.log_text().contains("node stopped"));
}
