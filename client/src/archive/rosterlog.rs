//! The roster log in the archive (version 2): every entry this device
//! verified, so it never forgets a head it knew (a relay that serves a
//! shorter or different log is caught), verifies old records against the
//! state of their own epoch offline, and keeps fork evidence.
//!
//! | key | value |
//! |---|---|
//! | `b'L' index:u64be` | sealed `postcard(SignedEntry)`, aad `"tallinn/2 archive roster" ‖ index` |
//! | `b'F' index:u64be` | sealed `postcard((ours, theirs))`: two valid entries at one index, aad `"tallinn/2 archive fork" ‖ index` |
//!
//! Sealed like records (the roster names every participant and device).

use tallinn_common::roster::{ForkEvidence, SignedEntry};

use super::crypto::aad;
use super::keys::key_u64;
use super::{Archive, ArchiveError};

const ROSTER_AAD: &[u8] = b"tallinn/2 archive roster";
const FORK_AAD: &[u8] = b"tallinn/2 archive fork";

impl Archive {
    /// The roster-log entries stored so far, in index order.
    ///
    /// # Errors
    /// [`ArchiveError::Unreadable`] for an entry that does not decrypt or
    /// decode, or a gap.
    pub fn roster_entries(&self) -> Result<Vec<SignedEntry>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"L") {
            let (k, v) = kv?;
            let index = key_u64(&k).ok_or_else(|| ArchiveError::Unreadable("roster key".into()))?;
            if index != out.len() as u64 {
                return Err(ArchiveError::Unreadable(format!(
                    "roster log entry {} missing",
                    out.len()
                )));
            }
            let plain = self
                .sealer
                .open(&v, &aad(ROSTER_AAD, index))
                .ok_or_else(|| ArchiveError::Unreadable(format!("roster log entry {index}")))?;
            out.push(
                SignedEntry::decode(&plain).map_err(|e| {
                    ArchiveError::Unreadable(format!("roster log entry {index}: {e}"))
                })?,
            );
        }
        Ok(out)
    }

    /// Stores a verified roster-log entry durably (synced: the head this
    /// device knows must survive a crash).
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn store_roster_entry(&self, index: u64, entry: &SignedEntry) -> Result<(), ArchiveError> {
        let sealed = self.sealer.seal(&entry.encode(), &aad(ROSTER_AAD, index));
        self.tree
            .insert(Self::key(b'L', &[&index.to_be_bytes()]), sealed)?;
        self.flush()
    }

    /// Keeps fork evidence: both entries, durably.
    ///
    /// # Errors
    /// [`ArchiveError`].
    pub fn store_fork(&self, fork: &ForkEvidence) -> Result<(), ArchiveError> {
        let plain = postcard::to_allocvec(&(&fork.ours, &fork.theirs))
            .map_err(|e| ArchiveError::Unreadable(format!("fork evidence: {e}")))?;
        let sealed = self.sealer.seal(&plain, &aad(FORK_AAD, fork.index));
        self.tree
            .insert(Self::key(b'F', &[&fork.index.to_be_bytes()]), sealed)?;
        self.flush()
    }

    /// Fork evidence kept, by index.
    ///
    /// # Errors
    /// [`ArchiveError::Unreadable`].
    pub fn forks(&self) -> Result<Vec<ForkEvidence>, ArchiveError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"F") {
            let (k, v) = kv?;
            let index = key_u64(&k).ok_or_else(|| ArchiveError::Unreadable("fork key".into()))?;
            let plain = self
                .sealer
                .open(&v, &aad(FORK_AAD, index))
                .ok_or_else(|| ArchiveError::Unreadable(format!("fork evidence {index}")))?;
            let (ours, theirs): (SignedEntry, SignedEntry) = postcard::from_bytes(&plain)
                .map_err(|_| ArchiveError::Unreadable(format!("fork evidence {index}")))?;
            out.push(ForkEvidence {
                index,
                ours,
                theirs,
            });
        }
        Ok(out)
    }
}
