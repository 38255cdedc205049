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
        .env(
            "RUST_LOG",
            std::env::var("AGENT_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env_remove("TALLINN_PASSPHRASE")
        .env_remove("COLUMNS");
    c
}

fn out(mut c: Command) -> Output {
    c.output().expect("tallinn runs")
}

/// Starts `c` with stderr piped and waits (bounded) for a stderr line
/// containing `ready`; the rest of stderr is collected in the background.
fn spawn_until(mut c: Command, ready: &str) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = std::env::var_os("AGENT_LOG_FILE").and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if let Some(f) = log.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(f, "{line}");
            }
            let _ = tx.send(line);
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
    (KillOnDrop(child), rx)
}

/// A child process that is killed if the test ends without stopping it
/// (a failed assertion must not leave an agent running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
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

/// One raw HTTP/1.1 request on the agent's socket; `(status, body)`.
async fn raw(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    raw_declared(socket, method, path, body, body.len()).await
}

/// [`raw`] with a declared `Content-Length` (an oversized one is answered
/// before its body is sent).
async fn raw_declared(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    declared: usize,
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // An answer that needs no body (503 `held`, a refused length) can come,
    // and the agent close, before the body is written: the answer counts.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    tokio::time::timeout(WAIT, async {
        // Read what the agent answered, up to its close.
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no end to the answer to {method} {path}: {:?}",
            String::from_utf8_lossy(&out)
        )
    });
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no answer to {method} {path}: {text:?}"))
        .parse()
        .unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&out[..at]).to_ascii_lowercase();
    if !head.contains("transfer-encoding: chunked") {
        return (status, out[at..].to_vec());
    }
    // A streamed answer: size line (hex), data, CRLF, ..., a 0 size.
    let mut body = Vec::new();
    let mut rest = &out[at..];
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
    (status, body)
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

/// Every endpoint of the local API, and its error answers, on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_of_the_local_api_answers() {
    timed(async {
        // Messages over 4 KiB are refused by this relay: an outbox entry
        // to resend and drop without waiting for a timeout.
        let env = Env::with_limits(tallinn_relay::Limits {
            max_message_len: 4096,
            ..limits()
        })
        .await;
        let run = runtime_dir(&env);
        let (mut agent, _) = spawn_until(cmd(&env, &run, "EE", &["agent"]), "agent for EE");
        let sock = std::fs::read_dir(run.join("tallinn"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "sock"))
            .unwrap();

        let (st, b) = raw(&sock, "GET", "/v1/status", b"").await;
        let v = json(&b);
        assert_eq!(
            (st, v["api"].as_u64(), v["participant"].as_str()),
            (200, Some(1), Some("EE")),
            "{v}"
        );

        // Events: `hello` first, then what happens.
        let mut events = tallinn_client::agent::remote::AgentClient::find(&sock)
            .await
            .unwrap()
            .unwrap()
            .events()
            .await
            .unwrap();
        let hello = events.next().await.unwrap().unwrap();
        assert!(
            matches!(hello, tallinn_client::agent::api::EventView::Hello { .. }),
            "{hello:?}"
        );

        let compose = serde_json::json!({
            "channel": "front-office",
            "kind": {"name": "request", "loe": "immediate", "category": "dfir", "priority": "high"},
            "tlp": "AMBER",
            "subject": "over the API",
            "body": "b",
            "attachments": [{"name": "iocs.csv", "media_type": "text/csv", "data_b64": "YSxiCg=="}]
        });
        let (st, b) = raw(
            &sock,
            "POST",
            "/v1/messages",
            compose.to_string().as_bytes(),
        )
        .await;
        let sent = json(&b);
        assert_eq!(
            (st, sent["outcome"].as_str()),
            (200, Some("sent")),
            "{sent}"
        );
        let id = sent["msg_id"].as_str().unwrap().to_string();
        loop {
            match events.next().await.unwrap().unwrap() {
                tallinn_client::agent::api::EventView::Accepted { msg_id, .. } => {
                    assert_eq!(msg_id, id);
                    break;
                }
                tallinn_client::agent::api::EventView::Connected { .. } => {}
                other => panic!("{other:?}"),
            }
        }

        let (st, b) = raw(
            &sock,
            "POST",
            "/v1/search",
            br#"{"direction": "sent", "text": "API"}"#,
        )
        .await;
        let page = json(&b);
        assert_eq!(
            (
                st,
                page["messages"][0]["msg_id"].as_str(),
                page["more"].as_bool()
            ),
            (200, Some(id.as_str()), Some(false)),
            "{page}"
        );
        let (st, b) = raw(&sock, "GET", &format!("/v1/messages/{}", &id[..7]), b"").await;
        let d = json(&b);
        assert_eq!(
            (st, d["kind"]["priority"].as_str()),
            (200, Some("high")),
            "{d}"
        );
        assert!(d["signature"].as_str().unwrap().starts_with("valid"), "{d}");
        let (st, b) = raw(&sock, "POST", &format!("/v1/messages/{id}/read"), b"").await;
        assert_eq!((st, json(&b)["read"].as_str()), (200, Some(id.as_str())));
        let (st, b) = raw(&sock, "GET", &format!("/v1/messages/{id}/thread"), b"").await;
        assert_eq!((st, json(&b).as_array().map(Vec::len)), (200, Some(1)));
        let (st, b) = raw(
            &sock,
            "GET",
            &format!("/v1/messages/{id}/attachments/1"),
            b"",
        )
        .await;
        assert_eq!((st, b.as_slice()), (200, &b"a,b\n"[..]));
        let (st, _) = raw(
            &sock,
            "GET",
            &format!("/v1/messages/{id}/attachments/2"),
            b"",
        )
        .await;
        assert_eq!(st, 404);

        // The outbox: a refused message, resent (refused again), dropped.
        let mut big = compose.clone();
        big["kind"] = serde_json::json!({"name": "note"});
        big["body"] = serde_json::json!("x".repeat(6000));
        let (st, b) = raw(&sock, "POST", "/v1/messages", big.to_string().as_bytes()).await;
        assert_eq!(
            (st, json(&b)["error"]["code"].as_str()),
            (422, Some("rejected")),
            "{}",
            String::from_utf8_lossy(&b)
        );
        let (st, b) = raw(&sock, "GET", "/v1/outbox", b"").await;
        let outbox = json(&b);
        assert_eq!(
            (st, outbox[0]["refused"]["code"].as_str()),
            (200, Some("too_large")),
            "{outbox}"
        );
        let refused = outbox[0]["msg_id"].as_str().unwrap().to_string();
        let (st, b) = raw(
            &sock,
            "POST",
            &format!("/v1/outbox/{}/resend", &refused[..8]),
            b"",
        )
        .await;
        let r = json(&b);
        assert_eq!(
            (st, r["old"].as_str()),
            (200, Some(refused.as_str())),
            "{r}"
        );
        let new = r["new"].as_str().unwrap().to_string();
        // The new entry is sent at once and may be refused already.
        let (st, b) = raw(&sock, "POST", "/v1/outbox/retry", b"").await;
        assert!(
            st == 200 && json(&b)["retried"].as_u64().is_some_and(|n| n <= 1),
            "{st}"
        );
        let (st, b) = raw(&sock, "DELETE", &format!("/v1/outbox/{new}"), b"").await;
        assert_eq!(
            (st, json(&b)["dropped"].as_str()),
            (200, Some(new.as_str()))
        );
        let (_, b) = raw(&sock, "GET", "/v1/outbox", b"").await;
        assert_eq!(json(&b), serde_json::json!([]));

        let (st, b) = raw(&sock, "GET", "/v1/quarantine", b"").await;
        assert_eq!((st, json(&b)), (200, serde_json::json!([])));
        let (st, b) = raw(&sock, "GET", "/v1/archive/stats", b"").await;
        assert_eq!((st, json(&b)["sent"].as_u64()), (200, Some(1)));
        let (st, b) = raw(&sock, "POST", "/v1/archive/verify", br#"{"deep": true}"#).await;
        let v = json(&b);
        assert_eq!(
            (st, v["ok"].as_bool(), v["records"].as_u64()),
            (200, Some(true), Some(1)),
            "{v}"
        );
        let (st, b) = raw(&sock, "GET", "/v1/archive/export", b"").await;
        let text = String::from_utf8(b).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(st, 200);
        assert_eq!(lines[0]["type"], "tallinn-archive-export");
        assert_eq!(lines[1]["msg_id"].as_str(), Some(id.as_str()));
        let (st, b) = raw(&sock, "POST", "/v1/quarantine/retry", b"").await;
        assert_eq!((st, json(&b)["left"].as_u64()), (200, Some(0)));
        let (st, b) = raw(
            &sock,
            "POST",
            "/v1/quarantine/purge",
            br#"{"before_ms": 0}"#,
        )
        .await;
        assert_eq!((st, json(&b)["purged"].as_u64()), (200, Some(0)));

        // A hold: the archive is lent, other calls wait (503 `held`), a
        // second hold is refused, and once the holder leaves the agent has
        // it back, events included.
        let agent_client = tallinn_client::agent::remote::AgentClient::find(&sock)
            .await
            .unwrap()
            .unwrap();
        let hold = agent_client.hold().await.unwrap();
        let (st, b) = raw(&sock, "POST", "/v1/search", b"{}").await;
        assert_eq!(
            (st, json(&b)["error"]["code"].as_str()),
            (503, Some("held"))
        );
        let (st, b) = raw(&sock, "GET", "/v1/status", b"").await;
        assert_eq!(st, 200);
        assert!(json(&b)["last_error"].as_str().unwrap().contains("held"));
        let (st, b) = raw(&sock, "POST", "/v1/hold", b"").await;
        assert_eq!(
            (st, json(&b)["error"]["code"].as_str()),
            (409, Some("held")),
            "a second hold"
        );
        // The archive is free for this process meanwhile.
        let direct = tallinn_client::Client::open(env.settings("EE", "default")).unwrap();
        assert!(!direct.archive().is_empty());
        drop(direct);
        drop(hold);
        // Calls wait for the agent to take the archive back.
        let page = agent_client
            .search(&tallinn_client::agent::api::SearchRequest::default())
            .await
            .unwrap();
        assert!(!page.messages.is_empty() || !page.more);
        let ua = env.client("UA", "default").await;
        let (after_hold, _) = ua
            .send(
                "front-office",
                &tallinn_common::message::Message::note(
                    tallinn_common::message::Tlp::Green,
                    "after the hold",
                    "x",
                ),
            )
            .await
            .unwrap();
        ua.close().await;
        loop {
            match tokio::time::timeout(WAIT, events.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                tallinn_client::agent::api::EventView::Message { message } => {
                    assert_eq!(message.msg_id, after_hold.to_hex());
                    break;
                }
                _ => continue,
            }
        }

        // Errors: a code and a message, never a crash.
        for (method, path, body, status, code) in [
            ("GET", "/v1/nope", &b""[..], 404, "not_found"),
            ("GET", "/v2/status", b"", 404, "not_found"),
            ("PUT", "/v1/status", b"", 405, "method_not_allowed"),
            ("POST", "/v1/search", b"{", 400, "bad_request"),
            (
                "POST",
                "/v1/messages",
                br#"{"channel": "x"}"#,
                400,
                "bad_request",
            ),
            ("GET", "/v1/messages/abc", b"", 400, "bad_request"),
            ("GET", "/v1/messages/%2e%2e", b"", 400, "bad_request"),
            ("GET", "/v1/messages/ffffff", b"", 404, "not_found"),
            ("POST", "/v1/quarantine/purge", b"[]", 400, "bad_request"),
        ] {
            let (st, b) = raw(&sock, method, path, body).await;
            let v = json(&b);
            assert_eq!(
                (st, v["error"]["code"].as_str()),
                (status, Some(code)),
                "{method} {path}: {v}"
            );
            assert!(v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
        }
        let (st, b) = raw_declared(&sock, "POST", "/v1/messages", b"", 2 << 20).await;
        assert_eq!(
            (st, json(&b)["error"]["code"].as_str()),
            (413, Some("too_large"))
        );
        // The agent is still there.
        let (st, _) = raw(&sock, "GET", "/v1/status", b"").await;
        assert_eq!(st, 200);
        terminate(&mut agent);
    })
    .await;
}
