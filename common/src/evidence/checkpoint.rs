//! A device's signed checkpoint of its archive head.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;

use super::{signed_bytes, EvidenceError, CHECKPOINT_CONTEXT, MAX_CHECKPOINT_BODY};

/// What a device signs about its archive (field order normative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointBody {
    /// The participant whose archive this is.
    pub participant: String,
    /// The device whose archive this is.
    pub device: String,
    /// The roster epoch in force when it was signed: the auditor checks the
    /// signature with the device's `sign_key` of that state.
    pub roster_epoch: u64,
    /// Number of records in the archive (the next record's index).
    pub index: u64,
    /// Hash of record `index - 1` (32 zero bytes when `index` is 0).
    pub head_hash: [u8; 32],
    /// Device clock when signed, ms since the Unix epoch.
    pub time_ms: u64,
}

/// A device's signed archive checkpoint. `body` is kept verbatim, so the
/// signature is always checked over the exact bytes that were signed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// `postcard(CheckpointBody)`.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// `Ed25519(device sign_key, CHECKPOINT_CONTEXT || body)`.
    #[serde(with = "BigArray")]
    pub signature: [u8; 64],
}

impl std::fmt::Debug for SignedCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.decode() {
            Ok(b) => f
                .debug_struct("SignedCheckpoint")
                .field("participant", &b.participant)
                .field("device", &b.device)
                .field("index", &b.index)
                .field("head_hash", &hex::encode(b.head_hash))
                .finish_non_exhaustive(),
            Err(_) => f.write_str("SignedCheckpoint(malformed)"),
        }
    }
}

impl SignedCheckpoint {
    /// Signs `body` with the device's signing key.
    pub fn sign(key: &SigningKey, body: &CheckpointBody) -> SignedCheckpoint {
        Self::new(body, |m| key.sign(m).to_bytes())
    }

    /// Signs `body` with `sign`, which gets the exact bytes to sign
    /// (`CHECKPOINT_CONTEXT || postcard(body)`) and returns an Ed25519
    /// signature (an [`crate::identity::Identity`] signs so).
    pub fn new(body: &CheckpointBody, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> SignedCheckpoint {
        // invariant: strings and integers always encode.
        let bytes = postcard::to_allocvec(body).expect("invariant: checkpoint body encodes");
        let signature = sign(&signed_bytes(CHECKPOINT_CONTEXT, &bytes));
        SignedCheckpoint {
            body: bytes,
            signature,
        }
    }

    /// Decodes the body (not checking the signature).
    ///
    /// # Errors
    /// [`EvidenceError::Malformed`] for a body over [`MAX_CHECKPOINT_BODY`],
    /// one that does not decode, or one with trailing bytes.
    pub fn decode(&self) -> Result<CheckpointBody, EvidenceError> {
        if self.body.len() > MAX_CHECKPOINT_BODY {
            return Err(EvidenceError::Malformed("checkpoint (too long)"));
        }
        match postcard::take_from_bytes::<CheckpointBody>(&self.body) {
            Ok((b, [])) => Ok(b),
            _ => Err(EvidenceError::Malformed("checkpoint")),
        }
    }

    /// Decodes the body and checks the signature with the device's key.
    ///
    /// # Errors
    /// [`EvidenceError::Malformed`], [`EvidenceError::BadSignature`].
    pub fn verify(&self, sign_key: &[u8; 32]) -> Result<CheckpointBody, EvidenceError> {
        let body = self.decode()?;
        let key = VerifyingKey::from_bytes(sign_key)
            .map_err(|_| EvidenceError::BadSignature("checkpoint"))?;
        key.verify_strict(
            &signed_bytes(CHECKPOINT_CONTEXT, &self.body),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| EvidenceError::BadSignature("checkpoint"))?;
        Ok(body)
    }

    /// `postcard(SignedCheckpoint)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        // invariant: byte vectors and fixed arrays always encode.
        postcard::to_allocvec(self).expect("invariant: checkpoint encodes")
    }

    /// Decodes `postcard(SignedCheckpoint)`, refusing trailing bytes.
    ///
    /// # Errors
    /// [`EvidenceError::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedCheckpoint, EvidenceError> {
        match postcard::take_from_bytes::<SignedCheckpoint>(bytes) {
            Ok((c, [])) if c.body.len() <= MAX_CHECKPOINT_BODY => Ok(c),
            _ => Err(EvidenceError::Malformed("checkpoint")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn a_checkpoint_verifies_over_its_exact_bytes() {
        let k = key(9);
        let body = CheckpointBody {
            participant: "PL".into(),
            device: "front-office".into(),
            roster_epoch: 3,
            index: 10,
            head_hash: [5; 32],
            time_ms: 1_700_000_000_000,
        };
        let c = SignedCheckpoint::sign(&k, &body);
        assert_eq!(c.verify(&k.verifying_key().to_bytes()), Ok(body));
        assert!(c.verify(&key(1).verifying_key().to_bytes()).is_err());
        let mut edited = c.clone();
        let last = edited.body.len() - 1;
        edited.body[last] ^= 1;
        assert!(edited.verify(&k.verifying_key().to_bytes()).is_err());
        assert_eq!(SignedCheckpoint::from_bytes(&c.to_bytes()).unwrap(), c);
        let huge = SignedCheckpoint {
            body: vec![0; MAX_CHECKPOINT_BODY + 1],
            signature: [0; 64],
        };
        assert!(SignedCheckpoint::from_bytes(&huge.to_bytes()).is_err());
        assert!(huge.decode().is_err());
    }

    /// The worked example of PROTOCOL.md §17.2, byte for byte (the same
    /// values come out of Python's `cryptography` package).
    #[test]
    fn checkpoint_known_answer() {
        let k = key(0x22);
        let body = CheckpointBody {
            participant: "PL".into(),
            device: "front-office".into(),
            roster_epoch: 3,
            index: 10,
            head_hash: [5; 32],
            time_ms: 1_800_000_000_000,
        };
        let c = SignedCheckpoint::sign(&k, &body);
        assert_eq!(
            hex::encode(&c.body),
            concat!(
                "02504c0c66726f6e742d6f6666696365030a",
                "0505050505050505050505050505050505050505050505050505050505050505",
                "80a0f1c2b134"
            )
        );
        assert_eq!(
            hex::encode(c.signature),
            concat!(
                "9de2c9a4b650d6cf92f19dbf550a97d8c131fc105b897366fc514c916cbc7cb0",
                "d924c86ca8d6df66a0a900b2ce24522a55c683ab4c93500bb9350558b40cfe0d"
            )
        );
        let mut wire = vec![c.body.len() as u8];
        wire.extend_from_slice(&c.body);
        wire.extend_from_slice(&c.signature);
        assert_eq!(c.to_bytes(), wire);
    }
}
