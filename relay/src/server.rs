//! The relay server: QUIC endpoint, accept loop with admission control,
//! background garbage collection, metrics endpoint, roster reload and
//! graceful shutdown. Every task belongs to the [`Server`] handle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Endpoint, IdleTimeout, TransportConfig, VarInt};
use tallinn_common::roster::{LogError, Roster, RosterLog};

use crate::rules::{LogRules, RosterRules};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use crate::admission::{Admission, AdmissionLimits, Decision};
use crate::commit::{Committer, CommitterThread, FailStop};
use crate::config::RelayConfig;
use crate::metrics::{self, Metrics};
use crate::router::Router;
use crate::session::{self, Shared};
use crate::store::{SledStore, Store, StoreError};
use crate::tls::{self, TlsError};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The store could not be opened.
    #[error("opening the store in {path}: {source}")]
    Store {
        /// Data directory.
        path: std::path::PathBuf,
        /// Why.
        source: StoreError,
    },
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A socket could not be bound.
    #[error("cannot bind {key} = \"{addr}\" (relay.toml): {source}")]
    Bind {
        /// The config key that gave the address (`listen`, `metrics_listen`).
        key: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A transport parameter is out of range.
    #[error("transport configuration: {0}")]
    Transport(String),
    /// The commit thread could not be started.
    #[error("starting the commit thread: {0}")]
    Thread(std::io::Error),
    /// The stored roster log does not verify (a corrupt or tampered store).
    #[error("the stored roster log does not verify: {0}")]
    RosterLog(LogError),
    /// A version-2 deployment needs the receipt key, and it is unusable.
    #[error("{0} (receipt_key in relay.toml; `tallinn-relay gen-receipt-key` creates one)")]
    ReceiptKey(crate::receipt_key::ReceiptKeyError),
    /// The receipt key is not the roster's `relay_key`: every receipt would
    /// fail to verify.
    #[error(
        "the receipt key {path} is {file_key}, but the roster's relay_key is {roster_key}: \
         install the key the genesis was made with, or amend relay_key"
    )]
    ReceiptKeyMismatch {
        /// The key file.
        path: std::path::PathBuf,
        /// Its public key, hex.
        file_key: String,
        /// The roster's relay_key, hex.
        roster_key: String,
    },
}

/// Why a roster reload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The server was started without a roster path.
    #[error("no roster file configured")]
    NoPath,
    /// The new roster is invalid; the old one stays in force.
    #[error(transparent)]
    Invalid(#[from] crate::config::ConfigError),
}

/// A running relay. Drop it only after [`Server::shutdown`] to drain cleanly.
pub struct Server {
    endpoint: Endpoint,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    pin: [u8; 32],
    shared: Arc<Shared>,
    roster_path: Option<std::path::PathBuf>,
    shutdown_tx: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
    gc_task: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
    control_task: Option<JoinHandle<()>>,
    data_dir: std::path::PathBuf,
    committer_thread: CommitterThread,
}

/// The QUIC stateless-reset key, kept in the data directory so that a
/// restarted relay (after a crash or SIGKILL) can answer packets of its
/// predecessor's connections with a valid stateless reset: clients then
/// notice at once and reconnect, instead of waiting for their idle timeout.
struct ResetKey([u8; 32]);

impl ResetKey {
    fn load_or_create(path: &std::path::Path) -> std::io::Result<Self> {
        match std::fs::File::open(path).and_then(|mut f| {
            tallinn_host::durable::check_private_file(&f, path)?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(&mut f, 64), &mut bytes)?;
            Ok(bytes)
        }) {
            Ok(bytes) => {
                return <[u8; 32]>::try_from(bytes.as_slice())
                    .map(Self)
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{} must hold exactly 32 bytes", path.display()),
                        )
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut k = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut k);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path)?;
        std::io::Write::write_all(&mut f, &k)?;
        f.sync_all()?;
        Ok(Self(k))
    }

    /// A 64-bit key for connection-id validation, derived from the secret.
    fn cid_key(&self) -> u64 {
        use hmac::Mac;
        let mut m = self.mac();
        m.update(b"tallinn/1 connection id key");
        let tag = m.finalize().into_bytes();
        let mut k = [0u8; 8];
        k.copy_from_slice(&tag[..8]);
        u64::from_le_bytes(k)
    }

    fn mac(&self) -> hmac::Hmac<sha2::Sha256> {
        // invariant: HMAC accepts keys of any length.
        <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&self.0)
            .expect("invariant: HMAC takes any key length")
    }
}

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        use hmac::Mac;
        let mut m = self.mac();
        m.update(data);
        let tag = m.finalize().into_bytes();
        let n = signature_out.len().min(tag.len());
        if let (Some(out), Some(t)) = (signature_out.get_mut(..n), tag.get(..n)) {
            out.copy_from_slice(t);
        }
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        use hmac::Mac;
        let mut m = self.mac();
        m.update(data);
        m.verify_slice(signature)
            .map_err(|_| quinn::crypto::CryptoError)
    }
}

/// Decrements the open-connection gauge however a session task ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
        self.0
            .metrics
            .connections_closed
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Server {
    /// Opens the store, binds the endpoint (and the metrics address) and
    /// starts serving. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`SpawnError`].
    pub async fn spawn(config: RelayConfig) -> Result<Server, SpawnError> {
        tallinn_host::durable::private_dir(&config.data_dir).map_err(|e| SpawnError::Store {
            path: config.data_dir.clone(),
            source: StoreError::Sync(e),
        })?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.data_dir).map_err(
            |source| SpawnError::Store {
                path: config.data_dir.clone(),
                source,
            },
        )?);
        Self::spawn_with_store(config, store).await
    }

    /// [`Server::spawn`] over a store the caller opened (another backend, or
    /// a fault-injecting wrapper in tests). The data directory still holds
    /// the stateless-reset key.
    ///
    /// # Errors
    /// [`SpawnError`].
    pub async fn spawn_with_store(
        config: RelayConfig,
        store: Arc<dyn Store>,
    ) -> Result<Server, SpawnError> {
        tallinn_host::durable::private_dir(&config.data_dir).map_err(|e| SpawnError::Store {
            path: config.data_dir.clone(),
            source: StoreError::Sync(e),
        })?;
        let metrics = Arc::new(Metrics::default());
        let rules = initial_rules(&config, store.as_ref())?;
        let receipts = receipt_key(&config, &rules)?;
        let participants = rules.participant_count();
        let router = Arc::new(Router::new(Arc::new(rules), metrics.clone()));
        // What the store holds after opening is on disk: durable.
        router
            .durable_seq
            .store(store.last_seq(), std::sync::atomic::Ordering::SeqCst);
        let failstop = Arc::new(FailStop::default());
        let (committer, committer_thread) = Committer::start(
            store.clone(),
            router.clone(),
            metrics.clone(),
            failstop.clone(),
        )
        .map_err(SpawnError::Thread)?;

        let mut transport = TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(1))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            // Small until Welcome (raised per connection after it).
            .receive_window(VarInt::from_u32(crate::defaults::PRE_AUTH_RECEIVE_WINDOW))
            .max_idle_timeout(Some(
                IdleTimeout::try_from(config.limits.idle_timeout)
                    .map_err(|e| SpawnError::Transport(e.to_string()))?,
            ));
        let crypto =
            tls::server_crypto(&config.tls, config.require_post_quantum, metrics.kx.clone())?;
        let pin = config.tls.pin()?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(transport));
        let reset_key = ResetKey::load_or_create(&config.data_dir.join("stateless-reset.key"))
            .map_err(|source| SpawnError::Store {
                path: config.data_dir.clone(),
                source: StoreError::Flush(format!("stateless reset key: {source}")),
            })?;
        let socket =
            std::net::UdpSocket::bind(config.listen).map_err(|source| SpawnError::Bind {
                key: "listen",
                addr: config.listen,
                source,
            })?;
        // The connection-id key derives from the same persisted secret: the
        // restarted relay must recognise its predecessor's connection ids as
        // its own to answer them with a stateless reset.
        let cid_key = reset_key.cid_key();
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
                as Box<dyn quinn::ConnectionIdGenerator>
        });
        let endpoint = Endpoint::new(
            endpoint_config,
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| SpawnError::Bind {
            key: "listen",
            addr: config.listen,
            source,
        })?;
        let local_addr = endpoint.local_addr().map_err(|source| SpawnError::Bind {
            key: "listen",
            addr: config.listen,
            source,
        })?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            relay_name: config.name.clone(),
            limits: config.limits.clone(),
            store: store.clone(),
            committer,
            failstop,
            router,
            metrics: metrics.clone(),
            buckets: Mutex::new(HashMap::new()),
            auth_buckets: Mutex::new(HashMap::new()),
            auth_ip_buckets: Mutex::new(HashMap::new()),
            shutdown: shutdown_rx.clone(),
            open_connections: AtomicU64::new(0),
            admission: Mutex::new(session::Admitted {
                state: Admission::new(AdmissionLimits {
                    max_connections: config.limits.max_connections,
                    max_unauthenticated: config.limits.max_unauthenticated_connections,
                    max_per_ip: config.limits.max_connections_per_ip,
                }),
                evictors: HashMap::new(),
            }),
            roster_writer: tokio::sync::Mutex::new(()),
            receipts,
        });

        let (metrics_addr, metrics_task) = match config.metrics_listen {
            Some(addr) => {
                let listener = metrics::bind(addr)
                    .await
                    .map_err(|source| SpawnError::Bind {
                        key: "metrics_listen",
                        addr,
                        source,
                    })?;
                let bound = listener.local_addr().map_err(|source| SpawnError::Bind {
                    key: "metrics_listen",
                    addr,
                    source,
                })?;
                let s1 = shared.clone();
                let render = Arc::new(move || s1.render_metrics());
                let s2 = shared.clone();
                let healthy = Arc::new(move || {
                    !*s2.shutdown.borrow() && s2.failstop.reason().is_none() && s2.store.healthy()
                });
                (
                    Some(bound),
                    Some(tokio::spawn(metrics::serve_http(listener, render, healthy))),
                )
            }
            None => (None, None),
        };

        // The operator's control socket (backups); a relay whose data
        // directory cannot hold a socket still runs, without it.
        let control_task = match crate::control::bind(&config.data_dir) {
            Ok(l) => Some(tokio::spawn(crate::control::serve(l, store.clone()))),
            Err(e) => {
                tracing::warn!(error = %e, "no control socket in the data directory: `tallinn-relay backup` needs the relay stopped");
                None
            }
        };
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            shared.clone(),
            shutdown_rx.clone(),
        ));
        let gc_task = tokio::spawn(gc_loop(
            shared.clone(),
            config.retention,
            config.gc_interval,
            shutdown_rx.clone(),
        ));
        info!(addr = %local_addr, pin = %hex::encode(pin), participants, "relay listening");
        Ok(Server {
            endpoint,
            local_addr,
            metrics_addr,
            pin,
            shared,
            roster_path: config.roster_path,
            shutdown_tx,
            accept_task,
            gc_task,
            metrics_task,
            control_task,
            data_dir: config.data_dir.clone(),
            committer_thread,
        })
    }

    /// Whether the relay works: not shutting down, no storage failure,
    /// the store answers (what `/healthz` says).
    pub fn healthy(&self) -> bool {
        !*self.shared.shutdown.borrow()
            && self.shared.failstop.reason().is_none()
            && self.shared.store.healthy()
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound metrics/health HTTP address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// SHA-256 of the certificate's SubjectPublicKeyInfo (the client pin).
    pub fn spki_pin(&self) -> [u8; 32] {
        self.pin
    }

    /// The live metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Prometheus text of the current metrics.
    pub fn render_metrics(&self) -> String {
        self.shared.render_metrics()
    }

    /// Resolves once a storage failure stopped the relay from accepting
    /// messages (fail-stop), with the reason. The relay binary then shuts
    /// down and exits non-zero, so that its supervisor restarts it on a
    /// clean replay of the commit log.
    pub async fn failed(&self) -> String {
        self.shared.failstop.tripped().await
    }

    /// The fail-stop reason, if a storage failure stopped the relay.
    pub fn failure(&self) -> Option<String> {
        self.shared.failstop.reason()
    }

    /// The roster epoch in force, if the relay runs the roster log
    /// (version 2); `None` for a version-1 roster file.
    pub fn roster_epoch(&self) -> Option<u64> {
        self.shared.router.roster().epoch()
    }

    /// Number of open sessions of a participant.
    pub fn sessions_of(&self, participant: &str) -> usize {
        self.shared.router.sessions_of(participant)
    }

    /// Replaces the roster. Sessions of participants no longer in it, or
    /// whose keys changed, are closed. Returns how many were closed.
    ///
    /// The new roster is in force before any session is closed, and a
    /// session that authenticated against the old one is registered only if
    /// its keys are still current ([`Router::register`]), so no `Auth` slips
    /// in between.
    pub fn set_roster(&self, roster: Roster) -> usize {
        if self.shared.router.roster().log().is_some() {
            warn!("the relay runs the roster log: a roster file is ignored");
            return 0;
        }
        let kicked = self
            .shared
            .router
            .replace_roster(Arc::new(RosterRules::V1(Arc::new(roster))));
        self.shared
            .metrics
            .roster_reloads
            .fetch_add(1, Ordering::Relaxed);
        info!(sessions_closed = kicked, "roster replaced");
        kicked
    }

    /// Re-reads the roster file (SIGHUP). An invalid roster is refused and
    /// the old one kept.
    ///
    /// # Errors
    /// [`ReloadError`].
    pub fn reload_roster(&self) -> Result<usize, ReloadError> {
        let path = self.roster_path.as_ref().ok_or(ReloadError::NoPath)?;
        match crate::config::load_roster(path) {
            Ok(r) => Ok(self.set_roster(r)),
            Err(e) => {
                self.shared
                    .metrics
                    .roster_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "roster reload refused; keeping the old roster");
                Err(e.into())
            }
        }
    }

    /// Graceful shutdown: stop accepting, let sessions finish pending
    /// flushes and close with `shutting_down`, flush the store, stop.
    pub async fn shutdown(self) {
        info!("shutting down");
        let _ = self.shutdown_tx.send(true);
        let _ = self.accept_task.await;
        // Abort the background tasks and wait until they are gone, so every
        // reference to the store is dropped when this returns (a restart in
        // the same process can then reopen the data directory).
        let _ = self.gc_task.await;
        if let Some(t) = self.metrics_task {
            t.abort();
            let _ = t.await;
        }
        if let Some(t) = self.control_task {
            t.abort();
            let _ = t.await;
            let _ = std::fs::remove_file(self.data_dir.join(crate::control::SOCKET));
        }
        let flushed = self.shared.committer.flush();
        let _ = tokio::time::timeout(self.shared.limits.drain_timeout, flushed).await;
        self.shared.committer.stop();
        let thread = self.committer_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        self.endpoint.close(VarInt::from_u32(0), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        info!("shut down");
    }
}

/// Applies the admission rules to a new connection attempt: `Some` ticket
/// to accept it (after evicting what the rules say), `None` when it was
/// answered with a Retry or refused.
fn admit(
    shared: &Arc<Shared>,
    incoming: quinn::Incoming,
) -> Option<(quinn::Incoming, session::Ticket)> {
    let remote = incoming.remote_address();
    let mut a = shared.admission.lock().unwrap_or_else(|p| p.into_inner());
    let decision = a.state.on_incoming(
        remote.ip(),
        incoming.remote_address_validated(),
        incoming.may_retry(),
    );
    match decision {
        Decision::Accept { id, evict } => {
            for old in evict {
                if let Some(n) = a.evictors.remove(&old) {
                    n.notify_one();
                }
                shared
                    .metrics
                    .connections_evicted
                    .fetch_add(1, Ordering::Relaxed);
            }
            let evicted = Arc::new(tokio::sync::Notify::new());
            a.evictors.insert(id, evicted.clone());
            let ticket = session::Ticket {
                id,
                evicted,
                shared: shared.clone(),
            };
            Some((incoming, ticket))
        }
        Decision::Retry => {
            shared
                .metrics
                .connections_retried
                .fetch_add(1, Ordering::Relaxed);
            if let Err(e) = incoming.retry() {
                e.into_incoming().refuse();
            }
            None
        }
        Decision::Refuse(why) => {
            shared
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            warn!(%remote, open = a.state.open(), "{why}; refusing");
            incoming.refuse();
            None
        }
    }
}

async fn accept_loop(endpoint: Endpoint, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Some((incoming, ticket)) = admit(&shared, incoming) else {
                    continue;
                };
                shared.open_connections.fetch_add(1, Ordering::SeqCst);
                shared.metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
                let guard = OpenGuard(shared.clone());
                let s = shared.clone();
                conns.spawn(async move {
                    session::run(incoming, s, ticket).await;
                    drop(guard);
                });
            }
        }
    }
    // Refuse whatever arrives from now on; sessions see the shutdown signal
    // and close themselves after their pending flushes.
    endpoint.set_server_config(None);
    let drain = shared.limits.drain_timeout + Duration::from_secs(2);
    if tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        warn!(
            remaining = conns.len(),
            "sessions did not close in time; aborting them"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

async fn gc_loop(
    shared: Arc<Shared>,
    retention: Duration,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    loop {
        // Stop between passes; a pass in progress (on a blocking thread,
        // holding the store) always finishes first.
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let store = shared.store.clone();
        let now = session::now_ms();
        match tokio::task::spawn_blocking(move || store.gc(now, retention_ms)).await {
            Ok(Ok(s)) => {
                shared
                    .metrics
                    .messages_acked_removed
                    .fetch_add(s.acked_removed, Ordering::Relaxed);
                shared
                    .metrics
                    .messages_expired
                    .fetch_add(s.expired, Ordering::Relaxed);
                if s != Default::default() {
                    info!(
                        acked = s.acked_removed,
                        expired = s.expired,
                        seen_pruned = s.seen_pruned,
                        devices_forgotten = s.devices_forgotten,
                        "store gc"
                    );
                }
            }
            Ok(Err(e)) => error!(error = %e, "store gc failed"),
            Err(e) => error!(error = %e, "store gc task failed"),
        }
    }
}

/// The receipt key of a version-2 deployment, checked against the roster's
/// `relay_key`; none for version 1 (which answers `Accepted`).
fn receipt_key(
    config: &RelayConfig,
    rules: &RosterRules,
) -> Result<Option<Arc<crate::receipt_key::ReceiptKey>>, SpawnError> {
    let Some(log) = rules.log() else {
        return Ok(None);
    };
    let key = crate::receipt_key::ReceiptKey::load(&config.receipt_key)
        .map_err(SpawnError::ReceiptKey)?;
    let roster_key = log.log.current().relay_key().to_bytes();
    if key.public().to_bytes() != roster_key {
        return Err(SpawnError::ReceiptKeyMismatch {
            path: config.receipt_key.clone(),
            file_key: hex::encode(key.public().to_bytes()),
            roster_key: hex::encode(roster_key),
        });
    }
    Ok(Some(Arc::new(key)))
}

/// The roster the relay starts with: the roster log in its store if a
/// genesis was installed (version 2), else the configured roster file.
fn initial_rules(config: &RelayConfig, store: &dyn Store) -> Result<RosterRules, SpawnError> {
    let stored = store.roster_log().map_err(|source| SpawnError::Store {
        path: config.data_dir.clone(),
        source,
    })?;
    let Some((_, last_at)) = stored.last() else {
        return Ok(RosterRules::V1(config.roster.clone()));
    };
    let since = *last_at;
    let log = RosterLog::from_entries(stored.into_iter().map(|(e, _)| e), None)
        .map_err(SpawnError::RosterLog)?;
    info!(
        epoch = log.epoch(),
        deployment = %hex::encode(log.deployment()),
        "roster log loaded"
    );
    Ok(RosterRules::V2(Arc::new(LogRules {
        log,
        current_since_ms: since,
        grace_ms: u64::try_from(config.limits.roster_grace.as_millis()).unwrap_or(u64::MAX),
    })))
}
