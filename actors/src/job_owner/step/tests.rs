use gpumesh_storage::jobs::{JobEvent, JobRecord, JobState, apply};

use super::*;

const ME: &str = "owner";

fn accepted() -> JobRecord {
    JobRecord::accepted("owner.1-1".into(), "m".into(), vec![1], None, 10)
}

fn with(job: &JobRecord, event: JobEvent) -> JobRecord {
    apply(job, event, 20, MAX_JOB_ATTEMPTS).expect("a valid transition")
}

fn dispatched(job: &JobRecord, node: &str) -> JobRecord {
    with(job, JobEvent::Dispatched { node: node.into() })
}

fn retryable(job: &JobRecord) -> JobRecord {
    with(job, JobEvent::Failed { reason: "lost".into(), retryable: true })
}

fn down() -> InferError {
    InferError::Unavailable("no node".into())
}

fn failed(reason: &str, retryable: bool) -> Step {
    Step::Record(JobEvent::Failed { reason: reason.into(), retryable })
}

fn choose(attempt: usize, avoid: &[&str], last_error: Option<InferError>) -> Step {
    Step::Choose { attempt, avoid: avoid.iter().map(|n| n.to_string()).collect(), last_error }
}

#[test]
fn each_outcome_leads_to_its_step() {
    let fresh = accepted();
    let remote = dispatched(&fresh, "b");
    let here = dispatched(&fresh, ME);
    let retry = dispatched(&retryable(&remote), "c");
    let back = retryable(&remote);
    let completed = with(&retry, JobEvent::Completed { node: "c".into(), outputs: vec![7] });
    let completed_here = with(&here, JobEvent::Completed { node: ME.into(), outputs: vec![7] });
    let failed_for_good = with(&remote, JobEvent::Failed { reason: "x".into(), retryable: false });
    let lost = |attempt: u32| failed(&format!("owner restarted during attempt {attempt}"), true);
    let table: Vec<(&str, &JobRecord, Outcome, Step)> = vec![
        (
            "unreadable request",
            &fresh,
            Outcome::Loaded { readable: false, held: true },
            failed("the stored request is unreadable", false),
        ),
        ("fresh job", &fresh, Outcome::Loaded { readable: true, held: true }, choose(1, &[], None)),
        ("final job", &completed, Outcome::Loaded { readable: true, held: true }, Step::Stop),
        (
            "restart mid-attempt elsewhere",
            &remote,
            Outcome::Loaded { readable: true, held: true },
            Step::Collect { from: "b".into() },
        ),
        ("restart mid-attempt here", &here, Outcome::Loaded { readable: true, held: true }, lost(1)),
        (
            "restart mid-attempt of a language-model job elsewhere",
            &remote,
            Outcome::Loaded { readable: true, held: false },
            lost(1),
        ),
        (
            "held result",
            &remote,
            Outcome::Collected(Some(("b".into(), vec![1]))),
            Step::Record(JobEvent::Completed { node: "b".into(), outputs: vec![1] }),
        ),
        ("no held result", &retry, Outcome::Collected(None), lost(2)),
        ("a node", &fresh, Outcome::Chosen(Ok("b".into())), Step::Dispatch { target: "b".into() }),
        ("bad request", &fresh, Outcome::Chosen(Err(InferError::BadRequest("shape".into()))), failed("shape", false)),
        ("no node yet", &fresh, Outcome::Chosen(Err(down())), Step::Wait(NO_NODE_BACKOFF)),
        (
            "unknown model yet",
            &fresh,
            Outcome::Chosen(Err(InferError::UnknownModel("m".into()))),
            Step::Wait(NO_NODE_BACKOFF),
        ),
        ("waited", &back, Outcome::Waited, choose(2, &["b"], None)),
        (
            "ran",
            &remote,
            Outcome::Ran(Ok(("b".into(), vec![3]))),
            Step::Record(JobEvent::Completed { node: "b".into(), outputs: vec![3] }),
        ),
        ("ran, bad request", &remote, Outcome::Ran(Err(InferError::BadRequest("dims".into()))), failed("dims", false)),
        ("ran, lost", &remote, Outcome::Ran(Err(down())), failed("no node", true)),
        (
            "ran, queue full",
            &remote,
            Outcome::Ran(Err(InferError::QueueFull { model: "m".into(), queued: 2, retry_after_ms: 5 })),
            failed("model m has 2 requests queued, its limit; retry after 5 ms", true),
        ),
        ("recorded, back to accepted", &back, Outcome::Recorded, choose(2, &["b"], None)),
        ("recorded, completed", &completed, Outcome::Recorded, Step::Release { nodes: vec!["b".into(), "c".into()] }),
        ("recorded, completed here only", &completed_here, Outcome::Recorded, Step::Stop),
        ("recorded, failed", &failed_for_good, Outcome::Recorded, Step::Stop),
    ];
    for (case, job, outcome, expected) in table {
        assert_eq!(JobSteps::new(ME).next(job, outcome), expected, "{case}");
    }
}

#[test]
fn a_job_waits_for_a_node_a_bounded_number_of_times_then_fails() {
    let job = accepted();
    let mut steps = JobSteps::new(ME);
    for wait in 1..=NO_NODE_WAITS {
        assert_eq!(steps.next(&job, Outcome::Chosen(Err(down()))), Step::Wait(NO_NODE_BACKOFF), "wait {wait}");
        assert_eq!(steps.next(&job, Outcome::Waited), choose(1, &[], Some(down())), "after wait {wait}");
    }
    assert_eq!(steps.next(&job, Outcome::Chosen(Err(down()))), failed("no node", false));
    assert_eq!((NO_NODE_WAITS, NO_NODE_BACKOFF), (20, Duration::from_millis(500)));
}

#[test]
fn the_last_failure_explains_the_next_choice_and_tried_nodes_go_last() {
    let job = dispatched(&accepted(), "b");
    let mut steps = JobSteps::new(ME);
    assert_eq!(steps.next(&job, Outcome::Ran(Err(down()))), failed("no node", true));
    let back = retryable(&job);
    assert_eq!(back.state, JobState::Accepted);
    assert_eq!(steps.next(&back, Outcome::Recorded), choose(2, &["b"], Some(down())));
    let again = dispatched(&retryable(&dispatched(&back, "c")), "b");
    assert_eq!(again.attempts, 3);
    let last = retryable(&again);
    assert_eq!(last.state, JobState::Failed, "the state machine bounds attempts");
    assert_eq!(steps.next(&last, Outcome::Recorded), Step::Stop);
}
