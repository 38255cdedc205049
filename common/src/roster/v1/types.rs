//! What a version-1 roster holds: roles, participants, channel ids,
//! channels, and why a participant may not post in a channel.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::RosterError;
use crate::identity::{Fingerprint, ParticipantId, PublicIdentity};

/// A participant's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A point of contact: may post in the channels it is a member of.
    Member,
    /// Read-only: receives the channels it observes, can never post.
    Observer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Member => "member",
            Role::Observer => "observer",
        })
    }
}

/// A validated roster participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Id and public keys.
    pub public: PublicIdentity,
}

impl Participant {
    /// The participant id.
    pub fn id(&self) -> &ParticipantId {
        &self.public.id
    }

    /// The participant fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint()
    }
}

/// A channel id: 1-64 characters of `a-z0-9_-`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ChannelId(String);

impl ChannelId {
    /// Validates a channel id.
    ///
    /// # Errors
    /// [`RosterError::BadChannelId`] if it breaks the rule.
    pub fn new(id: impl Into<String>) -> Result<Self, RosterError> {
        let id = id.into();
        let ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(id))
        } else {
            Err(RosterError::BadChannelId(id))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ChannelId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for ChannelId {
    type Err = RosterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A validated channel, with `"*"` expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Channel id.
    pub id: ChannelId,
    /// Description.
    pub description: String,
    /// Members (may post), sorted.
    pub members: BTreeSet<ParticipantId>,
    /// Observers (read only), sorted.
    pub observers: BTreeSet<ParticipantId>,
    /// Whether the file wrote `members = ["*"]`.
    pub all_members: bool,
    /// Posting policy (`post = "chair"` in the file).
    pub post: crate::roster::PostPolicy,
    /// TLP ceiling (`max_tlp` in the file; RED if absent).
    pub max_tlp: crate::message::Tlp,
}

/// Why a participant may not post in a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PostError {
    /// The channel is not in the roster.
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    /// The sender is not in the roster.
    #[error("unknown participant {0:?}")]
    UnknownParticipant(String),
    /// The sender is an observer (observers never post).
    #[error("{participant} is an observer and cannot post")]
    ReadOnly {
        /// The observer.
        participant: String,
    },
    /// The sender is not a member of the channel.
    #[error("{participant} is not a member of channel {channel}")]
    NotAMember {
        /// The sender.
        participant: String,
        /// The channel.
        channel: String,
    },
    /// The sending device is not (or no longer) one of the sender's devices.
    #[error("{participant} has no device {device:?} in this roster epoch")]
    UnknownDevice {
        /// The sender.
        participant: String,
        /// The device label.
        device: String,
    },
    /// The channel accepts posts from the chair only.
    #[error("channel {channel} accepts posts from the chair ({chair}) only")]
    ChairOnly {
        /// The channel.
        channel: String,
        /// The current chair.
        chair: String,
    },
    /// A direct conversation breaks the roster's addressing rule (no
    /// beneficiary, a participant the rule does not admit, the sender not in
    /// it, no direct conversations in this deployment).
    #[error("direct conversation {conversation}: {reason}")]
    Conversation {
        /// The conversation's name (`@A+B`).
        conversation: String,
        /// What breaks the rule.
        reason: String,
    },
}
