//! Which node-to-node links to open and close (pure).
//!
//! A node links to every trusted member that is not dead. Of each pair, the
//! node with the smaller name dials, so the two do not race to open two
//! sessions; ractor_cluster still resolves such a race if views disagree.
//! Dials back off per target until the link is up. Links to members that
//! died, left or lost trust are dropped.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use gpumesh_membership::{ClusterView, Member};
use rand::Rng;
use tokio::time::Instant;

use crate::restart::{RestartPolicy, RestartState};

/// Spacing of repeated dials to one target. Dials go only to trusted live
/// members, so they are cheap; a short cap lets a link form within a
/// second of the peer's node server coming up (nodes started together may
/// be dialed before they listen).
pub const DIAL_BACKOFF: RestartPolicy = RestartPolicy {
    initial_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(1),
    stable_after: Duration::from_secs(3600),
    jitter: 0.2,
};

/// What the links actor should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkAction {
    Dial { name: String, addr: SocketAddr },
    Drop { name: String },
}

#[derive(Debug, Default)]
struct DialState {
    next_attempt: Option<Instant>,
    backoff: RestartState,
}

/// Decides link actions from the view and the links that are up.
#[derive(Debug, Default)]
pub struct LinkPlanner {
    dials: HashMap<String, DialState>,
}

fn wanted(member: &Member) -> Option<SocketAddr> {
    let linkable = !member.is_self && member.is_trusted_live();
    linkable.then(|| member.info.as_ref().map(|info| info.cluster_addr)).flatten()
}

impl LinkPlanner {
    /// The actions to take at `now`, given the links that are up.
    pub fn plan(
        &mut self,
        view: &ClusterView,
        connected: &BTreeSet<String>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Vec<LinkAction> {
        let mut actions = Vec::new();
        let mut still_wanted = BTreeSet::new();
        for member in &view.members {
            let Some(addr) = wanted(member) else { continue };
            still_wanted.insert(member.name.clone());
            if connected.contains(&member.name) {
                self.dials.remove(&member.name);
                continue;
            }
            if view.self_name.as_str() > member.name.as_str() {
                continue;
            }
            let dial = self.dials.entry(member.name.clone()).or_default();
            if dial.next_attempt.is_none_or(|at| now >= at) {
                dial.backoff.started(now);
                dial.next_attempt = Some(now + dial.backoff.failed(&DIAL_BACKOFF, now, rng));
                actions.push(LinkAction::Dial { name: member.name.clone(), addr });
            }
        }
        self.dials.retain(|name, _| still_wanted.contains(name));
        for name in connected.difference(&still_wanted) {
            actions.push(LinkAction::Drop { name: name.clone() });
        }
        actions
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a test picks any instant as its start")]
mod tests {
    use gpumesh_membership::MemberStatus;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::test_members::member;

    fn view(members: Vec<Member>) -> ClusterView {
        ClusterView { self_name: "b".into(), members }
    }

    fn names(actions: &[LinkAction]) -> Vec<String> {
        actions
            .iter()
            .map(|action| match action {
                LinkAction::Dial { name, .. } => format!("dial {name}"),
                LinkAction::Drop { name } => format!("drop {name}"),
            })
            .collect()
    }

    #[test]
    fn dials_larger_trusted_live_names_and_drops_the_dead() {
        use MemberStatus::*;
        let mut rng = StdRng::seed_from_u64(1);
        let v = view(vec![
            member("a", Alive, true, false),
            member("b", Alive, true, true),
            member("c", Alive, true, false),
            member("d", Dead, true, false),
            member("e", Alive, false, false),
            member("f", Suspect, true, false),
        ]);
        let connected: BTreeSet<String> = ["d".to_string()].into();
        let actions = LinkPlanner::default().plan(&v, &connected, Instant::now(), &mut rng);
        assert_eq!(names(&actions), vec!["dial c", "dial f", "drop d"]);
    }

    #[test]
    fn repeated_dials_back_off_until_connected() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut planner = LinkPlanner::default();
        let v = view(vec![member("b", MemberStatus::Alive, true, true), member("c", MemberStatus::Alive, true, false)]);
        let none = BTreeSet::new();
        let start = Instant::now();
        assert_eq!(planner.plan(&v, &none, start, &mut rng).len(), 1);
        assert!(planner.plan(&v, &none, start + Duration::from_millis(100), &mut rng).is_empty());
        assert_eq!(planner.plan(&v, &none, start + Duration::from_millis(700), &mut rng).len(), 1);
        let up: BTreeSet<String> = ["c".to_string()].into();
        assert!(planner.plan(&v, &up, start + Duration::from_secs(10), &mut rng).is_empty());
    }
}
