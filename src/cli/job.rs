//! `kubectl baton job run | logs | list | cancel`.
//!
//! `run` applies a Job (a create: with `metadata.generateName`, a new Job with a
//! generated name each run, whose name is printed and followed; a fixed name that
//! exists already is refused with how to go on); `cancel` patches
//! `spec.cancel: true`; both are what a GitOps repository could do too. Logs come
//! from the controller's server (`--server` / `BATON_SERVER`, see [`super::job_logs`]
//! for what is refused and how logs are printed), which lets a caller
//! read them only if Kubernetes RBAC allows it to `get` that Job: the caller's
//! bearer token (`--token` / `BATON_TOKEN`) is checked there with a TokenReview and
//! a SubjectAccessReview; it must be minted for Baton (`kubectl create token SA
//! --audience baton`), a token meant for the API server is refused. A kubeconfig
//! that authenticates with client certificates has no bearer token to forward.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;

use super::job_logs::{LogClient, ServerArgs};
use super::plugin::KubeArgs;
use super::step_end;
use crate::crd::Job;
use crate::crd::job::JobPhase;

pub(super) const MANAGER: &str = "kubectl-baton";

/// `job run | logs | list | cancel`.
#[derive(Debug, Subcommand)]
pub enum JobVerb {
    /// Create a Job from a manifest (with metadata.generateName, a new Job each
    /// run, its name printed); with -f follow its logs to the end and exit with its
    /// result (0 Succeeded, 1 Failed or Cancelled).
    Run {
        file: PathBuf,
        #[arg(short = 'f', long)]
        follow: bool,
        /// Run it here: a runner inside this command (local backend, the current
        /// directory as /workspace) takes it, and only it; logs followed, the
        /// runner and its RunnerToken removed at the end. Ctrl-C cancels the Job.
        #[arg(long)]
        here: bool,
        /// With --here: how long to wait for the controller (token minted, runner
        /// connected) and, after Ctrl-C, for the Job to end cancelled.
        #[arg(long, default_value = "60", requires = "here")]
        wait_seconds: u64,
        /// Send DIR as the Job's content: unpacked into /workspace before its
        /// first step (what spec.inputs maps, all of DIR by default; never
        /// .git/ or what .gitignore ignores). Needs --server and --token.
        #[arg(long, value_name = "DIR", conflicts_with = "here")]
        upload: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Print a Job's logs (every step in spec order, or --step); -f follows them
    /// live until the Job ends.
    Logs {
        name: String,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        step: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Download the archives of what a Job's steps changed (`collect`,
    /// `artifacts`) and extract them into DIR, in the order the steps ended.
    Artifacts {
        name: String,
        /// Only this step's archive.
        #[arg(long)]
        step: Option<String>,
        /// Where to extract (created if missing).
        #[arg(short = 'o', long = "output", value_name = "DIR")]
        output: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// List the Jobs: phase, priority, and for a Queued one its place in the
    /// queue and why it waits (the Scheduled condition's reason).
    List {
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Cancel a Job (spec.cancel: true), in any phase.
    Cancel {
        name: String,
        #[command(flatten)]
        kube: KubeArgs,
    },
}

pub async fn job(verb: JobVerb) -> anyhow::Result<i32> {
    match verb {
        JobVerb::Run {
            file,
            here: true,
            wait_seconds,
            server,
            kube,
            ..
        } => super::here::run(&file, &server, &kube, Duration::from_secs(wait_seconds)).await,
        JobVerb::Run {
            file,
            follow,
            upload,
            server,
            kube,
            ..
        } => {
            // Before the Job exists: a refused --server must not leave it behind.
            let logs = (follow || upload.is_some())
                .then(|| LogClient::new(&server))
                .transpose()?;
            let (mut job, naming) = load(&file)?;
            let (client, ns) = kube.connect().await?;
            job.metadata.namespace = Some(ns.clone());
            if let (Some(dir), Some(server)) = (&upload, &logs) {
                super::upload::attach(&mut job, dir, &ns, server).await?;
            }
            let api: Api<Job> = Api::namespaced(client, &ns);
            let pp = PostParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            };
            let created = api
                .create(&pp, &job)
                .await
                .map_err(|e| create_failed(e, &ns, &naming))?;
            let name = created.name_any();
            eprintln!("job.baton.dev/{name} created");
            let Some(logs) = logs.filter(|_| follow) else {
                return Ok(0);
            };
            print_logs(&api, &ns, &name, None, true, &logs).await?;
            finish(&api, &name).await
        }
        JobVerb::Logs {
            name,
            follow,
            step,
            server,
            kube,
        } => {
            // The flags first: a refused --server or a missing token before any API call.
            let logs = LogClient::new(&server)?;
            let (client, ns) = kube.connect().await?;
            let api: Api<Job> = Api::namespaced(client, &ns);
            print_logs(&api, &ns, &name, step.as_deref(), follow, &logs).await?;
            Ok(0)
        }
        JobVerb::Artifacts {
            name,
            step,
            output,
            server,
            kube,
        } => crate::cli::artifacts::run(&name, step.as_deref(), &output, &server, &kube).await,
        JobVerb::List { kube } => {
            let (client, ns) = kube.connect().await?;
            let api: Api<Job> = Api::namespaced(client, &ns);
            let list = api
                .list(&ListParams::default())
                .await
                .context("list Jobs")?;
            let now = k8s_openapi::jiff::Timestamp::now();
            println!("{}", super::job_list::list_table(&list.items, now));
            Ok(0)
        }
        JobVerb::Cancel { name, kube } => {
            let (client, ns) = kube.connect().await?;
            cancel(&Api::namespaced(client, &ns), &name).await?;
            println!("job.baton.dev/{name} cancel requested");
            Ok(0)
        }
    }
}

/// `job cancel`: patch `spec.cancel: true`.
pub async fn cancel(api: &Api<Job>, name: &str) -> anyhow::Result<()> {
    api.patch(
        name,
        &PatchParams::apply(MANAGER),
        &Patch::Merge(serde_json::json!({ "spec": { "cancel": true } })),
    )
    .await
    .with_context(|| format!("cancel Job {name}"))?;
    Ok(())
}

/// The Job in a manifest file, and how it is named.
pub(super) fn load(file: &Path) -> anyhow::Result<(Job, Naming)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let job: Job = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow!("{} is not a Job manifest: {e}", file.display()))?;
    let naming =
        naming(&job.metadata).map_err(|problem| anyhow!("{}: {problem}", file.display()))?;
    Ok((job, naming))
}

/// How `job run` names the Job it creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Naming {
    /// `metadata.name`: one Job of that name; a second run finds it exists.
    Fixed(String),
    /// `metadata.generateName` (and no name): the API server adds a random
    /// suffix, so every run creates a new Job.
    Generated(String),
}

/// How the manifest names its Job, or why it cannot be created.
fn naming(meta: &ObjectMeta) -> Result<Naming, String> {
    let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    // As the API server does: a name wins over generateName.
    match (set(&meta.name), set(&meta.generate_name)) {
        (Some(name), _) => Ok(Naming::Fixed(name)),
        (None, Some(prefix)) => Ok(Naming::Generated(prefix)),
        (None, None) => Err(
            "a Job needs metadata.name, or metadata.generateName (e.g. \"build-\") for a new Job each run"
                .to_owned(),
        ),
    }
}

/// What a failed create says: for a fixed name that exists (a second run of
/// the same manifest), how to run it again.
pub(super) fn create_failed(error: kube::Error, ns: &str, naming: &Naming) -> anyhow::Error {
    match (&error, naming) {
        (kube::Error::Api(status), Naming::Fixed(name)) if status.is_already_exists() => anyhow!(
            "Job {ns}/{name} already exists: delete it (kubectl delete job.baton.dev {name} -n {ns}), \
             or use metadata.generateName: {name}- in the manifest to get a new name each run"
        ),
        _ => anyhow::Error::from(error).context("create the Job"),
    }
}

/// Wait for the Job to end; its exit code.
pub(super) async fn finish(api: &Api<Job>, name: &str) -> anyhow::Result<i32> {
    let done = await_condition(api.clone(), name, |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref()?.phase)
            .is_some_and(JobPhase::is_finished)
    })
    .await
    .context("watch the Job")?
    .ok_or_else(|| anyhow!("Job {name} was deleted"))?;
    let phase = done
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default();
    eprintln!("job.baton.dev/{name} {phase:?}");
    for line in failure_lines(&done, None) {
        eprintln!("  {}", super::terminal::sanitize(&line));
    }
    Ok(if phase == JobPhase::Succeeded { 0 } else { 1 })
}

pub(super) async fn print_logs(
    api: &Api<Job>,
    ns: &str,
    name: &str,
    only: Option<&str>,
    follow: bool,
    client: &LogClient,
) -> anyhow::Result<()> {
    let job = api
        .get(name)
        .await
        .with_context(|| format!("get Job {name}"))?;
    let steps: Vec<String> = match only {
        Some(s) => {
            if !job.spec.steps.iter().any(|st| st.name == s) {
                bail!("Job {name} has no step {s}");
            }
            vec![s.to_owned()]
        }
        None => job.spec.steps.iter().map(|s| s.name.clone()).collect(),
    };
    let many = steps.len() > 1;
    for step in steps {
        if many {
            println!("==> step {} <==", client.header(&step));
        }
        client.print_step(ns, name, &step, follow).await?;
    }
    // Why steps failed: the status as it is now (after following, the end).
    let job = if follow {
        api.get(name)
            .await
            .with_context(|| format!("get Job {name}"))?
    } else {
        job
    };
    for line in failure_lines(&job, only) {
        eprintln!("==> {} <==", super::terminal::sanitize(&line));
    }
    Ok(())
}

/// How the Job's failed or cancelled steps ended (only `only`, when given).
fn failure_lines(job: &Job, only: Option<&str>) -> Vec<String> {
    let steps = job
        .status
        .as_ref()
        .map(|s| s.steps.as_slice())
        .unwrap_or_default();
    steps
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
        .filter_map(step_end::failure_line)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn meta(name: Option<&str>, generate_name: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: name.map(str::to_owned),
            generate_name: generate_name.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn failure_lines_name_failed_steps_and_why() {
        use crate::crd::job::{JobStatus, StepPhase, StepStatus};
        let step = |name: &str, phase, reason: &str| StepStatus {
            name: name.to_owned(),
            phase,
            reason: Some(reason.to_owned()),
            ..Default::default()
        };
        let mut job = Job::new("j", Default::default());
        job.status = Some(JobStatus {
            steps: vec![
                step("lint", StepPhase::Succeeded, "Completed"),
                step("build", StepPhase::Failed, "OOMKilled"),
                step("deploy", StepPhase::Skipped, "DependencyFailed"),
            ],
            ..Default::default()
        });
        assert_eq!(failure_lines(&job, None), ["build Failed: OOMKilled"]);
        assert!(failure_lines(&job, Some("lint")).is_empty());
        assert!(failure_lines(&Job::new("j", Default::default()), None).is_empty());
    }

    #[test]
    fn a_manifest_names_its_job_by_name_or_generate_name() {
        let cases = [
            (meta(Some("build"), None), Ok(Naming::Fixed("build".into()))),
            (
                meta(None, Some("build-")),
                Ok(Naming::Generated("build-".into())),
            ),
            // As the API server does: a name wins over generateName.
            (
                meta(Some("build"), Some("build-")),
                Ok(Naming::Fixed("build".into())),
            ),
            (
                meta(Some(""), Some("build-")),
                Ok(Naming::Generated("build-".into())),
            ),
        ];
        for (meta, want) in cases {
            assert_eq!(naming(&meta), want, "{meta:?}");
        }
        let problem = naming(&meta(None, None)).unwrap_err();
        assert!(
            problem.contains("metadata.name") && problem.contains("metadata.generateName"),
            "{problem}"
        );
    }

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn an_existing_job_of_a_fixed_name_says_how_to_run_again() {
        let exists = api_error(
            409,
            "AlreadyExists",
            "jobs.baton.dev \"build\" already exists",
        );
        let message = create_failed(exists, "ci", &Naming::Fixed("build".into())).to_string();
        assert_eq!(
            message,
            "Job ci/build already exists: delete it (kubectl delete job.baton.dev build -n ci), \
             or use metadata.generateName: build- in the manifest to get a new name each run"
        );
        // Anything else says what failed, with the API server's words.
        let other = create_failed(
            api_error(403, "Forbidden", "no"),
            "ci",
            &Naming::Fixed("build".into()),
        );
        assert_eq!(other.to_string(), "create the Job");
        assert!(format!("{other:#}").contains("no"), "{other:#}");
    }
}
