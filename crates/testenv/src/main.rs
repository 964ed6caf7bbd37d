//! `ccplant-testenv`: start and stop the local control plane outside of tests.
//!
//!   ccplant-testenv up [--dir DIR] [--nodes N]   starts it detached, prints `export KUBECONFIG=…`
//!   ccplant-testenv down [--dir DIR]             stops exactly the processes `up` started
//!   ccplant-testenv bins                         builds/locates the binaries, prints their dir

use anyhow::{Context, Result, bail};
use ccplant_testenv::process::ManagedProcess;
use ccplant_testenv::{Binaries, ControlPlane, Lifetime, StartOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: ccplant-testenv up [--dir DIR] [--nodes N] | down [--dir DIR] | bins";

fn main() {
    if let Err(e) = run() {
        eprintln!("ccplant-testenv: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let mut dir = PathBuf::from("target/testenv");
    let mut nodes = 2usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(args.next().context("--dir needs a value")?),
            "--nodes" => nodes = args.next().context("--nodes needs a value")?.parse()?,
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let dir = std::path::absolute(&dir)?;
    match cmd.as_str() {
        "up" => up(&dir, nodes),
        "down" => down(&dir),
        "bins" => {
            println!("{}", Binaries::ensure()?.dir.display());
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn load_state(dir: &Path) -> Result<Option<(PathBuf, Vec<ManagedProcess>)>> {
    let path = state_file(dir);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let state: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let kubeconfig = PathBuf::from(state["kubeconfig"].as_str().unwrap_or_default());
    let procs = state["processes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some(ManagedProcess::adopt(
                        p["name"].as_str()?,
                        i32::try_from(p["pid"].as_i64()?).ok()?,
                        p["startTicks"].as_u64()?,
                        PathBuf::from(p["log"].as_str()?),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some((kubeconfig, procs)))
}

fn up(dir: &Path, nodes: usize) -> Result<()> {
    if let Some((kubeconfig, procs)) = load_state(dir)? {
        if !procs.is_empty() && procs.iter().all(|p| p.is_same_process_alive()) {
            eprintln!(
                "ccplant-testenv: already running ({} processes)",
                procs.len()
            );
            println!("export KUBECONFIG={}", kubeconfig.display());
            return Ok(());
        }
        eprintln!(
            "ccplant-testenv: a previous control plane in {} is incomplete; stopping it",
            dir.display()
        );
        down(dir)?;
    }
    // Leftovers of a start that failed half-way (old etcd data, logs) must not leak into this one.
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let bins = Binaries::ensure()?;
    let mut opts = StartOptions::new(dir, Lifetime::Detached);
    opts.nodes = nodes;
    let cp = ControlPlane::start(&bins, &opts)?;
    let state = json!({
        "kubeconfig": cp.kubeconfig,
        "apiserver": cp.apiserver_url,
        "processes": cp.processes.iter().map(|p| json!({
            "name": p.name, "pid": p.pid, "startTicks": p.start_ticks, "log": p.log,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(state_file(dir), serde_json::to_string_pretty(&state)?)?;
    eprintln!(
        "ccplant-testenv: logs in {}; stop with `make testenv-down`",
        dir.join("logs").display()
    );
    println!("export KUBECONFIG={}", cp.kubeconfig.display());
    Ok(())
}

fn down(dir: &Path) -> Result<()> {
    let Some((_, mut procs)) = load_state(dir)? else {
        eprintln!("ccplant-testenv: nothing running in {}", dir.display());
        return Ok(());
    };
    ccplant_testenv::controlplane::stop_in_order(&mut procs);
    let left: Vec<_> = procs
        .iter()
        .filter(|p| p.is_same_process_alive())
        .map(|p| p.pid)
        .collect();
    if !left.is_empty() {
        bail!("processes still running after SIGKILL: {left:?}");
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    eprintln!("ccplant-testenv: stopped {} processes", procs.len());
    Ok(())
}
