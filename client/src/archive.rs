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
use sha2::{Digest, Sha256};
use tallinn_common::envelope::{Opened, UntrustedEnvelope};
use tallinn_common::identity::Identity;
use tallinn_common::message::{Kind, Message, MsgId, Tlp};
use tallinn_common::roster::Roster;
use zeroize::Zeroizing;

/// Archive failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The database failed (I/O, corruption, or another process holds it).
    #[error("archive database: {0}")]
    Db(#[from] sled::Error),
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

/// Whether a record was received or sent by this device's participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Delivered by the relay.
    Received,
    /// Sent by us and accepted by the relay.
    Sent,
}

/// One archived message (the plaintext of an `R` entry).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// Position in the archive (0-based, contiguous).
    pub index: u64,
    /// Hash of the previous record (zero for the first).
    pub prev_hash: [u8; 32],
    /// Received or sent.
    pub direction: Direction,
    /// Relay sequence number (0 if unknown: a resend answered `duplicate`).
    pub seq: u64,
    /// Relay receive time (received) or acceptance time (sent), ms.
    pub received_at_ms: u64,
    /// Message id.
    pub msg_id: MsgId,
    /// Sender id.
    pub sender: String,
    /// Channel id.
    pub channel: String,
    /// Sender's clock at sealing, ms.
    pub sent_at_ms: u64,
    /// The decrypted message.
    pub message: Message,
    /// The envelope bytes exactly as received (or sent).
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    /// For sent messages: the content key, so the copy stays verifiable.
    pub content_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("index", &self.index)
            .field("seq", &self.seq)
            .field("msg_id", &self.msg_id)
            .field("sender", &self.sender)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(k) = self.content_key.as_mut() {
            zeroize::Zeroize::zeroize(k);
        }
    }
}

impl Record {
    /// The chain hash of this record.
    pub fn hash(&self) -> [u8; 32] {
        // invariant: plain data; postcard encoding cannot fail.
        let bytes = postcard::to_allocvec(self).expect("invariant: record encodes");
        Sha256::new()
            .chain_update(b"tallinn/1 archive chain")
            .chain_update(bytes)
            .finalize()
            .into()
    }
}

/// A delivered envelope that failed verification, kept for inspection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quarantined {
    /// Relay sequence number.
    pub seq: u64,
    /// Relay receive time, ms.
    pub received_at_ms: u64,
    /// Why it was refused.
    pub reason: String,
    /// Claimed sender, if the envelope parsed.
    pub claimed_sender: Option<String>,
    /// Claimed channel, if the envelope parsed.
    pub claimed_channel: Option<String>,
    /// The envelope bytes as received.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
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
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Records.
    pub records: u64,
    /// Received records.
    pub received: u64,
    /// Sent records.
    pub sent: u64,
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

/// XChaCha20-Poly1305 sealing of stored values with a random 24-byte nonce.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&(*key).into()),
        }
    }

    pub(crate) fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        // invariant: XChaCha20-Poly1305 only fails for inputs beyond 2^38 bytes.
        let ct = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad })
            .expect("invariant: record far below the AEAD size limit");
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub(crate) fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (nonce, ct) = sealed.split_first_chunk::<24>()?;
        self.cipher
            .decrypt(&XNonce::from(*nonce), Payload { msg: ct, aad })
            .ok()
            .map(Zeroizing::new)
    }
}

fn aad(label: &[u8], n: u64) -> Vec<u8> {
    let mut a = label.to_vec();
    a.extend_from_slice(&n.to_be_bytes());
    a
}

const REC_AAD: &[u8] = b"tallinn/1 archive record";
const QUAR_AAD: &[u8] = b"tallinn/1 archive quarantine";
const HEAD_KEY: &[u8] = b"H";
const HEAD_MAC_LABEL: &[u8] = b"tallinn/1 archive head";
const HEAD_LEN: usize = 8 + 32 + 32;
/// Records read per forward range in a newest-first full scan.
const SCAN_CHUNK: u64 = 512;
const QNEXT_KEY: &[u8] = b"q";
const QTOTALS_KEY: &[u8] = b"z";

/// Entries, bytes and evictions of the quarantine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuarantineTotals {
    /// Entries kept.
    pub entries: u64,
    /// Bytes of the sealed entries kept.
    pub bytes: u64,
    /// Entries evicted so far.
    pub evicted: u64,
}

impl QuarantineTotals {
    fn decode(v: &[u8]) -> Self {
        let word = |i: usize| {
            v.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
        };
        Self {
            entries: word(0),
            bytes: word(1),
            evicted: word(2),
        }
    }

    fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.entries.to_be_bytes());
        out[8..16].copy_from_slice(&self.bytes.to_be_bytes());
        out[16..].copy_from_slice(&self.evicted.to_be_bytes());
        out
    }
}

struct Head {
    next_index: u64,
    hash: [u8; 32],
}

/// The client's sled database (archive and outbox trees) with a real
/// durability barrier: [`ArchiveDb::flush`] is sled's flush followed by an
/// `fdatasync` of its log (see [`tallinn_host::durable`]).
#[derive(Clone)]
pub struct ArchiveDb {
    sled: sled::Db,
    log: std::sync::Arc<tallinn_host::durable::SledLog>,
}

impl ArchiveDb {
    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    /// [`ArchiveError::Db`] (including "in use by another process"),
    /// [`ArchiveError::Io`] if its log file cannot be opened for syncing.
    pub fn open(dir: &std::path::Path) -> Result<Self, ArchiveError> {
        let sled = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(1000))
            .open()?;
        let log = std::sync::Arc::new(tallinn_host::durable::SledLog::open(dir)?);
        Ok(Self { sled, log })
    }

    /// Opens a tree of the database.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, ArchiveError> {
        Ok(self.sled.open_tree(name)?)
    }

    /// Makes every write so far durable: sled's flush, then `fdatasync`.
    ///
    /// # Errors
    /// [`ArchiveError::Db`] or [`ArchiveError::Io`].
    pub fn flush(&self) -> Result<(), ArchiveError> {
        self.sled.flush()?;
        self.log.sync()?;
        Ok(())
    }

    /// Bytes on disk.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn size_on_disk(&self) -> Result<u64, ArchiveError> {
        Ok(self.sled.size_on_disk()?)
    }
}

/// The encrypted, indexed, hash-chained archive.
pub struct Archive {
    db: ArchiveDb,
    tree: sled::Tree,
    sealer: Sealer,
    index_key: Zeroizing<[u8; 32]>,
    head_key: Zeroizing<[u8; 32]>,
    head: Mutex<Head>,
    /// Why the head cannot be trusted (missing, forged), if so.
    head_problem: Option<String>,
    /// Quarantine bounds: entries, bytes.
    quarantine_limits: (u64, u64),
}

/// HMAC-SHA256 under `key` of `parts` concatenated.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // invariant: HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("invariant: HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The tag of a head value.
fn head_tag(key: &[u8; 32], next_index: u64, hash: &[u8; 32]) -> [u8; 32] {
    hmac(key, &[HEAD_MAC_LABEL, &next_index.to_be_bytes(), hash])
}

/// Opens and decodes the sealed value of record `index`.
fn decode_sealed_record(
    sealer: &Sealer,
    index: u64,
    sealed: &[u8],
) -> Result<Record, ArchiveError> {
    let plain = sealer
        .open(sealed, &aad(REC_AAD, index))
        .ok_or_else(|| ArchiveError::Unreadable(index.to_string()))?;
    decode_record_plaintext(index, &plain)
}

/// Decodes the plaintext of record `index` (after its AEAD opened): the
/// record must decode exactly and carry its own index.
///
/// # Errors
/// [`ArchiveError::Unreadable`].
pub fn decode_record_plaintext(index: u64, plain: &[u8]) -> Result<Record, ArchiveError> {
    let r: Record =
        postcard::from_bytes(plain).map_err(|_| ArchiveError::Unreadable(index.to_string()))?;
    if r.index != index {
        return Err(ArchiveError::Unreadable(index.to_string()));
    }
    Ok(r)
}

/// Decodes a stored record value as the archive does, under record key
/// `key` (for the fuzz target and offline tools).
///
/// # Errors
/// [`ArchiveError::Unreadable`] for a value that does not open or decode.
pub fn decode_record_value(
    key: &[u8; 32],
    index: u64,
    sealed: &[u8],
) -> Result<Record, ArchiveError> {
    decode_sealed_record(&Sealer::new(key), index, sealed)
}

/// Seals a record plaintext as the archive stores it (the inverse of
/// [`decode_record_value`]; for the fuzz target and tests).
pub fn seal_record_value(key: &[u8; 32], index: u64, plain: &[u8]) -> Vec<u8> {
    Sealer::new(key).seal(plain, &aad(REC_AAD, index))
}

/// Authenticates and decodes a stored archive head value under the head
/// MAC key (for the fuzz target): `Err` names what is wrong with it.
///
/// # Errors
/// A description of the defect.
pub fn check_head_value(key: &[u8; 32], value: &[u8]) -> Result<(u64, [u8; 32]), String> {
    decode_head(key, value).map(|h| (h.next_index, h.hash))
}

/// Decodes and authenticates a stored head.
fn decode_head(key: &[u8; 32], v: &[u8]) -> Result<Head, String> {
    if v.len() != HEAD_LEN {
        return Err(format!(
            "has {} bytes instead of {HEAD_LEN} (not written by this version, or edited)",
            v.len()
        ));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&v[..8]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&v[8..40]);
    let next_index = u64::from_be_bytes(n);
    let tag = head_tag(key, next_index, &hash);
    // Constant time is not needed against someone who holds the files, but
    // costs nothing.
    let ok = tag
        .iter()
        .zip(&v[40..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0;
    if !ok {
        return Err("is not authenticated (its tag does not verify: forged or edited)".into());
    }
    Ok(Head { next_index, hash })
}

/// The u64 after a one-byte prefix (`"R" index`, `"Q" n`), if the key has
/// exactly that shape.
fn key_u64(key: &[u8]) -> Option<u64> {
    key.get(1..)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

fn kind_code(k: &Kind) -> u8 {
    match k {
        Kind::Note => 0,
        Kind::Request { .. } => 1,
        Kind::Offer { .. } => 2,
        Kind::Status { .. } => 3,
    }
}

fn kind_from_name(s: &str) -> Option<u8> {
    match s {
        "note" => Some(0),
        "request" => Some(1),
        "offer" => Some(2),
        "status" => Some(3),
        _ => None,
    }
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
        let tree = db.open_tree("archive")?;
        let rec_key = identity.derive_storage_key(b"tallinn/1 archive");
        let index_key = identity.derive_storage_key(b"tallinn/1 archive index");
        let head_key = identity.derive_storage_key(b"tallinn/1 archive head");
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
        };
        if fresh {
            // The genesis head, durable before any record can exist.
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

    fn tok(&self, label: &str, value: &[u8]) -> [u8; 16] {
        let full = hmac(&self.index_key, &[label.as_bytes(), &[0], value]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut k = vec![prefix];
        for p in parts {
            k.extend_from_slice(p);
        }
        k
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

    /// Archives a verified, opened delivery. Not durable until [`Archive::flush`].
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn insert_received(
        &self,
        seq: u64,
        received_at_ms: u64,
        opened: &Opened,
    ) -> Result<Inserted, ArchiveError> {
        self.insert(Direction::Received, seq, received_at_ms, opened, false)
            .map(|(i, _)| i)
    }

    /// [`Archive::insert_received`], also returning the new record (without
    /// reading it back), for callers that report it.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn insert_received_record(
        &self,
        seq: u64,
        received_at_ms: u64,
        opened: &Opened,
    ) -> Result<(Inserted, Option<Record>), ArchiveError> {
        self.insert(Direction::Received, seq, received_at_ms, opened, true)
    }

    /// Archives our own accepted message with its content key.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn insert_sent(
        &self,
        seq: u64,
        accepted_at_ms: u64,
        opened: &Opened,
    ) -> Result<Inserted, ArchiveError> {
        self.insert(Direction::Sent, seq, accepted_at_ms, opened, false)
            .map(|(i, _)| i)
    }

    /// Appends a record of `opened`: its exact envelope bytes, header and
    /// message, and for a sent message its content key.
    fn insert(
        &self,
        direction: Direction,
        seq: u64,
        at: u64,
        opened: &Opened,
        want_record: bool,
    ) -> Result<(Inserted, Option<Record>), ArchiveError> {
        self.writable()?;
        let mut head = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        let h = opened.header();
        let content_key = (direction == Direction::Sent).then(|| *opened.content_key());
        if let Some(i) = self.lookup(&h.msg_id)? {
            return Ok((Inserted::Duplicate(i), None));
        }
        let index = head.next_index;
        let record = Record {
            index,
            prev_hash: head.hash,
            direction,
            seq,
            received_at_ms: at,
            msg_id: h.msg_id,
            sender: h.sender.clone(),
            channel: h.channel.clone(),
            sent_at_ms: h.sent_at_ms,
            message: opened.message().clone(),
            envelope: opened.envelope().to_vec(),
            content_key,
        };
        let hash = record.hash();
        // invariant: plain data; postcard encoding cannot fail.
        let plain =
            Zeroizing::new(postcard::to_allocvec(&record).expect("invariant: record encodes"));
        // Plain inserts, record first, head last (see `repair_head`).
        self.tree.insert(
            Self::key(b'R', &[&index.to_be_bytes()]),
            self.sealer.seal(&plain, &aad(REC_AAD, index)),
        )?;
        self.write_index(&record)?;
        self.write_head(index + 1, &hash)?;
        head.next_index = index + 1;
        head.hash = hash;
        Ok((Inserted::New(index), want_record.then_some(record)))
    }

    /// Writes the index entries of a record (idempotent).
    fn write_index(&self, r: &Record) -> Result<(), ArchiveError> {
        let ib = r.index.to_be_bytes();
        let tb = r.received_at_ms.to_be_bytes();
        self.tree
            .insert(Self::key(b'm', &[&self.tok("msg", &r.msg_id.0)]), &ib[..])?;
        self.tree.insert(
            Self::key(
                b'c',
                &[&self.tok("channel", r.channel.as_bytes()), &tb, &ib],
            ),
            &[][..],
        )?;
        self.tree.insert(
            Self::key(b's', &[&self.tok("sender", r.sender.as_bytes()), &tb, &ib]),
            &[][..],
        )?;
        for p in [r.message.reply_to, r.message.kind.refers_to()]
            .into_iter()
            .flatten()
        {
            self.tree
                .insert(Self::key(b'p', &[&self.tok("msg", &p.0), &ib]), &[][..])?;
        }
        self.tree.insert(
            Self::key(b'k', &[&[kind_code(&r.message.kind)], &tb, &ib]),
            &[][..],
        )?;
        Ok(())
    }

    fn write_head(&self, next_index: u64, hash: &[u8; 32]) -> Result<(), ArchiveError> {
        let mut hv = Vec::with_capacity(HEAD_LEN);
        hv.extend_from_slice(&next_index.to_be_bytes());
        hv.extend_from_slice(hash);
        hv.extend_from_slice(&head_tag(&self.head_key, next_index, hash));
        self.tree.insert(HEAD_KEY, hv)?;
        Ok(())
    }

    /// Refuses writes to an archive whose head cannot be trusted.
    fn writable(&self) -> Result<(), ArchiveError> {
        match &self.head_problem {
            Some(why) => Err(ArchiveError::HeadInvalid(why.clone())),
            None => Ok(()),
        }
    }

    /// Why the head cannot be trusted, if it cannot.
    pub fn head_problem(&self) -> Option<&str> {
        self.head_problem.as_deref()
    }

    /// Completes records a crash left half-written.
    ///
    /// A record is written as plain sled inserts (record, index entries,
    /// head), not as one `sled::Batch`: sled 0.34 writes and syncs its I/O
    /// buffer for every batch, which cost more than the crypto per record.
    /// sled recovers a prefix of its writes, so after a crash the head may
    /// lag records that exist (with some of their index entries). This walks
    /// forward from the head while the next record exists and chains onto
    /// it, rewrites its index entries and advances the head.
    fn repair_head(&self) -> Result<u64, ArchiveError> {
        let mut head = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        let mut repaired = 0;
        // An unreadable record stops the walk too: `verify` names it.
        while let Ok(Some(r)) = self.record(head.next_index) {
            if r.prev_hash != head.hash {
                // Not a continuation of this chain: leave it to `verify`.
                break;
            }
            self.write_index(&r)?;
            let hash = r.hash();
            self.write_head(r.index + 1, &hash)?;
            head.next_index = r.index + 1;
            head.hash = hash;
            repaired += 1;
        }
        if repaired > 0 {
            drop(head);
            self.flush()?;
        }
        Ok(repaired)
    }

    /// Stores a delivery that failed verification.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn quarantine(&self, q: &Quarantined) -> Result<u64, ArchiveError> {
        self.writable()?;
        let _guard = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
        let n = match self.tree.get(QNEXT_KEY)? {
            Some(v) => v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        };
        // invariant: plain data; postcard encoding cannot fail.
        let plain =
            Zeroizing::new(postcard::to_allocvec(q).expect("invariant: quarantine encodes"));
        let sealed = self.sealer.seal(&plain, &aad(QUAR_AAD, n));
        let mut totals = self.quarantine_totals()?;
        totals.entries += 1;
        totals.bytes += sealed.len() as u64;
        let mut batch = sled::Batch::default();
        // Oldest first, until within bounds again (the new entry stays even
        // if it alone exceeds the byte bound: it is the one to inspect).
        let (max_entries, max_bytes) = self.quarantine_limits;
        if totals.entries > max_entries || totals.bytes > max_bytes {
            for kv in self.tree.scan_prefix(b"Q") {
                if totals.entries <= max_entries && totals.bytes <= max_bytes {
                    break;
                }
                let (k, v) = kv?;
                batch.remove(k);
                totals.entries -= 1;
                totals.bytes = totals.bytes.saturating_sub(v.len() as u64);
                totals.evicted += 1;
            }
        }
        batch.insert(Self::key(b'Q', &[&n.to_be_bytes()]), sealed);
        batch.insert(QNEXT_KEY, &(n + 1).to_be_bytes());
        batch.insert(QTOTALS_KEY, &totals.encode());
        self.tree.apply_batch(batch)?;
        Ok(n)
    }

    /// Entries, bytes and evictions of the quarantine.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn quarantine_totals(&self) -> Result<QuarantineTotals, ArchiveError> {
        Ok(self
            .tree
            .get(QTOTALS_KEY)?
            .map(|v| QuarantineTotals::decode(&v))
            .unwrap_or_default())
    }

    /// Changes the quarantine bounds (entries, bytes) from the defaults.
    pub fn set_quarantine_limits(&mut self, max_entries: u64, max_bytes: u64) {
        self.quarantine_limits = (max_entries.max(1), max_bytes);
    }

    /// Quarantined deliveries, oldest first.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"Q") {
            let (k, v) = kv?;
            let n = key_u64(&k).ok_or_else(|| ArchiveError::Unreadable("quarantine key".into()))?;
            let plain = self
                .sealer
                .open(&v, &aad(QUAR_AAD, n))
                .ok_or_else(|| ArchiveError::Unreadable(format!("quarantine {n}")))?;
            out.push(
                postcard::from_bytes(&plain)
                    .map_err(|_| ArchiveError::Unreadable(format!("quarantine {n}")))?,
            );
        }
        Ok(out)
    }

    /// Makes every write so far durable (fsync).
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn flush(&self) -> Result<(), ArchiveError> {
        self.db.flush()
    }

    /// Reads the record at `index`.
    ///
    /// # Errors
    /// [`ArchiveError::Unreadable`] if it does not decrypt or decode.
    pub fn record(&self, index: u64) -> Result<Option<Record>, ArchiveError> {
        match self.tree.get(Self::key(b'R', &[&index.to_be_bytes()]))? {
            Some(v) => self.decode_record(index, &v).map(Some),
            None => Ok(None),
        }
    }

    fn decode_record(&self, index: u64, sealed: &[u8]) -> Result<Record, ArchiveError> {
        decode_sealed_record(&self.sealer, index, sealed)
    }

    /// A record by message id.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn get(&self, msg_id: &MsgId) -> Result<Option<Record>, ArchiveError> {
        match self.lookup(msg_id)? {
            Some(i) => self.record(i),
            None => Ok(None),
        }
    }

    /// A record by full id or a unique hex prefix (at least 4 digits).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn find(&self, id: &str) -> Result<Option<Record>, ArchiveError> {
        if let Ok(m) = MsgId::from_hex(id) {
            return self.get(&m);
        }
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut found = None;
        for kv in self.tree.scan_prefix(b"R").rev() {
            let (k, v) = kv?;
            let index = key_u64(&k).unwrap_or(u64::MAX);
            let r = self.decode_record(index, &v)?;
            if r.msg_id.to_hex().starts_with(&id) {
                if found.is_some() {
                    return Ok(None);
                }
                found = Some(r);
            }
        }
        Ok(found)
    }

    /// Number of records.
    pub fn len(&self) -> u64 {
        self.head.lock().map(|h| h.next_index).unwrap_or(0)
    }

    /// Whether the archive is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The head hash.
    pub fn head_hash(&self) -> [u8; 32] {
        self.head.lock().map(|h| h.hash).unwrap_or([0; 32])
    }

    /// Records matching `filter`, newest first, at most `limit`.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn search(&self, filter: &Filter, limit: usize) -> Result<Vec<Record>, ArchiveError> {
        let words: Vec<String> = filter
            .text
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let kind = match &filter.kind {
            Some(k) => Some(
                kind_from_name(k)
                    .ok_or_else(|| ArchiveError::Unreadable(format!("unknown kind {k:?}")))?,
            ),
            None => None,
        };
        let matches = |r: &Record| -> bool {
            filter.channel.as_ref().is_none_or(|c| &r.channel == c)
                && filter.from.as_ref().is_none_or(|f| &r.sender == f)
                && kind.is_none_or(|k| kind_code(&r.message.kind) == k)
                && filter.tlp.is_none_or(|t| r.message.tlp == t)
                && filter.since_ms.is_none_or(|s| r.received_at_ms >= s)
                && filter.until_ms.is_none_or(|u| r.received_at_ms < u)
                && (words.is_empty() || {
                    let mut hay =
                        format!("{}\n{}", r.message.subject, r.message.body).to_lowercase();
                    for a in &r.message.attachments {
                        hay.push('\n');
                        hay.push_str(&a.name.to_lowercase());
                    }
                    words.iter().all(|w| hay.contains(w.as_str()))
                })
        };
        let mut out = Vec::new();
        // Pick the narrowest index; every candidate is re-checked in full.
        let index_prefix = if let Some(c) = &filter.channel {
            Some(Self::key(b'c', &[&self.tok("channel", c.as_bytes())]))
        } else if let Some(f) = &filter.from {
            Some(Self::key(b's', &[&self.tok("sender", f.as_bytes())]))
        } else {
            kind.map(|k| Self::key(b'k', &[&[k]]))
        };
        match index_prefix {
            Some(prefix) => {
                for kv in self.tree.scan_prefix(&prefix).rev() {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, _) = kv?;
                    // Index keys end in time:u64be index:u64be; a shorter
                    // (tampered) key is skipped, never a panic.
                    let Some(tail) = k.len().checked_sub(16).and_then(|s| k.get(s..)) else {
                        continue;
                    };
                    let (t, i) = tail.split_at(8);
                    let time = u64::from_be_bytes(t.try_into().unwrap_or([0; 8]));
                    if filter.until_ms.is_some_and(|u| time >= u) {
                        continue;
                    }
                    if filter.since_ms.is_some_and(|s| time < s) {
                        break;
                    }
                    let index = u64::from_be_bytes(i.try_into().unwrap_or([0; 8]));
                    if let Some(r) = self.record(index)? {
                        if matches(&r) {
                            out.push(r);
                        }
                    }
                }
            }
            None => {
                // Newest first, in chunks that are each read forwards: sled's
                // reverse iteration costs several times its forward one.
                let mut hi = self.len();
                while hi > 0 && out.len() < limit {
                    let lo = hi.saturating_sub(SCAN_CHUNK);
                    let mut raw = Vec::new();
                    for kv in self.tree.range(
                        Self::key(b'R', &[&lo.to_be_bytes()])
                            ..Self::key(b'R', &[&hi.to_be_bytes()]),
                    ) {
                        let (k, v) = kv?;
                        raw.push((key_u64(&k).unwrap_or(u64::MAX), v));
                    }
                    // Decrypting dominates: split the chunk over two threads.
                    let scan = |part: &[(u64, sled::IVec)]| -> Result<Vec<Record>, ArchiveError> {
                        let mut hits = Vec::new();
                        for (index, v) in part {
                            let r = self.decode_record(*index, v)?;
                            if matches(&r) {
                                hits.push(r);
                            }
                        }
                        Ok(hits)
                    };
                    let (older, newer) = raw.split_at(raw.len() / 2);
                    let (a, b) = std::thread::scope(|sc| {
                        let t = sc.spawn(|| scan(newer));
                        let a = scan(older);
                        let b = t.join().unwrap_or_else(|_| {
                            Err(ArchiveError::Unreadable("search thread panicked".into()))
                        });
                        (a, b)
                    });
                    let (a, b) = (a?, b?);
                    out.extend(
                        b.into_iter()
                            .rev()
                            .chain(a.into_iter().rev())
                            .take(limit - out.len()),
                    );
                    hi = lo;
                }
            }
        }
        Ok(out)
    }

    /// The thread containing `msg_id`: its root (following `reply_to` and
    /// kind references upwards as far as they are archived) and every
    /// archived descendant, in archive order.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn thread(&self, msg_id: &MsgId) -> Result<Vec<Record>, ArchiveError> {
        let mut root = *msg_id;
        let mut seen = std::collections::HashSet::new();
        while seen.insert(root) {
            match self.get(&root)? {
                Some(r) => match r.message.parent() {
                    Some(p) if self.lookup(&p)?.is_some() => root = p,
                    _ => break,
                },
                None => break,
            }
        }
        let mut out = std::collections::BTreeMap::new();
        let mut queue = vec![root];
        let mut visited = std::collections::HashSet::new();
        while let Some(id) = queue.pop() {
            if !visited.insert(id) {
                continue;
            }
            if let Some(r) = self.get(&id)? {
                out.insert(r.index, r);
            }
            let prefix = Self::key(b'p', &[&self.tok("msg", &id.0)]);
            for kv in self.tree.scan_prefix(&prefix) {
                let (k, _) = kv?;
                let Some(i) = k.get(k.len().saturating_sub(8)..) else {
                    continue;
                };
                let index = u64::from_be_bytes(i.try_into().unwrap_or([0; 8]));
                if let Some(r) = self.record(index)? {
                    queue.push(r.msg_id);
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// Every record in archive order, via a callback (export, stats).
    ///
    /// # Errors
    /// [`ArchiveError`] or the callback's error.
    pub fn for_each(
        &self,
        mut f: impl FnMut(Record) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        for kv in self.tree.scan_prefix(b"R") {
            let (k, v) = kv?;
            let index = key_u64(&k).ok_or_else(|| ArchiveError::Unreadable("record key".into()))?;
            f(self.decode_record(index, &v)?)?;
        }
        Ok(())
    }

    /// Re-checks the whole archive: contiguity, decryption under each
    /// record's own index, the hash chain, the head, every envelope signature
    /// and routing policy against `roster`, that the stored header matches the
    /// envelope, and (if `deep`) that the envelope still decrypts to the
    /// stored message. Stops at the first problem.
    ///
    /// # Errors
    /// [`ArchiveError::Db`] only; integrity problems are in the report.
    pub fn verify(
        &self,
        roster: &Roster,
        identity: &Identity,
        deep: bool,
        mut progress: impl FnMut(u64),
    ) -> Result<VerifyReport, ArchiveError> {
        let (count, head_hash) = {
            let h = self.head.lock().map_err(|_| ArchiveError::Poisoned)?;
            (h.next_index, h.hash)
        };
        let mut running = [0u8; 32];
        let mut expected = 0u64;
        let fail = |index: u64, why: String| {
            Ok(VerifyReport {
                records: index,
                first_error: Some((index, why)),
                head_hash,
            })
        };
        if let Some(why) = &self.head_problem {
            return fail(0, format!("the archive head {why}"));
        }
        // msg_id -> first index, so a message archived twice (a deleted
        // dedupe key let a redelivery in) is named.
        let mut seen: std::collections::HashMap<[u8; 16], u64> = std::collections::HashMap::new();
        for kv in self.tree.scan_prefix(b"R") {
            let (k, v) = kv?;
            let Some(index) = key_u64(&k) else {
                return fail(expected, "malformed record key".into());
            };
            if index != expected {
                return fail(
                    expected,
                    format!("record {expected} is missing (deleted); next present is {index}"),
                );
            }
            let r = match self.decode_record(index, &v) {
                Ok(r) => r,
                Err(_) => {
                    return fail(
                        index,
                        format!("record {index} does not decrypt under its position: edited, swapped or moved"),
                    )
                }
            };
            if r.prev_hash != running {
                return fail(
                    index,
                    format!(
                        "record {index} does not chain to record {}: reordered or replaced",
                        index.wrapping_sub(1)
                    ),
                );
            }
            let verified =
                match UntrustedEnvelope::decode(&r.envelope).and_then(|u| u.verify(roster)) {
                    Ok(v) => v,
                    Err(e) => {
                        return fail(
                            index,
                            format!(
                                "record {index} ({}): envelope does not verify: {e}",
                                r.msg_id
                            ),
                        )
                    }
                };
            if let Some(first) = seen.insert(r.msg_id.0, index) {
                return fail(
                    index,
                    format!(
                        "record {index}: duplicate msg_id {} (first archived as record {first}): a dedupe key was deleted and a redelivery archived again",
                        r.msg_id
                    ),
                );
            }
            let h = verified.header();
            if h.msg_id != r.msg_id
                || h.sender != r.sender
                || h.channel != r.channel
                || h.sent_at_ms != r.sent_at_ms
            {
                return fail(
                    index,
                    format!("record {index}: stored header differs from the envelope"),
                );
            }
            if deep {
                let opened = match (&r.direction, &r.content_key) {
                    (Direction::Sent, Some(k)) => verified.open_with_content_key(k),
                    _ => verified.open(identity),
                };
                match opened {
                    Ok(o) if o.message() == &r.message => {}
                    Ok(_) => {
                        return fail(
                            index,
                            format!("record {index}: stored message differs from the envelope"),
                        )
                    }
                    Err(e) => {
                        return fail(
                            index,
                            format!("record {index}: envelope does not open: {e}"),
                        )
                    }
                }
            }
            running = r.hash();
            expected += 1;
            progress(expected);
        }
        if expected != count || running != head_hash {
            return fail(
                expected,
                format!("archive head says {count} records ending in {}, found {expected}: records were deleted at the end", &hex::encode(head_hash)[..16]),
            );
        }
        Ok(VerifyReport {
            records: expected,
            first_error: None,
            head_hash,
        })
    }

    /// Counts for `archive stats`.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn stats(&self) -> Result<Stats, ArchiveError> {
        let mut s = Stats::default();
        self.for_each(|r| {
            s.records += 1;
            match r.direction {
                Direction::Received => s.received += 1,
                Direction::Sent => s.sent += 1,
            }
            *s.by_channel.entry(r.channel.clone()).or_default() += 1;
            *s.by_kind
                .entry(r.message.kind.name().to_string())
                .or_default() += 1;
            Ok(())
        })?;
        s.quarantined = self.tree.scan_prefix(b"Q").count() as u64;
        s.quarantine_evicted = self.quarantine_totals()?.evicted;
        s.disk_bytes = self.db.size_on_disk()?;
        s.head_hash = hex::encode(self.head_hash());
        Ok(s)
    }

    /// Raw access for tamper tests and forensic tools: the sealed bytes at `index`.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn raw_record(&self, index: u64) -> Result<Option<Vec<u8>>, ArchiveError> {
        Ok(self
            .tree
            .get(Self::key(b'R', &[&index.to_be_bytes()]))?
            .map(|v| v.to_vec()))
    }

    /// Raw write, for tamper tests only: replaces (or with `None`, deletes)
    /// the sealed bytes at `index` without touching the chain.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    #[doc(hidden)]
    pub fn tamper_raw_record(&self, index: u64, value: Option<&[u8]>) -> Result<(), ArchiveError> {
        let k = Self::key(b'R', &[&index.to_be_bytes()]);
        match value {
            Some(v) => self.tree.insert(k, v)?,
            None => self.tree.remove(k)?,
        };
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallinn_common::envelope::{seal, UntrustedEnvelope};
    use tallinn_common::identity::ParticipantId;
    use tallinn_common::message::{Kind, Loe, Priority, State};

    struct W {
        roster: Roster,
        ua: Identity,
        ee: Identity,
    }

    fn world() -> W {
        let ua = Identity::generate(ParticipantId::new("UA").unwrap());
        let ee = Identity::generate(ParticipantId::new("EE").unwrap());
        let text = format!(
            "{}{}[[channel]]\nid = \"front-office\"\nmembers = [\"UA\", \"EE\"]\n[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\n",
            ua.roster_entry("Ukraine", "member"),
            ee.roster_entry("Estonia", "member"),
        );
        W {
            roster: Roster::parse(&text).unwrap(),
            ua,
            ee,
        }
    }

    fn deliver(w: &W, a: &Archive, channel: &str, m: &Message, seq: u64) -> MsgId {
        let s = seal(&w.ua, &w.roster, channel, m, 1000 + seq).unwrap();
        let opened = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap()
            .open(&w.ee)
            .unwrap();
        assert_eq!(
            a.insert_received(seq, 5000 + seq, &opened).unwrap(),
            Inserted::New(a.len() - 1)
        );
        s.msg_id()
    }

    fn filled() -> (W, tempfile::TempDir, Archive, Vec<MsgId>) {
        let w = world();
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::open(dir.path(), &w.ee).unwrap();
        let req = Message {
            kind: Kind::Request {
                loe: Loe::Immediate,
                category: "dfir".into(),
                priority: Priority::High,
            },
            ..Message::note(Tlp::Amber, "Need DFIR team", "energy sector")
        };
        let r = deliver(&w, &a, "plenary", &req, 1);
        let n = deliver(
            &w,
            &a,
            "front-office",
            &Message::note(Tlp::Green, "Handover", "at nine"),
            2,
        );
        let status = Message {
            kind: Kind::Status {
                about: r,
                state: State::Fulfilled,
            },
            ..Message::note(Tlp::Amber, "Done", "team deployed")
        };
        let s = deliver(&w, &a, "plenary", &status, 3);
        let reply = Message {
            reply_to: Some(s),
            ..Message::note(Tlp::Clear, "Thanks", "much appreciated")
        };
        let t = deliver(&w, &a, "plenary", &reply, 4);
        a.flush().unwrap();
        (w, dir, a, vec![r, n, s, t])
    }

    #[test]
    fn half_written_records_are_completed_at_open() {
        let (w, dir, a, ids) = filled();
        let head = a.head_hash();
        // What a crash can leave (sled recovers a prefix of the inserts):
        // the last two records exist, but the head still points before them
        // and the msg_id and thread index entries of the last are missing.
        a.write_head(2, &a.record(1).unwrap().unwrap().hash())
            .unwrap();
        a.tree
            .remove(Archive::key(b'm', &[&a.tok("msg", &ids[3].0)]))
            .unwrap();
        a.tree
            .remove(Archive::key(
                b'p',
                &[&a.tok("msg", &ids[2].0), &3u64.to_be_bytes()],
            ))
            .unwrap();
        a.flush().unwrap();
        drop(a);
        let a = Archive::open(dir.path(), &w.ee).unwrap();
        assert_eq!(a.len(), 4, "head advanced over both records");
        assert_eq!(a.head_hash(), head);
        assert_eq!(a.lookup(&ids[3]).unwrap(), Some(3), "msg_id index rebuilt");
        assert_eq!(a.thread(&ids[2]).unwrap().len(), 3, "thread index rebuilt");
        // A redelivery is recognised, so nothing is archived twice.
        let rec = a.record(3).unwrap().unwrap();
        let opened = UntrustedEnvelope::decode(&rec.envelope)
            .unwrap()
            .verify(&w.roster)
            .unwrap()
            .open(&w.ee)
            .unwrap();
        assert_eq!(
            a.insert_received(4, 9, &opened).unwrap(),
            Inserted::Duplicate(3)
        );
    }

    #[test]
    fn insert_dedupe_lookup_and_reopen() {
        let (w, dir, a, ids) = filled();
        assert_eq!(a.len(), 4);
        let rec = a.get(&ids[1]).unwrap().unwrap();
        assert_eq!(rec.message.subject, "Handover");
        assert_eq!(rec.seq, 2);
        // A second delivery of the same envelope is a duplicate.
        let raw = rec.envelope.clone();
        let opened = UntrustedEnvelope::decode(&raw)
            .unwrap()
            .verify(&w.roster)
            .unwrap()
            .open(&w.ee)
            .unwrap();
        assert_eq!(
            a.insert_received(9, 9, &opened).unwrap(),
            Inserted::Duplicate(1)
        );
        let head = a.head_hash();
        drop(a);
        let a = Archive::open(dir.path(), &w.ee).unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a.head_hash(), head);
        assert!(a.find(&ids[1].to_hex()[..8]).unwrap().is_some());
        // Another identity cannot read it.
        drop(a);
        let other = Archive::open(dir.path(), &w.ua).unwrap();
        assert!(matches!(other.record(0), Err(ArchiveError::Unreadable(_))));
    }

    #[test]
    fn search_by_every_index_and_text() {
        let (_w, _dir, a, ids) = filled();
        let ch = a
            .search(
                &Filter {
                    channel: Some("plenary".into()),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(
            ch.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
            vec![ids[3], ids[2], ids[0]]
        );
        let from = a
            .search(
                &Filter {
                    from: Some("UA".into()),
                    ..Default::default()
                },
                2,
            )
            .unwrap();
        assert_eq!(from.len(), 2, "limit respected");
        let kind = a
            .search(
                &Filter {
                    kind: Some("request".into()),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(
            kind.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
            vec![ids[0]]
        );
        let tlp = a
            .search(
                &Filter {
                    tlp: Some(Tlp::Amber),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(tlp.len(), 2);
        let text = a
            .search(
                &Filter {
                    text: Some("TEAM deployed".into()),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(
            text.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
            vec![ids[2]]
        );
        let time = a
            .search(
                &Filter {
                    channel: Some("plenary".into()),
                    since_ms: Some(5003),
                    until_ms: Some(5004),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(
            time.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
            vec![ids[2]]
        );
        assert!(a
            .search(
                &Filter {
                    channel: Some("nowhere".into()),
                    ..Default::default()
                },
                10
            )
            .unwrap()
            .is_empty());
    }

    #[test]
    fn thread_view_follows_references() {
        let (_w, _dir, a, ids) = filled();
        let t: Vec<MsgId> = a
            .thread(&ids[3])
            .unwrap()
            .iter()
            .map(|r| r.msg_id)
            .collect();
        assert_eq!(t, vec![ids[0], ids[2], ids[3]]);
        let t: Vec<MsgId> = a
            .thread(&ids[1])
            .unwrap()
            .iter()
            .map(|r| r.msg_id)
            .collect();
        assert_eq!(t, vec![ids[1]]);
    }

    #[test]
    fn verify_detects_edit_delete_swap_and_truncation() {
        let (w, _dir, a, _) = filled();
        let ok = a.verify(&w.roster, &w.ee, true, |_| {}).unwrap();
        assert_eq!(ok.first_error, None);
        assert_eq!(ok.records, 4);

        // Edit one byte of record 1.
        let orig1 = a.raw_record(1).unwrap().unwrap();
        let mut edited = orig1.clone();
        edited[40] ^= 1;
        a.tamper_raw_record(1, Some(&edited)).unwrap();
        let r = a.verify(&w.roster, &w.ee, false, |_| {}).unwrap();
        assert_eq!(r.first_error.as_ref().map(|e| e.0), Some(1), "{r:?}");
        a.tamper_raw_record(1, Some(&orig1)).unwrap();

        // Swap records 1 and 2.
        let orig2 = a.raw_record(2).unwrap().unwrap();
        a.tamper_raw_record(1, Some(&orig2)).unwrap();
        a.tamper_raw_record(2, Some(&orig1)).unwrap();
        let r = a.verify(&w.roster, &w.ee, false, |_| {}).unwrap();
        assert_eq!(r.first_error.as_ref().map(|e| e.0), Some(1), "{r:?}");
        a.tamper_raw_record(1, Some(&orig1)).unwrap();
        a.tamper_raw_record(2, Some(&orig2)).unwrap();
        assert_eq!(
            a.verify(&w.roster, &w.ee, false, |_| {})
                .unwrap()
                .first_error,
            None
        );

        // Delete record 2.
        a.tamper_raw_record(2, None).unwrap();
        let r = a.verify(&w.roster, &w.ee, false, |_| {}).unwrap();
        let (i, why) = r.first_error.unwrap();
        assert_eq!(i, 2);
        assert!(why.contains("missing"), "{why}");
        a.tamper_raw_record(2, Some(&orig2)).unwrap();

        // Delete the last record (truncation).
        let orig3 = a.raw_record(3).unwrap().unwrap();
        a.tamper_raw_record(3, None).unwrap();
        let r = a.verify(&w.roster, &w.ee, false, |_| {}).unwrap();
        assert_eq!(r.first_error.as_ref().map(|e| e.0), Some(3), "{r:?}");
        a.tamper_raw_record(3, Some(&orig3)).unwrap();
        assert_eq!(
            a.verify(&w.roster, &w.ee, true, |_| {})
                .unwrap()
                .first_error,
            None
        );
    }

    /// A note from UA to plenary, sealed and opened as EE.
    fn sealed_note(
        w: &W,
        subject: &str,
        at: u64,
    ) -> (tallinn_common::envelope::SealedEnvelope, Opened) {
        let s = seal(
            &w.ua,
            &w.roster,
            "plenary",
            &Message::note(Tlp::Clear, subject, "y"),
            at,
        )
        .unwrap();
        let o = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap()
            .open(&w.ee)
            .unwrap();
        (s, o)
    }

    /// Reopens the archive in `dir` after editing its sled tree directly,
    /// as someone holding only the files would.
    fn tamper_closed(
        w: &W,
        dir: &std::path::Path,
        a: Archive,
        f: impl FnOnce(&sled::Tree),
    ) -> Archive {
        drop(a);
        {
            let db = sled::open(dir).unwrap();
            f(&db.open_tree("archive").unwrap());
            db.flush().unwrap();
        }
        Archive::open(dir, &w.ee).unwrap()
    }

    #[test]
    fn deleting_tail_records_and_head_is_detected() {
        let (w, dir, a, _) = filled();
        let a = tamper_closed(&w, dir.path(), a, |t| {
            for i in [2u64, 3] {
                let mut k = vec![b'R'];
                k.extend_from_slice(&i.to_be_bytes());
                t.remove(k).unwrap().unwrap();
            }
            t.remove(HEAD_KEY).unwrap().unwrap();
        });
        let r = a.verify(&w.roster, &w.ee, false, |_| {}).unwrap();
        let (_, why) = r.first_error.expect("a deleted head must fail verify");
        assert!(why.contains("head is missing"), "{why}");
        assert!(a.head_problem().is_some());
        // Nothing can extend a chain whose head is gone.
        let (_, o) = sealed_note(&w, "x", 9);
        assert!(matches!(
            a.insert_received(9, 9, &o),
            Err(ArchiveError::HeadInvalid(_))
        ));
    }

    #[test]
    fn a_forged_or_old_format_head_is_refused() {
        let (w, dir, a, _) = filled();
        // A head recomputed by someone without the key: count 2 and the hash
        // of record 1, the tail cut (the v1 head had exactly this form).
        let h1 = a.record(1).unwrap().unwrap().hash();
        let a = tamper_closed(&w, dir.path(), a, |t| {
            for i in [2u64, 3] {
                let mut k = vec![b'R'];
                k.extend_from_slice(&i.to_be_bytes());
                t.remove(k).unwrap();
            }
            let mut v = 2u64.to_be_bytes().to_vec();
            v.extend_from_slice(&h1);
            t.insert(HEAD_KEY, v.clone()).unwrap();
        });
        let (_, why) = a
            .verify(&w.roster, &w.ee, false, |_| {})
            .unwrap()
            .first_error
            .unwrap();
        assert!(why.contains("head has 40 bytes"), "{why}");
        let a = tamper_closed(&w, dir.path(), a, |t| {
            let mut v = 2u64.to_be_bytes().to_vec();
            v.extend_from_slice(&h1);
            v.extend_from_slice(&[0u8; 32]);
            t.insert(HEAD_KEY, v).unwrap();
        });
        let (_, why) = a
            .verify(&w.roster, &w.ee, false, |_| {})
            .unwrap()
            .first_error
            .unwrap();
        assert!(why.contains("not authenticated"), "{why}");
    }

    #[test]
    fn deleting_only_the_last_record_is_detected() {
        let (w, dir, a, _) = filled();
        let a = tamper_closed(&w, dir.path(), a, |t| {
            let mut k = vec![b'R'];
            k.extend_from_slice(&3u64.to_be_bytes());
            t.remove(k).unwrap().unwrap();
        });
        let (i, why) = a
            .verify(&w.roster, &w.ee, false, |_| {})
            .unwrap()
            .first_error
            .unwrap();
        assert_eq!(i, 3);
        assert!(why.contains("deleted at the end"), "{why}");
    }

    #[test]
    fn a_deleted_dedupe_key_shows_as_duplicate_msg_id() {
        let (w, dir, a, _) = filled();
        let (s, o) = sealed_note(&w, "again", 7);
        assert_eq!(a.insert_received(5, 5005, &o).unwrap(), Inserted::New(4));
        a.flush().unwrap();
        let tok = a.tok("msg", &s.msg_id().0);
        let a = tamper_closed(&w, dir.path(), a, |t| {
            t.remove(Archive::key(b'm', &[&tok])).unwrap().unwrap();
        });
        // The relay redelivers it (at-least-once): archived a second time.
        assert_eq!(a.insert_received(6, 5006, &o).unwrap(), Inserted::New(5));
        let (i, why) = a
            .verify(&w.roster, &w.ee, false, |_| {})
            .unwrap()
            .first_error
            .unwrap();
        assert_eq!(i, 5);
        assert!(why.contains("duplicate msg_id"), "{why}");
    }

    #[test]
    fn a_fresh_archive_has_an_authenticated_head_on_disk() {
        let w = world();
        let dir = tempfile::tempdir().unwrap();
        drop(Archive::open(dir.path(), &w.ee).unwrap());
        let db = sled::open(dir.path()).unwrap();
        let v = db
            .open_tree("archive")
            .unwrap()
            .get(HEAD_KEY)
            .unwrap()
            .unwrap();
        assert_eq!(v.len(), HEAD_LEN);
        drop(db);
        let a = Archive::open(dir.path(), &w.ee).unwrap();
        assert!(a.head_problem().is_none());
        // Another identity's key does not authenticate it.
        drop(a);
        let other = Archive::open(dir.path(), &w.ua).unwrap();
        assert!(other.head_problem().unwrap().contains("not authenticated"));
    }

    #[test]
    fn files_hold_no_plaintext() {
        let (_w, dir, a, _) = filled();
        a.flush().unwrap();
        drop(a);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                for needle in ["Need DFIR team", "Handover", "front-office", "plenary"] {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                        "{needle} in {}",
                        p.display()
                    );
                }
            }
        }
    }

    #[test]
    fn quarantine_round_trip() {
        let (_w, _dir, a, _) = filled();
        let q = Quarantined {
            seq: 7,
            received_at_ms: 8,
            reason: "bad signature".into(),
            claimed_sender: Some("UA".into()),
            claimed_channel: None,
            envelope: vec![1, 2, 3],
        };
        assert_eq!(a.quarantine(&q).unwrap(), 0);
        assert_eq!(a.quarantine(&q).unwrap(), 1);
        assert_eq!(a.quarantined().unwrap(), vec![q.clone(), q]);
        assert_eq!(a.len(), 4, "quarantine is not in the archive");
    }

    #[test]
    fn quarantine_is_bounded_evicting_oldest_first() {
        let (_w, _dir, mut a, _) = filled();
        let q = |seq: u64, len: usize| Quarantined {
            seq,
            received_at_ms: 0,
            reason: "bad signature".into(),
            claimed_sender: None,
            claimed_channel: None,
            envelope: vec![0; len],
        };
        // By count: 3 entries kept.
        a.set_quarantine_limits(3, u64::MAX);
        for seq in 0..10 {
            a.quarantine(&q(seq, 10)).unwrap();
        }
        let kept: Vec<u64> = a.quarantined().unwrap().iter().map(|q| q.seq).collect();
        assert_eq!(kept, vec![7, 8, 9]);
        let t = a.quarantine_totals().unwrap();
        assert_eq!((t.entries, t.evicted), (3, 7));
        // By bytes: two 1000-byte entries fit in 2500 bytes (sealing adds 40).
        a.set_quarantine_limits(1000, 2500);
        for seq in 10..14 {
            a.quarantine(&q(seq, 1000)).unwrap();
        }
        let kept: Vec<u64> = a.quarantined().unwrap().iter().map(|q| q.seq).collect();
        assert_eq!(kept, vec![12, 13]);
        let t = a.quarantine_totals().unwrap();
        assert!(t.bytes <= 2500, "{t:?}");
        assert_eq!((t.entries, t.evicted), (2, 12));
        assert_eq!(a.stats().unwrap().quarantine_evicted, 12);
    }
}
