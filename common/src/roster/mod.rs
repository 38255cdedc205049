//! The roster: who takes part, with which keys, in which channels.
//!
//! - [`v1`]: the version-1 roster file (TOML, hand-edited, unsigned), still
//!   read for migration and by version-1 peers.
//! - [`state`]: the version-2 roster state: participants with an identity key
//!   and a set of devices, channels with a posting policy and a TLP ceiling,
//!   the chair, the quorum and the relay's receipt key; its validation and the
//!   queries the relay and clients ask of it (who may post, which devices a
//!   message must be wrapped to).
//! - [`direct`]: direct conversations, addressed to a set of participants
//!   chosen by the sender under the roster's `direct` rule.
//! - [`log`]: the signed, hash-chained roster log whose fold is the current
//!   state: `Genesis`, `Amend` and `Devices` entries, the one validation
//!   function relay and clients share, the deployment fingerprint and fork
//!   detection.
//!
//! The byte layouts are normative and given in `PROTOCOL.md` §14.

pub mod direct;
pub mod log;
pub mod state;
pub mod v1;

pub use direct::{is_direct, DirectNameError, DirectSet, DIRECT_RULE};
pub use log::{
    approval_message, check_entry, entry_hash, fingerprint_groups, Appended, Approval, EntryBody,
    EntryKind, ForkEvidence, LogError, RosterLog, SignedEntry,
};
pub use state::{
    ChannelRecord, DeviceRecord, ParticipantRecord, PostPolicy, RosterChannel, RosterDevice,
    RosterParticipant, RosterState, StateRecord,
};
pub use v1::{
    Channel, ChannelEntry, ChannelId, Participant, ParticipantEntry, PostError, Role, Roster,
    RosterError, RosterFile,
};

#[cfg(test)]
pub(crate) mod tests;
