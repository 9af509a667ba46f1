//! Latency-aware: power of two choices on observed speed. Two candidates,
//! drawn from a seeded sequence, are compared by their expected time to
//! finish this request (time to first token + expected tokens ÷ tokens per
//! second, stretched by the requests already running there); the faster one
//! wins. Expected times closer than [`TIE_SECS`] or [`TIE_RELATIVE`] are a
//! tie, decided by the draw: measurement noise does not pile requests on one
//! of two equal nodes. A node with no observations yet wins its comparison,
//! so every node gets measured.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Placement, Policy};
use crate::registry::{Candidate, RoutableNode};

/// Completion length assumed before any request of the model finished.
pub const DEFAULT_COMPLETION_TOKENS: f64 = 256.0;

/// Expected finishing times this close (in seconds) are a tie.
pub const TIE_SECS: f64 = 0.05;
/// …and so are those within this fraction of the sooner one.
pub const TIE_RELATIVE: f64 = 0.1;

#[derive(Debug, Default)]
pub struct Latency {
    /// Position in the sequence of draws (SplitMix64 over a counter: no lock, no
    /// global random state, the same picks for the same requests).
    draws: AtomicU64,
}

impl Latency {
    fn draw(&self) -> u64 {
        let mut z = self
            .draws
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Expected seconds for `node` to answer a request for `model` on its own;
/// `None` when the node has not been measured yet.
pub fn expected_service_secs(node: &RoutableNode, model: &str) -> Option<f64> {
    let overall = node.live.speed();
    node.live.with_model_speed(model, |per_model| {
        let ttft_ms = per_model
            .and_then(|s| s.ttft_ms())
            .or_else(|| overall.ttft_ms())?;
        let tps = per_model
            .and_then(|s| s.tokens_per_sec())
            .or_else(|| overall.tokens_per_sec())?;
        let tokens = per_model
            .and_then(|s| s.completion_tokens())
            .unwrap_or(DEFAULT_COMPLETION_TOKENS);
        Some(ttft_ms / 1000.0 + tokens / tps)
    })
}

/// Expected seconds for `node` to finish this request given its load; `None` unmeasured.
fn score(node: &Candidate, model: &str) -> Option<f64> {
    let slots = f64::from(node.line().parallel().unwrap_or(1));
    let load = 1.0 + super::count(node.line().load()) / slots;
    expected_service_secs(node, model).map(|secs| secs * load)
}

/// Whether `b` finishes clearly sooner than `a`.
fn clearly_sooner(b: Option<f64>, a: Option<f64>) -> bool {
    match (a, b) {
        (_, None) => a.is_some(),
        (None, Some(_)) => false,
        (Some(a), Some(b)) => b < a - TIE_SECS.max(b * TIE_RELATIVE),
    }
}

impl Policy for Latency {
    fn name(&self) -> &'static str {
        "latency"
    }

    fn select(&self, candidates: &[&Candidate], placement: &Placement<'_>) -> usize {
        let n = candidates.len();
        if n == 1 {
            return 0;
        }
        let draw = self.draw();
        let first = (draw % n as u64) as usize;
        let second = (first + 1 + ((draw >> 32) % (n as u64 - 1)) as usize) % n;
        let (a, b) = (
            score(candidates[first], placement.model),
            score(candidates[second], placement.model),
        );
        if clearly_sooner(b, a) { second } else { first }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balancer::testing::{names, node, place};
    use crate::registry::live::SpeedSample;

    fn measured(node: &RoutableNode, ttft_ms: u64, tps: f64) {
        node.live.record_speed(
            "m:latest",
            SpeedSample {
                ttft: Some(Duration::from_millis(ttft_ms)),
                tokens_per_sec: Some(tps),
                completion_tokens: Some(100),
                cold: false,
            },
        );
    }

    #[test]
    fn of_two_nodes_the_faster_one_wins() {
        let nodes = vec![node("slow"), node("fast")];
        measured(&nodes[0], 900, 10.0);
        measured(&nodes[1], 100, 100.0);
        let picks: Vec<_> = (0..20)
            .map(|_| place(&Latency::default(), &nodes))
            .collect();
        assert_eq!(names(&nodes, picks), vec!["fast"; 20]);
    }

    #[test]
    fn a_busy_fast_node_loses_to_an_idle_one_that_finishes_sooner() {
        let nodes = vec![node("fast-busy"), node("medium")];
        measured(&nodes[0], 100, 100.0); // 1.1 s alone
        measured(&nodes[1], 100, 50.0); // 2.1 s alone
        let _running: Vec<_> = (0..3).map(|_| nodes[0].live.start_request()).collect();
        assert_eq!(
            names(&nodes, [place(&Latency::default(), &nodes)]),
            ["medium"]
        );
    }

    #[test]
    fn unmeasured_nodes_get_tried() {
        let nodes = vec![node("known"), node("new")];
        measured(&nodes[0], 100, 100.0);
        assert_eq!(names(&nodes, [place(&Latency::default(), &nodes)]), ["new"]);
    }
}
