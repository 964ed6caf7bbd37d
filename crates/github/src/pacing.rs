//! Pacing of content-creating calls per credential.
//!
//! GitHub's secondary rate limit allows at most 80 content-creating requests per minute per
//! account; going over it earns a 403 and, when repeated, a temporary ban. Each credential gets
//! a sliding-window limiter; callers queue in arrival order (tokio's mutex is fair).

use crate::auth::CredentialId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// GitHub's documented limit for content-creating requests.
pub const CONTENT_CREATION_LIMIT: usize = 80;
/// The window the limit applies to.
pub const CONTENT_CREATION_WINDOW: Duration = Duration::from_secs(60);

/// A sliding-window limiter: at most `limit` grants in any `window`.
#[derive(Debug)]
pub struct Pacer {
    limit: usize,
    window: Duration,
    grants: tokio::sync::Mutex<VecDeque<Instant>>,
}

impl Pacer {
    pub fn new(limit: usize, window: Duration) -> Self {
        Pacer {
            limit: limit.max(1),
            window,
            grants: tokio::sync::Mutex::new(VecDeque::new()),
        }
    }

    /// Waits until one more call fits into the window and records it. Cancel-safe: a caller
    /// dropped while waiting takes no grant.
    pub async fn acquire(&self) {
        // Held while sleeping so that later callers queue behind earlier ones.
        let mut grants = self.grants.lock().await;
        loop {
            let now = Instant::now();
            while grants
                .front()
                .is_some_and(|granted| *granted + self.window <= now)
            {
                grants.pop_front();
            }
            if grants.len() < self.limit {
                grants.push_back(now);
                return;
            }
            if let Some(oldest) = grants.front().copied() {
                tracing::debug!(
                    wait_ms = (oldest + self.window - now).as_millis() as u64,
                    "pacing content-creating GitHub call"
                );
                tokio::time::sleep_until(oldest + self.window).await;
            }
        }
    }
}

/// Pacers keyed by credential, so every client for the same credential shares one. Cheap to
/// clone; [`PacerRegistry::global`] is the process-wide default.
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
