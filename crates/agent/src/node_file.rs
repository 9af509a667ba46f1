//! `agent-node.json`: the node's id and the credential the coordinator issued
//! it, kept between runs so that a restarted agent speaks for the same node.
//!
//! The credential is a secret: the file is created readable by its owner only
//! and replaced atomically (temp file, fsync, rename). A file that cannot be
//! used is reported and ignored; the agent then registers as a new node.

use std::path::{Path, PathBuf};

use llm_router_common::NodeId;
use reqwest::Url;
use serde::{Deserialize, Serialize};

/// File name in the data folder.
pub const NODE_FILE_NAME: &str = "agent-node.json";

/// Who this node is to one coordinator.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub coordinator_url: String,
    /// The machine name registered: an agent under another name is another node,
    /// even when two agents share a data folder by mistake.
    pub machine_name: String,
    pub node_id: NodeId,
    pub node_credential: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("coordinator_url", &self.coordinator_url)
            .field("machine_name", &self.machine_name)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Why the identity could not be saved.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct SaveError {
    path: PathBuf,
    source: std::io::Error,
}

/// The identity stored at `path` for `machine_name` at `coordinator`, if there is a usable one.
pub fn load(path: &Path, coordinator: &Url, machine_name: &str) -> Option<NodeIdentity> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the node identity file; registering as a new node");
            return None;
        }
    };
    let identity: NodeIdentity = match serde_json::from_slice(&text) {
        Ok(identity) => identity,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "the node identity file is not valid; registering as a new node");
            return None;
        }
    };
    if identity.coordinator_url != coordinator.as_str() {
        tracing::info!(
            path = %path.display(),
            stored_for = %identity.coordinator_url,
            "the node identity file is for another coordinator; registering as a new node"
        );
        return None;
    }
    if identity.machine_name != machine_name {
        tracing::info!(
            path = %path.display(),
            stored_for = %identity.machine_name,
            "the node identity file is for another machine name; registering as a new node"
        );
        return None;
    }
    Some(identity)
}

/// Replaces the file at `path` with `identity`, readable by its owner only.
pub fn save(path: &Path, identity: &NodeIdentity) -> Result<(), SaveError> {
    let text = serde_json::to_vec_pretty(identity).expect("an identity always serialises");
    crate::settings_file::write_private(path, &text).map_err(|source| SaveError {
        path: path.to_owned(),
        source,
    })
}

/// Keeps the node when its machine is renamed: the identity stored for
/// `from` at `coordinator` is stored again for `to`, so that the next
/// registration renames the node instead of adding another. `Ok(false)` when
/// there is no identity for `from` to carry over.
pub fn carry_over(path: &Path, coordinator: &Url, from: &str, to: &str) -> Result<bool, SaveError> {
    let Some(identity) = load(path, coordinator, from) else {
        return Ok(false);
    };
    save(
        path,
        &NodeIdentity {
            machine_name: to.to_owned(),
            ..identity
        },
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(url: &str) -> NodeIdentity {
        NodeIdentity {
            coordinator_url: url.to_owned(),
            machine_name: "box".to_owned(),
            node_id: NodeId::new_v4(),
            node_credential: "llmr_nc_secret".to_owned(),
        }
    }

    #[test]
    fn a_saved_identity_loads_for_its_coordinator_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_FILE_NAME);
        let url = Url::parse("http://c:8080/").unwrap();
        let saved = identity(url.as_str());
        save(&path, &saved).unwrap();
        assert_eq!(load(&path, &url, "box"), Some(saved));
        assert_eq!(load(&path, &url, "another-box"), None);
        assert_eq!(
            load(&path, &Url::parse("http://other:8080/").unwrap(), "box"),
            None
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_renamed_machine_keeps_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_FILE_NAME);
        let url = Url::parse("http://c:8080/").unwrap();
        let saved = identity(url.as_str());
        save(&path, &saved).unwrap();
        assert!(!carry_over(&path, &url, "not-box", "x").unwrap());
        assert!(carry_over(&path, &url, "box", "desk").unwrap());
        let moved = load(&path, &url, "desk").unwrap();
        assert_eq!(
            (moved.node_id, moved.node_credential),
            (saved.node_id, saved.node_credential)
        );
        assert_eq!(load(&path, &url, "box"), None);
    }

    #[test]
    fn a_missing_or_corrupt_file_is_no_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_FILE_NAME);
        let url = Url::parse("http://c:8080/").unwrap();
        assert_eq!(load(&path, &url, "box"), None);
        std::fs::write(&path, b"{ broken").unwrap();
        assert_eq!(load(&path, &url, "box"), None);
    }

    #[test]
    fn debug_never_shows_the_credential() {
        assert!(!format!("{:?}", identity("http://c/")).contains("secret"));
    }
}
