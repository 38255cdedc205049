//! Why a version-1 roster file was refused: each error names the
//! participant or channel at fault.

use crate::defaults;

/// Why a roster was refused. Each message names the culprit.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RosterError {
    /// The text is not TOML of the roster's shape (unknown field, wrong type...).
    #[error("roster is not valid: {0}")]
    Syntax(String),
    /// A participant id breaks the id rule (1-32 chars of `A-Za-z0-9_-`).
    #[error("participant id {0:?} is invalid: must be 1-32 characters of A-Za-z0-9_-")]
    BadParticipantId(String),
    /// Two participants share an id.
    #[error("participant {0} is listed more than once")]
    DuplicateParticipant(String),
    /// A participant's name is empty.
    #[error("participant {0} has an empty name")]
    EmptyName(String),
    /// A public key is not base64, has the wrong length, or is not a valid key.
    #[error("participant {participant}: {field} is invalid: {reason}")]
    BadKey {
        /// Participant id.
        participant: String,
        /// `sign_key` or `enc_key`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Two participants share a public key (a copy-paste error or an attack).
    #[error("participants {0} and {1} share the same {2}")]
    SharedKey(String, String, &'static str),
    /// A channel id breaks the channel id rule (1-64 chars of `a-z0-9_-`).
    #[error("channel id {0:?} is invalid: must be 1-64 characters of a-z0-9_-")]
    BadChannelId(String),
    /// Two channels share an id.
    #[error("channel {0} is listed more than once")]
    DuplicateChannel(String),
    /// A channel names an id not in the roster.
    #[error("channel {channel} names unknown participant {participant:?}")]
    UnknownParticipant {
        /// Channel id.
        channel: String,
        /// The unknown id.
        participant: String,
    },
    /// A channel lists an observer among its members.
    #[error("channel {channel} lists observer {participant} as a member")]
    ObserverAsMember {
        /// Channel id.
        channel: String,
        /// The observer.
        participant: String,
    },
    /// A channel lists a member among its observers.
    #[error("channel {channel} lists member {participant} as an observer")]
    MemberAsObserver {
        /// Channel id.
        channel: String,
        /// The member.
        participant: String,
    },
    /// A channel names the same participant twice.
    #[error("channel {channel} lists {participant} more than once")]
    DuplicateInChannel {
        /// Channel id.
        channel: String,
        /// The repeated id.
        participant: String,
    },
    /// A channel has no members (observers alone cannot post).
    #[error("channel {0} has no members")]
    EmptyChannel(String),
    /// A channel mixes `"*"` with explicit member ids.
    #[error("channel {0} mixes \"*\" with member ids; use one or the other")]
    WildcardMixed(String),
    /// A channel puts `"*"` among its observers (only members expand).
    #[error("channel {0} uses \"*\" in observers; list observers by id")]
    WildcardObservers(String),
    /// The beneficiary is not a member participant of the roster.
    #[error("beneficiary {0:?} is not a member participant of the roster")]
    BadBeneficiary(String),
    /// A channel does not include the configured beneficiary as a member.
    #[error("channel {channel} does not include the beneficiary {beneficiary} as a member")]
    MissingBeneficiary {
        /// Channel id.
        channel: String,
        /// The beneficiary id.
        beneficiary: String,
    },
    /// A channel's recipient set is larger than the protocol allows.
    #[error("channel {0} has more than {max} participants", max = defaults::MAX_RECIPIENTS)]
    TooManyParticipants(String),
    /// A device label breaks the id rule (1-32 chars of `A-Za-z0-9_-`).
    #[error("participant {participant}: device label {device:?} is invalid: must be 1-32 characters of A-Za-z0-9_-")]
    BadDeviceId {
        /// Participant id.
        participant: String,
        /// The label.
        device: String,
    },
    /// A participant lists a device label twice.
    #[error("participant {participant} lists device {device} more than once")]
    DuplicateDevice {
        /// Participant id.
        participant: String,
        /// The repeated label.
        device: String,
    },
    /// A list that encodes a set is not sorted and unique (a roster-log body
    /// has exactly one encoding).
    #[error("{0} is not sorted by id, or repeats an entry")]
    NotSorted(String),
    /// A device names a key suite this version does not know.
    #[error("participant {participant}, device {device}: unknown key suite {suite} (1 = X25519/Ed25519)")]
    BadSuite {
        /// Participant id.
        participant: String,
        /// Device label.
        device: String,
        /// The suite byte.
        suite: u8,
    },
    /// A participant has more devices than the protocol allows.
    #[error("participant {0} has more than {max} devices", max = defaults::MAX_DEVICES_PER_PARTICIPANT)]
    TooManyDevices(String),
    /// A role byte other than 0 (member) or 1 (observer).
    #[error("participant {participant}: unknown role code {role}")]
    BadRole {
        /// Participant id.
        participant: String,
        /// The role byte.
        role: u8,
    },
    /// The chair is not a member participant.
    #[error("chair {0:?} is not a member participant of the roster")]
    BadChair(String),
    /// The quorum is 0 or more than the number of members.
    #[error("quorum {quorum} is impossible with {members} members (1..={members})")]
    BadQuorum {
        /// The quorum.
        quorum: u32,
        /// How many members the state has.
        members: usize,
    },
    /// The relay's receipt key is not a usable Ed25519 public key.
    #[error("relay_key is invalid: {0}")]
    BadRelayKey(String),
    /// A channel's posting policy byte is unknown.
    #[error("channel {channel}: unknown posting policy {post} (0 members, 1 chair)")]
    BadPostPolicy {
        /// Channel id.
        channel: String,
        /// The policy byte.
        post: u8,
    },
    /// A channel's TLP ceiling is not a TLP code.
    #[error("channel {channel}: max_tlp {max_tlp} is not a TLP code (0 CLEAR .. 4 RED)")]
    BadMaxTlp {
        /// Channel id.
        channel: String,
        /// The byte.
        max_tlp: u8,
    },
}
