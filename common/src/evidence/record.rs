//! The archive record a client keeps for every message it received or sent,
//! and its chain hash: the unit an export proves (`PROTOCOL.md` §12.2). It
//! lives here, not in the client, because an auditor recomputes
//! [`Record::hash`] from an export line with nothing but this crate.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::message::{Message, MsgId};

/// Prefix of a record's chain hash: `SHA-256(prefix || postcard(Record))`.
pub const RECORD_CHAIN_CONTEXT: &[u8] = b"tallinn/1 archive chain";

/// Whether a record was received or sent by this device's participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Delivered by the relay.
    Received,
    /// Sent by us and accepted by the relay.
    Sent,
    /// An earlier message another participant re-shared with us (history
    /// for a late joiner): the record right before it is the `Share` that
    /// carried it; `seq` and `received_at_ms` are the share's.
    Shared,
}

impl Direction {
    /// `"received"` or `"sent"`, as exports write it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Received => "received",
            Direction::Sent => "sent",
            Direction::Shared => "shared",
        }
    }
}

/// One archived message (field order normative: it is hashed).
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
    /// The content key (kept for sent records always, and for received
    /// records since the lifecycle revision), so the copy stays verifiable
    /// after the device's secret is rotated out.
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
            .chain_update(RECORD_CHAIN_CONTEXT)
            .chain_update(bytes)
            .finalize()
            .into()
    }
}
