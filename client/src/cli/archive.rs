//! `tallinn archive`: search, export, verify, stats.

use super::*;

pub(super) async fn archive_cmd(cli: &Cli, command: &ArchiveCommand) -> Result<()> {
    if let ArchiveCommand::Search {
        channel,
        from,
        kind,
        tlp,
        since,
        until,
        text,
        limit,
        json,
    } = command
    {
        let front = Front::local(cli).await?;
        let q = SearchRequest {
            channel: channel.clone(),
            from: from.clone(),
            kind: kind.map(|k| format!("{k:?}").to_lowercase()),
            tlp: tlp.map(|t| t.label().to_string()),
            since_ms: *since,
            until_ms: *until,
            text: text.clone(),
            limit: Some(*limit),
            ..Default::default()
        };
        let page = front.search(&q).await?;
        return print_messages(&page.messages, page.more, *json);
    }
    if let ArchiveCommand::Recover { timeout } = command {
        return recover(cli, Duration::from_secs(*timeout)).await;
    }
    if let ArchiveCommand::Checkpoint { out } = command {
        return checkpoint(cli, out.as_deref()).await;
    }
    if let ArchiveCommand::Hold(h) = command {
        return hold(cli, h).await;
    }
    if let ArchiveCommand::Retention { json } = command {
        let _hold = front::hold_agent(cli).await?;
        let ctx = Ctx::load(cli)?;
        let client = ctx.open()?;
        let r = apply_retention(&ctx, &client)?;
        if *json {
            return print_json(&json!({"redacted": r.redacted, "held": r.held}));
        }
        if ctx.config.retention.is_forever() {
            println!(
                "no retention configured (retention_days in client.toml): every record is kept"
            );
        } else {
            println!(
                "retention applied: {} records redacted, {} expired records kept under a legal hold",
                r.redacted, r.held
            );
        }
        return Ok(());
    }
    let front = Front::local(cli).await?;
    match command {
        ArchiveCommand::Search { .. }
        | ArchiveCommand::Recover { .. }
        | ArchiveCommand::Hold(_)
        | ArchiveCommand::Retention { .. }
        | ArchiveCommand::Checkpoint { .. } => Ok(()),
        ArchiveCommand::Export {
            out,
            force,
            channel,
            from,
            thread,
            since,
            until,
            include_tlp_red,
        } => {
            let selection = crate::export::Selection {
                channel: channel.clone(),
                from: from.clone(),
                thread: thread.clone(),
                since_ms: *since,
                until_ms: *until,
                include_tlp_red: *include_tlp_red,
            };
            let mut file = crate::private_file::PrivateFile::create(out, *force)
                .with_context(|| format!("creating {}", out.display()))?;
            let bar = if std::io::stderr().is_terminal() {
                indicatif::ProgressBar::new_spinner()
            } else {
                indicatif::ProgressBar::hidden()
            };
            let (n, head) = front
                .archive_export(&selection, &mut file, |i| bar.set_position(i))
                .await?;
            file.commit()
                .with_context(|| format!("writing {}", out.display()))?;
            bar.finish_and_clear();
            println!("exported {n} records to {} (head {head})", out.display());
            Ok(())
        }
        ArchiveCommand::Verify { deep, json } => {
            let report = front.archive_verify(*deep).await?;
            if *json {
                print_json(&report)?;
            } else if report.ok {
                println!(
                    "archive OK: {} records, signatures valid, hash chain intact, head {}",
                    report.records, report.head_hash
                );
            }
            if let Some(p) = report.first_error {
                return Err(VerificationFailed(format!(
                    "archive verification FAILED at record {}: {}",
                    p.index, p.reason
                ))
                .into());
            }
            Ok(())
        }
        ArchiveCommand::Stats { json } => {
            let s = front.archive_stats().await?;
            if *json {
                return print_json(&s);
            }
            println!(
                "records {} ({} received, {} sent, {} shared with you), quarantined {} ({} evicted, oldest first)",
                s.records, s.received, s.sent, s.shared, s.quarantined, s.quarantine_evicted
            );
            println!(
                "TLP violations {} (received above their channel's ceiling; `show` names each)",
                s.tlp_violations
            );
            println!("head {}", s.head_hash);
            println!("on disk {} bytes", s.disk_bytes);
            for (c, n) in &s.by_channel {
                println!("  channel {:<20} {n}", esc(c));
            }
            for (k, n) in &s.by_kind {
                println!("  kind    {:<20} {n}", esc(k));
            }
            Ok(())
        }
    }
}

/// `tallinn archive recover`: a session that accepts this archive although
/// it does not match the device's last checkpoint, records that, and syncs.
async fn recover(cli: &Cli, timeout: Duration) -> Result<()> {
    let _hold = front::hold_agent(cli).await?;
    let ctx = Ctx::load(cli)?;
    ctx.config.check_relay()?;
    let client = crate::Client::start_recovering(ctx.settings()?)?;
    client.discard_events();
    let before = client.archive().recoveries()?.len();
    let synced = client.sync(timeout, |_| {}).await;
    client.close().await;
    synced.map_err(|e| anyhow!("syncing with {}: {e}", ctx.config.relay))?;
    let recoveries = client.archive().recoveries()?;
    match recoveries.get(before..).and_then(<[_]>::last) {
        Some(r) => {
            let covered = tallinn_common::evidence::SignedCheckpoint::from_bytes(&r.refused)
                .ok()
                .and_then(|c| c.decode().ok())
                .map_or(0, |b| b.index);
            println!(
                "recovered: this archive ({} records, head {}) did not match the checkpoint this \
                 device signed of {covered} records; it is accepted as it is, the recovery is \
                 recorded in the archive and in every export, and a new checkpoint was signed",
                r.records,
                hex::encode(r.head_hash)
            );
            if covered > r.records {
                println!(
                    "{} records the checkpoint covered are not in this archive and are not restored",
                    covered - r.records
                );
            }
        }
        None => println!(
            "this archive matches its last checkpoint: nothing to recover ({} records, synced)",
            client.archive().len()
        ),
    }
    Ok(())
}

/// `tallinn archive checkpoint`: the latest confirmed checkpoint as JSON.
async fn checkpoint(cli: &Cli, out: Option<&std::path::Path>) -> Result<()> {
    let _hold = front::hold_agent(cli).await?;
    let ctx = Ctx::load(cli)?;
    let client = ctx.open()?;
    let Some(c) = client.archive().checkpoint()? else {
        bail!("no checkpoint yet: run `tallinn sync` first (a version-2 deployment)");
    };
    let body = c.decode()?;
    let value = json!({
        "type": "tallinn-checkpoint",
        "participant": body.participant,
        "device": body.device,
        "roster_epoch": body.roster_epoch,
        "index": body.index,
        "head_hash": hex::encode(body.head_hash),
        "time_ms": body.time_ms,
        "checkpoint_b64": tallinn_common::evidence::export::checkpoint_b64(&c),
    });
    match out {
        Some(path) => {
            let mut f = crate::private_file::PrivateFile::create(path, false)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(f, "{value}")?;
            f.commit()
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "checkpoint of {} records (head {}) written to {}",
                body.index,
                hex::encode(body.head_hash),
                path.display()
            );
            Ok(())
        }
        None => print_json(&value),
    }
}

/// Applies the configured retention to the archive (also run by `sync`).
pub(super) fn apply_retention(
    ctx: &Ctx,
    client: &crate::Client,
) -> Result<crate::archive::RetentionReport> {
    Ok(client
        .archive()
        .apply_retention(&ctx.config.retention, now_ms())?)
}

/// `tallinn archive hold add|list|release`.
async fn hold(cli: &Cli, command: &HoldCommand) -> Result<()> {
    use crate::archive::HoldScope;
    let _hold = front::hold_agent(cli).await?;
    let ctx = Ctx::load(cli)?;
    let client = ctx.open()?;
    let archive = client.archive();
    match command {
        HoldCommand::Add {
            channel,
            from,
            thread,
            since,
            until,
            reason,
        } => {
            if reason.trim().is_empty() {
                bail!("a hold needs a reason (--reason, e.g. a case reference)");
            }
            let scope = match (channel, from, thread, since, until) {
                (Some(c), ..) => HoldScope::Channel(c.clone()),
                (_, Some(p), ..) => HoldScope::From(p.clone()),
                (_, _, Some(t), ..) => {
                    let r = crate::agent::ops::resolve(&client, t).map_err(|e| anyhow!("{e}"))?;
                    HoldScope::Thread(r.msg_id)
                }
                (_, _, _, Some(s), Some(u)) if s < u => HoldScope::Period {
                    since_ms: *s,
                    until_ms: *u,
                },
                (_, _, _, Some(_), Some(_)) => bail!("--since must be before --until"),
                _ => bail!("give one of --channel, --from, --thread, or --since with --until"),
            };
            let id = archive.add_hold(scope, reason, now_ms())?;
            println!(
                "legal hold {id} placed: what it covers is never redacted until it is released"
            );
            Ok(())
        }
        HoldCommand::List { json } => {
            let holds = archive.holds()?;
            if *json {
                let v: Vec<_> = holds.iter().map(crate::export::hold_json).collect();
                return print_json(&v);
            }
            if holds.is_empty() {
                println!("no legal holds");
            }
            for h in holds {
                let scope = match &h.scope {
                    HoldScope::Channel(c) => format!("channel {}", esc(c)),
                    HoldScope::From(p) => format!("from {}", esc(p)),
                    HoldScope::Thread(id) => format!("thread {id}"),
                    HoldScope::Period { since_ms, until_ms } => format!(
                        "received {} to {}",
                        fmt_time_full(*since_ms),
                        fmt_time_full(*until_ms)
                    ),
                };
                let state = match h.released_at_ms {
                    Some(t) => format!("released {}", fmt_time_full(t)),
                    None => "in force".to_string(),
                };
                println!(
                    "{:>3}  {scope}  placed {}  {state}  reason: {}",
                    h.id,
                    fmt_time_full(h.created_at_ms),
                    esc(&h.reason)
                );
            }
            Ok(())
        }
        HoldCommand::Release { id } => {
            if archive.release_hold(*id, now_ms())? {
                println!("legal hold {id} released (it stays recorded)");
                Ok(())
            } else {
                bail!("no legal hold {id} in force (`tallinn archive hold list`)")
            }
        }
    }
}
