//! Shared helpers of the end-to-end suite.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use tallinn_client::{Client, Event};
use tallinn_relay::{Limits, Server};
use tallinn_tests::Deployment;

/// Upper bound of any single wait (events, never sleeps).
pub const WAIT: Duration = Duration::from_secs(60);

/// Runs a test body under an overall timeout.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(240), f)
        .await
        .expect("test finished in time")
}

/// Limits for tests: no rate limiting in the way of bulk sends, and every
/// test client shares 127.0.0.1, so the per-address authentication budget
/// is raised too.
pub fn limits() -> Limits {
    Limits {
        send_burst: 1_000_000,
        send_rate_per_sec: 1_000_000.0,
        send_bytes_per_sec: 1 << 40,
        send_bytes_burst: 1 << 40,
        auth_rate_per_sec_per_ip: 10_000.0,
        auth_burst_per_ip: 10_000,
        ..Limits::default()
    }
}

/// A deployment with a running relay on 127.0.0.1:0, client configs updated.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub dep: Deployment,
    pub relay: Option<Server>,
    pub addr: SocketAddr,
    pub pin: [u8; 32],
}

impl Env {
    pub async fn new() -> Env {
        Self::with_limits(limits()).await
    }

    pub async fn with_limits(limits: Limits) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let dep = Deployment::create(&dir.path().join("deploy"), 0).unwrap();
        let relay = dep.start_relay_with(None, limits).await.unwrap();
        let addr = relay.local_addr();
        let pin = relay.spki_pin();
        dep.set_relay_addr(addr).unwrap();
        Env {
            dir,
            dep,
            relay: Some(relay),
            addr,
            pin,
        }
    }

    pub async fn stop_relay(&mut self) {
        if let Some(r) = self.relay.take() {
            r.shutdown().await;
        }
    }

    pub async fn restart_relay(&mut self) {
        self.stop_relay().await;
        let r = self
            .dep
            .start_relay_with(Some(self.addr.port()), limits())
            .await
            .unwrap();
        self.relay = Some(r);
    }

    pub fn settings(&self, id: &str, device: &str) -> tallinn_client::Settings {
        self.dep.settings(id, device, self.addr, self.pin).unwrap()
    }

    pub async fn client(&self, id: &str, device: &str) -> Client {
        Client::connect(self.settings(id, device)).await.unwrap()
    }

    /// Runs the `tallinn` CLI as `id` with the deployment's config.
    pub fn cli(&self, id: &str, args: &[&str]) -> Output {
        let config = self.dep.participant_dir(id).join("client.toml");
        let mut full = vec!["--config", config.to_str().unwrap()];
        full.extend_from_slice(args);
        run_bin("tallinn", &full)
    }

    pub fn cli_command(&self, id: &str, args: &[&str]) -> Command {
        let config = self.dep.participant_dir(id).join("client.toml");
        let mut c = Command::new(bin("tallinn"));
        c.arg("--config").arg(config).args(args);
        c
    }
}

/// The path of a workspace binary. `cargo test --workspace` builds every
/// binary before running tests; `.ci/run` builds them explicitly first.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

pub fn run_bin(name: &str, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("TALLINN_PASSPHRASE")
        .output()
        .expect("binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits for `n` archived messages on a client's event stream.
pub async fn expect_messages(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    n: usize,
) -> Vec<tallinn_client::archive::Record> {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while out.len() < n {
            match events.recv().await {
                Some(Event::Message(r)) => out.push(*r),
                Some(_) => {}
                None => panic!("event stream ended"),
            }
        }
    })
    .await
    .expect("messages arrived in time");
    out
}
