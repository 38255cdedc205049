//! Audit export: JSON Lines that a third party can re-verify without this
//! software.
//!
//! Line 1 (`"type": "tallinn-archive-export"`): the participant and device,
//! the export time, the record count, the archive head hash, the roster used
//! (its TOML text, verbatim) and its fingerprint.
//!
//! Then one line per record (`"type": "record"`), in archive order: relay
//! seq and receive time, direction, the decoded header and message fields,
//! attachments (name, media type, size, SHA-256, base64 data), the raw
//! envelope in base64 (standard alphabet, padded), and the record's chain
//! hashes.
//!
//! To re-verify a record: base64-decode `envelope_b64`; it is
//! `postcard(Envelope{body, signature})` (see `PROTOCOL.md` §2.3): read the
//! varint length and `body`, then the 64-byte signature; verify Ed25519 over
//! `"tallinn/1 envelope" ‖ body` with the sender's `sign_key` from the
//! roster on line 1; decode the header from the start of `body` and compare
//! `msg_id`, `sender`, `channel`, `sent_at_ms` with the line's fields.

use std::io::Write;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tallinn_common::message::{Kind, Loe, Priority, State};
use tallinn_common::roster::Roster;

use crate::archive::{Archive, ArchiveError, Direction, Record};

fn loe(l: Loe) -> &'static str {
    match l {
        Loe::Immediate => "immediate",
        Loe::Capability => "capability",
        Loe::Sustainability => "sustainability",
    }
}

fn priority(p: Priority) -> &'static str {
    match p {
        Priority::Low => "low",
        Priority::Normal => "normal",
        Priority::High => "high",
        Priority::Critical => "critical",
    }
}

fn state(s: State) -> &'static str {
    match s {
        State::Acknowledged => "acknowledged",
        State::InProgress => "in-progress",
        State::Fulfilled => "fulfilled",
        State::Declined => "declined",
        State::Closed => "closed",
    }
}

/// The kind as JSON (`{"name": ..., kind fields}`).
pub fn kind_json(k: &Kind) -> Value {
    match k {
        Kind::Note => json!({"name": "note"}),
        Kind::Request {
            loe: l,
            category,
            priority: p,
        } => {
            json!({"name": "request", "loe": loe(*l), "category": category, "priority": priority(*p)})
        }
        Kind::Offer { request } => json!({"name": "offer", "request": request.to_hex()}),
        Kind::Status { about, state: s } => {
            json!({"name": "status", "about": about.to_hex(), "state": state(*s)})
        }
        Kind::Proposal { entry } => json!({
            "name": "proposal",
            "entry_body_b64": base64::engine::general_purpose::STANDARD.encode(entry),
            "entry_hash": hex::encode(tallinn_common::roster::entry_hash(entry)),
        }),
        Kind::Approval {
            entry_hash,
            signature,
        } => json!({
            "name": "approval",
            "entry_hash": hex::encode(entry_hash),
            "signature": hex::encode(signature),
        }),
    }
}

/// A record as JSON (attachment data included only if `with_data`).
pub fn record_json(r: &Record, with_data: bool) -> Value {
    let attachments: Vec<Value> = r
        .message
        .attachments
        .iter()
        .map(|a| {
            let mut v = json!({
                "name": a.name,
                "media_type": a.media_type,
                "size": a.data.len(),
                "sha256": hex::encode(Sha256::digest(&a.data)),
            });
            if with_data {
                v["data_b64"] = json!(B64.encode(&a.data));
            }
            v
        })
        .collect();
    json!({
        "type": "record",
        "index": r.index,
        "direction": match r.direction { Direction::Received => "received", Direction::Sent => "sent" },
        "seq": r.seq,
        "received_at_ms": r.received_at_ms,
        "msg_id": r.msg_id.to_hex(),
        "sender": r.sender,
        "channel": r.channel,
        "sent_at_ms": r.sent_at_ms,
        "kind": kind_json(&r.message.kind),
        "tlp": r.message.tlp.label(),
        "reply_to": r.message.reply_to.map(|m| m.to_hex()),
        "subject": r.message.subject,
        "body": r.message.body,
        "attachments": attachments,
        "envelope_b64": B64.encode(&r.envelope),
        "prev_hash": hex::encode(r.prev_hash),
        "record_hash": hex::encode(r.hash()),
    })
}

/// Writes the export; returns the number of records written.
///
/// # Errors
/// [`ArchiveError`] (including I/O errors of `out`).
#[allow(clippy::too_many_arguments)]
pub fn export(
    archive: &Archive,
    roster: &Roster,
    roster_text: &str,
    participant: &str,
    device: &str,
    exported_at_ms: u64,
    mut out: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, ArchiveError> {
    let mut header = json!({
        "type": "tallinn-archive-export",
        "version": 1,
        "participant": participant,
        "device": device,
        "exported_at_ms": exported_at_ms,
        "records": archive.len(),
        "head_hash": hex::encode(archive.head_hash()),
        "roster_fingerprint": roster.fingerprint_hex(),
        "roster": roster_text,
    });
    // Version 2: the roster log this device verified, so an auditor checks
    // every record against the state of its own epoch (PROTOCOL.md §12.5).
    let log = archive.roster_entries()?;
    if let (Some(first), Value::Object(h)) = (log.first(), &mut header) {
        h.insert("deployment".into(), json!(hex::encode(first.hash())));
        h.insert(
            "roster_log".into(),
            json!(log
                .iter()
                .map(|e| B64.encode(e.encode()))
                .collect::<Vec<_>>()),
        );
    }
    writeln!(out, "{header}")?;
    let mut n = 0;
    archive.for_each(|r| {
        writeln!(out, "{}", record_json(&r, true))?;
        n += 1;
        progress(n);
        Ok(())
    })?;
    out.flush()?;
    Ok(n)
}
