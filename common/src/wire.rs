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
mod tests {
    use super::*;
    use crate::identity::ParticipantId;
    use proptest::prelude::*;

    fn arb_code() -> impl Strategy<Value = ErrorCode> {
        (0usize..15).prop_map(|i| ErrorCode::ALL[i])
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (".{0,20}", any::<[u8; 32]>())
                .prop_map(|(relay_name, nonce)| Frame::Hello { relay_name, nonce }),
            (".{0,20}", ".{0,20}", any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
                |(participant, device, a, b)| {
                    let mut signature = [0u8; 64];
                    signature[..32].copy_from_slice(&a);
                    signature[32..].copy_from_slice(&b);
                    Frame::Auth {
                        participant,
                        device,
                        signature,
                    }
                }
            ),
            (".{0,20}", ".{0,20}", any::<u64>()).prop_map(|(participant, device, pending)| {
                Frame::Welcome {
                    participant,
                    device,
                    pending,
                }
            }),
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|envelope| Frame::Send { envelope }),
            (any::<[u8; 16]>(), any::<u64>()).prop_map(|(m, seq)| Frame::Accepted {
                msg_id: MsgId(m),
                seq
            }),
            (any::<[u8; 16]>(), arb_code(), ".{0,40}").prop_map(|(m, code, reason)| {
                Frame::Rejected {
                    msg_id: MsgId(m),
                    code,
                    reason,
                }
            }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(seq, received_at_ms, envelope)| Frame::Deliver {
                    seq,
                    received_at_ms,
                    envelope
                }),
            any::<u64>().prop_map(|up_to_seq| Frame::Ack { up_to_seq }),
            (arb_code(), ".{0,40}").prop_map(|(code, reason)| Frame::Error { code, reason }),
            any::<u64>().prop_map(|from| Frame::RosterFetch { from }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..4)
            )
                .prop_map(|(head, first, entries)| Frame::RosterEntries {
                    head,
                    first,
                    entries: entries.into_iter().map(EntryBytes).collect(),
                }),
            proptest::collection::vec(any::<u8>(), 0..100).prop_map(|e| Frame::RosterSubmit {
                entry: EntryBytes(e)
            }),
            (any::<u64>(), any::<[u8; 32]>())
                .prop_map(|(index, hash)| Frame::RosterAccepted { index, hash }),
            (
                any::<u64>(),
                any::<[u8; 16]>(),
                any::<u64>(),
                any::<[u8; 32]>()
            )
                .prop_map(|(seq, m, received_at_ms, envelope_hash)| Frame::Receipt {
                    receipt: crate::evidence::Receipt {
                        body: crate::evidence::ReceiptBody {
                            seq,
                            msg_id: MsgId(m),
                            received_at_ms,
                            envelope_hash,
                        },
                        signature: [7; 64],
                    }
                }),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)).prop_map(|b| {
                Frame::CheckpointLatest {
                    checkpoint: b.map(|body| SignedCheckpoint {
                        body,
                        signature: [1; 64],
                    }),
                }
            }),
            proptest::collection::vec(any::<u8>(), 0..100).prop_map(|body| Frame::Checkpoint {
                checkpoint: SignedCheckpoint {
                    body,
                    signature: [2; 64],
                }
            }),
        ]
    }

    #[test]
    fn known_answer_encodings() {
        // CheckpointLatest{None}: variant 14, option tag 0.
        assert_eq!(
            encode_frame(&Frame::CheckpointLatest { checkpoint: None }),
            vec![0, 0, 0, 2, 14, 0]
        );
        // RosterFetch{from: 5}: variant 9, varint 5.
        assert_eq!(
            encode_frame(&Frame::RosterFetch { from: 5 }),
            vec![0, 0, 0, 2, 9, 5]
        );
        // RosterSubmit{entry: [1, 2]}: variant 11, length-prefixed bytes.
        assert_eq!(
            encode_frame(&Frame::RosterSubmit {
                entry: EntryBytes(vec![1, 2])
            }),
            vec![0, 0, 0, 4, 11, 2, 1, 2]
        );
        assert_eq!(
            encode_frame(&Frame::Ack { up_to_seq: 300 }),
            vec![0, 0, 0, 3, 7, 0xAC, 0x02]
        );
        assert_eq!(
            encode_frame(&Frame::Error {
                code: ErrorCode::ShuttingDown,
                reason: "bye".into()
            }),
            vec![0, 0, 0, 6, 8, 11, 3, b'b', b'y', b'e']
        );
    }

    #[test]
    fn error_codes_are_a_closed_documented_set() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i);
            assert_eq!(postcard::to_allocvec(c).unwrap(), vec![i as u8]);
            assert_eq!(
                ErrorCode::from_close_code(u64::from(c.close_code())),
                Some(*c)
            );
            assert_eq!(c.as_str().parse::<ErrorCode>(), Ok(*c));
        }
        assert_eq!(ErrorCode::from_close_code(0), None);
        let n = ErrorCode::ALL.len();
        assert_eq!(ErrorCode::from_close_code(n as u64 + 1), None);
        assert!(postcard::from_bytes::<ErrorCode>(&[n as u8]).is_err());
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading() {
        assert_eq!(
            frame_len([0xFF; 4], 1024),
            Err(WireError::TooLarge {
                len: u64::from(u32::MAX),
                max: 1024
            })
        );
        assert_eq!(frame_len([0; 4], 1024), Err(WireError::Empty));
        let mut d = FrameDecoder::new(1024);
        d.extend(&[0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(d.next_frame(), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn decoder_handles_split_and_coalesced_frames() {
        let frames = vec![
            Frame::Ack { up_to_seq: 1 },
            Frame::Send {
                envelope: vec![1; 100],
            },
            Frame::Ack { up_to_seq: 2 },
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            encode_frame_into(f, &mut bytes);
        }
        let mut d = FrameDecoder::new(1024);
        let mut out = Vec::new();
        for chunk in bytes.chunks(3) {
            d.extend(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        assert_eq!(decode_frame(&[99]), Err(WireError::Malformed));
        let mut ok = encode_frame(&Frame::Ack { up_to_seq: 1 });
        ok.push(0);
        assert_eq!(decode_frame(&ok[4..]), Err(WireError::Malformed));
    }

    #[test]
    fn auth_is_bound_to_nonce_exporter_device_and_key() {
        let ident = Identity::generate(ParticipantId::new("UA").unwrap());
        let other = Identity::generate(ParticipantId::new("EE").unwrap());
        let (nonce, exporter) = ([1u8; 32], [2u8; 32]);
        let Frame::Auth { signature, .. } = sign_auth(&ident, "front-office", &nonce, &exporter)
        else {
            panic!("sign_auth returns Auth");
        };
        let key = ident.public().sign_key;
        assert!(verify_auth(&key, "front-office", &nonce, &exporter, &signature).is_ok());
        assert!(verify_auth(&key, "back-office", &nonce, &exporter, &signature).is_err());
        assert!(verify_auth(&key, "front-office", &[3; 32], &exporter, &signature).is_err());
        assert!(verify_auth(&key, "front-office", &nonce, &[3; 32], &signature).is_err());
        let other_key = other.public().sign_key;
        assert_eq!(
            verify_auth(&other_key, "front-office", &nonce, &exporter, &signature),
            Err(WireError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn frame_round_trip(f in arb_frame()) {
            let bytes = encode_frame(&f);
            let len = frame_len(bytes[..4].try_into().unwrap(), u32::MAX).unwrap();
            prop_assert_eq!(len, bytes.len() - 4);
            prop_assert_eq!(decode_frame(&bytes[4..]).unwrap(), f);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = decode_frame(&bytes);
            let mut d = FrameDecoder::new(512);
            d.extend(&bytes);
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }

    #[test]
    fn decoding_is_linear_in_the_bytes_received() {
        // 1.25 MB of the smallest frames (Ack), arriving in 1 KiB chunks
        // that split frames anywhere.
        let one = encode_frame(&Frame::Ack { up_to_seq: 1 });
        let n = 1_250_000 / one.len();
        let stream: Vec<u8> = one.iter().copied().cycle().take(n * one.len()).collect();
        let mut d = FrameDecoder::new(1024);
        let mut frames = 0;
        for chunk in stream.chunks(1000) {
            d.extend(chunk);
            while let Some(_f) = d.next_frame().unwrap() {
                frames += 1;
            }
        }
        assert_eq!(frames, n);
        assert_eq!(d.buffered(), 0);
        // Only a partial frame is carried over per chunk: far below one
        // move of the whole buffer per frame (which was ~n * 500 bytes).
        let chunks = stream.len().div_ceil(1000) as u64;
        assert!(
            d.bytes_moved() <= chunks * one.len() as u64,
            "moved {} bytes for {} received",
            d.bytes_moved(),
            stream.len()
        );
        // One extend of everything, then draining: no moves at all.
        let mut d = FrameDecoder::new(1024);
        d.extend(&stream);
        while d.next_frame().unwrap().is_some() {}
        assert_eq!(d.bytes_moved(), 0);
    }
}
