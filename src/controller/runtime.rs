//! What every reconciler runs under, in one place: each reconcile counted and
//! timed, errors retried with per-object exponential backoff (keyed by the
//! object's reference) and logged with their whole cause chain, and the backoff
//! forgotten on success.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::Resource;
use kube::api::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{Context, Error};
use crate::server::metrics::Kind;

/// The key of an object's backoff: its reference, kind included.
pub type ObjectKey = ObjectRef<DynamicObject>;

/// Run `controller` with `reconcile` until it stops.
pub fn drive<K, F, Fut>(
    controller: Controller<K>,
    kind: Kind,
    reconcile: F,
    ctx: Arc<Context>,
) -> impl Future<Output = ()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let done = ctx.clone();
    controller
        .run(
            move |obj, ctx: Arc<Context>| measured(kind, ctx.clone(), reconcile(obj, ctx)),
            error_policy::<K>,
            ctx,
        )
        .for_each(move |res| {
            if let Ok((obj, _)) = res {
                done.backoff.succeeded(&obj.erase());
            }
            futures::future::ready(())
        })
}

/// A reconcile of `kind`, counted and timed.
async fn measured(
    kind: Kind,
    ctx: Arc<Context>,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let res = reconcile.await;
    ctx.metrics.reconciled(kind, res.is_ok(), started.elapsed());
    res
}

fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = ObjectRef::from_obj(&*obj).erase();
    let delay = ctx.backoff.failed(&key);
    warn!(object = %key, category = err.category(), retry_in = ?delay, "reconcile failed: {}", chain(err));
    Action::requeue(delay)
}

/// An error and its causes, `: `-separated: what each layer was doing, once.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("read the Job")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_names_each_cause_once() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(chain(&e), "read the Job: connection refused");
    }
}
