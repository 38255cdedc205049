//! [`SledStore`]: the sled-backed [`Store`] with its commit log in front.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tallinn_common::message::MsgId;
use tallinn_common::roster::SignedEntry;

use super::checkpoint::checkpoint_loop;
use super::index::{InboxIndex, Indexed};
use super::keys::{
    archive_checkpoint_key, be_u64, cursor_key, encode_entry, log_head, log_key, log_seq,
    roster_key, seen_key, write_message, NEXT_SEQ_KEY,
};
use super::wal::Wal;
use super::{
    device_recipient, split_recipient, Appended, Cursor, GcStats, LogEntry, Store, StoreError,
    StoreStats, StoredMessage,
};

/// A cursor with its raw key (for deletion).
type CursorRecord = (Vec<u8>, Cursor);

/// The sled-backed [`Store`].
///
/// A background thread (`tallinn-checkpoint`) checkpoints sled about once a
/// second while the commit log grows; it holds the store only while it
/// works and stops when the store is dropped.
pub struct SledStore {
    pub(super) inner: Arc<Inner>,
    /// Wakes the checkpoint thread early (the commit log grew large);
    /// dropping it stops the thread.
    nudge: Option<mpsc::SyncSender<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
}

pub(super) struct Inner {
    /// The data directory (for backups of the files beside sled).
    pub(super) dir: std::path::PathBuf,
    pub(super) db: sled::Db,
    /// fdatasync of sled's log: sled's own flush is not a power-cut barrier.
    pub(super) log: tallinn_host::durable::SledLog,
    pub(super) tree: sled::Tree,
    /// Serialises dedupe-check + seq assignment + sled writes + commit log.
    pub(super) state: Mutex<Writer>,
    /// One checkpoint at a time.
    pub(super) checkpointing: Mutex<()>,
    /// Set by the first failed write, sync or checkpoint; from then on every
    /// write is refused (fail-stop, never a retried `fsync`).
    pub(super) failed: Mutex<Option<String>>,
    /// Inboxes, stored bytes per sender, totals (see `index`).
    pub(super) index: Mutex<InboxIndex>,
    /// Full scans of the log so far (at open and by GC passes only).
    pub(super) log_scans: std::sync::atomic::AtomicU64,
}

/// The write side, under one lock.
pub(super) struct Writer {
    pub(super) next_seq: u64,
    /// Two commit-log files: appends go to `wals[active]`; a checkpoint
    /// switches files, flushes sled without blocking appends, then empties
    /// the retired one.
    pub(super) wals: [Wal; 2],
    pub(super) active: usize,
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
        let db = tallinn_host::durable::retry_while_locked(|| config.open())?;
        let log = tallinn_host::durable::SledLog::open(dir)?;
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
        // The in-memory index: the one log scan outside GC.
        let mut index = InboxIndex::default();
        for kv in tree.scan_prefix(b"L") {
            let (k, v) = kv?;
            let head = log_head(&k, &v)?;
            index.add(&Indexed {
                seq: log_seq(&k)?,
                sender: head.sender,
                recipients: head.recipients,
                bytes: v.len() as u64,
            });
        }
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
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
            index: Mutex::new(index),
            log_scans: std::sync::atomic::AtomicU64::new(1),
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

    fn index(&self) -> std::sync::MutexGuard<'_, InboxIndex> {
        self.inner.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Full scans of the log since the store was opened (the one at open
    /// included; only GC passes add more): starting sessions, backlog reads
    /// and metrics read the in-memory index instead.
    pub fn log_scans(&self) -> u64 {
        self.inner
            .log_scans
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Creates or refreshes a device cursor: acked moves to at least
    /// `up_to`, last seen to at least `now_ms`. Returns the acked seq after.
    /// (A cursor that does not decode starts again at 0: a redelivery.)
    fn update_cursor(
        &self,
        participant: &str,
        device: &str,
        up_to: u64,
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
                c.acked = c.acked.max(up_to);
                c.last_seen_ms = c.last_seen_ms.max(now_ms);
                acked = c.acked;
                postcard::to_allocvec(&c).ok()
            })
            .map_err(|e| self.inner.fail(e.into()))?;
        Ok(acked)
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
        let indexed = Indexed {
            seq,
            sender: entry.sender.clone(),
            recipients: entry.recipients.clone(),
            bytes: encoded.len() as u64,
        };
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
        self.index().add(&indexed);
        Ok(Appended::New(seq))
    }

    fn commit(&self) -> Result<(), StoreError> {
        self.inner.check_failed()?;
        let mut w = self.inner.state.lock().map_err(|_| StoreError::Poisoned)?;
        let active = w.active;
        let wal = w.wals.get_mut(active).ok_or(StoreError::Poisoned)?;
        wal.commit().map_err(|e| self.inner.fail(e.into()))?;
        if wal.len() >= super::wal::CHECKPOINT_BYTES {
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
        device: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let own = device_recipient(participant, device);
        let seqs = self.index().after(&[participant, &own], after, limit);
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let key = log_key(seq);
            // Gone meanwhile: collected by a GC pass after the lookup.
            let Some(v) = self.inner.tree.get(key)? else {
                continue;
            };
            let entry: LogEntry =
                postcard::from_bytes(&v).map_err(|_| StoreError::Corrupt(hex::encode(key)))?;
            out.push(StoredMessage {
                seq,
                received_at_ms: entry.received_at_ms,
                envelope: entry.envelope,
            });
        }
        Ok(out)
    }

    fn pending(&self, participant: &str, device: &str, after: u64) -> Result<u64, StoreError> {
        let own = device_recipient(participant, device);
        Ok(self.index().pending(&[participant, &own], after))
    }

    fn roster_log(&self) -> Result<Vec<(SignedEntry, u64)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(b"R") {
            let (k, v) = kv?;
            let corrupt = || StoreError::Corrupt(hex::encode(&k));
            let index = be_u64(k.get(1..).unwrap_or_default(), &k)?;
            if index != out.len() as u64 {
                return Err(corrupt());
            }
            let at = be_u64(v.get(..8).unwrap_or_default(), &k)?;
            let entry =
                SignedEntry::decode(v.get(8..).unwrap_or_default()).map_err(|_| corrupt())?;
            out.push((entry, at));
        }
        Ok(out)
    }

    fn append_roster_entry(
        &self,
        index: u64,
        entry: &SignedEntry,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.inner.check_failed()?;
        let mut value = now_ms.to_be_bytes().to_vec();
        value.extend_from_slice(&entry.encode());
        let write = || -> Result<(), StoreError> {
            self.inner.tree.insert(roster_key(index), value)?;
            self.inner.db.flush()?;
            self.inner.log.sync()?;
            Ok(())
        };
        write().map_err(|e| self.inner.fail(e))
    }

    fn archive_checkpoint(
        &self,
        participant: &str,
        device: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .inner
            .tree
            .get(archive_checkpoint_key(participant, device))?
            .map(|v| v.to_vec()))
    }

    fn put_archive_checkpoint(
        &self,
        participant: &str,
        device: &str,
        checkpoint: &[u8],
    ) -> Result<(), StoreError> {
        self.inner.check_failed()?;
        let write = || -> Result<(), StoreError> {
            self.inner
                .tree
                .insert(archive_checkpoint_key(participant, device), checkpoint)?;
            self.inner.db.flush()?;
            self.inner.log.sync()?;
            Ok(())
        };
        write().map_err(|e| self.inner.fail(e))
    }

    fn stored_bytes(&self, sender: &str) -> u64 {
        self.index().stored_by(sender)
    }

    fn touch_device(
        &self,
        participant: &str,
        device: &str,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        self.update_cursor(participant, device, 0, now_ms)
    }

    fn ack(
        &self,
        participant: &str,
        device: &str,
        up_to: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.update_cursor(participant, device, up_to, now_ms)
            .map(|_| ())
    }

    fn gc(&self, now_ms: u64, retention_ms: u64) -> Result<GcStats, StoreError> {
        self.inner.check_failed()?;
        let horizon = now_ms.saturating_sub(retention_ms);
        let mut stats = GcStats::default();
        let mut batch = sled::Batch::default();

        // 1. Device cursors: forget devices unseen for longer than retention;
        //    the rest give each participant's minimum acked seq.
        let mut min_acked: HashMap<String, u64> = HashMap::new();
        let mut device_acked: HashMap<String, u64> = HashMap::new();
        for (participant, devices) in self.cursors()? {
            let mut min: Option<u64> = None;
            for (key, c) in devices {
                if c.last_seen_ms < horizon {
                    batch.remove(key);
                    stats.devices_forgotten += 1;
                } else {
                    min = Some(min.map_or(c.acked, |m: u64| m.min(c.acked)));
                    let device = key
                        .get(participant.len() + 2..)
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    device_acked.insert(device_recipient(&participant, &device), c.acked);
                }
            }
            if let Some(m) = min {
                min_acked.insert(participant, m);
            }
        }

        // 2. Log: expire old messages; drop those every known device of
        //    every recipient acknowledged.
        self.inner
            .log_scans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut removed = Vec::new();
        for kv in self.inner.tree.scan_prefix(b"L") {
            let (k, v) = kv?;
            let seq = log_seq(&k)?;
            let head = log_head(&k, &v)?;
            let expired = head.received_at_ms < horizon;
            let acked = !expired
                && head.recipients.iter().all(|r| match split_recipient(r) {
                    (_, Some(_)) => device_acked.get(r).is_some_and(|m| *m >= seq),
                    (p, None) => min_acked.get(p).is_some_and(|m| *m >= seq),
                });
            if expired || acked {
                batch.remove(k);
                if expired {
                    stats.expired += 1;
                } else {
                    stats.acked_removed += 1;
                }
                removed.push(Indexed {
                    seq,
                    sender: head.sender,
                    recipients: head.recipients,
                    bytes: v.len() as u64,
                });
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
        self.index().remove(&removed);
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

    fn backup(&self, dir: &Path) -> Result<super::BackupReport, StoreError> {
        self.backup_to(dir)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        let mut min_acked: HashMap<String, u64> = HashMap::new();
        for (participant, devices) in self.cursors()? {
            if let Some(m) = devices.iter().map(|(_, c)| c.acked).min() {
                min_acked.insert(participant, m);
            }
        }
        {
            let index = self.index();
            (s.messages, s.envelope_bytes) = index.totals();
            let mut depth: Vec<(String, u64)> = index
                .participants()
                .map(|key| {
                    // Depth per recipient key: a participant (version 1) or
                    // one device (version 2), above the participant's
                    // slowest device.
                    let (p, _) = split_recipient(key);
                    let after = min_acked.get(p).copied().unwrap_or(0);
                    (key.to_string(), index.pending(&[key], after))
                })
                .filter(|(_, n)| *n > 0)
                .collect();
            depth.sort();
            s.inbox_depth = depth;
        }
        s.disk_bytes = self.inner.db.size_on_disk()?;
        Ok(s)
    }
}
