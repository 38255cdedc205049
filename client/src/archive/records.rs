//! What the archive stores: records, quarantined deliveries and their
//! totals, and the codecs of a record value.

use super::*;

/// Whether a record was received or sent by this device's participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Delivered by the relay.
    Received,
    /// Sent by us and accepted by the relay.
    Sent,
}

/// One archived message (the plaintext of an `R` entry).
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
    /// For sent messages: the content key, so the copy stays verifiable.
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
            .chain_update(b"tallinn/1 archive chain")
            .chain_update(bytes)
            .finalize()
            .into()
    }
}

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
        _ => None,
    }
}
