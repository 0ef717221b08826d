//! Blobs of Jobs deleted while no controller watched: their prefixes in the
//! store (`jobs/<namespace>/<name>-<uid>/`) are removed once the Job cache
//! synced, as their logs are. Uploads (`uploads/<namespace>/<hex>.tar.zst`)
//! belong to no one Job: one that no Job names is removed once it is older
//! than the retention period (a fresh upload waits for its Job's create).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use object_store::path::Path;
use tracing::warn;

use crate::store::{BlobStore, keys::UPLOADS, keys::uid_of_job_dir};

/// Remove the blobs of every Job whose uid `live` does not know, in namespace
/// `only` or in all. Returns how many Jobs' blobs were removed.
pub async fn blobs(store: &BlobStore, live: &HashSet<String>, only: Option<&str>) -> usize {
    let namespaces = match only {
        Some(ns) => vec![ns.to_owned()],
        None => match store.children(&Path::from("jobs")).await {
            Ok(all) => all,
            Err(e) => {
                warn!("list the blob store's namespaces: {e}");
                return 0;
            }
        },
    };
    let mut removed = 0;
    for ns in namespaces {
        let dir = Path::from_iter(["jobs", ns.as_str()]);
        let jobs = match store.children(&dir).await {
            Ok(jobs) => jobs,
            Err(e) => {
                warn!(namespace = %ns, "list the blob store's Jobs: {e}");
                continue;
            }
        };
        for job in jobs {
            let gone = uid_of_job_dir(&job).is_some_and(|uid| !live.contains(uid));
            if gone && store.remove_prefix(&dir.child(job.as_str())).await.is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Remove uploads that no Job names (`named`: `<namespace>/<hex>`) and that
/// were written before `now - retention`. Returns how many were removed.
pub async fn uploads(
    store: &BlobStore,
    named: &HashSet<String>,
    now: SystemTime,
    retention: Duration,
) -> usize {
    let root = Path::from(UPLOADS);
    let listed = match store.listed(&root).await {
        Ok(listed) => listed,
        Err(e) => {
            warn!("list the uploads: {e}");
            return 0;
        }
    };
    let mut removed = 0;
    for (key, written) in listed {
        let parts: Vec<_> = key.parts().map(|p| p.as_ref().to_owned()).collect();
        let Some(name) = parts.get(1..).map(|p| p.join("/")) else {
            continue;
        };
        let name = name.trim_end_matches(".tar.zst");
        let old = now.duration_since(written).is_ok_and(|age| age > retention);
        if old && !named.contains(name) && store.remove(&key).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Sweep uploads once the Job cache synced, then every tenth of the retention
/// period (at most every 10 minutes), for as long as the process runs.
pub fn spawn_upload_sweeps(
    jobs: kube::runtime::reflector::Store<crate::crd::Job>,
    store: BlobStore,
    retention: Duration,
) {
    let every = (retention / 10).clamp(Duration::from_secs(10), Duration::from_secs(600));
    tokio::spawn(async move {
        if jobs.wait_until_ready().await.is_err() {
            return;
        }
        loop {
            let named = jobs
                .state()
                .iter()
                .filter_map(|j| named_upload(j))
                .collect();
            let removed = uploads(&store, &named, SystemTime::now(), retention).await;
            if removed > 0 {
                tracing::info!(removed, "removed uploads no Job names");
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// `<namespace>/<hex>` of the upload a Job's `spec.content` names.
pub fn named_upload(job: &crate::crd::Job) -> Option<String> {
    let content = job.spec.content.as_ref()?;
    let hex = content.digest.strip_prefix("sha256:")?;
    Some(format!("{}/{hex}", job.metadata.namespace.as_deref()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::JobKey;

    const LIVE: &str = "0f8e4a52-77b5-4bb0-9c35-6f2c1d3e4a5b";
    const GONE: &str = "11111111-2222-3333-4444-555555555555";

    #[tokio::test]
    async fn only_deleted_jobs_blobs_are_swept() {
        let store = BlobStore::in_memory();
        let body =
            || futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))]);
        for (ns, uid) in [("a", LIVE), ("a", GONE), ("b", GONE)] {
            let key = JobKey::new(ns, "j", uid).unwrap().log("s").unwrap();
            store.put(&key, body(), 8).await.unwrap();
        }
        let live: HashSet<String> = [LIVE.to_owned()].into();
        assert_eq!(blobs(&store, &live, Some("a")).await, 1);
        assert_eq!(blobs(&store, &live, None).await, 1);
        assert_eq!(blobs(&store, &live, None).await, 0);
        let kept = JobKey::new("a", "j", LIVE).unwrap().log("s").unwrap();
        assert_eq!(store.size(&kept).await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn an_upload_goes_once_no_job_names_it_and_it_is_old() {
        let store = BlobStore::in_memory();
        let body =
            || futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))]);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        for (ns, hex) in [("ci", &a), ("ci", &b), ("other", &a)] {
            let d = crate::store::Digest::parse(&format!("sha256:{hex}")).unwrap();
            let key = crate::store::keys::upload(ns, &d).unwrap();
            store.put(&key, body(), 8).await.unwrap();
        }
        let named: HashSet<String> = [format!("ci/{a}")].into();
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        assert_eq!(uploads(&store, &named, now, hour).await, 0, "all fresh");
        let later = now + 2 * hour;
        assert_eq!(uploads(&store, &named, later, hour).await, 2);
        let left = store.listed(&Path::from(UPLOADS)).await.unwrap();
        let left: Vec<String> = left.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(
            left,
            [format!("uploads/ci/{a}.tar.zst")],
            "the named one stays"
        );
    }
}
