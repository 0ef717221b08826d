//! The runner lifecycle on the real cluster, with a real `baton controller` (one per
//! test, restricted to the test's namespace) and real `baton runner` processes.

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, ensure};
use baton::crd::conditions;
use baton::crd::runner::AdoptionState;
use baton::crd::{Runner, RunnerToken};
use baton::domain::identity::Identity;
use baton::protocol::RegisterRequest;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::wait::Condition;

use crate::procs::{Agent, Controller, TempDir, baton, baton_ok, http};
use crate::support::{TestNs, in_namespace, wait_for, wait_gone};

/// A Runner whose status shows `adoption`, and `Connected` as given.
pub(crate) fn runner_is(adoption: AdoptionState, connected: bool) -> impl Condition<Runner> {
    move |r: Option<&Runner>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| {
            s.adoption == Some(adoption)
                && conditions::is_true(&s.conditions, "Connected") == connected
        })
    }
}

/// A Runner whose `type` condition has `reason`.
fn runner_reason(type_: &'static str, reason: &'static str) -> impl Condition<Runner> {
    move |r: Option<&Runner>| {
        r.and_then(|r| r.status.as_ref())
            .and_then(|s| conditions::find(&s.conditions, type_))
            .is_some_and(|c| c.reason == reason)
    }
}

fn runners(ns: &TestNs) -> Api<Runner> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

fn tokens(ns: &TestNs) -> Api<RunnerToken> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

/// `kubectl baton token create` through the binary: the printed token.
async fn create_token(ns: &TestNs, name: &str, extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["token", "create", name, "-n", &ns.name];
    args.extend_from_slice(extra);
    let out = baton_ok(&args).await?;
    let token = out.trim().to_owned();
    ensure!(
        token.starts_with("baton_") && !token.contains('\n'),
        "printed {out:?}"
    );
    Ok(token)
}

pub(crate) async fn register_raw(
    url: &str,
    body: &str,
    content_type: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut r = http()
        .post(format!("{url}/v1/register"))
        .body(body.to_owned());
    if let Some(ct) = content_type {
        r = r.header("content-type", ct);
    }
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let res = r.send().await?;
    Ok((res.status().as_u16(), res.text().await?))
}

/// A registration body with a fresh key proof: a challenge from the server,
/// signed by a new key (as a runner does; the bodies below are sent raw).
pub(crate) async fn body_for(url: &str, name: &str, ns: &str) -> anyhow::Result<String> {
    let req = RegisterRequest {
        name: name.to_owned(),
        runner_id: "e2e-0123456789".to_owned(),
        namespace: Some(ns.to_owned()),
        ..Default::default()
    };
    let req = crate::support::signed(url, &Identity::generate()?, req).await?;
    Ok(serde_json::to_string(&req)?)
}

#[tokio::test]
async fn pending_runner_is_adopted_and_stores_its_token() {
    in_namespace("adopt", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        // Its runners register without a token: an operator opted the namespace in.
        ns.allow_pending_runners().await?;
        let dir = TempDir::new(&ns.name);
        let agent =
            Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), None, "pool=e2e").await?;
        let api = runners(&ns);

        let pending = wait_for(&api, "r1", runner_is(AdoptionState::Pending, false), 30).await?;
        ensure!(pending.spec.labels.get("pool").map(String::as_str) == Some("e2e"));
        agent.wait_ready(503, 5).await?;
        ensure!(
            !dir.join("r1").join("token").exists(),
            "no token before adoption"
        );

        baton_ok(&["runner", "adopt", "r1", "-n", &ns.name]).await?;
        wait_for(&api, "r1", runner_is(AdoptionState::Adopted, true), 30).await?;
        wait_for(&api, "r1", runner_reason("Ready", "Ready"), 10).await?;
        agent.wait_ready(200, 10).await?;

        let token_file = dir.join("r1").join("token");
        let mode = std::fs::metadata(&token_file)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "token file mode {mode:o}");
        let issued = tokens(&ns).get("r1-adopted").await?;
        ensure!(issued.spec.runner_name.as_deref() == Some("r1"));
        let stored = std::fs::read_to_string(&token_file)?;
        ensure!(
            issued.status.and_then(|s| s.token_hash)
                == Some(baton::domain::token::hash(stored.trim())),
            "the stored token is the one issued"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn runner_token_preadopts_and_binds_to_its_runner_name() {
    in_namespace("preadopt", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        let token = create_token(&ns, "t1", &["--runner", "r1", "--labels", "pool=gpu"]).await?;

        // Only a hash outside the Secret.
        let rt = tokens(&ns).get("t1").await?;
        let status = rt.status.clone().context("status")?;
        ensure!(status.token_hash.as_deref() == Some(baton::domain::token::hash(&token).as_str()));
        ensure!(
            !serde_json::to_string(&rt)?.contains(&token),
            "plaintext outside the Secret"
        );
        let secret: Secret = Api::namespaced(ns.client.clone(), &ns.name)
            .get(status.secret_name.as_deref().context("secretName")?)
            .await?;
        ensure!(
            secret
                .owner_references()
                .iter()
                .any(|o| o.kind == "RunnerToken" && o.name == "t1"),
            "the Secret is owned by the RunnerToken"
        );

        let dir = TempDir::new(&ns.name);
        let r1 = Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), Some(&token), "").await?;
        let api = runners(&ns);
        let r = wait_for(&api, "r1", runner_is(AdoptionState::Preadopted, true), 30).await?;
        ensure!(
            r.spec.labels.get("pool").map(String::as_str) == Some("gpu"),
            "token labels"
        );
        r1.wait_ready(200, 10).await?;

        // The same token for another runner name is refused; without a token that
        // runner is refused too (the namespace did not opt in to Pending runners),
        // and no Runner r2 is created.
        let r2 = Agent::start(&ctl.url, &ns.name, "r2", &dir.join("r2"), Some(&token), "").await?;
        r2.proc.wait_for_log("TokenForAnotherRunner", 20).await?;
        r2.proc.wait_for_log("PendingRegistrationOff", 20).await?;
        r2.wait_ready(503, 5).await?;
        ensure!(
            api.get_opt("r2").await?.is_none(),
            "a Runner r2 was created"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn rejected_runner_is_refused_and_listed_then_forgotten_and_back() {
    in_namespace("reject", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        let token = create_token(&ns, "shared", &[]).await?;
        let dir = TempDir::new(&ns.name);
        let agent =
            Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), Some(&token), "").await?;
        let api = runners(&ns);
        let before = wait_for(&api, "r1", runner_is(AdoptionState::Preadopted, true), 30).await?;

        baton_ok(&["runner", "reject", "r1", "-n", &ns.name]).await?;
        wait_for(&api, "r1", runner_is(AdoptionState::Rejected, false), 30).await?;
        agent.proc.wait_for_log("state=\"Rejected\"", 20).await?;
        agent.wait_ready(503, 10).await?;
        let (status, body) = register_raw(
            &ctl.url,
            &body_for(&ctl.url, "r1", &ns.name).await?,
            Some("application/json"),
            Some(&token),
        )
        .await?;
        ensure!(
            status == 403 && body.contains("Rejected"),
            "{status} {body}"
        );
        let list = baton_ok(&["runner", "list", "-n", &ns.name]).await?;
        ensure!(
            list.lines()
                .any(|l| l.starts_with("r1") && l.contains("Rejected")),
            "listed: {list}"
        );

        // Forget: the runner's token is still valid, so it comes back as if never rejected.
        baton_ok(&["runner", "forget", "r1", "-n", &ns.name]).await?;
        let old_uid = before.uid();
        let back = wait_for(
            &api,
            "r1",
            |r: Option<&Runner>| {
                r.is_some_and(|r| r.uid() != old_uid)
                    && runner_is(AdoptionState::Preadopted, true).matches_object(r)
            },
            30,
        )
        .await?;
        ensure!(back.spec.adoption.is_none());
        agent.wait_ready(200, 10).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn expired_token_is_refused_and_the_runner_waits_pending() {
    in_namespace("expired", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        // Its runners register without a token: an operator opted the namespace in.
        ns.allow_pending_runners().await?;
        let (code, _, err) =
            baton(&["token", "create", "bad", "-n", &ns.name, "--ttl", "3 days"]).await?;
        ensure!(
            code != 0 && err.contains("invalid duration"),
            "bad ttl: {code} {err}"
        );
        let token = create_token(&ns, "short", &["--ttl", "3s"]).await?;
        // Flips to Expired on time, with no other event.
        wait_for(
            &tokens(&ns),
            "short",
            |t: Option<&RunnerToken>| {
                t.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                    conditions::is_true(&s.conditions, "Expired")
                        && !conditions::is_true(&s.conditions, "Ready")
                })
            },
            15,
        )
        .await?;
        let (status, body) = register_raw(
            &ctl.url,
            &body_for(&ctl.url, "r1", &ns.name).await?,
            Some("application/json"),
            Some(&token),
        )
        .await?;
        ensure!(
            status == 401 && body.contains("TokenExpired"),
            "{status} {body}"
        );

        let dir = TempDir::new(&ns.name);
        let agent =
            Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), Some(&token), "").await?;
        agent.proc.wait_for_log("token refused", 20).await?;
        wait_for(
            &runners(&ns),
            "r1",
            runner_is(AdoptionState::Pending, false),
            30,
        )
        .await?;
        agent.wait_ready(503, 5).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn deleting_the_runner_token_revokes_it_at_once() {
    in_namespace("revoke", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        // Its runners register without a token: an operator opted the namespace in.
        ns.allow_pending_runners().await?;
        let token = create_token(&ns, "t1", &[]).await?;
        let dir = TempDir::new(&ns.name);
        let agent =
            Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), Some(&token), "").await?;
        let api = runners(&ns);
        wait_for(&api, "r1", runner_is(AdoptionState::Preadopted, true), 30).await?;

        tokens(&ns).delete("t1", &Default::default()).await?;
        agent.proc.wait_for_log("token refused", 20).await?;
        wait_for(&api, "r1", runner_is(AdoptionState::Pending, false), 30).await?;
        let (status, _) = register_raw(
            &ctl.url,
            &body_for(&ctl.url, "r9", &ns.name).await?,
            Some("application/json"),
            Some(&token),
        )
        .await?;
        ensure!(status == 401, "deleted token answered {status}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn decommission_wipes_the_state_dir_and_exits_zero() {
    in_namespace("decom", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        // Its runners register without a token: an operator opted the namespace in.
        ns.allow_pending_runners().await?;
        let dir = TempDir::new(&ns.name);
        let mut agent = Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), None, "").await?;
        let api = runners(&ns);
        wait_for(&api, "r1", runner_is(AdoptionState::Pending, false), 30).await?;
        baton_ok(&["runner", "adopt", "r1", "-n", &ns.name]).await?;
        wait_for(&api, "r1", runner_is(AdoptionState::Adopted, true), 30).await?;
        ensure!(dir.join("r1").join("token").exists());

        baton_ok(&["runner", "decommission", "r1", "-n", &ns.name]).await?;
        let status = agent.proc.wait_exit(30).await?;
        ensure!(status.code() == Some(0), "runner exited {status:?}");
        ensure!(!agent.state_dir.exists(), "state directory still there");
        // The controller deletes the Runner once it told the runner.
        wait_gone(&api, "r1", 30).await?;
        // Its adoption token goes with it.
        wait_gone(&tokens(&ns), "r1-adopted", 30)
            .await
            .context("the adoption token of a decommissioned runner was not deleted")?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn controller_restart_while_runners_are_connected() {
    in_namespace("restart", |ns| async move {
        let mut ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        // Its runners register without a token: an operator opted the namespace in.
        ns.allow_pending_runners().await?;
        let token = create_token(&ns, "t1", &[]).await?;
        let dir = TempDir::new(&ns.name);
        let r1 = Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), Some(&token), "").await?;
        let r2 = Agent::start(&ctl.url, &ns.name, "r2", &dir.join("r2"), None, "").await?;
        let api = runners(&ns);
        wait_for(&api, "r2", runner_is(AdoptionState::Pending, false), 30).await?;
        baton_ok(&["runner", "adopt", "r2", "-n", &ns.name]).await?;
        let a = wait_for(&api, "r1", runner_is(AdoptionState::Preadopted, true), 30).await?;
        let b = wait_for(&api, "r2", runner_is(AdoptionState::Adopted, true), 30).await?;
        r1.wait_ready(200, 10).await?;
        r2.wait_ready(200, 10).await?;
        let r2_token = std::fs::read_to_string(dir.join("r2").join("token"))?;

        // Crash the controller: the runners go Idle.
        ctl.proc.kill().await;
        r1.wait_ready(503, 20).await?;
        r2.wait_ready(503, 20).await?;

        // A new controller on the same address: both reconnect, nothing lost.
        let ctl2 = Controller::start(&ns.name, &ctl.addr).await?;
        ctl2.proc
            .wait_for_log("control channel opened runner=", 30)
            .await?;
        ctl2.proc
            .wait_for_logs("control channel opened runner=", 2, 30)
            .await?;
        r1.wait_ready(200, 20).await?;
        r2.wait_ready(200, 20).await?;
        let a2 = wait_for(&api, "r1", runner_is(AdoptionState::Preadopted, true), 30).await?;
        let b2 = wait_for(&api, "r2", runner_is(AdoptionState::Adopted, true), 30).await?;
        ensure!(
            a.uid() == a2.uid() && b.uid() == b2.uid(),
            "Runners were re-created"
        );
        ensure!(
            a.status.and_then(|s| s.runner_id) == a2.status.and_then(|s| s.runner_id),
            "runner id changed"
        );
        ensure!(
            std::fs::read_to_string(dir.join("r2").join("token"))? == r2_token,
            "token changed"
        );
        ensure!(api.list(&ListParams::default()).await?.items.len() == 2);
        let (mut r1, mut r2) = (r1, r2);
        ensure!(r1.proc.running() && r2.proc.running(), "a runner exited");
        ensure!(
            tokens(&ns).list(&ListParams::default()).await?.items.len() == 3,
            "t1, r1-adopted (issued through the pool token t1) and r2-adopted"
        );
        Ok(())
    })
    .await;
}

/// A server that stops talking but keeps the connection open: no ping within the
/// ping timeout (5 s here, 30 s by default), so the runner goes Idle and reconnects.
#[tokio::test]
async fn a_silent_server_makes_the_runner_idle_until_it_reconnects() {
    use nix::sys::signal::Signal;
    in_namespace("silent", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        let token = create_token(&ns, "t1", &[]).await?;
        let dir = TempDir::new(&ns.name);
        let agent =
            Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), Some(&token), "").await?;
        wait_for(
            &runners(&ns),
            "r1",
            runner_is(AdoptionState::Preadopted, true),
            30,
        )
        .await?;
        agent.wait_ready(200, 10).await?;

        ctl.proc.signal(Signal::SIGSTOP)?;
        let frozen = async {
            agent.proc.wait_for_log("no ping for 5s", 20).await?;
            agent.wait_ready(503, 10).await
        }
        .await;
        ctl.proc.signal(Signal::SIGCONT)?;
        frozen?;
        ctl.proc
            .wait_for_logs("control channel opened runner=", 2, 30)
            .await?;
        agent.wait_ready(200, 30).await?;
        wait_for(
            &runners(&ns),
            "r1",
            runner_is(AdoptionState::Preadopted, true),
            30,
        )
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn disable_and_enable_reach_the_runner_and_show_in_status() {
    in_namespace("disable", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        let token = create_token(&ns, "t1", &[]).await?;
        let dir = TempDir::new(&ns.name);
        let agent =
            Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), Some(&token), "").await?;
        let api = runners(&ns);
        wait_for(&api, "r1", runner_reason("Ready", "Ready"), 30).await?;

        let pp = PatchParams::default();
        api.patch(
            "r1",
            &pp,
            &Patch::Merge(serde_json::json!({"spec": {"disabled": true}})),
        )
        .await?;
        wait_for(&api, "r1", runner_reason("Ready", "Disabled"), 20).await?;
        agent
            .proc
            .wait_for_log("disabled: taking no new jobs", 20)
            .await?;

        api.patch(
            "r1",
            &pp,
            &Patch::Merge(serde_json::json!({"spec": {"disabled": false}})),
        )
        .await?;
        wait_for(&api, "r1", runner_reason("Ready", "Ready"), 20).await?;
        agent.proc.wait_for_log("enabled: taking jobs", 20).await?;
        Ok(())
    })
    .await;
}

mod bad_input;
mod decommission;
