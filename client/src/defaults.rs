//! Client defaults, each with its reason.

use std::time::Duration;

/// QUIC handshake plus authentication. One round trip after the handshake;
/// ten seconds tolerates poor links without hanging a CLI for long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time `send` waits for `Accepted` (the relay's fsync) before it reports
/// that the message stays queued in the outbox.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// First reconnect pause; doubled on every failure up to [`MAX_BACKOFF`],
/// with jitter (a pause between half and all of it) so a relay restart does
/// not see every client at once.
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// Longest reconnect pause.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// QUIC keep-alive: well inside the relay's 60 s idle timeout, and frequent
/// enough that a restarted relay's stateless reset reaches an idle client
/// within seconds.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// QUIC idle timeout on the client side (matches the relay's default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest frame the client accepts from the relay: the protocol default.
pub const MAX_FRAME_LEN: u32 = tallinn_common::defaults::MAX_FRAME_LEN;

/// Deliveries archived per flush (and acknowledged with one `Ack`). Below
/// the relay's in-flight window (256) so the relay never stalls on us.
pub const ARCHIVE_BATCH: usize = 128;

/// Quarantined deliveries kept at most; beyond, the oldest are evicted (and
/// counted). A faulty or hostile relay can send any number of envelopes that
/// fail verification: without a bound they would fill the disk.
pub const QUARANTINE_MAX_ENTRIES: u64 = 10_000;

/// Bytes of quarantined (sealed) entries kept at most: room for 64 envelopes
/// at the 1 MiB limit, or thousands of ordinary ones.
pub const QUARANTINE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Rows per page in `inbox` and `archive search` by default.
pub const PAGE: usize = 20;

/// Version 2: a device rotates its encryption key this often (by `tallinn
/// sync`, when its key file is its participant's identity key). Bounds what
/// a stolen device's current secret exposes to about a month of messages.
pub const ROTATE_ENC_KEY_DAYS: f64 = 30.0;

/// Version 2: a retired encryption secret is erased at the latest this long
/// after the rotation (sooner once a sync drained the relay's backlog).
pub const ENC_KEY_GRACE_DAYS: f64 = 14.0;
