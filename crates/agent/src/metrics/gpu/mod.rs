//! GPU readings from whichever sources the machine has, found once at start-up and then
//! read on every heartbeat:
//! - NVIDIA: `nvidia-smi` ([`nvidia`]);
//! - AMD on Linux: the amdgpu driver's sysfs files ([`amd`]);
//! - macOS (Apple silicon, or an Intel Mac's GPUs): the IORegistry, through `ioreg` ([`apple`]).
//!
//! A machine with none of them reports no GPUs, which is logged once, at debug level. A
//! source that was found but then fails is logged when its error changes, not every heartbeat.
//! Each GPU's `index` counts within its own source; its `vendor` tells the sources apart.

pub mod amd;
pub mod apple;
pub mod nvidia;

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use llm_router_common::{GpuInfo, GpuMetrics};
use tokio::process::Command;

/// A tool or driver can hang for seconds when a GPU is wedged; a heartbeat should not.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where to look for GPUs; [`Default`] is the real machine, tests point it at fixtures.
#[derive(Debug, Clone)]
pub struct GpuProbeOptions {
    /// The `nvidia-smi` program, looked up on `PATH` unless it is a path.
    pub nvidia_smi: PathBuf,
    /// The folder listing DRM devices (`/sys/class/drm`), searched for AMD cards.
    pub drm_root: PathBuf,
    /// The `ioreg` program.
    pub ioreg: PathBuf,
    /// Whether to ask `ioreg` at all: only on macOS by default.
    pub use_ioreg: bool,
    /// How long one reading of one source may take.
    pub timeout: Duration,
}

impl Default for GpuProbeOptions {
    fn default() -> Self {
        Self {
            nvidia_smi: PathBuf::from("nvidia-smi"),
            drm_root: PathBuf::from(amd::DEFAULT_DRM_ROOT),
            ioreg: PathBuf::from("ioreg"),
            use_ioreg: cfg!(target_os = "macos"),
            timeout: DEFAULT_PROBE_TIMEOUT,
        }
    }
}

/// Why one reading of a source gave nothing (other than its tool or files being absent).
#[derive(Debug, thiserror::Error)]
pub enum GpuProbeError {
    #[error("{tool} did not answer within {timeout:?}")]
    Timeout {
        tool: &'static str,
        timeout: Duration,
    },
    #[error("{tool} could not be run: {error}")]
    Spawn {
        tool: &'static str,
        error: io::Error,
    },
    #[error("{tool} exited with {status}: {message}")]
    Failed {
        tool: &'static str,
        status: ExitStatus,
        message: String,
    },
    #[error("{tool}: the reading task failed")]
    Task { tool: &'static str },
}

/// The GPU sources this machine has; found by [`GpuSources::detect`], read by [`GpuSources::sample`].
#[derive(Debug, Default)]
pub struct GpuSources {
    nvidia: Option<NvidiaSource>,
    amd: Option<AmdSource>,
    apple: Option<AppleSource>,
}

impl GpuSources {
    /// Tries every source once. `machine_memory_bytes` (the RAM) is the memory total of a
    /// GPU with unified memory.
    pub async fn detect(options: &GpuProbeOptions, machine_memory_bytes: u64) -> Self {
        let (nvidia, amd, apple) = tokio::join!(
            NvidiaSource::detect(options),
            AmdSource::detect(options),
            async {
                if options.use_ioreg {
                    AppleSource::detect(options, machine_memory_bytes).await
                } else {
                    None
                }
            },
        );
        let sources = Self { nvidia, amd, apple };
        let names = sources.names();
        if names.is_empty() {
            tracing::debug!("no GPU found; reporting no GPUs");
        } else {
            tracing::info!(sources = %names.join(", "), "reading GPU metrics");
        }
        sources
    }

    /// The sources found, by tool name.
    pub fn names(&self) -> Vec<&'static str> {
        [
            self.nvidia.as_ref().map(|_| nvidia::TOOL),
            self.amd.as_ref().map(|_| amd::TOOL),
            self.apple.as_ref().map(|_| apple::TOOL),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Current readings of every GPU of every source found; a failing source adds none.
    pub async fn sample(&self) -> Vec<GpuMetrics> {
        let (nvidia, amd, apple) = tokio::join!(
            async {
                match &self.nvidia {
                    Some(source) => source.read().await,
                    None => Vec::new(),
                }
            },
            async {
                match &self.amd {
                    Some(source) => source.read().await,
                    None => Vec::new(),
                }
            },
            async {
                match &self.apple {
                    Some(source) => source.read().await,
                    None => Vec::new(),
                }
            },
        );
        nvidia.into_iter().chain(amd).chain(apple).collect()
    }
}

#[derive(Debug)]
struct NvidiaSource {
    program: PathBuf,
    timeout: Duration,
    errors: ErrorLatch,
}

impl NvidiaSource {
    /// Kept when `nvidia-smi` lists GPUs, and also when it is installed but fails (a driver
    /// that is not up yet at boot): then it is retried on every heartbeat.
    async fn detect(options: &GpuProbeOptions) -> Option<Self> {
        let source = Self {
            program: options.nvidia_smi.clone(),
            timeout: options.timeout,
            errors: ErrorLatch::new(nvidia::TOOL),
        };
        match nvidia::query_nvidia_smi(source.program.as_os_str(), source.timeout).await {
            Ok(None) => {
                tracing::debug!("nvidia-smi not found; no NVIDIA GPU metrics");
                None
            }
            Ok(Some(gpus)) if gpus.is_empty() => {
                tracing::debug!("nvidia-smi lists no GPU; no NVIDIA GPU metrics");
                None
            }
            Err(GpuProbeError::Failed { message, .. })
                if message.contains("No devices were found") =>
            {
                tracing::debug!("nvidia-smi finds no device; no NVIDIA GPU metrics");
                None
            }
            Ok(Some(_)) => Some(source),
            Err(error) => {
                source.errors.settle(Err(error));
                Some(source)
            }
        }
    }

    async fn read(&self) -> Vec<GpuMetrics> {
        let result = nvidia::query_nvidia_smi(self.program.as_os_str(), self.timeout).await;
        // Uninstalled since start-up: no GPUs, nothing to complain about.
        self.errors.settle(result.map(Option::unwrap_or_default))
    }
}

#[derive(Debug)]
struct AmdSource {
    cards: Arc<Vec<amd::AmdCard>>,
    timeout: Duration,
    in_flight: Arc<AtomicBool>,
    errors: ErrorLatch,
}

impl AmdSource {
    async fn detect(options: &GpuProbeOptions) -> Option<Self> {
        let root = options.drm_root.clone();
        let in_flight = Arc::default();
        let found = blocking(amd::TOOL, &in_flight, options.timeout, move || {
            amd::discover_amd_cards(&root)
        })
        .await;
        match found {
            Ok(cards) if cards.is_empty() => {
                tracing::debug!(drm_root = %options.drm_root.display(), "no AMD GPU in sysfs");
                None
            }
            Ok(cards) => Some(Self {
                cards: Arc::new(cards),
                timeout: options.timeout,
                in_flight,
                errors: ErrorLatch::new(amd::TOOL),
            }),
            Err(error) => {
                tracing::debug!(%error, "cannot list AMD GPUs in sysfs");
                None
            }
        }
    }

    async fn read(&self) -> Vec<GpuMetrics> {
        let cards = Arc::clone(&self.cards);
        let result = blocking(amd::TOOL, &self.in_flight, self.timeout, move || {
            amd::read_amd_cards(&cards)
        })
        .await;
        self.errors.settle(result)
    }
}

#[derive(Debug)]
struct AppleSource {
    program: PathBuf,
    timeout: Duration,
    machine_memory_bytes: u64,
    errors: ErrorLatch,
}

impl AppleSource {
    async fn detect(options: &GpuProbeOptions, machine_memory_bytes: u64) -> Option<Self> {
        let source = Self {
            program: options.ioreg.clone(),
            timeout: options.timeout,
            machine_memory_bytes,
            errors: ErrorLatch::new(apple::TOOL),
        };
        match source.query().await {
            Ok(None) => {
                tracing::debug!("ioreg not found; no GPU metrics from the IORegistry");
                None
            }
            Ok(Some(gpus)) if gpus.is_empty() => {
                tracing::debug!("the IORegistry lists no IOAccelerator; no GPU metrics from it");
                None
            }
            Ok(Some(_)) => Some(source),
            Err(error) => {
                source.errors.settle(Err(error));
                Some(source)
            }
        }
    }

    async fn query(&self) -> Result<Option<Vec<GpuMetrics>>, GpuProbeError> {
        apple::query_ioreg(
            self.program.as_os_str(),
            self.timeout,
            self.machine_memory_bytes,
        )
        .await
    }

    async fn read(&self) -> Vec<GpuMetrics> {
        self.errors
            .settle(self.query().await.map(Option::unwrap_or_default))
    }
}

/// The last error of one source, so that a failure is logged when it starts or changes and
/// a recovery once, not on every heartbeat.
#[derive(Debug)]
struct ErrorLatch {
    tool: &'static str,
    last_error: Mutex<Option<String>>,
}

impl ErrorLatch {
    fn new(tool: &'static str) -> Self {
        Self {
            tool,
            last_error: Mutex::new(None),
        }
    }

    fn settle(&self, result: Result<Vec<GpuMetrics>, GpuProbeError>) -> Vec<GpuMetrics> {
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(gpus) => {
                if last_error.take().is_some() {
                    tracing::info!(source = self.tool, "GPU metrics can be read again");
                }
                gpus
            }
            Err(error) => {
                let message = error.to_string();
                if last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(
                        source = self.tool,
                        %message,
                        "cannot read GPU metrics; reporting none from this source"
                    );
                    *last_error = Some(message);
                }
                Vec::new()
            }
        }
    }
}

/// Runs `program` with `args` and returns its stdout; `Ok(None)` when it is not installed.
async fn run_tool(
    tool: &'static str,
    program: &OsStr,
    args: &[&str],
    timeout: Duration,
) -> Result<Option<String>, GpuProbeError> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => return Err(GpuProbeError::Timeout { tool, timeout }),
        Ok(Err(error)) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Ok(Err(error)) => return Err(GpuProbeError::Spawn { tool, error }),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        // nvidia-smi prints its complaints ("couldn't communicate with the driver") on stdout.
        let message = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        return Err(GpuProbeError::Failed {
            tool,
            status: output.status,
            message: message.trim().chars().take(300).collect(),
        });
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// Runs blocking `work` on the blocking pool, giving up after `timeout`. A reading that
/// outlives its timeout (a file read stuck in the driver) keeps `in_flight` set until it
/// ends, and further readings are refused meanwhile, so that stuck threads do not pile up.
async fn blocking<T: Send + 'static>(
    tool: &'static str,
    in_flight: &Arc<AtomicBool>,
    timeout: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, GpuProbeError> {
    if in_flight.swap(true, Ordering::AcqRel) {
        return Err(GpuProbeError::Timeout { tool, timeout });
    }
    let guard = InFlight(Arc::clone(in_flight));
    let task = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        work()
    });
    match tokio::time::timeout(timeout, task).await {
        Err(_) => Err(GpuProbeError::Timeout { tool, timeout }),
        Ok(Err(_)) => Err(GpuProbeError::Task { tool }),
        Ok(Ok(value)) => Ok(value),
    }
}

/// Clears the in-flight flag when the blocking work ends, panics, or never starts.
struct InFlight(Arc<AtomicBool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The static description of each GPU, for the registration's `SystemInfo`.
pub fn gpu_infos(readings: &[GpuMetrics]) -> Vec<GpuInfo> {
    readings
        .iter()
        .map(|gpu| GpuInfo {
            name: gpu.name.clone(),
            vendor: gpu.vendor.clone(),
            memory_total_bytes: gpu.memory_total_bytes,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    /// Held by every test that starts a process or writes a script to run: a script still
    /// open for writing while another test forks cannot be executed ("text file busy").
    pub(crate) static PROCESS_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Options that find nothing on any machine, to be pointed at fixtures one by one.
    pub(crate) fn nothing_in(dir: &Path) -> GpuProbeOptions {
        GpuProbeOptions {
            nvidia_smi: dir.join("no-nvidia-smi"),
            drm_root: dir.join("no-drm"),
            ioreg: dir.join("no-ioreg"),
            use_ioreg: true,
            timeout: Duration::from_secs(5),
        }
    }

    #[cfg(unix)]
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn a_machine_without_any_source_reports_no_gpus() {
        let _lock = PROCESS_TESTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let sources = GpuSources::detect(&nothing_in(dir.path()), 8 * GIB).await;
        assert!(sources.names().is_empty());
        assert!(sources.sample().await.is_empty());
    }

    #[tokio::test]
    async fn amd_cards_in_sysfs_are_found_once_and_read_each_time() {
        let _lock = PROCESS_TESTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let options = GpuProbeOptions {
            drm_root: dir.path().join("drm"),
            ..nothing_in(dir.path())
        };
        amd::tests::fixture_drm_tree(&options.drm_root);
        let sources = GpuSources::detect(&options, 8 * GIB).await;
        assert_eq!(sources.names(), vec![amd::TOOL]);

        let gpus = sources.sample().await;
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "AMD Radeon RX 7900 XTX");
        assert_eq!(gpus[0].utilization_percent, Some(42.0));

        std::fs::write(
            options.drm_root.join("card0/device/gpu_busy_percent"),
            "7\n",
        )
        .unwrap();
        // A card added after start-up is not looked for again.
        std::fs::create_dir_all(options.drm_root.join("card9/device")).unwrap();
        std::fs::write(options.drm_root.join("card9/device/vendor"), "0x1002\n").unwrap();
        let gpus = sources.sample().await;
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].utilization_percent, Some(7.0));

        assert_eq!(
            gpu_infos(&gpus),
            vec![
                GpuInfo {
                    name: "AMD Radeon RX 7900 XTX".to_owned(),
                    vendor: Some("AMD".to_owned()),
                    memory_total_bytes: Some(24 * GIB),
                },
                GpuInfo {
                    name: "AMD GPU 0x73bf".to_owned(),
                    vendor: Some("AMD".to_owned()),
                    memory_total_bytes: Some(16 * GIB),
                },
            ]
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn nvidia_smi_that_lists_gpus_is_a_source() {
        let _lock = PROCESS_TESTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let options = GpuProbeOptions {
            nvidia_smi: script(
                dir.path(),
                "nvidia-smi",
                r#"[ "$1" = "--query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu" ] || exit 2
echo "0, NVIDIA L4, 12, 2048, 23034, 44""#,
            ),
            ..nothing_in(dir.path())
        };
        let sources = GpuSources::detect(&options, 8 * GIB).await;
        assert_eq!(sources.names(), vec![nvidia::TOOL]);
        let gpus = sources.sample().await;
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "NVIDIA L4");
        assert_eq!(gpus[0].vendor.as_deref(), Some("NVIDIA"));
        assert_eq!(gpus[0].utilization_percent, Some(12.0));
        assert_eq!(gpus[0].temperature_celsius, Some(44.0));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn nvidia_smi_without_devices_is_no_source() {
        let _lock = PROCESS_TESTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let options = GpuProbeOptions {
            nvidia_smi: script(
                dir.path(),
                "nvidia-smi",
                "echo 'No devices were found'\nexit 6",
            ),
            ..nothing_in(dir.path())
        };
        assert!(
            GpuSources::detect(&options, 8 * GIB)
                .await
                .names()
                .is_empty()
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_hanging_nvidia_smi_is_cut_short_and_retried() {
        let _lock = PROCESS_TESTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let options = GpuProbeOptions {
            nvidia_smi: script(dir.path(), "nvidia-smi", "exec sleep 30"),
            timeout: Duration::from_millis(200),
            ..nothing_in(dir.path())
        };
        let started = std::time::Instant::now();
        // Installed but not answering (a driver still loading): kept, and retried.
        let sources = GpuSources::detect(&options, 8 * GIB).await;
        assert_eq!(sources.names(), vec![nvidia::TOOL]);
        assert!(sources.sample().await.is_empty());
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn ioreg_accelerators_are_a_source_with_unified_memory() {
        let _lock = PROCESS_TESTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let sample = dir.path().join("ioreg.txt");
        std::fs::write(&sample, apple::tests::M2_PRO).unwrap();
        let options = GpuProbeOptions {
            ioreg: script(
                dir.path(),
                "ioreg",
                &format!(
                    r#"[ "$*" = "-r -d 1 -w 0 -c IOAccelerator" ] || exit 2
cat '{}'"#,
                    sample.display()
                ),
            ),
            ..nothing_in(dir.path())
        };
        let sources = GpuSources::detect(&options, 32 * GIB).await;
        assert_eq!(sources.names(), vec![apple::TOOL]);
        let gpus = sources.sample().await;
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "Apple M2 Pro");
        assert_eq!(gpus[0].utilization_percent, Some(14.0));
        assert_eq!(gpus[0].memory_total_bytes, Some(32 * GIB));
        assert_eq!(
            gpu_infos(&gpus)[0].vendor.as_deref(),
            Some("Apple"),
            "the registration names the vendor too"
        );
    }

    #[tokio::test]
    async fn stuck_blocking_work_times_out_and_is_not_started_twice() {
        let in_flight = Arc::new(AtomicBool::new(false));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let timeout = Duration::from_millis(50);
        let stuck = blocking("test", &in_flight, timeout, move || wait.recv().is_ok()).await;
        assert!(matches!(stuck, Err(GpuProbeError::Timeout { .. })));
        let refused = blocking("test", &in_flight, timeout, || true).await;
        assert!(matches!(refused, Err(GpuProbeError::Timeout { .. })));

        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while in_flight.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            blocking("test", &in_flight, timeout, || true)
                .await
                .unwrap()
        );
    }

    #[test]
    fn errors_are_logged_once_and_still_report_no_gpus() {
        let latch = ErrorLatch::new("test");
        let timeout = || GpuProbeError::Timeout {
            tool: "test",
            timeout: Duration::from_secs(1),
        };
        assert!(latch.settle(Err(timeout())).is_empty());
        assert!(latch.settle(Err(timeout())).is_empty());
        assert!(latch.last_error.lock().unwrap().is_some());
        let gpus = vec![GpuMetrics::default()];
        assert_eq!(latch.settle(Ok(gpus.clone())), gpus);
        assert!(latch.last_error.lock().unwrap().is_none());
    }
}
