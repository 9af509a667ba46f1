//! The seed's metrics policy: lowest cpu% + memory% + 10 × requests in flight.
//! When every candidate is above 80% CPU the scores say little, so it falls
//! back to round-robin.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Placement, Policy, lowest};
use crate::registry::Candidate;

/// CPU load above which a node counts as saturated.
const SATURATED_CPU_PERCENT: f32 = 80.0;

#[derive(Debug, Default)]
pub struct MetricsScore {
    turn: AtomicUsize,
    round_robin: AtomicUsize,
}

/// The seed's score of a node: lower is better.
pub fn score(node: &Candidate) -> f64 {
    node.line().pressure() + 10.0 * super::count(node.line().load())
}

impl Policy for MetricsScore {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn select(&self, candidates: &[&Candidate], _placement: &Placement<'_>) -> usize {
        if candidates
            .iter()
            .all(|n| n.line().cpu_percent() > SATURATED_CPU_PERCENT)
        {
            return self.round_robin.fetch_add(1, Ordering::Relaxed) % candidates.len();
        }
        lowest(candidates, &self.turn, score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::testing::{names, node, place};
    use crate::registry::RoutableNode;

    fn load(node: &RoutableNode, cpu: f32, memory: f32) {
        node.live.record_heartbeat(cpu, memory, None, None);
    }

    #[test]
    fn a_busy_cpu_sends_new_requests_to_the_other_node() {
        let nodes = vec![node("hot"), node("cool")];
        load(&nodes[0], 90.0, 40.0);
        load(&nodes[1], 10.0, 40.0);
        let policy = MetricsScore::default();
        let picks: Vec<_> = (0..5).map(|_| place(&policy, &nodes)).collect();
        assert_eq!(names(&nodes, picks), ["cool"; 5]);
    }

    #[test]
    fn active_requests_weigh_ten_points_each() {
        let nodes = vec![node("a"), node("b")];
        load(&nodes[0], 10.0, 10.0);
        load(&nodes[1], 25.0, 10.0);
        let _busy = nodes[0].live.start_request();
        let _busy2 = nodes[0].live.start_request();
        assert_eq!(
            names(&nodes, [place(&MetricsScore::default(), &nodes)]),
            ["b"]
        );
    }

    #[test]
    fn all_saturated_falls_back_to_round_robin() {
        let nodes = vec![node("a"), node("b"), node("c")];
        for (n, cpu) in nodes.iter().zip([95.0, 85.0, 99.0]) {
            load(n, cpu, 50.0);
        }
        let policy = MetricsScore::default();
        let picks: Vec<_> = (0..6).map(|_| place(&policy, &nodes)).collect();
        assert_eq!(names(&nodes, picks), ["a", "b", "c", "a", "b", "c"]);
    }
}
