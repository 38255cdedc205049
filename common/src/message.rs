//! The plaintext [`Message`]: what a point of contact writes, sealed inside an
//! envelope.
//!
//! Encoded with postcard; enum variants are encoded as their index (a varint)
//! in declaration order, which is normative (see `PROTOCOL.md`): never reorder
//! or remove a variant, only append.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A 16-byte random message id, chosen by the sender.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MsgId(pub [u8; 16]);

impl MsgId {
    /// Lower-case hex, 32 digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 hex digits.
    ///
    /// # Errors
    /// [`MsgIdParseError`] if the text is not exactly 32 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, MsgIdParseError> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| MsgIdParseError(s.into()))?;
        Ok(Self(out))
    }
}

/// A message id that is not 32 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("invalid message id {0:?}: expected 32 hex digits")]
pub struct MsgIdParseError(String);

impl std::str::FromStr for MsgId {
    type Err = MsgIdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MsgId({})", self.to_hex())
    }
}

/// Traffic Light Protocol 2.0 label (FIRST). Mandatory on every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tlp {
    /// TLP:CLEAR — no limit on disclosure. Variant index 0.
    Clear,
    /// TLP:GREEN — the community. Variant index 1.
    Green,
    /// TLP:AMBER — recipients' organisations and clients, need to know. Index 2.
    Amber,
    /// TLP:AMBER+STRICT — recipients' organisation only. Index 3.
    AmberStrict,
    /// TLP:RED — the named recipients only. Index 4.
    Red,
}

impl Tlp {
    /// Every label, in wire order.
    pub const ALL: [Tlp; 5] = [
        Tlp::Clear,
        Tlp::Green,
        Tlp::Amber,
        Tlp::AmberStrict,
        Tlp::Red,
    ];

    /// The label as FIRST writes it, without the `TLP:` prefix (`AMBER+STRICT`).
    pub fn label(&self) -> &'static str {
        match self {
            Tlp::Clear => "CLEAR",
            Tlp::Green => "GREEN",
            Tlp::Amber => "AMBER",
            Tlp::AmberStrict => "AMBER+STRICT",
            Tlp::Red => "RED",
        }
    }
}

impl fmt::Display for Tlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLP:{}", self.label())
    }
}

/// A TLP label that is not one of the five of TLP 2.0.
#[derive(Debug, thiserror::Error)]
#[error("unknown TLP label {0:?}: expected CLEAR, GREEN, AMBER, AMBER+STRICT or RED")]
pub struct TlpParseError(String);

impl std::str::FromStr for Tlp {
    type Err = TlpParseError;
    /// Accepts `AMBER+STRICT`, `amber-strict`, `TLP:RED`, ... (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_uppercase();
        let norm = norm.strip_prefix("TLP:").unwrap_or(&norm);
        match norm {
            "CLEAR" | "WHITE" => Ok(Tlp::Clear),
            "GREEN" => Ok(Tlp::Green),
            "AMBER" => Ok(Tlp::Amber),
            "AMBER+STRICT" | "AMBER-STRICT" | "AMBER_STRICT" => Ok(Tlp::AmberStrict),
            "RED" => Ok(Tlp::Red),
            _ => Err(TlpParseError(s.into())),
        }
    }
}

/// The Tallinn Mechanism's three Lines of Effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Loe {
    /// Immediate support. Index 0.
    Immediate,
    /// Medium-term capability. Index 1.
    Capability,
    /// Long-term sustainability. Index 2.
    Sustainability,
}

/// Priority of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Index 0.
    Low,
    /// Index 1.
    Normal,
    /// Index 2.
    High,
    /// Index 3.
    Critical,
}

/// State reported by a status update about a request or offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Seen and being considered. Index 0.
    Acknowledged,
    /// Work under way. Index 1.
    InProgress,
    /// Delivered. Index 2.
    Fulfilled,
    /// Will not be done. Index 3.
    Declined,
    /// No further action. Index 4.
    Closed,
}

/// What kind of coordination message this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A free-form note. Index 0.
    Note,
    /// A request for assistance. Index 1.
    Request {
        /// Line of effort.
        loe: Loe,
        /// Free-form category (e.g. `incident-response`, `hardware`).
        category: String,
        /// Priority.
        priority: Priority,
    },
    /// An offer answering a request. Index 2.
    Offer {
        /// The request's message id.
        request: MsgId,
    },
    /// A status update about a request or offer. Index 3.
    Status {
        /// The message the status is about.
        about: MsgId,
        /// The new state.
        state: State,
    },
    /// Version 2 governance: a proposed roster-log entry, for approval.
    /// `entry` is the entry body exactly as it will be signed and hashed,
    /// `postcard(EntryBody)`. Index 4.
    Proposal {
        /// The proposed entry body.
        #[serde(with = "serde_bytes")]
        entry: Vec<u8>,
    },
    /// Version 2 governance: an identity-key approval of a proposed entry:
    /// Ed25519 over `"tallinn/2 roster-entry" || body` (an `Approval` of the
    /// roster log), sent so that whoever collects a quorum can submit the
    /// entry. Index 5.
    Approval {
        /// The approved entry's hash.
        entry_hash: [u8; 32],
        /// The identity-key signature.
        #[serde(with = "serde_big_array::BigArray")]
        signature: [u8; 64],
    },
    /// History for a late joiner: an earlier message re-shared, carrying
    /// the original envelope exactly as the relay delivered it and its
    /// content key. The recipient verifies the original's signature against
    /// the roster of its own epoch and its content against its key
    /// commitment (`PROTOCOL.md` §18.4). Index 6.
    Share {
        /// The original envelope bytes.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
        /// The original's content key.
        content_key: [u8; 32],
    },
}

impl Kind {
    /// A short lower-case name: `note`, `request`, `offer`, `status`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Note => "note",
            Kind::Request { .. } => "request",
            Kind::Offer { .. } => "offer",
            Kind::Status { .. } => "status",
            Kind::Proposal { .. } => "proposal",
            Kind::Approval { .. } => "approval",
            Kind::Share { .. } => "share",
        }
    }

    /// The message this one refers to by its kind (an offer's request, a
    /// status's subject), if any.
    pub fn refers_to(&self) -> Option<MsgId> {
        match self {
            Kind::Offer { request } => Some(*request),
            Kind::Status { about, .. } => Some(*about),
            Kind::Note
            | Kind::Request { .. }
            | Kind::Proposal { .. }
            | Kind::Approval { .. }
            | Kind::Share { .. } => None,
        }
    }
}

/// A file attached to a message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name as the sender gave it (display only; never used as a path).
    pub name: String,
    /// Media type, e.g. `application/pdf`.
    pub media_type: String,
    /// The content.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("name", &self.name)
            .field("media_type", &self.media_type)
            .field("len", &self.data.len())
            .finish()
    }
}

/// The plaintext of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Kind with its kind-specific fields.
    pub kind: Kind,
    /// TLP 2.0 label.
    pub tlp: Tlp,
    /// The message this replies to, if any.
    pub reply_to: Option<MsgId>,
    /// One-line subject.
    pub subject: String,
    /// Body text.
    pub body: String,
    /// Attached files.
    pub attachments: Vec<Attachment>,
}

impl Message {
    /// A note with the given TLP, subject and body, no reply and no attachments.
    pub fn note(tlp: Tlp, subject: impl Into<String>, body: impl Into<String>) -> Self {
        Self {
            kind: Kind::Note,
            tlp,
            reply_to: None,
            subject: subject.into(),
            body: body.into(),
            attachments: Vec::new(),
        }
    }

    /// The thread root this message belongs to by reference: `reply_to`, else
    /// the message its kind refers to.
    pub fn parent(&self) -> Option<MsgId> {
        self.reply_to.or_else(|| self.kind.refers_to())
    }

    /// postcard encoding.
    ///
    /// # Errors
    /// Never in practice (postcard only fails on unsupported serde types);
    /// reported as a string for completeness.
    pub fn to_bytes(&self) -> Vec<u8> {
        // invariant: every field type is supported by postcard, so encoding
        // into a Vec cannot fail.
        postcard::to_allocvec(self).expect("invariant: postcard encodes Message")
    }

    /// Decodes postcard bytes, refusing trailing bytes.
    ///
    /// # Errors
    /// [`postcard::Error`] on malformed input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let (msg, rest) = postcard::take_from_bytes::<Self>(bytes)?;
        if !rest.is_empty() {
            return Err(postcard::Error::DeserializeBadEncoding);
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tlp_parse_and_display() {
        for t in Tlp::ALL {
            assert_eq!(t.label().parse::<Tlp>().unwrap(), t);
            assert_eq!(t.to_string().parse::<Tlp>().unwrap(), t);
        }
        assert_eq!("amber-strict".parse::<Tlp>().unwrap(), Tlp::AmberStrict);
        assert!("PURPLE".parse::<Tlp>().is_err());
    }

    #[test]
    fn wire_indices_are_stable() {
        // Known-answer encoding of a small note (see PROTOCOL.md worked example).
        let m = Message {
            kind: Kind::Status {
                about: MsgId([0xAB; 16]),
                state: State::Fulfilled,
            },
            tlp: Tlp::AmberStrict,
            reply_to: None,
            subject: "s".into(),
            body: "".into(),
            attachments: vec![],
        };
        let mut expected = vec![3u8];
        expected.extend_from_slice(&[0xAB; 16]);
        expected.extend_from_slice(&[2, 3, 0, 1, b's', 0, 0]);
        assert_eq!(m.to_bytes(), expected);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut b = Message::note(Tlp::Clear, "a", "b").to_bytes();
        b.push(0);
        assert!(Message::from_bytes(&b).is_err());
    }

    fn arb_msg_id() -> impl Strategy<Value = MsgId> {
        any::<[u8; 16]>().prop_map(MsgId)
    }

    fn arb_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Note),
            (0u8..3, ".{0,20}", 0u8..4).prop_map(|(l, c, p)| Kind::Request {
                loe: [Loe::Immediate, Loe::Capability, Loe::Sustainability][l as usize],
                category: c,
                priority: [
                    Priority::Low,
                    Priority::Normal,
                    Priority::High,
                    Priority::Critical
                ][p as usize],
            }),
            arb_msg_id().prop_map(|request| Kind::Offer { request }),
            (arb_msg_id(), 0u8..5).prop_map(|(about, s)| Kind::Status {
                about,
                state: [
                    State::Acknowledged,
                    State::InProgress,
                    State::Fulfilled,
                    State::Declined,
                    State::Closed
                ][s as usize],
            }),
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|entry| Kind::Proposal { entry }),
            (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(h, a, b)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&a);
                signature[32..].copy_from_slice(&b);
                Kind::Approval {
                    entry_hash: h,
                    signature,
                }
            }),
        ]
    }

    pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
        (
            arb_kind(),
            0usize..5,
            proptest::option::of(arb_msg_id()),
            ".{0,40}",
            ".{0,200}",
            proptest::collection::vec(
                (
                    ".{0,10}",
                    ".{0,10}",
                    proptest::collection::vec(any::<u8>(), 0..64),
                ),
                0..3,
            ),
        )
            .prop_map(|(kind, t, reply_to, subject, body, att)| Message {
                kind,
                tlp: Tlp::ALL[t],
                reply_to,
                subject,
                body,
                attachments: att
                    .into_iter()
                    .map(|(name, media_type, data)| Attachment {
                        name,
                        media_type,
                        data,
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn message_round_trip(m in arb_message()) {
            prop_assert_eq!(Message::from_bytes(&m.to_bytes()).unwrap(), m);
        }

        #[test]
        fn message_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::from_bytes(&bytes);
        }
    }
}
