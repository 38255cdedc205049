//! # tallinn-bench
//!
//! The benchmark harness: one load generator ([`load`]) drives every system
//! under test with the same traffic and measurement code; each server runs
//! as its own process ([`system`]): the Tallinn relay binary, the bare
//! quinn forwarder ([`forwarder`]) that marks the transport ceiling, or a
//! `nats-server` (core NATS and JetStream, [`nats`]) when one is on PATH.
//!
//! ```text
//! tallinn-bench fanout ──spawn──▶ tallinn-relay run | tallinn-bench forwarder
//!      │ pre-seal envelopes                 ▲          (| nats-server -c nats.conf)
//!      └── N QUIC connections (S senders) ──┘  Send/Accepted, Deliver/Ack
//!          (N TLS connections to NATS)         publish/fence or PubAck, deliver/ack
//!          latencies per message, /proc/<pid> CPU and peak RSS
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod coordination;
pub mod forwarder;
pub mod load;
pub mod nats;
pub mod scenarios;
pub mod setup;
pub mod system;
