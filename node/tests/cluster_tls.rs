//! TLS on node-to-node links: nodes with certificates from the cluster CA
//! link and forward over TLS; a node with the cluster secret but a
//! certificate from another CA is never linked.
#![allow(clippy::disallowed_methods, reason = "tests time real processes and connections on the wall clock")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{NodeSpec, TestNode, fetch_view, free_ports, wait_served, write_secret};
use serde_json::json;

fn openssl(dir: &Path, args: &[&str]) {
    let output =
        Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs (apt-get install openssl)");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA called `ca` in `dir`: (`ca`.pem, `ca`.key). The commands are the
/// ones the README gives operators.
fn make_ca(dir: &Path, ca: &str) {
    let (pem, key) = (format!("{ca}.pem"), format!("{ca}.key"));
    let subject = format!("/CN={ca}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            &key,
            "-out",
            &pem,
        ],
    );
}

/// A certificate for `node` at 127.0.0.1 signed by `ca`: (cert, key) paths.
fn make_node_cert(dir: &Path, ca: &str, node: &str) -> (PathBuf, PathBuf) {
    let (pem, key, csr) = (format!("{node}.pem"), format!("{node}.key"), format!("{node}.csr"));
    let subject = format!("/CN={node}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    std::fs::write(dir.join("node.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        .expect("ext");
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "node.ext",
            "-out",
            &pem,
        ],
    );
    (dir.join(pem), dir.join(key))
}

fn start_tls(
    dir: &Path,
    name: &str,
    secret: &Path,
    seeds: &[String],
    cert: &(PathBuf, PathBuf),
    ca: &Path,
    models: Option<&Path>,
) -> TestNode {
    let (cert, key, ca) = (cert.0.display().to_string(), cert.1.display().to_string(), ca.display().to_string());
    TestNode::start_with(
        &NodeSpec {
            name: Some(name),
            dir,
            data_dir_name: name,
            secret: Some(secret),
            seeds,
            ports: free_ports(),
            models,
        },
        &["--cluster-tls-cert", &cert, "--cluster-tls-key", &key, "--cluster-ca", &ca],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_link_and_forward_over_tls_and_a_foreign_certificate_is_never_linked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    make_ca(path, "cluster-ca");
    make_ca(path, "other-ca");
    let secret = write_secret(path, "secret");
    let registry = path.join("models.toml");
    std::fs::write(&registry, "[[model]]\nname = \"only-n2\"\nkind = \"synthetic\"\nservice_time_ms = 1\n")
        .expect("registry");
    let empty = path.join("empty.toml");
    std::fs::write(&empty, "").expect("registry");
    let ca = path.join("cluster-ca.pem");
    let n1 = start_tls(path, "n1", &secret, &[], &make_node_cert(path, "cluster-ca", "n1"), &ca, Some(&empty));
    let seeds = [n1.gossip.clone()];
    let n2 = start_tls(path, "n2", &secret, &seeds, &make_node_cert(path, "cluster-ca", "n2"), &ca, Some(&registry));
    // Same secret, so its gossip is trusted, but its certificate is not from the cluster CA.
    let rogue_cert = make_node_cert(path, "other-ca", "rogue");
    let rogue = start_tls(path, "rogue", &secret, &seeds, &rogue_cert, &path.join("other-ca.pem"), Some(&empty));

    let client = reqwest::Client::new();
    // n2 alive, linked over TLS, and its models gossiped to n1.
    wait_served(&client, &n1.url, "only-n2", &["n2"]).await;
    let body = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, -2.0]}]});
    let response =
        client.post(format!("{}/v2/models/only-n2/infer", n1.url)).json(&body).send().await.expect("answers");
    let status = response.status();
    let node = response.headers().get("x-gpumesh-node").cloned();
    let text = response.text().await.unwrap_or_default();
    if status != 200 {
        let view = fetch_view(&client, &n1.url).await;
        panic!("{status} {text}\nview: {view:?}\nn1 log: {}", n1.log_text());
    }
    assert_eq!(node.expect("x-gpumesh-node"), "n2", "forwarded over the TLS link");

    // For 3 s (15 gossip rounds) the rogue stays unlinked on both sides.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut seen = false;
    while tokio::time::Instant::now() < until {
        for url in [&n1.url, &n2.url] {
            let view = fetch_view(&client, url).await.expect("answers");
            if let Some(entry) = view.nodes.iter().find(|n| n.name == "rogue") {
                seen = true;
                assert!(!entry.connected, "a node with a foreign certificate was linked: {entry:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "the rogue node joined gossip (it has the secret)");
    let rogue_view = fetch_view(&client, &rogue.url).await.expect("rogue answers");
    assert!(rogue_view.nodes.iter().filter(|n| n.name != "rogue").all(|n| !n.connected));
}
