//! What the command line prints: times (local with the offset, or UTC),
//! JSON, message lists that fit the terminal, and one message in full;
//! every network string escaped, TLP in colour on a terminal.

use std::sync::atomic::{AtomicBool, Ordering};

use console::{pad_str, style, Alignment};

use crate::agent::api::{DirectionView, KindView, MessageDetail, MessageView};

use super::*;

static UTC: AtomicBool = AtomicBool::new(false);

/// Prints times in UTC instead of local time (`--utc`).
pub fn set_utc(utc: bool) {
    UTC.store(utc, Ordering::Relaxed);
}

fn zoned(ms: u64) -> Option<jiff::ZonedDateTime> {
    let ts = jiff::Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()?;
    let tz = if UTC.load(Ordering::Relaxed) {
        jiff::tz::TimeZone::UTC
    } else {
        jiff::tz::TimeZone::system()
    };
    Some(ts.to_zoned_datetime(tz))
}

/// Unix ms as `YYYY-MM-DD HH:MM` in the display zone (local, or UTC with
/// `--utc`); `zone_label` says which.
pub fn fmt_time(ms: u64) -> String {
    zoned(ms)
        .map(|z| z.strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

/// Unix ms with seconds and the UTC offset: `2026-12-03 17:15:42 +01:00`.
pub fn fmt_time_full(ms: u64) -> String {
    zoned(ms)
        .map(|z| z.strftime("%Y-%m-%d %H:%M:%S %:z").to_string())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

/// Unix ms for a list: `MM-DD HH:MM`, or `YYYY-MM-DD` when not this year.
fn fmt_time_short(ms: u64, now: &Option<jiff::ZonedDateTime>) -> String {
    match (zoned(ms), now) {
        (Some(z), Some(n)) if z.year() == n.year() => z.strftime("%m-%d %H:%M").to_string(),
        (Some(z), _) => z.strftime("%Y-%m-%d").to_string(),
        (None, _) => "?".into(),
    }
}

/// The display zone for a header: `UTC` or `local time, UTC+01:00`.
pub fn zone_label() -> String {
    if UTC.load(Ordering::Relaxed) {
        return "UTC".into();
    }
    let now = jiff::ZonedDateTime::now();
    format!("local time, UTC{}", now.strftime("%:z"))
}

/// An age for humans: `42s`, `5m`, `3h`, `2d`.
pub fn fmt_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 => format!("{}m", s / 60),
        3_600..=86_399 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The terminal's width: `COLUMNS` if set, the terminal's if stdout is
/// one, else 80.
pub fn term_width() -> usize {
    if let Some(c) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c >= 20)
    {
        return c;
    }
    console::Term::stdout()
        .size_checked()
        .map(|(_, w)| usize::from(w))
        .filter(|w| *w >= 20)
        .unwrap_or(80)
}

/// A TLP label, coloured when colour is on (a terminal, no `NO_COLOR`).
pub fn tlp_styled(tlp: Tlp, width: usize) -> String {
    let label = pad_str(tlp.label(), width, Alignment::Left, None).into_owned();
    if !console::colors_enabled() {
        return label;
    }
    match tlp {
        Tlp::Red => style(label).red().bold().to_string(),
        Tlp::Amber | Tlp::AmberStrict => style(label).yellow().to_string(),
        Tlp::Green => style(label).green().to_string(),
        Tlp::Clear => label,
    }
}

/// Cuts (with `…`) or pads `s` to exactly `width` columns.
pub fn fit(s: &str, width: usize) -> String {
    pad_str(s, width, Alignment::Left, Some("…")).into_owned()
}

pub(super) fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

fn kind_short(k: &KindView) -> &'static str {
    match k {
        KindView::Note => "note",
        KindView::Request { .. } => "req",
        KindView::Offer { .. } => "offer",
        KindView::Status { .. } => "status",
        KindView::Proposal { .. } => "prop",
        KindView::Approval { .. } => "appr",
        KindView::Share { .. } => "share",
    }
}

/// One list line per message, each at most `width` columns:
/// `* id  when  from  channel  kind  TLP  subject`, `*` for unread.
pub(super) fn message_lines(rows: &[MessageView], width: usize) -> Vec<String> {
    let now = zoned(now_ms());
    let tlp_w = rows
        .iter()
        .map(|r| r.tlp().label().len())
        .max()
        .unwrap_or(5);
    // Channel names up to 18 columns on a wide terminal, 12 otherwise.
    let chan_w = rows
        .iter()
        .map(|r| console::measure_text_width(&esc(&r.channel)))
        .max()
        .unwrap_or(8)
        .clamp(8, if width >= 100 { 18 } else { 12 });
    rows.iter()
        .map(|r| {
            let mark = if r.read { ' ' } else { '*' };
            let from = if r.direction == DirectionView::Sent {
                "me".into()
            } else {
                esc(&r.sender)
            };
            let mut subject = match &r.kind {
                // A share's own subject is empty: name what it carries.
                KindView::Share { msg_id } => format!(
                    "shares {}",
                    msg_id.as_deref().and_then(|m| m.get(..8)).unwrap_or("?")
                ),
                _ => esc(&r.subject).into_owned(),
            };
            if r.tlp_above.is_some() {
                subject = format!("[TLP VIOLATION] {subject}");
            }
            if let Some(by) = &r.shared_by {
                subject = format!("[shared by {}] {subject}", esc(by));
            }
            if !r.attachments.is_empty() {
                subject = format!("{subject} [{} att]", r.attachments.len());
            }
            let id = r.msg_id.get(..8).unwrap_or(&r.msg_id);
            let when = fit(&fmt_time_short(r.received_at_ms, &now), 11);
            // Narrow terminals lose the channel and kind columns first.
            let head = if width >= 70 {
                format!(
                    "{mark}{id} {when} {} {} {:<6} ",
                    fit(&from, 6),
                    fit(&esc(&r.channel), chan_w),
                    kind_short(&r.kind),
                )
            } else {
                format!("{mark}{id} {when} {} ", fit(&from, 6))
            };
            let used = console::measure_text_width(&head) + tlp_w + 1;
            let room = width.saturating_sub(used);
            let line = format!(
                "{head}{} {}",
                tlp_styled(r.tlp(), tlp_w),
                console::truncate_str(&subject, room, "…")
            );
            console::truncate_str(&line, width, "…")
                .trim_end()
                .to_string()
        })
        .collect()
}

/// Prints messages as a list (or JSON); `more` says the limit cut it.
pub(super) fn print_messages(rows: &[MessageView], more: bool, json: bool) -> Result<()> {
    if json {
        return print_json(rows);
    }
    if rows.is_empty() {
        println!("no messages");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    if std::io::stdout().is_terminal() {
        writeln!(out, "{}", style(format!("times in {}", zone_label())).dim())?;
    }
    for line in message_lines(rows, term_width()) {
        writeln!(out, "{line}")?;
    }
    if more {
        writeln!(
            out,
            "{}",
            fit(
                "(more match: raise --limit, or narrow with --since, --channel, --unread)",
                term_width()
            )
            .trim_end()
        )?;
    }
    Ok(())
}

/// A kind for humans: `request (immediate, incident-response, high)`.
pub(super) fn kind_text(k: &KindView) -> String {
    let v = serde_json::to_value(k).unwrap_or_default();
    let fields: Vec<String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.as_str() != "name")
                .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let name = v["name"].as_str().unwrap_or("?").to_string();
    if fields.is_empty() {
        name
    } else {
        format!("{name} ({})", fields.join(", "))
    }
}

pub(super) fn show(d: &MessageDetail, json: bool) -> Result<()> {
    if json {
        return print_json(d);
    }
    let r = &d.message;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Message   {}", r.msg_id)?;
    let device = d
        .sender_device
        .as_deref()
        .map(|dev| format!(", device {}", esc(dev)))
        .unwrap_or_default();
    writeln!(
        out,
        "From      {}{device} (fingerprint {})",
        esc(&r.sender),
        esc(&d.sender_fingerprint)
    )?;
    writeln!(out, "Channel   {}", esc(&r.channel))?;
    writeln!(out, "Kind      {}", esc(&kind_text(&r.kind)))?;
    writeln!(out, "TLP       TLP:{}", tlp_styled(r.tlp(), 0))?;
    if let Some(max) = &r.tlp_above {
        writeln!(
            out,
            "          {} above the ceiling of {} (TLP:{}): the sender broke the deployment's TLP policy",
            style("VIOLATION").red().bold(),
            esc(&r.channel),
            esc(max)
        )?;
    }
    if let Some(by) = &r.shared_by {
        writeln!(
            out,
            "Shared    by {} on {} (history for a late joiner; signature and content verified against the original)",
            esc(by),
            fmt_time_full(r.received_at_ms)
        )?;
    }
    writeln!(
        out,
        "Sent      {} (sender clock)",
        fmt_time_full(r.sent_at_ms)
    )?;
    writeln!(
        out,
        "Received  {} (relay seq {})",
        fmt_time_full(r.received_at_ms),
        r.seq
    )?;
    if let Some(p) = &r.reply_to {
        writeln!(out, "Reply to  {}", esc(p))?;
    }
    writeln!(out, "Signature {}", esc(&d.signature))?;
    if let Some(rc) = &d.receipt {
        match (rc.seq, rc.received_at_ms) {
            (Some(seq), Some(at)) => writeln!(
                out,
                "Receipt   {}: relay seq {seq}, accepted {}, envelope sha256 {}",
                esc(&rc.status),
                fmt_time_full(at),
                esc(rc.envelope_sha256.as_deref().unwrap_or("-"))
            )?,
            _ => writeln!(out, "Receipt   {}", esc(&rc.status))?,
        }
    }
    writeln!(out, "Subject   {}", esc(&r.subject))?;
    writeln!(out)?;
    writeln!(out, "{}", escape_text(&r.body))?;
    for (i, a) in r.attachments.iter().enumerate() {
        writeln!(
            out,
            "\n[attachment {}] {} ({}, {} bytes, sha256 {})",
            i + 1,
            esc(&a.name),
            esc(&a.media_type),
            a.size,
            &a.sha256
        )?;
    }
    Ok(())
}
