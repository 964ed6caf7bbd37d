//! `ccplant-operator run`: connect, check the CRDs, run the controllers until SIGTERM/SIGINT.

use crate::config::RunArgs;
use crate::context::Context;
use crate::credentials::GitHubClients;
use anyhow::{Context as _, Result, bail};
use ccplant_api::{AgentSession, GitHubTask};
use kube::api::{Api, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource};
use tracing::info;

/// Fails with a clear message when a CRD is not installed.
async fn require_crd<K>(client: &Client) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::all(client.clone());
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
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or in-cluster)")?;
    require_crd::<GitHubTask>(&client).await?;
    require_crd::<AgentSession>(&client).await?;

    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ccplant-operator".into(),
            instance: Some(identity.clone()),
        },
    );
    let github = GitHubClients::new(&args.github_api_url, args.github_timeout);
    let ctx = Context::new(client.clone(), recorder, github, crate::leader::Leadership::always(), &args);
    info!(%identity, namespaces = ?args.namespaces, github_api_url = %args.github_api_url, "starting controllers");

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
    let mut controllers = Vec::new();
    for scope in scopes {
        controllers.push(tokio::spawn(crate::agent_session::controller::run(
            ctx.clone(),
            build.clone(),
            args.max_session_duration,
            args.session_concurrency,
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
    for c in controllers {
        c.await.context("controller task")?;
    }
    info!("stopped");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "ccplant-operator".into())
}
