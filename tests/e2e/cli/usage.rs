//! Help, usage errors and exit codes, `keygen`, the one rule for ids,
//! subjects and bodies.

use super::*;

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
