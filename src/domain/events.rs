//! Kubernetes Events (`events.k8s.io/v1`), one per transition: on Jobs (queued
//! with a new reason, assigned, started, ended), Runners (adoption,
//! decommission) and RunnerTokens (minted, expired). One [`Events`] per process,
//! shared by every reconciler and the runner API, so a repeat of the same Event
//! on the same object folds into the first one's series (one patch, as
//! client-go's recorder does). Publishing is best effort: a failure is logged,
//! never fails the request or the reconcile that caused it.
//!
//! Nor does it wait for them. `publish` queues the Event and returns; one task
//! sends the queue, [`IN_FLIGHT`] at a time (client-go's broadcaster sends
//! from a queue too). Under load, the status writes a runner's report or a
//! reconcile waits on no longer queue at the API server behind their Events:
//! when 1,000 resumed Jobs end at once, their Events follow their ends rather
//! than delay them. A full queue drops the Event, saying so.
//!
//! Why not kube-runtime's `Recorder`: it keys an Event by the whole object
//! reference, resourceVersion included, so the Events of a Job (each after a
//! status write) never fold; and it holds every Event of the last six minutes
//! and scans them all on each publish: at a thousand Jobs a minute, tens of
//! thousands held and scanned per Event. [`Recent`] is bounded and O(1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use tracing::warn;

/// Who reports the Events.
const CONTROLLER: &str = "baton-controller";
/// A repeat this soon after the last one joins its series.
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// Events remembered for folding, at most (client-go's recorder keeps 4,096).
pub const REMEMBERED: usize = 4096;
/// `note` may hold at most this many bytes (the API server's limit).
const NOTE_MAX: usize = 1024;
/// Events waiting to be sent, at most; one more is dropped.
pub const QUEUED: usize = 4096;
/// Events being sent at once.
const IN_FLIGHT: usize = 4;

/// The process's Event publisher (cheap to clone: clones share the queue).
#[derive(Clone)]
pub struct Events {
    queue: tokio::sync::mpsc::Sender<Queued>,
}

/// An Event waiting in the queue.
struct Queued {
    key: Key,
    regarding: ObjectReference,
    kind: String,
    /// When it was published: the Event's time, however long it queued.
    at: Timestamp,
}

/// What the sending task holds.
struct Sender {
    client: Client,
    instance: String,
    recent: Mutex<Recent>,
}

impl Events {
    /// Events reported by `baton-controller` (instance: `$POD_NAME`, when set),
    /// sent by a task of the current runtime until every clone is dropped.
    pub fn new(client: Client) -> Self {
        Self::bounded(client, QUEUED)
    }

    /// As [`Self::new`], holding at most `queued` Events waiting.
    fn bounded(client: Client, queued: usize) -> Self {
        let sender = Arc::new(Sender {
            client,
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| CONTROLLER.to_owned()),
            recent: Mutex::default(),
        });
        let (queue, mut waiting) = tokio::sync::mpsc::channel(queued);
        let stream = futures::stream::poll_fn(move |cx| waiting.poll_recv(cx));
        tokio::spawn(stream.for_each_concurrent(IN_FLIGHT, move |q| {
            let sender = sender.clone();
            async move { sender.send(q).await }
        }));
        Self { queue }
    }

    /// Queue an Event on `obj` (a Job, Runner or RunnerToken).
    pub fn publish<K>(&self, obj: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let regarding = obj.object_ref(&());
        let key = Key {
            uid: regarding.uid.clone().unwrap_or_default(),
            warning,
            reason: reason.to_owned(),
            note: clip(note),
        };
        let kind = K::kind(&()).into_owned();
        let at = Timestamp::now();
        if let Err(e) = self.queue.try_send(Queued {
            key,
            regarding,
            kind,
            at,
        }) {
            let q = e.into_inner();
            warn!(kind = %q.kind, name = ?q.regarding.name, reason = %q.key.reason, "an event is dropped: the queue is full");
        }
    }
}

impl Sender {
    /// Create the Event, or count one more of a recent same one.
    async fn send(&self, q: Queued) {
        let Queued {
            key,
            regarding,
            kind,
            at,
        } = q;
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let object = regarding.name.clone();
        let repeat = self.recent().repeat(&key, Instant::now());
        let done = match repeat {
            Some((name, count)) => api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(series(count, at)),
                )
                .await
                .map(drop),
            None => {
                let event = self.event(&key, regarding, &ns, at);
                let created = api.create(&PostParams::default(), &event).await;
                created.map(|e| {
                    let name = e.metadata.name.unwrap_or_default();
                    self.recent().created(key.clone(), name, Instant::now());
                })
            }
        };
        if let Err(e) = done {
            self.recent().forget(&key);
            warn!(kind = %kind, name = ?object, reason = %key.reason, "publish an event: {e}");
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn event(&self, key: &Key, regarding: ObjectReference, ns: &str, now: Timestamp) -> Event {
        let object = regarding.name.clone().unwrap_or_else(|| CONTROLLER.into());
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.to_owned()),
                ..Default::default()
            },
            action: Some(key.reason.clone()),
            reason: Some(key.reason.clone()),
            note: Some(key.note.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if key.warning { "Warning" } else { "Normal" }.into()),
            ..Default::default()
        }
    }
}

/// The patch that counts one more occurrence of an Event.
fn series(count: i32, at: Timestamp) -> serde_json::Value {
    let series = EventSeries {
        count,
        last_observed_time: MicroTime(at),
    };
    serde_json::json!({ "series": series })
}

/// `note` cut to the API server's limit, at a character boundary.
fn clip(mut note: String) -> String {
    if note.len() > NOTE_MAX {
        let mut end = NOTE_MAX - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

/// What makes two Events the same: the object (by uid), type, reason and note.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Key {
    pub uid: String,
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// An Event published lately: its name, how often, when last.
#[derive(Debug)]
struct Seen {
    name: String,
    count: i32,
    last: Instant,
}

/// The Events published within [`SERIES_WINDOW`], at most [`REMEMBERED`].
#[derive(Debug, Default)]
pub struct Recent {
    seen: HashMap<Key, Seen>,
}

impl Recent {
    /// A repeat of a remembered Event: its name and new count (counted now).
    /// `None`: a new Event is to be created.
    pub fn repeat(&mut self, key: &Key, now: Instant) -> Option<(String, i32)> {
        let seen = self.seen.get_mut(key)?;
        if now.duration_since(seen.last) > SERIES_WINDOW {
            self.seen.remove(key);
            return None;
        }
        seen.count = seen.count.saturating_add(1);
        seen.last = now;
        Some((seen.name.clone(), seen.count))
    }

    /// A new Event was created under `name`. When full, the Events past the
    /// window go; still full, all go (a repeat then starts a new Event).
    pub fn created(&mut self, key: Key, name: String, now: Instant) {
        if self.seen.len() >= REMEMBERED {
            self.seen
                .retain(|_, s| now.duration_since(s.last) <= SERIES_WINDOW);
            if self.seen.len() >= REMEMBERED {
                self.seen.clear();
            }
        }
        let seen = Seen {
            name,
            count: 1,
            last: now,
        };
        self.seen.insert(key, seen);
    }

    /// Publishing failed: the next one starts afresh.
    pub fn forget(&mut self, key: &Key) {
        self.seen.remove(key);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str, note: &str) -> Key {
        Key {
            uid: uid.into(),
            warning: false,
            reason: "Waiting".into(),
            note: note.into(),
        }
    }

    #[test]
    fn a_repeat_within_the_window_joins_the_series_and_a_late_one_starts_anew() {
        let mut r = Recent::default();
        let t0 = Instant::now();
        let k = key("u1", "no runner");
        assert_eq!(r.repeat(&k, t0), None);
        r.created(k.clone(), "j.1".into(), t0);
        assert_eq!(
            r.repeat(&k, t0 + Duration::from_secs(1)),
            Some(("j.1".into(), 2))
        );
        assert_eq!(
            r.repeat(&k, t0 + Duration::from_secs(2)),
            Some(("j.1".into(), 3))
        );
        assert_eq!(r.repeat(&key("u1", "other note"), t0), None, "another note");
        assert_eq!(
            r.repeat(&key("u2", "no runner"), t0),
            None,
            "another object"
        );
        let late = t0 + Duration::from_secs(2) + SERIES_WINDOW + Duration::from_secs(1);
        assert_eq!(r.repeat(&k, late), None, "past the window: a new Event");
        assert!(r.is_empty(), "and the old one is forgotten");
    }

    #[test]
    fn it_holds_at_most_remembered_events() {
        let mut r = Recent::default();
        let t0 = Instant::now();
        for i in 0..REMEMBERED {
            r.created(key(&format!("u{i}"), "n"), format!("e{i}"), t0);
        }
        assert_eq!(r.len(), REMEMBERED);
        let later = t0 + SERIES_WINDOW + Duration::from_secs(1);
        r.created(key("new", "n"), "new".into(), later);
        assert_eq!(r.len(), 1, "the full map dropped what was past the window");
        for i in 0..REMEMBERED {
            r.created(key(&format!("v{i}"), "n"), format!("f{i}"), later);
        }
        assert!(r.len() <= REMEMBERED, "{}", r.len());
        r.forget(&key("v4095", "n"));
        assert_eq!(r.repeat(&key("v4095", "n"), later), None);
    }

    fn job(name: &str) -> crate::crd::Job {
        let mut job = crate::crd::Job::new(name, Default::default());
        job.metadata.namespace = Some("ns".into());
        job.metadata.uid = Some(format!("uid-{name}"));
        job
    }

    type ApiHandle = tower_test::mock::Handle<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >;

    /// A client whose API server is the test, request by request.
    fn mocked_api() -> (Client, ApiHandle) {
        let (svc, api) = tower_test::mock::pair();
        (Client::new(svc, "default"), api)
    }

    #[tokio::test]
    async fn publishing_waits_for_no_answer_and_the_event_keeps_its_time() {
        let (client, mut api) = mocked_api();
        let events = Events::new(client);
        let before = Timestamp::now();
        for i in 0..=IN_FLIGHT {
            events.publish(&job(&format!("j{i}")), false, "Started", "n".into());
        }
        let published = Timestamp::now();
        // All returned at once; IN_FLIGHT are sent and stay unanswered, the
        // last one waits in the queue meanwhile.
        let mut unanswered = Vec::new();
        for _ in 0..IN_FLIGHT {
            let (req, send) = api.next_request().await.expect("an Event in flight");
            assert_eq!(req.method(), "POST");
            assert_eq!(
                req.uri().path(),
                "/apis/events.k8s.io/v1/namespaces/ns/events"
            );
            unanswered.push(send);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waited = Timestamp::now();
        let refused = http::Response::builder().status(500);
        let refused = refused
            .body(kube::client::Body::empty())
            .expect("a response");
        unanswered.pop().expect("one").send_response(refused);
        let (last, _unanswered) = api.next_request().await.expect("the queued Event");
        let body = last.into_body().collect_bytes().await.expect("the body");
        let event: Event = serde_json::from_slice(&body).expect("an Event");
        assert_eq!(event.reason.as_deref(), Some("Started"));
        let at = event.event_time.expect("its time").0;
        assert!(
            before <= at && at <= published && at < waited,
            "{at}: published between {before} and {published}, sent after {waited}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_what_does_not_fit_without_waiting() {
        let (client, mut api) = mocked_api();
        let events = Events::bounded(client, 1);
        // No await in between: the sending task takes nothing meanwhile, so
        // one waits in the queue and nine are dropped, and none of it blocks.
        for i in 0..10 {
            events.publish(&job(&format!("j{i}")), false, "Started", "n".into());
        }
        let (first, _unanswered) = api.next_request().await.expect("the queued one");
        assert!(first.uri().path().ends_with("/events"));
        let more = tokio::time::timeout(Duration::from_millis(300), api.next_request()).await;
        assert!(more.is_err(), "the other nine were dropped, not sent");
    }

    #[test]
    fn a_long_note_is_clipped_at_a_character_boundary() {
        assert_eq!(clip("short".into()), "short");
        let long = "é".repeat(NOTE_MAX);
        let clipped = clip(long);
        assert!(clipped.len() <= NOTE_MAX, "{}", clipped.len());
        assert!(clipped.ends_with('…'));
    }
}
