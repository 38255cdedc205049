//! Byte and authentication budgets against a real relay: the send rate in
//! bytes, the per-participant storage quota, and authentication rate limits
//! per participant and per address (issue 10 items 14 and 16).

mod util;

use std::time::Duration;

use tallinn_common::envelope::seal;
use tallinn_common::message::{Message, Tlp};
use tallinn_common::wire::{self, ErrorCode, Frame};
use tallinn_relay::Limits;
use util::*;

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test finished in time")
}

fn code_of(f: &Frame) -> Option<ErrorCode> {
    match f {
        Frame::Rejected { code, .. } | Frame::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// A note of about `body` bytes from `from` into the front office.
fn big(w: &World, from: &str, body: usize) -> Vec<u8> {
    let m = Message::note(Tlp::Green, "bulk", "x".repeat(body));
    seal(w.id(from), &w.roster, "front-office", &m, now_ms())
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// The send rate counts bytes too: with plenty of message tokens, a byte
/// budget of 10 KiB lets about five 2 KiB envelopes through, not fifty.
#[tokio::test]
async fn the_send_rate_counts_bytes() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits {
            send_burst: 1000,
            send_rate_per_sec: 0.001,
            send_bytes_burst: 10 * 1024,
            send_bytes_per_sec: 1,
            ..Limits::default()
        };
        let relay = TestRelay::start(&w, limits).await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let mut accepted = 0;
        let mut limited = None;
        for i in 0..50 {
            match ua.send_env(&big(&w, "UA", 2000)).await {
                Frame::Accepted { .. } => accepted += 1,
                f => {
                    limited = Some((i, code_of(&f)));
                    break;
                }
            }
        }
        assert_eq!(limited.map(|l| l.1), Some(Some(ErrorCode::RateLimited)));
        assert!((3..=5).contains(&accepted), "{accepted} accepted");
        relay.server.shutdown().await;
    })
    .await;
}

/// A participant's undelivered messages are bounded in bytes: past the
/// quota its sends get `quota_exceeded`; once the recipients collected
/// them (and GC removed them) it may send again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_quota_refuses_then_frees_once_collected() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits {
            max_stored_bytes_per_participant: 12 * 1024,
            ..Limits::default()
        };
        let relay = TestRelay::start_with(&w, limits, tempfile::tempdir().unwrap(), |c| {
            c.gc_interval = Duration::from_millis(50);
        })
        .await;
        let (mut ee, _) = login(relay.addr(), relay.pin, w.id("EE"), "office").await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let mut accepted = 0;
        let refusal = loop {
            match ua.send_env(&big(&w, "UA", 2000)).await {
                Frame::Accepted { .. } => accepted += 1,
                f => break f,
            }
            assert!(accepted < 20, "the quota never applied");
        };
        assert_eq!(
            code_of(&refusal),
            Some(ErrorCode::QuotaExceeded),
            "{refusal:?}"
        );
        let Frame::Rejected { reason, .. } = &refusal else {
            unreachable!()
        };
        assert!(reason.contains("quota 12288"), "{reason}");
        assert!(accepted >= 3, "{accepted} accepted");
        // EE is the only device of the recipients that ever connected (UA
        // sent them): once it acks, GC deletes them and the quota frees.
        receive(&mut ee, accepted, true).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match ua.send_env(&big(&w, "UA", 2000)).await {
                Frame::Accepted { .. } => break,
                f => assert_eq!(code_of(&f), Some(ErrorCode::QuotaExceeded)),
            }
            assert!(tokio::time::Instant::now() < deadline, "quota never freed");
            // Wait for the next GC pass, observed through the metric.
            let before = relay
                .server
                .metrics()
                .messages_acked_removed
                .load(std::sync::atomic::Ordering::SeqCst);
            while relay
                .server
                .metrics()
                .messages_acked_removed
                .load(std::sync::atomic::Ordering::SeqCst)
                == before
                && tokio::time::Instant::now() < deadline
            {
                tokio::task::yield_now().await;
            }
        }
        relay.server.shutdown().await;
    })
    .await;
}

/// Authentication attempts are budgeted: per participant only once the
/// signature verified (forged attempts cannot lock a participant out),
/// and per address before any check.
#[tokio::test]
async fn authentication_is_rate_limited_per_participant_and_address() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits {
            auth_burst: 2,
            auth_rate_per_sec: 0.001,
            auth_burst_per_ip: 12,
            auth_rate_per_sec_per_ip: 0.001,
            ..Limits::default()
        };
        let relay = TestRelay::start(&w, limits).await;
        // Five forged Auths claiming EE: refused for the signature, and
        // they spend only the address's budget.
        for _ in 0..5 {
            let mut raw = open(relay.addr(), relay.pin).await;
            let Frame::Auth { signature, .. } =
                wire::sign_auth(w.id("PL"), "d", &raw.nonce, &raw.exporter)
            else {
                unreachable!()
            };
            raw.write(&Frame::Auth {
                participant: "EE".into(),
                device: "d".into(),
                signature,
            })
            .await;
            assert_eq!(
                code_of(&raw.read().await.unwrap()),
                Some(ErrorCode::BadSignature)
            );
        }
        // EE itself still gets its two, then `rate_limited`.
        let (_a, _) = login(relay.addr(), relay.pin, w.id("EE"), "a").await;
        let (_b, _) = login(relay.addr(), relay.pin, w.id("EE"), "b").await;
        let mut third = open(relay.addr(), relay.pin).await;
        let f = third.auth_as(w.id("EE"), "c").await;
        assert_eq!(code_of(&f), Some(ErrorCode::RateLimited), "{f:?}");
        // Others are not affected by EE's budget, but the address's budget
        // (12: 5 forged + 3 EE + 4 below) runs out for everyone.
        for who in ["UA", "PL", "DK", "FR"] {
            login(relay.addr(), relay.pin, w.id(who), "d").await;
        }
        let mut over = open(relay.addr(), relay.pin).await;
        let f = over.auth_as(w.id("SE"), "d").await;
        assert_eq!(code_of(&f), Some(ErrorCode::RateLimited), "{f:?}");
        let Frame::Error { reason, .. } = f else {
            unreachable!()
        };
        assert!(reason.contains("address"), "{reason}");
        assert_eq!(
            relay
                .server
                .metrics()
                .auth_failures
                .get(ErrorCode::RateLimited),
            2
        );
        relay.server.shutdown().await;
    })
    .await;
}
