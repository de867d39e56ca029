//! The links actor: runs this node's ractor_cluster node server and keeps
//! a link to every trusted live member (see `link_plan`), over the network
//! `link_net` gives it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gpumesh_membership::ClusterView;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage, NodeSessionMessage};
use rand::rngs::StdRng;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::link_net::LinkNet;
use crate::link_plan::{LinkAction, LinkPlanner};
use crate::rng::RngFactory;

/// This node's open links: each peer's name and the ractor_cluster session
/// actor that carries it (the remote actors it knows are its children).
pub(crate) type LinkedPeers = BTreeMap<String, ActorCell>;

/// Upper bound on one TCP connect to a peer's node server.
const DIAL_TIMEOUT_MS: u64 = 2_000;
/// Upper bound on asking the node server for its sessions.
const SESSIONS_TIMEOUT_MS: u64 = 1_000;

/// Keeps node-to-node links in line with the cluster view.
pub(crate) struct LinksActor;

/// What the links actor needs; kept by the supervisor for restarts.
#[derive(Clone)]
pub(crate) struct LinksArgs {
    pub(crate) name: String,
    pub(crate) cookie: String,
    pub(crate) listen_addr: SocketAddr,
    pub(crate) advertise_host: String,
    pub(crate) view_rx: watch::Receiver<Arc<ClusterView>>,
    pub(crate) connected_tx: watch::Sender<Arc<LinkedPeers>>,
    pub(crate) net: Arc<dyn LinkNet>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: RngFactory,
    pub(crate) interval: Duration,
    /// TLS for the links; `None`: plain TCP (the cookie handshake still runs).
    pub(crate) tls: Option<crate::tls::ClusterTls>,
}

/// Messages of the links actor.
pub(crate) enum LinksMsg {
    /// Compare links with the view and act.
    Reconcile,
}

impl ractor::Message for LinksMsg {}

/// Mutable state, built in `pre_start`.
pub(crate) struct LinksState {
    args: LinksArgs,
    server: ActorRef<NodeServerMessage>,
    planner: LinkPlanner,
    rng: StdRng,
    /// Accepts links where the node server does not (the simulator's network).
    acceptor: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for LinksActor {
    type Msg = LinksMsg;
    type State = LinksState;
    type Arguments = LinksArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let server_addr = args.net.server_addr(args.listen_addr);
        let server = NodeServer::new(
            server_addr.port(),
            args.cookie.clone(),
            args.name.clone(),
            args.advertise_host.clone(),
            args.tls.as_ref().map(|tls| ractor_cluster::IncomingEncryptionMode::Tls(tls.acceptor.clone())),
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(server_addr.ip());
        // The node server is this actor's child: if it dies, this actor
        // stops too and the supervisor restarts both.
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        let acceptor = args.net.accept(server.clone(), args.listen_addr);
        myself.send_interval(args.interval, || LinksMsg::Reconcile);
        let rng = (args.rng)();
        Ok(LinksState { args, server, planner: LinkPlanner::default(), rng, acceptor })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        if let Some(acceptor) = state.acceptor.take() {
            acceptor.abort();
        }
        state.args.connected_tx.send_replace(Arc::new(LinkedPeers::new()));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            LinksMsg::Reconcile => reconcile(state).await?,
        }
        Ok(())
    }
}

async fn reconcile(state: &mut LinksState) -> Result<(), ActorProcessingErr> {
    let sessions = ractor::call_t!(state.server, NodeServerMessage::GetSessions, SESSIONS_TIMEOUT_MS)?;
    let by_name: BTreeMap<String, ActorRef<NodeSessionMessage>> = sessions
        .into_values()
        .filter_map(|session| Some((peer_node_name(&session.peer_name?.name).to_string(), session.actor)))
        .collect();
    let connected: BTreeSet<String> = by_name.keys().cloned().collect();
    let view = state.args.view_rx.borrow().clone();
    let now = state.args.clock.now();
    for action in state.planner.plan(&view, &connected, now, &mut state.rng) {
        match action {
            LinkAction::Dial { name, addr } => {
                dial(state.args.net.clone(), state.server.clone(), name, addr, state.args.tls.clone());
            }
            LinkAction::Drop { name } => {
                tracing::info!(node = %name, "dropping link to a member that is no longer trusted and alive");
                if let Some(session) = by_name.get(&name) {
                    session.stop(Some("member not alive".into()));
                }
            }
        }
    }
    let linked: LinkedPeers = by_name.into_iter().map(|(name, session)| (name, session.get_cell())).collect();
    state.args.connected_tx.send_if_modified(|current| {
        let ids = |peers: &LinkedPeers| {
            peers.iter().map(|(name, session)| (name.clone(), session.get_id())).collect::<Vec<_>>()
        };
        let changed = ids(current) != ids(&linked);
        if changed {
            *current = Arc::new(linked);
        }
        changed
    });
    Ok(())
}

/// ractor_cluster names a peer `name@host`; the node name is the part
/// before the last `@` (node names never contain one).
fn peer_node_name(peer: &str) -> &str {
    peer.rsplit_once('@').map_or(peer, |(name, _)| name)
}

fn dial(
    net: Arc<dyn LinkNet>,
    server: ActorRef<NodeServerMessage>,
    name: String,
    addr: SocketAddr,
    tls: Option<crate::tls::ClusterTls>,
) {
    tokio::spawn(async move {
        match tokio::time::timeout(Duration::from_millis(DIAL_TIMEOUT_MS), net.dial(&server, addr, tls)).await {
            Ok(Ok(())) => tracing::debug!(node = %name, %addr, "link opened"),
            Ok(Err(error)) => tracing::debug!(node = %name, %addr, %error, "link dial failed"),
            Err(_) => tracing::debug!(node = %name, %addr, "link dial timed out"),
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn peer_names_lose_their_host() {
        assert_eq!(super::peer_node_name("n2@127.0.0.1"), "n2");
        assert_eq!(super::peer_node_name("n2"), "n2");
    }
}
