//! `ccplant-operator`: the ccplant Kubernetes operator.
//!
//! `ccplant-operator run` (the default) runs the controllers; `ccplant-operator crd` prints the
//! CustomResourceDefinitions. See README.md for what works today.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "ccplant-operator",
    version,
    about = "The ccplant Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator (the default when no subcommand is given).
    Run(Box<ccplant_operator::config::RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (multi-document), or write one file per CRD.
    Crd {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(c) => c,
        None => Cli::parse_from(["ccplant-operator", "run"])
            .command
            .context("run")?,
    };
    match command {
        Command::Run(args) => {
            ccplant_operator::telemetry::init(args.log_format, &args.log_level)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(ccplant_operator::run::run(*args))?;
        }
        Command::Crd { output_dir } => {
            let docs = ccplant_operator::crd_documents()?;
            match output_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    for (file, yaml) in docs {
                        let path = dir.join(file);
                        std::fs::write(&path, yaml)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                }
                None => {
                    for (_, yaml) in docs {
                        print!("---\n{yaml}");
                    }
                }
            }
        }
    }
    Ok(())
}
