//! Findings about the transport and the users' side of the API, replayed:
//!
//! | finding | attack | answer |
//! |---|---|---|
//! | M3 | a client that never finishes its headers | disconnected after the header-read timeout (10 s), not 90 s |
//! | M4 | a log read with a Kubernetes token minted for the API server, not for Baton | 401 (the TokenReview refuses the audience), naming `kubectl create token SA --audience baton`; the same account's baton token reads |

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use baton::crd::job::JobPhase;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::jobs::{apply, job, jobs, phase_is, read_log, sa_token, setup};
use crate::procs::Controller;
use crate::support::{in_namespace, wait_for};

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_dropped() {
    in_namespace("atk-slow", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        let mut tcp = tokio::net::TcpStream::connect(&ctl.addr).await?;
        tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: baton\r\nX-Slow: ")
            .await?;
        let started = Instant::now();
        let mut buf = [0u8; 256];
        // Closed by the server: EOF (or a reset), with no answer to a request it never got.
        let read = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf))
            .await
            .context("still connected after 30 s")?;
        let waited = started.elapsed();
        ensure!(
            matches!(read, Ok(0) | Err(_)) || buf.starts_with(b"HTTP/1.1 408"),
            "the server answered: {:?}",
            String::from_utf8_lossy(&buf)
        );
        ensure!(
            waited >= Duration::from_secs(8) && waited <= Duration::from_secs(20),
            "dropped after {waited:?}"
        );
        println!("FIGURE slow client dropped after {waited:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_token_for_the_api_server_does_not_read_logs() {
    in_namespace("atk-aud", |ns| async move {
        let s = setup(&ns).await?;
        let steps =
            serde_json::json!([{ "name": "say", "image": "busybox", "script": "echo secret-ish" }]);
        apply(&ns, &job("talk", "pool=e2e", steps)?).await?;
        wait_for(&jobs(&ns), "talk", phase_is(JobPhase::Succeeded), 60).await?;
        let for_baton = sa_token(&ns, "reader", true).await?;
        let sas: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
        // The same account, a token for the API server's own audience.
        let tr = sas
            .create_token_request(
                "reader",
                &PostParams::default(),
                &TokenRequest {
                    spec: TokenRequestSpec {
                        expiration_seconds: Some(600),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await?;
        let for_api_server = tr.status.map(|st| st.token).context("token")?;

        let (code, body) =
            read_log(&s.ctl.url, &ns.name, "talk", "say", Some(&for_api_server)).await?;
        // The API server itself refuses the audience; the answer says how to mint one.
        ensure!(
            code == 401 && body.contains("--audience baton"),
            "API-server token: {code} {body}"
        );
        let (code, body) = read_log(&s.ctl.url, &ns.name, "talk", "say", Some(&for_baton)).await?;
        ensure!(
            code == 200 && body.contains("secret-ish"),
            "baton token: {code} {body}"
        );
        Ok(())
    })
    .await;
}
