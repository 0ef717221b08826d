//! What the `restricted` Pod Security Standard asks of a pod Baton creates (step
//! pods, on-demand runner pods): one definition, so the two cannot drift apart.

use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, SecurityContext};

/// The container runtime's default seccomp profile.
pub fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// Every container: non-root, no privilege escalation, all capabilities
/// dropped, the runtime's default seccomp profile.
pub fn container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        run_as_non_root: Some(true),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}
