//! `kubectl baton dashboard` in a real browser: Debian's headless Chromium, driven
//! over WebDriver (chromedriver, through fantoccini), against a dashboard that acts
//! with the test's kubeconfig on the real cluster. A Pending runner is adopted by a
//! click; a running Job's graph shows each step's phase; the log of its running
//! step grows; its cancel button cancels it; the pages follow the cluster without a
//! reload. Screenshots go to
//! `$BATON_SCREENSHOT_DIR` (README's are `docs/img/`), else
//! `target/dashboard-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use baton::crd::Runner;
use baton::crd::job::JobPhase;
use baton::crd::runner::AdoptionState;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use kube::api::Api;
use tokio::process::{Child, Command};

use crate::jobs::{apply, job, jobs, phase_is, sa_token, setup};
use crate::procs::{Agent, Controller, Proc, TempDir, http};
use crate::runners::runner_is;
use crate::support::{TestNs, in_namespace, wait_for};

/// Where Debian puts them (`hack/browser/install.sh` installs both).
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the page may take to show a change the API server already has.
const LIVE: Duration = Duration::from_secs(20);

/// A `baton dashboard` on a loopback port the OS picks.
async fn dashboard(ns: &TestNs) -> anyhow::Result<(Proc, String)> {
    dashboard_with(ns, &[]).await
}

/// [`dashboard`] with more flags (`--server`, `--token`).
async fn dashboard_with(ns: &TestNs, flags: &[&str]) -> anyhow::Result<(Proc, String)> {
    dashboard_bin(Path::new(crate::procs::BATON), ns, flags).await
}

/// [`dashboard_with`], run from the `baton` binary `bin`.
pub(crate) async fn dashboard_bin(
    bin: &Path,
    ns: &TestNs,
    flags: &[&str],
) -> anyhow::Result<(Proc, String)> {
    let mut args = vec!["dashboard", "-n", &ns.name, "--port", "0"];
    args.extend_from_slice(flags);
    let proc = Proc::spawn_bin(bin, "dashboard", &args, &[], Path::new("."))?;
    let line = proc.wait_for_log("dashboard listening on", 30).await?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .context("the dashboard's URL")?
        .trim_end_matches('/')
        .to_owned();
    Ok((proc, url))
}

/// chromedriver and a headless Chromium session; both end when dropped.
pub(crate) struct Session {
    pub(crate) browser: Browser,
    _driver: Child,
    _profile: TempDir,
}

impl Session {
    pub(crate) async fn start(ns: &TestNs) -> anyhow::Result<Session> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start chromedriver (make e2e installs it: hack/browser/install.sh)")?;
        let url = format!("http://127.0.0.1:{port}");
        crate::procs::wait_status(&format!("{url}/status"), 200, 20).await?;
        let profile = TempDir::new(&format!("{}-chromium", ns.name));
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--force-prefers-reduced-motion",
                    format!("--user-data-dir={}", profile.0.display()),
                ]
            }
        });
        let caps = caps.as_object().cloned().context("capabilities")?;
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .context("open a Chromium session")?;
        Ok(Session {
            browser,
            _driver: driver,
            _profile: profile,
        })
    }

    /// Wait for an element the live page should come to show.
    pub(crate) async fn shows(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.browser
            .wait()
            .at_most(LIVE)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("the page never showed {css}"))
    }

    /// Click the element `css` once the page shows it.
    async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.on_fresh(css, |e| async move { e.click().await }).await
    }

    /// The text of the element `css` once the page shows it.
    async fn text(&self, css: &str) -> anyhow::Result<String> {
        self.on_fresh(css, |e| async move { e.text().await }).await
    }

    /// Act on the element `css` once the page shows it. A live update may swap
    /// the element between finding and acting on it (a stale reference): then it
    /// is found again, as a user would click or read the new one.
    async fn on_fresh<T, F, Fut>(&self, css: &str, act: F) -> anyhow::Result<T>
    where
        F: Fn(fantoccini::elements::Element) -> Fut,
        Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
    {
        let deadline = tokio::time::Instant::now() + LIVE;
        loop {
            match act(self.shows(css).await?).await {
                Ok(done) => return Ok(done),
                Err(e)
                    if e.to_string().contains("stale element")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(anyhow::Error::from(e).context(format!("on {css}"))),
            }
        }
    }

    /// Wait until the log viewer `css` shows at least `n` lines; how many it shows.
    async fn log_lines(&self, css: &str, n: usize) -> anyhow::Result<usize> {
        let deadline = tokio::time::Instant::now() + LIVE;
        loop {
            let lines = self
                .browser
                .find_all(Locator::Css(&format!("{css} .line")))
                .await?
                .len();
            if lines >= n {
                return Ok(lines);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the log of {css} showed {lines} lines, not {n}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let dir = std::env::var_os("BATON_SCREENSHOT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots")
            });
        std::fs::create_dir_all(&dir)?;
        let png = self.browser.screenshot().await?;
        std::fs::write(dir.join(name), png)?;
        Ok(())
    }

    pub(crate) async fn close(self) -> anyhow::Result<()> {
        self.browser.close().await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_pending_runner_is_adopted_by_clicking_adopt() {
    in_namespace("dash-adopt", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        ns.allow_pending_runners().await?;
        let dir = TempDir::new(&ns.name);
        let agent =
            Agent::start(&ctl.url, &ns.name, "r1", &dir.join("r1"), None, "pool=e2e").await?;
        let runners: Api<Runner> = Api::namespaced(ns.client.clone(), &ns.name);
        wait_for(&runners, "r1", runner_is(AdoptionState::Pending, false), 30).await?;

        let (_dash, url) = dashboard(&ns).await?;
        let s = Session::start(&ns).await?;
        s.browser.goto(&format!("{url}/")).await?;
        s.shows(r#"tr[data-runner="r1"] .adoption-pending"#).await?;
        s.screenshot("dashboard-runners-pending.png").await?;
        s.click(r#"tr[data-runner="r1"] button.act-adopt"#).await?;

        // The cluster's answer, then the same page showing it without a reload.
        wait_for(&runners, "r1", runner_is(AdoptionState::Adopted, true), 30).await?;
        agent.wait_ready(200, 15).await?;
        s.shows(r#"tr[data-runner="r1"] .adoption-adopted"#).await?;
        s.shows(r#"tr[data-runner="r1"] .state-connected"#).await?;
        let adopt = s
            .browser
            .find_all(Locator::Css(r#"tr[data-runner="r1"] button.act-adopt"#))
            .await?;
        ensure!(adopt.is_empty(), "an adopted runner offers no Adopt");
        s.screenshot("dashboard-runners.png").await?;
        s.close().await
    })
    .await;
}

/// `a` and `b` end at once; `slow` prints a line every 0.3 s until cancelled;
/// `last` waits on both.
fn graph_job() -> anyhow::Result<baton::crd::Job> {
    job(
        "graph",
        "pool=e2e",
        serde_json::json!([
            { "name": "a", "image": "busybox", "script": "echo a" },
            { "name": "b", "image": "busybox", "script": "echo b", "dependsOn": ["a"] },
            { "name": "slow", "image": "busybox", "script": "i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo tick $i; sleep 0.3; done", "dependsOn": ["a"] },
            { "name": "last", "image": "busybox", "script": "echo last", "dependsOn": ["b", "slow"] }
        ]),
    )
}

pub(crate) fn step_is(
    step: &'static str,
    phase: &'static str,
) -> impl kube::runtime::wait::Condition<baton::crd::Job> {
    move |j: Option<&baton::crd::Job>| {
        j.and_then(|j| j.status.as_ref()).is_some_and(|s| {
            s.steps
                .iter()
                .any(|st| st.name == step && format!("{:?}", st.phase) == phase)
        })
    }
}

#[tokio::test]
async fn a_jobs_graph_shows_each_steps_phase_and_its_cancel_button_cancels_it() {
    in_namespace("dash-job", |ns| async move {
        let env = setup(&ns).await?;
        let reader = sa_token(&ns, "reader", true).await?;
        apply(&ns, &graph_job()?).await?;
        wait_for(&jobs(&ns), "graph", step_is("slow", "Running"), 60).await?;
        wait_for(&jobs(&ns), "graph", step_is("b", "Succeeded"), 30).await?;

        let flags = ["--server", &env.ctl.url, "--token", &reader];
        let (_dash, url) = dashboard_with(&ns, &flags).await?;
        let s = Session::start(&ns).await?;
        s.browser.goto(&format!("{url}/")).await?;
        s.shows(r#"tr[data-job="graph"] .phase-running"#).await?;
        s.screenshot("dashboard-jobs.png").await?;

        s.browser
            .goto(&format!("{url}/jobs/{}/graph", ns.name))
            .await?;
        for (step, phase) in [
            ("a", "Succeeded"),
            ("b", "Succeeded"),
            ("slow", "Running"),
            ("last", "Pending"),
        ] {
            s.shows(&format!(
                r#"svg.dag g[data-step="{step}"][data-phase="{phase}"]"#
            ))
            .await?;
            s.shows(&format!(
                r#"tr[data-step="{step}"] .phase-{}"#,
                phase.to_lowercase()
            ))
            .await?;
        }
        let exit = s.text(r#"tr[data-step="a"] td:nth-of-type(2)"#).await?;
        ensure!(exit == "0", "step a's exit code: {exit:?}");
        s.screenshot("dashboard-job.png").await?;

        // The running step's log, followed: it grows while the page is open.
        let log = r#"details.log[data-step="slow"]"#;
        s.click(&format!("{log} summary")).await?;
        let first = s.log_lines(log, 1).await?;
        let later = s.log_lines(log, first + 5).await?;
        ensure!(later > first, "the log grew: {first} -> {later}");
        let text = s.text(&format!("{log} .line:last-child")).await?;
        ensure!(text.contains("tick"), "the last line: {text:?}");
        s.shows(&format!(r##"{log} #L-slow-1 a.ln[href="#L-slow-1"]"##))
            .await?;
        let show = "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})";
        s.browser
            .execute(show, vec![serde_json::json!(log)])
            .await?;
        s.screenshot("dashboard-log.png").await?;

        s.click("button.act-cancel").await?;
        s.browser
            .accept_alert()
            .await
            .context("confirm the cancel")?;
        wait_for(&jobs(&ns), "graph", phase_is(JobPhase::Cancelled), 60).await?;
        let cancelled = jobs(&ns).get("graph").await?;
        ensure!(cancelled.spec.cancel == Some(true));
        // The page follows: the Job's phase and the running step's, no reload.
        s.shows(r#"#job-phase.phase-cancelled"#).await?;
        s.shows(r#"svg.dag g[data-step="slow"][data-phase="Cancelled"]"#)
            .await?;
        ensure!(
            s.browser
                .find_all(Locator::Css("button.act-cancel"))
                .await?
                .is_empty(),
            "an ended Job offers no cancel"
        );
        // The cancelled step's log ends, and the viewer says so.
        s.shows(&format!(r#"{log}[data-ended="true"]"#)).await?;
        s.screenshot("dashboard-job-cancelled.png").await?;
        s.close().await
    })
    .await;
}

#[tokio::test]
async fn a_request_under_another_host_name_is_refused() {
    in_namespace("dash-host", |ns| async move {
        let (_dash, url) = dashboard(&ns).await?;
        let ok = http().get(format!("{url}/")).send().await?;
        ensure!(ok.status() == 200, "{}", ok.status());
        let rebound = http()
            .get(format!("{url}/"))
            .header("host", "attacker.example")
            .send()
            .await?;
        ensure!(rebound.status() == 421, "{}", rebound.status());
        let no_token = http()
            .post(format!("{url}/api/jobs/{}/x/cancel", ns.name))
            .send()
            .await?;
        ensure!(no_token.status() == 403, "{}", no_token.status());
        Ok(())
    })
    .await;
}
