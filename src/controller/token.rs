//! RunnerToken reconciler: mint a token into a Secret the RunnerToken owns, publish
//! only its hash, and flip `Ready`/`Expired` on time (requeue at the expiry).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::{Context, Error};
use crate::crd::conditions::{self, Desired, Health};
use crate::crd::runner_token::{DEFAULT_TTL, SECRET_KEY};
use crate::crd::{RunnerToken, RunnerTokenStatus, duration};
use crate::domain::token;
use crate::server::FIELD_MANAGER;

/// Label on the Secrets the controller writes (value: the RunnerToken's name).
pub const SECRET_LABEL: &str = "baton.dev/runner-token";

/// Name of the Secret holding a RunnerToken's token.
pub fn secret_name(token_name: &str) -> String {
    const SUFFIX: &str = "-token";
    if token_name.len() + SUFFIX.len() <= 253 {
        return format!("{token_name}{SUFFIX}");
    }
    // Too long: keep a prefix and a hash of the full name, so names stay distinct.
    let digest = &token::hash(token_name)[..10];
    let cut: String = token_name.chars().take(253 - SUFFIX.len() - 11).collect();
    format!("{}-{digest}{SUFFIX}", cut.trim_end_matches(['-', '.']))
}

/// The token a Secret holds, if it is ours (owned by this RunnerToken) and well formed.
pub fn token_in(secret: &Secret, owner_uid: &str) -> Result<Option<String>, String> {
    let owned = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == owner_uid);
    if !owned {
        return Err(format!(
            "Secret {} exists and is not owned by this RunnerToken",
            secret.name_any()
        ));
    }
    Ok(secret
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|t| t.starts_with(token::TOKEN_PREFIX)))
}

/// The Secret to apply for a freshly minted token.
pub fn desired_secret(rt: &RunnerToken, name: &str, plaintext: &str) -> Option<Secret> {
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: rt.namespace(),
            labels: Some(BTreeMap::from([(SECRET_LABEL.to_owned(), rt.name_any())])),
            owner_references: Some(vec![rt.controller_owner_ref(&())?]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            SECRET_KEY.to_owned(),
            ByteString(plaintext.as_bytes().to_vec()),
        )])),
        ..Default::default()
    })
}

/// What the reconciler observed, for the pure status function.
pub struct Observed<'a> {
    pub secret_name: &'a str,
    /// Hash of the token in the Secret; `Err` says why there is none.
    pub token_hash: Result<String, String>,
    pub now: Timestamp,
}

/// Status and when to look again: pure.
pub fn desired_status(rt: &RunnerToken, obs: &Observed) -> (RunnerTokenStatus, Option<Duration>) {
    let previous = rt.status.clone().unwrap_or_default();
    let ttl_text = rt.spec.ttl.as_deref().unwrap_or(DEFAULT_TTL);
    let ttl = duration::parse(ttl_text);
    let created = rt.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let expires = match (&ttl, created) {
        (Ok(ttl), Some(created)) => token::expires_at(created, *ttl),
        _ => None,
    };
    let expired = token::is_expired(expires, obs.now);
    // Every way short of a minted, valid token needs a new spec (or the Secret
    // out of the way): Stalled. A token is minted in the reconcile that writes the
    // first status, so there is no status saying "not minted yet" to show.
    let (health, requeue) = match (&ttl, &obs.token_hash) {
        (Err(e), _) => (Health::stalled("InvalidSpec", e.to_string()), None),
        (_, Err(why)) => (Health::stalled("SecretConflict", why.clone()), None),
        _ if expired => (
            Health::stalled(
                "Expired",
                format!("the token expired after {ttl_text}: create a new RunnerToken"),
            ),
            None,
        ),
        _ => {
            let left = expires
                .map(|at| at.duration_since(obs.now))
                .and_then(|d| Duration::try_from(d).ok());
            (
                Health::current(
                    "Minted",
                    format!("token in Secret {} (key {SECRET_KEY})", obs.secret_name),
                ),
                // Wake up just past the expiry to flip Expired with no other event.
                left.map(|d| d + Duration::from_millis(200)),
            )
        }
    };
    let mut desired = health.desired();
    desired.push(if expired && ttl.is_ok() {
        Desired::new(
            "Expired",
            true,
            "TTLElapsed",
            format!("expired after {ttl_text}"),
        )
    } else {
        Desired::new(
            "Expired",
            false,
            "Valid",
            format!("valid for {ttl_text} from creation"),
        )
    });
    let generation = rt.metadata.generation;
    let status = RunnerTokenStatus {
        secret_name: Some(obs.secret_name.to_owned()),
        token_hash: obs.token_hash.as_ref().ok().cloned(),
        expires_at: expires.map(Time),
        conditions: conditions::merge(&previous.conditions, &desired, generation, obs.now),
        observed_generation: generation,
    };
    (status, requeue)
}

/// Mint a token into the RunnerToken's Secret; its hash for the status.
async fn mint(
    ctx: &Context,
    rt: &RunnerToken,
    secrets: &Api<Secret>,
    sname: &str,
) -> Result<String, Error> {
    let plain = token::mint()?;
    let secret = desired_secret(rt, sname, &plain).ok_or(Error::NoNamespace)?;
    secrets
        .patch(
            sname,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|source| Error::Kube {
            doing: "apply the token Secret",
            name: sname.to_owned(),
            source,
        })?;
    info!(secret = %sname, "minted a runner token");
    ctx.events.publish(
        rt,
        false,
        "Minted",
        format!("minted a token into Secret {sname} (key {SECRET_KEY})"),
    );
    Ok(token::hash(&plain))
}

#[instrument(skip_all, fields(kind = "RunnerToken", namespace = rt.namespace().unwrap_or_default(), name = rt.name_any()))]
pub async fn reconcile(rt: Arc<RunnerToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = rt.namespace().ok_or(Error::NoNamespace)?;
    let name = rt.name_any();
    if rt.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = rt.uid().unwrap_or_default();
    let sname = secret_name(&name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);

    // Read.
    let existing = secrets
        .get_opt(&sname)
        .await
        .map_err(|source| Error::Kube {
            doing: "read the token Secret",
            name: sname.clone(),
            source,
        })?;
    let in_secret = match &existing {
        Some(s) => token_in(s, &uid),
        None => Ok(None),
    };
    // Apply: mint when the Secret is missing or holds no token.
    let token_hash = match in_secret {
        Ok(Some(plain)) => Ok(token::hash(&plain)),
        Ok(None) => Ok(mint(&ctx, &rt, &secrets, &sname).await?),
        Err(why) => Err(why),
    };

    // Pure middle.
    let (status, requeue) = desired_status(
        &rt,
        &Observed {
            secret_name: &sname,
            token_hash,
            now: Timestamp::now(),
        },
    );
    let expired = conditions::is_true(&status.conditions, "Expired");
    if expired {
        ctx.hub.close_token(&ns, &name, "the token has expired");
    }

    // Status, only when it changed.
    if rt.status.as_ref() != Some(&status) {
        super::apply_status::<RunnerToken>(&ctx, &ns, &name, &status, "write RunnerToken status")
            .await?;
        // A new reason to be unusable (expired, Secret conflict, invalid spec).
        let ready = |s: &RunnerTokenStatus| {
            conditions::find(&s.conditions, conditions::READY)
                .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
        };
        let was = rt.status.as_ref().and_then(ready).map(|(_, r, _)| r);
        if let Some((false, reason, message)) = ready(&status)
            && was.as_deref() != Some(reason.as_str())
        {
            info!(reason, "runner token unusable: {message}");
            ctx.events.publish(&*rt, true, &reason, message);
        }
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crd::RunnerTokenSpec;

    fn rt(ttl: Option<&str>, created: i64) -> RunnerToken {
        let mut rt = RunnerToken::new(
            "t1",
            RunnerTokenSpec {
                ttl: ttl.map(str::to_owned),
                ..Default::default()
            },
        );
        rt.metadata.namespace = Some("ns".into());
        rt.metadata.uid = Some("uid-1".into());
        rt.metadata.generation = Some(1);
        rt.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        rt
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn obs(now: i64) -> Observed<'static> {
        Observed {
            secret_name: "t1-token",
            token_hash: Ok("abc".into()),
            now: at(now),
        }
    }

    #[test]
    fn ready_until_expiry_then_expired_without_another_event() {
        let t = rt(Some("3s"), 1000);
        let (s, requeue) = desired_status(&t, &obs(1001));
        assert!(conditions::is_true(&s.conditions, "Ready"));
        assert!(!conditions::is_true(&s.conditions, "Expired"));
        assert_eq!(s.expires_at, Some(Time(at(1003))));
        assert_eq!(s.token_hash.as_deref(), Some("abc"));
        let ks = |s: &RunnerTokenStatus| {
            conditions::kstatus(&s.conditions, Some(1), s.observed_generation)
        };
        assert_eq!(ks(&s), "Current");
        // Requeued just past the expiry.
        let r = requeue.unwrap();
        assert!(
            r > Duration::from_secs(2) && r < Duration::from_secs(3),
            "{r:?}"
        );

        let mut later = t.clone();
        later.status = Some(s.clone());
        let (s2, requeue) = desired_status(&later, &obs(1003));
        assert!(!conditions::is_true(&s2.conditions, "Ready"));
        assert!(conditions::is_true(&s2.conditions, "Expired"));
        assert_eq!(requeue, None);
        assert_eq!(
            ks(&s2),
            "Failed",
            "Stalled=Expired: a new RunnerToken is needed"
        );
    }

    #[test]
    fn default_ttl_is_thirty_days_and_status_is_stable() {
        let mut t = rt(None, 0);
        let (s, _) = desired_status(&t, &obs(10));
        assert_eq!(s.expires_at, Some(Time(at(30 * 24 * 3600))));
        t.status = Some(s.clone());
        let (again, _) = desired_status(&t, &obs(500));
        assert_eq!(again, s, "same inputs later: identical status, no write");
    }

    #[test]
    fn a_foreign_secret_is_not_overwritten() {
        let t = rt(None, 0);
        let o = Observed {
            secret_name: "t1-token",
            token_hash: Err("Secret t1-token exists and is not owned by this RunnerToken".into()),
            now: at(1),
        };
        let (s, _) = desired_status(&t, &o);
        let ready = conditions::find(&s.conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SecretConflict")
        );
        assert_eq!(s.token_hash, None);
        assert!(conditions::is_true(&s.conditions, "Stalled"));
        assert_eq!(
            conditions::kstatus(&s.conditions, Some(1), s.observed_generation),
            "Failed"
        );
    }

    #[test]
    fn secrets_are_owned_and_checked() {
        let t = rt(None, 0);
        let s = desired_secret(&t, "t1-token", "baton_x").unwrap();
        assert_eq!(token_in(&s, "uid-1"), Ok(Some("baton_x".into())));
        assert!(token_in(&s, "other-uid").is_err());
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("RunnerToken", Some(true))
        );
    }

    #[test]
    fn secret_names_fit() {
        assert_eq!(secret_name("t1"), "t1-token");
        let long = "a".repeat(253);
        let n = secret_name(&long);
        assert!(n.len() <= 253, "{}", n.len());
        assert_ne!(n, secret_name(&"a".repeat(252)));
    }
}
