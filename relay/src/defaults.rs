//! Default limits of the relay, each with the reason for its value. Every one
//! can be changed in `relay.toml` (see `config/relay.toml`).

use std::time::Duration;

/// Largest frame accepted on a session stream (bytes, length prefix excluded):
/// the protocol default of `tallinn_common`, room for a 1 MiB envelope.
pub const MAX_FRAME_LEN: u32 = tallinn_common::defaults::MAX_FRAME_LEN;

/// Largest envelope accepted in a `Send` (bytes). A coordination message with
/// a few attached documents fits; a bulk transfer belongs elsewhere.
pub const MAX_MESSAGE_LEN: usize = tallinn_common::defaults::MAX_ENVELOPE_LEN;

/// Sustained sends per second per participant (token bucket refill rate).
/// A human point of contact sends a few messages a minute; scripts syncing
/// an outbox after an outage send bursts, covered by [`SEND_BURST`].
pub const SEND_RATE_PER_SEC: f64 = 50.0;

/// Token bucket size per participant: an outbox of this many messages drains
/// at once after a reconnect without hitting `rate_limited`.
pub const SEND_BURST: u32 = 500;

/// Sustained bytes of envelopes per second per participant (a second token
/// bucket beside [`SEND_RATE_PER_SEC`]): the message count alone would let
/// one participant push 50 MiB/s of maximum-size envelopes into the store.
/// 4 MiB/s is hundreds of ordinary messages a second.
pub const SEND_BYTES_PER_SEC: u64 = 4 * 1024 * 1024;

/// Byte bucket size per participant: an outbox of large messages (or 500
/// ordinary ones) drains at once after a reconnect. At least one maximum
/// envelope (checked at load).
pub const SEND_BYTES_BURST: u64 = 64 * 1024 * 1024;

/// Bytes of a participant's own messages the relay stores at most while
/// they await acknowledgement (or retention); beyond it a `Send` gets
/// `quota_exceeded`. Bounds what one participant (or a stolen key) can
/// make the relay keep on disk: 14 participants at the default stay under
/// 15 GiB, and an ordinary month of coordination is a few MiB.
pub const MAX_STORED_BYTES_PER_PARTICIPANT: u64 = 1024 * 1024 * 1024;

/// Successful authentications per second per participant (token bucket,
/// counted once the signature verified, so only the key holder spends it):
/// each costs store work (cursor, device list). A reconnecting client needs
/// one every few seconds at most.
pub const AUTH_RATE_PER_SEC: f64 = 2.0;

/// Authentication bucket size per participant: a nation's devices all
/// reconnecting at once after a relay restart.
pub const AUTH_BURST: u32 = 20;

/// `Auth` frames per second per remote address, before any check (token
/// bucket): bounds the signature checks and store work a flood from one
/// address can cause. Generous, since an office may sit behind one NAT
/// address.
pub const AUTH_RATE_PER_SEC_PER_IP: f64 = 20.0;

/// Authentication bucket size per remote address.
pub const AUTH_BURST_PER_IP: u32 = 200;

/// Remote addresses whose authentication bucket is remembered; beyond it
/// the idle ones (bucket full again) are forgotten, so a scan from many
/// addresses cannot grow the table without bound.
pub const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Connections per participant (all devices together). Twelve nations with a
/// front and back office and a few scripts each stay well below it.
pub const MAX_CONNECTIONS_PER_PARTICIPANT: usize = 16;

/// Connections in total, refused at QUIC accept time beyond this. Each idle
/// connection costs tens of KiB; 10 000 stay within a few hundred MiB.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Connections between accept and `Welcome`. An honest client spends one or
/// two round trips there; a full budget evicts the oldest (see
/// `admission`), so this only bounds what silent connections can hold.
pub const MAX_UNAUTHENTICATED_CONNECTIONS: usize = 1_000;

/// Connections per remote IP address. A national office behind one NAT has
/// a few devices; 256 leaves ample room and keeps one address from holding
/// the whole relay.
pub const MAX_CONNECTIONS_PER_IP: usize = 256;

/// Connection-level QUIC receive window until `Welcome`: `Auth` is well
/// under 1 KiB, so an unauthenticated peer cannot make the relay buffer
/// more than this. Raised to quinn's default (unbounded by the window;
/// bounded by the stream window and frame limit) after `Welcome`.
pub const PRE_AUTH_RECEIVE_WINDOW: u32 = 16 * 1024;

/// Time from the first QUIC packet to `Welcome`. An honest client needs one
/// round trip after the handshake; ten seconds covers satellite links.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// QUIC idle timeout. Clients send keep-alives every 10 s, so 60 s of silence
/// means the peer is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Deliveries sent to one connection and not yet acknowledged. Bounds the
/// relay's per-connection work and the client's unflushed archive writes;
/// 256 x 1 KiB keeps a 100 ms RTT link busy at over 2 MB/s.
pub const MAX_INFLIGHT_DELIVERIES: usize = 256;

/// Bytes of unacknowledged deliveries per connection (with
/// [`MAX_INFLIGHT_DELIVERIES`], whichever is reached first): 256 large
/// envelopes would otherwise be 256 MiB per connection for a reader that
/// never reads.
pub const MAX_INFLIGHT_DELIVERY_BYTES: usize = 8 * 1024 * 1024;

/// Devices (cursors) one participant may have. A new device label creates a
/// durable cursor that holds back deletion until it acknowledges; a nation
/// runs a handful of offices and scripts, not hundreds.
pub const MAX_DEVICES_PER_PARTICIPANT: usize = 32;

/// Queue of live deliveries per connection. When it is full the relay stops
/// queueing and the connection catches up by reading from the store.
pub const DELIVERY_QUEUE: usize = 512;

/// `Send` frames one connection may have awaiting their durable flush.
/// Pipelining lets one client share flushes (group commit) with itself.
pub const MAX_INFLIGHT_SENDS: usize = 128;

/// Version 2: after a roster change, envelopes sealed against the previous
/// epoch are still accepted this long (a client that sealed just before the
/// change need not re-seal); later ones get `stale_roster`. Short, because
/// the previous epoch may still list a revoked device's peers.
pub const ROSTER_GRACE: Duration = Duration::from_secs(60);

/// Allowed difference between a sender's `sent_at_ms` and the relay clock.
/// Bounds how long a captured envelope can be replayed (with the seen-id
/// window, see [`RETENTION`]) while tolerating badly set laptop clocks.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// How long an unacknowledged message, a seen msg_id and an unseen device
/// cursor are kept: 30 days, long enough for a POC's leave.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often acknowledged and expired messages are removed from the store.
pub const GC_INTERVAL: Duration = Duration::from_secs(30);

/// Time allowed for in-flight flushes and session closes on shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Operator-visible relay name sent in `Hello`.
pub const RELAY_NAME: &str = "tallinn-relay";
