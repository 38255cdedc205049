//! # tallinn-host
//!
//! What the relay and the client need from the host that is not protocol:
//! kept out of `tallinn-common` so that the protocol core stays free of
//! I/O. Standard library only.
//!
//! ```text
//!  relay ─┐                     ┌─ durable: SledLog::sync (fdatasync of sled's log),
//!         ├──▶ tallinn-host ────┤           private_dir (0700), check_private_file (0600)
//!  client ┘                     └─ process: quiet_broken_pipe (CLIs)
//! ```
//!
//! ## Modules
//! - [`durable`]: `fdatasync` of a sled database's log, the barrier sled's
//!   own `flush` does not provide; private directories and key files.
//! - [`process`]: process behaviour shared by the command-line programs.
//! - [`systemd`]: readiness and watchdog notifications (`sd_notify`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod durable;
pub mod process;
pub mod systemd;
