//! Machine facts and load: static [`SystemInfo`] once, [`NodeMetrics`] on every heartbeat.
//!
//! sysinfo and `nvidia-smi` do blocking work, so readings are taken off the async threads.

pub mod gpu;

use std::sync::{Arc, Mutex, PoisonError};

use llm_router_common::{GpuMetrics, NodeMetrics, SystemInfo};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// Keeps one `sysinfo::System` across heartbeats: CPU usage is the difference between two
/// refreshes, so each reading covers the time since the previous heartbeat.
#[derive(Clone)]
pub struct MetricsCollector {
    system: Arc<Mutex<System>>,
    gpu: Arc<Mutex<GpuProbeState>>,
}

/// What the last `nvidia-smi` run said, so that a failure is logged once, not on every heartbeat.
#[derive(Debug, Default)]
struct GpuProbeState {
    last_error: Option<String>,
}

impl MetricsCollector {
    /// Takes the first CPU sample twice, [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] apart, so
    /// that the first heartbeat already carries a meaningful CPU percentage.
    pub async fn start() -> Self {
        let system = tokio::task::spawn_blocking(|| {
            System::new_with_specifics(
                RefreshKind::nothing()
                    .with_cpu(CpuRefreshKind::everything())
                    .with_memory(MemoryRefreshKind::nothing().with_ram()),
            )
        })
        .await
        .unwrap_or_else(|_| System::new());
        let collector = Self {
            system: Arc::new(Mutex::new(system)),
            gpu: Arc::default(),
        };
        tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
        collector.refresh_system().await;
        collector
    }

    /// Static facts about the machine, including its GPUs.
    pub async fn system_info(&self) -> SystemInfo {
        let system = Arc::clone(&self.system);
        let mut info = tokio::task::spawn_blocking(move || {
            let system = system.lock().unwrap_or_else(PoisonError::into_inner);
            static_system_info(&system)
        })
        .await
        .unwrap_or_default();
        info.gpus = gpu::gpu_infos(&self.gpu_metrics().await);
        info
    }

    /// Current CPU, memory and GPU load.
    pub async fn sample(&self) -> NodeMetrics {
        let (mut metrics, gpus) = tokio::join!(self.refresh_system(), self.gpu_metrics());
        metrics.gpus = gpus;
        metrics
    }

    async fn refresh_system(&self) -> NodeMetrics {
        let system = Arc::clone(&self.system);
        tokio::task::spawn_blocking(move || {
            let mut system = system.lock().unwrap_or_else(PoisonError::into_inner);
            system.refresh_cpu_usage();
            system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
            load_of(&system)
        })
        .await
        .unwrap_or_default()
    }

    async fn gpu_metrics(&self) -> Vec<GpuMetrics> {
        let result = gpu::query_nvidia_smi().await;
        let mut state = self.gpu.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(readings) => {
                if state.last_error.take().is_some() {
                    tracing::info!("nvidia-smi answers again");
                }
                readings.unwrap_or_default()
            }
            Err(error) => {
                let message = error.to_string();
                if state.last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(%message, "cannot read GPU metrics; reporting no GPUs");
                    state.last_error = Some(message);
                }
                Vec::new()
            }
        }
    }
}

fn static_system_info(system: &System) -> SystemInfo {
    SystemInfo {
        os: System::name().or_else(|| Some(std::env::consts::OS.to_owned())),
        os_version: System::long_os_version().or_else(System::os_version),
        arch: Some(System::cpu_arch()).filter(|arch| !arch.is_empty()),
        cpu_model: system
            .cpus()
            .first()
            .map(|cpu| cpu.brand().trim().to_owned())
            .filter(|brand| !brand.is_empty()),
        // Logical CPUs: the unit the CPU percentage is measured against.
        cpu_cores: u32::try_from(system.cpus().len()).unwrap_or(u32::MAX),
        total_memory_bytes: system.total_memory(),
        gpus: Vec::new(),
    }
}

fn load_of(system: &System) -> NodeMetrics {
    let total = system.total_memory();
    let used = system.used_memory();
    NodeMetrics {
        cpu_percent: system.global_cpu_usage().clamp(0.0, 100.0),
        memory_percent: percent(used, total),
        memory_used_bytes: used,
        memory_total_bytes: total,
        gpus: Vec::new(),
    }
}

fn percent(part: u64, whole: u64) -> f32 {
    if whole == 0 {
        return 0.0;
    }
    ((part as f64 / whole as f64) * 100.0).clamp(0.0, 100.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_of_nothing_is_zero_and_never_above_a_hundred() {
        assert_eq!(percent(5, 0), 0.0);
        assert_eq!(percent(50, 200), 25.0);
        assert_eq!(percent(300, 200), 100.0);
    }

    #[tokio::test]
    async fn a_sample_reports_this_machines_memory() {
        let collector = MetricsCollector::start().await;
        let metrics = collector.sample().await;
        assert!(metrics.memory_total_bytes > 0);
        assert!(metrics.memory_used_bytes <= metrics.memory_total_bytes);
        assert!((0.0..=100.0).contains(&metrics.cpu_percent));
        let info = collector.system_info().await;
        assert!(info.cpu_cores > 0);
        assert_eq!(info.total_memory_bytes, metrics.memory_total_bytes);
    }
}
