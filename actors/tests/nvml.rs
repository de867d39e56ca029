//! On a GPU machine: the metrics probe reads what `nvidia-smi` reports.
//! Needs NVIDIA's driver; run with `cargo nextest run --run-ignored only`.

use gpumesh_actors::{HardwareProbe, SystemProbe};

#[test]
#[ignore = "needs an NVIDIA GPU and driver"]
fn probe_matches_nvidia_smi() {
    let output = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"])
        .output()
        .expect("nvidia-smi runs");
    let text = String::from_utf8(output.stdout).expect("utf8");
    let expected: Vec<(u32, String, u64)> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            (fields[0].parse().expect("index"), fields[1].to_string(), fields[2].parse().expect("MiB"))
        })
        .collect();
    assert!(!expected.is_empty(), "nvidia-smi lists no GPU");
    let sample = SystemProbe::new().sample();
    assert_eq!(sample.gpus.len(), expected.len());
    for (gpu, (index, name, total_mb)) in sample.gpus.iter().zip(&expected) {
        assert_eq!((gpu.index, &gpu.name, gpu.memory_total_mb), (*index, name, *total_mb));
        assert!(gpu.memory_free_mb <= gpu.memory_total_mb);
        assert!(gpu.temperature_c > 0 && gpu.temperature_c < 120, "{gpu:?}");
    }
}
