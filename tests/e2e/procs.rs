//! Real `baton` processes for e2e tests: a controller restricted to the test's
//! namespace, runner agents with their own state directories, and the plugin verbs.
//! Children bind loopback ports the OS picks (read back from their logs), are killed
//! when dropped, and print their logs then (shown only when a test fails).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

pub const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// A child process with its output captured line by line.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    count: watch::Receiver<usize>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Proc> {
        Self::spawn_in(name, args, envs, Path::new("."))
    }

    /// [`Proc::spawn`] in the working directory `dir`.
    pub fn spawn_in(
        name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        dir: &Path,
    ) -> anyhow::Result<Proc> {
        Self::spawn_bin(Path::new(BATON), name, args, envs, dir)
    }

    /// [`Proc::spawn_in`] with another build of `baton` (a benchmark's release build).
    pub fn spawn_bin(
        bin: &Path,
        name: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        dir: &Path,
    ) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,warp::filters::trace=warn")
            .env_remove("BATON_RUNNER_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, count) = watch::channel(0usize);
        let tx = Arc::new(tx);
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        for reader in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(err),
        ] {
            let lines = lines.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(reader).lines();
                while let Ok(Some(line)) = r.next_line().await {
                    let n = {
                        let mut l = lines.lock().unwrap();
                        l.push(line);
                        l.len()
                    };
                    let _ = tx.send(n);
                }
            });
        }
        Ok(Proc {
            name: name.to_owned(),
            child,
            lines,
            count,
        })
    }

    pub fn logs(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Wait (bounded) until at least `n` log lines contain `needle`; returns the last.
    pub async fn wait_for_logs(&self, needle: &str, n: usize, secs: u64) -> anyhow::Result<String> {
        let mut count = self.count.clone();
        let found = async {
            loop {
                let hits: Vec<String> = self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|l| l.contains(needle))
                    .cloned()
                    .collect();
                if hits.len() >= n {
                    return hits.last().cloned();
                }
                if count.changed().await.is_err() {
                    return None;
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(secs), found).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => bail!("{} ended before logging {needle:?}", self.name),
            Err(_) => bail!("{} did not log {needle:?} (x{n}) within {secs}s", self.name),
        }
    }

    pub async fn wait_for_log(&self, needle: &str, secs: u64) -> anyhow::Result<String> {
        self.wait_for_logs(needle, 1, secs).await
    }

    /// Wait (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, secs: u64) -> anyhow::Result<ExitStatus> {
        tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .map_err(|_| anyhow!("{} still running after {secs}s", self.name))?
            .context("wait for the child")
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Send a signal (SIGSTOP freezes it with its connections open).
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = self.child.id().context("the child has exited")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, sig).with_context(|| format!("send {sig} to {}", self.name))
    }

    /// Kill at once (SIGKILL): a crash, not a shutdown.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        eprintln!(
            "----- logs of {} -----\n{}\n----- end of {} -----",
            self.name,
            self.logs(),
            self.name
        );
    }
}

/// `addr=HOST:PORT` from a log line.
fn addr_in(line: &str) -> anyhow::Result<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no addr= in {line:?}"))
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Wait (bounded) until GET `url` answers `status`. A new connection per try:
/// through a ClusterIP, a kept-alive connection stays with whichever pod
/// answered first, even a stale rule's, so it could repeat the wrong answer
/// long after kube-proxy had caught up.
pub async fn wait_status(url: &str, status: u16, secs: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match client.get(url).send().await {
            Ok(r) if r.status().as_u16() == status => return Ok(()),
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{url} did not answer {status} within {secs}s (last: {last})")
}

/// `baton controller` restricted to the test's namespace (`ns` may also name
/// several, comma-separated: `--namespace a,b`).
pub struct Controller {
    pub proc: Proc,
    pub url: String,
    pub addr: String,
}

impl Controller {
    /// Start on `addr` (`127.0.0.1:0`: a free port), wait until `/readyz` is 200.
    pub async fn start(ns: &str, addr: &str) -> anyhow::Result<Controller> {
        Self::start_with_env(ns, addr, &[]).await
    }

    /// [`Controller::start`] with extra environment (e.g. `BATON_RUNNER_LOST_AFTER`).
    pub async fn start_with_env(
        ns: &str,
        addr: &str,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Controller> {
        let proc = Proc::spawn(
            "controller",
            &[
                "controller",
                "--namespace",
                ns,
                "--listen",
                addr,
                "--ping-interval",
                "1s",
                "--poll-interval",
                "1s",
            ],
            envs,
        )?;
        let line = proc.wait_for_log("runner API listening", 30).await?;
        let addr = addr_in(&line)?;
        let url = format!("http://{addr}");
        wait_status(&format!("{url}/readyz"), 200, 60).await?;
        Ok(Controller { proc, url, addr })
    }
}

/// A `baton runner` agent.
pub struct Agent {
    pub proc: Proc,
    pub health: String,
    pub state_dir: PathBuf,
}

impl Agent {
    pub async fn start(
        server: &str,
        ns: &str,
        name: &str,
        state_dir: &Path,
        token: Option<&str>,
        labels: &str,
    ) -> anyhow::Result<Agent> {
        Self::start_with_backend(server, ns, name, state_dir, token, labels, "local").await
    }

    /// [`Agent::start`] with `--backend` (`local` or `kubernetes`).
    pub async fn start_with_backend(
        server: &str,
        ns: &str,
        name: &str,
        state_dir: &Path,
        token: Option<&str>,
        labels: &str,
        backend: &str,
    ) -> anyhow::Result<Agent> {
        Self::start_with_flags(server, ns, name, state_dir, token, labels, backend, &[]).await
    }

    /// [`Agent::start_with_backend`] with more `baton runner` flags (`--direct-only`).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_with_flags(
        server: &str,
        ns: &str,
        name: &str,
        state_dir: &Path,
        token: Option<&str>,
        labels: &str,
        backend: &str,
        flags: &[&str],
    ) -> anyhow::Result<Agent> {
        let dir = state_dir.to_string_lossy().into_owned();
        let mut envs = vec![];
        if let Some(t) = token {
            envs.push(("BATON_RUNNER_TOKEN", t));
        }
        let mut args = vec![
            "runner",
            "--server",
            server,
            "--name",
            name,
            "--state-dir",
            &dir,
            "--namespace",
            ns,
            "--labels",
            labels,
            "--backend",
            backend,
            "--health-addr",
            "127.0.0.1:0",
            "--ping-timeout",
            "5s",
            "--backoff-base",
            "200ms",
            "--backoff-max",
            "2s",
        ];
        args.extend_from_slice(flags);
        let proc = Proc::spawn(name, &args, &envs)?;
        let line = proc.wait_for_log("runner health listening", 30).await?;
        let health = format!("http://{}", addr_in(&line)?);
        Ok(Agent {
            proc,
            health,
            state_dir: state_dir.to_owned(),
        })
    }

    pub async fn wait_ready(&self, status: u16, secs: u64) -> anyhow::Result<()> {
        wait_status(&format!("{}/readyz", self.health), status, secs).await
    }
}

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(ns: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("baton-{ns}"));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run a `baton` plugin verb to completion: (exit code, stdout, stderr).
pub async fn baton(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(BATON).args(args).env("NO_COLOR", "1").output(),
    )
    .await
    .map_err(|_| anyhow!("baton {args:?} did not finish within 90s"))?
    .with_context(|| format!("run baton {args:?}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Like [`baton`], failing unless it exits 0; returns stdout.
pub async fn baton_ok(args: &[&str]) -> anyhow::Result<String> {
    let (code, out, err) = baton(args).await?;
    if code != 0 {
        bail!("baton {args:?} exited {code}: {err}");
    }
    Ok(out)
}
