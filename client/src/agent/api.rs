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

/// A message to compose (`POST /v1/messages`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComposeRequest {
    /// Channel to post in (empty when `to` names a direct conversation).
    #[serde(default)]
    pub channel: String,
    /// A direct conversation instead of a channel: the participants to
    /// address (the sender is in it; the beneficiary is added if missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Kind.
    pub kind: KindView,
    /// TLP label (`AMBER`, `TLP:RED`, ...).
    pub tlp: String,
    /// Full id of the message answered.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Subject (not empty).
    pub subject: String,
    /// Body.
    #[serde(default)]
    pub body: String,
    /// Attachments, bytes in base64.
    #[serde(default)]
    pub attachments: Vec<AttachmentInput>,
}

/// An attachment to send.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachmentInput {
    /// File name.
    pub name: String,
    /// Media type.
    pub media_type: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub data_b64: String,
}

impl ComposeRequest {
    /// The request for a composed message.
    pub fn of(channel: &str, m: &Message) -> ComposeRequest {
        ComposeRequest {
            channel: channel.to_string(),
            to: Vec::new(),
            kind: KindView::of(&m.kind),
            tlp: m.tlp.label().to_string(),
            reply_to: m.reply_to.map(|r| r.to_hex()),
            subject: m.subject.clone(),
            body: m.body.clone(),
            attachments: m
                .attachments
                .iter()
                .map(|a| AttachmentInput {
                    name: a.name.clone(),
                    media_type: a.media_type.clone(),
                    data_b64: B64.encode(&a.data),
                })
                .collect(),
        }
    }

    /// The message this asks to send, checked.
    ///
    /// # Errors
    /// [`ApiError`] (`bad_request`) naming the field at fault.
    pub fn to_message(&self) -> Result<Message, ApiError> {
        if self.subject.trim().is_empty() {
            return Err(ApiError::bad_request("the subject is empty"));
        }
        let tlp: Tlp = self
            .tlp
            .parse()
            .map_err(|e: tallinn_common::message::TlpParseError| {
                ApiError::bad_request(e.to_string())
            })?;
        let reply_to = match &self.reply_to {
            Some(r) => Some(MsgId::from_hex(r).map_err(|_| {
                ApiError::bad_request("reply_to must be a full 32-digit message id")
            })?),
            None => None,
        };
        let mut attachments = Vec::new();
        for a in &self.attachments {
            attachments.push(Attachment {
                name: a.name.clone(),
                media_type: a.media_type.clone(),
                data: B64.decode(&a.data_b64).map_err(|_| {
                    ApiError::bad_request(format!(
                        "attachment {:?}: data_b64 is not base64",
                        a.name
                    ))
                })?,
            });
        }
        Ok(Message {
            kind: self.kind.to_kind()?,
            tlp,
            reply_to,
            subject: self.subject.clone(),
            body: self.body.clone(),
            attachments,
        })
    }
}

/// What became of a composed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum SendOutcome {
    /// Accepted by the relay (durable there).
    Sent {
        /// Message id.
        msg_id: String,
        /// Relay sequence number.
        seq: u64,
        /// Where it went: the channel, or the direct conversation (`@A+B`).
        #[serde(default)]
        channel: String,
        /// Participants the direct-conversation rule added (the beneficiary).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        added: Vec<String>,
    },
    /// Durable in the outbox, not yet accepted: the relay is unreachable
    /// or did not answer in time; it is sent on the next connection.
    Queued {
        /// Message id.
        msg_id: String,
        /// Why it is not yet accepted.
        reason: String,
        /// Where it goes.
        #[serde(default)]
        channel: String,
        /// Participants the direct-conversation rule added.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        added: Vec<String>,
    },
}

/// Search criteria (`POST /v1/search`); every field optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchRequest {
    /// Channel id.
    pub channel: Option<String>,
    /// Sender id.
    pub from: Option<String>,
    /// note, request, offer, status.
    pub kind: Option<String>,
    /// TLP label.
    pub tlp: Option<String>,
    /// Received at or after, unix ms.
    pub since_ms: Option<u64>,
    /// Received before, unix ms.
    pub until_ms: Option<u64>,
    /// Words that must all appear.
    pub text: Option<String>,
    /// `received` or `sent` only.
    pub direction: Option<DirectionView>,
    /// Only unread messages.
    pub unread_only: bool,
    /// At most this many (default 20, at most 10 000).
    pub limit: Option<usize>,
}

/// The most a search returns at once.
pub const MAX_LIMIT: usize = 10_000;

impl SearchRequest {
    /// The archive filter and limit.
    ///
    /// # Errors
    /// [`ApiError`] (`bad_request`) for an unknown TLP label.
    pub fn to_filter(&self) -> Result<(Filter, usize), ApiError> {
        let tlp = match &self.tlp {
            Some(t) => Some(
                t.parse::<Tlp>()
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
            ),
            None => None,
        };
        Ok((
            Filter {
                channel: self.channel.clone(),
                from: self.from.clone(),
                kind: self.kind.clone(),
                tlp,
                since_ms: self.since_ms,
                until_ms: self.until_ms,
                text: self.text.clone(),
                direction: self.direction.map(|d| match d {
                    DirectionView::Received => Direction::Received,
                    DirectionView::Sent => Direction::Sent,
                    DirectionView::Shared => Direction::Shared,
                }),
                unread_only: self.unread_only,
            },
            self.limit.unwrap_or(crate::defaults::PAGE).min(MAX_LIMIT),
        ))
    }
}

/// A page of messages, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagePage {
    /// The messages.
    pub messages: Vec<MessageView>,
    /// More messages match than the limit let through.
    pub more: bool,
    /// Version 2: the chair in the roster in force (who posts announcements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chair: Option<String>,
}

/// One outbox entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Message id.
    pub msg_id: String,
    /// Channel.
    pub channel: String,
    /// Subject.
    pub subject: String,
    /// When it was composed, unix ms.
    pub created_at_ms: u64,
    /// The relay's permanent refusal, if any (then it is no longer sent).
    pub refused: Option<RefusalView>,
}

/// A permanent refusal of an outbox entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusalView {
    /// Error code.
    pub code: String,
    /// The relay's reason.
    pub reason: String,
    /// When, unix ms.
    pub at_ms: u64,
}

/// One quarantined delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineItem {
    /// Relay seq.
    pub seq: u64,
    /// Relay receive time, unix ms.
    pub received_at_ms: u64,
    /// Why it failed.
    pub reason: String,
    /// The sender the envelope claims (unverified).
    pub claimed_sender: Option<String>,
    /// The channel the envelope claims (unverified).
    pub claimed_channel: Option<String>,
    /// Envelope size.
    pub envelope_len: usize,
}

/// What `POST /v1/quarantine/retry` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineRetry {
    /// Deliveries that verify now and were archived.
    pub archived: usize,
    /// Still quarantined.
    pub left: usize,
}

/// `POST /v1/quarantine/purge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeRequest {
    /// Delete what was received before this time, unix ms.
    pub before_ms: u64,
}

/// What a purge deleted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeResult {
    /// How many deliveries.
    pub purged: usize,
}

/// `POST /v1/archive/verify`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyRequest {
    /// Also re-decrypt every envelope and compare it with the record.
    pub deep: bool,
}

/// What `archive verify` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyView {
    /// No problem found.
    pub ok: bool,
    /// Records checked.
    pub records: u64,
    /// The head hash, hex.
    pub head_hash: String,
    /// The first problem.
    pub first_error: Option<VerifyProblem>,
}

/// The first broken record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyProblem {
    /// Its index.
    pub index: u64,
    /// What is wrong.
    pub reason: String,
}

/// The agent's state (`GET /v1/status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    /// API version.
    pub api: u32,
    /// Agent process id.
    pub pid: u32,
    /// Participant id.
    pub participant: String,
    /// Device label.
    pub device: String,
    /// Relay address.
    pub relay: String,
    /// Whether a relay session is up.
    pub connected: bool,
    /// Sessions so far.
    pub sessions: u64,
    /// Records in the archive.
    pub archive_records: u64,
    /// Entries in the outbox (pending and refused).
    pub outbox: usize,
    /// Version 2: the roster epoch in force.
    pub roster_epoch: Option<u64>,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

/// One event on `GET /v1/events` (one JSON object a line).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum EventView {
    /// The stream is open (first line).
    Hello {
        /// Participant id.
        participant: String,
        /// Device label.
        device: String,
        /// Whether a relay session is up now.
        connected: bool,
    },
    /// A relay session came up.
    Connected {
        /// Deliveries waiting.
        pending: u64,
    },
    /// The relay session was lost; the agent reconnects.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A new message is in the archive.
    Message {
        /// The message.
        message: Box<MessageView>,
    },
    /// A delivery failed verification and was quarantined.
    Quarantined {
        /// Relay seq.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// Our message was accepted.
    Accepted {
        /// Message id.
        msg_id: String,
        /// Relay seq.
        seq: u64,
    },
    /// This stream fell behind and skipped events (the archive has them).
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// An error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status (not in the body).
    #[serde(skip, default = "internal_status")]
    pub status: u16,
    /// Stable code: `bad_request`, `not_found`, `ambiguous_id`,
    /// `not_allowed`, `too_large`, `rejected`, `forbidden`, `internal`.
    pub code: String,
    /// What a person reads.
    pub message: String,
}

fn internal_status() -> u16 {
    500
}

/// The body of an error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

impl ApiError {
    /// Any error with a status and code.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(400, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(404, "not_found", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(500, "internal", message)
    }
}

impl From<crate::ids::IdError> for ApiError {
    fn from(e: crate::ids::IdError) -> ApiError {
        use crate::ids::IdError;
        let (status, code) = match &e {
            IdError::NotHex(_) | IdError::TooShort(_) => (400, "bad_request"),
            IdError::Unknown { .. } => (404, "not_found"),
            IdError::Ambiguous { .. } => (409, "ambiguous_id"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<crate::archive::ArchiveError> for ApiError {
    fn from(e: crate::archive::ArchiveError) -> ApiError {
        ApiError::internal(format!("archive: {e}"))
    }
}

impl From<crate::client::ClientError> for ApiError {
    fn from(e: crate::client::ClientError) -> ApiError {
        use crate::client::ClientError as E;
        let (status, code) = match &e {
            E::NotAllowed(_) | E::Seal(_) | E::AboveTlp { .. } => (403, "not_allowed"),
            E::TooLarge { .. } => (413, "too_large"),
            E::Rejected { .. } => (422, "rejected"),
            _ => (500, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}
