//! The one way a Job's status is written, by the controller and by the runner
//! API alike: a replace at the resourceVersion the writer read. A write that
//! meets a newer version fails ([`Written::Conflict`]) and never lands, so a
//! decision made on stale data is made again on fresh data by its caller.
//!
//! What landed is remembered ([`Landed`]) until the watch cache shows it: the
//! runner claims a Job the moment the controller's assignment lands, usually
//! before the watch delivers it, and that claim is then answered without a read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;

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

/// Replace `job`'s status with `status`, at the resourceVersion `job` was read
/// at; what lands is remembered in `landed`.
pub async fn replace_status(
    client: &kube::Client,
    landed: &Landed,
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
        Ok(written) => {
            landed.record(written);
            Ok(Written::Landed)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Written::Conflict),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Written::Gone),
        Err(e) => Err(e),
    }
}

/// A landed write is trusted over the cache this long at most, should the
/// watch never show its version (a relist clears them all anyway).
const TRUSTED_FOR: Duration = Duration::from_secs(30);

/// Status writes this process landed that the watch cache has not shown yet,
/// by namespace and name.
///
/// Newer than the cache without comparing resourceVersions (which are opaque):
/// a watch delivers every version in order, so until it delivers the written
/// one, the cache is older than it. An entry goes when the watch shows that
/// version or deletes the Job; a relist (which skips versions) drops them all.
#[derive(Debug, Default)]
pub struct Landed {
    writes: Mutex<HashMap<JobKey, (Arc<Job>, Instant)>>,
}

/// Namespace and name.
type JobKey = (String, String);

impl Landed {
    /// The Job as `write` returned it.
    pub fn record(&self, written: Job) {
        let key = (written.namespace().unwrap_or_default(), written.name_any());
        let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        writes.retain(|_, (_, at)| now.duration_since(*at) < TRUSTED_FOR);
        writes.insert(key, (Arc::new(written), now));
    }

    /// What the Jobs' watch delivered (after the cache took it).
    pub fn seen(&self, event: &watcher::Event<Job>) {
        let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(job) => {
                let key = (job.namespace().unwrap_or_default(), job.name_any());
                if writes.get(&key).is_some_and(|(w, _)| {
                    w.resource_version().is_some() && w.resource_version() == job.resource_version()
                }) {
                    writes.remove(&key);
                }
            }
            watcher::Event::Delete(job) => {
                writes.remove(&(job.namespace().unwrap_or_default(), job.name_any()));
            }
            watcher::Event::Init => writes.clear(),
            watcher::Event::InitApply(_) | watcher::Event::InitDone => {}
        }
    }

    /// Job `ns/name` as this process last wrote it, if the cache (`cached`)
    /// does not show that write yet; else `cached`.
    pub fn newest(&self, ns: &str, name: &str, cached: Option<Arc<Job>>) -> Option<Arc<Job>> {
        let writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        match writes.get(&(ns.to_owned(), name.to_owned())) {
            Some((written, at)) if at.elapsed() < TRUSTED_FOR => Some(written.clone()),
            _ => cached,
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::JobSpec;

    fn job(name: &str, rv: &str) -> Job {
        let mut j = Job::new(name, JobSpec::default());
        j.metadata.namespace = Some("ns".into());
        j.metadata.resource_version = Some(rv.into());
        j
    }

    fn cached(name: &str, rv: &str) -> Option<Arc<Job>> {
        Some(Arc::new(job(name, rv)))
    }

    fn version(j: Option<Arc<Job>>) -> Option<String> {
        j.and_then(|j| j.resource_version())
    }

    #[test]
    fn a_landed_write_is_newer_than_the_cache_until_the_watch_shows_its_version() {
        let landed = Landed::default();
        landed.record(job("a", "7"));
        assert_eq!(
            version(landed.newest("ns", "a", cached("a", "5"))),
            Some("7".into())
        );
        // An older version arriving does not retire the write.
        landed.seen(&watcher::Event::Apply(job("a", "6")));
        assert_eq!(
            version(landed.newest("ns", "a", cached("a", "6"))),
            Some("7".into())
        );
        // Its own version does: the cache holds it (or later) from now on.
        landed.seen(&watcher::Event::Apply(job("a", "7")));
        assert_eq!(
            version(landed.newest("ns", "a", cached("a", "9"))),
            Some("9".into())
        );
        assert_eq!(landed.held(), 0);
    }

    #[test]
    fn other_jobs_a_deletion_and_a_relist_fall_back_to_the_cache() {
        let landed = Landed::default();
        landed.record(job("a", "7"));
        landed.record(job("b", "8"));
        assert_eq!(
            version(landed.newest("ns", "c", cached("c", "3"))),
            Some("3".into())
        );
        assert_eq!(version(landed.newest("other", "a", None)), None);
        landed.seen(&watcher::Event::Delete(job("a", "9")));
        assert_eq!(version(landed.newest("ns", "a", None)), None);
        assert_eq!(version(landed.newest("ns", "b", None)), Some("8".into()));
        // A relist may skip the written version: nothing stays trusted.
        landed.seen(&watcher::Event::Init);
        assert_eq!(
            version(landed.newest("ns", "b", cached("b", "5"))),
            Some("5".into())
        );
    }
}
