//! The roster this client trusts: a pinned version-1 roster file, or the
//! version-2 roster log (fetched from the relay, verified against the pinned
//! deployment fingerprint, kept in the archive).
//!
//! It answers the questions the client asks of a roster: may this device
//! post there (checked before anything is sealed), how to seal (version 1,
//! or version 2 against the current epoch), and, as a [`Policy`], whether a
//! received envelope verifies: a version-2 envelope against the state of its
//! own epoch, so that history keeps verifying across every change.

use ed25519_dalek::VerifyingKey;
use tallinn_common::envelope::{seal, seal_v2, EnvelopeError, Header, Policy, SealedEnvelope};
use tallinn_common::identity::Identity;
use tallinn_common::message::{Message, Tlp};
use tallinn_common::roster::{PostError, Roster, RosterLog};

/// The roster in force at the client.
#[derive(Debug, Clone)]
pub enum ClientRoster {
    /// A version-1 roster file.
    V1(Roster),
    /// Version 2: the pinned deployment and the verified log, once fetched.
    V2 {
        /// The deployment fingerprint pinned in the config.
        deployment: [u8; 32],
        /// The log verified so far (`None` until the first fetch).
        log: Option<RosterLog>,
    },
}

impl ClientRoster {
    /// The version-2 log, if this client runs one and has it.
    pub fn log(&self) -> Option<&RosterLog> {
        match self {
            ClientRoster::V1(_) => None,
            ClientRoster::V2 { log, .. } => log.as_ref(),
        }
    }

    /// Whether this client runs the roster log (version 2).
    pub fn is_v2(&self) -> bool {
        matches!(self, ClientRoster::V2 { .. })
    }

    /// The current epoch (version 2 with a log).
    pub fn epoch(&self) -> Option<u64> {
        self.log().map(RosterLog::epoch)
    }

    /// Checks that `me`'s `device` may post in `channel`.
    ///
    /// # Errors
    /// [`PostError`]; for a version-2 client without a log yet,
    /// [`PostError::UnknownChannel`] naming the reason.
    pub fn check_post(&self, me: &str, device: &str, channel: &str) -> Result<(), PostError> {
        match self {
            ClientRoster::V1(r) => r.check_post(me, channel).map(|_| ()),
            ClientRoster::V2 { log: Some(log), .. } => {
                let state = log.current();
                state.check_post(me, channel)?;
                if state.device(me, device).is_none() {
                    return Err(PostError::UnknownDevice {
                        participant: me.into(),
                        device: device.into(),
                    });
                }
                Ok(())
            }
            ClientRoster::V2 { log: None, .. } => Err(PostError::UnknownChannel(format!(
                "{channel} (the roster log has not been fetched yet: run `tallinn sync`)"
            ))),
        }
    }

    /// Seals `message` from `me` (device `device`) into `channel`: version 1
    /// against the roster file, version 2 against the current epoch.
    ///
    /// # Errors
    /// As [`seal`] / [`seal_v2`].
    pub fn seal(
        &self,
        me: &Identity,
        device: &str,
        channel: &str,
        message: &Message,
        now_ms: u64,
    ) -> Result<SealedEnvelope, EnvelopeError> {
        match self {
            ClientRoster::V1(r) => seal(me, r, channel, message, now_ms),
            ClientRoster::V2 { log: Some(log), .. } => {
                seal_v2(me, device, log.current(), channel, message, now_ms)
            }
            ClientRoster::V2 { log: None, .. } => {
                Err(EnvelopeError::UnknownEpoch { epoch: 0, known: 0 })
            }
        }
    }
}

impl ClientRoster {
    /// The TLP ceiling of the channel a message was sealed into, in the
    /// roster of its own epoch (version 2) or the roster file (version 1).
    pub fn max_tlp_for(&self, header: &Header) -> Option<Tlp> {
        match self {
            ClientRoster::V1(r) => r.max_tlp(&header.channel),
            ClientRoster::V2 { log: Some(log), .. } => {
                log.state_for(header).ok()?.max_tlp(&header.channel)
            }
            ClientRoster::V2 { log: None, .. } => None,
        }
    }

    /// The TLP ceiling of `channel` now (what a new message may carry).
    pub fn max_tlp(&self, channel: &str) -> Option<Tlp> {
        match self {
            ClientRoster::V1(r) => r.max_tlp(channel),
            ClientRoster::V2 { log: Some(log), .. } => log.current().max_tlp(channel),
            ClientRoster::V2 { log: None, .. } => None,
        }
    }
}

impl Policy for ClientRoster {
    fn sender_key(&self, header: &Header) -> Result<VerifyingKey, EnvelopeError> {
        match self {
            ClientRoster::V1(r) => r.sender_key(header),
            ClientRoster::V2 { log: Some(log), .. } => log.sender_key(header),
            ClientRoster::V2 { log: None, .. } => Err(EnvelopeError::UnknownEpoch {
                epoch: header.roster_epoch.unwrap_or(0),
                known: 0,
            }),
        }
    }

    fn expected_recipients<'a>(
        &'a self,
        header: &Header,
    ) -> Result<Vec<(&'a str, Option<&'a str>)>, EnvelopeError> {
        match self {
            ClientRoster::V1(r) => r.expected_recipients(header),
            ClientRoster::V2 { log: Some(log), .. } => log.expected_recipients(header),
            ClientRoster::V2 { log: None, .. } => Err(EnvelopeError::UnknownEpoch {
                epoch: header.roster_epoch.unwrap_or(0),
                known: 0,
            }),
        }
    }
}
