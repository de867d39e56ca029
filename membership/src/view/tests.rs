use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::record::{INFO_KEY, LOAD_KEY};
use crate::{ClusterSecret, sign_value};

const PARAMS: ViewParams = ViewParams { suspect_after: Duration::from_millis(1000) };

fn key() -> SigningKey {
    ClusterSecret::from_bytes([9; 32]).signing_key()
}

fn info(draining: bool) -> NodeInfo {
    NodeInfo {
        http_addr: "127.0.0.1:8080".parse().expect("addr"),
        cluster_addr: "127.0.0.1:7947".parse().expect("addr"),
        version: "0.1.0".into(),
        draining,
        started_unix_ms: 1,
    }
}

fn raw(name: &str, generation: u64, live: bool, heartbeat: u64, key: &SigningKey, seq: u64) -> RawMember {
    let payload = serde_json::to_string(&info(false)).expect("json");
    let mut values = BTreeMap::new();
    values.insert(INFO_KEY.to_string(), sign_value(key, name, generation, INFO_KEY, seq, &payload));
    RawMember {
        name: name.into(),
        generation,
        gossip_addr: "127.0.0.1:7946".parse().expect("addr"),
        live,
        dead: !live,
        heartbeat,
        values,
    }
}

#[test]
fn newest_generation_wins_and_statuses_follow_liveness() {
    let k = key();
    let mut tracker = AgeTracker::default();
    let now = Instant::now();
    let view = build_view(
        "a",
        vec![
            raw("a", 1, true, 1, &k, 1),
            raw("b", 1, false, 5, &k, 1),
            raw("b", 2, true, 1, &k, 1),
            raw("c", 1, false, 1, &k, 1),
        ],
        &k,
        &mut tracker,
        PARAMS,
        now,
    );
    let names: Vec<_> = view.members.iter().map(|m| (m.name.as_str(), m.generation, m.status)).collect();
    // c was never live: it may be joining, until its heartbeat stalls.
    assert_eq!(
        names,
        vec![("a", 1, MemberStatus::Alive), ("b", 2, MemberStatus::Alive), ("c", 1, MemberStatus::Suspect)]
    );
    assert!(view.member("a").is_some_and(|m| m.is_self && m.trusted));
    let raws = vec![raw("a", 1, true, 2, &k, 1), raw("b", 2, false, 1, &k, 1), raw("c", 1, false, 1, &k, 1)];
    let view = build_view("a", raws, &k, &mut tracker, PARAMS, now + Duration::from_millis(1001));
    let statuses: Vec<_> = view.members.iter().map(|m| (m.name.as_str(), m.status)).collect();
    assert_eq!(statuses, vec![("a", MemberStatus::Alive), ("b", MemberStatus::Dead), ("c", MemberStatus::Dead)]);
}

#[test]
fn a_joining_member_whose_heartbeat_moves_is_never_dead() {
    let k = key();
    let mut tracker = AgeTracker::default();
    let start = Instant::now();
    // chitchat calls it dead until it has two heartbeats to measure; here
    // for 3 s, its heartbeat moving every 200 ms.
    for round in 0..15 {
        let at = start + Duration::from_millis(200 * round);
        let view = build_view("a", vec![raw("j", 1, false, round + 1, &k, 1)], &k, &mut tracker, PARAMS, at);
        assert_eq!(view.member("j").expect("j").status, MemberStatus::Suspect, "round {round}");
    }
    let at = start + Duration::from_millis(3000);
    let view = build_view("a", vec![raw("j", 1, true, 16, &k, 1)], &k, &mut tracker, PARAMS, at);
    assert_eq!(view.member("j").expect("j").status, MemberStatus::Alive);
    // Once it was live, chitchat's word that it died counts at once.
    let view = build_view("a", vec![raw("j", 1, false, 17, &k, 1)], &k, &mut tracker, PARAMS, at);
    assert_eq!(view.member("j").expect("j").status, MemberStatus::Dead);
    // A new generation joins anew.
    let view = build_view("a", vec![raw("j", 2, false, 1, &k, 1)], &k, &mut tracker, PARAMS, at);
    assert_eq!(view.member("j").expect("j").status, MemberStatus::Suspect);
}

#[test]
fn wrong_key_is_untrusted_and_its_state_is_kept_out() {
    let mut tracker = AgeTracker::default();
    let other = ClusterSecret::from_bytes([1; 32]).signing_key();
    let view = build_view("a", vec![raw("x", 1, true, 1, &other, 1)], &key(), &mut tracker, PARAMS, Instant::now());
    let x = view.member("x").expect("x listed");
    assert!(!x.trusted && x.forged);
    assert!(x.info.is_none() && x.load.is_none());
    assert!(!x.is_usable());
}

#[test]
fn a_member_whose_signed_state_has_not_arrived_is_untrusted_but_not_forged() {
    let mut member = raw("x", 2, true, 1, &key(), 1);
    member.values.clear();
    let view = build_view("a", vec![member], &key(), &mut AgeTracker::default(), PARAMS, Instant::now());
    let x = view.member("x").expect("x listed");
    assert!(!x.trusted && !x.forged, "waiting for its state is not a wrong secret");
}

#[test]
fn tampered_load_makes_the_member_untrusted() {
    let k = key();
    let mut member = raw("b", 1, true, 1, &k, 1);
    member.values.insert(LOAD_KEY.into(), "v1.1.00.{}".into());
    let view = build_view("a", vec![member], &k, &mut AgeTracker::default(), PARAMS, Instant::now());
    let b = view.member("b").expect("b");
    assert!(!b.trusted && b.forged);
}

#[test]
fn heartbeat_stall_makes_suspect_and_age_grows() {
    let k = key();
    let mut tracker = AgeTracker::default();
    let start = Instant::now();
    build_view("a", vec![raw("b", 1, true, 1, &k, 1)], &k, &mut tracker, PARAMS, start);
    let later = start + Duration::from_millis(1500);
    let view = build_view("a", vec![raw("b", 1, true, 1, &k, 1)], &k, &mut tracker, PARAMS, later);
    let b = view.member("b").expect("b");
    assert_eq!((b.status, b.age_ms), (MemberStatus::Suspect, 1500));
    let view = build_view("a", vec![raw("b", 1, true, 2, &k, 1)], &k, &mut tracker, PARAMS, later);
    assert_eq!(view.member("b").expect("b").status, MemberStatus::Alive);
}

#[test]
fn replayed_older_value_does_not_roll_back() {
    let k = key();
    let mut tracker = AgeTracker::default();
    let now = Instant::now();
    let mut newer = raw("b", 1, true, 1, &k, 5);
    let draining = serde_json::to_string(&info(true)).expect("json");
    newer.values.insert(INFO_KEY.into(), sign_value(&k, "b", 1, INFO_KEY, 5, &draining));
    build_view("a", vec![newer], &k, &mut tracker, PARAMS, now);
    let view = build_view("a", vec![raw("b", 1, true, 2, &k, 4)], &k, &mut tracker, PARAMS, now);
    let b = view.member("b").expect("b");
    assert!(b.trusted);
    assert!(b.info.as_ref().is_some_and(|i| i.draining), "older value must not replace the newer one");
}

#[test]
fn a_member_not_yet_judged_is_suspect_not_dead() {
    let k = key();
    let mut joining = raw("b", 1, false, 1, &k, 1);
    joining.dead = false;
    let view = build_view("a", vec![joining], &k, &mut AgeTracker::default(), PARAMS, Instant::now());
    assert_eq!(view.member("b").expect("b").status, MemberStatus::Suspect);
}
