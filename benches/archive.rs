//! Change archives at the size issue 13 names: a 100 MB tree of 10,000 files
//! (sizes spread from a few bytes to ~60 KB, half of them text-like, half
//! random), all of them "changed". Times the snapshot (hashing every file),
//! packing (tar + zstd level 3), packing the tree as content (the
//! `.gitignore`-aware walk of `job run --upload`, then the pack) and extraction (checked, staged, moved into
//! place), then the upload of the archive into the blob store (a directory, and
//! with `BATON_BENCH_STORE=s3://...` object storage), each the median of a few
//! runs; prints MB/s of file content and of archive bytes.
//! Run: `cargo bench --bench archive`; `make bench-local` also starts SeaweedFS
//! on loopback (hack/s3/weed.sh) for the S3 row.

use std::path::Path;
use std::time::{Duration, Instant};

use baton::archive::{self, Changes, Limits};
use baton::store::{BlobStore, Digest};
use object_store::path::Path as ObjectPath;

const FILES: usize = 10_000;
const TOTAL: usize = 100 * 1000 * 1000;
const RUNS: usize = 3;

/// A small xorshift generator: random, repeatable file contents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn make_tree(root: &Path) -> usize {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut bytes = 0;
    for i in 0..FILES {
        let dir = root.join(format!("d{:02}/e{:02}", i % 50, (i / 50) % 20));
        std::fs::create_dir_all(&dir).expect("create a directory");
        // Mean size TOTAL / FILES, spread over [1, 2 × mean).
        let len = 1 + usize::try_from(rng.next()).unwrap_or(0) % (2 * TOTAL / FILES);
        let body: Vec<u8> = if i % 2 == 0 {
            let words = [
                "fn ", "let ", "x = ", "1;\n", "match ", "{ }\n", "self.", "Ok(())\n",
            ];
            let mut out = Vec::with_capacity(len);
            while out.len() < len {
                let w = words[usize::try_from(rng.next() % 8).unwrap_or(0)];
                out.extend_from_slice(w.as_bytes());
            }
            out.truncate(len);
            out
        } else {
            (0..len).map(|_| rng.next().to_le_bytes()[0]).collect()
        };
        bytes += body.len();
        std::fs::write(dir.join(format!("f{i:05}.dat")), body).expect("write a file");
    }
    bytes
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn rate(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    let scratch = std::env::temp_dir().join(format!("baton-bench-archive-{}", std::process::id()));
    let tree = scratch.join("tree");
    let bytes = make_tree(&tree);

    let mut snap_runs = Vec::new();
    let mut after = archive::Snapshot::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        after = archive::snapshot(&tree).expect("snapshot");
        snap_runs.push(started.elapsed());
    }
    let changes: Changes = archive::diff(&archive::Snapshot::new(), &after);

    let packed_path = scratch.join("changes.tar.zst");
    let mut pack_runs = Vec::new();
    let mut packed = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let file = std::io::BufWriter::new(std::fs::File::create(&packed_path).expect("create"));
        packed = Some(archive::pack(&tree, &changes, file).expect("pack"));
        pack_runs.push(started.elapsed());
    }
    let packed = packed.expect("packed once");
    let content = median(content_runs(&tree, &scratch.join("content.tar.zst")));

    let mut extract_runs = Vec::new();
    for run in 0..RUNS {
        let dest = scratch.join(format!("out{run}"));
        let file = std::io::BufReader::new(std::fs::File::open(&packed_path).expect("open"));
        let started = Instant::now();
        let done = archive::extract(file, &dest, &Limits::default()).expect("extract");
        extract_runs.push(started.elapsed());
        assert_eq!(done.bytes as usize, bytes);
        std::fs::remove_dir_all(&dest).expect("remove the copy");
    }
    let mut stores = vec![(
        "store dir".to_owned(),
        BlobStore::local(&scratch.join("store")).expect("store"),
    )];
    if let Ok(url) = std::env::var("BATON_BENCH_STORE") {
        stores.push((
            url.clone(),
            BlobStore::open(&url).expect("BATON_BENCH_STORE"),
        ));
    }
    let uploads: Vec<(String, Duration)> = stores
        .iter()
        .map(|(name, store)| {
            (
                format!("upload to {name}"),
                median(upload_runs(store, &packed_path, &packed.digest)),
            )
        })
        .collect();
    let _ = std::fs::remove_dir_all(&scratch);

    let (snap, pack, extract) = (median(snap_runs), median(pack_runs), median(extract_runs));
    println!(
        "change archive: {FILES} files, {:.1} MB of content, archive {:.1} MB (sha256 {})",
        bytes as f64 / 1e6,
        packed.size as f64 / 1e6,
        &packed.digest[7..19]
    );
    println!(
        "  {:<28} {:>9} {:>12} {:>14}",
        "phase", "median", "tree MB/s", "archive MB/s"
    );
    let phases = [
        ("snapshot".to_owned(), snap),
        ("pack".into(), pack),
        ("content: walk + pack".into(), content),
        ("extract".into(), extract),
    ];
    for (phase, d) in phases.into_iter().chain(uploads) {
        println!(
            "  {phase:<28} {:>8.2}s {:>12.0} {:>14.0}",
            d.as_secs_f64(),
            rate(bytes, d),
            rate(usize::try_from(packed.size).unwrap_or(0), d)
        );
    }
}

/// `job run --upload` and `baton run` packing the whole tree as content: the
/// `.gitignore`-aware walk (a `.gitignore` that matches nothing, so every file
/// goes) and the pack, as the CLI does before it sends.
fn content_runs(tree: &Path, out: &Path) -> Vec<Duration> {
    std::fs::write(tree.join(".gitignore"), "/target\n*.o\n").expect(".gitignore");
    let runs = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            let selected = archive::select_tree(tree, &[], &Limits::default()).expect("select");
            let file = std::io::BufWriter::new(std::fs::File::create(out).expect("create"));
            selected.pack(file).expect("pack content");
            started.elapsed()
        })
        .collect();
    std::fs::remove_file(tree.join(".gitignore")).expect("remove .gitignore");
    runs
}

/// Store the archive as a runner's upload lands: streamed from its file in 64 KiB
/// chunks, hashed against its digest while it goes, renamed into place.
fn upload_runs(store: &BlobStore, archive: &Path, digest: &str) -> Vec<Duration> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let digest = Digest::parse(digest).expect("digest");
    (0..RUNS)
        .map(|run| {
            let key = ObjectPath::from(format!("bench/{run}/{}.tar.zst", digest.hex()));
            rt.block_on(async {
                let file = tokio::fs::File::open(archive).await.expect("open");
                let body = tokio_util::io::ReaderStream::with_capacity(file, 64 << 10);
                let started = Instant::now();
                store
                    .put_verified(&key, body, u64::MAX, &digest)
                    .await
                    .expect("upload");
                let took = started.elapsed();
                store
                    .remove_prefix(&ObjectPath::from("bench"))
                    .await
                    .expect("clean up");
                took
            })
        })
        .collect()
}
