//! The `tallinn` command line: enrolment, sending, syncing, reading,
//! searching, exporting and verifying the archive.
//!
//! Exit codes: 0 success, 1 error (`error: ...` on stderr), 2 usage error
//! (clap). Every read command takes `--json`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use tallinn_common::identity::{Identity, KdfParams, ParticipantId};
use tallinn_common::message::{Attachment, Kind, Loe, Message, MsgId, Priority, State, Tlp};
use tallinn_common::roster::{Role, Roster};
use tallinn_common::text::{escape_line as esc, escape_text};

use crate::archive::{Direction, Filter, Record};
use crate::client::{Client, Event, Settings};
use crate::config::ClientConfig;
use crate::export::{kind_json, record_json};

/// Environment variable holding the passphrase of a protected key file.
pub const PASSPHRASE_ENV: &str = "TALLINN_PASSPHRASE";

/// Tallinn Relay client: send and receive signed, end-to-end encrypted
/// coordination messages, and keep a verifiable archive.
#[derive(Parser, Debug)]
#[command(
    name = "tallinn",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 success, 1 error, 2 usage error, 3 verification failed (archive verify)."
)]
pub struct Cli {
    /// Client configuration file [default: $XDG_CONFIG_HOME/tallinn/client.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (archive and outbox), overriding the config file.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an identity: writes the secret key file (mode 0600) and prints
    /// the public roster entry and fingerprint to send to the operator.
    Keygen {
        /// Participant id (e.g. UA).
        #[arg(long)]
        id: String,
        /// Display name for the roster entry.
        #[arg(long)]
        name: Option<String>,
        /// Role for the roster entry.
        #[arg(long, value_enum, default_value_t = RoleArg::Member)]
        role: RoleArg,
        /// Protect the key file with a passphrase (read from TALLINN_PASSPHRASE,
        /// or the first line of standard input).
        #[arg(long)]
        passphrase: bool,
        /// Where to write the secret key file [default: ID.key].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Show a participant's fingerprint (yours by default).
    Fingerprint {
        /// Participant id.
        id: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Roster commands.
    Roster {
        /// Subcommand.
        #[command(subcommand)]
        command: RosterCommand,
    },
    /// Send a note.
    Send(NoteArgs),
    /// File a request for assistance.
    Request(RequestArgs),
    /// Offer help for a request.
    Offer(OfferArgs),
    /// Report the status of a request or offer.
    Status(StatusArgs),
    /// Connect, receive and archive everything pending, send the outbox, exit.
    Sync {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Stay connected and print messages as they arrive (reconnects on loss).
    Listen {
        /// Exit after this many new messages.
        #[arg(long)]
        count: Option<u64>,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// List archived messages, newest first.
    Inbox {
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = crate::defaults::PAGE)]
        limit: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one message in full, with its signature status.
    Show {
        /// Message id (or a unique prefix of at least 4 hex digits).
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show the thread a message belongs to.
    Thread {
        /// Message id (or a unique prefix).
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Messages waiting in the outbox for the relay's acceptance, and
    /// those it refused (with code and reason) until resent or dropped.
    Outbox {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Resend or drop an entry.
        #[command(subcommand)]
        action: Option<OutboxAction>,
    },
    /// Deliveries that failed verification.
    Quarantine {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Archive commands: search, export, verify, stats.
    Archive {
        /// Subcommand.
        #[command(subcommand)]
        command: ArchiveCommand,
    },
}

/// Roster subcommands.
#[derive(Subcommand, Debug)]
pub enum RosterCommand {
    /// Participants, roles, fingerprints, channels and the roster fingerprint.
    Show {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// What to do with one outbox entry.
#[derive(Subcommand, Debug)]
pub enum OutboxAction {
    /// Seal a (refused) message again against the current roster and clock,
    /// under a new id, and send it at the next sync.
    Resend {
        /// Message id (or a unique prefix).
        id: String,
    },
    /// Remove a message from the outbox without sending it.
    Drop {
        /// Message id (or a unique prefix).
        id: String,
    },
}

/// Archive subcommands.
#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Search the archive (criteria combine with AND).
    Search {
        /// Channel.
        #[arg(long)]
        channel: Option<String>,
        /// Sender id.
        #[arg(long)]
        from: Option<String>,
        /// Kind.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// TLP label.
        #[arg(long, value_parser = parse_tlp)]
        tlp: Option<Tlp>,
        /// Received on or after (YYYY-MM-DD or unix ms).
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// Received before (YYYY-MM-DD or unix ms).
        #[arg(long, value_parser = parse_time)]
        until: Option<u64>,
        /// Words that must all appear in subject, body or attachment names.
        #[arg(long)]
        text: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = crate::defaults::PAGE)]
        limit: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Export every record as JSON Lines for an auditor.
    Export {
        /// Output file, created with mode 0600 (it holds the plaintext).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists (never follows a symlink there).
        #[arg(long)]
        force: bool,
    },
    /// Re-verify every signature, the hash chain and the authenticated head;
    /// exit 3 at the first broken record.
    Verify {
        /// Also re-decrypt every envelope and compare with the stored message.
        #[arg(long)]
        deep: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Counts per channel and kind, size, head hash.
    Stats {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Roster role.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Point of contact.
    Member,
    /// Read-only observer.
    Observer,
}

/// Message kind for search.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// Notes.
    Note,
    /// Requests.
    Request,
    /// Offers.
    Offer,
    /// Status updates.
    Status,
}

/// Line of effort.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LoeArg {
    /// Immediate support.
    Immediate,
    /// Medium-term capability.
    Capability,
    /// Long-term sustainability.
    Sustainability,
}

/// Priority.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PriorityArg {
    /// Low.
    Low,
    /// Normal.
    Normal,
    /// High.
    High,
    /// Critical.
    Critical,
}

/// Status state.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateArg {
    /// Acknowledged.
    Acknowledged,
    /// In progress.
    InProgress,
    /// Fulfilled.
    Fulfilled,
    /// Declined.
    Declined,
    /// Closed.
    Closed,
}

fn parse_tlp(s: &str) -> Result<Tlp, String> {
    s.parse::<Tlp>().map_err(|e| e.to_string())
}

fn parse_msg_id(s: &str) -> Result<String, String> {
    if s.len() >= 4 && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_string())
    } else {
        Err("expected a message id (32 hex digits, or a unique prefix of at least 4)".into())
    }
}

/// Parses `YYYY-MM-DD` (UTC midnight) or unix milliseconds.
fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err("expected YYYY-MM-DD or unix milliseconds".into());
    };
    let (y, m, d): (i64, i64, i64) = (
        y.parse().map_err(|_| "bad year")?,
        m.parse().map_err(|_| "bad month")?,
        d.parse().map_err(|_| "bad day")?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return Err("date out of range".into());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400_000).map_err(|_| "date before 1970".into())
}

/// Formats unix ms as `YYYY-MM-DD HH:MM` UTC.
pub fn fmt_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        sod / 3600,
        (sod % 3600) / 60
    )
}

/// Fields common to every message-sending command.
#[derive(Args, Debug)]
pub struct Common {
    /// TLP 2.0 label: CLEAR, GREEN, AMBER, AMBER+STRICT or RED (mandatory).
    #[arg(long, value_parser = parse_tlp)]
    pub tlp: Tlp,
    /// One-line subject.
    #[arg(long)]
    pub subject: String,
    /// Body text.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the body from a file.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// The message this replies to.
    #[arg(long, value_parser = parse_msg_id)]
    pub reply_to: Option<String>,
    /// Attach a file (repeatable).
    #[arg(long = "attach", value_name = "FILE")]
    pub attach: Vec<PathBuf>,
}

/// `send`.
#[derive(Args, Debug)]
pub struct NoteArgs {
    /// Channel.
    #[arg(long)]
    pub channel: String,
    /// Message fields.
    #[command(flatten)]
    pub common: Common,
}

/// `request`.
#[derive(Args, Debug)]
pub struct RequestArgs {
    /// Channel.
    #[arg(long)]
    pub channel: String,
    /// Line of effort.
    #[arg(long, value_enum)]
    pub loe: LoeArg,
    /// Category (e.g. incident-response, hardware, training).
    #[arg(long)]
    pub category: String,
    /// Priority.
    #[arg(long, value_enum)]
    pub priority: PriorityArg,
    /// Message fields.
    #[command(flatten)]
    pub common: Common,
}

/// `offer`.
#[derive(Args, Debug)]
pub struct OfferArgs {
    /// The request being answered.
    #[arg(long, value_parser = parse_msg_id)]
    pub request: String,
    /// Channel [default: the request's channel].
    #[arg(long)]
    pub channel: Option<String>,
    /// Message fields.
    #[command(flatten)]
    pub common: Common,
}

/// `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The request or offer the status is about.
    #[arg(long, value_parser = parse_msg_id)]
    pub about: String,
    /// New state.
    #[arg(long, value_enum)]
    pub state: StateArg,
    /// Channel [default: the referenced message's channel].
    #[arg(long)]
    pub channel: Option<String>,
    /// Message fields.
    #[command(flatten)]
    pub common: Common,
}

/// Everything a command needs from the config.
struct Ctx {
    config: ClientConfig,
    identity: Arc<Identity>,
    roster: Arc<Roster>,
    roster_text: String,
}

fn default_config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("tallinn").join("client.toml")
}

fn passphrase_for(path: &Path) -> Result<Option<zeroize::Zeroizing<String>>> {
    if !Identity::secret_file_is_protected(path)? {
        return Ok(None);
    }
    match std::env::var(PASSPHRASE_ENV) {
        Ok(p) => Ok(Some(zeroize::Zeroizing::new(p))),
        Err(_) => bail!(
            "secret key file {} is passphrase-protected: set {PASSPHRASE_ENV}",
            path.display()
        ),
    }
}

impl Ctx {
    fn load(cli: &Cli) -> Result<Ctx> {
        let path = cli.config.clone().unwrap_or_else(default_config_path);
        let mut config = ClientConfig::read(&path)
            .context("loading the client config (use --config FILE; see config/client.toml)")?;
        if let Some(d) = &cli.data_dir {
            config.data_dir = d.clone();
        }
        let pass = passphrase_for(&config.identity)?;
        let identity =
            Identity::read_secret_file(&config.identity, pass.as_ref().map(|p| p.as_bytes()))?;
        let roster_text = std::fs::read_to_string(&config.roster)
            .with_context(|| format!("reading roster {}", config.roster.display()))?;
        let roster = Roster::parse(&roster_text)
            .with_context(|| format!("roster {} is invalid", config.roster.display()))?;
        match roster.participant(identity.id().as_str()) {
            Some(p) if p.public == identity.public() => {}
            Some(_) => bail!(
                "the roster's keys for {} differ from your key file: re-enrol or get the current roster",
                identity.id()
            ),
            None => bail!("{} is not in the roster {}", identity.id(), config.roster.display()),
        }
        Ok(Ctx {
            config,
            identity: Arc::new(identity),
            roster: Arc::new(roster),
            roster_text,
        })
    }

    fn settings(&self) -> Result<Settings> {
        let archive_dir =
            self.config
                .data_dir
                .join(format!("{}-{}", self.identity.id(), self.config.device));
        tallinn_host::durable::private_dir(&archive_dir)
            .with_context(|| format!("creating {}", archive_dir.display()))?;
        Ok(Settings {
            relay: self.config.relay_addr()?,
            server_name: self.config.server_name.clone(),
            trust: self.config.trust.clone(),
            identity: self.identity.clone(),
            device: self.config.device.clone(),
            roster: self.roster.clone(),
            archive_dir,
            connect_timeout: self.config.connect_timeout,
            send_timeout: self.config.send_timeout,
            max_backoff: self.config.max_backoff,
            allow_classical_key_exchange: self.config.allow_classical_key_exchange,
        })
    }

    fn open(&self) -> Result<Client> {
        Client::open(self.settings()?)
            .context("opening the archive (is another tallinn process using it?)")
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    tallinn_host::process::quiet_broken_pipe();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", escape_text(&format!("{e:#}")));
            if e.downcast_ref::<VerificationFailed>().is_some() {
                std::process::ExitCode::from(EXIT_VERIFY_FAILED)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// Exit code of a verification that ran and found a problem (`archive
/// verify`); 1 is any other error, 2 a usage error (clap).
pub const EXIT_VERIFY_FAILED: u8 = 3;

/// A verification ran to a verdict and the verdict is "failed" (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VerificationFailed(pub String);

fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

/// Runs one parsed command.
///
/// # Errors
/// Whatever the command reports.
pub async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Keygen {
            id,
            name,
            role,
            passphrase,
            out,
        } => keygen(id, name.as_deref(), *role, *passphrase, out.as_deref()),
        Command::Fingerprint { id, json } => {
            let ctx = Ctx::load(&cli)?;
            let who = id.clone().unwrap_or_else(|| ctx.identity.id().to_string());
            let p = ctx
                .roster
                .participant(&who)
                .ok_or_else(|| anyhow!("{who} is not in the roster"))?;
            if *json {
                print_json(
                    &json!({"id": who, "name": p.name, "role": p.role.to_string(), "fingerprint": p.fingerprint().to_string()}),
                )
            } else {
                println!("{who} ({}, {}): {}", p.name, p.role, p.fingerprint());
                Ok(())
            }
        }
        Command::Roster {
            command: RosterCommand::Show { json },
        } => roster_show(&Ctx::load(&cli)?, *json),
        Command::Send(a) => {
            let m = build_message(Kind::Note, &a.common)?;
            send(&cli, &a.channel, m).await
        }
        Command::Request(a) => {
            let kind = Kind::Request {
                loe: match a.loe {
                    LoeArg::Immediate => Loe::Immediate,
                    LoeArg::Capability => Loe::Capability,
                    LoeArg::Sustainability => Loe::Sustainability,
                },
                category: a.category.clone(),
                priority: match a.priority {
                    PriorityArg::Low => Priority::Low,
                    PriorityArg::Normal => Priority::Normal,
                    PriorityArg::High => Priority::High,
                    PriorityArg::Critical => Priority::Critical,
                },
            };
            let m = build_message(kind, &a.common)?;
            send(&cli, &a.channel, m).await
        }
        Command::Offer(a) => {
            let (request, channel) = resolve_ref(&cli, &a.request, a.channel.as_deref())?;
            let m = build_message(Kind::Offer { request }, &a.common)?;
            send(&cli, &channel, m).await
        }
        Command::Status(a) => {
            let (about, channel) = resolve_ref(&cli, &a.about, a.channel.as_deref())?;
            let state = match a.state {
                StateArg::Acknowledged => State::Acknowledged,
                StateArg::InProgress => State::InProgress,
                StateArg::Fulfilled => State::Fulfilled,
                StateArg::Declined => State::Declined,
                StateArg::Closed => State::Closed,
            };
            let m = build_message(Kind::Status { about, state }, &a.common)?;
            send(&cli, &channel, m).await
        }
        Command::Sync { timeout, json } => sync(&cli, Duration::from_secs(*timeout), *json).await,
        Command::Listen { count, json } => listen(&cli, *count, *json).await,
        Command::Inbox {
            channel,
            limit,
            json,
        } => {
            let ctx = Ctx::load(&cli)?;
            let client = ctx.open()?;
            let filter = Filter {
                channel: channel.clone(),
                ..Default::default()
            };
            let rows = client.archive().search(&filter, *limit)?;
            print_records(&rows, *json)
        }
        Command::Show { id, json } => {
            let ctx = Ctx::load(&cli)?;
            let client = ctx.open()?;
            let r = client
                .archive()
                .find(id)?
                .ok_or_else(|| anyhow!("no archived message {id} (or the prefix is ambiguous)"))?;
            show(&ctx, &r, *json)
        }
        Command::Thread { id, json } => {
            let ctx = Ctx::load(&cli)?;
            let client = ctx.open()?;
            let r = client
                .archive()
                .find(id)?
                .ok_or_else(|| anyhow!("no archived message {id} (or the prefix is ambiguous)"))?;
            let rows = client.archive().thread(&r.msg_id)?;
            print_records(&rows, *json)
        }
        Command::Outbox { json, action } => {
            let ctx = Ctx::load(&cli)?;
            let client = ctx.open()?;
            if let Some(action) = action {
                return outbox_action(&client, action);
            }
            let now = now_ms();
            let rows = client.outbox().list()?;
            if *json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|l| {
                        let e = &l.entry;
                        json!({"msg_id": e.msg_id.to_hex(), "channel": e.channel, "subject": e.subject, "created_at_ms": e.created_at_ms, "age_secs": now.saturating_sub(e.created_at_ms) / 1000,
                            "refused": l.refused.as_ref().map(|r| json!({"code": r.code.as_str(), "reason": r.reason, "at_ms": r.at_ms}))})
                    })
                    .collect();
                return print_json(&json!(v));
            }
            if rows.is_empty() {
                println!("outbox is empty");
            }
            for l in rows {
                let e = &l.entry;
                println!(
                    "{}  {:<16} age {:>6}s  {}",
                    &e.msg_id.to_hex()[..12],
                    esc(&e.channel),
                    now.saturating_sub(e.created_at_ms) / 1000,
                    esc(&e.subject)
                );
                if let Some(r) = &l.refused {
                    println!(
                        "              REFUSED {}: {}  (tallinn outbox resend|drop {})",
                        r.code,
                        esc(&r.reason),
                        &e.msg_id.to_hex()[..12]
                    );
                }
            }
            Ok(())
        }
        Command::Quarantine { json } => {
            let ctx = Ctx::load(&cli)?;
            let client = ctx.open()?;
            let rows = client.archive().quarantined()?;
            if *json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|q| json!({"seq": q.seq, "received_at_ms": q.received_at_ms, "reason": q.reason, "claimed_sender": q.claimed_sender, "claimed_channel": q.claimed_channel, "envelope_len": q.envelope.len()}))
                    .collect();
                return print_json(&json!(v));
            }
            if rows.is_empty() {
                println!("quarantine is empty");
            }
            for q in rows {
                println!(
                    "seq {:<8} {}  from {:<8} in {:<16} {}",
                    q.seq,
                    fmt_time(q.received_at_ms),
                    esc(q.claimed_sender.as_deref().unwrap_or("?")),
                    esc(q.claimed_channel.as_deref().unwrap_or("?")),
                    esc(&q.reason)
                );
            }
            Ok(())
        }
        Command::Archive { command } => archive_cmd(&cli, command).await,
    }
}

fn now_ms() -> u64 {
    tallinn_common::unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn keygen(
    id: &str,
    name: Option<&str>,
    role: RoleArg,
    passphrase: bool,
    out: Option<&Path>,
) -> Result<()> {
    let pid = ParticipantId::new(id)?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{id}.key")));
    let pass = if passphrase {
        let p = match std::env::var(PASSPHRASE_ENV) {
            Ok(p) => p,
            Err(_) => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the passphrase from stdin")?;
                line.trim_end_matches(['\r', '\n']).to_string()
            }
        };
        if p.chars().count() < 12 {
            bail!("the passphrase must be at least 12 characters");
        }
        Some(zeroize::Zeroizing::new(p))
    } else {
        None
    };
    let identity = Identity::generate(pid);
    identity.write_secret_file(
        &out,
        pass.as_ref().map(|p| p.as_bytes()),
        KdfParams::default(),
    )?;
    let role = match role {
        RoleArg::Member => "member",
        RoleArg::Observer => "observer",
    };
    eprintln!(
        "secret key written to {} (mode 0600; keep it private)",
        out.display()
    );
    println!(
        "{}",
        identity.roster_entry(name.unwrap_or(id), role).trim_end()
    );
    println!("# fingerprint: {}", identity.fingerprint());
    eprintln!("Send the [[participant]] entry above to the relay operator and read the fingerprint to them out of band.");
    Ok(())
}

fn roster_show(ctx: &Ctx, json: bool) -> Result<()> {
    let r = &ctx.roster;
    if json {
        let participants: Vec<_> = r
            .participants()
            .map(|p| json!({"id": p.id().as_str(), "name": p.name, "role": p.role.to_string(), "fingerprint": p.fingerprint().to_string()}))
            .collect();
        let channels: Vec<_> = r
            .channels()
            .map(|c| json!({"id": c.id.as_str(), "description": c.description, "members": c.members.iter().map(|m| m.as_str()).collect::<Vec<_>>(), "observers": c.observers.iter().map(|m| m.as_str()).collect::<Vec<_>>()}))
            .collect();
        return print_json(
            &json!({"fingerprint": r.fingerprint_hex(), "beneficiary": r.beneficiary().map(|b| b.as_str()), "participants": participants, "channels": channels}),
        );
    }
    println!("roster fingerprint {}", r.fingerprint_hex());
    if let Some(b) = r.beneficiary() {
        println!("beneficiary {b}");
    }
    println!("\nparticipants:");
    for p in r.participants() {
        println!(
            "  {:<6} {:<9} {}  {}",
            p.id(),
            p.role.to_string(),
            p.fingerprint(),
            p.name
        );
    }
    println!("\nchannels:");
    for c in r.channels() {
        let m: Vec<&str> = c.members.iter().map(|m| m.as_str()).collect();
        let o: Vec<&str> = c.observers.iter().map(|m| m.as_str()).collect();
        println!("  {:<20} {}", c.id.as_str(), c.description);
        println!("  {:<20} members: {}", "", m.join(" "));
        if !o.is_empty() {
            println!("  {:<20} observers: {}", "", o.join(" "));
        }
    }
    Ok(())
}

fn build_message(kind: Kind, c: &Common) -> Result<Message> {
    let body = match (&c.body, &c.body_file) {
        (Some(b), _) => b.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => String::new(),
    };
    let reply_to = match &c.reply_to {
        Some(r) => Some(
            MsgId::from_hex(r)
                .map_err(|_| anyhow!("--reply-to needs the full 32-digit message id"))?,
        ),
        None => None,
    };
    let mut attachments = Vec::new();
    for path in &c.attach {
        let data = std::fs::read(path)
            .with_context(|| format!("reading attachment {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into());
        attachments.push(Attachment {
            media_type: media_type(&name).into(),
            name,
            data,
        });
    }
    Ok(Message {
        kind,
        tlp: c.tlp,
        reply_to,
        subject: c.subject.clone(),
        body,
        attachments,
    })
}

fn media_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" | "log" => "text/plain",
        "json" => "application/json",
        "csv" => "text/csv",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "zip" => "application/zip",
        "stix" => "application/stix+json",
        _ => "application/octet-stream",
    }
}

/// Resolves a referenced message id (full, or a prefix found in the archive)
/// and the channel to answer in.
fn resolve_ref(cli: &Cli, id: &str, channel: Option<&str>) -> Result<(MsgId, String)> {
    let ctx = Ctx::load(cli)?;
    let client = ctx.open()?;
    let found = client.archive().find(id)?;
    let msg_id = match (&found, MsgId::from_hex(id)) {
        (Some(r), _) => r.msg_id,
        (None, Ok(m)) => m,
        (None, Err(_)) => bail!("no archived message matches {id}; give the full 32-digit id"),
    };
    let channel = match (channel, &found) {
        (Some(c), _) => c.to_string(),
        (None, Some(r)) => r.channel.clone(),
        (None, None) => bail!("message {id} is not in the archive: give --channel"),
    };
    Ok((msg_id, channel))
}

async fn send(cli: &Cli, channel: &str, message: Message) -> Result<()> {
    let ctx = Ctx::load(cli)?;
    // Refuse before anything is stored or sent if the roster forbids it.
    if ctx.roster.role(ctx.identity.id().as_str()) == Some(Role::Observer) {
        bail!(
            "{} is an observer: observers can read but never post",
            ctx.identity.id()
        );
    }
    ctx.roster
        .check_post(ctx.identity.id().as_str(), channel)
        .map_err(|e| anyhow!("cannot post: {e}"))?;
    let client = Client::start(ctx.settings()?)?;
    client.discard_events();
    let result = match client.wait_connected(ctx.config.connect_timeout).await {
        Ok(()) => client
            .send(channel, &message)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => {
            let id = client.queue(channel, &message)?;
            Err(anyhow!(
                "message {id} is queued in the outbox but the relay is unreachable ({e}); `tallinn sync` sends it later"
            ))
        }
    };
    client.close().await;
    let (msg_id, seq) = result?;
    println!("{msg_id}");
    eprintln!("accepted by the relay (seq {seq}) in {channel}");
    Ok(())
}

/// `tallinn outbox resend|drop ID`.
fn outbox_action(client: &Client, action: &OutboxAction) -> Result<()> {
    let (OutboxAction::Resend { id } | OutboxAction::Drop { id }) = action;
    let entry = client
        .outbox()
        .find(id)?
        .ok_or_else(|| anyhow!("no outbox entry {id} (or the prefix is ambiguous)"))?
        .entry;
    match action {
        OutboxAction::Resend { .. } => {
            let new = client
                .resend(&entry.msg_id)?
                .ok_or_else(|| anyhow!("outbox entry {id} vanished"))?;
            println!("{new}");
            eprintln!(
                "sealed again as {new} (was {}); `tallinn sync` sends it",
                entry.msg_id
            );
        }
        OutboxAction::Drop { .. } => {
            client.outbox().drop_entry(&entry.msg_id)?;
            eprintln!("dropped {} from the outbox; it was not sent", entry.msg_id);
        }
    }
    Ok(())
}

async fn sync(cli: &Cli, timeout: Duration, json: bool) -> Result<()> {
    let ctx = Ctx::load(cli)?;
    let client = Client::start(ctx.settings()?)?;
    client.discard_events();
    let before = client.archive().len();
    let outbox_before = client.outbox().len();
    if let Err(e) = client.wait_connected(ctx.config.connect_timeout).await {
        client.close().await;
        return Err(anyhow!(e).context("sync"));
    }
    let tty = std::io::stdout().is_terminal() && !json;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let state = client
        .sync(timeout, |s| {
            if tty && bar.is_none() && s.pending > 24 {
                let b = indicatif::ProgressBar::new(s.pending);
                b.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} messages {eta}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar = Some(b);
            }
            if let Some(b) = &bar {
                b.set_position(s.delivered.min(s.pending));
            }
        })
        .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let quarantined = client.state().borrow().quarantined;
    client.close().await;
    let state = state?;
    let new = client.archive().len().saturating_sub(before);
    let sent = outbox_before.saturating_sub(client.outbox().len());
    let refused = client
        .outbox()
        .len()
        .saturating_sub(client.outbox().pending_len());
    if json {
        return print_json(
            &json!({"received": state.delivered, "archived": new, "quarantined": quarantined, "sent": sent, "outbox": client.outbox().len(), "refused": refused, "archive_records": client.archive().len()}),
        );
    }
    println!(
        "synced: {} delivered, {new} new in the archive, {quarantined} quarantined, {sent} sent from the outbox ({} left)",
        state.delivered,
        client.outbox().len()
    );
    if refused > 0 {
        println!("{refused} refused by the relay: see `tallinn outbox`");
    }
    Ok(())
}

async fn listen(cli: &Cli, count: Option<u64>, json: bool) -> Result<()> {
    let ctx = Ctx::load(cli)?;
    let client = Client::start(ctx.settings()?)?;
    let mut events = client
        .events()
        .ok_or_else(|| anyhow!("event stream unavailable"))?;
    client.wait_connected(ctx.config.connect_timeout).await?;
    // Always on stderr (also with --json, whose stdout stays pure JSON):
    // scripts wait for this line to know the listener is connected.
    eprintln!(
        "listening as {} ({}); Ctrl-C to stop",
        ctx.identity.id(),
        ctx.config.device
    );
    let mut seen = 0u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    Event::Message(r) => {
                        if json {
                            println!("{}", record_json(&r, false));
                        } else {
                            print_records(std::slice::from_ref(&r), false)?;
                        }
                        seen += 1;
                        if count.is_some_and(|c| seen >= c) {
                            break;
                        }
                    }
                    Event::Quarantined(q) => eprintln!("quarantined seq {}: {}", q.seq, esc(&q.reason)),
                    Event::Disconnected { reason } => eprintln!("disconnected ({}); reconnecting", esc(&reason)),
                    Event::Connected { pending } => if !json { eprintln!("connected; {pending} pending") },
                    Event::Accepted { .. } | Event::Archived => {}
                }
                let _ = std::io::stdout().flush();
            }
        }
    }
    client.close().await;
    Ok(())
}

fn print_records(rows: &[Record], json: bool) -> Result<()> {
    if json {
        let v: Vec<_> = rows.iter().map(|r| record_json(r, false)).collect();
        return print_json(&json!(v));
    }
    if rows.is_empty() {
        println!("no messages");
    }
    for r in rows {
        let kind = match &r.message.kind {
            Kind::Request { priority, .. } => format!("request/{priority:?}").to_lowercase(),
            Kind::Status { state, .. } => format!("status/{state:?}").to_lowercase(),
            k => k.name().to_string(),
        };
        println!(
            "{}  {}  {:<18} {:<5} {:<19} {:<16} {}{}",
            &r.msg_id.to_hex()[..12],
            fmt_time(r.received_at_ms),
            esc(&r.channel),
            if r.direction == Direction::Sent {
                "me".into()
            } else {
                esc(&r.sender)
            },
            kind,
            r.message.tlp.to_string(),
            esc(&r.message.subject),
            if r.message.attachments.is_empty() {
                String::new()
            } else {
                format!("  [{} att]", r.message.attachments.len())
            }
        );
    }
    Ok(())
}

/// A kind for humans: `request (immediate, incident-response, high)`.
fn kind_text(k: &Kind) -> String {
    let v = kind_json(k);
    let fields: Vec<String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.as_str() != "name")
                .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    if fields.is_empty() {
        k.name().to_string()
    } else {
        format!("{} ({})", k.name(), fields.join(", "))
    }
}

fn show(ctx: &Ctx, r: &Record, json: bool) -> Result<()> {
    let sig = tallinn_common::envelope::UntrustedEnvelope::decode(&r.envelope)
        .and_then(|u| u.verify(&ctx.roster))
        .map(|_| "valid (verified against the pinned roster)".to_string())
        .unwrap_or_else(|e| format!("INVALID: {e}"));
    let fp = ctx
        .roster
        .participant(&r.sender)
        .map(|p| p.fingerprint().to_string())
        .unwrap_or_else(|| "sender no longer in the roster".into());
    if json {
        let mut v = record_json(r, false);
        v["signature"] = json!(sig);
        v["sender_fingerprint"] = json!(fp);
        return print_json(&v);
    }
    println!("Message   {}", r.msg_id);
    println!("From      {} (fingerprint {fp})", esc(&r.sender));
    println!("Channel   {}", esc(&r.channel));
    println!("Kind      {}", esc(&kind_text(&r.message.kind)));
    println!("TLP       {}", r.message.tlp);
    println!("Sent      {} (sender clock)", fmt_time(r.sent_at_ms));
    println!(
        "Received  {} (relay seq {})",
        fmt_time(r.received_at_ms),
        r.seq
    );
    if let Some(p) = r.message.reply_to {
        println!("Reply to  {p}");
    }
    println!("Signature {}", esc(&sig));
    println!("Subject   {}", esc(&r.message.subject));
    println!();
    println!("{}", escape_text(&r.message.body));
    for a in &r.message.attachments {
        println!(
            "\n[attachment] {} ({}, {} bytes)",
            esc(&a.name),
            esc(&a.media_type),
            a.data.len()
        );
    }
    Ok(())
}

async fn archive_cmd(cli: &Cli, command: &ArchiveCommand) -> Result<()> {
    let ctx = Ctx::load(cli)?;
    let client = ctx.open()?;
    let archive = client.archive();
    match command {
        ArchiveCommand::Search {
            channel,
            from,
            kind,
            tlp,
            since,
            until,
            text,
            limit,
            json,
        } => {
            let filter = Filter {
                channel: channel.clone(),
                from: from.clone(),
                kind: kind.map(|k| format!("{k:?}").to_lowercase()),
                tlp: *tlp,
                since_ms: *since,
                until_ms: *until,
                text: text.clone(),
            };
            print_records(&archive.search(&filter, *limit)?, *json)
        }
        ArchiveCommand::Export { out, force } => {
            let mut file = crate::private_file::PrivateFile::create(out, *force)
                .with_context(|| format!("creating {}", out.display()))?;
            let total = archive.len();
            let bar = if std::io::stderr().is_terminal() {
                indicatif::ProgressBar::new(total)
            } else {
                indicatif::ProgressBar::hidden()
            };
            let n = crate::export::export(
                archive,
                &ctx.roster,
                &ctx.roster_text,
                ctx.identity.id().as_str(),
                ctx.config.device.as_str(),
                now_ms(),
                &mut file,
                |i| bar.set_position(i),
            )?;
            file.commit()
                .with_context(|| format!("writing {}", out.display()))?;
            bar.finish_and_clear();
            println!(
                "exported {n} records to {} (head {})",
                out.display(),
                hex::encode(archive.head_hash())
            );
            Ok(())
        }
        ArchiveCommand::Verify { deep, json } => {
            let report = archive.verify(&ctx.roster, &ctx.identity, *deep, |_| {})?;
            if *json {
                print_json(
                    &json!({"ok": report.first_error.is_none(), "records": report.records, "head_hash": hex::encode(report.head_hash), "first_error": report.first_error.as_ref().map(|(i, w)| json!({"index": i, "reason": w}))}),
                )?;
            } else if report.first_error.is_none() {
                println!(
                    "archive OK: {} records, signatures valid, hash chain intact, head {}",
                    report.records,
                    hex::encode(report.head_hash)
                );
            }
            if let Some((i, why)) = report.first_error {
                return Err(VerificationFailed(format!(
                    "archive verification FAILED at record {i}: {why}"
                ))
                .into());
            }
            Ok(())
        }
        ArchiveCommand::Stats { json } => {
            let s = archive.stats()?;
            if *json {
                return print_json(&serde_json::to_value(&s)?);
            }
            println!(
                "records {} ({} received, {} sent), quarantined {} ({} evicted, oldest first)",
                s.records, s.received, s.sent, s.quarantined, s.quarantine_evicted
            );
            println!("head {}", s.head_hash);
            println!("on disk {} bytes", s.disk_bytes);
            for (c, n) in &s.by_channel {
                println!("  channel {c:<20} {n}");
            }
            for (k, n) in &s.by_kind {
                println!("  kind    {k:<20} {n}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip() {
        assert_eq!(parse_time("1970-01-01").unwrap(), 0);
        let t = parse_time("2026-11-29").unwrap();
        assert_eq!(fmt_time(t), "2026-11-29 00:00");
        assert_eq!(
            fmt_time(t + 13 * 3_600_000 + 5 * 60_000),
            "2026-11-29 13:05"
        );
        assert!(parse_time("2026-13-01").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
