//! The sled key layout of the relay tree and the codecs of its values.

use serde::Deserialize;
use tallinn_common::message::MsgId;

use super::{LogEntry, StoreError};

pub(super) const NEXT_SEQ_KEY: &[u8] = b"Mnext_seq";

/// Writes one accepted message into sled: log entry, next seq (on replay
/// only: appends leave it to the checkpoint), then the seen entry, as plain
/// inserts of the already encoded entry.
///
/// Not a `sled::Batch`: sled 0.34 seals and writes its I/O buffer (a
/// `pwrite` + `sync_file_range` on its I/O threads) for every batch, which
/// cost more CPU than everything else the relay does per message. Atomicity
/// comes from the commit log instead: an acknowledged message is always in
/// [`super::wal`] until a checkpoint made its keys durable, and replay
/// rewrites them. sled recovers a prefix of its log, so a durable seen entry
/// (written last) implies a durable log entry.
pub(super) fn write_message(
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

/// postcard bytes of a log entry.
pub(super) fn encode_entry(entry: &LogEntry) -> Vec<u8> {
    // invariant: LogEntry is plain data; postcard encoding cannot fail.
    postcard::to_allocvec(entry).expect("invariant: log entry encodes")
}

pub(super) fn log_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'L';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn roster_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'R';
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(super) fn cursor_key(participant: &str, device: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + participant.len() + device.len());
    k.push(b'C');
    k.extend_from_slice(participant.as_bytes());
    k.push(0);
    k.extend_from_slice(device.as_bytes());
    k
}

/// `b'A' participant 0x00 device`: the device's latest archive checkpoint.
pub(super) fn archive_checkpoint_key(participant: &str, device: &str) -> Vec<u8> {
    let mut k = cursor_key(participant, device);
    k[0] = b'A';
    k
}

pub(super) fn seen_key(msg_id: &MsgId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'S';
    k[1..].copy_from_slice(&msg_id.0);
    k
}

pub(super) fn be_u64(bytes: &[u8], key: &[u8]) -> Result<u64, StoreError> {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(hex::encode(key)))
}

/// The head of a [`LogEntry`] (its first three fields): decoded without
/// copying the envelope, to decide whether an entry concerns a participant.
#[derive(Deserialize)]
pub(super) struct LogHead {
    pub(super) received_at_ms: u64,
    pub(super) sender: String,
    pub(super) recipients: Vec<String>,
}

pub(super) fn log_head(key: &[u8], value: &[u8]) -> Result<LogHead, StoreError> {
    postcard::take_from_bytes::<LogHead>(value)
        .map(|(h, _)| h)
        .map_err(|_| StoreError::Corrupt(hex::encode(key)))
}

pub(super) fn log_seq(key: &[u8]) -> Result<u64, StoreError> {
    be_u64(key.get(1..).unwrap_or_default(), key)
}
