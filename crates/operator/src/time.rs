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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_to_the_nanosecond() {
        let t = DateTime::from_timestamp(1_800_000_123, 456_789).unwrap();
        assert_eq!(from_k8s(&to_k8s(t)), t);
    }
}
