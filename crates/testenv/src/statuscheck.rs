//! What other tools make of an object's status, computed by their own code
//! (`ccplant-statuscheck`, built from `statuscheck/main.go` with the control plane): kstatus
//! (sigs.k8s.io/cli-utils, as Flux, kpt and `kubectl wait` read status) and Argo CD's health
//! checks from `examples/argocd/argocd-cm-health.yaml`, run by gopher-lua as Argo CD runs them.

use crate::Binaries;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The Argo CD health checks ccplant ships.
pub fn argocd_health_checks() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/argocd/argocd-cm-health.yaml")
}

/// The verdicts of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdicts {
    /// kstatus: Current, InProgress, Failed, Terminating, …
    pub kstatus: String,
    pub kstatus_message: String,
    /// Argo CD: Healthy, Progressing, Degraded, Suspended, …
    pub argocd: String,
    pub argocd_message: String,
}

impl Verdicts {
    /// `"Current/Healthy"`.
    pub fn short(&self) -> String {
        format!("{}/{}", self.kstatus, self.argocd)
    }
}

fn run(
    bins: &Binaries,
    args: &[&str],
    objects: &[serde_json::Value],
) -> Result<Vec<(String, String)>> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let mut child = Command::new(&bins.statuscheck)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", bins.statuscheck.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(&serde_json::to_vec(&list)?)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ccplant-statuscheck {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let _object = parts.next();
            let verdict = parts.next().unwrap_or_default().to_string();
            (verdict, parts.next().unwrap_or_default().to_string())
        })
        .collect())
}

/// What kstatus and Argo CD say of `object` (as read from the apiserver).
pub fn verdicts<K: Serialize>(bins: &Binaries, object: &K) -> Result<Verdicts> {
    let value = serde_json::to_value(object)?;
    let checks = argocd_health_checks();
    let checks = checks.to_string_lossy();
    let kstatus = run(bins, &["kstatus"], std::slice::from_ref(&value))?;
    let argocd = run(
        bins,
        &["argocd-health", &checks],
        std::slice::from_ref(&value),
    )?;
    let (Some((kstatus, kstatus_message)), Some((argocd, argocd_message))) =
        (kstatus.into_iter().next(), argocd.into_iter().next())
    else {
        bail!("ccplant-statuscheck printed no verdict");
    };
    Ok(Verdicts {
        kstatus,
        kstatus_message,
        argocd,
        argocd_message,
    })
}
