//! Retention and legal holds: an expired record is redacted (its content
//! replaced by its hash, so the chain still verifies), unless a legal hold
//! covers it. Holds are recorded in the archive and never deleted: releasing
//! one marks it released.
//!
//! | key | value |
//! |---|---|
//! | `b'X' index:u64be` | sealed `postcard(Redacted)` in place of `b'R' index`, aad `"tallinn/2 archive redacted" ‖ index` |
//! | `b'G' n:u64be` | sealed `postcard(Hold)`, aad `"tallinn/2 archive hold" ‖ n` |
//!
//! Redacting a record removes its value and its index entries (channel,
//! sender, kind, read mark) in one sled batch with the stub; the msg_id and
//! thread entries stay (a redelivery is still a duplicate, and a thread is
//! still followed through the stub).
//!
//! A record's age is the later of the relay's `received_at_ms` and the
//! sender's signed `sent_at_ms`: a relay cannot get a record redacted early
//! by backdating its delivery.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use tallinn_common::message::MsgId;

use super::crypto::aad;
use super::keys::key_u64;
use super::{kind_code, Archive, ArchiveError, Record};

const REDACTED_AAD: &[u8] = b"tallinn/2 archive redacted";
const HOLD_AAD: &[u8] = b"tallinn/2 archive hold";

/// What is left of a redacted record: its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redacted {
    /// Its index.
    pub index: u64,
    /// The previous record's hash.
    pub prev_hash: [u8; 32],
    /// Its own hash (the next record's `prev_hash`).
    pub record_hash: [u8; 32],
    /// Its msg_id, so a thread (a legal hold on it, `export --thread`) is
    /// still followed through it.
    pub msg_id: MsgId,
    /// When it was redacted, ms (device clock).
    pub redacted_at_ms: u64,
    /// Why (`retention: 30 days for channel plenary`).
    pub reason: String,
}

/// One position of the archive.
#[derive(Debug)]
pub enum Entry {
    /// A full record.
    Record(Box<Record>),
    /// A redacted one.
    Redacted(Redacted),
}

impl Entry {
    /// Its index.
    pub fn index(&self) -> u64 {
        match self {
            Entry::Record(r) => r.index,
            Entry::Redacted(x) => x.index,
        }
    }
}

/// What a legal hold covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldScope {
    /// Every record of a channel.
    Channel(String),
    /// Every record from a sender.
    From(String),
    /// A thread: its root and every answer and reference below it.
    Thread(MsgId),
    /// Records received in `[since_ms, until_ms)`.
    Period {
        /// From, ms (inclusive).
        since_ms: u64,
        /// Until, ms (exclusive).
        until_ms: u64,
    },
}

/// A legal hold: while in force, nothing it covers is redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Its number (1, 2, ...).
    pub id: u64,
    /// When it was placed, ms.
    pub created_at_ms: u64,
    /// Why (a case reference).
    pub reason: String,
    /// What it covers.
    pub scope: HoldScope,
    /// When it was released, if it was.
    pub released_at_ms: Option<u64>,
}

/// How long records are kept: days for every channel, with overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retention {
    /// Days for every channel (`None`: forever).
    pub days: Option<f64>,
    /// Days for these channels instead.
    pub by_channel: BTreeMap<String, f64>,
}

impl Retention {
    /// The retention of `channel`, in days (`None`: forever).
    pub fn days_for(&self, channel: &str) -> Option<f64> {
        self.by_channel.get(channel).copied().or(self.days)
    }

    /// Whether anything expires at all.
    pub fn is_forever(&self) -> bool {
        self.days.is_none() && self.by_channel.is_empty()
    }
}

/// What [`Archive::apply_retention`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Records redacted now.
    pub redacted: u64,
    /// Expired records kept because a hold covers them.
    pub held: u64,
}

impl Archive {
    /// The stub of redacted record `index`, if it was redacted.
    ///
    /// # Errors
    /// [`ArchiveError::Unreadable`].
    pub fn redacted(&self, index: u64) -> Result<Option<Redacted>, ArchiveError> {
        let Some(v) = self.tree.get(Self::key(b'X', &[&index.to_be_bytes()]))? else {
            return Ok(None);
        };
        let plain = self
            .sealer
            .open(&v, &aad(REDACTED_AAD, index))
            .ok_or_else(|| ArchiveError::Unreadable(format!("redacted record {index}")))?;
        let x: Redacted = postcard::from_bytes(&plain)
            .map_err(|_| ArchiveError::Unreadable(format!("redacted record {index}")))?;
        if x.index != index {
            return Err(ArchiveError::Unreadable(format!("redacted record {index}")));
        }
        Ok(Some(x))
    }

    /// Every position in archive order, full or redacted.
    ///
    /// # Errors
    /// [`ArchiveError`] (a position with neither is `Unreadable`), or the
    /// callback's error.
    pub fn for_each_entry(
        &self,
        mut f: impl FnMut(Entry) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let mut next = 0u64;
        let emit_redacted_until = |until: u64,
                                   next: &mut u64,
                                   f: &mut dyn FnMut(Entry) -> Result<(), ArchiveError>|
         -> Result<(), ArchiveError> {
            while *next < until {
                let x = self
                    .redacted(*next)?
                    .ok_or_else(|| ArchiveError::Unreadable(format!("record {next} is missing")))?;
                f(Entry::Redacted(x))?;
                *next += 1;
            }
            Ok(())
        };
        for kv in self.tree.scan_prefix(b"R") {
            let (k, v) = kv?;
            let index = key_u64(&k).ok_or_else(|| ArchiveError::Unreadable("record key".into()))?;
            emit_redacted_until(index, &mut next, &mut f)?;
            f(Entry::Record(Box::new(self.decode_record(index, &v)?)))?;
            next = index + 1;
        }
        emit_redacted_until(self.len(), &mut next, &mut f)
    }

    /// Replaces a record by its stub: one sled batch writes the stub and
    /// removes the record and its index entries (not its msg_id entry).
    /// Durable with the next flush.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn redact(&self, r: &Record, reason: &str, now_ms: u64) -> Result<(), ArchiveError> {
        self.writable()?;
        let _guard = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        let stub = Redacted {
            index: r.index,
            prev_hash: r.prev_hash,
            record_hash: r.hash(),
            msg_id: r.msg_id,
            redacted_at_ms: now_ms,
            reason: reason.to_string(),
        };
        let plain = postcard::to_allocvec(&stub)
            .map_err(|e| ArchiveError::Unreadable(format!("redacted record: {e}")))?;
        let ib = r.index.to_be_bytes();
        let mut batch = sled::Batch::default();
        batch.insert(
            Self::key(b'X', &[&ib]),
            self.sealer.seal(&plain, &aad(REDACTED_AAD, r.index)),
        );
        batch.remove(Self::key(b'R', &[&ib]));
        // The thread links (`p`) stay, so a thread is still followed
        // through the stub; the channel, sender and kind entries go.
        for k in self.index_keys(r) {
            if k.first() != Some(&b'p') {
                batch.remove(k);
            }
        }
        batch.remove(Self::key(b'r', &[&self.tok("read", &r.msg_id.0)]));
        batch.remove(Self::key(b'Y', &[&ib]));
        // The tracker is incomplete until its case is redone (a crash in
        // between makes the next listing rebuild it from the records).
        let tracked = self.tracker_built()?;
        if tracked {
            batch.remove(super::tracker::BUILT_KEY);
        }
        self.tree.apply_batch(batch)?;
        if tracked {
            self.untrack_case(r)?;
            self.mark_tracker_built()?;
        }
        Ok(())
    }

    /// The index keys of a record other than its msg_id entry.
    pub(super) fn index_keys(&self, r: &Record) -> Vec<Vec<u8>> {
        let ib = r.index.to_be_bytes();
        let tb = r.received_at_ms.to_be_bytes();
        let mut keys = vec![
            Self::key(
                b'c',
                &[&self.tok("channel", r.channel.as_bytes()), &tb, &ib],
            ),
            Self::key(b's', &[&self.tok("sender", r.sender.as_bytes()), &tb, &ib]),
            Self::key(b'k', &[&[kind_code(&r.message.kind)], &tb, &ib]),
        ];
        for p in [r.message.reply_to, r.message.kind.refers_to()]
            .into_iter()
            .flatten()
        {
            keys.push(Self::key(b'p', &[&self.tok("msg", &p.0), &ib]));
        }
        keys
    }

    /// Places a legal hold (durable before it returns); its id.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn add_hold(
        &self,
        scope: HoldScope,
        reason: &str,
        now_ms: u64,
    ) -> Result<u64, ArchiveError> {
        let id = self.holds()?.len() as u64 + 1;
        self.put_hold(&Hold {
            id,
            created_at_ms: now_ms,
            reason: reason.to_string(),
            scope,
            released_at_ms: None,
        })?;
        Ok(id)
    }

    /// Releases hold `id` (kept, marked released); false if there is none
    /// in force with that id.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn release_hold(&self, id: u64, now_ms: u64) -> Result<bool, ArchiveError> {
        let Some(mut h) = self.holds()?.into_iter().find(|h| h.id == id) else {
            return Ok(false);
        };
        if h.released_at_ms.is_some() {
            return Ok(false);
        }
        h.released_at_ms = Some(now_ms);
        self.put_hold(&h)?;
        Ok(true)
    }

    fn put_hold(&self, h: &Hold) -> Result<(), ArchiveError> {
        let plain =
            postcard::to_allocvec(h).map_err(|e| ArchiveError::Unreadable(format!("hold: {e}")))?;
        self.tree.insert(
            Self::key(b'G', &[&h.id.to_be_bytes()]),
            self.sealer.seal(&plain, &aad(HOLD_AAD, h.id)),
        )?;
        self.flush()
    }

    /// Every hold ever placed, in force or released, by id.
    ///
    /// # Errors
    /// [`ArchiveError::Unreadable`].
    pub fn holds(&self) -> Result<Vec<Hold>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"G") {
            let (k, v) = kv?;
            let id = key_u64(&k).ok_or_else(|| ArchiveError::Unreadable("hold key".into()))?;
            let plain = self
                .sealer
                .open(&v, &aad(HOLD_AAD, id))
                .ok_or_else(|| ArchiveError::Unreadable(format!("hold {id}")))?;
            out.push(
                postcard::from_bytes(&plain)
                    .map_err(|_| ArchiveError::Unreadable(format!("hold {id}")))?,
            );
        }
        Ok(out)
    }

    /// Redacts every record older than its channel's retention that no hold
    /// in force covers; flushed before it returns.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn apply_retention(
        &self,
        policy: &Retention,
        now_ms: u64,
    ) -> Result<RetentionReport, ArchiveError> {
        let mut report = RetentionReport::default();
        if policy.is_forever() {
            return Ok(report);
        }
        let holds: Vec<Hold> = self
            .holds()?
            .into_iter()
            .filter(|h| h.released_at_ms.is_none())
            .collect();
        let mut threads: HashSet<MsgId> = HashSet::new();
        for h in &holds {
            if let HoldScope::Thread(id) = &h.scope {
                threads.extend(self.thread(id)?.iter().map(|r| r.msg_id));
                threads.insert(*id);
            }
        }
        // A Share is governed by the original it carries (its content key
        // would otherwise outlive the original's redaction, or the other
        // way round): the original's channel, sender, id and time.
        let governing = |r: &Record| -> (String, String, MsgId, u64) {
            match tallinn_common::envelope::share::original_header(&r.message) {
                Some(h) => (h.channel, h.sender, h.msg_id, h.sent_at_ms),
                None => (r.channel.clone(), r.sender.clone(), r.msg_id, r.sent_at_ms),
            }
        };
        let held = |r: &Record| {
            let (channel, sender, msg_id, sent_at_ms) = governing(r);
            holds.iter().any(|h| match &h.scope {
                HoldScope::Channel(c) => *c == channel,
                HoldScope::From(p) => *p == sender,
                HoldScope::Thread(_) => threads.contains(&msg_id),
                HoldScope::Period { since_ms, until_ms } => {
                    (*since_ms..*until_ms).contains(&r.received_at_ms)
                        || (*since_ms..*until_ms).contains(&sent_at_ms)
                }
            })
        };
        let mut expired = Vec::new();
        self.for_each(|r| {
            let (channel, _, _, sent_at_ms) = governing(&r);
            if let Some(days) = policy.days_for(&channel) {
                let keep_ms = (days * 86_400_000.0) as u64;
                let at = r.received_at_ms.max(sent_at_ms);
                if at.saturating_add(keep_ms) <= now_ms {
                    if held(&r) {
                        report.held += 1;
                    } else {
                        expired.push((r.index, days));
                    }
                }
            }
            Ok(())
        })?;
        for (index, days) in expired {
            let Some(r) = self.record(index)? else {
                continue;
            };
            self.redact(
                &r,
                &format!("retention: {days} days for channel {}", r.channel),
                now_ms,
            )?;
            report.redacted += 1;
        }
        self.flush()?;
        Ok(report)
    }
}
