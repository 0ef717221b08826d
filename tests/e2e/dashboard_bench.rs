//! `make bench-dashboard` (ignored by `cargo test`): how fast the dashboard draws a
//! big Job, measured by the browser's own clock. A 200-step Job (a DAG 20 wide and
//! 10 deep, each step waiting on three of the column before it) runs on a local
//! runner; one step prints 20,000 lines. Headless Chromium then loads the Job's
//! page several times (Navigation and Paint Timing) and opens that step's log
//! (`performance.now()` from the click until the viewer has drawn the whole log).
//! The figures are printed and written to `bench/results/DATE-dashboard-render.md`
//! with the machine's facts. A benchmark, not a timed test: it checks the page
//! shows what it should, never how fast.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use baton::crd::job::JobPhase;
use k8s_openapi::jiff::Timestamp;

use crate::dashboard::{CHROMIUM, Session, dashboard_bin};
use crate::jobs::{apply, job, jobs, phase_is, sa_token, setup};
use crate::support::{in_namespace, wait_for};

const WIDE: usize = 20;
const DEEP: usize = 10;
const LINES: usize = 20_000;
/// The step that prints [`LINES`] lines: in the middle of the graph.
const LOUD: &str = "s05-00";
/// Page loads measured (after one warm-up load, not counted).
const LOADS: usize = 7;

fn step_name(col: usize, row: usize) -> String {
    format!("s{col:02}-{row:02}")
}

/// 200 steps; each of a later column waits on its row and the two beside it.
fn big_job() -> anyhow::Result<baton::crd::Job> {
    let mut steps = Vec::new();
    for col in 0..DEEP {
        for row in 0..WIDE {
            let name = step_name(col, row);
            let script = if name == LOUD {
                format!(
                    "seq -f 'log line %g: the quick brown fox jumps over the lazy dog' 1 {LINES}"
                )
            } else {
                "true".to_owned()
            };
            let deps: Vec<String> = if col == 0 {
                Vec::new()
            } else {
                [WIDE - 1, 0, 1]
                    .iter()
                    .map(|d| step_name(col - 1, (row + d) % WIDE))
                    .collect()
            };
            let mut step =
                serde_json::json!({ "name": name, "image": "busybox", "script": script });
            if !deps.is_empty() {
                step["dependsOn"] = serde_json::json!(deps);
            }
            steps.push(step);
        }
    }
    job("big", "pool=e2e", serde_json::Value::Array(steps))
}

/// Navigation and Paint Timing of the page just loaded, in ms from navigation
/// start; `lcp` waits (bounded) for the largest paint to be reported.
const PAGE_TIMING: &str = r#"
const done = arguments[arguments.length - 1];
const nav = performance.getEntriesByType("navigation")[0];
const fcp = performance.getEntriesByName("first-contentful-paint")[0];
const out = {
  response: nav.responseEnd, dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd,
  fcp: fcp ? fcp.startTime : null, lcp: null, bytes: nav.transferSize,
  nodes: document.querySelectorAll("svg.dag g.node").length,
  rows: document.querySelectorAll("table.steps tbody tr").length,
};
let settled = false;
const finish = () => { if (!settled) { settled = true; done(out); } };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) out.lcp = Math.max(out.lcp || 0, e.startTime);
  setTimeout(finish, 50);
}).observe({ type: "largest-contentful-paint", buffered: true });
setTimeout(finish, 2000);
"#;

/// Open a step's log viewer; ms until its first lines are drawn, and until the
/// whole log is in and drawn (its count says so) and the next frame is painted.
const OPEN_LOG: &str = r#"
const [sel, want, done] = arguments;
const d = document.querySelector(sel);
const count = d.querySelector(".log-count");
const t0 = performance.now();
let first = null;
d.open = true;
function check() {
  const shown = d.querySelectorAll(".log-lines .line").length;
  if (first === null && shown > 0) first = performance.now() - t0;
  if (d.dataset.ended === "true" && count.textContent === "(" + want + " lines)") {
    // Where a slow open waited: in the browser's queue, or for the server.
    const r = performance.getEntriesByType("resource").filter((e) => e.name.includes("/live/logs/")).pop();
    const net = r && { queued: r.requestStart - r.fetchStart, waited: r.responseStart - r.requestStart, at: r.fetchStart - t0 };
    requestAnimationFrame(() => done({ first, all: performance.now() - t0, shown, net }));
  } else if (performance.now() - t0 > 60000) {
    const state = d.querySelector(".log-state").textContent;
    done({ first, all: null, shown, ended: d.dataset.ended, count: count.textContent, state });
  } else {
    requestAnimationFrame(check);
  }
}
requestAnimationFrame(check);
"#;

#[derive(Debug, Default)]
struct Figures {
    response: Vec<f64>,
    dcl: Vec<f64>,
    load: Vec<f64>,
    fcp: Vec<f64>,
    lcp: Vec<f64>,
    log_first: Vec<f64>,
    log_all: Vec<f64>,
    page_bytes: f64,
}

fn ms(v: &serde_json::Value, key: &str) -> anyhow::Result<f64> {
    v[key].as_f64().with_context(|| format!("{key} in {v}"))
}

#[tokio::test]
#[ignore = "a benchmark: make bench-dashboard"]
async fn bench_dashboard_render() {
    in_namespace("dash-bench", |ns| async move {
        let env = setup(&ns).await?;
        let reader = sa_token(&ns, "reader", true).await?;
        apply(&ns, &big_job()?).await?;
        wait_for(&jobs(&ns), "big", phase_is(JobPhase::Succeeded), 1200).await?;

        let bin = dashboard_binary();
        let flags = ["--server", &env.ctl.url, "--token", &reader];
        let (_dash, url) = dashboard_bin(&bin, &ns, &flags).await?;
        let s = Session::start(&ns).await?;
        let mut timeouts = s.browser.get_timeouts().await?;
        timeouts.set_script(Some(std::time::Duration::from_secs(90)));
        s.browser.update_timeouts(timeouts).await?;
        let page = format!("{url}/jobs/{}/big", ns.name);
        let log = format!(r#"details.log[data-step="{LOUD}"]"#);
        let mut f = Figures::default();
        for i in 0..=LOADS {
            s.browser.goto("about:blank").await?;
            s.browser.goto(&page).await?;
            let t = s.browser.execute_async(PAGE_TIMING, vec![]).await?;
            ensure!(t["nodes"] == 200 && t["rows"] == 200, "the page: {t}");
            s.shows(&format!(
                r#"svg.dag g[data-step="{LOUD}"][data-phase="Succeeded"]"#
            ))
            .await?;
            let l = s
                .browser
                .execute_async(OPEN_LOG, vec![log.clone().into(), LINES.into()])
                .await?;
            ensure!(
                l["shown"].as_u64().unwrap_or(0) > 0 && l["all"].is_number(),
                "the log of {LOUD} was not drawn whole: {l}"
            );
            eprintln!("load {i}: page {t}, log {l}");
            if i == 0 {
                continue; // warm-up: caches, the first connection
            }
            f.response.push(ms(&t, "response")?);
            f.dcl.push(ms(&t, "dcl")?);
            f.load.push(ms(&t, "load")?);
            // Headless Chromium may report no first paint: then the row is empty.
            f.fcp.extend(t["fcp"].as_f64());
            f.lcp.push(ms(&t, "lcp")?);
            f.log_first.push(ms(&l, "first")?);
            f.log_all.push(ms(&l, "all")?);
            f.page_bytes = ms(&t, "bytes")?;
        }
        let report = report(&f, &bin)?;
        println!("{report}");
        let day = Timestamp::now().strftime("%Y-%m-%d").to_string();
        let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("bench/results/{day}-dashboard-render.md"));
        std::fs::write(&out, report).with_context(|| format!("write {}", out.display()))?;
        println!("written to {}", out.display());
        s.close().await
    })
    .await;
}

/// The dashboard measured: `BATON_DASHBOARD_BIN` (the Makefile's release build),
/// else the test's own (debug) build.
fn dashboard_binary() -> PathBuf {
    std::env::var_os("BATON_DASHBOARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::procs::BATON))
}

/// The median and the maximum (NaN for no figures: printed as such).
fn median_max(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let median = s.get(s.len() / 2).copied().unwrap_or(f64::NAN);
    (median, s.last().copied().unwrap_or(f64::NAN))
}

fn report(f: &Figures, bin: &Path) -> anyhow::Result<String> {
    let mut out = String::from("# Dashboard render benchmark (`make bench-dashboard`)\n\n");
    let _ = writeln!(
        out,
        "A 200-step Job ({WIDE} wide, {DEEP} deep, 540 edges), ended; step `{LOUD}` printed \
         {LINES} lines. Headless Chromium, {LOADS} loads after a warm-up; times in ms by the \
         browser's clock (Navigation, Paint Timing, `performance.now()`).\n"
    );
    out.push_str("| measure | median | max |\n|---|---:|---:|\n");
    let rows: [(&str, &[f64]); 7] = [
        ("Job page: response end", &f.response),
        ("Job page: DOMContentLoaded", &f.dcl),
        ("Job page: load event end", &f.load),
        ("Job page: first contentful paint", &f.fcp),
        ("Job page: largest contentful paint", &f.lcp),
        ("Log opened: first lines drawn", &f.log_first),
        ("Log opened: all 20,000 lines in, drawn", &f.log_all),
    ];
    for (name, v) in rows {
        let (median, max) = median_max(v);
        let _ = writeln!(out, "| {name} | {median:.0} | {max:.0} |");
    }
    let _ = writeln!(out, "\nJob page size: {:.0} bytes.\n", f.page_bytes);
    out.push_str(&machine(bin));
    Ok(out)
}

/// The facts of this machine, the browser and the binary measured.
fn machine(bin: &Path) -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let cmd = |prog: &str, arg: &str| {
        std::process::Command::new(prog)
            .arg(arg)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|e| format!("({prog}: {e})"))
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = String::from("## Machine\n\n");
    let _ = writeln!(out, "- nproc: {cpus}");
    let _ = writeln!(
        out,
        "- CPU: {}",
        field(&read("/proc/cpuinfo"), "model name")
    );
    let _ = writeln!(
        out,
        "- memory: {}",
        field(&read("/proc/meminfo"), "MemTotal")
    );
    let _ = writeln!(
        out,
        "- load average at the end: {}",
        read("/proc/loadavg").trim()
    );
    let _ = writeln!(out, "- browser: {}", cmd(CHROMIUM, "--version"));
    let _ = writeln!(out, "- kernel: {}", cmd("uname", "-r"));
    let _ = writeln!(out, "- dashboard binary: {}", bin.display());
    out
}
