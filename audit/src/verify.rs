//! One export, line by line, from the pinned genesis to the signed head.
//! The walk stops at the first check that does not hold and names it; every
//! check is one of `tallinn-common`'s own (signature, commitment, wraps,
//! record hash), so the auditor and the client cannot disagree about the
//! rules, only about the facts.

use std::collections::BTreeSet;
use std::io::BufRead;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};
use tallinn_common::envelope::{UntrustedEnvelope, VerifiedEnvelope};
use tallinn_common::evidence::export::{
    checkpoint_from_b64, message_fields, CONTENT_FIELDS, EXPORT_TYPE, EXPORT_VERSION,
    HEADER_FIELDS, RECORD_FIELDS, REDACTED_FIELDS,
};
use tallinn_common::evidence::{Direction, Receipt, Record, SignedCheckpoint};
use tallinn_common::message::MsgId;
use tallinn_common::roster::{RosterLog, SignedEntry};

use crate::report::{CheckpointSeen, Failure, Report};

/// What [`crate::cross`] needs of each record of a verified export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSummary {
    /// Position in the archive.
    pub index: u64,
    /// `None` for a redacted record (nothing is known of it).
    pub msg_id: Option<MsgId>,
    /// The relay's seq (0 unknown).
    pub seq: u64,
    /// Received or sent (`None` when redacted).
    pub direction: Option<Direction>,
    /// Who the envelope was sealed to: (participant, device) for version 2,
    /// (participant, None) for version 1.
    pub recipients: Vec<(String, Option<String>)>,
    /// SHA-256 of the envelope bytes (zero when redacted).
    pub envelope_hash: [u8; 32],
    /// A redacted line withheld for its TLP label (`withheld: "tlp"`).
    pub withheld_tlp: bool,
}

/// One verified (or failed) export.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    /// The report.
    pub report: Report,
    /// Every record, in order (empty if the walk failed before the records).
    pub records: Vec<RecordSummary>,
}

/// Verifies one export read from `input`; `name` is how the report names
/// it. `checkpoint` is one fetched independently (from the relay or handed
/// over earlier), checked besides the export's own.
pub fn verify(
    name: &str,
    input: impl BufRead,
    deployment: &[u8; 32],
    checkpoint: Option<&SignedCheckpoint>,
) -> Verified {
    let mut w = Walk {
        report: Report {
            export: name.to_string(),
            deployment: hex::encode(deployment),
            ..Report::default()
        },
        records: Vec::new(),
        hashes: Vec::new(),
        log: None,
        line: 0,
        last_share: None,
    };
    if let Err(f) = w.run(input, deployment, checkpoint) {
        w.report.failure = Some(f);
    }
    Verified {
        report: w.report,
        records: w.records,
    }
}

struct Walk {
    report: Report,
    records: Vec<RecordSummary>,
    /// Every record hash so far, by index (the checkpoints point into it).
    hashes: Vec<[u8; 32]>,
    log: Option<RosterLog>,
    line: u64,
    /// The `Share` the last full record carried: its index, the original
    /// envelope and content key (a `shared` record must follow it).
    last_share: Option<LastShare>,
}

/// The `Share` a received record carried: a `shared` record must follow it.
struct LastShare {
    /// The Share's record index.
    index: u64,
    /// The original envelope and content key it carries.
    envelope: Vec<u8>,
    key: [u8; 32],
    /// The Share's header (sender, conversation, epoch).
    header: tallinn_common::envelope::Header,
}

/// The header fields the walk keeps.
struct Header {
    records: u64,
    head_hash: [u8; 32],
    checkpoint: Option<SignedCheckpoint>,
}

impl Walk {
    fn run(
        &mut self,
        input: impl BufRead,
        deployment: &[u8; 32],
        independent: Option<&SignedCheckpoint>,
    ) -> Result<(), Failure> {
        let mut lines = input.lines();
        let header = match lines.next() {
            Some(l) => {
                self.line = 1;
                let l =
                    l.map_err(|e| Failure::at(1, None, "format", format!("unreadable: {e}")))?;
                self.header(&l, deployment)?
            }
            None => return Err(Failure::general("format", "the export is empty")),
        };
        for l in lines {
            self.line += 1;
            let l =
                l.map_err(|e| Failure::at(self.line, None, "format", format!("unreadable: {e}")))?;
            self.record(&l)?;
        }
        let n = self.hashes.len() as u64;
        if n != header.records {
            return Err(Failure::general(
                "count",
                format!(
                    "line 1 announces {} records, the export holds {n}",
                    header.records
                ),
            ));
        }
        let head = self.hashes.last().copied().unwrap_or([0; 32]);
        if head != header.head_hash {
            return Err(Failure::general(
                "head",
                format!(
                    "the last record's hash {} is not the head {} of line 1",
                    hex::encode(head),
                    hex::encode(header.head_hash)
                ),
            ));
        }
        if let Some(c) = &header.checkpoint {
            let seen = self.checkpoint(c, "export")?;
            self.report.checkpoints.push(seen);
        }
        if let Some(c) = independent {
            let seen = self.checkpoint(c, "file")?;
            self.report.checkpoints.push(seen);
        }
        Ok(())
    }

    fn fail(&self, record: Option<u64>, check: &'static str, detail: impl Into<String>) -> Failure {
        Failure::at(self.line, record, check, detail)
    }

    fn header(&mut self, line: &str, deployment: &[u8; 32]) -> Result<Header, Failure> {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| self.fail(None, "format", format!("line 1 is not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| self.fail(None, "format", "line 1 is not a JSON object"))?;
        if obj.get("type").and_then(Value::as_str) != Some(EXPORT_TYPE) {
            return Err(self.fail(
                None,
                "format",
                format!("line 1 is not a {EXPORT_TYPE} header"),
            ));
        }
        match obj.get("version").and_then(Value::as_u64) {
            Some(EXPORT_VERSION) => {}
            Some(1) => {
                return Err(self.fail(
                    None,
                    "format",
                    "a version-1 export carries no content keys and no roster log; \
                     ask for a version-2 export (a client of a version-2 deployment writes one)",
                ))
            }
            other => {
                return Err(self.fail(None, "format", format!("unknown export version {other:?}")))
            }
        }
        self.unknown_members(obj, HEADER_FIELDS, None)?;
        self.report.participant = self.string(obj, "participant", None)?;
        self.report.device = self.string(obj, "device", None)?;
        let records = self.number(obj, "records", None)?;
        let head_hash = self.hash(obj, "head_hash", None)?;
        let claimed = self.hash(obj, "deployment", None)?;
        if claimed != *deployment {
            return Err(self.fail(
                None,
                "deployment",
                format!(
                    "the export is of deployment {}, not the pinned {}",
                    hex::encode(claimed),
                    hex::encode(deployment)
                ),
            ));
        }
        let entries = obj
            .get("roster_log")
            .and_then(Value::as_array)
            .ok_or_else(|| self.fail(None, "roster_log", "missing roster_log"))?;
        let mut decoded = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let bytes = e
                .as_str()
                .and_then(|s| B64.decode(s).ok())
                .ok_or_else(|| self.fail(None, "roster_log", format!("entry {i} is not base64")))?;
            decoded.push(
                SignedEntry::decode(&bytes)
                    .map_err(|err| self.fail(None, "roster_log", format!("entry {i}: {err}")))?,
            );
        }
        let log = RosterLog::from_entries(decoded, Some(deployment))
            .map_err(|e| self.fail(None, "roster_log", e.to_string()))?;
        self.report.roster_entries = log.epoch() + 1;
        self.log = Some(log);
        let checkpoint = match obj.get("checkpoint") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(checkpoint_from_b64(s).map_err(|e| self.fail(None, "checkpoint", e))?)
            }
            Some(_) => return Err(self.fail(None, "checkpoint", "not a base64 string")),
        };
        self.report.holds = obj
            .get("holds")
            .and_then(Value::as_array)
            .map_or(0, |a| a.len() as u64);
        self.report.recoveries = obj
            .get("recoveries")
            .and_then(Value::as_array)
            .map_or(0, |a| a.len() as u64);
        Ok(Header {
            records,
            head_hash,
            checkpoint,
        })
    }

    fn record(&mut self, line: &str) -> Result<(), Failure> {
        let expected = self.hashes.len() as u64;
        let v: Value = serde_json::from_str(line)
            .map_err(|e| self.fail(Some(expected), "format", format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| self.fail(Some(expected), "format", "not a JSON object"))?;
        if obj.get("type").and_then(Value::as_str) != Some("record") {
            return Err(self.fail(Some(expected), "format", "not a record line"));
        }
        let index = self.number(obj, "index", Some(expected))?;
        if index != expected {
            return Err(self.fail(
                Some(expected),
                "chain",
                format!("expected record {expected} here, found record {index} (a line was dropped, added or moved)"),
            ));
        }
        let prev_hash = self.hash(obj, "prev_hash", Some(index))?;
        let before = self.hashes.last().copied().unwrap_or([0; 32]);
        if prev_hash != before {
            return Err(self.fail(
                Some(index),
                "chain",
                if index == 0 {
                    "the first record's prev_hash is not zero".to_string()
                } else {
                    format!(
                        "prev_hash {} is not record {}'s record_hash {}",
                        hex::encode(prev_hash),
                        index - 1,
                        hex::encode(before)
                    )
                },
            ));
        }
        let record_hash = self.hash(obj, "record_hash", Some(index))?;
        if obj.get("redacted") == Some(&Value::Bool(true)) {
            self.unknown_members(obj, REDACTED_FIELDS, Some(index))?;
            match obj.get("withheld") {
                None => {}
                Some(Value::String(w)) if w == "tlp" => {
                    if obj.get("tlp").and_then(Value::as_str).is_none() {
                        return Err(self.fail(
                            Some(index),
                            "format",
                            "a record withheld for its TLP label carries no label",
                        ));
                    }
                    self.report.withheld_tlp += 1;
                }
                Some(_) => return Err(self.fail(Some(index), "format", "unknown withheld reason")),
            }
            self.report.records += 1;
            self.report.redacted += 1;
            self.hashes.push(record_hash);
            self.records.push(RecordSummary {
                index,
                msg_id: None,
                seq: 0,
                direction: None,
                recipients: Vec::new(),
                envelope_hash: [0; 32],
                withheld_tlp: obj.contains_key("withheld"),
            });
            return Ok(());
        }
        self.unknown_members(obj, RECORD_FIELDS, Some(index))?;
        let summary = self
            .full_record(obj, index, prev_hash, record_hash)
            .map_err(|f| match obj.get("msg_id").and_then(Value::as_str) {
                Some(m) => f.with_msg_id(m.to_string()),
                None => f,
            })?;
        self.report.records += 1;
        self.hashes.push(record_hash);
        self.records.push(summary);
        Ok(())
    }

    fn full_record(
        &mut self,
        obj: &Map<String, Value>,
        index: u64,
        prev_hash: [u8; 32],
        record_hash: [u8; 32],
    ) -> Result<RecordSummary, Failure> {
        let r = Some(index);
        let direction = match self.string(obj, "direction", r)?.as_str() {
            "received" => Direction::Received,
            "sent" => Direction::Sent,
            "shared" => Direction::Shared,
            other => {
                return Err(self.fail(r, "format", format!("unknown direction {other:?}")));
            }
        };
        let seq = self.number(obj, "seq", r)?;
        let received_at_ms = self.number(obj, "received_at_ms", r)?;
        let sent_at_ms = self.number(obj, "sent_at_ms", r)?;
        let sender = self.string(obj, "sender", r)?;
        let channel = self.string(obj, "channel", r)?;
        let msg_id = MsgId::from_hex(&self.string(obj, "msg_id", r)?)
            .map_err(|e| self.fail(r, "format", e.to_string()))?;
        let envelope = obj
            .get("envelope_b64")
            .and_then(Value::as_str)
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| self.fail(r, "format", "envelope_b64 is missing or not base64"))?;
        let log = self
            .log
            .as_ref()
            .ok_or_else(|| self.fail(r, "roster_log", "no roster log"))?;

        // The signature against the device key of the envelope's own epoch,
        // and every envelope rule (recipients included) against that state.
        let verified: VerifiedEnvelope = UntrustedEnvelope::decode(&envelope)
            .and_then(|u| u.verify(log))
            .map_err(|e| self.fail(r, "signature", format!("the envelope does not verify: {e}")))?;
        let h = verified.header().clone();
        if h.msg_id != msg_id
            || h.sender != sender
            || h.channel != channel
            || h.sent_at_ms != sent_at_ms
        {
            return Err(self.fail(
                r,
                "header",
                "msg_id, sender, channel or sent_at_ms differ from the signed header",
            ));
        }
        let epoch = h.roster_epoch.unwrap_or(0);
        let recipients: Vec<(String, Option<String>)> = verified
            .recipient_devices()
            .map(|(p, d)| (p.to_string(), d.map(str::to_string)))
            .collect();
        let (me, my_device) = (&self.report.participant, &self.report.device);
        match direction {
            Direction::Sent => {
                let from_here =
                    h.sender == *me && h.sender_device.as_deref().is_none_or(|d| d == my_device);
                if !from_here {
                    return Err(self.fail(
                        r,
                        "recipient",
                        format!(
                            "a sent record of {}/{} signed by {}/{}",
                            me,
                            my_device,
                            h.sender,
                            h.sender_device.as_deref().unwrap_or("-")
                        ),
                    ));
                }
            }
            // Not addressed to this archive: carried by the Share before it
            // (checked below, once the content key is known).
            Direction::Shared => {}
            Direction::Received => {
                let addressed = recipients
                    .iter()
                    .any(|(p, d)| p == me && d.as_deref().is_none_or(|d| d == my_device));
                if !addressed {
                    return Err(self.fail(
                        r,
                        "recipient",
                        format!("{me}/{my_device} is not among the envelope's recipients"),
                    ));
                }
            }
        }

        // The content: the content key must match the signed commitment,
        // decrypt the ciphertext, and every exported field must be exactly
        // what decrypted.
        let key_hex = obj
            .get("content_key")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                self.fail(
                    r,
                    "content_key",
                    "no content key: the content of this record cannot be proven",
                )
            })?;
        let content_key: [u8; 32] = hex::decode(key_hex)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| self.fail(r, "content_key", "not 64 hex digits"))?;
        let opened = verified.open_with_content_key(&content_key).map_err(|e| {
            self.fail(
                r,
                "content_key",
                format!("the content key does not open the envelope: {e}"),
            )
        })?;
        let shared_proven = direction == Direction::Shared
            && self.check_shared(
                r,
                index,
                &verified,
                &envelope,
                &content_key,
                opened.message().tlp,
            )?;
        let rendered = message_fields(opened.message(), true);
        for field in CONTENT_FIELDS {
            if obj.get(*field) != rendered.get(*field) {
                return Err(self.fail(
                    r,
                    "content",
                    format!("{field} differs from the signed, encrypted content"),
                ));
            }
        }
        self.report.contents += 1;
        self.report.attachments += opened.message().attachments.len() as u64;
        if shared_proven {
            self.report.shared += 1;
        }
        // Only a Share this device received vouches for the next record.
        if let (
            tallinn_common::message::Kind::Share {
                envelope: original,
                content_key: original_key,
            },
            Direction::Received,
        ) = (&opened.message().kind, direction)
        {
            self.last_share = Some(LastShare {
                index,
                envelope: original.clone(),
                key: *original_key,
                header: h.clone(),
            });
        }

        // Every wrap recomputed from the content key: each listed device,
        // the beneficiary's included, was given this same key.
        if h.version >= 2 {
            let state = log
                .state_at(epoch)
                .ok_or_else(|| self.fail(r, "wrap", format!("no state for epoch {epoch}")))?;
            verified.verify_wraps(&content_key, state).map_err(|e| {
                self.fail(
                    r,
                    "wrap",
                    format!("a wrap does not derive from the content key: {e}"),
                )
            })?;
            self.report.wraps += recipients.len() as u64;
        }

        // The record hash, recomputed from the proven content.
        let in_record = match obj.get("content_key_in_record") {
            Some(Value::Bool(b)) => *b,
            _ => return Err(self.fail(r, "format", "content_key_in_record is not a boolean")),
        };
        let record = Record {
            index,
            prev_hash,
            direction,
            seq,
            received_at_ms,
            msg_id,
            sender,
            channel,
            sent_at_ms,
            message: opened.message().clone(),
            envelope,
            content_key: in_record.then_some(content_key),
        };
        if record.hash() != record_hash {
            return Err(self.fail(
                r,
                "record_hash",
                "record_hash is not the hash of the record's fields",
            ));
        }

        // The relay's receipt: signed with relay_key of the envelope's
        // epoch (or the next one: accepted in the grace period after an
        // amendment), for this msg_id, these bytes and this seq.
        if direction == Direction::Sent {
            self.report.sent += 1;
        }
        match obj.get("receipt_b64") {
            None | Some(Value::Null) => {
                if direction == Direction::Sent {
                    self.report.sent_without_receipt += 1;
                }
            }
            Some(Value::String(s)) => {
                if direction != Direction::Sent {
                    return Err(self.fail(r, "receipt", "a receipt on a received record"));
                }
                let receipt = B64
                    .decode(s)
                    .ok()
                    .and_then(|b| Receipt::from_bytes(&b).ok())
                    .ok_or_else(|| self.fail(r, "receipt", "malformed receipt"))?;
                let keys: Vec<[u8; 32]> = [log.state_at(epoch), log.state_at(epoch + 1)]
                    .into_iter()
                    .flatten()
                    .map(|s| s.relay_key().to_bytes())
                    .collect();
                let good = keys
                    .iter()
                    .any(|k| receipt.verify_for(k, &msg_id, &record.envelope).is_ok());
                if !good {
                    let why = keys
                        .first()
                        .map(|k| receipt.verify_for(k, &msg_id, &record.envelope))
                        .and_then(Result::err)
                        .map_or_else(|| "no relay key".to_string(), |e| e.to_string());
                    return Err(self.fail(r, "receipt", why));
                }
                if receipt.body.seq != seq {
                    return Err(self.fail(
                        r,
                        "receipt",
                        format!(
                            "the receipt says seq {}, the record {seq}",
                            receipt.body.seq
                        ),
                    ));
                }
                self.report.receipts += 1;
            }
            Some(_) => return Err(self.fail(r, "receipt", "not a base64 string")),
        }
        Ok(RecordSummary {
            index,
            msg_id: Some(msg_id),
            seq,
            direction: Some(direction),
            recipients,
            envelope_hash: tallinn_common::evidence::envelope_hash(&record.envelope),
            withheld_tlp: false,
        })
    }

    /// A `shared` record: the record right before it is the `Share` that
    /// carried exactly this envelope and content key. If that record is
    /// redacted (retention), the provenance cannot be shown and the record
    /// counts as received history only; anything else is a failure.
    fn check_shared(
        &self,
        r: Option<u64>,
        index: u64,
        verified: &VerifiedEnvelope,
        envelope: &[u8],
        content_key: &[u8; 32],
        tlp: tallinn_common::message::Tlp,
    ) -> Result<bool, Failure> {
        let previous = index
            .checked_sub(1)
            .and_then(|i| self.records.get(usize::try_from(i).ok()?));
        if let Some(p) = previous {
            if p.msg_id.is_none() {
                // A Share is at most AMBER: one withheld for TLP:RED never
                // carried a shared record.
                if p.withheld_tlp {
                    return Err(self.fail(
                        r,
                        "share",
                        "a shared record follows a record withheld for TLP:RED, which cannot be its Share",
                    ));
                }
                return Ok(false);
            }
        }
        let Some(share) = self.last_share.as_ref().filter(|s| s.index + 1 == index) else {
            return Err(self.fail(
                r,
                "share",
                "a shared record must follow the received Share that carried it",
            ));
        };
        if share.envelope != envelope || share.key != *content_key {
            return Err(self.fail(
                r,
                "share",
                "the Share before this shared record carries another envelope or content key",
            ));
        }
        // The sharing rules, against the roster of the Share's epoch.
        let log = self
            .log
            .as_ref()
            .ok_or_else(|| self.fail(r, "roster_log", "no roster log"))?;
        let state = log
            .state_for(&share.header)
            .map_err(|e| self.fail(r, "share", e.to_string()))?;
        tallinn_common::envelope::share::check_order(&share.header, verified.header())
            .and_then(|()| {
                tallinn_common::envelope::share::check_share(
                    state,
                    &share.header.sender,
                    &share.header.channel,
                    verified,
                    tlp,
                )
            })
            .map_err(|e| self.fail(r, "share", e.to_string()))?;
        Ok(true)
    }

    /// A checkpoint: signed by the exported device with its key of the
    /// checkpoint's epoch, and its head on the chain.
    fn checkpoint(
        &self,
        c: &SignedCheckpoint,
        source: &'static str,
    ) -> Result<CheckpointSeen, Failure> {
        let fail = |d: String| Failure::general("checkpoint", format!("({source}) {d}"));
        let body = c.decode().map_err(|e| fail(e.to_string()))?;
        if body.participant != self.report.participant || body.device != self.report.device {
            return Err(fail(format!(
                "signed for {}/{}, the export is of {}/{}",
                body.participant, body.device, self.report.participant, self.report.device
            )));
        }
        let log = self
            .log
            .as_ref()
            .ok_or_else(|| fail("no roster log".into()))?;
        let state = log.state_at(body.roster_epoch).ok_or_else(|| {
            fail(format!(
                "signed at roster epoch {}, beyond the export's roster log (epoch {})",
                body.roster_epoch,
                log.epoch()
            ))
        })?;
        let device = state
            .device(&body.participant, &body.device)
            .ok_or_else(|| {
                fail(format!(
                    "the device is not in the roster at epoch {}",
                    body.roster_epoch
                ))
            })?;
        c.verify(device.sign_key.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        let n = self.hashes.len() as u64;
        if body.index > n {
            return Err(fail(format!(
                "it covers {} records, the export holds {n}: records are missing \
                 (a truncated archive, or an older copy)",
                body.index
            )));
        }
        let at = match body.index.checked_sub(1) {
            None => [0; 32],
            Some(i) => self.hashes.get(i as usize).copied().unwrap_or([0; 32]),
        };
        if at != body.head_hash {
            return Err(fail(format!(
                "its head {} is not record {}'s hash {}: the chain differs from what the device signed",
                hex::encode(body.head_hash),
                body.index.saturating_sub(1),
                hex::encode(at)
            )));
        }
        Ok(CheckpointSeen {
            source,
            index: body.index,
            head_hash: hex::encode(body.head_hash),
            time_ms: body.time_ms,
        })
    }

    fn unknown_members(
        &self,
        obj: &Map<String, Value>,
        allowed: &[&str],
        record: Option<u64>,
    ) -> Result<(), Failure> {
        let allowed: BTreeSet<&str> = allowed.iter().copied().collect();
        match obj.keys().find(|k| !allowed.contains(k.as_str())) {
            Some(k) => Err(self.fail(record, "format", format!("unexpected member {k:?}"))),
            None => Ok(()),
        }
    }

    fn string(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        record: Option<u64>,
    ) -> Result<String, Failure> {
        obj.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                self.fail(
                    record,
                    "format",
                    format!("{key} is missing or not a string"),
                )
            })
    }

    fn number(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        record: Option<u64>,
    ) -> Result<u64, Failure> {
        obj.get(key).and_then(Value::as_u64).ok_or_else(|| {
            self.fail(
                record,
                "format",
                format!("{key} is missing or not a number"),
            )
        })
    }

    fn hash(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        record: Option<u64>,
    ) -> Result<[u8; 32], Failure> {
        obj.get(key)
            .and_then(Value::as_str)
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| self.fail(record, "format", format!("{key} is not 64 hex digits")))
    }
}
