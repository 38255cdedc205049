//! # tallinn-bench
//!
//! The benchmark harness: one load generator ([`load`]) drives every system
//! under test with the same traffic and measurement code; each server runs
//! as its own process ([`system`]): the Tallinn relay binary, or the bare
//! quinn forwarder ([`forwarder`]) that marks the transport ceiling.
//!
//! ```text
//! tallinn-bench fanout ──spawn──▶ tallinn-relay run | tallinn-bench forwarder
//!      │ pre-seal envelopes                 ▲
//!      └── N QUIC connections (S senders) ──┘  Send/Accepted, Deliver/Ack
//!          latencies per message, /proc/<pid> CPU and peak RSS
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod forwarder;
pub mod load;
pub mod scenarios;
pub mod system;
