//! Leader election with a `coordination.k8s.io/v1` Lease, so two controller
//! replicas can run and only one reconciles and serves runners.
//!
//! A candidate takes the Lease when nobody holds it, when it already holds it, or
//! when the holder's record has not changed for a whole lease duration *as this
//! candidate observed it* (its own clock, never the holder's `renewTime`, so clock
//! skew between nodes cannot shorten a lease). Writes carry the Lease's
//! resourceVersion: two candidates never both win one round.
//!
//! The leader labels its own pod `baton.dev/leader=<lease>` and removes that label
//! from any other pod, so a Service selecting the label sends runners to the leader
//! only. A leader that cannot renew within the renew deadline steps down by ending
//! the process; on SIGTERM it releases the Lease, so a standby takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;
use tracing::{info, warn};

/// The label the leader puts on its own pod; its value is the Lease's name.
pub const LEADER_LABEL: &str = "baton.dev/leader";

/// Leader election settings (`baton controller --leader-elect ...`).
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// The Lease's name and namespace.
    pub lease: String,
    pub namespace: String,
    /// Who this candidate is (its pod name in a cluster).
    pub identity: String,
    /// This process's pod, labelled while it leads; `None` outside a pod.
    pub pod: Option<String>,
    /// A holder silent this long has lost the Lease.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// The timings must nest: retry < renew deadline < lease duration, so a
    /// leader gives up before anybody else may take over.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(format!(
                "leader election needs retry period ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.retry_period, self.renew_deadline, self.lease_duration
            ));
        }
        if self.lease_duration.as_secs() < 1 || self.lease_duration.as_secs() > i32::MAX as u64 {
            return Err("the lease duration must be at least 1s".into());
        }
        Ok(())
    }
}

/// What a candidate does with the Lease as it finds it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it with this candidate as holder (acquire or renew).
    Take,
    /// Somebody else holds it and is alive.
    Wait { holder: String },
}

/// Decide from the Lease's spec, this candidate's identity, and how long this
/// candidate has seen the Lease unchanged.
pub(crate) fn verdict(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> Verdict {
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    match holder {
        None => Verdict::Take,
        Some(h) if h == me => Verdict::Take,
        Some(h) => {
            let secs = spec
                .and_then(|s| s.lease_duration_seconds)
                .filter(|d| *d > 0)
                .unwrap_or(15);
            if unchanged_for >= Duration::from_secs(u64::try_from(secs).unwrap_or(15)) {
                Verdict::Take
            } else {
                Verdict::Wait {
                    holder: h.to_owned(),
                }
            }
        }
    }
}

/// The Lease written with `me` as holder: a change of holder stamps the
/// acquire time and counts a transition; a renewal moves the renew time only.
pub(crate) fn claimed(
    previous: Option<&LeaseSpec>,
    me: &str,
    duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let mut spec = previous.cloned().unwrap_or_default();
    let was_mine = spec.holder_identity.as_deref() == Some(me);
    if !was_mine {
        spec.acquire_time = Some(MicroTime(now));
        // A new Lease starts at 0; every change of holder after that counts.
        spec.lease_transitions = Some(match previous {
            Some(p) => p.lease_transitions.unwrap_or(0) + 1,
            None => 0,
        });
    }
    spec.holder_identity = Some(me.to_owned());
    spec.lease_duration_seconds = Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX));
    spec.renew_time = Some(MicroTime(now));
    spec
}

/// Why the leader stepped down.
#[derive(Debug, thiserror::Error)]
#[error("lost leadership of Lease {namespace}/{lease}: {why}")]
pub struct LostLeadership {
    pub namespace: String,
    pub lease: String,
    pub why: String,
}

/// One candidate.
pub struct Elector {
    leases: Api<Lease>,
    pods: Api<Pod>,
    config: LeaderConfig,
    /// The Lease's resourceVersion as last seen, and since when.
    observed: Option<(String, Instant)>,
    /// Whether this pod carries the leader label.
    labelled: bool,
    last_holder: Option<String>,
}

impl Elector {
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        Self {
            leases: Api::namespaced(client.clone(), &config.namespace),
            pods: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            labelled: false,
            last_holder: None,
        }
    }

    /// Campaign until this candidate holds the Lease, then label its pod.
    pub async fn acquire(&mut self) {
        // A restarted container may find its pod still labelled from its last run.
        self.set_label(false).await;
        info!(lease = %self.config.lease, namespace = %self.config.namespace, identity = %self.config.identity, "standing by: campaigning for the Lease");
        loop {
            match self.round().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => warn!(lease = %self.config.lease, "leader election round failed: {e}"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
        info!(lease = %self.config.lease, identity = %self.config.identity, "became the leader");
        self.set_label(true).await;
    }

    /// Renew every retry period; resolves only when leadership is lost. The renew
    /// deadline counts from the start of the last round that renewed (a standby
    /// counts the lease from when it saw that write), and bounds everything after
    /// it: the sleep, and a round that hangs. So a leader stops acting at most one
    /// renew deadline after its last renewal, well inside the lease duration.
    pub async fn hold(&mut self) -> LostLeadership {
        let mut renewed = Instant::now();
        loop {
            let deadline = renewed + self.config.renew_deadline;
            tokio::time::sleep_until((Instant::now() + self.config.retry_period).min(deadline))
                .await;
            let started = Instant::now();
            let why = match tokio::time::timeout_at(deadline, self.round()).await {
                Ok(Ok(true)) => {
                    renewed = started;
                    if !self.labelled {
                        self.set_label(true).await;
                    }
                    continue;
                }
                Ok(Ok(false)) => {
                    return self.lost(format!(
                        "{} holds it now",
                        self.last_holder.as_deref().unwrap_or("another candidate")
                    ));
                }
                Ok(Err(e)) if Instant::now() < deadline => {
                    warn!(lease = %self.config.lease, "renew failed: {e}");
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the last round did not finish".to_owned(),
            };
            return self.lost(format!(
                "not renewed for {:?} (renew deadline {:?}): {why}",
                renewed.elapsed(),
                self.config.renew_deadline
            ));
        }
    }

    /// Give the Lease up (on shutdown) so a standby need not wait it out.
    pub async fn release(&mut self) {
        self.set_label(false).await;
        let Ok(Some(lease)) = self.leases.get_opt(&self.config.lease).await else {
            return;
        };
        if lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            != Some(&self.config.identity)
        {
            return;
        }
        let mut released = lease.clone();
        let spec = released.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .leases
            .replace(&self.config.lease, &PostParams::default(), &released)
            .await
        {
            Ok(_) => info!(lease = %self.config.lease, "released the Lease"),
            Err(e) => warn!(lease = %self.config.lease, "release the Lease: {e}"),
        }
    }

    fn lost(&self, why: String) -> LostLeadership {
        LostLeadership {
            namespace: self.config.namespace.clone(),
            lease: self.config.lease.clone(),
            why,
        }
    }

    /// One round: read the Lease and take it if the verdict says so. `Ok(true)`
    /// when this candidate holds it afterwards. Each call is bounded by the renew
    /// deadline, so a hung API server cannot stall a leader past it.
    async fn round(&mut self) -> Result<bool, kube::Error> {
        let deadline = self.config.renew_deadline;
        match tokio::time::timeout(deadline, self.try_take()).await {
            Ok(r) => r,
            Err(_) => Err(kube::Error::Service(
                format!("no answer from the API server within {deadline:?}").into(),
            )),
        }
    }

    async fn try_take(&mut self) -> Result<bool, kube::Error> {
        let me = self.config.identity.clone();
        let now = Timestamp::now();
        let Some(lease) = self.leases.get_opt(&self.config.lease).await? else {
            let fresh = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(claimed(None, &me, self.config.lease_duration, now)),
            };
            return match self.leases.create(&PostParams::default(), &fresh).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let version = lease.resource_version().unwrap_or_default();
        let unchanged_for = match &self.observed {
            Some((v, since)) if *v == version => since.elapsed(),
            _ => {
                self.observed = Some((version, Instant::now()));
                Duration::ZERO
            }
        };
        match verdict(lease.spec.as_ref(), &me, unchanged_for) {
            Verdict::Wait { holder } => {
                if self.last_holder.as_deref() != Some(&holder) {
                    info!(lease = %self.config.lease, %holder, "another replica leads; standing by");
                    self.last_holder = Some(holder);
                }
                Ok(false)
            }
            Verdict::Take => {
                let mut next = lease.clone();
                next.spec = Some(claimed(
                    lease.spec.as_ref(),
                    &me,
                    self.config.lease_duration,
                    now,
                ));
                match self
                    .leases
                    .replace(&self.config.lease, &PostParams::default(), &next)
                    .await
                {
                    Ok(written) => {
                        self.observed = Some((
                            written.resource_version().unwrap_or_default(),
                            Instant::now(),
                        ));
                        self.last_holder = Some(me);
                        Ok(true)
                    }
                    // Somebody else wrote it first: they won this round.
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Put the leader label on this pod (and take it off every other pod), or
    /// take it off this pod. Failures are logged: the Lease, not the label, decides
    /// who leads; a missing label only keeps runners away until the next renew.
    async fn set_label(&mut self, leading: bool) {
        let Some(pod) = self.config.pod.clone() else {
            self.labelled = leading;
            return;
        };
        let lease = self.config.lease.clone();
        if leading {
            let selector = format!("{LEADER_LABEL}={lease}");
            match self
                .pods
                .list(&ListParams::default().labels(&selector))
                .await
            {
                Ok(list) => {
                    for other in list.items.iter().filter(|p| p.name_any() != pod) {
                        info!(pod = %other.name_any(), "removing the leader label from a former leader");
                        self.patch_label(&other.name_any(), None).await;
                    }
                }
                Err(e) => warn!("list pods labelled {selector}: {e}"),
            }
            self.labelled = self.patch_label(&pod, Some(&lease)).await;
        } else {
            self.patch_label(&pod, None).await;
            self.labelled = false;
        }
    }

    async fn patch_label(&self, pod: &str, value: Option<&str>) -> bool {
        let patch = serde_json::json!({ "metadata": { "labels": { LEADER_LABEL: value } } });
        match self
            .pods
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 404 => true,
            Err(e) => {
                warn!(%pod, "label pod {LEADER_LABEL}={value:?}: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn held_by(holder: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(secs),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_missing_or_released_lease_is_taken_at_once() {
        assert_eq!(verdict(None, "a", Duration::ZERO), Verdict::Take);
        let released = LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(1),
            ..LeaseSpec::default()
        };
        assert_eq!(verdict(Some(&released), "a", Duration::ZERO), Verdict::Take);
        assert_eq!(
            verdict(Some(&LeaseSpec::default()), "a", Duration::ZERO),
            Verdict::Take
        );
    }

    #[test]
    fn the_holder_renews_its_own_lease() {
        assert_eq!(
            verdict(Some(&held_by("a", 15)), "a", Duration::ZERO),
            Verdict::Take
        );
    }

    #[test]
    fn another_holder_is_waited_out_for_a_whole_lease_duration() {
        let spec = held_by("b", 15);
        for seen in [0, 1, 14] {
            assert_eq!(
                verdict(Some(&spec), "a", Duration::from_secs(seen)),
                Verdict::Wait { holder: "b".into() },
                "unchanged for {seen}s"
            );
        }
        assert_eq!(
            verdict(Some(&spec), "a", Duration::from_secs(15)),
            Verdict::Take
        );
        // No duration recorded: the default 15 s.
        let spec = LeaseSpec {
            holder_identity: Some("b".into()),
            ..LeaseSpec::default()
        };
        assert!(matches!(
            verdict(Some(&spec), "a", Duration::from_secs(14)),
            Verdict::Wait { .. }
        ));
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(1_010).unwrap();
        let first = claimed(None, "a", Duration::from_secs(15), t0);
        assert_eq!(first.holder_identity.as_deref(), Some("a"));
        assert_eq!(first.lease_transitions, Some(0));
        assert_eq!(first.lease_duration_seconds, Some(15));
        let renewed = claimed(Some(&first), "a", Duration::from_secs(15), t1);
        assert_eq!(renewed.lease_transitions, Some(0));
        assert_eq!(renewed.acquire_time, Some(MicroTime(t0)));
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        let taken = claimed(Some(&renewed), "b", Duration::from_secs(15), t1);
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.acquire_time, Some(MicroTime(t1)));
    }

    #[test]
    fn a_released_lease_taken_over_is_a_transition() {
        let t = Timestamp::from_second(1_000).unwrap();
        let released = LeaseSpec {
            holder_identity: None,
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        };
        let taken = claimed(Some(&released), "b", Duration::from_secs(15), t);
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
    }

    #[test]
    fn timings_must_nest() {
        let mut c = LeaderConfig {
            lease: "l".into(),
            namespace: "n".into(),
            identity: "i".into(),
            pod: None,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        assert!(c.validate().is_ok());
        c.renew_deadline = Duration::from_secs(15);
        assert!(c.validate().is_err());
        c.renew_deadline = Duration::from_secs(10);
        c.retry_period = Duration::from_secs(10);
        assert!(c.validate().is_err());
        c.retry_period = Duration::ZERO;
        assert!(c.validate().is_err());
    }
}
