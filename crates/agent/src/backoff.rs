//! The registration retry schedule: a pure function of the attempt number, so it is tested without a clock.

use std::time::Duration;

/// Longest wait between two registration attempts, unless the configured base is longer.
///
/// One minute keeps a machine that boots before its coordinator from hammering it, while
/// still joining within a minute of the coordinator coming up.
pub const MAX_REGISTER_BACKOFF: Duration = Duration::from_secs(60);

/// Wait before retry number `failures` (1 after the first failed attempt): `base`, then
/// doubling each time, capped at [`MAX_REGISTER_BACKOFF`] (or at `base` itself when the
/// operator configured a base longer than the cap).
///
/// With the default base of 5 s: 5, 10, 20, 40, 60, 60, … seconds.
pub fn register_backoff(base: Duration, failures: u32) -> Duration {
    let cap = base.max(MAX_REGISTER_BACKOFF);
    let doublings = failures.saturating_sub(1).min(31);
    base.checked_mul(1u32 << doublings)
        .map_or(cap, |delay| delay.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_one_minute() {
        let schedule: Vec<Duration> = (1..=8).map(|n| register_backoff(secs(5), n)).collect();
        assert_eq!(schedule, [5, 10, 20, 40, 60, 60, 60, 60].map(secs).to_vec());
    }

    #[test]
    fn backoff_with_a_base_above_the_cap_stays_at_the_base() {
        assert_eq!(register_backoff(secs(90), 1), secs(90));
        assert_eq!(register_backoff(secs(90), 5), secs(90));
    }

    #[test]
    fn backoff_never_overflows_after_many_failures() {
        assert_eq!(register_backoff(secs(5), u32::MAX), secs(60));
        assert_eq!(register_backoff(Duration::MAX, 40), Duration::MAX);
    }

    #[test]
    fn backoff_treats_attempt_zero_like_the_first_failure() {
        assert_eq!(register_backoff(secs(5), 0), secs(5));
    }
}
