//! Machine facts and load: static [`SystemInfo`] once, [`NodeMetrics`] on every heartbeat.
//!
//! sysinfo and the GPU sources ([`gpu`]: `nvidia-smi`, AMD sysfs, `ioreg`) do blocking work,
//! so readings are taken off the async threads. Which GPU sources the machine has is found
//! once, at start-up.

pub mod disk;
pub mod gpu;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use llm_router_common::{NodeMetrics, SystemInfo};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

use gpu::{GpuProbeOptions, GpuSources};

/// Keeps one `sysinfo::System` across heartbeats: CPU usage is the difference between two
/// refreshes, so each reading covers the time since the previous heartbeat.
#[derive(Clone)]
pub struct MetricsCollector {
    system: Arc<Mutex<System>>,
    gpus: Arc<GpuSources>,
    /// The inference server's models folder, whose disk's free space each sample reports.
    models_dir: Option<Arc<PathBuf>>,
}

impl MetricsCollector {
    /// Takes the first CPU sample twice, [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] apart, so
    /// that the first heartbeat already carries a meaningful CPU percentage; meanwhile looks
    /// for the machine's GPU sources.
    pub async fn start() -> Self {
        Self::start_with(&GpuProbeOptions::default()).await
    }

    /// [`MetricsCollector::start`], looking for GPUs where `gpu_options` says.
    pub async fn start_with(gpu_options: &GpuProbeOptions) -> Self {
        let system = tokio::task::spawn_blocking(|| {
            System::new_with_specifics(
                RefreshKind::nothing()
                    .with_cpu(CpuRefreshKind::everything())
                    .with_memory(MemoryRefreshKind::nothing().with_ram()),
            )
        })
        .await
        .unwrap_or_else(|_| System::new());
        let machine_memory_bytes = system.total_memory();
        let (gpus, ()) = tokio::join!(
            GpuSources::detect(gpu_options, machine_memory_bytes),
            tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL),
        );
        let collector = Self {
            system: Arc::new(Mutex::new(system)),
            gpus: Arc::new(gpus),
            models_dir: None,
        };
        collector.refresh_system().await;
        collector
    }

    /// This collector, reporting the free space of the disk that holds `dir`.
    pub fn with_models_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.models_dir = dir.map(Arc::new);
        self
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
        info.gpus = gpu::gpu_infos(&self.gpus.sample().await);
        info
    }

    /// Current CPU, memory and GPU load.
    pub async fn sample(&self) -> NodeMetrics {
        let (mut metrics, gpus) = tokio::join!(self.refresh_system(), self.gpus.sample());
        metrics.gpus = gpus;
        metrics
    }

    async fn refresh_system(&self) -> NodeMetrics {
        let system = Arc::clone(&self.system);
        let models_dir = self.models_dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut metrics = {
                let mut system = system.lock().unwrap_or_else(PoisonError::into_inner);
                system.refresh_cpu_usage();
                system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
                load_of(&system)
            };
            if let Some((free, total)) = models_dir.and_then(|dir| disk::space_of(&dir)) {
                metrics.models_disk_free_bytes = Some(free);
                metrics.models_disk_total_bytes = Some(total);
            }
            metrics
        })
        .await
        .unwrap_or_default()
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
        ..NodeMetrics::default()
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
        // Looks for this machine's real GPUs, if any: nothing below depends on them.
        let _lock = gpu::tests::PROCESS_TESTS.lock().await;
        let collector = MetricsCollector::start().await;
        let metrics = collector.sample().await;
        assert!(metrics.memory_total_bytes > 0);
        assert!(metrics.memory_used_bytes <= metrics.memory_total_bytes);
        assert!((0.0..=100.0).contains(&metrics.cpu_percent));
        let info = collector.system_info().await;
        assert!(info.cpu_cores > 0);
        assert_eq!(info.total_memory_bytes, metrics.memory_total_bytes);
    }

    #[tokio::test]
    async fn gpus_found_at_start_are_in_every_sample_and_in_the_system_info() {
        let _lock = gpu::tests::PROCESS_TESTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let options = GpuProbeOptions {
            drm_root: dir.path().join("drm"),
            ..gpu::tests::nothing_in(dir.path())
        };
        gpu::amd::tests::fixture_drm_tree(&options.drm_root);
        let collector = MetricsCollector::start_with(&options).await;

        let metrics = collector.sample().await;
        let names: Vec<&str> = metrics.gpus.iter().map(|gpu| gpu.name.as_str()).collect();
        assert_eq!(names, ["AMD Radeon RX 7900 XTX", "AMD GPU 0x73bf"]);
        assert!(metrics.memory_total_bytes > 0);

        let info = collector.system_info().await;
        assert_eq!(info.gpus.len(), 2);
        assert_eq!(info.gpus[0].name, "AMD Radeon RX 7900 XTX");
        assert_eq!(info.gpus[0].vendor.as_deref(), Some("AMD"));
        assert_eq!(
            info.gpus[0].memory_total_bytes,
            Some(24 * 1024 * 1024 * 1024)
        );
    }

    #[tokio::test]
    async fn a_machine_without_gpus_reports_none() {
        let _lock = gpu::tests::PROCESS_TESTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let collector = MetricsCollector::start_with(&gpu::tests::nothing_in(dir.path())).await;
        assert!(collector.sample().await.gpus.is_empty());
        assert!(collector.system_info().await.gpus.is_empty());
    }
}
