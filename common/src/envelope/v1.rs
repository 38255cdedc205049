//! Version-1 envelopes: participant recipients, random HPKE ephemerals,
//! `tallinn/1` labels. Still sealed by version-1 peers and held in every
//! archive written before the migration, so they keep decoding, verifying
//! and opening.
//!
//! ```text
//! commitment = SHA-256("tallinn/1 key-commitment" || content_key)
//! header     = HeaderV1{version=1, msg_id, sender, channel, sent_at_ms, commitment}
//! for R in recipients(sender, channel), sorted by id:
//!     (enc, ct) = HPKE.SealBase(pk_R, info="tallinn/1 wrap", aad = postcard(header) || R,
//!                               pt = content_key)
//! signature  = Ed25519(sender, "tallinn/1 envelope" || body)
//! ```

use hpke::{Deserializable, OpModeS, Serializable};
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    decode_exact, encrypt_content, key_commitment, signed_message, EnvelopeError, Header, HpkeAead,
    HpkeKdf, HpkeKem, SealedEnvelope, Wrap,
};
use crate::defaults;
use crate::identity::Identity;
use crate::message::{Message, MsgId};
use crate::roster::Roster;

/// The version-1 header (wire encoding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderV1 {
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

impl HeaderV1 {
    fn view(&self) -> Header {
        Header {
            version: self.version,
            suite: defaults::SUITE_X25519,
            msg_id: self.msg_id,
            sender: self.sender.clone(),
            sender_device: None,
            channel: self.channel.clone(),
            roster_epoch: None,
            sent_at_ms: self.sent_at_ms,
            key_commitment: self.key_commitment,
        }
    }
}

/// The content key wrapped to one recipient (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKeyV1 {
    /// Recipient participant id.
    pub recipient: String,
    /// HPKE encapsulated key (X25519 ephemeral public key).
    pub enc: [u8; 32],
    /// HPKE ciphertext of the content key (48 bytes).
    #[serde(with = "serde_bytes")]
    pub ct: Vec<u8>,
}

/// The signed body of a version-1 envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBodyV1 {
    /// Header.
    pub header: HeaderV1,
    /// One wrapped key per recipient, sorted by recipient id.
    pub recipients: Vec<WrappedKeyV1>,
    /// ChaCha20-Poly1305 ciphertext of `postcard(Message)`, tag appended.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// The HPKE AAD of a version-1 wrap: `postcard(header) || UTF-8(recipient)`.
pub(crate) fn wrap_aad(header_bytes: &[u8], recipient: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header_bytes.len() + recipient.len());
    aad.extend_from_slice(header_bytes);
    aad.extend_from_slice(recipient.as_bytes());
    aad
}

/// Decodes a version-1 body: the header view, the header's length in bytes,
/// the wraps and the ciphertext.
pub(crate) fn decode_body(
    body: &[u8],
) -> Result<(Header, usize, Vec<Wrap>, Vec<u8>), EnvelopeError> {
    let (_, rest) = postcard::take_from_bytes::<HeaderV1>(body)
        .map_err(|_| EnvelopeError::Malformed("header encoding"))?;
    let header_len = body.len() - rest.len();
    let body: SealedBodyV1 = decode_exact(body, "body encoding")?;
    let wraps = body
        .recipients
        .into_iter()
        .map(|w| Wrap {
            participant: w.recipient,
            device: None,
            enc: w.enc,
            ct: w.ct,
        })
        .collect();
    Ok((body.header.view(), header_len, wraps, body.ciphertext))
}

/// Seals `message` from `sender` into `channel` of a version-1 `roster`, to
/// every member and observer of the channel except the sender.
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

/// Low-level version-1 sealing to an explicit recipient list `(id, X25519
/// public key)`, with no roster policy check. For tools and tests that need to
/// build envelopes a correct client never would (e.g. to test that the relay
/// refuses them); applications use [`seal`].
///
/// RNG draw order (normative for reproducing the vectors): content key (32
/// bytes), msg_id (16 bytes), then one HPKE ephemeral secret per recipient in
/// recipient order.
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

/// [`seal_to`] with the content key, msg_id and commitment given (tests build
/// envelopes whose commitment lies).
#[allow(clippy::too_many_arguments)]
pub(crate) fn seal_raw<R: CryptoRng>(
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
    let content_key = Zeroizing::new(*content_key);
    let header = HeaderV1 {
        version: defaults::ENVELOPE_VERSION,
        msg_id,
        sender: sender.id().to_string(),
        channel: channel.to_string(),
        sent_at_ms,
        key_commitment: commitment,
    };
    // invariant: HeaderV1 holds only integers, arrays and strings; postcard
    // encoding into a Vec cannot fail.
    let header_bytes = postcard::to_allocvec(&header).expect("invariant: header encodes");
    let ciphertext = encrypt_content(&content_key, message, &header_bytes)?;
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
            content_key.as_slice(),
            &wrap_aad(&header_bytes, id),
            rng,
        )
        .map_err(|_| bad())?;
        let mut enc_bytes = [0u8; 32];
        enc_bytes.copy_from_slice(&enc.to_bytes());
        wrapped.push(WrappedKeyV1 {
            recipient: (*id).to_string(),
            enc: enc_bytes,
            ct,
        });
    }
    let view = header.view();
    let body = SealedBodyV1 {
        header,
        recipients: wrapped,
        ciphertext,
    };
    // invariant: as above, plain data always encodes.
    let body = postcard::to_allocvec(&body).expect("invariant: body encodes");
    let signature = sender.sign(&signed_message(1, &body));
    let envelope = super::Envelope { body, signature };
    let bytes = postcard::to_allocvec(&envelope).expect("invariant: envelope encodes");
    Ok(SealedEnvelope {
        bytes,
        header: view,
        content_key,
    })
}
