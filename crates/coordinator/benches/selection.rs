//! Node selection cost of each policy with 1,000 and 10,000 candidates, of
//! `auto` under a placement plan, and of a request's whole choice of node:
//! its candidates taken from the snapshot's list and one chosen
//! (`cargo bench -p llm-router-coordinator --bench selection`).

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use llm_router_common::{ApiKind, NodeId};
use llm_router_coordinator::balancer::{self, NodeSet, Placement};
use llm_router_coordinator::config::BalancerMode;
use llm_router_coordinator::proxy::split_candidates;
use llm_router_coordinator::registry::live::SpeedSample;
use llm_router_coordinator::registry::{Candidate, NodeLive, RoutableNode};
use tokio::time::Instant;

/// A fleet with varied load, speed and resident models.
fn fleet(size: usize) -> Vec<Candidate> {
    (0..size)
        .map(|i| {
            let live = Arc::new(NodeLive::default());
            let resident = if i % 3 == 0 {
                "m:latest"
            } else {
                "other:latest"
            };
            live.record_heartbeat(
                (i % 97) as f32,
                (i % 53) as f32,
                Some(1 + (i % 4) as u32),
                Some(vec![resident.to_owned()]),
            );
            live.record_speed(
                "m:latest",
                SpeedSample {
                    ttft: Some(Duration::from_millis(50 + (i % 400) as u64)),
                    tokens_per_sec: Some(10.0 + (i % 150) as f64),
                    completion_tokens: Some(200),
                    cold: false,
                },
            );
            for _ in 0..(i % 3) {
                std::mem::forget(live.start_request());
            }
            Candidate::new(Arc::new(RoutableNode {
                id: NodeId::new_v4(),
                machine_name: format!("node-{i}"),
                api_url: format!("http://10.0.{}.{}:11434", i / 250, i % 250),
                api: ApiKind::Ollama,
                models: HashSet::from(["m:latest".to_owned(), "other:latest".to_owned()]),
                loaded_models: HashSet::new(),
                served_names: Default::default(),
                authorization: None,
                base: None,
                name_header: None,
                live,
            }))
        })
        .collect()
}

/// A request for `m:latest` now, under `planned` and `assigned`.
fn placement<'a>(planned: Option<&'a NodeSet>, assigned: Option<&'a NodeSet>) -> Placement<'a> {
    Placement {
        model: "m:latest",
        now: Instant::now(),
        planned,
        assigned,
    }
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for size in [1_000, 10_000] {
        let fleet = fleet(size);
        let nodes: Vec<&Candidate> = fleet.iter().collect();
        for mode in [
            BalancerMode::RoundRobin,
            BalancerMode::LeastConnections,
            BalancerMode::Metrics,
            BalancerMode::Latency,
            BalancerMode::Auto,
        ] {
            let policy = balancer::build(mode);
            group.bench_with_input(BenchmarkId::new(policy.name(), size), &nodes, |b, nodes| {
                b.iter(|| black_box(policy.select(black_box(nodes), &placement(None, None))));
            });
        }
        // What the proxy does for each request: split the snapshot's list
        // for the model (no node unhealthy here), then choose.
        let policy = balancer::build(BalancerMode::LeastConnections);
        group.bench_with_input(
            BenchmarkId::new("split_and_least_connections", size),
            &fleet,
            |b, fleet| {
                b.iter(|| {
                    let (pool, _reserve) = split_candidates(black_box(fleet), false, false);
                    black_box(policy.select(&pool, &placement(None, None)))
                });
            },
        );
        // `auto` under a placement plan that gives the model every other
        // candidate, and another model the rest.
        let planned: NodeSet = nodes.iter().step_by(2).map(|n| n.id).collect();
        let assigned: NodeSet = nodes.iter().map(|n| n.id).collect();
        let policy = balancer::build(BalancerMode::Auto);
        group.bench_with_input(
            BenchmarkId::new("auto_planned", size),
            &nodes,
            |b, nodes| {
                b.iter(|| {
                    let request = placement(Some(&planned), Some(&assigned));
                    black_box(policy.select(black_box(nodes), &request))
                });
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = selection
}
criterion_main!(benches);
