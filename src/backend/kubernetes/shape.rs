//! The user's share of a step pod: the merged `podTemplate` (placement,
//! metadata, hosts, DNS) and the step's `volumes`, as pure functions. Baton's own
//! settings (security, its labels, the node pin) are laid over them, never under.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, EmptyDirVolumeSource, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, PodSpec, SecretVolumeSource, Volume, VolumeMount,
};

use crate::crd::job::{PodTemplate, Step, StepVolume};
use crate::crd::pod_template::EmptyDirMedium;

/// The Job's template with the step's over it.
pub fn template(job: Option<&PodTemplate>, step: Option<&PodTemplate>) -> PodTemplate {
    let empty = PodTemplate::default();
    job.unwrap_or(&empty).merged(step.unwrap_or(&empty))
}

/// `ours` over the template's `theirs`: Baton's labels and annotations win.
pub fn metadata(
    theirs: Option<&BTreeMap<String, String>>,
    ours: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut all = theirs.cloned().unwrap_or_default();
    all.extend(ours);
    all
}

/// Placement, hosts and DNS from the template; `node` pins the pod to the Job's
/// node (a workspace), added to every required node term the user gave.
pub fn place(spec: &mut PodSpec, template: &PodTemplate, node: Option<&str>) {
    spec.node_selector = template.node_selector.clone();
    spec.tolerations = template.tolerations.clone();
    spec.priority_class_name = template.priority_class_name.clone();
    spec.runtime_class_name = template.runtime_class_name.clone();
    spec.host_aliases = template.host_aliases.clone();
    spec.dns_config = template.dns_config.clone();
    spec.affinity = affinity(template.affinity.clone(), node);
}

/// Required node affinity on the node's name (as DaemonSets pin their pods):
/// independent of how the node's `kubernetes.io/hostname` label is spelled.
/// Node terms are ORed, so the pin joins each of the user's terms.
fn affinity(user: Option<Affinity>, node: Option<&str>) -> Option<Affinity> {
    let Some(node) = node else {
        return user;
    };
    let pin = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.to_owned()]),
    };
    let mut affinity = user.unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    match &mut node_affinity.required_during_scheduling_ignored_during_execution {
        Some(required) if !required.node_selector_terms.is_empty() => {
            for term in &mut required.node_selector_terms {
                term.match_fields
                    .get_or_insert_with(Vec::new)
                    .push(pin.clone());
            }
        }
        required => {
            *required = Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: Some(vec![pin]),
                    match_expressions: None,
                }],
            });
        }
    }
    Some(affinity)
}

/// The step's volumes and their mounts (configMap and secret read-only).
pub fn volumes(step: &Step) -> (Vec<Volume>, Vec<VolumeMount>) {
    step.volumes
        .iter()
        .flatten()
        .map(|v| (volume(v), mount(v)))
        .unzip()
}

fn volume(v: &StepVolume) -> Volume {
    Volume {
        name: v.name.clone(),
        empty_dir: v.empty_dir.as_ref().map(|e| EmptyDirVolumeSource {
            medium: e.medium.map(|EmptyDirMedium::Memory| "Memory".to_owned()),
            size_limit: e.size_limit.clone(),
        }),
        config_map: v.config_map.as_ref().map(|c| ConfigMapVolumeSource {
            name: c.name.clone(),
            optional: c.optional,
            ..Default::default()
        }),
        secret: v.secret.as_ref().map(|s| SecretVolumeSource {
            secret_name: Some(s.name.clone()),
            optional: s.optional,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(v: &StepVolume) -> VolumeMount {
    VolumeMount {
        name: v.name.clone(),
        mount_path: v.mount_path.clone(),
        read_only: (v.empty_dir.is_none()).then_some(true),
        ..Default::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crd::pod_template::{EmptyDirVolume, ObjectVolume};
    use k8s_openapi::api::core::v1::{HostAlias, Toleration};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn user_affinity() -> Affinity {
        serde_json::from_value(serde_json::json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
                {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}
            ]}},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}
        }))
        .unwrap()
    }

    #[test]
    fn the_node_pin_joins_every_required_term_of_the_user() {
        let pinned = affinity(Some(user_affinity()), Some("n1")).unwrap();
        let terms = &pinned
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 2, "the user's two alternatives stay two");
        for term in terms {
            let fields = term.match_fields.as_ref().unwrap();
            assert_eq!(fields[0].key, "metadata.name");
            assert_eq!(fields[0].values.as_deref(), Some(&["n1".to_owned()][..]));
            assert!(
                term.match_expressions.is_some(),
                "the user's own requirement stays"
            );
        }
        assert!(pinned.pod_anti_affinity.is_some());
        // No user affinity: the pin alone; no node: the user's unchanged.
        let alone = affinity(None, Some("n1")).unwrap();
        let terms = alone
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert_eq!(affinity(Some(user_affinity()), None), Some(user_affinity()));
        assert_eq!(affinity(None, None), None);
    }

    #[test]
    fn the_template_places_the_pod() {
        let template = PodTemplate {
            node_selector: Some(BTreeMap::from([("disk".into(), "ssd".into())])),
            tolerations: Some(vec![Toleration {
                key: Some("ci".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            priority_class_name: Some("ci-low".into()),
            runtime_class_name: Some("gvisor".into()),
            host_aliases: Some(vec![HostAlias {
                ip: "10.0.0.9".into(),
                hostnames: Some(vec!["db.test".into()]),
            }]),
            ..Default::default()
        };
        let mut spec = PodSpec::default();
        place(&mut spec, &template, None);
        assert_eq!(spec.node_selector, template.node_selector);
        assert_eq!(spec.tolerations, template.tolerations);
        assert_eq!(spec.priority_class_name.as_deref(), Some("ci-low"));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(spec.host_aliases, template.host_aliases);
        assert!(spec.affinity.is_none());
    }

    #[test]
    fn batons_metadata_wins_over_the_users() {
        let theirs = BTreeMap::from([
            ("team".into(), "a".into()),
            ("app.kubernetes.io/managed-by".into(), "me".into()),
        ]);
        let ours = BTreeMap::from([("app.kubernetes.io/managed-by".into(), "baton".into())]);
        let all = metadata(Some(&theirs), ours);
        assert_eq!(all["app.kubernetes.io/managed-by"], "baton");
        assert_eq!(all["team"], "a");
    }

    #[test]
    fn volumes_become_pod_volumes_and_read_only_mounts() {
        let step = Step {
            volumes: Some(vec![
                StepVolume {
                    name: "scratch".into(),
                    mount_path: "/scratch".into(),
                    empty_dir: Some(EmptyDirVolume {
                        medium: Some(EmptyDirMedium::Memory),
                        size_limit: Some(Quantity("64Mi".into())),
                    }),
                    ..Default::default()
                },
                StepVolume {
                    name: "conf".into(),
                    mount_path: "/etc/app".into(),
                    config_map: Some(ObjectVolume {
                        name: "app".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
                StepVolume {
                    name: "creds".into(),
                    mount_path: "/creds".into(),
                    secret: Some(ObjectVolume {
                        name: "db".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let (volumes, mounts) = volumes(&step);
        let tmpfs = volumes[0].empty_dir.as_ref().unwrap();
        assert_eq!(tmpfs.medium.as_deref(), Some("Memory"));
        assert_eq!(tmpfs.size_limit, Some(Quantity("64Mi".into())));
        assert_eq!(volumes[1].config_map.as_ref().unwrap().name, "app");
        let secret = volumes[2].secret.as_ref().unwrap();
        assert_eq!(
            (secret.secret_name.as_deref(), secret.optional),
            (Some("db"), Some(true))
        );
        assert_eq!(mounts[0].read_only, None, "scratch space is writable");
        assert_eq!(
            (mounts[1].read_only, mounts[2].read_only),
            (Some(true), Some(true))
        );
        assert_eq!(mounts[1].mount_path, "/etc/app");
        for v in &volumes {
            assert!(v.host_path.is_none() && v.persistent_volume_claim.is_none());
        }
    }
}
