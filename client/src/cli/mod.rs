//! The `tallinn` command line: enrolment, sending, syncing, reading,
//! searching, exporting and verifying the archive.
//!
//! Modules: `args` (clap arguments), `identity` (keygen, roster show),
//! `messaging` (send, outbox, sync, listen), `archive` (search, export,
//! verify, stats), `output` (printing); this file dispatches.
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

mod archive;
mod args;
mod governance;
mod identity;
mod messaging;
mod output;
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
        Command::Send(a) => {
            let m = build_message(&cli, Kind::Note, &a.common)?;
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
            let m = build_message(&cli, kind, &a.common)?;
            send(&cli, &a.channel, m).await
        }
        Command::Offer(a) => {
            let (request, channel) = resolve_ref(&cli, &a.request, a.channel.as_deref())?;
            let m = build_message(&cli, Kind::Offer { request }, &a.common)?;
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
            let m = build_message(&cli, Kind::Status { about, state }, &a.common)?;
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
            let r = resolve_archived(&client, id)?;
            show(&ctx, &r, *json)
        }
        Command::Thread { id, json } => {
            let ctx = Ctx::load(&cli)?;
            let client = ctx.open()?;
            let r = resolve_archived(&client, id)?;
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

pub(super) fn now_ms() -> u64 {
    tallinn_common::unix_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}
