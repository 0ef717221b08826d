//! Helpers of the executor tests: a recording sink, temporary backend roots,
//! specs from YAML, and a check that a process group is gone.
#![allow(dead_code)] // shared by two test crates; each uses part of it

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use baton::backend::{LocalBackend, LogChunk, Workflow};
use baton::crd::JobSpec;
use baton::crd::job::{JobPhase, StepPhase, StepStatus};
use baton::executor::{
    CancellationToken, Executor, ExecutorOptions, JobReport, LogSink, Recorded, StatusSink,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::watch;

pub const BOUND: Duration = Duration::from_secs(20);

/// Records what the executor reports, and checks log offsets are contiguous.
pub struct Recorder {
    pub logs: Mutex<BTreeMap<String, Vec<u8>>>,
    pub events: Mutex<Vec<(String, StepPhase)>>,
    pub running: watch::Sender<BTreeSet<String>>,
    /// Every step's latest status.
    pub statuses: Mutex<BTreeMap<String, StepStatus>>,
    /// What it says was recorded before the run (a resumed run).
    pub recorded: Recorded,
    /// What its `records_starts` answers (a runner's sink: true).
    pub records_starts: bool,
}

impl Recorder {
    pub fn new() -> Self {
        Self::resuming(Recorded::default())
    }

    /// A sink of a run resuming a Job with this recorded status.
    pub fn resuming(recorded: Recorded) -> Self {
        Self {
            logs: Mutex::default(),
            events: Mutex::default(),
            running: watch::Sender::new(BTreeSet::new()),
            statuses: Mutex::default(),
            recorded,
            records_starts: false,
        }
    }

    /// The sink of a run taking over from `earlier` (a restarted runner): it holds
    /// the logs `earlier` got and the statuses it reported, as a server would.
    pub fn taking_over(earlier: &Recorder, start_time: Option<Time>) -> Self {
        let rec = Self::resuming(Recorded {
            start_time,
            steps: earlier.statuses.lock().unwrap().values().cloned().collect(),
        });
        *rec.logs.lock().unwrap() = earlier.logs.lock().unwrap().clone();
        rec
    }

    pub fn log(&self, step: &str) -> String {
        String::from_utf8_lossy(
            self.logs
                .lock()
                .unwrap()
                .get(step)
                .map_or(&[][..], Vec::as_slice),
        )
        .into_owned()
    }

    pub async fn wait_running(&self, step: &str) {
        let mut rx = self.running.subscribe();
        tokio::time::timeout(BOUND, rx.wait_for(|r| r.contains(step)))
            .await
            .expect("step did not start in time")
            .unwrap();
    }
}

impl StatusSink for Recorder {
    async fn step_changed(&self, status: &StepStatus) {
        self.events
            .lock()
            .unwrap()
            .push((status.name.clone(), status.phase));
        self.statuses
            .lock()
            .unwrap()
            .insert(status.name.clone(), status.clone());
        self.running.send_modify(|r| {
            if status.phase == StepPhase::Running {
                r.insert(status.name.clone());
            } else {
                r.remove(&status.name);
            }
        });
    }
    async fn job_changed(&self, _: JobPhase, _: Option<&str>) {}
    fn recorded(&self) -> Recorded {
        self.recorded.clone()
    }
    fn records_starts(&self) -> bool {
        self.records_starts
    }
}

impl LogSink for Recorder {
    async fn append(&self, chunk: LogChunk) {
        let mut logs = self.logs.lock().unwrap();
        let log = logs.entry(chunk.step.clone()).or_default();
        assert_eq!(
            chunk.offset,
            log.len() as u64,
            "chunks of {} are contiguous",
            chunk.step
        );
        log.extend_from_slice(&chunk.bytes);
    }

    fn resume_offset(&self, step: &str) -> u64 {
        self.logs
            .lock()
            .unwrap()
            .get(step)
            .map_or(0, |l| l.len() as u64)
    }
}

/// A temporary backend root, removed on drop.
pub struct Root(pub PathBuf);

impl Root {
    pub fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("baton-executor-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn spec(yaml: &str) -> JobSpec {
    serde_saphyr::from_str(yaml).expect("test spec parses")
}

pub fn host_env(extra: &[(&str, &str)]) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> =
        [("PATH", std::env::var("PATH").unwrap_or_default())]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env
}

pub fn options() -> ExecutorOptions {
    ExecutorOptions {
        grace: Duration::from_millis(500),
        ..Default::default()
    }
}

pub async fn run_with(
    backend: &LocalBackend,
    spec: &JobSpec,
    options: ExecutorOptions,
    rec: &Recorder,
) -> JobReport {
    let cancel = CancellationToken::new();
    let executor = Executor::new(backend, options);
    tokio::time::timeout(
        BOUND,
        executor.run(&Workflow::new("job"), spec, rec, rec, &cancel),
    )
    .await
    .expect("job finished in time")
    .expect("job ran")
}

pub fn step<'a>(report: &'a JobReport, name: &str) -> &'a StepStatus {
    &report
        .steps
        .iter()
        .find(|s| s.status.name == name)
        .expect("step in report")
        .status
}

pub fn phase_and_reason(report: &JobReport, name: &str) -> (StepPhase, Option<String>) {
    let s = step(report, name);
    (s.phase, s.reason.clone())
}

/// Whether any process of the group still runs. Zombies do not count: an orphan
/// killed with its group is reaped by PID 1 whenever that gets to it, so `killpg(pgid,
/// 0)` may still find it for a while on machines whose init reaps lazily.
pub fn group_alive(pgid: i32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::killpg;
    use nix::unistd::Pid;
    if killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.filter_map(Result::ok).any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z"
    })
}

pub async fn assert_group_gone(pgid: i32) {
    let gone = async {
        while group_alive(pgid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .unwrap_or_else(|_| panic!("process group {pgid} still has live processes"));
}
