//! What the archive stores: records, quarantined deliveries and their
//! totals, and the codecs of a record value.

use super::*;

pub use tallinn_common::evidence::{Direction, Record};

/// A delivered envelope that failed verification, kept for inspection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quarantined {
    /// Relay sequence number.
    pub seq: u64,
    /// Relay receive time, ms.
    pub received_at_ms: u64,
    /// Why it was refused.
    pub reason: String,
    /// Claimed sender, if the envelope parsed.
    pub claimed_sender: Option<String>,
    /// Claimed channel, if the envelope parsed.
    pub claimed_channel: Option<String>,
    /// The envelope bytes as received.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
}

/// Entries, bytes and evictions of the quarantine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuarantineTotals {
    /// Entries kept.
    pub entries: u64,
    /// Bytes of the sealed entries kept.
    pub bytes: u64,
    /// Entries evicted so far.
    pub evicted: u64,
}

impl QuarantineTotals {
    pub(super) fn decode(v: &[u8]) -> Self {
        let word = |i: usize| {
            v.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
        };
        Self {
            entries: word(0),
            bytes: word(1),
            evicted: word(2),
        }
    }

    pub(super) fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.entries.to_be_bytes());
        out[8..16].copy_from_slice(&self.bytes.to_be_bytes());
        out[16..].copy_from_slice(&self.evicted.to_be_bytes());
        out
    }
}

/// Opens and decodes the sealed value of record `index`.
pub(super) fn decode_sealed_record(
    sealer: &Sealer,
    index: u64,
    sealed: &[u8],
) -> Result<Record, ArchiveError> {
    let plain = sealer
        .open(sealed, &aad(REC_AAD, index))
        .ok_or_else(|| ArchiveError::Unreadable(index.to_string()))?;
    decode_record_plaintext(index, &plain)
}

/// Decodes the plaintext of record `index` (after its AEAD opened): the
/// record must decode exactly and carry its own index.
///
/// # Errors
/// [`ArchiveError::Unreadable`].
pub fn decode_record_plaintext(index: u64, plain: &[u8]) -> Result<Record, ArchiveError> {
    let r: Record =
        postcard::from_bytes(plain).map_err(|_| ArchiveError::Unreadable(index.to_string()))?;
    if r.index != index {
        return Err(ArchiveError::Unreadable(index.to_string()));
    }
    Ok(r)
}

/// Decodes a stored record value as the archive does, under record key
/// `key` (for the fuzz target and offline tools).
///
/// # Errors
/// [`ArchiveError::Unreadable`] for a value that does not open or decode.
pub fn decode_record_value(
    key: &[u8; 32],
    index: u64,
    sealed: &[u8],
) -> Result<Record, ArchiveError> {
    decode_sealed_record(&Sealer::new(key), index, sealed)
}

/// Seals a record plaintext as the archive stores it (the inverse of
/// [`decode_record_value`]; for the fuzz target and tests).
pub fn seal_record_value(key: &[u8; 32], index: u64, plain: &[u8]) -> Vec<u8> {
    Sealer::new(key).seal(plain, &aad(REC_AAD, index))
}

pub(super) fn kind_code(k: &Kind) -> u8 {
    match k {
        Kind::Note => 0,
        Kind::Request { .. } => 1,
        Kind::Offer { .. } => 2,
        Kind::Status { .. } => 3,
        Kind::Proposal { .. } => 4,
        Kind::Approval { .. } => 5,
        Kind::Share { .. } => 6,
    }
}

pub(super) fn kind_from_name(s: &str) -> Option<u8> {
    match s {
        "note" => Some(0),
        "request" => Some(1),
        "offer" => Some(2),
        "status" => Some(3),
        "proposal" => Some(4),
        "approval" => Some(5),
        "share" => Some(6),
        _ => None,
    }
}
