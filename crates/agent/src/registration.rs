//! The registration retry loop: attempt, and on a failure that retrying can fix, wait
//! [`register_backoff`] and try again, up to a limit.

use std::future::Future;
use std::time::Duration;

use crate::backoff::register_backoff;
use crate::coordinator::CoordinatorError;
use crate::identity::AdvertiseIpError;

/// Why one registration attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// The coordinator's host could not be resolved or routed to (DNS not up yet, no network).
    #[error("cannot find this machine's address towards the coordinator: {0}")]
    AdvertiseIp(#[from] AdvertiseIpError),
}

impl RegisterError {
    /// Whether a later attempt can succeed (see [`CoordinatorError::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegisterError::Coordinator(error) => error.is_retryable(),
            RegisterError::AdvertiseIp(_) => true,
        }
    }
}

/// How the retry loop ended without a registration.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationFailure {
    #[error("the coordinator refused the registration and retrying cannot help: {0}{hint}", hint = refusal_hint(.0))]
    Refused(RegisterError),
    #[error(
        "gave up after {attempts} registration attempts (COORDINATOR_REGISTER_MAX_RETRIES); last error: {last}"
    )]
    GaveUp { attempts: u32, last: RegisterError },
}

/// What the operator can do about a refusal, for the statuses that have a known cause.
fn refusal_hint(error: &RegisterError) -> &'static str {
    let RegisterError::Coordinator(CoordinatorError::Rejected { status, .. }) = error else {
        return "";
    };
    match status.as_u16() {
        401 => {
            ". The agent's node token (--node-token, LLM_ROUTER_NODE_TOKEN or node_token in \
             agent-settings.json) is missing or not one the coordinator accepts: use the \
             coordinator's own (its --node-token, or the token it printed at its first start, \
             kept in the file node-token in its data folder)"
        }
        403 | 409 => {
            ". This machine's node is registered with a credential this agent does not hold: \
             restore its agent-node.json, or delete the node on the dashboard so that it \
             registers anew"
        }
        _ => "",
    }
}

/// Calls `attempt` (with the 1-based attempt number) until it succeeds, fails for good,
/// or `max_attempts` attempts failed (`0`: no limit). Between attempts it waits
/// `register_backoff(base, failures)` on tokio's clock. Each failure that is retried is
/// logged with its reason; the one that ends the loop is returned.
pub async fn register_with_retry<T, F, Fut>(
    base: Duration,
    max_attempts: u32,
    mut attempt: F,
) -> Result<T, RegistrationFailure>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, RegisterError>>,
{
    let mut failures: u32 = 0;
    loop {
        let number = failures.saturating_add(1);
        let error = match attempt(number).await {
            Ok(registered) => return Ok(registered),
            Err(error) => error,
        };
        // The final failures are not logged here: the caller gets them as the error.
        if !error.is_retryable() {
            return Err(RegistrationFailure::Refused(error));
        }
        failures = number;
        if max_attempts > 0 && failures >= max_attempts {
            return Err(RegistrationFailure::GaveUp {
                attempts: failures,
                last: error,
            });
        }
        let delay = register_backoff(base, failures);
        tracing::warn!(
            attempt = number,
            retry_in_secs = delay.as_secs_f64(),
            %error,
            "registration failed; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use reqwest::{StatusCode, Url};
    use tokio::time::Instant;

    use super::*;

    fn rejected(status: u16) -> RegisterError {
        RegisterError::Coordinator(CoordinatorError::Rejected {
            url: Url::parse("http://c/api/agents/register").unwrap(),
            status: StatusCode::from_u16(status).unwrap(),
            message: format!("status {status}"),
        })
    }

    /// When each attempt started, on tokio's clock.
    type AttemptTimes = Arc<Mutex<Vec<Instant>>>;

    /// An attempt function that fails with the given statuses in turn, then succeeds,
    /// recording on tokio's (paused) clock when each attempt started.
    fn scripted(
        failures: Vec<u16>,
    ) -> (
        AttemptTimes,
        impl FnMut(u32) -> std::future::Ready<Result<u32, RegisterError>>,
    ) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        let attempt = move |number: u32| {
            recorded.lock().unwrap().push(Instant::now());
            let outcome = match failures.get(number as usize - 1) {
                Some(status) => Err(rejected(*status)),
                None => Ok(number),
            };
            std::future::ready(outcome)
        };
        (calls, attempt)
    }

    fn gaps(calls: &[Instant]) -> Vec<Duration> {
        calls.windows(2).map(|pair| pair[1] - pair[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_the_backoff_schedule_between_attempts() {
        let (calls, attempt) = scripted(vec![503, 502, 500, 429, 404]);
        let registered_on = register_with_retry(Duration::from_secs(5), 0, attempt)
            .await
            .unwrap();
        assert_eq!(registered_on, 6);
        assert_eq!(
            gaps(&calls.lock().unwrap()),
            [5, 10, 20, 40, 60].map(Duration::from_secs).to_vec()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_client_error_stops_after_one_attempt() {
        let (calls, attempt) = scripted(vec![400]);
        let started = Instant::now();
        let failure = register_with_retry(Duration::from_secs(5), 0, attempt)
            .await
            .unwrap_err();
        assert!(
            matches!(failure, RegistrationFailure::Refused(_)),
            "{failure}"
        );
        assert!(failure.to_string().contains("status 400"), "{failure}");
        assert_eq!(calls.lock().unwrap().len(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn max_attempts_limits_the_number_of_attempts() {
        let (calls, attempt) = scripted(vec![503; 10]);
        let failure = register_with_retry(Duration::from_secs(1), 3, attempt)
            .await
            .unwrap_err();
        assert!(
            matches!(failure, RegistrationFailure::GaveUp { attempts: 3, .. }),
            "{failure}"
        );
        assert_eq!(calls.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_max_attempts_retries_forever() {
        // 40 failures take far longer than any limit a test would pick; paused time makes it instant.
        let (calls, attempt) = scripted(vec![503; 40]);
        let registered_on = register_with_retry(Duration::from_secs(5), 0, attempt)
            .await
            .unwrap();
        assert_eq!(registered_on, 41);
        assert_eq!(calls.lock().unwrap().len(), 41);
    }

    #[test]
    fn an_unresolvable_coordinator_is_worth_retrying() {
        let error = RegisterError::AdvertiseIp(AdvertiseIpError::NoAddress("c".to_owned()));
        assert!(error.is_retryable());
        assert!(!rejected(401).is_retryable());
    }
}
