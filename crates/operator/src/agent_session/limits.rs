//! What an agent may send the operator (DESIGN §7.3: "entries, bytes, lines and time per
//! session"), and the one memory budget every session's answers are counted against.
//!
//! An agent is a program the session's user controls. Whatever it answers, it costs the
//! operator at most:
//! - time: every request has one deadline for connect, headers and the whole body; an event of
//!   the stream must be complete within the same deadline once its first byte arrived;
//! - memory: a body of at most [`AgentLimits::max_body`] bytes and [`AgentLimits::max_messages`]
//!   entries, an event (and so a line) of at most [`AgentLimits::max_event`] bytes, all held
//!   only while the process-wide [`MemoryBudget`] admits them;
//! - CPU: its event stream is read at [`AgentLimits::stream_rate`] bytes a second at most
//!   (bursts of [`AgentLimits::stream_burst`]); beyond that the operator reads slower, and TCP
//!   slows the agent down.
//!
//! An answer over a limit is not buffered: the request fails with a reason the session's
//! `AgentReachable` condition shows, and it is retried with the usual backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Deadline of a GET (connect, headers, the whole body) and of an unfinished event.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of `POST /message`: agentapi answers once the agent started on the message.
pub const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-agent caps and deadlines; the defaults are what the operator runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentLimits {
    /// Largest response body of any request (`/messages` of a long conversation).
    pub max_body: usize,
    /// Most messages a conversation may have (`/messages` entries, user messages on the
    /// stream): the operator keeps 16 bytes per user message.
    pub max_messages: usize,
    /// Largest server-sent event (its data lines joined), hence also the longest line.
    pub max_event: usize,
    /// Deadline of a GET: connect, response headers and the whole body; also how long an event
    /// of the stream may stay unfinished.
    pub request_timeout: Duration,
    /// Deadline of `POST /message` (agentapi answers once the agent started on the message).
    pub post_timeout: Duration,
    /// Bytes per second the event stream is read at, at most.
    pub stream_rate: usize,
    /// Bytes the event stream may read at once above its rate (a replay of the conversation).
    pub stream_burst: usize,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            max_body: 8 * MIB,
            max_messages: 10_000,
            max_event: MIB,
            request_timeout: REQUEST_TIMEOUT,
            post_timeout: POST_TIMEOUT,
            stream_rate: 2 * MIB,
            stream_burst: 8 * MIB,
        }
    }
}

/// Bytes of agent answers all sessions may hold at once (bodies being read, events being
/// assembled). Sized under the chart's memory limit (256 MiB) with room for the caches.
pub const DEFAULT_BUDGET: usize = 64 * MIB;
/// An answer holding at most this much counts as small: small answers may use the budget's
/// last [`RESERVE_DIVISOR`]th, so large ones (a flood) can never starve ordinary agents.
pub const SMALL_ANSWER: usize = 64 * KIB;
/// The share of the budget kept for small answers: 1/8.
pub const RESERVE_DIVISOR: usize = 8;

/// Whether an answer holding `held` bytes may take `want` more, when every answer together
/// holds `in_use` of `total`: never over the total, and past `total - total/8` only while the
/// answer stays small.
pub fn admits(total: usize, in_use: usize, held: usize, want: usize) -> bool {
    let Some(after) = in_use.checked_add(want) else {
        return false;
    };
    if after > total {
        return false;
    }
    let small = held.saturating_add(want) <= SMALL_ANSWER;
    small || after <= total - total / RESERVE_DIVISOR
}

/// The process-wide byte budget of agent answers (a semaphore of bytes that never waits: an
/// answer it cannot admit fails at once and is retried later, so no session queues behind a
/// flood). Clones share it.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    total: usize,
    in_use: Arc<AtomicUsize>,
}

impl MemoryBudget {
    pub fn new(total: usize) -> Self {
        Self {
            total,
            in_use: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes held now, over every session.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// An empty holding; it grows with [`Held::resize`] and gives its bytes back when dropped.
    pub fn hold(&self) -> Held {
        Held {
            budget: self.clone(),
            bytes: 0,
        }
    }

    fn take(&self, held: usize, want: usize) -> bool {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_use| {
                admits(self.total, in_use, held, want).then(|| in_use + want)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.in_use.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET)
    }
}

/// The budget refused an answer more bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget {
    pub total: usize,
}

/// Bytes one answer holds of the [`MemoryBudget`].
#[derive(Debug)]
pub struct Held {
    budget: MemoryBudget,
    bytes: usize,
}

impl Held {
    /// Holds `bytes` from now on (more or fewer than before).
    pub fn resize(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes > self.bytes {
            if !self.budget.take(self.bytes, bytes - self.bytes) {
                return Err(OverBudget {
                    total: self.budget.total,
                });
            }
        } else {
            self.budget.give(self.bytes - bytes);
        }
        self.bytes = bytes;
        Ok(())
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

/// A token bucket of bytes: how long a reader must pause before it reads on, having read `n`
/// bytes at `now_secs` (seconds on any monotonic clock).
#[derive(Clone, Debug, PartialEq)]
pub struct ByteRate {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: f64,
}

impl ByteRate {
    /// Full at `now_secs`.
    pub fn new(rate: usize, burst: usize, now_secs: f64) -> Self {
        let burst = burst.max(1) as f64;
        Self {
            rate: rate.max(1) as f64,
            burst,
            tokens: burst,
            at: now_secs,
        }
    }

    /// Takes `n` bytes read at `now_secs`; the pause before the next read (zero while within
    /// the burst).
    pub fn take(&mut self, n: usize, now_secs: f64) -> Duration {
        let elapsed = (now_secs - self.at).max(0.0);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        self.at = now_secs;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// `8 MiB`, `64 KiB`, `1000 bytes`: sizes in messages.
pub fn human_bytes(n: usize) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_admits_large_answers_up_to_its_reserve_and_small_ones_to_the_end() {
        let total = 64 * MIB;
        let reserve_line = total - total / RESERVE_DIVISOR; // 56 MiB
        // (in_use, held, want, admitted, why)
        let cases: [(usize, usize, usize, bool, &str); 9] = [
            (0, 0, MIB, true, "empty budget"),
            (
                reserve_line - MIB,
                4 * MIB,
                MIB,
                true,
                "large, up to the reserve line",
            ),
            (
                reserve_line - MIB,
                4 * MIB,
                MIB + 1,
                false,
                "large, past the reserve line",
            ),
            (
                reserve_line,
                0,
                SMALL_ANSWER,
                true,
                "small, inside the reserve",
            ),
            (reserve_line, 0, SMALL_ANSWER + 1, false, "no longer small"),
            (
                reserve_line,
                SMALL_ANSWER - 10,
                11,
                false,
                "grew past small",
            ),
            (total - 100, 0, 100, true, "small, to the last byte"),
            (total - 100, 0, 101, false, "never over the total"),
            (usize::MAX, 0, 1, false, "no overflow"),
        ];
        for (in_use, held, want, admitted, why) in cases {
            assert_eq!(admits(total, in_use, held, want), admitted, "{why}");
        }
    }

    #[test]
    fn holdings_give_their_bytes_back_when_shrunk_or_dropped() {
        let budget = MemoryBudget::new(8 * MIB);
        let mut a = budget.hold();
        a.resize(6 * MIB).unwrap();
        assert_eq!(budget.in_use(), 6 * MIB);
        let mut b = budget.hold();
        // 7 MiB is the reserve line of an 8 MiB budget: b may not grow large past it.
        assert_eq!(b.resize(2 * MIB), Err(OverBudget { total: 8 * MIB }));
        assert_eq!(b.bytes(), 0, "a refused resize holds nothing more");
        b.resize(SMALL_ANSWER).unwrap();
        a.resize(MIB).unwrap();
        assert_eq!(budget.in_use(), MIB + SMALL_ANSWER);
        b.resize(2 * MIB).unwrap();
        drop(a);
        assert_eq!(budget.in_use(), 2 * MIB);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn the_stream_rate_lets_a_burst_through_then_paces_the_reader() {
        let mut r = ByteRate::new(MIB, 4 * MIB, 0.0);
        // (bytes read, at second, pause before the next read)
        let steps: [(usize, f64, f64); 5] = [
            (4 * MIB, 0.0, 0.0),  // the burst
            (MIB, 0.0, 1.0),      // one second of rate owed
            (MIB, 1.0, 1.0),      // the owed second passed, one more owed
            (0, 10.0, 0.0),       // refilled over time, capped at the burst
            (5 * MIB, 10.0, 1.0), // the burst and one second
        ];
        for (i, (n, at, pause)) in steps.into_iter().enumerate() {
            let got = r.take(n, at).as_secs_f64();
            assert!(
                (got - pause).abs() < 1e-9,
                "step {i}: {got} s, expected {pause} s"
            );
        }
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        for (n, text) in [
            (8 * MIB, "8 MiB"),
            (64 * KIB, "64 KiB"),
            (1000, "1000 bytes"),
            (MIB + 1, "1048577 bytes"),
            (3 * KIB, "3 KiB"),
        ] {
            assert_eq!(human_bytes(n), text);
        }
    }
}
