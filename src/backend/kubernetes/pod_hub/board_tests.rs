#![allow(clippy::unwrap_used)]

use super::*;

fn pod(name: &str, version: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("ns".into());
    p.metadata.resource_version = Some(version.into());
    p
}

/// What `rx` shows now: "present@<version>", "gone@<version>", "gone",
/// "failed: <why>" or "nothing".
fn now_shows(rx: &mut watch::Receiver<Seen>) -> String {
    let version = |p: &Pod| p.metadata.resource_version.clone().unwrap_or_default();
    match &*rx.borrow_and_update() {
        Seen::Nothing => "nothing".into(),
        Seen::Present(p) => format!("present@{}", version(p)),
        Seen::Gone(Some(p)) => format!("gone@{}", version(p)),
        Seen::Gone(None) => "gone".into(),
        Seen::Failed(why) => format!("failed: {why}"),
    }
}

fn listed(board: &mut Board, pods: &[Pod], at: Instant) {
    board.apply(Event::Init, at);
    for p in pods {
        board.apply(Event::InitApply(p.clone()), at);
    }
    board.apply(Event::InitDone, at);
}

#[test]
fn a_pod_created_before_the_watch_shows_it_reads_as_created_then_as_the_watch_sees_it() {
    let (mut board, t0) = (Board::default(), Instant::now());
    let mut rx = board.subscribe("a", Some(Arc::new(pod("a", "1"))), t0);
    assert!(
        rx.has_changed().unwrap(),
        "a new reader has something to read"
    );
    assert_eq!(now_shows(&mut rx), "present@1");
    assert_eq!(
        board.to_confirm(t0 + CONFIRM_AFTER),
        ["a"],
        "not shown yet: read it"
    );
    board.apply(Event::Apply(pod("a", "2")), t0);
    assert_eq!(now_shows(&mut rx), "present@2");
    assert!(board.to_confirm(t0 + CONFIRM_AFTER * 2).is_empty());
}

#[test]
fn a_waiter_that_comes_after_the_watch_saw_its_pod_change_reads_the_latest_state() {
    let (mut board, t0) = (Board::default(), Instant::now());
    board.apply(Event::Apply(pod("a", "1")), t0);
    board.apply(Event::Apply(pod("a", "3")), t0);
    let mut rx = board.subscribe("a", Some(Arc::new(pod("a", "1"))), t0);
    assert_eq!(now_shows(&mut rx), "present@3");
    assert!(board.to_confirm(t0 + CONFIRM_AFTER).is_empty());
}

#[test]
fn a_deleted_pod_is_gone_with_its_last_state_for_its_waiter_and_for_one_that_comes_late() {
    let (mut board, t0) = (Board::default(), Instant::now());
    let mut rx = board.subscribe("a", Some(Arc::new(pod("a", "1"))), t0);
    let mut other = board.subscribe("a", None, t0);
    board.apply(Event::Delete(pod("a", "4")), t0);
    assert_eq!(now_shows(&mut rx), "gone@4");
    assert_eq!(
        now_shows(&mut other),
        "gone@4",
        "two waiters share one reader"
    );
    let mut late = board.subscribe("a", Some(Arc::new(pod("a", "1"))), t0);
    assert_eq!(now_shows(&mut late), "gone@4");
    assert!(
        board.idle(),
        "a pod's end is final: no reader is kept for it"
    );
}

#[test]
fn a_relist_reports_the_pods_deleted_while_the_watch_was_down_and_checks_the_unlisted() {
    let (mut board, t0) = (Board::default(), Instant::now());
    listed(&mut board, &[pod("a", "1"), pod("b", "1")], t0);
    let mut a = board.subscribe("a", None, t0);
    let mut b = board.subscribe("b", None, t0);
    let mut c = board.subscribe("c", Some(Arc::new(pod("c", "2"))), t0);
    assert_eq!(now_shows(&mut b), "present@1");
    listed(&mut board, &[pod("a", "5")], t0);
    assert_eq!(now_shows(&mut a), "present@5");
    assert_eq!(
        now_shows(&mut b),
        "gone@1",
        "not listed again: deleted meanwhile"
    );
    assert_eq!(now_shows(&mut c), "present@2");
    assert_eq!(
        board.to_confirm(t0),
        ["c"],
        "neither listed nor seen: read at once"
    );
}

#[test]
fn a_read_settles_a_pod_the_watch_never_showed() {
    let (mut board, t0) = (Board::default(), Instant::now());
    let mut gone = board.subscribe("gone", Some(Arc::new(pod("gone", "1"))), t0);
    let mut there = board.subscribe("there", Some(Arc::new(pod("there", "1"))), t0);
    assert!(
        board.to_confirm(t0).is_empty(),
        "a fresh pod is given time to show up"
    );
    assert_eq!(board.to_confirm(t0 + CONFIRM_AFTER), ["gone", "there"]);
    board.confirmed("gone", None);
    board.confirmed("there", Some(pod("there", "7")));
    assert_eq!(now_shows(&mut gone), "gone");
    assert_eq!(now_shows(&mut there), "present@7");
    assert!(board.to_confirm(t0 + CONFIRM_AFTER * 2).is_empty());
}

#[test]
fn waiters_are_told_the_watch_failed_only_after_it_failed_again_and_again() {
    let (mut board, t0) = (Board::default(), Instant::now());
    let mut rx = board.subscribe("a", Some(Arc::new(pod("a", "1"))), t0);
    assert_eq!(now_shows(&mut rx), "present@1");
    for _ in 1..MAX_ERRORS {
        board.failed("503");
    }
    board.apply(Event::Apply(pod("a", "2")), t0);
    assert_eq!(
        now_shows(&mut rx),
        "present@2",
        "an event in between starts the count again"
    );
    for _ in 1..MAX_ERRORS {
        board.failed("503");
    }
    assert!(!rx.has_changed().unwrap());
    board.failed("403 forbidden");
    assert_eq!(now_shows(&mut rx), "failed: 403 forbidden");
}

#[test]
fn a_board_whose_readers_are_all_dropped_is_idle() {
    let (mut board, t0) = (Board::default(), Instant::now());
    let rx = board.subscribe("a", Some(Arc::new(pod("a", "1"))), t0);
    assert!(!board.idle());
    drop(rx);
    assert!(board.idle());
    assert!(
        board.to_confirm(t0 + CONFIRM_AFTER).is_empty(),
        "no one to read it for"
    );
}

#[test]
fn a_watch_that_ends_tells_every_waiter_at_once() {
    let (mut board, t0) = (Board::default(), Instant::now());
    let mut a = board.subscribe("a", Some(Arc::new(pod("a", "1"))), t0);
    let mut b = board.subscribe("b", None, t0);
    board.end("ended");
    assert_eq!(now_shows(&mut a), "failed: ended");
    assert_eq!(now_shows(&mut b), "failed: ended");
    assert!(board.idle());
}
