//! The lines of an audit export (`PROTOCOL.md` §12.5): one rendering of a
//! record's content as JSON, used by the client that writes an export and by
//! `tallinn-audit`, which decrypts each envelope with the exported content
//! key, renders what it finds the same way and compares field by field.
//! Whatever an export says about a message's content is therefore either
//! exactly what the sender signed, or reported.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{Receipt, Record, SignedCheckpoint};
use crate::message::{Kind, Loe, Message, Priority, State};

/// `type` of line 1.
pub const EXPORT_TYPE: &str = "tallinn-archive-export";

/// The export version this crate writes with a roster log.
pub const EXPORT_VERSION: u64 = 2;

/// Members of line 1 of a version-2 export.
pub const HEADER_FIELDS: &[&str] = &[
    "type",
    "version",
    "participant",
    "device",
    "exported_at_ms",
    "records",
    "head_hash",
    "deployment",
    "roster_log",
    "checkpoint",
    "holds",
    "recoveries",
    "selection",
];

/// The content members of a record line, each the rendering of the
/// decrypted message ([`message_fields`]).
pub const CONTENT_FIELDS: &[&str] = &["kind", "tlp", "reply_to", "subject", "body", "attachments"];

/// Every member a full (not redacted) version-2 record line may have.
pub const RECORD_FIELDS: &[&str] = &[
    "type",
    "index",
    "direction",
    "seq",
    "received_at_ms",
    "msg_id",
    "sender",
    "channel",
    "sent_at_ms",
    "kind",
    "tlp",
    "reply_to",
    "subject",
    "body",
    "attachments",
    "envelope_b64",
    "prev_hash",
    "record_hash",
    "content_key",
    "content_key_in_record",
    "receipt_b64",
];

/// Every member a redacted record line may have (and no other): a record
/// left out of an export for its TLP label (`withheld: "tlp"`) keeps its
/// marking (`tlp`), so every exported item carries one.
pub const REDACTED_FIELDS: &[&str] = &[
    "type",
    "index",
    "prev_hash",
    "record_hash",
    "redacted",
    "withheld",
    "tlp",
];

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
            "entry_body_b64": B64.encode(entry),
            "entry_hash": hex::encode(crate::roster::entry_hash(entry)),
        }),
        Kind::Approval {
            entry_hash,
            signature,
        } => json!({
            "name": "approval",
            "entry_hash": hex::encode(entry_hash),
            "signature": hex::encode(signature),
        }),
        Kind::Share { envelope, .. } => json!({
            "name": "share",
            "msg_id": crate::envelope::UntrustedEnvelope::decode(envelope)
                .ok()
                .map(|e| e.claimed_header().msg_id.to_hex()),
            "envelope_sha256": hex::encode(Sha256::digest(envelope)),
        }),
    }
}

/// The content members ([`CONTENT_FIELDS`]) of a message; attachment data
/// only if `with_data`.
pub fn message_fields(m: &Message, with_data: bool) -> Map<String, Value> {
    let attachments: Vec<Value> = m
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
    let mut out = Map::new();
    out.insert("kind".into(), kind_json(&m.kind));
    out.insert("tlp".into(), json!(m.tlp.label()));
    out.insert("reply_to".into(), json!(m.reply_to.map(|r| r.to_hex())));
    out.insert("subject".into(), json!(m.subject));
    out.insert("body".into(), json!(m.body));
    out.insert("attachments".into(), Value::Array(attachments));
    out
}

/// A record as JSON: version 1's members (attachment data only if
/// `with_data`), and for version 2 what [`Evidence`] adds.
pub fn record_line(r: &Record, with_data: bool, evidence: Option<&Evidence<'_>>) -> Value {
    let mut line = Map::new();
    line.insert("type".into(), json!("record"));
    line.insert("index".into(), json!(r.index));
    line.insert("direction".into(), json!(r.direction.as_str()));
    line.insert("seq".into(), json!(r.seq));
    line.insert("received_at_ms".into(), json!(r.received_at_ms));
    line.insert("msg_id".into(), json!(r.msg_id.to_hex()));
    line.insert("sender".into(), json!(r.sender));
    line.insert("channel".into(), json!(r.channel));
    line.insert("sent_at_ms".into(), json!(r.sent_at_ms));
    line.extend(message_fields(&r.message, with_data));
    line.insert("envelope_b64".into(), json!(B64.encode(&r.envelope)));
    line.insert("prev_hash".into(), json!(hex::encode(r.prev_hash)));
    line.insert("record_hash".into(), json!(hex::encode(r.hash())));
    if let Some(e) = evidence {
        line.insert("content_key".into(), json!(e.content_key.map(hex::encode)));
        line.insert(
            "content_key_in_record".into(),
            json!(r.content_key.is_some()),
        );
        line.insert(
            "receipt_b64".into(),
            json!(e.receipt.map(|x| B64.encode(x.to_bytes()))),
        );
    }
    Value::Object(line)
}

/// What a version-2 record line adds to version 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence<'a> {
    /// The message's content key (the record's own, or recovered by opening
    /// the envelope at export time).
    pub content_key: Option<&'a [u8; 32]>,
    /// The relay's receipt (sent records).
    pub receipt: Option<&'a Receipt>,
}

/// A redacted record: its place in the chain and nothing of its content.
pub fn redacted_line(index: u64, prev_hash: &[u8; 32], record_hash: &[u8; 32]) -> Value {
    json!({
        "type": "record",
        "index": index,
        "prev_hash": hex::encode(prev_hash),
        "record_hash": hex::encode(record_hash),
        "redacted": true,
    })
}

/// A record left out of an export for its TLP label (TLP:RED unless the
/// exporter asked for it): redacted, with its marking.
pub fn withheld_line(
    index: u64,
    prev_hash: &[u8; 32],
    record_hash: &[u8; 32],
    tlp: crate::message::Tlp,
) -> Value {
    let mut v = redacted_line(index, prev_hash, record_hash);
    v["withheld"] = json!("tlp");
    v["tlp"] = json!(tlp.label());
    v
}

/// A checkpoint as exports and checkpoint files carry it: base64 of
/// `postcard(SignedCheckpoint)`.
pub fn checkpoint_b64(c: &SignedCheckpoint) -> String {
    B64.encode(c.to_bytes())
}

/// Decodes [`checkpoint_b64`].
///
/// # Errors
/// A message naming what is wrong.
pub fn checkpoint_from_b64(s: &str) -> Result<SignedCheckpoint, String> {
    let bytes = B64
        .decode(s.trim())
        .map_err(|e| format!("checkpoint is not base64: {e}"))?;
    SignedCheckpoint::from_bytes(&bytes).map_err(|e| e.to_string())
}
