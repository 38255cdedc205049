//! # tallinn-relay
//!
//! The Tallinn Relay server: a QUIC (quinn 0.11, rustls 0.23 TLS 1.3, ALPN
//! `tallinn/1`) store-and-forward relay for signed, end-to-end encrypted
//! envelopes. It authenticates participants against a pinned roster, checks
//! every envelope it can check without reading it (signature, channel,
//! posting rights, recipient list, replay, clock skew, size, rate), stores it
//! durably (sled, group commit) and pushes it to every device of every
//! recipient, in order, until each acknowledges it.
//!
//! ```text
//!            QUIC/TLS 1.3                      ┌──────────── commit thread ───────────┐
//! client ═══ session stream ══▶ session ──────▶│ append (dedupe, seq) … commit (fsync)│
//!   ▲        (Hello/Auth/Welcome,  │ check_send└───────┬──────────────────┬───────────┘
//!   │         Send/Accepted,       │                   │ Accepted         │ router.deliver
//!   │         Deliver/Ack)         ▼                   ▼                  ▼
//!   └──────── Deliver ◀── delivery task ◀── live queue (bounded) / store (backlog, catch-up)
//! ```
//!
//! ## Modules
//! - [`server`]: [`Server::spawn`], accept loop and admission control, GC,
//!   metrics endpoint, roster reload, graceful shutdown.
//! - [`session`]: one connection: authentication, the send path, deliveries;
//!   its [`session::core`] is the sans-IO state machine the async tasks drive.
//! - [`router`]: live connection table, non-blocking hand-off.
//! - [`commit`]: the group-commit writer thread.
//! - [`store`]: the [`store::Store`] trait and its sled implementation.
//!   Its [`store::wal`] is the commit log in front of sled (one
//!   `fdatasync` per batch).
//! - [`metrics`]: Prometheus metrics and `/healthz`.
//! - [`config`]: `relay.toml` and the library [`RelayConfig`].
//! - [`admission`]: who may connect before authenticating (pre-auth
//!   budget, per-address cap, Retry, eviction of the oldest silent one).
//! - [`tls`]: certificates, SPKI pins, the rustls server config.
//! - [`defaults`]: every default limit, with its reason.
//!
//! ## What it does not do
//! It never sees plaintext or content keys, and cannot forge an envelope.
//! It does not federate: one relay serves one deployment.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod commit;
pub mod config;
pub mod control;
pub mod defaults;
pub mod genesis;
pub mod metrics;
pub mod receipt_key;
pub mod router;
pub mod rules;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;

pub use config::{FileConfig, Limits, RelayConfig};
pub use server::{Server, SpawnError};
pub use tls::TlsIdentity;
