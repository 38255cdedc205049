//! The agent's HTTP/1.1 server on its Unix socket: peer credentials,
//! routing, bounded request bodies, JSON answers and the event stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::export::Selection;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

use super::api::*;
use super::ops;
use crate::client::{Client, Event};

pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The largest request body: a message at the envelope limit, in base64,
/// with room for the JSON around it.
const MAX_BODY: usize = tallinn_common::defaults::MAX_ENVELOPE_LEN / 3 * 4 + 64 * 1024;

/// Events buffered for the `/v1/events` streams before a slow one reports
/// `lagged`: a message event holds its body (up to the envelope limit),
/// so this bounds what a stalled reader can pin (64 MiB at worst).
const EVENT_BUFFER: usize = 64;

/// What every request handler shares.
pub(crate) struct Shared {
    /// The client, or `None` while a command holds the archive
    /// (`POST /v1/hold`, see `hold`).
    pub(crate) client: std::sync::RwLock<Option<Arc<Client>>>,
    /// To open the client again after a hold: the last settings, and how
    /// to load them anew (the holder may have rotated the key file).
    pub(crate) settings: crate::client::Settings,
    pub(crate) reload: Option<super::Reload>,
    /// Bumped each time a client is installed (the event pump follows).
    pub(crate) generation: tokio::sync::watch::Sender<u64>,
    /// Set when the agent stops: a hold ending then opens nothing.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    pub(crate) events: broadcast::Sender<Arc<EventView>>,
    /// How long a compose waits for a session before it queues.
    pub(crate) connect_wait: Duration,
    /// The uid allowed to connect (this process's).
    pub(crate) uid: u32,
    /// The version-1 roster file's text, for the export's header.
    pub(crate) roster_text: String,
}

impl Shared {
    pub(crate) fn new(
        client: Client,
        connect_wait: Duration,
        roster_text: String,
        reload: Option<super::Reload>,
    ) -> Arc<Shared> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (generation, _) = tokio::sync::watch::channel(0);
        Arc::new(Shared {
            settings: client.settings().clone(),
            reload,
            client: std::sync::RwLock::new(Some(Arc::new(client))),
            generation,
            stopping: std::sync::atomic::AtomicBool::new(false),
            events,
            connect_wait,
            uid: rustix::process::getuid().as_raw(),
            roster_text,
        })
    }
}

impl Shared {
    /// The client, or 503 `held` while a command holds the archive.
    pub(crate) fn client(&self) -> Result<Arc<Client>, ApiError> {
        self.client
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                ApiError::new(
                    503,
                    "held",
                    "another tallinn command holds the archive for a moment; try again when it is done",
                )
            })
    }

    /// Takes the client out (a hold, or the agent stopping).
    pub(crate) fn take_client(&self) -> Option<Arc<Client>> {
        self.client
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Installs a client and tells the event pump.
    pub(crate) fn install(&self, client: Client) {
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(client));
        self.generation.send_modify(|g| *g += 1);
    }

    /// The status, also while held.
    pub(crate) fn status(&self) -> StatusView {
        match self.client() {
            Ok(c) => ops::status(&c),
            Err(_) => StatusView {
                api: API_VERSION,
                pid: std::process::id(),
                participant: self.settings.identity.id().to_string(),
                device: self.settings.device.to_string(),
                relay: self.settings.relay.to_string(),
                connected: false,
                sessions: 0,
                archive_records: 0,
                outbox: 0,
                roster_epoch: None,
                last_error: Some("the archive is held by another tallinn command".into()),
            },
        }
    }
}

/// Forwards each client's events to every `/v1/events` stream; after a
/// hold, follows the client opened again.
pub(crate) async fn pump_events(shared: Arc<Shared>) {
    let mut generation = shared.generation.subscribe();
    loop {
        let rx = shared.client().ok().and_then(|c| c.events());
        match rx {
            Some(rx) => forward_events(&shared, rx).await,
            None => {
                if generation.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn forward_events(shared: &Arc<Shared>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>) {
    while let Some(ev) = rx.recv().await {
        let view = match ev {
            Event::Connected { pending } => EventView::Connected { pending },
            Event::Disconnected { reason } => EventView::Disconnected { reason },
            Event::Message(r) => {
                let read = shared
                    .client()
                    .ok()
                    .and_then(|c| c.archive().is_read(&r).ok())
                    .unwrap_or(false);
                EventView::Message {
                    message: Box::new(MessageView::of(&r, read)),
                }
            }
            Event::Quarantined(q) => EventView::Quarantined {
                seq: q.seq,
                reason: q.reason.clone(),
            },
            Event::Accepted { msg_id, seq } => EventView::Accepted {
                msg_id: msg_id.to_hex(),
                seq,
            },
            Event::Archived => continue,
        };
        // No subscriber is fine: the archive keeps everything.
        let _ = shared.events.send(Arc::new(view));
    }
}

/// Accepts connections until the task is aborted; each is served on its
/// own task (aborted with the server).
pub(crate) async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("agent socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        conns.spawn(async move { serve_conn(stream, shared).await });
    }
}

/// Whether a connecting process may use the agent: only the agent's own
/// user (the socket's mode 0600 already says so; this is the second lock).
pub(crate) fn peer_allowed(peer_uid: Option<u32>, own_uid: u32) -> bool {
    peer_uid == Some(own_uid)
}

async fn serve_conn(stream: UnixStream, shared: Arc<Shared>) {
    let peer = stream.peer_cred().ok().map(|c| c.uid());
    let allowed = peer_allowed(peer, shared.uid);
    if !allowed {
        tracing::warn!(?peer, "agent socket: refused a process of another user");
    }
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move {
            if !allowed {
                return Ok::<_, Infallible>(error(ApiError::new(
                    403,
                    "forbidden",
                    "this agent serves only the user that runs it",
                )));
            }
            Ok(route(req, &shared).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!("agent connection ended: {e}");
    }
}

fn json<T: Serialize>(status: u16, v: &T) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

/// Raw bytes, with their SHA-256 and (percent-encoded) name in headers.
fn bytes_answer(name: &str, data: Vec<u8>) -> Response<Body> {
    use sha2::Digest as _;
    let sha = hex::encode(sha2::Sha256::digest(&data));
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .header("x-tallinn-sha256", sha)
        .header("x-tallinn-name", encoded)
        .body(Full::new(Bytes::from(data)).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn error(e: ApiError) -> Response<Body> {
    json(e.status, &ErrorBody { error: e })
}

/// An error answer (for the other modules of the agent).
pub(crate) fn error_response(e: ApiError) -> Response<Body> {
    error(e)
}

fn answer<T: Serialize>(r: Result<T, ApiError>) -> Response<Body> {
    match r {
        Ok(v) => json(200, &v),
        Err(e) => error(e),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    // A declared length over the limit is refused before anything is read.
    if hyper::body::Body::size_hint(req.body()).lower() > MAX_BODY as u64 {
        return Err(ApiError::new(
            413,
            "too_large",
            format!("request body over {MAX_BODY} bytes"),
        ));
    }
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::new(
                    413,
                    "too_large",
                    format!("request body over {MAX_BODY} bytes"),
                )
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            }
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

async fn route(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/v1/") else {
        return error(ApiError::not_found(format!(
            "no endpoint {path}: the API is under /v1/"
        )));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["status"]) => return json(200, &shared.status()),
        (Method::GET, ["events"]) => return events(shared),
        (Method::POST, ["hold"]) => return super::hold::hold(shared).await,
        _ => {}
    }
    let client = match shared.client() {
        Ok(c) => c,
        Err(e) => return error(e),
    };
    let client = &*client;
    match (req.method().clone(), parts.as_slice()) {
        (Method::POST, ["search"]) => match read_json::<SearchRequest>(req).await {
            Ok(q) => answer(ops::search(client, &q)),
            Err(e) => error(e),
        },
        (Method::POST, ["messages"]) => match read_json::<ComposeRequest>(req).await {
            Ok(c) => answer(ops::compose(client, &c, shared.connect_wait).await),
            Err(e) => error(e),
        },
        (Method::GET, ["messages", id]) => answer(ops::show(client, id)),
        (Method::POST, ["requests"]) => match read_json::<CaseListRequest>(req).await {
            Ok(q) => answer(super::cases::requests(client, &q)),
            Err(e) => error(e),
        },
        (Method::GET, ["requests", id]) => answer(super::cases::request_show(client, id)),
        (Method::POST, ["share"]) => match read_json::<ShareRequest>(req).await {
            Ok(q) => answer(super::cases::share(client, &q)),
            Err(e) => error(e),
        },
        (Method::GET, ["messages", id, "thread"]) => answer(ops::thread(client, id)),
        (Method::POST, ["messages", id, "read"]) => {
            answer(ops::mark_read(client, id).map(|id| serde_json::json!({ "read": id })))
        }
        (Method::GET, ["outbox"]) => answer(ops::outbox(client)),
        (Method::DELETE, ["outbox", id]) => {
            answer(ops::outbox_drop(client, id).map(|id| serde_json::json!({ "dropped": id })))
        }
        (Method::POST, ["outbox", "retry"]) => {
            let n = client.retry_outbox();
            json(200, &serde_json::json!({ "retried": n }))
        }
        (Method::POST, ["outbox", id, "resend"]) => answer(
            ops::outbox_resend(client, id)
                .map(|(old, new)| serde_json::json!({ "old": old, "new": new })),
        ),
        (Method::GET, ["quarantine"]) => answer(ops::quarantine(client)),
        (Method::POST, ["quarantine", "retry"]) => answer(ops::quarantine_retry(client)),
        (Method::POST, ["quarantine", "purge"]) => match read_json::<PurgeRequest>(req).await {
            Ok(p) => answer(ops::quarantine_purge(client, &p)),
            Err(e) => error(e),
        },
        (Method::GET, ["messages", id, "attachments", n]) => {
            let r = n
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request("the attachment number is 1, 2, ..."))
                .and_then(|n| ops::attachment(client, id, n));
            match r {
                Ok((name, data)) => bytes_answer(&name, data),
                Err(e) => error(e),
            }
        }
        (Method::GET, ["archive", "stats"]) => answer(ops::archive_stats(client)),
        (Method::POST, ["archive", "verify"]) => match read_json::<VerifyRequest>(req).await {
            Ok(v) => {
                let client = shared.client();
                // Verification reads the whole archive: off the runtime.
                match tokio::task::spawn_blocking(move || ops::archive_verify(&*client?, v.deep))
                    .await
                {
                    Ok(r) => answer(r),
                    Err(e) => error(ApiError::internal(format!("verification stopped: {e}"))),
                }
            }
            Err(e) => error(e),
        },
        (Method::GET, ["archive", "export"]) => export(shared, Selection::default()),
        (Method::POST, ["archive", "export"]) => match read_json::<Selection>(req).await {
            Ok(sel) => export(shared, sel),
            Err(e) => error(e),
        },
        (
            _,
            ["status" | "search" | "messages" | "outbox" | "quarantine" | "events" | "archive", ..],
        ) => error(ApiError::new(
            405,
            "method_not_allowed",
            format!("{} is not allowed on {path}", req.method()),
        )),
        _ => error(ApiError::not_found(format!("no endpoint {path}"))),
    }
}

/// Bytes written by a blocking export, sent on to the response body in
/// chunks; the channel's bound keeps memory flat however large the export.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

const EXPORT_CHUNK: usize = 64 * 1024;

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= EXPORT_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader left"))
    }
}

/// `GET /v1/archive/export`: the JSON Lines export, streamed as it is
/// written. Line 1 states the record count: a reader that gets fewer lines
/// knows the export broke off.
fn export(shared: &Arc<Shared>, selection: Selection) -> Response<Body> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let shared = shared.clone();
    let client = match shared.client() {
        Ok(c) => c,
        Err(e) => return error(e),
    };
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(EXPORT_CHUNK),
        };
        let now = tallinn_common::unix_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        if let Err(e) = ops::export(
            &client,
            &shared.roster_text,
            now,
            &selection,
            &mut w,
            |_| {},
        ) {
            tracing::warn!(error = %e, "archive export through the agent broke off");
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|c| c.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

/// `GET /v1/events`: newline-delimited JSON, one [`EventView`] a line,
/// starting with `hello`, for as long as the caller stays.
fn events(shared: &Arc<Shared>) -> Response<Body> {
    let rx = shared.events.subscribe();
    let st = &shared.settings;
    let hello = EventView::Hello {
        participant: st.identity.id().to_string(),
        device: st.device.to_string(),
        connected: shared.client().is_ok_and(|c| c.state().borrow().connected),
    };
    let line = |ev: &EventView| {
        let mut v = serde_json::to_vec(ev).unwrap_or_default();
        v.push(b'\n');
        Ok::<_, Infallible>(Frame::data(Bytes::from(v)))
    };
    let first = line(&hello);
    let stream =
        futures_util::stream::unfold((Some(first), rx), move |(first, mut rx)| async move {
            if let Some(f) = first {
                return Some((f, (None, rx)));
            }
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Arc::new(EventView::Lagged { missed })
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((line(&ev), (None, rx)))
        });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_own_user_is_served() {
        assert!(peer_allowed(Some(1000), 1000));
        assert!(!peer_allowed(Some(0), 1000));
        assert!(!peer_allowed(Some(1001), 1000));
        assert!(!peer_allowed(None, 1000));
    }
}
