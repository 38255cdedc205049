//! One client session: authentication, the send path, delivery and acks.
//!
//! - [`checks`]: the decisions that need no I/O (auth, the send checks,
//!   skew, quota, token buckets), unit-tested without a socket;
//! - [`core`]: the sans-IO session core (delivery window, backlog or live,
//!   durable progress, ack clamping, close), events in and actions out;
//! - `reader`: frames from the session stream;
//! - `driver`: the async tasks that feed the core and carry out its actions;
//! - `governance`: the roster log frames (entries owed, submissions) and
//!   archive checkpoints kept per device;
//! - this file: a connection from accept to close, and authentication.
//!
//! ```text
//!  accept ─▶ run: handshake ─▶ authenticate (Hello/Auth/Welcome, register,
//!            cursor) ─▶ driver::session (reader, delivery, writer, waiters) ─▶ close
//! ```

pub mod checks;
pub mod core;
mod driver;
mod governance;
mod reader;

pub use checks::{
    check_auth, check_quota, check_send, check_sends, check_skew, Refusal, TokenBucket,
};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::rules::RosterRules;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rand::Rng as _;
use tallinn_common::defaults::{AUTH_EXPORTER_LABEL, AUTH_EXPORTER_LEN, SESSION_PREAMBLE};
use tallinn_common::evidence::SignedCheckpoint;
use tallinn_common::text::escape_line as esc;
use tallinn_common::wire::{self, ErrorCode, Frame};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn, Instrument};

use crate::commit::Committer;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::router::{ConnHandle, Delivery, RegisterError, Router};
use crate::store::Store;

/// Largest frame accepted before authentication: an `Auth` is under 200 bytes.
const MAX_AUTH_FRAME: u32 = 1024;

/// Time allowed to write a final `Error` frame before closing anyway.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

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
    /// Serialises roster-log submissions (check, append, put in force).
    pub roster_writer: tokio::sync::Mutex<()>,
    /// Version 2: the key that signs every `Receipt` (none: `Accepted`).
    pub receipts: Option<Arc<crate::receipt_key::ReceiptKey>>,
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
    /// Prometheus text of the metrics, with the build and the roster in
    /// force.
    pub(crate) fn render_metrics(&self) -> String {
        let mut o = self.metrics.render(
            self.store.as_ref(),
            self.open_connections
                .load(std::sync::atomic::Ordering::SeqCst),
        );
        crate::metrics::render_identity(&mut o, &self.router.roster());
        o
    }

    pub fn roster(&self) -> Arc<RosterRules> {
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

/// Why a session ended.
#[derive(Debug)]
pub(super) struct Close {
    pub(super) code: Option<ErrorCode>,
    pub(super) reason: String,
}

impl Close {
    pub(super) fn err(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
        }
    }
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
        let (close, mut send) = driver::session(&shared, send, recv, &handle, rx, acked).await;
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
    let frame = match reader::read_frame(&mut recv, MAX_AUTH_FRAME).await {
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
    let (participant, device, key) = match check_auth(&roster, &frame, &nonce, &exporter) {
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
    // The key the signature was checked with: registration re-checks it
    // against the roster in force (it may have been replaced meanwhile).
    let (registered_handle, rx, replaced) = match shared.router.register(
        &participant,
        &device,
        &key,
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
    if replaced.is_some() {
        // The replaced session can queue no ack any more (it is kicked, and
        // acks are queued under the kick's lock); wait until the commit
        // thread applied those it did queue, so the cursor read below
        // includes them and the two sessions never skip each other's
        // messages.
        if shared.committer.barrier().await.is_err() {
            return Err((
                Some(send),
                ErrorCode::ShuttingDown,
                "relay is shutting down".into(),
            ));
        }
    }
    // Store work (cursor, device list, pending count) off the async workers.
    let store = shared.store.clone();
    let max_devices = shared.limits.max_devices_per_participant;
    let (p2, d2) = (participant.clone(), device.clone());
    let registered = tokio::task::spawn_blocking(move || {
        let known = store.devices(&p2)?;
        if !core::admit_device(&known, &d2, max_devices) {
            return Ok(None);
        }
        let acked = store.touch_device(&p2, &d2, now_ms())?;
        let pending = store.pending(&p2, &d2, acked)?;
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
    // Version 2: the device's latest archive checkpoint, before any
    // delivery, so the client checks its archive before it adds to it.
    if shared.receipts.is_some() {
        let store = shared.store.clone();
        let (p2, d2) = (participant.clone(), device.clone());
        let latest = tokio::task::spawn_blocking(move || store.archive_checkpoint(&p2, &d2)).await;
        // A stored checkpoint that does not decode is a storage fault:
        // answering `None` would skip the client's rollback check.
        let checkpoint = match latest {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(b))) => match SignedCheckpoint::from_bytes(&b) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, %participant, %device, "stored archive checkpoint is corrupt");
                    return Err((Some(send), ErrorCode::Internal, "storage failure".into()));
                }
            },
            _ => {
                return Err((Some(send), ErrorCode::Internal, "storage failure".into()));
            }
        };
        let frame = wire::encode_frame(&Frame::CheckpointLatest { checkpoint });
        if let Err(e) = send.write_all(&frame).await {
            return Err((
                None,
                ErrorCode::Internal,
                format!("writing CheckpointLatest: {e}"),
            ));
        }
    }
    shared
        .metrics
        .sessions_authenticated
        .fetch_add(1, Ordering::Relaxed);
    info!(%participant, %device, pending, "authenticated");
    Ok((send, recv, registration, rx, acked))
}
