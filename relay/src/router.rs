//! Live routing: which connections are open for which participant, and the
//! non-blocking hand-off of freshly committed messages to them.
//!
//! The router never awaits a connection. Each connection has a bounded queue;
//! [`Router::deliver`] uses `try_send`, and when a queue is full it marks the
//! connection *lagging* instead of buffering: the connection's delivery task
//! then re-reads its inbox from the store once it has room (see
//! [`crate::session`]). Memory per connection is therefore bounded by the
//! queue size whatever a reader does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tallinn_common::wire::ErrorCode;
use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;
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
        *self.kick_reason.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((code, reason.to_string()));
        self.kicked.store(true, Ordering::SeqCst);
        self.kick.notify_one();
        self.wake.notify_one();
    }
}

/// The live connection table.
#[derive(Debug)]
pub struct Router {
    /// Highest seq known durable (flushed). Deliveries read from the store
    /// never go beyond it: sled reads see writes not yet flushed, and a
    /// message must not reach a recipient before it is durable.
    pub durable_seq: AtomicU64,
    conns: Mutex<HashMap<String, Vec<Arc<ConnHandle>>>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Router {
    /// An empty router.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            durable_seq: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
        }
    }

    /// Registers a connection if the participant has fewer than `max`;
    /// returns the handle and the receiving end of its delivery queue.
    pub fn register(
        &self,
        participant: &str,
        device: &str,
        queue_len: usize,
        max: usize,
    ) -> Option<(Arc<ConnHandle>, mpsc::Receiver<Delivery>)> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let list = conns.entry(participant.to_string()).or_default();
        if list.len() >= max {
            return None;
        }
        let (tx, rx) = mpsc::channel(queue_len.max(1));
        let handle = Arc::new(ConnHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            participant: participant.to_string(),
            device: device.to_string(),
            queue: tx,
            // A new connection starts by reading its backlog from the store.
            lagging: AtomicBool::new(true),
            wake: Notify::new(),
            kicked: AtomicBool::new(false),
            kick: Notify::new(),
            kick_reason: Mutex::new(None),
        });
        list.push(handle.clone());
        Some((handle, rx))
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

    /// Hands a committed message to every open connection of its recipients.
    /// Never blocks: a full queue marks the connection lagging.
    pub fn deliver(&self, msg: Arc<StoredMessage>, recipients: &[String]) {
        let delivery = Delivery {
            seq: msg.seq,
            frame: deliver_frame(&msg),
        };
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for r in recipients {
            let Some(list) = conns.get(r) else { continue };
            for c in list {
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

    /// Makes every connection re-read its inbox from the store (after a
    /// failed flush, whose messages were never routed live).
    pub fn mark_all_lagging(&self) {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for list in conns.values() {
            for c in list {
                c.lagging.store(true, Ordering::SeqCst);
                c.wake.notify_one();
            }
        }
    }

    /// Closes every connection of participants `keep` rejects.
    pub fn kick_where(&self, mut reject: impl FnMut(&str) -> bool) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for (p, list) in conns.iter() {
            if reject(p) {
                for c in list {
                    c.kick(
                        ErrorCode::UnknownParticipant,
                        "removed from the roster, or its keys changed",
                    );
                    n += 1;
                }
            }
        }
        n
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

    fn msg(seq: u64) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            seq,
            received_at_ms: 0,
            envelope: vec![],
        })
    }

    #[test]
    fn full_queue_marks_lagging_instead_of_buffering() {
        let r = Router::new(Arc::new(Metrics::default()));
        let (h, mut rx) = r.register("EE", "d", 2, 4).unwrap();
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
        let r = Router::new(Arc::new(Metrics::default()));
        let a = r.register("EE", "a", 1, 2).unwrap();
        let _b = r.register("EE", "b", 1, 2).unwrap();
        assert!(r.register("EE", "c", 1, 2).is_none());
        r.unregister(&a.0);
        assert!(r.register("EE", "c", 1, 2).is_some());
        assert_eq!(r.sessions_of("EE"), 2);
        assert_eq!(r.kick_where(|p| p == "EE"), 2);
    }
}
