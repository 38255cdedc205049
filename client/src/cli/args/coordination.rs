//! The coordination commands' arguments: `request`, `offer`, `status`,
//! `requests` and `share`.

use super::*;

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
