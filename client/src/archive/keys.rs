//! The key layout of the archive tree: prefixes, the HMAC tokens of index
//! keys, and the decoding of numeric keys.

use super::*;

pub(super) const HEAD_KEY: &[u8] = b"H";

pub(super) const QNEXT_KEY: &[u8] = b"q";

pub(super) const QTOTALS_KEY: &[u8] = b"z";

/// The u64 after a one-byte prefix (`"R" index`, `"Q" n`), if the key has
/// exactly that shape.
pub(super) fn key_u64(key: &[u8]) -> Option<u64> {
    key.get(1..)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

impl Archive {
    pub(super) fn tok(&self, label: &str, value: &[u8]) -> [u8; 16] {
        let full = hmac(&self.index_key, &[label.as_bytes(), &[0], value]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    pub(super) fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut k = vec![prefix];
        for p in parts {
            k.extend_from_slice(p);
        }
        k
    }
}
