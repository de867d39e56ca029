//! The typed cluster view, built from raw gossip state by a pure function.
//!
//! chitchat knows node ids, liveness, heartbeats and strings. The view adds
//! what gpumesh needs: one entry per node name (the newest generation wins,
//! so a restarted node replaces its old self), `suspect` for a live node
//! whose heartbeat has not moved for a while, and for a joining one (see
//! [`build_view`]), the age of the last update,
//! and `trusted` for nodes whose state carries a valid signature. State
//! that does not verify never reaches the typed fields.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::record::{INFO_KEY, LOAD_KEY};
use crate::{LoadSummary, NodeInfo, SigningKey, verify_value};

/// Liveness of a member as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    Alive,
    Suspect,
    Dead,
}

impl MemberStatus {
    /// The lowercase name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
        }
    }
}

/// One node's gossip state as chitchat holds it, before verification.
#[derive(Clone, Debug)]
pub struct RawMember {
    pub name: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    /// chitchat's failure detector says live.
    pub live: bool,
    /// chitchat's failure detector says dead. A member neither live nor dead
    /// has not sent enough heartbeats yet to be judged.
    pub dead: bool,
    pub heartbeat: u64,
    pub values: BTreeMap<String, String>,
}

/// One member of the typed view.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    pub status: MemberStatus,
    /// Time since this node last saw the member's heartbeat move.
    pub age_ms: u64,
    /// The member's `info` value carries a valid signature.
    pub trusted: bool,
    /// Some of its gossip state carries a signature this cluster's key
    /// does not verify: it runs with another secret (or none). A member
    /// whose signed state has not arrived yet is untrusted, not forged.
    pub forged: bool,
    pub is_self: bool,
    /// Verified addresses and lifecycle; `None` unless trusted.
    pub info: Option<NodeInfo>,
    /// Verified load; `None` unless trusted and published.
    pub load: Option<LoadSummary>,
    /// Sequence number of the verified load; it changes with every new
    /// load report.
    pub load_seq: u64,
}

impl Member {
    /// Trusted (its state verifies) and alive or suspect: a node this one
    /// links to, asks, and counts. The one trust-and-liveness rule.
    pub fn is_trusted_live(&self) -> bool {
        self.trusted && self.status != MemberStatus::Dead
    }

    /// Trusted, live and not draining: a node that may take new work.
    pub fn is_usable(&self) -> bool {
        self.is_trusted_live() && self.info.as_ref().is_some_and(|info| !info.draining)
    }
}

/// Every member this node knows, sorted by name, itself included.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    pub self_name: String,
    pub members: Vec<Member>,
}

impl ClusterView {
    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.binary_search_by(|member| member.name.as_str().cmp(name)).ok().map(|index| &self.members[index])
    }

    /// Members whose status is `status`.
    pub fn count(&self, status: MemberStatus) -> usize {
        self.members.iter().filter(|m| m.status == status).count()
    }
}

/// Tuning of view building.
#[derive(Clone, Copy, Debug)]
pub struct ViewParams {
    /// A live member whose heartbeat has not moved for this long is suspect.
    pub suspect_after: Duration,
}

#[derive(Clone, Debug)]
struct Accepted<T> {
    raw: String,
    seq: u64,
    value: Option<T>,
}

#[derive(Clone, Debug)]
struct Seen {
    heartbeat: u64,
    changed_at: Instant,
    /// chitchat's failure detector has called this generation live.
    was_live: bool,
    info: Option<Accepted<NodeInfo>>,
    load: Option<Accepted<LoadSummary>>,
}

/// What view building remembers between calls: when each member's
/// heartbeat last moved and the last verified value of each key, so a
/// replayed older value cannot roll a member's state back.
#[derive(Debug, Default)]
pub struct AgeTracker {
    seen: HashMap<(String, u64), Seen>,
}

/// Builds the typed view from raw gossip state at time `now`.
///
/// chitchat's failure detector calls a member dead until it has two
/// heartbeats to measure an interval from, so a node that just joined (or
/// restarted) would show `dead` for its first few hundred milliseconds,
/// and routing and links would drop it and redial. A generation chitchat
/// has never called live is `suspect` instead while its heartbeat keeps
/// moving (it last moved within `suspect_after`), and `dead` only once it
/// stops: a node that dies while joining is still declared dead, at most
/// `suspect_after` after its last heartbeat.
pub fn build_view(
    self_name: &str,
    raw: Vec<RawMember>,
    key: &SigningKey,
    tracker: &mut AgeTracker,
    params: ViewParams,
    now: Instant,
) -> ClusterView {
    let mut newest: BTreeMap<String, RawMember> = BTreeMap::new();
    for member in raw {
        match newest.get(&member.name) {
            Some(kept) if kept.generation >= member.generation => {}
            _ => {
                newest.insert(member.name.clone(), member);
            }
        }
    }
    tracker.seen.retain(|(name, generation), _| newest.get(name).is_some_and(|m| m.generation == *generation));
    let members = newest.into_values().map(|raw| typed_member(self_name, raw, key, tracker, params, now)).collect();
    ClusterView { self_name: self_name.to_string(), members }
}

fn typed_member(
    self_name: &str,
    raw: RawMember,
    key: &SigningKey,
    tracker: &mut AgeTracker,
    params: ViewParams,
    now: Instant,
) -> Member {
    let seen = tracker.seen.entry((raw.name.clone(), raw.generation)).or_insert_with(|| Seen {
        heartbeat: raw.heartbeat,
        changed_at: now,
        was_live: false,
        info: None,
        load: None,
    });
    if raw.heartbeat > seen.heartbeat {
        seen.heartbeat = raw.heartbeat;
        seen.changed_at = now;
    }
    seen.was_live |= raw.live;
    let is_self = raw.name == self_name;
    let age = if is_self { Duration::ZERO } else { now.saturating_duration_since(seen.changed_at) };
    let joining = !seen.was_live && age <= params.suspect_after;
    let status = if is_self || (raw.live && age <= params.suspect_after) {
        MemberStatus::Alive
    } else if raw.dead && !raw.live && !joining {
        MemberStatus::Dead
    } else {
        MemberStatus::Suspect
    };
    let scope = Scope { key, node: &raw.name, generation: raw.generation };
    let info = scope.accept(&mut seen.info, INFO_KEY, raw.values.get(INFO_KEY));
    let load = scope.accept(&mut seen.load, LOAD_KEY, raw.values.get(LOAD_KEY));
    let info_ok = matches!(info, Verdict::Valid(_));
    let load_ok = !matches!(load, Verdict::Invalid);
    let trusted = info_ok && load_ok;
    let forged = matches!(info, Verdict::Invalid) || matches!(load, Verdict::Invalid);
    let load_seq = seen.load.as_ref().filter(|_| trusted).map_or(0, |accepted| accepted.seq);
    Member {
        name: raw.name,
        generation: raw.generation,
        gossip_addr: raw.gossip_addr,
        status,
        age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
        trusted,
        forged,
        is_self,
        info: if trusted { info.into_value() } else { None },
        load: if trusted { load.into_value() } else { None },
        load_seq,
    }
}

enum Verdict<T> {
    Absent,
    Invalid,
    Valid(T),
}

impl<T> Verdict<T> {
    fn into_value(self) -> Option<T> {
        match self {
            Self::Valid(value) => Some(value),
            Self::Absent | Self::Invalid => None,
        }
    }
}

struct Scope<'a> {
    key: &'a SigningKey,
    node: &'a str,
    generation: u64,
}

impl Scope<'_> {
    /// Verifies `raw` against the last accepted value of this key: a
    /// valid value with a lower sequence number than the accepted one is a
    /// replay and the accepted value stands.
    fn accept<T: Clone + serde::de::DeserializeOwned>(
        &self,
        accepted: &mut Option<Accepted<T>>,
        gossip_key: &str,
        raw: Option<&String>,
    ) -> Verdict<T> {
        let Some(raw) = raw else { return Verdict::Absent };
        if let Some(kept) = accepted.as_ref().filter(|kept| kept.raw == *raw) {
            return kept.value.clone().map_or(Verdict::Invalid, Verdict::Valid);
        }
        let decoded = verify_value(self.key, self.node, self.generation, gossip_key, raw)
            .ok()
            .and_then(|(seq, payload)| Some((seq, serde_json::from_str::<T>(payload).ok()?)));
        match (decoded, accepted.as_ref()) {
            (Some((seq, _)), Some(kept)) if kept.value.is_some() && seq < kept.seq => {
                kept.value.clone().map_or(Verdict::Invalid, Verdict::Valid)
            }
            (Some((seq, value)), _) => {
                *accepted = Some(Accepted { raw: raw.clone(), seq, value: Some(value.clone()) });
                Verdict::Valid(value)
            }
            (None, _) => {
                *accepted = Some(Accepted { raw: raw.clone(), seq: 0, value: None });
                Verdict::Invalid
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a test picks any instant as its start")]
mod tests;
