//! Group commit: one writer thread appends messages and cursor updates to the
//! store and makes them durable with one flush per batch.
//!
//! ```text
//! sessions ──Append/Ack──▶ [channel] ──▶ writer thread:
//!                                         take everything queued (a batch)
//!                                         append each (dedupe, seq) / ack each
//!                                         store.commit()           ← one fsync
//!                                         (skipped for a batch of acks only)
//!                                         reply Accepted to each sender
//!                                         router.deliver(each new message)
//! ```
//! Because one thread applies writes in arrival order and flushes before it
//! answers, `Accepted` always means durable, and live deliveries leave in seq
//! order. While a flush runs, new requests queue up and form the next batch:
//! the busier the relay, the more messages share a flush.
//!
//! # Fail-stop
//! The first failed append, commit or checkpoint trips the [`FailStop`]
//! latch: that batch and every later append is answered with an error
//! (`internal` to the sender, who keeps the message in its outbox), nothing
//! more is written, synced or routed, `/healthz` reports unhealthy and the
//! relay binary exits non-zero so that its supervisor restarts it on a clean
//! replay of the commit log. Delivery therefore always follows durable
//! progress: a message is routed only by the commit that made it durable,
//! and after a failed commit no later commit can make earlier records
//! durable behind the router's back (which would let a live delivery move a
//! cursor past them).

use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tallinn_common::message::MsgId;
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::router::Router;
use crate::store::{Appended, LogEntry, Store, StoreError, StoredMessage};

/// Largest number of requests taken into one batch (bounds the latency of the
/// first request in a very long queue).
const MAX_BATCH: usize = 4096;

/// How often an idle writer looks for a failure the store met on its own
/// (a background checkpoint).
const IDLE_CHECK: Duration = Duration::from_millis(250);

/// The relay's fail-stop latch: set once, by the first storage failure, and
/// never cleared (only a restart clears it).
#[derive(Debug)]
pub struct FailStop {
    tx: tokio::sync::watch::Sender<Option<String>>,
}

impl Default for FailStop {
    fn default() -> Self {
        Self {
            tx: tokio::sync::watch::Sender::new(None),
        }
    }
}

impl FailStop {
    /// Sets the latch with `reason` (the first reason is kept).
    pub fn trip(&self, reason: &str) {
        let tripped = self.tx.send_if_modified(|r| {
            if r.is_some() {
                return false;
            }
            *r = Some(reason.to_string());
            true
        });
        if tripped {
            tracing::error!(
                reason = %reason,
                "storage failure: the relay stops accepting messages (fail-stop); \
                 restart it to replay the commit log"
            );
        }
    }

    /// Why the latch was set, if it was.
    pub fn reason(&self) -> Option<String> {
        self.tx.borrow().clone()
    }

    /// Resolves with the reason once the latch is set.
    pub async fn tripped(&self) -> String {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                // The sender lives in `self`: unreachable while borrowed.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The outcome of an append, sent once it is durable.
pub type AppendResult = Result<Appended, StoreError>;

enum Request {
    Append {
        msg_id: MsgId,
        entry: LogEntry,
        reply: oneshot::Sender<AppendResult>,
    },
    Ack {
        participant: String,
        device: String,
        up_to: u64,
        now_ms: u64,
    },
    Flush {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Answered once every request queued before it has been applied (not
    /// necessarily made durable).
    Barrier { reply: oneshot::Sender<()> },
    /// Finish the current batch and exit.
    Stop,
}

/// Handle to the writer thread. Dropping every handle (and calling
/// [`CommitterThread::join`]) drains the queue, flushes and stops the thread.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

/// Owner of the writer thread.
pub struct CommitterThread {
    handle: JoinHandle<()>,
}

impl CommitterThread {
    /// Waits for the thread to finish its last batch (after every
    /// [`Committer`] was dropped).
    pub fn join(self) {
        let _ = self.handle.join();
    }
}

impl Committer {
    /// Starts the writer thread.
    ///
    /// # Errors
    /// If the OS refuses to create a thread.
    pub fn start(
        store: Arc<dyn Store>,
        router: Arc<Router>,
        metrics: Arc<Metrics>,
        failstop: Arc<FailStop>,
    ) -> std::io::Result<(Self, CommitterThread)> {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("tallinn-commit".into())
            .spawn(move || {
                writer(
                    rx,
                    &Ctx {
                        store: store.as_ref(),
                        router: &router,
                        metrics: &metrics,
                        failstop: &failstop,
                    },
                );
            })?;
        Ok((Self { tx }, CommitterThread { handle }))
    }

    /// Queues an append; the receiver resolves after the flush that made it
    /// durable (or with the error that prevented it).
    pub fn append(&self, msg_id: MsgId, entry: LogEntry) -> oneshot::Receiver<AppendResult> {
        let (reply, rx) = oneshot::channel();
        // A send error means the writer is gone (shutdown); the dropped reply
        // makes the receiver fail, which the caller reports as `shutting_down`.
        let _ = self.tx.send(Request::Append {
            msg_id,
            entry,
            reply,
        });
        rx
    }

    /// Queues a cursor advance, made durable with the next flush.
    pub fn ack(&self, participant: &str, device: &str, up_to: u64, now_ms: u64) {
        let _ = self.tx.send(Request::Ack {
            participant: participant.into(),
            device: device.into(),
            up_to,
            now_ms,
        });
    }

    /// Asks the thread to finish its current batch and exit; later requests
    /// are dropped (their senders see `shutting_down`).
    pub fn stop(&self) {
        let _ = self.tx.send(Request::Stop);
    }

    /// Resolves once every request queued before it has been applied to the
    /// store (no flush): a new session of a replaced device waits on it
    /// before reading its cursor, so the old session's acks are in it.
    ///
    /// # Errors
    /// If the writer thread is gone (shutdown).
    pub async fn barrier(&self) -> Result<(), oneshot::error::RecvError> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Request::Barrier { reply });
        rx.await
    }

    /// Resolves once everything queued before it is durable.
    pub fn flush(&self) -> oneshot::Receiver<Result<(), StoreError>> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Request::Flush { reply });
        rx
    }
}

/// A processed append awaiting the batch's flush: reply, result, and the
/// message with its recipients to route if it is new.
type Done = (
    oneshot::Sender<AppendResult>,
    AppendResult,
    Option<StoredMessage>,
    Vec<String>,
);

/// What the writer thread works with.
struct Ctx<'a> {
    store: &'a dyn Store,
    router: &'a Router,
    metrics: &'a Metrics,
    failstop: &'a FailStop,
}

fn writer(rx: mpsc::Receiver<Request>, ctx: &Ctx<'_>) {
    let Ctx {
        store,
        router,
        metrics,
        failstop,
    } = *ctx;
    let mut batch = Vec::new();
    let mut stopping = false;
    while !stopping {
        let first = match rx.recv_timeout(IDLE_CHECK) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(why) = store.failure() {
                    failstop.trip(&why);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // Apply every write of the batch (none once the relay has failed).
        let mut done: Vec<Done> = Vec::new();
        let mut flush_waiters = Vec::new();
        let mut new_messages = 0u64;
        for req in batch.drain(..) {
            match req {
                Request::Append {
                    msg_id,
                    entry,
                    reply,
                } => {
                    if let Some(why) = failstop.reason() {
                        let _ = reply.send(Err(StoreError::Failed(why)));
                        continue;
                    }
                    match store.append(msg_id, &entry) {
                        Ok(Appended::New(seq)) => {
                            new_messages += 1;
                            let msg = StoredMessage {
                                seq,
                                received_at_ms: entry.received_at_ms,
                                envelope: entry.envelope,
                            };
                            done.push((reply, Ok(Appended::New(seq)), Some(msg), entry.recipients));
                        }
                        Ok(dup) => done.push((reply, Ok(dup), None, Vec::new())),
                        Err(e) => {
                            failstop.trip(&format!("append: {e}"));
                            done.push((reply, Err(e), None, Vec::new()));
                        }
                    }
                }
                Request::Ack {
                    participant,
                    device,
                    up_to,
                    now_ms,
                } => {
                    if failstop.reason().is_some() {
                        continue;
                    }
                    if let Err(e) = store.ack(&participant, &device, up_to, now_ms) {
                        failstop.trip(&format!("storing a cursor: {e}"));
                    }
                }
                Request::Flush { reply } => flush_waiters.push(reply),
                // Everything before it in this batch is applied by now.
                Request::Barrier { reply } => {
                    let _ = reply.send(());
                }
                Request::Stop => stopping = true,
            }
        }
        // A batch of acknowledgements only is not flushed: a cursor lost in
        // a crash means a redelivery, which clients deduplicate, and sled's
        // background flusher writes it within a second anyway. Appends and
        // explicit flush requests are always flushed before anyone is told.
        if done.is_empty() && flush_waiters.is_empty() {
            continue;
        }
        if let Some(why) = failstop.reason() {
            // Failed before the commit: nothing of this batch is durable,
            // and no commit will ever run again in this process.
            fail_batch(done, flush_waiters, &why);
            continue;
        }
        // One durable commit for all of them (a full checkpoint when someone
        // asked for a flush).
        let started = Instant::now();
        let flushed = if flush_waiters.is_empty() {
            store.commit()
        } else {
            store.flush()
        };
        metrics.flush_seconds.observe(started.elapsed());
        metrics.flushes.fetch_add(1, Relaxed);
        metrics
            .flush_batch_messages
            .observe_value(new_messages as f64);
        match flushed {
            Ok(()) => {
                if let Some(max) = done
                    .iter()
                    .filter_map(|(_, _, m, _)| m.as_ref().map(|m| m.seq))
                    .max()
                {
                    router.durable_seq.fetch_max(max, Ordering::SeqCst);
                }
                for (reply, result, msg, recipients) in done {
                    if let Some(msg) = msg {
                        router.deliver(Arc::new(msg), &recipients);
                    }
                    let _ = reply.send(result);
                }
                for w in flush_waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                // Nothing in this batch may be reported durable, nothing of
                // it is routed, and nothing is ever committed again here.
                // The senders keep the messages and retry after the restart,
                // which replays whatever did reach the commit log (answered
                // `duplicate` then).
                let why = format!("commit: {e}");
                failstop.trip(&why);
                fail_batch(done, flush_waiters, &why);
            }
        }
    }
}

/// Answers every request of a batch that cannot be made durable.
fn fail_batch(
    done: Vec<Done>,
    flush_waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    why: &str,
) {
    for (reply, _, _, _) in done {
        let _ = reply.send(Err(StoreError::Failed(why.to_string())));
    }
    for w in flush_waiters {
        let _ = w.send(Err(StoreError::Failed(why.to_string())));
    }
}
