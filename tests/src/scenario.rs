//! The demo coordination round, shared by `tallinn-demo` and the e2e suite.
//!
//! UA files an immediate-support request (TLP:AMBER) in `loe-immediate`; EE,
//! the chair, acknowledges; PL and DE offer; UA takes PL's offer; PL reports
//! fulfilment; NATO tries to post and is refused (by its own client, and by
//! the relay when a doctored client forces it); SE is offline throughout and
//! catches up afterwards; GB's front and back office both receive. Then every
//! archive is verified and compared.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tallinn_client::{Client, ClientError, Event};
use tallinn_common::message::{Kind, Loe, Message, MsgId, Priority, State, Tlp};
use tallinn_common::roster::Roster;
use tallinn_common::wire::ErrorCode;

use crate::deployment::{Deployment, MEMBERS, OBSERVERS};

/// The channel of the round.
pub const CHANNEL: &str = "loe-immediate";

/// One archive's result.
#[derive(Debug, Clone)]
pub struct ArchiveResult {
    /// Participant id.
    pub participant: String,
    /// Device label.
    pub device: String,
    /// Records in the archive.
    pub records: u64,
    /// Whether `verify --deep` passed.
    pub verified: bool,
    /// Problem, if any.
    pub problem: Option<String>,
    /// Head hash (hex).
    pub head: String,
    /// The msg_ids archived.
    pub msg_ids: BTreeSet<MsgId>,
}

/// What the round produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// The six messages of the round, in order.
    pub round: Vec<MsgId>,
    /// Per archive.
    pub archives: Vec<ArchiveResult>,
    /// NATO's local refusal message.
    pub observer_local_refusal: String,
    /// The relay's refusal code for the forced observer post.
    pub observer_relay_code: Option<ErrorCode>,
    /// Failed checks (empty when everything passed).
    pub failures: Vec<String>,
}

impl Report {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(30);

fn request() -> Message {
    Message {
        kind: Kind::Request {
            loe: Loe::Immediate,
            category: "incident-response".into(),
            priority: Priority::High,
        },
        tlp: Tlp::Amber,
        reply_to: None,
        subject: "Ransomware at a regional power distributor: DFIR support needed".into(),
        body: "Encryption of SCADA historian and billing systems since 04:10 Kyiv time. \
               Requesting two incident responders with ICS experience for 14 days."
            .into(),
        attachments: Vec::new(),
    }
}

fn reply(kind: Kind, to: MsgId, subject: &str, body: &str) -> Message {
    Message {
        kind,
        tlp: Tlp::Amber,
        reply_to: Some(to),
        subject: subject.into(),
        body: body.into(),
        attachments: Vec::new(),
    }
}

async fn send(out: &mut dyn Write, client: &Client, who: &str, message: &Message) -> Result<MsgId> {
    let (id, seq) = client
        .send(CHANNEL, message)
        .await
        .with_context(|| format!("{who} sending {:?}", message.subject))?;
    writeln!(
        out,
        "  {who:<4} → {CHANNEL}  [{}] {:<9} {}  (msg {}, relay seq {seq})",
        message.tlp,
        message.kind.name(),
        message.subject,
        &id.to_hex()[..8]
    )?;
    Ok(id)
}

/// Waits until `client` has archived every id in `want`.
async fn wait_for(
    client: &Client,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    want: &[MsgId],
) -> Result<()> {
    tokio::time::timeout(STEP, async {
        loop {
            if want
                .iter()
                .all(|id| client.archive().lookup(id).ok().flatten().is_some())
            {
                return Ok(());
            }
            match events.recv().await {
                Some(_) => {}
                None => return Err(anyhow!("event stream ended")),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("messages did not arrive in time"))?
}

/// Plays the round against a relay at `relay` with pin `pin`, writing the
/// transcript to `out`.
///
/// # Errors
/// Setup failures; check failures are collected in the [`Report`].
pub async fn run(
    dep: &Deployment,
    relay: SocketAddr,
    pin: [u8; 32],
    out: &mut dyn Write,
) -> Result<Report> {
    let mut failures = Vec::new();
    // Everyone but SE comes online; GB with two devices.
    let mut online: BTreeMap<(String, String), Client> = BTreeMap::new();
    let mut streams = BTreeMap::new();
    let participants: Vec<&str> = MEMBERS
        .iter()
        .chain(OBSERVERS.iter())
        .map(|(id, _)| *id)
        .collect();
    writeln!(
        out,
        "\n== Connecting (SE stays offline; GB uses two devices)"
    )?;
    for id in &participants {
        if *id == "SE" {
            continue;
        }
        let devices: &[&str] = if *id == "GB" {
            &["front-office", "back-office"]
        } else {
            &["default"]
        };
        for d in devices {
            let c = Client::connect(dep.settings(id, d, relay, pin)?)
                .await
                .with_context(|| format!("{id}/{d} connecting"))?;
            streams.insert(
                (id.to_string(), d.to_string()),
                c.events().context("events")?,
            );
            online.insert((id.to_string(), d.to_string()), c);
        }
    }
    writeln!(out, "  {} clients connected to {relay}", online.len())?;
    let c = |id: &str| -> Result<&Client> {
        let dev = if id == "GB" {
            "front-office"
        } else {
            "default"
        };
        online
            .get(&(id.to_string(), dev.to_string()))
            .ok_or_else(|| anyhow!("{id} not connected"))
    };

    writeln!(out, "\n== The round in {CHANNEL}")?;
    let req = send(out, c("UA")?, "UA", &request()).await?;
    let ack = send(
        out,
        c("EE")?,
        "EE",
        &reply(
            Kind::Status {
                about: req,
                state: State::Acknowledged,
            },
            req,
            "Chair acknowledges; circulating to Line of Effort 1",
            "Offers by 18:00 CET please.",
        ),
    )
    .await?;
    let pl_offer = send(
        out,
        c("PL")?,
        "PL",
        &reply(
            Kind::Offer { request: req },
            req,
            "Offer: two ICS incident responders, on site within 48 h",
            "Team from the national CSIRT, 14 days, own equipment.",
        ),
    )
    .await?;
    let de_offer = send(
        out,
        c("DE")?,
        "DE",
        &reply(
            Kind::Offer { request: req },
            req,
            "Offer: remote malware analysis",
            "Reverse engineering of the encryptor, 24/7 for one week.",
        ),
    )
    .await?;
    let take = send(
        out,
        c("UA")?,
        "UA",
        &reply(
            Kind::Status {
                about: pl_offer,
                state: State::InProgress,
            },
            pl_offer,
            "Accepting Poland's offer; thanks to Germany, remote analysis welcome later",
            "Point of contact at the distributor will meet the team at the border.",
        ),
    )
    .await?;
    let done = send(
        out,
        c("PL")?,
        "PL",
        &reply(
            Kind::Status {
                about: req,
                state: State::Fulfilled,
            },
            req,
            "Team deployed; incident contained, systems restored from clean backups",
            "Final report to follow under TLP:AMBER+STRICT.",
        ),
    )
    .await?;
    let round = vec![req, ack, pl_offer, de_offer, take, done];

    writeln!(out, "\n== NATO (observer) tries to post")?;
    let nato_local = match c("NATO")?
        .send(CHANNEL, &Message::note(Tlp::Green, "Observer comment", "…"))
        .await
    {
        Err(e @ ClientError::NotAllowed(_)) => e.to_string(),
        other => {
            failures.push(format!("NATO's own client did not refuse: {other:?}"));
            String::new()
        }
    };
    writeln!(out, "  NATO's client refuses locally: {nato_local}")?;
    // A doctored client that believes NATO is a member: the relay refuses.
    let roster_text = std::fs::read_to_string(dep.dir.join("roster.toml"))?
        .replace("role = \"observer\"", "role = \"member\"")
        .replace("observers = [\"NATO\", \"EU\"]", "observers = []");
    let mut forced_settings = dep.settings("NATO", "doctored", relay, pin)?;
    forced_settings.roster = Arc::new(Roster::parse(&roster_text)?);
    let forced = Client::connect(forced_settings).await?;
    let relay_code = match forced
        .send(
            CHANNEL,
            &Message::note(Tlp::Green, "Forced observer post", "…"),
        )
        .await
    {
        Err(ClientError::Rejected { code, reason, .. }) => {
            writeln!(
                out,
                "  a doctored NATO client forces it through: relay answers {code} ({reason})"
            )?;
            Some(code)
        }
        other => {
            failures.push(format!(
                "relay did not refuse the forced observer post: {other:?}"
            ));
            None
        }
    };
    forced.close().await;
    if relay_code != Some(ErrorCode::ReadOnly) {
        failures.push(format!(
            "expected read_only from the relay, got {relay_code:?}"
        ));
    }

    writeln!(out, "\n== Delivery")?;
    for ((id, d), client) in &online {
        let stream = streams
            .get_mut(&(id.clone(), d.clone()))
            .context("stream")?;
        if let Err(e) = wait_for(client, stream, &round).await {
            failures.push(format!("{id}/{d}: {e}"));
        }
    }
    writeln!(
        out,
        "  all {} online clients have the 6 messages",
        online.len()
    )?;
    for client in online.values() {
        client.close().await;
    }
    drop(online);

    writeln!(out, "\n== SE was offline; it connects now and catches up")?;
    let se = Client::connect(dep.settings("SE", "default", relay, pin)?).await?;
    let st = se.sync(STEP, |_| {}).await?;
    writeln!(out, "  SE received {} pending messages", st.delivered)?;
    se.close().await;
    drop(se);

    writeln!(
        out,
        "\n== Verifying every archive (signatures, hash chain, decryption)"
    )?;
    let mut archives = Vec::new();
    let mut all: Vec<(String, String)> = participants
        .iter()
        .map(|id| {
            (
                id.to_string(),
                if *id == "GB" {
                    "front-office".to_string()
                } else {
                    "default".to_string()
                },
            )
        })
        .collect();
    all.push(("GB".into(), "back-office".into()));
    all.sort();
    let expected: BTreeSet<MsgId> = round.iter().copied().collect();
    for (id, d) in all {
        let client = Client::open(dep.settings(&id, &d, relay, pin)?)?;
        let a = client.archive();
        let report = a.verify(&dep.roster, &dep.id(&id), true, |_| {})?;
        let mut ids = BTreeSet::new();
        a.for_each(|r| {
            ids.insert(r.msg_id);
            Ok(())
        })?;
        let mut problem = report
            .first_error
            .as_ref()
            .map(|(i, w)| format!("record {i}: {w}"));
        if ids != expected || a.len() != 6 {
            problem.get_or_insert_with(|| {
                format!("has {} records, expected the 6 of the round", a.len())
            });
        }
        if let Some(p) = &problem {
            failures.push(format!("{id}/{d}: {p}"));
        }
        archives.push(ArchiveResult {
            participant: id,
            device: d,
            records: a.len(),
            verified: report.first_error.is_none(),
            problem,
            head: hex::encode(report.head_hash),
            msg_ids: ids,
        });
    }
    Ok(Report {
        round,
        archives,
        observer_local_refusal: nato_local,
        observer_relay_code: relay_code,
        failures,
    })
}

/// Prints the per-participant summary table.
///
/// # Errors
/// I/O errors of `out`.
pub fn print_summary(report: &Report, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "\n{:<6} {:<13} {:>8}  {:<8}  head",
        "who", "device", "archived", "verify"
    )?;
    for a in &report.archives {
        writeln!(
            out,
            "{:<6} {:<13} {:>8}  {:<8}  {}",
            a.participant,
            a.device,
            a.records,
            if a.verified && a.problem.is_none() {
                "OK"
            } else {
                "FAILED"
            },
            &a.head[..16]
        )?;
    }
    if report.ok() {
        writeln!(
            out,
            "\nAll {} archives hold the same 6 messages and verify.",
            report.archives.len()
        )?;
    } else {
        for f in &report.failures {
            writeln!(out, "FAILED: {f}")?;
        }
    }
    Ok(())
}

/// Fails unless the report is clean.
///
/// # Errors
/// The list of failures.
pub fn ensure_ok(report: &Report) -> Result<()> {
    if report.ok() {
        Ok(())
    } else {
        bail!(
            "{} check(s) failed: {}",
            report.failures.len(),
            report.failures.join("; ")
        )
    }
}
