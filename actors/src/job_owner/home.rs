//! Where a job with an idempotency key lives (pure): its home, the member
//! that rendezvous hashing picks for the key among the members that may
//! take new work (trusted, not dead, not draining), this node included.
//! Every node with the same view picks the same home, so the same key
//! submitted at any node reaches one store and finds one job.
//!
//! What holds across membership changes: a key keeps its home while the
//! set of candidates does not change, and only the keys whose highest
//! score belonged to a member that left (or now belong to one that joined)
//! move. A key submitted again after its home moved, while the old home
//! still holds its job, makes a second job on the new home; the old home
//! keeps answering for the first (its id names it). Once the old home is
//! back among the candidates, the key finds the first job again.

use gpumesh_membership::ClusterView;

/// The score of `member` for `key`: the first 8 bytes of a blake3 hash of
/// both, with their lengths so no two pairs run together.
fn score(key: &str, member: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key.as_bytes());
    hasher.update(member.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The candidate with the highest score for `key` (ties to the smaller
/// name); `None` when there is no candidate.
pub fn rendezvous<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates.into_iter().max_by(|a, b| score(key, a).cmp(&score(key, b)).then_with(|| b.cmp(a)))
}

/// The members of `view` that may be a key's home, by name.
pub fn candidates(view: &ClusterView) -> impl Iterator<Item = &str> {
    view.members.iter().filter(|m| m.is_usable()).map(|m| m.name.as_str())
}

/// The home of `key` as `view` shows the cluster; `me` when the view has
/// no candidate yet (a node that has just started).
pub fn home(key: &str, view: &ClusterView, me: &str) -> String {
    rendezvous(key, candidates(view)).unwrap_or(me).to_string()
}

#[cfg(test)]
mod tests;
