//! `tallinn agent`: every command works beside `listen` through the
//! agent, and without it directly; two agents refuse each other; the
//! socket serves only its own user; lines fit the terminal; a queued send
//! exits 75 and a config error never queues.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tallinn_common::message::{Message, Tlp};

use crate::util::*;

mod api;
mod commands;

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
