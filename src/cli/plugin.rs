//! kubectl plugin verbs (`kubectl baton ...`, or `baton ...`): thin, declarative
//! changes to the resources, so the same is possible from a GitOps repository.
//!
//! `runner adopt|reject` patch `spec.adoption`; `runner forget` deletes the Runner;
//! `runner decommission` annotates it `baton.dev/decommission: "true"` (the
//! controller tells the runner `delete` when it is connected, now or later, then
//! deletes the Runner); `token create` creates a RunnerToken and prints its token once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};

use crate::crd::conditions;
use crate::crd::runner::DECOMMISSION_ANNOTATION;
use crate::crd::runner_token::SECRET_KEY;
use crate::crd::{Runner, RunnerToken, RunnerTokenSpec};

/// Field manager of the plugin's patches.
const MANAGER: &str = "kubectl-baton";

/// The usual kubectl flags.
#[derive(Debug, Args, Clone, Default)]
pub struct KubeArgs {
    /// Namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
}

impl KubeArgs {
    /// A client and the namespace to work in.
    pub async fn connect(&self) -> anyhow::Result<(Client, String)> {
        let (config, ns) = self.config().await?;
        Ok((Client::try_from(config)?, ns))
    }

    /// The kube config these flags name, and the namespace to work in.
    pub async fn config(&self) -> anyhow::Result<(kube::Config, String)> {
        let opts = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .with_context(|| format!("read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &opts).await?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&opts).await?,
            None => kube::Config::infer()
                .await
                .context("load the kube config")?,
        };
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok((config, ns))
    }
}

/// `runner list | adopt | reject | forget | decommission`.
#[derive(Debug, Subcommand)]
pub enum RunnerVerb {
    /// List the runners and their adoption, connection and readiness.
    List {
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Adopt a runner (spec.adoption: Adopted); a Pending one is issued a token.
    Adopt {
        name: String,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Reject a runner (spec.adoption: Rejected): its requests are refused.
    Reject {
        name: String,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Forget a runner (delete its Runner); with a still-valid token it may return.
    Forget {
        name: String,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Tell a connected runner to wipe its state and exit, then forget it.
    Decommission {
        name: String,
        #[command(flatten)]
        kube: KubeArgs,
    },
}

/// `token create`.
#[derive(Debug, Subcommand)]
pub enum TokenVerb {
    /// Create a RunnerToken, wait for it, print the token (once).
    Create {
        name: String,
        /// Lifetime, e.g. 24h (default 720h).
        #[arg(long)]
        ttl: Option<String>,
        /// Only a runner of this name may use the token.
        #[arg(long)]
        runner: Option<String>,
        /// Labels runners registering with it get: k=v,k2=v2.
        #[arg(long, value_parser = crate::runner::parse_labels, default_value = "")]
        labels: std::collections::BTreeMap<String, String>,
        /// How long to wait for the controller to mint it.
        #[arg(long, default_value = "60")]
        wait_seconds: u64,
        #[command(flatten)]
        kube: KubeArgs,
    },
}

pub async fn runner(verb: RunnerVerb) -> anyhow::Result<i32> {
    match verb {
        RunnerVerb::List { kube } => {
            let (client, ns) = kube.connect().await?;
            let api: Api<Runner> = Api::namespaced(client, &ns);
            let list = api
                .list(&ListParams::default())
                .await
                .context("list Runners")?;
            println!("{}", list_table(&list.items));
            Ok(0)
        }
        RunnerVerb::Adopt { name, kube } => set_adoption(&kube, &name, "Adopted").await,
        RunnerVerb::Reject { name, kube } => set_adoption(&kube, &name, "Rejected").await,
        RunnerVerb::Forget { name, kube } => {
            let (client, ns) = kube.connect().await?;
            forget(&Api::namespaced(client, &ns), &name).await?;
            println!("runner {name} forgotten");
            Ok(0)
        }
        RunnerVerb::Decommission { name, kube } => {
            let (client, ns) = kube.connect().await?;
            let api: Api<Runner> = Api::namespaced(client, &ns);
            let patch = serde_json::json!({
                "metadata": { "annotations": { DECOMMISSION_ANNOTATION: "true" } }
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("annotate Runner {name} for decommission"))?;
            println!(
                "runner {name} marked for decommission: the controller tells it to wipe its state \
                 directory and exit as soon as it is connected (now, if it is), then deletes the Runner"
            );
            Ok(0)
        }
    }
}

async fn set_adoption(kube: &KubeArgs, name: &str, decision: &str) -> anyhow::Result<i32> {
    let (client, ns) = kube.connect().await?;
    patch_adoption(&Api::namespaced(client, &ns), name, decision).await?;
    println!("runner {name} {}", decision.to_lowercase());
    Ok(0)
}

/// `runner adopt|reject`: patch `spec.adoption` (`Adopted` or `Rejected`).
pub async fn patch_adoption(api: &Api<Runner>, name: &str, decision: &str) -> anyhow::Result<()> {
    let patch = serde_json::json!({ "spec": { "adoption": decision } });
    let pp = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    api.patch(name, &pp, &Patch::Merge(&patch))
        .await
        .with_context(|| format!("set spec.adoption of Runner {name} to {decision}"))?;
    Ok(())
}

/// `runner forget`: delete the Runner.
pub async fn forget(api: &Api<Runner>, name: &str) -> anyhow::Result<()> {
    api.delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("delete Runner {name}"))?;
    Ok(())
}

/// `runner list` output: one row per runner.
pub fn list_table(runners: &[Runner]) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "ADOPTION".into(),
        "CONNECTED".into(),
        "READY".into(),
        "DISABLED".into(),
        "DIRECT-ONLY".into(),
        "RUNNER-ID".into(),
        "KEY".into(),
    ]];
    for r in runners {
        let status = r.status.clone().unwrap_or_default();
        let cond = |t: &str| {
            conditions::find(&status.conditions, t)
                .map(|c| c.status.clone())
                .unwrap_or_else(|| "-".into())
        };
        rows.push([
            r.name_any(),
            status
                .adoption
                .map(|a| format!("{a:?}"))
                .unwrap_or_else(|| "-".into()),
            cond("Connected"),
            cond("Ready"),
            r.spec.disabled.to_string(),
            status.direct_only.unwrap_or(false).to_string(),
            status.runner_id.unwrap_or_else(|| "-".into()),
            // What an operator compares with the runner's log before adopting it.
            status.key_fingerprint.unwrap_or_else(|| "-".into()),
        ]);
    }
    super::table::aligned(&rows, "  ")
}

pub async fn token(verb: TokenVerb) -> anyhow::Result<i32> {
    let TokenVerb::Create {
        name,
        ttl,
        runner,
        labels,
        wait_seconds,
        kube,
    } = verb;
    if let Some(ttl) = &ttl {
        crate::crd::duration::parse(ttl)?;
    }
    let (client, ns) = kube.connect().await?;
    let api: Api<RunnerToken> = Api::namespaced(client.clone(), &ns);
    let rt = RunnerToken::new(
        &name,
        RunnerTokenSpec {
            runner_name: runner,
            labels,
            ttl,
        },
    );
    let pp = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    api.create(&pp, &rt)
        .await
        .with_context(|| format!("create RunnerToken {name}"))?;
    let minted = |rt: Option<&RunnerToken>| {
        rt.and_then(|r| r.status.as_ref())
            .is_some_and(|s| s.secret_name.is_some() && s.token_hash.is_some())
    };
    let rt = tokio::time::timeout(
        Duration::from_secs(wait_seconds),
        await_condition(api, &name, minted),
    )
    .await
    .map_err(|_| anyhow!("the controller did not mint RunnerToken {name} within {wait_seconds}s; is `baton controller` running?"))?
    .context("watch the RunnerToken")?
    .ok_or_else(|| anyhow!("RunnerToken {name} was deleted"))?;
    let status = rt.status.unwrap_or_default();
    if !conditions::is_true(&status.conditions, "Ready") {
        let why = conditions::find(&status.conditions, "Ready")
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_default();
        bail!("RunnerToken {name} is not Ready ({why})");
    }
    let secret_name = status.secret_name.unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client, &ns);
    let secret = secrets
        .get(&secret_name)
        .await
        .with_context(|| format!("read Secret {secret_name}"))?;
    let token = secret
        .data
        .and_then(|d| d.get(SECRET_KEY).cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .ok_or_else(|| anyhow!("Secret {secret_name} has no key {SECRET_KEY}"))?;
    println!("{token}");
    eprintln!(
        "RunnerToken {name} in namespace {ns}; expires {}. Give it to a runner as BATON_RUNNER_TOKEN; it is not shown again.",
        status
            .expires_at
            .map(|t| t.0.to_string())
            .unwrap_or_default()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RunnerSpec;
    use crate::crd::runner::{AdoptionState, RunnerStatus};

    #[test]
    fn list_shows_adoption_and_conditions() {
        let mut r = Runner::new("r1", RunnerSpec::default());
        r.status = Some(RunnerStatus {
            adoption: Some(AdoptionState::Rejected),
            runner_id: Some("abc".into()),
            key_fingerprint: Some("SHA256:fp".into()),
            ..Default::default()
        });
        let t = list_table(&[r]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].contains("Rejected"), "{t}");
        let direct = |r: &Runner| list_table(std::slice::from_ref(r));
        let mut d = Runner::new("r2", RunnerSpec::default());
        d.status = Some(RunnerStatus {
            direct_only: Some(true),
            ..Default::default()
        });
        let columns = |t: &str, row: usize| -> Vec<String> {
            t.lines()
                .nth(row)
                .expect("a row")
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(columns(&direct(&d), 0)[5], "DIRECT-ONLY");
        assert_eq!(columns(&direct(&d), 1)[5], "true");
        assert!(lines[1].contains("abc"), "{t}");
        assert!(
            lines[0].ends_with("KEY") && lines[1].ends_with("SHA256:fp"),
            "{t}"
        );
    }
}
