//! The buttons' changes, made with the user's client: the same functions
//! `kubectl baton runner adopt|reject|forget` and `job cancel` call, plus
//! `spec.disabled` (which the plugin has no verb for yet).

use anyhow::Context;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use super::rows::RunnerAction;
use crate::cli::{job, plugin};
use crate::crd::{Job, Runner};

/// Field manager of the dashboard's own patches.
const MANAGER: &str = "baton-dashboard";

/// Do `action` to Runner `ns/name`; what happened, in words.
pub async fn runner(
    client: Client,
    ns: &str,
    name: &str,
    action: RunnerAction,
) -> anyhow::Result<String> {
    let api: Api<Runner> = Api::namespaced(client, ns);
    match action {
        RunnerAction::Adopt => plugin::patch_adoption(&api, name, "Adopted").await?,
        RunnerAction::Reject => plugin::patch_adoption(&api, name, "Rejected").await?,
        RunnerAction::Forget => plugin::forget(&api, name).await?,
        RunnerAction::Disable => set_disabled(&api, name, true).await?,
        RunnerAction::Enable => set_disabled(&api, name, false).await?,
    }
    Ok(format!("runner {name}: {}", done(action)))
}

fn done(action: RunnerAction) -> &'static str {
    match action {
        RunnerAction::Adopt => "adopted",
        RunnerAction::Reject => "rejected",
        RunnerAction::Forget => "forgotten",
        RunnerAction::Disable => "disabled",
        RunnerAction::Enable => "enabled",
    }
}

/// Patch `spec.disabled` (false removes the field: the default).
async fn set_disabled(api: &Api<Runner>, name: &str, disabled: bool) -> anyhow::Result<()> {
    let value = if disabled {
        serde_json::json!(true)
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({ "spec": { "disabled": value } });
    let pp = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    api.patch(name, &pp, &Patch::Merge(&patch))
        .await
        .with_context(|| format!("set spec.disabled of Runner {name} to {disabled}"))?;
    Ok(())
}

/// Cancel Job `ns/name` (`spec.cancel: true`).
pub async fn cancel(client: Client, ns: &str, name: &str) -> anyhow::Result<String> {
    job::cancel(&Api::<Job>::namespaced(client, ns), name).await?;
    Ok(format!("job {name}: cancel requested"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_says_what_it_did() {
        let all = ["adopt", "reject", "disable", "enable", "forget"];
        let said: Vec<&str> = all
            .iter()
            .filter_map(|a| RunnerAction::parse(a))
            .map(done)
            .collect();
        assert_eq!(
            said,
            ["adopted", "rejected", "disabled", "enabled", "forgotten"]
        );
    }
}
