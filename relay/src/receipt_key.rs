//! The relay's receipt key: an Ed25519 key pair whose public half is
//! `relay_key` in the roster state. In a version-2 deployment the relay
//! signs a receipt for every accepted envelope with it (`Frame::Receipt`,
//! `PROTOCOL.md` §17.1), so a sender can prove to anyone what the relay
//! accepted and when.
//!
//! The file (`receipt_key` in relay.toml, default `<data_dir>/receipt.key`)
//! holds one line, `receipt_secret = "<base64 of the 32-byte seed>"`, mode
//! 0600, created with `create_new` and synced; it is never overwritten.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use tallinn_common::evidence::{Receipt, ReceiptBody};
use zeroize::Zeroizing;

/// Why the receipt key could not be read or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptKeyError {
    /// The file could not be read, created or synced.
    #[error("receipt key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a receipt key file.
    #[error(
        "{0}: not a receipt key file (expected one line `receipt_secret = \"<base64 32 bytes>\"`)"
    )]
    BadKeyFile(PathBuf),
}

/// The receipt signing key. The seed is zeroized on drop (ed25519-dalek's
/// `zeroize` feature) and never printed: `Debug` shows the public key.
pub struct ReceiptKey(SigningKey);

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptKey({})", hex::encode(self.public().as_bytes()))
    }
}

impl ReceiptKey {
    /// The public half (`relay_key`).
    pub fn public(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    /// Signs a receipt.
    pub fn sign(&self, body: ReceiptBody) -> Receipt {
        Receipt::sign(&self.0, body)
    }

    /// Reads the key file (which must be private to the relay's user).
    ///
    /// # Errors
    /// [`ReceiptKeyError`].
    pub fn load(path: &Path) -> Result<ReceiptKey, ReceiptKeyError> {
        let io = |source| ReceiptKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        tallinn_host::durable::check_private_file(&file, path).map_err(io)?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let b64 = text
            .trim()
            .strip_prefix("receipt_secret = \"")
            .and_then(|r| r.strip_suffix('"'))
            .ok_or_else(|| ReceiptKeyError::BadKeyFile(path.to_path_buf()))?;
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            B64.decode(b64)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| ReceiptKeyError::BadKeyFile(path.to_path_buf()))?,
        );
        Ok(ReceiptKey(SigningKey::from_bytes(&seed)))
    }

    /// Creates a new key file (mode 0600, never over an existing file,
    /// synced with its directory) and returns the key.
    ///
    /// # Errors
    /// [`ReceiptKeyError::Io`], also when the file exists.
    pub fn create(path: &Path) -> Result<ReceiptKey, ReceiptKeyError> {
        let io = |source| ReceiptKeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::fill(seed.as_mut_slice());
        let line = Zeroizing::new(format!(
            "receipt_secret = \"{}\"\n",
            B64.encode(seed.as_slice())
        ));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io)?;
        f.write_all(line.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(ReceiptKey(SigningKey::from_bytes(&seed)))
    }

    /// Loads the key file, creating it first if it does not exist.
    ///
    /// # Errors
    /// [`ReceiptKeyError`].
    pub fn load_or_create(path: &Path) -> Result<ReceiptKey, ReceiptKeyError> {
        if path.exists() {
            Self::load(path)
        } else {
            Self::create(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipt.key");
        let k = ReceiptKey::create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(ReceiptKey::create(&path).is_err(), "never overwritten");
        let again = ReceiptKey::load_or_create(&path).unwrap();
        assert_eq!(again.public(), k.public());
        assert!(!format!("{again:?}").contains(&B64.encode(again.0.to_bytes())));
        std::fs::write(dir.path().join("bad.key"), "nonsense\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("bad.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(matches!(
            ReceiptKey::load(&dir.path().join("bad.key")),
            Err(ReceiptKeyError::BadKeyFile(_))
        ));
    }
}
