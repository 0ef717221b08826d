//! Content in, changes out, on the real cluster: `kubectl baton job run FILE
//! --upload DIR` sends a small repository (without `.git/` and what
//! `.gitignore` ignores) once; the runner unpacks it into the workspace before
//! the first step; a step edits, adds and deletes files; `job artifacts`
//! reproduces exactly those changes over a copy of what was sent. A user who may
//! not create Jobs cannot upload, and a Job naming content that was never
//! uploaded fails saying so.

use std::path::Path;

use anyhow::{Context, ensure};
use baton::archive::snapshot;
use baton::crd::conditions;
use baton::crd::job::{JobPhase, StepPhase};
use kube::api::PostParams;

use crate::jobs::{Setup, jobs, phase_is, sa_token_may, setup, setup_with};
use crate::procs::{BATON, TempDir};
use crate::support::{STEP_IMAGE, TestNs, in_namespace, wait_for};

fn write(root: &Path, path: &str, body: &str) -> anyhow::Result<()> {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().context("parent")?)?;
    std::fs::write(full, body)?;
    Ok(())
}

/// A checkout: what is sent, and what must stay home.
fn repository(root: &Path) -> anyhow::Result<()> {
    write(root, "README.md", "# demo\n")?;
    write(root, "src/lib.rs", "pub fn f() {}\n")?;
    write(root, "src/old.rs", "// to be removed\n")?;
    write(root, ".gitignore", "/target\n*.log\n")?;
    write(root, "target/debug/app", "a build output\n")?;
    write(root, "debug.log", "noise\n")?;
    write(root, ".git/HEAD", "ref: refs/heads/main\n")?;
    Ok(())
}

const MANIFEST: &str = "apiVersion: baton.dev/v1alpha1
kind: Job
metadata:
  generateName: checkout-
spec:
  runnerSelector:
    matchLabels:
      pool: e2e
  steps:
  - name: check
    image: busybox
    script: |
      test -f src/lib.rs && test -f README.md
      test ! -e target && test ! -e debug.log && test ! -e .git
      echo seeded
  - name: edit
    image: busybox
    dependsOn: [check]
    collect: changes
    script: |
      echo '// edited' >> src/lib.rs
      rm src/old.rs
      mkdir gen && echo new > gen/out.txt
";

/// `baton job run FILE --upload DIR` as `token`'s user: (exit code, stderr).
async fn run_upload(
    ns: &TestNs,
    dir: &Path,
    server: &str,
    token: &str,
) -> anyhow::Result<(i32, String)> {
    let out = tokio::process::Command::new(BATON)
        .args(["job", "run", "job.yaml", "--upload", "repo", "-n", &ns.name])
        .current_dir(dir)
        .env("BATON_SERVER", server)
        .env("BATON_TOKEN", token)
        .output()
        .await?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), said))
}

/// The Job `job run` said it created.
fn created(said: &str) -> anyhow::Result<String> {
    said.lines()
        .find_map(|l| l.strip_prefix("job.baton.dev/")?.strip_suffix(" created"))
        .map(str::to_owned)
        .with_context(|| format!("no Job created: {said}"))
}

/// What the workspace holds after the Job: what was sent, with the edit step's
/// changes made by hand.
fn expected(home: &Path) -> anyhow::Result<std::path::PathBuf> {
    let want = home.join("expected");
    for file in ["README.md", "src/lib.rs", ".gitignore"] {
        std::fs::create_dir_all(want.join(file).parent().context("parent")?)?;
        std::fs::copy(home.join("repo").join(file), want.join(file))?;
    }
    write(&want, "src/lib.rs", "pub fn f() {}\n// edited\n")?;
    write(&want, "gen/out.txt", "new\n")?;
    Ok(want)
}

/// A Job sent with `--upload` ran to the end, its changes extracted over a copy
/// of what was sent.
struct Reproduced {
    s: Setup,
    home: TempDir,
    name: String,
    uid: String,
}

/// Upload the repository, run the Job on a `backend` runner with steps of
/// `image`, check the edit step's archive, send the same tree again (found, not
/// sent), and extract the changes with `job artifacts`: exactly the workspace
/// the steps left.
async fn upload_edit_reproduce(
    ns: &TestNs,
    backend: &str,
    image: &str,
) -> anyhow::Result<Reproduced> {
    let s = setup_with(ns, backend).await?;
    let dev = sa_token_may(ns, "dev", &["get", "create"]).await?;
    let home = TempDir::new(&format!("{}-home", ns.name));
    repository(&home.join("repo"))?;
    std::fs::write(home.join("job.yaml"), MANIFEST.replace("busybox", image))?;

    let (code, said) = run_upload(ns, &home.0, &s.ctl.url, &dev).await?;
    ensure!(code == 0, "job run --upload: {said}");
    ensure!(said.contains("uploaded sha256:"), "{said}");
    let name = created(&said)?;
    let done = wait_for(&jobs(ns), &name, phase_is(JobPhase::Succeeded), 120).await?;
    let content = done.spec.content.clone().context("spec.content")?;
    let status = done.status.clone().unwrap_or_default();
    let edit = status
        .steps
        .iter()
        .find(|s| s.name == "edit")
        .context("edit")?;
    ensure!(edit.phase == StepPhase::Succeeded, "{edit:?}");
    let packed = edit.artifacts.clone().context("edit's archive")?;
    ensure!(
        (packed.added, packed.modified, packed.deleted) == (2, 1, 1),
        "gen/ and gen/out.txt added, src/lib.rs modified, src/old.rs deleted: {packed:?}"
    );

    // The same tree again: found on the server, not sent twice.
    let (code, again) = run_upload(ns, &home.0, &s.ctl.url, &dev).await?;
    ensure!(code == 0, "second run: {again}");
    ensure!(again.contains("on the server already"), "{again}");
    ensure!(!again.contains("uploaded sha256:"), "{again}");
    let second = created(&again)?;
    let twice = wait_for(&jobs(ns), &second, phase_is(JobPhase::Succeeded), 120).await?;
    ensure!(
        twice.spec.content == Some(content),
        "the same content address"
    );

    // What was sent, plus the step's changes, is the workspace the steps left.
    let out = home.join("out");
    for file in ["README.md", "src/lib.rs", "src/old.rs", ".gitignore"] {
        std::fs::create_dir_all(out.join(file).parent().context("parent")?)?;
        std::fs::copy(home.join("repo").join(file), out.join(file))?;
    }
    let got = tokio::process::Command::new(BATON)
        .args([
            "job",
            "artifacts",
            &name,
            "-o",
            &out.to_string_lossy(),
            "-n",
            &ns.name,
        ])
        .env("BATON_SERVER", &s.ctl.url)
        .env("BATON_TOKEN", &dev)
        .output()
        .await?;
    ensure!(
        got.status.success(),
        "job artifacts: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    ensure!(
        snapshot(&out)? == snapshot(&expected(&home.0)?)?,
        "the extracted tree is not what was sent plus the step's changes"
    );
    ensure!(!out.join("src/old.rs").exists(), "src/old.rs deleted");
    let uid = done.metadata.uid.clone().context("uid")?;
    Ok(Reproduced { s, home, name, uid })
}

#[tokio::test]
async fn an_uploaded_checkout_seeds_the_workspace_and_job_artifacts_reproduce_the_changes() {
    in_namespace("content", |ns| async move {
        let Reproduced { s, home, name, uid } =
            upload_edit_reproduce(&ns, "local", "busybox").await?;
        let workspace = s
            .dir
            .join("r1-work")
            .join(&ns.name)
            .join(&name)
            .join(&uid)
            .join("workspace");
        ensure!(
            snapshot(&home.join("out"))? == snapshot(&workspace)?,
            "the extracted tree differs from the runner's workspace {}",
            workspace.display()
        );
        Ok(())
    })
    .await;
}

/// The same through step pods: the content goes into the Job's workspace claim
/// through a helper pod, and the edit step's changes come out through another.
#[tokio::test]
async fn an_uploaded_checkout_seeds_step_pods_and_their_changes_come_back() {
    in_namespace("content-pods", |ns| async move {
        let done = upload_edit_reproduce(&ns, "kubernetes", STEP_IMAGE).await?;
        // The helpers are gone with the Job's end, as its step pods are.
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(ns.client.clone(), &ns.name);
        let selector = format!("baton.dev/job-uid={},baton.dev/workspace-helper", done.uid);
        let left = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await?;
        ensure!(
            left.items
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_some()),
            "helper pods left: {:?}",
            left.items
                .iter()
                .map(|p| p.metadata.name.clone())
                .collect::<Vec<_>>()
        );
        // The default claim content brought is removed with the finished Job,
        // as a `spec.workspace` claim is.
        let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            kube::Api::namespaced(ns.client.clone(), &ns.name);
        let claim = format!("{}-workspace", done.name);
        let removed = kube::runtime::wait::await_condition(
            claims,
            &claim,
            |c: Option<&k8s_openapi::api::core::v1::PersistentVolumeClaim>| {
                c.is_none_or(|c| c.metadata.deletion_timestamp.is_some())
            },
        );
        let gone = tokio::time::timeout(std::time::Duration::from_secs(30), removed)
            .await
            .is_ok_and(|watched| watched.is_ok());
        ensure!(
            gone,
            "the workspace claim {claim} outlived its finished Job"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn uploads_need_create_on_jobs_and_jobs_need_their_content_uploaded() {
    in_namespace("content-refused", |ns| async move {
        let s = setup(&ns).await?;
        let reader = sa_token_may(&ns, "reader", &["get"]).await?;
        let home = TempDir::new(&format!("{}-home", ns.name));
        repository(&home.join("repo"))?;
        std::fs::write(home.join("job.yaml"), MANIFEST)?;
        let (code, said) = run_upload(&ns, &home.0, &s.ctl.url, &reader).await?;
        ensure!(code != 0, "a reader uploaded: {said}");
        ensure!(
            said.contains("refused the upload") && said.contains("403"),
            "{said}"
        );
        ensure!(
            jobs(&ns).list(&Default::default()).await?.items.is_empty(),
            "no Job made"
        );

        // A Job naming content nobody uploaded fails before any step runs.
        let mut job: baton::crd::Job = serde_saphyr::from_str(MANIFEST)?;
        job.metadata.generate_name = None;
        job.metadata.name = Some("unsent".into());
        job.spec.content = Some(baton::crd::job::Content {
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 10,
        });
        jobs(&ns).create(&PostParams::default(), &job).await?;
        let failed = wait_for(&jobs(&ns), "unsent", phase_is(JobPhase::Failed), 60).await?;
        let status = failed.status.unwrap_or_default();
        let why = conditions::find(&status.conditions, "Failed").context("Failed condition")?;
        ensure!(why.reason == "ContentUnavailable", "{why:?}");
        ensure!(why.message.contains("ContentNotFound"), "{why:?}");
        ensure!(
            status.steps.iter().all(|s| s.phase == StepPhase::Pending),
            "no step ran"
        );
        Ok(())
    })
    .await;
}
