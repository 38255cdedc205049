//! Evidence kept beside the records (version 2): the relay's receipt of each
//! sent record, the device's latest checkpoint the relay confirmed, and the
//! recoveries from a checkpoint mismatch (`tallinn archive recover`).
//! Outside the hash chain: receipts and checkpoints are self-authenticating
//! signatures, and a recovery is about the chain itself. Sealed like records.
//!
//! | key | value |
//! |---|---|
//! | `b'E' index:u64be` | sealed `postcard(Receipt)`, aad `"tallinn/2 archive receipt" ‖ index` |
//! | `b'K'` | sealed `postcard(SignedCheckpoint)`, aad `"tallinn/2 archive checkpoint" ‖ 0:u64be` |
//! | `b'V' n:u64be` | sealed `postcard(Recovery)`, aad `"tallinn/2 archive recovery" ‖ n` |

use serde::{Deserialize, Serialize};
use tallinn_common::evidence::{Receipt, SignedCheckpoint};

use super::keys::key_u64;

use super::crypto::aad;
use super::{Archive, ArchiveError};

const RECEIPT_AAD: &[u8] = b"tallinn/2 archive receipt";
const CHECKPOINT_AAD: &[u8] = b"tallinn/2 archive checkpoint";
const RECOVERY_AAD: &[u8] = b"tallinn/2 archive recovery";

/// `tallinn archive recover`: the archive was accepted as it is although it
/// did not match the device's last checkpoint. Kept for good and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// When, ms since the epoch (device clock).
    pub at_ms: u64,
    /// The checkpoint the archive did not match, `postcard(SignedCheckpoint)`.
    #[serde(with = "serde_bytes")]
    pub refused: Vec<u8>,
    /// Records the archive held then.
    pub records: u64,
    /// Its head hash then.
    pub head_hash: [u8; 32],
}

impl Archive {
    /// Keeps the relay's receipt for record `index` (durable with the next
    /// flush, like the record it belongs to).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn store_receipt(&self, index: u64, receipt: &Receipt) -> Result<(), ArchiveError> {
        let sealed = self
            .sealer
            .seal(&receipt.to_bytes(), &aad(RECEIPT_AAD, index));
        self.tree
            .insert(Self::key(b'E', &[&index.to_be_bytes()]), sealed)?;
        Ok(())
    }

    /// The relay's receipt for record `index`, if one was kept.
    ///
    /// # Errors
    /// [`ArchiveError::Unreadable`] for a value that does not open or decode.
    pub fn receipt(&self, index: u64) -> Result<Option<Receipt>, ArchiveError> {
        let Some(v) = self.tree.get(Self::key(b'E', &[&index.to_be_bytes()]))? else {
            return Ok(None);
        };
        let plain = self
            .sealer
            .open(&v, &aad(RECEIPT_AAD, index))
            .ok_or_else(|| ArchiveError::Unreadable(format!("receipt of record {index}")))?;
        Receipt::from_bytes(&plain)
            .map(Some)
            .map_err(|e| ArchiveError::Unreadable(format!("receipt of record {index}: {e}")))
    }
}

impl Archive {
    /// Keeps the latest checkpoint the relay confirmed (durably: flushed).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn store_checkpoint(&self, c: &SignedCheckpoint) -> Result<(), ArchiveError> {
        let sealed = self.sealer.seal(&c.to_bytes(), &aad(CHECKPOINT_AAD, 0));
        self.tree.insert(b"K", sealed)?;
        self.flush()
    }

    /// The latest checkpoint the relay confirmed, if any.
    ///
    /// # Errors
    /// [`ArchiveError::Unreadable`].
    pub fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, ArchiveError> {
        let Some(v) = self.tree.get(b"K")? else {
            return Ok(None);
        };
        let plain = self
            .sealer
            .open(&v, &aad(CHECKPOINT_AAD, 0))
            .ok_or_else(|| ArchiveError::Unreadable("checkpoint".into()))?;
        SignedCheckpoint::from_bytes(&plain)
            .map(Some)
            .map_err(|e| ArchiveError::Unreadable(format!("checkpoint: {e}")))
    }

    /// Records a recovery durably (flushed before it returns).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn record_recovery(&self, r: &Recovery) -> Result<(), ArchiveError> {
        let n = self.recoveries()?.len() as u64;
        let plain = postcard::to_allocvec(r)
            .map_err(|e| ArchiveError::Unreadable(format!("recovery: {e}")))?;
        let sealed = self.sealer.seal(&plain, &aad(RECOVERY_AAD, n));
        self.tree
            .insert(Self::key(b'V', &[&n.to_be_bytes()]), sealed)?;
        self.flush()
    }

    /// Every recovery, oldest first.
    ///
    /// # Errors
    /// [`ArchiveError::Unreadable`].
    pub fn recoveries(&self) -> Result<Vec<Recovery>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"V") {
            let (k, v) = kv?;
            let n = key_u64(&k).ok_or_else(|| ArchiveError::Unreadable("recovery key".into()))?;
            let plain = self
                .sealer
                .open(&v, &aad(RECOVERY_AAD, n))
                .ok_or_else(|| ArchiveError::Unreadable(format!("recovery {n}")))?;
            out.push(
                postcard::from_bytes(&plain)
                    .map_err(|_| ArchiveError::Unreadable(format!("recovery {n}")))?,
            );
        }
        Ok(out)
    }

    /// The hash of record `index - 1` (zero for 0), the head a checkpoint of
    /// `index` records names; `None` beyond the archive.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn hash_at(&self, index: u64) -> Result<Option<[u8; 32]>, ArchiveError> {
        if index == 0 {
            return Ok(Some([0; 32]));
        }
        if index > self.len() {
            return Ok(None);
        }
        if index == self.len() {
            return Ok(Some(self.head_hash()));
        }
        // The next record names it as its prev_hash (redacted or not).
        if let Some(r) = self.record(index)? {
            return Ok(Some(r.prev_hash));
        }
        Ok(self.redacted(index)?.map(|x| x.prev_hash))
    }
}
