//! Pacing of content-creating calls per credential.
//!
//! GitHub's secondary rate limit allows at most 80 content-creating requests per minute per
//! account; going over it earns a 403 and, when repeated, a temporary ban. Each credential gets
//! a sliding-window limiter; callers queue in arrival order (tokio's mutex is fair).

use crate::auth::CredentialId;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// GitHub's documented limit for content-creating requests.
pub const CONTENT_CREATION_LIMIT: usize = 80;
/// The window the limit applies to.
pub const CONTENT_CREATION_WINDOW: Duration = Duration::from_secs(60);

/// A sliding-window limiter: at most `limit` grants in any `window`.
/// A call's place in its credential's window: empty while the call is in flight, then the
/// instant it ended.
type Slot = Arc<Mutex<Option<Instant>>>;

#[derive(Debug)]
pub struct Pacer {
    limit: usize,
    window: Duration,
    slots: tokio::sync::Mutex<Vec<Slot>>,
    ended: Arc<tokio::sync::Notify>,
}

/// Held while a content-creating call is in flight; dropping it (response, error, timeout or
/// cancellation) starts its 60 s in the window. Counting from the grant instead would let the
/// 81st call reach GitHub less than a minute after a slow first one did.
#[derive(Debug)]
pub struct PacePermit {
    slot: Slot,
    ended: Arc<tokio::sync::Notify>,
}

impl Drop for PacePermit {
    fn drop(&mut self) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.ended.notify_waiters();
    }
}

fn ended_at(slot: &Slot) -> Option<Instant> {
    *slot.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pacer {
    pub fn new(limit: usize, window: Duration) -> Self {
        Pacer {
            limit: limit.max(1),
            window,
            slots: tokio::sync::Mutex::new(Vec::new()),
            ended: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Waits until a call may start: fewer than `limit` calls in flight or ended within the
    /// last `window`. Callers are served in arrival order (tokio's mutex is fair).
    pub async fn acquire(&self) -> PacePermit {
        let mut slots = self.slots.lock().await;
        loop {
            let now = Instant::now();
            slots.retain(|slot| ended_at(slot).is_none_or(|ended| ended + self.window > now));
            if slots.len() < self.limit {
                let slot: Slot = Arc::default();
                slots.push(slot.clone());
                return PacePermit {
                    slot,
                    ended: self.ended.clone(),
                };
            }
            // Registered before looking, so an ending call cannot slip by unnoticed.
            let a_call_ended = self.ended.notified();
            match slots.iter().filter_map(ended_at).min() {
                Some(oldest) => {
                    tracing::debug!(
                        wait_ms = (oldest + self.window - now).as_millis() as u64,
                        "pacing content-creating GitHub call"
                    );
                    tokio::time::sleep_until(oldest + self.window).await;
                }
                // Every counted call is still in flight: wait for one to end.
                None => a_call_ended.await,
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct PacerRegistry {
    limit: usize,
    window: Duration,
    pacers: Arc<Mutex<HashMap<CredentialId, Arc<Pacer>>>>,
}

static GLOBAL: LazyLock<PacerRegistry> =
    LazyLock::new(|| PacerRegistry::new(CONTENT_CREATION_LIMIT, CONTENT_CREATION_WINDOW));

impl PacerRegistry {
    pub fn new(limit: usize, window: Duration) -> Self {
        PacerRegistry {
            limit,
            window,
            pacers: Arc::default(),
        }
    }

    /// The registry every client uses unless given another one.
    pub fn global() -> PacerRegistry {
        GLOBAL.clone()
    }

    /// The pacer of `credential`, created on first use.
    pub fn pacer(&self, credential: &CredentialId) -> Arc<Pacer> {
        let mut pacers = self.pacers.lock().unwrap_or_else(PoisonError::into_inner);
        pacers
            .entry(credential.clone())
            .or_insert_with(|| Arc::new(Pacer::new(self.limit, self.window)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eighty_calls_pass_then_the_81st_waits_for_the_window() {
        let pacer = Pacer::new(CONTENT_CREATION_LIMIT, CONTENT_CREATION_WINDOW);
        let start = Instant::now();
        for _ in 0..80 {
            pacer.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        pacer.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_counts_from_when_a_call_ended_not_when_it_started() {
        let pacer = Pacer::new(2, Duration::from_secs(60));
        let start = Instant::now();
        let slow = pacer.acquire().await; // in flight for 5 s
        drop(pacer.acquire().await); // ends at once: t=0
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(slow); // ends at t=5
        drop(pacer.acquire().await); // the t=0 call leaves at t=60
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        drop(pacer.acquire().await); // the slow call counts until t=65, not t=60
        assert_eq!(start.elapsed(), Duration::from_secs(65));
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_counted_call_in_flight_the_next_waits_for_one_to_end() {
        let pacer = Arc::new(Pacer::new(1, Duration::from_secs(60)));
        let start = Instant::now();
        let in_flight = pacer.acquire().await;
        let waiter = {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                drop(pacer.acquire().await);
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(90)).await; // a call slower than the window
        drop(in_flight);
        let granted = waiter.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(granted - start, Duration::from_secs(150));
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides_with_the_oldest_grant() {
        let pacer = Pacer::new(3, Duration::from_secs(60));
        let start = Instant::now();
        pacer.acquire().await; // t=0
        tokio::time::sleep(Duration::from_secs(10)).await;
        pacer.acquire().await; // t=10
        pacer.acquire().await; // t=10
        pacer.acquire().await; // waits for the t=0 grant to leave: t=60
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        pacer.acquire().await; // waits for the first t=10 grant: t=70
        assert_eq!(start.elapsed(), Duration::from_secs(70));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_callers_are_served_in_arrival_order() {
        let pacer = Arc::new(Pacer::new(2, Duration::from_secs(60)));
        pacer.acquire().await;
        pacer.acquire().await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (pacer, order) = (pacer.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                pacer.acquire().await;
                order
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((i, Instant::now()));
            }));
            // Let the task reach the queue before the next one is spawned.
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        for task in tasks {
            task.await.unwrap_or_else(|e| panic!("{e}"));
        }
        let order = order.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let got: Vec<(usize, Duration)> = order.iter().map(|(i, t)| (*i, *t - start)).collect();
        assert_eq!(
            got,
            vec![
                (0, Duration::from_secs(60)),
                (1, Duration::from_secs(60)),
                (2, Duration::from_secs(120)),
                (3, Duration::from_secs(120)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn registry_shares_one_pacer_per_credential() {
        let registry = PacerRegistry::new(1, Duration::from_secs(60));
        let a = CredentialId::for_test("token:a");
        let b = CredentialId::for_test("token:b");
        assert!(Arc::ptr_eq(
            &registry.pacer(&a),
            &registry.pacer(&a.clone())
        ));
        assert!(Arc::ptr_eq(
            &registry.pacer(&a),
            &registry.clone().pacer(&a)
        ));
        let start = Instant::now();
        registry.pacer(&a).acquire().await;
        registry.pacer(&b).acquire().await; // another credential is not held back
        assert_eq!(start.elapsed(), Duration::ZERO);
        registry.pacer(&a).acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }
}
