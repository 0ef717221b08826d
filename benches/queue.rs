//! The queue decision at scale: 10,000 queued Jobs × 100 runners.
//!
//! One decision is what a Queued Job's reconcile (or the queue's upkeep) does
//! when the plan's inputs changed: put the namespace's queue in order
//! (`sort_queue`) and decide every Job (`decisions`). Runners carry pool, arch,
//! os and size labels; Jobs pick from 20 selectors (matchLabels and
//! matchExpressions: In, NotIn, Exists), priorities from -10 to 10, most runners
//! full. Also timed: every Job with a selector of its own (the worst case for
//! grouping), and the former plan (a selector parsed per Job × runner).
//! Target: ≤ 10 ms per decision. Run: `cargo bench --bench queue`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton::controller::job::{Decision, Queued, RunnerView, decisions, sort_queue};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

const JOBS: usize = 10_000;
const RUNNERS: usize = 100;
const REPEATS: usize = 50;
const POOLS: [&str; 4] = ["build", "test", "deploy", "gpu"];
const ARCHES: [&str; 2] = ["amd64", "arm64"];
const SIZES: [&str; 3] = ["small", "medium", "large"];

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn runners() -> Vec<RunnerView> {
    (0..RUNNERS)
        .map(|i| {
            let mut l = labels(&[
                ("pool", POOLS[i % 4]),
                ("arch", ARCHES[i % 2]),
                ("size", SIZES[i % 3]),
                ("kubernetes.io/os", "linux"),
            ]);
            if i % 10 == 0 {
                l.insert("gpu".into(), "nvidia".into());
            }
            RunnerView {
                name: format!("runner-{i:03}"),
                labels: l,
                usable: i % 17 != 0,
                // Most runners full: the queue is long because capacity is short.
                free: usize::from(i % 7 == 0),
                on_demand_for: None,
                direct_only: false,
            }
        })
        .collect()
}

fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

/// 20 selectors a CI setup might use.
fn selectors() -> Vec<LabelSelector> {
    let mut out = Vec::new();
    for pool in POOLS {
        for arch in ARCHES {
            out.push(LabelSelector {
                match_labels: Some(labels(&[("pool", pool), ("arch", arch)])),
                ..Default::default()
            });
        }
        out.push(LabelSelector {
            match_labels: Some(labels(&[("pool", pool)])),
            match_expressions: Some(vec![expr("size", "In", &["medium", "large"])]),
        });
        out.push(LabelSelector {
            match_labels: Some(labels(&[("pool", pool)])),
            match_expressions: Some(vec![
                expr("gpu", "Exists", &[]),
                expr("arch", "NotIn", &["arm64"]),
            ]),
        });
        out.push(LabelSelector {
            match_labels: Some(labels(&[("pool", pool), ("size", "small")])),
            ..Default::default()
        });
    }
    out
}

fn queue(distinct: bool) -> Vec<Queued> {
    let sels = selectors();
    (0..JOBS)
        .map(|i| {
            let mut selector = sels[(i * 7) % sels.len()].clone();
            if distinct {
                // A label no runner has, different per Job: no two Jobs share a selector.
                let l = selector.match_labels.get_or_insert_default();
                l.insert("job".into(), format!("j{i}"));
            }
            Queued {
                name: format!("job-{i:05}"),
                uid: format!("uid-{i:05}"),
                priority: (i % 21) as i32 - 10,
                created: Timestamp::from_second(1_800_000_000 + i as i64).ok(),
                selector: Some(std::sync::Arc::new(selector)),
                ..Default::default()
            }
        })
        .collect()
}

/// One decision as the controller makes it: order, then decide (the queue
/// arrives unordered, as the watch cache holds it).
fn decide_all(mut q: Vec<Queued>, runners: &[RunnerView]) -> Vec<Decision> {
    sort_queue(&mut q);
    decisions(&q, runners)
}

/// The plan before selectors were grouped: a selector parsed per Job × runner.
fn former(unordered: &[Queued], runners: &[RunnerView]) -> usize {
    let mut q = unordered.to_vec();
    sort_queue(&mut q);
    let mut free: Vec<usize> = runners.iter().map(|r| r.free).collect();
    let mut assigned = 0;
    for j in &q {
        let sel = j.selector.clone().unwrap_or_default();
        let matching: Vec<usize> = (0..runners.len())
            .filter(|&i| {
                runners[i].usable
                    && Selector::try_from((*sel).clone())
                        .is_ok_and(|s| s.matches(&runners[i].labels))
            })
            .collect();
        if let Some(&i) = matching
            .iter()
            .filter(|&&i| free[i] > 0)
            .max_by_key(|&&i| free[i])
        {
            free[i] -= 1;
            assigned += 1;
        }
    }
    assigned
}

/// Each run times `f` on a fresh input from `input` (made outside the timing).
fn time<I, T>(repeats: usize, input: impl Fn() -> I, mut f: impl FnMut(I) -> T) -> Vec<Duration> {
    let mut xs: Vec<Duration> = (0..repeats)
        .map(|_| {
            let x = input();
            let t = Instant::now();
            std::hint::black_box(f(x));
            t.elapsed()
        })
        .collect();
    xs.sort();
    xs
}

fn pct(xs: &[Duration], p: usize) -> Duration {
    xs[((xs.len() * p).div_ceil(100))
        .saturating_sub(1)
        .min(xs.len() - 1)]
}

fn report(what: &str, xs: &[Duration]) {
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!(
        "{what}: median {}, p99 {}, max {} ({} runs)",
        ms(pct(xs, 50)),
        ms(pct(xs, 99)),
        ms(xs[xs.len() - 1]),
        xs.len()
    );
}

fn main() {
    let runners = runners();
    let shared = queue(false);
    let assigned = decide_all(shared.clone(), &runners)
        .iter()
        .filter(|d| matches!(d, Decision::Assign { .. }))
        .count();
    println!("queue decision: {JOBS} queued Jobs × {RUNNERS} runners, {assigned} assigned");
    report(
        "  20 shared selectors (target ≤ 10 ms)",
        &time(REPEATS, || shared.clone(), |q| decide_all(q, &runners)),
    );
    let distinct = queue(true);
    report(
        "  a selector per Job (worst case)",
        &time(
            REPEATS / 5,
            || distinct.clone(),
            |q| decide_all(q, &runners),
        ),
    );
    report(
        "  former plan (selector parsed per Job × runner)",
        &time(3, || (), |()| former(&shared, &runners)),
    );
}
