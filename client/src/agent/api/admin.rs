//! The outbox, the quarantine, archive verification, the agent's status
//! and its event stream.

use super::*;

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
