use super::sent::{SentLog, gap_stored, resend_from};
use super::*;
use crate::backend::LogChunk;
use crate::crd::job::StepStatus;
use crate::executor::{LogSink, StatusSink};
use crate::protocol::jobs::AppendQuery;

#[test]
fn resend_from_gap_at_zero_sends_everything_kept() {
    assert_eq!(resend_from(0, b"abcdef", 0), Some((0, &b"abcdef"[..])));
}

#[test]
fn resend_from_gap_midway_sends_the_tail() {
    assert_eq!(resend_from(0, b"abcdef", 4), Some((4, &b"ef"[..])));
    // A buffer that starts where the runner resumed.
    assert_eq!(resend_from(100, b"abcdef", 102), Some((102, &b"cdef"[..])));
}

#[test]
fn resend_from_server_ahead_or_before_the_buffer_is_nothing() {
    assert_eq!(resend_from(0, b"abcdef", 6), None);
    assert_eq!(resend_from(0, b"abcdef", 9), None);
    assert_eq!(resend_from(0, b"", 0), None);
    // The server lacks bytes sent before this buffer began: not held.
    assert_eq!(resend_from(100, b"abcdef", 50), None);
}

#[test]
fn record_keeps_contiguous_bytes_up_to_the_bound() {
    let mut log = SentLog::new(0);
    assert!(!log.record(0, b"abc", 8));
    // An overlapping resend adds only what is new.
    assert!(!log.record(1, b"bcde", 8));
    assert_eq!(log.bytes, b"abcde");
    // Hitting the bound keeps what fits and says so once.
    assert!(log.record(5, b"fghij", 8));
    assert_eq!(log.bytes, b"abcdefgh");
    assert!(!log.record(10, b"klm", 8));
    assert_eq!(log.end(), 8);
    // Trimmed: a gap at 2 resends what is kept, no more.
    assert_eq!(
        resend_from(log.start, &log.bytes, 2),
        Some((2, &b"cdefgh"[..]))
    );
    assert_eq!(resend_from(log.start, &log.bytes, 8), None);
    // A chunk past the kept end is not kept (not contiguous).
    let mut log = SentLog::new(10);
    assert!(!log.record(12, b"xy", 8));
    assert_eq!(log.end(), 10);
}

#[test]
fn gap_stored_reads_the_servers_message() {
    assert_eq!(
        gap_stored("chunk at offset 5000, but 0 bytes are stored: resend from 0"),
        Some(0)
    );
    assert_eq!(
        gap_stored("chunk at offset 9, but 6 bytes are stored: resend from 6"),
        Some(6)
    );
    assert_eq!(gap_stored("something else"), None);
}

type Store = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// A log endpoint with the server's append semantics.
async fn fake_server(store: Store) -> String {
    use warp::Filter;
    let route = warp::post()
        .and(warp::path!("v1" / "jobs" / String / String / "logs"))
        .and(warp::query::<AppendQuery>())
        .and(warp::body::bytes())
        .map(move |_ns: String, _name: String, q: AppendQuery, body: warp::hyper::body::Bytes| {
            let mut store = lock(&store);
            let log = store.entry(q.step).or_default();
            let stored = log.len() as u64;
            if q.offset > stored {
                return warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({
                        "error": "LogGap",
                        "message": format!("chunk at offset {}, but {stored} bytes are stored: resend from {stored}", q.offset),
                    })),
                    warp::http::StatusCode::CONFLICT,
                );
            }
            let skip = usize::try_from(stored - q.offset).unwrap_or(usize::MAX);
            let new = body.get(skip..).unwrap_or_default();
            log.extend_from_slice(new);
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({
                    "length": log.len(), "accepted": new.len(),
                })),
                warp::http::StatusCode::OK,
            )
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(warp::serve(route).incoming(listener).run());
    format!("http://{addr}")
}

fn sink(server: &str) -> Sink {
    Sink {
        client: Client::new(server).expect("client"),
        runner: "r1".into(),
        token: "tok".into(),
        claim: ClaimResponse {
            namespace: "ns".into(),
            name: "job".into(),
            uid: "uid".into(),
            epoch: 1,
            spec: serde_json::from_value(serde_json::json!({ "steps": [] })).expect("spec"),
            log_offsets: Default::default(),
            start_time: None,
            steps: Vec::new(),
        },
        fenced: CancellationToken::new(),
        sent: Mutex::default(),
        archive_root: None,
        held: Mutex::default(),
    }
}

fn chunk(step: &str, offset: u64, bytes: &[u8]) -> LogChunk {
    LogChunk {
        step: step.into(),
        offset,
        bytes: bytes.to_vec(),
    }
}

#[tokio::test]
async fn a_server_that_lost_its_logs_gets_them_resent() {
    let store = Store::default();
    let sink = sink(&fake_server(store.clone()).await);
    sink.append(chunk("s", 0, b"aaaa")).await;
    sink.append(chunk("s", 4, b"bbbb")).await;
    sink.append(chunk("t", 0, b"tt")).await;
    // The controller restarts with an empty log store.
    lock(&store).clear();
    sink.append(chunk("s", 8, b"cccc")).await;
    sink.append(chunk("s", 12, b"dd")).await;
    assert_eq!(
        lock(&store).get("s").map(Vec::as_slice),
        Some(&b"aaaabbbbccccdd"[..])
    );
    // A step with no new chunk is left as it is.
    assert_eq!(lock(&store).get("t"), None);
    // It lost only part of a log: the rest is resent from its length.
    lock(&store).insert("s".into(), b"aaaab".to_vec());
    sink.append(chunk("s", 14, b"e")).await;
    assert_eq!(
        lock(&store).get("s").map(Vec::as_slice),
        Some(&b"aaaabbbbccccdde"[..])
    );
    assert!(!sink.fenced.is_cancelled());
}

#[tokio::test]
async fn a_replay_gives_a_new_leader_every_kept_log_including_finished_steps() {
    use crate::crd::job::{StepPhase, StepStatus};
    let store = Store::default();
    let sink = sink(&fake_server(store.clone()).await);
    sink.append(chunk("build", 0, b"compiled\n")).await;
    sink.append(chunk("test", 0, b"running ")).await;
    // `build` finished (its status report goes to a server this fake ignores).
    let done = StepStatus {
        name: "build".into(),
        phase: StepPhase::Succeeded,
        ..Default::default()
    };
    sink.step_changed(&done).await;
    // Failover: the new leader's log store is empty, and no new chunk comes for
    // `build`; the replay on reconnect restores both logs.
    lock(&store).clear();
    sink.replay().await;
    assert_eq!(
        lock(&store).get("build").map(Vec::as_slice),
        Some(&b"compiled\n"[..])
    );
    assert_eq!(
        lock(&store).get("test").map(Vec::as_slice),
        Some(&b"running "[..])
    );
    // A server that holds everything is sent nothing new.
    sink.replay().await;
    assert_eq!(
        lock(&store).get("build").map(Vec::as_slice),
        Some(&b"compiled\n"[..])
    );
}

#[test]
fn a_resumed_run_gets_the_recorded_start_times_of_its_claim() {
    // An older server's claim has neither field: nothing recorded.
    let old: ClaimResponse = serde_json::from_value(serde_json::json!({
        "namespace": "ns", "name": "job", "uid": "uid", "epoch": 1,
        "spec": { "steps": [] }, "logOffsets": {}
    }))
    .expect("claim");
    assert_eq!(old.start_time, None);
    assert!(old.steps.is_empty());

    let mut s = sink("http://127.0.0.1:1");
    let started = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    );
    s.claim.start_time = Some(started.clone());
    s.claim.steps = vec![StepStatus {
        name: "a".into(),
        start_time: Some(started.clone()),
        ..Default::default()
    }];
    let recorded = s.recorded();
    assert_eq!(recorded.start_time, Some(started));
    assert_eq!(recorded.steps, s.claim.steps);
}
