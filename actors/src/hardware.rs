//! Hardware readings: GPUs through NVML, CPU and memory through sysinfo.

use gpumesh_membership::{CpuStats, GpuStats};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

const BYTES_PER_MB: u64 = 1024 * 1024;

/// NVML's absence is news once per process, not at every probe.
static NVML_REPORTED: std::sync::Once = std::sync::Once::new();

/// One reading of the machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HardwareSample {
    pub gpus: Vec<GpuStats>,
    pub cpu: CpuStats,
}

/// Reads the machine's GPUs, CPU and memory.
pub trait HardwareProbe: Send + 'static {
    fn sample(&mut self) -> HardwareSample;
}

/// NVML for GPUs (when the driver library is present) and sysinfo.
pub struct SystemProbe {
    nvml: Option<Nvml>,
    system: Option<System>,
}

impl SystemProbe {
    /// Opens NVML; a machine without it is a CPU node, which is logged
    /// once and is not an error.
    pub fn new() -> Self {
        let nvml = match Nvml::init() {
            Ok(nvml) => {
                let count = nvml.device_count().unwrap_or(0);
                NVML_REPORTED.call_once(|| tracing::info!(gpus = count, "nvml initialised"));
                Some(nvml)
            }
            Err(error) => {
                NVML_REPORTED
                    .call_once(|| tracing::info!(reason = %error, "no nvml on this machine: running as a cpu node"));
                None
            }
        };
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        )
        .inspect_err(|error| tracing::warn!(%error, "cpu and memory readings unavailable"))
        .ok();
        Self { nvml, system }
    }

    fn gpus(&self) -> Vec<GpuStats> {
        let Some(nvml) = &self.nvml else { return Vec::new() };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|index| {
                let device = nvml
                    .device_by_index(index)
                    .inspect_err(|error| tracing::debug!(index, %error, "gpu not readable"))
                    .ok()?;
                let memory = device.memory_info().ok();
                Some(GpuStats {
                    index,
                    name: device.name().unwrap_or_else(|_| "unknown gpu".into()),
                    memory_total_mb: memory.as_ref().map_or(0, |m| m.total / BYTES_PER_MB),
                    memory_free_mb: memory.as_ref().map_or(0, |m| m.free / BYTES_PER_MB),
                    memory_reserved_mb: memory.as_ref().map_or(0, |m| m.reserved / BYTES_PER_MB),
                    utilization_pct: device.utilization_rates().map_or(0, |u| u.gpu),
                    temperature_c: device.temperature(TemperatureSensor::Gpu).unwrap_or(0),
                    power_w: device.power_usage().map_or(0, |milliwatts| milliwatts / 1000),
                })
            })
            .collect()
    }
}

impl Default for SystemProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl HardwareProbe for SystemProbe {
    fn sample(&mut self) -> HardwareSample {
        // CPU usage is the change between two refreshes; the metrics
        // interval (>= 200 ms) spaces them.
        let cpu = self.system.as_mut().map_or_else(CpuStats::default, |system| {
            system.refresh_cpu_usage();
            system.refresh_memory();
            CpuStats {
                cores: u32::try_from(system.cpus().len()).unwrap_or(u32::MAX),
                utilization_pct: system.global_cpu_usage().round().clamp(0.0, 100.0) as u32,
                memory_free_mb: system.available_memory() / BYTES_PER_MB,
            }
        });
        HardwareSample { gpus: self.gpus(), cpu }
    }
}
