//! Version 2 from the command line: the genesis ceremony. The operator
//! builds the genesis from the version-1 roster (`tallinn-relay roster
//! init`), the chair and the beneficiary approve it with `tallinn roster
//! approve` on their own machines, the operator installs it, and the relay
//! starts on the roster log.

use crate::util::*;

fn relay_cli(dep_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let config = dep_dir.join("relay.toml");
    let mut full = vec!["roster"];
    full.extend_from_slice(&args[..1]);
    full.extend_from_slice(&["--config", config.to_str().unwrap()]);
    full.extend_from_slice(&args[1..]);
    run_bin("tallinn-relay", &full)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genesis_ceremony_through_the_clis() {
    timed(async {
        let mut env = Env::new().await;
        env.stop_relay().await;
        let dir = env.dep.dir.clone();
        let genesis = dir.join("genesis.entry");
        let g = genesis.to_str().unwrap();

        let init = relay_cli(&dir, &["init", "--chair", "EE", "--out", g]);
        assert!(init.status.success(), "{}", stderr(&init));
        let out = stdout(&init);
        assert!(out.contains("chair: EE, quorum: 7"), "{out}");
        let fingerprint = out
            .lines()
            .skip_while(|l| !l.starts_with("deployment fingerprint"))
            .nth(1)
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(
            fingerprint.len(),
            64 + 7,
            "eight groups of eight: {fingerprint}"
        );
        // The receipt key is private.
        let key = dir.join("relay-data").join("receipt.key");
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Again: refused, the file exists.
        assert!(!relay_cli(&dir, &["init", "--chair", "EE", "--out", g])
            .status
            .success());

        // Unapproved: the relay refuses to install it, naming who must sign.
        let early = relay_cli(&dir, &["install", "--entry", g]);
        assert!(!early.status.success());
        assert!(
            stderr(&early).contains("beneficiary (UA)"),
            "{}",
            stderr(&early)
        );

        // A dry run shows the entry and changes nothing.
        let dry = env.cli("UA", &["roster", "approve", g, "--dry-run"]);
        assert!(dry.status.success(), "{}", stderr(&dry));
        assert!(stdout(&dry).contains(&fingerprint), "{}", stdout(&dry));
        assert!(stdout(&dry).contains("approved by: []"));
        for who in ["UA", "EE"] {
            let a = env.cli(who, &["roster", "approve", g]);
            assert!(a.status.success(), "{who}: {}", stderr(&a));
            assert!(stdout(&a).contains(&format!("approved as {who}")));
        }
        // Installing with the wrong fingerprint is refused.
        let wrong = relay_cli(
            &dir,
            &["install", "--entry", g, "--deployment", &"00".repeat(32)],
        );
        assert!(!wrong.status.success());
        let ok = relay_cli(
            &dir,
            &["install", "--entry", g, "--deployment", &fingerprint],
        );
        assert!(ok.status.success(), "{}", stderr(&ok));
        assert!(stdout(&ok).contains(&fingerprint));
        let again = relay_cli(&dir, &["install", "--entry", g]);
        assert!(!again.status.success());
        assert!(stderr(&again).contains("already runs a roster log"));

        let show = relay_cli(&dir, &["show"]);
        assert!(show.status.success(), "{}", stderr(&show));
        let s = stdout(&show);
        assert!(
            s.contains("epoch: 0") && s.contains("chair: EE") && s.contains("beneficiary: UA"),
            "{s}"
        );
        assert!(s.contains("default ("), "{s}");

        // The relay starts on the roster log (on a fresh port: the old one
        // may have been taken by a parallel test meanwhile).
        let relay = env.dep.start_relay_with(None, limits()).await.unwrap();
        assert_eq!(relay.roster_epoch(), Some(0));
        relay.shutdown().await;
    })
    .await;
}

pub(crate) mod v2 {
    //! Version-2 clients (the library) against a relay running the log.

    use std::time::Duration;

    use tallinn_client::archive::{Filter, Quarantined};
    use tallinn_client::{Client, Settings};
    use tallinn_common::envelope::seal_v2;
    use tallinn_common::identity::{Identity, ParticipantId};
    use tallinn_common::message::{Message, Tlp};
    use tallinn_common::roster::{
        approval_message, Approval, DeviceRecord, EntryBody, EntryKind, ParticipantRecord,
        RosterLog, SignedEntry,
    };
    use tallinn_relay::{genesis, Limits};

    use crate::util::*;

    /// A migrated deployment: genesis from the version-1 roster (EE chair,
    /// quorum 7, UA beneficiary), installed, relay started.
    pub struct V2 {
        pub env: Env,
        pub log: RosterLog,
        pub deployment: [u8; 32],
    }

    impl V2 {
        pub async fn new(limits: Limits) -> Self {
            let mut env = Env::new().await;
            env.stop_relay().await;
            let data = env.dep.dir.join("relay-data");
            let key = genesis::receipt_key(&data).unwrap();
            let mut g = genesis::genesis_from_v1(&env.dep.roster, "EE", 7, &key);
            for who in ["EE", "UA"] {
                approve(&mut g, who, &env.dep.id(who));
            }
            let log = genesis::install(&data, g, None, now()).unwrap();
            let relay = env.dep.start_relay_with(None, limits).await.unwrap();
            env.addr = relay.local_addr();
            env.dep.set_relay_addr(env.addr).unwrap();
            env.relay = Some(relay);
            let deployment = log.deployment();
            Self {
                env,
                log,
                deployment,
            }
        }

        /// Pins the deployment in `id`'s `client.toml` (for the CLI).
        pub fn pin(&self, id: &str) {
            let config = self.env.dep.participant_dir(id).join("client.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            let pin = format!("deployment = \"{}\"\n", hex::encode(self.deployment));
            std::fs::write(&config, format!("{text}{pin}")).unwrap();
        }

        pub fn settings(&self, id: &str) -> Settings {
            let mut s = self.env.settings(id, "default");
            s.deployment = Some(self.deployment);
            s
        }

        pub async fn client(&self, id: &str) -> Client {
            let c = Client::connect(self.settings(id)).await.unwrap();
            c.discard_events();
            c.sync(Duration::from_secs(20), |_| {}).await.unwrap();
            c
        }

        /// The next entry of kind `kind`, approved by `signers`' identity keys.
        pub fn next(&self, kind: EntryKind, signers: &[&str]) -> SignedEntry {
            let mut e = SignedEntry::new(&EntryBody {
                index: self.log.epoch() + 1,
                prev_hash: self.log.head_hash(),
                kind,
            });
            for s in signers {
                approve(&mut e, s, &self.env.dep.id(s));
            }
            e
        }
    }

    pub fn approve(e: &mut SignedEntry, who: &str, key: &Identity) {
        e.add_approval(Approval {
            participant: who.into(),
            signature: key.sign(&approval_message(&e.body)),
        });
    }

    fn now() -> u64 {
        tallinn_common::unix_ms(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap(),
        )
    }

    const SEVEN: [&str; 7] = ["CA", "DE", "DK", "EE", "FR", "PL", "UA"];

    fn count(c: &Client, subject: &str) -> usize {
        c.archive()
            .search(
                &Filter {
                    text: Some(subject.into()),
                    ..Filter::default()
                },
                100,
            )
            .unwrap()
            .len()
    }

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
            assert!(
                stdout(&list).contains("back-office") && stdout(&list).contains("(this device)")
            );

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

    /// Every file under `dir`, recursively.
    fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_rotation_old_key_messages_open_then_the_old_secret_is_gone_from_disk() {
        timed(async {
            let v2 = V2::new(limits()).await;
            let pdir = v2.env.dep.participant_dir("PL");
            let config = pdir.join("client.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(
                &config,
                format!(
                    "{text}deployment = \"{}\"\nenc_key_grace_days = 0\n",
                    hex::encode(v2.deployment)
                ),
            )
            .unwrap();
            let log_path = v2.env.dir.path().join("pl-agent.log");
            let cli = |args: &[&str]| {
                let o = v2.env.cli("PL", args);
                assert!(
                    o.status.success(),
                    "{args:?}: {}\nthe agent's log:\n{}",
                    stderr(&o),
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
                stdout(&o)
            };
            cli(&["sync"]);
            // PL runs the agent from here on: the rotation and the sync
            // borrow the archive from it, and it opens the new key after.
            let text = std::fs::read_to_string(&config).unwrap();
            std::fs::write(
                &config,
                format!(
                    "{text}agent_socket = \"{}\"\n",
                    v2.env
                        .dir
                        .path()
                        .join("run")
                        .join("pl-agent.sock")
                        .display()
                ),
            )
            .unwrap();
            let agent_log = v2.env.dir.path().join("pl-agent.log");
            struct Agent(std::process::Child);
            impl Drop for Agent {
                fn drop(&mut self) {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                }
            }
            let mut agent = Agent(
                v2.env
                    .cli_command("PL", &["agent"])
                    .env_remove("TALLINN_PASSPHRASE")
                    .env("RUST_LOG", "tallinn_client=info")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
            {
                use std::io::BufRead as _;
                let err = agent.0.stderr.take().unwrap();
                let mut lines = std::io::BufReader::new(err).lines();
                let log_path = agent_log.clone();
                let ready = tokio::task::spawn_blocking(move || {
                    let mut seen = Vec::new();
                    for l in lines.by_ref().map_while(Result::ok) {
                        if l.contains("agent for PL") {
                            // Keep draining so the agent never blocks on
                            // stderr; its log goes to a file for a failure.
                            std::thread::spawn(move || {
                                use std::io::Write as _;
                                let mut log = std::fs::File::create(log_path).unwrap();
                                for l in lines.by_ref().map_while(Result::ok) {
                                    let _ = writeln!(log, "{l}");
                                }
                            });
                            return Ok(());
                        }
                        seen.push(l);
                    }
                    Err(seen)
                });
                let r = tokio::time::timeout(WAIT, ready).await.unwrap().unwrap();
                assert!(r.is_ok(), "the agent did not start: {r:?}");
            }
            let key_text = std::fs::read_to_string(pdir.join("identity.key")).unwrap();
            let old_b64 = key_text
                .lines()
                .find_map(|l| l.strip_prefix("enc_secret = \""))
                .unwrap()
                .trim_end_matches('"')
                .to_string();
            use base64::Engine as _;
            let old_raw = base64::engine::general_purpose::STANDARD
                .decode(&old_b64)
                .unwrap();
            // Sealed to PL's current key while PL is offline.
            let ua = v2.client("UA").await;
            ua.send(
                "plenary",
                &Message::note(Tlp::Amber, "before the rotation", "b"),
            )
            .await
            .unwrap();
            let out = cli(&["device", "rotate"]);
            assert!(out.contains("rotated at epoch 1"), "{out}");
            assert!(!std::fs::read_to_string(pdir.join("identity.key"))
                .unwrap()
                .contains(&old_b64));
            let out = cli(&["sync"]);
            assert!(out.contains("1 retired encryption key(s) erased"), "{out}");
            // Through the agent, which took the archive back with the new key.
            let inbox = cli(&["inbox"]);
            assert!(inbox.contains("before the rotation"), "{inbox}");
            let status = cli(&["outbox"]);
            assert!(status.contains("outbox is empty"), "{status}");
            assert!(
                agent.0.try_wait().unwrap().is_none(),
                "the agent is still running"
            );
            // The old secret is nowhere under PL's directory any more.
            for f in files(&pdir) {
                let bytes = std::fs::read(&f).unwrap();
                assert!(
                    !bytes
                        .windows(old_raw.len())
                        .any(|w| w == old_raw.as_slice()),
                    "{} holds the old secret",
                    f.display()
                );
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(&old_b64),
                    "{} holds the old secret (base64)",
                    f.display()
                );
                assert!(
                    !f.to_string_lossy().contains(".retired-"),
                    "{}",
                    f.display()
                );
            }
            // Sealed to the new key: opens too; the whole archive verifies,
            // the record sealed to the erased key included.
            ua.sync(Duration::from_secs(20), |_| {}).await.unwrap();
            assert_eq!(ua.roster().epoch(), Some(1));
            ua.send(
                "plenary",
                &Message::note(Tlp::Amber, "after the rotation", "b"),
            )
            .await
            .unwrap();
            cli(&["sync"]);
            assert!(cli(&["inbox"]).contains("after the rotation"));
            assert!(cli(&["archive", "verify", "--deep"]).contains("archive OK"));
            assert!(cli(&["roster", "log"]).contains("devices of PL: [default]"));

            // The export carries the roster log: an auditor re-verifies every
            // record against the state of its own epoch, across the change.
            let export = pdir.join("export.jsonl");
            cli(&["archive", "export", "--out", export.to_str().unwrap()]);
            let text = std::fs::read_to_string(&export).unwrap();
            let mut lines = text.lines();
            let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
            assert_eq!(header["deployment"], hex::encode(v2.deployment));
            let entries: Vec<SignedEntry> = header["roster_log"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    SignedEntry::decode(
                        &base64::engine::general_purpose::STANDARD
                            .decode(e.as_str().unwrap())
                            .unwrap(),
                    )
                    .unwrap()
                })
                .collect();
            let log = RosterLog::from_entries(entries, Some(&v2.deployment)).unwrap();
            assert_eq!(log.epoch(), 1);
            let mut records = 0;
            for line in lines {
                let r: serde_json::Value = serde_json::from_str(line).unwrap();
                let env = base64::engine::general_purpose::STANDARD
                    .decode(r["envelope_b64"].as_str().unwrap())
                    .unwrap();
                tallinn_common::envelope::UntrustedEnvelope::decode(&env)
                    .unwrap()
                    .verify(&log)
                    .unwrap();
                records += 1;
            }
            assert!(records >= 2, "{records}");
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_without_the_identity_key_rotates_through_its_identity_device() {
        timed(async {
            let v2 = V2::new(limits()).await;
            let pdir = v2.env.dep.participant_dir("PL");
            let config = pdir.join("client.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            let pin = format!("deployment = \"{}\"\n", hex::encode(v2.deployment));
            std::fs::write(&config, format!("{text}{pin}")).unwrap();
            let run = |cfg: &std::path::Path, args: &[&str]| {
                let mut full = vec!["--config", cfg.to_str().unwrap()];
                full.extend_from_slice(args);
                let o = run_bin("tallinn", &full);
                assert!(o.status.success(), "{args:?}: {}", stderr(&o));
                stdout(&o)
            };
            run(&config, &["sync"]);
            let laptop_key = pdir.join("laptop.key");
            run(
                &config,
                &[
                    "device",
                    "add",
                    "laptop",
                    "--out",
                    laptop_key.to_str().unwrap(),
                ],
            );
            let laptop = pdir.join("client-laptop.toml");
            std::fs::write(
                &laptop,
                text.replace("identity = \"identity.key\"", "identity = \"laptop.key\"")
                    .replace("device = \"default\"", "device = \"laptop\"")
                    .replace("roster = \"../roster.toml\"", "roster = \"none.toml\"")
                    + &pin
                    + "enc_key_grace_days = 0\n",
            )
            .unwrap();
            run(&laptop, &["sync"]);
            let old_b64 = std::fs::read_to_string(&laptop_key)
                .unwrap()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("enc_secret = \"")
                        .map(|v| v.trim_end_matches('"').to_string())
                })
                .unwrap();

            // The laptop requests; the identity device approves and submits.
            let out = run(&laptop, &["device", "rotate"]);
            let id = out
                .lines()
                .find_map(|l| l.split("proposal ").nth(1))
                .unwrap()[..12]
                .to_string();
            run(&config, &["sync"]);
            let shown = run(&config, &["roster", "approve", &id]);
            assert!(shown.contains("devices of PL after it"), "{shown}");
            let ok = run(&config, &["roster", "submit", &id]);
            assert!(ok.contains("epoch 2"), "{ok}");

            // A message sealed to the new key; the laptop's next sync opens
            // it, completes the rotation and erases the old secret.
            let ua = v2.client("UA").await;
            let mut st = ua.state();
            while ua.roster().epoch() < Some(2) {
                tokio::time::timeout(Duration::from_secs(20), st.changed())
                    .await
                    .unwrap()
                    .unwrap();
            }
            ua.send(
                "plenary",
                &Message::note(Tlp::Amber, "for the rotated laptop", "b"),
            )
            .await
            .unwrap();
            let out = run(&laptop, &["sync"]);
            assert!(out.contains("rotation completed"), "{out}");
            assert!(run(&laptop, &["inbox"]).contains("for the rotated laptop"));
            let now = std::fs::read_to_string(&laptop_key).unwrap();
            assert!(!now.contains(&old_b64), "the key file has the new secret");
            for f in files(&pdir) {
                let bytes = std::fs::read(&f).unwrap();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(&old_b64),
                    "{} holds the old secret",
                    f.display()
                );
            }
            assert!(run(&laptop, &["archive", "verify", "--deep"]).contains("archive OK"));
        })
        .await;
    }
}
