//! kube-apiserver restart in the middle of a burst: one operator, a burst of AgentSessions from
//! one client; once half of them are created the apiserver is SIGKILLed, stays down for
//! `--outage-seconds`, and starts again with the same command line (same port, etcd,
//! certificates, audit log). The client retries every create that failed meanwhile (a 409 on a
//! retry means the lost attempt had been applied). Then every session must reach Running with
//! exactly one pod; reported: the seconds the apiserver was unavailable (kill to /readyz
//! answering again) and the seconds from its return until everything converged.
//!
//! SIGKILL rather than SIGTERM: on SIGTERM the kube-apiserver stops accepting connections but
//! keeps serving the open ones until they go idle, which busy clients (the operator's watches,
//! the burst) never let happen, so it was not down for anyone already connected.

use super::{Created, Failures, bare_session, create_retrying, log_tail, progress, wait_converged};
use crate::env::{self, Cluster, Operator};
use crate::stats::round3;
use anyhow::{Context, Result, bail};
use ccplant_api::AgentSession;
use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const NS: &str = "drill-restart";
const APISERVER: &str = "kube-apiserver";
/// How long every session may take to converge after the apiserver's return: long enough to
/// tell a slow recovery (reported) from none (a failure).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(600);
/// Create requests in flight during the burst.
const CONCURRENCY: usize = 16;

pub async fn run(
    args: &super::DrillsArgs,
    cluster: &mut Cluster,
    bin: &Path,
    client: &Client,
    failures: &mut Failures,
) -> Result<Value> {
    let n = args.restart_sessions;
    env::create_namespace(client, NS).await?;
    let log = cluster.dir.join("logs/drill-restart-operator.log");
    let op_args = [
        "--namespaces",
        NS,
        "--leader-elect=false",
        "--identity",
        "drill-restart",
        "--github-api-url",
        "http://127.0.0.1:1",
        "--log-format",
        "json",
        "--log-level",
        "info",
    ];
    let mut op = Operator::start_with(bin, &cluster.kubeconfig, &op_args, log.clone(), false)?;
    op.wait_ready(Duration::from_secs(60)).await?;

    progress(format_args!(
        "apiserver restart: a burst of {n} sessions, the apiserver is killed after {}",
        (n / 2).max(1)
    ));
    let started = Instant::now();
    let (killed, stopped) = oneshot::channel();
    let burst = tokio::spawn(burst(client.clone(), n, cluster.pid(APISERVER)?, killed));
    let Ok(stopped) = stopped.await else {
        burst.await.context("the burst's task")??;
        bail!("the burst ended before half of it was created");
    };
    while !cluster.has_exited(APISERVER)? {
        if stopped.elapsed() > Duration::from_secs(10) {
            bail!("the kube-apiserver outlived SIGKILL by 10 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    progress(format_args!(
        "apiserver restart: killed after {:.1} s of the burst; down for {} s",
        stopped.duration_since(started).as_secs_f64(),
        args.outage_seconds
    ));
    tokio::time::sleep(Duration::from_secs_f64(args.outage_seconds)).await;
    let restarted_s = stopped.elapsed().as_secs_f64();
    cluster.restart(APISERVER)?;
    wait_apiserver_ready(client, Duration::from_secs(120)).await?;
    let back = Instant::now();
    let unavailable_s = back.duration_since(stopped).as_secs_f64();
    progress(format_args!(
        "apiserver restart: ready again after {unavailable_s:.1} s; waiting for every session to run"
    ));
    let results = burst.await.context("the burst's task")??;
    let burst_s = started.elapsed().as_secs_f64();
    let convergence =
        wait_converged(client, NS, n, CONVERGE_TIMEOUT, || op.ensure_running()).await?;
    let tally = &convergence.tally;
    let converged_s = convergence
        .converged
        .map(|t| t.duration_since(back).as_secs_f64());
    if converged_s.is_none() {
        failures.push(format!(
            "apiserver restart: not every session Running with one pod {CONVERGE_TIMEOUT:?} after the apiserver returned: {}; operator log tail:\n{}",
            tally.report(),
            log_tail(&log, 20)
        ));
    }
    let operator_exit = op.stop().await?;
    Ok(json!({
        "sessions": n,
        "killed_after_creates": (n / 2).max(1),
        "killed_after_burst_s": round3(stopped.duration_since(started).as_secs_f64()),
        "create_attempts_failed": results.iter().map(|c| c.failed_attempts).sum::<usize>(),
        "creates_retried": results.iter().filter(|c| c.failed_attempts > 0).count(),
        "creates_applied_before_their_response_was_lost": results.iter().filter(|c| c.already_existed).count(),
        "apiserver_restarted_after_s": round3(restarted_s),
        "apiserver_unavailable_s": round3(unavailable_s),
        "burst_s": round3(burst_s),
        "converged": converged_s.is_some(),
        "converged_after_return_s": converged_s.map(round3),
        "after_return": convergence.report(back),
        "final": tally.report(),
        "operator_exit": operator_exit.to_string(),
        "method": "apiserver_unavailable_s: SIGKILL to the first /readyz 'ok' after the restart; converged_after_return_s: from then until every session is Running with exactly one pod (label ccplant.io/session or ownerReference), polled every 0.25 s; the operator runs throughout without leader election",
    }))
}

/// Creates sessions `restart-0000`… with `CONCURRENCY` in flight, each retried through the
/// outage; SIGKILLs the apiserver (`apiserver`, its pid) the moment half of them are created,
/// and sends when on `killed`.
async fn burst(
    client: Client,
    n: usize,
    apiserver: i32,
    killed: oneshot::Sender<Instant>,
) -> Result<Vec<Created>> {
    let api: Api<AgentSession> = Api::namespaced(client, NS);
    let deadline = Instant::now() + Duration::from_secs(300);
    let created = AtomicUsize::new(0);
    let killed = Mutex::new(Some(killed));
    futures::stream::iter(0..n)
        .map(|i| {
            let (api, created, killed) = (api.clone(), &created, &killed);
            async move {
                let session = bare_session(&format!("restart-{i:04}"))?;
                let result = create_retrying(&api, &session, deadline).await?;
                if created.fetch_add(1, Ordering::SeqCst) + 1 == (n / 2).max(1) {
                    ccplant_testenv::process::send_signal(apiserver, libc::SIGKILL);
                    let tx = killed.lock().unwrap_or_else(PoisonError::into_inner).take();
                    if let Some(tx) = tx {
                        let _ = tx.send(Instant::now());
                    }
                }
                Ok(result)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<Result<Created>>>()
        .await
        .into_iter()
        .collect()
}

async fn wait_apiserver_ready(client: &Client, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let request = http::Request::get("/readyz").body(Vec::new())?;
        if let Ok(Ok(body)) =
            tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await
            && body.trim() == "ok"
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the kube-apiserver is not ready {timeout:?} after its restart");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
