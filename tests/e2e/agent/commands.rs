//! Every command with the agent running (beside `listen`) and without
//! it; a queued send's exit code 75.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_agent_every_command_works_beside_listen_and_without_it_directly() {
    timed(async {
        let env = Env::new().await;
        let run = runtime_dir(&env);
        let (mut agent, _agent_err) =
            spawn_until(cmd(&env, &run, "EE", &["agent"]), "agent for EE");
        let socket = std::fs::read_dir(run.join("tallinn"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "sock"))
            .expect("the agent's socket");
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&socket), 0o600);
            assert_eq!(mode(&run.join("tallinn")), 0o700);
        }

        // `listen` attaches to the agent's stream (no lock error).
        let (listen, _) = spawn_until(
            cmd(&env, &run, "EE", &["listen", "--count", "2", "--json"]),
            "through the agent",
        );

        // And one for people, on a narrow terminal.
        let (narrow, _) = {
            let mut c = cmd(&env, &run, "EE", &["listen", "--count", "2"]);
            c.env("COLUMNS", "50");
            spawn_until(c, "through the agent")
        };

        // A second agent for the same device refuses clearly.
        let second = out(cmd(&env, &run, "EE", &["agent"]));
        assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
        assert!(
            stderr(&second).contains("already runs")
                && stderr(&second).contains(&format!("pid {}", agent.id())),
            "{}",
            stderr(&second)
        );

        // Sends from another process go through the agent's session.
        let sent = out(cmd(
            &env,
            &run,
            "EE",
            &send_args("from the cli via the agent"),
        ));
        assert!(sent.status.success(), "{}", stderr(&sent));
        let mine = stdout(&sent).trim().to_string();
        assert_eq!(mine.len(), 32);

        // Another participant's message arrives live.
        let ua = env.client("UA", "default").await;
        let (theirs, _) = ua
            .send(
                "front-office",
                &Message::note(Tlp::AmberStrict, "live to the agent", "hello EE"),
            )
            .await
            .unwrap();
        let second_live = ua
            .send(
                "front-office",
                &Message::note(Tlp::Green, "second live", "again"),
            )
            .await
            .unwrap();
        let _ = second_live;
        let listened = tokio::task::spawn_blocking(move || {
            let mut l = listen;
            let mut out = Vec::new();
            std::io::Read::read_to_end(l.stdout.as_mut().unwrap(), &mut out).unwrap();
            let status = l.wait().unwrap();
            (status, out)
        })
        .await
        .unwrap();
        assert!(listened.0.success());
        let narrow = tokio::task::spawn_blocking(move || {
            let mut n = narrow;
            let mut out = Vec::new();
            std::io::Read::read_to_end(n.stdout.as_mut().unwrap(), &mut out).unwrap();
            let status = n.wait().unwrap();
            (status, out)
        })
        .await
        .unwrap();
        assert!(narrow.0.success());
        let lines: Vec<String> = String::from_utf8_lossy(&narrow.1)
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        for line in &lines {
            assert!(
                line.chars().count() <= 50,
                "listen: {line:?} is wider than 50"
            );
        }
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&listened.1)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            lines
                .iter()
                .any(|v| v["msg_id"] == theirs.to_hex() && v["subject"] == "live to the agent"),
            "{lines:?}"
        );

        // The read commands, side by side with the running agent.
        let inbox = out(cmd(&env, &run, "EE", &["inbox", "--json"]));
        assert!(inbox.status.success(), "{}", stderr(&inbox));
        let rows: serde_json::Value = serde_json::from_str(&stdout(&inbox)).unwrap();
        let rows = rows.as_array().unwrap();
        assert!(
            rows.iter().any(|r| r["msg_id"] == theirs.to_hex()),
            "{rows:?}"
        );
        assert!(
            rows.iter().all(|r| r["direction"] == "received"),
            "the inbox leaves out one's own messages: {rows:?}"
        );
        let mine_rows = stdout(&out(cmd(&env, &run, "EE", &["inbox", "--mine", "--json"])));
        assert!(mine_rows.contains(&mine), "{mine_rows}");
        let all_rows = stdout(&out(cmd(&env, &run, "EE", &["inbox", "--all"])));
        assert!(
            all_rows.contains(&mine[..8]) && all_rows.contains(&theirs.to_hex()[..8]),
            "{all_rows}"
        );

        // Unread until shown.
        let unread = stdout(&out(cmd(&env, &run, "EE", &["inbox", "--unread"])));
        assert!(
            unread.contains(&format!("*{}", &theirs.to_hex()[..8])),
            "{unread}"
        );
        let show = out(cmd(&env, &run, "EE", &["show", &theirs.to_hex()[..7]]));
        assert!(show.status.success(), "{}", stderr(&show));
        assert!(stdout(&show).contains("hello EE"), "{}", stdout(&show));
        assert!(
            stdout(&show).contains("Signature valid"),
            "{}",
            stdout(&show)
        );
        let unread = stdout(&out(cmd(&env, &run, "EE", &["inbox", "--unread"])));
        assert!(!unread.contains(&theirs.to_hex()[..8]), "{unread}");

        let search = out(cmd(
            &env,
            &run,
            "EE",
            &["archive", "search", "--text", "live", "--json"],
        ));
        assert!(search.status.success(), "{}", stderr(&search));
        assert!(stdout(&search).contains(&theirs.to_hex()));
        let thread = out(cmd(&env, &run, "EE", &["thread", &mine[..8]]));
        assert!(thread.status.success(), "{}", stderr(&thread));
        for args in [
            &["outbox"][..],
            &["quarantine"],
            &["sync"],
            &["outbox", "retry"],
        ] {
            let o = out(cmd(&env, &run, "EE", args));
            assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        }
        // The archive's own commands, through the agent too.
        let verify = out(cmd(&env, &run, "EE", &["archive", "verify", "--deep"]));
        assert!(verify.status.success(), "{}", stderr(&verify));
        assert!(
            stdout(&verify).contains("archive OK"),
            "{}",
            stdout(&verify)
        );
        let stats = out(cmd(&env, &run, "EE", &["archive", "stats", "--json"]));
        let v: serde_json::Value = serde_json::from_str(&stdout(&stats)).unwrap();
        assert!(v["records"].as_u64().unwrap() >= 3, "{v}");
        let export = env.dir.path().join("through-the-agent.jsonl");
        let o = out(cmd(
            &env,
            &run,
            "EE",
            &["archive", "export", "--out", export.to_str().unwrap()],
        ));
        assert!(o.status.success(), "{}", stderr(&o));
        let text = std::fs::read_to_string(&export).unwrap();
        let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            header["records"].as_u64().unwrap() as usize,
            text.lines().count() - 1
        );
        assert!(text.contains(&theirs.to_hex()));
        let sync = stdout(&out(cmd(&env, &run, "EE", &["sync"])));
        assert!(
            sync.contains("the agent") && sync.contains("connected"),
            "{sync}"
        );

        // Lines fit the width given.
        for args in [&["inbox", "--all"][..], &["thread", &mine[..8]]] {
            let mut c = cmd(&env, &run, "EE", args);
            c.env("COLUMNS", "50");
            let o = out(c);
            for line in stdout(&o).lines() {
                assert!(
                    line.chars().count() <= 50,
                    "{args:?}: {line:?} is wider than 50"
                );
            }
        }

        // The agent stops cleanly on SIGTERM and removes its socket; the
        // same commands then open the archive directly.
        let status = terminate(&mut agent);
        assert!(status.success(), "agent exit: {status:?}");
        assert!(!socket.exists(), "the socket is removed");
        let inbox = out(cmd(&env, &run, "EE", &["inbox", "--all"]));
        assert!(inbox.status.success(), "{}", stderr(&inbox));
        assert!(stdout(&inbox).contains(&theirs.to_hex()[..8]));
        let show = out(cmd(
            &env,
            &run,
            "EE",
            &["show", &theirs.to_hex()[..8], "--json"],
        ));
        let v: serde_json::Value = serde_json::from_str(&stdout(&show)).unwrap();
        assert_eq!(v["read"], true, "{v}");
        let sent = out(cmd(&env, &run, "EE", &send_args("directly, no agent")));
        assert!(sent.status.success(), "{}", stderr(&sent));
        ua.close().await;
    })
    .await;
}

/// Exit code 75 when the relay is unreachable and the message is queued;
/// a config error is named and never queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_send_exits_75_and_a_config_error_never_queues() {
    timed(async {
        let mut env = Env::new().await;
        let run = runtime_dir(&env);
        env.stop_relay().await;
        let o = out(cmd(&env, &run, "EE", &send_args("while the relay is down")));
        assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
        let id = stdout(&o).trim().to_string();
        assert_eq!(id.len(), 32, "the queued id is printed");
        assert!(stderr(&o).contains("queued"), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&env.addr.to_string()),
            "the error names the relay: {}",
            stderr(&o)
        );
        let outbox = stdout(&out(cmd(&env, &run, "EE", &["outbox", "--json"])));
        assert!(outbox.contains(&id), "{outbox}");

        // A config without the relay's pin: named, nothing queued.
        let config = env.dep.participant_dir("EE").join("client.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let broken: String = text
            .lines()
            .filter(|l| !l.starts_with("relay_pin"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&config, &broken).unwrap();
        let o = out(cmd(&env, &run, "EE", &send_args("never queued")));
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("relay_pin"), "{}", stderr(&o));
        // A relay without a port: said so.
        let no_port: String = text
            .lines()
            .map(|l| {
                if l.starts_with("relay =") {
                    "relay = \"127.0.0.1\"\n".to_string()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&config, &no_port).unwrap();
        let o = out(cmd(&env, &run, "EE", &send_args("never queued")));
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("has no port"), "{}", stderr(&o));
        std::fs::write(&config, &text).unwrap();
        let outbox: serde_json::Value =
            serde_json::from_str(&stdout(&out(cmd(&env, &run, "EE", &["outbox", "--json"]))))
                .unwrap();
        assert_eq!(
            outbox.as_array().unwrap().len(),
            1,
            "only the first is queued: {outbox}"
        );
    })
    .await;
}
