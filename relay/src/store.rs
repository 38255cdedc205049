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
//!
//! A participant's inbox is the log entries after its device's cursor that
//! list it as a recipient: reading it decodes only the entry's head
//! (time, sender, recipients) of entries addressed to others. There is no
//! per-recipient index: one accepted message is two keys however many
//! recipients it has, which is what keeps a 14-way fan-out cheap (measured
//! in `BENCHMARKS.md`).
//!
//! A message's log entry, the new `next_seq` and its seen entry are written
//! in that order as plain inserts; the commit log makes them atomic (see
//! `write_message`).
//!
//! # Durability
//! Appends are durable once [`Store::commit`] returns: the [`crate::commit`]
//! thread calls it once per group of writes. The sled store writes them to
//! its commit log ([`crate::wal`]: one `pwrite` + `fdatasync`) and leaves
//! sled itself unflushed until a checkpoint (about once a second, and on
//! [`Store::flush`]), which is far cheaper per batch than flushing sled.
//! Cursors and deletions become durable at the next checkpoint.
//!
//! # Deletion
//! [`Store::gc`] removes a log entry once every known device of every
//! recipient acknowledged it, and anything (messages, seen ids, device
//! cursors) older than the retention period. A recipient none of whose
//! devices was ever seen keeps the message until retention.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::wal::Wal;

use serde::{Deserialize, Serialize};
use tallinn_common::message::MsgId;

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
    /// Recipient ids (as verified against the roster at acceptance).
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

    /// Up to `limit` messages of `participant`'s inbox with seq > `after`, in order.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn inbox_after(
        &self,
        participant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Number of inbox entries of `participant` with seq > `after`.
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn pending(&self, participant: &str, after: u64) -> Result<u64, StoreError>;

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

    /// Size figures (walks the store; for metrics scrapes, not hot paths).
    ///
    /// # Errors
    /// [`StoreError`] on database failure.
    fn stats(&self) -> Result<StoreStats, StoreError>;
}

const NEXT_SEQ_KEY: &[u8] = b"Mnext_seq";

/// Writes one accepted message into sled: log entry, next seq (on replay
/// only: appends leave it to the checkpoint), then the seen entry, as plain
/// inserts of the already encoded entry.
///
/// Not a `sled::Batch`: sled 0.34 seals and writes its I/O buffer (a
/// `pwrite` + `sync_file_range` on its I/O threads) for every batch, which
/// cost more CPU than everything else the relay does per message. Atomicity
/// comes from the commit log instead: an acknowledged message is always in
/// [`crate::wal`] until a checkpoint made its keys durable, and replay
/// rewrites them. sled recovers a prefix of its log, so a durable seen entry
/// (written last) implies a durable log entry.
fn write_message(
    tree: &sled::Tree,
    seq: u64,
    msg_id: &MsgId,
    received_at_ms: u64,
    encoded_entry: Vec<u8>,
    next_seq: Option<u64>,
) -> Result<(), StoreError> {
    tree.insert(log_key(seq), encoded_entry)?;
    if let Some(next) = next_seq {
        tree.insert(NEXT_SEQ_KEY, &next.to_be_bytes())?;
    }
    let mut seen = [0u8; 16];
    seen[..8].copy_from_slice(&seq.to_be_bytes());
    seen[8..].copy_from_slice(&received_at_ms.to_be_bytes());
    tree.insert(seen_key(msg_id), &seen)?;
    Ok(())
}

/// How long opening waits for sled's file lock: a store closed in the same
/// process (a restart in place) releases it only once sled's background
/// threads have finished, a moment after the drop.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens sled, waiting up to [`LOCK_WAIT`] while its file lock is still held;
/// a lock held longer (another relay on the same data directory) is an error.
fn open_locked(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// postcard bytes of a log entry.
fn encode_entry(entry: &LogEntry) -> Vec<u8> {
    // invariant: LogEntry is plain data; postcard encoding cannot fail.
    postcard::to_allocvec(entry).expect("invariant: log entry encodes")
}

fn log_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'L';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn cursor_key(participant: &str, device: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + participant.len() + device.len());
    k.push(b'C');
    k.extend_from_slice(participant.as_bytes());
    k.push(0);
    k.extend_from_slice(device.as_bytes());
    k
}

fn seen_key(msg_id: &MsgId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'S';
    k[1..].copy_from_slice(&msg_id.0);
    k
}

fn be_u64(bytes: &[u8], key: &[u8]) -> Result<u64, StoreError> {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(hex::encode(key)))
}

/// The head of a [`LogEntry`] (its first three fields): decoded without
/// copying the envelope, to decide whether an entry concerns a participant.
#[derive(Deserialize)]
struct LogHead {
    received_at_ms: u64,
    #[allow(dead_code)]
    sender: String,
    recipients: Vec<String>,
}

fn log_head(key: &[u8], value: &[u8]) -> Result<LogHead, StoreError> {
    postcard::take_from_bytes::<LogHead>(value)
        .map(|(h, _)| h)
        .map_err(|_| StoreError::Corrupt(hex::encode(key)))
}

fn log_seq(key: &[u8]) -> Result<u64, StoreError> {
    be_u64(key.get(1..).unwrap_or_default(), key)
}

/// A cursor with its raw key (for deletion).
type CursorRecord = (Vec<u8>, Cursor);

/// The sled-backed [`Store`].
///
/// A background thread (`tallinn-checkpoint`) checkpoints sled about once a
/// second while the commit log grows; it holds the store only while it
/// works and stops when the store is dropped.
pub struct SledStore {
    inner: Arc<Inner>,
    /// Wakes the checkpoint thread early (the commit log grew large);
    /// dropping it stops the thread.
    nudge: Option<mpsc::SyncSender<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    db: sled::Db,
    /// fdatasync of sled's log: sled's own flush is not a power-cut barrier.
    log: tallinn_common::durable::SledLog,
    tree: sled::Tree,
    /// Serialises dedupe-check + seq assignment + sled writes + commit log.
    state: Mutex<Writer>,
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
    /// Set by the first failed write, sync or checkpoint; from then on every
    /// write is refused (fail-stop, never a retried `fsync`).
    failed: Mutex<Option<String>>,
}

/// The write side, under one lock.
struct Writer {
    next_seq: u64,
    /// Two commit-log files: appends go to `wals[active]`; a checkpoint
    /// switches files, flushes sled without blocking appends, then empties
    /// the retired one.
    wals: [Wal; 2],
    active: usize,
}

/// How often sled is checkpointed while appends arrive.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// File names of the two commit-log files in the data directory.
pub const WAL_FILES: [&str; 2] = ["commit-a.wal", "commit-b.wal"];

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be opened or is corrupt.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, Some(CHECKPOINT_INTERVAL))
    }

    /// [`SledStore::open`] with the background checkpoint interval; `None`
    /// checkpoints only on [`Store::flush`] (tests that need the commit log
    /// to stay as it is).
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be opened or is corrupt.
    pub fn open_with(dir: &Path, checkpoints: Option<Duration>) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            // Durability comes from explicit group-commit flushes; the
            // background flusher only bounds what an idle relay holds.
            .flush_every_ms(Some(1000))
            // Favour write throughput over space: the log is short-lived
            // (deleted once acknowledged), so space amplification is cheap.
            .mode(sled::Mode::HighThroughput);
        let db = open_locked(&config)?;
        let log = tallinn_common::durable::SledLog::open(dir)?;
        let tree = db.open_tree("relay")?;
        let (wal_a, replay_a) = Wal::open(&dir.join(WAL_FILES[0]))?;
        let (wal_b, replay_b) = Wal::open(&dir.join(WAL_FILES[1]))?;
        let mut wals = [wal_a, wal_b];
        let mut records = Vec::new();
        let mut dirty = false;
        for (name, replay) in WAL_FILES.iter().zip([replay_a, replay_b]) {
            if let Some(why) = replay.stopped {
                tracing::warn!(
                    file = name,
                    reason = why,
                    discarded_bytes = replay.discarded_bytes,
                    "commit log ends in a torn or damaged record (a crash mid-write); \
                     it was never acknowledged and is discarded"
                );
            }
            dirty |= !replay.records.is_empty() || replay.discarded_bytes > 0;
            records.extend(replay.records);
        }
        // Seq order (a record can be in both files: see `checkpoint`).
        records.sort_by_key(|r| r.seq);
        let mut replayed = 0u64;
        for r in &records {
            // Idempotent: sled has all of a message it has the seen entry of
            // (written last; see `write_message`).
            if tree.get(seen_key(&r.msg_id))?.is_some() {
                continue;
            }
            let stored_next = match tree.get(NEXT_SEQ_KEY)? {
                Some(v) => be_u64(&v, NEXT_SEQ_KEY)?,
                None => 1,
            };
            write_message(
                &tree,
                r.seq,
                &r.msg_id,
                r.entry.received_at_ms,
                encode_entry(&r.entry),
                Some(stored_next.max(r.seq + 1)),
            )?;
            replayed += 1;
        }
        // Never reuse a seq that was ever handed out and may be known
        // outside: the stored next seq is written only at checkpoints, so it
        // can be stale; the log's highest entry may have been collected
        // (acknowledged by everyone); but the commit log's records and every
        // device cursor still name the seqs they saw. A reused seq at or
        // below a cursor would never be delivered to that device.
        let stored_next = match tree.get(NEXT_SEQ_KEY)? {
            Some(v) => be_u64(&v, NEXT_SEQ_KEY)?,
            None => 1,
        };
        let after_log = match tree.scan_prefix(b"L").next_back() {
            Some(kv) => {
                let (k, _) = kv?;
                be_u64(k.get(1..).unwrap_or_default(), &k)? + 1
            }
            None => 1,
        };
        let after_commit_log = records.iter().map(|r| r.seq + 1).max().unwrap_or(1);
        let mut after_cursors = 1;
        for kv in tree.scan_prefix(b"C") {
            let (k, v) = kv?;
            let c: Cursor =
                postcard::from_bytes(&v).map_err(|_| StoreError::Corrupt(hex::encode(&k)))?;
            after_cursors = after_cursors.max(c.acked.saturating_add(1));
        }
        let next_seq = stored_next
            .max(after_log)
            .max(after_commit_log)
            .max(after_cursors);
        if next_seq != stored_next {
            // Made durable with the replay's checkpoint below (or the next
            // one), before the commit log that proves it is emptied.
            tree.insert(NEXT_SEQ_KEY, &next_seq.to_be_bytes())?;
        }
        if dirty {
            db.flush()?;
            log.sync()?;
            for w in &mut wals {
                w.reset()?;
            }
            tracing::info!(
                records = records.len(),
                replayed,
                next_seq,
                "commit log replayed into the store"
            );
        }
        let inner = Arc::new(Inner {
            db,
            log,
            tree,
            state: Mutex::new(Writer {
                next_seq,
                wals,
                active: 0,
            }),
            checkpointing: Mutex::new(()),
            failed: Mutex::new(None),
        });
        let Some(every) = checkpoints else {
            return Ok(Self {
                inner,
                nudge: None,
                checkpointer: None,
            });
        };
        let (nudge, wake) = mpsc::sync_channel(1);
        let weak = Arc::downgrade(&inner);
        let checkpointer = std::thread::Builder::new()
            .name("tallinn-checkpoint".into())
            .spawn(move || checkpoint_loop(&weak, &wake, every))
            .map_err(StoreError::Sync)?;
        Ok(Self {
            inner,
            nudge: Some(nudge),
            checkpointer: Some(checkpointer),
        })
    }

    fn cursors(&self) -> Result<HashMap<String, Vec<CursorRecord>>, StoreError> {
        let mut out: HashMap<String, Vec<(Vec<u8>, Cursor)>> = HashMap::new();
        for kv in self.inner.tree.scan_prefix(b"C") {
            let (k, v) = kv?;
            let rest = k.get(1..).unwrap_or_default();
            let Some(nul) = rest.iter().position(|b| *b == 0) else {
                return Err(StoreError::Corrupt(hex::encode(&k)));
            };
            let participant = String::from_utf8_lossy(rest.get(..nul).unwrap_or_default());
            let cursor: Cursor =
                postcard::from_bytes(&v).map_err(|_| StoreError::Corrupt(hex::encode(&k)))?;
            out.entry(participant.into_owned())
                .or_default()
                .push((k.to_vec(), cursor));
        }
        Ok(out)
    }
}

impl Inner {
    /// Refuses work once the store has failed.
    fn check_failed(&self) -> Result<(), StoreError> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(StoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Records the first failure (fail-stop) and returns the error for the
    /// caller: the original one.
    fn fail(&self, e: StoreError) -> StoreError {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!(error = %e, "storage failure: the store refuses every further write");
            *f = Some(e.to_string());
        }
        e
    }

    /// A checkpoint; any failure stops the store (the commit log is then
    /// never truncated, and the next start replays it).
    fn checkpoint(&self) -> Result<(), StoreError> {
        self.check_failed()?;
        self.checkpoint_once().map_err(|e| self.fail(e))
    }

    /// One checkpoint: switch appends to the other commit-log file, flush
    /// sled and `fdatasync` it **without** holding the writer lock (sends
    /// keep being committed meanwhile), then empty the retired file.
    ///
    /// Every record in the retired file was written into sled before the
    /// switch (appends write sled first), so the flush that starts after the
    /// switch covers them all. Records queued but not yet written move to
    /// the new file with the switch, so a commit never skips them.
    fn checkpoint_once(&self) -> Result<(), StoreError> {
        let _one = self
            .checkpointing
            .lock()
            .map_err(|_| StoreError::Poisoned)?;
        let retired = {
            let mut w = self.state.lock().map_err(|_| StoreError::Poisoned)?;
            let active = w.active;
            let other = 1 - active;
            let other_empty = w.wals.get(other).is_none_or(Wal::is_empty);
            let active_idle = w
                .wals
                .get(active)
                .is_none_or(|wal| wal.is_empty() && !wal.has_pending());
            if other_empty && active_idle {
                return Ok(());
            }
            // Appends leave the next seq to here: one insert per checkpoint,
            // not per message. A crash before it is covered by the log
            // entries and the commit log, which both give the seq back.
            self.tree.insert(NEXT_SEQ_KEY, &w.next_seq.to_be_bytes())?;
            if other_empty {
                let pending = w
                    .wals
                    .get_mut(active)
                    .map(Wal::take_pending)
                    .unwrap_or_default();
                if let Some(next) = w.wals.get_mut(other) {
                    next.put_pending(pending);
                }
                w.active = other;
                active
            } else {
                // A failed earlier cycle left the other file full: finish it.
                other
            }
        };
        self.db.flush()?;
        self.log.sync()?;
        let mut w = self.state.lock().map_err(|_| StoreError::Poisoned)?;
        if let Some(wal) = w.wals.get_mut(retired) {
            wal.reset()?;
        }
        Ok(())
    }
}

/// The checkpoint thread: a checkpoint every [`CHECKPOINT_INTERVAL`] (or when
/// nudged), while the store exists.
fn checkpoint_loop(store: &std::sync::Weak<Inner>, wake: &mpsc::Receiver<()>, every: Duration) {
    loop {
        match wake.recv_timeout(every) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let Some(inner) = store.upgrade() else { return };
        if let Err(e) = inner.checkpoint() {
            // The commit log still holds everything and is never truncated
            // now: nothing is lost. No retry: a failed sync is not retried
            // (the store has stopped; the relay exits and replays).
            tracing::error!(error = %e, "store checkpoint failed; checkpoints stop");
            return;
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Stop the checkpoint thread and wait, so that the database is
        // closed (and can be reopened) once the store is gone.
        self.nudge.take();
        if let Some(t) = self.checkpointer.take() {
            let _ = t.join();
        }
    }
}

impl Store for SledStore {
    fn append(&self, msg_id: MsgId, entry: &LogEntry) -> Result<Appended, StoreError> {
        self.inner.check_failed()?;
        let mut w = self.inner.state.lock().map_err(|_| StoreError::Poisoned)?;
        let skey = seen_key(&msg_id);
        if let Some(v) = self.inner.tree.get(skey)? {
            return Ok(Appended::Duplicate(be_u64(&v, &skey)?));
        }
        // The seq is spent before anything is written: a write that fails
        // half-way never hands the same seq out twice.
        let seq = w.next_seq;
        w.next_seq = seq + 1;
        let encoded = encode_entry(entry);
        let active = w.active;
        if let Some(wal) = w.wals.get_mut(active) {
            wal.push_encoded(seq, &msg_id, &encoded);
        }
        write_message(
            &self.inner.tree,
            seq,
            &msg_id,
            entry.received_at_ms,
            encoded,
            None,
        )
        .map_err(|e| self.inner.fail(e))?;
        Ok(Appended::New(seq))
    }

    fn commit(&self) -> Result<(), StoreError> {
        self.inner.check_failed()?;
        let mut w = self.inner.state.lock().map_err(|_| StoreError::Poisoned)?;
        let active = w.active;
        let wal = w.wals.get_mut(active).ok_or(StoreError::Poisoned)?;
        wal.commit().map_err(|e| self.inner.fail(e.into()))?;
        if wal.len() >= crate::wal::CHECKPOINT_BYTES {
            if let Some(n) = &self.nudge {
                // Full means a nudge is already pending: fine.
                let _ = n.try_send(());
            }
        }
        Ok(())
    }

    fn seen(&self, msg_id: &MsgId) -> Result<Option<u64>, StoreError> {
        let skey = seen_key(msg_id);
        match self.inner.tree.get(skey)? {
            Some(v) => Ok(Some(be_u64(&v, &skey)?)),
            None => Ok(None),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.check_failed()?;
        {
            let mut w = self.inner.state.lock().map_err(|_| StoreError::Poisoned)?;
            let active = w.active;
            w.wals
                .get_mut(active)
                .ok_or(StoreError::Poisoned)?
                .commit()
                .map_err(|e| self.inner.fail(e.into()))?;
        }
        // Two cycles empty both files (the first may only finish what a
        // failed earlier cycle left).
        self.inner.checkpoint()?;
        self.inner.checkpoint()
    }

    fn inbox_after(
        &self,
        participant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .inner
            .tree
            .range(log_key(after.saturating_add(1))..log_key(u64::MAX))
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let head = log_head(&k, &v)?;
            if !head.recipients.iter().any(|r| r == participant) {
                continue;
            }
            let entry: LogEntry =
                postcard::from_bytes(&v).map_err(|_| StoreError::Corrupt(hex::encode(&k)))?;
            out.push(StoredMessage {
                seq: log_seq(&k)?,
                received_at_ms: entry.received_at_ms,
                envelope: entry.envelope,
            });
        }
        Ok(out)
    }

    fn pending(&self, participant: &str, after: u64) -> Result<u64, StoreError> {
        let mut n = 0;
        for kv in self
            .inner
            .tree
            .range(log_key(after.saturating_add(1))..log_key(u64::MAX))
        {
            let (k, v) = kv?;
            if log_head(&k, &v)?
                .recipients
                .iter()
                .any(|r| r == participant)
            {
                n += 1;
            }
        }
        Ok(n)
    }

    fn touch_device(
        &self,
        participant: &str,
        device: &str,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let key = cursor_key(participant, device);
        let mut acked = 0;
        self.inner
            .tree
            .fetch_and_update(&key, |old| {
                let mut c = old
                    .and_then(|v| postcard::from_bytes::<Cursor>(v).ok())
                    .unwrap_or(Cursor {
                        acked: 0,
                        last_seen_ms: now_ms,
                    });
                c.last_seen_ms = c.last_seen_ms.max(now_ms);
                acked = c.acked;
                postcard::to_allocvec(&c).ok()
            })
            .map_err(|e| self.inner.fail(e.into()))?;
        Ok(acked)
    }

    fn ack(
        &self,
        participant: &str,
        device: &str,
        up_to: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let key = cursor_key(participant, device);
        self.inner
            .tree
            .fetch_and_update(&key, |old| {
                let mut c = old
                    .and_then(|v| postcard::from_bytes::<Cursor>(v).ok())
                    .unwrap_or(Cursor {
                        acked: 0,
                        last_seen_ms: now_ms,
                    });
                c.acked = c.acked.max(up_to);
                c.last_seen_ms = c.last_seen_ms.max(now_ms);
                postcard::to_allocvec(&c).ok()
            })
            .map_err(|e| self.inner.fail(e.into()))?;
        Ok(())
    }

    fn gc(&self, now_ms: u64, retention_ms: u64) -> Result<GcStats, StoreError> {
        self.inner.check_failed()?;
        let horizon = now_ms.saturating_sub(retention_ms);
        let mut stats = GcStats::default();
        let mut batch = sled::Batch::default();

        // 1. Device cursors: forget devices unseen for longer than retention;
        //    the rest give each participant's minimum acked seq.
        let mut min_acked: HashMap<String, u64> = HashMap::new();
        for (participant, devices) in self.cursors()? {
            let mut min: Option<u64> = None;
            for (key, c) in devices {
                if c.last_seen_ms < horizon {
                    batch.remove(key);
                    stats.devices_forgotten += 1;
                } else {
                    min = Some(min.map_or(c.acked, |m: u64| m.min(c.acked)));
                }
            }
            if let Some(m) = min {
                min_acked.insert(participant, m);
            }
        }

        // 2. Log: expire old messages; drop those every known device of
        //    every recipient acknowledged.
        for kv in self.inner.tree.scan_prefix(b"L") {
            let (k, v) = kv?;
            let seq = log_seq(&k)?;
            let head = log_head(&k, &v)?;
            if head.received_at_ms < horizon {
                batch.remove(k);
                stats.expired += 1;
                continue;
            }
            if head
                .recipients
                .iter()
                .all(|r| min_acked.get(r).is_some_and(|m| *m >= seq))
            {
                batch.remove(k);
                stats.acked_removed += 1;
            }
        }

        // 3. Seen msg_ids outside the dedupe window.
        for kv in self.inner.tree.scan_prefix(b"S") {
            let (k, v) = kv?;
            let received = be_u64(v.get(8..).unwrap_or_default(), &k)?;
            if received < horizon {
                batch.remove(k);
                stats.seen_pruned += 1;
            }
        }
        self.inner
            .tree
            .apply_batch(batch)
            .map_err(|e| self.inner.fail(e.into()))?;
        self.flush()?;
        Ok(stats)
    }

    fn healthy(&self) -> bool {
        self.inner.check_failed().is_ok() && self.inner.tree.get(NEXT_SEQ_KEY).is_ok()
    }

    fn failure(&self) -> Option<String> {
        self.inner
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn devices(&self, participant: &str) -> Result<Vec<String>, StoreError> {
        let prefix = cursor_key(participant, "");
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let device = k.get(prefix.len()..).unwrap_or_default();
            out.push(String::from_utf8_lossy(device).into_owned());
        }
        Ok(out)
    }

    fn last_seq(&self) -> u64 {
        self.inner
            .state
            .lock()
            .map(|w| w.next_seq.saturating_sub(1))
            .unwrap_or(0)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        let mut min_acked: HashMap<String, u64> = HashMap::new();
        for (participant, devices) in self.cursors()? {
            if let Some(m) = devices.iter().map(|(_, c)| c.acked).min() {
                min_acked.insert(participant, m);
            }
        }
        let mut depth: HashMap<String, u64> = HashMap::new();
        for kv in self.inner.tree.scan_prefix(b"L") {
            let (k, v) = kv?;
            s.messages += 1;
            s.envelope_bytes += v.len() as u64;
            let seq = log_seq(&k)?;
            for r in log_head(&k, &v)?.recipients {
                if min_acked.get(&r).is_none_or(|m| *m < seq) {
                    *depth.entry(r).or_default() += 1;
                }
            }
        }
        let mut depth: Vec<(String, u64)> = depth.into_iter().collect();
        depth.sort();
        s.inbox_depth = depth;
        s.disk_bytes = self.inner.db.size_on_disk()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalRecord;

    fn entry(recipients: &[&str], at: u64) -> LogEntry {
        LogEntry {
            received_at_ms: at,
            sender: "UA".into(),
            recipients: recipients.iter().map(|s| s.to_string()).collect(),
            envelope: vec![1, 2, 3],
        }
    }

    #[test]
    fn append_dedupe_inbox_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            assert_eq!(
                s.append(MsgId([1; 16]), &entry(&["EE", "PL"], 10)).unwrap(),
                Appended::New(1)
            );
            assert_eq!(
                s.append(MsgId([2; 16]), &entry(&["EE"], 11)).unwrap(),
                Appended::New(2)
            );
            assert_eq!(
                s.append(MsgId([1; 16]), &entry(&["EE", "PL"], 12)).unwrap(),
                Appended::Duplicate(1)
            );
            assert_eq!(s.seen(&MsgId([2; 16])).unwrap(), Some(2));
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let ee: Vec<u64> = s
            .inbox_after("EE", 0, 10)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(ee, vec![1, 2]);
        assert_eq!(s.inbox_after("EE", 1, 10).unwrap().len(), 1);
        assert_eq!(s.inbox_after("PL", 0, 10).unwrap().len(), 1);
        assert_eq!(s.pending("EE", 0).unwrap(), 2);
        // Prefix isolation: "E" must not see "EE"'s inbox.
        assert_eq!(s.inbox_after("E", 0, 10).unwrap().len(), 0);
        // Seq numbers continue after reopen.
        assert_eq!(
            s.append(MsgId([3; 16]), &entry(&["EE"], 13)).unwrap(),
            Appended::New(3)
        );
    }

    #[test]
    fn gc_removes_only_what_every_known_device_acked() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let now = 1_000_000;
        s.append(MsgId([1; 16]), &entry(&["EE", "GB"], now))
            .unwrap();
        s.append(MsgId([2; 16]), &entry(&["GB"], now)).unwrap();
        s.touch_device("GB", "front-office", now).unwrap();
        s.touch_device("GB", "back-office", now).unwrap();
        s.ack("GB", "front-office", 2, now).unwrap();
        let st = s.gc(now, 100).unwrap();
        assert_eq!(st.acked_removed, 0, "back-office has not acked");
        s.ack("GB", "back-office", 2, now).unwrap();
        let st = s.gc(now, 100).unwrap();
        assert_eq!(st.acked_removed, 1, "seq 2 done; seq 1 still waits for EE");
        // GB's devices are past both; a new GB device would still get seq 1,
        // which stays stored until EE acknowledges it.
        assert_eq!(s.inbox_after("GB", 2, 10).unwrap().len(), 0);
        assert_eq!(s.inbox_after("GB", 0, 10).unwrap().len(), 1);
        assert_eq!(s.inbox_after("EE", 0, 10).unwrap().len(), 1);
        let depth = s.stats().unwrap().inbox_depth;
        assert_eq!(depth, vec![("EE".to_string(), 1)], "GB has nothing pending");
        // EE never connected: kept until retention, then expired.
        let st = s.gc(now + 1000, 100).unwrap();
        assert_eq!(st.expired, 1);
        assert_eq!(st.devices_forgotten, 2);
        assert_eq!(st.seen_pruned, 2);
        assert_eq!(s.stats().unwrap().messages, 0);
    }

    #[test]
    fn commit_log_is_replayed_into_sled_once() {
        let dir = tempfile::tempdir().unwrap();
        // A crash after the commit log's fdatasync but before any sled
        // checkpoint: the records exist only in the log.
        // One record in each of the two files (a checkpoint was switching).
        for seq in [1u64, 2] {
            let file = WAL_FILES[seq as usize - 1];
            let (mut wal, _) = Wal::open(&dir.path().join(file)).unwrap();
            wal.push(&WalRecord {
                seq,
                msg_id: MsgId([seq as u8; 16]),
                entry: entry(&["EE"], 10 + seq),
            });
            wal.commit().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        let got: Vec<u64> = s
            .inbox_after("EE", 0, 10)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(s.seen(&MsgId([2; 16])).unwrap(), Some(2));
        assert_eq!(s.last_seq(), 2);
        // Replay checkpointed sled and emptied the log.
        assert_eq!(
            std::fs::metadata(dir.path().join(WAL_FILES[0]))
                .unwrap()
                .len()
                + std::fs::metadata(dir.path().join(WAL_FILES[1]))
                    .unwrap()
                    .len(),
            0
        );
        assert_eq!(
            s.append(MsgId([3; 16]), &entry(&["EE"], 13)).unwrap(),
            Appended::New(3)
        );
        s.commit().unwrap();
        drop(s);
        // Records sled already has are skipped, not stored twice.
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.inbox_after("EE", 0, 10).unwrap().len(), 3);
        assert_eq!(
            s.append(MsgId([1; 16]), &entry(&["EE"], 14)).unwrap(),
            Appended::Duplicate(1)
        );
    }

    #[test]
    fn checkpoint_switches_files_and_keeps_queued_records() {
        let dir = tempfile::tempdir().unwrap();
        let len = |i: usize| {
            std::fs::metadata(dir.path().join(WAL_FILES[i]))
                .unwrap()
                .len()
        };
        let s = SledStore::open(dir.path()).unwrap();
        s.append(MsgId([1; 16]), &entry(&["EE"], 1)).unwrap();
        s.commit().unwrap();
        assert!(len(0) > 0 && len(1) == 0);
        // Queued, not yet committed, when the checkpoint switches files.
        s.append(MsgId([2; 16]), &entry(&["EE"], 2)).unwrap();
        s.inner.checkpoint().unwrap();
        assert_eq!(len(0), 0, "retired file emptied after sled was flushed");
        s.commit().unwrap();
        assert!(len(1) > 0, "the queued record went to the new file");
        s.flush().unwrap();
        assert_eq!((len(0), len(1)), (0, 0));
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.inbox_after("EE", 0, 10).unwrap().len(), 2);
        assert_eq!(s.last_seq(), 2);
    }

    #[test]
    fn torn_commit_log_keeps_the_intact_records() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(&dir.path().join(WAL_FILES[0])).unwrap();
            wal.push(&WalRecord {
                seq: 1,
                msg_id: MsgId([1; 16]),
                entry: entry(&["EE"], 10),
            });
            wal.commit().unwrap();
        }
        let path = dir.path().join(WAL_FILES[0]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[9, 0, 0]); // half a header
        std::fs::write(&path, &bytes).unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.inbox_after("EE", 0, 10).unwrap().len(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn devices_are_listed_per_participant() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.touch_device("GB", "front-office", 1).unwrap();
        s.touch_device("GB", "back-office", 1).unwrap();
        s.touch_device("GBX", "other", 1).unwrap();
        let mut d = s.devices("GB").unwrap();
        d.sort();
        assert_eq!(d, vec!["back-office", "front-office"]);
        assert!(s.devices("NL").unwrap().is_empty());
    }

    #[test]
    fn cursors_never_go_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        s.ack("EE", "d", 5, 1).unwrap();
        s.ack("EE", "d", 3, 2).unwrap();
        assert_eq!(s.touch_device("EE", "d", 3).unwrap(), 5);
        assert_eq!(s.touch_device("EE", "new", 3).unwrap(), 0);
    }

    /// Item 3: the stored next seq is written only at checkpoints. If the
    /// log entries above it were collected (everyone acked them) and sled
    /// persisted that before the crash, the log no longer shows those seqs;
    /// the commit log and the cursors still do, and replay must honour them.
    #[test]
    fn replay_never_reuses_a_seq_whose_entry_was_collected() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open_with(dir.path(), None).unwrap();
            s.touch_device("EE", "d", 10).unwrap();
            for i in 1..=3u8 {
                s.append(MsgId([i; 16]), &entry(&["EE"], 10)).unwrap();
            }
            s.flush().unwrap(); // checkpoint: stored next seq = 4
            for i in 4..=5u8 {
                s.append(MsgId([i; 16]), &entry(&["EE"], 10)).unwrap();
            }
            s.commit().unwrap(); // 4 and 5 are in the commit log only
            s.ack("EE", "d", 5, 11).unwrap();
            // What a GC pass does before its own checkpoint, and what sled's
            // background flusher may persist before a crash.
            for seq in 1..=5 {
                s.inner.tree.remove(log_key(seq)).unwrap();
            }
            s.inner.db.flush().unwrap();
            // Crash: no checkpoint.
        }
        let s = SledStore::open_with(dir.path(), None).unwrap();
        assert_eq!(s.last_seq(), 5);
        assert_eq!(
            s.append(MsgId([6; 16]), &entry(&["EE"], 12)).unwrap(),
            Appended::New(6),
            "seqs 4 and 5 were handed out and acknowledged"
        );
        let after_cursor: Vec<u64> = s
            .inbox_after("EE", 5, 10)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(after_cursor, vec![6], "the device still receives it");
        s.commit().unwrap();
        drop(s);
        // The replay persisted the corrected next seq: a second restart
        // without any commit-log records keeps it.
        let s = SledStore::open_with(dir.path(), None).unwrap();
        assert!(s.last_seq() >= 6);
    }

    /// Item 2: after a failed commit the store refuses every write, never
    /// retries the sync (even once the disk works again), never truncates
    /// the commit log, and reports itself unhealthy; a restart replays.
    #[test]
    fn a_failed_commit_stops_every_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let wal_path = dir.path().join(WAL_FILES[0]);
        {
            let s = SledStore::open_with(dir.path(), None).unwrap();
            s.append(MsgId([1; 16]), &entry(&["EE"], 10)).unwrap();
            s.commit().unwrap();
            s.append(MsgId([2; 16]), &entry(&["EE"], 10)).unwrap();
            s.inner.state.lock().unwrap().wals[0].break_file_for_test(&wal_path);
            assert!(s.commit().is_err());
            assert!(s.failure().is_some());
            assert!(!s.healthy());
            s.inner.state.lock().unwrap().wals[0].repair_file_for_test(&wal_path);
            assert!(matches!(s.commit(), Err(StoreError::Failed(_))));
            assert!(matches!(
                s.append(MsgId([3; 16]), &entry(&["EE"], 10)),
                Err(StoreError::Failed(_))
            ));
            assert!(matches!(s.flush(), Err(StoreError::Failed(_))));
            assert!(matches!(s.gc(20, 1), Err(StoreError::Failed(_))));
            assert!(
                std::fs::metadata(&wal_path).unwrap().len() > 0,
                "the commit log is kept for replay"
            );
        }
        let s = SledStore::open_with(dir.path(), None).unwrap();
        assert!(s.healthy());
        assert_eq!(s.seen(&MsgId([1; 16])).unwrap(), Some(1));
        let next = s.append(MsgId([3; 16]), &entry(&["EE"], 10)).unwrap();
        assert!(matches!(next, Appended::New(n) if n >= 2), "{next:?}");
    }
}
