//! The envelope: sealing, verifying and opening signed, end-to-end encrypted
//! messages.
//!
//! # Construction (normative; byte layout in `PROTOCOL.md`)
//! ```text
//! content_key  = 32 random bytes            msg_id = 16 random bytes
//! commitment   = SHA-256("tallinn/1 key-commitment" || content_key)
//! header       = Header{version=1, msg_id, sender, channel, sent_at_ms, commitment}
//! aad          = postcard(header)
//! ciphertext   = ChaCha20-Poly1305(content_key, nonce=0^12, postcard(Message), aad)
//! for R in recipients(sender, channel), sorted by id:
//!     (enc, ct) = HPKE.SealBase(pk_R, info="tallinn/1 wrap",
//!                               aad = aad || UTF-8(R), pt = content_key)
//! body         = postcard(SealedBody{header, [WrappedKey{R, enc, ct}], ciphertext})
//! signature    = Ed25519(sender, "tallinn/1 envelope" || body)
//! envelope     = postcard(Envelope{body, signature})
//! ```
//! HPKE is RFC 9180 base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! ChaCha20Poly1305 (suite 0x0020/0x0001/0x0003).
//!
//! # Trust states
//! Bytes from the wire go through three types; only the last holds plaintext:
//! ```text
//!  &[u8] --decode--> UntrustedEnvelope --verify(roster)--> VerifiedEnvelope --open(identity)--> Opened
//!         (parsed, nothing checked)      (signature + policy)                  (decrypted)
//! ```
//! [`UntrustedEnvelope::verify`] is everything that can be checked without a
//! recipient key: what the relay does. It never re-encodes: the signature is
//! checked over the exact received `body` bytes, and the AADs use the exact
//! received header bytes.
//!
//! # Errors
//! Every failure is an [`EnvelopeError`]; no input bytes can cause a panic.
//! Cryptographic failures are deliberately opaque ([`EnvelopeError::BadSignature`],
//! [`EnvelopeError::DecryptFailed`]).

use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, VerifyingKey};
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::defaults;
use crate::identity::Identity;
use crate::message::{Message, MsgId};
use crate::roster::{PostError, Roster};
use crate::wire::ErrorCode;

type HpkeKem = hpke::kem::X25519HkdfSha256;
type HpkeKdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::ChaCha20Poly1305;

/// Length of an HPKE-wrapped content key: 32-byte key + 16-byte tag.
pub const WRAPPED_KEY_CT_LEN: usize = 48;

/// The signed, cleartext part of every envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Protocol version, 1.
    pub version: u8,
    /// Random message id chosen by the sender.
    pub msg_id: MsgId,
    /// Sender participant id.
    pub sender: String,
    /// Channel id.
    pub channel: String,
    /// Sender's clock at sealing, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// `SHA-256("tallinn/1 key-commitment" || content_key)`.
    pub key_commitment: [u8; 32],
}

/// The content key wrapped to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Recipient participant id.
    pub recipient: String,
    /// HPKE encapsulated key (X25519 ephemeral public key).
    pub enc: [u8; 32],
    /// HPKE ciphertext of the content key (48 bytes).
    #[serde(with = "serde_bytes")]
    pub ct: Vec<u8>,
}

/// The signed body: header, wrapped keys and the message ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBody {
    /// Header.
    pub header: Header,
    /// One wrapped key per recipient, sorted by recipient id.
    pub recipients: Vec<WrappedKey>,
    /// ChaCha20-Poly1305 ciphertext of `postcard(Message)`, tag appended.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// What goes on the wire: the body bytes and the sender's signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// `postcard(SealedBody)`, exactly as signed.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Ed25519 over `"tallinn/1 envelope" || body`.
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
    /// minus the sender, sorted, each once.
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
    /// The envelope names a roster epoch this party does not have (yet).
    #[error("sealed against roster epoch {epoch}, but only epochs up to {known} are known here")]
    UnknownEpoch {
        /// The envelope's epoch.
        epoch: u64,
        /// The latest epoch known.
        known: u64,
    },
}

impl EnvelopeError {
    /// The wire [`ErrorCode`] the relay answers for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            EnvelopeError::Malformed(_) | EnvelopeError::UnsupportedVersion(_) => {
                ErrorCode::Malformed
            }
            EnvelopeError::UnknownSender(_) | EnvelopeError::UnknownDevice { .. } => {
                ErrorCode::UnknownParticipant
            }
            EnvelopeError::BadSignature => ErrorCode::BadSignature,
            EnvelopeError::UnknownChannel(_) | EnvelopeError::NotAMember { .. } => {
                ErrorCode::NotAMember
            }
            EnvelopeError::ReadOnly(_) | EnvelopeError::ChairOnly { .. } => ErrorCode::ReadOnly,
            EnvelopeError::RecipientsMismatch { .. } => ErrorCode::RecipientsMismatch,
            EnvelopeError::NotARecipient
            | EnvelopeError::DecryptFailed
            | EnvelopeError::CommitmentMismatch
            | EnvelopeError::SenderKeyMismatch(_)
            | EnvelopeError::BadRecipientKey(_)
            | EnvelopeError::UnknownEpoch { .. } => ErrorCode::Internal,
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
        }
    }
}

/// The key commitment of a content key.
pub fn key_commitment(content_key: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update(defaults::KEY_COMMITMENT_CONTEXT)
        .chain_update(content_key)
        .finalize()
        .into()
}

/// Decodes a postcard value and refuses trailing bytes.
fn decode_exact<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<T, EnvelopeError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok(_) => Err(EnvelopeError::Malformed(what)),
        Err(_) => Err(EnvelopeError::Malformed(what)),
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(defaults::ENVELOPE_SIGNATURE_CONTEXT.len() + body.len());
    m.extend_from_slice(defaults::ENVELOPE_SIGNATURE_CONTEXT);
    m.extend_from_slice(body);
    m
}

fn wrap_aad(header_bytes: &[u8], recipient: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header_bytes.len() + recipient.len());
    aad.extend_from_slice(header_bytes);
    aad.extend_from_slice(recipient.as_bytes());
    aad
}

/// A freshly sealed envelope (outgoing). Only outgoing types encode.
#[derive(Debug, Clone)]
pub struct SealedEnvelope {
    bytes: Vec<u8>,
    header: Header,
    content_key: Zeroizing<[u8; 32]>,
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

/// Seals `message` from `sender` into `channel` of `roster`, to every member
/// and observer of the channel except the sender.
///
/// # Errors
/// [`EnvelopeError::UnknownChannel`], [`EnvelopeError::ReadOnly`],
/// [`EnvelopeError::NotAMember`], [`EnvelopeError::UnknownSender`] if the
/// roster does not let `sender` post there; [`EnvelopeError::SenderKeyMismatch`]
/// if the identity's keys differ from its roster entry.
pub fn seal(
    sender: &Identity,
    roster: &Roster,
    channel: &str,
    message: &Message,
    sent_at_ms: u64,
) -> Result<SealedEnvelope, EnvelopeError> {
    seal_with_rng(
        sender,
        roster,
        channel,
        message,
        sent_at_ms,
        &mut rand::rng(),
    )
}

/// [`seal`] with an explicit CSPRNG (deterministic ones only for test vectors).
///
/// # Errors
/// As [`seal`].
pub fn seal_with_rng<R: CryptoRng>(
    sender: &Identity,
    roster: &Roster,
    channel: &str,
    message: &Message,
    sent_at_ms: u64,
    rng: &mut R,
) -> Result<SealedEnvelope, EnvelopeError> {
    let me = roster
        .participant(sender.id().as_str())
        .ok_or_else(|| EnvelopeError::UnknownSender(sender.id().to_string()))?;
    if me.public != sender.public() {
        return Err(EnvelopeError::SenderKeyMismatch(sender.id().to_string()));
    }
    let recipients: Vec<(&str, [u8; 32])> = roster
        .recipients(sender.id().as_str(), channel)?
        .into_iter()
        .map(|p| (p.id().as_str(), p.public.enc_key))
        .collect();
    seal_to(sender, channel, &recipients, message, sent_at_ms, rng)
}

/// Low-level sealing to an explicit recipient list `(id, X25519 public key)`,
/// with no roster policy check. For tools and tests that need to build
/// envelopes a correct client never would (e.g. to test that the relay refuses
/// them); applications use [`seal`].
///
/// # Errors
/// [`EnvelopeError::BadRecipientKey`] if a recipient key is unusable.
pub fn seal_to<R: CryptoRng>(
    sender: &Identity,
    channel: &str,
    recipients: &[(&str, [u8; 32])],
    message: &Message,
    sent_at_ms: u64,
    rng: &mut R,
) -> Result<SealedEnvelope, EnvelopeError> {
    let mut content_key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(content_key.as_mut_slice());
    let mut msg_id = [0u8; 16];
    rng.fill_bytes(&mut msg_id);
    let commitment = key_commitment(&content_key);
    seal_raw(
        sender,
        channel,
        recipients,
        message,
        sent_at_ms,
        &content_key,
        MsgId(msg_id),
        commitment,
        rng,
    )
}

#[allow(clippy::too_many_arguments)]
fn seal_raw<R: CryptoRng>(
    sender: &Identity,
    channel: &str,
    recipients: &[(&str, [u8; 32])],
    message: &Message,
    sent_at_ms: u64,
    content_key: &[u8; 32],
    msg_id: MsgId,
    commitment: [u8; 32],
    rng: &mut R,
) -> Result<SealedEnvelope, EnvelopeError> {
    let header = Header {
        version: defaults::ENVELOPE_VERSION,
        msg_id,
        sender: sender.id().to_string(),
        channel: channel.to_string(),
        sent_at_ms,
        key_commitment: commitment,
    };
    // invariant: Header holds only integers, arrays and strings; postcard
    // encoding into a Vec cannot fail.
    let header_bytes = postcard::to_allocvec(&header).expect("invariant: header encodes");
    let plaintext = Zeroizing::new(message.to_bytes());
    let ciphertext = ChaCha20Poly1305::new(&Key::from(*content_key))
        .encrypt(
            &Nonce::from([0u8; 12]),
            Payload {
                msg: &plaintext,
                aad: &header_bytes,
            },
        )
        .map_err(|_| EnvelopeError::Malformed("message too large to encrypt"))?;
    let mut sorted: Vec<&(&str, [u8; 32])> = recipients.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut wrapped = Vec::with_capacity(sorted.len());
    for (id, pk) in sorted {
        let bad = || EnvelopeError::BadRecipientKey((*id).to_string());
        let pk = <HpkeKem as hpke::Kem>::PublicKey::from_bytes(pk).map_err(|_| bad())?;
        let (enc, ct) = hpke::single_shot_seal_with_rng::<HpkeAead, HpkeKdf, HpkeKem>(
            &OpModeS::Base,
            &pk,
            defaults::HPKE_WRAP_INFO,
            content_key,
            &wrap_aad(&header_bytes, id),
            rng,
        )
        .map_err(|_| bad())?;
        let mut enc_bytes = [0u8; 32];
        enc_bytes.copy_from_slice(&enc.to_bytes());
        wrapped.push(WrappedKey {
            recipient: (*id).to_string(),
            enc: enc_bytes,
            ct,
        });
    }
    let body = SealedBody {
        header: header.clone(),
        recipients: wrapped,
        ciphertext,
    };
    // invariant: as above, plain data always encodes.
    let body = postcard::to_allocvec(&body).expect("invariant: body encodes");
    let signature = sender.sign(&signed_message(&body));
    let envelope = Envelope { body, signature };
    let bytes = postcard::to_allocvec(&envelope).expect("invariant: envelope encodes");
    Ok(SealedEnvelope {
        bytes,
        header,
        content_key: Zeroizing::new(*content_key),
    })
}

/// Parsed envelope bytes of unknown authenticity. Nothing about it is
/// trustworthy until [`UntrustedEnvelope::verify`] succeeds.
#[derive(Debug, Clone)]
pub struct UntrustedEnvelope {
    raw: Vec<u8>,
    envelope: Envelope,
    body: SealedBody,
    header_len: usize,
}

impl UntrustedEnvelope {
    /// Parses `postcard(Envelope)` bytes: structure only (encoding, no
    /// trailing bytes, version, id syntax, wrapped-key lengths).
    ///
    /// # Errors
    /// [`EnvelopeError::Malformed`] or [`EnvelopeError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let envelope: Envelope = decode_exact(bytes, "envelope encoding")?;
        let (header, rest) = postcard::take_from_bytes::<Header>(&envelope.body)
            .map_err(|_| EnvelopeError::Malformed("header encoding"))?;
        let header_len = envelope.body.len() - rest.len();
        if header.version != defaults::ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(header.version));
        }
        let body: SealedBody = decode_exact(&envelope.body, "body encoding")?;
        if crate::identity::ParticipantId::new(header.sender.as_str()).is_err() {
            return Err(EnvelopeError::Malformed("sender id"));
        }
        if crate::roster::ChannelId::new(header.channel.as_str()).is_err() {
            return Err(EnvelopeError::Malformed("channel id"));
        }
        if body.recipients.len() > defaults::MAX_RECIPIENTS {
            return Err(EnvelopeError::Malformed("too many recipients"));
        }
        if body
            .recipients
            .iter()
            .any(|w| w.ct.len() != WRAPPED_KEY_CT_LEN)
        {
            return Err(EnvelopeError::Malformed("wrapped key length"));
        }
        Ok(Self {
            raw: bytes.to_vec(),
            envelope,
            body,
            header_len,
        })
    }

    /// The header as claimed by the (unverified) sender.
    pub fn claimed_header(&self) -> &Header {
        &self.body.header
    }

    /// Checks the signature with an explicit sender key, without roster policy.
    ///
    /// # Errors
    /// [`EnvelopeError::BadSignature`].
    pub fn verify_signature(&self, sender_key: &VerifyingKey) -> Result<(), EnvelopeError> {
        let sig = Signature::from_bytes(&self.envelope.signature);
        sender_key
            .verify_strict(&signed_message(&self.envelope.body), &sig)
            .map_err(|_| EnvelopeError::BadSignature)
    }

    /// Everything that can be checked without a recipient key: sender in the
    /// roster, signature over the exact body bytes, channel exists, sender may
    /// post there, and the recipient list is exactly the channel's members and
    /// observers minus the sender, sorted by id, each once.
    ///
    /// # Errors
    /// [`EnvelopeError::UnknownSender`], [`EnvelopeError::BadSignature`],
    /// [`EnvelopeError::UnknownChannel`], [`EnvelopeError::ReadOnly`],
    /// [`EnvelopeError::NotAMember`], [`EnvelopeError::RecipientsMismatch`].
    pub fn verify(self, roster: &Roster) -> Result<VerifiedEnvelope, EnvelopeError> {
        let header = &self.body.header;
        let sender = roster
            .participant(&header.sender)
            .ok_or_else(|| EnvelopeError::UnknownSender(header.sender.clone()))?;
        self.verify_signature(&sender.public.sign_key)?;
        self.check_policy(roster)
    }

    /// [`UntrustedEnvelope::verify`] of each envelope (strict Ed25519), for
    /// recipients: unlike [`UntrustedEnvelope::verify_many`] it never
    /// accepts a signature whose `R` has a small-order component, so what a
    /// client archives is exactly what any strict verifier accepts.
    pub fn verify_each_strict(
        envelopes: Vec<UntrustedEnvelope>,
        roster: &Roster,
    ) -> Vec<Result<VerifiedEnvelope, EnvelopeError>> {
        envelopes.into_iter().map(|e| e.verify(roster)).collect()
    }

    /// [`UntrustedEnvelope::verify`] for many envelopes at once: one Ed25519
    /// batch verification for all signatures (about twice as fast as one by
    /// one), then the roster policy of each. If the batch fails (or a sender
    /// is unknown), every envelope is verified on its own, so each result is
    /// exactly what `verify` says, culprit included.
    ///
    /// Batch verification is not bit-for-bit `verify_strict`: it may accept a
    /// signature whose `R` carries a small torsion component, which only the
    /// holder of the sender's secret key can make. The relay uses this; each
    /// recipient still verifies strictly (and quarantines such a message).
    pub fn verify_many(
        envelopes: Vec<UntrustedEnvelope>,
        roster: &Roster,
    ) -> Vec<Result<VerifiedEnvelope, EnvelopeError>> {
        if envelopes.len() < 2 {
            return envelopes.into_iter().map(|e| e.verify(roster)).collect();
        }
        let keys: Option<Vec<VerifyingKey>> = envelopes
            .iter()
            .map(|e| {
                roster
                    .participant(&e.body.header.sender)
                    .map(|p| p.public.sign_key)
                    .filter(|k| !k.is_weak())
            })
            .collect();
        let batch_ok = keys.is_some_and(|keys| {
            let items: Vec<(&UntrustedEnvelope, &VerifyingKey)> =
                envelopes.iter().zip(keys.iter()).collect();
            verify_signatures_batch(&items).is_ok()
        });
        envelopes
            .into_iter()
            .map(|e| {
                if batch_ok {
                    e.check_policy(roster)
                } else {
                    e.verify(roster)
                }
            })
            .collect()
    }

    /// The roster checks after the signature: channel, posting rights,
    /// recipient list.
    fn check_policy(self, roster: &Roster) -> Result<VerifiedEnvelope, EnvelopeError> {
        let header = &self.body.header;
        let expected = roster.recipients(&header.sender, &header.channel)?;
        let got = &self.body.recipients;
        let mismatch = |detail: String| EnvelopeError::RecipientsMismatch {
            channel: header.channel.clone(),
            detail,
        };
        for (i, exp) in expected.iter().enumerate() {
            match got.get(i) {
                Some(w) if w.recipient == exp.id().as_str() => {}
                Some(w) if w.recipient.as_str() > exp.id().as_str() => {
                    return Err(mismatch(format!("missing {}", exp.id())));
                }
                Some(w) => return Err(mismatch(format!("unexpected {:?}", w.recipient))),
                None => return Err(mismatch(format!("missing {}", exp.id()))),
            }
        }
        if let Some(extra) = got.get(expected.len()) {
            return Err(mismatch(format!("unexpected {:?}", extra.recipient)));
        }
        Ok(VerifiedEnvelope { inner: self })
    }
}

/// An envelope whose signature and routing policy were checked against a
/// roster. Its header can be trusted; its content is still sealed.
#[derive(Debug, Clone)]
pub struct VerifiedEnvelope {
    inner: UntrustedEnvelope,
}

/// The result of opening an envelope: its verified header, the decrypted
/// message, the content key that decrypted it, and the exact envelope bytes
/// that were verified and opened.
///
/// Only [`VerifiedEnvelope::open`] and
/// [`VerifiedEnvelope::open_with_content_key`] make one (the fields are
/// private), so whoever holds an `Opened` holds bytes that verified against
/// a roster and a message that really is their content: an archive that
/// stores [`Opened::envelope`] stores exactly what was checked, never bytes
/// passed alongside. Outside this crate one cannot be built by hand:
///
/// ```compile_fail
/// use tallinn_common::envelope::{Header, Opened};
/// use tallinn_common::message::{Message, Tlp};
/// fn forge(header: Header, bytes: Vec<u8>) -> Opened {
///     Opened { header, message: Message::note(Tlp::Red, "forged", ""), content_key: [0; 32].into(), envelope: bytes }
/// }
/// ```
#[derive(Clone)]
pub struct Opened {
    header: Header,
    message: Message,
    content_key: Zeroizing<[u8; 32]>,
    envelope: Vec<u8>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the content key or the plaintext.
        f.debug_struct("Opened")
            .field("msg_id", &self.header.msg_id)
            .field("sender", &self.header.sender)
            .field("channel", &self.header.channel)
            .finish_non_exhaustive()
    }
}

impl Opened {
    /// The verified header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The message id.
    pub fn msg_id(&self) -> MsgId {
        self.header.msg_id
    }

    /// The decrypted message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The content key (checked against the signed key commitment).
    pub fn content_key(&self) -> &[u8; 32] {
        &self.content_key
    }

    /// The exact envelope bytes that were verified and opened.
    pub fn envelope(&self) -> &[u8] {
        &self.envelope
    }
}

impl VerifiedEnvelope {
    /// The verified header.
    pub fn header(&self) -> &Header {
        &self.inner.body.header
    }

    /// The message id.
    pub fn msg_id(&self) -> MsgId {
        self.inner.body.header.msg_id
    }

    /// The exact envelope bytes that were verified (what to store or forward).
    pub fn as_bytes(&self) -> &[u8] {
        &self.inner.raw
    }

    /// Takes the exact envelope bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.inner.raw
    }

    /// The signature bytes.
    pub fn signature(&self) -> &[u8; 64] {
        &self.inner.envelope.signature
    }

    /// The recipient ids, in envelope order.
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        self.inner
            .body
            .recipients
            .iter()
            .map(|w| w.recipient.as_str())
    }

    /// Unwraps the content key for `me`, checks the key commitment and
    /// decrypts the message.
    ///
    /// # Errors
    /// [`EnvelopeError::NotARecipient`], [`EnvelopeError::DecryptFailed`],
    /// [`EnvelopeError::CommitmentMismatch`], [`EnvelopeError::Malformed`] (the
    /// plaintext is not a `Message`).
    pub fn open(&self, me: &Identity) -> Result<Opened, EnvelopeError> {
        let body = &self.inner.body;
        let header_bytes = self.header_bytes()?;
        let mut mine = body
            .recipients
            .iter()
            .filter(|w| w.recipient == me.id().as_str());
        let wrapped = match (mine.next(), mine.next()) {
            (Some(w), None) => w,
            _ => return Err(EnvelopeError::NotARecipient),
        };
        let sk = <HpkeKem as hpke::Kem>::PrivateKey::from_bytes(me.enc_secret())
            .map_err(|_| EnvelopeError::DecryptFailed)?;
        let enc = <HpkeKem as hpke::Kem>::EncappedKey::from_bytes(&wrapped.enc)
            .map_err(|_| EnvelopeError::DecryptFailed)?;
        let key = Zeroizing::new(
            hpke::single_shot_open::<HpkeAead, HpkeKdf, HpkeKem>(
                &OpModeR::Base,
                &sk,
                &enc,
                defaults::HPKE_WRAP_INFO,
                &wrapped.ct,
                &wrap_aad(header_bytes, &wrapped.recipient),
            )
            .map_err(|_| EnvelopeError::DecryptFailed)?,
        );
        let content_key: Zeroizing<[u8; 32]> = Zeroizing::new(
            key.as_slice()
                .try_into()
                .map_err(|_| EnvelopeError::DecryptFailed)?,
        );
        self.open_with_content_key(&content_key)
    }

    /// Decrypts with a known content key (the sender's own copy, or an
    /// auditor given the key): checks the key commitment, then decrypts.
    ///
    /// # Errors
    /// [`EnvelopeError::CommitmentMismatch`], [`EnvelopeError::DecryptFailed`],
    /// [`EnvelopeError::Malformed`].
    pub fn open_with_content_key(&self, content_key: &[u8; 32]) -> Result<Opened, EnvelopeError> {
        let body = &self.inner.body;
        let header_bytes = self.header_bytes()?;
        if key_commitment(content_key) != body.header.key_commitment {
            return Err(EnvelopeError::CommitmentMismatch);
        }
        let plaintext = Zeroizing::new(
            ChaCha20Poly1305::new(&Key::from(*content_key))
                .decrypt(
                    &Nonce::from([0u8; 12]),
                    Payload {
                        msg: &body.ciphertext,
                        aad: header_bytes,
                    },
                )
                .map_err(|_| EnvelopeError::DecryptFailed)?,
        );
        let message =
            Message::from_bytes(&plaintext).map_err(|_| EnvelopeError::Malformed("plaintext"))?;
        Ok(Opened {
            header: body.header.clone(),
            message,
            content_key: Zeroizing::new(*content_key),
            envelope: self.inner.raw.clone(),
        })
    }

    fn header_bytes(&self) -> Result<&[u8], EnvelopeError> {
        self.inner
            .envelope
            .body
            .get(..self.inner.header_len)
            .ok_or(EnvelopeError::Malformed("header length"))
    }
}

/// Decodes, verifies against `roster` and opens as `me`, in one step.
///
/// # Errors
/// Any [`EnvelopeError`].
pub fn open(bytes: &[u8], roster: &Roster, me: &Identity) -> Result<Opened, EnvelopeError> {
    UntrustedEnvelope::decode(bytes)?.verify(roster)?.open(me)
}

/// Verifies a batch of envelopes' signatures at once (Ed25519 batch
/// verification, about twice as fast as one by one). Returns `Ok` only if
/// every signature is valid; on `Err` the caller re-checks one by one to find
/// the culprit.
///
/// # Errors
/// [`EnvelopeError::BadSignature`] if any signature (or key) is invalid.
pub fn verify_signatures_batch(
    items: &[(&UntrustedEnvelope, &VerifyingKey)],
) -> Result<(), EnvelopeError> {
    let messages: Vec<Vec<u8>> = items
        .iter()
        .map(|(e, _)| signed_message(&e.envelope.body))
        .collect();
    let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
    let sigs: Vec<Signature> = items
        .iter()
        .map(|(e, _)| Signature::from_bytes(&e.envelope.signature))
        .collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(_, k)| **k).collect();
    ed25519_dalek::verify_batch(&refs, &sigs, &keys).map_err(|_| EnvelopeError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ParticipantId;
    use crate::message::{Attachment, Kind, Loe, Priority, State, Tlp};
    use proptest::prelude::*;
    use rand::Rng;
    use std::collections::BTreeMap;

    /// A roster plus every participant's identity.
    pub(crate) struct World {
        pub roster: Roster,
        pub ids: BTreeMap<String, Identity>,
    }

    /// Builds a world with the given (id, role) people and channels TOML.
    pub(crate) fn world(people: &[(&str, &str)], channels: &str) -> World {
        let mut ids = BTreeMap::new();
        let mut text = String::new();
        for (id, role) in people {
            let ident = Identity::generate(ParticipantId::new(*id).unwrap());
            text.push_str(&ident.roster_entry(id, role));
            ids.insert(id.to_string(), ident);
        }
        text.push_str(channels);
        World {
            roster: Roster::parse(&text).unwrap(),
            ids,
        }
    }

    fn tallinn() -> World {
        let people: Vec<(&str, &str)> = [
            "US", "CA", "DK", "EE", "FR", "DE", "IT", "NL", "PL", "SE", "GB", "UA",
        ]
        .iter()
        .map(|id| (*id, "member"))
        .chain([("NATO", "observer"), ("EU", "observer")])
        .collect();
        world(
            &people,
            "[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\nobservers = [\"NATO\", \"EU\"]\n\
             [[channel]]\nid = \"pair\"\nmembers = [\"UA\", \"EE\"]\n\
             [[channel]]\nid = \"trio\"\nmembers = [\"UA\", \"EE\", \"PL\"]\n",
        )
    }

    fn all_messages() -> Vec<Message> {
        let mut out = Vec::new();
        let kinds = [
            Kind::Note,
            Kind::Request {
                loe: Loe::Immediate,
                category: "incident-response".into(),
                priority: Priority::Critical,
            },
            Kind::Offer {
                request: MsgId([7; 16]),
            },
            Kind::Status {
                about: MsgId([9; 16]),
                state: State::InProgress,
            },
        ];
        for kind in kinds {
            for tlp in Tlp::ALL {
                out.push(Message {
                    kind: kind.clone(),
                    tlp,
                    reply_to: Some(MsgId([1; 16])),
                    subject: format!("{} {}", kind.name(), tlp),
                    body: "body text".into(),
                    attachments: vec![Attachment {
                        name: "a.txt".into(),
                        media_type: "text/plain".into(),
                        data: b"hello".to_vec(),
                    }],
                });
            }
        }
        out
    }

    #[test]
    fn round_trip_every_kind_and_tlp_with_1_2_and_14_recipients() {
        let w = tallinn();
        let ua = &w.ids["UA"];
        for (channel, n) in [("pair", 1usize), ("trio", 2), ("plenary", 13)] {
            let recips = w.roster.recipients("UA", channel).unwrap();
            assert_eq!(recips.len(), n);
            for m in all_messages() {
                let sealed = seal(ua, &w.roster, channel, &m, 1_700_000_000_000).unwrap();
                for r in &recips {
                    let opened =
                        open(sealed.as_bytes(), &w.roster, &w.ids[r.id().as_str()]).unwrap();
                    assert_eq!(opened.message(), &m);
                    assert_eq!(opened.header().sender, "UA");
                    assert_eq!(opened.header().channel, channel);
                    assert_eq!(opened.header().msg_id, sealed.msg_id());
                }
            }
        }
        // 14 recipients: a channel of 15 (all 12 members, 2 observers, plus
        // the sender makes 14 recipients when an extra member posts).
        let mut people: Vec<(String, &str)> =
            (0..13).map(|i| (format!("M{i}"), "member")).collect();
        people.push(("O1".into(), "observer"));
        people.push(("O2".into(), "observer"));
        let refs: Vec<(&str, &str)> = people.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        let w = world(
            &refs,
            "[[channel]]\nid = \"all\"\nmembers = [\"*\"]\nobservers = [\"O1\", \"O2\"]\n",
        );
        let recips = w.roster.recipients("M0", "all").unwrap();
        assert_eq!(recips.len(), 14);
        for m in all_messages() {
            let sealed = seal(&w.ids["M0"], &w.roster, "all", &m, 5).unwrap();
            for r in &recips {
                let opened = open(sealed.as_bytes(), &w.roster, &w.ids[r.id().as_str()]).unwrap();
                assert_eq!(opened.message(), &m);
            }
        }
    }

    /// Item 8: what an `Opened` carries is what was verified and opened.
    #[test]
    fn opened_carries_the_exact_bytes_and_key_and_hides_them_in_debug() {
        let w = tallinn();
        let m = Message::note(Tlp::Red, "secret subject", "secret body");
        let sealed = seal(&w.ids["UA"], &w.roster, "pair", &m, 1).unwrap();
        let opened = open(sealed.as_bytes(), &w.roster, &w.ids["EE"]).unwrap();
        assert_eq!(opened.envelope(), sealed.as_bytes());
        assert_eq!(opened.content_key(), sealed.content_key());
        assert_eq!(opened.msg_id(), sealed.msg_id());
        assert_eq!(opened.message(), &m);
        let debug = format!("{opened:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(!debug.contains(&hex::encode(sealed.content_key())));
    }

    #[test]
    fn every_single_byte_flip_of_body_or_signature_is_caught() {
        let w = tallinn();
        let m = Message::note(Tlp::Green, "s", "b");
        let sealed = seal(&w.ids["UA"], &w.roster, "pair", &m, 1).unwrap();
        let env: Envelope = postcard::from_bytes(sealed.as_bytes()).unwrap();
        let ee = &w.ids["EE"];
        for i in 0..env.body.len() {
            let mut e = env.clone();
            e.body[i] ^= 0x01;
            let bytes = postcard::to_allocvec(&e).unwrap();
            let err = open(&bytes, &w.roster, ee).unwrap_err();
            assert!(
                matches!(
                    err,
                    EnvelopeError::BadSignature
                        | EnvelopeError::Malformed(_)
                        | EnvelopeError::UnsupportedVersion(_)
                        | EnvelopeError::UnknownSender(_)
                        | EnvelopeError::UnknownChannel(_)
                        | EnvelopeError::RecipientsMismatch { .. }
                ),
                "byte {i}: {err:?}"
            );
        }
        for i in 0..64 {
            let mut e = env.clone();
            e.signature[i] ^= 0x80;
            let bytes = postcard::to_allocvec(&e).unwrap();
            assert_eq!(
                open(&bytes, &w.roster, ee).unwrap_err(),
                EnvelopeError::BadSignature,
                "signature byte {i}"
            );
        }
        // Also every byte of the whole encoded envelope: never a panic, never Ok.
        let raw = sealed.as_bytes();
        for i in 0..raw.len() {
            let mut b = raw.to_vec();
            b[i] ^= 0x01;
            assert!(open(&b, &w.roster, ee).is_err(), "envelope byte {i}");
        }
    }

    #[test]
    fn sender_copy_opens_with_its_content_key() {
        let w = tallinn();
        let m = Message::note(Tlp::Amber, "mine", "b");
        let sealed = seal(&w.ids["UA"], &w.roster, "trio", &m, 1).unwrap();
        let v = UntrustedEnvelope::decode(sealed.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap();
        assert_eq!(
            v.open_with_content_key(sealed.content_key())
                .unwrap()
                .message(),
            &m
        );
        assert_eq!(
            v.open_with_content_key(&[0u8; 32]).unwrap_err(),
            EnvelopeError::CommitmentMismatch
        );
    }

    #[test]
    fn not_a_recipient() {
        let w = tallinn();
        let sealed = seal(
            &w.ids["UA"],
            &w.roster,
            "pair",
            &Message::note(Tlp::Red, "s", ""),
            1,
        )
        .unwrap();
        let err = open(sealed.as_bytes(), &w.roster, &w.ids["PL"]).unwrap_err();
        assert_eq!(err, EnvelopeError::NotARecipient);
        // The sender itself is not a recipient either.
        let err = open(sealed.as_bytes(), &w.roster, &w.ids["UA"]).unwrap_err();
        assert_eq!(err, EnvelopeError::NotARecipient);
    }

    #[test]
    fn wrong_key_is_a_decrypt_error() {
        let w = tallinn();
        let sealed = seal(
            &w.ids["UA"],
            &w.roster,
            "pair",
            &Message::note(Tlp::Red, "s", ""),
            1,
        )
        .unwrap();
        // Someone holding the id "EE" but a different encryption key.
        let impostor = Identity::generate(ParticipantId::new("EE").unwrap());
        let verified = UntrustedEnvelope::decode(sealed.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap();
        assert_eq!(
            verified.open(&impostor).unwrap_err(),
            EnvelopeError::DecryptFailed
        );
    }

    #[test]
    fn commitment_mismatch_is_rejected() {
        let w = tallinn();
        let ua = &w.ids["UA"];
        let recips: Vec<(&str, [u8; 32])> = w
            .roster
            .recipients("UA", "pair")
            .unwrap()
            .iter()
            .map(|p| (p.id().as_str(), p.public.enc_key))
            .collect();
        let key = [5u8; 32];
        let other = key_commitment(&[6u8; 32]);
        let sealed = seal_raw(
            ua,
            "pair",
            &recips,
            &Message::note(Tlp::Amber, "s", "b"),
            1,
            &key,
            MsgId([1; 16]),
            other,
            &mut rand::rng(),
        )
        .unwrap();
        let err = open(sealed.as_bytes(), &w.roster, &w.ids["EE"]).unwrap_err();
        assert_eq!(err, EnvelopeError::CommitmentMismatch);
    }

    #[test]
    fn resigned_ciphertext_with_changed_sender_fails() {
        let w = tallinn();
        let sealed = seal(
            &w.ids["UA"],
            &w.roster,
            "trio",
            &Message::note(Tlp::Red, "s", "b"),
            1,
        )
        .unwrap();
        let env: Envelope = postcard::from_bytes(sealed.as_bytes()).unwrap();
        let mut body: SealedBody = postcard::from_bytes(&env.body).unwrap();
        // PL claims UA's message as its own and re-signs it. The recipient set
        // for PL's post differs by one (UA instead of PL): fix it up too, so
        // only the AAD binding can catch the forgery.
        body.header.sender = "PL".into();
        let pl_wrap = body
            .recipients
            .iter()
            .position(|r| r.recipient == "PL")
            .unwrap();
        body.recipients[pl_wrap].recipient = "UA".into();
        body.recipients
            .sort_by(|a, b| a.recipient.cmp(&b.recipient));
        let new_body = postcard::to_allocvec(&body).unwrap();
        let forged = Envelope {
            signature: w.ids["PL"].sign(&signed_message(&new_body)),
            body: new_body,
        };
        let bytes = postcard::to_allocvec(&forged).unwrap();
        let verified = UntrustedEnvelope::decode(&bytes)
            .unwrap()
            .verify(&w.roster)
            .unwrap();
        assert_eq!(
            verified.open(&w.ids["EE"]).unwrap_err(),
            EnvelopeError::DecryptFailed
        );
    }

    #[test]
    fn readdressing_to_another_channel_fails() {
        let w = tallinn();
        let sealed = seal(
            &w.ids["UA"],
            &w.roster,
            "pair",
            &Message::note(Tlp::Red, "s", "b"),
            1,
        )
        .unwrap();
        let env: Envelope = postcard::from_bytes(sealed.as_bytes()).unwrap();
        let mut body: SealedBody = postcard::from_bytes(&env.body).unwrap();
        body.header.channel = "trio".into();
        let moved = Envelope {
            body: postcard::to_allocvec(&body).unwrap(),
            signature: env.signature,
        };
        let bytes = postcard::to_allocvec(&moved).unwrap();
        assert_eq!(
            open(&bytes, &w.roster, &w.ids["EE"]).unwrap_err(),
            EnvelopeError::BadSignature
        );
    }

    #[test]
    fn policy_violations_are_caught_by_verify() {
        let w = tallinn();
        let note = Message::note(Tlp::Clear, "s", "");
        // Observer posting (built with the low-level sealer).
        let nato = &w.ids["NATO"];
        let recips: Vec<(&str, [u8; 32])> = w
            .roster
            .channel("plenary")
            .unwrap()
            .members
            .iter()
            .map(|id| {
                (
                    id.as_str(),
                    w.roster.participant(id.as_str()).unwrap().public.enc_key,
                )
            })
            .collect();
        let s = seal_to(nato, "plenary", &recips, &note, 1, &mut rand::rng()).unwrap();
        let e = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap_err();
        assert_eq!(e, EnvelopeError::ReadOnly("NATO".into()));
        assert_eq!(e.code(), ErrorCode::ReadOnly);
        // And seal refuses outright.
        assert_eq!(
            seal(nato, &w.roster, "plenary", &note, 1).unwrap_err(),
            EnvelopeError::ReadOnly("NATO".into())
        );
        // Unknown channel.
        let s = seal_to(&w.ids["UA"], "nowhere", &recips, &note, 1, &mut rand::rng()).unwrap();
        let e = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap_err();
        assert_eq!(e, EnvelopeError::UnknownChannel("nowhere".into()));
        // Non-member.
        let s = seal_to(&w.ids["PL"], "pair", &recips, &note, 1, &mut rand::rng()).unwrap();
        let e = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap_err();
        assert!(matches!(e, EnvelopeError::NotAMember { .. }), "{e}");
        // Recipients missing an observer.
        let ee = &w.ids["EE"];
        let without_eu: Vec<(&str, [u8; 32])> = w
            .roster
            .recipients("EE", "plenary")
            .unwrap()
            .iter()
            .filter(|p| p.id().as_str() != "EU")
            .map(|p| (p.id().as_str(), p.public.enc_key))
            .collect();
        let s = seal_to(ee, "plenary", &without_eu, &note, 1, &mut rand::rng()).unwrap();
        let e = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap_err();
        assert_eq!(
            e,
            EnvelopeError::RecipientsMismatch {
                channel: "plenary".into(),
                detail: "missing EU".into()
            }
        );
        // Recipients with the sender itself added.
        let mut with_self = w
            .roster
            .recipients("EE", "pair")
            .unwrap()
            .iter()
            .map(|p| (p.id().as_str(), p.public.enc_key))
            .collect::<Vec<_>>();
        with_self.push(("EE", ee.public().enc_key));
        let s = seal_to(ee, "pair", &with_self, &note, 1, &mut rand::rng()).unwrap();
        let e = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap_err();
        assert!(matches!(e, EnvelopeError::RecipientsMismatch { .. }), "{e}");
        // Duplicate recipient.
        let mut dup = w
            .roster
            .recipients("EE", "pair")
            .unwrap()
            .iter()
            .map(|p| (p.id().as_str(), p.public.enc_key))
            .collect::<Vec<_>>();
        dup.push(dup[0]);
        let s = seal_to(ee, "pair", &dup, &note, 1, &mut rand::rng()).unwrap();
        let e = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap_err();
        assert!(matches!(e, EnvelopeError::RecipientsMismatch { .. }), "{e}");
    }

    #[test]
    fn unknown_sender_and_stale_key() {
        let w = tallinn();
        let stranger = Identity::generate(ParticipantId::new("XX").unwrap());
        let note = Message::note(Tlp::Clear, "s", "");
        let s = seal_to(
            &stranger,
            "pair",
            &[("EE", [9; 32])],
            &note,
            1,
            &mut rand::rng(),
        )
        .unwrap();
        let e = UntrustedEnvelope::decode(s.as_bytes())
            .unwrap()
            .verify(&w.roster)
            .unwrap_err();
        assert_eq!(e, EnvelopeError::UnknownSender("XX".into()));
        assert_eq!(e.code(), ErrorCode::UnknownParticipant);
        let stale = Identity::generate(ParticipantId::new("UA").unwrap());
        assert_eq!(
            seal(&stale, &w.roster, "pair", &note, 1).unwrap_err(),
            EnvelopeError::SenderKeyMismatch("UA".into())
        );
    }

    #[test]
    fn trailing_bytes_and_bad_versions_are_malformed() {
        let w = tallinn();
        let sealed = seal(
            &w.ids["UA"],
            &w.roster,
            "pair",
            &Message::note(Tlp::Red, "s", ""),
            1,
        )
        .unwrap();
        let mut b = sealed.as_bytes().to_vec();
        b.push(0);
        assert!(matches!(
            UntrustedEnvelope::decode(&b).unwrap_err(),
            EnvelopeError::Malformed(_)
        ));
        let env: Envelope = postcard::from_bytes(sealed.as_bytes()).unwrap();
        let mut body: SealedBody = postcard::from_bytes(&env.body).unwrap();
        body.header.version = 2;
        let e = Envelope {
            body: postcard::to_allocvec(&body).unwrap(),
            signature: env.signature,
        };
        assert_eq!(
            UntrustedEnvelope::decode(&postcard::to_allocvec(&e).unwrap()).unwrap_err(),
            EnvelopeError::UnsupportedVersion(2)
        );
    }

    #[test]
    fn batch_verification() {
        let w = tallinn();
        let note = Message::note(Tlp::Clear, "s", "");
        let envs: Vec<UntrustedEnvelope> = ["UA", "EE", "PL"]
            .iter()
            .map(|s| {
                let sealed = seal(&w.ids[*s], &w.roster, "trio", &note, 1).unwrap();
                UntrustedEnvelope::decode(sealed.as_bytes()).unwrap()
            })
            .collect();
        let keys: Vec<VerifyingKey> = ["UA", "EE", "PL"]
            .iter()
            .map(|s| w.roster.participant(s).unwrap().public.sign_key)
            .collect();
        let items: Vec<(&UntrustedEnvelope, &VerifyingKey)> =
            envs.iter().zip(keys.iter()).collect();
        assert!(verify_signatures_batch(&items).is_ok());
        let swapped = vec![(items[0].0, items[1].1), items[1], items[2]];
        assert_eq!(
            verify_signatures_batch(&swapped),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn verify_many_matches_verify_one_by_one() {
        let w = tallinn();
        let note = Message::note(Tlp::Clear, "s", "");
        let sealed = |who: &str| {
            seal(&w.ids[who], &w.roster, "trio", &note, 1)
                .unwrap()
                .into_bytes()
        };
        let decode = |b: &[u8]| UntrustedEnvelope::decode(b).unwrap();
        let good: Vec<Vec<u8>> = ["UA", "EE", "PL", "UA"].iter().map(|s| sealed(s)).collect();
        let all =
            UntrustedEnvelope::verify_many(good.iter().map(|b| decode(b)).collect(), &w.roster);
        assert!(all.iter().all(Result::is_ok));
        // One flipped signature bit: only that one fails, the rest pass.
        let mut bad = good.clone();
        let last = bad[2].len() - 1;
        bad[2][last] ^= 1;
        let mixed =
            UntrustedEnvelope::verify_many(bad.iter().map(|b| decode(b)).collect(), &w.roster);
        let codes: Vec<Option<EnvelopeError>> = mixed.into_iter().map(Result::err).collect();
        assert_eq!(
            codes,
            vec![None, None, Some(EnvelopeError::BadSignature), None]
        );
        // Policy failures are still reported per envelope after a good batch.
        let other_roster = tallinn().roster;
        let foreign =
            UntrustedEnvelope::verify_many(good.iter().map(|b| decode(b)).collect(), &other_roster);
        assert!(foreign.iter().all(Result::is_err), "keys of another roster");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = UntrustedEnvelope::decode(&bytes);
            let _ = postcard::from_bytes::<SealedBody>(&bytes);
            let _ = postcard::from_bytes::<Envelope>(&bytes);
            let _ = postcard::from_bytes::<Header>(&bytes);
        }

        #[test]
        fn mutated_envelopes_never_panic_and_never_open(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            truncate in proptest::option::of(any::<usize>()),
        ) {
            let w = tallinn_small();
            let sealed = seal(&w.ids["UA"], &w.roster, "pair", &Message::note(Tlp::Red, "s", "b"), 1).unwrap();
            let mut b = sealed.as_bytes().to_vec();
            let mut changed = false;
            for (pos, val) in edits {
                let i = pos % b.len();
                changed |= b[i] != val;
                b[i] = val;
            }
            if let Some(t) = truncate {
                let t = t % b.len();
                changed |= t != b.len();
                b.truncate(t);
            }
            let res = open(&b, &w.roster, &w.ids["EE"]);
            if changed {
                prop_assert!(res.is_err());
            }
        }

        #[test]
        fn envelope_encoding_round_trips(body in proptest::collection::vec(any::<u8>(), 0..300), sig in any::<[u8; 32]>()) {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&sig);
            let e = Envelope { body, signature };
            let bytes = postcard::to_allocvec(&e).unwrap();
            prop_assert_eq!(postcard::from_bytes::<Envelope>(&bytes).unwrap(), e);
        }
    }

    fn tallinn_small() -> World {
        use std::sync::OnceLock;
        type Secrets = Vec<(String, [u8; 32], [u8; 32])>;
        static W: OnceLock<(String, Secrets)> = OnceLock::new();
        // Deterministic small world shared by proptest cases (key generation
        // per case would dominate the test time).
        let (text, secrets) = W.get_or_init(|| {
            let mut text = String::new();
            let mut secrets = Vec::new();
            for id in ["UA", "EE"] {
                let mut s = [0u8; 32];
                let mut e = [0u8; 32];
                rand::rng().fill_bytes(&mut s);
                rand::rng().fill_bytes(&mut e);
                let ident = Identity::from_secrets(ParticipantId::new(id).unwrap(), &s, &e);
                text.push_str(&ident.roster_entry(id, "member"));
                secrets.push((id.to_string(), s, e));
            }
            text.push_str("[[channel]]\nid = \"pair\"\nmembers = [\"UA\", \"EE\"]\n");
            (text, secrets)
        });
        World {
            roster: Roster::parse(text).unwrap(),
            ids: secrets
                .iter()
                .map(|(id, s, e)| {
                    (
                        id.clone(),
                        Identity::from_secrets(ParticipantId::new(id.as_str()).unwrap(), s, e),
                    )
                })
                .collect(),
        }
    }

    /// Re-signs `bytes` (an envelope sealed by `who`) with a signature whose
    /// R carries the order-2 torsion point T: R' = rB + T, s = r + k·a with
    /// k = H(R' || A || M). s·B = R' + k·A fails by exactly T, so strict
    /// verification refuses it; ed25519-dalek's batch check sums
    /// z·(R' + k·A - s·B) with a 128-bit z derived from the inputs, which
    /// cancels T whenever z is even: half of all such signatures pass a
    /// batch. Only the key holder can make one.
    fn torsion_signed(who: &Identity, bytes: &[u8], seed: u8) -> Vec<u8> {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::Scalar;
        use sha2::Sha512;
        let mut env: Envelope = postcard::from_bytes(bytes).unwrap();
        let a = who.signing_key().to_scalar();
        let big_a = who.signing_key().verifying_key().to_bytes();
        let r = Scalar::from_bytes_mod_order([seed; 32]);
        let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[4]).compress();
        let m = signed_message(&env.body);
        let h: [u8; 64] = Sha512::new()
            .chain_update(big_r.as_bytes())
            .chain_update(big_a)
            .chain_update(&m)
            .finalize()
            .into();
        let k = Scalar::from_bytes_mod_order_wide(&h);
        let s = r + k * a;
        env.signature[..32].copy_from_slice(big_r.as_bytes());
        env.signature[32..].copy_from_slice(s.as_bytes());
        postcard::to_allocvec(&env).unwrap()
    }

    #[test]
    fn small_order_r_passes_the_batch_but_never_a_strict_check() {
        let w = tallinn();
        let ua = &w.ids["UA"];
        let good = seal(
            ua,
            &w.roster,
            "plenary",
            &Message::note(Tlp::Clear, "a", "b"),
            1,
        )
        .unwrap();
        let other = seal(
            ua,
            &w.roster,
            "plenary",
            &Message::note(Tlp::Clear, "c", "d"),
            2,
        )
        .unwrap();
        let decode = |b: &[u8]| UntrustedEnvelope::decode(b).unwrap();
        // The first nonce whose signature the batch accepts (the batch's z
        // is a function of its inputs, so this is deterministic; about one
        // in two nonces qualifies).
        let evil = (1..=64u8)
            .map(|seed| torsion_signed(ua, other.as_bytes(), seed))
            .find(|evil| {
                UntrustedEnvelope::verify_many(
                    vec![decode(good.as_bytes()), decode(evil)],
                    &w.roster,
                )
                .iter()
                .all(Result::is_ok)
            })
            .expect(
                "some nonce passes the batch check (the relay's path, PROTOCOL.md §10 item 32)",
            );
        // Strictly verified alone: refused.
        assert!(matches!(
            decode(&evil).verify(&w.roster),
            Err(EnvelopeError::BadSignature)
        ));
        // A recipient's check refuses it whatever the batching.
        let client = UntrustedEnvelope::verify_each_strict(
            vec![decode(good.as_bytes()), decode(&evil)],
            &w.roster,
        );
        assert!(client[0].is_ok());
        assert!(matches!(client[1], Err(EnvelopeError::BadSignature)));
    }
}
