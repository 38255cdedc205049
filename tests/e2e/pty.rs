//! A person at a terminal, through a pseudo-terminal: `tallinn init` asks
//! for a new passphrase twice on a hidden prompt (a short one and a
//! mismatch are asked again), and a later command asks for it once.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::util::*;
use tallinn_client::key_file::SecretKeyFile as _;

/// A pseudo-terminal: the master side (ours) and the slave's path.
fn pty() -> (std::fs::File, std::path::PathBuf) {
    use rustix::pty::*;
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    (
        std::fs::File::from(master),
        std::path::PathBuf::from(name.to_str().unwrap()),
    )
}

/// A program running on a pseudo-terminal, its screen read in the background.
struct OnTerminal {
    child: std::process::Child,
    input: std::fs::File,
    output: mpsc::Receiver<Vec<u8>>,
    screen: String,
}

impl OnTerminal {
    fn start(mut cmd: Command) -> OnTerminal {
        let (master, slave_path) = pty();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&slave_path)
            .unwrap();
        let child = cmd
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .env_remove("TALLINN_PASSPHRASE")
            .env_remove("TALLINN_PASSPHRASE_FILE")
            .env("NO_COLOR", "1")
            .spawn()
            .unwrap();
        drop(cmd);
        let mut reader = master.try_clone().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last slave handle closes: the program is done.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        OnTerminal {
            child,
            input: master,
            output,
            screen: String::new(),
        }
    }

    /// Waits (bounded) until the screen shows `text` after what was
    /// already consumed; returns what appeared up to it.
    fn expect(&mut self, text: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(at) = self.screen.find(text) {
                let upto: String = self.screen.drain(..at + text.len()).collect();
                return upto;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.screen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("{text:?} never appeared; the screen: {:?}", self.screen),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        self.input
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// Types a secret once the program has turned the terminal's echo off
    /// (it does so after printing its prompt, and flushes what was typed
    /// before: a person types after the prompt, a test must wait for it).
    fn type_hidden(&mut self, line: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let t = rustix::termios::tcgetattr(&self.input).unwrap();
            if !t.local_modes.contains(rustix::termios::LocalModes::ECHO) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the echo was never turned off"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.type_line(line);
    }

    /// Waits for the exit; returns the status and the rest of the screen.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        while let Ok(chunk) = self.output.recv_timeout(std::time::Duration::from_secs(5)) {
            self.screen.push_str(&String::from_utf8_lossy(&chunk));
        }
        (status, self.screen)
    }
}

#[test]
fn init_asks_twice_hidden_and_commands_ask_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("home/.config/tallinn/client.toml");
    let data = dir.path().join("home/.local/share/tallinn");
    let pin = "ab".repeat(32);
    let deployment = "cd".repeat(32);
    let mut init = Command::new(bin("tallinn"));
    init.args([
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "init",
        "--id",
        "LT",
        "--name",
        "Lithuania",
        "--relay",
        "127.0.0.1:4433",
        "--pin",
        &pin,
        "--deployment",
        &deployment,
        "--device",
        "front-office",
    ]);
    let secret = "correct horse battery staple";
    let mut t = OnTerminal::start(init);
    t.expect("New passphrase");
    t.type_hidden("too short");
    t.expect("the passphrase must be at least 12 characters");
    t.expect("New passphrase");
    t.type_hidden(secret);
    t.expect("again");
    t.type_hidden("a different passphrase");
    t.expect("differ");
    t.expect("New passphrase");
    t.type_hidden(secret);
    t.expect("again");
    t.type_hidden(secret);
    let (status, rest) = t.finish();
    assert!(status.success(), "{rest}");
    assert!(
        rest.contains("[[participant]]") && rest.contains("id = \"LT\""),
        "{rest}"
    );
    assert!(rest.contains("# fingerprint: "), "{rest}");
    let key = config.parent().unwrap().join("identity.key");
    assert!(tallinn_common::identity::Identity::secret_file_is_protected(&key).unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(config.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("device = \"front-office\""), "{text}");

    // A later command asks once, hidden; the secret never shows.
    let mut inbox = Command::new(bin("tallinn"));
    inbox.args(["--config", config.to_str().unwrap(), "inbox"]);
    let mut t = OnTerminal::start(inbox);
    let before = t.expect("Passphrase for");
    t.type_hidden(secret);
    let (status, rest) = t.finish();
    assert!(status.success(), "{before}{rest}");
    assert!(rest.contains("no messages"), "{rest}");
    assert!(
        !format!("{before}{rest}").contains(secret),
        "the passphrase was echoed: {rest}"
    );

    // A wrong one is refused, and says why.
    let mut inbox = Command::new(bin("tallinn"));
    inbox.args(["--config", config.to_str().unwrap(), "inbox"]);
    let mut t = OnTerminal::start(inbox);
    t.expect("Passphrase for");
    t.type_hidden("not the passphrase at all");
    let (status, rest) = t.finish();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.to_lowercase().contains("passphrase"), "{rest}");

    // Without a terminal the error says what to set.
    let out = Command::new(bin("tallinn"))
        .args(["--config", config.to_str().unwrap(), "inbox"])
        .env_remove("TALLINN_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("TALLINN_PASSPHRASE_FILE"),
        "{}",
        stderr(&out)
    );
}

/// With neither `--body` nor `--body-file` on a terminal, `$EDITOR` opens
/// on a private file; what it writes (less `#` lines) is the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_written_in_the_editor_on_a_terminal() {
    timed(async {
        let env = Env::new().await;
        let editor = env.dir.path().join("editor.sh");
        std::fs::write(
            &editor,
            "#!/bin/sh\n# A stand-in for vi: writes the body, keeps the comment lines.\n\
             [ \"$(stat -c %a \"$1\")\" = 600 ] || exit 9\n\
             [ -z \"$TALLINN_PASSPHRASE\" ] || exit 8\n\
             { echo 'Written in the editor.'; cat \"$1\"; } > \"$1.new\" && mv \"$1.new\" \"$1\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut send = env.cli_command(
            "EE",
            &[
                "send",
                "--channel",
                "front-office",
                "--tlp",
                "AMBER",
                "--subject",
                "composed in the editor",
            ],
        );
        send.env("EDITOR", &editor)
            .env_remove("VISUAL")
            .env("TALLINN_PASSPHRASE", "never passed on");
        let t = OnTerminal::start(send);
        let (status, screen) = tokio::task::spawn_blocking(move || t.finish())
            .await
            .unwrap();
        assert!(status.success(), "{screen}");
        // The id, among the spinner's redraws on the same terminal.
        let id = screen
            .split(|c: char| !c.is_ascii_hexdigit())
            .find(|t| t.len() == 32)
            .unwrap_or_else(|| panic!("{screen}"))
            .to_string();
        assert!(
            screen.contains("connecting to"),
            "a spinner on a terminal: {screen}"
        );
        let out = env.cli("UA", &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let shown = env.cli("UA", &["show", &id, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&shown)).unwrap();
        assert_eq!(v["body"], "Written in the editor.", "{v}");
    })
    .await;
}
