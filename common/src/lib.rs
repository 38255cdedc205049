//! # tallinn-common
//!
//! The protocol core of Tallinn Relay: identities and keys, the roster,
//! envelope cryptography, the plaintext message type and the session-stream
//! frames. Pure: it parses, seals, opens and validates. It has no tokio, no
//! sockets and no clock (callers pass `now` in), so all of it is tested
//! without a network.
//!
//! ```text
//!  sender (client)                        relay                           recipient (client)
//!  ---------------                        -----                           ------------------
//!  Message ──seal(identity, roster)──▶ Envelope bytes
//!                     Frame::Send ───────▶ UntrustedEnvelope::decode
//!                                          .verify(roster)  (sig, policy)
//!                                          store ──Frame::Deliver──▶ UntrustedEnvelope::decode
//!                                                                    .verify(own pinned roster)
//!                                                                    .open(identity) ─▶ Message
//! ```
//!
//! ## Modules
//! - [`identity`]: participant/device ids, Ed25519 + X25519 key pairs, the
//!   secret key file (plain and Argon2id-protected), fingerprints.
//! - [`roster`]: roster TOML parsing and validation, channel queries, the
//!   roster fingerprint.
//! - [`message`]: the plaintext [`message::Message`] (kinds, TLP 2.0 labels).
//! - [`envelope`]: seal / verify / open, with the typestate
//!   `UntrustedEnvelope -> VerifiedEnvelope -> Opened`.
//! - [`wire`]: session frames, the length-prefixed codec, error codes, the
//!   exporter-bound authentication transcript.
//! - [`tracker`]: the request tracker's rules (cases of requests, offers
//!   and status updates, and their state).
//! - [`text`]: escaping strings from the network before a terminal shows them.
//! - [`defaults`]: protocol labels and default limits, each with its reason.
//!
//! ## What it does not do
//! No I/O: no files (the secret key file's TOML forms are here, reading and
//! writing the file is `tallinn_client::key_file`), no transport, no
//! storage, no clock (syncing files and process behaviour live in
//! `tallinn-host`). The wire
//! codec works on byte buffers so that the relay and client drive it from
//! their own async streams.
//!
//! The normative byte layouts are in `PROTOCOL.md` at the repository root.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod defaults;
pub mod envelope;
pub mod evidence;
pub mod identity;
pub mod message;
pub mod roster;
pub mod text;
pub mod tracker;
pub mod wire;

/// Milliseconds since the Unix epoch as a `u64` from a `SystemTime`-like
/// duration; a helper so callers convert clocks the same way.
pub fn unix_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
