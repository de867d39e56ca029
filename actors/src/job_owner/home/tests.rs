use gpumesh_membership::{ClusterView, Member, MemberStatus};

use super::{home, rendezvous};

fn member(name: &str, status: MemberStatus, trusted: bool, draining: bool) -> Member {
    let mut member = crate::test_members::member(name, status, trusted, name == "n1");
    if let Some(info) = &mut member.info {
        info.draining = draining;
    }
    member
}

fn view(members: Vec<Member>) -> ClusterView {
    ClusterView { self_name: "n1".into(), members }
}

fn alive(names: &[&str]) -> ClusterView {
    view(names.iter().map(|name| member(name, MemberStatus::Alive, true, false)).collect())
}

#[test]
fn every_node_with_the_same_members_picks_the_same_home_whatever_their_order() {
    for key in ["a", "order-17", "ünïcode", ""] {
        let forward = rendezvous(key, ["n1", "n2", "n3"]);
        let backward = rendezvous(key, ["n3", "n2", "n1"]);
        assert_eq!(forward, backward, "key {key:?}");
        assert!(forward.is_some());
    }
    assert_eq!(rendezvous("a", std::iter::empty()), None);
}

#[test]
fn keys_spread_over_the_members() {
    let mut homes = std::collections::BTreeMap::<&str, usize>::new();
    for i in 0..3000 {
        let key = format!("key-{i}");
        *homes.entry(rendezvous(&key, ["n1", "n2", "n3"]).expect("home")).or_default() += 1;
    }
    assert_eq!(homes.len(), 3, "{homes:?}");
    assert!(homes.values().all(|&count| (800..1200).contains(&count)), "uneven: {homes:?}");
}

#[test]
fn only_the_keys_of_a_member_that_leaves_move() {
    let (before, after) = (alive(&["n1", "n2", "n3", "n4"]), alive(&["n1", "n2", "n3"]));
    let mut moved = 0;
    for i in 0..2000 {
        let key = format!("key-{i}");
        let (old, new) = (home(&key, &before, "n1"), home(&key, &after, "n1"));
        if old != "n4" {
            assert_eq!(old, new, "key {key} moved though its home stayed");
        } else {
            moved += 1;
            assert_ne!(new, "n4");
        }
    }
    assert!(moved > 300, "n4 was the home of only {moved} keys of 2000");
}

#[test]
fn dead_untrusted_and_draining_members_are_no_home() {
    let key = (0..).map(|i| format!("k{i}")).find(|key| home(key, &alive(&["n1", "n2"]), "n1") == "n2").expect("key");
    for unfit in [
        member("n2", MemberStatus::Dead, true, false),
        member("n2", MemberStatus::Alive, false, false),
        member("n2", MemberStatus::Alive, true, true),
    ] {
        let view = view(vec![member("n1", MemberStatus::Alive, true, false), unfit.clone()]);
        assert_eq!(home(&key, &view, "n1"), "n1", "{unfit:?}");
    }
    let suspect =
        view(vec![member("n1", MemberStatus::Alive, true, false), member("n2", MemberStatus::Suspect, true, false)]);
    assert_eq!(home(&key, &suspect, "n1"), "n2", "a suspect member keeps its keys");
}

#[test]
fn a_node_that_sees_no_candidate_is_the_home_itself() {
    assert_eq!(home("k", &ClusterView::default(), "n7"), "n7");
}
