//! One verdict per provider answer, made the moment the answer arrives (in the webhook actor): what the
//! message becomes, and what the send says about the provider. The flush (`NextState`), the history
//! (`Attempt`), the counts, the logs and the flow control all read this verdict; nothing else matches on
//! the raw `Outcome` or draws a second retry delay for it, so a retried write keeps the delay first drawn.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::retry::{RetryDecision, RetryPolicy};
use crate::{
    domain::{Attempt, ProviderMessageId},
    provider::Outcome,
    store::{Claim, NextState},
};

/// What one POST came to, for the message and for the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The provider has the message (2xx). `body_problem` says why its id is missing, when it is.
    Sent {
        provider_message_id: Option<ProviderMessageId>,
        sent_at: DateTime<Utc>,
        body_problem: Option<String>,
    },
    /// A transient failure (408, 5xx, timeout, no answer): due again after `delay`; the attempt counts.
    RetryIn {
        delay: Duration,
        reason: String,
        status: Option<u16>,
    },
    /// A transient failure on the last attempt `MAX_RETRIES` allows: the message is a dead letter.
    GaveUp { reason: String, status: Option<u16> },
    /// A 4xx other than 429: this request will never succeed; the message fails at once.
    Rejected { reason: String, status: u16 },
    /// A 429: the provider throttles our pace, not this message. It goes back to `pending` without
    /// spending an attempt, due after `retry_after` when given, and the cluster pauses.
    Throttled {
        retry_after: Option<Duration>,
        reason: String,
    },
    /// A 401 or 403: the provider refuses our credentials, a fault of the configuration, not of the
    /// message. It goes back to `pending` in its place without spending an attempt, and this instance
    /// stops sending until an operator starts it again or it restarts with a key that works.
    CredentialsRefused { reason: String, status: u16 },
}

/// What a finished send tells the flow control of its instance, beside freeing its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendSignal {
    /// The provider answered for the message: accepted or rejected.
    Answered,
    /// The provider failed (5xx, timeout, no answer): counts towards opening the circuit breaker.
    ProviderFailed,
    /// The provider throttled us (429): pause, for `Retry-After` when given.
    Throttled { retry_after: Option<Duration> },
    /// The provider refused our credentials (401, 403): stop sending.
    CredentialsRefused { status: u16 },
}

impl Verdict {
    /// The verdict on `outcome`, the answer to `claim`'s POST. `jitter`, a draw from `[0, 1)`, spreads
    /// the retry delays of messages that failed together.
    pub fn of(outcome: &Outcome, claim: &Claim, policy: &RetryPolicy, jitter: f64) -> Self {
        match outcome {
            Outcome::Accepted {
                provider_message_id,
                body_problem,
                sent_at,
                ..
            } => Self::Sent {
                provider_message_id: provider_message_id.clone(),
                sent_at: *sent_at,
                body_problem: body_problem.clone(),
            },
            Outcome::RetryLater {
                reason,
                status,
                retry_after,
            } => match policy.decide(claim.attempt, *retry_after, jitter) {
                RetryDecision::RetryIn(delay) => Self::RetryIn {
                    delay,
                    reason: reason.clone(),
                    status: *status,
                },
                RetryDecision::GiveUp => Self::GaveUp {
                    reason: format!("gave up after {} attempts: {reason}", claim.attempt),
                    status: *status,
                },
            },
            Outcome::Throttled { reason, retry_after } => Self::Throttled {
                // A provider asking for a day's pause is obeyed only as long as any retry waits. One asking
                // for none (`0`, or a date already past on our clock) gave no usable advice: a 429 still
                // pauses the cluster as without the header.
                retry_after: retry_after
                    .filter(|after| !after.is_zero())
                    .map(|after| after.min(policy.backoff_max)),
                reason: reason.clone(),
            },
            Outcome::Unauthorized { reason, status } => Self::CredentialsRefused {
                reason: reason.clone(),
                status: *status,
            },
            Outcome::Rejected { reason, status } => Self::Rejected {
                reason: reason.clone(),
                status: *status,
            },
        }
    }

    /// The transition the flush writes under the claim.
    pub fn next_state(&self) -> NextState {
        match self {
            Self::Sent {
                provider_message_id,
                sent_at,
                ..
            } => NextState::Sent {
                provider_message_id: provider_message_id.clone(),
                sent_at: *sent_at,
            },
            Self::RetryIn { delay, reason, .. } => NextState::RetryLater {
                delay: *delay,
                error: reason.clone(),
            },
            Self::GaveUp { reason, .. } | Self::Rejected { reason, .. } => NextState::Failed { error: reason.clone() },
            Self::Throttled { retry_after, reason } => NextState::PutBack {
                after: *retry_after,
                error: Some(reason.clone()),
            },
            Self::CredentialsRefused { reason, .. } => NextState::PutBack {
                after: None,
                error: Some(reason.clone()),
            },
        }
    }

    /// What the send tells the flow control.
    pub fn signal(&self) -> SendSignal {
        match self {
            Self::Sent { .. } | Self::Rejected { .. } => SendSignal::Answered,
            Self::RetryIn { .. } | Self::GaveUp { .. } => SendSignal::ProviderFailed,
            Self::Throttled { retry_after, .. } => SendSignal::Throttled {
                retry_after: *retry_after,
            },
            Self::CredentialsRefused { status, .. } => SendSignal::CredentialsRefused { status: *status },
        }
    }

    /// The message's history entry for this POST: the provider's answer as it came (`outcome`), with the
    /// verdict's reason.
    pub fn attempt(&self, outcome: &Outcome, claim: &Claim, started_at: DateTime<Utc>, duration: Duration) -> Attempt {
        let (error, provider_message_id) = match self {
            Self::Sent {
                provider_message_id,
                body_problem,
                ..
            } => (
                body_problem.clone(),
                provider_message_id.as_ref().map(ToString::to_string),
            ),
            Self::RetryIn { reason, .. }
            | Self::GaveUp { reason, .. }
            | Self::Rejected { reason, .. }
            | Self::Throttled { reason, .. }
            | Self::CredentialsRefused { reason, .. } => (Some(reason.clone()), None),
        };
        Attempt {
            attempt: claim.attempt,
            started_at,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            http_status: outcome.http_status(),
            outcome: outcome.label().to_owned(),
            error,
            provider_message_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use uuid::Uuid;

    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(600),
        max_attempts: NonZeroU32::new(3).unwrap(),
    };

    fn claim(attempt: u32) -> Claim {
        Claim {
            message_id: Uuid::new_v4(),
            token: Uuid::new_v4(),
            attempt,
        }
    }

    fn failed(status: Option<u16>) -> Outcome {
        Outcome::RetryLater {
            reason: "provider answered 503".to_owned(),
            status,
            retry_after: None,
        }
    }

    #[test]
    fn a_transient_failure_retries_until_the_attempts_are_spent() {
        let verdict = Verdict::of(&failed(Some(503)), &claim(1), &POLICY, 0.0);
        assert!(matches!(verdict, Verdict::RetryIn { delay, .. } if delay == Duration::from_secs(1)));
        assert!(matches!(verdict.next_state(), NextState::RetryLater { .. }));
        assert_eq!(verdict.signal(), SendSignal::ProviderFailed);

        let verdict = Verdict::of(&failed(None), &claim(3), &POLICY, 0.0);
        let NextState::Failed { error } = verdict.next_state() else {
            panic!("{verdict:?}")
        };
        assert!(
            error.starts_with("gave up after 3 attempts: provider answered 503"),
            "{error}"
        );
        assert_eq!(verdict.signal(), SendSignal::ProviderFailed);
    }

    #[test]
    fn a_429_puts_the_message_back_uncounted_and_pauses_at_most_as_long_as_a_retry_waits() {
        let outcome = Outcome::Throttled {
            reason: "provider answered 429 Too Many Requests: slow down".to_owned(),
            retry_after: Some(Duration::from_secs(86_400)),
        };
        // On the last attempt too: a throttle is not the message's failure.
        let verdict = Verdict::of(&outcome, &claim(3), &POLICY, 0.5);
        assert_eq!(
            verdict.next_state(),
            NextState::PutBack {
                after: Some(POLICY.backoff_max),
                error: Some("provider answered 429 Too Many Requests: slow down".to_owned()),
            }
        );
        assert_eq!(
            verdict.signal(),
            SendSignal::Throttled {
                retry_after: Some(POLICY.backoff_max)
            }
        );
        let attempt = verdict.attempt(&outcome, &claim(3), Utc::now(), Duration::from_millis(12));
        assert_eq!(
            (attempt.http_status, attempt.outcome.as_str()),
            (Some(429), "throttled")
        );
    }

    #[test]
    fn a_429_asking_for_no_pause_pauses_as_one_without_the_header() {
        let outcome = Outcome::Throttled {
            reason: "provider answered 429 Too Many Requests".to_owned(),
            retry_after: Some(Duration::ZERO),
        };
        let verdict = Verdict::of(&outcome, &claim(1), &POLICY, 0.5);
        assert_eq!(verdict.signal(), SendSignal::Throttled { retry_after: None });
    }

    #[test]
    fn refused_credentials_put_the_message_back_in_its_place_uncounted() {
        let outcome = Outcome::Unauthorized {
            reason: "provider answered 401 Unauthorized: bad key".to_owned(),
            status: 401,
        };
        let verdict = Verdict::of(&outcome, &claim(3), &POLICY, 0.5);
        assert_eq!(
            verdict.next_state(),
            NextState::PutBack {
                after: None,
                error: Some("provider answered 401 Unauthorized: bad key".to_owned()),
            }
        );
        assert_eq!(verdict.signal(), SendSignal::CredentialsRefused { status: 401 });
    }

    #[test]
    fn an_acceptance_and_a_rejection_are_final_and_say_nothing_against_the_provider() {
        let accepted = Outcome::Accepted {
            status: 202,
            provider_message_id: ProviderMessageId::parse("abc").ok(),
            body_problem: None,
            sent_at: Utc::now(),
        };
        let verdict = Verdict::of(&accepted, &claim(1), &POLICY, 0.5);
        assert!(matches!(verdict.next_state(), NextState::Sent { .. }));
        assert_eq!(verdict.signal(), SendSignal::Answered);
        let attempt = verdict.attempt(&accepted, &claim(1), Utc::now(), Duration::ZERO);
        assert_eq!(attempt.provider_message_id.as_deref(), Some("abc"));
        assert_eq!(attempt.error, None);

        let rejected = Outcome::Rejected {
            reason: "provider answered 400 Bad Request: bad number".to_owned(),
            status: 400,
        };
        let verdict = Verdict::of(&rejected, &claim(1), &POLICY, 0.5);
        assert!(matches!(verdict.next_state(), NextState::Failed { .. }));
        assert_eq!(verdict.signal(), SendSignal::Answered);
    }
}
