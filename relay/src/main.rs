//! `tallinn-relay`: run the relay, check its configuration, create a
//! certificate, or enrol a participant into a roster file.
#![forbid(unsafe_code)]

mod cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tallinn_relay::{tls, FileConfig};

/// Tallinn Relay server.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log lines as text (default) or one JSON object per line (for a log
    /// collector); RUST_LOG sets the level.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum RosterCommand {
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
    /// A consistent copy of the store (and the relay's keys beside it) into
    /// a new folder, while the relay runs (through its control socket) or
    /// not; restore by stopping the relay and putting the folder in place
    /// of the data directory (README, "Backup and restore").
    Backup {
        /// The relay configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The folder to write (new, or empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// A device's latest archive checkpoint as the relay keeps it (version
    /// 2), as a file for an auditor (`tallinn-audit verify --checkpoint
    /// FILE`): from the running relay through its control socket, or from
    /// the stopped relay's store.
    Checkpoint {
        /// The relay configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Participant id.
        #[arg(long)]
        participant: String,
        /// Device label.
        #[arg(long, default_value = "default")]
        device: String,
        /// Write it here (JSON; refused if the file exists) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
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
    /// Create the relay's receipt key (version 2: it signs a receipt for
    /// every accepted message) and print its public half, the roster's
    /// `relay_key`. Never overwrites a key.
    GenReceiptKey {
        /// The relay configuration file: the key goes where its
        /// `receipt_key` says (default `<data_dir>/receipt.key`).
        #[arg(long, short, required_unless_present = "out")]
        config: Option<PathBuf>,
        /// Write the key here instead.
        #[arg(long, conflicts_with = "config")]
        out: Option<PathBuf>,
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", tallinn_host::process::error_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn base_dir(config: &Path) -> PathBuf {
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
            rt.block_on(cmd::service::run(cfg))
        }
        Command::Backup { config, out } => cmd::service::backup(&config, &out),
        Command::CheckConfig { config } => cmd::service::check_config(&config),
        Command::Checkpoint {
            config,
            participant,
            device,
            out,
        } => cmd::service::checkpoint(&config, &participant, &device, out.as_deref()),
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
        Command::GenReceiptKey { config, out } => {
            let path = match (out, config) {
                (Some(p), _) => p,
                (None, Some(c)) => {
                    let file = FileConfig::read(&c)?;
                    let cfg = file.check(&base_dir(&c))?;
                    tallinn_host::durable::private_dir(&cfg.data_dir)
                        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
                    cfg.receipt_key
                }
                (None, None) => bail!("give --config or --out"),
            };
            if path.exists() {
                bail!(
                    "{} already exists; a receipt key is never overwritten (its public half is in the roster)",
                    path.display()
                );
            }
            let key = tallinn_relay::receipt_key::ReceiptKey::create(&path)?;
            println!("receipt key: {} (mode 0600)", path.display());
            println!("relay_key = \"{}\"", hex::encode(key.public().as_bytes()));
            println!("Name it as relay_key in the genesis (`roster init` does) or an amendment.");
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
        } => cmd::roster::enrol(&roster, &entry, &channels),
        Command::Roster(c) => cmd::roster::roster_command(c),
    }
}
