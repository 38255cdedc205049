//! Live routing: which connections are open for which participant, and the
//! non-blocking hand-off of freshly committed messages to them.
//!
//! The router never awaits a connection. Each connection has a bounded queue;
//! [`Router::deliver`] uses `try_send`, and when a queue is full it marks the
//! connection *lagging* instead of buffering: the connection's delivery task
//! then re-reads its inbox from the store once it has room (see
//! [`crate::session`]). Memory per connection is therefore bounded by the
//! queue size whatever a reader does.
//!
//! The router also holds the roster in force, under the same lock as the
//! connection table, so that admission and roster changes are linearised:
//! a session is registered only if its participant's keys are still those
//! it authenticated with ([`Router::register`]), and a roster change swaps
//! the roster *before* closing the sessions it no longer admits
//! ([`Router::replace_roster`]). Whatever the interleaving, no session of a
//! removed or re-keyed participant survives a reload.
//!
//! One device, one reader: a new session for a (participant, device) that
//! already has one replaces it (closed with `replaced`), so two sessions
//! never advance one cursor and skip each other's messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ed25519_dalek::VerifyingKey;
use tallinn_common::wire::ErrorCode;
use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;
use crate::rules::RosterRules;
use crate::store::StoredMessage;

/// A live delivery: the message's seq and its `Deliver` frame, encoded once
/// per message and shared (reference-counted) by every recipient connection.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Sequence number.
    pub seq: u64,
    /// The encoded, length-prefixed `Deliver` frame.
    pub frame: bytes::Bytes,
}

/// Encodes the `Deliver` frame of a stored message.
pub fn deliver_frame(m: &StoredMessage) -> bytes::Bytes {
    bytes::Bytes::from(tallinn_common::wire::encode_frame(
        &tallinn_common::wire::Frame::Deliver {
            seq: m.seq,
            received_at_ms: m.received_at_ms,
            envelope: m.envelope.clone(),
        },
    ))
}

/// A live connection as the router sees it.
#[derive(Debug)]
pub struct ConnHandle {
    /// Unique connection number.
    pub id: u64,
    /// Participant id.
    pub participant: String,
    /// Device label.
    pub device: String,
    /// The key the session authenticated with (re-checked on every roster
    /// change).
    pub auth_key: VerifyingKey,
    /// The next roster-log index to push to this session; `u64::MAX` until
    /// it fetches the log (`RosterFetch`), so a session that never fetched
    /// never receives roster frames. Written by the reader on a fetch, read
    /// and advanced by the delivery task, which alone writes roster frames.
    pub roster_next: AtomicU64,
    /// Set by a fetch: answer with at least one `RosterEntries` frame (the
    /// head), even when nothing is new.
    pub roster_answer: AtomicBool,
    /// Live deliveries.
    pub queue: mpsc::Sender<Delivery>,
    /// Set when a live delivery could not be queued: read from the store.
    pub lagging: AtomicBool,
    /// Wakes the delivery task (lagging set, ack received, shutdown).
    pub wake: Notify,
    /// Set to close the connection (roster removal, shutdown).
    pub kicked: AtomicBool,
    /// Wakes the session when `kicked` is set.
    pub kick: Notify,
    /// The code and reason the session closes with when kicked.
    pub kick_reason: Mutex<Option<(ErrorCode, String)>>,
}

impl ConnHandle {
    /// Asks the session to close with `code` and `reason`.
    pub fn kick(&self, code: ErrorCode, reason: &str) {
        {
            let mut r = self.kick_reason.lock().unwrap_or_else(|p| p.into_inner());
            *r = Some((code, reason.to_string()));
            self.kicked.store(true, Ordering::SeqCst);
        }
        self.kick.notify_one();
        self.wake.notify_one();
    }

    /// Runs `f` unless the session was kicked, under the lock [`kick`]
    /// takes: whatever `f` queues (an ack for the commit thread) is queued
    /// before anything queued after a kick returned. Returns whether it ran.
    ///
    /// [`kick`]: ConnHandle::kick
    pub fn unless_kicked(&self, f: impl FnOnce()) -> bool {
        let r = self.kick_reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_some() {
            return false;
        }
        f();
        true
    }
}

/// Why [`Router::register`] refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The participant already has the maximum number of sessions.
    #[error("too many sessions for the participant")]
    TooMany,
    /// The roster changed since authentication: the participant was removed
    /// or its keys changed.
    #[error("the participant was removed from the roster or its keys changed")]
    RosterChanged,
}

/// A registered session: its handle, its live queue, and the session of the
/// same device it replaced (already told to close), if any.
pub type Registration = (
    Arc<ConnHandle>,
    mpsc::Receiver<Delivery>,
    Option<Arc<ConnHandle>>,
);

/// The live connection table.
#[derive(Debug)]
pub struct Router {
    /// Highest seq known durable (flushed). Deliveries read from the store
    /// never go beyond it: sled reads see writes not yet flushed, and a
    /// message must not reach a recipient before it is durable.
    pub durable_seq: AtomicU64,
    conns: Mutex<HashMap<String, Vec<Arc<ConnHandle>>>>,
    /// The roster in force. Replaced only while `conns` is locked.
    roster: RwLock<Arc<RosterRules>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Router {
    /// An empty router with the roster in force.
    pub fn new(roster: Arc<RosterRules>, metrics: Arc<Metrics>) -> Self {
        Self {
            durable_seq: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            roster: RwLock::new(roster),
            next_id: AtomicU64::new(1),
            metrics,
        }
    }

    /// The roster in force.
    pub fn roster(&self) -> Arc<RosterRules> {
        self.roster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers a session of `participant`'s `device` authenticated with
    /// the key `authenticated_as`, if that is still the device's key in the
    /// roster in force and it has fewer than `max` sessions (the one it replaces not
    /// counted). A session of the same device is replaced: removed from the
    /// table and told to close with `replaced`.
    ///
    /// # Errors
    /// [`RegisterError`]; nothing is registered or replaced then.
    pub fn register(
        &self,
        participant: &str,
        device: &str,
        authenticated_as: &VerifyingKey,
        queue_len: usize,
        max: usize,
    ) -> Result<Registration, RegisterError> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        // Under the table lock: a roster swap is either wholly before this
        // (and seen here) or wholly after (and its sweep sees this session).
        let current = self.roster();
        if current
            .admits(participant, device, authenticated_as)
            .is_err()
        {
            return Err(RegisterError::RosterChanged);
        }
        let list = conns.entry(participant.to_string()).or_default();
        let same_device = list.iter().position(|c| c.device == device);
        let others = list.len() - usize::from(same_device.is_some());
        if others >= max {
            if list.is_empty() {
                conns.remove(participant);
            }
            return Err(RegisterError::TooMany);
        }
        let replaced = same_device.map(|i| list.remove(i));
        if let Some(old) = &replaced {
            old.kick(
                ErrorCode::Replaced,
                "another session of this participant and device took over",
            );
        }
        let (tx, rx) = mpsc::channel(queue_len.max(1));
        let handle = Arc::new(ConnHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            participant: participant.to_string(),
            device: device.to_string(),
            auth_key: *authenticated_as,
            roster_next: AtomicU64::new(u64::MAX),
            roster_answer: AtomicBool::new(false),
            queue: tx,
            // A new connection starts by reading its backlog from the store.
            lagging: AtomicBool::new(true),
            wake: Notify::new(),
            kicked: AtomicBool::new(false),
            kick: Notify::new(),
            kick_reason: Mutex::new(None),
        });
        list.push(handle.clone());
        Ok((handle, rx, replaced))
    }

    /// Puts `roster` in force, then closes every session it no longer
    /// admits (participant removed, device revoked, key changed) and wakes
    /// the others (sessions that fetched the roster log push the new
    /// entries). Returns how many were closed.
    pub fn replace_roster(&self, roster: Arc<RosterRules>) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        *self.roster.write().unwrap_or_else(|p| p.into_inner()) = roster.clone();
        let mut n = 0;
        for list in conns.values() {
            for c in list {
                match roster.admits(&c.participant, &c.device, &c.auth_key) {
                    Ok(()) => c.wake.notify_one(),
                    Err((code, reason)) => {
                        c.kick(code, &reason);
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Removes a connection.
    pub fn unregister(&self, handle: &ConnHandle) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = conns.get_mut(&handle.participant) {
            list.retain(|c| c.id != handle.id);
            if list.is_empty() {
                conns.remove(&handle.participant);
            }
        }
    }

    /// Hands a committed message to every open connection of its recipients
    /// (a participant id: each of its devices; `participant/device`: that
    /// device only). Never blocks: a full queue marks the connection lagging.
    pub fn deliver(&self, msg: Arc<StoredMessage>, recipients: &[String]) {
        let delivery = Delivery {
            seq: msg.seq,
            frame: deliver_frame(&msg),
        };
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for r in recipients {
            let (participant, device) = crate::store::split_recipient(r);
            let Some(list) = conns.get(participant) else {
                continue;
            };
            for c in list.iter().filter(|c| device.is_none_or(|d| d == c.device)) {
                if c.queue.try_send(delivery.clone()).is_err() {
                    c.lagging.store(true, Ordering::SeqCst);
                    self.metrics
                        .delivery_queue_overflows
                        .fetch_add(1, Ordering::Relaxed);
                }
                c.wake.notify_one();
            }
        }
    }

    /// Number of open sessions of a participant.
    pub fn sessions_of(&self, participant: &str) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.get(participant).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallinn_common::identity::{Identity, ParticipantId};

    fn msg(seq: u64) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            seq,
            received_at_ms: 0,
            envelope: vec![],
        })
    }

    fn identity(id: &str) -> Identity {
        Identity::generate(ParticipantId::new(id).unwrap())
    }

    /// A roster of UA and the given EE identity (when present).
    fn roster(ua: &Identity, ee: Option<&Identity>) -> Arc<RosterRules> {
        let mut text = ua.roster_entry("Ukraine", "member");
        if let Some(ee) = ee {
            text.push_str(&ee.roster_entry("Estonia", "member"));
        }
        text.push_str("[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\n");
        Arc::new(RosterRules::V1(Arc::new(
            tallinn_common::roster::Roster::parse(&text).unwrap(),
        )))
    }

    fn router() -> (Router, Identity, Identity) {
        let (ua, ee) = (identity("UA"), identity("EE"));
        let r = Router::new(roster(&ua, Some(&ee)), Arc::new(Metrics::default()));
        (r, ua, ee)
    }

    fn keys(i: &Identity) -> VerifyingKey {
        i.public().sign_key
    }

    #[test]
    fn full_queue_marks_lagging_instead_of_buffering() {
        let (r, _, ee) = router();
        let (h, mut rx, _) = r.register("EE", "d", &keys(&ee), 2, 4).unwrap();
        h.lagging.store(false, Ordering::SeqCst);
        for seq in 1..=5 {
            r.deliver(msg(seq), &["EE".into()]);
        }
        assert!(h.lagging.load(Ordering::SeqCst));
        assert_eq!(
            r.metrics.delivery_queue_overflows.load(Ordering::Relaxed),
            3
        );
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        assert_eq!(rx.try_recv().unwrap().seq, 2);
        assert!(rx.try_recv().is_err(), "queue holds at most its bound");
    }

    #[test]
    fn per_participant_connection_limit() {
        let (r, _, ee) = router();
        let k = keys(&ee);
        let a = r.register("EE", "a", &k, 1, 2).unwrap();
        let _b = r.register("EE", "b", &k, 1, 2).unwrap();
        assert_eq!(
            r.register("EE", "c", &k, 1, 2).unwrap_err(),
            RegisterError::TooMany
        );
        r.unregister(&a.0);
        assert!(r.register("EE", "c", &k, 1, 2).is_ok());
        assert_eq!(r.sessions_of("EE"), 2);
    }

    /// Item 6: a session that authenticated against the old roster and
    /// registers after the reload swept the table must not slip in.
    #[test]
    fn a_session_authenticated_before_a_reload_cannot_register_after_it() {
        let (r, ua, ee) = router();
        let authenticated_as = keys(&ee);
        // The reload lands between the Auth check and the registration.
        assert_eq!(r.replace_roster(roster(&ua, None)), 0);
        assert_eq!(
            r.register("EE", "d", &authenticated_as, 1, 4).unwrap_err(),
            RegisterError::RosterChanged
        );
        // Re-keyed rather than removed: the old keys are refused too.
        let rekeyed = identity("EE");
        r.replace_roster(roster(&ua, Some(&rekeyed)));
        assert_eq!(
            r.register("EE", "d", &authenticated_as, 1, 4).unwrap_err(),
            RegisterError::RosterChanged
        );
        assert!(r.register("EE", "d", &keys(&rekeyed), 1, 4).is_ok());
        assert_eq!(r.sessions_of("EE"), 1);
    }

    #[test]
    fn a_reload_puts_the_roster_in_force_before_closing_sessions() {
        let (r, ua, ee) = router();
        let (ee_session, _rx, _) = r.register("EE", "d", &keys(&ee), 1, 4).unwrap();
        let (ua_session, _rx2, _) = r.register("UA", "d", &keys(&ua), 1, 4).unwrap();
        assert_eq!(r.replace_roster(roster(&ua, None)), 1);
        assert!(ee_session.kicked.load(Ordering::SeqCst));
        assert!(!ua_session.kicked.load(Ordering::SeqCst));
        assert!(r.roster().auth_key("EE", "d").is_err());
    }

    /// Item 5: one reader per cursor.
    #[test]
    fn a_second_session_of_the_same_device_replaces_the_first() {
        let (r, _, ee) = router();
        let k = keys(&ee);
        let (first, _rx1, none) = r.register("EE", "front-office", &k, 1, 2).unwrap();
        assert!(none.is_none());
        let (_other, _rx2, _) = r.register("EE", "back-office", &k, 1, 2).unwrap();
        // At the participant's cap, the same device still gets in: it
        // replaces its predecessor rather than adding a session.
        let (second, _rx3, replaced) = r.register("EE", "front-office", &k, 1, 2).unwrap();
        assert_eq!(replaced.map(|h| h.id), Some(first.id));
        assert!(first.kicked.load(Ordering::SeqCst));
        assert_eq!(
            first.kick_reason.lock().unwrap().as_ref().map(|(c, _)| *c),
            Some(ErrorCode::Replaced)
        );
        assert!(!second.kicked.load(Ordering::SeqCst));
        assert_eq!(r.sessions_of("EE"), 2);
        // Live traffic reaches the new session only.
        r.deliver(msg(1), &["EE".into()]);
        assert_eq!(second.queue.capacity(), 0);
        assert_eq!(first.queue.capacity(), 1);
        // The old session's late unregistration leaves the new one alone.
        r.unregister(&first);
        assert_eq!(r.sessions_of("EE"), 2);
    }
}
