//! The operator's control socket, `<data_dir>/control.sock` (mode 0600,
//! peer credentials checked: the relay's own user or root): what a running
//! relay does on an operator's word without a network port. One JSON
//! request line, one JSON answer line:
//!
//! - `{"op": "backup", "out": "/abs/path"}` → `{"ok": true, "report": {...}}`
//!   (a [`BackupReport`]) or `{"ok": false, "error": "..."}`.
//! - `{"op": "checkpoint", "participant": P, "device": D}` → `{"ok": true,
//!   "checkpoint_b64": "..." or absent}`: the device's latest archive
//!   checkpoint, for an auditor (PROTOCOL.md §17.2).
//!
//! `tallinn-relay backup` uses it when the relay runs, and opens the
//! store itself when it does not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::store::{BackupReport, Store};

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";

/// The longest request line.
const MAX_REQUEST: usize = 4096;

/// A request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// A consistent copy of the store into `out` (absolute, new or empty).
    Backup {
        /// Target folder.
        out: PathBuf,
    },
    /// A device's latest archive checkpoint.
    Checkpoint {
        /// Participant id.
        participant: String,
        /// Device label.
        device: String,
    },
}

/// An answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    /// Whether it worked.
    pub ok: bool,
    /// The backup's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<BackupReport>,
    /// The checkpoint asked for: base64 of `postcard(SignedCheckpoint)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_b64: Option<String>,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Binds the control socket in `data_dir` (a stale one is replaced).
///
/// # Errors
/// I/O errors binding or setting the mode.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = data_dir.join(SOCKET);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(l)
}

/// Whether a peer may use the control socket: the relay's user or root.
pub fn peer_allowed(peer_uid: Option<u32>, own_uid: u32) -> bool {
    matches!(peer_uid, Some(u) if u == own_uid || u == 0)
}

/// Serves the control socket until the task is aborted.
pub async fn serve(listener: UnixListener, store: Arc<dyn Store>) {
    let own = rustix::process::getuid().as_raw();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let store = store.clone();
        conns.spawn(async move {
            let peer = stream.peer_cred().ok().map(|c| c.uid());
            let answer = if peer_allowed(peer, own) {
                handle(stream, store).await
            } else {
                tracing::warn!(?peer, "control socket: refused another user");
                reply(
                    stream,
                    &Answer {
                        ok: false,
                        report: None,
                        checkpoint_b64: None,
                        error: Some("forbidden: only the relay's user or root".into()),
                    },
                )
                .await
            };
            if let Err(e) = answer {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

async fn reply(mut stream: UnixStream, a: &Answer) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(a).unwrap_or_default();
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.shutdown().await
}

async fn handle(stream: UnixStream, store: Arc<dyn Store>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut limited = (&mut reader).take(MAX_REQUEST as u64);
        tokio::io::AsyncBufReadExt::read_until(
            &mut tokio::io::BufReader::new(&mut limited),
            b'\n',
            &mut line,
        )
        .await
    })
    .await;
    let stream = reader.into_inner();
    let fail = |e: String| Answer {
        ok: false,
        report: None,
        checkpoint_b64: None,
        error: Some(e),
    };
    let req = match read {
        Err(_) => return reply(stream, &fail("no request within 10 s".into())).await,
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) => serde_json::from_slice::<Request>(&line),
    };
    let answer = match req {
        Err(e) => fail(format!("malformed request: {e}")),
        Ok(Request::Backup { out }) if !out.is_absolute() => {
            fail("the backup folder must be an absolute path".into())
        }
        Ok(Request::Checkpoint {
            participant,
            device,
        }) => {
            match tokio::task::spawn_blocking(move || {
                store.archive_checkpoint(&participant, &device)
            })
            .await
            {
                Ok(Ok(c)) => Answer {
                    ok: true,
                    report: None,
                    checkpoint_b64: c.map(|b| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.encode(b)
                    }),
                    error: None,
                },
                Ok(Err(e)) => fail(format!("reading the checkpoint: {e}")),
                Err(e) => fail(format!("reading the checkpoint: {e}")),
            }
        }
        Ok(Request::Backup { out }) => {
            tracing::info!(out = %out.display(), "backup requested");
            let started = std::time::Instant::now();
            match tokio::task::spawn_blocking(move || store.backup(&out)).await {
                Ok(Ok(report)) => {
                    tracing::info!(
                        keys = report.keys,
                        bytes = report.bytes,
                        last_seq = report.last_seq,
                        took_ms = started.elapsed().as_millis() as u64,
                        "backup written"
                    );
                    Answer {
                        ok: true,
                        report: Some(report),
                        checkpoint_b64: None,
                        error: None,
                    }
                }
                Ok(Err(e)) => fail(e.to_string()),
                Err(e) => fail(format!("backup task failed: {e}")),
            }
        }
    };
    reply(stream, &answer).await
}

/// Sends one request to a running relay's control socket and reads its
/// answer; `Ok(None)` when no relay answers there (the caller opens the
/// store itself).
///
/// # Errors
/// An I/O error on the socket, or an answer that is not one.
async fn ask(data_dir: &Path, request: &Request) -> Result<Option<Answer>, String> {
    let path = data_dir.join(SOCKET);
    let mut stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut answer = Vec::new();
    BufReader::new(stream)
        .take(1 << 20)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&answer)
        .map(Some)
        .map_err(|e| format!("the relay's answer on {}: {e}", path.display()))
}

/// Asks a running relay for a backup into `out`: `Ok(None)` when no relay
/// answers on the control socket (the caller opens the store itself).
///
/// # Errors
/// The relay's refusal or an I/O error on the socket.
pub async fn request_backup(data_dir: &Path, out: &Path) -> Result<Option<BackupReport>, String> {
    let request = Request::Backup {
        out: out.to_path_buf(),
    };
    let Some(a) = ask(data_dir, &request).await? else {
        return Ok(None);
    };
    match (a.ok, a.report, a.error) {
        (true, Some(r), _) => Ok(Some(r)),
        (_, _, Some(e)) => Err(e),
        _ => Err("the relay gave no report".into()),
    }
}

/// Asks a running relay for a device's latest archive checkpoint (base64
/// of `postcard(SignedCheckpoint)`, `None` if it holds none). `Ok(None)`
/// also when no relay answers on the socket: the caller opens the store
/// itself.
///
/// # Errors
/// The relay's refusal or an I/O error on the socket.
pub async fn request_checkpoint(
    data_dir: &Path,
    participant: &str,
    device: &str,
) -> Result<Option<Option<String>>, String> {
    let request = Request::Checkpoint {
        participant: participant.to_string(),
        device: device.to_string(),
    };
    let Some(a) = ask(data_dir, &request).await? else {
        return Ok(None);
    };
    match (a.ok, a.error) {
        (true, _) => Ok(Some(a.checkpoint_b64)),
        (false, Some(e)) => Err(e),
        (false, None) => Err("the relay refused without a reason".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_relays_user_or_root() {
        assert!(peer_allowed(Some(998), 998));
        assert!(peer_allowed(Some(0), 998));
        assert!(!peer_allowed(Some(1000), 998));
        assert!(!peer_allowed(None, 998));
    }
}
