//! The roster log: signed, hash-chained entries whose fold is the current
//! roster state.
//!
//! [`check_entry`] is the one validation function the relay and every client
//! run on an entry, against the state before it: exact canonical encoding,
//! index and `prev_hash`, approvals by identity keys over the exact body
//! bytes, the approval rule of the entry's kind, then the state rules
//! ([`RosterState::validate`]). [`RosterLog`] folds a sequence of entries,
//! keeps the state of every epoch (old envelopes verify against the state of
//! their own `roster_epoch`), and refuses gaps, reordering, truncation below
//! a known head and forks; a fork comes back as [`ForkEvidence`] holding both
//! validly signed entries.
//!
//! Approval rules (`PROTOCOL.md` §14.3):
//! - `Genesis` (index 0 only): approved by the chair and the beneficiary of the
//!   state it installs; every approver a member of that state.
//! - `Amend`: approved by at least `quorum` members of the state *before* it,
//!   including that state's chair and beneficiary (the beneficiary's veto);
//!   only members approve. An `Amend` never changes the devices of a
//!   participant whose identity key it keeps: devices belong to their
//!   participant and change only by its own `Devices` entry.
//! - `Devices`: approved by exactly one identity key, the participant's own
//!   (as in the state before it).
//! - Every entry: a device key (signing or encryption) that has left the
//!   roster never returns; a revoked or rotated-out key stays dead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;
use sha2::{Digest, Sha256};

use super::state::{DeviceRecord, RosterState, StateRecord};
use super::v1::RosterError;
use crate::defaults;
use crate::identity::ParticipantId;

/// The kind and payload of a roster-log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// Index 0: the initial state. Its entry hash is the deployment fingerprint.
    Genesis(StateRecord),
    /// A new whole state: membership, roles, identity keys, channels, chair,
    /// quorum, relay key.
    Amend(StateRecord),
    /// A participant replaces its own device list (add, revoke, rotate).
    Devices {
        /// The participant.
        participant: String,
        /// Its new devices, sorted by label, unique.
        devices: Vec<DeviceRecord>,
    },
}

impl EntryKind {
    /// A short name for messages: `genesis`, `amend`, `devices`.
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::Genesis(_) => "genesis",
            EntryKind::Amend(_) => "amend",
            EntryKind::Devices { .. } => "devices",
        }
    }
}

/// The signed part of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    /// Position in the log; the epoch of the state it produces.
    pub index: u64,
    /// The previous entry's hash; 32 zero bytes for the genesis.
    pub prev_hash: [u8; 32],
    /// What the entry does.
    pub kind: EntryKind,
}

impl EntryBody {
    /// The canonical encoding (what is signed and hashed).
    pub fn encode(&self) -> Vec<u8> {
        // invariant: plain structs of strings, integers, arrays and vectors
        // always encode with postcard.
        postcard::to_allocvec(self).expect("invariant: an entry body encodes")
    }
}

/// One identity-key approval of an entry body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The approving participant.
    pub participant: String,
    /// Ed25519 by its identity key over [`approval_message`] of the body.
    #[serde(with = "BigArray")]
    pub signature: [u8; 64],
}

impl std::fmt::Debug for Approval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Approval({:?}, {}..)",
            self.participant,
            hex::encode(&self.signature[..8])
        )
    }
}

/// A log entry as stored and transmitted: the body bytes verbatim and the
/// approvals over them, sorted by participant id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// postcard([`EntryBody`]), kept verbatim.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Approvals, sorted by participant id, unique.
    pub approvals: Vec<Approval>,
}

impl SignedEntry {
    /// An entry with no approvals yet.
    pub fn new(body: &EntryBody) -> Self {
        Self {
            body: body.encode(),
            approvals: Vec::new(),
        }
    }

    /// The entry hash.
    pub fn hash(&self) -> [u8; 32] {
        entry_hash(&self.body)
    }

    /// Adds (or replaces) one approval, keeping the list sorted.
    pub fn add_approval(&mut self, approval: Approval) {
        self.approvals
            .retain(|a| a.participant != approval.participant);
        let at = self
            .approvals
            .partition_point(|a| a.participant.as_bytes() < approval.participant.as_bytes());
        self.approvals.insert(at, approval);
    }

    /// The canonical encoding, postcard([`SignedEntry`]).
    pub fn encode(&self) -> Vec<u8> {
        // invariant: bytes and a vector of fixed structs always encode.
        postcard::to_allocvec(self).expect("invariant: a signed entry encodes")
    }

    /// Decodes an entry from untrusted bytes (whole input, bounded size). The
    /// body is not checked here; [`check_entry`] does that.
    ///
    /// # Errors
    /// [`LogError::Malformed`] or [`LogError::TooLarge`].
    pub fn decode(bytes: &[u8]) -> Result<Self, LogError> {
        if bytes.len() > defaults::MAX_ROSTER_ENTRY_LEN {
            return Err(LogError::TooLarge(bytes.len()));
        }
        let (entry, rest) = postcard::take_from_bytes::<Self>(bytes)
            .map_err(|e| LogError::Malformed(format!("signed entry: {e}")))?;
        if !rest.is_empty() {
            return Err(LogError::Malformed(format!(
                "signed entry: {} trailing bytes",
                rest.len()
            )));
        }
        Ok(entry)
    }

    /// The text form for files passed between machines (a genesis to sign,
    /// a proposal): standard base64 (with padding) of [`SignedEntry::encode`]
    /// and a newline.
    pub fn to_text(&self) -> String {
        use base64::Engine as _;
        let mut s = base64::engine::general_purpose::STANDARD.encode(self.encode());
        s.push('\n');
        s
    }

    /// Parses [`SignedEntry::to_text`] (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`LogError::Malformed`] or [`LogError::TooLarge`].
    pub fn from_text(text: &str) -> Result<Self, LogError> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| LogError::Malformed(format!("not base64: {e}")))?;
        Self::decode(&bytes)
    }

    /// Decodes the body (exact and canonical).
    ///
    /// # Errors
    /// [`LogError::Malformed`] or [`LogError::NotCanonical`].
    pub fn decode_body(&self) -> Result<EntryBody, LogError> {
        let (body, rest) = postcard::take_from_bytes::<EntryBody>(&self.body)
            .map_err(|e| LogError::Malformed(format!("entry body: {e}")))?;
        if !rest.is_empty() {
            return Err(LogError::Malformed(format!(
                "entry body: {} trailing bytes",
                rest.len()
            )));
        }
        if body.encode() != self.body {
            return Err(LogError::NotCanonical);
        }
        Ok(body)
    }
}

/// `SHA-256("tallinn/2 roster-entry" || body)`.
pub fn entry_hash(body: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(defaults::ROSTER_ENTRY_CONTEXT)
        .chain_update(body)
        .finalize()
        .into()
}

/// The bytes an identity key signs to approve `body`:
/// `"tallinn/2 roster-entry" || body`.
pub fn approval_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(defaults::ROSTER_ENTRY_CONTEXT.len() + body.len());
    m.extend_from_slice(defaults::ROSTER_ENTRY_CONTEXT);
    m.extend_from_slice(body);
    m
}

/// Two different, validly approved entries at one index: proof that someone
/// (the relay, or a quorum) misbehaved. Kept as evidence; a client that finds
/// one stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkEvidence {
    /// The index both claim.
    pub index: u64,
    /// The entry this log holds.
    pub ours: SignedEntry,
    /// The other entry.
    pub theirs: SignedEntry,
}

/// Why an entry or a log was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The bytes are not an entry.
    #[error("malformed roster entry: {0}")]
    Malformed(String),
    /// The entry is larger than any valid entry.
    #[error("roster entry of {0} bytes is larger than the {max}-byte limit", max = defaults::MAX_ROSTER_ENTRY_LEN)]
    TooLarge(usize),
    /// The body decodes but is not the one canonical encoding of its value.
    #[error("roster entry body is not canonically encoded")]
    NotCanonical,
    /// The first entry is not a genesis, or a genesis appears later.
    #[error("roster entry {index}: a {kind} entry cannot stand at this index (the genesis is index 0 and only index 0)")]
    MisplacedKind {
        /// The index.
        index: u64,
        /// The kind found.
        kind: &'static str,
    },
    /// The entry's index is not the next one.
    #[error("roster entry has index {got}, expected {expected}")]
    WrongIndex {
        /// The next index of this log.
        expected: u64,
        /// The entry's index.
        got: u64,
    },
    /// The entry does not chain to the previous entry.
    #[error("roster entry {0}: prev_hash does not match the previous entry")]
    WrongPrevHash(u64),
    /// The approvals are not sorted by participant or repeat one.
    #[error("roster entry {0}: approvals are not sorted by participant, or repeat one")]
    ApprovalsNotSorted(u64),
    /// An approver is not a member of the state that must approve.
    #[error("roster entry {index}: approver {participant:?} is not a member of the approving roster state")]
    NotAnApprover {
        /// The index.
        index: u64,
        /// The approver.
        participant: String,
    },
    /// An approval signature does not verify.
    #[error("roster entry {index}: the approval of {participant} has a bad signature")]
    BadApproval {
        /// The index.
        index: u64,
        /// The approver.
        participant: String,
    },
    /// A required approver did not approve.
    #[error("roster entry {index}: the {role} ({participant}) has not approved it")]
    MissingApproval {
        /// The index.
        index: u64,
        /// `beneficiary` or `chair`.
        role: &'static str,
        /// Who.
        participant: String,
    },
    /// Fewer member approvals than the quorum.
    #[error("roster entry {index}: {got} member approvals, the quorum is {need}")]
    BelowQuorum {
        /// The index.
        index: u64,
        /// Approvals present.
        got: usize,
        /// The quorum.
        need: u32,
    },
    /// A `Devices` entry is not approved by exactly its own participant.
    #[error("roster entry {index}: a devices entry for {participant} must be approved by {participant}'s identity key alone")]
    DevicesNotSelfSigned {
        /// The index.
        index: u64,
        /// The participant the entry is for.
        participant: String,
    },
    /// A `Devices` entry names a participant not in the roster.
    #[error("roster entry {index}: devices entry for unknown participant {participant:?}")]
    UnknownParticipant {
        /// The index.
        index: u64,
        /// The participant named.
        participant: String,
    },
    /// An `Amend` changes the devices of a participant that keeps its
    /// identity key.
    #[error("roster entry {index}: an amendment may not change the devices of {participant} (only {participant}'s own devices entry can)")]
    AmendChangesDevices {
        /// The index.
        index: u64,
        /// The participant.
        participant: String,
    },
    /// A device key that left the roster comes back.
    #[error("roster entry {index}: device {device} of {participant} reuses a key that was revoked or rotated out")]
    RetiredKey {
        /// The index.
        index: u64,
        /// The participant.
        participant: String,
        /// The device label.
        device: String,
    },
    /// The state the entry produces breaks a state rule.
    #[error("roster entry {index}: {error}")]
    State {
        /// The index.
        index: u64,
        /// The rule broken.
        error: RosterError,
    },
    /// The genesis is not the deployment this party pinned.
    #[error("the roster log belongs to deployment {got}, not the pinned deployment {expected}")]
    WrongDeployment {
        /// The pinned fingerprint, hex.
        expected: String,
        /// The log's genesis hash, hex.
        got: String,
    },
    /// Somebody claims a shorter log than this party already holds.
    #[error("the roster log offered ends at epoch {offered}, but epoch {known} is already known: the log was truncated or rolled back")]
    Truncated {
        /// The epoch known here.
        known: u64,
        /// The epoch offered.
        offered: u64,
    },
    /// Two different valid entries at one index.
    #[error("roster log fork at index {}: two different validly approved entries (kept as evidence)", .0.index)]
    Fork(Box<ForkEvidence>),
}

/// Checks `entry` as the next entry after `prev` (`None` for the genesis)
/// and returns the state it produces. `retired` holds every device key that
/// has left the roster before `prev` and including it.
///
/// # Errors
/// The first rule the entry breaks, as a [`LogError`].
pub fn check_entry(
    prev: Option<&RosterState>,
    retired: &BTreeSet<[u8; 32]>,
    entry: &SignedEntry,
) -> Result<RosterState, LogError> {
    if entry.body.len() > defaults::MAX_ROSTER_ENTRY_LEN {
        return Err(LogError::TooLarge(entry.body.len()));
    }
    let body = entry.decode_body()?;
    let index = body.index;
    let hash = entry.hash();
    let expected = prev.map_or(0, |p| p.epoch().saturating_add(1));
    if index != expected {
        return Err(LogError::WrongIndex {
            expected,
            got: index,
        });
    }
    let expected_prev = prev.map_or([0u8; 32], |p| *p.entry_hash());
    if body.prev_hash != expected_prev {
        return Err(LogError::WrongPrevHash(index));
    }
    if !approvals_sorted(&entry.approvals) {
        return Err(LogError::ApprovalsNotSorted(index));
    }
    let state_err = |error| LogError::State { index, error };
    let new_state = match (&body.kind, prev) {
        (EntryKind::Genesis(record), None) => {
            let state = RosterState::validate(record.clone(), index, hash).map_err(state_err)?;
            check_member_approvals(&state, &state, index, entry)?;
            state
        }
        (EntryKind::Amend(record), Some(prev)) => {
            let state = RosterState::validate(record.clone(), index, hash).map_err(state_err)?;
            check_member_approvals(prev, prev, index, entry)?;
            for p in state.participants() {
                if let Some(old) = prev.participant(p.id.as_str()) {
                    if old.identity_key == p.identity_key && old.devices != p.devices {
                        return Err(LogError::AmendChangesDevices {
                            index,
                            participant: p.id.to_string(),
                        });
                    }
                }
            }
            state
        }
        (
            EntryKind::Devices {
                participant,
                devices,
            },
            Some(prev),
        ) => {
            let owner =
                prev.participant(participant)
                    .ok_or_else(|| LogError::UnknownParticipant {
                        index,
                        participant: participant.clone(),
                    })?;
            let [approval] = entry.approvals.as_slice() else {
                return Err(LogError::DevicesNotSelfSigned {
                    index,
                    participant: participant.clone(),
                });
            };
            if approval.participant != *participant {
                return Err(LogError::DevicesNotSelfSigned {
                    index,
                    participant: participant.clone(),
                });
            }
            verify_approval(&owner.identity_key, index, &entry.body, approval)?;
            let mut record = prev.record().clone();
            for p in &mut record.participants {
                if p.id == *participant {
                    p.devices.clone_from(devices);
                }
            }
            RosterState::validate(record, index, hash).map_err(state_err)?
        }
        (kind, _) => {
            return Err(LogError::MisplacedKind {
                index,
                kind: kind.name(),
            })
        }
    };
    for p in new_state.participants() {
        for d in p.devices.values() {
            if retired.contains(d.sign_key.as_bytes()) || retired.contains(&d.enc_key) {
                return Err(LogError::RetiredKey {
                    index,
                    participant: p.id.to_string(),
                    device: d.device.to_string(),
                });
            }
        }
    }
    Ok(new_state)
}

fn approvals_sorted(approvals: &[Approval]) -> bool {
    approvals
        .windows(2)
        .all(|w| w[0].participant.as_bytes() < w[1].participant.as_bytes())
}

fn verify_approval(
    key: &ed25519_dalek::VerifyingKey,
    index: u64,
    body: &[u8],
    approval: &Approval,
) -> Result<(), LogError> {
    let sig = ed25519_dalek::Signature::from_bytes(&approval.signature);
    key.verify_strict(&approval_message(body), &sig)
        .map_err(|_| LogError::BadApproval {
            index,
            participant: approval.participant.clone(),
        })
}

/// Every approver must be a member of `approvers`, with a valid signature;
/// the members' count must reach `rules`' quorum (the genesis: its own chair
/// and beneficiary suffice) and include `rules`' chair and beneficiary.
fn check_member_approvals(
    approvers: &RosterState,
    rules: &RosterState,
    index: u64,
    entry: &SignedEntry,
) -> Result<(), LogError> {
    let mut signed = BTreeSet::new();
    for a in &entry.approvals {
        let p = approvers
            .participant(&a.participant)
            .filter(|p| p.role == super::Role::Member)
            .ok_or_else(|| LogError::NotAnApprover {
                index,
                participant: a.participant.clone(),
            })?;
        verify_approval(&p.identity_key, index, &entry.body, a)?;
        signed.insert(p.id.clone());
    }
    let mut required: Vec<(&'static str, &ParticipantId)> = vec![("chair", rules.chair())];
    if let Some(b) = rules.beneficiary() {
        required.insert(0, ("beneficiary", b));
    }
    for (role, who) in required {
        if !signed.contains(who) {
            return Err(LogError::MissingApproval {
                index,
                role,
                participant: who.to_string(),
            });
        }
    }
    if index > 0 && signed.len() < usize::try_from(rules.quorum()).unwrap_or(usize::MAX) {
        return Err(LogError::BelowQuorum {
            index,
            got: signed.len(),
            need: rules.quorum(),
        });
    }
    Ok(())
}

/// The outcome of offering an entry to a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The entry was new and valid; the log advanced to this epoch.
    New(u64),
    /// The log already holds this exact entry (same hash).
    Known(u64),
}

/// A verified roster log: every entry from the genesis, and the state of
/// every epoch.
#[derive(Debug, Clone)]
pub struct RosterLog {
    entries: Vec<SignedEntry>,
    states: Vec<Arc<RosterState>>,
    /// Device keys that left the roster, with the epoch at which they left.
    retired: BTreeMap<[u8; 32], u64>,
}

impl RosterLog {
    /// Starts a log from its genesis, optionally checking it against the
    /// pinned deployment fingerprint.
    ///
    /// # Errors
    /// The genesis breaks a rule, or is not the pinned deployment.
    pub fn from_genesis(
        genesis: SignedEntry,
        deployment: Option<&[u8; 32]>,
    ) -> Result<Self, LogError> {
        if let Some(expected) = deployment {
            let got = genesis.hash();
            if got != *expected {
                return Err(LogError::WrongDeployment {
                    expected: hex::encode(expected),
                    got: hex::encode(got),
                });
            }
        }
        let state = check_entry(None, &BTreeSet::new(), &genesis)?;
        Ok(Self {
            entries: vec![genesis],
            states: vec![Arc::new(state)],
            retired: BTreeMap::new(),
        })
    }

    /// Verifies a whole log from its genesis.
    ///
    /// # Errors
    /// The first entry that breaks a rule; an empty list is
    /// [`LogError::Malformed`].
    pub fn from_entries(
        entries: impl IntoIterator<Item = SignedEntry>,
        deployment: Option<&[u8; 32]>,
    ) -> Result<Self, LogError> {
        let mut it = entries.into_iter();
        let genesis = it
            .next()
            .ok_or_else(|| LogError::Malformed("an empty roster log".into()))?;
        let mut log = Self::from_genesis(genesis, deployment)?;
        for e in it {
            match log.append(e)? {
                Appended::New(_) => {}
                Appended::Known(index) => {
                    return Err(LogError::WrongIndex {
                        expected: log.epoch().saturating_add(1),
                        got: index,
                    })
                }
            }
        }
        Ok(log)
    }

    /// The deployment fingerprint: the genesis entry hash.
    pub fn deployment(&self) -> [u8; 32] {
        *self.states[0].entry_hash()
    }

    /// The current epoch (index of the last entry).
    pub fn epoch(&self) -> u64 {
        self.current().epoch()
    }

    /// The hash of the last entry.
    pub fn head_hash(&self) -> [u8; 32] {
        *self.current().entry_hash()
    }

    /// The current state.
    pub fn current(&self) -> &Arc<RosterState> {
        // invariant: a log always holds its genesis.
        self.states.last().expect("invariant: a log has a genesis")
    }

    /// The state at `epoch`, if the log reaches it.
    pub fn state_at(&self, epoch: u64) -> Option<&Arc<RosterState>> {
        usize::try_from(epoch).ok().and_then(|i| self.states.get(i))
    }

    /// Every entry, from the genesis.
    pub fn entries(&self) -> &[SignedEntry] {
        &self.entries
    }

    /// The entries from `index` on (empty past the head).
    pub fn entries_from(&self, index: u64) -> &[SignedEntry] {
        let i = usize::try_from(index).unwrap_or(usize::MAX);
        self.entries.get(i..).unwrap_or(&[])
    }

    /// Every device key retired at or before `epoch`.
    fn retired_at(&self, epoch: u64) -> BTreeSet<[u8; 32]> {
        self.retired
            .iter()
            .filter(|(_, at)| **at <= epoch)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Checks `entry` as the next entry without applying it, returning the
    /// state it would produce.
    ///
    /// # Errors
    /// As [`check_entry`].
    pub fn check_next(&self, entry: &SignedEntry) -> Result<RosterState, LogError> {
        check_entry(Some(self.current()), &self.retired_at(self.epoch()), entry)
    }

    /// Offers an entry: the next one is checked and applied; one this log
    /// already holds is [`Appended::Known`]; a different valid entry at a
    /// held index is a [`LogError::Fork`] carrying both entries.
    ///
    /// # Errors
    /// A rule broken, a gap ([`LogError::WrongIndex`]) or a fork.
    pub fn append(&mut self, entry: SignedEntry) -> Result<Appended, LogError> {
        let body = entry.decode_body()?;
        let epoch = self.epoch();
        if body.index <= epoch {
            let i = usize::try_from(body.index).unwrap_or(usize::MAX);
            let ours = &self.entries[i];
            if ours.body == entry.body {
                return Ok(Appended::Known(body.index));
            }
            // A different body at a held index is only evidence if it is
            // itself a valid entry after the same previous state.
            let prev = i.checked_sub(1).map(|p| &*self.states[p]);
            let retired = body
                .index
                .checked_sub(1)
                .map_or_else(BTreeSet::new, |p| self.retired_at(p));
            check_entry(prev, &retired, &entry)?;
            return Err(LogError::Fork(Box::new(ForkEvidence {
                index: body.index,
                ours: ours.clone(),
                theirs: entry,
            })));
        }
        let state = self.check_next(&entry)?;
        let before = self.current();
        let now: BTreeSet<[u8; 32]> = state
            .participants()
            .flat_map(|p| p.devices.values())
            .flat_map(|d| [*d.sign_key.as_bytes(), d.enc_key])
            .collect();
        let gone: Vec<[u8; 32]> = before
            .participants()
            .flat_map(|p| p.devices.values())
            .flat_map(|d| [*d.sign_key.as_bytes(), d.enc_key])
            .filter(|k| !now.contains(k))
            .collect();
        let index = state.epoch();
        for k in gone {
            self.retired.entry(k).or_insert(index);
        }
        self.entries.push(entry);
        self.states.push(Arc::new(state));
        Ok(Appended::New(index))
    }

    /// Checks a head someone claims (epoch and entry hash) against this log:
    /// a head below the known epoch is a truncation, a different hash at a
    /// held epoch is a fork (without the other entry, so not evidence by
    /// itself).
    ///
    /// # Errors
    /// [`LogError::Truncated`] or [`LogError::WrongPrevHash`].
    pub fn check_claimed_head(&self, epoch: u64, hash: &[u8; 32]) -> Result<(), LogError> {
        if epoch < self.epoch() {
            return Err(LogError::Truncated {
                known: self.epoch(),
                offered: epoch,
            });
        }
        if epoch == self.epoch() && hash != &self.head_hash() {
            return Err(LogError::WrongPrevHash(epoch));
        }
        Ok(())
    }
}

/// Lower-case hex of a deployment fingerprint, in eight groups of eight
/// digits for reading aloud.
pub fn fingerprint_groups(hash: &[u8; 32]) -> String {
    let h = hex::encode(hash);
    h.as_bytes()
        .chunks(8)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
}
