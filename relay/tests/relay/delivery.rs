//! Store and forward: order, acks and redelivery, devices and sessions,
//! bounded delivery windows, connection limits.

use super::*;

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
