//! `tallinn requests` (the tracker) and `tallinn share` (history for a late
//! joiner).

use console::style;

use crate::agent::api::{CaseDetail, CaseList, CaseListRequest, CaseSummary, ShareRequest};

use super::*;

fn loe_view(l: &LoeArg) -> crate::agent::api::LoeView {
    use crate::agent::api::LoeView;
    match l {
        LoeArg::Immediate => LoeView::Immediate,
        LoeArg::Capability => LoeView::Capability,
        LoeArg::Sustainability => LoeView::Sustainability,
    }
}

fn priority_view(p: &PriorityArg) -> crate::agent::api::PriorityView {
    use crate::agent::api::PriorityView;
    match p {
        PriorityArg::Low => PriorityView::Low,
        PriorityArg::Normal => PriorityView::Normal,
        PriorityArg::High => PriorityView::High,
        PriorityArg::Critical => PriorityView::Critical,
    }
}

fn label<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `tallinn requests [filters]`, `tallinn requests show ID`.
pub(super) async fn requests(cli: &Cli, a: &RequestsArgs) -> Result<()> {
    let front = Front::local(cli).await?;
    if let Some(RequestsCommand::Show { id, json }) = &a.command {
        let detail = front.request_show(id).await?;
        return print_case(&detail, *json);
    }
    let q = CaseListRequest {
        states: a.state.clone(),
        loe: a.loe.as_ref().map(loe_view),
        priority: a.priority.as_ref().map(priority_view),
        mine: a.mine,
        waiting_on_me: a.waiting_on_me,
        unanswered: a.unanswered,
        limit: Some(a.limit),
    };
    let list = front.requests(&q).await?;
    if a.json {
        return print_json(&list);
    }
    print_cases(&list)
}

fn short_priority(p: &crate::agent::api::PriorityView) -> &'static str {
    use crate::agent::api::PriorityView;
    match p {
        PriorityView::Critical => "crit",
        PriorityView::High => "high",
        PriorityView::Normal => "norm",
        PriorityView::Low => "low",
    }
}

fn short_loe(l: &crate::agent::api::LoeView) -> &'static str {
    use crate::agent::api::LoeView;
    match l {
        LoeView::Immediate => "immed.",
        LoeView::Capability => "capab.",
        LoeView::Sustainability => "sustain.",
    }
}

fn offers_text(c: &CaseSummary) -> String {
    if c.offers.is_empty() {
        return "-".into();
    }
    c.offers
        .iter()
        .map(|o| {
            let short = match o.standing.as_str() {
                "accepted" => ":ok",
                "in-progress" => ":wip",
                "fulfilled" => ":done",
                "declined" => ":no",
                "withdrawn" => ":wd",
                _ => "",
            };
            format!("{}{short}", esc(&o.from))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_cases(list: &CaseList) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if list.cases.is_empty() {
        writeln!(out, "no cases")?;
        return Ok(());
    }
    let width = term_width();
    let now = now_ms();
    writeln!(
        out,
        "{}",
        style(format!(
            "  {:<8} {:<11} {:<4} {:<8} {:>4} {:<6} {:<14} SUBJECT",
            "ID", "STATE", "PRI", "LOE", "AGE", "FROM", "OFFERS"
        ))
        .dim()
    )?;
    for c in &list.cases {
        let mark = if c.waiting_on_you { '!' } else { ' ' };
        let line = format!(
            "{mark} {:<8} {:<11} {:<4} {:<8} {:>4} {} {} {}",
            c.id.get(..8).unwrap_or(&c.id),
            c.state,
            short_priority(&c.priority),
            short_loe(&c.loe),
            fmt_age(now.saturating_sub(c.opened_at_ms)),
            fit(&esc(&c.requester), 6),
            fit(&offers_text(c), 14),
            esc(&c.subject)
        );
        writeln!(
            out,
            "{}",
            console::truncate_str(&line, width.max(60), "…").trim_end()
        )?;
    }
    writeln!(
        out,
        "{}",
        style("(! waits on you; `tallinn requests show ID` for a case's history)\n(offers: :ok accepted, :wip in progress, :done fulfilled, :no declined, :wd withdrawn)").dim()
    )?;
    if list.more {
        writeln!(
            out,
            "(more match: raise --limit, or narrow with --state, --loe, --priority)"
        )?;
    }
    Ok(())
}

fn print_case(d: &CaseDetail, json: bool) -> Result<()> {
    if json {
        return print_json(d);
    }
    let c = &d.case;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Case      {}", c.id)?;
    writeln!(out, "Subject   {}", esc(&c.subject))?;
    writeln!(
        out,
        "State     {}{}",
        c.state,
        if c.waiting_on.is_empty() {
            String::new()
        } else {
            format!(" (waiting on {})", esc(&c.waiting_on.join(", ")))
        }
    )?;
    writeln!(
        out,
        "Request   by {} in {}, {} priority, {} line of effort, category {}, TLP:{}",
        esc(&c.requester),
        esc(&c.channel),
        label(&c.priority),
        label(&c.loe),
        esc(&c.category),
        esc(&c.tlp)
    )?;
    writeln!(out, "Opened    {}", fmt_time_full(c.opened_at_ms))?;
    for o in &c.offers {
        writeln!(
            out,
            "Offer     {} by {}: {} [{}]",
            o.msg_id.get(..8).unwrap_or(&o.msg_id),
            esc(&o.from),
            esc(&o.subject),
            o.standing
        )?;
    }
    writeln!(out, "\nHistory (senders' signed order):")?;
    for e in &d.history {
        let what = match (&e.state, &e.about) {
            (Some(s), Some(about)) => {
                let target = if *about == c.id {
                    "the request".to_string()
                } else {
                    format!("offer {}", about.get(..8).unwrap_or(about))
                };
                format!("status {} on {target}", label(s))
            }
            _ => format!("offer \"{}\"", esc(&e.subject)),
        };
        let effect = match (e.effect.as_str(), &e.detail) {
            ("moved", Some(s)) => format!("-> {s}"),
            ("ignored", Some(why)) => format!("ignored: {why}"),
            _ => "recorded".into(),
        };
        writeln!(
            out,
            "  {}  {} {:<6} {what}  ({effect})",
            fmt_time(e.sent_at_ms),
            e.msg_id.get(..8).unwrap_or(&e.msg_id),
            esc(&e.sender),
        )?;
    }
    Ok(())
}

/// `tallinn share --to LT (--channel C --since DATE | ID...)`.
pub(super) async fn share(cli: &Cli, a: &ShareArgs) -> Result<()> {
    let front = Front::online(cli).await?;
    let req = ShareRequest {
        to: a.to.clone(),
        channel: a.channel.clone(),
        since_ms: a.since,
        ids: a.ids.clone(),
    };
    let outcome = front.share(&req).await;
    if let (Ok(_), Front::Direct { ctx, client, .. }) = (&outcome, &front) {
        // This process holds the session: send what was queued before exiting.
        if let Err(e) = client.sync(ctx.config.send_timeout, |_| {}).await {
            eprintln!("warning: {}", esc(&e.to_string()));
        }
    }
    front.close().await;
    let outcome = outcome?;
    let refused = outcome.items.iter().filter(|i| i.refused.is_some()).count();
    if a.json {
        print_json(&outcome)?;
    } else {
        if !outcome.added.is_empty() {
            eprintln!(
                "note: {} added: the beneficiary is in every direct conversation",
                esc(&outcome.added.join(", "))
            );
        }
        for i in &outcome.items {
            match (&i.share, &i.refused) {
                (Some(s), _) => println!("{}  shared as {s}", i.msg_id),
                (None, Some(why)) => println!("{}  NOT shared: {}", i.msg_id, esc(why)),
                _ => {}
            }
        }
        eprintln!(
            "{} of {} messages shared in {}",
            outcome.items.len() - refused,
            outcome.items.len(),
            esc(&outcome.conversation)
        );
    }
    if refused > 0 {
        bail!("{refused} message(s) were not shared (see above)");
    }
    Ok(())
}
