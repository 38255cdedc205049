//! The outbox: a message is sealed and stored here (flushed) before the
//! first send attempt, and leaves only when the relay answered `Accepted`
//! (or `duplicate`, which means an earlier attempt was accepted), or a
//! permanent refusal. A crash or a lost connection therefore loses nothing,
//! and a resend can never produce a second copy: the envelope (and its
//! msg_id) is the same bytes every time.
//!
//! A permanent refusal never makes a message vanish silently: the entry
//! stays, marked refused with the relay's code and reason, is no longer
//! sent, and is shown by `tallinn outbox` until the user re-seals and
//! resends it ([`Outbox::replace`]) or drops it ([`Outbox::drop_entry`]).
//!
//! Layout: sled tree `outbox` in the archive database:
//! - key `msg_id` (16 bytes), value
//!   `nonce ‖ XChaCha20-Poly1305(k_rec, postcard(OutboxEntry), aad = "tallinn/1 outbox" ‖ msg_id)`;
//! - key `"R" ‖ msg_id` (17 bytes), value
//!   `nonce ‖ XChaCha20-Poly1305(k_rec, postcard(Refusal), aad = "tallinn/1 outbox refusal" ‖ msg_id)`
//!   for an entry the relay refused for good.
//!
//! Every change that touches more than one key is one sled batch followed
//! by a durable flush, so a crash leaves either the old state or the new.

use serde::{Deserialize, Serialize};
use tallinn_common::message::MsgId;
use tallinn_common::wire::ErrorCode;
use zeroize::Zeroizing;

use crate::archive::{ArchiveError, Sealer};

/// A message waiting for `Accepted`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Message id.
    pub msg_id: MsgId,
    /// Channel.
    pub channel: String,
    /// Subject (for `tallinn outbox`).
    pub subject: String,
    /// When it was sealed, ms.
    pub created_at_ms: u64,
    /// The sealed envelope, sent verbatim on every attempt.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    /// Its content key (the archived sent copy stays verifiable).
    pub content_key: [u8; 32],
    /// Attempts so far.
    pub attempts: u32,
}

impl std::fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxEntry")
            .field("msg_id", &self.msg_id)
            .field("channel", &self.channel)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

impl Drop for OutboxEntry {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.content_key);
    }
}

/// A permanent refusal of an outbox entry by the relay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refusal {
    /// The relay's error code.
    pub code: ErrorCode,
    /// The relay's reason (network text: escape before printing).
    pub reason: String,
    /// When the refusal arrived, ms since the epoch.
    pub at_ms: u64,
}

/// An outbox entry with its refusal, if the relay refused it for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The entry.
    pub entry: OutboxEntry,
    /// Set when the entry is no longer sent.
    pub refused: Option<Refusal>,
}

/// The persistent outbox.
pub struct Outbox {
    db: crate::archive::ArchiveDb,
    tree: sled::Tree,
    sealer: Sealer,
}

fn aad(msg_id: &MsgId) -> Vec<u8> {
    let mut a = b"tallinn/1 outbox".to_vec();
    a.extend_from_slice(&msg_id.0);
    a
}

fn refusal_aad(msg_id: &MsgId) -> Vec<u8> {
    let mut a = b"tallinn/1 outbox refusal".to_vec();
    a.extend_from_slice(&msg_id.0);
    a
}

fn refusal_key(msg_id: &MsgId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'R';
    k[1..].copy_from_slice(&msg_id.0);
    k
}

impl Outbox {
    /// Opens the outbox in the given database with the archive record key.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn open(db: &crate::archive::ArchiveDb, key: &[u8; 32]) -> Result<Self, ArchiveError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree("outbox")?,
            sealer: Sealer::new(key),
        })
    }

    /// Stores an entry durably (flushes before returning).
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn put(&self, e: &OutboxEntry) -> Result<(), ArchiveError> {
        self.tree.insert(e.msg_id.0, self.sealed_entry(e))?;
        self.db.flush()?;
        Ok(())
    }

    fn sealed_entry(&self, e: &OutboxEntry) -> Vec<u8> {
        // invariant: plain data; postcard encoding cannot fail.
        let plain = Zeroizing::new(postcard::to_allocvec(e).expect("invariant: entry encodes"));
        self.sealer.seal(&plain, &aad(&e.msg_id))
    }

    /// Removes an entry and its refusal (durable with the next flush).
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn remove(&self, msg_id: &MsgId) -> Result<(), ArchiveError> {
        let mut b = sled::Batch::default();
        b.remove(&msg_id.0);
        b.remove(&refusal_key(msg_id));
        self.tree.apply_batch(b)?;
        Ok(())
    }

    /// Removes an entry and its refusal durably (`tallinn outbox drop`).
    /// Returns whether there was one.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn drop_entry(&self, msg_id: &MsgId) -> Result<bool, ArchiveError> {
        let existed = self.tree.contains_key(msg_id.0)?;
        self.remove(msg_id)?;
        self.db.flush()?;
        Ok(existed)
    }

    /// Replaces entry `old` by `new` (a re-sealed copy) in one durable step:
    /// one sled batch inserts the new entry and removes the old one and its
    /// refusal, then the database is flushed. A crash leaves either the old
    /// entry or the new one, never both (both would send the message twice
    /// under two msg_ids) and never neither.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn replace(&self, old: &MsgId, new: &OutboxEntry) -> Result<(), ArchiveError> {
        let mut b = sled::Batch::default();
        b.insert(&new.msg_id.0, self.sealed_entry(new));
        if *old != new.msg_id {
            b.remove(&old.0);
        }
        b.remove(&refusal_key(old));
        self.tree.apply_batch(b)?;
        self.db.flush()?;
        Ok(())
    }

    /// Marks an entry refused for good (durable): it stays in the outbox,
    /// is no longer sent, and `tallinn outbox` shows the refusal. Does
    /// nothing if the entry is gone.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn mark_refused(&self, msg_id: &MsgId, refusal: &Refusal) -> Result<(), ArchiveError> {
        if !self.tree.contains_key(msg_id.0)? {
            return Ok(());
        }
        // invariant: plain data; postcard encoding cannot fail.
        let plain = postcard::to_allocvec(refusal).expect("invariant: refusal encodes");
        self.tree.insert(
            refusal_key(msg_id),
            self.sealer.seal(&plain, &refusal_aad(msg_id)),
        )?;
        self.db.flush()?;
        Ok(())
    }

    /// The refusal of an entry, if it was refused for good.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn refusal(&self, msg_id: &MsgId) -> Result<Option<Refusal>, ArchiveError> {
        match self.tree.get(refusal_key(msg_id))? {
            Some(v) => {
                let plain = self
                    .sealer
                    .open(&v, &refusal_aad(msg_id))
                    .ok_or_else(|| ArchiveError::Unreadable(format!("outbox refusal {msg_id}")))?;
                postcard::from_bytes(&plain)
                    .map(Some)
                    .map_err(|_| ArchiveError::Unreadable(format!("outbox refusal {msg_id}")))
            }
            None => Ok(None),
        }
    }

    /// One entry.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn get(&self, msg_id: &MsgId) -> Result<Option<OutboxEntry>, ArchiveError> {
        match self.tree.get(msg_id.0)? {
            Some(v) => self.decode(msg_id, &v).map(Some),
            None => Ok(None),
        }
    }

    fn decode(&self, msg_id: &MsgId, v: &[u8]) -> Result<OutboxEntry, ArchiveError> {
        let plain = self
            .sealer
            .open(v, &aad(msg_id))
            .ok_or_else(|| ArchiveError::Unreadable(format!("outbox {msg_id}")))?;
        postcard::from_bytes(&plain)
            .map_err(|_| ArchiveError::Unreadable(format!("outbox {msg_id}")))
    }

    /// Every entry with its refusal, oldest first.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn list(&self) -> Result<Vec<Listed>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            match k.len() {
                16 => {}
                17 if k.first() == Some(&b'R') => continue,
                _ => return Err(ArchiveError::Unreadable("outbox key".into())),
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(&k);
            let id = MsgId(id);
            out.push(Listed {
                entry: self.decode(&id, &v)?,
                refused: self.refusal(&id)?,
            });
        }
        out.sort_by_key(|l| l.entry.created_at_ms);
        Ok(out)
    }

    /// Every entry still to be sent (not refused for good), oldest first.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn pending(&self) -> Result<Vec<OutboxEntry>, ArchiveError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|l| l.refused.is_none())
            .map(|l| l.entry)
            .collect())
    }

    /// The unique entry whose hex msg_id starts with `prefix`.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn find(&self, prefix: &str) -> Result<Option<Listed>, ArchiveError> {
        let prefix = prefix.to_ascii_lowercase();
        let mut found = self
            .list()?
            .into_iter()
            .filter(|l| l.entry.msg_id.to_hex().starts_with(&prefix));
        match (found.next(), found.next()) {
            (Some(one), None) if !prefix.is_empty() => Ok(Some(one)),
            _ => Ok(None),
        }
    }

    /// Number of entries, refused ones included.
    pub fn len(&self) -> usize {
        self.tree
            .iter()
            .keys()
            .filter(|k| k.as_ref().is_ok_and(|k| k.len() == 16))
            .count()
    }

    /// Number of entries still to be sent (refused ones not counted).
    pub fn pending_len(&self) -> usize {
        let (mut entries, mut refused) = (0usize, 0usize);
        for k in self.tree.iter().keys().flatten() {
            match k.len() {
                16 => entries += 1,
                17 => refused += 1,
                _ => {}
            }
        }
        entries.saturating_sub(refused)
    }

    /// Whether the outbox holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u8, at: u64) -> OutboxEntry {
        OutboxEntry {
            msg_id: MsgId([id; 16]),
            channel: "plenary".into(),
            subject: format!("subject {id}"),
            created_at_ms: at,
            envelope: vec![id; 3],
            content_key: [id; 32],
            attempts: 0,
        }
    }

    /// What a power cut would leave: the files as they are on disk now,
    /// copied while the database is still open.
    fn crash_copy(from: &std::path::Path) -> tempfile::TempDir {
        fn copy(from: &std::path::Path, to: &std::path::Path) {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                let target = to.join(e.file_name());
                if e.file_type().unwrap().is_dir() {
                    copy(&e.path(), &target);
                } else {
                    std::fs::copy(e.path(), target).unwrap();
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        copy(from, dir.path());
        dir
    }

    /// Item 4: a re-seal replaces the entry in one durable step. Without it
    /// (put, then an unflushed remove) a crash right after leaves both
    /// copies, and both get sent under two msg_ids.
    #[test]
    fn replace_is_one_durable_step() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::archive::ArchiveDb::open(dir.path()).unwrap();
        let o = Outbox::open(&db, &[1; 32]).unwrap();
        o.put(&entry(1, 5)).unwrap();
        o.mark_refused(
            &MsgId([1; 16]),
            &Refusal {
                code: ErrorCode::RecipientsMismatch,
                reason: "roster changed".into(),
                at_ms: 6,
            },
        )
        .unwrap();
        o.replace(&MsgId([1; 16]), &entry(2, 5)).unwrap();
        let crashed = crash_copy(dir.path());
        let db2 = crate::archive::ArchiveDb::open(crashed.path()).unwrap();
        let after = Outbox::open(&db2, &[1; 32]).unwrap();
        assert_eq!(after.pending().unwrap(), vec![entry(2, 5)]);
        assert_eq!(after.len(), 1);
        assert_eq!(after.refusal(&MsgId([1; 16])).unwrap(), None);
    }

    /// Item 17: a refusal keeps the entry, stops it being sent, survives a
    /// restart, and goes with the entry when it is dropped.
    #[test]
    fn refused_entries_stay_listed_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let refusal = Refusal {
            code: ErrorCode::NotAMember,
            reason: "no channel \"gone\"".into(),
            at_ms: 9,
        };
        {
            let db = crate::archive::ArchiveDb::open(dir.path()).unwrap();
            let o = Outbox::open(&db, &[1; 32]).unwrap();
            o.put(&entry(1, 5)).unwrap();
            o.put(&entry(2, 6)).unwrap();
            o.mark_refused(&MsgId([1; 16]), &refusal).unwrap();
            // A refusal for an entry that is gone is not recorded.
            o.mark_refused(&MsgId([7; 16]), &refusal).unwrap();
        }
        let db = crate::archive::ArchiveDb::open(dir.path()).unwrap();
        let o = Outbox::open(&db, &[1; 32]).unwrap();
        assert_eq!(o.pending().unwrap(), vec![entry(2, 6)], "not sent again");
        assert_eq!(o.len(), 2);
        assert_eq!(o.pending_len(), 1);
        let listed = o.list().unwrap();
        assert_eq!(listed[0].entry, entry(1, 5));
        assert_eq!(listed[0].refused.as_ref(), Some(&refusal));
        assert_eq!(listed[1].refused, None);
        let prefix = &MsgId([1; 16]).to_hex()[..8];
        assert_eq!(o.find(prefix).unwrap().map(|l| l.entry), Some(entry(1, 5)));
        assert!(
            o.find("").unwrap().is_none(),
            "an empty prefix is ambiguous"
        );
        assert!(o.drop_entry(&MsgId([1; 16])).unwrap());
        assert!(!o.drop_entry(&MsgId([1; 16])).unwrap());
        assert_eq!(o.len(), 1);
        assert_eq!(o.refusal(&MsgId([1; 16])).unwrap(), None);
    }

    #[test]
    fn put_survives_reopen_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let e = OutboxEntry {
            msg_id: MsgId([3; 16]),
            channel: "plenary".into(),
            subject: "secret subject".into(),
            created_at_ms: 5,
            envelope: vec![1, 2, 3],
            content_key: [9; 32],
            attempts: 0,
        };
        {
            let db = crate::archive::ArchiveDb::open(dir.path()).unwrap();
            let o = Outbox::open(&db, &[1; 32]).unwrap();
            o.put(&e).unwrap();
        }
        let db = crate::archive::ArchiveDb::open(dir.path()).unwrap();
        let o = Outbox::open(&db, &[1; 32]).unwrap();
        assert_eq!(o.pending().unwrap(), vec![e.clone()]);
        assert!(
            Outbox::open(&db, &[2; 32]).unwrap().pending().is_err(),
            "wrong key"
        );
        o.remove(&e.msg_id).unwrap();
        assert!(o.is_empty());
    }
}
