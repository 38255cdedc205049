//! The subcommands of `roster`, `device`, `outbox`, `quarantine`,
//! `attachment`, `archive` and `archive hold`.

use super::*;

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
