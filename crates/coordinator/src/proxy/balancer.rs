//! Choosing a node among the candidates for a request.
//!
//! The seam for load-balancing policies: the proxy hands a policy the
//! candidates (online nodes holding the model) and what the request says,
//! and gets back the one to try.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::peek::RequestFacts;
use crate::registry::RoutableNode;

/// A load-balancing policy.
pub trait Balancer: Send + Sync + Debug {
    /// Index into `candidates` (never empty) of the node to try next.
    fn select(&self, candidates: &[Arc<RoutableNode>], request: &RequestFacts) -> usize;
}

/// Each request to the next node in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn select(&self, candidates: &[Arc<RoutableNode>], _request: &RequestFacts) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()
    }
}
