//! The connected-runner hub: what this process knows of each runner in memory (its
//! last registration and its control channel), and the only way to send it commands.
//!
//! Heartbeats stay here; the Runner reconciler reads a [`SessionView`] and writes
//! status only when it changes. Every change that could alter a Runner's status is
//! announced on the channel [`Hub::take_changes`] hands out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::mpsc;

/// A runner: the namespace of its Runner, and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunnerKey {
    pub namespace: String,
    pub name: String,
}

impl RunnerKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for RunnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A command on a runner's control channel: the wire's [`ControlEvent`]s.
pub use crate::protocol::ControlEvent as Control;

/// What the reconciler may know of a runner's session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionView {
    pub runner_id: String,
    pub version: String,
    /// Registered with a valid token (`Some(RunnerToken name)`), or without.
    pub token: Option<String>,
    /// That token is bound to this runner (its own), not a pool token.
    pub own_token: bool,
    /// The public key it proved it holds (`ed25519:…`).
    pub public_key: String,
    pub connected: bool,
    /// Not connected, but it was since this process knew it: the runner is
    /// Idle, retrying its control channel.
    pub idle: bool,
    /// Its control channel was opened with `--direct-only`.
    pub direct_only: bool,
}

/// What a registration tells the hub.
#[derive(Clone, Copy, Debug, Default)]
pub struct Registration<'a> {
    pub runner_id: &'a str,
    pub version: &'a str,
    /// The RunnerToken it presented, if valid.
    pub token: Option<&'a str>,
    /// That token is bound to this runner.
    pub own_token: bool,
    pub public_key: &'a str,
}

struct Connection {
    id: u64,
    tx: mpsc::UnboundedSender<Control>,
    /// The `disabled` state the runner was last told.
    told_disabled: bool,
}

#[derive(Default)]
struct Session {
    runner_id: String,
    version: String,
    token: Option<String>,
    own_token: bool,
    public_key: String,
    connection: Option<Connection>,
    /// A control channel was open once.
    was_connected: bool,
    direct_only: bool,
    /// Last registration or connection (not part of the view: it changes all the time).
    last_seen: Option<std::time::Instant>,
}

impl Session {
    fn view(&self) -> SessionView {
        SessionView {
            runner_id: self.runner_id.clone(),
            version: self.version.clone(),
            token: self.token.clone(),
            own_token: self.own_token,
            public_key: self.public_key.clone(),
            connected: self.connection.is_some(),
            idle: self.connection.is_none() && self.was_connected,
            direct_only: self.direct_only,
        }
    }
}

/// The hub. Cheap to share behind an `Arc`; no lock is held across an await.
pub struct Hub {
    sessions: Mutex<HashMap<RunnerKey, Session>>,
    changes_tx: mpsc::UnboundedSender<RunnerKey>,
    changes_rx: Mutex<Option<mpsc::UnboundedReceiver<RunnerKey>>>,
    next_connection: AtomicU64,
    /// When this hub started: "not seen since" counts from here for runners it
    /// has not heard from.
    started: std::time::Instant,
    /// False while this replica stands by (leader election, another replica
    /// leads): the runner API answers 503 and no runner is held here.
    active: AtomicBool,
}

impl Default for Hub {
    fn default() -> Self {
        let (changes_tx, rx) = mpsc::unbounded_channel();
        Self {
            sessions: Mutex::default(),
            changes_tx,
            changes_rx: Mutex::new(Some(rx)),
            next_connection: AtomicU64::new(1),
            started: std::time::Instant::now(),
            active: AtomicBool::new(true),
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunnerKey, Session>> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stand by: refuse runners until [`Hub::activate`].
    pub fn stand_by(&self) {
        self.active.store(false, Ordering::SeqCst);
    }

    /// Serve runners (this replica leads, or there is no leader election).
    pub fn activate(&self) {
        self.active.store(true, Ordering::SeqCst);
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Ask for a reconcile of this runner's Runner (e.g. its Jobs changed).
    pub fn touch(&self, key: &RunnerKey) {
        self.changed(key);
    }

    fn changed(&self, key: &RunnerKey) {
        // Nobody listening (unit tests, shutting down) is fine.
        let _ = self.changes_tx.send(key.clone());
    }

    /// The stream of runners whose session changed; handed out once (to the Runner
    /// controller).
    pub fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<RunnerKey>> {
        self.changes_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// How long since this process last heard from runner `key` (registration or
    /// connection; since the hub started if never).
    pub fn since_seen(&self, key: &RunnerKey) -> std::time::Duration {
        let seen = self.lock().get(key).and_then(|s| s.last_seen);
        seen.unwrap_or(self.started).elapsed()
    }

    /// Record a registration. A change of credential or key announces a change.
    pub fn registered(&self, key: &RunnerKey, reg: &Registration<'_>) {
        let changed = {
            let mut sessions = self.lock();
            let s = sessions.entry(key.clone()).or_default();
            let before = s.view();
            s.runner_id = reg.runner_id.to_owned();
            s.version = reg.version.to_owned();
            s.token = reg.token.map(str::to_owned);
            s.own_token = reg.own_token;
            s.public_key = reg.public_key.to_owned();
            s.last_seen = Some(std::time::Instant::now());
            s.view() != before
        };
        if changed {
            self.changed(key);
        }
    }

    /// Whether runner `key` takes only Jobs that name it: said by each control
    /// channel it opens, before it opens (so it is never offered other Jobs).
    pub fn set_direct_only(&self, key: &RunnerKey, direct_only: bool) {
        let changed = {
            let mut sessions = self.lock();
            let s = sessions.entry(key.clone()).or_default();
            std::mem::replace(&mut s.direct_only, direct_only) != direct_only
        };
        if changed {
            self.changed(key);
        }
    }

    /// Open the control channel: replaces (and so ends) an older one of the same
    /// runner. Returns the connection id and the receiving end.
    pub fn connect(
        &self,
        key: &RunnerKey,
        token: &str,
        disabled: bool,
    ) -> (u64, mpsc::UnboundedReceiver<Control>) {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut sessions = self.lock();
            let s = sessions.entry(key.clone()).or_default();
            s.token = Some(token.to_owned());
            if let Some(old) = s.connection.take() {
                let _ = old.tx.send(Control::Close {
                    reason: "replaced by a newer connection of the same runner".into(),
                });
            }
            s.was_connected = true;
            s.connection = Some(Connection {
                id,
                tx,
                told_disabled: disabled,
            });
        }
        self.changed(key);
        (id, rx)
    }

    /// The control channel `id` ended (the runner went away, or we closed it).
    pub fn disconnected(&self, key: &RunnerKey, id: u64) {
        let changed = {
            let mut sessions = self.lock();
            match sessions.get_mut(key) {
                Some(s) if s.connection.as_ref().is_some_and(|c| c.id == id) => {
                    s.connection = None;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.changed(key);
        }
    }

    pub fn view(&self, key: &RunnerKey) -> Option<SessionView> {
        self.lock().get(key).map(Session::view)
    }

    /// Tell a connected runner `enable` or `disable` if it was last told otherwise.
    pub fn set_disabled(&self, key: &RunnerKey, disabled: bool) -> bool {
        let mut sessions = self.lock();
        let Some(conn) = sessions.get_mut(key).and_then(|s| s.connection.as_mut()) else {
            return false;
        };
        if conn.told_disabled == disabled {
            return false;
        }
        conn.told_disabled = disabled;
        let cmd = if disabled {
            Control::Disable
        } else {
            Control::Enable
        };
        conn.tx.send(cmd).is_ok()
    }

    /// Send a command to a connected runner; false when it is not connected.
    pub fn send(&self, key: &RunnerKey, cmd: Control) -> bool {
        let mut sessions = self.lock();
        let Some(s) = sessions.get_mut(key) else {
            return false;
        };
        let Some(conn) = s.connection.as_ref() else {
            return false;
        };
        let sent = conn.tx.send(cmd.clone()).is_ok();
        if cmd.is_final() {
            s.connection = None;
        }
        sent
    }

    /// End a runner's control channel with a reason (it reconnects and learns why).
    pub fn close(&self, key: &RunnerKey, reason: &str) {
        if self.send(
            key,
            Control::Close {
                reason: reason.to_owned(),
            },
        ) {
            self.changed(key);
        }
    }

    /// End every control channel that uses RunnerToken `token` in `namespace`.
    pub fn close_token(&self, namespace: &str, token: &str, reason: &str) {
        let keys: Vec<RunnerKey> = self
            .lock()
            .iter()
            .filter(|(k, s)| k.namespace == namespace && s.token.as_deref() == Some(token))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.close(&key, reason);
        }
    }

    /// The Runner was deleted: drop what we knew. With `decommission`, a connected
    /// runner is sent `delete` first. Returns whether a command went out.
    pub fn forget(&self, key: &RunnerKey, decommission: bool) -> bool {
        let cmd = if decommission {
            Control::Delete
        } else {
            Control::Close {
                reason: "forgotten: the Runner was deleted".into(),
            }
        };
        let sent = self.send(key, cmd);
        self.lock().remove(key);
        sent
    }

    /// End every control channel (shutting down).
    pub fn close_all(&self, reason: &str) {
        let keys: Vec<RunnerKey> = self.lock().keys().cloned().collect();
        for key in keys {
            self.close(&key, reason);
        }
    }

    /// How many runners hold a control channel now.
    pub fn connected(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| s.connection.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn connection_lifecycle_announces_changes_and_commands() {
        let hub = Hub::default();
        let mut changes = hub.take_changes().unwrap();
        assert!(hub.take_changes().is_none(), "handed out once");
        let key = RunnerKey::new("ns", "r1");

        let reg = Registration {
            runner_id: "id1",
            version: "v1",
            token: Some("tok"),
            own_token: true,
            public_key: "ed25519:k",
        };
        hub.registered(&key, &reg);
        assert_eq!(changes.try_recv().unwrap(), key);
        hub.registered(&key, &reg);
        assert!(changes.try_recv().is_err(), "same registration: no change");

        let (id, mut rx) = hub.connect(&key, "tok", false);
        assert!(hub.view(&key).unwrap().connected);
        assert_eq!(changes.try_recv().unwrap(), key);

        assert!(!hub.set_disabled(&key, false), "already enabled");
        assert!(hub.set_disabled(&key, true));
        assert_eq!(rx.try_recv().unwrap(), Control::Disable);
        assert!(!hub.set_disabled(&key, true), "told once");

        // A newer connection replaces the old one, which is told why.
        let (id2, _rx2) = hub.connect(&key, "tok", true);
        assert!(matches!(rx.try_recv().unwrap(), Control::Close { .. }));
        hub.disconnected(&key, id);
        assert!(
            hub.view(&key).unwrap().connected,
            "stale disconnect ignored"
        );
        hub.disconnected(&key, id2);
        assert!(!hub.view(&key).unwrap().connected);
    }

    #[test]
    fn forget_and_decommission() {
        let hub = Hub::default();
        let key = RunnerKey::new("ns", "r1");
        let (_, mut rx) = hub.connect(&key, "tok", false);
        assert!(hub.forget(&key, true));
        assert_eq!(rx.try_recv().unwrap(), Control::Delete);
        assert!(hub.view(&key).is_none());
        assert!(!hub.forget(&key, true), "not connected: nothing sent");

        let (_, mut rx) = hub.connect(&key, "tok", false);
        hub.close_token("ns", "tok", "revoked");
        assert_eq!(
            rx.try_recv().unwrap(),
            Control::Close {
                reason: "revoked".into()
            }
        );
        assert_eq!(hub.connected(), 0);
    }

    #[test]
    fn a_control_channel_says_whether_the_runner_is_direct_only() {
        let hub = Hub::default();
        let key = RunnerKey::new("ns", "r1");
        hub.set_direct_only(&key, true);
        let _conn = hub.connect(&key, "tok", false);
        assert!(hub.view(&key).unwrap().direct_only);
        hub.set_direct_only(&key, false);
        assert!(!hub.view(&key).unwrap().direct_only);
    }
}
