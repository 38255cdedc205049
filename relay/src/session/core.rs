//! The sans-IO core of one authenticated session: the delivery window (in
//! count and bytes), what to deliver next (backlog from the store, or live
//! traffic), that a store read never delivers past durable progress, ack
//! clamping, and what happens once the session is closed (kicked,
//! replaced, shutting down). Plain data: the async driver
//! (`super::driver`) feeds it events and carries out the actions it
//! returns, and the tests below drive it without a socket.
//!
//! ```text
//!  router: Live{seq,frame} ─┐          ┌─▶ Write(frame)           → writer task
//!  router: Lagging ─────────┤          ├─▶ ReadInbox{after,limit} → store (blocking)
//!  store:  StoreRead{..} ───┼─▶ core ──┼─▶ StoreAck{up_to}        → commit thread
//!  peer:   Ack{up_to} ──────┤          └─▶ Close{code,reason}
//!  relay:  Kick{code,..} ───┘   poll_delivery(): Read / Live / Wait
//! ```
//!
//! Model: quinn-proto's `Connection` (events in, actions out, no I/O).

use std::collections::VecDeque;

use bytes::Bytes;
use tallinn_common::wire::{ErrorCode, Frame};

/// The bounds the core keeps.
#[derive(Debug, Clone, Copy)]
pub struct CoreLimits {
    /// Unacknowledged deliveries at most.
    pub window: usize,
    /// Bytes of unacknowledged deliveries at most (a frame is always allowed
    /// when nothing is in flight, however large).
    pub window_bytes: usize,
    /// Most messages asked of the store in one read.
    pub read_batch: usize,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A committed (durable) message routed live to this session.
    Live {
        /// Its seq.
        seq: u64,
        /// Its encoded `Deliver` frame.
        frame: Bytes,
    },
    /// The router could not queue a live delivery: read from the store.
    Lagging,
    /// The answer to [`Action::ReadInbox`]: inbox messages in seq order
    /// (seq, `Deliver` frame), read when `durable` was the highest durable
    /// seq, for a read of at most `asked`.
    StoreRead {
        /// The messages read.
        messages: Vec<(u64, Bytes)>,
        /// The durable watermark when the read started.
        durable: u64,
        /// The limit the read was asked with.
        asked: usize,
    },
    /// The peer acknowledged everything up to this seq.
    Ack {
        /// Cumulative.
        up_to: u64,
    },
    /// The relay closes the session (roster change, replaced, shutdown).
    Kick {
        /// Close code.
        code: ErrorCode,
        /// Reason for the peer.
        reason: String,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write a `Deliver` frame to the peer (in the order returned).
    Write {
        /// The frame.
        frame: Bytes,
        /// Its seq.
        seq: u64,
        /// Read from the store (backlog, catch-up) rather than live.
        from_store: bool,
    },
    /// Read up to `limit` inbox messages with seq > `after` and answer with
    /// [`Event::StoreRead`].
    ReadInbox {
        /// Exclusive lower bound.
        after: u64,
        /// At most this many.
        limit: usize,
    },
    /// Advance the device's durable cursor.
    StoreAck {
        /// Cumulative.
        up_to: u64,
    },
    /// Close the session.
    Close {
        /// Code.
        code: ErrorCode,
        /// Reason.
        reason: String,
    },
}

/// What the delivery driver should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the store: carry out this [`Action::ReadInbox`] (first drop
    /// whatever live deliveries are queued: the read covers them).
    Read {
        /// Exclusive lower bound.
        after: u64,
        /// At most this many.
        limit: usize,
    },
    /// Take one live delivery if one is queued, else wait.
    Live,
    /// Wait for an ack, a lagging mark or a close.
    Wait,
}

/// One authenticated session's delivery and acknowledgement state.
#[derive(Debug)]
pub struct SessionCore {
    limits: CoreLimits,
    /// (seq, frame bytes) delivered and not yet acknowledged, ascending.
    inflight: VecDeque<(u64, usize)>,
    inflight_bytes: usize,
    last_sent: u64,
    acked: u64,
    /// The store holds deliveries the live path did not bring.
    lagging: bool,
    /// A store read is outstanding.
    reading: bool,
    closed: bool,
    /// Acks that claimed more than was delivered.
    clamped_acks: u64,
}

impl SessionCore {
    /// A session resuming after the device's acked cursor: it starts by
    /// reading its backlog from the store.
    pub fn new(limits: CoreLimits, acked: u64) -> Self {
        Self {
            limits: CoreLimits {
                window: limits.window.max(1),
                window_bytes: limits.window_bytes.max(1),
                read_batch: limits.read_batch.max(1),
            },
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            last_sent: acked,
            acked,
            lagging: true,
            reading: false,
            closed: false,
            clamped_acks: 0,
        }
    }

    /// Highest seq delivered.
    pub fn last_sent(&self) -> u64 {
        self.last_sent
    }

    /// Highest seq acknowledged (clamped to what was delivered).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Whether the session was closed (nothing more is delivered or acked).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Acks that claimed more than was delivered (clamped).
    pub fn clamped_acks(&self) -> u64 {
        self.clamped_acks
    }

    fn has_room(&self) -> bool {
        self.inflight.is_empty()
            || (self.inflight.len() < self.limits.window
                && self.inflight_bytes < self.limits.window_bytes)
    }

    /// What the delivery driver should do next.
    pub fn poll_delivery(&mut self) -> Next {
        if self.closed || self.reading || !self.has_room() {
            return Next::Wait;
        }
        if self.lagging {
            self.lagging = false;
            self.reading = true;
            let room = self.limits.window - self.inflight.len().min(self.limits.window);
            return Next::Read {
                after: self.last_sent,
                limit: room.clamp(1, self.limits.read_batch),
            };
        }
        Next::Live
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        if self.closed {
            // Closed: nothing is delivered, and no ack moves the cursor (a
            // replaced session's late acks would skip the new one's
            // messages).
            return Vec::new();
        }
        match event {
            Event::Live { seq, frame } => {
                if self.lagging || seq <= self.last_sent {
                    // Lagging: the next store read covers it. At or below
                    // what was sent: already delivered from the store.
                    return Vec::new();
                }
                vec![self.deliver(seq, frame, false)]
            }
            Event::Lagging => {
                self.lagging = true;
                Vec::new()
            }
            Event::StoreRead {
                messages,
                durable,
                asked,
            } => {
                self.reading = false;
                let full = messages.len() >= asked;
                let mut out = Vec::new();
                for (seq, frame) in messages {
                    if seq > durable {
                        // Not durable yet: it arrives live once its commit
                        // returned. Delivery never runs ahead of durability.
                        break;
                    }
                    if seq <= self.last_sent {
                        continue;
                    }
                    if !self.has_room() {
                        // Window spent: read the rest again later.
                        self.lagging = true;
                        break;
                    }
                    out.push(self.deliver(seq, frame, true));
                }
                if full {
                    self.lagging = true;
                }
                out
            }
            Event::Ack { up_to } => {
                // Never acknowledge what was not delivered.
                let up = up_to.min(self.last_sent);
                if up < up_to {
                    self.clamped_acks += 1;
                }
                if up <= self.acked {
                    return Vec::new();
                }
                self.acked = up;
                while let Some(&(seq, len)) = self.inflight.front() {
                    if seq > up {
                        break;
                    }
                    self.inflight.pop_front();
                    self.inflight_bytes -= len;
                }
                vec![Action::StoreAck { up_to: up }]
            }
            Event::Kick { code, reason } => {
                self.closed = true;
                vec![Action::Close { code, reason }]
            }
        }
    }

    fn deliver(&mut self, seq: u64, frame: Bytes, from_store: bool) -> Action {
        self.inflight.push_back((seq, frame.len()));
        self.inflight_bytes += frame.len();
        self.last_sent = seq;
        Action::Write {
            frame,
            seq,
            from_store,
        }
    }
}

/// A frame from an authenticated peer, as the session treats it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// An envelope to check and store.
    Send(Vec<u8>),
    /// A cumulative acknowledgement.
    Ack(u64),
    /// The peer reported an error and ends the session (no answer).
    PeerError(ErrorCode, String),
    /// Version 2: send the roster log from this index, then push new entries.
    RosterFetch(u64),
    /// Version 2: append this roster-log entry (`postcard(SignedEntry)`).
    RosterSubmit(Vec<u8>),
    /// Version 2: keep this archive checkpoint as the device's latest.
    Checkpoint(tallinn_common::evidence::SignedCheckpoint),
}

/// The admission rule for frames after `Welcome`: a client may send only
/// `Send`, `Ack`, `Error`, `RosterFetch`, `RosterSubmit` and `Checkpoint`;
/// anything else closes with `malformed`.
///
/// # Errors
/// The `malformed` close, with a reason.
pub fn classify(frame: Frame) -> Result<Incoming, (ErrorCode, String)> {
    match frame {
        Frame::Send { envelope } => Ok(Incoming::Send(envelope)),
        Frame::Ack { up_to_seq } => Ok(Incoming::Ack(up_to_seq)),
        Frame::Error { code, reason } => Ok(Incoming::PeerError(code, reason)),
        Frame::RosterFetch { from } => Ok(Incoming::RosterFetch(from)),
        Frame::RosterSubmit { entry } => Ok(Incoming::RosterSubmit(entry.0)),
        Frame::Checkpoint { checkpoint } => Ok(Incoming::Checkpoint(checkpoint)),
        other => Err((
            ErrorCode::Malformed,
            format!("unexpected {} frame from client", other.name()),
        )),
    }
}

/// The device cap: a known device always gets in; a new one only while the
/// participant has fewer than `max` devices.
pub fn admit_device(known: &[String], device: &str, max: usize) -> bool {
    known.iter().any(|d| d == device) || known.len() < max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(window: usize, window_bytes: usize, acked: u64) -> SessionCore {
        SessionCore::new(
            CoreLimits {
                window,
                window_bytes,
                read_batch: 256,
            },
            acked,
        )
    }

    fn frame(seq: u64) -> Bytes {
        Bytes::from(vec![seq as u8; 10])
    }

    fn read(seqs: &[u64]) -> Vec<(u64, Bytes)> {
        seqs.iter().map(|&s| (s, frame(s))).collect()
    }

    fn written(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Write { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_session_starts_with_its_backlog_then_goes_live() {
        let mut c = core(8, 1 << 20, 3);
        assert_eq!(c.poll_delivery(), Next::Read { after: 3, limit: 8 });
        assert_eq!(c.poll_delivery(), Next::Wait, "one read at a time");
        let a = c.handle(Event::StoreRead {
            messages: read(&[4, 6]),
            durable: 6,
            asked: 8,
        });
        assert_eq!(written(&a), vec![4, 6]);
        assert_eq!(c.poll_delivery(), Next::Live);
        let a = c.handle(Event::Live {
            seq: 9,
            frame: frame(9),
        });
        assert_eq!(written(&a), vec![9]);
        // A live copy of something already read from the store is dropped.
        assert!(c
            .handle(Event::Live {
                seq: 6,
                frame: frame(6)
            })
            .is_empty());
    }

    /// Item 1: delivery follows durable progress. A store read sees writes
    /// that are not durable yet; it stops before them, and they come live
    /// (in order) once their commit returned.
    #[test]
    fn a_store_read_never_delivers_past_durable_progress() {
        let mut c = core(8, 1 << 20, 0);
        assert!(matches!(c.poll_delivery(), Next::Read { .. }));
        let a = c.handle(Event::StoreRead {
            messages: read(&[1, 2, 3]),
            durable: 2,
            asked: 8,
        });
        assert_eq!(written(&a), vec![1, 2], "3 is not durable yet");
        assert_eq!(c.poll_delivery(), Next::Live);
        let a = c.handle(Event::Live {
            seq: 3,
            frame: frame(3),
        });
        assert_eq!(written(&a), vec![3]);
        assert_eq!(c.last_sent(), 3);
    }

    /// Item 1, the other half: while lagging, live deliveries are dropped
    /// (the store read covers them), so a live delivery can never move
    /// `last_sent` past messages the session has not read yet.
    #[test]
    fn while_lagging_live_deliveries_wait_for_the_store() {
        let mut c = core(8, 1 << 20, 0);
        let _ = c.poll_delivery();
        c.handle(Event::StoreRead {
            messages: read(&[1]),
            durable: 1,
            asked: 8,
        });
        c.handle(Event::Lagging); // the router's queue overflowed at 2..=4
        assert!(c
            .handle(Event::Live {
                seq: 5,
                frame: frame(5)
            })
            .is_empty());
        assert_eq!(c.last_sent(), 1, "5 did not jump over 2..=4");
        assert_eq!(c.poll_delivery(), Next::Read { after: 1, limit: 7 });
        let a = c.handle(Event::StoreRead {
            messages: read(&[2, 3, 4, 5]),
            durable: 5,
            asked: 7,
        });
        assert_eq!(written(&a), vec![2, 3, 4, 5]);
    }

    #[test]
    fn the_window_bounds_count_and_bytes_and_acks_reopen_it() {
        let mut c = core(2, 1 << 20, 0);
        let _ = c.poll_delivery();
        let a = c.handle(Event::StoreRead {
            messages: read(&[1, 2, 3]),
            durable: 9,
            asked: 2,
        });
        assert_eq!(written(&a), vec![1, 2]);
        assert_eq!(c.poll_delivery(), Next::Wait, "window full");
        assert_eq!(
            c.handle(Event::Ack { up_to: 1 }),
            vec![Action::StoreAck { up_to: 1 }]
        );
        assert_eq!(c.poll_delivery(), Next::Read { after: 2, limit: 1 });
        // Bytes: 25 bytes allowed, frames of 10: the third waits (a frame
        // always goes when nothing is in flight).
        let mut c = core(100, 25, 0);
        let _ = c.poll_delivery();
        let a = c.handle(Event::StoreRead {
            messages: read(&[1, 2, 3, 4]),
            durable: 9,
            asked: 100,
        });
        assert_eq!(written(&a), vec![1, 2, 3]);
        assert_eq!(c.poll_delivery(), Next::Wait);
        c.handle(Event::Ack { up_to: 3 });
        assert_eq!(
            c.poll_delivery(),
            Next::Read {
                after: 3,
                limit: 100
            }
        );
    }

    #[test]
    fn acks_are_clamped_to_what_was_delivered_and_never_go_back() {
        let mut c = core(8, 1 << 20, 5);
        let _ = c.poll_delivery();
        c.handle(Event::StoreRead {
            messages: read(&[7]),
            durable: 7,
            asked: 8,
        });
        assert_eq!(
            c.handle(Event::Ack { up_to: 1000 }),
            vec![Action::StoreAck { up_to: 7 }]
        );
        assert_eq!(c.clamped_acks(), 1);
        assert!(c.handle(Event::Ack { up_to: 6 }).is_empty());
        assert_eq!(c.acked(), 7);
    }

    /// Item 5: a session replaced by a newer one of the same device is
    /// closed, and its late acks never reach the cursor the new session
    /// reads from (they would skip messages the new one has not received).
    #[test]
    fn a_replaced_session_delivers_nothing_more_and_its_acks_are_dropped() {
        let mut c = core(8, 1 << 20, 0);
        let _ = c.poll_delivery();
        c.handle(Event::StoreRead {
            messages: read(&[1, 2]),
            durable: 2,
            asked: 8,
        });
        let a = c.handle(Event::Kick {
            code: ErrorCode::Replaced,
            reason: "replaced".into(),
        });
        assert!(matches!(
            a.as_slice(),
            [Action::Close {
                code: ErrorCode::Replaced,
                ..
            }]
        ));
        assert!(c.handle(Event::Ack { up_to: 2 }).is_empty());
        assert!(c
            .handle(Event::Live {
                seq: 3,
                frame: frame(3)
            })
            .is_empty());
        assert_eq!(c.poll_delivery(), Next::Wait);
        assert!(c.is_closed());
    }

    #[test]
    fn frames_after_welcome_and_the_device_cap() {
        assert_eq!(classify(Frame::Ack { up_to_seq: 4 }), Ok(Incoming::Ack(4)));
        assert_eq!(
            classify(Frame::Welcome {
                participant: "EE".into(),
                device: "d".into(),
                pending: 0
            })
            .unwrap_err()
            .0,
            ErrorCode::Malformed
        );
        let known = vec!["a".to_string(), "b".to_string()];
        assert!(admit_device(&known, "a", 2));
        assert!(!admit_device(&known, "c", 2));
        assert!(admit_device(&known, "c", 3));
    }
}
