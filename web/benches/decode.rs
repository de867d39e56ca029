//! Where a 24 KB JSON inference request spends its time in the decoder:
//! the tiny CNN's input (3,072 floats of four decimals, the body
//! `../shared/peers/loadgen.py` sends), decoded as `POST .../infer` does.
//! `cargo bench -p gpumesh-web --bench decode`

#![allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]

use std::time::{Duration, Instant};

const RUN: Duration = Duration::from_secs(3);

/// loadgen.py's body: an LCG's values in [0, 1) with four decimals.
fn loadgen_body() -> Vec<u8> {
    let mut x: u64 = 12345;
    let values: Vec<String> = (0..3 * 32 * 32)
        .map(|_| {
            x = (1_103_515_245 * x + 12345) & 0x7FFF_FFFF;
            let value = (x % 10000) as f64 / 10000.0;
            format!("{}", (value * 10000.0).round() / 10000.0)
        })
        .collect();
    format!(
        r#"{{"inputs": [{{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [{}]}}]}}"#,
        values.join(", ")
    )
    .into_bytes()
}

fn time(what: &str, mut run: impl FnMut()) {
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < RUN {
        run();
        count += 1;
    }
    let per = started.elapsed() / u32::try_from(count).unwrap_or(u32::MAX);
    println!("{what}: {:.1} us per request ({count} runs)", per.as_secs_f64() * 1e6);
}

fn main() {
    let body = loadgen_body();
    println!("body: {} bytes", body.len());
    time("whole request decode", || {
        gpumesh_web::fuzzing::decode_infer_request(&body, None).expect("decodes");
    });
}
