//! Running the relay: shutdown, metrics and health, roster reloads
//! (control and SIGHUP), SIGKILL durability, the operator CLI.

use super::*;

#[tokio::test]
async fn graceful_shutdown_closes_sessions_with_shutting_down() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        let env = w.seal("UA", "plenary", "last words");
        assert!(matches!(
            ua.send_env(env.as_bytes()).await,
            Frame::Accepted { .. }
        ));
        let started = std::time::Instant::now();
        relay.server.shutdown().await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "prompt shutdown"
        );
        let f = ua.read().await;
        assert_eq!(
            f.as_ref().and_then(code_of),
            Some(ErrorCode::ShuttingDown),
            "{f:?}"
        );
        assert_eq!(ua.closed_code().await, Some(ErrorCode::ShuttingDown));
    })
    .await;
}

#[tokio::test]
async fn metrics_and_healthz_are_served() {
    timed(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        ua.send_env(w.seal("UA", "plenary", "m").as_bytes()).await;
        let addr = relay.server.metrics_addr().unwrap();
        for (path, want) in [
            ("/metrics", "tallinn_sends_accepted_total 1"),
            ("/healthz", "ok"),
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).await.unwrap();
            assert!(body.starts_with("HTTP/1.1 200"), "{body}");
            assert!(body.contains(want), "{path}: {body}");
        }
        let text = relay.server.render_metrics();
        assert!(
            text.contains("tallinn_inbox_depth{participant=\"NATO\"} 1"),
            "{text}"
        );
        assert!(text.contains("tallinn_flush_seconds_count"));
        relay.server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn roster_reload_disconnects_removed_participant() {
    timed(async {
        let w = World::tallinn();
        let relay = TestRelay::start(&w, test_limits()).await;
        let (dk, _) = login(relay.addr(), relay.pin, w.id("DK"), "d").await;
        let (mut ee, _) = login(relay.addr(), relay.pin, w.id("EE"), "d").await;
        // An invalid roster is refused and the old one kept.
        let path = relay.dir.path().join("roster.toml");
        std::fs::write(&path, "this is not a roster").unwrap();
        assert!(relay.server.reload_roster().is_err());
        // Remove DK (and its keys) from the roster file.
        // Keep everyone else's keys: the original text minus DK's entry.
        let text: String = w
            .roster_text
            .split("\n\n")
            .filter(|block| !block.contains("id = \"DK\""))
            .collect::<Vec<_>>()
            .join("\n\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(relay.server.reload_roster().unwrap(), 1);
        assert_eq!(dk.closed_code().await, Some(ErrorCode::UnknownParticipant));
        // EE unaffected.
        let (mut ua, _) = login(relay.addr(), relay.pin, w.id("UA"), "d").await;
        ua.send_env(w.seal("UA", "front-office", "x").as_bytes())
            .await;
        receive(&mut ee, 1, true).await;
        // DK cannot log in any more.
        let mut again = open(relay.addr(), relay.pin).await;
        assert_eq!(
            code_of(&again.auth_as(w.id("DK"), "d").await),
            Some(ErrorCode::UnknownParticipant)
        );
        relay.server.shutdown().await;
    })
    .await;
}

/// The child-process tests: SIGKILL durability, SIGHUP reload, SIGTERM exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_survive_sigkill() {
    timed(async {
        let w = World::tallinn();
        let dir = tempfile::tempdir().unwrap();
        write_child_config(dir.path(), &w);
        let relay = ChildRelay::start(dir.path());
        let (mut ua, _) = login(relay.addr, relay.pin, w.id("UA"), "d").await;
        let mut ids = Vec::new();
        for i in 0..50 {
            let env = w.seal("UA", "plenary", &format!("durable {i}"));
            ua.write(&Frame::Send {
                envelope: env.as_bytes().to_vec(),
            })
            .await;
            ids.push(env.msg_id());
        }
        let mut accepted = 0;
        while accepted < 50 {
            ua.expect("Accepted", |f| matches!(f, Frame::Accepted { .. }))
                .await;
            accepted += 1;
        }
        relay.kill9();
        let relay = ChildRelay::start(dir.path());
        for who in ["EE", "NATO", "PL"] {
            let (mut r, pending) = login(relay.addr, relay.pin, w.id(who), "d").await;
            assert_eq!(pending, 50, "{who}");
            let got: Vec<_> = receive(&mut r, 50, true)
                .await
                .into_iter()
                .map(|g| g.1)
                .collect();
            assert_eq!(got, ids, "{who}");
        }
        // SIGTERM: a clean exit with status 0.
        relay.signal("TERM");
        assert!(relay.wait_exit());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_roster() {
    timed(async {
        let w = World::tallinn();
        let dir = tempfile::tempdir().unwrap();
        write_child_config(dir.path(), &w);
        let relay = ChildRelay::start(dir.path());
        let (dk, _) = login(relay.addr, relay.pin, w.id("DK"), "d").await;
        let text: String = w
            .roster_text
            .split("\n\n")
            .filter(|block| !block.contains("id = \"DK\""))
            .collect::<Vec<_>>()
            .join("\n\n");
        std::fs::write(dir.path().join("roster.toml"), text).unwrap();
        relay.signal("HUP");
        assert_eq!(dk.closed_code().await, Some(ErrorCode::UnknownParticipant));
        relay.signal("TERM");
        assert!(relay.wait_exit());
    })
    .await;
}

fn relay_cli(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tallinn-relay"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("tallinn-relay runs")
}

#[test]
fn cli_gen_cert_check_config_and_enrol() {
    let w = World::tallinn();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // gen-cert prints the pin; refuses to overwrite.
    let out = relay_cli(
        &[
            "gen-cert",
            "--cert",
            "relay-cert.pem",
            "--key",
            "relay-key.pem",
        ],
        d,
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("relay_pin = \""), "{stdout}");
    let again = relay_cli(&["gen-cert"], d);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).starts_with("error: "));
    let pin = relay_cli(&["pin", "--cert", "relay-cert.pem"], d);
    assert!(String::from_utf8_lossy(&pin.stdout)
        .contains(stdout.lines().find(|l| l.starts_with("relay_pin")).unwrap()));

    // The shipped example config validates against a roster.
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../config/relay.toml"),
        d.join("relay.toml"),
    )
    .unwrap();
    std::fs::write(d.join("roster.toml"), &w.roster_text).unwrap();
    let out = relay_cli(&["check-config", "--config", "relay.toml"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&w.roster.fingerprint_hex()), "{text}");
    assert!(text.contains("NATO") && text.contains("observer"));

    // Enrol a new participant into plenary; the roster stays valid.
    let lt = tallinn_common::identity::Identity::generate(
        tallinn_common::identity::ParticipantId::new("LT").unwrap(),
    );
    std::fs::write(d.join("lt.toml"), lt.roster_entry("Lithuania", "member")).unwrap();
    let out = relay_cli(
        &[
            "enrol",
            "--roster",
            "roster.toml",
            "--entry",
            "lt.toml",
            "--channel",
            "back-office",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&lt.fingerprint().to_string()));
    let r = tallinn_common::roster::Roster::parse(
        &std::fs::read_to_string(d.join("roster.toml")).unwrap(),
    )
    .unwrap();
    assert!(r.may_post("LT", "back-office"));
    assert!(r.may_post("LT", "plenary"), "\"*\" includes the new member");

    // An invalid config is refused with a message naming the field.
    std::fs::write(d.join("bad.toml"), "[limits]\nsend_burst = 0\n").unwrap();
    let out = relay_cli(&["check-config", "--config", "bad.toml"], d);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("send_burst"));
}
