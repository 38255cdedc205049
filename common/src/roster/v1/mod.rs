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

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::defaults;
use crate::identity::{ParticipantId, PublicIdentity};
use crate::message::Tlp;

mod error;
mod types;

pub use error::RosterError;
pub use types::{Channel, ChannelId, Participant, PostError, Role};

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
pub(crate) mod tests;
