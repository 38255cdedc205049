//! The CLI's side of the local API: requests to a running agent over its
//! Unix socket (one connection a request; the event stream keeps its own).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use super::api::*;

/// Why the agent could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The socket exists but refused or failed the connection.
    #[error("the agent's socket {path} does not answer: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// HTTP failed midway (the agent stopped?).
    #[error("talking to the agent at {path}: {message}")]
    Http {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        message: String,
    },
    /// The agent answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// How long a request waits while another command holds the archive.
const HELD_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A running agent, reachable on its socket.
#[derive(Debug, Clone)]
pub struct AgentClient {
    path: PathBuf,
}

impl AgentClient {
    /// The agent on `path`, if one runs there: `None` when there is no
    /// socket, or a stale one (its agent is gone: nothing listens).
    ///
    /// # Errors
    /// [`RemoteError::Connect`] when the socket exists but cannot be used
    /// (e.g. permission denied: another user's agent).
    pub async fn find(path: &Path) -> Result<Option<AgentClient>, RemoteError> {
        match UnixStream::connect(path).await {
            Ok(s) => {
                check_peer(&s, path)?;
                Ok(Some(AgentClient {
                    path: path.to_path_buf(),
                }))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(source) => Err(RemoteError::Connect {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn http(&self, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Http {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// One request; while another command holds the archive (503
    /// `held`), waits for it to be given back, a bounded while.
    async fn request(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, RemoteError> {
        let deadline = std::time::Instant::now() + HELD_WAIT;
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            let resp = self.request_once(method.clone(), uri, body.clone()).await?;
            if resp.status().as_u16() != 503 || std::time::Instant::now() >= deadline {
                return Ok(resp);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(500));
        }
    }

    async fn request_once(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, RemoteError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| RemoteError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "tallinn-agent")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.http(e))?;
        sender.send_request(req).await.map_err(|e| self.http(e))
    }

    /// The whole body of an answer, or the error a 4xx/5xx answer carries.
    async fn body_of(&self, resp: Response<Incoming>) -> Result<Bytes, RemoteError> {
        let status = resp.status().as_u16();
        if status >= 400 {
            return Err(self.failure(status, resp.into_body()).await);
        }
        Ok(resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.http(e))?
            .to_bytes())
    }

    /// The error a 4xx/5xx answer's body carries ([`api_error`]).
    async fn failure(&self, status: u16, body: Incoming) -> RemoteError {
        match body.collect().await {
            Ok(b) => api_error(status, &b.to_bytes()).into(),
            Err(e) => self.http(e),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, RemoteError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| self.http(e))?),
            None => None,
        };
        let resp = self.request(method, uri, body).await?;
        let bytes = self.body_of(resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.http(format!("its answer: {e}")))
    }

    /// `GET /v1/status`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn status(&self) -> Result<StatusView, RemoteError> {
        self.call(Method::GET, "/v1/status", None::<&()>).await
    }

    /// `POST /v1/search`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn search(&self, q: &SearchRequest) -> Result<MessagePage, RemoteError> {
        self.call(Method::POST, "/v1/search", Some(q)).await
    }

    /// `POST /v1/messages/{id}/read`; the full id.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn mark_read(&self, id: &str) -> Result<String, RemoteError> {
        let v: serde_json::Value = self
            .call(
                Method::POST,
                &format!("/v1/messages/{}/read", path_id(id)),
                None::<&()>,
            )
            .await?;
        Ok(v["read"].as_str().unwrap_or_default().to_string())
    }

    /// `GET /v1/messages/{id}`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn show(&self, id: &str) -> Result<MessageDetail, RemoteError> {
        self.call(
            Method::GET,
            &format!("/v1/messages/{}", path_id(id)),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/messages/{id}/thread`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn thread(&self, id: &str) -> Result<Vec<MessageView>, RemoteError> {
        self.call(
            Method::GET,
            &format!("/v1/messages/{}/thread", path_id(id)),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/requests`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn requests(&self, q: &CaseListRequest) -> Result<CaseList, RemoteError> {
        self.call(Method::POST, "/v1/requests", Some(q)).await
    }

    /// `GET /v1/requests/{id}`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn request_show(&self, id: &str) -> Result<CaseDetail, RemoteError> {
        self.call(
            Method::GET,
            &format!("/v1/requests/{}", path_id(id)),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/share`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn share(&self, q: &ShareRequest) -> Result<ShareOutcome, RemoteError> {
        self.call(Method::POST, "/v1/share", Some(q)).await
    }

    /// `POST /v1/messages`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn compose(&self, c: &ComposeRequest) -> Result<SendOutcome, RemoteError> {
        self.call(Method::POST, "/v1/messages", Some(c)).await
    }

    /// `GET /v1/outbox`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn outbox(&self) -> Result<Vec<OutboxItem>, RemoteError> {
        self.call(Method::GET, "/v1/outbox", None::<&()>).await
    }

    /// `DELETE /v1/outbox/{id}`; the full id dropped.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn outbox_drop(&self, id: &str) -> Result<String, RemoteError> {
        let v: serde_json::Value = self
            .call(
                Method::DELETE,
                &format!("/v1/outbox/{}", path_id(id)),
                None::<&()>,
            )
            .await?;
        Ok(v["dropped"].as_str().unwrap_or_default().to_string())
    }

    /// `POST /v1/outbox/{id}/resend`; `(old, new)` ids.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn outbox_resend(&self, id: &str) -> Result<(String, String), RemoteError> {
        let v: serde_json::Value = self
            .call(
                Method::POST,
                &format!("/v1/outbox/{}/resend", path_id(id)),
                None::<&()>,
            )
            .await?;
        Ok((
            v["old"].as_str().unwrap_or_default().to_string(),
            v["new"].as_str().unwrap_or_default().to_string(),
        ))
    }

    /// `POST /v1/outbox/retry`; how many entries were pending.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn outbox_retry(&self) -> Result<u64, RemoteError> {
        let v: serde_json::Value = self
            .call(Method::POST, "/v1/outbox/retry", None::<&()>)
            .await?;
        Ok(v["retried"].as_u64().unwrap_or_default())
    }

    /// `GET /v1/quarantine`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn quarantine(&self) -> Result<Vec<QuarantineItem>, RemoteError> {
        self.call(Method::GET, "/v1/quarantine", None::<&()>).await
    }

    /// `GET /v1/messages/{id}/attachments/{n}`: the bytes.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn attachment(&self, id: &str, n: usize) -> Result<Vec<u8>, RemoteError> {
        let resp = self
            .request(
                Method::GET,
                &format!("/v1/messages/{}/attachments/{n}", path_id(id)),
                None,
            )
            .await?;
        Ok(self.body_of(resp).await?.to_vec())
    }

    /// `POST /v1/quarantine/retry`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn quarantine_retry(&self) -> Result<QuarantineRetry, RemoteError> {
        self.call(Method::POST, "/v1/quarantine/retry", None::<&()>)
            .await
    }

    /// `POST /v1/quarantine/purge`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn quarantine_purge(&self, before_ms: u64) -> Result<PurgeResult, RemoteError> {
        self.call(
            Method::POST,
            "/v1/quarantine/purge",
            Some(&PurgeRequest { before_ms }),
        )
        .await
    }

    /// `POST /v1/hold`: borrows the archive from the agent until the
    /// returned [`Hold`] is dropped (the agent then opens it again).
    ///
    /// # Errors
    /// [`RemoteError`]: another command holds it (409), or the agent failed.
    pub async fn hold(&self) -> Result<Hold, RemoteError> {
        // Another command may hold it, or the agent may be taking it back
        // from one that just ended (409 `held`): wait a bounded while.
        let deadline = std::time::Instant::now() + HELD_WAIT;
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match self.hold_once().await {
                Err(RemoteError::Api(e))
                    if e.code == "held" && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    async fn hold_once(&self) -> Result<Hold, RemoteError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| RemoteError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        check_peer(&stream, &self.path)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http(e))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/hold")
            .header("host", "tallinn-agent")
            .body(Full::new(Bytes::new()))
            .map_err(|e| self.http(e))?;
        let resp = sender.send_request(req).await.map_err(|e| self.http(e))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status >= 400 {
            return Err(self.failure(status, body).await);
        }
        match body.frame().await {
            Some(Ok(f)) if f.data_ref().is_some_and(|d| d.starts_with(b"held")) => {}
            _ => return Err(self.http("the agent did not lend the archive")),
        }
        Ok(Hold {
            conn,
            _body: body,
            _sender: sender,
        })
    }

    /// `GET /v1/archive/stats`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn archive_stats(&self) -> Result<crate::archive::Stats, RemoteError> {
        self.call(Method::GET, "/v1/archive/stats", None::<&()>)
            .await
    }

    /// `POST /v1/archive/verify`.
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn archive_verify(&self, deep: bool) -> Result<VerifyView, RemoteError> {
        self.call(
            Method::POST,
            "/v1/archive/verify",
            Some(&VerifyRequest { deep }),
        )
        .await
    }

    /// `GET /v1/archive/export` into `out`; returns the records written and
    /// the head hash. The header's record count is checked against the
    /// lines received: an export that broke off is an error.
    ///
    /// # Errors
    /// [`RemoteError`], or an I/O error of `out` (as [`RemoteError::Http`]).
    pub async fn archive_export(
        &self,
        selection: &crate::export::Selection,
        out: &mut impl std::io::Write,
        mut progress: impl FnMut(u64),
    ) -> Result<(u64, String), RemoteError> {
        let resp = if selection.is_everything() {
            self.request(Method::GET, "/v1/archive/export", None)
                .await?
        } else {
            let body = serde_json::to_vec(selection)
                .map_err(|e| self.http(format!("encoding the selection: {e}")))?;
            self.request(Method::POST, "/v1/archive/export", Some(body))
                .await?
        };
        let status = resp.status().as_u16();
        if status >= 400 {
            return Err(self.failure(status, resp.into_body()).await);
        }
        let mut body = resp.into_body();
        let mut header: Option<serde_json::Value> = None;
        let mut pending: Vec<u8> = Vec::new();
        let mut records = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.http(format!("the export broke off: {e}")))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            out.write_all(data)
                .map_err(|e| self.http(format!("writing the export: {e}")))?;
            pending.extend_from_slice(data);
            while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                if header.is_none() {
                    header = Some(
                        serde_json::from_slice(&line)
                            .map_err(|e| self.http(format!("the export's first line: {e}")))?,
                    );
                } else {
                    records += 1;
                    progress(records);
                }
            }
        }
        let header = header.ok_or_else(|| self.http("the export is empty"))?;
        let expected = header["records"].as_u64().unwrap_or(u64::MAX);
        if records != expected || !pending.is_empty() {
            return Err(self.http(format!(
                "the export broke off after {records} of {expected} records"
            )));
        }
        Ok((
            records,
            header["head_hash"].as_str().unwrap_or_default().to_string(),
        ))
    }

    /// `GET /v1/events`: the stream, read with [`EventStream::next`].
    ///
    /// # Errors
    /// [`RemoteError`].
    pub async fn events(&self) -> Result<EventStream, RemoteError> {
        let resp = self.request(Method::GET, "/v1/events", None).await?;
        if !resp.status().is_success() {
            return Err(self.http(format!("the event stream answered {}", resp.status())));
        }
        Ok(EventStream {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }
}

/// The error an agent's 4xx/5xx answer carries (`{"error": ...}`), or a
/// plain one naming the status when the body is not that.
fn api_error(status: u16, body: &[u8]) -> ApiError {
    let mut e = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| ApiError::internal(format!("the agent answered HTTP {status}")));
    e.status = status;
    e
}

/// The process behind the socket must run as this user: messages and
/// passphrase-free access go to no one else's "agent".
fn check_peer(stream: &UnixStream, path: &Path) -> Result<(), RemoteError> {
    let own = rustix::process::getuid().as_raw();
    match stream.peer_cred().map(|c| c.uid()) {
        Ok(uid) if uid == own => Ok(()),
        Ok(uid) => Err(RemoteError::Connect {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "the process on this socket runs as uid {uid}, not as you (uid {own}): refused"
                ),
            ),
        }),
        Err(source) => Err(RemoteError::Connect {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// An id as a path segment: only hex digits pass (anything else is
/// refused by the agent's id rule anyway, and never forms another path).
fn path_id(id: &str) -> String {
    let t = id.trim();
    if t.bytes().all(|b| b.is_ascii_hexdigit()) {
        t.to_string()
    } else {
        // Percent-encode every byte: the agent decodes nothing and answers
        // with the id rule's "not hex" error.
        t.bytes().map(|b| format!("%{b:02X}")).collect()
    }
}

/// The archive borrowed from the agent ([`AgentClient::hold`]); dropping
/// it closes the connection, and the agent takes the archive back.
pub struct Hold {
    conn: tokio::task::JoinHandle<()>,
    _body: Incoming,
    _sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// The agent's event stream.
pub struct EventStream {
    body: Incoming,
    buf: Vec<u8>,
}

/// The longest event line accepted.
const MAX_EVENT_LINE: usize = 4 * tallinn_common::defaults::MAX_ENVELOPE_LEN;

impl EventStream {
    /// The next event; `None` when the agent closed the stream.
    ///
    /// # Errors
    /// A malformed or oversized line, or a broken connection.
    pub async fn next(&mut self) -> Result<Option<EventView>, String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = line.get(..pos).unwrap_or_default();
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| format!("a malformed event from the agent: {e}"));
            }
            if self.buf.len() > MAX_EVENT_LINE {
                return Err("an oversized event from the agent".into());
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("the agent's event stream broke: {e}")),
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
            }
        }
    }
}
