//! `ccplant-operator run`: connect, check the CRDs, run the controllers until SIGTERM/SIGINT.

use crate::config::RunArgs;
use crate::context::Context;
use crate::credentials::GitHubClients;
use crate::events::Recorder;
use crate::leader::{Elector, Leadership, LeaseConfig, default_identity};
use crate::metrics::Metrics;
use anyhow::{Context as _, Result, bail};
use ccplant_api::{AgentSession, GitHubTask};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use tracing::{error, info};

/// Fails with a clear message when a CRD is not installed.
async fn require_crd<K>(client: &Client, namespace: Option<&str>) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "the CustomResourceDefinition {}.{} is not installed: run `kubectl apply -f crds/` first",
            K::plural(&()),
            K::group(&())
        ),
        Err(e) => Err(e).context(format!("checking for {}", K::plural(&()))),
    }
}

pub async fn run(args: RunArgs) -> Result<()> {
    crate::shutdown::listen();
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let mut config = kube::Config::infer()
        .await
        .context("loading the Kubernetes configuration (KUBECONFIG or in-cluster)")?;
    // The apiserver's audit log tells the replicas apart.
    let agent = format!(
        "ccplant-operator/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    );
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&agent).context("--identity is not a valid header value")?,
    ));
    let client = Client::try_from(config).context("connecting to Kubernetes")?;
    let probe_ns = args.namespaces.first().map(String::as_str);
    require_crd::<GitHubTask>(&client, probe_ns).await?;
    require_crd::<AgentSession>(&client, probe_ns).await?;

    let metrics = Metrics::new();
    let leadership = if args.leader_elect {
        Leadership::standby()
    } else {
        Leadership::always()
    };
    metrics.set_leader(leadership.is_leader());
    let recorder = Recorder::new(client.clone(), "ccplant-operator", &identity);
    let github = GitHubClients::new(
        &args.github_api_url,
        args.github_timeout,
        Some(metrics.github_hook()),
    );
    let ctx = Context::new(
        client.clone(),
        recorder,
        github,
        leadership.clone(),
        metrics.clone(),
        &args,
    );

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", args.metrics_addr))?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::serve(listener, ctx.clone(), async move {
        let _ = http_stopped.await;
    }));

    info!(%identity, leader_elect = args.leader_elect, namespaces = ?args.namespaces, github_api_url = %args.github_api_url, "starting controllers");
    let build = crate::agent_session::build::BuildConfig {
        default_agent_image: args.default_agent_image.clone(),
        operator_namespace: args.operator_namespace.clone(),
        git_image: args.git_image.clone(),
        default_editor_image: args.editor_image.clone(),
        github_host: args.clone_host(),
    };
    let scopes: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };
    // Every controller drains its in-flight reconciles on SIGTERM/SIGINT, then returns.
    let mut controllers = Vec::new();
    for scope in scopes {
        controllers.push(tokio::spawn(crate::agent_session::controller::run(
            ctx.clone(),
            build.clone(),
            args.max_session_duration,
            args.session_concurrency,
            args.agent_concurrency,
            scope,
        )));
    }
    if args.namespaces.is_empty() {
        controllers.push(tokio::spawn(crate::github_task::run(
            ctx.clone(),
            Api::all(client.clone()),
            Api::all(client.clone()),
        )));
    } else {
        for ns in &args.namespaces {
            controllers.push(tokio::spawn(crate::github_task::run(
                ctx.clone(),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            )));
        }
    }
    let drained = futures::future::join_all(controllers);

    if args.leader_elect {
        let lease = LeaseConfig::new(
            args.lease_name.clone(),
            args.lease_namespace
                .clone()
                .unwrap_or_else(|| args.operator_namespace.clone()),
            identity.clone(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let elector = Elector::new(client.clone(), lease, leadership, metrics.clone());
        let mut election = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));
        let ended = tokio::select! {
            _ = drained => {
                // Drained: only now give the lease up, so no two replicas ever write at once.
                let _ = stop.send(());
                election.await
            }
            ended = &mut election => ended,
        };
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => fail_stop(&e),
            Err(e) => fail_stop(&e),
        }
    } else {
        drained.await;
    }
    let _ = http_stop.send(());
    let _ = server.await;
    info!("stopped");
    Ok(())
}

/// Leadership lost or not renewable: stop every reconcile at once by ending the process (its
/// restart comes back as a standby). Leadership was already cleared, so nothing new starts while
/// this line is logged.
fn fail_stop(reason: &dyn std::fmt::Display) -> ! {
    error!(%reason, "leader election failed: stopping at once");
    std::process::exit(1)
}
