//! The relay as an operator runs it: under a `Type=notify` harness
//! (READY only once it listens, WATCHDOG, STOPPING), and a backup taken
//! while sends flow, restored into a fresh directory.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tallinn_client::Client;
use tallinn_common::message::{Message, MsgId, Tlp};
use tallinn_tests::Deployment;

use crate::util::*;

/// The next notification from the relay (bounded wait).
fn next_state(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_type_notify_the_relay_is_ready_only_once_it_listens() {
    timed(async {
        let dir = tempfile::tempdir().unwrap();
        let dep = Deployment::create(&dir.path().join("deploy"), 0).unwrap();
        let notify_path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&notify_path).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut relay = Command::new(bin("tallinn-relay"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(dep.dir.join("relay.toml"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = relay.stderr.take().unwrap();
        let logs = std::thread::spawn(move || {
            BufReader::new(err)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });

        // The first word from the relay is READY, with the address bound.
        let sock = tokio::task::spawn_blocking(move || {
            let first = next_state(&sock);
            (sock, first)
        });
        let (sock, first) = sock.await.unwrap();
        assert!(first.starts_with("READY=1"), "{first:?}");
        let addr: std::net::SocketAddr = first
            .split("listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // It listens at that moment: a session comes up at once.
        let pin = tallinn_relay::tls::TlsIdentity::from_pem_files(
            &dep.dir.join("relay-cert.pem"),
            &dep.dir.join("relay-key.pem"),
        )
        .unwrap()
        .pin()
        .unwrap();
        let ee = Client::connect(dep.settings("EE", "default", addr, pin).unwrap())
            .await
            .expect("a session right after READY");
        ee.close().await;

        // The watchdog is fed while the store answers.
        let (sock, watchdog) = tokio::task::spawn_blocking(move || {
            let s = next_state(&sock);
            (sock, s)
        })
        .await
        .unwrap();
        assert_eq!(watchdog, "WATCHDOG=1");

        // SIGTERM: STOPPING, then a clean exit.
        assert!(Command::new("kill")
            .args(["-TERM", &relay.id().to_string()])
            .status()
            .unwrap()
            .success());
        let stopping = tokio::task::spawn_blocking(move || loop {
            let s = next_state(&sock);
            if s != "WATCHDOG=1" {
                return s;
            }
        })
        .await
        .unwrap();
        assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
        let status = tokio::task::spawn_blocking(move || relay.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "{status:?}");
        // JSON logs: one object per line.
        let logs = logs.join().unwrap();
        assert!(!logs.is_empty());
        for line in logs.iter().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        }
        assert!(
            logs.iter().any(|l| l.contains("\"relay listening\"")),
            "{logs:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_sends_flow_restores_every_accepted_message() {
    timed(async {
        let mut env = Env::new().await;
        let accepted: Arc<Mutex<Vec<(MsgId, Instant)>>> = Arc::default();
        let (count_tx, count) = tokio::sync::watch::channel(0usize);
        let count_tx = Arc::new(count_tx);
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for who in ["UA", "PL"] {
            let client = env.client(who, "default").await;
            let accepted = accepted.clone();
            let count_tx = count_tx.clone();
            let stop = stop.clone();
            senders.push(tokio::spawn(async move {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let m = Message::note(Tlp::Amber, format!("{who} {i}"), "flowing");
                    let (id, _) = client.send("back-office", &m).await.unwrap();
                    let n = {
                        let mut a = accepted.lock().unwrap();
                        a.push((id, Instant::now()));
                        a.len()
                    };
                    count_tx.send_replace(n);
                    i += 1;
                }
                client.close().await;
            }));
        }
        let wait_for = |n: usize| {
            let mut count = count.clone();
            async move {
                count.wait_for(|c| *c >= n).await.unwrap();
            }
        };
        tokio::time::timeout(WAIT, wait_for(40)).await.unwrap();

        let backup = env.dir.path().join("backups").join("now");
        let started = Instant::now();
        let config = env.dep.dir.join("relay.toml");
        let b = backup.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(bin("tallinn-relay"))
                .args(["backup", "--config"])
                .arg(&config)
                .arg("--out")
                .arg(&b)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("from the running relay"),
            "{}",
            stdout(&out)
        );
        let n_before = accepted.lock().unwrap().len();
        tokio::time::timeout(WAIT, wait_for(n_before + 20))
            .await
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.await.unwrap();
        }
        let must_have: Vec<MsgId> = accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at < started)
            .map(|(id, _)| *id)
            .collect();
        assert!(must_have.len() >= 40);

        // Restore: the relay stopped, the copy put in place of a fresh data
        // directory, the relay started on it.
        env.stop_relay().await;
        let restored = env.dir.path().join("restored-data");
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&backup)
            .arg(&restored)
            .status()
            .unwrap()
            .success());
        let mut cfg = env.dep.relay_config(None).unwrap();
        cfg.data_dir = restored;
        cfg.limits = limits();
        let relay = tallinn_relay::Server::spawn(cfg).await.unwrap();
        let ee = Client::connect(
            env.dep
                .settings("EE", "default", relay.local_addr(), relay.spki_pin())
                .unwrap(),
        )
        .await
        .unwrap();
        ee.sync(WAIT, |_| {}).await.unwrap();
        for id in &must_have {
            assert!(
                ee.archive().lookup(id).unwrap().is_some(),
                "message {id}, accepted before the backup began, is missing after the restore"
            );
        }
        // The restored relay goes on numbering after the copy: a new
        // message gets a seq no device has seen.
        let ua = Client::connect(
            env.dep
                .settings("UA", "default", relay.local_addr(), relay.spki_pin())
                .unwrap(),
        )
        .await
        .unwrap();
        let (_, seq) = ua
            .send(
                "back-office",
                &Message::note(Tlp::Amber, "after restore", "x"),
            )
            .await
            .unwrap();
        let copied_up_to: u64 = stdout(&out)
            .split("up to seq ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}", stdout(&out)));
        assert!(copied_up_to >= must_have.len() as u64, "{}", stdout(&out));
        assert!(
            seq > copied_up_to,
            "seq {seq} reused (the copy went up to {copied_up_to})"
        );
        ee.sync(WAIT, |_| {}).await.unwrap();
        ua.close().await;
        ee.close().await;
        relay.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_the_build_and_roster_and_a_bind_error_names_its_key() {
    timed(async {
        let env = Env::new().await;
        let relay = env.relay.as_ref().unwrap();
        let text = relay.render_metrics();
        assert!(
            text.contains(&format!(
                "tallinn_build_info{{version=\"{}\",protocol=\"tallinn/1\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "tallinn_roster_info{{roster=\"v1\",fingerprint=\"{}\"}} 1",
                env.dep.roster.fingerprint_hex()
            )),
            "{text}"
        );
        // The relay's port is taken: the error names `listen`.
        let mut cfg = env.dep.relay_config(Some(env.addr.port())).unwrap();
        cfg.data_dir = env.dir.path().join("second-relay");
        let e = tallinn_relay::Server::spawn(cfg)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot bind listen = \"127.0.0.1:"), "{e}");
        // And a taken metrics port names `metrics_listen`.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut cfg = env.dep.relay_config(None).unwrap();
        cfg.data_dir = env.dir.path().join("third-relay");
        cfg.metrics_listen = Some(taken.local_addr().unwrap());
        let e = tallinn_relay::Server::spawn(cfg)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot bind metrics_listen"), "{e}");
    })
    .await;
}

/// `tallinn-relay gen-receipt-key`: a private key file, its public half
/// printed as `relay_key`, never overwritten; and a relay running a roster
/// log refuses to start with a receipt key that is not the roster's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_key_is_made_once_and_a_relay_refuses_a_key_not_in_its_roster() {
    use std::os::unix::fs::PermissionsExt;
    timed(async {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("receipt.key");
        let o = run_bin(
            "tallinn-relay",
            &["gen-receipt-key", "--out", key.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        let line = out
            .lines()
            .find(|l| l.starts_with("relay_key = \""))
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(line.len(), "relay_key = \"\"".len() + 64, "{line}");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let before = std::fs::read(&key).unwrap();
        let o = run_bin(
            "tallinn-relay",
            &["gen-receipt-key", "--out", key.to_str().unwrap()],
        );
        assert!(!o.status.success());
        assert!(stderr(&o).contains("never overwritten"), "{}", stderr(&o));
        assert_eq!(std::fs::read(&key).unwrap(), before);

        // A version-2 relay whose receipt key file is replaced by another.
        let mut v2 = crate::roster::v2::V2::new(limits()).await;
        v2.env.stop_relay().await;
        let data = v2.env.dep.dir.join("relay-data");
        std::fs::remove_file(data.join("receipt.key")).unwrap();
        std::fs::copy(&key, data.join("receipt.key")).unwrap();
        let err = v2
            .env
            .dep
            .start_relay_with(None, limits())
            .await
            .err()
            .expect("the relay refuses to start");
        let text = format!("{err:#}");
        assert!(text.contains("relay_key"), "{text}");
    })
    .await;
}
