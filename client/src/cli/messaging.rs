//! Sending and receiving: composing messages, `send`, the outbox's
//! `resend`/`drop`/`retry`, `sync` and `listen` — through the agent when
//! it runs ([`Front`]).

use crate::agent::api::{ComposeRequest, EventView, SendOutcome};

use super::*;

/// The body: `--body`, `--body-file` (`-`: standard input), or, with
/// neither on a terminal, `$VISUAL`/`$EDITOR` on a private temporary file.
fn read_body(c: &Common) -> Result<String> {
    Ok(match (&c.body, &c.body_file) {
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
        (None, None) if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => {
            edit_body(&c.subject)?
        }
        (None, None) => String::new(),
    })
}

/// Opens the editor on a 0600 file in a 0700 folder; lines starting with
/// `#` are dropped.
fn edit_body(subject: &str) -> Result<String> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    // A fresh folder of our own (0700; an existing one is never used: in
    // a shared /tmp another user could have made it).
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!(
            "tallinn-compose-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&base)
        .with_context(|| format!("creating {}", base.display()))?;
    let path = base.join("message.txt");
    let result = (|| -> Result<String> {
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            write!(
                f,
                "\n# Write the body of \"{subject}\" above. Lines starting with # are dropped;\n# an empty body sends the subject alone.\n"
            )?;
        }
        let mut parts = editor.split_whitespace();
        let program = parts.next().unwrap_or("vi");
        let status = std::process::Command::new(program)
            .args(parts)
            .arg(&path)
            .env_remove(PASSPHRASE_ENV)
            .status()
            .with_context(|| format!("starting the editor {editor:?} (set $EDITOR)"))?;
        if !status.success() {
            bail!("the editor {editor:?} failed ({status}); nothing was sent");
        }
        let text = std::fs::read_to_string(&path)?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_string())
    })();
    let _ = std::fs::remove_dir_all(&base);
    result
}

pub(super) async fn build_message(cli: &Cli, kind: Kind, c: &Common) -> Result<Message> {
    if c.subject.trim().is_empty() {
        bail!(
            "the subject is empty: give --subject with a line that says what the message is about"
        );
    }
    let reply_to = match &c.reply_to {
        // The full id names a message even if this device never archived
        // it; a prefix must name exactly one archived message.
        Some(r) => Some(match MsgId::from_hex(r) {
            Ok(m) => m,
            Err(_) => {
                let front = Front::local(cli).await?;
                let d = front.show(r).await.context("--reply-to")?;
                MsgId::from_hex(&d.message.msg_id)?
            }
        }),
        None => None,
    };
    let mut message = Message {
        kind,
        tlp: c.tlp.unwrap_or(Tlp::Red),
        reply_to,
        subject: c.subject.clone(),
        body: String::new(),
        attachments: Vec::new(),
    };
    message.tlp = choose_tlp(cli, c, message.parent()).await?;
    message.body = read_body(c)?;
    for path in &c.attach {
        let data = std::fs::read(path)
            .with_context(|| format!("reading attachment {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into());
        message.attachments.push(Attachment {
            media_type: media_type(&name).into(),
            name,
            data,
        });
    }
    Ok(message)
}

/// The TLP of a new message: `--tlp`, else the parent's (an answer keeps
/// the label of what it answers); lower than the parent's only with
/// `--tlp-downgrade`.
async fn choose_tlp(cli: &Cli, c: &Common, parent: Option<MsgId>) -> Result<Tlp> {
    let parent_tlp = match parent {
        Some(p) => {
            let front = Front::local(cli).await?;
            let found = front.show(&p.to_hex()).await.ok().map(|d| d.message.tlp());
            front.close().await;
            found
        }
        None => None,
    };
    match (c.tlp, parent_tlp) {
        (None, Some(p)) => Ok(p),
        (None, None) if parent.is_some() => bail!(
            "give --tlp: the message this answers is not in the archive, so its label is unknown"
        ),
        (None, None) => Err(UsageError(
            "the following required argument was not provided: --tlp <TLP> (CLEAR, GREEN, AMBER, AMBER+STRICT or RED)".into(),
        )
        .into()),
        (Some(t), Some(p)) if t < p && !c.tlp_downgrade => bail!(
            "--tlp {t} is lower than the {p} of the message this answers: add --tlp-downgrade if the lower label is right"
        ),
        (Some(t), _) => Ok(t),
    }
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

/// Resolves a referenced message id (full, or a prefix found in the
/// archive) and the channel to answer in.
pub(super) async fn resolve_ref(
    cli: &Cli,
    id: &str,
    channel: Option<&str>,
    to: &[String],
) -> Result<(MsgId, String)> {
    let front = Front::local(cli).await?;
    let found = match MsgId::from_hex(id) {
        // A full id need not be archived here (then --channel says where).
        Ok(_) => front.show(id).await.ok(),
        Err(_) => Some(front.show(id).await?),
    };
    front.close().await;
    let msg_id = match &found {
        Some(d) => MsgId::from_hex(&d.message.msg_id)?,
        None => MsgId::from_hex(id)?,
    };
    let channel = match (channel, &found) {
        (Some(c), _) => c.to_string(),
        (None, Some(d)) => d.message.channel.clone(),
        // A direct conversation (`--to`) needs no channel.
        (None, None) if !to.is_empty() => String::new(),
        (None, None) => bail!("message {id} is not in the archive: give --channel or --to"),
    };
    Ok((msg_id, channel))
}

pub(super) async fn send(cli: &Cli, target: &Target, message: Message) -> Result<()> {
    let front = Front::online(cli).await?;
    let spinner = connecting_spinner(&front);
    let mut req = ComposeRequest::of(target.channel.as_deref().unwrap_or(""), &message);
    req.to = target.to.clone();
    let outcome = front.compose(&req).await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    front.close().await;
    let added_note = |added: &[String]| {
        if !added.is_empty() {
            eprintln!(
                "note: {} added: the beneficiary is in every direct conversation (\"Nothing about Ukraine without Ukraine\")",
                esc(&added.join(", "))
            );
        }
    };
    match outcome? {
        SendOutcome::Sent {
            msg_id,
            seq,
            channel,
            added,
        } => {
            added_note(&added);
            println!("{msg_id}");
            eprintln!("accepted by the relay (seq {seq}) in {}", esc(&channel));
            Ok(())
        }
        SendOutcome::Queued {
            msg_id,
            reason,
            added,
            ..
        } => {
            added_note(&added);
            println!("{msg_id}");
            Err(Queued(format!(
                "message {msg_id} is queued in the outbox, not yet accepted: {}; it is sent on the next connection (`tallinn sync`, or the agent by itself)",
                esc(&reason)
            ))
            .into())
        }
    }
}

/// A spinner on a terminal while this process connects (none with the
/// agent: it is connected already).
fn connecting_spinner(front: &Front) -> Option<indicatif::ProgressBar> {
    match front {
        Front::Direct { ctx, .. } if std::io::stderr().is_terminal() => {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_message(format!("connecting to {}", ctx.config.relay));
            s.enable_steady_tick(Duration::from_millis(120));
            Some(s)
        }
        _ => None,
    }
}

/// `tallinn outbox resend|drop ID`, `outbox retry`.
pub(super) async fn outbox_action(cli: &Cli, action: &OutboxAction) -> Result<()> {
    match action {
        OutboxAction::Resend { id } => {
            let front = Front::local(cli).await?;
            let (old, new) = front.outbox_resend(id).await?;
            println!("{new}");
            eprintln!("sealed again as {new} (was {old}); it is sent on the next connection");
        }
        OutboxAction::Drop { id } => {
            let front = Front::local(cli).await?;
            let dropped = front.outbox_drop(id).await?;
            eprintln!("dropped {dropped} from the outbox; it was not sent");
        }
        OutboxAction::Retry => {
            let front = Front::online(cli).await?;
            if let Front::Direct { ctx, client, .. } = &front {
                client
                    .wait_connected(ctx.config.connect_timeout)
                    .await
                    .map_err(|e| anyhow!("connecting to {}: {e}", ctx.config.relay))?;
            }
            let n = front.outbox_retry().await?;
            if let Front::Direct { ctx, client, .. } = &front {
                let _ = client.sync(ctx.config.send_timeout, |_| {}).await;
            }
            let left = front
                .outbox()
                .await?
                .iter()
                .filter(|e| e.refused.is_none())
                .count();
            front.close().await;
            println!("{n} pending message(s) sent again; {left} still waiting");
        }
    }
    Ok(())
}

pub(super) async fn sync(cli: &Cli, timeout: Duration, json: bool) -> Result<()> {
    // Version 2 has upkeep only a sync does (a pending key rotation, retired
    // keys to erase, a rotation that is due): with an agent running, the
    // archive is borrowed for it; version 1 has nothing to do beyond what
    // the agent does all the time.
    let _hold = match front::find_agent(cli).await? {
        Some(agent) if front::load_config(cli)?.deployment.is_none() => {
            return sync_agent(&agent, json).await;
        }
        Some(_) => front::hold_agent(cli).await?,
        None => None,
    };
    let ctx = Ctx::load(cli)?;
    ctx.config.check_relay()?;
    let client = ctx.start()?;
    client.discard_events();
    let before = client.archive().len();
    let outbox_before = client.outbox().len();
    if let Err(e) = client.wait_connected(ctx.config.connect_timeout).await {
        client.close().await;
        return Err(anyhow!("connecting to {}: {e}", ctx.config.relay));
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
    // Retention: expired records not under a legal hold are redacted.
    let retained = super::archive::apply_retention(&ctx, &client)?;
    if retained.redacted > 0 && !json {
        println!(
            "retention: {} expired records redacted ({} kept under a legal hold)",
            retained.redacted, retained.held
        );
    }
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

/// `sync` with the agent running: it receives and sends continuously, so
/// this sends the outbox again and reports where things stand.
async fn sync_agent(agent: &crate::agent::remote::AgentClient, json: bool) -> Result<()> {
    let retried = agent.outbox_retry().await.map_err(|e| anyhow!(e))?;
    let s = agent.status().await.map_err(|e| anyhow!(e))?;
    if json {
        return print_json(
            &json!({"agent": true, "connected": s.connected, "outbox": s.outbox, "retried": retried, "archive_records": s.archive_records}),
        );
    }
    println!(
        "the agent (pid {}) keeps {} ({}) in sync: {}, {} records in the archive, {} in the outbox",
        s.pid,
        esc(&s.participant),
        esc(&s.device),
        if s.connected {
            "connected".to_string()
        } else {
            format!(
                "not connected ({})",
                esc(s.last_error.as_deref().unwrap_or("connecting"))
            )
        },
        s.archive_records,
        s.outbox
    );
    Ok(())
}

pub(super) async fn listen(cli: &Cli, count: Option<u64>, json: bool) -> Result<()> {
    if let Some(agent) = front::find_agent(cli).await? {
        return listen_agent(&agent, count, json).await;
    }
    let ctx = Ctx::load(cli)?;
    ctx.config.check_relay()?;
    let client = ctx.start()?;
    let mut events = client
        .events()
        .ok_or_else(|| anyhow!("event stream unavailable"))?;
    client
        .wait_connected(ctx.config.connect_timeout)
        .await
        .map_err(|e| anyhow!("connecting to {}: {e}", ctx.config.relay))?;
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
                let view = match ev {
                    Event::Message(r) => EventView::Message {
                        message: Box::new(crate::agent::api::MessageView::of(&r, false)),
                    },
                    Event::Quarantined(q) => EventView::Quarantined { seq: q.seq, reason: q.reason.clone() },
                    Event::Disconnected { reason } => EventView::Disconnected { reason },
                    Event::Connected { pending } => EventView::Connected { pending },
                    Event::Accepted { .. } | Event::Archived => continue,
                };
                if print_event(&view, json)? {
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        break;
                    }
                }
            }
        }
    }
    client.close().await;
    Ok(())
}

/// `listen` attached to the agent's event stream.
async fn listen_agent(
    agent: &crate::agent::remote::AgentClient,
    count: Option<u64>,
    json: bool,
) -> Result<()> {
    let mut stream = agent.events().await.map_err(|e| anyhow!(e))?;
    let mut seen = 0u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            ev = stream.next() => {
                let Some(ev) = ev.map_err(|e| anyhow!(e))? else {
                    bail!("the agent stopped");
                };
                if let EventView::Hello { participant, device, connected } = &ev {
                    eprintln!(
                        "listening as {} ({}) through the agent{}; Ctrl-C to stop",
                        esc(participant),
                        esc(device),
                        if *connected { "" } else { " (the relay is not connected yet)" }
                    );
                    continue;
                }
                if print_event(&ev, json)? {
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Prints one event (messages on stdout, the rest on stderr); true for a
/// message.
fn print_event(ev: &EventView, json: bool) -> Result<bool> {
    let is_message = matches!(ev, EventView::Message { .. });
    match ev {
        EventView::Message { message } => {
            if json {
                println!("{}", serde_json::to_string(message)?);
            } else {
                for line in message_lines(std::slice::from_ref(message), term_width()) {
                    println!("{line}");
                }
            }
        }
        EventView::Quarantined { seq, reason } => {
            eprintln!("quarantined seq {seq}: {}", esc(reason));
        }
        EventView::Disconnected { reason } => {
            eprintln!("disconnected ({}); reconnecting", esc(reason));
        }
        EventView::Connected { pending } => {
            if !json {
                eprintln!("connected; {pending} pending");
            }
        }
        EventView::Lagged { missed } => {
            eprintln!("{missed} events skipped (too slow a reader); `tallinn inbox` has them all");
        }
        EventView::Accepted { .. } | EventView::Hello { .. } => {}
    }
    std::io::stdout().flush()?;
    Ok(is_message)
}
