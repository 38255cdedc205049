//! # tallinn-tests
//!
//! Shared code of the end-to-end suite (`e2e/`) and the one-command demo
//! (`tallinn-demo`): generating a complete Tallinn deployment on disk
//! (identities, roster, relay and client configs, certificate), starting a
//! real relay, and building client settings.
//!
//! ```text
//! Deployment::create(dir) ──▶ dir/roster.toml, dir/relay.toml, dir/relay-cert.pem
//!                             dir/<ID>/identity.key (0600), dir/<ID>/client.toml
//!          .start_relay() ──▶ tallinn_relay::Server on 127.0.0.1
//!          .settings(ID, device) ──▶ tallinn_client::Settings
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod coordination;
pub mod deployment;
pub mod lifecycle;
pub mod scenario;

pub use deployment::Deployment;
