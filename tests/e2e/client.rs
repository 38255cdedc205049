//! The client library against a real relay: every kind, indexes, threads,
//! export re-verified independently, observers, quarantine, outages.

use base64::Engine as _;
use tallinn_client::archive::{Direction, Filter};
use tallinn_client::{Client, ClientError};
use tallinn_common::envelope::{seal_to, Envelope, UntrustedEnvelope};
use tallinn_common::message::{Attachment, Kind, Loe, Message, Priority, State, Tlp};
use tallinn_common::roster::Roster;
use tallinn_common::wire::ErrorCode;

use crate::util::*;

fn request(subject: &str) -> Message {
    Message {
        kind: Kind::Request {
            loe: Loe::Immediate,
            category: "incident-response".into(),
            priority: Priority::High,
        },
        ..Message::note(Tlp::Amber, subject, "Two DFIR teams for the energy sector")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_path_every_kind_indexes_thread_and_independent_export_check() {
    timed(async {
        let env = Env::new().await;
        let ua = env.client("UA", "default").await;
        let pl = env.client("PL", "default").await;
        let ee = env.client("EE", "default").await;
        let mut ee_events = ee.events().unwrap();

        let (req, _) = ua
            .send("loe-immediate", &request("DFIR support"))
            .await
            .unwrap();
        let offer = Message {
            kind: Kind::Offer { request: req },
            reply_to: Some(req),
            attachments: vec![Attachment {
                name: "team.pdf".into(),
                media_type: "application/pdf".into(),
                data: vec![7; 4096],
            }],
            ..Message::note(Tlp::Amber, "PL offers a DFIR team", "Available from Monday")
        };
        let (off, _) = pl.send("loe-immediate", &offer).await.unwrap();
        let status = Message {
            kind: Kind::Status {
                about: off,
                state: State::InProgress,
            },
            ..Message::note(
                Tlp::AmberStrict,
                "Accepted PL offer",
                "Coordinating logistics",
            )
        };
        let (st, _) = ua.send("loe-immediate", &status).await.unwrap();
        let (note, _) = ua
            .send(
                "front-office",
                &Message::note(Tlp::Green, "Weekly sync", "Thursday 10:00"),
            )
            .await
            .unwrap();

        let got = expect_messages(&mut ee_events, 4).await;
        let ids: Vec<_> = got.iter().map(|r| r.msg_id).collect();
        assert_eq!(ids, vec![req, off, st, note]);
        let a = ee.archive();
        assert_eq!(a.len(), 4);

        // Each index.
        let by_channel = a
            .search(
                &Filter {
                    channel: Some("loe-immediate".into()),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(
            by_channel.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
            vec![st, off, req]
        );
        let by_sender = a
            .search(
                &Filter {
                    from: Some("PL".into()),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(
            by_sender.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
            vec![off]
        );
        let by_kind = a
            .search(
                &Filter {
                    kind: Some("status".into()),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(
            by_kind.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
            vec![st]
        );
        let by_tlp = a
            .search(
                &Filter {
                    tlp: Some(Tlp::AmberStrict),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(
            by_tlp.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
            vec![st]
        );
        let by_text = a
            .search(
                &Filter {
                    text: Some("thursday".into()),
                    ..Default::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(
            by_text.iter().map(|r| r.msg_id).collect::<Vec<_>>(),
            vec![note]
        );
        assert_eq!(
            a.get(&off).unwrap().unwrap().message.attachments[0].data,
            vec![7; 4096]
        );

        // Thread: request, offer (refers to request), status (about offer).
        let thread: Vec<_> = a.thread(&st).unwrap().iter().map(|r| r.msg_id).collect();
        assert_eq!(thread, vec![req, off, st]);

        // The sender keeps verifiable copies of what it sent.
        let ua_sent = ua.archive().get(&req).unwrap().unwrap();
        assert_eq!(ua_sent.direction, Direction::Sent);
        assert!(ua
            .archive()
            .verify(&env.dep.roster, &env.dep.id("UA"), true, |_| {})
            .unwrap()
            .first_error
            .is_none());
        assert!(a
            .verify(&env.dep.roster, &env.dep.id("EE"), true, |_| {})
            .unwrap()
            .first_error
            .is_none());

        // Export, then verify it independently of the archive code.
        let path = env.dir.path().join("ee-export.jsonl");
        let roster_text = std::fs::read_to_string(env.dep.dir.join("roster.toml")).unwrap();
        let n = tallinn_client::export::export(
            a,
            &env.dep.roster,
            &roster_text,
            "EE",
            "default",
            1,
            std::fs::File::create(&path).unwrap(),
            |_| {},
        )
        .unwrap();
        assert_eq!(n, 4);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(header["type"], "tallinn-archive-export");
        let roster = Roster::parse(header["roster"].as_str().unwrap()).unwrap();
        assert_eq!(header["roster_fingerprint"], roster.fingerprint_hex());
        let mut prev = "0".repeat(64);
        let mut count = 0;
        for line in lines {
            let rec: serde_json::Value = serde_json::from_str(line).unwrap();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rec["envelope_b64"].as_str().unwrap())
                .unwrap();
            let env_struct: Envelope = postcard::from_bytes(&raw).unwrap();
            let sender = rec["sender"].as_str().unwrap();
            let key = roster.participant(sender).unwrap().public.sign_key;
            // Signature over "tallinn/1 envelope" || body, checked with
            // ed25519 directly and through common.
            let mut signed = b"tallinn/1 envelope".to_vec();
            signed.extend_from_slice(&env_struct.body);
            key.verify_strict(
                &signed,
                &ed25519_dalek::Signature::from_bytes(&env_struct.signature),
            )
            .expect("export signature verifies");
            let untrusted = UntrustedEnvelope::decode(&raw).unwrap();
            untrusted.verify_signature(&key).unwrap();
            let h = untrusted.claimed_header();
            assert_eq!(h.msg_id.to_hex(), rec["msg_id"].as_str().unwrap());
            assert_eq!(h.sender, sender);
            assert_eq!(h.channel, rec["channel"].as_str().unwrap());
            assert_eq!(rec["prev_hash"].as_str().unwrap(), prev);
            prev = rec["record_hash"].as_str().unwrap().to_string();
            count += 1;
        }
        assert_eq!(count, 4);
        assert_eq!(header["head_hash"].as_str().unwrap(), prev);

        for c in [&ua, &pl, &ee] {
            c.close().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_receives_but_cannot_send() {
    timed(async {
        let env = Env::new().await;
        let nato = env.client("NATO", "default").await;
        let mut events = nato.events().unwrap();
        let ua = env.client("UA", "default").await;
        let (id, _) = ua
            .send("plenary", &Message::note(Tlp::Green, "For all", "b"))
            .await
            .unwrap();
        let got = expect_messages(&mut events, 1).await;
        assert_eq!(got[0].msg_id, id);
        // The library refuses before anything is stored or sent.
        let err = nato
            .send("plenary", &Message::note(Tlp::Green, "hi", ""))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::NotAllowed(_)), "{err}");
        assert!(err.to_string().contains("observer"), "{err}");
        assert!(nato.outbox().is_empty());
        nato.close().await;

        // Forced through the library with a doctored roster (NATO as a
        // member): the relay refuses with read_only.
        let doctored_text = std::fs::read_to_string(env.dep.dir.join("roster.toml"))
            .unwrap()
            .replace("role = \"observer\"", "role = \"member\"")
            .replace("observers = [\"NATO\", \"EU\"]", "observers = []");
        let doctored = Roster::parse(&doctored_text).unwrap();
        let mut s = env.settings("NATO", "forced");
        s.roster = std::sync::Arc::new(doctored);
        let forced = Client::connect(s).await.unwrap();
        let err = forced
            .send("plenary", &Message::note(Tlp::Green, "forced", ""))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Rejected {
                    code: ErrorCode::ReadOnly,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            forced.outbox().pending_len(),
            0,
            "a permanent refusal is never sent again"
        );
        let listed = forced.outbox().list().unwrap();
        assert_eq!(
            listed[0].refused.as_ref().map(|r| r.code),
            Some(ErrorCode::ReadOnly),
            "and stays listed, marked refused"
        );
        forced.close().await;
        ua.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compromised_relay_deliveries_are_quarantined_and_do_not_block() {
    timed(async {
        let mut env = Env::new().await;
        env.stop_relay().await;
        // Play a compromised relay: write hostile entries straight into its
        // store, bypassing its checks.
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let roster = &env.dep.roster;
            // 1. UA's message with a broken signature.
            let good = tallinn_common::envelope::seal(
                &env.dep.id("UA"),
                roster,
                "front-office",
                &Message::note(Tlp::Amber, "tampered", ""),
                now,
            )
            .unwrap();
            let mut e: Envelope = postcard::from_bytes(good.as_bytes()).unwrap();
            e.signature[0] ^= 1;
            let bad_sig = postcard::to_allocvec(&e).unwrap();
            // 2. A post from the observer NATO.
            let keys: Vec<(String, [u8; 32])> = roster
                .channel("plenary")
                .unwrap()
                .members
                .iter()
                .map(|m| {
                    (
                        m.to_string(),
                        roster.participant(m.as_str()).unwrap().public.enc_key,
                    )
                })
                .chain([(
                    "EU".to_string(),
                    roster.participant("EU").unwrap().public.enc_key,
                )])
                .collect();
            let refs: Vec<(&str, [u8; 32])> = keys.iter().map(|(a, b)| (a.as_str(), *b)).collect();
            let from_observer = seal_to(
                &env.dep.id("NATO"),
                "plenary",
                &refs,
                &Message::note(Tlp::Clear, "observer post", ""),
                now,
                &mut rand::rng(),
            )
            .unwrap();
            // 3. Garbage.
            inject_for_ee(
                &env,
                vec![bad_sig, from_observer.as_bytes().to_vec(), vec![1, 2, 3]],
                now,
            );
        }
        env.restart_relay().await;
        let ua = env.client("UA", "default").await;
        let (good_id, _) = ua
            .send(
                "front-office",
                &Message::note(Tlp::Green, "genuine", "after the poison"),
            )
            .await
            .unwrap();
        let ee = env.client("EE", "default").await;
        let mut events = ee.events().unwrap();
        let got = expect_messages(&mut events, 1).await;
        assert_eq!(got[0].msg_id, good_id, "later messages are not blocked");
        let q = ee.archive().quarantined().unwrap();
        assert_eq!(q.len(), 3, "{q:?}");
        assert!(q[0].reason.contains("bad signature"), "{}", q[0].reason);
        assert!(
            q[1].reason.contains("relay fault") && q[1].reason.contains("NATO"),
            "{}",
            q[1].reason
        );
        assert!(q[2].reason.contains("malformed"), "{}", q[2].reason);
        assert_eq!(
            ee.archive().len(),
            1,
            "only the genuine message is archived"
        );
        ee.close().await;
        ua.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_sent_while_relay_is_down_is_delivered_once_after_it_returns() {
    timed(async {
        let mut env = Env::new().await;
        env.stop_relay().await;
        let ua = Client::start(env.settings("UA", "default")).unwrap();
        let id = ua
            .queue(
                "back-office",
                &Message::note(Tlp::Amber, "while down", "queued"),
            )
            .unwrap();
        assert_eq!(ua.outbox().len(), 1);
        env.restart_relay().await;
        // The manager reconnects by itself (backoff capped at 2 s here).
        let mut st = ua.state();
        tokio::time::timeout(WAIT, async {
            loop {
                if ua.outbox().is_empty() && st.borrow().connected {
                    break;
                }
                st.changed().await.unwrap();
            }
        })
        .await
        .expect("outbox drained after the relay came back");
        let pl = env.client("PL", "default").await;
        let mut events = pl.events().unwrap();
        let got = expect_messages(&mut events, 1).await;
        assert_eq!(got[0].msg_id, id);
        // Once on the wire too (not only once in the deduplicating archive).
        let sync = pl.sync(WAIT, |_| {}).await.unwrap();
        assert_eq!(sync.delivered, 1, "the relay delivered it exactly once");
        assert_eq!(sync.archived, 1);
        assert_eq!(pl.archive().len(), 1);
        // Resending the same envelope (as after a lost Accepted) is harmless:
        // answered `duplicate`, treated as accepted, never delivered again.
        let env_bytes = ua.archive().get(&id).unwrap().unwrap().envelope.clone();
        let relay = env.relay.as_ref().unwrap();
        let dup_before = relay.metrics().sends_rejected.get(ErrorCode::Duplicate);
        // Put the entry in the outbox before the client connects, so the
        // session start resends it (as after a crash that lost Accepted).
        let ua2 = Client::open(env.settings("UA", "resend")).unwrap();
        ua2.outbox()
            .put(&tallinn_client::outbox::OutboxEntry {
                msg_id: id,
                channel: "back-office".into(),
                subject: "while down".into(),
                created_at_ms: 0,
                envelope: env_bytes,
                content_key: [0; 32],
                attempts: 0,
            })
            .unwrap();
        drop(ua2);
        let ua2 = env.client("UA", "resend").await;
        ua2.sync(WAIT, |_| {}).await.unwrap();
        assert!(ua2.outbox().is_empty(), "duplicate counts as accepted");
        assert_eq!(
            relay.metrics().sends_rejected.get(ErrorCode::Duplicate),
            dup_before + 1
        );
        ua2.close().await;
        let again = pl.sync(WAIT, |_| {}).await.unwrap();
        assert_eq!(again.delivered, 1, "still delivered once");
        assert_eq!(pl.archive().len(), 1);
        pl.close().await;
        ua.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_and_reconnect_mid_delivery() {
    timed(async {
        let env = Env::new().await;
        let ua = env.client("UA", "default").await;
        let n = 300;
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(
                ua.queue("plenary", &Message::note(Tlp::Green, format!("m{i}"), ""))
                    .unwrap(),
            );
        }
        ua.sync(WAIT, |_| {}).await.unwrap();
        // GB front office receives part, then disconnects mid-delivery (an
        // abrupt cut, SIGKILL of the client, is in cli::sigkill_in_the_middle_of_sync…).
        let front = env.client("GB", "front-office").await;
        let mut ev = front.events().unwrap();
        expect_messages(&mut ev, 50).await;
        front.close().await;
        drop(front);
        // Reconnect: everything arrives, nothing twice.
        let front = env.client("GB", "front-office").await;
        front.sync(WAIT, |_| {}).await.unwrap();
        assert_eq!(front.archive().len(), n as u64);
        let mut got: Vec<_> = front
            .archive()
            .search(&Filter::default(), n + 10)
            .unwrap()
            .into_iter()
            .map(|r| r.msg_id)
            .collect();
        got.reverse();
        assert_eq!(got, ids);
        // The back office (never connected before) gets all of them too.
        let back = env.client("GB", "back-office").await;
        back.sync(WAIT, |_| {}).await.unwrap();
        assert_eq!(back.archive().len(), n as u64);
        for c in [&front, &back, &ua] {
            c.close().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_outbox_message_is_resealed_after_clock_skew() {
    timed(async {
        let env = Env::new().await;
        // A message that sat in the outbox for an hour (relay skew limit 5 min).
        let ua = Client::open(env.settings("UA", "default")).unwrap();
        let hour_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            - 3_600_000;
        let msg = Message::note(Tlp::Amber, "written an hour ago", "offline draft");
        let sealed = tallinn_common::envelope::seal(
            &env.dep.id("UA"),
            &env.dep.roster,
            "front-office",
            &msg,
            hour_ago,
        )
        .unwrap();
        ua.outbox()
            .put(&tallinn_client::outbox::OutboxEntry {
                msg_id: sealed.msg_id(),
                channel: "front-office".into(),
                subject: msg.subject.clone(),
                created_at_ms: hour_ago,
                envelope: sealed.as_bytes().to_vec(),
                content_key: *sealed.content_key(),
                attempts: 0,
            })
            .unwrap();
        drop(ua);
        let ua = env.client("UA", "default").await;
        ua.sync(WAIT, |_| {}).await.unwrap();
        assert!(ua.outbox().is_empty());
        let ee = env.client("EE", "default").await;
        ee.sync(WAIT, |_| {}).await.unwrap();
        let got = ee.archive().search(&Filter::default(), 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message, msg, "same message");
        assert_ne!(
            got[0].msg_id,
            sealed.msg_id(),
            "sealed again under a new id"
        );
        assert!(
            env.relay
                .as_ref()
                .unwrap()
                .metrics()
                .sends_rejected
                .get(ErrorCode::ClockSkew)
                >= 1
        );
        ee.close().await;
        ua.close().await;
    })
    .await;
}

/// Re-signs an envelope of `who` (secret seed `seed`) with a signature whose
/// R carries the order-2 torsion point (see `common::envelope` tests):
/// strict verification refuses it, a batch check accepts about half.
fn torsion_signed(seed: &[u8; 32], bytes: &[u8], nonce: u8) -> Vec<u8> {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::Scalar;
    use sha2::{Digest, Sha512};
    let key = ed25519_dalek::SigningKey::from_bytes(seed);
    let mut env: Envelope = postcard::from_bytes(bytes).unwrap();
    let r = Scalar::from_bytes_mod_order([nonce; 32]);
    let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[4]).compress();
    let mut m = tallinn_common::defaults::ENVELOPE_SIGNATURE_CONTEXT.to_vec();
    m.extend_from_slice(&env.body);
    let h: [u8; 64] = Sha512::new()
        .chain_update(big_r.as_bytes())
        .chain_update(key.verifying_key().to_bytes())
        .chain_update(&m)
        .finalize()
        .into();
    let s = r + Scalar::from_bytes_mod_order_wide(&h) * key.to_scalar();
    env.signature[..32].copy_from_slice(big_r.as_bytes());
    env.signature[32..].copy_from_slice(s.as_bytes());
    postcard::to_allocvec(&env).unwrap()
}

/// Issue 10 item 7, end to end: a relay that batch-verified (or was
/// compromised) forwards a message whose signature only a batch check
/// accepts, right behind a genuine one. The client archives the genuine one
/// and quarantines the other. (Whether both land in one client batch
/// depends on timing; `client::tests::a_delivery_batch_is_verified_strictly`
/// pins that case deterministically.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_only_a_batch_check_accepts_is_quarantined() {
    timed(async {
        let mut env = Env::new().await;
        env.stop_relay().await;
        let ua = env.dep.id("UA");
        let toml = ua.to_secret_toml();
        let b64 = toml
            .lines()
            .find_map(|l| l.strip_prefix("sign_secret = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
            .try_into()
            .unwrap();
        let roster = &env.dep.roster;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let note = |s: &str| Message::note(Tlp::Green, s, "");
        let good =
            tallinn_common::envelope::seal(&ua, roster, "front-office", &note("genuine"), now)
                .unwrap();
        let other =
            tallinn_common::envelope::seal(&ua, roster, "front-office", &note("torsion"), now)
                .unwrap();
        let decode = |b: &[u8]| UntrustedEnvelope::decode(b).unwrap();
        let evil = (1..=64u8)
            .map(|n| torsion_signed(&seed, other.as_bytes(), n))
            .find(|evil| {
                UntrustedEnvelope::verify_many(vec![decode(good.as_bytes()), decode(evil)], roster)
                    .iter()
                    .all(Result::is_ok)
            })
            .expect("a nonce the batch check accepts");
        inject_for_ee(&env, vec![good.as_bytes().to_vec(), evil], now);
        env.restart_relay().await;
        let ee = env.client("EE", "default").await;
        let mut state = ee.state();
        tokio::time::timeout(WAIT, async {
            while state.borrow_and_update().delivered < 2 {
                state.changed().await.unwrap();
            }
        })
        .await
        .expect("both delivered");
        let q = ee.archive().quarantined().unwrap();
        assert_eq!(q.len(), 1, "{q:?}");
        assert!(q[0].reason.contains("bad signature"), "{}", q[0].reason);
        assert_eq!(ee.archive().len(), 1);
        assert!(ee.archive().get(&good.msg_id()).unwrap().is_some());
        assert!(ee.archive().get(&other.msg_id()).unwrap().is_none());
        ee.close().await;
    })
    .await;
}

/// Plays a compromised relay: writes envelopes for EE (as if from UA)
/// straight into the stopped relay's store, bypassing every check.
fn inject_for_ee(env: &Env, envelopes: Vec<Vec<u8>>, now: u64) {
    use tallinn_relay::store::{LogEntry, SledStore, Store};
    let store = SledStore::open(&env.dep.dir.join("relay-data")).unwrap();
    for (i, bytes) in envelopes.into_iter().enumerate() {
        store
            .append(
                tallinn_common::message::MsgId([i as u8 + 1; 16]),
                &LogEntry {
                    received_at_ms: now,
                    sender: "UA".into(),
                    recipients: vec!["EE".into()],
                    envelope: bytes,
                },
            )
            .unwrap();
    }
    store.flush().unwrap();
}
