//! Audit export: JSON Lines that a third party can re-verify without this
//! software (`PROTOCOL.md` §12.5).
//!
//! Version 2 (an archive with a roster log): line 1 names the participant,
//! the device, the deployment and the whole roster log; each record line
//! carries its content key and, for a sent record, the relay's receipt, so
//! `tallinn-audit` proves every signature, content, wrap and hash with no
//! private key. Version 1 (no roster log): the roster file verbatim, and
//! signatures but not contents can be checked (§12.6).
//!
//! The line rendering is `tallinn_common::evidence::export`'s, the same the
//! auditor compares against.

use std::io::Write;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use tallinn_common::evidence::export::{self as line, Evidence, EXPORT_TYPE, EXPORT_VERSION};
use tallinn_common::roster::Roster;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tallinn_common::message::{MsgId, Tlp};

use crate::archive::{Archive, ArchiveError, Entry, Hold, HoldScope, Record};

/// A selective export: records that do not match every given criterion are
/// written redacted, so the subset still proves its place in the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Channel id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Sender id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A message of the thread (32 hex digits): the whole thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// Received at or after, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Received before, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// Include TLP:RED messages in full (`--include-tlp-red`); without it
    /// they are written as withheld lines that keep only their place in the
    /// chain and their marking.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_tlp_red: bool,
}

impl Selection {
    /// Whether it selects everything.
    pub fn is_everything(&self) -> bool {
        *self == Selection::default()
    }

    fn matches(&self, r: &Record, thread: &HashSet<MsgId>) -> bool {
        // A Share is selected as the original it carries (its content key
        // opens the original): never a way around the selection.
        let (channel, sender, msg_id) =
            match tallinn_common::envelope::share::original_header(&r.message) {
                Some(h) => (h.channel, h.sender, h.msg_id),
                None => (r.channel.clone(), r.sender.clone(), r.msg_id),
            };
        self.channel.as_ref().is_none_or(|c| *c == channel)
            && self.from.as_ref().is_none_or(|f| *f == sender)
            && (self.thread.is_none() || thread.contains(&msg_id))
            && self.since_ms.is_none_or(|s| r.received_at_ms >= s)
            && self.until_ms.is_none_or(|u| r.received_at_ms < u)
    }
}

/// A hold as the export's line 1 lists it.
pub fn hold_json(h: &Hold) -> Value {
    let scope = match &h.scope {
        HoldScope::Channel(c) => json!({"channel": c}),
        HoldScope::From(p) => json!({"from": p}),
        HoldScope::Thread(id) => json!({"thread": id.to_hex()}),
        HoldScope::Period { since_ms, until_ms } => {
            json!({"since_ms": since_ms, "until_ms": until_ms})
        }
    };
    json!({
        "id": h.id,
        "created_at_ms": h.created_at_ms,
        "reason": h.reason,
        "scope": scope,
        "released_at_ms": h.released_at_ms,
    })
}

pub use tallinn_common::evidence::export::kind_json;

/// A record as JSON, version 1 (attachment data included only if
/// `with_data`).
pub fn record_json(r: &Record, with_data: bool) -> Value {
    line::record_line(r, with_data, None)
}

/// Recovers the content key of a record archived without one (received
/// before records kept it), by opening its envelope with the device's keys.
pub type RecoverKey<'a> = &'a dyn Fn(&Record) -> Option<[u8; 32]>;

/// What the caller adds to a version-2 export beyond the archive.
#[derive(Default)]
pub struct ExportOptions<'a> {
    /// See [`RecoverKey`]; without it such records export `content_key: null`.
    pub recover_key: Option<RecoverKey<'a>>,
    /// Only these records in full, the others redacted.
    pub selection: Selection,
}

/// Writes the export; returns the number of records written. Version 2
/// (content keys, receipts, the roster log) when the archive holds a roster
/// log, version 1 otherwise.
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
    out: impl Write,
    progress: impl FnMut(u64),
) -> Result<u64, ArchiveError> {
    export_with(
        archive,
        roster,
        roster_text,
        participant,
        device,
        exported_at_ms,
        &ExportOptions::default(),
        out,
        progress,
    )
}

/// [`export`] with [`ExportOptions`].
///
/// # Errors
/// [`ArchiveError`] (including I/O errors of `out`).
#[allow(clippy::too_many_arguments)]
pub fn export_with(
    archive: &Archive,
    roster: &Roster,
    roster_text: &str,
    participant: &str,
    device: &str,
    exported_at_ms: u64,
    options: &ExportOptions<'_>,
    mut out: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, ArchiveError> {
    let log = archive.roster_entries()?;
    let v2 = !log.is_empty();
    let header = if let Some(first) = log.first() {
        // Version 2: the roster log this device verified, so an auditor
        // checks every record against the state of its own epoch, with the
        // content keys that prove every content (PROTOCOL.md §12.5).
        json!({
            "type": EXPORT_TYPE,
            "version": EXPORT_VERSION,
            "participant": participant,
            "device": device,
            "exported_at_ms": exported_at_ms,
            "records": archive.len(),
            "head_hash": hex::encode(archive.head_hash()),
            "deployment": hex::encode(first.hash()),
            "roster_log": log.iter().map(|e| B64.encode(e.encode())).collect::<Vec<_>>(),
            "checkpoint": archive.checkpoint()?.map(|c| line::checkpoint_b64(&c)),
            "holds": archive.holds()?.iter().map(hold_json).collect::<Vec<_>>(),
            "recoveries": archive.recoveries()?.iter().map(|r| json!({
                "at_ms": r.at_ms,
                "records": r.records,
                "head_hash": hex::encode(r.head_hash),
                "refused_checkpoint_b64": B64.encode(&r.refused),
            })).collect::<Vec<_>>(),
            "selection": if options.selection.is_everything() {
                Value::Null
            } else {
                serde_json::to_value(&options.selection).unwrap_or(Value::Null)
            },
        })
    } else {
        json!({
            "type": EXPORT_TYPE,
            "version": 1,
            "participant": participant,
            "device": device,
            "exported_at_ms": exported_at_ms,
            "records": archive.len(),
            "head_hash": hex::encode(archive.head_hash()),
            "roster_fingerprint": roster.fingerprint_hex(),
            "roster": roster_text,
        })
    };
    writeln!(out, "{header}")?;
    let thread: HashSet<MsgId> = match &options.selection.thread {
        Some(id) => {
            let id = MsgId::from_hex(id)
                .map_err(|e| ArchiveError::Unreadable(format!("--thread: {e}")))?;
            archive.thread(&id)?.iter().map(|r| r.msg_id).collect()
        }
        None => HashSet::new(),
    };
    let mut n = 0;
    archive.for_each_entry(|entry| {
        let r = match entry {
            Entry::Redacted(x) => {
                writeln!(
                    out,
                    "{}",
                    line::redacted_line(x.index, &x.prev_hash, &x.record_hash)
                )?;
                n += 1;
                progress(n);
                return Ok(());
            }
            Entry::Record(r) if r.message.tlp == Tlp::Red && !options.selection.include_tlp_red => {
                writeln!(
                    out,
                    "{}",
                    line::withheld_line(r.index, &r.prev_hash, &r.hash(), r.message.tlp)
                )?;
                n += 1;
                progress(n);
                return Ok(());
            }
            Entry::Record(r) if !options.selection.matches(&r, &thread) => {
                writeln!(
                    out,
                    "{}",
                    line::redacted_line(r.index, &r.prev_hash, &r.hash())
                )?;
                n += 1;
                progress(n);
                return Ok(());
            }
            Entry::Record(r) => r,
        };
        let value = if v2 {
            let recovered = match (r.content_key, options.recover_key) {
                (Some(k), _) => Some(k),
                (None, Some(f)) => f(&r),
                (None, None) => None,
            };
            let receipt = archive.receipt(r.index)?;
            line::record_line(
                &r,
                true,
                Some(&Evidence {
                    content_key: recovered.as_ref(),
                    receipt: receipt.as_ref(),
                }),
            )
        } else {
            line::record_line(&r, true, None)
        };
        writeln!(out, "{value}")?;
        n += 1;
        progress(n);
        Ok(())
    })?;
    out.flush()?;
    Ok(n)
}
