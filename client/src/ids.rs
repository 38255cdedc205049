//! The one rule for message ids given by a person, for every command and
//! flag that takes one: the full 32 hex digits, or a unique prefix of at
//! least [`MIN_PREFIX`] hex digits. An ambiguous prefix lists its
//! candidates (git style), an unknown one says so, a short one says the
//! minimum.

use tallinn_common::message::MsgId;

/// The shortest prefix accepted.
pub const MIN_PREFIX: usize = 6;

/// Why a given id does not name exactly one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not hex digits.
    #[error("{0:?} is not a message id: hex digits only (the full 32, or a unique prefix of at least 6)")]
    NotHex(String),
    /// Fewer digits than the minimum.
    #[error("message id {0:?} is too short: give at least 6 hex digits (or the full 32)")]
    TooShort(String),
    /// No message has this id or prefix.
    #[error("no message {id} in {place}")]
    Unknown {
        /// The id given.
        id: String,
        /// Where it was looked for (`the archive`, `the outbox`).
        place: &'static str,
    },
    /// Several messages start with the prefix.
    #[error("message id {id} is ambiguous; it starts:\n{}", .candidates.join("\n"))]
    Ambiguous {
        /// The id given.
        id: String,
        /// One line per candidate: its full id and a description.
        candidates: Vec<String>,
    },
}

/// The normalised form of a given id (lower case), checked for syntax: a
/// full id or a prefix of at least [`MIN_PREFIX`] hex digits.
///
/// # Errors
/// [`IdError::NotHex`], [`IdError::TooShort`].
pub fn normalise(given: &str) -> Result<String, IdError> {
    let id = given.trim().to_ascii_lowercase();
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IdError::NotHex(given.to_string()));
    }
    if id.len() < MIN_PREFIX {
        return Err(IdError::TooShort(given.to_string()));
    }
    Ok(id)
}

/// Picks the one candidate whose id starts with `given`: `candidates` are
/// `(id, description)` pairs (each id once).
///
/// # Errors
/// [`IdError`] saying why not exactly one.
pub fn resolve<T>(
    given: &str,
    place: &'static str,
    candidates: impl IntoIterator<Item = (MsgId, String, T)>,
) -> Result<T, IdError> {
    let id = normalise(given)?;
    let mut found: Vec<(MsgId, String, T)> = candidates
        .into_iter()
        .filter(|(m, _, _)| m.to_hex().starts_with(&id))
        .collect();
    found.sort_by_key(|(m, _, _)| *m);
    found.dedup_by_key(|(m, _, _)| *m);
    match found.len() {
        0 => Err(IdError::Unknown { id, place }),
        1 => Ok(found.remove(0).2),
        _ => Err(IdError::Ambiguous {
            id,
            candidates: found
                .iter()
                .map(|(m, what, _)| format!("  {m}  {what}"))
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<(MsgId, String, u8)> {
        [
            ("abcdef0011111111111111111111111a", 1),
            ("abcdef0022222222222222222222222b", 2),
            ("1234567890abcdef1234567890abcdef", 3),
        ]
        .into_iter()
        .map(|(h, n)| (MsgId::from_hex(h).unwrap(), format!("subject {n}"), n))
        .collect()
    }

    #[test]
    fn one_rule_for_every_given_id() {
        assert_eq!(resolve("123456", "the archive", ids()), Ok(3));
        assert_eq!(resolve("ABCDEF001", "the archive", ids()), Ok(1));
        assert_eq!(
            resolve("1234567890abcdef1234567890abcdef", "the archive", ids()),
            Ok(3)
        );
        assert_eq!(
            resolve("12345", "the archive", ids()),
            Err(IdError::TooShort("12345".into()))
        );
        assert!(matches!(
            resolve("xyz123", "the archive", ids()),
            Err(IdError::NotHex(_))
        ));
        assert_eq!(
            resolve("999999", "the outbox", ids()),
            Err(IdError::Unknown {
                id: "999999".into(),
                place: "the outbox"
            })
        );
        let err = resolve("abcdef", "the archive", ids()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("ambiguous"), "{text}");
        assert!(
            text.contains("abcdef0011111111111111111111111a  subject 1"),
            "{text}"
        );
        assert!(
            text.contains("abcdef0022222222222222222222222b  subject 2"),
            "{text}"
        );
    }
}
