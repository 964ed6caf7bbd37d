//! `ccplant-operator run`: connect, check the CRDs, run the controllers until SIGTERM/SIGINT.

use crate::agent_session::controller::SessionObject;
use crate::agent_session::conversation::AgentPool;
use crate::agent_session::decide::SessionConfig;
use crate::config::RunArgs;
use crate::context::Context;
use crate::context::primary_watch;
use crate::credentials::GitHubClients;
use crate::events::Recorder;
use crate::github_task::TaskObject;
use crate::github_task::decide::TaskConfig;
use crate::leader::{Elector, Leadership, LeaseConfig, default_identity};
use crate::metrics::Metrics;
use anyhow::{Context as _, Result, bail};
use ccplant_api::{AgentSession, GitHubCredential, GitHubTask};
use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use tracing::{error, info};

/// Fails clearly when the CRD of `K` is not installed (one list of at most one object).
async fn require_crd<K>(api: Api<K>) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
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

/// `kind` in one namespace, or in all of them.
fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
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
    let probe_ns = args.namespaces.first().cloned();
    require_crd(scoped::<GitHubTask>(&client, &probe_ns)).await?;
    require_crd(scoped::<AgentSession>(&client, &probe_ns)).await?;
    require_crd(Api::<GitHubCredential>::all(client.clone())).await?;
    require_crd(Api::<ccplant_api::AgentSessionClass>::all(client.clone())).await?;

    let metrics = Metrics::new();
    let leadership = if args.leader_elect {
        Leadership::standby()
    } else {
        Leadership::always()
    };
    metrics.set_leader(leadership.is_leader());
    let recorder = Recorder::new(
        client.clone(),
        crate::events::REPORTING_CONTROLLER,
        &identity,
    );
    // Every GitHub write re-checks the lease by its own deadline right before it is sent.
    let gate_leadership = leadership.clone();
    let github = GitHubClients::with_gate(
        &args.github_api_url,
        args.github_timeout,
        Some(metrics.github_hook()),
        Some(std::sync::Arc::new(move || gate_leadership.may_write())),
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
    let session_config = SessionConfig {
        build: crate::agent_session::build::BuildConfig {
            default_agent_image: args.default_agent_image.clone(),
            operator_namespace: args.operator_namespace.clone(),
            operator_pod_labels: args.operator_pod_labels.iter().cloned().collect(),
            git_image: args.git_image.clone(),
            default_editor_image: args.editor_image.clone(),
            github_host: args.clone_host(),
        },
        max_session_duration: args.max_session_duration,
    };
    let task_config = TaskConfig {
        default_github_owner: args.default_github_owner.clone(),
    };
    let scopes: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };
    // Shared by every scope, so `--agent-concurrency` bounds the process.
    let agents = AgentPool::new(usize::from(args.agent_concurrency));
    // Every controller drains its in-flight reconciles on SIGTERM/SIGINT, then returns.
    // The policy's caches (every replica keeps them warm) and the credentials' status.
    let feeds = ctx
        .take_policy_feeds()
        .context("the policy caches are fed once")?;
    let (credentials, namespaces) = feeds.start(client.clone());
    let policy_feeds = tokio::spawn(namespaces);
    let mut controllers = vec![tokio::spawn(crate::github_credential::run(
        ctx.clone(),
        credentials,
    ))];
    for scope in scopes {
        // One AgentSession watch per scope serves both controllers: the session controller
        // reconciles from it, the task controller hears of the sessions it waits for.
        let synced = ctx.register_cache("AgentSession");
        let primary_synced = synced.subscribe();
        let sessions_synced = synced.subscribe();
        let mut sessions = primary_watch(scoped::<SessionObject>(&client, &scope), synced);
        ctx.set_session_store(sessions.store.clone());
        let (changed_tx, changed_rx) = futures::channel::mpsc::unbounded();
        sessions.objects = sessions
            .objects
            .inspect(move |event| {
                if let Ok(s) = event {
                    let _ = changed_tx
                        .unbounded_send((s.namespace().unwrap_or_default(), s.name_any()));
                }
            })
            .boxed();
        controllers.push(tokio::spawn(crate::agent_session::controller::run(
            ctx.clone(),
            session_config.clone(),
            agents.clone(),
            sessions,
            primary_synced,
            scope.clone(),
        )));
        controllers.push(tokio::spawn(crate::github_task::run(
            ctx.clone(),
            task_config.clone(),
            scoped::<TaskObject>(&client, &scope),
            changed_rx,
            sessions_synced,
        )));
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
    policy_feeds.abort();
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
