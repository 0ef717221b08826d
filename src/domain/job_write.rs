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
use kube::runtime::reflector::{ObjectRef, Store};
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

/// A landed write is trusted over the cache this long at most; older ones
/// go once more than [`HELD`] are held.
const TRUSTED_FOR: Duration = Duration::from_secs(30);
const HELD: usize = 1024;

/// Status writes this process landed that the watch cache does not show yet,
/// by namespace and name.
///
/// Which is newer is decided by resourceVersion, compared as Kubernetes
/// defines it (KEP-5504, GA in 1.35: a positive integer, ordered within one
/// resource); a version that is not one never counts as newer. An entry goes
/// once the watch shows that version or a later one, or the Job is deleted.
#[derive(Debug)]
pub struct Landed {
    cache: Store<Job>,
    writes: Mutex<HashMap<JobKey, (Arc<Job>, Instant)>>,
}

/// Namespace and name.
type JobKey = (String, String);

impl Landed {
    /// Over the Jobs' watch cache.
    pub fn new(cache: Store<Job>) -> Self {
        Self {
            cache,
            writes: Mutex::default(),
        }
    }

    /// The Job as a write returned it: kept if the cache is behind it.
    pub fn record(&self, written: Job) {
        let key = (written.namespace().unwrap_or_default(), written.name_any());
        let cached = self.cached(&key);
        if !is_newer(&written, cached.as_deref()) {
            return;
        }
        let mut writes = lock(&self.writes);
        if (writes.get(&key)).is_some_and(|(held, _)| !is_newer(&written, Some(held))) {
            return;
        }
        let now = Instant::now();
        if writes.len() >= HELD {
            writes.retain(|_, (_, at)| now.duration_since(*at) < TRUSTED_FOR);
        }
        writes.insert(key, (Arc::new(written), now));
    }

    /// What the Jobs' watch delivered (after the cache took it).
    pub fn seen(&self, event: &watcher::Event<Job>) {
        let mut writes = lock(&self.writes);
        match event {
            watcher::Event::Apply(job) | watcher::Event::InitApply(job) => {
                let key = (job.namespace().unwrap_or_default(), job.name_any());
                if (writes.get(&key)).is_some_and(|(held, _)| !is_newer(held, Some(job))) {
                    writes.remove(&key);
                }
            }
            watcher::Event::Delete(job) => {
                writes.remove(&(job.namespace().unwrap_or_default(), job.name_any()));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    /// Job `ns/name`: the cache's, or this process's last write of it if the
    /// cache does not show that yet.
    pub fn newest(&self, ns: &str, name: &str) -> Option<Arc<Job>> {
        let key = (ns.to_owned(), name.to_owned());
        let cached = self.cached(&key);
        self.written_after(&key, cached.as_deref()).or(cached)
    }

    /// Whether this process landed a write of `job` later than `job` itself
    /// (and recently): a decision made on `job` is made on stale data, and the
    /// watch event that brings the write is still to come.
    pub fn wrote_since(&self, job: &Job) -> bool {
        let key = (job.namespace().unwrap_or_default(), job.name_any());
        self.written_after(&key, Some(job)).is_some()
    }

    /// This process's last write of `key`, if it is still trusted and later
    /// than `than`.
    fn written_after(&self, key: &JobKey, than: Option<&Job>) -> Option<Arc<Job>> {
        let writes = lock(&self.writes);
        let (written, at) = writes.get(key)?;
        (at.elapsed() < TRUSTED_FOR && is_newer(written, than)).then(|| written.clone())
    }

    fn cached(&self, (ns, name): &JobKey) -> Option<Arc<Job>> {
        self.cache.get(&ObjectRef::new(name).within(ns))
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        lock(&self.writes).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `a` is a later version than `b` (or `b` is unknown). Versions are
/// positive integers without leading zeros: longer is later, then by digits.
fn is_newer(a: &Job, b: Option<&Job>) -> bool {
    let number = |v: Option<String>| {
        v.filter(|v| v.bytes().all(|c| c.is_ascii_digit()) && !v.is_empty() && !v.starts_with('0'))
    };
    let Some(a) = number(a.resource_version()) else {
        return false;
    };
    match b.map(|b| number(b.resource_version())) {
        None => true,
        Some(None) => false,
        Some(Some(b)) => (a.len(), a.as_bytes()) > (b.len(), b.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::JobSpec;
    use kube::runtime::reflector::{self, store::Writer};

    fn job(name: &str, rv: &str) -> Job {
        let mut j = Job::new(name, JobSpec::default());
        j.metadata.namespace = Some("ns".into());
        j.metadata.resource_version = Some(rv.into());
        j
    }

    fn landed() -> (Landed, Writer<Job>) {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::InitDone);
        (Landed::new(store), writer)
    }

    /// The watch delivers `j`: to the cache first, then to `landed`.
    fn deliver(landed: &Landed, writer: &mut Writer<Job>, j: Job) {
        let event = watcher::Event::Apply(j);
        writer.apply_watcher_event(&event);
        landed.seen(&event);
    }

    fn version(j: Option<Arc<Job>>) -> Option<String> {
        j.and_then(|j| j.resource_version())
    }

    #[test]
    fn a_landed_write_is_newer_than_the_cache_until_the_watch_shows_it() {
        let (landed, mut cache) = landed();
        deliver(&landed, &mut cache, job("a", "5"));
        landed.record(job("a", "7"));
        assert_eq!(version(landed.newest("ns", "a")), Some("7".into()));
        deliver(&landed, &mut cache, job("a", "6"));
        assert_eq!(
            version(landed.newest("ns", "a")),
            Some("7".into()),
            "an older version changes nothing"
        );
        deliver(&landed, &mut cache, job("a", "10"));
        assert_eq!(
            version(landed.newest("ns", "a")),
            Some("10".into()),
            "10 > 7: compared as numbers"
        );
        assert_eq!(landed.held(), 0);
    }

    #[test]
    fn a_write_the_watch_delivered_first_or_an_older_one_is_not_kept() {
        let (landed, mut cache) = landed();
        deliver(&landed, &mut cache, job("a", "8"));
        landed.record(job("a", "8"));
        landed.record(job("a", "7"));
        assert_eq!(landed.held(), 0);
        landed.record(job("a", "12"));
        landed.record(job("a", "9"));
        assert_eq!(
            version(landed.newest("ns", "a")),
            Some("12".into()),
            "a late response of an older write"
        );
    }

    #[test]
    fn a_job_older_than_a_landed_write_is_stale_until_the_watch_shows_the_write() {
        let (landed, mut cache) = landed();
        let read = job("a", "5");
        deliver(&landed, &mut cache, read.clone());
        assert!(!landed.wrote_since(&read), "nothing written yet");
        landed.record(job("a", "7"));
        assert!(landed.wrote_since(&read));
        assert!(!landed.wrote_since(&job("a", "7")), "the write itself");
        assert!(!landed.wrote_since(&job("b", "5")), "another Job");
        deliver(&landed, &mut cache, job("a", "7"));
        assert!(
            !landed.wrote_since(&read),
            "the watch caught up: the entry is gone"
        );
    }

    #[test]
    fn versions_that_are_not_numbers_never_win_and_a_deletion_clears() {
        let (landed, mut cache) = landed();
        deliver(&landed, &mut cache, job("a", "5"));
        for odd in ["", "07", "x9", "-9"] {
            landed.record(job("a", odd));
            assert_eq!(
                version(landed.newest("ns", "a")),
                Some("5".into()),
                "{odd:?}"
            );
        }
        landed.record(job("b", "3"));
        assert_eq!(
            version(landed.newest("ns", "b")),
            Some("3".into()),
            "not cached yet"
        );
        landed.seen(&watcher::Event::Delete(job("b", "4")));
        assert_eq!(version(landed.newest("ns", "b")), None);
        assert_eq!(version(landed.newest("other", "a")), None);
    }
}
