//! The local API's types: what goes over the agent's socket as JSON, and
//! what every CLI command prints from, whether it asked the agent or
//! opened the archive itself. The shapes are documented in PROTOCOL.md
//! §16; a change that breaks them bumps [`API_VERSION`].

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tallinn_common::message::{Attachment, Kind, Loe, Message, MsgId, Priority, State, Tlp};

use crate::archive::{Direction, Filter, Record};

mod admin;
mod compose;
mod error;

pub use admin::*;
pub use compose::*;
pub use error::*;

pub use super::cases::{
    CaseDetail, CaseEventView, CaseList, CaseListRequest, CaseSummary, OfferSummary, ShareItem,
    ShareOutcome, ShareRequest,
};

/// The version in every path (`/v1/...`).
pub const API_VERSION: u32 = 1;

/// A line of effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum LoeView {
    Immediate,
    Capability,
    Sustainability,
}

/// A request's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum PriorityView {
    Low,
    Normal,
    High,
    Critical,
}

impl LoeView {
    /// The protocol's line of effort.
    pub fn to_loe(self) -> Loe {
        match self {
            LoeView::Immediate => Loe::Immediate,
            LoeView::Capability => Loe::Capability,
            LoeView::Sustainability => Loe::Sustainability,
        }
    }
}

impl PriorityView {
    /// The protocol's priority.
    pub fn to_priority(self) -> Priority {
        match self {
            PriorityView::Low => Priority::Low,
            PriorityView::Normal => Priority::Normal,
            PriorityView::High => Priority::High,
            PriorityView::Critical => Priority::Critical,
        }
    }
}

/// A status update's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum StateView {
    Acknowledged,
    InProgress,
    Fulfilled,
    Declined,
    Closed,
}

/// A message kind, as the export writes it (`{"name": "request", ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum KindView {
    /// A note.
    Note,
    /// A request for assistance.
    Request {
        /// Line of effort.
        loe: LoeView,
        /// Free-form category.
        category: String,
        /// Priority.
        priority: PriorityView,
    },
    /// An offer answering a request (its full id).
    Offer {
        /// The request.
        request: String,
    },
    /// A status update about a request or offer (its full id).
    Status {
        /// The message it is about.
        about: String,
        /// The state.
        state: StateView,
    },
    /// Version 2 governance: a proposed roster-log entry (read only here).
    Proposal {
        /// The entry's hash, hex.
        entry_hash: String,
    },
    /// Version 2 governance: an approval of an entry (read only here).
    Approval {
        /// The approved entry's hash, hex.
        entry_hash: String,
    },
    /// History for a late joiner: an earlier message re-shared (the
    /// original is archived as its own record, direction `shared`).
    Share {
        /// The original's id, hex (if its envelope decodes).
        msg_id: Option<String>,
    },
}

impl KindView {
    /// The view of a message kind.
    pub fn of(k: &Kind) -> KindView {
        match k {
            Kind::Note => KindView::Note,
            Kind::Request {
                loe,
                category,
                priority,
            } => KindView::Request {
                loe: match loe {
                    Loe::Immediate => LoeView::Immediate,
                    Loe::Capability => LoeView::Capability,
                    Loe::Sustainability => LoeView::Sustainability,
                },
                category: category.clone(),
                priority: match priority {
                    Priority::Low => PriorityView::Low,
                    Priority::Normal => PriorityView::Normal,
                    Priority::High => PriorityView::High,
                    Priority::Critical => PriorityView::Critical,
                },
            },
            Kind::Offer { request } => KindView::Offer {
                request: request.to_hex(),
            },
            Kind::Status { about, state } => KindView::Status {
                about: about.to_hex(),
                state: match state {
                    State::Acknowledged => StateView::Acknowledged,
                    State::InProgress => StateView::InProgress,
                    State::Fulfilled => StateView::Fulfilled,
                    State::Declined => StateView::Declined,
                    State::Closed => StateView::Closed,
                },
            },
            Kind::Proposal { entry } => KindView::Proposal {
                entry_hash: hex::encode(tallinn_common::roster::entry_hash(entry)),
            },
            Kind::Approval { entry_hash, .. } => KindView::Approval {
                entry_hash: hex::encode(entry_hash),
            },
            Kind::Share { envelope, .. } => KindView::Share {
                msg_id: tallinn_common::envelope::UntrustedEnvelope::decode(envelope)
                    .ok()
                    .map(|e| e.claimed_header().msg_id.to_hex()),
            },
        }
    }

    /// The message kind this view asks for (the four a person composes;
    /// governance kinds are made by `tallinn roster` and `device`).
    ///
    /// # Errors
    /// [`ApiError`] (`bad_request`) for a governance kind or a malformed id.
    pub fn to_kind(&self) -> Result<Kind, ApiError> {
        let id = |s: &str, what: &str| {
            MsgId::from_hex(s).map_err(|_| {
                ApiError::bad_request(format!("{what} must be a full 32-digit message id"))
            })
        };
        Ok(match self {
            KindView::Note => Kind::Note,
            KindView::Request {
                loe,
                category,
                priority,
            } => Kind::Request {
                loe: loe.to_loe(),
                category: category.clone(),
                priority: priority.to_priority(),
            },
            KindView::Offer { request } => Kind::Offer {
                request: id(request, "kind.request")?,
            },
            KindView::Status { about, state } => Kind::Status {
                about: id(about, "kind.about")?,
                state: match state {
                    StateView::Acknowledged => State::Acknowledged,
                    StateView::InProgress => State::InProgress,
                    StateView::Fulfilled => State::Fulfilled,
                    StateView::Declined => State::Declined,
                    StateView::Closed => State::Closed,
                },
            },
            KindView::Proposal { .. } | KindView::Approval { .. } => {
                return Err(ApiError::bad_request(
                    "proposals and approvals are made with `tallinn roster`, not composed",
                ))
            }
            KindView::Share { .. } => {
                return Err(ApiError::bad_request(
                    "shares are made with `tallinn share`, not composed",
                ))
            }
        })
    }
}

/// An attachment's description (its bytes come from `attachment save`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentView {
    /// The name the sender gave (untrusted: escape before printing).
    pub name: String,
    /// Media type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

/// One archived message, decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// Message id (32 hex digits).
    pub msg_id: String,
    /// Position in the archive.
    pub index: u64,
    /// `received` or `sent`.
    pub direction: DirectionView,
    /// Relay sequence number.
    pub seq: u64,
    /// Relay receive (or acceptance) time, unix ms.
    pub received_at_ms: u64,
    /// Sender id.
    pub sender: String,
    /// Channel id.
    pub channel: String,
    /// The sender's clock at sealing, unix ms.
    pub sent_at_ms: u64,
    /// Kind.
    pub kind: KindView,
    /// TLP label without the prefix (`AMBER+STRICT`).
    pub tlp: String,
    /// The message this one answers (32 hex digits).
    pub reply_to: Option<String>,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// Attachments.
    pub attachments: Vec<AttachmentView>,
    /// Shown before (sent messages count as read).
    pub read: bool,
    /// The channel's TLP ceiling this message's label exceeds (at the
    /// envelope's epoch): flagged when it arrived, kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlp_above: Option<String>,
    /// Who shared it with this archive (direction `shared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_by: Option<String>,
}

/// Received or sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum DirectionView {
    Received,
    Sent,
    Shared,
}

impl MessageView {
    /// The view of a record.
    pub fn of(r: &Record, read: bool) -> MessageView {
        MessageView {
            msg_id: r.msg_id.to_hex(),
            index: r.index,
            direction: match r.direction {
                Direction::Received => DirectionView::Received,
                Direction::Sent => DirectionView::Sent,
                Direction::Shared => DirectionView::Shared,
            },
            seq: r.seq,
            received_at_ms: r.received_at_ms,
            sender: r.sender.clone(),
            channel: r.channel.clone(),
            sent_at_ms: r.sent_at_ms,
            kind: KindView::of(&r.message.kind),
            tlp: r.message.tlp.label().to_string(),
            reply_to: r.message.reply_to.map(|m| m.to_hex()),
            subject: r.message.subject.clone(),
            body: r.message.body.clone(),
            attachments: r
                .message
                .attachments
                .iter()
                .map(|a| AttachmentView {
                    name: a.name.clone(),
                    media_type: a.media_type.clone(),
                    size: a.data.len() as u64,
                    sha256: hex::encode(Sha256::digest(&a.data)),
                })
                .collect(),
            read,
            tlp_above: None,
            shared_by: None,
        }
    }

    /// The TLP label, parsed (an unknown label reads as RED, the strictest).
    pub fn tlp(&self) -> Tlp {
        self.tlp.parse().unwrap_or(Tlp::Red)
    }
}

/// One message with what `show` adds: the signature verdict and the
/// sender's fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageDetail {
    /// The message.
    #[serde(flatten)]
    pub message: MessageView,
    /// `valid (...)` or `INVALID: ...`.
    pub signature: String,
    /// The sender's fingerprint (version 2: its device's), or why there
    /// is none.
    pub sender_fingerprint: String,
    /// Version 2: the sender's device label.
    pub sender_device: Option<String>,
    /// Version 2, sent messages: the relay's signed receipt, or why there
    /// is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<ReceiptView>,
}

/// The relay's receipt of a sent message (`GET /v1/messages/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptView {
    /// `valid (signed by relay_key ...)`, `none (...)` or `INVALID: ...`.
    pub status: String,
    /// The relay's seq in the receipt.
    pub seq: Option<u64>,
    /// The relay's clock when it accepted the message, unix ms.
    pub received_at_ms: Option<u64>,
    /// SHA-256 of the envelope the relay accepted (hex).
    pub envelope_sha256: Option<String>,
}
