//! The runner API's refusals, one table: every kind of bad input gets a 4xx with
//! a reason, never a panic or a 5xx.
#![allow(clippy::unwrap_used)]

use super::*;

/// Bad input of every kind gets a 4xx with a reason, never a panic or a 5xx.
#[tokio::test]
async fn bad_input_table() {
    let mut f = fixture();
    f.token("good", "tok-good", None, 3600);
    f.token("old", "tok-old", None, -10);
    f.token("other", "tok-other", Some("someone-else"), 3600);
    f.token("own", "tok-r1", Some("r1"), 3600);
    f.runner("rejected", Some(AdoptionDecision::Rejected));
    let st = f.state.clone();
    let routes = routes(f.state.clone());
    let big = format!(
        r#"{{"name":"r1","runnerId":"{ID}","version":"{}"}}"#,
        "x".repeat(20_000)
    );
    let json = "application/json";
    // (what, method, path, content-type, authorization, body, status, reason)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        String,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "POST",
            "/v1/register",
            Some(json),
            None,
            "{\"name\":".into(),
            400,
            "MalformedJson",
        ),
        (
            "not an object",
            "POST",
            "/v1/register",
            Some(json),
            None,
            "42".into(),
            400,
            "MalformedJson",
        ),
        (
            "empty body",
            "POST",
            "/v1/register",
            Some(json),
            None,
            String::new(),
            400,
            "MalformedJson",
        ),
        (
            "unknown field",
            "POST",
            "/v1/register",
            Some(json),
            None,
            format!(r#"{{"name":"r1","runnerId":"{ID}","admin":true}}"#),
            400,
            "UnknownField",
        ),
        (
            "missing field",
            "POST",
            "/v1/register",
            Some(json),
            None,
            r#"{"name":"r1"}"#.into(),
            400,
            "MalformedJson",
        ),
        (
            "bad name",
            "POST",
            "/v1/register",
            Some(json),
            None,
            format!(r#"{{"name":"../etc","runnerId":"{ID}"}}"#),
            400,
            "InvalidName",
        ),
        (
            "oversized body",
            "POST",
            "/v1/register",
            Some(json),
            None,
            big,
            413,
            "PayloadTooLarge",
        ),
        (
            "wrong content type",
            "POST",
            "/v1/register",
            Some("text/plain"),
            None,
            register_body(&st, "r1"),
            415,
            "UnsupportedMediaType",
        ),
        (
            "no content type",
            "POST",
            "/v1/register",
            None,
            None,
            register_body(&st, "r1"),
            415,
            "UnsupportedMediaType",
        ),
        (
            "garbage token",
            "POST",
            "/v1/register",
            Some(json),
            Some("Bearer nonsense"),
            register_body(&st, "r1"),
            401,
            "TokenUnknown",
        ),
        (
            "not a bearer token",
            "POST",
            "/v1/register",
            Some(json),
            Some("Basic dXNlcjpwdw=="),
            register_body(&st, "r1"),
            401,
            "MalformedToken",
        ),
        (
            "expired token",
            "POST",
            "/v1/register",
            Some(json),
            Some("Bearer tok-old"),
            register_body(&st, "r1"),
            401,
            "TokenExpired",
        ),
        (
            "token for another runner",
            "POST",
            "/v1/register",
            Some(json),
            Some("Bearer tok-other"),
            register_body(&st, "r1"),
            401,
            "TokenForAnotherRunner",
        ),
        (
            "rejected runner",
            "POST",
            "/v1/register",
            Some(json),
            Some("Bearer tok-good"),
            register_body(&st, "rejected"),
            403,
            "Rejected",
        ),
        (
            "rejected runner, no token",
            "POST",
            "/v1/register",
            Some(json),
            None,
            register_body(&st, "rejected"),
            403,
            "Rejected",
        ),
        (
            "namespace not served",
            "POST",
            "/v1/register",
            Some(json),
            None,
            signed_body(
                &st,
                "r1",
                &format!(r#""name":"r1","runnerId":"{ID}","namespace":"elsewhere""#),
            ),
            403,
            "NamespaceNotServed",
        ),
        (
            "wrong method",
            "GET",
            "/v1/register",
            None,
            None,
            String::new(),
            405,
            "MethodNotAllowed",
        ),
        (
            "no such route",
            "GET",
            "/v1/nothing",
            None,
            None,
            String::new(),
            404,
            "NotFound",
        ),
        (
            "control without token",
            "GET",
            "/v1/control?name=r1",
            None,
            None,
            String::new(),
            401,
            "TokenMissing",
        ),
        (
            "control with garbage token",
            "GET",
            "/v1/control?name=r1",
            None,
            Some("Bearer nonsense"),
            String::new(),
            401,
            "TokenUnknown",
        ),
        (
            "control, missing name",
            "GET",
            "/v1/control",
            None,
            Some("Bearer tok-good"),
            String::new(),
            400,
            "InvalidQuery",
        ),
        (
            "control, unknown query field",
            "GET",
            "/v1/control?name=r1&x=1",
            None,
            Some("Bearer tok-good"),
            String::new(),
            400,
            "InvalidQuery",
        ),
        (
            "control, bad name",
            "GET",
            "/v1/control?name=R%201",
            None,
            Some("Bearer tok-good"),
            String::new(),
            400,
            "InvalidName",
        ),
        (
            "control, never registered",
            "GET",
            "/v1/control?name=r1",
            None,
            Some("Bearer tok-r1"),
            String::new(),
            404,
            "NotRegistered",
        ),
        (
            "control with a pool token",
            "GET",
            "/v1/control?name=r1",
            None,
            Some("Bearer tok-good"),
            String::new(),
            403,
            "PoolToken",
        ),
        (
            "registration without a key proof",
            "POST",
            "/v1/register",
            Some(json),
            None,
            format!(r#"{{"name":"r1","runnerId":"{ID}"}}"#),
            401,
            "ProofMissing",
        ),
        (
            "registration signed by another key than the one presented",
            "POST",
            "/v1/register",
            Some(json),
            None,
            {
                let (challenge, signature) =
                    proof(&st, &Identity::generate().unwrap(), Purpose::Register, "r1");
                format!(
                    r#"{{"name":"r1","runnerId":"{ID}","publicKey":"{}","challenge":"{challenge}","signature":"{signature}"}}"#,
                    key().public_key()
                )
            },
            401,
            "ProofInvalid",
        ),
        (
            "registration signed for the control channel (replayed across purposes)",
            "POST",
            "/v1/register",
            Some(json),
            None,
            {
                let (challenge, signature) = proof(&st, key(), Purpose::Control, "r1");
                format!(
                    r#"{{"name":"r1","runnerId":"{ID}","publicKey":"{}","challenge":"{challenge}","signature":"{signature}"}}"#,
                    key().public_key()
                )
            },
            401,
            "ProofInvalid",
        ),
        (
            "registration with a challenge this server never issued",
            "POST",
            "/v1/register",
            Some(json),
            None,
            {
                let other = crate::domain::challenge::Challenges::new().unwrap();
                let challenge = other.issue(Timestamp::now().as_second() as u64).unwrap();
                let signature = key().sign(Purpose::Register, &challenge, "r1");
                format!(
                    r#"{{"name":"r1","runnerId":"{ID}","publicKey":"{}","challenge":"{challenge}","signature":"{signature}"}}"#,
                    key().public_key()
                )
            },
            401,
            "ProofInvalid",
        ),
        (
            "control, rejected",
            "GET",
            "/v1/control?name=rejected",
            None,
            Some("Bearer tok-good"),
            String::new(),
            403,
            "Rejected",
        ),
        (
            "control, expired token",
            "GET",
            "/v1/control?name=rejected",
            None,
            Some("Bearer tok-old"),
            String::new(),
            403,
            "Rejected",
        ),
    ];
    for (what, method, path, ct, auth, body, status, reason) in cases {
        let mut req = warp::test::request().method(method).path(path);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let res = req.body(body).reply(&routes).await;
        assert_eq!(
            (res.status().as_u16(), reason_of(&res).await.as_str()),
            (status, reason),
            "{what}"
        );
    }
}
