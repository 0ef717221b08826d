//! The content routes: users' uploads (refused before Kubernetes is asked when
//! the request is malformed) and the runner's fenced fetch of its Job's content.

use super::*;
use crate::crd::job::Content;
use crate::store::{Digest, keys};
use sha2::Digest as _;

fn digest(bytes: &[u8]) -> String {
    Digest::of_hash(&sha2::Sha256::digest(bytes)).to_string()
}

fn upload(method: &str, ns: &str, digest: &str, auth: Option<&str>) -> warp::test::RequestBuilder {
    let req = warp::test::request()
        .method(method)
        .path(&format!("/v1/namespaces/{ns}/uploads/{digest}"))
        .header("content-type", "application/zstd");
    match auth {
        Some(auth) => req.header("authorization", auth),
        None => req,
    }
}

#[tokio::test]
async fn malformed_uploads_are_refused_before_kubernetes_is_asked() {
    let mut f = fixture("uploads-hostile");
    f.state.config.artifact_cap = 16;
    let routes = routes(f.state.clone());
    let body = b"0123456789".as_slice();
    let d = digest(body);
    let user = Some("Bearer a-users-jwt");
    let cases = [
        ("PUT", "ns", d.as_str(), None, 401, "TokenMissing"),
        (
            "PUT",
            "ns",
            &d,
            Some("Basic cjE6cHc="),
            401,
            "MalformedToken",
        ),
        ("HEAD", "ns", &d, None, 401, "TokenMissing"),
        ("PUT", "ns", "sha256:xyz", user, 400, "InvalidDigest"),
        ("PUT", "ns", "..", user, 400, "InvalidDigest"),
        ("HEAD", "ns", "sha256:..", user, 400, "InvalidDigest"),
        ("PUT", "NS", &d, user, 400, "InvalidName"),
        ("PUT", "a.b_c%2F", &d, user, 400, "InvalidName"),
        // Well-formed: only Kubernetes can say who this is, and it is away.
        ("PUT", "ns", &d, user, 503, "Unavailable"),
        ("HEAD", "ns", &d, user, 503, "Unavailable"),
    ];
    for (method, ns, digest, auth, status, why) in cases {
        let res = upload(method, ns, digest, auth)
            .body(body)
            .reply(&routes)
            .await;
        let got = (res.status().as_u16(), reason(res.body()));
        // HEAD answers carry no body: the status tells.
        let want_reason = if method == "HEAD" {
            got.1.clone()
        } else {
            why.to_owned()
        };
        assert_eq!(
            got,
            (status, want_reason),
            "{method} {ns} {digest} {auth:?}"
        );
    }
    let big = vec![b'x'; 17];
    let over = upload("PUT", "ns", &digest(&big), user)
        .body(big)
        .reply(&routes)
        .await;
    assert_eq!(over.status(), 413, "over the cap: {}", reason(over.body()));
    let uploads = object_store::path::Path::from(keys::UPLOADS);
    assert!(
        f.state.store.children(&uploads).await.unwrap().is_empty(),
        "nothing refused was stored"
    );
}

impl Fixture {
    /// Job `name` on runner r1 at epoch 1, with `spec.content` naming `bytes`.
    fn job_with_content(&mut self, name: &str, bytes: &[u8]) {
        self.job(name, "r1", 1, JobPhase::Running);
        let key = kube::runtime::reflector::ObjectRef::new(name).within("ns");
        let mut job = (*self.state.jobs.get(&key).unwrap()).clone();
        job.spec.content = Some(Content {
            digest: digest(bytes),
            size: bytes.len() as i64,
        });
        self.jobs.apply_watcher_event(&Event::Apply(job));
    }
}

fn fetch(job: &str, query: &str, auth: &str) -> warp::test::RequestBuilder {
    warp::test::request()
        .path(&format!("/v1/jobs/ns/{job}/content?{query}"))
        .header("authorization", auth)
}

#[tokio::test]
async fn a_runner_fetches_only_the_content_of_the_job_it_holds() {
    let mut f = fixture("uploads-fetch");
    let bytes = b"a packed tree".as_slice();
    f.job_with_content("a", bytes);
    f.job_with_content("lost", b"never uploaded");
    f.job("bare", "r1", 1, JobPhase::Running);
    let key = keys::upload("ns", &Digest::parse(&digest(bytes)).unwrap()).unwrap();
    let body = futures::stream::iter([Ok::<_, String>(bytes::Bytes::from_static(bytes))]);
    f.state.store.put(&key, body, 1024).await.unwrap();
    let routes = routes(f.state.clone());

    let got = fetch("a", "runner=r1&epoch=1", "Bearer tok-r1")
        .reply(&routes)
        .await;
    assert_eq!(got.status(), 200, "{}", reason(got.body()));
    assert_eq!(got.body().as_ref(), bytes);
    assert_eq!(got.headers()["content-length"], "13");

    let cases = [
        (
            "a",
            "runner=r1&epoch=1",
            "Bearer tok-r2",
            403,
            "TokenForAnotherRunner",
        ),
        (
            "a",
            "runner=r1&epoch=1",
            "Bearer tok-pool",
            403,
            "PoolToken",
        ),
        ("a", "runner=r1&epoch=1", "Bearer nope", 401, "TokenUnknown"),
        ("a", "runner=r1&epoch=0", "Bearer tok-r1", 409, "StaleEpoch"),
        ("a", "runner=r1", "Bearer tok-r1", 400, "InvalidQuery"),
        (
            "a",
            "runner=r1&epoch=1&path=/etc",
            "Bearer tok-r1",
            400,
            "InvalidQuery",
        ),
        (
            "bare",
            "runner=r1&epoch=1",
            "Bearer tok-r1",
            404,
            "NoContent",
        ),
        (
            "lost",
            "runner=r1&epoch=1",
            "Bearer tok-r1",
            404,
            "ContentNotFound",
        ),
    ];
    for (job, query, auth, status, why) in cases {
        let res = fetch(job, query, auth).reply(&routes).await;
        assert_eq!(
            (res.status().as_u16(), reason(res.body())),
            (status, why.to_owned()),
            "{job}?{query} {auth}"
        );
    }
}
