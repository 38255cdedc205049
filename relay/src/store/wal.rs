//! The commit log: the write-ahead log in front of the sled store.
//!
//! Group commit needs one cheap durability barrier per batch. sled's own
//! flush costs about 1.5 ms of CPU per call on the project's machine (its
//! I/O thread pool, `sync_file_range`, page rewrites), which made storage
//! half of the relay's CPU per message. So a batch's appends are written to
//! this append-only file and made durable with one `pwrite` + `fdatasync`
//! (about 80 µs of CPU), and `Accepted` is sent after that. sled receives
//! the same writes unflushed and is *checkpointed* (sled flush, `fdatasync`
//! of its log, then the file truncated) about once a second and whenever
//! the file passes [`CHECKPOINT_BYTES`]. The store keeps two such files and
//! switches between them at each checkpoint, so that sled is flushed while
//! sends go on (`super::sled_store`). At open, records still in the file
//! are replayed into sled (idempotently: a record whose msg_id sled already
//! has is skipped) and the store is checkpointed.
//!
//! # Record format
//! ```text
//! len: u32 LE | check: first 16 bytes of SHA-256(payload) | payload: len bytes
//! payload = postcard(WalRecord { seq, msg_id, entry: LogEntry })
//! ```
//! Replay stops at the first record that is short, longer than
//! [`MAX_RECORD_LEN`], fails its check or does not decode: a torn tail from
//! a crash mid-write. Nothing after it was acknowledged (a batch is
//! acknowledged only after its whole write was synced), so nothing
//! acknowledged is lost; the discarded byte count is logged.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tallinn_common::message::MsgId;

use super::LogEntry;

/// Checkpoint once the file is this large (bounds replay time and disk use).
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

/// Largest record replay accepts (a message is at most a few MiB).
pub const MAX_RECORD_LEN: u32 = 64 << 20;

const HEADER_LEN: usize = 4 + 16;

/// One appended message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalRecord {
    /// The seq the message was stored under.
    pub seq: u64,
    /// Its msg_id (the dedupe key).
    pub msg_id: MsgId,
    /// The stored entry.
    pub entry: LogEntry,
}

/// What [`Wal::open`] found in an existing file.
#[derive(Debug, Default)]
pub struct Replay {
    /// Intact records, in write order.
    pub records: Vec<WalRecord>,
    /// Bytes after the last intact record (a torn tail), discarded.
    pub discarded_bytes: u64,
    /// Why replay stopped early, if it did.
    pub stopped: Option<&'static str>,
}

/// The open commit log.
#[derive(Debug)]
pub struct Wal {
    file: File,
    /// Bytes of intact records in the file (where the next write goes).
    len: u64,
    /// Encoded records not yet written.
    pending: Vec<u8>,
    /// Set by the first failed write or sync: every later commit fails with
    /// it. After a failed `fdatasync` the kernel may have dropped the dirty
    /// pages and cleared the error, so a retry could "succeed" over lost
    /// data; the only sound recovery is a restart that replays the file.
    failed: Option<String>,
}

impl Wal {
    /// Opens (or creates) the log at `path` and reads its intact records.
    ///
    /// # Errors
    /// I/O failures.
    pub fn open(path: &Path) -> io::Result<(Self, Replay)> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed {
            tallinn_host::durable::sync_parent(path)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let replay = parse(&bytes);
        let len = bytes.len() as u64 - replay.discarded_bytes;
        Ok((
            Self {
                file,
                len,
                pending: Vec::new(),
                failed: None,
            },
            replay,
        ))
    }

    /// Queues a record for the next [`Wal::commit`].
    pub fn push(&mut self, record: &WalRecord) {
        // invariant: plain data; postcard encoding cannot fail.
        let entry = postcard::to_allocvec(&record.entry).expect("invariant: entry encodes");
        self.push_encoded(record.seq, &record.msg_id, &entry);
    }

    /// [`Wal::push`] with the entry already postcard-encoded: the payload is
    /// `postcard((seq, msg_id))` followed by those bytes, which is exactly
    /// `postcard(WalRecord)` (postcard concatenates struct fields).
    pub fn push_encoded(&mut self, seq: u64, msg_id: &MsgId, encoded_entry: &[u8]) {
        append_record(&mut self.pending, seq, msg_id, encoded_entry);
    }

    /// Takes the queued records out (to move them to another file).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Queues records taken from another file, before any queued here.
    pub fn put_pending(&mut self, mut records: Vec<u8>) {
        records.append(&mut self.pending);
        self.pending = records;
    }

    /// Whether records are queued.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Bytes of records in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the queued records after the last intact one and syncs them
    /// (`fdatasync`): the barrier behind `Accepted`.
    ///
    /// # Errors
    /// I/O failures. The first failure is final: this and every later
    /// commit or reset fails (fail-stop; never a retried `fdatasync`).
    pub fn commit(&mut self) -> io::Result<()> {
        self.check_failed()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(&self.pending))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.failed = Some(e.to_string());
            return Err(e);
        }
        self.len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    fn check_failed(&self) -> io::Result<()> {
        match &self.failed {
            Some(why) => Err(io::Error::other(format!(
                "the commit log failed earlier ({why}); restart to replay it"
            ))),
            None => Ok(()),
        }
    }

    /// Empties the file (after a checkpoint made every record in it durable
    /// in sled). Queued records are kept for the next commit.
    ///
    /// # Errors
    /// I/O failures, and any after a failed commit (the file is then kept
    /// for replay).
    pub fn reset(&mut self) -> io::Result<()> {
        self.check_failed()?;
        self.file.set_len(0)?;
        // Not synced on purpose: if the truncation is lost in a crash, the
        // records are replayed again, which is idempotent.
        self.len = 0;
        Ok(())
    }
}

/// Fault injection for tests: the file handle is swapped for a read-only
/// one, so the next write fails as a failing disk would.
#[cfg(test)]
impl Wal {
    pub(crate) fn break_file_for_test(&mut self, path: &Path) {
        self.file = File::open(path).expect("test: reopen read-only");
    }

    pub(crate) fn repair_file_for_test(&mut self, path: &Path) {
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("test: reopen read-write");
    }
}

/// Appends one record in the file format to `out` (the entry already
/// postcard-encoded).
fn append_record(out: &mut Vec<u8>, seq: u64, msg_id: &MsgId, encoded_entry: &[u8]) {
    // invariant: plain data; postcard encoding cannot fail.
    let mut payload = postcard::to_allocvec(&(seq, msg_id)).expect("invariant: encodes");
    payload.extend_from_slice(encoded_entry);
    let check = Sha256::digest(&payload);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(check.get(..16).unwrap_or_default());
    out.extend_from_slice(&payload);
}

/// One record in the file format (what a commit writes for it).
pub fn encode_record(record: &WalRecord) -> Vec<u8> {
    // invariant: plain data; postcard encoding cannot fail.
    let entry = postcard::to_allocvec(&record.entry).expect("invariant: entry encodes");
    let mut out = Vec::new();
    append_record(&mut out, record.seq, &record.msg_id, &entry);
    out
}

/// What replay reads from a commit-log file's bytes: the intact records up
/// to the first damaged one (pure; [`Wal::open`] uses it, and so does the
/// fuzz target).
pub fn replay_bytes(bytes: &[u8]) -> Replay {
    parse(bytes)
}

/// Splits file bytes into intact records; stops at the first damaged one.
fn parse(bytes: &[u8]) -> Replay {
    let mut replay = Replay::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + HEADER_LEN) else {
            replay.stopped = Some("truncated record header");
            break;
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(header.get(..4).unwrap_or(&[0; 4]));
        let len = u32::from_le_bytes(len);
        if len > MAX_RECORD_LEN {
            replay.stopped = Some("record length out of range");
            break;
        }
        let start = at + HEADER_LEN;
        let Some(payload) = bytes.get(start..start + len as usize) else {
            replay.stopped = Some("truncated record");
            break;
        };
        if Sha256::digest(payload).get(..16) != header.get(4..) {
            replay.stopped = Some("record checksum mismatch");
            break;
        }
        match postcard::from_bytes::<WalRecord>(payload) {
            Ok(r) => replay.records.push(r),
            Err(_) => {
                replay.stopped = Some("record does not decode");
                break;
            }
        }
        at = start + len as usize;
    }
    replay.discarded_bytes = (bytes.len() - at.min(bytes.len())) as u64;
    replay
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> WalRecord {
        WalRecord {
            seq,
            msg_id: MsgId([seq as u8; 16]),
            entry: LogEntry {
                received_at_ms: seq,
                sender: "UA".into(),
                recipients: vec!["EE".into()],
                envelope: vec![7; 100],
            },
        }
    }

    fn written(n: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.wal");
        let (mut wal, replay) = Wal::open(&path).unwrap();
        assert!(replay.records.is_empty());
        for s in 1..=n {
            wal.push(&record(s));
        }
        wal.commit().unwrap();
        (dir, path)
    }

    /// Item 2: a failed write or sync is never retried as if nothing
    /// happened, even once the disk works again, and the file is kept.
    #[test]
    fn a_failed_commit_is_final_and_keeps_the_file() {
        let (_dir, path) = written(2);
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.push(&record(3));
        wal.break_file_for_test(&path);
        assert!(wal.commit().is_err());
        // The "disk" recovers: a retry would now succeed, and must not run.
        wal.repair_file_for_test(&path);
        let again = wal.commit().unwrap_err().to_string();
        assert!(again.contains("failed earlier"), "{again}");
        wal.push(&record(4));
        assert!(wal.commit().is_err());
        assert!(wal.reset().is_err(), "never truncated after a failure");
        let (_, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.records, vec![record(1), record(2)]);
    }

    #[test]
    fn records_survive_reopen_and_reset_empties() {
        let (_dir, path) = written(3);
        let (mut wal, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.records, vec![record(1), record(2), record(3)]);
        assert_eq!(replay.discarded_bytes, 0);
        assert!(replay.stopped.is_none());
        wal.reset().unwrap();
        assert!(wal.is_empty());
        wal.push(&record(4));
        wal.commit().unwrap();
        let (_, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.records, vec![record(4)]);
    }

    #[test]
    fn torn_tail_is_discarded_and_overwritten() {
        let (_dir, path) = written(2);
        let full = std::fs::read(&path).unwrap();
        // Cut the last record in half.
        std::fs::write(&path, &full[..full.len() - 40]).unwrap();
        let (mut wal, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.records, vec![record(1)]);
        assert_eq!(replay.stopped, Some("truncated record"));
        assert!(replay.discarded_bytes > 0);
        // The next commit writes over the torn bytes.
        wal.push(&record(9));
        wal.commit().unwrap();
        let (_, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.records, vec![record(1), record(9)]);
        assert!(replay.stopped.is_none());
    }

    #[test]
    fn damaged_record_stops_replay() {
        let (_dir, path) = written(2);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.records, vec![record(1)]);
        assert_eq!(replay.stopped, Some("record checksum mismatch"));
    }

    #[test]
    fn absurd_length_and_short_header_stop_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.wal");
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.stopped, Some("record length out of range"));
        assert_eq!(replay.discarded_bytes, bytes.len() as u64);
        std::fs::write(&path, [1, 2, 3]).unwrap();
        let (_, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.stopped, Some("truncated record header"));
    }

    #[test]
    fn valid_checksum_but_garbage_payload_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.wal");
        let payload = [0xffu8; 8];
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&Sha256::digest(payload)[..16]);
        bytes.extend_from_slice(&payload);
        std::fs::write(&path, &bytes).unwrap();
        let (_, replay) = Wal::open(&path).unwrap();
        assert_eq!(replay.stopped, Some("record does not decode"));
        assert!(replay.records.is_empty());
    }
}
