//! What an audit found, as text for a person and JSON for a tool. Every
//! string taken from an export is escaped before it reaches a terminal.

use serde_json::{json, Value};
use tallinn_common::text::escape_line as esc;

/// The first check that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 1-based line of the export it was found on (0: not tied to a line).
    pub line: u64,
    /// The record index, where the failure is about one record.
    pub record: Option<u64>,
    /// The record's msg_id (hex), where known.
    pub msg_id: Option<String>,
    /// Which check: `format`, `deployment`, `roster_log`, `chain`,
    /// `signature`, `header`, `content_key`, `content`, `wrap`, `recipient`,
    /// `record_hash`, `receipt`, `head`, `checkpoint`, `count`, `missing`.
    pub check: &'static str,
    /// What exactly is wrong.
    pub detail: String,
}

impl Failure {
    /// A failure of the export as a whole.
    pub fn general(check: &'static str, detail: impl Into<String>) -> Self {
        Failure {
            line: 0,
            record: None,
            msg_id: None,
            check,
            detail: detail.into(),
        }
    }

    /// One line (the record it holds, if known).
    pub fn at(
        line: u64,
        record: Option<u64>,
        check: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Failure {
            line,
            record,
            msg_id: None,
            check,
            detail: detail.into(),
        }
    }

    /// The same failure, naming the record's msg_id.
    pub fn with_msg_id(mut self, msg_id: String) -> Self {
        self.msg_id = Some(msg_id);
        self
    }

    /// One line of text.
    pub fn text(&self) -> String {
        let mut where_ = String::new();
        if let Some(r) = self.record {
            where_.push_str(&format!("record {r}"));
            if let Some(m) = &self.msg_id {
                where_.push_str(&format!(" (msg {})", esc(m)));
            }
            where_.push_str(&format!(", line {}: ", self.line));
        } else if self.line > 0 {
            where_.push_str(&format!("line {}: ", self.line));
        }
        format!("{where_}{}: {}", self.check, esc(&self.detail))
    }

    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "line": self.line,
            "record": self.record,
            "msg_id": self.msg_id,
            "check": self.check,
            "detail": self.detail,
        })
    }
}

/// A checkpoint that was checked, and against what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSeen {
    /// `export` (line 1) or `file` (given with `--checkpoint`).
    pub source: &'static str,
    /// Records it covers.
    pub index: u64,
    /// Its head hash, hex.
    pub head_hash: String,
    /// Its signing time, ms since the epoch (device clock).
    pub time_ms: u64,
}

/// The result of verifying one export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The export's file name, as given.
    pub export: String,
    /// Whose archive.
    pub participant: String,
    /// Which device.
    pub device: String,
    /// The deployment fingerprint checked against, hex.
    pub deployment: String,
    /// Roster-log entries verified (the epoch is one less).
    pub roster_entries: u64,
    /// Record lines read.
    pub records: u64,
    /// Of which redacted.
    pub redacted: u64,
    /// Of which sent by this device.
    pub sent: u64,
    /// Sent records with a receipt that verified.
    pub receipts: u64,
    /// Sent records without a receipt (accepted as a duplicate, or written
    /// before receipts existed).
    pub sent_without_receipt: u64,
    /// Contents proven against their content key and commitment.
    pub contents: u64,
    /// Wraps recomputed and found identical.
    pub wraps: u64,
    /// Attachments whose size and SHA-256 were checked.
    pub attachments: u64,
    /// Checkpoints checked against the chain.
    pub checkpoints: Vec<CheckpointSeen>,
    /// Records shared with this archive (history for a late joiner) whose
    /// `Share` was checked to carry exactly that envelope and content key.
    pub shared: u64,
    /// Records left out of the export for their TLP label (redacted lines
    /// that keep their marking).
    pub withheld_tlp: u64,
    /// Legal holds the export declares.
    pub holds: u64,
    /// Archive recoveries the export declares.
    pub recoveries: u64,
    /// The first failure, if any: `None` means everything holds.
    pub failure: Option<Failure>,
}

impl Report {
    /// Whether every check held.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// A text report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let status = if self.ok() { "VERIFIED" } else { "FAILED" };
        out.push_str(&format!("{status}: {}\n", esc(&self.export)));
        if !self.participant.is_empty() {
            out.push_str(&format!(
                "  archive of {}/{}, deployment {}\n",
                esc(&self.participant),
                esc(&self.device),
                self.deployment
            ));
        }
        out.push_str(&format!(
            "  roster log: {} entries from the pinned genesis\n",
            self.roster_entries
        ));
        if self.ok() {
            out.push_str(&format!(
                "  records: {} ({} redacted), chain and hashes checked\n",
                self.records, self.redacted
            ));
        } else {
            out.push_str(&format!(
                "  records that held before the failure: {} ({} redacted)\n",
                self.records, self.redacted
            ));
        }
        out.push_str(&format!(
            "  contents proven by content key: {}; wraps recomputed: {}; attachments: {}\n",
            self.contents, self.wraps, self.attachments
        ));
        out.push_str(&format!(
            "  sent: {}, with a valid relay receipt: {}, without: {}\n",
            self.sent, self.receipts, self.sent_without_receipt
        ));
        if self.shared > 0 || self.withheld_tlp > 0 {
            out.push_str(&format!(
                "  shared history: {} records, each carried by the Share before it; left out for their TLP label: {}\n",
                self.shared, self.withheld_tlp
            ));
        }
        for c in &self.checkpoints {
            out.push_str(&format!(
                "  checkpoint ({}): {} records, head {}, signed {}\n",
                c.source,
                c.index,
                c.head_hash,
                utc(c.time_ms)
            ));
        }
        if self.checkpoints.is_empty() {
            out.push_str(
                "  checkpoint: none (the head is anchored by nothing outside the export)\n",
            );
        }
        out.push_str(&format!(
            "  legal holds: {}; archive recoveries: {}\n",
            self.holds, self.recoveries
        ));
        if let Some(f) = &self.failure {
            out.push_str(&format!("  FIRST FAILURE: {}\n", f.text()));
        }
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        json!({
            "export": self.export,
            "ok": self.ok(),
            "participant": self.participant,
            "device": self.device,
            "deployment": self.deployment,
            "roster_entries": self.roster_entries,
            "records": self.records,
            "redacted": self.redacted,
            "sent": self.sent,
            "receipts": self.receipts,
            "sent_without_receipt": self.sent_without_receipt,
            "contents": self.contents,
            "wraps": self.wraps,
            "attachments": self.attachments,
            "checkpoints": self.checkpoints.iter().map(|c| json!({
                "source": c.source,
                "index": c.index,
                "head_hash": c.head_hash,
                "time_ms": c.time_ms,
            })).collect::<Vec<_>>(),
            "shared": self.shared,
            "withheld_tlp": self.withheld_tlp,
            "holds": self.holds,
            "recoveries": self.recoveries,
            "failure": self.failure.as_ref().map(Failure::json),
        })
    }
}

/// The result of a cross-check of several exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrossReport {
    /// Each export's own verification.
    pub exports: Vec<Report>,
    /// (message, recipient export) pairs checked.
    pub checked: u64,
    /// Found in the recipient's export.
    pub found: u64,
    /// Covered by a redacted range of the recipient's export.
    pub in_redacted_range: u64,
    /// Not expected yet: the recipient's export ends before the message's seq.
    pub not_yet_delivered: u64,
    /// Accepted with seq 0 (answered `duplicate`): cannot be placed.
    pub unplaceable: u64,
    /// The first failure, if any.
    pub failure: Option<Failure>,
}

impl CrossReport {
    /// Whether every export verified and nothing is missing.
    pub fn ok(&self) -> bool {
        self.failure.is_none() && self.exports.iter().all(Report::ok)
    }

    /// A text report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.exports {
            out.push_str(&r.text());
        }
        let status = if self.ok() { "CONSISTENT" } else { "FAILED" };
        out.push_str(&format!(
            "{status}: {} exports cross-checked\n  deliveries checked: {}; found: {}; in a redacted range: {}; not yet delivered when exported: {}; unplaceable (no seq): {}\n",
            self.exports.len(),
            self.checked,
            self.found,
            self.in_redacted_range,
            self.not_yet_delivered,
            self.unplaceable
        ));
        if let Some(f) = &self.failure {
            out.push_str(&format!("  FIRST FAILURE: {}\n", f.text()));
        }
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        json!({
            "ok": self.ok(),
            "exports": self.exports.iter().map(Report::json).collect::<Vec<_>>(),
            "checked": self.checked,
            "found": self.found,
            "in_redacted_range": self.in_redacted_range,
            "not_yet_delivered": self.not_yet_delivered,
            "unplaceable": self.unplaceable,
            "failure": self.failure.as_ref().map(Failure::json),
        })
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of unix milliseconds (proleptic Gregorian;
/// Howard Hinnant's days-to-civil), so the report needs no time crate.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_renders_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_796_327_136_842), "2026-12-03 19:45:36 UTC");
    }
}
