#![allow(clippy::unwrap_used)]
use super::*;
use crate::crd::RunnerSpec;
use crate::crd::RunnerTokenStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn runner(decision: Option<AdoptionDecision>, disabled: bool) -> Runner {
    let mut r = Runner::new(
        "r1",
        RunnerSpec {
            adoption: decision,
            disabled,
            ..Default::default()
        },
    );
    r.metadata.namespace = Some("ns".into());
    r.metadata.generation = Some(2);
    r
}

fn session(token: Option<&str>, connected: bool) -> SessionView {
    SessionView {
        runner_id: "id1".into(),
        version: "0.1.0".into(),
        token: token.map(str::to_owned),
        own_token: true,
        public_key: String::new(),
        connected,
        idle: false,
        direct_only: false,
    }
}

fn cond(p: &Plan, t: &str) -> (String, String) {
    let c = conditions::find(&p.status.conditions, t).unwrap();
    (c.status.clone(), c.reason.clone())
}

fn s(a: &str, b: &str) -> (String, String) {
    (a.into(), b.into())
}

#[test]
fn status_for_each_lifecycle_point() {
    // (what, decision, disabled, session, adoption, Adopted, Connected, Ready, kstatus)
    let cases = [
        (
            "pending, polling",
            None,
            false,
            Some(session(None, false)),
            AdoptionState::Pending,
            s("False", "Pending"),
            s("False", "Disconnected"),
            s("False", "Pending"),
            "InProgress",
        ),
        (
            "preadopted, connected",
            None,
            false,
            Some(session(Some("t"), true)),
            AdoptionState::Preadopted,
            s("True", "Preadopted"),
            s("True", "ControlChannelOpen"),
            s("True", "Ready"),
            "Current",
        ),
        (
            "adopted, token not collected",
            Some(AdoptionDecision::Adopted),
            false,
            Some(session(None, false)),
            AdoptionState::Adopted,
            s("True", "TokenIssued"),
            s("False", "Disconnected"),
            s("False", "TokenIssued"),
            "InProgress",
        ),
        (
            "adopted, connected",
            Some(AdoptionDecision::Adopted),
            false,
            Some(session(Some("r1-adopted"), true)),
            AdoptionState::Adopted,
            s("True", "Adopted"),
            s("True", "ControlChannelOpen"),
            s("True", "Ready"),
            "Current",
        ),
        (
            "adopted, disabled",
            Some(AdoptionDecision::Adopted),
            true,
            Some(session(Some("t"), true)),
            AdoptionState::Adopted,
            s("True", "Adopted"),
            s("True", "ControlChannelOpen"),
            s("True", "Disabled"),
            "Current",
        ),
        (
            "adopted, gone",
            Some(AdoptionDecision::Adopted),
            false,
            Some(session(Some("r1-adopted"), false)),
            AdoptionState::Adopted,
            s("True", "Adopted"),
            s("False", "Disconnected"),
            s("False", "NotConnected"),
            "InProgress",
        ),
        (
            "rejected",
            Some(AdoptionDecision::Rejected),
            false,
            Some(session(Some("t"), true)),
            AdoptionState::Rejected,
            s("False", "Rejected"),
            s("True", "ControlChannelOpen"),
            s("False", "Rejected"),
            "Failed",
        ),
        (
            "no session since restart",
            None,
            false,
            None,
            AdoptionState::Pending,
            s("False", "Pending"),
            s("False", "Disconnected"),
            s("False", "Pending"),
            "InProgress",
        ),
    ];
    for (what, decision, disabled, sess, adoption, adopted, connected, ready, kstatus) in cases {
        let p = plan(
            &runner(decision, disabled),
            sess.as_ref(),
            None,
            None,
            at(10),
        );
        assert_eq!(p.status.adoption, Some(adoption), "{what}");
        assert_eq!(cond(&p, "Adopted"), adopted, "{what}");
        assert_eq!(cond(&p, "Connected"), connected, "{what}");
        assert_eq!(cond(&p, "Ready"), ready, "{what}");
        let read = conditions::kstatus(&p.status.conditions, Some(2), p.status.observed_generation);
        assert_eq!(read, kstatus, "{what}");
        assert_eq!(p.status.observed_generation, Some(2));
    }
}

#[test]
fn restart_keeps_what_the_previous_status_knew() {
    let mut r = runner(None, false);
    let first = plan(&r, Some(&session(Some("t"), true)), None, None, at(10));
    r.status = Some(first.status.clone());
    // New controller process: nothing in the hub yet.
    let after = plan(&r, None, None, None, at(20));
    assert_eq!(after.status.adoption, Some(AdoptionState::Preadopted));
    assert_eq!(after.status.runner_id.as_deref(), Some("id1"));
    assert_eq!(cond(&after, "Connected"), s("False", "Disconnected"));
    // The runner is back: the same status as before, transition times included.
    r.status = Some(after.status);
    let back = plan(&r, Some(&session(Some("t"), true)), None, None, at(30));
    assert_eq!(back.status.adoption, first.status.adoption);
    let ready = conditions::find(&back.status.conditions, "Adopted").unwrap();
    assert_eq!(
        ready.last_transition_time,
        Time(at(10)),
        "Adopted never flipped"
    );
}

#[test]
fn a_direct_only_runner_says_so_and_keeps_it_while_away() {
    let r = runner(Some(AdoptionDecision::Adopted), false);
    let direct = SessionView {
        direct_only: true,
        ..session(Some("t"), true)
    };
    let p = plan(&r, Some(&direct), None, None, at(0));
    assert_eq!(p.status.direct_only, Some(true));
    let mut away = r.clone();
    away.status = Some(p.status);
    let p = plan(&away, Some(&session(Some("t"), false)), None, None, at(1));
    assert_eq!(p.status.direct_only, Some(true), "kept while disconnected");
    let p = plan(&away, Some(&session(Some("t"), true)), None, None, at(2));
    assert_eq!(
        p.status.direct_only, None,
        "reconnected without --direct-only"
    );
}

#[test]
fn identical_inputs_write_nothing() {
    let mut r = runner(None, false);
    let p = plan(&r, Some(&session(Some("t"), true)), None, None, at(10));
    r.status = Some(p.status.clone());
    let again = plan(&r, Some(&session(Some("t"), true)), None, None, at(99));
    assert_eq!(Some(&again.status), r.status.as_ref());
}

#[test]
fn adopting_a_pending_runner_issues_its_own_token() {
    let r = runner(Some(AdoptionDecision::Adopted), false);
    let p = plan(&r, Some(&session(None, false)), None, None, at(10));
    let IssuedToken::Create(t) = p.issued else {
        panic!("expected a token to be issued, got {:?}", p.issued);
    };
    assert_eq!(t.name_any(), "r1-adopted");
    assert_eq!(t.spec.runner_name.as_deref(), Some("r1"));
    assert!(
        t.metadata.owner_references.is_none(),
        "outlives a forgotten Runner"
    );

    // Already issued and valid: nothing to do. Expired before collection: replace.
    let mut issued = *t;
    issued.status = Some(RunnerTokenStatus {
        token_hash: Some("h".into()),
        expires_at: Some(Time(at(100))),
        ..Default::default()
    });
    let p = plan(&r, Some(&session(None, false)), Some(&issued), None, at(10));
    assert_eq!(p.issued, IssuedToken::Keep);
    let p = plan(
        &r,
        Some(&session(None, false)),
        Some(&issued),
        None,
        at(100),
    );
    assert_eq!(p.issued, IssuedToken::Replace);

    // A runner that holds a token needs none, and an undecided one gets none.
    let p = plan(&r, Some(&session(Some("t"), true)), None, None, at(10));
    assert_eq!(p.issued, IssuedToken::Keep);
    let p = plan(
        &runner(None, false),
        Some(&session(None, false)),
        None,
        None,
        at(10),
    );
    assert_eq!(p.issued, IssuedToken::Keep);

    // Registered with a pool token: a token of its own, owned by the pool token
    // (deleting the pool revokes it), unless rejected.
    let mut pool = RunnerToken::new("pool", Default::default());
    pool.metadata.uid = Some("pool-uid".into());
    let mut through_pool = session(Some("pool"), false);
    through_pool.own_token = false;
    let p = plan(
        &runner(None, false),
        Some(&through_pool),
        None,
        Some(&pool),
        at(10),
    );
    let IssuedToken::Create(t) = &p.issued else {
        panic!("no token issued: {:?}", p.issued);
    };
    assert_eq!(t.spec.runner_name.as_deref(), Some("r1"));
    let owners = t.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.first().map(|o| o.uid.as_str()), Some("pool-uid"));
    let rejected = runner(Some(AdoptionDecision::Rejected), false);
    let p = plan(&rejected, Some(&through_pool), None, Some(&pool), at(10));
    assert_eq!(p.issued, IssuedToken::Keep);
}

#[test]
fn rejecting_a_connected_runner_closes_its_channel() {
    let p = plan(
        &runner(Some(AdoptionDecision::Rejected), false),
        Some(&session(Some("t"), true)),
        None,
        None,
        at(1),
    );
    assert!(p.close.is_some());
    let p = plan(
        &runner(Some(AdoptionDecision::Rejected), false),
        Some(&session(Some("t"), false)),
        None,
        None,
        at(1),
    );
    assert!(p.close.is_none());
}

#[test]
fn decommission_annotation() {
    let mut r = runner(None, false);
    assert!(!decommissioned(&r));
    r.metadata.annotations = Some([(DECOMMISSION_ANNOTATION.to_owned(), "true".to_owned())].into());
    assert!(decommissioned(&r));
}

#[test]
fn a_runner_whose_channel_ended_is_idle_in_its_status() {
    let r = runner(Some(AdoptionDecision::Adopted), false);
    let mut sess = session(Some("t"), false);
    let never = plan(&r, Some(&sess), None, None, at(10));
    assert_eq!(cond(&never, "Connected"), s("False", "Disconnected"));
    sess.idle = true;
    let idle = plan(&r, Some(&sess), None, None, at(10));
    assert_eq!(cond(&idle, "Connected"), s("False", "Idle"));
    assert_eq!(cond(&idle, "Ready"), s("False", "NotConnected"));
}

#[test]
fn decommission_waits_for_the_runner_to_connect() {
    let mut r = runner(Some(AdoptionDecision::Adopted), false);
    r.metadata.annotations = Some([(DECOMMISSION_ANNOTATION.to_owned(), "true".to_owned())].into());
    let cases = [
        (
            None,
            Decommission::WhenConnected,
            s("False", "Decommissioning"),
        ),
        (
            Some(session(Some("t"), false)),
            Decommission::WhenConnected,
            s("False", "Decommissioning"),
        ),
        (
            Some(session(Some("t"), true)),
            Decommission::Now,
            s("True", "Ready"),
        ),
    ];
    for (sess, want, ready) in cases {
        let p = plan(&r, sess.as_ref(), None, None, at(10));
        assert_eq!(p.decommission, want, "{sess:?}");
        assert_eq!(cond(&p, "Ready"), ready, "{sess:?}");
    }
    let plain = plan(
        &runner(None, false),
        Some(&session(Some("t"), true)),
        None,
        None,
        at(10),
    );
    assert_eq!(plain.decommission, Decommission::No);
}
