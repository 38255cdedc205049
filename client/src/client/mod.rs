//! The embeddable client: a background connection manager (connect,
//! authenticate, receive, archive, acknowledge, resend the outbox, reconnect
//! with exponential backoff and jitter) and an async API on top.
//!
//! ```text
//!  Client::send ──seal──▶ outbox (fsync) ──▶ session writer ──Send──▶ relay
//!                                 ▲                                   │
//!                 Accepted: archive sent copy, remove from outbox ◀───┤
//!  events ◀── Message/Quarantined ◀── verify+open (own roster) ◀─ Deliver
//!                                      archive (fsync) ──▶ Ack{up_to_seq}
//! ```
//! Every delivered envelope is checked against this client's own pinned
//! roster, never the relay's word: sender known, allowed to post in the
//! channel (an observer's post is a relay fault), recipient list exactly the
//! channel's, signature, key commitment, decryption. A failure goes to the
//! quarantine and is still acknowledged, so a poisoned message cannot block
//! the inbox. `Ack` is sent only after the archive flush.
//!
//! Modules: `session` (the connection manager and a session's frame loop),
//! `delivery` (verifying, opening, wrap checks, archiving or quarantining a
//! delivery; archiving our accepted messages), `roster_sync` (version 2's
//! roster log), `evidence` (receipts and archive checkpoints), `sending`
//! (sealing into the outbox, waiting for the answer, resealing, resending),
//! `coordination` (TLP ceilings, direct conversations, sharing).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt as _;
use tallinn_common::envelope::{EnvelopeError, Header, UntrustedEnvelope, VerifiedEnvelope};
use tallinn_common::identity::{DeviceId, Identity};
use tallinn_common::message::MsgId;
use tallinn_common::roster::{PostError, Roster, RosterLog};
use tallinn_common::text::escape_line as esc;
use tallinn_common::wire::{self, ErrorCode, Frame};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::archive::{Archive, ArchiveError, Inserted, Quarantined, Record};
use crate::config::Trust;
use crate::connection::{self, ConnectError, Session};
use crate::defaults;
use crate::outbox::Outbox;
use crate::roster::ClientRoster;

/// Everything a client needs.
#[derive(Clone)]
pub struct Settings {
    /// Relay address.
    pub relay: SocketAddr,
    /// TLS server name.
    pub server_name: String,
    /// Trust anchor for the relay (required to connect).
    pub trust: Option<Trust>,
    /// Our identity (this device's key file).
    pub identity: Arc<Identity>,
    /// Retired encryption keys of this device (version 2 rotation), tried
    /// when a delivery does not open with `identity`.
    pub retired: Vec<Arc<Identity>>,
    /// Device label.
    pub device: DeviceId,
    /// Our pinned roster file (version 1; for a version-2 client, the
    /// roster it used before the roster log was installed).
    pub roster: Arc<Roster>,
    /// Version 2: the pinned deployment fingerprint. When set, the client
    /// runs the roster log (fetched from the relay, checked against this
    /// pin, kept in the archive).
    pub deployment: Option<[u8; 32]>,
    /// Directory of this identity+device's archive database.
    pub archive_dir: PathBuf,
    /// Handshake + auth timeout.
    pub connect_timeout: Duration,
    /// How long `send` waits for `Accepted`.
    pub send_timeout: Duration,
    /// Reconnect backoff cap.
    pub max_backoff: Duration,
    /// Also offer classical TLS key exchanges (default: X25519MLKEM768 only).
    pub allow_classical_key_exchange: bool,
    /// Version 2: which wraps of a delivery are recomputed from its content
    /// key (a mismatch is quarantined).
    pub check_wraps: crate::config::WrapCheck,
}

/// Client failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The archive or outbox failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Our roster does not let us post there (checked before anything is sent).
    #[error("cannot post: {0}")]
    NotAllowed(#[from] PostError),
    /// Sealing failed (e.g. our key differs from the roster's).
    #[error("cannot seal: {0}")]
    Seal(EnvelopeError),
    /// The relay refused the message for good; it stays in the outbox,
    /// marked refused and no longer sent, until resent or dropped.
    #[error("the relay rejected message {msg_id}: {code}: {reason}")]
    Rejected {
        /// Message id.
        msg_id: MsgId,
        /// Error code.
        code: ErrorCode,
        /// Reason.
        reason: String,
    },
    /// Not accepted yet; the message stays in the outbox and is resent on
    /// the next connection.
    #[error("message {msg_id} is queued in the outbox but not yet accepted: {why}")]
    Queued {
        /// Message id.
        msg_id: MsgId,
        /// Why it is not yet accepted.
        why: String,
    },
    /// The sealed message is larger than the protocol's envelope limit.
    #[error(
        "message too large: {size} bytes sealed, the limit is {max}; send large files another way"
    )]
    TooLarge {
        /// Sealed size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// The message's TLP label is above the channel's ceiling (`max_tlp`
    /// in the roster); nothing was stored or sent.
    #[error("{tlp} is above the ceiling of {channel} ({max}){hint}")]
    AboveTlp {
        /// The channel or conversation.
        channel: String,
        /// The message's label.
        tlp: tallinn_common::message::Tlp,
        /// The channel's ceiling.
        max: tallinn_common::message::Tlp,
        /// Where the label may go instead, if anywhere.
        hint: String,
    },
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// The connection manager stopped for good (a refusal that retrying
    /// cannot fix: revoked, a roster log or an archive it cannot trust).
    #[error("{0}")]
    Stopped(String),
    /// Version 2: the relay refused a submitted roster-log entry.
    #[error("the relay refused the roster entry: {0}")]
    RosterRefused(String),
}

/// What the client reports as it works.
#[derive(Debug, Clone)]
pub enum Event {
    /// Authenticated; `pending` deliveries are waiting.
    Connected {
        /// Backlog size per `Welcome`.
        pending: u64,
    },
    /// A new message was verified, decrypted and archived (durably).
    Message(Box<Record>),
    /// A new message was archived (internal: counted, not sent, when nobody
    /// took the event stream).
    Archived,
    /// A delivery failed verification and was quarantined.
    Quarantined(Box<Quarantined>),
    /// Our message was accepted by the relay.
    Accepted {
        /// Message id.
        msg_id: MsgId,
        /// Relay seq (0 if it was a duplicate of an earlier acceptance).
        seq: u64,
    },
    /// The connection was lost; the client reconnects.
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// The connection state, observable with [`Client::state`].
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Whether a session is up.
    pub connected: bool,
    /// Sessions established so far.
    pub sessions: u64,
    /// `Welcome.pending` of the current session.
    pub pending: u64,
    /// Deliveries processed (archived, duplicate or quarantined) in the
    /// current session.
    pub delivered: u64,
    /// New messages archived since start.
    pub archived: u64,
    /// Quarantined since start.
    pub quarantined: u64,
    /// A non-transient error that stopped the connection manager.
    pub fatal: Option<String>,
    /// Version 2: the roster log is as current as the relay's (the fetch of
    /// this session was answered completely).
    pub roster_synced: bool,
    /// Version 2: the roster epoch in force.
    pub roster_epoch: Option<u64>,
    /// Version 2: the archive length whose checkpoint this session settled
    /// (kept by the relay, or refused by it: logged).
    pub checkpointed: Option<u64>,
    /// The last transient error.
    pub last_error: Option<String>,
}

type Waiter = oneshot::Sender<Result<u64, ClientError>>;

/// The msg_id of a `Rejected` that refuses a `Checkpoint` (PROTOCOL.md §17.2).
const CHECKPOINT_REFUSED: MsgId = tallinn_common::evidence::CHECKPOINT_REFUSED;
mod coordination;
mod delivery;
mod evidence;
mod roster_sync;
mod sending;
mod session;

use self::coordination::check_tlp;
pub use self::coordination::ShareResult;
use self::delivery::admit;
pub(crate) use self::delivery::open_with_any_key;
use self::session::manager;

type WaitAccepted = oneshot::Receiver<Result<u64, ClientError>>;

struct Inner {
    settings: Settings,
    /// The roster in force (version 2: advances as the log does).
    roster: std::sync::RwLock<Arc<ClientRoster>>,
    /// Our messages refused with `stale_roster`, re-sealed once the log
    /// has been fetched again.
    stale: Mutex<Vec<MsgId>>,
    /// The pending roster-entry submission's answer.
    roster_submit: Mutex<Option<oneshot::Sender<Result<u64, String>>>>,
    archive: Archive,
    outbox: Outbox,
    waiters: Mutex<HashMap<MsgId, Waiter>>,
    writer: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    state: watch::Sender<State>,
    events: mpsc::UnboundedSender<Event>,
    /// Whether events are wanted: true until [`Client::discard_events`], so
    /// nothing is missed before the stream is taken; a program that never
    /// reads them (a CLI `sync`) turns them off so a large backlog does not
    /// pile up copies of every record in memory.
    subscribed: std::sync::atomic::AtomicBool,
    /// `tallinn archive recover`: accept an archive that does not match the
    /// device's last checkpoint, and record that it was accepted.
    recover: std::sync::atomic::AtomicBool,
}

/// A running client.
pub struct Client {
    inner: Arc<Inner>,
    events: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

fn now_ms() -> u64 {
    tallinn_common::unix_ms(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// The roster a client starts with: the roster file (version 1), or the
/// roster log stored in the archive, re-verified against the pinned
/// deployment (version 2; empty until the first fetch).
fn initial_roster(settings: &Settings, archive: &Archive) -> Result<ClientRoster, ClientError> {
    let Some(deployment) = settings.deployment else {
        return Ok(ClientRoster::V1((*settings.roster).clone()));
    };
    let entries = archive.roster_entries()?;
    let log = if entries.is_empty() {
        None
    } else {
        Some(
            RosterLog::from_entries(entries, Some(&deployment)).map_err(|e| {
                ClientError::Archive(ArchiveError::Unreadable(format!(
                    "the roster log in the archive does not verify: {e}"
                )))
            })?,
        )
    };
    Ok(ClientRoster::V2 { deployment, log })
}

impl Inner {
    fn roster_submit_pending(&self) -> bool {
        self.roster_submit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn finish_roster_submit(&self, result: Result<u64, String>) {
        if let Some(tx) = self
            .roster_submit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(result);
        }
    }

    /// The roster in force.
    fn roster(&self) -> Arc<ClientRoster> {
        self.roster
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Client {
    /// The roster in force (version 2: the log as far as fetched).
    pub fn roster(&self) -> Arc<ClientRoster> {
        self.inner.roster()
    }

    /// Opens the archive and outbox without connecting (for local commands).
    ///
    /// # Errors
    /// [`ClientError::Archive`] (e.g. another process holds the archive).
    pub fn open(settings: Settings) -> Result<Client, ClientError> {
        let db = crate::archive::ArchiveDb::open(&settings.archive_dir)?;
        let archive = Archive::with_db(db.clone(), &settings.identity)?;
        let key = archive.storage_key(b"tallinn/1 archive");
        let outbox = Outbox::open(&db, &key)?;
        let roster = initial_roster(&settings, &archive)?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (state, _) = watch::channel(State::default());
        let (stop, _) = watch::channel(false);
        Ok(Client {
            inner: Arc::new(Inner {
                settings,
                roster: std::sync::RwLock::new(Arc::new(roster)),
                stale: Mutex::new(Vec::new()),
                roster_submit: Mutex::new(None),
                archive,
                outbox,
                waiters: Mutex::new(HashMap::new()),
                writer: Mutex::new(None),
                state,
                events: events_tx,
                subscribed: std::sync::atomic::AtomicBool::new(true),
                recover: std::sync::atomic::AtomicBool::new(false),
            }),
            events: Mutex::new(Some(events_rx)),
            stop,
            task: Mutex::new(None),
        })
    }

    /// Opens the archive and starts the connection manager in the background
    /// (it keeps reconnecting until [`Client::close`] or a fatal error).
    ///
    /// # Errors
    /// As [`Client::open`].
    pub fn start(settings: Settings) -> Result<Client, ClientError> {
        let c = Self::open(settings)?;
        c.spawn_manager();
        Ok(c)
    }

    /// [`Client::start`] for `tallinn archive recover`: an archive that
    /// does not match this device's last checkpoint (truncated, or an
    /// older copy put back) is accepted as it is, the recovery is recorded
    /// in the archive (and exported), and the client goes on.
    ///
    /// # Errors
    /// As [`Client::open`].
    pub fn start_recovering(settings: Settings) -> Result<Client, ClientError> {
        let c = Self::open(settings)?;
        c.inner
            .recover
            .store(true, std::sync::atomic::Ordering::SeqCst);
        c.spawn_manager();
        Ok(c)
    }

    /// [`Client::start`], then waits until the first session is up.
    ///
    /// # Errors
    /// [`ClientError::Connect`] if the first attempt fails.
    pub async fn connect(settings: Settings) -> Result<Client, ClientError> {
        let timeout = settings.connect_timeout;
        let c = Self::start(settings)?;
        c.wait_connected(timeout).await?;
        Ok(c)
    }

    fn spawn_manager(&self) {
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.is_none() {
            *task = Some(tokio::spawn(manager(
                self.inner.clone(),
                self.stop.subscribe(),
            )));
        }
    }

    /// Waits until a session is up, or reports why not.
    ///
    /// # Errors
    /// [`ClientError::Connect`] with the first failure's description.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut rx = self.inner.state.subscribe();
        let res = tokio::time::timeout(timeout, async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.connected {
                        return Ok(());
                    }
                    if let Some(f) = &s.fatal {
                        return Err(f.clone());
                    }
                    if let Some(e) = &s.last_error {
                        if s.sessions == 0 {
                            return Err(e.clone());
                        }
                    }
                }
                if rx.changed().await.is_err() {
                    return Err("client stopped".to_string());
                }
            }
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ClientError::Connect(ConnectError::Lost(e))),
            Err(_) => Err(ClientError::Connect(ConnectError::Timeout(
                "connecting to the relay",
            ))),
        }
    }

    /// The archive.
    pub fn archive(&self) -> &Archive {
        &self.inner.archive
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// A watch of the connection state.
    pub fn state(&self) -> watch::Receiver<State> {
        self.inner.state.subscribe()
    }

    /// Stops producing events (for programs that never read them).
    pub fn discard_events(&self) {
        self.inner
            .subscribed
            .store(false, std::sync::atomic::Ordering::Relaxed);
        drop(self.events.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// The event stream (can be taken once). Events are buffered from the
    /// start, so none is missed before this is called.
    pub fn events(&self) -> Option<mpsc::UnboundedReceiver<Event>> {
        self.inner
            .subscribed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.events.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Waits until the backlog announced at connect time has been received
    /// and archived, and the outbox is empty (or `timeout` passes).
    ///
    /// # Errors
    /// [`ClientError::Queued`] if the outbox did not drain, or
    /// [`ClientError::Connect`] if the connection failed for good.
    pub async fn sync(
        &self,
        timeout: Duration,
        mut progress: impl FnMut(&State),
    ) -> Result<State, ClientError> {
        let mut rx = self.inner.state.subscribe();
        let res = tokio::time::timeout(timeout, async {
            loop {
                let s = rx.borrow_and_update().clone();
                progress(&s);
                if let Some(f) = &s.fatal {
                    return Err(ClientError::Stopped(f.clone()));
                }
                let v2 = self.inner.roster().is_v2();
                let roster_ok = !v2 || s.roster_synced;
                let checkpoint_ok = !v2 || s.checkpointed == Some(self.inner.archive.len());
                if s.connected
                    && roster_ok
                    && checkpoint_ok
                    && s.delivered >= s.pending
                    && self.inner.outbox.pending_len() == 0
                {
                    return Ok(s);
                }
                if rx.changed().await.is_err() {
                    return Err(ClientError::Closed);
                }
            }
        })
        .await;
        match res {
            Ok(r) => r,
            Err(_) => Err(ClientError::Queued {
                msg_id: MsgId([0; 16]),
                why: format!(
                    "sync did not finish in {timeout:?} ({} messages still in the outbox)",
                    self.inner.outbox.pending_len()
                ),
            }),
        }
    }

    /// Re-checks the whole archive ([`Archive::verify_with`]) against this
    /// client's roster: version 2, every record against the state of its
    /// own epoch.
    ///
    /// # Errors
    /// [`ClientError::Archive`] on a database failure.
    pub fn verify_archive(
        &self,
        deep: bool,
        progress: impl FnMut(u64),
    ) -> Result<crate::archive::VerifyReport, ClientError> {
        let s = &self.inner.settings;
        let roster = self.inner.roster();
        Ok(self.inner.archive.verify_with(
            roster.as_ref(),
            &s.identity,
            s.device.as_str(),
            deep,
            progress,
        )?)
    }

    /// Version 2: submits a roster-log entry (approved by whoever it
    /// needs) and waits for the relay's answer: the new epoch, once the
    /// relay appended it durably.
    ///
    /// # Errors
    /// [`ClientError::RosterRefused`] with the relay's reason;
    /// [`ClientError::Queued`] if no session is up or no answer came in time.
    pub async fn submit_roster_entry(
        &self,
        entry: &tallinn_common::roster::SignedEntry,
    ) -> Result<u64, ClientError> {
        let (tx, rx) = oneshot::channel();
        *self
            .inner
            .roster_submit
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let not_sent = || ClientError::Queued {
            msg_id: MsgId([0; 16]),
            why: "not connected to the relay".into(),
        };
        if !self.inner.try_write(&Frame::RosterSubmit {
            entry: wire::EntryBytes(entry.encode()),
        }) {
            return Err(not_sent());
        }
        match tokio::time::timeout(self.inner.settings.send_timeout, rx).await {
            Ok(Ok(Ok(index))) => {
                // The relay pushes the entry to this session too: wait until
                // it is verified and in force here, so whoever submitted sees
                // the new epoch locally (bounded; the next fetch brings it
                // anyway).
                let mut st = self.inner.state.subscribe();
                let _ = tokio::time::timeout(self.inner.settings.send_timeout, async {
                    loop {
                        if self.inner.roster().epoch().is_some_and(|e| e >= index) {
                            return;
                        }
                        if st.changed().await.is_err() {
                            return;
                        }
                    }
                })
                .await;
                Ok(index)
            }
            Ok(Ok(Err(reason))) => Err(ClientError::RosterRefused(reason)),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Queued {
                msg_id: MsgId([0; 16]),
                why: "no answer from the relay in time".into(),
            }),
        }
    }

    /// Verifies every quarantined delivery again against the roster in
    /// force (version 1: the roster file as loaded; version 2: the log as
    /// far as fetched) and archives those that verify and open now.
    /// Returns `(archived, still quarantined)`.
    ///
    /// # Errors
    /// [`ClientError::Archive`].
    pub fn retry_quarantine(&self) -> Result<(usize, usize), ClientError> {
        let events = roster_sync::reverify_quarantine(&self.inner)?;
        let archived = events.len();
        let listening = self
            .inner
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed);
        for ev in events {
            if listening && !matches!(ev, Event::Archived) {
                let _ = self.inner.events.send(ev);
            }
        }
        Ok((archived, self.inner.archive.quarantined()?.len()))
    }

    /// Deletes quarantined deliveries received before `before_ms` (unix
    /// ms); returns how many.
    ///
    /// # Errors
    /// [`ClientError::Archive`].
    pub fn purge_quarantine(&self, before_ms: u64) -> Result<usize, ClientError> {
        let mut n = 0;
        for (i, q) in self.inner.archive.quarantined_numbered()? {
            if q.received_at_ms < before_ms {
                self.inner.archive.release_quarantined(i)?;
                n += 1;
            }
        }
        self.inner.archive.flush()?;
        Ok(n)
    }

    /// Stops the connection manager and closes the session gracefully.
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = self.inner.archive.flush();
    }
}

impl Inner {
    /// Queues a frame on the current session without waiting. `false` if
    /// there is no session or its queue is full: the caller must make sure
    /// the frame is sent later (outbox entries are resent by every new
    /// session, and by [`schedule_retry`]).
    fn try_write(&self, frame: &Frame) -> bool {
        match self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(w) => w.try_send(wire::encode_frame(frame)).is_ok(),
            None => false,
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        self.state.send_modify(f);
    }

    fn finish_waiter(&self, msg_id: &MsgId, result: Result<u64, ClientError>) {
        if let Some(w) = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(msg_id)
        {
            let _ = w.send(result);
        }
    }
}
