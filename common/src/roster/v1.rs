//! The roster: the deployment's participants and channels, pinned by every
//! client and the relay.
//!
//! # File format (TOML)
//! ```toml
//! beneficiary = "UA"            # optional: every channel must include it as a member
//!
//! [[participant]]
//! id = "UA"                     # 1-32 chars of A-Za-z0-9_-
//! name = "Ukraine"
//! role = "member"               # "member" | "observer"
//! sign_key = "<base64 Ed25519 public key, 32 bytes>"
//! enc_key = "<base64 X25519 public key, 32 bytes>"
//!
//! [[channel]]
//! id = "plenary"                # 1-64 chars of a-z0-9_-
//! description = "All members, both observers"
//! members = ["*"]               # member ids, or ["*"] for every member
//! observers = ["NATO", "EU"]    # observer ids
//! ```
//! [`Roster::parse`] validates everything and refuses the file with a
//! [`RosterError`] naming the offending participant or channel.
//!
//! # Fingerprint
//! `SHA-256("tallinn/1 roster" || postcard(CanonicalRoster))`, where the
//! canonical form lists participants sorted by id and channels sorted by id with
//! `"*"` expanded and member and observer lists sorted (see `PROTOCOL.md`). Two
//! rosters with the same meaning have the same fingerprint, whatever the
//! order or comments of the file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::defaults;
use crate::identity::{Fingerprint, ParticipantId, PublicIdentity};
use crate::message::Tlp;

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

/// A parsed, validated roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    beneficiary: Option<ParticipantId>,
    participants: BTreeMap<ParticipantId, Participant>,
    channels: BTreeMap<ChannelId, Channel>,
}

/// The TOML shape of a roster file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RosterFile {
    /// Optional beneficiary id every channel must include as a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneficiary: Option<String>,
    /// Participants.
    #[serde(default, rename = "participant")]
    pub participants: Vec<ParticipantEntry>,
    /// Channels.
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelEntry>,
}

/// One `[[participant]]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantEntry {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Base64 Ed25519 public key.
    pub sign_key: String,
    /// Base64 X25519 public key.
    pub enc_key: String,
}

/// One `[[channel]]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEntry {
    /// Id.
    pub id: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Member ids, or `["*"]`.
    #[serde(default)]
    pub members: Vec<String>,
    /// Observer ids.
    #[serde(default)]
    pub observers: Vec<String>,
    /// Who may post: `"members"` (default) or `"chair"` (the chair of the
    /// roster log; a version-1 deployment has none, so nobody).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post: Option<String>,
    /// The highest TLP label allowed (`"CLEAR"` .. `"RED"`, default RED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tlp: Option<String>,
}

/// Canonical roster encoding hashed into the fingerprint (see `PROTOCOL.md`).
#[derive(Serialize)]
struct CanonicalRoster<'a> {
    beneficiary: Option<&'a str>,
    participants: Vec<CanonicalParticipant<'a>>,
    channels: Vec<CanonicalChannel<'a>>,
}

#[derive(Serialize)]
struct CanonicalParticipant<'a> {
    id: &'a str,
    name: &'a str,
    /// 0 = member, 1 = observer.
    role: u8,
    sign_key: [u8; 32],
    enc_key: [u8; 32],
}

#[derive(Serialize)]
struct CanonicalChannel<'a> {
    id: &'a str,
    description: &'a str,
    members: Vec<&'a str>,
    observers: Vec<&'a str>,
}

fn decode_key(participant: &str, field: &'static str, b64: &str) -> Result<[u8; 32], RosterError> {
    let bad = |reason: String| RosterError::BadKey {
        participant: participant.into(),
        field,
        reason,
    };
    let bytes = B64
        .decode(b64.trim())
        .map_err(|_| bad("not valid base64 (standard alphabet, with padding)".into()))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| bad(format!("must decode to 32 bytes, got {}", bytes.len())))
}

impl Roster {
    /// Parses and validates roster TOML.
    ///
    /// # Errors
    /// A [`RosterError`] naming the first offending participant or channel.
    pub fn parse(text: &str) -> Result<Self, RosterError> {
        let file: RosterFile =
            toml::from_str(text).map_err(|e| RosterError::Syntax(e.to_string()))?;
        Self::from_file(file)
    }

    /// Validates an already-deserialized roster file.
    ///
    /// # Errors
    /// As [`Roster::parse`].
    pub fn from_file(file: RosterFile) -> Result<Self, RosterError> {
        let mut participants = BTreeMap::new();
        let mut sign_keys: BTreeMap<[u8; 32], String> = BTreeMap::new();
        let mut enc_keys: BTreeMap<[u8; 32], String> = BTreeMap::new();
        for p in file.participants {
            let id = ParticipantId::new(p.id.clone())
                .map_err(|_| RosterError::BadParticipantId(p.id.clone()))?;
            if participants.contains_key(&id) {
                return Err(RosterError::DuplicateParticipant(p.id));
            }
            if p.name.trim().is_empty() {
                return Err(RosterError::EmptyName(p.id));
            }
            let sign_bytes = decode_key(&p.id, "sign_key", &p.sign_key)?;
            let sign_key =
                VerifyingKey::from_bytes(&sign_bytes).map_err(|_| RosterError::BadKey {
                    participant: p.id.clone(),
                    field: "sign_key",
                    reason: "not a valid Ed25519 public key".into(),
                })?;
            if sign_key.is_weak() {
                return Err(RosterError::BadKey {
                    participant: p.id,
                    field: "sign_key",
                    reason: "a weak (small-order) Ed25519 key".into(),
                });
            }
            let enc_key = decode_key(&p.id, "enc_key", &p.enc_key)?;
            if let Some(other) = sign_keys.insert(sign_bytes, p.id.clone()) {
                return Err(RosterError::SharedKey(other, p.id, "sign_key"));
            }
            if let Some(other) = enc_keys.insert(enc_key, p.id.clone()) {
                return Err(RosterError::SharedKey(other, p.id, "enc_key"));
            }
            participants.insert(
                id.clone(),
                Participant {
                    name: p.name,
                    role: p.role,
                    public: PublicIdentity {
                        id,
                        sign_key,
                        enc_key,
                    },
                },
            );
        }

        let beneficiary = match file.beneficiary {
            None => None,
            Some(b) => {
                let id = ParticipantId::new(b.clone())
                    .map_err(|_| RosterError::BadBeneficiary(b.clone()))?;
                match participants.get(&id) {
                    Some(p) if p.role == Role::Member => Some(id),
                    _ => return Err(RosterError::BadBeneficiary(b)),
                }
            }
        };

        let all_members: BTreeSet<ParticipantId> = participants
            .values()
            .filter(|p| p.role == Role::Member)
            .map(|p| p.id().clone())
            .collect();

        let mut channels = BTreeMap::new();
        for c in file.channels {
            let id = ChannelId::new(c.id.clone())?;
            if channels.contains_key(&id) {
                return Err(RosterError::DuplicateChannel(c.id));
            }
            let name = c.id.clone();
            let wildcard = c.members.iter().any(|m| m == "*");
            if wildcard && c.members.len() > 1 {
                return Err(RosterError::WildcardMixed(name));
            }
            if c.observers.iter().any(|m| m == "*") {
                return Err(RosterError::WildcardObservers(name));
            }
            let lookup = |pid: &str| -> Result<&Participant, RosterError> {
                ParticipantId::new(pid)
                    .ok()
                    .and_then(|id| participants.get(&id))
                    .ok_or_else(|| RosterError::UnknownParticipant {
                        channel: name.clone(),
                        participant: pid.into(),
                    })
            };
            let members: BTreeSet<ParticipantId> = if wildcard {
                all_members.clone()
            } else {
                let mut set = BTreeSet::new();
                for m in &c.members {
                    let p = lookup(m)?;
                    if p.role != Role::Member {
                        return Err(RosterError::ObserverAsMember {
                            channel: name.clone(),
                            participant: m.clone(),
                        });
                    }
                    if !set.insert(p.id().clone()) {
                        return Err(RosterError::DuplicateInChannel {
                            channel: name.clone(),
                            participant: m.clone(),
                        });
                    }
                }
                set
            };
            let mut observers = BTreeSet::new();
            for o in &c.observers {
                let p = lookup(o)?;
                if p.role != Role::Observer {
                    return Err(RosterError::MemberAsObserver {
                        channel: name.clone(),
                        participant: o.clone(),
                    });
                }
                if !observers.insert(p.id().clone()) {
                    return Err(RosterError::DuplicateInChannel {
                        channel: name.clone(),
                        participant: o.clone(),
                    });
                }
            }
            if members.is_empty() {
                return Err(RosterError::EmptyChannel(name));
            }
            let post = match c.post.as_deref().map(str::trim) {
                None | Some("members") => crate::roster::PostPolicy::Members,
                Some("chair") => crate::roster::PostPolicy::Chair,
                Some(other) => {
                    return Err(RosterError::Syntax(format!(
                        "channel {name}: post = {other:?}: expected \"members\" or \"chair\""
                    )))
                }
            };
            let max_tlp = match c.max_tlp.as_deref() {
                None => Tlp::Red,
                Some(label) => label
                    .parse::<Tlp>()
                    .map_err(|e| RosterError::Syntax(format!("channel {name}: max_tlp: {e}")))?,
            };
            if members.len() + observers.len() > defaults::MAX_RECIPIENTS {
                return Err(RosterError::TooManyParticipants(name));
            }
            if let Some(b) = &beneficiary {
                if !members.contains(b) {
                    return Err(RosterError::MissingBeneficiary {
                        channel: name,
                        beneficiary: b.to_string(),
                    });
                }
            }
            channels.insert(
                id.clone(),
                Channel {
                    id,
                    description: c.description,
                    members,
                    observers,
                    all_members: wildcard,
                    post,
                    max_tlp,
                },
            );
        }
        Ok(Self {
            beneficiary,
            participants,
            channels,
        })
    }

    /// The beneficiary, if configured.
    pub fn beneficiary(&self) -> Option<&ParticipantId> {
        self.beneficiary.as_ref()
    }

    /// A participant by id.
    pub fn participant(&self, id: &str) -> Option<&Participant> {
        ParticipantId::new(id)
            .ok()
            .and_then(|id| self.participants.get(&id))
    }

    /// All participants, sorted by id.
    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.participants.values()
    }

    /// A participant's role.
    pub fn role(&self, id: &str) -> Option<Role> {
        self.participant(id).map(|p| p.role)
    }

    /// A channel by id.
    pub fn channel(&self, id: &str) -> Option<&Channel> {
        ChannelId::new(id)
            .ok()
            .and_then(|id| self.channels.get(&id))
    }

    /// All channels, sorted by id.
    pub fn channels(&self) -> impl Iterator<Item = &Channel> {
        self.channels.values()
    }

    /// The channels a participant belongs to (as member or observer).
    pub fn channels_of<'a>(&'a self, id: &'a ParticipantId) -> impl Iterator<Item = &'a Channel> {
        self.channels
            .values()
            .filter(move |c| c.members.contains(id) || c.observers.contains(id))
    }

    /// Checks that `sender` may post in `channel`.
    ///
    /// # Errors
    /// [`PostError`] saying why not.
    pub fn check_post(&self, sender: &str, channel: &str) -> Result<&Channel, PostError> {
        let p = self
            .participant(sender)
            .ok_or_else(|| PostError::UnknownParticipant(sender.into()))?;
        let c = self
            .channel(channel)
            .ok_or_else(|| PostError::UnknownChannel(channel.into()))?;
        if c.id.as_str() == crate::roster::DIRECT_RULE {
            return Err(PostError::Conversation {
                conversation: channel.into(),
                reason: "`direct` holds the rule for direct conversations, which need the roster log (version 2)".into(),
            });
        }
        if p.role == Role::Observer {
            return Err(PostError::ReadOnly {
                participant: sender.into(),
            });
        }
        if !c.members.contains(p.id()) {
            return Err(PostError::NotAMember {
                participant: sender.into(),
                channel: channel.into(),
            });
        }
        if c.post == crate::roster::PostPolicy::Chair {
            // Version 1 has no chair: a chair-only channel is closed until the
            // deployment moves to the roster log.
            return Err(PostError::ChairOnly {
                channel: channel.into(),
                chair: "nobody: a version-1 roster has no chair".into(),
            });
        }
        Ok(c)
    }

    /// The TLP ceiling of `channel`, if it exists.
    pub fn max_tlp(&self, channel: &str) -> Option<Tlp> {
        self.channel(channel).map(|c| c.max_tlp)
    }

    /// Whether `sender` may post in `channel`.
    pub fn may_post(&self, sender: &str, channel: &str) -> bool {
        self.check_post(sender, channel).is_ok()
    }

    /// The recipients of a message from `sender` into `channel`: every member
    /// and observer of the channel except the sender, sorted by id (byte order),
    /// each once.
    ///
    /// # Errors
    /// [`PostError`] if the sender may not post there.
    pub fn recipients(&self, sender: &str, channel: &str) -> Result<Vec<&Participant>, PostError> {
        let c = self.check_post(sender, channel)?;
        let ids: BTreeSet<&ParticipantId> = c
            .members
            .iter()
            .chain(c.observers.iter())
            .filter(|id| id.as_str() != sender)
            .collect();
        Ok(ids
            .into_iter()
            .filter_map(|id| self.participants.get(id))
            .collect())
    }

    /// The roster fingerprint: SHA-256 of the canonical encoding.
    pub fn fingerprint(&self) -> [u8; 32] {
        let canonical = CanonicalRoster {
            beneficiary: self.beneficiary.as_ref().map(|b| b.as_str()),
            participants: self
                .participants
                .values()
                .map(|p| CanonicalParticipant {
                    id: p.id().as_str(),
                    name: &p.name,
                    role: match p.role {
                        Role::Member => 0,
                        Role::Observer => 1,
                    },
                    sign_key: p.public.sign_key.to_bytes(),
                    enc_key: p.public.enc_key,
                })
                .collect(),
            channels: self
                .channels
                .values()
                .map(|c| CanonicalChannel {
                    id: c.id.as_str(),
                    description: &c.description,
                    members: c.members.iter().map(|m| m.as_str()).collect(),
                    observers: c.observers.iter().map(|m| m.as_str()).collect(),
                })
                .collect(),
        };
        // invariant: plain structs of strings, integers and arrays always encode.
        let bytes = postcard::to_allocvec(&canonical).expect("invariant: canonical roster encodes");
        // Channel policies (PROTOCOL.md §6.5): appended only when a channel
        // departs from the defaults, so older rosters keep their fingerprint.
        let policies: Vec<(&str, u8, u8)> = self
            .channels
            .values()
            .filter(|c| c.post != crate::roster::PostPolicy::Members || c.max_tlp != Tlp::Red)
            .map(|c| {
                (
                    c.id.as_str(),
                    u8::from(c.post == crate::roster::PostPolicy::Chair),
                    crate::roster::state::tlp_code(c.max_tlp),
                )
            })
            .collect();
        let mut h = Sha256::new()
            .chain_update(defaults::ROSTER_FINGERPRINT_CONTEXT)
            .chain_update(bytes);
        if !policies.is_empty() {
            // invariant: a vector of strings and bytes always encodes.
            h.update(postcard::to_allocvec(&policies).expect("invariant: policies encode"));
        }
        h.finalize().into()
    }

    /// The roster fingerprint as 64 lower-case hex digits.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint())
    }

    /// Back to the file form (for tools that edit a roster).
    pub fn to_file(&self) -> RosterFile {
        RosterFile {
            beneficiary: self.beneficiary.as_ref().map(|b| b.to_string()),
            participants: self
                .participants
                .values()
                .map(|p| ParticipantEntry {
                    id: p.id().to_string(),
                    name: p.name.clone(),
                    role: p.role,
                    sign_key: B64.encode(p.public.sign_key.as_bytes()),
                    enc_key: B64.encode(p.public.enc_key),
                })
                .collect(),
            channels: self
                .channels
                .values()
                .map(|c| ChannelEntry {
                    id: c.id.to_string(),
                    description: c.description.clone(),
                    members: if c.all_members {
                        vec!["*".into()]
                    } else {
                        c.members.iter().map(|m| m.to_string()).collect()
                    },
                    observers: c.observers.iter().map(|m| m.to_string()).collect(),
                    post: (c.post == crate::roster::PostPolicy::Chair).then(|| "chair".into()),
                    max_tlp: (c.max_tlp != Tlp::Red).then(|| c.max_tlp.label().into()),
                })
                .collect(),
        }
    }
}

impl Roster {
    /// Migration to version 2: the state record of a genesis that keeps this
    /// roster's meaning. Each participant's version-1 key pair becomes both
    /// its identity key and its single device [`defaults::V1_DEVICE`]
    /// (`default`), so archives written under version 1 keep verifying;
    /// channels keep their members (with `"*"` expanded), their posting
    /// policy and their TLP ceiling (`post`, `max_tlp`; default members, RED). The caller picks the chair, the
    /// quorum and the relay's receipt key; [`crate::roster::check_entry`]
    /// validates the result.
    pub fn to_state_record(
        &self,
        chair: &str,
        quorum: u32,
        relay_key: [u8; 32],
    ) -> crate::roster::StateRecord {
        use crate::roster::{ChannelRecord, DeviceRecord, ParticipantRecord, StateRecord};
        StateRecord {
            beneficiary: self.beneficiary.as_ref().map(|b| b.to_string()),
            chair: chair.into(),
            quorum,
            relay_key,
            participants: self
                .participants
                .values()
                .map(|p| ParticipantRecord {
                    id: p.id().to_string(),
                    name: p.name.clone(),
                    role: match p.role {
                        Role::Member => 0,
                        Role::Observer => 1,
                    },
                    identity_key: p.public.sign_key.to_bytes(),
                    devices: vec![DeviceRecord {
                        device: defaults::V1_DEVICE.into(),
                        suite: defaults::SUITE_X25519,
                        sign_key: p.public.sign_key.to_bytes(),
                        enc_key: p.public.enc_key,
                    }],
                })
                .collect(),
            channels: self
                .channels
                .values()
                .map(|c| ChannelRecord {
                    id: c.id.to_string(),
                    description: c.description.clone(),
                    members: c.members.iter().map(|m| m.to_string()).collect(),
                    observers: c.observers.iter().map(|m| m.to_string()).collect(),
                    post: match c.post {
                        crate::roster::PostPolicy::Members => 0,
                        crate::roster::PostPolicy::Chair => 1,
                    },
                    max_tlp: crate::roster::state::tlp_code(c.max_tlp),
                })
                .collect(),
        }
    }
}

impl RosterFile {
    /// Serializes to TOML.
    pub fn to_toml(&self) -> String {
        // invariant: the struct has only strings, enums and vectors, which TOML
        // always represents.
        toml::to_string_pretty(self).expect("invariant: roster file serializes to TOML")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::Identity;

    /// Builds roster TOML for `(id, role)` pairs with fresh keys, plus extra text.
    pub(crate) fn roster_toml(people: &[(&str, &str)], extra: &str) -> String {
        let mut s = String::new();
        for (id, role) in people {
            let ident = Identity::generate(ParticipantId::new(*id).unwrap());
            s.push_str(&ident.roster_entry(&format!("{id} POC"), role));
            s.push('\n');
        }
        s.push_str(extra);
        s
    }

    const PEOPLE: &[(&str, &str)] = &[
        ("UA", "member"),
        ("EE", "member"),
        ("PL", "member"),
        ("NATO", "observer"),
    ];

    fn err(extra: &str) -> RosterError {
        Roster::parse(&roster_toml(PEOPLE, extra)).unwrap_err()
    }

    fn channel(members: &str, observers: &str) -> String {
        format!(
            "[[channel]]\nid = \"plenary\"\ndescription = \"d\"\nmembers = {members}\nobservers = {observers}\n"
        )
    }

    #[test]
    fn valid_roster_and_queries() {
        let text = roster_toml(
            PEOPLE,
            &format!(
                "{}\n[[channel]]\nid = \"back-office\"\nmembers = [\"EE\", \"UA\"]\n",
                channel("[\"*\"]", "[\"NATO\"]")
            ),
        );
        let r = Roster::parse(&format!("beneficiary = \"UA\"\n{text}")).unwrap();
        assert_eq!(r.beneficiary().unwrap().as_str(), "UA");
        assert_eq!(r.role("NATO"), Some(Role::Observer));
        assert_eq!(r.role("XX"), None);
        let plenary = r.channel("plenary").unwrap();
        assert_eq!(plenary.members.len(), 3);
        assert!(r.may_post("PL", "plenary"));
        assert!(!r.may_post("PL", "back-office"));
        assert_eq!(
            r.check_post("NATO", "plenary"),
            Err(PostError::ReadOnly {
                participant: "NATO".into()
            })
        );
        assert!(matches!(
            r.check_post("UA", "nope"),
            Err(PostError::UnknownChannel(_))
        ));
        let rec: Vec<&str> = r
            .recipients("UA", "plenary")
            .unwrap()
            .iter()
            .map(|p| p.id().as_str())
            .collect();
        assert_eq!(rec, vec!["EE", "NATO", "PL"]);
        assert_eq!(r.channels_of(&ParticipantId::new("PL").unwrap()).count(), 1);
        // Fingerprint is stable across a round trip through the file form.
        let again = Roster::parse(&r.to_file().to_toml()).unwrap();
        assert_eq!(again.fingerprint(), r.fingerprint());
        assert_eq!(again, r);
    }

    #[test]
    fn fingerprint_ignores_order_but_not_content() {
        let text = roster_toml(PEOPLE, &channel("[\"UA\", \"EE\"]", "[]"));
        let a = Roster::parse(&text).unwrap();
        let b = Roster::parse(&text.replace("[\"UA\", \"EE\"]", "[\"EE\", \"UA\"]")).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = Roster::parse(&text.replace("description = \"d\"", "description = \"e\"")).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn duplicate_participant() {
        let text = roster_toml(&[("UA", "member"), ("UA", "member")], "");
        assert_eq!(
            Roster::parse(&text).unwrap_err(),
            RosterError::DuplicateParticipant("UA".into())
        );
    }

    #[test]
    fn bad_participant_id() {
        let text = roster_toml(&[("UA", "member")], "").replace("id = \"UA\"", "id = \"U A\"");
        let e = Roster::parse(&text).unwrap_err();
        assert_eq!(e, RosterError::BadParticipantId("U A".into()));
        assert!(e.to_string().contains("U A"));
        let long = "X".repeat(33);
        let text = roster_toml(&[("UA", "member")], "")
            .replace("id = \"UA\"", &format!("id = \"{long}\""));
        assert_eq!(
            Roster::parse(&text).unwrap_err(),
            RosterError::BadParticipantId(long)
        );
    }

    #[test]
    fn bad_base64_and_wrong_key_length() {
        let base = roster_toml(&[("UA", "member")], "");
        let line = base.lines().find(|l| l.starts_with("sign_key")).unwrap();
        let e = Roster::parse(&base.replace(line, "sign_key = \"not base64!\"")).unwrap_err();
        assert!(
            matches!(&e, RosterError::BadKey { participant, field: "sign_key", .. } if participant == "UA"),
            "{e}"
        );
        let line = base.lines().find(|l| l.starts_with("enc_key")).unwrap();
        let e = Roster::parse(&base.replace(line, "enc_key = \"AAAA\"")).unwrap_err();
        assert!(
            matches!(&e, RosterError::BadKey { participant, field: "enc_key", .. } if participant == "UA"),
            "{e}"
        );
        assert!(
            e.to_string().contains("UA") && e.to_string().contains("32 bytes"),
            "{e}"
        );
    }

    #[test]
    fn shared_keys_refused() {
        let base = roster_toml(&[("UA", "member")], "");
        let copy = base.replace("id = \"UA\"", "id = \"EE\"");
        let e = Roster::parse(&format!("{base}\n{copy}")).unwrap_err();
        assert_eq!(
            e,
            RosterError::SharedKey("UA".into(), "EE".into(), "sign_key")
        );
    }

    #[test]
    fn bad_channel_id() {
        let e = err("[[channel]]\nid = \"Plenary\"\nmembers = [\"*\"]\n");
        assert_eq!(e, RosterError::BadChannelId("Plenary".into()));
    }

    #[test]
    fn duplicate_channel() {
        let c = channel("[\"*\"]", "[]");
        assert_eq!(
            err(&format!("{c}{c}")),
            RosterError::DuplicateChannel("plenary".into())
        );
    }

    #[test]
    fn channel_names_unknown_id() {
        assert_eq!(
            err(&channel("[\"UA\", \"XX\"]", "[]")),
            RosterError::UnknownParticipant {
                channel: "plenary".into(),
                participant: "XX".into()
            }
        );
        assert_eq!(
            err(&channel("[\"UA\"]", "[\"EU\"]")),
            RosterError::UnknownParticipant {
                channel: "plenary".into(),
                participant: "EU".into()
            }
        );
    }

    #[test]
    fn observer_as_member() {
        assert_eq!(
            err(&channel("[\"UA\", \"NATO\"]", "[]")),
            RosterError::ObserverAsMember {
                channel: "plenary".into(),
                participant: "NATO".into()
            }
        );
    }

    #[test]
    fn member_as_observer() {
        assert_eq!(
            err(&channel("[\"UA\"]", "[\"PL\"]")),
            RosterError::MemberAsObserver {
                channel: "plenary".into(),
                participant: "PL".into()
            }
        );
    }

    #[test]
    fn duplicate_in_channel() {
        assert_eq!(
            err(&channel("[\"UA\", \"UA\"]", "[]")),
            RosterError::DuplicateInChannel {
                channel: "plenary".into(),
                participant: "UA".into()
            }
        );
    }

    #[test]
    fn empty_channel() {
        assert_eq!(
            err(&channel("[]", "[\"NATO\"]")),
            RosterError::EmptyChannel("plenary".into())
        );
    }

    #[test]
    fn wildcard_mixed_with_names() {
        assert_eq!(
            err(&channel("[\"*\", \"UA\"]", "[]")),
            RosterError::WildcardMixed("plenary".into())
        );
        assert_eq!(
            err(&channel("[\"UA\"]", "[\"*\"]")),
            RosterError::WildcardObservers("plenary".into())
        );
    }

    #[test]
    fn channel_without_beneficiary() {
        let text = roster_toml(PEOPLE, &channel("[\"EE\", \"PL\"]", "[]"));
        let e = Roster::parse(&format!("beneficiary = \"UA\"\n{text}")).unwrap_err();
        assert_eq!(
            e,
            RosterError::MissingBeneficiary {
                channel: "plenary".into(),
                beneficiary: "UA".into()
            }
        );
        assert!(e.to_string().contains("plenary"));
    }

    #[test]
    fn beneficiary_must_be_a_member() {
        let text = roster_toml(PEOPLE, "");
        for b in ["XX", "NATO"] {
            let e = Roster::parse(&format!("beneficiary = \"{b}\"\n{text}")).unwrap_err();
            assert_eq!(e, RosterError::BadBeneficiary(b.into()));
        }
    }

    #[test]
    fn unknown_fields_and_bad_roles_are_syntax_errors() {
        let e = Roster::parse("colour = \"red\"").unwrap_err();
        assert!(matches!(e, RosterError::Syntax(_)));
        let text = roster_toml(&[("UA", "chair")], "");
        assert!(matches!(
            Roster::parse(&text).unwrap_err(),
            RosterError::Syntax(_)
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,400}") {
            let _ = Roster::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_bytes(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = Roster::parse(&String::from_utf8_lossy(&b));
        }
    }

    #[test]
    fn channel_policies_parse_and_change_the_fingerprint_only_when_set() {
        let base = roster_toml(PEOPLE, "");
        let with = |extra: &str| {
            Roster::parse(&format!(
                "{base}[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\nobservers = [\"NATO\"]\n{extra}\n"
            ))
        };
        let plain = with("").unwrap();
        let same = with("post = \"members\"\nmax_tlp = \"RED\"").unwrap();
        assert_eq!(plain.fingerprint(), same.fingerprint());
        let capped = with("max_tlp = \"TLP:AMBER+STRICT\"").unwrap();
        assert_ne!(plain.fingerprint(), capped.fingerprint());
        assert_eq!(capped.max_tlp("plenary"), Some(Tlp::AmberStrict));
        let chair = with("post = \"chair\"").unwrap();
        // Version 1 has no chair: the channel is closed to posts.
        assert!(matches!(
            chair.check_post("UA", "plenary"),
            Err(PostError::ChairOnly { .. })
        ));
        let rec = chair.to_state_record("UA", 1, [0; 32]);
        assert_eq!(rec.channels[0].post, 1);
        assert_eq!(
            capped.to_state_record("UA", 1, [0; 32]).channels[0].max_tlp,
            3
        );
        // The file form keeps the policy.
        let again = Roster::from_file(capped.to_file()).unwrap();
        assert_eq!(again.fingerprint(), capped.fingerprint());
        for bad in ["post = \"everyone\"", "max_tlp = \"PURPLE\""] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }
}
