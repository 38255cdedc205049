//! Verifiable wraps (version 2): each wrap's HPKE ephemeral key is derived
//! from the content key instead of drawn at random.
//!
//! ```text
//! ikm       = HKDF-SHA256(salt = "", IKM = content_key,
//!                         info = "tallinn/2 wrap-ephemeral" || msg_id || P || 0x00 || D, L = 32)
//! ephemeral = DeriveKeyPair(ikm)        (RFC 9180 §7.1.3, DHKEM(X25519, HKDF-SHA256))
//! ```
//! Whoever holds the content key (every recipient; an auditor handed it)
//! recomputes every wrap byte for byte, and so proves that every listed
//! device, the beneficiary's included, was given the same, openable content
//! key. Without the content key the ephemeral is pseudorandom (HKDF is a PRF
//! keyed by a fresh 256-bit secret), so HPKE's confidentiality is unchanged;
//! and the wrap protects only the content key, which a party able to derive
//! the ephemeral already knows. `PROTOCOL.md` §15.3 gives the argument.
//!
//! hpke 0.15's `single_shot_seal_with_rng` draws exactly one 32-byte block
//! (Nsk) for the ephemeral and runs DeriveKeyPair on it, so
//! [`DerivedEphemeral`] yields `ikm` for that one draw. Any other draw (a
//! changed hpke) is recorded and the seal refused, never silently randomised;
//! the tests check the result against `derive_keypair` and the Python
//! appendix of `PROTOCOL.md` against an independent HPKE implementation.

use std::convert::Infallible;

use hkdf::Hkdf;
use hpke::{Deserializable, Kem as _, OpModeS, Serializable};
use rand::{TryCryptoRng, TryRng};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{EnvelopeError, HpkeAead, HpkeKdf, HpkeKem};
use crate::defaults;
use crate::message::MsgId;

/// The HKDF output from which the wrap ephemeral for `participant`'s
/// `device` is derived.
pub fn ephemeral_ikm(
    content_key: &[u8; 32],
    msg_id: &MsgId,
    participant: &str,
    device: &str,
) -> Zeroizing<[u8; 32]> {
    let mut info = Vec::with_capacity(
        defaults::WRAP_EPHEMERAL_INFO.len() + 16 + participant.len() + 1 + device.len(),
    );
    info.extend_from_slice(defaults::WRAP_EPHEMERAL_INFO);
    info.extend_from_slice(&msg_id.0);
    info.extend_from_slice(participant.as_bytes());
    info.push(0);
    info.extend_from_slice(device.as_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    // invariant: 32 bytes is far below HKDF-SHA256's 255 * 32 output limit.
    Hkdf::<Sha256>::new(Some(&[]), content_key)
        .expand(&info, out.as_mut_slice())
        .expect("invariant: 32 bytes is a valid HKDF-SHA256 length");
    out
}

/// The public key of the ephemeral derived from `ikm` (what `enc` must be).
pub fn derived_enc(ikm: &[u8; 32]) -> [u8; 32] {
    let (_, pk) = HpkeKem::derive_keypair(ikm);
    let mut out = [0u8; 32];
    out.copy_from_slice(&pk.to_bytes());
    out
}

/// The HPKE AAD of a version-2 wrap:
/// `postcard(header) || UTF-8(participant) || 0x00 || UTF-8(device)`.
pub fn wrap_aad(header_bytes: &[u8], participant: &str, device: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header_bytes.len() + participant.len() + 1 + device.len());
    aad.extend_from_slice(header_bytes);
    aad.extend_from_slice(participant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(device.as_bytes());
    aad
}

/// An "RNG" that yields the derived ikm for exactly one 32-byte draw. Any
/// other draw is recorded in `misused` and served from the operating
/// system's RNG, and the caller then refuses the result.
pub struct DerivedEphemeral {
    ikm: Option<Zeroizing<[u8; 32]>>,
    misused: bool,
}

impl DerivedEphemeral {
    /// Wraps `ikm` for one draw.
    pub fn new(ikm: Zeroizing<[u8; 32]>) -> Self {
        Self {
            ikm: Some(ikm),
            misused: false,
        }
    }

    /// Whether the one expected draw happened and nothing else was drawn.
    pub fn used_exactly_once(&self) -> bool {
        self.ikm.is_none() && !self.misused
    }
}

impl TryRng for DerivedEphemeral {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.misused = true;
        Ok(rand::random())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.misused = true;
        Ok(rand::random())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        match self.ikm.take() {
            Some(ikm) if dst.len() == 32 => dst.copy_from_slice(ikm.as_slice()),
            other => {
                self.ikm = other;
                self.misused = true;
                rand::fill(dst);
            }
        }
        Ok(())
    }
}

impl TryCryptoRng for DerivedEphemeral {}

/// Wraps `content_key` to the device `(participant, device)` with encryption
/// key `pk`, using the derived ephemeral. Returns `(enc, ct)`.
///
/// # Errors
/// [`EnvelopeError::BadRecipientKey`] for an unusable key;
/// [`EnvelopeError::WrapMismatch`] if the HPKE library drew randomness other
/// than the one derived block.
pub fn wrap(
    pk: &[u8; 32],
    header_bytes: &[u8],
    content_key: &[u8; 32],
    msg_id: &MsgId,
    participant: &str,
    device: &str,
) -> Result<([u8; 32], Vec<u8>), EnvelopeError> {
    let bad = || EnvelopeError::BadRecipientKey(format!("{participant}/{device}"));
    let pk = <HpkeKem as hpke::Kem>::PublicKey::from_bytes(pk).map_err(|_| bad())?;
    let mut rng = DerivedEphemeral::new(ephemeral_ikm(content_key, msg_id, participant, device));
    let (enc, ct) = hpke::single_shot_seal_with_rng::<HpkeAead, HpkeKdf, HpkeKem>(
        &OpModeS::Base,
        &pk,
        defaults::HPKE_WRAP_INFO_V2,
        content_key,
        &wrap_aad(header_bytes, participant, device),
        &mut rng,
    )
    .map_err(|_| bad())?;
    if !rng.used_exactly_once() {
        return Err(EnvelopeError::WrapMismatch {
            participant: participant.into(),
            device: device.into(),
        });
    }
    let mut enc_bytes = [0u8; 32];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    Ok((enc_bytes, ct))
}
