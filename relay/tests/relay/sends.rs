//! The send path: every rejection code, malformed framing, sends that
//! arrive together, the device cap.

use super::*;

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
