//! `ccplant-bench`: the benchmarks behind `make bench` (DESIGN §6, issue 6). Each subcommand
//! starts its own control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK
//! nodes) and the operator binary, measures, and writes JSON under target/bench/ with the
//! previous run's figures beside the new ones.
//!
//!   ccplant-bench sessions [--sessions N] [--idle-seconds S] [--rate R] [--out FILE]
//!   ccplant-bench github [--tasks M] [--out FILE]
//!   ccplant-bench drills [--handover-trials N] [--restart-sessions N] [--kills N] [--only …]
//!
//! Every child process dies with the bench: the control plane and the operator are spawned with
//! PR_SET_PDEATHSIG from the main thread, and are stopped explicitly on success, error and
//! Ctrl-C.

mod drills;
mod env;
mod github;
mod report;
mod sessions;
mod stats;
mod track;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "ccplant-bench", about = "ccplant's benchmarks (make bench)")]
struct Cli {
    /// The operator binary; default: ccplant-operator next to this executable (built first
    /// with the same profile when run through cargo).
    #[arg(long, global = true, env = "BENCH_OPERATOR_BIN")]
    operator_bin: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A burst of AgentSessions against the floor of bare pods, idle writes, a steady rate.
    Sessions(sessions::SessionsArgs),
    /// GitHubTask throughput, calls per task and pacing against the fake GitHub.
    Github(github::GithubArgs),
    /// Failure drills: leader hand-over, apiserver restart mid-burst, crash injection.
    Drills(drills::DrillsArgs),
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ccplant-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let operator = env::operator_binary(cli.operator_bin.clone())?;
    let nodes = match &cli.command {
        Command::Sessions(a) => a.nodes(),
        Command::Github(_) => 1,
        Command::Drills(a) => a.nodes(),
    };
    // Outside any runtime, on the main thread (the processes' parent-death signal is tied to it).
    let mut cluster = env::Cluster::start(nodes)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let bench = async {
            match &cli.command {
                Command::Sessions(args) => sessions::run(args, &cluster, &operator).await,
                Command::Github(args) => github::run(args, &cluster, &operator).await,
                Command::Drills(args) => drills::run(args, &mut cluster, &operator).await,
            }
        };
        tokio::select! {
            r = bench => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    });
    // Dropping the runtime drops the operator's handle (kill_on_drop) if a run was cut short.
    drop(runtime);
    cluster.stop(result.is_ok());
    let report = result?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
