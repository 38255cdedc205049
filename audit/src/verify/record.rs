//! A full record line: its envelope verified at its roster epoch, its
//! content against the signed commitment, every wrap, the relay's receipt,
//! the record hash, and a shared record against the `Share` before it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{Map, Value};
use tallinn_common::envelope::{UntrustedEnvelope, VerifiedEnvelope};
use tallinn_common::evidence::export::{message_fields, CONTENT_FIELDS};
use tallinn_common::evidence::{Direction, Receipt, Record};
use tallinn_common::message::MsgId;

use super::{LastShare, RecordSummary, Walk};
use crate::report::Failure;

impl Walk {
    pub(super) fn full_record(
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
}
