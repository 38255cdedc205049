//! The outbox: a message is sealed and stored here (flushed) before the
//! first send attempt, and leaves only when the relay answered `Accepted`
//! (or `duplicate`, which means an earlier attempt was accepted), or a
//! permanent refusal. A crash or a lost connection therefore loses nothing,
//! and a resend can never produce a second copy: the envelope (and its
//! msg_id) is the same bytes every time.
//!
//! Layout: sled tree `outbox` in the archive database; key `msg_id`, value
//! `nonce ‖ XChaCha20-Poly1305(k_rec, postcard(OutboxEntry), aad = "tallinn/1 outbox" ‖ msg_id)`.

use serde::{Deserialize, Serialize};
use tallinn_common::message::MsgId;
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
        // invariant: plain data; postcard encoding cannot fail.
        let plain = Zeroizing::new(postcard::to_allocvec(e).expect("invariant: entry encodes"));
        self.tree
            .insert(e.msg_id.0, self.sealer.seal(&plain, &aad(&e.msg_id)))?;
        self.db.flush()?;
        Ok(())
    }

    /// Removes an entry (durable with the next flush).
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn remove(&self, msg_id: &MsgId) -> Result<(), ArchiveError> {
        self.tree.remove(msg_id.0)?;
        Ok(())
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

    /// Every pending entry, oldest first.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn pending(&self) -> Result<Vec<OutboxEntry>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let id: [u8; 16] = k
                .as_ref()
                .try_into()
                .map_err(|_| ArchiveError::Unreadable("outbox key".into()))?;
            out.push(self.decode(&MsgId(id), &v)?);
        }
        out.sort_by_key(|e| e.created_at_ms);
        Ok(out)
    }

    /// Number of pending entries.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
