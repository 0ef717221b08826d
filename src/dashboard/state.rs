//! The server's shared state and the glue between the watch caches, the access
//! reviews and the pure renderers: each function here reads a snapshot and hands
//! it to [`super::rows`], [`super::html`] or [`super::job_page`].

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::access::{Access, Ask};
use super::guard::Guard;
use super::html;
use super::job_page;
use super::live::Live;
use super::proxy_user::{ProxyUsers, Who};
use super::rows::{self, JobFilter};
use crate::crd::{Job, Runner};

/// Everything a request needs.
pub struct Dash {
    pub client: Client,
    pub live: Live,
    pub access: Access,
    pub guard: Arc<Guard>,
    /// Where it acts, for the header: the namespace, or "all namespaces".
    pub scope: String,
    /// The controller's log route, with the user's Baton token (`--server`, `--token`).
    pub logs: Option<Arc<crate::cli::job_logs::LogClient>>,
    /// Acting as each proxied user (`--proxy-user-header`); None: as itself.
    pub proxy: Option<Arc<ProxyUsers>>,
}

impl Dash {
    /// Whether `who` may see `resource` in `ns`: always when the dashboard acts as
    /// itself (its caches are its own view), else as a SubjectAccessReview says.
    pub async fn sees(
        &self,
        who: &Who,
        verb: &'static str,
        resource: &'static str,
        ns: &str,
    ) -> bool {
        match who {
            Who::Own => true,
            Who::User(_) => self.access.may(who, Ask::new(verb, resource, ns)).await,
        }
    }

    /// The namespaces (of those given) whose `resource` rows `who` may see.
    async fn visible(
        &self,
        who: &Who,
        resource: &'static str,
        namespaces: BTreeSet<String>,
    ) -> BTreeSet<String> {
        match who {
            Who::Own => namespaces,
            Who::User(_) => {
                self.access
                    .namespaces_where(who, "list", resource, namespaces)
                    .await
            }
        }
    }

    /// A client that acts as `who`: its own, or one impersonating the proxied user.
    pub fn client_for(&self, who: &Who) -> anyhow::Result<Client> {
        match (who, &self.proxy) {
            (Who::Own, _) => Ok(self.client.clone()),
            (Who::User(id), Some(p)) => (p.client_as)(id),
            (Who::User(_), None) => anyhow::bail!("no proxied users here"),
        }
    }
}

/// The two live lists of the front page, as fragments: (runners, jobs).
pub async fn lists(d: &Dash, who: &Who, filter: &JobFilter) -> (String, String) {
    let now = Timestamp::now();
    let mut runners: Vec<Arc<Runner>> = d.live.runners.state();
    let seen = d.visible(who, "runners", namespaces_of(&runners)).await;
    runners.retain(|r| r.namespace().is_some_and(|ns| seen.contains(&ns)));
    runners.sort_by_key(|r| (r.namespace(), r.name_any()));
    let namespaces = namespaces_of(&runners);
    let patch = d
        .access
        .namespaces_where(who, "patch", "runners", namespaces.clone())
        .await;
    let delete = d
        .access
        .namespaces_where(who, "delete", "runners", namespaces)
        .await;
    let rows: Vec<rows::RunnerRow> = runners.iter().map(|r| rows::runner_row(r, now)).collect();
    let runners_html = match d.live.error("Runners") {
        Some(e) if rows.is_empty() => html::unavailable("Runners", &e),
        _ => html::runners_table(&rows, &|ns| patch.contains(ns), &|ns| delete.contains(ns)),
    };
    let mut jobs: Vec<Arc<Job>> = d.live.jobs.state();
    jobs.retain(|j| filter.matches(j));
    let seen = d.visible(who, "jobs", namespaces_of(&jobs)).await;
    jobs.retain(|j| j.namespace().is_some_and(|ns| seen.contains(&ns)));
    // Newest first: what was just applied is on top.
    jobs.sort_by(|a, b| {
        let key = |j: &Job| {
            (
                j.metadata.creation_timestamp.clone().map(|t| t.0),
                j.name_any(),
            )
        };
        key(b).cmp(&key(a))
    });
    let rows: Vec<rows::JobRow> = jobs.iter().map(|j| rows::job_row(j, now)).collect();
    let jobs_html = match d.live.error("Jobs") {
        Some(e) if rows.is_empty() => html::unavailable("Jobs", &e),
        _ => html::jobs_table(&rows),
    };
    (runners_html, jobs_html)
}

/// The namespaces of `objects`.
fn namespaces_of<K: ResourceExt>(objects: &[Arc<K>]) -> BTreeSet<String> {
    objects.iter().filter_map(|o| o.namespace()).collect()
}

/// Job `ns/name`'s page body, or None when the cache has no such Job (or `who`
/// may not `get` it).
pub async fn job(d: &Dash, who: &Who, ns: &str, name: &str, events: &[Event]) -> Option<String> {
    if !d.sees(who, "get", "jobs", ns).await {
        return None;
    }
    let job = d.live.jobs.get(&ObjectRef::new(name).within(ns))?;
    let view = job_page::job_view(&job, events, Timestamp::now());
    let can_cancel = d.access.may(who, Ask::new("patch", "jobs", ns)).await;
    Some(job_page::job_body(&view, can_cancel))
}

/// The log viewers of Job `ns/name`'s steps (empty when the cache has no such Job).
pub fn job_logs(d: &Dash, ns: &str, name: &str) -> String {
    let Some(job) = d.live.jobs.get(&ObjectRef::new(name).within(ns)) else {
        return String::new();
    };
    let steps: Vec<String> = job.spec.steps.iter().map(|s| s.name.clone()).collect();
    job_page::logs_section(ns, name, &steps, d.logs.is_some())
}

/// The body shown for a Job that is not (or no longer) there.
pub fn job_missing(ns: &str, name: &str) -> String {
    format!(
        r#"<h1>Job {}</h1><p class="empty">No Job {} in namespace {} (deleted, or not visible to you).</p>"#,
        html::escape(name),
        html::escape(name),
        html::escape(ns)
    )
}
