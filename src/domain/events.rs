//! Kubernetes Events, one per transition: on Jobs (queued with a new reason,
//! assigned, started, ended), Runners (adoption, decommission) and RunnerTokens
//! (minted, expired). One [`Events`] per process, shared by every reconciler and
//! the runner API, so kube-runtime's Recorder can fold repeats into a series.
//! Publishing is best effort: a failure is logged, never fails the request or
//! the reconcile that caused it.

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tracing::warn;

/// The process's Event recorder (cheap to clone: clones share its series cache).
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// Events reported by `baton-controller` (instance: `$POD_NAME`, when set).
    pub fn new(client: Client) -> Self {
        let reporter = Reporter {
            controller: "baton-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publish an Event on `obj` (a Job, Runner or RunnerToken).
    pub async fn publish<K>(&self, obj: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(kind = %K::kind(&()), name = ?obj.meta().name, reason, "publish an event: {e}");
        }
    }
}
