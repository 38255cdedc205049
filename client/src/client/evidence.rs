//! Version 2 evidence in the session: the relay's receipts for our sent
//! messages, and the archive checkpoints that catch a truncated or
//! rolled-back archive (`PROTOCOL.md` §17).
//!
//! ```text
//! Welcome ─▶ CheckpointLatest{latest}   checked before any delivery: the
//!            archive must reach it and agree with it, else the session
//!            stops (`tallinn archive recover` accepts the archive, recorded)
//! ... caught up (backlog in, outbox empty, log current) and the head moved
//!   ─▶ Checkpoint{signed head} ─▶ CheckpointLatest{it}: kept in the archive
//! ```

use std::sync::atomic::Ordering;

use tallinn_common::evidence::{CheckpointBody, Receipt, SignedCheckpoint};
use tallinn_common::text::escape_line as esc;
use tallinn_common::wire::{self, Frame};
use tracing::{info, warn};

use super::{now_ms, Inner};
use crate::archive::{ArchiveError, Recovery};
use crate::connection::ConnectError;

/// Per-session checkpoint state, kept by the frame loop.
#[derive(Debug, Default)]
pub(super) struct Checkpoints {
    /// The relay's latest checkpoint arrived and the archive was checked.
    pub checked: bool,
    /// The checkpoint sent, whose confirmation is awaited.
    pub in_flight: Option<SignedCheckpoint>,
    /// The archive length the relay holds a checkpoint of.
    pub confirmed: Option<u64>,
}

/// Checks the relay's latest checkpoint of this device against the archive
/// (the first frame after `Welcome` in a version-2 deployment).
///
/// # Errors
/// [`ConnectError::ArchiveBehind`] when the archive does not reach or does
/// not agree with a checkpoint this device signed (unless a recovery
/// accepted exactly that checkpoint, or this client was started to
/// recover: then the recovery is recorded and the session goes on);
/// [`ConnectError::Protocol`] for a checkpoint this device did not sign.
pub(super) fn check_latest(
    inner: &Inner,
    latest: Option<SignedCheckpoint>,
    state: &mut Checkpoints,
) -> Result<(), ConnectError> {
    let Some(cp) = latest else {
        state.checked = true;
        return Ok(());
    };
    let s = &inner.settings;
    let body = verify_own(inner, &cp).map_err(|e| {
        ConnectError::Protocol(format!(
            "the relay returned an archive checkpoint this device did not sign ({e})"
        ))
    })?;
    if body.participant != s.identity.id().as_str() || body.device != s.device.as_str() {
        return Err(ConnectError::Protocol(
            "the relay returned another device's archive checkpoint".into(),
        ));
    }
    let archive = &inner.archive;
    let at = archive.hash_at(body.index).map_err(archive_err)?;
    let problem = match at {
        None => Some(format!(
            "this archive holds {} records, but this device signed a checkpoint of {} records \
             at {} (the relay keeps it): the archive was truncated or an older copy was put back",
            archive.len(),
            body.index,
            when(body.time_ms)
        )),
        Some(h) if h != body.head_hash => Some(format!(
            "record {} of this archive is not the one this device signed a checkpoint of at {} \
             (the relay keeps it): the archive was replaced or rewritten",
            body.index.saturating_sub(1),
            when(body.time_ms)
        )),
        Some(_) => None,
    };
    let Some(problem) = problem else {
        state.checked = true;
        if body.index == archive.len() {
            state.confirmed = Some(body.index);
            inner.update(|st| st.checkpointed = Some(body.index));
        }
        return Ok(());
    };
    let bytes = cp.to_bytes();
    // A recovery accepted exactly this checkpoint for exactly the archive
    // it recorded, which this one must still extend.
    let mut recovered = false;
    for r in archive.recoveries().map_err(archive_err)? {
        if r.refused == bytes
            && archive.hash_at(r.records).map_err(archive_err)? == Some(r.head_hash)
        {
            recovered = true;
        }
    }
    if recovered {
        state.checked = true;
        return Ok(());
    }
    if inner.recover.load(Ordering::SeqCst) {
        let r = Recovery {
            at_ms: now_ms(),
            refused: bytes,
            records: archive.len(),
            head_hash: archive.head_hash(),
        };
        archive.record_recovery(&r).map_err(archive_err)?;
        warn!(problem = %esc(&problem), "archive recovered: accepted as it is, and recorded");
        state.checked = true;
        return Ok(());
    }
    Err(ConnectError::ArchiveBehind(problem))
}

/// The next `Checkpoint` frame, when the session is caught up (backlog
/// received, outbox empty, roster log current), none is in flight, and the
/// archive moved past what the relay holds.
pub(super) fn next_frame(
    inner: &Inner,
    caught_up: bool,
    state: &mut Checkpoints,
) -> Option<Vec<u8>> {
    let roster = inner.roster();
    if !state.checked || state.in_flight.is_some() || !caught_up || roster.log().is_none() {
        return None;
    }
    let archive = &inner.archive;
    let index = archive.len();
    if state.confirmed == Some(index) {
        return None;
    }
    let s = &inner.settings;
    let body = CheckpointBody {
        participant: s.identity.id().as_str().to_string(),
        device: s.device.as_str().to_string(),
        roster_epoch: roster.epoch().unwrap_or(0),
        index,
        head_hash: archive.head_hash(),
        time_ms: now_ms(),
    };
    let cp = SignedCheckpoint::new(&body, |m| s.identity.sign(m));
    state.in_flight = Some(cp.clone());
    Some(wire::encode_frame(&Frame::Checkpoint { checkpoint: cp }))
}

/// The relay confirmed a checkpoint: it must be exactly the one in flight;
/// keep it in the archive (it goes into every export) and note what it
/// covers.
///
/// # Errors
/// [`ConnectError::Protocol`] for a confirmation of anything else, or an
/// archive failure.
pub(super) fn confirmed(
    inner: &Inner,
    cp: Option<SignedCheckpoint>,
    state: &mut Checkpoints,
) -> Result<u64, ConnectError> {
    let sent = state.in_flight.take();
    let cp = match (cp, sent) {
        (Some(c), Some(s)) if c == s => c,
        _ => {
            return Err(ConnectError::Protocol(
                "the relay confirmed a checkpoint this device did not just send".into(),
            ))
        }
    };
    let body = cp
        .decode()
        .map_err(|e| ConnectError::Protocol(format!("our own checkpoint: {e}")))?;
    inner.archive.store_checkpoint(&cp).map_err(archive_err)?;
    state.confirmed = Some(body.index);
    info!(index = body.index, "archive checkpoint kept by the relay");
    Ok(body.index)
}

/// The relay refused the checkpoint in flight: logged; the archive length
/// it covered counts as settled (not sent again until the archive moves).
pub(super) fn refused(state: &mut Checkpoints) -> Option<u64> {
    let sent = state.in_flight.take()?;
    let index = sent.decode().ok()?.index;
    state.confirmed = Some(index);
    Some(index)
}

/// Checks the relay's receipt for our message and keeps it with the sent
/// record `index`. A receipt that does not verify is logged and not kept:
/// the message was accepted all the same, and the missing receipt shows in
/// `show` and in the export.
///
/// # Errors
/// An archive failure.
pub(super) fn keep_receipt(
    inner: &Inner,
    index: u64,
    envelope: &[u8],
    receipt: &Receipt,
) -> Result<(), ArchiveError> {
    let roster = inner.roster();
    let Some(log) = roster.log() else {
        warn!(msg_id = %receipt.body.msg_id, "a receipt without a roster log to check it against; not kept");
        return Ok(());
    };
    // relay_key of the envelope's epoch, the next one (accepted in the grace
    // period after an amendment), or the one in force now.
    let epoch = tallinn_common::envelope::UntrustedEnvelope::decode(envelope)
        .ok()
        .and_then(|u| u.claimed_header().roster_epoch)
        .unwrap_or(0);
    let keys: Vec<[u8; 32]> = [
        log.state_at(epoch),
        log.state_at(epoch + 1),
        Some(log.current()),
    ]
    .into_iter()
    .flatten()
    .map(|s| s.relay_key().to_bytes())
    .collect();
    let check = keys
        .iter()
        .map(|k| receipt.verify_for(k, &receipt.body.msg_id, envelope))
        .find(Result::is_ok)
        .unwrap_or_else(|| receipt.verify_for(&keys[0], &receipt.body.msg_id, envelope));
    match check {
        Ok(()) => inner.archive.store_receipt(index, receipt),
        Err(e) => {
            warn!(msg_id = %receipt.body.msg_id, error = %e, "the relay's receipt does not verify against relay_key; not kept");
            Ok(())
        }
    }
}

/// Verifies a checkpoint of this device: with its key file's signing key,
/// else with any signing key the roster log ever gave the device (a device
/// re-keyed by a `Devices` entry signed its older checkpoints with the old
/// key).
fn verify_own(
    inner: &Inner,
    cp: &SignedCheckpoint,
) -> Result<CheckpointBody, tallinn_common::evidence::EvidenceError> {
    let s = &inner.settings;
    let first = cp.verify(&s.identity.public().sign_key.to_bytes());
    if first.is_ok() {
        return first;
    }
    let roster = inner.roster();
    if let Some(log) = roster.log() {
        for epoch in 0..=log.epoch() {
            let key = log
                .state_at(epoch)
                .and_then(|st| st.device(s.identity.id().as_str(), s.device.as_str()))
                .map(|d| d.sign_key.to_bytes());
            if let Some(Ok(body)) = key.map(|k| cp.verify(&k)) {
                return Ok(body);
            }
        }
    }
    first
}

/// A checkpoint's signing time, RFC 3339 in UTC.
fn when(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
        .map_or_else(|| format!("{ms} ms"), |t| t.to_string())
}

fn archive_err(e: ArchiveError) -> ConnectError {
    ConnectError::Protocol(format!("archive: {e}"))
}
