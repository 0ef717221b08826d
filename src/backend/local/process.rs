//! One step as a local process: spawn it in its own process group with stdout and
//! stderr on one pipe, copy that pipe into the step's log file, and signal the
//! whole group, so nothing the step started outlives it. The copy is masked of
//! the step's secret values ([`Masker`]) on its way into the file, so no secret
//! is ever on disk in a log, and every offset into the file is one into the
//! masked log.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::launch::Launch;
use super::record;
use crate::backend::BackendError;
use crate::backend::mask::{Masker, Patterns};

/// How long the pipe is still read after the step's process group was killed: only
/// a process that left the group (`setsid`) can hold it open that long.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

const READ_BUFFER: usize = 64 * 1024;

/// How much of the step's log is in its file, and whether more can come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogProgress {
    pub len: u64,
    pub closed: bool,
}

/// How the step's main process ended: its exit code, or why we cannot tell.
pub type Exit = Option<Result<i32, String>>;

/// A started step: its process group and what its supervisor publishes.
#[derive(Debug)]
pub struct Handle {
    pub pgid: i32,
    /// Set once, after the log is closed, so a waiter sees the complete log.
    pub exit: watch::Receiver<Exit>,
    pub log: watch::Receiver<LogProgress>,
    /// Set before the backend ends the step itself (stopped, or given up when the
    /// backend is dropped): such an end is not the step's own exit and is not
    /// recorded, so a runner restarted before the end was reported counts the step
    /// as lost, not as failed with the signal's exit code.
    pub interrupted: Arc<AtomicBool>,
}

impl Handle {
    /// The handle of a step that ended before this process (read back from disk).
    pub fn ended(pgid: i32, exit_code: i32, log_len: u64) -> Self {
        let log = LogProgress {
            len: log_len,
            closed: true,
        };
        Self {
            pgid,
            exit: watch::channel(Some(Ok(exit_code))).1,
            log: watch::channel(log).1,
            interrupted: Arc::default(),
        }
    }
}

/// Spawn the step's process and its supervisor task; needs a tokio runtime. Its
/// exit code is recorded in `record_dir` once it ended.
pub fn spawn(
    step: &str,
    launch: Launch,
    log_file: std::fs::File,
    record_dir: PathBuf,
    secrets: Patterns,
) -> Result<Handle, BackendError> {
    let io_err = |doing: &'static str| {
        move |source| BackendError::Io {
            step: step.to_owned(),
            doing,
            source,
        }
    };
    let (reader, writer) = std::io::pipe().map_err(io_err("create the log pipe"))?;
    let writer_for_stderr = writer.try_clone().map_err(io_err("create the log pipe"))?;
    let mut command = tokio::process::Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_for_stderr)
        // Its own group, so a signal reaches everything the step started.
        .process_group(0)
        .kill_on_drop(false);
    let child = command.spawn().map_err(|source| BackendError::Spawn {
        step: step.to_owned(),
        program: launch.program.to_string_lossy().into_owned(),
        source,
    })?;
    // The command holds our copies of the pipe's write end: drop them, or the
    // log would never reach end-of-file.
    drop(command);
    let pid = child.id().ok_or_else(|| BackendError::Failed {
        step: step.to_owned(),
        doing: "start",
        message: "the process ended before its id was known".into(),
    })?;
    let pgid = i32::try_from(pid).map_err(|_| BackendError::Failed {
        step: step.to_owned(),
        doing: "start",
        message: format!("process id {pid} out of range"),
    })?;
    let pipe = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
        .map_err(io_err("watch the log pipe"))?;
    let (exit_tx, exit) = watch::channel(None);
    let (log_tx, log) = watch::channel(LogProgress::default());
    let interrupted = Arc::new(AtomicBool::new(false));
    let supervisor = Supervisor {
        step: step.to_owned(),
        pgid,
        exit_tx,
        log_tx,
        record_dir,
        interrupted: interrupted.clone(),
        masker: Masker::new(secrets),
    };
    tokio::spawn(supervisor.run(child, pipe, tokio::fs::File::from_std(log_file)));
    Ok(Handle {
        pgid,
        exit,
        log,
        interrupted,
    })
}

struct Supervisor {
    step: String,
    pgid: i32,
    exit_tx: watch::Sender<Exit>,
    log_tx: watch::Sender<LogProgress>,
    record_dir: PathBuf,
    interrupted: Arc<AtomicBool>,
    masker: Masker,
}

impl Supervisor {
    async fn run(
        mut self,
        mut child: tokio::process::Child,
        mut pipe: pipe::Receiver,
        mut log: tokio::fs::File,
    ) {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut exit: Exit = None;
        let mut drain_until = None;
        let mut write_failed = false;
        loop {
            tokio::select! {
                read = pipe.read(&mut buf) => match read {
                    Ok(0) => break,
                    // After a failed write, keep reading (or the step blocks on a full pipe) but drop it.
                    Ok(_) if write_failed => {}
                    Ok(n) => {
                        let masked = self.masker.push(&buf[..n]);
                        write_failed = !self.append(&mut log, &masked).await;
                    }
                    Err(error) => {
                        tracing::warn!(step = %self.step, %error, "read step output");
                        break;
                    }
                },
                status = child.wait(), if exit.is_none() => {
                    exit = Some(status.map(exit_code).map_err(|e| format!("wait for the process: {e}")));
                    // Like a container whose main process ended: what it left running is killed.
                    signal_group(self.pgid, Signal::SIGKILL);
                    drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                },
                () = sleep_until(drain_until) => {
                    tracing::warn!(step = %self.step, "a process outside the step's group holds its output open; log closed");
                    break;
                },
            }
        }
        // What was held back in case it began a secret value.
        let rest = self.masker.finish();
        if !write_failed {
            self.append(&mut log, &rest).await;
        }
        self.log_tx.send_modify(|p| p.closed = true);
        let exit = match exit {
            Some(exit) => exit,
            // The output closed before the process ended (it closed stdout and stderr).
            None => {
                let status = child.wait().await;
                signal_group(self.pgid, Signal::SIGKILL);
                status
                    .map(exit_code)
                    .map_err(|e| format!("wait for the process: {e}"))
            }
        };
        // On disk before anyone learns of it: a runner that reported the step's end
        // and then restarted finds the end, not a step to count as lost.
        if !self.interrupted.load(Ordering::SeqCst) {
            // An end we cannot tell counts as killed, as `discover` reports it.
            let code = exit
                .as_ref()
                .copied()
                .unwrap_or(128 + Signal::SIGKILL as i32);
            if let Err(error) = record::write_exit(&self.record_dir, code) {
                tracing::warn!(step = %self.step, %error, "record the step's exit");
            }
        }
        self.exit_tx.send_replace(Some(exit));
    }
}

impl Supervisor {
    /// Append masked bytes to the log and announce them; `false` if the write
    /// failed (the rest of the log is lost, said once here).
    async fn append(&self, log: &mut tokio::fs::File, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        // tokio's File writes in the background: flush, so what we announce is in the file.
        let written = match log.write_all(bytes).await {
            Ok(()) => log.flush().await,
            Err(error) => Err(error),
        };
        match written {
            Ok(()) => {
                self.log_tx.send_modify(|p| p.len += bytes.len() as u64);
                true
            }
            Err(error) => {
                tracing::warn!(step = %self.step, %error, "write step log; the rest of it is lost");
                false
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Exit code as Kubernetes reports it: the code, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Send `signal` to every process of the group; a group that is gone is fine.
pub fn signal_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => tracing::warn!(pgid, %signal, %error, "signal step process group"),
    }
}

/// Wait until the main process ended.
pub async fn wait(exit: &mut watch::Receiver<Exit>) -> Result<i32, String> {
    match exit.wait_for(Option::is_some).await {
        Ok(exit) => exit.clone().unwrap_or_else(|| Err("no exit status".into())),
        Err(_) => Err("the step's supervisor ended without an exit status".into()),
    }
}

/// SIGTERM the group, SIGKILL it after `grace`, return once the main process ended.
pub async fn stop(
    pgid: i32,
    mut exit: watch::Receiver<Exit>,
    grace: Duration,
) -> Result<i32, String> {
    if exit.borrow().is_some() {
        return wait(&mut exit).await;
    }
    signal_group(pgid, Signal::SIGTERM);
    if let Ok(code) = tokio::time::timeout(grace, wait(&mut exit)).await {
        // The supervisor SIGKILLs whatever of the group ignored SIGTERM.
        return code;
    }
    signal_group(pgid, Signal::SIGKILL);
    wait(&mut exit).await
}
