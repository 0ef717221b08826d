//! Command-line surface of the one `baton` binary.

use clap::{Parser, Subcommand};

pub mod artifacts;
pub mod content;
pub mod daemons;
pub mod dashboard;
mod here;
pub mod job;
pub mod job_list;
pub mod job_logs;
pub mod local;
pub mod plugin;
pub mod step_end;
mod table;
pub mod terminal;
mod upload;
mod workspace;

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
    /// The operator: reconcilers, the runner API, /healthz, /livez, /readyz.
    Controller(daemons::ControllerArgs),
    /// Run a runner agent (`--server ...`), or manage runners (`list`, `adopt`, ...).
    Runner(RunnerCmd),
    /// Manage RunnerTokens.
    Token {
        #[command(subcommand)]
        verb: plugin::TokenVerb,
    },
    /// Run, follow, list and cancel Jobs on the cluster.
    Job {
        #[command(subcommand)]
        verb: job::JobVerb,
    },
    /// Serve the web dashboard on 127.0.0.1, acting with your kubeconfig credentials.
    Dashboard(dashboard::DashboardArgs),
    /// What the kubernetes backend's workspace helper pods run.
    #[command(hide = true)]
    Workspace {
        #[command(subcommand)]
        verb: workspace::WorkspaceVerb,
    },
}

/// `baton runner`: the agent with flags, or a plugin verb.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RunnerCmd {
    #[command(subcommand)]
    pub verb: Option<plugin::RunnerVerb>,
    #[command(flatten)]
    pub agent: Option<daemons::AgentArgs>,
}

/// Parse the command line. Invoked as `kubectl-baton` (a kubectl plugin), the
/// same commands are shown as `kubectl baton ...`.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let plugin = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "kubectl-baton");
    let mut cmd = Cli::command();
    if plugin {
        cmd = cmd.bin_name("kubectl baton");
    }
    Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit())
}

/// Run a parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => local::run(args).await,
        Command::Controller(args) => daemons::controller(args).await,
        Command::Runner(RunnerCmd {
            verb: Some(verb), ..
        }) => plugin::runner(verb).await,
        Command::Runner(RunnerCmd {
            agent: Some(agent), ..
        }) => daemons::agent(agent).await,
        Command::Runner(_) => {
            anyhow::bail!(
                "baton runner: give --server, --name and --state-dir, or a verb (list, adopt, ...)"
            )
        }
        Command::Token { verb } => plugin::token(verb).await,
        Command::Job { verb } => job::job(verb).await,
        Command::Dashboard(args) => dashboard::run(args).await,
        Command::Workspace { verb } => workspace::run(verb).await,
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
