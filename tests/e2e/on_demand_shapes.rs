//! The pod shapes of an on-demand Job without Baton's protocol, for the
//! on-demand benchmark's floors (`on_demand_bench`): copies of the very pods a
//! Baton round made, created directly, so the node's cost of the shape is
//! measured apart from registering, claiming and reporting.
//!
//! - [`Shape::TwoPods`]: today's shape, the runner pod and the step pod;
//! - [`Shape::OnePod`]: one pod holding the runner container and the step's init
//!   and step containers, the shape "the step in the runner's own pod" would have;
//! - [`Shape::StepPod`]: the step pod alone (its init container, then the step):
//!   what a Job on a static runner starts, and batch/v1's one pod plus the init
//!   container.
//!
//! The runner container runs `baton --version` instead of `baton runner`: no
//! token, no server, and it ends at once. Each figure is therefore a floor for
//! its shape.

use anyhow::{Context, anyhow};
use baton::backend::kubernetes::LABEL_STEP;
use baton::controller::on_demand::JOB_LABEL;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{Api, ListParams, ObjectMeta};

use crate::support::TestNs;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    TwoPods,
    OnePod,
    StepPod,
}

impl Shape {
    /// Pods per Job.
    pub fn pods_per_job(self) -> usize {
        match self {
            Shape::TwoPods => 2,
            Shape::OnePod | Shape::StepPod => 1,
        }
    }
}

/// The runner pod's and the step pod's specs as a Baton round made them.
#[derive(Clone, Debug)]
pub struct Shapes {
    runner: PodSpec,
    step: PodSpec,
}

impl Shapes {
    /// Take one runner pod and one step pod of the namespace (left by a Baton
    /// round that has not been cleared yet).
    pub async fn capture(ns: &TestNs) -> anyhow::Result<Self> {
        let pods = Api::<Pod>::namespaced(ns.client.clone(), &ns.name);
        let first = |selector: &'static str| {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default().labels(selector)).await?;
                let pod = list.items.into_iter().next();
                pod.and_then(|p| p.spec)
                    .ok_or_else(|| anyhow!("no pod labelled {selector}"))
            }
        };
        let runner = first(JOB_LABEL).await.context("a runner pod")?;
        let step = first(LABEL_STEP).await.context("a step pod")?;
        Ok(Self {
            runner: resubmittable(runner_ending_at_once(runner)?),
            step: resubmittable(step),
        })
    }

    /// The pods of Job `i` of `round` in `shape`, labelled `bench-round=<round>`.
    pub fn pods(&self, shape: Shape, round: usize, i: usize) -> Vec<Pod> {
        match shape {
            Shape::TwoPods => vec![
                pod(
                    format!("r{round}-{i:03}-runner"),
                    round,
                    self.runner.clone(),
                ),
                pod(format!("r{round}-{i:03}-step"), round, self.step.clone()),
            ],
            Shape::OnePod => vec![pod(format!("r{round}-{i:03}"), round, self.one_pod())],
            Shape::StepPod => vec![pod(format!("r{round}-{i:03}"), round, self.step.clone())],
        }
    }

    /// The runner pod with the step pod's containers and volumes added.
    fn one_pod(&self) -> PodSpec {
        let mut spec = self.runner.clone();
        let step = self.step.clone();
        spec.init_containers = step.init_containers;
        spec.containers.extend(step.containers);
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        for v in step.volumes.unwrap_or_default() {
            if !volumes.iter().any(|have| have.name == v.name) {
                volumes.push(v);
            }
        }
        spec
    }
}

fn pod(name: String, round: usize, spec: PodSpec) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some([("bench-round".to_owned(), round.to_string())].into()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The runner container without its token (a Secret of the round's Job) and
/// running `baton --version`.
fn runner_ending_at_once(mut spec: PodSpec) -> anyhow::Result<PodSpec> {
    let runner: &mut Container = spec
        .containers
        .iter_mut()
        .find(|c| c.name == "runner")
        .ok_or_else(|| anyhow!("the runner pod has no container named runner"))?;
    runner.args = Some(vec!["--version".into()]);
    runner.env = None;
    runner.readiness_probe = None;
    Ok(spec)
}

/// A stored pod's spec as one that may be created again: unscheduled (the
/// scheduler places each copy), without the service-account token volume the
/// API server added (it adds its own).
fn resubmittable(mut spec: PodSpec) -> PodSpec {
    const TOKEN_VOLUME: &str = "kube-api-access-";
    spec.node_name = None;
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| !v.name.starts_with(TOKEN_VOLUME));
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        if let Some(mounts) = c.volume_mounts.as_mut() {
            mounts.retain(|m| !m.name.starts_with(TOKEN_VOLUME));
        }
    }
    spec
}
