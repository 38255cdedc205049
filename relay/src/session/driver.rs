//! The async driver of an authenticated session: the reader loop (this
//! task) reads frames and hands sends to the checks and the commit thread
//! and acks to the core; the delivery task asks the core what to deliver
//! and carries it out; the writer task owns the stream's send half; one
//! waiter per send turns its durable outcome into `Accepted`/`Rejected`.
//! Every delivery and ack decision is the core's ([`super::core`]).
//!
//! ```text
//!            ┌──────── reader (this task) ───────┐
//!  stream ──▶│ Send → check_sends → committer ───┼──▶ waiter task → Accepted/Rejected ─┐
//!            │ Ack  → core → committer.ack, wake ┼──▶ delivery task ─ core ─ Deliver ──┤
//!            └───────────────────────────────────┘      ▲ live queue (router)            ▼
//!                                                        └ store (backlog, catch-up)   writer task ──▶ stream
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use quinn::{RecvStream, SendStream};
use tallinn_common::envelope::VerifiedEnvelope;
use tallinn_common::evidence::{self, ReceiptBody};
use tallinn_common::message::MsgId;
use tallinn_common::text::escape_line as esc;
use tallinn_common::wire::{self, ErrorCode, Frame};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

use super::checks::{check_quota, check_sends, check_skew, Refusal};
use super::core::{self, Action, CoreLimits, Event, Incoming, Next, SessionCore};
use super::governance::{no_roster_log, roster_frames, store_checkpoint, submit_roster_entry};
use super::reader::{FrameReader, SEND_BATCH};
use super::{now_ms, Close, Shared, CLOSE_GRACE};
use crate::metrics::Metrics;
use crate::router::{deliver_frame, ConnHandle, Delivery};
use crate::rules::RosterRules;
use crate::store::{Appended, LogEntry};

/// Most queued frames handed to quinn in one write.
const WRITE_BATCH: usize = 64;

/// Most messages asked of the store in one backlog read.
const READ_BATCH: usize = 256;

/// The core, shared by the reader (acks) and the delivery task; never held
/// across an await.
type SharedCore = Arc<Mutex<SessionCore>>;

pub(super) async fn session(
    shared: &Arc<Shared>,
    send: SendStream,
    recv: RecvStream,
    handle: &Arc<ConnHandle>,
    rx: mpsc::Receiver<Delivery>,
    acked: u64,
) -> (Close, Option<SendStream>) {
    let limits = &shared.limits;
    let mut reader = FrameReader::new(recv, limits.max_frame_len);
    let (out_tx, mut out_rx) = mpsc::channel::<bytes::Bytes>(
        limits.max_inflight_sends + limits.max_inflight_deliveries + 8,
    );
    // The writer owns the send half and hands it back when every sender of
    // `out_tx` is gone, so the final Error frame follows everything queued.
    let mut send = send;
    let writer = tokio::spawn(async move {
        // Everything already queued goes to quinn in one call: one lock of
        // the connection state and one wake of its driver per batch, not
        // per frame.
        let mut chunks: Vec<bytes::Bytes> = Vec::with_capacity(WRITE_BATCH);
        while let Some(first) = out_rx.recv().await {
            chunks.push(first);
            while chunks.len() < WRITE_BATCH {
                match out_rx.try_recv() {
                    Ok(b) => chunks.push(b),
                    Err(_) => break,
                }
            }
            let written = send.write_all_chunks(&mut chunks).await;
            chunks.clear();
            if written.is_err() {
                break;
            }
        }
        send
    });
    let core: SharedCore = Arc::new(Mutex::new(SessionCore::new(
        CoreLimits {
            window: limits.max_inflight_deliveries,
            window_bytes: limits.max_inflight_delivery_bytes,
            read_batch: READ_BATCH,
        },
        acked,
    )));
    let stop = Arc::new(AtomicBool::new(false));
    let delivery = tokio::spawn(deliver_loop(
        shared.clone(),
        handle.clone(),
        rx,
        out_tx.clone(),
        core.clone(),
        stop.clone(),
    ));
    // Answers to sends, one at a time in send order: commits resolve in
    // order, so this adds no wait, and the `duplicate` of a resend never
    // overtakes the `Receipt` of the original (a client would archive the
    // message without its receipt).
    let (answer_tx, mut answer_rx) =
        mpsc::unbounded_channel::<(Queued, Instant, tokio::sync::OwnedSemaphorePermit)>();
    let mut answers = {
        let out = out_tx.clone();
        let metrics = shared.metrics.clone();
        let receipts = shared.receipts.clone();
        tokio::spawn(async move {
            while let Some((queued, received, permit)) = answer_rx.recv().await {
                let Queued {
                    msg_id,
                    received_at_ms,
                    envelope_hash,
                    outcome,
                } = queued;
                let frame = accept_frame(
                    outcome.await,
                    msg_id,
                    &metrics,
                    received,
                    receipts
                        .as_deref()
                        .map(|k| (k, received_at_ms, envelope_hash)),
                );
                let _ = out.send(wire::encode_frame(&frame).into()).await;
                drop(permit);
            }
        })
    };
    let sends = Arc::new(Semaphore::new(limits.max_inflight_sends));
    let mut shutdown = shared.shutdown.clone();

    let close = 'session: loop {
        // Only the read is cancelled by the other branches, and only when the
        // session ends anyway: a frame is never half-read and then resumed.
        let frame = tokio::select! {
            biased;
            _ = shutdown.changed() => break interrupted(&shutdown, handle),
            _ = handle.kick.notified() => {
                if handle.kicked.load(Ordering::SeqCst) {
                    break interrupted(&shutdown, handle);
                }
                continue;
            }
            frame = reader.next() => frame,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => {
                break Close {
                    code: None,
                    reason: "peer finished the stream".into(),
                }
            }
            Err(c) => break c,
        };
        match core::classify(frame) {
            Ok(Incoming::Send(envelope)) => {
                // A client that stops reading makes this wait: stay
                // responsive to a kick or a shutdown meanwhile.
                let permit =
                    match interruptible(sends.clone().acquire_owned(), &mut shutdown, handle).await
                    {
                        Some(Ok(p)) => p,
                        Some(Err(_)) => {
                            break Close::err(ErrorCode::Internal, "send limiter closed")
                        }
                        None => break interrupted(&shutdown, handle),
                    };
                // Sends that arrived with this one are checked with it (one
                // batch signature verification), each with its own permit.
                let mut envelopes = vec![envelope];
                let mut permits = vec![permit];
                while envelopes.len() < SEND_BATCH {
                    let Ok(p) = sends.clone().try_acquire_owned() else {
                        break;
                    };
                    let Some(e) = reader.take_ready_send() else {
                        break;
                    };
                    envelopes.push(e);
                    permits.push(p);
                }
                let received = Instant::now();
                let results = handle_sends(shared, &handle.participant, envelopes);
                for (result, permit) in results.into_iter().zip(permits) {
                    match result {
                        Ok(queued) => {
                            // The answer task ends only after this loop.
                            let _ = answer_tx.send((queued, received, permit));
                        }
                        Err(r) => {
                            drop(permit);
                            shared.metrics.sends_rejected.inc(r.code);
                            warn!(code = %r.code, msg_id = %r.msg_id, reason = %esc(&r.reason), "rejected send");
                            if r.code == ErrorCode::Malformed {
                                break 'session Close::err(ErrorCode::Malformed, r.reason);
                            }
                            let frame = Frame::Rejected {
                                msg_id: r.msg_id,
                                code: r.code,
                                reason: r.reason,
                            };
                            match interruptible(
                                out_tx.send(wire::encode_frame(&frame).into()),
                                &mut shutdown,
                                handle,
                            )
                            .await
                            {
                                Some(Ok(())) => {}
                                Some(Err(_)) => {
                                    break 'session Close {
                                        code: None,
                                        reason: "writer stopped".into(),
                                    }
                                }
                                None => break 'session interrupted(&shutdown, handle),
                            }
                        }
                    }
                }
            }
            Ok(Incoming::Ack(up_to)) => {
                shared.metrics.acks.fetch_add(1, Ordering::Relaxed);
                ack(shared, handle, &core, up_to);
            }
            Ok(Incoming::RosterFetch(from)) => {
                if shared.roster().log().is_none() {
                    let frame = no_roster_log();
                    if out_tx
                        .send(wire::encode_frame(&frame).into())
                        .await
                        .is_err()
                    {
                        break Close::err(ErrorCode::Internal, "writer stopped");
                    }
                    continue;
                }
                // The delivery task writes every roster frame, in order.
                handle.roster_next.store(from, Ordering::SeqCst);
                handle.roster_answer.store(true, Ordering::SeqCst);
                handle.wake.notify_one();
            }
            Ok(Incoming::Checkpoint(checkpoint)) => {
                let frame = store_checkpoint(shared, handle, checkpoint).await;
                if out_tx
                    .send(wire::encode_frame(&frame).into())
                    .await
                    .is_err()
                {
                    break Close::err(ErrorCode::Internal, "writer stopped");
                }
            }
            Ok(Incoming::RosterSubmit(entry)) => {
                let frame = submit_roster_entry(shared, &handle.participant, entry).await;
                if out_tx
                    .send(wire::encode_frame(&frame).into())
                    .await
                    .is_err()
                {
                    break Close::err(ErrorCode::Internal, "writer stopped");
                }
            }
            Ok(Incoming::PeerError(code, reason)) => {
                info!(code = %code, reason = %esc(&reason), "peer reported an error");
                break Close {
                    code: None,
                    reason: format!("peer error {code}"),
                };
            }
            Err((code, reason)) => break Close::err(code, reason),
        }
    };

    // Accepted is owed for every send already queued for commit: wait for
    // them (bounded), then stop delivering and take the stream back.
    // Stop the delivery task at its next turn and wait for it, so no store
    // read of this session outlives it (it may sit in a blocking read); one
    // stuck on a stalled writer is aborted after the grace period.
    stop.store(true, Ordering::SeqCst);
    if let Some(code) = close.code {
        // Closed: the core delivers nothing more and drops late acks.
        lock(&core).handle(Event::Kick {
            code,
            reason: close.reason.clone(),
        });
    }
    handle.wake.notify_one();
    let mut delivery = delivery;
    if tokio::time::timeout(CLOSE_GRACE, &mut delivery)
        .await
        .is_err()
    {
        delivery.abort();
        let _ = delivery.await;
    }
    drop(answer_tx);
    if tokio::time::timeout(shared.limits.drain_timeout, &mut answers)
        .await
        .is_err()
    {
        answers.abort();
    }
    drop(out_tx);
    let send = tokio::time::timeout(shared.limits.drain_timeout, writer)
        .await
        .ok()
        .and_then(Result::ok);
    (close, send)
}

/// Runs `fut` unless the relay shuts down or the session is kicked first
/// (`None` then).
async fn interruptible<F: std::future::Future>(
    fut: F,
    shutdown: &mut watch::Receiver<bool>,
    handle: &ConnHandle,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = shutdown.changed() => return None,
            _ = handle.kick.notified() => {
                if handle.kicked.load(Ordering::SeqCst) {
                    return None;
                }
            }
        }
    }
}

/// Why an [`interruptible`] wait was cut short.
fn interrupted(shutdown: &watch::Receiver<bool>, handle: &ConnHandle) -> Close {
    if *shutdown.borrow() {
        return Close::err(ErrorCode::ShuttingDown, "relay is shutting down");
    }
    let (code, reason) = handle
        .kick_reason
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or((ErrorCode::Internal, "closed by the relay".into()));
    Close::err(code, reason)
}

/// The frame answering a send once its commit resolved: `Receipt` in a
/// version-2 deployment (`receipt`: the key, the receive time and the
/// envelope's hash), `Accepted` otherwise.
fn accept_frame(
    result: Result<crate::commit::AppendResult, tokio::sync::oneshot::error::RecvError>,
    msg_id: MsgId,
    metrics: &Metrics,
    received: Instant,
    receipt: Option<(&crate::receipt_key::ReceiptKey, u64, [u8; 32])>,
) -> Frame {
    match result {
        Ok(Ok(Appended::New(seq))) => {
            metrics.sends_accepted.fetch_add(1, Ordering::Relaxed);
            metrics.send_to_accept_seconds.observe(received.elapsed());
            debug!(%msg_id, seq, "accepted");
            match receipt {
                Some((key, received_at_ms, envelope_hash)) => Frame::Receipt {
                    receipt: key.sign(ReceiptBody {
                        seq,
                        msg_id,
                        received_at_ms,
                        envelope_hash,
                    }),
                },
                None => Frame::Accepted { msg_id, seq },
            }
        }
        Ok(Ok(Appended::Duplicate(seq))) => {
            metrics.sends_rejected.inc(ErrorCode::Duplicate);
            Frame::Rejected {
                msg_id,
                code: ErrorCode::Duplicate,
                reason: format!("already accepted as seq {seq}"),
            }
        }
        Ok(Err(e)) => {
            metrics.sends_rejected.inc(ErrorCode::Internal);
            tracing::error!(error = %e, "append failed");
            Frame::Rejected {
                msg_id,
                code: ErrorCode::Internal,
                reason: "storage failure; retry later".into(),
            }
        }
        Err(_) => {
            metrics.sends_rejected.inc(ErrorCode::ShuttingDown);
            Frame::Rejected {
                msg_id,
                code: ErrorCode::ShuttingDown,
                reason: "relay is shutting down".into(),
            }
        }
    }
}

/// A queued append: what its receipt will name, and where its durable
/// outcome arrives.
struct Queued {
    msg_id: MsgId,
    received_at_ms: u64,
    /// SHA-256 of the envelope (version 2 only; zero otherwise).
    envelope_hash: [u8; 32],
    outcome: tokio::sync::oneshot::Receiver<crate::commit::AppendResult>,
}

/// Runs the synchronous send checks on sends that arrived together and
/// queues the appends of those that pass, in order.
fn handle_sends(
    shared: &Shared,
    participant: &str,
    envelopes: Vec<Vec<u8>>,
) -> Vec<Result<Queued, Refusal>> {
    let limits = &shared.limits;
    let roster = shared.roster();
    check_sends(
        &roster,
        participant,
        &envelopes,
        limits.max_message_len,
        now_ms(),
        |bytes| shared.take_token(participant, bytes),
    )
    .into_iter()
    .map(|v| v.and_then(|verified| queue_append(shared, participant, verified)))
    .collect()
}

/// The duplicate and clock checks of a verified send, then its append.
fn queue_append(
    shared: &Shared,
    participant: &str,
    verified: VerifiedEnvelope,
) -> Result<Queued, Refusal> {
    let limits = &shared.limits;
    let msg_id = verified.msg_id();
    let now = now_ms();
    match shared.store.seen(&msg_id) {
        // Seen before: the append below answers `duplicate`, but only after
        // the commit thread's next flush, so `duplicate` (which a client
        // treats as accepted) is never said about a write not yet durable.
        // The clock-skew check is skipped: a resend after a lost `Accepted`
        // must be recognised however old it is.
        Ok(Some(_)) => {}
        Ok(None) => {
            check_skew(&verified, now, limits.max_clock_skew)?;
            check_quota(
                msg_id,
                shared.store.stored_bytes(participant),
                verified.as_bytes().len(),
                limits.max_stored_bytes_per_participant,
            )?;
        }
        Err(e) => {
            tracing::error!(error = %e, "dedupe lookup failed");
            return Err(Refusal::new(
                msg_id,
                ErrorCode::Internal,
                "storage failure; retry later",
            ));
        }
    }
    let recipients = RosterRules::recipients(&verified);
    let envelope_hash = if shared.receipts.is_some() {
        evidence::envelope_hash(verified.as_bytes())
    } else {
        [0; 32]
    };
    let entry = LogEntry {
        received_at_ms: now,
        sender: participant.to_string(),
        recipients,
        envelope: verified.into_bytes(),
    };
    Ok(Queued {
        msg_id,
        received_at_ms: now,
        envelope_hash,
        outcome: shared.committer.append(msg_id, entry),
    })
}

/// An acknowledgement: the core clamps it to what was delivered; the cursor
/// advance it yields is queued for the commit thread only while the session
/// is not kicked, under the same lock as the kick, so a replacement's
/// barrier ([`crate::commit::Committer::barrier`]) orders it before the
/// new session reads the cursor.
fn ack(shared: &Shared, handle: &ConnHandle, core: &SharedCore, up_to: u64) {
    let (actions, clamped) = {
        let mut c = lock(core);
        let before = c.clamped_acks();
        let actions = c.handle(Event::Ack { up_to });
        (actions, c.clamped_acks() > before)
    };
    if clamped {
        warn!(up_to, "ack beyond last delivery clamped");
    }
    for a in actions {
        if let Action::StoreAck { up_to } = a {
            handle.unless_kicked(|| {
                shared
                    .committer
                    .ack(&handle.participant, &handle.device, up_to, now_ms());
            });
            handle.wake.notify_one();
        }
    }
}

/// The delivery task: asks the core what to do next (read the backlog from
/// the store, take a live delivery, or wait), feeds it the result and
/// writes what it says, in order.
async fn deliver_loop(
    shared: Arc<Shared>,
    handle: Arc<ConnHandle>,
    mut rx: mpsc::Receiver<Delivery>,
    out: mpsc::Sender<bytes::Bytes>,
    core: SharedCore,
    stop: Arc<AtomicBool>,
) {
    loop {
        if handle.kicked.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
            return;
        }
        for frame in roster_frames(&shared, &handle) {
            if out.send(frame).await.is_err() {
                return;
            }
        }
        if handle.lagging.swap(false, Ordering::SeqCst) {
            lock(&core).handle(Event::Lagging);
        }
        let next = lock(&core).poll_delivery();
        let actions = match next {
            Next::Read { after, limit } => {
                // Everything queued is also in the store: drop it, read there.
                while rx.try_recv().is_ok() {}
                // Off the async workers: a long backlog never stalls others.
                let store = shared.store.clone();
                let participant = handle.participant.clone();
                let device = handle.device.clone();
                let read = tokio::task::spawn_blocking(move || {
                    store.inbox_after(&participant, &device, after, limit)
                })
                .await;
                let batch = match read {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reading inbox failed");
                        handle.kick(ErrorCode::Internal, "storage failure; reconnect later");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "inbox read task failed");
                        handle.kick(ErrorCode::Internal, "storage failure; reconnect later");
                        return;
                    }
                };
                // Read after the store: whatever of the batch is durable by
                // now may go; the rest arrives live after its commit.
                let durable = shared.router.durable_seq.load(Ordering::SeqCst);
                let messages = batch.iter().map(|m| (m.seq, deliver_frame(m))).collect();
                lock(&core).handle(Event::StoreRead {
                    messages,
                    durable,
                    asked: limit,
                })
            }
            Next::Live => match rx.try_recv() {
                Ok(m) => lock(&core).handle(Event::Live {
                    seq: m.seq,
                    frame: m.frame,
                }),
                Err(mpsc::error::TryRecvError::Empty) => {
                    handle.wake.notified().await;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            },
            Next::Wait => {
                handle.wake.notified().await;
                continue;
            }
        };
        for a in actions {
            if let Action::Write {
                frame, from_store, ..
            } = a
            {
                if out.send(frame).await.is_err() {
                    return;
                }
                shared.metrics.deliveries.fetch_add(1, Ordering::Relaxed);
                if from_store {
                    shared
                        .metrics
                        .deliveries_from_store
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Locks the core (never held across an await; a poisoned lock means a
/// panic elsewhere, and the state is still consistent per call).
fn lock(core: &SharedCore) -> std::sync::MutexGuard<'_, SessionCore> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}
