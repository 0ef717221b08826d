//! The routes as a browser (or an attacker) reaches them, over a mocked API server:
//! the guards are wired in front of every route, a cancel reaches the API server as
//! the plugin's patch, the API server's refusals come back as they are.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::dashboard::access::Access;
use crate::dashboard::guard::{Guard, TOKEN_HEADER};
use crate::dashboard::live::Live;
use http::{Request, Response as HttpResponse};
use kube::client::Body;
use tokio::sync::mpsc;

const TOKEN: &str = "feedc0de";
const HOST: &str = "127.0.0.1:8765";

/// What the mocked API server saw: method, path and query, body.
type Seen = (String, String, String);

/// A Dash over a mocked API server that lets everything be patched, refuses
/// deletes (403), and answers watches with nothing.
fn dash() -> (Arc<Dash>, mpsc::UnboundedReceiver<Seen>) {
    dash_lists(false)
}

/// [`dash`]; with `lists_ok`, lists of Runners and Jobs are answered (empty).
fn dash_lists(lists_ok: bool) -> (Arc<Dash>, mpsc::UnboundedReceiver<Seen>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, HttpResponse<Body>>();
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (method, uri) = (req.method().to_string(), req.uri().to_string());
            let body = req.into_body().collect_bytes().await.unwrap_or_default();
            let body = String::from_utf8_lossy(&body).into_owned();
            let _ = tx.send((method.clone(), uri.clone(), body.clone()));
            let listed = lists_ok && method == "GET" && !uri.contains("watch=true");
            send.send_response(if listed {
                empty_list()
            } else {
                answer(&method, &uri, &body)
            });
        }
    });
    let client = kube::Client::new(svc, "default");
    let addr = HOST.parse().unwrap();
    let d = Dash {
        live: Live::start(&client, Some("ci")),
        access: Access::new(client.clone()),
        guard: Arc::new(Guard::new(addr, &[], TOKEN.into())),
        scope: "namespace ci".into(),
        logs: None,
        proxy: None,
        client,
    };
    (Arc::new(d), seen)
}

fn empty_list() -> HttpResponse<Body> {
    let list = serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "List",
        "metadata": { "resourceVersion": "1" }, "items": []
    });
    HttpResponse::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(list.to_string().into_bytes()))
        .unwrap()
}

fn answer(method: &str, uri: &str, body: &str) -> HttpResponse<Body> {
    let json = |code: u16, v: serde_json::Value| {
        HttpResponse::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(v.to_string().into_bytes()))
            .unwrap()
    };
    if uri.contains("selfsubjectaccessreviews") {
        let mut review: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        review["status"] = serde_json::json!({ "allowed": true });
        return json(201, review);
    }
    if method == "PATCH" {
        let name = uri
            .split('/')
            .next_back()
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("");
        return json(
            200,
            serde_json::json!({
                "apiVersion": "baton.dev/v1alpha1", "kind": "Job",
                "metadata": { "name": name, "namespace": "ci" },
                "spec": { "steps": [] }
            }),
        );
    }
    json(
        403,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "forbidden by the mock", "reason": "Forbidden", "code": 403
        }),
    )
}

fn reason(res: &warp::http::Response<bytes::Bytes>) -> String {
    let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap_or_default();
    v["reason"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn assets_are_served_from_the_binary_with_a_strict_policy() {
    let (d, _) = dash();
    let r = routes(d);
    let js = warp::test::request()
        .path("/static/app.js")
        .header("host", HOST)
        .reply(&r)
        .await;
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(js.body().as_ref(), APP_JS.as_bytes());
    let csp = js.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let css = warp::test::request()
        .path("/static/app.css")
        .header("host", HOST)
        .reply(&r)
        .await;
    assert_eq!(css.status(), 200);
    assert!(
        std::str::from_utf8(css.body())
            .unwrap()
            .contains("prefers-color-scheme: dark")
    );
    assert_eq!(css.headers()["x-content-type-options"], "nosniff");
    for asset in [APP_JS, APP_CSS] {
        assert!(
            !asset.contains("http://") && !asset.contains("https://"),
            "no CDN"
        );
    }
}

#[tokio::test]
async fn every_route_is_behind_the_host_check_and_refusals_carry_the_policy_too() {
    let (d, _) = dash();
    let r = routes(d);
    for path in [
        "/",
        "/live",
        "/jobs/ci/x",
        "/live/jobs/ci/x",
        "/static/app.js",
        "/livez",
        "/readyz",
    ] {
        let res = warp::test::request()
            .path(path)
            .header("host", "evil.example:8765")
            .reply(&r)
            .await;
        assert_eq!(
            (res.status().as_u16(), reason(&res)),
            (421, "UnknownHost".into()),
            "{path}"
        );
        assert!(
            res.headers().contains_key("content-security-policy"),
            "{path}"
        );
    }
    let post = warp::test::request()
        .method("POST")
        .path("/api/jobs/ci/x/cancel")
        .header("host", "evil.example:8765")
        .header(TOKEN_HEADER, TOKEN);
    assert_eq!(post.reply(&r).await.status(), 421);
}

#[tokio::test]
async fn a_cancel_needs_the_token_then_patches_spec_cancel_with_the_users_client() {
    let (d, mut seen) = dash();
    let r = routes(d);
    let cancel = || {
        warp::test::request()
            .method("POST")
            .path("/api/jobs/ci/build/cancel")
            .header("host", HOST)
            .header("origin", "http://127.0.0.1:8765")
    };
    let refused = cancel().reply(&r).await;
    assert_eq!(
        (refused.status().as_u16(), reason(&refused)),
        (403, "BadToken".into())
    );
    let cross = cancel()
        .header(TOKEN_HEADER, TOKEN)
        .header("origin", "http://evil.example");
    assert_eq!(reason(&cross.reply(&r).await), "CrossOrigin");
    let ok = cancel().header(TOKEN_HEADER, TOKEN).reply(&r).await;
    assert_eq!(ok.status(), 200, "{:?}", ok.body());
    // Among the watches' requests: exactly one patch, the plugin's.
    let mut patches = Vec::new();
    while let Ok(s) = seen.try_recv() {
        if s.0 == "PATCH" {
            patches.push(s);
        }
    }
    assert_eq!(patches.len(), 1, "{patches:?}");
    let (_, uri, body) = &patches[0];
    assert!(
        uri.starts_with("/apis/baton.dev/v1alpha1/namespaces/ci/jobs/build?"),
        "{uri}"
    );
    assert_eq!(body, r#"{"spec":{"cancel":true}}"#);
}

#[tokio::test]
async fn the_api_servers_refusal_comes_back_and_unknown_actions_are_refused() {
    let (d, _) = dash();
    let r = routes(d);
    let post = |path: &str| {
        warp::test::request()
            .method("POST")
            .path(path)
            .header("host", HOST)
            .header(TOKEN_HEADER, TOKEN)
    };
    let forget = post("/api/runners/ci/r1/forget").reply(&r).await;
    assert_eq!(
        (forget.status().as_u16(), reason(&forget)),
        (403, "ApiError".into())
    );
    assert!(
        std::str::from_utf8(forget.body())
            .unwrap()
            .contains("forbidden by the mock")
    );
    let adopt = post("/api/runners/ci/r1/adopt").reply(&r).await;
    assert_eq!(adopt.status(), 200);
    let odd = post("/api/runners/ci/r1/explode").reply(&r).await;
    assert_eq!(
        (odd.status().as_u16(), reason(&odd)),
        (404, "UnknownAction".into())
    );
    let get = warp::test::request()
        .path("/api/runners/ci/r1/adopt")
        .header("host", HOST);
    assert_eq!(get.reply(&r).await.status(), 405);
}

#[tokio::test]
async fn readyz_says_why_until_both_lists_arrive_and_livez_only_that_it_serves() {
    let get = |path: &str| warp::test::request().path(path).header("host", HOST);
    // Lists refused (403): not ready, and the watch's error says why, soon.
    let r = routes(dash().0);
    assert_eq!(get("/livez").reply(&r).await.status(), 200);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let res = get("/readyz").reply(&r).await;
        assert_eq!(
            (res.status().as_u16(), reason(&res)),
            (503, "NotReady".into())
        );
        if std::str::from_utf8(res.body())
            .unwrap()
            .contains("forbidden by the mock")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", res.body());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Lists answered: ready once both are in.
    let r = routes(dash_lists(true).0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while get("/readyz").reply(&r).await.status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let post = warp::test::request()
        .method("POST")
        .path("/readyz")
        .header("host", HOST);
    assert_eq!(post.reply(&r).await.status(), 405);
    let nested = get("/readyz/../jobs/ci/x").reply(&r).await;
    assert_eq!(nested.status(), 404);
}

#[test]
fn the_live_route_keeps_the_filter() {
    let f = JobFilter {
        namespace: Some("ci".into()),
        phase: Some(String::new()),
        label: Some("app=web,tier!=db".into()),
    };
    assert_eq!(query(&f), "namespace=ci&label=app%3Dweb%2Ctier%21%3Ddb");
    assert_eq!(query(&JobFilter::default()), "");
}
