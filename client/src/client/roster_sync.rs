//! Version 2 in the session: fetching, verifying, applying and archiving
//! the roster log; what follows an advance (quarantined deliveries
//! re-verified, messages refused as `stale_roster` re-sealed); and the
//! refusals that stop the client (another deployment, an invalid entry, a
//! truncated log, a fork: the evidence is kept).

use std::sync::Arc;

use tallinn_common::envelope::UntrustedEnvelope;
use tallinn_common::message::MsgId;
use tallinn_common::roster::{Appended, LogError, RosterLog, SignedEntry};
use tallinn_common::text::escape_line as esc;
use tallinn_common::wire::{self, EntryBytes, Frame};
use tracing::{info, warn};

use super::{reseal, ClientError, Event, Inner};
use crate::archive::{ArchiveError, Inserted};
use crate::connection::ConnectError;
use crate::roster::ClientRoster;

/// The `RosterFetch` that brings this client's log up to date, if it runs
/// the roster log.
pub(super) fn fetch_frame(inner: &Inner) -> Option<Vec<u8>> {
    let roster = inner.roster();
    if !roster.is_v2() {
        return None;
    }
    let from = roster.epoch().map_or(0, |e| e.saturating_add(1));
    Some(wire::encode_frame(&Frame::RosterFetch { from }))
}

/// What applying a `RosterEntries` frame did.
pub(super) struct Applied {
    /// The log advanced (new entries verified and archived).
    pub advanced: bool,
    /// The relay holds more: fetch from here.
    pub fetch_more: Option<u64>,
}

/// Verifies and applies the entries of a `RosterEntries` frame, archiving
/// each new one durably before it is put in force.
///
/// # Errors
/// [`ConnectError::UntrustedRoster`] for a genesis that is not the pinned
/// deployment, an invalid entry, a head below what this client knows, or a
/// fork (both entries are archived as evidence first);
/// [`ConnectError::Protocol`] for undecodable entries or archive failures.
pub(super) fn apply_entries(
    inner: &Inner,
    head: u64,
    first: u64,
    entries: &[EntryBytes],
) -> Result<Applied, ConnectError> {
    let current = inner.roster();
    let ClientRoster::V2 { deployment, log } = current.as_ref() else {
        // A version-1 client never fetches; ignore a stray push.
        return Ok(Applied {
            advanced: false,
            fetch_more: None,
        });
    };
    let deployment = *deployment;
    let mut log = log.clone();
    let mut advanced = false;
    let archive_err = |e: ArchiveError| ConnectError::Protocol(format!("archive: {e}"));
    for (k, bytes) in entries.iter().enumerate() {
        let index = first.saturating_add(k as u64);
        let entry = SignedEntry::decode(&bytes.0).map_err(|e| {
            ConnectError::UntrustedRoster(format!("roster entry {index} from the relay: {e}"))
        })?;
        match &mut log {
            None => {
                if index != 0 {
                    // Not the genesis: wait for the answer from index 0.
                    continue;
                }
                let l = RosterLog::from_genesis(entry.clone(), Some(&deployment))
                    .map_err(|e| ConnectError::UntrustedRoster(e.to_string()))?;
                inner
                    .archive
                    .store_roster_entry(0, &entry)
                    .map_err(archive_err)?;
                info!(deployment = %hex::encode(l.deployment()), "roster log: genesis verified against the pinned deployment");
                log = Some(l);
                advanced = true;
            }
            Some(l) => match l.append(entry.clone()) {
                Ok(Appended::New(i)) => {
                    inner
                        .archive
                        .store_roster_entry(i, &entry)
                        .map_err(archive_err)?;
                    info!(epoch = i, "roster log advanced");
                    advanced = true;
                }
                Ok(Appended::Known(_)) => {}
                Err(LogError::Fork(ev)) => {
                    inner.archive.store_fork(&ev).map_err(archive_err)?;
                    return Err(ConnectError::UntrustedRoster(format!(
                        "{} (both entries kept in the archive; `tallinn roster log` shows them)",
                        LogError::Fork(ev)
                    )));
                }
                Err(LogError::WrongIndex { .. }) => {
                    // A gap (a push overtook an answer): fetch what is missing.
                    break;
                }
                Err(e) => {
                    return Err(ConnectError::UntrustedRoster(format!(
                        "the relay served an invalid roster entry: {e}"
                    )))
                }
            },
        }
    }
    let fetch_more = match &log {
        Some(l) if head < l.epoch() => {
            return Err(ConnectError::UntrustedRoster(
                LogError::Truncated {
                    known: l.epoch(),
                    offered: head,
                }
                .to_string(),
            ))
        }
        Some(l) if head > l.epoch() => Some(l.epoch() + 1),
        Some(_) => None,
        None => Some(0),
    };
    if advanced {
        *inner.roster.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(ClientRoster::V2 { deployment, log });
    }
    Ok(Applied {
        advanced,
        fetch_more,
    })
}

/// After the log advanced: every quarantined delivery that verifies and
/// opens now is archived and leaves the quarantine (a message from a
/// participant or device the old roster did not know yet, or sealed at a
/// later epoch). Returns the events for the new records.
pub(super) fn reverify_quarantine(inner: &Inner) -> Result<Vec<Event>, ArchiveError> {
    let roster = inner.roster();
    let s = &inner.settings;
    let mut events = Vec::new();
    for (n, q) in inner.archive.quarantined_numbered()? {
        let opened = UntrustedEnvelope::decode(&q.envelope)
            .and_then(|u| u.verify(roster.as_ref()))
            .and_then(|v| v.open_as(&s.identity, Some(s.device.as_str())));
        let Ok(opened) = opened else { continue };
        let (inserted, record) =
            inner
                .archive
                .insert_received_record(q.seq, q.received_at_ms, &opened)?;
        inner.archive.release_quarantined(n)?;
        if let Inserted::New(i) = inserted {
            info!(seq = q.seq, index = i, msg_id = %opened.msg_id(), "quarantined delivery verifies under the new roster; archived");
            events.push(match record {
                Some(r) => Event::Message(Box::new(r)),
                None => Event::Archived,
            });
        }
    }
    inner.archive.flush()?;
    Ok(events)
}

/// Re-seals our messages the relay refused as `stale_roster`, against the
/// epoch now in force.
pub(super) fn reseal_stale(inner: &Inner) {
    let ids: Vec<MsgId> =
        std::mem::take(&mut *inner.stale.lock().unwrap_or_else(|p| p.into_inner()));
    for old in ids {
        match reseal(inner, &old) {
            Ok(Some(new_id)) => {
                info!(old = %old, new = %new_id, epoch = ?inner.roster().epoch(), "stale_roster: message sealed again against the current roster");
                inner.finish_waiter(
                    &old,
                    Err(ClientError::Queued {
                        msg_id: new_id,
                        why: format!("re-sealed as {new_id} after stale_roster"),
                    }),
                );
            }
            Ok(None) => {}
            Err(e) => {
                warn!(msg_id = %old, error = %esc(&e.to_string()), "could not re-seal after stale_roster")
            }
        }
    }
}
