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
    elects: bool,
    /// Until when the lease is ours by our own clock: the last successful acquire or renew
    /// (counted from when it was sent) plus the renew deadline.
    valid_until: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl Leadership {
    /// Leadership of a process that does not elect (`--leader-elect=false`): always leading.
    pub fn always() -> Self {
        Self::with(true, false)
    }

    /// A standby, until the elector acquires the lease.
    pub fn standby() -> Self {
        Self::with(false, true)
    }

    fn with(leading: bool, elects: bool) -> Self {
        let (changes, _) = watch::channel(leading);
        Self {
            leading: Arc::new(AtomicBool::new(leading)),
            changes,
            elects,
            valid_until: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// True while this process holds the lease (or does not elect).
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Whether a write to the outside world (GitHub) may go out now: this process leads and
    /// its last renewal is younger than the renew deadline, judged by the clock at the moment
    /// of asking — not by the flag alone, which a process that was frozen (SIGSTOP, a long GC
    /// pause of the node) still shows until its elector runs again. A standby cannot have
    /// taken the lease before then: it waits a whole lease duration (longer than the renew
    /// deadline) after the last renewal it saw.
    pub fn may_write(&self) -> bool {
        if !self.elects {
            return self.is_leader();
        }
        let until = *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.is_leader() && until.is_some_and(|t| std::time::Instant::now() < t)
    }

    /// Notes a successful acquire or renew sent at `sent`.
    pub(crate) fn renewed(&self, sent: Instant, renew_deadline: Duration) {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((sent + renew_deadline).into_std());
    }

    /// Yields each time this process becomes the leader (at once if it already leads); never
    /// for a process that does not elect.
    pub fn acquisitions(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let mut rx = self.changes.subscribe();
        let first = self.elects && rx_first(&mut rx);
        let elects = self.elects;
        futures::stream::unfold((first, rx), move |(first, mut rx)| async move {
            if !elects {
                return None;
            }
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

use crate::metrics::Metrics;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Timing and identity of the election (DESIGN §3.3 defaults: 15 s lease, 10 s renew deadline,
/// 2 s retry period).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(name: String, namespace: String, identity: String) -> Self {
        Self {
            name,
            namespace,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why the elector stopped without being asked to: every one of these is fatal for the process.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lost the lease {lease} to {holder:?}")]
    Lost {
        lease: String,
        holder: Option<String>,
    },
    #[error("could not renew the lease {lease} within the renew deadline ({deadline:?})")]
    RenewDeadline { lease: String, deadline: Duration },
    #[error(
        "cannot use the lease {lease}: {source} (does the namespace exist, and may the operator get, create and update leases there?)"
    )]
    Unusable {
        lease: String,
        #[source]
        source: kube::Error,
    },
}

/// The lease as last seen, and when (by our clock) its holder or renewTime last changed.
#[derive(Debug)]
struct Observed {
    lease: Lease,
    changed_at: Instant,
}

impl Observed {
    fn spec(&self) -> LeaseSpec {
        self.lease.spec.clone().unwrap_or_default()
    }

    fn holder(&self) -> Option<String> {
        self.spec().holder_identity.filter(|h| !h.is_empty())
    }

    /// When the holder's claim lapses, judged only by our clock.
    fn expires_at(&self, default: Duration) -> Instant {
        let secs = self
            .spec()
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(default);
        self.changed_at + secs
    }
}

fn same_claim(a: &Lease, b: &Lease) -> bool {
    let (a, b) = (
        a.spec.clone().unwrap_or_default(),
        b.spec.clone().unwrap_or_default(),
    );
    a.holder_identity == b.holder_identity
        && a.renew_time == b.renew_time
        && a.lease_transitions == b.lease_transitions
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

enum Role {
    Standby,
    Leading {
        /// Our last successful write: its resourceVersion preconditions the next renewal.
        lease: Box<Lease>,
        renewed_at: Instant,
    },
}

/// Runs the election for one process.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    leadership: Leadership,
    metrics: Arc<Metrics>,
}

impl Elector {
    pub fn new(
        client: kube::Client,
        config: LeaseConfig,
        leadership: Leadership,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            leadership,
            metrics,
        }
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// Campaigns, leads and renews until `stop` resolves; then releases the lease if held.
    /// Returns an error when leadership was lost or could not be kept: the caller must stop
    /// reconciling at once (the flag is already cleared when this returns).
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), LeaderError> {
        let result = self.campaign(stop).await;
        if result.is_err() {
            self.step_down();
        }
        result
    }

    fn step_down(&self) {
        self.leadership.set(false);
        self.metrics.set_leader(false);
    }

    async fn campaign(&self, stop: impl Future<Output = ()>) -> Result<(), LeaderError> {
        let cfg = &self.config;
        let mut events = watcher(
            self.api.clone(),
            watcher::Config::default().fields(&format!("metadata.name={}", cfg.name)),
        )
        .default_backoff()
        .applied_objects()
        .boxed();
        let mut observed: Option<Observed> = None;
        let mut role = Role::Standby;
        let mut next_attempt = Instant::now();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => {
                    if let Role::Leading { lease, .. } = role {
                        self.release(*lease).await;
                    }
                    return Ok(());
                }
                event = events.next() => {
                    let Some(Ok(lease)) = event else { continue };
                    let changed = observed.as_ref().is_none_or(|o| !same_claim(&o.lease, &lease));
                    if changed {
                        observed = Some(Observed { lease, changed_at: Instant::now() });
                    } else if let Some(o) = observed.as_mut() {
                        o.lease = lease;
                    }
                    let Some(o) = observed.as_ref() else { continue };
                    match &role {
                        Role::Leading { .. } => {
                            // Someone else's claim, or a stale event from before our own write
                            // (the watch's first list can trail it): renew now; the renewal's
                            // precondition tells which (409 and another holder = lost).
                            if o.holder().as_deref() != Some(cfg.identity.as_str()) {
                                next_attempt = Instant::now();
                            }
                        }
                        Role::Standby => {
                            // Released or expired: try now; else when it would expire.
                            next_attempt = match o.holder() {
                                None => Instant::now(),
                                Some(h) if h == cfg.identity => Instant::now(),
                                Some(_) => o.expires_at(cfg.lease_duration),
                            };
                        }
                    }
                }
                () = tokio::time::sleep_until(next_attempt) => {
                    match role {
                        Role::Standby => {
                            // Deadlines count from when the write was sent: the apiserver
                            // cannot have recorded it earlier.
                            let sent = Instant::now();
                            match self.try_acquire(&mut observed).await? {
                                Some(lease) => {
                                    info!(lease = %self.lease_ref(), identity = %cfg.identity, "acquired the lease: leading");
                                    self.leadership.renewed(sent, cfg.renew_deadline);
                                    self.leadership.set(true);
                                    self.metrics.set_leader(true);
                                    self.metrics.lease_renewed();
                                    role = Role::Leading { lease: Box::new(lease), renewed_at: sent };
                                    next_attempt = sent + cfg.retry_period;
                                }
                                None => {
                                    next_attempt = observed
                                        .as_ref()
                                        .map(|o| o.expires_at(cfg.lease_duration))
                                        .filter(|t| *t > Instant::now())
                                        .unwrap_or_else(|| Instant::now() + cfg.retry_period);
                                }
                            }
                        }
                        Role::Leading { lease, renewed_at } => {
                            let deadline = renewed_at + cfg.renew_deadline;
                            let sent = Instant::now();
                            match tokio::time::timeout_at(deadline, self.renew(&lease)).await {
                                Ok(Ok(Some(renewed))) => {
                                    self.leadership.renewed(sent, cfg.renew_deadline);
                                    self.metrics.lease_renewed();
                                    role = Role::Leading { lease: Box::new(renewed), renewed_at: sent };
                                    next_attempt = sent + cfg.retry_period;
                                }
                                Ok(Ok(None)) => {
                                    return Err(LeaderError::Lost { lease: self.lease_ref(), holder: None });
                                }
                                Ok(Err(e)) => {
                                    if Instant::now() >= deadline {
                                        return Err(LeaderError::RenewDeadline { lease: self.lease_ref(), deadline: cfg.renew_deadline });
                                    }
                                    warn!(lease = %self.lease_ref(), error = %e, "renewing the lease failed; retrying");
                                    role = Role::Leading { lease, renewed_at };
                                    // Retry soon, but never past the deadline.
                                    next_attempt = (Instant::now() + cfg.retry_period / 4).min(deadline);
                                }
                                Err(_elapsed) => {
                                    return Err(LeaderError::RenewDeadline { lease: self.lease_ref(), deadline: cfg.renew_deadline });
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// One acquisition attempt: the lease if we now hold it, `None` if someone else does.
    async fn try_acquire(
        &self,
        observed: &mut Option<Observed>,
    ) -> Result<Option<Lease>, LeaderError> {
        let cfg = &self.config;
        if observed.is_none() {
            match self.api.get_opt(&cfg.name).await {
                Ok(Some(lease)) => {
                    *observed = Some(Observed {
                        lease,
                        changed_at: Instant::now(),
                    });
                }
                Ok(None) => return self.create().await,
                Err(e) => return self.transient_or_fatal(e),
            }
        }
        let Some(o) = observed.as_ref() else {
            return Ok(None);
        };
        let holder = o.holder();
        let mine = holder.as_deref() == Some(cfg.identity.as_str());
        if holder.is_some() && !mine && Instant::now() < o.expires_at(cfg.lease_duration) {
            return Ok(None);
        }
        let mut spec = o.spec();
        let now = now_micro();
        if !mine {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(cfg.identity.clone());
        spec.lease_duration_seconds = Some(secs_i32(cfg.lease_duration));
        spec.renew_time = Some(now);
        let mut lease = o.lease.clone();
        lease.spec = Some(spec);
        match self
            .api
            .replace(&cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(lease) => Ok(Some(lease)),
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                // Someone else wrote first (or it was deleted): start from a fresh read.
                debug!(lease = %self.lease_ref(), "lost an acquisition race");
                *observed = None;
                Ok(None)
            }
            Err(e) => self.transient_or_fatal(e),
        }
    }

    async fn create(&self) -> Result<Option<Lease>, LeaderError> {
        let cfg = &self.config;
        let now = now_micro();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs_i32(cfg.lease_duration)),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(lease) => Ok(Some(lease)),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => self.transient_or_fatal(e),
        }
    }

    /// Not-found namespaces and missing permissions will not heal by retrying: fatal.
    fn transient_or_fatal<T>(&self, e: kube::Error) -> Result<Option<T>, LeaderError> {
        match &e {
            kube::Error::Api(s) if matches!(s.code, 401 | 403 | 404) => {
                Err(LeaderError::Unusable {
                    lease: self.lease_ref(),
                    source: e,
                })
            }
            _ => {
                warn!(lease = %self.lease_ref(), error = %e, "reading the lease failed; retrying");
                Ok(None)
            }
        }
    }

    /// Renews our claim: the renewed lease, `None` when someone else holds it now.
    async fn renew(&self, ours: &Lease) -> Result<Option<Lease>, kube::Error> {
        if let Some(renewed) = self.write_renewal(ours).await? {
            return Ok(Some(renewed));
        }
        // Our resourceVersion is stale: if the lease is still ours (e.g. a retried write that
        // did land), renew from the fresh copy; otherwise we lost it.
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            return Ok(None);
        };
        let holder = current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.config.identity.as_str()) {
            return Ok(None);
        }
        self.write_renewal(&current).await
    }

    /// `base` with a new renewTime, written under its resourceVersion; `None` on a conflict.
    async fn write_renewal(&self, base: &Lease) -> Result<Option<Lease>, kube::Error> {
        let mut lease = base.clone();
        let mut spec = lease.spec.clone().unwrap_or_default();
        spec.renew_time = Some(now_micro());
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(lease) => Ok(Some(lease)),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (empty holder) so a standby takes over at once.
    async fn release(&self, ours: Lease) {
        self.step_down();
        let cfg = &self.config;
        let mut lease = ours;
        let mut spec = lease.spec.clone().unwrap_or_default();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        lease.spec = Some(spec);
        let params = PostParams::default();
        let write = self.api.replace(&cfg.name, &params, &lease);
        match tokio::time::timeout(cfg.retry_period, write).await {
            Ok(Ok(_)) => info!(lease = %self.lease_ref(), "released the lease"),
            Ok(Err(e)) => {
                warn!(lease = %self.lease_ref(), error = %e, "releasing the lease failed; it expires on its own")
            }
            Err(_) => {
                warn!(lease = %self.lease_ref(), "releasing the lease timed out; it expires on its own")
            }
        }
    }
}

fn secs_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// The default identity: the pod name (downward API) when set, else the hostname plus a random
/// suffix so that two local processes differ.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ccplant-operator".into());
    let suffix: u32 = rand::random();
    format!("{host}-{suffix:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>, duration: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: duration,
                renew_time: Some(now_micro()),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn acquisitions_fire_on_each_rise_and_never_without_election() {
        let elected = Leadership::standby();
        let mut rises = Box::pin(elected.acquisitions());
        assert!(!elected.is_leader());
        elected.set(true);
        assert!(elected.is_leader());
        tokio::time::timeout(Duration::from_secs(1), rises.next())
            .await
            .expect("a rise is reported")
            .expect("stream open");
        elected.set(false);
        elected.set(true);
        tokio::time::timeout(Duration::from_secs(1), rises.next())
            .await
            .expect("the second rise is reported")
            .expect("stream open");

        // Subscribing while already leading reports at once.
        let mut late = Box::pin(elected.acquisitions());
        tokio::time::timeout(Duration::from_secs(1), late.next())
            .await
            .expect("already leading is reported")
            .expect("stream open");

        let always = Leadership::always();
        assert!(always.is_leader());
        assert!(Box::pin(always.acquisitions()).next().await.is_none());
    }

    #[test]
    fn expiry_is_judged_from_when_we_saw_the_claim_change() {
        let seen = Instant::now();
        let o = Observed {
            lease: held_by(Some("other"), Some(15)),
            changed_at: seen,
        };
        assert_eq!(
            o.expires_at(Duration::from_secs(99)),
            seen + Duration::from_secs(15)
        );
        assert_eq!(o.holder().as_deref(), Some("other"));
        let no_duration = Observed {
            lease: held_by(Some(""), None),
            changed_at: seen,
        };
        assert_eq!(
            no_duration.holder(),
            None,
            "an empty holder is a released lease"
        );
        assert_eq!(
            no_duration.expires_at(Duration::from_secs(15)),
            seen + Duration::from_secs(15)
        );
    }

    #[test]
    fn a_renewal_is_a_change_of_claim_but_a_resync_is_not() {
        let a = held_by(Some("x"), Some(15));
        let mut resynced = a.clone();
        resynced.metadata.resource_version = Some("2".into());
        assert!(same_claim(&a, &resynced));
        let mut renewed = a.clone();
        if let Some(spec) = renewed.spec.as_mut() {
            spec.renew_time = Some(MicroTime(
                k8s_openapi::jiff::Timestamp::now()
                    + k8s_openapi::jiff::SignedDuration::from_secs(2),
            ));
        }
        assert!(!same_claim(&a, &renewed));
    }
}
