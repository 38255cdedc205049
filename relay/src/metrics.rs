//! Relay metrics: one struct of counters and histograms, rendered in the
//! Prometheus text format and served with `/healthz` on a separate local
//! HTTP address.
//!
//! Paired counters (`*_accepted_total` / `*_closed_total`) let an operator
//! derive what is open; histograms use fixed buckets so recording is a few
//! atomic adds, cheap enough for every send.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tallinn_common::wire::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::store::Store;

/// A fixed-bucket histogram of seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Bucket bounds (seconds) for latencies: 50 µs to 5 s.
const LATENCY_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Bucket bounds for batch sizes (messages per flush).
const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records a duration.
    pub fn observe(&self, d: Duration) {
        self.observe_value(d.as_secs_f64());
    }

    /// Records a plain value.
    pub fn observe_value(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((v * 1e6) as u64, Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Mean of the observations (0 if none).
    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum_micros.load(Relaxed) as f64 / 1e6 / n as f64
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            cum += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count());
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6,
            self.count()
        );
    }
}

/// Counters indexed by [`ErrorCode`].
#[derive(Debug)]
pub struct ByCode([AtomicU64; ErrorCode::ALL.len()]);

impl ByCode {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// Counts one event with `code`.
    pub fn inc(&self, code: ErrorCode) {
        if let Some(c) = self.0.get(code.index() as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The count for `code`.
    pub fn get(&self, code: ErrorCode) -> u64 {
        self.0
            .get(code.index() as usize)
            .map_or(0, |c| c.load(Relaxed))
    }
}

/// Every relay metric.
#[derive(Debug)]
pub struct Metrics {
    /// QUIC connections accepted (handshake started).
    pub connections_accepted: AtomicU64,
    /// Connections closed (any reason), pairs with `connections_accepted`.
    pub connections_closed: AtomicU64,
    /// Connections refused at accept time (a limit with nothing to evict).
    pub connections_refused: AtomicU64,
    /// Unauthenticated connections closed to admit a newer one.
    pub connections_evicted: AtomicU64,
    /// Connection attempts answered with a QUIC Retry (address validation).
    pub connections_retried: AtomicU64,
    /// Sessions authenticated (`Welcome` sent).
    pub sessions_authenticated: AtomicU64,
    /// Sessions closed with `replaced`: a newer session of the same
    /// participant and device took over the cursor.
    pub sessions_replaced: AtomicU64,
    /// Authentication failures by code.
    pub auth_failures: ByCode,
    /// Envelopes accepted (durable).
    pub sends_accepted: AtomicU64,
    /// Envelopes rejected, by code.
    pub sends_rejected: ByCode,
    /// Deliver frames sent.
    pub deliveries: AtomicU64,
    /// Deliveries that were read back from the store (backlog or a lagging
    /// connection catching up) rather than pushed live.
    pub deliveries_from_store: AtomicU64,
    /// Live deliveries not queued because a connection's queue was full (the
    /// connection then catches up from the store).
    pub delivery_queue_overflows: AtomicU64,
    /// Ack frames received.
    pub acks: AtomicU64,
    /// Flushes (group commits).
    pub flushes: AtomicU64,
    /// Flush latency.
    pub flush_seconds: Histogram,
    /// Messages per flush.
    pub flush_batch_messages: Histogram,
    /// Time from a `Send` frame's arrival to its `Accepted`.
    pub send_to_accept_seconds: Histogram,
    /// Messages removed because every recipient device acked them.
    pub messages_acked_removed: AtomicU64,
    /// Messages removed at retention without every ack.
    pub messages_expired: AtomicU64,
    /// Roster reloads that succeeded.
    pub roster_reloads: AtomicU64,
    /// Roster reloads refused (invalid roster; the old one is kept).
    pub roster_reload_failures: AtomicU64,
    /// TLS key exchanges by kind, and refusals of classical-only clients.
    pub kx: std::sync::Arc<crate::tls::KxCounters>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections_accepted: AtomicU64::new(0),
            connections_closed: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_evicted: AtomicU64::new(0),
            connections_retried: AtomicU64::new(0),
            sessions_authenticated: AtomicU64::new(0),
            sessions_replaced: AtomicU64::new(0),
            auth_failures: ByCode::new(),
            sends_accepted: AtomicU64::new(0),
            sends_rejected: ByCode::new(),
            deliveries: AtomicU64::new(0),
            deliveries_from_store: AtomicU64::new(0),
            delivery_queue_overflows: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_seconds: Histogram::new(LATENCY_BOUNDS),
            flush_batch_messages: Histogram::new(BATCH_BOUNDS),
            send_to_accept_seconds: Histogram::new(LATENCY_BOUNDS),
            messages_acked_removed: AtomicU64::new(0),
            messages_expired: AtomicU64::new(0),
            roster_reloads: AtomicU64::new(0),
            roster_reload_failures: AtomicU64::new(0),
            kx: std::sync::Arc::default(),
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: &AtomicU64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
        v.load(Relaxed)
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn by_code(out: &mut String, name: &str, help: &str, v: &ByCode) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for code in ErrorCode::ALL {
        let _ = writeln!(out, "{name}{{code=\"{}\"}} {}", code.as_str(), v.get(code));
    }
}

impl Metrics {
    /// Renders the Prometheus text exposition, with store figures.
    pub fn render(&self, store: &dyn Store, open_connections: u64) -> String {
        let mut o = String::with_capacity(8192);
        counter(
            &mut o,
            "tallinn_connections_accepted_total",
            "QUIC connections accepted.",
            &self.connections_accepted,
        );
        counter(
            &mut o,
            "tallinn_connections_closed_total",
            "Connections closed.",
            &self.connections_closed,
        );
        counter(
            &mut o,
            "tallinn_connections_refused_total",
            "Connections refused at accept time.",
            &self.connections_refused,
        );
        counter(
            &mut o,
            "tallinn_connections_evicted_total",
            "Unauthenticated connections closed to admit a newer one.",
            &self.connections_evicted,
        );
        counter(
            &mut o,
            "tallinn_connections_retried_total",
            "Connection attempts answered with a QUIC Retry (address validation).",
            &self.connections_retried,
        );
        let _ = writeln!(
            o,
            "# HELP tallinn_tls_key_exchanges_total TLS key exchanges completed, by kind.\n# TYPE tallinn_tls_key_exchanges_total counter\ntallinn_tls_key_exchanges_total{{group=\"X25519MLKEM768\"}} {}\ntallinn_tls_key_exchanges_total{{group=\"classical\"}} {}",
            self.kx.hybrid.load(Relaxed),
            self.kx.classical.load(Relaxed)
        );
        counter(
            &mut o,
            "tallinn_tls_refused_classical_total",
            "Handshakes refused: the client offered no post-quantum key exchange.",
            &self.kx.refused_classical,
        );
        gauge(
            &mut o,
            "tallinn_connections_open",
            "Connections currently open.",
            open_connections,
        );
        counter(
            &mut o,
            "tallinn_sessions_authenticated_total",
            "Sessions that completed authentication.",
            &self.sessions_authenticated,
        );
        counter(
            &mut o,
            "tallinn_sessions_replaced_total",
            "Sessions closed because a newer session of the same device took over.",
            &self.sessions_replaced,
        );
        by_code(
            &mut o,
            "tallinn_auth_failures_total",
            "Authentication failures by error code.",
            &self.auth_failures,
        );
        counter(
            &mut o,
            "tallinn_sends_accepted_total",
            "Envelopes accepted and durably stored.",
            &self.sends_accepted,
        );
        by_code(
            &mut o,
            "tallinn_sends_rejected_total",
            "Envelopes rejected by error code.",
            &self.sends_rejected,
        );
        counter(
            &mut o,
            "tallinn_deliveries_total",
            "Deliver frames sent.",
            &self.deliveries,
        );
        counter(
            &mut o,
            "tallinn_deliveries_from_store_total",
            "Deliveries read back from the store (backlog or catch-up).",
            &self.deliveries_from_store,
        );
        counter(
            &mut o,
            "tallinn_delivery_queue_overflows_total",
            "Live deliveries diverted to the store because a connection queue was full.",
            &self.delivery_queue_overflows,
        );
        counter(
            &mut o,
            "tallinn_acks_total",
            "Ack frames received.",
            &self.acks,
        );
        counter(
            &mut o,
            "tallinn_flushes_total",
            "Group-commit flushes.",
            &self.flushes,
        );
        self.flush_seconds.render(
            &mut o,
            "tallinn_flush_seconds",
            "Latency of one group-commit flush.",
        );
        self.flush_batch_messages.render(
            &mut o,
            "tallinn_flush_batch_messages",
            "Messages made durable per flush.",
        );
        self.send_to_accept_seconds.render(
            &mut o,
            "tallinn_send_to_accept_seconds",
            "Time from Send received to Accepted sent.",
        );
        counter(
            &mut o,
            "tallinn_messages_acked_removed_total",
            "Messages removed after every recipient device acked.",
            &self.messages_acked_removed,
        );
        counter(
            &mut o,
            "tallinn_messages_expired_total",
            "Messages removed at retention without every ack.",
            &self.messages_expired,
        );
        counter(
            &mut o,
            "tallinn_roster_reloads_total",
            "Successful roster reloads.",
            &self.roster_reloads,
        );
        counter(
            &mut o,
            "tallinn_roster_reload_failures_total",
            "Refused roster reloads.",
            &self.roster_reload_failures,
        );
        match store.stats() {
            Ok(s) => {
                gauge(
                    &mut o,
                    "tallinn_store_messages",
                    "Messages in the store.",
                    s.messages,
                );
                gauge(
                    &mut o,
                    "tallinn_store_message_bytes",
                    "Bytes of stored log entries.",
                    s.envelope_bytes,
                );
                gauge(
                    &mut o,
                    "tallinn_store_disk_bytes",
                    "Bytes the store occupies on disk.",
                    s.disk_bytes,
                );
                let _ = writeln!(o, "# HELP tallinn_inbox_depth Messages waiting per participant.\n# TYPE tallinn_inbox_depth gauge");
                for (p, d) in s.inbox_depth {
                    let _ = writeln!(o, "tallinn_inbox_depth{{participant=\"{p}\"}} {d}");
                }
                gauge(&mut o, "tallinn_store_up", "1 if the store answered.", 1);
            }
            Err(_) => gauge(&mut o, "tallinn_store_up", "1 if the store answered.", 0),
        }
        o
    }
}

/// `tallinn_build_info` (the version as a label) and the roster in force:
/// `tallinn_roster_info` with its fingerprint (version 1: the roster
/// file's; version 2: the log head hash and the deployment), and for
/// version 2 `tallinn_roster_epoch`. An operator's alert compares the
/// fingerprint with the one agreed out of band.
pub(crate) fn render_identity(o: &mut String, rules: &crate::rules::RosterRules) {
    let _ = writeln!(
        o,
        "# HELP tallinn_build_info The relay's build; always 1.\n# TYPE tallinn_build_info gauge\ntallinn_build_info{{version=\"{}\",protocol=\"tallinn/1\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let labels = match rules {
        crate::rules::RosterRules::V1(r) => {
            format!("roster=\"v1\",fingerprint=\"{}\"", r.fingerprint_hex())
        }
        crate::rules::RosterRules::V2(l) => format!(
            "roster=\"v2\",fingerprint=\"{}\",deployment=\"{}\"",
            hex::encode(l.log.head_hash()),
            hex::encode(l.log.deployment())
        ),
    };
    let _ = writeln!(
        o,
        "# HELP tallinn_roster_info The roster in force (fingerprint as a label); always 1.\n# TYPE tallinn_roster_info gauge\ntallinn_roster_info{{{labels}}} 1"
    );
    if let Some(e) = rules.epoch() {
        gauge(
            o,
            "tallinn_roster_epoch",
            "The roster-log epoch in force.",
            e,
        );
    }
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` until the task is
/// aborted. Requests are bounded (8 KiB, 5 s) so a stray client cannot pin
/// resources.
pub(crate) async fn serve_http(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    healthy: Arc<dyn Fn() -> bool + Send + Sync>,
) {
    // Request tasks live in this set: aborting the server drops them too.
    let mut requests = tokio::task::JoinSet::new();
    loop {
        while requests.try_join_next().is_some() {}
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        let healthy = healthy.clone();
        requests.spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    let Some(slot) = buf.get_mut(n..) else { break };
                    match sock.read(slot).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            n += k;
                            if buf
                                .get(..n)
                                .is_some_and(|b| b.windows(4).any(|w| w == b"\r\n\r\n"))
                            {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", render()),
                "/healthz" if healthy() => ("200 OK", "text/plain", "ok\n".to_string()),
                "/healthz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "unhealthy\n".to_string(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// The address the metrics server is bound to.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
