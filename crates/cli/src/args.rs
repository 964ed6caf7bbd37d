//! The command line: global flags and one struct per verb. The doc comments are the `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::wait::WaitTarget;

/// Manage ccplant AgentSessions: AI coding-agent sessions run by the ccplant operator.
///
/// Run as `kubectl ccplant <verb>` (kubectl finds `kubectl-ccplant` on PATH).
#[derive(Debug, Parser)]
#[command(name = "kubectl-ccplant", bin_name = "kubectl ccplant", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Which cluster and namespace to talk to, as with kubectl.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Namespace of the sessions [default: the namespace of the kubeconfig context, else
    /// "default"].
    #[arg(short, long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Path to the kubeconfig file [default: $KUBECONFIG, else ~/.kube/config, else the
    /// in-cluster service account].
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use [default: the current context].
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    New(NewArgs),
    Send(SendArgs),
    Get(GetArgs),
    Wait(WaitArgs),
    /// Suspend a session: the operator deletes its pod and keeps its workspace volume.
    ///
    /// Sets spec.suspend to true. `kubectl ccplant resume` starts it again.
    Suspend(NameArg),
    /// Resume a suspended session: the operator starts its pod again on the same workspace.
    ///
    /// Sets spec.suspend to false and the ccplant.io/resume-requested-at annotation to the
    /// current time, which also resumes a session the operator suspended after
    /// lifetime.idleTimeout.
    Resume(NameArg),
}

/// Create an AgentSession.
///
/// The operator starts the agent in a pod, delivers the prompt and then each message sent with
/// `kubectl ccplant send`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  kubectl ccplant new fix-flaky --image ghcr.io/acme/claude-agent:1.0 --repo acme/app \\\n    --prompt \"Fix the flaky test in ci.yml\" --when-idle"
)]
pub struct NewArgs {
    /// Name of the session (a DNS label: lowercase letters, digits and '-').
    pub name: String,

    /// Container image of the agent [default: the operator's --default-agent-image].
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// GitHub repository to clone into the workspace, as owner/repo.
    #[arg(long, value_name = "OWNER/REPO")]
    pub repo: Option<String>,

    /// Initial task for the agent (message 1).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,

    /// Finish the session (phase Succeeded) once every message was delivered and the agent
    /// stayed idle for --idle-for (spec.completion.mode WhenIdle). Without it the session runs
    /// until it is stopped or expires.
    #[arg(long)]
    pub when_idle: bool,

    /// With --when-idle: how long the agent must stay idle before the session Succeeds, as a
    /// duration such as 90s, 5m or 1h [default: 60s].
    #[arg(long, value_name = "DURATION", requires = "when_idle")]
    pub idle_for: Option<String>,

    /// Agent implementation.
    #[arg(long, value_name = "TYPE", default_value = "claude",
          value_parser = ["claude", "codex", "gemini", "aider", "goose", "custom"])]
    pub agent: String,
}

/// Queue a message for the agent of a session.
///
/// The message is appended to spec.messages; the operator delivers messages in order, each once,
/// after the agent finished the previous one. Concurrent sends never overwrite each other. The
/// printed number counts the prompt as message 1, like the DELIVERED column of `get`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Name of the session.
    pub name: String,

    /// The message text.
    pub message: String,
}

/// Show sessions: phase, agent state, messages delivered, endpoint, expiry and age.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Name of one session [default: all sessions of the namespace].
    pub name: Option<String>,

    /// Output format: the whole object(s) as json or yaml instead of the table.
    #[arg(short, long, value_name = "FORMAT", value_parser = ["json", "yaml"])]
    pub output: Option<String>,
}

/// Wait until a session reaches a phase, or until its agent is idle with every message
/// delivered.
///
/// Exits 0 once the condition holds. Exits 1 on timeout, when the session is deleted, or when it
/// finishes (Succeeded, Failed, Expired) in another phase than the one waited for.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kubectl ccplant wait my-session --for phase=Running --timeout 2m\n  kubectl ccplant wait my-session --for idle"
)]
pub struct WaitArgs {
    /// Name of the session.
    pub name: String,

    /// What to wait for: phase=<Pending|Starting|Running|Succeeded|Failed|Suspended|Expired>
    /// (or just the phase, e.g. Running), or idle (status.agent.state Idle and every message
    /// delivered).
    #[arg(long = "for", value_name = "CONDITION")]
    pub condition: WaitTarget,

    /// How long to wait, as a duration such as 30s, 5m or 1h.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub timeout: String,
}

/// A verb that takes one session name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Name of the session.
    pub name: String,
}
