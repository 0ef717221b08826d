//! Change archives out: `kubectl baton job artifacts NAME [--step S] -o DIR`
//! downloads the archives a Job's status names from the controller's server and
//! extracts them (as `baton run --output DIR` does for a local run): in the order
//! the steps ended, each checked against its digest before a byte is extracted,
//! and extracted safely (no path leaves DIR; caps on size, count and ratio).

use std::io::Seek;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use kube::api::Api;

use crate::archive::{self, Limits, received};
use crate::cli::job_logs::{LogClient, ServerArgs};
use crate::cli::plugin::KubeArgs;
use crate::crd::Job;
use crate::crd::artifacts::StepArtifacts;
use crate::crd::job::StepStatus;

/// The steps that left an archive, in the order they ended.
pub fn in_order(steps: &[StepStatus]) -> Vec<(&StepStatus, &StepArtifacts)> {
    let mut ended: Vec<_> = steps
        .iter()
        .filter_map(|s| Some((s, s.artifacts.as_ref()?)))
        .collect();
    ended.sort_by_key(|(s, _)| s.completion_time.as_ref().map(|t| t.0));
    ended
}

/// Extract one step's archive into `dest` and say what it did.
pub fn extract_step(step: &str, archive: std::fs::File, dest: &Path) -> anyhow::Result<()> {
    let done = archive::extract(std::io::BufReader::new(archive), dest, &Limits::default())
        .map_err(|e| anyhow!("extract the changes of step {step}: {e}"))?;
    println!(
        "step {step}: {} path{} written, {} deleted in {}",
        done.written,
        if done.written == 1 { "" } else { "s" },
        done.deleted,
        dest.display()
    );
    Ok(())
}

/// The archives to fetch: every step's, or `only`'s (which must have one).
fn chosen<'a>(
    job: &str,
    steps: &'a [StepStatus],
    only: Option<&str>,
) -> anyhow::Result<Vec<(&'a StepStatus, &'a StepArtifacts)>> {
    let all = in_order(steps);
    let Some(only) = only else {
        return Ok(all);
    };
    match all.iter().find(|(s, _)| s.name == only) {
        Some(one) => Ok(vec![*one]),
        None if steps.iter().any(|s| s.name == only) => {
            bail!(
                "step {only} of Job {job} left no archive (no `collect`/`artifacts`, or nothing changed)"
            )
        }
        None => {
            let names: Vec<&str> = all.iter().map(|(s, _)| s.name.as_str()).collect();
            bail!("Job {job} has no step {only:?}; steps with archives: {names:?}")
        }
    }
}

pub async fn run(
    name: &str,
    step: Option<&str>,
    out: &Path,
    server: &ServerArgs,
    kube: &KubeArgs,
) -> anyhow::Result<i32> {
    let reader = LogClient::new(server)?;
    let (client, ns) = kube.connect().await?;
    let job = Api::<Job>::namespaced(client, &ns)
        .get(name)
        .await
        .with_context(|| format!("get Job {name}"))?;
    let steps = job.status.map(|s| s.steps).unwrap_or_default();
    let wanted = chosen(name, &steps, step)?;
    if wanted.is_empty() {
        eprintln!(
            "Job {name} has no change archives (no step has `collect` or `artifacts`, or nothing changed)"
        );
        return Ok(0);
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    for (status, artifacts) in wanted {
        let file = download(&reader, (&ns, name), artifacts).await?;
        let (step, dest) = (status.name.clone(), out.to_path_buf());
        tokio::task::spawn_blocking(move || extract_step(&step, file, &dest))
            .await
            .context("the extraction task")??;
    }
    Ok(0)
}

/// Fetch an archive into an unnamed temporary file, checking size and digest.
async fn download(
    reader: &LogClient,
    (ns, name): (&str, &str),
    artifacts: &StepArtifacts,
) -> anyhow::Result<std::fs::File> {
    let path = format!("/v1/jobs/{ns}/{name}/artifacts/{}", artifacts.digest);
    let res = reader
        .get(&path, &[], &format!("the archive {}", artifacts.digest))
        .await?;
    let mut file = tempfile::tempfile().context("create a temporary file")?;
    let size = u64::try_from(artifacts.size).unwrap_or(0);
    received::receive(res.bytes_stream(), &mut file, &artifacts.digest, size)
        .await
        .with_context(|| {
            format!(
                "the archive {} is not what the Job's status says",
                artifacts.digest
            )
        })?;
    file.rewind().context("rewind the temporary file")?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn step(name: &str, ended: i64, digest: Option<&str>) -> StepStatus {
        StepStatus {
            name: name.into(),
            completion_time: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(ended).unwrap(),
            )),
            artifacts: digest.map(|d| StepArtifacts {
                digest: d.into(),
                size: 1,
                added: 1,
                modified: 0,
                deleted: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn archives_come_in_the_order_their_steps_ended() {
        let steps = [
            step("b", 20, Some("d2")),
            step("a", 10, Some("d1")),
            step("c", 5, None),
        ];
        let names: Vec<&str> = in_order(&steps)
            .iter()
            .map(|(s, _)| s.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_step_without_an_archive_or_unknown_is_a_clear_refusal() {
        let steps = [step("a", 10, Some("d1")), step("c", 5, None)];
        assert_eq!(chosen("j", &steps, Some("a")).unwrap().len(), 1);
        let none = chosen("j", &steps, Some("c")).unwrap_err().to_string();
        assert!(none.contains("step c of Job j left no archive"), "{none}");
        let unknown = chosen("j", &steps, Some("zz")).unwrap_err().to_string();
        assert!(
            unknown.contains("no step \"zz\"") && unknown.contains("[\"a\"]"),
            "{unknown}"
        );
    }
}
