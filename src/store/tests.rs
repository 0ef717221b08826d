#![allow(clippy::unwrap_used)]
use super::*;

const UID: &str = "0f8e4a52-77b5-4bb0-9c35-6f2c1d3e4a5b";

fn body(parts: &[&[u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    let parts: Vec<_> = parts
        .iter()
        .map(|p| Ok(Bytes::copy_from_slice(p)))
        .collect();
    futures::stream::iter(parts)
}

fn digest_of(bytes: &[u8]) -> Digest {
    Digest::of_hash(&Sha256::digest(bytes))
}

async fn read_all(store: &BlobStore, key: &Path, from: u64) -> Option<(u64, Vec<u8>)> {
    let blob = store.get(key, from).await.unwrap()?;
    let chunks: Vec<Bytes> = blob.bytes.try_collect().await.unwrap();
    Some((blob.size, chunks.concat()))
}

async fn everything(store: &BlobStore) -> Vec<String> {
    let mut all: Vec<String> = store
        .objects
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    all.sort();
    all
}

fn stores() -> Vec<(BlobStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let local = BlobStore::local(&dir.path().join("store")).unwrap();
    vec![
        (BlobStore::in_memory(), tempfile::tempdir().unwrap()),
        (local, dir),
    ]
}

#[tokio::test]
async fn a_verified_blob_lands_whole_and_reads_back_from_any_offset() {
    for (store, _dir) in stores() {
        let job = JobKey::new("ci", "build", UID).unwrap();
        let content = b"hello, archive".as_slice();
        let key = job.archive(&digest_of(content));
        let size = store
            .put_verified(
                &key,
                body(&[b"hello, ", b"archive"]),
                1024,
                &digest_of(content),
            )
            .await
            .unwrap();
        assert_eq!(size, 14);
        assert_eq!(
            read_all(&store, &key, 0).await,
            Some((14, content.to_vec()))
        );
        assert_eq!(
            read_all(&store, &key, 7).await,
            Some((14, b"archive".to_vec()))
        );
        assert_eq!(read_all(&store, &key, 14).await, Some((14, vec![])));
        assert!(matches!(
            store.get(&key, 15).await,
            Err(StoreError::Beyond {
                offset: 15,
                size: 14
            })
        ));
        assert_eq!(
            everything(&store).await,
            vec![key.to_string()],
            "{}",
            store.location()
        );
    }
}

#[tokio::test]
async fn a_body_that_does_not_match_its_digest_leaves_nothing() {
    for (store, _dir) in stores() {
        let claimed = digest_of(b"what the runner said");
        let key = keys::upload("ci", &claimed).unwrap();
        let err = store
            .put_verified(&key, body(&[b"something else"]), 1024, &claimed)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&digest_of(b"something else").to_string())
        );
        assert_eq!(store.size(&key).await.unwrap(), None);
        assert!(everything(&store).await.is_empty(), "{}", store.location());
    }
}

#[tokio::test]
async fn a_body_over_the_cap_or_broken_off_leaves_nothing() {
    for (store, _dir) in stores() {
        let key = Path::from("uploads/x.tar.zst");
        let over = store
            .put(&key, body(&[b"0123", b"45678"]), 8)
            .await
            .unwrap_err();
        assert!(matches!(over, StoreError::TooLarge { cap: 8 }), "{over}");
        let parts = vec![
            Ok(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("reset")),
        ];
        let broken = store
            .put(&key, futures::stream::iter(parts), 8)
            .await
            .unwrap_err();
        assert!(broken.to_string().contains("reset"), "{broken}");
        assert!(everything(&store).await.is_empty(), "{}", store.location());
    }
}

#[tokio::test]
async fn deleting_a_jobs_prefix_deletes_its_blobs_and_only_those() {
    for (store, _dir) in stores() {
        let a = JobKey::new("ci", "a", UID).unwrap();
        let b = JobKey::new("ci", "b", UID).unwrap();
        for key in [
            a.log("one").unwrap(),
            a.log("two").unwrap(),
            b.log("one").unwrap(),
        ] {
            store.put(&key, body(&[b"log"]), 64).await.unwrap();
        }
        assert_eq!(
            store.children(&Path::from("jobs/ci")).await.unwrap().len(),
            2,
            "{}",
            store.location()
        );
        assert_eq!(store.remove_prefix(&a.prefix()).await.unwrap(), 2);
        assert_eq!(
            everything(&store).await,
            vec![b.log("one").unwrap().to_string()]
        );
        assert_eq!(store.remove_prefix(&a.prefix()).await.unwrap(), 0);
    }
}

#[test]
fn urls_that_would_leak_or_mislead_are_refused() {
    for (url, says) in [
        (
            "s3://key:secret@bucket",
            "credentials go in the environment",
        ),
        ("s3://bucket?region=x", "no query"),
        ("ftp://host/x", "expected s3://"),
        ("not a url", "relative URL"),
    ] {
        let err = BlobStore::open(url).unwrap_err().to_string();
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("secret"), "{url}: {err}");
    }
}
