//! The archive's cryptography: the AEAD of stored values, the index
//! token and head MACs, and the authenticated head.

use super::*;

/// XChaCha20-Poly1305 sealing of stored values with a random 24-byte nonce.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&(*key).into()),
        }
    }

    pub(crate) fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        // invariant: XChaCha20-Poly1305 only fails for inputs beyond 2^38 bytes.
        let ct = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad })
            .expect("invariant: record far below the AEAD size limit");
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub(crate) fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (nonce, ct) = sealed.split_first_chunk::<24>()?;
        self.cipher
            .decrypt(&XNonce::from(*nonce), Payload { msg: ct, aad })
            .ok()
            .map(Zeroizing::new)
    }
}

pub(super) fn aad(label: &[u8], n: u64) -> Vec<u8> {
    let mut a = label.to_vec();
    a.extend_from_slice(&n.to_be_bytes());
    a
}

pub(super) const REC_AAD: &[u8] = b"tallinn/1 archive record";

pub(super) const QUAR_AAD: &[u8] = b"tallinn/1 archive quarantine";

pub(super) const HEAD_MAC_LABEL: &[u8] = b"tallinn/1 archive head";

pub(super) const HEAD_LEN: usize = 8 + 32 + 32;

/// HMAC-SHA256 under `key` of `parts` concatenated.
pub(super) fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // invariant: HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("invariant: HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The tag of a head value.
pub(super) fn head_tag(key: &[u8; 32], next_index: u64, hash: &[u8; 32]) -> [u8; 32] {
    hmac(key, &[HEAD_MAC_LABEL, &next_index.to_be_bytes(), hash])
}

pub(super) struct Head {
    pub(super) next_index: u64,
    pub(super) hash: [u8; 32],
}

/// Authenticates and decodes a stored archive head value under the head
/// MAC key (for the fuzz target): `Err` names what is wrong with it.
///
/// # Errors
/// A description of the defect.
pub fn check_head_value(key: &[u8; 32], value: &[u8]) -> Result<(u64, [u8; 32]), String> {
    decode_head(key, value).map(|h| (h.next_index, h.hash))
}

/// Decodes and authenticates a stored head.
pub(super) fn decode_head(key: &[u8; 32], v: &[u8]) -> Result<Head, String> {
    if v.len() != HEAD_LEN {
        return Err(format!(
            "has {} bytes instead of {HEAD_LEN} (not written by this version, or edited)",
            v.len()
        ));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&v[..8]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&v[8..40]);
    let next_index = u64::from_be_bytes(n);
    let tag = head_tag(key, next_index, &hash);
    // Constant time is not needed against someone who holds the files, but
    // costs nothing.
    let ok = tag
        .iter()
        .zip(&v[40..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0;
    if !ok {
        return Err("is not authenticated (its tag does not verify: forged or edited)".into());
    }
    Ok(Head { next_index, hash })
}
