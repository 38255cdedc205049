//! What a client asks of the agent: a message to compose and what became
//! of it, a search and its page of results.

use super::*;

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
