//! Membership diffing: what changed between two views (pure).
//!
//! The membership actor logs these events, the links actor reacts to them
//! and the simulator writes them into its trace.

use std::fmt;

use crate::{ClusterView, Member, MemberStatus};

/// One change between two cluster views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    Joined {
        name: String,
        generation: u64,
        status: MemberStatus,
    },
    Restarted {
        name: String,
        generation: u64,
    },
    StatusChanged {
        name: String,
        from: MemberStatus,
        to: MemberStatus,
    },
    TrustChanged {
        name: String,
        trusted: bool,
    },
    /// Its state started to carry signatures that do not verify.
    Forged {
        name: String,
    },
    DrainingChanged {
        name: String,
        draining: bool,
    },
    Removed {
        name: String,
    },
}

impl fmt::Display for MembershipEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Joined { name, generation, status } => {
                write!(f, "joined {name} generation={generation} status={}", status.as_str())
            }
            Self::Restarted { name, generation } => write!(f, "restarted {name} generation={generation}"),
            Self::StatusChanged { name, from, to } => {
                write!(f, "status {name} {}->{}", from.as_str(), to.as_str())
            }
            Self::TrustChanged { name, trusted } => write!(f, "trusted {name} {trusted}"),
            Self::Forged { name } => write!(f, "forged {name}"),
            Self::DrainingChanged { name, draining } => write!(f, "draining {name} {draining}"),
            Self::Removed { name } => write!(f, "removed {name}"),
        }
    }
}

fn draining(member: &Member) -> bool {
    member.info.as_ref().is_some_and(|info| info.draining)
}

/// The events that turn `prev` into `next`, in name order.
pub fn diff_views(prev: &ClusterView, next: &ClusterView) -> Vec<MembershipEvent> {
    let mut events = Vec::new();
    for member in &next.members {
        let name = member.name.clone();
        let Some(old) = prev.member(&member.name) else {
            events.push(MembershipEvent::Joined {
                name: name.clone(),
                generation: member.generation,
                status: member.status,
            });
            if member.forged {
                events.push(MembershipEvent::Forged { name });
            }
            continue;
        };
        if member.generation != old.generation {
            events.push(MembershipEvent::Restarted { name: name.clone(), generation: member.generation });
        }
        if member.status != old.status {
            events.push(MembershipEvent::StatusChanged { name: name.clone(), from: old.status, to: member.status });
        }
        if member.trusted != old.trusted {
            events.push(MembershipEvent::TrustChanged { name: name.clone(), trusted: member.trusted });
        }
        if member.forged && !old.forged {
            events.push(MembershipEvent::Forged { name: name.clone() });
        }
        if draining(member) != draining(old) {
            events.push(MembershipEvent::DrainingChanged { name, draining: draining(member) });
        }
    }
    for old in &prev.members {
        if next.member(&old.name).is_none() {
            events.push(MembershipEvent::Removed { name: old.name.clone() });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, generation: u64, status: MemberStatus, trusted: bool) -> Member {
        Member {
            name: name.into(),
            generation,
            gossip_addr: "127.0.0.1:1".parse().expect("addr"),
            status,
            age_ms: 0,
            trusted,
            forged: false,
            is_self: false,
            info: None,
            load: None,
            load_seq: 0,
        }
    }

    fn view(members: Vec<Member>) -> ClusterView {
        ClusterView { self_name: "a".into(), members }
    }

    #[test]
    fn reports_each_kind_of_change() {
        use MemberStatus::*;
        let prev = view(vec![member("a", 1, Alive, true), member("b", 1, Alive, true), member("c", 1, Alive, true)]);
        let next = view(vec![member("a", 1, Alive, false), member("b", 2, Dead, true), member("d", 1, Alive, true)]);
        let events: Vec<String> = diff_views(&prev, &next).iter().map(ToString::to_string).collect();
        assert_eq!(
            events,
            vec![
                "trusted a false",
                "restarted b generation=2",
                "status b alive->dead",
                "joined d generation=1 status=alive",
                "removed c",
            ]
        );
    }

    #[test]
    fn a_forged_state_is_reported_once_and_a_restart_without_state_is_not_forged() {
        use MemberStatus::*;
        let prev = view(vec![member("a", 1, Alive, true), member("b", 1, Alive, true)]);
        let mut forged = member("b", 1, Alive, false);
        forged.forged = true;
        let mut stranger = member("x", 1, Alive, false);
        stranger.forged = true;
        let next = view(vec![member("a", 2, Alive, false), forged, stranger]);
        let events: Vec<String> = diff_views(&prev, &next).iter().map(ToString::to_string).collect();
        assert_eq!(
            events,
            [
                "restarted a generation=2",
                "trusted a false",
                "trusted b false",
                "forged b",
                "joined x generation=1 status=alive",
                "forged x",
            ]
        );
        assert!(diff_views(&next, &next).is_empty(), "still forged is not news");
    }

    #[test]
    fn identical_views_have_no_events() {
        let v = view(vec![member("a", 1, MemberStatus::Alive, true)]);
        assert!(diff_views(&v, &v).is_empty());
    }
}
