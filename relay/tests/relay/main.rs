//! End-to-end tests of the relay against real QUIC connections on
//! 127.0.0.1, in-process or as a child process.

#[path = "../util/mod.rs"]
mod util;

mod delivery;
mod handshake;
mod operations;
mod sends;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tallinn_common::envelope::{seal_to, Envelope};
use tallinn_common::message::{Message, Tlp};
use tallinn_common::wire::{self, ErrorCode, Frame};
use tallinn_relay::Limits;
use util::*;

fn code_of(f: &Frame) -> Option<ErrorCode> {
    match f {
        Frame::Rejected { code, .. } | Frame::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn test_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(500),
        ..Limits::default()
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test finished in time")
}
