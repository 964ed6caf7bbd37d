//! `ccplant-operator`: the ccplant Kubernetes operator.
//!
//! This build has one subcommand, `crd`, which prints (or writes) the CustomResourceDefinitions.
//! The controllers arrive in later releases; see README.md for what works today.

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
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (multi-document), or write one file per CRD.
    Crd {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
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
