//! `tallinn roster approve`: reading, checking and approving a roster-log
//! entry file (version 2) with the participant's identity key.

use tallinn_common::roster::{
    approval_message, fingerprint_groups, Approval, DeviceRecord, EntryBody, EntryKind,
    RosterState, SignedEntry,
};
use tallinn_common::text::escape_line as esc;

use super::*;

/// Shows the entry in `file`, checks its state rules, and (unless
/// `dry_run`) adds this participant's approval and rewrites the file.
pub(super) fn approve(ctx: &Ctx, file: &Path, dry_run: bool) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut entry = SignedEntry::from_text(&text)
        .with_context(|| format!("{} is not a roster-log entry", file.display()))?;
    let body = entry.decode_body()?;
    let hash = entry.hash();
    println!("entry {} ({})", body.index, body.kind.name());
    match &body.kind {
        EntryKind::Genesis(record) | EntryKind::Amend(record) => {
            let state = RosterState::validate(record.clone(), body.index, hash)
                .context("the state this entry installs is invalid; not approving it")?;
            describe_state(&state);
        }
        EntryKind::Devices {
            participant,
            devices,
        } => {
            println!("participant: {}", esc(participant));
            for d in devices {
                println!(
                    "  device {}  {}",
                    esc(&d.device),
                    tallinn_common::identity::Fingerprint::of(&d.sign_key, &d.enc_key)
                );
            }
        }
    }
    if matches!(body.kind, EntryKind::Genesis(_)) {
        println!("deployment fingerprint: {}", fingerprint_groups(&hash));
    } else {
        println!("entry hash: {}", fingerprint_groups(&hash));
    }
    let approvers: Vec<String> = entry
        .approvals
        .iter()
        .map(|a| esc(&a.participant).into_owned())
        .collect();
    println!("approved by: [{}]", approvers.join(", "));
    if dry_run {
        return Ok(());
    }
    let me = ctx.identity.id().to_string();
    entry.add_approval(Approval {
        participant: me.clone(),
        signature: ctx.identity.sign(&approval_message(&entry.body)),
    });
    let tmp = file.with_extension("approving");
    std::fs::write(&tmp, entry.to_text()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))?;
    println!(
        "approved as {me}; {} approval(s) now",
        entry.approvals.len()
    );
    Ok(())
}

pub(super) fn describe_state(s: &RosterState) {
    println!(
        "chair: {}, quorum: {}, beneficiary: {}",
        s.chair(),
        s.quorum(),
        s.beneficiary()
            .map_or("none".to_string(), |b| b.to_string())
    );
    for p in s.participants() {
        let devices: Vec<String> = p
            .devices
            .values()
            .map(|d| format!("{} {}", d.device, d.fingerprint()))
            .collect();
        println!(
            "  {:<8} {:<9} {:<24} {}",
            p.id.as_str(),
            p.role.to_string(),
            esc(&p.name),
            devices.join("; ")
        );
    }
    for c in s.channels() {
        let members: Vec<&str> = c.members.iter().map(|m| m.as_str()).collect();
        let observers: Vec<&str> = c.observers.iter().map(|m| m.as_str()).collect();
        let post = match c.post {
            tallinn_common::roster::PostPolicy::Members => String::new(),
            tallinn_common::roster::PostPolicy::Chair => {
                format!(", posts by the chair ({}) only", s.chair())
            }
        };
        let rule = if c.id.as_str() == tallinn_common::roster::DIRECT_RULE {
            " (the rule for direct conversations: who may take part)"
        } else {
            ""
        };
        println!(
            "  channel {:<18} members [{}] observers [{}], up to {}{post}{rule}",
            c.id.as_str(),
            members.join(", "),
            observers.join(", "),
            c.max_tlp
        );
    }
}

/// The client of this config, opened without connecting, and its log.
pub(super) fn open_log(ctx: &Ctx) -> Result<(Client, tallinn_common::roster::RosterLog)> {
    if ctx.config.deployment.is_none() {
        bail!("this client runs a version-1 roster file (no `deployment` in client.toml)");
    }
    let client = ctx.open()?;
    let log =
        client.roster().log().cloned().ok_or_else(|| {
            anyhow!("the roster log has not been fetched yet: run `tallinn sync`")
        })?;
    Ok((client, log))
}

/// `tallinn roster show` for a version-2 client.
pub(super) fn show_log(ctx: &Ctx, json: bool) -> Result<()> {
    let (_client, log) = open_log(ctx)?;
    let s = log.current();
    if json {
        let participants: Vec<serde_json::Value> = s
            .participants()
            .map(|p| {
                json!({
                    "id": p.id.as_str(),
                    "name": p.name,
                    "role": p.role.to_string(),
                    "devices": p.devices.values().map(|d| json!({
                        "device": d.device.as_str(),
                        "fingerprint": d.fingerprint().to_string(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let channels: Vec<serde_json::Value> = s
            .channels()
            .map(|c| {
                json!({
                    "id": c.id.as_str(),
                    "members": c.members.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                    "observers": c.observers.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                    "post": match c.post { tallinn_common::roster::PostPolicy::Members => "members", tallinn_common::roster::PostPolicy::Chair => "chair" },
                    "max_tlp": c.max_tlp.to_string(),
                })
            })
            .collect();
        return print_json(&json!({
            "deployment": hex::encode(log.deployment()),
            "epoch": s.epoch(),
            "chair": s.chair().as_str(),
            "quorum": s.quorum(),
            "beneficiary": s.beneficiary().map(|b| b.as_str()),
            "participants": participants,
            "channels": channels,
        }));
    }
    println!("deployment: {}", fingerprint_groups(&log.deployment()));
    println!("epoch: {}", s.epoch());
    describe_state(s);
    Ok(())
}

/// `tallinn roster log [--export FILE]`.
pub(super) fn log(ctx: &Ctx, export: Option<&Path>, json: bool) -> Result<()> {
    let (_client, log) = open_log(ctx)?;
    if let Some(path) = export {
        use base64::Engine as _;
        let entries: Vec<String> = log
            .entries()
            .iter()
            .map(|e| base64::engine::general_purpose::STANDARD.encode(e.encode()))
            .collect();
        let text = serde_json::to_string_pretty(&entries)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "exported {} roster-log entries to {} (deployment {})",
            entries.len(),
            path.display(),
            hex::encode(log.deployment())
        );
        return Ok(());
    }
    let mut rows = Vec::new();
    for e in log.entries() {
        let body = e.decode_body()?;
        let approvers: Vec<&str> = e.approvals.iter().map(|a| a.participant.as_str()).collect();
        let what = match &body.kind {
            EntryKind::Devices {
                participant,
                devices,
            } => format!(
                "devices of {}: [{}]",
                participant,
                devices
                    .iter()
                    .map(|d| d.device.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.name().to_string(),
        };
        if json {
            rows.push(json!({"index": body.index, "kind": body.kind.name(), "summary": what, "approved_by": approvers, "hash": hex::encode(e.hash())}));
        } else {
            println!(
                "{:>4}  {:<40}  approved by [{}]  {}",
                body.index,
                esc(&what),
                esc(&approvers.join(", ")),
                &hex::encode(e.hash())[..16]
            );
        }
    }
    if json {
        print_json(&json!(rows))?;
    }
    Ok(())
}

/// `tallinn roster submit FILE`.
pub(super) async fn submit(ctx: &Ctx, file: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let entry = SignedEntry::from_text(&text)?;
    let client = Client::connect(ctx.settings()?).await?;
    client.discard_events();
    let index = client.submit_roster_entry(&entry).await;
    client.close().await;
    let index = index?;
    println!("roster entry appended: epoch {index}");
    Ok(())
}

/// `tallinn device ...`.
pub(super) async fn device(ctx: &Ctx, command: &DeviceCommand) -> Result<()> {
    let me = ctx.identity.id().to_string();
    match command {
        DeviceCommand::List { json } => {
            let (_client, log) = open_log(ctx)?;
            let s = log.current();
            let p = s
                .participant(&me)
                .ok_or_else(|| anyhow!("{me} is not in the roster at epoch {}", s.epoch()))?;
            if *json {
                let devices: Vec<serde_json::Value> = p
                    .devices
                    .values()
                    .map(|d| json!({"device": d.device.as_str(), "fingerprint": d.fingerprint().to_string(), "this": d.device == ctx.config.device}))
                    .collect();
                return print_json(
                    &json!({"participant": me, "epoch": s.epoch(), "devices": devices}),
                );
            }
            for d in p.devices.values() {
                let this = if d.device == ctx.config.device {
                    "  (this device)"
                } else {
                    ""
                };
                println!("{:<24} {}{this}", d.device.as_str(), d.fingerprint());
            }
            Ok(())
        }
        DeviceCommand::Add { label, out } => {
            let label = tallinn_common::identity::DeviceId::new(label.as_str())?;
            let (client, log) = open_log(ctx)?;
            drop(client);
            let mut devices = own_devices(&log, &me)?;
            if devices.iter().any(|d| d.device == label.as_str()) {
                bail!("{me} already has a device {label}");
            }
            let out = out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{label}.key")));
            let keys = Identity::generate(ctx.identity.id().clone());
            keys.write_secret_file(&out, None, KdfParams::default())?;
            let public = keys.public();
            devices.push(DeviceRecord {
                device: label.to_string(),
                suite: tallinn_common::defaults::SUITE_X25519,
                sign_key: public.sign_key.to_bytes(),
                enc_key: public.enc_key,
            });
            devices.sort_by(|a, b| a.device.cmp(&b.device));
            let index = submit_devices(ctx, &log, &me, devices).await?;
            println!(
                "device {label} added at epoch {index}; its secret key is in {} (mode 0600)",
                out.display()
            );
            println!("fingerprint: {}", keys.public().fingerprint());
            println!(
                "On that device, use a client.toml with identity = \"{}\", device = \"{label}\" and the same deployment.",
                out.display()
            );
            Ok(())
        }
        DeviceCommand::Rotate {
            label: Some(label), ..
        } if *label != ctx.config.device.as_str() => bail!(
            "a device rotates its own key: run `tallinn device rotate` with {label}'s client.toml \
             (its new secret never leaves it; the identity device only approves)"
        ),
        DeviceCommand::Rotate { via, .. } if !holds_identity_key(ctx)? => {
            request_rotation(ctx, via).await
        }
        DeviceCommand::Rotate { .. } => {
            let index = rotate(ctx).await?;
            println!(
                "encryption key of {}/{} rotated at epoch {index}; the old secret is kept until nothing sealed to it can still arrive (at most {} days), then erased",
                me,
                ctx.config.device,
                ctx.config.enc_key_grace.as_secs() / 86_400
            );
            Ok(())
        }
        DeviceCommand::Revoke { label } => {
            let (client, log) = open_log(ctx)?;
            drop(client);
            let mut devices = own_devices(&log, &me)?;
            let before = devices.len();
            devices.retain(|d| d.device != *label);
            if devices.len() == before {
                bail!("{me} has no device {label:?}");
            }
            let index = submit_devices(ctx, &log, &me, devices).await?;
            println!("device {label} revoked at epoch {index}: the relay closed its sessions and refuses it");
            Ok(())
        }
    }
}

fn own_devices(log: &tallinn_common::roster::RosterLog, me: &str) -> Result<Vec<DeviceRecord>> {
    Ok(log
        .current()
        .record()
        .participants
        .iter()
        .find(|p| p.id == me)
        .ok_or_else(|| anyhow!("{me} is not in the roster"))?
        .devices
        .clone())
}

/// Signs a `Devices` entry for `me` with this config's key (the identity
/// key) and submits it.
async fn submit_devices(
    ctx: &Ctx,
    log: &tallinn_common::roster::RosterLog,
    me: &str,
    devices: Vec<DeviceRecord>,
) -> Result<u64> {
    let mut entry = SignedEntry::new(&EntryBody {
        index: log.epoch() + 1,
        prev_hash: log.head_hash(),
        kind: EntryKind::Devices {
            participant: me.into(),
            devices,
        },
    });
    entry.add_approval(Approval {
        participant: me.into(),
        signature: ctx.identity.sign(&approval_message(&entry.body)),
    });
    log.check_next(&entry).context(
        "the devices entry would be refused (is this config's key file your identity key?)",
    )?;
    let client = Client::connect(ctx.settings()?).await?;
    client.discard_events();
    let r = client.submit_roster_entry(&entry).await;
    client.close().await;
    Ok(r?)
}

/// Rotates this device's encryption key: new key file (the archive secret
/// re-wrapped under it), the old one retired, then the `Devices` entry
/// submitted. A pending rotation (the key file no longer matches the
/// roster) is completed instead of starting another.
pub(super) async fn rotate(ctx: &Ctx) -> Result<u64> {
    let me = ctx.identity.id().to_string();
    let device = ctx.config.device.to_string();
    let (client, log) = open_log(ctx)?;
    let state = log.current();
    let p = state
        .participant(&me)
        .ok_or_else(|| anyhow!("{me} is not in the roster"))?;
    if p.identity_key != ctx.identity.public().sign_key {
        bail!(
            "this key file is not {me}'s identity key: rotate from the device that holds it, or rotate this device by adding it again under a new label"
        );
    }
    let listed = p
        .device(&device)
        .ok_or_else(|| anyhow!("{me} has no device {device:?} in the roster"))?;
    let key_path = ctx.config.identity.clone();
    let current = if listed.enc_key == ctx.identity.public().enc_key {
        // Start a rotation: the next key file first, the archive secret
        // wrapped under it, then the switch.
        let pass = passphrase_for(&key_path)?;
        let next = ctx.identity.with_new_enc_secret();
        let next_path = crate::rotation::next_path(&key_path);
        if next_path.exists() {
            std::fs::remove_file(&next_path)
                .with_context(|| format!("removing the stale {}", next_path.display()))?;
        }
        next.write_secret_file(
            &next_path,
            pass.as_ref().map(|p| p.as_bytes()),
            KdfParams::default(),
        )?;
        client.archive().prepare_rewrap(&next)?;
        let retired = crate::rotation::switch(&key_path, now_ms())
            .with_context(|| format!("switching {} to the new key", key_path.display()))?;
        client.archive().commit_rewrap()?;
        eprintln!("old key kept as {} until it is erased", retired.display());
        next
    } else {
        // A rotation whose entry was never appended: submit it now.
        eprintln!("completing an interrupted rotation");
        Identity::read_secret_file(
            &key_path,
            passphrase_for(&key_path)?.as_ref().map(|p| p.as_bytes()),
        )?
    };
    drop(client);
    let mut devices = own_devices(&log, &me)?;
    for d in &mut devices {
        if d.device == device {
            d.enc_key = current.public().enc_key;
        }
    }
    let mut fresh = Ctx {
        config: ctx.config.clone(),
        identity: Arc::new(current),
        retired: ctx.retired.clone(),
        roster: ctx.roster.clone(),
        roster_text: ctx.roster_text.clone(),
    };
    fresh.retired.push(ctx.identity.clone());
    submit_devices(&fresh, &log, &me, devices).await
}

/// After a sync that drained the relay's backlog: erases every retired key
/// of this device that may go ([`crate::rotation::erasable`]).
pub(super) fn erase_retired(ctx: &Ctx, client: &Client, drained: bool) -> Result<usize> {
    let pass = passphrase_for(&ctx.config.identity)?;
    let retired =
        crate::rotation::load_retired(&ctx.config.identity, pass.as_ref().map(|p| p.as_bytes()))?;
    if retired.is_empty() {
        return Ok(0);
    }
    let roster = client.roster();
    let listed = roster
        .log()
        .and_then(|l| {
            l.current()
                .device(ctx.identity.id().as_str(), ctx.config.device.as_str())
        })
        .map(|d| d.enc_key);
    let now = now_ms();
    let mut n = 0;
    for r in retired {
        let in_roster = listed == Some(r.identity.public().enc_key);
        if crate::rotation::erasable(
            &r,
            in_roster,
            now,
            ctx.config.enc_key_grace,
            drained.then_some(now),
        ) {
            crate::rotation::erase(&r.path)
                .with_context(|| format!("erasing {}", r.path.display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Whether this device's key is due for automatic rotation but cannot sign
/// its own `Devices` entry: its key file is older than the period, it is
/// not the identity key, and no request is pending. `sync` then requests the
/// rotation (a proposal for the identity device).
pub(super) fn rotation_request_due(ctx: &Ctx, client: &Client) -> bool {
    let Some(period) = ctx.config.rotate_enc_key else {
        return false;
    };
    let Some(log) = client.roster().log().cloned() else {
        return false;
    };
    let can_sign = log
        .current()
        .participant(ctx.identity.id().as_str())
        .is_some_and(|p| p.identity_key == ctx.identity.public().sign_key);
    let age = std::fs::metadata(&ctx.config.identity)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    !can_sign
        && !crate::rotation::next_path(&ctx.config.identity).exists()
        && age.is_some_and(|a| a >= period)
}

/// `sync`'s automatic request of a rotation (see [`rotation_request_due`]).
pub(super) async fn request_rotation_now(ctx: &Ctx) -> Result<()> {
    request_rotation(ctx, "plenary").await
}

/// Whether this device's key is due for automatic rotation: it can sign
/// its own `Devices` entries, and its key file is older than the period.
pub(super) fn rotation_due(ctx: &Ctx, client: &Client) -> bool {
    let Some(period) = ctx.config.rotate_enc_key else {
        return false;
    };
    let Some(log) = client.roster().log().cloned() else {
        return false;
    };
    let me = ctx.identity.id().as_str();
    let can_sign = log
        .current()
        .participant(me)
        .is_some_and(|p| p.identity_key == ctx.identity.public().sign_key);
    let age = std::fs::metadata(&ctx.config.identity)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    can_sign && age.is_some_and(|a| a >= period)
}

/// Whether this config's key file is its participant's identity key in the
/// roster in force (it can sign its own `Devices` entries).
fn holds_identity_key(ctx: &Ctx) -> Result<bool> {
    let (_client, log) = open_log(ctx)?;
    Ok(log
        .current()
        .participant(ctx.identity.id().as_str())
        .is_some_and(|p| p.identity_key == ctx.identity.public().sign_key))
}

/// A device without the identity key: writes the next key file, then sends
/// the `Devices` entry naming its public key as a proposal, for the
/// identity device to approve and submit. Until the entry is in force the
/// device keeps its key (and opens with both); `sync` completes the switch
/// ([`complete_pending_rotation`]).
async fn request_rotation(ctx: &Ctx, via: &str) -> Result<()> {
    let me = ctx.identity.id().to_string();
    let device = ctx.config.device.to_string();
    let key_path = ctx.config.identity.clone();
    let next_path = crate::rotation::next_path(&key_path);
    let pass = passphrase_for(&key_path)?;
    let next = if next_path.exists() {
        Identity::read_secret_file(&next_path, pass.as_ref().map(|p| p.as_bytes()))?
    } else {
        let next = ctx.identity.with_new_enc_secret();
        next.write_secret_file(
            &next_path,
            pass.as_ref().map(|p| p.as_bytes()),
            KdfParams::default(),
        )?;
        next
    };
    let (client, log) = open_log(ctx)?;
    drop(client);
    let mut devices = own_devices(&log, &me)?;
    let mut found = false;
    for d in &mut devices {
        if d.device == device {
            d.enc_key = next.public().enc_key;
            found = true;
        }
    }
    if !found {
        bail!("{me} has no device {device:?} in the roster");
    }
    let entry = SignedEntry::new(&EntryBody {
        index: log.epoch() + 1,
        prev_hash: log.head_hash(),
        kind: EntryKind::Devices {
            participant: me.clone(),
            devices,
        },
    });
    let id = hex::encode(entry.hash());
    let m = tallinn_common::message::Message {
        kind: tallinn_common::message::Kind::Proposal {
            entry: entry.body.clone(),
        },
        tlp: tallinn_common::message::Tlp::Amber,
        reply_to: None,
        subject: format!("key rotation of {me}/{device}: proposal {}", &id[..8]),
        body: format!(
            "On the device holding {me}'s identity key: `tallinn roster approve {}` then `tallinn roster submit {}`.",
            &id[..8],
            &id[..8]
        ),
        attachments: Vec::new(),
    };
    let client = Client::connect(ctx.settings()?).await?;
    client.discard_events();
    client.send(via, &m).await?;
    client.close().await;
    println!("rotation of {me}/{device} requested: proposal {id}");
    println!(
        "on the device holding {me}'s identity key run `tallinn sync`, `tallinn roster approve {}` and `tallinn roster submit {}`; the next `tallinn sync` here completes it",
        &id[..8],
        &id[..8]
    );
    Ok(())
}

/// A requested rotation whose `Devices` entry is now in force: the next key
/// file becomes the key file (the archive secret re-wrapped first), the old
/// one is retired. Returns whether it switched.
pub(super) fn complete_pending_rotation(ctx: &Ctx, client: &Client) -> Result<bool> {
    let key_path = &ctx.config.identity;
    let next_path = crate::rotation::next_path(key_path);
    if !next_path.exists() {
        return Ok(false);
    }
    let pass = passphrase_for(key_path)?;
    let next = Identity::read_secret_file(&next_path, pass.as_ref().map(|p| p.as_bytes()))?;
    let listed = client.roster().log().and_then(|l| {
        l.current()
            .device(ctx.identity.id().as_str(), ctx.config.device.as_str())
            .map(|d| d.enc_key)
    });
    if listed != Some(next.public().enc_key) {
        return Ok(false);
    }
    client.archive().prepare_rewrap(&next)?;
    crate::rotation::switch(key_path, now_ms())
        .with_context(|| format!("switching {} to the new key", key_path.display()))?;
    client.archive().commit_rewrap()?;
    Ok(true)
}
