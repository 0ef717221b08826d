//! The one way a Job's status is written, by the controller and by the runner
//! API alike: a replace at the resourceVersion the writer read. A write that
//! meets a newer version fails ([`Written::Conflict`]) and never lands, so a
//! decision made on stale data is made again on fresh data by its caller.

use kube::ResourceExt;
use kube::api::{Api, PostParams};

use crate::crd::{Job, JobStatus};
use crate::server::FIELD_MANAGER;

/// How a status write ended.
#[derive(Debug)]
pub enum Written {
    /// It landed.
    Landed,
    /// The Job changed since it was read: read again and decide again.
    Conflict,
    /// The Job is gone.
    Gone,
}

/// Replace `job`'s status with `status`, at the resourceVersion `job` was read at.
pub async fn replace_status(
    client: &kube::Client,
    job: &Job,
    status: JobStatus,
) -> Result<Written, kube::Error> {
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let mut next = job.clone();
    next.status = Some(status);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.replace_status(&job.name_any(), &pp, &next).await {
        Ok(_) => Ok(Written::Landed),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Written::Conflict),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Written::Gone),
        Err(e) => Err(e),
    }
}
