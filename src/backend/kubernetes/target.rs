//! The Job one kubernetes backend runs steps for: its identity and what its spec
//! says about every step pod (workspace, pull secrets). Its own file so the
//! backend's file does not grow with each pod-wide setting.

use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::ResourceExt;

use crate::crd::Job;
use crate::crd::job::{JobSpec, Workspace};

/// The Job one backend runs steps for.
#[derive(Clone, Debug, PartialEq)]
pub struct JobTarget {
    pub namespace: String,
    pub job_name: String,
    pub job_uid: String,
    /// `spec.workspace`: a claim mounted at `/workspace` in every step pod.
    pub workspace: Option<Workspace>,
    /// `spec.imagePullSecrets`: every step pod's `imagePullSecrets`.
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// The uid and gid step containers run as (default 1000: non-root, as the
    /// `restricted` Pod Security Standard requires).
    pub run_as_user: i64,
    pub run_as_group: i64,
}

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
        }
    }

    /// The target of a Job read from the API (`None` without namespace or uid).
    pub fn for_job(job: &Job) -> Option<Self> {
        Some(Self::new(job.namespace()?, job.name_any(), job.uid()?).with_spec(&job.spec))
    }

    /// The pod-wide settings of `spec` (workspace, pull secrets): one place, so a
    /// runner that got the spec with its claim builds the same pods as the API's Job.
    #[must_use]
    pub fn with_spec(mut self, spec: &JobSpec) -> Self {
        self.workspace = spec.workspace.clone();
        self.image_pull_secrets = spec.image_pull_secrets.clone();
        self
    }
}
