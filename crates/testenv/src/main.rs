//! `ccplant-testenv`: start and stop the local control plane outside of tests.
//!
//!   ccplant-testenv up [--dir DIR] [--nodes N] [--loopback-pods]
//!                                    starts it detached, prints `export KUBECONFIG=…`; with
//!                                    --loopback-pods KWOK gives pods loopback IPs (a /16 of
//!                                    127.0.0.0/8 reserved while the control plane runs)
//!   ccplant-testenv down [--dir DIR]             stops exactly the processes `up` started
//!   ccplant-testenv agents --kubeconfig K --namespace NS [--work SECONDS]
//!                                    serves a fake agentapi at each session pod's IP in NS
//!                                    (needs --loopback-pods) until SIGTERM
//!   ccplant-testenv bins                         builds/locates the binaries, prints their dir

use anyhow::{Context, Result, bail};
use ccplant_testenv::process::ManagedProcess;
use ccplant_testenv::{Binaries, ControlPlane, Lifetime, StartOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const USAGE: &str = "usage: ccplant-testenv up [--dir DIR] [--nodes N] [--loopback-pods] | down [--dir DIR] | agents --kubeconfig K --namespace NS [--work SECONDS] | bins";

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
    let mut loopback = false;
    let mut kubeconfig = None;
    let mut namespace = None;
    let mut work = 2.0f64;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(args.next().context("--dir needs a value")?),
            "--nodes" => nodes = args.next().context("--nodes needs a value")?.parse()?,
            "--loopback-pods" => loopback = true,
            "--kubeconfig" => {
                kubeconfig = Some(PathBuf::from(
                    args.next().context("--kubeconfig needs a value")?,
                ))
            }
            "--namespace" => namespace = Some(args.next().context("--namespace needs a value")?),
            "--work" => work = args.next().context("--work needs a value")?.parse()?,
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let dir = std::path::absolute(&dir)?;
    match cmd.as_str() {
        "up" => up(&dir, nodes, loopback),
        "agents" => agents(
            &kubeconfig.context("agents needs --kubeconfig")?,
            &namespace.context("agents needs --namespace")?,
            std::time::Duration::from_secs_f64(work),
        ),
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

/// Fake agents for the session pods of `namespace` until SIGTERM or SIGINT.
fn agents(kubeconfig: &Path, namespace: &str, work: std::time::Duration) -> Result<()> {
    use ccplant_testenv::fake_agent::{AgentHost, Script};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = ccplant_testenv::controlplane::client_for(kubeconfig).await?;
        let script = Script {
            work,
            chatter_per_sec: 4,
            ..Script::default()
        };
        let host = AgentHost::start(client, namespace, script).await?;
        eprintln!("ccplant-testenv: fake agents serve the session pods of {namespace}");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        host.stop().await;
        Ok(())
    })
}

fn up(dir: &Path, nodes: usize, loopback: bool) -> Result<()> {
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
    let lock = if loopback {
        let (cidr, lock) = ccplant_testenv::reserve_loopback_pod_cidr_for_children()?;
        opts.pod_cidr = cidr;
        Some(lock)
    } else {
        None
    };
    let mut cp = ControlPlane::start(&bins, &opts)?;
    if lock.is_some() {
        // A process that only inherits the range's lock, so it stays reserved until `down`.
        let holder = ManagedProcess::spawn(
            "loopback-range",
            Path::new("sleep"),
            &["infinity".to_string()],
            &dir.join("logs"),
            Lifetime::Detached,
        )?;
        cp.processes.push(holder);
        eprintln!("ccplant-testenv: pod IPs from {} (loopback)", opts.pod_cidr);
    }
    drop(lock);
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
