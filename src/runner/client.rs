//! The runner's side of the API: registration and the control channel (a
//! server-sent-events stream, parsed here).

use std::path::Path;
use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::domain::ca::{CaError, CaOrigin, parse_ca_pem, read_ca_file};
use crate::domain::identity::{Identity, Purpose};
use crate::protocol::jobs::{
    AppendQuery, AppendResponse, Assignment, ClaimRequest, ClaimResponse, StatusReport,
};
use crate::protocol::{
    CHALLENGE_HEADER, ChallengeResponse, ErrorBody, RegisterRequest, RegisterResponse,
    SIGNATURE_HEADER,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("{doing}: cannot reach the server: {}", with_root_cause(source))]
    Unreachable {
        doing: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// A change archive to upload could not be read here.
    #[error("read the change archive: {0}")]
    Archive(String),
    /// The server answered, and said no.
    #[error("{doing}: the server answered {status} {reason}: {message}")]
    Refused {
        doing: &'static str,
        status: u16,
        reason: String,
        message: String,
    },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What a registration came back with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registration {
    /// 200: registered (Preadopted or Adopted), or handed a token (`token`).
    Registered(RegisterResponse),
    /// 202: wait, then poll again.
    Pending(RegisterResponse),
}

/// Short calls (list, claim, report, log append) under way at once, at most.
/// Without the bound, a runner resuming hundreds of Jobs after a restart opened
/// a connection per Job to the controller, which held each one's buffers (150
/// MiB for a thousand, issue 14); the calls now queue here instead.
pub const CALLS_IN_FLIGHT: usize = 16;

/// HTTP client of one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    calls: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Client {
    pub fn new(server: &str) -> Result<Self, ClientError> {
        Self::with_ca(server, None)
    }

    /// Trusting the CA certificate(s) in `ca_file` as well as the usual roots.
    pub fn with_ca(server: &str, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        Self::with_cas(server, ca_file, None)
    }

    /// Trusting the CA certificate(s) in `ca_file` and in the PEM text `ca_pem`
    /// (both when both are given) as well as the usual roots.
    pub fn with_cas(
        server: &str,
        ca_file: Option<&Path>,
        ca_pem: Option<&str>,
    ) -> Result<Self, ClientError> {
        // Idle connections go before the server's 10 s keep-alive (its header-read
        // timeout) closes them under a request.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(5));
        let mut cas = Vec::new();
        if let Some(path) = ca_file {
            cas.push((CaOrigin::File(path.to_owned()), read_ca_file(path)?));
        }
        if let Some(pem) = ca_pem {
            cas.push((CaOrigin::Pem, parse_ca_pem(pem.as_bytes(), &CaOrigin::Pem)?));
        }
        for (origin, ders) in cas {
            for der in ders {
                let ca = reqwest::Certificate::from_der(&der).map_err(|e| CaError::Bad {
                    origin: origin.clone(),
                    reason: e.to_string(),
                })?;
                builder = builder.add_root_certificate(ca);
            }
        }
        let http = builder.build().map_err(ClientError::Build)?;
        Ok(Self {
            http,
            base: server.trim_end_matches('/').to_owned(),
            calls: std::sync::Arc::new(tokio::sync::Semaphore::new(CALLS_IN_FLIGHT)),
        })
    }

    /// A fresh challenge to sign (each is good once, for a minute).
    async fn challenge(&self) -> Result<String, ClientError> {
        const DOING: &str = "ask for a challenge";
        let res = self
            .http
            .get(format!("{}/v1/challenge", self.base))
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        let body: ChallengeResponse = Self::json_or_refused(DOING, res).await?;
        Ok(body.challenge)
    }

    /// Register, proving with `identity` that this runner holds its key.
    pub async fn register(
        &self,
        req: &RegisterRequest,
        token: Option<&str>,
        identity: &Identity,
    ) -> Result<Registration, ClientError> {
        const DOING: &str = "register";
        let challenge = self.challenge().await?;
        let req = RegisterRequest {
            public_key: identity.public_key(),
            signature: identity.sign(Purpose::Register, &challenge, &req.name),
            challenge,
            ..req.clone()
        };
        let mut r = self
            .http
            .post(format!("{}/v1/register", self.base))
            .timeout(Duration::from_secs(15))
            .json(&req);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let res = r.send().await.map_err(|source| ClientError::Unreachable {
            doing: DOING,
            source,
        })?;
        let status = res.status().as_u16();
        if status == 200 || status == 202 {
            let body: RegisterResponse =
                res.json()
                    .await
                    .map_err(|source| ClientError::Unreachable {
                        doing: DOING,
                        source,
                    })?;
            return Ok(if status == 200 {
                Registration::Registered(body)
            } else {
                Registration::Pending(body)
            });
        }
        Err(refused(DOING, res).await)
    }

    /// Open the control channel; the stream yields events until the server ends it
    /// or the connection breaks.
    pub async fn control(
        &self,
        name: &str,
        namespace: &str,
        token: &str,
        identity: &Identity,
        direct_only: bool,
    ) -> Result<impl Stream<Item = Result<SseEvent, ClientError>> + use<>, ClientError> {
        const DOING: &str = "open the control channel";
        let challenge = self.challenge().await?;
        let signature = identity.sign(Purpose::Control, &challenge, name);
        let res = self
            .http
            .get(format!("{}/v1/control", self.base))
            .query(&control_query(name, namespace, direct_only))
            .header("accept", "text/event-stream")
            .header(CHALLENGE_HEADER, challenge)
            .header(SIGNATURE_HEADER, signature)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                doing: DOING,
                source,
            })?;
        if res.status().as_u16() != 200 {
            return Err(refused(DOING, res).await);
        }
        let mut parser = SseParser::default();
        Ok(res
            .bytes_stream()
            .map(move |chunk| match chunk {
                Ok(bytes) => Ok(parser.push(&bytes)),
                Err(source) => Err(ClientError::Unreachable {
                    doing: "read the control channel",
                    source,
                }),
            })
            .flat_map(|r| match r {
                Ok(events) => futures::stream::iter(events.into_iter().map(Ok).collect::<Vec<_>>()),
                Err(e) => futures::stream::iter(vec![Err(e)]),
            }))
    }
}

/// reqwest says only "error sending request for url (…)"; the root cause (connection
/// refused, an untrusted certificate) is what tells an operator what to fix.
fn with_root_cause(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    if std::ptr::addr_eq(root, e) {
        e.to_string()
    } else {
        format!("{e} ({root})")
    }
}

/// The job calls of the runner API (see [`crate::protocol::jobs`]).
impl Client {
    /// The response if the server answered with success (201 too: an archive
    /// stored for the first time is created); its refusal otherwise.
    async fn ok_or_refused(
        doing: &'static str,
        res: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, ClientError> {
        let res = res.map_err(|source| ClientError::Unreachable { doing, source })?;
        if res.status().is_success() {
            Ok(res)
        } else {
            Err(refused(doing, res).await)
        }
    }

    async fn json_or_refused<T: serde::de::DeserializeOwned>(
        doing: &'static str,
        res: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, ClientError> {
        let res = Self::ok_or_refused(doing, res).await?;
        res.json()
            .await
            .map_err(|source| ClientError::Unreachable { doing, source })
    }

    /// A place among the [`CALLS_IN_FLIGHT`], held until the reply is read.
    async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.calls.acquire().await.ok() // never closed
    }

    /// Jobs assigned to this runner.
    pub async fn assignments(
        &self,
        runner: &str,
        namespace: &str,
        token: &str,
    ) -> Result<Vec<Assignment>, ClientError> {
        let _slot = self.slot().await;
        let res = self
            .http
            .get(format!("{}/v1/jobs", self.base))
            .query(&[("runner", runner), ("namespace", namespace)])
            .timeout(Duration::from_secs(15))
            .bearer_auth(token)
            .send()
            .await;
        Self::json_or_refused("list assigned jobs", res).await
    }

    /// Claim an assigned Job: its spec and the log lengths already stored.
    pub async fn claim(
        &self,
        namespace: &str,
        name: &str,
        req: &ClaimRequest,
        token: &str,
    ) -> Result<ClaimResponse, ClientError> {
        let _slot = self.slot().await;
        let res = self
            .http
            .post(format!("{}/v1/jobs/{namespace}/{name}/claim", self.base))
            .timeout(Duration::from_secs(15))
            .bearer_auth(token)
            .json(req)
            .send()
            .await;
        Self::json_or_refused("claim the job", res).await
    }

    /// Report a step's or the Job's change.
    pub async fn report(
        &self,
        namespace: &str,
        name: &str,
        report: &StatusReport,
        token: &str,
    ) -> Result<(), ClientError> {
        let _slot = self.slot().await;
        let res = self
            .http
            .post(format!("{}/v1/jobs/{namespace}/{name}/status", self.base))
            .timeout(Duration::from_secs(30))
            .bearer_auth(token)
            .json(report)
            .send()
            .await;
        Self::json_or_refused::<serde_json::Value>("report job status", res)
            .await
            .map(|_| ())
    }

    /// Upload a step's change archive (the file at `path`) under its `digest`,
    /// streamed; the server keeps it only if the content hashes to the digest.
    pub async fn upload_archive(
        &self,
        (namespace, name): (&str, &str),
        (runner, epoch): (&str, i64),
        digest: &str,
        path: &std::path::Path,
        token: &str,
    ) -> Result<(), ClientError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::Archive(format!("open {}: {e}", path.display())))?;
        let size = file
            .metadata()
            .await
            .map_err(|e| ClientError::Archive(format!("stat {}: {e}", path.display())))?
            .len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let res = self
            .http
            .put(format!(
                "{}/v1/jobs/{namespace}/{name}/artifacts/{digest}",
                self.base
            ))
            .query(&[("runner", runner), ("epoch", &epoch.to_string())])
            .timeout(Duration::from_secs(600))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/zstd")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await;
        Self::json_or_refused::<serde_json::Value>("upload a change archive", res)
            .await
            .map(|_| ())
    }

    /// The Job's content (`spec.content`), as a streaming response.
    pub async fn fetch_content(
        &self,
        (namespace, name): (&str, &str),
        (runner, epoch): (&str, i64),
        token: &str,
    ) -> Result<reqwest::Response, ClientError> {
        const DOING: &str = "fetch the Job's content";
        let res = self
            .http
            .get(format!("{}/v1/jobs/{namespace}/{name}/content", self.base))
            .query(&[("runner", runner), ("epoch", &epoch.to_string())])
            .timeout(Duration::from_secs(600))
            .bearer_auth(token)
            .send()
            .await;
        Self::ok_or_refused(DOING, res).await
    }

    /// Append a chunk of a step's log at `q.offset`.
    pub async fn append_log(
        &self,
        namespace: &str,
        name: &str,
        q: &AppendQuery,
        bytes: Vec<u8>,
        token: &str,
    ) -> Result<AppendResponse, ClientError> {
        let _slot = self.slot().await;
        let res = self
            .http
            .post(format!("{}/v1/jobs/{namespace}/{name}/logs", self.base))
            .query(q)
            .timeout(Duration::from_secs(30))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await;
        Self::json_or_refused("append a step log", res).await
    }
}

async fn refused(doing: &'static str, res: reqwest::Response) -> ClientError {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    let (reason, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => (b.error, b.message),
        Err(_) => (String::new(), text.chars().take(200).collect()),
    };
    ClientError::Refused {
        doing,
        status,
        reason,
        message,
    }
}

/// One server-sent event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Incremental SSE parser: feed it chunks as they come, get whole events out.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let ev = std::mem::take(&mut self.current);
                if !ev.event.is_empty() || !ev.data.is_empty() {
                    out.push(ev);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.current.event = value.to_owned(),
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                _ => {} // comments (":..."), id, retry
            }
        }
        out
    }
}

/// The control channel's query: `directOnly` only when set, as a server that
/// predates it refuses fields it does not know.
fn control_query<'a>(
    name: &'a str,
    namespace: &'a str,
    direct_only: bool,
) -> Vec<(&'a str, &'a str)> {
    let mut query = vec![("name", name), ("namespace", namespace)];
    if direct_only {
        query.push(("directOnly", "true"));
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event:hello\ndata:{\"disabled\":").is_empty());
        let evs = p.push(b"false}\n\n: keep-alive\n\nevent: ping\r\ndata: {}\r\n\r\nevent:cl");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "hello".into(),
                    data: "{\"disabled\":false}".into()
                },
                SseEvent {
                    event: "ping".into(),
                    data: "{}".into()
                },
            ]
        );
        let evs = p.push(b"ose\ndata:{\"event\":\"close\",\"reason\":\"bye\"}\n\n");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].event, "close");
        assert_eq!(
            crate::protocol::ControlEvent::decode(&evs[0].event, &evs[0].data),
            Ok(crate::protocol::ControlEvent::Close {
                reason: "bye".into()
            })
        );
    }

    #[test]
    fn ca_pem_text_is_checked_like_a_ca_file() {
        let ca = include_str!("../controller/on_demand_test_ca.pem");
        assert!(Client::with_cas("https://h:1", None, Some(ca)).is_ok());
        let cases = [
            (
                "",
                "the CA PEM of --ca-pem (BATON_CA_PEM) holds no PEM certificate",
            ),
            (
                "/etc/baton/tls/ca.crt",
                "the CA PEM of --ca-pem (BATON_CA_PEM) holds no PEM certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "the CA PEM of --ca-pem (BATON_CA_PEM) holds a bad certificate",
            ),
        ];
        for (pem, want) in cases {
            let err = Client::with_cas("https://h:1", None, Some(pem))
                .err()
                .expect("refused")
                .to_string();
            assert!(err.starts_with(want), "{pem:?}: {err}");
        }
        // With a file too, a bad file is named as the file.
        let err = Client::with_cas(
            "https://h:1",
            Some(Path::new("/nonexistent/ca.crt")),
            Some(ca),
        )
        .err()
        .expect("refused")
        .to_string();
        assert!(
            err.starts_with("read the CA file /nonexistent/ca.crt"),
            "{err}"
        );
    }

    #[test]
    fn multi_line_data_is_joined() {
        let mut p = SseParser::default();
        let evs = p.push(b"data:a\ndata:b\n\n");
        assert_eq!(evs[0].data, "a\nb");
    }
}

#[cfg(test)]
#[path = "client_bound_tests.rs"]
mod bound_tests;
