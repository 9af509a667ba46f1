//! Least connections: the candidate with the fewest requests in flight; ties take turns.

use std::sync::atomic::AtomicUsize;

use super::{Placement, Policy, lowest};
use crate::registry::Candidate;

#[derive(Debug, Default)]
pub struct LeastConnections {
    turn: AtomicUsize,
}

impl Policy for LeastConnections {
    fn name(&self) -> &'static str {
        "least_connections"
    }

    fn select(&self, candidates: &[&Candidate], _placement: &Placement<'_>) -> usize {
        lowest(candidates, &self.turn, |n| super::count(n.line().load()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::testing::{names, node, place};

    #[test]
    fn picks_the_least_busy_and_rotates_ties() {
        let nodes = vec![node("a"), node("b"), node("c")];
        let _a1 = nodes[0].live.start_request();
        let _a2 = nodes[0].live.start_request();
        let policy = LeastConnections::default();
        let picks = (0..4).map(|_| place(&policy, &nodes));
        assert_eq!(names(&nodes, picks), ["b", "c", "b", "c"]);
        let _b = nodes[1].live.start_request();
        assert_eq!(names(&nodes, [place(&policy, &nodes)]), ["c"]);
    }
}
