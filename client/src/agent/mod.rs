//! The local agent: one process per device that holds the relay session
//! (live delivery, reconnects), the archive, the outbox and the unlocked
//! key, and serves the local API on a Unix socket — the client's one
//! front door, for the CLI now and a local web page later.
//!
//! # The socket
//! `$XDG_RUNTIME_DIR/tallinn/agent-<device>-<h>.sock`, where `<h>` is the
//! first 8 hex digits of SHA-256 of the data directory's absolute path
//! (one agent per data directory and device), or `agent_socket` in
//! `client.toml`. The folder is made 0700 and the socket 0600; each
//! connection's peer credentials are checked as well: only the agent's
//! own user is served (403 `forbidden` otherwise). Without
//! `XDG_RUNTIME_DIR` the socket lives in the data directory.
//!
//! # The API (version 1; PROTOCOL.md §16 documents each shape)
//! HTTP/1.1 with JSON bodies; errors are `{"error": {"code", "message"}}`
//! with a matching status.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/status` | [`api::StatusView`] |
//! | `POST /v1/search` | [`api::SearchRequest`] → [`api::MessagePage`] (inbox, archive search) |
//! | `GET /v1/messages/{id}` | [`api::MessageDetail`]; the id rule of [`crate::ids`] |
//! | `POST /v1/messages/{id}/read` | `{"read": id}`: marks it read |
//! | `GET /v1/messages/{id}/thread` | `[MessageView]` |
//! | `POST /v1/messages` | [`api::ComposeRequest`] → [`api::SendOutcome`] (`sent` or `queued`) |
//! | `GET /v1/outbox` | `[OutboxItem]` |
//! | `DELETE /v1/outbox/{id}` | `{"dropped": id}` |
//! | `POST /v1/outbox/{id}/resend` | `{"old": id, "new": id}` |
//! | `POST /v1/outbox/retry` | `{"retried": n}` |
//! | `GET /v1/messages/{id}/attachments/{n}` | the bytes of attachment `n` (from 1); headers `x-tallinn-sha256`, `x-tallinn-name` (percent-encoded) |
//! | `GET /v1/quarantine` | `[QuarantineItem]` |
//! | `POST /v1/quarantine/retry` | `{"archived", "left"}`: verify again against the roster in force |
//! | `POST /v1/quarantine/purge` | `{"before_ms"}` → `{"purged"}` |
//! | `GET /v1/archive/stats` | [`crate::archive::Stats`] |
//! | `POST /v1/archive/verify` | `{"deep"}` → [`api::VerifyView`] |
//! | `GET /v1/archive/export` | the audit export, JSON Lines ([`crate::export`]) |
//! | `POST /v1/hold` | lends the archive to a command that needs it to itself (`roster`, `device`): `held`, then a newline a second until the caller leaves (module `hold`) |
//! | `GET /v1/events` | newline-delimited [`api::EventView`]s, `hello` first, for as long as the caller reads |
//!
//! # Modules
//! - [`api`]: the JSON types;
//! - [`ops`]: what each endpoint does on a [`Client`] (also used by the CLI
//!   when no agent runs, so both paths are one implementation);
//! - `server`: the HTTP server, peer credentials, the event fan-out;
//! - [`remote`]: the CLI's side, [`remote::AgentClient`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::client::Client;

pub mod api;
pub mod cases;
mod hold;
pub mod ops;
pub mod remote;
mod server;

/// The default socket of the agent for `data_dir` and `device`.
pub fn default_socket(data_dir: &Path, device: &str) -> PathBuf {
    let abs = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let h = Sha256::digest(std::os::unix::ffi::OsStrExt::as_bytes(abs.as_os_str()));
    let name = format!("agent-{device}-{}.sock", hex::encode(&h[..4]));
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(run) => PathBuf::from(run).join("tallinn").join(name),
        None => data_dir.join(name),
    }
}

/// Loads the client's settings anew (the key file, retired keys): what
/// the agent calls when it takes the archive back after a hold.
pub type Reload = std::sync::Arc<dyn Fn() -> Result<crate::client::Settings, String> + Send + Sync>;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Another agent answers on the socket.
    #[error("an agent for this device already runs (pid {pid}, socket {socket}); stop it first")]
    AlreadyRunning {
        /// Its pid.
        pid: u32,
        /// Its socket.
        socket: PathBuf,
    },
    /// The socket could not be made.
    #[error("cannot listen on {socket}: {source}")]
    Socket {
        /// Socket path.
        socket: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Binds the agent's socket: refuses if a live agent answers there,
/// replaces a stale socket file, makes the folder 0700 and the socket
/// 0600.
///
/// # Errors
/// [`AgentError`].
pub async fn bind(socket: &Path) -> Result<tokio::net::UnixListener, AgentError> {
    let fail = |source| AgentError::Socket {
        socket: socket.to_path_buf(),
        source,
    };
    match remote::AgentClient::find(socket).await {
        Ok(Some(other)) => {
            let pid = other.status().await.map(|s| s.pid).unwrap_or(0);
            return Err(AgentError::AlreadyRunning {
                pid,
                socket: socket.to_path_buf(),
            });
        }
        // No socket, or one nothing listens on: stale, replaced below.
        Ok(None) => {}
        // Anything else (permission denied, a live agent too busy to
        // accept) is not proof of a stale socket: never remove it then.
        Err(e) => return Err(fail(std::io::Error::other(e.to_string()))),
    }
    if let Some(dir) = socket.parent() {
        tallinn_host::durable::private_dir(dir).map_err(fail)?;
        // Ours, and a real folder: a folder another user made (or a link
        // to one) in a shared place would let them replace the socket.
        let meta = std::fs::symlink_metadata(dir).map_err(fail)?;
        let own = rustix::process::getuid().as_raw();
        if !meta.is_dir() || std::os::unix::fs::MetadataExt::uid(&meta) != own {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not a folder of this user (uid {own}); set agent_socket in client.toml",
                    dir.display()
                ),
            )));
        }
    }
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!("removed a stale agent socket {}", socket.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let listener = tokio::net::UnixListener::bind(socket).map_err(fail)?;
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(fail)?;
    Ok(listener)
}

/// Serves the API for `client` on `listener` until `shutdown` completes,
/// then removes the socket and closes the client (session closed, archive
/// flushed). `connect_wait` bounds how long a compose waits for a relay
/// session before it queues; `roster_text` is the version-1 roster file
/// the export names (empty under version 2); `reload` loads the settings
/// anew after a hold.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: Client,
    listener: tokio::net::UnixListener,
    socket: &Path,
    connect_wait: Duration,
    roster_text: String,
    reload: Option<Reload>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let shared = server::Shared::new(client, connect_wait, roster_text, reload);
    let pump = tokio::spawn(server::pump_events(shared.clone()));
    let serve = tokio::spawn(server::serve(listener, shared.clone()));
    shutdown.await;
    shared
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    serve.abort();
    let _ = serve.await;
    let _ = std::fs::remove_file(socket);
    if let Some(client) = shared.take_client() {
        client.close().await;
    }
    pump.abort();
}
