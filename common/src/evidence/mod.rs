//! Evidence that outlives the session: the relay's signed receipts and the
//! devices' signed archive checkpoints (`PROTOCOL.md` §17).
//!
//! - A [`Receipt`] is the relay's signature over (seq, msg_id,
//!   received_at_ms, SHA-256(envelope)) with its receipt key (`relay_key` in
//!   the roster state). The sender archives it with its sent record, so it
//!   can prove to anyone that the relay accepted exactly these bytes at that
//!   time; a relay that later withholds the message from a recipient is
//!   caught by comparing exports (`tallinn-audit cross`).
//! - A [`SignedCheckpoint`] is a device's signature over the head of its
//!   archive (`{participant, device, roster_epoch, index, head_hash,
//!   time_ms}`). The relay keeps the latest per device and returns it when a
//!   session opens, so an archive that was truncated or replaced by an older
//!   copy of itself is detected by its own client, and an auditor holds an
//!   export's head against it.
//!
//! Both are plain postcard structures signed with a domain-separated Ed25519
//! signature over the exact encoded bytes; nothing here does I/O.

use sha2::{Digest, Sha256};

mod checkpoint;
pub mod export;
mod receipt;
mod record;

pub use checkpoint::{CheckpointBody, SignedCheckpoint};
pub use receipt::{Receipt, ReceiptBody};
pub use record::{Direction, Record, RECORD_CHAIN_CONTEXT};

/// Domain-separation prefix of a relay receipt signature:
/// `Ed25519(relay receipt key, RECEIPT_CONTEXT || postcard(ReceiptBody))`.
pub const RECEIPT_CONTEXT: &[u8] = b"tallinn/2 receipt";

/// Domain-separation prefix of an archive checkpoint signature:
/// `Ed25519(device sign_key, CHECKPOINT_CONTEXT || body)`.
pub const CHECKPOINT_CONTEXT: &[u8] = b"tallinn/2 checkpoint";

/// The `msg_id` of the `Rejected` that refuses a `Checkpoint` frame (all
/// 0xff), so a client tells it from a refused roster entry (all zero).
pub const CHECKPOINT_REFUSED: crate::message::MsgId = crate::message::MsgId([0xff; 16]);

/// Largest encoded checkpoint body a relay or client accepts (two ids of at
/// most 64 bytes each and four numbers; generous).
pub const MAX_CHECKPOINT_BODY: usize = 512;

/// Why a receipt or checkpoint does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The signature does not verify with the given key.
    #[error("the {0} signature does not verify")]
    BadSignature(&'static str),
    /// The bytes do not decode (or have trailing bytes, or are too long).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The receipt is for another message, or for other envelope bytes.
    #[error("the receipt is for {0}")]
    Mismatch(&'static str),
}

/// SHA-256 of an envelope's bytes, as a receipt names them.
pub fn envelope_hash(envelope: &[u8]) -> [u8; 32] {
    Sha256::digest(envelope).into()
}

/// `context || body`: the bytes a domain-separated signature covers.
pub(crate) fn signed_bytes(context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + body.len());
    m.extend_from_slice(context);
    m.extend_from_slice(body);
    m
}
