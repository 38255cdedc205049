//! Durable storage: the message log, per-participant inboxes, per-device
//! cursors and the seen-msg_id set, behind the [`Store`] trait (sled is the
//! embedded implementation; a clustered backend can implement the same trait).
//!
//! # sled layout
//! One tree (`relay`), key prefixes keep the record kinds apart; every key
//! sorts so that range scans walk in sequence order:
//!
//! | key | value |
//! |---|---|
//! | `b'L' seq:u64be` | postcard([`LogEntry`]): received_at_ms, sender, recipients, envelope bytes |
//! | `b'C' participant 0x00 device` | postcard([`Cursor`]): acked seq, last seen |
//! | `b'S' msg_id:[u8;16]` | `seq:u64be received_at_ms:u64be` (dedupe window) |
//! | `b'M' "next_seq"` | `u64be`: the next sequence number to assign |
//! | `b'R' index:u64be` | `appended_at_ms:u64be` then postcard(`SignedEntry`): the roster log (version 2) |
//! | `b'A' participant 0x00 device` | postcard(`SignedCheckpoint`): the device's latest archive checkpoint (version 2) |
//!
//! A device's inbox is the log entries after its cursor that list its
//! participant (version 1) or the device itself (`participant/device`,
//! version 2) as a recipient. There is no per-recipient index on disk: one
//! accepted message is two keys however many recipients it has, which is
//! what keeps a 14-way fan-out cheap (measured in `BENCHMARKS.md`). The
//! index lives in memory instead (`index`): built by one scan at open, kept
//! by appends and GC, it answers `pending`, `inbox_after` (one `get` per
//! message of the inbox, nothing read for others), the storage quota and
//! the metrics without scanning the log.
//!
//! A message's log entry, the new `next_seq` and its seen entry are written
//! in that order as plain inserts; the commit log makes them atomic (see
//! `write_message`).
//!
//! # Durability
//! Appends are durable once [`Store::commit`] returns: the [`crate::commit`]
//! thread calls it once per group of writes. The sled store writes them to
//! its commit log ([`wal`]: one `pwrite` + `fdatasync`) and leaves
//! sled itself unflushed until a checkpoint (about once a second, and on
//! [`Store::flush`]), which is far cheaper per batch than flushing sled.
//! Cursors and deletions become durable at the next checkpoint.
//!
//! # Modules
//! - this file: the [`Store`] trait and the types it speaks;
//! - `sled_store`: [`SledStore`], opening and replay, the trait's methods;
//! - `checkpoint`: checkpoints and fail-stop;
//! - `backup`: a consistent copy of a running store (`tallinn-relay backup`);
//! - `keys`: the sled key layout and value codecs;
//! - `index`: the in-memory inbox index, stored bytes per sender, totals;
//! - [`wal`]: the commit log's file format, append and replay.
//!
//! # Deletion
//! [`Store::gc`] removes a log entry once every known device of every
//! participant recipient, and every device recipient, acknowledged it, and
//! anything (messages, seen ids, device cursors) older than the retention
//! period. A recipient none of whose devices was ever seen (or a device
//! recipient that never connected) keeps the message until retention.

use serde::{Deserialize, Serialize};
use tallinn_common::message::MsgId;
use tallinn_common::roster::SignedEntry;

/// The recipient key of one device (`participant/device`) in
/// [`LogEntry::recipients`]: a version-2 envelope is addressed to devices,
/// and only the devices it names receive it. A plain participant id (a
/// version-1 envelope) reaches every device of the participant. `/` occurs
/// in no id, so the two never collide.
pub fn device_recipient(participant: &str, device: &str) -> String {
    format!("{participant}/{device}")
}

/// Splits a recipient key into participant and, for a device key, device.
pub fn split_recipient(recipient: &str) -> (&str, Option<&str>) {
    match recipient.split_once('/') {
        Some((p, d)) => (p, Some(d)),
        None => (recipient, None),
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error (I/O, corruption).
    #[error("storage error: {0}")]
    Db(#[from] sled::Error),
    /// Syncing the database file to stable storage failed.
    #[error("storage sync failed: {0}")]
    Sync(#[from] std::io::Error),
    /// A stored record could not be decoded (corruption or a version mismatch).
    #[error("corrupt stored record under key {0}")]
    Corrupt(String),
    /// A group-commit flush failed: nothing in its batch is known durable.
    #[error("flush failed: {0}")]
    Flush(String),
    /// A lock was poisoned by a panic in another thread (a bug).
    #[error("storage lock poisoned")]
    Poisoned,
    /// An earlier write, sync or checkpoint failed, so the store refuses all
    /// further writes (fail-stop): after a failed `fsync` the kernel may
    /// have dropped the dirty pages, and a retry that "succeeds" would
    /// prove nothing. Restarting the relay replays the commit log.
    #[error("storage stopped after an earlier failure ({0}); restart the relay to replay its commit log")]
    Failed(String),
}

/// One message in the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    /// Relay clock at acceptance, ms since the epoch.
    pub received_at_ms: u64,
    /// Sender id.
    pub sender: String,
    /// Recipients as verified against the roster at acceptance: participant
    /// ids (version 1) or device keys `participant/device` (version 2, see
    /// [`device_recipient`]).
    pub recipients: Vec<String>,
    /// The envelope bytes exactly as received.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
}

/// A message ready for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Sequence number.
    pub seq: u64,
    /// Relay clock at acceptance, ms since the epoch.
    pub received_at_ms: u64,
    /// Envelope bytes.
    pub envelope: Vec<u8>,
}

/// A device's durable cursor.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cursor {
    /// Highest acknowledged seq.
    pub acked: u64,
    /// Last time the device authenticated or acknowledged, ms since the epoch.
    pub last_seen_ms: u64,
}

/// Outcome of [`Store::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored (not yet flushed) under this seq.
    New(u64),
    /// The msg_id was seen before, under this seq.
    Duplicate(u64),
}

/// What a garbage collection pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcStats {
    /// Messages removed because every recipient device acknowledged them.
    pub acked_removed: u64,
    /// Messages removed because they outlived the retention period.
    pub expired: u64,
    /// Seen msg_ids pruned.
    pub seen_pruned: u64,
    /// Device cursors forgotten (unseen for longer than retention).
    pub devices_forgotten: u64,
}

/// Size figures for metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Messages in the log.
    pub messages: u64,
    /// Bytes of envelopes in the log.
    pub envelope_bytes: u64,
    /// Inbox entries per participant.
    pub inbox_depth: Vec<(String, u64)>,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

/// The relay's storage contract. Writes become durable only at [`Store::flush`].
pub trait Store: Send + Sync + 'static {
    /// Stores a message for `recipients` unless its msg_id was seen.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn append(&self, msg_id: MsgId, entry: &LogEntry) -> Result<Appended, StoreError>;

    /// The seq a msg_id was accepted under, if it is in the dedupe window.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn seen(&self, msg_id: &MsgId) -> Result<Option<u64>, StoreError>;

    /// Makes every append so far durable (cursor updates and deletions may
    /// wait for the next checkpoint). The group-commit barrier.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn commit(&self) -> Result<(), StoreError>;

    /// Makes every write so far durable, cursors included (a checkpoint).
    ///
    /// # Errors
    /// [`StoreError`] on database failure: nothing since the last successful
    /// flush may be considered durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Up to `limit` messages for `participant`'s `device` with seq >
    /// `after`, in order: those addressed to the participant (version 1,
    /// every device) or to this device ([`device_recipient`]).
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn inbox_after(
        &self,
        participant: &str,
        device: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Number of messages for `participant`'s `device` with seq > `after`.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn pending(&self, participant: &str, device: &str, after: u64) -> Result<u64, StoreError>;

    /// The roster log, from the genesis, with the time each entry was
    /// appended (ms since the epoch); empty for a relay still running a
    /// version-1 roster file.
    ///
    /// # Errors
    /// [`StoreError`] on database failure or a corrupt entry.
    fn roster_log(&self) -> Result<Vec<(SignedEntry, u64)>, StoreError>;

    /// Appends roster-log entry `index` durably (synced before it returns).
    /// The caller has checked it (`check_entry`) and that it is the next.
    ///
    /// # Errors
    /// [`StoreError`] on database failure; a failed sync stops the store.
    fn append_roster_entry(
        &self,
        index: u64,
        entry: &SignedEntry,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// The latest archive checkpoint a device sent (`postcard(SignedCheckpoint)`).
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn archive_checkpoint(
        &self,
        participant: &str,
        device: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Keeps a device's latest archive checkpoint durably (synced before it
    /// returns). The caller has checked its signature.
    ///
    /// # Errors
    /// [`StoreError`] on database failure; a failed sync stops the store.
    fn put_archive_checkpoint(
        &self,
        participant: &str,
        device: &str,
        checkpoint: &[u8],
    ) -> Result<(), StoreError>;

    /// Registers (or refreshes) a device and returns its acked cursor.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn touch_device(&self, participant: &str, device: &str, now_ms: u64)
        -> Result<u64, StoreError>;

    /// The known devices of a participant.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn devices(&self, participant: &str) -> Result<Vec<String>, StoreError>;

    /// Advances a device's cursor to `up_to` (never backwards).
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn ack(
        &self,
        participant: &str,
        device: &str,
        up_to: u64,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// Removes acknowledged and expired data.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn gc(&self, now_ms: u64, retention_ms: u64) -> Result<GcStats, StoreError>;

    /// A cheap liveness probe (one read), for `/healthz`: false once the
    /// store stopped after a failure.
    fn healthy(&self) -> bool;

    /// Why the store stopped accepting writes, once a write, sync or
    /// checkpoint failed (see [`StoreError::Failed`]); `None` while healthy.
    fn failure(&self) -> Option<String>;

    /// The highest seq assigned so far (0 if none): everything up to it that
    /// was on disk when the store was opened is durable.
    fn last_seq(&self) -> u64;

    /// Bytes of stored messages that `sender` sent (still awaiting
    /// acknowledgement or retention): the measure of the per-participant
    /// storage quota. Cheap (kept in memory).
    fn stored_bytes(&self, sender: &str) -> u64;

    /// Size figures for metrics (cheap: no log scan).
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Writes a consistent copy of the store into `dir` (which must not
    /// exist, or be empty): a data directory a relay starts from as it is.
    /// Every message accepted before the copy began is in it.
    ///
    /// # Errors
    /// [`StoreError`]; a store that cannot back itself up says so.
    fn backup(&self, dir: &std::path::Path) -> Result<BackupReport, StoreError> {
        let _ = dir;
        Err(StoreError::Flush(
            "this store backend has no backup; use its own tools".into(),
        ))
    }
}

/// What a backup wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    /// Where.
    pub dir: std::path::PathBuf,
    /// Keys copied (messages, cursors, seen ids, roster log...).
    pub keys: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// The highest seq assigned when the copy was taken.
    pub last_seq: u64,
    /// Files copied beside the database (keys of the relay).
    pub files: Vec<String>,
}

mod backup;
mod checkpoint;
mod index;
mod keys;
mod sled_store;
#[cfg(test)]
mod tests;
pub mod wal;

pub use sled_store::{SledStore, WAL_FILES};
