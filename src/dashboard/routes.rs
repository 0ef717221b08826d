//! The dashboard's routes (warp), every one behind the Host check, the changing
//! ones behind the CSRF check too:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | runners and Jobs (`?namespace=&phase=&label=` filters the Jobs) |
//! | `GET /live?…` | those two lists as server-sent events, on every change |
//! | `GET /jobs/NS/NAME` | a Job's page |
//! | `GET /live/jobs/NS/NAME` | its body as server-sent events |
//! | `GET /live/logs/NS/NAME/STEP` | a step's log, followed (`Last-Event-ID` resumes) |
//! | `POST /api/runners/NS/NAME/ACTION` | adopt, reject, disable, enable, forget |
//! | `POST /api/jobs/NS/NAME/cancel` | `spec.cancel: true` |
//! | `GET /static/app.{css,js}` | the assets, compiled into the binary |
//! | `GET /livez`, `GET /readyz` | the process serves; both watch caches listed once |
//!
//! With `--proxy-user-header`, every route but the probes and the assets first
//! takes whom it acts as from the proxy's headers (401 without a user).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::guard::{self, refusal};
use super::html::{self, Shell};
use super::proxy_user::{self, Who};
use super::rows::{JobFilter, RunnerAction};
use super::state::{self, Dash};
use super::{actions, live, logs};

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// Nothing from elsewhere: no CDN, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// How long a burst of changes is gathered into one update.
const SETTLE: Duration = Duration::from_millis(150);

/// All routes.
pub fn routes(d: Arc<Dash>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let with = || with_dash(d.clone());
    // Whom the request acts as: refused (401) behind a proxy that names no user.
    let who = || proxy_user::who(d.proxy.clone());
    let index = warp::path::end()
        .and(warp::get())
        .and(warp::query::<JobFilter>())
        .and(who())
        .and(with())
        .then(index);
    let lists_live = warp::path!("live")
        .and(warp::get())
        .and(warp::query::<JobFilter>())
        .and(who())
        .and(with())
        .map(lists_live);
    let job_page = warp::path!("jobs" / String / String)
        .and(warp::get())
        .and(who())
        .and(with())
        .then(job_page);
    let job_live = warp::path!("live" / "jobs" / String / String)
        .and(warp::get())
        .and(who())
        .and(with())
        .then(job_live);
    let logs = warp::path!("live" / "logs" / String / String / String)
        .and(warp::get())
        .and(warp::header::optional::<u64>("last-event-id"))
        .and(who())
        .and(with())
        .then(logs_live);
    let runner_action = warp::path!("api" / "runners" / String / String / String)
        .and(warp::post())
        .and(who())
        .and(guard::change(d.guard.clone()))
        .and(with())
        .then(runner_action);
    let cancel = warp::path!("api" / "jobs" / String / String / "cancel")
        .and(warp::post())
        .and(who())
        .and(guard::change(d.guard.clone()))
        .and(with())
        .then(cancel);
    let css = warp::path!("static" / "app.css")
        .and(warp::get())
        .map(|| asset(APP_CSS, "text/css; charset=utf-8"));
    let js = warp::path!("static" / "app.js")
        .and(warp::get())
        .map(|| asset(APP_JS, "text/javascript; charset=utf-8"));
    let livez = warp::path!("livez")
        .and(warp::get())
        .map(|| "ok".into_response());
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with())
        .map(readyz);
    let all = index
        .or(livez)
        .unify()
        .or(readyz)
        .unify()
        .or(lists_live)
        .unify()
        .or(job_page)
        .unify()
        .or(job_live)
        .unify()
        .or(logs)
        .unify()
        .or(runner_action)
        .unify()
        .or(cancel)
        .unify()
        .or(css)
        .unify()
        .or(js)
        .unify();
    guard::host(d.guard.clone())
        .and(all)
        .recover(guard::recover)
        .unify()
        .map(secure)
}

fn with_dash(d: Arc<Dash>) -> impl Filter<Extract = (Arc<Dash>,), Error = Infallible> + Clone {
    warp::any().map(move || d.clone())
}

/// Headers every answer carries.
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut warp::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, warp::http::HeaderValue::from_static(v));
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "x-frame-options", "DENY");
    r
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    warp::reply::with_header(body, "content-type", kind).into_response()
}

fn page(d: &Dash, title: &str, live: &str, body: &str) -> Response {
    let shell = Shell {
        title,
        token: d.guard.token(),
        live,
        scope: &d.scope,
    };
    warp::reply::html(html::page(&shell, body)).into_response()
}

/// The query string that reproduces `f` (for the live route).
fn query(f: &JobFilter) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("namespace", &f.namespace),
        ("phase", &f.phase),
        ("label", &f.label),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

async fn index(filter: JobFilter, who: Who, d: Arc<Dash>) -> Response {
    d.live.ready(Duration::from_secs(5)).await;
    let (runners, jobs) = state::lists(&d, &who, &filter).await;
    let live = format!("/live?{}", query(&filter));
    page(
        &d,
        "Runners and Jobs",
        &live,
        &html::index_body(&runners, &filter, &jobs),
    )
}

async fn job_page(ns: String, name: String, who: Who, d: Arc<Dash>) -> Response {
    d.live.ready(Duration::from_secs(5)).await;
    let live = format!("/live/jobs/{}/{}", html::segment(&ns), html::segment(&name));
    let body = match state::job(&d, &who, &ns, &name, &[]).await {
        Some(b) => format!(
            r#"<div id="job" class="live">{b}</div>{}"#,
            state::job_logs(&d, &ns, &name)
        ),
        None => state::job_missing(&ns, &name),
    };
    page(&d, &format!("Job {name}"), &live, &body)
}

/// 200 once both watch caches hold a first list; 503 with why not (a watch's
/// error, e.g. a refused list) until then.
fn readyz(d: Arc<Dash>) -> Response {
    if d.live.is_ready() {
        return "ready".into_response();
    }
    let errors: Vec<String> = ["Runners", "Jobs"]
        .iter()
        .filter_map(|k| d.live.error(k).map(|e| format!("{k}: {e}")))
        .collect();
    let why = if errors.is_empty() {
        "the watch caches have not listed Runners and Jobs yet".to_owned()
    } else {
        errors.join("; ")
    };
    refusal(StatusCode::SERVICE_UNAVAILABLE, "NotReady", &why)
}

fn lists_live(filter: JobFilter, who: Who, d: Arc<Dash>) -> Response {
    let ticks = d.live.changes().boxed();
    let render = move |d: Arc<Dash>| {
        let (filter, who) = (filter.clone(), who.clone());
        async move {
            let (r, j) = state::lists(&d, &who, &filter).await;
            vec![("runners", r), ("jobs", j)]
        }
        .boxed()
    };
    sse(updates(d, ticks, render))
}

async fn job_live(ns: String, name: String, who: Who, d: Arc<Dash>) -> Response {
    // A proxied user sees the Events only where they may list them.
    let (events, event_ticks) = if d.sees(&who, "list", "events", &ns).await {
        let (store, ticks) = live::job_events(&d.client, &ns, &name);
        (Some(store), ticks.boxed())
    } else {
        (None, futures::stream::pending().boxed())
    };
    let ticks = futures::stream::select(d.live.changes(), event_ticks).boxed();
    let render = move |d: Arc<Dash>| {
        let (ns, name, events, who) = (ns.clone(), name.clone(), events.clone(), who.clone());
        async move {
            let evs: Vec<_> = events
                .iter()
                .flat_map(|s| s.state())
                .map(|e| (*e).clone())
                .collect();
            let body = state::job(&d, &who, &ns, &name, &evs).await;
            vec![(
                "job",
                body.unwrap_or_else(|| state::job_missing(&ns, &name)),
            )]
        }
        .boxed()
    };
    sse(updates(d, ticks, render))
}

async fn logs_live(
    ns: String,
    name: String,
    step: String,
    from: Option<u64>,
    who: Who,
    d: Arc<Dash>,
) -> Response {
    let Some(client) = d.logs.clone() else {
        let m = "this dashboard reads no logs: start it with --server and --token";
        return refusal(StatusCode::NOT_FOUND, "LogsUnavailable", m);
    };
    // The relay reads with the dashboard's token: a proxied user must be allowed
    // to get the Job first.
    if !d.sees(&who, "get", "jobs", &ns).await {
        let m = format!("you may not get Jobs in namespace {ns}");
        return refusal(StatusCode::FORBIDDEN, "Forbidden", &m);
    }
    sse(logs::follow(client, ns, name, step, from.unwrap_or(0)))
}

type Render = Box<
    dyn Fn(Arc<Dash>) -> futures::future::BoxFuture<'static, Vec<(&'static str, String)>>
        + Send
        + Sync,
>;

/// Fragments `(element id, html)` as they change: the first at once, then after
/// each settled burst of ticks, only those that differ from what was sent.
fn updates<F>(
    d: Arc<Dash>,
    ticks: futures::stream::BoxStream<'static, ()>,
    render: F,
) -> impl Stream<Item = Result<warp::sse::Event, Infallible>> + Send + 'static
where
    F: Fn(Arc<Dash>) -> futures::future::BoxFuture<'static, Vec<(&'static str, String)>>
        + Send
        + Sync
        + 'static,
{
    let render: Render = Box::new(render);
    let sent: Vec<(&'static str, String)> = Vec::new();
    futures::stream::unfold(
        (d, ticks, render, sent, true),
        |(d, mut ticks, render, mut sent, first)| async move {
            if !first {
                ticks.next().await?;
                tokio::time::sleep(SETTLE).await;
                while let Some(Some(())) = ticks.next().now_or_never() {}
            }
            let fresh = render(d.clone()).await;
            let changed: Vec<warp::sse::Event> = fresh
                .iter()
                .filter(|f| !sent.contains(f))
                .map(|(id, html)| fragment(id, html))
                .collect();
            sent = fresh;
            Some((changed, (d, ticks, render, sent, false)))
        },
    )
    .flat_map(|events| futures::stream::iter(events.into_iter().map(Ok)))
}

fn fragment(id: &str, html: &str) -> warp::sse::Event {
    let data = serde_json::json!({ "id": id, "html": html }).to_string();
    warp::sse::Event::default().event("fragment").data(data)
}

fn sse<S>(stream: S) -> Response
where
    S: Stream<Item = Result<warp::sse::Event, Infallible>> + Send + 'static,
{
    let stream = SyncStream(std::sync::Mutex::new(stream.boxed()));
    warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response()
}

/// A stream warp's SSE reply can hold (it asks for `Sync`; ours are only `Send`):
/// polled through `&mut`, so the mutex is never contended.
struct SyncStream<T>(std::sync::Mutex<futures::stream::BoxStream<'static, T>>);

impl<T> Stream for SyncStream<T> {
    type Item = T;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        let inner = self.get_mut().0.get_mut();
        inner.unwrap_or_else(|e| e.into_inner()).poll_next_unpin(cx)
    }
}

async fn runner_action(
    ns: String,
    name: String,
    action: String,
    who: Who,
    d: Arc<Dash>,
) -> Response {
    let Some(action) = RunnerAction::parse(&action) else {
        let m = format!("no runner action {action}");
        return refusal(StatusCode::NOT_FOUND, "UnknownAction", &m);
    };
    let client = match d.client_for(&who) {
        Ok(c) => c,
        Err(e) => return answer(Err(e)),
    };
    answer(actions::runner(client, &ns, &name, action).await)
}

async fn cancel(ns: String, name: String, who: Who, d: Arc<Dash>) -> Response {
    let client = match d.client_for(&who) {
        Ok(c) => c,
        Err(e) => return answer(Err(e)),
    };
    answer(actions::cancel(client, &ns, &name).await)
}

/// 200 `{message}`, or the API server's refusal passed on (403, 404, 409, …).
fn answer(result: anyhow::Result<String>) -> Response {
    match result {
        Ok(message) => {
            warp::reply::json(&serde_json::json!({ "message": message })).into_response()
        }
        Err(e) => {
            let api = e
                .chain()
                .find_map(|c| match c.downcast_ref::<kube::Error>() {
                    Some(kube::Error::Api(s)) => Some(s.code),
                    _ => None,
                });
            let status = api
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            refusal(status, "ApiError", &format!("{e:#}"))
        }
    }
}

/// Serve on a listener bound by the caller (SSE streams never end by themselves:
/// the caller stops the server by dropping this future).
pub async fn serve(d: Arc<Dash>, listener: tokio::net::TcpListener) {
    warp::serve(routes(d)).incoming(listener).run().await;
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "routes_proxy_tests.rs"]
mod proxy_tests;
