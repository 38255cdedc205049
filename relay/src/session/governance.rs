//! The governance frames of a session: the roster log (the entries a
//! session is owed, a submitted entry checked, appended and put in force)
//! and the device's archive checkpoint kept durably.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tallinn_common::evidence::{self, SignedCheckpoint};
use tallinn_common::message::MsgId;
use tallinn_common::text::escape_line as esc;
use tallinn_common::wire::{self, ErrorCode, Frame};
use tracing::{debug, info, warn};

use super::{now_ms, Shared};
use crate::router::ConnHandle;
use crate::rules::{LogRules, RosterRules};

/// Checks a device's archive checkpoint (its own participant and device,
/// signed with the device's current `sign_key`) and keeps it durably as the
/// device's latest; the answer is `CheckpointLatest` with it, or `Rejected`
/// (msg_id all zero) saying why.
pub(super) async fn store_checkpoint(
    shared: &Arc<Shared>,
    handle: &ConnHandle,
    checkpoint: SignedCheckpoint,
) -> Frame {
    let refuse = |code, reason: String| Frame::Rejected {
        msg_id: evidence::CHECKPOINT_REFUSED,
        code,
        reason,
    };
    // Each checkpoint costs a synced write: it spends send tokens.
    if !shared.take_token(&handle.participant, checkpoint.body.len() + 64) {
        return refuse(
            ErrorCode::RateLimited,
            "checkpoints too often; retry later".into(),
        );
    }
    let roster = shared.roster();
    let Some(rules) = roster.log() else {
        return refuse(
            ErrorCode::Malformed,
            "this relay runs no roster log: checkpoints are a version-2 feature".into(),
        );
    };
    let state = rules.log.current();
    let Some(device) = state.device(&handle.participant, &handle.device) else {
        return refuse(ErrorCode::Revoked, "the device is not in the roster".into());
    };
    let body = match checkpoint.verify(device.sign_key.as_bytes()) {
        Ok(b) => b,
        Err(e) => return refuse(ErrorCode::BadSignature, format!("checkpoint: {e}")),
    };
    if body.participant != handle.participant || body.device != handle.device {
        return refuse(
            ErrorCode::BadSignature,
            "checkpoint: signed for another participant or device".into(),
        );
    }
    let store = shared.store.clone();
    let (p, d, bytes) = (
        handle.participant.clone(),
        handle.device.clone(),
        checkpoint.to_bytes(),
    );
    // The same checkpoint again: answered, not written again.
    let write = move || match store.archive_checkpoint(&p, &d)? {
        Some(stored) if stored == bytes => Ok(()),
        _ => store.put_archive_checkpoint(&p, &d, &bytes),
    };
    match tokio::task::spawn_blocking(write).await {
        Ok(Ok(())) => {
            debug!(index = body.index, "archive checkpoint stored");
            Frame::CheckpointLatest {
                checkpoint: Some(checkpoint),
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storing an archive checkpoint failed");
            refuse(ErrorCode::Internal, "storage failure; retry later".into())
        }
        Err(_) => refuse(ErrorCode::Internal, "storage failure; retry later".into()),
    }
}

/// The `RosterEntries` frames this session is owed: the entries from its
/// next index to the head (after a fetch, at least one frame, for the head),
/// each frame within the frame limit. Advances the session's next index.
pub(super) fn roster_frames(shared: &Shared, handle: &ConnHandle) -> Vec<bytes::Bytes> {
    let next = handle.roster_next.load(Ordering::SeqCst);
    if next == u64::MAX {
        return Vec::new();
    }
    let rules = shared.roster();
    let Some(l) = rules.log() else {
        return Vec::new();
    };
    let head = l.log.epoch();
    let answer = handle.roster_answer.swap(false, Ordering::SeqCst);
    if next > head && !answer {
        return Vec::new();
    }
    let budget = (shared.limits.max_frame_len as usize).saturating_sub(1024);
    let mut frames = Vec::new();
    let mut first = next;
    let mut batch: Vec<wire::EntryBytes> = Vec::new();
    let mut bytes = 0usize;
    for e in l.log.entries_from(next) {
        let encoded = e.encode();
        if !batch.is_empty() && bytes + encoded.len() > budget {
            let n = batch.len() as u64;
            frames.push(roster_entries_frame(
                head,
                first,
                std::mem::take(&mut batch),
            ));
            first += n;
            bytes = 0;
        }
        bytes += encoded.len();
        batch.push(wire::EntryBytes(encoded));
    }
    if !batch.is_empty() || frames.is_empty() {
        frames.push(roster_entries_frame(head, first, batch));
    }
    handle
        .roster_next
        .store(head.saturating_add(1).max(next), Ordering::SeqCst);
    frames
}

fn roster_entries_frame(head: u64, first: u64, entries: Vec<wire::EntryBytes>) -> bytes::Bytes {
    wire::encode_frame(&Frame::RosterEntries {
        head,
        first,
        entries,
    })
    .into()
}

/// The answer to a roster frame on a relay without a roster log.
pub(super) fn no_roster_log() -> Frame {
    Frame::Rejected {
        msg_id: MsgId([0; 16]),
        code: ErrorCode::BadRosterEntry,
        reason: "this relay runs a version-1 roster file: it has no roster log".into(),
    }
}

/// A `RosterSubmit`: checked against the current state (the same
/// `check_entry` every client runs), appended durably, put in force (which
/// closes the sessions of revoked devices and wakes the others to push it),
/// answered `RosterAccepted`; or refused with `bad_roster_entry`. One
/// submission at a time, so two valid entries for one index cannot both be
/// appended.
pub(super) async fn submit_roster_entry(
    shared: &Arc<Shared>,
    participant: &str,
    bytes: Vec<u8>,
) -> Frame {
    let zero = MsgId([0; 16]);
    let refuse = |code: ErrorCode, reason: String| Frame::Rejected {
        msg_id: zero,
        code,
        reason,
    };
    if !shared.take_token(participant, bytes.len()) {
        return refuse(
            ErrorCode::RateLimited,
            "send rate limit (messages or bytes per second) exceeded; retry later".into(),
        );
    }
    let entry = match tallinn_common::roster::SignedEntry::decode(&bytes) {
        Ok(e) => e,
        Err(e) => return refuse(ErrorCode::BadRosterEntry, e.to_string()),
    };
    let _one = shared.roster_writer.lock().await;
    let rules = shared.roster();
    let Some(current) = rules.log() else {
        return no_roster_log();
    };
    let mut log = current.log.clone();
    let index = match log.append(entry.clone()) {
        Ok(tallinn_common::roster::Appended::New(i)) => i,
        Ok(tallinn_common::roster::Appended::Known(i)) => {
            return refuse(
                ErrorCode::BadRosterEntry,
                format!("entry {i} is already in the log"),
            )
        }
        Err(e) => {
            warn!(%participant, error = %esc(&e.to_string()), "roster entry refused");
            return refuse(ErrorCode::BadRosterEntry, e.to_string());
        }
    };
    let now = now_ms();
    let store = shared.store.clone();
    let stored = entry.clone();
    let written =
        tokio::task::spawn_blocking(move || store.append_roster_entry(index, &stored, now)).await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::error!(index, "storing a roster entry failed");
        return refuse(ErrorCode::Internal, "storage failure; retry later".into());
    }
    let hash = entry.hash();
    let closed = shared
        .router
        .replace_roster(Arc::new(RosterRules::V2(Arc::new(LogRules {
            log,
            current_since_ms: now,
            grace_ms: current.grace_ms,
        }))));
    shared
        .metrics
        .roster_reloads
        .fetch_add(1, Ordering::Relaxed);
    info!(index, %participant, sessions_closed = closed, "roster entry appended");
    if let (Some(key), Some(rules)) = (&shared.receipts, shared.roster().log()) {
        let wanted = rules.log.current().relay_key().to_bytes();
        if key.public().to_bytes() != wanted {
            tracing::error!(
                relay_key = %hex::encode(wanted),
                signing_with = %hex::encode(key.public().to_bytes()),
                "the roster's relay_key changed: receipts are signed with the old key until the relay restarts with the new receipt_key file"
            );
        }
    }
    Frame::RosterAccepted { index, hash }
}
