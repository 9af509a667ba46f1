//! `agents.json`: the registry on disk.
//!
//! Written atomically (a temp file in the same folder, fsync, rename, fsync of
//! the folder) so that a crash leaves either the old or the new file, never a
//! torn one. A file that does not parse is renamed aside, never overwritten.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use llm_router_common::{ApiKind, LoadedModel, ModelInfo, NodeId, SystemInfo};
use serde::{Deserialize, Serialize};

/// Version of the file layout, bumped on incompatible changes.
const FORMAT_VERSION: u32 = 1;

/// The durable part of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedNode {
    pub id: NodeId,
    pub machine_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub ip_address: IpAddr,
    pub api_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Whether the node was alive when the file was written.
    #[serde(default)]
    pub online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_reason: Option<String>,
    #[serde(default)]
    pub ollama_available: bool,
    #[serde(default)]
    pub draining: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub system_info: SystemInfo,
    #[serde(default)]
    pub models: Vec<ModelInfo>,
    #[serde(default)]
    pub loaded_models: Vec<LoadedModel>,
    /// Added by URL (`POST /api/nodes`): the coordinator probes it; no agent reports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agentless: bool,
    #[serde(default)]
    pub api_kind: ApiKind,
    /// SHA-256 (hex) of the credential issued to the node's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_sha256: Option<String>,
    /// The node's own API key, which the proxy sends to it: a secret, hence the
    /// file's owner-only mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_api_key: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RegistryFile {
    version: u32,
    saved_at: DateTime<Utc>,
    nodes: Vec<PersistedNode>,
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No file yet: a fresh coordinator.
    Missing,
    Nodes(Vec<PersistedNode>),
    /// The file did not parse; it was moved to `moved_to`.
    Corrupt {
        reason: String,
        moved_to: PathBuf,
    },
}

/// The registry file in a data folder.
#[derive(Debug, Clone)]
pub struct RegistryStore {
    path: PathBuf,
}

impl RegistryStore {
    pub const FILE_NAME: &'static str = "agents.json";

    pub fn in_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(Self::FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Reads the file. I/O errors other than "not found" are returned (the
    /// coordinator must not start and later overwrite a file it could not read).
    pub fn load(&self) -> io::Result<Loaded> {
        self.remove_stale_temp_files();
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
            Err(e) => return Err(e),
        };
        match serde_json::from_slice::<RegistryFile>(&bytes) {
            Ok(file) if file.version <= FORMAT_VERSION => Ok(Loaded::Nodes(file.nodes)),
            Ok(file) => self.move_aside(format!(
                "file format version {} is newer than this coordinator understands ({FORMAT_VERSION})",
                file.version
            )),
            Err(e) => self.move_aside(e.to_string()),
        }
    }

    fn move_aside(&self, reason: String) -> io::Result<Loaded> {
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let moved_to = self
            .dir()
            .join(format!("{}.corrupt-{stamp}", Self::FILE_NAME));
        fs::rename(&self.path, &moved_to)?;
        Ok(Loaded::Corrupt { reason, moved_to })
    }

    /// Temp files are left only by a crash mid-write; the real file is intact then.
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(self.dir()) else {
            return;
        };
        let prefix = format!(".{}.tmp", Self::FILE_NAME);
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Serialises the nodes; done outside any lock.
    pub fn encode(nodes: Vec<PersistedNode>) -> Vec<u8> {
        let file = RegistryFile {
            version: FORMAT_VERSION,
            saved_at: Utc::now(),
            nodes,
        };
        serde_json::to_vec(&file).expect("registry types always serialise")
    }

    /// Replaces the file atomically with `contents`. Blocking: call from a blocking thread.
    pub fn write_atomically(&self, contents: &[u8]) -> io::Result<()> {
        let dir = self.dir();
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{}.tmp-{}", Self::FILE_NAME, std::process::id()));
        let result = (|| {
            // Owner-only: the file holds nodes' API keys and credential digests.
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(contents)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &self.path)?;
            // The rename itself is durable only once the folder is synced.
            #[cfg(unix)]
            File::open(dir)?.sync_all()?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> PersistedNode {
        PersistedNode {
            id: NodeId::new_v4(),
            machine_name: name.into(),
            display_name: None,
            ip_address: "127.0.0.1".parse().unwrap(),
            api_url: "http://127.0.0.1:11434".into(),
            ollama_version: Some("0.12.0".into()),
            agent_version: None,
            registered_at: Utc::now(),
            last_seen: Utc::now(),
            online: true,
            offline_reason: None,
            ollama_available: true,
            draining: false,
            tags: vec!["gpu".into()],
            notes: String::new(),
            system_info: SystemInfo::default(),
            models: vec![ModelInfo::named("llama3.2:latest")],
            loaded_models: vec![],
            agentless: false,
            api_kind: ApiKind::Ollama,
            credential_sha256: None,
            node_api_key: None,
        }
    }

    #[test]
    fn missing_file_loads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::in_dir(dir.path());
        assert!(matches!(store.load().unwrap(), Loaded::Missing));
    }

    #[test]
    fn written_nodes_load_back_identical_and_no_temp_file_remains() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::in_dir(&dir.path().join("nested"));
        let nodes = vec![node("a"), node("b")];
        store
            .write_atomically(&RegistryStore::encode(nodes.clone()))
            .unwrap();
        match store.load().unwrap() {
            Loaded::Nodes(loaded) => assert_eq!(loaded, nodes),
            other => panic!("unexpected {other:?}"),
        }
        let names: Vec<_> = fs::read_dir(dir.path().join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [RegistryStore::FILE_NAME]);
    }

    #[test]
    fn a_file_written_before_agentless_nodes_loads_with_agent_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::in_dir(dir.path());
        let mut old = serde_json::to_value(RegistryFile {
            version: FORMAT_VERSION,
            saved_at: Utc::now(),
            nodes: vec![node("a")],
        })
        .unwrap();
        let fields = old["nodes"][0].as_object_mut().unwrap();
        fields.remove("agentless");
        fields.remove("api_kind");
        fs::write(store.path(), serde_json::to_vec(&old).unwrap()).unwrap();
        let Loaded::Nodes(nodes) = store.load().unwrap() else {
            panic!("an older file did not load");
        };
        assert!(!nodes[0].agentless);
        assert_eq!(nodes[0].api_kind, ApiKind::Ollama);

        let mut added = node("b");
        added.agentless = true;
        added.api_kind = ApiKind::OpenAi;
        store
            .write_atomically(&RegistryStore::encode(vec![added.clone()]))
            .unwrap();
        assert!(matches!(store.load().unwrap(), Loaded::Nodes(n) if n == [added]));
    }

    #[test]
    fn corrupt_file_is_moved_aside_with_its_contents_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::in_dir(dir.path());
        fs::write(store.path(), b"{\"version\":1,\"nodes\":[{\"id\":").unwrap();
        let Loaded::Corrupt { moved_to, reason } = store.load().unwrap() else {
            panic!("corrupt file was not reported");
        };
        assert!(!reason.is_empty());
        assert!(!store.path().exists());
        assert_eq!(
            fs::read(&moved_to).unwrap(),
            b"{\"version\":1,\"nodes\":[{\"id\":"
        );
    }

    #[test]
    fn leftover_temp_file_from_a_crash_is_removed_and_real_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::in_dir(dir.path());
        store
            .write_atomically(&RegistryStore::encode(vec![node("a")]))
            .unwrap();
        let tmp = dir.path().join(".agents.json.tmp-999");
        fs::write(&tmp, b"half a fi").unwrap();
        assert!(matches!(store.load().unwrap(), Loaded::Nodes(n) if n.len() == 1));
        assert!(!tmp.exists());
    }
}
