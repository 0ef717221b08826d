//! The Job one Kubernetes backend runs steps for, and what its step pods need
//! to know of it.

use kube::ResourceExt;

use crate::crd::Job;
use crate::crd::job::{PodTemplate, Workspace};

/// The Job one backend runs steps for.
#[derive(Clone, Debug, PartialEq)]
pub struct JobTarget {
    pub namespace: String,
    pub job_name: String,
    pub job_uid: String,
    /// `spec.workspace`: a claim mounted at `/workspace` in every step pod.
    pub workspace: Option<Workspace>,
    /// The uid and gid step containers run as (default 1000: non-root, as the
    /// `restricted` Pod Security Standard requires).
    pub run_as_user: i64,
    pub run_as_group: i64,
    /// `spec.podTemplate`: every step pod's settings (a step's own win).
    pub pod_template: Option<PodTemplate>,
    /// The image the step pods' init container copies `baton-entrypoint` from
    /// (a Baton image: the runner's own, by default).
    pub tools_image: String,
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
            run_as_user: 1000,
            run_as_group: 1000,
            tools_image: DEFAULT_TOOLS_IMAGE.into(),
            pod_template: None,
        }
    }

    /// The target of a Job read from the API (`None` without namespace or uid).
    pub fn for_job(job: &Job) -> Option<Self> {
        let mut target = Self::new(job.namespace()?, job.name_any(), job.uid()?);
        target.workspace = job.spec.workspace.clone();
        target.pod_template = job.spec.pod_template.clone();
        Some(target)
    }
}
