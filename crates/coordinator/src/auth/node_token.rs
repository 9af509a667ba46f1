//! The fleet's node token: what an agent must present (`Authorization: Bearer`)
//! to register a node.
//!
//! Several tokens may be valid at once, so a fleet can move to a new one without
//! downtime: add it, update the agents, drop the old one. A coordinator that is
//! reachable from the network and was given none makes one at first start and
//! keeps it in the data folder (`node-token`, readable by its owner only).

use std::io;
use std::path::{Path, PathBuf};

use super::secret::{Digest, any_matches, generate_token, write_private_file};

/// File in the data folder holding the generated token.
pub const NODE_TOKEN_FILE: &str = "node-token";
const TOKEN_PREFIX: &str = "llmr_nt_";

/// Where the node token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--node-token` / `LLM_ROUTER_NODE_TOKEN`.
    Configured,
    /// The data folder's `node-token`, written at an earlier start.
    Stored(PathBuf),
    /// Made now and written to the data folder.
    Generated(PathBuf),
    /// None: any agent may register (loopback-only coordinators).
    Open,
}

/// The node tokens a registration is checked against; none means registration is open.
#[derive(Debug, Clone, Default)]
pub struct NodeTokens {
    digests: Vec<Digest>,
}

/// The tokens in force, where they came from, and the token itself when it came
/// from the data folder (for the agent command line printed at start).
#[derive(Debug)]
pub struct ResolvedTokens {
    pub tokens: NodeTokens,
    pub source: TokenSource,
    pub stored_token: Option<String>,
}

impl NodeTokens {
    /// Tokens from the configured list; else the data folder's file; else, when
    /// `generate` (the coordinator listens beyond loopback), a new one written there.
    pub fn resolve(
        configured: &[String],
        data_dir: &Path,
        generate: bool,
    ) -> io::Result<ResolvedTokens> {
        let configured: Vec<&str> = configured
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect();
        if !configured.is_empty() {
            return Ok(ResolvedTokens {
                tokens: Self::from_tokens(configured),
                source: TokenSource::Configured,
                stored_token: None,
            });
        }
        let path = data_dir.join(NODE_TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                let token = text.trim().to_owned();
                return Ok(ResolvedTokens {
                    tokens: Self::from_tokens([token.as_str()]),
                    source: TokenSource::Stored(path),
                    stored_token: Some(token),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if !generate {
            return Ok(ResolvedTokens {
                tokens: Self::default(),
                source: TokenSource::Open,
                stored_token: None,
            });
        }
        let token = generate_token(TOKEN_PREFIX);
        write_private_file(&path, format!("{token}\n").as_bytes())?;
        Ok(ResolvedTokens {
            tokens: Self::from_tokens([token.as_str()]),
            source: TokenSource::Generated(path),
            stored_token: Some(token),
        })
    }

    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            digests: tokens.into_iter().map(Digest::of).collect(),
        }
    }

    /// Whether registrations must present a token.
    pub fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether a registration presenting `token` may go on.
    pub fn accepts(&self, token: Option<&str>) -> bool {
        match token {
            _ if !self.required() => true,
            Some(token) => any_matches(&self.digests, token),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_tokens_are_all_accepted_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let resolved =
            NodeTokens::resolve(&["old".into(), " new ".into()], dir.path(), true).unwrap();
        assert_eq!(resolved.source, TokenSource::Configured);
        assert!(resolved.tokens.accepts(Some("old")));
        assert!(resolved.tokens.accepts(Some("new")));
        assert!(!resolved.tokens.accepts(Some("other")));
        assert!(!resolved.tokens.accepts(None));
        assert!(!dir.path().join(NODE_TOKEN_FILE).exists());
    }

    #[test]
    fn a_generated_token_is_stored_and_reused_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeTokens::resolve(&[], dir.path(), true).unwrap();
        assert!(matches!(first.source, TokenSource::Generated(_)));
        let token = first.stored_token.unwrap();
        let again = NodeTokens::resolve(&[], dir.path(), true).unwrap();
        assert!(matches!(again.source, TokenSource::Stored(_)));
        assert_eq!(again.stored_token.as_deref(), Some(token.as_str()));
        assert!(again.tokens.accepts(Some(&token)));
    }

    #[test]
    fn without_generation_and_without_a_file_registration_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let resolved = NodeTokens::resolve(&[], dir.path(), false).unwrap();
        assert_eq!(resolved.source, TokenSource::Open);
        assert!(resolved.tokens.accepts(None));
    }
}
