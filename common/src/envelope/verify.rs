//! Verifying envelopes: the signature over the exact body bytes, then the
//! roster policy (who may post, and the exact recipient list).
//!
//! A [`Policy`] answers the two questions verification asks of a roster.
//! The version-1 [`Roster`] answers them for version-1 envelopes only. A
//! version-2 [`RosterState`] answers them for version-2 envelopes sealed
//! against its own epoch (anything else is [`EnvelopeError::EpochMismatch`]),
//! and for version-1 envelopes through the migration rule: the sender's key
//! is its `default` device's, the recipients are participants.

use ed25519_dalek::{Signature, VerifyingKey};

use super::{signed_message, EnvelopeError, Header, UntrustedEnvelope, VerifiedEnvelope};
use crate::defaults;
use crate::roster::{Roster, RosterLog, RosterState};

/// What verification asks of a roster.
pub trait Policy {
    /// The key that must have signed an envelope with this header.
    ///
    /// # Errors
    /// The sender (or its device) is unknown, or the header's version or
    /// epoch is not this roster's.
    fn sender_key(&self, header: &Header) -> Result<VerifyingKey, EnvelopeError>;

    /// The exact recipient list, `(participant, device)` in envelope order
    /// (`device` is `None` for version 1).
    ///
    /// # Errors
    /// The sender may not post in the channel.
    fn expected_recipients<'a>(
        &'a self,
        header: &Header,
    ) -> Result<Vec<(&'a str, Option<&'a str>)>, EnvelopeError>;
}

impl<P: Policy + ?Sized> Policy for std::sync::Arc<P> {
    fn sender_key(&self, header: &Header) -> Result<VerifyingKey, EnvelopeError> {
        (**self).sender_key(header)
    }

    fn expected_recipients<'a>(
        &'a self,
        header: &Header,
    ) -> Result<Vec<(&'a str, Option<&'a str>)>, EnvelopeError> {
        (**self).expected_recipients(header)
    }
}

/// A whole roster log verifies every envelope against the state of its own
/// epoch (version 1: the genesis, by the migration rule), so history keeps
/// verifying across every change. An epoch beyond the log's head is
/// [`EnvelopeError::UnknownEpoch`]: fetch the log and try again.
impl Policy for RosterLog {
    fn sender_key(&self, header: &Header) -> Result<VerifyingKey, EnvelopeError> {
        self.state_for(header)?.sender_key(header)
    }

    fn expected_recipients<'a>(
        &'a self,
        header: &Header,
    ) -> Result<Vec<(&'a str, Option<&'a str>)>, EnvelopeError> {
        self.state_for(header)?.expected_recipients(header)
    }
}

impl RosterLog {
    /// The state an envelope with this header is checked against.
    ///
    /// # Errors
    /// [`EnvelopeError::UnknownEpoch`] beyond the head.
    pub fn state_for(&self, header: &Header) -> Result<&RosterState, EnvelopeError> {
        let epoch = header.roster_epoch.unwrap_or(0);
        self.state_at(epoch)
            .map(|s| s.as_ref())
            .ok_or(EnvelopeError::UnknownEpoch {
                epoch,
                known: self.epoch(),
            })
    }
}

impl Policy for Roster {
    fn sender_key(&self, header: &Header) -> Result<VerifyingKey, EnvelopeError> {
        if header.version != 1 {
            return Err(EnvelopeError::UnsupportedVersion(header.version));
        }
        self.participant(&header.sender)
            .map(|p| p.public.sign_key)
            .ok_or_else(|| EnvelopeError::UnknownSender(header.sender.clone()))
    }

    fn expected_recipients<'a>(
        &'a self,
        header: &Header,
    ) -> Result<Vec<(&'a str, Option<&'a str>)>, EnvelopeError> {
        Ok(self
            .recipients(&header.sender, &header.channel)?
            .into_iter()
            .map(|p| (p.id().as_str(), None))
            .collect())
    }
}

impl RosterState {
    fn check_epoch(&self, header: &Header) -> Result<(), EnvelopeError> {
        match header.roster_epoch {
            Some(e) if e != self.epoch() => Err(EnvelopeError::EpochMismatch {
                envelope: e,
                state: self.epoch(),
            }),
            _ => Ok(()),
        }
    }
}

impl Policy for RosterState {
    fn sender_key(&self, header: &Header) -> Result<VerifyingKey, EnvelopeError> {
        self.check_epoch(header)?;
        let p = self
            .participant(&header.sender)
            .ok_or_else(|| EnvelopeError::UnknownSender(header.sender.clone()))?;
        let device = header
            .sender_device
            .as_deref()
            .unwrap_or(defaults::V1_DEVICE);
        p.device(device)
            .map(|d| d.sign_key)
            .ok_or_else(|| EnvelopeError::UnknownDevice {
                sender: header.sender.clone(),
                device: device.into(),
            })
    }

    fn expected_recipients<'a>(
        &'a self,
        header: &Header,
    ) -> Result<Vec<(&'a str, Option<&'a str>)>, EnvelopeError> {
        self.check_epoch(header)?;
        match &header.sender_device {
            Some(device) => Ok(self
                .recipient_devices(&header.sender, device, &header.channel)?
                .into_iter()
                .map(|(p, d)| (p.id.as_str(), Some(d.device.as_str())))
                .collect()),
            None => {
                // Version 1 has no direct conversations (decode refuses
                // their names; refused here too, whatever the caller).
                if crate::roster::is_direct(&header.channel) {
                    return Err(EnvelopeError::Malformed("channel id"));
                }
                let c = self.check_post(&header.sender, &header.channel)?;
                let ids: std::collections::BTreeSet<&str> = c
                    .members
                    .iter()
                    .chain(c.observers.iter())
                    .map(|id| id.as_str())
                    .filter(|id| *id != header.sender)
                    .collect();
                Ok(ids.into_iter().map(|id| (id, None)).collect())
            }
        }
    }
}

impl UntrustedEnvelope {
    /// Checks the signature with an explicit sender key, without roster policy.
    ///
    /// # Errors
    /// [`EnvelopeError::BadSignature`].
    pub fn verify_signature(&self, sender_key: &VerifyingKey) -> Result<(), EnvelopeError> {
        let sig = Signature::from_bytes(&self.envelope.signature);
        sender_key
            .verify_strict(
                &signed_message(self.header.version, &self.envelope.body),
                &sig,
            )
            .map_err(|_| EnvelopeError::BadSignature)
    }

    /// Everything that can be checked without a recipient key: sender (and
    /// device) in the roster, signature over the exact body bytes, channel
    /// exists, sender may post there, and the recipient list is exactly what
    /// the roster says, sorted, each once.
    ///
    /// # Errors
    /// [`EnvelopeError::UnknownSender`], [`EnvelopeError::UnknownDevice`],
    /// [`EnvelopeError::BadSignature`], [`EnvelopeError::UnknownChannel`],
    /// [`EnvelopeError::ReadOnly`], [`EnvelopeError::ChairOnly`],
    /// [`EnvelopeError::NotAMember`], [`EnvelopeError::RecipientsMismatch`],
    /// [`EnvelopeError::EpochMismatch`].
    pub fn verify<P: Policy + ?Sized>(self, policy: &P) -> Result<VerifiedEnvelope, EnvelopeError> {
        let key = policy.sender_key(&self.header)?;
        self.verify_signature(&key)?;
        self.check_policy(policy)
    }

    /// [`UntrustedEnvelope::verify`] of each envelope (strict Ed25519), for
    /// recipients: unlike [`UntrustedEnvelope::verify_many`] it never
    /// accepts a signature whose `R` has a small-order component, so what a
    /// client archives is exactly what any strict verifier accepts.
    pub fn verify_each_strict<P: Policy + ?Sized>(
        envelopes: Vec<UntrustedEnvelope>,
        policy: &P,
    ) -> Vec<Result<VerifiedEnvelope, EnvelopeError>> {
        envelopes.into_iter().map(|e| e.verify(policy)).collect()
    }

    /// [`UntrustedEnvelope::verify`] for many envelopes at once: one Ed25519
    /// batch verification for all signatures (about twice as fast as one by
    /// one), then the roster policy of each. If the batch fails (or a sender
    /// is unknown), every envelope is verified on its own, so each result is
    /// exactly what `verify` says, culprit included.
    ///
    /// Batch verification is not bit-for-bit `verify_strict`: it may accept a
    /// signature whose `R` carries a small torsion component, which only the
    /// holder of the sender's secret key can make. The relay uses this; each
    /// recipient still verifies strictly (and quarantines such a message).
    pub fn verify_many<P: Policy + ?Sized>(
        envelopes: Vec<UntrustedEnvelope>,
        policy: &P,
    ) -> Vec<Result<VerifiedEnvelope, EnvelopeError>> {
        if envelopes.len() < 2 {
            return envelopes.into_iter().map(|e| e.verify(policy)).collect();
        }
        let keys: Option<Vec<VerifyingKey>> = envelopes
            .iter()
            .map(|e| policy.sender_key(&e.header).ok().filter(|k| !k.is_weak()))
            .collect();
        let batch_ok = keys.is_some_and(|keys| {
            let items: Vec<(&UntrustedEnvelope, &VerifyingKey)> =
                envelopes.iter().zip(keys.iter()).collect();
            verify_signatures_batch(&items).is_ok()
        });
        envelopes
            .into_iter()
            .map(|e| {
                if batch_ok {
                    e.check_policy(policy)
                } else {
                    e.verify(policy)
                }
            })
            .collect()
    }

    /// The roster checks after the signature: channel, posting rights,
    /// recipient list.
    fn check_policy<P: Policy + ?Sized>(
        self,
        policy: &P,
    ) -> Result<VerifiedEnvelope, EnvelopeError> {
        let header = &self.header;
        let expected = policy.expected_recipients(header)?;
        let got: Vec<(&str, Option<&str>)> = self
            .wraps
            .iter()
            .map(|w| (w.participant.as_str(), w.device.as_deref()))
            .collect();
        let name = |(p, d): (&str, Option<&str>)| match d {
            Some(d) => format!("{p}/{d}"),
            None => p.to_string(),
        };
        let mismatch = |detail: String| EnvelopeError::RecipientsMismatch {
            channel: header.channel.clone(),
            detail,
        };
        for (i, exp) in expected.iter().enumerate() {
            match got.get(i) {
                Some(w) if w == exp => {}
                Some(w) if *w > *exp => return Err(mismatch(format!("missing {}", name(*exp)))),
                Some(w) => return Err(mismatch(format!("unexpected {:?}", name(*w)))),
                None => return Err(mismatch(format!("missing {}", name(*exp)))),
            }
        }
        if let Some(extra) = got.get(expected.len()) {
            return Err(mismatch(format!("unexpected {:?}", name(*extra))));
        }
        Ok(VerifiedEnvelope { inner: self })
    }
}

/// Verifies a batch of envelopes' signatures at once (Ed25519 batch
/// verification, about twice as fast as one by one). Returns `Ok` only if
/// every signature is valid; on `Err` the caller re-checks one by one to find
/// the culprit.
///
/// # Errors
/// [`EnvelopeError::BadSignature`] if any signature (or key) is invalid.
pub fn verify_signatures_batch(
    items: &[(&UntrustedEnvelope, &VerifyingKey)],
) -> Result<(), EnvelopeError> {
    let messages: Vec<Vec<u8>> = items
        .iter()
        .map(|(e, _)| signed_message(e.header.version, &e.envelope.body))
        .collect();
    let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
    let sigs: Vec<Signature> = items
        .iter()
        .map(|(e, _)| Signature::from_bytes(&e.envelope.signature))
        .collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(_, k)| **k).collect();
    ed25519_dalek::verify_batch(&refs, &sigs, &keys).map_err(|_| EnvelopeError::BadSignature)
}
