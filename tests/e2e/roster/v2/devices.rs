//! Version-2 clients and devices: fetching the log, resealing, revoked
//! devices, the quarantine explained by the log, devices from the CLI, the
//! migration from version 1, admitting Lithuania.

use super::*;

#[tokio::test]
async fn v2_clients_fetch_the_log_and_a_stale_seal_is_resealed_and_delivered_once() {
    timed(async {
        let mut v2 = V2::new(Limits {
            roster_grace: Duration::ZERO,
            ..limits()
        })
        .await;
        let ua = v2.client("UA").await;
        assert_eq!(ua.roster().epoch(), Some(0));
        assert_eq!(ua.state().borrow().roster_epoch, Some(0));
        // PL syncs once (fetching the log), then queues while offline:
        // sealed against epoch 0.
        let pl = v2.client("PL").await;
        pl.close().await;
        drop(pl);
        let pl = Client::open(v2.settings("PL")).unwrap();
        let subject = "sealed before the quorum changed";
        pl.queue("plenary", &Message::note(Tlp::Amber, subject, "body"))
            .unwrap();
        drop(pl);
        // Meanwhile the coalition lowers the quorum (epoch 1).
        let ee = v2.client("EE").await;
        let mut record = v2.log.current().record().clone();
        record.quorum = 6;
        let e = v2.next(EntryKind::Amend(record), &SEVEN);
        assert_eq!(ee.submit_roster_entry(&e).await.unwrap(), 1);
        v2.log.append(e).unwrap();
        // Two changes apart: stale whatever the grace (and the grace is 0).
        let mut record = v2.log.current().record().clone();
        record.chair = "PL".into();
        let e = v2.next(
            EntryKind::Amend(record),
            &["EE", "UA", "PL", "CA", "DE", "DK"],
        );
        assert_eq!(ee.submit_roster_entry(&e).await.unwrap(), 2);
        v2.log.append(e).unwrap();
        // PL comes back: stale_roster, fetch, re-seal, accepted.
        let pl = Client::connect(v2.settings("PL")).await.unwrap();
        pl.discard_events();
        pl.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        assert_eq!(pl.roster().epoch(), Some(2));
        assert_eq!(pl.outbox().pending_len(), 0);
        ua.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        let mut seen = 0;
        for _ in 0..200 {
            seen = count(&ua, subject);
            if seen > 0 {
                break;
            }
            ua.sync(Duration::from_secs(5), |_| {}).await.unwrap();
        }
        assert_eq!(seen, 1, "delivered exactly once");
        assert_eq!(ua.roster().epoch(), Some(2), "pushed to a connected client");
        let v = ua.verify_archive(true, |_| {}).unwrap();
        assert!(v.first_error.is_none(), "{v:?}");
    })
    .await;
}

#[tokio::test]
async fn a_revoked_device_stops_with_a_message_and_cannot_return() {
    timed(async {
        let mut v2 = V2::new(limits()).await;
        let gb = v2.client("GB").await;
        let ua = v2.client("UA").await;
        // GB revokes its only device (the lost laptop), signed with its
        // identity key; UA submits it.
        let e = v2.next(
            EntryKind::Devices {
                participant: "GB".into(),
                devices: vec![],
            },
            &["GB"],
        );
        assert_eq!(ua.submit_roster_entry(&e).await.unwrap(), 1);
        v2.log.append(e).unwrap();
        let mut st = gb.state();
        let fatal = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Some(f) = st.borrow_and_update().fatal.clone() {
                    return f;
                }
                st.changed().await.unwrap();
            }
        })
        .await
        .expect("GB stops");
        assert!(fatal.contains("revoked"), "{fatal}");
        gb.close().await;
        drop(gb);
        let again = Client::connect(v2.settings("GB")).await;
        let err = again.err().expect("refused").to_string();
        assert!(err.contains("revoked"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn quarantined_deliveries_are_archived_once_the_log_explains_them() {
    timed(async {
        let mut v2 = V2::new(limits()).await;
        // GB knows epoch 0, then goes offline.
        let gb = v2.client("GB").await;
        gb.close().await;
        drop(gb);
        // Lithuania is admitted (epoch 1) and posts in plenary.
        let lt = Identity::generate(ParticipantId::new("LT").unwrap());
        let mut record = v2.log.current().record().clone();
        record.participants.push(ParticipantRecord {
            id: "LT".into(),
            name: "Lithuania".into(),
            role: 0,
            identity_key: lt.public().sign_key.to_bytes(),
            devices: vec![DeviceRecord {
                device: "default".into(),
                suite: 1,
                sign_key: lt.public().sign_key.to_bytes(),
                enc_key: lt.public().enc_key,
            }],
        });
        record.participants.sort_by(|a, b| a.id.cmp(&b.id));
        for c in &mut record.channels {
            if c.id == "plenary" {
                c.members.push("LT".into());
                c.members.sort();
            }
        }
        let e = v2.next(EntryKind::Amend(record), &SEVEN);
        let ua = v2.client("UA").await;
        assert_eq!(ua.submit_roster_entry(&e).await.unwrap(), 1);
        v2.log.append(e).unwrap();
        let subject = "Lithuania says hello";
        let sealed = seal_v2(
            &lt,
            "default",
            v2.log.current(),
            "plenary",
            &Message::note(Tlp::Green, subject, "first message"),
            now(),
        )
        .unwrap();
        // It reached GB before GB knew the new roster: quarantined.
        let gb = Client::open(v2.settings("GB")).unwrap();
        gb.archive()
            .quarantine(&Quarantined {
                seq: 999,
                received_at_ms: now(),
                reason: "unknown sender \"LT\"".into(),
                claimed_sender: Some("LT".into()),
                claimed_channel: Some("plenary".into()),
                envelope: sealed.as_bytes().to_vec(),
            })
            .unwrap();
        assert_eq!(count(&gb, subject), 0);
        drop(gb);
        let gb = v2.client("GB").await;
        assert_eq!(gb.roster().epoch(), Some(1));
        assert_eq!(count(&gb, subject), 1, "archived after the log advanced");
        assert!(gb.archive().quarantined().unwrap().is_empty());
        let v = gb.verify_archive(true, |_| {}).unwrap();
        assert!(v.first_error.is_none(), "{v:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_added_and_revoked_from_the_cli() {
    timed(async {
        let v2 = V2::new(limits()).await;
        let pdir = v2.env.dep.participant_dir("PL");
        let config = pdir.join("client.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let pin = format!("deployment = \"{}\"\n", hex::encode(v2.deployment));
        std::fs::write(&config, format!("{text}{pin}")).unwrap();
        let cli = |args: &[&str]| v2.env.cli("PL", args);

        let sync = cli(&["sync"]);
        assert!(sync.status.success(), "{}", stderr(&sync));
        let show = cli(&["roster", "show"]);
        assert!(show.status.success(), "{}", stderr(&show));
        assert!(stdout(&show).contains("epoch: 0"), "{}", stdout(&show));

        let back_key = pdir.join("back-office.key");
        let add = cli(&[
            "device",
            "add",
            "back-office",
            "--out",
            back_key.to_str().unwrap(),
        ]);
        assert!(add.status.success(), "{}", stderr(&add));
        assert!(
            stdout(&add).contains("added at epoch 1"),
            "{}",
            stdout(&add)
        );
        let list = cli(&["device", "list"]);
        assert!(stdout(&list).contains("back-office") && stdout(&list).contains("(this device)"));

        // The new device syncs with its own keys (no roster file).
        let back_config = pdir.join("client-back.toml");
        std::fs::write(
            &back_config,
            text.replace(
                "identity = \"identity.key\"",
                "identity = \"back-office.key\"",
            )
            .replace("device = \"default\"", "device = \"back-office\"")
            .replace("roster = \"../roster.toml\"", "roster = \"no-roster.toml\"")
                + &pin,
        )
        .unwrap();
        let back = |args: &[&str]| {
            let mut full = vec!["--config", back_config.to_str().unwrap()];
            full.extend_from_slice(args);
            run_bin("tallinn", &full)
        };
        let s = back(&["sync"]);
        assert!(s.status.success(), "{}", stderr(&s));
        // A message from UA reaches both of PL's devices.
        let ua = v2.client("UA").await;
        ua.send(
            "plenary",
            &tallinn_common::message::Message::note(Tlp::Green, "to both offices", "b"),
        )
        .await
        .unwrap();
        for run in [&cli as &dyn Fn(&[&str]) -> std::process::Output, &back] {
            let s = run(&["sync"]);
            assert!(s.status.success(), "{}", stderr(&s));
            let inbox = run(&["inbox"]);
            assert!(
                stdout(&inbox).contains("to both offices"),
                "{}",
                stdout(&inbox)
            );
        }

        // The laptop is lost: revoke it from the primary device.
        let revoke = cli(&["device", "revoke", "back-office"]);
        assert!(revoke.status.success(), "{}", stderr(&revoke));
        assert!(stdout(&revoke).contains("revoked at epoch 2"));
        let refused = back(&["sync"]);
        assert!(!refused.status.success());
        assert!(stderr(&refused).contains("revoked"), "{}", stderr(&refused));

        let export = pdir.join("roster-log.json");
        let log = cli(&["roster", "log", "--export", export.to_str().unwrap()]);
        assert!(log.status.success(), "{}", stderr(&log));
        let entries: Vec<String> =
            serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
        assert_eq!(entries.len(), 3);
        let listing = cli(&["roster", "log"]);
        assert!(
            stdout(&listing).contains("devices of PL: [default]"),
            "{}",
            stdout(&listing)
        );
        let verify = cli(&["archive", "verify", "--deep"]);
        assert!(verify.status.success(), "{}", stderr(&verify));
    })
    .await;
}

#[tokio::test]
async fn a_version_1_archive_verifies_after_the_migration() {
    timed(async {
        let mut env = Env::new().await;
        // Version 1: EE and UA exchange messages; both archives hold
        // version-1 records (sent and received).
        let ee = env.client("EE", "default").await;
        let ua = env.client("UA", "default").await;
        ee.discard_events();
        ua.discard_events();
        ee.send(
            "front-office",
            &Message::note(Tlp::Amber, "v1 era", "before"),
        )
        .await
        .unwrap();
        ua.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        ee.close().await;
        ua.close().await;
        drop((ee, ua));
        // Migration: genesis from the same roster, installed.
        env.stop_relay().await;
        let data = env.dep.dir.join("relay-data");
        let key = genesis::receipt_key(&data).unwrap();
        let mut g = genesis::genesis_from_v1(&env.dep.roster, "EE", 7, &key);
        for who in ["EE", "UA"] {
            approve(&mut g, who, &env.dep.id(who));
        }
        let log = genesis::install(&data, g, None, now()).unwrap();
        let relay = env.dep.start_relay_with(None, limits()).await.unwrap();
        env.addr = relay.local_addr();
        env.relay = Some(relay);
        for who in ["EE", "UA"] {
            let mut s = env.settings(who, "default");
            s.deployment = Some(log.deployment());
            let c = Client::connect(s).await.unwrap();
            c.discard_events();
            c.sync(Duration::from_secs(20), |_| {}).await.unwrap();
            assert_eq!(c.roster().epoch(), Some(0));
            if who == "EE" {
                c.send(
                    "front-office",
                    &Message::note(Tlp::Amber, "v2 era", "after"),
                )
                .await
                .unwrap();
            }
            let report = c.verify_archive(true, |_| {}).unwrap();
            assert!(report.first_error.is_none(), "{who}: {report:?}");
            assert!(report.records >= 1);
            c.close().await;
        }
        let mut s = env.settings("UA", "default");
        s.deployment = Some(log.deployment());
        let ua = Client::connect(s).await.unwrap();
        ua.discard_events();
        ua.sync(Duration::from_secs(20), |_| {}).await.unwrap();
        assert_eq!(
            count(&ua, "era"),
            2,
            "one version-1 and one version-2 record"
        );
        let report = ua.verify_archive(true, |_| {}).unwrap();
        assert!(report.first_error.is_none(), "{report:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lithuania_is_admitted_by_messages_with_ukraines_veto() {
    timed(async {
        let v2 = V2::new(limits()).await;
        let mut who: Vec<&str> = SEVEN.to_vec();
        who.push("IT");
        for p in &who {
            v2.pin(p);
        }
        let cli = |p: &str, args: &[&str]| {
            let o = v2.env.cli(p, args);
            assert!(o.status.success(), "{p} {args:?}: {}", stderr(&o));
            stdout(&o)
        };
        for p in &who {
            cli(p, &["sync"]);
        }
        // Lithuania's point of contact makes its keys.
        let lt_dir = v2.env.dir.path().join("LT");
        std::fs::create_dir_all(&lt_dir).unwrap();
        let keygen = run_bin(
            "tallinn",
            &[
                "keygen",
                "--id",
                "LT",
                "--name",
                "Lithuania",
                "--out",
                lt_dir.join("identity.key").to_str().unwrap(),
            ],
        );
        assert!(keygen.status.success(), "{}", stderr(&keygen));
        let entry = lt_dir.join("lt.toml");
        std::fs::write(&entry, stdout(&keygen)).unwrap();

        // The chair proposes; five members approve: quorum, but no Ukraine.
        let out = cli(
            "EE",
            &[
                "roster",
                "propose",
                "--add-participant",
                entry.to_str().unwrap(),
            ],
        );
        let id = out
            .lines()
            .find_map(|l| l.strip_prefix("proposal "))
            .unwrap()
            .trim()[..12]
            .to_string();
        for p in ["CA", "DE", "DK", "FR", "PL"] {
            cli(p, &["sync"]);
            let a = cli(p, &["roster", "approve", &id]);
            assert!(a.contains("approved as"), "{a}");
        }
        let refused = v2.env.cli("IT", &["roster", "submit", &id]);
        assert!(!refused.status.success());
        assert!(
            stderr(&refused).contains("beneficiary (UA) has not approved"),
            "{}",
            stderr(&refused)
        );
        // Ukraine looks at it and approves; then anyone submits.
        cli("UA", &["sync"]);
        let shown = cli("UA", &["roster", "approve", &id, "--dry-run"]);
        assert!(
            shown.contains("LT") && shown.contains("Lithuania"),
            "{shown}"
        );
        cli("UA", &["roster", "approve", &id]);
        let ok = cli("IT", &["roster", "submit", &id]);
        assert!(ok.contains("epoch 1"), "{ok}");
        cli("PL", &["sync"]);
        let show = cli("PL", &["roster", "show"]);
        assert!(
            show.contains("epoch: 1") && show.contains("Lithuania"),
            "{show}"
        );
        // Everyone's archive still verifies, the governance messages included.
        let v = cli("UA", &["archive", "verify", "--deep"]);
        assert!(v.contains("archive OK"), "{v}");
    })
    .await;
}
