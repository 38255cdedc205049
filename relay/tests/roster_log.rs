//! The relay running the version-2 roster log: devices authenticate with
//! their own keys, version-2 envelopes reach exactly the devices they name
//! (the sender's sibling included), entries are fetched, pushed and
//! submitted (appended only if valid), a revoked device is cut off at once,
//! and envelopes sealed against an old epoch get `stale_roster`.

mod util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tallinn_common::envelope::{seal_v2, UntrustedEnvelope};
use tallinn_common::identity::{Identity, ParticipantId};
use tallinn_common::message::{Message, Tlp};
use tallinn_common::roster::{
    approval_message, Approval, ChannelRecord, DeviceRecord, EntryBody, EntryKind,
    ParticipantRecord, RosterLog, SignedEntry, StateRecord,
};
use tallinn_common::wire::{EntryBytes, ErrorCode, Frame};
use tallinn_relay::store::{SledStore, Store};
use tallinn_relay::Limits;
use util::*;

const DEVICES: [&str; 2] = ["back", "front"];

fn keys(participant: &str, label: &str) -> Identity {
    let seed: [u8; 32] = Sha256::digest(format!("sign {label}")).into();
    let enc: [u8; 32] = Sha256::digest(format!("enc {label}")).into();
    Identity::from_secrets(ParticipantId::new(participant).unwrap(), &seed, &enc)
}

/// A version-2 deployment: UA (beneficiary), EE (chair), GB, PL members
/// and the NATO observer, two devices each; channel `plenary` with
/// everyone; quorum 3.
struct V2 {
    identities: BTreeMap<String, Identity>,
    devices: BTreeMap<(String, String), Identity>,
    log: RosterLog,
}

impl V2 {
    fn new() -> Self {
        let people = [("EE", 0u8), ("GB", 0), ("NATO", 1), ("PL", 0), ("UA", 0)];
        let mut identities = BTreeMap::new();
        let mut devices = BTreeMap::new();
        let mut participants = Vec::new();
        for (id, role) in people {
            let identity = keys(id, &format!("{id} identity"));
            let mut devs = Vec::new();
            for d in DEVICES {
                let k = keys(id, &format!("{id} {d}"));
                devs.push(DeviceRecord {
                    device: d.into(),
                    suite: 1,
                    sign_key: k.public().sign_key.to_bytes(),
                    enc_key: k.public().enc_key,
                });
                devices.insert((id.to_string(), d.to_string()), k);
            }
            participants.push(ParticipantRecord {
                id: id.into(),
                name: format!("{id} POC"),
                role,
                identity_key: identity.public().sign_key.to_bytes(),
                devices: devs,
            });
            identities.insert(id.to_string(), identity);
        }
        let record = StateRecord {
            beneficiary: Some("UA".into()),
            chair: "EE".into(),
            quorum: 3,
            relay_key: keys("relay", "relay receipts").public().sign_key.to_bytes(),
            participants,
            channels: vec![ChannelRecord {
                id: "plenary".into(),
                description: "everyone".into(),
                members: vec!["EE".into(), "GB".into(), "PL".into(), "UA".into()],
                observers: vec!["NATO".into()],
                post: 0,
                max_tlp: 4,
            }],
        };
        let mut genesis = SignedEntry::new(&EntryBody {
            index: 0,
            prev_hash: [0; 32],
            kind: EntryKind::Genesis(record),
        });
        for who in ["EE", "UA"] {
            approve(&mut genesis, who, &identities[who]);
        }
        let log = RosterLog::from_genesis(genesis, None).unwrap();
        Self {
            identities,
            devices,
            log,
        }
    }

    fn device(&self, p: &str, d: &str) -> &Identity {
        &self.devices[&(p.to_string(), d.to_string())]
    }

    fn next(&self, kind: EntryKind, signers: &[&str]) -> SignedEntry {
        let mut e = SignedEntry::new(&EntryBody {
            index: self.log.epoch() + 1,
            prev_hash: self.log.head_hash(),
            kind,
        });
        for s in signers {
            approve(&mut e, s, &self.identities[*s]);
        }
        e
    }

    fn seal(&self, p: &str, d: &str, subject: &str) -> Vec<u8> {
        seal_v2(
            self.device(p, d),
            d,
            self.log.current(),
            "plenary",
            &Message::note(Tlp::Amber, subject, "body"),
            now_ms(),
        )
        .unwrap()
        .into_bytes()
    }

    async fn relay(&self, limits: Limits) -> TestRelay {
        let genesis = self.log.entries()[0].clone();
        TestRelay::start_with_store(
            &World::with(&["UA", "EE", "PL"], &[]),
            limits,
            tempfile::tempdir().unwrap(),
            move |path| {
                // The receipt key the genesis names (`relay_key`).
                let seed: [u8; 32] = Sha256::digest("sign relay receipts").into();
                let line = format!(
                    "receipt_secret = \"{}\"\n",
                    base64::engine::general_purpose::STANDARD.encode(seed)
                );
                let key = path.join("receipt.key");
                std::fs::write(&key, line).unwrap();
                std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .unwrap();
                let store = SledStore::open(path).unwrap();
                store.append_roster_entry(0, &genesis, now_ms()).unwrap();
                Arc::new(store)
            },
        )
        .await
    }
}

fn approve(e: &mut SignedEntry, who: &str, key: &Identity) {
    e.add_approval(Approval {
        participant: who.into(),
        signature: key.sign(&approval_message(&e.body)),
    });
}

fn limits() -> Limits {
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

async fn submit(raw: &mut Raw, entry: &SignedEntry) -> Frame {
    raw.write(&Frame::RosterSubmit {
        entry: EntryBytes(entry.encode()),
    })
    .await;
    raw.expect("RosterAccepted/Rejected", |f| {
        matches!(f, Frame::RosterAccepted { .. } | Frame::Rejected { .. })
    })
    .await
}

fn subject_of(envelope: &[u8], keys: &Identity, device: &str, v2: &V2) -> String {
    let u = UntrustedEnvelope::decode(envelope).unwrap();
    let epoch = u.claimed_header().roster_epoch.unwrap();
    let state = v2.log.state_at(epoch).unwrap().clone();
    let v = u.verify(state.as_ref()).unwrap();
    v.open_as(keys, Some(device))
        .unwrap()
        .message()
        .subject
        .clone()
}

#[tokio::test]
async fn devices_authenticate_and_siblings_receive_what_their_device_sent() {
    timed(async {
        let v2 = V2::new();
        let relay = v2.relay(limits()).await;
        let (mut gb_front, _) =
            login(relay.addr(), relay.pin, v2.device("GB", "front"), "front").await;
        let (mut gb_back, _) =
            login(relay.addr(), relay.pin, v2.device("GB", "back"), "back").await;
        let (mut nato, _) =
            login(relay.addr(), relay.pin, v2.device("NATO", "front"), "front").await;

        // The identity key is not a device key; an unknown label is not a
        // device of the roster.
        let mut raw = open(relay.addr(), relay.pin).await;
        let answer = raw.auth_as(&v2.identities["GB"], "front").await;
        assert!(
            matches!(
                answer,
                Frame::Error {
                    code: ErrorCode::BadSignature,
                    ..
                }
            ),
            "{answer:?}"
        );
        let mut raw = open(relay.addr(), relay.pin).await;
        let answer = raw.auth_as(v2.device("GB", "front"), "laptop").await;
        assert!(
            matches!(
                answer,
                Frame::Error {
                    code: ErrorCode::Revoked,
                    ..
                }
            ),
            "{answer:?}"
        );

        let env = v2.seal("GB", "front", "from the front office");
        assert!(matches!(
            gb_front.send_env(&env).await,
            Frame::Receipt { .. }
        ));
        for (raw, p, d) in [(&mut gb_back, "GB", "back"), (&mut nato, "NATO", "front")] {
            let f = raw
                .expect("Deliver", |f| matches!(f, Frame::Deliver { .. }))
                .await;
            let Frame::Deliver { envelope, seq, .. } = f else {
                unreachable!()
            };
            assert_eq!(
                subject_of(&envelope, v2.device(p, d), d, &v2),
                "from the front office"
            );
            raw.write(&Frame::Ack { up_to_seq: seq }).await;
        }
        // The sending device does not get its own message back: the next
        // thing it receives is the back office's reply.
        let reply = v2.seal("GB", "back", "reply from the back office");
        assert!(matches!(
            gb_back.send_env(&reply).await,
            Frame::Receipt { .. }
        ));
        let f = gb_front
            .expect("Deliver", |f| matches!(f, Frame::Deliver { .. }))
            .await;
        let Frame::Deliver { envelope, .. } = f else {
            unreachable!()
        };
        assert_eq!(
            subject_of(&envelope, v2.device("GB", "front"), "front", &v2),
            "reply from the back office"
        );

        // A version-1 envelope is stale on a relay that runs the log.
        let w1 = World::with(&["UA", "EE", "PL"], &[]);
        let old = w1.seal("UA", "front-office", "v1");
        let (mut ua, _) = login(relay.addr(), relay.pin, v2.device("UA", "front"), "front").await;
        let r = ua.send_env(old.as_bytes()).await;
        assert!(
            matches!(
                &r,
                Frame::Rejected {
                    code: ErrorCode::StaleRoster,
                    ..
                }
            ),
            "{r:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_revoked_device_is_cut_off_at_once_and_fetchers_get_the_entry_pushed() {
    timed(async {
        let mut v2 = V2::new();
        let relay = v2.relay(limits()).await;
        let (mut gb_front, _) = login(relay.addr(), relay.pin, v2.device("GB", "front"), "front").await;
        let (gb_back, _) = login(relay.addr(), relay.pin, v2.device("GB", "back"), "back").await;
        let (mut ee, _) = login(relay.addr(), relay.pin, v2.device("EE", "front"), "front").await;

        // EE fetches the log: the genesis, head 0.
        ee.write(&Frame::RosterFetch { from: 0 }).await;
        let f = ee.expect("RosterEntries", |f| matches!(f, Frame::RosterEntries { .. })).await;
        let Frame::RosterEntries { head, first, entries } = f else { unreachable!() };
        assert_eq!((head, first, entries.len()), (0, 0, 1));
        assert_eq!(
            SignedEntry::decode(&entries[0].0).unwrap(),
            v2.log.entries()[0]
        );

        // A Devices entry for GB signed by another participant is refused.
        let keep_front: Vec<DeviceRecord> = v2
            .log
            .current()
            .record()
            .participants
            .iter()
            .find(|p| p.id == "GB")
            .unwrap()
            .devices
            .iter()
            .filter(|d| d.device == "front")
            .cloned()
            .collect();
        let forged = v2.next(
            EntryKind::Devices { participant: "GB".into(), devices: keep_front.clone() },
            &["EE"],
        );
        let r = submit(&mut ee, &forged).await;
        assert!(
            matches!(&r, Frame::Rejected { code: ErrorCode::BadRosterEntry, reason, .. } if reason.contains("GB")),
            "{r:?}"
        );
        assert!(gb_back.conn.close_reason().is_none());

        // GB revokes its lost back-office laptop.
        let revoke = v2.next(
            EntryKind::Devices { participant: "GB".into(), devices: keep_front },
            &["GB"],
        );
        let r = submit(&mut gb_front, &revoke).await;
        assert!(matches!(r, Frame::RosterAccepted { index: 1, .. }), "{r:?}");
        v2.log.append(revoke.clone()).unwrap();
        assert_eq!(gb_back.closed_code().await, Some(ErrorCode::Revoked));
        // Pushed to the session that fetched.
        let f = ee.expect("RosterEntries", |f| matches!(f, Frame::RosterEntries { .. })).await;
        let Frame::RosterEntries { head, first, entries } = f else { unreachable!() };
        assert_eq!((head, first), (1, 1));
        assert_eq!(SignedEntry::decode(&entries[0].0).unwrap(), revoke);
        // The revoked device can no longer authenticate.
        let mut raw = open(relay.addr(), relay.pin).await;
        let answer = raw.auth_as(v2.device("GB", "back"), "back").await;
        assert!(matches!(answer, Frame::Error { code: ErrorCode::Revoked, .. }), "{answer:?}");
        // The same entry again is refused (already in the log).
        let r = submit(&mut ee, &revoke).await;
        assert!(matches!(r, Frame::Rejected { code: ErrorCode::BadRosterEntry, .. }), "{r:?}");
    })
    .await;
}

#[tokio::test]
async fn amendments_need_the_beneficiary_and_old_epochs_go_stale() {
    timed(async {
        let mut v2 = V2::new();
        let relay = v2.relay(limits()).await;
        let (mut ee, _) = login(relay.addr(), relay.pin, v2.device("EE", "front"), "front").await;
        let sealed_at_0 = v2.seal("EE", "front", "sealed at epoch 0");

        let mut record = v2.log.current().record().clone();
        record.quorum = 2;
        // Quorum reached (EE, GB, PL) but without Ukraine: refused.
        let without_ua = v2.next(EntryKind::Amend(record.clone()), &["EE", "GB", "PL"]);
        let r = submit(&mut ee, &without_ua).await;
        assert!(
            matches!(&r, Frame::Rejected { code: ErrorCode::BadRosterEntry, reason, .. } if reason.contains("beneficiary")),
            "{r:?}"
        );
        let with_ua = v2.next(EntryKind::Amend(record), &["EE", "GB", "UA"]);
        assert!(matches!(submit(&mut ee, &with_ua).await, Frame::RosterAccepted { index: 1, .. }));
        v2.log.append(with_ua).unwrap();
        // The chair passes to PL (quorum 2 now: PL and UA suffice, with the
        // old chair EE).
        let mut record = v2.log.current().record().clone();
        record.chair = "PL".into();
        let chair = v2.next(EntryKind::Amend(record), &["EE", "UA"]);
        assert!(matches!(submit(&mut ee, &chair).await, Frame::RosterAccepted { index: 2, .. }));
        v2.log.append(chair).unwrap();

        // Sealed at epoch 0, two changes ago: stale, whatever the grace.
        let r = ee.send_env(&sealed_at_0).await;
        assert!(
            matches!(&r, Frame::Rejected { code: ErrorCode::StaleRoster, reason, .. } if reason.contains("epoch is 2")),
            "{r:?}"
        );
        // Re-sealed at the current epoch: accepted.
        let fresh = v2.seal("EE", "front", "re-sealed");
        assert!(matches!(ee.send_env(&fresh).await, Frame::Receipt { .. }));
    })
    .await;
}

#[tokio::test]
async fn the_previous_epoch_is_accepted_only_within_the_grace_period() {
    timed(async {
        let mut v2 = V2::new();
        let relay = v2
            .relay(Limits {
                roster_grace: Duration::ZERO,
                ..limits()
            })
            .await;
        let (mut pl, _) = login(relay.addr(), relay.pin, v2.device("PL", "front"), "front").await;
        let sealed_at_0 = v2.seal("PL", "front", "sealed at epoch 0");
        let mut record = v2.log.current().record().clone();
        record.quorum = 4;
        let e = v2.next(EntryKind::Amend(record), &["EE", "GB", "UA"]);
        assert!(matches!(
            submit(&mut pl, &e).await,
            Frame::RosterAccepted { .. }
        ));
        v2.log.append(e).unwrap();
        // Wait (for an event, not a fixed time) until the relay clock has
        // moved past the zero grace period: the current epoch's start is in
        // the past once a fresh envelope is accepted a millisecond later.
        let start = now_ms();
        while now_ms() <= start + 1 {
            tokio::task::yield_now().await;
        }
        let r = pl.send_env(&sealed_at_0).await;
        assert!(
            matches!(
                &r,
                Frame::Rejected {
                    code: ErrorCode::StaleRoster,
                    ..
                }
            ),
            "{r:?}"
        );

        // With the default grace (60 s) the previous epoch still passes.
        let mut v2 = V2::new();
        let relay = v2.relay(limits()).await;
        let (mut pl, _) = login(relay.addr(), relay.pin, v2.device("PL", "front"), "front").await;
        let sealed_at_0 = v2.seal("PL", "front", "sealed at epoch 0");
        let mut record = v2.log.current().record().clone();
        record.quorum = 4;
        let e = v2.next(EntryKind::Amend(record), &["EE", "GB", "UA"]);
        assert!(matches!(
            submit(&mut pl, &e).await,
            Frame::RosterAccepted { .. }
        ));
        v2.log.append(e).unwrap();
        let r = pl.send_env(&sealed_at_0).await;
        assert!(matches!(r, Frame::Receipt { .. }), "{r:?}");
    })
    .await;
}

/// Evidence: every accepted envelope is answered with a receipt signed by
/// the roster's `relay_key`; a device's checkpoint is checked, kept
/// durably and returned first thing after the next `Welcome`.
#[tokio::test]
async fn receipts_are_signed_and_checkpoints_are_kept_per_device() {
    use tallinn_common::evidence::{envelope_hash, CheckpointBody, SignedCheckpoint};
    timed(async {
        let v2 = V2::new();
        let relay = v2.relay(limits()).await;
        let (mut gb, _) = login(relay.addr(), relay.pin, v2.device("GB", "front"), "front").await;
        let first = gb.read().await.expect("a frame after Welcome");
        assert_eq!(first, Frame::CheckpointLatest { checkpoint: None });

        let env = v2.seal("GB", "front", "with a receipt");
        let msg_id = UntrustedEnvelope::decode(&env)
            .unwrap()
            .claimed_header()
            .msg_id;
        let Frame::Receipt { receipt } = gb.send_env(&env).await else {
            panic!("expected a receipt");
        };
        let relay_key = v2.log.current().relay_key().to_bytes();
        receipt.verify_for(&relay_key, &msg_id, &env).unwrap();
        assert_eq!(receipt.body.envelope_hash, envelope_hash(&env));
        assert!(receipt.body.seq > 0);

        let body = |device: &str, index| CheckpointBody {
            participant: "GB".into(),
            device: device.into(),
            roster_epoch: 0,
            index,
            head_hash: [9; 32],
            time_ms: now_ms(),
        };
        let sign = |who: &Identity, b: &CheckpointBody| SignedCheckpoint::new(b, |m| who.sign(m));
        // Signed by another key, or for another device: refused.
        for bad in [
            sign(v2.device("GB", "back"), &body("front", 3)),
            sign(v2.device("GB", "front"), &body("back", 3)),
        ] {
            gb.write(&Frame::Checkpoint { checkpoint: bad }).await;
            let answer = gb
                .expect("Rejected", |f| matches!(f, Frame::Rejected { .. }))
                .await;
            assert!(
                matches!(
                    answer,
                    Frame::Rejected {
                        code: ErrorCode::BadSignature,
                        ..
                    }
                ),
                "{answer:?}"
            );
        }
        let good = sign(v2.device("GB", "front"), &body("front", 3));
        gb.write(&Frame::Checkpoint {
            checkpoint: good.clone(),
        })
        .await;
        let answer = gb
            .expect("CheckpointLatest", |f| {
                matches!(f, Frame::CheckpointLatest { .. })
            })
            .await;
        assert_eq!(
            answer,
            Frame::CheckpointLatest {
                checkpoint: Some(good.clone())
            }
        );
        // The next session of that device gets it before anything else;
        // another device of the participant does not.
        let (mut again, _) =
            login(relay.addr(), relay.pin, v2.device("GB", "front"), "front").await;
        assert_eq!(
            again.read().await,
            Some(Frame::CheckpointLatest {
                checkpoint: Some(good)
            })
        );
        let (mut back, _) = login(relay.addr(), relay.pin, v2.device("GB", "back"), "back").await;
        assert_eq!(
            back.read().await,
            Some(Frame::CheckpointLatest { checkpoint: None })
        );
    })
    .await
}

/// A resend that arrives while the original is still being committed is
/// answered `duplicate` only after the original's `Receipt`: answers come
/// in send order, so a client never archives its message without the
/// receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_come_in_send_order_so_a_duplicate_never_overtakes_its_receipt() {
    timed(async {
        let v2 = V2::new();
        let relay = v2.relay(limits()).await;
        let (mut gb, _) = login(relay.addr(), relay.pin, v2.device("GB", "front"), "front").await;
        assert!(matches!(
            gb.read().await,
            Some(Frame::CheckpointLatest { .. })
        ));
        let envs: Vec<Vec<u8>> = (0..100)
            .map(|i| v2.seal("GB", "front", &format!("pipelined {i}")))
            .collect();
        for e in &envs {
            for _ in 0..2 {
                gb.write(&Frame::Send {
                    envelope: e.clone(),
                })
                .await;
            }
        }
        let mut order = Vec::new();
        while order.len() < 2 * envs.len() {
            match gb.read().await.expect("an answer") {
                Frame::Receipt { receipt } => order.push((receipt.body.msg_id, true)),
                Frame::Rejected {
                    msg_id,
                    code: ErrorCode::Duplicate,
                    ..
                } => order.push((msg_id, false)),
                Frame::Deliver { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        for e in &envs {
            let id = UntrustedEnvelope::decode(e)
                .unwrap()
                .claimed_header()
                .msg_id;
            let answers: Vec<bool> = order
                .iter()
                .filter(|(m, _)| *m == id)
                .map(|(_, r)| *r)
                .collect();
            assert_eq!(answers, vec![true, false], "receipt first, then duplicate");
        }
    })
    .await
}
