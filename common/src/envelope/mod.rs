//! The envelope: sealing, verifying and opening signed, end-to-end encrypted
//! messages, in both protocol versions.
//!
//! # Version 2 (normative; byte layout in `PROTOCOL.md` §15)
//! ```text
//! content_key  = 32 random bytes            msg_id = 16 random bytes
//! commitment   = SHA-256("tallinn/2 key-commitment" || content_key)
//! header       = HeaderV2{version=2, suite=1, msg_id, sender, sender_device,
//!                         channel, roster_epoch, sent_at_ms, commitment}
//! aad          = postcard(header)
//! ciphertext   = ChaCha20-Poly1305(content_key, nonce=0^12, postcard(Message), aad)
//! for (P, D) in recipient devices, sorted by (participant, device):
//!     ikm      = HKDF-SHA256(salt="", IKM=content_key,
//!                            info="tallinn/2 wrap-ephemeral" || msg_id || P || 0x00 || D, L=32)
//!     (enc, ct) = HPKE.SealBase(pk_(P,D), info="tallinn/2 wrap",
//!                               aad = aad || P || 0x00 || D, pt = content_key,
//!                               ephemeral = DeriveKeyPair(ikm))
//! body         = postcard(SealedBodyV2{header, [WrappedKeyV2{P, D, enc, ct}], ciphertext})
//! signature    = Ed25519(sending device, "tallinn/2 envelope" || body)
//! envelope     = postcard(Envelope{body, signature})
//! ```
//! Version 1 (participant recipients, random ephemerals, `tallinn/1` labels,
//! see [`v1`]) keeps opening and verifying: archives hold it. HPKE is RFC 9180
//! base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! ChaCha20Poly1305 (suite 0x0020/0x0001/0x0003) in both.
//!
//! # Trust states
//! Bytes from the wire go through three types; only the last holds plaintext:
//! ```text
//!  &[u8] --decode--> UntrustedEnvelope --verify(policy)--> VerifiedEnvelope --open(keys)--> Opened
//!         (parsed, nothing checked)      (signature + policy)                 (decrypted)
//! ```
//! The policy is a version-1 [`Roster`](crate::roster::Roster) or the
//! version-2 [`RosterState`](crate::roster::RosterState) of the envelope's
//! own epoch ([`Policy`]). Verification never re-encodes: the signature is
//! checked over the exact received `body` bytes, and the AADs use the exact
//! received header bytes.
//!
//! # Errors
//! Every failure is an [`EnvelopeError`]; no input bytes can cause a panic.
//! Cryptographic failures are deliberately opaque ([`EnvelopeError::BadSignature`],
//! [`EnvelopeError::DecryptFailed`]).

mod open;
pub mod share;
pub mod v1;
pub mod v2;
mod verify;
pub mod wraps;

use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::defaults;
use crate::message::MsgId;
use crate::roster::PostError;
use crate::wire::ErrorCode;

pub use open::{open, Opened};
pub use v1::{seal, seal_to, seal_with_rng, HeaderV1, SealedBodyV1, WrappedKeyV1};
pub use v2::{seal_v2, seal_v2_to, seal_v2_with_rng, HeaderV2, SealedBodyV2, WrappedKeyV2};
pub use verify::{verify_signatures_batch, Policy};

pub(crate) type HpkeKem = hpke::kem::X25519HkdfSha256;
pub(crate) type HpkeKdf = hpke::kdf::HkdfSha256;
pub(crate) type HpkeAead = hpke::aead::ChaCha20Poly1305;

/// Length of an HPKE-wrapped content key: 32-byte key + 16-byte tag.
pub const WRAPPED_KEY_CT_LEN: usize = 48;

/// The signed, cleartext header of an envelope of either version, as one
/// view. Version-1 envelopes have no `sender_device` and no `roster_epoch`
/// (both `None`) and suite 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Protocol version, 1 or 2.
    pub version: u8,
    /// Key suite, 1 = X25519/Ed25519.
    pub suite: u8,
    /// Random message id chosen by the sender.
    pub msg_id: MsgId,
    /// Sender participant id.
    pub sender: String,
    /// The sending device (version 2).
    pub sender_device: Option<String>,
    /// Channel id.
    pub channel: String,
    /// The roster epoch the envelope was sealed against (version 2).
    pub roster_epoch: Option<u64>,
    /// Sender's clock at sealing, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// `SHA-256("tallinn/N key-commitment" || content_key)`.
    pub key_commitment: [u8; 32],
}

/// What goes on the wire: the body bytes and the sender's signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// `postcard(SealedBodyV1)` or `postcard(SealedBodyV2)`, exactly as signed.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Ed25519 over `"tallinn/N envelope" || body`.
    #[serde(with = "BigArray")]
    pub signature: [u8; 64],
}

/// Why an envelope could not be sealed, verified or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes are not a well-formed envelope (bad encoding, trailing bytes,
    /// a wrapped key of the wrong length, an invalid id, undecodable plaintext).
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// The header carries a version this implementation does not speak.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// The header names a key suite this implementation does not speak.
    #[error("unsupported key suite {0}")]
    UnsupportedSuite(u8),
    /// The sender is not in the roster.
    #[error("unknown sender {0:?}")]
    UnknownSender(String),
    /// The signature does not verify under the sender's roster key.
    #[error("bad signature")]
    BadSignature,
    /// The channel is not in the roster.
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    /// The sender is an observer; observers never post.
    #[error("{0} is an observer and cannot post")]
    ReadOnly(String),
    /// The sender is not a member of the channel.
    #[error("{sender} is not a member of channel {channel}")]
    NotAMember {
        /// Sender.
        sender: String,
        /// Channel.
        channel: String,
    },
    /// The recipient list is not exactly the channel's members and observers
    /// minus the sender (version 2: their devices), sorted, each once.
    #[error("recipient list does not match channel {channel}: {detail}")]
    RecipientsMismatch {
        /// Channel.
        channel: String,
        /// First difference found (e.g. `missing UA`).
        detail: String,
    },
    /// The opening identity is not among the recipients.
    #[error("not a recipient of this envelope")]
    NotARecipient,
    /// HPKE unwrapping or content decryption failed.
    #[error("decryption failed")]
    DecryptFailed,
    /// The unwrapped content key does not match the header's key commitment.
    #[error("content key does not match the key commitment")]
    CommitmentMismatch,
    /// Sealing: the sender's identity differs from its roster entry.
    #[error("identity of {0} does not match its roster entry (stale key file or roster?)")]
    SenderKeyMismatch(String),
    /// Sealing: a recipient's roster encryption key is unusable.
    #[error("cannot wrap the content key to {0}: invalid encryption key")]
    BadRecipientKey(String),
    /// The sending device is not one of the sender's devices at the
    /// envelope's roster epoch (unknown, or revoked).
    #[error("{sender} has no device {device:?} at this roster epoch (unknown or revoked)")]
    UnknownDevice {
        /// The sender.
        sender: String,
        /// The device label.
        device: String,
    },
    /// The channel accepts posts from the chair only.
    #[error("channel {channel} accepts posts from the chair ({chair}) only")]
    ChairOnly {
        /// The channel.
        channel: String,
        /// The chair at the envelope's epoch.
        chair: String,
    },
    /// A direct conversation breaks the roster's addressing rule.
    #[error("direct conversation {conversation}: {reason}")]
    Conversation {
        /// The conversation's name (`@A+B`).
        conversation: String,
        /// What breaks the rule.
        reason: String,
    },
    /// A `Share` carries an original that does not hold: its signature
    /// under the roster of its own epoch, its content against its key
    /// commitment, the sharer's part in it, its TLP label, or who may read it.
    #[error("shared message refused: {0}")]
    SharedOriginal(String),
    /// The envelope names a roster epoch this party does not have (yet).
    #[error("sealed against roster epoch {epoch}, but only epochs up to {known} are known here")]
    UnknownEpoch {
        /// The envelope's epoch.
        epoch: u64,
        /// The latest epoch known.
        known: u64,
    },
    /// A version-2 envelope was checked against the state of another epoch.
    #[error("sealed against roster epoch {envelope}, checked against epoch {state}")]
    EpochMismatch {
        /// The envelope's epoch.
        envelope: u64,
        /// The state's epoch.
        state: u64,
    },
    /// A version-2 wrap is not the one the content key derives: the sender
    /// gave this recipient something other than the committed content key.
    #[error("the wrap for {participant}/{device} is not derived from the content key")]
    WrapMismatch {
        /// Recipient participant.
        participant: String,
        /// Recipient device.
        device: String,
    },
}

impl EnvelopeError {
    /// The wire [`ErrorCode`] the relay answers for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            EnvelopeError::Malformed(_)
            | EnvelopeError::UnsupportedVersion(_)
            | EnvelopeError::UnsupportedSuite(_) => ErrorCode::Malformed,
            EnvelopeError::UnknownSender(_) | EnvelopeError::UnknownDevice { .. } => {
                ErrorCode::UnknownParticipant
            }
            EnvelopeError::BadSignature => ErrorCode::BadSignature,
            EnvelopeError::UnknownChannel(_)
            | EnvelopeError::NotAMember { .. }
            | EnvelopeError::Conversation { .. } => ErrorCode::NotAMember,
            EnvelopeError::ReadOnly(_) | EnvelopeError::ChairOnly { .. } => ErrorCode::ReadOnly,
            EnvelopeError::RecipientsMismatch { .. } => ErrorCode::RecipientsMismatch,
            EnvelopeError::NotARecipient
            | EnvelopeError::DecryptFailed
            | EnvelopeError::CommitmentMismatch
            | EnvelopeError::SenderKeyMismatch(_)
            | EnvelopeError::BadRecipientKey(_)
            | EnvelopeError::UnknownEpoch { .. }
            | EnvelopeError::EpochMismatch { .. }
            | EnvelopeError::WrapMismatch { .. }
            | EnvelopeError::SharedOriginal(_) => ErrorCode::Internal,
        }
    }
}

impl From<PostError> for EnvelopeError {
    fn from(e: PostError) -> Self {
        match e {
            PostError::UnknownChannel(c) => EnvelopeError::UnknownChannel(c),
            PostError::UnknownParticipant(p) => EnvelopeError::UnknownSender(p),
            PostError::ReadOnly { participant } => EnvelopeError::ReadOnly(participant),
            PostError::NotAMember {
                participant,
                channel,
            } => EnvelopeError::NotAMember {
                sender: participant,
                channel,
            },
            PostError::UnknownDevice {
                participant,
                device,
            } => EnvelopeError::UnknownDevice {
                sender: participant,
                device,
            },
            PostError::ChairOnly { channel, chair } => EnvelopeError::ChairOnly { channel, chair },
            PostError::Conversation {
                conversation,
                reason,
            } => EnvelopeError::Conversation {
                conversation,
                reason,
            },
        }
    }
}

/// The version-1 key commitment of a content key.
pub fn key_commitment(content_key: &[u8; 32]) -> [u8; 32] {
    key_commitment_for(1, content_key)
}

/// The key commitment of a content key under `version`'s label
/// (`"tallinn/1 key-commitment"` or `"tallinn/2 key-commitment"`).
pub fn key_commitment_for(version: u8, content_key: &[u8; 32]) -> [u8; 32] {
    let label = if version >= 2 {
        defaults::KEY_COMMITMENT_CONTEXT_V2
    } else {
        defaults::KEY_COMMITMENT_CONTEXT
    };
    Sha256::new()
        .chain_update(label)
        .chain_update(content_key)
        .finalize()
        .into()
}

/// Decodes a postcard value and refuses trailing bytes.
pub(crate) fn decode_exact<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<T, EnvelopeError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok(_) => Err(EnvelopeError::Malformed(what)),
        Err(_) => Err(EnvelopeError::Malformed(what)),
    }
}

/// The content ciphertext of both versions: ChaCha20-Poly1305 under the
/// fresh content key, 12 zero bytes of nonce (each key encrypts once), the
/// header bytes as AAD.
pub(crate) fn encrypt_content(
    content_key: &[u8; 32],
    message: &crate::message::Message,
    header_bytes: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
    use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
    let plaintext = Zeroizing::new(message.to_bytes());
    ChaCha20Poly1305::new(&Key::from(*content_key))
        .encrypt(
            &Nonce::from([0u8; 12]),
            Payload {
                msg: &plaintext,
                aad: header_bytes,
            },
        )
        .map_err(|_| EnvelopeError::Malformed("message too large to encrypt"))
}

/// `"tallinn/N envelope" || body`: what the sender's key signs.
pub(crate) fn signed_message(version: u8, body: &[u8]) -> Vec<u8> {
    let label = if version >= 2 {
        defaults::ENVELOPE_SIGNATURE_CONTEXT_V2
    } else {
        defaults::ENVELOPE_SIGNATURE_CONTEXT
    };
    let mut m = Vec::with_capacity(label.len() + body.len());
    m.extend_from_slice(label);
    m.extend_from_slice(body);
    m
}

/// One wrapped content key, either version: version 1 names a participant
/// only (`device` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wrap {
    pub participant: String,
    pub device: Option<String>,
    pub enc: [u8; 32],
    pub ct: Vec<u8>,
}

/// A freshly sealed envelope (outgoing). Only outgoing types encode.
#[derive(Debug, Clone)]
pub struct SealedEnvelope {
    pub(crate) bytes: Vec<u8>,
    pub(crate) header: Header,
    pub(crate) content_key: Zeroizing<[u8; 32]>,
}

impl SealedEnvelope {
    /// `postcard(Envelope)`: what goes into a `Send` frame.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The header that was sealed.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The message id.
    pub fn msg_id(&self) -> MsgId {
        self.header.msg_id
    }

    /// The content key, so the sender can keep a verifiable copy of what it
    /// sent (see [`VerifiedEnvelope::open_with_content_key`]). Secret.
    pub fn content_key(&self) -> &[u8; 32] {
        &self.content_key
    }
}

/// Parsed envelope bytes of unknown authenticity. Nothing about it is
/// trustworthy until [`UntrustedEnvelope::verify`] succeeds.
#[derive(Debug, Clone)]
pub struct UntrustedEnvelope {
    raw: Vec<u8>,
    envelope: Envelope,
    header: Header,
    header_len: usize,
    wraps: Vec<Wrap>,
    ciphertext: Vec<u8>,
}

impl UntrustedEnvelope {
    /// Parses `postcard(Envelope)` bytes of either version: structure only
    /// (encoding, no trailing bytes, version, suite, id syntax, wrapped-key
    /// lengths).
    ///
    /// # Errors
    /// [`EnvelopeError::Malformed`], [`EnvelopeError::UnsupportedVersion`] or
    /// [`EnvelopeError::UnsupportedSuite`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let envelope: Envelope = decode_exact(bytes, "envelope encoding")?;
        // Both header layouts start with the version byte (a u8 is one byte
        // in postcard).
        let version = *envelope
            .body
            .first()
            .ok_or(EnvelopeError::Malformed("empty body"))?;
        let decoded = match version {
            1 => v1::decode_body(&envelope.body)?,
            2 => v2::decode_body(&envelope.body)?,
            other => return Err(EnvelopeError::UnsupportedVersion(other)),
        };
        let (header, header_len, wraps, ciphertext) = decoded;
        if crate::identity::ParticipantId::new(header.sender.as_str()).is_err() {
            return Err(EnvelopeError::Malformed("sender id"));
        }
        if let Some(d) = &header.sender_device {
            if crate::identity::DeviceId::new(d.as_str()).is_err() {
                return Err(EnvelopeError::Malformed("sender device"));
            }
        }
        // A channel id, or (version 2) a direct conversation's canonical name.
        let channel_ok = crate::roster::ChannelId::new(header.channel.as_str()).is_ok()
            || (header.version >= 2
                && crate::roster::DirectSet::parse(header.channel.as_str()).is_ok());
        if !channel_ok {
            return Err(EnvelopeError::Malformed("channel id"));
        }
        if wraps.len() > defaults::MAX_RECIPIENTS {
            return Err(EnvelopeError::Malformed("too many recipients"));
        }
        if wraps.iter().any(|w| w.ct.len() != WRAPPED_KEY_CT_LEN) {
            return Err(EnvelopeError::Malformed("wrapped key length"));
        }
        Ok(Self {
            raw: bytes.to_vec(),
            envelope,
            header,
            header_len,
            wraps,
            ciphertext,
        })
    }

    /// The header as claimed by the (unverified) sender.
    pub fn claimed_header(&self) -> &Header {
        &self.header
    }
}

/// An envelope whose signature and routing policy were checked against a
/// roster. Its header can be trusted; its content is still sealed.
#[derive(Debug, Clone)]
pub struct VerifiedEnvelope {
    inner: UntrustedEnvelope,
}

#[cfg(test)]
mod tests_v1;
#[cfg(test)]
mod tests_v2;
