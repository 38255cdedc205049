//! Version-2 governance by messages: `tallinn roster propose` sends a
//! `Proposal` (the entry body) and the proposer's `Approval` in a channel;
//! `tallinn roster approve ID` sends an `Approval` (an identity-key
//! signature over the exact body); `tallinn roster submit ID` collects the
//! approvals received, checks each, and submits the entry. The relay
//! appends it only if it is valid, and every client checks it again.

use tallinn_common::identity::ParticipantId;
use tallinn_common::message::{Kind, Message, Tlp};
use tallinn_common::roster::{
    approval_message, entry_hash, Approval, ChannelRecord, DeviceRecord, EntryBody, EntryKind,
    ParticipantEntry, ParticipantRecord, Role, RosterLog, RosterState, SignedEntry, StateRecord,
};

use super::*;
use crate::archive::Filter;

/// One change of the roster state.
pub(super) enum Change {
    Add(ParticipantEntry),
    Remove(String),
    Chair(String),
    Quorum(u32),
    Channel(ChannelRecord),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    participant: Vec<ParticipantEntry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelFile {
    channel: Vec<ChannelToml>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelToml {
    id: String,
    #[serde(default)]
    description: String,
    members: Vec<String>,
    #[serde(default)]
    observers: Vec<String>,
    #[serde(default = "members")]
    post: String,
    #[serde(default = "red")]
    max_tlp: String,
}

fn members() -> String {
    "members".into()
}
fn red() -> String {
    "RED".into()
}

impl Change {
    pub(super) fn from_args(
        add: Option<&Path>,
        remove: Option<&str>,
        chair: Option<&str>,
        quorum: Option<u32>,
        channel: Option<&Path>,
    ) -> Result<Change> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        Ok(match (add, remove, chair, quorum, channel) {
            (Some(p), None, None, None, None) => {
                let f: EntryFile = toml::from_str(&read(p)?)
                    .with_context(|| format!("{}: not a [[participant]] entry", p.display()))?;
                let [entry] = <[ParticipantEntry; 1]>::try_from(f.participant)
                    .map_err(|_| anyhow!("{}: exactly one [[participant]] expected", p.display()))?;
                Change::Add(entry)
            }
            (None, Some(id), None, None, None) => Change::Remove(id.into()),
            (None, None, Some(id), None, None) => Change::Chair(id.into()),
            (None, None, None, Some(q), None) => Change::Quorum(q),
            (None, None, None, None, Some(p)) => {
                let f: ChannelFile = toml::from_str(&read(p)?)
                    .with_context(|| format!("{}: not a [[channel]] table", p.display()))?;
                let [c] = <[ChannelToml; 1]>::try_from(f.channel)
                    .map_err(|_| anyhow!("{}: exactly one [[channel]] expected", p.display()))?;
                let mut members = c.members;
                members.sort();
                let mut observers = c.observers;
                observers.sort();
                Change::Channel(ChannelRecord {
                    id: c.id,
                    description: c.description,
                    members,
                    observers,
                    post: match c.post.as_str() {
                        "members" => 0,
                        "chair" => 1,
                        other => bail!("post = {other:?}: expected \"members\" or \"chair\""),
                    },
                    max_tlp: tallinn_common::roster::state::tlp_code(
                        c.max_tlp.parse::<Tlp>().map_err(|e| anyhow!("max_tlp: {e}"))?,
                    ),
                })
            }
            _ => bail!(
                "give exactly one change: --add-participant, --remove-participant, --chair, --quorum or --channel"
            ),
        })
    }

    /// The state after this change.
    fn apply(self, state: &RosterState) -> Result<StateRecord> {
        let mut r = state.record().clone();
        let all_members: Vec<String> = state
            .participants()
            .filter(|p| p.role == Role::Member)
            .map(|p| p.id.to_string())
            .collect();
        let all_observers: Vec<String> = state
            .participants()
            .filter(|p| p.role == Role::Observer)
            .map(|p| p.id.to_string())
            .collect();
        match self {
            Change::Add(e) => {
                use base64::Engine as _;
                let key = |field: &str, v: &str| -> Result<[u8; 32]> {
                    base64::engine::general_purpose::STANDARD
                        .decode(v)
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                        .ok_or_else(|| anyhow!("{field} of {} is not a base64 32-byte key", e.id))
                };
                ParticipantId::new(e.id.as_str())?;
                if state.participant(&e.id).is_some() {
                    bail!("{} is already in the roster", e.id);
                }
                let sign_key = key("sign_key", &e.sign_key)?;
                r.participants.push(ParticipantRecord {
                    id: e.id.clone(),
                    name: e.name.clone(),
                    role: u8::from(e.role == Role::Observer),
                    identity_key: sign_key,
                    devices: vec![DeviceRecord {
                        device: tallinn_common::defaults::V1_DEVICE.into(),
                        suite: tallinn_common::defaults::SUITE_X25519,
                        sign_key,
                        enc_key: key("enc_key", &e.enc_key)?,
                    }],
                });
                r.participants.sort_by(|a, b| a.id.cmp(&b.id));
                // Channels that hold every member (observer) get the new
                // member (observer): the version-1 "*" of the roster file.
                for c in &mut r.channels {
                    let (list, all) = match e.role {
                        Role::Member => (&mut c.members, &all_members),
                        Role::Observer => (&mut c.observers, &all_observers),
                    };
                    if !all.is_empty() && all.iter().all(|m| list.contains(m)) {
                        list.push(e.id.clone());
                        list.sort();
                    }
                }
            }
            Change::Remove(id) => {
                if state.participant(&id).is_none() {
                    bail!("{id} is not in the roster");
                }
                r.participants.retain(|p| p.id != id);
                for c in &mut r.channels {
                    c.members.retain(|m| *m != id);
                    c.observers.retain(|m| *m != id);
                }
            }
            Change::Chair(id) => r.chair = id,
            Change::Quorum(q) => r.quorum = q,
            Change::Channel(c) => {
                r.channels.retain(|x| x.id != c.id);
                r.channels.push(c);
                r.channels.sort_by(|a, b| a.id.cmp(&b.id));
            }
        }
        Ok(r)
    }
}

/// `tallinn roster propose`.
pub(super) async fn propose(ctx: &Ctx, change: Change, via: &str) -> Result<()> {
    let (client, log) = roster::open_log(ctx)?;
    drop(client);
    let record = change.apply(log.current())?;
    let body = EntryBody {
        index: log.epoch() + 1,
        prev_hash: log.head_hash(),
        kind: EntryKind::Amend(record),
    };
    let entry = SignedEntry::new(&body);
    // Check everything but the approvals now: refuse to propose what can
    // never be valid.
    RosterState::validate(
        match &body.kind {
            EntryKind::Amend(r) => r.clone(),
            _ => unreachable!("built above"),
        },
        body.index,
        entry.hash(),
    )
    .context("the proposed roster would be invalid")?;
    let hash = entry.hash();
    let id = hex::encode(hash);
    let client = Client::connect(ctx.settings()?).await?;
    client.discard_events();
    let proposal = Message {
        kind: Kind::Proposal {
            entry: entry.body.clone(),
        },
        tlp: Tlp::Amber,
        reply_to: None,
        subject: format!("roster proposal {}: epoch {}", &id[..8], body.index),
        body: format!(
            "Approve with `tallinn roster approve {}`; whoever holds the quorum submits it with `tallinn roster submit {}`.",
            &id[..8],
            &id[..8]
        ),
        attachments: Vec::new(),
    };
    client.send(via, &proposal).await?;
    let mine = approval_message_for(ctx, &entry.body, hash, &id);
    client.send(via, &mine).await?;
    client.close().await;
    println!("proposal {id}");
    println!("  (epoch {}; sent in {via} with your approval)", body.index);
    Ok(())
}

fn approval_message_for(ctx: &Ctx, body: &[u8], hash: [u8; 32], id: &str) -> Message {
    Message {
        kind: Kind::Approval {
            entry_hash: hash,
            signature: ctx.identity.sign(&approval_message(body)),
        },
        tlp: Tlp::Amber,
        reply_to: None,
        subject: format!("approval of roster proposal {}", &id[..8]),
        body: String::new(),
        attachments: Vec::new(),
    }
}

/// A proposal found in the archive.
struct Found {
    body: Vec<u8>,
    hash: [u8; 32],
    channel: String,
}

fn find_proposal(client: &Client, id: &str) -> Result<Found> {
    let id = id.trim().to_lowercase();
    if id.len() < 8 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("a proposal id is at least 8 hex digits (or give an entry file that exists)");
    }
    let records = client.archive().search(
        &Filter {
            kind: Some("proposal".into()),
            ..Filter::default()
        },
        usize::MAX,
    )?;
    let mut found: Vec<Found> = Vec::new();
    for r in records {
        if let Kind::Proposal { entry } = &r.message.kind {
            let hash = entry_hash(entry);
            if hex::encode(hash).starts_with(&id) && !found.iter().any(|f| f.hash == hash) {
                found.push(Found {
                    body: entry.clone(),
                    hash,
                    channel: r.channel.clone(),
                });
            }
        }
    }
    match found.len() {
        0 => bail!("no proposal {id} in the archive (run `tallinn sync` first)"),
        1 => Ok(found.remove(0)),
        n => bail!("{n} proposals start with {id}: give more digits"),
    }
}

/// The approvals received for `hash`, each checked against `log`'s
/// current identity keys (invalid ones are left out and reported).
fn collect_approvals(
    client: &Client,
    log: &RosterLog,
    body: &[u8],
    hash: [u8; 32],
) -> Result<Vec<Approval>> {
    let records = client.archive().search(
        &Filter {
            kind: Some("approval".into()),
            ..Filter::default()
        },
        usize::MAX,
    )?;
    let state = log.current();
    let probe = SignedEntry {
        body: body.to_vec(),
        approvals: Vec::new(),
    };
    let devices_of = match probe.decode_body().map(|b| b.kind) {
        Ok(EntryKind::Devices { participant, .. }) => Some(participant),
        _ => None,
    };
    let mut out: Vec<Approval> = Vec::new();
    for r in records {
        let Kind::Approval {
            entry_hash,
            signature,
        } = &r.message.kind
        else {
            continue;
        };
        if *entry_hash != hash || out.iter().any(|a| a.participant == r.sender) {
            continue;
        }
        // A devices entry carries its own participant's approval only.
        if let Some(owner) = &devices_of {
            if *owner != r.sender {
                continue;
            }
        }
        let Some(p) = state.participant(&r.sender) else {
            continue;
        };
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        if p.identity_key
            .verify_strict(&approval_message(body), &sig)
            .is_err()
        {
            eprintln!(
                "warning: the approval from {} does not verify with its identity key; left out",
                esc(&r.sender)
            );
            continue;
        }
        out.push(Approval {
            participant: r.sender.clone(),
            signature: *signature,
        });
    }
    out.sort_by(|a, b| a.participant.cmp(&b.participant));
    Ok(out)
}

/// `tallinn roster approve ID`.
pub(super) async fn approve(ctx: &Ctx, id: &str, dry_run: bool) -> Result<()> {
    let (client, log) = roster::open_log(ctx)?;
    let found = find_proposal(&client, id)?;
    let entry = SignedEntry {
        body: found.body.clone(),
        approvals: collect_approvals(&client, &log, &found.body, found.hash)?,
    };
    drop(client);
    let body = entry.decode_body()?;
    if body.index != log.epoch() + 1 || body.prev_hash != log.head_hash() {
        bail!(
            "proposal {} is for epoch {}, but the roster is at epoch {}: it can no longer be applied",
            &hex::encode(found.hash)[..8],
            body.index,
            log.epoch()
        );
    }
    println!(
        "proposal {} (epoch {})",
        hex::encode(found.hash),
        body.index
    );
    match &body.kind {
        EntryKind::Amend(record) => {
            let state = RosterState::validate(record.clone(), body.index, found.hash)
                .context("the proposed roster is invalid; not approving it")?;
            roster::describe_state(&state);
        }
        EntryKind::Devices {
            participant,
            devices,
        } => {
            if participant != ctx.identity.id().as_str() {
                bail!(
                    "this proposal changes the devices of {}: only {}'s identity key can approve it",
                    esc(participant),
                    esc(participant)
                );
            }
            println!("devices of {} after it:", esc(participant));
            for d in devices {
                println!(
                    "  {:<24} {}",
                    esc(&d.device),
                    tallinn_common::identity::Fingerprint::of(&d.sign_key, &d.enc_key)
                );
            }
        }
        EntryKind::Genesis(_) => bail!("a genesis is approved as a file, not as a proposal"),
    }
    let approvers: Vec<&str> = entry
        .approvals
        .iter()
        .map(|a| a.participant.as_str())
        .collect();
    println!("approved by: [{}]", esc(&approvers.join(", ")));
    if dry_run {
        return Ok(());
    }
    let id_hex = hex::encode(found.hash);
    let m = approval_message_for(ctx, &found.body, found.hash, &id_hex);
    let client = Client::connect(ctx.settings()?).await?;
    client.discard_events();
    client.send(&found.channel, &m).await?;
    client.close().await;
    println!(
        "approved as {} (sent in {})",
        ctx.identity.id(),
        found.channel
    );
    Ok(())
}

/// `tallinn roster submit ID`.
pub(super) async fn submit(ctx: &Ctx, id: &str) -> Result<()> {
    let client = Client::connect(ctx.settings()?).await?;
    client.discard_events();
    client
        .sync(ctx.config.send_timeout, |_| {})
        .await
        .context("syncing before collecting the approvals")?;
    let log = client
        .roster()
        .log()
        .cloned()
        .ok_or_else(|| anyhow!("the roster log has not been fetched"))?;
    let found = find_proposal(&client, id)?;
    let entry = SignedEntry {
        body: found.body.clone(),
        approvals: collect_approvals(&client, &log, &found.body, found.hash)?,
    };
    if let Err(e) = log.check_next(&entry) {
        client.close().await;
        bail!("not submitted: {e}");
    }
    let index = client.submit_roster_entry(&entry).await;
    client.close().await;
    let index = index?;
    let approvers: Vec<&str> = entry
        .approvals
        .iter()
        .map(|a| a.participant.as_str())
        .collect();
    println!(
        "roster entry appended: epoch {index} (approved by {})",
        esc(&approvers.join(", "))
    );
    Ok(())
}
