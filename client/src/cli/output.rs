//! What the command line prints: times, JSON, message lists and one
//! message in full (every network string escaped).

use super::*;

/// Formats unix ms as `YYYY-MM-DD HH:MM` UTC.
pub fn fmt_time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        sod / 3600,
        (sod % 3600) / 60
    )
}

pub(super) fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

pub(super) fn print_records(rows: &[Record], json: bool) -> Result<()> {
    if json {
        let v: Vec<_> = rows.iter().map(|r| record_json(r, false)).collect();
        return print_json(&json!(v));
    }
    if rows.is_empty() {
        println!("no messages");
    }
    for r in rows {
        let kind = match &r.message.kind {
            Kind::Request { priority, .. } => format!("request/{priority:?}").to_lowercase(),
            Kind::Status { state, .. } => format!("status/{state:?}").to_lowercase(),
            k => k.name().to_string(),
        };
        println!(
            "{}  {}  {:<18} {:<5} {:<19} {:<16} {}{}",
            &r.msg_id.to_hex()[..12],
            fmt_time(r.received_at_ms),
            esc(&r.channel),
            if r.direction == Direction::Sent {
                "me".into()
            } else {
                esc(&r.sender)
            },
            kind,
            r.message.tlp.to_string(),
            esc(&r.message.subject),
            if r.message.attachments.is_empty() {
                String::new()
            } else {
                format!("  [{} att]", r.message.attachments.len())
            }
        );
    }
    Ok(())
}

/// A kind for humans: `request (immediate, incident-response, high)`.
pub(super) fn kind_text(k: &Kind) -> String {
    let v = kind_json(k);
    let fields: Vec<String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.as_str() != "name")
                .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    if fields.is_empty() {
        k.name().to_string()
    } else {
        format!("{} ({})", k.name(), fields.join(", "))
    }
}

pub(super) fn show(ctx: &Ctx, r: &Record, json: bool) -> Result<()> {
    let sig = tallinn_common::envelope::UntrustedEnvelope::decode(&r.envelope)
        .and_then(|u| u.verify(&ctx.roster))
        .map(|_| "valid (verified against the pinned roster)".to_string())
        .unwrap_or_else(|e| format!("INVALID: {e}"));
    let fp = ctx
        .roster
        .participant(&r.sender)
        .map(|p| p.fingerprint().to_string())
        .unwrap_or_else(|| "sender no longer in the roster".into());
    if json {
        let mut v = record_json(r, false);
        v["signature"] = json!(sig);
        v["sender_fingerprint"] = json!(fp);
        return print_json(&v);
    }
    println!("Message   {}", r.msg_id);
    println!("From      {} (fingerprint {fp})", esc(&r.sender));
    println!("Channel   {}", esc(&r.channel));
    println!("Kind      {}", esc(&kind_text(&r.message.kind)));
    println!("TLP       {}", r.message.tlp);
    println!("Sent      {} (sender clock)", fmt_time(r.sent_at_ms));
    println!(
        "Received  {} (relay seq {})",
        fmt_time(r.received_at_ms),
        r.seq
    );
    if let Some(p) = r.message.reply_to {
        println!("Reply to  {p}");
    }
    println!("Signature {}", esc(&sig));
    println!("Subject   {}", esc(&r.message.subject));
    println!();
    println!("{}", escape_text(&r.message.body));
    for a in &r.message.attachments {
        println!(
            "\n[attachment] {} ({}, {} bytes)",
            esc(&a.name),
            esc(&a.media_type),
            a.data.len()
        );
    }
    Ok(())
}
