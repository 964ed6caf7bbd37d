//! Watches that timestamp events with the monotonic clock as they arrive.

use anyhow::{Context, Result};
use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// What a watch saw, per key.
#[derive(Debug, Default)]
pub struct Seen {
    /// When the first ADDED event of the key arrived.
    pub added: HashMap<String, Instant>,
    /// When the key first reached a state of interest, and which.
    pub reached: HashMap<String, (Instant, String)>,
    /// The last state label per key (for diagnosis on timeouts).
    pub last: HashMap<String, String>,
    /// A watch failure that ended tracking.
    pub error: Option<String>,
}

/// A watch on one collection running in the background.
#[derive(Debug)]
pub struct Tracker {
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

/// Maps an object to its key (None: ignore it).
pub type KeyFn<K> = fn(&K) -> Option<String>;
/// The state of interest an object is in (None: not yet), and the label of its current state.
pub type StateFn<K> = fn(&K) -> (Option<String>, String);

impl Tracker {
    /// Starts watching `api` from its current resourceVersion (so only later events count).
    pub async fn start<K>(api: Api<K>, key: KeyFn<K>, state: StateFn<K>) -> Result<Tracker>
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    {
        let list = api
            .list_metadata(&ListParams::default().limit(1))
            .await
            .context("listing before the watch")?;
        let mut version = list.metadata.resource_version.unwrap_or_default();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let params = WatchParams::default().timeout(290);
            loop {
                let stream = match api.watch(&params, &version).await {
                    Ok(s) => s,
                    Err(e) => {
                        lock(&shared).error.get_or_insert(format!("watch: {e}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let now = Instant::now();
                    let (obj, added) = match event {
                        Ok(WatchEvent::Added(o)) => (o, true),
                        Ok(WatchEvent::Modified(o)) => (o, false),
                        Ok(WatchEvent::Deleted(o)) => {
                            if let Some(v) = o.meta().resource_version.clone() {
                                version = v;
                            }
                            continue;
                        }
                        Ok(WatchEvent::Bookmark(b)) => {
                            version = b.metadata.resource_version;
                            continue;
                        }
                        Ok(WatchEvent::Error(e)) => {
                            lock(&shared).error = Some(format!("watch error: {e:?}"));
                            return;
                        }
                        Err(e) => {
                            lock(&shared)
                                .error
                                .get_or_insert(format!("watch stream: {e}"));
                            break;
                        }
                    };
                    if let Some(v) = obj.meta().resource_version.clone() {
                        version = v;
                    }
                    let Some(k) = key(&obj) else { continue };
                    let (reached, label) = state(&obj);
                    let mut s = lock(&shared);
                    if added {
                        s.added.entry(k.clone()).or_insert(now);
                    }
                    if let Some(r) = reached {
                        s.reached.entry(k.clone()).or_insert((now, r));
                    }
                    s.last.insert(k, label);
                }
            }
        });
        Ok(Tracker { seen, task })
    }

    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        lock(&self.seen)
    }

    /// Polls until `done` holds or `timeout` passes; whether it held. `check` runs on every
    /// poll (e.g. that the operator is still alive) and ends the wait with its error.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&Seen) -> bool,
        mut check: impl FnMut() -> Result<()>,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.seen()) {
                return Ok(true);
            }
            check()?;
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the watch; what it saw.
    pub fn stop(self) -> Seen {
        self.task.abort();
        std::mem::take(&mut *lock(&self.seen))
    }
}

fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts of the last state labels, e.g. `{"Running": 998, "Starting": 2}`.
pub fn state_counts(seen: &Seen) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for label in seen.last.values() {
        *out.entry(label.clone()).or_insert(0) += 1;
    }
    out
}
