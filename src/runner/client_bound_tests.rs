//! The bound on a runner's calls in flight, against a real HTTP server.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use warp::Filter;

use super::{CALLS_IN_FLIGHT, Client};

/// A server whose job list answers after 50 ms, counting the calls it holds.
async fn slow_server() -> (String, Arc<AtomicUsize>) {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = most.clone();
    let route = warp::path!("v1" / "jobs").then(move || {
        let (now, most) = (now.clone(), most.clone());
        async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            warp::reply::json(&Vec::<u8>::new())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn a_burst_of_calls_waits_for_a_slot_instead_of_opening_a_connection_each() {
    let (server, most) = slow_server().await;
    let client = Client::new(&server).unwrap();
    let calls = (0..CALLS_IN_FLIGHT * 3).map(|_| client.assignments("r", "ns", "t"));
    for listed in futures::future::join_all(calls).await {
        assert!(listed.unwrap().is_empty());
    }
    let most = most.load(Ordering::SeqCst);
    assert!(
        (2..=CALLS_IN_FLIGHT).contains(&most),
        "{most} calls in flight at once, bound {CALLS_IN_FLIGHT}"
    );
}
