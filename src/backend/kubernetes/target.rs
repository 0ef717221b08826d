//! The Job one Kubernetes backend runs steps for, and what its step pods need
//! to know of it (workspace, pod template, pull secrets).

use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::ResourceExt;

use crate::crd::Job;
use crate::crd::job::{JobSpec, PodTemplate, Workspace};

/// The Job one backend runs steps for.
#[derive(Clone, Debug, PartialEq)]
pub struct JobTarget {
    pub namespace: String,
    pub job_name: String,
    pub job_uid: String,
    /// `spec.workspace`: a claim mounted at `/workspace` in every step pod (by
    /// default for a Job with `spec.content` or a step that collects).
    pub workspace: Option<Workspace>,
    /// `spec.imagePullSecrets`: every step pod's `imagePullSecrets`.
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// The uid and gid step containers run as (default 1000: non-root, as the
    /// `restricted` Pod Security Standard requires).
    pub run_as_user: i64,
    pub run_as_group: i64,
    /// `spec.podTemplate`: every step pod's settings (a step's own win).
    pub pod_template: Option<PodTemplate>,
    /// The image the step pods' init container copies `baton-entrypoint` from
    /// (a Baton image: the runner's own, by default).
    pub tools_image: String,
    /// The runner's name as a label value: step pods carry it
    /// ([`super::LABEL_RUNNER`]), so the runner's one watch sees them.
    pub runner_label: Option<String>,
}

/// The tools image unless the runner says otherwise (`--tools-image`).
pub const DEFAULT_TOOLS_IMAGE: &str = "localhost/baton/baton:dev";

impl JobTarget {
    pub fn new(
        namespace: impl Into<String>,
        job_name: impl Into<String>,
        job_uid: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            job_name: job_name.into(),
            job_uid: job_uid.into(),
            workspace: None,
            image_pull_secrets: None,
            run_as_user: 1000,
            run_as_group: 1000,
            tools_image: DEFAULT_TOOLS_IMAGE.into(),
            pod_template: None,
            runner_label: None,
        }
    }

    /// The target of a Job read from the API (`None` without namespace or uid).
    pub fn for_job(job: &Job) -> Option<Self> {
        Some(Self::new(job.namespace()?, job.name_any(), job.uid()?).with_spec(&job.spec))
    }

    /// The pod-wide settings of `spec` (workspace, pod template, pull secrets): one
    /// place, so a runner that got the spec with its claim builds the same pods as
    /// one that read the Job from the API.
    #[must_use]
    pub fn with_spec(mut self, spec: &JobSpec) -> Self {
        self.workspace = spec.workspace.clone().or_else(|| {
            // Content in and changes out go through the workspace claim: a Job
            // that asks for either gets one with the defaults.
            let needs = spec.content.is_some() || spec.steps.iter().any(|s| s.collects());
            needs.then(Workspace::default)
        });
        self.pod_template = spec.pod_template.as_deref().cloned();
        self.image_pull_secrets = spec.image_pull_secrets.clone();
        self
    }
}
