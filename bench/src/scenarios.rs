//! The `backlog`, `connections` and `archive` scenarios.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tallinn_client::archive::{Archive, Filter};
use tallinn_client::{Client, Settings};
use tallinn_common::envelope::{seal, UntrustedEnvelope};
use tallinn_common::identity::{DeviceId, Identity};
use tallinn_common::message::{Message, Tlp};
use tallinn_common::wire::{self, Frame};

use crate::load::{self, Setup};
use crate::system::{self, Server};

/// Seals `n` 1 KiB notes from `from` into `bench` on all cores.
fn seal_many(setup: &Setup, from: usize, n: usize, words: bool) -> Result<Vec<Vec<u8>>> {
    let now = tallinn_common::unix_ms(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?,
    );
    let threads = 2;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (id, roster) = (setup.ids[from].clone(), setup.roster.clone());
                let label = setup.labels[from].clone();
                let state = setup.log.as_ref().map(|l| l.current().clone());
                s.spawn(move || -> Result<Vec<Vec<u8>>> {
                    (t..n)
                        .step_by(threads)
                        .map(|i| {
                            // Every 1000th message carries a rare word, so a
                            // text search has something to find far back.
                            let subject = if words && i % 1000 == 7 {
                                format!("generator failure report {i}")
                            } else {
                                format!("status update {i}")
                            };
                            let body = "x".repeat(1024);
                            let m = Message::note(Tlp::Green, subject, body);
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
        let mut out = Vec::with_capacity(n);
        for h in hs {
            out.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("sealing thread panicked"))??,
            );
        }
        Ok(out)
    })
}

fn start_relay(setup: &Setup, edit: impl Fn(String) -> String) -> Result<Server> {
    let port = system::free_port()?;
    let cfg = setup.write_relay_config(port, "data", 0)?;
    setup.install_log("data")?;
    // No metrics endpoint for these scenarios.
    let text = std::fs::read_to_string(&cfg)?
        .replace("metrics_listen = \"127.0.0.1:0\"", "metrics_listen = \"\"");
    std::fs::write(&cfg, edit(text))?;
    Server::start(
        &system::sibling("tallinn-relay")?,
        &["run", "--config", cfg.to_str().context("path")?],
        None,
    )
}

/// Single-core crypto limit of a recipient: decode + verify + open per
/// second (version 2: against the log's state, as device `device`).
fn crypto_limit(setup: &Setup, sample: &[Vec<u8>], me: &Identity, device: &str) -> Result<f64> {
    let n = sample.len().min(2000);
    let start = Instant::now();
    for e in sample.iter().take(n) {
        let u = UntrustedEnvelope::decode(e)?;
        match &setup.log {
            Some(log) => u.verify(log)?.open_as(me, Some(device))?,
            None => u.verify(&setup.roster)?.open(me)?,
        };
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `backlog`: `n` messages queued for an offline participant, then the real
/// client (verify, decrypt, durable archive, acks) connects and drains.
///
/// # Errors
/// Setup failures.
pub async fn backlog(n: usize) -> Result<()> {
    backlog_with_devices(n, 2, 1).await
}

/// [`backlog`] in a channel of `participants`, with `devices` devices per
/// participant (more than 1:
/// version 2, the receiving device opens its own wrap, the envelope carries
/// a wrap for every device).
///
/// # Errors
/// Setup failures.
pub async fn backlog_with_devices(n: usize, participants: usize, devices: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let participants = participants.max(2);
    let setup = Setup::create_with_devices(dir.path(), participants * devices, devices)?;
    // The receiver: P01's first device.
    let me = devices;
    println!(
        "backlog: sealing {n} envelopes (1 KiB, P00 → P01{})…",
        if devices > 1 {
            format!(
                ", {participants} participants x {devices} devices: {} wraps per envelope",
                participants * devices - 1
            )
        } else {
            String::new()
        }
    );
    let envelopes = seal_many(&setup, 0, n, false)?;
    let limit = crypto_limit(&setup, &envelopes, &setup.ids[me], &setup.labels[me])?;
    let server = start_relay(&setup, |t| t)?;
    let pin = setup.tls.pin()?;
    // Queue everything while P01 is offline.
    let ep = load::endpoint(pin)?;
    let (conn, mut send, mut recv) =
        load::login_as(&ep, server.addr, &setup.ids[0], &setup.labels[0]).await?;
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for e in envelopes {
            if send
                .write_all(&wire::encode_frame(&Frame::Send { envelope: e }))
                .await
                .is_err()
            {
                break;
            }
        }
        send
    });
    let mut accepted = 0;
    while accepted < n {
        let mut p = [0u8; 4];
        recv.read_exact(&mut p).await?;
        let mut b = vec![0u8; wire::frame_len(p, u32::MAX)?];
        recv.read_exact(&mut b).await?;
        match wire::decode_frame(&b)? {
            Frame::Accepted { .. } | Frame::Receipt { .. } => accepted += 1,
            Frame::Rejected { code, reason, .. } => bail!("rejected: {code}: {reason}"),
            _ => {}
        }
    }
    let queue_secs = start.elapsed().as_secs_f64();
    let _ = writer.await;
    conn.close(0u32.into(), b"done");
    println!("  queued {n} at {:.0} accepted/s", n as f64 / queue_secs);

    // The real client drains.
    let archive_dir = dir.path().join("client");
    std::fs::create_dir_all(&archive_dir)?;
    let settings = Settings {
        relay: server.addr,
        server_name: "localhost".into(),
        trust: Some(tallinn_client::config::Trust::Pin(pin)),
        identity: setup.ids[me].clone(),
        retired: Vec::new(),
        device: DeviceId::new(setup.labels[me].as_str())?,
        roster: setup.roster.clone(),
        deployment: setup.log.as_ref().map(|l| l.deployment()),
        archive_dir,
        connect_timeout: Duration::from_secs(30),
        send_timeout: Duration::from_secs(30),
        max_backoff: Duration::from_secs(2),
        allow_classical_key_exchange: false,
        check_wraps: Default::default(),
    };
    let start = Instant::now();
    let client = Client::start(settings)?;
    client.discard_events();
    client.wait_connected(Duration::from_secs(30)).await?;
    client.sync(Duration::from_secs(3600), |_| {}).await?;
    let secs = start.elapsed().as_secs_f64();
    let archived = client.archive().len();
    client.close().await;
    let cpu_limit = limit;
    let rate = archived as f64 / secs;
    println!(
        "  drained {archived} in {secs:.1} s: {rate:.0} messages/s archived (verified, decrypted, encrypted at rest, fsynced, acked)"
    );
    println!(
        "  single-core crypto limit (decode + verify + open): {cpu_limit:.0}/s; ratio {:.2}",
        rate / cpu_limit
    );
    server.stop();
    Ok(())
}

/// `connections`: `n` authenticated idle connections: relay RSS per
/// connection and handshakes (QUIC + TLS + Auth) per second.
///
/// # Errors
/// Setup failures.
pub async fn connections(counts: &[usize]) -> Result<()> {
    for &n in counts {
        let dir = tempfile::tempdir()?;
        let setup = Setup::create(dir.path(), 4)?;
        let server = start_relay(&setup, |t| {
            t.replace(
                "max_connections_per_participant = 64",
                // Every connection is its own device (`d<i>`), so the cap
                // on devices per participant is raised with the others.
                &format!(
                    "max_connections_per_participant = {}\nmax_connections = {}\nmax_devices_per_participant = {}",
                    n + 100,
                    n + 100,
                    n + 100
                ),
            )
        })?;
        let pin = setup.tls.pin()?;
        let base = system::rss_kib(server.pid())?;
        // A few endpoints, each carrying many connections (one UDP socket each).
        let endpoints: Vec<_> = (0..16)
            .map(|_| load::endpoint(pin))
            .collect::<Result<_>>()?;
        let start = Instant::now();
        let mut conns = Vec::with_capacity(n);
        let mut tasks = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        for i in 0..n {
            let ep = endpoints[i % endpoints.len()].clone();
            let id = setup.ids[i % setup.ids.len()].clone();
            let addr: SocketAddr = server.addr;
            let permit = sem.clone().acquire_owned().await?;
            tasks.spawn(async move {
                let r = login_device(&ep, addr, &id, i).await;
                drop(permit);
                r
            });
        }
        while let Some(r) = tasks.join_next().await {
            conns.push(r??);
        }
        let secs = start.elapsed().as_secs_f64();
        let rss = system::rss_kib(server.pid())?;
        println!(
            "connections: {n} authenticated idle connections in {secs:.1} s ({:.0} handshakes/s); relay RSS {:.1} MiB ({:.1} KiB per connection above the {:.1} MiB baseline)",
            n as f64 / secs,
            rss as f64 / 1024.0,
            (rss.saturating_sub(base)) as f64 / n as f64,
            base as f64 / 1024.0
        );
        for (c, _, _) in &conns {
            c.close(0u32.into(), b"done");
        }
        server.stop();
    }
    Ok(())
}

async fn login_device(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    id: &Identity,
    i: usize,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
    use tallinn_common::defaults::{AUTH_EXPORTER_LABEL, SESSION_PREAMBLE};
    let conn = ep.connect(addr, "localhost")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&SESSION_PREAMBLE).await?;
    let mut p = [0u8; 4];
    recv.read_exact(&mut p).await?;
    let mut b = vec![0u8; wire::frame_len(p, 4096)?];
    recv.read_exact(&mut b).await?;
    let Frame::Hello { nonce, .. } = wire::decode_frame(&b)? else {
        bail!("no Hello");
    };
    let mut exporter = [0u8; 32];
    conn.export_keying_material(&mut exporter, AUTH_EXPORTER_LABEL, &nonce)
        .map_err(|_| anyhow::anyhow!("exporter"))?;
    let device = format!("d{i}");
    send.write_all(&wire::encode_frame(&wire::sign_auth(
        id, &device, &nonce, &exporter,
    )))
    .await?;
    recv.read_exact(&mut p).await?;
    let mut b = vec![0u8; wire::frame_len(p, 4096)?];
    recv.read_exact(&mut b).await?;
    match wire::decode_frame(&b)? {
        Frame::Welcome { .. } => Ok((conn, send, recv)),
        Frame::Error { code, reason } => bail!("relay refused device {device}: {code}: {reason}"),
        other => bail!("expected Welcome, got {}", other.name()),
    }
}

/// `archive`: a client archive with `n` records of coordination traffic
/// ([`crate::coordination::seal_mix`]: requests, offers, status updates,
/// notes): insert rate (tracker index included), first page of a channel
/// and of a text search, the request tracker's listings, export and verify
/// rates.
///
/// # Errors
/// Setup failures.
pub fn archive(n: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let setup = Setup::create(dir.path(), 3)?;
    println!("archive: sealing {n} envelopes (1 KiB; requests, offers, statuses, notes)…");
    let envelopes = crate::coordination::seal_mix(&setup, n)?;
    let me = &setup.ids[1];
    // Verified and opened on both cores (setup, not measured).
    let open = |part: &[Vec<u8>]| -> Result<Vec<_>> {
        part.iter()
            .map(|e| {
                Ok(UntrustedEnvelope::decode(e)?
                    .verify(&setup.roster)?
                    .open(me)?)
            })
            .collect()
    };
    let (first, second) = envelopes.split_at(envelopes.len() / 2);
    let opened: Vec<_> = std::thread::scope(|s| -> Result<Vec<_>> {
        let h = s.spawn(|| open(second));
        let mut out = open(first)?;
        out.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("opening thread panicked"))??,
        );
        Ok(out)
    })?;
    let a = Archive::open(&dir.path().join("archive"), me)?;
    let start = Instant::now();
    for (i, o) in opened.iter().enumerate() {
        a.insert_received(i as u64 + 1, i as u64, o)?;
        if i % 128 == 127 {
            a.flush()?; // as the client does: one fsync per delivery batch
        }
    }
    a.flush()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  insert: {:.0} records/s ({n} in {secs:.1} s, fsync per 128)",
        n as f64 / secs
    );
    let t = Instant::now();
    let page = a.search(
        &Filter {
            channel: Some("bench".into()),
            ..Default::default()
        },
        20,
    )?;
    println!(
        "  first page of the channel ({} rows): {:.1} ms",
        page.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let hits = a.search(
        &Filter {
            text: Some("generator failure".into()),
            ..Default::default()
        },
        20,
    )?;
    // How far back the last hit of the page is (the whole archive when the
    // page is not full); the scan decrypts whole chunks of 512 up to it.
    let back = match hits.last() {
        Some(r) if hits.len() == 20 => a.len() - r.index,
        _ => a.len(),
    };
    println!(
        "  first page of a text search ({} rows, newest first, full-text scan; the last hit {back} records back): {:.1} ms",
        hits.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    crate::coordination::time("the same text search again", 5, || {
        a.search(
            &Filter {
                text: Some("generator failure".into()),
                ..Default::default()
            },
            20,
        )
        .map_err(anyhow::Error::from)
    })?;
    crate::coordination::tracker_queries(&a)?;
    let t = Instant::now();
    let out = std::io::BufWriter::new(std::fs::File::create(dir.path().join("export.jsonl"))?);
    let exported =
        tallinn_client::export::export(&a, &setup.roster, "", "P01", "bench", 0, out, |_| {})?;
    println!(
        "  export: {:.0} records/s",
        exported as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let report = a.verify(&setup.roster, me, false, |_| {})?;
    if let Some((i, why)) = report.first_error {
        bail!("verify failed at {i}: {why}");
    }
    let vrate = report.records as f64 / t.elapsed().as_secs_f64();
    // The single-core signature-verify limit, for comparison.
    let t = Instant::now();
    let k = envelopes.len().min(5000);
    for e in envelopes.iter().take(k) {
        let u = UntrustedEnvelope::decode(e)?;
        let sender = &u.claimed_header().sender;
        let key = setup
            .ids
            .iter()
            .find(|i| i.id().as_str() == sender.as_str())
            .ok_or_else(|| anyhow::anyhow!("unknown sender {sender}"))?
            .public()
            .sign_key;
        u.verify_signature(&key)?;
    }
    let limit = k as f64 / t.elapsed().as_secs_f64();
    println!(
        "  verify: {vrate:.0} records/s (decrypt, chain, signature, policy); single-core verify limit {limit:.0}/s; ratio {:.2}",
        vrate / limit
    );
    Ok(())
}

/// `audit`: a version-2 archive of `n` received records (2 participants x 2
/// devices, 1 KiB notes, so 3 wraps each), exported with content keys and
/// verified by `tallinn-audit` as an auditor would: roster log, signature,
/// content, every wrap, record hash, chain.
///
/// # Errors
/// Setup failures, or an export that does not verify.
pub fn audit(n: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let setup = Setup::create_with_devices(dir.path(), 4, 2)?;
    let log = setup
        .log
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a version-2 setup has a roster log"))?;
    println!("audit: sealing {n} version-2 envelopes (1 KiB, 3 wraps each)…");
    let envelopes = seal_many(&setup, 0, n, false)?;
    // The receiving device: participant 1's first device.
    let me = &setup.ids[2];
    let device = setup.labels[2].clone();
    let a = Archive::open(&dir.path().join("archive"), me)?;
    a.store_roster_entry(0, &log.entries()[0])?;
    for (i, e) in envelopes.iter().enumerate() {
        let o = UntrustedEnvelope::decode(e)?
            .verify(&log)?
            .open_as(me, Some(&device))?;
        a.insert_received(i as u64 + 1, i as u64, &o)?;
        if i % 128 == 127 {
            a.flush()?;
        }
    }
    a.flush()?;
    let path = dir.path().join("export.jsonl");
    let t = Instant::now();
    let out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let who = me.id().to_string();
    let exported =
        tallinn_client::export::export(&a, &setup.roster, "", &who, &device, 0, out, |_| {})?;
    let export_secs = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path)?.len();
    let t = Instant::now();
    let input = std::io::BufReader::new(std::fs::File::open(&path)?);
    let v = tallinn_audit::verify::verify("bench", input, &log.deployment(), None);
    let secs = t.elapsed().as_secs_f64();
    if let Some(f) = &v.report.failure {
        bail!("the export does not verify: {}", f.text());
    }
    println!(
        "  export (version 2): {:.0} records/s, {:.1} MiB",
        exported as f64 / export_secs,
        size as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  tallinn-audit verify: {:.0} records/s ({} records, {} wraps recomputed, in {secs:.1} s, one core)",
        v.report.records as f64 / secs,
        v.report.records,
        v.report.wraps
    );
    Ok(())
}
