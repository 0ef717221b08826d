//! The Secret values a step pod gets, read through the API so its log and
//! outputs can be masked of them ([`crate::backend::mask`]): the kubelet resolves
//! a `secretKeyRef` for the container, so the runner would otherwise never know
//! the value. The runner needs `get` on Secrets of the Job's namespace for this
//! (it can read them by creating a pod anyway).
//!
//! Fail closed: a step whose Secrets the runner cannot read is not started
//! ([`check_readable`]), and a log whose Secrets cannot be read once its
//! container started is not passed on ([`of_attempt`]). Only an `optional` ref to
//! a Secret or key that does not exist is skipped — the container has no value.

use k8s_openapi::api::core::v1::{EnvVar, Secret, SecretKeySelector};
use kube::api::Api;

use super::{AttemptState, is_status, kube_err};
use crate::backend::BackendError;
use crate::backend::mask::Patterns;

/// The `secretKeyRef`s among `env`.
pub fn refs(env: &[EnvVar]) -> impl Iterator<Item = &SecretKeySelector> {
    env.iter()
        .filter_map(|v| v.value_from.as_ref()?.secret_key_ref.as_ref())
}

/// The value `selector` names: `None` if its Secret or key does not exist.
async fn read(
    secrets: &Api<Secret>,
    selector: &SecretKeySelector,
) -> Result<Option<Vec<u8>>, kube::Error> {
    match secrets.get(&selector.name).await {
        Ok(secret) => Ok(secret
            .data
            .and_then(|mut data| data.remove(&selector.key))
            .map(|value| value.0)),
        Err(e) if is_status(&e, kube::core::Status::is_not_found) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Before a step pod is created: every Secret it refers to can be read, or the
/// step cannot start (its log could not be masked). A missing one is left to
/// the kubelet, which reports it (`SecretNotFound`) and does not start the
/// container; if it appears later, [`of_attempt`] reads it once it started.
pub async fn check_readable(
    secrets: &Api<Secret>,
    step: &str,
    env: &[EnvVar],
) -> Result<(), BackendError> {
    for selector in refs(env) {
        if let Err(e) = read(secrets, selector).await {
            return Err(BackendError::CannotStart {
                step: step.to_owned(),
                reason: "SecretNotReadable",
                message: format!(
                    "cannot read Secret {:?} to mask its values in the step's log (the runner needs get on secrets): {e}",
                    selector.name
                ),
            });
        }
    }
    Ok(())
}

/// What the attempt's log and outputs are masked of: the values of its pod's
/// `secretKeyRef`s, read once (after its container started, so they are the
/// values it got, barring a Secret changed in between).
pub async fn of_attempt(
    secrets: &Api<Secret>,
    attempt: &AttemptState,
) -> Result<Patterns, BackendError> {
    let read = || async {
        values(secrets, &attempt.step, &attempt.env)
            .await
            .map(Patterns::new)
    };
    attempt.secrets.get_or_try_init(read).await.cloned()
}

/// The values of the `secretKeyRef`s among `env`; a missing one is an error
/// unless optional.
async fn values(
    secrets: &Api<Secret>,
    step: &str,
    env: &[EnvVar],
) -> Result<Vec<Vec<u8>>, BackendError> {
    let mut out = Vec::new();
    for selector in refs(env) {
        let value = read(secrets, selector)
            .await
            .map_err(kube_err(step, "read a Secret to mask it in the step's log"))?;
        match value {
            Some(value) => out.push(value),
            None if selector.optional == Some(true) => {}
            None => {
                return Err(BackendError::Failed {
                    step: step.to_owned(),
                    doing: "read a Secret to mask it in the step's log",
                    message: format!(
                        "Secret {:?} key {:?} is gone; the log is withheld rather than shown unmasked",
                        selector.name, selector.key
                    ),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVarSource;

    #[test]
    fn finds_only_secret_refs() {
        let plain = EnvVar {
            name: "A".into(),
            value: Some("x".into()),
            ..Default::default()
        };
        let secret = EnvVar {
            name: "B".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "s".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let env = [plain, secret];
        let found: Vec<_> = refs(&env).map(|s| s.name.as_str()).collect();
        assert_eq!(found, ["s"]);
    }
}
