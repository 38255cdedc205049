//! Several exports against each other: what one party's archive shows the
//! relay accepted for a conversation must reach every other party that was
//! sealed to. A relay that withholds a message from one recipient, or a
//! recipient whose archive lost it, shows here.
//!
//! For each message M of export A (received or sent: both were accepted by
//! the relay, under seq S) and each other export B whose device M was sealed
//! to, B must hold M's msg_id, unless
//! - B's archive ends before S (its highest received seq is below S: not delivered
//!   yet when B was exported; counted, not a failure), or
//! - a redacted run of B lies where S would be (between the seqs of the
//!   records around the run), so M may be one of the redacted records, or
//! - S is 0 (a resend answered `duplicate`: its seq is unknown).
//!
//! Relay seqs are global and a device receives its messages in seq order,
//! so a message missing from B although B holds a later seq was withheld.

use std::collections::HashMap;

use tallinn_common::evidence::Direction;
use tallinn_common::message::MsgId;

use crate::report::{CrossReport, Failure};
use crate::verify::{RecordSummary, Verified};

/// One export's records, indexed for the look-ups below.
struct Holder<'a> {
    participant: &'a str,
    device: &'a str,
    /// msg_id -> (seq, envelope hash) of its full records.
    ids: HashMap<MsgId, (u64, [u8; 32])>,
    max_seq: u64,
    /// Seq ranges (exclusive bounds) that a redacted run may hide.
    redacted: Vec<(u64, u64)>,
}

impl<'a> Holder<'a> {
    fn new(v: &'a Verified) -> Self {
        let records = &v.records;
        let ids = records
            .iter()
            .filter_map(|r| {
                // A shared record carries its Share's seq, not the
                // original's: unknown here (0), so only its bytes compare.
                let seq = if r.direction == Some(Direction::Shared) {
                    0
                } else {
                    r.seq
                };
                r.msg_id.map(|m| (m, (seq, r.envelope_hash)))
            })
            .collect();
        // Received records only: a device receives in seq order, but its own
        // sends may be accepted (with later seqs) before its backlog arrives.
        let max_seq = records
            .iter()
            .filter(|r| r.direction == Some(Direction::Received))
            .map(|r| r.seq)
            .max()
            .unwrap_or(0);
        Holder {
            participant: &v.report.participant,
            device: &v.report.device,
            ids,
            max_seq,
            redacted: redacted_ranges(records),
        }
    }

    fn was_sealed_to(&self, recipients: &[(String, Option<String>)]) -> bool {
        recipients
            .iter()
            .any(|(p, d)| p == self.participant && d.as_deref().is_none_or(|d| d == self.device))
    }
}

/// The seq ranges around each maximal run of redacted records: from the
/// last seq before the run (0 at the start) to the first after it (none at
/// the end).
fn redacted_ranges(records: &[RecordSummary]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < records.len() {
        if records[i].msg_id.is_some() {
            i += 1;
            continue;
        }
        let start = i;
        while i < records.len() && records[i].msg_id.is_none() {
            i += 1;
        }
        // Received records only: they arrive in seq order; a sent record's
        // seq says nothing about where a delivery would sit.
        let received = |r: &&RecordSummary| r.seq > 0 && r.direction == Some(Direction::Received);
        let before = records[..start]
            .iter()
            .rev()
            .find(received)
            .map_or(0, |r| r.seq);
        let after = records[i..]
            .iter()
            .find(received)
            .map_or(u64::MAX, |r| r.seq);
        out.push((before, after));
    }
    out
}

/// Cross-checks verified exports. Every export must have verified on its own
/// first; the first that did not is the failure.
pub fn cross(exports: Vec<Verified>) -> CrossReport {
    let mut report = CrossReport::default();
    if let Some(bad) = exports.iter().find(|v| !v.report.ok()) {
        report.failure = Some(Failure::general(
            "export",
            format!("{} does not verify on its own", bad.report.export),
        ));
        report.exports = exports.into_iter().map(|v| v.report).collect();
        return report;
    }
    let holders: Vec<Holder<'_>> = exports.iter().map(Holder::new).collect();
    'outer: for (a, va) in exports.iter().enumerate() {
        for m in &va.records {
            let Some(id) = m.msg_id else { continue };
            // Shared history says nothing about what the relay delivered.
            if m.direction == Some(Direction::Shared) {
                continue;
            }
            for (b, hb) in holders.iter().enumerate() {
                if a == b || !hb.was_sealed_to(&m.recipients) {
                    continue;
                }
                report.checked += 1;
                if let Some(&(seq, hash)) = hb.ids.get(&id) {
                    // The same message: the same bytes, under the same seq.
                    if hash != m.envelope_hash || (seq != 0 && m.seq != 0 && seq != m.seq) {
                        report.failure = Some(
                            Failure::at(
                                0,
                                Some(m.index),
                                "differs",
                                format!(
                                    "{} holds it as seq {} with envelope sha256 {}, but {} as seq {seq} with {}: \
                                     the relay or the sender gave them different messages under one msg_id",
                                    va.report.export,
                                    m.seq,
                                    hex::encode(m.envelope_hash),
                                    exports[b].report.export,
                                    hex::encode(hash)
                                ),
                            )
                            .with_msg_id(id.to_hex()),
                        );
                        break 'outer;
                    }
                    report.found += 1;
                } else if m.seq == 0 {
                    report.unplaceable += 1;
                } else if hb.max_seq < m.seq {
                    report.not_yet_delivered += 1;
                } else if hb
                    .redacted
                    .iter()
                    .any(|(lo, hi)| *lo < m.seq && m.seq < *hi)
                {
                    report.in_redacted_range += 1;
                } else {
                    report.failure = Some(
                        Failure::at(
                            0,
                            Some(m.index),
                            "missing",
                            format!(
                                "{} shows it accepted by the relay as seq {} for {}/{}, \
                                 but {} lacks it although it received seq {}: withheld by the relay, \
                                 or lost from that archive",
                                va.report.export,
                                m.seq,
                                hb.participant,
                                hb.device,
                                exports[b].report.export,
                                hb.max_seq
                            ),
                        )
                        .with_msg_id(id.to_hex()),
                    );
                    break 'outer;
                }
            }
        }
    }
    report.exports = exports.into_iter().map(|v| v.report).collect();
    report
}
