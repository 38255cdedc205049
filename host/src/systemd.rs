//! The service manager's readiness protocol (`sd_notify(3)`), without
//! libsystemd: one datagram a state change to `$NOTIFY_SOCKET`.
//!
//! - [`notify`] sends `READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=...`;
//!   it does nothing (and says so) when not run by systemd.
//! - [`watchdog_interval`] is half of `$WATCHDOG_USEC` when the watchdog
//!   is meant for this process (`$WATCHDOG_PID` unset or ours).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (newline-separated `KEY=value` pairs) to the service
/// manager. `Ok(false)`: no `$NOTIFY_SOCKET`, nothing sent.
///
/// # Errors
/// The socket's error (the manager is gone, the path is wrong).
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    match bytes.split_first() {
        // An abstract socket (`@name`), as systemd usually hands out.
        #[cfg(target_os = "linux")]
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some((b'/', _)) => {
            sock.send_to(state.as_bytes(), &path)?;
        }
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither a path nor an abstract socket name",
            ))
        }
    }
    Ok(true)
}

/// How often to send `WATCHDOG=1`: half the manager's timeout, if the
/// watchdog is enabled for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        // The variable is read per call; this test is the only one in the
        // crate that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1").unwrap());
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!notify("READY=1").unwrap());
    }
}
