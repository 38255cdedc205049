//! The archive: every message this device received (and sent), kept
//! verbatim, encrypted at rest, indexed, and hash-chained so that an edited,
//! reordered or deleted record is detected by [`Archive::verify`].
//!
//! # Layout (one sled tree `archive` per identity and device)
//! | key | value |
//! |---|---|
//! | `b'R' index:u64be` | `nonce:[u8;24] ‖ XChaCha20-Poly1305(k_rec, nonce, postcard(Record), aad = "tallinn/1 archive record" ‖ index:u64be)` |
//! | `b'H'` | head: `next_index:u64be ‖ head_hash:[u8;32] ‖ tag:[u8;32]`, tag = HMAC-SHA256(k_head, `"tallinn/1 archive head"` ‖ next_index ‖ head_hash) |
//! | `b'm' tok(msg_id)` | `index:u64be` (dedupe, lookup) |
//! | `b'c' tok(channel) time:u64be index:u64be` | empty (channel + time) |
//! | `b's' tok(sender) time index` | empty (sender + time) |
//! | `b'p' tok(parent msg_id) index` | empty (thread: reply_to, an offer's request, a status's subject) |
//! | `b'k' kind:u8 time index` | empty (0 note, 1 request, 2 offer, 3 status) |
//! | `b'Q' n:u64be` | sealed [`Quarantined`] (same AEAD, aad `"tallinn/1 archive quarantine" ‖ n`) |
//! | `b'q'` | next quarantine number |
//! | `b'z'` | quarantine totals: `entries:u64be ‖ bytes:u64be ‖ evicted:u64be` |
//! | `b'r' tok(msg_id)` | empty: the message was shown (read marks; outside the chain, a person's state, not evidence) |
//! | `b'C'`, `b'O'`, `b'T'`, `b't'` | the request tracker (module `tracker`) |
//! | `b'Y' index:u64be` | `[tlp, max_tlp]`: a received message above its channel's TLP ceiling (flagged, kept) |
//!
//! `time` is the relay's receive time in ms. `tok(x)` is the first 16 bytes of
//! HMAC-SHA256(k_idx, label ‖ 0x00 ‖ x): index keys reveal neither channel
//! names, senders nor message ids to someone holding only the files.
//! `k_rec` = HKDF-SHA256(identity secrets, info `"tallinn/1 archive"`),
//! `k_idx` = the same with info `"tallinn/1 archive index"`, `k_head` with
//! info `"tallinn/1 archive head"`.
//!
//! # Authenticated head
//! A new archive writes its head (0 records, zero hash) and syncs it before
//! any record exists. Opening an archive whose head is missing while the tree
//! holds anything, or whose tag does not verify, never rebuilds a head: the
//! archive opens read-only for inspection, [`Archive::verify`] reports the
//! problem (exit 3) and every insert is refused with
//! [`ArchiveError::HeadInvalid`]. Someone holding only the files can thus not
//! cut the tail (records and head) without it being named. What the head
//! cannot detect alone is a rollback of the *whole* tree to an earlier copy;
//! PROTOCOL.md §12.4 says what anchors that.
//!
//! # Modules
//! - this file: [`Archive`] (open), the error and query types;
//! - `records`: [`Record`], [`Quarantined`] and the record value codecs;
//! - `crypto`: the AEAD of stored values, MACs, the authenticated head;
//! - `keys`: the key layout and index tokens;
//! - `db`: [`ArchiveDb`], sled with an `fdatasync` barrier;
//! - `ingest`: inserting records, head repair, the bounded quarantine;
//! - `search`: lookups, filtered search, threads;
//! - `tracker`: the request tracker's cases and their index;
//! - `verify`: the chain and signature check, statistics.
//!
//! # Hash chain
//! `hash_i = SHA-256("tallinn/1 archive chain" ‖ postcard(Record_i))`, and
//! `Record_i.prev_hash = hash_{i-1}` (zero for the first). The head holds the
//! last hash and the record count. Verification walks the records in order:
//! a missing index (deletion), a record that does not decrypt under its own
//! index (edit or swap), a `prev_hash` that does not match (reorder), a
//! signature that does not verify, or a head that does not match the last
//! record (truncation) is reported with the record's index.

use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tallinn_common::envelope::{Opened, UntrustedEnvelope};
use tallinn_common::identity::Identity;
use tallinn_common::message::{Kind, MsgId, Tlp};
use tallinn_common::roster::Roster;
use zeroize::Zeroizing;

mod crypto;
mod db;
mod evidence;
mod ingest;
mod keys;
mod records;
mod retention;
mod rosterlog;
mod search;
mod secret;
#[cfg(test)]
mod tests;
mod tracker;
#[cfg(test)]
mod tracker_tests;
mod verify;

pub use self::crypto::check_head_value;
pub(crate) use self::crypto::Sealer;
use self::crypto::*;
pub use self::db::ArchiveDb;
pub use self::evidence::Recovery;
use self::keys::*;
pub use self::records::{
    decode_record_plaintext, decode_record_value, seal_record_value, Direction, QuarantineTotals,
    Quarantined, Record,
};
use self::records::{decode_sealed_record, kind_code, kind_from_name};
pub use self::retention::{Entry, Hold, HoldScope, Redacted, Retention, RetentionReport};
pub use self::secret::ArchiveSecret;
pub use self::tracker::{loe_code, priority_code, Case, CaseQuery, CaseScope};

/// Archive failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The database failed (I/O, corruption, or another process holds it).
    #[error("archive database: {0}")]
    Db(#[from] sled::Error),
    /// Another process holds the database (its lock).
    #[error("the archive in {0} is in use by another process")]
    InUse(String),
    /// A record could not be decrypted or decoded.
    #[error("archive record {0} is unreadable (altered, or a different identity's archive)")]
    Unreadable(String),
    /// A lock was poisoned by a panic elsewhere (a bug).
    #[error("archive lock poisoned")]
    Poisoned,
    /// Writing an export failed.
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    /// The head is missing or not authenticated: the archive was altered
    /// outside this software. Reading works; writing is refused.
    #[error("archive head {0}: the archive was altered outside tallinn; run `tallinn archive verify` and restore from a backup")]
    HeadInvalid(String),
}

/// Outcome of an archive insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored under this index.
    New(u64),
    /// Already in the archive under this index.
    Duplicate(u64),
}

/// Search criteria (all optional; combined with AND).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Channel id.
    pub channel: Option<String>,
    /// Sender id.
    pub from: Option<String>,
    /// Kind name: note, request, offer, status.
    pub kind: Option<String>,
    /// TLP label.
    pub tlp: Option<Tlp>,
    /// Received at or after (ms).
    pub since_ms: Option<u64>,
    /// Received before (ms).
    pub until_ms: Option<u64>,
    /// Words that must all appear (case-insensitive) in subject, body or
    /// attachment names.
    pub text: Option<String>,
    /// Only received (or only sent) messages.
    pub direction: Option<Direction>,
    /// Only messages not yet marked read ([`Archive::mark_read`]); sent
    /// messages count as read.
    pub unread_only: bool,
}

/// Result of [`Archive::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// The first problem: record index and description.
    pub first_error: Option<(u64, String)>,
    /// The head hash.
    pub head_hash: [u8; 32],
}

/// Counts for `archive stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Records.
    pub records: u64,
    /// Received records.
    pub received: u64,
    /// Sent records.
    pub sent: u64,
    /// Records shared with us by another participant (history).
    #[serde(default)]
    pub shared: u64,
    /// Received messages whose TLP label is above their channel's
    /// `max_tlp` at the envelope's epoch (flagged, kept).
    #[serde(default)]
    pub tlp_violations: u64,
    /// Quarantined envelopes.
    pub quarantined: u64,
    /// Quarantined envelopes evicted (oldest first) to keep the quarantine
    /// within its bounds.
    pub quarantine_evicted: u64,
    /// Records per channel.
    pub by_channel: std::collections::BTreeMap<String, u64>,
    /// Records per kind.
    pub by_kind: std::collections::BTreeMap<String, u64>,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// Head hash (hex).
    pub head_hash: String,
}

/// The encrypted, indexed, hash-chained archive.
pub struct Archive {
    db: ArchiveDb,
    secret: ArchiveSecret,
    tree: sled::Tree,
    sealer: Sealer,
    index_key: Zeroizing<[u8; 32]>,
    head_key: Zeroizing<[u8; 32]>,
    head: Mutex<Head>,
    /// Why the head cannot be trusted (missing, forged), if so.
    head_problem: Option<String>,
    /// Quarantine bounds: entries, bytes.
    quarantine_limits: (u64, u64),
    /// This archive's participant (whose cases are "mine").
    me: String,
}

impl Archive {
    /// Opens (or creates) the archive in `dir` for `identity`.
    ///
    /// # Errors
    /// [`ArchiveError::Db`] (including "in use by another process").
    pub fn open(dir: &std::path::Path, identity: &Identity) -> Result<Self, ArchiveError> {
        Self::with_db(ArchiveDb::open(dir)?, identity)
    }

    /// Uses an already open database (shared with the outbox).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn with_db(db: ArchiveDb, identity: &Identity) -> Result<Self, ArchiveError> {
        let secret = ArchiveSecret::open(&db, identity)?;
        let tree = db.open_tree("archive")?;
        let rec_key = secret.derive(b"tallinn/1 archive");
        let index_key = secret.derive(b"tallinn/1 archive index");
        let head_key = secret.derive(b"tallinn/1 archive head");
        let empty = Head {
            next_index: 0,
            hash: [0; 32],
        };
        let mut fresh = false;
        let (head, head_problem) = match tree.get(HEAD_KEY)? {
            Some(v) => match decode_head(&head_key, &v) {
                Ok(h) => (h, None),
                Err(why) => (empty, Some(why)),
            },
            // A new archive: nothing at all in the tree.
            None if tree.is_empty() => {
                fresh = true;
                (empty, None)
            }
            None => (
                empty,
                Some("is missing while the archive holds data (deleted)".to_string()),
            ),
        };
        if let Some(why) = &head_problem {
            tracing::error!("archive head {why}: the archive opens read-only");
        }
        let archive = Self {
            db,
            secret,
            tree,
            sealer: Sealer::new(&rec_key),
            index_key,
            head_key,
            head: Mutex::new(head),
            head_problem,
            quarantine_limits: (
                crate::defaults::QUARANTINE_MAX_ENTRIES,
                crate::defaults::QUARANTINE_MAX_BYTES,
            ),
            me: identity.id().to_string(),
        };
        if fresh {
            // The genesis head, durable before any record can exist; the
            // tracker index is complete from the first record on.
            archive.mark_tracker_built()?;
            archive.write_head(0, &[0; 32])?;
            archive.flush()?;
        }
        if archive.head_problem.is_some() {
            return Ok(archive);
        }
        let repaired = archive.repair_head()?;
        if repaired > 0 {
            tracing::info!(
                repaired,
                "completed archive records a crash left unfinished"
            );
        }
        Ok(archive)
    }

    /// The underlying database (for the outbox).
    pub fn db(&self) -> &ArchiveDb {
        &self.db
    }

    /// Whether a msg_id is archived, and under which index.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn lookup(&self, msg_id: &MsgId) -> Result<Option<u64>, ArchiveError> {
        let k = Self::key(b'm', &[&self.tok("msg", &msg_id.0)]);
        Ok(self.tree.get(k)?.and_then(|v| {
            let b: [u8; 8] = v.as_ref().try_into().ok()?;
            Some(u64::from_be_bytes(b))
        }))
    }
}
