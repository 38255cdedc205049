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
    let front = Front::local(cli).await?;
    match command {
        ArchiveCommand::Search { .. } => Ok(()),
        ArchiveCommand::Export { out, force } => {
            let mut file = crate::private_file::PrivateFile::create(out, *force)
                .with_context(|| format!("creating {}", out.display()))?;
            let bar = if std::io::stderr().is_terminal() {
                indicatif::ProgressBar::new_spinner()
            } else {
                indicatif::ProgressBar::hidden()
            };
            let (n, head) = front
                .archive_export(&mut file, |i| bar.set_position(i))
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
                "records {} ({} received, {} sent), quarantined {} ({} evicted, oldest first)",
                s.records, s.received, s.sent, s.quarantined, s.quarantine_evicted
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
