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
    let ctx = Ctx::load(cli)?;
    let client = ctx.open()?;
    let archive = client.archive();
    match command {
        ArchiveCommand::Search { .. } => Ok(()),
        ArchiveCommand::Export { out, force } => {
            let mut file = crate::private_file::PrivateFile::create(out, *force)
                .with_context(|| format!("creating {}", out.display()))?;
            let total = archive.len();
            let bar = if std::io::stderr().is_terminal() {
                indicatif::ProgressBar::new(total)
            } else {
                indicatif::ProgressBar::hidden()
            };
            let n = crate::export::export(
                archive,
                &ctx.roster,
                &ctx.roster_text,
                ctx.identity.id().as_str(),
                ctx.config.device.as_str(),
                now_ms(),
                &mut file,
                |i| bar.set_position(i),
            )?;
            file.commit()
                .with_context(|| format!("writing {}", out.display()))?;
            bar.finish_and_clear();
            println!(
                "exported {n} records to {} (head {})",
                out.display(),
                hex::encode(archive.head_hash())
            );
            Ok(())
        }
        ArchiveCommand::Verify { deep, json } => {
            let report = client.verify_archive(*deep, |_| {})?;
            if *json {
                print_json(
                    &json!({"ok": report.first_error.is_none(), "records": report.records, "head_hash": hex::encode(report.head_hash), "first_error": report.first_error.as_ref().map(|(i, w)| json!({"index": i, "reason": w}))}),
                )?;
            } else if report.first_error.is_none() {
                println!(
                    "archive OK: {} records, signatures valid, hash chain intact, head {}",
                    report.records,
                    hex::encode(report.head_hash)
                );
            }
            if let Some((i, why)) = report.first_error {
                return Err(VerificationFailed(format!(
                    "archive verification FAILED at record {i}: {why}"
                ))
                .into());
            }
            Ok(())
        }
        ArchiveCommand::Stats { json } => {
            let s = archive.stats()?;
            if *json {
                return print_json(&serde_json::to_value(&s)?);
            }
            println!(
                "records {} ({} received, {} sent), quarantined {} ({} evicted, oldest first)",
                s.records, s.received, s.sent, s.quarantined, s.quarantine_evicted
            );
            println!("head {}", s.head_hash);
            println!("on disk {} bytes", s.disk_bytes);
            for (c, n) in &s.by_channel {
                println!("  channel {c:<20} {n}");
            }
            for (k, n) in &s.by_kind {
                println!("  kind    {k:<20} {n}");
            }
            Ok(())
        }
    }
}
