//! The whole system: the demo round, everyone at once, and a relay that is
//! SIGKILLed again and again while messages stream.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt as _;
use tallinn_client::{Client, ClientError, Event};
use tallinn_common::message::{Message, MsgId, Tlp};
use tallinn_tests::deployment::{MEMBERS, OBSERVERS};
use tallinn_tests::{scenario, Deployment};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_round_every_archive_checks_out() {
    timed(async {
        let env = Env::new().await;
        let mut transcript = Vec::new();
        let report = scenario::run(&env.dep, env.addr, env.pin, &mut transcript)
            .await
            .unwrap();
        scenario::print_summary(&report, &mut transcript).unwrap();
        let text = String::from_utf8(transcript).unwrap();
        assert!(report.ok(), "{:?}\n{text}", report.failures);
        assert_eq!(report.round.len(), 6);
        assert_eq!(
            report.archives.len(),
            15,
            "14 participants + GB's second device"
        );
        let expected: BTreeSet<MsgId> = report.round.iter().copied().collect();
        for a in &report.archives {
            assert!(a.verified, "{}/{}", a.participant, a.device);
            assert_eq!(a.records, 6, "{}/{}", a.participant, a.device);
            assert_eq!(a.msg_ids, expected, "{}/{}", a.participant, a.device);
        }
        assert!(report.observer_local_refusal.contains("observer"));
        assert_eq!(
            report.observer_relay_code,
            Some(tallinn_common::wire::ErrorCode::ReadOnly)
        );
        assert!(text.contains("SE received 6 pending messages"), "{text}");
        assert!(text.contains("All 15 archives hold the same 6 messages and verify."));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_fourteen_send_concurrently_into_plenary() {
    timed(async {
        let env = Env::new().await;
        let per = 10;
        let mut clients = Vec::new();
        for (id, _) in MEMBERS.iter().chain(OBSERVERS.iter()) {
            clients.push((id.to_string(), Arc::new(env.client(id, "default").await)));
        }
        let mut tasks = Vec::new();
        for (id, c) in &clients {
            let (id, c) = (id.clone(), c.clone());
            tasks.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in 0..per {
                    match c
                        .send(
                            "plenary",
                            &Message::note(Tlp::Green, format!("{id} #{i}"), ""),
                        )
                        .await
                    {
                        Ok((m, _)) => sent.push(m),
                        Err(ClientError::NotAllowed(_)) => {
                            assert!(id == "NATO" || id == "EU", "{id} refused");
                            break;
                        }
                        Err(e) => panic!("{id}: {e}"),
                    }
                }
                sent
            }));
        }
        let mut all = BTreeSet::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        assert_eq!(all.len(), 12 * per, "12 members x {per}; observers refused");
        for (id, c) in &clients {
            c.sync(WAIT, |_| {}).await.unwrap();
            // Wait until every message is archived (sent copies + received).
            let mut st = c.state();
            tokio::time::timeout(WAIT, async {
                while c.archive().len() < all.len() as u64 {
                    st.changed().await.unwrap();
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{id} archive incomplete: {}", c.archive().len()));
            let mut ids = BTreeSet::new();
            let mut n = 0;
            c.archive()
                .for_each(|r| {
                    ids.insert(r.msg_id);
                    n += 1;
                    Ok(())
                })
                .unwrap();
            assert_eq!(ids, all, "{id}: same set");
            assert_eq!(n, all.len(), "{id}: each once");
            assert_unique_subjects(c, id);
            let v = c
                .archive()
                .verify(&env.dep.roster, &env.dep.id(id), false, |_| {})
                .unwrap();
            assert_eq!(v.first_error, None, "{id}");
        }
        for (_, c) in clients {
            c.close().await;
        }
    })
    .await;
}

/// No message content twice in an archive (a resend sealed again under a
/// new msg_id would pass a msg_id check).
fn assert_unique_subjects(c: &Client, id: &str) {
    let mut subjects = BTreeSet::new();
    c.archive()
        .for_each(|r| {
            assert!(
                subjects.insert(r.message.subject.clone()),
                "{id}: {} twice",
                r.message.subject
            );
            Ok(())
        })
        .unwrap();
}

/// The relay binary as a child process on a fixed loopback port.
struct ChildRelay(Child);

impl ChildRelay {
    fn start(dep: &Deployment) -> ChildRelay {
        let mut child = Command::new(bin("tallinn-relay"))
            .arg("run")
            .arg("--config")
            .arg(dep.dir.join("relay.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("relay starts");
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if !sent && line.starts_with("tallinn-relay listening on") {
                    let _ = tx.send(());
                    sent = true;
                }
            }
        });
        rx.recv_timeout(WAIT).expect("relay listening");
        ChildRelay(child)
    }

    fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for ChildRelay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_sigkill_loop_loses_and_duplicates_nothing() {
    timed(async {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dep = Deployment::create(&dir.path().join("deploy"), port).unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut relay = Some(ChildRelay::start(&dep));
        let pin_text = std::fs::read_to_string(dep.dir.join("UA/client.toml")).unwrap();
        let pin_hex = pin_text
            .lines()
            .find_map(|l| l.strip_prefix("relay_pin = \""))
            .unwrap()
            .trim_end_matches('"');
        let pin: [u8; 32] = hex::decode(pin_hex).unwrap().try_into().unwrap();
        let settings = |id: &str| {
            let mut s = dep.settings(id, "default", addr, pin).unwrap();
            s.send_timeout = Duration::from_secs(3);
            s.max_backoff = Duration::from_millis(500);
            s
        };

        // Three senders stream into plenary; every Accepted is recorded.
        let accepted: Arc<Mutex<Vec<MsgId>>> = Arc::new(Mutex::new(Vec::new()));
        let (tick_tx, mut tick_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let senders = ["UA", "EE", "PL"];
        let mut clients = Vec::new();
        for s in senders {
            clients.push(Arc::new(Client::connect(settings(s)).await.unwrap()));
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (s, c) in senders.iter().zip(&clients) {
            let (s, c, stop) = (s.to_string(), c.clone(), stop.clone());
            let mut events = c.events().unwrap();
            let accepted = accepted.clone();
            let tick = tick_tx.clone();
            // Record acceptances as the client reports them (also for resends).
            tasks.push(tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    if std::env::var_os("E2E_DEBUG").is_some()
                        && !matches!(ev, Event::Accepted { .. } | Event::Message(_))
                    {
                        eprintln!("event: {ev:?}");
                    }
                    if let Event::Accepted { msg_id, .. } = ev {
                        accepted.lock().unwrap().push(msg_id);
                        let _ = tick.send(());
                    }
                }
            }));
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // Paced by acceptance; while the relay is down each
                    // message waits in the outbox (send times out after 3 s).
                    match c
                        .send(
                            "plenary",
                            &Message::note(Tlp::Green, format!("{s} stream {i}"), "x"),
                        )
                        .await
                    {
                        Ok(_) | Err(ClientError::Queued { .. }) => {}
                        Err(e) => panic!("{s}: {e}"),
                    }
                    i += 1;
                }
            }));
        }

        // Kill the relay five times, each after a random number of further
        // acceptances (an event, not a timer), and restart it on the same data.
        let mut rng = rand::rng();
        for round in 0..5 {
            let wait_for = rng.random_range(10..60);
            for _ in 0..wait_for {
                tokio::time::timeout(WAIT, tick_rx.recv())
                    .await
                    .expect("progress")
                    .unwrap();
            }
            relay.take().unwrap().kill9();
            eprintln!(
                "relay killed (round {round}) after {} acceptances",
                accepted.lock().unwrap().len()
            );
            relay = Some(ChildRelay::start(&dep));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Let every outbox drain against the last relay.
        for (s, c) in senders.iter().zip(&clients) {
            tokio::time::timeout(WAIT, async {
                loop {
                    if c.outbox().is_empty() {
                        break;
                    }
                    let _ = c.sync(Duration::from_secs(5), |_| {}).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{s} outbox did not drain"));
        }
        for c in &clients {
            c.close().await;
        }
        drop(clients);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let accepted: BTreeSet<MsgId> = accepted.lock().unwrap().iter().copied().collect();
        assert!(accepted.len() >= 50, "{} accepted", accepted.len());

        // Every recipient has every accepted message exactly once.
        let mut checked = HashMap::new();
        for (id, _) in MEMBERS.iter().chain(OBSERVERS.iter()) {
            let c = Client::connect(settings(id)).await.unwrap();
            c.sync(WAIT, |_| {}).await.unwrap();
            let mut ids = Vec::new();
            c.archive()
                .for_each(|r| {
                    ids.push(r.msg_id);
                    Ok(())
                })
                .unwrap();
            let set: BTreeSet<MsgId> = ids.iter().copied().collect();
            assert_eq!(set.len(), ids.len(), "{id}: duplicates in the archive");
            // Also no duplicate *content*: a resend sealed again under a new
            // id would pass the msg_id check. (Order across relay crashes is
            // not promised: a resend after reconnect can follow a later send.)
            assert_unique_subjects(&c, id);
            let missing: Vec<_> = accepted.difference(&set).collect();
            assert!(
                missing.is_empty(),
                "{id} misses {} accepted messages",
                missing.len()
            );
            let v = c
                .archive()
                .verify(&dep.roster, &dep.id(id), false, |_| {})
                .unwrap();
            assert_eq!(v.first_error, None, "{id}");
            checked.insert(id.to_string(), ids.len());
            c.close().await;
        }
        assert_eq!(checked.len(), 14);
        drop(relay);
    })
    .await;
}

#[test]
fn shipped_roster_is_the_tallinn_deployment() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/roster.toml"
    ))
    .unwrap();
    let r = tallinn_common::roster::Roster::parse(&text).unwrap();
    assert_eq!(r.beneficiary().map(|b| b.as_str()), Some("UA"));
    let members: BTreeSet<&str> = r
        .participants()
        .filter(|p| p.role == tallinn_common::roster::Role::Member)
        .map(|p| p.id().as_str())
        .collect();
    assert_eq!(members, MEMBERS.iter().map(|(id, _)| *id).collect());
    let observers: BTreeSet<&str> = r
        .participants()
        .filter(|p| p.role == tallinn_common::roster::Role::Observer)
        .map(|p| p.id().as_str())
        .collect();
    assert_eq!(observers, OBSERVERS.iter().map(|(id, _)| *id).collect());
    for c in [
        "plenary",
        "loe-immediate",
        "loe-capability",
        "loe-sustainability",
    ] {
        let ch = r.channel(c).unwrap();
        assert_eq!(ch.members.len(), 12, "{c}");
        assert_eq!(ch.observers.len(), 2, "{c}");
    }
    let fo: Vec<&str> = r
        .channel("front-office")
        .unwrap()
        .members
        .iter()
        .map(|m| m.as_str())
        .collect();
    assert_eq!(fo, vec!["EE", "UA"]);
    let bo: Vec<&str> = r
        .channel("back-office")
        .unwrap()
        .members
        .iter()
        .map(|m| m.as_str())
        .collect();
    assert_eq!(bo, vec!["EE", "PL", "UA"]);
    assert!(
        !text.contains("sign_secret") && !text.contains("enc_secret"),
        "no secrets in config/"
    );
}
