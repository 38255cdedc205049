//! Tampering detected and no plaintext in the files, terminal escapes
//! from the network, SIGKILL in the middle of `sync`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_and_files_hold_no_plaintext() {
    timed(async {
        let env = Env::new().await;
        let ua = env.client("UA", "default").await;
        for i in 0..5 {
            ua.send(
                "front-office",
                &Message::note(Tlp::AmberStrict, format!("SECRET-SUBJECT-{i}"), "x"),
            )
            .await
            .unwrap();
        }
        ua.close().await;
        let out = env.cli("EE", &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let dir = env
            .dep
            .participant_dir("EE")
            .join("data")
            .join("EE-default");
        // No subject in plain text anywhere in the sled files.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(14).any(|w| w == b"SECRET-SUBJECT"),
                    "{}",
                    p.display()
                );
            }
        }
        let ok = env.cli("EE", &["archive", "verify"]);
        assert!(ok.status.success(), "{}", stderr(&ok));

        // Keep a pristine copy; each scenario starts from it.
        let good = env.dir.path().join("pristine");
        copy_dir(&dir, &good);
        let scenario = |f: &dyn Fn(&Archive), fails_at: u64| {
            std::fs::remove_dir_all(&dir).unwrap();
            copy_dir(&good, &dir);
            {
                let a = Archive::open(&dir, &env.dep.id("EE")).unwrap();
                f(&a);
            }
            let out = env.cli("EE", &["archive", "verify"]);
            // Exit 3: verification ran and failed.
            assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
            assert!(
                stderr(&out).contains(&format!("record {fails_at}")),
                "{}",
                stderr(&out)
            );
        };
        // Edit one byte of record 2.
        scenario(
            &|a| {
                let mut r = a.raw_record(2).unwrap().unwrap();
                r[30] ^= 0x40;
                a.tamper_raw_record(2, Some(&r)).unwrap();
            },
            2,
        );
        // Swap records 1 and 3.
        scenario(
            &|a| {
                let r1 = a.raw_record(1).unwrap().unwrap();
                let r3 = a.raw_record(3).unwrap().unwrap();
                a.tamper_raw_record(1, Some(&r3)).unwrap();
                a.tamper_raw_record(3, Some(&r1)).unwrap();
            },
            1,
        );
        // Delete record 3.
        scenario(&|a| a.tamper_raw_record(3, None).unwrap(), 3);
        // Delete the last record (truncation).
        scenario(&|a| a.tamper_raw_record(4, None).unwrap(), 4);

        // With the archive closed, delete the last two records and the head
        // through sled directly: no head is rebuilt, verify exits 3.
        std::fs::remove_dir_all(&dir).unwrap();
        copy_dir(&good, &dir);
        {
            let db = tallinn_host::durable::retry_while_locked(|| sled::open(&dir)).unwrap();
            let t = db.open_tree("archive").unwrap();
            for i in [3u64, 4] {
                let mut k = vec![b'R'];
                k.extend_from_slice(&i.to_be_bytes());
                assert!(t.remove(k).unwrap().is_some());
            }
            assert!(t.remove(b"H").unwrap().is_some());
            db.flush().unwrap();
        }
        let out = env.cli("EE", &["archive", "verify"]);
        assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
        assert!(stderr(&out).contains("head is missing"), "{}", stderr(&out));
        // The archive still opens for reading; syncing into it is refused.
        let out = env.cli("EE", &["inbox"]);
        assert!(out.status.success(), "{}", stderr(&out));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_escapes_from_the_network_are_shown_escaped() {
    timed(async {
        let env = Env::new().await;
        let ua = env.client("UA", "default").await;
        let evil = "ok\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{202e}exe.txt";
        let mut m = Message::note(Tlp::Amber, evil, format!("line1\n{evil}\r"));
        m.attachments.push(tallinn_common::message::Attachment {
            name: format!("{evil}.pdf"),
            media_type: "text/plain\u{1b}[1m".into(),
            data: b"x".to_vec(),
        });
        let (id, _) = ua.send("front-office", &m).await.unwrap();
        ua.close().await;
        assert!(env.cli("EE", &["sync"]).status.success());
        let outputs = [
            env.cli("EE", &["inbox"]),
            env.cli("EE", &["show", &id.to_hex()]),
            env.cli("EE", &["thread", &id.to_hex()]),
            env.cli("EE", &["archive", "search", "--text", "pwned"]),
        ];
        for out in outputs {
            assert!(out.status.success(), "{}", stderr(&out));
            let text = format!("{}{}", stdout(&out), stderr(&out));
            assert!(text.contains("pwned"), "{text}");
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
                "raw control character reached the terminal: {text:?}"
            );
            assert!(text.contains("\\u{1b}"), "{text}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_sync_loses_and_duplicates_nothing() {
    timed(async {
        let env = Env::new().await;
        let ua = env.client("UA", "default").await;
        let n = 1500u64;
        let mut ids = std::collections::HashSet::new();
        for i in 0..n {
            ids.insert(
                ua.queue(
                    "back-office",
                    &Message::note(Tlp::Green, format!("bulk {i}"), "payload"),
                )
                .unwrap(),
            );
        }
        ua.sync(WAIT, |_| {}).await.unwrap();
        ua.close().await;

        // Start a sync with debug logs and kill it once it has archived some.
        let mut child = env
            .cli_command("PL", &["sync"])
            .env("RUST_LOG", "tallinn_client=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut archived = 0;
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains("archived") {
                    archived += 1;
                    if archived == 200 {
                        let _ = tx.send(());
                    }
                }
            }
        });
        rx.recv_timeout(WAIT).expect("sync made progress");
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed mid-sync");

        // Again: completes; every message exactly once; the archive verifies.
        let out = env.cli("PL", &["sync", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = env.cli("PL", &["archive", "stats", "--json"]);
        let stats: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(stats["records"], n, "{stats}");
        let out = env.cli("PL", &["archive", "search", "--limit", "5000", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
        let got: std::collections::HashSet<String> = rows
            .iter()
            .map(|r| r["msg_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(rows.len() as u64, n, "no duplicates");
        assert_eq!(got, ids.iter().map(|m| m.to_hex()).collect());
        let out = env.cli("PL", &["archive", "verify", "--deep"]);
        assert!(out.status.success(), "{}", stderr(&out));
    })
    .await;
}
