//! Round-robin: each request to the next candidate in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Placement, Policy};
use crate::registry::Candidate;

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn select(&self, candidates: &[&Candidate], _placement: &Placement<'_>) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()
    }
}
