//! # tallinn-client
//!
//! The Tallinn Relay client library and the `tallinn` CLI. It connects to
//! the relay over QUIC with a pinned relay key, authenticates with the
//! participant's identity and a device label, sends sealed messages through
//! a crash-safe outbox, and receives, verifies (against its *own* pinned
//! roster), decrypts and archives every delivery in an encrypted,
//! hash-chained, indexed sled archive that can be searched, verified and
//! exported for audit.
//!
//! ```text
//!   tallinn CLI (cli) ──▶ Client (client) ──▶ connection ══QUIC══▶ relay
//!                            │    ▲
//!                  outbox ◀──┘    └── archive (verify/open → encrypt → chain → index)
//! ```
//!
//! ## Modules
//! - [`client`]: [`Client`]: connection manager, send/queue, events, sync.
//! - [`connection`]: QUIC/TLS with SPKI pin or CA, authentication, framing.
//! - [`archive`]: the encrypted, hash-chained archive with its indexes and
//!   quarantine; search, thread, verify, stats.
//! - [`outbox`]: messages waiting for `Accepted`.
//! - [`export`]: JSON Lines export for auditors.
//! - [`private_file`]: 0600, no-symlink, no-overwrite output files.
//! - [`key_file`]: the participant's secret key file on disk (0600, synced).
//! - [`config`]: the `client.toml` file.
//! - [`agent`]: the local agent and its API (HTTP + JSON on a Unix socket).
//! - [`attachment`]: saving received attachments under safe names.
//! - [`cli`]: the `tallinn` command line.
//! - [`defaults`]: defaults with their reasons.
//!
//! ## What it does not do
//! It never trusts the relay's word: every check is repeated locally. It
//! does not rotate keys (planned: roster updates signed by the chair).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod archive;
pub mod attachment;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod defaults;
pub mod export;
pub mod ids;
pub mod key_file;
pub mod outbox;
pub mod private_file;
pub mod roster;
pub mod rotation;

pub use client::{Client, ClientError, Event, Settings, State};
