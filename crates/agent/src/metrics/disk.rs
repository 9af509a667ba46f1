//! Free space where Ollama keeps its models, so that the coordinator can skip a
//! node without room when it pulls a model onto the fleet.
//!
//! The folder is `OLLAMA_MODELS` when set, else Ollama's default: `~/.ollama/models`,
//! or `/usr/share/ollama/.ollama/models` on Linux where Ollama's install script runs
//! it as its own `ollama` user. The disk is the one whose mount point is the longest
//! prefix of the folder (or of its nearest existing parent: a fresh machine may not
//! have the folder yet).

use std::path::{Path, PathBuf};

use sysinfo::Disks;

/// Where Ollama keeps its models on this machine, as `env` (a variable lookup) says.
pub fn ollama_models_dir(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = env("OLLAMA_MODELS").filter(|d| !d.trim().is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let home = env("HOME")
        .or_else(|| env("USERPROFILE"))
        .filter(|h| !h.trim().is_empty())
        .map(PathBuf::from);
    let per_user = home.map(|h| h.join(".ollama").join("models"));
    let service = PathBuf::from("/usr/share/ollama/.ollama/models");
    match per_user {
        Some(dir) if dir.exists() => Some(dir),
        _ if cfg!(target_os = "linux") && service.exists() => Some(service),
        per_user => per_user,
    }
}

/// Free and total bytes of the disk holding `dir`; `None` when no disk is found.
pub fn space_of(dir: &Path) -> Option<(u64, u64)> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let resolved = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_owned());
    let disks = Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|disk| resolved.starts_with(disk.mount_point()))
        .max_by_key(|disk| disk.mount_point().as_os_str().len())
        .map(|disk| (disk.available_space(), disk.total_space()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn ollama_models_wins_over_the_default() {
        assert_eq!(
            ollama_models_dir(env(&[
                ("OLLAMA_MODELS", "/data/models"),
                ("HOME", "/home/a")
            ])),
            Some(PathBuf::from("/data/models"))
        );
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        std::fs::create_dir_all(dir.path().join(".ollama/models")).unwrap();
        assert_eq!(
            ollama_models_dir(env(&[("OLLAMA_MODELS", " "), ("HOME", home)])),
            Some(dir.path().join(".ollama/models"))
        );
    }

    #[test]
    fn a_folder_not_created_yet_is_measured_on_its_parents_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = space_of(&dir.path().join("not/yet/there")).expect("a disk");
        assert!(total > 0 && free <= total, "{free} of {total}");
    }
}
