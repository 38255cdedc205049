//! `tallinn agent`: every command works beside `listen` through the
//! agent, and without it directly; two agents refuse each other; the
//! socket serves only its own user; lines fit the terminal; a queued send
//! exits 75 and a config error never queues.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tallinn_common::message::{Message, Tlp};

use crate::util::*;

/// A `tallinn` command for `id` with its own runtime directory (where the
/// agent's socket lives).
fn cmd(env: &Env, run: &Path, id: &str, args: &[&str]) -> Command {
    let mut c = env.cli_command(id, args);
    c.env("XDG_RUNTIME_DIR", run)
        .env("RUST_LOG", "warn")
        .env_remove("TALLINN_PASSPHRASE")
        .env_remove("COLUMNS");
    c
}

fn out(mut c: Command) -> Output {
    c.output().expect("tallinn runs")
}

/// Starts `c` with stderr piped and waits (bounded) for a stderr line
/// containing `ready`; the rest of stderr is collected in the background.
fn spawn_until(mut c: Command, ready: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(ready) => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no {ready:?} on stderr in time; it said: {seen:?}");
            }
        }
    }
    (child, rx)
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    child.wait().unwrap()
}

fn send_args(subject: &str) -> Vec<&str> {
    vec![
        "send",
        "--channel",
        "front-office",
        "--tlp",
        "AMBER",
        "--subject",
        subject,
        "--body",
        "body",
    ]
}

fn runtime_dir(env: &Env) -> PathBuf {
    let run = env.dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    run
}

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
                &Message::note(Tlp::Red, "live to the agent", "hello EE"),
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
        let listened = tokio::task::spawn_blocking(move || listen.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(listened.status.success(), "{}", stderr(&listened));
        let lines: Vec<serde_json::Value> = stdout(&listened)
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

/// The socket's mode keeps other users out; the peer-credential check is
/// the second lock: with the mode opened up, another user's process gets
/// 403. Needs root to act as another user (CI runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_only_its_own_user() {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    if uid.trim() != "0" {
        eprintln!("skipped: acting as another user needs root");
        return;
    }
    timed(async {
        let env = Env::new().await;
        let run = runtime_dir(&env);
        let (mut agent, _) = spawn_until(cmd(&env, &run, "EE", &["agent"]), "agent for EE");
        let dir = run.join("tallinn");
        let socket = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "sock"))
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(b'GET /v1/status HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\nprint(s.recv(4096).decode(errors='replace'))";
        let as_nobody = || {
            Command::new("python3")
                .args(["-c", script, socket.to_str().unwrap()])
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap()
        };
        // With the shipped modes another user cannot even connect.
        let o = as_nobody();
        assert!(!o.status.success(), "connected through a 0700 folder: {}", stdout(&o));
        assert!(stderr(&o).contains("Permission"), "{}", stderr(&o));
        // Opened up: the agent itself refuses by peer credentials.
        for p in [env.dir.path(), run.as_path(), dir.as_path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let o = as_nobody();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("403") && stdout(&o).contains("forbidden"), "{}", stdout(&o));
        // Its own user is served.
        let own = out(cmd(&env, &run, "EE", &["outbox", "--json"]));
        assert!(own.status.success(), "{}", stderr(&own));
        terminate(&mut agent);
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
