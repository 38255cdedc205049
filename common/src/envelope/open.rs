//! Opening verified envelopes: unwrapping the content key for one recipient
//! (a version-1 participant or a version-2 device), checking the key
//! commitment, decrypting; and, for version 2, recomputing every wrap from
//! the content key.

use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hpke::{Deserializable, OpModeR};
use zeroize::Zeroizing;

use super::{
    key_commitment_for, v1, wraps, EnvelopeError, Header, HpkeAead, HpkeKdf, HpkeKem, Policy,
    UntrustedEnvelope, VerifiedEnvelope,
};
use crate::defaults;
use crate::identity::Identity;
use crate::message::{Message, MsgId};
use crate::roster::RosterState;

/// The result of opening an envelope: its verified header, the decrypted
/// message, the content key that decrypted it, and the exact envelope bytes
/// that were verified and opened.
///
/// Only [`VerifiedEnvelope::open`], [`VerifiedEnvelope::open_as`] and
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
        &self.inner.header
    }

    /// The message id.
    pub fn msg_id(&self) -> MsgId {
        self.inner.header.msg_id
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

    /// The recipient participant ids, in envelope order, each once (a
    /// version-2 envelope lists a participant once per device).
    pub fn recipients(&self) -> impl Iterator<Item = &str> {
        let mut last: Option<&str> = None;
        self.inner.wraps.iter().filter_map(move |w| {
            let p = w.participant.as_str();
            if last == Some(p) {
                None
            } else {
                last = Some(p);
                Some(p)
            }
        })
    }

    /// The recipients as `(participant, device)`, in envelope order
    /// (`device` is `None` for version 1).
    pub fn recipient_devices(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.inner
            .wraps
            .iter()
            .map(|w| (w.participant.as_str(), w.device.as_deref()))
    }

    /// Opens a version-1 envelope as participant `me` (the identity's id).
    /// A version-2 envelope needs the device: [`VerifiedEnvelope::open_as`].
    ///
    /// # Errors
    /// As [`VerifiedEnvelope::open_as`].
    pub fn open(&self, me: &Identity) -> Result<Opened, EnvelopeError> {
        self.open_as(me, None)
    }

    /// Unwraps the content key for `me` (the keys of device `device`, for a
    /// version-2 envelope; ignored for version 1), checks the key commitment
    /// and decrypts the message.
    ///
    /// # Errors
    /// [`EnvelopeError::NotARecipient`], [`EnvelopeError::DecryptFailed`],
    /// [`EnvelopeError::CommitmentMismatch`], [`EnvelopeError::Malformed`] (the
    /// plaintext is not a `Message`).
    pub fn open_as(&self, me: &Identity, device: Option<&str>) -> Result<Opened, EnvelopeError> {
        let header_bytes = self.header_bytes()?;
        let v2 = self.inner.header.version >= 2;
        let mut mine = self.inner.wraps.iter().filter(|w| {
            w.participant == me.id().as_str() && (!v2 || w.device.as_deref() == device)
        });
        let wrapped = match (mine.next(), mine.next()) {
            (Some(w), None) => w,
            _ => return Err(EnvelopeError::NotARecipient),
        };
        let (info, aad) = match &wrapped.device {
            Some(d) => (
                defaults::HPKE_WRAP_INFO_V2,
                wraps::wrap_aad(header_bytes, &wrapped.participant, d),
            ),
            None => (
                defaults::HPKE_WRAP_INFO,
                v1::wrap_aad(header_bytes, &wrapped.participant),
            ),
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
                info,
                &wrapped.ct,
                &aad,
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
        let header = &self.inner.header;
        let header_bytes = self.header_bytes()?;
        if key_commitment_for(header.version, content_key) != header.key_commitment {
            return Err(EnvelopeError::CommitmentMismatch);
        }
        let plaintext = Zeroizing::new(
            ChaCha20Poly1305::new(&Key::from(*content_key))
                .decrypt(
                    &Nonce::from([0u8; 12]),
                    Payload {
                        msg: &self.inner.ciphertext,
                        aad: header_bytes,
                    },
                )
                .map_err(|_| EnvelopeError::DecryptFailed)?,
        );
        let message =
            Message::from_bytes(&plaintext).map_err(|_| EnvelopeError::Malformed("plaintext"))?;
        Ok(Opened {
            header: header.clone(),
            message,
            content_key: Zeroizing::new(*content_key),
            envelope: self.inner.raw.clone(),
        })
    }

    /// Version 2: recomputes every wrap from the content key (which must
    /// match the commitment) and the recipients' keys in `state` (the state
    /// of the envelope's epoch), and compares them byte for byte. Success
    /// proves that every listed device was given this same, openable content
    /// key.
    ///
    /// # Errors
    /// [`EnvelopeError::CommitmentMismatch`]; [`EnvelopeError::WrapMismatch`]
    /// naming the first wrap that differs; [`EnvelopeError::UnsupportedVersion`]
    /// for version 1 (random ephemerals cannot be recomputed);
    /// [`EnvelopeError::EpochMismatch`] for the wrong state.
    pub fn verify_wraps(
        &self,
        content_key: &[u8; 32],
        state: &RosterState,
    ) -> Result<(), EnvelopeError> {
        self.verify_wraps_of(content_key, state, |_, _| true)
            .map(|_| ())
    }

    /// [`VerifiedEnvelope::verify_wraps`] for the wraps of the devices
    /// `which(participant, device)` selects (a recipient checks the
    /// beneficiary's); returns how many were checked.
    ///
    /// # Errors
    /// As [`VerifiedEnvelope::verify_wraps`].
    pub fn verify_wraps_of(
        &self,
        content_key: &[u8; 32],
        state: &RosterState,
        which: impl Fn(&str, &str) -> bool,
    ) -> Result<usize, EnvelopeError> {
        let header = &self.inner.header;
        if header.version < 2 {
            return Err(EnvelopeError::UnsupportedVersion(header.version));
        }
        // Re-checks the epoch, so the keys below are the ones sealed to.
        state.expected_recipients(header)?;
        if key_commitment_for(header.version, content_key) != header.key_commitment {
            return Err(EnvelopeError::CommitmentMismatch);
        }
        let header_bytes = self.header_bytes()?;
        let mut checked = 0;
        for w in &self.inner.wraps {
            let device = w.device.as_deref().unwrap_or_default();
            if !which(&w.participant, device) {
                continue;
            }
            checked += 1;
            let mismatch = || EnvelopeError::WrapMismatch {
                participant: w.participant.clone(),
                device: device.into(),
            };
            let pk = state
                .device(&w.participant, device)
                .ok_or_else(mismatch)?
                .enc_key;
            let (enc, ct) = wraps::wrap(
                &pk,
                header_bytes,
                content_key,
                &header.msg_id,
                &w.participant,
                device,
            )?;
            if enc != w.enc || ct != w.ct {
                return Err(mismatch());
            }
        }
        Ok(checked)
    }

    fn header_bytes(&self) -> Result<&[u8], EnvelopeError> {
        self.inner
            .envelope
            .body
            .get(..self.inner.header_len)
            .ok_or(EnvelopeError::Malformed("header length"))
    }
}

/// Decodes, verifies against `policy` and opens as `me` (version 1, or a
/// version-2 envelope opened by participant id alone is refused), in one step.
///
/// # Errors
/// Any [`EnvelopeError`].
pub fn open<P: Policy + ?Sized>(
    bytes: &[u8],
    policy: &P,
    me: &Identity,
) -> Result<Opened, EnvelopeError> {
    UntrustedEnvelope::decode(bytes)?.verify(policy)?.open(me)
}
