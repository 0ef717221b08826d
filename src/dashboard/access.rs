//! What the user may do, asked of the API server with SelfSubjectAccessReviews
//! (the user's own credentials), cached for a minute per verb, resource and
//! namespace. It only decides which buttons are drawn: every change is still made
//! with the user's credentials, so the API server has the last word.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;

/// How long an answer is reused.
const FRESH: Duration = Duration::from_secs(60);

/// A question: may I `verb` `resource` (group baton.dev) in `namespace`?
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ask {
    pub verb: &'static str,
    pub resource: &'static str,
    pub namespace: String,
}

impl Ask {
    pub fn new(verb: &'static str, resource: &'static str, namespace: &str) -> Ask {
        Ask {
            verb,
            resource,
            namespace: namespace.to_owned(),
        }
    }
}

/// The review that asks it.
pub fn review(ask: &Ask) -> SelfSubjectAccessReview {
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some("baton.dev".into()),
                resource: Some(ask.resource.into()),
                verb: Some(ask.verb.into()),
                namespace: Some(ask.namespace.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Answers, asked once a minute at most.
pub struct Access {
    client: Client,
    cache: Mutex<HashMap<Ask, (bool, Instant)>>,
}

impl Access {
    pub fn new(client: Client) -> Access {
        Access {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the user may; a review that fails counts as no (no button).
    pub async fn may(&self, ask: Ask) -> bool {
        if let Some((yes, at)) = self.cache.lock().await.get(&ask)
            && at.elapsed() < FRESH
        {
            return *yes;
        }
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let yes = match api.create(&PostParams::default(), &review(&ask)).await {
            Ok(r) => r.status.is_some_and(|s| s.allowed),
            Err(e) => {
                tracing::warn!(error = %e, verb = ask.verb, resource = ask.resource, "access review failed");
                false
            }
        };
        self.cache.lock().await.insert(ask, (yes, Instant::now()));
        yes
    }

    /// The namespaces (of those given) where the user may `verb` `resource`.
    pub async fn namespaces_where(
        &self,
        verb: &'static str,
        resource: &'static str,
        namespaces: impl IntoIterator<Item = String>,
    ) -> std::collections::BTreeSet<String> {
        let mut yes = std::collections::BTreeSet::new();
        for ns in namespaces {
            if self.may(Ask::new(verb, resource, &ns)).await {
                yes.insert(ns);
            }
        }
        yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_review_asks_about_baton_resources_in_one_namespace() {
        let r = review(&Ask::new("patch", "runners", "ci"));
        let a = r.spec.resource_attributes.unwrap_or_default();
        assert_eq!(a.group.as_deref(), Some("baton.dev"));
        assert_eq!(a.resource.as_deref(), Some("runners"));
        assert_eq!(a.verb.as_deref(), Some("patch"));
        assert_eq!(a.namespace.as_deref(), Some("ci"));
        assert!(r.spec.non_resource_attributes.is_none());
    }
}
