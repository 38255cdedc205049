//! One client session: authentication, the send path, delivery and acks.
//!
//! The protocol decisions are plain functions ([`check_auth`],
//! [`check_send`], [`TokenBucket`]) unit-tested without a socket; the async
//! driver ([`run`]) only reads frames, calls them, talks to the store through
//! the [`Committer`](crate::commit::Committer) and writes frames.
//!
//! ```text
//!            ┌──────── reader (this task) ───────┐
//!  stream ──▶│ Send → check_send → committer ────┼──▶ waiter task → Accepted/Rejected ─┐
//!            │ Ack  → committer.ack, wake ───────┼──▶ delivery task ─ Deliver ─────────┤
//!            └───────────────────────────────────┘      ▲ live queue (router)            ▼
//!                                                        └ store (backlog, catch-up)   writer task ──▶ stream
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quinn::{Connection, RecvStream, SendStream, VarInt};
use rand::Rng as _;
use tallinn_common::defaults::{AUTH_EXPORTER_LABEL, AUTH_EXPORTER_LEN, SESSION_PREAMBLE};
use tallinn_common::envelope::{EnvelopeError, UntrustedEnvelope, VerifiedEnvelope};
use tallinn_common::identity::DeviceId;
use tallinn_common::message::MsgId;
use tallinn_common::roster::Roster;
use tallinn_common::text::escape_line as esc;
use tallinn_common::wire::{self, ErrorCode, Frame, WireError};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use crate::commit::Committer;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::router::{deliver_frame, ConnHandle, Delivery, RegisterError, Router};
use crate::store::{Appended, LogEntry, Store};

/// Largest frame accepted before authentication: an `Auth` is under 200 bytes.
const MAX_AUTH_FRAME: u32 = 1024;

/// Time allowed to write a final `Error` frame before closing anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    tallinn_common::unix_ms(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// State shared by every session of a server.
pub(crate) struct Shared {
    pub relay_name: String,
    pub limits: Limits,
    pub store: Arc<dyn Store>,
    pub committer: Committer,
    pub failstop: Arc<crate::commit::FailStop>,
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    /// Send buckets per participant: messages and bytes.
    pub buckets: Mutex<HashMap<String, (TokenBucket, TokenBucket)>>,
    /// Authentication buckets per participant (spent after the signature).
    pub auth_buckets: Mutex<HashMap<String, TokenBucket>>,
    /// Authentication buckets per remote address (spent before any check).
    pub auth_ip_buckets: Mutex<HashMap<std::net::IpAddr, TokenBucket>>,
    pub shutdown: watch::Receiver<bool>,
    pub open_connections: AtomicU64,
    pub admission: Mutex<Admitted>,
}

/// The admission state and how to evict each unauthenticated connection.
pub(crate) struct Admitted {
    pub state: crate::admission::Admission,
    pub evictors: HashMap<u64, Arc<tokio::sync::Notify>>,
}

/// A connection's place in the admission state; leaving it (however the
/// task ends) frees the place.
pub(crate) struct Ticket {
    pub id: u64,
    pub evicted: Arc<tokio::sync::Notify>,
    pub shared: Arc<Shared>,
}

impl Ticket {
    /// Applies `event` to this connection's admission entry; either way the
    /// connection can no longer be evicted.
    fn leave(&self, event: fn(&mut crate::admission::Admission, u64)) {
        let mut a = self
            .shared
            .admission
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        event(&mut a.state, self.id);
        a.evictors.remove(&self.id);
    }

    fn authenticated(&self) {
        self.leave(crate::admission::Admission::on_authenticated);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.leave(crate::admission::Admission::on_closed);
    }
}

impl Shared {
    pub fn roster(&self) -> Arc<Roster> {
        self.router.roster()
    }

    /// Takes one message and `bytes` bytes from the participant's send
    /// buckets, or nothing if either falls short.
    fn take_token(&self, participant: &str, bytes: usize) -> bool {
        let l = &self.limits;
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (count, volume) = b.entry(participant.to_string()).or_insert_with(|| {
            (
                TokenBucket::new(f64::from(l.send_burst)),
                TokenBucket::new(l.send_bytes_burst as f64),
            )
        });
        let now = Instant::now();
        let (rate, burst) = (l.send_rate_per_sec, f64::from(l.send_burst));
        let (byte_rate, byte_burst) = (l.send_bytes_per_sec as f64, l.send_bytes_burst as f64);
        if count.available(now, rate, burst) >= 1.0
            && volume.available(now, byte_rate, byte_burst) >= bytes as f64
        {
            count.take(now, 1.0, rate, burst)
                && volume.take(now, bytes as f64, byte_rate, byte_burst)
        } else {
            false
        }
    }

    /// Spends one authentication of `remote`'s address (before any check).
    fn take_auth_ip(&self, remote: std::net::IpAddr) -> bool {
        let l = &self.limits;
        let (rate, burst) = (l.auth_rate_per_sec_per_ip, f64::from(l.auth_burst_per_ip));
        let now = Instant::now();
        let mut m = self
            .auth_ip_buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if m.len() >= crate::defaults::MAX_TRACKED_ADDRESSES {
            // Forget addresses whose bucket has refilled: they are idle.
            m.retain(|_, b| b.available(now, rate, burst) < burst);
        }
        m.entry(remote)
            .or_insert_with(|| TokenBucket::new(burst))
            .take(now, 1.0, rate, burst)
    }

    /// Spends one successful authentication of `participant`.
    fn take_auth(&self, participant: &str) -> bool {
        let l = &self.limits;
        let (rate, burst) = (l.auth_rate_per_sec, f64::from(l.auth_burst));
        let mut m = self.auth_buckets.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(participant.to_string())
            .or_insert_with(|| TokenBucket::new(burst))
            .take(Instant::now(), 1.0, rate, burst)
    }
}

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens.
    pub fn new(burst: f64) -> Self {
        Self {
            tokens: burst,
            last: None,
        }
    }

    /// Refills for the time since the last call; the tokens there are now.
    pub fn available(&mut self, now: Instant, rate: f64, burst: f64) -> f64 {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * rate).min(burst);
        }
        self.last = Some(now);
        self.tokens
    }

    /// Takes `n` tokens at time `now`; false (and nothing taken) if fewer
    /// are left.
    pub fn take(&mut self, now: Instant, n: f64, rate: f64, burst: f64) -> bool {
        if self.available(now, rate, burst) >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// A refusal: the code and a reason for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The msg_id concerned (zero when unknown).
    pub msg_id: MsgId,
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub reason: String,
}

impl Refusal {
    fn new(msg_id: MsgId, code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            msg_id,
            code,
            reason: reason.into(),
        }
    }
}

/// Checks an `Auth` frame against the roster and the connection's nonce and
/// exporter value. Returns the authenticated participant and device.
///
/// # Errors
/// `(code, reason)`: `unauthenticated` (not an Auth), `unknown_participant`,
/// `malformed` (bad device label), `bad_signature`.
pub fn check_auth(
    roster: &Roster,
    frame: &Frame,
    nonce: &[u8; 32],
    exporter: &[u8; 32],
) -> Result<(String, String), (ErrorCode, String)> {
    let Frame::Auth {
        participant,
        device,
        signature,
    } = frame
    else {
        return Err((
            ErrorCode::Unauthenticated,
            format!("expected Auth, got {}", frame.name()),
        ));
    };
    let Some(p) = roster.participant(participant) else {
        return Err((
            ErrorCode::UnknownParticipant,
            format!("unknown participant {participant:?}"),
        ));
    };
    let device =
        DeviceId::new(device.as_str()).map_err(|e| (ErrorCode::Malformed, e.to_string()))?;
    wire::verify_auth(
        &p.public.sign_key,
        device.as_str(),
        nonce,
        exporter,
        signature,
    )
    .map_err(|_| {
        (
            ErrorCode::BadSignature,
            "auth signature does not verify".into(),
        )
    })?;
    Ok((participant.clone(), device.to_string()))
}

/// Every check of the send path that needs no storage, in order: decode
/// (so every later refusal names the msg_id), size, rate (`take_token`, only
/// called for well-formed envelopes), sender == authenticated participant,
/// then signature, channel, posting rights and recipients. The duplicate
/// check needs the store, and the clock-skew check comes after it: see
/// [`check_skew`].
///
/// # Errors
/// A [`Refusal`] with the matching code.
pub fn check_send(
    roster: &Roster,
    authenticated: &str,
    envelope: &[u8],
    max_message_len: usize,
    take_token: impl FnOnce(usize) -> bool,
) -> Result<VerifiedEnvelope, Refusal> {
    let untrusted = precheck_send(authenticated, envelope, max_message_len, take_token)?;
    let msg_id = untrusted.claimed_header().msg_id;
    untrusted
        .verify(roster)
        .map_err(|e: EnvelopeError| Refusal::new(msg_id, e.code(), e.to_string()))
}

/// [`check_send`] for several envelopes that arrived together: the same
/// checks and results, with one batch signature verification
/// ([`UntrustedEnvelope::verify_many`]) for those that pass the cheap checks.
pub fn check_sends(
    roster: &Roster,
    authenticated: &str,
    envelopes: &[Vec<u8>],
    max_message_len: usize,
    mut take_token: impl FnMut(usize) -> bool,
) -> Vec<Result<VerifiedEnvelope, Refusal>> {
    let mut out: Vec<Option<Result<VerifiedEnvelope, Refusal>>> = Vec::new();
    let mut pending = Vec::new();
    let mut at = Vec::new();
    for (i, e) in envelopes.iter().enumerate() {
        match precheck_send(authenticated, e, max_message_len, &mut take_token) {
            Ok(u) => {
                pending.push(u);
                at.push(i);
                out.push(None);
            }
            Err(r) => out.push(Some(Err(r))),
        }
    }
    let ids: Vec<MsgId> = pending.iter().map(|u| u.claimed_header().msg_id).collect();
    let verified = UntrustedEnvelope::verify_many(pending, roster);
    for ((i, msg_id), v) in at.into_iter().zip(ids).zip(verified) {
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(v.map_err(|e| Refusal::new(msg_id, e.code(), e.to_string())));
        }
    }
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Refusal::new(
                    MsgId([0; 16]),
                    ErrorCode::Internal,
                    "send check lost its result",
                ))
            })
        })
        .collect()
}

/// The checks before the signature: encoding, size, rate (messages and
/// bytes: `take_token` gets the envelope's length), sender.
fn precheck_send(
    authenticated: &str,
    envelope: &[u8],
    max_message_len: usize,
    take_token: impl FnOnce(usize) -> bool,
) -> Result<UntrustedEnvelope, Refusal> {
    let zero = MsgId([0; 16]);
    let untrusted = UntrustedEnvelope::decode(envelope)
        .map_err(|e| Refusal::new(zero, e.code(), e.to_string()))?;
    let msg_id = untrusted.claimed_header().msg_id;
    if envelope.len() > max_message_len {
        return Err(Refusal::new(
            msg_id,
            ErrorCode::TooLarge,
            format!(
                "envelope of {} bytes exceeds {max_message_len}",
                envelope.len()
            ),
        ));
    }
    if !take_token(envelope.len()) {
        return Err(Refusal::new(
            msg_id,
            ErrorCode::RateLimited,
            "send rate limit (messages or bytes per second) exceeded; retry later",
        ));
    }
    if untrusted.claimed_header().sender != authenticated {
        return Err(Refusal::new(
            msg_id,
            ErrorCode::Unauthenticated,
            format!(
                "envelope sender {:?} is not the authenticated participant {authenticated:?}",
                untrusted.claimed_header().sender
            ),
        ));
    }
    Ok(untrusted)
}

/// The clock-skew check: `sent_at_ms` within `max_skew` of `now_ms`.
///
/// # Errors
/// A `clock_skew` [`Refusal`].
pub fn check_skew(v: &VerifiedEnvelope, now_ms: u64, max_skew: Duration) -> Result<(), Refusal> {
    let sent = v.header().sent_at_ms;
    let skew = now_ms.abs_diff(sent);
    let max = u64::try_from(max_skew.as_millis()).unwrap_or(u64::MAX);
    if skew > max {
        return Err(Refusal::new(
            v.msg_id(),
            ErrorCode::ClockSkew,
            format!("sent_at is {skew} ms from the relay clock (max {max} ms); check the sender's clock"),
        ));
    }
    Ok(())
}

/// The storage quota: the sender's stored bytes plus this envelope stay
/// within `quota`. Concurrent sends of one participant are checked against
/// the same stored figure, so the quota can be passed by at most the sends
/// in flight (`max_inflight_sends` per connection) at once.
///
/// # Errors
/// A `quota_exceeded` [`Refusal`].
pub fn check_quota(msg_id: MsgId, stored: u64, len: usize, quota: u64) -> Result<(), Refusal> {
    if stored.saturating_add(len as u64) > quota {
        return Err(Refusal::new(
            msg_id,
            ErrorCode::QuotaExceeded,
            format!(
                "storage quota: {stored} bytes of your messages await delivery (quota {quota}); \
                 retry once recipients have collected them"
            ),
        ));
    }
    Ok(())
}

/// Why a session ended.
#[derive(Debug)]
struct Close {
    code: Option<ErrorCode>,
    reason: String,
}

impl Close {
    fn err(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
        }
    }
}

/// Most sends checked together (one batch signature verification).
const SEND_BATCH: usize = 64;

/// Most queued frames handed to quinn in one write.
const WRITE_BATCH: usize = 64;

/// Most frames decoded ahead of processing; further bytes stay undecoded in
/// the decoder (and, beyond quinn's stream window, unread at the peer).
const MAX_READY_FRAMES: usize = 2 * SEND_BATCH;

/// Reads frames from the session stream in chunks, so that sends which
/// arrived together can be checked together.
struct FrameReader {
    recv: RecvStream,
    decoder: wire::FrameDecoder,
    ready: VecDeque<Frame>,
    /// A decoding error, reported once the frames before it were served.
    failed: Option<(ErrorCode, String)>,
}

impl FrameReader {
    fn new(recv: RecvStream, max: u32) -> Self {
        Self {
            recv,
            decoder: wire::FrameDecoder::new(max),
            ready: VecDeque::new(),
            failed: None,
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream cleanly.
    /// Cancel-safe: a chunk is either taken whole or not at all.
    async fn next(&mut self) -> Result<Option<Frame>, Close> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Ok(Some(f));
            }
            if let Some((code, reason)) = self.failed.take() {
                return Err(Close::err(code, reason));
            }
            // Frames left undecoded by the bound come first.
            self.decode_buffered();
            if !self.ready.is_empty() || self.failed.is_some() {
                continue;
            }
            match self.recv.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => {
                    self.decoder.extend(&chunk.bytes);
                    self.decode_buffered();
                }
                Ok(None) if self.decoder.buffered() == 0 => return Ok(None),
                Ok(None) => {
                    return Err(Close {
                        code: None,
                        reason: "stream closed: finished mid-frame".into(),
                    })
                }
                Err(e) => {
                    return Err(Close {
                        code: None,
                        reason: format!("stream closed: {e}"),
                    })
                }
            }
        }
    }

    /// Decodes whatever quinn has already received, without waiting.
    ///
    /// Polls `read_chunk` with a no-op waker: data that is there is taken
    /// (cancel-safe: a chunk is taken whole), and on `Pending` the future is
    /// dropped; the next real `read_chunk` registers the task's own waker
    /// again. End of stream and errors are left for [`FrameReader::next`]
    /// to meet on its own read.
    fn poll_received(&mut self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while self.failed.is_none() && self.ready.len() < MAX_READY_FRAMES {
            let polled = {
                let mut read = std::pin::pin!(self.recv.read_chunk(usize::MAX, true));
                std::future::Future::poll(read.as_mut(), &mut cx)
            };
            match polled {
                std::task::Poll::Ready(Ok(Some(chunk))) => {
                    self.decoder.extend(&chunk.bytes);
                    self.decode_buffered();
                }
                _ => break,
            }
        }
    }

    fn decode_buffered(&mut self) {
        while self.ready.len() < MAX_READY_FRAMES && self.failed.is_none() {
            match self.decoder.next_frame() {
                Ok(Some(f)) => self.ready.push_back(f),
                Ok(None) => break,
                Err(e) => {
                    // Frames before the bad one are still served.
                    self.failed = Some((e.code(), e.to_string()));
                    break;
                }
            }
        }
    }

    /// The envelope of the next frame if it is a `Send` already received.
    fn take_ready_send(&mut self) -> Option<Vec<u8>> {
        if self.ready.is_empty() {
            self.poll_received();
        }
        match self.ready.front() {
            Some(Frame::Send { .. }) => match self.ready.pop_front() {
                Some(Frame::Send { envelope }) => Some(envelope),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Reads one frame, refusing one over `max` before reading its payload.
async fn read_frame(recv: &mut RecvStream, max: u32) -> Result<Option<Frame>, Close> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => {
            return Err(Close {
                code: None,
                reason: format!("stream closed: {e}"),
            })
        }
    }
    let len = wire::frame_len(prefix, max).map_err(|e| Close::err(e.code(), e.to_string()))?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await.map_err(|e| Close {
        code: None,
        reason: format!("stream closed: {e}"),
    })?;
    wire::decode_frame(&payload)
        .map(Some)
        .map_err(|e: WireError| Close::err(e.code(), e.to_string()))
}

/// Writes an `Error` frame (best effort, bounded) and closes the connection
/// with the code.
async fn close_with(
    conn: &Connection,
    send: Option<&mut SendStream>,
    code: ErrorCode,
    reason: &str,
) {
    if let Some(send) = send {
        let frame = wire::encode_frame(&Frame::Error {
            code,
            reason: reason.to_string(),
        });
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if send.write_all(&frame).await.is_ok() && send.finish().is_ok() {
                let _ = send.stopped().await;
            }
        })
        .await;
    }
    conn.close(VarInt::from_u32(code.close_code()), reason.as_bytes());
}

/// Logs a failed QUIC/TLS handshake; a client that offered no post-quantum
/// key exchange to a relay that requires one gets a warning of its own and
/// is counted (`tallinn_tls_refused_classical_total`).
fn handshake_failed(shared: &Shared, e: &quinn::ConnectionError) {
    let no_common_group = matches!(e, quinn::ConnectionError::TransportError(t)
        if t.reason.contains("NoKxGroupsInCommon"));
    if no_common_group {
        shared
            .metrics
            .kx
            .refused_classical
            .fetch_add(1, Ordering::Relaxed);
        warn!(
            "TLS handshake refused: the client offers no post-quantum key exchange \
             (X25519MLKEM768 is required; [tls] require_post_quantum)"
        );
    } else {
        debug!(error = %e, "handshake failed");
    }
}

/// Drives one accepted QUIC connection to its end.
pub(crate) async fn run(incoming: quinn::Incoming, shared: Arc<Shared>, ticket: Ticket) {
    let remote = incoming.remote_address();
    let span = tracing::info_span!("conn", %remote, participant = tracing::field::Empty);
    let evicted = ticket.evicted.clone();
    let pre_auth = async {
        let deadline = tokio::time::Instant::now() + shared.limits.handshake_timeout;
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                handshake_failed(&shared, &e);
                return None;
            }
        };
        let conn = match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                handshake_failed(&shared, &e);
                return None;
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                return None;
            }
        };
        Some((deadline, conn))
    }
    .instrument(span.clone());
    let (deadline, conn) = tokio::select! {
        r = pre_auth => match r {
            Some(x) => x,
            None => return,
        },
        _ = evicted.notified() => {
            debug!("evicted during the handshake: pre-authentication budget full");
            return;
        }
    };
    async move {
        let authed = tokio::select! {
            r = tokio::time::timeout_at(deadline, authenticate(&conn, &shared, remote)) => r,
            _ = evicted.notified() => {
                shared.metrics.auth_failures.inc(ErrorCode::RateLimited);
                debug!("evicted before authenticating: pre-authentication budget full");
                close_with(&conn, None, ErrorCode::RateLimited, "evicted: too many unauthenticated connections").await;
                return;
            }
        };
        let (send, recv, registration, rx, acked) = match authed {
            Ok(Ok(s)) => s,
            Ok(Err((mut send, code, reason))) => {
                shared.metrics.auth_failures.inc(code);
                close_with(&conn, send.as_mut(), code, &reason).await;
                return;
            }
            Err(_) => {
                shared.metrics.auth_failures.inc(ErrorCode::Unauthenticated);
                warn!("authentication timed out");
                close_with(
                    &conn,
                    None,
                    ErrorCode::Unauthenticated,
                    "authentication timed out",
                )
                .await;
                return;
            }
        };
        // Authenticated: no longer evictable, and the full receive window.
        ticket.authenticated();
        conn.set_receive_window(VarInt::MAX);
        let handle = registration.handle.clone();
        tracing::Span::current().record("participant", handle.participant.as_str());
        let (close, mut send) = session(&shared, send, recv, &handle, rx, acked).await;
        drop(registration);
        match close.code {
            Some(code) => {
                info!(code = %code, reason = %esc(&close.reason), "session closed");
                close_with(&conn, send.as_mut(), code, &close.reason).await;
            }
            None => {
                debug!(reason = %esc(&close.reason), "session ended by peer");
                conn.close(VarInt::from_u32(0), b"");
            }
        }
    }
    .instrument(span)
    .await;
}

/// A router registration that is undone when dropped, however the session
/// ends (including an authentication timeout that cancels mid-`Welcome`).
struct Registered {
    router: Arc<Router>,
    handle: Arc<ConnHandle>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.router.unregister(&self.handle);
    }
}

type AuthOk = (
    SendStream,
    RecvStream,
    Registered,
    mpsc::Receiver<Delivery>,
    u64,
);
type AuthErr = (Option<SendStream>, ErrorCode, String);

async fn authenticate(
    conn: &Connection,
    shared: &Shared,
    remote: SocketAddr,
) -> Result<AuthOk, AuthErr> {
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| {
        (
            None,
            ErrorCode::Unauthenticated,
            format!("no session stream: {e}"),
        )
    })?;
    let mut preamble = [0u8; 4];
    if recv.read_exact(&mut preamble).await.is_err() || preamble != SESSION_PREAMBLE {
        return Err((
            Some(send),
            ErrorCode::Malformed,
            "bad session preamble".into(),
        ));
    }
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    let mut exporter = [0u8; AUTH_EXPORTER_LEN];
    if conn
        .export_keying_material(&mut exporter, AUTH_EXPORTER_LABEL, &nonce)
        .is_err()
    {
        return Err((
            Some(send),
            ErrorCode::Internal,
            "TLS exporter unavailable".into(),
        ));
    }
    let hello = wire::encode_frame(&Frame::Hello {
        relay_name: shared.relay_name.clone(),
        nonce,
    });
    if let Err(e) = send.write_all(&hello).await {
        return Err((None, ErrorCode::Internal, format!("writing Hello: {e}")));
    }
    let frame = match read_frame(&mut recv, MAX_AUTH_FRAME).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Err((
                Some(send),
                ErrorCode::Unauthenticated,
                "stream ended before Auth".into(),
            ))
        }
        Err(c) => {
            return Err((
                Some(send),
                c.code.unwrap_or(ErrorCode::Unauthenticated),
                c.reason,
            ))
        }
    };
    if !shared.take_auth_ip(remote.ip()) {
        warn!(%remote, "authentication rate limit of the address exceeded");
        return Err((
            Some(send),
            ErrorCode::RateLimited,
            "too many authentications from this address; retry later".into(),
        ));
    }
    let roster = shared.roster();
    let (participant, device) = match check_auth(&roster, &frame, &nonce, &exporter) {
        Ok(ok) => ok,
        Err((code, reason)) => {
            let claimed = match &frame {
                Frame::Auth { participant, .. } => participant.as_str(),
                _ => "",
            };
            warn!(code = %code, claimed = %claimed.escape_debug(), %remote, "authentication failed");
            return Err((Some(send), code, reason));
        }
    };
    if !shared.take_auth(&participant) {
        warn!(%participant, "authentication rate limit of the participant exceeded");
        return Err((
            Some(send),
            ErrorCode::RateLimited,
            format!("{participant} authenticates too often; retry later"),
        ));
    }
    // The keys the signature was checked with: registration re-checks them
    // against the roster in force (it may have been replaced meanwhile).
    let Some(keys) = roster.participant(&participant).map(|p| p.public.clone()) else {
        return Err((
            Some(send),
            ErrorCode::UnknownParticipant,
            format!("unknown participant {participant:?}"),
        ));
    };
    let (registered_handle, rx, replaced) = match shared.router.register(
        &participant,
        &device,
        &keys,
        shared.limits.delivery_queue,
        shared.limits.max_connections_per_participant,
    ) {
        Ok(r) => r,
        Err(RegisterError::TooMany) => {
            warn!(%participant, "too many connections for participant");
            return Err((
                Some(send),
                ErrorCode::RateLimited,
                format!(
                    "{participant} already has {} connections",
                    shared.limits.max_connections_per_participant
                ),
            ));
        }
        Err(e) => {
            warn!(%participant, "roster changed during authentication");
            return Err((Some(send), ErrorCode::UnknownParticipant, e.to_string()));
        }
    };
    if replaced.is_some() {
        shared
            .metrics
            .sessions_replaced
            .fetch_add(1, Ordering::Relaxed);
        info!(%participant, %device, "a new session of this device replaces the open one");
    }
    let registration = Registered {
        router: shared.router.clone(),
        handle: registered_handle,
    };
    // Store work (a log scan for `pending`) runs off the async workers.
    let store = shared.store.clone();
    let max_devices = shared.limits.max_devices_per_participant;
    let (p2, d2) = (participant.clone(), device.clone());
    let registered = tokio::task::spawn_blocking(move || {
        let known = store.devices(&p2)?;
        if !known.contains(&d2) && known.len() >= max_devices {
            return Ok(None);
        }
        let acked = store.touch_device(&p2, &d2, now_ms())?;
        let pending = store.pending(&p2, acked)?;
        Ok::<_, crate::store::StoreError>(Some((acked, pending)))
    })
    .await;
    let (acked, pending) = match registered {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => {
            warn!(%participant, %device, "too many devices for participant");
            return Err((
                Some(send),
                ErrorCode::RateLimited,
                format!("{participant} already has {max_devices} devices; reuse a device label"),
            ));
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store failure during auth");
            return Err((Some(send), ErrorCode::Internal, "storage failure".into()));
        }
        Err(e) => {
            tracing::error!(error = %e, "auth store task failed");
            return Err((Some(send), ErrorCode::Internal, "storage failure".into()));
        }
    };
    let welcome = wire::encode_frame(&Frame::Welcome {
        participant: participant.clone(),
        device: device.clone(),
        pending,
    });
    if let Err(e) = send.write_all(&welcome).await {
        return Err((None, ErrorCode::Internal, format!("writing Welcome: {e}")));
    }
    shared
        .metrics
        .sessions_authenticated
        .fetch_add(1, Ordering::Relaxed);
    info!(%participant, %device, pending, "authenticated");
    Ok((send, recv, registration, rx, acked))
}

/// Delivery progress shared by the reader (acks) and the delivery task.
struct Progress {
    last_sent: AtomicU64,
    acked: AtomicU64,
    /// Set when the session ends: the delivery task returns at its next turn.
    stop: std::sync::atomic::AtomicBool,
}

async fn session(
    shared: &Arc<Shared>,
    send: SendStream,
    recv: RecvStream,
    handle: &Arc<ConnHandle>,
    rx: mpsc::Receiver<Delivery>,
    acked: u64,
) -> (Close, Option<SendStream>) {
    let limits = &shared.limits;
    let mut reader = FrameReader::new(recv, limits.max_frame_len);
    let (out_tx, mut out_rx) = mpsc::channel::<bytes::Bytes>(
        limits.max_inflight_sends + limits.max_inflight_deliveries + 8,
    );
    // The writer owns the send half and hands it back when every sender of
    // `out_tx` is gone, so the final Error frame follows everything queued.
    let mut send = send;
    let writer = tokio::spawn(async move {
        // Everything already queued goes to quinn in one call: one lock of
        // the connection state and one wake of its driver per batch, not
        // per frame.
        let mut chunks: Vec<bytes::Bytes> = Vec::with_capacity(WRITE_BATCH);
        while let Some(first) = out_rx.recv().await {
            chunks.push(first);
            while chunks.len() < WRITE_BATCH {
                match out_rx.try_recv() {
                    Ok(b) => chunks.push(b),
                    Err(_) => break,
                }
            }
            let written = send.write_all_chunks(&mut chunks).await;
            chunks.clear();
            if written.is_err() {
                break;
            }
        }
        send
    });
    let progress = Arc::new(Progress {
        last_sent: AtomicU64::new(acked),
        acked: AtomicU64::new(acked),
        stop: std::sync::atomic::AtomicBool::new(false),
    });
    let delivery = tokio::spawn(deliver_loop(
        shared.clone(),
        handle.clone(),
        rx,
        out_tx.clone(),
        progress.clone(),
    ));
    let mut waiters = JoinSet::new();
    let sends = Arc::new(Semaphore::new(limits.max_inflight_sends));
    let mut shutdown = shared.shutdown.clone();

    let close = 'session: loop {
        // Only the read is cancelled by the other branches, and only when the
        // session ends anyway: a frame is never half-read and then resumed.
        let frame = tokio::select! {
            biased;
            _ = shutdown.changed() => break interrupted(&shutdown, handle),
            _ = handle.kick.notified() => {
                if handle.kicked.load(Ordering::SeqCst) {
                    break interrupted(&shutdown, handle);
                }
                continue;
            }
            frame = reader.next() => frame,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => {
                break Close {
                    code: None,
                    reason: "peer finished the stream".into(),
                }
            }
            Err(c) => break c,
        };
        match frame {
            Frame::Send { envelope } => {
                // A client that stops reading makes this wait: stay
                // responsive to a kick or a shutdown meanwhile.
                let permit =
                    match interruptible(sends.clone().acquire_owned(), &mut shutdown, handle).await
                    {
                        Some(Ok(p)) => p,
                        Some(Err(_)) => {
                            break Close::err(ErrorCode::Internal, "send limiter closed")
                        }
                        None => break interrupted(&shutdown, handle),
                    };
                // Sends that arrived with this one are checked with it (one
                // batch signature verification), each with its own permit.
                let mut envelopes = vec![envelope];
                let mut permits = vec![permit];
                while envelopes.len() < SEND_BATCH {
                    let Ok(p) = sends.clone().try_acquire_owned() else {
                        break;
                    };
                    let Some(e) = reader.take_ready_send() else {
                        break;
                    };
                    envelopes.push(e);
                    permits.push(p);
                }
                let received = Instant::now();
                let results = handle_sends(shared, &handle.participant, envelopes);
                for (result, permit) in results.into_iter().zip(permits) {
                    match result {
                        Ok((msg_id, waiter)) => {
                            let out = out_tx.clone();
                            let metrics = shared.metrics.clone();
                            waiters.spawn(async move {
                                let frame = accept_frame(waiter.await, msg_id, &metrics, received);
                                let _ = out.send(wire::encode_frame(&frame).into()).await;
                                drop(permit);
                            });
                        }
                        Err(r) => {
                            drop(permit);
                            shared.metrics.sends_rejected.inc(r.code);
                            warn!(code = %r.code, msg_id = %r.msg_id, reason = %esc(&r.reason), "rejected send");
                            if r.code == ErrorCode::Malformed {
                                break 'session Close::err(ErrorCode::Malformed, r.reason);
                            }
                            let frame = Frame::Rejected {
                                msg_id: r.msg_id,
                                code: r.code,
                                reason: r.reason,
                            };
                            match interruptible(
                                out_tx.send(wire::encode_frame(&frame).into()),
                                &mut shutdown,
                                handle,
                            )
                            .await
                            {
                                Some(Ok(())) => {}
                                Some(Err(_)) => {
                                    break 'session Close {
                                        code: None,
                                        reason: "writer stopped".into(),
                                    }
                                }
                                None => break 'session interrupted(&shutdown, handle),
                            }
                        }
                    }
                }
                // Reap finished waiters so the set stays small.
                while waiters.try_join_next().is_some() {}
            }
            Frame::Ack { up_to_seq } => {
                shared.metrics.acks.fetch_add(1, Ordering::Relaxed);
                // Never let a client acknowledge what it was not sent.
                let up_to = up_to_seq.min(progress.last_sent.load(Ordering::SeqCst));
                if up_to_seq > up_to {
                    warn!(
                        up_to_seq,
                        last_sent = up_to,
                        "ack beyond last delivery clamped"
                    );
                }
                if progress.acked.fetch_max(up_to, Ordering::SeqCst) < up_to {
                    shared
                        .committer
                        .ack(&handle.participant, &handle.device, up_to, now_ms());
                    handle.wake.notify_one();
                }
            }
            Frame::Error { code, reason } => {
                info!(code = %code, reason = %esc(&reason), "peer reported an error");
                break Close {
                    code: None,
                    reason: format!("peer error {code}"),
                };
            }
            other => {
                break Close::err(
                    ErrorCode::Malformed,
                    format!("unexpected {} frame from client", other.name()),
                );
            }
        }
    };

    // Accepted is owed for every send already queued for commit: wait for
    // them (bounded), then stop delivering and take the stream back.
    // Stop the delivery task at its next turn and wait for it, so no store
    // read of this session outlives it (it may sit in a blocking read); one
    // stuck on a stalled writer is aborted after the grace period.
    progress.stop.store(true, Ordering::SeqCst);
    handle.wake.notify_one();
    let mut delivery = delivery;
    if tokio::time::timeout(CLOSE_GRACE, &mut delivery)
        .await
        .is_err()
    {
        delivery.abort();
        let _ = delivery.await;
    }
    let _ = tokio::time::timeout(shared.limits.drain_timeout, async {
        while waiters.join_next().await.is_some() {}
    })
    .await;
    waiters.abort_all();
    drop(out_tx);
    let send = tokio::time::timeout(shared.limits.drain_timeout, writer)
        .await
        .ok()
        .and_then(Result::ok);
    (close, send)
}

/// Runs `fut` unless the relay shuts down or the session is kicked first
/// (`None` then).
async fn interruptible<F: std::future::Future>(
    fut: F,
    shutdown: &mut watch::Receiver<bool>,
    handle: &ConnHandle,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = shutdown.changed() => return None,
            _ = handle.kick.notified() => {
                if handle.kicked.load(Ordering::SeqCst) {
                    return None;
                }
            }
        }
    }
}

/// Why an [`interruptible`] wait was cut short.
fn interrupted(shutdown: &watch::Receiver<bool>, handle: &ConnHandle) -> Close {
    if *shutdown.borrow() {
        return Close::err(ErrorCode::ShuttingDown, "relay is shutting down");
    }
    let (code, reason) = handle
        .kick_reason
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or((ErrorCode::Internal, "closed by the relay".into()));
    Close::err(code, reason)
}

/// The frame answering a send once its commit resolved.
fn accept_frame(
    result: Result<crate::commit::AppendResult, tokio::sync::oneshot::error::RecvError>,
    msg_id: MsgId,
    metrics: &Metrics,
    received: Instant,
) -> Frame {
    match result {
        Ok(Ok(Appended::New(seq))) => {
            metrics.sends_accepted.fetch_add(1, Ordering::Relaxed);
            metrics.send_to_accept_seconds.observe(received.elapsed());
            debug!(%msg_id, seq, "accepted");
            Frame::Accepted { msg_id, seq }
        }
        Ok(Ok(Appended::Duplicate(seq))) => {
            metrics.sends_rejected.inc(ErrorCode::Duplicate);
            Frame::Rejected {
                msg_id,
                code: ErrorCode::Duplicate,
                reason: format!("already accepted as seq {seq}"),
            }
        }
        Ok(Err(e)) => {
            metrics.sends_rejected.inc(ErrorCode::Internal);
            tracing::error!(error = %e, "append failed");
            Frame::Rejected {
                msg_id,
                code: ErrorCode::Internal,
                reason: "storage failure; retry later".into(),
            }
        }
        Err(_) => {
            metrics.sends_rejected.inc(ErrorCode::ShuttingDown);
            Frame::Rejected {
                msg_id,
                code: ErrorCode::ShuttingDown,
                reason: "relay is shutting down".into(),
            }
        }
    }
}

/// A queued append: the msg_id and where its durable outcome arrives.
type Queued = (
    MsgId,
    tokio::sync::oneshot::Receiver<crate::commit::AppendResult>,
);

/// Runs the synchronous send checks on sends that arrived together and
/// queues the appends of those that pass, in order.
fn handle_sends(
    shared: &Shared,
    participant: &str,
    envelopes: Vec<Vec<u8>>,
) -> Vec<Result<Queued, Refusal>> {
    let limits = &shared.limits;
    let roster = shared.roster();
    check_sends(
        &roster,
        participant,
        &envelopes,
        limits.max_message_len,
        |bytes| shared.take_token(participant, bytes),
    )
    .into_iter()
    .map(|v| v.and_then(|verified| queue_append(shared, participant, verified)))
    .collect()
}

/// The duplicate and clock checks of a verified send, then its append.
fn queue_append(
    shared: &Shared,
    participant: &str,
    verified: VerifiedEnvelope,
) -> Result<Queued, Refusal> {
    let limits = &shared.limits;
    let msg_id = verified.msg_id();
    let now = now_ms();
    match shared.store.seen(&msg_id) {
        // Seen before: the append below answers `duplicate`, but only after
        // the commit thread's next flush, so `duplicate` (which a client
        // treats as accepted) is never said about a write not yet durable.
        // The clock-skew check is skipped: a resend after a lost `Accepted`
        // must be recognised however old it is.
        Ok(Some(_)) => {}
        Ok(None) => {
            check_skew(&verified, now, limits.max_clock_skew)?;
            check_quota(
                msg_id,
                shared.store.stored_bytes(participant),
                verified.as_bytes().len(),
                limits.max_stored_bytes_per_participant,
            )?;
        }
        Err(e) => {
            tracing::error!(error = %e, "dedupe lookup failed");
            return Err(Refusal::new(
                msg_id,
                ErrorCode::Internal,
                "storage failure; retry later",
            ));
        }
    }
    let recipients: Vec<String> = verified.recipients().map(str::to_string).collect();
    let entry = LogEntry {
        received_at_ms: now,
        sender: participant.to_string(),
        recipients,
        envelope: verified.into_bytes(),
    };
    Ok((msg_id, shared.committer.append(msg_id, entry)))
}

/// Pushes deliveries to one connection: backlog and catch-up from the store,
/// live messages from the router's queue, never more than the in-flight
/// window unacknowledged.
async fn deliver_loop(
    shared: Arc<Shared>,
    handle: Arc<ConnHandle>,
    mut rx: mpsc::Receiver<Delivery>,
    out: mpsc::Sender<bytes::Bytes>,
    progress: Arc<Progress>,
) {
    let window = shared.limits.max_inflight_deliveries.max(1);
    let max_bytes = shared.limits.max_inflight_delivery_bytes.max(1);
    // (seq, frame bytes) sent and not yet acknowledged.
    let mut inflight: VecDeque<(u64, usize)> = VecDeque::new();
    let mut inflight_bytes = 0usize;
    let mut last_sent = progress.last_sent.load(Ordering::SeqCst);
    loop {
        if handle.kicked.load(Ordering::SeqCst) || progress.stop.load(Ordering::SeqCst) {
            return;
        }
        let acked = progress.acked.load(Ordering::SeqCst);
        while let Some(&(seq, len)) = inflight.front() {
            if seq > acked {
                break;
            }
            inflight.pop_front();
            inflight_bytes -= len;
        }
        // The window: a count and a byte budget (a frame is always allowed
        // when nothing is in flight, however large).
        if inflight.len() >= window || inflight_bytes >= max_bytes {
            handle.wake.notified().await;
            continue;
        }
        if handle.lagging.swap(false, Ordering::SeqCst) {
            // Everything queued is also in the store: drop it and read there.
            while rx.try_recv().is_ok() {}
            let room = (window - inflight.len()).min(256);
            // A log scan (entries for others are skipped): off the async
            // workers, so a long backlog never stalls other sessions.
            let store = shared.store.clone();
            let participant = handle.participant.clone();
            let read = tokio::task::spawn_blocking(move || {
                store.inbox_after(&participant, last_sent, room)
            })
            .await;
            let batch = match read {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reading inbox failed");
                    handle.kick(ErrorCode::Internal, "storage failure; reconnect later");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "inbox read task failed");
                    handle.kick(ErrorCode::Internal, "storage failure; reconnect later");
                    return;
                }
            };
            if batch.len() == room {
                // There may be more: come back once the window allows.
                handle.lagging.store(true, Ordering::SeqCst);
            }
            // Never deliver what is not yet durable; those messages arrive
            // through the live queue once their flush has returned.
            let durable = shared.router.durable_seq.load(Ordering::SeqCst);
            for m in batch.iter().take_while(|m| m.seq <= durable) {
                if inflight_bytes >= max_bytes {
                    // Byte budget spent: read the rest again later.
                    handle.lagging.store(true, Ordering::SeqCst);
                    break;
                }
                let frame = deliver_frame(m);
                let len = frame.len();
                if out.send(frame).await.is_err() {
                    return;
                }
                inflight.push_back((m.seq, len));
                inflight_bytes += len;
                last_sent = m.seq;
                progress.last_sent.store(last_sent, Ordering::SeqCst);
                shared.metrics.deliveries.fetch_add(1, Ordering::Relaxed);
                shared
                    .metrics
                    .deliveries_from_store
                    .fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        match rx.try_recv() {
            Ok(m) => {
                if m.seq > last_sent {
                    let len = m.frame.len();
                    if out.send(m.frame).await.is_err() {
                        return;
                    }
                    inflight.push_back((m.seq, len));
                    inflight_bytes += len;
                    last_sent = m.seq;
                    progress.last_sent.store(last_sent, Ordering::SeqCst);
                    shared.metrics.deliveries.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        handle.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallinn_common::envelope::seal;
    use tallinn_common::identity::{Identity, ParticipantId};
    use tallinn_common::message::{Message, Tlp};

    fn world() -> (Roster, Vec<Identity>) {
        let ids: Vec<Identity> = ["UA", "EE", "NATO"]
            .iter()
            .map(|i| Identity::generate(ParticipantId::new(*i).unwrap()))
            .collect();
        let text = format!(
            "{}{}{}[[channel]]\nid = \"plenary\"\nmembers = [\"*\"]\nobservers = [\"NATO\"]\n",
            ids[0].roster_entry("Ukraine", "member"),
            ids[1].roster_entry("Estonia", "member"),
            ids[2].roster_entry("NATO", "observer"),
        );
        (Roster::parse(&text).unwrap(), ids)
    }

    #[test]
    fn token_bucket_refills_at_rate() {
        let mut b = TokenBucket::new(2.0);
        let t0 = Instant::now();
        assert!(b.take(t0, 1.0, 1.0, 2.0));
        assert!(b.take(t0, 1.0, 1.0, 2.0));
        assert!(!b.take(t0, 1.0, 1.0, 2.0));
        assert!(b.take(t0 + Duration::from_millis(1001), 1.0, 1.0, 2.0));
        assert!(!b.take(t0 + Duration::from_millis(1001), 1.0, 1.0, 2.0));
        // Never more than the burst, however long idle.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.take(later, 1.0, 1.0, 2.0));
        assert!(b.take(later, 1.0, 1.0, 2.0));
        assert!(!b.take(later, 1.0, 1.0, 2.0));
        // Byte buckets take many tokens at once, or none.
        let mut bytes = TokenBucket::new(1000.0);
        assert!(bytes.take(t0, 600.0, 100.0, 1000.0));
        assert!(!bytes.take(t0, 600.0, 100.0, 1000.0));
        assert!(bytes.take(t0, 400.0, 100.0, 1000.0));
        assert!(bytes.take(t0 + Duration::from_secs(2), 200.0, 100.0, 1000.0));
    }

    #[test]
    fn auth_checks() {
        let (roster, ids) = world();
        let (nonce, exp) = ([1; 32], [2; 32]);
        let ok = wire::sign_auth(&ids[0], "front-office", &nonce, &exp);
        assert_eq!(
            check_auth(&roster, &ok, &nonce, &exp),
            Ok(("UA".into(), "front-office".into()))
        );
        // Replayed on another connection (different exporter).
        assert_eq!(
            check_auth(&roster, &ok, &nonce, &[3; 32]).unwrap_err().0,
            ErrorCode::BadSignature
        );
        // Signed by another participant's key.
        let Frame::Auth { signature, .. } = wire::sign_auth(&ids[1], "front-office", &nonce, &exp)
        else {
            unreachable!()
        };
        let forged = Frame::Auth {
            participant: "UA".into(),
            device: "front-office".into(),
            signature,
        };
        assert_eq!(
            check_auth(&roster, &forged, &nonce, &exp).unwrap_err().0,
            ErrorCode::BadSignature
        );
        let stranger = Frame::Auth {
            participant: "XX".into(),
            device: "d".into(),
            signature,
        };
        assert_eq!(
            check_auth(&roster, &stranger, &nonce, &exp).unwrap_err().0,
            ErrorCode::UnknownParticipant
        );
        let bad_device = Frame::Auth {
            participant: "UA".into(),
            device: "a b".into(),
            signature,
        };
        assert_eq!(
            check_auth(&roster, &bad_device, &nonce, &exp)
                .unwrap_err()
                .0,
            ErrorCode::Malformed
        );
        assert_eq!(
            check_auth(&roster, &Frame::Ack { up_to_seq: 1 }, &nonce, &exp)
                .unwrap_err()
                .0,
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn send_checks() {
        let (roster, ids) = world();
        let m = Message::note(Tlp::Green, "s", "b");
        let env = seal(&ids[0], &roster, "plenary", &m, 1000).unwrap();
        let v = check_send(&roster, "UA", env.as_bytes(), 1 << 20, |_| true).unwrap();
        assert_eq!(v.msg_id(), env.msg_id());
        assert!(check_skew(&v, 1000 + 299_000, Duration::from_secs(300)).is_ok());
        assert_eq!(
            check_skew(&v, 1000 + 301_000, Duration::from_secs(300))
                .unwrap_err()
                .code,
            ErrorCode::ClockSkew
        );
        // Sender mismatch.
        let r = check_send(&roster, "EE", env.as_bytes(), 1 << 20, |_| true).unwrap_err();
        assert_eq!(r.code, ErrorCode::Unauthenticated);
        assert_eq!(r.msg_id, env.msg_id());
        // Too large.
        let big = check_send(&roster, "UA", env.as_bytes(), 10, |_| true).unwrap_err();
        assert_eq!(big.code, ErrorCode::TooLarge);
        assert_eq!(big.msg_id, env.msg_id(), "refusals name the msg_id");
        let limited = check_send(&roster, "UA", env.as_bytes(), 1 << 20, |_| false).unwrap_err();
        assert_eq!(limited.code, ErrorCode::RateLimited);
        assert_eq!(limited.msg_id, env.msg_id());
        // Garbage.
        assert_eq!(
            check_send(&roster, "UA", b"garbage", 1 << 20, |_| true)
                .unwrap_err()
                .code,
            ErrorCode::Malformed
        );
    }
}
