//! The blob store on a real S3-compatible server: SeaweedFS (`weed`, built from
//! its Go module by hack/cluster/build.sh), started here on the node's own
//! address so the chart's controller pods reach it, with a login.
//!
//! The chart's two replicas keep their logs on emptyDirs and everything else on
//! S3. A runner (local backend) runs a Job whose second step edits, adds and
//! deletes files with `collect: changes`; the leader's pod is deleted; the new
//! leader — whose emptyDir never held a byte of the Job — serves the finished
//! logs and the archive, which `kubectl baton job artifacts` turns back into
//! exactly those changes. Deleting the Job deletes its blobs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use baton::crd::Job;
use baton::crd::job::JobPhase;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};

use crate::helm::{
    FULLNAME as LEASE, RELEASE, chart_dir, cleanup, controller_mints, helm, job_phase,
};
use crate::procs::{Agent, BATON, TempDir};
use crate::support::{TestNs, in_namespace, wait_for};

/// The node's own address: pods reach it, nothing else does.
const NODE_ADDR: &str = "192.0.2.2";
const BUCKET: &str = "baton";

/// A SeaweedFS server (master, volume, filer, S3 gateway in one process), killed
/// when dropped.
struct Seaweed {
    _child: tokio::process::Child,
    dir: TempDir,
    s3: String,
    filer: String,
    access: String,
    secret: String,
}

fn weed_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BATON_WEED") {
        return Ok(p.into());
    }
    let cache = std::env::var_os("BATON_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/baton")))
        .context("no HOME")?;
    let versions = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/hack/cluster/versions.env"
    ))?;
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix("SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-"))
        .and_then(|v| v.split('}').next())
        .context("SEAWEEDFS_VERSION in versions.env")?;
    let bin = cache.join(format!("seaweedfs-{version}/bin/weed"));
    ensure!(
        bin.exists(),
        "{} is missing: run hack/cluster/build.sh (make cluster-up)",
        bin.display()
    );
    Ok(bin)
}

impl Seaweed {
    async fn start(ns: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new(&format!("{ns}-weed"));
        let (access, secret) = (
            format!("baton-{ns}"),
            format!("secret-{}", std::process::id()),
        );
        let config = serde_json::json!({ "identities": [{
            "name": "baton",
            "credentials": [{ "accessKey": access, "secretKey": secret }],
            "actions": ["Read", "Write", "List", "Tagging", "Admin"],
        }]});
        std::fs::write(dir.join("s3.json"), config.to_string())?;
        std::fs::create_dir_all(dir.join("data"))?;
        let arg = |k: &str, v: &str| format!("-{k}={v}");
        let args = [
            arg("dir", &dir.join("data").to_string_lossy()),
            arg("ip", NODE_ADDR),
            arg("ip.bind", NODE_ADDR),
            arg("master.port", "19333"),
            arg("volume.port", "19080"),
            arg("filer.port", "19888"),
            arg("s3.port", "19900"),
            arg("s3.config", &dir.join("s3.json").to_string_lossy()),
            arg("bucket", BUCKET),
            arg("admin.ui", "false"),
            arg("webdav", "false"),
            arg("s3.port.iceberg", "0"),
            arg("s3.port.lance", "0"),
            arg("s3.iam", "false"),
        ];
        let log = std::fs::File::create(dir.join("weed.log"))?;
        let child = tokio::process::Command::new(weed_bin()?)
            .arg("mini")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start weed")?;
        let weed = Self {
            _child: child,
            s3: format!("http://{NODE_ADDR}:19900"),
            filer: format!("http://{NODE_ADDR}:19888"),
            dir,
            access,
            secret,
        };
        weed.until(&format!("/buckets/{BUCKET}/"), true, 60)
            .await
            .with_context(|| {
                std::fs::read_to_string(weed.dir.join("weed.log")).unwrap_or_default()
            })?;
        Ok(weed)
    }

    /// Wait until the filer has (or no longer has) `path`.
    async fn until(&self, path: &str, present: bool, secs: u64) -> anyhow::Result<()> {
        let http = crate::procs::http();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let found = http
                .get(format!("{}{path}", self.filer))
                .header("accept", "application/json")
                .send()
                .await
                .map(|r| r.status().as_u16());
            if matches!(found, Ok(200)) == present {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{path} in SeaweedFS: want present={present}, got {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test]
async fn finished_logs_and_archives_outlive_the_leader_on_s3_with_no_shared_volume() {
    in_namespace("store-s3", |ns| async move {
        let weed = Seaweed::start(&ns.name).await?;
        let result = through_failover(&ns, &weed).await;
        cleanup(&ns).await;
        result
    })
    .await;
}

async fn s3_secret(ns: &TestNs, weed: &Seaweed) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "store" },
        "stringData": {
            "AWS_ACCESS_KEY_ID": weed.access,
            "AWS_SECRET_ACCESS_KEY": weed.secret,
            "AWS_ENDPOINT_URL": weed.s3,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
        },
    }))?;
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

fn changes_job() -> anyhow::Result<Job> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": "changes" },
        "spec": {
            "runnerSelector": { "matchLabels": { "pool": "chart" } },
            "steps": [
                {
                    "name": "prepare",
                    "image": "busybox",
                    "script": "printf 'old\\n' > a.txt; printf 'gone\\n' > b.txt; printf 'same\\n' > keep.txt; echo prepared",
                },
                {
                    "name": "change",
                    "image": "busybox",
                    "dependsOn": ["prepare"],
                    "collect": "changes",
                    "script": "printf 'new\\n' > a.txt; rm b.txt; printf 'added\\n' > c.txt; echo changed",
                },
            ],
        },
    }))?)
}

async fn through_failover(ns: &TestNs, weed: &Seaweed) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    s3_secret(ns, weed).await?;
    let chart = chart_dir();
    let (watch, url) = (
        format!("watchNamespace={n}"),
        format!("store.url=s3://{BUCKET}/{n}"),
    );
    helm(&[
        "install",
        RELEASE,
        chart.to_str().context("chart path")?,
        "--namespace",
        n,
        "--set",
        &watch,
        "--set",
        &url,
        "--set",
        "store.existingSecret=store",
        "--set",
        "controller.pingInterval=1s",
        "--wait",
        "--timeout",
        "120s",
    ])
    .await?;
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), n);
    let holder = |l: &Lease| {
        l.spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty())
    };
    let lease = wait_for(
        &leases,
        LEASE,
        |l: Option<&Lease>| l.and_then(holder).is_some(),
        60,
    )
    .await?;
    let leader = holder(&lease).context("no leader")?;

    let (token, _) = controller_mints(ns, "store-token").await?;
    let ip = Api::<Service>::namespaced(ns.client.clone(), n)
        .get(RELEASE)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service has no ClusterIP")?;
    let server = format!("http://{ip}:8080");
    let dir = TempDir::new(n);
    let runner = Agent::start(&server, n, "r1", &dir.join("r1"), Some(&token), "").await?;
    runner.wait_ready(200, 60).await?;

    let jobs: Api<Job> = Api::namespaced(ns.client.clone(), n);
    jobs.create(&PostParams::default(), &changes_job()?).await?;
    let done = wait_for(&jobs, "changes", job_phase(JobPhase::Succeeded), 90).await?;
    let st = done.status.clone().context("status")?;
    let change = st
        .steps
        .iter()
        .find(|s| s.name == "change")
        .context("step change")?;
    let packed = change
        .artifacts
        .clone()
        .context("the step's archive in its status")?;
    ensure!(
        (packed.added, packed.modified, packed.deleted) == (1, 1, 1),
        "one file added, one modified, one deleted: {packed:?}"
    );
    // The finished Job's logs reach S3 (under the chart's prefix).
    let uid = done.uid().context("uid")?;
    let job_dir = format!("/buckets/{BUCKET}/{n}/jobs/{n}/changes-{uid}");
    weed.until(&format!("{job_dir}/logs/change.log"), true, 30)
        .await?;
    weed.until(&format!("{job_dir}/logs/prepare.log"), true, 30)
        .await?;

    // The leader goes; the standby, whose emptyDir never held these logs, leads.
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), n);
    pods.delete(&leader, &DeleteParams::default()).await?;
    wait_for(
        &leases,
        LEASE,
        |l: Option<&Lease>| l.and_then(holder).is_some_and(|h| h != leader),
        60,
    )
    .await?;
    runner.wait_ready(200, 60).await?;
    let reader = crate::jobs::sa_token(ns, "reader", true).await?;
    let read = |step: &'static str| {
        let (server, reader) = (server.clone(), reader.clone());
        async move { crate::jobs::read_log(&server, n, "changes", step, Some(&reader)).await }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The Service points at the new leader once it labelled its pod.
        match read("change").await? {
            (200, log) if log == "changed\n" => break,
            other if Instant::now() > deadline => {
                bail!("the new leader's read of change's log: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    ensure!(
        read("prepare").await? == (200, "prepared\n".to_owned()),
        "prepare's log from S3"
    );

    // The archive, through the new leader, reproduces exactly the step's changes
    // over the workspace as it was before the step.
    let out = dir.join("out");
    std::fs::create_dir_all(&out)?;
    for (file, text) in [
        ("a.txt", "old\n"),
        ("b.txt", "gone\n"),
        ("keep.txt", "same\n"),
    ] {
        std::fs::write(out.join(file), text)?;
    }
    let got = tokio::process::Command::new(BATON)
        .args([
            "job",
            "artifacts",
            "changes",
            "-o",
            &out.to_string_lossy(),
            "-n",
            n,
            // The Service's plain http:// on this node's cluster network.
            "--insecure",
        ])
        .env("BATON_SERVER", &server)
        .env("BATON_TOKEN", &reader)
        .output()
        .await?;
    let said = String::from_utf8_lossy(&got.stdout);
    ensure!(
        got.status.success() && said.contains("step change: 2 paths written, 1 deleted"),
        "job artifacts: {said}{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let read_file = |p: &str| std::fs::read_to_string(out.join(p)).ok();
    ensure!(
        read_file("a.txt").as_deref() == Some("new\n"),
        "a.txt modified"
    );
    ensure!(
        read_file("c.txt").as_deref() == Some("added\n"),
        "c.txt added"
    );
    ensure!(read_file("b.txt").is_none(), "b.txt deleted");
    ensure!(
        read_file("keep.txt").as_deref() == Some("same\n"),
        "keep.txt untouched"
    );

    // A reader who may not get the Job gets no archive either.
    let stranger = crate::jobs::sa_token(ns, "stranger", false).await?;
    let refused = crate::procs::http()
        .get(format!(
            "{server}/v1/jobs/{n}/changes/artifacts/{}",
            packed.digest
        ))
        .bearer_auth(&stranger)
        .send()
        .await?;
    ensure!(
        refused.status() == 403,
        "a stranger's download: {}",
        refused.status()
    );

    // Deleting the Job deletes its blobs.
    jobs.delete("changes", &DeleteParams::default()).await?;
    weed.until(&format!("{job_dir}/logs/change.log"), false, 30)
        .await?;
    let hex = packed.digest.trim_start_matches("sha256:");
    weed.until(&format!("{job_dir}/artifacts/{hex}.tar.zst"), false, 30)
        .await?;
    drop(runner);
    Ok(())
}
