//! `ccplant-fake-github`: the in-memory fake GitHub REST API as a process, for the demo and for
//! running a client by hand.
//!
//!   ccplant-fake-github [--addr 127.0.0.1:0] [--seed demo] [--token TOKEN[:LOGIN]]...
//!
//! Prints `listening on http://…` once it accepts connections and serves until SIGTERM or
//! SIGINT. `--seed demo` creates ccplant-demo/hello-world (main, feature/greeting,
//! feature/farewell); each `--token` registers a personal access token (login `demo-user`
//! unless given after a colon).

use anyhow::{Context, Result, bail};
use ccplant_testenv::fake_github::FakeGitHub;
use std::io::Write;
use std::net::SocketAddr;
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str =
    "usage: ccplant-fake-github [--addr 127.0.0.1:0] [--seed demo] [--token TOKEN[:LOGIN]]...";
const DEFAULT_LOGIN: &str = "demo-user";

struct Options {
    addr: SocketAddr,
    seed_demo: bool,
    tokens: Vec<(String, String)>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options> {
    let mut options = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed_demo: false,
        tokens: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--addr" => {
                let raw = value("--addr")?;
                options.addr = raw
                    .parse()
                    .with_context(|| format!("--addr {raw}: expected IP:PORT"))?;
            }
            "--seed" => match value("--seed")?.as_str() {
                "demo" => options.seed_demo = true,
                other => bail!("unknown seed {other:?} (only \"demo\" exists)"),
            },
            "--token" => {
                let raw = value("--token")?;
                let (token, login) = raw.split_once(':').unwrap_or((&raw, DEFAULT_LOGIN));
                if token.is_empty() || login.is_empty() {
                    bail!("--token needs TOKEN or TOKEN:LOGIN");
                }
                options.tokens.push((token.to_string(), login.to_string()));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("ccplant-fake-github: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let options = parse_args(std::env::args().skip(1))?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let github = FakeGitHub::start_on(options.addr).await?;
    if options.seed_demo {
        github.seed_demo();
    }
    for (token, login) in &options.tokens {
        github.add_token(token, login);
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", github.url())?;
    stdout.flush()?;

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    drop(github);
    Ok(())
}
