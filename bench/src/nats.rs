//! The `nats` baselines: the same pre-sealed envelopes, the same
//! participants and the same measurement code as [`crate::load`], through a
//! `nats-server` (on PATH; the harness does not install it) with TLS, using
//! the `async-nats` client:
//!
//! * [`NatsMode::Core`]: core pub/sub. Every participant subscribes to
//!   `bench` on its own connection (`no_echo`, so senders do not get their
//!   own messages back); senders publish the envelope bytes there.
//! * [`NatsMode::JetStream`], [`NatsMode::JetStreamSyncAlways`]: a file
//!   stream `BENCH`; sender `s` publishes to `bench.s<s>` and a message counts
//!   as accepted at its `PubAck`. Every participant reads through its own
//!   durable pull consumer, filtered to the other senders' subjects, with
//!   `AckPolicy::All`, acknowledging every 32nd delivery (and the run's last)
//!   as the relay's load generator does. The second mode sets
//!   `sync_interval: always` (an fsync per write) instead of the default
//!   periodic sync.
//!
//! One connection per participant, closed loop (`window` outstanding per
//! sender) or open loop (latency from the scheduled time), lost deliveries
//! (client- or server-side slow consumers included) reported as `lost`,
//! exactly as for the relay.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::{self, consumer, context::PublishAckFuture, stream};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::load::{Outcome, Params, Samples, Setup, Shared, Traffic};

/// The server binary, looked up on PATH.
pub const PROGRAM: &str = "nats-server";

/// What precedes the client address in `nats-server`'s startup log.
pub const LISTEN_MARKER: &str = "Listening for client connections on ";

/// Core NATS subject of the channel; JetStream senders publish below it.
const SUBJECT: &str = "bench";
/// The JetStream stream.
const STREAM: &str = "BENCH";
/// Core NATS: a fence after at most this many publishes.
const FENCE_EVERY: usize = 16;
/// JetStream receivers acknowledge every this many deliveries.
const ACK_EVERY: u32 = 32;
/// JetStream pull batch per receiver.
const PULL_BATCH: usize = 512;
/// Messages a subscription buffers in the client before it drops them.
const SUBSCRIPTION_CAPACITY: usize = 1 << 16;
/// Commands a connection queues before `publish` waits.
const CLIENT_CAPACITY: usize = 8192;
/// A receiver gives up after this many stream errors in a row.
const MAX_ERRORS_IN_A_ROW: u32 = 64;

/// Which NATS flavour carries the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum NatsMode {
    /// Core pub/sub, no persistence; accepted = processed by the server.
    Core,
    /// JetStream file storage, default sync (`sync_interval` 2 min).
    JetStream,
    /// JetStream file storage with `sync_interval: always`.
    JetStreamSyncAlways,
}

/// Whether `nats-server` is on PATH (`nats-server --version` succeeds).
pub fn available() -> bool {
    Command::new(PROGRAM)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Writes `nats.conf` into the setup's directory: TLS with the setup's
/// certificate (`localhost`, the name clients connect to) on
/// `127.0.0.1:port`, payloads up to 8 MiB, a generous write deadline, and
/// for JetStream a file store in `<dir>/jetstream`.
///
/// # Errors
/// I/O failures, or a directory path the config syntax cannot quote.
pub fn write_config(setup: &Setup, port: u16, mode: NatsMode) -> Result<PathBuf> {
    let quoted = |p: &Path| -> Result<String> {
        let s = p.to_str().context("non-UTF-8 path")?;
        if s.contains(['"', '\\']) {
            bail!("path {s:?} cannot be quoted in a nats-server config");
        }
        Ok(format!("\"{s}\""))
    };
    let mut text = String::new();
    writeln!(text, "# nats-server under test, written by tallinn-bench")?;
    writeln!(text, "listen: \"127.0.0.1:{port}\"")?;
    // Large enough for 16 KiB bodies and their envelope (and far beyond).
    writeln!(text, "max_payload: 8388608")?;
    writeln!(text, "write_deadline: \"30s\"")?;
    writeln!(text, "logtime: false")?;
    writeln!(text, "tls {{")?;
    writeln!(
        text,
        "  cert_file: {}",
        quoted(&setup.dir.join("cert.pem"))?
    )?;
    writeln!(text, "  key_file: {}", quoted(&setup.dir.join("key.pem"))?)?;
    writeln!(text, "  timeout: 5")?;
    writeln!(text, "}}")?;
    if mode != NatsMode::Core {
        let store = setup.dir.join("jetstream");
        std::fs::create_dir_all(&store)?;
        writeln!(text, "jetstream {{")?;
        writeln!(text, "  store_dir: {}", quoted(&store)?)?;
        if mode == NatsMode::JetStreamSyncAlways {
            writeln!(text, "  sync_interval: always")?;
        }
        writeln!(text, "}}")?;
    }
    let path = setup.dir.join("nats.conf");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Connection events worth reporting.
#[derive(Default)]
struct Events {
    slow_consumer: AtomicU64,
    disconnected: AtomicU64,
}

impl Events {
    fn note(&self, event: &async_nats::Event) {
        match event {
            async_nats::Event::SlowConsumer(_) => {
                self.slow_consumer.fetch_add(1, Ordering::Relaxed);
            }
            async_nats::Event::Disconnected => {
                self.disconnected.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// One participant's connection: TLS required, trusting only `ca_pem`.
async fn connect(
    url: &str,
    ca_pem: &Path,
    name: String,
    events: Arc<Events>,
) -> Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .name(name)
        .require_tls(true)
        .add_root_certificates(ca_pem.to_path_buf())
        .no_echo()
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .client_capacity(CLIENT_CAPACITY)
        .connection_timeout(Duration::from_secs(10))
        .request_timeout(Some(Duration::from_secs(60)))
        // Reconnect after a slow-consumer disconnect, but stop trying once
        // the server is gone.
        .max_reconnects(Some(10_usize))
        .event_callback(move |event| {
            events.note(&event);
            async {}
        })
        .connect(url)
        .await?)
}

/// A round trip through the server: a request nobody subscribes to comes
/// back as the server's 503 "no responders" status once the server has
/// processed everything this connection sent before it (subscriptions
/// included).
async fn round_trip(client: &async_nats::Client) -> Result<()> {
    match client.request("bench-ready", Bytes::new()).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), async_nats::RequestErrorKind::NoResponders) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs one measurement against the `nats-server` on `127.0.0.1:port`
/// (connecting as `localhost`, the certificate's name), trusting only the
/// certificate in `ca_pem`.
///
/// What "accepted" means:
///
/// * [`NatsMode::Core`] has no per-message acknowledgement. A message counts
///   as accepted once the server has *processed* it, i.e. handed it to every
///   subscriber's outbound buffer (or dropped it for a slow consumer). The
///   sender establishes that with a fence: an empty publish to a subject
///   nobody subscribes to, with a reply subject on the sender's own
///   subscription. The server processes a connection's messages in order
///   and answers such a publish with a 503 "no responders" status, so the
///   answer confirms every message sent before the fence. (`Client::flush`
///   in async-nats only flushes the socket, it is no round trip.) A sender
///   fences after every 16 publishes, before it waits (for a window permit
///   or the next scheduled send) and at the end; the answer records those
///   messages as accepted, with latency from each one's send time, and
///   returns their window permits.
/// * JetStream: the stream's `PubAck` (stored; with `sync_interval: always`
///   also fsynced). A closed-loop sender keeps `window` `PubAck`s
///   outstanding.
///
/// # Errors
/// Setup failures (connect, subscribe, stream or consumer creation); losses
/// are reported in the outcome.
pub async fn run(
    setup: &Setup,
    port: u16,
    ca_pem: &Path,
    mode: NatsMode,
    p: &Params,
) -> Result<Outcome> {
    let Traffic {
        envelopes,
        envelope_bytes,
        shared,
    } = Traffic::prepare(setup, p)?;
    let url = format!("tls://localhost:{port}");
    let events = Arc::new(Events::default());
    let (stop_tx, stop) = watch::channel(false);

    // Connect everyone first (not timed).
    let mut clients = Vec::with_capacity(p.participants);
    for i in 0..p.participants {
        let client = connect(&url, ca_pem, format!("P{i:02}"), events.clone())
            .await
            .with_context(|| format!("connecting participant {i} to {url}"))?;
        clients.push(client);
    }
    let windows: Vec<Arc<Semaphore>> = (0..p.senders)
        .map(|_| Arc::new(Semaphore::new(p.window.max(1))))
        .collect();
    // Receivers and acceptance collectors: they run until `stop`.
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut kits = Vec::with_capacity(p.senders);
    match mode {
        NatsMode::Core => {
            for client in &clients {
                let sub = client.subscribe(SUBJECT).await?;
                tasks.push(tokio::spawn(core_receiver(
                    sub,
                    shared.clone(),
                    stop.clone(),
                )));
            }
            for (s, window) in windows.iter().enumerate() {
                let client = clients[s].clone();
                let reply_prefix = client.new_inbox();
                let answers = client.subscribe(format!("{reply_prefix}.*")).await?;
                let (to_confirm, batches) = mpsc::unbounded_channel();
                tasks.push(tokio::spawn(core_confirmer(
                    answers,
                    batches,
                    shared.clone(),
                    window.clone(),
                    stop.clone(),
                )));
                kits.push(Kit::Core(Fencer {
                    client,
                    subject: format!("bench-fence.s{s}"),
                    reply_prefix,
                    seq: 0,
                    batch: Vec::with_capacity(FENCE_EVERY),
                    to_confirm,
                }));
            }
        }
        NatsMode::JetStream | NatsMode::JetStreamSyncAlways => {
            let sender_subject = |s: usize| format!("{SUBJECT}.s{s}");
            jetstream::new(clients[0].clone())
                .create_stream(stream::Config {
                    name: STREAM.to_string(),
                    subjects: vec![format!("{SUBJECT}.>")],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .context("creating the JetStream stream")?;
            for (r, client) in clients.iter().enumerate() {
                // Everyone reads every sender but itself.
                let filter_subjects = if r < p.senders {
                    let others: Vec<String> = (0..p.senders)
                        .filter(|&s| s != r)
                        .map(sender_subject)
                        .collect();
                    if others.is_empty() {
                        continue; // the only sender: nothing to receive
                    }
                    others
                } else {
                    Vec::new() // the whole stream
                };
                let durable = jetstream::new(client.clone())
                    .get_stream(STREAM)
                    .await?
                    .create_consumer(consumer::pull::Config {
                        durable_name: Some(format!("r{r:02}")),
                        ack_policy: consumer::AckPolicy::All,
                        ack_wait: Duration::from_secs(300),
                        max_ack_pending: 1 << 16,
                        filter_subjects,
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("creating the consumer of participant {r}"))?;
                let messages = durable
                    .stream()
                    .max_messages_per_batch(PULL_BATCH)
                    .messages()
                    .await?;
                tasks.push(tokio::spawn(js_receiver(
                    messages,
                    shared.clone(),
                    stop.clone(),
                )));
            }
            for (s, window) in windows.iter().enumerate() {
                let mut js = jetstream::new(clients[s].clone());
                js.set_timeout(Duration::from_secs(30));
                let (acks, pending) = mpsc::unbounded_channel();
                tasks.push(tokio::spawn(js_acks(
                    pending,
                    shared.clone(),
                    window.clone(),
                    stop.clone(),
                )));
                kits.push(Kit::JetStream {
                    js,
                    subject: sender_subject(s),
                    acks,
                });
            }
        }
    }
    // Every subscription and pull request is in place at the server.
    for client in &clients {
        round_trip(client).await?;
    }

    // The timed part.
    if std::env::var_os("TALLINN_BENCH_VERBOSE").is_some() {
        eprintln!("timed part starts");
    }
    let start_ns = shared.now_ns();
    let rate = p.rate.map(|r| r / p.senders as f64);
    let mut sends = Vec::new();
    for ((list, kit), window) in envelopes.into_iter().zip(kits).zip(windows) {
        let lane = Lane {
            shared: shared.clone(),
            window,
            start_ns,
            rate,
        };
        sends.push(match kit {
            Kit::Core(fencer) => tokio::spawn(core_sender(fencer, list, lane)),
            Kit::JetStream { js, subject, acks } => {
                tokio::spawn(js_sender(js, subject, acks, list, lane))
            }
        });
    }
    let finished = shared.wait_done().await;
    let end_ns = shared.end_ns(finished);
    for s in sends {
        s.abort();
    }
    // Stopping ends every receiver and collector, which publish their last
    // samples; then the connections close.
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    for client in &clients {
        let _ = tokio::time::timeout(Duration::from_secs(5), client.drain()).await;
    }
    let (slow, disconnects) = (
        events.slow_consumer.load(Ordering::Relaxed),
        events.disconnected.load(Ordering::Relaxed),
    );
    if slow > 0 || disconnects > 0 {
        eprintln!(
            "nats: {slow} client-side slow-consumer events (messages dropped), {disconnects} disconnects; losses count in `lost`"
        );
    }
    Ok(shared.outcome(start_ns, end_ns, envelope_bytes))
}

/// What a sender needs besides its envelopes.
struct Lane {
    shared: Arc<Shared>,
    /// Closed loop: sends in flight.
    window: Arc<Semaphore>,
    start_ns: u64,
    /// Open loop: this sender's rate per second.
    rate: Option<f64>,
}

/// A sender's connection, by mode.
enum Kit {
    Core(Fencer),
    JetStream {
        js: jetstream::Context,
        subject: String,
        acks: mpsc::UnboundedSender<(usize, PublishAckFuture)>,
    },
}

/// Core NATS: the messages published since the last fence, and the fences.
struct Fencer {
    client: async_nats::Client,
    /// Nobody subscribes to it: the server answers with "no responders".
    subject: String,
    /// The sender's own subscription is `<reply_prefix>.*`.
    reply_prefix: String,
    seq: u64,
    batch: Vec<usize>,
    to_confirm: mpsc::UnboundedSender<(u64, Vec<usize>)>,
}

impl Fencer {
    /// Fences the pending batch (if any); false if the connection is gone.
    async fn fence(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        self.seq += 1;
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(FENCE_EVERY));
        // Registered before the fence can possibly be answered.
        if self.to_confirm.send((self.seq, batch)).is_err() {
            return false;
        }
        self.client
            .publish_with_reply(
                self.subject.clone(),
                format!("{}.{}", self.reply_prefix, self.seq),
                Bytes::new(),
            )
            .await
            .is_ok()
    }
}

async fn core_sender(mut fencer: Fencer, list: Vec<Vec<u8>>, lane: Lane) {
    let Lane {
        shared,
        window,
        start_ns,
        rate,
    } = lane;
    for (i, env) in list.into_iter().enumerate() {
        let Some(idx) = shared.index_of(&env) else {
            continue;
        };
        // As `Shared::pace`, but fencing what is pending before any wait.
        let at = match rate {
            Some(r) => {
                let scheduled = Shared::scheduled_ns(start_ns, i, r);
                if scheduled > shared.now_ns() {
                    if !fencer.fence().await {
                        return;
                    }
                    let now = shared.now_ns();
                    if scheduled > now {
                        tokio::time::sleep(Duration::from_nanos(scheduled - now)).await;
                    }
                }
                scheduled
            }
            None => {
                if let Ok(permit) = window.try_acquire() {
                    permit.forget();
                } else {
                    if !fencer.fence().await {
                        return;
                    }
                    let Ok(permit) = window.acquire().await else {
                        return;
                    };
                    permit.forget();
                }
                shared.now_ns()
            }
        };
        shared.mark_sent(idx, at);
        if fencer
            .client
            .publish(SUBJECT, Bytes::from(env))
            .await
            .is_err()
        {
            return;
        }
        fencer.batch.push(idx);
        if fencer.batch.len() >= FENCE_EVERY && !fencer.fence().await {
            return;
        }
    }
    fencer.fence().await;
}

/// Core NATS: turns the server's answers to a sender's fences into
/// acceptances. An answer also confirms every earlier fence (the server
/// processes a connection in order), should one answer go missing.
async fn core_confirmer(
    mut answers: async_nats::Subscriber,
    mut batches: mpsc::UnboundedReceiver<(u64, Vec<usize>)>,
    shared: Arc<Shared>,
    window: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let mut samples = Samples::default();
    loop {
        let answer = tokio::select! {
            _ = stop.changed() => break,
            answer = answers.next() => answer,
        };
        let Some(answer) = answer else { break };
        let now = shared.now_ns();
        while let Ok((seq, batch)) = batches.try_recv() {
            pending.insert(seq, batch);
        }
        let Some(seq) = answer
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let later = pending.split_off(&(seq + 1));
        for (_, batch) in std::mem::replace(&mut pending, later) {
            window.add_permits(batch.len());
            for idx in batch {
                shared.accepted(Some(idx), now, &mut samples);
            }
        }
        shared.progress(now);
        shared.merge(&mut samples, false);
    }
    shared.merge(&mut samples, true);
}

async fn core_receiver(
    mut sub: async_nats::Subscriber,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut samples = Samples::default();
    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            message = sub.next() => message,
        };
        let Some(message) = message else { break };
        let now = shared.now_ns();
        shared.delivered(&message.payload, now, &mut samples);
        shared.progress(now);
        shared.merge(&mut samples, false);
    }
    shared.merge(&mut samples, true);
}

async fn js_sender(
    js: jetstream::Context,
    subject: String,
    acks: mpsc::UnboundedSender<(usize, PublishAckFuture)>,
    list: Vec<Vec<u8>>,
    lane: Lane,
) {
    let Lane {
        shared,
        window,
        start_ns,
        rate,
    } = lane;
    for (i, env) in list.into_iter().enumerate() {
        let Some(idx) = shared.index_of(&env) else {
            continue;
        };
        let Some(at) = shared.pace(start_ns, i, rate, &window).await else {
            return;
        };
        shared.mark_sent(idx, at);
        match js.publish(subject.clone(), Bytes::from(env)).await {
            Ok(ack) => {
                if acks.send((idx, ack)).is_err() {
                    return;
                }
            }
            // Never accepted; keep the window whole.
            Err(_) => window.add_permits(1),
        }
    }
}

/// JetStream: awaits a sender's `PubAck`s, each counting as an acceptance
/// when it arrives and returning its window permit.
async fn js_acks(
    mut incoming: mpsc::UnboundedReceiver<(usize, PublishAckFuture)>,
    shared: Arc<Shared>,
    window: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending = FuturesUnordered::new();
    let mut samples = Samples::default();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            _ = stop.changed() => break,
            item = incoming.recv(), if open => match item {
                Some((idx, ack)) => pending.push(async move { (idx, ack.await.is_ok()) }),
                None => open = false,
            },
            Some((idx, ok)) = pending.next(), if !pending.is_empty() => {
                let now = shared.now_ns();
                window.add_permits(1);
                if ok {
                    shared.accepted(Some(idx), now, &mut samples);
                    shared.progress(now);
                }
                shared.merge(&mut samples, false);
            }
        }
    }
    shared.merge(&mut samples, true);
}

async fn js_receiver(
    mut messages: consumer::pull::Stream,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut since_ack = 0u32;
    let mut errors = 0u32;
    let mut samples = Samples::default();
    loop {
        let item = tokio::select! {
            _ = stop.changed() => break,
            item = messages.next() => item,
        };
        let message = match item {
            None => break,
            Some(Ok(message)) => message,
            // E.g. a missed heartbeat under load: keep consuming, unless the
            // stream keeps failing.
            Some(Err(_)) => {
                errors += 1;
                if errors >= MAX_ERRORS_IN_A_ROW {
                    break;
                }
                continue;
            }
        };
        errors = 0;
        let now = shared.now_ns();
        since_ack += 1;
        let all = shared.delivered(&message.payload, now, &mut samples);
        if since_ack >= ACK_EVERY || all {
            since_ack = 0;
            // AckPolicy::All: acknowledges everything up to this message.
            let _ = message.ack().await;
        }
        shared.progress(now);
        shared.merge(&mut samples, false);
    }
    shared.merge(&mut samples, true);
}
