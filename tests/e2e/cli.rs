//! The `tallinn` CLI as a user runs it: help, exit codes, JSON output,
//! observers, tampering, and a SIGKILL in the middle of a sync.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use tallinn_client::archive::Archive;
use tallinn_common::message::{Message, Tlp};

use crate::util::*;

const COMMANDS: &[&[&str]] = &[
    &[],
    &["init"],
    &["agent"],
    &["keygen"],
    &["fingerprint"],
    &["roster"],
    &["roster", "show"],
    &["send"],
    &["request"],
    &["offer"],
    &["status"],
    &["sync"],
    &["listen"],
    &["inbox"],
    &["show"],
    &["thread"],
    &["outbox"],
    &["quarantine"],
    &["quarantine", "retry"],
    &["quarantine", "purge"],
    &["attachment", "save"],
    &["outbox", "retry"],
    &["archive"],
    &["archive", "search"],
    &["archive", "export"],
    &["archive", "verify"],
    &["archive", "stats"],
];

#[test]
fn help_for_every_command_and_usage_errors_exit_2() {
    for cmd in COMMANDS {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let out = run_bin("tallinn", &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("Usage"), "{args:?}");
    }
    let out = run_bin("tallinn", &["inbox", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    // TLP is mandatory on every message.
    let out = run_bin(
        "tallinn",
        &["send", "--channel", "plenary", "--subject", "s"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--tlp"));
    let out = run_bin(
        "tallinn",
        &[
            "send",
            "--channel",
            "plenary",
            "--subject",
            "s",
            "--tlp",
            "PURPLE",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    // A runtime error is exit 1 with "error: ".
    let out = run_bin(
        "tallinn",
        &["--config", "/nonexistent/client.toml", "inbox"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).matches("No such file").count(),
        1,
        "each cause once: {}",
        stderr(&out)
    );
}

#[test]
fn keygen_writes_0600_and_prints_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("lt.key");
    let out = run_bin(
        "tallinn",
        &[
            "keygen",
            "--id",
            "LT",
            "--name",
            "Lithuania",
            "--out",
            key.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = stdout(&out);
    assert!(
        text.contains("[[participant]]") && text.contains("id = \"LT\""),
        "{text}"
    );
    assert!(text.contains("# fingerprint: "));
    // The printed entry is a valid roster entry as printed.
    let roster = format!("{text}\n[[channel]]\nid = \"c\"\nmembers = [\"LT\"]\n");
    tallinn_common::roster::Roster::parse(&roster).unwrap();
    // Never overwrites.
    let again = run_bin(
        "tallinn",
        &["keygen", "--id", "LT", "--out", key.to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(1));
    // Passphrase-protected, passphrase from the environment.
    let pkey = dir.path().join("lv.key");
    let out = std::process::Command::new(bin("tallinn"))
        .args([
            "keygen",
            "--id",
            "LV",
            "--passphrase",
            "--out",
            pkey.to_str().unwrap(),
        ])
        .env("TALLINN_PASSPHRASE", "correct horse battery staple")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&pkey).unwrap().contains("argon2id"));
}

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

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    tallinn_host::durable::private_dir(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
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

/// Issue 12 item 2: one rule for every id a person gives (full id or a
/// unique prefix of at least 6 hex digits; too short, unknown and
/// ambiguous each say so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_id_taking_command_follows_one_rule() {
    timed(async {
        let env = Env::new().await;
        let out = env.cli(
            "UA",
            &[
                "send",
                "--channel",
                "front-office",
                "--tlp",
                "AMBER",
                "--subject",
                "first",
                "--body",
                "b",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let first = stdout(&out).trim().to_string();
        let out = env.cli("EE", &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let six = &first[..6];
        // A six-digit prefix works for show, thread, --reply-to, offer
        // --request and status --about.
        for args in [
            vec!["show", six],
            vec!["thread", six],
            vec![
                "send",
                "--channel",
                "front-office",
                "--tlp",
                "AMBER",
                "--subject",
                "re",
                "--body",
                "b",
                "--reply-to",
                six,
            ],
            vec![
                "offer",
                "--request",
                six,
                "--tlp",
                "AMBER",
                "--subject",
                "offer",
                "--body",
                "b",
            ],
            vec![
                "status",
                "--about",
                six,
                "--state",
                "acknowledged",
                "--tlp",
                "AMBER",
                "--subject",
                "ack",
                "--body",
                "b",
            ],
        ] {
            let out = env.cli("EE", &args);
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        }
        // Too short, unknown, not hex: each says which.
        let unknown = if first.starts_with("ffffff") {
            "eeeeee"
        } else {
            "ffffff"
        };
        for (arg, says) in [
            (&first[..5], "too short: give at least 6 hex digits"),
            (unknown, "no message ffffff in the archive"),
            ("zzzzzz", "is not a message id"),
        ] {
            let says = says.replace("ffffff", unknown);
            for args in [vec!["show", arg], vec!["thread", arg]] {
                let out = env.cli("EE", &args);
                assert!(!out.status.success(), "{args:?}");
                assert!(stderr(&out).contains(&says), "{args:?}: {}", stderr(&out));
            }
            let out = env.cli(
                "EE",
                &[
                    "send",
                    "--channel",
                    "front-office",
                    "--tlp",
                    "AMBER",
                    "--subject",
                    "x",
                    "--body",
                    "b",
                    "--reply-to",
                    arg,
                ],
            );
            assert!(!out.status.success());
        }
        // The outbox too: an unknown prefix is named as such.
        let out = env.cli("EE", &["outbox", "drop", unknown]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!("no message {unknown} in the outbox")),
            "{}",
            stderr(&out)
        );
    })
    .await;
}

/// Issue 12 items 5 and 7 (parts): an empty subject is refused before
/// anything is queued; `--body-file -` reads standard input; `keygen`
/// creates a missing folder for its key file (private).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_subjects_are_refused_bodies_come_from_stdin_and_keygen_makes_its_folder() {
    timed(async {
        let env = Env::new().await;
        let out = env.cli(
            "UA",
            &[
                "send",
                "--channel",
                "front-office",
                "--tlp",
                "GREEN",
                "--subject",
                "  ",
                "--body",
                "b",
            ],
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("the subject is empty"),
            "{}",
            stderr(&out)
        );
        let outbox = env.cli("UA", &["outbox", "--json"]);
        let queued: serde_json::Value = serde_json::from_str(&stdout(&outbox)).unwrap();
        assert_eq!(
            queued.as_array().map(Vec::len),
            Some(0),
            "nothing was queued"
        );

        let mut child = env
            .cli_command(
                "UA",
                &[
                    "send",
                    "--channel",
                    "front-office",
                    "--tlp",
                    "GREEN",
                    "--subject",
                    "from stdin",
                    "--body-file",
                    "-",
                ],
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"a body piped in")
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(env.cli("EE", &["sync"]).status.success());
        let shown = env.cli("EE", &["show", &id[..8]]);
        assert!(
            stdout(&shown).contains("a body piped in"),
            "{}",
            stdout(&shown)
        );

        let fresh = env
            .dir
            .path()
            .join("fresh-home/.config/tallinn/identity.key");
        let out = run_bin(
            "tallinn",
            &["keygen", "--id", "LT", "--out", fresh.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(fresh.exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fresh.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    })
    .await;
}
