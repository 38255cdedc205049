//! One export, line by line, from the pinned genesis to the signed head.
//! The walk stops at the first check that does not hold and names it; every
//! check is one of `tallinn-common`'s own (signature, commitment, wraps,
//! record hash), so the auditor and the client cannot disagree about the
//! rules, only about the facts.

use std::io::BufRead;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;
use tallinn_common::evidence::export::{
    checkpoint_from_b64, EXPORT_TYPE, EXPORT_VERSION, HEADER_FIELDS, RECORD_FIELDS, REDACTED_FIELDS,
};
use tallinn_common::evidence::{Direction, SignedCheckpoint};
use tallinn_common::message::MsgId;
use tallinn_common::roster::{RosterLog, SignedEntry};

use crate::report::{Failure, Report};

mod checkpoint;
mod fields;
mod record;

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
}
