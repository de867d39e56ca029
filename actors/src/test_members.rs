//! Members of a cluster view for unit tests (only built for tests).

use gpumesh_membership::{Member, MemberStatus, NodeInfo};

/// A member of generation 1 with no load; trusted members carry addresses
/// (a cluster address of their own, by name length) and are not draining.
pub(crate) fn member(name: &str, status: MemberStatus, trusted: bool, is_self: bool) -> Member {
    Member {
        name: name.into(),
        generation: 1,
        gossip_addr: "127.0.0.1:1".parse().expect("addr"),
        status,
        age_ms: 0,
        trusted,
        forged: false,
        is_self,
        info: trusted.then(|| NodeInfo {
            http_addr: "127.0.0.1:2".parse().expect("addr"),
            cluster_addr: format!("127.0.0.1:{}", 3000 + name.len()).parse().expect("addr"),
            version: "0".into(),
            draining: false,
            started_unix_ms: 0,
        }),
        load: None,
        load_seq: 0,
    }
}
