//! Bad input to the runner API over real HTTP: a clear 4xx, and nothing created.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Bad input over real HTTP: a clear 4xx, and the server keeps serving.
#[tokio::test]
async fn bad_input_to_the_api_gets_a_clear_4xx() {
    in_namespace("badinput", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        let ok = body_for(&ctl.url, "r1", &ns.name).await?;
        let json = Some("application/json");
        let big = format!(
            r#"{{"name":"r1","runnerId":"e2e-0123456789","version":"{}"}}"#,
            "x".repeat(40_000)
        );
        // (what, body, content type, token, status, reason)
        type Case<'a> = (
            &'a str,
            String,
            Option<&'a str>,
            Option<&'a str>,
            u16,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "malformed JSON",
                "{\"name\":".into(),
                json,
                None,
                400,
                "MalformedJson",
            ),
            (
                "unknown field",
                ok.replace('}', r#","admin":true}"#),
                json,
                None,
                400,
                "UnknownField",
            ),
            ("oversized body", big, json, None, 413, "PayloadTooLarge"),
            (
                "wrong content type",
                ok.clone(),
                Some("text/plain"),
                None,
                415,
                "UnsupportedMediaType",
            ),
            (
                "garbage token",
                ok.clone(),
                json,
                Some("garbage"),
                401,
                "TokenUnknown",
            ),
            (
                "bad name",
                body_for(&ctl.url, "Not_A_Name", &ns.name).await?,
                json,
                None,
                400,
                "InvalidName",
            ),
        ];
        for (what, body, ct, token, status, reason) in cases {
            let (got, text) = register_raw(&ctl.url, &body, ct, token).await?;
            ensure!(
                got == status && text.contains(reason),
                "{what}: {got} {text}"
            );
        }
        // No token on the control channel.
        let res = http()
            .get(format!("{}/v1/control?name=r1", ctl.url))
            .send()
            .await?;
        ensure!(
            res.status().as_u16() == 401,
            "control without token: {}",
            res.status()
        );
        // A streamed body with no Content-Length.
        let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(ok.clone())]);
        let res = http()
            .post(format!("{}/v1/register", ctl.url))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await?;
        ensure!(
            res.status().as_u16() == 411,
            "chunked body: {}",
            res.status()
        );
        // Still healthy, and nothing was created by any of it.
        crate::procs::wait_status(&format!("{}/readyz", ctl.url), 200, 5).await?;
        ensure!(
            runners(&ns)
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
        );
        Ok(())
    })
    .await;
}
