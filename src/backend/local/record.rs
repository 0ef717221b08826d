//! What a step attempt leaves on disk, so that a later backend over the same root
//! (a runner restarted with its state directory) knows it:
//!
//! - `attempt` (JSON), written once the process started: the attempt number,
//!   where its log continues the step's log, its process group, and the group
//!   leader's start time;
//! - `exit`, written once it ended on its own and its log was closed: the exit
//!   code. One the backend stopped (a timeout, a cancel, a fenced-off run) or gave
//!   up has none: its end was the runner's doing, and is reported by that runner
//!   or, if it died first, counts as lost.
//!
//! Attempt 0 lives in the step's directory, attempt N in `retry-N/` under it.
//!
//! An attempt with no `exit` was running when its runner died. Its process group
//! is killed (SIGKILL) when a new runner starts, and again when the Job is resumed:
//! a local process cannot be adopted (its log pipe died with the runner), and
//! Linux's parent-death signal is no substitute (it needs `unsafe` code between
//! fork and exec, which this crate forbids; it follows the parent *thread*, which
//! on tokio may exit while the runner lives; and it reaches one process, not the
//! group). The leader's start time guards the kill: a process id that was reused
//! since is never signalled.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::process::signal_group;

const ATTEMPT_FILE: &str = "attempt";
const EXIT_FILE: &str = "exit";
const RETRY_PREFIX: &str = "retry-";

/// One attempt of a step, as recorded when it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    pub step: String,
    pub retry: u32,
    /// Where this attempt's log starts in the step's log.
    pub log_offset: u64,
    pub pgid: i32,
    /// The group leader's start time (clock ticks after boot), where known.
    pub start_ticks: Option<u64>,
}

/// The directory of attempt `retry` of the step whose directory is `step_dir`.
pub fn attempt_dir(step_dir: &Path, retry: u32) -> PathBuf {
    if retry == 0 {
        step_dir.to_owned()
    } else {
        step_dir.join(format!("{RETRY_PREFIX}{retry}"))
    }
}

/// Write `content` to `dir/name` so that a reader sees all of it or nothing.
fn write_atomic(dir: &Path, name: &str, content: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, content)?;
    fs::rename(&tmp, dir.join(name))
}

pub fn write_attempt(dir: &Path, record: &AttemptRecord) -> io::Result<()> {
    let json = serde_json::to_vec(record).map_err(io::Error::other)?;
    write_atomic(dir, ATTEMPT_FILE, &json)
}

pub fn write_exit(dir: &Path, exit_code: i32) -> io::Result<()> {
    write_atomic(dir, EXIT_FILE, exit_code.to_string().as_bytes())
}

/// A new attempt in `dir` starts without the exit of an earlier use of it.
pub fn clear_exit(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(EXIT_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The attempt recorded in `dir` and its exit code, if it ended.
pub fn read(dir: &Path) -> Option<(AttemptRecord, Option<i32>)> {
    let json = fs::read(dir.join(ATTEMPT_FILE)).ok()?;
    let record: AttemptRecord = serde_json::from_slice(&json).ok()?;
    let exit = fs::read_to_string(dir.join(EXIT_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Some((record, exit))
}

/// The latest recorded attempt of the step whose directory is `step_dir`.
pub fn latest(step_dir: &Path) -> Option<(PathBuf, AttemptRecord, Option<i32>)> {
    let retries = fs::read_dir(step_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?
                .strip_prefix(RETRY_PREFIX)?
                .parse::<u32>()
                .ok()
        });
    let mut candidates: Vec<u32> = retries.chain([0]).collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    candidates.into_iter().find_map(|retry| {
        let dir = attempt_dir(step_dir, retry);
        read(&dir).map(|(record, exit)| (dir, record, exit))
    })
}

/// When process `pid` started (field 22 of `/proc/PID/stat`), on Linux.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past it.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kill what is left of an attempt whose runner died. False when its process id
/// now belongs to another process (reused), which is left alone.
pub fn kill_orphan(record: &AttemptRecord) -> bool {
    if let (Some(recorded), Some(now)) = (record.start_ticks, start_ticks(record.pgid))
        && recorded != now
    {
        return false;
    }
    // The leader gone, its group may live on: a process group id cannot be reused
    // while any member is alive, so these are the step's own processes.
    signal_group(record.pgid, Signal::SIGKILL);
    true
}

/// Kill every orphaned attempt under `root` (a runner's work directory; Jobs'
/// workspaces are not searched). Returns how many groups were signalled.
pub fn reap_orphans(root: &Path) -> usize {
    reap_under(root, 0)
}

/// Workflows sit a few levels down (namespace/name/workflow under a runner's
/// work directory); deeper is not searched.
const MAX_DEPTH: usize = 4;

fn reap_under(dir: &Path, depth: usize) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.filter_map(Result::ok) {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        let path = entry.path();
        match entry.file_name().to_str() {
            Some("workspace") => {}
            Some("steps") => {
                let steps = fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok);
                for step in steps {
                    if let Some((_, record, None)) = latest(&step.path())
                        && kill_orphan(&record)
                    {
                        tracing::warn!(step = %record.step, pgid = record.pgid, "killed a step left running by a runner that stopped");
                        killed += 1;
                    }
                }
            }
            _ if depth < MAX_DEPTH => killed += reap_under(&path, depth + 1),
            _ => {}
        }
    }
    killed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-record-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(step: &str, retry: u32, pgid: i32, start_ticks: Option<u64>) -> AttemptRecord {
        AttemptRecord {
            step: step.into(),
            retry,
            log_offset: 7,
            pgid,
            start_ticks,
        }
    }

    #[test]
    fn the_latest_attempt_and_its_exit_are_read_back() {
        let step = temp("latest");
        assert_eq!(latest(&step), None);
        write_attempt(&step, &record("s", 0, 10, Some(1))).unwrap();
        write_exit(&step, 0).unwrap();
        let retry = attempt_dir(&step, 2);
        fs::create_dir_all(&retry).unwrap();
        write_attempt(&retry, &record("s", 2, 12, None)).unwrap();
        assert_eq!(
            latest(&step),
            Some((retry.clone(), record("s", 2, 12, None), None))
        );
        write_exit(&retry, 3).unwrap();
        assert_eq!(latest(&step).map(|l| l.2), Some(Some(3)));
        clear_exit(&retry).unwrap();
        clear_exit(&retry).unwrap();
        assert_eq!(latest(&step).map(|l| l.2), Some(None));
        fs::remove_dir_all(&step).unwrap();
    }

    #[test]
    fn an_orphan_is_killed_but_a_reused_process_id_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let ticks = start_ticks(pid).expect("/proc on Linux");
        // Another process now holds the id: the record's start time differs.
        assert!(!kill_orphan(&record("s", 0, pid, Some(ticks + 1))));
        assert_eq!(child.try_wait().unwrap(), None, "left alone");

        let root = temp("reap");
        let step = root.join("ns/job/uid/steps/s");
        fs::create_dir_all(&step).unwrap();
        write_attempt(&step, &record("s", 0, pid, Some(ticks))).unwrap();
        assert_eq!(reap_orphans(&root), 1);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // Ended ones are not touched.
        write_exit(&step, 137).unwrap();
        assert_eq!(reap_orphans(&root), 0);
        fs::remove_dir_all(&root).unwrap();
    }
}
