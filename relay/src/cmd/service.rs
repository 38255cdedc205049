//! `tallinn-relay run`, `check-config` and `backup`: the relay as a
//! service (signals, readiness and watchdog for systemd) and its care.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tallinn_relay::{FileConfig, Server};

use crate::base_dir;

/// `tallinn-relay backup`: through the running relay's control socket,
/// or, with no relay running, from the store opened here.
pub(crate) fn backup(config: &Path, out: &Path) -> Result<()> {
    let file = FileConfig::read(config)?;
    let cfg = file.load(&base_dir(config))?;
    let out = std::path::absolute(out).with_context(|| format!("{}", out.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let started = std::time::Instant::now();
    let (report, how) = match rt
        .block_on(tallinn_relay::control::request_backup(&cfg.data_dir, &out))
        .map_err(|e| anyhow::anyhow!("the running relay refused the backup: {e}"))?
    {
        Some(r) => (r, "from the running relay"),
        None => {
            use tallinn_relay::store::Store as _;
            let store =
                tallinn_relay::store::SledStore::open(&cfg.data_dir).with_context(|| {
                    format!(
                        "opening the store in {} (no relay answered on its control socket)",
                        cfg.data_dir.display()
                    )
                })?;
            (store.backup(&out)?, "from the stopped relay's store")
        }
    };
    println!(
        "backup {} written {how}: {} keys, {} bytes, up to seq {}, files {:?}, in {:.1} s",
        report.dir.display(),
        report.keys,
        report.bytes,
        report.last_seq,
        report.files,
        started.elapsed().as_secs_f64()
    );
    println!("restore: stop the relay, move the data directory aside, put this folder in its place (owned by the relay's user), start the relay");
    Ok(())
}

/// `tallinn-relay checkpoint`: a device's latest archive checkpoint, as the
/// JSON file `tallinn-audit verify --checkpoint` reads (the same shape
/// `tallinn archive checkpoint` writes).
pub(crate) fn checkpoint(
    config: &Path,
    participant: &str,
    device: &str,
    out: Option<&Path>,
) -> Result<()> {
    use base64::Engine as _;
    let file = FileConfig::read(config)?;
    let cfg = file.check(&base_dir(config))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let b64 = match rt
        .block_on(tallinn_relay::control::request_checkpoint(
            &cfg.data_dir,
            participant,
            device,
        ))
        .map_err(|e| anyhow::anyhow!("the running relay refused: {e}"))?
    {
        Some(c) => c,
        None => {
            use tallinn_relay::store::Store as _;
            let store =
                tallinn_relay::store::SledStore::open(&cfg.data_dir).with_context(|| {
                    format!(
                        "opening the store in {} (no relay answered on its control socket)",
                        cfg.data_dir.display()
                    )
                })?;
            store
                .archive_checkpoint(participant, device)?
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        }
    };
    let Some(b64) = b64 else {
        anyhow::bail!(
            "the relay holds no checkpoint of {} ({}): the device has not synced with a version-2 relay",
            tallinn_common::text::escape_line(participant),
            tallinn_common::text::escape_line(device)
        );
    };
    let c = tallinn_common::evidence::export::checkpoint_from_b64(&b64)
        .map_err(|e| anyhow::anyhow!("the stored checkpoint: {e}"))?;
    let body = c.decode()?;
    let value = serde_json::json!({
        "type": "tallinn-checkpoint",
        "source": "relay",
        "participant": body.participant,
        "device": body.device,
        "roster_epoch": body.roster_epoch,
        "index": body.index,
        "head_hash": hex::encode(body.head_hash),
        "time_ms": body.time_ms,
        "checkpoint_b64": b64,
    });
    match out {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            use std::io::Write as _;
            writeln!(f, "{value}").with_context(|| format!("writing {}", path.display()))?;
            f.sync_all()
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "checkpoint of {} records (head {}) written to {}",
                body.index,
                hex::encode(body.head_hash),
                path.display()
            );
        }
        None => println!("{value}"),
    }
    Ok(())
}

/// Tells systemd (`Type=notify`), if it started us.
fn notify(state: &str) {
    if let Err(e) = tallinn_host::systemd::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub(crate) async fn run(cfg: tallinn_relay::RelayConfig) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let server = Server::spawn(cfg).await?;
    eprintln!(
        "tallinn-relay listening on {} (pin {})",
        server.local_addr(),
        hex::encode(server.spki_pin())
    );
    if let Some(m) = server.metrics_addr() {
        eprintln!("metrics on http://{m}/metrics, health on http://{m}/healthz");
    }
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    // Ready only now: the UDP socket is bound and sessions are accepted.
    notify(&format!(
        "READY=1\nSTATUS=listening on {}",
        server.local_addr()
    ));
    let watchdog = tallinn_host::systemd::watchdog_interval();
    let mut tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut failed = None;
    loop {
        tokio::select! {
            _ = tick.tick(), if watchdog.is_some() => {
                // Alive means the store still answers: a wedged store stops
                // the pings and systemd restarts the relay.
                if server.healthy() {
                    notify("WATCHDOG=1");
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            why = server.failed() => {
                failed = Some(why);
                break;
            }
            _ = hup.recv() => {
                match server.reload_roster() {
                    Ok(n) => tracing::info!(sessions_closed = n, "roster reloaded"),
                    Err(e) => tracing::error!(error = %e, "roster reload refused"),
                }
            }
        }
    }
    notify("STOPPING=1\nSTATUS=draining");
    server.shutdown().await;
    if let Some(why) = failed {
        // Exit non-zero: the supervisor restarts the relay, which replays
        // its commit log. Nothing acknowledged is lost.
        anyhow::bail!("stopped after a storage failure ({why}); restart to replay the commit log");
    }
    Ok(())
}

pub(crate) fn check_config(config: &Path) -> Result<()> {
    let file = FileConfig::read(config)?;
    let base = base_dir(config);
    let checked = file.check(&base)?;
    let limits = checked.limits.clone();
    let roster_path = FileConfig::resolve(&base, &file.roster);
    let roster = checked.roster.clone();
    println!("config: {} OK", config.display());
    println!("listen: {}", file.listen);
    println!(
        "data_dir: {}",
        FileConfig::resolve(&base, &file.data_dir).display()
    );
    println!(
        "roster: {} (fingerprint {})",
        roster_path.display(),
        roster.fingerprint_hex()
    );
    if let Some(b) = roster.beneficiary() {
        println!("beneficiary: {b}");
    }
    println!("participants:");
    for p in roster.participants() {
        println!(
            "  {:<8} {:<9} {}  {}",
            p.id(),
            p.role.to_string(),
            p.fingerprint(),
            p.name
        );
    }
    println!("channels:");
    for c in roster.channels() {
        let members: Vec<&str> = c.members.iter().map(|m| m.as_str()).collect();
        let observers: Vec<&str> = c.observers.iter().map(|m| m.as_str()).collect();
        println!(
            "  {:<20} members [{}] observers [{}]",
            c.id.as_str(),
            members.join(", "),
            observers.join(", ")
        );
    }
    let cert = FileConfig::resolve(&base, &file.tls.cert);
    let key = FileConfig::resolve(&base, &file.tls.key);
    if cert.exists() {
        let id = tallinn_relay::TlsIdentity::from_pem_files(&cert, &key)?;
        println!("relay_pin = \"{}\"", id.spki_pin_hex());
    } else {
        println!(
            "tls: {} missing; a self-signed certificate will be created at first start",
            cert.display()
        );
    }
    println!(
        "limits: max_message {} B, rate {}/s burst {}, connections {} total / {} per participant",
        limits.max_message_len,
        limits.send_rate_per_sec,
        limits.send_burst,
        limits.max_connections,
        limits.max_connections_per_participant
    );
    Ok(())
}
