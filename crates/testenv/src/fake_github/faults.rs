//! Fault injection: what a test can make the fake do to the next matching requests.

use std::collections::VecDeque;
use std::time::Duration;

/// A fault applied to the next `times` requests that match `method` and `path_contains`.
///
/// Faults are consulted in the order they were injected; each request consumes at most one
/// fault, the earliest-injected one that matches. A fault with `times == 0` never fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// HTTP method to match (case-insensitive), any method when `None`.
    pub method: Option<String>,
    /// Substring of the request path (without the query) to match, any path when `None`.
    pub path_contains: Option<String>,
    /// How many matching requests this fault affects.
    pub times: u32,
    pub kind: FaultKind,
}

/// What happens to a request hit by a [`Fault`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status (meant for 5xx) and a GitHub-like JSON body; nothing is applied.
    Status(u16),
    /// Wait this long, then serve the request normally.
    Latency(Duration),
    /// The primary rate limit: 403, `x-ratelimit-remaining: 0`, `x-ratelimit-reset` = now +
    /// `reset_in`; nothing is applied.
    PrimaryRateLimit { reset_in: Duration },
    /// A secondary rate limit: 403 with `retry-after`; nothing is applied.
    SecondaryRateLimit { retry_after: Duration },
    /// Apply the request (and run the `on_write` hooks), then close the connection without
    /// sending a response: the client sees a connection error although the write happened.
    DropAfterApply,
    /// Close the connection without applying the request or sending a response.
    DropBeforeApply,
}

impl Fault {
    /// A fault hitting the next request, whatever its method and path.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            method: None,
            path_contains: None,
            times: 1,
            kind,
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_string());
        self
    }

    /// Only requests whose path contains this text.
    pub fn path_contains(mut self, text: &str) -> Self {
        self.path_contains = Some(text.to_string());
        self
    }

    /// Hit the next `times` matching requests instead of one.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.times > 0
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|text| path.contains(text))
    }
}

/// Injected faults in injection order.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    faults: VecDeque<Fault>,
}

impl FaultQueue {
    pub(crate) fn push(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.faults.push_back(fault);
        }
    }

    /// Consumes one use of the earliest fault matching the request.
    pub(crate) fn take(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let index = self.faults.iter().position(|f| f.matches(method, path))?;
        let fault = self.faults.get_mut(index)?;
        fault.times -= 1;
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_consumed_in_injection_order_and_only_when_matching() {
        let mut queue = FaultQueue::default();
        queue.push(
            Fault::new(FaultKind::Status(502))
                .method("post")
                .path_contains("/issues")
                .times(2),
        );
        queue.push(Fault::new(FaultKind::DropBeforeApply));
        queue.push(Fault::new(FaultKind::Status(500)).times(0));

        assert_eq!(
            queue.take("POST", "/repos/o/r/issues"),
            Some(FaultKind::Status(502))
        );
        assert_eq!(
            queue.take("GET", "/repos/o/r/issues"),
            Some(FaultKind::DropBeforeApply)
        );
        assert_eq!(
            queue.take("POST", "/repos/o/r/issues"),
            Some(FaultKind::Status(502))
        );
        assert_eq!(queue.take("POST", "/repos/o/r/issues"), None);
    }
}
