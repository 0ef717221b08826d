//! `kubectl baton job run FILE --here`: the Job runs on a runner inside this
//! process. It creates a RunnerToken for a new runner name (`here-` and random
//! hex) with no labels, starts a direct-only runner on the local backend with the
//! current directory as `/workspace`, waits until its Runner is Connected, creates
//! the Job with `spec.runnerName` set to it, follows the logs and exits with the
//! Job's result. Direct-only on both sides (the controller's queue and the
//! runner's own check) means other runners never take this Job and this runner
//! takes no other. Ctrl-C cancels the Job as `job cancel` does (`spec.cancel:
//! true`; the controller tells the runner, which stops the steps), waits for it to
//! end, then cleans up. Whatever happens, the runner is stopped and its RunnerToken
//! (with its Secret) and Runner are deleted before the command exits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use tokio::task::JoinHandle;

use super::job::{self, MANAGER};
use super::job_logs::{LogClient, ServerArgs, check_server};
use super::plugin::KubeArgs;
use crate::backend::local::dirs;
use crate::crd::runner_token::SECRET_KEY;
use crate::crd::{Job, Runner, RunnerToken, RunnerTokenSpec, conditions};
use crate::runner::{self, BackendKind};

/// The token outlives no run: it is deleted at the end; this bounds a CLI killed
/// before it could clean up.
const TOKEN_TTL: &str = "12h";

/// Run `job run FILE --here`; the exit code is the Job's result.
pub async fn run(
    file: &Path,
    server: &ServerArgs,
    kube: &KubeArgs,
    wait: Duration,
) -> anyhow::Result<i32> {
    // Everything that can be refused without the cluster, first.
    let logs = LogClient::new(server)?;
    let url = check_server(
        server.server.as_deref().unwrap_or_default(),
        server.insecure,
    )?;
    let (mut job, naming) = job::load(file)?;
    let name = runner_name()?;
    assign(&mut job, &name).map_err(|problem| anyhow!("{}: {problem}", file.display()))?;
    let workspace = std::env::current_dir().context("find the current directory")?;
    let (client, ns) = kube.connect().await?;
    let dirs = Dirs::new(&name, &workspace)?;
    let here = Here {
        client,
        ns,
        name,
        wait,
    };
    let config = here.runner_config(url, server.ca_file.clone(), &dirs, workspace);
    let outcome = here.go(job, naming, &logs, config).await;
    here.clean_up().await;
    dirs.remove();
    outcome
}

/// A new runner name: `here-` and 10 random hex digits (a DNS label).
fn runner_name() -> anyhow::Result<String> {
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("random runner name: {e}"))?;
    Ok(format!("here-{}", hex::encode(bytes)))
}

/// Name `runner` in the Job, which must name no runner already: `--here` runs
/// it on this command's runner or not at all.
fn assign(job: &mut Job, runner: &str) -> Result<(), String> {
    if let Some(other) = job.spec.runner_name.as_deref().filter(|n| !n.is_empty()) {
        return Err(format!(
            "the Job names runner {other} (spec.runnerName); --here runs a Job on a runner of its own: \
             remove spec.runnerName, or run it without --here"
        ));
    }
    job.spec.runner_name = Some(runner.to_owned());
    Ok(())
}

/// What the API server's refusal means for `--here`: a 403 names the missing
/// RBAC permission (`verb` on `resource` in `ns`), anything else what we did.
fn refused(error: kube::Error, verb: &str, resource: &str, ns: &str) -> anyhow::Error {
    match &error {
        kube::Error::Api(status) if status.is_forbidden() => anyhow!(
            "job run --here needs permission to {verb} {resource} in namespace {ns} \
             (RBAC: verb \"{verb}\" on \"{resource}\"); the API server refused: {}",
            status.message
        ),
        _ => anyhow::Error::from(error).context(format!("{verb} {resource} in namespace {ns}")),
    }
}

/// The runner's state directory (its key, id) and work directory (step logs),
/// both private and temporary; the workspace is the user's directory.
struct Dirs {
    base: PathBuf,
    state: PathBuf,
    work: PathBuf,
}

impl Dirs {
    fn new(name: &str, workspace: &Path) -> anyhow::Result<Self> {
        let base = std::env::temp_dir().join(format!("baton-{name}"));
        let (state, work) = (base.join("state"), base.join("work"));
        // Steps walk the workspace: it must not hold the runner's key.
        dirs::apart(workspace, &state).map_err(|e| {
            anyhow!("--here uses the current directory as the workspace: {e}; run from another directory or set TMPDIR")
        })?;
        let made = Self { base, state, work };
        let private = [&made.base, &made.state, &made.work]
            .into_iter()
            .try_for_each(|dir| dirs::private_dir(dir));
        if let Err(e) = private.and_then(|()| dirs::shield_process()) {
            made.remove();
            bail!("{e}");
        }
        Ok(made)
    }

    /// Kill any step a failed run left behind, then remove it all.
    fn remove(&self) {
        crate::backend::LocalBackend::reap_orphans(&self.work);
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            eprintln!("could not remove {}: {e}", self.base.display());
        }
    }
}

/// One `--here` run in the cluster.
struct Here {
    client: kube::Client,
    ns: String,
    /// The runner's name, and its RunnerToken's.
    name: String,
    wait: Duration,
}

/// The in-process runner: stopped by a message, then awaited.
struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<i32, runner::RunnerError>>,
}

impl InProcess {
    fn start(config: runner::Config) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        Self {
            stop,
            task: tokio::spawn(runner::run(config, shutdown)),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Err(e))) => eprintln!("the runner ended with an error: {e}"),
            Ok(_) => {}
            Err(_) => eprintln!("the runner did not stop within 10s"),
        }
    }
}

/// `fut`, unless Ctrl-C comes first (then `None`).
async fn unless_interrupted<T>(fut: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        v = fut => Some(v),
        _ = tokio::signal::ctrl_c() => None,
    }
}

impl Here {
    fn runner_config(
        &self,
        server: String,
        ca_file: Option<PathBuf>,
        dirs: &Dirs,
        workspace: PathBuf,
    ) -> runner::Config {
        runner::Config {
            server,
            name: self.name.clone(),
            state_dir: dirs.state.clone(),
            work_dir: dirs.work.clone(),
            namespace: Some(self.ns.clone()),
            labels: Default::default(),
            backend: BackendKind::Local,
            tools_image: crate::backend::DEFAULT_TOOLS_IMAGE.into(),
            health_addr: ([127, 0, 0, 1], 0).into(),
            env_token: None,
            ping_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            once: None,
            ca_file,
            direct_only: true,
            ca_pem: None,
            workspace: Some(workspace),
        }
    }

    /// Token, runner, Job, logs, result; the caller cleans up.
    async fn go(
        &self,
        job: Job,
        naming: job::Naming,
        logs: &LogClient,
        mut config: runner::Config,
    ) -> anyhow::Result<i32> {
        let token = unless_interrupted(self.token())
            .await
            .ok_or_else(|| anyhow!("interrupted before the Job was created"))??;
        config.env_token = Some(token);
        let runner = InProcess::start(config);
        let outcome = self.with_runner(job, naming, logs).await;
        runner.stop().await;
        outcome
    }

    async fn with_runner(
        &self,
        job: Job,
        naming: job::Naming,
        logs: &LogClient,
    ) -> anyhow::Result<i32> {
        unless_interrupted(self.connected())
            .await
            .ok_or_else(|| anyhow!("interrupted before the Job was created"))??;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.ns);
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let created = jobs.create(&pp, &job).await.map_err(|e| match &e {
            kube::Error::Api(s) if s.is_forbidden() => {
                refused(e, "create", "jobs.baton.dev", &self.ns)
            }
            _ => job::create_failed(e, &self.ns, &naming),
        })?;
        let name = created.name_any();
        eprintln!(
            "job.baton.dev/{name} created, assigned to runner {} (here)",
            self.name
        );
        let follow = async {
            job::print_logs(&jobs, &self.ns, &name, None, true, logs).await?;
            job::finish(&jobs, &name).await
        };
        match unless_interrupted(follow).await {
            Some(result) => result,
            None => self.cancel(&jobs, &name).await,
        }
    }

    /// Ctrl-C: cancel the Job as `job cancel` does, wait (bounded) for its end.
    async fn cancel(&self, jobs: &Api<Job>, name: &str) -> anyhow::Result<i32> {
        eprintln!("interrupted: cancelling job.baton.dev/{name} (Ctrl-C again to stop waiting)");
        let cancel = serde_json::json!({ "spec": { "cancel": true } });
        jobs.patch(name, &PatchParams::apply(MANAGER), &Patch::Merge(cancel))
            .await
            .map_err(|e| refused(e, "patch", "jobs.baton.dev", &self.ns))?;
        let ended = tokio::time::timeout(self.wait, job::finish(jobs, name));
        match unless_interrupted(ended).await {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!(
                "job.baton.dev/{name} did not end within {:?} of its cancel",
                self.wait
            ),
            None => bail!("interrupted again: not waiting for job.baton.dev/{name} to end"),
        }
    }

    /// Create the RunnerToken, wait for the controller to mint it, read it.
    async fn token(&self) -> anyhow::Result<String> {
        let (ns, name) = (&self.ns, &self.name);
        let api: Api<RunnerToken> = Api::namespaced(self.client.clone(), ns);
        let spec = RunnerTokenSpec {
            runner_name: Some(name.clone()),
            labels: Default::default(),
            ttl: Some(TOKEN_TTL.into()),
        };
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        api.create(&pp, &RunnerToken::new(name, spec))
            .await
            .map_err(|e| refused(e, "create", "runnertokens.baton.dev", ns))?;
        let minted = |rt: Option<&RunnerToken>| {
            rt.and_then(|r| r.status.as_ref())
                .is_some_and(|s| s.secret_name.is_some() && s.token_hash.is_some())
        };
        let rt = tokio::time::timeout(self.wait, await_condition(api, name, minted))
            .await
            .map_err(|_| anyhow!("the controller did not mint RunnerToken {name} within {:?}: is `baton controller` running and serving namespace {ns}?", self.wait))?
            .map_err(|e| anyhow!("watch RunnerToken {name}: {e} (RBAC: --here needs get, list and watch on runnertokens.baton.dev)"))?
            .ok_or_else(|| anyhow!("RunnerToken {name} was deleted"))?;
        let status = rt.status.unwrap_or_default();
        let secret_name = status.secret_name.unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = secrets
            .get(&secret_name)
            .await
            .map_err(|e| refused(e, "get", "secrets", ns))?;
        secret
            .data
            .and_then(|d| d.get(SECRET_KEY).cloned())
            .and_then(|b| String::from_utf8(b.0).ok())
            .ok_or_else(|| anyhow!("Secret {secret_name} has no key {SECRET_KEY}"))
    }

    /// Wait (bounded) until the runner's Runner says Connected.
    async fn connected(&self) -> anyhow::Result<()> {
        let api: Api<Runner> = Api::namespaced(self.client.clone(), &self.ns);
        let up = |r: Option<&Runner>| {
            r.and_then(|r| r.status.as_ref())
                .is_some_and(|s| conditions::is_true(&s.conditions, "Connected"))
        };
        tokio::time::timeout(self.wait, await_condition(api, &self.name, up))
            .await
            .map_err(|_| {
                anyhow!(
                    "runner {} did not connect within {:?}: is the controller's server reachable at --server from here? (the runner's log above says why)",
                    self.name,
                    self.wait
                )
            })?
            .map_err(|e| anyhow!("watch Runner {}: {e}", self.name))?;
        eprintln!(
            "runner {} connected (direct-only, local backend)",
            self.name
        );
        Ok(())
    }

    /// Delete the RunnerToken first (the token stops working), then the Runner.
    async fn clean_up(&self) {
        let dp = DeleteParams::default();
        let tokens: Api<RunnerToken> = Api::namespaced(self.client.clone(), &self.ns);
        let runners: Api<Runner> = Api::namespaced(self.client.clone(), &self.ns);
        let done = [
            (
                "runnertokens.baton.dev",
                tokens.delete(&self.name, &dp).await.map(|_| ()),
            ),
            (
                "runners.baton.dev",
                runners.delete(&self.name, &dp).await.map(|_| ()),
            ),
        ];
        for (resource, result) in done {
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => eprintln!(
                    "clean-up: {:#} — delete it yourself: kubectl delete {resource} {} -n {}",
                    refused(e, "delete", resource, &self.ns),
                    self.name,
                    self.ns
                ),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn a_job_naming_a_runner_is_refused_and_any_other_is_assigned() {
        let mut job = Job::new("j", Default::default());
        assert_eq!(assign(&mut job, "here-1"), Ok(()));
        assert_eq!(job.spec.runner_name.as_deref(), Some("here-1"));
        // Once assigned it names a runner: a second assignment is refused too.
        let problem = assign(&mut job, "here-2").unwrap_err();
        assert!(problem.contains("names runner here-1"), "{problem}");
        let mut named = Job::new("j", Default::default());
        named.spec.runner_name = Some("r1".into());
        let problem = assign(&mut named, "here-1").unwrap_err();
        assert!(
            problem.contains("runner r1") && problem.contains("without --here"),
            "{problem}"
        );
        assert_eq!(named.spec.runner_name.as_deref(), Some("r1"), "untouched");
        // An empty name is no name.
        let mut empty = Job::new("j", Default::default());
        empty.spec.runner_name = Some(String::new());
        assert_eq!(assign(&mut empty, "here-1"), Ok(()));
    }

    #[test]
    fn a_forbidden_call_names_the_missing_permission() {
        let e = refused(
            api_error(403, "Forbidden", "user alice cannot create runnertokens"),
            "create",
            "runnertokens.baton.dev",
            "ci",
        )
        .to_string();
        assert!(
            e.contains("permission to create runnertokens.baton.dev in namespace ci")
                && e.contains("user alice cannot"),
            "{e}"
        );
        let other = refused(
            api_error(500, "InternalError", "boom"),
            "create",
            "jobs.baton.dev",
            "ci",
        );
        assert_eq!(other.to_string(), "create jobs.baton.dev in namespace ci");
        assert!(format!("{other:#}").contains("boom"), "{other:#}");
    }

    #[test]
    fn a_workspace_holding_the_runners_state_is_refused_and_nothing_made() {
        let name = runner_name().unwrap();
        let tmp = std::env::temp_dir();
        let e = Dirs::new(&name, &tmp).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("current directory")),
            "{e:?}"
        );
        assert!(!tmp.join(format!("baton-{name}")).exists());
    }

    #[test]
    fn runner_names_are_fresh_dns_labels() {
        let (a, b) = (
            runner_name().unwrap_or_default(),
            runner_name().unwrap_or_default(),
        );
        assert_ne!(a, b);
        assert!(crate::server::input::is_dns_label(&a), "{a}");
        assert!(a.starts_with("here-") && a.len() == 15, "{a}");
    }
}
