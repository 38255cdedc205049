//! The `quinn` baseline: a bare forwarder on the same transport (quinn,
//! rustls TLS 1.3, ALPN `tallinn/1`, one session stream, the same frame
//! codec and transport limits) that does no authentication, verification or
//! storage. Every `Send` is answered `Accepted` at once and forwarded as
//! `Deliver` to every other connected session: the transport ceiling the
//! relay is compared with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use quinn::{Endpoint, RecvStream, SendStream, TransportConfig, VarInt};
use tallinn_common::defaults::SESSION_PREAMBLE;
use tallinn_common::message::MsgId;
use tallinn_common::wire::{self, Frame};
use tokio::sync::mpsc;

type Peers = Arc<Mutex<HashMap<u64, mpsc::Sender<Vec<u8>>>>>;

/// Runs the forwarder until killed.
///
/// # Errors
/// Setup failures.
pub async fn run(listen: SocketAddr, tls: &tallinn_relay::TlsIdentity) -> Result<()> {
    let crypto = tallinn_relay::tls::server_crypto(tls, true, Default::default())?;
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport));
    let endpoint = Endpoint::server(cfg, listen).context("binding the forwarder")?;
    eprintln!("forwarder listening on {}", endpoint.local_addr()?);
    let peers: Peers = Arc::new(Mutex::new(HashMap::new()));
    let seq = Arc::new(AtomicU64::new(1));
    let ids = AtomicU64::new(1);
    while let Some(incoming) = endpoint.accept().await {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (peers, seq) = (peers.clone(), seq.clone());
        tokio::spawn(async move {
            if let Ok(conn) = incoming.await {
                if let Ok((send, recv)) = conn.accept_bi().await {
                    let _ = session(id, send, recv, peers.clone(), seq).await;
                }
            }
            peers.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }
    Ok(())
}

async fn read(recv: &mut RecvStream) -> Option<Frame> {
    let mut p = [0u8; 4];
    recv.read_exact(&mut p).await.ok()?;
    let len = wire::frame_len(p, tallinn_common::defaults::MAX_FRAME_LEN).ok()?;
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await.ok()?;
    wire::decode_frame(&buf).ok()
}

async fn session(
    id: u64,
    mut send: SendStream,
    mut recv: RecvStream,
    peers: Peers,
    seq: Arc<AtomicU64>,
) -> Option<()> {
    let mut pre = [0u8; 4];
    recv.read_exact(&mut pre).await.ok()?;
    if pre != SESSION_PREAMBLE {
        return None;
    }
    send.write_all(&wire::encode_frame(&Frame::Hello {
        relay_name: "forwarder".into(),
        nonce: [0; 32],
    }))
    .await
    .ok()?;
    let Some(Frame::Auth {
        participant,
        device,
        ..
    }) = read(&mut recv).await
    else {
        return None;
    };
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if send.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    tx.send(wire::encode_frame(&Frame::Welcome {
        participant,
        device,
        pending: 0,
    }))
    .await
    .ok()?;
    peers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, tx.clone());
    while let Some(frame) = read(&mut recv).await {
        if let Frame::Send { envelope } = frame {
            let s = seq.fetch_add(1, Ordering::Relaxed);
            let msg_id = crate::load::msg_id_of(&envelope).unwrap_or(MsgId([0; 16]));
            tx.send(wire::encode_frame(&Frame::Accepted { msg_id, seq: s }))
                .await
                .ok()?;
            let deliver = wire::encode_frame(&Frame::Deliver {
                seq: s,
                received_at_ms: 0,
                envelope,
            });
            let targets: Vec<mpsc::Sender<Vec<u8>>> = peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(k, _)| **k != id)
                .map(|(_, v)| v.clone())
                .collect();
            for t in targets {
                let _ = t.send(deliver.clone()).await;
            }
        }
    }
    Some(())
}
