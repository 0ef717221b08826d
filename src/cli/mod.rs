//! Command-line surface of the one `baton` binary.

use clap::{Parser, Subcommand};

pub mod local;

/// Baton runs CI/CD jobs on Kubernetes runners, or locally with `baton run`.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions as YAML (what config/crd/ holds).
    Crd {
        /// Write one file per CRD into each of these directories instead of printing.
        #[arg(long, value_name = "DIR")]
        dir: Vec<std::path::PathBuf>,
    },
    /// Run a Job manifest locally: steps as processes on this machine, no cluster.
    Run(local::RunArgs),
}

/// Run a parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => local::run(args).await,
        Command::Crd { dir } if dir.is_empty() => {
            print!("{}", crate::crd::all_yaml()?);
            Ok(0)
        }
        Command::Crd { dir } => {
            for dir in dir {
                for (file, yaml) in crate::crd::files()? {
                    let path = dir.join(file);
                    std::fs::write(&path, yaml)
                        .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
            }
            Ok(0)
        }
    }
}
