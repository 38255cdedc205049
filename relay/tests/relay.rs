//! End-to-end tests of the relay against real QUIC connections on
//! 127.0.0.1, in-process or as a child process.

mod util;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tallinn_common::envelope::{seal_to, Envelope};
use tallinn_common::message::{Message, Tlp};
use tallinn_common::wire::{self, ErrorCode, Frame};
use tallinn_relay::Limits;
use util::*;

fn code_of(f: &Frame) -> Option<ErrorCode> {
    match f {
        Frame::Rejected { code, .. } | Frame::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn test_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(500),
        ..Limits::default()
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test finished in time")
}

#[tokio::test]
async fn wrong_alpn_is_refused() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let ep = client_endpoint(relay.pin, b"h3");
        let res = ep.connect(relay.addr(), "localhost").unwrap().await;
        assert!(res.is_err(), "a client offering ALPN h3 must be refused");
        // The right ALPN works on the same relay.
        let (_raw, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        relay.server.shutdown().await;
    })
    .await;
}

/// Waits until the relay's metrics contain `line`.
async fn wait_metric(relay: &TestRelay, line: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = relay.server.render_metrics();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `{line}` in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn post_quantum_key_exchange_is_required_by_default() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        // A client limited to X25519 is refused in the handshake.
        let ep = classical_client_endpoint(relay.pin);
        let err = ep
            .connect(relay.addr(), "localhost")
            .unwrap()
            .await
            .expect_err("an X25519-only client must be refused");
        assert!(err.to_string().contains("NoKxGroupsInCommon"), "{err}");
        wait_metric(&relay, "tallinn_tls_refused_classical_total 1").await;
        // A normal session negotiates X25519MLKEM768.
        let (_ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        wait_metric(
            &relay,
            "tallinn_tls_key_exchanges_total{group=\"X25519MLKEM768\"} 1",
        )
        .await;
        wait_metric(
            &relay,
            "tallinn_tls_key_exchanges_total{group=\"classical\"} 0",
        )
        .await;
        relay.server.shutdown().await;
    })
    .await;
}

/// Item 18: the refusal of a classical-only client is a clear log line of
/// the relay binary (not only a metric).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classical_only_client_is_refused_with_a_clear_log_line() {
    timed(async {
        let w = World::tallinn();
        let dir = tempfile::tempdir().unwrap();
        write_child_config(dir.path(), &w);
        let relay = ChildRelay::start(dir.path());
        let ep = classical_client_endpoint(relay.pin);
        let err = ep
            .connect(relay.addr, "localhost")
            .unwrap()
            .await
            .expect_err("an X25519-only client must be refused");
        assert!(err.to_string().contains("NoKxGroupsInCommon"), "{err}");
        let line = tokio::task::spawn_blocking(move || {
            let line = relay.wait_for_log("the client offers no post-quantum key exchange");
            relay.kill9();
            line
        })
        .await
        .unwrap()
        .expect("the relay logs the refusal");
        assert!(line.contains("X25519MLKEM768 is required"), "{line}");
        assert!(line.contains("WARN"), "{line}");
    })
    .await;
}

#[tokio::test]
async fn classical_key_exchange_is_accepted_and_counted_when_allowed() {
    timed(async {
        let w = World::tallinn();
        let dir = tempfile::tempdir().unwrap();
        let relay = TestRelay::start_with(&w, test_limits(), dir, |c| {
            c.require_post_quantum = false;
        })
        .await;
        let ep = classical_client_endpoint(relay.pin);
        let conn = ep
            .connect(relay.addr(), "localhost")
            .unwrap()
            .await
            .unwrap();
        wait_metric(
            &relay,
            "tallinn_tls_key_exchanges_total{group=\"classical\"} 1",
        )
        .await;
        conn.close(0u32.into(), b"");
        relay.server.shutdown().await;
    })
    .await;
}

/// Opens `n` connections that finish the TLS handshake and then say
/// nothing (no stream, no `Auth`).
async fn silent_connections(
    relay: &TestRelay,
    n: usize,
) -> (quinn::Endpoint, Vec<quinn::Connection>) {
    let ep = client_endpoint(relay.pin, tallinn_common::defaults::ALPN);
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(
            ep.connect(relay.addr(), "localhost")
                .unwrap()
                .await
                .unwrap(),
        );
    }
    (ep, conns)
}

/// Logs in, sends one message to the front office and checks that EE
/// receives it: the whole honest path.
async fn honest_round_trip(w: &World, relay: &TestRelay) {
    let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
    let sent = ua
        .send_env(w.seal("UA", "front-office", "through the flood").as_bytes())
        .await;
    assert!(matches!(sent, Frame::Accepted { .. }), "{sent:?}");
    let (mut ee, pending) = login(relay.addr(), relay.pin, w.id("EE"), "d").await;
    assert_eq!(pending, 1);
    ee.expect("Deliver", |f| matches!(f, Frame::Deliver { .. }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_lock_out_honest_clients() {
    timed(async {
        let w = World::tallinn();
        // The handshake timeout is long: the defence under test is
        // admission, not the timeout.
        let limits = Limits {
            max_connections: 50,
            handshake_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let relay = TestRelay::start(&w, limits).await;
        // 60 connections from the honest clients' own address (loopback).
        let (_ep, silent) = silent_connections(&relay, 60).await;
        honest_round_trip(&w, &relay).await;
        // The oldest silent ones made room: 10 for the flood beyond 50, two
        // for the honest sessions.
        wait_metric(&relay, "tallinn_connections_evicted_total 12").await;
        wait_metric(&relay, "tallinn_connections_refused_total 0").await;
        drop(silent);
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_auth_budget_retries_and_evicts_the_oldest() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits {
            max_unauthenticated_connections: 4,
            handshake_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let relay = TestRelay::start(&w, limits).await;
        let (_ep, silent) = silent_connections(&relay, 10).await;
        honest_round_trip(&w, &relay).await;
        // Half the budget in use: new handshakes were address-validated
        // (after the first Retry, quinn's client reuses the relay's
        // NEW_TOKEN, so later attempts arrive validated).
        let text = relay.server.render_metrics();
        let retried: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tallinn_connections_retried_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(retried >= 1, "{text}");
        // 10 silent in a budget of 4: 6 evicted; UA evicts one more, and
        // once it authenticated EE fits in the freed place.
        wait_metric(&relay, "tallinn_connections_evicted_total 7").await;
        drop(silent);
        relay.server.shutdown().await;
    })
    .await;
}

/// Item 13: until `Welcome` the connection's receive window is 16 KiB, so a
/// client that has not authenticated can make the relay buffer at most that
/// much. Polled without yielding on the one runtime thread, no packet moves
/// meanwhile: what `write` accepts is exactly the flow-control credit the
/// relay granted in its transport parameters.
#[tokio::test]
async fn before_welcome_a_client_can_push_at_most_the_small_window() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let mut raw = open(relay.addr(), relay.pin).await;
        let chunk = vec![0u8; 1024];
        let mut accepted = 0usize;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..1024 {
            let mut write = std::pin::pin!(raw.send.write(&chunk));
            match std::future::Future::poll(write.as_mut(), &mut cx) {
                std::task::Poll::Ready(Ok(n)) if n > 0 => accepted += n,
                _ => break,
            }
        }
        let window = tallinn_relay::defaults::PRE_AUTH_RECEIVE_WINDOW as usize;
        assert!(
            accepted < window,
            "{accepted} bytes buffered before Welcome"
        );
        assert!(
            accepted >= window / 2,
            "{accepted}: the window is not closed"
        );
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_pin_is_refused_by_the_client() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let ep = client_endpoint([0; 32], tallinn_common::defaults::ALPN);
        assert!(ep
            .connect(relay.addr(), "localhost")
            .unwrap()
            .await
            .is_err());
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_handshake_timeout() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let raw = open(relay.addr(), relay.pin).await;
        // Never send Auth.
        assert_eq!(raw.closed_code().await, Some(ErrorCode::Unauthenticated));
        assert_eq!(
            relay
                .server
                .metrics()
                .auth_failures
                .get(ErrorCode::Unauthenticated),
            1
        );
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn auth_with_another_key_or_replayed_fails() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        // EE's key claiming to be UA.
        let mut raw = open(relay.addr(), relay.pin).await;
        let Frame::Auth { signature, .. } =
            wire::sign_auth(w.id("EE"), "d", &raw.nonce, &raw.exporter)
        else {
            unreachable!()
        };
        raw.write(&Frame::Auth {
            participant: "UA".into(),
            device: "d".into(),
            signature,
        })
        .await;
        let f = raw.read().await.expect("error frame");
        assert_eq!(code_of(&f), Some(ErrorCode::BadSignature));
        assert_eq!(raw.closed_code().await, Some(ErrorCode::BadSignature));

        // A valid Auth captured on one connection, replayed on another.
        let mut first = open(relay.addr(), relay.pin).await;
        let captured = wire::sign_auth(w.id("UA"), "d", &first.nonce, &first.exporter);
        first.write(&captured).await;
        assert!(matches!(first.read().await, Some(Frame::Welcome { .. })));
        let mut second = open(relay.addr(), relay.pin).await;
        second.write(&captured).await;
        assert_eq!(
            code_of(&second.read().await.unwrap()),
            Some(ErrorCode::BadSignature)
        );

        // Unknown participant.
        let mut third = open(relay.addr(), relay.pin).await;
        third
            .write(&Frame::Auth {
                participant: "XX".into(),
                device: "d".into(),
                signature: [0; 64],
            })
            .await;
        assert_eq!(
            code_of(&third.read().await.unwrap()),
            Some(ErrorCode::UnknownParticipant)
        );

        // Anything but Auth before Welcome.
        let mut fourth = open(relay.addr(), relay.pin).await;
        fourth.write(&Frame::Ack { up_to_seq: 1 }).await;
        assert_eq!(
            code_of(&fourth.read().await.unwrap()),
            Some(ErrorCode::Unauthenticated)
        );

        let m = relay.server.metrics();
        assert_eq!(m.auth_failures.get(ErrorCode::BadSignature), 2);
        assert_eq!(m.auth_failures.get(ErrorCode::UnknownParticipant), 1);
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn every_send_rejection_code() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits {
            send_burst: 30,
            send_rate_per_sec: 0.001,
            max_message_len: 64 * 1024,
            max_frame_len: 128 * 1024,
            ..test_limits()
        };
        let relay = TestRelay::start(&w, limits).await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let note = Message::note(Tlp::Amber, "s", "b");
        let mut rng = rand::rng();
        let plenary_keys = |from: &str, skip: &str| -> Vec<(String, [u8; 32])> {
            w.roster
                .recipients(from, "plenary")
                .unwrap()
                .iter()
                .filter(|p| p.id().as_str() != skip)
                .map(|p| (p.id().to_string(), p.public.enc_key))
                .collect()
        };
        let as_refs = |v: &Vec<(String, [u8; 32])>| -> Vec<(String, [u8; 32])> { v.clone() };
        let seal_raw = |from: &str,
                        channel: &str,
                        keys: &Vec<(String, [u8; 32])>,
                        at: u64,
                        rng: &mut rand::rngs::ThreadRng| {
            let refs: Vec<(&str, [u8; 32])> = keys.iter().map(|(a, b)| (a.as_str(), *b)).collect();
            seal_to(w.id(from), channel, &refs, &note, at, rng).unwrap()
        };

        // Accepted first, then the same bytes again: duplicate.
        let ok = w.seal("UA", "plenary", "hello");
        assert!(matches!(
            ua.send_env(ok.as_bytes()).await,
            Frame::Accepted { .. }
        ));
        let dup = ua.send_env(ok.as_bytes()).await;
        assert_eq!(code_of(&dup), Some(ErrorCode::Duplicate));

        // Sender mismatch: EE's envelope on UA's session.
        let ee = w.seal("EE", "plenary", "x");
        assert_eq!(
            code_of(&ua.send_env(ee.as_bytes()).await),
            Some(ErrorCode::Unauthenticated)
        );

        // Bad signature.
        let good = w.seal("UA", "plenary", "y");
        let mut env: Envelope = postcard::from_bytes(good.as_bytes()).unwrap();
        env.signature[10] ^= 1;
        let bad = postcard::to_allocvec(&env).unwrap();
        assert_eq!(
            code_of(&ua.send_env(&bad).await),
            Some(ErrorCode::BadSignature)
        );

        // Unknown channel.
        let keys = plenary_keys("UA", "");
        let unknown = seal_raw("UA", "no-such-channel", &as_refs(&keys), now_ms(), &mut rng);
        assert_eq!(
            code_of(&ua.send_env(unknown.as_bytes()).await),
            Some(ErrorCode::NotAMember)
        );

        // Not a member: UA is in back-office, but PL posting to front-office is not.
        let (mut pl, _) = login(relay.addr(), relay.pin, w.id("PL"), "d").await;
        let fo = vec![
            ("EE".to_string(), w.id("EE").public().enc_key),
            ("UA".to_string(), w.id("UA").public().enc_key),
        ];
        let not_member = seal_raw("PL", "front-office", &fo, now_ms(), &mut rng);
        assert_eq!(
            code_of(&pl.send_env(not_member.as_bytes()).await),
            Some(ErrorCode::NotAMember)
        );

        // Observer posting.
        let (mut nato, _) = login(relay.addr(), relay.pin, w.id("NATO"), "d").await;
        let nato_keys: Vec<(String, [u8; 32])> = w
            .roster
            .channel("plenary")
            .unwrap()
            .members
            .iter()
            .map(|m| (m.to_string(), w.id(m.as_str()).public().enc_key))
            .chain([("EU".to_string(), w.id("EU").public().enc_key)])
            .collect();
        let obs = seal_raw("NATO", "plenary", &nato_keys, now_ms(), &mut rng);
        assert_eq!(
            code_of(&nato.send_env(obs.as_bytes()).await),
            Some(ErrorCode::ReadOnly)
        );

        // Recipients missing the beneficiary, or an observer.
        for skip in ["UA", "EU"] {
            let keys = plenary_keys("EE", skip);
            let (mut ee_s, _) = login(relay.addr(), relay.pin, w.id("EE"), "d").await;
            let env = seal_raw("EE", "plenary", &keys, now_ms(), &mut rng);
            assert_eq!(
                code_of(&ee_s.send_env(env.as_bytes()).await),
                Some(ErrorCode::RecipientsMismatch),
                "missing {skip}"
            );
        }

        // Clock skew, both directions.
        for at in [now_ms() - 3_600_000, now_ms() + 3_600_000] {
            let env = seal_raw("UA", "plenary", &keys, at, &mut rng);
            assert_eq!(
                code_of(&ua.send_env(env.as_bytes()).await),
                Some(ErrorCode::ClockSkew)
            );
        }

        // Too large (over max_message_len, under the frame limit).
        let big = seal_to(
            w.id("UA"),
            "plenary",
            &keys
                .iter()
                .map(|(a, b)| (a.as_str(), *b))
                .collect::<Vec<_>>(),
            &Message::note(Tlp::Clear, "big", "x".repeat(70 * 1024)),
            now_ms(),
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            code_of(&ua.send_env(big.as_bytes()).await),
            Some(ErrorCode::TooLarge)
        );

        // The connection is still usable after all of that.
        let fine = w.seal("UA", "plenary", "still here");
        assert!(matches!(
            ua.send_env(fine.as_bytes()).await,
            Frame::Accepted { .. }
        ));

        // Rate limit: the bucket (30) is nearly used up; keep sending.
        let mut limited = false;
        for i in 0..40 {
            let env = w.seal("UA", "front-office", &format!("burst {i}"));
            if code_of(&ua.send_env(env.as_bytes()).await) == Some(ErrorCode::RateLimited) {
                limited = true;
                break;
            }
        }
        assert!(limited, "rate limit must trigger");

        let m = relay.server.metrics();
        for code in [
            ErrorCode::Duplicate,
            ErrorCode::Unauthenticated,
            ErrorCode::BadSignature,
            ErrorCode::NotAMember,
            ErrorCode::ReadOnly,
            ErrorCode::RecipientsMismatch,
            ErrorCode::ClockSkew,
            ErrorCode::TooLarge,
            ErrorCode::RateLimited,
        ] {
            assert!(m.sends_rejected.get(code) >= 1, "{code} counted");
        }
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn huge_length_prefix_and_garbage_close_only_that_connection() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (mut bystander, _) = login(relay.addr(), relay.pin, w.id("EE"), "d").await;

        // A 4 GiB length prefix: refused before reading.
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        ua.send.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
        let f = ua.read().await.expect("error frame");
        assert_eq!(code_of(&f), Some(ErrorCode::TooLarge));
        assert_eq!(ua.closed_code().await, Some(ErrorCode::TooLarge));

        // Garbage after auth.
        let (mut pl, _) = login(relay.addr(), relay.pin, w.id("PL"), "d").await;
        pl.send
            .write_all(&[0, 0, 0, 5, 0xEE, 1, 2, 3, 4])
            .await
            .unwrap();
        assert_eq!(
            code_of(&pl.read().await.unwrap()),
            Some(ErrorCode::Malformed)
        );
        assert_eq!(pl.closed_code().await, Some(ErrorCode::Malformed));

        // A Send whose envelope is garbage: malformed closes too.
        let (mut de, _) = login(relay.addr(), relay.pin, w.id("DE"), "d").await;
        de.write(&Frame::Send {
            envelope: vec![1, 2, 3],
        })
        .await;
        assert_eq!(de.closed_code().await, Some(ErrorCode::Malformed));

        // The bystander is unaffected and still gets its mail.
        let env = w.seal("UA", "front-office", "for EE");
        let (mut ua2, _) = login(relay.addr(), relay.pin, w.id("UA"), "d2").await;
        assert!(matches!(
            ua2.send_env(env.as_bytes()).await,
            Frame::Accepted { .. }
        ));
        let got = receive(&mut bystander, 1, true).await;
        assert_eq!(got[0].1, env.msg_id());
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn store_and_forward_in_order_with_acks_and_redelivery() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let mut sent = Vec::new();
        for i in 0..20 {
            let env = w.seal("UA", "back-office", &format!("m{i}"));
            let Frame::Accepted { msg_id, .. } = ua.send_env(env.as_bytes()).await else {
                panic!("accepted")
            };
            sent.push(msg_id);
        }
        // PL was offline: it gets all 20, in order.
        let (mut pl, pending) = login(relay.addr(), relay.pin, w.id("PL"), "office").await;
        assert_eq!(pending, 20);
        let got = receive(&mut pl, 20, false).await;
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), sent);
        assert!(got.windows(2).all(|p| p[0].0 < p[1].0), "seq increasing");
        // Ack the first 12 only, then reconnect: 8 come again, from #12.
        pl.write(&Frame::Ack {
            up_to_seq: got[11].0,
        })
        .await;
        // Wait until the relay has read the Ack (finishing PL's stream: the
        // relay's reader sees the end only after every frame before it),
        // then push a send through the commit thread, which applies writes
        // in order: once it is accepted, the cursor update is applied too.
        pl.send.finish().unwrap();
        let acks = &relay.server.metrics().acks;
        tokio::time::timeout(WAIT, async {
            while acks.load(Ordering::SeqCst) < 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("relay read the ack");
        let env = w.seal("UA", "front-office", "sync point");
        ua.send_env(env.as_bytes()).await;
        pl.conn.close(0u32.into(), b"bye");
        drop(pl);
        let (mut pl, pending) = login(relay.addr(), relay.pin, w.id("PL"), "office").await;
        assert_eq!(pending, 8);
        let again = receive(&mut pl, 8, true).await;
        assert_eq!(
            again.iter().map(|g| g.1).collect::<Vec<_>>(),
            sent[12..].to_vec()
        );
        relay.server.shutdown().await;
    })
    .await;
}

/// Item 5: one reader per cursor. A second session of the same participant
/// and device replaces the first, which is closed with `replaced`; the two
/// never share the cursor.
#[tokio::test]
async fn a_second_session_of_a_device_replaces_the_first() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (first, _) = login(relay.addr(), relay.pin, w.id("EE"), "office").await;
        let (mut second, _) = login(relay.addr(), relay.pin, w.id("EE"), "office").await;
        assert_eq!(first.closed_code().await, Some(ErrorCode::Replaced));
        assert_eq!(relay.server.sessions_of("EE"), 1);
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let env = w.seal("UA", "front-office", "to the one reader");
        ua.send_env(env.as_bytes()).await;
        let got = receive(&mut second, 1, true).await;
        assert_eq!(got[0].1, env.msg_id());
        assert!(relay
            .server
            .render_metrics()
            .contains("tallinn_sessions_replaced_total 1"));
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn two_devices_each_get_everything() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (mut front, _) = login(relay.addr(), relay.pin, w.id("GB"), "front-office").await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let env = w.seal("UA", "plenary", &format!("p{i}"));
            ua.send_env(env.as_bytes()).await;
            ids.push(env.msg_id());
        }
        let got: Vec<_> = receive(&mut front, 5, true)
            .await
            .into_iter()
            .map(|g| g.1)
            .collect();
        assert_eq!(got, ids);
        // back-office was offline throughout, and still gets all five.
        let (mut back, pending) = login(relay.addr(), relay.pin, w.id("GB"), "back-office").await;
        assert_eq!(pending, 5);
        let got: Vec<_> = receive(&mut back, 5, true)
            .await
            .into_iter()
            .map(|g| g.1)
            .collect();
        assert_eq!(got, ids);
        assert_eq!(relay.server.sessions_of("GB"), 2);
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn stalled_reader_is_bounded_and_catches_up_from_the_store() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits {
            max_inflight_deliveries: 16,
            delivery_queue: 8,
            send_burst: 10_000,
            ..test_limits()
        };
        let relay = TestRelay::start(&w, limits).await;
        // EE logs in and then reads nothing for a while.
        let (mut ee, _) = login(relay.addr(), relay.pin, w.id("EE"), "d").await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let n = 300;
        let mut ids = Vec::new();
        for i in 0..n {
            let env = w.seal("UA", "front-office", &format!("m{i}"));
            ua.write(&Frame::Send {
                envelope: env.as_bytes().to_vec(),
            })
            .await;
            ids.push(env.msg_id());
        }
        let mut accepted = 0;
        while accepted < n {
            if let Frame::Accepted { .. } = ua
                .expect("Accepted", |f| matches!(f, Frame::Accepted { .. }))
                .await
            {
                accepted += 1;
            }
        }
        let m = relay.server.metrics();
        // Without acks the relay sent at most the window.
        assert!(
            m.deliveries.load(Ordering::Relaxed) <= 16,
            "window respected"
        );
        // The live queue overflowed instead of growing: at most the window
        // (16) was sent, and at most two queue-fulls (8 each: one drained
        // when the task first read the store, one waiting now) were queued.
        assert!(m.delivery_queue_overflows.load(Ordering::Relaxed) >= (n as u64) - 16 - 2 * 8);
        // Now read and ack: everything arrives, in order, once.
        let got: Vec<_> = receive(&mut ee, n, true)
            .await
            .into_iter()
            .map(|g| g.1)
            .collect();
        assert_eq!(got, ids);
        assert!(m.deliveries_from_store.load(Ordering::Relaxed) >= (n as u64) - 16 - 2 * 8);
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn per_participant_connection_limit() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits {
            max_connections_per_participant: 2,
            ..test_limits()
        };
        let relay = TestRelay::start(&w, limits).await;
        let _a = login(relay.addr(), relay.pin, w.id("UA"), "a").await;
        let _b = login(relay.addr(), relay.pin, w.id("UA"), "b").await;
        let mut c = open(relay.addr(), relay.pin).await;
        assert_eq!(
            code_of(&c.auth_as(w.id("UA"), "c").await),
            Some(ErrorCode::RateLimited)
        );
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn total_connection_limit_refuses_at_accept() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits {
            max_connections: 1,
            ..test_limits()
        };
        let relay = TestRelay::start(&w, limits).await;
        let _a = login(relay.addr(), relay.pin, w.id("UA"), "a").await;
        let ep = client_endpoint(relay.pin, tallinn_common::defaults::ALPN);
        let res = ep.connect(relay.addr(), "localhost").unwrap().await;
        assert!(res.is_err(), "second connection refused");
        assert_eq!(
            relay
                .server
                .metrics()
                .connections_refused
                .load(Ordering::Relaxed),
            1
        );
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_closes_sessions_with_shutting_down() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let env = w.seal("UA", "plenary", "last words");
        assert!(matches!(
            ua.send_env(env.as_bytes()).await,
            Frame::Accepted { .. }
        ));
        let started = std::time::Instant::now();
        relay.server.shutdown().await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "prompt shutdown"
        );
        let f = ua.read().await;
        assert_eq!(
            f.as_ref().and_then(code_of),
            Some(ErrorCode::ShuttingDown),
            "{f:?}"
        );
        assert_eq!(ua.closed_code().await, Some(ErrorCode::ShuttingDown));
    })
    .await;
}

#[tokio::test]
async fn metrics_and_healthz_are_served() {
    timed(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        ua.send_env(w.seal("UA", "plenary", "m").as_bytes()).await;
        let addr = relay.server.metrics_addr().unwrap();
        for (path, want) in [
            ("/metrics", "tallinn_sends_accepted_total 1"),
            ("/healthz", "ok"),
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).await.unwrap();
            assert!(body.starts_with("HTTP/1.1 200"), "{body}");
            assert!(body.contains(want), "{path}: {body}");
        }
        let text = relay.server.render_metrics();
        assert!(
            text.contains("tallinn_inbox_depth{participant=\"NATO\"} 1"),
            "{text}"
        );
        assert!(text.contains("tallinn_flush_seconds_count"));
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn roster_reload_disconnects_removed_participant() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (dk, _) = login(relay.addr(), relay.pin, w.id("DK"), "d").await;
        let (mut ee, _) = login(relay.addr(), relay.pin, w.id("EE"), "d").await;
        // An invalid roster is refused and the old one kept.
        let path = relay.dir.path().join("roster.toml");
        std::fs::write(&path, "this is not a roster").unwrap();
        assert!(relay.server.reload_roster().is_err());
        // Remove DK (and its keys) from the roster file.
        // Keep everyone else's keys: the original text minus DK's entry.
        let text: String = w
            .roster_text
            .split("\n\n")
            .filter(|block| !block.contains("id = \"DK\""))
            .collect::<Vec<_>>()
            .join("\n\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(relay.server.reload_roster().unwrap(), 1);
        assert_eq!(dk.closed_code().await, Some(ErrorCode::UnknownParticipant));
        // EE unaffected.
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        ua.send_env(w.seal("UA", "front-office", "x").as_bytes())
            .await;
        receive(&mut ee, 1, true).await;
        // DK cannot log in any more.
        let mut again = open(relay.addr(), relay.pin).await;
        assert_eq!(
            code_of(&again.auth_as(w.id("DK"), "d").await),
            Some(ErrorCode::UnknownParticipant)
        );
        relay.server.shutdown().await;
    })
    .await;
}

/// The child-process tests: SIGKILL durability, SIGHUP reload, SIGTERM exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_survive_sigkill() {
    timed(async {
        let w = World::tallinn();
        let dir = tempfile::tempdir().unwrap();
        write_child_config(dir.path(), &w);
        let relay = ChildRelay::start(dir.path());
        let (mut ua, _) = login(relay.addr, relay.pin, w.id("UA"), "d").await;
        let mut ids = Vec::new();
        for i in 0..50 {
            let env = w.seal("UA", "plenary", &format!("durable {i}"));
            ua.write(&Frame::Send {
                envelope: env.as_bytes().to_vec(),
            })
            .await;
            ids.push(env.msg_id());
        }
        let mut accepted = 0;
        while accepted < 50 {
            ua.expect("Accepted", |f| matches!(f, Frame::Accepted { .. }))
                .await;
            accepted += 1;
        }
        relay.kill9();
        let relay = ChildRelay::start(dir.path());
        for who in ["EE", "NATO", "PL"] {
            let (mut r, pending) = login(relay.addr, relay.pin, w.id(who), "d").await;
            assert_eq!(pending, 50, "{who}");
            let got: Vec<_> = receive(&mut r, 50, true)
                .await
                .into_iter()
                .map(|g| g.1)
                .collect();
            assert_eq!(got, ids, "{who}");
        }
        // SIGTERM: a clean exit with status 0.
        relay.signal("TERM");
        assert!(relay.wait_exit());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_roster() {
    timed(async {
        let w = World::tallinn();
        let dir = tempfile::tempdir().unwrap();
        write_child_config(dir.path(), &w);
        let relay = ChildRelay::start(dir.path());
        let (dk, _) = login(relay.addr, relay.pin, w.id("DK"), "d").await;
        let text: String = w
            .roster_text
            .split("\n\n")
            .filter(|block| !block.contains("id = \"DK\""))
            .collect::<Vec<_>>()
            .join("\n\n");
        std::fs::write(dir.path().join("roster.toml"), text).unwrap();
        relay.signal("HUP");
        assert_eq!(dk.closed_code().await, Some(ErrorCode::UnknownParticipant));
        relay.signal("TERM");
        assert!(relay.wait_exit());
    })
    .await;
}

fn relay_cli(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tallinn-relay"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("tallinn-relay runs")
}

#[test]
fn cli_gen_cert_check_config_and_enrol() {
    let w = World::tallinn();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // gen-cert prints the pin; refuses to overwrite.
    let out = relay_cli(
        &[
            "gen-cert",
            "--cert",
            "relay-cert.pem",
            "--key",
            "relay-key.pem",
        ],
        d,
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("relay_pin = \""), "{stdout}");
    let again = relay_cli(&["gen-cert"], d);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).starts_with("error: "));
    let pin = relay_cli(&["pin", "--cert", "relay-cert.pem"], d);
    assert!(String::from_utf8_lossy(&pin.stdout)
        .contains(stdout.lines().find(|l| l.starts_with("relay_pin")).unwrap()));

    // The shipped example config validates against a roster.
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../config/relay.toml"),
        d.join("relay.toml"),
    )
    .unwrap();
    std::fs::write(d.join("roster.toml"), &w.roster_text).unwrap();
    let out = relay_cli(&["check-config", "--config", "relay.toml"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&w.roster.fingerprint_hex()), "{text}");
    assert!(text.contains("NATO") && text.contains("observer"));

    // Enrol a new participant into plenary; the roster stays valid.
    let lt = tallinn_common::identity::Identity::generate(
        tallinn_common::identity::ParticipantId::new("LT").unwrap(),
    );
    std::fs::write(d.join("lt.toml"), lt.roster_entry("Lithuania", "member")).unwrap();
    let out = relay_cli(
        &[
            "enrol",
            "--roster",
            "roster.toml",
            "--entry",
            "lt.toml",
            "--channel",
            "back-office",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&lt.fingerprint().to_string()));
    let r = tallinn_common::roster::Roster::parse(
        &std::fs::read_to_string(d.join("roster.toml")).unwrap(),
    )
    .unwrap();
    assert!(r.may_post("LT", "back-office"));
    assert!(r.may_post("LT", "plenary"), "\"*\" includes the new member");

    // An invalid config is refused with a message naming the field.
    std::fs::write(d.join("bad.toml"), "[limits]\nsend_burst = 0\n").unwrap();
    let out = relay_cli(&["check-config", "--config", "bad.toml"], d);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("send_burst"));
}

#[tokio::test]
async fn device_cap_refuses_new_labels_beyond_the_limit() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits {
            max_devices_per_participant: 2,
            ..test_limits()
        };
        let relay = TestRelay::start(&w, limits).await;
        drop(login(relay.addr(), relay.pin, w.id("UA"), "a").await);
        drop(login(relay.addr(), relay.pin, w.id("UA"), "b").await);
        // A known device may always come back; a third label may not.
        let (_again, _) = login(relay.addr(), relay.pin, w.id("UA"), "a").await;
        let mut third = open(relay.addr(), relay.pin).await;
        assert_eq!(
            code_of(&third.auth_as(w.id("UA"), "c").await),
            Some(ErrorCode::RateLimited)
        );
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn delivery_window_is_also_bounded_in_bytes() {
    timed(async {
        let w = World::tallinn();
        let limits = Limits {
            max_inflight_delivery_bytes: 20_000,
            send_burst: 10_000,
            ..test_limits()
        };
        let relay = TestRelay::start(&w, limits).await;
        let (mut ee, _) = login(relay.addr(), relay.pin, w.id("EE"), "d").await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        // 30 messages of about 4 KiB: 20 KB allows about five in flight.
        let body = "y".repeat(4096);
        let mut ids = Vec::new();
        for i in 0..30 {
            let env = tallinn_common::envelope::seal(
                w.id("UA"),
                &w.roster,
                "front-office",
                &Message::note(Tlp::Green, format!("big {i}"), body.clone()),
                now_ms(),
            )
            .unwrap();
            assert!(matches!(
                ua.send_env(env.as_bytes()).await,
                Frame::Accepted { .. }
            ));
            ids.push(env.msg_id());
        }
        let sent = relay.server.metrics().deliveries.load(Ordering::Relaxed);
        assert!(
            sent <= 6,
            "byte budget bounds unacknowledged deliveries: {sent}"
        );
        let got: Vec<_> = receive(&mut ee, 30, true)
            .await
            .into_iter()
            .map(|g| g.1)
            .collect();
        assert_eq!(got, ids);
        relay.server.shutdown().await;
    })
    .await;
}

/// Sends written in one go reach the relay together and are checked with one
/// batch signature verification: a forged one among them is still refused
/// on its own, with its msg_id, and the others are accepted.
#[tokio::test]
async fn sends_arriving_together_are_judged_one_by_one() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let mut bytes = Vec::new();
        let mut ids = Vec::new();
        for i in 0..8 {
            let sealed = w.seal("UA", "plenary", &format!("batch {i}"));
            ids.push(sealed.msg_id());
            let mut env = sealed.into_bytes();
            if i == 5 {
                let mut e: Envelope = postcard::from_bytes(&env).unwrap();
                e.signature[3] ^= 1;
                env = postcard::to_allocvec(&e).unwrap();
            }
            bytes.extend_from_slice(&wire::encode_frame(&Frame::Send { envelope: env }));
        }
        ua.send.write_all(&bytes).await.unwrap();
        let mut answers = std::collections::HashMap::new();
        while answers.len() < ids.len() {
            match ua.read().await.expect("answers") {
                Frame::Accepted { msg_id, .. } => {
                    answers.insert(msg_id, None);
                }
                Frame::Rejected { msg_id, code, .. } => {
                    answers.insert(msg_id, Some(code));
                }
                _ => {}
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let want = (i == 5).then_some(ErrorCode::BadSignature);
            assert_eq!(answers.get(id), Some(&want), "send {i}");
        }
    })
    .await;
}
