//! Leader election on a `coordination.k8s.io/v1` Lease (DESIGN §3.3).
//!
//! Written here rather than taken from a crate: the published ones lag kube 5 or cannot notice a
//! lost lease while the apiserver is unreachable. The rules:
//! - acquire and renew with `resourceVersion` preconditions: a 409 means another replica won;
//! - a lease held by someone else is expired when its `renewTime` has not changed for
//!   `leaseDurationSeconds` by *our* clock (the holder's clock is never compared with ours);
//! - the leader renews every retry period; a renew deadline passing without a successful renew
//!   is fatal (fail-stop): the process stops reconciling at once and exits, and comes back as a
//!   standby when restarted;
//! - on SIGTERM the leader first drains its reconciles, then releases the lease (empty holder),
//!   which a standby watching the Lease takes within milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// Whether this process may reconcile, shared by every controller of the process.
#[derive(Debug, Clone)]
pub struct Leadership {
    leading: Arc<AtomicBool>,
    changes: watch::Sender<bool>,
}

impl Leadership {
    /// Leadership of a process that does not elect (`--leader-elect=false`): always leading.
    pub fn always() -> Self {
        Self::with(true)
    }

    /// A standby, until the elector acquires the lease.
    pub fn standby() -> Self {
        Self::with(false)
    }

    fn with(leading: bool) -> Self {
        let (changes, _) = watch::channel(leading);
        Self {
            leading: Arc::new(AtomicBool::new(leading)),
            changes,
        }
    }

    /// True while this process holds the lease (or does not elect).
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Yields `true` each time this process becomes the leader (immediately if it already is).
    pub fn acquisitions(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let mut rx = self.changes.subscribe();
        futures::stream::unfold((rx_first(&mut rx), rx), |(first, mut rx)| async move {
            if first {
                return Some(((), (false, rx)));
            }
            loop {
                if rx.changed().await.is_err() {
                    return None;
                }
                if *rx.borrow_and_update() {
                    return Some(((), (false, rx)));
                }
            }
        })
    }

    pub(crate) fn set(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
        self.changes.send_replace(leading);
    }
}

fn rx_first(rx: &mut watch::Receiver<bool>) -> bool {
    *rx.borrow_and_update()
}
