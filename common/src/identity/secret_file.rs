//! The secret key file's two TOML forms, plain and passphrase-protected
//! (Argon2id + XChaCha20-Poly1305), and their parsing. Pure: reading and
//! writing the file (mode 0600, fsync) is the client's
//! (`tallinn_client::key_file`).

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng;
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use super::{Identity, IdentityError, ParticipantId};
use crate::defaults;

impl Identity {
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
