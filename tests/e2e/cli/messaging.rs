//! Sending, syncing and reading with `--json` everywhere, observers,
//! refused messages in the outbox, `listen`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_sync_read_and_json_everywhere() {
    timed(async {
        let env = Env::new().await;
        // UA files a request with an attachment; PL offers; EE reads.
        let att = env.dir.path().join("needs.txt");
        std::fs::write(&att, "list of needs").unwrap();
        let body_file = env.dir.path().join("request.txt");
        std::fs::write(&body_file, "Need two teams").unwrap();
        let out = env.cli(
            "UA",
            &[
                "request",
                "--channel",
                "loe-immediate",
                "--loe",
                "immediate",
                "--category",
                "incident-response",
                "--priority",
                "high",
                "--tlp",
                "AMBER",
                "--subject",
                "Energy DFIR",
                "--body-file",
                body_file.to_str().unwrap(),
                "--attach",
                att.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let req = stdout(&out).trim().to_string();
        assert_eq!(req.len(), 32);
        let out = env.cli("PL", &["sync", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["archived"], 1);
        let out = env.cli(
            "PL",
            &[
                "offer",
                "--request",
                &req[..8],
                "--tlp",
                "AMBER",
                "--subject",
                "PL team",
                "--body",
                "ready",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let offer = stdout(&out).trim().to_string();
        // UA syncs, then answers by prefix; the channel comes from its archive.
        let out = env.cli("UA", &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = env.cli(
            "UA",
            &[
                "status",
                "--about",
                &offer[..7],
                "--state",
                "in-progress",
                "--subject",
                "Accepted",
            ],
        );
        // No --tlp: an answer takes the label of what it answers.
        assert!(out.status.success(), "{}", stderr(&out));
        let status_id = stdout(&out).trim().to_string();
        let thanks = |extra: Option<&str>| {
            let mut args = vec![
                "send",
                "--channel",
                "loe-immediate",
                "--tlp",
                "GREEN",
                "--subject",
                "Thanks",
                "--body",
                "see you Thursday",
                "--reply-to",
                &req,
            ];
            args.extend(extra);
            env.cli("UA", &args)
        };
        // A lower label than the parent's needs saying so.
        let out = thanks(None);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("--tlp-downgrade"), "{}", stderr(&out));
        let out = thanks(Some("--tlp-downgrade"));
        assert!(out.status.success(), "{}", stderr(&out));
        let shown = env.cli("UA", &["show", &status_id, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&shown)).unwrap();
        assert_eq!(v["tlp"], "AMBER", "{v}");

        let out = env.cli("EE", &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("4 new"), "{}", stdout(&out));

        // Every read command with --json parses.
        for args in [
            vec!["inbox", "--json"],
            vec!["inbox", "--channel", "loe-immediate", "--json"],
            vec!["show", &req[..6], "--json"],
            vec!["thread", &offer, "--json"],
            vec!["outbox", "--json"],
            vec!["quarantine", "--json"],
            vec!["fingerprint", "--json"],
            vec!["fingerprint", "NATO", "--json"],
            vec!["roster", "show", "--json"],
            vec!["archive", "search", "--from", "PL", "--json"],
            vec![
                "archive", "search", "--kind", "request", "--tlp", "AMBER", "--json",
            ],
            vec![
                "archive",
                "search",
                "--text",
                "two teams",
                "--since",
                "2020-01-01",
                "--json",
            ],
            vec!["archive", "verify", "--json"],
            vec!["archive", "stats", "--json"],
        ] {
            let out = env.cli("EE", &args);
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
            let v: serde_json::Value = serde_json::from_str(&stdout(&out))
                .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&out)));
            if args[0] == "thread" {
                assert_eq!(
                    v.as_array().unwrap().len(),
                    4,
                    "thread has request, offer, status, reply"
                );
            }
            if args[0] == "show" {
                assert!(v["signature"].as_str().unwrap().starts_with("valid"));
                assert_eq!(v["attachments"][0]["name"], "needs.txt");
            }
        }
        // Human output too.
        let out = env.cli("EE", &["inbox"]);
        assert!(stdout(&out).contains("Energy DFIR"));
        let out = env.cli("EE", &["roster", "show"]);
        assert!(stdout(&out).contains(&env.dep.roster.fingerprint_hex()));

        // Export and verify.
        let export = env.dir.path().join("ee.jsonl");
        let out = env.cli(
            "EE",
            &["archive", "export", "--out", export.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(&export).unwrap().lines().count(), 5);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&export).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the export holds TLP:RED plaintext");
        }
        // Never over an existing file without --force.
        let out = env.cli(
            "EE",
            &["archive", "export", "--out", export.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
        let out = env.cli(
            "EE",
            &[
                "archive",
                "export",
                "--force",
                "--out",
                export.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let out = env.cli("EE", &["archive", "verify", "--deep"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("archive OK: 4 records"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_cli_send_fails_before_sending() {
    timed(async {
        let env = Env::new().await;
        let out = env.cli(
            "NATO",
            &[
                "send",
                "--channel",
                "plenary",
                "--tlp",
                "GREEN",
                "--subject",
                "hi",
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("observer"), "{}", stderr(&out));
        assert_eq!(
            env.relay
                .as_ref()
                .unwrap()
                .metrics()
                .sends_rejected
                .get(tallinn_common::wire::ErrorCode::ReadOnly),
            0,
            "nothing reached the relay"
        );
        let out = env.cli("NATO", &["outbox", "--json"]);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap(),
            serde_json::json!([])
        );
        // Non-member of a channel: error too.
        let out = env.cli(
            "PL",
            &[
                "send",
                "--channel",
                "front-office",
                "--tlp",
                "GREEN",
                "--subject",
                "hi",
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("not a member"), "{}", stderr(&out));
    })
    .await;
}

/// Item 17: a refusal the client does not retry is never silent. The
/// message stays in the outbox marked refused (code and reason), is not
/// sent again, and leaves only by `outbox resend` (sealed again, then
/// delivered) or `outbox drop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_messages_stay_in_the_outbox_until_resent_or_dropped() {
    timed(async {
        // This relay takes smaller messages than the clients allow.
        let mut env = Env::with_limits(tallinn_relay::Limits {
            max_message_len: 4096,
            ..limits()
        })
        .await;
        let body = env.dir.path().join("big.txt");
        std::fs::write(&body, "x".repeat(6000)).unwrap();
        let send = |subject: &str| {
            env.cli(
                "EE",
                &[
                    "send",
                    "--channel",
                    "front-office",
                    "--tlp",
                    "GREEN",
                    "--subject",
                    subject,
                    "--body-file",
                    body.to_str().unwrap(),
                ],
            )
        };
        for subject in ["to resend", "to drop"] {
            let out = send(subject);
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            assert!(stderr(&out).contains("too_large"), "{}", stderr(&out));
        }
        let out = env.cli("EE", &["outbox", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        for r in rows {
            assert_eq!(r["refused"]["code"], "too_large", "{r}");
            assert!(r["refused"]["reason"].as_str().unwrap().contains("4096"));
        }
        let id_of = |subject: &str| {
            rows.iter().find(|r| r["subject"] == subject).unwrap()["msg_id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let (resend, drop) = (id_of("to resend"), id_of("to drop"));
        let text = stdout(&env.cli("EE", &["outbox"]));
        assert!(text.contains("REFUSED too_large"), "{text}");
        // A sync does not send refused messages again, and says so.
        let too_large = || {
            env.relay
                .as_ref()
                .unwrap()
                .metrics()
                .sends_rejected
                .get(tallinn_common::wire::ErrorCode::TooLarge)
        };
        let before = too_large();
        assert!(before >= 2, "{before}");
        let out = env.cli("EE", &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("2 refused"), "{}", stdout(&out));
        assert_eq!(too_large(), before, "refused entries are not resent");
        // Drop one.
        let out = env.cli("EE", &["outbox", "drop", &drop[..10]]);
        assert!(out.status.success(), "{}", stderr(&out));
        // The operator raises the limit; the other is sealed again and sent.
        env.relay.take().unwrap().shutdown().await;
        let relay = env
            .dep
            .start_relay_with(Some(env.addr.port()), limits())
            .await
            .unwrap();
        env.relay = Some(relay);
        let out = env.cli("EE", &["outbox", "resend", &resend[..10]]);
        assert!(out.status.success(), "{}", stderr(&out));
        let new_id = stdout(&out).trim().to_string();
        assert_eq!(new_id.len(), 32);
        assert_ne!(new_id, resend);
        let out = env.cli("EE", &["sync", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["sent"], 1, "{v}");
        assert_eq!(v["outbox"], 0, "{v}");
        let out = env.cli("UA", &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let inbox = stdout(&env.cli("UA", &["inbox", "--json"]));
        assert!(inbox.contains(&new_id), "{inbox}");
        assert!(!inbox.contains("to drop"), "{inbox}");
        let out = env.cli("EE", &["outbox", "drop", "ffff"]);
        assert_eq!(out.status.code(), Some(1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_messages_as_they_arrive() {
    timed(async {
        let env = Env::new().await;
        let mut child = env
            .cli_command("EE", &["listen", "--count", "2", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("listening as EE") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        // The listener announces on stderr once it is connected.
        ready_rx.recv_timeout(WAIT).expect("listener connected");
        let ua = env.client("UA", "default").await;
        let (a, _) = ua
            .send("front-office", &Message::note(Tlp::Green, "one", ""))
            .await
            .unwrap();
        let (b, _) = ua
            .send("front-office", &Message::note(Tlp::Green, "two", ""))
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let line = rx.recv_timeout(WAIT).expect("listen printed a message");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            got.push(v["msg_id"].as_str().unwrap().to_string());
        }
        assert_eq!(got, vec![a.to_hex(), b.to_hex()]);
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "listen --count 2 exits 0");
        ua.close().await;
    })
    .await;
}
