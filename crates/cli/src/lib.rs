//! `kubectl-ccplant`: a kubectl plugin for the everyday AgentSession verbs.
//!
//! Installed as `kubectl-ccplant` on `PATH`, it runs as `kubectl ccplant <verb>`:
//! `new`, `send`, `get`, `wait`, `suspend` and `resume`. It talks to the cluster of the current
//! kubeconfig context (`KUBECONFIG`, `--kubeconfig`, `--context`) and works on the namespace of
//! that context unless `-n` says otherwise. Errors are printed as one `error: …` line and the
//! process exits with status 1.

mod args;
mod cluster;
mod error;
mod format;
mod get;
mod lifecycle;
mod new;
mod send;
mod wait;

pub use args::{Cli, Command};
pub use error::Error;
pub use wait::WaitTarget;

/// Annotation `kubectl ccplant resume` sets to the current time (RFC 3339): it asks the
/// operator to resume a session it suspended itself after `lifetime.idleTimeout`, where
/// `spec.suspend` is already false and flipping it would change nothing. The name is part of
/// the API contract and lives in `ccplant_api`, which the operator reads it from.
pub const RESUME_ANNOTATION: &str = ccplant_api::annotations::RESUME_REQUESTED_AT;

/// Field manager of every write the plugin makes.
pub const FIELD_MANAGER: &str = "kubectl-ccplant";

/// Runs one parsed command line, writing its normal output to `out`.
pub async fn run(cli: Cli, out: &mut dyn std::io::Write) -> Result<(), Error> {
    let ctx = cluster::connect(&cli.global).await?;
    match cli.command {
        Command::New(a) => new::run(&ctx, a, out).await,
        Command::Send(a) => send::run(&ctx, a, out).await,
        Command::Get(a) => get::run(&ctx, a, out).await,
        Command::Wait(a) => wait::run(&ctx, a, out).await,
        Command::Suspend(a) => lifecycle::suspend(&ctx, a, out).await,
        Command::Resume(a) => lifecycle::resume(&ctx, a, out).await,
    }
}
