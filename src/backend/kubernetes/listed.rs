//! The step pods of many Jobs from one paged LIST. A runner that comes back to
//! a thousand assigned Jobs would otherwise list pods once per Job, and each
//! of those lists makes the API server filter every pod of the namespace:
//! work that grows with the square of the Jobs. Instead it lists every pod
//! with a Job's label once, as it starts those runs (the list is taken while
//! they claim), and each run's discover waits for it and takes its Job's pods.
//!
//! Valid only for Jobs with no run in this process when the list was taken:
//! their pods are then made only by their own run, after its discover, so a
//! pod the list lacks cannot exist yet. The runner enforces that
//! (`Jobs::resume`); any other run lists for itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::attempt::lock;
use super::pod::LABEL_JOB_UID;

/// Pods per page: what the API server encodes and sends in one answer.
const PAGE: u32 = 500;

/// A list being taken, for each run that waits on it (`None`: it failed).
pub type ListedSoon = Shared<BoxFuture<'static, Option<Arc<ListedPods>>>>;

/// Pods listed once, by the uid of the Job they belong to.
#[derive(Debug, Default)]
pub struct ListedPods {
    by_job: Mutex<HashMap<String, Vec<Pod>>>,
}

impl ListedPods {
    /// Every pod in namespace `ns` that carries a Job's label, a page at a time.
    pub async fn list(client: kube::Client, ns: &str) -> Result<Self, kube::Error> {
        let api: Api<Pod> = Api::namespaced(client, ns);
        let mut params = ListParams::default().labels(LABEL_JOB_UID).limit(PAGE);
        let mut pods = Vec::new();
        loop {
            let page = api.list(&params).await?;
            pods.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(next) => params = params.continue_token(&next),
                None => break,
            }
        }
        Ok(Self::of(pods))
    }

    /// [`Self::list`] of namespace `ns`, started now, whoever waits on it first.
    pub fn soon(client: kube::Client, ns: String) -> ListedSoon {
        let list = tokio::spawn(async move {
            let listed = Self::list(client, &ns).await;
            listed.inspect_err(|e| {
                tracing::warn!(
                    namespace = ns,
                    "list the step pods of the Jobs to resume (each lists its own instead): {e}"
                );
            })
        });
        async move { list.await.ok()?.ok().map(Arc::new) }
            .boxed()
            .shared()
    }

    /// `pods`, grouped by their Job's uid (who last applied which field dropped).
    pub fn of(pods: Vec<Pod>) -> Self {
        let mut by_job: HashMap<String, Vec<Pod>> = HashMap::new();
        for mut pod in pods {
            let labels = pod.metadata.labels.as_ref();
            let Some(uid) = labels.and_then(|l| l.get(LABEL_JOB_UID)).cloned() else {
                continue;
            };
            pod.metadata.managed_fields = None;
            by_job.entry(uid).or_default().push(pod);
        }
        Self {
            by_job: Mutex::new(by_job),
        }
    }

    /// Job `uid`'s pods as listed (none: it had none), handed out once.
    pub fn take(&self, uid: &str) -> Vec<Pod> {
        lock(&self.by_job).remove(uid).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn pod(name: &str, job_uid: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: job_uid.map(|u| [(LABEL_JOB_UID.to_owned(), u.to_owned())].into()),
                managed_fields: Some(vec![Default::default()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(pods: &[Pod]) -> Vec<&str> {
        pods.iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect()
    }

    #[test]
    fn each_job_takes_its_own_pods_once() {
        let listed = ListedPods::of(vec![
            pod("a-s1", Some("a")),
            pod("b-s1", Some("b")),
            pod("a-s2", Some("a")),
            pod("stray", None),
        ]);
        let a = listed.take("a");
        assert_eq!(names(&a), ["a-s1", "a-s2"]);
        assert!(a.iter().all(|p| p.metadata.managed_fields.is_none()));
        assert!(listed.take("a").is_empty(), "handed out once");
        assert_eq!(names(&listed.take("b")), ["b-s1"]);
        // A Job with no pods listed has none: an answer, not a reason to list.
        assert!(listed.take("c").is_empty());
    }
}
