//! The agent's local API: only its own user is served, and every
//! endpoint answers, errors included, on the wire.

use super::*;

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
