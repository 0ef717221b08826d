//! Blobs of Jobs deleted while no controller watched: their prefixes in the
//! store (`jobs/<namespace>/<name>-<uid>/`) are removed once the Job cache
//! synced, as their logs are.

use std::collections::HashSet;

use object_store::path::Path;
use tracing::warn;

use crate::store::{BlobStore, keys::uid_of_job_dir};

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
}
