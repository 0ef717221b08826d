//! The routes behind a proxy that names each user (`--proxy-user-header`), over a
//! mocked API server whose SubjectAccessReviews allow only alice, in namespace ci:
//! no user is 401, rows and buttons follow the reviews of the user asking, and a
//! change goes through the client made for that user.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::dashboard::access::Access;
use crate::dashboard::guard::{Guard, TOKEN_HEADER};
use crate::dashboard::live::Live;
use crate::dashboard::proxy_user::{Identity, ProxyUsers};
use http::{Request, Response as HttpResponse};
use kube::client::Body;
use std::sync::Mutex;
use warp::http::HeaderName;

const TOKEN: &str = "feedc0de";
const HOST: &str = "baton.example.com";

/// What the mock saw: (method, uri, body); whom clients were made for.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, String, String)>>,
    clients_for: Mutex<Vec<Identity>>,
}

fn dash() -> (Arc<Dash>, Arc<Seen>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, HttpResponse<Body>>();
    let seen = Arc::new(Seen::default());
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (method, uri) = (req.method().to_string(), req.uri().to_string());
            let body = req.into_body().collect_bytes().await.unwrap_or_default();
            let body = String::from_utf8_lossy(&body).into_owned();
            send.send_response(answer(&method, &uri, &body));
            log.requests.lock().unwrap().push((method, uri, body));
        }
    });
    let client = kube::Client::new(svc, "default");
    let made = seen.clone();
    let mock = client.clone();
    let proxy = ProxyUsers {
        user_header: HeaderName::from_static("x-forwarded-user"),
        groups_header: Some(HeaderName::from_static("x-forwarded-groups")),
        client_as: Box::new(move |id: &Identity| {
            made.clients_for.lock().unwrap().push(id.clone());
            Ok(mock.clone())
        }),
    };
    let d = Dash {
        live: Live::start(&client, None),
        access: Access::new(client.clone()),
        guard: Arc::new(Guard::new(
            "0.0.0.0:8765".parse().unwrap(),
            &[HOST.into()],
            TOKEN.into(),
        )),
        scope: "all namespaces".into(),
        logs: None,
        proxy: Some(Arc::new(proxy)),
        client,
    };
    (Arc::new(d), seen)
}

fn json(code: u16, v: serde_json::Value) -> HttpResponse<Body> {
    HttpResponse::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string().into_bytes()))
        .unwrap()
}

/// Reviews: only alice, only in ci. Lists: Job ci/build. Patches: fine.
/// Anything else (the watches): 403.
fn answer(method: &str, uri: &str, body: &str) -> HttpResponse<Body> {
    if uri.contains("/subjectaccessreviews") {
        let mut review: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let spec = &review["spec"];
        let allowed = spec["user"] == "alice" && spec["resourceAttributes"]["namespace"] == "ci";
        review["status"] = serde_json::json!({ "allowed": allowed });
        return json(201, review);
    }
    let job = serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Job",
        "metadata": { "name": "build", "namespace": "ci", "resourceVersion": "1" },
        "spec": { "steps": [] }
    });
    if method == "GET" && !uri.contains("watch=true") {
        let items = if uri.contains("/jobs") {
            vec![job]
        } else {
            vec![]
        };
        return json(
            200,
            serde_json::json!({
                "apiVersion": "baton.dev/v1alpha1", "kind": "List",
                "metadata": { "resourceVersion": "1" }, "items": items
            }),
        );
    }
    if method == "PATCH" {
        return json(200, job);
    }
    json(
        403,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "forbidden by the mock", "reason": "Forbidden", "code": 403
        }),
    )
}

fn get(path: &str, user: Option<&str>) -> warp::test::RequestBuilder {
    let r = warp::test::request().path(path).header("host", HOST);
    match user {
        Some(u) => r
            .header("x-forwarded-user", u)
            .header("x-forwarded-groups", "devs"),
        None => r,
    }
}

fn text(res: &warp::http::Response<bytes::Bytes>) -> String {
    String::from_utf8_lossy(res.body()).into_owned()
}

#[tokio::test]
async fn without_the_user_header_every_page_and_change_is_401_but_probes_answer() {
    let (d, seen) = dash();
    let r = routes(d);
    for path in [
        "/",
        "/live",
        "/jobs/ci/build",
        "/live/jobs/ci/build",
        "/live/logs/ci/build/a",
    ] {
        let res = get(path, None).reply(&r).await;
        assert_eq!(res.status(), 401, "{path}");
        assert!(text(&res).contains("NoProxyUser"), "{path}");
    }
    let cancel = warp::test::request()
        .method("POST")
        .path("/api/jobs/ci/build/cancel")
        .header("host", HOST)
        .header(TOKEN_HEADER, TOKEN);
    assert_eq!(cancel.reply(&r).await.status(), 401);
    assert_eq!(get("/livez", None).reply(&r).await.status(), 200);
    assert_eq!(get("/static/app.js", None).reply(&r).await.status(), 200);
    let bad = get("/", None)
        .header("x-forwarded-user", "system:admin")
        .reply(&r)
        .await;
    assert_eq!(bad.status(), 400);
    assert!(seen.clients_for.lock().unwrap().is_empty());
}

#[tokio::test]
async fn rows_and_the_cancel_button_follow_the_reviews_of_the_user_asking() {
    let (d, seen) = dash();
    d.live.ready(std::time::Duration::from_secs(10)).await;
    let r = routes(d);
    let alice = text(&get("/", Some("alice")).reply(&r).await);
    assert!(alice.contains(r#"data-job="build""#), "{alice}");
    let bob = text(&get("/", Some("bob")).reply(&r).await);
    assert!(!bob.contains(r#"data-job="build""#), "{bob}");
    let page = text(&get("/jobs/ci/build", Some("alice")).reply(&r).await);
    assert!(page.contains("Cancel Job"), "{page}");
    let page = text(&get("/jobs/ci/build", Some("bob")).reply(&r).await);
    assert!(
        !page.contains("Cancel Job") && page.contains("No Job build"),
        "{page}"
    );
    // Reviews about each user with their groups, never about the dashboard itself.
    let requests = seen.requests.lock().unwrap();
    let reviews: Vec<&String> = requests
        .iter()
        .filter(|(_, uri, _)| uri.contains("accessreviews"))
        .map(|(_, uri, _)| uri)
        .collect();
    assert!(!reviews.is_empty());
    assert!(
        reviews.iter().all(|u| u.contains("/subjectaccessreviews")),
        "{reviews:?}"
    );
    let bodies = requests
        .iter()
        .map(|(_, _, b)| b.as_str())
        .collect::<String>();
    assert!(
        bodies.contains(r#""groups":["devs","system:authenticated"],"#),
        "{bodies}"
    );
}

#[tokio::test]
async fn a_cancel_is_made_with_the_client_made_for_the_proxied_user() {
    let (d, seen) = dash();
    let r = routes(d);
    let res = warp::test::request()
        .method("POST")
        .path("/api/jobs/ci/build/cancel")
        .header("host", HOST)
        .header(TOKEN_HEADER, TOKEN)
        .header("x-forwarded-user", "alice")
        .header("x-forwarded-groups", "ops, devs")
        .reply(&r)
        .await;
    assert_eq!(res.status(), 200, "{}", text(&res));
    let made = seen.clients_for.lock().unwrap().clone();
    let alice = Identity {
        user: "alice".into(),
        groups: vec!["devs".into(), "ops".into()],
    };
    assert_eq!(made, [alice]);
    let requests = seen.requests.lock().unwrap();
    assert!(
        requests
            .iter()
            .any(|(m, uri, _)| m == "PATCH" && uri.contains("/namespaces/ci/jobs/build")),
        "{requests:?}"
    );
}
