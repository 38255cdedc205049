//! The relay's signed receipt for an accepted envelope.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;

use super::{envelope_hash, signed_bytes, EvidenceError, RECEIPT_CONTEXT};
use crate::message::MsgId;

/// What the relay signs in a receipt (field order normative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// The relay's sequence number for the message.
    pub seq: u64,
    /// The envelope's msg_id.
    pub msg_id: MsgId,
    /// Relay clock when it accepted the envelope, ms since the Unix epoch.
    pub received_at_ms: u64,
    /// SHA-256 of the envelope bytes exactly as sent.
    pub envelope_hash: [u8; 32],
}

/// The relay's signed receipt for an accepted envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// What was signed.
    pub body: ReceiptBody,
    /// `Ed25519(relay receipt key, RECEIPT_CONTEXT || postcard(body))`.
    #[serde(with = "BigArray")]
    pub signature: [u8; 64],
}

impl ReceiptBody {
    /// The exact bytes the signature covers, without the context prefix.
    pub fn encode(&self) -> Vec<u8> {
        // invariant: integers and fixed arrays always encode.
        postcard::to_allocvec(self).expect("invariant: receipt body encodes")
    }
}

impl Receipt {
    /// Signs `body` with the relay's receipt key.
    pub fn sign(key: &SigningKey, body: ReceiptBody) -> Receipt {
        let signature = key
            .sign(&signed_bytes(RECEIPT_CONTEXT, &body.encode()))
            .to_bytes();
        Receipt { body, signature }
    }

    /// Checks the signature with the relay's receipt key.
    ///
    /// # Errors
    /// [`EvidenceError::BadSignature`].
    pub fn verify(&self, relay_key: &[u8; 32]) -> Result<(), EvidenceError> {
        let key = VerifyingKey::from_bytes(relay_key)
            .map_err(|_| EvidenceError::BadSignature("receipt"))?;
        key.verify_strict(
            &signed_bytes(RECEIPT_CONTEXT, &self.body.encode()),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| EvidenceError::BadSignature("receipt"))
    }

    /// Checks the signature and that the receipt names this message and
    /// these envelope bytes.
    ///
    /// # Errors
    /// [`EvidenceError::Mismatch`], [`EvidenceError::BadSignature`].
    pub fn verify_for(
        &self,
        relay_key: &[u8; 32],
        msg_id: &MsgId,
        envelope: &[u8],
    ) -> Result<(), EvidenceError> {
        if self.body.msg_id != *msg_id {
            return Err(EvidenceError::Mismatch("another msg_id"));
        }
        if self.body.envelope_hash != envelope_hash(envelope) {
            return Err(EvidenceError::Mismatch("other envelope bytes"));
        }
        self.verify(relay_key)
    }

    /// `postcard(Receipt)`: the body's fields, then the 64-byte signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        // invariant: integers and fixed arrays always encode.
        postcard::to_allocvec(self).expect("invariant: receipt encodes")
    }

    /// Decodes `postcard(Receipt)`, refusing trailing bytes.
    ///
    /// # Errors
    /// [`EvidenceError::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Receipt, EvidenceError> {
        match postcard::take_from_bytes::<Receipt>(bytes) {
            Ok((r, [])) => Ok(r),
            _ => Err(EvidenceError::Malformed("receipt")),
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
    fn a_receipt_verifies_only_for_its_key_message_and_bytes() {
        let k = key(7);
        let env = b"envelope bytes".to_vec();
        let body = ReceiptBody {
            seq: 42,
            msg_id: MsgId([3; 16]),
            received_at_ms: 1_700_000_000_000,
            envelope_hash: envelope_hash(&env),
        };
        let r = Receipt::sign(&k, body);
        let pk = k.verifying_key().to_bytes();
        assert_eq!(r.verify_for(&pk, &MsgId([3; 16]), &env), Ok(()));
        assert!(matches!(
            r.verify_for(&pk, &MsgId([4; 16]), &env),
            Err(EvidenceError::Mismatch(_))
        ));
        assert!(matches!(
            r.verify_for(&pk, &MsgId([3; 16]), b"other"),
            Err(EvidenceError::Mismatch(_))
        ));
        let other = key(8).verifying_key().to_bytes();
        assert!(matches!(
            r.verify(&other),
            Err(EvidenceError::BadSignature(_))
        ));
        let mut edited = r.clone();
        edited.body.seq = 43;
        assert!(edited.verify(&pk).is_err());
        let back = Receipt::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        let mut long = r.to_bytes();
        long.push(0);
        assert!(Receipt::from_bytes(&long).is_err());
    }
}

#[cfg(test)]
mod vectors {
    use super::*;

    /// The worked example of PROTOCOL.md §17.1, byte for byte (the same
    /// values come out of Python's `cryptography` package).
    #[test]
    fn receipt_known_answer() {
        let key = SigningKey::from_bytes(&[0x11; 32]);
        let body = ReceiptBody {
            seq: 300,
            msg_id: MsgId([0xab; 16]),
            received_at_ms: 1_800_000_000_000,
            envelope_hash: crate::evidence::envelope_hash(b"envelope"),
        };
        let r = Receipt::sign(&key, body);
        assert_eq!(
            hex::encode(key.verifying_key().as_bytes()),
            "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737"
        );
        assert_eq!(
            hex::encode(r.body.encode()),
            concat!(
                "ac02",
                "abababababababababababababababab",
                "80a0f1c2b134",
                "4c503ca67761e5c4aaecfe996244c25d8c0b40902d1085c85b4468bd567548c6"
            )
        );
        assert_eq!(
            hex::encode(r.signature),
            concat!(
                "7a7ea3f95929fab62d9e0cfbd97faa24026bfaa45c47f7f87ef23d996f66f673",
                "ab9aaae8c8a654cfa3c129c375fa07233fd824846df8c93926161e8b4606b704"
            )
        );
        // postcard(Receipt) = body fields, then the 64 signature bytes.
        let mut wire = r.body.encode();
        wire.extend_from_slice(&r.signature);
        assert_eq!(r.to_bytes(), wire);
    }
}
