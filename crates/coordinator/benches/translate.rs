//! What translating an OpenAI-compatible server's stream for an Ollama client
//! costs per chunk: one server-sent event in, one NDJSON line out, against
//! passing the same event through untouched (a copy into the outgoing buffer).
//!
//! `cargo bench -p llm-router-coordinator --bench translate`

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use llm_router_coordinator::translate::response::Answer;
use llm_router_coordinator::translate::{Endpoint, Upstream};
use tokio::time::Instant;

/// A chunk as llama.cpp's server and vLLM stream them: one token of text.
const EVENT: &[u8] = b"data: {\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"created\":1765000000,\"model\":\"qwen2.5:7b\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token\"},\"finish_reason\":null}]}\n\n";

fn per_chunk(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream chunk");
    group.bench_function("translated (SSE event to NDJSON line)", |b| {
        let mut answer = Answer::new(
            Endpoint::Chat,
            Upstream::ChatCompletions,
            "qwen2.5:7b",
            true,
            200,
            Instant::now(),
        );
        b.iter(|| std::hint::black_box(answer.push(std::hint::black_box(EVENT))));
    });
    group.bench_function("passed through", |b| {
        b.iter(|| std::hint::black_box(Bytes::copy_from_slice(std::hint::black_box(EVENT))));
    });
    group.finish();
}

criterion_group!(benches, per_chunk);
criterion_main!(benches);
