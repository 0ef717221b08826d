//! `kubectl baton job run FILE --upload DIR`: DIR packed as the Job's content
//! (what `spec.inputs` maps, less `.git/` and what `.gitignore` ignores), sent
//! to the controller once (the same tree, in the same namespace, is found there
//! and not sent again), and named in the Job's `spec.content`.

use std::path::Path;

use anyhow::{Context, bail};
use futures::TryStreamExt;

use super::content::{self, Packing, Progress};
use super::job_logs::LogClient;
use super::terminal::sanitize;
use crate::crd::Job;
use crate::crd::job::Content;

/// Pack `dir`, make sure the server holds it, and point `job` at it.
pub async fn attach(job: &mut Job, dir: &Path, ns: &str, server: &LogClient) -> anyhow::Result<()> {
    let inputs = job.spec.inputs.clone().unwrap_or_default();
    let packing = content::pack_off_runtime(dir.to_owned(), inputs).await?;
    eprintln!("packed {}: {}", dir.display(), packing.summary());
    let path = format!("/v1/namespaces/{ns}/uploads/{}", packing.packed.digest);
    if held(server, &path).await? {
        eprintln!(
            "content {} is on the server already",
            short(&packing.packed.digest)
        );
    } else {
        send(server, &path, &packing).await?;
    }
    job.spec.content = Some(Content {
        digest: packing.packed.digest.clone(),
        size: i64::try_from(packing.packed.size).context("the archive's size")?,
    });
    Ok(())
}

/// `sha256:0123456789ab`: enough to tell uploads apart in a message.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// Whether the server holds the upload at `path` (HEAD: 200 or 404).
async fn held(server: &LogClient, path: &str) -> anyhow::Result<bool> {
    let res = server
        .request(reqwest::Method::HEAD, path)?
        .send()
        .await
        .with_context(|| format!("reach the server at {}", server.base()))?;
    match res.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        401 | 403 => bail!(
            "the server refused the upload ({}): the token's user must be allowed to create jobs.baton.dev in this namespace, and the token minted for Baton (`kubectl create token SA --audience baton`)",
            res.status()
        ),
        _ => bail!(
            "the server answered {} to a check for the upload",
            res.status()
        ),
    }
}

/// PUT the archive, streamed from its file, with progress on a terminal.
async fn send(server: &LogClient, path: &str, packing: &Packing) -> anyhow::Result<()> {
    let size = packing.packed.size;
    let file = tokio::fs::File::open(packing.path())
        .await
        .context("open the packed archive")?;
    let mut progress = Progress::new("uploading", size);
    let body = tokio_util::io::ReaderStream::new(file).inspect_ok(move |chunk| {
        progress.advance(chunk.len() as u64);
    });
    let res = server
        .request(reqwest::Method::PUT, path)?
        .header(reqwest::header::CONTENT_TYPE, "application/zstd")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .with_context(|| format!("send the content to {}", server.base()))?;
    let status = res.status();
    if !status.is_success() {
        let why = sanitize(&res.text().await.unwrap_or_default());
        bail!("the server refused the content: {status} {why}");
    }
    eprintln!(
        "uploaded {} ({})",
        short(&packing.packed.digest),
        content::human_bytes(size)
    );
    Ok(())
}
