//! Pinning a Job's pods to one node (with a workspace): the first pod is waited
//! for until it is scheduled, so every later one follows it.

use std::future::Future;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use super::{KubernetesBackend, kube_err, pod, state, watch};
use crate::backend::BackendError;

impl KubernetesBackend {
    /// With a workspace: pin to the node of the Job's pods; the first pod is
    /// waited for until it is scheduled, so every later one follows it.
    pub(super) async fn create_pinned(
        &self,
        attempt: &pod::Attempt<'_>,
    ) -> Result<Pod, BackendError> {
        let step = attempt.step.name.as_str();
        self.pinned(step, |node| async move {
            self.create(attempt, node.as_deref()).await
        })
        .await
    }

    /// Create a pod of the Job with `create(node)`, pinned as
    /// [`Self::create_pinned`] says.
    pub(super) async fn pinned<F, Fut>(&self, step: &str, create: F) -> Result<Pod, BackendError>
    where
        F: FnOnce(Option<String>) -> Fut,
        Fut: Future<Output = Result<Pod, BackendError>>,
    {
        let mut node = self.node.lock().await;
        if node.is_none() {
            *node = self.scheduled_node(step).await?;
        }
        let created = create(node.clone()).await?;
        if node.is_none() {
            let name = created.metadata.name.clone().unwrap_or_default();
            *node = match state::node_of(&created) {
                Some(n) => Some(n.to_owned()),
                None => watch::scheduled_node(&self.pods, &name, self.options.schedule_wait).await,
            };
            tracing::info!(node = ?*node, "the Job's step pods run on this node");
        }
        Ok(created)
    }

    async fn scheduled_node(&self, step: &str) -> Result<Option<String>, BackendError> {
        let list = self
            .pods
            .list(&ListParams::default().labels(&pod::job_selector(&self.target.job_uid)))
            .await
            .map_err(kube_err(step, "list the Job's pods"))?;
        Ok(list
            .items
            .iter()
            .find_map(|p| state::node_of(p).map(str::to_owned)))
    }
}
