//! Running request statistics of one node (or one model on a node), as
//! `GET /api/agents` shows them.

use std::time::Duration;

use llm_router_common::node::RequestStats;

/// Weight of the newest request in the recent latency (about the last ten requests).
const RECENT_WEIGHT: f64 = 0.2;

/// Sums from which [`RequestStats`] are derived; updated under the stats lock.
#[derive(Debug, Default, Clone)]
pub struct Aggregate {
    total: u64,
    ok: u64,
    latency_sum_secs: f64,
    recent_latency_secs: Option<f64>,
    ttft_sum_secs: f64,
    ttft_count: u64,
    generated_tokens: u64,
    generation_secs: f64,
}

/// What one request adds to the statistics of the node that answered it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub ok: bool,
    pub duration: Duration,
    /// Time to first byte of a streamed answer.
    pub ttft: Option<Duration>,
    /// Completion tokens and the seconds spent generating them.
    pub generation: Option<(u64, f64)>,
}

impl Aggregate {
    /// Counts a request that failed on the node before anything reached the client.
    pub fn add_failed_attempt(&mut self) {
        self.total += 1;
    }

    pub fn add(&mut self, sample: &Sample) {
        self.total += 1;
        if !sample.ok {
            return;
        }
        self.ok += 1;
        let secs = sample.duration.as_secs_f64();
        self.latency_sum_secs += secs;
        self.recent_latency_secs = Some(match self.recent_latency_secs {
            Some(recent) => recent + RECENT_WEIGHT * (secs - recent),
            None => secs,
        });
        if let Some(ttft) = sample.ttft {
            self.ttft_sum_secs += ttft.as_secs_f64();
            self.ttft_count += 1;
        }
        if let Some((tokens, secs)) = sample.generation {
            self.generated_tokens += tokens;
            self.generation_secs += secs;
        }
    }

    pub fn view(&self) -> RequestStats {
        let ms = |secs: f64| secs * 1000.0;
        RequestStats {
            requests_total: self.total,
            requests_ok: self.ok,
            requests_failed: self.total - self.ok,
            avg_latency_ms: (self.ok > 0).then(|| ms(self.latency_sum_secs / self.ok as f64)),
            recent_latency_ms: self.recent_latency_secs.map(ms),
            avg_ttft_ms: (self.ttft_count > 0)
                .then(|| ms(self.ttft_sum_secs / self.ttft_count as f64)),
            tokens_per_second: (self.generation_secs > 0.0)
                .then(|| self.generated_tokens as f64 / self.generation_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> Sample {
        Sample {
            ok: true,
            duration: Duration::from_millis(ms),
            ttft: Some(Duration::from_millis(ms / 2)),
            generation: Some((10, ms as f64 / 1000.0)),
        }
    }

    #[test]
    fn empty_statistics_have_no_timings() {
        let view = Aggregate::default().view();
        assert_eq!(view, RequestStats::default());
    }

    #[test]
    fn averages_count_only_ok_requests() {
        let mut agg = Aggregate::default();
        agg.add(&ok(100));
        agg.add(&ok(300));
        agg.add(&Sample {
            ok: false,
            duration: Duration::from_secs(60),
            ttft: None,
            generation: None,
        });
        agg.add_failed_attempt();
        let view = agg.view();
        assert_eq!(view.requests_total, 4);
        assert_eq!(view.requests_ok, 2);
        assert_eq!(view.requests_failed, 2);
        assert!((view.avg_latency_ms.unwrap() - 200.0).abs() < 1e-9);
        assert!((view.avg_ttft_ms.unwrap() - 100.0).abs() < 1e-9);
        // 20 tokens in 0.4 s.
        assert!((view.tokens_per_second.unwrap() - 50.0).abs() < 1e-9);
        // 100, then 100 + 0.2 * (300 - 100).
        assert!((view.recent_latency_ms.unwrap() - 140.0).abs() < 1e-9);
    }
}
