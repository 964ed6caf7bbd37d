//! Locating (and, on first use, building) the control-plane binaries.

use crate::process::require_executable;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Paths of every binary the test environment runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
    pub kwok: PathBuf,
    pub helm: PathBuf,
    /// agentapi (github.com/coder/agentapi), the agent HTTP API of a session pod.
    pub agentapi: PathBuf,
    /// kstatus and Argo CD's health checks, computed by their own code (`statuscheck/`).
    pub statuscheck: PathBuf,
    /// KWOK's upstream Stage definitions (`node/fast/…`, `pod/fast/…`).
    pub kwok_stages: PathBuf,
}

/// The script that builds the binaries from Go modules and prints their directory.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-binaries.sh")
}

impl Binaries {
    /// Uses `CCPLANT_TESTENV_BIN` when set, else runs the build script (a no-op when cached).
    pub fn ensure() -> Result<Self> {
        let dir = match std::env::var_os("CCPLANT_TESTENV_BIN") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let script = build_script();
                let out = Command::new("bash")
                    .arg(&script)
                    .stdin(Stdio::null())
                    .stderr(Stdio::inherit())
                    .output()
                    .with_context(|| format!("running {}", script.display()))?;
                if !out.status.success() {
                    bail!(
                        "{} failed ({}); it builds the control plane from Go modules and needs Go >= 1.25 and the Go module proxy",
                        script.display(),
                        out.status
                    );
                }
                let stdout = String::from_utf8_lossy(&out.stdout);
                PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
            }
        };
        Self::in_dir(&dir)
    }

    pub fn in_dir(dir: &Path) -> Result<Self> {
        let b = Binaries {
            dir: dir.to_path_buf(),
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
            kube_scheduler: dir.join("kube-scheduler"),
            kubectl: dir.join("kubectl"),
            kwok: dir.join("kwok"),
            helm: dir.join("helm"),
            agentapi: dir.join("agentapi"),
            statuscheck: dir.join("ccplant-statuscheck"),
            kwok_stages: dir.parent().unwrap_or(dir).join("kwok-stages"),
        };
        for bin in [
            &b.etcd,
            &b.kube_apiserver,
            &b.kube_controller_manager,
            &b.kube_scheduler,
            &b.kubectl,
            &b.kwok,
            &b.helm,
            &b.agentapi,
            &b.statuscheck,
        ] {
            require_executable(bin)
                .context("run crates/testenv/scripts/build-binaries.sh (make testenv-bins)")?;
        }
        Ok(b)
    }
}
