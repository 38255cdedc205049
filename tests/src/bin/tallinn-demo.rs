//! `tallinn-demo`: one command that builds a complete Tallinn deployment in
//! a fresh directory, starts a real relay on loopback, plays a coordination
//! round through the client library with a readable transcript, verifies
//! every archive, then moves the deployment to the signed roster log and
//! plays a year of roster changes (version 2: Lithuania admitted with
//! Ukraine's veto shown, the chair passed on, a lost laptop revoked and
//! replaced, a key rotated), verifies every archive again, and leaves
//! working configs behind.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tallinn_tests::{scenario, Deployment};

/// Marker file that identifies a directory created by this demo.
const MARKER: &str = ".tallinn-demo";

/// Run the Tallinn Relay demo.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// Directory to create the deployment in (replaced if it is an earlier
    /// demo directory; any other non-empty directory is refused).
    #[arg(long, default_value = "demo-data")]
    dir: PathBuf,
    /// Relay UDP port on 127.0.0.1 [default: a free port].
    #[arg(long)]
    port: Option<u16>,
}

fn prepare(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            if !dir.join(MARKER).exists() {
                bail!(
                    "{} exists and is not a demo directory (no {MARKER} marker); refusing to overwrite it. \
                     Choose another --dir.",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the old demo in {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "Created by tallinn-demo. Deleted and recreated by the next run.\n",
    )?;
    Ok(())
}

fn free_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("finding a free UDP port")?;
    Ok(s.local_addr()?.port())
}

async fn demo(args: Args) -> Result<bool> {
    let dir = args.dir;
    prepare(&dir)?;
    let port = match args.port {
        Some(p) => p,
        None => free_port()?,
    };
    println!("Tallinn Relay demo: 12 nations, NATO and the EU as observers.");
    println!("Deployment in {}/", dir.display());
    let dep = Deployment::create(&dir, port)?;
    println!(
        "  14 identities, roster (fingerprint {}…), relay and client configs written",
        &dep.roster.fingerprint_hex()[..16]
    );
    // Metrics and health on a free loopback port, as an operator has them.
    let mut cfg = dep.relay_config(None)?;
    cfg.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let relay = tallinn_relay::Server::spawn(cfg).await?;
    let addr = relay.local_addr();
    let pin = relay.spki_pin();
    println!(
        "  relay listening on {addr} (QUIC, TLS 1.3, pin {}…)",
        &hex::encode(pin)[..16]
    );
    if let Some(m) = relay.metrics_addr() {
        println!("  metrics on http://{m}/metrics, health on http://{m}/healthz");
    }

    let mut stdout = std::io::stdout();
    let report = scenario::run(&dep, addr, pin, &mut stdout).await;
    let metrics = relay.render_metrics();
    for name in [
        "tallinn_build_info",
        "tallinn_roster_info",
        "tallinn_sends_accepted_total ",
    ] {
        if let Some(line) = metrics.lines().find(|l| l.starts_with(name)) {
            println!("  metric {line}");
        }
    }
    relay.shutdown().await;
    let report = report?;
    scenario::print_summary(&report, &mut stdout)?;

    // Version 2: the roster becomes a signed log and lives through changes.
    let lifecycle = tallinn_tests::lifecycle::run(&dep, &mut stdout).await?;
    tallinn_tests::lifecycle::print_summary(&lifecycle, &mut stdout)?;

    let d = dir.display();
    println!("\nTry it yourself (the deployment stays in {d}/):");
    println!("  cargo run --release --bin tallinn -- --config {d}/UA/client.toml inbox");
    println!(
        "  cargo run --release --bin tallinn -- --config {d}/UA/client.toml thread {}",
        report.round[0]
    );
    println!("  cargo run --release --bin tallinn-relay -- run --config {d}/relay.toml   # in another terminal");
    println!(
        "  cargo run --release --bin tallinn -- --config {d}/EE/client.toml send --channel front-office --tlp AMBER --subject hello --body 'from the chair'"
    );
    println!("  cargo run --release --bin tallinn -- --config {d}/UA/client.toml sync");
    Ok(report.ok() && lifecycle.failures.is_empty())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(demo(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some checks failed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
