//! What the controller's Job cache holds per Job, in heap bytes as jemalloc
//! counts them (size classes included): the figure that bounds the controller's
//! memory with 10,000 finished + 1,000 running Jobs (issue 14, `make bench`).
//!
//! Each Job is the one-step Job `make bench` creates, its status made by the
//! same transitions the controller and a runner write (`job_status::next`),
//! sent as the API server sends it (JSON, with `managedFields`), decoded and
//! kept exactly as the controller's watch does: `scoped::slim`,
//! `job::retained::retain`, then the reflector's `Writer`. Run: `cargo bench --bench cache_footprint`.

use baton::controller::job::retained;
use baton::controller::scoped;
use baton::crd::job::{Job, JobPhase, StepPhase, StepStatus};
use baton::crd::job_status::{self, Report, Transition};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use tikv_jemalloc_ctl::{epoch, stats};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const JOBS: usize = 10_000;

/// The Job `hack/bench/bench.py` creates, as the API server returns it.
fn created(i: usize) -> Job {
    let json = serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Job",
        "metadata": {
            "name": format!("m{i:05}"), "namespace": "bench-baton",
            "uid": format!("5f0c6a2e-9b1d-4c8e-a7f3-{i:012}"),
            "resourceVersion": format!("{}", 100_000 + i), "generation": 1,
            "creationTimestamp": "2026-12-03T10:00:00Z",
            "managedFields": [{
                "manager": "python-requests", "operation": "Update",
                "apiVersion": "baton.dev/v1alpha1", "time": "2026-12-03T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {".": {}, "f:podTemplate": {".": {}, "f:annotations": {},
                    "f:labels": {}}, "f:runnerSelector": {}, "f:steps": {}}}
            }]
        },
        "spec": {
            "runnerSelector": {"matchLabels": {"pool": "bench"}},
            "podTemplate": {
                "labels": {"bench.baton.dev/complete": "true"},
                "annotations": {"bench.baton.dev/delay": "1s"}
            },
            "steps": [{"name": "s", "image": "registry.local/bench/step:latest"}]
        }
    });
    serde_json::from_value(json).expect("a Job")
}

fn with(mut job: Job, t: Transition<'_>) -> Job {
    job.status = Some(job_status::next(&job, t, Timestamp::now()));
    job
}

/// Queued: what the controller writes while no runner is free.
fn queued(i: usize) -> Job {
    let wait = Transition::Wait {
        reason: "RunnersBusy",
        message: "every matching runner is at its limit",
    };
    with(created(i), wait)
}

/// Finished: assigned, its step run by a runner, succeeded.
fn finished(i: usize) -> Job {
    let job = with(queued(i), Transition::Assign { runner: "runner-0" });
    let step = |phase, exit_code| StepStatus {
        name: "s".into(),
        phase,
        exit_code,
        pod_name: Some(format!("m{i:05}-s-1")),
        start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::now(),
        )),
        ..Default::default()
    };
    let running = step(StepPhase::Running, None);
    let job = with(
        job,
        Transition::Report(Report {
            step: Some(&running),
            ..Default::default()
        }),
    );
    let mut done = step(StepPhase::Succeeded, Some(0));
    done.reason = Some("Completed".into());
    done.completion_time = done.start_time.clone();
    with(
        job,
        Transition::Report(Report {
            step: Some(&done),
            phase: Some(JobPhase::Succeeded),
            ..Default::default()
        }),
    )
}

fn allocated() -> usize {
    epoch::advance().expect("jemalloc epoch");
    stats::allocated::read().expect("jemalloc stats")
}

/// Bytes in pages the allocator holds for live objects (`allocated` plus the
/// free room inside those pages: what fragmentation costs).
fn active() -> usize {
    epoch::advance().expect("jemalloc epoch");
    stats::active::read().expect("jemalloc stats")
}

/// What the watch delivers, as it arrives: decoded, slimmed, cut, cached.
fn apply(writer: &mut Writer<Job>, bytes: &[u8]) {
    let mut job: Job = serde_json::from_slice(bytes).expect("decode");
    scoped::slim(&mut job);
    retained::retain(&mut job);
    writer.apply_watcher_event(&Event::Apply(job));
}

/// The memory phase of `make bench` in small: every Job arrives queued (a
/// burst), then each is replaced by its finished version. Live bytes and the
/// pages holding them afterwards, per Job.
fn burst_then_finished() {
    let encode = |make: fn(usize) -> Job| -> Vec<Vec<u8>> {
        (0..JOBS)
            .map(|i| serde_json::to_vec(&make(i)).expect("encode"))
            .collect()
    };
    let (queued_wire, finished_wire) = (encode(queued), encode(finished));
    let (store, mut writer): (_, Writer<Job>) = reflector::store();
    let (live0, pages0) = (allocated(), active());
    for bytes in &queued_wire {
        apply(&mut writer, bytes);
    }
    for bytes in &finished_wire {
        apply(&mut writer, bytes);
    }
    let live = allocated().saturating_sub(live0);
    let pages = active().saturating_sub(pages0);
    assert_eq!(store.state().len(), JOBS);
    println!(
        "burst     {:>7} B per Job live after {JOBS} queued then finished, {:>5} B per Job in pages ({:.1} of {:.1} MiB used)",
        live / JOBS,
        pages / JOBS,
        live as f64 / 1_048_576.0,
        pages as f64 / 1_048_576.0,
    );
}

/// Heap bytes per Job the cache holds once `JOBS` of `make(i)` went through it.
fn per_job(label: &str, make: fn(usize) -> Job) {
    // Encoded first, as the watch receives them: only the cache is counted.
    let wire: Vec<Vec<u8>> = (0..JOBS)
        .map(|i| serde_json::to_vec(&make(i)).expect("encode"))
        .collect();
    let wire_bytes: usize = wire.iter().map(Vec::len).sum();
    let (store, mut writer): (_, Writer<Job>) = reflector::store();
    let before = allocated();
    for bytes in &wire {
        apply(&mut writer, bytes);
    }
    let held = allocated().saturating_sub(before);
    assert_eq!(store.state().len(), JOBS);
    println!(
        "{label:<10} {:>7} B per Job in the cache ({:.1} MiB for {JOBS}); {:>5} B on the wire",
        held / JOBS,
        held as f64 / 1_048_576.0,
        wire_bytes / JOBS,
    );
    drop(writer);
    drop(store);
}

fn main() {
    println!("Job cache footprint, {JOBS} one-step Jobs (make bench's shape):");
    println!(
        "inline size_of: Job {} B, JobSpec {} B, JobStatus {} B",
        size_of::<Job>(),
        size_of::<baton::crd::job::JobSpec>(),
        size_of::<baton::crd::job::JobStatus>(),
    );
    per_job("queued", queued);
    per_job("finished", finished);
    burst_then_finished();
}
