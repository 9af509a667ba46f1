//! `history`: the request history's queries on a large database.
//!
//! Fills a fresh `history.db` with synthetic requests through the store API
//! (the writer thread's insert path), then times the queries behind
//! `GET /api/history` (count and one page, as the endpoint runs them), one
//! record in full, and the dashboard's per-minute chart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use llm_router_coordinator::history::entry::HistoryEntry;
use llm_router_coordinator::history::query::{Filter, Page, StatusFilter};
use llm_router_coordinator::history::store::{FILE_NAME, HistoryStore};
use llm_router_coordinator::proxy::record::Outcome;

use crate::stats::{Latencies, ms};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Requests to fill the database with.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows per insert transaction (the writer thread's batches hold up to 1000).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Times each query is run.
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// Folder for the database (default: a temporary folder, removed at the
    /// end). A database already there with at least `rows` requests is reused.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Most time spent on one query's runs, in seconds (slow queries run fewer times).
    #[arg(long, default_value_t = 15)]
    budget_secs: u64,
}

const MODELS: [&str; 8] = [
    "llama3.2:latest",
    "llama3.1:8b",
    "qwen2.5:7b",
    "qwen2.5-coder:14b",
    "mistral:7b",
    "gemma2:9b",
    "phi3:mini",
    "deepseek-r1:8b",
];

const WORDS: [&str; 32] = [
    "the",
    "weather",
    "code",
    "function",
    "explain",
    "summarise",
    "list",
    "why",
    "how",
    "what",
    "python",
    "rust",
    "error",
    "memory",
    "network",
    "report",
    "table",
    "write",
    "email",
    "story",
    "data",
    "model",
    "tokens",
    "fast",
    "slow",
    "please",
    "translate",
    "french",
    "japanese",
    "plan",
    "travel",
    "recipe",
];

/// Appears in about one request in a thousand.
const RARE_WORD: &str = "zebra-needle";

/// xorshift64*: reproducible rows without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn words(&mut self, n: usize) -> String {
        let mut text = String::new();
        for i in 0..n {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(WORDS[self.below(WORDS.len() as u64) as usize]);
        }
        text
    }
}

/// Request `i` of `rows`, spread evenly over the last six days (oldest first).
fn synthetic(rng: &mut Rng, i: u64, rows: u64, now: chrono::DateTime<Utc>) -> HistoryEntry {
    let span_ms = 6 * 24 * 3600 * 1000;
    let time = now - chrono::Duration::milliseconds(span_ms - (i as i64 * span_ms) / rows as i64);
    let model = MODELS[rng.below(MODELS.len() as u64) as usize];
    let node = format!("gpu-{:02}", rng.below(10));
    let roll = rng.below(1000);
    let (status, outcome, error) = match roll {
        0..=9 => (
            404u16,
            Outcome::Rejected,
            Some(format!("model '{model}' not found")),
        ),
        10..=14 => (
            502,
            Outcome::Rejected,
            Some(format!("{node}: connection refused")),
        ),
        15..=19 => (
            200,
            Outcome::Failed,
            Some(format!("{node}: stream idle timeout")),
        ),
        _ => (200, Outcome::Completed, None),
    };
    let prompt_words = 20 + rng.below(40) as usize;
    let mut prompt = rng.words(prompt_words);
    if rng.below(1000) == 0 {
        prompt.push(' ');
        prompt.push_str(RARE_WORD);
    }
    let request_body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
    })
    .to_string();
    let pieces = 6 + rng.below(6);
    let mut response = String::new();
    let mut text = String::new();
    for _ in 0..pieces {
        let piece = format!("{} ", rng.words(3));
        text.push_str(&piece);
        response.push_str(
            &serde_json::json!({"model": model, "message": {"role": "assistant", "content": piece}, "done": false})
                .to_string(),
        );
        response.push('\n');
    }
    let completion_tokens = pieces * 3;
    response.push_str(
        &serde_json::json!({"model": model, "message": {"role": "assistant", "content": ""}, "done": true,
            "done_reason": "stop", "eval_count": completion_tokens, "prompt_eval_count": 40,
            "total_duration": 900_000_000u64, "eval_duration": 800_000_000u64})
        .to_string(),
    );
    response.push('\n');
    HistoryEntry {
        request_id: format!("bench-{i:08x}"),
        time,
        client_ip: Some(format!("10.0.{}.{}", rng.below(4), rng.below(250))),
        api_key: None,
        endpoint: "/api/chat".into(),
        model: model.into(),
        stream: true,
        node: (status != 404).then(|| node.clone()),
        nodes_tried: if status == 404 { vec![] } else { vec![node] },
        status,
        outcome,
        duration: Duration::from_millis(200 + rng.below(3000)),
        time_to_first_token: Some(Duration::from_millis(20 + rng.below(400))),
        prompt_tokens: Some(40),
        completion_tokens: Some(completion_tokens),
        generation_time: Some(Duration::from_millis(800)),
        error,
        request_bytes: request_body.len() as u64,
        request_body: Bytes::from(request_body),
        response_body: Bytes::from(response),
        response_bytes_dropped: 0,
    }
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(&args)).await?
}

fn run_blocking(args: &HistoryArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("llm-router-history-bench-")
        .tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(FILE_NAME);
    let store = HistoryStore::open(&path)?;
    let existing = store.count(&Filter::default())?;
    if existing >= args.rows {
        println!("reusing {} with {existing} requests", path.display());
        return time_queries(args, &store);
    }

    let now = Utc::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let mut batch = Vec::with_capacity(args.batch);
    let mut inserts = Latencies::default();
    for i in 0..args.rows {
        batch.push(synthetic(&mut rng, i, args.rows, now));
        if batch.len() == args.batch || i + 1 == args.rows {
            let t = Instant::now();
            store.insert(&batch)?;
            inserts.record(t.elapsed());
            batch.clear();
        }
        if (i + 1) % 200_000 == 0 {
            eprintln!("  {} rows…", i + 1);
        }
    }
    let fill = started.elapsed();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(dir.join(format!("{FILE_NAME}-wal")))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "filled {} rows in {:.1}s ({:.0} rows/s, including building each row), database {:.0} MiB",
        args.rows,
        fill.as_secs_f64(),
        args.rows as f64 / fill.as_secs_f64(),
        size as f64 / (1024.0 * 1024.0)
    );
    println!(
        "insert transaction of {} rows: {}",
        args.batch,
        inserts.summary()
    );

    time_queries(args, &store)
}

fn time_queries(args: &HistoryArgs, store: &HistoryStore) -> anyhow::Result<()> {
    let page1 = Page {
        limit: 50,
        offset: 0,
    };
    let filter = |f: fn(&mut Filter)| {
        let mut filter = Filter::default();
        f(&mut filter);
        filter
    };
    let cases: Vec<(&str, Filter, Page)> = vec![
        ("no filter, page 1", Filter::default(), page1),
        (
            "model filter, page 1",
            filter(|f| f.model = Some("qwen2.5:7b".into())),
            page1,
        ),
        (
            "no filter, page 100 (offset 4950)",
            Filter::default(),
            Page {
                limit: 50,
                offset: 4950,
            },
        ),
        (
            "status=2xx, page 1",
            filter(|f| f.status = Some(StatusFilter::Class(2))),
            page1,
        ),
        (
            "status=5xx, page 1",
            filter(|f| f.status = Some(StatusFilter::Class(5))),
            page1,
        ),
        (
            "model + last hour, page 1",
            filter(|f| {
                f.model = Some("llama3.2".into());
                f.since = Some(Utc::now() - chrono::Duration::hours(1));
            }),
            page1,
        ),
        (
            "text search, common word (q=weather)",
            filter(|f| f.q = Some("weather".into())),
            page1,
        ),
        (
            "text search, rare word (q=zebra-needle)",
            filter(|f| f.q = Some(RARE_WORD.into())),
            page1,
        ),
    ];
    println!(
        "\nGET /api/history queries (total + one page of 50, as the endpoint runs them), {} runs each:",
        args.iterations
    );
    for (name, filter, page) in &cases {
        let mut times = Latencies::default();
        let mut total = String::new();
        let mut listed = 0;
        let budget = Instant::now() + Duration::from_secs(args.budget_secs);
        for _ in 0..args.iterations {
            if Instant::now() > budget {
                break;
            }
            let t = Instant::now();
            let page = store.list(filter, *page)?;
            times.record(t.elapsed());
            total = format!("{}{}", page.total, if page.total_capped { "+" } else { "" });
            listed = page.items.len();
        }
        println!(
            "  {name:<42} total={total:<8} items={listed:<3} runs={:<3} p50={:>8.2}ms p99={:>8.2}ms",
            times.len(),
            ms(times.quantile(0.5)),
            ms(times.quantile(0.99)),
        );
    }

    let mut detail = Latencies::default();
    for i in 0..args.iterations as u64 {
        let id = 1 + (i * 7919) % args.rows.max(1);
        let t = Instant::now();
        let found = store.get(id as i64)?;
        detail.record(t.elapsed());
        anyhow::ensure!(found.is_some(), "row {id} missing");
    }
    println!("\nGET /api/history/{{id}}:        {}", detail.summary());
    let mut chart = Latencies::default();
    for _ in 0..args.iterations {
        let t = Instant::now();
        store.timeseries(Utc::now(), 60)?;
        chart.record(t.elapsed());
    }
    println!("GET /api/history/timeseries (60 min): {}", chart.summary());
    let t = Instant::now();
    let mut cursor = None;
    let mut exported = 0usize;
    while exported < 100_000 {
        let page = store.page_after(&Filter::default(), cursor, 500)?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.into());
        exported += page.len();
    }
    let elapsed = t.elapsed();
    println!(
        "export paging: {exported} rows in {:.0} ms ({:.0} rows/s, before formatting)",
        ms(elapsed),
        exported as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
