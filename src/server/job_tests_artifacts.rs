//! The change-archive routes: what a runner may upload, and the refusals.

use super::*;
use crate::crd::artifacts::StepArtifacts;
use crate::crd::job::StepStatus;
use crate::store::{Digest, JobKey};
use sha2::Digest as _;

fn digest(bytes: &[u8]) -> String {
    Digest::of_hash(&sha2::Sha256::digest(bytes)).to_string()
}

fn put(digest: &str, query: &str) -> warp::test::RequestBuilder {
    put_as(Some("Bearer tok-r1"), digest, query)
}

fn put_as(auth: Option<&str>, digest: &str, query: &str) -> warp::test::RequestBuilder {
    let req = warp::test::request()
        .method("PUT")
        .path(&format!("/v1/jobs/ns/a/artifacts/{digest}?{query}"))
        .header("content-type", "application/zstd");
    match auth {
        Some(auth) => req.header("authorization", auth),
        None => req,
    }
}

#[tokio::test]
async fn an_archive_lands_once_and_only_as_the_digest_it_was_sent_as() {
    let mut f = fixture("artifacts-land");
    f.job("a", "r1", 1, JobPhase::Running);
    let routes = routes(f.state.clone());
    let body = b"an archive, as far as the server cares".as_slice();
    let d = digest(body);
    let first = put(&d, "runner=r1&epoch=1").body(body).reply(&routes).await;
    assert_eq!(first.status(), 201, "{}", reason(first.body()));
    let again = put(&d, "runner=r1&epoch=1").body(body).reply(&routes).await;
    assert_eq!(
        again.status(),
        200,
        "the same archive again: {}",
        reason(again.body())
    );
    let stored: serde_json::Value = serde_json::from_slice(again.body()).unwrap();
    assert_eq!(stored["stored"], false);

    // Content that is not what the digest says is dropped, not stored.
    let claimed = digest(b"something else");
    let lie = put(&claimed, "runner=r1&epoch=1")
        .body(body)
        .reply(&routes)
        .await;
    assert_eq!(
        (lie.status().as_u16(), reason(lie.body())),
        (422, "DigestMismatch".into())
    );
    let key = JobKey::new("ns", "a", "uid-a").unwrap();
    let missing = key.archive(&Digest::parse(&claimed).unwrap());
    assert_eq!(f.state.store.size(&missing).await.unwrap(), None);
    let kept = key.archive(&Digest::parse(&d).unwrap());
    assert_eq!(
        f.state.store.size(&kept).await.unwrap(),
        Some(body.len() as u64)
    );
}

#[tokio::test]
async fn hostile_and_careless_uploads_are_refused_with_their_reason() {
    let mut f = fixture("artifacts-hostile");
    f.state.config.artifact_cap = 16;
    f.job("a", "r1", 2, JobPhase::Running);
    let routes = routes(f.state.clone());
    let body = b"0123456789".as_slice();
    let d = digest(body);
    let upper = format!("sha256:{}", "A".repeat(64));
    let cases: Vec<(&str, warp::test::RequestBuilder, u16, &str)> = vec![
        (
            "no token",
            put_as(None, &d, "runner=r1&epoch=2"),
            401,
            "TokenMissing",
        ),
        (
            "a password instead",
            put_as(Some("Basic cjE6cHc="), &d, "runner=r1&epoch=2"),
            401,
            "MalformedToken",
        ),
        (
            "another runner's token",
            put_as(Some("Bearer tok-r2"), &d, "runner=r1&epoch=2"),
            403,
            "TokenForAnotherRunner",
        ),
        (
            "not a digest",
            put("sha256:xyz", "runner=r1&epoch=2"),
            400,
            "InvalidDigest",
        ),
        (
            "upper-case hex",
            put(&upper, "runner=r1&epoch=2"),
            400,
            "InvalidDigest",
        ),
        (
            "an unknown parameter",
            put(&d, "runner=r1&epoch=2&path=/etc"),
            400,
            "InvalidQuery",
        ),
        ("no epoch", put(&d, "runner=r1"), 400, "InvalidQuery"),
        (
            "not an archive",
            put(&d, "runner=r1&epoch=2").header("content-type", "text/html"),
            415,
            "UnsupportedMediaType",
        ),
        (
            "a stale epoch",
            put(&d, "runner=r1&epoch=1"),
            409,
            "StaleEpoch",
        ),
    ];
    for (what, req, status, why) in cases {
        let res = req.body(body).reply(&routes).await;
        assert_eq!(
            (res.status().as_u16(), reason(res.body())),
            (status, why.to_owned()),
            "{what}"
        );
    }
    let big = vec![b'x'; 17];
    let over = put(&digest(&big), "runner=r1&epoch=2")
        .body(big)
        .reply(&routes)
        .await;
    assert_eq!(over.status(), 413, "over the cap: {}", reason(over.body()));
    assert!(
        f.state
            .store
            .children(&object_store::path::Path::from("jobs"))
            .await
            .unwrap()
            .is_empty(),
        "nothing refused was stored"
    );
}

#[tokio::test]
async fn downloads_need_a_users_token_and_a_real_digest() {
    let mut f = fixture("artifacts-read");
    f.job("a", "r1", 1, JobPhase::Succeeded);
    let routes = routes(f.state.clone());
    let d = digest(b"x");
    for (auth, digest, status, why) in [
        (None, d.as_str(), 401, "TokenMissing"),
        (Some("Basic abc"), d.as_str(), 401, "MalformedToken"),
        (Some("Bearer t"), "sha256:..", 400, "InvalidDigest"),
    ] {
        let mut req = warp::test::request().path(&format!("/v1/jobs/ns/a/artifacts/{digest}"));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let res = req.reply(&routes).await;
        assert_eq!(
            (res.status().as_u16(), reason(res.body())),
            (status, why.to_owned()),
            "{auth:?} {digest}"
        );
    }
}

#[tokio::test]
async fn a_step_report_may_name_only_an_archive_stored_at_its_size() {
    let mut f = fixture("artifacts-report");
    f.job("a", "r1", 1, JobPhase::Running);
    let job = f
        .state
        .jobs
        .get(&kube::runtime::reflector::ObjectRef::new("a").within("ns"))
        .unwrap();
    let body = b"packed changes".as_slice();
    let d = digest(body);
    let step = |size: i64| StepStatus {
        name: "s".into(),
        artifacts: Some(StepArtifacts {
            digest: d.clone(),
            size,
            added: 1,
            modified: 0,
            deleted: 0,
        }),
        ..Default::default()
    };
    let check = |s: StepStatus| {
        let (state, job) = (f.state.clone(), job.clone());
        async move { super::super::artifacts::check_reported(&state, &job, Some(&s)).await }
    };
    let missing = check(step(14)).await.unwrap_err();
    assert_eq!(missing.reason, "ArtifactsNotStored");
    let routes = routes(f.state.clone());
    let res = put(&d, "runner=r1&epoch=1").body(body).reply(&routes).await;
    assert_eq!(res.status(), 201);
    assert!(check(step(14)).await.is_ok());
    assert_eq!(
        check(step(99)).await.unwrap_err().reason,
        "ArtifactsSizeMismatch"
    );
    assert!(
        check(StepStatus::default()).await.is_ok(),
        "a step without an archive"
    );
}
