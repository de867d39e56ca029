//! The view actor: turns gossip state into the typed cluster view every
//! refresh interval, logs what changed and hands the view to readers.

use std::sync::Arc;
use std::time::Duration;

use gpumesh_membership::{ClusterView, Membership, MembershipEvent, diff_views};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;

use crate::clock::Clock;

/// Resolves once `node` is dead or gone in the view (never, if the view's
/// sender is dropped).
pub(crate) async fn until_dead(mut view: watch::Receiver<Arc<ClusterView>>, node: String) {
    loop {
        let dead = view
            .borrow_and_update()
            .member(&node)
            .is_none_or(|member| member.status == gpumesh_membership::MemberStatus::Dead);
        if dead {
            return;
        }
        if view.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Refreshes the typed cluster view.
pub(crate) struct ViewActor;

/// What the view actor needs; kept by the supervisor for restarts.
#[derive(Clone)]
pub(crate) struct ViewArgs {
    pub(crate) membership: Arc<Membership>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) view_tx: watch::Sender<Arc<ClusterView>>,
    pub(crate) interval: Duration,
}

/// Messages of the view actor.
pub(crate) enum ViewMsg {
    /// Rebuild the view from gossip state now.
    Refresh,
}

impl ractor::Message for ViewMsg {}

impl Actor for ViewActor {
    type Msg = ViewMsg;
    type State = ViewArgs;
    type Arguments = ViewArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.interval, || ViewMsg::Refresh);
        myself.cast(ViewMsg::Refresh)?;
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ViewMsg::Refresh => {
                let view = state.membership.view(state.clock.now()).await;
                let previous = state.view_tx.borrow().clone();
                let events = diff_views(&previous, &view);
                if events.is_empty() && previous.members == view.members {
                    return Ok(());
                }
                for event in &events {
                    log_event(event);
                }
                state.view_tx.send_replace(Arc::new(view));
            }
        }
        Ok(())
    }
}

fn log_event(event: &MembershipEvent) {
    match event {
        MembershipEvent::StatusChanged { name, to, .. } if *to != gpumesh_membership::MemberStatus::Alive => {
            tracing::warn!(node = %name, status = to.as_str(), "member {}", to.as_str());
        }
        MembershipEvent::Forged { name } => {
            tracing::warn!(node = %name, "member's gossip state is signed with another cluster secret (or none): it gets no work and no link; give it this cluster's --secret-file");
        }
        MembershipEvent::TrustChanged { name, trusted: false } => {
            tracing::info!(node = %name, "member not trusted until its signed state arrives");
        }
        _ => tracing::info!(event = %event, "membership changed"),
    }
}
