//! The local backend: each step is a process on this machine (`baton run`, and a
//! runner started with `--backend local`). Images are ignored.
//!
//! Layout under the backend's root directory, per workflow:
//! `<root>/<workflow>/workspace/` (stands in for `/workspace`, exported as
//! `BATON_WORKSPACE`, the default working directory) and
//! `<root>/<workflow>/steps/<step>/{log,output}` (the merged stdout+stderr, and the
//! file `$BATON_OUTPUT` names), beside the attempt's [`record`]; a re-run after a
//! lost attempt is in `retry-N/` under it, its log continuing the step's log at the
//! offset the executor gave. Steps are remembered in memory, so `discover` and
//! resuming work for as long as this backend value lives; dropping it kills every
//! step still running. A [`LocalBackend::resumable`] one (a runner's) also reads
//! the records of an earlier process: ended attempts come back with their exit
//! code, log and outputs; one that was running is killed and lost (`RunnerLost`).
//!
//! A step's environment is built, not inherited: a few host variables
//! ([`launch::INHERITED`]), then what the Job declares; no Baton credential of the
//! runner reaches it. A runner keeps its work directory apart from its state
//! directory ([`dirs`]).

mod collect;
pub mod dirs;
mod launch;
mod process;
mod record;
mod service;
mod tail;
use tail::Tail;

use crate::crd::Step;
use crate::crd::reasons::reason;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub use launch::{INHERITED, SECRET_PREFIX, secret_variable};

use super::{
    Backend, BackendError, DiscoveredStep, LogStream, StepExit, StepRequest, StepState, Workflow,
};
use crate::backend::mask::Patterns;
use process::{Handle, LogProgress};

const LOG_CHUNK: u64 = 64 * 1024;

/// Runs steps as local processes under a root directory it owns.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    host_env: BTreeMap<OsString, OsString>,
    /// Keyed by (workflow id, step name): the step identity; its latest attempt.
    steps: Mutex<HashMap<(String, String), Arc<LocalStep>>>,
    /// Whether `discover` reads what an earlier process recorded on disk.
    resumable: bool,
    collector: collect::Collector,
    /// A fixed workspace for every workflow (`job run --here`: the user's directory).
    workspace: Option<PathBuf>,
}

#[derive(Debug)]
struct LocalStep {
    handle: Handle,
    log_path: PathBuf,
    output_path: PathBuf,
    retry: u32,
    /// Where this attempt's log starts in the step's log.
    log_base: u64,
    /// Why it was lost, when its runner died while it ran.
    lost: Option<String>,
    /// What its log and outputs are masked of: the values its `secretKeyRef`s
    /// got; for an attempt of an earlier process, every `BATON_SECRET_*` value
    /// (which ones it used was not recorded, and is not written to disk).
    secrets: Patterns,
}

impl LocalBackend {
    /// A backend keeping workflows under `root`. This process's environment is
    /// where `secretKeyRef`s are looked up (`BATON_SECRET_*`); steps inherit only
    /// its [`INHERITED`] variables.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_host_env(root, std::env::vars_os().collect())
    }

    /// Like [`LocalBackend::new`] with an explicit host environment (tests).
    pub fn with_host_env(root: impl Into<PathBuf>, host_env: BTreeMap<OsString, OsString>) -> Self {
        Self {
            root: root.into(),
            host_env,
            steps: Mutex::new(HashMap::new()),
            resumable: false,
            collector: collect::Collector::default(),
            workspace: None,
        }
    }

    /// Steps outlive this value: a new backend over the same root (a restarted
    /// runner) discovers them from disk. Not for `baton run`, whose kept work
    /// directory must not make a second run skip anything.
    pub fn resumable(mut self) -> Self {
        self.resumable = true;
        self
    }

    /// At a runner's start: kill every step process group under `root` that a
    /// runner process which died left running. Returns how many.
    pub fn reap_orphans(root: &Path) -> usize {
        record::reap_orphans(root)
    }

    /// Every workflow's steps use `dir` as `/workspace` (it is never removed).
    pub fn with_workspace(mut self, dir: Option<PathBuf>) -> Self {
        self.workspace = dir;
        self
    }

    /// The directory standing in for `/workspace` in `workflow`'s steps.
    pub fn workspace(&self, workflow: &Workflow) -> PathBuf {
        match &self.workspace {
            Some(dir) => dir.clone(),
            None => self.workflow_dir(workflow).join("workspace"),
        }
    }

    /// Where the archive of changes with `digest` is kept (`status.steps[].artifacts`).
    pub fn archive_path(&self, digest: &str) -> PathBuf {
        Self::archive_path_under(&self.root, digest)
    }

    /// [`LocalBackend::archive_path`] of a backend rooted at `root`.
    pub fn archive_path_under(root: &Path, digest: &str) -> PathBuf {
        super::archive_path(root, digest)
    }

    fn artifact_store(&self) -> PathBuf {
        super::archive_store(&self.root)
    }

    /// The process group of a started step (its main process's pid).
    pub fn process_group(&self, workflow: &Workflow, step: &str) -> Option<i32> {
        self.lock().get(&key(workflow, step)).map(|s| s.handle.pgid)
    }

    fn workflow_dir(&self, workflow: &Workflow) -> PathBuf {
        self.root.join(path_safe(&workflow.id))
    }

    fn step_dir(&self, workflow: &Workflow, step: &str) -> PathBuf {
        self.workflow_dir(workflow)
            .join("steps")
            .join(path_safe(step))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Arc<LocalStep>>> {
        // A panic elsewhere cannot leave the map half-updated: every change is one insert or remove.
        self.steps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, workflow: &Workflow, step: &str) -> Result<Arc<LocalStep>, BackendError> {
        self.lock()
            .get(&key(workflow, step))
            .cloned()
            .ok_or_else(|| BackendError::UnknownStep {
                workflow: workflow.id.clone(),
                step: step.to_owned(),
            })
    }

    /// Everything `start_step` does; synchronous, so it runs under the lock and two
    /// starts of one attempt cannot both spawn.
    fn start_locked(&self, workflow: &Workflow, request: &StepRequest) -> Result<(), BackendError> {
        let name = request.step.name.as_str();
        let mut steps = self.lock();
        if let Some(known) = steps.get(&key(workflow, name))
            && known.retry >= request.retry
        {
            return Ok(());
        }
        let io_err = |doing: &'static str| {
            move |source| BackendError::Io {
                step: name.to_owned(),
                doing,
                source,
            }
        };
        let dir = record::attempt_dir(&self.step_dir(workflow, name), request.retry);
        std::fs::create_dir_all(&dir).map_err(io_err("create the step directory"))?;
        record::clear_exit(&dir).map_err(io_err("clear an earlier exit record"))?;
        let output_path = dir.join("output");
        std::fs::File::create(&output_path).map_err(io_err("create the $BATON_OUTPUT file"))?;
        let log_path = dir.join("log");
        let log_file = std::fs::File::create(&log_path).map_err(io_err("create the log file"))?;
        let launch = launch::plan(
            &request.step,
            &request.env,
            &self.host_env,
            &self.workspace(workflow),
            &output_path,
        )?;
        tracing::debug!(workflow = %workflow.id, step = name, program = ?launch.program, retry = request.retry, "start step process");
        let secrets = Patterns::new(&launch.secrets);
        let handle = process::spawn(name, launch, log_file, dir.clone(), secrets.clone())?;
        let attempt = record::AttemptRecord {
            step: name.to_owned(),
            retry: request.retry,
            log_offset: request.log_offset,
            pgid: handle.pgid,
            start_ticks: record::start_ticks(handle.pgid),
        };
        if let Err(error) = record::write_attempt(&dir, &attempt) {
            // It runs all the same; only a restarted runner would not find it.
            tracing::warn!(step = name, %error, "record the step's attempt");
        }
        let step = LocalStep {
            handle,
            log_path,
            output_path,
            retry: request.retry,
            log_base: request.log_offset,
            lost: None,
            secrets,
        };
        steps.insert(key(workflow, name), Arc::new(step));
        Ok(())
    }

    /// Every `BATON_SECRET_*` value of the host: what an earlier process's
    /// attempts are masked of.
    fn host_secrets(&self) -> Patterns {
        let values = self
            .host_env
            .iter()
            .filter(|(k, _)| k.to_str().is_some_and(|k| k.starts_with(SECRET_PREFIX)))
            .map(|(_, v)| v.as_encoded_bytes());
        Patterns::new(values)
    }

    /// Remember the steps an earlier process recorded for `workflow` (resumable
    /// backends): ended ones as they ended; running ones are killed and lost.
    fn load_recorded(&self, workflow: &Workflow) {
        let steps_dir = self.workflow_dir(workflow).join("steps");
        let Ok(entries) = std::fs::read_dir(&steps_dir) else {
            return;
        };
        let mut steps = self.lock();
        for entry in entries.filter_map(Result::ok) {
            let Some((dir, attempt, exit)) = record::latest(&entry.path()) else {
                continue;
            };
            let id = key(workflow, &attempt.step);
            if steps.contains_key(&id) {
                continue;
            }
            let lost = exit.is_none().then(|| {
                let killed = record::kill_orphan(&attempt);
                tracing::warn!(workflow = %workflow.id, step = %attempt.step, pgid = attempt.pgid, killed, "step left running by a runner that stopped: lost");
                "the runner running it stopped while it ran; its processes were killed".to_owned()
            });
            let log_path = dir.join("log");
            let log_len = std::fs::metadata(&log_path).map_or(0, |m| m.len());
            // A lost one was killed (just now, or when its runner went).
            let end = exit.unwrap_or(128 + Signal::SIGKILL as i32);
            let step = LocalStep {
                handle: Handle::ended(attempt.pgid, end, log_len),
                log_path,
                output_path: dir.join("output"),
                retry: attempt.retry,
                log_base: attempt.log_offset,
                lost,
                secrets: self.host_secrets(),
            };
            steps.insert(id, Arc::new(step));
        }
    }
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        for step in self.lock().values() {
            if step.handle.exit.borrow().is_none() {
                step.handle.interrupted.store(true, Ordering::SeqCst);
                process::signal_group(step.handle.pgid, Signal::SIGKILL);
            }
        }
    }
}

fn key(workflow: &Workflow, step: &str) -> (String, String) {
    (workflow.id.clone(), step.to_owned())
}

/// A name usable as one path component (step names are DNS labels already).
fn path_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        format!("_{safe}")
    } else {
        safe
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn setup_workflow(&self, workflow: &Workflow) -> Result<(), BackendError> {
        let workspace = self.workspace(workflow);
        tokio::fs::create_dir_all(&workspace)
            .await
            .map_err(|source| BackendError::Setup {
                workflow: workflow.id.clone(),
                source,
            })
    }

    async fn discover(&self, workflow: &Workflow) -> Result<Vec<DiscoveredStep>, BackendError> {
        if self.resumable {
            self.load_recorded(workflow);
        }
        let mut found: Vec<DiscoveredStep> = self
            .lock()
            .iter()
            .filter(|((wf, _), _)| *wf == workflow.id)
            .map(|((_, name), step)| DiscoveredStep {
                name: name.clone(),
                state: match &*step.handle.exit.borrow() {
                    // As the kubernetes backend does with lost pods: waiting on it
                    // tells how it ended (lost).
                    _ if step.lost.is_some() => StepState::Running,
                    Some(Ok(exit_code)) => StepState::Exited {
                        exit_code: *exit_code,
                    },
                    // We cannot tell how it ended; report it as killed.
                    Some(Err(_)) => StepState::Exited {
                        exit_code: 128 + Signal::SIGKILL as i32,
                    },
                    None => StepState::Running,
                },
                retry: step.retry,
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn start_step(
        &self,
        workflow: &Workflow,
        request: &StepRequest,
    ) -> Result<(), BackendError> {
        let name = &request.step.name;
        let started = self.lock().get(&key(workflow, name)).map(|s| s.retry);
        if request.step.collects() && started.is_none_or(|retry| retry < request.retry) {
            let workspace = self.workspace(workflow);
            self.collector
                .before(key(workflow, name), workspace)
                .await?;
        }
        self.start_locked(workflow, request)
    }

    async fn collect_changes(
        &self,
        workflow: &Workflow,
        step: &Step,
    ) -> Result<Option<crate::archive::Packed>, BackendError> {
        let (workspace, store) = (self.workspace(workflow), self.artifact_store());
        let key = key(workflow, &step.name);
        self.collector.collect(key, step, workspace, store).await
    }

    async fn seed_workspace(
        &self,
        workflow: &Workflow,
        archive: &Path,
    ) -> Result<crate::archive::Extracted, BackendError> {
        collect::seed(archive.to_owned(), self.workspace(workflow)).await
    }

    async fn tail_step(
        &self,
        workflow: &Workflow,
        step: &str,
        from_offset: u64,
    ) -> Result<LogStream, BackendError> {
        let local = self.get(workflow, step)?;
        let mut file = tokio::fs::File::open(&local.log_path)
            .await
            .map_err(|source| BackendError::Io {
                step: step.to_owned(),
                doing: "open the log file",
                source,
            })?;
        // Offsets count the step's log; this attempt's file starts at `log_base`.
        file.seek(SeekFrom::Start(from_offset.saturating_sub(local.log_base)))
            .await
            .map_err(|source| BackendError::Io {
                step: step.to_owned(),
                doing: "seek in the log file",
                source,
            })?;
        let tail = Tail {
            step: step.to_owned(),
            file,
            base: local.log_base,
            offset: from_offset.saturating_sub(local.log_base),
            progress: local.handle.log.clone(),
        };
        Ok(futures::stream::unfold(tail, Tail::next).boxed())
    }

    async fn wait_step(&self, workflow: &Workflow, step: &str) -> Result<StepExit, BackendError> {
        let local = self.get(workflow, step)?;
        if let Some(message) = &local.lost {
            return Err(BackendError::Lost {
                step: step.to_owned(),
                reason: reason::RUNNER_LOST,
                message: message.clone(),
            });
        }
        let mut exit = local.handle.exit.clone();
        process::wait(&mut exit)
            .await
            .map(StepExit::from)
            .map_err(|message| BackendError::Failed {
                step: step.to_owned(),
                doing: "wait for the step",
                message,
            })
    }

    fn listen_address(&self) -> &'static str {
        service::LOOPBACK
    }

    async fn service_ready(
        &self,
        workflow: &Workflow,
        step: &str,
        ports: &[u16],
    ) -> Result<String, BackendError> {
        self.get(workflow, step)?;
        service::wait_listening(ports).await;
        Ok(service::LOOPBACK.to_owned())
    }

    async fn read_outputs(
        &self,
        workflow: &Workflow,
        step: &str,
        limit: usize,
    ) -> Result<Vec<u8>, BackendError> {
        let local = self.get(workflow, step)?;
        let read = read_prefix(&local.output_path, limit)
            .await
            .map_err(|source| BackendError::Io {
                step: step.to_owned(),
                doing: "read $BATON_OUTPUT",
                source,
            })?;
        Ok(local.secrets.mask_outputs(&read, limit))
    }

    async fn stop_step(
        &self,
        workflow: &Workflow,
        step: &str,
        grace: Duration,
    ) -> Result<(), BackendError> {
        let local = self.get(workflow, step)?;
        local.handle.interrupted.store(true, Ordering::SeqCst);
        process::stop(local.handle.pgid, local.handle.exit.clone(), grace)
            .await
            .map(drop)
            .map_err(|message| BackendError::Failed {
                step: step.to_owned(),
                doing: "stop the step",
                message,
            })
    }

    async fn destroy_step(&self, workflow: &Workflow, step: &str) -> Result<(), BackendError> {
        let Some(local) = self.lock().remove(&key(workflow, step)) else {
            return Ok(());
        };
        // Destroying does not wait for a polite exit.
        if let Err(message) =
            process::stop(local.handle.pgid, local.handle.exit.clone(), Duration::ZERO).await
        {
            tracing::warn!(step, %message, "stop step while destroying it");
        }
        remove_dir(&self.step_dir(workflow, step))
            .await
            .map_err(|source| BackendError::Io {
                step: step.to_owned(),
                doing: "remove the step directory",
                source,
            })
    }

    async fn destroy_workflow(&self, workflow: &Workflow) -> Result<(), BackendError> {
        let names: Vec<String> = self
            .lock()
            .keys()
            .filter(|(wf, _)| *wf == workflow.id)
            .map(|(_, name)| name.clone())
            .collect();
        for name in names {
            self.destroy_step(workflow, &name).await?;
        }
        remove_dir(&self.workflow_dir(workflow))
            .await
            .map_err(|source| BackendError::Setup {
                workflow: workflow.id.clone(),
                source,
            })
    }
}

async fn remove_dir(path: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_dir_all(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

async fn read_prefix(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    let file = tokio::fs::File::open(path).await?;
    let mut out = Vec::new();
    file.take(limit as u64).read_to_end(&mut out).await?;
    Ok(out)
}

#[cfg(test)]
#[path = "local/tests.rs"]
mod tests;
