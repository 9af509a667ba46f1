//! One placement round at fleet scale: 8 models, nodes that hold some of
//! them and keep one or two in memory, planned from nothing and again from
//! the plan in force (`cargo bench -p llm-router-coordinator --bench planner`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use llm_router_coordinator::placement::plan::{Assignment, Capacity, Demand, plan};

const MODELS: usize = 8;

/// Demand falling off with the model's rank, as popular models do, sized to
/// about 70% of what `nodes` nodes can serve.
fn demand(nodes: usize) -> Vec<Demand> {
    let weights: Vec<f64> = (0..MODELS).map(|m| 1.0 / (m + 1) as f64).collect();
    let total: f64 = weights.iter().sum();
    weights
        .iter()
        .enumerate()
        .map(|(m, w)| Demand {
            model: format!("model-{m}"),
            rate: 0.7 * nodes as f64 * 2.0 * w / total,
        })
        .collect()
}

/// Nodes of varied speed (0.5–4.5 requests per second), each holding four
/// or five of the models and keeping one or two of them in memory.
fn fleet(nodes: usize) -> Vec<Capacity> {
    (0..nodes)
        .map(|n| Capacity {
            rates: (0..MODELS)
                .map(|m| {
                    ((n + m) % 2 == 0 || m == n % MODELS).then_some(0.5 + (n % 9) as f64 * 0.5)
                })
                .collect(),
            memory: 1 + n % 2,
        })
        .collect()
}

fn planner(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group.sample_size(10);
    for size in [100, 1_000, 10_000] {
        let demand = demand(size);
        let nodes = fleet(size);
        let empty: Assignment = vec![Vec::new(); size];
        group.bench_with_input(BenchmarkId::new("from_nothing", size), &size, |b, _| {
            b.iter(|| black_box(plan(&demand, &nodes, &empty)));
        });
        let settled = plan(&demand, &nodes, &empty).assignment;
        group.bench_with_input(
            BenchmarkId::new("from_plan_in_force", size),
            &size,
            |b, _| {
                b.iter(|| black_box(plan(&demand, &nodes, &settled)));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, planner);
criterion_main!(benches);
