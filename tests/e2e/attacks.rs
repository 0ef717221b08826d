//! The security review's findings replayed as an attacker would, with curl-level
//! requests against a real controller on the real cluster: each is refused, and
//! nothing is created or leaked.
//!
//! | finding | attack | answer |
//! |---|---|---|
//! | H1 | tokenless registrations, in a namespace that did not opt in, in `kube-system`, past the cap; a drive-by that never returns | 403 / 403 / 429, no Runner; removed after `--pending-runner-ttl` |
//! | H2 | collect an adopted runner's token knowing its name and `runnerId` | 409 KeyMismatch, no token |
//! | M1 | a pool token acting as another runner (list, report `Succeeded`, control, re-register) | 403 PoolToken / 409 KeyMismatch |
//! | M3 | a flood of unauthenticated requests from one client | 429 with Retry-After, served again after it |
//! | M5 | squat a name a RunnerToken reserves, or a Runner someone else made | 409 NameReserved / NameTaken |

use anyhow::ensure;
use baton::crd::Runner;
use baton::crd::job::JobPhase;
use baton::domain::identity::Identity;
use baton::protocol::{RegisterRequest, RegisterResponse};
use kube::api::{Api, ListParams, PostParams};

use crate::jobs::{apply, job, jobs, phase_is, setup};
use crate::procs::{Agent, Controller, TempDir, baton_ok, http};
use crate::support::{TestNs, in_namespace, wait_for};

fn runners(ns: &TestNs) -> Api<Runner> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

async fn runner_names(api: &Api<Runner>) -> anyhow::Result<Vec<String>> {
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .collect())
}

/// What an attacker holding `id` sends: a registration with a valid key proof.
struct Attempt<'a> {
    url: &'a str,
    id: &'a Identity,
    name: &'a str,
    namespace: &'a str,
    runner_id: &'a str,
    labels: &'a [(&'a str, &'a str)],
    token: Option<&'a str>,
}

impl Attempt<'_> {
    async fn send(&self) -> anyhow::Result<(u16, String)> {
        let req = RegisterRequest {
            name: self.name.to_owned(),
            runner_id: self.runner_id.to_owned(),
            namespace: Some(self.namespace.to_owned()),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        };
        let req = crate::support::signed(self.url, self.id, req).await?;
        let mut r = http().post(format!("{}/v1/register", self.url)).json(&req);
        if let Some(t) = self.token {
            r = r.bearer_auth(t);
        }
        let res = r.send().await?;
        Ok((res.status().as_u16(), res.text().await?))
    }
}

fn attempt<'a>(url: &'a str, id: &'a Identity, name: &'a str, ns: &'a str) -> Attempt<'a> {
    Attempt {
        url,
        id,
        name,
        namespace: ns,
        runner_id: "attacker-0123456789",
        labels: &[],
        token: None,
    }
}

/// H1: tokenless registration creates nothing where the namespace did not opt in,
/// nothing outside the namespace served, and at most the cap where it opted in.
#[tokio::test]
async fn tokenless_registration_is_opt_in_and_capped() {
    in_namespace("atk-h1", |ns| async move {
        let ctl = Controller::start_with_env(
            &ns.name,
            "127.0.0.1:0",
            &[("BATON_MAX_PENDING_RUNNERS", "3")],
        )
        .await?;
        let api = runners(&ns);
        let evil = Identity::generate()?;

        let (status, body) = attempt(&ctl.url, &evil, "evil", &ns.name).send().await?;
        ensure!(
            status == 403 && body.contains("PendingRegistrationOff"),
            "not opted in: {status} {body}"
        );
        let (status, body) = attempt(&ctl.url, &evil, "evil", "kube-system")
            .send()
            .await?;
        ensure!(status == 403, "kube-system: {status} {body}");
        let system: Api<Runner> = Api::namespaced(ns.client.clone(), "kube-system");
        ensure!(
            runner_names(&system).await?.is_empty(),
            "a Runner in kube-system"
        );
        ensure!(runner_names(&api).await?.is_empty(), "a Runner was created");

        ns.allow_pending_runners().await?;
        for i in 0..3 {
            let name = format!("pending-{i}");
            let (status, body) = attempt(&ctl.url, &evil, &name, &ns.name).send().await?;
            ensure!(status == 202, "{name}: {status} {body}");
            // Status written: the controller's cache (what the cap counts) has it.
            let seen = |r: Option<&Runner>| r.is_some_and(|r| r.status.is_some());
            wait_for(&api, &name, seen, 10).await?;
        }
        let (status, body) = attempt(&ctl.url, &evil, "pending-3", &ns.name)
            .send()
            .await?;
        ensure!(
            status == 429 && body.contains("TooManyPending"),
            "past the cap: {status} {body}"
        );
        ensure!(runner_names(&api).await?.len() == 3, "more than the cap");
        Ok(())
    })
    .await;
}

/// H1: a Pending Runner nobody decides on and nobody hears from again is removed.
#[tokio::test]
async fn a_quiet_pending_runner_is_removed() {
    in_namespace("atk-quiet", |ns| async move {
        let ctl = Controller::start_with_env(
            &ns.name,
            "127.0.0.1:0",
            &[("BATON_PENDING_RUNNER_TTL", "3s")],
        )
        .await?;
        ns.allow_pending_runners().await?;
        let id = Identity::generate()?;
        let (status, body) = attempt(&ctl.url, &id, "drive-by", &ns.name).send().await?;
        ensure!(status == 202, "{status} {body}");
        let api = runners(&ns);
        wait_for(&api, "drive-by", |r: Option<&Runner>| r.is_some(), 10).await?;
        crate::support::wait_gone(&api, "drive-by", 30).await?;
        Ok(())
    })
    .await;
}

/// M3: a client flooding the routes anyone may call is slowed down (429 with
/// Retry-After), and served again once it waits.
#[tokio::test]
async fn a_flood_from_one_client_is_rate_limited() {
    in_namespace("atk-flood", |ns| async move {
        let ctl =
            Controller::start_with_env(&ns.name, "127.0.0.1:0", &[("BATON_REGISTER_RATE", "2")])
                .await?;
        let url = format!("{}/v1/challenge", ctl.url);
        let mut limited = None;
        for _ in 0..40 {
            let res = http().get(&url).send().await?;
            if res.status().as_u16() == 429 {
                limited = Some(res);
                break;
            }
            ensure!(res.status().as_u16() == 200, "{}", res.status());
        }
        let res = limited.ok_or_else(|| anyhow::anyhow!("40 requests at once and no 429"))?;
        let retry: u64 = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("429 without Retry-After"))?;
        let body = res.text().await?;
        ensure!(body.contains("RateLimited"), "{body}");
        tokio::time::sleep(std::time::Duration::from_secs(retry)).await;
        let res = http().get(&url).send().await?;
        ensure!(
            res.status().as_u16() == 200,
            "after waiting: {}",
            res.status()
        );
        Ok(())
    })
    .await;
}

/// H2: an adopted runner's token goes to its key only, not to whoever knows its
/// name and its (public) runnerId.
#[tokio::test]
async fn an_adopted_runners_token_goes_to_its_key_only() {
    in_namespace("atk-h2", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        ns.allow_pending_runners().await?;
        let dir = TempDir::new(&ns.name);
        let agent = Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), None, "").await?;
        let api = runners(&ns);
        wait_for(&api, "r1", |r: Option<&Runner>| r.is_some(), 30).await?;
        baton_ok(&["runner", "adopt", "r1", "-n", &ns.name]).await?;
        agent.wait_ready(200, 30).await?;
        let r1 = api.get("r1").await?;
        let status = r1.status.unwrap_or_default();
        let runner_id = status.runner_id.unwrap_or_default();
        ensure!(
            status
                .key_fingerprint
                .is_some_and(|f| f.starts_with("SHA256:")),
            "no fingerprint"
        );

        let thief = Identity::generate()?;
        let mut steal = attempt(&ctl.url, &thief, "r1", &ns.name);
        steal.runner_id = &runner_id;
        for _ in 0..2 {
            let (code, body) = steal.send().await?;
            ensure!(
                code == 409 && body.contains("KeyMismatch") && !body.contains("baton_"),
                "stealing the token: {code} {body}"
            );
        }
        Ok(())
    })
    .await;
}

/// M1: a pool token registers runners and nothing more: it cannot list, report
/// for or take over another runner, and a runner it registers gets the token's
/// labels, not the ones it asks for.
#[tokio::test]
async fn a_pool_token_cannot_act_as_another_runner() {
    in_namespace("atk-m1", |ns| async move {
        let s = setup(&ns).await?;
        let steps =
            serde_json::json!([{ "name": "wait", "image": "busybox", "script": "sleep 20" }]);
        apply(&ns, &job("victim", "pool=e2e", steps)?).await?;
        wait_for(&jobs(&ns), "victim", phase_is(JobPhase::Running), 30).await?;
        let pool = baton_ok(&["token", "create", "pool", "-n", &ns.name]).await?;
        let pool = pool.trim();

        let res = http()
            .get(format!(
                "{}/v1/jobs?runner=r1&namespace={}",
                s.ctl.url, ns.name
            ))
            .bearer_auth(pool)
            .send()
            .await?;
        let (code, body) = (res.status().as_u16(), res.text().await?);
        ensure!(
            code == 403 && body.contains("PoolToken"),
            "list: {code} {body}"
        );

        let report = serde_json::json!({"runner": "r1", "epoch": 1, "phase": "Succeeded"});
        let res = http()
            .post(format!("{}/v1/jobs/{}/victim/status", s.ctl.url, ns.name))
            .bearer_auth(pool)
            .json(&report)
            .send()
            .await?;
        let (code, body) = (res.status().as_u16(), res.text().await?);
        ensure!(
            code == 403 && body.contains("PoolToken"),
            "report: {code} {body}"
        );
        let victim = jobs(&ns).get("victim").await?;
        ensure!(
            victim.status.and_then(|st| st.phase) == Some(JobPhase::Running),
            "the forged report landed"
        );

        let res = http()
            .get(format!(
                "{}/v1/control?name=r1&namespace={}",
                s.ctl.url, ns.name
            ))
            .bearer_auth(pool)
            .send()
            .await?;
        ensure!(res.status().as_u16() == 403, "control: {}", res.status());

        let evil = Identity::generate()?;
        let mut takeover = attempt(&s.ctl.url, &evil, "r1", &ns.name);
        takeover.token = Some(pool);
        let (code, body) = takeover.send().await?;
        ensure!(
            code == 409 && body.contains("KeyMismatch"),
            "re-register r1: {code} {body}"
        );

        let mut lure = attempt(&s.ctl.url, &evil, "lure", &ns.name);
        lure.token = Some(pool);
        lure.labels = &[("pool", "e2e")];
        let (code, body) = lure.send().await?;
        let reply: RegisterResponse =
            serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("lure: {code} {body}: {e}"))?;
        ensure!(code == 202 && reply.token.is_none(), "lure: {code} {body}");
        let lure = wait_for(&runners(&ns), "lure", |r: Option<&Runner>| r.is_some(), 10).await?;
        ensure!(
            lure.spec.labels.is_empty(),
            "the request's labels were taken: {:?}",
            lure.spec.labels
        );
        wait_for(&jobs(&ns), "victim", phase_is(JobPhase::Succeeded), 60).await?;
        drop(s);
        Ok(())
    })
    .await;
}

/// M5: a name a RunnerToken reserves (an on-demand runner's, a static runner's)
/// or a Runner someone else created cannot be taken without its token.
#[tokio::test]
async fn reserved_runner_names_cannot_be_squatted() {
    in_namespace("atk-m5", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        ns.allow_pending_runners().await?;
        baton_ok(&[
            "token",
            "create",
            "for-build",
            "-n",
            &ns.name,
            "--runner",
            "build-runner",
        ])
        .await?;
        let made: Runner = serde_json::from_value(serde_json::json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "Runner",
            "metadata": { "name": "made" }, "spec": {}
        }))?;
        runners(&ns).create(&PostParams::default(), &made).await?;
        wait_for(&runners(&ns), "made", |r: Option<&Runner>| r.is_some(), 10).await?;

        let squatter = Identity::generate()?;
        let (code, body) = attempt(&ctl.url, &squatter, "build-runner", &ns.name)
            .send()
            .await?;
        ensure!(
            code == 409 && body.contains("NameReserved"),
            "reserved: {code} {body}"
        );
        let (code, body) = attempt(&ctl.url, &squatter, "made", &ns.name)
            .send()
            .await?;
        ensure!(
            code == 409 && body.contains("NameTaken"),
            "made: {code} {body}"
        );
        let names = runner_names(&runners(&ns)).await?;
        ensure!(names == ["made"], "created: {names:?}");
        let made = runners(&ns).get("made").await?;
        ensure!(
            made.status.and_then(|s| s.public_key).is_none(),
            "the squatter's key was bound"
        );
        Ok(())
    })
    .await;
}

mod transport;
