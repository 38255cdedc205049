//! Identities: participant and device ids, key pairs, secret key files and
//! fingerprints.
//!
//! A participant holds two key pairs:
//! - an **identity key** (Ed25519) that signs envelopes and session
//!   authentications, and
//! - an **encryption key** (X25519) to which senders HPKE-wrap content keys.
//!
//! [`Identity`] holds both secrets. Its secrets are zeroized on drop and its
//! `Debug` output shows only the id and the public fingerprint.
//! [`PublicIdentity`] is what the roster pins.
//!
//! # Secret key file
//! TOML, created with mode `0600` (reading refuses a file that the group or
//! others can read; the file I/O is `tallinn_client::key_file`, this crate
//! only encodes and parses the text). The plain form:
//! ```toml
//! id = "UA"
//! sign_secret = "<32-byte Ed25519 seed, base64 standard with padding>"
//! enc_secret = "<32-byte X25519 secret, base64>"
//! ```
//! The passphrase-protected form replaces the two secrets with an Argon2id +
//! XChaCha20-Poly1305 sealed blob:
//! ```toml
//! id = "UA"
//! kdf = "argon2id"
//! m_cost_kib = 65536
//! t_cost = 3
//! p_cost = 1
//! salt = "<16 bytes, base64>"
//! nonce = "<24 bytes, base64>"
//! sealed = "<XChaCha20-Poly1305(sign_secret || enc_secret), 80 bytes, base64>"
//! ```
//! The AEAD key is Argon2id(passphrase, salt) with the stated costs (version
//! 0x13, 32-byte output); the additional data is
//! `"tallinn/1 secret-file" || UTF-8(id)`.
//!
//! # Fingerprints
//! The fingerprint of a participant is the first 20 bytes of
//! `SHA-256(sign_key || enc_key)`, shown as five space-separated groups of
//! eight lower-case hex digits.

use std::fmt;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::{CryptoRng, Rng};
use sha2::Sha256;
use zeroize::Zeroizing;

mod ids;
mod secret_file;

pub use ids::{DeviceId, Fingerprint, ParticipantId};
pub use secret_file::KdfParams;

/// Errors of identities, ids and secret key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A participant or device id is empty, longer than 32 characters, or holds
    /// a character outside `A-Za-z0-9_-`.
    #[error("invalid {kind} id {id:?}: must be 1-32 characters of A-Za-z0-9_-")]
    InvalidId {
        /// `participant` or `device`.
        kind: &'static str,
        /// The offending id (already printable: it came from a `str`).
        id: String,
    },
    /// Reading or writing a key file failed at the operating-system level.
    #[error("{action} secret key file {path}: {source}")]
    Io {
        /// What was being done (`reading`, `creating`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The secret key file can be read by the group or others.
    #[error(
        "secret key file {path} is readable by group or others (mode {mode:04o}); \
         fix it with `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file already exists; key files are never overwritten.
    #[error("secret key file {0} already exists; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// The key file is not valid TOML of the expected shape, or is too large.
    #[error("secret key file {path} is malformed: {reason}")]
    Malformed {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// What is wrong (never contains secret material).
        reason: String,
    },
    /// The file is passphrase-protected and no passphrase was given.
    #[error("secret key file {0} is passphrase-protected; a passphrase is required")]
    PassphraseRequired(PathBuf),
    /// The passphrase is wrong, or the protected file was altered.
    #[error("wrong passphrase for secret key file {0} (or the file was altered)")]
    WrongPassphrase(PathBuf),
    /// Key derivation parameters are out of the accepted range.
    #[error("unacceptable argon2id parameters in {path}: {reason}")]
    BadKdfParams {
        /// The file.
        path: PathBuf,
        /// Which bound was violated.
        reason: String,
    },
}

/// The public half of an identity, as pinned in the roster.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicIdentity {
    /// Participant id.
    pub id: ParticipantId,
    /// Ed25519 verifying key.
    pub sign_key: VerifyingKey,
    /// X25519 public key.
    pub enc_key: [u8; 32],
}

impl PublicIdentity {
    /// The participant fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.sign_key.as_bytes(), &self.enc_key)
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicIdentity")
            .field("id", &self.id)
            .field("fingerprint", &self.fingerprint().to_string())
            .finish()
    }
}

/// A participant's secret keys. Zeroized on drop; `Debug` never shows a secret.
pub struct Identity {
    id: ParticipantId,
    sign: SigningKey,
    enc_secret: Zeroizing<[u8; 32]>,
    enc_public: [u8; 32],
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("fingerprint", &self.fingerprint().to_string())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh identity from the operating system's CSPRNG.
    pub fn generate(id: ParticipantId) -> Self {
        Self::generate_with_rng(id, &mut rand::rng())
    }

    /// Generates an identity from the given CSPRNG (deterministic RNGs are for
    /// test vectors only).
    pub fn generate_with_rng<R: CryptoRng + ?Sized>(id: ParticipantId, rng: &mut R) -> Self {
        let mut sign_seed = Zeroizing::new([0u8; 32]);
        let mut enc_secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(sign_seed.as_mut_slice());
        rng.fill_bytes(enc_secret.as_mut_slice());
        Self::from_secrets(id, &sign_seed, &enc_secret)
    }

    /// Builds an identity from its two 32-byte secrets.
    pub fn from_secrets(id: ParticipantId, sign_seed: &[u8; 32], enc_secret: &[u8; 32]) -> Self {
        let sign = SigningKey::from_bytes(sign_seed);
        let enc_public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*enc_secret))
                .to_bytes();
        Self {
            id,
            sign,
            enc_secret: Zeroizing::new(*enc_secret),
            enc_public,
        }
    }

    /// The participant id.
    pub fn id(&self) -> &ParticipantId {
        &self.id
    }

    /// The public identity (what goes into the roster).
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            id: self.id.clone(),
            sign_key: self.sign.verifying_key(),
            enc_key: self.enc_public,
        }
    }

    /// The participant fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.sign.verifying_key().as_bytes(), &self.enc_public)
    }

    /// Signs `message` with the identity key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.sign.sign(message).to_bytes()
    }

    /// The Ed25519 signing key, for tests that build signatures by hand.
    #[cfg(test)]
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.sign
    }

    /// The X25519 secret, for HPKE opening and archive key derivation.
    pub(crate) fn enc_secret(&self) -> &[u8; 32] {
        &self.enc_secret
    }

    /// The same participant and signing key with a fresh X25519 encryption
    /// secret: a device's encryption-key rotation.
    pub fn with_new_enc_secret(&self) -> Identity {
        let mut enc = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(enc.as_mut_slice());
        let seed = Zeroizing::new(self.sign.to_bytes());
        Self::from_secrets(self.id.clone(), &seed, &enc)
    }

    /// The input keying material [`Identity::derive_storage_key`] uses
    /// (`sign seed ‖ enc secret`), for wrapping it as the secret of an
    /// archive written before archive secrets were random (migration only).
    /// Secret: keep it in the returned zeroizing buffer.
    pub fn legacy_storage_secret(&self) -> Zeroizing<Vec<u8>> {
        let mut ikm = Zeroizing::new(Vec::with_capacity(64));
        ikm.extend_from_slice(self.sign.as_bytes());
        ikm.extend_from_slice(self.enc_secret.as_slice());
        ikm
    }

    /// Derives a 32-byte key for local storage (e.g. the client archive) with
    /// HKDF-SHA256 from both identity secrets, with the given `info` label.
    /// Distinct labels give independent keys.
    pub fn derive_storage_key(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut ikm = Zeroizing::new([0u8; 64]);
        ikm[..32].copy_from_slice(self.sign.as_bytes());
        ikm[32..].copy_from_slice(self.enc_secret.as_slice());
        let hk = hkdf::Hkdf::<Sha256>::new(None, ikm.as_slice());
        let mut out = Zeroizing::new([0u8; 32]);
        // invariant: 32 bytes is far below HKDF-SHA256's 255*32 output limit.
        hk.expand(info, out.as_mut_slice())
            .expect("invariant: 32-byte HKDF output is always valid");
        out
    }

    /// The public roster entry for this identity, as TOML (one
    /// `[[participant]]` table), ready to send to the operator.
    pub fn roster_entry(&self, name: &str, role: &str) -> String {
        let public = self.public();
        format!(
            "[[participant]]\nid = {:?}\nname = {:?}\nrole = {:?}\nsign_key = \"{}\"\nenc_key = \"{}\"\n",
            public.id.as_str(),
            name,
            role,
            B64.encode(public.sign_key.as_bytes()),
            B64.encode(public.enc_key),
        )
    }
}

#[cfg(test)]
mod tests;
