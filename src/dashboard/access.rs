//! What a user may do, asked of the API server and cached for a minute per
//! (who, verb, resource, namespace), at most [`CAPACITY`] answers:
//! - acting as itself ([`Who::Own`]: the user's kubeconfig, or a ServiceAccount),
//!   with SelfSubjectAccessReviews; the answers only decide which buttons are
//!   drawn, as every read and change is made with those same credentials;
//! - for a proxied user ([`Who::User`]), with SubjectAccessReviews about that user
//!   and groups: the answers decide which rows are shown too, as the watch caches
//!   are the dashboard's own. Changes are made by impersonation, so the API server
//!   still has the last word on them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;

use super::proxy_user::{AUTHENTICATED, Identity, Who};

/// How long an answer is reused.
const FRESH: Duration = Duration::from_secs(60);
/// The most answers kept (users × namespaces × questions).
pub const CAPACITY: usize = 4096;

/// A question: may I `verb` `resource` in `namespace`?
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

    /// The API group: Events are core, everything else Baton's.
    fn group(&self) -> &'static str {
        if self.resource == "events" {
            ""
        } else {
            "baton.dev"
        }
    }

    fn attributes(&self) -> ResourceAttributes {
        ResourceAttributes {
            group: Some(self.group().into()),
            resource: Some(self.resource.into()),
            verb: Some(self.verb.into()),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        }
    }
}

/// The review that asks it about the caller.
pub fn review(ask: &Ask) -> SelfSubjectAccessReview {
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ask.attributes()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The review that asks it about `id`, with the groups the API server gives an
/// impersonated user: those named, and `system:authenticated`.
pub fn subject_review(id: &Identity, ask: &Ask) -> SubjectAccessReview {
    let mut groups = id.groups.clone();
    groups.push(AUTHENTICATED.to_owned());
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(id.user.clone()),
            groups: Some(groups),
            resource_attributes: Some(ask.attributes()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Answers, each fresh for [`FRESH`], at most `capacity` of them.
#[derive(Debug)]
pub struct Answers {
    capacity: usize,
    map: HashMap<(Who, Ask), (bool, Instant)>,
}

impl Answers {
    pub fn new(capacity: usize) -> Answers {
        Answers {
            capacity,
            map: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The answer, while it is fresh at `now`.
    pub fn get(&self, key: &(Who, Ask), now: Instant) -> Option<bool> {
        let (yes, at) = self.map.get(key)?;
        (now.saturating_duration_since(*at) < FRESH).then_some(*yes)
    }

    /// Keep an answer got at `now`: when full, stale answers go first, then the oldest.
    pub fn put(&mut self, key: (Who, Ask), yes: bool, now: Instant) {
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.map
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < FRESH);
            while self.map.len() >= self.capacity {
                let oldest = self.map.iter().min_by_key(|(_, (_, at))| *at);
                let Some(k) = oldest.map(|(k, _)| k.clone()) else {
                    break;
                };
                self.map.remove(&k);
            }
        }
        self.map.insert(key, (yes, now));
    }
}

/// The reviews, asked with the dashboard's own client.
pub struct Access {
    client: Client,
    cache: Mutex<Answers>,
}

impl Access {
    pub fn new(client: Client) -> Access {
        Access {
            client,
            cache: Mutex::new(Answers::new(CAPACITY)),
        }
    }

    /// Whether `who` may; a review that fails counts as no.
    pub async fn may(&self, who: &Who, ask: Ask) -> bool {
        let key = (who.clone(), ask);
        if let Some(yes) = self.cache.lock().await.get(&key, Instant::now()) {
            return yes;
        }
        let (who, ask) = &key;
        let asked = match who {
            Who::Own => Api::all(self.client.clone())
                .create(&PostParams::default(), &review(ask))
                .await
                .map(|r| r.status.is_some_and(|s| s.allowed)),
            Who::User(id) => Api::all(self.client.clone())
                .create(&PostParams::default(), &subject_review(id, ask))
                .await
                .map(|r| r.status.is_some_and(|s| s.allowed)),
        };
        let yes = asked.unwrap_or_else(|e| {
            tracing::warn!(error = %e, verb = ask.verb, resource = ask.resource, "access review failed");
            false
        });
        self.cache.lock().await.put(key, yes, Instant::now());
        yes
    }

    /// The namespaces (of those given) where `who` may `verb` `resource`.
    pub async fn namespaces_where(
        &self,
        who: &Who,
        verb: &'static str,
        resource: &'static str,
        namespaces: impl IntoIterator<Item = String>,
    ) -> std::collections::BTreeSet<String> {
        let mut yes = std::collections::BTreeSet::new();
        for ns in namespaces {
            if self.may(who, Ask::new(verb, resource, &ns)).await {
                yes.insert(ns);
            }
        }
        yes
    }
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
