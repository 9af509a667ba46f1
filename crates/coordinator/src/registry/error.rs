//! Why the registry refused a change or a lookup. The API maps these to HTTP
//! answers (`crate::error`); the registry itself knows nothing of HTTP.

use llm_router_common::NodeId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No node has this id.
    #[error("node {0} is not registered")]
    UnknownNode(NodeId),
    /// A field's value is not acceptable: an empty name, a URL that is not one.
    #[error("{0}")]
    Invalid(String),
    /// The node's credential is missing, or not this node's.
    #[error("{0}")]
    Unauthenticated(String),
    /// A credential was presented for a node registered with another one.
    #[error("{0}")]
    WrongCredential(String),
    /// The change contradicts what the registry holds (another node's URL).
    #[error("{0}")]
    Conflict(String),
}
