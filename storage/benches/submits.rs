//! Durable submits per second: each submit returns only after a flush that
//! covers it. `cargo bench -p gpumesh-storage --bench submits`

#![allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]

use std::time::{Duration, Instant};

use std::sync::Arc;

use gpumesh_storage::jobs::{DurableJobs, Flusher, JobRecord, JobStore, SledJobStore};

const RUN: Duration = Duration::from_secs(5);
/// A job's request: a small JSON tensor body.
const REQUEST_BYTES: usize = 512;

fn job(id: u64) -> JobRecord {
    JobRecord::accepted(format!("bench.{id:016x}"), "tiny".into(), vec![b'x'; REQUEST_BYTES], None, id)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let store = SledJobStore::open(&db).expect("trees");

    let started = Instant::now();
    let mut sequential = 0u64;
    while started.elapsed() < RUN {
        store.insert(job(sequential)).expect("insert");
        store.flush().expect("flush");
        sequential += 1;
    }
    let rate = sequential as f64 / started.elapsed().as_secs_f64();
    println!("one submitter, one flush per submit: {rate:.0} durable submits/s");

    for concurrency in [16, 64, 256] {
        let jobs = runtime.block_on(async { DurableJobs::start(Arc::new(store.clone()), Flusher::Thread) });
        let flushes_before = jobs.flushes();
        let started = Instant::now();
        let done: u64 = runtime.block_on(async {
            let workers: Vec<_> = (0..concurrency)
                .map(|worker: u64| {
                    let jobs = jobs.clone();
                    tokio::spawn(async move {
                        let mut count = 0u64;
                        while started.elapsed() < RUN {
                            jobs.submit(job(concurrency << 40 | worker << 24 | count)).await.expect("durable");
                            count += 1;
                        }
                        count
                    })
                })
                .collect();
            let mut total = 0;
            for worker in workers {
                total += worker.await.expect("worker");
            }
            total
        });
        let seconds = started.elapsed().as_secs_f64();
        let flushes = jobs.flushes() - flushes_before;
        println!(
            "{concurrency} concurrent submitters, group commit: {:.0} durable submits/s ({:.1} submits per flush)",
            done as f64 / seconds,
            done as f64 / flushes.max(1) as f64
        );
    }
}
