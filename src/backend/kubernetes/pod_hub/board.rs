//! What one namespace's shared watch knows of this runner's step pods, and who
//! waits on which of them: pure, so every case of a watch that lists, drops,
//! lists again and fails is tested without a cluster.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::watcher::Event;
use tokio::sync::watch;

use super::super::feed::Seen;

/// Consecutive watch errors (after the watcher's own backoff) before the pods'
/// waiters are told the watch failed, as a pod's own watch would.
pub const MAX_ERRORS: u32 = 10;

/// A waiter on a pod the watch has not shown is checked with a read after this:
/// a pod just created shows up in a few milliseconds; one that does not was
/// deleted before the watch could see it, or never had this runner's label.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(5);

/// Deleted pods remembered for a waiter that comes late.
const GONE_KEPT: usize = 256;

struct Reader {
    tx: watch::Sender<Seen>,
    /// Since when it waits on a pod the watch has not shown (`None`: shown).
    unconfirmed: Option<Instant>,
}

/// The latest state of each pod the watch shows, the last ones deleted, and
/// the waiters.
#[derive(Default)]
pub struct Board {
    live: HashMap<String, Arc<Pod>>,
    gone: VecDeque<(String, Option<Arc<Pod>>)>,
    readers: HashMap<String, Reader>,
    /// A (re)list in progress: the names listed so far.
    listing: Option<HashSet<String>>,
    errors: u32,
}

impl Board {
    /// A reader of pod `name`'s latest state. `origin` is the pod as its
    /// caller last read it (created or listed), shown until the watch shows it.
    pub fn subscribe(
        &mut self,
        name: &str,
        origin: Option<Arc<Pod>>,
        now: Instant,
    ) -> watch::Receiver<Seen> {
        if let Some(reader) = self.readers.get(name)
            && !reader.tx.is_closed()
        {
            let mut rx = reader.tx.subscribe();
            rx.mark_changed();
            return rx;
        }
        let (initial, unconfirmed) = if let Some(pod) = self.live.get(name) {
            (Seen::Present(pod.clone()), None)
        } else if let Some((_, last)) = self.gone.iter().find(|(n, _)| n == name) {
            return final_reader(Seen::Gone(last.clone()));
        } else {
            (origin.map_or(Seen::Nothing, Seen::Present), Some(now))
        };
        let (tx, mut rx) = watch::channel(initial);
        rx.mark_changed();
        self.readers
            .insert(name.to_owned(), Reader { tx, unconfirmed });
        rx
    }

    /// What the watch delivered (at `now`).
    pub fn apply(&mut self, event: Event<Pod>, now: Instant) {
        self.errors = 0;
        match event {
            Event::Init => self.listing = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(listed) = self.listing.as_mut() {
                    listed.insert(pod.name_any());
                }
                self.present(pod);
            }
            Event::Apply(pod) => self.present(pod),
            Event::Delete(pod) => {
                let name = pod.name_any();
                self.live.remove(&name);
                self.deleted(&name, Some(Arc::new(slim(pod))));
            }
            Event::InitDone => self.listed(now),
        }
    }

    /// The watch failed again; the waiters are told once it failed too often.
    pub fn failed(&mut self, message: &str) {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.end(message);
        }
    }

    /// The watch is over: every waiter is told why.
    pub fn end(&mut self, message: &str) {
        for (_, reader) in self.readers.drain() {
            reader.tx.send_replace(Seen::Failed(message.to_owned()));
        }
    }

    /// The pods waited on that the watch has not shown for [`CONFIRM_AFTER`].
    pub fn to_confirm(&self, now: Instant) -> Vec<String> {
        let due = |r: &Reader| {
            r.unconfirmed
                .is_some_and(|s| now.duration_since(s) >= CONFIRM_AFTER)
        };
        let mut names: Vec<_> = (self.readers.iter())
            .filter(|(_, r)| due(r) && !r.tx.is_closed())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// A read of pod `name` (for [`Self::to_confirm`]): it, or `None` if it
    /// does not exist.
    pub fn confirmed(&mut self, name: &str, read: Option<Pod>) {
        match read {
            Some(pod) => self.present(pod),
            None if !self.live.contains_key(name) => self.deleted(name, None),
            None => {}
        }
    }

    /// No one waits on any pod: the watch may stop.
    pub fn idle(&mut self) -> bool {
        self.readers.retain(|_, r| !r.tx.is_closed());
        self.readers.is_empty()
    }

    fn present(&mut self, pod: Pod) {
        let name = pod.name_any();
        let pod = Arc::new(slim(pod));
        if let Some(reader) = self.readers.get_mut(&name) {
            if reader.tx.is_closed() {
                self.readers.remove(&name);
            } else {
                reader.unconfirmed = None;
                reader.tx.send_replace(Seen::Present(pod.clone()));
            }
        }
        self.live.insert(name, pod);
    }

    /// Pod `name` is gone (its last state if known): final for its waiter.
    fn deleted(&mut self, name: &str, last: Option<Arc<Pod>>) {
        if let Some(reader) = self.readers.remove(name) {
            reader.tx.send_replace(Seen::Gone(last.clone()));
        }
        self.gone.retain(|(n, _)| n != name);
        self.gone.push_back((name.to_owned(), last));
        if self.gone.len() > GONE_KEPT {
            self.gone.pop_front();
        }
    }

    /// A (re)list ended: a pod it did not show was deleted while the watch was
    /// down; a waiter on a pod neither listed nor known is checked at once.
    fn listed(&mut self, now: Instant) {
        let Some(listed) = self.listing.take() else {
            return;
        };
        let vanished: Vec<_> = (self.live.keys())
            .filter(|n| !listed.contains(*n))
            .cloned()
            .collect();
        for name in vanished {
            let last = self.live.remove(&name);
            self.deleted(&name, last);
        }
        let long_ago = now.checked_sub(CONFIRM_AFTER);
        for (name, reader) in &mut self.readers {
            if !listed.contains(name) {
                reader.unconfirmed = long_ago.or(reader.unconfirmed);
            }
        }
    }
}

/// A reader whose pod's end is already known.
fn final_reader(seen: Seen) -> watch::Receiver<Seen> {
    let (_, rx) = watch::channel(seen);
    rx
}

/// What the board keeps of a pod: not who last applied which field.
fn slim(mut pod: Pod) -> Pod {
    pod.metadata.managed_fields = None;
    pod
}

#[cfg(test)]
#[path = "board_tests.rs"]
mod tests;
