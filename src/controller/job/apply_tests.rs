#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What `apply` sends to the API server and the runner, against a mocked API
//! server: a status write that meets a newer version changes nothing else.

use std::time::Duration;

use super::*;
use crate::controller::fixtures::{json_response, mocked_context, status_response};
use crate::controller::job::{AFTER_CONFLICT, ASSIGN_RESEND, Note, Recent};
use crate::crd::job::{JobPhase, JobStatus};
use crate::crd::{JobSpec, Step};
use crate::server::hub::{Control, RunnerKey};

fn queued_job() -> Job {
    let mut j = Job::new(
        "j",
        JobSpec {
            steps: vec![Step {
                name: "a".into(),
                image: "busybox".into(),
                script: Some("true".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    j.metadata.namespace = Some("ns".into());
    j.metadata.resource_version = Some("7".into());
    j
}

fn assign_plan() -> JobPlan {
    JobPlan {
        status: Some(JobStatus {
            phase: Some(JobPhase::Assigned),
            runner: Some("r1".into()),
            epoch: Some(1),
            ..Default::default()
        }),
        note: Some(Note {
            warning: false,
            reason: "Assigned",
            message: "assigned to runner r1 at epoch 1".into(),
        }),
        tell: Some(Tell::Assign {
            runner: "r1".into(),
            epoch: 1,
        }),
        assigned: Some(("r1".into(), 1)),
        kick_namespace: false,
        kick_jobs: vec![],
        forget_away: false,
        clean_up: None,
        delete: false,
        requeue: Requeue::After(ASSIGN_RESEND),
    }
}

#[tokio::test]
async fn an_assignment_that_meets_a_conflict_tells_no_runner() {
    let (ctx, mut api) = mocked_context("conflict");
    let (_id, mut runner) = ctx.hub.connect(&RunnerKey::new("ns", "r1"), "t", false);
    let server = tokio::spawn(async move {
        let (req, send) = api.next_request().await.expect("the status write");
        assert_eq!(req.method(), "PUT");
        assert_eq!(
            req.uri().path(),
            "/apis/baton.dev/v1alpha1/namespaces/ns/jobs/j/status"
        );
        send.send_response(status_response(409, "Conflict"));
        // Nothing else may be asked (no Event): the handle sees no second request.
        tokio::time::timeout(Duration::from_millis(300), api.next_request())
            .await
            .is_err()
    });
    let recent = tokio::sync::Mutex::new(Recent::default());
    let (job, plan) = (queued_job(), assign_plan());
    let reserved = Reservation::take(&recent, &mut *recent.lock().await, &job, &plan);
    assert_eq!(
        recent.lock().await.0.len(),
        1,
        "room taken before the write"
    );
    let action = apply(&ctx, &job, plan, reserved).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(AFTER_CONFLICT),
        "looks again when the newer Job arrives (at the latest after AFTER_CONFLICT)"
    );
    assert!(runner.try_recv().is_err(), "the runner was told nothing");
    assert!(recent.lock().await.0.is_empty(), "the room was given back");
    assert!(
        server.await.unwrap(),
        "an Event was published for a write that never landed"
    );
}

#[tokio::test]
async fn an_assignment_that_lands_is_told_and_remembered() {
    let (ctx, mut api) = mocked_context("landed");
    let (_id, mut runner) = ctx.hub.connect(&RunnerKey::new("ns", "r1"), "t", false);
    let server = tokio::spawn(async move {
        let (req, send) = api.next_request().await.expect("the status write");
        assert_eq!(req.method(), "PUT");
        let mut landed = queued_job();
        landed.status = assign_plan().status;
        send.send_response(json_response(&landed));
        // Then the Event (answered with a failure: publishing is best effort).
        let (req, send) = api.next_request().await.expect("the Event");
        assert_eq!(req.method(), "POST");
        assert!(req.uri().path().contains("/events"), "{}", req.uri());
        send.send_response(status_response(500, "InternalError"));
    });
    let recent = tokio::sync::Mutex::new(Recent::default());
    let (job, plan) = (queued_job(), assign_plan());
    let reserved = Reservation::take(&recent, &mut *recent.lock().await, &job, &plan);
    let action = apply(&ctx, &job, plan, reserved).await.unwrap();
    assert_eq!(action, Action::requeue(ASSIGN_RESEND));
    let told = runner.try_recv().expect("the runner was told");
    assert_eq!(
        told,
        Control::Assign {
            namespace: "ns".into(),
            name: "j".into(),
            epoch: 1
        }
    );
    assert_eq!(recent.lock().await.0.len(), 1, "the room stays taken");
    server.await.unwrap();
}
