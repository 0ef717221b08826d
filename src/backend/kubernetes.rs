//! The Kubernetes backend: each step attempt is one pod (a "step pod") in the Job's
//! namespace. One backend value serves one run of one Job ([`JobTarget`]); the
//! workflow id is the Job's uid.
//!
//! - **Pods** ([`pod`]): deterministic names `<job>-<step>-<hash8>` (hash of job
//!   uid, step, retry), so a second start of a step finds the pod it created and
//!   never runs it twice; labels `baton.dev/job-uid`, `job-name`, `step`, `retry`;
//!   an owner reference to the Job; `restartPolicy: Never`; no service account
//!   token; the `restricted` Pod Security Standard.
//! - **Workspace**: `spec.workspace` becomes a claim `<job>-workspace` mounted at
//!   `/workspace`. Every step pod after the first scheduled one is pinned (required
//!   node affinity on the node's name) to that node; the first pod's start waits
//!   (bounded) until it is scheduled, so parallel first steps do not split.
//!   A Job with content or a collecting step gets a claim by default; the
//!   content goes in, and a step's changes come out, through workspace helper
//!   pods driven over `pods/exec` ([`helper`], [`workspace`]).
//! - **Outputs** ([`outputs`]): `$BATON_OUTPUT` is `/baton/output` on a per-pod
//!   `emptyDir`. An init container copies the static `baton-entrypoint` from the
//!   tools image into it; the entrypoint runs the step's command and frames the
//!   file into the log (base64, between markers carrying a per-attempt nonce),
//!   and the backend strips the frame from the log it yields. The step's image
//!   needs no shell. A step with neither command nor script runs the image's
//!   own entrypoint; its outputs come back as the termination message (4 KiB).
//! - **Logs**: the pod log API has no byte offsets, so a tail follows the log from
//!   its start and skips the bytes the caller already holds; offsets count the
//!   stripped log, which is the same on every read. A dropped connection is
//!   re-opened the same way. The stripped log is masked of the pod's Secret
//!   values ([`secrets`], [`crate::backend::mask`]), deterministically too, so
//!   offsets count the masked log. Logs beyond the kubelet's rotation size
//!   (`containerLogMaxSize`, 10 MiB by default) are not re-readable from the start.
//! - **Lost pods**: a pod deleted by someone else, evicted, preempted or failed by
//!   its node before its container ended is [`BackendError::Lost`]; the executor
//!   re-runs the step as a new attempt (`retry` + 1, a new pod) if the Job allows.
//! - **Stopping** deletes the pod with the grace period and waits until it is gone.

mod attempt;
mod feed;
mod helper;
mod listed;
mod outputs;
mod pinning;
mod pod;
mod pod_hub;
mod secrets;
mod shape;
mod state;
mod tail;
mod target;
mod watch;
mod workspace;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use tracing::Instrument;

pub use listed::{ListedPods, ListedSoon};
pub use pod::{
    LABEL_JOB_NAME, LABEL_JOB_UID, LABEL_RETRY, LABEL_RUNNER, LABEL_STEP, job_selector, pod_name,
    workspace_claim_name,
};
pub use pod_hub::PodHub;
pub use target::{DEFAULT_TOOLS_IMAGE, JobTarget};

use super::{
    Backend, BackendError, DiscoveredStep, LogStream, StepExit, StepRequest, StepState, Workflow,
};
use crate::crd::Step;
use attempt::{AttemptState, lock, new_nonce};
use state::PodView;

/// Tunables of the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesOptions {
    /// How long a step pod may wait for a reason that will not fix itself (image
    /// pull failures, a missing Secret) before the step fails.
    pub cannot_start_after: Duration,
    /// How long the first step pod of a Job with a workspace is waited for to be
    /// scheduled, before later pods are created without pinning.
    pub schedule_wait: Duration,
}

impl Default for KubernetesOptions {
    fn default() -> Self {
        Self {
            cannot_start_after: Duration::from_secs(30),
            schedule_wait: Duration::from_secs(60),
        }
    }
}

/// Runs a Job's steps as pods.
#[derive(Debug)]
pub struct KubernetesBackend {
    target: JobTarget,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    /// Read for the values to mask in step logs ([`secrets`]).
    secrets: Api<Secret>,
    options: KubernetesOptions,
    /// The latest attempt of each step this backend started or found.
    attempts: Mutex<HashMap<String, Arc<AttemptState>>>,
    /// The node the Job's pods are pinned to (with a workspace). Held while the
    /// first pod is being scheduled.
    node: tokio::sync::Mutex<Option<String>>,
    /// The workspace snapshots taken before collecting steps started, by step
    /// (as the helper wrote them: handed back to it after the step).
    before: Mutex<HashMap<String, Vec<u8>>>,
    /// The Job's directory on the runner, where change archives are kept.
    archive_root: Option<PathBuf>,
    /// The runner's shared watches of its step pods ([`pod_hub`]).
    hub: Option<Arc<PodHub>>,
    /// A list of many Jobs' pods, this Job's among them ([`listed`]): the
    /// first discover waits for it instead of listing.
    listed: Mutex<Option<ListedSoon>>,
}

fn kube_err(step: &str, doing: &'static str) -> impl FnOnce(kube::Error) -> BackendError {
    let step = step.to_owned();
    move |source| BackendError::Kube {
        step,
        doing,
        source: Box::new(source),
    }
}

fn is_status(err: &kube::Error, check: fn(&kube::core::Status) -> bool) -> bool {
    matches!(err, kube::Error::Api(status) if check(status))
}

impl KubernetesBackend {
    pub fn new(client: Client, target: JobTarget) -> Self {
        Self::with_options(client, target, KubernetesOptions::default())
    }

    pub fn with_options(client: Client, target: JobTarget, options: KubernetesOptions) -> Self {
        Self {
            pods: Api::namespaced(client.clone(), &target.namespace),
            claims: Api::namespaced(client.clone(), &target.namespace),
            secrets: Api::namespaced(client, &target.namespace),
            target,
            options,
            attempts: Mutex::new(HashMap::new()),
            node: tokio::sync::Mutex::new(None),
            before: Mutex::new(HashMap::new()),
            archive_root: None,
            hub: None,
            listed: Mutex::new(None),
        }
    }

    /// Discover the Job's pods in a list of many Jobs' pods ([`ListedPods`]):
    /// valid only if none of its pods can be made but by this backend.
    #[must_use]
    pub fn with_listed(self, pods: ListedSoon) -> Self {
        *lock(&self.listed) = Some(pods);
        self
    }

    /// Label step pods with `hub`'s runner and wait on them through its watches.
    #[must_use]
    pub fn with_pod_hub(mut self, hub: Arc<PodHub>) -> Self {
        self.target.runner_label = Some(hub.label().to_owned());
        self.hub = Some(hub);
        self
    }

    /// Keep the archives of collecting steps under `root` (the Job's directory):
    /// `root/artifacts/HEX.tar.zst`, whence the runner uploads them.
    #[must_use]
    pub fn with_archive_root(mut self, root: PathBuf) -> Self {
        self.archive_root = Some(root);
        self
    }

    pub fn target(&self) -> &JobTarget {
        &self.target
    }

    /// The pod of the latest attempt of `step` this backend knows.
    pub fn step_pod_name(&self, step: &str) -> Option<String> {
        lock(&self.attempts).get(step).map(|a| a.pod.clone())
    }

    fn check(&self, workflow: &Workflow, step: &str) -> Result<(), BackendError> {
        if workflow.id == self.target.job_uid {
            return Ok(());
        }
        Err(BackendError::Failed {
            step: step.to_owned(),
            doing: "check the workflow",
            message: format!(
                "this backend runs Job {} (uid {}), not workflow {}",
                self.target.job_name, self.target.job_uid, workflow.id
            ),
        })
    }

    /// Remember `pod` as its step's attempt unless a later attempt is known (or it
    /// is not this Job's).
    fn remember(&self, pod: &Pod) -> Option<Arc<AttemptState>> {
        if !pod::is_ours(pod, &self.target) {
            tracing::warn!(pod = %pod.name_any(), "a pod with this Job's labels that the Job does not own; ignored");
            return None;
        }
        let found = AttemptState::from_pod(pod)?.with_hub(self.hub.clone());
        let mut attempts = lock(&self.attempts);
        match attempts.get(&found.step) {
            Some(known) if known.retry > found.retry || known.pod == found.pod => {
                Some(known.clone())
            }
            _ => {
                let found = Arc::new(found);
                attempts.insert(found.step.clone(), found.clone());
                Some(found)
            }
        }
    }

    /// The latest attempt of `step`: remembered, or found by label.
    async fn attempt(&self, step: &str) -> Result<Arc<AttemptState>, BackendError> {
        if let Some(known) = lock(&self.attempts).get(step) {
            return Ok(known.clone());
        }
        let selector = pod::step_selector(&self.target.job_uid, step);
        let list = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err(step, "list the step's pods"))?;
        list.items
            .iter()
            .filter_map(|p| self.remember(p))
            .max_by_key(|a| a.retry)
            .ok_or_else(|| BackendError::UnknownStep {
                workflow: self.target.job_uid.clone(),
                step: step.to_owned(),
            })
    }

    /// Create the pod of an attempt; an existing one (a second start) is returned.
    async fn create(
        &self,
        attempt: &pod::Attempt<'_>,
        node: Option<&str>,
    ) -> Result<Pod, BackendError> {
        let step = attempt.step.name.as_str();
        let desired = pod::step_pod(&self.target, attempt, node)?;
        let name = desired.metadata.name.clone().unwrap_or_default();
        match self.pods.create(&PostParams::default(), &desired).await {
            Ok(created) => {
                tracing::info!(pod = %name, retry = attempt.retry, "created step pod");
                Ok(created)
            }
            Err(e) if is_status(&e, kube::core::Status::is_already_exists) => {
                let existing = self
                    .pods
                    .get(&name)
                    .await
                    .map_err(kube_err(step, "read the existing step pod"))?;
                if !pod::is_ours(&existing, &self.target) {
                    return Err(BackendError::Failed {
                        step: step.to_owned(),
                        doing: "create the step pod",
                        message: format!(
                            "a pod named {name} exists that this Job does not own; delete it"
                        ),
                    });
                }
                tracing::info!(pod = %name, "step pod exists already; adopting it");
                Ok(existing)
            }
            Err(e) => Err(kube_err(step, "create the step pod")(e)),
        }
    }

    fn span(&self, step: &str) -> tracing::Span {
        tracing::info_span!("step_pod", namespace = %self.target.namespace, job = %self.target.job_name, step)
    }
}

impl Backend for KubernetesBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn step_ref(&self, _workflow: &Workflow, step: &str, retry: u32) -> Option<String> {
        Some(pod::pod_name(
            &self.target.job_name,
            &self.target.job_uid,
            step,
            retry,
        ))
    }

    async fn setup_workflow(&self, workflow: &Workflow) -> Result<(), BackendError> {
        self.check(workflow, "")?;
        let Some(claim) = pod::workspace_claim(&self.target) else {
            return Ok(());
        };
        match self.claims.create(&PostParams::default(), &claim).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, kube::core::Status::is_already_exists) => Ok(()),
            Err(e) => Err(kube_err("", "create the workspace claim")(e)),
        }
    }

    async fn discover(&self, workflow: &Workflow) -> Result<Vec<DiscoveredStep>, BackendError> {
        self.check(workflow, "")?;
        let listed = lock(&self.listed).take();
        let listed = futures::future::OptionFuture::from(listed).await.flatten();
        let items = match listed {
            Some(pods) => pods.take(&self.target.job_uid),
            None => {
                let params = ListParams::default().labels(&pod::job_selector(&self.target.job_uid));
                (self.pods.list(&params).await)
                    .map_err(kube_err("", "list the Job's step pods"))?
                    .items
            }
        };
        let mut latest: BTreeMap<String, (u32, &Pod)> = BTreeMap::new();
        let steps = items.iter().filter(|p| !helper::is_helper(p));
        for p in steps.filter(|p| pod::is_ours(p, &self.target)) {
            let Some(found) = AttemptState::from_pod(p) else {
                tracing::warn!(pod = %p.name_any(), "a pod with the Job's label but not a step pod's labels; ignored");
                continue;
            };
            if latest
                .get(&found.step)
                .is_none_or(|(r, _)| *r < found.retry)
            {
                latest.insert(found.step, (found.retry, p));
            }
        }
        if self.target.workspace.is_some() {
            let mut node = self.node.lock().await;
            if node.is_none() {
                *node = items
                    .iter()
                    .find_map(|p| state::node_of(p).map(str::to_owned));
            }
        }
        let mut found = Vec::new();
        for (step, (retry, p)) in latest {
            self.remember(p);
            let state = match state::view(p, false) {
                PodView::Exited { exit_code, .. } => StepState::Exited { exit_code },
                // Lost or pending ones too: waiting on them tells how they end.
                _ => StepState::Running,
            };
            found.push(DiscoveredStep {
                name: step,
                state,
                retry,
            });
        }
        Ok(found)
    }

    async fn start_step(
        &self,
        workflow: &Workflow,
        request: &StepRequest,
    ) -> Result<(), BackendError> {
        let step = request.step.name.as_str();
        self.check(workflow, step)?;
        let known = lock(&self.attempts).get(step).map(|a| a.retry);
        if known.is_some_and(|retry| retry >= request.retry) {
            return Ok(());
        }
        if request.step.collects() {
            self.snapshot_before(step)
                .instrument(self.span(step))
                .await?;
        }
        let env = request.step.env.as_deref().unwrap_or_default();
        secrets::check_readable(&self.secrets, step, env).await?;
        let nonce = new_nonce(step)?;
        let attempt = pod::Attempt {
            step: &request.step,
            retry: request.retry,
            injected: &request.env,
            hosts: &request.hosts,
            nonce: &nonce,
            log_offset: request.log_offset,
        };
        let created = if self.target.workspace.is_some() {
            self.create_pinned(&attempt)
                .instrument(self.span(step))
                .await?
        } else {
            self.create(&attempt, None)
                .instrument(self.span(step))
                .await?
        };
        self.remember(&created)
            .ok_or_else(|| BackendError::Failed {
                step: step.to_owned(),
                doing: "read the step pod's labels",
                message: format!(
                    "pod {} lacks Baton's labels or annotations",
                    created.name_any()
                ),
            })?;
        Ok(())
    }

    async fn tail_step(
        &self,
        workflow: &Workflow,
        step: &str,
        from_offset: u64,
    ) -> Result<LogStream, BackendError> {
        self.check(workflow, step)?;
        let attempt = self.attempt(step).await?;
        Ok(tail::follow(
            self.pods.clone(),
            self.secrets.clone(),
            attempt,
            from_offset,
            self.span(step),
        ))
    }

    async fn wait_step(&self, workflow: &Workflow, step: &str) -> Result<StepExit, BackendError> {
        self.check(workflow, step)?;
        let attempt = self.attempt(step).await?;
        if let Some(code) = *lock(&attempt.stopped_exit) {
            return Ok(code.into());
        }
        let result = watch::wait_end(&self.pods, &attempt, self.options.cannot_start_after)
            .instrument(self.span(step))
            .await;
        if matches!(result, Err(BackendError::CannotStart { .. })) {
            attempt.abandoned.cancel();
        }
        result
    }

    async fn service_ready(
        &self,
        workflow: &Workflow,
        step: &str,
        _ports: &[u16],
    ) -> Result<String, BackendError> {
        self.check(workflow, step)?;
        let attempt = self.attempt(step).await?;
        watch::ready_ip(&self.pods, &attempt)
            .instrument(self.span(step))
            .await
    }

    async fn collect_changes(
        &self,
        workflow: &Workflow,
        step: &Step,
    ) -> Result<Option<crate::archive::Packed>, BackendError> {
        self.check(workflow, &step.name)?;
        self.collect(step).instrument(self.span(&step.name)).await
    }

    async fn seed_workspace(
        &self,
        workflow: &Workflow,
        archive: &std::path::Path,
    ) -> Result<crate::archive::Extracted, BackendError> {
        self.check(workflow, "")?;
        self.seed(archive).instrument(self.span("")).await
    }

    async fn read_outputs(
        &self,
        workflow: &Workflow,
        step: &str,
        limit: usize,
    ) -> Result<Vec<u8>, BackendError> {
        self.check(workflow, step)?;
        let attempt = self.attempt(step).await?;
        let cached = lock(&attempt.frame).clone();
        let frame = match cached {
            Some(frame) if !frame.is_cut() => Some(frame),
            // The live tail can end before the last bytes of a container that
            // just exited reach it (the follow stream closes early): the whole
            // log, read again now, has them. What the tail saw is the fallback.
            cut => tail::read_frame(&self.pods, &attempt).await?.or(cut),
        };
        let Some(frame) = frame else {
            return Ok(Vec::new());
        };
        if frame.is_cut() {
            tracing::warn!(parent: &self.span(step), pod = %attempt.pod, "the outputs in the step log end early; reading what is there");
        }
        let outputs = frame.decode(limit).map_err(|e| BackendError::Failed {
            step: step.to_owned(),
            doing: "decode $BATON_OUTPUT from the step's log",
            message: e.to_string(),
        })?;
        let secrets = secrets::of_attempt(&self.secrets, &attempt).await?;
        Ok(secrets.mask_outputs(&outputs, limit))
    }

    async fn stop_step(
        &self,
        workflow: &Workflow,
        step: &str,
        grace: Duration,
    ) -> Result<(), BackendError> {
        self.check(workflow, step)?;
        let attempt = self.attempt(step).await?;
        attempt.stopping.store(true, Ordering::SeqCst);
        // Zero would be a forced delete that does not wait for the kubelet.
        let secs = u32::try_from(grace.as_secs_f64().ceil() as u64)
            .unwrap_or(u32::MAX)
            .max(1);
        tracing::info!(parent: &self.span(step), pod = %attempt.pod, grace = secs, "stopping: deleting the step pod");
        match self
            .pods
            .delete(&attempt.pod, &DeleteParams::background().grace_period(secs))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, kube::core::Status::is_not_found) => {}
            Err(e) => return Err(kube_err(step, "delete the step pod")(e)),
        }
        let bound = Duration::from_secs(u64::from(secs)) + Duration::from_secs(60);
        let exit = watch::until_gone(&self.pods, &attempt.pod, bound).await;
        // No exit code seen: it was killed before or while it started.
        *lock(&attempt.stopped_exit) = Some(exit.unwrap_or(128 + 15));
        Ok(())
    }

    async fn destroy_step(&self, workflow: &Workflow, step: &str) -> Result<(), BackendError> {
        self.check(workflow, step)?;
        lock(&self.attempts).remove(step);
        let selector = pod::step_selector(&self.target.job_uid, step);
        self.pods
            .delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels(&selector),
            )
            .await
            .map_err(kube_err(step, "delete the step's pods"))?;
        Ok(())
    }

    async fn destroy_workflow(&self, workflow: &Workflow) -> Result<(), BackendError> {
        self.check(workflow, "")?;
        lock(&self.attempts).clear();
        let selector = pod::job_selector(&self.target.job_uid);
        self.pods
            .delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels(&selector),
            )
            .await
            .map_err(kube_err("", "delete the Job's step pods"))?;
        if self.target.workspace.is_some() {
            let name = pod::workspace_claim_name(&self.target.job_name, &self.target.job_uid);
            match self.claims.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, kube::core::Status::is_not_found) => {}
                Err(e) => return Err(kube_err("", "delete the workspace claim")(e)),
            }
        }
        Ok(())
    }
}
