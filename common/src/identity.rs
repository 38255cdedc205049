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
//! others can read). The plain form:
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
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::defaults;

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

/// Validates the id alphabet shared by participant and device ids.
fn valid_id(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A participant id: 1-32 characters of `A-Za-z0-9_-` (e.g. `UA`, `NATO`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ParticipantId(String);

impl ParticipantId {
    /// Parses and validates a participant id.
    ///
    /// # Errors
    /// [`IdentityError::InvalidId`] if the id breaks the alphabet or length rule.
    pub fn new(id: impl Into<String>) -> Result<Self, IdentityError> {
        let id = id.into();
        if valid_id(&id) {
            Ok(Self(id))
        } else {
            Err(IdentityError::InvalidId {
                kind: "participant",
                id,
            })
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ParticipantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl AsRef<str> for ParticipantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ParticipantId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A device label naming one client installation of a participant (e.g.
/// `front-office`): 1-32 characters of `A-Za-z0-9_-`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    /// Parses and validates a device id.
    ///
    /// # Errors
    /// [`IdentityError::InvalidId`] if the id breaks the alphabet or length rule.
    pub fn new(id: impl Into<String>) -> Result<Self, IdentityError> {
        let id = id.into();
        if valid_id(&id) {
            Ok(Self(id))
        } else {
            Err(IdentityError::InvalidId { kind: "device", id })
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for DeviceId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A participant fingerprint: the first 20 bytes of `SHA-256(sign_key || enc_key)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 20]);

impl Fingerprint {
    /// Computes the fingerprint of a pair of public keys.
    pub fn of(sign_key: &[u8; 32], enc_key: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(sign_key)
            .chain_update(enc_key)
            .finalize();
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest[..20]);
        Self(out)
    }
}

impl fmt::Display for Fingerprint {
    /// Five space-separated groups of eight lower-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.0.chunks(4).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&hex::encode(chunk))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
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

    /// The X25519 secret, for HPKE opening and archive key derivation.
    /// The Ed25519 signing key, for tests that build signatures by hand.
    #[cfg(test)]
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.sign
    }

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

    /// Serializes the plain secret key file (TOML).
    pub fn to_secret_toml(&self) -> Zeroizing<String> {
        let mut sign = Zeroizing::new(B64.encode(self.sign.as_bytes()));
        let mut enc = Zeroizing::new(B64.encode(self.enc_secret.as_slice()));
        let out = Zeroizing::new(format!(
            "# Tallinn Relay secret key file. Keep it private (mode 0600); never send it to anyone.\n\
             id = \"{}\"\nsign_secret = \"{}\"\nenc_secret = \"{}\"\n",
            self.id.as_str(),
            sign.as_str(),
            enc.as_str()
        ));
        sign.zeroize();
        enc.zeroize();
        out
    }

    /// Serializes the passphrase-protected secret key file (TOML) with the
    /// given Argon2id parameters.
    ///
    /// # Errors
    /// [`IdentityError::BadKdfParams`] if the parameters are out of range.
    pub fn to_protected_toml(
        &self,
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<Zeroizing<String>, IdentityError> {
        let mem = Path::new("<memory>");
        params.check(mem)?;
        let mut rng = rand::rng();
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut salt);
        rng.fill_bytes(&mut nonce);
        let key = params.derive(passphrase, &salt, mem)?;
        let mut plain = Zeroizing::new([0u8; 64]);
        plain[..32].copy_from_slice(self.sign.as_bytes());
        plain[32..].copy_from_slice(self.enc_secret.as_slice());
        let aad = secret_file_aad(&self.id);
        let cipher = XChaCha20Poly1305::new(&(*key).into());
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain.as_slice(),
                    aad: &aad,
                },
            )
            .map_err(|_| IdentityError::Malformed {
                path: mem.into(),
                reason: "sealing the secret key failed".into(),
            })?;
        Ok(Zeroizing::new(format!(
            "# Tallinn Relay secret key file (passphrase-protected). Keep it private (mode 0600).\n\
             id = \"{}\"\nkdf = \"argon2id\"\nm_cost_kib = {}\nt_cost = {}\np_cost = {}\n\
             salt = \"{}\"\nnonce = \"{}\"\nsealed = \"{}\"\n",
            self.id.as_str(),
            params.m_cost_kib,
            params.t_cost,
            params.p_cost,
            B64.encode(salt),
            B64.encode(nonce),
            B64.encode(sealed),
        )))
    }

    /// Parses a secret key file's contents. `path` only labels errors.
    ///
    /// # Errors
    /// [`IdentityError::Malformed`] for bad TOML, base64 or lengths;
    /// [`IdentityError::PassphraseRequired`] / [`IdentityError::WrongPassphrase`]
    /// for the protected form.
    pub fn from_secret_toml(
        text: &str,
        passphrase: Option<&[u8]>,
        path: &Path,
    ) -> Result<Self, IdentityError> {
        let malformed = |reason: String| IdentityError::Malformed {
            path: path.into(),
            reason,
        };
        let file: SecretFile = toml::from_str(text).map_err(|e| {
            // toml's message quotes the offending line, which may be a secret:
            // keep only the description.
            malformed(format!("not a valid secret key file: {}", e.message()))
        })?;
        match file {
            SecretFile::Plain {
                id,
                mut sign_secret,
                mut enc_secret,
            } => {
                let sign = decode_secret(&sign_secret, "sign_secret").map_err(malformed);
                let enc = decode_secret(&enc_secret, "enc_secret").map_err(malformed);
                sign_secret.zeroize();
                enc_secret.zeroize();
                let (sign, enc) = (sign?, enc?);
                Ok(Self::from_secrets(id, &sign, &enc))
            }
            SecretFile::Protected {
                id,
                kdf,
                m_cost_kib,
                t_cost,
                p_cost,
                salt,
                nonce,
                sealed,
            } => {
                if kdf != "argon2id" {
                    return Err(malformed(format!("unsupported kdf {kdf:?}")));
                }
                let passphrase =
                    passphrase.ok_or_else(|| IdentityError::PassphraseRequired(path.into()))?;
                let params = KdfParams {
                    m_cost_kib,
                    t_cost,
                    p_cost,
                };
                params.check(path)?;
                let salt = B64
                    .decode(salt)
                    .map_err(|_| malformed("salt is not valid base64".into()))?;
                if salt.len() < 8 || salt.len() > 64 {
                    return Err(malformed("salt must be 8-64 bytes".into()));
                }
                let nonce: [u8; 24] = B64
                    .decode(nonce)
                    .ok()
                    .and_then(|n| n.try_into().ok())
                    .ok_or_else(|| malformed("nonce must be 24 bytes of base64".into()))?;
                let sealed = B64
                    .decode(sealed)
                    .map_err(|_| malformed("sealed is not valid base64".into()))?;
                let key = params.derive(passphrase, &salt, path)?;
                let cipher = XChaCha20Poly1305::new(&(*key).into());
                let aad = secret_file_aad(&id);
                let plain = Zeroizing::new(
                    cipher
                        .decrypt(
                            &XNonce::from(nonce),
                            Payload {
                                msg: &sealed,
                                aad: &aad,
                            },
                        )
                        .map_err(|_| IdentityError::WrongPassphrase(path.into()))?,
                );
                if plain.len() != 64 {
                    return Err(malformed("sealed secret has the wrong length".into()));
                }
                let mut sign = Zeroizing::new([0u8; 32]);
                let mut enc = Zeroizing::new([0u8; 32]);
                sign.copy_from_slice(&plain[..32]);
                enc.copy_from_slice(&plain[32..]);
                Ok(Self::from_secrets(id, &sign, &enc))
            }
        }
    }

    /// Writes the secret key file to a new file created with mode 0600,
    /// fsynced. Passphrase-protected if `passphrase` is given.
    ///
    /// # Errors
    /// [`IdentityError::AlreadyExists`] if the file exists, [`IdentityError::Io`]
    /// on other failures.
    pub fn write_secret_file(
        &self,
        path: &Path,
        passphrase: Option<&[u8]>,
        params: KdfParams,
    ) -> Result<(), IdentityError> {
        let text = match passphrase {
            Some(p) => self.to_protected_toml(p, params)?,
            None => self.to_secret_toml(),
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let io = |action| {
            move |source: std::io::Error| IdentityError::Io {
                action,
                path: path.into(),
                source,
            }
        };
        let mut file = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                IdentityError::AlreadyExists(path.into())
            } else {
                io("creating")(e)
            }
        })?;
        file.write_all(text.as_bytes()).map_err(io("writing"))?;
        file.sync_all().map_err(io("syncing"))?;
        Ok(())
    }

    /// Reads a secret key file, refusing one that group or others can read.
    ///
    /// # Errors
    /// [`IdentityError::InsecurePermissions`], [`IdentityError::Io`], and the
    /// errors of [`Identity::from_secret_toml`].
    pub fn read_secret_file(path: &Path, passphrase: Option<&[u8]>) -> Result<Self, IdentityError> {
        let io = |action| {
            move |source: std::io::Error| IdentityError::Io {
                action,
                path: path.into(),
                source,
            }
        };
        let file = std::fs::File::open(path).map_err(io("opening"))?;
        let meta = file.metadata().map_err(io("reading metadata of"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::InsecurePermissions {
                    path: path.into(),
                    mode,
                });
            }
        }
        if meta.len() > defaults::MAX_SECRET_FILE_LEN {
            return Err(IdentityError::Malformed {
                path: path.into(),
                reason: format!("larger than {} bytes", defaults::MAX_SECRET_FILE_LEN),
            });
        }
        let mut text = Zeroizing::new(String::new());
        file.take(defaults::MAX_SECRET_FILE_LEN)
            .read_to_string(&mut text)
            .map_err(io("reading"))?;
        Self::from_secret_toml(&text, passphrase, path)
    }

    /// Whether a secret key file is passphrase-protected (without decrypting it).
    ///
    /// # Errors
    /// As [`Identity::read_secret_file`], minus decryption.
    pub fn secret_file_is_protected(path: &Path) -> Result<bool, IdentityError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
                    action: "reading",
                    path: path.into(),
                    source,
                })?,
            );
        Ok(text.lines().any(|l| l.trim_start().starts_with("kdf")))
    }
}

fn secret_file_aad(id: &ParticipantId) -> Vec<u8> {
    let mut aad = defaults::SECRET_FILE_AAD_CONTEXT.to_vec();
    aad.extend_from_slice(id.as_str().as_bytes());
    aad
}

fn decode_secret(b64: &str, field: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let bytes = Zeroizing::new(
        B64.decode(b64.trim())
            .map_err(|_| format!("{field} is not valid base64"))?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(format!(
            "{field} must decode to 32 bytes, got {}",
            bytes.len()
        ));
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// The two on-disk forms of the secret key file.
#[derive(Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum SecretFile {
    Plain {
        id: ParticipantId,
        sign_secret: String,
        enc_secret: String,
    },
    Protected {
        id: ParticipantId,
        kdf: String,
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
        salt: String,
        nonce: String,
        sealed: String,
    },
}

/// Argon2id cost parameters of a passphrase-protected key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// The production parameters of [`defaults`]: 64 MiB, 3 passes, 1 lane.
    fn default() -> Self {
        Self {
            m_cost_kib: defaults::ARGON2_M_COST_KIB,
            t_cost: defaults::ARGON2_T_COST,
            p_cost: defaults::ARGON2_P_COST,
        }
    }
}

impl KdfParams {
    fn check(&self, path: &Path) -> Result<(), IdentityError> {
        let bad = |reason: String| IdentityError::BadKdfParams {
            path: path.into(),
            reason,
        };
        if self.m_cost_kib > defaults::ARGON2_MAX_M_COST_KIB {
            return Err(bad(format!(
                "m_cost_kib {} exceeds {}",
                self.m_cost_kib,
                defaults::ARGON2_MAX_M_COST_KIB
            )));
        }
        if self.t_cost == 0 || self.t_cost > defaults::ARGON2_MAX_T_COST {
            return Err(bad(format!(
                "t_cost {} is outside 1..={}",
                self.t_cost,
                defaults::ARGON2_MAX_T_COST
            )));
        }
        if self.p_cost == 0 || self.p_cost > defaults::ARGON2_MAX_P_COST {
            return Err(bad(format!(
                "p_cost {} is outside 1..={}",
                self.p_cost,
                defaults::ARGON2_MAX_P_COST
            )));
        }
        if self.m_cost_kib < 8 * self.p_cost {
            return Err(bad(format!(
                "m_cost_kib {} is below 8 * p_cost",
                self.m_cost_kib
            )));
        }
        Ok(())
    }

    fn derive(
        &self,
        passphrase: &[u8],
        salt: &[u8],
        path: &Path,
    ) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
        let bad = |e: argon2::Error| IdentityError::BadKdfParams {
            path: path.into(),
            reason: e.to_string(),
        };
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(bad)?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, salt, key.as_mut_slice())
            .map_err(bad)?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast_params() -> KdfParams {
        KdfParams {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
        }
    }

    fn id(s: &str) -> ParticipantId {
        ParticipantId::new(s).unwrap()
    }

    #[test]
    fn ids_are_validated() {
        assert!(ParticipantId::new("UA").is_ok());
        assert!(ParticipantId::new("back-office_2").is_ok());
        assert!(ParticipantId::new("").is_err());
        assert!(ParticipantId::new("a".repeat(33)).is_err());
        assert!(ParticipantId::new("U A").is_err());
        assert!(ParticipantId::new("UÄ").is_err());
        assert!(DeviceId::new("front-office").is_ok());
        let err = DeviceId::new("front office").unwrap_err().to_string();
        assert!(
            err.contains("device") && err.contains("front office"),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let ident = Identity::generate(id("EE"));
        let dbg = format!("{ident:?}");
        let toml = ident.to_secret_toml();
        let secret_line = toml.lines().find(|l| l.starts_with("sign_secret")).unwrap();
        let secret_b64 = secret_line.split('"').nth(1).unwrap();
        assert!(!dbg.contains(secret_b64));
        assert!(!dbg.contains(&hex::encode(ident.sign.as_bytes())));
        assert!(dbg.contains("EE"));
    }

    #[test]
    fn fingerprint_format() {
        let fp = Fingerprint::of(&[1u8; 32], &[2u8; 32]);
        let s = fp.to_string();
        let groups: Vec<&str> = s.split(' ').collect();
        assert_eq!(groups.len(), 5);
        assert!(groups.iter().all(|g| g.len() == 8));
        let full = Sha256::new()
            .chain_update([1u8; 32])
            .chain_update([2u8; 32])
            .finalize();
        assert_eq!(s.replace(' ', ""), hex::encode(&full[..20]));
    }

    #[test]
    fn plain_file_round_trip_and_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ua.key");
        let ident = Identity::generate(id("UA"));
        ident
            .write_secret_file(&path, None, KdfParams::default())
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let back = Identity::read_secret_file(&path, None).unwrap();
        assert_eq!(back.public(), ident.public());
        assert_eq!(back.enc_secret(), ident.enc_secret());
        // Never overwritten.
        let err = ident
            .write_secret_file(&path, None, KdfParams::default())
            .unwrap_err();
        assert!(matches!(err, IdentityError::AlreadyExists(_)));
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ua.key");
        Identity::generate(id("UA"))
            .write_secret_file(&path, None, KdfParams::default())
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::read_secret_file(&path, None).unwrap_err();
        assert!(matches!(
            err,
            IdentityError::InsecurePermissions { mode: 0o644, .. }
        ));
        let msg = err.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(msg.contains("0644"), "{msg}");
    }

    #[test]
    fn passphrase_round_trip_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pl.key");
        let ident = Identity::generate(id("PL"));
        ident
            .write_secret_file(&path, Some(b"correct horse"), fast_params())
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("argon2id"));
        assert!(!text.contains(&B64.encode(ident.sign.as_bytes())));
        assert!(Identity::secret_file_is_protected(&path).unwrap());

        let back = Identity::read_secret_file(&path, Some(b"correct horse")).unwrap();
        assert_eq!(back.public(), ident.public());

        let err = Identity::read_secret_file(&path, Some(b"battery staple")).unwrap_err();
        assert!(matches!(err, IdentityError::WrongPassphrase(_)), "{err}");
        let err = Identity::read_secret_file(&path, None).unwrap_err();
        assert!(matches!(err, IdentityError::PassphraseRequired(_)), "{err}");
    }

    #[test]
    fn protected_file_cannot_be_moved_to_another_id() {
        let ident = Identity::generate(id("PL"));
        let text = ident.to_protected_toml(b"pw", fast_params()).unwrap();
        let moved = text.replace("id = \"PL\"", "id = \"DE\"");
        let err = Identity::from_secret_toml(&moved, Some(b"pw"), Path::new("x")).unwrap_err();
        assert!(matches!(err, IdentityError::WrongPassphrase(_)));
    }

    #[test]
    fn hostile_kdf_params_are_refused_before_work() {
        let ident = Identity::generate(id("PL"));
        let text = ident.to_protected_toml(b"pw", fast_params()).unwrap();
        let hostile = text.replace("m_cost_kib = 256", "m_cost_kib = 4000000000");
        let err = Identity::from_secret_toml(&hostile, Some(b"pw"), Path::new("x")).unwrap_err();
        assert!(matches!(err, IdentityError::BadKdfParams { .. }), "{err}");
    }

    #[test]
    fn malformed_files_are_typed_errors_without_secrets() {
        let p = Path::new("k");
        for text in [
            "",
            "id = \"UA\"",
            "id = \"UA\"\nsign_secret = \"!!!\"\nenc_secret = \"AAAA\"",
            "id = \"U A\"\nsign_secret = \"AAAA\"\nenc_secret = \"AAAA\"",
            "id = \"UA\"\nsign_secret = \"AAAA\"\nenc_secret = \"AAAA\"",
            "\u{0}\u{1}garbage",
        ] {
            let err = Identity::from_secret_toml(text, None, p).unwrap_err();
            assert!(
                matches!(err, IdentityError::Malformed { .. }),
                "{text:?}: {err}"
            );
        }
        // A well-formed key with a typo'd field name must not echo the secret.
        let ident = Identity::generate(id("UA"));
        let text = ident.to_secret_toml().replace("enc_secret", "enc_secrt");
        let secret = B64.encode(ident.sign.as_bytes());
        let err = Identity::from_secret_toml(&text, None, p).unwrap_err();
        assert!(!err.to_string().contains(&secret), "{err}");
    }

    #[test]
    fn storage_keys_are_label_separated() {
        let ident = Identity::generate(id("UA"));
        assert_ne!(
            *ident.derive_storage_key(b"a"),
            *ident.derive_storage_key(b"b")
        );
        assert_eq!(
            *ident.derive_storage_key(b"a"),
            *ident.derive_storage_key(b"a")
        );
    }
}
