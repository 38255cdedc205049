//! `tallinn-relay`: run the relay, check its configuration, create a
//! certificate, or enrol a participant into a roster file.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tallinn_common::roster::{ParticipantEntry, Role, Roster, RosterFile};
use tallinn_relay::{tls, FileConfig, Server};

/// Tallinn Relay server.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum RosterCommand {
    /// Build the unsigned genesis of a roster log from the configured
    /// version-1 roster file, with the relay's receipt key (created in the
    /// data directory on first use). The chair and the beneficiary then
    /// approve the file with `tallinn roster approve`.
    Init {
        /// The relay configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The chair (a member id).
        #[arg(long)]
        chair: String,
        /// Member approvals an amendment needs (default: a majority).
        #[arg(long)]
        quorum: Option<u32>,
        /// Where to write the genesis (text; refused if it exists).
        #[arg(long, default_value = "genesis.entry")]
        out: PathBuf,
    },
    /// Verify a signed genesis and install it in the relay's store (relay
    /// stopped); prints the deployment fingerprint.
    Install {
        /// The relay configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The approved genesis.
        #[arg(long, default_value = "genesis.entry")]
        entry: PathBuf,
        /// The deployment fingerprint (hex) agreed out of band, if known.
        #[arg(long)]
        deployment: Option<String>,
    },
    /// Print the roster log in the relay's store (relay stopped).
    Show {
        /// The relay configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay until SIGTERM or Ctrl-C (SIGHUP reloads the roster).
    Run {
        /// The relay configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration and roster and print a summary.
    CheckConfig {
        /// The relay configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Create a self-signed certificate and key, and print the client pin.
    GenCert {
        /// Certificate output (PEM).
        #[arg(long, default_value = "relay-cert.pem")]
        cert: PathBuf,
        /// Private key output (PEM, mode 0600).
        #[arg(long, default_value = "relay-key.pem")]
        key: PathBuf,
        /// DNS names / IP addresses the certificate is valid for.
        #[arg(long = "san", default_values_t = vec!["localhost".to_string()])]
        sans: Vec<String>,
    },
    /// Print the SPKI pin of an existing certificate.
    Pin {
        /// Certificate (PEM).
        #[arg(long, default_value = "relay-cert.pem")]
        cert: PathBuf,
    },
    /// Version 2: create, install or show the roster log (see README,
    /// "Initialise a deployment").
    #[command(subcommand)]
    Roster(RosterCommand),
    /// Add a participant to a roster file, or replace its keys, from the
    /// public entry printed by `tallinn keygen`. The result is validated
    /// before the file is replaced; then send SIGHUP to the relay.
    Enrol {
        /// The roster file to edit.
        #[arg(long)]
        roster: PathBuf,
        /// File with the participant's `[[participant]]` entry (TOML).
        #[arg(long)]
        entry: PathBuf,
        /// Add the participant to these channels as a member (or observer, by role).
        #[arg(long = "channel")]
        channels: Vec<String>,
    },
}

fn main() -> ExitCode {
    tallinn_host::process::quiet_broken_pipe();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn base_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config } => {
            let file = FileConfig::read(&config)?;
            let cfg = file.load(&base_dir(&config))?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(run(cfg))
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::GenCert { cert, key, sans } => {
            if cert.exists() || key.exists() {
                bail!(
                    "{} or {} already exists; refusing to overwrite (delete them first to rotate)",
                    cert.display(),
                    key.display()
                );
            }
            let id = tls::generate_self_signed(&sans)?;
            id.write_pem(&cert, &key)?;
            println!("certificate: {}", cert.display());
            println!("private key: {} (mode 0600)", key.display());
            println!("relay_pin = \"{}\"", id.spki_pin_hex());
            println!("Put the relay_pin line into every client.toml.");
            Ok(())
        }
        Command::Pin { cert } => {
            let certs: Vec<_> = {
                use rustls_pki_types::pem::PemObject;
                rustls_pki_types::CertificateDer::pem_file_iter(&cert)
                    .with_context(|| format!("reading {}", cert.display()))?
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("parsing {}", cert.display()))?
            };
            let first = certs.first().context("no certificate in the file")?;
            println!("relay_pin = \"{}\"", hex::encode(tls::spki_pin(first)?));
            Ok(())
        }
        Command::Enrol {
            roster,
            entry,
            channels,
        } => enrol(&roster, &entry, &channels),
        Command::Roster(cmd) => roster_command(cmd),
    }
}

fn roster_command(cmd: RosterCommand) -> Result<()> {
    use tallinn_common::roster::{fingerprint_groups, SignedEntry};
    use tallinn_relay::genesis;
    let data_dir = |config: &Path| -> Result<(FileConfig, PathBuf)> {
        let file = FileConfig::read(config)?;
        let dir = FileConfig::resolve(&base_dir(config), &file.data_dir);
        Ok((file, dir))
    };
    match cmd {
        RosterCommand::Init {
            config,
            chair,
            quorum,
            out,
        } => {
            let (file, dir) = data_dir(&config)?;
            let checked = file.check(&base_dir(&config))?;
            if out.exists() {
                bail!("{} already exists; refusing to overwrite", out.display());
            }
            let relay_key = genesis::receipt_key(&dir)?;
            let quorum = quorum.unwrap_or_else(|| genesis::default_quorum(&checked.roster));
            let entry = genesis::genesis_from_v1(&checked.roster, &chair, quorum, &relay_key);
            // Check the state rules now (approvals come later).
            tallinn_common::roster::RosterState::validate(
                match entry.decode_body()?.kind {
                    tallinn_common::roster::EntryKind::Genesis(r) => r,
                    _ => bail!("internal: not a genesis"),
                },
                0,
                entry.hash(),
            )
            .context("the roster cannot become a genesis")?;
            std::fs::write(&out, entry.to_text())
                .with_context(|| format!("writing {}", out.display()))?;
            println!("genesis (unsigned): {}", out.display());
            println!("chair: {chair}, quorum: {quorum}");
            println!("relay receipt key: {}", hex::encode(relay_key.as_bytes()));
            println!("deployment fingerprint (once approved, unchanged by approvals):");
            println!("  {}", fingerprint_groups(&entry.hash()));
            println!(
                "next: the chair and the beneficiary run `tallinn roster approve {}`",
                out.display()
            );
            Ok(())
        }
        RosterCommand::Install {
            config,
            entry,
            deployment,
        } => {
            let (_, dir) = data_dir(&config)?;
            let text = std::fs::read_to_string(&entry)
                .with_context(|| format!("reading {}", entry.display()))?;
            let signed = SignedEntry::from_text(&text)?;
            let pinned = match deployment {
                None => None,
                Some(h) => Some(
                    <[u8; 32]>::try_from(
                        hex::decode(h.replace(' ', ""))
                            .context("--deployment is not hex")?
                            .as_slice(),
                    )
                    .map_err(|_| anyhow::anyhow!("--deployment is not 32 bytes"))?,
                ),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(tallinn_common::unix_ms)
                .unwrap_or(0);
            let log = genesis::install(&dir, signed, pinned.as_ref(), now)?;
            println!("roster log installed in {}", dir.display());
            println!(
                "deployment fingerprint: {}",
                fingerprint_groups(&log.deployment())
            );
            println!("participants compare it out of band and pin it in client.toml");
            Ok(())
        }
        RosterCommand::Show { config } => {
            let (_, dir) = data_dir(&config)?;
            let store = tallinn_relay::store::SledStore::open(&dir)?;
            let entries = tallinn_relay::store::Store::roster_log(&store)?;
            if entries.is_empty() {
                println!("no roster log: the relay runs the version-1 roster file");
                return Ok(());
            }
            let log = tallinn_common::roster::RosterLog::from_entries(
                entries.into_iter().map(|(e, _)| e),
                None,
            )?;
            print_state(&log);
            Ok(())
        }
    }
}

fn print_state(log: &tallinn_common::roster::RosterLog) {
    use tallinn_common::text::escape_line as esc;
    let s = log.current();
    println!(
        "deployment: {}",
        tallinn_common::roster::fingerprint_groups(&log.deployment())
    );
    println!("epoch: {}", s.epoch());
    println!("chair: {}", s.chair());
    println!("quorum: {}", s.quorum());
    if let Some(b) = s.beneficiary() {
        println!("beneficiary: {b}");
    }
    println!("participants:");
    for p in s.participants() {
        let devices: Vec<String> = p
            .devices
            .values()
            .map(|d| format!("{} ({})", d.device, d.fingerprint()))
            .collect();
        println!(
            "  {:<8} {:<9} {}  devices: {}",
            p.id.as_str(),
            p.role.to_string(),
            esc(&p.name),
            devices.join(", ")
        );
    }
}

async fn run(cfg: tallinn_relay::RelayConfig) -> Result<()> {
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
    let mut failed = None;
    loop {
        tokio::select! {
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
    server.shutdown().await;
    if let Some(why) = failed {
        // Exit non-zero: the supervisor restarts the relay, which replays
        // its commit log. Nothing acknowledged is lost.
        anyhow::bail!("stopped after a storage failure ({why}); restart to replay the commit log");
    }
    Ok(())
}

fn check_config(config: &Path) -> Result<()> {
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

fn enrol(roster_path: &Path, entry_path: &Path, channels: &[String]) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct EntryFile {
        participant: Vec<ParticipantEntry>,
    }
    let text = std::fs::read_to_string(roster_path)
        .with_context(|| format!("reading {}", roster_path.display()))?;
    let mut file: RosterFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", roster_path.display()))?;
    let entry_text = std::fs::read_to_string(entry_path)
        .with_context(|| format!("reading {}", entry_path.display()))?;
    let entry: EntryFile = toml::from_str(&entry_text)
        .with_context(|| format!("parsing the entry in {}", entry_path.display()))?;
    let [new] = <[ParticipantEntry; 1]>::try_from(entry.participant).map_err(|v| {
        anyhow::anyhow!(
            "the entry file must hold exactly one [[participant]], found {}",
            v.len()
        )
    })?;
    let replaced = match file.participants.iter_mut().find(|p| p.id == new.id) {
        Some(p) => {
            *p = new.clone();
            true
        }
        None => {
            file.participants.push(new.clone());
            false
        }
    };
    for ch in channels {
        let c = file
            .channels
            .iter_mut()
            .find(|c| &c.id == ch)
            .with_context(|| format!("no channel {ch:?} in the roster"))?;
        let list = match new.role {
            Role::Member => &mut c.members,
            Role::Observer => &mut c.observers,
        };
        if !list.iter().any(|m| m == "*" || m == &new.id) {
            list.push(new.id.clone());
        }
    }
    // Validate the result before touching the file.
    let roster = Roster::from_file(file.clone())
        .context("the roster would be invalid after this change; nothing was written")?;
    let tmp = roster_path.with_extension("toml.tmp");
    {
        use std::io::Write;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(file.to_toml().as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, roster_path)
        .with_context(|| format!("replacing {}", roster_path.display()))?;
    let p = roster
        .participant(&new.id)
        .context("participant missing after enrolment")?;
    println!(
        "{} {} ({}) fingerprint {}",
        if replaced {
            "replaced keys of"
        } else {
            "added"
        },
        p.id(),
        p.role,
        p.fingerprint()
    );
    println!("roster fingerprint {}", roster.fingerprint_hex());
    println!(
        "Compare the fingerprint with the participant out of band, then send SIGHUP to the relay."
    );
    Ok(())
}
