//! `gpumesh node`: start a node, serve HTTP, shut down gracefully on
//! SIGTERM or Ctrl-C (publish draining, finish, exit 0).

use std::sync::Arc;
use std::time::Duration;

use gpumesh_actors::{NodeConfig, NodeEnv, start_node};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;

use crate::net::{advertised, bind_api, check_tcp, check_udp};
use crate::settings::NodeSettings;

/// Load is published at most this often; routing decisions read it, so it
/// follows the gossip interval down to this floor (sysinfo needs 200 ms
/// between CPU readings).
const METRICS_INTERVAL_MIN_MS: u64 = 200;
/// How often the metrics history samples the cluster view (the status page charts it).
const HISTORY_INTERVAL: Duration = Duration::from_secs(2);
/// Longest an inference request waits for its result.
const INFER_TIMEOUT_MS: u64 = 30_000;
/// Longest a forwarded request may take before the next node is tried.
const FORWARD_TIMEOUT_MS: u64 = 10_000;
/// Gossip rounds to wait after publishing draining, so peers see it
/// before the node goes away.
const DRAIN_GOSSIP_ROUNDS: u32 = 3;

/// An invalid flag, variable or file: exit status 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) anyhow::Error);

pub(crate) fn usage(error: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(UsageError(error))
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for UsageError {}

/// The signals that stop a node gracefully, watched from the moment this
/// is made: one that comes while the node starts is handled once it is up,
/// instead of killing the process with the default action.
struct StopSignals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
}

impl StopSignals {
    fn watch() -> Self {
        let watch = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, signal = name, "cannot watch this signal; it stops the node without draining");
                None
            }
        };
        Self {
            terminate: watch(SignalKind::terminate(), "SIGTERM"),
            interrupt: watch(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Waits for the next stop signal; its name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = recv(self.terminate.as_mut()) => "sigterm",
            _ = recv(self.interrupt.as_mut()) => "ctrl-c",
        }
    }
}

/// The next delivery of `signal`; never, without one.
async fn recv(signal: Option<&mut Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs a node until a signal stops it.
pub(crate) async fn run(settings: NodeSettings) -> anyhow::Result<()> {
    let mut signals = StopSignals::watch();
    let http = bind_api("--http", settings.http_listen).await.map_err(usage)?;
    let grpc = match settings.grpc_listen {
        Some(addr) => Some(bind_api("--grpc", addr).await.map_err(usage)?),
        None => None,
    };
    check_udp("--gossip", settings.gossip_listen).map_err(usage)?;
    check_tcp("--cluster", settings.cluster_listen).map_err(usage)?;
    let host = settings.advertise_host.as_deref();
    let http_listen = http.local_addr()?;
    let grpc_listen = grpc.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?;
    let config = NodeConfig {
        requested_name: settings.name.clone(),
        data_dir: settings.data_dir.clone(),
        http_advertise: advertised(host, http_listen).map_err(usage)?,
        gossip_listen: settings.gossip_listen,
        gossip_advertise: advertised(host, settings.gossip_listen).map_err(usage)?,
        cluster_listen: settings.cluster_listen,
        cluster_advertise: advertised(host, settings.cluster_listen).map_err(usage)?,
        seeds: settings.seeds.clone(),
        gossip_interval: settings.gossip_interval,
        metrics_interval: settings.gossip_interval.max(Duration::from_millis(METRICS_INTERVAL_MIN_MS)),
        secret: settings.secret.clone().unwrap_or_else(gpumesh_membership::ClusterSecret::open_cluster),
        models: settings.models.clone(),
        ort_library_candidates: crate::models::ort_library_candidates(),
        infer_timeout: Duration::from_millis(INFER_TIMEOUT_MS),
        policy: settings.policy,
        forward_timeout: Duration::from_millis(FORWARD_TIMEOUT_MS),
        job_retention: settings.job_retention,
        history_interval: Some(HISTORY_INTERVAL),
        max_forward_attempts: settings.max_forward_attempts,
        prefix_affinity: settings.prefix_affinity,
        cluster_tls: settings.cluster_tls.clone(),
        max_active_jobs: settings.max_active_jobs,
    };
    if settings.secret.is_none() {
        tracing::warn!("no --secret-file: this is an open cluster that any process reaching the gossip port can join");
    }
    let node = Arc::new(start_node(config, NodeEnv::production()).await?);
    node.resume_jobs()?;
    tracing::info!(
        node = %node.name(),
        generation = node.generation(),
        http = %http_listen,
        grpc = %grpc_listen.map_or_else(|| "off".to_string(), |addr| addr.to_string()),
        gossip = %settings.gossip_listen,
        cluster = %settings.cluster_listen,
        "node ready"
    );
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    if !settings.http.tokens.is_open() {
        tracing::info!("client API tokens required (health endpoints stay open)");
    }
    let mut server = tokio::spawn(gpumesh_web::serve(http, node.clone(), settings.http.clone(), async {
        let _ = http_stopped.await;
    }));
    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    let grpc_server = grpc.map(|listener| {
        let tls = settings.grpc_tls.clone();
        tokio::spawn(gpumesh_web::serve_grpc(listener, node.clone(), settings.http.clone(), tls, async {
            let _ = grpc_stopped.await;
        }))
    });
    let reason = tokio::select! {
        signal = signals.next() => signal,
        result = &mut server => {
            node.shutdown().await;
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(anyhow::anyhow!("http server failed: {error}")),
                Err(error) => Err(anyhow::anyhow!("http server stopped: {error}")),
            };
        }
    };
    tracing::info!(reason, "shutting down: draining");
    if let Err(error) = node.drain().await {
        tracing::warn!(%error, "could not publish draining");
    }
    // Give gossip a few rounds to carry the draining flag to peers.
    tokio::time::sleep(settings.gossip_interval * DRAIN_GOSSIP_ROUNDS).await;
    let _ = stop_http.send(());
    let _ = stop_grpc.send(());
    if let Some(grpc_server) = grpc_server
        && let Err(error) = grpc_server.await
    {
        tracing::warn!(%error, "grpc server task failed");
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "http server stopped with an error"),
        Err(error) => tracing::warn!(%error, "http server task failed"),
    }
    node.shutdown().await;
    Ok(())
}
