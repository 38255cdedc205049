//! `POST /v1/hold`: a command that needs the archive to itself (the
//! `roster` and `device` governance commands) borrows it from the running
//! agent. The agent closes its client (session closed, archive flushed,
//! database lock released) and answers `held` at once, then keeps the
//! answer open with a newline every 250 ms; when the holder's connection goes
//! (the command finished, or died), the agent opens its client again and
//! carries on. Meanwhile other endpoints answer 503 `held`, and a second
//! hold 409.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};

use super::api::ApiError;
use super::server::Shared;
use crate::client::Client;

/// How often the held answer proves the holder is still there.
const KEEPALIVE: Duration = Duration::from_millis(250);

/// Opens the client again when dropped (with the held answer's stream:
/// the holder disconnected, or the agent is stopping).
struct ResumeOnDrop(Arc<Shared>);

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        let shared = self.0.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(resume(shared));
        }
    }
}

/// Opens the client again (retrying while the holder's process still has
/// the database) unless the agent is stopping.
async fn resume(shared: Arc<Shared>) {
    let mut pause = Duration::from_millis(200);
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        // The holder may have rotated the key file (`device rotate`,
        // `sync`): load the settings anew when the agent knows how.
        let reload = shared.reload.clone();
        let last = shared.settings.clone();
        let open = move || -> Result<Client, String> {
            let settings = match reload {
                Some(r) => r()?,
                None => last,
            };
            Client::start(settings).map_err(|e| e.to_string())
        };
        match tokio::task::spawn_blocking(open).await {
            Ok(Ok(c)) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    c.close().await;
                    return;
                }
                shared.install(c);
                tracing::info!("the hold ended: the agent has the archive again");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reopening the archive after a hold; retrying")
            }
            Err(e) => tracing::warn!(error = %e, "reopening the archive after a hold; retrying"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

pub(crate) async fn hold(shared: &Arc<Shared>) -> Response<super::server::Body> {
    let Some(client) = shared.take_client() else {
        return super::server::error_response(ApiError::new(
            409,
            "held",
            "another tallinn command holds the archive already",
        ));
    };
    client.close().await;
    drop(client);
    tracing::info!("a command holds the archive; the agent waits");
    let guard = ResumeOnDrop(shared.clone());
    let stream = futures_util::stream::unfold((true, guard), |(first, guard)| async move {
        if !first {
            tokio::time::sleep(KEEPALIVE).await;
        }
        let line: &'static [u8] = if first { b"held\n" } else { b"\n" };
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(line))),
            (false, guard),
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}
