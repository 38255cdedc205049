//! Direct conversations: a set of participants chosen by the sender instead
//! of a roster channel ("multilateral and bilateral initiatives").
//!
//! A direct conversation is named in the envelope's `channel` field by its
//! set: `@` followed by the participant ids, sorted in byte order, unique,
//! joined by `+`, the sender among them (`@PL+UA`, `@EE+LT+UA`). The name is
//! canonical, so every party writes the same conversation the same way and a
//! reply from any member continues it. `@` and `+` are outside both the
//! channel-id and the participant-id alphabet, so a direct conversation can
//! never be mistaken for a channel.
//!
//! Who may take part is the roster's rule, kept in the channel named
//! [`DIRECT_RULE`] (`direct`): its members may be in a direct conversation,
//! its observers only when named in the set, its posting policy says who may
//! write, and its `max_tlp` is the ceiling of every direct conversation. A
//! deployment without a `direct` channel has no direct conversations. The
//! beneficiary is always in the set. `PROTOCOL.md` §18.2 gives the rule.

use std::collections::BTreeSet;

use crate::identity::ParticipantId;

/// The roster channel that holds the rule for direct conversations.
pub const DIRECT_RULE: &str = "direct";

/// The first character of a direct conversation's name.
pub const DIRECT_PREFIX: char = '@';

/// The separator between participant ids in a direct conversation's name.
pub const DIRECT_SEPARATOR: char = '+';

/// The longest name of a direct conversation, in bytes.
pub const MAX_DIRECT_NAME_LEN: usize = 1024;

/// Whether a channel field names a direct conversation (starts with `@`);
/// it may still be malformed ([`DirectSet::parse`] says).
pub fn is_direct(channel: &str) -> bool {
    channel.starts_with(DIRECT_PREFIX)
}

/// The participants of a direct conversation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirectSet(BTreeSet<ParticipantId>);

/// Why a string is not a direct conversation's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a direct conversation: {reason}")]
pub struct DirectNameError {
    /// The name (cut to 80 characters).
    pub name: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl DirectSet {
    /// A set of participants (at least two).
    ///
    /// # Errors
    /// [`DirectNameError`] for fewer than two, or a name that would be too long.
    pub fn new(ids: impl IntoIterator<Item = ParticipantId>) -> Result<Self, DirectNameError> {
        let set = Self(ids.into_iter().collect());
        let name = set.name();
        if set.0.len() < 2 {
            return Err(DirectNameError {
                name,
                reason: "a conversation needs at least two participants",
            });
        }
        if name.len() > MAX_DIRECT_NAME_LEN {
            return Err(DirectNameError {
                name: name.chars().take(80).collect(),
                reason: "too many participants (name over 1024 bytes)",
            });
        }
        Ok(set)
    }

    /// Parses the canonical name (`@A+B...`, sorted, unique, at least two).
    ///
    /// # Errors
    /// [`DirectNameError`] naming what is wrong; a non-canonical spelling of
    /// a valid set (unsorted, repeated) is refused too, so each set has one name.
    pub fn parse(name: &str) -> Result<Self, DirectNameError> {
        let bad = |reason| DirectNameError {
            name: name.chars().take(80).collect(),
            reason,
        };
        if name.len() > MAX_DIRECT_NAME_LEN {
            return Err(bad("longer than 1024 bytes"));
        }
        let rest = name
            .strip_prefix(DIRECT_PREFIX)
            .ok_or(bad("does not start with '@'"))?;
        let mut ids = Vec::new();
        for part in rest.split(DIRECT_SEPARATOR) {
            let id = ParticipantId::new(part).map_err(|_| bad("a participant id is invalid"))?;
            if ids
                .last()
                .is_some_and(|p: &ParticipantId| p.as_str().as_bytes() >= id.as_str().as_bytes())
            {
                return Err(bad("ids must be sorted (byte order) and unique"));
            }
            ids.push(id);
        }
        if ids.len() < 2 {
            return Err(bad("a conversation needs at least two participants"));
        }
        Ok(Self(ids.into_iter().collect()))
    }

    /// The canonical name: `@` and the ids joined by `+`.
    pub fn name(&self) -> String {
        let ids: Vec<&str> = self.0.iter().map(|p| p.as_str()).collect();
        format!("{DIRECT_PREFIX}{}", ids.join("+"))
    }

    /// Whether `id` is in the conversation.
    pub fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|p| p.as_str() == id)
    }

    /// The participants, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &ParticipantId> {
        self.0.iter()
    }

    /// The number of participants.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (a set has at least two participants); for clippy.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for DirectSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ParticipantId {
        ParticipantId::new(s).unwrap()
    }

    #[test]
    fn the_name_is_canonical() {
        let s = DirectSet::new([pid("UA"), pid("PL"), pid("EE")]).unwrap();
        assert_eq!(s.name(), "@EE+PL+UA");
        assert_eq!(DirectSet::parse("@EE+PL+UA").unwrap(), s);
        assert!(s.contains("PL") && !s.contains("LT"));
        for bad in [
            "@PL+EE",    // unsorted
            "@PL+PL",    // repeated
            "@PL",       // alone
            "PL+UA",     // no prefix
            "@PL++UA",   // empty id
            "@PL+U A",   // bad id
            "@",         // nothing
            "@PL+UA+",   // trailing separator
            "@pl+UA+ÄB", // non-ASCII
        ] {
            assert!(DirectSet::parse(bad).is_err(), "{bad} parsed");
        }
        let long = format!(
            "@{}",
            (0..40)
                .map(|i| format!("P{i:030}"))
                .collect::<Vec<_>>()
                .join("+")
        );
        assert!(DirectSet::parse(&long).is_err());
        assert!(DirectSet::new([pid("UA")]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,64}") {
            let _ = DirectSet::parse(&s);
        }
    }
}
