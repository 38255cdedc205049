//! The command line's arguments (clap): commands, their options and
//! the parsers of ids, times and labels.

use super::*;

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

/// Roster subcommands.
#[derive(Subcommand, Debug)]
pub enum RosterCommand {
    /// Participants, roles, fingerprints, channels and the roster fingerprint.
    Show {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Version 2: the roster log entry by entry (index, kind, approvers,
    /// hash); `--export FILE` writes it as a JSON array of base64
    /// `SignedEntry` for an auditor.
    Log {
        /// Write the log to this file (JSON array of base64 entries).
        #[arg(long)]
        export: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Version 2: propose an amendment of the roster in force, as a message
    /// in a channel; prints the proposal id (the first digits of the entry
    /// hash). You approve it too. Exactly one change per proposal.
    Propose {
        /// Admit a participant: its `[[participant]]` entry from `tallinn keygen`.
        #[arg(long, value_name = "ENTRY.toml", group = "change")]
        add_participant: Option<PathBuf>,
        /// Remove a participant (and from every channel).
        #[arg(long, value_name = "ID", group = "change")]
        remove_participant: Option<String>,
        /// Pass the chair to this member.
        #[arg(long, value_name = "ID", group = "change")]
        chair: Option<String>,
        /// Set the quorum.
        #[arg(long, value_name = "N", group = "change")]
        quorum: Option<u32>,
        /// Add or replace a channel: a `[[channel]]` table (id, description,
        /// members, observers, post = "members"|"chair", max_tlp).
        #[arg(long, value_name = "FILE", group = "change")]
        channel: Option<PathBuf>,
        /// The channel the proposal is sent in.
        #[arg(long, default_value = "plenary")]
        via: String,
    },
    /// Version 2: submit a proposal (its id) with the approvals received as
    /// messages, or an approved entry file; the relay appends it only if it
    /// is valid (quorum, beneficiary, chair...).
    Submit {
        /// Proposal id (a unique prefix of at least 8 hex digits), or an
        /// entry file.
        proposal: String,
    },
    /// Version 2: show a proposal (its id) or an entry file (e.g. the
    /// genesis from `tallinn-relay roster init`), check it, and approve it
    /// with your identity key: a proposal by an approval message in its
    /// channel, a file by adding the approval to it.
    Approve {
        /// Proposal id (a unique prefix of at least 8 hex digits), or an
        /// entry file.
        proposal: String,
        /// Show and check only; do not sign.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Device subcommands (version 2).
#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// This participant's devices in the current roster epoch.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Create keys for a new device (written to `--out`, mode 0600), sign a
    /// `Devices` entry adding it with your identity key, and submit it.
    Add {
        /// Device label (1-32 of A-Za-z0-9_-), e.g. `back-office`.
        label: String,
        /// Where to write the new device's secret key file [default: LABEL.key].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a `Devices` entry without this device (a lost laptop) and
    /// submit it: the relay closes its sessions at once and refuses it.
    Revoke {
        /// Device label.
        label: String,
    },
    /// Rotate this device's encryption key (forward secrecy): a new secret
    /// in the key file, the old one kept as retired until nothing sealed to
    /// it can still arrive, then erased. On the device holding your
    /// identity key it happens at once; on another device it is requested
    /// as a proposal (sent in `--via`, which your other devices receive)
    /// that the identity device approves and submits, and the next `sync`
    /// here completes it.
    Rotate {
        /// This device's label (each device rotates its own key; another
        /// device's secret never leaves that device).
        label: Option<String>,
        /// The channel a rotation request of a non-identity device is sent in.
        #[arg(long, default_value = "plenary")]
        via: String,
    },
}

/// What to do with one outbox entry.
#[derive(Subcommand, Debug)]
pub enum OutboxAction {
    /// Seal a (refused) message again against the current roster and clock,
    /// under a new id, and send it at the next sync.
    Resend {
        /// Message id: the full 32 hex digits, or a unique prefix of at least 6.
        id: String,
    },
    /// Remove a message from the outbox without sending it.
    Drop {
        /// Message id: the full 32 hex digits, or a unique prefix of at least 6.
        id: String,
    },
    /// Send every pending message again now (with the agent: on its
    /// session; without: connect, send, wait for the answers).
    Retry,
}

/// What to do with the quarantine.
#[derive(Subcommand, Debug)]
pub enum QuarantineAction {
    /// Verify every quarantined delivery again against the roster in force
    /// and archive those that pass now.
    Retry,
    /// Delete quarantined deliveries older than an age.
    Purge {
        /// Age: 90s, 30m, 12h, 7d, 2w.
        #[arg(long, value_name = "AGE", value_parser = parse_age_arg)]
        older_than: u64,
    },
}

/// Attachment subcommands.
#[derive(Subcommand, Debug)]
pub enum AttachmentCommand {
    /// Save a message's attachments (or the one named) into a folder: the
    /// size and SHA-256 are checked first, the sender's file name is made
    /// safe (one plain name, no path, no leading dot, no control
    /// characters), files are written 0600 and never over an existing one.
    Save {
        /// Message id: the full 32 hex digits, or a unique prefix of at least 6.
        id: String,
        /// Only the attachment with this name (or number, from 1).
        name: Option<String>,
        /// The folder to write into (created 0700 if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

pub(super) fn parse_age_arg(s: &str) -> Result<u64, String> {
    parse_age(s)
        .unwrap_or_else(|| Err(format!("{s:?} is not an age such as 90s, 30m, 12h, 7d, 2w")))
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
        /// Received on or after (YYYY-MM-DD, unix ms, or an age: 7d, 12h).
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// Received before (YYYY-MM-DD, unix ms, or an age: 7d, 12h).
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
    /// Export the archive as JSON Lines for an auditor (`tallinn-audit`).
    /// With criteria (combined with AND) only matching records are written
    /// in full, the others redacted: the subset still proves its place in
    /// the chain.
    Export {
        /// Output file, created with mode 0600 (it holds the plaintext).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists (never follows a symlink there).
        #[arg(long)]
        force: bool,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only messages from this participant.
        #[arg(long)]
        from: Option<String>,
        /// Only the thread of this message (id or unique prefix).
        #[arg(long, value_name = "ID")]
        thread: Option<String>,
        /// Received on or after (YYYY-MM-DD, unix ms, or an age: 7d, 12h).
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// Received before (YYYY-MM-DD, unix ms, or an age: 7d, 12h).
        #[arg(long, value_parser = parse_time)]
        until: Option<u64>,
        /// Include TLP:RED messages in full. Without it they are left out
        /// (each line keeps its place in the chain and its marking), so an
        /// export handed on never carries RED by accident.
        #[arg(long)]
        include_tlp_red: bool,
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
    /// Go on with this archive although it does not reach or match the last
    /// checkpoint its device signed (it was truncated, or an older copy was
    /// put back): syncs, and records the recovery in the archive and in
    /// every later export. Records the checkpoint covered that this archive
    /// lacks are not restored.
    Recover {
        /// Seconds to wait for the relay.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Legal holds: what they cover is never redacted by retention.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// Apply the retention of client.toml now (`retention_days`,
    /// `retention_days_by_channel`): expired records not under a hold are
    /// redacted, their place in the chain kept. `tallinn sync` does it too.
    Retention {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// The latest checkpoint of this archive that the relay confirmed, as a
    /// file for an auditor (`tallinn-audit verify --checkpoint FILE`).
    Checkpoint {
        /// Write it to FILE (JSON) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `tallinn archive hold`.
#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a hold on a channel, a sender, a thread or a period (exactly
    /// one) for a stated reason; recorded in the archive and every export.
    #[command(group(clap::ArgGroup::new("scope").required(true).multiple(false)))]
    Add {
        /// Every record of this channel.
        #[arg(long, group = "scope")]
        channel: Option<String>,
        /// Every record from this participant.
        #[arg(long, group = "scope")]
        from: Option<String>,
        /// The thread of this message (id or unique prefix).
        #[arg(long, value_name = "ID", group = "scope")]
        thread: Option<String>,
        /// From this time (with --until).
        #[arg(long, value_parser = parse_time, requires = "until", group = "scope")]
        since: Option<u64>,
        /// Until this time (with --since).
        #[arg(long, value_parser = parse_time, requires = "since")]
        until: Option<u64>,
        /// Why (a case or matter reference).
        #[arg(long)]
        reason: String,
    },
    /// Every hold, in force or released.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Release a hold (it stays recorded, marked released).
    Release {
        /// The hold's number (`hold list`).
        id: u64,
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

/// `request`.
#[derive(Args, Debug)]
pub struct RequestArgs {
    /// Where it goes: a channel, or a direct conversation.
    #[command(flatten)]
    pub target: Target,
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
    #[arg(long, conflicts_with = "to")]
    pub channel: Option<String>,
    /// A direct conversation with these participants instead (see `send --to`).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub to: Vec<String>,
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
    #[arg(long, conflicts_with = "to")]
    pub channel: Option<String>,
    /// A direct conversation with these participants instead (see `send --to`).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub to: Vec<String>,
    /// Message fields.
    #[command(flatten)]
    pub common: Common,
}

/// `requests`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RequestsArgs {
    /// One case in full.
    #[command(subcommand)]
    pub command: Option<RequestsCommand>,
    /// Only these states (comma-separated): open, pledged, in-progress,
    /// fulfilled, declined, closed, or all [default: open, pledged, in-progress].
    #[arg(long, value_delimiter = ',', value_name = "STATES")]
    pub state: Vec<String>,
    /// Only this line of effort.
    #[arg(long, value_enum)]
    pub loe: Option<LoeArg>,
    /// Only this priority.
    #[arg(long, value_enum)]
    pub priority: Option<PriorityArg>,
    /// Only cases you requested or pledged to.
    #[arg(long)]
    pub mine: bool,
    /// Only cases waiting on you (an offer to accept or decline, a
    /// fulfilled request to close, an accepted offer to deliver).
    #[arg(long, conflicts_with = "mine")]
    pub waiting_on_me: bool,
    /// Only needs nobody has offered for.
    #[arg(long)]
    pub unanswered: bool,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `requests show`.
#[derive(Subcommand, Debug)]
pub enum RequestsCommand {
    /// A case's full history: the request, every offer and status update
    /// in the senders' order, and what each did.
    Show {
        /// The request (or an offer or status in its case): the full 32 hex
        /// digits, or a unique prefix of at least 6.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// `share`.
#[derive(Args, Debug)]
pub struct ShareArgs {
    /// Who to share with (comma-separated): a direct conversation with
    /// them (the beneficiary is added if left out).
    #[arg(long, value_delimiter = ',', value_name = "IDS", required = true)]
    pub to: Vec<String>,
    /// Every message of this channel (with --since).
    #[arg(long, requires = "since", conflicts_with = "ids")]
    pub channel: Option<String>,
    /// Received on or after (YYYY-MM-DD, unix ms, or an age: 30d).
    #[arg(long, value_parser = parse_time, requires = "channel")]
    pub since: Option<u64>,
    /// Or these messages (ids or unique prefixes).
    #[arg(required_unless_present = "channel")]
    pub ids: Vec<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}
