//! Version-2 envelopes: device recipients (the sender's own other devices
//! included), the roster epoch sealed against, a key suite byte, derived
//! wrap ephemerals ([`super::wraps`]) and `tallinn/2` labels.

use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    decode_exact, encrypt_content, key_commitment_for, signed_message, wraps, EnvelopeError,
    Header, SealedEnvelope, Wrap,
};
use crate::defaults;
use crate::identity::Identity;
use crate::message::{Message, MsgId};
use crate::roster::RosterState;

/// The version-2 header (wire encoding; field order normative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderV2 {
    /// Protocol version, 2.
    pub version: u8,
    /// Key suite, 1 = X25519 wraps, Ed25519 signatures.
    pub suite: u8,
    /// Random message id chosen by the sender.
    pub msg_id: MsgId,
    /// Sender participant id.
    pub sender: String,
    /// The sending device's label.
    pub sender_device: String,
    /// Channel id.
    pub channel: String,
    /// The roster epoch sealed against.
    pub roster_epoch: u64,
    /// Sender's clock at sealing, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// `SHA-256("tallinn/2 key-commitment" || content_key)`.
    pub key_commitment: [u8; 32],
}

impl HeaderV2 {
    fn view(&self) -> Header {
        Header {
            version: self.version,
            suite: self.suite,
            msg_id: self.msg_id,
            sender: self.sender.clone(),
            sender_device: Some(self.sender_device.clone()),
            channel: self.channel.clone(),
            roster_epoch: Some(self.roster_epoch),
            sent_at_ms: self.sent_at_ms,
            key_commitment: self.key_commitment,
        }
    }
}

/// The content key wrapped to one device (version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKeyV2 {
    /// Recipient participant id.
    pub participant: String,
    /// Recipient device label.
    pub device: String,
    /// HPKE encapsulated key (the derived X25519 ephemeral public key).
    pub enc: [u8; 32],
    /// HPKE ciphertext of the content key (48 bytes).
    #[serde(with = "serde_bytes")]
    pub ct: Vec<u8>,
}

/// The signed body of a version-2 envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBodyV2 {
    /// Header.
    pub header: HeaderV2,
    /// One wrapped key per recipient device, sorted by (participant, device).
    pub recipients: Vec<WrappedKeyV2>,
    /// ChaCha20-Poly1305 ciphertext of `postcard(Message)`, tag appended.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Decodes a version-2 body: the header view, the header's length in bytes,
/// the wraps and the ciphertext.
pub(crate) fn decode_body(
    body: &[u8],
) -> Result<(Header, usize, Vec<Wrap>, Vec<u8>), EnvelopeError> {
    let (_, rest) = postcard::take_from_bytes::<HeaderV2>(body)
        .map_err(|_| EnvelopeError::Malformed("header encoding"))?;
    let header_len = body.len() - rest.len();
    let body: SealedBodyV2 = decode_exact(body, "body encoding")?;
    if body.header.suite != defaults::SUITE_X25519 {
        return Err(EnvelopeError::UnsupportedSuite(body.header.suite));
    }
    let wraps = body
        .recipients
        .into_iter()
        .map(|w| Wrap {
            participant: w.participant,
            device: Some(w.device),
            enc: w.enc,
            ct: w.ct,
        })
        .collect();
    Ok((body.header.view(), header_len, wraps, body.ciphertext))
}

/// Seals `message` from `sender` (the keys of its device `device`) into
/// `channel` of roster `state`: to every device of every member and observer
/// of the channel and to the sender's own other devices, except `device`.
///
/// # Errors
/// [`EnvelopeError::UnknownChannel`], [`EnvelopeError::ReadOnly`],
/// [`EnvelopeError::NotAMember`], [`EnvelopeError::ChairOnly`],
/// [`EnvelopeError::UnknownSender`], [`EnvelopeError::UnknownDevice`] if the
/// roster does not let the device post there;
/// [`EnvelopeError::SenderKeyMismatch`] if the keys differ from the roster's.
pub fn seal_v2(
    sender: &Identity,
    device: &str,
    state: &RosterState,
    channel: &str,
    message: &Message,
    sent_at_ms: u64,
) -> Result<SealedEnvelope, EnvelopeError> {
    seal_v2_with_rng(
        sender,
        device,
        state,
        channel,
        message,
        sent_at_ms,
        &mut rand::rng(),
    )
}

/// [`seal_v2`] with an explicit CSPRNG (deterministic ones only for test
/// vectors).
///
/// # Errors
/// As [`seal_v2`].
pub fn seal_v2_with_rng<R: CryptoRng>(
    sender: &Identity,
    device: &str,
    state: &RosterState,
    channel: &str,
    message: &Message,
    sent_at_ms: u64,
    rng: &mut R,
) -> Result<SealedEnvelope, EnvelopeError> {
    let who = sender.id().as_str();
    let recipients = state.recipient_devices(who, device, channel)?;
    // invariant: recipient_devices checked that the device exists.
    let mine = state
        .device(who, device)
        .ok_or_else(|| EnvelopeError::UnknownDevice {
            sender: who.into(),
            device: device.into(),
        })?;
    let public = sender.public();
    if mine.sign_key != public.sign_key || mine.enc_key != public.enc_key {
        return Err(EnvelopeError::SenderKeyMismatch(format!("{who}/{device}")));
    }
    let list: Vec<(&str, &str, [u8; 32])> = recipients
        .iter()
        .map(|(p, d)| (p.id.as_str(), d.device.as_str(), d.enc_key))
        .collect();
    seal_v2_to(
        sender,
        device,
        channel,
        state.epoch(),
        &list,
        message,
        sent_at_ms,
        rng,
    )
}

/// Low-level version-2 sealing to an explicit list of `(participant, device,
/// X25519 public key)`, with no roster policy check: for tools and tests that
/// build envelopes a correct client never would. The list is sorted here.
///
/// RNG draw order (normative for reproducing the vectors): content key (32
/// bytes), then msg_id (16 bytes); nothing else (the wrap ephemerals are
/// derived).
///
/// # Errors
/// [`EnvelopeError::BadRecipientKey`] if a recipient key is unusable.
#[allow(clippy::too_many_arguments)]
pub fn seal_v2_to<R: CryptoRng>(
    sender: &Identity,
    device: &str,
    channel: &str,
    roster_epoch: u64,
    recipients: &[(&str, &str, [u8; 32])],
    message: &Message,
    sent_at_ms: u64,
    rng: &mut R,
) -> Result<SealedEnvelope, EnvelopeError> {
    let mut content_key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(content_key.as_mut_slice());
    let mut msg_id = [0u8; 16];
    rng.fill_bytes(&mut msg_id);
    let header = HeaderV2 {
        version: defaults::ENVELOPE_VERSION_V2,
        suite: defaults::SUITE_X25519,
        msg_id: MsgId(msg_id),
        sender: sender.id().to_string(),
        sender_device: device.to_string(),
        channel: channel.to_string(),
        roster_epoch,
        sent_at_ms,
        key_commitment: key_commitment_for(2, &content_key),
    };
    // invariant: HeaderV2 holds only integers, arrays and strings; postcard
    // encoding into a Vec cannot fail.
    let header_bytes = postcard::to_allocvec(&header).expect("invariant: header encodes");
    let ciphertext = encrypt_content(&content_key, message, &header_bytes)?;
    let mut sorted: Vec<&(&str, &str, [u8; 32])> = recipients.iter().collect();
    sorted.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut wrapped = Vec::with_capacity(sorted.len());
    for (participant, dev, pk) in sorted {
        let (enc, ct) = wraps::wrap(
            pk,
            &header_bytes,
            &content_key,
            &header.msg_id,
            participant,
            dev,
        )?;
        wrapped.push(WrappedKeyV2 {
            participant: (*participant).to_string(),
            device: (*dev).to_string(),
            enc,
            ct,
        });
    }
    let view = header.view();
    let body = SealedBodyV2 {
        header,
        recipients: wrapped,
        ciphertext,
    };
    // invariant: plain data always encodes.
    let body = postcard::to_allocvec(&body).expect("invariant: body encodes");
    let signature = sender.sign(&signed_message(2, &body));
    let envelope = super::Envelope { body, signature };
    let bytes = postcard::to_allocvec(&envelope).expect("invariant: envelope encodes");
    Ok(SealedEnvelope {
        bytes,
        header: view,
        content_key,
    })
}
