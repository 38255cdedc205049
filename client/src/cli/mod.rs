//! The `tallinn` command line: enrolment, sending, syncing, reading,
//! searching, exporting and verifying the archive.
//!
//! Modules: `args` (clap arguments), `identity` (keygen, roster show),
//! `messaging` (send, outbox, sync, listen), `archive` (search, export,
//! verify, stats), `output` (printing); this file dispatches.
//!
//! Exit codes: 0 success, 1 error (`error: ...` on stderr), 2 usage error
//! (clap), 3 verification failed, 75 queued (the relay is unreachable; the
//! message is safe in the outbox). Every read command takes `--json`.
//!
//! Every command that reads or changes the archive and outbox goes through
//! `front`: to the running agent, or to the archive opened here.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use tallinn_common::identity::{Identity, KdfParams, ParticipantId};
use tallinn_common::message::{Attachment, Kind, Loe, Message, MsgId, Priority, State, Tlp};
use tallinn_common::roster::Roster;
use tallinn_common::text::{escape_line as esc, escape_text};

use self::front::Front;
use crate::agent::api::{DirectionView, SearchRequest};
use crate::client::{Client, Event, Settings};
use crate::config::ClientConfig;
use crate::key_file::SecretKeyFile as _;

mod agent_cmd;
mod archive;
mod args;
mod coordination;
mod front;
mod governance;
mod identity;
mod init;
mod messaging;
mod output;
mod prompt;
mod roster;
#[cfg(test)]
mod tests;

use self::archive::*;
pub use self::args::*;
use self::identity::*;
use self::messaging::*;
pub use self::output::fmt_time;
use self::output::*;

/// Environment variable holding the passphrase of a protected key file.
pub const PASSPHRASE_ENV: &str = "TALLINN_PASSPHRASE";

/// Everything a command needs from the config.
pub(super) struct Ctx {
    config: ClientConfig,
    identity: Arc<Identity>,
    /// Retired encryption keys of this device (rotation).
    retired: Vec<Arc<Identity>>,
    roster: Arc<Roster>,
    roster_text: String,
}

fn default_config_path() -> PathBuf {
    // An empty XDG variable counts as unset (XDG Base Directory spec).
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("tallinn").join("client.toml")
}

fn passphrase_for(path: &Path) -> Result<Option<zeroize::Zeroizing<String>>> {
    if !Identity::secret_file_is_protected(path)? {
        return Ok(None);
    }
    prompt::existing(path).map(Some)
}

impl Ctx {
    fn load(cli: &Cli) -> Result<Ctx> {
        Self::load_from(cli.config.as_deref(), cli.data_dir.as_deref())
    }

    /// [`Ctx::load`] from the two global options (the agent reloads with
    /// them after a command changed the key file).
    fn load_from(config: Option<&Path>, data_dir: Option<&Path>) -> Result<Ctx> {
        let config = front::load_config_from(config, data_dir)?;
        let pass = passphrase_for(&config.identity)?;
        let identity =
            Identity::read_secret_file(&config.identity, pass.as_ref().map(|p| p.as_bytes()))?;
        let mut retired: Vec<Arc<Identity>> =
            crate::rotation::load_retired(&config.identity, pass.as_ref().map(|p| p.as_bytes()))?
                .into_iter()
                .map(|r| Arc::new(r.identity))
                .collect();
        // A requested rotation: deliveries may already be sealed to the
        // next key.
        let next = crate::rotation::next_path(&config.identity);
        if next.exists() {
            retired.push(Arc::new(Identity::read_secret_file(
                &next,
                pass.as_ref().map(|p| p.as_bytes()),
            )?));
        }
        if config.deployment.is_some() && !config.roster.exists() {
            // Version 2: the roster log (in the archive) is the roster; a
            // device enrolled under version 2 has no roster file.
            return Ok(Ctx {
                config,
                identity: Arc::new(identity),
                retired,
                roster: Arc::new(Roster::parse("").context("an empty roster")?),
                roster_text: String::new(),
            });
        }
        let roster_text = std::fs::read_to_string(&config.roster)
            .with_context(|| format!("reading roster {}", config.roster.display()))?;
        let roster = Roster::parse(&roster_text)
            .with_context(|| format!("roster {} is invalid", config.roster.display()))?;
        if config.deployment.is_some() {
            // Version 2: keys are checked against the roster log.
            return Ok(Ctx {
                config,
                identity: Arc::new(identity),
                retired,
                roster: Arc::new(roster),
                roster_text,
            });
        }
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
            retired,
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
            retired: self.retired.clone(),
            device: self.config.device.clone(),
            roster: self.roster.clone(),
            deployment: self.config.deployment,
            archive_dir,
            connect_timeout: self.config.connect_timeout,
            send_timeout: self.config.send_timeout,
            max_backoff: self.config.max_backoff,
            allow_classical_key_exchange: self.config.allow_classical_key_exchange,
            check_wraps: self.config.check_wraps,
        })
    }

    /// Opens the archive and outbox in this process.
    fn open(&self) -> Result<Client> {
        Client::open(self.settings()?).map_err(|e| self.in_use(e))
    }

    /// Opens the archive and starts a relay session in this process.
    fn start(&self) -> Result<Client> {
        Client::start(self.settings()?).map_err(|e| self.in_use(e))
    }

    /// Names the usual reason an archive does not open: another process
    /// (an agent, a `listen`) holds it.
    fn in_use(&self, e: crate::ClientError) -> anyhow::Error {
        if matches!(
            &e,
            crate::ClientError::Archive(crate::archive::ArchiveError::InUse(_))
        ) {
            if self.config.agent_socket.exists() {
                anyhow!(
                    "the archive is held by the running agent (socket {}): this command needs it to itself; stop the agent (`systemctl --user stop tallinn-agent`, or Ctrl-C) and run it again",
                    self.config.agent_socket.display()
                )
            } else {
                anyhow!(
                    "the archive in {} is in use by another tallinn process; run `tallinn agent` so that every command can share it",
                    self.config.data_dir.display()
                )
            }
        } else {
            anyhow!(e).context("opening the archive")
        }
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    tallinn_host::process::quiet_broken_pipe();
    prompt::take_env();
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
        Err(e) if tallinn_host::process::is_broken_pipe(e.as_ref()) => {
            std::process::ExitCode::from(141)
        }
        Err(e) => {
            eprintln!("error: {}", escape_text(&error_text(&e)));
            if e.downcast_ref::<VerificationFailed>().is_some() {
                std::process::ExitCode::from(EXIT_VERIFY_FAILED)
            } else if e.downcast_ref::<UsageError>().is_some() {
                std::process::ExitCode::from(2)
            } else if e.downcast_ref::<Queued>().is_some() {
                std::process::ExitCode::from(EXIT_QUEUED)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// An error and its causes, each said once
/// ([`tallinn_host::process::error_text`]).
pub fn error_text(e: &anyhow::Error) -> String {
    tallinn_host::process::error_text(e.as_ref())
}

/// Exit code of a verification that ran and found a problem (`archive
/// verify`); 1 is any other error, 2 a usage error (clap).
pub const EXIT_VERIFY_FAILED: u8 = 3;

/// Exit code of a message that is safe in the outbox but not accepted:
/// the relay is unreachable or did not answer in time (`EX_TEMPFAIL`).
pub const EXIT_QUEUED: u8 = 75;

/// A message is queued, not sent (exit 75); the id is on stdout.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Queued(pub String);

/// A usage error found after parsing (exit 2, like clap's).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A verification ran to a verdict and the verdict is "failed" (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VerificationFailed(pub String);

/// Runs one parsed command.
///
/// # Errors
/// Whatever the command reports.
pub async fn run(cli: Cli) -> Result<()> {
    output::set_utc(cli.utc);
    // Governance commands need the archive to themselves: a running agent
    // lends it for as long as they run.
    let _hold = match &cli.command {
        Command::Roster { .. } | Command::Device { .. } => front::hold_agent(&cli).await?,
        _ => None,
    };
    match &cli.command {
        Command::Init(a) => init::init(&cli, a),
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
        } => {
            let ctx = Ctx::load(&cli)?;
            if ctx.config.deployment.is_some() {
                roster::show_log(&ctx, *json)
            } else {
                roster_show(&ctx, *json)
            }
        }
        Command::Roster {
            command: RosterCommand::Approve { proposal, dry_run },
        } => {
            let ctx = Ctx::load(&cli)?;
            if Path::new(proposal).exists() {
                roster::approve(&ctx, Path::new(proposal), *dry_run)
            } else {
                governance::approve(&ctx, proposal, *dry_run).await
            }
        }
        Command::Roster {
            command:
                RosterCommand::Propose {
                    add_participant,
                    remove_participant,
                    chair,
                    quorum,
                    channel,
                    via,
                },
        } => {
            let change = governance::Change::from_args(
                add_participant.as_deref(),
                remove_participant.as_deref(),
                chair.as_deref(),
                *quorum,
                channel.as_deref(),
            )?;
            governance::propose(&Ctx::load(&cli)?, change, via).await
        }
        Command::Roster {
            command: RosterCommand::Log { export, json },
        } => roster::log(&Ctx::load(&cli)?, export.as_deref(), *json),
        Command::Roster {
            command: RosterCommand::Submit { proposal },
        } => {
            let ctx = Ctx::load(&cli)?;
            if Path::new(proposal).exists() {
                roster::submit(&ctx, Path::new(proposal)).await
            } else {
                governance::submit(&ctx, proposal).await
            }
        }
        Command::Device { command } => roster::device(&Ctx::load(&cli)?, command).await,
        Command::Agent { socket } => agent_cmd::agent(&cli, socket.as_deref()).await,
        Command::Send(a) => {
            let m = build_message(&cli, Kind::Note, &a.common).await?;
            send(&cli, &a.target, m).await
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
            let m = build_message(&cli, kind, &a.common).await?;
            send(&cli, &a.target, m).await
        }
        Command::Offer(a) => {
            let (request, channel) =
                resolve_ref(&cli, &a.request, a.channel.as_deref(), &a.to).await?;
            let m = build_message(&cli, Kind::Offer { request }, &a.common).await?;
            send(&cli, &Target::of(channel, &a.to), m).await
        }
        Command::Status(a) => {
            let (about, channel) = resolve_ref(&cli, &a.about, a.channel.as_deref(), &a.to).await?;
            let state = match a.state {
                StateArg::Acknowledged => State::Acknowledged,
                StateArg::InProgress => State::InProgress,
                StateArg::Fulfilled => State::Fulfilled,
                StateArg::Declined => State::Declined,
                StateArg::Closed => State::Closed,
            };
            let m = build_message(&cli, Kind::Status { about, state }, &a.common).await?;
            send(&cli, &Target::of(channel, &a.to), m).await
        }
        Command::Sync { timeout, json } => sync(&cli, Duration::from_secs(*timeout), *json).await,
        Command::Listen { count, json } => listen(&cli, *count, *json).await,
        Command::Inbox {
            channel,
            unread,
            mine,
            all,
            since,
            limit,
            json,
        } => {
            let front = Front::local(&cli).await?;
            let q = SearchRequest {
                channel: channel.clone(),
                since_ms: *since,
                direction: match (mine, all) {
                    (true, _) => Some(DirectionView::Sent),
                    (false, true) => None,
                    (false, false) => Some(DirectionView::Received),
                },
                unread_only: *unread,
                limit: Some(*limit),
                ..Default::default()
            };
            let page = front.search(&q).await?;
            if let (Some(chair), false) = (&page.chair, *json) {
                println!("{}", console::style(format!("chair: {}", esc(chair))).dim());
            }
            print_messages(&page.messages, page.more, *json)
        }
        Command::Show { id, json } => {
            let front = Front::local(&cli).await?;
            let d = front.show(id).await?;
            front.mark_read(&d.message.msg_id).await?;
            show(&d, *json)
        }
        Command::Thread { id, json } => {
            let front = Front::local(&cli).await?;
            let rows = front.thread(id).await?;
            print_messages(&rows, false, *json)
        }
        Command::Requests(a) => coordination::requests(&cli, a).await,
        Command::Share(a) => coordination::share(&cli, a).await,
        Command::Outbox { json, action } => {
            if let Some(action) = action {
                return outbox_action(&cli, action).await;
            }
            let front = Front::local(&cli).await?;
            let rows = front.outbox().await?;
            let now = now_ms();
            if *json {
                return print_json(&rows);
            }
            if rows.is_empty() {
                println!("outbox is empty");
            }
            let width = term_width();
            for e in rows {
                let head = format!(
                    "{}  {}  {:>4}  ",
                    &e.msg_id.get(..8).unwrap_or(&e.msg_id),
                    fit(&esc(&e.channel), 12),
                    fmt_age(now.saturating_sub(e.created_at_ms))
                );
                let room = width.saturating_sub(console::measure_text_width(&head));
                println!(
                    "{head}{}",
                    console::truncate_str(&esc(&e.subject), room, "…")
                );
                if let Some(r) = &e.refused {
                    let line = format!(
                        "          REFUSED {}: {}  (tallinn outbox resend|drop {})",
                        esc(&r.code),
                        esc(&r.reason),
                        &e.msg_id.get(..8).unwrap_or(&e.msg_id)
                    );
                    println!("{}", console::truncate_str(&line, width, "…"));
                }
            }
            Ok(())
        }
        Command::Attachment {
            command: AttachmentCommand::Save { id, name, out },
        } => save_attachments(&cli, id, name.as_deref(), out).await,
        Command::Quarantine {
            action: Some(QuarantineAction::Retry),
            ..
        } => {
            let front = Front::local(&cli).await?;
            let r = front.quarantine_retry().await?;
            println!(
                "{} archived (they verify against the roster in force now), {} still quarantined",
                r.archived, r.left
            );
            Ok(())
        }
        Command::Quarantine {
            action: Some(QuarantineAction::Purge { older_than }),
            ..
        } => {
            let front = Front::local(&cli).await?;
            let r = front
                .quarantine_purge(now_ms().saturating_sub(*older_than))
                .await?;
            println!("{} quarantined deliveries deleted", r.purged);
            Ok(())
        }
        Command::Quarantine { json, action: None } => {
            let front = Front::local(&cli).await?;
            let rows = front.quarantine().await?;
            if *json {
                return print_json(&rows);
            }
            if rows.is_empty() {
                println!("quarantine is empty");
            }
            let width = term_width();
            for q in rows {
                let line = format!(
                    "seq {:<8} {}  from {:<8} in {:<16} {}",
                    q.seq,
                    fmt_time(q.received_at_ms),
                    esc(q.claimed_sender.as_deref().unwrap_or("?")),
                    esc(q.claimed_channel.as_deref().unwrap_or("?")),
                    esc(&q.reason)
                );
                println!("{}", console::truncate_str(&line, width, "…"));
            }
            Ok(())
        }
        Command::Archive { command } => archive_cmd(&cli, command).await,
    }
}

/// `tallinn attachment save`.
async fn save_attachments(cli: &Cli, id: &str, name: Option<&str>, out: &Path) -> Result<()> {
    let front = Front::local(cli).await?;
    let d = front.show(id).await?;
    let all = &d.message.attachments;
    if all.is_empty() {
        bail!("message {} has no attachments", d.message.msg_id);
    }
    let chosen: Vec<usize> = match name {
        None => (1..=all.len()).collect(),
        Some(n) => match n.parse::<usize>() {
            Ok(i) if (1..=all.len()).contains(&i) => vec![i],
            _ => {
                let found: Vec<usize> = all
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.name == n)
                    .map(|(i, _)| i + 1)
                    .collect();
                if found.is_empty() {
                    let names: Vec<String> = all
                        .iter()
                        .enumerate()
                        .map(|(i, a)| format!("{} {}", i + 1, esc(&a.name)))
                        .collect();
                    bail!(
                        "message {} has no attachment {}; it has: {}",
                        d.message.msg_id,
                        esc(n),
                        names.join(", ")
                    );
                }
                found
            }
        },
    };
    for n in chosen {
        let Some(a) = all.get(n - 1) else { continue };
        let data = front.attachment(&d.message.msg_id, n).await?;
        let path = crate::attachment::save(out, &a.name, n, &data, a.size, &a.sha256)?;
        println!("{}", esc(&path.display().to_string()));
        eprintln!(
            "saved attachment {n} ({} bytes, sha256 {} checked){}",
            a.size,
            &a.sha256[..16],
            if crate::attachment::safe_name(&a.name, n) == a.name {
                String::new()
            } else {
                format!("; the sender named it {}", esc(&a.name))
            }
        );
    }
    Ok(())
}

pub(super) fn now_ms() -> u64 {
    tallinn_common::unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}
