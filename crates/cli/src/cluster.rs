//! Connecting to the cluster the way kubectl does.

use ccplant_api::AgentSession;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::args::GlobalArgs;
use crate::error::{Error, Subject};

/// A client and the namespace the command works in.
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub namespace: String,
    pub cluster_url: String,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("namespace", &self.namespace)
            .field("cluster_url", &self.cluster_url)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// The AgentSessions of the namespace.
    pub fn sessions(&self) -> Api<AgentSession> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// For classifying the errors of a request about `name` (or the whole namespace).
    pub fn subject<'a>(&'a self, name: Option<&'a str>) -> Subject<'a> {
        Subject {
            namespace: &self.namespace,
            name,
            cluster_url: &self.cluster_url,
        }
    }

    /// The session `name`, or why it cannot be read.
    pub async fn get_session(&self, name: &str) -> Result<AgentSession, Error> {
        self.sessions()
            .get(name)
            .await
            .map_err(|e| self.subject(Some(name)).error(e))
    }
}

/// Loads the configuration: `--kubeconfig`, else `$KUBECONFIG` / `~/.kube/config` (with
/// `--context`), else the in-cluster service account. No request is made yet.
pub async fn connect(args: &GlobalArgs) -> Result<Ctx, Error> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&args.kubeconfig, &args.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::Kubeconfig(e.to_string()))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?,
        (None, None) => Config::infer()
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let cluster_url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(Ctx {
        client,
        namespace,
        cluster_url,
    })
}
