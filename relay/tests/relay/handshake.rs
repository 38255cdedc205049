//! The handshake and authentication: ALPN, key exchange groups, pins,
//! the pre-authentication budget, silent and replaying clients.

use super::*;

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
