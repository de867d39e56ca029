//! The supervisor: starts the node's actors and restarts any that crash,
//! with backoff (see `restart`).

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rand::rngs::StdRng;

use crate::clock::Clock;
use crate::executor::{ExecutorActor, ExecutorArgs};
use crate::forward::endpoint::{ForwardActor, ForwardArgs};
use crate::links::{LinksActor, LinksArgs};
use crate::metrics::{MetricsActor, MetricsArgs};
use crate::restart::{RestartPolicy, RestartState};
use crate::telemetry::RestartCounter;
use crate::view::{ViewActor, ViewArgs};

/// The kinds of children the supervisor keeps running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ChildKind {
    Metrics,
    View,
    Links,
    /// The executor of the model at this index of `executors`.
    Executor(usize),
    /// The endpoint for requests forwarded here.
    Forward,
}

impl ChildKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::View => "view",
            Self::Links => "links",
            Self::Executor(_) => "executor",
            Self::Forward => "forward",
        }
    }
}

/// Everything needed to (re)start every child.
pub(crate) struct SupervisorArgs {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rng: StdRng,
    pub(crate) policy: RestartPolicy,
    /// Where each restart is counted (`/metrics`).
    pub(crate) restart_counter: RestartCounter,
    pub(crate) metrics: MetricsArgs,
    pub(crate) view: ViewArgs,
    /// `None` runs the node without node-to-node links.
    pub(crate) links: Option<LinksArgs>,
    pub(crate) executors: Vec<ExecutorArgs>,
    /// `None` runs the node without accepting forwarded requests.
    pub(crate) forward: Option<ForwardArgs>,
}

/// Supervises the node's actors.
pub(crate) struct SupervisorActor;

/// Messages of the supervisor.
pub(crate) enum SupervisorMsg {
    /// Start a child again after its backoff delay.
    Restart(ChildKind),
    /// Stop every child and restart none; replies when they have stopped.
    Shutdown(RpcReplyPort<()>),
}

impl ractor::Message for SupervisorMsg {}

/// Mutable state, built in `pre_start`.
pub(crate) struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ActorId, ChildKind>,
    restarts: HashMap<ChildKind, RestartState>,
    shutting_down: bool,
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state =
            SupervisorState { args, children: HashMap::new(), restarts: HashMap::new(), shutting_down: false };
        let mut kinds: Vec<ChildKind> = (0..state.args.executors.len()).map(ChildKind::Executor).collect();
        kinds.extend([ChildKind::View, ChildKind::Metrics]);
        if state.args.links.is_some() {
            kinds.push(ChildKind::Links);
        }
        if state.args.forward.is_some() {
            kinds.push(ChildKind::Forward);
        }
        for kind in kinds {
            // A child that cannot start at all (a port taken) fails the node's start.
            start_child(&myself, &mut state, kind).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart(kind) if !state.shutting_down => {
                if let Err(error) = start_child(&myself, state, kind).await {
                    schedule_restart(&myself, state, kind, &format!("{error}"));
                }
            }
            SupervisorMsg::Restart(_) => {}
            SupervisorMsg::Shutdown(reply) => {
                state.shutting_down = true;
                myself.stop_children_and_wait(Some("node shutting down".into()), None).await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, format!("{error}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason.unwrap_or_else(|| "stopped".into())),
            _ => return Ok(()),
        };
        let Some(kind) = state.children.remove(&cell.get_id()) else { return Ok(()) };
        if !state.shutting_down {
            schedule_restart(&myself, state, kind, &reason);
        }
        Ok(())
    }
}

fn schedule_restart(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, kind: ChildKind, reason: &str) {
    let now = state.args.clock.now();
    let model = match kind {
        ChildKind::Executor(index) => state.args.executors.get(index).map(|args| args.model.spec.name.as_str()),
        _ => None,
    };
    state.args.restart_counter.record(kind.as_str(), model);
    let restarts = state.restarts.entry(kind).or_default();
    let delay = restarts.failed(&state.args.policy, now, &mut state.args.rng);
    tracing::warn!(
        child = kind.as_str(),
        executor_of = ?model,
        reason,
        failures = restarts.consecutive_failures(),
        delay_ms = delay.as_millis() as u64,
        "actor stopped unexpectedly; restarting after backoff"
    );
    myself.send_after(delay, move || SupervisorMsg::Restart(kind));
}

async fn start_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    kind: ChildKind,
) -> Result<(), ActorProcessingErr> {
    let supervisor = myself.get_cell();
    let cell: ActorCell = match kind {
        ChildKind::Metrics => {
            Actor::spawn_linked(None, MetricsActor, state.args.metrics.clone(), supervisor).await?.0.get_cell()
        }
        ChildKind::View => {
            Actor::spawn_linked(None, ViewActor, state.args.view.clone(), supervisor).await?.0.get_cell()
        }
        ChildKind::Links => {
            let Some(args) = state.args.links.clone() else { return Ok(()) };
            Actor::spawn_linked(None, LinksActor, args, supervisor).await?.0.get_cell()
        }
        ChildKind::Forward => {
            let Some(args) = state.args.forward.clone() else { return Ok(()) };
            let name = crate::forward::messages::endpoint_name(&args.node);
            Actor::spawn_linked(Some(name), ForwardActor, args, supervisor).await?.0.get_cell()
        }
        ChildKind::Executor(index) => {
            let Some(args) = state.args.executors.get(index).cloned() else { return Ok(()) };
            Actor::spawn_linked(None, ExecutorActor, args, supervisor).await?.0.get_cell()
        }
    };
    state.children.insert(cell.get_id(), kind);
    state.restarts.entry(kind).or_default().started(state.args.clock.now());
    Ok(())
}
