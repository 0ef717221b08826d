//! How a step's pod is shaped beyond its container: placement, metadata and
//! volumes. Set on the Job for every step pod and per step (the step wins).
//!
//! Only what the `restricted` Pod Security Standard allows can be said here:
//! the volume kinds are emptyDir, configMap and secret (no hostPath can even be
//! written), and annotations that switch off AppArmor or seccomp are refused.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, HostAlias, PodDNSConfig, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation and label key prefixes a template may not set: Baton's own (they
/// identify a step pod's Job and attempt), and the ones that loosen a pod's
/// confinement below the `restricted` profile.
pub const RESERVED_KEY_RULE: &str = "self.all(k, !k.startsWith('baton.dev/') && \
!k.startsWith('container.apparmor.security.beta.kubernetes.io/') && \
!k.startsWith('seccomp.security.alpha.kubernetes.io/'))";

/// Pod settings of step pods (`spec.podTemplate`, `steps[].podTemplate`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels added to the step pods (keys in `baton.dev/` are Baton's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new(RESERVED_KEY_RULE)
        .message("labels may not use the baton.dev/ prefix (Baton's own) or the AppArmor and seccomp annotations' prefixes"))]
    pub labels: Option<BTreeMap<String, String>>,

    /// Annotations added to the step pods. AppArmor and seccomp annotations are
    /// refused (the `restricted` profile), as are keys in `baton.dev/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new(RESERVED_KEY_RULE)
        .message("annotations may not use the baton.dev/ prefix (Baton's own), nor set AppArmor or seccomp profiles (the restricted Pod Security profile forbids loosening them)"))]
    pub annotations: Option<BTreeMap<String, String>>,

    /// Node labels a step pod's node must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Taints the step pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub tolerations: Option<Vec<Toleration>>,

    /// Node and pod (anti-)affinity. With a workspace, Baton adds the pin to the
    /// Job's node to every required node term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// PriorityClass of the step pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// RuntimeClass of the step pods (e.g. gVisor, Kata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub runtime_class_name: Option<String>,

    /// Extra `/etc/hosts` entries (Woodpecker's `extra_hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub host_aliases: Option<Vec<HostAlias>>,

    /// DNS settings merged with the cluster's (nameservers, searches, options).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDNSConfig>,
}

impl PodTemplate {
    /// `over` laid over `self`: its labels and annotations merged key by key,
    /// every other field replaced when set.
    pub fn merged(&self, over: &PodTemplate) -> PodTemplate {
        let maps = |base: &Option<BTreeMap<String, String>>,
                    top: &Option<BTreeMap<String, String>>| {
            match (base, top) {
                (Some(b), Some(t)) => Some(
                    b.iter()
                        .chain(t)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                (b, t) => t.clone().or_else(|| b.clone()),
            }
        };
        PodTemplate {
            labels: maps(&self.labels, &over.labels),
            annotations: maps(&self.annotations, &over.annotations),
            node_selector: over
                .node_selector
                .clone()
                .or_else(|| self.node_selector.clone()),
            tolerations: over
                .tolerations
                .clone()
                .or_else(|| self.tolerations.clone()),
            affinity: over.affinity.clone().or_else(|| self.affinity.clone()),
            priority_class_name: over
                .priority_class_name
                .clone()
                .or_else(|| self.priority_class_name.clone()),
            runtime_class_name: over
                .runtime_class_name
                .clone()
                .or_else(|| self.runtime_class_name.clone()),
            host_aliases: over
                .host_aliases
                .clone()
                .or_else(|| self.host_aliases.clone()),
            dns_config: over.dns_config.clone().or_else(|| self.dns_config.clone()),
        }
    }
}

/// A volume mounted into one step's container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("[has(self.emptyDir), has(self.configMap), has(self.secret)].filter(x, x).size() == 1")
        .message("a volume is exactly one of emptyDir, configMap or secret"),
    validation = Rule::new("self.name != 'baton' && self.name != 'workspace'")
        .message("the volume names baton and workspace are Baton's own"),
    validation = Rule::new("self.mountPath != '/baton' && !self.mountPath.startsWith('/baton/') && self.mountPath != '/workspace' && !self.mountPath.startsWith('/workspace/')")
        .message("mountPath may not be /baton or /workspace or below them: Baton mounts those"),
)]
#[serde(rename_all = "camelCase")]
pub struct StepVolume {
    /// Unique within the step; a DNS label.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Where the volume appears in the step's container: an absolute path
    /// without `..`, not `/`.
    #[schemars(length(min = 2, max = 256))]
    #[x_kube(validation = Rule::new("self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)') && !self.endsWith('/')")
        .message("mountPath must be an absolute path without '..' and without a trailing '/'"))]
    pub mount_path: String,

    /// Scratch space that lives as long as the step's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolume>,

    /// A ConfigMap's keys as files, read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ObjectVolume>,

    /// A Secret's keys as files, read-only. Its author must be allowed to read it
    /// (the chart's admission policy checks, as for `secretKeyRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectVolume>,
}

/// Most volumes of one step: keeps the per-step uniqueness rules inside the API
/// server's CEL cost budget at 200 steps.
pub const MAX_VOLUMES: usize = 8;

/// `steps[].volumes`: a list map keyed by name (the API server refuses a name
/// given twice, and server-side apply merges by name).
pub fn volumes_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": MAX_VOLUMES,
        "items": generator.subschema_for::<StepVolume>(),
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
    })
}

/// An `emptyDir` volume.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirVolume {
    /// `Memory` for a tmpfs (its size counts against the container's memory);
    /// unset: the node's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<EmptyDirMedium>,
    /// Most the volume may hold (e.g. `64Mi`); the pod is evicted beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

/// Where an `emptyDir` keeps its files.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyDirMedium {
    /// A tmpfs.
    Memory,
}

/// A ConfigMap or Secret of the Job's namespace, mounted read-only.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectVolume {
    /// The object's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Start the step even when the object does not exist (an empty directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steps_template_wins_and_merges_metadata() {
        let job = PodTemplate {
            labels: Some(BTreeMap::from([
                ("team".into(), "a".into()),
                ("tier".into(), "ci".into()),
            ])),
            node_selector: Some(BTreeMap::from([("disk".into(), "ssd".into())])),
            priority_class_name: Some("low".into()),
            ..Default::default()
        };
        let step = PodTemplate {
            labels: Some(BTreeMap::from([("tier".into(), "db".into())])),
            priority_class_name: Some("high".into()),
            ..Default::default()
        };
        let merged = job.merged(&step);
        assert_eq!(
            merged.labels,
            Some(BTreeMap::from([
                ("team".into(), "a".into()),
                ("tier".into(), "db".into())
            ]))
        );
        assert_eq!(merged.node_selector, job.node_selector, "kept from the Job");
        assert_eq!(merged.priority_class_name.as_deref(), Some("high"));
        assert_eq!(PodTemplate::default().merged(&step), step);
        assert_eq!(job.merged(&PodTemplate::default()), job);
    }
}
