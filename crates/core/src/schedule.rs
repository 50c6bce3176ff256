//! When a source syncs next: its automatic-sync slot, and the retries after a failure
//! (Entra provisioning's quarantine and Oban's backoff are the models). Pure: the caller
//! hands in the random fraction that spreads sources over time.

/// A source that failed this many runs in a row needs attention.
pub const ATTENTION_AFTER: u32 = 3;

/// A source that needs attention is still tried once a day, until it succeeds.
pub const ATTENTION_RETRY_SECS: u64 = 24 * 60 * 60;

/// The first retry after a failure; each further one waits twice as long.
pub const FIRST_RETRY_SECS: u64 = 60;

/// Seconds to the next automatic slot: the interval plus a jitter of up to 10 % of it, so
/// that sources connected at the same moment do not all run at the same moment.
/// `fraction` is a random number in [0, 1).
pub fn next_slot(interval_secs: u64, fraction: f64) -> u64 {
    interval_secs + jitter(interval_secs, fraction)
}

fn jitter(span: u64, fraction: f64) -> u64 {
    let fraction = fraction.clamp(0.0, 1.0);
    (span as f64 * 0.1 * fraction) as u64
}

/// What happens to a source after a failed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterFailure {
    /// Seconds until it is tried again; `None` when it has no automatic sync.
    pub retry_in: Option<u64>,
    /// It is now "needs attention".
    pub needs_attention: bool,
}

/// After the `failures`-th failure in a row. `interval_secs` is the automatic-sync interval
/// (`None` without automatic sync). `at_once` is for failures no retry mends (consent
/// revoked, a permission missing, a tenant that suddenly returns nobody): attention at once.
pub fn after_failure(
    failures: u32,
    interval_secs: Option<u64>,
    at_once: bool,
    fraction: f64,
) -> AfterFailure {
    let needs_attention = at_once || failures >= ATTENTION_AFTER;
    let retry_in = interval_secs.map(|interval| {
        if needs_attention {
            ATTENTION_RETRY_SECS + jitter(ATTENTION_RETRY_SECS, fraction)
        } else {
            let shift = failures.saturating_sub(1).min(20);
            let backoff = FIRST_RETRY_SECS.saturating_mul(1 << shift).min(interval);
            backoff + jitter(backoff, fraction)
        }
    });
    AfterFailure {
        retry_in,
        needs_attention,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_the_interval_plus_at_most_ten_percent() {
        assert_eq!(next_slot(3600, 0.0), 3600);
        assert_eq!(next_slot(3600, 0.5), 3780);
        assert!(next_slot(3600, 0.999_999) < 3960);
    }

    #[test]
    fn failures_back_off_then_need_attention_and_retry_daily() {
        let hour = Some(3600);
        assert_eq!(after_failure(1, hour, false, 0.0).retry_in, Some(60));
        assert_eq!(after_failure(2, hour, false, 0.0).retry_in, Some(120));
        assert!(!after_failure(2, hour, false, 0.0).needs_attention);
        let third = after_failure(3, hour, false, 0.0);
        assert!(third.needs_attention);
        assert_eq!(third.retry_in, Some(ATTENTION_RETRY_SECS));
        // The backoff never waits longer than the interval.
        assert_eq!(after_failure(2, Some(90), false, 0.0).retry_in, Some(90));
    }

    #[test]
    fn a_revoked_consent_needs_attention_at_once_and_manual_sources_are_not_retried() {
        assert!(after_failure(1, Some(3600), true, 0.0).needs_attention);
        let manual = after_failure(5, None, false, 0.0);
        assert_eq!(manual.retry_in, None);
        assert!(manual.needs_attention);
    }
}
