//! Session-stream frames, their length-prefixed codec, error codes and the
//! authentication transcript.
//!
//! # Framing
//! Every frame on the session stream is a `u32` big-endian length followed by
//! that many bytes of `postcard(Frame)`. A receiver checks the length against
//! its configured maximum *before* reading or allocating the payload
//! ([`frame_len`]); a frame over the maximum ends the connection with
//! [`ErrorCode::TooLarge`].
//!
//! # Why byte buffers, not async traits
//! `common` has no I/O dependency (no tokio, no quinn, no futures-io): the codec
//! works on byte slices. A driver reads exactly 4 bytes, calls [`frame_len`],
//! reads exactly that many bytes, and calls [`decode_frame`]; or it feeds
//! arbitrary chunks into a [`FrameDecoder`], which enforces the same maximum
//! as soon as the 4 length bytes are in. Both are tested without a socket.
//!
//! # Authentication
//! The relay sends [`Frame::Hello`] with a fresh 32-byte nonce; the client
//! answers [`Frame::Auth`] with an Ed25519 signature over
//! [`auth_transcript`]: `"tallinn/1 auth" || nonce || exporter || UTF-8(device)`,
//! where `exporter` is the 32-byte TLS exporter value (RFC 8446 section 7.5)
//! with label `"EXPORTER-tallinn-auth"` and context = nonce. The exporter is
//! unique per TLS session, so a captured `Auth` is useless on any other
//! connection.
//!
//! # QUIC close codes
//! A connection closed because of an [`ErrorCode`] uses the application error
//! code [`ErrorCode::close_code`] (its index + 1); `0` is a normal close.

use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;

use crate::defaults;
use crate::evidence::{Receipt, SignedCheckpoint};
use crate::identity::Identity;
use crate::message::MsgId;

/// The closed set of error codes used in `Rejected` and `Error` frames and
/// QUIC close codes. Variant order is the wire order (postcard index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// 0: a frame other than `Auth` arrived before `Welcome`, or auth was not
    /// completed in time.
    Unauthenticated,
    /// 1: the participant (auth) or the envelope's sender is not in the roster.
    UnknownParticipant,
    /// 2: an auth or envelope signature does not verify.
    BadSignature,
    /// 3: the channel does not exist, or the sender is not a member of it.
    NotAMember,
    /// 4: an observer tried to post.
    ReadOnly,
    /// 5: the envelope's recipients are not exactly the channel's members and
    /// observers except the sender.
    RecipientsMismatch,
    /// 6: this msg_id was already accepted.
    Duplicate,
    /// 7: a frame or envelope exceeds the configured maximum.
    TooLarge,
    /// 8: the envelope's `sent_at_ms` is too far from the relay's clock.
    ClockSkew,
    /// 9: the participant exceeded its send rate, or a connection limit.
    RateLimited,
    /// 10: undecodable frame or envelope (closes the connection).
    Malformed,
    /// 11: the relay is shutting down; reconnect later.
    ShuttingDown,
    /// 12: a relay-side failure (e.g. storage); retry later.
    Internal,
    /// 13: another session of the same participant and device took over
    /// this one's cursor (one reader per cursor). Not retried automatically:
    /// two installations sharing a device label would take turns forever.
    Replaced,
    /// 14: the sender's messages awaiting delivery at the relay exceed its
    /// storage quota; retry once recipients have collected some.
    QuotaExceeded,
    /// 15: the envelope was sealed against a roster epoch that is no longer
    /// current (beyond the grace period); the reason names the current
    /// epoch. The client fetches the roster log and re-seals.
    StaleRoster,
    /// 16: the device was revoked from the roster (at `Auth`, or when a
    /// `Devices` entry removes it mid-session). Permanent: not retried.
    Revoked,
    /// 17: a submitted roster-log entry was refused (invalid, or not the
    /// next entry); the reason says which rule it broke.
    BadRosterEntry,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::Unauthenticated,
        ErrorCode::UnknownParticipant,
        ErrorCode::BadSignature,
        ErrorCode::NotAMember,
        ErrorCode::ReadOnly,
        ErrorCode::RecipientsMismatch,
        ErrorCode::Duplicate,
        ErrorCode::TooLarge,
        ErrorCode::ClockSkew,
        ErrorCode::RateLimited,
        ErrorCode::Malformed,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::Replaced,
        ErrorCode::QuotaExceeded,
        ErrorCode::StaleRoster,
        ErrorCode::Revoked,
        ErrorCode::BadRosterEntry,
    ];

    /// The snake_case name used in docs, logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::UnknownParticipant => "unknown_participant",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::NotAMember => "not_a_member",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::RecipientsMismatch => "recipients_mismatch",
            ErrorCode::Duplicate => "duplicate",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::ClockSkew => "clock_skew",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Malformed => "malformed",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::Replaced => "replaced",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::StaleRoster => "stale_roster",
            ErrorCode::Revoked => "revoked",
            ErrorCode::BadRosterEntry => "bad_roster_entry",
        }
    }

    /// The wire index (postcard variant index).
    pub fn index(&self) -> u32 {
        // invariant: ALL lists every variant, so the position always exists.
        ErrorCode::ALL
            .iter()
            .position(|c| c == self)
            .map(|i| i as u32)
            .unwrap_or(u32::MAX)
    }

    /// The QUIC application close code for this error: index + 1.
    pub fn close_code(&self) -> u32 {
        self.index() + 1
    }

    /// The error code of a QUIC application close code, if it is one.
    pub fn from_close_code(code: u64) -> Option<ErrorCode> {
        let i = usize::try_from(code.checked_sub(1)?).ok()?;
        ErrorCode::ALL.get(i).copied()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ErrorCode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}

/// One roster-log entry on the wire: `postcard(SignedEntry)` bytes (see
/// [`crate::roster::SignedEntry`]), decoded and checked by the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryBytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// A session-stream frame. Variant order is the wire order (postcard index
/// 0-15; 9-12 are the roster log of version 2, 13-15 its evidence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// 0, relay -> client, first frame: relay name and the auth nonce.
    Hello {
        /// Operator-chosen relay name (display only).
        relay_name: String,
        /// Fresh random nonce for this connection.
        nonce: [u8; 32],
    },
    /// 1, client -> relay: authentication (see [`auth_transcript`]).
    Auth {
        /// Participant id.
        participant: String,
        /// Device label (1-32 chars of `A-Za-z0-9_-`).
        device: String,
        /// Ed25519 signature over the auth transcript.
        #[serde(with = "BigArray")]
        signature: [u8; 64],
    },
    /// 2, relay -> client: authentication succeeded.
    Welcome {
        /// The authenticated participant.
        participant: String,
        /// The authenticated device.
        device: String,
        /// Messages waiting for this device.
        pending: u64,
    },
    /// 3, client -> relay: submit an envelope (`postcard(Envelope)` bytes).
    Send {
        /// The encoded envelope.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// 4, relay -> client: the envelope is durably stored.
    Accepted {
        /// The envelope's msg_id.
        msg_id: MsgId,
        /// The relay's sequence number for it.
        seq: u64,
    },
    /// 5, relay -> client: the envelope was refused; the connection stays up.
    Rejected {
        /// The envelope's msg_id (all zero if it could not be parsed).
        msg_id: MsgId,
        /// Why.
        code: ErrorCode,
        /// Human-readable detail.
        reason: String,
    },
    /// 6, relay -> client: a stored envelope for this device.
    Deliver {
        /// Relay sequence number (strictly increasing per device).
        seq: u64,
        /// Relay clock when it accepted the envelope, ms since the epoch.
        received_at_ms: u64,
        /// The encoded envelope, exactly as the sender sent it.
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// 7, client -> relay: every delivery up to and including `up_to_seq` is
    /// durable in the client's archive.
    Ack {
        /// Cumulative sequence number.
        up_to_seq: u64,
    },
    /// 8, either direction: fatal error; the sender closes the connection.
    Error {
        /// Why.
        code: ErrorCode,
        /// Human-readable detail.
        reason: String,
    },
    /// 9, client -> relay: send the roster log from index `from` on, and
    /// push every later entry to this session as it is appended.
    RosterFetch {
        /// First index wanted (0 for the whole log).
        from: u64,
    },
    /// 10, relay -> client: roster-log entries `first..first+entries.len()`
    /// (an answer to `RosterFetch`, or a push), and the relay's head epoch.
    /// A client that has fewer entries than `head + 1` fetches again from
    /// the next index (an answer is bounded by the frame size).
    RosterEntries {
        /// The relay's current epoch (index of its last entry).
        head: u64,
        /// Index of the first entry below.
        first: u64,
        /// The entries, in index order.
        entries: Vec<EntryBytes>,
    },
    /// 11, client -> relay: append this entry to the roster log. The relay
    /// answers `RosterAccepted` or `Rejected` with code `bad_roster_entry`
    /// (msg_id all zero), and pushes an accepted entry to every session that
    /// fetched the log.
    RosterSubmit {
        /// The entry.
        entry: EntryBytes,
    },
    /// 12, relay -> client: the submitted entry is durably appended.
    RosterAccepted {
        /// Its index (the new epoch).
        index: u64,
        /// Its entry hash.
        hash: [u8; 32],
    },
    /// 13, relay -> client (version-2 deployments, instead of `Accepted`):
    /// the envelope is durably stored, with the relay's signed receipt
    /// (seq, msg_id, received_at_ms, SHA-256 of the envelope).
    Receipt {
        /// The receipt.
        receipt: Receipt,
    },
    /// 14, relay -> client (version-2 deployments): the latest archive
    /// checkpoint the relay holds for this device. Sent right after
    /// `Welcome`, before any delivery, and as the answer to `Checkpoint`.
    CheckpointLatest {
        /// The checkpoint, if the device ever sent one.
        checkpoint: Option<SignedCheckpoint>,
    },
    /// 15, client -> relay (version 2): a checkpoint of this device's
    /// archive, signed with its `sign_key`. The relay checks it, keeps it
    /// durably as the device's latest and answers `CheckpointLatest`.
    Checkpoint {
        /// The checkpoint.
        checkpoint: SignedCheckpoint,
    },
}

impl Frame {
    /// The frame's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Auth { .. } => "Auth",
            Frame::Welcome { .. } => "Welcome",
            Frame::Send { .. } => "Send",
            Frame::Accepted { .. } => "Accepted",
            Frame::Rejected { .. } => "Rejected",
            Frame::Deliver { .. } => "Deliver",
            Frame::Ack { .. } => "Ack",
            Frame::Error { .. } => "Error",
            Frame::RosterFetch { .. } => "RosterFetch",
            Frame::RosterEntries { .. } => "RosterEntries",
            Frame::RosterSubmit { .. } => "RosterSubmit",
            Frame::RosterAccepted { .. } => "RosterAccepted",
            Frame::Receipt { .. } => "Receipt",
            Frame::CheckpointLatest { .. } => "CheckpointLatest",
            Frame::Checkpoint { .. } => "Checkpoint",
        }
    }
}

/// Errors of the frame codec and of session authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix announces a frame over the configured maximum. Raised
    /// before the payload is read or allocated.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: u32,
    },
    /// The payload is not a valid `postcard(Frame)` (or has trailing bytes).
    #[error("malformed frame")]
    Malformed,
    /// A zero-length frame (never valid: every frame has a variant index).
    #[error("empty frame")]
    Empty,
    /// An auth signature does not verify.
    #[error("bad auth signature")]
    BadSignature,
}

impl WireError {
    /// The error code to send or close with.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::TooLarge { .. } => ErrorCode::TooLarge,
            WireError::Malformed | WireError::Empty => ErrorCode::Malformed,
            WireError::BadSignature => ErrorCode::BadSignature,
        }
    }
}

/// Encodes a frame with its 4-byte big-endian length prefix.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame_into(frame, &mut out);
    out
}

/// Appends a length-prefixed frame to `out`.
pub fn encode_frame_into(frame: &Frame, out: &mut Vec<u8>) {
    // invariant: Frame holds only integers, arrays, strings and byte vectors;
    // postcard encoding into a Vec cannot fail.
    let payload = postcard::to_allocvec(frame).expect("invariant: frame encodes");
    // invariant: payloads are bounded by the sender's own data (far below
    // 4 GiB); a larger one saturates and is refused by every receiver.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.reserve(4 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
}

/// Interprets a 4-byte length prefix, refusing a frame over `max` (or empty).
///
/// # Errors
/// [`WireError::TooLarge`], [`WireError::Empty`].
pub fn frame_len(prefix: [u8; 4], max: u32) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix);
    if len > max {
        return Err(WireError::TooLarge {
            len: u64::from(len),
            max,
        });
    }
    if len == 0 {
        return Err(WireError::Empty);
    }
    Ok(len as usize)
}

/// Decodes one frame payload (without the length prefix), refusing trailing bytes.
///
/// # Errors
/// [`WireError::Malformed`].
pub fn decode_frame(payload: &[u8]) -> Result<Frame, WireError> {
    match postcard::take_from_bytes::<Frame>(payload) {
        Ok((frame, [])) => Ok(frame),
        _ => Err(WireError::Malformed),
    }
}

/// Incremental decoder: feed bytes as they arrive, take frames out.
/// Holds at most one partial frame of at most `max` bytes (plus what one
/// `extend` call adds beyond it).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the first byte not yet returned as a frame is in `buf`.
    start: usize,
    max: u32,
    /// Bytes moved by compaction, for the linear-cost bound (tests).
    moved: u64,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max` payload bytes.
    pub fn new(max: u32) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max,
            moved: 0,
        }
    }

    /// Appends received bytes. Consumed bytes are dropped here, once per
    /// call (moving only the unconsumed tail), never per frame: decoding n
    /// bytes costs O(n) whatever the frame sizes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.moved += (self.buf.len() - self.start) as u64;
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes moved by compaction so far (a cost counter; see `extend`).
    pub fn bytes_moved(&self) -> u64 {
        self.moved
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// [`WireError::TooLarge`] as soon as an oversized length prefix is seen;
    /// [`WireError::Malformed`] / [`WireError::Empty`] for a bad frame. After an
    /// error the stream is unusable (close the connection).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        let rest = self.buf.get(self.start..).unwrap_or_default();
        let Some(prefix) = rest.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = frame_len(*prefix, self.max)?;
        let Some(payload) = rest.get(4..4 + len) else {
            return Ok(None);
        };
        let frame = decode_frame(payload)?;
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }
}

/// The bytes an `Auth` signature covers:
/// `"tallinn/1 auth" || nonce || exporter || UTF-8(device)`.
pub fn auth_transcript(nonce: &[u8; 32], exporter: &[u8; 32], device: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(defaults::AUTH_SIGNATURE_CONTEXT.len() + 64 + device.len());
    t.extend_from_slice(defaults::AUTH_SIGNATURE_CONTEXT);
    t.extend_from_slice(nonce);
    t.extend_from_slice(exporter);
    t.extend_from_slice(device.as_bytes());
    t
}

/// Builds the `Auth` frame answering `Hello{nonce}` on a TLS session whose
/// exporter value is `exporter`.
pub fn sign_auth(
    identity: &Identity,
    device: &str,
    nonce: &[u8; 32],
    exporter: &[u8; 32],
) -> Frame {
    Frame::Auth {
        participant: identity.id().to_string(),
        device: device.to_string(),
        signature: identity.sign(&auth_transcript(nonce, exporter, device)),
    }
}

/// Verifies an `Auth` signature.
///
/// # Errors
/// [`WireError::BadSignature`].
pub fn verify_auth(
    key: &VerifyingKey,
    device: &str,
    nonce: &[u8; 32],
    exporter: &[u8; 32],
    signature: &[u8; 64],
) -> Result<(), WireError> {
    key.verify_strict(
        &auth_transcript(nonce, exporter, device),
        &Signature::from_bytes(signature),
    )
    .map_err(|_| WireError::BadSignature)
}

#[cfg(test)]
mod tests;
