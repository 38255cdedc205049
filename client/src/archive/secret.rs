//! The archive secret: the material every key of the archive and the outbox
//! is derived from (`HKDF-SHA256(ikm = secret, info = label)`), random for a
//! new archive and stored **wrapped under the device's secrets**, so that
//! rotating or re-keying the device re-wraps it instead of locking the
//! device out of its own archive.
//!
//! Tree `keys` of the client database:
//!
//! | key | value |
//! |---|---|
//! | `b"W"` | `nonce:[u8;24] ‖ XChaCha20-Poly1305(k_wrap, nonce, secret, aad = "tallinn/2 archive secret")` |
//! | `b"N"` | the same under the *next* key file during a rotation |
//!
//! `k_wrap` = HKDF-SHA256(sign seed ‖ enc secret of the key file, info
//! `"tallinn/2 archive wrap"`). A new archive gets 32 random bytes; an
//! archive written before this scheme keeps its keys: its secret is the
//! key file's `sign seed ‖ enc secret` (64 bytes), from which version 1
//! derived exactly the same keys, wrapped at first open.
//!
//! A rotation (a new encryption secret in the key file) first stores the
//! secret wrapped under the next key file as `N` (synced), then switches
//! the key files, then promotes `N` to `W`. Opening tries `W`, then `N`, so
//! a crash at any point leaves an archive that opens with whichever key
//! file is in place.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng as _;
use tallinn_common::identity::Identity;
use zeroize::Zeroizing;

use super::{ArchiveDb, ArchiveError};

const TREE: &str = "keys";
const CURRENT: &[u8] = b"W";
const NEXT: &[u8] = b"N";
const WRAP_INFO: &[u8] = b"tallinn/2 archive wrap";
const WRAP_AAD: &[u8] = b"tallinn/2 archive secret";

/// The archive secret (never logged, zeroized on drop).
pub struct ArchiveSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for ArchiveSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArchiveSecret(..)")
    }
}

fn wrap(identity: &Identity, secret: &[u8]) -> Vec<u8> {
    let key = identity.derive_storage_key(WRAP_INFO);
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut nonce);
    let ct = XChaCha20Poly1305::new(&(*key).into())
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: secret,
                aad: WRAP_AAD,
            },
        )
        // invariant: a short plaintext always encrypts.
        .expect("invariant: the archive secret encrypts");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

fn unwrap(identity: &Identity, wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let key = identity.derive_storage_key(WRAP_INFO);
    let (nonce, ct) = wrapped.split_at_checked(24)?;
    XChaCha20Poly1305::new(&(*key).into())
        .decrypt(
            &XNonce::try_from(nonce).ok()?,
            Payload {
                msg: ct,
                aad: WRAP_AAD,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

impl ArchiveSecret {
    /// Opens the secret of `db` with the key file `identity`, creating it
    /// for a new database or wrapping the legacy one.
    ///
    /// # Errors
    /// [`ArchiveError::Unreadable`] if it does not unwrap with this key
    /// file (the archive belongs to other keys); [`ArchiveError::Db`].
    pub fn open(db: &ArchiveDb, identity: &Identity) -> Result<Self, ArchiveError> {
        let tree = db.open_tree(TREE)?;
        if let Some(w) = tree.get(CURRENT)? {
            if let Some(s) = unwrap(identity, &w) {
                return Ok(Self(s));
            }
            if let Some(n) = tree.get(NEXT)? {
                if let Some(s) = unwrap(identity, &n) {
                    // A rotation switched the key files but did not
                    // promote the next wrap: finish it.
                    tree.insert(CURRENT, n)?;
                    tree.remove(NEXT)?;
                    db.flush()?;
                    return Ok(Self(s));
                }
            }
            return Err(ArchiveError::Unreadable(
                "the archive key does not unwrap with this key file: the archive belongs to another key file"
                    .into(),
            ));
        }
        let legacy = !db.open_tree("archive")?.is_empty() || !db.open_tree("outbox")?.is_empty();
        let secret: Zeroizing<Vec<u8>> = if legacy {
            identity.legacy_storage_secret()
        } else {
            let mut s = Zeroizing::new(vec![0u8; 32]);
            rand::rng().fill_bytes(s.as_mut_slice());
            s
        };
        tree.insert(CURRENT, wrap(identity, &secret))?;
        db.flush()?;
        Ok(Self(secret))
    }

    /// A key for `label`: HKDF-SHA256(ikm = secret, info = label).
    pub fn derive(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, &self.0);
        let mut out = Zeroizing::new([0u8; 32]);
        // invariant: 32 bytes is far below HKDF-SHA256's output limit.
        hk.expand(label, out.as_mut_slice())
            .expect("invariant: 32-byte HKDF output");
        out
    }

    /// Rotation, step 1: stores the secret wrapped under the next key file,
    /// durably, before the key files switch.
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn prepare_rewrap(&self, db: &ArchiveDb, next: &Identity) -> Result<(), ArchiveError> {
        db.open_tree(TREE)?.insert(NEXT, wrap(next, &self.0))?;
        db.flush()
    }

    /// Rotation, last step: the next wrap becomes the current one (the old
    /// key file no longer opens the archive).
    ///
    /// # Errors
    /// [`ArchiveError::Db`].
    pub fn commit_rewrap(db: &ArchiveDb) -> Result<(), ArchiveError> {
        let tree = db.open_tree(TREE)?;
        if let Some(n) = tree.get(NEXT)? {
            tree.insert(CURRENT, n)?;
            tree.remove(NEXT)?;
            db.flush()?;
        }
        Ok(())
    }
}
