//! The load generator: the same traffic and the same measurement code for
//! every system under test (the relay, the bare quinn forwarder, and through
//! `Traffic` and `Shared` the NATS baselines in [`crate::nats`]).
//!
//! Every participant of the channel is one QUIC connection that
//! authenticates like a real client. Envelopes are sealed before the timed
//! part. Senders run closed loop (at most `window` sends awaiting `Accepted`)
//! or open loop at a fixed rate, where latency is measured from the
//! *scheduled* send time (coordinated omission corrected). Receivers
//! acknowledge every 32 deliveries, as a client acknowledges per archive
//! batch. Latencies are kept exactly (every sample), not bucketed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use quinn::{Endpoint, RecvStream, SendStream};
use tallinn_common::defaults::{AUTH_EXPORTER_LABEL, SESSION_PREAMBLE};
use tallinn_common::envelope::seal;
use tallinn_common::identity::Identity;
use tallinn_common::message::{Message, MsgId, Tlp};
use tallinn_common::wire::{self, Frame};
use tokio::sync::{mpsc, Notify, Semaphore};

pub use crate::setup::Setup;

/// The msg_id of encoded envelope bytes, read at its fixed position
/// (after the body-length varint, the version byte and, for version 2, the
/// suite byte), without decoding.
pub fn msg_id_of(envelope: &[u8]) -> Option<MsgId> {
    let mut i = 0;
    loop {
        let b = *envelope.get(i)?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 5 {
            return None;
        }
    }
    let at = if *envelope.get(i)? >= 2 { i + 2 } else { i + 1 };
    let id: [u8; 16] = envelope.get(at..at + 16)?.try_into().ok()?;
    Some(MsgId(id))
}

/// What to run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Params {
    /// Connections in the channel (participants x devices).
    pub participants: usize,
    /// Devices per participant (more than 1: version 2).
    pub devices: usize,
    /// How many of them send.
    pub senders: usize,
    /// Message body size in bytes.
    pub payload: usize,
    /// Messages in total (split over the senders).
    pub messages: usize,
    /// Closed loop: sends in flight per sender. Ignored in open loop.
    pub window: usize,
    /// Open loop: total send rate in messages per second.
    pub rate: Option<f64>,
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

impl Latency {
    fn of(mut v: Vec<u64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
        Self {
            n: v.len(),
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: *v.last().unwrap_or(&0),
        }
    }
}

/// One run's measurements.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    /// Messages accepted per second.
    pub accepted_per_s: f64,
    /// Deliveries per second.
    pub deliveries_per_s: f64,
    /// Delivered envelope megabytes per second.
    pub mb_per_s: f64,
    /// Send → Accepted.
    pub accept_us: Latency,
    /// Send → Deliver at each recipient.
    pub deliver_us: Latency,
    /// Deliveries that never arrived.
    pub lost: u64,
    /// Wall time of the timed part.
    pub seconds: f64,
    /// Envelope size in bytes.
    pub envelope_bytes: usize,
}

/// The measurement state of one run, shared by every task of the load
/// generator whatever the system under test: which message is which, when
/// each was sent, the counters, and every latency sample.
pub(crate) struct Shared {
    index: HashMap<MsgId, usize>,
    sent_ns: Vec<AtomicU64>,
    accepted: AtomicU64,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    last_ns: AtomicU64,
    expected_deliveries: u64,
    expected_accepts: u64,
    /// How long the timed part may take before the run counts as stuck.
    budget: Duration,
    done: Notify,
    t0: Instant,
    accept_lat: Mutex<Vec<u64>>,
    deliver_lat: Mutex<Vec<u64>>,
}

/// Latency samples a task collects before merging them into [`Shared`] in
/// batches (keeps the locks cold).
#[derive(Default)]
pub(crate) struct Samples {
    accept: Vec<u64>,
    deliver: Vec<u64>,
}

impl Shared {
    /// Nanoseconds since the run's clock started.
    pub(crate) fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// The message number of an envelope of this run.
    pub(crate) fn index_of(&self, envelope: &[u8]) -> Option<usize> {
        msg_id_of(envelope).and_then(|m| self.index_of_id(&m))
    }

    /// The message number of a msg_id of this run.
    pub(crate) fn index_of_id(&self, id: &MsgId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Open loop: when the `i`-th send of a sender at `rate` per second is due.
    pub(crate) fn scheduled_ns(start_ns: u64, i: usize, rate: f64) -> u64 {
        start_ns + (i as f64 / rate * 1e9) as u64
    }

    /// Waits until the `i`-th send of a sender may go and returns the time
    /// its latencies count from. Open loop (`rate` per second for this
    /// sender): sleeps until the scheduled time and returns it (coordinated
    /// omission corrected). Closed loop: takes one permit of the sender's
    /// `window` for good (whoever sees the message accepted adds it back)
    /// and returns now. `None` if the window was closed.
    pub(crate) async fn pace(
        &self,
        start_ns: u64,
        i: usize,
        rate: Option<f64>,
        window: &Semaphore,
    ) -> Option<u64> {
        match rate {
            Some(r) => {
                // Open loop: latency counts from the scheduled time.
                let scheduled = Self::scheduled_ns(start_ns, i, r);
                let now = self.now_ns();
                if scheduled > now {
                    tokio::time::sleep(Duration::from_nanos(scheduled - now)).await;
                }
                Some(scheduled)
            }
            None => {
                window.acquire().await.ok()?.forget();
                Some(self.now_ns())
            }
        }
    }

    /// Records that message `idx` was sent (or scheduled) at `at`.
    pub(crate) fn mark_sent(&self, idx: usize, at: u64) {
        self.sent_ns[idx].store(at, Ordering::SeqCst);
    }

    fn since_sent_us(&self, idx: usize, now: u64) -> u64 {
        (now.saturating_sub(self.sent_ns[idx].load(Ordering::SeqCst))) / 1000
    }

    /// Counts one acceptance (of message `idx`, if known) seen at `now`.
    /// Call [`Shared::progress`] afterwards.
    pub(crate) fn accepted(&self, idx: Option<usize>, now: u64, samples: &mut Samples) {
        if let Some(i) = idx {
            samples.accept.push(self.since_sent_us(i, now));
        }
        self.accepted.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts one delivery of `envelope` seen at `now`; true when it was the
    /// last delivery the run expects (time for a final acknowledgement).
    /// Call [`Shared::progress`] afterwards.
    pub(crate) fn delivered(&self, envelope: &[u8], now: u64, samples: &mut Samples) -> bool {
        if let Some(i) = self.index_of(envelope) {
            samples.deliver.push(self.since_sent_us(i, now));
        }
        self.delivered_bytes
            .fetch_add(envelope.len() as u64, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::SeqCst) + 1 >= self.expected_deliveries
    }

    /// Notes activity at `now` and wakes the waiter once everything expected
    /// was accepted and delivered.
    pub(crate) fn progress(&self, now: u64) {
        self.last_ns.fetch_max(now, Ordering::SeqCst);
        self.check_done();
    }

    fn is_done(&self) -> bool {
        self.accepted.load(Ordering::SeqCst) >= self.expected_accepts
            && self.delivered.load(Ordering::SeqCst) >= self.expected_deliveries
    }

    fn check_done(&self) {
        if self.is_done() {
            self.done.notify_waiters();
            self.done.notify_one();
        }
    }

    /// Moves a task's samples into the shared lists: in batches of 256
    /// while running, everything (`all`) when the task ends.
    pub(crate) fn merge(&self, samples: &mut Samples, all: bool) {
        if all || samples.accept.len() >= 256 {
            self.accept_lat
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut samples.accept);
        }
        if all || samples.deliver.len() >= 256 {
            self.deliver_lat
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut samples.deliver);
        }
    }

    /// Waits until everything expected was accepted and delivered, or the
    /// budget ran out (false).
    pub(crate) async fn wait_done(&self) -> bool {
        tokio::time::timeout(self.budget, async {
            loop {
                let notified = self.done.notified();
                if self.is_done() {
                    break;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// The end of the timed part: the last activity if the run finished,
    /// now if it ran out of time.
    pub(crate) fn end_ns(&self, finished: bool) -> u64 {
        if finished {
            self.last_ns.load(Ordering::SeqCst)
        } else {
            self.now_ns()
        }
    }

    /// The run's measurements; call once every task has merged its samples.
    pub(crate) fn outcome(&self, start_ns: u64, end_ns: u64, envelope_bytes: usize) -> Outcome {
        let secs = (end_ns.saturating_sub(start_ns)) as f64 / 1e9;
        let delivered = self.delivered.load(Ordering::SeqCst);
        let accept =
            std::mem::take(&mut *self.accept_lat.lock().unwrap_or_else(|p| p.into_inner()));
        let deliver =
            std::mem::take(&mut *self.deliver_lat.lock().unwrap_or_else(|p| p.into_inner()));
        Outcome {
            accepted_per_s: self.accepted.load(Ordering::SeqCst) as f64 / secs,
            deliveries_per_s: delivered as f64 / secs,
            mb_per_s: self.delivered_bytes.load(Ordering::SeqCst) as f64 / secs / 1e6,
            accept_us: Latency::of(accept),
            deliver_us: Latency::of(deliver),
            lost: self.expected_deliveries.saturating_sub(delivered),
            seconds: secs,
            envelope_bytes,
        }
    }
}

/// One run's traffic: the envelopes of each sender, sealed before the timed
/// part, and the measurement state that knows them.
pub(crate) struct Traffic {
    /// Envelope bytes, one list per sender.
    pub(crate) envelopes: Vec<Vec<Vec<u8>>>,
    /// Size of one envelope.
    pub(crate) envelope_bytes: usize,
    /// Counters and samples; its clock starts here.
    pub(crate) shared: Arc<Shared>,
}

impl Traffic {
    /// Seals the run's messages and sets up its measurement state: every
    /// message accepted once and delivered to each of the other
    /// `participants - 1` members.
    ///
    /// # Errors
    /// Sealing failures.
    pub(crate) fn prepare(setup: &Setup, p: &Params) -> Result<Self> {
        let envelopes = preseal(setup, p)?;
        let envelope_bytes = envelopes
            .first()
            .and_then(|v| v.first())
            .map_or(0, Vec::len);
        let total: usize = envelopes.iter().map(Vec::len).sum();
        let mut index = HashMap::with_capacity(total);
        for (i, e) in envelopes.iter().flatten().enumerate() {
            index.insert(msg_id_of(e).context("msg_id")?, i);
        }
        let shared = Arc::new(Shared {
            index,
            sent_ns: (0..total).map(|_| AtomicU64::new(0)).collect(),
            accepted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            delivered_bytes: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            expected_deliveries: (total * (p.participants - 1)) as u64,
            expected_accepts: total as u64,
            budget: Duration::from_secs(30)
                + Duration::from_millis((total as u64 * p.participants as u64) / 20),
            done: Notify::new(),
            t0: Instant::now(),
            accept_lat: Mutex::new(Vec::with_capacity(total)),
            deliver_lat: Mutex::new(Vec::with_capacity(total * (p.participants - 1))),
        });
        Ok(Self {
            envelopes,
            envelope_bytes,
            shared,
        })
    }
}

/// Seals every message before the timed part, on all cores.
pub(crate) fn preseal(setup: &Setup, p: &Params) -> Result<Vec<Vec<Vec<u8>>>> {
    let per = p.messages.div_ceil(p.senders);
    let body = "x".repeat(p.payload);
    let now = tallinn_common::unix_ms(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?,
    );
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..p.senders)
            .map(|s| {
                let (id, roster, body) = (setup.ids[s].clone(), setup.roster.clone(), body.clone());
                let label = setup.labels[s].clone();
                let state = setup.log.as_ref().map(|l| l.current().clone());
                scope.spawn(move || -> Result<Vec<Vec<u8>>> {
                    (0..per)
                        .map(|_| {
                            let m = Message::note(Tlp::Clear, "bench", body.clone());
                            Ok(match &state {
                                Some(st) => tallinn_common::envelope::seal_v2(
                                    &id, &label, st, "bench", &m, now,
                                )?,
                                None => seal(&id, &roster, "bench", &m, now)?,
                            }
                            .into_bytes())
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("sealing thread panicked"))?)
            .collect()
    })
}

/// A client endpoint pinned to the server certificate: the real client's
/// (`tallinn_client::connection::endpoint`), so the load generator trusts and
/// configures QUIC exactly as a client does.
///
/// # Errors
/// Setup failures.
pub fn endpoint(pin: [u8; 32]) -> Result<Endpoint> {
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    Ok(tallinn_client::connection::endpoint(
        Some(&tallinn_client::config::Trust::Pin(pin)),
        loopback,
        false,
    )?)
}

async fn read(recv: &mut RecvStream) -> Option<Frame> {
    let mut p = [0u8; 4];
    recv.read_exact(&mut p).await.ok()?;
    let len = wire::frame_len(p, u32::MAX).ok()?;
    let mut buf = vec![0u8; len];
    recv.read_exact(&mut buf).await.ok()?;
    wire::decode_frame(&buf).ok()
}

/// Connects and authenticates one participant.
///
/// # Errors
/// Connection or protocol failures.
pub async fn login(
    ep: &Endpoint,
    addr: SocketAddr,
    id: &Identity,
) -> Result<(quinn::Connection, SendStream, RecvStream)> {
    login_as(ep, addr, id, "bench").await
}

/// [`login`] as device `device`.
///
/// # Errors
/// Connection or protocol failures.
pub async fn login_as(
    ep: &Endpoint,
    addr: SocketAddr,
    id: &Identity,
    device: &str,
) -> Result<(quinn::Connection, SendStream, RecvStream)> {
    let conn = ep.connect(addr, "localhost")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&SESSION_PREAMBLE).await?;
    let Some(Frame::Hello { nonce, .. }) = read(&mut recv).await else {
        bail!("no Hello");
    };
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, AUTH_EXPORTER_LABEL, &nonce)
        .map_err(|_| anyhow!("exporter"))?;
    send.write_all(&wire::encode_frame(&wire::sign_auth(
        id, device, &nonce, &exporter,
    )))
    .await?;
    match read(&mut recv).await {
        Some(Frame::Welcome { .. }) => Ok((conn, send, recv)),
        other => bail!("expected Welcome, got {other:?}"),
    }
}

/// Runs one measurement against the server at `addr`.
///
/// # Errors
/// Setup failures; losses are reported in the outcome.
pub async fn run(setup: &Setup, addr: SocketAddr, pin: [u8; 32], p: &Params) -> Result<Outcome> {
    let Traffic {
        envelopes,
        envelope_bytes,
        shared,
    } = Traffic::prepare(setup, p)?;

    // Connect everyone first (not timed).
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut endpoints = Vec::new();
    let mut permits = Vec::new();
    for (i, id) in setup.ids.iter().enumerate().take(p.participants) {
        let ep = endpoint(pin)?;
        let (conn, mut send, recv) = login_as(&ep, addr, id, &setup.labels[i])
            .await
            .with_context(|| format!("login {i}"))?;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4096);
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if send.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        let sem = Arc::new(Semaphore::new(p.window.max(1)));
        permits.push(sem.clone());
        readers.push(tokio::spawn(reader(
            recv,
            tx.clone(),
            shared.clone(),
            sem,
            i < p.senders,
        )));
        writers.push(tx);
        endpoints.push((ep, conn));
    }

    // The timed part.
    if std::env::var_os("TALLINN_BENCH_VERBOSE").is_some() {
        eprintln!("timed part starts");
    }
    let start_ns = shared.now_ns();
    let mut sends = Vec::new();
    for (s, list) in envelopes.into_iter().enumerate() {
        let tx = writers[s].clone();
        let sem = permits[s].clone();
        let shared = shared.clone();
        let rate = p.rate.map(|r| r / p.senders as f64);
        sends.push(tokio::spawn(async move {
            for (i, env) in list.into_iter().enumerate() {
                let Some(idx) = shared.index_of(&env) else {
                    continue;
                };
                let Some(at) = shared.pace(start_ns, i, rate, &sem).await else {
                    return;
                };
                shared.mark_sent(idx, at);
                if tx
                    .send(wire::encode_frame(&Frame::Send { envelope: env }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    let finished = shared.wait_done().await;
    let end_ns = shared.end_ns(finished);
    for s in sends {
        s.abort();
    }
    // Closing ends every reader's loop, which publishes its last samples.
    for (ep, conn) in &endpoints {
        conn.close(0u32.into(), b"done");
        ep.close(0u32.into(), b"done");
    }
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    Ok(shared.outcome(start_ns, end_ns, envelope_bytes))
}

async fn reader(
    mut recv: RecvStream,
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    sender: bool,
) {
    let mut since_ack = 0u32;
    let mut samples = Samples::default();
    while let Some(frame) = read(&mut recv).await {
        let now = shared.now_ns();
        match frame {
            // Version 2 answers with a signed receipt instead.
            Frame::Accepted { msg_id, .. }
            | Frame::Receipt {
                receipt:
                    tallinn_common::evidence::Receipt {
                        body: tallinn_common::evidence::ReceiptBody { msg_id, .. },
                        ..
                    },
            } => {
                if sender {
                    sem.add_permits(1);
                }
                shared.accepted(shared.index_of_id(&msg_id), now, &mut samples);
                shared.progress(now);
            }
            Frame::Deliver { seq, envelope, .. } => {
                since_ack += 1;
                let all = shared.delivered(&envelope, now, &mut samples);
                if since_ack >= 32 || all {
                    since_ack = 0;
                    let _ = tx.try_send(wire::encode_frame(&Frame::Ack { up_to_seq: seq }));
                }
                shared.progress(now);
            }
            _ => {}
        }
        // Publish samples in batches to keep the lock cold.
        shared.merge(&mut samples, false);
    }
    shared.merge(&mut samples, true);
}
