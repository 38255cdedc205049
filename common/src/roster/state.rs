//! The version-2 roster state: its wire records (normative encoding), the
//! validation every state must pass, and the queries relay and clients ask.
//!
//! A [`StateRecord`] is what a `Genesis` or `Amend` entry carries, encoded
//! with postcard exactly as declared below (`PROTOCOL.md` §14.1). Every list
//! that means a set is sorted by its id and unique, so a state has exactly one
//! encoding. [`RosterState::validate`] turns a record into a checked state or
//! names the first problem; the rules are those of version 1 (the beneficiary
//! in every channel as a member, observers never members, ...) plus the
//! device, chair and quorum rules of version 2.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::direct::{is_direct, DirectSet, DIRECT_RULE};
use super::v1::{ChannelId, PostError, Role, RosterError};
use crate::defaults;
use crate::identity::{DeviceId, Fingerprint, ParticipantId};
use crate::message::Tlp;

/// One device of a participant, as encoded in the roster log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Device label (1-32 chars of `A-Za-z0-9_-`), e.g. `front-office`.
    pub device: String,
    /// Key suite; 1 = Ed25519 + X25519 ([`defaults::SUITE_X25519`]).
    pub suite: u8,
    /// Ed25519 public key: signs envelopes and session authentication.
    pub sign_key: [u8; 32],
    /// X25519 public key: receives HPKE-wrapped content keys.
    pub enc_key: [u8; 32],
}

/// One participant, as encoded in the roster log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    /// Participant id (1-32 chars of `A-Za-z0-9_-`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// 0 member, 1 observer.
    pub role: u8,
    /// Ed25519 identity key: signs governance only (approvals, own devices).
    pub identity_key: [u8; 32],
    /// Devices, sorted by label, unique.
    pub devices: Vec<DeviceRecord>,
}

/// One channel, as encoded in the roster log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// Channel id (1-64 chars of `a-z0-9_-`).
    pub id: String,
    /// Description.
    pub description: String,
    /// Member ids (may post), sorted, unique; no wildcard.
    pub members: Vec<String>,
    /// Observer ids (read only), sorted, unique.
    pub observers: Vec<String>,
    /// Posting policy: 0 every member, 1 the chair only.
    pub post: u8,
    /// Highest TLP label allowed in the channel (0 CLEAR .. 4 RED).
    pub max_tlp: u8,
}

/// A whole roster state, as carried by `Genesis` and `Amend` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The beneficiary: a member in every channel, whose approval every
    /// amendment needs.
    pub beneficiary: Option<String>,
    /// The chair (a member id).
    pub chair: String,
    /// Member approvals an amendment needs.
    pub quorum: u32,
    /// The relay's receipt key (Ed25519 public key).
    pub relay_key: [u8; 32],
    /// Participants, sorted by id, unique.
    pub participants: Vec<ParticipantRecord>,
    /// Channels, sorted by id, unique.
    pub channels: Vec<ChannelRecord>,
}

/// Who may post in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostPolicy {
    /// Every member of the channel (code 0).
    Members,
    /// The current chair only (code 1), e.g. announcements.
    Chair,
}

/// A validated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterDevice {
    /// Device label.
    pub device: DeviceId,
    /// Key suite.
    pub suite: u8,
    /// Signs envelopes and session authentication.
    pub sign_key: VerifyingKey,
    /// Receives wraps.
    pub enc_key: [u8; 32],
}

impl RosterDevice {
    /// The device fingerprint: first 20 bytes of SHA-256(sign_key || enc_key),
    /// as for version-1 participants.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.sign_key.as_bytes(), &self.enc_key)
    }
}

/// A validated participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterParticipant {
    /// Participant id.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Identity key (governance signatures).
    pub identity_key: VerifyingKey,
    /// Devices by label.
    pub devices: BTreeMap<DeviceId, RosterDevice>,
}

impl RosterParticipant {
    /// A device by label.
    pub fn device(&self, label: &str) -> Option<&RosterDevice> {
        DeviceId::new(label).ok().and_then(|d| self.devices.get(&d))
    }
}

/// A validated channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterChannel {
    /// Channel id.
    pub id: ChannelId,
    /// Description.
    pub description: String,
    /// Members (may post under the policy).
    pub members: BTreeSet<ParticipantId>,
    /// Observers (read only).
    pub observers: BTreeSet<ParticipantId>,
    /// Posting policy.
    pub post: PostPolicy,
    /// TLP ceiling.
    pub max_tlp: Tlp,
}

/// A validated roster state at one epoch of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterState {
    epoch: u64,
    entry_hash: [u8; 32],
    record: StateRecord,
    beneficiary: Option<ParticipantId>,
    chair: ParticipantId,
    quorum: u32,
    relay_key: VerifyingKey,
    participants: BTreeMap<ParticipantId, RosterParticipant>,
    channels: BTreeMap<ChannelId, RosterChannel>,
}

fn ed25519_key(bytes: &[u8; 32]) -> Result<VerifyingKey, &'static str> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| "not a valid Ed25519 public key")?;
    if key.is_weak() {
        return Err("a weak (small-order) Ed25519 key");
    }
    Ok(key)
}

fn strictly_sorted<'a>(ids: impl IntoIterator<Item = &'a str>) -> bool {
    let mut prev: Option<&str> = None;
    for id in ids {
        if prev.is_some_and(|p| p.as_bytes() >= id.as_bytes()) {
            return false;
        }
        prev = Some(id);
    }
    true
}

fn tlp_from_code(code: u8) -> Option<Tlp> {
    Tlp::ALL.get(usize::from(code)).copied()
}

/// The code of a TLP label in a [`ChannelRecord`] (its wire index).
pub fn tlp_code(tlp: Tlp) -> u8 {
    // invariant: ALL has five entries, so the position fits in u8.
    Tlp::ALL
        .iter()
        .position(|t| *t == tlp)
        .and_then(|i| u8::try_from(i).ok())
        .expect("invariant: every Tlp is in Tlp::ALL")
}

fn validate_devices(
    pid: &str,
    records: &[DeviceRecord],
) -> Result<BTreeMap<DeviceId, RosterDevice>, RosterError> {
    if records.len() > defaults::MAX_DEVICES_PER_PARTICIPANT {
        return Err(RosterError::TooManyDevices(pid.into()));
    }
    if !strictly_sorted(records.iter().map(|d| d.device.as_str())) {
        return Err(RosterError::NotSorted(format!("the devices of {pid}")));
    }
    let mut devices = BTreeMap::new();
    for d in records {
        let label = DeviceId::new(d.device.clone()).map_err(|_| RosterError::BadDeviceId {
            participant: pid.into(),
            device: d.device.clone(),
        })?;
        if d.suite != defaults::SUITE_X25519 {
            return Err(RosterError::BadSuite {
                participant: pid.into(),
                device: d.device.clone(),
                suite: d.suite,
            });
        }
        let sign_key = ed25519_key(&d.sign_key).map_err(|reason| RosterError::BadKey {
            participant: pid.into(),
            field: "device sign_key",
            reason: format!("device {}: {reason}", d.device),
        })?;
        devices.insert(
            label.clone(),
            RosterDevice {
                device: label,
                suite: d.suite,
                sign_key,
                enc_key: d.enc_key,
            },
        );
    }
    Ok(devices)
}

impl RosterState {
    /// Validates a state record. `epoch` and `entry_hash` name the log entry
    /// that produced it.
    ///
    /// # Errors
    /// A [`RosterError`] naming the first offending participant or channel.
    pub fn validate(
        record: StateRecord,
        epoch: u64,
        entry_hash: [u8; 32],
    ) -> Result<Self, RosterError> {
        if !strictly_sorted(record.participants.iter().map(|p| p.id.as_str())) {
            return Err(RosterError::NotSorted("participants".into()));
        }
        if !strictly_sorted(record.channels.iter().map(|c| c.id.as_str())) {
            return Err(RosterError::NotSorted("channels".into()));
        }
        let mut participants = BTreeMap::new();
        // Key uniqueness: identity keys among identity keys, device signing
        // keys among all keys of other participants, encryption keys among
        // all encryption keys. A participant's identity key may also be the
        // signing key of one of its own devices (version-1 migration).
        let mut identity_keys: BTreeMap<[u8; 32], String> = BTreeMap::new();
        let mut sign_keys: BTreeMap<[u8; 32], String> = BTreeMap::new();
        let mut enc_keys: BTreeMap<[u8; 32], String> = BTreeMap::new();
        for p in &record.participants {
            let id = ParticipantId::new(p.id.clone())
                .map_err(|_| RosterError::BadParticipantId(p.id.clone()))?;
            if p.name.trim().is_empty() {
                return Err(RosterError::EmptyName(p.id.clone()));
            }
            let role = match p.role {
                0 => Role::Member,
                1 => Role::Observer,
                other => {
                    return Err(RosterError::BadRole {
                        participant: p.id.clone(),
                        role: other,
                    })
                }
            };
            let identity_key =
                ed25519_key(&p.identity_key).map_err(|reason| RosterError::BadKey {
                    participant: p.id.clone(),
                    field: "identity_key",
                    reason: reason.into(),
                })?;
            if let Some(other) = identity_keys.insert(p.identity_key, p.id.clone()) {
                return Err(RosterError::SharedKey(other, p.id.clone(), "identity_key"));
            }
            let devices = validate_devices(&p.id, &p.devices)?;
            for d in &p.devices {
                if let Some(other) = sign_keys.insert(d.sign_key, p.id.clone()) {
                    return Err(RosterError::SharedKey(
                        other,
                        p.id.clone(),
                        "device sign_key",
                    ));
                }
                if let Some(other) = enc_keys.insert(d.enc_key, p.id.clone()) {
                    return Err(RosterError::SharedKey(
                        other,
                        p.id.clone(),
                        "device enc_key",
                    ));
                }
            }
            participants.insert(
                id.clone(),
                RosterParticipant {
                    id,
                    name: p.name.clone(),
                    role,
                    identity_key,
                    devices,
                },
            );
        }
        for (key, owner) in &sign_keys {
            if let Some(other) = identity_keys.get(key) {
                if other != owner {
                    return Err(RosterError::SharedKey(
                        other.clone(),
                        owner.clone(),
                        "identity_key and device sign_key",
                    ));
                }
            }
        }

        let member = |id: &str| -> Option<ParticipantId> {
            ParticipantId::new(id).ok().filter(|pid| {
                participants
                    .get(pid)
                    .is_some_and(|p| p.role == Role::Member)
            })
        };
        let beneficiary = match &record.beneficiary {
            None => None,
            Some(b) => Some(member(b).ok_or_else(|| RosterError::BadBeneficiary(b.clone()))?),
        };
        let chair =
            member(&record.chair).ok_or_else(|| RosterError::BadChair(record.chair.clone()))?;
        let members = participants
            .values()
            .filter(|p| p.role == Role::Member)
            .count();
        if record.quorum == 0 || usize::try_from(record.quorum).map_or(true, |q| q > members) {
            return Err(RosterError::BadQuorum {
                quorum: record.quorum,
                members,
            });
        }
        let relay_key = ed25519_key(&record.relay_key)
            .map_err(|reason| RosterError::BadRelayKey(reason.into()))?;

        let mut channels = BTreeMap::new();
        for c in &record.channels {
            let id = ChannelId::new(c.id.clone())?;
            let name = c.id.clone();
            if !strictly_sorted(c.members.iter().map(String::as_str)) {
                return Err(RosterError::NotSorted(format!(
                    "the members of channel {name}"
                )));
            }
            if !strictly_sorted(c.observers.iter().map(String::as_str)) {
                return Err(RosterError::NotSorted(format!(
                    "the observers of channel {name}"
                )));
            }
            let lookup = |pid: &str| -> Result<&RosterParticipant, RosterError> {
                ParticipantId::new(pid)
                    .ok()
                    .and_then(|id| participants.get(&id))
                    .ok_or_else(|| RosterError::UnknownParticipant {
                        channel: name.clone(),
                        participant: pid.into(),
                    })
            };
            let mut members = BTreeSet::new();
            for m in &c.members {
                let p = lookup(m)?;
                if p.role != Role::Member {
                    return Err(RosterError::ObserverAsMember {
                        channel: name.clone(),
                        participant: m.clone(),
                    });
                }
                members.insert(p.id.clone());
            }
            let mut observers = BTreeSet::new();
            for o in &c.observers {
                let p = lookup(o)?;
                if p.role != Role::Observer {
                    return Err(RosterError::MemberAsObserver {
                        channel: name.clone(),
                        participant: o.clone(),
                    });
                }
                observers.insert(p.id.clone());
            }
            if members.is_empty() {
                return Err(RosterError::EmptyChannel(name));
            }
            if let Some(b) = &beneficiary {
                if !members.contains(b) {
                    return Err(RosterError::MissingBeneficiary {
                        channel: name,
                        beneficiary: b.to_string(),
                    });
                }
            }
            let devices: usize = members
                .iter()
                .chain(observers.iter())
                .filter_map(|id| participants.get(id))
                .map(|p| p.devices.len())
                .sum();
            if members.len() + observers.len() > defaults::MAX_RECIPIENTS
                || devices > defaults::MAX_RECIPIENTS
            {
                return Err(RosterError::TooManyParticipants(name));
            }
            let post = match c.post {
                0 => PostPolicy::Members,
                1 => PostPolicy::Chair,
                other => {
                    return Err(RosterError::BadPostPolicy {
                        channel: name,
                        post: other,
                    })
                }
            };
            let max_tlp = tlp_from_code(c.max_tlp).ok_or_else(|| RosterError::BadMaxTlp {
                channel: name.clone(),
                max_tlp: c.max_tlp,
            })?;
            channels.insert(
                id.clone(),
                RosterChannel {
                    id,
                    description: c.description.clone(),
                    members,
                    observers,
                    post,
                    max_tlp,
                },
            );
        }
        Ok(Self {
            epoch,
            entry_hash,
            quorum: record.quorum,
            record,
            beneficiary,
            chair,
            relay_key,
            participants,
            channels,
        })
    }

    /// The epoch: the index of the log entry that produced this state.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The hash of the log entry that produced this state.
    pub fn entry_hash(&self) -> &[u8; 32] {
        &self.entry_hash
    }

    /// The state's record (what an `Amend` starts from).
    pub fn record(&self) -> &StateRecord {
        &self.record
    }

    /// The beneficiary, if the deployment has one.
    pub fn beneficiary(&self) -> Option<&ParticipantId> {
        self.beneficiary.as_ref()
    }

    /// The chair.
    pub fn chair(&self) -> &ParticipantId {
        &self.chair
    }

    /// Member approvals an amendment needs.
    pub fn quorum(&self) -> u32 {
        self.quorum
    }

    /// The relay's receipt key.
    pub fn relay_key(&self) -> &VerifyingKey {
        &self.relay_key
    }

    /// A participant by id.
    pub fn participant(&self, id: &str) -> Option<&RosterParticipant> {
        ParticipantId::new(id)
            .ok()
            .and_then(|id| self.participants.get(&id))
    }

    /// All participants, sorted by id.
    pub fn participants(&self) -> impl Iterator<Item = &RosterParticipant> {
        self.participants.values()
    }

    /// A device of a participant.
    pub fn device(&self, participant: &str, device: &str) -> Option<&RosterDevice> {
        self.participant(participant).and_then(|p| p.device(device))
    }

    /// A channel by id.
    pub fn channel(&self, id: &str) -> Option<&RosterChannel> {
        ChannelId::new(id)
            .ok()
            .and_then(|id| self.channels.get(&id))
    }

    /// All channels, sorted by id.
    pub fn channels(&self) -> impl Iterator<Item = &RosterChannel> {
        self.channels.values()
    }

    /// Checks that `sender` may post in `channel` under its posting policy.
    /// `channel` is a roster channel or a direct conversation (`@A+B`,
    /// [`DirectSet`]); for a direct conversation the answer is the `direct`
    /// rule channel, whose `max_tlp` applies.
    ///
    /// # Errors
    /// [`PostError`] saying why not.
    pub fn check_post(&self, sender: &str, channel: &str) -> Result<&RosterChannel, PostError> {
        let p = self
            .participant(sender)
            .ok_or_else(|| PostError::UnknownParticipant(sender.into()))?;
        if is_direct(channel) {
            let set = DirectSet::parse(channel).map_err(|e| PostError::Conversation {
                conversation: e.name,
                reason: e.reason.into(),
            })?;
            return self.check_direct(p, &set);
        }
        let c = self
            .channel(channel)
            .ok_or_else(|| PostError::UnknownChannel(channel.into()))?;
        if c.id.as_str() == DIRECT_RULE {
            return Err(PostError::Conversation {
                conversation: channel.into(),
                reason: "`direct` holds the rule for direct conversations; address one by its participants (`@PL+UA`, `--to PL,UA`)".into(),
            });
        }
        self.check_post_in(p, c)?;
        Ok(c)
    }

    /// Role, membership and posting policy of `p` in `c`.
    fn check_post_in(&self, p: &RosterParticipant, c: &RosterChannel) -> Result<(), PostError> {
        if p.role == Role::Observer {
            return Err(PostError::ReadOnly {
                participant: p.id.to_string(),
            });
        }
        if !c.members.contains(&p.id) {
            return Err(PostError::NotAMember {
                participant: p.id.to_string(),
                channel: c.id.to_string(),
            });
        }
        if c.post == PostPolicy::Chair && p.id != self.chair {
            return Err(PostError::ChairOnly {
                channel: c.id.to_string(),
                chair: self.chair.to_string(),
            });
        }
        Ok(())
    }

    /// The addressing rule of a direct conversation (`PROTOCOL.md` §18.2):
    /// the deployment has a `direct` rule channel whose policy lets the
    /// sender post; the sender and the beneficiary are in the set; every
    /// other participant exists and is a member of the rule or one of its
    /// observers (observers are only ever there because the sender named them).
    fn check_direct(
        &self,
        sender: &RosterParticipant,
        set: &DirectSet,
    ) -> Result<&RosterChannel, PostError> {
        let conversation = set.name();
        let refuse = |reason: String| PostError::Conversation {
            conversation: conversation.clone(),
            reason,
        };
        let rule = self.channel(DIRECT_RULE).ok_or_else(|| {
            refuse(
                "this deployment has no direct conversations (no `direct` channel in its roster)"
                    .into(),
            )
        })?;
        self.check_post_in(sender, rule)?;
        if !set.contains(sender.id.as_str()) {
            return Err(refuse(format!("the sender {} is not in it", sender.id)));
        }
        if let Some(b) = &self.beneficiary {
            if !set.contains(b.as_str()) {
                return Err(refuse(format!(
                    "the beneficiary {b} is in every direct conversation (Nothing about Ukraine without Ukraine)"
                )));
            }
        }
        for id in set.ids() {
            if !self.participants.contains_key(id) {
                return Err(refuse(format!("{id} is not in the roster")));
            }
            if !rule.members.contains(id) && !rule.observers.contains(id) {
                return Err(refuse(format!(
                    "{id} may not take part in direct conversations (not in the roster's `direct` rule)"
                )));
            }
        }
        Ok(rule)
    }

    /// The participants who read `channel` (members and observers of a
    /// roster channel, or a direct conversation's set), if it exists.
    pub fn readers(&self, channel: &str) -> Option<BTreeSet<&ParticipantId>> {
        if is_direct(channel) {
            let set = DirectSet::parse(channel).ok()?;
            return Some(
                set.ids()
                    .filter_map(|id| self.participants.get_key_value(id).map(|(k, _)| k))
                    .collect(),
            );
        }
        let c = self.channel(channel)?;
        Some(c.members.iter().chain(c.observers.iter()).collect())
    }

    /// The TLP ceiling of `channel` (for a direct conversation, the `direct`
    /// rule's), if the channel exists.
    pub fn max_tlp(&self, channel: &str) -> Option<Tlp> {
        let id = if is_direct(channel) {
            DIRECT_RULE
        } else {
            channel
        };
        self.channel(id).map(|c| c.max_tlp)
    }

    /// The devices a message from `sender`'s device `sender_device` into
    /// `channel` is wrapped to: every device of every member and observer of
    /// the channel (of every participant of a direct conversation) and the
    /// sender's own other devices, except the sending
    /// device; sorted by (participant, device) in byte order.
    ///
    /// # Errors
    /// [`PostError`] if the sender may not post there or has no such device.
    pub fn recipient_devices(
        &self,
        sender: &str,
        sender_device: &str,
        channel: &str,
    ) -> Result<Vec<(&RosterParticipant, &RosterDevice)>, PostError> {
        self.check_post(sender, channel)?;
        if self.device(sender, sender_device).is_none() {
            return Err(PostError::UnknownDevice {
                participant: sender.into(),
                device: sender_device.into(),
            });
        }
        // invariant: check_post found the channel (or the conversation's set).
        let ids = self
            .readers(channel)
            .ok_or_else(|| PostError::UnknownChannel(channel.into()))?;
        let mut out = Vec::new();
        for p in ids.into_iter().filter_map(|id| self.participants.get(id)) {
            for d in p.devices.values() {
                if p.id.as_str() == sender && d.device.as_str() == sender_device {
                    continue;
                }
                out.push((p, d));
            }
        }
        Ok(out)
    }
}
