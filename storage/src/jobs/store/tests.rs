use std::sync::Arc;

use super::*;
use crate::Error;
use crate::jobs::state::JobState;

fn open(dir: &std::path::Path) -> (sled::Db, SledJobStore) {
    let db = crate::reopen_sled(dir);
    let store = SledJobStore::open(&db).expect("job trees");
    (db, store)
}

fn job(id: &str, key: Option<&str>, now_ms: u64) -> JobRecord {
    JobRecord::accepted(id.into(), "tiny".into(), vec![7; 1000], key.map(String::from), now_ms)
}

#[test]
fn insert_get_and_update_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, store) = open(dir.path());
    assert_eq!(store.insert(job("n1.1", None, 10)).expect("insert"), Inserted::New(job("n1.1", None, 10)));
    assert_eq!(store.get("n1.1").expect("get"), Some(job("n1.1", None, 10)));
    let next =
        store.update("n1.1", JobEvent::Dispatched { node: "c".into() }, 11, 3).expect("stored").expect("applies");
    let next = store
        .update(&next.id, JobEvent::Completed { node: "c".into(), outputs: vec![1, 2, 3] }, 12, 3)
        .expect("stored")
        .expect("applies");
    let stored = store.get("n1.1").expect("get").expect("present");
    assert_eq!(stored, next);
    assert_eq!(stored.outputs.as_deref(), Some(&[1u8, 2, 3][..]));
    let refused =
        store.update("n1.1", JobEvent::Completed { node: "b".into(), outputs: vec![9] }, 13, 3).expect("stored");
    assert_eq!(refused, Err(TransitionError::Final("completed")));
    assert_eq!(
        store.get("n1.1").expect("get").expect("present").outputs.as_deref(),
        Some(&[1u8, 2, 3][..]),
        "first completion wins"
    );
    assert!(matches!(
        store.update("n1.404", JobEvent::Dispatched { node: "c".into() }, 1, 3),
        Err(Error::UnknownJob(_))
    ));
}

#[test]
fn one_idempotency_key_makes_one_job_even_under_concurrency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, store) = open(dir.path());
    let first = store.insert(job("n1.1", Some("k"), 10)).expect("insert");
    let again = store.insert(job("n1.2", Some("k"), 11)).expect("insert");
    assert!(matches!(first, Inserted::New(_)));
    assert!(matches!(&again, Inserted::Existing(existing) if existing.id == "n1.1"));
    let store = Arc::new(store);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || store.insert(job(&format!("n1.c{i}"), Some("race"), 20)).expect("insert"))
        })
        .collect();
    let outcomes: Vec<Inserted> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
    let new: Vec<&Inserted> = outcomes.iter().filter(|o| matches!(o, Inserted::New(_))).collect();
    assert_eq!(new.len(), 1, "exactly one job for the key");
    let Inserted::New(winner) = new[0] else { unreachable!() };
    assert!(outcomes.iter().all(|o| match o {
        Inserted::New(j) | Inserted::Existing(j) => j.id == winner.id,
    }));
    assert_eq!(store.list(StateFilter::Active, 100).expect("list").len(), 2, "n1.1 and the race winner");
}

#[test]
fn active_jobs_survive_a_reopen_for_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (_db, store) = open(dir.path());
        store.insert(job("n1.1", None, 10)).expect("insert");
        store.insert(job("n1.2", None, 11)).expect("insert");
        store.update("n1.2", JobEvent::Dispatched { node: "c".into() }, 12, 3).expect("stored").expect("applies");
        store.insert(job("n1.3", None, 13)).expect("insert");
        store.update("n1.3", JobEvent::Dispatched { node: "c".into() }, 14, 3).expect("stored").expect("applies");
        store
            .update("n1.3", JobEvent::Completed { node: "c".into(), outputs: vec![1] }, 15, 3)
            .expect("stored")
            .expect("applies");
        store.flush().expect("flush");
    }
    let (_db, store) = open(dir.path());
    let active: Vec<(String, JobState)> =
        store.recover().expect("recover").into_iter().map(|j| (j.id, j.state)).collect();
    assert_eq!(active, vec![("n1.1".into(), JobState::Accepted), ("n1.2".into(), JobState::Dispatched)]);
    assert_eq!(store.list(StateFilter::Completed, 10).expect("list").len(), 1);
    assert_eq!(store.get("n1.2").expect("get").expect("present").request, vec![7; 1000]);
}

#[test]
fn retention_drops_the_oldest_finished_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, store) = open(dir.path());
    for i in 0..5u64 {
        let id = format!("n1.{i}");
        store.insert(job(&id, Some(&format!("key{i}")), i)).expect("insert");
        store.update(&id, JobEvent::Dispatched { node: "c".into() }, 100 + i, 3).expect("stored").expect("applies");
        store
            .update(&id, JobEvent::Completed { node: "c".into(), outputs: vec![1] }, 100 + i, 3)
            .expect("stored")
            .expect("applies");
    }
    store.insert(job("n1.active", None, 1)).expect("insert");
    let dropped = store.prune(1_000, Retention { max_age_ms: 10_000, max_finished: 3 }).expect("prune");
    assert_eq!(dropped, 2);
    let kept: Vec<String> = store.list(StateFilter::Completed, 10).expect("list").into_iter().map(|j| j.id).collect();
    assert_eq!(kept, vec!["n1.2", "n1.3", "n1.4"]);
    assert!(
        matches!(store.insert(job("n1.new", Some("key0"), 2)).expect("insert"), Inserted::New(_)),
        "a dropped job frees its key"
    );
    let dropped = store.prune(100_000, Retention { max_age_ms: 10_000, max_finished: 100 }).expect("prune");
    assert_eq!(dropped, 3, "too old");
    assert_eq!(store.recover().expect("recover").len(), 2, "active jobs are never pruned");
}

#[test]
fn held_results_survive_a_reopen_until_released_or_too_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (_db, store) = open(dir.path());
        store.hold_result("n1.a", 1_000, b"result a").expect("hold");
        store.hold_result("n1.b", 5_000, b"result b").expect("hold");
        store.flush().expect("flush");
    }
    let (_db, store) = open(dir.path());
    assert_eq!(store.held_result("n1.a").expect("read").as_deref(), Some(&b"result a"[..]));
    store.release_result("n1.a").expect("release");
    assert_eq!(store.held_result("n1.a").expect("read"), None, "released");
    assert_eq!(store.held_result("n1.zz").expect("read"), None);
    let retention = Retention { max_age_ms: 10_000, max_finished: 100 };
    assert_eq!(store.prune(12_000, retention).expect("prune"), 0, "n1.b is 7 s old");
    assert_eq!(store.prune(15_001, retention).expect("prune"), 1, "n1.b is over 10 s old");
    assert_eq!(store.held_result("n1.b").expect("read"), None);
}

#[test]
fn counts_by_state_and_recent_jobs_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, store) = open(dir.path());
    for (i, at) in [(1, 10), (2, 30), (3, 20), (4, 40)] {
        store.insert(job(&format!("n1.{i}"), None, at)).expect("insert");
    }
    store.update("n1.3", JobEvent::Dispatched { node: "c".into() }, 50, 3).expect("stored").expect("applies");
    store
        .update("n1.4", JobEvent::Failed { reason: "x".into(), retryable: false }, 51, 3)
        .expect("stored")
        .expect("ok");
    assert_eq!(store.count(JobState::Accepted).expect("count"), 2);
    assert_eq!(store.count(JobState::Dispatched).expect("count"), 1);
    assert_eq!(store.count(JobState::Failed).expect("count"), 1);
    assert_eq!(store.count(JobState::Completed).expect("count"), 0);
    let recent: Vec<String> = store.recent(3).expect("recent").into_iter().map(|j| j.id).collect();
    assert_eq!(recent, ["n1.4", "n1.2", "n1.3"], "newest created first, whatever the state");
}

/// What a crash can leave of writes after the last flush, written straight
/// into the trees: the store repairs it when it opens.
#[test]
fn opening_drops_half_written_jobs_and_rebuilds_the_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (db, store) = open(dir.path());
        store.insert(job("n1.acked", Some("k"), 10)).expect("insert");
        store.insert(job("n1.orphan", None, 11)).expect("insert");
        store.insert(job("n1.moved", None, 12)).expect("insert");
        store.update("n1.moved", JobEvent::Dispatched { node: "c".into() }, 13, 3).expect("stored").expect("applies");
        // A loser of the key's race that crashed before removing its record.
        let loser = job("n1.loser", Some("k"), 14);
        db.open_tree("job_request").expect("tree").insert("n1.loser", loser.request.as_slice()).expect("write");
        db.open_tree("job_record").expect("tree").insert("n1.loser", sled_store_record(&loser)).expect("write");
        // A request lost in the crash, its record kept.
        db.open_tree("job_request").expect("tree").remove("n1.orphan").expect("write");
        // The index write of a change lost, the record's kept.
        let by_state = db.open_tree("job_by_state").expect("tree");
        by_state.clear().expect("clear");
        by_state.insert(b"\x00stale", &[]).expect("write");
        // A key naming a job that is gone.
        db.open_tree("job_idem").expect("tree").insert("gone", "n1.gone").expect("write");
        store.flush().expect("flush");
    }
    let (db, store) = open(dir.path());
    let active: Vec<(String, JobState)> =
        store.recover().expect("recover").into_iter().map(|j| (j.id, j.state)).collect();
    assert_eq!(active, vec![("n1.acked".into(), JobState::Accepted), ("n1.moved".into(), JobState::Dispatched)]);
    assert_eq!(store.get("n1.orphan").expect("get"), None, "never acknowledged: dropped");
    assert_eq!(store.get("n1.loser").expect("get"), None, "lost its key's race: dropped");
    assert_eq!(store.by_key("k").expect("by key").map(|j| j.id).as_deref(), Some("n1.acked"));
    assert_eq!(store.count(JobState::Accepted).expect("count"), 1);
    assert_eq!(store.count(JobState::Dispatched).expect("count"), 1);
    assert!(db.open_tree("job_idem").expect("tree").get("gone").expect("read").is_none());
}

fn sled_store_record(job: &JobRecord) -> Vec<u8> {
    // Written the way the store writes it: taken from a store that holds it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, store) = open(dir.path());
    store.insert(job.clone()).expect("insert");
    db.open_tree("job_record").expect("tree").get(job.id.as_bytes()).expect("read").expect("record").to_vec()
}

#[test]
fn a_store_of_the_layout_before_is_converted_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = crate::reopen_sled(dir.path());
        let meta = |id: &str, state: &str, history: &str| {
            format!(
                r#"{{"id":"{id}","model":"tiny","state":"{state}","attempts":1,"node":"c","created_ms":10,"updated_ms":12,"idempotency_key":"k-{id}","error":null,"history":{history}}}"#
            )
        };
        let done = JobRecord::accepted("n1.done".into(), "tiny".into(), vec![], None, 10);
        let history = serde_json::to_string(&done.history).expect("history");
        let trees = ["job_meta", "job_request", "job_outputs", "job_by_state", "job_idem"]
            .map(|t| db.open_tree(t).expect("tree"));
        trees[0].insert("n1.done", meta("n1.done", "completed", &history).as_bytes()).expect("write");
        trees[0].insert("n1.todo", meta("n1.todo", "accepted", &history).as_bytes()).expect("write");
        trees[1].insert("n1.done", &[1, 2][..]).expect("write");
        trees[1].insert("n1.todo", &[3][..]).expect("write");
        trees[2].insert("n1.done", &[9, 9][..]).expect("write");
        trees[4].insert("k-n1.done", "n1.done").expect("write");
        db.flush().expect("flush");
    }
    let (db, store) = open(dir.path());
    let done = store.get("n1.done").expect("get").expect("converted");
    assert_eq!((done.state, done.request, done.outputs), (JobState::Completed, vec![1, 2], Some(vec![9, 9])));
    assert_eq!(store.recover().expect("recover").into_iter().map(|j| j.id).collect::<Vec<_>>(), ["n1.todo"]);
    assert_eq!(store.by_key("k-n1.todo").expect("by key").map(|j| j.id).as_deref(), Some("n1.todo"), "key claimed");
    assert!(!db.tree_names().iter().any(|name| name.as_ref() == b"job_meta"), "old trees dropped");
}
