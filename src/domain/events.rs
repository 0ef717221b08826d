//! Kubernetes Events, one per transition: on Jobs (queued with a new reason,
//! assigned, started, ended), Runners (adoption) and RunnerTokens (minted,
//! expired). Publishing is best effort: a failure is logged, never fails the
//! request or the reconcile that caused it.

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tracing::warn;

use crate::crd::Job;

/// Publish an Event on `job`.
pub async fn publish(client: &Client, job: &Job, warning: bool, reason: &str, note: String) {
    publish_on(client, job, warning, reason, note).await;
}

/// Publish an Event on `obj` (a Job, Runner or RunnerToken).
pub async fn publish_on<K>(client: &Client, obj: &K, warning: bool, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let reporter = Reporter {
        controller: "baton-controller".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
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
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        warn!(kind = %K::kind(&()), name = ?obj.meta().name, reason, "publish an event: {e}");
    }
}
