//! What an OpenAI-compatible server says of its own load, read beside its models
//! on every heartbeat, so that the coordinator balances on real free slots and
//! queues (other clients of the server included), not only on its own count:
//!
//! - llama.cpp's server: `GET /slots`, one entry per slot, busy when
//!   `is_processing` (older builds: `state` not 0);
//! - else Prometheus `GET /metrics`, as llama.cpp (`llamacpp:requests_processing`,
//!   `llamacpp:requests_deferred`, `llamacpp:kv_cache_usage_ratio`), vLLM
//!   (`vllm:num_requests_running`, `vllm:num_requests_waiting`,
//!   `vllm:gpu_cache_usage_perc` or `vllm:kv_cache_usage_perc`) and SGLang
//!   (`sglang:num_running_reqs`, `sglang:num_queue_reqs`, `sglang:token_usage`)
//!   export them; series of several models are summed.
//!
//! A server with neither (Ollama, LM Studio) reports nothing, and the
//! coordinator counts only its own requests, as before. Once a server has
//! answered that it offers neither, it is asked again only after
//! [`ASK_AGAIN_AFTER`] ([`LoadEndpoints`]), not on every heartbeat. The agent
//! (`--backend openai`) reads these on every heartbeat; the coordinator's probe
//! reads them for an OpenAI-style node added without an agent.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ServerLoad;
use openmetrics_parser::PrometheusValue;
use serde_json::Value;

/// How long an endpoint the server said it lacks is left alone before it is
/// asked again (the server may be restarted with it on).
pub const ASK_AGAIN_AFTER: Duration = Duration::from_secs(300);

/// Whether an HTTP status says the server has no such endpoint (llama.cpp
/// answers 501 for `/slots` and `/metrics` when they are off).
pub fn not_offered(status: u16) -> bool {
    matches!(status, 404 | 405 | 501)
}

/// The two places a server's load is read from, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// llama.cpp's `GET /slots`.
    Slots,
    /// Prometheus `GET /metrics`.
    Metrics,
}

impl Endpoint {
    /// The endpoint's path, relative to the server's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Slots => "slots",
            Endpoint::Metrics => "metrics",
        }
    }
}

/// Remembers which load endpoints a server lacks, so that it is not asked
/// for them on every heartbeat (a vLLM server would log a 404 for `/slots`
/// each time). A failed request (timeout, refused connection, 503 while a
/// model loads) proves nothing and changes nothing.
#[derive(Debug, Default)]
pub struct LoadEndpoints {
    /// Until when `/slots` and `/metrics` are not asked.
    absent_until: Mutex<[Option<Instant>; 2]>,
}

impl LoadEndpoints {
    /// Whether to ask the server for `endpoint` at `now`.
    pub fn worth_asking(&self, endpoint: Endpoint, now: Instant) -> bool {
        let absent_until = self.absent_until.lock().unwrap_or_else(|e| e.into_inner());
        absent_until[endpoint as usize].is_none_or(|until| now >= until)
    }

    /// Records what asking for `endpoint` at `now` found: whether the server
    /// answered that it has no such endpoint, or nothing the balancer knows there.
    pub fn record(&self, endpoint: Endpoint, absent: bool, now: Instant) {
        let mut absent_until = self.absent_until.lock().unwrap_or_else(|e| e.into_inner());
        absent_until[endpoint as usize] = absent.then(|| now + ASK_AGAIN_AFTER);
    }
}

/// Reads a server's load: `/slots`, else `/metrics`, each unless the server
/// said lately that it lacks it. `get` asks for a path relative to the
/// server's base URL and gives the answer's status and body, `None` when the
/// request failed.
pub async fn read<F, Fut, B>(endpoints: &LoadEndpoints, mut get: F) -> Option<ServerLoad>
where
    F: FnMut(&'static str) -> Fut,
    Fut: std::future::Future<Output = Option<(u16, B)>>,
    B: AsRef<[u8]>,
{
    let now = Instant::now();
    for endpoint in [Endpoint::Slots, Endpoint::Metrics] {
        if !endpoints.worth_asking(endpoint, now) {
            continue;
        }
        let Some((status, body)) = get(endpoint.path()).await else {
            continue;
        };
        let load = if (200..300).contains(&status) {
            let body = body.as_ref();
            match endpoint {
                Endpoint::Slots => serde_json::from_slice(body)
                    .ok()
                    .as_ref()
                    .and_then(from_slots),
                Endpoint::Metrics => std::str::from_utf8(body).ok().and_then(from_metrics),
            }
        } else if not_offered(status) {
            None
        } else {
            // Busy or broken right now: nothing learnt about the endpoint.
            continue;
        };
        endpoints.record(endpoint, load.is_none(), now);
        if load.is_some() {
            return load;
        }
    }
    None
}

const RUNNING: [&str; 3] = [
    "llamacpp:requests_processing",
    "vllm:num_requests_running",
    "sglang:num_running_reqs",
];
const WAITING: [&str; 3] = [
    "llamacpp:requests_deferred",
    "vllm:num_requests_waiting",
    "sglang:num_queue_reqs",
];
const KV_CACHE: [&str; 4] = [
    "llamacpp:kv_cache_usage_ratio",
    "vllm:gpu_cache_usage_perc",
    "vllm:kv_cache_usage_perc",
    "sglang:token_usage",
];

/// The load in llama.cpp's `/slots` answer; `None` when it is not a list of slots.
pub fn from_slots(body: &Value) -> Option<ServerLoad> {
    let slots = body.as_array()?;
    let busy = slots
        .iter()
        .filter(
            |slot| match slot.get("is_processing").and_then(Value::as_bool) {
                Some(processing) => processing,
                None => slot
                    .get("state")
                    .and_then(Value::as_u64)
                    .is_some_and(|s| s != 0),
            },
        )
        .count();
    Some(ServerLoad {
        slots_total: u32::try_from(slots.len()).ok(),
        requests_running: u32::try_from(busy).ok(),
        requests_waiting: None,
        kv_cache_usage: None,
        source: Some("/slots".into()),
    })
}

/// The load in a Prometheus text exposition; `None` when it has none of the known series.
pub fn from_metrics(text: &str) -> Option<ServerLoad> {
    let exposition = openmetrics_parser::prometheus::parse_prometheus(text).ok()?;
    let sum = |names: &[&str]| -> Option<f64> {
        let values: Vec<f64> = names
            .iter()
            .filter_map(|name| exposition.families.get(*name))
            .flat_map(|family| family.iter_samples())
            .filter_map(|sample| match &sample.value {
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => Some(n.as_f64()),
                PrometheusValue::Counter(c) => Some(c.value.as_f64()),
                _ => None,
            })
            .filter(|v| v.is_finite() && *v >= 0.0)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let count = |v: f64| u32::try_from(v.round() as u64).ok();
    let running = sum(&RUNNING).and_then(count);
    let waiting = sum(&WAITING).and_then(count);
    let kv = sum(&KV_CACHE).map(|v| v.clamp(0.0, 1.0) as f32);
    if running.is_none() && waiting.is_none() && kv.is_none() {
        return None;
    }
    Some(ServerLoad {
        slots_total: None,
        requests_running: running,
        requests_waiting: waiting,
        kv_cache_usage: kv,
        source: Some("/metrics".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_endpoint_a_server_lacks_is_asked_again_only_after_a_while() {
        let endpoints = LoadEndpoints::default();
        let start = Instant::now();
        assert!(endpoints.worth_asking(Endpoint::Slots, start));
        endpoints.record(Endpoint::Slots, true, start);
        let later = start + Duration::from_secs(10);
        assert!(!endpoints.worth_asking(Endpoint::Slots, later));
        assert!(endpoints.worth_asking(Endpoint::Metrics, later));
        assert!(endpoints.worth_asking(Endpoint::Slots, start + ASK_AGAIN_AFTER));
        // Found again (restarted with it on): asked every time.
        endpoints.record(Endpoint::Slots, false, start + ASK_AGAIN_AFTER);
        assert!(endpoints.worth_asking(Endpoint::Slots, start + ASK_AGAIN_AFTER));
        assert!(not_offered(404) && not_offered(501) && !not_offered(503) && !not_offered(200));
    }

    /// `read` against a server answering `answers` (path → status and body),
    /// three times; the paths it asked.
    fn asked_over_three_reads(answers: &[(&str, u16, &str)]) -> (Option<ServerLoad>, Vec<String>) {
        let endpoints = LoadEndpoints::default();
        let asked = std::cell::RefCell::new(Vec::new());
        let mut last = None;
        for _ in 0..3 {
            let get = |path: &'static str| {
                asked.borrow_mut().push(path.to_owned());
                let answer = answers
                    .iter()
                    .find(|(p, _, _)| *p == path)
                    .map(|(_, status, body)| (*status, body.as_bytes().to_vec()));
                std::future::ready(answer)
            };
            last = block_on(read(&endpoints, get));
        }
        (last, asked.into_inner())
    }

    /// Polls a future that never waits (the test's `get` answers at once).
    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => unreachable!("the test's answers are ready at once"),
        }
    }

    #[test]
    fn reading_skips_what_the_server_lacks_and_keeps_asking_what_it_has() {
        let metrics = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 2\n";
        // vLLM: no /slots, asked once; /metrics every time.
        let (load, asked) =
            asked_over_three_reads(&[("slots", 404, ""), ("metrics", 200, metrics)]);
        assert_eq!(load.and_then(|l| l.requests_running), Some(2));
        assert_eq!(asked, ["slots", "metrics", "metrics", "metrics"]);
        // llama.cpp with slots on: /slots every time, /metrics never.
        let slots = r#"[{"id": 0, "is_processing": true}]"#;
        let (load, asked) = asked_over_three_reads(&[("slots", 200, slots), ("metrics", 501, "")]);
        assert_eq!(load.and_then(|l| l.slots_total), Some(1));
        assert_eq!(asked, ["slots", "slots", "slots"]);
        // LM Studio: neither, each asked once.
        let (load, asked) =
            asked_over_three_reads(&[("slots", 404, "not found"), ("metrics", 404, "")]);
        assert_eq!(load, None);
        assert_eq!(asked, ["slots", "metrics"]);
        // A server busy loading (503) is asked again next time.
        let (_, asked) = asked_over_three_reads(&[("slots", 503, ""), ("metrics", 503, "")]);
        assert_eq!(asked.len(), 6);
    }

    #[test]
    fn slots_count_the_busy_ones_in_either_spelling() {
        let newer = json!([{"id": 0, "is_processing": true}, {"id": 1, "is_processing": false}]);
        let load = from_slots(&newer).unwrap();
        assert_eq!(
            (load.slots_total, load.requests_running),
            (Some(2), Some(1))
        );
        let older = json!([{"id": 0, "state": 1}, {"id": 1, "state": 0}, {"id": 2, "state": 0}]);
        assert_eq!(from_slots(&older).unwrap().requests_running, Some(1));
        assert!(from_slots(&json!({"error": "slots disabled"})).is_none());
    }

    #[test]
    fn metrics_of_llama_cpp_vllm_and_sglang_are_read() {
        let llama = "# HELP llamacpp:requests_processing Number of requests processing.\n\
            # TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 2\n\
            # TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 3\n\
            # TYPE llamacpp:kv_cache_usage_ratio gauge\nllamacpp:kv_cache_usage_ratio 0.25\n";
        let load = from_metrics(llama).unwrap();
        assert_eq!(
            (load.requests_running, load.requests_waiting),
            (Some(2), Some(3))
        );
        assert_eq!(load.kv_cache_usage, Some(0.25));
        assert_eq!(load.busy(), Some(5));
        let vllm = "# TYPE vllm:num_requests_running gauge\n\
            vllm:num_requests_running{model_name=\"a\"} 1.0\nvllm:num_requests_running{model_name=\"b\"} 4.0\n\
            # TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"a\"} 0.0\n";
        let load = from_metrics(vllm).unwrap();
        assert_eq!(
            (load.requests_running, load.requests_waiting),
            (Some(5), Some(0))
        );
        let sglang = "# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs{name=\"x\"} 7\n\
            # TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{name=\"x\"} 1\n";
        assert_eq!(from_metrics(sglang).unwrap().busy(), Some(8));
        assert!(
            from_metrics(
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12\n"
            )
            .is_none()
        );
        assert!(from_metrics("not prometheus {{{").is_none());
    }
}
