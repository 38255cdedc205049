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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt as _;
use tallinn_common::envelope::{EnvelopeError, Header, UntrustedEnvelope, VerifiedEnvelope};
use tallinn_common::identity::{DeviceId, Identity};
use tallinn_common::message::{Message, MsgId};
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
use crate::outbox::{Outbox, OutboxEntry};
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
mod evidence;
mod roster_sync;

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

    /// Seals an outbox entry again against the current roster and clock,
    /// under a new msg_id that replaces it (and its refusal) in one durable
    /// step; it is sent on the next session (`tallinn outbox resend`).
    /// Returns the new msg_id, or `None` if there is no such entry.
    ///
    /// # Errors
    /// [`ClientError::Seal`] if the message can no longer be sealed (the
    /// channel is gone, the sender may not post), [`ClientError::Archive`].
    pub fn resend(&self, msg_id: &MsgId) -> Result<Option<MsgId>, ClientError> {
        reseal(&self.inner, msg_id)
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

    /// Seals `message` into `channel` and stores it durably in the outbox;
    /// it is sent now if connected, else on the next connection. Checks our
    /// own roster first: an observer or non-member gets an error and nothing
    /// is stored.
    ///
    /// # Errors
    /// [`ClientError::NotAllowed`], [`ClientError::Seal`], [`ClientError::Archive`].
    pub fn queue(&self, channel: &str, message: &Message) -> Result<MsgId, ClientError> {
        let (msg_id, _) = self.queue_inner(channel, message, false)?;
        Ok(msg_id)
    }

    fn queue_inner(
        &self,
        channel: &str,
        message: &Message,
        wait: bool,
    ) -> Result<(MsgId, Option<WaitAccepted>), ClientError> {
        let s = &self.inner.settings;
        let roster = self.inner.roster();
        roster.check_post(s.identity.id().as_str(), s.device.as_str(), channel)?;
        let sealed = roster
            .seal(&s.identity, s.device.as_str(), channel, message, now_ms())
            .map_err(ClientError::Seal)?;
        // Refuse locally what the relay would refuse: an oversized message
        // would otherwise sit in the outbox and be resent forever.
        let max = tallinn_common::defaults::MAX_ENVELOPE_LEN;
        if sealed.as_bytes().len() > max {
            return Err(ClientError::TooLarge {
                size: sealed.as_bytes().len(),
                max,
            });
        }
        let msg_id = sealed.msg_id();
        let entry = OutboxEntry {
            msg_id,
            channel: channel.to_string(),
            subject: message.subject.clone(),
            created_at_ms: now_ms(),
            envelope: sealed.as_bytes().to_vec(),
            content_key: *sealed.content_key(),
            attempts: 0,
        };
        let rx = if wait {
            let (tx, rx) = oneshot::channel();
            self.inner
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(msg_id, tx);
            Some(rx)
        } else {
            None
        };
        self.inner.outbox.put(&entry)?;
        let written = self.inner.try_write(&Frame::Send {
            envelope: entry.envelope.clone(),
        });
        if !written && self.inner.state.borrow().connected {
            // Connected but the session's queue is full: try again shortly
            // rather than waiting for the next session.
            schedule_retry(self.inner.clone(), vec![msg_id]);
        }
        Ok((msg_id, rx))
    }

    /// Queues the message and waits for `Accepted` (up to the send timeout).
    ///
    /// # Errors
    /// [`ClientError::Queued`] if not accepted in time (it stays in the
    /// outbox), [`ClientError::Rejected`] for a permanent refusal, and the
    /// errors of [`Client::queue`].
    pub async fn send(
        &self,
        channel: &str,
        message: &Message,
    ) -> Result<(MsgId, u64), ClientError> {
        let (msg_id, rx) = self.queue_inner(channel, message, true)?;
        let rx = rx.ok_or(ClientError::Closed)?;
        let mut state = self.inner.state.subscribe();
        let fatal = async move {
            loop {
                if let Some(f) = state.borrow_and_update().fatal.clone() {
                    return f;
                }
                if state.changed().await.is_err() {
                    return "client stopped".to_string();
                }
            }
        };
        tokio::select! {
            r = rx => match r {
                Ok(Ok(seq)) => Ok((msg_id, seq)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ClientError::Queued { msg_id, why: "client closed".into() }),
            },
            f = fatal => Err(ClientError::Queued { msg_id, why: f }),
            _ = tokio::time::sleep(self.inner.settings.send_timeout) => {
                Err(ClientError::Queued { msg_id, why: "no answer from the relay in time".into() })
            }
        }
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

    /// Sends every pending outbox entry again on the current session now
    /// (the relay answers an already-accepted one `duplicate`, which
    /// counts as accepted); without a session they wait for the next one.
    /// Returns how many were pending.
    pub fn retry_outbox(&self) -> usize {
        let ids: Vec<MsgId> = self
            .inner
            .outbox
            .pending()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.msg_id)
            .collect();
        let n = ids.len();
        if n > 0 && self.inner.state.borrow().connected {
            let mut again = Vec::new();
            for id in ids {
                if let Ok(Some(e)) = self.inner.outbox.get(&id) {
                    if !self.inner.try_write(&Frame::Send {
                        envelope: e.envelope.clone(),
                    }) {
                        again.push(id);
                    }
                }
            }
            if !again.is_empty() {
                schedule_retry(self.inner.clone(), again);
            }
        }
        n
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

async fn manager(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let s = inner.settings.clone();
    let endpoint =
        match connection::endpoint(s.trust.as_ref(), s.relay, s.allow_classical_key_exchange) {
            Ok(e) => e,
            Err(e) => {
                inner.update(|st| st.fatal = Some(e.to_string()));
                return;
            }
        };
    let mut backoff = defaults::MIN_BACKOFF;
    loop {
        if *stop.borrow() {
            break;
        }
        let attempt = tokio::time::timeout(
            s.connect_timeout,
            connection::establish(&endpoint, s.relay, &s.server_name, &s.identity, &s.device),
        )
        .await
        .unwrap_or(Err(ConnectError::Timeout("connecting to the relay")));
        match attempt {
            Ok(session) => {
                backoff = defaults::MIN_BACKOFF;
                info!(relay = %esc(&session.relay_name), pending = session.pending, "connected");
                let conn = session.conn.clone();
                let ended = run_session(&inner, session, stop.clone()).await;
                if *stop.borrow() {
                    conn.close(0u32.into(), b"bye");
                }
                *inner.writer.lock().unwrap_or_else(|p| p.into_inner()) = None;
                // Replaced by a newer session of the same device label: a
                // second installation shares the label. Reconnecting would
                // take the cursor back and forth forever: stop and say so.
                let replaced = matches!(
                    &ended,
                    Err(ConnectError::Refused {
                        code: ErrorCode::Replaced,
                        ..
                    })
                );
                // Revoked or removed from the roster while connected, or a
                // roster log this client cannot trust: reconnecting cannot
                // help. Stop and say what happened.
                let permanent = match &ended {
                    Err(ConnectError::Refused {
                        code: code @ (ErrorCode::Revoked | ErrorCode::UnknownParticipant),
                        reason,
                    }) => Some(format!("the relay closed the session: {code}: {reason}")),
                    Err(
                        e @ (ConnectError::UntrustedRoster(_) | ConnectError::ArchiveBehind(_)),
                    ) => Some(e.to_string()),
                    _ => None,
                };
                let reason = match ended {
                    Ok(()) => "session ended".to_string(),
                    Err(e) => {
                        if !e.is_transient()
                            && !matches!(e, ConnectError::Lost(_) | ConnectError::Protocol(_))
                        {
                            warn!(error = %esc(&e.to_string()), "session ended by the relay");
                        }
                        e.to_string()
                    }
                };
                inner.update(|st| {
                    st.connected = false;
                    st.last_error = Some(reason.clone());
                });
                let _ = inner.events.send(Event::Disconnected { reason });
                if let Some(why) = permanent {
                    warn!(reason = %esc(&why), "stopping: not retried");
                    inner.update(|st| st.fatal = Some(why));
                    break;
                }
                if replaced {
                    inner.update(|st| {
                        st.fatal = Some(format!(
                            "another session of {} with device label {:?} took over; \
                             every installation needs its own device label",
                            s.identity.id(),
                            s.device.as_str()
                        ));
                    });
                    break;
                }
            }
            Err(e) => {
                debug!(error = %e, "connect failed");
                if !e.is_transient() {
                    inner.update(|st| st.fatal = Some(e.to_string()));
                    break;
                }
                inner.update(|st| st.last_error = Some(e.to_string()));
            }
        }
        if *stop.borrow() {
            break;
        }
        // Jitter: a random pause between half and all of the current backoff.
        let pause = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        backoff = (backoff * 2).min(s.max_backoff);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => break,
        }
    }
    endpoint.close(0u32.into(), b"bye");
}

async fn run_session(
    inner: &Arc<Inner>,
    session: Session,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnectError> {
    let Session {
        conn,
        mut send,
        mut recv,
        pending,
        ..
    } = session;
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if send.write_all(&b).await.is_err() {
                return;
            }
        }
        // Every queued frame (the last Ack included) is written: finish the
        // stream and give the relay a moment to read it before we close.
        if send.finish().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
        }
    });
    let (ftx, mut frx) = mpsc::channel::<Result<Frame, ConnectError>>(defaults::ARCHIVE_BATCH * 2);
    let rconn = conn.clone();
    let reader = tokio::spawn(async move {
        loop {
            let f = connection::read_frame(&mut recv, &rconn).await;
            let stop = f.is_err();
            if ftx.send(f).await.is_err() || stop {
                break;
            }
        }
    });
    *inner.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(wtx.clone());
    inner.update(|st| {
        st.connected = true;
        st.sessions += 1;
        st.pending = pending;
        st.delivered = 0;
        st.last_error = None;
        st.roster_synced = false;
        st.checkpointed = None;
    });
    let _ = inner.events.send(Event::Connected { pending });
    // Resend everything still in the outbox: same bytes, same msg_id.
    for e in inner
        .outbox
        .pending()
        .map_err(|e| ConnectError::Protocol(e.to_string()))?
    {
        let _ = wtx
            .send(wire::encode_frame(&Frame::Send {
                envelope: e.envelope.clone(),
            }))
            .await;
    }
    // Version 2: bring the roster log up to date (the relay then pushes
    // every later entry).
    if let Some(f) = roster_sync::fetch_frame(inner) {
        let _ = wtx.send(f).await;
    }
    let result = tokio::select! {
        r = process_frames(inner, &mut frx, &wtx) => r,
        _ = stop.changed() => Ok(()),
    };
    reader.abort();
    *inner.writer.lock().unwrap_or_else(|p| p.into_inner()) = None;
    drop(wtx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    result
}

async fn process_frames(
    inner: &Arc<Inner>,
    frx: &mut mpsc::Receiver<Result<Frame, ConnectError>>,
    wtx: &mpsc::Sender<Vec<u8>>,
) -> Result<(), ConnectError> {
    let mut batch = Vec::with_capacity(defaults::ARCHIVE_BATCH);
    let mut checkpoints = evidence::Checkpoints::default();
    let v2 = inner.roster().is_v2();
    loop {
        let Some(first) = frx.recv().await else {
            return Err(ConnectError::Lost("reader stopped".into()));
        };
        batch.push(first);
        while batch.len() < defaults::ARCHIVE_BATCH {
            match frx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let mut ack = None;
        let mut delivered = 0u64;
        let mut new_events = Vec::new();
        let mut finished = Vec::new();
        let mut failure = None;
        let mut retry = Vec::new();
        let mut reseal_ids = Vec::new();
        let mut roster_advanced = false;
        let mut roster_current = false;
        // Every delivery of the batch is decoded and its signature checked
        // together (one Ed25519 batch verification) before the loop.
        let mut checked = precheck_deliveries(&inner.roster(), &batch);
        let mut admitted = admit_batch(inner, &checked);
        for (i, f) in batch.drain(..).enumerate() {
            let frame = match f {
                Ok(fr) => fr,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            match frame {
                Frame::Deliver { .. } if v2 && !checkpoints.checked => {
                    failure = Some(ConnectError::Protocol(
                        "the relay delivered before sending this device's checkpoint".into(),
                    ));
                    break;
                }
                Frame::Deliver {
                    seq,
                    received_at_ms,
                    envelope,
                } => {
                    let check = checked.get_mut(i).and_then(Option::take);
                    let opened = admitted.get_mut(i).and_then(Option::take);
                    if let Some(ev) =
                        receive(inner, seq, received_at_ms, envelope, check, opened)
                            .map_err(|e| ConnectError::Protocol(format!("archive: {e}")))?
                    {
                        new_events.push(ev);
                    }
                    ack = Some(seq);
                    delivered += 1;
                }
                Frame::Accepted { msg_id, seq } => {
                    if let Some(ev) = accepted(inner, msg_id, seq, None)
                        .map_err(|e| ConnectError::Protocol(format!("archive: {e}")))?
                    {
                        finished.push((msg_id, Ok(seq)));
                        new_events.push(ev);
                    }
                }
                Frame::Receipt { receipt } => {
                    let (msg_id, seq) = (receipt.body.msg_id, receipt.body.seq);
                    if let Some(ev) = accepted(inner, msg_id, seq, Some(&receipt))
                        .map_err(|e| ConnectError::Protocol(format!("archive: {e}")))?
                    {
                        finished.push((msg_id, Ok(seq)));
                        new_events.push(ev);
                    }
                }
                Frame::CheckpointLatest { checkpoint } if !checkpoints.checked => {
                    if let Err(e) = evidence::check_latest(inner, checkpoint, &mut checkpoints) {
                        failure = Some(e);
                        break;
                    }
                }
                Frame::CheckpointLatest { checkpoint } => {
                    match evidence::confirmed(inner, checkpoint, &mut checkpoints) {
                        Ok(index) => inner.update(|st| st.checkpointed = Some(index)),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                Frame::Rejected {
                    msg_id,
                    code,
                    reason,
                } => {
                    let ours = inner
                        .outbox
                        .get(&msg_id)
                        .map_err(|e| ConnectError::Protocol(format!("outbox: {e}")))?
                        .is_some();
                    if msg_id == CHECKPOINT_REFUSED && checkpoints.in_flight.is_some() {
                        // Our checkpoint was refused: logged, and not sent
                        // again until the archive moves.
                        warn!(code = %code, reason = %esc(&reason), "the relay refused this device's archive checkpoint");
                        if let Some(index) = evidence::refused(&mut checkpoints) {
                            inner.update(|st| st.checkpointed = Some(index));
                        }
                    } else if code == ErrorCode::BadRosterEntry && !inner.roster_submit_pending() {
                        // The answer to our fetch: this relay has no roster
                        // log although we pin a deployment.
                        failure = Some(ConnectError::UntrustedRoster(format!(
                            "this client pins a deployment, but the relay answered: {reason}"
                        )));
                        break;
                    } else if code == ErrorCode::BadRosterEntry
                        || (!ours && msg_id == MsgId([0; 16]) && inner.roster_submit_pending())
                    {
                        inner.finish_roster_submit(Err(format!("{code}: {reason}")));
                    } else if code == ErrorCode::Duplicate {
                        // An earlier attempt was accepted (its Accepted was lost).
                        if ours {
                            if let Some(ev) = accepted(inner, msg_id, 0, None)
                                .map_err(|e| ConnectError::Protocol(format!("archive: {e}")))?
                            {
                                finished.push((msg_id, Ok(0)));
                                new_events.push(ev);
                            }
                        }
                    } else if code == ErrorCode::StaleRoster && ours {
                        // Sealed against an epoch the relay no longer
                        // accepts: fetch the log, then seal it again.
                        warn!(%msg_id, reason = %esc(&reason), "stale_roster: fetching the roster log to re-seal");
                        inner
                            .stale
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(msg_id);
                        if let Some(f) = roster_sync::fetch_frame(inner) {
                            let _ = wtx.send(f).await;
                        }
                    } else if code == ErrorCode::ClockSkew && ours {
                        // Sealed too long ago (queued while offline), or our
                        // clock is off: seal the same message again, now.
                        reseal_ids.push(msg_id);
                    } else if matches!(
                        code,
                        ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::ShuttingDown
                    ) {
                        warn!(%msg_id, code = %code, reason = %esc(&reason), "send deferred; stays in the outbox");
                        if ours {
                            retry.push(msg_id);
                        }
                        finished.push((
                            msg_id,
                            Err(ClientError::Queued {
                                msg_id,
                                why: format!("{code}: {reason}"),
                            }),
                        ));
                    } else {
                        // Never silent: the entry stays, marked refused, is
                        // no longer sent, and `tallinn outbox` shows why
                        // until the user resends or drops it.
                        warn!(%msg_id, code = %code, reason = %esc(&reason), "send refused; kept in the outbox, marked refused");
                        if ours {
                            let refusal = crate::outbox::Refusal {
                                code,
                                reason: reason.clone(),
                                at_ms: now_ms(),
                            };
                            inner
                                .outbox
                                .mark_refused(&msg_id, &refusal)
                                .map_err(|e| ConnectError::Protocol(format!("outbox: {e}")))?;
                        }
                        finished.push((
                            msg_id,
                            Err(ClientError::Rejected {
                                msg_id,
                                code,
                                reason,
                            }),
                        ));
                    }
                }
                Frame::RosterEntries {
                    head,
                    first,
                    entries,
                } => match roster_sync::apply_entries(inner, head, first, &entries) {
                    Ok(applied) => {
                        roster_advanced |= applied.advanced;
                        match applied.fetch_more {
                            Some(from) => {
                                let _ = wtx
                                    .send(wire::encode_frame(&Frame::RosterFetch { from }))
                                    .await;
                            }
                            None => roster_current = true,
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                },
                Frame::RosterAccepted { index, .. } => {
                    debug!(index, "roster entry accepted by the relay");
                    inner.finish_roster_submit(Ok(index));
                }
                Frame::Error { code, reason } => {
                    failure = Some(ConnectError::Refused { code, reason });
                    break;
                }
                other => {
                    failure = Some(ConnectError::Protocol(format!(
                        "unexpected {} frame from the relay",
                        other.name()
                    )));
                    break;
                }
            }
        }
        // One durable flush for the whole batch, then acknowledge and report.
        inner
            .archive
            .flush()
            .map_err(|e| ConnectError::Protocol(format!("archive flush: {e}")))?;
        if roster_advanced {
            // Durable before the ack below: released from the quarantine
            // only once archived.
            new_events.extend(
                roster_sync::reverify_quarantine(inner)
                    .map_err(|e| ConnectError::Protocol(format!("archive: {e}")))?,
            );
        }
        if roster_current {
            roster_sync::reseal_stale(inner);
        }
        if roster_current || roster_advanced {
            let epoch = inner.roster().epoch();
            inner.update(|st| {
                st.roster_epoch = epoch;
                st.roster_synced |= roster_current;
            });
        }
        if let Some(seq) = ack {
            let _ = wtx
                .send(wire::encode_frame(&Frame::Ack { up_to_seq: seq }))
                .await;
        }
        for (id, r) in finished {
            inner.finish_waiter(&id, r);
        }
        let (mut archived, mut quarantined) = (0, 0);
        let listening = inner.subscribed.load(std::sync::atomic::Ordering::Relaxed);
        for ev in new_events {
            match &ev {
                Event::Message(_) | Event::Archived => archived += 1,
                Event::Quarantined(_) => quarantined += 1,
                _ => {}
            }
            if listening && !matches!(ev, Event::Archived) {
                let _ = inner.events.send(ev);
            }
        }
        inner.update(|st| {
            st.delivered += delivered;
            st.archived += archived;
            st.quarantined += quarantined;
        });
        // Version 2: caught up and the archive moved: sign its head.
        let caught_up = {
            let st = inner.state.borrow();
            st.delivered >= st.pending && st.roster_synced && inner.outbox.pending_len() == 0
        };
        if failure.is_none() {
            if let Some(f) = evidence::next_frame(inner, caught_up, &mut checkpoints) {
                let _ = wtx.send(f).await;
            }
        }
        if !retry.is_empty() {
            schedule_retry(inner.clone(), retry);
        }
        for old_id in reseal_ids {
            match reseal(inner, &old_id) {
                Ok(Some(new_id)) => {
                    warn!(old = %old_id, new = %new_id, "clock_skew: message sealed again with the current time");
                    inner.finish_waiter(
                        &old_id,
                        Err(ClientError::Queued {
                            msg_id: new_id,
                            why: format!("re-sealed as {new_id} after clock_skew"),
                        }),
                    );
                }
                Ok(None) => {}
                Err(e) => warn!(msg_id = %old_id, error = %e, "could not re-seal after clock_skew"),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
}

/// Seals an outbox message again with the current time and roster (after
/// `clock_skew`, or `tallinn outbox resend` after a refusal): the same
/// channel and plaintext under a new msg_id. The new entry replaces the old
/// one (and its refusal) in one durable step ([`Outbox::replace`]), then it
/// is sent if a session is up.
fn reseal(inner: &Inner, old: &MsgId) -> Result<Option<MsgId>, ClientError> {
    let Some(entry) = inner.outbox.get(old)? else {
        return Ok(None);
    };
    let s = &inner.settings;
    let roster = inner.roster();
    let opened = UntrustedEnvelope::decode(&entry.envelope)
        .and_then(|u| u.verify(roster.as_ref()))
        .and_then(|v| v.open_with_content_key(&entry.content_key))
        .map_err(ClientError::Seal)?;
    let sealed = roster
        .seal(
            &s.identity,
            s.device.as_str(),
            &entry.channel,
            opened.message(),
            now_ms(),
        )
        .map_err(ClientError::Seal)?;
    let fresh = OutboxEntry {
        msg_id: sealed.msg_id(),
        channel: entry.channel.clone(),
        subject: entry.subject.clone(),
        created_at_ms: entry.created_at_ms,
        envelope: sealed.as_bytes().to_vec(),
        content_key: *sealed.content_key(),
        attempts: entry.attempts.saturating_add(1),
    };
    inner.outbox.replace(old, &fresh)?;
    let _ = inner.try_write(&Frame::Send {
        envelope: fresh.envelope.clone(),
    });
    Ok(Some(fresh.msg_id))
}

/// Resends deferred messages (rate limited, relay busy) after a pause with
/// jitter, on whatever session is up by then (a new session resends the
/// whole outbox anyway).
fn schedule_retry(inner: Arc<Inner>, ids: Vec<MsgId>) {
    tokio::spawn(async move {
        let pause = Duration::from_millis(rand::rng().random_range(500..1500));
        tokio::time::sleep(pause).await;
        let mut again = Vec::new();
        for id in ids {
            if let Ok(Some(e)) = inner.outbox.get(&id) {
                if !inner.try_write(&Frame::Send {
                    envelope: e.envelope.clone(),
                }) && inner.state.borrow().connected
                {
                    again.push(id);
                }
            }
        }
        if !again.is_empty() {
            schedule_retry(inner, again);
        }
    });
}

/// A delivery decoded and verified against the client's roster: the
/// verified envelope, or the claimed header (if it decoded) and the error.
type Checked = Result<VerifiedEnvelope, (Option<Header>, EnvelopeError)>;

/// Decodes every `Deliver` of a batch and verifies each strictly
/// ([`UntrustedEnvelope::verify_each_strict`]). Aligned with `batch`; `None` for other frames.
fn precheck_deliveries(
    roster: &ClientRoster,
    batch: &[Result<Frame, ConnectError>],
) -> Vec<Option<Checked>> {
    let mut out: Vec<Option<Checked>> = Vec::with_capacity(batch.len());
    let mut decoded = Vec::new();
    let mut slots = Vec::new();
    for (i, f) in batch.iter().enumerate() {
        match f {
            Ok(Frame::Deliver { envelope, .. }) => match UntrustedEnvelope::decode(envelope) {
                Ok(u) => {
                    slots.push((i, u.claimed_header().clone()));
                    decoded.push(u);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err((None, e)))),
            },
            _ => out.push(None),
        }
    }
    // Strictly, one by one (a batch check may accept a small-order R,
    // PROTOCOL.md §10 item 32, which a recipient must quarantine), on both
    // cores.
    let verified = on_two_cores(decoded, |u| u.verify(roster));
    for ((i, claimed), v) in slots.into_iter().zip(verified) {
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(v.map_err(|e| (Some(claimed), e)));
        }
    }
    out
}

/// Fewest items worth a second thread (spawning one costs tens of µs; a
/// delivery's crypto about 100-400 µs).
const PARALLEL_MIN: usize = 8;

/// `f` over `items`, in order, on this thread and a second one for the
/// second half when there are at least [`PARALLEL_MIN`] items. The
/// deliveries' crypto (strict verification, opening, the beneficiary's
/// wraps) runs on both cores; archiving them stays in order, on one.
fn on_two_cores<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() < PARALLEL_MIN {
        return items.into_iter().map(f).collect();
    }
    let mut first = items;
    let second = first.split_off(first.len().div_ceil(2));
    std::thread::scope(|s| {
        let f = &f;
        let h = s.spawn(move || second.into_iter().map(f).collect::<Vec<R>>());
        let mut out: Vec<R> = first.into_iter().map(f).collect();
        match h.join() {
            Ok(rest) => out.extend(rest),
            Err(p) => std::panic::resume_unwind(p),
        }
        out
    })
}

/// Opens each verified delivery of a batch and checks its wraps
/// ([`admit`]) on both cores; aligned with `checked`, `None` where there is
/// nothing to open.
fn admit_batch(
    inner: &Inner,
    checked: &[Option<Checked>],
) -> Vec<Option<Result<tallinn_common::envelope::Opened, EnvelopeError>>> {
    let jobs: Vec<(usize, &VerifiedEnvelope)> = checked
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Some(Ok(v)) => Some((i, v)),
            _ => None,
        })
        .collect();
    let mut out: Vec<Option<_>> = (0..checked.len()).map(|_| None).collect();
    for (i, r) in on_two_cores(jobs, |(i, v)| (i, admit(inner, v))) {
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(r);
        }
    }
    out
}

/// Opens a verified delivery for this device: with the current key file,
/// else with a retired one (a message sealed before a rotation).
pub(crate) fn open_with_any_key(
    s: &Settings,
    verified: &VerifiedEnvelope,
) -> Result<tallinn_common::envelope::Opened, EnvelopeError> {
    let device = Some(s.device.as_str());
    match verified.open_as(&s.identity, device) {
        Err(EnvelopeError::DecryptFailed) => {
            for old in &s.retired {
                if let Ok(o) = verified.open_as(old, device) {
                    return Ok(o);
                }
            }
            Err(EnvelopeError::DecryptFailed)
        }
        other => other,
    }
}

/// Verifies (unless `check` says how that went), opens and archives one
/// delivery (not flushed), or quarantines it.
fn receive(
    inner: &Inner,
    seq: u64,
    received_at_ms: u64,
    envelope: Vec<u8>,
    check: Option<Checked>,
    opened: Option<Result<tallinn_common::envelope::Opened, EnvelopeError>>,
) -> Result<Option<Event>, ArchiveError> {
    let check = match check {
        Some(c) => c,
        None => match UntrustedEnvelope::decode(&envelope) {
            Ok(u) => {
                let claimed = u.claimed_header().clone();
                u.verify(inner.roster().as_ref())
                    .map_err(|e| (Some(claimed), e))
            }
            Err(e) => Err((None, e)),
        },
    };
    let verified = match check {
        Ok(v) => v,
        Err((claimed, e)) => {
            return quarantine(inner, seq, received_at_ms, envelope, claimed.as_ref(), e)
        }
    };
    let opened = match opened.unwrap_or_else(|| admit(inner, &verified)) {
        Ok(o) => o,
        Err(e) => {
            return quarantine(
                inner,
                seq,
                received_at_ms,
                envelope,
                Some(verified.header()),
                e,
            )
        }
    };
    let want = inner.subscribed.load(std::sync::atomic::Ordering::Relaxed);
    match inner
        .archive
        .insert_received_record(seq, received_at_ms, &opened)?
    {
        (Inserted::New(i), record) => {
            debug!(seq, index = i, msg_id = %opened.msg_id(), "archived");
            Ok(Some(match record.filter(|_| want) {
                Some(r) => Event::Message(Box::new(r)),
                // Nobody listens: count it without keeping a copy.
                None => Event::Archived,
            }))
        }
        (Inserted::Duplicate(_), _) => Ok(None),
    }
}

/// Opens a verified delivery for this device and checks its wraps: what
/// every delivery passes before it is archived (first time, or released
/// from the quarantine).
fn admit(
    inner: &Inner,
    verified: &tallinn_common::envelope::VerifiedEnvelope,
) -> Result<tallinn_common::envelope::Opened, EnvelopeError> {
    let opened = open_with_any_key(&inner.settings, verified)?;
    check_wraps(inner, verified, opened.content_key())?;
    Ok(opened)
}

/// Version 2: recomputes the beneficiary's wraps (or every wrap, with
/// `check_wraps = "all"`) from the content key, so a message archived as
/// sent to Ukraine provably gave Ukraine the key to read it.
fn check_wraps(
    inner: &Inner,
    verified: &tallinn_common::envelope::VerifiedEnvelope,
    content_key: &[u8; 32],
) -> Result<(), EnvelopeError> {
    if verified.header().version < 2 {
        return Ok(());
    }
    let roster = inner.roster();
    let Some(log) = roster.log() else {
        return Ok(());
    };
    let state = log.state_for(verified.header())?;
    let beneficiary = state.beneficiary().map(|b| b.as_str().to_string());
    match inner.settings.check_wraps {
        crate::config::WrapCheck::All => verified.verify_wraps(content_key, state),
        crate::config::WrapCheck::Beneficiary => verified
            .verify_wraps_of(content_key, state, |p, _| Some(p) == beneficiary.as_deref())
            .map(|_| ()),
    }
}

fn quarantine(
    inner: &Inner,
    seq: u64,
    received_at_ms: u64,
    envelope: Vec<u8>,
    claimed: Option<&tallinn_common::envelope::Header>,
    error: EnvelopeError,
) -> Result<Option<Event>, ArchiveError> {
    let reason = match &error {
        EnvelopeError::ReadOnly(who) => {
            format!("relay fault: forwarded a post from observer {who}")
        }
        other => other.to_string(),
    };
    warn!(seq, reason = %esc(&reason), "delivery failed verification; quarantined");
    let q = Quarantined {
        seq,
        received_at_ms,
        reason,
        claimed_sender: claimed.map(|h| h.sender.clone()),
        claimed_channel: claimed.map(|h| h.channel.clone()),
        envelope,
    };
    inner.archive.quarantine(&q)?;
    Ok(Some(Event::Quarantined(Box::new(q))))
}

/// Handles our message's acceptance: archive the sent copy, drop it from the
/// outbox (both made durable by the batch flush). `None` if it was not ours
/// or already handled.
fn accepted(
    inner: &Inner,
    msg_id: MsgId,
    seq: u64,
    receipt: Option<&tallinn_common::evidence::Receipt>,
) -> Result<Option<Event>, ArchiveError> {
    let Some(entry) = inner.outbox.get(&msg_id)? else {
        return Ok(None);
    };
    let opened = UntrustedEnvelope::decode(&entry.envelope)
        .and_then(|u| u.verify(inner.roster().as_ref()))
        .and_then(|v| v.open_with_content_key(&entry.content_key));
    match opened {
        Ok(o) => {
            let inserted = inner.archive.insert_sent(seq, now_ms(), &o)?;
            if let (crate::archive::Inserted::New(index), Some(r)) = (inserted, receipt) {
                evidence::keep_receipt(inner, index, &entry.envelope, r)?;
            }
        }
        Err(e) => warn!(%msg_id, error = %e, "own sent message does not verify; not archived"),
    }
    inner.outbox.remove(&msg_id)?;
    Ok(Some(Event::Accepted { msg_id, seq }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallinn_common::envelope::seal;
    use tallinn_common::identity::ParticipantId;
    use tallinn_common::message::{Message, Tlp};

    /// Re-signs `bytes` with a signature whose R carries the order-2
    /// torsion point: strict verification refuses it, a batch check
    /// accepts about half of them (PROTOCOL.md §10 item 32).
    fn torsion_signed(seed: &[u8; 32], bytes: &[u8], nonce: u8) -> Vec<u8> {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        use curve25519_dalek::Scalar;
        use sha2::{Digest, Sha512};
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let mut env: tallinn_common::envelope::Envelope = postcard::from_bytes(bytes).unwrap();
        let r = Scalar::from_bytes_mod_order([nonce; 32]);
        let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[4]).compress();
        let mut m = tallinn_common::defaults::ENVELOPE_SIGNATURE_CONTEXT.to_vec();
        m.extend_from_slice(&env.body);
        let h: [u8; 64] = Sha512::new()
            .chain_update(big_r.as_bytes())
            .chain_update(key.verifying_key().to_bytes())
            .chain_update(&m)
            .finalize()
            .into();
        let s = r + Scalar::from_bytes_mod_order_wide(&h) * key.to_scalar();
        env.signature[..32].copy_from_slice(big_r.as_bytes());
        env.signature[32..].copy_from_slice(s.as_bytes());
        postcard::to_allocvec(&env).unwrap()
    }

    /// Issue 10 item 7 in the client's own delivery path: a delivery batch
    /// holding a genuine message and one whose signature only a batch
    /// check accepts (chosen so that it does, with exactly this batch)
    /// keeps the first and refuses the second.
    #[test]
    fn a_delivery_batch_is_verified_strictly() {
        let seed = [7u8; 32];
        let ua = Identity::from_secrets(ParticipantId::new("UA").unwrap(), &seed, &[8; 32]);
        let ee = Identity::from_secrets(ParticipantId::new("EE").unwrap(), &[9; 32], &[10; 32]);
        let roster = Roster::parse(&format!(
            "{}{}[[channel]]\nid = \"pair\"\nmembers = [\"*\"]\n",
            ua.roster_entry("Ukraine", "member"),
            ee.roster_entry("Estonia", "member")
        ))
        .unwrap();
        let good = seal(&ua, &roster, "pair", &Message::note(Tlp::Clear, "a", ""), 1).unwrap();
        let other = seal(&ua, &roster, "pair", &Message::note(Tlp::Clear, "b", ""), 2).unwrap();
        let decode = |b: &[u8]| UntrustedEnvelope::decode(b).unwrap();
        let evil = (1..=64u8)
            .map(|n| torsion_signed(&seed, other.as_bytes(), n))
            .find(|evil| {
                UntrustedEnvelope::verify_many(vec![decode(good.as_bytes()), decode(evil)], &roster)
                    .iter()
                    .all(Result::is_ok)
            })
            .expect("a nonce that this very batch accepts");
        let deliver = |seq, envelope: Vec<u8>| {
            Ok(Frame::Deliver {
                seq,
                received_at_ms: 0,
                envelope,
            })
        };
        let batch = vec![
            deliver(1, good.as_bytes().to_vec()),
            deliver(2, evil),
            Ok(Frame::Ack { up_to_seq: 0 }),
        ];
        let checked = precheck_deliveries(&ClientRoster::V1(roster), &batch);
        assert!(matches!(checked[0], Some(Ok(_))));
        assert!(matches!(
            checked[1],
            Some(Err((Some(_), EnvelopeError::BadSignature)))
        ));
        assert!(checked[2].is_none());
    }
}
