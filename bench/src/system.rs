//! Systems under test, each a separate process, and their resource use
//! read from `/proc/<pid>`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// CPU time (user + system) of a process, in microseconds.
///
/// # Errors
/// If `/proc/<pid>/stat` cannot be read or parsed.
pub fn cpu_us(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based); `rest` starts at field 3.
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok((utime + stime) * 1_000_000 / clock_ticks())
}

/// Peak resident set size (VmHWM) in KiB.
///
/// # Errors
/// If `/proc/<pid>/status` cannot be read.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    rss_field(pid, "VmHWM:")
}

/// Current resident set size (VmRSS) in KiB.
///
/// # Errors
/// If `/proc/<pid>/status` cannot be read.
pub fn rss_kib(pid: u32) -> Result<u64> {
    rss_field(pid, "VmRSS:")
}

fn rss_field(pid: u32, name: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(name))
        .context("no such field")?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// A server process under test.
pub struct Server {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `program args`, waiting for its `… listening on ADDR` line.
    ///
    /// # Errors
    /// If it does not start or announce itself within 30 s.
    pub fn start(program: &Path, args: &[&str], pin_core: Option<usize>) -> Result<Server> {
        Self::start_announced(program, args, pin_core, "listening on ")
    }

    /// Starts `program args`, waiting for the stderr line in which `marker`
    /// is followed by its address (`nats-server`: `Listening for client
    /// connections on ADDR`). Later stderr lines are read and dropped.
    ///
    /// # Errors
    /// If it does not start or announce itself within 30 s.
    pub fn start_announced(
        program: &Path,
        args: &[&str],
        pin_core: Option<usize>,
        marker: &str,
    ) -> Result<Server> {
        let mut cmd = match pin_core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let err = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let marker = marker.to_string();
        std::thread::spawn(move || {
            // The last lines before the announcement, to explain an early exit.
            let mut tail: Vec<String> = Vec::new();
            let mut announced = false;
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split(marker.as_str()).nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    announced = true;
                    let _ = tx.send(Ok(addr));
                } else if !announced {
                    if tail.len() == 5 {
                        tail.remove(0);
                    }
                    tail.push(line);
                }
            }
            if !announced {
                let _ = tx.send(Err(tail.join(" | ")));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(tail)) => bail!(
                "{} exited without announcing its address: {tail}",
                program.display()
            ),
            Err(_) => bail!("server did not announce its address"),
        };
        Ok(Server {
            child,
            addr: addr
                .parse()
                .with_context(|| format!("bad address {addr:?}"))?,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A workspace binary next to this one (same profile).
///
/// # Errors
/// If it is not built.
pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("exe dir")?.join(name);
    if !path.exists() {
        bail!(
            "{} is not built: run `cargo build --release -p tallinn-relay` first",
            path.display()
        );
    }
    Ok(path)
}

/// A free UDP port on 127.0.0.1.
///
/// # Errors
/// If binding fails.
pub fn free_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
