//! A finished Job's step pods go in batches: one `deletecollection` per
//! namespace for every Job that finished within a moment, selected by a
//! set-based selector on the Jobs' uid label, instead of one request per Job.
//! At 10 Jobs a second that is a tenth of a request per Job, and a restarted
//! controller settling 10,000 finished Jobs sends 100 requests, not 10,000.
//! A batch that fails is tried again; a refusal (403) is told once, in the log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use tracing::{info, warn};

use crate::backend::kubernetes::LABEL_JOB_UID;
use crate::controller::Context;

/// Jobs finishing this close together share a request.
pub const GATHER: Duration = Duration::from_secs(1);
/// After a failed batch, the next try waits this long.
pub const AFTER_FAILURE: Duration = Duration::from_secs(5);
/// uids in one selector at most: a uid is 36 bytes, so a request line stays
/// under 4 KiB.
pub const PER_REQUEST: usize = 100;

/// The finished Jobs whose step pods are still to be removed, by namespace.
#[derive(Debug, Default)]
pub struct StepPodCleanup {
    pending: Mutex<BTreeMap<String, BTreeSet<String>>>,
    wake: tokio::sync::Notify,
}

impl StepPodCleanup {
    /// Remove the step pods of the Job `uid` in `ns`, soon.
    pub fn remove(&self, ns: &str, uid: &str) {
        let mut pending = self.lock();
        pending
            .entry(ns.to_owned())
            .or_default()
            .insert(uid.to_owned());
        drop(pending);
        self.wake.notify_one();
    }

    /// Jobs waiting for their step pods' removal (a figure for tests).
    pub fn pending(&self) -> usize {
        self.lock().values().map(BTreeSet::len).sum()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, BTreeSet<String>>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Vec<Batch> {
        batches(std::mem::take(&mut *self.lock()), PER_REQUEST)
    }

    fn again(&self, batch: Batch) {
        self.lock().entry(batch.ns).or_default().extend(batch.uids);
    }
}

/// One request's worth: Jobs of one namespace.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    pub ns: String,
    pub uids: Vec<String>,
}

impl Batch {
    /// The label selector of these Jobs' pods.
    pub fn selector(&self) -> String {
        format!("{LABEL_JOB_UID} in ({})", self.uids.join(","))
    }
}

/// `pending` cut into requests of at most `per` Jobs each (`per` ≥ 1).
pub fn batches(pending: BTreeMap<String, BTreeSet<String>>, per: usize) -> Vec<Batch> {
    let per = per.max(1);
    let mut out = Vec::new();
    for (ns, uids) in pending {
        let uids: Vec<String> = uids.into_iter().collect();
        for chunk in uids.chunks(per) {
            out.push(Batch {
                ns: ns.clone(),
                uids: chunk.to_vec(),
            });
        }
    }
    out
}

/// What became of one batch's request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Removed,
    /// Not allowed: told in the log, not tried again.
    Refused(String),
    /// Tried again after [`AFTER_FAILURE`].
    Failed(String),
}

/// A request's result, as [`Outcome`]. A namespace that is gone took its pods.
pub fn outcome(result: Result<(), kube::Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Removed,
        Err(kube::Error::Api(s)) if s.code == 404 => Outcome::Removed,
        Err(kube::Error::Api(s)) if s.code == 403 => Outcome::Refused(s.message),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// The cleanup task: runs until `shutdown` (the leader's controllers' lifetime).
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let (client, cleanup) = (&ctx.client, &ctx.step_pods);
    let passes = async {
        loop {
            cleanup.wake.notified().await;
            tokio::time::sleep(GATHER).await;
            if !pass(client, cleanup).await {
                tokio::time::sleep(AFTER_FAILURE).await;
                cleanup.wake.notify_one();
            }
        }
    };
    tokio::select! {
        () = passes => {}
        () = shutdown => {}
    }
}

/// One request per batch, in turn. False if any failed (it is pending again).
async fn pass(client: &Client, cleanup: &StepPodCleanup) -> bool {
    let mut all_done = true;
    for batch in cleanup.take() {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &batch.ns);
        let lp = ListParams::default().labels(&batch.selector());
        let result = pods
            .delete_collection(&DeleteParams::background(), &lp)
            .await;
        match outcome(result.map(drop)) {
            Outcome::Removed => {
                info!(
                    namespace = batch.ns,
                    jobs = batch.uids.len(),
                    "finished Jobs' step pods removed"
                );
            }
            Outcome::Refused(why) => {
                warn!(
                    namespace = batch.ns,
                    "not allowed to remove finished Jobs' step pods: {why}"
                );
            }
            Outcome::Failed(why) => {
                warn!(
                    namespace = batch.ns,
                    jobs = batch.uids.len(),
                    "remove finished Jobs' step pods (tried again): {why}"
                );
                cleanup.again(batch);
                all_done = false;
            }
        }
    }
    all_done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(items: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (ns, uid) in items {
            map.entry((*ns).into()).or_default().insert((*uid).into());
        }
        map
    }

    #[test]
    fn one_request_per_namespace_with_at_most_per_request_jobs() {
        let uids: Vec<String> = (0..5).map(|i| format!("u{i}")).collect();
        let mut items: Vec<(&str, &str)> = uids.iter().map(|u| ("a", u.as_str())).collect();
        items.push(("b", "x"));
        items.push(("a", "u0"));
        let got = batches(pending(&items), 2);
        let shape: Vec<(&str, usize)> = got.iter().map(|b| (b.ns.as_str(), b.uids.len())).collect();
        assert_eq!(
            shape,
            [("a", 2), ("a", 2), ("a", 1), ("b", 1)],
            "a repeated uid counts once"
        );
        assert!(batches(BTreeMap::new(), 100).is_empty());
        assert_eq!(
            batches(pending(&[("a", "u")]), 0).len(),
            1,
            "per 0 still makes progress"
        );
    }

    #[test]
    fn the_selector_names_every_job_of_the_batch() {
        let b = Batch {
            ns: "a".into(),
            uids: vec!["u1".into(), "u2".into()],
        };
        assert_eq!(b.selector(), "baton.dev/job-uid in (u1,u2)");
    }

    #[test]
    fn a_failed_batch_is_pending_again_and_a_gone_namespace_is_done() {
        let c = StepPodCleanup::default();
        c.remove("a", "u1");
        c.remove("a", "u1");
        c.remove("b", "u2");
        assert_eq!(c.pending(), 2);
        let taken = c.take();
        assert_eq!(c.pending(), 0);
        for b in taken {
            c.again(b);
        }
        assert_eq!(c.pending(), 2);
        let api = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure(&format!("code {code}"), "")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert_eq!(outcome(Ok(())), Outcome::Removed);
        assert_eq!(outcome(Err(api(404))), Outcome::Removed);
        assert_eq!(outcome(Err(api(403))), Outcome::Refused("code 403".into()));
        assert!(matches!(outcome(Err(api(500))), Outcome::Failed(_)));
    }
}
