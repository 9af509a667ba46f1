//! The registry on disk: `agents.json`, the whole fleet, and `agents.journal`,
//! the changes since.
//!
//! A change (a node registered, edited, gone offline, deleted) is appended to
//! the journal as one JSON line and synced before it is acknowledged: its cost
//! does not grow with the fleet. Once the journal holds as many lines as the
//! fleet has nodes (at least [`COMPACT_AFTER`]), the whole registry is written
//! to `agents.json` — atomically: a temp file in the same folder, fsync,
//! rename, fsync of the folder, so a crash leaves the old or the new file,
//! never a torn one — and the journal starts again. Each line carries a
//! sequence number and `agents.json` the last one it includes, so a crash
//! between the two steps replays nothing twice. At start the journal is
//! replayed over the file; a torn last line (a crash mid-append, never
//! acknowledged) is ignored. A file that does not parse is renamed aside,
//! never overwritten.
//!
//! Heartbeats that change only what a node reports from moment to moment
//! (last seen, metrics, loaded models) write nothing: the next heartbeat after
//! a restart reports them again.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use llm_router_common::{NodeFacts, NodeId};
use serde::{Deserialize, Serialize};

/// Version of the file layout, bumped on incompatible changes.
const FORMAT_VERSION: u32 = 1;

/// The durable part of a node: its facts, and what the registry needs to
/// take it back after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedNode {
    #[serde(flatten)]
    pub facts: NodeFacts,
    /// Whether the node was alive when the file was written.
    #[serde(default)]
    pub online: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::lenient_reason"
    )]
    pub offline_reason: Option<super::OfflineReason>,
    #[serde(default)]
    pub ollama_available: bool,
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
    /// The last journal line this file includes.
    #[serde(default)]
    journal_seq: u64,
    nodes: Vec<PersistedNode>,
}

/// One line of the journal: a node as it now is, or the id of a deleted one.
#[derive(Debug, Serialize, Deserialize)]
struct JournalLine {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<PersistedNode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    removed: Option<NodeId>,
}

/// A change to record: a node's new state, or its deletion.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Node(Box<PersistedNode>),
    Removed(NodeId),
}

/// The journal is compacted into `agents.json` once it has this many lines, or
/// as many as the fleet has nodes if that is more.
pub const COMPACT_AFTER: usize = 1024;

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No file yet: a fresh coordinator.
    Missing,
    Nodes(Vec<PersistedNode>),
    /// `agents.json` did not parse; it was moved to `moved_to`. `nodes` are
    /// those the journal still had.
    Corrupt {
        reason: String,
        moved_to: PathBuf,
        nodes: Vec<PersistedNode>,
    },
}

/// Where the journal stands: the last sequence number used and how many lines
/// it holds since the last whole write.
#[derive(Debug, Default)]
struct JournalState {
    seq: u64,
    lines: usize,
}

/// The registry files in a data folder.
#[derive(Debug, Clone)]
pub struct RegistryStore {
    path: PathBuf,
    journal_path: PathBuf,
    journal: std::sync::Arc<parking_lot::Mutex<JournalState>>,
}

impl RegistryStore {
    pub const FILE_NAME: &'static str = "agents.json";
    pub const JOURNAL_FILE_NAME: &'static str = "agents.journal";

    pub fn in_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(Self::FILE_NAME),
            journal_path: data_dir.join(Self::JOURNAL_FILE_NAME),
            journal: Default::default(),
        }
    }

    /// Lines in the journal since the last whole write.
    pub fn journal_lines(&self) -> usize {
        self.journal.lock().lines
    }

    /// The last journal sequence number used: a whole write now includes it.
    pub fn journal_seq(&self) -> u64 {
        self.journal.lock().seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Reads the file and replays the journal over it. I/O errors other than
    /// "not found" are returned (the coordinator must not start and later
    /// overwrite a file it could not read).
    pub fn load(&self) -> io::Result<Loaded> {
        self.remove_stale_temp_files();
        let (nodes, file_seq, corrupt) = match fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice::<RegistryFile>(&bytes) {
                Ok(file) if file.version <= FORMAT_VERSION => (file.nodes, file.journal_seq, None),
                Ok(file) => (
                    Vec::new(),
                    0,
                    Some(format!(
                        "file format version {} is newer than this coordinator understands ({FORMAT_VERSION})",
                        file.version
                    )),
                ),
                Err(e) => (Vec::new(), 0, Some(e.to_string())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), 0, None),
            Err(e) => return Err(e),
        };
        let had_file = self.path.exists();
        let (nodes, replayed) = self.replay(nodes, file_seq)?;
        if let Some(reason) = corrupt {
            let moved_to = self.move_aside()?;
            return Ok(Loaded::Corrupt {
                reason,
                moved_to,
                nodes,
            });
        }
        if !had_file && replayed == 0 {
            return Ok(Loaded::Missing);
        }
        Ok(Loaded::Nodes(nodes))
    }

    /// Applies the journal's lines after `file_seq` to `nodes`; returns them and
    /// how many lines were applied.
    fn replay(
        &self,
        nodes: Vec<PersistedNode>,
        file_seq: u64,
    ) -> io::Result<(Vec<PersistedNode>, usize)> {
        let text = match fs::read(&self.journal_path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        // The file's order, then new nodes in the order they came.
        let mut nodes: Vec<Option<PersistedNode>> = nodes.into_iter().map(Some).collect();
        let mut index: std::collections::HashMap<NodeId, usize> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (n.facts.id, i)))
            .collect();
        let mut state = JournalState {
            seq: file_seq,
            lines: 0,
        };
        let complete = text.ends_with(b"\n");
        let lines: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let last = lines.len().saturating_sub(1);
        for (i, line) in lines.iter().enumerate() {
            let entry = match serde_json::from_slice::<JournalLine>(line) {
                Ok(entry) => entry,
                Err(_) if i == last && !complete => {
                    tracing::warn!(path = %self.journal_path.display(), "the registry journal ends in a torn line (a write cut short, never acknowledged); ignored");
                    continue;
                }
                Err(error) => {
                    tracing::error!(path = %self.journal_path.display(), line = i + 1, %error, "a registry journal line does not parse; skipped");
                    continue;
                }
            };
            state.seq = state.seq.max(entry.seq);
            if entry.seq <= file_seq {
                continue;
            }
            state.lines += 1;
            if let Some(node) = entry.node {
                match index.get(&node.facts.id) {
                    Some(&i) => nodes[i] = Some(node),
                    None => {
                        index.insert(node.facts.id, nodes.len());
                        nodes.push(Some(node));
                    }
                }
            } else if let Some(id) = entry.removed
                && let Some(i) = index.remove(&id)
            {
                nodes[i] = None;
            }
        }
        let replayed = state.lines;
        *self.journal.lock() = state;
        Ok((nodes.into_iter().flatten().collect(), replayed))
    }

    /// Appends `changes` to the journal and syncs it. Blocking: call from a blocking thread.
    pub fn append(&self, changes: &[Change]) -> io::Result<()> {
        let mut state = self.journal.lock();
        let mut text = Vec::new();
        let mut seq = state.seq;
        for change in changes {
            seq += 1;
            let line = match change {
                Change::Node(node) => JournalLine {
                    seq,
                    node: Some((**node).clone()),
                    removed: None,
                },
                Change::Removed(id) => JournalLine {
                    seq,
                    node: None,
                    removed: Some(*id),
                },
            };
            serde_json::to_writer(&mut text, &line).expect("registry types always serialise");
            text.push(b'\n');
        }
        if let Some(dir) = self.journal_path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut options = fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.journal_path)?;
        file.write_all(&text)?;
        file.sync_data()?;
        state.seq = seq;
        state.lines += changes.len();
        Ok(())
    }

    /// Replaces `agents.json` with `contents` (from [`Self::encode`] with the
    /// current [`Self::journal_seq`]), then empties the journal. Blocking.
    pub fn write_whole(&self, contents: &[u8]) -> io::Result<()> {
        self.write_atomically(contents)?;
        match fs::OpenOptions::new().write(true).open(&self.journal_path) {
            Ok(journal) => {
                journal.set_len(0)?;
                journal.sync_all()?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.journal.lock().lines = 0;
        Ok(())
    }

    fn move_aside(&self) -> io::Result<PathBuf> {
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let moved_to = self
            .dir()
            .join(format!("{}.corrupt-{stamp}", Self::FILE_NAME));
        fs::rename(&self.path, &moved_to)?;
        Ok(moved_to)
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

    /// Serialises the nodes, which include the journal up to `journal_seq`; done outside any lock.
    pub fn encode(nodes: Vec<PersistedNode>, journal_seq: u64) -> Vec<u8> {
        let file = RegistryFile {
            version: FORMAT_VERSION,
            saved_at: Utc::now(),
            journal_seq,
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
            fs::File::open(dir)?.sync_all()?;
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
    use llm_router_common::{ApiKind, ModelInfo, SystemInfo};

    fn node(name: &str) -> PersistedNode {
        PersistedNode {
            facts: NodeFacts {
                id: NodeId::new_v4(),
                machine_name: name.into(),
                display_name: None,
                ip_address: "127.0.0.1".parse().unwrap(),
                api_url: "http://127.0.0.1:11434".into(),
                ollama_version: Some("0.12.0".into()),
                agent_version: None,
                registered_at: Utc::now(),
                last_seen: Utc::now(),
                draining: false,
                tags: vec!["gpu".into()],
                notes: String::new(),
                system_info: SystemInfo::default(),
                models: vec![ModelInfo::named("llama3.2:latest")],
                loaded_models: vec![],
                agentless: false,
                api_kind: ApiKind::Ollama,
            },
            online: true,
            offline_reason: None,
            ollama_available: true,
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
            .write_atomically(&RegistryStore::encode(nodes.clone(), 0))
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
            journal_seq: 0,
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
        assert!(!nodes[0].facts.agentless);
        assert_eq!(nodes[0].facts.api_kind, ApiKind::Ollama);

        let mut added = node("b");
        added.facts.agentless = true;
        added.facts.api_kind = ApiKind::OpenAi;
        store
            .write_atomically(&RegistryStore::encode(vec![added.clone()], 0))
            .unwrap();
        assert!(matches!(store.load().unwrap(), Loaded::Nodes(n) if n == [added]));
    }

    #[test]
    fn corrupt_file_is_moved_aside_with_its_contents_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::in_dir(dir.path());
        fs::write(store.path(), b"{\"version\":1,\"nodes\":[{\"id\":").unwrap();
        let Loaded::Corrupt {
            moved_to, reason, ..
        } = store.load().unwrap()
        else {
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
            .write_atomically(&RegistryStore::encode(vec![node("a")], 0))
            .unwrap();
        let tmp = dir.path().join(".agents.json.tmp-999");
        fs::write(&tmp, b"half a fi").unwrap();
        assert!(matches!(store.load().unwrap(), Loaded::Nodes(n) if n.len() == 1));
        assert!(!tmp.exists());
    }

    fn loaded(store: &RegistryStore) -> Vec<PersistedNode> {
        match store.load().unwrap() {
            Loaded::Nodes(nodes) => nodes,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn journal_changes_replay_over_the_file_and_a_whole_write_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::in_dir(dir.path());
        let (a, b) = (node("a"), node("b"));
        store
            .write_whole(&RegistryStore::encode(vec![a.clone()], 0))
            .unwrap();
        let mut a2 = a.clone();
        a2.facts.notes = "edited".into();
        store
            .append(&[
                Change::Node(Box::new(b.clone())),
                Change::Node(Box::new(a2.clone())),
            ])
            .unwrap();
        store.append(&[Change::Removed(b.facts.id)]).unwrap();
        assert_eq!(store.journal_lines(), 3);

        let reopened = RegistryStore::in_dir(dir.path());
        assert_eq!(loaded(&reopened), vec![a2.clone()]);
        assert_eq!(reopened.journal_seq(), 3);
        reopened
            .write_whole(&RegistryStore::encode(
                vec![a2.clone()],
                reopened.journal_seq(),
            ))
            .unwrap();
        assert_eq!(
            fs::metadata(dir.path().join(RegistryStore::JOURNAL_FILE_NAME))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(loaded(&RegistryStore::in_dir(dir.path())), vec![a2]);
    }

    #[test]
    fn a_crash_between_the_whole_write_and_emptying_the_journal_replays_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::in_dir(dir.path());
        let a = node("a");
        store.append(&[Change::Node(Box::new(a.clone()))]).unwrap();
        store.append(&[Change::Removed(a.facts.id)]).unwrap();
        // agents.json written with the journal up to line 2, the journal not yet emptied.
        store
            .write_atomically(&RegistryStore::encode(vec![], 2))
            .unwrap();
        assert_eq!(loaded(&RegistryStore::in_dir(dir.path())), vec![]);
    }

    #[test]
    fn a_torn_last_journal_line_is_ignored_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::in_dir(dir.path());
        let a = node("a");
        store.append(&[Change::Node(Box::new(a.clone()))]).unwrap();
        let mut journal = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(RegistryStore::JOURNAL_FILE_NAME))
            .unwrap();
        journal.write_all(b"{\"seq\":2,\"node\":{\"id\":").unwrap();
        assert_eq!(loaded(&RegistryStore::in_dir(dir.path())), vec![a]);
    }

    #[test]
    fn a_journal_without_a_file_still_loads_its_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::in_dir(dir.path());
        let a = node("a");
        store.append(&[Change::Node(Box::new(a.clone()))]).unwrap();
        assert_eq!(loaded(&RegistryStore::in_dir(dir.path())), vec![a]);
    }
}
