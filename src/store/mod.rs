//! The blob store: finished step logs, change archives and uploaded content,
//! on object storage (S3 and S3-compatible servers, GCS, Azure) or in a local
//! directory, through the `object_store` crate (Apache Arrow's; one API for all).
//!
//! A local directory under the data directory is the default, so `baton
//! controller` needs nothing else. With object storage a Job's finished logs and
//! archives outlive the controller's disk: a new leader, or any replica, serves
//! them. Writes stream (never a whole blob in memory) as multipart uploads, are
//! capped, and are completed only once the whole body arrived and, for
//! content-addressed blobs, its SHA-256 matched; otherwise they are aborted. A
//! multipart upload's object appears only on completion, so a reader never sees
//! half a blob.

pub mod keys;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};
use sha2::{Digest as _, Sha256};

pub use keys::{BadKey, Digest, JobKey};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    BadKey(#[from] BadKey),
    #[error("store {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("over the cap of {cap} bytes")]
    TooLarge { cap: u64 },
    #[error("the content's digest is {actual}, not {expected} as it was sent")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("read from offset {offset}: the blob has {size} bytes")]
    Beyond { offset: u64, size: u64 },
    #[error("the sender broke off: {0}")]
    Body(String),
    #[error("{doing} {key}: {source}")]
    Store {
        doing: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
}

fn failed(doing: &'static str, key: &Path) -> impl FnOnce(object_store::Error) -> StoreError {
    let key = key.to_string();
    move |source| StoreError::Store { doing, key, source }
}

/// A stored blob being read: its whole size and the bytes from the offset asked.
pub struct Blob {
    pub size: u64,
    pub bytes: BoxStream<'static, std::io::Result<Bytes>>,
}

/// Where blobs are kept.
#[derive(Clone)]
pub struct BlobStore {
    objects: Arc<dyn ObjectStore>,
    /// What to show in logs: the URL or directory, never a credential.
    location: String,
    local: bool,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("location", &self.location)
            .finish()
    }
}

/// Parts of a multipart upload: 8 MiB each (S3 needs ≥ 5 MiB), two in flight.
const PART: usize = 8 << 20;
const IN_FLIGHT: usize = 2;

impl BlobStore {
    /// A directory on this machine (created, private).
    pub fn local(dir: &std::path::Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        let url = |why: String| StoreError::Url {
            url: dir.display().to_string(),
            why,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| url(format!("create the directory: {e}")))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| url(e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(Self {
            objects: Arc::new(fs),
            location: dir.display().to_string(),
            local: true,
        })
    }

    /// `s3://bucket[/prefix]`, `gs://…`, `az://container[/prefix]` (credentials,
    /// endpoint and region from the provider's usual environment variables, e.g.
    /// `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `AWS_REGION`), or `file:///dir`.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Url {
            url: redacted(url),
            why: why.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "credentials go in the environment (e.g. AWS_ACCESS_KEY_ID), never in the URL",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad(
                "no query or fragment: options come from the environment",
            ));
        }
        let objects: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => return Self::local(std::path::Path::new(parsed.path())),
            "s3" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            "az" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            _ => return Err(bad("expected s3://, gs://, az:// or file://")),
        };
        // A path after the bucket keeps Baton's blobs under that prefix.
        let prefix = parsed.path().trim_matches('/');
        let objects = if prefix.is_empty() {
            objects
        } else {
            let prefix = Path::parse(prefix).map_err(|e| bad(&e.to_string()))?;
            Arc::new(object_store::prefix::PrefixStore::new(objects, prefix))
        };
        Ok(Self {
            objects,
            location: parsed.to_string(),
            local: false,
        })
    }

    /// The store in memory (tests).
    pub fn in_memory() -> Self {
        Self {
            objects: Arc::new(object_store::memory::InMemory::new()),
            location: "memory".into(),
            local: false,
        }
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// On this machine's disk (nothing gained by copying local logs into it).
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// Store `body` at `key`, at most `cap` bytes; returns its size and digest.
    pub async fn put<S, E>(
        &self,
        key: &Path,
        body: S,
        cap: u64,
    ) -> Result<(u64, Digest), StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.write(key, body, cap, None).await
    }

    /// Store `body` at its content address `key` only if it hashes to
    /// `expected`; returns its size. A body that does not match is dropped.
    pub async fn put_verified<S, E>(
        &self,
        key: &Path,
        body: S,
        cap: u64,
        expected: &Digest,
    ) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let (size, _) = self.write(key, body, cap, Some(expected)).await?;
        Ok(size)
    }

    /// A multipart upload: the blob appears under `key` only when the upload is
    /// completed, which happens once the whole body streamed, within `cap`, and
    /// (with `expected`) hashed to it; otherwise the upload is aborted.
    async fn write<S, E>(
        &self,
        key: &Path,
        body: S,
        cap: u64,
        expected: Option<&Digest>,
    ) -> Result<(u64, Digest), StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let upload = self
            .objects
            .put_multipart(key)
            .await
            .map_err(failed("start the upload of", key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        let refused = loop {
            let chunk = match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(StoreError::Body(e.to_string())),
                Some(Ok(chunk)) => chunk,
            };
            size += chunk.len() as u64;
            if size > cap {
                break Some(StoreError::TooLarge { cap });
            }
            hash.update(&chunk);
            if let Err(e) = writer.wait_for_capacity(IN_FLIGHT).await {
                break Some(failed("upload", key)(e));
            }
            writer.put(chunk);
        };
        let actual = Digest::of_hash(&hash.finalize());
        let refused = refused.or_else(|| {
            let expected = expected.filter(|e| **e != actual)?;
            Some(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            })
        });
        if let Some(e) = refused {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer
            .finish()
            .await
            .map_err(failed("finish the upload of", key))?;
        Ok((size, actual))
    }

    /// The size of the blob at `key`, if there is one.
    pub async fn size(&self, key: &Path) -> Result<Option<u64>, StoreError> {
        match self.objects.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failed("look up", key)(e)),
        }
    }

    /// The blob at `key` from byte `from` on, streamed; `None` if there is none.
    pub async fn get(&self, key: &Path, from: u64) -> Result<Option<Blob>, StoreError> {
        let Some(size) = self.size(key).await? else {
            return Ok(None);
        };
        if from > size {
            return Err(StoreError::Beyond { offset: from, size });
        }
        if from == size {
            // A range starting at the end is refused by S3: nothing to read.
            return Ok(Some(Blob {
                size,
                bytes: futures::stream::empty().boxed(),
            }));
        }
        let options = GetOptions {
            range: Some(GetRange::Offset(from)),
            ..GetOptions::default()
        };
        let got = match self.objects.get_opts(key, options).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(failed("read", key)(e)),
        };
        let bytes = got.into_stream().map_err(std::io::Error::other).boxed();
        Ok(Some(Blob { size, bytes }))
    }

    /// Delete every blob under `prefix` (a Job's, when the Job is deleted).
    /// Returns how many were deleted.
    pub async fn remove_prefix(&self, prefix: &Path) -> Result<usize, StoreError> {
        let found: Vec<Path> = self
            .objects
            .list(Some(prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(failed("list", prefix))?;
        let count = found.len();
        let locations = futures::stream::iter(found.into_iter().map(Ok)).boxed();
        self.objects
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map_err(failed("delete under", prefix))?;
        Ok(count)
    }

    /// Every blob under `prefix`, with when it was last written.
    pub async fn listed(
        &self,
        prefix: &Path,
    ) -> Result<Vec<(Path, std::time::SystemTime)>, StoreError> {
        self.objects
            .list(Some(prefix))
            .map_ok(|meta| (meta.location, meta.last_modified.into()))
            .try_collect()
            .await
            .map_err(failed("list", prefix))
    }

    /// Remove one blob; a blob already gone is no error.
    pub async fn remove(&self, key: &Path) -> Result<(), StoreError> {
        match self.objects.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed("delete", key)(e)),
        }
    }

    /// The names directly under `prefix` (one level, like `ls`).
    pub async fn children(&self, prefix: &Path) -> Result<Vec<String>, StoreError> {
        let listed = self
            .objects
            .list_with_delimiter(Some(prefix))
            .await
            .map_err(failed("list", prefix))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }
}

/// `url` to show: at most 200 characters, anything before an `@` (a user name
/// and password someone put there) hidden.
fn redacted(url: &str) -> String {
    let shown = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    };
    shown.chars().take(200).collect()
}

#[cfg(test)]
mod tests;
