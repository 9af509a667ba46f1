//! AMD GPUs on Linux, read from the amdgpu driver's files under `/sys/class/drm`.
//!
//! Each `card<N>` there whose `device/vendor` is `0x1002` is an AMD GPU; its `device/` folder
//! holds `gpu_busy_percent`, `mem_info_vram_used` and `mem_info_vram_total` (bytes), maybe a
//! `product_name`, and a `hwmon/hwmon<M>/temp1_input` in millidegrees Celsius. Connector
//! entries (`card0-DP-1`) and render nodes (`renderD128`) are not cards and are skipped.
//!
//! Every function here does blocking file I/O: call them from `spawn_blocking`.

use std::fs;
use std::path::{Path, PathBuf};

use llm_router_common::GpuMetrics;

/// Where the kernel lists its DRM devices.
pub const DEFAULT_DRM_ROOT: &str = "/sys/class/drm";

/// What the readings are called in log lines and errors.
pub const TOOL: &str = "AMD sysfs";

/// PCI vendor id of AMD (ATI).
const AMD_PCI_VENDOR: &str = "0x1002";

/// One AMD GPU found under the DRM root; its name is read once, its load on every reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdCard {
    /// The card's `device/` folder, e.g. `/sys/class/drm/card1/device`.
    pub device_dir: PathBuf,
    pub name: String,
}

/// The AMD cards under `drm_root`, in card-number order. A missing or unreadable root
/// means no cards; so does a card whose vendor cannot be read.
pub fn discover_amd_cards(drm_root: &Path) -> Vec<AmdCard> {
    let Ok(entries) = fs::read_dir(drm_root) else {
        return Vec::new();
    };
    let mut cards: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let number = card_number(entry.file_name().to_str()?)?;
            Some((number, entry.path().join("device")))
        })
        .collect();
    cards.sort();
    cards
        .into_iter()
        .filter(|(_, device_dir)| {
            read_trimmed(&device_dir.join("vendor"))
                .is_some_and(|vendor| vendor.eq_ignore_ascii_case(AMD_PCI_VENDOR))
        })
        .map(|(_, device_dir)| AmdCard {
            name: card_name(&device_dir),
            device_dir,
        })
        .collect()
}

/// `card3` → 3; `card0-DP-1`, `renderD128` and `card` → `None`.
fn card_number(file_name: &str) -> Option<u32> {
    let digits = file_name.strip_prefix("card")?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `product_name` (only some boards have it, and it may be empty); else the PCI device id.
fn card_name(device_dir: &Path) -> String {
    if let Some(product) = read_trimmed(&device_dir.join("product_name")) {
        return product;
    }
    match read_trimmed(&device_dir.join("device")) {
        Some(device_id) => format!("AMD GPU {device_id}"),
        None => "AMD GPU".to_owned(),
    }
}

/// The current load of each card; a file that is missing or unreadable leaves its reading
/// `None` (older cards lack `gpu_busy_percent`, a card being reset refuses reads). `index`
/// is the card's position in `cards`.
pub fn read_amd_cards(cards: &[AmdCard]) -> Vec<GpuMetrics> {
    cards
        .iter()
        .zip(0..)
        .map(|(card, index)| read_amd_card(card, index))
        .collect()
}

fn read_amd_card(card: &AmdCard, index: u32) -> GpuMetrics {
    let dir = &card.device_dir;
    GpuMetrics {
        index,
        name: card.name.clone(),
        vendor: Some("AMD".to_owned()),
        utilization_percent: read_number::<f32>(&dir.join("gpu_busy_percent"))
            .map(|percent| percent.clamp(0.0, 100.0)),
        memory_used_bytes: read_number(&dir.join("mem_info_vram_used")),
        memory_total_bytes: read_number(&dir.join("mem_info_vram_total")),
        temperature_celsius: temperature_celsius(dir),
    }
}

/// `temp1_input` of the first `hwmon/hwmon<M>` that has one (the "edge" sensor), in °C.
fn temperature_celsius(device_dir: &Path) -> Option<f32> {
    let mut monitors: Vec<PathBuf> = fs::read_dir(device_dir.join("hwmon"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with("hwmon"))
        })
        .map(|entry| entry.path())
        .collect();
    monitors.sort();
    monitors
        .iter()
        .find_map(|monitor| read_number::<i64>(&monitor.join("temp1_input")))
        .map(|millidegrees| millidegrees as f32 / 1000.0)
}

fn read_number<T: std::str::FromStr>(path: &Path) -> Option<T> {
    read_trimmed(path)?.parse().ok()
}

/// The file's text without surrounding whitespace; `None` when unreadable or blank.
fn read_trimmed(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.trim().to_owned()).filter(|text| !text.is_empty())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A DRM tree as the kernel shows it, with sysfs' trailing newlines:
    /// - card0: a Radeon RX 7900 XTX with every file;
    /// - card0-DP-1, renderD128: a connector and a render node, not cards;
    /// - card1: an NVIDIA card (vendor 0x10de), not ours;
    /// - card2: an older AMD card with no product name, no busy counter and no sensor.
    pub(crate) fn fixture_drm_tree(root: &Path) {
        let card0 = root.join("card0/device");
        write(&card0.join("vendor"), "0x1002\n");
        write(&card0.join("device"), "0x744c\n");
        write(&card0.join("product_name"), "AMD Radeon RX 7900 XTX\n");
        write(&card0.join("gpu_busy_percent"), "42\n");
        write(&card0.join("mem_info_vram_used"), &format!("{}\n", 3 * GIB));
        write(
            &card0.join("mem_info_vram_total"),
            &format!("{}\n", 24 * GIB),
        );
        write(&card0.join("hwmon/hwmon4/temp1_input"), "51000\n");
        write(&card0.join("hwmon/hwmon4/temp1_label"), "edge\n");
        write(&card0.join("hwmon/hwmon4/temp2_input"), "63000\n");
        write(&root.join("card0-DP-1/status"), "connected\n");
        write(&root.join("renderD128/dev"), "226:128\n");
        write(&root.join("version"), "drm 1.1.0 20060810\n");

        let card1 = root.join("card1/device");
        write(&card1.join("vendor"), "0x10de\n");
        write(&card1.join("device"), "0x2684\n");

        let card2 = root.join("card2/device");
        write(&card2.join("vendor"), "0x1002\n");
        write(&card2.join("device"), "0x73bf\n");
        write(&card2.join("product_name"), "\n");
        write(&card2.join("mem_info_vram_used"), "1048576\n");
        write(
            &card2.join("mem_info_vram_total"),
            &format!("{}\n", 16 * GIB),
        );
    }

    #[test]
    fn discovery_keeps_only_amd_cards_in_card_order() {
        let root = tempfile::tempdir().unwrap();
        fixture_drm_tree(root.path());
        let cards = discover_amd_cards(root.path());
        assert_eq!(
            cards,
            vec![
                AmdCard {
                    device_dir: root.path().join("card0/device"),
                    name: "AMD Radeon RX 7900 XTX".to_owned(),
                },
                AmdCard {
                    device_dir: root.path().join("card2/device"),
                    name: "AMD GPU 0x73bf".to_owned(),
                },
            ]
        );
    }

    #[test]
    fn readings_come_from_the_sysfs_files() {
        let root = tempfile::tempdir().unwrap();
        fixture_drm_tree(root.path());
        let gpus = read_amd_cards(&discover_amd_cards(root.path()));
        assert_eq!(
            gpus,
            vec![
                GpuMetrics {
                    index: 0,
                    name: "AMD Radeon RX 7900 XTX".to_owned(),
                    vendor: Some("AMD".to_owned()),
                    utilization_percent: Some(42.0),
                    memory_used_bytes: Some(3 * GIB),
                    memory_total_bytes: Some(24 * GIB),
                    temperature_celsius: Some(51.0),
                },
                GpuMetrics {
                    index: 1,
                    name: "AMD GPU 0x73bf".to_owned(),
                    vendor: Some("AMD".to_owned()),
                    utilization_percent: None,
                    memory_used_bytes: Some(1048576),
                    memory_total_bytes: Some(16 * GIB),
                    temperature_celsius: None,
                },
            ]
        );
    }

    #[test]
    fn readings_follow_the_files_as_they_change() {
        let root = tempfile::tempdir().unwrap();
        fixture_drm_tree(root.path());
        let cards = discover_amd_cards(root.path());
        write(&root.path().join("card0/device/gpu_busy_percent"), "97\n");
        fs::remove_file(root.path().join("card0/device/hwmon/hwmon4/temp1_input")).unwrap();
        write(
            &root.path().join("card0/device/hwmon/hwmon5/temp1_input"),
            "48500\n",
        );
        let gpus = read_amd_cards(&cards);
        assert_eq!(gpus[0].utilization_percent, Some(97.0));
        assert_eq!(gpus[0].temperature_celsius, Some(48.5));
    }

    #[cfg(unix)]
    #[test]
    fn cards_reached_through_symlinks_are_found() {
        // /sys/class/drm/card0 is really a link into /sys/devices/pci0000:00/...
        let root = tempfile::tempdir().unwrap();
        let devices = root.path().join("devices/pci0000:00/0000:03:00.0");
        write(&devices.join("vendor"), "0x1002\n");
        write(&devices.join("device"), "0x15bf\n");
        write(&devices.join("gpu_busy_percent"), "3\n");
        let class = root.path().join("class/drm");
        fs::create_dir_all(class.join("card0")).unwrap();
        std::os::unix::fs::symlink(&devices, class.join("card0/device")).unwrap();
        let gpus = read_amd_cards(&discover_amd_cards(&class));
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "AMD GPU 0x15bf");
        assert_eq!(gpus[0].utilization_percent, Some(3.0));
    }

    #[test]
    fn a_missing_or_empty_root_has_no_cards() {
        let root = tempfile::tempdir().unwrap();
        assert!(discover_amd_cards(root.path()).is_empty());
        assert!(discover_amd_cards(&root.path().join("absent")).is_empty());
    }

    #[test]
    fn only_plain_card_entries_are_cards() {
        assert_eq!(card_number("card0"), Some(0));
        assert_eq!(card_number("card12"), Some(12));
        assert_eq!(card_number("card0-DP-1"), None);
        assert_eq!(card_number("card"), None);
        assert_eq!(card_number("renderD128"), None);
    }
}
