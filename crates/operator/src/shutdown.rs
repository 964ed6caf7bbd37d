//! Graceful shutdown on SIGTERM/SIGINT that always finishes.
//!
//! kube's controller runner starts no reconcile before its cache has synced, and once shutdown
//! is requested it stops driving the watches: a shutdown requested before the first sync would
//! wait forever (the pod is killed at its grace period, the Lease is not released). So each
//! controller asks for its graceful shutdown only once its caches are complete; caches that do
//! not complete within [`SYNC_GRACE`] mean no reconcile ever started, and the controller is
//! simply dropped.

use futures::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a controller waits, after the signal, for its caches to sync before giving up.
pub const SYNC_GRACE: Duration = Duration::from_secs(10);

static REQUESTED: OnceLock<watch::Sender<bool>> = OnceLock::new();

fn requested_channel() -> &'static watch::Sender<bool> {
    REQUESTED.get_or_init(|| {
        let (tx, _) = watch::channel(false);
        let signals = tx.clone();
        // Registered here, synchronously: from this call on, SIGTERM no longer kills at once.
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        tokio::spawn(async move {
            let Ok(mut term) = term else {
                warn!("cannot listen for SIGTERM");
                return;
            };
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down gracefully"),
                _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down gracefully"),
            }
            signals.send_replace(true);
        });
        tx
    })
}

/// Starts listening for SIGTERM/SIGINT (call first thing in the runtime).
pub fn listen() {
    requested_channel();
}

/// Resolves once SIGTERM or SIGINT arrived (listening starts at the first call).
pub fn requested() -> impl Future<Output = ()> + Send + 'static {
    let mut rx = requested_channel().subscribe();
    async move {
        let _ = rx.wait_for(|r| *r).await;
    }
}

/// Drives `run` (a controller built with `graceful_shutdown_on(stop_rx)`) until it ends. On the
/// signal, sends `stop` as soon as every cache in `synced` reports its initial list complete,
/// so the controller drains its in-flight reconciles and returns; if they are not all synced
/// within [`SYNC_GRACE`], drops it instead (nothing can have been reconciled).
pub async fn drive(
    controller: &'static str,
    run: impl Future<Output = ()>,
    stop: tokio::sync::oneshot::Sender<()>,
    mut synced: Vec<watch::Receiver<bool>>,
) {
    tokio::pin!(run);
    tokio::select! {
        () = &mut run => return,
        () = requested() => {}
    }
    let all_synced = async {
        for rx in &mut synced {
            // An error means the watch is gone: it will never sync.
            if rx.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    // The watches keep running (inside `run`) while we wait for them.
    tokio::select! {
        () = &mut run => return,
        synced = tokio::time::timeout(SYNC_GRACE, all_synced) => {
            if synced.is_err() {
                warn!(
                    controller,
                    "caches not synced {SYNC_GRACE:?} after the signal: stopping without draining (no reconcile ran)"
                );
                return;
            }
        }
    }
    let _ = stop.send(());
    run.await;
}
