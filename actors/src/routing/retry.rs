//! The rules of the request path after an attempt (pure): whether a failed
//! request is tried on another node, which nodes it avoids, and how long a
//! node that failed a forward is skipped. The routing service carries them
//! out; the table tests below pin every rule.

use std::time::Duration;

use crate::executor::InferError;
use crate::routing::policy::{Candidate, Requirements, RouteParams, is_eligible};

/// How long a node that failed a forward is skipped.
pub const UNREACHABLE_COOLDOWN: Duration = Duration::from_secs(3);
/// How long a node whose queue was full is skipped.
pub const QUEUE_FULL_COOLDOWN: Duration = Duration::from_millis(200);

/// What the attempts at one request have tried so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tried {
    /// Attempts started, the current one included.
    pub attempts: usize,
    /// Most attempts one request may make.
    pub max_attempts: usize,
    /// Nodes that failed this request and are tried last.
    pub avoid: Vec<String>,
    /// Why the latest failed attempt failed.
    pub last_error: Option<InferError>,
}

impl Tried {
    /// Nothing tried yet; at most `max_attempts` (at least one).
    pub fn new(max_attempts: usize) -> Self {
        Self { max_attempts: max_attempts.max(1), ..Self::default() }
    }
}

/// One attempt that failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The node it was sent to.
    pub target: String,
    /// That node is this one (it ran here, not forwarded).
    pub here: bool,
    pub error: InferError,
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Choose a node again and try it.
    Retry,
    /// Answer the client with this error.
    GiveUp(InferError),
}

/// After `failure`, try another node or give up. The client's own mistakes
/// and an error of this node's that another node cannot mend end the
/// request; a device failure here (out of memory, a crashed session) and
/// any failed forward are tried elsewhere while attempts remain
/// (inference is idempotent). A node that failed here is avoided by the
/// next choice; a failed forward target is skipped by its cooldown instead.
pub fn next_attempt(failure: Failure, tried: &mut Tried) -> Next {
    let Failure { target, here, error } = failure;
    match error {
        InferError::BadRequest(_) | InferError::UnknownModel(_) => return Next::GiveUp(error),
        InferError::Failed(_) if here => tried.avoid.push(target),
        _ if here => return Next::GiveUp(error),
        _ => {}
    }
    tried.last_error = Some(error.clone());
    if tried.attempts >= tried.max_attempts { Next::GiveUp(error) } else { Next::Retry }
}

/// How long `target` is skipped after an attempt there ended in `error`:
/// `None` when it is not (it ran here, or it answered, if only to refuse a
/// bad request).
pub fn cooldown(here: bool, error: Option<&InferError>) -> Option<Duration> {
    match error? {
        _ if here => None,
        InferError::BadRequest(_) => None,
        InferError::QueueFull { .. } | InferError::TooManyJobs { .. } => Some(QUEUE_FULL_COOLDOWN),
        _ => Some(UNREACHABLE_COOLDOWN),
    }
}

/// Marks the candidates in `avoid` as avoided while another candidate
/// could serve the request; when only avoided nodes could, they stay in.
pub fn apply_avoid(candidates: &mut [Candidate], avoid: &[String], requirements: &Requirements, params: RouteParams) {
    let other = candidates.iter().any(|c| !avoid.contains(&c.node) && is_eligible(c, requirements, params));
    if other {
        for candidate in candidates.iter_mut().filter(|c| avoid.contains(&c.node)) {
            candidate.avoided = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad() -> InferError {
        InferError::BadRequest("bad".into())
    }
    fn unknown() -> InferError {
        InferError::UnknownModel("m".into())
    }
    fn full() -> InferError {
        InferError::QueueFull { model: "m".into(), queued: 1, retry_after_ms: 1 }
    }
    fn down() -> InferError {
        InferError::Unavailable("down".into())
    }
    fn failed() -> InferError {
        InferError::Failed("oom".into())
    }

    #[test]
    fn next_attempt_follows_the_table() {
        // (error, ran here, attempts so far, max) -> retry?, avoided?, remembered as last error?
        let table = [
            (bad(), false, 1, 3, false, false, false),
            (bad(), true, 1, 3, false, false, false),
            (unknown(), false, 1, 3, false, false, false),
            (unknown(), true, 1, 3, false, false, false),
            (failed(), true, 1, 3, true, true, true),
            (failed(), true, 3, 3, false, true, true),
            (down(), true, 1, 3, false, false, false),
            (full(), true, 1, 3, false, false, false),
            (down(), false, 1, 3, true, false, true),
            (full(), false, 2, 3, true, false, true),
            (failed(), false, 1, 3, true, false, true),
            (down(), false, 3, 3, false, false, true),
            (down(), false, 1, 1, false, false, true),
        ];
        for (error, here, attempts, max_attempts, retry, avoided, remembered) in table {
            let mut tried = Tried { attempts, ..Tried::new(max_attempts) };
            let failure = Failure { target: "t".into(), here, error: error.clone() };
            let next = next_attempt(failure, &mut tried);
            let case = format!("{error:?} here={here} attempts={attempts}/{max_attempts}");
            assert_eq!(next, if retry { Next::Retry } else { Next::GiveUp(error.clone()) }, "{case}");
            assert_eq!(tried.avoid, if avoided { vec!["t".to_string()] } else { vec![] }, "{case}");
            assert_eq!(tried.last_error, remembered.then_some(error), "{case}");
        }
    }

    #[test]
    fn cooldowns_follow_the_table() {
        let table = [
            (false, None, None),
            (true, None, None),
            (false, Some(bad()), None),
            (false, Some(full()), Some(QUEUE_FULL_COOLDOWN)),
            (false, Some(down()), Some(UNREACHABLE_COOLDOWN)),
            (false, Some(failed()), Some(UNREACHABLE_COOLDOWN)),
            (false, Some(unknown()), Some(UNREACHABLE_COOLDOWN)),
            (true, Some(down()), None),
            (true, Some(failed()), None),
        ];
        for (here, error, expected) in table {
            assert_eq!(cooldown(here, error.as_ref()), expected, "here={here} {error:?}");
        }
        assert_eq!(UNREACHABLE_COOLDOWN, Duration::from_secs(3));
        assert_eq!(QUEUE_FULL_COOLDOWN, Duration::from_millis(200));
    }

    fn serving(node: &str) -> Candidate {
        Candidate {
            node: node.into(),
            live: true,
            trusted: true,
            reachable: true,
            linked: true,
            model_device: Some("cpu".into()),
            ..Candidate::default()
        }
    }

    fn avoided(candidates: &[Candidate]) -> Vec<&str> {
        candidates.iter().filter(|c| c.avoided).map(|c| c.node.as_str()).collect()
    }

    #[test]
    fn avoided_nodes_are_left_out_only_while_another_can_serve() {
        let params = RouteParams { stale_after_ms: 1_000 };
        let any = Requirements::default();
        let avoid = ["a".to_string()];

        let mut list = vec![serving("a"), serving("b")];
        apply_avoid(&mut list, &avoid, &any, params);
        assert_eq!(avoided(&list), ["a"]);

        // b cannot serve (dead, stale, model missing, wrong device): a stays in.
        let stale = Candidate { age_ms: 5_000, ..serving("b") };
        let dead = Candidate { live: false, ..serving("b") };
        let empty = Candidate { model_device: None, ..serving("b") };
        for other in [stale, dead, empty] {
            let mut list = vec![serving("a"), other.clone()];
            apply_avoid(&mut list, &avoid, &any, params);
            assert_eq!(avoided(&list), Vec::<&str>::new(), "{other:?}");
        }
        let gpu = Requirements { device: crate::routing::policy::DeviceRequirement::Gpu, ..Requirements::default() };
        let mut list = vec![serving("a"), serving("b")];
        apply_avoid(&mut list, &avoid, &gpu, params);
        assert_eq!(avoided(&list), Vec::<&str>::new(), "no cpu node meets a gpu requirement");

        let mut list = vec![serving("a"), serving("b"), serving("c")];
        apply_avoid(&mut list, &["a".to_string(), "b".to_string()], &any, params);
        assert_eq!(avoided(&list), ["a", "b"]);
    }
}
