//! The command line's arguments (clap): commands, their options and
//! the parsers of ids, times and labels.

use super::*;

mod coordination;
mod subcommands;

pub use coordination::*;
pub use subcommands::*;

/// Tallinn Relay client: send and receive signed, end-to-end encrypted
/// coordination messages, and keep a verifiable archive.
#[derive(Parser, Debug)]
#[command(
    name = "tallinn",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 success, 1 error, 2 usage error, 3 verification failed (archive verify), 75 queued: the relay is unreachable and the message waits in the outbox.\nWith `tallinn agent` running, every command goes through it and works beside `listen`."
)]
pub struct Cli {
    /// Client configuration file [default: $XDG_CONFIG_HOME/tallinn/client.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (archive and outbox), overriding the config file.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print times in UTC instead of local time.
    #[arg(long, global = true)]
    pub utc: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Set up this machine in one step: the folders, your key (passphrase
    /// asked twice, hidden), the device and client.toml; prints the public
    /// entry and fingerprint to hand to the operator.
    Init(InitArgs),
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
        /// Protect the key file with a passphrase: asked twice on a hidden
        /// prompt; without a terminal, from TALLINN_PASSPHRASE_FILE,
        /// TALLINN_PASSPHRASE or the first line of standard input.
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
    /// Version 2: this participant's devices (list, add, revoke).
    Device {
        /// Subcommand.
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Run the local agent: holds the relay session, the archive, the
    /// outbox and the unlocked key, and serves every other command (and
    /// `listen`) over a Unix socket, so they work side by side.
    Agent {
        /// Socket path [default: from the config, or
        /// $XDG_RUNTIME_DIR/tallinn/agent-DEVICE-HASH.sock].
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
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
    /// List received messages, newest first (`*` marks unread).
    Inbox {
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only unread messages (`show` marks a message read).
        #[arg(long)]
        unread: bool,
        /// Only the messages you sent.
        #[arg(long, conflicts_with = "all")]
        mine: bool,
        /// Received and sent messages.
        #[arg(long)]
        all: bool,
        /// Received on or after (YYYY-MM-DD, unix ms, or an age: 7d, 12h, 30m).
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// At most this many.
        #[arg(long, default_value_t = crate::defaults::PAGE)]
        limit: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show one message in full, with its signature status.
    Show {
        /// Message id: the full 32 hex digits, or a unique prefix of at least 6.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show the thread a message belongs to.
    Thread {
        /// Message id: the full 32 hex digits, or a unique prefix of at least 6.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// The request tracker: requests with their offers and status
    /// updates as cases (open, pledged, in progress, fulfilled, declined,
    /// closed); by default the active ones, highest priority first.
    Requests(RequestsArgs),
    /// Share earlier messages with a participant who joined later (or an
    /// observer admitted later): each goes as a `Share` carrying the
    /// original, which the recipient verifies against the roster of its
    /// time. TLP:RED and TLP:AMBER+STRICT are never shared.
    Share(ShareArgs),
    /// Messages waiting in the outbox for the relay's acceptance, and
    /// those it refused (with code and reason) until resent or dropped.
    Outbox {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Resend, drop or retry.
        #[command(subcommand)]
        action: Option<OutboxAction>,
    },
    /// Deliveries that failed verification: list, verify again, purge.
    Quarantine {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Retry or purge.
        #[command(subcommand)]
        action: Option<QuarantineAction>,
    },
    /// Attachments of received messages.
    Attachment {
        /// Subcommand.
        #[command(subcommand)]
        command: AttachmentCommand,
    },
    /// Archive commands: search, export, verify, stats.
    Archive {
        /// Subcommand.
        #[command(subcommand)]
        command: ArchiveCommand,
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
    /// Roster proposals (version 2 governance).
    Proposal,
    /// Roster approvals (version 2 governance).
    Approval,
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

pub(super) fn parse_tlp(s: &str) -> Result<Tlp, String> {
    s.parse::<Tlp>().map_err(|e| e.to_string())
}

/// An age (`90s`, `30m`, `12h`, `7d`, `2w`) in ms; `None` if `s` does
/// not have that shape.
pub(super) fn parse_age(s: &str) -> Option<Result<u64, String>> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n = s.get(..s.len() - unit.len_utf8())?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let per: u64 = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    Some(
        n.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(per))
            .ok_or_else(|| format!("age {s:?} is too large")),
    )
}

pub(super) fn parse_msg_id(s: &str) -> Result<String, String> {
    crate::ids::normalise(s).map_err(|e| e.to_string())
}

/// Parses `YYYY-MM-DD` (UTC midnight), unix milliseconds, or an age
/// back from now: `90s`, `30m`, `12h`, `7d`, `2w`.
pub(super) fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    if let Some(age) = parse_age(s) {
        return Ok(now_ms().saturating_sub(age?));
    }
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(
            "expected YYYY-MM-DD, unix milliseconds, or an age such as 7d, 12h, 30m".into(),
        );
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

/// `tallinn init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Participant id (e.g. LT), as the operator listed it.
    #[arg(long)]
    pub id: String,
    /// Display name for the roster entry.
    #[arg(long)]
    pub name: Option<String>,
    /// Role for the roster entry.
    #[arg(long, value_enum, default_value_t = RoleArg::Member)]
    pub role: RoleArg,
    /// The relay, host:port (from the operator).
    #[arg(long, value_name = "HOST:PORT")]
    pub relay: String,
    /// The relay's key fingerprint (64 hex digits, from the operator).
    #[arg(long, value_name = "HEX")]
    pub pin: String,
    /// The roster file from the operator (version 1); copied next to the config.
    #[arg(long, value_name = "FILE", required_unless_present = "deployment")]
    pub roster: Option<PathBuf>,
    /// Version 2: the deployment fingerprint (64 hex digits, from the operator).
    #[arg(long, value_name = "HEX")]
    pub deployment: Option<String>,
    /// This installation's device label (1-32 of A-Za-z0-9_-).
    #[arg(long, default_value = "default")]
    pub device: String,
    /// Leave the key file without a passphrase (a machine nobody else can
    /// reach; the file stays mode 0600).
    #[arg(long)]
    pub no_passphrase: bool,
    /// Replace an existing client.toml (an existing key file is never replaced).
    #[arg(long)]
    pub force: bool,
}

/// Fields common to every message-sending command.
#[derive(Args, Debug)]
pub struct Common {
    /// TLP 2.0 label: CLEAR, GREEN, AMBER, AMBER+STRICT or RED. Required,
    /// except for an answer (reply, offer, status) to an archived message:
    /// it then takes its parent's label.
    #[arg(long, value_parser = parse_tlp)]
    pub tlp: Option<Tlp>,
    /// Allow a lower TLP label than the message answered.
    #[arg(long)]
    pub tlp_downgrade: bool,
    /// One-line subject.
    #[arg(long)]
    pub subject: String,
    /// Body text.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the body from a file (`-`: standard input).
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
    /// Where it goes: a channel, or a direct conversation.
    #[command(flatten)]
    pub target: Target,
    /// Message fields.
    #[command(flatten)]
    pub common: Common,
}

/// Where a message goes: `--channel C`, or `--to PL,UA` for a direct
/// conversation.
#[derive(Args, Debug, Clone, Default)]
pub struct Target {
    /// Channel.
    #[arg(long, required_unless_present = "to", conflicts_with = "to")]
    pub channel: Option<String>,
    /// A direct conversation with these participants (comma-separated, e.g.
    /// `PL,UA`) instead of a channel: you are in it, the beneficiary is
    /// added if you leave it out, observers only when you name them.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub to: Vec<String>,
}

impl Target {
    /// `channel`, unless `to` names a direct conversation.
    pub fn of(channel: String, to: &[String]) -> Target {
        if to.is_empty() {
            Target {
                channel: Some(channel),
                to: Vec::new(),
            }
        } else {
            Target {
                channel: None,
                to: to.to_vec(),
            }
        }
    }
}
