//! Cost of the access checks on the request path: looking up a client API key
//! among 10,000 (and admitting it through its limits), and checking a node
//! credential (`cargo bench -p llm-router-coordinator --bench auth`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use llm_router_coordinator::auth::keys::{ApiKeys, KeyLimits};
use llm_router_coordinator::auth::secret::{Digest, generate_token};

const KEYS: usize = 10_000;

fn key_lookup(c: &mut Criterion) {
    let keys = ApiKeys::in_memory();
    let mut presented = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let key = generate_token("llmr_");
        let limits = KeyLimits {
            requests_per_minute: (i % 2 == 0).then_some(1_000_000),
            max_concurrent: None,
        };
        keys.insert_unsaved(&format!("key-{i}"), &key, limits);
        presented.push(key);
    }
    let known = presented[KEYS / 2].clone();
    let unknown = generate_token("llmr_");
    let limited = presented[0].clone();

    let mut group = c.benchmark_group("api_key");
    group.bench_function("lookup_hit_10k", |b| {
        b.iter(|| black_box(keys.lookup(black_box(&known))).is_some())
    });
    group.bench_function("lookup_miss_10k", |b| {
        b.iter(|| black_box(keys.lookup(black_box(&unknown))).is_none())
    });
    group.bench_function("lookup_and_admit_rate_limited_10k", |b| {
        b.iter(|| {
            let key = keys.lookup(black_box(&limited)).unwrap();
            black_box(key.admit(keys.now_nanos()).is_ok())
        })
    });
    group.finish();

    let credential = generate_token("llmr_nc_");
    let digest = Digest::of(&credential);
    c.bench_function("node_credential_check", |b| {
        b.iter(|| black_box(digest.matches(black_box(&credential))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = key_lookup
}
criterion_main!(benches);
