//! Storage faults against a real relay: a fault-injecting wrapper around the
//! real sled store makes a commit fail, and the relay must stop (fail-stop)
//! without losing, duplicating or reordering anything across the restart.

mod util;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tallinn_common::message::MsgId;
use tallinn_common::roster::SignedEntry;
use tallinn_common::wire::{ErrorCode, Frame};
use tallinn_relay::store::{
    Appended, GcStats, LogEntry, SledStore, Store, StoreError, StoreStats, StoredMessage,
};
use tallinn_relay::Limits;
use util::*;

/// The real store, except that the next `fail_commits` commits fail (as an
/// `fdatasync` returning EIO would) without reaching the commit log.
struct FaultyStore {
    inner: SledStore,
    fail_commits: AtomicU32,
}

impl FaultyStore {
    fn injected(&self) -> Option<StoreError> {
        let left = self.fail_commits.load(Ordering::SeqCst);
        if left == 0 {
            return None;
        }
        self.fail_commits.store(left - 1, Ordering::SeqCst);
        Some(StoreError::Sync(std::io::Error::other(
            "injected fault: EIO",
        )))
    }
}

impl Store for FaultyStore {
    fn append(&self, msg_id: MsgId, entry: &LogEntry) -> Result<Appended, StoreError> {
        self.inner.append(msg_id, entry)
    }
    fn seen(&self, msg_id: &MsgId) -> Result<Option<u64>, StoreError> {
        self.inner.seen(msg_id)
    }
    fn commit(&self) -> Result<(), StoreError> {
        match self.injected() {
            Some(e) => Err(e),
            None => self.inner.commit(),
        }
    }
    fn flush(&self) -> Result<(), StoreError> {
        match self.injected() {
            Some(e) => Err(e),
            None => self.inner.flush(),
        }
    }
    fn inbox_after(
        &self,
        participant: &str,
        device: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.inbox_after(participant, device, after, limit)
    }
    fn pending(&self, participant: &str, device: &str, after: u64) -> Result<u64, StoreError> {
        self.inner.pending(participant, device, after)
    }
    fn roster_log(&self) -> Result<Vec<(SignedEntry, u64)>, StoreError> {
        self.inner.roster_log()
    }
    fn append_roster_entry(&self, i: u64, e: &SignedEntry, now_ms: u64) -> Result<(), StoreError> {
        self.inner.append_roster_entry(i, e, now_ms)
    }
    fn archive_checkpoint(&self, p: &str, d: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.archive_checkpoint(p, d)
    }
    fn put_archive_checkpoint(&self, p: &str, d: &str, c: &[u8]) -> Result<(), StoreError> {
        self.inner.put_archive_checkpoint(p, d, c)
    }
    fn touch_device(&self, p: &str, d: &str, now_ms: u64) -> Result<u64, StoreError> {
        self.inner.touch_device(p, d, now_ms)
    }
    fn devices(&self, participant: &str) -> Result<Vec<String>, StoreError> {
        self.inner.devices(participant)
    }
    fn ack(&self, p: &str, d: &str, up_to: u64, now_ms: u64) -> Result<(), StoreError> {
        self.inner.ack(p, d, up_to, now_ms)
    }
    fn gc(&self, now_ms: u64, retention_ms: u64) -> Result<GcStats, StoreError> {
        self.inner.gc(now_ms, retention_ms)
    }
    fn stored_bytes(&self, sender: &str) -> u64 {
        self.inner.stored_bytes(sender)
    }
    fn healthy(&self) -> bool {
        self.inner.healthy()
    }
    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }
    fn last_seq(&self) -> u64 {
        self.inner.last_seq()
    }
    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats()
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test finished in time")
}

async fn http_status(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines().next().unwrap_or_default().to_string()
}

fn rejected_code(f: &Frame) -> Option<ErrorCode> {
    match f {
        Frame::Rejected { code, .. } => Some(*code),
        _ => None,
    }
}

/// Items 1 and 2: the first commit fails. The relay refuses that send and
/// every later one with `internal`, reports unhealthy and signals its
/// failure (the binary exits non-zero on it); nothing of the failed batch is
/// routed. After a restart on the same data, the sender's resends make both
/// messages durable, and the recipient, online meanwhile, receives both in
/// order, then both again in order after reconnecting without acking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_stops_the_relay_and_a_restart_delivers_everything_in_order() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits::default();
        let relay =
            TestRelay::start_with_store(&w, limits.clone(), tempfile::tempdir().unwrap(), |data| {
                Arc::new(FaultyStore {
                    inner: SledStore::open(data).unwrap(),
                    fail_commits: AtomicU32::new(1),
                })
            })
            .await;
        let (_ee, _) = login(relay.addr(), relay.pin, w.id("EE"), "office").await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let m1 = w.seal("UA", "front-office", "m1");
        let m2 = w.seal("UA", "front-office", "m2");
        let first = ua.send_env(m1.as_bytes()).await;
        assert_eq!(
            rejected_code(&first),
            Some(ErrorCode::Internal),
            "{first:?}"
        );
        let why = tokio::time::timeout(WAIT, relay.server.failed())
            .await
            .expect("the relay reports its failure");
        assert!(why.contains("injected fault"), "{why}");
        // Fail-stop: the next commit would succeed, but none is attempted.
        let second = ua.send_env(m2.as_bytes()).await;
        assert_eq!(
            rejected_code(&second),
            Some(ErrorCode::Internal),
            "{second:?}"
        );
        let metrics = relay.server.metrics_addr().unwrap();
        assert!(
            http_status(metrics, "/healthz").await.contains("503"),
            "unhealthy after a storage failure"
        );
        assert_eq!(
            relay.server.metrics().deliveries.load(Ordering::SeqCst),
            0,
            "nothing of a failed batch is delivered"
        );
        let TestRelay { server, dir, .. } = relay;
        server.shutdown().await;

        // The supervisor restarts the relay on the same data.
        let relay = TestRelay::start_in(&w, limits, dir).await;
        let (mut ee, _) = login(relay.addr(), relay.pin, w.id("EE"), "office").await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        // The client resends its outbox: the same bytes.
        for m in [&m1, &m2] {
            let f = ua.send_env(m.as_bytes()).await;
            assert!(
                matches!(f, Frame::Accepted { .. })
                    || rejected_code(&f) == Some(ErrorCode::Duplicate),
                "{f:?}"
            );
        }
        let want = vec![m1.msg_id(), m2.msg_id()];
        let got = receive(&mut ee, 2, false).await;
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), want);
        assert!(got[0].0 < got[1].0, "in seq order: {got:?}");
        // Reconnect without having acked: both again, in the same order.
        ee.conn.close(0u32.into(), b"bye");
        drop(ee);
        let (mut ee, pending) = login(relay.addr(), relay.pin, w.id("EE"), "office").await;
        assert_eq!(pending, 2);
        let again = receive(&mut ee, 2, true).await;
        assert_eq!(again, got);
        relay.server.shutdown().await;
    })
    .await;
}
