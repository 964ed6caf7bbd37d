//! GitHub's primary ("core") rate limit: an hourly quota per credential.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;

/// Requests per hour for unauthenticated callers (GitHub's figure).
pub(crate) const ANONYMOUS_LIMIT: u32 = 60;
/// Default requests per hour for authenticated callers (GitHub's figure for users and apps).
pub(crate) const DEFAULT_LIMIT: u32 = 5000;

/// What the `x-ratelimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateStatus {
    pub limit: u32,
    pub used: u32,
    /// Unix seconds at which the window resets.
    pub reset: i64,
}

impl RateStatus {
    pub(crate) fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    used: u32,
    resets_at: DateTime<Utc>,
}

#[derive(Debug)]
pub(crate) struct RateLimits {
    /// The authenticated quota (`FakeGitHub::set_rate_limit`).
    pub authenticated_limit: u32,
    windows: HashMap<String, Window>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            authenticated_limit: DEFAULT_LIMIT,
            windows: HashMap::new(),
        }
    }
}

impl RateLimits {
    fn window(&mut self, bucket: &str, now: DateTime<Utc>) -> &mut Window {
        let window = self.windows.entry(bucket.to_string()).or_insert(Window {
            used: 0,
            resets_at: now + TimeDelta::hours(1),
        });
        if window.resets_at <= now {
            *window = Window {
                used: 0,
                resets_at: now + TimeDelta::hours(1),
            };
        }
        window
    }

    /// The bucket's current state, without counting a request.
    pub(crate) fn status(&mut self, bucket: &str, limit: u32, now: DateTime<Utc>) -> RateStatus {
        let window = self.window(bucket, now);
        RateStatus {
            limit,
            used: window.used,
            reset: window.resets_at.timestamp(),
        }
    }

    /// Counts one request; `Err` (nothing counted) when the quota is already used up.
    pub(crate) fn consume(
        &mut self,
        bucket: &str,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<RateStatus, RateStatus> {
        let window = self.window(bucket, now);
        let exhausted = window.used >= limit;
        if !exhausted {
            window.used += 1;
        }
        let status = RateStatus {
            limit,
            used: window.used,
            reset: window.resets_at.timestamp(),
        };
        if exhausted { Err(status) } else { Ok(status) }
    }

    /// Gives back a counted request (a 304 answer does not count on GitHub).
    pub(crate) fn refund(&mut self, bucket: &str, now: DateTime<Utc>) {
        let window = self.window(bucket, now);
        window.used = window.used.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_runs_out_and_resets_after_the_hour() {
        let mut limits = RateLimits::default();
        let t0 = Utc::now();
        assert_eq!(limits.consume("a", 2, t0).map(|s| s.remaining()), Ok(1));
        assert_eq!(limits.consume("a", 2, t0).map(|s| s.remaining()), Ok(0));
        assert!(limits.consume("a", 2, t0).is_err());
        assert_eq!(limits.consume("b", 2, t0).map(|s| s.used), Ok(1));
        let later = t0 + TimeDelta::minutes(61);
        assert_eq!(limits.consume("a", 2, later).map(|s| s.used), Ok(1));
    }
}
