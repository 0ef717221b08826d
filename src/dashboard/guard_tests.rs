//! Hostile requests against the guard filters, through warp's test client.
#![allow(clippy::unwrap_used)]
use super::*;

const TOKEN: &str = "0123456789abcdef";

fn guard(addr: &str, public: &[&str]) -> Arc<Guard> {
    let public: Vec<String> = public.iter().map(|s| (*s).to_owned()).collect();
    Arc::new(Guard::new(addr.parse().unwrap(), &public, TOKEN.into()))
}

/// GET /read behind the host check; POST /change behind both.
fn routes(g: Arc<Guard>) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let read = warp::path("read").and(warp::get()).map(|| "read");
    let change_ = warp::path("change")
        .and(warp::post())
        .and(change(g.clone()))
        .map(|| "changed");
    host(g).and(read.or(change_)).recover(recover)
}

async fn status_and_reason(req: warp::test::RequestBuilder, g: Arc<Guard>) -> (u16, String) {
    let res = req.reply(&routes(g)).await;
    let status = res.status().as_u16();
    let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap_or_default();
    let reason = body["reason"].as_str().unwrap_or("").to_owned();
    (status, reason)
}

#[tokio::test]
async fn only_the_bound_loopback_names_are_answered() {
    let g = guard("127.0.0.1:8765", &[]);
    for ok in ["127.0.0.1:8765", "localhost:8765", "LOCALHOST:8765"] {
        let res = warp::test::request()
            .path("/read")
            .header("host", ok)
            .reply(&routes(g.clone()))
            .await;
        assert_eq!(
            (res.status().as_u16(), res.body().as_ref()),
            (200, &b"read"[..]),
            "{ok}"
        );
    }
    // A rebinding attacker's name, the right name on another port, no port, no Host.
    for bad in [
        Some("evil.example:8765"),
        Some("127.0.0.1:9999"),
        Some("localhost"),
        Some("127.0.0.1.evil.example:8765"),
        None,
    ] {
        let mut req = warp::test::request().path("/read");
        if let Some(h) = bad {
            req = req.header("host", h);
        }
        assert_eq!(
            status_and_reason(req, g.clone()).await,
            (421, "UnknownHost".to_owned()),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn ipv6_loopback_and_proxy_names_are_answered_as_configured() {
    let g = guard("[::1]:8000", &[]);
    let req = |h: &str| warp::test::request().path("/read").header("host", h);
    assert_eq!(status_and_reason(req("[::1]:8000"), g.clone()).await.0, 200);
    assert_eq!(
        status_and_reason(req("localhost:8000"), g.clone()).await.0,
        200
    );
    let g = guard("0.0.0.0:8000", &["baton.example.com"]);
    assert_eq!(
        status_and_reason(req("baton.example.com"), g.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        status_and_reason(req("localhost:8000"), g.clone()).await.0,
        421,
        "not loopback"
    );
    assert_eq!(status_and_reason(req("other.example.com"), g).await.0, 421);
}

fn post(host: &str) -> warp::test::RequestBuilder {
    warp::test::request()
        .method("POST")
        .path("/change")
        .header("host", host)
}

#[tokio::test]
async fn a_change_needs_the_token_and_the_same_origin() {
    let g = guard("127.0.0.1:8765", &[]);
    let h = "127.0.0.1:8765";
    let ok = post(h)
        .header(TOKEN_HEADER, TOKEN)
        .header("origin", "http://127.0.0.1:8765")
        .header("sec-fetch-site", "same-origin");
    assert_eq!(status_and_reason(ok, g.clone()).await, (200, String::new()));
    // Tools that send neither Origin nor Sec-Fetch-Site still need the token.
    let bare = post(h).header(TOKEN_HEADER, TOKEN);
    assert_eq!(status_and_reason(bare, g.clone()).await.0, 200);

    let cases = [
        (post(h), "BadToken"),
        (post(h).header(TOKEN_HEADER, ""), "BadToken"),
        (post(h).header(TOKEN_HEADER, "0123456789abcdeX"), "BadToken"),
        (
            post(h).header(TOKEN_HEADER, "0123456789abcdef0"),
            "BadToken",
        ),
        (
            post(h)
                .header(TOKEN_HEADER, TOKEN)
                .header("origin", "http://evil.example"),
            "CrossOrigin",
        ),
        (
            post(h).header(TOKEN_HEADER, TOKEN).header("origin", "null"),
            "CrossOrigin",
        ),
        (
            post(h)
                .header(TOKEN_HEADER, TOKEN)
                .header("origin", "http://localhost:9999"),
            "CrossOrigin",
        ),
        (
            post(h)
                .header(TOKEN_HEADER, TOKEN)
                .header("sec-fetch-site", "cross-site"),
            "CrossSite",
        ),
        (
            post(h)
                .header(TOKEN_HEADER, TOKEN)
                .header("sec-fetch-site", "same-site"),
            "CrossSite",
        ),
        // A simple cross-site form post: no custom header can ride along.
        (
            post(h)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("origin", "http://evil.example")
                .body("x-baton-token=0123456789abcdef"),
            "BadToken",
        ),
    ];
    for (req, want) in cases {
        assert_eq!(
            status_and_reason(req, g.clone()).await,
            (403, want.to_owned())
        );
    }
}

#[tokio::test]
async fn a_change_to_a_rebound_name_is_refused_before_its_token_is_looked_at() {
    let g = guard("127.0.0.1:8765", &[]);
    let req = post("evil.example:8765").header(TOKEN_HEADER, TOKEN);
    assert_eq!(
        status_and_reason(req, g).await,
        (421, "UnknownHost".to_owned())
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_refusals() {
    let g = guard("127.0.0.1:8765", &[]);
    let h = "127.0.0.1:8765";
    let missing = warp::test::request().path("/nope").header("host", h);
    assert_eq!(status_and_reason(missing, g.clone()).await.0, 404);
    let get_change = warp::test::request().path("/change").header("host", h);
    assert_eq!(status_and_reason(get_change, g).await.0, 405);
}

#[test]
fn the_guard_names_its_hosts_in_the_refusal() {
    let g = Guard::new("127.0.0.1:80".parse().unwrap(), &[], "t".into());
    let e = g.check_host(Some("x")).unwrap_err();
    assert!(
        e.message.contains("127.0.0.1:80, localhost:80"),
        "{}",
        e.message
    );
    assert_eq!(g.token(), "t");
}
