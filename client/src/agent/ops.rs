//! What the local API does, on a [`Client`]: the one implementation behind
//! both the agent's endpoints and a CLI command that opened the archive
//! itself (no agent running), so the two can never disagree.

use std::time::Duration;

use tallinn_common::envelope::UntrustedEnvelope;
use tallinn_common::message::MsgId;

use super::api::*;
use crate::archive::Record;
use crate::client::{Client, ClientError};
use crate::export::Selection;
use crate::roster::ClientRoster;

/// The archived message a given id names ([`crate::ids`]'s rule).
///
/// # Errors
/// [`ApiError`]: `bad_request` (syntax), `not_found`, `ambiguous_id` (the
/// message lists the candidates).
pub fn resolve(client: &Client, given: &str) -> Result<Record, ApiError> {
    let id = crate::ids::normalise(given)?;
    if let Ok(full) = MsgId::from_hex(&id) {
        return client.archive().get(&full)?.ok_or_else(|| {
            crate::ids::IdError::Unknown {
                id,
                place: "the archive",
            }
            .into()
        });
    }
    let found = client.archive().find_prefix(&id, 20)?;
    Ok(crate::ids::resolve(
        &id,
        "the archive",
        found.into_iter().map(|r| {
            let what = format!(
                "{}  {}",
                tallinn_common::text::escape_line(&r.channel),
                tallinn_common::text::escape_line(&r.message.subject)
            );
            (r.msg_id, what, r)
        }),
    )?)
}

fn view(client: &Client, r: &Record) -> Result<MessageView, ApiError> {
    let archive = client.archive();
    let mut v = MessageView::of(r, archive.is_read(r)?);
    v.tlp_above = archive
        .tlp_violation(r.index)?
        .map(|(_, max)| max.label().to_string());
    if r.direction == crate::archive::Direction::Shared && r.index > 0 {
        // The Share that carried it is the record before (PROTOCOL.md
        // §18.5); named only if it carries exactly this envelope.
        v.shared_by = archive
            .record(r.index - 1)?
            .and_then(|s| match &s.message.kind {
                tallinn_common::message::Kind::Share { envelope, .. }
                    if *envelope == r.envelope =>
                {
                    Some(s.sender.clone())
                }
                _ => None,
            });
    }
    Ok(v)
}

/// `POST /v1/search`: matching messages, newest first.
///
/// # Errors
/// [`ApiError`].
pub fn search(client: &Client, req: &SearchRequest) -> Result<MessagePage, ApiError> {
    let (filter, limit) = req.to_filter()?;
    let mut rows = client
        .archive()
        .search(&filter, limit.saturating_add(1))
        .map_err(|e| match e {
            crate::archive::ArchiveError::Unreadable(m) => ApiError::bad_request(m),
            e => e.into(),
        })?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let messages = rows
        .iter()
        .map(|r| view(client, r))
        .collect::<Result<_, _>>()?;
    let chair = client
        .roster()
        .log()
        .map(|l| l.current().chair().to_string());
    Ok(MessagePage {
        messages,
        more,
        chair,
    })
}

/// The signature verdict and sender fingerprint of a record, against the
/// roster in force (version 2: the state of the record's own epoch).
fn verdict(roster: &ClientRoster, r: &Record) -> (String, String, Option<String>) {
    let untrusted = UntrustedEnvelope::decode(&r.envelope);
    let device = untrusted
        .as_ref()
        .ok()
        .and_then(|u| u.claimed_header().sender_device.clone());
    let sig = untrusted
        .and_then(|u| u.verify(roster))
        .map(|_| "valid (verified against the roster)".to_string())
        .unwrap_or_else(|e| format!("INVALID: {e}"));
    let fp = match roster {
        ClientRoster::V1(v1) => v1
            .participant(&r.sender)
            .map(|p| p.fingerprint().to_string()),
        ClientRoster::V2 { log, .. } => log.as_ref().and_then(|l| {
            let p = l.current().participant(&r.sender)?;
            let d = p.device(device.as_deref()?)?;
            Some(d.fingerprint().to_string())
        }),
    }
    .unwrap_or_else(|| "sender (or device) no longer in the roster".into());
    (sig, fp, device)
}

/// `POST /v1/messages/{id}/read`: marks a message read; its full id.
///
/// # Errors
/// [`ApiError`] of [`resolve`].
pub fn mark_read(client: &Client, given: &str) -> Result<String, ApiError> {
    let r = resolve(client, given)?;
    client.archive().mark_read(&r.msg_id)?;
    Ok(r.msg_id.to_hex())
}

/// `GET /v1/messages/{id}`: one message in full (reading changes
/// nothing; `show` marks it read with [`mark_read`]).
///
/// # Errors
/// [`ApiError`] of [`resolve`].
pub fn show(client: &Client, given: &str) -> Result<MessageDetail, ApiError> {
    let r = resolve(client, given)?;
    let (signature, sender_fingerprint, sender_device) = verdict(&client.roster(), &r);
    let receipt = receipt_view(client, &r)?;
    Ok(MessageDetail {
        message: view(client, &r)?,
        signature,
        sender_fingerprint,
        sender_device,
        receipt,
    })
}

/// The relay's receipt of a sent record of a version-2 archive, checked
/// against the relay_key of the envelope's epoch (or the next).
fn receipt_view(client: &Client, r: &Record) -> Result<Option<ReceiptView>, ApiError> {
    let roster = client.roster();
    let Some(log) = roster.log() else {
        return Ok(None);
    };
    if r.direction != crate::archive::Direction::Sent {
        return Ok(None);
    }
    let Some(receipt) = client.archive().receipt(r.index)? else {
        return Ok(Some(ReceiptView {
            status: "none (accepted as a duplicate of an earlier attempt, or before receipts)"
                .into(),
            seq: None,
            received_at_ms: None,
            envelope_sha256: None,
        }));
    };
    let epoch = UntrustedEnvelope::decode(&r.envelope)
        .ok()
        .and_then(|u| u.claimed_header().roster_epoch)
        .unwrap_or(0);
    let keys: Vec<[u8; 32]> = [log.state_at(epoch), log.state_at(epoch + 1)]
        .into_iter()
        .flatten()
        .map(|s| s.relay_key().to_bytes())
        .collect();
    let check = keys
        .iter()
        .map(|k| receipt.verify_for(k, &r.msg_id, &r.envelope))
        .find(Result::is_ok)
        .unwrap_or_else(|| {
            keys.first()
                .map_or(Ok(()), |k| receipt.verify_for(k, &r.msg_id, &r.envelope))
        });
    Ok(Some(ReceiptView {
        status: match check {
            Ok(()) => "valid (signed with the roster's relay_key)".into(),
            Err(e) => format!("INVALID: {e}"),
        },
        seq: Some(receipt.body.seq),
        received_at_ms: Some(receipt.body.received_at_ms),
        envelope_sha256: Some(hex::encode(receipt.body.envelope_hash)),
    }))
}

/// `GET /v1/messages/{id}/thread`: the thread, in archive order.
///
/// # Errors
/// [`ApiError`] of [`resolve`].
pub fn thread(client: &Client, given: &str) -> Result<Vec<MessageView>, ApiError> {
    let r = resolve(client, given)?;
    client
        .archive()
        .thread(&r.msg_id)?
        .iter()
        .map(|r| view(client, r))
        .collect()
}

/// `POST /v1/messages`: seals the message and stores it in the outbox;
/// if a session is up (or comes up within `connect`), waits for the
/// relay's acceptance up to the send timeout. A message not accepted in
/// that time stays queued and is sent on the next connection.
///
/// # Errors
/// [`ApiError`]: `bad_request`, `not_allowed` (nothing stored),
/// `too_large`, `rejected` (kept in the outbox, marked refused).
pub async fn compose(
    client: &Client,
    req: &ComposeRequest,
    connect: Duration,
) -> Result<SendOutcome, ApiError> {
    let message = req.to_message()?;
    let (channel, added) = if req.to.is_empty() {
        (req.channel.clone(), Vec::new())
    } else {
        if !req.channel.is_empty() {
            return Err(ApiError::bad_request(
                "give either a channel or `to` (a direct conversation), not both",
            ));
        }
        client.direct_conversation(&req.to)?
    };
    let up = client.wait_connected(connect).await;
    let result = match up {
        Ok(()) => client.send(&channel, &message).await,
        Err(e) => {
            let msg_id = client.queue(&channel, &message)?;
            Err(ClientError::Queued {
                msg_id,
                why: format!(
                    "the relay at {} is unreachable: {e}",
                    client.settings().relay
                ),
            })
        }
    };
    match result {
        Ok((msg_id, seq)) => Ok(SendOutcome::Sent {
            msg_id: msg_id.to_hex(),
            seq,
            channel,
            added,
        }),
        Err(ClientError::Queued { msg_id, why }) => Ok(SendOutcome::Queued {
            msg_id: msg_id.to_hex(),
            reason: why,
            channel,
            added,
        }),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/outbox`.
///
/// # Errors
/// [`ApiError`].
pub fn outbox(client: &Client) -> Result<Vec<OutboxItem>, ApiError> {
    Ok(client
        .outbox()
        .list()?
        .into_iter()
        .map(|l| OutboxItem {
            msg_id: l.entry.msg_id.to_hex(),
            channel: l.entry.channel.clone(),
            subject: l.entry.subject.clone(),
            created_at_ms: l.entry.created_at_ms,
            refused: l.refused.map(|r| RefusalView {
                code: r.code.as_str().to_string(),
                reason: r.reason,
                at_ms: r.at_ms,
            }),
        })
        .collect())
}

fn outbox_entry(client: &Client, given: &str) -> Result<MsgId, ApiError> {
    let listed = client.outbox().list()?;
    Ok(crate::ids::resolve(
        given,
        "the outbox",
        listed.into_iter().map(|l| {
            let what = tallinn_common::text::escape_line(&l.entry.subject).into_owned();
            (l.entry.msg_id, what, l.entry.msg_id)
        }),
    )?)
}

/// `DELETE /v1/outbox/{id}`: drops an entry unsent; answers its full id.
///
/// # Errors
/// [`ApiError`] (the id rule).
pub fn outbox_drop(client: &Client, given: &str) -> Result<String, ApiError> {
    let id = outbox_entry(client, given)?;
    client.outbox().drop_entry(&id)?;
    Ok(id.to_hex())
}

/// `POST /v1/outbox/{id}/resend`: seals a (refused) entry again under a
/// new id; answers `(old, new)`.
///
/// # Errors
/// [`ApiError`] (the id rule; `not_allowed` if it can no longer be sealed).
pub fn outbox_resend(client: &Client, given: &str) -> Result<(String, String), ApiError> {
    let id = outbox_entry(client, given)?;
    let new = client
        .resend(&id)?
        .ok_or_else(|| ApiError::not_found(format!("outbox entry {id} vanished")))?;
    Ok((id.to_hex(), new.to_hex()))
}

/// `GET /v1/quarantine`.
///
/// # Errors
/// [`ApiError`].
pub fn quarantine(client: &Client) -> Result<Vec<QuarantineItem>, ApiError> {
    Ok(client
        .archive()
        .quarantined()?
        .into_iter()
        .map(|q| QuarantineItem {
            seq: q.seq,
            received_at_ms: q.received_at_ms,
            reason: q.reason.clone(),
            claimed_sender: q.claimed_sender.clone(),
            claimed_channel: q.claimed_channel.clone(),
            envelope_len: q.envelope.len(),
        })
        .collect())
}

/// `GET /v1/status`.
pub fn status(client: &Client) -> StatusView {
    let s = client.state().borrow().clone();
    let st = client.settings();
    StatusView {
        api: API_VERSION,
        pid: std::process::id(),
        participant: st.identity.id().to_string(),
        device: st.device.to_string(),
        relay: st.relay.to_string(),
        connected: s.connected,
        sessions: s.sessions,
        archive_records: client.archive().len(),
        outbox: client.outbox().len(),
        roster_epoch: s.roster_epoch,
        last_error: s.last_error,
    }
}

/// `GET /v1/messages/{id}/attachments/{n}` (n from 1): the attachment's
/// name and bytes.
///
/// # Errors
/// [`ApiError`]: the id rule; `not_found` for a number out of range.
pub fn attachment(client: &Client, given: &str, n: usize) -> Result<(String, Vec<u8>), ApiError> {
    let r = resolve(client, given)?;
    let count = r.message.attachments.len();
    let a = n
        .checked_sub(1)
        .and_then(|i| r.message.attachments.get(i))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "message {} has {count} attachment(s); there is no number {n}",
                r.msg_id
            ))
        })?;
    Ok((a.name.clone(), a.data.clone()))
}

/// `POST /v1/quarantine/retry`: `{"archived": n, "left": m}`.
///
/// # Errors
/// [`ApiError`].
pub fn quarantine_retry(client: &Client) -> Result<QuarantineRetry, ApiError> {
    let (archived, left) = client.retry_quarantine()?;
    Ok(QuarantineRetry { archived, left })
}

/// `POST /v1/quarantine/purge` `{"before_ms": t}`: `{"purged": n}`.
///
/// # Errors
/// [`ApiError`].
pub fn quarantine_purge(client: &Client, req: &PurgeRequest) -> Result<PurgeResult, ApiError> {
    Ok(PurgeResult {
        purged: client.purge_quarantine(req.before_ms)?,
    })
}

/// `POST /v1/archive/verify`: the whole archive re-checked (version 2:
/// each record against its own epoch).
///
/// # Errors
/// [`ApiError`] on a database failure (a broken record is a verdict, not
/// an error).
pub fn archive_verify(client: &Client, deep: bool) -> Result<VerifyView, ApiError> {
    let r = client.verify_archive(deep, |_| {})?;
    Ok(VerifyView {
        ok: r.first_error.is_none(),
        records: r.records,
        head_hash: hex::encode(r.head_hash),
        first_error: r
            .first_error
            .map(|(index, reason)| VerifyProblem { index, reason }),
    })
}

/// `GET /v1/archive/stats`.
///
/// # Errors
/// [`ApiError`].
pub fn archive_stats(client: &Client) -> Result<crate::archive::Stats, ApiError> {
    Ok(client.archive().stats()?)
}

/// `GET` (everything) or `POST /v1/archive/export` (a [`Selection`]): the
/// audit export (JSON Lines, [`crate::export`]) written to `out`; returns
/// the records written. `roster_text` is the version-1 roster file's text
/// (empty for a device enrolled under version 2, whose export carries the
/// roster log).
///
/// # Errors
/// [`ApiError`], including a failed write to `out`; 400 for a thread id
/// that is not one message of the archive.
pub fn export(
    client: &Client,
    roster_text: &str,
    now_ms: u64,
    selection: &Selection,
    out: impl std::io::Write,
    progress: impl FnMut(u64),
) -> Result<u64, ApiError> {
    let mut selection = selection.clone();
    if let Some(t) = &selection.thread {
        selection.thread = Some(resolve(client, t)?.msg_id.to_hex());
    }
    let s = client.settings();
    let roster = client.roster();
    // A record archived before records kept their content key: open it
    // again with this device's keys (current or retired).
    let recover = |r: &crate::archive::Record| {
        UntrustedEnvelope::decode(&r.envelope)
            .and_then(|u| u.verify(roster.as_ref()))
            .and_then(|v| crate::client::open_with_any_key(s, &v))
            .ok()
            .map(|o| *o.content_key())
    };
    let options = crate::export::ExportOptions {
        recover_key: Some(&recover),
        selection,
    };
    Ok(crate::export::export_with(
        client.archive(),
        &s.roster,
        roster_text,
        s.identity.id().as_str(),
        s.device.as_str(),
        now_ms,
        &options,
        out,
        progress,
    )?)
}
