#![allow(clippy::unwrap_used)]
use super::*;

/// The whole stored log from `from` on, through the chunked reader.
async fn read_all(store: &LogStore, k: &LogKey, from: u64) -> Vec<u8> {
    use futures::TryStreamExt;
    let chunks: Vec<Bytes> = store
        .read(k, from)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

fn key(step: &str) -> LogKey {
    LogKey {
        namespace: "ns".into(),
        name: "j".into(),
        uid: "u1".into(),
        step: step.into(),
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("baton-logs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test]
async fn a_key_that_would_leave_the_store_is_refused() {
    let root = tmp("keys");
    let store = LogStore::new(&root, 1024);
    let hostile = [
        ("namespace", "../etc"),
        ("namespace", ""),
        ("name", ".."),
        ("name", "a/b"),
        ("uid", "u\0"),
        ("step", "../../passwd"),
        ("step", "."),
        ("step", "Step"),
    ];
    for (part, value) in hostile {
        let mut k = key("a");
        match part {
            "namespace" => k.namespace = value.into(),
            "name" => k.name = value.into(),
            "uid" => k.uid = value.into(),
            _ => k.step = value.into(),
        }
        let err = store.append(&k, 0, b"x").await.unwrap_err();
        assert!(
            matches!(err, LogError::BadKey { .. }),
            "{part}={value:?}: {err}"
        );
        assert!(store.read(&k, 0).await.is_err(), "{part}={value:?}");
    }
    assert!(!root.exists(), "something was written");
}

#[tokio::test]
async fn appends_are_idempotent_and_gaps_refused() {
    let store = LogStore::new(tmp("idem"), 1024);
    let k = key("a");
    assert_eq!(store.length(&k).await.unwrap(), 0);
    let a = store.append(&k, 0, b"1\n2\n").await.unwrap();
    assert_eq!(
        a,
        Appended {
            length: 4,
            accepted: 4
        }
    );
    // A resent tail overlapping what is stored: only the new part lands.
    let a = store.append(&k, 2, b"2\n3\n").await.unwrap();
    assert_eq!(
        a,
        Appended {
            length: 6,
            accepted: 2
        }
    );
    // All duplicate.
    let a = store.append(&k, 0, b"1\n").await.unwrap();
    assert_eq!(a.accepted, 0);
    // A gap.
    assert!(matches!(
        store.append(&k, 10, b"x").await,
        Err(LogError::Gap {
            offset: 10,
            stored: 6
        })
    ));
    assert_eq!(read_all(&store, &k, 0).await, b"1\n2\n3\n");
    assert_eq!(read_all(&store, &key("none"), 0).await, b"");
    store.remove_job("ns", "j", "u1").await;
    assert_eq!(store.length(&k).await.unwrap(), 0);
}

#[tokio::test]
async fn sweep_keeps_live_jobs_only() {
    let store = LogStore::new(tmp("sweep"), 1024);
    let uid = |c: char| std::iter::repeat_n(c, 36).collect::<String>();
    let key = |name: &str, uid: &str| LogKey {
        namespace: "ns".into(),
        name: name.into(),
        uid: uid.into(),
        step: "s".into(),
    };
    store
        .append(&key("live", &uid('a')), 0, b"x")
        .await
        .unwrap();
    store
        .append(&key("gone", &uid('b')), 0, b"x")
        .await
        .unwrap();
    let live = [uid('a')].into_iter().collect();
    assert_eq!(
        store.sweep(&live, Some("other")).await,
        0,
        "another namespace"
    );
    assert_eq!(store.sweep(&live, Some("ns")).await, 1);
    assert_eq!(store.length(&key("live", &uid('a'))).await.unwrap(), 1);
    assert_eq!(store.length(&key("gone", &uid('b'))).await.unwrap(), 0);
}

#[tokio::test]
async fn the_cap_truncates_once_with_a_marker_and_offsets_go_on() {
    let store = LogStore::new(tmp("cap"), 8);
    let k = key("a");
    store.append(&k, 0, b"12345").await.unwrap();
    let a = store.append(&k, 5, b"6789abc").await.unwrap();
    assert_eq!(a.length, 12);
    let a = store.append(&k, 12, b"more").await.unwrap();
    assert_eq!(a.length, 16);
    assert_eq!(store.length(&k).await.unwrap(), 16);
    let text = String::from_utf8(read_all(&store, &k, 0).await).unwrap();
    assert_eq!(text, format!("12345678{}", truncation_marker(8)));
    // A resend below the logical length is still a no-op.
    assert_eq!(store.append(&k, 0, b"1").await.unwrap().accepted, 0);
}

#[tokio::test]
async fn reads_stream_chunks_from_an_offset_and_refuse_one_past_the_end() {
    use futures::StreamExt;
    let store = LogStore::new(tmp("read"), 1 << 20);
    let k = key("a");
    let data: Vec<u8> = (0..READ_CHUNK * 2 + 10).map(|i| (i % 251) as u8).collect();
    store.append(&k, 0, &data).await.unwrap();
    let size = data.len() as u64;
    for from in [0, 1, READ_CHUNK as u64, size - 1, size] {
        let start = usize::try_from(from).unwrap();
        assert_eq!(
            read_all(&store, &k, from).await,
            &data[start..],
            "from {from}"
        );
    }
    // Chunk by chunk, never more than READ_CHUNK at once.
    let mut reader = store.read(&k, 0).await.unwrap();
    assert_eq!(store.open_readers(), 1);
    let mut sizes = Vec::new();
    while let Some(chunk) = reader.next().await {
        sizes.push(chunk.unwrap().len());
    }
    assert!(
        sizes.len() >= 3 && sizes.iter().all(|n| *n <= READ_CHUNK),
        "{sizes:?}"
    );
    drop(reader);
    assert_eq!(store.open_readers(), 0);
    for (k, from, stored) in [
        (&k, size + 1, size),
        (&k, u64::MAX, size),
        (&key("none"), 1, 0),
    ] {
        match store.read(k, from).await {
            Err(LogError::Beyond { offset, size }) => {
                assert_eq!((offset, size), (from, stored))
            }
            other => panic!("from {from}: {other:?}"),
        }
    }
    assert_eq!(store.open_readers(), 0, "a refused read holds nothing");
    let _ = std::fs::remove_dir_all(store.root());
}

#[tokio::test]
async fn an_append_is_seen_by_a_change_receiver() {
    let store = LogStore::new(tmp("changes"), 1024);
    let mut changes = store.changes();
    changes.borrow_and_update();
    store.append(&key("a"), 0, b"x").await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(1), changes.changed())
        .await
        .unwrap()
        .unwrap();
    // A duplicate changes nothing: no wake-up.
    store.append(&key("a"), 0, b"x").await.unwrap();
    assert!(!changes.has_changed().unwrap());
    let _ = std::fs::remove_dir_all(store.root());
}

#[tokio::test]
async fn a_finished_log_is_read_from_the_archive_by_a_replica_that_never_held_it() {
    let archive = crate::store::BlobStore::in_memory();
    let leader = LogStore::new(tmp("archive-leader"), 1024).with_archive(archive.clone());
    let k = key("build");
    leader.append(&k, 0, b"line 1\nline 2\n").await.unwrap();
    let job = JobKey::new("ns", "j", "u1").unwrap();
    let steps = ["build".to_owned(), "never-ran".to_owned()];
    assert_eq!(leader.archive_job(&job, &steps).await.unwrap(), 1);
    assert_eq!(
        leader.archive_job(&job, &steps).await.unwrap(),
        0,
        "once per process"
    );

    // Another replica: its own (empty) directory, the same archive.
    let other = LogStore::new(tmp("archive-other"), 1024).with_archive(archive.clone());
    assert_eq!(read_all(&other, &k, 0).await, b"line 1\nline 2\n");
    assert_eq!(read_all(&other, &k, 7).await, b"line 2\n");
    assert!(read_all(&other, &key("never-ran"), 0).await.is_empty());
    assert!(matches!(
        other.read(&k, 99).await,
        Err(LogError::Beyond {
            offset: 99,
            size: 14
        })
    ));
    // Without an archive, a log this machine lacks is simply empty.
    let alone = LogStore::new(tmp("archive-alone"), 1024);
    assert!(read_all(&alone, &k, 0).await.is_empty());
}

#[tokio::test]
async fn concurrent_appends_keep_order_and_leave_no_lock_behind() {
    let root = tmp("locks");
    let store = Arc::new(LogStore::new(&root, 1 << 20));
    let appends = (0..50u64).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let k = key(&format!("s{}", i % 5));
            // Each step's ten appends race: one that lost (its offset taken,
            // so nothing accepted) tries again at the new end.
            let line = b"0123456789";
            loop {
                let at = store.length(&k).await.unwrap();
                if store.append(&k, at, line).await.unwrap().accepted > 0 {
                    break;
                }
            }
        })
    });
    for a in futures::future::join_all(appends).await {
        a.unwrap();
    }
    for s in 0..5 {
        assert_eq!(store.length(&key(&format!("s{s}"))).await.unwrap(), 100);
    }
    assert_eq!(
        store.appending(),
        0,
        "every step's lock went with its last append"
    );
    let _ = std::fs::remove_dir_all(root);
}
