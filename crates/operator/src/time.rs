//! Conversions between chrono (the GitHub client's clock) and Kubernetes' `Time` (jiff).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub fn to_k8s(t: DateTime<Utc>) -> Time {
    Time(
        Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

pub fn from_k8s(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

/// First wait for something the operator does not watch (a Secret, another object).
pub const MIN_PENDING_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest wait between two looks.
pub const MAX_PENDING_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

/// Backoff while waiting for the same thing since `since` (a condition's lastTransitionTime):
/// as long as it already waited, so the wait doubles, between 1 s and 30 s.
pub fn pending_backoff(since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> std::time::Duration {
    since
        .and_then(|t| (now - t).to_std().ok())
        .unwrap_or_default()
        .clamp(MIN_PENDING_BACKOFF, MAX_PENDING_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_backoff_doubles_with_the_time_waited_between_1s_and_30s() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |s| t0 + chrono::Duration::seconds(s);
        let secs = std::time::Duration::from_secs;
        assert_eq!(pending_backoff(Some(t0), at(0)), secs(1));
        assert_eq!(pending_backoff(Some(t0), at(4)), secs(4));
        assert_eq!(pending_backoff(Some(t0), at(100)), secs(30));
        assert_eq!(pending_backoff(None, at(0)), secs(1));
    }

    #[test]
    fn round_trips_to_the_nanosecond() {
        let t = DateTime::from_timestamp(1_800_000_123, 456_789).unwrap();
        assert_eq!(from_k8s(&to_k8s(t)), t);
    }
}
