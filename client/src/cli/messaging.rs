//! Sending and receiving: composing messages, `send`, the outbox's
//! `resend`/`drop`, `sync` and `listen`.

use super::*;

pub(super) fn build_message(cli: &Cli, kind: Kind, c: &Common) -> Result<Message> {
    if c.subject.trim().is_empty() {
        bail!(
            "the subject is empty: give --subject with a line that says what the message is about"
        );
    }
    let body = match (&c.body, &c.body_file) {
        (Some(b), _) => b.clone(),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut b = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut b)
                .context("reading the body from standard input")?;
            b
        }
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => String::new(),
    };
    let reply_to = match &c.reply_to {
        // The full id names a message even if this device never archived
        // it; a prefix must name exactly one archived message.
        Some(r) => Some(match MsgId::from_hex(r) {
            Ok(m) => m,
            Err(_) => {
                let ctx = Ctx::load(cli)?;
                let client = ctx.open()?;
                resolve_archived(&client, r).context("--reply-to")?.msg_id
            }
        }),
        None => None,
    };
    let mut attachments = Vec::new();
    for path in &c.attach {
        let data = std::fs::read(path)
            .with_context(|| format!("reading attachment {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into());
        attachments.push(Attachment {
            media_type: media_type(&name).into(),
            name,
            data,
        });
    }
    Ok(Message {
        kind,
        tlp: c.tlp,
        reply_to,
        subject: c.subject.clone(),
        body,
        attachments,
    })
}

pub(super) fn media_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" | "log" => "text/plain",
        "json" => "application/json",
        "csv" => "text/csv",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "zip" => "application/zip",
        "stix" => "application/stix+json",
        _ => "application/octet-stream",
    }
}

/// The archived message a given id names (the rule of [`crate::ids`]):
/// full id or unique prefix of at least 6 hex digits; an ambiguous prefix
/// lists its candidates.
///
/// # Errors
/// [`crate::ids::IdError`], or an archive failure.
pub(super) fn resolve_archived(client: &Client, given: &str) -> Result<Record> {
    let id = crate::ids::normalise(given)?;
    if let Ok(full) = MsgId::from_hex(&id) {
        return client.archive().get(&full)?.ok_or_else(|| {
            crate::ids::IdError::Unknown {
                id,
                place: "the archive",
            }
            .into()
        });
    }
    let found = client.archive().find_prefix(&id, 20)?;
    Ok(crate::ids::resolve(
        &id,
        "the archive",
        found.into_iter().map(|r| {
            let what = format!("{}  {}", esc(&r.channel), esc(&r.message.subject));
            (r.msg_id, what, r)
        }),
    )?)
}

/// Resolves a referenced message id (full, or a prefix found in the archive)
/// and the channel to answer in.
pub(super) fn resolve_ref(cli: &Cli, id: &str, channel: Option<&str>) -> Result<(MsgId, String)> {
    let ctx = Ctx::load(cli)?;
    let client = ctx.open()?;
    let found = match MsgId::from_hex(id) {
        Ok(m) => client.archive().get(&m)?,
        Err(_) => Some(resolve_archived(&client, id)?),
    };
    let msg_id = match (&found, MsgId::from_hex(id)) {
        (Some(r), _) => r.msg_id,
        (None, Ok(m)) => m,
        (None, Err(_)) => bail!("no archived message matches {id}; give the full 32-digit id"),
    };
    let channel = match (channel, &found) {
        (Some(c), _) => c.to_string(),
        (None, Some(r)) => r.channel.clone(),
        (None, None) => bail!("message {id} is not in the archive: give --channel"),
    };
    Ok((msg_id, channel))
}

pub(super) async fn send(cli: &Cli, channel: &str, message: Message) -> Result<()> {
    let ctx = Ctx::load(cli)?;
    // Refuse before anything is stored or sent if the roster forbids it.
    if ctx.roster.role(ctx.identity.id().as_str()) == Some(Role::Observer) {
        bail!(
            "{} is an observer: observers can read but never post",
            ctx.identity.id()
        );
    }
    ctx.roster
        .check_post(ctx.identity.id().as_str(), channel)
        .map_err(|e| anyhow!("cannot post: {e}"))?;
    let client = Client::start(ctx.settings()?)?;
    client.discard_events();
    let result = match client.wait_connected(ctx.config.connect_timeout).await {
        Ok(()) => client
            .send(channel, &message)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => {
            let id = client.queue(channel, &message)?;
            Err(anyhow!(
                "message {id} is queued in the outbox but the relay is unreachable ({e}); `tallinn sync` sends it later"
            ))
        }
    };
    client.close().await;
    let (msg_id, seq) = result?;
    println!("{msg_id}");
    eprintln!("accepted by the relay (seq {seq}) in {channel}");
    Ok(())
}

/// `tallinn outbox resend|drop ID`.
pub(super) fn outbox_action(client: &Client, action: &OutboxAction) -> Result<()> {
    let (OutboxAction::Resend { id } | OutboxAction::Drop { id }) = action;
    let listed = client.outbox().list()?;
    let entry = crate::ids::resolve(
        id,
        "the outbox",
        listed.into_iter().map(|l| {
            let what = esc(&l.entry.subject).into_owned();
            (l.entry.msg_id, what, l.entry)
        }),
    )?;
    match action {
        OutboxAction::Resend { .. } => {
            let new = client
                .resend(&entry.msg_id)?
                .ok_or_else(|| anyhow!("outbox entry {id} vanished"))?;
            println!("{new}");
            eprintln!(
                "sealed again as {new} (was {}); `tallinn sync` sends it",
                entry.msg_id
            );
        }
        OutboxAction::Drop { .. } => {
            client.outbox().drop_entry(&entry.msg_id)?;
            eprintln!("dropped {} from the outbox; it was not sent", entry.msg_id);
        }
    }
    Ok(())
}

pub(super) async fn sync(cli: &Cli, timeout: Duration, json: bool) -> Result<()> {
    let ctx = Ctx::load(cli)?;
    let client = Client::start(ctx.settings()?)?;
    client.discard_events();
    let before = client.archive().len();
    let outbox_before = client.outbox().len();
    if let Err(e) = client.wait_connected(ctx.config.connect_timeout).await {
        client.close().await;
        return Err(anyhow!(e).context("sync"));
    }
    let tty = std::io::stdout().is_terminal() && !json;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let state = client
        .sync(timeout, |s| {
            if tty && bar.is_none() && s.pending > 24 {
                let b = indicatif::ProgressBar::new(s.pending);
                b.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} messages {eta}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar = Some(b);
            }
            if let Some(b) = &bar {
                b.set_position(s.delivered.min(s.pending));
            }
        })
        .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let quarantined = client.state().borrow().quarantined;
    client.close().await;
    let state = state?;
    // Version 2: the backlog is drained; retired encryption keys that can
    // no longer be needed are erased, and a due rotation happens now.
    let mut erased = 0;
    let mut rotated = None;
    if client.roster().is_v2() {
        if super::roster::complete_pending_rotation(&ctx, &client)? {
            println!("encryption key rotation completed: the new key is in force");
        }
        erased = super::roster::erase_retired(&ctx, &client, true)?;
        if super::roster::rotation_request_due(&ctx, &client) {
            super::roster::request_rotation_now(&ctx).await?;
        }
        if super::roster::rotation_due(&ctx, &client) {
            drop(client);
            rotated = Some(super::roster::rotate(&ctx).await?);
            let client = ctx.open()?;
            return report_sync(
                &client,
                &state,
                before,
                outbox_before,
                quarantined,
                erased,
                rotated,
                json,
            );
        }
    }
    report_sync(
        &client,
        &state,
        before,
        outbox_before,
        quarantined,
        erased,
        rotated,
        json,
    )
}

#[allow(clippy::too_many_arguments)]
fn report_sync(
    client: &Client,
    state: &crate::client::State,
    before: u64,
    outbox_before: usize,
    quarantined: u64,
    erased: usize,
    rotated: Option<u64>,
    json: bool,
) -> Result<()> {
    let new = client.archive().len().saturating_sub(before);
    let sent = outbox_before.saturating_sub(client.outbox().len());
    let refused = client
        .outbox()
        .len()
        .saturating_sub(client.outbox().pending_len());
    if json {
        return print_json(
            &json!({"received": state.delivered, "archived": new, "quarantined": quarantined, "sent": sent, "outbox": client.outbox().len(), "refused": refused, "archive_records": client.archive().len(), "retired_keys_erased": erased, "rotated_at_epoch": rotated}),
        );
    }
    if erased > 0 {
        println!("{erased} retired encryption key(s) erased");
    }
    if let Some(e) = rotated {
        println!("encryption key rotated (roster epoch {e})");
    }
    println!(
        "synced: {} delivered, {new} new in the archive, {quarantined} quarantined, {sent} sent from the outbox ({} left)",
        state.delivered,
        client.outbox().len()
    );
    if refused > 0 {
        println!("{refused} refused by the relay: see `tallinn outbox`");
    }
    Ok(())
}

pub(super) async fn listen(cli: &Cli, count: Option<u64>, json: bool) -> Result<()> {
    let ctx = Ctx::load(cli)?;
    let client = Client::start(ctx.settings()?)?;
    let mut events = client
        .events()
        .ok_or_else(|| anyhow!("event stream unavailable"))?;
    client.wait_connected(ctx.config.connect_timeout).await?;
    // Always on stderr (also with --json, whose stdout stays pure JSON):
    // scripts wait for this line to know the listener is connected.
    eprintln!(
        "listening as {} ({}); Ctrl-C to stop",
        ctx.identity.id(),
        ctx.config.device
    );
    let mut seen = 0u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    Event::Message(r) => {
                        if json {
                            println!("{}", record_json(&r, false));
                        } else {
                            print_records(std::slice::from_ref(&r), false)?;
                        }
                        seen += 1;
                        if count.is_some_and(|c| seen >= c) {
                            break;
                        }
                    }
                    Event::Quarantined(q) => eprintln!("quarantined seq {}: {}", q.seq, esc(&q.reason)),
                    Event::Disconnected { reason } => eprintln!("disconnected ({}); reconnecting", esc(&reason)),
                    Event::Connected { pending } => if !json { eprintln!("connected; {pending} pending") },
                    Event::Accepted { .. } | Event::Archived => {}
                }
                let _ = std::io::stdout().flush();
            }
        }
    }
    client.close().await;
    Ok(())
}
