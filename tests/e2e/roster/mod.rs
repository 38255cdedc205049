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

pub(crate) mod v2;
